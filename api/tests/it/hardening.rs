//! The core's promises off the happy path: limits checked before anything is stored,
//! 429 and 503 with `Retry-After`, fatal errors that end the process (and a restart
//! that recovers exactly), reads that never answer from half-replayed state, and
//! catalog writes that never fail for concurrency. Faults are injected with the
//! binary's failpoints (`METRON_FAILPOINTS`, `PUT /debug/failpoints`).

use crate::helpers::*;
use crate::server::*;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const COUNT_CONFIG: &str = r#"
meters:
  - slug: calls
    eventType: call
    aggregation: COUNT
  - slug: units
    eventType: call
    aggregation: SUM
    valueProperty: $.units
partitions: 4
checkpointInterval: 200ms
"#;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp() - 2 * 86_400, 0).expect("time")
}

fn call(id: &str, subject: &str, units: u64) -> Value {
    cloud_event(
        id,
        "hardening",
        "call",
        subject,
        t0() + ChronoDuration::seconds(7),
        json!({ "units": units }),
    )
}

/// Events of `n` subjects, `per` each, with ids from `prefix`.
fn calls(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| call(&format!("{prefix}-{i}"), &format!("s{}", i % 16), 1))
        .collect()
}

/// The meter's total, if the query answered 200 (0 when there is no row).
fn total(server: &TestServer, slug: &str) -> Result<f64, String> {
    let got = parse_query(&server.query(slug, &[]))?;
    Ok(got.data.first().map_or(0.0, |r| r.value))
}

#[test]
fn an_oversized_event_stores_nothing_of_its_batch() {
    let server = TestServer::start_with_config(COUNT_CONFIG);
    let mut batch = calls("big", 16);
    batch[9]["data"]["blob"] = json!("x".repeat(2 << 20));
    let resp = server.ingest_batch(&batch);
    let detail = assert_problem(&resp, 413);
    assert!(detail.contains("index 9"), "{detail}");

    let too_many = calls("many", 10_001);
    let detail = assert_problem(&server.ingest_batch(&too_many), 413);
    assert!(detail.contains("10001"), "{detail}");

    let mut long = calls("long", 2);
    long[1]["subject"] = json!("s".repeat(5000));
    let detail = assert_problem(&server.ingest_batch(&long), 400);
    assert!(
        detail.contains("index 1") && detail.contains("subject"),
        "{detail}"
    );

    // A sentinel behind them: once it is visible, nothing of the refused requests is.
    server
        .ingest_one(&call("sentinel", "s0", 5))
        .expect_status(204);
    wait_for_total(&server, "units", 5.0);
    assert_eq!(total(&server, "calls"), Ok(1.0));
    let listed = server
        .get("/api/v1/events")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
}

#[test]
fn a_backlog_answers_429_with_retry_after_and_loses_nothing() {
    let config = format!("{COUNT_CONFIG}backlogRecordsMax: 50\n");
    let server = TestServer::builder()
        .with_config(&config)
        .with_env("METRON_FAILPOINTS", "partition.read=sleep(100)")
        .start();
    let mut accepted = 0usize;
    let mut refused = None;
    for round in 0..20 {
        let batch = calls(&format!("r{round}"), 16);
        let resp = server.ingest_batch(&batch);
        match resp.status {
            204 => accepted += batch.len(),
            429 => {
                refused = Some(resp);
                break;
            }
            _ => panic!("unexpected answer: {resp}"),
        }
    }
    let resp = refused.expect("no 429 while the partitions were paused");
    assert_problem(&resp, 429);
    assert_eq!(resp.header("retry-after"), Some("1"), "{resp}");
    assert!(accepted > 0);

    set_failpoints(&server, "partition.read=off");
    wait_for_total(&server, "calls", accepted as f64);
    server.ingest_batch(&calls("after", 16)).expect_status(204);
    wait_for_total(&server, "calls", (accepted + 16) as f64);
}

