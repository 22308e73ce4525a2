//! The pipeline: starts the actors from the newest checkpoint and is the API's handle.

use crate::attribution::Attribution;
use crate::customer::{Activation, Subscription};
use crate::health::Health;
use crate::leases::StreamLeases;
use crate::meter::{self, Backfill, MeterActor, Rollups};
use crate::metrics::Metrics;
use crate::notification::Notifier;
use crate::partition::{
    self, Chunk, Held, PartitionActor, PartitionHandle, ReadHeld, ReadLimits, SharedDedup,
    Subscribe, Unsubscribe,
};
use crate::snapshot::{CheckpointNow, MeterEntry, SetMeters, SnapshotActor};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use metron_connectors::{
    EmbeddedLog, EmbeddedLogConfig, EventStream, FluvioConfig, FluvioStream, KafkaConfig,
    KafkaStream,
};
use metron_engine::event::{CloudEvent, EventParts, IngestedEvent};
use metron_engine::meter::{CompiledMeter, Extract, Meter, MeterCreate, MeterUpdate};
use metron_engine::query::{MeterQuery, ResultRow, RollupRow, evaluate};
use metron_engine::record;
use metron_engine::record::RecordView;
use metron_engine::window::floor_minute_ms;
use metron_storage::catalog::{self, Catalog};
use metron_storage::dedup::{DedupConfig, DedupIndex};
use metron_storage::manifest::{self, EventFile, Manifest};
use metron_storage::objects::ObjectRoot;
use metron_storage::query::{QueryService, SqlAnswer, SqlRequest, SqlTable, TimeRange};
use metron_storage::{events, rollups};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use xxhash_rust::xxh3::xxh3_64;

/// What the pipeline needs to start.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub data_dir: PathBuf,
    /// The catalog's database URL (`postgres://...`, `sqlite://...`); `None`: the SQLite file
    /// `catalog.db` in `data_dir`.
    pub catalog_url: Option<String>,
    pub partitions: u32,
    pub checkpoint_interval: Duration,
    pub dedup: DedupConfig,
    /// Records a partition reads per batch.
    pub batch_records_max: usize,
    /// Ingest answers 429 when a partition's unread backlog exceeds this many records.
    pub backlog_records_max: u64,
    /// A partition holding this many events since the last checkpoint asks for the next one early.
    pub pending_events_max: usize,
    /// How long a partition's read waits for records before the partition wakes anyway; a
    /// message for the partition ends the wait at once (`PartitionHandle`).
    pub read_wait_max: Duration,
    /// Meters declared in the config file (created in the catalog if missing).
    pub meters: Vec<MeterCreate>,
    pub namespace: String,
    /// Webhook delivery retries.
    pub notifications: crate::notification::NotifierConfig,
    /// Checkpoints failing for this long end the process (fatal).
    pub checkpoint_failure_deadline: Duration,
    /// Memory for the events partitions hold (read, not yet checkpointed), shared out
    /// evenly: a partition at its share stops reading (ingest then answers 429).
    pub held_events_bytes: usize,
    /// Memory for the meters' minute states not yet in a committed checkpoint: at it,
    /// every partition stops reading (ingest then answers 429).
    pub live_windows_bytes: usize,
    /// Where free SQL runs (the query runtime when `None`) and what it may take.
    pub sql_runtime: Option<tokio::runtime::Handle>,
    pub sql_limits: metron_storage::query::SqlLimits,
    /// Where Parquet files and checkpoint manifests live (`<data_dir>/objects` when its
    /// URL is unset); the stream, catalog and dedup runs stay in `data_dir`.
    pub storage: metron_storage::objects::StorageOptions,
    /// Where the event stream is; the backend's own `partitions` is set from `partitions`.
    pub stream: StreamBackend,
    /// This node's id in the partition leases of a shared stream; `None`: the one kept in
    /// `<data_dir>/node-id` (made on the first start).
    pub node_id: Option<String>,
    /// How long a partition lease lasts without renewal (renewed every third of it).
    pub lease_ttl: Duration,
    /// The URL of this node's HTTP API as the other nodes reach it (`http://10.0.0.7:8888`),
    /// recorded with the leases so that they can forward to the holder.
    pub advertise_url: Option<String>,
}

/// The default [`PipelineConfig::lease_ttl`].
pub const LEASE_TTL_DEFAULT: Duration = Duration::from_secs(15);

/// Where the event stream is.
#[derive(Debug, Clone, Default)]
pub enum StreamBackend {
    /// The embedded log in `<data_dir>/stream`.
    #[default]
    Embedded,
    /// A Kafka topic.
    Kafka(KafkaConfig),
    /// A Fluvio topic.
    Fluvio(FluvioConfig),
}

