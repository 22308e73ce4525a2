//! Editing a running subscription (`PATCH /api/v1/subscriptions/{id}`) and subscription
//! add-ons (`/api/v1/subscriptions/{id}/addons`) over HTTP: OpenMeter's patch semantics and
//! refusals (400, 403, 409), entitlements following added and removed items, add-on quantity
//! rules and timelines, and billing that invoices what edits and add-ons produce, pro-rated
//! and multiplied amounts worked out by hand.

use crate::server::*;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};
use std::str::FromStr;
use std::time::Duration;

const CONFIG: &str = r#"
meters:
  - slug: tokens
    eventType: tokens
    aggregation: SUM
    valueProperty: $.tokens
"#;

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn time_of(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn decimal_of(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or("NaN")).unwrap_or(Decimal::MIN)
}

/// PATCH is not in the shared harness: one request with its status and JSON body.
fn patch(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .patch(&server.url(path))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn flat(key: &str, name: &str, amount: &str) -> Value {
    json!({"type": "flat_fee", "key": key, "name": name, "billingCadence": "P1M",
           "price": {"type": "flat", "amount": amount, "paymentTerm": "in_advance"}})
}

fn publish(server: &TestServer, kind: &str, id: &str) {
    server
        .post(&format!("/api/v1/{kind}/{id}/publish"))
        .send()
        .expect_status(200);
}

/// A feature, a customer `acme` and a published plan `key` with `phases`; returns the plan id.
fn setup(server: &TestServer, key: &str, phases: Value) -> String {
    server
        .post("/api/v1/features")
        .json(&json!({"key": "tokens", "name": "Tokens", "meterSlug": "tokens"}))
        .send()
        .expect_status(201);
    server
        .post("/api/v1/customers")
        .json(
            &json!({"name": "ACME", "key": "acme", "primaryEmail": "ops@acme.test",
                      "usageAttribution": {"subjectKeys": ["acme"]}}),
        )
        .send()
        .expect_status(201);
    let plan = server
        .post("/api/v1/plans")
        .json(
            &json!({"key": key, "name": key, "currency": "USD", "billingCadence": "P1M",
                      "phases": phases}),
        )
        .send()
        .expect_status(201)
        .json();
    str_of(&plan["id"])
}

fn subscribe(server: &TestServer, plan: &str) -> Value {
    server
        .post("/api/v1/subscriptions")
        .json(&json!({"customerKey": "acme", "plan": {"key": plan}}))
        .send()
        .expect_status(201)
        .json()
}

fn phase<'a>(sub: &'a Value, key: &str) -> &'a Value {
    sub["phases"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["key"] == key))
        .unwrap_or(&Value::Null)
}

fn item<'a>(phase: &'a Value, key: &str) -> Option<&'a Value> {
    phase["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["key"] == key))
}

fn tokens_card() -> Value {
    json!({"type": "usage_based", "key": "tokens", "name": "Tokens", "featureKey": "tokens",
           "billingCadence": "P1M", "price": {"type": "unit", "amount": "0.01"},
           "entitlementTemplate": {"type": "metered", "issueAfterReset": 1000, "isSoftLimit": true}})
}

fn trial_then_default() -> Value {
    json!([
        {"key": "trial", "name": "Trial", "duration": "P14D",
         "rateCards": [flat("platform", "Platform", "0")]},
        {"key": "default", "name": "Default", "duration": null,
         "rateCards": [flat("platform", "Platform", "99"), tokens_card()]}
    ])
}

fn edit(server: &TestServer, id: &str, ops: Value) -> (u16, Value) {
    patch(
        server,
        &format!("/api/v1/subscriptions/{id}"),
        &json!({"customizations": ops}),
    )
}

