//! Crash safety: SIGKILL at random moments while batches are being ingested never loses an
//! acknowledged event, never splits a batch, and never counts an event twice.
//!
//! Seeded: `METRON_CRASH_SEED=<u64>` replays a run (the seed is printed at the start);
//! `METRON_CRASH_ROUNDS=<n>` changes the number of kill/restart rounds (default 20).

use crate::helpers::*;
use crate::server::*;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

const CONFIG: &str = r#"
meters:
  - slug: crash_count
    eventType: crash
    aggregation: COUNT
  - slug: crash_sum
    eventType: crash
    aggregation: SUM
    valueProperty: $.one
partitions: 4
checkpointInterval: 200ms
"#;

/// A temporary directory that is kept (and named) when the test fails.
struct KeepOnPanic(Option<tempfile::TempDir>);

impl KeepOnPanic {
    fn path(&self) -> &std::path::Path {
        self.0.as_ref().expect("directory").path()
    }
}

impl Drop for KeepOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!(
                "kept the crash test's data directory in {}",
                dir.keep().display()
            );
        }
    }
}

/// One batch as sent: its events and their ids.
struct Batch {
    events: Vec<Value>,
    ids: Vec<String>,
}

/// What the sender thread saw before the kill.
struct Sent {
    acked: Vec<Batch>,
    unacked: Vec<Batch>,
    next_id: u64,
    /// Statuses other than 204 (before the kill a valid batch must not get any).
    odd_statuses: Vec<String>,
}

fn make_batch(rng: &mut StdRng, next_id: &mut u64, now: DateTime<Utc>) -> Batch {
    let size = rng.random_range(1..=40);
    let mut events = Vec::with_capacity(size);
    let mut ids = Vec::with_capacity(size);
    for _ in 0..size {
        let id = format!("crash-{next_id}");
        *next_id += 1;
        let time = now - chrono::Duration::seconds(rng.random_range(0..10 * 86_400));
        let subject = format!("tenant-{}", rng.random_range(0..5));
        events.push(cloud_event(
            &id,
            "crash-test",
            "crash",
            &subject,
            time,
            json!({ "one": 1 }),
        ));
        ids.push(id);
    }
    Batch { events, ids }
}

/// Sends batches back to back until `stop`; a batch is acknowledged only by a 204.
fn send_until_stopped(client: Client, seed: u64, mut next_id: u64, stop: Arc<AtomicBool>) -> Sent {
    let mut rng = StdRng::seed_from_u64(seed);
    let now = Utc::now();
    let mut sent = Sent {
        acked: Vec::new(),
        unacked: Vec::new(),
        next_id,
        odd_statuses: Vec::new(),
    };
    while !stop.load(Ordering::SeqCst) {
        let batch = make_batch(&mut rng, &mut next_id, now);
        match client.try_ingest_batch(&batch.events) {
            Ok(resp) if resp.status == 204 => sent.acked.push(batch),
            Ok(resp) => {
                if !stop.load(Ordering::SeqCst) {
                    sent.odd_statuses.push(resp.to_string());
                }
                sent.unacked.push(batch);
            }
            Err(_) => sent.unacked.push(batch),
        }
    }
    sent.next_id = next_id;
    sent
}

/// The meter's total, 0 when there are no rows.
fn count(server: &TestServer, slug: &str) -> Result<f64, String> {
    let got = parse_query(&server.query(slug, &[]))?;
    match got.data.as_slice() {
        [] => Ok(0.0),
        [row] => Ok(row.value),
        _ => Err(format!("{slug}: more than one row: {got:?}")),
    }
}

fn sql_count(server: &TestServer, sql: &str) -> Result<u64, String> {
    let resp = server
        .post("/api/v1/sql")
        .json(&json!({ "sql": sql }))
        .send();
    let body = resp.try_json()?;
    body["rows"][0][0]
        .as_u64()
        .ok_or_else(|| format!("{sql}: {resp}"))
}

/// Waits until the COUNT and SUM meters and SQL all say exactly `expected`.
fn wait_exact(server: &TestServer, expected: u64) -> Result<(), String> {
    try_eventually(VISIBLE, || {
        let c = count(server, "crash_count")?;
        let s = count(server, "crash_sum")?;
        let q = sql_count(server, "SELECT count(*) FROM events")?;
        if c == expected as f64 && s == expected as f64 && q == expected {
            Ok(())
        } else {
            Err(format!(
                "want {expected} events; COUNT meter {c}, SUM meter {s}, SQL {q}"
            ))
        }
    })
}

fn id_number(id: &str) -> u64 {
    id.strip_prefix("crash-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a crash test id: {id}"))
}

