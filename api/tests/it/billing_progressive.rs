//! Progressive billing end to end, against the real binary (OpenMeter's `InvoicePendingLines`
//! with `progressiveBilling`): the server starts with billing's clock 15 days into the
//! subscription's first monthly period (`METRON_BILLING_CLOCK_OFFSET_SECONDS`), usage is
//! invoiced now, mid-period, then more usage arrives and, across a restart a month later, the
//! period end invoices only the rest. Each part is rated after the usage and the amounts of
//! the parts before it. The default profile collects at once (`interval: PT0S`) so that the
//! invoices do not wait an hour of billing time. Amounts are worked out by hand, to the cent.

use crate::helpers::*;
use crate::server::*;
use chrono::{DateTime, Duration as Span, DurationRound, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::str::FromStr;
use std::time::Duration;

const METERS: &str = r#"
meters:
  - slug: usage
    eventType: usage
    aggregation: SUM
    valueProperty: $.value
    groupBy:
      kind: $.kind
"#;

/// 15 days: the middle of the first monthly period.
const MID_PERIOD: &str = "1296000";
/// 32 days: past the end of the first monthly period.
const A_MONTH_LATER: &str = "2764800";

fn dec(v: &Value) -> Decimal {
    let text = v.as_str().unwrap_or_else(|| panic!("{v} is not a string"));
    Decimal::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::minutes(1)).unwrap()
}

fn start() -> TestServer {
    TestServer::builder()
        .with_config(METERS)
        .with_env("METRON_BILLING_CLOCK_OFFSET_SECONDS", MID_PERIOD)
        .start()
}

/// Features on the `usage` meter, one per `kind`; a published plan of `cards`; a customer.
/// Returns the customer's id.
fn setup(server: &TestServer, kinds: &[&str], cards: Value) -> String {
    for kind in kinds {
        server
            .post("/api/v1/features")
            .json(&json!({"key": kind, "name": kind, "meterSlug": "usage",
                          "meterGroupByFilters": {"kind": kind}}))
            .send()
            .expect_status(201);
    }
    let plan = server
        .post("/api/v1/plans")
        .json(&json!({"key": "pro", "name": "Pro", "currency": "USD", "billingCadence": "P1M",
            "phases": [{"key": "default", "name": "Default", "duration": null, "rateCards": cards}]}))
        .send()
        .expect_status(201)
        .json();
    let id = plan["id"].as_str().unwrap_or_default();
    server
        .post(&format!("/api/v1/plans/{id}/publish"))
        .send()
        .expect_status(200);
    let customer = server
        .post("/api/v1/customers")
        .json(&json!({"name": "ACME", "key": "acme",
                      "usageAttribution": {"subjectKeys": ["acme"]}}))
        .send()
        .expect_status(201)
        .json();
    customer["id"].as_str().unwrap_or_default().to_owned()
}

/// The default profile collects at once and bills progressively or not.
fn set_profile(server: &TestServer, progressive: bool) {
    let page = server
        .get("/api/v1/billing/profiles")
        .send()
        .expect_status(200)
        .json();
    let profile = page["items"]
        .as_array()
        .and_then(|items| items.iter().find(|p| p["default"] == json!(true)).cloned())
        .unwrap_or_else(|| panic!("no default profile: {page}"));
    let mut workflow = profile["workflow"].clone();
    workflow["collection"]["interval"] = json!("PT0S");
    workflow["invoicing"]["progressiveBilling"] = json!(progressive);
    let id = profile["id"].as_str().unwrap_or_default();
    let updated = server
        .put(&format!("/api/v1/billing/profiles/{id}"))
        .json(&json!({"name": profile["name"], "default": true,
                      "supplier": profile["supplier"], "workflow": workflow}))
        .send()
        .expect_status(200)
        .json();
    assert_eq!(
        updated["workflow"]["invoicing"]["progressiveBilling"],
        json!(progressive),
        "{updated}"
    );
}

/// Subscribes the customer to the plan; returns the first period's start (a whole minute).
fn subscribe(server: &TestServer) -> DateTime<Utc> {
    let sub = server
        .post("/api/v1/subscriptions")
        .json(&json!({"customerKey": "acme", "plan": {"key": "pro"}}))
        .send()
        .expect_status(201)
        .json();
    let from = sub["activeFrom"].as_str().unwrap_or_default();
    minute(
        DateTime::parse_from_rfc3339(from)
            .unwrap()
            .with_timezone(&Utc),
    )
}

/// Ingests `(kind, value)` events at `at` and waits until the period's usage is `total`.
fn ingest(server: &TestServer, batch: &str, at: DateTime<Utc>, usage: &[(&str, u32)], total: u32) {
    let events: Vec<Value> = usage
        .iter()
        .enumerate()
        .map(|(i, (kind, value))| {
            json!({"specversion": "1.0", "id": format!("{batch}-{i}"), "source": "test",
                   "type": "usage", "subject": "acme", "time": at.to_rfc3339(),
                   "data": {"kind": kind, "value": value}})
        })
        .collect();
    server.ingest_batch(&events).expect_status(204);
    let from = at - Span::days(40);
    let to = at + Span::days(40);
    eventually(Duration::from_secs(20), || {
        let rows = server
            .query(
                "usage",
                &[
                    ("subject", "acme".to_owned()),
                    ("from", from.to_rfc3339()),
                    ("to", to.to_rfc3339()),
                ],
            )
            .json();
        let seen = rows["data"][0]["value"].to_string();
        if seen == total.to_string() {
            Ok(())
        } else {
            Err(format!("{seen} of {total} visible"))
        }
    });
}

