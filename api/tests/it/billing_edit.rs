//! Replacing an invoice (`PUT /api/v1/billing/invoices/{invoiceId}`), against the real
//! binary: manual lines become a draft that waits for approval (a billing profile without
//! auto-advance), then the draft is sent back edited. Edited lines are recalculated (usage is
//! measured again over the new period; totals worked out by hand, to the cent), lines left
//! out are deleted, lines without an id are created, the workflow settings take effect, an
//! invoice past its drafts is refused with OpenMeter's error, and a draft already in Stripe
//! is synced again with the new amount.

use crate::server::*;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use metron_fake_stripe::FakeStripe;
use serde_json::{Value, json};
use std::time::Duration;

const METERS: &str = r#"
meters:
  - slug: tokens
    eventType: tokens
    aggregation: SUM
    valueProperty: $.tokens
"#;

/// The start of the current hour: line periods on whole hours.
fn hour() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(TimeDelta::hours(1))
        .unwrap_or_else(|_| Utc::now())
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

/// A manual line from `from` to `to`, invoiced at its end.
fn line(name: &str, from: DateTime<Utc>, to: DateTime<Utc>, price: Value) -> Value {
    json!({"name": name, "period": {"from": at(from), "to": at(to)}, "invoiceAt": at(to),
           "rateCard": {"price": price}})
}

fn flat(amount: &str) -> Value {
    json!({"type": "flat", "amount": amount, "paymentTerm": "in_arrears"})
}

fn unit(amount: &str) -> Value {
    json!({"type": "unit", "amount": amount})
}

/// The customer `acme` (subject `acme`), the `tokens` feature, and a default profile on
/// `app` (the sandbox when `None`) that waits for approval.
fn setup(server: &TestServer, app: Option<&str>) {
    server
        .post("/api/v1/features")
        .json(&json!({"key": "tokens", "name": "Tokens", "meterSlug": "tokens"}))
        .send()
        .expect_status(201);
    server
        .post("/api/v1/customers")
        .json(
            &json!({"name": "ACME", "key": "acme", "usageAttribution": {"subjectKeys": ["acme"]}}),
        )
        .send()
        .expect_status(201);
    let app = match app {
        Some(app) => app.to_owned(),
        None => {
            let apps = server.get("/api/v1/apps").send().expect_status(200).json();
            apps["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .find(|a| a["type"] == "sandbox")
                .and_then(|a| a["id"].as_str().map(str::to_owned))
                .unwrap_or_default()
        }
    };
    server
        .post("/api/v1/billing/profiles")
        .json(&json!({"name": "manual", "default": true,
            "supplier": {"name": "Us Inc.", "addresses": [{"country": "DE"}]},
            "workflow": {"invoicing": {"autoAdvance": false}},
            "apps": {"tax": app, "invoicing": app, "payment": app}}))
        .send()
        .expect_status(201);
}

fn pending(server: &TestServer, lines: &[Value]) {
    server
        .post("/api/v1/billing/customers/acme/invoices/pending-lines")
        .json(&json!({"currency": "USD", "lines": lines}))
        .send()
        .expect_status(201);
}

/// Waits for the customer's standard invoice to be in `extended` status.
fn wait_extended(server: &TestServer, extended: &str) -> Value {
    eventually(Duration::from_secs(30), || {
        let all = server
            .get("/api/v1/billing/invoices")
            .query("expand", "lines")
            .send()
            .expect_status(200)
            .json();
        let invoice = all["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .find(|i| i["status"] != "gathering")
            .unwrap_or_default();
        if invoice["statusDetails"]["extendedStatus"] == extended {
            Ok(invoice)
        } else {
            Err(format!(
                "invoice is {}, not {extended}",
                invoice["statusDetails"]["extendedStatus"]
            ))
        }
    })
}

/// The `InvoiceReplaceUpdate` that sends `invoice` back as it is.
fn replacement(invoice: &Value) -> Value {
    let invoicing = &invoice["workflow"]["workflow"]["invoicing"];
    let lines: Vec<Value> = invoice["lines"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|l| {
            json!({"id": l["id"], "name": l["name"], "period": l["period"], "invoiceAt": l["invoiceAt"],
                   "rateCard": {"price": l["rateCard"]["price"], "featureKey": l["featureKey"]}})
        })
        .collect();
    json!({
        "supplier": invoice["supplier"],
        "customer": {"name": invoice["customer"]["name"], "addresses": invoice["customer"]["addresses"]},
        "workflow": {"workflow": {
            "invoicing": {"autoAdvance": invoicing["autoAdvance"], "draftPeriod": invoicing["draftPeriod"],
                          "dueAfter": invoicing["dueAfter"]},
            "payment": invoice["workflow"]["workflow"]["payment"],
        }},
        "lines": lines,
    })
}

fn put(server: &TestServer, id: &str, body: &Value) -> Resp {
    server
        .put(&format!("/api/v1/billing/invoices/{id}"))
        .json(body)
        .send()
}

fn named<'a>(invoice: &'a Value, name: &str) -> &'a Value {
    invoice["lines"]
        .as_array()
        .and_then(|lines| lines.iter().find(|l| l["name"] == name))
        .unwrap_or(&Value::Null)
}

