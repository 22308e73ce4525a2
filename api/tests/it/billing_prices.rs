//! Billing end to end for every price type, against the real binary: one plan carries one rate
//! card per price type (each on its own feature, all features on one meter filtered by the
//! `kind` group-by), a subscription bills the flat fee in advance at once, and when the period
//! ends (the billing clock moved forward by `METRON_BILLING_CLOCK_OFFSET_SECONDS` across a
//! restart) the usage, the flat fee in arrears and the next fee in advance are invoiced
//! together. Every expected amount is worked out by hand in the comments, to the cent; with the
//! fake Stripe each Stripe item (in cents) must equal its detailed line. A second scenario
//! pro-rates a first period that starts after its billing anchor, in USD and in JPY; a third
//! bills weekly items in a plan billed every four weeks.

use crate::server::*;
use chrono::{DateTime, DurationRound, Months, TimeDelta, Utc};
use metron_fake_stripe::FakeStripe;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Value, json};
use std::collections::BTreeMap;
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

/// Where the sandbox app leaves an invoice: paid.
const PAID: &str = "paid";
/// Where Stripe leaves an invoice charged automatically, with no webhook back: finalized,
/// being paid.
const IN_STRIPE: &str = "payment_processing";

/// 32 days: past the end of any first monthly period and its one-hour collection window.
const A_MONTH_LATER: &str = "2764800";

/// The features of the plan: one per price type, each the meter's usage of one `kind`.
const KINDS: [&str; 8] = [
    "api", "storage", "seats", "tokens", "bytes", "cost", "calls", "emails",
];

/// Usage per kind, as the events that sum to it.
const USAGE: [(&str, &[&str]); 8] = [
    ("api", &["400", "600"]),
    ("storage", &["300"]),
    ("seats", &["200", "50"]),
    ("tokens", &["700"]),
    ("bytes", &["2000", "500"]),
    ("cost", &["10.111", "23.222"]),
    ("calls", &["333"]),
    ("emails", &["1500"]),
];

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap_or_else(|e| panic!("{text:?} is not a decimal: {e}"))
}

/// A JSON amount (OpenMeter's numeric strings) as a decimal.
fn amount(v: &Value) -> Decimal {
    dec(v
        .as_str()
        .unwrap_or_else(|| panic!("{v} is not a numeric string")))
}

fn usage(feature: &str, name: &str, price: Value) -> Value {
    json!({"type": "usage_based", "key": feature, "name": name, "featureKey": feature,
           "billingCadence": "P1M", "price": price})
}

fn every_price_plan() -> Value {
    let mut calls = usage("calls", "Calls", json!({"type": "unit", "amount": "0.15"}));
    calls["discounts"] = json!({"percentage": {"percentage": 10}});
    let mut emails = usage(
        "emails",
        "Emails",
        json!({"type": "unit", "amount": "0.01"}),
    );
    emails["discounts"] = json!({"usage": {"quantity": "1000"}});
    json!({
        "key": "every", "name": "Every price", "currency": "USD", "billingCadence": "P1M",
        "phases": [{"key": "default", "name": "Default", "duration": null, "rateCards": [
            {"type": "flat_fee", "key": "platform", "name": "Platform fee", "billingCadence": "P1M",
             "price": {"type": "flat", "amount": "30", "paymentTerm": "in_advance"}},
            {"type": "flat_fee", "key": "support", "name": "Support", "billingCadence": "P1M",
             "price": {"type": "flat", "amount": "12.50", "paymentTerm": "in_arrears"},
             "discounts": {"percentage": {"percentage": 10}}},
            usage("api", "API", json!({"type": "unit", "amount": "0.02", "minimumAmount": "50"})),
            usage("storage", "Storage",
                  json!({"type": "unit", "amount": "0.5", "maximumAmount": "100"})),
            usage("seats", "Seats", json!({"type": "tiered", "mode": "volume", "tiers": [
                {"upToAmount": "100", "unitPrice": {"type": "unit", "amount": "1"}},
                {"upToAmount": "1000", "unitPrice": {"type": "unit", "amount": "0.8"},
                 "flatPrice": {"type": "flat", "amount": "10"}},
                {"unitPrice": {"type": "unit", "amount": "0.5"}}
            ]})),
            usage("tokens", "Tokens", json!({"type": "tiered", "mode": "graduated", "tiers": [
                {"upToAmount": "100", "unitPrice": {"type": "unit", "amount": "0.1"},
                 "flatPrice": {"type": "flat", "amount": "5"}},
                {"upToAmount": "500", "unitPrice": {"type": "unit", "amount": "0.05"},
                 "flatPrice": {"type": "flat", "amount": "2"}},
                {"unitPrice": {"type": "unit", "amount": "0.01"}}
            ]})),
            usage("bytes", "Bytes",
                  json!({"type": "package", "amount": "15", "quantityPerPackage": "1000"})),
            usage("cost", "Cost", json!({"type": "dynamic", "multiplier": "1.25"})),
            calls,
            emails
        ]}]
    })
}

