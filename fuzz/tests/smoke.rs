//! The fuzz targets as a normal test: every corpus file (of every target) through each
//! target, then a bounded, seeded random-mutation loop per target. No fuzzer needed.
//!
//! `METRON_FUZZ_SEED=N` replays the mutation loops with another seed (each test prints
//! the one it used), `METRON_FUZZ_CASES=N` sets the number of mutated cases per target.
//! A panic fails the test with the target, seed, case, panic message and the input in
//! hex; the input is also written to a file in the system's temporary directory.
//!
//! `cargo test -p metron-fuzz -- --ignored write_seeds` rewrites the binary seeds
//! (`segment` and `dedup_run` corpora, files named `w-*`) with the real writers.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use anyhow::{Context as _, Result};

/// Panics seen by the hook, from any thread (a panic in a thread the code under test
/// started is not seen by `catch_unwind`).
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("?").to_owned();
            if let Ok(mut panics) = PANICS.lock() {
                panics.push(format!("thread {thread:?}: {info}"));
            }
            previous(info);
        }));
    });
}

fn take_panics() -> Vec<String> {
    PANICS
        .lock()
        .map(|mut p| std::mem::take(&mut *p))
        .unwrap_or_default()
}

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// The files of one target's corpus, sorted by name.
fn corpus(target: &str) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let dir = corpus_root().join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            Ok((p, data))
        })
        .collect()
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs one input; on a panic (here or in another thread) fails with everything
/// needed to reproduce it.
fn run_case(name: &str, target: metron_fuzz::Target, data: &[u8], what: &str) {
    let outcome = std::panic::catch_unwind(|| target(data));
    let panics = take_panics();
    if outcome.is_ok() && panics.is_empty() {
        return;
    }
    let file = std::env::temp_dir().join(format!(
        "metron-fuzz-{name}-{}.bin",
        what.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    ));
    let saved = match std::fs::write(&file, data) {
        Ok(()) => format!("saved as {}", file.display()),
        Err(e) => format!("could not save it: {e}"),
    };
    let shown = &data[..data.len().min(4096)];
    panic!(
        "target {name} panicked on {what} ({} bytes, {saved}; replay: cargo run -p metron-fuzz \
         --bin replay -- {name} FILE)\npanics: {panics:#?}\ninput (hex{}): {}",
        data.len(),
        if shown.len() < data.len() {
            ", first 4096 bytes"
        } else {
            ""
        },
        hex(shown)
    );
}

/// splitmix64: a small, fixed generator, so a seed means the same cases everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Tokens the mutator inserts: the vocabulary of the parsers under test.
const DICTIONARY: &[&[u8]] = &[
    b"\"id\":\"1\",",
    b"\"source\":\"s\",",
    b"\"type\":\"prompt\",",
    b"\"subject\":\"c\",",
    b"\"time\":\"2024-01-01T00:00:00Z\",",
    b"\"time\":\"9999-12-31T23:59:59.999999999-23:59\",",
    b"\"specversion\":\"1.0\",",
    b"\"datacontenttype\":\"application/json\",",
    b"\"data\":{\"tokens\":",
    b"\"data_base64\":",
    b"\"value\":\"1e-28\"",
    b"\"tokens\":79228162514264337593543950335",
    b"1e308",
    b"-0.0",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"\\u0000",
    b"$.",
    b"['",
    b"']",
    b"[18446744073709551615]",
    b"\"$like\":\"%a_\\\\%\"",
    b"\"$ilike\":\"%\"",
    b"\"$and\":[",
    b"\"$or\":[",
    b"\"$in\":[\"a\"]",
    b"\"$exists\":true",
    b"&windowSize=MONTH",
    b"&windowTimeZone=America%2FSt_Johns",
    b"&from=0000-01-01T00:00:00%2B23:59",
    b"&to=9999-12-31T23:59:59Z",
    b"&filterGroupBy%5Bmodel%5D=",
    b"&advancedMeterGroupByFilters=",
    b"&groupBy=customer_id&filterCustomerId=x",
    b"%FF",
    b"MTRDEDUP",
    b"\x01\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00\x00\x00\x00\x00",
    b"\x00\x00\x00\x00\x00\x00\x00\x80",
    b"metron-embedded-log 1\npartitions=1\n",
    b"\"version\":1,",
    b"\"partitions\":[{\"partition\":0,\"offset\":0,\"dedupRuns\":[",
    b"\"fileName\":\"run-0000000000000001.dat\",",
    b"\"timesUs\":[-9223372036854775808,9223372036854775807]",
];

