//! One metered entitlement's live balance: credit-engine inputs, a minute series of
//! usage since the current usage period's start, the engine state at that start,
//! and the last answer.

use super::pack;
use chrono::{DateTime, Utc};
use metron_engine::aggregate::{AggState, Aggregation, SampleValue};
use metron_engine::credit::{
    self, Entitlement, Grant, Outcome, Reset, State, UsageSource, Value, ceil_minute,
};
use metron_engine::window::floor_minute_ms;
use rust_decimal::Decimal;
use std::convert::Infallible;

/// A minute series: aggregate states by minute start (ms), sorted. A sorted vector, not
/// a `BTreeMap`: a live customer's few minutes cost 40 bytes each instead of a
/// 460-byte tree node, and new usage lands at the end (a push) in the common case.
#[derive(Debug, Clone, Default)]
pub struct Series {
    minutes: Vec<(i64, AggState)>,
}

impl Series {
    pub fn new() -> Self {
        Self::default()
    }

    /// Estimated resident bytes beyond the series itself.
    pub fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(i64, AggState)>();
        self.minutes.capacity() * slot
            + self
                .minutes
                .iter()
                .map(|(_, s)| {
                    s.size_bytes()
                        .saturating_sub(std::mem::size_of::<AggState>())
                })
                .sum::<usize>()
    }

    fn position(&self, minute: i64) -> Result<usize, usize> {
        // New usage is usually for the latest minute or a later one.
        match self.minutes.last() {
            Some((last, _)) if *last < minute => Err(self.minutes.len()),
            Some((last, _)) if *last == minute => Ok(self.minutes.len() - 1),
            _ => self.minutes.binary_search_by_key(&minute, |(m, _)| *m),
        }
    }

    pub fn get_mut(&mut self, minute: &i64) -> Option<&mut AggState> {
        let i = self.position(*minute).ok()?;
        self.minutes.get_mut(i).map(|(_, state)| state)
    }

    pub fn insert(&mut self, minute: i64, state: AggState) {
        match self.position(minute) {
            Ok(i) => {
                if let Some(slot) = self.minutes.get_mut(i) {
                    slot.1 = state;
                }
            }
            Err(i) => self.minutes.insert(i, (minute, state)),
        }
    }

    /// The minutes in `[range.start, range.end)`.
    pub fn range(&self, range: std::ops::Range<i64>) -> impl Iterator<Item = (&i64, &AggState)> {
        let from = self.minutes.partition_point(|(m, _)| *m < range.start);
        let to = self.minutes.partition_point(|(m, _)| *m < range.end);
        self.minutes
            .get(from..to.max(from))
            .unwrap_or_default()
            .iter()
            .map(|(m, s)| (m, s))
    }

    /// Splits off the minutes from `minute` on (kept in the returned series).
    pub fn split_off(&mut self, minute: &i64) -> Series {
        let at = self.minutes.partition_point(|(m, _)| m < minute);
        let mut rest = self.minutes.split_off(at);
        rest.shrink_to_fit();
        Series { minutes: rest }
    }

    pub fn len(&self) -> usize {
        self.minutes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.minutes.is_empty()
    }

    pub fn shrink_to_fit(&mut self) {
        self.minutes.shrink_to_fit();
    }
}

impl FromIterator<(i64, AggState)> for Series {
    fn from_iter<I: IntoIterator<Item = (i64, AggState)>>(iter: I) -> Self {
        let mut minutes: Vec<(i64, AggState)> = iter.into_iter().collect();
        minutes.sort_by_key(|(m, _)| *m);
        minutes.dedup_by_key(|(m, _)| *m);
        Series { minutes }
    }
}

/// The credit engine's inputs for one entitlement.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub entitlement: Entitlement,
    pub grants: Vec<Grant>,
    pub resets: Vec<Reset>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the credit engine failed: {0}")]
    Engine(String),
    /// Usage arrived for a minute before the series starts: the ledger must be rebuilt.
    #[error("usage before the live series")]
    Stale,
}

/// A value and the instant (minute-ceiled) it is for.
#[derive(Debug, Clone)]
pub struct ValueAt {
    pub until: DateTime<Utc>,
    pub value: Value,
    pub period: (DateTime<Utc>, DateTime<Utc>),
}

/// Usage over a range of a minute series.
pub struct SeriesUsage<'a> {
    pub series: &'a Series,
}

