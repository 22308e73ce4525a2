use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::Path;

use proptest::prelude::*;

use super::bloom::Bloom;
use super::run::{self, RunWriter};
use super::*;

const T0: i64 = 1_700_000_000_000;

fn config(memory_keys_max: usize, memory_budget_bytes: usize, horizon_ms: i64) -> DedupConfig {
    DedupConfig {
        horizon_ms,
        memory_budget_bytes,
        memory_keys_max,
        ..DedupConfig::default()
    }
}

/// splitmix64-based generator of uniform keys (deterministic, no extra deps).
struct Keys(u64);

impl Keys {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        bloom::mix64(self.0)
    }

    fn key(&mut self) -> Key {
        (Key::from(self.next_u64()) << 64) | Key::from(self.next_u64())
    }

    fn take(&mut self, n: usize) -> Vec<Key> {
        (0..n).map(|_| self.key()).collect()
    }
}

fn run_files(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| run::parse_file_name(name).is_some())
        .collect()
}

fn names(state: &DedupState) -> BTreeSet<String> {
    state.runs.iter().map(|r| r.file_name.clone()).collect()
}

fn assert_within_budget(index: &DedupIndex) {
    let s = index.stats();
    assert!(
        s.memory_bytes + s.bloom_bytes <= s.budget_bytes,
        "over budget: {s:?}"
    );
}

// Proves the key is length-prefixed (no ambiguity between field boundaries),
// deterministic, and that the inline and streaming hashing paths agree.
#[test]
fn dedup_key_is_length_prefixed_and_stable() {
    assert_ne!(dedup_key("a", "bc", "x"), dedup_key("ab", "c", "x"));
    assert_ne!(dedup_key("", "a", ""), dedup_key("a", "", ""));
    assert_eq!(
        dedup_key("ns", "src", "id-1"),
        dedup_key("ns", "src", "id-1")
    );
    let long = "x".repeat(300);
    let mut bytes = Vec::new();
    for part in ["ns", "src", long.as_str()] {
        bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
        bytes.extend_from_slice(part.as_bytes());
    }
    assert_eq!(
        dedup_key("ns", "src", &long),
        xxhash_rust::xxh3::xxh3_128(&bytes)
    );
    let short_bytes = [
        &2u64.to_le_bytes()[..],
        b"ns",
        &3u64.to_le_bytes(),
        b"src",
        &1u64.to_le_bytes(),
        b"7",
    ]
    .concat();
    assert_eq!(
        dedup_key("ns", "src", "7"),
        xxhash_rust::xxh3::xxh3_128(&short_bytes)
    );
}

// Proves new/duplicate answers within one batch (a repeated key is new only
// the first time) and across batches.
#[test]
fn new_then_duplicate_within_and_across_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut index = DedupIndex::open(dir.path(), DedupConfig::default(), None).expect("open");
    let (a, b, c) = (
        dedup_key("n", "s", "a"),
        dedup_key("n", "s", "b"),
        dedup_key("n", "s", "c"),
    );
    assert_eq!(
        index.insert_batch(&[a, b, a, 0, 0], T0).expect("insert"),
        [true, true, false, true, false]
    );
    assert_eq!(
        index.insert_batch(&[c, b, a, 0], T0 + 1).expect("insert"),
        [true, false, false, false]
    );
    assert_eq!(
        index.insert_batch(&[], T0 + 2).expect("insert"),
        Vec::<bool>::new()
    );
    assert_eq!(index.stats().keys_in_memory, 4);
}

// Proves duplicates are found in spilled runs on disk (small memory_keys_max
// forces many spills), including the extreme keys 0 and u128::MAX.
#[test]
fn duplicates_detected_across_spills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut index =
        DedupIndex::open(dir.path(), config(100, 1 << 20, i64::MAX), None).expect("open");
    let mut keys = Keys(1).take(5_000);
    keys.extend([0, Key::MAX, 1]);
    for chunk in keys.chunks(333) {
        assert!(
            index
                .insert_batch(chunk, T0)
                .expect("insert")
                .iter()
                .all(|&new| new)
        );
    }
    let s = index.stats();
    assert!(s.spills >= 49, "{s:?}");
    assert!(s.keys_in_memory < 100);
    for chunk in keys.chunks(777) {
        assert!(
            index
                .insert_batch(chunk, T0)
                .expect("insert")
                .iter()
                .all(|&new| !new)
        );
    }
    assert!(index.stats().disk_lookups > 0);
}

// Proves a checkpoint's state reopens to the same set of keys: keys inserted
// before the checkpoint (memory tier and spilled runs alike) are duplicates
// after reopening, and unseen keys are still new.
#[test]
fn duplicates_detected_after_reopen_from_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(1_000, 1 << 20, i64::MAX);
    let keys = Keys(2).take(3_500);
    let state = {
        let mut index = DedupIndex::open(dir.path(), cfg.clone(), None).expect("open");
        index.insert_batch(&keys, T0).expect("insert");
        index.checkpoint(T0).expect("checkpoint")
    };
    assert_eq!(state.runs.iter().map(|r| r.keys).sum::<u64>(), 3_500);
    assert_eq!(run_files(dir.path()), names(&state));
    let mut index = DedupIndex::open(dir.path(), cfg, Some(&state)).expect("reopen");
    assert!(
        index
            .insert_batch(&keys, T0 + 1)
            .expect("insert")
            .iter()
            .all(|&new| !new)
    );
    let fresh = Keys(3).take(100);
    assert!(
        index
            .insert_batch(&fresh, T0 + 1)
            .expect("insert")
            .iter()
            .all(|&new| new)
    );
}

