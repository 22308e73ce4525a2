use crate::support::{Client, draft_with_items};
use metron_fake_stripe::FakeStripe;
use metron_fake_stripe::spec::spec;
use serde_json::Value;

fn assert_shape(name: &str, object: &Value) {
    let problems = spec().shape_problems(name, object);
    assert!(problems.is_empty(), "{problems:?}");
}

/// Every answer's fields exist in Stripe's schema for that object (plus the acacia
/// allow-list), and none the schema requires is missing.
#[test]
fn answers_have_the_spec_shapes() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let (customer, invoice) = draft_with_items(&fake, &client, &[100]);
    let pm = fake
        .state()
        .customer(&customer)
        .unwrap()
        .default_payment_method
        .clone()
        .unwrap();
    assert_shape("account", &client.get("/v1/account").unwrap().json);
    let expanded = format!(
        "/v1/customers/{customer}?expand[]=tax&expand[]=invoice_settings.default_payment_method"
    );
    assert_shape("customer", &client.get(&expanded).unwrap().json);
    assert_shape(
        "payment_method",
        &client
            .get(&format!("/v1/payment_methods/{pm}"))
            .unwrap()
            .json,
    );
    let draft = client.get(&format!("/v1/invoices/{invoice}")).unwrap().json;
    assert_shape("invoice", &draft);
    assert_shape("line_item", &draft["lines"]["data"][0]);
    let item = client.ok(
        "/v1/invoiceitems",
        &[("customer", &customer), ("amount", "5")],
    );
    assert_shape("invoiceitem", &item);
    assert_shape(
        "invoice",
        &client.ok(&format!("/v1/invoices/{invoice}/finalize"), &[]),
    );
    let endpoint = client.ok(
        "/v1/webhook_endpoints",
        &[("url", "http://127.0.0.1:9/x"), ("enabled_events[]", "*")],
    );
    assert_shape("webhook_endpoint", &endpoint);
    let deleted = client
        .delete(&format!(
            "/v1/webhook_endpoints/{}",
            endpoint["id"].as_str().unwrap()
        ))
        .unwrap()
        .json;
    assert_shape("deleted_webhook_endpoint", &deleted);
    let checkout = client.ok(
        "/v1/checkout/sessions",
        &[
            ("mode", "setup"),
            ("customer", &customer),
            ("success_url", "http://x"),
        ],
    );
    assert_shape("checkout.session", &checkout);
    let portal = client.ok("/v1/billing_portal/sessions", &[("customer", &customer)]);
    assert_shape("billing_portal.session", &portal);
    let ii = item["id"].as_str().unwrap();
    assert_shape(
        "deleted_invoiceitem",
        &client
            .delete(&format!("/v1/invoiceitems/{ii}"))
            .unwrap()
            .json,
    );
    let (_, other) = draft_with_items(&fake, &client, &[1]);
    assert_shape(
        "deleted_invoice",
        &client
            .delete(&format!("/v1/invoices/{other}"))
            .unwrap()
            .json,
    );
}

#[test]
fn a_wrong_shape_is_reported() {
    let problems = spec().shape_problems(
        "invoiceitem",
        &serde_json::json!({"id": "ii_1", "bogus": 1}),
    );
    assert!(problems.iter().any(|p| p.contains("bogus")));
    assert!(problems.iter().any(|p| p.contains("amount is required")));
}