fn create_features(server: &TestServer) {
    for kind in KINDS {
        server
            .post("/api/v1/features")
            .json(&json!({"key": kind, "name": kind, "meterSlug": "usage",
                          "meterGroupByFilters": {"kind": kind}}))
            .send()
            .expect_status(201);
    }
}

fn publish(server: &TestServer, plan: &Value) {
    let p = server
        .post("/api/v1/plans")
        .json(plan)
        .send()
        .expect_status(201)
        .json();
    server
        .post(&format!(
            "/api/v1/plans/{}/publish",
            p["id"].as_str().unwrap_or_default()
        ))
        .send()
        .expect_status(200);
}

fn create_customer(server: &TestServer, key: &str) {
    server
        .post("/api/v1/customers")
        .json(
            &json!({"name": key, "key": key, "primaryEmail": format!("ops@{key}.test"),
                      "usageAttribution": {"subjectKeys": [key]}}),
        )
        .send()
        .expect_status(201);
}

fn subscribe(server: &TestServer, body: &Value) -> Value {
    server
        .post("/api/v1/subscriptions")
        .json(body)
        .send()
        .expect_status(201)
        .json()
}

fn invoices(server: &TestServer) -> Vec<Value> {
    server
        .get("/api/v1/billing/invoices")
        .query("expand", "lines")
        .query("statuses", "paid")
        .query("statuses", "payment_processing")
        .query("statuses", "issued")
        .send()
        .expect_status(200)
        .json()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until `n` invoices in `currency` have reached `status` (an invoice passes through
/// `issued` on its way); returns them oldest period first.
fn wait_invoices(server: &TestServer, currency: &str, status: &str, n: usize) -> Vec<Value> {
    let mut all = eventually(Duration::from_secs(30), || {
        let all: Vec<Value> = invoices(server)
            .into_iter()
            .filter(|i| i["currency"] == currency && i["status"] == status)
            .collect();
        if all.len() >= n {
            Ok(all)
        } else {
            Err(format!("{} of {n} {currency} invoices {status}", all.len()))
        }
    });
    all.sort_by_key(|i| i["period"]["to"].as_str().unwrap_or_default().to_owned());
    all
}

/// Sends the usage events of `subject` now and waits until the meter shows `total` for it.
fn ingest(server: &TestServer, subject: &str, usage: &[(&str, &[&str])]) {
    let now = Utc::now().to_rfc3339();
    let mut events = Vec::new();
    for (kind, values) in usage {
        for (i, value) in values.iter().enumerate() {
            // A JSON number with the exact digits (serde_json's arbitrary_precision).
            let value: Value = serde_json::from_str(value).unwrap_or_default();
            events.push(
                json!({"specversion": "1.0", "id": format!("{subject}-{kind}-{i}"),
                               "source": "test", "type": "usage", "subject": subject,
                               "time": now, "data": {"kind": kind, "value": value}}),
            );
        }
    }
    server.ingest_batch(&events).expect_status(204);
    let expected = usage
        .iter()
        .flat_map(|(_, values)| values.iter().map(|v| dec(v)))
        .sum::<Decimal>();
    eventually(Duration::from_secs(20), || {
        let rows = server
            .query("usage", &[("subject", subject.to_owned())])
            .json();
        let total = rows["data"][0]["value"].to_string();
        if Decimal::from_str(&total).is_ok_and(|t| t == expected) {
            Ok(())
        } else {
            Err(format!("{total} of {expected} visible"))
        }
    });
}

fn line<'a>(invoice: &'a Value, name: &str) -> &'a Value {
    invoice["lines"]
        .as_array()
        .and_then(|lines| lines.iter().find(|l| l["name"] == name))
        .unwrap_or_else(|| panic!("no line {name:?} on {invoice}"))
}

