//! Streams for tests, on every backend. The Kafka cases run on the brokers
//! `METRON_TEST_KAFKA_BROKERS` names (`host:port`, comma-separated), each test on topics of its
//! own. Without the variable a Kafka case says it was skipped and passes, unless `CI` is set:
//! then it fails, so a CI run cannot skip it silently. `./scripts/test` starts a
//! Kafka-compatible broker (tansu) and sets the variable.
//!
//! The Fluvio cases run on the streaming controller `METRON_FLUVIO_ENDPOINT` names. No package
//! registry serves a Fluvio cluster, so a CI machine may have none: without the variable they
//! say they were skipped and pass, with `CI` set or not. `./scripts/test` starts a cluster and
//! sets the variable when a `fluvio-run` built from source is at hand (see the crate README).
//!
//! Compiled for this crate's tests and, with the `testing` feature, for other crates' tests.

/// The brokers the Kafka cases run on, e.g. `127.0.0.1:9092`.
pub const KAFKA_BROKERS_VAR: &str = "METRON_TEST_KAFKA_BROKERS";

/// Every topic a test creates starts with this.
pub const TOPIC_PREFIX: &str = "metron-t-";

/// The brokers of [`KAFKA_BROKERS_VAR`]. `None` (after saying so) when the variable is unset;
/// panics when it is unset and `CI` is set.
pub fn kafka_brokers(test: &str) -> Option<Vec<String>> {
    let brokers: Vec<String> = std::env::var(KAFKA_BROKERS_VAR)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_owned)
        .collect();
    if !brokers.is_empty() {
        return Some(brokers);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: {KAFKA_BROKERS_VAR} is not set and CI is: the Kafka stream tests must run \
             in CI (./scripts/test starts a Kafka-compatible broker and sets it)"
        );
    }
    eprintln!(
        "SKIPPED {test}: {KAFKA_BROKERS_VAR} is not set, so the Kafka case did not run \
         (./scripts/test starts a Kafka-compatible broker and sets it)"
    );
    None
}

/// A topic name no other test uses.
pub fn unique_topic() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{TOPIC_PREFIX}{nanos:x}-{:016x}", rand::random::<u64>())
}

/// A tansu binary for tests that need a broker of their own (to stop it, say): the
/// `METRON_TEST_TANSU` variable. `None` (after saying so) when it is unset; panics when it is
/// unset and `CI` is set. `./scripts/test` sets it to the tansu it built.
pub fn tansu_binary(test: &str) -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os(TANSU_VAR).filter(|p| !p.is_empty()) {
        return Some(path.into());
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {TANSU_VAR} is not set and CI is (./scripts/test sets it)");
    }
    eprintln!("SKIPPED {test}: {TANSU_VAR} is not set (./scripts/test sets it)");
    None
}

/// The tansu binary [`tansu_binary`] reads.
pub const TANSU_VAR: &str = "METRON_TEST_TANSU";

/// The streaming controller the Fluvio cases run on, e.g. `127.0.0.1:9003`.
pub const FLUVIO_ENDPOINT_VAR: &str = "METRON_FLUVIO_ENDPOINT";

/// The streaming controller of [`FLUVIO_ENDPOINT_VAR`]. `None`, after saying so, when the
/// variable is unset.
pub fn fluvio_endpoint(test: &str) -> Option<String> {
    if let Some(endpoint) = std::env::var(FLUVIO_ENDPOINT_VAR)
        .ok()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
    {
        return Some(endpoint);
    }
    eprintln!(
        "SKIPPED {test}: {FLUVIO_ENDPOINT_VAR} is not set, so the Fluvio case did not run \
         (./scripts/test starts a Fluvio cluster and sets it when it finds a fluvio-run built \
         from source; see connectors/README.md)"
    );
    None
}

/// The `fluvio-run` binary for tests that run a Fluvio cluster of their own (to freeze its SPU,
/// say): the `METRON_TEST_FLUVIO_RUN` variable, which `./scripts/test` sets when it has one.
/// `None`, after saying so, when it is unset (CI or not, as for [`fluvio_endpoint`]).
pub fn fluvio_run_binary(test: &str) -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os(FLUVIO_RUN_VAR).filter(|p| !p.is_empty()) {
        return Some(path.into());
    }
    eprintln!(
        "SKIPPED {test}: {FLUVIO_RUN_VAR} is not set, so no Fluvio cluster of the test's own \
         could be started (./scripts/test sets it when it finds a fluvio-run built from source)"
    );
    None
}

/// The variable [`fluvio_run_binary`] reads.
pub const FLUVIO_RUN_VAR: &str = "METRON_TEST_FLUVIO_RUN";
