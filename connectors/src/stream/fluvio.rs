//! [`FluvioStream`]: the [`EventStream`] on a Fluvio topic, through the `fluvio` client crate
//! (cargo feature `fluvio`).
//!
//! - **Topic.** One topic holds the stream; Metron's partitions are the topic's partitions.
//!   [`FluvioStream::connect`] creates the topic when it is missing (`partitions`,
//!   `replication_factor`), waits until the streaming controller has placed every partition,
//!   and refuses a topic with another partition count.
//! - **Partitioner.** The caller picks the partition (ingest hashes namespace and subject):
//!   each partition has a producer of its own, pinned to it, and records carry no key.
//! - **Appends** go with `Isolation::ReadCommitted`: the SPU answers once the records are on
//!   every in-sync replica. One append's records are handed to the partition's producer
//!   together, under a lock, so that they get consecutive offsets. As with Kafka, a produce
//!   retried after a lost answer can write records twice: every event carries its (namespace,
//!   source, id) key and the dedup index drops the second copy. The SPU writes a batch to its
//!   log file and hands it to the operating system, never with `fsync` (Fluvio 0.18 has no
//!   setting for it): an acknowledged record survives the SPU's process, and the machine's
//!   crash only on another replica. With one replica, a crash of the machine loses the records
//!   the OS had not written yet, and the SPU gives their offsets to new records: a reader
//!   past them would skip those new records. Use replicas on several machines.
//! - **Positions.** The consumer position lives in Metron's checkpoint manifest, written with
//!   the state that covers it, as for Kafka; Fluvio's own consumer offsets are not used.
//!   [`EventStream::commit`] only records the position: the topic's retention decides when
//!   records go.
//! - **Reads.** Each partition keeps one consumer stream (`ReadCommitted`) open at the
//!   position where the last read ended; a read from anywhere else opens a new one. A read
//!   waits for the first record up to `max_wait`, then takes what has already arrived, at most
//!   `max_records`, each record's offset the one after the last: a record past it (a gap,
//!   which Fluvio's dense offsets never leave) ends the read and its stream with
//!   [`Error::Unavailable`], so nothing is skipped. Dropping a read consumes nothing: the
//!   stream keeps what it had not handed out.
//! - **Fetch size.** `fetch_bytes_max` must hold a batch of the largest record
//!   (`record_bytes_max` + 64 KiB): the SPU sends no part of a batch larger than a fetch.
//! - **End offsets** are answered from memory ([`EventStream::end_offset`] is synchronous):
//!   read at connect (the last committed record, through a consumer that stops at the end),
//!   then raised by every append's answer and every record read.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ::fluvio::consumer::{
    ConsumerConfigExt, ConsumerConfigExtBuilder, ConsumerStream, Record as FluvioRecord, RetryMode,
};
use ::fluvio::dataplane::link::ErrorCode;
use ::fluvio::metadata::topic::TopicSpec;
use ::fluvio::{
    Fluvio, FluvioClusterConfig, Isolation, RecordKey, TopicProducerConfigBuilder,
    TopicProducerPool,
};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::{Mutex, watch};

use super::{
    AppendAck, Error, EventStream, InFlight, Offset, PartitionId, Positions, Record, Result, Stats,
    check_record_sizes, unavailable, validate_limits,
};

/// How to reach the topic and how to use it.
#[derive(Debug, Clone)]
pub struct FluvioConfig {
    /// The streaming controller's public address, `host:port` (Fluvio's default port is 9003).
    pub endpoint: String,
    /// The topic that holds the stream (lowercase letters, digits and '-', at most 63).
    pub topic: String,
    /// Partitions of the topic (created with this many; an existing topic must have as many).
    pub partitions: u32,
    /// Replication factor of a topic created here.
    pub replication_factor: u32,
    /// The largest payload accepted, in bytes.
    pub record_bytes_max: usize,
    /// The most bytes the SPU sends for one fetch of a consumer stream.
    pub fetch_bytes_max: usize,
    /// Appends waiting for the SPUs at once; past it appends fail with
    /// [`Error::Overloaded`] (HTTP 429).
    pub appends_in_flight_max: usize,
    /// A request (an append, opening a consumer, topic creation) that has not succeeded after
    /// this long fails with [`Error::Unavailable`].
    pub request_timeout: Duration,
}