const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'}', b'[', b']', b',', b':', b'0', b'9', b'-', b'.', b'e',
    b'\\', b'%', b'_', b'$', b'\n', b'&', b'=',
];

/// The largest input the mutator makes.
const MAX_INPUT: usize = 64 << 10;

/// One to four random edits of `input`: bit flips, interesting bytes, insertions,
/// deletions, duplicated chunks, dictionary tokens, splices with another corpus
/// input, truncation, small arithmetic on a byte or a u32.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, others: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(11) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let at = rng.below(len + 1);
                input.insert(at, rng.next() as u8);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below(16.min(len - at));
                input.drain(at..at + n);
            }
            4 if len > 0 => {
                let from = rng.below(len);
                let n = 1 + rng.below(64.min(len - from));
                let chunk = input[from..from + n].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, chunk);
            }
            5 => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())];
                let at = rng.below(len + 1);
                input.splice(at..at, token.iter().copied());
            }
            6 if len > 0 => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())];
                let at = rng.below(len);
                let end = (at + token.len()).min(len);
                input.splice(at..end, token.iter().copied());
            }
            7 if !others.is_empty() => {
                let other = &others[rng.below(others.len())];
                let keep = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(keep);
                input.extend_from_slice(&other[from..]);
            }
            8 if len > 0 => input.truncate(rng.below(len)),
            9 if len > 0 => {
                let at = rng.below(len);
                let delta = 1 + rng.below(35) as u8;
                input[at] = if rng.below(2) == 0 {
                    input[at].wrapping_add(delta)
                } else {
                    input[at].wrapping_sub(delta)
                };
            }
            10 if len >= 4 => {
                let at = rng.below(len - 3);
                let word =
                    u32::from_le_bytes([input[at], input[at + 1], input[at + 2], input[at + 3]]);
                let delta = 1 + rng.below(16) as u32;
                let word = if rng.below(2) == 0 {
                    word.wrapping_add(delta)
                } else {
                    word.wrapping_sub(delta)
                };
                input[at..at + 4].copy_from_slice(&word.to_le_bytes());
            }
            _ => input.push(rng.next() as u8),
        }
    }
    input.truncate(MAX_INPUT);
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// Corpus replay (every target's corpus) and the mutation loop for one target.
fn smoke(name: &str, default_cases: u64) -> Result<()> {
    install_panic_hook();
    let target = metron_fuzz::target(name).context("no such target")?;

    let mut replayed = 0usize;
    for (other, _) in metron_fuzz::TARGETS {
        for (path, data) in corpus(other)? {
            run_case(
                name,
                target,
                &data,
                &format!("corpus file {}", path.display()),
            );
            replayed += 1;
        }
    }

    let own: Vec<Vec<u8>> = corpus(name)?.into_iter().map(|(_, d)| d).collect();
    anyhow::ensure!(!own.is_empty(), "the corpus of {name} is empty");
    let seed = env_u64("METRON_FUZZ_SEED").unwrap_or(0x6d65_7472_6f6e);
    let cases = env_u64("METRON_FUZZ_CASES").unwrap_or(default_cases);
    println!(
        "{name}: replayed {replayed} corpus files; {cases} mutated cases, METRON_FUZZ_SEED={seed}"
    );
    // Each target gets its own stream, so one target's cases do not depend on another's.
    let mut rng = Rng(seed
        ^ name
            .bytes()
            .fold(0u64, |h, b| h.rotate_left(8) ^ u64::from(b)));
    for case in 0..cases {
        let mut input = own[rng.below(own.len())].clone();
        mutate(&mut rng, &mut input, &own);
        run_case(name, target, &input, &format!("case {case} of seed {seed}"));
    }
    Ok(())
}

#[test]
fn events() -> Result<()> {
    smoke("events", 4000)
}

#[test]
fn jsonpath() -> Result<()> {
    smoke("jsonpath", 4000)
}

#[test]
fn filter() -> Result<()> {
    smoke("filter", 4000)
}

#[test]
fn query() -> Result<()> {
    smoke("query", 4000)
}

#[test]
fn segment() -> Result<()> {
    smoke("segment", 1500)
}

#[test]
fn dedup_run() -> Result<()> {
    smoke("dedup_run", 2000)
}

#[test]
fn manifest() -> Result<()> {
    smoke("manifest", 3000)
}

