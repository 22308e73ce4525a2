//! On-disk deduplication index.
//!
//! Metron drops duplicate events by key (namespace, source, id) over a dedup
//! horizon. A [`DedupIndex`] (one for all stream partitions) answers "have I seen
//! this key within the horizon?" for batches of keys, holding recent keys in
//! memory and older ones in immutable sorted run files on disk, with memory
//! for filters and keys bounded by [`DedupConfig::memory_budget_bytes`].
//!
//! # Layout
//! * **Memory tier** (`memtier.rs`): a fixed-size hash set of the keys inserted
//!   since the last spill. It is written as a run when it holds
//!   `memory_keys_max` keys and at every checkpoint. A checkpoint freezes it
//!   ([`DedupIndex::rotate`]) and writes it off the insert path while a second
//!   table takes new keys. Should that table fill before the checkpoint is installed, it
//!   is spilled as usual, but that run holds keys from after the checkpoint's moment: the
//!   checkpoint does not name it, and no merge takes it until then.
//! * **Runs** (`run.rs`): `run-<seq>.dat`, keys sorted ascending. Every 256th key
//!   stays in memory as a fence (half a bit per key), so a lookup reads a 1 KiB
//!   window with one `pread` (a second, within the same 4 KiB stretch, when the
//!   key's interpolated place misses).
//! * **Bloom filters** (`bloom.rs`): one per run, in memory only. They and the
//!   fences are *rebuilt from the run on open*, in the same sequential pass that
//!   verifies the run's checksum, so they always fit the budget in force at open.
//!
//! # Memory budget
//! The memory tier's two tables are allocated once and charged up front (at
//! most an eighth of the budget together; `memory_keys_max` is lowered if it would not fit). The
//! rest is the bloom budget; the fences, and during a merge the joined filter of its
//! inputs and the filter and fences its job builds, are taken from it first. A new
//! filter is asked for at 16 bits per key (a power-of-two block count); then, while the
//! filters' sum exceeds what is left, the filter whose halving adds the fewest expected
//! false positives per byte given back is halved (a filter already built is "folded" in
//! place). A new key is looked up in every run, so the sum of the rates is the expected
//! number of disk probes per new key, and this keeps it near its least for the budget:
//! small runs keep many bits per key, large ones give way (as Monkey does for LSM
//! trees). The sum never exceeds the budget, and a bloom "maybe" is always checked on
//! disk, so answers stay exact.
//!
//! # Checkpoints and file lifetime
//! [`DedupIndex::checkpoint`] spills the memory tier, drops expired runs,
//! compacts, fsyncs new files and the directory and returns the
//! [`DedupState`] naming the live runs. A file leaving the live set is
//! deleted at once if no returned state ever named it; if the last returned
//! state (or the state the index was opened from) names it, it is deleted at
//! the checkpoint call *after* the one whose state stopped naming it. The
//! caller must therefore have recorded a returned state durably before it calls
//! `checkpoint` again (on a failed manifest write: reopen from the last durable
//! state instead). [`DedupIndex::open`] deletes run files its state does not
//! name, which makes everything written after that checkpoint invisible.
//!
//! # Compaction
//! Size-tiered within time windows of `horizon / 8` (by a run's last insert
//! time): in the current window, once 4 or more runs share a size tier (tier 0:
//! up to `memory_keys_max` keys, each further tier ×4) they are merged into
//! one; a window that has closed is merged into a single run. By default merges
//! run inside `checkpoint`, and inside `insert_batch` when a spill leaves more
//! than 16 runs. With [`DedupConfig::background_merges`] the owner runs them on a
//! thread of its own: [`DedupIndex::plan_merge`] takes the runs out of the live
//! list into a merge that lookups (through one filter joining theirs) and
//! checkpoints still see; [`MergeJob::run`] writes the merged run without the
//! index; [`DedupIndex::install_merge`] puts it in their place. Either way one
//! merge is under way at a time. A merged run keeps the min first and max last insert time, so expiry
//! (whole runs, `last_insert_ms < now - horizon`) keeps a key at most about one
//! window (plus one checkpoint interval) past the horizon, never less.
//!
//! # Errors
//! Any error from `insert_batch` or `checkpoint` poisons the index (it may have
//! recorded part of a batch); later calls return [`Error::Poisoned`] and the
//! owner reopens from its last checkpoint state and replays.

mod bloom;
mod memtier;
mod run;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use xxhash_rust::xxh3::{Xxh3Default, xxh3_128};

use bloom::{Bloom, Planned, fit_to_budget};
use memtier::{MemTier, Probe};
use run::{Run, RunSource, RunWriter, fence_bytes};

/// A dedup key: a 128-bit hash of (namespace, source, id).
pub type Key = u128;