// Items: one added to the running phase starts now and shows in its timeline; a future
// phase's item removed takes its entitlement with it, added back it brings a new one.
// Phases: stretched, added and removed with OpenMeter's shifting. The plan link stays.
#[test]
fn edits_change_items_and_phases() {
    let mut server = TestServer::start_with_config(CONFIG);
    let plan = setup(&server, "pro", trial_then_default());
    publish(&server, "plans", &plan);
    let sub = subscribe(&server, "pro");
    let id = str_of(&sub["id"]);
    let from = time_of(&sub["activeFrom"]);
    let old_entitlement =
        str_of(&phase(&sub, "default")["items"][1]["included"]["entitlement"]["id"]);
    assert!(!old_entitlement.is_empty(), "{sub}");

    let (status, edited) = edit(
        &server,
        &id,
        json!([{"op": "add_item", "phaseKey": "trial", "rateCard": flat("support", "Support", "10")}]),
    );
    assert_eq!(status, 200, "{edited}");
    let support = item(phase(&edited, "trial"), "support")
        .cloned()
        .unwrap_or_default();
    assert!(time_of(&support["activeFrom"]) > from, "{support}");
    assert_eq!(support["price"]["amount"], "10");
    assert_eq!(
        phase(&edited, "trial")["itemTimelines"]["support"][0]["id"],
        support["id"]
    );
    assert_eq!(edited["plan"]["key"], "pro");

    let (status, edited) = edit(
        &server,
        &id,
        json!([{"op": "remove_item", "phaseKey": "default", "itemKey": "tokens"}]),
    );
    assert_eq!(status, 200, "{edited}");
    assert!(
        item(phase(&edited, "default"), "tokens").is_none(),
        "{edited}"
    );
    // The removed item's entitlement is kept as history, never active.
    let old = server
        .get(&format!("/api/v2/entitlements/{old_entitlement}"))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(old["activeTo"], old["activeFrom"], "{old}");
    let (status, edited) = edit(
        &server,
        &id,
        json!([{"op": "add_item", "phaseKey": "default", "rateCard": tokens_card()}]),
    );
    assert_eq!(status, 200, "{edited}");
    let tokens = item(phase(&edited, "default"), "tokens")
        .cloned()
        .unwrap_or_default();
    let entitlement = &tokens["included"]["entitlement"];
    assert_eq!(entitlement["type"], "metered", "{tokens}");
    assert_ne!(str_of(&entitlement["id"]), old_entitlement);
    assert_eq!(
        entitlement["activeFrom"],
        phase(&edited, "default")["activeFrom"]
    );

    // Stretch the trial by a day: the default phase starts a day later.
    let default_from = time_of(&phase(&edited, "default")["activeFrom"]);
    let (status, edited) = edit(
        &server,
        &id,
        json!([{"op": "stretch_phase", "phaseKey": "trial", "extendBy": "P1D"}]),
    );
    assert_eq!(status, 200, "{edited}");
    assert_eq!(
        time_of(&phase(&edited, "default")["activeFrom"]),
        default_from + TimeDelta::days(1)
    );
    // A phase added after the default one, then removed again letting default run on.
    let (status, edited) = edit(
        &server,
        &id,
        json!([{"op": "add_phase", "phase": {"key": "loyal", "name": "Loyal", "startAfter": "P1Y"}}]),
    );
    assert_eq!(status, 200, "{edited}");
    assert_eq!(
        time_of(&phase(&edited, "loyal")["activeFrom"]),
        from.checked_add_months(chrono::Months::new(12)).unwrap()
    );
    assert_eq!(
        phase(&edited, "default")["activeTo"],
        phase(&edited, "loyal")["activeFrom"]
    );
    let (status, edited) = edit(
        &server,
        &id,
        json!([{"op": "remove_phase", "phaseKey": "loyal", "shift": "prev"}]),
    );
    assert_eq!(status, 200, "{edited}");
    assert!(phase(&edited, "loyal").is_null());
    assert!(phase(&edited, "default").get("activeTo").is_none());

    // What an edit did survives a restart.
    server.restart();
    let again = server
        .get(&format!("/api/v1/subscriptions/{id}"))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(
        item(phase(&again, "trial"), "support").map(|i| i["id"].clone()),
        Some(support["id"].clone())
    );
}