fn invoice_now(server: &TestServer, customer: &str, as_of: DateTime<Utc>) -> Resp {
    server
        .post("/api/v1/billing/invoices/invoice")
        .json(&json!({"customerId": customer, "asOf": as_of.to_rfc3339()}))
        .send()
}

/// OpenMeter's `invoice_create_no_lines`: a 400 whose validation error names it.
#[track_caller]
fn assert_no_lines(resp: &Resp) {
    assert_problem(resp, 400);
    assert_eq!(
        resp.json()["extensions"]["validationErrors"][0]["code"],
        "invoice_create_no_lines",
        "{resp}"
    );
}

/// Standard invoices that are paid, oldest first, with their lines.
fn paid(server: &TestServer) -> Vec<Value> {
    server
        .get("/api/v1/billing/invoices")
        .query("expand", "lines")
        .query("statuses", "paid")
        .send()
        .expect_status(200)
        .json()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn wait_paid(server: &TestServer, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(60), || {
        let all = paid(server);
        if all.len() >= n {
            Ok(all)
        } else {
            Err(format!("{} of {n} invoices paid", all.len()))
        }
    })
}

fn line<'a>(invoice: &'a Value, feature: &str) -> &'a Value {
    invoice["lines"]
        .as_array()
        .and_then(|lines| lines.iter().find(|l| l["featureKey"] == feature))
        .unwrap_or_else(|| panic!("no {feature} line: {invoice}"))
}

/// (quantity, total) of each detailed line.
fn children(line: &Value) -> Vec<(Decimal, Decimal)> {
    line["children"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| (dec(&c["quantity"]), dec(&c["totals"]["total"])))
        .collect()
}

fn d(n: i64, scale: u32) -> Decimal {
    Decimal::new(n, scale)
}

// A graduated price (1,000 at 0.10, then 0.05) and a flat fee of 10 in arrears. 600 tokens,
// then invoice-now at mid-period: the usage line is split there; its first part bills 600 ×
// 0.10 = 60.00, the flat fee is not due and never split. Invoicing again as of the same time
// finds nothing (400 `invoice_create_no_lines`). 900 more tokens, then the period end: the
// rest bills 1,500 − 600 continuing the tiers, (1,000 − 600) × 0.10 + 500 × 0.05 = 40.00 +
// 25.00 = 65.00, with the fee 10.00: 75.00. Together 125.00, the whole period's 1,500 tokens.
#[test]
fn graduated_usage_invoiced_mid_period_then_at_the_end() {
    let mut server = start();
    let cards = json!([
        {"type": "usage_based", "key": "tokens", "name": "Tokens", "featureKey": "tokens",
         "billingCadence": "P1M",
         "price": {"type": "tiered", "mode": "graduated", "tiers": [
            {"upToAmount": "1000", "unitPrice": {"type": "unit", "amount": "0.10"}},
            {"unitPrice": {"type": "unit", "amount": "0.05"}}]}},
        {"type": "flat_fee", "key": "support", "name": "Support", "billingCadence": "P1M",
         "price": {"type": "flat", "amount": "10", "paymentTerm": "in_arrears"}}
    ]);
    let customer = setup(&server, &["tokens"], cards);
    set_profile(&server, true);
    let from = subscribe(&server);
    ingest(&server, "a", from, &[("tokens", 600)], 600);
    let as_of = from + Span::days(15);

    // The request can turn the profile's progressive billing off, and name the lines it
    // invoices: either way nothing is billable yet.
    for extra in [
        json!({"progressiveBillingOverride": false}),
        json!({"filters": {"lineIds": ["01JNOSUCHLINE0000000000000"]}}),
    ] {
        let mut body = json!({"customerId": customer, "asOf": as_of.to_rfc3339()});
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        let resp = server
            .post("/api/v1/billing/invoices/invoice")
            .json(&body)
            .send();
        assert_no_lines(&resp);
    }

    let created = invoice_now(&server, &customer, as_of)
        .expect_status(201)
        .json();
    assert_eq!(created.as_array().map(Vec::len), Some(1), "{created}");
    let first = wait_paid(&server, 1).remove(0);
    assert_eq!(first["id"], created[0]["id"]);
    assert_eq!(dec(&first["totals"]["total"]), d(6000, 2), "{first}");
    assert_eq!(first["lines"].as_array().map(Vec::len), Some(1), "{first}");
    let part = line(&first, "tokens");
    assert_eq!(dec(&part["quantity"]), d(600, 0));
    assert_eq!(dec(&part["preLinePeriodQuantity"]), Decimal::ZERO);
    let period = &part["period"];
    assert_eq!(
        (period["from"].as_str(), period["to"].as_str()),
        (
            Some(
                from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    .as_str()
            ),
            Some(
                as_of
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    .as_str()
            )
        ),
        "{part}"
    );

    // The rest of the period stays gathering, from asOf; the same request again creates
    // nothing.
    let gathering = server
        .get("/api/v1/billing/invoices")
        .query("expand", "lines")
        .query("extendedStatuses", "gathering")
        .send()
        .expect_status(200)
        .json();
    let waiting = line(&gathering["items"][0], "tokens");
    assert_eq!(
        waiting["period"]["from"].as_str(),
        Some(
            as_of
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                .as_str()
        ),
        "{gathering}"
    );
    assert_no_lines(&invoice_now(&server, &customer, as_of));
    assert_eq!(paid(&server).len(), 1);

    ingest(
        &server,
        "b",
        as_of + Span::minutes(1),
        &[("tokens", 900)],
        1500,
    );
    server.set_env(&[("METRON_BILLING_CLOCK_OFFSET_SECONDS", A_MONTH_LATER)]);
    server.restart();
    let all = wait_paid(&server, 2);
    let second = &all[1];
    let rest = line(second, "tokens");
    assert_eq!(dec(&rest["quantity"]), d(900, 0), "{rest}");
    assert_eq!(dec(&rest["preLinePeriodQuantity"]), d(600, 0), "{rest}");
    assert_eq!(dec(&rest["meteredPreLinePeriodQuantity"]), d(600, 0));
    assert_eq!(
        rest["period"]["from"].as_str(),
        Some(
            as_of
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                .as_str()
        )
    );
    assert_eq!(
        children(rest),
        vec![(d(400, 0), d(4000, 2)), (d(500, 0), d(2500, 2))]
    );
    assert_eq!(dec(&rest["totals"]["total"]), d(6500, 2));
    assert_eq!(dec(&second["totals"]["total"]), d(7500, 2), "{second}");
    assert_eq!(all.len(), 2);
}

