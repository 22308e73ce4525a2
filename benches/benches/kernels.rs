//! Kernels of the metering hot path: folding samples into aggregate states (per
//! aggregation), merging states, window edges in a DST zone, and evaluating a meter
//! query over 100k minute rollups into DAY windows in America/Los_Angeles.

use criterion::{Criterion, criterion_group, criterion_main};
use metron_engine::aggregate::{AggState, Aggregation, SampleValue};
use metron_engine::quantity::Quantity;
use metron_engine::query::{MeterQuery, RollupRow, evaluate};
use metron_engine::window::{WindowSize, parse_zone, utc_from_ms, window_of};
use std::hint::black_box;

fn sample(aggregation: Aggregation, i: i64) -> SampleValue {
    match aggregation {
        Aggregation::Count => SampleValue::One,
        Aggregation::UniqueCount => SampleValue::Text(format!("user-{}", i % 1000)),
        _ => SampleValue::Number(Quantity::new(i % 10_000, 2)),
    }
}

fn fold(c: &mut Criterion) {
    let mut group = c.benchmark_group("fold_10k_samples");
    for aggregation in Aggregation::ALL {
        let samples: Vec<SampleValue> = (0..10_000).map(|i| sample(aggregation, i)).collect();
        group.bench_function(aggregation.as_str(), |b| {
            b.iter(|| {
                let mut state = AggState::from_sample(aggregation, &samples[0], 0);
                for (i, s) in samples.iter().enumerate().skip(1) {
                    if let Some(st) = state.as_mut() {
                        st.fold(black_box(s), i as i64);
                    }
                }
                state
            })
        });
    }
    group.finish();
}

fn merge(c: &mut Criterion) {
    let states: Vec<AggState> = (0..10_000)
        .map(|i| AggState::Avg {
            sum: Quantity::new(i, 1),
            count: 1,
        })
        .collect();
    c.bench_function("merge_10k_avg_states", |b| {
        b.iter(|| {
            let mut acc = AggState::Avg {
                sum: Quantity::ZERO,
                count: 0,
            };
            for s in &states {
                acc.merge(black_box(s));
            }
            acc
        })
    });
}

fn windows(c: &mut Criterion) {
    let tz = parse_zone("America/Los_Angeles").unwrap_or(chrono_tz::Tz::UTC);
    let start = 1_735_689_600_000_i64; // 2025-01-01
    c.bench_function("window_of_day_la_1k_minutes", |b| {
        b.iter(|| {
            for i in 0..1000_i64 {
                black_box(window_of(
                    utc_from_ms(start + i * 6 * 3_600_000),
                    WindowSize::Day,
                    tz,
                ));
            }
        })
    });
}

fn query(c: &mut Criterion) {
    let tz = parse_zone("America/Los_Angeles").unwrap_or(chrono_tz::Tz::UTC);
    let start = 1_735_689_600_000_i64;
    let rows: Vec<RollupRow> = (0..100_000_i64)
        .map(|i| RollupRow {
            minute_ms: start + (i % 43_200) * 60_000,
            subject: format!("customer-{}", i % 100),
            group: vec![format!("model-{}", i % 4)],
            state: AggState::Sum(Quantity::new(i, 1)),
        })
        .collect();
    let keys = vec!["model".to_owned()];
    let q = MeterQuery {
        window_size: Some(WindowSize::Day),
        time_zone: tz,
        group_by: vec!["subject".into(), "model".into()],
        ..MeterQuery::default()
    };
    c.bench_function("evaluate_100k_rollups_day_la_by_subject_model", |b| {
        b.iter(|| evaluate(&keys, &q, rows.iter().cloned()))
    });
}

criterion_group!(benches, fold, merge, windows, query);
criterion_main!(benches);
