//! The writer thread: group commit of every append waiting at the same time.
//!
//! Loop: block for the first command, drain every command already queued,
//! write all their records (buffered, positional writes to each partition's
//! active segment, rolling to a new segment when one is full), fdatasync each
//! touched segment once, then publish the records to readers and answer each
//! appender. A partition whose writes fail is rolled back to its last durable
//! state and its appenders in the batch get the error; other partitions are
//! not affected.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;
use tracing::{debug, error, warn};

use super::segment::{self, FRAME_HEADER, INDEX_INTERVAL};
use super::{SegmentMeta, Shared};
use crate::stream::{AppendAck, Error, Offset, PartitionId, Record, Result};

/// Flush a partition's write buffer once it holds this many bytes.
const WRITE_BUFFER_MAX: usize = 4 * 1024 * 1024;

/// What the writer receives.
pub(super) enum Command {
    Append(AppendRequest),
    /// Test hook: report being paused on `paused`, then block until `resume`
    /// yields or hangs up.
    #[cfg(test)]
    Pause {
        paused: std::sync::mpsc::Sender<()>,
        resume: std::sync::mpsc::Receiver<()>,
    },
}

pub(super) struct AppendRequest {
    pub partition: PartitionId,
    pub payloads: Vec<Bytes>,
    pub reply: oneshot::Sender<Result<AppendAck>>,
}

/// The segment a partition appends to, as of its last durable state.
#[derive(Clone)]
pub(super) struct ActiveSegment {
    pub base: Offset,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Durable bytes.
    pub size: u64,
    /// Durable records.
    pub records: u64,
}

/// The writer's private view of a partition.
pub(super) struct PartitionWriter {
    pub id: PartitionId,
    pub dir: PathBuf,
    /// One past the last durable record.
    pub next_offset: Offset,
    pub active: ActiveSegment,
    /// Set when a failed write could not be undone; appends are refused.
    pub poisoned: Option<PathBuf>,
}

/// The writer thread's body; returns once every sender is gone and the queue
/// is drained.
pub(super) fn run(
    shared: &Shared,
    receiver: &Receiver<Command>,
    mut writers: Vec<PartitionWriter>,
) {
    let mut batch: Vec<AppendRequest> = Vec::new();
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(command) = next.take() {
            shared.queued.fetch_sub(1, Ordering::AcqRel);
            match command {
                Command::Append(request) => batch.push(request),
                #[cfg(test)]
                Command::Pause { paused, resume } => {
                    commit_batch(shared, &mut writers, std::mem::take(&mut batch));
                    let _ = paused.send(());
                    let _ = resume.recv();
                }
            }
            next = receiver.try_recv().ok();
        }
        commit_batch(shared, &mut writers, std::mem::take(&mut batch));
    }
    debug!("The log writer stopped.");
}

/// One segment written to in the current batch.
struct StagedSegment {
    base: Offset,
    path: PathBuf,
    file: Arc<File>,
    /// Created in this batch (not yet known to readers).
    new: bool,
    /// Bytes written to the file, durable or not.
    written: u64,
    records: u64,
    /// Index entries added in this batch.
    index: Vec<(Offset, u64)>,
    /// Bytes written since the last sync.
    dirty: bool,
}

/// A partition's share of the current batch.
struct Staged {
    partition: PartitionId,
    /// Each request's reply and the offsets it gets.
    replies: Vec<(oneshot::Sender<Result<AppendAck>>, Offset, Offset)>,
    /// `segments[0]` continues the active segment; later ones are new.
    segments: Vec<StagedSegment>,
    next_offset: Offset,
    /// Frames not yet written to the last staged segment.
    buf: BytesMut,
    /// (offset, start in `buf`, payload length) of the frames in `buf`.
    spans: Vec<(Offset, usize, usize)>,
    /// The written records, sliced out of the written buffers.
    records: Vec<Record>,
    bytes: u64,
    syncs: u64,
    failure: Option<(PathBuf, io::Error)>,
    /// The partition refuses appends.
    poisoned: Option<PathBuf>,
    #[cfg(test)]
    fail_nth_write: Arc<std::sync::atomic::AtomicUsize>,
}

impl Staged {
    #[cfg_attr(not(test), allow(unused_variables))]
    fn new(w: &PartitionWriter, shared: &Shared) -> Self {
        Self {
            partition: w.id,
            replies: Vec::new(),
            segments: vec![StagedSegment {
                base: w.active.base,
                path: w.active.path.clone(),
                file: Arc::clone(&w.active.file),
                new: false,
                written: w.active.size,
                records: w.active.records,
                index: Vec::new(),
                dirty: false,
            }],
            next_offset: w.next_offset,
            buf: BytesMut::new(),
            spans: Vec::new(),
            records: Vec::new(),
            bytes: 0,
            syncs: 0,
            failure: None,
            poisoned: w.poisoned.clone(),
            #[cfg(test)]
            fail_nth_write: Arc::clone(&shared.fail_nth_write),
        }
    }

