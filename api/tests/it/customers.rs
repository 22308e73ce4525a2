//! Customers, subjects and features over HTTP, and usage attribution in event
//! listings and meter queries (OpenMeter's `streaming_test.go`
//! TestListEventsByCustomerAttribution and its `filterCustomerId` rules); all of it
//! survives a clean restart.

use crate::helpers::*;
use crate::server::*;
use chrono::{Duration, Utc};
use serde_json::{Value, json};

const CONFIG: &str = r#"
meters:
  - slug: tokens
    eventType: tokens
    aggregation: SUM
    valueProperty: $.tokens
    groupBy:
      model: $.model
"#;

fn create_customer(server: &TestServer, body: &Value) -> Value {
    server
        .post("/api/v1/customers")
        .json(body)
        .send()
        .expect_status(201)
        .json()
}

// Create, get by id and key, list with filters and pages, replace, delete; conflicts
// and missing customers answer 409 and 404 problems.
#[test]
fn customer_crud_pagination_and_conflicts() {
    let server = TestServer::start_with_config(CONFIG);
    let acme = create_customer(
        &server,
        &json!({"name": "ACME", "key": "acme", "primaryEmail": "Ops@acme.test",
                "usageAttribution": {"subjectKeys": ["acme-1", "acme-2"]}}),
    );
    let id = acme["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(id.len(), 26, "ULID id: {acme}");
    assert_eq!(
        acme["usageAttribution"]["subjectKeys"],
        json!(["acme-1", "acme-2"])
    );
    assert!(acme.get("deletedAt").is_none(), "{acme}");
    create_customer(
        &server,
        &json!({"name": "Beta", "usageAttribution": {"subjectKeys": ["beta"]}}),
    );
    create_customer(&server, &json!({"name": "Gamma", "key": "gamma"}));

    assert_eq!(
        server
            .get(&format!("/api/v1/customers/{id}"))
            .send()
            .expect_status(200)
            .json()["key"],
        "acme"
    );
    assert_eq!(
        server
            .get("/api/v1/customers/acme")
            .send()
            .expect_status(200)
            .json()["id"],
        json!(id)
    );

    // 409: key taken; subject key taken; a subject key equal to another customer's key.
    for body in [
        json!({"name": "x", "key": "acme"}),
        json!({"name": "x", "usageAttribution": {"subjectKeys": ["acme-2"]}}),
        json!({"name": "x", "usageAttribution": {"subjectKeys": ["gamma"]}}),
    ] {
        assert_problem(&server.post("/api/v1/customers").json(&body).send(), 409);
    }
    // 400: neither key nor subject keys; no name.
    assert_problem(
        &server
            .post("/api/v1/customers")
            .json(&json!({"name": "x"}))
            .send(),
        400,
    );
    assert_problem(
        &server
            .post("/api/v1/customers")
            .json(&json!({"key": "k"}))
            .send(),
        400,
    );

    let list = server
        .get("/api/v1/customers")
        .query("page", "1")
        .query("pageSize", "2")
        .query("orderBy", "name")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(list["totalCount"], 3);
    assert_eq!(list["page"], 1);
    assert_eq!(list["pageSize"], 2);
    let names: Vec<&str> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, vec!["ACME", "Beta"]);
    let page2 = server
        .get("/api/v1/customers")
        .query("page", "2")
        .query("pageSize", "2")
        .send()
        .json();
    assert_eq!(page2["items"].as_array().map(Vec::len), Some(1));
    let by_subject = server
        .get("/api/v1/customers")
        .query("subject", "ACME-2")
        .send()
        .json();
    assert_eq!(by_subject["totalCount"], 1, "{by_subject}");
    let by_email = server
        .get("/api/v1/customers")
        .query("primaryEmail", "ops@")
        .send()
        .json();
    assert_eq!(by_email["items"][0]["id"], json!(id));

    // Replace: the freed subject key can go to someone else.
    let replaced = server
        .put("/api/v1/customers/acme")
        .json(&json!({"name": "ACME Inc", "key": "acme", "usageAttribution": {"subjectKeys": ["acme-1"]}}))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(replaced["name"], "ACME Inc");
    assert_eq!(replaced["createdAt"], acme["createdAt"]);
    create_customer(
        &server,
        &json!({"name": "Delta", "usageAttribution": {"subjectKeys": ["acme-2"]}}),
    );

    server
        .delete("/api/v1/customers/acme")
        .send()
        .expect_status(204);
    assert_problem(&server.get("/api/v1/customers/acme").send(), 404);
    assert_problem(&server.delete("/api/v1/customers/acme").send(), 404);
    assert_problem(
        &server
            .put("/api/v1/customers/nope")
            .json(&json!({"name": "x", "key": "k"}))
            .send(),
        404,
    );
    let all = server
        .get("/api/v1/customers")
        .query("includeDeleted", "true")
        .send()
        .json();
    assert_eq!(all["totalCount"], 4);
    let live = server.get("/api/v1/customers").send().json();
    assert_eq!(live["totalCount"], 3);
    // The deleted customer's key is free again.
    create_customer(&server, &json!({"name": "ACME 2", "key": "acme"}));
}