impl Default for FluvioConfig {
    fn default() -> Self {
        Self {
            endpoint: "127.0.0.1:9003".to_owned(),
            topic: "metron-events".to_owned(),
            partitions: 1,
            replication_factor: 1,
            record_bytes_max: 1_000_000,
            fetch_bytes_max: 4 * 1024 * 1024,
            appends_in_flight_max: 4096,
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl FluvioConfig {
    fn validate(&self) -> Result<()> {
        let invalid = |field, reason| Err(Error::InvalidConfig { field, reason });
        if self.endpoint.is_empty() {
            return invalid("endpoint", "must name the streaming controller");
        }
        // Fluvio's topic names are DNS-1123 labels.
        let t = self.topic.as_bytes();
        if t.is_empty()
            || t.len() > 63
            || !t
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            || t.first() == Some(&b'-')
            || t.last() == Some(&b'-')
        {
            return invalid(
                "topic",
                "must be 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
            );
        }
        if self.partitions == 0 || self.partitions > i32::MAX as u32 {
            return invalid("partitions", "must be at least 1");
        }
        if self.replication_factor == 0 || self.replication_factor > i32::MAX as u32 {
            return invalid("replication_factor", "must be at least 1");
        }
        validate_limits(
            self.record_bytes_max,
            self.fetch_bytes_max,
            self.appends_in_flight_max,
            self.request_timeout,
        )?;
        // The SPU sends no part of a batch larger than a fetch, and a batch of one largest
        // record is larger than the record: a read would wait on it forever.
        if self.fetch_bytes_max < self.record_bytes_max + BATCH_OVERHEAD_MAX {
            return invalid(
                "fetch_bytes_max",
                "must be at least record_bytes_max + 64 KiB (a batch holding the largest record)",
            );
        }
        Ok(())
    }
}

/// Room for a batch's headers around its records (what the producer's requests are allowed
/// past `record_bytes_max`, and what a fetch must hold past it).
const BATCH_OVERHEAD_MAX: usize = 64 * 1024;

/// Where a record a consumer stream yields stands against the offset a read expects next.
#[derive(Debug, PartialEq, Eq)]
enum Follows {
    /// Below it (the rest of a batch a fetch started inside): skipped.
    Behind,
    /// The one expected.
    Next,
    /// Past it: offsets were skipped. Fluvio's offsets are dense (no control records, no
    /// compaction), so this never happens; if it did, reading on would lose the records in
    /// between for good.
    Gap,
}

fn follows(next: Offset, offset: i64) -> Follows {
    match u64::try_from(offset) {
        Ok(offset) if offset == next => Follows::Next,
        Ok(offset) if offset > next => Follows::Gap,
        _ => Follows::Behind,
    }
}

type Consumer =
    Pin<Box<dyn ConsumerStream<Item = std::result::Result<FluvioRecord, ErrorCode>> + Send>>;

/// A partition's open consumer stream and the offset of the next record it yields.
struct Cursor {
    next: Offset,
    stream: Consumer,
}

/// The stream on a Fluvio topic. See the module documentation.
pub struct FluvioStream {
    config: FluvioConfig,
    fluvio: Fluvio,
    partitions: Vec<FluvioPartition>,
    in_flight: AtomicUsize,
    closed: AtomicBool,
    /// Turns `true` on close; waiting reads watch it.
    closing: watch::Sender<bool>,
    stats: Counters,
}

struct FluvioPartition {
    /// Pinned to this partition.
    producer: TopicProducerPool,
    /// Held while one append hands its records to the producer, so that they stay together.
    append_order: Mutex<()>,
    /// The consumer stream of the last read (one reader per partition at a time).
    cursor: Mutex<Option<Cursor>>,
    /// The highest end offset seen (connect, appends, reads).
    positions: Positions,
}

#[derive(Default)]
struct Counters {
    appends: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
}

impl std::fmt::Debug for FluvioStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FluvioStream")
            .field("endpoint", &self.config.endpoint)
            .field("topic", &self.config.topic)
            .field("partitions", &self.partitions.len())
            .finish_non_exhaustive()
    }
}

impl FluvioStream {
    /// Connects to the streaming controller, creates the topic when it is missing, checks its
    /// partition count, and reads every partition's end offset.
    pub async fn connect(config: FluvioConfig) -> Result<Self> {
        config.validate()?;
        let deadline = tokio::time::Instant::now() + config.request_timeout;
        let topic = config.topic.clone();
        let fluvio = within(deadline, "connecting to the cluster", async {
            Fluvio::connect_with_config(&FluvioClusterConfig::new(config.endpoint.clone()))
                .await
                .map_err(|e| unavailable("connecting to the cluster", e))
        })
        .await?;
        let admin = fluvio.admin().await;
        let persisted = match find_topic(&admin, &topic, deadline).await? {
            Some((count, _)) => count,
            None => {
                tracing::info!(
                    topic,
                    partitions = config.partitions,
                    "Creating the Fluvio topic."
                );
                let spec =
                    TopicSpec::new_computed(config.partitions, config.replication_factor, None);
                let created = within(deadline, "creating the topic", async {
                    admin
                        .create(topic.clone(), false, spec)
                        .await
                        .map_err(|e| unavailable("creating the topic", e))
                })
                .await;
                match (created, find_topic(&admin, &topic, deadline).await?) {
                    (_, Some((count, _))) => count,
                    (Err(error), None) => return Err(error),
                    (Ok(()), None) => {
                        return Err(Error::Unavailable {
                            context: "creating the topic",
                            reason: "the topic was created but is not listed".to_owned(),
                        });
                    }
                }
            }
        };
        if persisted != config.partitions {
            return Err(Error::TopicPartitionMismatch {
                topic,
                persisted,
                requested: config.partitions,
            });
        }
        // Every partition must have a leader before producers and consumers can find it.
        loop {
            match find_topic(&admin, &topic, deadline).await? {
                Some((_, true)) => break,
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::Unavailable {
                        context: "waiting for the topic's partitions",
                        reason: format!(
                            "the topic was not provisioned within {:?}",
                            config.request_timeout
                        ),
                    });
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            let producer = producer(&fluvio, &config, p, deadline).await?;
            let end = last_offset(&fluvio, &config, p, deadline).await?;
            partitions.push(FluvioPartition {
                producer,
                append_order: Mutex::new(()),
                cursor: Mutex::new(None),
                positions: Positions::new(end),
            });
        }
        tracing::info!(
            topic,
            endpoint = config.endpoint,
            partitions = config.partitions,
            "Connected to the Fluvio topic."
        );
        Ok(Self {
            config,
            fluvio,
            partitions,
            in_flight: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            closing: watch::Sender::new(false),
            stats: Counters::default(),
        })
    }

