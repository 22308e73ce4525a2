//! Subscriptions over HTTP: created from a published plan, expanded with phases and items, one
//! per customer at a time (409 with OpenMeter's code), entitlements materialised from rate
//! card templates and protected from the entitlement API, cancel / unschedule, change, migrate,
//! delete of a scheduled one; all of it survives a restart.

use crate::server::*;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

const CONFIG: &str = r#"
meters:
  - slug: tokens
    eventType: tokens
    aggregation: SUM
    valueProperty: $.tokens
"#;

fn plan(key: &str, monthly: &str) -> Value {
    json!({
        "key": key, "name": key, "currency": "USD", "billingCadence": "P1M",
        "phases": [
            {"key": "trial", "name": "Trial", "duration": "P14D", "rateCards": [
                {"type": "flat_fee", "key": "platform", "name": "Platform", "billingCadence": "P1M",
                 "price": {"type": "flat", "amount": "0", "paymentTerm": "in_advance"}}]},
            {"key": "default", "name": "Default", "duration": null, "rateCards": [
                {"type": "flat_fee", "key": "platform", "name": "Platform", "billingCadence": "P1M",
                 "price": {"type": "flat", "amount": monthly, "paymentTerm": "in_advance"}},
                {"type": "usage_based", "key": "tokens", "name": "Tokens", "featureKey": "tokens",
                 "billingCadence": "P1M",
                 "price": {"type": "unit", "amount": "0.01"},
                 "entitlementTemplate": {"type": "metered", "issueAfterReset": 1000, "isSoftLimit": true}}]}
        ]
    })
}

