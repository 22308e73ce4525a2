//! Ingestion: ports of OpenMeter's e2e TestIngest, TestIngestContentTypeApplicationJSON,
//! TestBatchIngest, TestInvalidIngest and TestDedupe, plus the request validation and event
//! listing around them. Every test starts its own server with OpenMeter's e2e meters.

use crate::helpers::*;
use crate::server::*;
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// A uniformly random second within ±30 days of now (gofakeit.DateRange in the Go tests).
fn random_time_around_now(rng: &mut impl Rng, now: DateTime<Utc>) -> DateTime<Utc> {
    let offset = rng.random_range(-30 * 86_400..30 * 86_400);
    DateTime::from_timestamp(now.timestamp() + offset, 0).expect("valid timestamp")
}

#[test]
fn ingest_single_events_sum() {
    // TestIngest: 1000 events sent one by one (application/cloudevents+json, values as numeric
    // strings, times spread over ±30 days) are all acknowledged and the SUM meter totals them.
    let server = TestServer::start_with_config(E2E_CONFIG);
    let mut rng = rand::rng();
    let now = Utc::now();
    let mut sum = 0u64;
    for _ in 0..1000 {
        let duration: u64 = rng.random_range(1..=100);
        sum += duration;
        let event = cloud_event(
            &new_id(),
            "my-app",
            "ingest",
            "customer-1",
            random_time_around_now(&mut rng, now),
            json!({ "duration_ms": duration.to_string() }),
        );
        server.ingest_one(&event).expect_status(204);
    }
    wait_for_total(&server, "ingest", sum as f64);
}

#[test]
fn ingest_content_type_application_json() {
    // TestIngestContentTypeApplicationJSON: `application/json` takes a single event object and an
    // array of events; both are acknowledged and counted (100 + 2 × 100).
    let server = TestServer::start_with_config(E2E_CONFIG);
    let event_type = "ingest_content_type_application_json";
    let time = rfc3339(Utc::now() - Duration::hours(1));
    let payload = |id: String| {
        json!({
            "specversion": "1.0",
            "id": id,
            "source": "my-app",
            "type": event_type,
            "subject": "customer-1",
            "time": time,
            "data": { "duration_ms": "100" },
        })
    };
    server
        .post("/api/v1/events")
        .body("application/json", payload(new_id()).to_string())
        .send()
        .expect_status(204);
    server
        .post("/api/v1/events")
        .body(
            "application/json",
            json!([payload(new_id()), payload(new_id())]).to_string(),
        )
        .send()
        .expect_status(204);
    wait_for_total(&server, event_type, 300.0);
}

#[test]
fn batch_ingest_1000_events() {
    // TestBatchIngest: one application/cloudevents-batch+json request with 1000 events is
    // acknowledged and the SUM meter totals all of them.
    let server = TestServer::start_with_config(E2E_CONFIG);
    let mut rng = rand::rng();
    let now = Utc::now();
    let mut sum = 0u64;
    let events: Vec<Value> = (0..1000)
        .map(|_| {
            let duration: u64 = rng.random_range(1..=1000);
            sum += duration;
            cloud_event(
                &new_id(),
                "my-app",
                "batchingest",
                "customer-1",
                random_time_around_now(&mut rng, now),
                json!({ "duration_ms": duration.to_string() }),
            )
        })
        .collect();
    server.ingest_batch(&events).expect_status(204);
    wait_for_total(&server, "batchingest", sum as f64);
}