impl StreamBackend {
    /// The name under which the nodes sharing this stream lease its partitions: the kind and
    /// the topic (`kafka/metron-events`); `None` for the embedded log, which is one node's.
    pub fn lease_name(&self) -> Option<String> {
        match self {
            Self::Embedded => None,
            Self::Kafka(kafka) => Some(format!("kafka/{}", kafka.topic)),
            Self::Fluvio(fluvio) => Some(format!("fluvio/{}", fluvio.topic)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the pipeline is behind by {backlog} records; retry later")]
    Overloaded { backlog: u64 },
    #[error("the event stream failed: {0}")]
    Stream(#[from] metron_connectors::Error),
    #[error(transparent)]
    Catalog(#[from] catalog::Error),
    #[error(transparent)]
    Lease(#[from] metron_storage::leases::LeaseError),
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("invalid meter: {0}")]
    Meter(#[from] metron_engine::meter::MeterError),
    #[error("meter {0:?} not found")]
    MeterNotFound(String),
    #[error("a meter with slug {0:?} already exists")]
    MeterExists(String),
    #[error("invalid SQL: {0}")]
    Sql(String),
    #[error("the query did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the pipeline is shutting down")]
    Stopped,
    /// The pipeline has not caught up with the log since its start: a usage read now would
    /// miss events still being replayed (503, retry later).
    #[error("the server is replaying its event log and is not ready to answer reads yet")]
    NotReady,
    /// Too many SQL queries at once: retry later (429).
    #[error("{0}")]
    Busy(String),
    /// A query that needs more memory than a query's share (400).
    #[error("{0}")]
    QueryTooLarge(String),
    #[error("event at index {index} is {bytes} bytes stored; at most {max}")]
    EventTooLarge {
        index: usize,
        bytes: usize,
        max: usize,
    },
    /// Ingest is refused for now (checkpoints failing, or a fatal error): retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A request's events go to several partitions; the appends of some failed (`cause`),
    /// those of others did not: the client must resend the whole request unchanged.
    #[error(
        "{cause}; the events of {stored} of the request's {of} partitions were stored all the \
         same: resend the whole request unchanged (same ids), and the copies already stored are \
         dropped as duplicates"
    )]
    PartlyStored {
        stored: usize,
        of: usize,
        cause: Box<Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<metron_storage::query::Error> for Error {
    fn from(error: metron_storage::query::Error) -> Self {
        match error {
            metron_storage::query::Error::Sql(s) => Self::Sql(s),
            metron_storage::query::Error::Timeout(d) => Self::Timeout(d),
            e @ metron_storage::query::Error::Memory { .. } => Self::QueryTooLarge(e.to_string()),
            e @ metron_storage::query::Error::Busy(_) => Self::Busy(e.to_string()),
            other => Self::Storage(other.to_string()),
        }
    }
}

/// Filter of an event listing.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub namespace: String,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub ingested_from: Option<DateTime<Utc>>,
    pub ingested_to: Option<DateTime<Utc>>,
    pub subjects: Vec<String>,
    pub id_contains: Option<String>,
    pub ids: Vec<String>,
    pub sources: Vec<String>,
    pub types: Vec<String>,
    /// Only events of these subjects: the attribution of the customers asked for
    /// (empty: no customer filter; ANDed with `subjects`).
    pub customer_subjects: Vec<String>,
    /// OpenMeter's v2 string filters on `id`, `source`, `subject` or `type`.
    pub matchers: Vec<(&'static str, metron_engine::filter::StringFilter)>,
    /// Only events listed after this one (a v2 cursor): [`EventKey`] below it.
    pub before: Option<EventKey>,
    pub limit: usize,
}

/// The order of event listings, newest first: `(time, ingestedAt, id)` descending, so
/// that events sharing a time still have one place each (a cursor names it exactly).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventKey {
    pub time_us: i64,
    pub ingested_us: i64,
    pub id: String,
}

impl EventKey {
    pub fn of(e: &IngestedEvent) -> Self {
        Self {
            time_us: e.event.time.timestamp_micros(),
            ingested_us: e.ingested_at.timestamp_micros(),
            id: e.event.id.clone(),
        }
    }
}

impl EventFilter {
    fn admits(&self, e: &IngestedEvent) -> bool {
        let ev = &e.event;
        self.admits_attrs(&Attrs {
            namespace: &e.namespace,
            id: &ev.id,
            source: &ev.source,
            subject: &ev.subject,
            event_type: &ev.event_type,
            time: (ev.time.timestamp(), ev.time.timestamp_subsec_nanos()),
            time_us: ev.time.timestamp_micros(),
            ingested_us: e.ingested_at.timestamp_micros(),
        })
    }

    /// [`Self::admits`] of a stream record, read in place.
    fn admits_view(&self, e: &RecordView<'_>) -> bool {
        self.admits_attrs(&Attrs {
            namespace: e.namespace,
            id: e.id,
            source: e.source,
            subject: e.subject,
            event_type: e.event_type,
            time: (e.time_secs, e.time_nanos),
            time_us: e.time_us(),
            ingested_us: e.ingested_at_us,
        })
    }

    fn admits_attrs(&self, e: &Attrs<'_>) -> bool {
        let at = |t: &DateTime<Utc>| (t.timestamp(), t.timestamp_subsec_nanos());
        let has = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        e.namespace == self.namespace
            && self.from.is_none_or(|f| e.time >= at(&f))
            && self.to.is_none_or(|t| e.time < at(&t))
            && self
                .ingested_from
                .is_none_or(|f| e.ingested_us >= f.timestamp_micros())
            && self
                .ingested_to
                .is_none_or(|t| e.ingested_us < t.timestamp_micros())
            && has(&self.subjects, e.subject)
            && has(&self.customer_subjects, e.subject)
            && self
                .id_contains
                .as_ref()
                .is_none_or(|s| e.id.contains(s.as_str()))
            && has(&self.ids, e.id)
            && has(&self.sources, e.source)
            && has(&self.types, e.event_type)
            && self.matchers.iter().all(|(field, f)| {
                let v = match *field {
                    "id" => e.id,
                    "source" => e.source,
                    "subject" => e.subject,
                    _ => e.event_type,
                };
                f.matches(Some(v))
            })
            && self.before.as_ref().is_none_or(|b| {
                (e.time_us, e.ingested_us, e.id) < (b.time_us, b.ingested_us, b.id.as_str())
            })
    }
}

/// The attributes an [`EventFilter`] reads, of a decoded event or a record.
struct Attrs<'a> {
    namespace: &'a str,
    id: &'a str,
    source: &'a str,
    subject: &'a str,
    event_type: &'a str,
    /// Seconds and nanoseconds.
    time: (i64, u32),
    time_us: i64,
    ingested_us: i64,
}

/// The held records a filter admits, decoded.
fn admitted(chunks: &[Chunk], filter: &EventFilter) -> impl Iterator<Item = IngestedEvent> {
    chunks
        .iter()
        .flat_map(|chunk| partition::views(chunk))
        .filter(|v| filter.admits_view(v))
        .filter_map(|v| v.to_ingested().ok())
}

/// A listed event with OpenMeter's `validationError` against the current meters.
#[derive(Debug, Clone)]
pub struct ListedEvent {
    pub event: IngestedEvent,
    pub validation_error: Option<String>,
    /// The live customer the event's subject is attributed to.
    pub customer_id: Option<String>,
}

/// The API's handle on the running pipeline.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    config: PipelineConfig,
    stream: Arc<dyn EventStream>,
    catalog: Catalog,
    query: QueryService,
    metrics: Arc<Metrics>,
    consumed: Arc<Vec<AtomicU64>>,
    partitions: Vec<PartitionHandle>,
    snapshot: Addr<SnapshotActor>,
    meters: parking_lot::RwLock<BTreeMap<String, MeterEntry>>,
    attribution: Attribution,
    activation: Activation,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicU64,
    notifier: Notifier,
    health: Arc<Health>,
    /// Records the partitions had to replay at the start (0 after a clean shutdown).
    replay_records: u64,
    /// The dedup index (its figures for `/metrics`).
    dedup: SharedDedup,
    /// The partition leases of a shared stream (`None`: the embedded log).
    leases: Option<StreamLeases>,
}

impl Pipeline {
    /// Opens the stream, catalog and object root under the data directory, loads the
    /// newest checkpoint and starts the actors (inside the running actix System).
    pub async fn start(
        config: PipelineConfig,
        query_runtime: tokio::runtime::Handle,
    ) -> anyhow_free::Result<Self> {
        anyhow_free::start(config, query_runtime).await
    }

    fn entry_for(
        &self,
        meter: Arc<Meter>,
        files: manifest::MeterFiles,
        complete: bool,
    ) -> MeterEntry {
        let arbiter = pick(&self.inner.arbiters, &self.inner.next_arbiter);
        let m = meter.clone();
        let metrics = self.inner.metrics.clone();
        let partitions = self.inner.config.partitions;
        let addr = MeterActor::start_in_arbiter(&arbiter, move |_| {
            MeterActor::new(m, files, complete, partitions, metrics)
        });
        MeterEntry { meter, addr }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Fatal errors and readiness.
    pub fn health(&self) -> &Arc<Health> {
        &self.inner.health
    }

    /// An arbiter for a new actor (round robin over the cores).
    pub fn arbiter(&self) -> ArbiterHandle {
        pick(&self.inner.arbiters, &self.inner.next_arbiter)
    }

    /// Subscribes a customer at the partitions of its subjects and returns its events
    /// (of these types, from `from`) that were processed before the subscription took
    /// effect at each partition; every later event is delivered to its sink.
    pub async fn subscribe(
        &self,
        subscription: Arc<Subscription>,
        types: Vec<String>,
        from: Option<DateTime<Utc>>,
    ) -> Result<Vec<IngestedEvent>> {
        let mut held = Vec::new();
        let subjects: Vec<String> = subscription.subjects().map(str::to_owned).collect();
        for p in self.partitions_of(&subscription.namespace, &subjects) {
            if let Some(addr) = self.inner.partitions.get(p) {
                held.push(
                    addr.send(Subscribe {
                        subscription: subscription.clone(),
                    })
                    .await
                    .map_err(|_| Error::Stopped)?,
                );
            }
        }
        let filter = EventFilter {
            namespace: subscription.namespace.to_string(),
            from,
            subjects,
            types,
            limit: usize::MAX,
            ..EventFilter::default()
        };
        self.events_in(held, &filter).await
    }

    /// Stops a customer's usage messages.
    pub fn unsubscribe(
        &self,
        namespace: &str,
        customer_id: &str,
        generation: u64,
        subjects: Vec<String>,
    ) {
        for p in self.partitions_of(namespace, &subjects) {
            if let Some(addr) = self.inner.partitions.get(p) {
                addr.do_send(Unsubscribe {
                    namespace: namespace.to_owned(),
                    customer_id: customer_id.to_owned(),
                    generation,
                    subjects: subjects.clone(),
                });
            }
        }
    }

    /// A customer's events of some types in `[from, to)`: Parquet plus memory.
    pub async fn customer_events(
        &self,
        namespace: &str,
        subjects: Vec<String>,
        types: Vec<String>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Vec<IngestedEvent>> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let filter = EventFilter {
            namespace: namespace.to_owned(),
            from,
            to,
            subjects,
            types,
            limit: usize::MAX,
            ..EventFilter::default()
        };
        self.find_events(&filter).await
    }

    fn partitions_of(&self, namespace: &str, subjects: &[String]) -> BTreeSet<usize> {
        let n = self.inner.partitions.len() as u32;
        subjects
            .iter()
            .map(|s| partition_of(namespace, s, n) as usize)
            .collect()
    }

    /// The catalog (customers, features, entitlements, notifications live there too).
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The subject → customer index; reload it after every customer change.
    pub fn attribution(&self) -> &Attribution {
        &self.inner.attribution
    }

    /// How partitions ask for customer actors on demand.
    pub fn activation(&self) -> &Activation {
        &self.inner.activation
    }

    /// Notification rules, events and webhook deliveries.
    pub fn notifier(&self) -> &Notifier {
        &self.inner.notifier
    }

    pub fn namespace(&self) -> &str {
        &self.inner.config.namespace
    }

    /// Appends events to their partitions; returns once all of them are durable.
    pub async fn ingest(&self, namespace: &str, events: &[EventParts<'_>]) -> Result<()> {
        let health = &self.inner.health;
        if let Some(reason) = health.fatal_reason() {
            return Err(Error::Unavailable(format!(
                "the server is stopping: {reason}"
            )));
        }
        if let Some(since) = health.checkpoints_failing_since() {
            // Events taken now could not be checkpointed: memory would grow without bound.
            return Err(Error::Unavailable(format!(
                "checkpoints have been failing for {:.0?}; retry later",
                since.elapsed()
            )));
        }
        let count = events.len() as u64;
        let stream = self.inner.stream.as_ref();
        let groups = records_by_partition(stream, namespace, events)?;
        for (p, group) in groups.iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let end = stream.end_offset(p as u32)?;
            let consumed = self
                .inner
                .consumed
                .get(p)
                .map_or(0, |c| c.load(Ordering::Acquire));
            let backlog = end.saturating_sub(consumed);
            if backlog > self.inner.config.backlog_records_max {
                return Err(Error::Overloaded { backlog });
            }
        }
        append_groups(stream, groups, Some(health)).await?;
        Metrics::add(&self.inner.metrics.events_ingested_total, count);
        Ok(())
    }

    // ---- meters ----

    pub async fn list_meters(&self, namespace: &str, include_deleted: bool) -> Result<Vec<Meter>> {
        Ok(self
            .inner
            .catalog
            .list_meters(namespace, include_deleted)
            .await?)
    }

    pub async fn get_meter(&self, namespace: &str, id_or_slug: &str) -> Result<Meter> {
        self.inner
            .catalog
            .get_meter(namespace, id_or_slug)
            .await?
            .ok_or_else(|| Error::MeterNotFound(id_or_slug.to_owned()))
    }

    /// Creates a meter and backfills it from every event already ingested.
    pub async fn create_meter(&self, namespace: &str, create: MeterCreate) -> Result<Meter> {
        let meter = create.into_meter(ulid::Ulid::new().to_string(), namespace, Utc::now())?;
        match self.inner.catalog.insert_meter(&meter).await {
            Err(catalog::Error::SlugTaken { slug }) => return Err(Error::MeterExists(slug)),
            other => other?,
        }
        self.register(meter.clone()).await?;
        Ok(meter)
    }

    async fn register(&self, meter: Meter) -> Result<()> {
        let meter = Arc::new(meter);
        let entry = self.entry_for(meter.clone(), manifest::MeterFiles::default(), false);
        self.inner
            .meters
            .write()
            .insert(meter.id.clone(), entry.clone());
        let (done, held) = tokio::sync::oneshot::channel();
        self.inner
            .snapshot
            .send(SetMeters {
                upsert: vec![entry.clone()],
                remove: Vec::new(),
                done,
            })
            .await
            .map_err(|_| Error::Stopped)?;
        let held = held.await.map_err(|_| Error::Stopped)?;
        let rows = self.backfill_rows(&meter, held).await?;
        entry.addr.do_send(Backfill { rows });
        Ok(())
    }

    /// Rollups of a meter from the events the partitions held (files + memory).
    async fn backfill_rows(&self, meter: &Meter, held: Vec<Held>) -> Result<Vec<RollupRow>> {
        let files: Vec<EventFile> = held.iter().flat_map(|h| h.files.iter().cloned()).collect();
        let mut rows = scan_backfill(&self.inner.query, meter, &files).await?;
        let compiled = meter.compile();
        for h in &held {
            for events in &h.events {
                rows.extend(fold_records(
                    &compiled,
                    &meter.namespace,
                    partition::views(events),
                ));
            }
        }
        Ok(rows)
    }

    pub async fn update_meter(
        &self,
        namespace: &str,
        id_or_slug: &str,
        update: MeterUpdate,
    ) -> Result<Meter> {
        let mut meter = self.get_meter(namespace, id_or_slug).await?;
        meter.apply_update(update, Utc::now())?;
        self.inner.catalog.update_meter(&meter).await?;
        let entry = self.inner.meters.read().get(&meter.id).cloned();
        if let Some(entry) = entry {
            let meter = Arc::new(meter.clone());
            entry.addr.do_send(meter::Redefine {
                meter: meter.clone(),
            });
            let entry = MeterEntry {
                meter,
                addr: entry.addr,
            };
            self.inner
                .meters
                .write()
                .insert(entry.meter.id.clone(), entry.clone());
            let (done, held) = tokio::sync::oneshot::channel();
            self.inner
                .snapshot
                .send(SetMeters {
                    upsert: vec![entry],
                    remove: Vec::new(),
                    done,
                })
                .await
                .map_err(|_| Error::Stopped)?;
            let _ = held.await;
        }
        Ok(meter)
    }

    pub async fn delete_meter(&self, namespace: &str, id_or_slug: &str) -> Result<()> {
        let mut meter = self.get_meter(namespace, id_or_slug).await?;
        meter.deleted_at = Some(Utc::now());
        self.inner.catalog.update_meter(&meter).await?;
        self.inner.meters.write().remove(&meter.id);
        let (done, held) = tokio::sync::oneshot::channel();
        self.inner
            .snapshot
            .send(SetMeters {
                upsert: Vec::new(),
                remove: vec![meter.id.clone()],
                done,
            })
            .await
            .map_err(|_| Error::Stopped)?;
        let _ = held.await;
        Ok(())
    }

    // ---- queries ----

    /// Minute rollups of a meter that a query admits: Parquet files plus live rows.
    async fn rollup_rows(
        &self,
        meter: &Meter,
        query: &MeterQuery,
    ) -> Result<(Arc<Meter>, Vec<RollupRow>)> {
        // Usage read from half-replayed state would be short (a bill, a threshold): refused.
        if !self.inner.health.is_ready() {
            return Err(Error::NotReady);
        }
        let entry = self
            .inner
            .meters
            .read()
            .get(&meter.id)
            .cloned()
            .ok_or_else(|| Error::MeterNotFound(meter.slug.clone()))?;
        let snapshot = entry
            .addr
            .send(meter::Read {
                query: Arc::new(query.clone()),
            })
            .await
            .map_err(|_| Error::Stopped)?;
        let keys: Vec<String> = snapshot.meter.group_by.keys().cloned().collect();
        let (lo, hi) = query.minute_range_ms();
        // Files are read by a pruned reader (cached footers, row groups and pages pruned
        // by minute and subject), not a DataFusion plan: this shape is fixed.
        // A query of whole UTC hours takes rows merged per hour: from the hourly files
        // where the meter has them (up to 60 times fewer rows to read), else merged
        // while decoding the minute files; either way up to 60 times fewer to evaluate.
        let slot_ms = rollups::query_slot_ms(query);
        let files = match &snapshot.hourly {
            Some(hourly) if slot_ms == rollups::HOUR_MS => hourly,
            _ => &snapshot.files,
        };
        let scan = metron_storage::query::pruned::RollupScan {
            paths: files.iter().map(|f| f.path.clone()).collect(),
            lo_ms: (lo != i64::MIN).then_some(lo),
            hi_ms: (hi != i64::MAX).then_some(hi),
            subjects: query.subjects_to_scan().into_iter().collect(),
            skip: rollups::unused_columns(snapshot.meter.aggregation)
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
        };
        let batches = self.inner.query.scan_rollups(scan).await?;
        let mut rows = snapshot.rows;
        for batch in &batches {
            let from_file =
                rollups::from_batch_in_slots(&keys, snapshot.meter.aggregation, batch, slot_ms)
                    .map_err(|e| Error::Storage(e.to_string()))?;
            rows.extend(from_file.into_iter().filter(|r| query.admits(&keys, r)));
        }
        // A `from` or `to` inside a minute: that minute comes from the raw events,
        // so the answer is exact to the microsecond, as OpenMeter's.
        let edges = edge_ranges(query);
        if !edges.is_empty() {
            let partial: HashSet<i64> = edges
                .iter()
                .map(|(lo, _)| floor_minute_ms(lo / 1000))
                .collect();
            rows.retain(|r| !partial.contains(&r.minute_ms));
            let compiled = snapshot.meter.compile();
            for (lo, hi) in edges {
                let events = self.raw_events(&snapshot.meter, query, lo, hi).await?;
                rows.extend(
                    fold_events(&compiled, &snapshot.meter.namespace, events.iter())
                        .into_iter()
                        .filter(|r| query.admits(&keys, r)),
                );
            }
        }
        Ok((snapshot.meter, rows))
    }

    /// The meter's raw events with time in `[lo, hi)` (microseconds): Parquet plus memory.
    async fn raw_events(
        &self,
        meter: &Meter,
        query: &MeterQuery,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<IngestedEvent>> {
        let filter = EventFilter {
            namespace: meter.namespace.clone(),
            from: DateTime::from_timestamp_micros(lo),
            to: DateTime::from_timestamp_micros(hi),
            subjects: query.subjects.clone(),
            types: vec![meter.event_type.clone()],
            limit: usize::MAX,
            ..EventFilter::default()
        };
        self.find_events(&filter).await
    }

    /// Every event the filter admits, unordered: the partitions' in-memory events
    /// plus their committed Parquet files (pruned by day, time, subject and type).
    async fn find_events(&self, filter: &EventFilter) -> Result<Vec<IngestedEvent>> {
        let mut held = Vec::with_capacity(self.inner.partitions.len());
        for addr in &self.inner.partitions {
            held.push(addr.send(ReadHeld).await.map_err(|_| Error::Stopped)?);
        }
        self.events_in(held, filter).await
    }

    /// The events of some files that a filter admits.
    async fn events_in_files(
        &self,
        files: &[EventFile],
        filter: &EventFilter,
    ) -> Result<Vec<IngestedEvent>> {
        let held = Held {
            events: Vec::new(),
            files: files.to_vec(),
        };
        self.events_in(vec![held], filter).await
    }

    /// The events of some partitions' holdings that a filter admits.
    async fn events_in(&self, held: Vec<Held>, filter: &EventFilter) -> Result<Vec<IngestedEvent>> {
        let mut found: Vec<IngestedEvent> = Vec::new();
        let mut urls = Vec::new();
        for held in held {
            found.extend(admitted(&held.events, filter));
            urls.extend(
                held.files
                    .iter()
                    .filter(|f| f.namespace == filter.namespace)
                    .filter(|f| day_overlaps(&f.day, filter.from, filter.to))
                    .filter(|f| {
                        f.may_hold(
                            filter.from.map(|t| t.timestamp_micros()),
                            filter.to.map(|t| t.timestamp_micros()),
                        )
                    })
                    .map(|f| self.url_of(&f.path)),
            );
        }
        let range = TimeRange {
            column: "time",
            lo: filter.from.map(|t| t.timestamp_micros()),
            hi: filter.to.map(|t| t.timestamp_micros()),
            micros: true,
        };
        let scanned = if filter.subjects.is_empty() {
            &filter.customer_subjects
        } else {
            &filter.subjects
        };
        let subjects = (!scanned.is_empty()).then(|| ("subject", scanned.clone()));
        let equals = match filter.types.as_slice() {
            [one] => vec![("type", one.clone())],
            _ => Vec::new(),
        };
        let batches = self
            .inner
            .query
            .scan(events::schema(), urls, range, subjects, equals)
            .await?;
        for batch in &batches {
            let list = events::from_batch(batch).map_err(|e| Error::Storage(e.to_string()))?;
            found.extend(list.into_iter().filter(|e| filter.admits(e)));
        }
        Ok(found)
    }

    /// Answers a meter query.
    pub async fn query_meter(&self, meter: &Meter, query: &MeterQuery) -> Result<Vec<ResultRow>> {
        let (meter, rows) = self.rollup_rows(meter, query).await?;
        let keys: Vec<String> = meter.group_by.keys().cloned().collect();
        Metrics::add(&self.inner.metrics.meter_queries_total, 1);
        Ok(evaluate(&keys, query, rows))
    }

    /// Distinct subjects with usage of a meter.
    pub async fn meter_subjects(&self, meter: &Meter, query: &MeterQuery) -> Result<Vec<String>> {
        let (_, rows) = self.rollup_rows(meter, query).await?;
        let set: std::collections::BTreeSet<String> = rows.into_iter().map(|r| r.subject).collect();
        Ok(set.into_iter().collect())
    }

    /// Distinct values of one group-by key of a meter.
    pub async fn group_by_values(
        &self,
        meter: &Meter,
        key: &str,
        query: &MeterQuery,
    ) -> Result<Vec<String>> {
        let (meter, rows) = self.rollup_rows(meter, query).await?;
        let Some(index) = meter.group_by.keys().position(|k| k == key) else {
            return Ok(Vec::new());
        };
        let set: std::collections::BTreeSet<String> = rows
            .into_iter()
            .filter_map(|r| r.group.get(index).cloned())
            .filter(|v| !v.is_empty())
            .collect();
        Ok(set.into_iter().collect())
    }

    fn url_of(&self, path: &str) -> String {
        self.inner
            .query
            .root()
            .url_of(&metron_storage::objects::object_path(path))
    }

    /// Lists the first `filter.limit` events in [`EventKey`] order (newest first), with
    /// their validation errors. Memory is bounded by the limit and one file: files are
    /// read one at a time, newest first, and reading stops at the first file that cannot
    /// hold an event newer than the last one kept.
    pub async fn list_events(&self, filter: &EventFilter) -> Result<Vec<ListedEvent>> {
        let mut held = Vec::with_capacity(self.inner.partitions.len());
        for addr in &self.inner.partitions {
            held.push(addr.send(ReadHeld).await.map_err(|_| Error::Stopped)?);
        }
        let mut top = TopEvents::new(filter.limit);
        let mut files = Vec::new();
        for h in held {
            for e in admitted(&h.events, filter) {
                top.offer(&e);
            }
            files.extend(h.files.into_iter().filter(|f| {
                f.namespace == filter.namespace
                    && day_overlaps(&f.day, filter.from, filter.to)
                    && f.may_hold(
                        filter.from.map(|t| t.timestamp_micros()),
                        filter.to.map(|t| t.timestamp_micros()),
                    )
            }));
        }
        // Newest first by the latest time a file may hold (unknown: read first).
        files.sort_by_key(|f| std::cmp::Reverse(f.times_us.map_or(i64::MAX, |(_, hi)| hi)));
        let to = match (&filter.before, filter.to) {
            (Some(b), to) => {
                let bound = b
                    .time_us
                    .checked_add(1)
                    .and_then(DateTime::from_timestamp_micros);
                match (bound, to) {
                    (Some(b), Some(t)) => Some(b.min(t)),
                    (b, t) => b.or(t),
                }
            }
            (None, to) => to,
        };
        for file in files {
            if let (Some(floor), Some((_, hi))) = (top.floor(), file.times_us)
                && hi < floor.time_us
            {
                break;
            }
            let per_file = EventFilter {
                to,
                ..filter.clone()
            };
            for e in self.events_in_files(&[file], &per_file).await? {
                top.offer(&e);
            }
        }
        let found = top.into_sorted();
        let meters: Vec<CompiledMeter> = self
            .inner
            .meters
            .read()
            .values()
            .filter(|m| m.meter.namespace == filter.namespace)
            .map(|m| m.meter.compile())
            .collect();
        Ok(found
            .into_iter()
            .map(|event| {
                let validation_error = validation_error(&meters, &event.event);
                let customer_id = self
                    .inner
                    .attribution
                    .customer_of(&filter.namespace, &event.event.subject)
                    .map(|c| c.id().to_string());
                ListedEvent {
                    event,
                    validation_error,
                    customer_id,
                }
            })
            .collect())
    }

    /// Runs read-only SQL over the namespace's `events` table and its meters'
    /// rollup tables (`meter_<slug>`), files plus live rows.
    pub async fn sql(
        &self,
        namespace: &str,
        sql: String,
        row_limit: usize,
        timeout: Duration,
    ) -> Result<SqlAnswer> {
        // The slot first: a query refused for want of one copies no live rows.
        let slot = self.inner.query.try_sql_slot()?;
        let tables = self.sql_tables(namespace, &sql).await?;
        Metrics::add(&self.inner.metrics.sql_queries_total, 1);
        Ok(self
            .inner
            .query
            .sql_in_slot(
                slot,
                SqlRequest {
                    tables,
                    sql,
                    row_limit,
                    timeout,
                },
            )
            .await?)
    }

    /// What a SQL query over `namespace` reads: for `events` and each `meter_<slug>` the
    /// text names, its Parquet files and its live rows (those not checkpointed yet). A
    /// standby runs the query itself over them ([`Self::sql_tables_encoded`]).
    pub async fn sql_tables(&self, namespace: &str, sql: &str) -> Result<Vec<SqlTable>> {
        let mut tables = Vec::new();
        let mut live_chunks: Vec<Chunk> = Vec::new();
        let mut event_urls = Vec::new();
        // Live rows are copied only for the tables the text can name (a word of it).
        let words = sql_words(sql);
        let named = |table: &str| words.contains(&table.to_ascii_lowercase());
        for addr in self.inner.partitions.iter().filter(|_| named("events")) {
            let held = addr.send(ReadHeld).await.map_err(|_| Error::Stopped)?;
            live_chunks.extend(held.events);
            event_urls.extend(
                held.files
                    .iter()
                    .filter(|f| f.namespace == namespace)
                    .map(|f| self.url_of(&f.path)),
            );
        }
        let live_events: Vec<RecordView<'_>> = live_chunks
            .iter()
            .flat_map(|chunk| partition::views(chunk))
            .filter(|e| e.namespace == namespace)
            .collect();
        let live =
            events::to_batch_views(&live_events).map_err(|e| Error::Storage(e.to_string()))?;
        tables.push(SqlTable {
            name: "events".into(),
            schema: events::schema(),
            urls: event_urls,
            live: vec![live],
        });
        let entries: Vec<MeterEntry> = self
            .inner
            .meters
            .read()
            .values()
            .filter(|m| m.meter.namespace == namespace)
            .filter(|m| named(&format!("meter_{}", m.meter.slug)))
            .cloned()
            .collect();
        for entry in entries {
            let all = Arc::new(MeterQuery::default());
            let snapshot = entry
                .addr
                .send(meter::Read { query: all })
                .await
                .map_err(|_| Error::Stopped)?;
            let keys: Vec<String> = snapshot.meter.group_by.keys().cloned().collect();
            let live = rollups::to_batch(&keys, &snapshot.rows)
                .map_err(|e| Error::Storage(e.to_string()))?;
            tables.push(SqlTable {
                name: format!("meter_{}", snapshot.meter.slug),
                schema: rollups::schema(&keys),
                urls: snapshot
                    .files
                    .iter()
                    .map(|f| self.url_of(&f.path))
                    .collect(),
                live: vec![live],
            });
        }
        Ok(tables)
    }

    /// [`Self::sql_tables`] for a standby, in [`metron_storage::query::wire`]'s encoding,
    /// with this node's object root (the standby reads the files from there itself).
    /// It takes one of this node's SQL slots while it gathers and encodes them: 429 when all
    /// are taken, as a query here would be.
    pub async fn sql_tables_encoded(&self, namespace: &str, sql: &str) -> Result<Vec<u8>> {
        let _slot = self.inner.query.try_sql_slot()?;
        if let Some(metron_engine::failpoint::Action::Sleep(pause)) =
            metron_engine::failpoint::eval("sql.tables")
        {
            tokio::time::sleep(pause).await;
        }
        let tables = self.sql_tables(namespace, sql).await?;
        Metrics::add(&self.inner.metrics.sql_tables_sent_total, 1);
        Ok(metron_storage::query::wire::encode(
            self.inner.query.root().url(),
            &tables,
        )?)
    }

    /// Takes a checkpoint now and returns its epoch once durable.
    pub async fn checkpoint(&self) -> Result<u64> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.inner
            .snapshot
            .send(CheckpointNow { done })
            .await
            .map_err(|_| Error::Stopped)?;
        result
            .await
            .map_err(|_| Error::Stopped)?
            .map_err(Error::Storage)
    }

    /// Stops the stream's writer after a final checkpoint.
    pub async fn shutdown(&self) -> Result<u64> {
        let epoch = self.checkpoint().await;
        self.inner.stream.close();
        // Notifications fired from usage the final checkpoint holds are not fired again by
        // the next start: they must be stored before the catalog closes.
        if !self.inner.notifier.flush(NOTIFICATIONS_FLUSH_MAX).await {
            tracing::warn!("Notifications fired just before the stop may not have been stored.");
        }
        if let Some(leases) = &self.inner.leases {
            leases.release().await;
        }
        self.inner.catalog.close().await;
        epoch
    }

    /// Prometheus text of the counters plus backlog gauges.
    pub fn metrics_text(&self) -> String {
        let mut backlog = 0u64;
        for p in 0..self.inner.config.partitions {
            let end = self.inner.stream.end_offset(p).unwrap_or(0);
            let consumed = self
                .inner
                .consumed
                .get(p as usize)
                .map_or(0, |c| c.load(Ordering::Acquire));
            backlog += end.saturating_sub(consumed);
        }
        let stats = self.inner.stream.stats();
        let meters = self.inner.meters.read().len() as f64;
        let dedup = self.inner.dedup.lock().stats();
        self.inner.metrics.render(
            &[
                (
                    "metron_dedup_disk_probes_total",
                    "Dedup lookups that read a run file (its filter said maybe).",
                    dedup.disk_lookups,
                ),
                (
                    "metron_dedup_filter_false_positives_total",
                    "Dedup lookups that read a run file without finding the key.",
                    dedup.bloom_false_positives,
                ),
                (
                    "metron_dedup_merges_total",
                    "Dedup run merges installed.",
                    dedup.compactions,
                ),
                (
                    "metron_stream_offset_holes_skipped_total",
                    "Offsets below a Kafka topic's high watermark that stayed unreadable past stream.holeWaitMax, and that reads passed over.",
                    stats.holes_skipped,
                ),
            ],
            &[
            (
                "metron_dedup_runs",
                "Dedup run files in use.",
                dedup.runs as f64,
            ),
            (
                "metron_dedup_keys_on_disk",
                "Keys in the dedup run files.",
                dedup.keys_on_disk as f64,
            ),
            (
                "metron_dedup_memory_bytes",
                "Memory of the dedup index: its memory tables, filters and fences.",
                (dedup.memory_bytes + dedup.bloom_bytes) as f64,
            ),
            (
                "metron_stream_backlog_records",
                "Records appended but not yet read by partition actors.",
                backlog as f64,
            ),
            (
                "metron_stream_syncs",
                "Writes that made appends durable: fsyncs of the embedded log's writer (group commit), produce requests on Kafka, appends on Fluvio.",
                stats.syncs as f64,
            ),
            (
                "metron_stream_appends",
                "Append requests served by the stream writer.",
                stats.appends as f64,
            ),
            ("metron_meters", "Meters running.", meters),
            (
                "metron_live_window_bytes",
                "Estimated bytes of the meters' minute states not yet in a committed checkpoint.",
                self.inner.metrics.live_window_bytes.load(Ordering::Relaxed) as f64,
            ),
            (
                "metron_checkpoint_epoch",
                "Epoch of the newest checkpoint this node committed, or loaded at its start (a new holder of a Kafka or Fluvio topic: the copy it took the checkpoints over with).",
                self.inner.metrics.checkpoint_epoch.load(Ordering::Relaxed) as f64,
            ),
            (
                "metron_held_event_bytes",
                "Estimated bytes of the events partitions hold until a checkpoint.",
                self.inner.metrics.held_event_bytes.load(Ordering::Relaxed) as f64,
            ),
            (
                "metron_replay_records_at_start",
                "Log records past the newest checkpoint at the start (0 after a clean shutdown).",
                self.inner.replay_records as f64,
            ),
            (
                "metron_ready",
                "1 once the log is replayed and no fatal error happened.",
                f64::from(u8::from(self.inner.health.is_ready())),
            ),
            (
                "metron_checkpoints_failing",
                "1 while the last checkpoint failed (ingest answers 503).",
                f64::from(u8::from(
                    self.inner.health.checkpoints_failing_since().is_some(),
                )),
            ),
        ],
        )
    }
}

/// The first `limit` events in [`EventKey`] order (largest keys) among those offered:
/// a bounded min-heap.
struct TopEvents {
    limit: usize,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(EventKey, ByKey)>>,
}

/// An event carried in the heap (ordered by its key alone, which comes first).
struct ByKey(IngestedEvent);

impl PartialEq for ByKey {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for ByKey {}
impl PartialOrd for ByKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByKey {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl TopEvents {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            heap: std::collections::BinaryHeap::new(),
        }
    }

    fn offer(&mut self, e: &IngestedEvent) {
        if self.limit == 0 {
            return;
        }
        let key = EventKey::of(e);
        if self.heap.len() < self.limit {
            self.heap.push(std::cmp::Reverse((key, ByKey(e.clone()))));
        } else if let Some(std::cmp::Reverse((least, _))) = self.heap.peek()
            && key > *least
        {
            self.heap.pop();
            self.heap.push(std::cmp::Reverse((key, ByKey(e.clone()))));
        }
    }

    /// The smallest key kept, once the heap is full: nothing below it can enter.
    fn floor(&self) -> Option<&EventKey> {
        (self.heap.len() >= self.limit)
            .then(|| self.heap.peek().map(|std::cmp::Reverse((k, _))| k))
            .flatten()
    }

    /// Largest key first.
    fn into_sorted(self) -> Vec<IngestedEvent> {
        // `into_sorted_vec` is ascending in `Reverse`, i.e. descending in the key.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|std::cmp::Reverse((_, ByKey(e)))| e)
            .collect()
    }
}

/// The identifier-like words of a SQL text, lowercased: a table the query reads is
/// among them, however it is quoted.
fn sql_words(sql: &str) -> HashSet<String> {
    sql.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The partial minutes of a query, as `[lo, hi)` in microseconds: the minute of a
/// `from` or `to` that is not on a minute edge.
fn edge_ranges(query: &MeterQuery) -> Vec<(i64, i64)> {
    const MINUTE_US: i64 = 60_000_000;
    let from = query.from.map(|t| t.timestamp_micros());
    let to = query.to.map(|t| t.timestamp_micros());
    let floor = |us: i64| us.div_euclid(MINUTE_US) * MINUTE_US;
    let mut edges = Vec::new();
    if let Some(f) = from
        && f % MINUTE_US != 0
    {
        let end = floor(f) + MINUTE_US;
        edges.push((f, to.map_or(end, |t| t.min(end))));
    }
    if let Some(t) = to
        && t % MINUTE_US != 0
    {
        let start = floor(t);
        if edges.first().is_none_or(|(lo, _)| floor(*lo) != start) {
            edges.push((from.map_or(start, |f| f.max(start)), t));
        }
    }
    edges
}

fn day_overlaps(day: &str, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> bool {
    let Ok(day) = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d") else {
        return true;
    };
    let start = day.and_time(chrono::NaiveTime::MIN).and_utc();
    let end = start + chrono::Duration::days(1);
    from.is_none_or(|f| end > f) && to.is_none_or(|t| start < t)
}

/// OpenMeter's `validationError` of an event: the first meter of its type that cannot read it.
pub fn validation_error(meters: &[CompiledMeter], event: &CloudEvent) -> Option<String> {
    meters.iter().find_map(|m| match m.extract(event) {
        Extract::Invalid(text) => Some(text),
        _ => None,
    })
}

/// The stream records of `events` (stamped now), grouped by partition: every record is made
/// and checked against the stream's record limit before any is appended, so a request is
/// stored whole or not at all. A partition's records share one buffer.
pub(crate) fn records_by_partition(
    stream: &dyn EventStream,
    namespace: &str,
    events: &[EventParts<'_>],
) -> Result<Vec<Vec<bytes::Bytes>>> {
    let partitions = stream.partitions();
    let now_us = Utc::now().timestamp_micros();
    let max = stream.record_bytes_max();
    let mut buffers: Vec<(Vec<u8>, Vec<usize>)> =
        vec![(Vec::new(), Vec::new()); partitions as usize];
    for (index, event) in events.iter().enumerate() {
        let p = partition_of(namespace, &event.subject, partitions);
        let Some((buffer, ends)) = buffers.get_mut(p as usize) else {
            continue;
        };
        let start = buffer.len();
        record::encode_into(buffer, namespace, now_us, event);
        let bytes = buffer.len() - start;
        if bytes > max {
            return Err(Error::EventTooLarge { index, bytes, max });
        }
        ends.push(buffer.len());
    }
    Ok(buffers
        .into_iter()
        .map(|(buffer, ends)| {
            let buffer = bytes::Bytes::from(buffer);
            let mut start = 0;
            ends.into_iter()
                .map(|end| {
                    let record = buffer.slice(start..end);
                    start = end;
                    record
                })
                .collect()
        })
        .collect())
}

/// Appends each partition's records (from [`records_by_partition`]) and returns once all
/// are durable. A failed write of the embedded log is fatal through `health`: what is on disk
/// is no longer known, and the restart reads the log as it is.
///
/// The partitions' appends are independent: when some fail and others do not, the error is
/// [`Error::PartlyStored`], which tells the client to resend the request unchanged (the
/// dedup index drops the copies already stored). Every append's outcome is looked at, so a
/// fatal one is never hidden behind another partition's 429.
pub(crate) async fn append_groups(
    stream: &dyn EventStream,
    groups: Vec<Vec<bytes::Bytes>>,
    health: Option<&Health>,
) -> Result<()> {
    let appends = groups
        .into_iter()
        .enumerate()
        .filter(|(_, g)| !g.is_empty())
        .map(|(p, g)| stream.append(p as u32, g));
    let results = futures::future::join_all(appends).await;
    let of = results.len();
    let mut stored = 0;
    let mut failure: Option<Error> = None;
    for result in results {
        let error = match result {
            Ok(_) => {
                stored += 1;
                continue;
            }
            Err(metron_connectors::Error::Overloaded { queued }) => Error::Overloaded {
                backlog: queued as u64,
            },
            Err(
                error @ (metron_connectors::Error::Io { .. }
                | metron_connectors::Error::Poisoned { .. }),
            ) => {
                if let Some(health) = health {
                    health.fatal(format!("appending to the event log failed: {error}"));
                }
                error.into()
            }
            // The brokers did not take the records (or did not say so in time): the client
            // retries, and the dedup index drops what did land twice.
            Err(error @ metron_connectors::Error::Unavailable { .. }) => {
                Error::Unavailable(error.to_string())
            }
            Err(error) => error.into(),
        };
        // An overload is the mildest cause: any other one is what the client hears.
        failure = match failure {
            Some(Error::Overloaded { .. }) | None => Some(error),
            kept => kept,
        };
    }
    match failure {
        None => Ok(()),
        Some(cause) if stored > 0 => Err(Error::PartlyStored {
            stored,
            of,
            cause: Box::new(cause),
        }),
        Some(cause) => Err(cause),
    }
}

/// The partition of a (namespace, subject): a stable hash, so a subject's events stay in order.
pub fn partition_of(namespace: &str, subject: &str, partitions: u32) -> u32 {
    let mut key = Vec::with_capacity(namespace.len() + subject.len() + 1);
    key.extend_from_slice(namespace.as_bytes());
    key.push(0);
    key.extend_from_slice(subject.as_bytes());
    (xxh3_64(&key) % u64::from(partitions.max(1))) as u32
}

/// Folds stream records into minute rollups for one meter, reading each record's
/// data in place.
pub fn fold_records<'a>(
    meter: &CompiledMeter,
    namespace: &str,
    records: impl Iterator<Item = RecordView<'a>>,
) -> Vec<RollupRow> {
    let mut map = Rollups::default();
    for e in records {
        let time_ms = e.time_ms();
        if e.namespace != namespace || !meter.matches_at(e.event_type, time_ms) {
            continue;
        }
        if let Extract::Sample(sample) = meter.extract_text(e.data) {
            map.fold_at(
                floor_minute_ms(time_ms),
                e.subject,
                sample.group,
                meter.aggregation,
                &sample.value,
                time_ms,
            );
        }
    }
    map.drain_rows()
}

/// Folds events into minute rollups for one meter.
pub fn fold_events<'a>(
    meter: &CompiledMeter,
    namespace: &str,
    events: impl Iterator<Item = &'a IngestedEvent>,
) -> Vec<RollupRow> {
    let mut map = Rollups::default();
    for e in events {
        if e.namespace != namespace || !meter.matches(&e.event) {
            continue;
        }
        if let Extract::Sample(sample) = meter.extract_data(e.event.data.as_ref()) {
            let time_ms = e.event.time.timestamp_millis();
            let key = (
                floor_minute_ms(time_ms),
                e.event.subject.clone(),
                sample.group,
            );
            map.fold(key, meter.aggregation, &sample.value, time_ms);
        }
    }
    map.drain_rows()
}

/// Rollups of a meter from raw-event Parquet files.
async fn scan_backfill(
    query: &QueryService,
    meter: &Meter,
    files: &[EventFile],
) -> Result<Vec<RollupRow>> {
    let urls: Vec<String> = files
        .iter()
        .filter(|f| f.namespace == meter.namespace)
        .map(|f| {
            query
                .root()
                .url_of(&metron_storage::objects::object_path(&f.path))
        })
        .collect();
    let range = TimeRange {
        column: "time",
        lo: meter.event_from.map(|t| t.timestamp_micros()),
        hi: None,
        micros: true,
    };
    // One batch of raw events at a time, folded into minute states: memory holds the
    // meter's rollups, not its history's events.
    let compiled = meter.compile();
    let namespace = meter.namespace.clone();
    let rollups = query
        .scan_fold(
            metron_storage::query::Scan {
                schema: events::schema(),
                urls,
                range,
                in_list: None,
                equals: vec![("type", meter.event_type.clone())],
            },
            crate::meter::Rollups::default(),
            move |rollups, batch| {
                let list = events::from_batch(&batch)?;
                for row in fold_events(&compiled, &namespace, list.iter()) {
                    rollups.merge(row);
                }
                Ok(())
            },
        )
        .await?;
    let mut rollups = rollups;
    Ok(rollups.drain_rows())
}

/// The dedup index all partitions share, as the manifest records it. A manifest of
/// the time when each partition had an index of its own names their runs instead: their
/// keys are folded into a new shared index, which the next checkpoint records (until
/// then a restart folds them again, from the same runs).
fn open_dedup(
    root: &std::path::Path,
    config: &DedupConfig,
    manifest: &Manifest,
) -> Result<DedupIndex> {
    let storage = |e: metron_storage::dedup::Error| Error::Storage(e.to_string());
    let shared = root.join(SHARED_DEDUP_DIR);
    if let Some(state) = manifest.dedup_state() {
        let index = DedupIndex::open(&shared, config.clone(), Some(&state)).map_err(storage)?;
        // Per-partition indexes, folded in by an earlier start, are garbage now.
        if let Ok(entries) = std::fs::read_dir(root) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("p-")
                    && let Err(error) = std::fs::remove_dir_all(entry.path())
                {
                    tracing::warn!(path = %entry.path().display(), %error, "Could not delete an old per-partition dedup index.");
                }
            }
        }
        return Ok(index);
    }
    let mut index = DedupIndex::open(&shared, config.clone(), None).map_err(storage)?;
    for state in manifest
        .partitions
        .iter()
        .filter(|s| !s.dedup_runs.is_empty())
    {
        let dir = root.join(format!("p-{:05}", state.partition));
        let old =
            DedupIndex::open(&dir, config.clone(), Some(&state.dedup_state())).map_err(storage)?;
        index.absorb(old).map_err(storage)?;
        tracing::info!(
            partition = state.partition,
            "Folded a partition's dedup index into the shared one."
        );
    }
    Ok(index)
}

/// The directory, under `<data_dir>/dedup`, of the one dedup index every partition shares.
const SHARED_DEDUP_DIR: &str = "all";

/// How many times a new holder tries to take the checkpoint lineage over while the previous
/// holder's manifests keep landing first (see `manifest::claim`).
const CLAIM_ATTEMPTS: u32 = 10;

/// How long a clean stop waits for the notifications fired before it to be stored.
const NOTIFICATIONS_FLUSH_MAX: Duration = Duration::from_secs(10);

/// How often an idle merger looks for runs to merge.
const DEDUP_MERGE_POLL: Duration = Duration::from_millis(200);
/// How long the merger waits after a failed merge.
const DEDUP_MERGE_RETRY: Duration = Duration::from_secs(5);

/// Merges the shared dedup index's runs on a thread of its own, so that no partition waits
/// for a merge: the thread holds the index only to plan a merge and to install it. It ends
/// when the index is dropped.
fn spawn_dedup_merger(dedup: &SharedDedup) -> Result<()> {
    let weak = Arc::downgrade(dedup);
    std::thread::Builder::new()
        .name("dedup-merge".into())
        .spawn(move || {
            loop {
                let Some(index) = weak.upgrade() else {
                    return;
                };
                let planned = index.lock().plan_merge(Utc::now().timestamp_millis());
                drop(index);
                let job = match planned {
                    Ok(Some(job)) => job,
                    // Nothing to merge, or a poisoned index (it fails the partitions'
                    // inserts too; the pipeline's recovery reopens it): look again later.
                    // After a merge the next is planned at once, so that merges keep up
                    // with spills.
                    Ok(None) | Err(metron_storage::dedup::Error::Poisoned) => {
                        std::thread::sleep(DEDUP_MERGE_POLL);
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Could not plan a dedup merge.");
                        std::thread::sleep(DEDUP_MERGE_POLL);
                        continue;
                    }
                };
                let seq = job.seq();
                let result = job.run();
                let Some(index) = weak.upgrade() else {
                    return;
                };
                let mut index = index.lock();
                match result {
                    Ok(merged) => {
                        if let Err(error) = index.install_merge(merged) {
                            tracing::warn!(%error, "Could not install a dedup merge.");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "A dedup merge failed; it is tried again in 5 s.");
                        index.merge_failed(seq);
                        drop(index);
                        std::thread::sleep(DEDUP_MERGE_RETRY);
                    }
                }
            }
        })
        .map(drop)
        .map_err(|e| Error::Storage(format!("could not start the dedup merger: {e}")))
}

fn pick(arbiters: &[ArbiterHandle], next: &AtomicU64) -> ArbiterHandle {
    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
    match arbiters.get(i % arbiters.len().max(1)) {
        Some(a) => a.clone(),
        None => Arbiter::current(),
    }
}

/// Startup, kept apart from the handle's methods.
/// The event stream the config names: the embedded log in `<data_dir>/stream`, or a
/// connection to a Kafka or Fluvio topic.
pub(crate) async fn open_stream(config: &PipelineConfig) -> Result<Arc<dyn EventStream>> {
    Ok(match &config.stream {
        StreamBackend::Kafka(kafka) => Arc::new(
            KafkaStream::connect(KafkaConfig {
                partitions: config.partitions,
                ..kafka.clone()
            })
            .await?,
        ),
        StreamBackend::Fluvio(fluvio) => Arc::new(
            FluvioStream::connect(FluvioConfig {
                partitions: config.partitions,
                ..fluvio.clone()
            })
            .await?,
        ),
        StreamBackend::Embedded => EmbeddedLog::open(
            &config.data_dir.join("stream"),
            EmbeddedLogConfig {
                partitions: config.partitions,
                ..EmbeddedLogConfig::default()
            },
        )?,
    })
}

/// The catalog the config names: its URL, or `<data_dir>/catalog.db`.
pub(crate) async fn open_catalog(config: &PipelineConfig) -> Result<Catalog> {
    Ok(match &config.catalog_url {
        Some(url) => Catalog::connect(url).await?,
        None => Catalog::open_sqlite(&config.data_dir.join("catalog.db")).await?,
    })
}

impl PipelineConfig {
    /// This node's id: [`Self::node_id`], else the one kept in `<data_dir>/node-id`.
    pub fn node_id(&self) -> Result<String> {
        match &self.node_id {
            Some(id) => Ok(id.clone()),
            None => crate::leases::node_id_of(&self.data_dir)
                .map_err(|e| Error::Storage(format!("the node id: {e}"))),
        }
    }
}

mod anyhow_free {
    use super::*;

    pub type Result<T> = std::result::Result<T, Error>;

    pub async fn start(
        config: PipelineConfig,
        query_runtime: tokio::runtime::Handle,
    ) -> Result<Pipeline> {
        let data = &config.data_dir;
        std::fs::create_dir_all(data)
            .map_err(|e| Error::Storage(format!("{}: {e}", data.display())))?;
        let stream = open_stream(&config).await?;
        let catalog = open_catalog(&config).await?;
        tracing::info!(backend = catalog.backend().as_str(), "Opened the catalog.");
        // The partitions of a shared stream are leased before the checkpoint is read: the
        // node that held them last has stopped writing checkpoints by the time it can be taken.
        // How far each partition has been read: set from the checkpoint below, before any
        // partition reads; `u64::MAX` until then ("not known yet" in the lease renewals).
        let consumed: Arc<Vec<AtomicU64>> = Arc::new(
            (0..config.partitions)
                .map(|_| AtomicU64::new(u64::MAX))
                .collect(),
        );
        let health = Health::new();
        let leases = match config.stream.lease_name() {
            Some(name) => {
                let node_id = config.node_id()?;
                Some(
                    StreamLeases::acquire(
                        &catalog,
                        &name,
                        config.partitions,
                        &node_id,
                        config.advertise_url.as_deref(),
                        config.lease_ttl,
                    )
                    .await?,
                )
            }
            None => None,
        };
        // Renewed from now on: loading the checkpoint and the dedup runs may take longer
        // than the leases last.
        if let Some(leases) = &leases {
            leases.keep(health.clone(), consumed.clone());
        }
        let attribution = Attribution::load(&catalog).await?;
        let activation = Activation::new(attribution.clone());
        let root = ObjectRoot::open(&config.storage, data.join("objects"))
            .map_err(|e| Error::Storage(e.to_string()))?;
        tracing::info!(url = root.url(), "Opened the object store.");
        let sql_runtime = config
            .sql_runtime
            .clone()
            .unwrap_or_else(|| query_runtime.clone());
        let query = QueryService::new(query_runtime, root).with_sql(sql_runtime, config.sql_limits);
        let mut manifest = if leases.is_some() {
            // A new holder of a shared stream first takes the lineage over (a copy of the
            // newest manifest at the next epoch), so that a late manifest of the previous
            // holder cannot follow it and name files the garbage passes below delete.
            manifest::claim(
                query.root(),
                config.partitions,
                &empty_manifest(config.partitions),
                Utc::now().timestamp_millis(),
                CLAIM_ATTEMPTS,
            )
            .await
            .map_err(|e| Error::Storage(e.to_string()))?
        } else {
            manifest::load_latest(query.root(), config.partitions)
                .await
                .map_err(|e| Error::Storage(e.to_string()))?
                .unwrap_or_else(|| empty_manifest(config.partitions))
        };
        tracing::info!(epoch = manifest.epoch, "Loaded the newest checkpoint.");
        // On a shared stream the dedup history moves with the partitions, through the
        // object store: this node may not be the one that wrote the checkpoint.
        let ship_dedup = leases.is_some();
        let dedup_dir = data.join("dedup");
        if ship_dedup {
            fetch_dedup_runs(query.root(), &dedup_dir, &mut manifest).await?;
        }
        let highest_epoch = manifest::highest_epoch(query.root())
            .await
            .map_err(|e| Error::Storage(e.to_string()))?
            .unwrap_or(0);
        collect_garbage(query.root(), &manifest).await?;

        // Meters declared in the config file join the catalog once.
        for create in &config.meters {
            if catalog
                .get_meter(&config.namespace, &create.slug)
                .await?
                .is_none()
            {
                let meter = create.clone().into_meter(
                    ulid::Ulid::new().to_string(),
                    &config.namespace,
                    Utc::now(),
                )?;
                catalog.insert_meter(&meter).await?;
            }
        }

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arbiters: Vec<ArbiterHandle> = (0..cores).map(|_| Arbiter::new().handle()).collect();
        let next_arbiter = AtomicU64::new(0);
        let metrics = Arc::new(Metrics::default());
        metrics
            .checkpoint_epoch
            .store(manifest.epoch, Ordering::Relaxed);

        let covered: HashSet<&str> = manifest.meters.iter().map(String::as_str).collect();
        let mut meters = BTreeMap::new();
        for meter in catalog.all_meters().await? {
            let meter = Arc::new(meter);
            let (files, backfill) = if covered.contains(meter.id.as_str()) {
                (manifest.meter_files(&meter.id), None)
            } else {
                // Not covered by the checkpoint: recompute from its raw events; the
                // replay from the checkpoint's offsets adds the rest.
                (
                    manifest::MeterFiles::default(),
                    Some(scan_backfill(&query, &meter, &manifest.event_files).await?),
                )
            };
            let m = meter.clone();
            let arbiter = pick(&arbiters, &next_arbiter);
            let mm = metrics.clone();
            let partitions_count = config.partitions;
            let addr = MeterActor::start_in_arbiter(&arbiter, move |_| {
                MeterActor::new(m, files, true, partitions_count, mm)
            });
            if let Some(rows) = backfill {
                addr.do_send(Backfill { rows });
            }
            meters.insert(meter.id.clone(), MeterEntry { meter, addr });
        }
        let routes = SnapshotActor::routes(&meters);
        let notifier = Notifier::start(
            catalog.clone(),
            config.notifications.clone(),
            &pick(&arbiters, &next_arbiter),
        )
        .await
        .map_err(|e| Error::Storage(e.to_string()))?;

        // Ready once every partition has read the log up to its end as of now.
        let mut replay_to = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            replay_to.push(stream.end_offset(p)?);
        }
        for state in &manifest.partitions {
            let end = replay_to
                .get(state.partition as usize)
                .copied()
                .unwrap_or(0);
            if state.offset > end {
                // The checkpoint covers records the stream does not have: it is not the stream
                // the checkpoints were taken from (a recreated topic, a deleted log directory).
                // Reading on would wait for offsets that are someone else's records.
                return Err(Error::Storage(format!(
                    "the checkpoint (epoch {}) covers partition {} up to offset {}, but the \
                     event stream ends at {end}: the stream is not the one the checkpoints were \
                     taken from (a recreated topic or a deleted log directory?)",
                    manifest.epoch, state.partition, state.offset
                )));
            }
        }
        let replay_records: u64 = manifest
            .partitions
            .iter()
            .filter_map(|s| {
                Some(
                    replay_to
                        .get(s.partition as usize)?
                        .saturating_sub(s.offset),
                )
            })
            .sum();
        let dyn_stream = stream.clone();
        let mut partitions = Vec::new();
        let wanted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let dedup_config = DedupConfig {
            background_merges: true,
            ..config.dedup.clone()
        };
        let dedup: SharedDedup = Arc::new(parking_lot::Mutex::new(open_dedup(
            &dedup_dir,
            &dedup_config,
            &manifest,
        )?));
        spawn_dedup_merger(&dedup)?;
        let dedup_for_metrics = dedup.clone();
        for state in &manifest.partitions {
            let dedup = dedup.clone();
            if let Some(c) = consumed.get(state.partition as usize) {
                c.store(state.offset, Ordering::Release);
            }
            let files = manifest
                .event_files
                .iter()
                .filter(|f| f.partition == state.partition)
                .cloned()
                .collect();
            let limits = ReadLimits {
                batch_records_max: config.batch_records_max,
                // A message for the partition (seals, subscriptions, reads of held events)
                // ends the wait at once (`PartitionHandle`): this only bounds how often an
                // idle partition wakes.
                wait: config.read_wait_max,
                pending_events_max: config.pending_events_max,
                held_bytes_max: config.held_events_bytes / (config.partitions.max(1) as usize),
                live_window_bytes_max: config.live_windows_bytes,
            };
            let arbiter = pick(&arbiters, &next_arbiter);
            let w = wanted.clone();
            let act = activation.clone();
            let (partition, offset, s, r, c, mm) = (
                state.partition,
                state.offset,
                dyn_stream.clone(),
                routes.clone(),
                consumed.clone(),
                metrics.clone(),
            );
            let h = health.clone();
            let handle = PartitionHandle::start(&arbiter, move || {
                PartitionActor::new(
                    partition, s, dedup, r, offset, files, c, mm, limits, w, act, h,
                )
            });
            partitions.push(handle);
        }
        let mut snapshot = SnapshotActor::new(
            manifest,
            partitions.clone(),
            dedup,
            meters.clone(),
            dyn_stream,
            query.clone(),
            metrics.clone(),
            config.checkpoint_interval,
            wanted,
            health.clone(),
            config.checkpoint_failure_deadline,
        )
        .with_epoch_floor(highest_epoch);
        if ship_dedup {
            snapshot = snapshot.shipping_dedup(dedup_dir.join(SHARED_DEDUP_DIR));
        }
        let snapshot = snapshot.start();
        watch_replay(health.clone(), consumed.clone(), replay_to);
        Ok(Pipeline {
            inner: Arc::new(Inner {
                config,
                stream,
                catalog,
                query,
                metrics,
                consumed,
                partitions,
                snapshot,
                meters: parking_lot::RwLock::new(meters),
                attribution,
                activation,
                arbiters,
                next_arbiter,
                notifier,
                health,
                replay_records,
                dedup: dedup_for_metrics,
                leases,
            }),
        })
    }

    /// Marks the pipeline ready once every partition has consumed up to `replay_to`.
    fn watch_replay(health: Arc<Health>, consumed: Arc<Vec<AtomicU64>>, replay_to: Vec<u64>) {
        let started = std::time::Instant::now();
        let behind = move || {
            consumed
                .iter()
                .zip(&replay_to)
                .map(|(c, end)| end.saturating_sub(c.load(Ordering::Acquire)))
                .sum::<u64>()
        };
        actix::spawn(async move {
            let mut logged = std::time::Instant::now();
            loop {
                let left = behind();
                if left == 0 {
                    break;
                }
                if logged.elapsed() >= Duration::from_secs(1) {
                    tracing::info!(records_left = left, "Replaying the log; not ready yet.");
                    logged = std::time::Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let ms = started.elapsed().as_millis() as u64;
            health.set_ready();
            tracing::info!(replay_ms = ms, "Caught up with the log: ready.");
        });
    }

    /// Deletes Parquet files the loaded checkpoint does not name: written by a
    /// checkpoint that never committed, or superseded by compaction. Nothing reads
    /// them yet, so this is safe at startup.
    async fn collect_garbage(root: &ObjectRoot, manifest: &Manifest) -> Result<()> {
        let named: HashSet<&str> = manifest
            .rollup_files
            .iter()
            .map(|f| f.path.as_str())
            .chain(manifest.event_files.iter().map(|f| f.path.as_str()))
            .collect();
        let mut deleted = 0usize;
        for prefix in [
            metron_storage::paths::ROLLUPS,
            metron_storage::paths::EVENTS,
        ] {
            let listed = root
                .list(prefix)
                .await
                .map_err(|e| Error::Storage(e.to_string()))?;
            for path in listed {
                if !named.contains(path.as_ref()) {
                    root.delete(&path)
                        .await
                        .map_err(|e| Error::Storage(e.to_string()))?;
                    deleted += 1;
                }
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "Deleted Parquet files no checkpoint names.");
        }
        Ok(())
    }

    /// Brings the dedup runs the checkpoint names into `<dedup_dir>/all` from the object
    /// store, where this node lacks them (see `metron_storage::dedup_objects`), and deletes
    /// the run objects no checkpoint names. Runs found nowhere leave the manifest's state.
    async fn fetch_dedup_runs(
        root: &ObjectRoot,
        dedup_dir: &std::path::Path,
        manifest: &mut Manifest,
    ) -> Result<()> {
        let storage = |e: metron_storage::dedup_objects::Error| Error::Storage(e.to_string());
        if let Some(runs) = manifest.dedup_runs.take() {
            let started = std::time::Instant::now();
            let (present, moved) = metron_storage::dedup_objects::fetch(
                root,
                &dedup_dir.join(SHARED_DEDUP_DIR),
                &runs,
            )
            .await
            .map_err(storage)?;
            if moved.runs > 0 {
                tracing::info!(
                    runs = moved.runs,
                    bytes = moved.bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "Fetched the dedup runs of the checkpoint from the object store."
                );
            }
            manifest.dedup_runs = Some(present);
        }
        let named = manifest.dedup_runs.as_deref().unwrap_or_default();
        let deleted = metron_storage::dedup_objects::collect_garbage(root, named)
            .await
            .map_err(storage)?;
        if deleted > 0 {
            tracing::info!(deleted, "Deleted dedup run copies no checkpoint names.");
        }
        Ok(())
    }

    fn empty_manifest(partitions: u32) -> Manifest {
        Manifest {
            version: manifest::MANIFEST_VERSION,
            partitions: (0..partitions)
                .map(|partition| manifest::PartitionState {
                    partition,
                    ..Default::default()
                })
                .collect(),
            ..Manifest::default()
        }
    }
}

#[cfg(test)]
mod append_tests {
    use super::*;
    use futures::future::BoxFuture;
    use metron_connectors::stream::{AppendAck, Offset, PartitionId, Record, Stats};

    /// A stream whose appends to `refused` fail with `error`, and succeed elsewhere.
    struct Refusing {
        refused: u32,
        error: fn() -> metron_connectors::Error,
        appended: parking_lot::Mutex<Vec<u32>>,
    }

    impl EventStream for Refusing {
        fn partitions(&self) -> u32 {
            3
        }
        fn append(
            &self,
            partition: PartitionId,
            payloads: Vec<bytes::Bytes>,
        ) -> BoxFuture<'_, metron_connectors::Result<AppendAck>> {
            Box::pin(async move {
                if partition == self.refused {
                    return Err((self.error)());
                }
                self.appended.lock().push(partition);
                Ok(AppendAck {
                    partition,
                    first_offset: 0,
                    next_offset: payloads.len() as u64,
                })
            })
        }
        fn read(
            &self,
            _: PartitionId,
            _: Offset,
            _: usize,
            _: Duration,
        ) -> BoxFuture<'_, metron_connectors::Result<Vec<Record>>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn end_offset(&self, _: PartitionId) -> metron_connectors::Result<Offset> {
            Ok(0)
        }
        fn commit(
            &self,
            _: PartitionId,
            _: Offset,
        ) -> BoxFuture<'_, metron_connectors::Result<()>> {
            Box::pin(async { Ok(()) })
        }
        fn record_bytes_max(&self) -> usize {
            1 << 20
        }
        fn stats(&self) -> Stats {
            Stats::default()
        }
        fn close(&self) {}
    }

