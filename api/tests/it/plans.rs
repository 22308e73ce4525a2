//! The product catalog over HTTP: plans and add-ons with OpenMeter's versioned lifecycle
//! (draft → active → archived, one draft per key, publish archives the previous version),
//! validation issues as problem+json `extensions.validationErrors`, plan add-ons; all of it
//! survives a restart.

use crate::server::*;
use serde_json::{Value, json};

fn plan_body(key: &str) -> Value {
    json!({
        "key": key,
        "name": "Pro",
        "currency": "USD",
        "billingCadence": "P1M",
        "phases": [
            {"key": "trial", "name": "Trial", "duration": "P14D", "rateCards": [
                {"type": "flat_fee", "key": "platform", "name": "Platform",
                 "price": {"type": "flat", "amount": "0", "paymentTerm": "in_advance"},
                 "billingCadence": "P1M"}]},
            {"key": "default", "name": "Default", "duration": null, "rateCards": [
                {"type": "flat_fee", "key": "platform", "name": "Platform",
                 "price": {"type": "flat", "amount": "99", "paymentTerm": "in_advance"},
                 "billingCadence": "P1M"}]}
        ]
    })
}

fn addon_body(key: &str, instance_type: &str) -> Value {
    json!({
        "key": key, "name": "Extra seats", "currency": "USD", "instanceType": instance_type,
        "rateCards": [{"type": "flat_fee", "key": "seats", "name": "Seats",
            "price": {"type": "flat", "amount": "10", "paymentTerm": "in_advance"},
            "billingCadence": "P1M"}]
    })
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_owned()
}

// A plan is created as draft v1, edited, published (active, effectiveFrom set), versioned with
// `next`, and publishing v2 archives v1; GET by key answers the active version.
#[test]
fn plan_versions_lifecycle() {
    let mut server = TestServer::start();
    let v1 = server
        .post("/api/v1/plans")
        .json(&plan_body("pro"))
        .send()
        .expect_status(201)
        .json();
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["status"], "draft");
    assert_eq!(v1["validationErrors"], Value::Null);
    assert_eq!(
        v1["proRatingConfig"],
        json!({"enabled": true, "mode": "prorate_prices"})
    );
    assert_eq!(v1["phases"][1]["rateCards"][0]["price"]["amount"], "99");

    // One draft per key.
    let conflict = server
        .post("/api/v1/plans")
        .json(&plan_body("pro"))
        .send()
        .expect_status(400)
        .json();
    assert!(
        conflict["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("only a single draft"),
        "{conflict}"
    );

    // Drafts are editable; the currency stays.
    let mut update = plan_body("pro");
    update["name"] = json!("Pro plan");
    let updated = server
        .put(&format!("/api/v1/plans/{}", id(&v1)))
        .json(&update)
        .send()
        .expect_status(200)
        .json();
    assert_eq!(updated["name"], "Pro plan");

    let published = server
        .post(&format!("/api/v1/plans/{}/publish", id(&v1)))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(published["status"], "active");
    assert!(published["effectiveFrom"].is_string());
    // Active plans are neither editable nor deletable.
    server
        .put(&format!("/api/v1/plans/{}", id(&v1)))
        .json(&update)
        .send()
        .expect_status(400);
    server
        .delete(&format!("/api/v1/plans/{}", id(&v1)))
        .send()
        .expect_status(400);

    let v2 = server
        .post("/api/v1/plans/pro/next")
        .send()
        .expect_status(201)
        .json();
    assert_eq!(
        (v2["version"].as_i64(), v2["status"].as_str()),
        (Some(2), Some("draft"))
    );
    // By key: the active version; with includeLatest: the draft.
    assert_eq!(
        server
            .get("/api/v1/plans/pro")
            .send()
            .expect_status(200)
            .json()["version"],
        1
    );
    assert_eq!(
        server
            .get("/api/v1/plans/pro")
            .query("includeLatest", "true")
            .send()
            .expect_status(200)
            .json()["version"],
        2
    );
    server
        .post(&format!("/api/v1/plans/{}/publish", id(&v2)))
        .send()
        .expect_status(200);
    let old = server
        .get(&format!("/api/v1/plans/{}", id(&v1)))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(old["status"], "archived");
    assert!(old["effectiveTo"].is_string());

    // Listing with filters, and order by version descending.
    let list = server
        .get("/api/v1/plans")
        .query("key", "pro")
        .query("orderBy", "version")
        .query("order", "DESC")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(list["totalCount"], 2);
    assert_eq!(list["items"][0]["version"], 2);
    let archived = server
        .get("/api/v1/plans")
        .query("status", "archived")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(archived["totalCount"], 1);
    let by_version = server
        .get("/api/v1/plans")
        .query("keyVersion[pro]", "2")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(by_version["items"][0]["id"], v2["id"]);

    // Archive the active version; then it can be deleted.
    server
        .post(&format!("/api/v1/plans/{}/archive", id(&v2)))
        .send()
        .expect_status(200);
    server
        .delete(&format!("/api/v1/plans/{}", id(&v2)))
        .send()
        .expect_status(204);
    server
        .get(&format!("/api/v1/plans/{}", id(&v2)))
        .send()
        .expect_status(404);

    // Everything is in the catalog: a restart answers the same.
    server.restart();
    let after = server
        .get(&format!("/api/v1/plans/{}", id(&v1)))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(after["status"], "archived");
    let all = server
        .get("/api/v1/plans")
        .query("includeDeleted", "true")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(all["totalCount"], 2);
}