// Proves crash semantics: after reopening from checkpoint state S, keys
// inserted before S are duplicates, keys inserted after S are new again even
// though they had been spilled to disk, and the run files S does not name are
// deleted by open.
#[test]
fn reopen_from_checkpoint_forgets_later_keys_and_deletes_their_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(500, 1 << 20, i64::MAX);
    let a = Keys(4).take(2_000);
    let b = Keys(5).take(2_000);
    let mut index = DedupIndex::open(dir.path(), cfg.clone(), None).expect("open");
    index.insert_batch(&a, T0).expect("insert A");
    let s = index.checkpoint(T0).expect("checkpoint");
    index.insert_batch(&b, T0 + 10).expect("insert B"); // 4 spills: B is on disk
    assert!(index.stats().runs as usize > s.runs.len());
    let before_crash = run_files(dir.path());
    assert!(before_crash.is_superset(&names(&s)) && before_crash.len() > s.runs.len());
    drop(index); // crash: no checkpoint after B

    let mut index = DedupIndex::open(dir.path(), cfg, Some(&s)).expect("reopen");
    assert_eq!(
        run_files(dir.path()),
        names(&s),
        "files written after S are deleted"
    );
    assert!(
        index
            .insert_batch(&a, T0 + 20)
            .expect("A")
            .iter()
            .all(|&new| !new)
    );
    assert!(
        index
            .insert_batch(&b, T0 + 20)
            .expect("B")
            .iter()
            .all(|&new| new)
    );
    // New runs never reuse the names of the deleted post-checkpoint files.
    let s2 = index.checkpoint(T0 + 30).expect("checkpoint");
    let max_before = before_crash
        .iter()
        .filter_map(|n| run::parse_file_name(n))
        .max();
    for name in names(&s2).difference(&names(&s)) {
        assert!(
            run::parse_file_name(name) > max_before,
            "{name} reuses a name"
        );
    }
}

// Proves the horizon: a key stays a duplicate up to and including
// now - insert_time == horizon (in memory and on disk), becomes new once its
// whole run is past the horizon, and a key sharing a run with older keys is
// never expired early. Expired run files are deleted by the checkpoint after
// the one that dropped them.
#[test]
fn keys_expire_after_horizon_never_before() {
    const H: i64 = 10_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut index = DedupIndex::open(dir.path(), config(1_000, 1 << 20, H), None).expect("open");
    let a = Keys(6).take(300);
    let c = Keys(7).take(300);
    index.insert_batch(&a, T0).expect("A");
    index.insert_batch(&c, T0 + 5_000).expect("C"); // same run as A: [T0, T0+5000]
    let s1 = index.checkpoint(T0 + 5_000).expect("cp1");
    assert_eq!(s1.runs.len(), 1);
    for t in [T0 + 5_001, T0 + H] {
        assert!(
            index.insert_batch(&a, t).expect("A").iter().all(|&n| !n),
            "A early at {t}"
        );
    }
    // A is past the horizon but shares a run with C: may survive (it does).
    assert!(
        index
            .insert_batch(&a, T0 + H + 1)
            .expect("A")
            .iter()
            .all(|&n| !n)
    );
    assert!(
        index
            .insert_batch(&c, T0 + 5_000 + H)
            .expect("C")
            .iter()
            .all(|&n| !n)
    );
    // Whole run past the horizon: every key is new again.
    assert!(
        index
            .insert_batch(&c, T0 + 5_000 + H + 1)
            .expect("C")
            .iter()
            .all(|&n| n)
    );
    assert!(
        index
            .insert_batch(&a, T0 + 5_000 + H + 1)
            .expect("A")
            .iter()
            .all(|&n| n)
    );
    let s2 = index.checkpoint(T0 + 5_000 + H + 1).expect("cp2");
    assert!(
        names(&s2).is_disjoint(&names(&s1)),
        "expired run dropped from the state"
    );
    assert!(
        run_files(dir.path()).is_superset(&names(&s1)),
        "but kept until the next checkpoint"
    );
    index.checkpoint(T0 + 5_000 + H + 2).expect("cp3");
    assert!(run_files(dir.path()).is_disjoint(&names(&s1)));

    // Memory tier alone (never spilled): same boundary.
    let mut keys = Keys(8);
    let d = keys.take(50);
    let t = T0 + 100 * H;
    index.insert_batch(&d, t).expect("D");
    assert!(
        index
            .insert_batch(&d, t + H)
            .expect("D")
            .iter()
            .all(|&n| !n)
    );
    assert!(
        index
            .insert_batch(&d, t + H + 1)
            .expect("D")
            .iter()
            .all(|&n| n)
    );
}

