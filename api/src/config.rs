//! One typed configuration: the embedded `default.yaml`, then the config file.

use metron_actors::StreamBackend;
use metron_engine::meter::MeterCreate;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

const DEFAULTS: &str = include_str!("default.yaml");

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    pub namespace: String,
    /// The process's memory budget (`None`: a quarter of the machine's memory).
    pub memory_bytes: Option<usize>,
    pub partitions: u32,
    #[serde(deserialize_with = "human_duration")]
    pub checkpoint_interval: Duration,
    #[serde(deserialize_with = "human_duration")]
    pub dedup_horizon: Duration,
    /// The dedup index's share (`None`: a quarter of the budget).
    pub dedup_memory_bytes: Option<usize>,
    pub batch_records_max: usize,
    pub backlog_records_max: u64,
    pub pending_events_max: usize,
    /// How long a partition's read waits for records before the partition wakes anyway
    /// (a message for the partition ends the wait at once).
    #[serde(deserialize_with = "human_duration")]
    pub read_wait_max: Duration,
    #[serde(deserialize_with = "human_duration")]
    pub checkpoint_failure_deadline: Duration,
    pub sql: SqlSection,
    #[serde(default)]
    /// Where Parquet files and checkpoint manifests live (`storage.*`).
    pub storage: metron_storage::objects::StorageOptions,
    pub meters: Vec<MeterCreate>,
    pub notifications: NotificationsConfig,
    pub entitlements: EntitlementsSection,
    #[serde(default)]
    pub billing: BillingSection,
    #[serde(default)]
    pub stripe: StripeSection,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub database: DatabaseSection,
    #[serde(default)]
    pub stream: StreamSection,
}

/// Where ingested events wait for the partitions (`stream.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StreamSection {
    /// `kafka://HOST:PORT[,HOST:PORT...]/TOPIC` or `fluvio://HOST:PORT/TOPIC` (the streaming
    /// controller's public address); empty: the embedded log in `<data_dir>/stream`.
    pub url: String,
    /// Replication factor of a topic Metron creates.
    pub replication_factor: i16,
    /// The client id Kafka's brokers see.
    pub client_id: String,
    /// A request to the brokers or the cluster (an append, a lookup) failing or unanswered
    /// this long fails (503).
    #[serde(deserialize_with = "human_duration")]
    pub request_timeout: Duration,
    /// The longest one Kafka fetch waits on the brokers for records.
    #[serde(deserialize_with = "human_duration")]
    pub fetch_wait_max: Duration,
    /// How long a Kafka read waits for a missing offset below the high watermark (a batch a
    /// broker counted but does not serve yet) before it passes over it.
    #[serde(deserialize_with = "human_duration")]
    pub hole_wait_max: Duration,
    /// How long a node's lease on the partitions of a Kafka or Fluvio topic lasts unrenewed
    /// (renewed every third of it): after a node dies, another can take its partitions this
    /// long after its last renewal.
    #[serde(deserialize_with = "human_duration")]
    pub lease_ttl: Duration,
}

impl Default for StreamSection {
    fn default() -> Self {
        let d = metron_connectors::KafkaConfig::default();
        Self {
            url: String::new(),
            replication_factor: d.replication_factor,
            client_id: d.client_id,
            request_timeout: d.request_timeout,
            fetch_wait_max: d.fetch_wait_max,
            hole_wait_max: d.hole_wait_max,
            lease_ttl: metron_actors::LEASE_TTL_DEFAULT,
        }
    }
}

