//! The [`EventStream`] trait, the types it speaks in and the one error enum of
//! the crate.
//!
//! The shape follows a broker such as Kafka: a stream has a fixed number of
//! partitions; each partition is an append-only sequence of records addressed
//! by an [`Offset`] that starts at 0 and grows by one per record; consumers
//! keep their own position and tell the stream how far it is durable elsewhere
//! with [`EventStream::commit`], which lets the stream drop old data.

pub mod embedded;
#[cfg(feature = "fluvio")]
pub mod fluvio;
pub mod kafka;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(feature = "fluvio")]
pub use self::fluvio::{FluvioConfig, FluvioStream};
pub use embedded::{EmbeddedLog, EmbeddedLogConfig};
pub use kafka::{KafkaConfig, KafkaStream};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

/// A per-partition record index. It starts at 0 and grows by one per record,
/// like a Kafka offset.
pub type Offset = u64;

/// The index of a partition, from 0 to `partitions() - 1`.
pub type PartitionId = u32;

/// One record read back from a partition.
#[derive(Debug, Clone)]
pub struct Record {
    /// The record's offset within its partition.
    pub offset: Offset,
    /// The bytes that were appended.
    pub payload: Bytes,
}

/// The answer to a successful [`EventStream::append`]: the appended records
/// have offsets `first_offset..next_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAck {
    /// The partition the records went to.
    pub partition: PartitionId,
    /// The offset of the first appended record.
    pub first_offset: Offset,
    /// One past the offset of the last appended record (equal to
    /// `first_offset` when nothing was appended).
    pub next_offset: Offset,
}

/// Counters of a stream's appends since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Append requests completed successfully.
    pub appends: u64,
    /// Records appended.
    pub records: u64,
    /// Writes that made appends durable: fsync/fdatasync calls of the embedded log's writer
    /// (segment files and directories), produce requests answered by Kafka's brokers.
    pub syncs: u64,
    /// Bytes appended (the embedded log counts its frame headers too).
    pub bytes: u64,
    /// Offsets a reader passed over after waiting `holeWaitMax` for them to become readable
    /// (Kafka only: see [`KafkaConfig::hole_wait_max`]).
    pub holes_skipped: u64,
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The partition index is out of range.
    #[error("partition {partition} does not exist (the stream has {partitions})")]
    UnknownPartition {
        partition: PartitionId,
        partitions: u32,
    },
    /// The append queue is full; the caller should back off (HTTP 429).
    #[error("the stream's append queue is full ({queued} batches waiting)")]
    Overloaded { queued: usize },
    /// An IO operation on a file or directory failed.
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The stream was closed: no more appends are accepted and readers waiting
    /// for new records are released.
    #[error("the stream is closed")]
    Closed,
    /// A payload is larger than the configured limit.
    #[error("record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },
    /// The requested offset was deleted after a commit.
    #[error("offset {offset} of partition {partition} was deleted (earliest kept is {earliest})")]
    OffsetDeleted {
        partition: PartitionId,
        offset: Offset,
        earliest: Offset,
    },
    /// The requested offset is beyond the end of the partition.
    #[error("offset {offset} of partition {partition} is beyond its end offset {end_offset}")]
    OffsetOutOfRange {
        partition: PartitionId,
        offset: Offset,
        end_offset: Offset,
    },
    /// The stream was created with another number of partitions.
    #[error("the stream at {path} has {persisted} partitions but {requested} were requested")]
    PartitionCountMismatch {
        path: PathBuf,
        persisted: u32,
        requested: u32,
    },
    /// The stream's metadata file is missing or unreadable.
    #[error("the stream metadata {path} is invalid: {reason}")]
    InvalidMeta { path: PathBuf, reason: &'static str },
    /// A configuration value is unusable.
    #[error("invalid stream configuration: {field} {reason}")]
    InvalidConfig {
        field: &'static str,
        reason: &'static str,
    },
    /// Stored data is damaged somewhere other than a torn tail.
    #[error("corrupt record in {path} at byte {position}")]
    Corrupt { path: PathBuf, position: u64 },
    /// A segment does not start where the previous one ended.
    #[error("segment {path} starts at offset {found} but offset {expected} was expected")]
    OffsetGap {
        path: PathBuf,
        expected: Offset,
        found: Offset,
    },
    /// Another process or instance has the stream directory open.
    #[error("the stream at {path} is already open elsewhere")]
    Locked { path: PathBuf },
    /// A partition could not be restored to a consistent state after a failed
    /// write; it rejects appends until the stream is reopened.
    #[error(
        "partition {partition} rejects appends after a failed write to {path}; reopen the stream"
    )]
    Poisoned {
        partition: PartitionId,
        path: PathBuf,
    },
    /// The topic exists with another number of partitions.
    #[error("the topic {topic} has {persisted} partitions but {requested} were requested")]
    TopicPartitionMismatch {
        topic: String,
        persisted: u32,
        requested: u32,
    },
    /// The Kafka brokers or the Fluvio cluster did not answer, or answered with an error,
    /// while `context`; the caller may retry later (HTTP 503).
    #[error("the event stream is unavailable while {context}: {reason}")]
    Unavailable {
        context: &'static str,
        reason: String,
    },
    /// The writer thread could not be started.
    #[error("could not start the log writer thread: {source}")]
    WriterThread { source: std::io::Error },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What every stream backend provides. Implementors: [`EmbeddedLog`] (the default),
