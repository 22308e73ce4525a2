use crate::support::{Client, draft_with_items};
use metron_fake_stripe::{FakeStripe, InvoiceStatus};

/// Draft with items → lines with il_ IDs → finalize (number, payment intent) → frozen → paid.
#[test]
fn a_draft_is_filled_finalized_and_paid() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let (customer, invoice) = draft_with_items(&fake, &client, &[7725, 1000, -500]);
    let draft = client.get(&format!("/v1/invoices/{invoice}")).unwrap().json;
    assert_eq!(draft["currency"], "usd");
    assert_eq!(draft["status"], "draft");
    assert!(draft["number"].is_null());
    assert_eq!(
        (
            draft["subtotal"].as_i64(),
            draft["total"].as_i64(),
            draft["amount_due"].as_i64()
        ),
        (Some(8225), Some(8225), Some(8225))
    );
    let lines = client
        .get(&format!("/v1/invoices/{invoice}/lines"))
        .unwrap()
        .json;
    let line = &lines["data"][0];
    assert!(line["id"].as_str().unwrap().starts_with("il_"));
    assert!(line["invoice_item"].as_str().unwrap().starts_with("ii_"));
    assert_eq!(line["object"], "line_item");
    assert_eq!(line["metadata"]["om_line_type"], "line");

    let ii = line["invoice_item"].as_str().unwrap();
    client.ok(
        &format!("/v1/invoiceitems/{ii}"),
        &[("amount", "8000"), ("description", "changed")],
    );
    let deleted = client
        .delete(&format!(
            "/v1/invoiceitems/{}",
            lines["data"][2]["invoice_item"].as_str().unwrap()
        ))
        .unwrap();
    assert_eq!(deleted.json["deleted"], true);
    assert_eq!(
        client.get(&format!("/v1/invoices/{invoice}")).unwrap().json["total"],
        9000
    );

    let open = client.ok(
        &format!("/v1/invoices/{invoice}/finalize"),
        &[("auto_advance", "true")],
    );
    assert_eq!(open["status"], "open");
    let prefix = fake
        .state()
        .customer(&customer)
        .unwrap()
        .invoice_prefix
        .clone();
    assert_eq!(open["number"], format!("{prefix}-0001"));
    assert!(open["payment_intent"].as_str().unwrap().starts_with("pi_"));

    let frozen = client
        .post(
            "/v1/invoiceitems",
            &[
                ("customer", &customer),
                ("invoice", &invoice),
                ("amount", "1"),
            ],
            None,
        )
        .unwrap();
    assert_eq!(frozen.code(), Some("invoice_not_editable"));
    let item_change = client
        .post(&format!("/v1/invoiceitems/{ii}"), &[("amount", "1")], None)
        .unwrap();
    assert_eq!(item_change.code(), Some("invoice_not_editable"));
    assert_eq!(
        client
            .delete(&format!("/v1/invoices/{invoice}"))
            .unwrap()
            .status,
        400
    );
    assert_eq!(
        client.ok(
            &format!("/v1/invoices/{invoice}"),
            &[("metadata[note]", "ok")]
        )["metadata"]["note"],
        "ok"
    );

    let paid = fake.pay_invoice(&invoice).unwrap();
    assert_eq!(
        (
            paid["status"].as_str(),
            paid["amount_paid"].as_i64(),
            paid["amount_remaining"].as_i64()
        ),
        (Some("paid"), Some(9000), Some(0))
    );
    assert!(fake.void_invoice(&invoice).is_err());
    let kinds: Vec<String> = fake.state().events.iter().map(|e| e.kind.clone()).collect();
    for kind in [
        "invoice.created",
        "invoiceitem.created",
        "invoiceitem.deleted",
        "invoice.finalized",
        "invoice.updated",
        "invoice.paid",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing from {kinds:?}"
        );
    }
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn a_zero_total_invoice_is_paid_at_finalize() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let (_, invoice) = draft_with_items(&fake, &client, &[]);
    let finalized = client.ok(&format!("/v1/invoices/{invoice}/finalize"), &[]);
    assert_eq!(finalized["status"], "paid");
    assert!(finalized["payment_intent"].is_null());
}

#[test]
fn open_invoices_void_uncollectible_and_numbers_count_up() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let (customer, first) = draft_with_items(&fake, &client, &[100]);
    client.ok(&format!("/v1/invoices/{first}/finalize"), &[]);
    client.ok(&format!("/v1/invoices/{first}/mark_uncollectible"), &[]);
    assert_eq!(
        fake.state().invoice(&first).unwrap().status,
        InvoiceStatus::Uncollectible
    );
    client.ok(&format!("/v1/invoices/{first}/void"), &[]);
    assert_eq!(
        fake.state().invoice(&first).unwrap().status,
        InvoiceStatus::Void
    );

    let second = client.ok(
        "/v1/invoices",
        &[
            ("customer", &customer),
            ("currency", "usd"),
            ("collection_method", "send_invoice"),
            ("days_until_due", "14"),
        ],
    );
    let second = second["id"].as_str().unwrap();
    client.ok(
        "/v1/invoiceitems",
        &[
            ("customer", &customer),
            ("invoice", second),
            ("amount", "5"),
        ],
    );
    let open = client.ok(&format!("/v1/invoices/{second}/finalize"), &[]);
    assert!(open["number"].as_str().unwrap().ends_with("-0002"));
    assert!(open["due_date"].as_i64().is_some());
    client.ok(&format!("/v1/invoices/{second}/send"), &[]);
    fake.fail_payment(second).unwrap();
    fake.require_action(second).unwrap();
    fake.mark_overdue(second).unwrap();
    assert_eq!(fake.state().invoice(second).unwrap().attempt_count, 2);
    let paid = client.ok(
        &format!("/v1/invoices/{second}/pay"),
        &[("paid_out_of_band", "true")],
    );
    assert_eq!(paid["paid_out_of_band"], true);
    let kinds: Vec<String> = fake.state().events.iter().map(|e| e.kind.clone()).collect();
    for kind in [
        "invoice.marked_uncollectible",
        "invoice.voided",
        "invoice.sent",
        "invoice.payment_failed",
        "invoice.payment_action_required",
        "invoice.overdue",
        "invoice.paid",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing");
    }
}

