use metron_fake_stripe::FakeStripe;
use serde_json::{Value, json};

fn post(url: &str, body: Value) -> (u16, Value) {
    let mut response = ureq::post(url)
        .config()
        .http_status_as_error(false)
        .build()
        .send_json(body)
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The `/_test` API does what the library handle does, for shell demos.
#[test]
fn the_control_api_seeds_drives_and_injects() {
    let fake = FakeStripe::start().unwrap();
    let base = fake.base_url();
    let (status, customer) = post(
        &format!("{base}/_test/customers"),
        json!({"name": "ACME", "email": "a@b.c"}),
    );
    assert_eq!(status, 200);
    let customer = customer["id"].as_str().unwrap().to_owned();
    let (status, pm) = post(
        &format!("{base}/_test/customers/{customer}/payment_methods"),
        json!({}),
    );
    assert_eq!(status, 200);
    assert!(pm["id"].as_str().unwrap().starts_with("pm_"));

    let client = crate::support::Client::new(&fake);
    let invoice = client.ok("/v1/invoices", &[("customer", &customer)])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    client.ok(
        "/v1/invoiceitems",
        &[
            ("customer", &customer),
            ("invoice", &invoice),
            ("amount", "10"),
        ],
    );
    assert_eq!(
        post(
            &format!("{base}/_test/invoices/{invoice}/finalize"),
            json!({})
        )
        .1["status"],
        "open"
    );
    assert_eq!(
        post(&format!("{base}/_test/invoices/{invoice}/pay"), json!({})).1["status"],
        "paid"
    );
    assert_eq!(
        post(&format!("{base}/_test/invoices/{invoice}/void"), json!({})).0,
        400
    );

    let rule = json!({"method": "GET", "path_prefix": "/v1/account", "fault": "Status500"});
    assert_eq!(post(&format!("{base}/_test/faults"), rule).0, 204);
    assert_eq!(client.get("/v1/account").unwrap().status, 500);
    assert_eq!(client.get("/v1/account").unwrap().status, 200);

    let state: Value = ureq::get(format!("{base}/_test/state"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(state["invoices"][0]["status"], "paid");
    let config: Value = ureq::get(format!("{base}/_test/config"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(config["api_key"], fake.api_key());
}
