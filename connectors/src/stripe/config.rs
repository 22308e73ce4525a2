//! The client's settings: where Stripe is, the key, and how hard to try.

use std::time::Duration;

/// Stripe's API, the default of the `stripe.apiBase` config key.
pub const API_BASE_DEFAULT: &str = "https://api.stripe.com";
/// The API version every request pins (`Stripe-Version`), as OpenMeter's stripe-go v80 does.
pub const API_VERSION: &str = "2024-09-30.acacia";
/// stripe-go's defaults: an 80 s timeout, 2 retries, backoff from 500 ms up to 5 s.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(80);
pub const RETRIES_MAX_DEFAULT: u32 = 2;
pub const BACKOFF_INITIAL_DEFAULT: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(5);
/// At most this many retries, whatever the config says: each one sleeps up to `backoff_max`.
pub const RETRIES_MAX_LIMIT: u32 = 10;
/// At most this much of one answer is read (a page of 100 invoice lines is a few hundred KiB).
pub const RESPONSE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Stripe's page size limit, used for every list.
pub const PAGE_LIMIT: u32 = 100;
/// At most this many pages are read from one list before it is reported as endless.
pub const PAGES_MAX: u32 = 1_000;
/// Stripe's limit on an `Idempotency-Key`.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// How to reach Stripe. Built by the caller from Metron's config (`stripe.*`); never global.
#[derive(Clone, PartialEq, Eq)]
pub struct StripeConfig {
    /// Scheme, host and optional port, without a trailing path (`stripe.apiBase`).
    pub api_base: String,
    /// The secret or restricted key (`sk_…`, `rk_…`), sent as `Authorization: Bearer`.
    pub api_key: String,
    /// The deadline of one attempt, connection to last byte.
    pub timeout: Duration,
    /// Retries after the first attempt of a call, for retryable failures only.
    pub retries_max: u32,
    /// The first backoff; each retry doubles it, capped at `backoff_max`, with jitter.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl StripeConfig {
    /// Stripe's defaults with this key.
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            ..Self::default()
        }
    }

    /// Whether the key is a test-mode key (`sk_test_`, `rk_test_`), as OpenMeter decides livemode.
    pub fn is_test_mode(&self) -> bool {
        self.api_key.starts_with("sk_test") || self.api_key.starts_with("rk_test")
    }

    /// The key as it may be shown: its first 8 and last 3 characters (OpenMeter's mask).
    pub fn masked_key(&self) -> String {
        let chars: Vec<char> = self.api_key.chars().collect();
        if chars.len() <= 11 {
            return "***".to_owned();
        }
        let head: String = chars[..8].iter().collect();
        let tail: String = chars[chars.len() - 3..].iter().collect();
        format!("{head}***{tail}")
    }
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            api_base: API_BASE_DEFAULT.to_owned(),
            api_key: String::new(),
            timeout: TIMEOUT_DEFAULT,
            retries_max: RETRIES_MAX_DEFAULT,
            backoff_initial: BACKOFF_INITIAL_DEFAULT,
            backoff_max: BACKOFF_MAX_DEFAULT,
        }
    }
}

// The key never reaches a log through `{:?}`.
impl std::fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeConfig")
            .field("api_base", &self.api_base)
            .field("api_key", &self.masked_key())
            .field("timeout", &self.timeout)
            .field("retries_max", &self.retries_max)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .finish()
    }
}
