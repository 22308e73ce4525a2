//! Apps over HTTP: the marketplace, the sandbox app every namespace has, custom invoicing,
//! and Stripe against the fake Stripe (`metron-fake-stripe`): install with an API key
//! (the key checked with `GET /v1/account`, the webhook endpoint registered with the app's
//! URL and the 12 events, the key masked and never answered, a bad key a 401), key
//! replacement, uninstall deleting the endpoint, customers' app data and Stripe links
//! (checked with Stripe), portal and checkout sessions. Every request the fake received
//! must satisfy Stripe's spec (`violations` empty).

use crate::helpers::*;
use crate::server::*;
use metron_fake_stripe::FakeStripe;
use serde_json::{Value, json};

const EVENTS: [&str; 12] = [
    "setup_intent.succeeded",
    "setup_intent.setup_failed",
    "setup_intent.requires_action",
    "invoice.finalization_failed",
    "invoice.marked_uncollectible",
    "invoice.overdue",
    "invoice.paid",
    "invoice.payment_action_required",
    "invoice.payment_failed",
    "invoice.payment_succeeded",
    "invoice.sent",
    "invoice.voided",
];

fn with_stripe(stripe: &FakeStripe) -> TestServer {
    TestServer::start_with_config(&format!("stripe:\n  apiBase: {}\n", stripe.base_url()))
}

fn install_stripe(server: &TestServer, key: &str) -> Resp {
    server
        .post("/api/v1/marketplace/listings/stripe/install/apikey")
        .json(&json!({"apiKey": key, "name": "Stripe (test)"}))
        .send()
}

fn create_customer(server: &TestServer, key: &str) -> Value {
    server
        .post("/api/v1/customers")
        .json(&json!({"name": format!("Customer {key}"), "key": key,
                      "primaryEmail": format!("{key}@example.com"), "currency": "USD"}))
        .send()
        .expect_status(201)
        .json()
}

#[track_caller]
fn assert_no_violations(stripe: &FakeStripe) {
    assert_eq!(stripe.violations(), Vec::<String>::new());
}