// Nothing that reads usage answers from half-replayed state: while a restart replays its log
// (held here by a failpoint), billing actions that snapshot usage, invoicing now, entitlement
// history and resets answer 503 with Retry-After, like meter queries; once caught up, the
// same requests get their usual answers (here 404s: nothing by those names).
#[test]
fn usage_reads_wait_for_the_replay() {
    let config = COUNT_CONFIG.replace("200ms", "1h");
    let mut server = TestServer::builder()
        .with_config(&config)
        .with_env("METRON_FAILPOINTS", "")
        .start();
    server.ingest_batch(&calls("a", 40)).expect_status(204);
    wait_for_total(&server, "calls", 40.0);
    server.set_env(&[("METRON_FAILPOINTS", "partition.read=error")]);
    server.restart_listening().expect("restarts");
    let requests: [(&str, &str, Option<Value>); 6] = [
        ("GET", "/api/v1/meters/calls/query", None),
        (
            "POST",
            "/api/v1/billing/invoices/invoice",
            Some(json!({ "customerId": "nobody" })),
        ),
        (
            "POST",
            "/api/v1/billing/invoices/01J00000000000000000000000/snapshot-quantities",
            None,
        ),
        (
            "POST",
            "/api/v1/billing/invoices/01J00000000000000000000000/approve",
            None,
        ),
        (
            "GET",
            "/api/v1/subjects/nobody/entitlements/none/history?windowSize=DAY",
            None,
        ),
        (
            "POST",
            "/api/v1/subjects/nobody/entitlements/none/reset",
            Some(json!({})),
        ),
    ];
    let send = |method: &str, path: &str, body: &Option<Value>| {
        let req = match method {
            "GET" => server.get(path),
            _ => server.post(path),
        };
        match body {
            Some(body) => req.json(body).send(),
            None => req.send(),
        }
    };
    for (method, path, body) in &requests {
        let resp = send(method, path, body);
        assert_problem(&resp, 503);
        assert!(
            resp.header("retry-after").is_some(),
            "{method} {path}: {resp}"
        );
    }
    set_failpoints(&server, "partition.read=off");
    eventually(VISIBLE, || match server.get("/readyz").send().status {
        200 => Ok(()),
        other => Err(format!("/readyz answers {other}")),
    });
    for (method, path, body) in &requests[1..] {
        let resp = send(method, path, body);
        assert_eq!(resp.status, 404, "{method} {path}: {resp}");
    }
    assert_eq!(total(&server, "calls"), Ok(40.0));
}