fn line_count(invoice: &Value) -> usize {
    invoice["lines"].as_array().map_or(0, Vec::len)
}

/// An immutable invoice answers OpenMeter's 400.
fn assert_refused(resp: Resp, status: &str) {
    assert_eq!(resp.status, 400, "{resp}");
    let problem = resp.json();
    assert_eq!(
        problem["extensions"]["validationErrors"][0]["code"], "invoice_action_not_available",
        "{problem}"
    );
    assert_eq!(
        problem["detail"],
        format!(
            "cannot trigger_updated invoice in status [{status}]: invoice action not available"
        ),
        "{problem}"
    );
}

// A draft's usage line gets a new period and price, its fee is left out, a line is added:
// usage is measured again over the new period and the totals follow, to the cent.
#[test]
fn edits_lines_and_totals_of_a_draft() {
    let server = TestServer::start_with_config(METERS);
    setup(&server, None);
    let h = hour();
    let events = [
        (600, h - TimeDelta::minutes(150)),
        (900, h - TimeDelta::hours(20)),
    ];
    let events: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, (n, t))| json!({"specversion": "1.0", "id": format!("e{i}"), "source": "test",
                                   "type": "tokens", "subject": "acme", "time": at(*t), "data": {"tokens": n}}))
        .collect();
    server.ingest_batch(&events).expect_status(204);
    eventually(Duration::from_secs(20), || {
        let rows = server
            .query("tokens", &[("subject", "acme".to_owned())])
            .json();
        let total = rows["data"][0]["value"].as_f64().unwrap_or_default();
        if total == 1500.0 {
            Ok(())
        } else {
            Err(format!("{total} of 1500 tokens visible"))
        }
    });
    let mut tokens = line(
        "Tokens",
        h - TimeDelta::hours(3),
        h - TimeDelta::hours(2),
        unit("0.10"),
    );
    tokens["rateCard"]["featureKey"] = json!("tokens");
    let setup_fee = line(
        "Setup",
        h - TimeDelta::hours(3),
        h - TimeDelta::hours(2),
        flat("99.99"),
    );
    pending(&server, &[tokens, setup_fee]);
    let draft = wait_extended(&server, "draft.manual_approval_needed");
    let id = draft["id"].as_str().unwrap_or_default().to_owned();
    // 600 tokens in the last of the three hours × 0.10 = 60.00; + 99.99 = 159.99.
    assert_eq!(named(&draft, "Tokens")["quantity"], "600", "{draft}");
    assert_eq!(draft["totals"]["total"], "159.99", "{draft}");

    let mut body = replacement(&draft);
    let lines = body["lines"].as_array().cloned().unwrap_or_default();
    let mut tokens = lines
        .iter()
        .find(|l| l["name"] == "Tokens")
        .cloned()
        .unwrap_or_default();
    tokens["period"]["from"] = json!(at(h - TimeDelta::hours(24)));
    tokens["rateCard"]["price"] = unit("0.0335");
    body["lines"] = json!([
        tokens,
        line(
            "Support",
            h - TimeDelta::hours(3),
            h - TimeDelta::hours(2),
            flat("12.34")
        ),
    ]);
    let edited = put(&server, &id, &body).expect_status(200).json();
    // 1,500 tokens over the whole day × 0.0335 = 50.25; + 12.34 = 62.59; Setup is gone.
    assert_eq!(
        edited["statusDetails"]["extendedStatus"], "draft.manual_approval_needed",
        "{edited}"
    );
    assert_eq!(edited["totals"]["total"], "62.59", "{edited}");
    assert_eq!(edited["totals"]["amount"], "62.59", "{edited}");
    assert_eq!(line_count(&edited), 2, "{edited}");
    let usage = named(&edited, "Tokens");
    assert_eq!(usage["quantity"], "1500", "{usage}");
    assert_eq!(usage["totals"]["total"], "50.25", "{usage}");
    assert_eq!(usage["managedBy"], "manual");
    assert_eq!(
        usage["id"],
        named(&draft, "Tokens")["id"],
        "edited in place"
    );
    let support = named(&edited, "Support");
    assert_eq!(support["totals"]["total"], "12.34", "{support}");
    assert_eq!(support["managedBy"], "manual");
    assert!(named(&edited, "Setup").is_null(), "{edited}");

    let read = server
        .get(&format!("/api/v1/billing/invoices/{id}"))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(read["totals"], edited["totals"]);
    assert_eq!(line_count(&read), 2, "{read}");
    // Sent back as it is: the same totals, and the lines are not touched.
    let again = put(&server, &id, &replacement(&read))
        .expect_status(200)
        .json();
    assert_eq!(again["totals"]["total"], "62.59", "{again}");
    assert_eq!(
        named(&again, "Support")["updatedAt"],
        named(&read, "Support")["updatedAt"]
    );

    // The body is checked: required parts, lines that cannot be priced; nothing changes.
    let mut no_lines = replacement(&read);
    if let Some(b) = no_lines.as_object_mut() {
        b.remove("lines");
    }
    put(&server, &id, &no_lines).expect_status(400);
    let mut no_feature = replacement(&read);
    no_feature["lines"][0]["rateCard"]["featureKey"] = Value::Null;
    no_feature["lines"][1]["rateCard"]["featureKey"] = Value::Null;
    no_feature["lines"][0]["rateCard"]["price"] = unit("1");
    no_feature["lines"][1]["rateCard"]["price"] = unit("1");
    put(&server, &id, &no_feature).expect_status(400);
    put(&server, "01J0000000000000000000000Z", &replacement(&read)).expect_status(404);
    let unchanged = server
        .get(&format!("/api/v1/billing/invoices/{id}"))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(unchanged["totals"]["total"], "62.59");
}