/// 128-bit xxh3 of namespace, source and id, each prefixed by its length
/// (u64 LE), so ("a", "bc") and ("ab", "c") hash differently.
pub fn dedup_key(namespace: &str, source: &str, id: &str) -> Key {
    const INLINE: usize = 256;
    let parts = [namespace, source, id];
    let total = 3 * 8 + namespace.len() + source.len() + id.len();
    if total <= INLINE {
        let mut buf = [0u8; INLINE];
        let mut n = 0;
        for part in parts {
            buf[n..n + 8].copy_from_slice(&(part.len() as u64).to_le_bytes());
            n += 8;
            buf[n..n + part.len()].copy_from_slice(part.as_bytes());
            n += part.len();
        }
        xxh3_128(&buf[..n])
    } else {
        let mut hasher = Xxh3Default::new();
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.digest128()
    }
}

/// The checksum of the keys of the run file at `path` ([`RunMeta::checksum`]), from its
/// header: whether a local file is the run a checkpoint names, without reading its keys.
pub fn run_checksum(path: &Path) -> Result<u64> {
    run::checksum_of(path)
}

/// Errors of the dedup index.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("dedup index i/o error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt dedup run {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("dedup run {} named by the checkpoint state is missing", path.display())]
    MissingRun { path: PathBuf },
    #[error("invalid dedup checkpoint state: {reason}")]
    InvalidState { reason: String },
    #[error("dedup directory is in use by another index (lock {} is held)", path.display())]
    Locked { path: PathBuf },
    #[error(
        "dedup index is poisoned by an earlier error; reopen it from the last checkpoint state"
    )]
    Poisoned,
}

impl Error {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Configuration of a [`DedupIndex`].
#[derive(Debug, Clone)]
pub struct DedupConfig {
    /// How long a key stays a duplicate (default 35 days). Keys expire with
    /// whole runs, so a key may stay a duplicate somewhat longer, never shorter.
    pub horizon_ms: i64,
    /// Bound on the memory tier, bloom filters and fences (default 64 MiB; at least
    /// 64 KiB is used).
    pub memory_budget_bytes: usize,
    /// The memory tier is spilled to a run when it holds this many keys
    /// (default 1 000 000; lowered if the two tables would take over an eighth of the
    /// budget).
    pub memory_keys_max: usize,
    /// `false` (default): inserts and checkpoints merge runs themselves, holding the index.
    /// `true`: they never merge; the owner runs [`DedupIndex::plan_merge`], [`MergeJob::run`]
    /// (on a thread of its own, without the index) and [`DedupIndex::install_merge`].
    pub background_merges: bool,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            horizon_ms: 35 * 24 * 60 * 60 * 1000,
            memory_budget_bytes: 64 << 20,
            memory_keys_max: 1_000_000,
            background_merges: false,
        }
    }
}

/// A run file recorded in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMeta {
    pub file_name: String,
    pub keys: u64,
    pub first_insert_ms: i64,
    pub last_insert_ms: i64,
    /// The checksum of the run's keys (its header's body checksum): a copy of the run
    /// elsewhere (the object store) is the same run when this matches. `None` in states
    /// recorded before it was; the index fills it in when it opens the run.
    pub checksum: Option<u64>,
}

/// What a checkpoint records about the index: the run files that make it up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DedupState {
    pub runs: Vec<RunMeta>,
}

/// A frozen memory tier to write as a run: see [`DedupIndex::rotate`]. Runs on any
/// thread, without the index.
pub struct SpillJob {
    tier: Arc<MemTier>,
    /// The run's path, sequence number and bloom filter (none when the tier is empty).
    run: Option<(PathBuf, u64, Bloom)>,
}

/// What a [`SpillJob`] wrote, for [`DedupIndex::install`].
pub struct Spilled {
    run: Option<Run>,
    tier: Arc<MemTier>,
}

impl SpillJob {
    /// Sorts a copy of the tier's keys and writes them as a run, fsynced.
    pub fn write(self) -> Result<Spilled> {
        let SpillJob { tier, run } = self;
        let Some((path, seq, bloom)) = run else {
            return Ok(Spilled { run: None, tier });
        };
        let mut writer = RunWriter::create(path, bloom)?;
        for key in tier.sorted_keys() {
            writer.push(key)?;
        }
        let mut run = writer.finish(seq, tier.first_ms(), tier.last_ms())?;
        run.sync()?;
        Ok(Spilled {
            run: Some(run),
            tier,
        })
    }
}

/// Runs being merged. They have left `runs` but are still looked up (through one filter that
/// joins theirs, so that the merged run's filter fits the budget meanwhile) and named by
/// checkpoints, until the merged run is installed.
struct Merging {
    inputs: Vec<Run>,
    union: Bloom,
    /// The sequence number of the job merging them (`None`: the last job failed, and the next
    /// [`DedupIndex::plan_merge`] retries).
    job: Option<u64>,
    /// The memory the job's filter and fences take, reserved from the budget until install.
    job_bytes: usize,
}

/// A merge of runs to write on any thread, without the index: see
/// [`DedupIndex::plan_merge`].
pub struct MergeJob {
    sources: Vec<RunSource>,
    path: PathBuf,
    seq: u64,
    first_ms: i64,
    last_ms: i64,
    bloom: Bloom,
}

