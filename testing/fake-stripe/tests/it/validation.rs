use crate::support::Client;
use base64::Engine as _;
use metron_fake_stripe::FakeStripe;

type Form<'a> = &'a [(&'a str, &'a str)];

#[test]
fn unknown_missing_and_ill_typed_parameters_are_400_and_violations() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let customer = fake.create_customer("A", None);
    let cases: [(Form<'_>, &str, &str); 4] = [
        (
            &[("customer", &customer), ("amount", "1"), ("quantityy", "2")],
            "parameter_unknown",
            "quantityy",
        ),
        (&[("amount", "1")], "parameter_missing", "customer"),
        (
            &[("customer", &customer), ("amount", "1.5")],
            "parameter_invalid_integer",
            "amount",
        ),
        (
            &[
                ("customer", &customer),
                ("amount", "1"),
                ("period[start]", "1"),
            ],
            "parameter_missing",
            "period[end]",
        ),
    ];
    for (form, code, param) in cases {
        let reply = client.post("/v1/invoiceitems", form, None).unwrap();
        assert_eq!(reply.status, 400);
        assert_eq!(reply.code(), Some(code), "{}", reply.json);
        assert_eq!(reply.json["error"]["param"], param);
    }
    assert_eq!(fake.violations().len(), 4);
    assert!(fake.state().invoice_items.is_empty());
}

#[test]
fn contract_rules_beyond_the_spec_are_enforced() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let customer = fake.create_customer("A", None);
    let send = client
        .post(
            "/v1/invoices",
            &[
                ("customer", &customer),
                ("collection_method", "send_invoice"),
            ],
            None,
        )
        .unwrap();
    assert_eq!(
        (send.code(), send.json["error"]["param"].as_str()),
        (Some("parameter_missing"), Some("days_until_due"))
    );
    let no_customer = client
        .post("/v1/invoices", &[("currency", "usd")], None)
        .unwrap();
    assert_eq!(no_customer.code(), Some("parameter_missing"));
    assert_eq!(fake.violations().len(), 2);
}

#[test]
fn a_good_request_leaves_no_violation_and_echoes_headers() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let reply = client.get("/v1/account").unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.json["id"].as_str().unwrap().starts_with("acct_"));
    assert!(reply.header("request-id").unwrap().starts_with("req_"));
    assert_eq!(reply.header("stripe-version"), Some("2024-09-30.acacia"));
    assert!(fake.violations().is_empty());
}

#[test]
fn a_wrong_key_is_401_and_basic_auth_works() {
    let fake = FakeStripe::start().unwrap();
    let wrong = Client::new(&fake)
        .with_key("sk_test_wrong")
        .get("/v1/account")
        .unwrap();
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json["error"]["type"], "invalid_request_error");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:", fake.api_key()));
    let response = ureq::get(format!("{}/v1/account", fake.base_url()))
        .header("Authorization", format!("Basic {basic}"))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[test]
fn an_unknown_path_is_404_and_a_violation() {
    let fake = FakeStripe::start().unwrap();
    let reply = Client::new(&fake)
        .post("/v1/invoices/in_1/add_lines", &[], None)
        .unwrap();
    assert_eq!(reply.status, 404);
    assert_eq!(fake.violations().len(), 1);
}

/// OpenMeter's bug: mutating an invoice item by its line (il_) ID. Stripe says 404.
#[test]
fn invoice_items_cannot_be_addressed_by_line_id() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let (_, invoice) = crate::support::draft_with_items(&fake, &client, &[100]);
    let line = client
        .get(&format!("/v1/invoices/{invoice}/lines"))
        .unwrap()
        .json["data"][0]
        .clone();
    let il = line["id"].as_str().unwrap();
    let update = client
        .post(&format!("/v1/invoiceitems/{il}"), &[("amount", "5")], None)
        .unwrap();
    assert_eq!(
        (update.status, update.code()),
        (404, Some("resource_missing"))
    );
    let delete = client.delete(&format!("/v1/invoiceitems/{il}")).unwrap();
    assert_eq!(
        (delete.status, delete.code()),
        (404, Some("resource_missing"))
    );
    let ii = line["invoice_item"].as_str().unwrap();
    assert_eq!(
        client
            .post(&format!("/v1/invoiceitems/{ii}"), &[("amount", "5")], None)
            .unwrap()
            .status,
        200
    );
}

#[test]
fn a_malformed_stripe_version_is_400() {
    let fake = FakeStripe::start().unwrap();
    let response = ureq::get(format!("{}/v1/account", fake.base_url()))
        .header("Authorization", format!("Bearer {}", fake.api_key()))
        .header("Stripe-Version", "acacia")
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(fake.violations().len(), 1);
}