    fn groups(partitions: &[usize]) -> Vec<Vec<bytes::Bytes>> {
        (0..3)
            .map(|p| {
                if partitions.contains(&p) {
                    vec![bytes::Bytes::from_static(b"e")]
                } else {
                    Vec::new()
                }
            })
            .collect()
    }

    // A request whose appends partly fail says so (the client must resend it whole); one
    // that fails whole keeps its plain cause; a fatal failure is never hidden behind another
    // partition's overload.
    #[tokio::test]
    async fn a_partly_stored_request_says_so() {
        let overloaded = || metron_connectors::Error::Overloaded { queued: 9 };
        let stream = Refusing {
            refused: 1,
            error: overloaded,
            appended: parking_lot::Mutex::new(Vec::new()),
        };
        match append_groups(&stream, groups(&[0, 1, 2]), None).await {
            Err(Error::PartlyStored {
                stored: 2,
                of: 3,
                cause,
            }) => {
                assert!(
                    matches!(*cause, Error::Overloaded { backlog: 9 }),
                    "{cause}"
                );
            }
            other => panic!("expected PartlyStored, got {other:?}"),
        }
        assert_eq!(*stream.appended.lock(), [0, 2]);
        assert!(matches!(
            append_groups(&stream, groups(&[1]), None).await,
            Err(Error::Overloaded { backlog: 9 })
        ));
        append_groups(&stream, groups(&[0, 2]), None)
            .await
            .expect("no refused partition");

        let health = Health::new();
        let broken = Refusing {
            refused: 2,
            error: || metron_connectors::Error::Io {
                path: "log".into(),
                source: std::io::Error::other("disk full"),
            },
            appended: parking_lot::Mutex::new(Vec::new()),
        };
        let result = append_groups(&broken, groups(&[0, 2]), Some(&health)).await;
        assert!(
            matches!(&result, Err(Error::PartlyStored { cause, .. }) if matches!(**cause, Error::Stream(_))),
            "{result:?}"
        );
        assert!(
            health.fatal_reason().is_some(),
            "a failed log write is fatal"
        );
    }
}