#[test]
fn invalid_ingest() {
    // TestInvalidIngest: XML data and string data are rejected synchronously (400, not stored);
    // null, missing, empty, NaN and Inf values are accepted (204), kept out of the SUM, and
    // listed by GET /api/v1/events (newest first) with OpenMeter's validationError texts.
    let server = TestServer::start_with_config(E2E_CONFIG);
    let event_type = "ingest_invalid";
    let subject = event_type;
    let time_base = Utc::now() - Duration::hours(1);
    let mut time_idx = 0;
    let mut next_time = || {
        time_idx += 1;
        // The event list is newest first, so each event is a minute older than the last.
        rfc3339(time_base - Duration::minutes(time_idx))
    };
    let base = |time: String| {
        json!({
            "specversion": "1.0",
            "id": new_id(),
            "source": "my-app",
            "type": event_type,
            "subject": subject,
            "time": time,
        })
    };
    let with = |mut event: Value, fields: Value| {
        for (k, v) in fields.as_object().expect("object") {
            event[k] = v.clone();
        }
        event
    };

    // Unsupported data content type: XML.
    let xml = with(
        base(next_time()),
        json!({ "datacontenttype": "application/xml", "data": "<xml></xml>" }),
    );
    assert_problem(&server.ingest_one(&xml), 400);

    // Data is a string.
    let string_data = with(base(next_time()), json!({ "data": "string" }));
    assert_problem(&server.ingest_one(&string_data), 400);

    // Data is null: treated as no data, accepted.
    let null_data = with(base(next_time()), json!({ "data": null }));
    server.ingest_one(&null_data).expect_status(204);

    // No data at all.
    server.ingest_one(&base(next_time())).expect_status(204);

    // Empty data.
    let empty = with(
        base(next_time()),
        json!({ "datacontenttype": "application/json", "data": {} }),
    );
    server.ingest_one(&empty).expect_status(204);

    // NaN and Inf values (skipped by the aggregation).
    for value in ["NaN", "Inf"] {
        let event = with(
            base(next_time()),
            json!({ "datacontenttype": "application/json", "data": { "duration_ms": value } }),
        );
        server.ingest_one(&event).expect_status(204);
    }

    // A valid event: the only one the meter counts.
    let valid = with(
        base(next_time()),
        json!({ "datacontenttype": "application/json", "data": { "duration_ms": "100" } }),
    );
    server.ingest_one(&valid).expect_status(204);

    wait_for_total(&server, event_type, 100.0);

    let expected_errors = [
        Some("invalid event: null and missing value property"),
        Some("invalid event: null and missing value property"),
        Some(r#"invalid event: missing value property: "$.duration_ms""#),
        Some("invalid event: value cannot be NaN"),
        Some("invalid event: value cannot be infinity"),
        None,
    ];
    eventually(VISIBLE, || {
        let resp = server
            .get("/api/v1/events")
            .query("subject", subject)
            .send();
        let list = resp.try_json()?;
        let items = list
            .as_array()
            .ok_or_else(|| format!("not an array: {resp}"))?;
        if items.len() != 6 {
            return Err(format!("want 6 events, got {}: {resp}", items.len()));
        }
        for (i, (item, want)) in items.iter().zip(expected_errors).enumerate() {
            let got = item["validationError"].as_str();
            match want {
                Some(want) if got.is_some_and(|g| g.contains(want)) => {}
                None if got.is_none_or(str::is_empty) => {}
                _ => {
                    return Err(format!(
                        "event {i}: validationError {got:?}, want {want:?}: {resp}"
                    ));
                }
            }
        }
        Ok(())
    });
}

#[test]
fn dedupe_same_id_and_source() {
    // TestDedupe: the same id+source sent 1000 times with random times counts once.
    let server = TestServer::start_with_config(E2E_CONFIG);
    let mut rng = rand::rng();
    let now = Utc::now();
    for _ in 0..1000 {
        let event = cloud_event(
            "52f44f66-020f-4fa9-a733-102a8ef6f515",
            "my-app",
            "dedupe",
            "customer-1",
            random_time_around_now(&mut rng, now),
            json!({}),
        );
        server.ingest_one(&event).expect_status(204);
    }
    // A sentinel sent after the repeats: once it is counted, the repeats before it were
    // read too, so a total of 2 means they were dropped, not late.
    server
        .ingest_one(&cloud_event(
            "sentinel-after-repeats",
            "my-app",
            "dedupe",
            "customer-1",
            now,
            json!({}),
        ))
        .expect_status(204);
    wait_for_total(&server, "dedupe", 2.0);
}

#[test]
fn dedupe_key_is_source_and_id() {
    // The dedup key is (source, id): the same id from two sources counts twice, a repeat from
    // either source (also inside one batch) does not count again.
    let server = TestServer::start_with_config(E2E_CONFIG);
    let time = Utc::now() - Duration::minutes(5);
    let ev = |source: &str| cloud_event("same-id", source, "dedupe", "customer-1", time, json!({}));
    server
        .ingest_batch(&[ev("app-a"), ev("app-b"), ev("app-a")])
        .expect_status(204);
    server.ingest_one(&ev("app-b")).expect_status(204);
    wait_for_total(&server, "dedupe", 2.0);
    // A later, distinct event is counted, so the repeats above were really dropped, not late.
    server
        .ingest_one(&cloud_event(
            "other-id",
            "app-a",
            "dedupe",
            "customer-1",
            time,
            json!({}),
        ))
        .expect_status(204);
    wait_for_total(&server, "dedupe", 3.0);
}

#[test]
fn dedupe_is_global_whatever_the_subject() {
    // OpenMeter's dedup key is (namespace, source, id), whatever the subject. Events are
    // partitioned by subject, so the repeats below land in several partitions: they must
    // still count once, before and after a SIGKILL (with and without a checkpoint since).
    const CONFIG: &str = r#"
meters:
  - slug: spread
    eventType: spread
    aggregation: COUNT
partitions: 4
checkpointInterval: 1s
"#;
    let subjects: Vec<String> = (0..16).map(|i| format!("subject-{i}")).collect();
    let spread: std::collections::BTreeSet<u32> = subjects
        .iter()
        .map(|s| metron_actors::pipeline::partition_of("default", s, 4))
        .collect();
    assert!(
        spread.len() > 1,
        "the subjects must span partitions: {spread:?}"
    );
    let mut server = TestServer::start_with_config(CONFIG);
    let time = Utc::now() - Duration::minutes(5);
    let ev = |id: &str, subject: &str| cloud_event(id, "app", "spread", subject, time, json!({}));
    let repeats: Vec<Value> = subjects.iter().map(|s| ev("same-id", s)).collect();
    server.ingest_batch(&repeats[..8]).expect_status(204);
    for event in &repeats[8..] {
        server.ingest_one(event).expect_status(204);
    }
    // A sentinel after the repeats: once it counts, they were read too.
    server
        .ingest_one(&ev("sentinel-1", "subject-0"))
        .expect_status(204);
    wait_for_total(&server, "spread", 2.0);
    // Killed before a checkpoint could cover the repeats: the replay drops them again.
    server.kill();
    server.restart();
    wait_for_total(&server, "spread", 2.0);
    server.ingest_batch(&repeats).expect_status(204);
    server
        .ingest_one(&ev("sentinel-2", "subject-1"))
        .expect_status(204);
    wait_for_total(&server, "spread", 3.0);
    // After checkpoints (every second), the shared index is in the manifest.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    server.kill();
    server.restart();
    server.ingest_batch(&repeats).expect_status(204);
    server
        .ingest_one(&ev("sentinel-3", "subject-2"))
        .expect_status(204);
    wait_for_total(&server, "spread", 4.0);
}

#[test]
fn dedup_runs_merge_in_the_background_and_stay_exact() {
    // The smallest dedup budget spills the memory table every few hundred keys, so the
    // index's runs pile up and the merger thread merges them while events flow. Repeats
    // sent after merges, and after a SIGKILL, still count once.
    const CONFIG: &str = r#"
meters:
  - slug: merged
    eventType: merged
    aggregation: COUNT
partitions: 4
checkpointInterval: 1s
dedupMemoryBytes: 65536
"#;
    let mut server = TestServer::start_with_config(CONFIG);
    let time = Utc::now() - Duration::minutes(5);
    let events: Vec<Value> = (0..12_000)
        .map(|i| {
            cloud_event(
                &format!("m-{i}"),
                "app",
                "merged",
                &format!("s-{}", i % 37),
                time,
                json!({}),
            )
        })
        .collect();
    for chunk in events.chunks(500) {
        server.ingest_batch(chunk).expect_status(204);
    }
    wait_for_total(&server, "merged", 12_000.0);
    // Without merges there would be a run per spill (12,000 / 192 or more).
    eventually(VISIBLE, || {
        let merges = gauge(&server, "metron_dedup_merges_total").unwrap_or(0);
        let keys = gauge(&server, "metron_dedup_keys_on_disk").unwrap_or(0);
        let runs = gauge(&server, "metron_dedup_runs").unwrap_or(u64::MAX);
        (merges >= 1 && keys >= 12_000 && runs <= 16)
            .then_some(())
            .ok_or(format!("merges {merges}, keys on disk {keys}, runs {runs}"))
    });
    for chunk in events.chunks(2_000) {
        server.ingest_batch(chunk).expect_status(204);
    }
    let sentinel = |id: &str| cloud_event(id, "app", "merged", "s-0", time, json!({}));
    server
        .ingest_one(&sentinel("sentinel-1"))
        .expect_status(204);
    wait_for_total(&server, "merged", 12_001.0);
    assert!(
        gauge(&server, "metron_dedup_disk_probes_total").unwrap_or(0) > 0,
        "the repeats were found in the run files"
    );
    server.kill();
    server.restart();
    for chunk in events.chunks(2_000) {
        server.ingest_batch(chunk).expect_status(204);
    }
    server
        .ingest_one(&sentinel("sentinel-2"))
        .expect_status(204);
    wait_for_total(&server, "merged", 12_002.0);
}

#[test]
fn event_files_merge_one_input_at_a_time_and_keep_every_event() {
    // A checkpoint a round writes a small event file; from 8 on, compaction merges them,
    // one input at a time, into one file. Every event stays, in SQL and after a restart.
    const CONFIG: &str = r#"
meters:
  - slug: rounds
    eventType: rounds
    aggregation: COUNT
partitions: 1
checkpointInterval: 100ms
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = TestServer::builder()
        .with_config(CONFIG)
        .with_data_dir(dir.path())
        .start();
    let time = Utc::now() - Duration::minutes(5);
    for round in 0..10 {
        let events: Vec<Value> = (0..40)
            .map(|i| {
                cloud_event(
                    &format!("r{round}-{i}"),
                    "app",
                    "rounds",
                    &format!("s-{}", i % 3),
                    time,
                    json!({"round": round}),
                )
            })
            .collect();
        server.ingest_batch(&events).expect_status(204);
        wait_for_total(&server, "rounds", f64::from(40 * (round + 1)));
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // Event files the newest manifest names (merged-away files are deleted minutes later).
    let files = || {
        let checkpoints = dir.path().join("objects").join("checkpoints");
        let newest = std::fs::read_dir(&checkpoints)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".json"))
            .max();
        newest
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .and_then(|m| m["eventFiles"].as_array().map(Vec::len))
            .unwrap_or(usize::MAX)
    };
    let check = |server: &TestServer| {
        eventually(VISIBLE, || {
            let n = files();
            let answer = server.sql("SELECT count(*), count(DISTINCT id) FROM events");
            (n < 8 && answer["rows"] == json!([[400, 400]]))
                .then_some(())
                .ok_or(format!("{n} event files; {answer}"))
        })
    };
    check(&server);
    server.kill();
    server.restart();
    check(&server);
}