// The listings, by type and paged; an unknown type is a 400.
#[test]
fn marketplace_listings() {
    let server = TestServer::start();
    let page = server
        .get("/api/v1/marketplace/listings")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(page["totalCount"], json!(3));
    let types: Vec<&str> = page["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["type"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(types, ["custom_invoicing", "sandbox", "stripe"]);
    let stripe = server
        .get("/api/v1/marketplace/listings/stripe")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(stripe["name"], "Stripe");
    assert_eq!(stripe["installMethods"], json!(["with_api_key"]));
    assert_eq!(
        stripe["capabilities"][0],
        json!({"type": "collectPayments", "key": "stripe_collect_payment",
               "name": "Payment", "description": "Process payments"})
    );
    let page = server
        .get("/api/v1/marketplace/listings")
        .query("pageSize", "1")
        .query("page", "3")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(page["items"][0]["type"], "stripe", "{page}");
    assert_problem(
        &server.get("/api/v1/marketplace/listings/paypal").send(),
        400,
    );
}

// Sandbox is a singleton (409), custom invoicing installs with its hooks off, an app is
// read, replaced (type checked), and uninstalled unless a billing profile uses it.
#[test]
fn sandbox_and_custom_invoicing_apps() {
    let server = TestServer::start();
    let resp = server
        .post("/api/v1/marketplace/listings/sandbox/install")
        .json(&json!({}))
        .send();
    assert_problem(&resp, 409);
    let resp = server
        .post("/api/v1/marketplace/listings/stripe/install")
        .json(&json!({}))
        .send();
    assert_problem(&resp, 400);
    // A malformed body is a 400 and installs nothing (found by api_fuzz: it installed an app
    // with the defaults); an empty body is the defaults.
    for malformed in [json!({"name": 5}), json!([])] {
        let resp = server
            .post("/api/v1/marketplace/listings/custom_invoicing/install")
            .json(&malformed)
            .send();
        assert_problem(&resp, 400);
    }
    let apps = server.get("/api/v1/apps").send().expect_status(200).json();
    assert_eq!(apps["totalCount"], json!(1), "{apps}");
    let resp = server
        .post("/api/v1/marketplace/listings/sandbox/install")
        .send();
    assert_problem(&resp, 409);

    let installed = server
        .post("/api/v1/marketplace/listings/custom_invoicing/install")
        .json(&json!({"name": "Invoicer"}))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(installed["defaultForCapabilityTypes"], json!([]));
    let app = &installed["app"];
    let id = text(app, "id");
    assert_eq!(app["type"], "custom_invoicing");
    assert_eq!(app["name"], "Invoicer");
    assert_eq!(app["enableDraftSyncHook"], json!(false));
    assert_eq!(app["enableIssuingSyncHook"], json!(false));
    assert_eq!(app["listing"]["name"], "Custom Invoicing");

    let updated = server
        .put(&format!("/api/v1/apps/{id}"))
        .json(&json!({"type": "custom_invoicing", "name": "Renamed", "description": "d",
                      "metadata": {"a": "b"}, "enableDraftSyncHook": true, "enableIssuingSyncHook": false}))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(updated["name"], "Renamed");
    assert_eq!(updated["enableDraftSyncHook"], json!(true));
    assert_eq!(updated["metadata"], json!({"a": "b"}));
    assert_eq!(
        server
            .get(&format!("/api/v1/apps/{id}"))
            .send()
            .expect_status(200)
            .json(),
        updated
    );
    let resp = server
        .put(&format!("/api/v1/apps/{id}"))
        .json(&json!({"type": "sandbox", "name": "x"}))
        .send();
    assert_problem(&resp, 400);

    let page = server.get("/api/v1/apps").send().expect_status(200).json();
    assert_eq!(page["totalCount"], json!(2));
    let page = server
        .get("/api/v1/apps")
        .query("pageSize", "1")
        .query("page", "2")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(page["items"][0]["id"], json!(id), "{page}");

    // The sandbox is the default profile's app: it cannot be uninstalled.
    let sandbox_id = text(&server.get("/api/v1/apps").send().json()["items"][0], "id");
    assert_problem(
        &server.delete(&format!("/api/v1/apps/{sandbox_id}")).send(),
        409,
    );
    server
        .delete(&format!("/api/v1/apps/{id}"))
        .send()
        .expect_status(204);
    assert_problem(&server.get(&format!("/api/v1/apps/{id}")).send(), 404);
    assert_problem(&server.delete(&format!("/api/v1/apps/{id}")).send(), 404);
}

// Stripe install: the account is checked, the webhook endpoint is registered at the app's
// URL with the 12 events and OpenMeter's metadata, the key is masked, and a "Stripe Billing
// Profile" becomes the default (the old default invoiced with the sandbox). A bad key is
// a 401 and installs nothing.
#[test]
fn stripe_install_registers_the_webhook_and_masks_the_key() {
    let stripe = FakeStripe::start().expect("fake stripe");
    let server = with_stripe(&stripe);
    let key = stripe.api_key();

    let resp = install_stripe(&server, "sk_test_not_the_right_key_000");
    let detail = assert_problem(&resp, 401);
    assert!(detail.contains("provider authentication error"), "{detail}");
    assert!(stripe.state().webhook_endpoints.is_empty());

    let installed = install_stripe(&server, &key).expect_status(200).json();
    let app = &installed["app"];
    let id = text(app, "id");
    assert_eq!(app["type"], "stripe");
    assert_eq!(app["name"], "Stripe (test)");
    assert_eq!(app["status"], "ready");
    assert_eq!(app["livemode"], json!(false));
    let state = stripe.state();
    assert_eq!(app["stripeAccountId"], json!(state.account.id));
    let masked = format!("{}***{}", &key[..8], &key[key.len() - 3..]);
    assert_eq!(app["maskedAPIKey"], json!(masked));
    assert!(
        !installed.to_string().contains(&key),
        "the key leaked: {installed}"
    );
    assert_eq!(
        installed["defaultForCapabilityTypes"],
        json!(["calculateTax", "invoiceCustomers", "collectPayments"])
    );

    assert_eq!(state.webhook_endpoints.len(), 1);
    let endpoint = &state.webhook_endpoints[0];
    assert_eq!(
        endpoint.url,
        server.url(&format!("/api/v1/apps/{id}/stripe/webhook"))
    );
    let mut events = endpoint.enabled_events.clone();
    events.sort();
    let mut want: Vec<String> = EVENTS.iter().map(|e| (*e).to_owned()).collect();
    want.sort();
    assert_eq!(events, want);
    assert_eq!(endpoint.api_version.as_deref(), Some("2024-09-30.acacia"));
    assert_eq!(endpoint.metadata.get("om_app_id"), Some(&id));
    assert_eq!(
        endpoint.metadata.get("om_namespace").map(String::as_str),
        Some("default")
    );

    // The app as listed and read never carries the key either.
    let listed = server.get("/api/v1/apps").send().expect_status(200).json();
    assert_eq!(listed["totalCount"], json!(2));
    assert!(!listed.to_string().contains(&key));
    let read = server
        .get(&format!("/api/v1/apps/{id}"))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(read["maskedAPIKey"], json!(masked));

    // The new default profile invoices with Stripe; its supplier is the test account.
    let profiles = server
        .get("/api/v1/billing/profiles")
        .query("expand", "apps")
        .send()
        .expect_status(200)
        .json();
    let default = profiles["items"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["default"] == json!(true)).cloned())
        .unwrap_or_default();
    assert_eq!(default["name"], "Stripe Billing Profile", "{profiles}");
    assert_eq!(default["apps"]["invoicing"]["id"], json!(id));
    assert_eq!(default["supplier"]["name"], "Stripe Test Account");
    assert_no_violations(&stripe);
}