// OpenMeter's refusals, each with its status: malformed edits and custom timing are 400, a
// rate card with a bad key 400 with its validation code, history 403, a duplicate phase 409,
// an unknown subscription 404.
#[test]
fn edits_are_refused_as_openmeter_refuses_them() {
    let server = TestServer::start_with_config(CONFIG);
    let plan = setup(&server, "pro", trial_then_default());
    publish(&server, "plans", &plan);
    let id = str_of(&subscribe(&server, "pro")["id"]);
    let path = format!("/api/v1/subscriptions/{id}");
    let cases = [
        (json!({"customizations": []}), 400),
        (json!({}), 400),
        (json!([]), 400),
        (json!({"customizations": [{"op": "explode"}]}), 400),
        (
            json!({"customizations": [{"op": "remove_item", "phaseKey": "default", "itemKey": "nope"}]}),
            400,
        ),
        (
            json!({"customizations": [{"op": "remove_item", "phaseKey": "trial", "itemKey": "platform"}],
                "timing": "2030-01-01T00:00:00Z"}),
            400,
        ),
        (
            json!({"customizations": [{"op": "add_item", "phaseKey": "trial",
                "rateCard": {"type": "flat_fee", "key": "Not A Key", "name": "X"}}]}),
            400,
        ),
        (
            json!({"customizations": [{"op": "remove_phase", "phaseKey": "trial", "shift": "next"}]}),
            403,
        ),
        (
            json!({"customizations": [{"op": "add_phase", "phase": {"key": "later", "name": "Later"}}]}),
            400,
        ),
        (
            json!({"customizations": [{"op": "add_phase", "phase": {"key": "Bad Key", "name": "B", "startAfter": "P1Y"}}]}),
            400,
        ),
        (
            json!({"customizations": [{"op": "add_item", "phaseKey": "default", "rateCard": flat("platform", "P", "1")}]}),
            403,
        ),
        (
            json!({"customizations": [{"op": "add_phase", "phase": {"key": "default", "name": "D", "startAfter": "P1Y"}}]}),
            409,
        ),
    ];
    for (body, want) in cases {
        let (status, problem) = patch(&server, &path, &body);
        assert_eq!(status, want, "{body}: {problem}");
    }
    let (_, problem) = patch(
        &server,
        &path,
        &json!({"customizations": [{"op": "add_item", "phaseKey": "trial",
                "rateCard": {"type": "flat_fee", "key": "Not A Key", "name": "X"}}]}),
    );
    let codes: Vec<String> = problem["extensions"]["validationErrors"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| str_of(&e["code"]))
        .collect();
    assert!(!codes.is_empty(), "{problem}");
    let (status, _) = patch(
        &server,
        "/api/v1/subscriptions/01J00000000000000000000000",
        &json!({"customizations": [{"op": "unschedule_edit"}]}),
    );
    assert_eq!(status, 404);
    // Nothing refused changed the subscription.
    let sub = server.get(&path).send().expect_status(200).json();
    assert_eq!(
        phase(&sub, "trial")["items"].as_array().map(Vec::len),
        Some(1)
    );
}

/// A published add-on `key` with one rate card; returns its id.
fn addon(server: &TestServer, key: &str, instance: &str, card: Value) -> String {
    let a = server
        .post("/api/v1/addons")
        .json(
            &json!({"key": key, "name": key, "instanceType": instance, "currency": "USD",
                      "rateCards": [card]}),
        )
        .send()
        .expect_status(201)
        .json();
    let id = str_of(&a["id"]);
    publish(server, "addons", &id);
    id
}

fn offer(server: &TestServer, plan: &str, addon: &str, max: Option<i64>) {
    let mut body = json!({"addonId": addon, "fromPlanPhase": "default"});
    if let Some(max) = max {
        body["maxQuantity"] = json!(max);
    }
    server
        .post(&format!("/api/v1/plans/{plan}/addons"))
        .json(&body)
        .send()
        .expect_status(201);
}

fn buy(server: &TestServer, sub: &str, addon: &str, quantity: i64) -> (u16, Value) {
    let resp = server
        .post(&format!("/api/v1/subscriptions/{sub}/addons"))
        .json(
            &json!({"name": "Seats", "addon": {"id": addon}, "quantity": quantity,
                      "timing": "immediate"}),
        )
        .send();
    let status = resp.status;
    (status, resp.try_json().unwrap_or(Value::Null))
}