fn setup(server: &TestServer) {
    server
        .post("/api/v1/features")
        .json(&json!({"key": "tokens", "name": "Tokens", "meterSlug": "tokens"}))
        .send()
        .expect_status(201);
    for (key, price) in [("pro", "99"), ("team", "199")] {
        let p = server
            .post("/api/v1/plans")
            .json(&plan(key, price))
            .send()
            .expect_status(201)
            .json();
        server
            .post(&format!("/api/v1/plans/{}/publish", str_of(&p["id"])))
            .send()
            .expect_status(200);
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn time_of(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn customer(server: &TestServer, key: &str) -> String {
    let c = server
        .post("/api/v1/customers")
        .json(&json!({"name": key, "key": key, "usageAttribution": {"subjectKeys": [key]}}))
        .send()
        .expect_status(201)
        .json();
    str_of(&c["id"])
}

fn subscribe(server: &TestServer, body: &Value) -> Value {
    server
        .post("/api/v1/subscriptions")
        .json(body)
        .send()
        .expect_status(201)
        .json()
}

// A subscription from a plan: phases one after the other from activeFrom (P14D trial), items
// from the rate cards, the metered template becomes an entitlement of the default phase.
#[test]
fn subscribe_expand_and_entitlements() {
    let mut server = TestServer::start_with_config(CONFIG);
    setup(&server);
    let acme = customer(&server, "acme");
    let sub = subscribe(
        &server,
        &json!({"customerKey": "acme", "plan": {"key": "pro"}}),
    );
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["customerId"], json!(acme));
    assert_eq!(sub["plan"]["key"], "pro");
    assert_eq!(sub["plan"]["version"], 1);
    assert_eq!(
        (sub["currency"].as_str(), sub["billingCadence"].as_str()),
        (Some("USD"), Some("P1M"))
    );
    assert_eq!(sub["billingAnchor"], sub["activeFrom"]);
    let from = time_of(&sub["activeFrom"]);
    let phases = sub["phases"].as_array().cloned().unwrap_or_default();
    assert_eq!(phases.len(), 2);
    assert_eq!(time_of(&phases[0]["activeTo"]), from + Duration::days(14));
    assert_eq!(phases[1]["activeFrom"], phases[0]["activeTo"]);
    assert!(phases[1].get("activeTo").is_none());
    let tokens = &phases[1]["items"][1];
    assert_eq!(tokens["key"], "tokens");
    assert_eq!(tokens["price"], json!({"type": "unit", "amount": "0.01"}));
    assert_eq!(tokens["included"]["feature"]["key"], "tokens");
    let entitlement = &tokens["included"]["entitlement"];
    assert_eq!(entitlement["type"], "metered");
    assert_eq!(
        time_of(&entitlement["activeFrom"]),
        from + Duration::days(14)
    );
    assert_eq!(entitlement["annotations"]["subscription.id"], sub["id"]);
    assert_eq!(
        sub["alignment"]["currentAlignedBillingPeriod"]["from"],
        sub["activeFrom"]
    );

    // The entitlement API refuses to delete a subscription-managed entitlement.
    let ent_id = str_of(&entitlement["id"]);
    server
        .delete(&format!("/api/v2/customers/{acme}/entitlements/{ent_id}"))
        .send()
        .expect_status(403);

    // A customer with an active subscription cannot be deleted (OpenMeter's rule).
    let refused = server
        .delete("/api/v1/customers/acme")
        .send()
        .expect_status(400)
        .json();
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("still have active subscriptions"),
        "{refused}"
    );

    // One subscription per customer at a time.
    let problem = server
        .post("/api/v1/subscriptions")
        .json(&json!({"customerId": acme, "plan": {"key": "team"}}))
        .send()
        .expect_status(409)
        .json();
    assert_eq!(
        problem["extensions"]["validationErrors"][0]["code"],
        "only_single_subscription_allowed_per_customer_at_a_time"
    );

    // Listing, and everything survives a restart.
    let list = server
        .get("/api/v1/customers/acme/subscriptions")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(list["totalCount"], 1);
    assert_eq!(list["items"][0]["id"], sub["id"]);
    server.restart();
    let again = server
        .get(&format!("/api/v1/subscriptions/{}", str_of(&sub["id"])))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(again["phases"], sub["phases"]);

    // Errors: unknown plan, draft-only plan, unknown customer, unknown starting phase.
    let other = customer(&server, "other");
    server
        .post("/api/v1/subscriptions")
        .json(&json!({"customerId": other, "plan": {"key": "nope"}}))
        .send()
        .expect_status(404);
    server
        .post("/api/v1/subscriptions")
        .json(&json!({"customerKey": "ghost", "plan": {"key": "pro"}}))
        .send()
        .expect_status(404);
    server
        .post("/api/v1/subscriptions")
        .json(&json!({"customerId": other, "plan": {"key": "pro"}, "startingPhase": "nope"}))
        .send()
        .expect_status(400);
    // Starting in the default phase: one phase from now.
    let started = subscribe(
        &server,
        &json!({"customerId": other, "plan": {"key": "pro"}, "startingPhase": "default"}),
    );
    assert_eq!(started["phases"].as_array().map(Vec::len), Some(1));
}

// Cancel at the next billing cycle sets activeTo to the aligned period's end and shortens the
// entitlement; unschedule-cancelation continues it; an immediate cancel makes it inactive.
#[test]
fn cancel_and_continue() {
    let server = TestServer::start_with_config(CONFIG);
    setup(&server);
    customer(&server, "acme");
    let anchor = Utc::now() - Duration::days(40);
    let sub = subscribe(
        &server,
        &json!({"customerKey": "acme", "plan": {"key": "pro"}, "billingAnchor": anchor.to_rfc3339()}),
    );
    let id = str_of(&sub["id"]);
    let period_end = time_of(&sub["alignment"]["currentAlignedBillingPeriod"]["to"]);
    let canceled = server
        .post(&format!("/api/v1/subscriptions/{id}/cancel"))
        .json(&json!({"timing": "next_billing_cycle"}))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(time_of(&canceled["activeTo"]), period_end);
    // A custom time off the billing period is refused; a second cancel is forbidden.
    server
        .post(&format!("/api/v1/subscriptions/{id}/cancel"))
        .json(&json!({"timing": "immediate"}))
        .send()
        .expect_status(403);
    let continued = server
        .post(&format!(
            "/api/v1/subscriptions/{id}/unschedule-cancelation"
        ))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(continued["status"], "active");
    assert!(continued.get("activeTo").is_none());
    let off_period = period_end + Duration::hours(1);
    server
        .post(&format!("/api/v1/subscriptions/{id}/cancel"))
        .json(&json!({"timing": off_period.to_rfc3339()}))
        .send()
        .expect_status(400);
    // A malformed body is a 400, not an immediate cancel.
    for bad in ["{\"timing\": ", "[]"] {
        server
            .post(&format!("/api/v1/subscriptions/{id}/cancel"))
            .body("application/json", bad.to_owned())
            .send()
            .expect_status(400);
    }
    let ended = server
        .post(&format!("/api/v1/subscriptions/{id}/cancel"))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(ended["status"], "inactive");
    // Its entitlement (of the default phase, never reached) ends where it would have begun:
    // never active.
    let ents = server
        .get("/api/v2/customers/acme/entitlements")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(
        ents["items"][0]["activeTo"], ents["items"][0]["activeFrom"],
        "{ents}"
    );
    let access = server
        .get("/api/v1/customers/acme/access")
        .send()
        .expect_status(200)
        .json();
    assert_ne!(
        access["entitlements"]["tokens"]["hasAccess"],
        json!(true),
        "{access}"
    );
    // The customer can subscribe again.
    subscribe(
        &server,
        &json!({"customerKey": "acme", "plan": {"key": "team"}}),
    );
}

// Change ends the current subscription where the next begins; migrate moves to a newer
// version of the same plan; a scheduled subscription can be deleted, an active one cannot.
#[test]
fn change_migrate_and_delete() {
    let server = TestServer::start_with_config(CONFIG);
    setup(&server);
    customer(&server, "acme");
    let sub = subscribe(
        &server,
        &json!({"customerKey": "acme", "plan": {"key": "pro"}}),
    );
    let id = str_of(&sub["id"]);
    server
        .post(&format!("/api/v1/subscriptions/{id}/change"))
        .json(&json!({"plan": {"key": "team"}}))
        .send()
        .expect_status(400); // timing is required
    let changed = server
        .post(&format!("/api/v1/subscriptions/{id}/change"))
        .json(&json!({"timing": "immediate", "plan": {"key": "team"}}))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(changed["current"]["id"], json!(id));
    assert_eq!(
        changed["current"]["activeTo"],
        changed["next"]["activeFrom"]
    );
    assert_eq!(changed["next"]["plan"]["key"], "team");
    assert_eq!(changed["next"]["billingAnchor"], sub["billingAnchor"]);
    let next_id = str_of(&changed["next"]["id"]);

    // A new version of team, then migrate.
    let v2 = server
        .post("/api/v1/plans/team/next")
        .send()
        .expect_status(201)
        .json();
    server
        .post(&format!("/api/v1/plans/{}/publish", str_of(&v2["id"])))
        .send()
        .expect_status(200);
    let migrated = server
        .post(&format!("/api/v1/subscriptions/{next_id}/migrate"))
        .json(&json!({}))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(migrated["next"]["plan"]["version"], 2);
    let latest = str_of(&migrated["next"]["id"]);
    server
        .post(&format!("/api/v1/subscriptions/{latest}/migrate"))
        .json(&json!({}))
        .send()
        .expect_status(400); // already on the latest version
    let list = server
        .get("/api/v1/customers/acme/subscriptions")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(list["totalCount"], 3);
    let active = server
        .get("/api/v1/customers/acme/subscriptions")
        .query("status", "active")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(active["items"][0]["id"], json!(latest));

    // Scheduled: a second customer starting in a week; deleted. Active: forbidden.
    customer(&server, "later");
    let start = (Utc::now() + Duration::days(7)).to_rfc3339();
    let scheduled = subscribe(
        &server,
        &json!({"customerKey": "later", "plan": {"key": "pro"}, "timing": start}),
    );
    assert_eq!(scheduled["status"], "scheduled");
    server
        .delete(&format!(
            "/api/v1/subscriptions/{}",
            str_of(&scheduled["id"])
        ))
        .send()
        .expect_status(204);
    server
        .get(&format!(
            "/api/v1/subscriptions/{}",
            str_of(&scheduled["id"])
        ))
        .send()
        .expect_status(404);
    server
        .delete(&format!("/api/v1/subscriptions/{latest}"))
        .send()
        .expect_status(403);
    // In the past: refused.
    let past = (Utc::now() - Duration::days(1)).to_rfc3339();
    server
        .post("/api/v1/subscriptions")
        .json(&json!({"customerKey": "later", "plan": {"key": "pro"}, "timing": past}))
        .send()
        .expect_status(400);
}
