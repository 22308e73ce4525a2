use std::convert::Infallible;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;

use super::*;

fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .unwrap_or_default()
}

fn base() -> DateTime<Utc> {
    t(2024, 1, 1, 0, 0)
}

fn m(minutes: i64) -> DateTime<Utc> {
    base() + Duration::minutes(minutes)
}

fn dec(n: i64) -> Decimal {
    Decimal::from(n)
}

fn grant(id: &str, amount: i64, priority: u8, effective: i64) -> Grant {
    Grant {
        id: id.to_owned(),
        amount: dec(amount),
        priority,
        effective_at: m(effective),
        expires_at: None,
        voided_at: None,
        deleted_at: None,
        created_at: m(0),
        max_rollover: Decimal::ZERO,
        min_rollover: Decimal::ZERO,
        recurrence: None,
    }
}

fn hourly(preserve: bool, kind: UsageKind) -> Entitlement {
    Entitlement {
        measure_usage_from: m(0),
        usage_period: Recurrence {
            interval: Interval::Iso(IsoDuration {
                hours: 1,
                ..IsoDuration::default()
            }),
            anchor: m(0),
        },
        preserve_overage_at_reset: preserve,
        kind,
    }
}

/// Usage events: (minute, amount); Additive sums them, Latest takes the last one.
struct Events {
    events: Vec<(i64, i64)>,
    latest: bool,
}