// Buying: only published add-ons the plan offers, in the subscription's currency, within the
// instance type's and the plan's quantity; once per add-on. The add-on's card becomes an item
// at quantity × price; a quantity change at the next billing cycle ends up in the timeline; a
// subscription with add-ons cannot be edited.
#[test]
fn addons_are_bought_changed_and_listed() {
    let mut server = TestServer::start_with_config(CONFIG);
    let plan = setup(
        &server,
        "pro",
        json!([{"key": "default", "name": "Default", "duration": null,
                "rateCards": [flat("platform", "Platform", "30")]}]),
    );
    let seats = addon(&server, "seats", "multiple", flat("seats", "Seats", "5"));
    let badge = addon(&server, "badge", "single", flat("badge", "Badge", "1"));
    let other = addon(&server, "other", "multiple", flat("other", "Other", "1"));
    offer(&server, &plan, &seats, Some(3));
    offer(&server, &plan, &badge, None);
    publish(&server, "plans", &plan);
    let sub = subscribe(&server, "pro");
    let id = str_of(&sub["id"]);

    assert_eq!(buy(&server, &id, &seats, 4).0, 400, "above maxQuantity");
    assert_eq!(buy(&server, &id, &badge, 2).0, 400, "single instance");
    assert_eq!(
        buy(&server, &id, &other, 1).0,
        400,
        "not offered by the plan"
    );
    assert_eq!(buy(&server, &id, "01J00000000000000000000000", 1).0, 404);
    server
        .post(&format!("/api/v1/subscriptions/{id}/addons"))
        .json(&json!({"addon": {"id": seats}, "quantity": 1, "timing": "immediate"}))
        .send()
        .expect_status(400);
    let (status, bought) = buy(&server, &id, &seats, 2);
    assert_eq!(status, 201, "{bought}");
    assert_eq!(bought["quantity"], 2);
    assert_eq!(bought["addon"]["key"], "seats");
    assert_eq!(bought["addon"]["instanceType"], "multiple");
    assert_eq!(bought["subscriptionId"], json!(id));
    assert_eq!(bought["timeline"].as_array().map(Vec::len), Some(1));
    let affected = bought["rateCards"][0]["affectedSubscriptionItemIds"].clone();
    assert_eq!(affected.as_array().map(Vec::len), Some(1), "{bought}");
    assert_eq!(buy(&server, &id, &seats, 1).0, 409, "bought once");

    let view = server
        .get(&format!("/api/v1/subscriptions/{id}"))
        .send()
        .expect_status(200)
        .json();
    let item_of_addon = item(phase(&view, "default"), "seats")
        .cloned()
        .unwrap_or_default();
    assert_eq!(item_of_addon["price"]["amount"], "10", "{view}");
    assert_eq!(item_of_addon["id"], affected[0]);

    let (status, _) = edit(
        &server,
        &id,
        json!([{"op": "remove_item", "phaseKey": "default", "itemKey": "platform"}]),
    );
    assert_eq!(status, 403, "a subscription with add-ons cannot be edited");

    let path = format!(
        "/api/v1/subscriptions/{id}/addons/{}",
        str_of(&bought["id"])
    );
    let (status, changed) = patch(
        &server,
        &path,
        &json!({"quantity": 0, "timing": "next_billing_cycle"}),
    );
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["quantity"], 2, "still two until the next cycle");
    let timeline = changed["timeline"].as_array().cloned().unwrap_or_default();
    assert_eq!(timeline.len(), 2, "{changed}");
    assert_eq!(timeline[1]["quantity"], 0);
    assert_eq!(timeline[0]["activeTo"], timeline[1]["activeFrom"]);
    assert_eq!(changed["activeTo"], timeline[1]["activeFrom"]);
    assert_eq!(
        time_of(&timeline[1]["activeFrom"]),
        time_of(&view["alignment"]["currentAlignedBillingPeriod"]["to"])
    );
    let (status, _) = patch(&server, &path, &json!({"quantity": 9}));
    assert_eq!(
        status, 400,
        "before the last scheduled change, and above the maximum"
    );

    let listed = server
        .get(&format!("/api/v1/subscriptions/{id}/addons"))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["id"], bought["id"]);
    // The add-on and its timeline survive a restart.
    server.restart();
    let again = server.get(&path).send().expect_status(200).json();
    assert_eq!(again["timeline"], changed["timeline"]);
    assert_eq!(again["rateCards"], changed["rateCards"]);
    server
        .get(&format!(
            "/api/v1/subscriptions/{id}/addons/01J00000000000000000000000"
        ))
        .send()
        .expect_status(404);
    // Add-ons change only on an active subscription (OpenMeter's change_addons transition).
    server
        .post(&format!("/api/v1/subscriptions/{id}/cancel"))
        .json(&json!({"timing": "next_billing_cycle"}))
        .send()
        .expect_status(200);
    assert_eq!(buy(&server, &id, &badge, 1).0, 403, "canceled");
}

fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::minutes(1)).unwrap_or(t)
}