// Proves the memory bound: with a small budget and 2 million keys (about 10%
// repeats), memory tier + bloom filters never exceed the budget, while every
// answer matches a HashSet reference; it also holds after reopening.
#[test]
fn memory_stays_within_budget_and_answers_stay_exact() {
    const BUDGET: usize = 2 << 20;
    const TOTAL: usize = 2_000_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(1_000_000, BUDGET, i64::MAX);
    let mut index = DedupIndex::open(dir.path(), cfg.clone(), None).expect("open");
    let mut reference: HashSet<Key> = HashSet::with_capacity(TOTAL);
    let mut seen: Vec<Key> = Vec::with_capacity(TOTAL);
    let mut rng = Keys(9);
    let mut state = DedupState::default();
    let mut batch = Vec::with_capacity(10_000);
    let mut inserted = 0;
    while inserted < TOTAL {
        batch.clear();
        for _ in 0..10_000 {
            let r = rng.next_u64();
            let key = if r.is_multiple_of(10) && !seen.is_empty() {
                seen[(r >> 8) as usize % seen.len()]
            } else {
                rng.key()
            };
            batch.push(key);
        }
        let now = T0 + inserted as i64;
        let got = index.insert_batch(&batch, now).expect("insert");
        for (&key, &new) in batch.iter().zip(&got) {
            assert_eq!(new, reference.insert(key), "key {key:x}");
            if new {
                seen.push(key);
            }
        }
        inserted += batch.len();
        assert_within_budget(&index);
        if inserted.is_multiple_of(200_000) {
            state = index.checkpoint(now).expect("checkpoint");
            assert_within_budget(&index);
        }
    }
    let s = index.stats();
    println!("budget test: {s:?}");
    assert!(s.keys_on_disk as usize + s.keys_in_memory as usize == reference.len());
    assert!(
        s.bloom_false_positives > 0,
        "a 2 MiB budget must starve the filters"
    );
    drop(index);
    let mut index = DedupIndex::open(dir.path(), cfg, Some(&state)).expect("reopen");
    assert_within_budget(&index);
    let sample: Vec<Key> = seen.iter().step_by(97).copied().collect();
    assert!(
        index
            .insert_batch(&sample, T0 + 1)
            .expect("insert")
            .iter()
            .all(|&n| !n)
    );
}

// Proves compaction keeps answers exact and cuts the run count, and that files
// named by the previous checkpoint state survive until the next checkpoint
// call, so reopening from that previous state (as after a failed manifest
// write) still works.
#[test]
fn compaction_is_exact_reduces_runs_and_defers_deletion() {
    let cfg = config(500, 1 << 20, i64::MAX);
    let rounds: Vec<Vec<Key>> = (0..4).map(|i| Keys(10 + i).take(2_000)).collect();
    // Each round is 4 spills of 500 keys, merged at its checkpoint into one
    // tier-1 run; the 4th checkpoint merges the 4 tier-1 runs into one.
    let build = |dir: &Path| {
        let mut index = DedupIndex::open(dir, cfg.clone(), None).expect("open");
        let mut states = Vec::new();
        for (i, round) in rounds.iter().enumerate() {
            for chunk in round.chunks(250) {
                assert!(
                    index
                        .insert_batch(chunk, T0 + i as i64)
                        .expect("insert")
                        .iter()
                        .all(|&n| n)
                );
            }
            assert_eq!(index.stats().runs as usize, i + 4);
            let state = index.checkpoint(T0 + i as i64).expect("checkpoint");
            if i < 3 {
                assert_eq!(
                    state.runs.len(),
                    i + 1,
                    "4 tier-0 runs merged into one: {state:?}"
                );
                assert_eq!(
                    run_files(dir),
                    names(&state),
                    "inputs no state named are deleted at once"
                );
            }
            states.push(state);
        }
        let (prev, last) = (&states[2], &states[3]);
        assert_eq!(last.runs.len(), 1, "{last:?}");
        assert_eq!(last.runs[0].keys, 8_000);
        assert!(
            names(prev).is_disjoint(&names(last)),
            "the previous runs were merged away"
        );
        assert_eq!(index.stats().compactions, 5);
        (index, prev.clone(), last.clone())
    };

    // Path 1: the caller recorded the last state and checkpoints again.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut index, prev, last) = build(dir.path());
    let files = run_files(dir.path());
    assert!(
        files.is_superset(&names(&prev)),
        "previous state's files survive the checkpoint that dropped them"
    );
    assert!(files.is_superset(&names(&last)));
    let all: Vec<Key> = rounds.concat();
    assert!(
        index
            .insert_batch(&all, T0 + 9)
            .expect("insert")
            .iter()
            .all(|&n| !n)
    );
    let next = index.checkpoint(T0 + 9).expect("checkpoint");
    assert_eq!(next, last);
    assert_eq!(
        run_files(dir.path()),
        names(&next),
        "previous-only files deleted by the next call"
    );

    // Path 2: the last state's manifest write failed; the caller reopens from the previous one.
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, prev, _last) = build(dir.path());
    drop(index);
    let mut index = DedupIndex::open(dir.path(), cfg.clone(), Some(&prev)).expect("reopen prev");
    assert_eq!(run_files(dir.path()), names(&prev));
    let before: Vec<Key> = rounds[..3].concat();
    assert!(
        index
            .insert_batch(&before, T0 + 9)
            .expect("insert")
            .iter()
            .all(|&n| !n)
    );
    assert!(
        index
            .insert_batch(&rounds[3], T0 + 9)
            .expect("insert")
            .iter()
            .all(|&n| n)
    );
}

