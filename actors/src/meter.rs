//! `MeterActor`: one meter's minute aggregates that no checkpoint has written yet.

use crate::metrics::Metrics;
use actix::prelude::*;
use metron_engine::aggregate::{AggState, Aggregation, SampleValue};
use metron_engine::meter::Meter;
use metron_engine::query::{MeterQuery, RollupRow};
use metron_storage::manifest::{MeterFiles, RollupFile};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// (minute, subject, group-by values)
pub type RollupKey = (i64, String, Vec<String>);

/// Minute states by key: what a partition batch, a meter actor and a compaction
/// accumulate. Folding a sample and merging a state are the only two ways in.
#[derive(Debug, Default)]
pub struct Rollups {
    /// hashbrown with its default hasher (foldhash): a fold looks its key up by
    /// reference ([`KeyRef`]), so a sample of an existing minute allocates nothing.
    states: hashbrown::HashMap<RollupKey, AggState>,
    /// Estimated resident bytes of the states and their keys.
    bytes: usize,
}

/// Resident bytes of one state under its key: the table's slot (key and state inline,
/// counted twice: a table is up to half empty after it grows), the key's strings with
/// the allocator's overhead, and what the state holds on the heap.
fn entry_bytes(key: &RollupKey, state: &AggState) -> usize {
    const MALLOC_OVERHEAD: usize = 16;
    let slot = std::mem::size_of::<RollupKey>() + std::mem::size_of::<AggState>();
    2 * slot
        + key.1.len()
        + MALLOC_OVERHEAD
        + key
            .2
            .iter()
            .map(|g| g.len() + std::mem::size_of::<String>() + MALLOC_OVERHEAD)
            .sum::<usize>()
        + state
            .size_bytes()
            .saturating_sub(std::mem::size_of::<AggState>())
}

impl Rollups {
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Estimated resident bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Folds one event's sample into its minute.
    pub fn fold(
        &mut self,
        key: RollupKey,
        aggregation: Aggregation,
        sample: &SampleValue,
        time_ms: i64,
    ) {
        let (minute_ms, subject, group) = key;
        self.fold_at(minute_ms, &subject, group, aggregation, sample, time_ms);
    }

    /// [`Self::fold`] with the subject borrowed: copied only for a new key.
    pub fn fold_at(
        &mut self,
        minute_ms: i64,
        subject: &str,
        group: Vec<String>,
        aggregation: Aggregation,
        sample: &SampleValue,
        time_ms: i64,
    ) {
        let lookup = KeyRef {
            minute_ms,
            subject,
            group: &group,
        };
        match self.states.get_mut(&lookup) {
            Some(state) => {
                let before = state.size_bytes();
                state.fold(sample, time_ms);
                self.bytes = (self.bytes + state.size_bytes()).saturating_sub(before);
            }
            None => {
                if let Some(state) = AggState::from_sample(aggregation, sample, time_ms) {
                    let key = (minute_ms, subject.to_owned(), group);
                    self.bytes += entry_bytes(&key, &state);
                    self.states.insert(key, state);
                }
            }
        }
    }

    /// Merges a row's state into its key.
    pub fn merge(&mut self, row: RollupRow) {
        let key = (row.minute_ms, row.subject, row.group);
        match self.states.get_mut(&key) {
            Some(state) => {
                let before = state.size_bytes();
                state.merge(&row.state);
                self.bytes = (self.bytes + state.size_bytes()).saturating_sub(before);
            }
            None => {
                self.bytes += entry_bytes(&key, &row.state);
                self.states.insert(key, row.state);
            }
        }
    }

    /// Every state as a row, leaving this empty. The table goes with them: a burst of
    /// subjects would otherwise keep its capacity (11 MB after 100k subjects in one
    /// minute) resident for good.
    pub fn drain_rows(&mut self) -> Vec<RollupRow> {
        self.bytes = 0;
        std::mem::take(&mut self.states)
            .into_iter()
            .map(|((minute_ms, subject, group), state)| RollupRow {
                minute_ms,
                subject,
                group,
                state,
            })
            .collect()
    }

    /// Copies of the rows a predicate admits.
    pub fn rows_where(&self, admit: impl Fn(&RollupRow) -> bool) -> Vec<RollupRow> {
        self.states
            .iter()
            .map(|((minute_ms, subject, group), state)| RollupRow {
                minute_ms: *minute_ms,
                subject: subject.clone(),
                group: group.clone(),
                state: state.clone(),
            })
            .filter(|r| admit(r))
            .collect()
    }

    /// Re-keys every state's group values.
    pub fn regroup(&mut self, remap: impl Fn(&[String]) -> Vec<String>) {
        self.states = self
            .states
            .drain()
            .map(|((m, s, g), st)| ((m, s, remap(&g)), st))
            .collect();
        self.bytes = self.states.iter().map(|(k, s)| entry_bytes(k, s)).sum();
    }
}

