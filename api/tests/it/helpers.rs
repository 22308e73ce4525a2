//! CloudEvents, meter configs and query answers shared by the tests.

use crate::server::{Resp, TestServer, VISIBLE, eventually};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The meters of OpenMeter's `e2e/config.yaml` that the ported scenarios use (same slugs,
/// event types, aggregations and JSONPaths).
pub const E2E_CONFIG: &str = r#"
meters:
  - slug: ingest
    description: Meter for testing ingestion
    eventType: ingest
    valueProperty: $.duration_ms
    aggregation: SUM
  - slug: batchingest
    description: Meter for testing batch ingestion
    eventType: batchingest
    valueProperty: $.duration_ms
    aggregation: SUM
  - slug: ingest_content_type_application_json
    description: Meter for testing ingestion
    eventType: ingest_content_type_application_json
    valueProperty: $.duration_ms
    aggregation: SUM
  - slug: ingest_invalid
    description: Meter for testing ingesting invalid events
    eventType: ingest_invalid
    valueProperty: $.duration_ms
    aggregation: SUM
  - slug: dedupe
    description: Meter for testing deduplication
    eventType: dedupe
    aggregation: COUNT
  - slug: query
    description: Meter for testing querying
    eventType: query
    valueProperty: $.duration_ms
    aggregation: SUM
    groupBy:
      method: $.method
      path: $.path
"#;

/// A random event id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// RFC 3339 in UTC with `Z`, fractional seconds only when present.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A CloudEvent with JSON `data` (what the Go SDK's `SetData("application/json", ..)` sends).
pub fn cloud_event(
    id: &str,
    source: &str,
    event_type: &str,
    subject: &str,
    time: DateTime<Utc>,
    data: Value,
) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": event_type,
        "subject": subject,
        "time": rfc3339(time),
        "datacontenttype": "application/json",
        "data": data,
    })
}

/// `MeterQueryResult`: `from`, `to` and `windowSize` are absent unless the request set them.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueryResult {
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
    #[serde(default)]
    pub window_size: Option<String>,
    pub data: Vec<Row>,
}

/// `MeterQueryRow`; `groupBy` is required (always present, `{}` when not grouping).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub value: f64,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub customer_id: Option<String>,
    pub group_by: BTreeMap<String, Option<String>>,
}

impl Row {
    /// A row without subject or group-by values.
    pub fn plain(value: f64, window_start: DateTime<Utc>, window_end: DateTime<Utc>) -> Row {
        Row {
            value,
            window_start,
            window_end,
            subject: None,
            customer_id: None,
            group_by: BTreeMap::new(),
        }
    }

    pub fn with_subject(mut self, subject: &str) -> Row {
        self.subject = Some(subject.to_owned());
        self
    }

    pub fn with_group(mut self, key: &str, value: &str) -> Row {
        self.group_by.insert(key.to_owned(), Some(value.to_owned()));
        self
    }
}

/// Parses a 200 answer of a meter query; any other status is an `Err` naming the response.
pub fn parse_query(resp: &Resp) -> Result<QueryResult, String> {
    if resp.status != 200 {
        return Err(format!("query answered {resp}"));
    }
    serde_json::from_str(&resp.body).map_err(|e| format!("bad MeterQueryResult ({e}): {resp}"))
}

/// Runs the query until it answers exactly `expected` (within [`VISIBLE`]).
#[track_caller]
pub fn wait_for_query(
    server: &TestServer,
    slug: &str,
    params: &[(&str, String)],
    expected: &QueryResult,
) {
    eventually(VISIBLE, || {
        let got = parse_query(&server.query(slug, params))?;
        if &got == expected {
            Ok(())
        } else {
            Err(format!(
                "query {slug} {params:?}\n  got:      {got:?}\n  expected: {expected:?}"
            ))
        }
    });
}

/// Waits until the meter's total (no window, no grouping) is one row of value `expected`.
#[track_caller]
pub fn wait_for_total(server: &TestServer, slug: &str, expected: f64) -> Row {
    eventually(VISIBLE, || {
        let got = parse_query(&server.query(slug, &[]))?;
        match got.data.as_slice() {
            [row] if row.value == expected => Ok(row.clone()),
            _ => Err(format!("total of {slug}: want {expected}, got {got:?}")),
        }
    })
}