// Subjects: upsert an array (create, then update keeps the id), list, get, delete.
#[test]
fn subjects_upsert_list_delete() {
    let server = TestServer::start_with_config(CONFIG);
    let created = server
        .post("/api/v1/subjects")
        .json(&json!([{"key": "s1", "displayName": "One"}, {"key": "s2", "metadata": {"a": 1}}]))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(created.as_array().map(Vec::len), Some(2));
    let updated = server
        .post("/api/v1/subjects")
        .json(&json!([{"key": "s1", "displayName": "Uno"}]))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(updated[0]["id"], created[0]["id"]);
    assert_eq!(updated[0]["displayName"], "Uno");
    let list = server
        .get("/api/v1/subjects")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    assert_eq!(
        server
            .get("/api/v1/subjects/s2")
            .send()
            .expect_status(200)
            .json()["metadata"]["a"],
        1
    );
    server
        .delete("/api/v1/subjects/s1")
        .send()
        .expect_status(204);
    assert_problem(&server.get("/api/v1/subjects/s1").send(), 404);
    assert_problem(&server.delete("/api/v1/subjects/s1").send(), 404);
}

// Features: create with validation, list (bare array or page), get by id or key, archive.
#[test]
fn features_create_list_archive() {
    let server = TestServer::start_with_config(CONFIG);
    let feature = server
        .post("/api/v1/features")
        .json(
            &json!({"key": "gpt_tokens", "name": "GPT tokens", "meterSlug": "tokens",
                      "meterGroupByFilters": {"model": "gpt-4"}}),
        )
        .send()
        .expect_status(201)
        .json();
    assert_eq!(
        feature["advancedMeterGroupByFilters"],
        json!({"model": {"$eq": "gpt-4"}})
    );
    assert_eq!(feature["meterGroupByFilters"], json!({"model": "gpt-4"}));
    server
        .post("/api/v1/features")
        .json(&json!({"key": "seats", "name": "Seats"}))
        .send()
        .expect_status(201);
    for (body, status) in [
        (json!({"key": "gpt_tokens", "name": "dup"}), 409),
        (json!({"key": "Bad-Key", "name": "x"}), 400),
        (
            json!({"key": "f1", "name": "x", "meterSlug": "missing"}),
            400,
        ),
        (
            json!({"key": "f2", "name": "x", "meterSlug": "tokens", "meterGroupByFilters": {"nope": "a"}}),
            400,
        ),
        (
            json!({"key": "f3", "name": "x", "meterSlug": "tokens",
                "advancedMeterGroupByFilters": {"model": {"$bogus": "a"}}}),
            400,
        ),
    ] {
        assert_problem(&server.post("/api/v1/features").json(&body).send(), status);
    }
    let list = server
        .get("/api/v1/features")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    let by_meter = server
        .get("/api/v1/features")
        .query("meterSlug", "tokens")
        .send()
        .json();
    assert_eq!(by_meter.as_array().map(Vec::len), Some(1));
    let paged = server
        .get("/api/v1/features")
        .query("page", "1")
        .query("pageSize", "1")
        .send()
        .json();
    assert_eq!(paged["totalCount"], 2);
    assert_eq!(paged["items"].as_array().map(Vec::len), Some(1));
    let id = feature["id"].as_str().unwrap_or_default();
    assert_eq!(
        server
            .get(&format!("/api/v1/features/{id}"))
            .send()
            .expect_status(200)
            .json()["key"],
        "gpt_tokens"
    );
    assert_eq!(
        server
            .get("/api/v1/features/gpt_tokens")
            .send()
            .expect_status(200)
            .json()["id"],
        json!(id)
    );
    server
        .delete("/api/v1/features/gpt_tokens")
        .send()
        .expect_status(204);
    assert_problem(&server.get("/api/v1/features/gpt_tokens").send(), 404);
    let archived = server
        .get(&format!("/api/v1/features/{id}"))
        .send()
        .expect_status(200)
        .json();
    assert!(archived["archivedAt"].is_string(), "{archived}");
    assert_eq!(
        server
            .get("/api/v1/features")
            .send()
            .json()
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let all = server
        .get("/api/v1/features")
        .query("includeArchived", "true")
        .send()
        .json();
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    // The archived key is free again.
    server
        .post("/api/v1/features")
        .json(&json!({"key": "gpt_tokens", "name": "again"}))
        .send()
        .expect_status(201);
}

fn listed_ids(
    server: &TestServer,
    key: &str,
    value: &str,
    from: &str,
) -> Result<Vec<(String, Value)>, String> {
    let resp = server
        .get("/api/v1/events")
        .query(key, value)
        .query("from", from)
        .send();
    if resp.status != 200 {
        return Err(format!("list answered {resp}"));
    }
    let mut out: Vec<(String, Value)> = resp
        .json()
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["event"]["id"].as_str().unwrap_or_default().to_owned(),
                e["customerId"].clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

// OpenMeter's TestListEventsByCustomerAttribution, then meter queries by customer
// (a customer with a key and two subject keys), all again after a restart.
#[test]
fn events_and_queries_by_customer_attribution() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = TestServer::builder()
        .with_config(CONFIG)
        .with_data_dir(dir.path())
        .start();
    let key = "streaming-customer";
    let subjects = ["streaming-subject-1", "streaming-subject-'2'"];
    let customer = create_customer(
        &server,
        &json!({"name": "Streaming", "currency": "USD", "key": key, "usageAttribution": {"subjectKeys": subjects}}),
    );
    let customer_id = customer["id"].as_str().unwrap_or_default().to_owned();
    let other = create_customer(&server, &json!({"name": "Other", "key": "other"}));
    let other_id = other["id"].as_str().unwrap_or_default().to_owned();
    let t0 = Utc::now() - Duration::minutes(5);
    let attribution = [key, subjects[0], subjects[1]];
    let mut ids = Vec::new();
    let mut events = Vec::new();
    for (i, subject) in attribution
        .iter()
        .chain(["other", "nobody"].iter())
        .enumerate()
    {
        let id = new_id();
        let model = if i % 2 == 0 { "a" } else { "b" };
        events.push(cloud_event(
            &id,
            "e2e",
            "tokens",
            subject,
            t0 + Duration::milliseconds(i as i64),
            json!({"tokens": 10 * (i + 1), "model": model}),
        ));
        ids.push(id);
    }
    server.ingest_batch(&events).expect_status(204);
    let from = rfc3339(t0 - Duration::minutes(1));

    let check = |server: &TestServer| {
        let mut expected: Vec<(String, Value)> = ids[..3]
            .iter()
            .map(|id| (id.clone(), json!(customer_id)))
            .collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        eventually(VISIBLE, || {
            let got = listed_ids(server, "customerId", &customer_id, &from)?;
            if got == expected {
                Ok(())
            } else {
                Err(format!("by customer: {got:?}"))
            }
        });
        for (i, subject) in attribution.iter().enumerate() {
            let got = listed_ids(server, "subject", subject, &from).unwrap_or_default();
            assert_eq!(
                got,
                vec![(ids[i].clone(), json!(customer_id))],
                "by subject {subject}"
            );
        }
        let nobody = listed_ids(server, "subject", "nobody", &from).unwrap_or_default();
        assert_eq!(nobody, vec![(ids[4].clone(), Value::Null)]);

        // One customer: its three subjects' usage, one row carrying its id.
        let q = parse_query(&server.query("tokens", &[("filterCustomerId", customer_id.clone())]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.data.len(), 1, "{q:?}");
        assert_eq!(q.data[0].value, 60.0);
        assert_eq!(q.data[0].customer_id.as_deref(), Some(customer_id.as_str()));
        assert_eq!(q.data[0].subject, None);
        // Two customers grouped by customer and model.
        let q = parse_query(&server.query(
            "tokens",
            &[
                ("filterCustomerId", customer_id.clone()),
                ("filterCustomerId", other_id.clone()),
                ("groupBy", "customer_id".into()),
                ("groupBy", "model".into()),
            ],
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let mut rows: Vec<(String, String, f64)> = q
            .data
            .iter()
            .map(|r| {
                (
                    r.customer_id.clone().unwrap_or_default(),
                    r.group_by
                        .get("model")
                        .cloned()
                        .flatten()
                        .unwrap_or_default(),
                    r.value,
                )
            })
            .collect();
        rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut want = vec![
            (customer_id.clone(), "a".to_owned(), 40.0),
            (customer_id.clone(), "b".to_owned(), 20.0),
            (other_id.clone(), "b".to_owned(), 40.0),
        ];
        want.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        assert_eq!(rows, want);
        assert!(
            q.data
                .iter()
                .all(|r| !r.group_by.contains_key("customer_id"))
        );
        // Customer filter ANDs with a subject filter.
        let q = parse_query(&server.query(
            "tokens",
            &[
                ("filterCustomerId", customer_id.clone()),
                ("subject", subjects[0].into()),
            ],
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.data.len(), 1);
        assert_eq!(q.data[0].value, 20.0);
        assert_eq!(q.data[0].subject.as_deref(), Some(subjects[0]));
        // Unknown customers: 404 on queries, 400 on listings; customer_id grouping needs a filter.
        let unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
        assert_problem(
            &server.query("tokens", &[("filterCustomerId", unknown.into())]),
            404,
        );
        assert_problem(
            &server.query("tokens", &[("groupBy", "customer_id".into())]),
            400,
        );
        assert_problem(
            &server
                .get("/api/v1/events")
                .query("customerId", unknown)
                .send(),
            400,
        );
    };
    check(&server);
    // v2 listing by customer.
    let filter = json!({"customerId": {"$in": [customer_id]}}).to_string();
    let v2 = server
        .get("/api/v2/events")
        .query("filter", &filter)
        .send()
        .expect_status(200)
        .json();
    assert_eq!(v2["items"].as_array().map(Vec::len), Some(3), "{v2}");

    server.restart();
    check(&server);
    assert_eq!(
        server.get("/api/v1/customers").send().json()["totalCount"],
        2
    );
    // After the restart the attribution index still refuses a taken subject.
    assert_problem(
        &server
            .post("/api/v1/customers")
            .json(&json!({"name": "x", "usageAttribution": {"subjectKeys": [subjects[1]]}}))
            .send(),
        409,
    );
}
