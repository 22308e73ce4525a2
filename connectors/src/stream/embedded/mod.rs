//! The embedded partitioned log: the default [`EventStream`] backend.
//!
//! Layout of a stream directory:
//!
//! ```text
//! <dir>/stream.meta                          number of partitions (fixed at creation)
//! <dir>/stream.lock                          held while an EmbeddedLog has the directory open
//! <dir>/p-00007/00000000000000000000.seg     segments of partition 7, named by base offset
//! ```
//!
//! Appends go through one writer thread that batches every request waiting
//! at the same time (group commit): all their records are written, each
//! touched segment is fdatasynced once, and only then are the records made
//! visible to readers and the appenders answered. Readers are served from an
//! in-memory tail cache of recent records when possible and from the segment
//! files otherwise, using a sparse per-segment index to start near the
//! requested offset.

mod segment;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, oneshot};
use tracing::{debug, error, info, warn};

use self::segment::{ReadSlice, io_error};
use self::writer::{ActiveSegment, AppendRequest, Command, PartitionWriter};
use crate::stream::{AppendAck, Error, EventStream, Offset, PartitionId, Record, Result, Stats};

/// The file holding the number of partitions.
const META_FILE: &str = "stream.meta";
/// The file locked while the stream is open.
const LOCK_FILE: &str = "stream.lock";
/// The first line of [`META_FILE`].
const META_MAGIC: &str = "metron-embedded-log 1";
/// What a cached record costs beyond its payload, so empty records count.
const CACHE_RECORD_OVERHEAD: usize = 64;

/// Settings of an [`EmbeddedLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedLogConfig {
    /// Number of partitions; fixed when the stream is created.
    pub partitions: u32,
    /// A segment is closed and a new one started once the next record would
    /// take it past this many bytes (a record larger than this gets a segment
    /// of its own).
    pub segment_bytes_max: u64,
    /// Append requests that may wait for the writer before appends fail with
    /// [`Error::Overloaded`].
    pub queue_batches_max: usize,
    /// The largest payload accepted, in bytes (at most `u32::MAX`).
    pub record_bytes_max: usize,
    /// Memory for recent records kept for readers, across all partitions.
    pub tail_cache_bytes_max: usize,
}

impl Default for EmbeddedLogConfig {
    fn default() -> Self {
        Self {
            partitions: 1,
            segment_bytes_max: 64 * 1024 * 1024,
            queue_batches_max: 4096,
            record_bytes_max: 1024 * 1024,
            tail_cache_bytes_max: 64 * 1024 * 1024,
        }
    }
}

impl EmbeddedLogConfig {
    fn validate(&self) -> Result<()> {
        let invalid = |field, reason| Err(Error::InvalidConfig { field, reason });
        if self.partitions == 0 {
            return invalid("partitions", "must be at least 1");
        }
        if self.segment_bytes_max == 0 {
            return invalid("segment_bytes_max", "must be at least 1");
        }
        if self.queue_batches_max == 0 {
            return invalid("queue_batches_max", "must be at least 1");
        }
        if u32::try_from(self.record_bytes_max).is_err() {
            return invalid("record_bytes_max", "must fit in 32 bits");
        }
        Ok(())
    }
}

#[derive(Default)]
struct StatCounters {
    appends: AtomicU64,
    records: AtomicU64,
    syncs: AtomicU64,
    bytes: AtomicU64,
}

/// What readers know about one segment. Only durable data is described.
struct SegmentMeta {
    base: Offset,
    /// One past the last durable record.
    end: Offset,
    /// Durable bytes.
    size: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Sparse index: (offset, byte position) every [`segment::INDEX_INTERVAL`]
    /// records, the implicit (base, 0) left out.
    index: Vec<(Offset, u64)>,
}

impl SegmentMeta {
    /// The position of the indexed record at or before `offset`.
    fn seek(&self, offset: Offset) -> (Offset, u64) {
        let i = self.index.partition_point(|&(o, _)| o <= offset);
        match i.checked_sub(1).and_then(|i| self.index.get(i)) {
            Some(&entry) => entry,
            None => (self.base, 0),
        }
    }
}

/// What readers see of a partition. Segments are sorted by base offset and
/// never empty; the last one is the one being written.
struct PartitionState {
    segments: Vec<SegmentMeta>,
    /// The high watermark: one past the last durable record.
    end: Offset,
    /// The highest offset committed since open.
    committed: Offset,
}

impl PartitionState {
    fn earliest(&self) -> Offset {
        self.segments.first().map_or(self.end, |s| s.base)
    }
}