    fn fail(&mut self, path: &Path, e: io::Error) {
        if self.failure.is_none() {
            self.failure = Some((path.to_path_buf(), e));
        }
    }

    /// Writes the buffered frames to the last staged segment.
    fn flush(&mut self) {
        if self.buf.is_empty() || self.failure.is_some() {
            return;
        }
        let Some(seg) = self.segments.last_mut() else {
            return;
        };
        let data = self.buf.split().freeze();
        #[cfg(test)]
        if self
            .fail_nth_write
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            == Ok(1)
        {
            let _ = segment::write_all_at(&seg.file, &data[..data.len() / 2], seg.written);
            let path = seg.path.clone();
            return self.fail(&path, io::Error::other("injected write failure"));
        }
        if metron_engine::failpoint::should_fail_blocking("log.write") {
            let path = seg.path.clone();
            return self.fail(&path, io::Error::other("failpoint log.write"));
        }
        if let Err(e) = segment::write_all_at(&seg.file, &data, seg.written) {
            let path = seg.path.clone();
            self.fail(&path, e);
            return;
        }
        seg.written += data.len() as u64;
        seg.dirty = true;
        self.bytes += data.len() as u64;
        for (offset, start, len) in self.spans.drain(..) {
            let payload = data.slice(start + FRAME_HEADER..start + FRAME_HEADER + len);
            self.records.push(Record { offset, payload });
        }
    }

    /// Syncs the last staged segment if it has unsynced bytes.
    fn sync(&mut self) {
        if self.failure.is_some() {
            return;
        }
        let Some(seg) = self.segments.last_mut() else {
            return;
        };
        if !seg.dirty {
            return;
        }
        let synced = if metron_engine::failpoint::should_fail_blocking("log.fsync") {
            Err(io::Error::other("failpoint log.fsync"))
        } else {
            seg.file.sync_data()
        };
        match synced {
            Ok(()) => {
                seg.dirty = false;
                self.syncs += 1;
            }
            Err(e) => {
                let path = seg.path.clone();
                self.fail(&path, e);
            }
        }
    }

    /// Seals the last staged segment and starts a new one at `next_offset`.
    fn roll(&mut self, dir: &Path) {
        self.flush();
        self.sync();
        if self.failure.is_some() {
            return;
        }
        let base = self.next_offset;
        let path = dir.join(segment::segment_file_name(base));
        let file = match segment::open_segment_file(&path, true) {
            Ok(file) => file,
            Err(Error::Io { path, source }) => return self.fail(&path, source),
            Err(e) => return self.fail(&path, io::Error::other(e.to_string())),
        };
        // The new segment counts as staged from here, so a failure below
        // removes it again.
        self.segments.push(StagedSegment {
            base,
            path: path.clone(),
            file: Arc::new(file),
            new: true,
            written: 0,
            records: 0,
            index: Vec::new(),
            dirty: false,
        });
        match segment::sync_dir(dir) {
            Ok(()) => self.syncs += 1,
            Err(Error::Io { path, source }) => self.fail(&path, source),
            Err(e) => self.fail(dir, io::Error::other(e.to_string())),
        }
        debug!(partition = self.partition, path = %path.display(), "Started a new segment.");
    }

    /// Frames one record into the buffer, rolling first if the active
    /// segment is full.
    fn stage_record(&mut self, dir: &Path, segment_bytes_max: u64, payload: &[u8]) {
        let Ok(len) = u32::try_from(payload.len()) else {
            // Refused before queueing; never reached.
            return self.fail(dir, io::Error::from(io::ErrorKind::InvalidInput));
        };
        let frame = (FRAME_HEADER + payload.len()) as u64;
        let position = match self.segments.last() {
            Some(seg) => seg.written + self.buf.len() as u64,
            None => return,
        };
        if position > 0 && position + frame > segment_bytes_max {
            self.roll(dir);
            if self.failure.is_some() {
                return;
            }
        } else if self.buf.len() >= WRITE_BUFFER_MAX {
            self.flush();
        }
        let offset = self.next_offset;
        let Some(seg) = self.segments.last_mut() else {
            return;
        };
        let position = seg.written + self.buf.len() as u64;
        if seg.records > 0 && seg.records.is_multiple_of(INDEX_INTERVAL) {
            seg.index.push((offset, position));
        }
        seg.records += 1;
        self.spans.push((offset, self.buf.len(), payload.len()));
        segment::put_frame(&mut self.buf, len, payload);
        self.next_offset += 1;
    }
}

