//! The burn-down: cut time at every boundary, burn each phase's usage through the active
//! grants, and apply the events (resets, activations, recurrences) at each cut.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::model::{Entitlement, Grant, Outcome, Reset, Segment, State, UsageKind, UsageSource};
use super::time::{Recurrence, truncate_minute};
use super::{CreditError, RunError};

/// Balances per grant id that ever became active.
type Balances = BTreeMap<String, Decimal>;

/// One stretch of the usage-period schedule: from `start` (measure_usage_from or a manual
/// reset) the period recurs on `anchor` until the next stretch starts.
struct Stretch {
    start: DateTime<Utc>,
    anchor: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
}

/// Every phase edge in (from, to]: usage-period boundaries (auto resets), manual resets, grant effective/expiry/void/
/// delete times (minute-truncated), grant recurrences. Sorted, unique.
pub fn boundaries(
    ent: &Entitlement,
    grants: &[Grant],
    resets: &[Reset],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    try_boundaries(ent, grants, resets, from, to).unwrap_or_default()
}

fn try_boundaries(
    ent: &Entitlement,
    grants: &[Grant],
    resets: &[Reset],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>, CreditError> {
    let mut out = reset_times(ent, resets, from, to)?;
    for grant in grants {
        let effective = truncate_minute(grant.effective_at);
        let end = grant.active_until();
        out.push(effective);
        out.extend(
            [grant.expires_at, grant.voided_at, grant.deleted_at]
                .into_iter()
                .flatten()
                .map(truncate_minute),
        );
        if let Some(recurrence) = &grant.recurrence {
            let lower = from.max(effective - chrono::Duration::minutes(1)).min(to);
            let upper = end.map_or(to, |end| to.min(end));
            let times = recurrence
                .boundaries_in(lower, upper)
                .ok_or(CreditError::OutOfRange)?;
            out.extend(times.into_iter().filter(|t| grant.active_at(*t)));
        }
    }
    out.retain(|t| from < *t && *t <= to);
    out.sort();
    out.dedup();
    Ok(out)
}

/// The reset instants (automatic period boundaries and manual resets) in (from, to].
fn reset_times(
    ent: &Entitlement,
    resets: &[Reset],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>, CreditError> {
    let mut out = Vec::new();
    for stretch in schedule(ent, resets) {
        if stretch.start > to || stretch.end.is_some_and(|end| end <= from) {
            continue;
        }
        if stretch.start > from && stretch.start > ent.measure_usage_from {
            out.push(stretch.start);
        }
        let recurrence = Recurrence {
            interval: ent.usage_period.interval,
            anchor: stretch.anchor,
        };
        let upper = stretch.end.map_or(to, |end| to.min(end));
        let times = recurrence
            .boundaries_in(from.max(stretch.start), upper)
            .ok_or(CreditError::OutOfRange)?;
        out.extend(times);
    }
    out.retain(|t| from < *t && *t <= to);
    Ok(out)
}

/// The usage-period schedule: the entitlement's anchor from measure_usage_from, then a
/// stretch per manual reset (re-anchored at the reset unless it retains the anchor).
fn schedule(ent: &Entitlement, resets: &[Reset]) -> Vec<Stretch> {
    let mut sorted: Vec<&Reset> = resets.iter().collect();
    sorted.sort_by_key(|r| r.at);
    let mut out = vec![Stretch {
        start: ent.measure_usage_from,
        anchor: ent.usage_period.anchor,
        end: None,
    }];
    for reset in sorted {
        let at = truncate_minute(reset.at);
        let previous_anchor = out.last().map_or(ent.usage_period.anchor, |s| s.anchor);
        if let Some(last) = out.last_mut() {
            last.end = Some(at);
        }
        out.push(Stretch {
            start: at,
            anchor: if reset.retain_anchor {
                previous_anchor
            } else {
                at
            },
            end: None,
        });
    }
    out
}

/// The usage period containing t (taking manual resets / re-anchoring into account): [from, to).
pub fn period_at(
    ent: &Entitlement,
    resets: &[Reset],
    t: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let stretches = schedule(ent, resets);
    let stretch = stretches
        .iter()
        .rev()
        .find(|s| s.start <= t)
        .or(stretches.first())?;
    let t = t.max(stretch.start);
    let recurrence = Recurrence {
        interval: ent.usage_period.interval,
        anchor: stretch.anchor,
    };
    let (from, to) = recurrence.period_containing(t)?;
    Some((
        from.max(stretch.start),
        stretch.end.map_or(to, |end| to.min(end)),
    ))
}

/// Checks what a caller could get wrong; the run itself then cannot fail but for usage.
pub fn validate(ent: &Entitlement, grants: &[Grant], resets: &[Reset]) -> Result<(), CreditError> {
    let period = ent.usage_period.interval;
    if period.duration().is_zero() {
        return Err(CreditError::ZeroInterval { text: period.iso() });
    }
    if !period.at_least_one_hour() {
        return Err(CreditError::UsagePeriodTooShort { text: period.iso() });
    }
    for grant in grants {
        let id = || grant.id.clone();
        if grant.amount <= Decimal::ZERO {
            return Err(CreditError::NonPositiveAmount { grant_id: id() });
        }
        if grant.max_rollover < Decimal::ZERO || grant.min_rollover < Decimal::ZERO {
            return Err(CreditError::NegativeRollover { grant_id: id() });
        }
        if let Some(recurrence) = &grant.recurrence
            && recurrence.interval.duration().is_zero()
        {
            return Err(CreditError::ZeroInterval {
                text: recurrence.interval.iso(),
            });
        }
    }
    let mut times: Vec<DateTime<Utc>> = resets.iter().map(|r| truncate_minute(r.at)).collect();
    times.sort();
    for pair in times.windows(2) {
        if pair[0] == pair[1] {
            return Err(CreditError::DuplicateReset { at: pair[0] });
        }
    }
    if let Some(first) = times.first()
        && *first <= ent.measure_usage_from
    {
        return Err(CreditError::ResetNotAfterStart { at: *first });
    }
    Ok(())
}

/// Runs the burn-down from `start` (None = from measure_usage_from with empty balances) to `until` (minute-aligned;
/// callers ceil `?time=`), cutting at every boundary and at every `extra_cuts` instant (used for windowed history;
/// extra cuts must not change any result for Additive kinds).
pub fn run<U: UsageSource>(
    ent: &Entitlement,
    grants: &[Grant],
    resets: &[Reset],
    start: Option<State>,
    until: DateTime<Utc>,
    extra_cuts: &[DateTime<Utc>],
    usage: &mut U,
) -> Result<Outcome, RunError<U::Error>> {
    validate(ent, grants, resets)?;
    let until = truncate_minute(until);
    let resumed = start.is_some();
    let mut burner = Burner::new(ent, grants, resets, start);
    if until < burner.at {
        return Err(CreditError::UntilBeforeStart {
            until,
            start: burner.at,
        }
        .into());
    }
    let mut cuts = try_boundaries(ent, grants, resets, burner.at, until)?;
    let resets_due = reset_times(ent, resets, burner.at, until)?;
    cuts.extend(
        extra_cuts
            .iter()
            .map(|t| truncate_minute(*t))
            .filter(|t| burner.at < *t && *t <= until),
    );
    cuts.sort();
    cuts.dedup();
    let mut segments = Vec::with_capacity(cuts.len());
    // A resumed run starts where the previous one stopped; that instant may have been a reset.
    let mut reset_at_start = resumed
        && reset_times(
            ent,
            resets,
            burner.at - chrono::Duration::minutes(1),
            burner.at,
        )?
        .contains(&burner.at);
    for cut in cuts {
        let phase_usage = usage.usage(burner.at, cut).map_err(RunError::Usage)?;
        segments.push(burner.burn_phase(cut, phase_usage, reset_at_start));
        reset_at_start = resets_due.binary_search(&cut).is_ok();
        if reset_at_start {
            burner.reset(cut);
        }
        burner.apply_events(cut);
        burner.settle();
    }
    // `until` itself is no edge: burn up to it without applying any event there (a LATEST
    // restart at `until` would hide the phase's usage).
    if burner.at < until {
        let phase_usage = usage.usage(burner.at, until).map_err(RunError::Usage)?;
        segments.push(burner.burn_phase(until, phase_usage, reset_at_start));
    }
    Ok(Outcome {
        state: burner.into_state(),
        segments,
    })
}

/// The running state of one [`run`].
struct Burner<'a> {
    ent: &'a Entitlement,
    grants: &'a [Grant],
    resets: &'a [Reset],
    at: DateTime<Utc>,
    balances: Balances,
    overage: Decimal,
    usage_in_period: Decimal,
    grant_usage_in_period: Decimal,
    period_start: DateTime<Utc>,
    period_anchor: DateTime<Utc>,
}

impl<'a> Burner<'a> {
    fn new(
        ent: &'a Entitlement,
        grants: &'a [Grant],
        resets: &'a [Reset],
        start: Option<State>,
    ) -> Burner<'a> {
        match start {
            Some(state) => Burner {
                ent,
                grants,
                resets,
                at: truncate_minute(state.at),
                balances: state.balances.into_iter().collect(),
                overage: state.overage,
                usage_in_period: state.usage_in_period,
                grant_usage_in_period: state.grant_usage_in_period,
                period_start: state.period_start,
                period_anchor: state.period_anchor,
            },
            None => {
                let at = truncate_minute(ent.measure_usage_from);
                let balances = grants
                    .iter()
                    .filter(|g| g.active_at(at))
                    .map(|g| (g.id.clone(), g.amount))
                    .collect();
                Burner {
                    ent,
                    grants,
                    resets,
                    at,
                    balances,
                    overage: Decimal::ZERO,
                    usage_in_period: Decimal::ZERO,
                    grant_usage_in_period: Decimal::ZERO,
                    period_start: at,
                    period_anchor: ent.usage_period.anchor,
                }
            }
        }
    }

    /// Grants active at the current instant, in burn order.
    fn active_in_order(&self) -> Vec<&'a Grant> {
        let mut active: Vec<&Grant> = self
            .grants
            .iter()
            .filter(|g| g.active_at(self.at))
            .collect();
        active.sort_by(|a, b| a.burn_order(b));
        active
    }

    /// Burns `amount` through the active grants in burn order; returns what each grant
    /// took and what is left over.
    fn burn(&mut self, amount: Decimal) -> (Vec<(String, Decimal)>, Decimal) {
        let mut remaining = amount;
        let mut taken = Vec::new();
        for grant in self.active_in_order() {
            if remaining <= Decimal::ZERO {
                break;
            }
            let balance = self.balances.entry(grant.id.clone()).or_default();
            if *balance <= Decimal::ZERO {
                continue;
            }
            let take = (*balance).min(remaining);
            *balance -= take;
            remaining -= take;
            taken.push((grant.id.clone(), take));
        }
        (taken, remaining.max(Decimal::ZERO))
    }

    fn active_total(&self) -> Decimal {
        self.grants
            .iter()
            .filter(|g| g.active_at(self.at))
            .filter_map(|g| self.balances.get(&g.id))
            .sum()
    }

    fn snapshot(&self) -> Vec<(String, Decimal)> {
        self.balances
            .iter()
            .map(|(id, b)| (id.clone(), *b))
            .collect()
    }

    /// Burns `[self.at, to)` with its usage plus the carried overage.
    fn burn_phase(&mut self, to: DateTime<Utc>, usage: Decimal, reset_at_start: bool) -> Segment {
        let balance_at_start = self.active_total();
        let grant_balances_at_start = self.snapshot();
        let (grant_usages, overage) = self.burn(usage + self.overage);
        let burnt: Decimal = grant_usages.iter().map(|(_, u)| *u).sum();
        self.overage = overage;
        self.usage_in_period += usage;
        self.grant_usage_in_period += burnt;
        let segment = Segment {
            from: self.at,
            to,
            usage,
            overage,
            balance_at_start,
            grant_balances_at_start,
            balance_at_end: self.active_total(),
            grant_balances_at_end: self.snapshot(),
            grant_usages,
            reset_at_start,
        };
        self.at = to;
        segment
    }

    /// A reset at `self.at`: roll every active grant over, then burn or forgive the overage.
    fn reset(&mut self, at: DateTime<Utc>) {
        self.at = at;
        let manual = self.resets.iter().find(|r| truncate_minute(r.at) == at);
        let preserve = manual.map_or(self.ent.preserve_overage_at_reset, |r| r.preserve_overage);
        for grant in self.grants {
            if grant.active_at(at) {
                let before = self.balances.get(&grant.id).copied().unwrap_or_default();
                self.balances
                    .insert(grant.id.clone(), grant.rollover(before));
            } else if let Some(balance) = self.balances.get_mut(&grant.id) {
                *balance = Decimal::ZERO;
            }
        }
        let carried = if preserve {
            self.overage
        } else {
            Decimal::ZERO
        };
        let (taken, overage) = self.burn(carried);
        self.overage = overage;
        self.usage_in_period = Decimal::ZERO;
        self.grant_usage_in_period = taken.iter().map(|(_, u)| *u).sum();
        self.period_start = at;
        if let Some(reset) = manual
            && !reset.retain_anchor
        {
            self.period_anchor = at;
        }
    }

    /// Activations, deactivations, recurrences and LATEST restarts at `at`.
    fn apply_events(&mut self, at: DateTime<Utc>) {
        self.at = at;
        for grant in self.grants {
            if !grant.active_at(at) {
                if let Some(balance) = self.balances.get_mut(&grant.id) {
                    *balance = Decimal::ZERO;
                }
                continue;
            }
            let starts = truncate_minute(grant.effective_at) == at;
            let recurs = grant
                .recurrence
                .as_ref()
                .is_some_and(|r| r.period_containing(at).is_some_and(|(from, _)| from == at));
            if starts || recurs || self.ent.kind == UsageKind::Latest {
                self.balances.insert(grant.id.clone(), grant.amount);
            } else {
                self.balances.entry(grant.id.clone()).or_default();
            }
        }
    }

    /// Burns the carried overage through the balances of the instant, as OpenMeter's
    /// zero-length phase at a recurrence or reset does: an edge's refill pays overage at once.
    fn settle(&mut self) {
        if self.overage > Decimal::ZERO {
            let (taken, overage) = self.burn(self.overage);
            self.overage = overage;
            self.grant_usage_in_period += taken.iter().map(|(_, u)| *u).sum::<Decimal>();
        }
    }

    fn into_state(self) -> State {
        State {
            at: self.at,
            balances: self.balances.into_iter().collect(),
            overage: self.overage,
            usage_in_period: self.usage_in_period,
            grant_usage_in_period: self.grant_usage_in_period,
            period_start: self.period_start,
            period_anchor: self.period_anchor,
        }
    }
}
