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