impl StreamSection {
    /// The stream `url` (or `override_url`, from `--stream-url`) names, with `partitions`
    /// partitions: a Kafka or a Fluvio topic, or the embedded log when neither is set.
    pub fn backend(
        &self,
        override_url: Option<&str>,
        partitions: u32,
    ) -> Result<StreamBackend, ConfigError> {
        let Some(url) = first_set(override_url, &self.url) else {
            return Ok(StreamBackend::Embedded);
        };
        let invalid = |why: &str| {
            ConfigError::Invalid(format!(
                "stream.url {url:?} {why}; expected kafka://HOST:PORT[,HOST:PORT...]/TOPIC or \
                 fluvio://HOST:PORT/TOPIC"
            ))
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("names no scheme"))?;
        let (hosts, topic) = rest
            .split_once('/')
            .ok_or_else(|| invalid("names no topic"))?;
        let hosts: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        if hosts.is_empty() || hosts.iter().any(|b| !b.contains(':')) {
            return Err(invalid("needs HOST:PORT for each server"));
        }
        if topic.is_empty() || topic.contains('/') {
            return Err(invalid("names no single topic"));
        }
        if self.replication_factor < 1 {
            return Err(ConfigError::Invalid(
                "stream.replicationFactor must be at least 1".into(),
            ));
        }
        if self.fetch_wait_max < Duration::from_millis(1) {
            return Err(ConfigError::Invalid(
                "stream.fetchWaitMax must be at least 1ms".into(),
            ));
        }
        if self.request_timeout < Duration::from_millis(100) {
            return Err(ConfigError::Invalid(
                "stream.requestTimeout must be at least 100ms".into(),
            ));
        }
        if self.lease_ttl < Duration::from_millis(300) {
            return Err(ConfigError::Invalid(
                "stream.leaseTtl must be at least 300ms".into(),
            ));
        }
        match scheme {
            "kafka" => Ok(StreamBackend::Kafka(metron_connectors::KafkaConfig {
                brokers: hosts,
                topic: topic.to_owned(),
                partitions,
                replication_factor: self.replication_factor,
                client_id: self.client_id.clone(),
                request_timeout: self.request_timeout,
                fetch_wait_max: self.fetch_wait_max,
                hole_wait_max: self.hole_wait_max,
                ..metron_connectors::KafkaConfig::default()
            })),
            "fluvio" => {
                let [endpoint] = <[String; 1]>::try_from(hosts)
                    .map_err(|_| invalid("names more than one streaming controller"))?;
                Ok(StreamBackend::Fluvio(metron_connectors::FluvioConfig {
                    endpoint,
                    topic: topic.to_owned(),
                    partitions,
                    replication_factor: self.replication_factor as u32,
                    request_timeout: self.request_timeout,
                    ..metron_connectors::FluvioConfig::default()
                }))
            }
            _ => Err(invalid("does not start with kafka:// or fluvio://")),
        }
    }
}

/// The first of a command-line override and a config file's value that is set (not blank).
fn first_set(override_value: Option<&str>, file_value: &str) -> Option<String> {
    [override_value.unwrap_or_default(), file_value]
        .into_iter()
        .map(str::trim)
        .find(|value| !value.is_empty())
        .map(str::to_owned)
}

/// Where the catalog is (`database.*`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DatabaseSection {
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` or `sqlite://PATH`; empty: the SQLite
    /// file `catalog.db` in the data directory.
    pub url: String,
}

/// How billing works (`billing.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BillingSection {
    /// Subscriptions, collections and invoices one billing pass works on at once (1 to 64: each
    /// Stripe call holds a thread of the blocking pool).
    pub concurrency: usize,
}

impl Default for BillingSection {
    fn default() -> Self {
        Self { concurrency: 8 }
    }
}

/// Where Stripe's API is (tests point it at a fake Stripe).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StripeSection {
    pub api_base: String,
}

impl Default for StripeSection {
    fn default() -> Self {
        Self {
            api_base: metron_connectors::stripe::API_BASE_DEFAULT.to_owned(),
        }
    }
}

/// How clients and Stripe reach this server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerSection {
    /// The public base URL (`https://metron.example.com`); Stripe webhook endpoints are
    /// registered under it. Empty: the scheme and host of the request that installs the app.
    pub public_url: String,
}

impl Config {
    /// The catalog's database URL: `override_url` (`--database-url`, `DATABASE_URL`) when set,
    /// else `database.url`; `None` (both empty): the SQLite file in the data directory.
    pub fn catalog_url(&self, override_url: Option<&str>) -> Option<String> {
        first_set(override_url, &self.database.url)
    }