/// A gauge (or counter) from `/metrics`.
pub fn gauge(server: &TestServer, name: &str) -> Option<u64> {
    let text = server.get("/metrics").send().body;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Asserts an RFC 7807 problem answer: status, `Content-Type: application/problem+json`
/// exactly, and a body with `status`, `title` and a non-empty `detail`. Returns the detail.
#[track_caller]
pub fn assert_problem(resp: &Resp, status: u16) -> String {
    assert_eq!(resp.status, status, "status: {resp}");
    assert_eq!(
        resp.content_type(),
        Some("application/problem+json"),
        "content type of a problem: {resp}"
    );
    let body = resp.json();
    assert_eq!(body["status"], json!(status), "problem status: {resp}");
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "problem title: {resp}"
    );
    let detail = body["detail"].as_str().unwrap_or_default().to_owned();
    assert!(!detail.is_empty(), "problem detail: {resp}");
    detail
}

// ----- entitlements and credit (ports of OpenMeter's entitlement e2e tests) -----

/// The meters of OpenMeter's `e2e/config.yaml` that the entitlement and credit scenarios use
/// (same slugs, event types, aggregations, JSONPaths and group-bys).
pub const CREDIT_CONFIG: &str = r#"
meters:
  - slug: credit_test_meter
    description: Meter for testing credit
    eventType: credit_event
    aggregation: COUNT
    groupBy:
      model: $.model
  - slug: entitlement_uc_meter
    description: Meter for testing entitlements with unique count
    eventType: credit_event_uc
    valueProperty: $.value
    aggregation: UNIQUE_COUNT
  - slug: entitlement_v2_meter
    description: Meter for testing entitlements with unique count
    eventType: entitlement_v2
    valueProperty: $.value
    aggregation: UNIQUE_COUNT
  - slug: entitlement_parity_meter
    description: Meter for testing entitlements parity
    eventType: entitlement_parity
    valueProperty: $.value
    aggregation: UNIQUE_COUNT
  - slug: multi_subject_meter
    description: Meter for testing multi subject
    eventType: multi_subject
    aggregation: COUNT
"#;

/// The usage-period and recurrence anchor most of OpenMeter's entitlement tests use.
pub const ANCHOR_2024: &str = "2024-01-01T00:00:00Z";

/// `t` truncated to the minute (Go's `time.Truncate(time.Minute)`).
pub fn minute_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::DurationRound;
    t.duration_trunc(chrono::TimeDelta::minutes(1)).unwrap_or(t)
}

/// JSON equality as the Go tests see decoded structs: numbers compare numerically (`99` equals
/// `99.0`), two strings that both parse as RFC 3339 compare as instants, and an object member
/// whose value is `null` counts as absent.
pub fn json_eq(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::String(a), Value::String(b)) => {
            a == b
                || matches!(
                    (DateTime::parse_from_rfc3339(a), DateTime::parse_from_rfc3339(b)),
                    (Ok(x), Ok(y)) if x == y
                )
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            let present = |m: &serde_json::Map<String, Value>| {
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, _)| k.clone())
                    .collect::<std::collections::BTreeSet<_>>()
            };
            present(a) == present(b)
                && b.iter()
                    .filter(|(_, v)| !v.is_null())
                    .all(|(k, v)| a.get(k).is_some_and(|g| json_eq(g, v)))
        }
        _ => got == want,
    }
}

/// Panics (showing both) unless [`json_eq`] holds.
#[track_caller]
pub fn assert_json_eq(got: &Value, want: &Value) {
    assert!(
        json_eq(got, want),
        "JSON differs\n  got:      {got}\n  expected: {want}"
    );
}