fn write_raw_run(path: &Path, keys_be: &[Key], first: i64, last: i64) {
    // A run whose checksums are right but whose content may be wrong.
    let body: Vec<u8> = keys_be.iter().flat_map(|k| k.to_be_bytes()).collect();
    let mut header = Vec::new();
    header.extend_from_slice(&run::MAGIC);
    header.extend_from_slice(&run::VERSION.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&(keys_be.len() as u64).to_le_bytes());
    header.extend_from_slice(&first.to_le_bytes());
    header.extend_from_slice(&last.to_le_bytes());
    header.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes());
    let trailer = xxhash_rust::xxh3::xxh3_64(&header).to_le_bytes();
    fs::write(path, [header, body, trailer.to_vec()].concat()).expect("write");
}

// Proves that damaged run files (a flipped byte anywhere, truncation, keys out
// of order, disagreement with the state) make open return Error::Corrupt
// without panicking or deleting anything, that a missing run is MissingRun and
// a bad state InvalidState, and that the intact file still opens afterwards.
#[test]
fn corrupt_runs_are_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(10_000, 1 << 20, i64::MAX);
    let state = {
        let mut index = DedupIndex::open(dir.path(), cfg.clone(), None).expect("open");
        index
            .insert_batch(&Keys(12).take(1_000), T0)
            .expect("insert");
        index.checkpoint(T0).expect("checkpoint")
    };
    assert_eq!(state.runs.len(), 1);
    let path = dir.path().join(&state.runs[0].file_name);
    let good = fs::read(&path).expect("read");
    assert_eq!(good.len(), 48 + 16 * 1_000 + 8);
    let open = || DedupIndex::open(dir.path(), cfg.clone(), Some(&state));
    type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        ("magic", Box::new(|b| b[0] ^= 1)),
        ("version", Box::new(|b| b[8] ^= 1)),
        ("count", Box::new(|b| b[16] ^= 1)),
        ("first_ms", Box::new(|b| b[25] ^= 0x40)),
        ("body checksum", Box::new(|b| b[47] ^= 1)),
        ("first key", Box::new(|b| b[48] ^= 1)),
        ("middle key", Box::new(|b| b[48 + 16 * 500 + 7] ^= 0x80)),
        (
            "last key",
            Box::new(|b| {
                let n = b.len();
                b[n - 9] ^= 1
            }),
        ),
        (
            "trailer",
            Box::new(|b| {
                let n = b.len();
                b[n - 1] ^= 1
            }),
        ),
        ("truncated", Box::new(|b| b.truncate(b.len() - 16))),
        ("too short", Box::new(|b| b.truncate(20))),
        ("empty", Box::new(|b| b.clear())),
        ("extended", Box::new(|b| b.extend_from_slice(&[0; 16]))),
    ];
    for (what, mutate) in &mutations {
        let mut bad = good.clone();
        mutate(&mut bad);
        fs::write(&path, &bad).expect("write");
        match open() {
            Err(Error::Corrupt { path: p, reason }) => {
                assert_eq!(p, path, "{what}");
                assert!(!reason.is_empty());
            }
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
        assert!(path.exists(), "{what}: nothing deleted on error");
    }

    // Valid checksums, but keys not strictly ascending.
    let mut keys = Keys(13).take(100);
    keys.sort_unstable();
    keys.swap(40, 41);
    write_raw_run(&path, &keys, T0, T0);
    let mut unsorted_state = state.clone();
    unsorted_state.runs[0].keys = 100;
    unsorted_state.runs[0].first_insert_ms = T0;
    unsorted_state.runs[0].last_insert_ms = T0;
    // The state names another run (its checksum): refused before the keys are read.
    let err =
        DedupIndex::open(dir.path(), cfg.clone(), Some(&unsorted_state)).expect_err("another run");
    assert!(
        matches!(err, Error::Corrupt { ref reason, .. } if reason.contains("body checksum")),
        "{err}"
    );
    // A state without checksums (recorded before them) reads the keys, and finds them out
    // of order.
    unsorted_state.runs[0].checksum = None;
    let err =
        DedupIndex::open(dir.path(), cfg.clone(), Some(&unsorted_state)).expect_err("unsorted");
    assert!(
        matches!(err, Error::Corrupt { ref reason, .. } if reason.contains("ascending")),
        "{err}"
    );

    fs::write(&path, &good).expect("restore");
    let mut wrong = state.clone();
    wrong.runs[0].keys += 1;
    assert!(matches!(
        DedupIndex::open(dir.path(), cfg.clone(), Some(&wrong)),
        Err(Error::Corrupt { .. })
    ));
    let mut missing = state.clone();
    missing.runs[0].file_name = run::file_name(999);
    assert!(matches!(
        DedupIndex::open(dir.path(), cfg.clone(), Some(&missing)),
        Err(Error::MissingRun { .. })
    ));
    let mut bad_name = state.clone();
    bad_name.runs[0].file_name = "../etc/passwd".into();
    assert!(matches!(
        DedupIndex::open(dir.path(), cfg.clone(), Some(&bad_name)),
        Err(Error::InvalidState { .. })
    ));
    let mut twice = state.clone();
    twice.runs.push(twice.runs[0].clone());
    assert!(matches!(
        DedupIndex::open(dir.path(), cfg.clone(), Some(&twice)),
        Err(Error::InvalidState { .. })
    ));
    assert!(open().is_ok(), "intact file opens");
}

