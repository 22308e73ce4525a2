//! Notification channels, rules and events end to end, against a local webhook receiver that
//! verifies every signature: CRUD, a rule test delivering a signed event, retries after a 500,
//! giving up after the schedule, resend, and the delivery status in event listings.

use crate::server::{TestServer, eventually};
use metron_connectors::webhook;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

/// A received request: headers (names lowercased) and body.
type Request = (Vec<(String, String)>, String);

/// A webhook receiver answering scripted statuses (then 200) and keeping what it got.
struct Receiver {
    url: String,
    statuses: Arc<Mutex<VecDeque<u16>>>,
    /// (headers lowercased, body) of every request.
    got: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let statuses: Arc<Mutex<VecDeque<u16>>> = Arc::default();
        let got: Arc<Mutex<Vec<Request>>> = Arc::default();
        let (s, g) = (statuses.clone(), got.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let Ok(clone) = stream.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(clone);
                let mut headers = Vec::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
                        if k == "content-length" {
                            length = v.parse().unwrap_or(0);
                        }
                        headers.push((k, v));
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let status = s
                    .lock()
                    .map(|mut q| q.pop_front().unwrap_or(200))
                    .unwrap_or(200);
                if let Ok(mut g) = g.lock() {
                    g.push((headers, String::from_utf8_lossy(&body).into_owned()));
                }
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver { url, statuses, got }
    }

    fn answer_next(&self, statuses: &[u16]) {
        self.statuses.lock().expect("lock").extend(statuses);
    }

    fn requests(&self) -> Vec<Request> {
        self.got.lock().expect("lock").clone()
    }
}

/// Checks both signature header families of a request against the channel's secret.
fn verify(secret: &str, headers: &[(String, String)], body: &str) -> Value {
    let get = |k: &str| {
        headers
            .iter()
            .find(|(h, _)| h == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k} header in {headers:?}"))
    };
    for family in ["webhook", "svix"] {
        let id = get(&format!("{family}-id"));
        let ts: i64 = get(&format!("{family}-timestamp"))
            .parse()
            .expect("timestamp");
        let expected = webhook::sign(secret, &id, ts, body.as_bytes()).expect("sign");
        assert_eq!(
            get(&format!("{family}-signature")),
            expected,
            "{family} signature"
        );
    }
    assert_eq!(get("content-type"), "application/json");
    assert_eq!(get("x-tenant"), "acme", "custom headers are sent");
    serde_json::from_str(body).expect("a JSON body")
}

fn wait_for_state(server: &TestServer, event_id: &str, state: &str, attempts: usize) -> Value {
    eventually(DEADLINE, || {
        let event = server
            .get(&format!("/api/v1/notification/events/{event_id}"))
            .send()
            .json();
        let status = &event["deliveryStatus"][0];
        let n = status["attempts"].as_array().map_or(0, Vec::len);
        if status["state"] == state && n == attempts {
            Ok(event)
        } else {
            Err(format!(
                "waiting for {state} after {attempts} attempts: {event}"
            ))
        }
    })
}