// Critical issues refuse the write with OpenMeter's codes; warnings are kept on the draft
// (`validationErrors`) and refuse publishing.
#[test]
fn plan_validation_issues() {
    let server = TestServer::start();
    let mut bad = plan_body("bad");
    bad["billingCadence"] = json!("P5D");
    let problem = server
        .post("/api/v1/plans")
        .json(&bad)
        .send()
        .expect_status(400)
        .json();
    assert_eq!(
        problem["extensions"]["validationErrors"][0]["code"],
        "plan_billing_cadence_invalid"
    );
    assert_eq!(
        problem["extensions"]["validationErrors"][0]["field"],
        "billingCadence"
    );

    let mut dup = plan_body("dup");
    dup["phases"][1]["key"] = json!("trial");
    let problem = server
        .post("/api/v1/plans")
        .json(&dup)
        .send()
        .expect_status(400)
        .json();
    assert_eq!(
        problem["extensions"]["validationErrors"][0]["code"],
        "plan_phase_duplicated_key"
    );

    // Rate cards are checked by the engine's rules: a tiered price needs an open-ended tier.
    let mut tiers = plan_body("tiers");
    tiers["phases"][1]["rateCards"][0] = json!({
        "type": "usage_based", "key": "tokens", "name": "Tokens", "featureKey": "tokens",
        "billingCadence": "P1M",
        "price": {"type": "tiered", "mode": "graduated", "tiers": [
            {"upToAmount": "100", "unitPrice": {"type": "unit", "amount": "1"}}]}});
    let problem = server
        .post("/api/v1/plans")
        .json(&tiers)
        .send()
        .expect_status(400)
        .json();
    let issue = &problem["extensions"]["validationErrors"][0];
    assert_eq!(
        issue["field"], "phases[key=default].rateCards[key=tokens].price.tiers",
        "{problem}"
    );
    assert_eq!(
        issue["message"],
        "at least one PriceTier must be open-ended"
    );

    let mut warn = plan_body("warn");
    warn["phases"][0]["duration"] = Value::Null;
    let draft = server
        .post("/api/v1/plans")
        .json(&warn)
        .send()
        .expect_status(201)
        .json();
    assert_eq!(
        draft["validationErrors"][0]["code"],
        "plan_has_non_last_phase_with_no_duration"
    );
    assert_eq!(
        draft["validationErrors"][0]["field"],
        "phases[key=trial].duration"
    );
    let problem = server
        .post(&format!("/api/v1/plans/{}/publish", id(&draft)))
        .send()
        .expect_status(400)
        .json();
    assert_eq!(
        problem["extensions"]["validationErrors"][0]["code"],
        "plan_has_non_last_phase_with_no_duration"
    );

    // A weekly price on a monthly plan: not every month is whole weeks (OpenMeter's
    // rate_card_billing_cadence_unaligned, a warning). A yearly one is.
    let mut weekly = plan_body("weekly");
    weekly["phases"][1]["rateCards"][0]["billingCadence"] = json!("P1W");
    weekly["phases"][0]["rateCards"][0]["billingCadence"] = json!("P1Y");
    let draft = server
        .post("/api/v1/plans")
        .json(&weekly)
        .send()
        .expect_status(201)
        .json();
    assert_eq!(
        draft["validationErrors"],
        json!([{"code": "rate_card_billing_cadence_unaligned",
                "field": "phases[key=default].rateCards[key=platform].billingCadence",
                "message": "ratecards with prices must have compatible billing cadence"}])
    );
    server
        .post(&format!("/api/v1/plans/{}/publish", id(&draft)))
        .send()
        .expect_status(400);

    server.get("/api/v1/plans/nope").send().expect_status(404);
    server
        .post("/api/v1/plans")
        .json(&json!({"key": "x"}))
        .send()
        .expect_status(400);
}

