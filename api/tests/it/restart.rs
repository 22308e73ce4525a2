//! Durability across a clean restart: SIGTERM, then a new process on the same data directory
//! answers exactly as before.

use crate::helpers::*;
use crate::server::*;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

const CONFIG: &str = r#"
meters:
  - slug: req_duration
    eventType: request
    aggregation: SUM
    valueProperty: $.duration_ms
    groupBy:
      method: $.method
      path: $.path
  - slug: req_count
    eventType: request
    aggregation: COUNT
partitions: 4
checkpointInterval: 2s
"#;

/// The queries compared before and after the restart.
fn snapshot(server: &TestServer, t0: DateTime<Utc>) -> Result<Vec<(String, QueryResult)>, String> {
    let queries: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("req_duration", vec![]),
        ("req_count", vec![]),
        ("req_duration", vec![("windowSize", "HOUR".into())]),
        (
            "req_duration",
            vec![
                ("windowSize", "DAY".into()),
                ("windowTimeZone", "Asia/Kolkata".into()),
                ("groupBy", "method".into()),
            ],
        ),
        (
            "req_count",
            vec![
                ("subject", "alice".into()),
                ("from", rfc3339(t0)),
                ("to", rfc3339(t0 + Duration::days(2))),
            ],
        ),
        ("api_meter", vec![("windowSize", "DAY".into())]),
    ];
    queries
        .into_iter()
        .map(|(slug, params)| {
            let name = format!("{slug} {params:?}");
            let mut got =
                parse_query(&server.query(slug, &params)).map_err(|e| format!("{name}: {e}"))?;
            got.data.sort_by(|a, b| {
                (a.window_start, &a.subject, &a.group_by).cmp(&(
                    b.window_start,
                    &b.subject,
                    &b.group_by,
                ))
            });
            Ok((name, got))
        })
        .collect()
}

#[test]
fn answers_survive_clean_restart() {
    // Ingest through both content types, create a meter over the API, stop with SIGTERM (exit
    // status 0), restart on the same data dir: every query, the event list, the API-created meter
    // and the dedup memory are the same as before.
    let mut server = TestServer::start_with_config(CONFIG);
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 5 * 86_400, 0).expect("time");
    let methods = ["GET", "POST", "PUT"];
    let events: Vec<Value> = (0..300)
        .map(|i| {
            cloud_event(
                &format!("req-{i}"),
                "restart-test",
                "request",
                ["alice", "bob", "carol"][i % 3],
                t0 + Duration::minutes(i as i64 * 23),
                json!({
                    "duration_ms": (i % 17) as f64 * 1.5,
                    "method": methods[i % methods.len()],
                    "path": format!("/p{}", i % 4),
                }),
            )
        })
        .collect();
    for chunk in events.chunks(70) {
        server.ingest_batch(chunk).expect_status(204);
    }
    for event in &events[..5] {
        server.ingest_one(event).expect_status(204);
    }
    server.create_meter(&json!({
        "slug": "api_meter",
        "eventType": "request",
        "aggregation": "MAX",
        "valueProperty": "$.duration_ms",
    }));
    wait_for_total(&server, "req_count", 300.0);
    let expected_sum: f64 = (0..300).map(|i| (i % 17) as f64 * 1.5).sum();
    wait_for_total(&server, "req_duration", expected_sum);
    wait_for_total(&server, "api_meter", 16.0 * 1.5);
    let before = snapshot(&server, t0).expect("queries before the restart");
    let events_before = server
        .get("/api/v1/events")
        .query("limit", "100")
        .send()
        .expect_status(200)
        .json();

    let status = server.terminate().expect("SIGTERM");
    assert!(status.success(), "clean shutdown exits 0, got {status}");
    server.restart();

    // Answers may take a moment to be complete again (replay), but must converge to the same.
    eventually(VISIBLE, || {
        let after = snapshot(&server, t0)?;
        for ((name, b), (_, a)) in before.iter().zip(&after) {
            if a != b {
                return Err(format!(
                    "{name} changed across the restart:\n  before: {b:?}\n  after:  {a:?}"
                ));
            }
        }
        Ok(())
    });
    let events_after = server
        .get("/api/v1/events")
        .query("limit", "100")
        .send()
        .expect_status(200)
        .json();
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|i| i["event"]["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(ids(&events_after), ids(&events_before));
    server
        .get("/api/v1/meters/api_meter")
        .send()
        .expect_status(200);

    // Dedup remembers across the restart: resending old events changes nothing, a new one counts.
    server.ingest_batch(&events[100..150]).expect_status(204);
    server
        .ingest_one(&cloud_event(
            "req-new",
            "restart-test",
            "request",
            "alice",
            t0,
            json!({ "duration_ms": 1, "method": "GET", "path": "/p0" }),
        ))
        .expect_status(204);
    wait_for_total(&server, "req_count", 301.0);
    wait_for_total(&server, "req_duration", expected_sum + 1.0);

    // And a second restart keeps that too.
    server.restart();
    wait_for_total(&server, "req_count", 301.0);
}

#[test]
fn an_unreadable_newer_manifest_does_not_stop_the_checkpoints() {
    // Manifests are written create-only (a conditional put on S3). A newer manifest that
    // cannot be read (torn by a disk, or from a newer version) is skipped at start; the next
    // checkpoints must be numbered above it, not collide with its name until the checkpoint
    // failure deadline ends the process.
    let mut server = TestServer::start_with_config(
        "meters:\n  - { slug: n, eventType: e, aggregation: COUNT }\npartitions: 2\ncheckpointInterval: 200ms\ncheckpointFailureDeadline: 5s\n",
    );
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 3_600, 0).expect("time");
    let batch = |from: usize| -> Vec<Value> {
        (from..from + 20)
            .map(|i| cloud_event(&format!("m-{i}"), "manifest-test", "e", "s", t0, json!({})))
            .collect()
    };
    server.ingest_batch(&batch(0)).expect_status(204);
    wait_for_total(&server, "n", 20.0);
    server.terminate().expect("SIGTERM");
    let checkpoints = server.data_dir().join("objects").join("checkpoints");
    let manifests = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&checkpoints)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("manifest-"))
            .collect();
        names.sort();
        names
    };
    let newest = manifests()
        .last()
        .cloned()
        .expect("a manifest after SIGTERM");
    let epoch: u64 = newest
        .trim_start_matches("manifest-")
        .trim_end_matches(".json")
        .parse()
        .expect("epoch");
    let torn = format!("manifest-{:020}.json", epoch + 3);
    std::fs::write(checkpoints.join(&torn), b"{\"epoch\": ").expect("write a torn manifest");

    server.restart();
    server.ingest_batch(&batch(20)).expect_status(204);
    wait_for_total(&server, "n", 40.0);
    // Checkpoints go on above the torn one (the process would have ended by now otherwise).
    eventually(VISIBLE, || {
        let names = manifests();
        match names.last() {
            Some(last) if *last > torn => Ok(()),
            _ => Err(format!("manifests: {names:?}")),
        }
    });
    std::thread::sleep(std::time::Duration::from_secs(6));
    assert!(server.is_running(), "{}", server.log_tail(30));
    server.restart();
    wait_for_total(&server, "n", 40.0);
}
