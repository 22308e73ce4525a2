//! Proves the phase-based credit burn-down equals a plain minute-by-minute simulation of
//! OpenMeter's rules, that resuming from any returned `State` changes nothing, and that
//! extra cuts change nothing for additive usage.
//!
//! Random grants (amounts, priorities, effective/expiry, voids, recurrences, rollover),
//! manual resets and per-minute usage over several hour-long usage periods. A failing case
//! prints its inputs; rerun one with `PROPTEST_RNG_SEED=<n>` (and `PROPTEST_CASES=<n>`).

use std::collections::BTreeMap;
use std::convert::Infallible;

use chrono::{DateTime, Duration, TimeZone, Utc};
use metron_engine::credit::{
    Entitlement, Grant, Interval, Outcome, Recurrence, Reset, State, UsageKind, UsageSource, Value,
    boundaries, run,
};
use proptest::prelude::*;
use rust_decimal::Decimal;

/// Minutes simulated after measure_usage_from.
const HORIZON: i64 = 300;

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

fn at(minute: i64) -> DateTime<Utc> {
    base() + Duration::minutes(minute)
}

fn minute_of(t: DateTime<Utc>) -> i64 {
    (t - base()).num_minutes()
}

/// A grant in whole minutes, as the generator draws it.
#[derive(Clone, Debug)]
struct GrantCase {
    amount_halves: i64,
    priority: u8,
    effective: i64,
    lifetime: Option<i64>,
    void_after: Option<i64>,
    created: i64,
    max_rollover_halves: i64,
    min_rollover_halves: i64,
    recurrence: Option<(i64, i64)>,
}

#[derive(Clone, Debug)]
struct ResetCase {
    minute: i64,
    preserve_overage: bool,
    retain_anchor: bool,
}

#[derive(Clone, Debug)]
struct Case {
    measure_from: i64,
    period_minutes: i64,
    period_anchor: i64,
    preserve_overage_at_reset: bool,
    grants: Vec<GrantCase>,
    resets: Vec<ResetCase>,
    usage: Vec<i64>,
    probes: Vec<i64>,
    cuts: Vec<i64>,
}

fn halves(n: i64) -> Decimal {
    Decimal::new(n * 5, 1)
}