// A unit price of 0.10 with a minimum spend of 100, and a volume-tiered price (1,000 at 0.02,
// above at 0.01 for every unit). Without progressive billing, invoice-now mid-period refuses
// (nothing is due). With it, only the unit price is split: 300 calls = 30.00 and no minimum
// yet, the volume price waits for the period end. Then 200 more calls and the period end: the
// rest bills 200 × 0.10 = 20.00, and the minimum tops the period's 50.00 up by 50.00; the
// volume price bills 1,500 seats × 0.01 = 15.00: 85.00.
#[test]
fn minimum_on_the_last_part_and_volume_tiers_wait_for_the_period_end() {
    let mut server = start();
    let cards = json!([
        {"type": "usage_based", "key": "calls", "name": "Calls", "featureKey": "calls",
         "billingCadence": "P1M",
         "price": {"type": "unit", "amount": "0.10", "minimumAmount": "100"}},
        {"type": "usage_based", "key": "seats", "name": "Seats", "featureKey": "seats",
         "billingCadence": "P1M",
         "price": {"type": "tiered", "mode": "volume", "tiers": [
            {"upToAmount": "1000", "unitPrice": {"type": "unit", "amount": "0.02"}},
            {"unitPrice": {"type": "unit", "amount": "0.01"}}]}}
    ]);
    let customer = setup(&server, &["calls", "seats"], cards);
    set_profile(&server, false);
    let from = subscribe(&server);
    ingest(&server, "a", from, &[("calls", 300), ("seats", 1500)], 1800);
    let as_of = from + Span::days(15);
    assert_no_lines(&invoice_now(&server, &customer, as_of));

    set_profile(&server, true);
    invoice_now(&server, &customer, as_of).expect_status(201);
    let first = wait_paid(&server, 1).remove(0);
    assert_eq!(first["lines"].as_array().map(Vec::len), Some(1), "{first}");
    let part = line(&first, "calls");
    assert_eq!(children(part), vec![(d(300, 0), d(3000, 2))], "{part}");
    assert_eq!(dec(&first["totals"]["total"]), d(3000, 2));

    ingest(
        &server,
        "b",
        as_of + Span::minutes(1),
        &[("calls", 200)],
        2000,
    );
    server.set_env(&[("METRON_BILLING_CLOCK_OFFSET_SECONDS", A_MONTH_LATER)]);
    server.restart();
    let second = wait_paid(&server, 2).remove(1);
    let rest = line(&second, "calls");
    assert_eq!(
        children(rest),
        vec![(d(200, 0), d(2000, 2)), (d(1, 0), d(5000, 2))],
        "{rest}"
    );
    assert_eq!(rest["children"][1]["category"], "commitment");
    assert_eq!(dec(&rest["totals"]["chargesTotal"]), d(5000, 2));
    let seats = line(&second, "seats");
    assert_eq!(children(seats), vec![(d(1500, 0), d(1500, 2))], "{seats}");
    assert_eq!(dec(&second["totals"]["total"]), d(8500, 2), "{second}");
}