impl UsageSource for SeriesUsage<'_> {
    type Error = Infallible;
    fn usage(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Decimal, Infallible> {
        Ok(range_value(
            self.series,
            from.timestamp_millis(),
            to.timestamp_millis(),
        ))
    }
}

fn range_value(series: &Series, from_ms: i64, to_ms: i64) -> Decimal {
    if from_ms >= to_ms {
        return Decimal::ZERO;
    }
    let mut acc: Option<AggState> = None;
    for (_, state) in series.range(from_ms..to_ms) {
        match &mut acc {
            Some(acc) => acc.merge(state),
            None => acc = Some(state.clone()),
        }
    }
    acc.map_or(Decimal::ZERO, |a| a.value().to_decimal())
}

/// Folds a sample into a minute series.
pub fn fold_sample(
    series: &mut Series,
    aggregation: Aggregation,
    time_ms: i64,
    value: &SampleValue,
) {
    let minute = floor_minute_ms(time_ms);
    match series.get_mut(&minute) {
        Some(state) => state.fold(value, time_ms),
        None => {
            if let Some(state) = AggState::from_sample(aggregation, value, time_ms) {
                series.insert(minute, state);
            }
        }
    }
}

/// The engine over `inputs` from `base` (None: from `measureUsageFrom`) to `until`.
fn run_from(
    inputs: &Inputs,
    base: Option<&State>,
    until: DateTime<Utc>,
    usage: &mut impl UsageSource<Error = Infallible>,
) -> Result<Outcome, LedgerError> {
    credit::run(
        &inputs.entitlement,
        &inputs.grants,
        &inputs.resets,
        base.cloned(),
        until,
        &[],
        usage,
    )
    .map_err(|e| LedgerError::Engine(format!("{e:?}")))
}

/// A metered entitlement's live balance.
#[derive(Debug)]
pub struct Ledger {
    pub inputs: Inputs,
    pub aggregation: Aggregation,
    series: Series,
    /// Minutes before this are folded into `base`.
    series_from: DateTime<Utc>,
    /// The engine state at `series_from` (None: nothing before it, the series starts at
    /// `measure_usage_from`).
    base: Option<Box<State>>,
    cached: Option<ValueAt>,
    /// Running usage from each phase start the engine asked about: `from → (covered up
    /// to, state of [from, covered))`. A read folds only the minutes past `covered`, so
    /// the first read after new usage costs the new minutes, not the whole period.
    totals: Vec<Total>,
}

impl Ledger {
    /// Estimated resident bytes of the ledger (its box included): the minute series, the
    /// grants and resets, running totals, and the entitlement's strings (a round 512).
    pub fn size_bytes(&self) -> usize {
        const STRINGS: usize = 512;
        std::mem::size_of::<Self>()
            + self.series.heap_bytes()
            + self.inputs.grants.capacity() * std::mem::size_of::<metron_engine::credit::Grant>()
            + self.inputs.resets.capacity() * std::mem::size_of::<metron_engine::credit::Reset>()
            + self.totals.capacity() * std::mem::size_of::<Total>()
            + self
                .base
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<metron_engine::credit::State>())
            + STRINGS
    }
}

/// A running usage total: `[from, covered)` folded into `state`.
#[derive(Debug, Clone)]
struct Total {
    from: i64,
    covered: i64,
    state: Option<AggState>,
}

/// The ledger's usage source: running totals over the minute series.
struct LiveUsage<'a> {
    series: &'a Series,
    totals: &'a mut Vec<Total>,
}

fn merge_into(acc: &mut Option<AggState>, state: &AggState) {
    match acc {
        Some(acc) => acc.merge(state),
        None => *acc = Some(state.clone()),
    }
}

impl UsageSource for LiveUsage<'_> {
    type Error = Infallible;
    fn usage(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Decimal, Infallible> {
        let (from_ms, to_ms) = (from.timestamp_millis(), to.timestamp_millis());
        if from_ms >= to_ms {
            return Ok(Decimal::ZERO);
        }
        let i = match self.totals.iter().position(|t| t.from == from_ms) {
            Some(i) => i,
            None => {
                self.totals.push(Total {
                    from: from_ms,
                    covered: from_ms,
                    state: None,
                });
                self.totals.len() - 1
            }
        };
        let Some(total) = self.totals.get_mut(i) else {
            return Ok(range_value(self.series, from_ms, to_ms));
        };
        if total.covered > to_ms {
            // An earlier instant than the running total covers: sum it afresh.
            return Ok(range_value(self.series, from_ms, to_ms));
        }
        for (_, state) in self.series.range(total.covered..to_ms) {
            merge_into(&mut total.state, state);
        }
        total.covered = to_ms;
        Ok(total
            .state
            .as_ref()
            .map_or(Decimal::ZERO, |s| s.value().to_decimal()))
    }
}

