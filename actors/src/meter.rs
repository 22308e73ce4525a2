//! `MeterActor`: one meter's minute aggregates that no checkpoint has written yet.

use crate::metrics::Metrics;
use actix::prelude::*;
use metron_engine::aggregate::{AggState, Aggregation, SampleValue};
use metron_engine::meter::Meter;
use metron_engine::query::{MeterQuery, RollupRow};
use metron_storage::manifest::RollupFile;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// (minute, subject, group-by values)
pub type RollupKey = (i64, String, Vec<String>);

/// Minute states by key: what a partition batch, a meter actor and a compaction
/// accumulate. Folding a sample and merging a state are the only two ways in.
#[derive(Debug, Default)]
pub struct Rollups {
    states: HashMap<RollupKey, AggState>,
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
        match self.states.get_mut(&key) {
            Some(state) => {
                let before = state.size_bytes();
                state.fold(sample, time_ms);
                self.bytes = (self.bytes + state.size_bytes()).saturating_sub(before);
            }
            None => {
                if let Some(state) = AggState::from_sample(aggregation, sample, time_ms) {
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

/// Pre-aggregated rows of one partition batch for one meter.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Fold {
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

/// Moves the live rows into a sealed delta of `epoch` and returns them.
#[derive(Message)]
#[rtype(result = "Sealed")]
pub struct Seal {
    pub epoch: u64,
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
    pub files: Vec<RollupFile>,
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
    pub files: Vec<RollupFile>,
    pub rows: Vec<RollupRow>,
}

pub struct MeterActor {
    meter: Arc<Meter>,
    group_keys: Vec<String>,
    live: Rollups,
    /// Rows sealed into a checkpoint not yet committed, with their estimated bytes.
    sealed: Vec<(u64, Arc<Vec<RollupRow>>, usize)>,
    files: Vec<RollupFile>,
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
        files: Vec<RollupFile>,
        complete: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        let group_keys = meter.group_by.keys().cloned().collect();
        Self {
            meter,
            group_keys,
            live: Rollups::default(),
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
        let now = self.live.bytes() + self.sealed.iter().map(|(_, _, b)| b).sum::<usize>();
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
        self.merge(msg.rows);
    }
}

impl Handler<Backfill> for MeterActor {
    type Result = ();
    fn handle(&mut self, msg: Backfill, _: &mut Context<Self>) {
        self.merge(msg.rows);
        self.complete = true;
    }
}

impl Handler<Seal> for MeterActor {
    type Result = MessageResult<Seal>;
    fn handle(&mut self, msg: Seal, _: &mut Context<Self>) -> Self::Result {
        let bytes = self.live.bytes();
        let rows = Arc::new(self.live.drain_rows());
        if !rows.is_empty() {
            self.sealed.push((msg.epoch, rows.clone(), bytes));
        }
        self.recount();
        MessageResult(Sealed {
            meter: self.meter.clone(),
            rows,
            complete: self.complete,
        })
    }
}

impl Handler<Committed> for MeterActor {
    type Result = ();
    fn handle(&mut self, msg: Committed, _: &mut Context<Self>) {
        self.sealed.retain(|(epoch, _, _)| *epoch > msg.epoch);
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
            self.sealed = self
                .sealed
                .iter()
                .map(|(e, rows, bytes)| {
                    let rows = rows
                        .iter()
                        .map(|r| RollupRow {
                            group: remap(&r.group),
                            ..r.clone()
                        })
                        .collect();
                    (*e, Arc::new(rows), *bytes)
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
        for (_, sealed, _) in &self.sealed {
            rows.extend(sealed.iter().filter(|r| msg.query.admits(keys, r)).cloned());
        }
        MessageResult(Snapshot {
            meter: self.meter.clone(),
            files: self.files.clone(),
            rows,
        })
    }
}
