//! Acacia responses decode with nulls, unknown fields and expansions; requests form the
//! contract's keys (§1.4, §1.5).

use super::*;

fn pairs(form: &Form) -> Vec<(String, String)> {
    form.pairs()
}

fn owned(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn an_acacia_invoice_decodes_with_nulls_unknown_fields_and_an_expanded_payment_intent() {
    let json = r#"{
      "id": "in_1", "object": "invoice", "customer": "cus_1", "currency": "usd", "status": "open",
      "number": "A1B2C3D4-0001", "auto_advance": true, "collection_method": "send_invoice",
      "days_until_due": 30, "due_date": 1700086400, "default_payment_method": null,
      "automatic_tax": {"enabled": true, "status": "complete", "liability": {"type": "self"}},
      "amount_due": 8000, "amount_paid": 0, "amount_remaining": 8000, "subtotal": 7725,
      "subtotal_excluding_tax": 7725, "tax": 275, "total": 8000, "total_excluding_tax": 7725,
      "payment_intent": {"id": "pi_1", "object": "payment_intent", "status": "requires_payment_method", "amount": 8000},
      "last_finalization_error": null, "description": null, "metadata": null,
      "lines": {"object": "list", "data": [], "has_more": false, "url": "/v1/invoices/in_1/lines"},
      "status_transitions": {"finalized_at": 1700000000, "paid_at": null},
      "rendering": {"template": null}, "issuer": {"type": "self"}, "livemode": false
    }"#;
    let invoice: Invoice = serde_json::from_str(json).expect("decodes");
    assert_eq!(invoice.id, "in_1");
    assert_eq!(invoice.status, InvoiceStatus::Open);
    assert_eq!(invoice.collection_method, CollectionMethod::SendInvoice);
    assert_eq!(
        (invoice.subtotal, invoice.tax, invoice.total),
        (7725, Some(275), 8000)
    );
    assert!(invoice.automatic_tax.enabled);
    assert!(invoice.metadata.is_empty());
    assert_eq!(invoice.number.as_deref(), Some("A1B2C3D4-0001"));
    assert_eq!(
        invoice.payment_intent.as_ref().map(|p| p.id()),
        Some("pi_1")
    );
    assert_eq!(invoice.status_transitions.finalized_at, Some(1_700_000_000));

    let draft: Invoice = serde_json::from_str(
        r#"{"id":"in_2","status":"draft","number":null,"payment_intent":"pi_2","collection_method":null}"#,
    )
    .expect("decodes");
    assert_eq!(draft.status, InvoiceStatus::Draft);
    assert_eq!(
        draft.collection_method,
        CollectionMethod::ChargeAutomatically
    );
    assert_eq!(
        draft.payment_intent,
        Some(Expandable::Id("pi_2".to_owned()))
    );
}

#[test]
fn a_customer_decodes_with_its_expanded_payment_method_and_tax() {
    let json = r#"{
      "id": "cus_1", "object": "customer", "email": "a@b.c", "currency": null, "balance": 0,
      "invoice_settings": {"custom_fields": null, "footer": null, "default_payment_method": {
        "id": "pm_1", "object": "payment_method", "customer": "cus_1", "type": "card", "created": 1,
        "billing_details": {"address": {"country": "DE", "city": null}, "email": null, "name": "A", "phone": null}
      }},
      "tax": {"automatic_tax": "supported", "ip_address": null, "location": {"country": "DE", "source": "billing_address", "state": null}},
      "metadata": {"om_customer_id": "c1"}
    }"#;
    let customer: Customer = serde_json::from_str(json).expect("decodes");
    let pm = customer
        .invoice_settings
        .default_payment_method
        .expect("has a PM");
    assert_eq!(pm.id(), "pm_1");
    let address = pm.object().and_then(|p| p.billing_details.address.clone());
    assert_eq!(address.and_then(|a| a.country).as_deref(), Some("DE"));
    assert_eq!(
        customer.tax.map(|t| t.automatic_tax).as_deref(),
        Some("supported")
    );
    assert_eq!(
        customer.metadata.get("om_customer_id").map(String::as_str),
        Some("c1")
    );

    let plain: Customer = serde_json::from_str(
        r#"{"id":"cus_2","invoice_settings":{"default_payment_method":"pm_9"}}"#,
    )
    .expect("decodes");
    let pm = plain
        .invoice_settings
        .default_payment_method
        .expect("has a PM");
    assert_eq!((pm.id(), pm.object().is_none()), ("pm_9", true));
}

#[test]
fn a_line_list_decodes_the_invoice_item_and_metadata_of_each_line() {
    let json = r#"{"object":"list","has_more":true,"url":"/v1/invoices/in_1/lines","data":[
      {"id":"il_1","object":"line_item","type":"invoiceitem","invoice_item":"ii_1","amount":-150,
       "currency":"usd","description":"d","metadata":{"om_line_id":"l1","om_line_type":"discount"},
       "period":{"start":1,"end":2},"price":{"id":"price_1","tax_behavior":"inclusive","unit_amount":-150},
       "tax_amounts":[],"discount_amounts":null}]}"#;
    let page: List<LineItem> = serde_json::from_str(json).expect("decodes");
    assert!(page.has_more);
    let line = &page.data[0];
    assert_eq!(
        (line.id.as_str(), line.invoice_item.as_deref(), line.amount),
        ("il_1", Some("ii_1"), -150)
    );
    assert_eq!(line.period, Period { start: 1, end: 2 });
    assert_eq!(
        line.metadata.get("om_line_type").map(String::as_str),
        Some("discount")
    );
    assert_eq!(
        line.price.as_ref().and_then(|p| p.tax_behavior.as_deref()),
        Some("inclusive")
    );
}