/// The detailed lines of a line as `childUniqueReferenceID`-less (quantity, total) pairs,
/// with their category.
fn children(line: &Value) -> Vec<(Decimal, Decimal, String)> {
    line["children"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                amount(&c["quantity"]),
                amount(&c["totals"]["total"]),
                c["category"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn regular(quantity: &str, total: &str) -> (Decimal, Decimal, String) {
    (dec(quantity), dec(total), "regular".to_owned())
}

/// The line totals of the period-end invoice of `every_price_plan`, each worked out by hand:
/// (line name, amount before discounts and charges, discounts, charges, total).
const PERIOD_END: [(&str, &str, &str, &str, &str); 10] = [
    // In arrears: invoiced at the period's end, once; 10 % off 12.50 is 1.25: 11.25.
    ("Support", "12.50", "1.25", "0", "11.25"),
    // The next period's fee in advance.
    ("Platform fee", "30", "0", "0", "30"),
    // 1,000 × 0.02 = 20.00 is under the 50.00 minimum: a 30.00 commitment line tops it up.
    ("API", "20", "0", "30", "50"),
    // 300 × 0.50 = 150.00, capped at 100.00 by a 50.00 maximum-spend discount.
    ("Storage", "150", "50", "0", "100"),
    // Volume: 250 falls in tier 2 (101–1,000), which prices all of it: 10 + 250 × 0.80 = 210.00.
    ("Seats", "210", "0", "0", "210"),
    // Graduated, 700: tier 1 100 × 0.10 + 5 = 15.00; tier 2 400 × 0.05 + 2 = 22.00;
    // tier 3 200 × 0.01 = 2.00; 39.00 in all.
    ("Tokens", "39", "0", "0", "39"),
    // Package: 2,500 is three started packages of 1,000: 3 × 15 = 45.00.
    ("Bytes", "45", "0", "0", "45"),
    // Dynamic: 33.333 × 1.25 = 41.66625, rounded half away from zero: 41.67.
    ("Cost", "41.67", "0", "0", "41.67"),
    // 333 × 0.15 = 49.95; 10 % off is 4.995, rounded 5.00; 44.95.
    ("Calls", "49.95", "5", "0", "44.95"),
    // The first 1,000 emails are free: 500 × 0.01 = 5.00.
    ("Emails", "5", "0", "0", "5"),
];

/// 11.25 + 30 + 50 + 100 + 210 + 39 + 45 + 41.67 + 44.95 + 5 = 576.87.
const PERIOD_END_TOTAL: &str = "576.87";

/// Checks every line of the period-end invoice against `PERIOD_END`, and the detailed lines
/// that show how each price type computed.
fn check_period_end(invoice: &Value) {
    let lines = invoice["lines"].as_array().cloned().unwrap_or_default();
    assert_eq!(lines.len(), PERIOD_END.len(), "{invoice}");
    for (name, gross, discounts, charges, total) in PERIOD_END {
        let totals = &line(invoice, name)["totals"];
        assert_eq!(
            (
                amount(&totals["amount"]),
                amount(&totals["discountsTotal"]),
                amount(&totals["chargesTotal"]),
                amount(&totals["total"]),
            ),
            (dec(gross), dec(discounts), dec(charges), dec(total)),
            "{name}: {totals}"
        );
    }
    assert_eq!(amount(&invoice["totals"]["total"]), dec(PERIOD_END_TOTAL));
    // 1.25 + 50 + 5.00.
    assert_eq!(amount(&invoice["totals"]["discountsTotal"]), dec("56.25"));
    assert_eq!(amount(&invoice["totals"]["chargesTotal"]), dec("30"));

    let api = line(invoice, "API");
    assert_eq!(
        children(api),
        vec![
            regular("1000", "20"),
            (dec("1"), dec("30"), "commitment".to_owned())
        ]
    );
    assert_eq!(amount(&api["quantity"]), dec("1000"));
    let storage = children(line(invoice, "Storage"));
    assert_eq!(storage, vec![regular("300", "100")]);
    assert_eq!(
        children(line(invoice, "Seats")),
        vec![regular("1", "10"), regular("250", "200")]
    );
    let mut tokens = children(line(invoice, "Tokens"));
    tokens.sort_by_key(|c| (c.1, c.0));
    assert_eq!(
        tokens,
        vec![
            regular("1", "2"),
            regular("200", "2"),
            regular("1", "5"),
            regular("100", "10"),
            regular("400", "20"),
        ]
    );
    assert_eq!(children(line(invoice, "Bytes")), vec![regular("3", "45")]);
    assert_eq!(amount(&line(invoice, "Cost")["quantity"]), dec("33.333"));
    assert_eq!(children(line(invoice, "Cost")), vec![regular("1", "41.67")]);
    assert_eq!(
        children(line(invoice, "Calls")),
        vec![regular("333", "44.95")]
    );
    // The emails line bills its usage after the free units: 500 of 1,500.
    assert_eq!(children(line(invoice, "Emails")), vec![regular("500", "5")]);
}

fn setup_every_price(server: &TestServer) {
    create_features(server);
    publish(server, &every_price_plan());
    create_customer(server, "acme");
}

// Sandbox, every price type on one subscription. The first invoice is the platform fee in
// advance alone (30.00; the support fee is in arrears, usage is billed at the end); a month
// later one invoice of 576.87 (see `PERIOD_END`) bills the first period's usage, its support
// fee and the second period's platform fee. Both are paid.
#[test]
fn billing_prices_sandbox_every_price_type() {
    let mut server = TestServer::start_with_config(METERS);
    setup_every_price(&server);
    subscribe(
        &server,
        &json!({"customerKey": "acme", "plan": {"key": "every"}}),
    );
    let first = wait_invoices(&server, "USD", PAID, 1).remove(0);
    assert_eq!(first["status"], "paid", "{first}");
    assert_eq!(amount(&first["totals"]["total"]), dec("30"), "{first}");
    let names: Vec<&str> = first["lines"]
        .as_array()
        .map(|l| l.iter().filter_map(|l| l["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec!["Platform fee"]);

    ingest(&server, "acme", &USAGE);
    server.set_env(&[("METRON_BILLING_CLOCK_OFFSET_SECONDS", A_MONTH_LATER)]);
    server.restart();
    let all = wait_invoices(&server, "USD", PAID, 2);
    assert_eq!(all.len(), 2, "{all:?}");
    let second = &all[1];
    assert_eq!(second["status"], "paid", "{second}");
    check_period_end(second);
}

// Fake Stripe, every price type: each invoice lands in Stripe once; its items are the detailed
// lines in cents (a discount as its own negative item), so per detailed line the items sum to
// its total, and the Stripe total is the invoice's: 3,000 then 57,687 cents.
#[test]
fn billing_prices_stripe_items_equal_the_lines() {
    let stripe = FakeStripe::start().expect("fake stripe");
    let mut server = TestServer::start_with_config(&format!(
        "{METERS}\nstripe:\n  apiBase: {}\n",
        stripe.base_url()
    ));
    setup_every_price(&server);
    install_stripe(&server, &stripe);
    link_stripe(&server, &stripe, "acme");
    subscribe(
        &server,
        &json!({"customerKey": "acme", "plan": {"key": "every"}}),
    );
    let first = wait_invoices(&server, "USD", IN_STRIPE, 1).remove(0);
    assert_eq!(amount(&first["totals"]["total"]), dec("30"), "{first}");
    check_stripe(&stripe, &first, 3000, 2);

    ingest(&server, "acme", &USAGE);
    server.set_env(&[("METRON_BILLING_CLOCK_OFFSET_SECONDS", A_MONTH_LATER)]);
    server.restart();
    let all = wait_invoices(&server, "USD", IN_STRIPE, 2);
    let second = &all[1];
    check_period_end(second);
    check_stripe(&stripe, second, 57687, 2);
    // Items are named as OpenMeter's Stripe app names them: ` (qty x unit)` above one unit, a
    // discount after its line, with the discount's description when it has one.
    let state = stripe.state();
    let descriptions: Vec<(String, i64)> = state
        .invoice_items
        .iter()
        .map(|i| (i.description.clone().unwrap_or_default(), i.amount))
        .collect();
    for expected in [
        ("Calls: usage in period (333 x $0.15)", 4995),
        ("Calls: usage in period", -500),
        ("Storage: usage in period (300 x $0.5)", 15000),
        (
            "Storage: usage in period (Maximum spend discount for charges over 100)",
            -5000,
        ),
        ("API: minimum spend", 3000),
        ("Cost: usage in period", 4167),
        ("Support", 1250),
        ("Support", -125),
    ] {
        assert!(
            descriptions.contains(&(expected.0.to_owned(), expected.1)),
            "{expected:?} not in {descriptions:?}"
        );
    }
    assert_eq!(stripe.state().invoices.len(), 2);
    assert_eq!(stripe.violations(), Vec::<String>::new());
}

fn install_stripe(server: &TestServer, stripe: &FakeStripe) {
    server
        .post("/api/v1/marketplace/listings/stripe/install/apikey")
        .json(&json!({"apiKey": stripe.api_key(), "name": "Stripe"}))
        .send()
        .expect_status(200);
}

/// Links the customer `key` to a new Stripe customer with a payment method.
fn link_stripe(server: &TestServer, stripe: &FakeStripe, key: &str) {
    let cus = stripe.create_customer(key, Some(&format!("ops@{key}.test")));
    let pm = stripe.create_payment_method(&cus).expect("payment method");
    server
        .put(&format!("/api/v1/customers/{key}/stripe"))
        .json(&json!({"stripeCustomerId": cus, "stripeDefaultPaymentMethodId": pm}))
        .send()
        .expect_status(200);
}

/// The invoice's Stripe invoice totals `total` minor units (`minor` digits: 2 for cents, 0
/// for yen), and its items are its detailed lines: for each detailed line, the items carrying
/// its id sum to its total in minor units.
fn check_stripe(stripe: &FakeStripe, invoice: &Value, total: i64, minor: u32) {
    let stripe_id = invoice["externalIds"]["invoicing"]
        .as_str()
        .unwrap_or_else(|| panic!("not in Stripe: {invoice}"))
        .to_owned();
    let state = stripe.state();
    let landed = state
        .invoices
        .iter()
        .find(|i| i.id == stripe_id)
        .unwrap_or_else(|| panic!("{stripe_id} not in the fake Stripe"));
    assert_eq!(landed.total, total);
    let currency = invoice["currency"].as_str().unwrap_or_default();
    assert_eq!(landed.currency, currency.to_lowercase());
    let items: Vec<_> = state
        .invoice_items
        .iter()
        .filter(|i| i.invoice.as_deref() == Some(stripe_id.as_str()))
        .collect();
    assert_eq!(items.iter().map(|i| i.amount).sum::<i64>(), total);
    // A discount's item names the discount (its id as the API shows it); it counts to its
    // detailed line.
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for line in invoice["lines"].as_array().cloned().unwrap_or_default() {
        for child in line["children"].as_array().cloned().unwrap_or_default() {
            let id = child["id"].as_str().unwrap_or_default().to_owned();
            for discount in child["discounts"]["amount"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let discount = discount["id"].as_str().unwrap_or_default().to_owned();
                owner.insert(discount, id.clone());
            }
            expected.insert(id, minor_units(amount(&child["totals"]["total"]), minor));
        }
    }
    let mut by_child: BTreeMap<String, i64> = BTreeMap::new();
    for item in &items {
        let id = item.metadata.get("om_line_id").cloned().unwrap_or_default();
        let child = owner.get(&id).cloned().unwrap_or(id);
        *by_child.entry(child).or_default() += item.amount;
    }
    assert_eq!(by_child, expected);
}

fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::minutes(1)).unwrap_or(t)
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("{v} is not a time"))
}

/// `amount × served/full` as OpenMeter pro-rates a flat fee: both periods truncated to the
/// minute, the share in nanoseconds divided to 16 places, the product rounded half away from
/// zero to the currency's `minor` digits.
fn pro_rated(amount: &str, from: DateTime<Utc>, anchor: DateTime<Utc>, minor: u32) -> Decimal {
    let end = minute(anchor + Months::new(1));
    let served = (end - minute(from)).num_nanoseconds().unwrap_or_default();
    let full = (end - minute(anchor)).num_nanoseconds().unwrap_or_default();
    let share = (Decimal::from(served) / Decimal::from(full))
        .round_dp_with_strategy(16, RoundingStrategy::MidpointAwayFromZero);
    (dec(amount) * share).round_dp_with_strategy(minor, RoundingStrategy::MidpointAwayFromZero)
}

fn pro_rated_plan(key: &str, currency: &str, fee: &str, support: &str, unit: &str) -> Value {
    json!({
        "key": key, "name": key, "currency": currency, "billingCadence": "P1M",
        "phases": [{"key": "default", "name": "Default", "duration": null, "rateCards": [
            {"type": "flat_fee", "key": "platform", "name": "Platform fee", "billingCadence": "P1M",
             "price": {"type": "flat", "amount": fee, "paymentTerm": "in_advance"}},
            {"type": "flat_fee", "key": "support", "name": "Support", "billingCadence": "P1M",
             "price": {"type": "flat", "amount": support, "paymentTerm": "in_arrears"}},
            usage("calls", "Calls", json!({"type": "unit", "amount": unit}))
        ]}]
    })
}

/// One currency's case of the pro-rating test: its plan's prices and its minor-unit digits.
struct Case {
    customer: &'static str,
    currency: &'static str,
    fee: &'static str,
    support: &'static str,
    unit: &'static str,
    /// `unit × 333` rounded to the currency, worked out by hand.
    calls: &'static str,
    minor: u32,
}

const CASES: [Case; 2] = [
    // 333 × 0.15 = 49.95.
    Case {
        customer: "acme",
        currency: "USD",
        fee: "30",
        support: "12.50",
        unit: "0.15",
        calls: "49.95",
        minor: 2,
    },
    // 333 × 0.7 = 233.1, rounded to the yen: 233.
    Case {
        customer: "tanaka",
        currency: "JPY",
        fee: "1000",
        support: "500",
        unit: "0.7",
        calls: "233",
        minor: 0,
    },
];

/// An amount in the currency's minor units, as Stripe takes it (yen have none).
fn minor_units(amount: Decimal, minor: u32) -> i64 {
    let scaled = amount * Decimal::from(10_i64.pow(minor));
    assert!(
        scaled.fract().is_zero(),
        "{amount} is not rounded to {minor} digits"
    );
    i64::try_from(scaled).unwrap_or(i64::MIN)
}

// Fake Stripe, a subscription starting after its billing anchor (anchored 10 days 7 hours 13 minutes back): its
// first period runs from the start to the anchor a month later, so its flat fees are
// pro-rated, served/full, computed here from the activeFrom and billingAnchor the API returns.
// The first invoice is the fee in advance × share; a month later the second bills the support
// fee in arrears × share, the next period's whole fee, and 333 calls. In USD (cents) and JPY
// (no minor unit: 1,000 yen is 1000 in Stripe, not 100000), Stripe's totals equal the
// invoices' and each item its detailed line.
#[test]
fn billing_prices_pro_rated_first_period_usd_and_jpy() {
    let stripe = FakeStripe::start().expect("fake stripe");
    let mut server = TestServer::start_with_config(&format!(
        "{METERS}\nstripe:\n  apiBase: {}\n",
        stripe.base_url()
    ));
    create_features(&server);
    install_stripe(&server, &stripe);
    // Not a whole number of days back, so the share is no round fraction.
    let back = TimeDelta::days(10) + TimeDelta::hours(7) + TimeDelta::minutes(13);
    let anchor = (Utc::now() - back).to_rfc3339();
    let mut subs = Vec::new();
    for case in &CASES {
        let plan = pro_rated_plan(
            case.customer,
            case.currency,
            case.fee,
            case.support,
            case.unit,
        );
        publish(&server, &plan);
        create_customer(&server, case.customer);
        link_stripe(&server, &stripe, case.customer);
        subs.push(subscribe(
            &server,
            &json!({"customerKey": case.customer, "plan": {"key": case.customer},
                    "billingAnchor": anchor}),
        ));
    }

    let mut shares = Vec::new();
    for (case, sub) in CASES.iter().zip(&subs) {
        let (from, anchor) = (time(&sub["activeFrom"]), time(&sub["billingAnchor"]));
        assert!(anchor < from, "{sub}");
        let fee = pro_rated(case.fee, from, anchor, case.minor);
        let support = pro_rated(case.support, from, anchor, case.minor);
        // About 20 of 30 or 31 days: a share strictly between 0 and 1.
        assert!(fee > Decimal::ZERO && fee < dec(case.fee), "{fee}");
        let first = wait_invoices(&server, case.currency, IN_STRIPE, 1).remove(0);
        assert_eq!(amount(&first["totals"]["total"]), fee, "{first}");
        let fee_line = line(&first, "Platform fee");
        assert_eq!(time(&fee_line["period"]["from"]), minute(from));
        assert_eq!(
            time(&fee_line["period"]["to"]),
            minute(anchor + Months::new(1))
        );
        // The line's billing period is the plan's, clipped to the subscription's start.
        let billing = &fee_line["subscription"]["billingPeriod"];
        assert_eq!(time(&billing["from"]), minute(from), "{fee_line}");
        assert_eq!(time(&billing["to"]), minute(anchor + Months::new(1)));
        check_stripe(&stripe, &first, minor_units(fee, case.minor), case.minor);
        shares.push(support);
        ingest(&server, case.customer, &[("calls", &["333"][..])]);
    }

    server.set_env(&[("METRON_BILLING_CLOCK_OFFSET_SECONDS", A_MONTH_LATER)]);
    server.restart();
    for (case, support) in CASES.iter().zip(shares) {
        let all = wait_invoices(&server, case.currency, IN_STRIPE, 2);
        let second = &all[1];
        let line_total = |name: &str| amount(&line(second, name)["totals"]["total"]);
        assert_eq!(line_total("Support"), support, "{second}");
        assert_eq!(line_total("Platform fee"), dec(case.fee));
        assert_eq!(line_total("Calls"), dec(case.calls));
        let total = support + dec(case.fee) + dec(case.calls);
        assert_eq!(amount(&second["totals"]["total"]), total, "{second}");
        check_stripe(&stripe, second, minor_units(total, case.minor), case.minor);
    }
    assert_eq!(stripe.state().invoices.len(), 4);
    assert_eq!(stripe.violations(), Vec::<String>::new());
}

// Sandbox, items billed weekly in a plan billed every four weeks (as OpenMeter's
// `TestAlignedSubscriptionInvoicing`): the weekly fee in advance is due at the start of the
// plan's period, so the first invoice holds four weekly fees, 4 × 5.00 = 20.00; weekly usage
// falls due when the plan's period is over, so 32 days later one invoice holds the four usage
// weeks (333 × 0.15 = 49.95 in the first, nothing after) and the next period's four fees:
// 49.95 + 20.00 = 69.95.
#[test]
fn billing_prices_weekly_items_in_a_four_week_plan() {
    let mut server = TestServer::start_with_config(METERS);
    create_features(&server);
    publish(
        &server,
        &json!({
            "key": "weekly", "name": "Weekly", "currency": "USD", "billingCadence": "P4W",
            "phases": [{"key": "default", "name": "Default", "duration": null, "rateCards": [
                {"type": "flat_fee", "key": "seat", "name": "Seat fee", "billingCadence": "P1W",
                 "price": {"type": "flat", "amount": "5", "paymentTerm": "in_advance"}},
                {"type": "usage_based", "key": "calls", "name": "Calls", "featureKey": "calls",
                 "billingCadence": "P1W", "price": {"type": "unit", "amount": "0.15"}}
            ]}]
        }),
    );
    create_customer(&server, "acme");
    let sub = subscribe(
        &server,
        &json!({"customerKey": "acme", "plan": {"key": "weekly"}}),
    );
    let start = minute(time(&sub["activeFrom"]));
    let first = wait_invoices(&server, "USD", PAID, 1).remove(0);
    assert_eq!(amount(&first["totals"]["total"]), dec("20"), "{first}");
    let mut weeks: Vec<DateTime<Utc>> = first["lines"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|l| time(&l["period"]["from"]))
        .collect();
    weeks.sort();
    let expected: Vec<DateTime<Utc>> = (0..4).map(|w| start + TimeDelta::weeks(w)).collect();
    assert_eq!(weeks, expected, "{first}");

    ingest(&server, "acme", &[("calls", &["333"][..])]);
    server.set_env(&[("METRON_BILLING_CLOCK_OFFSET_SECONDS", A_MONTH_LATER)]);
    server.restart();
    let all = wait_invoices(&server, "USD", PAID, 2);
    let second = &all[1];
    assert_eq!(amount(&second["totals"]["total"]), dec("69.95"), "{second}");
    let lines = second["lines"].as_array().cloned().unwrap_or_default();
    let calls: Vec<(DateTime<Utc>, Decimal)> = lines
        .iter()
        .filter(|l| l["name"] == "Calls")
        .map(|l| (time(&l["period"]["from"]), amount(&l["totals"]["total"])))
        .collect();
    assert_eq!(calls.len(), 4, "{second}");
    assert!(calls.contains(&(start, dec("49.95"))), "{calls:?}");
    let fees = lines.iter().filter(|l| l["name"] == "Seat fee").count();
    assert_eq!(fees, 4, "{second}");
}
