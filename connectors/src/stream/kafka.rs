//! [`KafkaStream`]: the [`EventStream`] on a Kafka topic (any broker that speaks Kafka's
//! protocol: Apache Kafka, Redpanda, tansu), through rskafka.
//!
//! - **Topic.** One topic holds the stream; Metron's partitions are the topic's partitions.
//!   [`KafkaStream::connect`] creates the topic when it is missing (`partitions`,
//!   `replication_factor`) and refuses a topic with another partition count, as the embedded
//!   log refuses a directory made with another.
//! - **Partitioner.** The caller picks the partition (ingest hashes namespace and subject), so
//!   records carry no key.
//! - **Appends** are produce requests with `acks = all` (rskafka's only setting): an append
//!   resolves once the in-sync replicas have the records. A batch larger than
//!   `produce_bytes_max` goes as several requests, in order. rskafka has no idempotent
//!   producer: a produce retried after a lost answer can write the records twice. Every event
//!   carries its (namespace, source, id) key and the dedup index drops the second copy, so a
//!   retried append is harmless, as a client's retried HTTP request is.
//! - **Positions.** rskafka has no consumer groups: the consumer position lives in Metron's
//!   checkpoint manifest, written with the state that covers it (as Flink keeps Kafka offsets
//!   in its checkpoints), and a restart reads on from there. [`EventStream::commit`] only
//!   records the position: the topic's retention decides when records go, and it must outlast
//!   the checkpoint interval plus the longest time a node may be down. (Deleting below each
//!   checkpoint with DeleteRecords is left out: the broker the tests run on, tansu 0.6, does
//!   not implement it, so it could not be tested.)
//! - **End offsets** are answered from memory ([`EventStream::end_offset`] is synchronous):
//!   the high watermark read at connect, raised by every append's answer and every fetch's
//!   high watermark.
//! - **Reads** are fetch requests that wait on the broker for at least one byte, at most
//!   `fetch_wait_max` each, again until the caller's `max_wait` is over. A broker answers the
//!   requests of one connection in order, so a waiting fetch would hold up every request behind
//!   it: each partition reads on a connection of its own, apart from the appends. Dropping a
//!   read drops its request (rskafka forgets the answer and never leaves half a request on the
//!   wire), so reads are cancel-safe; a dropped fetch holds its connection for at most
//!   `fetch_wait_max`, or until records come.
//! - **No holes.** A read returns records from `from` on without a gap, and ends before the
//!   first missing offset. Kafka makes records readable in offset order, but tansu 0.6 does
//!   not: its produce raises the high watermark before it stores the batch, so a fetch can see
//!   a later producer's batch while an earlier one, not yet acknowledged to its client, is
//!   still missing. A reader that went on past such a hole would never read the batch it
//!   skipped, and an acknowledged event would be lost. So a read waits for a hole to fill, and
//!   passes over it only after `hole_wait_max` (a produce that died after the broker counted
//!   its offsets leaves a hole forever; its client was told it failed, and resends), counted
//!   in [`Stats::holes_skipped`] and logged.
//! - **Whole batches.** A read returns every record of the batches the broker sent (at most
//!   `fetch_bytes_max` bytes), not `max_records`: so a read always ends, and the next one (or
//!   a restart from a checkpoint) starts, at a record batch's end. Kafka answers a fetch from
//!   inside a batch with that batch; tansu 0.6's memory engine, which the tests run on, skips
//!   to the next one, so a position inside a batch would lose records there.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use rskafka::BackoffConfig;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};

use super::{
    AppendAck, Error, EventStream, InFlight, Offset, PartitionId, Positions, Record, Result, Stats,
    check_record_sizes, unavailable, validate_limits,
};