struct Partition {
    id: PartitionId,
    state: RwLock<PartitionState>,
    /// Woken whenever records are published or the stream closes.
    notify: Notify,
}

struct CachedRecord {
    /// Insertion order across all partitions, for eviction.
    seq: u64,
    record: Record,
}

/// Recent records of every partition, oldest evicted first across partitions.
/// Each partition's records are contiguous and end at its high watermark.
struct TailCache {
    bytes_max: usize,
    bytes: usize,
    seq: u64,
    partitions: Vec<VecDeque<CachedRecord>>,
}

impl TailCache {
    fn new(partitions: u32, bytes_max: usize) -> Self {
        Self {
            bytes_max,
            bytes: 0,
            seq: 0,
            partitions: (0..partitions).map(|_| VecDeque::new()).collect(),
        }
    }

    fn cost(record: &Record) -> usize {
        record.payload.len() + CACHE_RECORD_OVERHEAD
    }

    fn push(&mut self, partition: PartitionId, records: Vec<Record>) {
        if self.bytes_max == 0 {
            return;
        }
        let Some(deque) = self.partitions.get_mut(partition as usize) else {
            return;
        };
        for record in records {
            if deque
                .back()
                .is_some_and(|b| b.record.offset + 1 != record.offset)
            {
                let dropped: usize = deque.iter().map(|c| Self::cost(&c.record)).sum();
                self.bytes -= dropped;
                deque.clear();
            }
            self.bytes += Self::cost(&record);
            self.seq += 1;
            deque.push_back(CachedRecord {
                seq: self.seq,
                record,
            });
        }
        self.evict();
    }

    fn evict(&mut self) {
        while self.bytes > self.bytes_max {
            let oldest = self
                .partitions
                .iter_mut()
                .filter_map(|d| d.front().map(|c| c.seq).zip(Some(d)))
                .min_by_key(|(seq, _)| *seq);
            let Some((_, deque)) = oldest else {
                self.bytes = 0;
                return;
            };
            if let Some(c) = deque.pop_front() {
                self.bytes -= Self::cost(&c.record);
            }
        }
    }

    /// Up to `max` records from `from` on, if the cache holds `from`.
    fn get(&self, partition: PartitionId, from: Offset, max: usize) -> Option<Vec<Record>> {
        let deque = self.partitions.get(partition as usize)?;
        let first = deque.front()?.record.offset;
        let skip = usize::try_from(from.checked_sub(first)?).ok()?;
        if skip >= deque.len() {
            return None;
        }
        Some(
            deque
                .iter()
                .skip(skip)
                .take(max)
                .map(|c| c.record.clone())
                .collect(),
        )
    }
}

/// State shared by the [`EmbeddedLog`] handle, its readers and its writer
/// thread.
struct Shared {
    config: EmbeddedLogConfig,
    partitions: Vec<Partition>,
    cache: Mutex<TailCache>,
    stats: StatCounters,
    /// Commands sent to the writer and not yet received by it.
    queued: AtomicUsize,
    closed: AtomicBool,
    /// Test hook: when n > 0, the n-th segment write from now fails after
    /// writing half of its bytes.
    #[cfg(test)]
    fail_nth_write: Arc<AtomicUsize>,
}

impl Shared {
    fn partition(&self, partition: PartitionId) -> Result<&Partition> {
        self.partitions
            .get(partition as usize)
            .ok_or(Error::UnknownPartition {
                partition,
                partitions: self.config.partitions,
            })
    }
}

/// What a read attempt found without waiting.
enum Available {
    Records(Vec<Record>),
    OnDisk(Vec<ReadSlice>),
    Nothing,
}