#[test]
fn every_target_has_a_corpus_a_dictionary_and_a_test() -> Result<()> {
    let names: Vec<&str> = metron_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
    let source = include_str!("smoke.rs");
    for name in &names {
        anyhow::ensure!(!corpus(name)?.is_empty(), "fuzz/corpus/{name} has no seed");
        anyhow::ensure!(
            source.contains(&format!("smoke(\"{name}\", ")),
            "no smoke test runs {name}"
        );
        let dict = corpus_root().join(format!("../dict/{name}.dict"));
        anyhow::ensure!(dict.is_file(), "{} is missing", dict.display());
    }
    let mut dirs: Vec<String> = std::fs::read_dir(corpus_root())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    dirs.sort();
    let mut expected: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    expected.sort();
    anyhow::ensure!(
        dirs == expected,
        "corpus directories {dirs:?} are not the targets {expected:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Binary seeds from the real writers.

/// A frame of the embedded log: u32 LE length, u32 LE crc32 of (length, payload), payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(payload);
    let mut out = len.to_le_bytes().to_vec();
    out.extend(hasher.finalize().to_le_bytes());
    out.extend(payload);
    out
}

fn event_payload(i: usize) -> Vec<u8> {
    format!(
        "{{\"namespace\":\"default\",\"ingestedAt\":\"2024-01-01T00:00:0{}Z\",\"event\":{{\"id\":\"{i}\",\
         \"source\":\"s\",\"specversion\":\"1.0\",\"type\":\"prompt\",\"subject\":\"c\",\
         \"time\":\"2024-01-01T00:00:00Z\",\"data\":{{\"tokens\":{i}}}}}}}",
        i % 10
    )
    .into_bytes()
}

/// A `segment` target input: flags, then (delta, u16 length, bytes) per segment but
/// the last, which is (delta, bytes).
fn segment_input(flags: u8, segments: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![flags];
    for (i, (delta, body)) in segments.iter().enumerate() {
        out.push(*delta);
        if i + 1 < segments.len() {
            out.extend((body.len() as u16).to_le_bytes());
        }
        out.extend(body);
    }
    out
}

/// Writes a run file with the real `DedupIndex` and returns its bytes.
fn real_run(keys: &[u128], now_ms: i64) -> Result<Vec<u8>> {
    use metron_storage::dedup::{DedupConfig, DedupIndex};
    let dir = tempfile::tempdir()?;
    let config = DedupConfig {
        horizon_ms: 24 * 60 * 60 * 1000,
        memory_budget_bytes: 1 << 20,
        memory_keys_max: 100_000,
        ..DedupConfig::default()
    };
    let mut index = DedupIndex::open(dir.path(), config, None)?;
    index.insert_batch(keys, now_ms)?;
    let state = index.checkpoint(now_ms)?;
    let run = state.runs.first().context("no run written")?;
    Ok(std::fs::read(dir.path().join(&run.file_name))?)
}

#[test]
#[ignore = "rewrites fuzz/corpus/{segment,dedup_run}/w-*; run by hand"]
fn write_seeds() -> Result<()> {
    let write = |target: &str, name: &str, data: &[u8]| -> Result<()> {
        let path = corpus_root().join(target).join(format!("w-{name}"));
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))
    };

    // segment: frames as the writer lays them out, whole and damaged.
    let frames = |range: std::ops::Range<usize>| -> Vec<u8> {
        range.flat_map(|i| frame(&event_payload(i))).collect()
    };
    let three = frames(0..3);
    write(
        "segment",
        "one-segment",
        &segment_input(0x00, &[(0, three.clone())]),
    )?;
    write(
        "segment",
        "empty-segment",
        &segment_input(0x00, &[(0, Vec::new())]),
    )?;
    write(
        "segment",
        "empty-record",
        &segment_input(0x20, &[(0, frame(b""))]),
    )?;
    let mut torn = three.clone();
    torn.extend(&frame(&event_payload(3))[..20]);
    write(
        "segment",
        "torn-payload",
        &segment_input(0x10, &[(0, torn)]),
    )?;
    let mut short_header = three.clone();
    short_header.extend([7, 0, 0]);
    write(
        "segment",
        "torn-header",
        &segment_input(0x90, &[(0, short_header)]),
    )?;
    let mut zero_tail = three.clone();
    zero_tail.extend([0u8; 64]);
    write(
        "segment",
        "zero-tail",
        &segment_input(0x40, &[(0, zero_tail)]),
    )?;
    let mut bad_crc = three.clone();
    bad_crc[6] ^= 0x55;
    write(
        "segment",
        "bad-crc-first",
        &segment_input(0x00, &[(0, bad_crc.clone())]),
    )?;
    write(
        "segment",
        "bad-crc-fixed",
        &segment_input(0x04, &[(0, bad_crc)]),
    )?;
    let mut huge_len = three.clone();
    huge_len.extend([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    write(
        "segment",
        "huge-length",
        &segment_input(0x60, &[(0, huge_len)]),
    )?;
    write(
        "segment",
        "two-segments",
        &segment_input(0x01, &[(0, frames(0..2)), (2, frames(2..5))]),
    )?;
    write(
        "segment",
        "three-segments-reopen-append",
        &segment_input(
            0xb2,
            &[(5, frames(0..2)), (2, frames(2..3)), (1, torn_tail())],
        ),
    )?;
    write(
        "segment",
        "gap",
        &segment_input(0x01, &[(0, frames(0..2)), (3, frames(2..3))]),
    )?;
    let mut corrupt_first = frames(0..2);
    corrupt_first.truncate(corrupt_first.len() - 3);
    write(
        "segment",
        "torn-not-last",
        &segment_input(0x01, &[(0, corrupt_first), (2, frames(2..3))]),
    )?;
    let many: Vec<u8> = (0..300).flat_map(|i| frame(&[i as u8; 3])).collect();
    write("segment", "many-small", &segment_input(0x20, &[(0, many)]))?;
    let mut meta = vec![0x08, 35];
    meta.extend(b"metron-embedded-log 1\npartitions=2\n");
    meta.push(0);
    meta.extend(frames(0..1));
    write("segment", "meta-mismatch", &meta)?;
    let mut bad_meta = vec![0x08, 10];
    bad_meta.extend(b"partitions");
    bad_meta.push(0);
    write("segment", "meta-garbage", &bad_meta)?;

    // dedup_run: runs written by the index itself (valid as they are: flags 0), and
    // variants the target repairs (flag bits 0 and 1) or names wrongly (bits 2–4).
    let mut state = 0x1234_5678_9abc_def0_u64;
    let mut uniform: Vec<u128> = (0..700)
        .map(|_| {
            let hi = splitmix(&mut state);
            let lo = splitmix(&mut state);
            (u128::from(hi) << 64) | u128::from(lo)
        })
        .collect();
    uniform.sort_unstable();
    let skewed: Vec<u128> = (0..700u128)
        .map(|i| {
            if i < 690 {
                i * 3
            } else {
                u128::MAX - (700 - i)
            }
        })
        .collect();
    let now_ms = 1_704_164_645_000;
    for (name, keys) in [
        ("three", vec![1u128, 1 << 64, u128::MAX]),
        ("one", vec![42u128]),
        ("uniform-700", uniform),
        ("skewed-700", skewed),
    ] {
        let run = real_run(&keys, now_ms)?;
        let mut input = vec![0x00];
        input.extend(&run);
        write("dedup_run", name, &input)?;
        for (flags, variant) in [
            (0x04, "keys-mismatch"),
            (0x08, "other-name"),
            (0x10, "bad-name"),
        ] {
            input[0] = flags;
            write("dedup_run", &format!("{name}-{variant}"), &input)?;
        }
    }
    let mut unsorted = vec![0x03];
    unsorted.extend([0u8; 48]);
    for key in [5u128, 3, 9] {
        unsorted.extend(key.to_be_bytes());
    }
    unsorted.extend([0u8; 8]);
    write("dedup_run", "unsorted-fixed", &unsorted)?;
    let mut empty = vec![0x03];
    empty.extend([0u8; 56]);
    write("dedup_run", "empty-fixed", &empty)?;
    let mut duplicate = vec![0x03];
    duplicate.extend([0u8; 48]);
    for key in [5u128, 5] {
        duplicate.extend(key.to_be_bytes());
    }
    duplicate.extend([0u8; 8]);
    write("dedup_run", "duplicate-fixed", &duplicate)?;
    write("dedup_run", "short", &[0x00, b'M', b'T', b'R'])?;
    Ok(())
}

/// A last segment whose final frame is cut short.
fn torn_tail() -> Vec<u8> {
    let mut out = frame(&event_payload(9));
    out.extend(&frame(&event_payload(10))[..11]);
    out
}

fn splitmix(state: &mut u64) -> u64 {
    let mut rng = Rng(*state);
    let value = rng.next();
    *state = rng.0;
    value
}