// The workflow settings take effect: auto-advance with a two-day draft period waits until two
// days after the invoice was created; a zero draft period then issues it at once (and the
// sandbox app has it paid); a paid invoice can no longer be edited.
#[test]
fn workflow_edits_take_effect() {
    let server = TestServer::start_with_config(METERS);
    setup(&server, None);
    let h = hour();
    pending(
        &server,
        &[line(
            "Fee",
            h - TimeDelta::hours(3),
            h - TimeDelta::hours(2),
            flat("50"),
        )],
    );
    let draft = wait_extended(&server, "draft.manual_approval_needed");
    let id = draft["id"].as_str().unwrap_or_default().to_owned();
    assert!(draft["draftUntil"].is_null(), "{draft}");

    let mut body = replacement(&draft);
    body["workflow"]["workflow"]["invoicing"] = json!({"autoAdvance": true, "draftPeriod": "P2D"});
    body["metadata"] = json!({"po": "PO-7"});
    body["customer"]["name"] = json!("ACME Corp");
    let waiting = put(&server, &id, &body).expect_status(200).json();
    assert_eq!(
        waiting["statusDetails"]["extendedStatus"], "draft.waiting_auto_approval",
        "{waiting}"
    );
    let invoicing = &waiting["workflow"]["workflow"]["invoicing"];
    assert_eq!(invoicing["autoAdvance"], true);
    assert_eq!(invoicing["draftPeriod"], "P2D");
    assert_eq!(invoicing["dueAfter"], "P30D", "left out: the default");
    let time = |v: &Value| {
        DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    };
    // Only a flat fee: no collection wait, so the draft period counts from creation.
    assert_eq!(
        time(&waiting["draftUntil"]),
        time(&waiting["createdAt"]) + TimeDelta::days(2),
        "{waiting}"
    );
    assert_eq!(waiting["metadata"], json!({"po": "PO-7"}));
    assert_eq!(waiting["customer"]["name"], "ACME Corp");
    assert_eq!(waiting["totals"]["total"], "50");

    let mut now_please = replacement(&waiting);
    now_please["workflow"]["workflow"]["invoicing"]["draftPeriod"] = json!("P0D");
    let paid = put(&server, &id, &now_please).expect_status(200).json();
    assert_eq!(paid["status"], "paid", "{paid}");
    assert!(paid["issuedAt"].is_string(), "{paid}");
    assert_eq!(paid["totals"]["total"], "50");

    assert_refused(put(&server, &id, &replacement(&paid)), "paid");
}