    /// The Stripe settings the app routes use.
    pub fn stripe_settings(&self) -> crate::routes::apps::StripeSettings {
        crate::routes::apps::StripeSettings {
            api_base: self.stripe.api_base.clone(),
            public_url: Some(self.server.public_url.clone()).filter(|u| !u.is_empty()),
        }
    }
}

/// What free SQL (`POST /api/v1/sql`) may take; a key left out keeps its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SqlSection {
    /// Memory of one query (sorts, joins, aggregations); past it the query fails with a 400.
    pub memory_bytes: usize,
    /// Queries at once; one more answers 429.
    pub concurrent_max: usize,
    /// Bytes of one string built by `repeat`, `lpad`, `rpad`.
    pub string_bytes_max: usize,
    /// Elements of one list built by `range` or `generate_series` as scalar functions.
    pub list_elements_max: usize,
}

impl Default for SqlSection {
    fn default() -> Self {
        let d = metron_storage::query::SqlLimits::default();
        Self {
            memory_bytes: d.memory_bytes,
            concurrent_max: d.concurrent_max,
            string_bytes_max: d.values.string_bytes_max,
            list_elements_max: d.values.list_elements_max,
        }
    }
}

impl From<&SqlSection> for metron_storage::query::SqlLimits {
    fn from(c: &SqlSection) -> Self {
        Self {
            memory_bytes: c.memory_bytes,
            concurrent_max: c.concurrent_max.max(1),
            values: metron_storage::query::guard::ValueLimits {
                string_bytes_max: c.string_bytes_max,
                list_elements_max: c.list_elements_max,
            },
        }
    }
}

/// Customer actors: how long one stays in memory without reads or usage.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntitlementsSection {
    /// How long a customer stays in memory without reads or usage.
    #[serde(default = "default_idle_after", deserialize_with = "human_duration")]
    pub idle_after: Duration,
    /// How long a customer stays unpacked without reads or usage.
    #[serde(default = "default_pack_after", deserialize_with = "human_duration")]
    pub pack_after: Duration,
}

fn default_idle_after() -> Duration {
    metron_actors::customer::EntitlementsConfig::default().idle_after
}

fn default_pack_after() -> Duration {
    metron_actors::customer::EntitlementsConfig::default().pack_after
}

impl From<&EntitlementsSection> for metron_actors::customer::EntitlementsConfig {
    fn from(c: &EntitlementsSection) -> Self {
        Self {
            idle_after: c.idle_after,
            pack_after: c.pack_after,
            // Set from the memory budget's shares (`MemoryShares::customers`).
            memory_bytes: 0,
        }
    }
}

/// Webhook delivery: the delay before each retry (Svix's schedule by default) and the
/// timeout of one attempt.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationsConfig {
    #[serde(default = "svix_schedule", deserialize_with = "human_durations")]
    pub retry_schedule: Vec<Duration>,
    #[serde(default = "request_timeout", deserialize_with = "human_duration")]
    pub request_timeout: Duration,
}

fn svix_schedule() -> Vec<Duration> {
    metron_actors::NotifierConfig::default().retry_schedule
}

fn request_timeout() -> Duration {
    metron_actors::NotifierConfig::default().request_timeout
}