    /// The configuration the stream was opened with.
    pub fn config(&self) -> &FluvioConfig {
        &self.config
    }

    /// The highest position committed for a partition since connect.
    pub fn committed(&self, partition: PartitionId) -> Result<Offset> {
        Ok(self.partition(partition)?.positions.committed())
    }

    fn partition(&self, partition: PartitionId) -> Result<&FluvioPartition> {
        self.partitions
            .get(partition as usize)
            .ok_or(Error::UnknownPartition {
                partition,
                partitions: self.partitions.len() as u32,
            })
    }

    async fn append_records(
        &self,
        partition: PartitionId,
        payloads: Vec<Bytes>,
    ) -> Result<AppendAck> {
        let p = self.partition(partition)?;
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        check_record_sizes(&payloads, self.config.record_bytes_max)?;
        let _slot = InFlight::take(&self.in_flight, self.config.appends_in_flight_max)?;
        if payloads.is_empty() {
            let end = p.positions.end();
            return Ok(AppendAck {
                partition,
                first_offset: end,
                next_offset: end,
            });
        }
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let count = payloads.len() as u64;
        let bytes: usize = payloads.iter().map(Bytes::len).sum();
        let result = within(deadline, "producing", async {
            let outputs = {
                let _order = p.append_order.lock().await;
                let mut outputs = Vec::with_capacity(payloads.len());
                // By value: a payload that owns its buffer alone becomes the record's bytes
                // without a copy (`Bytes` into `Vec<u8>` into `RecordData`).
                for payload in payloads {
                    let output = p
                        .producer
                        .send(RecordKey::NULL, payload)
                        .await
                        .map_err(|e| unavailable("producing", e))?;
                    outputs.push(output);
                }
                outputs
            };
            let mut offsets = Vec::with_capacity(outputs.len());
            for output in outputs {
                let metadata = output
                    .wait()
                    .await
                    .map_err(|e| unavailable("producing", e))?;
                offsets.push(metadata.offset());
            }
            Ok(offsets)
        })
        .await;
        let offsets = match result {
            Ok(offsets) => offsets,
            Err(error) => {
                // A failed batch leaves the producer refusing records until told otherwise.
                p.producer.clear_errors().await;
                return Err(error);
            }
        };
        let (Some(first), Some(last)) = (offsets.iter().min(), offsets.iter().max()) else {
            return Err(Error::Unavailable {
                context: "producing",
                reason: "the SPU answered without offsets".to_owned(),
            });
        };
        let (first_offset, next_offset) = ((*first).max(0) as u64, (*last).max(0) as u64 + 1);
        if next_offset - first_offset != count {
            // Records of one append are handed over together; a producer retry could still
            // interleave them with another append's. They are all written, and each event is
            // counted once (the dedup index), so this is said, not failed.
            tracing::warn!(
                partition,
                first_offset,
                next_offset,
                count,
                "The records of one append did not get consecutive offsets."
            );
        }
        p.positions.raise_end(next_offset);
        self.stats.appends.fetch_add(1, Ordering::Relaxed);
        self.stats.records.fetch_add(count, Ordering::Relaxed);
        self.stats.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(AppendAck {
            partition,
            first_offset,
            next_offset,
        })
    }