#[test]
fn channels_rules_and_signed_deliveries_with_retries_and_resend() {
    let server = TestServer::start_with_config("notifications:\n  retrySchedule: [100ms, 100ms]\n");
    let receiver = Receiver::start();

    // Channels: a secret is generated when absent; a bad one is refused.
    let bad = server
        .post("/api/v1/notification/channels")
        .json(&json!({"type": "WEBHOOK", "name": "x", "url": receiver.url, "signingSecret": "whsec_c2hvcnQ="}))
        .send();
    assert_eq!(bad.status, 400, "{bad}");
    let channel = server
        .post("/api/v1/notification/channels")
        .json(&json!({"type": "WEBHOOK", "name": "hook", "url": receiver.url, "customHeaders": {"X-Tenant": "acme"}}))
        .send()
        .expect_status(201)
        .json();
    let channel_id = channel["id"].as_str().expect("id").to_owned();
    let secret = channel["signingSecret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{channel}");
    let renamed = server
        .put(&format!("/api/v1/notification/channels/{channel_id}"))
        .json(&json!({"type": "WEBHOOK", "name": "renamed", "url": receiver.url, "customHeaders": {"X-Tenant": "acme"}}))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(renamed["name"], "renamed");
    assert_eq!(
        renamed["signingSecret"],
        secret.as_str(),
        "PUT keeps the secret"
    );
    let list = server
        .get("/api/v1/notification/channels")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(list["totalCount"], 1, "{list}");

    // Rules (their features must exist).
    server
        .post("/api/v1/features")
        .json(&json!({"key": "tokens", "name": "Tokens"}))
        .send()
        .expect_status(201);
    let unknown_feature = server
        .post("/api/v1/notification/rules")
        .json(&json!({"type": "entitlements.balance.threshold", "name": "r", "channels": [channel_id], "thresholds": [{"value": 80, "type": "usage_percentage"}], "features": ["nope"]}))
        .send();
    assert_eq!(unknown_feature.status, 400, "{unknown_feature}");
    let unknown = server
        .post("/api/v1/notification/rules")
        .json(&json!({"type": "entitlements.balance.threshold", "name": "r", "channels": ["01ARZ3NDEKTSV4RRFFQ69G5FAV"], "thresholds": [{"value": 80, "type": "usage_percentage"}]}))
        .send();
    assert_eq!(unknown.status, 400, "{unknown}");
    let rule = server
        .post("/api/v1/notification/rules")
        .json(&json!({"type": "entitlements.balance.threshold", "name": "r", "channels": [channel_id], "thresholds": [{"value": 80, "type": "usage_percentage"}, {"value": 10, "type": "NUMBER"}], "features": ["tokens"]}))
        .send()
        .expect_status(201)
        .json();
    let rule_id = rule["id"].as_str().expect("id").to_owned();
    assert_eq!(rule["features"][0]["key"], "tokens", "{rule}");
    assert_ne!(
        rule["features"][0]["id"], "tokens",
        "the feature's real id: {rule}"
    );
    assert_eq!(
        rule["channels"],
        json!([{"id": channel_id, "type": "WEBHOOK"}])
    );
    assert_eq!(
        rule["thresholds"][1],
        json!({"value": 10, "type": "NUMBER"})
    );
    let got = server
        .get(&format!("/api/v1/notification/rules/{rule_id}"))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(got, rule);
    let blocked = server
        .delete(&format!("/api/v1/notification/channels/{channel_id}"))
        .send();
    assert_eq!(
        blocked.status, 400,
        "a channel a rule uses cannot go: {blocked}"
    );

    // A rule test delivers a signed example event.
    let test_path = format!("/api/v1/notification/rules/{rule_id}/test");
    let event = server.post(&test_path).send().expect_status(201).json();
    let first_id = event["id"].as_str().expect("id").to_owned();
    assert_eq!(
        event["annotations"]["notification.rule.test"], true,
        "{event}"
    );
    let delivered = wait_for_state(&server, &first_id, "SUCCESS", 1);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let body = verify(&secret, &requests[0].0, &requests[0].1);
    assert_eq!(body, delivered["payload"]);
    assert_eq!(body["id"], first_id.as_str());
    assert_eq!(body["type"], "entitlements.balance.threshold");
    assert_eq!(
        body["data"]["threshold"],
        json!({"value": 80, "type": "usage_percentage"})
    );

    // A 500 is retried on the schedule: the first attempt FAILED, the retry succeeds.
    receiver.answer_next(&[500]);
    let retried = server.post(&test_path).send().expect_status(201).json();
    let retried_id = retried["id"].as_str().expect("id").to_owned();
    let done = wait_for_state(&server, &retried_id, "SUCCESS", 2);
    let attempts = &done["deliveryStatus"][0]["attempts"];
    assert_eq!(attempts[0]["state"], "FAILED", "{done}");
    assert_eq!(attempts[0]["response"]["statusCode"], 500);
    assert_eq!(attempts[1]["state"], "SUCCESS");

    // Failing past the schedule gives up; a resend then delivers.
    receiver.answer_next(&[500, 503, 500]);
    let failing = server.post(&test_path).send().expect_status(201).json();
    let failing_id = failing["id"].as_str().expect("id").to_owned();
    let failed = wait_for_state(&server, &failing_id, "FAILED", 3);
    assert!(
        failed["deliveryStatus"][0].get("nextAttempt").is_none(),
        "{failed}"
    );
    server
        .post(&format!("/api/v1/notification/events/{failing_id}/resend"))
        .json(&json!({}))
        .send()
        .expect_status(202);
    wait_for_state(&server, &failing_id, "SUCCESS", 4);
    let all = receiver.requests();
    assert_eq!(all.len(), 1 + 2 + 4);
    for (headers, body) in &all {
        verify(&secret, headers, body);
    }

    // The listing shows every event with its delivery status, and filters.
    let events = server
        .get("/api/v1/notification/events")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(events["totalCount"], 3, "{events}");
    let states: Vec<&Value> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| &e["deliveryStatus"][0]["state"])
        .collect();
    assert!(states.iter().all(|s| *s == "SUCCESS"), "{events}");
    let by_rule = server
        .get("/api/v1/notification/events")
        .query("rule", &rule_id)
        .send()
        .json();
    assert_eq!(by_rule["totalCount"], 3);
    let by_other = server
        .get("/api/v1/notification/events")
        .query("channel", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .send()
        .json();
    assert_eq!(by_other["totalCount"], 0);
    let page = server
        .get("/api/v1/notification/events")
        .query("pageSize", "2")
        .query("page", "2")
        .send()
        .json();
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");

    // Deleting: the rule, then the channel it freed.
    server
        .delete(&format!("/api/v1/notification/rules/{rule_id}"))
        .send()
        .expect_status(204);
    server
        .delete(&format!("/api/v1/notification/channels/{channel_id}"))
        .send()
        .expect_status(204);
    let gone = server
        .get(&format!("/api/v1/notification/channels/{channel_id}"))
        .send();
    assert_eq!(gone.status, 404, "{gone}");
}