/// A durable, partitioned, append-only log in a local directory.
///
/// Appends are queued when [`EventStream::append`] is called (not when its
/// future is first polled), so an overloaded queue is reported at once and
/// appends issued in sequence keep their order.
pub struct EmbeddedLog {
    dir: PathBuf,
    shared: Arc<Shared>,
    sender: RwLock<Option<SyncSender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Holds the directory lock for as long as the log exists.
    _lock: File,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("dir", &self.dir)
            .field("partitions", &self.shared.config.partitions)
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl EmbeddedLog {
    /// Opens the stream in `dir`, creating it if needed: recovers every
    /// partition (truncating torn tails of the last segments) and starts the
    /// writer thread.
    pub fn open(dir: &Path, config: EmbeddedLogConfig) -> Result<Arc<EmbeddedLog>> {
        config.validate()?;
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock = lock_dir(dir)?;
        check_or_write_meta(dir, config.partitions)?;

        let mut partitions = Vec::with_capacity(config.partitions as usize);
        let mut writers = Vec::with_capacity(config.partitions as usize);
        for id in 0..config.partitions {
            let (state, writer) = recover_partition(dir, id)?;
            partitions.push(Partition {
                id,
                state: RwLock::new(state),
                notify: Notify::new(),
            });
            writers.push(writer);
        }

        let shared = Arc::new(Shared {
            cache: Mutex::new(TailCache::new(
                config.partitions,
                config.tail_cache_bytes_max,
            )),
            config,
            partitions,
            stats: StatCounters::default(),
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            #[cfg(test)]
            fail_nth_write: Arc::new(AtomicUsize::new(0)),
        });
        let (sender, receiver) = std::sync::mpsc::sync_channel(shared.config.queue_batches_max);
        let writer_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("metron-log-writer".to_owned())
            .spawn(move || writer::run(&writer_shared, &receiver, writers))
            .map_err(|source| Error::WriterThread { source })?;
        info!(
            path = %dir.display(),
            partitions = shared.config.partitions,
            "Opened the embedded log."
        );
        Ok(Arc::new(EmbeddedLog {
            dir: dir.to_path_buf(),
            shared,
            sender: RwLock::new(Some(sender)),
            writer: Mutex::new(Some(handle)),
            _lock: lock,
        }))
    }

    /// The stream directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &EmbeddedLogConfig {
        &self.shared.config
    }

    /// Counters of the writer's work since open.
    pub fn stats(&self) -> Stats {
        let s = &self.shared.stats;
        Stats {
            appends: s.appends.load(Ordering::Relaxed),
            records: s.records.load(Ordering::Relaxed),
            syncs: s.syncs.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            holes_skipped: 0,
        }
    }

    /// The earliest offset still kept by a partition.
    pub fn earliest_offset(&self, partition: PartitionId) -> Result<Offset> {
        Ok(self.shared.partition(partition)?.state.read().earliest())
    }

