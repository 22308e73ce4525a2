//! Every limit of the HTTP API in one place.

/// Largest ingest body.
pub const INGEST_BODY_BYTES_MAX: usize = 16 << 20;
/// Largest JSON body of other requests.
pub const JSON_BODY_BYTES_MAX: usize = 1 << 20;
/// Events a list returns at most (OpenMeter: 100).
pub const LIST_EVENTS_MAX: usize = 100;
/// Rows a SQL answer holds by default, and at most.
pub const SQL_ROWS_DEFAULT: usize = 1_000;
pub const SQL_ROWS_MAX: usize = 100_000;
/// SQL timeout by default, and at most.
pub const SQL_TIMEOUT_MS_DEFAULT: u64 = 10_000;
pub const SQL_TIMEOUT_MS_MAX: u64 = 60_000;
/// Seconds a client should wait after a 429.
pub const RETRY_AFTER_SECONDS: u64 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_relate() {
        const { assert!(SQL_ROWS_DEFAULT <= SQL_ROWS_MAX) };
        const { assert!(SQL_TIMEOUT_MS_DEFAULT <= SQL_TIMEOUT_MS_MAX) };
        const { assert!(JSON_BODY_BYTES_MAX <= INGEST_BODY_BYTES_MAX) };
    }
}