#[test]
fn only_drafts_can_be_deleted() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let (_, invoice) = draft_with_items(&fake, &client, &[100]);
    let deleted = client.delete(&format!("/v1/invoices/{invoice}")).unwrap();
    assert_eq!(deleted.json["deleted"], true);
    assert_eq!(
        client
            .get(&format!("/v1/invoices/{invoice}"))
            .unwrap()
            .code(),
        Some("resource_missing")
    );
    assert!(fake.state().invoice_items.is_empty());
}

/// Automatic tax without a customer location: finalize fails with `customer_tax_location_invalid`.
#[test]
fn automatic_tax_without_a_location_fails_finalization() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let customer = client.ok("/v1/customers", &[("name", "Nowhere")])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let invoice = client.ok(
        "/v1/invoices",
        &[("customer", &customer), ("automatic_tax[enabled]", "true")],
    );
    let invoice = invoice["id"].as_str().unwrap();
    let failed = client
        .post(&format!("/v1/invoices/{invoice}/finalize"), &[], None)
        .unwrap();
    assert_eq!(
        (failed.status, failed.code()),
        (400, Some("customer_tax_location_invalid"))
    );
    let got = client.get(&format!("/v1/invoices/{invoice}")).unwrap().json;
    assert_eq!(
        got["last_finalization_error"]["code"],
        "customer_tax_location_invalid"
    );
    assert_eq!(got["automatic_tax"]["status"], "requires_location_inputs");
    client.ok(
        &format!("/v1/invoices/{invoice}"),
        &[("automatic_tax[enabled]", "false")],
    );
    assert_eq!(
        client.ok(&format!("/v1/invoices/{invoice}/finalize"), &[])["status"],
        "paid"
    );
}

#[test]
fn customers_expand_the_default_payment_method_and_tax() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let customer = fake.create_customer("A", Some("a@b.c"));
    let pm = fake.create_payment_method(&customer).unwrap();
    let got = client.get(&format!("/v1/customers/{customer}?expand[0]=invoice_settings.default_payment_method&expand[1]=tax")).unwrap().json;
    assert_eq!(got["invoice_settings"]["default_payment_method"]["id"], pm);
    assert_eq!(
        got["invoice_settings"]["default_payment_method"]["billing_details"]["address"]["country"],
        "US"
    );
    assert_eq!(got["tax"]["automatic_tax"], "supported");
    let plain = client
        .get(&format!("/v1/customers/{customer}"))
        .unwrap()
        .json;
    assert_eq!(plain["invoice_settings"]["default_payment_method"], pm);
    assert!(plain.get("tax").is_none());
    assert_eq!(
        client
            .get(&format!("/v1/payment_methods/{pm}"))
            .unwrap()
            .json["customer"],
        customer
    );
    let checkout = client.ok(
        "/v1/checkout/sessions",
        &[
            ("mode", "setup"),
            ("customer", &customer),
            ("success_url", "http://x/ok"),
            ("setup_intent_data[metadata][om_app_id]", "app"),
        ],
    );
    assert!(
        checkout["setup_intent"]
            .as_str()
            .unwrap()
            .starts_with("seti_")
    );
    let portal = client.ok(
        "/v1/billing_portal/sessions",
        &[("customer", &customer), ("return_url", "http://x")],
    );
    assert!(portal["id"].as_str().unwrap().starts_with("bps_"));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn pending_items_join_an_invoice_that_includes_them() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let customer = fake.create_customer("A", None);
    let item = client.ok(
        "/v1/invoiceitems",
        &[
            ("customer", &customer),
            ("amount", "250"),
            ("currency", "EUR"),
        ],
    );
    assert!(item["invoice"].is_null());
    assert_eq!(item["currency"], "eur");
    let pending = client
        .get(&format!(
            "/v1/invoiceitems?customer={customer}&pending=true"
        ))
        .unwrap()
        .json;
    assert_eq!(pending["data"].as_array().unwrap().len(), 1);
    let excluded = client.ok(
        "/v1/invoices",
        &[("customer", &customer), ("currency", "eur")],
    );
    assert_eq!(excluded["total"], 0);
    let included = client.ok(
        "/v1/invoices",
        &[
            ("customer", &customer),
            ("currency", "eur"),
            ("pending_invoice_items_behavior", "include"),
        ],
    );
    assert_eq!(included["total"], 250);
    assert!(
        included["lines"]["data"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("il_")
    );
}

/// "Stripe automatically finalizes drafts before sending and attempting payment."
#[test]
fn paying_a_draft_finalizes_it_first() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let (_, invoice) = draft_with_items(&fake, &client, &[100]);
    let paid = client.ok(&format!("/v1/invoices/{invoice}/pay"), &[]);
    assert_eq!(paid["status"], "paid");
    assert!(paid["number"].as_str().is_some());
    let kinds: Vec<String> = fake.state().events.iter().map(|e| e.kind.clone()).collect();
    let finalized = kinds.iter().position(|k| k == "invoice.finalized").unwrap();
    assert!(finalized < kinds.iter().position(|k| k == "invoice.paid").unwrap());
}