impl Ledger {
    /// A ledger over every sample since `measure_usage_from`.
    pub fn new(inputs: Inputs, aggregation: Aggregation, mut series: Series) -> Self {
        series.shrink_to_fit();
        let series_from = inputs.entitlement.measure_usage_from;
        Self {
            inputs,
            aggregation,
            series,
            series_from,
            base: None,
            cached: None,
            totals: Vec::new(),
        }
    }

    /// The same usage under new inputs (grants, resets changed): possible while the
    /// series still starts at `measure_usage_from` (nothing folded into a base yet).
    pub fn with_inputs(&self, inputs: Inputs) -> Option<Ledger> {
        if self.base.is_some() || inputs.entitlement.measure_usage_from != self.series_from {
            return None;
        }
        Some(Ledger::new(inputs, self.aggregation, self.series.clone()))
    }

    /// Adds usage; `Err(Stale)` when it falls before the live series.
    pub fn add(&mut self, time_ms: i64, value: &SampleValue) -> Result<(), LedgerError> {
        if time_ms < self.series_from.timestamp_millis() {
            if self.base.is_none() {
                // Before measure_usage_from: never counts.
                return Ok(());
            }
            return Err(LedgerError::Stale);
        }
        fold_sample(&mut self.series, self.aggregation, time_ms, value);
        // Running totals that already cover this minute take the sample too.
        let minute = floor_minute_ms(time_ms);
        for total in &mut self.totals {
            if total.from <= minute && minute < total.covered {
                match &mut total.state {
                    Some(acc) => acc.fold(value, time_ms),
                    None => total.state = AggState::from_sample(self.aggregation, value, time_ms),
                }
            }
        }
        self.cached = None;
        Ok(())
    }

    /// The value at `t` (ceiled to the minute), from the cache when nothing moved.
    pub fn value_at(&mut self, t: DateTime<Utc>) -> Result<ValueAt, LedgerError> {
        let until = ceil_minute(t);
        if let Some(cached) = &self.cached
            && cached.until == until
        {
            return Ok(cached.clone());
        }
        if until < self.series_from {
            return Err(LedgerError::Stale);
        }
        self.advance(until)?;
        let mut usage = LiveUsage {
            series: &self.series,
            totals: &mut self.totals,
        };
        let outcome = run_from(&self.inputs, self.base.as_deref(), until, &mut usage)?;
        let value = outcome.value(&self.inputs.grants);
        let period = credit::period_at(&self.inputs.entitlement, &self.inputs.resets, until)
            .unwrap_or((until, until));
        let answer = ValueAt {
            until,
            value,
            period,
        };
        self.cached = Some(answer.clone());
        Ok(answer)
    }

    /// Runs the engine from the base to `until`.
    pub fn run(&self, until: DateTime<Utc>) -> Result<Outcome, LedgerError> {
        let mut usage = SeriesUsage {
            series: &self.series,
        };
        run_from(&self.inputs, self.base.as_deref(), until, &mut usage)
    }

    /// Moves the base to the start of the usage period containing `until` and drops
    /// the minutes before it: memory stays bounded by one period.
    fn advance(&mut self, until: DateTime<Utc>) -> Result<(), LedgerError> {
        let Some((start, _)) =
            credit::period_at(&self.inputs.entitlement, &self.inputs.resets, until)
        else {
            return Ok(());
        };
        if start <= self.series_from || start > until {
            return Ok(());
        }
        let outcome = self.run(start)?;
        self.base = Some(Box::new(outcome.state));
        self.series = self.series.split_off(&start.timestamp_millis());
        self.series_from = start;
        let start_ms = start.timestamp_millis();
        self.totals.retain(|t| t.from >= start_ms);
        Ok(())
    }