impl UsageSource for Events {
    type Error = Infallible;
    fn usage(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Decimal, Infallible> {
        let mut inside = self
            .events
            .iter()
            .filter(|(minute, _)| from <= m(*minute) && m(*minute) < to);
        Ok(if self.latest {
            inside.next_back().map_or(Decimal::ZERO, |(_, v)| dec(*v))
        } else {
            inside.map(|(_, v)| dec(*v)).sum()
        })
    }
}

fn value_at(
    ent: &Entitlement,
    grants: &[Grant],
    resets: &[Reset],
    events: &[(i64, i64)],
    minute: i64,
) -> Value {
    let mut source = Events {
        events: events.to_vec(),
        latest: ent.kind == UsageKind::Latest,
    };
    match run(ent, grants, resets, None, m(minute), &[], &mut source) {
        Ok(outcome) => outcome.value(grants),
        Err(error) => panic!("run failed: {error}"),
    }
}

fn balances(value: &Value) -> Vec<(&str, i64)> {
    value
        .grant_balances
        .iter()
        .map(|(id, b)| (id.as_str(), b.trunc().mantissa() as i64))
        .collect()
}

#[test]
fn expires_at_overflows_like_go_add_date() {
    let cases = [
        (
            t(2023, 1, 31, 10, 0),
            ExpirationUnit::Month,
            1,
            t(2023, 3, 3, 10, 0),
        ),
        (
            t(2024, 1, 31, 10, 0),
            ExpirationUnit::Month,
            1,
            t(2024, 3, 2, 10, 0),
        ),
        (
            t(2024, 2, 29, 0, 0),
            ExpirationUnit::Year,
            1,
            t(2025, 3, 1, 0, 0),
        ),
        (
            t(2024, 3, 31, 0, 0),
            ExpirationUnit::Month,
            1,
            t(2024, 5, 1, 0, 0),
        ),
        (
            t(2024, 12, 15, 0, 0),
            ExpirationUnit::Month,
            2,
            t(2025, 2, 15, 0, 0),
        ),
        (
            t(2024, 1, 1, 23, 0),
            ExpirationUnit::Hour,
            2,
            t(2024, 1, 2, 1, 0),
        ),
        (
            t(2024, 1, 1, 0, 0),
            ExpirationUnit::Week,
            2,
            t(2024, 1, 15, 0, 0),
        ),
        (
            t(2024, 1, 31, 0, 0),
            ExpirationUnit::Day,
            1,
            t(2024, 2, 1, 0, 0),
        ),
    ];
    for (start, unit, count, expected) in cases {
        assert_eq!(
            expires_at(start, unit, count),
            Some(expected),
            "{start} + {count} {unit:?}"
        );
    }
}

#[test]
fn monthly_recurrence_clamps_to_month_end_relative_to_the_anchor() {
    let rec = Recurrence {
        interval: Interval::Month,
        anchor: t(2024, 1, 31, 12, 0),
    };
    let cases = [
        (-1, t(2023, 12, 31, 12, 0)),
        (0, t(2024, 1, 31, 12, 0)),
        (1, t(2024, 2, 29, 12, 0)),
        (2, t(2024, 3, 31, 12, 0)),
        (3, t(2024, 4, 30, 12, 0)),
        (13, t(2025, 2, 28, 12, 0)),
        (-11, t(2023, 2, 28, 12, 0)),
    ];
    for (n, expected) in cases {
        assert_eq!(rec.boundary(n), Some(expected), "n = {n}");
    }
    assert_eq!(
        rec.period_containing(t(2024, 3, 1, 0, 0)),
        Some((t(2024, 2, 29, 12, 0), t(2024, 3, 31, 12, 0)))
    );
    assert_eq!(
        rec.period_containing(t(2024, 2, 29, 12, 0)),
        Some((t(2024, 2, 29, 12, 0), t(2024, 3, 31, 12, 0)))
    );
    assert_eq!(
        rec.next_after(t(2024, 2, 29, 12, 0)),
        Some(t(2024, 3, 31, 12, 0))
    );
    assert_eq!(
        rec.next_after(t(2023, 1, 1, 0, 0)),
        Some(t(2023, 1, 31, 12, 0))
    );
}

#[test]
fn intervals_parse_and_name_like_openmeter() {
    let cases = [
        ("DAY", "P1D", "DAY", true),
        ("WEEK", "P1W", "WEEK", true),
        ("MONTH", "P1M", "MONTH", true),
        ("YEAR", "P1Y", "YEAR", true),
        ("P1D", "P1D", "DAY", true),
        ("P7D", "P7D", "WEEK", true),
        ("P1W", "P1W", "WEEK", true),
        ("P1M", "P1M", "MONTH", true),
        ("P1Y", "P1Y", "YEAR", true),
        ("PT2H", "PT2H", "PT2H", true),
        ("PT1H", "PT1H", "PT1H", true),
        ("PT59M", "PT59M", "PT59M", false),
        ("PT60M", "PT60M", "PT60M", true),
        ("P1Y2M3DT4H", "P1Y2M3DT4H", "P1Y2M3DT4H", true),
        ("P2D", "P2D", "P2D", true),
    ];
    for (text, iso, name, long_enough) in cases {
        let interval = Interval::parse(text).unwrap_or(Interval::Iso(IsoDuration::default()));
        assert_eq!(interval.iso(), iso, "{text}");
        assert_eq!(interval.api_name(), name, "{text}");
        assert_eq!(interval.at_least_one_hour(), long_enough, "{text}");
    }
    for bad in [
        "", "P", "PT", "P1.5D", "1D", "P1H", "PT1D", "P1DT", "PD", "P-1D", "day", "P1M1Y",
    ] {
        assert!(
            matches!(
                Interval::parse(bad),
                Err(CreditError::InvalidInterval { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        Interval::parse("P0D"),
        Err(CreditError::ZeroInterval { .. })
    ));
}

#[test]
fn minutes_truncate_and_ceil() {
    let exact = t(2024, 1, 1, 10, 5);
    let inside = exact + Duration::milliseconds(1500);
    assert_eq!(truncate_minute(inside), exact);
    assert_eq!(ceil_minute(inside), exact + Duration::minutes(1));
    assert_eq!(ceil_minute(exact), exact);
}

#[test]
fn burn_order_breaks_ties_by_priority_expiry_creation_then_id() {
    let ent = hourly(false, UsageKind::Additive);
    let expiring = |g: Grant, at: i64| Grant {
        expires_at: Some(m(at)),
        ..g
    };
    let created = |g: Grant, at: i64| Grant {
        created_at: m(at),
        ..g
    };
    // Each case: two grants of 10, 5 used; the one listed first must be burnt.
    let cases = [
        ("priority", grant("b", 10, 1, 0), grant("a", 10, 2, 0)),
        (
            "expiry",
            expiring(grant("b", 10, 1, 0), 50),
            expiring(grant("a", 10, 1, 0), 55),
        ),
        (
            "expiry before none",
            expiring(grant("b", 10, 1, 0), 55),
            grant("a", 10, 1, 0),
        ),
        (
            "creation",
            created(grant("b", 10, 1, 0), -5),
            created(grant("a", 10, 1, 0), -1),
        ),
        ("id", grant("a", 10, 1, 0), grant("b", 10, 1, 0)),
    ];
    for (name, first, second) in cases {
        let grants = [second, first.clone()];
        let value = value_at(&ent, &grants, &[], &[(1, 5)], 10);
        let first_balance = value.grant_balances.iter().find(|(id, _)| *id == first.id);
        assert_eq!(first_balance.map(|(_, b)| *b), Some(dec(5)), "{name}");
        assert_eq!(value.balance, dec(15), "{name}");
    }
}

#[test]
fn overage_is_paid_by_a_grant_that_becomes_effective_later() {
    let ent = hourly(false, UsageKind::Additive);
    let grants = [grant("a", 10, 1, 0), grant("b", 20, 1, 30)];
    let events = [(5, 14)];
    let before = value_at(&ent, &grants, &[], &events, 20);
    assert_eq!(
        (before.balance, before.overage, before.usage),
        (dec(0), dec(4), dec(14))
    );
    let after = value_at(&ent, &grants, &[], &events, 40);
    assert_eq!((after.balance, after.overage), (dec(16), dec(0)));
    assert_eq!(after.total_available_grant_amount, dec(30));
}

#[test]
fn rollover_keeps_between_min_and_max() {
    let ent = hourly(false, UsageKind::Additive);
    // (used in the first hour, max_rollover, min_rollover, balance after the reset)
    let cases = [
        (3, 5, 0, 5),  // 7 left, capped at max
        (8, 5, 0, 2),  // 2 left, kept
        (10, 5, 3, 3), // 0 left, raised to min
        (0, 0, 0, 0),  // nothing rolls over
        (4, 10, 10, 10),
    ];
    for (used, max, min, expected) in cases {
        let g = Grant {
            max_rollover: dec(max),
            min_rollover: dec(min),
            ..grant("a", 10, 1, 0)
        };
        let value = value_at(&ent, &[g], &[], &[(10, used)], 61);
        assert_eq!(
            value.balance,
            dec(expected),
            "used {used}, max {max}, min {min}"
        );
        assert_eq!(value.usage, dec(0));
    }
}

#[test]
fn overage_is_preserved_or_forgiven_at_reset() {
    let g = Grant {
        max_rollover: dec(10),
        min_rollover: dec(10),
        ..grant("a", 10, 1, 0)
    };
    // 14 used against 10: overage 4 at the hourly reset; rollover refills to 10.
    let cases = [(true, 6, 0, 4), (false, 10, 0, 0)];
    for (preserve, balance, overage, grant_usage) in cases {
        let ent = hourly(preserve, UsageKind::Additive);
        let value = value_at(&ent, std::slice::from_ref(&g), &[], &[(10, 14)], 60);
        assert_eq!(value.balance, dec(balance), "preserve {preserve}");
        assert_eq!(value.overage, dec(overage), "preserve {preserve}");
        assert_eq!(
            value.total_available_grant_amount,
            dec(balance + grant_usage)
        );
    }
    // A manual reset uses its own flag, not the entitlement's.
    let ent = hourly(false, UsageKind::Additive);
    let reset = Reset {
        at: m(30),
        preserve_overage: true,
        retain_anchor: true,
    };
    let value = value_at(&ent, &[g], &[reset], &[(10, 14)], 30);
    assert_eq!((value.balance, value.overage), (dec(6), dec(0)));
}

#[test]
fn recurring_grant_refills_to_amount_ignoring_rollover() {
    let ent = Entitlement {
        usage_period: Recurrence {
            interval: Interval::Day,
            anchor: m(0),
        },
        ..hourly(false, UsageKind::Additive)
    };
    let g = Grant {
        recurrence: Some(Recurrence {
            interval: Interval::parse("PT15M").unwrap_or(Interval::Day),
            anchor: m(0),
        }),
        ..grant("a", 10, 1, 0)
    };
    let events = [(1, 4), (16, 12), (20, 3)];
    // At 30 the refill pays the overage of 5 at once; at 45 it refills again.
    let cases = [
        (14, 6, 0),
        (15, 10, 0),
        (17, 0, 2),
        (29, 0, 5),
        (30, 5, 0),
        (45, 10, 0),
    ];
    for (minute, balance, overage) in cases {
        let value = value_at(&ent, std::slice::from_ref(&g), &[], &events, minute);
        assert_eq!(
            (value.balance, value.overage),
            (dec(balance), dec(overage)),
            "minute {minute}"
        );
    }
}

#[test]
fn latest_meters_treat_grants_as_limits() {
    let ent = hourly(false, UsageKind::Latest);
    let grants = [grant("a", 10, 1, 0), grant("b", 5, 1, 20)];
    // Latest value 7 before minute 20; after b starts, the phase restarts at 15 and burns 9.
    let events = [(5, 7), (25, 9)];
    let before = value_at(&ent, &grants, &[], &events, 15);
    assert_eq!(before.balance, dec(3));
    let after = value_at(&ent, &grants, &[], &events, 30);
    assert_eq!(balances(&after), vec![("a", 1), ("b", 5)]);
    assert_eq!(after.usage, dec(16));
}

#[test]
fn voiding_a_grant_mid_period_drops_it() {
    let ent = hourly(false, UsageKind::Additive);
    let voided = Grant {
        voided_at: Some(m(30) + Duration::seconds(20)),
        ..grant("a", 10, 1, 0)
    };
    let grants = [voided, grant("b", 10, 2, 0)];
    let events = [(5, 4), (35, 3)];
    let before = value_at(&ent, &grants, &[], &events, 29);
    assert_eq!(balances(&before), vec![("a", 6), ("b", 10)]);
    let after = value_at(&ent, &grants, &[], &events, 40);
    assert_eq!(balances(&after), vec![("b", 7)]);
    assert_eq!(after.usage, dec(7));
}

#[test]
fn a_reset_without_retain_anchor_re_anchors_the_usage_period() {
    let ent = hourly(false, UsageKind::Additive);
    let resets = |retain_anchor| {
        [Reset {
            at: m(90),
            preserve_overage: false,
            retain_anchor,
        }]
    };
    let cases = [
        (false, 100, (m(90), m(150))),
        (false, 160, (m(150), m(210))),
        (true, 100, (m(90), m(120))),
        (true, 130, (m(120), m(180))),
        (true, 30, (m(0), m(60))),
    ];
    for (retain, minute, expected) in cases {
        assert_eq!(
            period_at(&ent, &resets(retain), m(minute)),
            Some(expected),
            "{retain} {minute}"
        );
    }
    let g = Grant {
        max_rollover: dec(10),
        ..grant("a", 10, 1, 0)
    };
    // Used 3 after the reset at 90; re-anchored, the next reset is at 150, not 120.
    let events = [(100, 3)];
    let value = value_at(&ent, std::slice::from_ref(&g), &resets(false), &events, 130);
    assert_eq!((value.balance, value.usage), (dec(7), dec(3)));
    let value = value_at(&ent, &[g], &resets(true), &events, 130);
    assert_eq!((value.balance, value.usage), (dec(7), dec(0)));
}

#[test]
fn resuming_from_a_state_equals_running_from_scratch() {
    let ent = hourly(true, UsageKind::Additive);
    let grants = [
        Grant {
            max_rollover: dec(4),
            ..grant("a", 10, 1, 0)
        },
        grant("b", 5, 0, 70),
    ];
    let events = [(10, 12), (65, 3), (80, 9)];
    let mut source = Events {
        events: events.to_vec(),
        latest: false,
    };
    let full = run(&ent, &grants, &[], None, m(150), &[], &mut source);
    let half = run(&ent, &grants, &[], None, m(70), &[], &mut source);
    let (Ok(full), Ok(half)) = (full, half) else {
        panic!("run failed")
    };
    let resumed = run(
        &ent,
        &grants,
        &[],
        Some(half.state),
        m(150),
        &[],
        &mut source,
    );
    assert_eq!(resumed.ok().map(|o| o.state), Some(full.state));
}

#[test]
fn bad_inputs_are_errors() {
    let ent = hourly(false, UsageKind::Additive);
    let mut source = Events {
        events: vec![],
        latest: false,
    };
    let zero = grant("a", 0, 1, 0);
    let negative_rollover = Grant {
        min_rollover: dec(-1),
        ..grant("a", 1, 1, 0)
    };
    let short = Entitlement {
        usage_period: Recurrence {
            interval: Interval::parse("PT30M").unwrap_or(Interval::Day),
            anchor: m(0),
        },
        ..ent
    };
    let reset = |at| Reset {
        at: m(at),
        preserve_overage: false,
        retain_anchor: false,
    };
    let cases: [(Entitlement, Vec<Grant>, Vec<Reset>, i64); 5] = [
        (ent, vec![zero], vec![], 10),
        (ent, vec![negative_rollover], vec![], 10),
        (short, vec![], vec![], 10),
        (ent, vec![], vec![reset(5), reset(5)], 10),
        (ent, vec![], vec![reset(0)], 10),
    ];
    for (ent, grants, resets, until) in cases {
        let result = run(&ent, &grants, &resets, None, m(until), &[], &mut source);
        assert!(
            matches!(result, Err(RunError::Invalid(_))),
            "{grants:?} {resets:?}"
        );
    }
    let before = run(&ent, &[], &[], None, m(-5), &[], &mut source);
    assert!(matches!(
        before,
        Err(RunError::Invalid(CreditError::UntilBeforeStart { .. }))
    ));
}