// Proves the fenced search is exact on non-uniform key sets (small integers, a
// dense cluster, a geometric spread): every present key is found, every absent
// neighbour is not, with at most two reads per probe (one for uniform keys, nearly always).
#[test]
fn run_search_is_exact_on_skewed_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sets: Vec<Vec<Key>> = vec![
        (1..=20_000).map(|i| i * 3).collect(),
        (0..20_000).map(|i| (Key::MAX / 2) + i * 7).collect(),
        (0..120).map(|i| 1u128 << i).collect(),
        Keys(14).take(30_000),
        vec![42],
        vec![5, 6],
    ];
    for (n, mut keys) in sets.into_iter().enumerate() {
        keys.sort_unstable();
        keys.dedup();
        let mut writer =
            RunWriter::create(dir.path().join(run::file_name(n as u64)), Bloom::none())
                .expect("create");
        for &k in &keys {
            writer.push(k).expect("push");
        }
        let run = writer.finish(n as u64, T0, T0).expect("finish");
        let set: HashSet<Key> = keys.iter().copied().collect();
        let mut reads = 0;
        let mut probes = 0;
        for &k in &keys {
            for probe in [k, k.wrapping_sub(1), k.wrapping_add(1)] {
                assert_eq!(
                    run.contains(probe, &mut reads).expect("contains"),
                    set.contains(&probe),
                    "set {n} key {probe}"
                );
                probes += 1;
            }
        }
        assert!(
            reads <= 2 * probes,
            "set {n}: {reads} reads for {probes} probes"
        );
    }
    // Uniform keys: one read per probe, but for a rare window that misses its key.
    let keys = {
        let mut k = Keys(15).take(1_000_000);
        k.sort_unstable();
        k
    };
    let mut writer =
        RunWriter::create(dir.path().join(run::file_name(100)), Bloom::none()).expect("create");
    for &k in &keys {
        writer.push(k).expect("push");
    }
    let run = writer.finish(100, T0, T0).expect("finish");
    let mut reads = 0;
    for &k in keys.iter().step_by(1_000) {
        assert!(run.contains(k, &mut reads).expect("contains"));
    }
    let mut absent = 0;
    for k in Keys(17).take(1_000) {
        absent += u64::from(run.contains(k, &mut reads).expect("contains"));
    }
    assert_eq!(absent, 0, "other keys are absent");
    assert!(reads <= 2_010, "{reads} reads for 2,000 lookups");
}

// Proves folding a bloom filter (halving it to give memory back) never
// creates a false negative, and that fit_to_budget respects the budget.
#[test]
fn bloom_fold_keeps_members_and_plan_fits_budget() {
    let keys = Keys(16).take(10_000);
    let mut bloom = Bloom::new(bloom::desired_blocks(10_000, 16.0), 10_000);
    for &k in &keys {
        bloom.insert(k);
    }
    while bloom.blocks() > 0 {
        assert!(
            keys.iter().all(|&k| bloom.may_contain(k)),
            "{} blocks",
            bloom.blocks()
        );
        bloom.fold();
    }
    assert!(bloom.may_contain(keys[0]), "no filter = maybe");
    let planned = |keys, blocks| bloom::Planned {
        keys,
        blocks,
        k: Some(4),
    };
    let mut plan = vec![
        planned(1_000, 64),
        planned(100_000, 4_096),
        planned(10, 1),
        planned(5_000, 1),
    ];
    bloom::fit_to_budget(&mut plan, 64 * 1_000);
    assert!(plan.iter().map(|p| p.blocks * 64).sum::<usize>() <= 64_000);
}

// Proves the budget goes where it saves the most disk probes: a new key is looked up in every
// run, so what counts is the sum of the filters' false-positive rates. Sizes as the tiered
// merges leave them (two large runs, three of each smaller tier), at about 5 bits per key.
// Equal bits per key (what the index did before) sums to more than the greedy plan, and the
// greedy plan gives small runs more bits per key than large ones.
#[test]
fn budget_plan_minimises_expected_probes() {
    let m = 1u64 << 20;
    let sizes = [
        64 * m,
        64 * m,
        16 * m,
        16 * m,
        16 * m,
        4 * m,
        4 * m,
        4 * m,
        m,
        m,
        m,
    ];
    let total: u64 = sizes.iter().sum();
    let budget = usize::try_from(total * 5 / 8).expect("fits");
    let mut plan: Vec<bloom::Planned> = sizes
        .iter()
        .map(|&n| bloom::Planned::new_filter(n))
        .collect();
    bloom::fit_to_budget(&mut plan, budget);
    let bytes: usize = plan.iter().map(|p| p.blocks * 64).sum();
    assert!(bytes <= budget, "{bytes} > {budget}");
    let rate = |p: &bloom::Planned| {
        bloom::false_positive_rate(p.keys, p.blocks, bloom::k_for(p.blocks, p.keys))
    };
    let greedy: f64 = plan.iter().map(rate).sum();
    let bits = |p: &bloom::Planned| p.blocks as f64 * 512.0 / p.keys as f64;
    assert!(bits(&plan[10]) > bits(&plan[0]), "{plan:?}");

    // Equal shares: every filter at the budget's bits per key, rounded down to fit.
    let mut even: Vec<bloom::Planned> = sizes
        .iter()
        .map(|&n| bloom::Planned {
            keys: n,
            blocks: bloom::desired_blocks(n, 5.0),
            k: None,
        })
        .collect();
    while even.iter().map(|p| p.blocks * 64).sum::<usize>() > budget {
        if let Some(fattest) = even.iter_mut().max_by(|x, y| bits(x).total_cmp(&bits(y))) {
            fattest.blocks /= 2;
        }
    }
    let uniform: f64 = even.iter().map(rate).sum();
    assert!(
        greedy < uniform * 0.8,
        "greedy {greedy:.3} probes per new key, even shares {uniform:.3}"
    );
}

