//! The dedup index's insert throughput: 1M new keys in batches of 1,000 (spilling to
//! runs past the in-memory share), a checkpoint, then 1M keys of which half repeat keys
//! that are mostly on disk. Moved here from the storage tests, where it measured on every
//! test run. `cargo bench -p metron-benches --bench dedup`.

use criterion::{Criterion, criterion_group, criterion_main};
use metron_storage::dedup::{DedupConfig, DedupIndex};
use std::hint::black_box;

const T0: i64 = 1_700_000_000_000;

/// Random 128-bit keys (splitmix64).
fn keys(seed: u64, n: usize) -> Vec<u128> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|_| (u128::from(next()) << 64) | u128::from(next()))
        .collect()
}

fn dedup(c: &mut Criterion) {
    let fresh = keys(17, 1_000_000);
    let mixed: Vec<u128> = fresh
        .iter()
        .step_by(2)
        .copied()
        .chain(keys(18, 500_000))
        .collect();
    let mut group = c.benchmark_group("dedup");
    group.sample_size(10);
    group.bench_function("1M new keys, checkpoint, 1M keys half repeated", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let cfg = DedupConfig {
                memory_keys_max: 100_000,
                ..DedupConfig::default()
            };
            let mut index = DedupIndex::open(dir.path(), cfg, None).expect("open");
            for (i, chunk) in fresh.chunks(1_000).enumerate() {
                index.insert_batch(chunk, T0 + i as i64).expect("insert");
            }
            index.checkpoint(T0 + 1_000).expect("checkpoint");
            let mut new = 0usize;
            for chunk in mixed.chunks(1_000) {
                new += index
                    .insert_batch(chunk, T0 + 2_000)
                    .expect("insert")
                    .iter()
                    .filter(|&&n| n)
                    .count();
            }
            assert_eq!(new, 500_000);
            black_box(index.stats())
        });
    });
    group.finish();
}

/// Lookups of new keys once the filters are far larger than the CPU's caches: 24M keys on
/// disk with 48 MiB of filters (the shape of a long ingest run at a 128 MiB budget, scaled
/// down), then batches of 1,000 keys never seen (drawn fresh, so the index keeps growing
/// as it would under ingest: the figure is an average over 24M to about 50M keys). Each key
/// checks its slot in the memory table and one block in each run's filter, tens of MiB
/// apart, and reads the disk when a filter says "maybe". Prints the disk probes per key.
fn dedup_large(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = DedupConfig {
        memory_budget_bytes: 56 << 20,
        ..DedupConfig::default()
    };
    let mut index = DedupIndex::open(dir.path(), cfg, None).expect("open");
    for (i, chunk) in keys(21, 24_000_000).chunks(1_000).enumerate() {
        index.insert_batch(chunk, T0 + i as i64).expect("insert");
    }
    index.checkpoint(T0 + 100_000).expect("checkpoint");
    let before = index.stats();
    let mut seed = 22u64;
    let mut looked_up = 0usize;
    let mut group = c.benchmark_group("dedup");
    group.sample_size(10);
    group.bench_function(
        "100k new keys against 24M+ on disk (48 MiB of filters)",
        |b| {
            b.iter_batched(
                || {
                    seed += 1;
                    keys(seed, 100_000)
                },
                |batch| {
                    let mut new = 0usize;
                    for chunk in batch.chunks(1_000) {
                        new += index
                            .insert_batch(chunk, T0 + 200_000)
                            .expect("insert")
                            .iter()
                            .filter(|&&n| n)
                            .count();
                    }
                    looked_up += batch.len();
                    assert_eq!(new, batch.len(), "every key is new");
                    black_box(new)
                },
                criterion::BatchSize::PerIteration,
            );
        },
    );
    group.finish();
    let after = index.stats();
    println!(
        "runs {} -> {}, filters {} MiB, keys looked up {}, disk probes per key {:.3}",
        before.runs,
        after.runs,
        after.bloom_bytes >> 20,
        looked_up,
        (after.disk_lookups - before.disk_lookups) as f64 / looked_up.max(1) as f64,
    );
}

criterion_group!(benches, dedup, dedup_large);
criterion_main!(benches);