/// `value[field]` as a number; panics (showing the value) when it is absent or not a number.
#[track_caller]
pub fn num(value: &Value, field: &str) -> f64 {
    value[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {value}"))
}

/// `value[field]` as a string; panics (showing the value) when it is absent or not a string.
#[track_caller]
pub fn text(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {value}"))
        .to_owned()
}

/// `value[field]` as an RFC 3339 instant; panics (showing the value) otherwise.
#[track_caller]
pub fn instant(value: &Value, field: &str) -> DateTime<Utc> {
    let s = text(value, field);
    DateTime::parse_from_rfc3339(&s)
        .unwrap_or_else(|e| panic!("{field} = {s:?} is not RFC 3339 ({e}) in {value}"))
        .with_timezone(&Utc)
}

/// A copy of the object `value` without the members `keys`.
pub fn without(value: &Value, keys: &[&str]) -> Value {
    let mut copy = value.clone();
    if let Some(map) = copy.as_object_mut() {
        for key in keys {
            map.remove(*key);
        }
    }
    copy
}

/// Port of the Go e2e helper `CreateCustomerWithSubject`: a customer with `key` whose usage
/// attribution is the one subject `subject_key`, then the subject itself (upsert). Returns the
/// created customer.
#[track_caller]
pub fn create_customer_with_subject(
    server: &TestServer,
    customer_key: &str,
    subject_key: &str,
) -> Value {
    let customer = server
        .post("/api/v1/customers")
        .json(&json!({
            "name": format!("Test Customer {customer_key}"),
            "currency": "USD",
            "key": customer_key,
            "primaryEmail": format!("test-{customer_key}@test.com"),
            "usageAttribution": { "subjectKeys": [subject_key] },
        }))
        .send()
        .expect_status(201)
        .json();
    assert_eq!(
        customer["usageAttribution"]["subjectKeys"],
        json!([subject_key]),
        "customer {customer}"
    );
    upsert_subject(server, subject_key);
    customer
}

/// `POST /api/v1/subjects` with one `SubjectUpsert`; panics unless 200.
#[track_caller]
pub fn upsert_subject(server: &TestServer, subject_key: &str) {
    server
        .post("/api/v1/subjects")
        .json(&json!([{ "key": subject_key }]))
        .send()
        .expect_status(200);
}

/// `POST /api/v1/features`; panics unless 201. Returns the feature.
#[track_caller]
pub fn create_feature(server: &TestServer, body: &Value) -> Value {
    server
        .post("/api/v1/features")
        .json(body)
        .send()
        .expect_status(201)
        .json()
}

/// An `EntitlementMeteredCreateInputs` body for the feature id with the given usage period.
pub fn metered_entitlement(feature_id: &str, anchor: &str, interval: &str) -> Value {
    json!({
        "type": "metered",
        "featureId": feature_id,
        "usagePeriod": { "anchor": anchor, "interval": interval },
    })
}

/// `POST /api/v1/subjects/{subject}/entitlements`; panics unless 201. Returns the entitlement.
#[track_caller]
pub fn create_subject_entitlement(server: &TestServer, subject: &str, body: &Value) -> Value {
    server
        .post(&format!("/api/v1/subjects/{subject}/entitlements"))
        .json(body)
        .send()
        .expect_status(201)
        .json()
}

/// `POST /api/v2/customers/{customer}/entitlements`; panics unless 201. Returns the entitlement.
#[track_caller]
pub fn create_customer_entitlement(server: &TestServer, customer: &str, body: &Value) -> Value {
    server
        .post(&format!("/api/v2/customers/{customer}/entitlements"))
        .json(body)
        .send()
        .expect_status(201)
        .json()
}

/// `POST /api/v1/subjects/{subject}/entitlements/{entitlement}/grants`; panics unless 201.
#[track_caller]
pub fn create_subject_grant(
    server: &TestServer,
    subject: &str,
    entitlement: &str,
    body: &Value,
) -> Value {
    server
        .post(&format!(
            "/api/v1/subjects/{subject}/entitlements/{entitlement}/grants"
        ))
        .json(body)
        .send()
        .expect_status(201)
        .json()
}

/// `GET /api/v1/subjects/{subject}/entitlements/{entitlement}/value[?time=]`; panics unless 200.
#[track_caller]
pub fn subject_value(
    server: &TestServer,
    subject: &str,
    entitlement: &str,
    time: Option<DateTime<Utc>>,
) -> Value {
    let mut req = server.get(&format!(
        "/api/v1/subjects/{subject}/entitlements/{entitlement}/value"
    ));
    if let Some(t) = time {
        req = req.query("time", rfc3339(t));
    }
    req.send().expect_status(200).json()
}

/// `GET /api/v2/customers/{customer}/entitlements/{entitlement}/value[?time=]`; panics unless 200.
#[track_caller]
pub fn customer_value(
    server: &TestServer,
    customer: &str,
    entitlement: &str,
    time: Option<DateTime<Utc>>,
) -> Value {
    let mut req = server.get(&format!(
        "/api/v2/customers/{customer}/entitlements/{entitlement}/value"
    ));
    if let Some(t) = time {
        req = req.query("time", rfc3339(t));
    }
    req.send().expect_status(200).json()
}

/// Ingests `events` as one batch (204) and waits until the meter's total over all time (no
/// window, no grouping) is one row of value `expected`.
#[track_caller]
pub fn ingest_and_wait(server: &TestServer, events: &[Value], slug: &str, expected: f64) {
    server.ingest_batch(events).expect_status(204);
    wait_for_total(server, slug, expected);
}

/// One batch of `call` events with values `n` and their sum (the SIGKILL and cluster tests).
pub struct Batch {
    pub events: Vec<Value>,
    pub sum: f64,
}

/// Events `first..first + len` of source `source`: ids `{prefix}-{i}`, subjects `s0`..`s4`,
/// times within 50 minutes after `t0`, values 1 to 7.
pub fn sum_batch(
    prefix: &str,
    first: usize,
    len: usize,
    t0: chrono::DateTime<chrono::Utc>,
) -> Batch {
    let events = (first..first + len)
        .map(|i| {
            cloud_event(
                &format!("{prefix}-{i}"),
                &format!("{prefix}-test"),
                "call",
                &format!("s{}", i % 5),
                t0 + chrono::Duration::seconds((i % 3_000) as i64),
                json!({ "n": 1 + i % 7 }),
            )
        })
        .collect();
    let sum = (first..first + len).map(|i| (1 + i % 7) as f64).sum();
    Batch { events, sum }
}

/// The node id a server made in its data directory (`node-id`).
pub fn node_id(server: &TestServer) -> String {
    std::fs::read_to_string(server.data_dir().join("node-id"))
        .expect("the node id file")
        .trim()
        .to_owned()
}

/// Whether a server on a shared topic stands by (another node holds the partitions). A node
/// taking over hands its socket from the standby's HTTP server to the full one, which closes
/// the standby's idle keep-alive connections: a poll sent on one as it closes finds the peer
/// gone, and is sent again (as HTTP clients retry an idempotent request on a stale connection).
pub fn standing_by(server: &TestServer) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match server.get("/metrics").try_send() {
            Ok(resp) => {
                return resp
                    .body
                    .lines()
                    .find_map(|l| l.strip_prefix("metron_standby "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    == Some(1);
            }
            Err(error) if std::time::Instant::now() < deadline => {
                println!("polling {} again: {error:#}", server.url("/metrics"));
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(error) => panic!("GET /metrics failed for 10 s: {error:#}"),
        }
    }
}

/// `PUT /debug/failpoints` (the server runs with `METRON_FAILPOINTS`); panics unless 200.
pub fn set_failpoints(server: &TestServer, spec: &str) {
    server
        .put("/debug/failpoints")
        .body("text/plain", spec.to_owned())
        .send()
        .expect_status(200);
}

/// A fresh topic on the test's Kafka broker or Fluvio cluster: the config lines under
/// `stream:` that name it, and how to open it from the test (to read what the brokers hold).
pub struct TestTopic {
    pub stream: String,
    open: Box<dyn FnOnce(&tokio::runtime::Runtime) -> Stream>,
}

/// A topic opened from a test.
pub type Stream = std::sync::Arc<dyn metron_connectors::EventStream>;

impl TestTopic {
    /// A topic of 3 partitions on `METRON_TEST_KAFKA_BROKERS`; `None` (after saying so) without.
    pub fn kafka(test: &str) -> Option<Self> {
        let brokers = metron_connectors::stream::testing::kafka_brokers(test)?;
        let topic = metron_connectors::stream::testing::unique_topic();
        let stream = format!(
            "  url: kafka://{}/{topic}\n  requestTimeout: 10s\n  fetchWaitMax: 50ms\n",
            brokers.join(",")
        );
        let open = Box::new(move |runtime: &tokio::runtime::Runtime| {
            let config = metron_connectors::KafkaConfig {
                brokers,
                topic,
                partitions: 3,
                ..metron_connectors::KafkaConfig::default()
            };
            let stream = runtime
                .block_on(metron_connectors::KafkaStream::connect(config))
                .expect("the topic exists with 3 partitions");
            std::sync::Arc::new(stream) as Stream
        });
        Some(Self { stream, open })
    }

    /// A topic of 3 partitions on `METRON_FLUVIO_ENDPOINT`; `None` (after saying so) without.
    pub fn fluvio(test: &str) -> Option<Self> {
        let endpoint = metron_connectors::stream::testing::fluvio_endpoint(test)?;
        let topic = metron_connectors::stream::testing::unique_topic();
        let stream = format!("  url: fluvio://{endpoint}/{topic}\n  requestTimeout: 10s\n");
        let open = Box::new(move |runtime: &tokio::runtime::Runtime| {
            let config = metron_connectors::FluvioConfig {
                endpoint,
                topic,
                partitions: 3,
                ..metron_connectors::FluvioConfig::default()
            };
            let stream = runtime
                .block_on(metron_connectors::FluvioStream::connect(config))
                .expect("the topic exists with 3 partitions");
            std::sync::Arc::new(stream) as Stream
        });
        Some(Self { stream, open })
    }

    /// The config lines, and the opener.
    pub fn into_parts(self) -> (String, impl FnOnce(&tokio::runtime::Runtime) -> Stream) {
        (self.stream, self.open)
    }
}