impl From<&NotificationsConfig> for metron_actors::NotifierConfig {
    fn from(c: &NotificationsConfig) -> Self {
        Self {
            retry_schedule: c.retry_schedule.clone(),
            request_timeout: c.request_timeout,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// How the memory budget is shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryShares {
    pub total: usize,
    pub dedup: usize,
    pub sql: usize,
    /// Events partitions hold until a checkpoint.
    pub held_events: usize,
    /// Meters' minute states until a checkpoint.
    pub live_windows: usize,
    /// Customers in memory (live balances).
    pub customers: usize,
    /// Caches (the log's 64 MiB tail cache), HTTP, allocator slack: what is left.
    pub rest: usize,
}

impl Config {
    /// The memory budget shared out: the dedup index and SQL take what their keys say,
    /// held events half of the remainder, live windows a quarter, customers an eighth,
    /// and the last eighth is left to caches, HTTP and the allocator.
    pub fn memory_shares(&self) -> Result<MemoryShares, ConfigError> {
        let total = self
            .memory_bytes
            .unwrap_or_else(|| machine_memory_bytes() / 4);
        let sql = self
            .sql
            .memory_bytes
            .saturating_mul(self.sql.concurrent_max.max(1));
        let dedup = self.dedup_memory_bytes.unwrap_or(total / 4);
        let left = total
            .checked_sub(dedup)
            .and_then(|l| l.checked_sub(sql))
            .filter(|l| *l >= 64 << 20)
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "memoryBytes {total} leaves less than 64 MiB after dedupMemoryBytes \
                     ({}) and sql.memoryBytes x sql.concurrentMax ({sql})",
                    dedup
                ))
            })?;
        Ok(MemoryShares {
            total,
            dedup,
            sql,
            held_events: left / 2,
            live_windows: left / 4,
            customers: left / 8,
            rest: left - left / 2 - left / 4 - left / 8,
        })
    }

    /// Defaults, overridden key by key by the file (if any).
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut merged: serde_yaml::Value = serde_yaml::from_str(DEFAULTS)?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let overrides: serde_yaml::Value = serde_yaml::from_str(&text)?;
            if let (serde_yaml::Value::Mapping(base), serde_yaml::Value::Mapping(over)) =
                (&mut merged, overrides)
            {
                for (k, v) in over {
                    base.insert(k, v);
                }
            }
        }
        let config: Config = serde_yaml::from_value(merged)?;
        if config.partitions == 0 || config.partitions > 1024 {
            return Err(ConfigError::Invalid("partitions must be 1 to 1024".into()));
        }
        let url = config.database.url.trim();
        if !url.is_empty() && metron_storage::catalog::Backend::of_url(url).is_none() {
            return Err(ConfigError::Invalid(format!(
                "database.url {:?} must start with postgres:// or sqlite://",
                metron_storage::catalog::redact(url)
            )));
        }
        config.stream.backend(None, config.partitions)?;
        if config.checkpoint_interval < Duration::from_millis(50) {
            return Err(ConfigError::Invalid(
                "checkpointInterval must be at least 50ms".into(),
            ));
        }
        if config.read_wait_max < Duration::from_millis(1) {
            // Shorter, an idle partition would spin on its reads.
            return Err(ConfigError::Invalid(
                "readWaitMax must be at least 1ms".into(),
            ));
        }
        Ok(config)
    }
}

/// The machine's memory (`MemTotal`), or 4 GiB when it cannot be read.
pub fn machine_memory_bytes() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        })
        .map_or(4 << 30, |kib| kib.saturating_mul(1024))
}

/// `250ms`, `5s`, `10m`, `2h`, `35d`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

fn human_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} (use e.g. 250ms, 5s, 35d)"
        ))
    })
}