    /// Appends the ledger to a packed customer (the cached answer and the running
    /// totals are left out: the next read rebuilds them).
    pub fn pack(&self, w: &mut pack::Writer) {
        pack::entitlement(w, &self.inputs.entitlement);
        w.seq(self.inputs.grants.iter(), pack::grant);
        w.seq(self.inputs.resets.iter(), pack::reset);
        pack::aggregation(w, self.aggregation);
        w.u64(self.series.minutes.len() as u64);
        let mut previous = 0i64;
        for (minute, state) in &self.series.minutes {
            w.i64(minute.wrapping_sub(previous));
            previous = *minute;
            pack::agg_state(w, state);
        }
        w.time(self.series_from);
        w.opt(self.base.as_deref(), pack::state);
    }

    /// A ledger from [`Ledger::pack`]'s bytes.
    pub fn unpack(r: &mut pack::Reader<'_>) -> Result<Ledger, pack::PackError> {
        let entitlement = pack::read_entitlement(r)?;
        let grants = r.seq(pack::read_grant)?;
        let resets = r.seq(pack::read_reset)?;
        let aggregation = pack::read_aggregation(r)?;
        let mut previous = 0i64;
        let minutes = r.seq(|r| {
            let minute = previous.wrapping_add(r.i64()?);
            previous = minute;
            Ok((minute, pack::read_agg_state(r)?))
        })?;
        Ok(Ledger {
            inputs: Inputs {
                entitlement,
                grants,
                resets,
            },
            aggregation,
            series: Series { minutes },
            series_from: r.time()?,
            base: r.opt(pack::read_state)?.map(Box::new),
            cached: None,
            totals: Vec::new(),
        })
    }

