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