    /// Stops accepting appends, lets the writer finish every queued append,
    /// stops the writer thread and releases waiting readers. Blocks until the
    /// writer has stopped. Calling it again does nothing.
    pub fn close(&self) {
        let sender = self.sender.write().take();
        drop(sender);
        let handle = self.writer.lock().take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                error!(path = %self.dir.display(), "The log writer thread panicked.");
            }
            debug!(path = %self.dir.display(), "Closed the embedded log.");
        }
        self.shared.closed.store(true, Ordering::Release);
        for p in &self.shared.partitions {
            p.notify.notify_waiters();
        }
    }

    /// Queues an append with the writer.
    fn submit(
        &self,
        partition: PartitionId,
        payloads: Vec<Bytes>,
    ) -> Result<oneshot::Receiver<Result<AppendAck>>> {
        self.shared.partition(partition)?;
        let max = self.shared.config.record_bytes_max;
        if let Some(p) = payloads.iter().find(|p| p.len() > max) {
            return Err(Error::RecordTooLarge { len: p.len(), max });
        }
        let (reply, receiver) = oneshot::channel();
        self.send(Command::Append(AppendRequest {
            partition,
            payloads,
            reply,
        }))?;
        Ok(receiver)
    }

    fn send(&self, command: Command) -> Result<()> {
        let sender = self.sender.read();
        let Some(sender) = sender.as_ref() else {
            return Err(Error::Closed);
        };
        // Count first so the writer never decrements below zero.
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        match sender.try_send(command) {
            Ok(()) => Ok(()),
            Err(e) => {
                let queued = self
                    .shared
                    .queued
                    .fetch_sub(1, Ordering::AcqRel)
                    .saturating_sub(1);
                match e {
                    TrySendError::Full(_) => Err(Error::Overloaded { queued }),
                    TrySendError::Disconnected(_) => Err(Error::Closed),
                }
            }
        }
    }

    /// Records available at `from` without waiting, or where to read them.
    fn available(
        &self,
        partition: &Partition,
        from: Offset,
        max_records: usize,
    ) -> Result<Available> {
        let state = partition.state.read();
        let earliest = state.earliest();
        if from < earliest {
            return Err(Error::OffsetDeleted {
                partition: partition.id,
                offset: from,
                earliest,
            });
        }
        if from > state.end {
            return Err(Error::OffsetOutOfRange {
                partition: partition.id,
                offset: from,
                end_offset: state.end,
            });
        }
        if from == state.end {
            return Ok(Available::Nothing);
        }
        if let Some(records) = self
            .shared
            .cache
            .lock()
            .get(partition.id, from, max_records)
        {
            return Ok(Available::Records(records));
        }
        let first = state
            .segments
            .partition_point(|s| s.base <= from)
            .saturating_sub(1);
        let mut slices = Vec::new();
        let mut wanted = max_records as u64;
        for (i, seg) in state.segments.iter().enumerate().skip(first) {
            let (start_offset, start_pos) = if i == first {
                seg.seek(from)
            } else {
                (seg.base, 0)
            };
            slices.push(ReadSlice {
                path: seg.path.clone(),
                file: Arc::clone(&seg.file),
                start_offset,
                start_pos,
                end_offset: seg.end,
                size: seg.size,
            });
            wanted = wanted.saturating_sub(seg.end.saturating_sub(from.max(seg.base)));
            if wanted == 0 {
                break;
            }
        }
        Ok(Available::OnDisk(slices))
    }

    async fn read_records(
        &self,
        partition: PartitionId,
        from: Offset,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Vec<Record>> {
        let partition = self.shared.partition(partition)?;
        let deadline = tokio::time::Instant::now().checked_add(max_wait);
        loop {
            // Register for wake-ups before looking, so an append published
            // in between is not missed.
            let notified = partition.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            match self.available(partition, from, max_records.max(1))? {
                _ if max_records == 0 => return Ok(Vec::new()),
                Available::Records(records) => return Ok(records),
                Available::OnDisk(slices) => {
                    let read = tokio::task::spawn_blocking(move || {
                        segment::read_slices(&slices, from, max_records)
                    });
                    return match read.await {
                        Ok(result) => result,
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(_) => Err(Error::Closed),
                    };
                }
                Available::Nothing => {}
            }
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Ok(Vec::new());
                    }
                }
                None => notified.await,
            }
        }
    }

    async fn commit_offset(&self, partition: PartitionId, offset: Offset) -> Result<()> {
        let partition = self.shared.partition(partition)?;
        let removed: Vec<PathBuf> = {
            let mut state = partition.state.write();
            if offset > state.end {
                return Err(Error::OffsetOutOfRange {
                    partition: partition.id,
                    offset,
                    end_offset: state.end,
                });
            }
            state.committed = state.committed.max(offset);
            // Never the last segment: the writer appends to it.
            let covered = state.segments[..state.segments.len().saturating_sub(1)]
                .iter()
                .take_while(|s| s.end <= offset)
                .count();
            state.segments.drain(..covered).map(|s| s.path).collect()
        };
        if removed.is_empty() {
            return Ok(());
        }
        let id = partition.id;
        let deleted = tokio::task::spawn_blocking(move || {
            for path in &removed {
                match std::fs::remove_file(path) {
                    Ok(()) => {
                        debug!(partition = id, path = %path.display(), "Deleted a committed segment.")
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        warn!(partition = id, path = %path.display(), error = %source, "Could not delete a committed segment.");
                        return Err(Error::Io {
                            path: path.clone(),
                            source,
                        });
                    }
                }
            }
            Ok(())
        });
        match deleted.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Makes the writer block until the returned sender is dropped or sent
    /// to; returns once the writer is blocked.
    #[cfg(test)]
    fn pause_writer(&self) -> Result<std::sync::mpsc::Sender<()>> {
        let (paused_tx, paused_rx) = std::sync::mpsc::channel();
        let (resume_tx, resume_rx) = std::sync::mpsc::channel();
        self.send(Command::Pause {
            paused: paused_tx,
            resume: resume_rx,
        })?;
        paused_rx.recv().map_err(|_| Error::Closed)?;
        Ok(resume_tx)
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl EventStream for EmbeddedLog {
    fn partitions(&self) -> u32 {
        self.shared.config.partitions
    }

    fn append(
        &self,
        partition: PartitionId,
        payloads: Vec<Bytes>,
    ) -> BoxFuture<'_, Result<AppendAck>> {
        let submitted = self.submit(partition, payloads);
        Box::pin(async move {
            match submitted?.await {
                Ok(result) => result,
                // The writer stopped without answering.
                Err(_) => Err(Error::Closed),
            }
        })
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
        Ok(self.shared.partition(partition)?.state.read().end)
    }

    fn commit(&self, partition: PartitionId, offset: Offset) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.commit_offset(partition, offset))
    }

    fn record_bytes_max(&self) -> usize {
        self.shared.config.record_bytes_max
    }

    fn stats(&self) -> Stats {
        EmbeddedLog::stats(self)
    }

    fn close(&self) {
        EmbeddedLog::close(self);
    }
}

/// Takes an exclusive lock on the stream directory.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(std::fs::TryLockError::Error(source)) => Err(Error::Io { path, source }),
    }
}