/// What a [`MergeJob`] wrote, for [`DedupIndex::install_merge`].
pub struct Merged {
    run: Run,
}

impl MergeJob {
    /// The job's number, for [`DedupIndex::merge_failed`].
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Merges the runs into a new file (fsynced; it takes its run file name at install).
    pub fn run(self) -> Result<Merged> {
        let MergeJob {
            sources,
            path,
            seq,
            first_ms,
            last_ms,
            bloom,
        } = self;
        let merged = RunWriter::create(path.clone(), bloom)
            .and_then(|writer| run::merge(&sources, writer, seq, first_ms, last_ms))
            .and_then(|mut run| run.sync().map(|()| run));
        match merged {
            Ok(run) => {
                tracing::debug!(
                    inputs = sources.len(),
                    keys = run.meta.keys,
                    "dedup runs merged"
                );
                Ok(Merged { run })
            }
            Err(error) => {
                remove_logged(&path);
                Err(error)
            }
        }
    }
}

/// Counters and sizes of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DedupStats {
    pub keys_in_memory: u64,
    /// Bytes held by the memory tier's table (allocated once, constant).
    pub memory_bytes: usize,
    pub runs: u64,
    pub keys_on_disk: u64,
    pub bloom_bytes: usize,
    /// The budget in force (`memory_budget_bytes`, at least 64 KiB).
    /// `memory_bytes + bloom_bytes <= budget_bytes` always.
    pub budget_bytes: usize,
    /// Run probes that went to disk (bloom said "maybe").
    pub disk_lookups: u64,
    /// `pread` calls made by those probes.
    pub disk_reads: u64,
    /// Disk probes that did not find the key.
    pub bloom_false_positives: u64,
    pub spills: u64,
    pub compactions: u64,
}

/// The smallest budget used, whatever is configured.
const MIN_BUDGET: usize = 64 << 10;
/// Runs of the same size tier merged together.
const FANOUT: usize = 4;
/// Compaction windows per horizon.
const WINDOWS_PER_HORIZON: i64 = 8;
/// Above this many runs a spill compacts at once rather than waiting for the
/// next checkpoint.
const SPILL_COMPACTION_RUNS: usize = 4 * FANOUT;
const LOCK_FILE: &str = "LOCK";

/// Memory split derived from a config.
#[derive(Debug, Clone, Copy)]
struct Sizing {
    budget: usize,
    mem_keys_max: usize,
    bloom_budget: usize,
}

impl Sizing {
    fn new(config: &DedupConfig) -> Self {
        let budget = config.memory_budget_bytes.max(MIN_BUDGET);
        // Two tables (the live one and the one a checkpoint writes, see `rotate`)
        // within an eighth of the budget: the rest goes to filters, whose bits per key
        // decide how many lookups read a file. At high rates checkpoints spill the
        // table long before it fills, so a larger one would buy little.
        let table_slots = budget / 16 / size_of::<Key>();
        // Largest power of two not above a sixteenth of the budget, in slots.
        let max_slots = 1usize << (usize::BITS - 1 - table_slots.leading_zeros());
        let mem_keys_max = config.memory_keys_max.clamp(1, max_slots / 4 * 3);
        let mem_bytes = 2 * MemTier::slots_for(mem_keys_max) * size_of::<Key>();
        Self {
            budget,
            mem_keys_max,
            bloom_budget: budget - mem_bytes,
        }
    }
}

/// The on-disk dedup index the stream's partitions share. See the module docs.
pub struct DedupIndex {
    dir: PathBuf,
    config: DedupConfig,
    sizing: Sizing,
    mem: MemTier,
    /// The memory tier a [`DedupIndex::rotate`] froze: still a set of keys for lookups
    /// while its [`SpillJob`] writes it, until [`DedupIndex::install`].
    sealing: Option<Arc<MemTier>>,
    /// Rotations so far: the keys of an `insert_batch` belong to the checkpoint that
    /// the next rotation begins.
    generation: u64,
    /// A tier written by its job, kept for the next rotation (so the two tables are
    /// allocated once).
    spare: Option<MemTier>,
    /// Live runs ordered by (last_insert_ms, seq): lookups go newest first.
    runs: Vec<Run>,
    /// Live runs a merge is rewriting as one.
    merging: Option<Merging>,
    next_seq: u64,
    /// Files named by the last returned state (or the state opened from).
    named: HashSet<String>,
    /// Named files that left the live set since the last checkpoint.
    retired_named: Vec<PathBuf>,
    /// Runs spilled while a rotated tier waits for [`DedupIndex::install`] (their seqs): they
    /// hold keys inserted after the rotation, so the checkpoint that rotation began must not
    /// name them (a replay from it would drop those keys' events as duplicates), nor may they
    /// be merged with runs it names until it is installed. The next checkpoint names them.
    after_cut: Vec<u64>,
    /// Files the last checkpoint stopped naming: deleted at the next one.
    deferred: Vec<PathBuf>,
    dir_dirty: bool,
    poisoned: bool,
    counters: Counters,
    /// Holds an exclusive lock on `dir/LOCK` while the index is open.
    _lock: File,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    disk_lookups: u64,
    disk_reads: u64,
    bloom_false_positives: u64,
    spills: u64,
    compactions: u64,
}