// Replacing the key: a live key for a test app is refused, a wrong key is a 401, the
// right one answers 204; uninstall (after freeing the default profile) deletes the
// webhook endpoint at Stripe.
#[test]
fn stripe_key_update_and_uninstall() {
    let stripe = FakeStripe::start().expect("fake stripe");
    let server = with_stripe(&stripe);
    let key = stripe.api_key();
    let id = text(
        &install_stripe(&server, &key).expect_status(200).json()["app"],
        "id",
    );
    let path = format!("/api/v1/apps/{id}/stripe/api-key");
    let resp = server
        .put(&path)
        .json(&json!({"secretAPIKey": "sk_live_0123456789abcdef"}))
        .send();
    assert!(assert_problem(&resp, 400).contains("livemode"));
    let resp = server
        .put(&path)
        .json(&json!({"secretAPIKey": "sk_test_0123456789abcdef"}))
        .send();
    assert_problem(&resp, 401);
    server
        .put(&path)
        .json(&json!({"secretAPIKey": key}))
        .send()
        .expect_status(204);
    // PUT /apps/{id} renames it (the key field is optional).
    let renamed = server
        .put(&format!("/api/v1/apps/{id}"))
        .json(&json!({"type": "stripe", "name": "Renamed"}))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(renamed["name"], "Renamed");
    assert_eq!(renamed["stripeAccountId"], json!(stripe.state().account.id));

    // In use by the Stripe billing profile (the default): 409 until another default
    // exists and the Stripe profile is deleted.
    assert_problem(&server.delete(&format!("/api/v1/apps/{id}")).send(), 409);
    let profiles = server
        .get("/api/v1/billing/profiles")
        .send()
        .expect_status(200)
        .json();
    let items = profiles["items"].as_array().cloned().unwrap_or_default();
    let find = |name: &str| {
        items
            .iter()
            .find(|p| p["name"] == json!(name))
            .cloned()
            .unwrap_or_default()
    };
    let sandbox_profile = find("openmeter-sandbox");
    let stripe_profile = find("Stripe Billing Profile");
    let mut promote = json!({"name": sandbox_profile["name"], "supplier": sandbox_profile["supplier"],
                             "workflow": sandbox_profile["workflow"], "default": true});
    server
        .put(&format!(
            "/api/v1/billing/profiles/{}",
            text(&sandbox_profile, "id")
        ))
        .json(&promote)
        .send()
        .expect_status(200);
    promote["default"] = json!(false);
    server
        .delete(&format!(
            "/api/v1/billing/profiles/{}",
            text(&stripe_profile, "id")
        ))
        .send()
        .expect_status(204);
    assert_eq!(stripe.state().webhook_endpoints.len(), 1);
    server
        .delete(&format!("/api/v1/apps/{id}"))
        .send()
        .expect_status(204);
    assert!(stripe.state().webhook_endpoints.is_empty());
    assert_problem(&server.get(&format!("/api/v1/apps/{id}")).send(), 404);
    assert_no_violations(&stripe);
}