/// [`KafkaStream`]. `tests/it/stream_suite.rs` holds the tests every implementor passes.
pub trait EventStream: Send + Sync + 'static {
    /// The number of partitions; partition ids are `0..partitions()`.
    fn partitions(&self) -> u32;

    /// Appends `payloads` to `partition` in order; resolves once ALL of them
    /// are durable as the backend makes them: fsynced (embedded log), on the in-sync
    /// replicas (Kafka), on every replica's log file, not fsynced (Fluvio). Fails fast with [`Error::Overloaded`] when the
    /// append queue is full (callers answer HTTP 429).
    fn append(
        &self,
        partition: PartitionId,
        payloads: Vec<Bytes>,
    ) -> BoxFuture<'_, Result<AppendAck>>;

    /// Reads records with offset >= `from`, in order: at most `max_records` from the
    /// embedded log; from Kafka every record of the record batches one fetch brought (at most
    /// its `fetch_bytes_max` bytes), so that reads end at a batch's end. If none is available
    /// yet, waits up to `max_wait` for new appends, then returns an empty Vec; `max_records`
    /// 0 answers an empty Vec at once. Records returned are durable. The future is cancel-safe: dropped
    /// before it resolves, it has consumed nothing (a partition ends a long wait this way
    /// when a message comes for it).
    fn read(
        &self,
        partition: PartitionId,
        from: Offset,
        max_records: usize,
        max_wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<Record>>>;

    /// The next offset to be written (high watermark) of a partition.
    fn end_offset(&self, partition: PartitionId) -> Result<Offset>;

    /// The consumer position is durable elsewhere up to `offset` (a checkpoint
    /// covers records < offset): segments wholly below it may be deleted.
    fn commit(&self, partition: PartitionId, offset: Offset) -> BoxFuture<'_, Result<()>>;

    /// The largest payload [`EventStream::append`] accepts, in bytes.
    fn record_bytes_max(&self) -> usize;

    /// Counters of the appends since the stream was opened.
    fn stats(&self) -> Stats;

    /// Stops accepting appends (they fail with [`Error::Closed`]) once those already queued
    /// are done, and releases waiting readers. Calling it again does nothing.
    fn close(&self);
}

/// A broker partition's offsets as a client keeps them: the highest end offset it has seen
/// and the highest position committed to it (Kafka, Fluvio).
#[derive(Debug, Default)]
pub(crate) struct Positions {
    end: AtomicU64,
    committed: AtomicU64,
}

impl Positions {
    pub(crate) fn new(end: Offset) -> Self {
        Self {
            end: AtomicU64::new(end),
            committed: AtomicU64::new(0),
        }
    }

    pub(crate) fn end(&self) -> Offset {
        self.end.load(Ordering::Acquire)
    }

    /// Records that the partition reaches at least `end`.
    pub(crate) fn raise_end(&self, end: Offset) {
        self.end.fetch_max(end, Ordering::AcqRel);
    }

    pub(crate) fn committed(&self) -> Offset {
        self.committed.load(Ordering::Acquire)
    }

    /// Records a commit up to `offset`; past the end it is refused.
    pub(crate) fn commit(&self, partition: PartitionId, offset: Offset) -> Result<()> {
        let end = self.end();
        if offset > end {
            return Err(Error::OffsetOutOfRange {
                partition,
                offset,
                end_offset: end,
            });
        }
        self.committed.fetch_max(offset, Ordering::AcqRel);
        Ok(())
    }
}

/// The limits every broker-backed stream (Kafka, Fluvio) checks alike.
pub(crate) fn validate_limits(
    record_bytes_max: usize,
    fetch_bytes_max: usize,
    appends_in_flight_max: usize,
    request_timeout: Duration,
) -> Result<()> {
    let invalid = |field, reason| Err(Error::InvalidConfig { field, reason });
    if record_bytes_max == 0 || record_bytes_max > i32::MAX as usize / 2 {
        return invalid("record_bytes_max", "must be 1 byte to 1 GiB");
    }
    if fetch_bytes_max < record_bytes_max || fetch_bytes_max > i32::MAX as usize {
        return invalid("fetch_bytes_max", "must be record_bytes_max to 2 GiB");
    }
    if appends_in_flight_max == 0 {
        return invalid("appends_in_flight_max", "must be at least 1");
    }
    if request_timeout.is_zero() {
        return invalid("request_timeout", "must be positive");
    }
    Ok(())
}

/// [`Error::Unavailable`] for a failure of the Kafka or Fluvio client while `context`.
pub(crate) fn unavailable(context: &'static str, error: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        context,
        reason: error.to_string(),
    }
}

/// Refuses a batch with a payload over `max` bytes.
pub(crate) fn check_record_sizes(payloads: &[Bytes], max: usize) -> Result<()> {
    match payloads.iter().find(|b| b.len() > max) {
        Some(too_large) => Err(Error::RecordTooLarge {
            len: too_large.len(),
            max,
        }),
        None => Ok(()),
    }
}

/// A slot among the appends in flight, given back on drop.
pub(crate) struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    pub(crate) fn take(counter: &'a AtomicUsize, max: usize) -> Result<Self> {
        let before = counter.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Overloaded { queued: before });
        }
        Ok(Self(counter))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_slots_are_bounded_and_given_back() {
        let counter = AtomicUsize::new(0);
        let a = InFlight::take(&counter, 2);
        let b = InFlight::take(&counter, 2);
        assert!(a.is_ok() && b.is_ok());
        assert!(matches!(
            InFlight::take(&counter, 2),
            Err(Error::Overloaded { queued: 2 })
        ));
        drop(a);
        assert!(InFlight::take(&counter, 2).is_ok());
        assert_eq!(counter.load(Ordering::Acquire), 1);
    }
}