/// How many of `ids` the SQL view has.
fn stored_count(server: &TestServer, ids: &[String]) -> u64 {
    let list = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    sql_count(
        server,
        &format!("SELECT count(*) FROM events WHERE id IN ({list})"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Ranges `a-b` of a sorted list of numbers.
fn ranges(numbers: impl IntoIterator<Item = u64>) -> String {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for n in numbers {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == n => *hi = n,
            _ => out.push((n, n)),
        }
    }
    out.iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What is stored compared with what was acknowledged: for the failure message.
fn diagnose(server: &TestServer, acked: &BTreeSet<u64>, batches: &[Batch]) -> String {
    let resp = server
        .post("/api/v1/sql")
        .json(&json!({ "sql": "SELECT id FROM events", "limit": 100_000 }))
        .send();
    let body = match resp.try_json() {
        Ok(body) if resp.status == 200 => body,
        _ => return format!("(no SQL answer: {resp})"),
    };
    let stored: BTreeSet<u64> = body["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r[0].as_str())
        .map(id_number)
        .collect();
    let lost = acked.difference(&stored).copied();
    let cut: BTreeSet<u64> = batches
        .iter()
        .flat_map(|b| b.ids.iter().map(|id| id_number(id)))
        .collect();
    let unknown = stored
        .iter()
        .filter(|n| !acked.contains(n) && !cut.contains(n))
        .copied();
    let mut out = format!(
        "stored {} distinct ids, {} acknowledged\nacknowledged but not stored: [{}]\nstored but never sent or acknowledged: [{}]",
        stored.len(),
        acked.len(),
        ranges(lost),
        ranges(unknown)
    );
    for b in batches {
        let ids: Vec<u64> = b.ids.iter().map(|id| id_number(id)).collect();
        let have: Vec<u64> = ids.iter().copied().filter(|n| stored.contains(n)).collect();
        out.push_str(&format!(
            "\ncut batch [{}]: stored [{}]",
            ranges(ids.iter().copied()),
            ranges(have)
        ));
    }
    out
}

#[test]
fn sigkill_during_ingest_loses_no_acknowledged_event() {
    // 20 rounds (seeded): start on the same data dir, check that every acknowledged event is
    // counted and nothing beyond the batches cut by the kill, resend the unacknowledged
    // batches with the same ids (dedup keeps the count exact), ingest from a background thread,
    // SIGKILL after 10–600 ms. At the end: COUNT meter == SUM meter == SQL count(*) == distinct
    // ids sent.
    let seed = std::env::var("METRON_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let rounds: usize = std::env::var("METRON_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!("crash test: seed {seed}, {rounds} rounds (replay with METRON_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let data = KeepOnPanic(Some(
        tempfile::Builder::new()
            .prefix("metron-crash-")
            .tempdir()
            .expect("temp data dir"),
    ));
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut unacked: Vec<Batch> = Vec::new();
    let mut next_id: u64 = 0;
    let mut partly_stored = 0;

    for round in 0..=rounds {
        let server = TestServer::builder()
            .with_config(CONFIG)
            .with_data_dir(data.path())
            .try_start()
            .unwrap_or_else(|e| panic!("seed {seed} round {round}: restart failed: {e:#}"));
        let when = format!("seed {seed} round {round}");

        // Everything acknowledged before the kill is there, plus any part of the cut batches.
        let pending: usize = unacked.iter().map(|b| b.ids.len()).sum();
        let (lo, hi) = (acked.len() as f64, (acked.len() + pending) as f64);
        let after_restart = try_eventually(VISIBLE, || {
            let c = count(&server, "crash_count")?;
            if c >= lo && c <= hi {
                Ok(())
            } else {
                Err(format!("COUNT {c} outside [{lo}, {hi}] after restart"))
            }
        });
        if let Err(e) = after_restart {
            panic!("{when}: {e}\n{}", diagnose(&server, &acked, &unacked));
        }
        // Only acknowledged batches are guaranteed; a cut batch may be stored in part (its events
        // land in several partitions). Noted, not failed: the resend below completes it.
        for batch in &unacked {
            let n = stored_count(&server, &batch.ids);
            if n != 0 && n != batch.ids.len() as u64 {
                partly_stored += 1;
                println!(
                    "{when}: a cut batch was stored in part: {n} of {} events",
                    batch.ids.len()
                );
            }
        }

        // Resend what was not acknowledged; dedup must make the count exact.
        let resent: Vec<Batch> = std::mem::take(&mut unacked);
        for batch in &resent {
            server.ingest_batch(&batch.events).expect_status(204);
            acked.extend(batch.ids.iter().map(|id| id_number(id)));
        }
        if let Err(e) = wait_exact(&server, acked.len() as u64) {
            panic!(
                "{when}, after resending {} cut batches: {e}\n{}",
                resent.len(),
                diagnose(&server, &acked, &resent)
            );
        }
        if round == rounds {
            break;
        }

        // Ingest from a background thread and kill the server mid-flight.
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let (client, stop, thread_seed) = (server.client(), stop.clone(), rng.random());
            let first_id = next_id;
            thread::spawn(move || send_until_stopped(client, thread_seed, first_id, stop))
        };
        let delay = rng.random_range(10..=600);
        thread::sleep(Duration::from_millis(delay));
        let mut server = server;
        server.kill();
        stop.store(true, Ordering::SeqCst);
        let sent = sender.join().expect("sender thread");
        assert!(
            sent.odd_statuses.is_empty(),
            "{when}: valid batches got non-204 answers before the kill: {:?}",
            sent.odd_statuses
        );
        next_id = sent.next_id;
        for batch in &sent.acked {
            acked.extend(batch.ids.iter().map(|id| id_number(id)));
        }
        unacked = sent.unacked;
        println!(
            "{when}: killed after {delay} ms; {} batches acknowledged, {} cut; {} events acknowledged so far",
            sent.acked.len(),
            unacked.len(),
            acked.len()
        );
    }
    assert_eq!(
        acked.len() as u64,
        next_id,
        "every id sent was finally acknowledged"
    );
    println!("crash test: {next_id} events, {partly_stored} cut batches were stored in part");
}
