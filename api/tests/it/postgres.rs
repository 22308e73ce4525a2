//! The catalog on PostgreSQL, end to end: `database.url` in the config file points the real
//! binary at a fresh database on the server `METRON_TEST_DATABASE_URL` names (see
//! `metron_storage::testing`; skipped with a message when unset, failed when `CI` is set too).

use crate::helpers::*;
use crate::server::*;
use chrono::{Duration, Utc};
use metron_storage::catalog::{Backend, Catalog};
use metron_storage::testing::TestDatabase;
use serde_json::{Value, json};

const SLUG: &str = "pg_tokens";
const SUBJECT: &str = "pg-subject";

/// The answers that must be the same before and after the restart.
fn observe(server: &TestServer, customer_id: &str, feature_key: &str) -> Value {
    let meter = server
        .get(&format!("/api/v1/meters/{SLUG}"))
        .send()
        .expect_status(200)
        .json();
    let customer = server
        .get(&format!("/api/v1/customers/{customer_id}"))
        .send()
        .expect_status(200)
        .json();
    let value = customer_value(server, customer_id, feature_key, Some(Utc::now()));
    json!({
        "meter": { "slug": meter["slug"], "aggregation": meter["aggregation"] },
        "customer": { "key": customer["key"], "subjects": customer["usageAttribution"] },
        "value": { "balance": value["balance"], "usage": value["usage"], "hasAccess": value["hasAccess"] },
    })
}

#[test]
fn catalog_on_postgres_survives_a_restart() {
    // A meter (over the API), a customer, a feature, an entitlement and its grant are written
    // to PostgreSQL; events are ingested and counted against the grant. After a clean restart
    // on the same data directory and database, the same answers come back; no SQLite file was
    // ever created; and the rows are in PostgreSQL (read there with the catalog directly).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let Some(db) = runtime.block_on(TestDatabase::postgres(module_path!())) else {
        return;
    };
    assert_eq!(db.backend(), Backend::Postgres);
    let config = format!(
        "checkpointInterval: 500ms\ndatabase:\n  url: \"{}\"\n",
        db.url()
    );
    let mut server = TestServer::start_with_config(&config);

    server.create_meter(&json!({
        "slug": SLUG,
        "eventType": "tokens",
        "aggregation": "SUM",
        "valueProperty": "$.tokens",
    }));
    let customer = create_customer_with_subject(&server, "pg-customer", SUBJECT);
    let customer_id = text(&customer, "id");
    let feature_key = "pg_feature";
    create_feature(
        &server,
        &json!({ "name": "PostgreSQL tokens", "key": feature_key, "meterSlug": SLUG }),
    );
    let now = Utc::now();
    let mut entitlement = json!({
        "type": "metered",
        "featureKey": feature_key,
        "usagePeriod": { "anchor": ANCHOR_2024, "interval": "MONTH" },
    });
    entitlement["measureUsageFrom"] = json!(rfc3339(minute_floor(now - Duration::minutes(10))));
    create_customer_entitlement(&server, &customer_id, &entitlement);
    server
        .post(&format!(
            "/api/v2/customers/{customer_id}/entitlements/{feature_key}/grants"
        ))
        .json(&json!({
            "amount": 1000,
            "effectiveAt": rfc3339(minute_floor(now - Duration::minutes(9))),
            "expiration": { "duration": "MONTH", "count": 1 },
        }))
        .send()
        .expect_status(201);

    let events: Vec<Value> = (0..20)
        .map(|i| {
            cloud_event(
                &format!("pg-{i}"),
                "pg-test",
                "tokens",
                SUBJECT,
                now - Duration::minutes(5) + Duration::seconds(i),
                json!({ "tokens": 7 }),
            )
        })
        .collect();
    ingest_and_wait(&server, &events, SLUG, 140.0);
    let before = eventually(VISIBLE, || {
        let seen = observe(&server, &customer_id, feature_key);
        match (
            seen["value"]["usage"].as_f64(),
            seen["value"]["balance"].as_f64(),
        ) {
            (Some(140.0), Some(860.0)) => Ok(seen),
            _ => Err(format!("want usage 140, balance 860: {seen}")),
        }
    });

    server.restart();
    wait_for_total(&server, SLUG, 140.0);
    assert_eq!(observe(&server, &customer_id, feature_key), before);
    assert!(
        !server.data_dir().join("catalog.db").exists(),
        "the catalog must not fall back to the SQLite file"
    );
    server.terminate().expect("stop");

    runtime.block_on(async {
        let catalog = Catalog::connect(db.url()).await.expect("connect");
        let meters = catalog.list_meters("default", false).await.expect("meters");
        assert!(meters.iter().any(|m| m.slug == SLUG), "{meters:?}");
        let stored = catalog
            .get_customer_by_id("default", &customer_id)
            .await
            .expect("customer");
        assert_eq!(stored.map(|c| c.id), Some(customer_id.clone()));
        catalog.close().await;
    });
}

#[test]
fn database_url_wins_over_the_config_file() {
    // `DATABASE_URL` (the environment of `--database-url`) wins over `database.url`: with the
    // file naming a SQLite path and the variable a PostgreSQL database, a meter created over
    // the API lands in PostgreSQL and no SQLite file appears.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let Some(db) = runtime.block_on(TestDatabase::postgres(module_path!())) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = dir.path().join("ignored.db");
    let config = format!(
        "database:\n  url: \"{}\"\n",
        metron_storage::catalog::sqlite_url(&sqlite)
    );
    let mut server = TestServer::builder()
        .with_config(&config)
        .with_env("DATABASE_URL", db.url())
        .start();
    server.create_meter(&json!({
        "slug": "pg_env",
        "eventType": "env",
        "aggregation": "COUNT",
    }));
    server.terminate().expect("stop");
    assert!(!sqlite.exists(), "database.url must lose to DATABASE_URL");
    runtime.block_on(async {
        let catalog = Catalog::connect(db.url()).await.expect("connect");
        let meters = catalog.list_meters("default", false).await.expect("meters");
        assert_eq!(
            meters.iter().map(|m| m.slug.as_str()).collect::<Vec<_>>(),
            ["pg_env"]
        );
        catalog.close().await;
    });
}

#[test]
fn text_with_a_nul_character_is_a_bad_request_on_postgres_too() {
    // PostgreSQL's text cannot hold U+0000 (SQLite's can): a key or name carrying one is the
    // request's fault, 400, as every other invalid value, never a 500.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let Some(db) = runtime.block_on(TestDatabase::postgres(
        "postgres::text_with_a_nul_character_is_a_bad_request",
    )) else {
        return;
    };
    let config = format!("database:\n  url: \"{}\"\n", db.url());
    let server = TestServer::start_with_config(&config);
    let resp = server
        .post("/api/v1/customers")
        .json(&json!({
            "name": "nul",
            "key": "bad\u{0}key",
            "usageAttribution": { "subjectKeys": ["nul-subject"] },
        }))
        .send();
    let detail = assert_problem(&resp, 400);
    assert!(detail.contains("NUL"), "{detail}");
    let resp = server
        .post("/api/v1/features")
        .json(&json!({ "key": "feature\u{0}", "name": "n" }))
        .send();
    assert_problem(&resp, 400);
    // The server is unharmed: a valid customer is created.
    server
        .post("/api/v1/customers")
        .json(&json!({
            "name": "ok",
            "key": "good-key",
            "usageAttribution": { "subjectKeys": ["ok-subject"] },
        }))
        .send()
        .expect_status(201);
}