/// Writes, syncs and publishes one batch.
fn commit_batch(shared: &Shared, writers: &mut [PartitionWriter], batch: Vec<AppendRequest>) {
    if batch.is_empty() {
        return;
    }
    let segment_bytes_max = shared.config.segment_bytes_max;
    let mut staged: Vec<Option<Staged>> = writers.iter().map(|_| None).collect();

    // Write every record, partition by partition, in arrival order.
    for request in batch {
        let p = request.partition as usize;
        let (Some(w), Some(slot)) = (writers.get(p), staged.get_mut(p)) else {
            let _ = request.reply.send(Err(Error::UnknownPartition {
                partition: request.partition,
                partitions: shared.config.partitions,
            }));
            continue;
        };
        let s = slot.get_or_insert_with(|| Staged::new(w, shared));
        let first = s.next_offset;
        if s.poisoned.is_none() && s.failure.is_none() {
            for payload in &request.payloads {
                s.stage_record(&w.dir, segment_bytes_max, payload);
            }
        }
        s.replies.push((request.reply, first, s.next_offset));
    }
    for s in staged.iter_mut().flatten() {
        s.flush();
    }
    // One sync per touched segment file.
    for s in staged.iter_mut().flatten() {
        s.sync();
    }
    shared.stats.syncs.fetch_add(
        staged.iter().flatten().map(|s| s.syncs).sum(),
        Ordering::Relaxed,
    );

    for (w, s) in writers.iter_mut().zip(staged) {
        let Some(s) = s else { continue };
        if let Some(path) = &s.poisoned {
            for (reply, _, _) in s.replies {
                let _ = reply.send(Err(Error::Poisoned {
                    partition: w.id,
                    path: path.clone(),
                }));
            }
        } else if s.failure.is_some() {
            roll_back(w, s);
        } else {
            publish(shared, w, s);
        }
    }
}

/// Makes a batch's records visible and answers its appenders.
fn publish(shared: &Shared, w: &mut PartitionWriter, s: Staged) {
    let Some(partition) = shared.partitions.get(w.id as usize) else {
        return;
    };
    let record_count = s.next_offset - w.next_offset;
    {
        let mut state = partition.state.write();
        for seg in &s.segments {
            if seg.new {
                state.segments.push(SegmentMeta {
                    base: seg.base,
                    end: seg.base + seg.records,
                    size: seg.written,
                    path: seg.path.clone(),
                    file: Arc::clone(&seg.file),
                    index: seg.index.clone(),
                });
            } else if let Some(meta) = state.segments.iter_mut().rev().find(|m| m.base == seg.base)
            {
                meta.end = seg.base + seg.records;
                meta.size = seg.written;
                meta.index.extend_from_slice(&seg.index);
            } else {
                error!(partition = w.id, path = %seg.path.display(), "The active segment is missing from the published state.");
            }
        }
        state.end = s.next_offset;
    }
    if let Some(last) = s.segments.last() {
        w.active = ActiveSegment {
            base: last.base,
            path: last.path.clone(),
            file: Arc::clone(&last.file),
            size: last.written,
            records: last.records,
        };
    }
    w.next_offset = s.next_offset;
    shared.cache.lock().push(w.id, s.records);
    partition.notify.notify_waiters();

    let stats = &shared.stats;
    stats
        .appends
        .fetch_add(s.replies.len() as u64, Ordering::Relaxed);
    stats.records.fetch_add(record_count, Ordering::Relaxed);
    stats.bytes.fetch_add(s.bytes, Ordering::Relaxed);
    for (reply, first_offset, next_offset) in s.replies {
        let _ = reply.send(Ok(AppendAck {
            partition: w.id,
            first_offset,
            next_offset,
        }));
    }
}

/// Undoes a failed batch of a partition: removes the segments it created,
/// truncates the active segment to its durable size, and fails its appends.
fn roll_back(w: &mut PartitionWriter, s: Staged) {
    let Some((failed_path, failure)) = s.failure else {
        return;
    };
    warn!(
        partition = w.id,
        path = %failed_path.display(),
        error = %failure,
        "A write failed; rolling the partition back to its last durable state."
    );
    // Remove new segments first: a crash in between then leaves extra
    // unacknowledged records, never a gap.
    let mut undone = true;
    for seg in s.segments.iter().filter(|seg| seg.new) {
        if let Err(e) = std::fs::remove_file(&seg.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            error!(partition = w.id, path = %seg.path.display(), error = %e, "Could not remove a segment of a failed write.");
            undone = false;
        }
    }
    if undone {
        let active = &w.active;
        let truncated = active
            .file
            .set_len(active.size)
            .and_then(|()| active.file.sync_all());
        if let Err(e) = truncated {
            error!(partition = w.id, path = %active.path.display(), error = %e, "Could not truncate a failed write.");
            undone = false;
        }
    }
    if !undone {
        error!(partition = w.id, path = %failed_path.display(), "The partition refuses appends until the stream is reopened.");
        w.poisoned = Some(failed_path.clone());
    }
    for (reply, _, _) in s.replies {
        let _ = reply.send(Err(Error::Io {
            path: failed_path.clone(),
            source: io::Error::new(failure.kind(), failure.to_string()),
        }));
    }
}