    /// Bytes held by the series (for metrics and benches).
    pub fn series_len(&self) -> usize {
        self.series.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metron_engine::credit::{Interval, Recurrence, UsageKind};
    use metron_engine::quantity::Quantity;
    use std::collections::BTreeMap;
    use std::str::FromStr;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn grant(id: &str, amount: i64, effective: &str) -> Grant {
        Grant {
            id: id.into(),
            amount: Decimal::from(amount),
            priority: 1,
            effective_at: at(effective),
            expires_at: None,
            voided_at: None,
            deleted_at: None,
            created_at: at(effective),
            max_rollover: Decimal::ZERO,
            min_rollover: Decimal::ZERO,
            recurrence: None,
        }
    }

    fn ledger() -> Ledger {
        let start = at("2026-01-01T00:00:00Z");
        let inputs = Inputs {
            entitlement: Entitlement {
                measure_usage_from: start,
                usage_period: Recurrence {
                    interval: Interval::Day,
                    anchor: start,
                },
                preserve_overage_at_reset: false,
                kind: UsageKind::Additive,
            },
            grants: vec![grant("01A", 100, "2026-01-01T00:00:00Z")],
            resets: Vec::new(),
        };
        Ledger::new(inputs, Aggregation::Sum, Series::new())
    }

    #[test]
    fn usage_burns_the_grant_and_periods_reset_it() -> Result<(), LedgerError> {
        let mut l = ledger();
        let ten = SampleValue::Number(Quantity::new(105, 1));
        l.add(at("2026-01-01T10:00:30Z").timestamp_millis(), &ten)?;
        l.add(at("2026-01-01T11:00:00Z").timestamp_millis(), &ten)?;
        let v = l.value_at(at("2026-01-01T12:00:00Z"))?;
        assert_eq!(v.value.balance, Decimal::from(79));
        assert_eq!(v.value.usage, Decimal::from(21));
        // A sub-minute time includes its minute: the event at 10:00:30 counts at 10:00:10.
        let early = l.value_at(at("2026-01-01T10:00:10Z"))?;
        assert_eq!(
            early.value.usage,
            Decimal::from_str("10.5").unwrap_or_default()
        );
        // Next day: a new period, the grant (no rollover) is gone; the series moved on.
        let next = l.value_at(at("2026-01-02T01:00:00Z"))?;
        assert_eq!(next.value.usage, Decimal::ZERO);
        assert_eq!(l.series_len(), 0);
        // Usage of the previous period now needs a rebuild.
        assert!(matches!(
            l.add(at("2026-01-01T23:00:00Z").timestamp_millis(), &ten),
            Err(LedgerError::Stale)
        ));
        Ok(())
    }

    use proptest::prelude::*;

    /// One step of a live ledger's life: usage at a minute offset (maybe late), or a read.
    #[derive(Debug, Clone)]
    enum Step {
        Usage { minute: i64, amount: i64 },
        Read { advance: i64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0i64..600, 1i64..20).prop_map(|(minute, amount)| Step::Usage { minute, amount }),
            1 => (0i64..90).prop_map(|advance| Step::Read { advance }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// The live ledger (incremental usage, period compaction, cached answers, rebuilds
        /// when usage is older than its series) answers exactly what a fresh engine run
        /// over every sample answers, at every read.
        #[test]
        fn live_ledger_equals_a_fresh_run(
            steps in proptest::collection::vec(step(), 1..60),
            amounts in proptest::collection::vec(1i64..200, 1..4),
            rollover in 0i64..100,
        ) {
            let start = at("2026-01-01T00:00:00Z");
            let grants: Vec<Grant> = amounts.iter().enumerate().map(|(i, a)| Grant {
                id: format!("01G{i}"),
                amount: Decimal::from(*a),
                priority: (i % 2) as u8,
                effective_at: start + chrono::Duration::minutes(37 * i as i64),
                expires_at: None,
                voided_at: None,
                deleted_at: None,
                created_at: start,
                max_rollover: Decimal::from(rollover),
                min_rollover: Decimal::ZERO,
                recurrence: None,
            }).collect();
            let inputs = Inputs {
                entitlement: Entitlement {
                    measure_usage_from: start,
                    usage_period: Recurrence {
                        interval: Interval::parse("PT2H").map_err(|e| TestCaseError::fail(format!("{e:?}")))?,
                        anchor: start,
                    },
                    preserve_overage_at_reset: true,
                    kind: UsageKind::Additive,
                },
                grants,
                resets: Vec::new(),
            };
            // The reference keeps its minutes in a BTreeMap of its own.
            let mut all: BTreeMap<i64, AggState> = BTreeMap::new();
            let series = |all: &BTreeMap<i64, AggState>| -> Series {
                all.iter().map(|(m, s)| (*m, s.clone())).collect()
            };
            let mut live = Ledger::new(inputs.clone(), Aggregation::Sum, Series::new());
            let mut now = start;
            for (i, step) in steps.into_iter().enumerate() {
                if i % 3 == 2 {
                    // Packed and unpacked (a customer at rest): the same ledger, and
                    // packing it again gives the same bytes.
                    let mut w = pack::Writer::default();
                    live.pack(&mut w);
                    let unpacked = Ledger::unpack(&mut pack::Reader::new(&w.bytes))
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let mut again = pack::Writer::default();
                    unpacked.pack(&mut again);
                    prop_assert_eq!(&w.bytes, &again.bytes);
                    live = unpacked;
                }
                match step {
                    Step::Usage { minute, amount } => {
                        let t = (start + chrono::Duration::minutes(minute)).timestamp_millis() + 1234;
                        let v = SampleValue::Number(Quantity::from_decimal(Decimal::from(amount)));
                        let minute = metron_engine::window::floor_minute_ms(t);
                        match all.get_mut(&minute) {
                            Some(state) => state.fold(&v, t),
                            None => {
                                if let Some(state) = AggState::from_sample(Aggregation::Sum, &v, t) {
                                    all.insert(minute, state);
                                }
                            }
                        }
                        if let Err(LedgerError::Stale) = live.add(t, &v) {
                            // What the actor does: rebuild from every event.
                            live = Ledger::new(inputs.clone(), Aggregation::Sum, series(&all));
                        }
                    }
                    Step::Read { advance } => {
                        now += chrono::Duration::minutes(advance);
                        let got = match live.value_at(now) {
                            Ok(v) => v.value,
                            Err(LedgerError::Stale) => {
                                live = Ledger::new(inputs.clone(), Aggregation::Sum, series(&all));
                                live.value_at(now).map_err(|e| TestCaseError::fail(e.to_string()))?.value
                            }
                            Err(e) => return Err(TestCaseError::fail(e.to_string())),
                        };
                        let reference = series(&all);
                        let mut usage = SeriesUsage { series: &reference };
                        let want = credit::run(&inputs.entitlement, &inputs.grants, &inputs.resets, None,
                            ceil_minute(now), &[], &mut usage)
                            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?
                            .value(&inputs.grants);
                        prop_assert_eq!(&got, &want, "at {}", now);
                    }
                }
            }
        }
    }
}