impl std::fmt::Debug for DedupIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupIndex")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .field("stats", &self.stats())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl DedupIndex {
    /// Opens the index in `dir` (created if missing) from a checkpoint's state
    /// (`None` = empty). Every run the state names is verified in full
    /// (length, header and body checksums, key order, agreement with the
    /// state) and its bloom filter rebuilt; a bad one is [`Error::Corrupt`]
    /// (or [`Error::MissingRun`]) and nothing is deleted. Otherwise run files in
    /// `dir` that `state` does not name are deleted: they were written after
    /// that checkpoint.
    pub fn open(dir: &Path, config: DedupConfig, state: Option<&DedupState>) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock = lock_dir(dir)?;
        let empty = DedupState::default();
        let state = state.unwrap_or(&empty);

        let mut named = HashSet::with_capacity(state.runs.len());
        let mut metas = Vec::with_capacity(state.runs.len());
        for meta in &state.runs {
            let seq = run::parse_file_name(&meta.file_name).ok_or_else(|| Error::InvalidState {
                reason: format!("{:?} is not a run file name", meta.file_name),
            })?;
            if !named.insert(meta.file_name.clone()) {
                return Err(Error::InvalidState {
                    reason: format!("run {:?} is named twice", meta.file_name),
                });
            }
            metas.push((seq, meta));
        }

        let mut on_disk = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Some(seq) = run::parse_file_name(&name) {
                on_disk.push((seq, name));
            } else if run::is_merge_file(&name) {
                remove_logged(&dir.join(&name));
            }
        }
        let next_seq = on_disk
            .iter()
            .map(|(seq, _)| *seq)
            .chain(metas.iter().map(|(seq, _)| *seq))
            .max()
            .map_or(0, |max| max.saturating_add(1));

        let sizing = Sizing::new(&config);
        let total_keys: u64 = metas.iter().map(|(_, m)| m.keys).sum();
        let fences = metas.iter().fold(0usize, |sum, (_, m)| {
            sum.saturating_add(fence_bytes(m.keys))
        });
        let mut plan: Vec<Planned> = metas
            .iter()
            .map(|(_, m)| Planned::new_filter(m.keys))
            .collect();
        fit_to_budget(&mut plan, sizing.bloom_budget.saturating_sub(fences));
        let mut runs = Vec::with_capacity(metas.len());
        for ((seq, meta), planned) in metas.iter().zip(&plan) {
            runs.push(Run::open(dir, meta, *seq, planned.blocks)?);
        }
        runs.sort_by_key(|r| (r.meta.last_insert_ms, r.seq));

        let mut deleted = 0usize;
        for (_, name) in on_disk.iter().filter(|(_, name)| !named.contains(name)) {
            let path = dir.join(name);
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            deleted += 1;
        }
        if deleted > 0 {
            sync_dir(dir)?;
        }
        tracing::info!(
            dir = %dir.display(),
            runs = runs.len(),
            keys_on_disk = total_keys,
            deleted_unnamed_runs = deleted,
            "opened dedup index"
        );
        Ok(Self {
            dir: dir.to_path_buf(),
            mem: MemTier::new(sizing.mem_keys_max),
            sealing: None,
            generation: 0,
            spare: None,
            config,
            sizing,
            runs,
            merging: None,
            next_seq,
            named,
            retired_named: Vec::new(),
            after_cut: Vec::new(),
            deferred: Vec::new(),
            dir_dirty: false,
            poisoned: false,
            counters: Counters::default(),
            _lock: lock,
        })
    }

    /// For each key in order: `true` if it is new (and records it at
    /// `now_ms`), `false` if it was seen within the horizon (including earlier
    /// in the same slice).
    pub fn insert_batch(&mut self, keys: &[Key], now_ms: i64) -> Result<Vec<bool>> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let result = self.insert_batch_inner(keys, now_ms);
        self.poisoned = result.is_err();
        result
    }

    fn insert_batch_inner(&mut self, keys: &[Key], now_ms: i64) -> Result<Vec<bool>> {
        let cutoff = self.cutoff(now_ms);
        self.expire_memory(cutoff);
        let mut out = Vec::with_capacity(keys.len());
        for (i, &key) in keys.iter().enumerate() {
            if let Some(&ahead) = keys.get(i + PREFETCH_AHEAD) {
                self.prefetch(ahead, cutoff);
            }
            let Probe::Vacant(slot) = self.mem.probe(key) else {
                out.push(false);
                continue;
            };
            if self
                .sealing
                .as_ref()
                .is_some_and(|t| matches!(t.probe(key), Probe::Present))
                || in_runs(&self.runs, key, cutoff, &mut self.counters)?
                || in_merging(self.merging.as_ref(), key, &mut self.counters)?
            {
                out.push(false);
                continue;
            }
            self.mem.insert_vacant(slot, key, now_ms);
            out.push(true);
            if self.mem.is_full() {
                self.spill()?;
                if !self.config.background_merges && self.runs.len() > SPILL_COMPACTION_RUNS {
                    self.compact(now_ms)?;
                }
            }
        }
        Ok(out)
    }

    /// Brings into the cache what a lookup of `key` will read in memory: its slot in the
    /// memory tables and its block in each filter it will be checked against.
    #[inline]
    fn prefetch(&self, key: Key, cutoff: i64) {
        self.mem.prefetch(key);
        if let Some(sealing) = &self.sealing {
            sealing.prefetch(key);
        }
        for run in &self.runs {
            if run.meta.last_insert_ms >= cutoff && run.in_range(key) {
                run.bloom.prefetch(key);
            }
        }
        if let Some(m) = &self.merging {
            m.union.prefetch(key);
        }
    }

    /// Makes everything inserted so far durable as run files (fsynced, and the
    /// directory fsynced) and returns the state to record in the checkpoint
    /// manifest. Also drops runs older than the horizon and compacts. Files
    /// the previously returned state names but this one does not are deleted
    /// by the *next* call.
    pub fn checkpoint(&mut self, now_ms: i64) -> Result<DedupState> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let result = self.checkpoint_inner(now_ms);
        self.poisoned = result.is_err();
        result
    }

    fn checkpoint_inner(&mut self, now_ms: i64) -> Result<DedupState> {
        if self.sealing.is_some() {
            return Err(Error::InvalidState {
                reason: "a rotated memory tier is not installed yet".into(),
            });
        }
        self.expire_memory(self.cutoff(now_ms));
        self.spill()?;
        self.finish_checkpoint(now_ms)
    }

    /// The checkpoint in two steps, so that inserts wait for neither the sorting nor
    /// the writing of the memory tier: `rotate` (cheap, under the caller's lock, at the
    /// moment the checkpoint describes) freezes the memory tier and starts an empty
    /// one; [`SpillJob::write`] writes the frozen tier as a run (no lock: it shares
    /// nothing mutable with the index); [`Self::install`] adds the run and returns the
    /// state, which describes exactly the keys inserted before the rotation. Keys
    /// inserted after it stay in memory for the next checkpoint.
    pub fn rotate(&mut self, now_ms: i64) -> Result<SpillJob> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if self.sealing.is_some() {
            self.poisoned = true;
            return Err(Error::InvalidState {
                reason: "a rotated memory tier is not installed yet".into(),
            });
        }
        self.expire_memory(self.cutoff(now_ms));
        let fresh = self
            .spare
            .take()
            .unwrap_or_else(|| MemTier::new(self.sizing.mem_keys_max));
        let frozen = Arc::new(std::mem::replace(&mut self.mem, fresh));
        let keys = frozen.len() as u64;
        let run = (keys > 0).then(|| {
            let bloom = self.new_bloom(keys);
            let seq = self.alloc_seq();
            (self.dir.join(run::file_name(seq)), seq, bloom)
        });
        self.sealing = Some(frozen.clone());
        self.generation += 1;
        Ok(SpillJob { tier: frozen, run })
    }

    /// How many times [`Self::rotate`] ran since the index was opened: keys inserted
    /// now are in the state of the rotation after this many.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Adds what a [`SpillJob`] wrote and completes the checkpoint it began.
    pub fn install(&mut self, spilled: Spilled, now_ms: i64) -> Result<DedupState> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let result = self.install_inner(spilled, now_ms);
        self.poisoned = result.is_err();
        result
    }

    fn install_inner(&mut self, spilled: Spilled, now_ms: i64) -> Result<DedupState> {
        let Spilled { run, tier } = spilled;
        let frozen = self.sealing.take().ok_or_else(|| Error::InvalidState {
            reason: "no rotated memory tier to install".into(),
        })?;
        if !Arc::ptr_eq(&frozen, &tier) {
            return Err(Error::InvalidState {
                reason: "the spilled tier is not the rotated one".into(),
            });
        }
        drop(frozen);
        if let Some(run) = run {
            tracing::debug!(file = %run.meta.file_name, keys = run.meta.keys, "dedup memory tier spilled");
            self.insert_run(run);
            self.counters.spills += 1;
        }
        if let Ok(mut tier) = Arc::try_unwrap(tier) {
            tier.reset();
            self.spare = Some(tier);
        }
        let state = self.finish_checkpoint(now_ms);
        // Past the cut now: the next checkpoint names them.
        self.after_cut.clear();
        state
    }

    fn finish_checkpoint(&mut self, now_ms: i64) -> Result<DedupState> {
        // The previous call's state stopped naming these; the caller has
        // recorded that state since, so nothing can point to them any more.
        for path in std::mem::take(&mut self.deferred) {
            remove_logged(&path);
            self.dir_dirty = true;
        }
        let cutoff = self.cutoff(now_ms);
        let (expired, live): (Vec<Run>, Vec<Run>) = std::mem::take(&mut self.runs)
            .into_iter()
            .partition(|r| r.meta.last_insert_ms < cutoff);
        self.runs = live;
        for run in expired {
            tracing::debug!(file = %run.meta.file_name, last_insert_ms = run.meta.last_insert_ms, "dedup run expired");
            self.retire(run);
        }
        if !self.config.background_merges {
            self.compact(now_ms)?;
        }
        let merging = self.merging.iter_mut().flat_map(|m| m.inputs.iter_mut());
        for run in self.runs.iter_mut().chain(merging) {
            if !run.synced {
                run.sync()?;
                self.dir_dirty = true;
            }
        }
        if self.dir_dirty {
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        let state = DedupState {
            runs: self
                .live_runs()
                .filter(|r| !self.after_cut.contains(&r.seq))
                .map(|r| r.meta.clone())
                .collect(),
        };
        self.named = state.runs.iter().map(|m| m.file_name.clone()).collect();
        self.deferred = std::mem::take(&mut self.retired_named);
        tracing::debug!(
            runs = state.runs.len(),
            deferred_deletions = self.deferred.len(),
            "dedup checkpoint"
        );
        Ok(state)
    }

    /// Records every key `other` holds on disk, each at its run's last insert time,
    /// so it expires no sooner than it would have in `other`. Used once, to fold the
    /// per-partition indexes of older checkpoints into one index for every partition.
    pub fn absorb(&mut self, mut other: DedupIndex) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let result = self.absorb_inner(&mut other);
        self.poisoned = result.is_err();
        result
    }

    fn absorb_inner(&mut self, other: &mut DedupIndex) -> Result<()> {
        const BATCH: usize = 64 * 1024;
        let mut keys = Vec::with_capacity(BATCH);
        for run in &other.runs {
            let mut reader = run.reader();
            loop {
                let next = reader.next_key()?;
                if let Some(key) = next {
                    keys.push(key);
                }
                if keys.len() == BATCH || (next.is_none() && !keys.is_empty()) {
                    self.insert_batch_inner(&keys, run.meta.last_insert_ms)?;
                    keys.clear();
                }
                if next.is_none() {
                    break;
                }
            }
        }
        // An index opened from a checkpoint's state holds nothing in memory; keys
        // inserted since (not yet spilled) carry no time of their own.
        if other.mem.len() > 0 {
            let last_ms = other.mem.last_ms();
            let keys = other.mem.sort_for_spill().to_vec();
            self.insert_batch_inner(&keys, last_ms)?;
        }
        Ok(())
    }

    pub fn stats(&self) -> DedupStats {
        DedupStats {
            keys_in_memory: self.mem.len() as u64,
            memory_bytes: self.mem.bytes()
                + self.sealing.as_ref().map_or(0, |t| t.bytes())
                + self.spare.as_ref().map_or(0, MemTier::bytes),
            runs: self.live_runs().count() as u64,
            keys_on_disk: self.keys_on_disk(),
            bloom_bytes: self.filter_bytes(),
            budget_bytes: self.sizing.budget,
            disk_lookups: self.counters.disk_lookups,
            disk_reads: self.counters.disk_reads,
            bloom_false_positives: self.counters.bloom_false_positives,
            spills: self.counters.spills,
            compactions: self.counters.compactions,
        }
    }

    fn keys_on_disk(&self) -> u64 {
        self.live_runs().map(|r| r.meta.keys).sum()
    }

    /// Every run a checkpoint names: the live ones and those being merged.
    fn live_runs(&self) -> impl Iterator<Item = &Run> {
        let merging = self.merging.iter().flat_map(|m| m.inputs.iter());
        self.runs.iter().chain(merging)
    }

    /// Memory outside the memory tier: filters, fences, a merge's joined filter and what its
    /// job reserved.
    fn filter_bytes(&self) -> usize {
        let merging = self
            .merging
            .as_ref()
            .map_or(0, |m| m.union.bytes() + m.job_bytes);
        self.live_runs()
            .map(|r| r.bloom.bytes() + r.fence_bytes())
            .sum::<usize>()
            + merging
    }

    /// Insert times below this are past the horizon.
    fn cutoff(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.config.horizon_ms.max(0))
    }

    /// Forgets the memory tier if all of it is past the horizon.
    fn expire_memory(&mut self, cutoff: i64) {
        if self.mem.len() > 0 && self.mem.last_ms() < cutoff {
            self.mem.reset();
        }
    }

    fn alloc_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// A bloom filter for a new run of `keys` keys, after folding existing
    /// filters so that all of them, the new one included, fit the budget (the new one is
    /// asked for at the most bits per key worth having; `fit_to_budget` says who gives way).
    fn new_bloom(&mut self, keys: u64) -> Bloom {
        // Fences, the merge's joined filter and its job's reservation are not foldable: the
        // filters share what they leave.
        let fixed = self.live_runs().map(Run::fence_bytes).sum::<usize>()
            + fence_bytes(keys)
            + self
                .merging
                .as_ref()
                .map_or(0, |m| m.union.bytes() + m.job_bytes);
        let budget = self.sizing.bloom_budget.saturating_sub(fixed);
        let mut plan: Vec<Planned> = self
            .runs
            .iter()
            .map(|r| Planned {
                keys: r.meta.keys,
                blocks: r.bloom.blocks(),
                k: Some(r.bloom.k()),
            })
            .collect();
        plan.push(Planned::new_filter(keys));
        fit_to_budget(&mut plan, budget);
        for (run, planned) in self.runs.iter_mut().zip(&plan) {
            while run.bloom.blocks() > planned.blocks {
                run.bloom.fold();
            }
        }
        Bloom::new(plan.last().map_or(0, |p| p.blocks), keys)
    }

    fn insert_run(&mut self, run: Run) {
        let at = self.runs.partition_point(|r| {
            (r.meta.last_insert_ms, r.seq) < (run.meta.last_insert_ms, run.seq)
        });
        self.runs.insert(at, run);
    }

    /// Writes the memory tier as a run (not fsynced until the checkpoint).
    pub(crate) fn spill(&mut self) -> Result<()> {
        let n = self.mem.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let bloom = self.new_bloom(n);
        let seq = self.alloc_seq();
        let path = self.dir.join(run::file_name(seq));
        let (first_ms, last_ms) = (self.mem.first_ms(), self.mem.last_ms());
        let mut writer = RunWriter::create(path, bloom)?;
        for &key in self.mem.sort_for_spill() {
            writer.push(key)?;
        }
        let run = writer.finish(seq, first_ms, last_ms)?;
        self.mem.reset();
        if self.sealing.is_some() {
            self.after_cut.push(seq);
        }
        tracing::debug!(file = %run.meta.file_name, keys = n, "dedup memory tier spilled");
        self.insert_run(run);
        self.counters.spills += 1;
        Ok(())
    }

    /// Removes a run from use: deletes its file now if no returned state
    /// names it, else after the next checkpoint.
    fn retire(&mut self, run: Run) {
        if self.named.contains(&run.meta.file_name) {
            self.retired_named.push(run.path);
        } else {
            remove_logged(&run.path);
            self.dir_dirty = true;
        }
    }

    /// Merges runs until the policy finds nothing to merge.
    fn compact(&mut self, now_ms: i64) -> Result<()> {
        while let Some(job) = self.plan_merge_inner(now_ms)? {
            let merged = job.run()?;
            self.install_merge_inner(merged)?;
        }
        Ok(())
    }

    /// The next merge the policy wants (see the module docs), if none is under way: its
    /// runs leave the live list for a `Merging` that lookups and checkpoints still see.
    /// The caller runs the job (on any thread, without the index) and hands the result to
    /// [`Self::install_merge`], or reports its failure to [`Self::merge_failed`].
    pub fn plan_merge(&mut self, now_ms: i64) -> Result<Option<MergeJob>> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let result = self.plan_merge_inner(now_ms);
        self.poisoned = result.is_err();
        result
    }

    fn plan_merge_inner(&mut self, now_ms: i64) -> Result<Option<MergeJob>> {
        match &self.merging {
            Some(m) if m.job.is_some() => return Ok(None),
            Some(_) => {} // the last job failed: try again
            None => {
                let Some(mut indices) = self.pick_compaction(now_ms) else {
                    return Ok(None);
                };
                indices.sort_unstable();
                let mut inputs: Vec<Run> =
                    indices.iter().rev().map(|&i| self.runs.remove(i)).collect();
                let filters = inputs
                    .iter_mut()
                    .map(|r| std::mem::replace(&mut r.bloom, Bloom::none()))
                    .collect();
                self.merging = Some(Merging {
                    inputs,
                    union: Bloom::union(filters),
                    job: None,
                    job_bytes: 0,
                });
            }
        }
        let (keys, first_ms, last_ms, sources) = {
            let Some(m) = &self.merging else {
                return Ok(None);
            };
            let sources = m
                .inputs
                .iter()
                .map(Run::source)
                .collect::<Result<Vec<_>>>()?;
            (
                m.inputs.iter().map(|r| r.meta.keys).sum::<u64>(),
                m.inputs.iter().map(|r| r.meta.first_insert_ms).min(),
                m.inputs.iter().map(|r| r.meta.last_insert_ms).max(),
                sources,
            )
        };
        let bloom = self.new_bloom(keys);
        let seq = self.alloc_seq();
        let job_bytes = bloom.bytes() + fence_bytes(keys);
        if let Some(m) = &mut self.merging {
            m.job = Some(seq);
            m.job_bytes = job_bytes;
        }
        Ok(Some(MergeJob {
            sources,
            path: self.dir.join(run::merge_file_name(seq)),
            seq,
            first_ms: first_ms.unwrap_or(0),
            last_ms: last_ms.unwrap_or(0),
            bloom,
        }))
    }

    /// Replaces the merged runs by the run a [`MergeJob`] wrote. Their files are deleted as
    /// any retired run's are (see the module docs).
    pub fn install_merge(&mut self, merged: Merged) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let result = self.install_merge_inner(merged);
        self.poisoned = result.is_err();
        result
    }

    fn install_merge_inner(&mut self, merged: Merged) -> Result<()> {
        let Merged { mut run } = merged;
        let Some(m) = self.merging.take_if(|m| m.job == Some(run.seq)) else {
            remove_logged(&run.path);
            return Err(Error::InvalidState {
                reason: format!("no merge under way wrote {}", run.path.display()),
            });
        };
        run.rename(self.dir.join(&run.meta.file_name))?;
        self.dir_dirty = true;
        tracing::debug!(
            inputs = m.inputs.len(),
            keys = run.meta.keys,
            file = %run.meta.file_name,
            "dedup merge installed"
        );
        self.insert_run(run);
        for input in m.inputs {
            self.retire(input);
        }
        self.counters.compactions += 1;
        Ok(())
    }

    /// The job of this sequence number failed (its output is deleted): its runs stay under
    /// merge, still looked up, and the next [`Self::plan_merge`] tries again.
    pub fn merge_failed(&mut self, seq: u64) {
        if let Some(m) = &mut self.merging
            && m.job == Some(seq)
        {
            m.job = None;
            m.job_bytes = 0;
        }
    }

    /// Indices of runs to merge next, if any (see the module docs).
    fn pick_compaction(&self, now_ms: i64) -> Option<Vec<usize>> {
        let window_ms = (self.config.horizon_ms / WINDOWS_PER_HORIZON).max(1);
        let current = now_ms.div_euclid(window_ms);
        let cutoff = self.cutoff(now_ms);
        let base = self.mem.max_keys() as u64;
        let mut groups: BTreeMap<(i64, u32), Vec<usize>> = BTreeMap::new();
        for (i, run) in self.runs.iter().enumerate() {
            if run.meta.last_insert_ms < cutoff {
                continue; // expired: dropped at the next checkpoint, not merged
            }
            if self.after_cut.contains(&run.seq) {
                continue; // not to be mixed with what the pending checkpoint names
            }
            let window = run.meta.last_insert_ms.div_euclid(window_ms);
            let tier = if window < current {
                u32::MAX // closed window: one group
            } else {
                size_tier(run.meta.keys, base)
            };
            groups.entry((window, tier)).or_default().push(i);
        }
        groups
            .into_iter()
            .filter(|((_, tier), runs)| runs.len() >= if *tier == u32::MAX { 2 } else { FANOUT })
            .map(|(_, runs)| runs)
            .min_by_key(|runs| runs.iter().map(|&i| self.runs[i].meta.keys).sum::<u64>())
    }
}

