//! POST /api/v1/sql: read-only SQL over the `events` table, as JSON or CSV.

use crate::helpers::*;
use crate::server::*;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

/// Ingests `n` events for subjects s0..s3 (event i has subject s{i%4}) and waits until the SQL
/// view counts them all.
fn server_with_events(n: usize) -> TestServer {
    let server = TestServer::start();
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 86_400, 0).expect("time");
    let events: Vec<Value> = (0..n)
        .map(|i| {
            cloud_event(
                &format!("sql-{i}"),
                "sql-test",
                if i % 5 == 0 { "other" } else { "request" },
                &format!("s{}", i % 4),
                t0 + Duration::seconds(i as i64 * 7),
                json!({ "n": i }),
            )
        })
        .collect();
    server.ingest_batch(&events).expect_status(204);
    // A duplicate must not show up as a second row.
    server.ingest_one(&events[0]).expect_status(204);
    eventually(VISIBLE, || {
        let resp = server
            .post("/api/v1/sql")
            .json(&json!({ "sql": "SELECT count(*) AS n FROM events" }))
            .send();
        let body = resp.try_json()?;
        if body["rows"] == json!([[n]]) {
            Ok(())
        } else {
            Err(format!("count: {resp}"))
        }
    });
    server
}

#[test]
fn sql_select_json() {
    // SELECT answers {"columns": [names], "rows": [[values]]} with the stored (deduplicated)
    // events; grouping and ordering work; `limit` caps the rows.
    let server = server_with_events(40);
    let answer = server.sql("SELECT count(*) AS n FROM events");
    assert_eq!(answer["columns"], json!(["n"]), "{answer}");
    assert_eq!(answer["rows"], json!([[40]]), "{answer}");

    let answer = server.sql(
        "SELECT subject, count(*) AS n FROM events WHERE type = 'request' \
         GROUP BY subject ORDER BY subject",
    );
    assert_eq!(answer["columns"], json!(["subject", "n"]), "{answer}");
    let mut want = Vec::new();
    for s in 0..4 {
        let n = (0..40).filter(|i| i % 4 == s && i % 5 != 0).count();
        want.push(json!([format!("s{s}"), n]));
    }
    assert_eq!(answer["rows"], Value::Array(want), "{answer}");

    let resp = server
        .post("/api/v1/sql")
        .json(&json!({ "sql": "SELECT id FROM events ORDER BY id", "limit": 3 }))
        .send()
        .expect_status(200);
    let body = resp.json();
    assert_eq!(
        body["rows"].as_array().map(Vec::len),
        Some(3),
        "limit 3: {resp}"
    );
}

#[test]
fn sql_csv() {
    // With Accept: text/csv the answer is CSV: a header line of column names, then one line per
    // row.
    let server = server_with_events(12);
    let resp = server
        .post("/api/v1/sql")
        .header("Accept", "text/csv")
        .json(&json!({
            "sql": "SELECT subject, count(*) AS n FROM events GROUP BY subject ORDER BY subject"
        }))
        .send()
        .expect_status(200);
    assert!(
        resp.content_type()
            .is_some_and(|c| c.starts_with("text/csv")),
        "{resp}"
    );
    assert_eq!(resp.body, "subject,n\ns0,3\ns1,3\ns2,3\ns3,3\n", "{resp}");
}

#[test]
fn sql_rejects_writes_and_bad_sql() {
    // Statements that would write or change the schema, syntax errors and unknown tables are
    // 400 problem+json; the data is unchanged afterwards.
    let server = server_with_events(10);
    for sql in [
        "INSERT INTO events (id) VALUES ('x')",
        "DELETE FROM events",
        "UPDATE events SET subject = 'x'",
        "DROP TABLE events",
        "CREATE TABLE t (a INT)",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "COPY events TO '/tmp/metron-sql-test.csv'",
        "SELECT * FROM '/etc/passwd'",
        "SELEC 1",
        "SELECT * FROM no_such_table",
    ] {
        let resp = server
            .post("/api/v1/sql")
            .json(&json!({ "sql": sql }))
            .send();
        assert_eq!(resp.status, 400, "{sql}: {resp}");
        assert_problem(&resp, 400);
    }
    let resp = server.post("/api/v1/sql").json(&json!({})).send();
    assert_problem(&resp, 400);
    assert_eq!(
        server.sql("SELECT count(*) FROM events")["rows"],
        json!([[10]])
    );
}