    async fn read_records(
        &self,
        partition: PartitionId,
        from: Offset,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Vec<Record>> {
        let p = self.partition(partition)?;
        if max_records == 0 {
            return Ok(Vec::new());
        }
        let mut closing = self.closing.subscribe();
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut cursor = p.cursor.lock().await;
        if cursor.as_ref().is_some_and(|c| c.next != from) {
            *cursor = None;
        }
        let current = match cursor.as_mut() {
            Some(current) => current,
            None => {
                let stream = self.open_consumer(partition, from).await?;
                cursor.insert(Cursor { next: from, stream })
            }
        };
        let first = tokio::select! {
            biased;
            _ = closing.wait_for(|closed| *closed) => return Err(Error::Closed),
            item = tokio::time::timeout_at(deadline, current.stream.next()) => match item {
                Err(_elapsed) => return Ok(Vec::new()),
                Ok(item) => item,
            },
        };
        let mut records = Vec::new();
        let mut failed = None;
        let mut item = first;
        loop {
            match item {
                Some(Ok(record)) => match follows(current.next, record.offset()) {
                    Follows::Behind => {}
                    Follows::Next => {
                        records.push(Record {
                            offset: current.next,
                            payload: Bytes::copy_from_slice(record.value()),
                        });
                        current.next += 1;
                    }
                    Follows::Gap => {
                        failed = Some(Error::Unavailable {
                            context: "fetching",
                            reason: format!(
                                "the SPU skipped from offset {} to {}",
                                current.next,
                                record.offset()
                            ),
                        });
                        break;
                    }
                },
                Some(Err(code)) => {
                    failed = Some(self.read_error(partition, from, code));
                    break;
                }
                None => {
                    failed = Some(Error::Unavailable {
                        context: "fetching",
                        reason: "the SPU ended the consumer stream".to_owned(),
                    });
                    break;
                }
            }
            if records.len() >= max_records {
                break;
            }
            // What has already arrived, without waiting.
            match current.stream.next().now_or_never() {
                Some(next) => item = next,
                None => break,
            }
        }
        if let Some(error) = failed {
            // The stream is done for: the next read opens another.
            *cursor = None;
            if records.is_empty() {
                return Err(error);
            }
        }
        if let Some(last) = records.last() {
            p.positions.raise_end(last.offset + 1);
        }
        Ok(records)
    }

    /// A consumer stream of one partition from `from`, reading committed records only.
    async fn open_consumer(&self, partition: PartitionId, from: Offset) -> Result<Consumer> {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let start = i64::try_from(from)
            .ok()
            .and_then(|from| ::fluvio::Offset::absolute(from).ok())
            .ok_or(Error::OffsetOutOfRange {
                partition,
                offset: from,
                end_offset: self.partition(partition).map_or(0, |p| p.positions.end()),
            })?;
        let config = consumer_settings(&self.config, partition, start, false)
            .map_err(|e| unavailable("opening a consumer", e))?;
        let stream = within(deadline, "opening a consumer", async {
            self.fluvio
                .consumer_with_config(config)
                .await
                .map_err(|e| unavailable("opening a consumer", e))
        })
        .await?;
        Ok(Box::pin(stream))
    }

    /// What an error code on a consumer stream means.
    fn read_error(&self, partition: PartitionId, from: Offset, code: ErrorCode) -> Error {
        match code {
            ErrorCode::OffsetOutOfRange => Error::OffsetOutOfRange {
                partition,
                offset: from,
                end_offset: self
                    .partitions
                    .get(partition as usize)
                    .map_or(0, |p| p.positions.end()),
            },
            other => Error::Unavailable {
                context: "fetching",
                reason: format!("{other:?}"),
            },
        }
    }
}

impl EventStream for FluvioStream {
    fn partitions(&self) -> u32 {
        self.partitions.len() as u32
    }