#[test]
fn partitions_read_on_while_a_checkpoint_seals() {
    // Checkpoints are barrier snapshots: while one is held between the partitions' cut
    // and the meters' seal (the failpoint, for a minute), events acknowledged meanwhile
    // are read and counted. When partitions paused for the seal, they were not.
    const CONFIG: &str = r#"
meters:
  - slug: during
    eventType: during
    aggregation: COUNT
partitions: 4
checkpointInterval: 100ms
"#;
    let server = TestServer::builder()
        .with_config(CONFIG)
        .with_env("METRON_FAILPOINTS", "checkpoint.align=sleep(60000)")
        .start();
    let time = Utc::now() - Duration::minutes(5);
    let ev = |i: usize| {
        cloud_event(
            &format!("during-{i}"),
            "app",
            "during",
            &format!("s-{i}"),
            time,
            json!({}),
        )
    };
    server
        .ingest_batch(&(0..8).map(ev).collect::<Vec<_>>())
        .expect_status(204);
    // The first checkpoint starts within 100 ms and holds at the failpoint.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    server
        .ingest_batch(&(8..16).map(ev).collect::<Vec<_>>())
        .expect_status(204);
    wait_for_total(&server, "during", 16.0);
}

#[test]
fn malformed_requests_are_rejected_with_problem_json() {
    // Requests that are not valid CloudEvents are 400 application/problem+json with status,
    // title and detail; nothing of them is stored.
    let server = TestServer::start_with_config(E2E_CONFIG);
    let good = cloud_event(
        &new_id(),
        "my-app",
        "ingest",
        "customer-1",
        Utc::now(),
        json!({ "duration_ms": 1 }),
    );
    let without = |field: &str| {
        let mut event = good.clone();
        event.as_object_mut().expect("object").remove(field);
        event
    };
    let empty = |field: &str| {
        let mut event = good.clone();
        event[field] = json!("");
        event
    };
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "not JSON",
            "application/cloudevents+json",
            "{not json".into(),
        ),
        (
            "no id",
            "application/cloudevents+json",
            without("id").to_string(),
        ),
        (
            "no source",
            "application/cloudevents+json",
            without("source").to_string(),
        ),
        (
            "no type",
            "application/cloudevents+json",
            without("type").to_string(),
        ),
        (
            "no subject",
            "application/cloudevents+json",
            without("subject").to_string(),
        ),
        (
            "empty id",
            "application/cloudevents+json",
            empty("id").to_string(),
        ),
        (
            "empty subject",
            "application/cloudevents+json",
            empty("subject").to_string(),
        ),
        ("bad time", "application/cloudevents+json", {
            let mut e = good.clone();
            e["time"] = json!("yesterday");
            e.to_string()
        }),
        ("data is an array", "application/cloudevents+json", {
            let mut e = good.clone();
            e["data"] = json!([1, 2]);
            e.to_string()
        }),
        (
            "array as a single event",
            "application/cloudevents+json",
            json!([good]).to_string(),
        ),
        (
            "object as a batch",
            "application/cloudevents-batch+json",
            good.to_string(),
        ),
        ("empty array", "application/json", "[]".into()),
        ("unsupported content type", "text/plain", good.to_string()),
    ];
    for (name, content_type, body) in cases {
        let resp = server
            .post("/api/v1/events")
            .body(content_type, body)
            .send();
        assert_eq!(resp.status, 400, "{name}: {resp}");
        assert_problem(&resp, 400);
    }
    // Only this valid event is counted.
    server.ingest_one(&good).expect_status(204);
    wait_for_total(&server, "ingest", 1.0);
}