/// `amount` pro-rated as the rating does: the served share of the full period (16 places),
/// rounded to cents.
fn pro_rated(amount: Decimal, served: TimeDelta, full: TimeDelta) -> Decimal {
    let nanos = |d: TimeDelta| Decimal::from(d.num_nanoseconds().unwrap_or(0));
    let share = (nanos(served) / nanos(full))
        .round_dp_with_strategy(16, RoundingStrategy::MidpointAwayFromZero);
    (amount * share).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// Every line of every invoice past gathering, by name: (total, period from, period to).
fn lines(server: &TestServer) -> Vec<(String, Decimal, DateTime<Utc>, DateTime<Utc>)> {
    let invoices = server
        .get("/api/v1/billing/invoices")
        .query("expand", "lines")
        .query("statuses", "paid")
        .send()
        .expect_status(200)
        .json();
    invoices["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .flat_map(|i| i["lines"].as_array().cloned().unwrap_or_default())
        .map(|l| {
            (
                str_of(&l["name"]),
                decimal_of(&l["totals"]["total"]),
                time_of(&l["period"]["from"]),
                time_of(&l["period"]["to"]),
            )
        })
        .collect()
}

fn wait_line(server: &TestServer, name: &str) -> (Decimal, DateTime<Utc>, DateTime<Utc>) {
    eventually(Duration::from_secs(30), || {
        lines(server)
            .into_iter()
            .find(|l| l.0 == name)
            .map(|l| (l.1, l.2, l.3))
            .ok_or_else(|| format!("no paid line {name:?} yet"))
    })
}

// Billing bills what edits and add-ons produce (sandbox app, invoices paid at once). The
// subscription is anchored ten days back, so its first billing period is a partial one and
// every flat fee in it is pro-rated over the full month: the platform fee (30) from the start,
// a support fee (10 a month, in advance) added by an edit from its start, two seats of an
// add-on (5 each, so 10) from the purchase. With a 30-day month and everything in one
// minute that is 20, 6.67 and 6.67; the test works each amount out from the times the API
// answers (truncated to the minute, as billing does), whatever the month.
#[test]
fn billing_invoices_an_added_item_and_an_addon() {
    let server = TestServer::start_with_config(CONFIG);
    let plan = setup(
        &server,
        "pro",
        json!([{"key": "default", "name": "Default", "duration": null,
                "rateCards": [flat("platform", "Platform", "30")]}]),
    );
    let seats = addon(&server, "seats", "multiple", flat("seats", "Seats", "5"));
    offer(&server, &plan, &seats, None);
    publish(&server, "plans", &plan);
    let anchor = minute(Utc::now()) - TimeDelta::days(10);
    let sub = server
        .post("/api/v1/subscriptions")
        .json(&json!({"customerKey": "acme", "plan": {"key": "pro"},
                      "billingAnchor": anchor.to_rfc3339()}))
        .send()
        .expect_status(201)
        .json();
    let id = str_of(&sub["id"]);
    let start = minute(time_of(&sub["activeFrom"]));
    let period_to = minute(time_of(
        &sub["alignment"]["currentAlignedBillingPeriod"]["to"],
    ));
    assert_eq!(
        Some(period_to),
        anchor.checked_add_months(chrono::Months::new(1))
    );
    let full = period_to - anchor;
    let (total, from, to) = wait_line(&server, "Platform");
    assert_eq!((from, to), (start, period_to));
    assert_eq!(total, pro_rated(Decimal::from(30), period_to - start, full));
    assert!(total < Decimal::from(30), "pro-rated: {total}");

    let (status, edited) = edit(
        &server,
        &id,
        json!([{"op": "add_item", "phaseKey": "default", "rateCard": flat("support", "Support", "10")}]),
    );
    assert_eq!(status, 200, "{edited}");
    let support = item(phase(&edited, "default"), "support")
        .cloned()
        .unwrap_or_default();
    let support_from = minute(time_of(&support["activeFrom"]));
    let (total, from, to) = wait_line(&server, "Support");
    assert_eq!((from, to), (support_from, period_to));
    assert_eq!(
        total,
        pro_rated(Decimal::from(10), period_to - support_from, full)
    );
    assert!(total < Decimal::from(10), "pro-rated: {total}");

    let (status, bought) = buy(&server, &id, &seats, 2);
    assert_eq!(status, 201, "{bought}");
    let seats_from = minute(time_of(&bought["activeFrom"]));
    let (total, from, to) = wait_line(&server, "Seats");
    assert_eq!((from, to), (seats_from, period_to));
    assert_eq!(
        total,
        pro_rated(Decimal::from(10), period_to - seats_from, full)
    );
    assert!(total > Decimal::from(5), "two seats: {total}");
    // Nothing billed twice.
    std::thread::sleep(Duration::from_secs(2));
    let names: Vec<String> = lines(&server).into_iter().map(|l| l.0).collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

// An edit at the next billing cycle schedules the change at the period's end (the item runs
// until then); `unschedule_edit` takes the scheduled end back. In a plan whose next cycle falls
// in another phase the same edit is refused (400), as in OpenMeter.
#[test]
fn an_edit_at_the_next_billing_cycle_can_be_unscheduled() {
    let server = TestServer::start_with_config(CONFIG);
    let plan = setup(
        &server,
        "pro",
        json!([{"key": "default", "name": "Default", "duration": null,
                "rateCards": [flat("platform", "Platform", "30"), flat("support", "Support", "10")]}]),
    );
    publish(&server, "plans", &plan);
    let sub = subscribe(&server, "pro");
    let id = str_of(&sub["id"]);
    let period_to = sub["alignment"]["currentAlignedBillingPeriod"]["to"].clone();
    let (status, edited) = patch(
        &server,
        &format!("/api/v1/subscriptions/{id}"),
        &json!({"customizations": [{"op": "remove_item", "phaseKey": "default", "itemKey": "support"}],
                "timing": "next_billing_cycle"}),
    );
    assert_eq!(status, 200, "{edited}");
    let support = item(phase(&edited, "default"), "support")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        time_of(&support["activeTo"]),
        time_of(&period_to),
        "{support}"
    );
    let (status, edited) = edit(&server, &id, json!([{"op": "unschedule_edit"}]));
    assert_eq!(status, 200, "{edited}");
    let support = item(phase(&edited, "default"), "support")
        .cloned()
        .unwrap_or_default();
    assert!(support.get("activeTo").is_none(), "{support}");
    assert_eq!(support["price"]["amount"], "10");

    server
        .post(&format!("/api/v1/subscriptions/{id}/cancel"))
        .send()
        .expect_status(200);
    let trial = server
        .post("/api/v1/plans")
        .json(
            &json!({"key": "trialled", "name": "Trialled", "currency": "USD",
                      "billingCadence": "P1M", "phases": trial_then_default()}),
        )
        .send()
        .expect_status(201)
        .json();
    publish(&server, "plans", &str_of(&trial["id"]));
    let other = subscribe(&server, "trialled");
    let (status, problem) = patch(
        &server,
        &format!("/api/v1/subscriptions/{}", str_of(&other["id"])),
        &json!({"customizations": [{"op": "remove_item", "phaseKey": "trial", "itemKey": "platform"}],
                "timing": "next_billing_cycle"}),
    );
    assert_eq!(status, 400, "{problem}");
}

// An add-on granting 500 more tokens a month, bought twice on a plan granting 1000: from the
// purchase the tokens item carries a new entitlement granting 2000, and the plan's one ends
// at the purchase.
#[test]
fn an_addon_grant_adds_up_in_a_new_entitlement() {
    let server = TestServer::start_with_config(CONFIG);
    let plan = setup(
        &server,
        "pro",
        json!([{"key": "default", "name": "Default", "duration": null,
                "rateCards": [tokens_card()]}]),
    );
    let more = addon(
        &server,
        "more_tokens",
        "multiple",
        json!({"type": "usage_based", "key": "tokens", "name": "Tokens", "featureKey": "tokens",
               "billingCadence": "P1M",
               "entitlementTemplate": {"type": "metered", "issueAfterReset": 500, "isSoftLimit": true}}),
    );
    offer(&server, &plan, &more, None);
    publish(&server, "plans", &plan);
    let sub = subscribe(&server, "pro");
    let id = str_of(&sub["id"]);
    let first = str_of(
        &item(phase(&sub, "default"), "tokens")
            .cloned()
            .unwrap_or_default()["included"]["entitlement"]["id"],
    );
    assert!(!first.is_empty(), "{sub}");
    let (status, bought) = buy(&server, &id, &more, 2);
    assert_eq!(status, 201, "{bought}");
    let view = server
        .get(&format!("/api/v1/subscriptions/{id}"))
        .send()
        .expect_status(200)
        .json();
    let tokens = item(phase(&view, "default"), "tokens")
        .cloned()
        .unwrap_or_default();
    let entitlement = tokens["included"]["entitlement"].clone();
    assert_ne!(str_of(&entitlement["id"]), first, "{tokens}");
    assert_eq!(entitlement["issueAfterReset"], 2000, "{entitlement}");
    assert_eq!(entitlement["activeFrom"], bought["activeFrom"]);
    let old = server
        .get(&format!("/api/v2/entitlements/{first}"))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(old["activeTo"], bought["activeFrom"], "{old}");
    assert_eq!(
        view["phases"][0]["itemTimelines"]["tokens"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}