#[test]
fn failing_checkpoints_answer_503_then_recover_exactly() {
    let mut server = TestServer::builder()
        .with_config(COUNT_CONFIG)
        .with_env("METRON_FAILPOINTS", "")
        .start();
    server.ingest_batch(&calls("a", 100)).expect_status(204);
    wait_for_total(&server, "calls", 100.0);

    set_failpoints(&server, "objects.put=error");
    // A probe accepted before the first failure counts; the refused ones do not.
    let mut probes = 0.0;
    let refused = eventually(VISIBLE, || {
        let resp = server.ingest_batch(&calls(&format!("probe{probes}"), 1));
        match resp.status {
            503 => Ok(resp),
            204 => {
                probes += 1.0;
                Err("still accepted".into())
            }
            _ => panic!("unexpected answer: {resp}"),
        }
    });
    let detail = assert_problem(&refused, 503);
    assert!(detail.contains("checkpoint"), "{detail}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(gauge(&server, "metron_checkpoints_failing"), Some(1));
    // Reads still answer while checkpoints fail.
    wait_for_total(&server, "calls", 100.0 + probes);

    set_failpoints(&server, "objects.put=off");
    eventually(VISIBLE, || {
        match server.ingest_batch(&calls("b", 50)).status {
            204 => Ok(()),
            s => Err(format!("ingest answered {s}")),
        }
    });
    wait_for_total(&server, "calls", 150.0 + probes);
    server.kill();
    server.set_env(&[]);
    server.restart();
    wait_for_total(&server, "calls", 150.0 + probes);
}

#[test]
fn checkpoints_failing_past_their_deadline_end_the_process() {
    let config = format!("{COUNT_CONFIG}checkpointFailureDeadline: 1s\n");
    let mut server = TestServer::builder()
        .with_config(&config)
        .with_env("METRON_FAILPOINTS", "")
        .start();
    server.ingest_batch(&calls("a", 64)).expect_status(204);
    wait_for_total(&server, "calls", 64.0);
    set_failpoints(&server, "objects.put=error");
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the process ends");
    assert_eq!(status.code(), Some(70), "{status}");
    assert!(
        server.log_tail(40).contains("checkpoints have failed"),
        "{}",
        server.log_tail(40)
    );
    server.set_env(&[]);
    server.restart();
    wait_for_total(&server, "calls", 64.0);
}

/// A log write or fsync that fails: no 204 for what it held, the process ends with 70,
/// and the restart counts every acknowledged event once.
fn log_failure_is_fatal(failpoint: &str) {
    let mut server = TestServer::builder()
        .with_config(COUNT_CONFIG)
        .with_env("METRON_FAILPOINTS", "")
        .start();
    server.ingest_batch(&calls("a", 40)).expect_status(204);
    wait_for_total(&server, "calls", 40.0);
    set_failpoints(&server, &format!("{failpoint}=error"));
    // The answer is a 5xx, or no answer at all if the process ended first.
    let resp = server.client().try_ingest_batch(&calls("b", 40));
    if let Ok(resp) = &resp {
        assert!(
            resp.status >= 500,
            "no 2xx for an append that failed: {resp}"
        );
    }
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the process ends");
    assert_eq!(status.code(), Some(70), "{status}");
    server.set_env(&[]);
    server.restart();
    wait_for_total(&server, "calls", 40.0);
    // Sent again after the restart: counted once.
    server.ingest_batch(&calls("b", 40)).expect_status(204);
    server.ingest_batch(&calls("a", 40)).expect_status(204);
    wait_for_total(&server, "calls", 80.0);
}

#[test]
fn a_log_write_failure_is_fatal() {
    log_failure_is_fatal("log.write");
}

#[test]
fn a_log_fsync_failure_is_fatal() {
    log_failure_is_fatal("log.fsync");
}

#[test]
fn a_slow_object_store_keeps_promises() {
    let mut server = TestServer::builder()
        .with_config(COUNT_CONFIG)
        .with_env("METRON_FAILPOINTS", "objects.put=sleep(1500)")
        .start();
    let mut accepted = 0usize;
    for round in 0..10 {
        let resp = server.ingest_batch(&calls(&format!("slow{round}"), 32));
        match resp.status {
            204 => accepted += 32,
            429 | 503 => assert!(resp.header("retry-after").is_some(), "{resp}"),
            _ => panic!("unexpected answer: {resp}"),
        }
    }
    wait_for_total(&server, "calls", accepted as f64);
    server.kill();
    server.set_env(&[]);
    server.restart();
    wait_for_total(&server, "calls", accepted as f64);
}

#[test]
fn a_clean_restart_replays_nothing_and_a_crash_does() {
    // The final checkpoint at SIGTERM covers the whole log: the next start replays
    // no record. Without it (SIGKILL), the start replays what came after the last one.
    let config = COUNT_CONFIG.replace("checkpointInterval: 200ms", "checkpointInterval: 1h");
    let mut server = TestServer::start_with_config(&config);
    server.ingest_batch(&calls("a", 300)).expect_status(204);
    wait_for_total(&server, "calls", 300.0);
    let status = server.terminate().expect("SIGTERM");
    assert!(status.success(), "{status}");
    server.restart();
    assert_eq!(gauge(&server, "metron_replay_records_at_start"), Some(0));
    wait_for_total(&server, "calls", 300.0);

    server.ingest_batch(&calls("b", 200)).expect_status(204);
    wait_for_total(&server, "calls", 500.0);
    server.kill();
    server.restart();
    assert_eq!(gauge(&server, "metron_replay_records_at_start"), Some(200));
    wait_for_total(&server, "calls", 500.0);
}

/// Events for the restart test; `METRON_RESTART_EVENTS` scales it (the acceptance run
/// uses 1,000,000).
fn restart_events() -> usize {
    std::env::var("METRON_RESTART_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60_000)
}

#[test]
fn after_a_crash_reads_are_complete_or_503() {
    let n = restart_events();
    // No checkpoint at all after the start: every event is replayed from the log.
    let config = COUNT_CONFIG.replace(
        "checkpointInterval: 200ms",
        "checkpointInterval: 1h\npendingEventsMax: 100000000",
    );
    let mut server = TestServer::start_with_config(&config);
    let client = server.client();
    let batch = 1000;
    let mut sent = 0;
    while sent < n {
        let events: Vec<Value> = (sent..(sent + batch).min(n))
            .map(|i| call(&format!("e{i}"), &format!("s{}", i % 64), 1))
            .collect();
        let resp = client.try_ingest_batch(&events).expect("ingest");
        if resp.status == 429 {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        assert_eq!(resp.status, 204, "{resp}");
        sent += events.len();
    }
    wait_for_total(&server, "calls", n as f64);
    server.restart_listening().expect("restart");
    let started = Instant::now();
    let (mut complete, mut unavailable) = (0u32, 0u32);
    loop {
        let resp = server.query("calls", &[]);
        match resp.status {
            503 => {
                assert_eq!(resp.header("retry-after"), Some("1"), "{resp}");
                unavailable += 1;
            }
            200 => {
                let got = parse_query(&resp).expect("a query answer");
                let value = got.data.first().map_or(0.0, |r| r.value);
                assert_eq!(
                    value,
                    n as f64,
                    "a partial answer after {:?}",
                    started.elapsed()
                );
                complete += 1;
                if complete >= 5 {
                    break;
                }
            }
            _ => panic!("unexpected answer: {resp}"),
        }
        let sql = server
            .post("/api/v1/sql")
            .json(&json!({"sql": "SELECT count(*) AS n FROM events"}))
            .send();
        match sql.status {
            503 => {}
            200 => assert_eq!(sql.json()["rows"][0][0], json!(n), "{sql}"),
            _ => panic!("unexpected SQL answer: {sql}"),
        }
        assert!(
            started.elapsed() < START_DEADLINE,
            "not ready within {START_DEADLINE:?}"
        );
    }
    let ready = server.get("/readyz").send();
    assert_eq!(ready.status, 200, "{ready}");
    eprintln!(
        "restart with {n} unchecked events: ready after {:?} ({unavailable} answers 503, then {complete} complete)",
        started.elapsed()
    );
}

#[test]
fn thirty_two_concurrent_catalog_writers_all_succeed() {
    let server = TestServer::start_with_config(COUNT_CONFIG);
    server
        .post("/api/v1/features")
        .json(&json!({"key": "calls", "name": "Calls", "meterSlug": "calls"}))
        .send()
        .expect_status(201);
    let client = server.client();
    let threads: Vec<_> = (0..32)
        .map(|i| {
            let client = client.clone();
            std::thread::spawn(move || -> Vec<(String, u16, String)> {
                let mut answers = Vec::new();
                let mut record = |what: &str, resp: Resp| {
                    answers.push((what.to_owned(), resp.status, resp.body.clone()));
                    resp
                };
                let key = format!("writer-{i}");
                record(
                    "customer",
                    client
                        .post("/api/v1/customers")
                        .json(&json!({"name": key, "key": key,
                            "usageAttribution": {"subjectKeys": [key]}}))
                        .send(),
                );
                let ent = record(
                    "entitlement",
                    client
                        .post(&format!("/api/v2/customers/{key}/entitlements"))
                        .json(&json!({"type": "metered", "featureKey": "calls",
                            "usagePeriod": {"interval": "MONTH"}}))
                        .send(),
                );
                let _ = ent;
                // After the entitlement: its usage period starts at its creation (to the
                // minute), and a grant may not take effect before that.
                let effective = rfc3339(Utc::now());
                for g in 0..3 {
                    record(
                        "grant",
                        client
                            .post(&format!(
                                "/api/v2/customers/{key}/entitlements/calls/grants"
                            ))
                            .json(&json!({"amount": 10 + g, "priority": 1,
                                "effectiveAt": effective,
                                "expiration": {"duration": "YEAR", "count": 10}}))
                            .send(),
                    );
                }
                answers
            })
        })
        .collect();
    let mut failures = Vec::new();
    let mut total_answers = 0;
    for t in threads {
        for (what, status, body) in t.join().expect("writer thread") {
            total_answers += 1;
            if !(200..300).contains(&status) {
                failures.push(format!("{what}: {status} {body}"));
            }
        }
    }
    assert_eq!(total_answers, 32 * 5);
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
}

/// Ingests the batches `batch(round)` until a partition stopped reading at a memory
/// share and ingest answers 429; returns the events acknowledged and that 429. A 429
/// before any partition stopped is a fast sender's backlog: it waits for it to drain.
fn fill_until_refused(server: &TestServer, batch: impl Fn(usize) -> Vec<Value>) -> (usize, Resp) {
    let mut accepted = 0;
    for round in 0..400 {
        let stopped = server
            .log_tail(200)
            .contains("stops reading until a checkpoint");
        let events = batch(round);
        let resp = server.ingest_batch(&events);
        match resp.status {
            204 => accepted += events.len(),
            429 if !stopped => std::thread::sleep(Duration::from_millis(200)),
            429 => return (accepted, resp),
            _ => panic!("unexpected answer: {resp}"),
        }
    }
    panic!("no 429 with the partitions at a memory share ({accepted} events acknowledged)");
}

#[test]
fn held_events_stay_within_their_memory_share() {
    // 8 MiB dedup + 1 x 8 MiB SQL + 64 MiB left: 32 MiB for held events, 8 MiB per
    // partition. Checkpoints hang (a put that sleeps 10 minutes), so nothing is freed:
    // partitions stop reading at their share, the backlog grows, ingest answers 429.
    let config = r#"
meters:
  - slug: calls
    eventType: call
    aggregation: COUNT
partitions: 4
checkpointInterval: 1h
pendingEventsMax: 100000000
batchRecordsMax: 64
backlogRecordsMax: 300
dedupMemoryBytes: 8388608
memoryBytes: 83886080
sql:
  memoryBytes: 8388608
  concurrentMax: 1
"#;
    let mut server = TestServer::builder()
        .with_config(config)
        .with_env("METRON_FAILPOINTS", "objects.put=sleep(600000)")
        .start();
    let pad = "p".repeat(4000);
    let (accepted, resp) = fill_until_refused(&server, |round| {
        (0..100)
            .map(|i| {
                let mut e = call(&format!("m{round}-{i}"), &format!("s{}", i % 16), 1);
                e["data"]["pad"] = json!(pad);
                e
            })
            .collect()
    });
    assert_eq!(resp.header("retry-after"), Some("1"), "{resp}");
    let share = 32u64 << 20;
    let slack = 64 * (3 * 4400 + 512) as u64 * 4; // one read batch per partition
    let held = eventually(VISIBLE, || {
        let held = gauge(&server, "metron_held_event_bytes").unwrap_or(0);
        let log = server.log_tail(200);
        (log.matches("stops reading until a checkpoint").count() >= 1)
            .then_some(held)
            .ok_or(format!("no partition stopped; held {held}"))
    });
    eprintln!("held event bytes at the share: {held} (share {share}, accepted {accepted})");
    assert!(
        held <= share + slack,
        "held {held} > share {share} + {slack}"
    );
    assert!(held >= share / 4, "the share was not reached: {held}");
    // Nothing acknowledged is lost: a restart without the failpoint counts every event once.
    server.kill();
    server.set_env(&[]);
    server.restart();
    wait_for_total(&server, "calls", accepted as f64);
}

#[test]
fn live_windows_stay_within_their_memory_share() {
    // 8 MiB dedup + 1 x 8 MiB SQL + 64 MiB left: 32 MiB for held events (one partition),
    // 16 MiB for live windows. Eight meters group by a 1 KB value that differs per event:
    // each event adds about 11 KB of minute states and holds only about 4 KB as an event,
    // so the live windows reach their share first. Checkpoints hang: nothing is freed,
    // every partition stops reading, the backlog grows, ingest answers 429.
    let mut config = String::from("meters:\n");
    for m in 0..8 {
        config.push_str(&format!(
            "  - {{ slug: wide{m}, eventType: call, aggregation: COUNT, groupBy: {{ g: $.g }} }}\n"
        ));
    }
    config.push_str(
        "partitions: 1\ncheckpointInterval: 1h\npendingEventsMax: 100000000\n\
         batchRecordsMax: 64\nbacklogRecordsMax: 300\ndedupMemoryBytes: 8388608\n\
         memoryBytes: 83886080\nsql:\n  memoryBytes: 8388608\n  concurrentMax: 1\n",
    );
    let mut server = TestServer::builder()
        .with_config(&config)
        .with_env("METRON_FAILPOINTS", "objects.put=sleep(600000)")
        .start();
    let pad = "g".repeat(1000);
    let (accepted, resp) = fill_until_refused(&server, |round| {
        (0..100)
            .map(|i| {
                let mut e = call(&format!("w{round}-{i}"), "wide", 1);
                e["data"]["g"] = json!(format!("{round}-{i}-{pad}"));
                e
            })
            .collect()
    });
    assert_eq!(resp.header("retry-after"), Some("1"), "{resp}");
    let share = 16u64 << 20;
    let slack = 64 * 8 * 1400; // one read batch of 64 events into eight meters
    let windows = eventually(VISIBLE, || {
        let windows = gauge(&server, "metron_live_window_bytes").unwrap_or(0);
        let log = server.log_tail(200);
        (log.matches("stops reading until a checkpoint").count() >= 1)
            .then_some(windows)
            .ok_or(format!("no partition stopped; live windows {windows}"))
    });
    let held = gauge(&server, "metron_held_event_bytes").unwrap_or(0);
    eprintln!(
        "live window bytes at the share: {windows} (share {share}, held events {held}, accepted {accepted})"
    );
    assert!(
        windows <= share + slack,
        "live windows {windows} > share {share} + {slack}"
    );
    assert!(windows >= share / 2, "the share was not reached: {windows}");
    assert!(
        held < 32 << 20,
        "held events reached their share first: {held}"
    );
    // Nothing acknowledged is lost: a restart without the failpoint counts every event once.
    server.kill();
    server.set_env(&[]);
    server.restart();
    wait_for_total(&server, "wide0", accepted as f64);
    assert_eq!(
        gauge(&server, "metron_live_window_bytes").map(|b| b > 0),
        Some(true),
        "the replayed minute states are counted"
    );
}

#[test]
fn customers_stay_within_their_memory_share() {
    // 8 MiB dedup + 1 x 8 MiB SQL + 64 MiB left: customers get an eighth, 8 MiB. Each of
    // 150 customers has usage in 1,000 distinct minutes: a minute series of about 80 KB,
    // 12 MB in all. Past the share they are packed (a few KB each; passivation of the
    // least recently used, when packing is not enough, is `shedding_passivates_the_least_
    // recently_used` in the table's tests); their values stay exact.
    let config = r#"
meters:
  - slug: calls
    eventType: call
    aggregation: COUNT
partitions: 2
checkpointInterval: 1s
dedupMemoryBytes: 8388608
memoryBytes: 83886080
sql:
  memoryBytes: 8388608
  concurrentMax: 1
"#;
    let server = TestServer::start_with_config(config);
    let feature = create_feature(
        &server,
        &json!({"key": "calls", "name": "Calls", "meterSlug": "calls"}),
    );
    let feature_id = text(&feature, "id");
    let start = Utc::now() - ChronoDuration::days(3);
    let customers: i64 = 150;
    for c in 0..customers {
        let key = format!("big-{c}");
        create_customer_with_subject(&server, &key, &key);
        let mut body = metered_entitlement(&feature_id, &rfc3339(start), "MONTH");
        body["measureUsageFrom"] = json!(rfc3339(start));
        create_customer_entitlement(&server, &key, &body);
    }
    let first_minute = Utc::now() - ChronoDuration::minutes(2000);
    let minutes: i64 = 1000;
    let mut batch = Vec::new();
    for c in 0..customers {
        for m in 0..minutes {
            let time = first_minute + ChronoDuration::minutes(m);
            batch.push(cloud_event(
                &format!("big-{c}-{m}"),
                "hardening",
                "call",
                &format!("big-{c}"),
                time,
                json!({}),
            ));
            if batch.len() == 5000 {
                server.ingest_batch(&batch).expect_status(204);
                batch.clear();
            }
        }
    }
    // (Not a meter query over all: 150,000 minute rollups pass this test's 8 MiB query share.)
    eventually(VISIBLE, || {
        let processed = gauge(&server, "metron_events_processed_total").unwrap_or(0);
        (processed == (customers * minutes) as u64)
            .then_some(())
            .ok_or(format!("{processed} events processed"))
    });
    let share = 8u64 << 20;
    let bytes = eventually(Duration::from_secs(60), || {
        let bytes = gauge(&server, "metron_customer_bytes").unwrap_or(0);
        let shed = server
            .log_tail(400)
            .contains("Customers passed their memory share");
        (shed && bytes > 0 && bytes <= share)
            .then_some(bytes)
            .ok_or(format!("customers' bytes {bytes} (shed: {shed})"))
    });
    let in_memory = gauge(&server, "metron_customer_actors").unwrap_or(0);
    let packed = gauge(&server, "metron_customers_packed").unwrap_or(0);
    eprintln!(
        "customers' estimated bytes {bytes} within the share {share}; {in_memory} of {customers} in memory, {packed} packed"
    );
    assert!(
        packed > 0 || in_memory < customers as u64,
        "nothing was packed or passivated"
    );
    // Every customer, packed or not, answers its exact usage.
    for c in 0..customers {
        let value = customer_value(&server, &format!("big-{c}"), "calls", None);
        assert_eq!(num(&value, "usage"), minutes as f64, "big-{c}: {value}");
    }
}

#[test]
fn meter_queries_stay_within_a_query_memory_share() {
    // A query's share is 64 KiB here: the minute rollups of 3,000 subjects do not fit,
    // one subject's do. The refusal is a 400 problem naming the limit; the server goes on.
    let config = r#"
meters:
  - slug: calls
    eventType: call
    aggregation: COUNT
partitions: 2
checkpointInterval: 200ms
sql:
  memoryBytes: 65536
"#;
    let server = TestServer::start_with_config(config);
    let events: Vec<Value> = (0..3000)
        .map(|i| call(&format!("q-{i}"), &format!("subject-{i:05}"), 1))
        .collect();
    for chunk in events.chunks(1000) {
        server.ingest_batch(chunk).expect_status(204);
    }
    // Every event folded and every rollup in Parquet (the checkpoint after the events).
    eventually(VISIBLE, || {
        let processed = gauge(&server, "metron_events_processed_total").unwrap_or(0);
        let live = gauge(&server, "metron_live_window_bytes").unwrap_or(1);
        (processed == 3000 && live == 0)
            .then_some(())
            .ok_or(format!("{processed} processed, live windows {live}"))
    });
    let all = server.query("calls", &[("groupBy", "subject".into())]);
    let detail = assert_problem(&all, 400);
    assert!(detail.contains("65536"), "{detail}");
    let one = server.query("calls", &[("subject", "subject-00042".into())]);
    assert_eq!(one.status, 200, "{one}");
    assert_eq!(one.json()["data"][0]["value"], json!(1), "{one}");
}

#[test]
fn an_idle_server_writes_no_checkpoints() {
    // Nothing new since the last checkpoint: the periodic tick writes nothing (the
    // manifest used to be rewritten every interval forever). New events: it writes again.
    let server = TestServer::start_with_config(COUNT_CONFIG);
    server.ingest_batch(&calls("idle", 20)).expect_status(204);
    wait_for_total(&server, "calls", 20.0);
    let settled = eventually(VISIBLE, || {
        let a = gauge(&server, "metron_checkpoints_total").unwrap_or(0);
        std::thread::sleep(Duration::from_millis(1000));
        let b = gauge(&server, "metron_checkpoints_total").unwrap_or(0);
        (a == b && a > 0)
            .then_some(b)
            .ok_or(format!("still checkpointing: {a} -> {b}"))
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        gauge(&server, "metron_checkpoints_total"),
        Some(settled),
        "an idle server checkpointed"
    );
    server.ingest_batch(&calls("busy", 5)).expect_status(204);
    eventually(VISIBLE, || {
        let now = gauge(&server, "metron_checkpoints_total").unwrap_or(0);
        (now > settled)
            .then_some(())
            .ok_or(format!("no checkpoint after new events: {now}"))
    });
}

#[test]
fn a_panic_on_an_actor_thread_is_fatal() {
    // A partition actor panics (failpoint): the process ends with 70 instead of staying
    // up with a dead partition, and the restart counts every acknowledged event once.
    let mut server = TestServer::builder()
        .with_config(COUNT_CONFIG)
        .with_env("METRON_FAILPOINTS", "")
        .start();
    server.ingest_batch(&calls("a", 30)).expect_status(204);
    wait_for_total(&server, "calls", 30.0);
    set_failpoints(&server, "partition.read=panic");
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the process ends");
    assert_eq!(status.code(), Some(70), "{status}");
    assert!(
        server.log_tail(60).contains("panicked"),
        "{}",
        server.log_tail(60)
    );
    server.set_env(&[]);
    server.restart();
    wait_for_total(&server, "calls", 30.0);
}
