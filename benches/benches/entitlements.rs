//! The in-process cost of an entitlement check: `Ledger::value_at` answered from its
//! cache (same minute), after one new usage sample (a recompute over the period's
//! minute series), and the credit engine's `run` over a month with 3 grants and
//! ~1000 usage minutes (what a recompute does, without the ledger around it).

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use metron_actors::customer::{Inputs, Ledger, Series, SeriesUsage, fold_sample, pack};
use metron_engine::aggregate::{Aggregation, SampleValue};
use metron_engine::credit::{self, Entitlement, Grant, Interval, Recurrence, UsageKind};
use metron_engine::quantity::Quantity;
use rust_decimal::Decimal;
use std::hint::black_box;

fn month_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

fn grant(id: &str, amount: i64, priority: u8, effective_at: DateTime<Utc>) -> Grant {
    Grant {
        id: id.into(),
        amount: Decimal::from(amount),
        priority,
        effective_at,
        expires_at: None,
        voided_at: None,
        deleted_at: None,
        created_at: effective_at,
        max_rollover: Decimal::ZERO,
        min_rollover: Decimal::ZERO,
        recurrence: None,
    }
}

/// A MONTH entitlement from 2026-01-01 with three grants: 1000 at the start
/// (priority 1), 500 on day 10 (priority 2, expiring on day 20) and 2000 on day 15
/// (priority 3).
fn inputs() -> Inputs {
    let start = month_start();
    let mut expiring = grant("01B", 500, 2, start + Duration::days(10));
    expiring.expires_at = Some(start + Duration::days(20));
    Inputs {
        entitlement: Entitlement {
            measure_usage_from: start,
            usage_period: Recurrence {
                interval: Interval::Month,
                anchor: start,
            },
            preserve_overage_at_reset: false,
            kind: UsageKind::Additive,
        },
        grants: vec![
            grant("01A", 1000, 1, start),
            expiring,
            grant("01C", 2000, 3, start + Duration::days(15)),
        ],
        resets: Vec::new(),
    }
}

/// ~1000 usage minutes spread over the first 29 days of the month (one every 40 minutes).
fn series() -> Series {
    let start = month_start().timestamp_millis();
    let mut series = Series::new();
    for i in 0..1000i64 {
        let t = start + i * 40 * 60_000 + 1_000;
        fold_sample(
            &mut series,
            Aggregation::Sum,
            t,
            &SampleValue::Number(Quantity::new(150 + i % 100, 2)),
        );
    }
    series
}

/// The instant the checks run at: day 28, after the last sample of the series.
fn now() -> DateTime<Utc> {
    month_start() + Duration::days(28) + Duration::hours(2) + Duration::seconds(30)
}

fn value_at(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger_value_at");
    let mut ledger = Ledger::new(inputs(), Aggregation::Sum, series());
    let t = now();
    // Warm the cache (and move the base to the period start) once.
    if let Err(e) = ledger.value_at(t) {
        eprintln!("value_at failed: {e}");
        return;
    }
    group.bench_function("cached_same_minute", |b| {
        b.iter(|| ledger.value_at(black_box(t)).map(|v| v.value.balance))
    });
    let one = SampleValue::Number(Quantity::ONE);
    let sample_ms = t.timestamp_millis() - 10_000;
    group.bench_function("after_one_sample_recompute", |b| {
        b.iter(|| {
            let _ = ledger.add(black_box(sample_ms), &one);
            ledger.value_at(black_box(t)).map(|v| v.value.balance)
        })
    });
    group.finish();
}

fn engine_run(c: &mut Criterion) {
    let inputs = inputs();
    let series = series();
    let until = now();
    c.bench_function("credit_run_month_3_grants_1000_minutes", |b| {
        b.iter(|| {
            let mut usage = SeriesUsage { series: &series };
            credit::run(
                &inputs.entitlement,
                &inputs.grants,
                &inputs.resets,
                None,
                black_box(until),
                &[],
                &mut usage,
            )
            .map(|o| o.value(&inputs.grants).balance)
            .ok()
        })
    });
}

/// A customer at rest is packed; its next read unpacks it and runs the engine once
/// (the cache is not packed). Per ledger: a light one (2 usage minutes, as in the HTTP
/// bench) and the month of 1000 minutes.
fn pack_unpack(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger_pack");
    let t = now();
    let light: Series = series().split_off(&(t.timestamp_millis() - 80 * 60_000));
    for (name, series) in [("2_minutes", light), ("1000_minutes", series())] {
        let mut ledger = Ledger::new(inputs(), Aggregation::Sum, series);
        if ledger.value_at(t).is_err() {
            return;
        }
        let mut w = pack::Writer::default();
        ledger.pack(&mut w);
        let bytes = w.bytes;
        eprintln!("ledger_pack/{name}: {} bytes packed", bytes.len());
        group.bench_function(format!("pack_{name}"), |b| {
            b.iter(|| {
                let mut w = pack::Writer::default();
                ledger.pack(&mut w);
                w.bytes.len()
            })
        });
        group.bench_function(format!("unpack_and_first_read_{name}"), |b| {
            b.iter(|| {
                Ledger::unpack(&mut pack::Reader::new(black_box(&bytes)))
                    .ok()
                    .and_then(|mut l| l.value_at(t).ok())
                    .map(|v| v.value.balance)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, value_at, engine_run, pack_unpack);
criterion_main!(benches);