#[test]
fn an_invoice_item_forms_the_contract_keys() {
    let item = InvoiceItemCreate {
        customer: "cus_1".to_owned(),
        invoice: Some("in_1".to_owned()),
        amount: 7725,
        currency: Some("usd".to_owned()),
        description: Some("UBP - AI Usecase: usage in period (103,000,025 x $0.000001)".to_owned()),
        period: Period {
            start: 1_700_000_000,
            end: 1_702_592_000,
        },
        metadata: [("om_line_id", "01J0"), ("om_line_type", "line")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        tax_behavior: Some(TaxBehavior::Inclusive),
        tax_code: Some("txcd_10000000".to_owned()),
    };
    let expected = [
        ("customer", "cus_1"),
        ("invoice", "in_1"),
        ("amount", "7725"),
        ("currency", "usd"),
        (
            "description",
            "UBP - AI Usecase: usage in period (103,000,025 x $0.000001)",
        ),
        ("period[start]", "1700000000"),
        ("period[end]", "1702592000"),
        ("metadata[om_line_id]", "01J0"),
        ("metadata[om_line_type]", "line"),
        ("tax_behavior", "inclusive"),
        ("tax_code", "txcd_10000000"),
    ];
    assert_eq!(pairs(&item.to_form()), owned(&expected));
    // An update never sends customer, currency or invoice, and only what is set.
    let update = InvoiceItemUpdate {
        amount: Some(-5),
        ..InvoiceItemUpdate::default()
    };
    assert_eq!(pairs(&update.to_form()), owned(&[("amount", "-5")]));
}

#[test]
fn an_invoice_create_forms_the_contract_keys() {
    let invoice = InvoiceCreate {
        customer: "cus_1".to_owned(),
        currency: "usd".to_owned(),
        auto_advance: false,
        collection_method: CollectionMethod::SendInvoice,
        days_until_due: Some(14),
        automatic_tax: true,
        metadata: [("om_invoice_id", "inv1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        ..InvoiceCreate::default()
    };
    let expected = [
        ("customer", "cus_1"),
        ("currency", "usd"),
        ("auto_advance", "false"),
        ("collection_method", "send_invoice"),
        ("days_until_due", "14"),
        ("automatic_tax[enabled]", "true"),
        ("metadata[om_invoice_id]", "inv1"),
    ];
    assert_eq!(pairs(&invoice.to_form()), owned(&expected));
    assert!(InvoiceUpdate::default().is_empty());
    let update = InvoiceUpdate {
        automatic_tax: Some(false),
        ..InvoiceUpdate::default()
    };
    assert_eq!(
        pairs(&update.to_form()),
        owned(&[("automatic_tax[enabled]", "false")])
    );
}

#[test]
fn a_webhook_endpoint_and_a_checkout_session_form_their_keys() {
    let endpoint = WebhookEndpointCreate {
        url: "https://m.example/api/v1/apps/a1/stripe/webhook".to_owned(),
        enabled_events: vec!["invoice.paid".to_owned(), "invoice.voided".to_owned()],
        api_version: Some("2024-09-30.acacia".to_owned()),
        description: None,
        metadata: [("om_app_id", "a1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    };
    let expected = [
        ("url", "https://m.example/api/v1/apps/a1/stripe/webhook"),
        ("enabled_events[0]", "invoice.paid"),
        ("enabled_events[1]", "invoice.voided"),
        ("api_version", "2024-09-30.acacia"),
        ("metadata[om_app_id]", "a1"),
    ];
    assert_eq!(pairs(&endpoint.to_form()), owned(&expected));

    let session = CheckoutSessionCreate {
        customer: "cus_1".to_owned(),
        setup_intent_metadata: [("om_app_id", "a1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        customer_update_address: Some("auto".to_owned()),
        consent_payment_method_reuse_agreement_position: Some("hidden".to_owned()),
        custom_text_submit: Some("Save".to_owned()),
        tax_id_collection_enabled: Some(true),
        payment_method_types: vec!["card".to_owned()],
        ..CheckoutSessionCreate::default()
    };
    let expected = [
        ("mode", "setup"),
        ("customer", "cus_1"),
        ("setup_intent_data[metadata][om_app_id]", "a1"),
        ("customer_update[address]", "auto"),
        (
            "consent_collection[payment_method_reuse_agreement][position]",
            "hidden",
        ),
        ("custom_text[submit][message]", "Save"),
        ("payment_method_types[0]", "card"),
        ("tax_id_collection[enabled]", "true"),
    ];
    assert_eq!(pairs(&session.to_form()), owned(&expected));
}