// Add-ons have the same lifecycle; only active add-ons can be assigned to a draft plan;
// an incompatible assignment (unknown phase, maxQuantity on a single add-on) refuses publishing.
#[test]
fn addons_and_plan_addons() {
    let server = TestServer::start();
    let addon = server
        .post("/api/v1/addons")
        .json(&addon_body("seats", "multiple"))
        .send()
        .expect_status(201)
        .json();
    assert_eq!(
        (addon["status"].as_str(), addon["instanceType"].as_str()),
        (Some("draft"), Some("multiple"))
    );
    let plan = server
        .post("/api/v1/plans")
        .json(&plan_body("team"))
        .send()
        .expect_status(201)
        .json();
    let assign = json!({"addonId": id(&addon), "fromPlanPhase": "default", "maxQuantity": 5});
    // An add-on billed weekly does not fit a monthly plan.
    let mut weekly = addon_body("weekly_seats", "multiple");
    weekly["rateCards"][0]["billingCadence"] = json!("P1W");
    let weekly = server
        .post("/api/v1/addons")
        .json(&weekly)
        .send()
        .expect_status(201)
        .json();
    server
        .post(&format!("/api/v1/addons/{}/publish", id(&weekly)))
        .send()
        .expect_status(200);
    let problem = server
        .post(&format!("/api/v1/plans/{}/addons", id(&plan)))
        .json(&json!({"addonId": id(&weekly), "fromPlanPhase": "default"}))
        .send()
        .expect_status(400)
        .json();
    assert_eq!(
        problem["extensions"]["validationErrors"][0]["code"],
        "rate_card_billing_cadence_unaligned"
    );
    // A draft add-on cannot be assigned.
    server
        .post(&format!("/api/v1/plans/{}/addons", id(&plan)))
        .json(&assign)
        .send()
        .expect_status(400);
    server
        .post(&format!("/api/v1/addons/{}/publish", id(&addon)))
        .send()
        .expect_status(200);
    let pa = server
        .post(&format!("/api/v1/plans/{}/addons", id(&plan)))
        .json(&assign)
        .send()
        .expect_status(201)
        .json();
    assert_eq!(pa["addon"]["id"], addon["id"]);
    assert_eq!(
        (pa["fromPlanPhase"].as_str(), pa["maxQuantity"].as_i64()),
        (Some("default"), Some(5))
    );
    assert_eq!(pa["validationErrors"], Value::Null);
    server
        .post(&format!("/api/v1/plans/{}/addons", id(&plan)))
        .json(&assign)
        .send()
        .expect_status(409);

    // By add-on id or key.
    server
        .get(&format!("/api/v1/plans/{}/addons/seats", id(&plan)))
        .send()
        .expect_status(200);
    let updated = server
        .put(&format!(
            "/api/v1/plans/{}/addons/{}",
            id(&plan),
            id(&addon)
        ))
        .json(&json!({"fromPlanPhase": "nowhere"}))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(
        updated["validationErrors"][0]["code"],
        "plan_addon_unknown_plan_phase_key"
    );
    let problem = server
        .post(&format!("/api/v1/plans/{}/publish", id(&plan)))
        .send()
        .expect_status(400)
        .json();
    assert_eq!(
        problem["extensions"]["validationErrors"][0]["code"],
        "plan_has_incompatible_addon"
    );
    server
        .put(&format!(
            "/api/v1/plans/{}/addons/{}",
            id(&plan),
            id(&addon)
        ))
        .json(&json!({"fromPlanPhase": "trial"}))
        .send()
        .expect_status(200);
    server
        .post(&format!("/api/v1/plans/{}/publish", id(&plan)))
        .send()
        .expect_status(200);
    // The plan is active now: its assignments are fixed.
    server
        .delete(&format!(
            "/api/v1/plans/{}/addons/{}",
            id(&plan),
            id(&addon)
        ))
        .send()
        .expect_status(400);
    let list = server
        .get(&format!("/api/v1/plans/{}/addons", id(&plan)))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(list["totalCount"], 1);

    // Add-on versions, archive, delete.
    let list = server
        .get("/api/v1/addons")
        .query("status", "active")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(list["items"][0]["key"], "seats");
    server
        .post(&format!("/api/v1/addons/{}/archive", id(&addon)))
        .send()
        .expect_status(200);
    server
        .delete(&format!("/api/v1/addons/{}", id(&addon)))
        .send()
        .expect_status(204);
}