/// Checks the persisted partition count, or persists it for a new stream.
fn check_or_write_meta(dir: &Path, partitions: u32) -> Result<()> {
    let path = dir.join(META_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let persisted = parse_meta(&text).ok_or_else(|| Error::InvalidMeta {
                path: path.clone(),
                reason: "it does not hold a partition count",
            })?;
            if persisted != partitions {
                return Err(Error::PartitionCountMismatch {
                    path: dir.to_path_buf(),
                    persisted,
                    requested: partitions,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let has_partitions = std::fs::read_dir(dir)
                .map_err(io_error(dir))?
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("p-"));
            if has_partitions {
                return Err(Error::InvalidMeta {
                    path,
                    reason: "it is missing but partition directories exist",
                });
            }
            let tmp = dir.join(format!("{META_FILE}.tmp"));
            let text = format!("{META_MAGIC}\npartitions={partitions}\n");
            {
                use std::io::Write as _;
                let mut f = File::create(&tmp).map_err(io_error(&tmp))?;
                f.write_all(text.as_bytes()).map_err(io_error(&tmp))?;
                f.sync_all().map_err(io_error(&tmp))?;
            }
            std::fs::rename(&tmp, &path).map_err(io_error(&path))?;
            segment::sync_dir(dir)
        }
        Err(source) => Err(Error::Io { path, source }),
    }
}

fn parse_meta(text: &str) -> Option<u32> {
    let mut lines = text.lines();
    if lines.next()? != META_MAGIC {
        return None;
    }
    lines
        .find_map(|l| l.strip_prefix("partitions="))?
        .trim()
        .parse()
        .ok()
}

/// Scans a partition's segments, truncates a torn tail of the last one and
/// returns what readers and the writer start from.
fn recover_partition(dir: &Path, id: PartitionId) -> Result<(PartitionState, PartitionWriter)> {
    let pdir = dir.join(format!("p-{id:05}"));
    if !pdir.is_dir() {
        std::fs::create_dir_all(&pdir).map_err(io_error(&pdir))?;
        segment::sync_dir(dir)?;
    }
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(&pdir).map_err(io_error(&pdir))? {
        let entry = entry.map_err(io_error(&pdir))?;
        let name = entry.file_name();
        match segment::parse_segment_file_name(&name.to_string_lossy()) {
            Some(base) => bases.push(base),
            None => {
                warn!(partition = id, path = %entry.path().display(), "Ignored a file that is not a segment.");
            }
        }
    }
    bases.sort_unstable();
    if bases.is_empty() {
        let path = pdir.join(segment::segment_file_name(0));
        segment::open_segment_file(&path, true)?;
        segment::sync_dir(&pdir)?;
        bases.push(0);
    }

    let mut segments: Vec<SegmentMeta> = Vec::with_capacity(bases.len());
    let last = bases.len() - 1;
    for (i, &base) in bases.iter().enumerate() {
        let path = pdir.join(segment::segment_file_name(base));
        if let Some(prev) = segments.last()
            && prev.end != base
        {
            return Err(Error::OffsetGap {
                path,
                expected: prev.end,
                found: base,
            });
        }
        let file = segment::open_segment_file(&path, false)?;
        let scan = segment::scan(&file, &path, base)?;
        if let Some((position, damage)) = scan.damage {
            if i != last {
                return Err(Error::Corrupt { path, position });
            }
            file.set_len(scan.valid_len).map_err(io_error(&path))?;
            file.sync_all().map_err(io_error(&path))?;
            warn!(
                partition = id,
                path = %path.display(),
                position,
                dropped_bytes = scan.file_len - scan.valid_len,
                damage = ?damage,
                "Truncated a torn tail."
            );
        }
        segments.push(SegmentMeta {
            base,
            end: base + scan.records,
            size: scan.valid_len,
            path,
            file: Arc::new(file),
            index: scan.index,
        });
    }

    let Some(active) = segments.last() else {
        // Unreachable: a segment was created above when there was none.
        return Err(Error::InvalidMeta {
            path: pdir,
            reason: "the partition has no segment",
        });
    };
    let end = active.end;
    let writer = PartitionWriter {
        id,
        dir: pdir,
        next_offset: end,
        active: ActiveSegment {
            base: active.base,
            path: active.path.clone(),
            file: Arc::clone(&active.file),
            size: active.size,
            records: active.end - active.base,
        },
        poisoned: None,
    };
    debug!(
        partition = id,
        segments = segments.len(),
        end_offset = end,
        "Recovered a partition."
    );
    let state = PartitionState {
        segments,
        end,
        committed: 0,
    };
    Ok((state, writer))
}