// A customer's Stripe link: checked with Stripe (an unknown Stripe customer is refused),
// read back, listed with the app, replaced, unlinked; the portal session goes to Stripe;
// a customer of a sandbox profile has no Stripe app (412).
#[test]
fn customer_stripe_data_and_portal() {
    let stripe = FakeStripe::start().expect("fake stripe");
    let server = with_stripe(&stripe);
    let key = stripe.api_key();
    let customer = create_customer(&server, "acme");
    let customer_id = text(&customer, "id");
    let stripe_path = format!("/api/v1/customers/{customer_id}/stripe");

    // Still the sandbox profile: no Stripe app for the customer.
    assert_problem(&server.get(&stripe_path).send(), 412);
    let app_id = text(
        &install_stripe(&server, &key).expect_status(200).json()["app"],
        "id",
    );
    assert_problem(&server.get(&stripe_path).send(), 404);

    let resp = server
        .put(&stripe_path)
        .json(&json!({"stripeCustomerId": "cus_doesnotexist"}))
        .send();
    assert_problem(&resp, 412);
    let cus = stripe.create_customer("ACME", Some("acme@example.com"));
    let pm = stripe.create_payment_method(&cus).expect("payment method");
    let linked = server
        .put(&stripe_path)
        .json(&json!({"stripeCustomerId": cus, "stripeDefaultPaymentMethodId": pm}))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(linked["type"], "stripe");
    assert_eq!(linked["id"], json!(app_id));
    assert_eq!(linked["stripeCustomerId"], json!(cus));
    assert_eq!(linked["stripeDefaultPaymentMethodId"], json!(pm));
    assert_eq!(linked["app"]["id"], json!(app_id));
    assert_eq!(
        server.get(&stripe_path).send().expect_status(200).json(),
        linked
    );
    // By key too.
    assert_eq!(
        server
            .get("/api/v1/customers/acme/stripe")
            .send()
            .expect_status(200)
            .json()["stripeCustomerId"],
        json!(cus)
    );

    let apps_path = format!("/api/v1/customers/{customer_id}/apps");
    let page = server.get(&apps_path).send().expect_status(200).json();
    assert_eq!(page["totalCount"], json!(1));
    assert_eq!(page["items"][0]["stripeCustomerId"], json!(cus));
    let page = server
        .get(&apps_path)
        .query("type", "sandbox")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(page["totalCount"], json!(0));

    // PUT .../apps with a second Stripe customer (app resolved from the profile).
    let cus2 = stripe.create_customer("ACME 2", None);
    let put = server
        .put(&apps_path)
        .json(&json!([{"type": "stripe", "stripeCustomerId": cus2}]))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(put[0]["stripeCustomerId"], json!(cus2));
    assert_eq!(put[0]["id"], json!(app_id));

    // A malformed body is a 400 and never reaches Stripe (found by api_fuzz: a body of one
    // NUL byte created a session with the defaults).
    for malformed in ["\u{0}", "[]", ""] {
        let resp = server
            .post(&format!("{stripe_path}/portal"))
            .body("application/json", malformed)
            .send();
        assert_problem(&resp, 400);
    }

    // The portal session.
    let portal = server
        .post(&format!("{stripe_path}/portal"))
        .json(&json!({"returnUrl": "https://example.com/back", "locale": "en"}))
        .send()
        .expect_status(201)
        .json();
    assert_eq!(portal["stripeCustomerId"], json!(cus2));
    assert_eq!(portal["returnUrl"], "https://example.com/back");
    assert!(
        portal["url"].as_str().is_some_and(|u| !u.is_empty()),
        "{portal}"
    );
    assert_eq!(stripe.state().portal_sessions.len(), 1);

    // Unlink.
    server
        .delete(&format!("{apps_path}/{app_id}"))
        .send()
        .expect_status(204);
    assert_problem(&server.get(&stripe_path).send(), 404);
    assert_problem(&server.delete(&format!("{apps_path}/{app_id}")).send(), 404);
    assert_problem(&server.get("/api/v1/customers/nobody/stripe").send(), 404);
    assert_no_violations(&stripe);
}

