//! `MeterActor`: one meter's minute aggregates that no checkpoint has written yet.

use actix::prelude::*;
use metron_engine::aggregate::{AggState, Aggregation, SampleValue};
use metron_engine::meter::Meter;
use metron_engine::query::{MeterQuery, RollupRow};
use metron_storage::manifest::RollupFile;
use std::collections::HashMap;
use std::sync::Arc;

/// (minute, subject, group-by values)
pub type RollupKey = (i64, String, Vec<String>);

/// Minute states by key: what a partition batch, a meter actor and a compaction
/// accumulate. Folding a sample and merging a state are the only two ways in.
#[derive(Debug, Default)]
pub struct Rollups {
    states: HashMap<RollupKey, AggState>,
}

impl Rollups {
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
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
            Some(state) => state.fold(sample, time_ms),
            None => {
                if let Some(state) = AggState::from_sample(aggregation, sample, time_ms) {
                    self.states.insert(key, state);
                }
            }
        }
    }

    /// Merges a row's state into its key.
    pub fn merge(&mut self, row: RollupRow) {
        let key = (row.minute_ms, row.subject, row.group);
        match self.states.get_mut(&key) {
            Some(state) => state.merge(&row.state),
            None => {
                self.states.insert(key, row.state);
            }
        }
    }

    /// Every state as a row, leaving this empty. The table goes with them: a burst of
    /// subjects would otherwise keep its capacity (11 MB after 100k subjects in one
    /// minute) resident for good.
    pub fn drain_rows(&mut self) -> Vec<RollupRow> {
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
    }
}

/// Pre-aggregated rows of one partition batch for one meter.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Fold {
    pub rows: Vec<RollupRow>,
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
    sealed: Vec<(u64, Arc<Vec<RollupRow>>)>,
    files: Vec<RollupFile>,
    complete: bool,
}

impl MeterActor {
    /// `complete` is false for a meter that still waits for its backfill.
    pub fn new(meter: Arc<Meter>, files: Vec<RollupFile>, complete: bool) -> Self {
        let group_keys = meter.group_by.keys().cloned().collect();
        Self {
            meter,
            group_keys,
            live: Rollups::default(),
            sealed: Vec::new(),
            files,
            complete,
        }
    }

    fn merge(&mut self, rows: Vec<RollupRow>) {
        for row in rows {
            self.live.merge(row);
        }
    }
}

impl Actor for MeterActor {
    type Context = Context<Self>;
}

impl Handler<Fold> for MeterActor {
    type Result = ();
    fn handle(&mut self, msg: Fold, _: &mut Context<Self>) {
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
        let rows = Arc::new(self.live.drain_rows());
        if !rows.is_empty() {
            self.sealed.push((msg.epoch, rows.clone()));
        }
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
        self.sealed.retain(|(epoch, _)| *epoch > msg.epoch);
        self.files = msg.files;
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
                .map(|(e, rows)| {
                    let rows = rows
                        .iter()
                        .map(|r| RollupRow {
                            group: remap(&r.group),
                            ..r.clone()
                        })
                        .collect();
                    (*e, Arc::new(rows))
                })
                .collect();
            self.group_keys = new_keys;
        }
        self.meter = msg.meter;
    }
}

impl Handler<Read> for MeterActor {
    type Result = MessageResult<Read>;
    fn handle(&mut self, msg: Read, _: &mut Context<Self>) -> Self::Result {
        let keys = &self.group_keys;
        let mut rows = self.live.rows_where(|r| msg.query.admits(keys, r));
        for (_, sealed) in &self.sealed {
            rows.extend(sealed.iter().filter(|r| msg.query.admits(keys, r)).cloned());
        }
        MessageResult(Snapshot {
            meter: self.meter.clone(),
            files: self.files.clone(),
            rows,
        })
    }
}