// Proves a directory can be open by one index at a time, and that an I/O
// error poisons the index instead of letting it answer from a half-applied batch.
#[test]
fn directory_lock_and_poisoning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("p0");
    let mut index = DedupIndex::open(&sub, config(10, 1 << 20, i64::MAX), None).expect("open");
    assert!(matches!(
        DedupIndex::open(&sub, DedupConfig::default(), None),
        Err(Error::Locked { .. })
    ));
    index.insert_batch(&[1, 2, 3], T0).expect("insert");
    fs::remove_dir_all(&sub).expect("remove dir");
    let err = index
        .insert_batch(&(10..30).collect::<Vec<Key>>(), T0)
        .expect_err("spill fails");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(matches!(index.insert_batch(&[1], T0), Err(Error::Poisoned)));
    assert!(matches!(index.checkpoint(T0), Err(Error::Poisoned)));
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Vec<u16>, i64),
    Checkpoint(i64),
    Reopen,
    Spill,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec(0u16..400, 0..40), 0i64..400).prop_map(|(k, dt)| Op::Insert(k, dt)),
        2 => (0i64..400).prop_map(Op::Checkpoint),
        1 => Just(Op::Reopen),
        1 => Just(Op::Spill),
    ]
}

/// Small key space; a third of the keys are tiny integers (non-uniform).
fn model_key(x: u16) -> Key {
    if x.is_multiple_of(3) {
        Key::from(x)
    } else {
        Key::from(x).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    // Proves, against a reference model, that any sequence of batches,
    // checkpoints, spills and crash-reopens from the last checkpoint state
    // answers exactly: unseen keys are new, keys seen within the horizon are
    // duplicates (keys past the horizon may be either), a reopen forgets what
    // came after the checkpoint; and that after every checkpoint the directory
    // holds exactly the runs of the current and the previous state, and memory
    // stays within budget.
    #[test]
    fn matches_reference_model(
        memory_keys_max in 3usize..40,
        horizon in prop_oneof![Just(i64::MAX), 500i64..3_000],
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(memory_keys_max, 0, horizon);
        let mut index = Some(DedupIndex::open(dir.path(), cfg.clone(), None).expect("open"));
        let mut model: HashMap<Key, i64> = HashMap::new();
        let mut checkpointed_model = model.clone();
        let mut last_state = DedupState::default();
        let mut now = T0;
        for op in ops {
            let idx = index.as_mut().expect("index");
            match op {
                Op::Insert(xs, dt) => {
                    now += dt;
                    let keys: Vec<Key> = xs.iter().map(|&x| model_key(x)).collect();
                    let got = idx.insert_batch(&keys, now).expect("insert");
                    for (key, new) in keys.iter().zip(got) {
                        match model.get(key) {
                            None => prop_assert!(new, "unseen key {key:x} reported duplicate"),
                            Some(&t) if now - t <= horizon => {
                                prop_assert!(!new, "key {key:x} from {t} new at {now}");
                            }
                            Some(_) => {}
                        }
                        if new {
                            model.insert(*key, now);
                        }
                    }
                }
                Op::Checkpoint(dt) => {
                    now += dt;
                    let state = idx.checkpoint(now).expect("checkpoint");
                    let expected: BTreeSet<String> = names(&state).union(&names(&last_state)).cloned().collect();
                    prop_assert_eq!(run_files(dir.path()), expected);
                    prop_assert_eq!(
                        state.runs.iter().map(|r| r.keys).sum::<u64>(),
                        idx.stats().keys_on_disk
                    );
                    last_state = state;
                    checkpointed_model = model.clone();
                }
                Op::Reopen => {
                    drop(index.take());
                    let idx = DedupIndex::open(dir.path(), cfg.clone(), Some(&last_state)).expect("reopen");
                    prop_assert_eq!(run_files(dir.path()), names(&last_state));
                    index = Some(idx);
                    model = checkpointed_model.clone();
                }
                Op::Spill => idx.spill().expect("spill"),
            }
            let idx = index.as_ref().expect("index");
            let s = idx.stats();
            prop_assert!(s.memory_bytes + s.bloom_bytes <= s.budget_bytes, "{:?}", s);
        }
    }
}

// Proves the migration from per-partition indexes: every key another index holds (on
// disk and in memory) is a duplicate in the index that absorbed it, and keeps its run's
// insert time, so it expires when it would have, never sooner.
#[test]
fn an_absorbed_index_keeps_its_keys_and_their_times() {
    let (a, b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let horizon = 1_000_000;
    let cfg = config(1_000, 1 << 20, horizon);
    let old = Keys(7).take(2_500);
    let mut other = DedupIndex::open(a.path(), cfg.clone(), None).expect("open");
    other.insert_batch(&old[..2_000], T0).expect("insert");
    let state = other.checkpoint(T0).expect("checkpoint");
    drop(other);
    let mut other = DedupIndex::open(a.path(), cfg.clone(), Some(&state)).expect("reopen");
    other.insert_batch(&old[2_000..], T0 + 10).expect("insert");
    let mut global = DedupIndex::open(b.path(), cfg, None).expect("open");
    global.absorb(other).expect("absorb");
    assert!(
        global
            .insert_batch(&old, T0 + 20)
            .expect("insert")
            .iter()
            .all(|&new| !new)
    );
    let fresh = Keys(8).take(10);
    assert!(
        global
            .insert_batch(&fresh, T0 + 20)
            .expect("insert")
            .iter()
            .all(|&new| new)
    );
    // Past the horizon of the old keys' times they are new again.
    let late = T0 + 10 + horizon * 3;
    global.checkpoint(late).expect("checkpoint");
    assert!(
        global
            .insert_batch(&old[..10], late)
            .expect("insert")
            .iter()
            .all(|&new| new)
    );
}

// Proves the two-step checkpoint: the state `install` returns holds exactly the keys
// inserted before `rotate`; keys inserted while the frozen tier is written are
// duplicates in the running index (as are the frozen ones) but not in that state, so a
// reopen from it treats them as new, as a replay from that checkpoint must.
#[test]
fn a_rotated_checkpoint_holds_exactly_the_keys_before_the_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(10_000, 4 << 20, i64::MAX);
    let before = Keys(11).take(3_000);
    let during = Keys(12).take(500);
    let state = {
        let mut index = DedupIndex::open(dir.path(), cfg.clone(), None).expect("open");
        index.insert_batch(&before, T0).expect("insert");
        let job = index.rotate(T0).expect("rotate");
        assert!(
            index
                .insert_batch(&before, T0 + 1)
                .expect("insert")
                .iter()
                .all(|&new| !new)
        );
        assert!(
            index
                .insert_batch(&during, T0 + 1)
                .expect("insert")
                .iter()
                .all(|&new| new)
        );
        let spilled = std::thread::spawn(move || job.write())
            .join()
            .expect("thread")
            .expect("write");
        let state = index.install(spilled, T0 + 2).expect("install");
        assert!(
            index
                .insert_batch(&during, T0 + 3)
                .expect("insert")
                .iter()
                .all(|&new| !new)
        );
        assert_within_budget(&index);
        // A second rotation reuses the first table.
        let job = index.rotate(T0 + 4).expect("rotate");
        let spilled = job.write().expect("write");
        index.install(spilled, T0 + 5).expect("install");
        state
    };
    assert_eq!(state.runs.iter().map(|r| r.keys).sum::<u64>(), 3_000);
    let mut index = DedupIndex::open(dir.path(), cfg, Some(&state)).expect("reopen");
    assert!(
        index
            .insert_batch(&before, T0 + 6)
            .expect("insert")
            .iter()
            .all(|&new| !new)
    );
    assert!(
        index
            .insert_batch(&during, T0 + 6)
            .expect("insert")
            .iter()
            .all(|&new| new)
    );
}

// Proves the checkpoint a rotation began leaves out runs spilled after the rotation: with a
// memory tier of 64 keys, 1 000 keys inserted while the frozen tier is written fill the new
// one many times over (spills, and merges inside inserts), yet the state `install` returns
// names only the keys from before the rotation, so a reopen from it (a replay from that
// checkpoint) finds every later key new; the next checkpoint names them.
#[test]
fn runs_spilled_while_a_rotated_tier_is_written_stay_out_of_its_checkpoint() {
    for background_merges in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = DedupConfig {
            background_merges,
            ..config(64, 1 << 20, i64::MAX)
        };
        let before = Keys(21).take(300);
        let during = Keys(22).take(1_000);
        let (first, second) = {
            let mut index = DedupIndex::open(dir.path(), cfg.clone(), None).expect("open");
            index.insert_batch(&before, T0).expect("insert");
            let job = index.rotate(T0).expect("rotate");
            for chunk in during.chunks(10) {
                assert!(
                    index
                        .insert_batch(chunk, T0 + 1)
                        .expect("insert")
                        .iter()
                        .all(|&new| new)
                );
                if background_merges && let Some(merge) = index.plan_merge(T0 + 1).expect("plan") {
                    let merged = merge.run().expect("merge");
                    index.install_merge(merged).expect("install merge");
                }
            }
            assert!(index.stats().spills > 0, "the new tier never filled");
            let spilled = job.write().expect("write");
            let first = index.install(spilled, T0 + 2).expect("install");
            assert!(
                index
                    .insert_batch(&during, T0 + 3)
                    .expect("insert")
                    .iter()
                    .all(|&new| !new)
            );
            let job = index.rotate(T0 + 4).expect("rotate");
            let spilled = job.write().expect("write");
            let second = index.install(spilled, T0 + 5).expect("install");
            (first, second)
        };
        assert_eq!(
            first.runs.iter().map(|r| r.keys).sum::<u64>(),
            300,
            "background merges: {background_merges}"
        );
        assert_eq!(second.runs.iter().map(|r| r.keys).sum::<u64>(), 1_300);
        // Both states' files are still there: the first's are deleted at the checkpoint after
        // the second at the earliest.
        let mut index = DedupIndex::open(dir.path(), cfg.clone(), Some(&first)).expect("reopen");
        assert!(
            index
                .insert_batch(&before, T0 + 6)
                .expect("insert")
                .iter()
                .all(|&new| !new)
        );
        assert!(
            index
                .insert_batch(&during, T0 + 6)
                .expect("insert")
                .iter()
                .all(|&new| new),
            "keys inserted after the rotation are duplicates in its checkpoint \
             (background merges: {background_merges})"
        );
    }
}