// Checkout: a customer without a Stripe customer gets one created at Stripe (with
// OpenMeter's metadata), then a setup-mode session with the om_* setup intent metadata;
// a second checkout reuses the link; reserved metadata keys are refused.
#[test]
fn stripe_checkout_sessions() {
    let stripe = FakeStripe::start().expect("fake stripe");
    let server = with_stripe(&stripe);
    let key = stripe.api_key();
    let app_id = text(
        &install_stripe(&server, &key).expect_status(200).json()["app"],
        "id",
    );
    let customer = create_customer(&server, "buyer");
    let customer_id = text(&customer, "id");

    let session = server
        .post("/api/v1/stripe/checkout/sessions")
        .json(&json!({"customer": {"key": "buyer"},
                      "options": {"successURL": "https://example.com/ok", "metadata": {"plan": "pro"}}}))
        .send()
        .expect_status(201)
        .json();
    assert_eq!(session["customerId"], json!(customer_id));
    assert_eq!(session["mode"], "setup");
    assert!(
        text(&session, "setupIntentId").starts_with("seti_"),
        "{session}"
    );
    assert!(text(&session, "sessionId").starts_with("cs_"), "{session}");
    // No field is nullable in the v1 schema: what the session lacks (no cancel or return
    // URL here) is omitted, not null.
    let fields = session.as_object().cloned().unwrap_or_default();
    assert!(fields.values().all(|v| !v.is_null()), "{session}");
    assert!(!fields.contains_key("cancelURL"), "{session}");
    assert!(!fields.contains_key("returnURL"), "{session}");
    let cus = text(&session, "stripeCustomerId");
    let state = stripe.state();
    let created = state
        .customers
        .iter()
        .find(|c| c.id == cus)
        .unwrap_or_else(|| panic!("no Stripe customer {cus}"));
    assert_eq!(created.name.as_deref(), Some("Customer buyer"));
    assert_eq!(created.email.as_deref(), Some("buyer@example.com"));
    assert_eq!(created.metadata.get("om_customer_id"), Some(&customer_id));
    assert_eq!(state.checkout_sessions.len(), 1);
    assert_eq!(state.checkout_sessions[0]["customer"], json!(cus));
    let request = state
        .requests
        .iter()
        .find(|r| r.method == "POST" && r.path == "/v1/checkout/sessions")
        .unwrap_or_else(|| panic!("no checkout request"));
    let param = |name: &str| {
        request
            .params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(param("mode").as_deref(), Some("setup"));
    assert_eq!(param("currency").as_deref(), Some("usd"));
    assert_eq!(
        param("success_url").as_deref(),
        Some("https://example.com/ok")
    );
    for (k, v) in [
        ("om_app_id", app_id.as_str()),
        ("om_customer_id", customer_id.as_str()),
        ("om_namespace", "default"),
        ("plan", "pro"),
    ] {
        assert_eq!(
            param(&format!("setup_intent_data[metadata][{k}]")).as_deref(),
            Some(v),
            "{:?}",
            request.params
        );
    }
    // The link is stored: the customer's Stripe data names the new Stripe customer.
    let linked = server
        .get(&format!("/api/v1/customers/{customer_id}/stripe"))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(linked["stripeCustomerId"], json!(cus));

    // Again by id with an explicit app: no second Stripe customer.
    server
        .post("/api/v1/stripe/checkout/sessions")
        .json(&json!({"appId": app_id, "customer": {"id": customer_id},
                      "options": {"successURL": "https://example.com/ok"}}))
        .send()
        .expect_status(201);
    assert_eq!(stripe.state().customers.len(), 1);
    assert_eq!(stripe.state().checkout_sessions.len(), 2);

    let resp = server
        .post("/api/v1/stripe/checkout/sessions")
        .json(
            &json!({"customer": {"id": customer_id}, "options": {"metadata": {"om_app_id": "x"}}}),
        )
        .send();
    assert_problem(&resp, 400);
    let resp = server
        .post("/api/v1/stripe/checkout/sessions")
        .json(&json!({"customer": {"key": "nobody"}, "options": {}}))
        .send();
    assert_problem(&resp, 404);
    assert_no_violations(&stripe);
}