/// A [`RollupKey`] by reference. It hashes as the tuple does (the `i64`, then the
/// subject as a `str`, then the group as a slice), so it finds the owned key.
struct KeyRef<'a> {
    minute_ms: i64,
    subject: &'a str,
    group: &'a [String],
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.minute_ms.hash(state);
        self.subject.hash(state);
        self.group.hash(state);
    }
}

impl hashbrown::Equivalent<RollupKey> for KeyRef<'_> {
    fn equivalent(&self, key: &RollupKey) -> bool {
        self.minute_ms == key.0 && self.subject == key.1 && self.group == key.2.as_slice()
    }
}

/// Pre-aggregated rows of one partition batch for one meter.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Fold {
    /// The partition that folded them (see [`Barrier`]).
    pub partition: u32,
    pub rows: Vec<RollupRow>,
    /// The rows' bytes, counted in `live_window_bytes` when sent (so that the partition
    /// sees them before its next read) and released when the message is gone.
    pub reserved: Reservation,
}

/// Bytes counted in `Metrics::live_window_bytes` ahead of the meter actor that will
/// count them itself; released on drop (also when the message is never handled).
pub struct Reservation {
    metrics: Arc<Metrics>,
    bytes: usize,
}

impl Reservation {
    pub fn new(metrics: Arc<Metrics>, bytes: usize) -> Self {
        metrics
            .live_window_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        Self { metrics, bytes }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.metrics
            .live_window_bytes
            .fetch_sub(self.bytes as u64, Ordering::Relaxed);
    }
}

/// Rows recomputed from raw events when a meter is created after its events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Backfill {
    pub rows: Vec<RollupRow>,
}

/// A partition cut its events for the checkpoint of dedup generation `generation`: its
/// folds before this message belong to that checkpoint, its folds after it to the next.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Barrier {
    pub partition: u32,
    pub generation: u64,
}

/// The rows of dedup generation `generation` for checkpoint `epoch`: answered once the
/// barrier of that generation came from every partition.
#[derive(Message)]
#[rtype(result = "Result<Sealed, String>")]
pub struct Seal {
    pub epoch: u64,
    pub generation: u64,
}

pub struct Sealed {
    pub meter: Arc<Meter>,
    pub rows: Arc<Vec<RollupRow>>,
    /// Whether the meter's backfill had arrived: only then do its files hold it whole.
    pub complete: bool,
}

/// Checkpoint `epoch` is durable: drop sealed deltas up to it, read these files instead.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Committed {
    pub epoch: u64,
    pub files: MeterFiles,
}

/// The meter's definition changed (name, group-by keys added).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Redefine {
    pub meter: Arc<Meter>,
}

/// What a query needs from the actor, read atomically: the committed files and the
/// rows not yet in them that the query admits.
#[derive(Message)]
#[rtype(result = "Snapshot")]
pub struct Read {
    pub query: Arc<MeterQuery>,
}

pub struct Snapshot {
    pub meter: Arc<Meter>,
    /// The minute files.
    pub files: Vec<RollupFile>,
    /// The hourly files, when they hold what the minute files hold: a query of whole
    /// hours may read them instead.
    pub hourly: Option<Vec<RollupFile>>,
    pub rows: Vec<RollupRow>,
}

pub struct MeterActor {
    meter: Arc<Meter>,
    group_keys: Vec<String>,
    live: Rollups,
    /// Stream partitions, each of which sends a barrier per checkpoint.
    partitions: u32,
    /// The checkpoint whose barriers are arriving: which partitions passed theirs, and
    /// the rows those partitions folded since (the next checkpoint's).
    aligning: Option<Aligning>,
    /// A Seal that came before the last barrier of its generation.
    waiting: Option<(u64, u64, tokio::sync::oneshot::Sender<Sealed>)>,
    /// Rows sealed into a checkpoint not yet committed: its epoch, the rows, their
    /// estimated bytes and the dedup generation they were aligned for.
    sealed: Vec<(u64, Arc<Vec<RollupRow>>, usize, u64)>,
    files: MeterFiles,
    complete: bool,
    /// The process-wide `live_window_bytes` gauge this actor's live and sealed rows count in.
    metrics: Arc<Metrics>,
    /// What this actor last added to it.
    counted: usize,
}

impl MeterActor {
    /// `complete` is false for a meter that still waits for its backfill.
    pub fn new(
        meter: Arc<Meter>,
        files: MeterFiles,
        complete: bool,
        partitions: u32,
        metrics: Arc<Metrics>,
    ) -> Self {
        let group_keys = meter.group_by.keys().cloned().collect();
        Self {
            meter,
            group_keys,
            live: Rollups::default(),
            partitions,
            aligning: None,
            waiting: None,
            sealed: Vec::new(),
            files,
            complete,
            metrics,
            counted: 0,
        }
    }

