//! Meter management over HTTP: create/get/list/update/delete with OpenMeter's status codes and
//! problem+json errors, config-declared meters, backfill of meters created after their events,
//! and the health endpoints.

use crate::helpers::*;
use crate::server::*;
use chrono::{Duration, Utc};
use serde_json::{Value, json};

#[test]
fn meter_crud() {
    // POST 201 (server-assigned id, name defaulting to the slug), GET by slug and by id 200,
    // list 200 (bare array), PUT 200 (name/description/groupBy), DELETE 204, then GET 404 and
    // the list no longer has it; unknown meters are 404 problem+json.
    let server = TestServer::start();
    let created = server.create_meter(&json!({
        "slug": "tokens_total",
        "eventType": "prompt",
        "aggregation": "SUM",
        "valueProperty": "$.tokens",
        "groupBy": { "model": "$.model" },
    }));
    let id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {created}"))
        .to_owned();
    assert_eq!(created["slug"], "tokens_total", "{created}");
    assert_eq!(
        created["name"], "tokens_total",
        "name defaults to the slug: {created}"
    );
    assert_eq!(created["aggregation"], "SUM", "{created}");
    assert_eq!(created["eventType"], "prompt", "{created}");
    assert_eq!(created["valueProperty"], "$.tokens", "{created}");
    assert_eq!(
        created["groupBy"],
        json!({ "model": "$.model" }),
        "{created}"
    );
    for key in ["createdAt", "updatedAt"] {
        assert!(created[key].is_string(), "{key} missing: {created}");
    }

    let by_slug = server
        .get("/api/v1/meters/tokens_total")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(by_slug["id"], json!(id), "{by_slug}");
    let by_id = server
        .get(&format!("/api/v1/meters/{id}"))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(by_id["slug"], "tokens_total", "{by_id}");

    let list = server
        .get("/api/v1/meters")
        .send()
        .expect_status(200)
        .json();
    let slugs: Vec<&str> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a bare array: {list}"))
        .iter()
        .filter_map(|m| m["slug"].as_str())
        .collect();
    assert!(slugs.contains(&"tokens_total"), "{list}");

    let updated = server
        .put("/api/v1/meters/tokens_total")
        .json(&json!({
            "name": "Tokens",
            "description": "all tokens",
            "groupBy": { "model": "$.model", "region": "$.region" },
        }))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(updated["name"], "Tokens", "{updated}");
    assert_eq!(updated["description"], "all tokens", "{updated}");
    assert_eq!(
        updated["aggregation"], "SUM",
        "immutable fields stay: {updated}"
    );
    assert_eq!(
        updated["groupBy"],
        json!({ "model": "$.model", "region": "$.region" }),
        "{updated}"
    );
    let again = server
        .get("/api/v1/meters/tokens_total")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(again["name"], "Tokens", "{again}");

    let resp = server.delete("/api/v1/meters/tokens_total").send();
    assert_eq!(resp.status, 204, "{resp}");
    assert!(resp.body.is_empty(), "204 has no body: {resp}");
    assert_problem(&server.get("/api/v1/meters/tokens_total").send(), 404);
    assert_problem(&server.get(&format!("/api/v1/meters/{id}")).send(), 404);
    let list = server
        .get("/api/v1/meters")
        .send()
        .expect_status(200)
        .json();
    assert!(
        !list
            .as_array()
            .expect("array")
            .iter()
            .any(|m| m["slug"] == "tokens_total"),
        "deleted meter still listed: {list}"
    );

    assert_problem(&server.get("/api/v1/meters/nope").send(), 404);
    assert_problem(&server.delete("/api/v1/meters/nope").send(), 404);
    assert_problem(
        &server
            .put("/api/v1/meters/nope")
            .json(&json!({ "name": "x" }))
            .send(),
        404,
    );
    assert_problem(&server.query("nope", &[]), 404);
}