/// Abusive SQL, 16 queries at once: each is refused with a 4xx within its timeout
/// (guarded functions, the memory share, the concurrency limit, the timeout), while
/// ingest goes on and checkpoints complete; the server keeps serving.
#[test]
fn abusive_sql_is_refused_and_the_server_keeps_serving() {
    let server = TestServer::start_with_config(
        "checkpointInterval: 200ms\nsql:\n  memoryBytes: 16777216\n  concurrentMax: 4\n  stringBytesMax: 1048576\n  listElementsMax: 1000000\n",
    );
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 86_400, 0).expect("time");
    let event = |i: usize| {
        cloud_event(
            &format!("abuse-{i}"),
            "sql-test",
            "request",
            &format!("s{}", i % 8),
            t0 + Duration::seconds(i as i64),
            json!({ "n": i, "pad": "p".repeat(64) }),
        )
    };
    let events: Vec<Value> = (0..3000).map(event).collect();
    server.ingest_batch(&events).expect_status(204);
    eventually(VISIBLE, || {
        let answer = server.sql("SELECT count(*) FROM events");
        (answer["rows"] == json!([[3000]]))
            .then_some(())
            .ok_or(format!("{answer}"))
    });
    let checkpoints_before = gauge(&server, "metron_checkpoints_total").unwrap_or(0);
    let abuse = [
        "SELECT count(*) FROM generate_series(1, 1000000000000)",
        "SELECT sum(value) FROM range(1000000000000)",
        "SELECT length(repeat('x', 2147483648))",
        "SELECT cardinality(range(1000000000000))",
        "SELECT lpad('x', 2147483647)",
        "SELECT a.id, b.id, a.data FROM events a CROSS JOIN events b ORDER BY a.data, b.data DESC",
        "SELECT count(DISTINCT concat(a.id, b.id, a.data)) FROM events a CROSS JOIN events b",
        "SELECT array_agg(concat(a.data, b.data)) FROM events a CROSS JOIN events b",
    ];
    let timeout_ms = 4000u64;
    let client = server.client();
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let client = client.clone();
            let sql = abuse[i % abuse.len()].to_owned();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let resp = client
                    .post("/api/v1/sql")
                    .json(&json!({"sql": sql, "timeoutMs": timeout_ms}))
                    .send();
                (sql, resp, started.elapsed())
            })
        })
        .collect();
    // Ingest goes on meanwhile.
    let more: Vec<Value> = (3000..3100).map(event).collect();
    server.ingest_batch(&more).expect_status(204);
    let mut statuses = Vec::new();
    for t in threads {
        let (sql, resp, _elapsed) = t.join().expect("query thread");
        assert!(
            (400..500).contains(&resp.status),
            "{sql}: not refused with a 4xx: {resp}"
        );
        assert_eq!(
            resp.content_type(),
            Some("application/problem+json"),
            "{sql}: {resp}"
        );
        let detail = resp.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(!detail.is_empty(), "{sql}: no detail: {resp}");
        if resp.status == 429 {
            assert_eq!(resp.header("retry-after"), Some("1"), "{resp}");
        }
        statuses.push(resp.status);
    }
    // A checkpoint completed while the abuse ran, the server still answers, and the
    // events sent meanwhile are all there.
    eventually(VISIBLE, || {
        let now = gauge(&server, "metron_checkpoints_total").unwrap_or(0);
        (now > checkpoints_before)
            .then_some(())
            .ok_or(format!("checkpoints {checkpoints_before} -> {now}"))
    });
    server.get("/healthz").send().expect_status(200);
    eventually(VISIBLE, || {
        let answer = server.sql("SELECT count(*) FROM events");
        (answer["rows"] == json!([[3100]]))
            .then_some(())
            .ok_or(format!("{answer}"))
    });
    statuses.sort_unstable();
    eprintln!("abusive SQL answers: {statuses:?}");
}

#[test]
fn idle_partitions_answer_at_once_however_long_their_reads_wait() {
    // With `readWaitMax: 1h` an idle partition's read of the log waits an hour for records,
    // and only a message for the partition ends the wait at once (`PartitionHandle`). The SQL
    // view reads the events the partitions hold (no checkpoint for an hour), and SIGTERM's
    // final checkpoint seals every partition: both must answer now, not in an hour (the
    // client gives up after two minutes).
    let mut server = TestServer::start_with_config("readWaitMax: 1h\ncheckpointInterval: 1h\n");
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 3_600, 0).expect("time");
    let events: Vec<Value> = (0..10)
        .map(|i| {
            cloud_event(
                &format!("idle-{i}"),
                "idle-test",
                "request",
                &format!("s{i}"),
                t0 + Duration::seconds(i),
                json!({}),
            )
        })
        .collect();
    server.ingest_batch(&events).expect_status(204);
    // Let every partition go back to its hour-long read.
    std::thread::sleep(std::time::Duration::from_millis(500));
    for _ in 0..3 {
        let answer = server.sql("SELECT count(*) AS n FROM events");
        assert_eq!(answer["rows"], json!([[10]]), "{answer}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let status = server.terminate().expect("SIGTERM");
    assert!(
        status.success(),
        "exit: {status:?}\n{}",
        server.log_tail(30)
    );
    assert!(
        server.log_tail(50).contains("Wrote the final checkpoint."),
        "{}",
        server.log_tail(50)
    );
    server.restart();
    let answer = server.sql("SELECT count(*) AS n FROM events");
    assert_eq!(answer["rows"], json!([[10]]), "{answer}");
}
