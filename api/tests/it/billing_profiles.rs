//! Billing profiles and customer overrides over HTTP: the default profile a fresh server
//! provisions (using the sandbox app), CRUD with OpenMeter's rules and validation codes
//! (one default, the default can be neither unset nor deleted, a pinned profile cannot be
//! deleted, one app for all roles), `expand=apps`, and customer overrides with their
//! merged profile, filters and expansions.

use crate::helpers::*;
use crate::server::*;
use serde_json::{Value, json};

fn default_profile(server: &TestServer) -> Value {
    let page = server
        .get("/api/v1/billing/profiles")
        .send()
        .expect_status(200)
        .json();
    let items = page["items"].as_array().cloned().unwrap_or_default();
    items
        .into_iter()
        .find(|p| p["default"] == json!(true))
        .unwrap_or_else(|| panic!("no default profile: {page}"))
}

fn profile_body(name: &str, default: bool, app: &str) -> Value {
    json!({
        "name": name,
        "default": default,
        "supplier": {"name": "ACME Inc.", "addresses": [{"country": "DE", "city": "Berlin"}]},
        "workflow": {"payment": {"collectionMethod": "send_invoice"}},
        "apps": {"tax": app, "invoicing": app, "payment": app},
    })
}

fn create_profile(server: &TestServer, body: &Value) -> Value {
    server
        .post("/api/v1/billing/profiles")
        .json(body)
        .send()
        .expect_status(201)
        .json()
}

