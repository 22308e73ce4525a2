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

criterion_group!(benches, dedup);
criterion_main!(benches);