/// The thresholds of the webhooks received so far, as `(type, value)`, after checking
/// each signature; panics on a payload that is not a balance-threshold event.
fn thresholds_seen(receiver: &Receiver, secret: &str) -> Vec<(String, f64)> {
    receiver
        .requests()
        .iter()
        .map(|(headers, body)| {
            let payload = verify(secret, headers, body);
            assert_eq!(
                payload["type"], "entitlements.balance.threshold",
                "{payload}"
            );
            let t = &payload["data"]["threshold"];
            (
                t["type"].as_str().unwrap_or_default().to_owned(),
                t["value"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

/// A server with customer `acme` (subject `acme`), a feature `tokens` on a SUM meter
/// `api_tokens`, a monthly metered entitlement granted 100, a webhook channel to a receiver and
/// a balance-threshold rule with `thresholds`: the setup of the threshold tests.
struct Thresholds {
    server: TestServer,
    receiver: Receiver,
    secret: String,
}

impl Thresholds {
    fn start(config: &str, thresholds: Value) -> Self {
        let server = TestServer::start_with_config(&format!(
            "notifications:\n  retrySchedule: [100ms, 100ms]\nmeters:\n  - slug: api_tokens\n    eventType: tokens\n    valueProperty: $.tokens\n    aggregation: SUM\n{config}"
        ));
        let receiver = Receiver::start();
        server
            .post("/api/v1/customers")
            .json(
                &json!({"name": "Acme", "key": "acme", "usageAttribution": {"subjectKeys": ["acme"]}}),
            )
            .send()
            .expect_status(201);
        server
            .post("/api/v1/features")
            .json(&json!({"key": "tokens", "name": "Tokens", "meterSlug": "api_tokens"}))
            .send()
            .expect_status(201);
        let now = chrono::Utc::now();
        server
            .post("/api/v2/customers/acme/entitlements")
            .json(
                &json!({"type": "metered", "featureKey": "tokens", "usagePeriod": {"interval": "MONTH"},
                "grants": [{"amount": 100, "effectiveAt": now.to_rfc3339(), "priority": 1}]}),
            )
            .send()
            .expect_status(201);
        let channel = server
            .post("/api/v1/notification/channels")
            .json(&json!({"type": "WEBHOOK", "name": "hook", "url": receiver.url, "customHeaders": {"X-Tenant": "acme"}}))
            .send()
            .expect_status(201)
            .json();
        let secret = channel["signingSecret"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        server
            .post("/api/v1/notification/rules")
            .json(
                &json!({"type": "entitlements.balance.threshold", "name": "limits",
                "channels": [channel["id"]], "features": ["tokens"], "thresholds": thresholds}),
            )
            .send()
            .expect_status(201);
        Self {
            server,
            receiver,
            secret,
        }
    }

    /// An event of `subject` with `tokens`.
    fn event(subject: &str, tokens: u32) -> Value {
        json!({"specversion": "1.0", "id": uuid::Uuid::new_v4().to_string(), "source": "test",
            "type": "tokens", "subject": subject, "time": chrono::Utc::now().to_rfc3339(),
            "data": {"tokens": tokens}})
    }

    /// Waits until acme's entitlement value shows `want` usage; the value.
    fn usage_is(&self, want: f64) -> Value {
        eventually(DEADLINE, || {
            let v = self
                .server
                .get("/api/v2/customers/acme/entitlements/tokens/value")
                .send()
                .json();
            if v["usage"].as_f64() == Some(want) {
                Ok(v)
            } else {
                Err(format!("waiting for usage {want}: {v}"))
            }
        })
    }

    /// Waits until the receiver has seen exactly these thresholds, in this order.
    fn seen_are(&self, want: &[(&str, f64)]) {
        let want: Vec<(String, f64)> = want.iter().map(|(t, v)| ((*t).to_owned(), *v)).collect();
        eventually(DEADLINE, || {
            let seen = thresholds_seen(&self.receiver, &self.secret);
            if seen == want {
                Ok(())
            } else {
                Err(format!("thresholds seen {seen:?}, want {want:?}"))
            }
        });
    }
}

#[test]
fn balance_thresholds_fire_once_each_from_live_balances_across_a_restart() {
    // Real usage moves a real balance: grant 100 on a SUM meter, a rule with usage
    // thresholds 50 and 80 and a balance threshold 5. Each threshold is delivered (signed)
    // once, in order, however many events push past it, and a restart neither loses the
    // fired state nor the live balance.
    let mut t = Thresholds::start(
        "",
        json!([{"value": 50, "type": "usage_value"}, {"value": 80, "type": "usage_value"},
               {"value": 5, "type": "balance_value"}]),
    );
    let send = |t: &Thresholds, tokens: u32| {
        t.server
            .ingest_one(&Thresholds::event("acme", tokens))
            .expect_status(204);
    };

    send(&t, 30);
    t.usage_is(30.0);
    send(&t, 30);
    t.usage_is(60.0);
    t.seen_are(&[("usage_value", 50.0)]);
    send(&t, 10);
    t.usage_is(70.0);
    send(&t, 15);
    t.usage_is(85.0);
    t.seen_are(&[("usage_value", 50.0), ("usage_value", 80.0)]);

    // A restart keeps the balance and what was fired. Usage alone (no read) activates
    // the customer again: crossing the balance threshold sends it once, and nothing is
    // sent again for 50 and 80.
    t.server.restart();
    send(&t, 5);
    send(&t, 6);
    t.seen_are(&[
        ("usage_value", 50.0),
        ("usage_value", 80.0),
        ("balance_value", 5.0),
    ]);
    let v = t.usage_is(96.0);
    assert_eq!(v["balance"].as_f64(), Some(4.0), "{v}");
    send(&t, 1);
    t.usage_is(97.0);
    std::thread::sleep(Duration::from_millis(300));
    t.seen_are(&[
        ("usage_value", 50.0),
        ("usage_value", 80.0),
        ("balance_value", 5.0),
    ]);
}

// A crash (no checkpoint since the thresholds fired) replays the usage in small steps: the
// balance goes up again through 30, 60 and 70 to 85. Thresholds are observed only once the
// replay has caught up, so 50 and 80 are not sent a second time (they were, in that order,
// when the replayed balance was observed halfway).
#[test]
fn a_replay_after_a_crash_fires_no_threshold_again() {
    let mut t = Thresholds::start(
        "partitions: 1\nbatchRecordsMax: 2\ncheckpointInterval: 1h\n",
        json!([{"value": 50, "type": "usage_value"}, {"value": 80, "type": "usage_value"}]),
    );
    // Each of acme's events followed by 500 of others', so that the replay, in batches of
    // two, takes acme's usage one event at a time, 250 batches apart.
    let mut total = 0.0;
    for tokens in [30, 30, 10, 15] {
        let mut batch = vec![Thresholds::event("acme", tokens)];
        batch.extend((0..500).map(|_| Thresholds::event("other", 1)));
        t.server.ingest_batch(&batch).expect_status(204);
        total += f64::from(tokens);
        t.usage_is(total);
    }
    let fired = [("usage_value", 50.0), ("usage_value", 80.0)];
    t.seen_are(&fired);

    // SIGKILL: the replay starts from the beginning of the log.
    t.server.restart_listening().expect("restarts");
    eventually(DEADLINE, || match t.server.get("/readyz").send().status {
        200 => Ok(()),
        other => Err(format!("/readyz answers {other}")),
    });
    t.usage_is(85.0);
    std::thread::sleep(Duration::from_millis(500));
    t.seen_are(&fired);
}

// `invoice.created` and `invoice.updated` rules: a subscription's first invoice (a fee in
// advance, issued and paid by the sandbox app at once) is announced when created and on its
// updates, with the invoice as the API answers it in `data`; gathering invoices never are.
#[test]
fn invoice_created_and_updated_notifications() {
    let server = TestServer::start_with_config("notifications:\n  retrySchedule: [100ms, 100ms]\n");
    let receiver = Receiver::start();
    let channel = server
        .post("/api/v1/notification/channels")
        .json(
            &json!({"type": "WEBHOOK", "name": "billing", "url": receiver.url,
                      "customHeaders": {"X-Tenant": "acme"}}),
        )
        .send()
        .expect_status(201)
        .json();
    let secret = channel["signingSecret"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for kind in ["invoice.created", "invoice.updated"] {
        let rule = server
            .post("/api/v1/notification/rules")
            .json(&json!({"type": kind, "name": kind, "channels": [channel["id"]]}))
            .send()
            .expect_status(201)
            .json();
        assert_eq!(rule["type"], kind);
    }
    let plan = server
        .post("/api/v1/plans")
        .json(
            &json!({"key": "basic", "name": "Basic", "currency": "USD", "billingCadence": "P1M",
            "phases": [{"key": "default", "name": "Default", "duration": null, "rateCards": [
                {"type": "flat_fee", "key": "fee", "name": "Fee", "billingCadence": "P1M",
                 "price": {"type": "flat", "amount": "12.50", "paymentTerm": "in_advance"}}]}]}),
        )
        .send()
        .expect_status(201)
        .json();
    server
        .post(&format!(
            "/api/v1/plans/{}/publish",
            plan["id"].as_str().unwrap_or_default()
        ))
        .send()
        .expect_status(200);
    server
        .post("/api/v1/customers")
        .json(
            &json!({"name": "ACME", "key": "acme", "usageAttribution": {"subjectKeys": ["acme"]}}),
        )
        .send()
        .expect_status(201);
    server
        .post("/api/v1/subscriptions")
        .json(&json!({"customerKey": "acme", "plan": {"key": "basic"}}))
        .send()
        .expect_status(201);
    let payloads = eventually(Duration::from_secs(20), || {
        let payloads: Vec<Value> = receiver
            .requests()
            .iter()
            .map(|(headers, body)| verify(&secret, headers, body))
            .collect();
        let updated_paid = payloads
            .iter()
            .any(|p| p["type"] == "invoice.updated" && p["data"]["status"] == "paid");
        if payloads.iter().any(|p| p["type"] == "invoice.created") && updated_paid {
            Ok(payloads)
        } else {
            Err(format!("{} invoice notifications so far", payloads.len()))
        }
    });
    let created: Vec<&Value> = payloads
        .iter()
        .filter(|p| p["type"] == "invoice.created")
        .collect();
    assert_eq!(created.len(), 1, "one invoice, created once");
    assert_eq!(created[0]["data"]["totals"]["total"], "12.5");
    assert_eq!(created[0]["data"]["lines"][0]["name"], "Fee");
    assert!(payloads.iter().all(|p| p["data"]["status"] != "gathering"));
}