// The schema's text limits hold on every level of the catalog (found by api_fuzz: an add-on
// with a 1025-character description was stored and answered, violating the `Addon` schema):
// a description over 1024 characters or a rate card name over 256 is a critical issue (400),
// and exactly 1024 is fine.
#[test]
fn text_limits_of_plans_and_addons() {
    let server = TestServer::start();
    let long = "d".repeat(1025);
    let cases: [(&str, Value, &str); 4] = [
        (
            "/api/v1/addons",
            {
                let mut a = addon_body("long_addon", "single");
                a["description"] = json!(long);
                a
            },
            "description",
        ),
        (
            "/api/v1/plans",
            {
                let mut p = plan_body("long_plan");
                p["description"] = json!(long);
                p
            },
            "description",
        ),
        (
            "/api/v1/plans",
            {
                let mut p = plan_body("long_phase");
                p["phases"][0]["description"] = json!(long);
                p
            },
            "phases[key=trial].description",
        ),
        (
            "/api/v1/plans",
            {
                let mut p = plan_body("long_card");
                p["phases"][1]["rateCards"][0]["name"] = json!("n".repeat(257));
                p
            },
            "phases[key=default].rateCards[key=platform].name",
        ),
    ];
    for (path, body, field) in cases {
        let problem = server
            .post(path)
            .json(&body)
            .send()
            .expect_status(400)
            .json();
        assert_eq!(
            problem["extensions"]["validationErrors"][0]["field"], field,
            "{problem}"
        );
    }
    let mut fits = addon_body("fits", "single");
    fits["description"] = json!("d".repeat(1024));
    fits["rateCards"][0]["description"] = json!("d".repeat(1024));
    server
        .post("/api/v1/addons")
        .json(&fits)
        .send()
        .expect_status(201);
}