fn grant_case(measure_from: i64) -> impl Strategy<Value = GrantCase> {
    (
        (
            1i64..40,
            0u8..3,
            -30i64..HORIZON,
            prop::option::of(1i64..200),
        ),
        (
            prop::option::weighted(0.2, 0i64..150),
            0i64..5,
            0i64..=100,
            0i64..=100,
            prop::option::weighted(
                0.4,
                (prop::sample::select(vec![15i64, 30, 45, 60]), -60i64..60),
            ),
        ),
    )
        .prop_map(
            move |(
                (amount_halves, priority, effective, lifetime),
                (void_after, created, max_pct, min_pct, recurrence),
            )| {
                let max_rollover_halves = amount_halves * max_pct / 100;
                GrantCase {
                    amount_halves,
                    priority,
                    effective: measure_from + effective,
                    lifetime,
                    void_after,
                    created,
                    max_rollover_halves,
                    min_rollover_halves: max_rollover_halves * min_pct / 100,
                    recurrence,
                }
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    (
        0i64..30,
        prop::sample::select(vec![60i64, 90, 120]),
        0i64..120,
        any::<bool>(),
    )
        .prop_flat_map(|(measure_from, period_minutes, period_anchor, preserve)| {
            (
                prop::collection::vec(grant_case(measure_from), 0..5),
                prop::collection::btree_map(1i64..=HORIZON, (any::<bool>(), any::<bool>()), 0..4),
                prop::collection::vec(
                    prop_oneof![3 => Just(0i64), 2 => 1i64..4, 1 => 4i64..12],
                    HORIZON as usize + 1,
                ),
                prop::collection::vec(0i64..=HORIZON, 1..6),
                prop::collection::vec(1i64..=HORIZON, 0..6),
            )
                .prop_map(move |(grants, resets, usage, probes, cuts)| Case {
                    measure_from,
                    period_minutes,
                    period_anchor,
                    preserve_overage_at_reset: preserve,
                    grants,
                    resets: resets
                        .into_iter()
                        .map(|(minute, (preserve_overage, retain_anchor))| ResetCase {
                            minute: measure_from + minute,
                            preserve_overage,
                            retain_anchor,
                        })
                        .collect(),
                    usage,
                    probes: probes.into_iter().map(|p| measure_from + p).collect(),
                    cuts: cuts.into_iter().map(|c| measure_from + c).collect(),
                })
        })
}

impl GrantCase {
    fn end(&self) -> Option<i64> {
        let expiry = self.lifetime.map(|l| self.effective + l);
        let void = self.void_after.map(|v| self.effective + v);
        [expiry, void].into_iter().flatten().min()
    }

    fn active(&self, m: i64) -> bool {
        self.effective <= m && self.end().is_none_or(|end| m < end)
    }
}

fn to_grants(case: &Case) -> Vec<Grant> {
    case.grants
        .iter()
        .enumerate()
        .map(|(i, g)| Grant {
            id: format!("01G{i}"),
            amount: halves(g.amount_halves),
            priority: g.priority,
            effective_at: at(g.effective),
            expires_at: g.lifetime.map(|l| at(g.effective + l)),
            voided_at: g.void_after.map(|v| at(g.effective + v)),
            deleted_at: None,
            created_at: at(g.created),
            max_rollover: halves(g.max_rollover_halves),
            min_rollover: halves(g.min_rollover_halves),
            recurrence: g.recurrence.map(|(minutes, anchor)| Recurrence {
                interval: Interval::parse(&format!("PT{minutes}M")).unwrap_or(Interval::Day),
                anchor: at(g.effective + anchor),
            }),
        })
        .collect()
}

fn to_entitlement(case: &Case) -> Entitlement {
    Entitlement {
        measure_usage_from: at(case.measure_from),
        usage_period: Recurrence {
            interval: Interval::parse(&format!("PT{}M", case.period_minutes))
                .unwrap_or(Interval::Day),
            anchor: at(case.period_anchor),
        },
        preserve_overage_at_reset: case.preserve_overage_at_reset,
        kind: UsageKind::Additive,
    }
}

fn to_resets(case: &Case) -> Vec<Reset> {
    case.resets
        .iter()
        .map(|r| Reset {
            at: at(r.minute),
            preserve_overage: r.preserve_overage,
            retain_anchor: r.retain_anchor,
        })
        .collect()
}

/// Per-minute usage starting at measure_usage_from.
struct Minutes {
    start: i64,
    prefix: Vec<Decimal>,
}

impl Minutes {
    fn new(case: &Case) -> Minutes {
        let mut prefix = vec![Decimal::ZERO];
        for u in &case.usage {
            let last = prefix.last().copied().unwrap_or_default();
            prefix.push(last + Decimal::from(*u));
        }
        Minutes {
            start: case.measure_from,
            prefix,
        }
    }
}

impl UsageSource for Minutes {
    type Error = Infallible;
    fn usage(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Decimal, Infallible> {
        let index = |t: DateTime<Utc>| {
            usize::try_from(minute_of(t) - self.start)
                .unwrap_or(0)
                .min(self.prefix.len() - 1)
        };
        Ok(self.prefix[index(to)] - self.prefix[index(from)])
    }
}

/// The reference: OpenMeter's rules applied one minute at a time.
struct Reference<'a> {
    case: &'a Case,
    balances: BTreeMap<usize, Decimal>,
    overage: Decimal,
    usage: Decimal,
    grant_usage: Decimal,
    anchor: i64,
}

impl<'a> Reference<'a> {
    /// Active grant indexes in burn order.
    fn order(&self, m: i64) -> Vec<usize> {
        let mut active: Vec<usize> = (0..self.case.grants.len())
            .filter(|i| self.case.grants[*i].active(m))
            .collect();
        active.sort_by_key(|i| {
            let g = &self.case.grants[*i];
            let expiry = g.lifetime.map(|l| g.effective + l);
            (g.priority, expiry.is_none(), expiry, g.created, *i)
        });
        active
    }

    fn burn(&mut self, m: i64, amount: Decimal) -> Decimal {
        let mut remaining = amount;
        let mut burnt = Decimal::ZERO;
        for i in self.order(m) {
            let balance = self.balances.entry(i).or_default();
            let take = (*balance).min(remaining);
            *balance -= take;
            remaining -= take;
            burnt += take;
        }
        self.overage = remaining;
        burnt
    }

    fn reset(&mut self, m: i64, preserve: bool) {
        for (i, g) in self.case.grants.iter().enumerate() {
            let balance = self.balances.entry(i).or_default();
            *balance = if g.active(m) {
                halves(g.max_rollover_halves).min(halves(g.min_rollover_halves).max(*balance))
            } else {
                Decimal::ZERO
            };
        }
        if !preserve {
            self.overage = Decimal::ZERO;
        }
        let carried = self.overage;
        self.grant_usage = self.burn(m, carried);
        self.usage = Decimal::ZERO;
    }

    /// Applies every event at minute `m`.
    fn events(&mut self, m: i64) {
        let case = self.case;
        let manual = case.resets.iter().find(|r| r.minute == m);
        let auto = (m - self.anchor).rem_euclid(case.period_minutes) == 0;
        if let Some(reset) = manual {
            self.reset(m, reset.preserve_overage);
            if !reset.retain_anchor {
                self.anchor = m;
            }
        } else if auto {
            self.reset(m, case.preserve_overage_at_reset);
        }
        for (i, g) in case.grants.iter().enumerate() {
            let recurs = g
                .recurrence
                .is_some_and(|(every, anchor)| (m - g.effective - anchor).rem_euclid(every) == 0);
            if !g.active(m) {
                self.balances.insert(i, Decimal::ZERO);
            } else if g.effective == m || recurs {
                self.balances.insert(i, halves(g.amount_halves));
            }
        }
    }

    fn value(&self, m: i64) -> Value {
        let grant_balances: Vec<(String, Decimal)> = (0..self.case.grants.len())
            .filter(|i| self.case.grants[*i].active(m))
            .map(|i| {
                (
                    format!("01G{i}"),
                    self.balances.get(&i).copied().unwrap_or_default(),
                )
            })
            .collect();
        let balance = grant_balances.iter().map(|(_, b)| *b).sum::<Decimal>();
        Value {
            balance,
            usage: self.usage,
            overage: self.overage,
            total_available_grant_amount: self.grant_usage + balance,
            grant_balances,
        }
    }

    /// The value at every minute of the horizon.
    fn simulate(case: &'a Case) -> BTreeMap<i64, Value> {
        let mut sim = Reference {
            case,
            balances: BTreeMap::new(),
            overage: Decimal::ZERO,
            usage: Decimal::ZERO,
            grant_usage: Decimal::ZERO,
            anchor: case.period_anchor,
        };
        let start = case.measure_from;
        for (i, g) in case.grants.iter().enumerate() {
            if g.active(start) {
                sim.balances.insert(i, halves(g.amount_halves));
            }
        }
        let mut values = BTreeMap::new();
        for (offset, minute_usage) in case.usage.iter().enumerate() {
            let m = start + offset as i64;
            if m > start {
                sim.events(m);
                let carried = sim.overage;
                let burnt = sim.burn(m, carried);
                sim.grant_usage += burnt;
            }
            values.insert(m, sim.value(m));
            let used = Decimal::from(*minute_usage);
            sim.usage += used;
            let carried = sim.overage;
            let burnt = sim.burn(m, used + carried);
            sim.grant_usage += burnt;
        }
        values
    }
}

fn run_to(case: &Case, start: Option<State>, until: i64, cuts: &[DateTime<Utc>]) -> Outcome {
    let grants = to_grants(case);
    match run(
        &to_entitlement(case),
        &grants,
        &to_resets(case),
        start,
        at(until),
        cuts,
        &mut Minutes::new(case),
    ) {
        Ok(outcome) => outcome,
        Err(error) => panic!("run failed: {error}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn burn_down_matches_minute_by_minute_reference(case in case()) {
        let grants = to_grants(&case);
        let ent = to_entitlement(&case);
        let resets = to_resets(&case);
        let expected = Reference::simulate(&case);
        let end = case.measure_from + HORIZON;
        let mut probes = case.probes.clone();
        probes.push(end);
        for probe in probes {
            let outcome = run_to(&case, None, probe, &[]);
            prop_assert_eq!(&outcome.value(&grants), &expected[&probe], "value at minute {}", probe);
        }

        // Resuming from any boundary's state changes nothing.
        let full = run_to(&case, None, end, &[]);
        let edges = boundaries(&ent, &grants, &resets, at(case.measure_from), at(end));
        for edge in edges.iter().step_by(edges.len() / 6 + 1) {
            let first = run_to(&case, None, minute_of(*edge), &[]);
            let resumed = run_to(&case, Some(first.state.clone()), end, &[]);
            prop_assert_eq!(&resumed.state, &full.state, "resumed at {}", edge);
            let mut joined = first.segments.clone();
            joined.extend(resumed.segments);
            prop_assert_eq!(joined, full.segments.clone());
        }

        // Extra cuts split phases but change no state.
        let cuts: Vec<DateTime<Utc>> = case.cuts.iter().map(|c| at(*c)).collect();
        let cut = run_to(&case, None, end, &cuts);
        prop_assert_eq!(&cut.state, &full.state);
        let usage: Decimal = cut.segments.iter().map(|s| s.usage).sum();
        prop_assert_eq!(usage, case.usage[..HORIZON as usize].iter().map(|u| Decimal::from(*u)).sum::<Decimal>());
    }
}