#[test]
fn batch_with_one_invalid_event_is_rejected_whole() {
    // A batch with one invalid event is rejected as a whole: 400 whose detail names the index of
    // the bad event, and none of the batch's valid events is stored.
    let server = TestServer::start_with_config(E2E_CONFIG);
    let time = Utc::now() - Duration::minutes(1);
    let ok = |v: u32| {
        cloud_event(
            &new_id(),
            "my-app",
            "ingest",
            "customer-1",
            time,
            json!({ "duration_ms": v }),
        )
    };
    let mut bad = ok(1000);
    bad["data"] = json!("string");
    let resp = server.ingest_batch(&[ok(1), ok(10), bad, ok(100)]);
    let detail = assert_problem(&resp, 400);
    assert!(
        detail.contains("index 2"),
        "detail should name index 2: {detail:?}"
    );
    server.ingest_one(&ok(7)).expect_status(204);
    wait_for_total(&server, "ingest", 7.0);
    let list = server
        .get("/api/v1/events")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "only the later event is stored: {list}"
    );
}

#[test]
fn missing_time_is_set_to_now() {
    // An event without `time` is stamped with the server's clock: it is listed with a time
    // between just before and just after the request, and counted by the meter.
    let server = TestServer::start_with_config(E2E_CONFIG);
    let before = Utc::now() - Duration::seconds(1);
    let event = json!({
        "specversion": "1.0",
        "id": new_id(),
        "source": "my-app",
        "type": "ingest",
        "subject": "no-time",
        "data": { "duration_ms": 5 },
    });
    server.ingest_one(&event).expect_status(204);
    let after = Utc::now() + Duration::seconds(1);
    wait_for_total(&server, "ingest", 5.0);
    let list = server
        .get("/api/v1/events")
        .query("subject", "no-time")
        .send()
        .expect_status(200)
        .json();
    let time = list[0]["event"]["time"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("listed event has no RFC 3339 time: {list}"))
        .with_timezone(&Utc);
    assert!(
        before <= time && time <= after,
        "time {time} not within [{before}, {after}]"
    );
}