    fn merge(&mut self, rows: Vec<RollupRow>) {
        for row in rows {
            self.live.merge(row);
        }
        self.recount();
    }

    /// Brings the gauge up to date with the live and sealed rows' bytes.
    fn recount(&mut self) {
        let now = self.live.bytes()
            + self.aligning.as_ref().map_or(0, |a| a.ahead.bytes())
            + self.sealed.iter().map(|(_, _, b, _)| b).sum::<usize>();
        let gauge = &self.metrics.live_window_bytes;
        if now >= self.counted {
            gauge.fetch_add((now - self.counted) as u64, Ordering::Relaxed);
        } else {
            gauge.fetch_sub((self.counted - now) as u64, Ordering::Relaxed);
        }
        self.counted = now;
    }
}

impl Actor for MeterActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        // A deleted meter's rows leave memory with it.
        self.metrics
            .live_window_bytes
            .fetch_sub(self.counted as u64, Ordering::Relaxed);
        self.counted = 0;
    }
}

impl Handler<Fold> for MeterActor {
    type Result = ();
    fn handle(&mut self, msg: Fold, _: &mut Context<Self>) {
        // Counted by the merge; the reservation is released when `msg.reserved` drops.
        match &mut self.aligning {
            Some(a) if a.passed.contains(&msg.partition) => {
                for row in msg.rows {
                    a.ahead.merge(row);
                }
                self.recount();
            }
            _ => self.merge(msg.rows),
        }
    }
}

impl Handler<Backfill> for MeterActor {
    type Result = ();
    fn handle(&mut self, msg: Backfill, _: &mut Context<Self>) {
        self.merge(msg.rows);
        self.complete = true;
    }
}

/// Barriers of one checkpoint arriving.
struct Aligning {
    generation: u64,
    passed: std::collections::HashSet<u32>,
    /// Rows folded by partitions past their barrier.
    ahead: Rollups,
}

impl Handler<Barrier> for MeterActor {
    type Result = ();
    fn handle(&mut self, msg: Barrier, _: &mut Context<Self>) {
        let aligning = self.aligning.get_or_insert_with(|| Aligning {
            generation: msg.generation,
            passed: Default::default(),
            ahead: Rollups::default(),
        });
        if aligning.generation != msg.generation {
            tracing::error!(meter = %self.meter.slug, aligning = aligning.generation, barrier = msg.generation, "A barrier of another checkpoint came while aligning one.");
            return;
        }
        aligning.passed.insert(msg.partition);
        if aligning.passed.len() < self.partitions as usize {
            return;
        }
        // Every partition passed: the live rows are the checkpoint's, the rows ahead
        // are the next one's.
        let Some(aligned) = self.aligning.take() else {
            return;
        };
        let bytes = self.live.bytes();
        let rows = Arc::new(std::mem::replace(&mut self.live, aligned.ahead).drain_rows());
        self.sealed
            .push((UNASSIGNED_EPOCH, rows, bytes, aligned.generation));
        self.recount();
        if let Some((epoch, generation, reply)) = self.waiting.take() {
            let _ = reply.send(self.assign(epoch, generation));
        }
    }
}

/// The epoch of rows aligned for a checkpoint whose Seal has not come yet.
const UNASSIGNED_EPOCH: u64 = u64::MAX;

impl MeterActor {
    /// Names the checkpoint of the rows aligned for `generation` (and of any aligned
    /// earlier whose Seal never came, so that no aligned row is left out of a file).
    fn assign(&mut self, epoch: u64, generation: u64) -> Sealed {
        let mut rows: Option<Arc<Vec<RollupRow>>> = None;
        for entry in self
            .sealed
            .iter_mut()
            .filter(|(e, _, _, g)| *e == UNASSIGNED_EPOCH && *g <= generation)
        {
            entry.0 = epoch;
            rows = Some(match rows.take() {
                None => entry.1.clone(),
                Some(before) => {
                    let mut all = Vec::with_capacity(before.len() + entry.1.len());
                    all.extend(before.iter().cloned());
                    all.extend(entry.1.iter().cloned());
                    Arc::new(all)
                }
            });
        }
        Sealed {
            meter: self.meter.clone(),
            rows: rows.unwrap_or_default(),
            complete: self.complete,
        }
    }
}