/// The validation issue code of a 400 (`extensions.code`).
#[track_caller]
fn issue_code(resp: &Resp, status: u16) -> String {
    assert_problem(resp, status);
    resp.json()["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// A fresh server has the sandbox app and a default profile using it for every role, with
// OpenMeter's default workflow; a restart provisions nothing twice.
#[test]
fn default_profile_uses_the_sandbox_app() {
    let mut server = TestServer::start();
    let apps = server.get("/api/v1/apps").send().expect_status(200).json();
    assert_eq!(apps["totalCount"], json!(1), "{apps}");
    let sandbox = &apps["items"][0];
    assert_eq!(sandbox["type"], "sandbox");
    assert_eq!(sandbox["name"], "Sandbox");
    assert_eq!(sandbox["status"], "ready");
    assert_eq!(sandbox["listing"]["type"], "sandbox");
    let profile = default_profile(&server);
    assert_eq!(profile["name"], "openmeter-sandbox");
    assert_eq!(profile["supplier"]["name"], "OpenMeter");
    assert_eq!(profile["supplier"]["addresses"][0]["country"], "US");
    for role in ["tax", "invoicing", "payment"] {
        assert_eq!(
            profile["apps"][role],
            json!({"id": sandbox["id"]}),
            "{profile}"
        );
    }
    assert_json_eq(
        &profile["workflow"],
        &json!({
            "collection": {"alignment": {"type": "subscription"}, "interval": "PT1H"},
            "invoicing": {"autoAdvance": true, "draftPeriod": "P0D", "dueAfter": "P30D",
                          "progressiveBilling": true, "subscriptionEndProrationMode": "bill_actual_period"},
            "payment": {"collectionMethod": "charge_automatically"},
            "tax": {"enabled": true, "enforced": false},
        }),
    );
    // expand=apps answers the apps themselves.
    let expanded = server
        .get(&format!(
            "/api/v1/billing/profiles/{}",
            text(&profile, "id")
        ))
        .query("expand", "apps")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(expanded["apps"]["invoicing"]["type"], "sandbox");
    assert_eq!(expanded["apps"]["payment"]["id"], sandbox["id"]);

    server.restart();
    let again = server
        .get("/api/v1/billing/profiles")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(again["totalCount"], json!(1), "{again}");
    let apps = server.get("/api/v1/apps").send().expect_status(200).json();
    assert_eq!(apps["totalCount"], json!(1), "{apps}");
}

// Create (apps by type or id), get, replace, list; one default at a time; the rules of
// OpenMeter's profile service answer 400 with their codes.
#[test]
fn profile_crud_and_default_rules() {
    let server = TestServer::start();
    let first = default_profile(&server);
    let first_id = text(&first, "id");
    let sandbox_id = text(&first["apps"]["tax"], "id");

    let second = create_profile(&server, &profile_body("second", false, "sandbox"));
    let second_id = text(&second, "id");
    assert_eq!(second["default"], json!(false));
    assert_eq!(second["apps"]["invoicing"]["type"], "sandbox", "{second}");
    assert_eq!(
        second["workflow"]["payment"]["collectionMethod"],
        "send_invoice"
    );
    assert_eq!(second["workflow"]["invoicing"]["dueAfter"], "P30D");
    let by_id = create_profile(&server, &profile_body("third", false, &sandbox_id));
    assert_eq!(by_id["apps"]["tax"]["id"], json!(sandbox_id));

    // Replace: name, workflow; making it default demotes the first.
    let mut replace = profile_body("second, renamed", true, "sandbox");
    if let Some(fields) = replace.as_object_mut() {
        fields.remove("apps");
    }
    replace["workflow"] = json!({"collection": {"alignment": {"type": "anchored",
        "recurringPeriod": {"interval": "P1M", "anchor": "2025-01-01T00:00:00Z"}}},
        "invoicing": {"dueAfter": "P7D"}});
    let updated = server
        .put(&format!("/api/v1/billing/profiles/{second_id}"))
        .json(&replace)
        .send()
        .expect_status(200)
        .json();
    assert_eq!(updated["name"], "second, renamed");
    assert_eq!(updated["default"], json!(true));
    assert_eq!(
        updated["workflow"]["collection"]["alignment"]["type"],
        "anchored"
    );
    assert_eq!(updated["workflow"]["invoicing"]["dueAfter"], "P7D");
    assert_eq!(text(&default_profile(&server), "id"), second_id);
    let demoted = server
        .get(&format!("/api/v1/billing/profiles/{first_id}"))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(demoted["default"], json!(false));

    // The default cannot be unset, nor deleted.
    replace["default"] = json!(false);
    let resp = server
        .put(&format!("/api/v1/billing/profiles/{second_id}"))
        .json(&replace)
        .send();
    assert_eq!(issue_code(&resp, 400), "default_profile_cannot_be_unset");
    let resp = server
        .delete(&format!("/api/v1/billing/profiles/{second_id}"))
        .send();
    assert_eq!(issue_code(&resp, 400), "default_profile_cannot_be_deleted");

    // Listing: newest first by default, paging, orderBy name ascending.
    let page = server
        .get("/api/v1/billing/profiles")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(page["totalCount"], json!(3));
    assert_eq!(page["items"][0]["name"], "third", "{page}");
    let page = server
        .get("/api/v1/billing/profiles")
        .query("orderBy", "name")
        .query("order", "ASC")
        .query("pageSize", "2")
        .query("page", "2")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["items"][0]["name"], "third");

    // Delete the demoted one: gone from lists, kept with includeArchived, and a PUT on it
    // is refused; deleting it again answers 204.
    server
        .delete(&format!("/api/v1/billing/profiles/{first_id}"))
        .send()
        .expect_status(204);
    server
        .delete(&format!("/api/v1/billing/profiles/{first_id}"))
        .send()
        .expect_status(204);
    let page = server
        .get("/api/v1/billing/profiles")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(page["totalCount"], json!(2));
    let page = server
        .get("/api/v1/billing/profiles")
        .query("includeArchived", "true")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(page["totalCount"], json!(3));
    let mut put_deleted = replace.clone();
    put_deleted["default"] = json!(false);
    let resp = server
        .put(&format!("/api/v1/billing/profiles/{first_id}"))
        .json(&put_deleted)
        .send();
    assert_eq!(issue_code(&resp, 400), "profile_already_deleted");

    let resp = server
        .get("/api/v1/billing/profiles/01JAAAAAAAAAAAAAAAAAAAAAAA")
        .send();
    assert_eq!(issue_code(&resp, 404), "profile_not_found");
}

// Invalid creates: a missing supplier country or name, a bad duration, different apps for
// the roles, an unknown app, a malformed body.
#[test]
fn invalid_profiles_are_refused() {
    let server = TestServer::start();
    let ci = server
        .post("/api/v1/marketplace/listings/custom_invoicing/install")
        .json(&json!({}))
        .send()
        .expect_status(200)
        .json();
    let ci_id = text(&ci["app"], "id");
    let mut no_country = profile_body("x", false, "sandbox");
    no_country["supplier"] = json!({"name": "x"});
    let mut no_name = profile_body("x", false, "sandbox");
    no_name["supplier"] = json!({"addresses": [{"country": "US"}]});
    let mut bad_duration = profile_body("x", false, "sandbox");
    bad_duration["workflow"] = json!({"invoicing": {"draftPeriod": "one day"}});
    let mut mixed = profile_body("x", false, "sandbox");
    mixed["apps"]["payment"] = json!(ci_id);
    let mut bad_enum = profile_body("x", false, "sandbox");
    bad_enum["workflow"] = json!({"payment": {"collectionMethod": "cash"}});
    for (body, needle) in [
        (no_country, "country"),
        (no_name, "name"),
        (bad_duration, "draftPeriod"),
        (mixed, "all apps must be the same"),
        (bad_enum, "cash"),
        (json!({"name": "x"}), "supplier"),
    ] {
        let resp = server.post("/api/v1/billing/profiles").json(&body).send();
        let detail = assert_problem(&resp, 400);
        assert!(detail.contains(needle), "{needle}: {detail}");
    }
    let resp = server
        .post("/api/v1/billing/profiles")
        .json(&profile_body("x", false, "01JAAAAAAAAAAAAAAAAAAAAAAA"))
        .send();
    assert_problem(&resp, 404);
    // A profile for custom invoicing is fine.
    create_profile(&server, &profile_body("ci", false, &ci_id));
}

// Overrides: pin a customer to a profile, read the merged profile (with `customer` and
// `apps` expanded), list with filters; a pinned profile cannot be deleted; unpin.
#[test]
fn customer_overrides() {
    let server = TestServer::start();
    let default = default_profile(&server);
    let other = create_profile(&server, &profile_body("other", false, "sandbox"));
    let other_id = text(&other, "id");
    let acme = server
        .post("/api/v1/customers")
        .json(&json!({"name": "ACME", "key": "acme", "primaryEmail": "ops@acme.test"}))
        .send()
        .expect_status(201)
        .json();
    let acme_id = text(&acme, "id");
    let beta = server
        .post("/api/v1/customers")
        .json(&json!({"name": "Beta", "key": "beta"}))
        .send()
        .expect_status(201)
        .json();
    let beta_id = text(&beta, "id");

    // Without an override: the default profile, no customerOverride.
    let details = server
        .get(&format!("/api/v1/billing/customers/{acme_id}"))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(details["baseBillingProfileId"], default["id"]);
    assert!(details.get("customerOverride").is_none(), "{details}");
    assert_eq!(
        details["customerProfile"]["workflow"]["payment"]["collectionMethod"],
        "charge_automatically"
    );

    let pinned = server
        .put(&format!("/api/v1/billing/customers/{acme_id}"))
        .json(&json!({"billingProfileId": other_id}))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(pinned["baseBillingProfileId"], json!(other_id));
    assert_eq!(pinned["customerOverride"]["customerId"], json!(acme_id));
    assert_eq!(
        pinned["customerOverride"]["billingProfileId"],
        json!(other_id)
    );
    assert_eq!(
        pinned["customerProfile"]["workflow"]["payment"]["collectionMethod"],
        "send_invoice"
    );
    assert_eq!(pinned["customerProfile"]["supplier"]["name"], "ACME Inc.");
    // A malformed body is a 400 and leaves the pin in place (found by api_fuzz: `[]` was
    // taken as an empty body and unpinned the customer).
    for malformed in [json!([]), json!({"billingProfileId": 5})] {
        let resp = server
            .put(&format!("/api/v1/billing/customers/{acme_id}"))
            .json(&malformed)
            .send();
        assert_problem(&resp, 400);
    }
    let kept = server
        .get(&format!("/api/v1/billing/customers/{acme_id}"))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(
        kept["customerOverride"]["billingProfileId"],
        json!(other_id),
        "{kept}"
    );
    let expanded = server
        .get(&format!("/api/v1/billing/customers/{acme_id}"))
        .query("expand", "apps")
        .query("expand", "customer")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(expanded["customer"]["key"], "acme");
    assert_eq!(
        expanded["customerProfile"]["apps"]["invoicing"]["type"],
        "sandbox"
    );

    // The pinned profile cannot be deleted.
    let resp = server
        .delete(&format!("/api/v1/billing/profiles/{other_id}"))
        .send();
    assert_eq!(issue_code(&resp, 400), "profile_referenced");

    // Listing: everybody by default; only overrides; only unpinned; by profile; by name.
    let ids = |params: &[(&str, &str)]| -> Vec<String> {
        let mut req = server.get("/api/v1/billing/customers");
        for (k, v) in params {
            req = req.query(k, v);
        }
        let page = req.send().expect_status(200).json();
        page["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|i| text(&i["customer"], "id"))
            .collect()
    };
    let mut all = vec![acme_id.clone(), beta_id.clone()];
    all.sort();
    assert_eq!(ids(&[("expand", "customer")]), all);
    assert_eq!(
        ids(&[("expand", "customer"), ("includeAllCustomers", "false")]),
        vec![acme_id.clone()]
    );
    assert_eq!(
        ids(&[
            ("expand", "customer"),
            ("customersWithoutPinnedProfile", "true")
        ]),
        vec![beta_id.clone()]
    );
    assert_eq!(
        ids(&[("expand", "customer"), ("billingProfile", &other_id)]),
        vec![acme_id.clone()]
    );
    assert_eq!(
        ids(&[("expand", "customer"), ("customerName", "bet")]),
        vec![beta_id.clone()]
    );
    assert_eq!(
        ids(&[
            ("expand", "customer"),
            ("orderBy", "customerName"),
            ("order", "DESC")
        ]),
        vec![beta_id.clone(), acme_id.clone()]
    );
    assert_problem(
        &server
            .get("/api/v1/billing/customers")
            .query("expand", "everything")
            .send(),
        400,
    );

    // Unpin: back to the default; deleting again is a 404; the profile can go now.
    server
        .delete(&format!("/api/v1/billing/customers/{acme_id}"))
        .send()
        .expect_status(204);
    let resp = server
        .delete(&format!("/api/v1/billing/customers/{acme_id}"))
        .send();
    assert_eq!(issue_code(&resp, 404), "customer_override_not_found");
    let details = server
        .get(&format!("/api/v1/billing/customers/{acme_id}"))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(details["baseBillingProfileId"], default["id"]);
    server
        .delete(&format!("/api/v1/billing/profiles/{other_id}"))
        .send()
        .expect_status(204);

    // Unknown customers and profiles.
    let resp = server
        .get("/api/v1/billing/customers/01JAAAAAAAAAAAAAAAAAAAAAAA")
        .send();
    assert_eq!(issue_code(&resp, 404), "customer_not_found");
    let resp = server
        .put(&format!("/api/v1/billing/customers/{beta_id}"))
        .json(&json!({"billingProfileId": "01JAAAAAAAAAAAAAAAAAAAAAAA"}))
        .send();
    assert_eq!(issue_code(&resp, 404), "profile_not_found");
}