    fn append(
        &self,
        partition: PartitionId,
        payloads: Vec<Bytes>,
    ) -> BoxFuture<'_, Result<AppendAck>> {
        Box::pin(self.append_records(partition, payloads))
    }

    fn read(
        &self,
        partition: PartitionId,
        from: Offset,
        max_records: usize,
        max_wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<Record>>> {
        Box::pin(self.read_records(partition, from, max_records, max_wait))
    }

    fn end_offset(&self, partition: PartitionId) -> Result<Offset> {
        Ok(self.partition(partition)?.positions.end())
    }

    fn commit(&self, partition: PartitionId, offset: Offset) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.partition(partition)?
                .positions
                .commit(partition, offset)
        })
    }

    fn record_bytes_max(&self) -> usize {
        self.config.record_bytes_max
    }

    /// `syncs` counts appends: the producer does not say how many produce requests it sent.
    fn stats(&self) -> Stats {
        let appends = self.stats.appends.load(Ordering::Relaxed);
        Stats {
            appends,
            records: self.stats.records.load(Ordering::Relaxed),
            syncs: appends,
            bytes: self.stats.bytes.load(Ordering::Relaxed),
            holes_skipped: 0,
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.closing.send_replace(true);
    }
}

/// The topic's partition count and whether every partition is placed, or `None` when the
/// topic does not exist.
async fn find_topic(
    admin: &::fluvio::FluvioAdmin,
    topic: &str,
    deadline: tokio::time::Instant,
) -> Result<Option<(u32, bool)>> {
    let found = within(deadline, "listing topics", async {
        admin
            .list::<TopicSpec, String>(vec![topic.to_owned()])
            .await
            .map_err(|e| unavailable("listing topics", e))
    })
    .await?;
    Ok(found.into_iter().find(|t| t.name == topic).map(|t| {
        (
            t.spec.replicas().partitions(),
            t.status.is_resolution_provisioned(),
        )
    }))
}