#[test]
fn meter_create_validation() {
    // Invalid MeterCreate bodies are 400 problem+json; a second meter with the same slug is 409.
    let server = TestServer::start();
    let ok = json!({
        "slug": "m_ok",
        "eventType": "e",
        "aggregation": "SUM",
        "valueProperty": "$.v",
    });
    let with = |changes: Value| {
        let mut body = ok.clone();
        for (k, v) in changes.as_object().expect("object") {
            if v.is_null() {
                body.as_object_mut().expect("object").remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    };
    let cases = [
        ("bad slug", with(json!({ "slug": "Not A Slug" }))),
        ("missing slug", with(json!({ "slug": null }))),
        ("missing eventType", with(json!({ "eventType": null }))),
        (
            "unknown aggregation",
            with(json!({ "aggregation": "MEDIAN" })),
        ),
        (
            "SUM without valueProperty",
            with(json!({ "valueProperty": null })),
        ),
        (
            "COUNT with valueProperty",
            with(json!({ "aggregation": "COUNT" })),
        ),
        (
            "valueProperty not a JSONPath",
            with(json!({ "valueProperty": "v" })),
        ),
        (
            "groupBy path not a JSONPath",
            with(json!({ "groupBy": { "model": "model" } })),
        ),
        (
            "groupBy key invalid",
            with(json!({ "groupBy": { "bad-key": "$.k" } })),
        ),
        (
            "groupBy path equals valueProperty",
            with(json!({ "groupBy": { "v": "$.v" } })),
        ),
    ];
    for (name, body) in cases {
        let resp = server.post("/api/v1/meters").json(&body).send();
        assert_eq!(resp.status, 400, "{name}: {body} -> {resp}");
        assert_problem(&resp, 400);
    }
    let resp = server
        .post("/api/v1/meters")
        .body("application/json", "{not json")
        .send();
    assert_problem(&resp, 400);

    server.create_meter(&ok);
    assert_problem(&server.post("/api/v1/meters").json(&ok).send(), 409);
}

#[test]
fn config_meters_are_listed_and_queryable() {
    // Meters from the config file are listed by GET /api/v1/meters with their definitions and
    // answer queries.
    let server = TestServer::start_with_config(E2E_CONFIG);
    let list = server
        .get("/api/v1/meters")
        .send()
        .expect_status(200)
        .json();
    let meters = list
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"));
    for slug in [
        "ingest",
        "batchingest",
        "ingest_content_type_application_json",
        "ingest_invalid",
        "dedupe",
        "query",
    ] {
        assert!(
            meters.iter().any(|m| m["slug"] == slug),
            "{slug} not listed: {list}"
        );
    }
    let query = meters
        .iter()
        .find(|m| m["slug"] == "query")
        .expect("query meter");
    assert_eq!(query["aggregation"], "SUM", "{query}");
    assert_eq!(query["eventType"], "query", "{query}");
    assert_eq!(query["valueProperty"], "$.duration_ms", "{query}");
    assert_eq!(
        query["groupBy"],
        json!({ "method": "$.method", "path": "$.path" }),
        "{query}"
    );
    let dedupe = meters
        .iter()
        .find(|m| m["slug"] == "dedupe")
        .expect("dedupe meter");
    assert_eq!(dedupe["aggregation"], "COUNT", "{dedupe}");
    // No events yet: an empty answer, not an error.
    let empty = parse_query(&server.query("ingest", &[])).expect("empty query");
    assert!(empty.data.is_empty(), "{empty:?}");
}

#[test]
fn meter_created_after_its_events_backfills() {
    // A meter created after its events were ingested counts them (backfill), and keeps counting
    // events ingested afterwards; a meter for another event type does not see them.
    let server = TestServer::start();
    let t0 = Utc::now() - Duration::days(3);
    let events: Vec<Value> = (0..50)
        .map(|i| {
            cloud_event(
                &new_id(),
                "backfill",
                "late_meter_event",
                &format!("s{}", i % 3),
                t0 + Duration::minutes(i * 61),
                json!({ "tokens": i, "model": if i % 2 == 0 { "a" } else { "b" } }),
            )
        })
        .collect();
    server.ingest_batch(&events).expect_status(204);
    // Make sure the events are stored before the meter exists.
    eventually(VISIBLE, || {
        let list = server
            .get("/api/v1/events")
            .query("limit", "100")
            .send()
            .try_json()?;
        match list.as_array().map(Vec::len) {
            Some(50) => Ok(()),
            n => Err(format!("{n:?} events listed")),
        }
    });

    server.create_meter(&json!({
        "slug": "late_sum",
        "eventType": "late_meter_event",
        "aggregation": "SUM",
        "valueProperty": "$.tokens",
        "groupBy": { "model": "$.model" },
    }));
    server.create_meter(&json!({
        "slug": "late_count",
        "eventType": "late_meter_event",
        "aggregation": "COUNT",
    }));
    server.create_meter(&json!({
        "slug": "other_count",
        "eventType": "other_event",
        "aggregation": "COUNT",
    }));
    let sum: i64 = (0..50).sum();
    wait_for_total(&server, "late_sum", sum as f64);
    wait_for_total(&server, "late_count", 50.0);
    let even: i64 = (0..50).filter(|i| i % 2 == 0).sum();
    let got = parse_query(&server.query(
        "late_sum",
        &[
            ("groupBy", "model".into()),
            ("filterGroupBy[model]", "a".into()),
        ],
    ))
    .expect("grouped backfill query");
    assert_eq!(got.data.len(), 1, "{got:?}");
    assert_eq!(got.data[0].value, even as f64, "{got:?}");
    let other = parse_query(&server.query("other_count", &[])).expect("other meter");
    assert!(other.data.is_empty(), "{other:?}");

    server
        .ingest_one(&cloud_event(
            &new_id(),
            "backfill",
            "late_meter_event",
            "s0",
            Utc::now(),
            json!({ "tokens": 1000, "model": "a" }),
        ))
        .expect_status(204);
    wait_for_total(&server, "late_sum", (sum + 1000) as f64);
    wait_for_total(&server, "late_count", 51.0);
}

#[test]
fn health_ready_and_metrics() {
    // /healthz and /readyz answer 200 on a running server; /metrics answers 200 with text.
    let server = TestServer::start();
    server.get("/healthz").send().expect_status(200);
    server.get("/readyz").send().expect_status(200);
    let metrics = server.get("/metrics").send().expect_status(200);
    assert!(!metrics.body.is_empty(), "{metrics}");
}

#[test]
fn meters_created_between_ingests_and_checkpoints_all_backfill() {
    // Meters created at many moments (right after acknowledged batches, across frequent
    // checkpoints) all count every event of their type: those ingested before the meter existed
    // (backfill) and those after. Checked again after a restart.
    let config = "checkpointInterval: 100ms\nmeters:\n  - slug: seen\n    eventType: race\n    aggregation: COUNT\n";
    let mut server = TestServer::start_with_config(config);
    let t0 = Utc::now() - Duration::days(2);
    let mut total = 0usize;
    let mut meters = Vec::new();
    for round in 0..24 {
        let events: Vec<Value> = (0..25)
            .map(|i| {
                cloud_event(
                    &format!("race-{round}-{i}"),
                    "race",
                    "race",
                    "s",
                    t0 + Duration::seconds((round * 25 + i) as i64 * 17),
                    json!({ "v": 1 }),
                )
            })
            .collect();
        server.ingest_batch(&events).expect_status(204);
        total += events.len();
        if round % 2 == 1 {
            // Some meters right after the 204, others once the events are visible.
            wait_for_total(&server, "seen", total as f64);
        }
        let slug = format!("race_{round}");
        let aggregation = if round % 3 == 0 { "COUNT" } else { "SUM" };
        let mut body = json!({ "slug": slug, "eventType": "race", "aggregation": aggregation });
        if aggregation == "SUM" {
            body["valueProperty"] = json!("$.v");
        }
        server.create_meter(&body);
        meters.push(slug);
    }
    let check = |server: &TestServer, when: &str| {
        let mut wrong = Vec::new();
        for slug in &meters {
            let got = try_eventually(VISIBLE, || {
                let got = parse_query(&server.query(slug, &[]))?;
                match got.data.as_slice() {
                    [row] if row.value == total as f64 => Ok(()),
                    _ => Err(format!("{slug}: {:?}", got.data.first().map(|r| r.value))),
                }
            });
            if let Err(e) = got {
                wrong.push(e);
            }
        }
        assert!(
            wrong.is_empty(),
            "{when}: meters not counting all {total} events: {wrong:?}"
        );
    };
    check(&server, "before restart");
    server.restart();
    check(&server, "after restart");
}
