//! Injected failures: queued rules (method, path prefix, which occurrence) and a seeded random
//! mode that picks a fault per request, deterministic for a seed and a request order.

use crate::error::ApiError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// What goes wrong with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// 429 `rate_limit`, or `lock_timeout` (the only 429 stripe-go retries); nothing executes.
    Status429 { lock_timeout: bool },
    /// 500 `api_error`; nothing executes.
    Status500,
    /// 409 `lock_timeout`-style conflict; nothing executes.
    Status409,
    /// The response is held for `FakeConfig::timeout_hold`, then the connection is closed; the
    /// write is *not* applied.
    Timeout,
    /// The connection is closed without a response; nothing executes.
    Drop,
    /// The write is applied (and its answer kept for the idempotency key), then 500 is answered.
    FailAfterWrite,
    /// The write is applied (and its answer kept for the idempotency key), then the connection
    /// is closed without a response.
    DropAfterWrite,
    /// Execution starts and fails before writing: 500, and (as Stripe does once an endpoint
    /// started executing) the 500 is kept for the idempotency key and replayed to every retry.
    StoredFailure,
    /// The write is applied, then 500, kept for the idempotency key and replayed: a retry under
    /// the key cannot tell the write happened.
    StoredFailureAfterWrite,
}

impl Fault {
    /// Every kind, for the random mode's default.
    pub const ALL: [Fault; 10] = [
        Fault::Status429 { lock_timeout: true },
        Fault::Status429 {
            lock_timeout: false,
        },
        Fault::Status500,
        Fault::Status409,
        Fault::Timeout,
        Fault::Drop,
        Fault::FailAfterWrite,
        Fault::DropAfterWrite,
        Fault::StoredFailure,
        Fault::StoredFailureAfterWrite,
    ];

    /// The answer of a fault that answers before anything executes, with its
    /// `Stripe-Should-Retry` header; `None` for the faults that hold, drop or execute.
    pub fn answer(self) -> Option<(ApiError, Option<&'static str>)> {
        let error = |status, code, message: &str| ApiError {
            status,
            kind: "invalid_request_error",
            code,
            message: format!("{message} (injected)"),
            param: None,
        };
        match self {
            Fault::Status429 { lock_timeout: true } => Some((
                error(
                    429,
                    Some("lock_timeout"),
                    "This object is locked by another request.",
                ),
                Some("true"),
            )),
            Fault::Status429 {
                lock_timeout: false,
            } => Some((
                error(429, Some("rate_limit"), "Request rate limit exceeded."),
                Some("false"),
            )),
            Fault::Status409 => Some((
                error(
                    409,
                    None,
                    "Another request is changing this object right now.",
                ),
                Some("true"),
            )),
            Fault::Status500 => Some((
                ApiError::api(500, "An unknown error occurred (injected)."),
                None,
            )),
            Fault::Timeout
            | Fault::Drop
            | Fault::FailAfterWrite
            | Fault::DropAfterWrite
            | Fault::StoredFailure
            | Fault::StoredFailureAfterWrite => None,
        }
    }

    /// Whether the request's write takes effect under this fault.
    pub fn applies_write(self) -> bool {
        matches!(
            self,
            Fault::FailAfterWrite | Fault::DropAfterWrite | Fault::StoredFailureAfterWrite
        )
    }
}

/// A queued fault: it fires on the `occurrence`-th request (1 = the next) matching `method`
/// (any when `None`) and `path_prefix`, then is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path_prefix: String,
    #[serde(default = "first")]
    pub occurrence: u32,
    pub fault: Fault,
}

fn first() -> u32 {
    1
}

impl FaultRule {
    /// The next Stripe request, whatever it is.
    pub fn next(fault: Fault) -> FaultRule {
        FaultRule {
            method: None,
            path_prefix: String::new(),
            occurrence: 1,
            fault,
        }
    }

    /// The next request with this method whose path starts with `path_prefix`.
    pub fn on(method: &str, path_prefix: &str, fault: Fault) -> FaultRule {
        FaultRule {
            method: Some(method.to_uppercase()),
            path_prefix: path_prefix.to_owned(),
            occurrence: 1,
            fault,
        }
    }

    /// Fires on the `n`-th matching request instead (1-based).
    pub fn nth(mut self, n: u32) -> FaultRule {
        self.occurrence = n.max(1);
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method) && path.starts_with(&self.path_prefix)
    }
}

/// The fault plan of one server.
#[derive(Debug)]
pub struct Faults {
    rules: Vec<(FaultRule, u32)>,
    rng: StdRng,
    rate: f64,
    kinds: Vec<Fault>,
}

impl Faults {
    pub fn new(seed: u64, rate: f64, kinds: Vec<Fault>) -> Faults {
        Faults {
            rules: Vec::new(),
            rng: StdRng::seed_from_u64(seed ^ 0x5eed_fa17),
            rate,
            kinds,
        }
    }

    /// The chance of a random fault from now on.
    pub fn set_rate(&mut self, rate: f64) {
        self.rate = rate;
    }

    pub fn push(&mut self, rule: FaultRule) {
        self.rules.push((rule, 0));
    }

    /// The fault for this request: a queued rule that comes due, else a random draw.
    pub fn pick(&mut self, method: &str, path: &str) -> Option<Fault> {
        let mut fired = None;
        for (rule, seen) in &mut self.rules {
            if rule.matches(method, path) {
                *seen += 1;
                if *seen == rule.occurrence && fired.is_none() {
                    fired = Some(rule.fault);
                    rule.occurrence = 0;
                }
            }
        }
        self.rules.retain(|(rule, _)| rule.occurrence != 0);
        if fired.is_some() {
            return fired;
        }
        if self.rate <= 0.0 || self.kinds.is_empty() || !self.rng.random_bool(self.rate.min(1.0)) {
            return None;
        }
        let index = self.rng.random_range(0..self.kinds.len());
        Some(self.kinds[index])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_fires_on_its_occurrence_once() {
        let mut faults = Faults::new(1, 0.0, Vec::new());
        faults.push(FaultRule::on("POST", "/v1/invoiceitems", Fault::Status500).nth(2));
        assert_eq!(faults.pick("POST", "/v1/invoiceitems"), None);
        assert_eq!(faults.pick("GET", "/v1/invoiceitems"), None);
        assert_eq!(
            faults.pick("POST", "/v1/invoiceitems/ii_1"),
            Some(Fault::Status500)
        );
        assert_eq!(faults.pick("POST", "/v1/invoiceitems"), None);
    }

    #[test]
    fn random_mode_is_deterministic_per_seed() {
        let draw = |seed| {
            let mut faults = Faults::new(seed, 0.3, Fault::ALL.to_vec());
            (0..200)
                .map(|_| faults.pick("POST", "/v1/invoices"))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let hits = draw(7).iter().filter(|f| f.is_some()).count();
        assert!((30..90).contains(&hits), "{hits} of 200 at rate 0.3");
    }
}