/// Whether a live run (newest first) holds `key`.
fn in_runs(runs: &[Run], key: Key, cutoff: i64, counters: &mut Counters) -> Result<bool> {
    for run in runs.iter().rev() {
        if run.meta.last_insert_ms < cutoff || !run.in_range(key) || !run.bloom.may_contain(key) {
            continue;
        }
        counters.disk_lookups += 1;
        if run.contains(key, &mut counters.disk_reads)? {
            return Ok(true);
        }
        counters.bloom_false_positives += 1;
    }
    Ok(false)
}

/// Whether runs under merge hold `key`: their joined filter first, then each file.
fn in_merging(merging: Option<&Merging>, key: Key, counters: &mut Counters) -> Result<bool> {
    let Some(m) = merging else {
        return Ok(false);
    };
    if !m.union.may_contain(key) {
        return Ok(false);
    }
    for run in m.inputs.iter().filter(|r| r.in_range(key)) {
        counters.disk_lookups += 1;
        if run.contains(key, &mut counters.disk_reads)? {
            return Ok(true);
        }
        counters.bloom_false_positives += 1;
    }
    Ok(false)
}

/// How many keys ahead a batch's lookups prefetch (see [`DedupIndex::prefetch`]): enough
/// for the memory reads of several keys to overlap, few enough that the lines are still in
/// the cache when their key's turn comes.
const PREFETCH_AHEAD: usize = 4;

/// 0 for runs up to `base` keys, then one more per factor of `FANOUT`.
fn size_tier(keys: u64, base: u64) -> u32 {
    let mut tier = 0;
    let mut cap = base.max(1);
    while keys > cap {
        tier += 1;
        cap = cap.saturating_mul(FANOUT as u64);
    }
    tier
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Deletes a file no state can need any more. Failure only leaks the file
/// until the next `open` (which deletes unnamed runs), so it is logged.
fn remove_logged(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not delete dedup run"),
    }
}
