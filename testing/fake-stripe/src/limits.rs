//! Every bound of the fake in one place: Stripe's documented limits and the fake's own.

/// Request bodies above this get 413 (Stripe's own limit is larger; tests never come close).
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Stripe rejects longer `Idempotency-Key`s.
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 255;
/// A list's page size when `limit` is absent.
pub const LIST_LIMIT_DEFAULT: i64 = 10;
/// The largest `limit` Stripe accepts.
pub const LIST_LIMIT_MAX: i64 = 100;
/// Lines embedded in an invoice object; the rest come from `GET /v1/invoices/{id}/lines`.
pub const INVOICE_LINES_INLINE: usize = 10;
/// Attempts per webhook delivery by the background sender.
pub const WEBHOOK_ATTEMPTS_MAX: u32 = 3;
/// The wait before a webhook's second attempt; it doubles after each failure.
pub const WEBHOOK_RETRY_BACKOFF_MS: u64 = 100;
/// A webhook receiver gets this long to answer one attempt.
pub const WEBHOOK_TIMEOUT_MS: u64 = 5_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_relate() {
        const { assert!(1 <= LIST_LIMIT_DEFAULT && LIST_LIMIT_DEFAULT <= LIST_LIMIT_MAX) };
        const { assert!(INVOICE_LINES_INLINE as i64 <= LIST_LIMIT_MAX) };
        // A failing receiver is given up on within a test's patience (20 s deadlines).
        let backoff: u64 = (0..WEBHOOK_ATTEMPTS_MAX - 1)
            .map(|n| WEBHOOK_RETRY_BACKOFF_MS << n)
            .sum();
        assert!(backoff + u64::from(WEBHOOK_ATTEMPTS_MAX) * WEBHOOK_TIMEOUT_MS < 20_000);
        const { assert!(IDEMPOTENCY_KEY_CHARS_MAX * 4 < BODY_BYTES_MAX) };
    }
}