fn human_durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            parse_duration(text).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid duration {text:?} (use e.g. 250ms, 5s, 35d)"
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compose_files_cluster_config_loads_with_kafka_and_s3() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/cluster.yaml"
        ));
        let config = Config::load(Some(path)).expect("deploy/cluster.yaml");
        match config.stream.backend(None, config.partitions) {
            Ok(StreamBackend::Kafka(kafka)) => {
                assert_eq!(kafka.topic, "metron-events");
                assert_eq!(kafka.brokers, ["kafka:9092"]);
            }
            other => panic!("expected Kafka, got {other:?}"),
        }
        assert_eq!(config.storage.url.as_deref(), Some("s3://metron/cluster"));
        assert_eq!(config.meters.len(), 1);
    }

    #[test]
    fn the_deploy_example_loads_as_it_is_and_with_its_scale_out_lines_uncommented() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/metron.yaml"
        ));
        let config = Config::load(Some(path)).expect("deploy/metron.yaml");
        assert!(matches!(
            config.stream.backend(None, config.partitions),
            Ok(StreamBackend::Embedded)
        ));
        let text = std::fs::read_to_string(path).expect("read");
        let (head, tail) = text
            .split_once("# Past one machine")
            .expect("the scale-out lines");
        let tail = tail.split_once('\n').map_or("", |(_, rest)| rest);
        // Settings are the commented lines that go on in lower case or indented; prose is
        // capitalized.
        let tail: Vec<&str> = tail
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == ' ') => {
                    rest
                }
                _ => line,
            })
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let uncommented = dir.path().join("metron.yaml");
        std::fs::write(&uncommented, format!("{head}{}\n", tail.join("\n"))).expect("write");
        let config = Config::load(Some(&uncommented)).expect("the uncommented example");
        assert_eq!(
            config.catalog_url(None).as_deref(),
            Some("postgres://metron:secret@db.internal:5432/metron")
        );
        assert_eq!(
            config.storage.url.as_deref(),
            Some("s3://metron-usage/prod")
        );
        let kafka = kafka_of(config.stream.backend(None, config.partitions));
        assert_eq!(kafka.topic, "metron-events");
        assert_eq!((kafka.brokers.len(), kafka.replication_factor), (2, 3));
        assert_eq!(config.stream.lease_ttl, Duration::from_secs(15));
    }

    fn kafka_of(backend: Result<StreamBackend, ConfigError>) -> metron_connectors::KafkaConfig {
        match backend {
            Ok(StreamBackend::Kafka(kafka)) => kafka,
            other => panic!("expected a Kafka stream, got {other:?}"),
        }
    }

    #[test]
    fn defaults_load_and_files_override() {
        let config = Config::load(None).expect("defaults");
        assert_eq!(config.partitions, 4);
        assert_eq!(config.dedup_horizon, Duration::from_secs(35 * 86_400));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "partitions: 2\ncheckpointInterval: 250ms\nmeters:\n  - slug: m\n    eventType: t\n    aggregation: COUNT\n")
            .expect("write");
        let config = Config::load(Some(&path)).expect("file");
        assert_eq!(config.partitions, 2);
        assert_eq!(config.checkpoint_interval, Duration::from_millis(250));
        assert_eq!(config.meters.len(), 1);
        assert_eq!(
            config.notifications.retry_schedule.first(),
            Some(&Duration::from_secs(5))
        );
        std::fs::write(&path, "notifications:\n  retrySchedule: [100ms, 1s]\n").expect("write");
        let config = Config::load(Some(&path)).expect("file");
        assert_eq!(
            config.notifications.retry_schedule,
            vec![Duration::from_millis(100), Duration::from_secs(1)]
        );
        assert_eq!(
            config.notifications.request_timeout,
            Duration::from_secs(30)
        );
        std::fs::write(&path, "sql:\n  concurrentMax: 9\n").expect("write");
        let config = Config::load(Some(&path)).expect("file");
        assert_eq!(config.sql.concurrent_max, 9);
        assert_eq!(
            config.sql.memory_bytes,
            128 << 20,
            "unset keys keep their default"
        );
        let shares = config.memory_shares().expect("shares");
        assert_eq!(
            shares.held_events
                + shares.live_windows
                + shares.customers
                + shares.rest
                + shares.dedup
                + shares.sql,
            shares.total
        );
        std::fs::write(&path, "memoryBytes: 1073741824\n").expect("write");
        let config = Config::load(Some(&path)).expect("file");
        // 1 GiB - 256 MiB dedup (a quarter) - 4 x 128 MiB SQL leaves 256 MiB: 128 MiB for
        // held events.
        let shares = config.memory_shares().expect("shares");
        assert_eq!(shares.dedup, 256 << 20);
        assert_eq!(shares.held_events, 128 << 20);
        std::fs::write(&path, "memoryBytes: 536870912\n").expect("write");
        assert!(
            Config::load(Some(&path))
                .expect("file")
                .memory_shares()
                .is_err()
        );
        std::fs::write(&path, "memoryBytes: 2147483648\n").expect("write");
        let shares = Config::load(Some(&path))
            .expect("file")
            .memory_shares()
            .expect("shares");
        assert_eq!(shares.held_events, 512 << 20);
        std::fs::write(
            &path,
            "memoryBytes: 2147483648\ndedupMemoryBytes: 67108864\n",
        )
        .expect("write");
        let shares = Config::load(Some(&path))
            .expect("file")
            .memory_shares()
            .expect("shares");
        assert_eq!((shares.dedup, shares.held_events), (64 << 20, 736 << 20));
        assert_eq!(config.catalog_url(None), None, "default: the SQLite file");
        std::fs::write(
            &path,
            "database:\n  url: postgres://m:pw@127.0.0.1/metron\n",
        )
        .expect("write");
        let config = Config::load(Some(&path)).expect("file");
        assert_eq!(
            config.catalog_url(None).as_deref(),
            Some("postgres://m:pw@127.0.0.1/metron")
        );
        assert_eq!(
            config.catalog_url(Some("sqlite:///tmp/c.db")).as_deref(),
            Some("sqlite:///tmp/c.db"),
            "--database-url and DATABASE_URL win over the file"
        );
        assert_eq!(
            config.catalog_url(Some("")).as_deref(),
            Some("postgres://m:pw@127.0.0.1/metron"),
            "an empty DATABASE_URL is unset"
        );
        assert!(
            matches!(config.stream.backend(None, 4), Ok(StreamBackend::Embedded)),
            "default: embedded"
        );
        std::fs::write(
            &path,
            "partitions: 3\nstream:\n  url: kafka://b1:9092, b2:9093/usage.events\n  requestTimeout: 5s\n",
        )
        .expect("write");
        let config = Config::load(Some(&path)).expect("file");
        let kafka = kafka_of(config.stream.backend(None, config.partitions));
        assert_eq!(kafka.brokers, ["b1:9092", "b2:9093"]);
        assert_eq!(
            (kafka.topic.as_str(), kafka.partitions),
            ("usage.events", 3)
        );
        assert_eq!(kafka.request_timeout, Duration::from_secs(5));
        let other = kafka_of(config.stream.backend(Some("kafka://k:1/t"), 3));
        assert_eq!(
            (other.brokers[0].as_str(), other.topic.as_str()),
            ("k:1", "t"),
            "--stream-url wins"
        );
        for bad in [
            "nats://h:1/t",
            "kafka://h:1",
            "kafka://h/t",
            "kafka://h:1/",
            "kafka:///t",
            "fluvio://h:1,h:2/t",
            "fluvio://h/t",
            "fluvio://h:1/",
        ] {
            assert!(config.stream.backend(Some(bad), 3).is_err(), "{bad}");
        }
        match config
            .stream
            .backend(Some("fluvio://sc.internal:9003/usage-events"), 3)
        {
            Ok(StreamBackend::Fluvio(fluvio)) => {
                assert_eq!(
                    (
                        fluvio.endpoint.as_str(),
                        fluvio.topic.as_str(),
                        fluvio.partitions
                    ),
                    ("sc.internal:9003", "usage-events", 3)
                );
                assert_eq!(fluvio.request_timeout, Duration::from_secs(5));
            }
            other => panic!("expected a Fluvio stream, got {other:?}"),
        }
        std::fs::write(&path, "stream:\n  url: kafka://nohost\n").expect("write");
        assert!(
            Config::load(Some(&path)).is_err(),
            "a bad stream.url fails at load"
        );
        std::fs::write(&path, "database:\n  url: mysql://m:secret@h/db\n").expect("write");
        let error = Config::load(Some(&path))
            .expect_err("unknown scheme")
            .to_string();
        assert!(
            error.contains("postgres://") && !error.contains("secret"),
            "{error}"
        );
        std::fs::write(&path, "partitons: 2\n").expect("write");
        assert!(
            Config::load(Some(&path)).is_err(),
            "unknown keys are rejected"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("35d"),
            Some(Duration::from_secs(35 * 86_400))
        );
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5y"), None);
    }
}