impl Handler<Seal> for MeterActor {
    type Result = ResponseFuture<Result<Sealed, String>>;
    fn handle(&mut self, msg: Seal, _: &mut Context<Self>) -> Self::Result {
        let aligned = self
            .sealed
            .iter()
            .any(|(e, _, _, g)| *e == UNASSIGNED_EPOCH && *g == msg.generation);
        if aligned {
            let sealed = self.assign(msg.epoch, msg.generation);
            return Box::pin(async move { Ok(sealed) });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting = Some((msg.epoch, msg.generation, tx));
        let slug = self.meter.slug.clone();
        Box::pin(async move {
            rx.await
                .map_err(|_| format!("meter {slug} stopped before its barriers came"))
        })
    }
}

impl Handler<Committed> for MeterActor {
    type Result = ();
    fn handle(&mut self, msg: Committed, _: &mut Context<Self>) {
        self.sealed.retain(|(epoch, _, _, _)| *epoch > msg.epoch);
        self.files = msg.files;
        self.recount();
    }
}

impl Handler<Redefine> for MeterActor {
    type Result = ();
    fn handle(&mut self, msg: Redefine, _: &mut Context<Self>) {
        // Group-by keys are only ever added, so existing rows stay valid: a missing
        // value of a new key reads as "".
        let new_keys: Vec<String> = msg.meter.group_by.keys().cloned().collect();
        if new_keys != self.group_keys {
            let positions: Vec<Option<usize>> = new_keys
                .iter()
                .map(|k| self.group_keys.iter().position(|o| o == k))
                .collect();
            let remap = |group: &[String]| -> Vec<String> {
                positions
                    .iter()
                    .map(|p| p.and_then(|i| group.get(i).cloned()).unwrap_or_default())
                    .collect()
            };
            self.live.regroup(remap);
            if let Some(a) = &mut self.aligning {
                a.ahead.regroup(remap);
            }
            self.sealed = self
                .sealed
                .iter()
                .map(|(e, rows, bytes, generation)| {
                    let rows = rows
                        .iter()
                        .map(|r| RollupRow {
                            group: remap(&r.group),
                            ..r.clone()
                        })
                        .collect();
                    (*e, Arc::new(rows), *bytes, *generation)
                })
                .collect();
            self.group_keys = new_keys;
            self.recount();
        }
        self.meter = msg.meter;
    }
}

impl Handler<Read> for MeterActor {
    type Result = MessageResult<Read>;
    fn handle(&mut self, msg: Read, _: &mut Context<Self>) -> Self::Result {
        let keys = &self.group_keys;
        let mut rows = self.live.rows_where(|r| msg.query.admits(keys, r));
        if let Some(a) = &self.aligning {
            rows.extend(a.ahead.rows_where(|r| msg.query.admits(keys, r)));
        }
        for (_, sealed, _, _) in &self.sealed {
            rows.extend(sealed.iter().filter(|r| msg.query.admits(keys, r)).cloned());
        }
        MessageResult(Snapshot {
            meter: self.meter.clone(),
            files: self.files.minute.clone(),
            hourly: self.files.hourly.clone(),
            rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metron_engine::quantity::Quantity;

    // A fold by reference finds the key an owned fold or a merge made: KeyRef hashes as
    // the owned tuple does.
    #[test]
    fn a_borrowed_key_finds_the_owned_one() {
        let mut rollups = Rollups::default();
        let one = SampleValue::Number(Quantity::from_i64(1));
        let group = || vec!["gpt-4".to_owned(), String::new()];
        rollups.fold(
            (60_000, "alice".into(), group()),
            Aggregation::Sum,
            &one,
            60_001,
        );
        for i in 0..10 {
            rollups.fold_at(60_000, "alice", group(), Aggregation::Sum, &one, 60_002 + i);
        }
        rollups.fold_at(60_000, "bob", group(), Aggregation::Sum, &one, 60_003);
        rollups.fold_at(120_000, "alice", group(), Aggregation::Sum, &one, 120_000);
        rollups.fold_at(
            60_000,
            "alice",
            vec!["gpt-4".into()],
            Aggregation::Sum,
            &one,
            60_004,
        );
        let mut rows = rollups.drain_rows();
        rows.sort_by(|a, b| {
            (a.minute_ms, &a.subject, &a.group).cmp(&(b.minute_ms, &b.subject, &b.group))
        });
        let states: Vec<(i64, &str, usize, AggState)> = rows
            .iter()
            .map(|r| {
                (
                    r.minute_ms,
                    r.subject.as_str(),
                    r.group.len(),
                    r.state.clone(),
                )
            })
            .collect();
        let sum = |n: i64| AggState::Sum(Quantity::from_i64(n));
        assert_eq!(
            states,
            vec![
                (60_000, "alice", 1, sum(1)),
                (60_000, "alice", 2, sum(11)),
                (60_000, "bob", 2, sum(1)),
                (120_000, "alice", 2, sum(1)),
            ]
        );
    }
}