// A draft in Stripe: the edit syncs it again, and Stripe's invoice carries the new amount (one
// invoice, no second one); once approved it is finalized, and the invoice refuses edits.
#[test]
fn stripe_draft_is_synced_again() {
    let stripe = FakeStripe::start().expect("fake stripe");
    let server = TestServer::start_with_config(&format!(
        "{METERS}\nstripe:\n  apiBase: {}\n",
        stripe.base_url()
    ));
    let installed = server
        .post("/api/v1/marketplace/listings/stripe/install/apikey")
        .json(&json!({"apiKey": stripe.api_key(), "name": "Stripe"}))
        .send()
        .expect_status(200)
        .json();
    let app = installed["app"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    setup(&server, Some(&app));
    let cus = stripe.create_customer("ACME", Some("ops@acme.test"));
    let pm = stripe.create_payment_method(&cus).expect("payment method");
    server
        .put("/api/v1/customers/acme/stripe")
        .json(&json!({"stripeCustomerId": cus, "stripeDefaultPaymentMethodId": pm}))
        .send()
        .expect_status(200);
    let h = hour();
    pending(
        &server,
        &[line(
            "Fee",
            h - TimeDelta::hours(3),
            h - TimeDelta::hours(2),
            flat("40"),
        )],
    );
    let draft = wait_extended(&server, "draft.manual_approval_needed");
    let id = draft["id"].as_str().unwrap_or_default().to_owned();
    let stripe_id = draft["externalIds"]["invoicing"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(stripe_id.starts_with("in_"), "{draft}");
    assert_eq!(stripe.state().invoices[0].total, 4000);

    // 55.55 + 4.45 = 60.00: 6,000 cents in Stripe.
    let mut body = replacement(&draft);
    body["lines"][0]["rateCard"]["price"] = flat("55.55");
    let extra = line(
        "Extra",
        h - TimeDelta::hours(3),
        h - TimeDelta::hours(2),
        flat("4.45"),
    );
    if let Some(lines) = body["lines"].as_array_mut() {
        lines.push(extra);
    }
    let edited = put(&server, &id, &body).expect_status(200).json();
    assert_eq!(edited["totals"]["total"], "60", "{edited}");
    assert_eq!(
        edited["statusDetails"]["extendedStatus"], "draft.manual_approval_needed",
        "{edited}"
    );
    assert_eq!(edited["externalIds"]["invoicing"], stripe_id.as_str());
    let state = stripe.state();
    assert_eq!(state.invoices.len(), 1, "the same Stripe invoice");
    assert_eq!(state.invoices[0].id, stripe_id);
    assert_eq!(state.invoices[0].total, 6000);

    let approved = server
        .post(&format!("/api/v1/billing/invoices/{id}/approve"))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(approved["status"], "payment_processing", "{approved}");
    assert_eq!(stripe.state().invoices[0].total, 6000);
    assert_refused(
        put(&server, &id, &replacement(&edited)),
        "payment_processing.pending",
    );
    assert_eq!(stripe.violations(), Vec::<String>::new());
}

// A gathering invoice takes only its lines: a pending line's price is edited, another is
// added, and both are invoiced when due with the edited amounts.
#[test]
fn gathering_lines_are_replaced() {
    let server = TestServer::start_with_config(METERS);
    setup(&server, None);
    let h = hour();
    let later = h + TimeDelta::days(3);
    pending(
        &server,
        &[line("Fee", later - TimeDelta::hours(1), later, flat("10"))],
    );
    let all = server
        .get("/api/v1/billing/invoices")
        .query("expand", "lines")
        .query("extendedStatuses", "gathering")
        .send()
        .expect_status(200)
        .json();
    let gathering = all["items"][0].clone();
    assert_eq!(gathering["status"], "gathering", "{all}");
    let id = gathering["id"].as_str().unwrap_or_default().to_owned();
    let mut body = replacement(&gathering);
    body["lines"][0]["rateCard"]["price"] = flat("25.50");
    // Due now: invoiced at once with the edited fee, which stays gathering until its day.
    let support = line(
        "Support",
        h - TimeDelta::hours(3),
        h - TimeDelta::hours(2),
        flat("7.25"),
    );
    if let Some(lines) = body["lines"].as_array_mut() {
        lines.push(support);
    }
    let edited = put(&server, &id, &body).expect_status(200).json();
    assert_eq!(edited["status"], "gathering", "{edited}");
    assert_eq!(line_count(&edited), 2, "{edited}");
    let fee = named(&edited, "Fee");
    assert_eq!(fee["managedBy"], "manual");
    assert_eq!(fee["totals"]["total"], "25.5", "{fee}");
    let draft = wait_extended(&server, "draft.manual_approval_needed");
    assert_eq!(line_count(&draft), 1, "{draft}");
    assert_eq!(draft["totals"]["total"], "7.25", "{draft}");
    // A gathering line needs a price.
    let mut free = replacement(&edited);
    free["lines"][0]["rateCard"]["price"] = Value::Null;
    put(&server, &id, &free).expect_status(400);
}