/// How to reach the topic and how to use it.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` each.
    pub brokers: Vec<String>,
    /// The topic that holds the stream.
    pub topic: String,
    /// Partitions of the topic (created with this many; an existing topic must have as many).
    pub partitions: u32,
    /// Replication factor of a topic created here.
    pub replication_factor: i16,
    /// The client id the brokers see.
    pub client_id: String,
    /// The largest payload accepted, in bytes. The default, 1,000,000, leaves room for a
    /// batch's headers under Kafka's default `message.max.bytes` (1,048,588).
    pub record_bytes_max: usize,
    /// Records of one append go in produce requests of at most this many payload bytes, a
    /// larger record alone (brokers refuse batches over their `message.max.bytes`).
    pub produce_bytes_max: usize,
    /// The most bytes one read fetches (the broker returns whole record batches, at least one).
    pub fetch_bytes_max: usize,
    /// The longest one fetch waits on the broker for records (Kafka's `fetch.max.wait.ms`).
    /// Kafka answers as soon as records come; tansu 0.6 always waits half to all of it, so
    /// it bounds the latency there.
    pub fetch_wait_max: Duration,
    /// Appends waiting for the brokers at once; past it appends fail with
    /// [`Error::Overloaded`] (HTTP 429).
    pub appends_in_flight_max: usize,
    /// A request (append, offset lookup, topic creation) that has not succeeded after this
    /// long, retries included, fails with [`Error::Unavailable`].
    pub request_timeout: Duration,
    /// How long a read waits for a missing offset below the high watermark before it passes
    /// over it (see the module documentation, "No holes").
    pub hole_wait_max: Duration,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: vec!["127.0.0.1:9092".to_owned()],
            topic: "metron-events".to_owned(),
            partitions: 1,
            replication_factor: 1,
            client_id: "metron".to_owned(),
            record_bytes_max: 1_000_000,
            produce_bytes_max: 512 * 1024,
            fetch_bytes_max: 4 * 1024 * 1024,
            fetch_wait_max: Duration::from_millis(500),
            appends_in_flight_max: 4096,
            request_timeout: Duration::from_secs(30),
            hole_wait_max: Duration::from_secs(10),
        }
    }
}

impl KafkaConfig {
    fn validate(&self) -> Result<()> {
        let invalid = |field, reason| Err(Error::InvalidConfig { field, reason });
        if self.brokers.is_empty() {
            return invalid("brokers", "must name at least one broker");
        }
        if self.topic.is_empty() || self.topic.len() > 249 {
            return invalid("topic", "must be 1 to 249 characters");
        }
        if !self
            .topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return invalid(
                "topic",
                "may hold only ASCII letters, digits, '.', '_' and '-'",
            );
        }
        if self.partitions == 0 || self.partitions > i32::MAX as u32 {
            return invalid("partitions", "must be at least 1");
        }
        if self.replication_factor < 1 {
            return invalid("replication_factor", "must be at least 1");
        }
        if self.produce_bytes_max == 0 {
            return invalid("produce_bytes_max", "must be at least 1 byte");
        }
        if self.fetch_wait_max < Duration::from_millis(1) {
            // Shorter, an idle partition would spin on its fetches.
            return invalid("fetch_wait_max", "must be at least 1ms");
        }
        validate_limits(
            self.record_bytes_max,
            self.fetch_bytes_max,
            self.appends_in_flight_max,
            self.request_timeout,
        )
    }
}

/// The stream on a Kafka topic. See the module documentation.
pub struct KafkaStream {
    config: KafkaConfig,
    partitions: Vec<KafkaPartition>,
    in_flight: AtomicUsize,
    closed: AtomicBool,
    stats: Counters,
}

struct KafkaPartition {
    /// Appends and offset lookups (one connection shared by every partition).
    client: PartitionClient,
    /// Reads, on a connection of this partition's own.
    reader: PartitionClient,
    /// The highest end offset seen (connect, appends, fetches).
    positions: Positions,
    /// The missing offset reads are waiting for, and since when.
    hole: parking_lot::Mutex<Option<(Offset, tokio::time::Instant)>>,
}

#[derive(Default)]
struct Counters {
    appends: AtomicU64,
    records: AtomicU64,
    requests: AtomicU64,
    bytes: AtomicU64,
    holes_skipped: AtomicU64,
}