/// A producer pinned to one partition. Right after the topic is made, the client's metadata
/// may not know the partition yet: try again until the deadline.
async fn producer(
    fluvio: &Fluvio,
    config: &FluvioConfig,
    partition: PartitionId,
    deadline: tokio::time::Instant,
) -> Result<TopicProducerPool> {
    let settings = TopicProducerConfigBuilder::default()
        .set_specific_partitioner(partition)
        .isolation(Isolation::ReadCommitted)
        .timeout(config.request_timeout)
        .max_request_size(config.record_bytes_max + BATCH_OVERHEAD_MAX)
        .linger(Duration::ZERO)
        .build()
        .map_err(|e| unavailable("creating a producer", e))?;
    loop {
        let attempt = within(deadline, "creating a producer", async {
            fluvio
                .topic_producer_with_config(config.topic.clone(), settings.clone())
                .await
                .map_err(|e| unavailable("creating a producer", e))
        })
        .await;
        match attempt {
            Ok(producer) => return Ok(producer),
            Err(error) if tokio::time::Instant::now() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A consumer of one partition from `start` that reads committed records only and does not
/// retry on its own (an error ends it; the next read opens another). `to_end_only`: it ends at
/// the partition's end instead of waiting for more.
fn consumer_settings(
    config: &FluvioConfig,
    partition: PartitionId,
    start: ::fluvio::Offset,
    to_end_only: bool,
) -> std::result::Result<ConsumerConfigExt, impl std::fmt::Display> {
    ConsumerConfigExtBuilder::default()
        .topic(config.topic.clone())
        .partition(partition)
        .offset_start(start)
        .isolation(Isolation::ReadCommitted)
        .max_bytes(config.fetch_bytes_max as i32)
        .disable_continuous(to_end_only)
        .retry_mode(RetryMode::Disabled)
        .build()
}

/// The end offset of a partition: one past its last committed record, 0 when it has none. Fluvio
/// 0.50's client has no call for it, so a consumer opened on the last record, stopping at the
/// end, reads it.
async fn last_offset(
    fluvio: &Fluvio,
    config: &FluvioConfig,
    partition: PartitionId,
    deadline: tokio::time::Instant,
) -> Result<Offset> {
    let settings = consumer_settings(config, partition, ::fluvio::Offset::from_end(1), true)
        .map_err(|e| unavailable("reading the end offset", e))?;
    within(deadline, "reading the end offset", async {
        let mut stream = fluvio
            .consumer_with_config(settings)
            .await
            .map_err(|e| unavailable("reading the end offset", e))?;
        let mut end = 0u64;
        while let Some(item) = stream.next().await {
            let record = item.map_err(|code| Error::Unavailable {
                context: "reading the end offset",
                reason: format!("{code:?}"),
            })?;
            end = end.max(record.offset().max(-1).wrapping_add(1) as u64);
        }
        Ok(end)
    })
    .await
}

/// Runs `work`, failing with [`Error::Unavailable`] when it is not done by `deadline`.
async fn within<T>(
    deadline: tokio::time::Instant,
    context: &'static str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout_at(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::Unavailable {
            context,
            reason: "no answer from the Fluvio cluster in time".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked() {
        let ok = FluvioConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            FluvioConfig {
                endpoint: String::new(),
                ..ok.clone()
            },
            FluvioConfig {
                topic: "Events".into(),
                ..ok.clone()
            },
            FluvioConfig {
                topic: "usage.events".into(),
                ..ok.clone()
            },
            FluvioConfig {
                topic: "-events".into(),
                ..ok.clone()
            },
            FluvioConfig {
                topic: "e".repeat(64),
                ..ok.clone()
            },
            FluvioConfig {
                partitions: 0,
                ..ok.clone()
            },
            FluvioConfig {
                replication_factor: 0,
                ..ok.clone()
            },
            FluvioConfig {
                fetch_bytes_max: 10,
                ..ok.clone()
            },
            FluvioConfig {
                fetch_bytes_max: ok.record_bytes_max,
                ..ok.clone()
            },
            FluvioConfig {
                request_timeout: Duration::ZERO,
                ..ok.clone()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::InvalidConfig { .. })),
                "{bad:?}"
            );
        }
    }

    // A read takes records in offset order from where it is, skips what is behind it, and
    // stops at a gap instead of reading on past it.
    #[test]
    fn records_must_follow_on() {
        assert_eq!(follows(5, 5), Follows::Next);
        assert_eq!(follows(5, 4), Follows::Behind);
        assert_eq!(follows(5, -1), Follows::Behind);
        assert_eq!(follows(5, 7), Follows::Gap);
    }

    #[tokio::test]
    async fn connecting_to_nothing_fails_within_the_timeout() {
        // Nothing listens on port 1 of loopback.
        let config = FluvioConfig {
            endpoint: "127.0.0.1:1".into(),
            request_timeout: Duration::from_millis(300),
            ..FluvioConfig::default()
        };
        match FluvioStream::connect(config).await {
            Err(Error::Unavailable { .. }) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