#[test]
fn list_events_newest_first_with_filters() {
    // GET /api/v1/events is a bare array of {event, ingestedAt, storedAt}, newest event time
    // first; `limit` cuts it, `subject` filters exactly, `from` is inclusive and `to` exclusive.
    let server = TestServer::start_with_config(E2E_CONFIG);
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 3600, 0).expect("time");
    let events: Vec<Value> = (0..6)
        .map(|i| {
            let subject = if i % 2 == 0 { "even" } else { "odd" };
            cloud_event(
                &format!("ev-{i}"),
                "lister",
                "ingest",
                subject,
                t0 + Duration::minutes(i),
                json!({ "duration_ms": i }),
            )
        })
        .collect();
    // Send out of time order.
    let mut shuffled = events.clone();
    shuffled.reverse();
    shuffled.swap(1, 4);
    server.ingest_batch(&shuffled).expect_status(204);
    wait_for_total(&server, "ingest", 15.0);

    let ids = |resp: &Resp| -> Vec<String> {
        resp.json()
            .as_array()
            .unwrap_or_else(|| panic!("not an array: {resp}"))
            .iter()
            .map(|item| item["event"]["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let all = server.get("/api/v1/events").send().expect_status(200);
    assert_eq!(
        ids(&all),
        ["ev-5", "ev-4", "ev-3", "ev-2", "ev-1", "ev-0"],
        "{all}"
    );
    for item in all.json().as_array().expect("array") {
        for key in ["ingestedAt", "storedAt"] {
            let ts = item[key].as_str().unwrap_or_default();
            assert!(
                DateTime::parse_from_rfc3339(ts).is_ok(),
                "{key} is not RFC 3339: {item}"
            );
        }
        assert_eq!(item["event"]["source"], "lister", "{item}");
        assert_eq!(item["event"]["specversion"], "1.0", "{item}");
    }

    let limited = server
        .get("/api/v1/events")
        .query("limit", "2")
        .send()
        .expect_status(200);
    assert_eq!(ids(&limited), ["ev-5", "ev-4"], "{limited}");

    let odd = server
        .get("/api/v1/events")
        .query("subject", "odd")
        .send()
        .expect_status(200);
    assert_eq!(ids(&odd), ["ev-5", "ev-3", "ev-1"], "{odd}");

    let window = server
        .get("/api/v1/events")
        .query("from", rfc3339(t0 + Duration::minutes(1)))
        .query("to", rfc3339(t0 + Duration::minutes(4)))
        .send()
        .expect_status(200);
    assert_eq!(ids(&window), ["ev-3", "ev-2", "ev-1"], "{window}");
}

#[test]
fn list_events_v2_cursor_pagination() {
    // GET /api/v2/events pages through all events with `limit` and `nextCursor`: every event
    // exactly once, no page larger than the limit.
    let server = TestServer::start_with_config(E2E_CONFIG);
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 7200, 0).expect("time");
    let events: Vec<Value> = (0..7)
        .map(|i| {
            cloud_event(
                &format!("v2-{i}"),
                "pager",
                "ingest",
                "customer-1",
                t0 + Duration::seconds(i * 37),
                json!({ "duration_ms": 1 }),
            )
        })
        .collect();
    server.ingest_batch(&events).expect_status(204);
    wait_for_total(&server, "ingest", 7.0);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _page in 0..10 {
        let mut req = server.get("/api/v2/events").query("limit", "3");
        if let Some(c) = &cursor {
            req = req.query("cursor", c);
        }
        let resp = req.send().expect_status(200);
        let body = resp.json();
        let items = body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no items: {resp}"));
        assert!(items.len() <= 3, "page larger than limit: {resp}");
        seen.extend(
            items
                .iter()
                .map(|i| i["event"]["id"].as_str().unwrap_or_default().to_owned()),
        );
        match body["nextCursor"].as_str() {
            Some(next) if !items.is_empty() => cursor = Some(next.to_owned()),
            _ => break,
        }
    }
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "an event was listed twice: {seen:?}"
    );
    let want: BTreeSet<String> = (0..7).map(|i| format!("v2-{i}")).collect();
    assert_eq!(distinct.into_iter().cloned().collect::<BTreeSet<_>>(), want);
}