impl std::fmt::Debug for KafkaStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaStream")
            .field("brokers", &self.config.brokers)
            .field("topic", &self.config.topic)
            .field("partitions", &self.partitions.len())
            .finish_non_exhaustive()
    }
}

impl KafkaStream {
    /// Connects to the brokers, creates the topic when it is missing, checks its partition
    /// count and reads every partition's end offset.
    pub async fn connect(config: KafkaConfig) -> Result<Self> {
        config.validate()?;
        let deadline = config.request_timeout;
        let topic = config.topic.clone();
        let client = build_client(&config).await?;
        let existing = find_topic(&client, &topic, deadline).await?;
        let persisted = match existing {
            Some(count) => count,
            None => {
                tracing::info!(
                    topic,
                    partitions = config.partitions,
                    "Creating the Kafka topic."
                );
                let created = within(deadline, "creating the topic", async {
                    let controller = client
                        .controller_client()
                        .map_err(|e| unavailable("creating the topic", &e))?;
                    controller
                        .create_topic(
                            topic.as_str(),
                            config.partitions as i32,
                            config.replication_factor,
                            deadline.as_millis().min(i32::MAX as u128) as i32,
                        )
                        .await
                        .map_err(|e| unavailable("creating the topic", &e))
                })
                .await;
                match created {
                    Ok(()) => config.partitions,
                    // Another node created it first: check what it made.
                    Err(error) => find_topic(&client, &topic, deadline).await?.ok_or(error)?,
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
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            let client = partition_client(&client, &topic, p, deadline).await?;
            let reader = build_client(&config).await?;
            let reader = partition_client(&reader, &topic, p, deadline).await?;
            let latest = within(deadline, "reading the end offset", async {
                client
                    .get_offset(OffsetAt::Latest)
                    .await
                    .map_err(|e| unavailable("reading the end offset", &e))
            })
            .await?
            .max(0);
            // And the high watermark of a fetch that does not wait: tansu 0.6 answers
            // ListOffsets(latest) with the last batch's first offset plus one.
            let high_watermark = within(deadline, "reading the end offset", async {
                reader
                    .fetch_records(latest, 1..1, 0)
                    .await
                    .map_err(|e| unavailable("reading the end offset", &e))
            })
            .await?
            .1;
            partitions.push(KafkaPartition {
                client,
                reader,
                positions: Positions::new(latest.max(high_watermark).max(0) as u64),
                hole: parking_lot::Mutex::new(None),
            });
        }
        tracing::info!(
            topic,
            brokers = ?config.brokers,
            partitions = config.partitions,
            "Connected to the Kafka topic."
        );
        Ok(Self {
            config,
            partitions,
            in_flight: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            stats: Counters::default(),
        })
    }

    /// The configuration the stream was opened with.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// The highest position committed for a partition since connect.
    pub fn committed(&self, partition: PartitionId) -> Result<Offset> {
        Ok(self.partition(partition)?.positions.committed())
    }

    /// The earliest offset the broker still keeps for a partition.
    pub async fn earliest_offset(&self, partition: PartitionId) -> Result<Offset> {
        let p = self.partition(partition)?;
        let offset = within(
            self.config.request_timeout,
            "reading the earliest offset",
            async {
                p.client
                    .get_offset(OffsetAt::Earliest)
                    .await
                    .map_err(|e| unavailable("reading the earliest offset", &e))
            },
        )
        .await?;
        Ok(offset.max(0) as u64)
    }

    fn partition(&self, partition: PartitionId) -> Result<&KafkaPartition> {
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
        let count = payloads.len() as u64;
        let bytes: usize = payloads.iter().map(Bytes::len).sum();
        let now = chrono::Utc::now();
        let mut first = None;
        let mut last = 0u64;
        for chunk in chunks(&payloads, self.config.produce_bytes_max) {
            let records = payloads
                .get(chunk)
                .unwrap_or_default()
                .iter()
                .map(|payload| rskafka::record::Record {
                    key: None,
                    value: Some(payload.to_vec()),
                    headers: Default::default(),
                    timestamp: now,
                })
                .collect();
            let offsets = within(self.config.request_timeout, "producing", async {
                p.client
                    .produce(records, Compression::NoCompression)
                    .await
                    .map_err(|e| unavailable("producing", &e))
            })
            .await?;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let (Some(&chunk_first), Some(&chunk_last)) = (offsets.first(), offsets.last()) else {
                return Err(Error::Unavailable {
                    context: "producing",
                    reason: "the broker answered without offsets".to_owned(),
                });
            };
            first.get_or_insert(chunk_first.max(0) as u64);
            last = chunk_last.max(0) as u64;
        }
        let first_offset = first.unwrap_or(last);
        let next_offset = last + 1;
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
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let wait = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .min(self.config.fetch_wait_max);
            let wait_ms = wait.as_millis().min(i32::MAX as u128) as i32;
            let bytes: Range<i32> = 1..self.config.fetch_bytes_max as i32;
            let (records, high_watermark) =
                match p.reader.fetch_records(from as i64, bytes, wait_ms).await {
                    Ok(answer) => answer,
                    Err(KafkaError::ServerError {
                        protocol_error: ProtocolError::OffsetOutOfRange,
                        ..
                    }) => return Err(self.out_of_range(partition, from).await),
                    Err(error) => return Err(unavailable("fetching", &error)),
                };
            p.positions.raise_end(high_watermark.max(0) as u64);
            // Every record of the batches that came, so that the next read starts at a
            // batch's end (see the module documentation), up to the first hole.
            let mut records: Vec<Record> = records
                .into_iter()
                .filter(|r| r.offset >= 0 && r.offset as u64 >= from)
                .map(|r| Record {
                    offset: r.offset as u64,
                    payload: Bytes::from(r.record.value.unwrap_or_default()),
                })
                .collect();
            let now = tokio::time::Instant::now();
            match up_to_hole(&mut records, from) {
                Hole::None => *p.hole.lock() = None,
                Hole::At(first) => {
                    if pass_over(&mut p.hole.lock(), from, now, self.config.hole_wait_max) {
                        tracing::warn!(
                            partition,
                            from,
                            next = first,
                            "Offsets of the topic stayed unreadable past stream.holeWaitMax: the reader passes over them."
                        );
                        self.stats
                            .holes_skipped
                            .fetch_add(first - from, Ordering::Relaxed);
                    } else {
                        // Wait for the hole to fill; the fetch would answer at once again.
                        records.clear();
                        let nap = HOLE_POLL.min(deadline.saturating_duration_since(now));
                        tokio::time::sleep(nap).await;
                    }
                }
            }
            if !records.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(records);
            }
        }
    }