// Proves a merge run in the background keeps the index exact: while the job runs (no
// index lock), inserts see the merged runs through their joined filter, a checkpoint
// names them, and an index reopened from that checkpoint has every key; a failed job
// leaves them under merge and the next plan retries; a merge's unfinished output is
// deleted when an index opens.
#[test]
fn background_merges_stay_exact_through_checkpoints_and_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = DedupConfig {
        background_merges: true,
        ..config(500, 1 << 20, i64::MAX)
    };
    let mut index = DedupIndex::open(dir.path(), cfg.clone(), None).expect("open");
    let first = Keys(40).take(2_000);
    assert!(
        index
            .insert_batch(&first, T0)
            .expect("insert")
            .iter()
            .all(|&n| n)
    );
    let state = index.checkpoint(T0).expect("checkpoint");
    assert_eq!(
        state.runs.len(),
        4,
        "no merge inside a checkpoint: {state:?}"
    );
    assert_eq!(index.stats().compactions, 0);

    // A job that fails (its output path is taken) leaves the runs under merge.
    let job = index
        .plan_merge(T0)
        .expect("plan")
        .expect("4 tier-0 runs to merge");
    assert!(
        index.plan_merge(T0).expect("plan").is_none(),
        "one merge at a time"
    );
    let seq = job.seq();
    fs::write(dir.path().join(run::merge_file_name(seq)), b"clash").expect("clash");
    assert!(job.run().is_err());
    index.merge_failed(seq);
    assert!(
        index
            .insert_batch(&first, T0 + 1)
            .expect("insert")
            .iter()
            .all(|&n| !n)
    );

    // The retry, with inserts and a checkpoint while it runs.
    let job = index.plan_merge(T0 + 1).expect("plan").expect("retry");
    let second = Keys(41).take(300);
    assert!(
        index
            .insert_batch(&second, T0 + 2)
            .expect("insert")
            .iter()
            .all(|&n| n)
    );
    assert!(
        index
            .insert_batch(&first, T0 + 2)
            .expect("insert")
            .iter()
            .all(|&n| !n)
    );
    assert_within_budget(&index);
    let during = index
        .checkpoint(T0 + 2)
        .expect("checkpoint during the merge");
    assert_eq!(
        during.runs.len(),
        5,
        "the 4 under merge and the new spill: {during:?}"
    );
    let merged = job.run().expect("merge");
    index.install_merge(merged).expect("install");
    assert_eq!(index.stats().compactions, 1);
    assert_eq!(index.stats().runs, 2);
    assert_within_budget(&index);
    let all: Vec<Key> = first.iter().chain(&second).copied().collect();
    assert!(
        index
            .insert_batch(&all, T0 + 3)
            .expect("insert")
            .iter()
            .all(|&n| !n)
    );
    let after = index.checkpoint(T0 + 3).expect("checkpoint");
    assert_eq!(after.runs.len(), 2, "{after:?}");
    assert!(
        run_files(dir.path()).is_superset(&names(&during)),
        "the merged runs' files outlive the checkpoint that stopped naming them"
    );

    // Reopen from the state taken during the merge, with a stray unfinished merge output.
    drop(index);
    fs::write(dir.path().join(run::merge_file_name(999)), b"partial").expect("stray");
    let mut index = DedupIndex::open(dir.path(), cfg, Some(&during)).expect("reopen");
    assert!(
        index
            .insert_batch(&all, T0 + 4)
            .expect("insert")
            .iter()
            .all(|&n| !n)
    );
    assert!(
        !dir.path().join(run::merge_file_name(999)).exists(),
        "unfinished merge output deleted at open"
    );
}

// Proves the union of filters keeps every member of each.
#[test]
fn bloom_union_keeps_members() {
    let sets: Vec<Vec<Key>> = (0..4).map(|i| Keys(50 + i).take(5_000)).collect();
    let filters: Vec<Bloom> = sets
        .iter()
        .enumerate()
        .map(|(i, keys)| {
            let mut b = Bloom::new(bloom::desired_blocks(5_000, 4.0 + 4.0 * i as f64), 5_000);
            for &k in keys {
                b.insert(k);
            }
            b
        })
        .collect();
    let union = Bloom::union(filters);
    assert!(union.blocks() > 0);
    assert!(sets.iter().flatten().all(|&k| union.may_contain(k)));
    let absent = Keys(99).take(10_000);
    let fp = absent.iter().filter(|&&k| union.may_contain(k)).count();
    assert!(
        fp < absent.len(),
        "a union is still a filter: {fp} of 10,000"
    );
}