    /// What a fetch refused as out of range was: past the end, or deleted.
    async fn out_of_range(&self, partition: PartitionId, from: Offset) -> Error {
        let end = self
            .partitions
            .get(partition as usize)
            .map_or(0, |p| p.positions.end());
        if from > end {
            return Error::OffsetOutOfRange {
                partition,
                offset: from,
                end_offset: end,
            };
        }
        match self.earliest_offset(partition).await {
            Ok(earliest) => Error::OffsetDeleted {
                partition,
                offset: from,
                earliest,
            },
            Err(error) => error,
        }
    }
}

impl EventStream for KafkaStream {
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

    fn stats(&self) -> Stats {
        Stats {
            appends: self.stats.appends.load(Ordering::Relaxed),
            records: self.stats.records.load(Ordering::Relaxed),
            syncs: self.stats.requests.load(Ordering::Relaxed),
            bytes: self.stats.bytes.load(Ordering::Relaxed),
            holes_skipped: self.stats.holes_skipped.load(Ordering::Relaxed),
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// A client of the brokers: one connection to each broker it talks to.
async fn build_client(config: &KafkaConfig) -> Result<Client> {
    let deadline = config.request_timeout;
    within(deadline, "connecting to the brokers", async {
        ClientBuilder::new(config.brokers.clone())
            .client_id(config.client_id.as_str())
            .backoff_config(BackoffConfig {
                deadline: Some(deadline),
                ..BackoffConfig::default()
            })
            .build()
            .await
            .map_err(|e| unavailable("connecting to the brokers", &e))
    })
    .await
}

/// A client of one partition's leader.
async fn partition_client(
    client: &Client,
    topic: &str,
    partition: PartitionId,
    deadline: Duration,
) -> Result<PartitionClient> {
    within(deadline, "finding the partition's leader", async {
        client
            .partition_client(topic, partition as i32, UnknownTopicHandling::Retry)
            .await
            .map_err(|e| unavailable("finding the partition's leader", &e))
    })
    .await
}

/// The topic's partition count, or `None` when the topic does not exist.
async fn find_topic(client: &Client, topic: &str, deadline: Duration) -> Result<Option<u32>> {
    let topics = within(deadline, "listing topics", async {
        client
            .list_topics()
            .await
            .map_err(|e| unavailable("listing topics", &e))
    })
    .await?;
    Ok(topics
        .into_iter()
        .find(|t| t.name == topic)
        .map(|t| t.partitions.len() as u32))
}

/// Index ranges of `payloads` of at most `max` bytes each (a larger payload alone).
/// How often a read waiting for a hole to fill fetches again.
const HOLE_POLL: Duration = Duration::from_millis(5);

/// Where the records a fetch brought stop following on from `from` without a gap.
#[derive(Debug, PartialEq, Eq)]
enum Hole {
    /// They do, all of them (or there are none).
    None,
    /// The first of them is past `from`: the offsets up to this one are missing.
    At(Offset),
}

/// Sorts `records` (offsets at or past `from`) and keeps those that follow on from `from`
/// without a gap: all of them, or those before the first missing offset (the next read starts
/// there). When the very first is past `from`, they are all kept and the hole is told.
fn up_to_hole(records: &mut Vec<Record>, from: Offset) -> Hole {
    records.sort_by_key(|r| r.offset);
    records.dedup_by_key(|r| r.offset);
    let Some(first) = records.first().map(|r| r.offset) else {
        return Hole::None;
    };
    if first != from {
        return Hole::At(first);
    }
    let run = records
        .iter()
        .zip(from..)
        .take_while(|(r, expected)| r.offset == *expected)
        .count();
    records.truncate(run);
    Hole::None
}

/// Whether a read that finds `from` missing passes over it now: once it has been missing for
/// `wait_max` (since `hole` first recorded it). `hole` is the partition's record of the hole
/// reads are waiting for; it is cleared when the hole is passed.
fn pass_over(
    hole: &mut Option<(Offset, tokio::time::Instant)>,
    from: Offset,
    now: tokio::time::Instant,
    wait_max: Duration,
) -> bool {
    let since = match *hole {
        Some((offset, since)) if offset == from => since,
        _ => hole.insert((from, now)).1,
    };
    let pass = now.saturating_duration_since(since) >= wait_max;
    if pass {
        *hole = None;
    }
    pass
}

fn chunks(payloads: &[Bytes], max: usize) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, payload) in payloads.iter().enumerate() {
        if i > start && bytes + payload.len() > max {
            ranges.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += payload.len();
    }
    if start < payloads.len() {
        ranges.push(start..payloads.len());
    }
    ranges
}

/// Runs `work`, failing with [`Error::Unavailable`] when it takes longer than `limit`.
async fn within<T>(
    limit: Duration,
    context: &'static str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::Unavailable {
            context,
            reason: format!("no answer from the brokers within {limit:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(sizes: &[usize]) -> Vec<Bytes> {
        sizes.iter().map(|&n| Bytes::from(vec![0u8; n])).collect()
    }

    fn at(offsets: &[u64]) -> Vec<Record> {
        offsets
            .iter()
            .map(|&offset| Record {
                offset,
                payload: Bytes::from(offset.to_string()),
            })
            .collect()
    }

    fn offsets(records: &[Record]) -> Vec<u64> {
        records.iter().map(|r| r.offset).collect()
    }

    // tansu 0.6 can answer a fetch with a later batch while an earlier one is not stored yet:
    // a read keeps only what follows on from `from`, and tells a hole at `from` itself.
    #[test]
    fn reads_stop_at_the_first_missing_offset() {
        let mut all = at(&[10, 11, 12, 13]);
        assert_eq!(up_to_hole(&mut all, 10), Hole::None);
        assert_eq!(offsets(&all), [10, 11, 12, 13]);

        let mut gap = at(&[10, 11, 16, 17]);
        assert_eq!(up_to_hole(&mut gap, 10), Hole::None);
        assert_eq!(offsets(&gap), [10, 11]);

        let mut ahead = at(&[18, 19, 16, 17]);
        assert_eq!(up_to_hole(&mut ahead, 10), Hole::At(16));
        assert_eq!(offsets(&ahead), [16, 17, 18, 19]);

        let mut twice = at(&[10, 11, 11, 12]);
        assert_eq!(up_to_hole(&mut twice, 10), Hole::None);
        assert_eq!(offsets(&twice), [10, 11, 12]);

        let mut none = at(&[]);
        assert_eq!(up_to_hole(&mut none, 10), Hole::None);
        assert!(none.is_empty());
    }

    // A hole is waited for from the first read that met it, and passed over once it has been
    // missing for `hole_wait_max`; a hole at another offset starts its own wait.
    #[test]
    fn a_hole_is_passed_over_only_after_the_wait() {
        let wait = Duration::from_secs(10);
        let t0 = tokio::time::Instant::now();
        let mut hole = None;
        assert!(!pass_over(&mut hole, 10, t0, wait));
        assert!(!pass_over(&mut hole, 10, t0 + Duration::from_secs(9), wait));
        // Another hole (the first filled, reads went on): its wait starts now.
        assert!(!pass_over(&mut hole, 20, t0 + Duration::from_secs(9), wait));
        assert!(!pass_over(
            &mut hole,
            20,
            t0 + Duration::from_secs(18),
            wait
        ));
        assert!(pass_over(&mut hole, 20, t0 + Duration::from_secs(19), wait));
        assert_eq!(hole, None);
        // With no wait, as before holes were waited for: passed at once.
        assert!(pass_over(&mut hole, 30, t0, Duration::ZERO));
    }

    #[test]
    fn chunks_keep_order_and_stay_under_the_limit() {
        assert_eq!(chunks(&payloads(&[]), 10), Vec::<Range<usize>>::new());
        assert_eq!(chunks(&payloads(&[4, 4, 4]), 10), vec![0..2, 2..3]);
        assert_eq!(chunks(&payloads(&[10, 1]), 10), vec![0..1, 1..2]);
        // A payload over the limit goes alone.
        assert_eq!(chunks(&payloads(&[3, 25, 3]), 10), vec![0..1, 1..2, 2..3]);
        assert_eq!(chunks(&payloads(&[1; 5]), 100), vec![0..5]);
    }

    #[test]
    fn config_is_checked() {
        let ok = KafkaConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            KafkaConfig {
                brokers: vec![],
                ..ok.clone()
            },
            KafkaConfig {
                topic: "a topic".into(),
                ..ok.clone()
            },
            KafkaConfig {
                partitions: 0,
                ..ok.clone()
            },
            KafkaConfig {
                produce_bytes_max: 0,
                ..ok.clone()
            },
            KafkaConfig {
                fetch_bytes_max: 10,
                ..ok.clone()
            },
            KafkaConfig {
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

    #[tokio::test]
    async fn connecting_to_nothing_fails_within_the_timeout() {
        // Nothing listens on port 1 of loopback.
        let config = KafkaConfig {
            brokers: vec!["127.0.0.1:1".into()],
            request_timeout: Duration::from_millis(300),
            ..KafkaConfig::default()
        };
        match KafkaStream::connect(config).await {
            Err(Error::Unavailable { .. }) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
