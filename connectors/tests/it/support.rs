//! A client wired to a fake, Metron invoices to sync, and the convergence check every sync test
//! ends with.

use chrono::{TimeZone, Utc};
use metron_connectors::stripe::sync::{InvoiceToSync, LineToSync, LineType};
use metron_connectors::stripe::{CollectionMethod, StripeClient, StripeConfig, TaxBehavior};
use metron_fake_stripe::{FakeConfig, FakeStripe, InvoiceStatus};
use std::time::Duration;

/// A fake whose `Fault::Timeout` holds a request longer than [`client`]'s timeout.
pub fn fake() -> FakeStripe {
    FakeStripe::start_with(FakeConfig {
        timeout_hold: Duration::from_millis(600),
        ..FakeConfig::default()
    })
    .expect("the fake starts")
}

/// A client that retries up to `retries_max` times with millisecond backoff. Ten retries
/// outlast a held request (the key answers 409 `idempotency_key_in_use` until it is released).
pub fn client(fake: &FakeStripe, retries_max: u32) -> StripeClient {
    StripeClient::new(StripeConfig {
        api_base: fake.base_url(),
        api_key: fake.api_key(),
        timeout: Duration::from_millis(250),
        retries_max,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(250),
    })
    .expect("a valid config")
}

pub fn line(id: &str, line_type: LineType, amount_minor: i64) -> LineToSync {
    LineToSync {
        line_id: id.to_owned(),
        line_type,
        amount_minor,
        description: format!("{id}: usage in period"),
        period_start: Utc.timestamp_opt(1_700_000_000, 0).single().expect("valid"),
        period_end: Utc.timestamp_opt(1_702_592_000, 0).single().expect("valid"),
        tax_behavior: Some(TaxBehavior::Exclusive),
        tax_code: Some("txcd_10000000".to_owned()),
    }
}

/// A Metron invoice with a line, its discount and its applied credit.
pub fn invoice(invoice_id: &str, stripe_customer_id: &str) -> InvoiceToSync {
    with_lines(
        invoice_id,
        stripe_customer_id,
        vec![
            line("d1", LineType::Discount, -500),
            line("c1", LineType::Credit, -225),
            line("l1", LineType::Line, 7725),
            line("l2", LineType::Line, 1000),
        ],
    )
}

pub fn with_lines(
    invoice_id: &str,
    stripe_customer_id: &str,
    lines: Vec<LineToSync>,
) -> InvoiceToSync {
    InvoiceToSync {
        invoice_id: invoice_id.to_owned(),
        namespace: "default".to_owned(),
        app_id: "app1".to_owned(),
        customer_id: "customer-1".to_owned(),
        stripe_customer_id: stripe_customer_id.to_owned(),
        currency: "USD".to_owned(),
        collection_method: CollectionMethod::ChargeAutomatically,
        days_until_due: None,
        default_payment_method: None,
        automatic_tax: false,
        expected_total_minor: lines.iter().map(|l| l.amount_minor).sum(),
        lines,
    }
}

/// The fake holds exactly one invoice for `metron`, in `status`, with exactly one item per
/// Metron line carrying its amount, and saw no request that broke the spec. Returns the
/// invoice's id.
pub fn assert_converged(
    fake: &FakeStripe,
    metron: &InvoiceToSync,
    status: InvoiceStatus,
) -> String {
    let state = fake.state();
    let invoices: Vec<_> = state
        .invoices
        .iter()
        .filter(|i| i.metadata.get("om_invoice_id") == Some(&metron.invoice_id))
        .collect();
    assert_eq!(invoices.len(), 1, "one Stripe invoice: {invoices:#?}");
    let stripe = invoices[0];
    assert_eq!(stripe.status, status);
    let items: Vec<_> = state
        .invoice_items
        .iter()
        .filter(|item| item.invoice.as_deref() == Some(stripe.id.as_str()))
        .collect();
    let mut found: Vec<(String, i64)> = items
        .iter()
        .map(|i| {
            (
                i.metadata.get("om_line_id").cloned().unwrap_or_default(),
                i.amount,
            )
        })
        .collect();
    let mut expected: Vec<(String, i64)> = metron
        .lines
        .iter()
        .map(|l| (l.line_id.clone(), l.amount_minor))
        .collect();
    found.sort();
    expected.sort();
    assert_eq!(found, expected, "one item per line");
    assert_eq!(stripe.subtotal, metron.expected_total_minor);
    let unkeyed: Vec<_> = state
        .requests
        .iter()
        .filter(|r| r.method == "POST" && r.idempotency_key.is_none())
        .map(|r| r.path.clone())
        .collect();
    assert!(unkeyed.is_empty(), "every write carries a key: {unkeyed:?}");
    assert_eq!(fake.violations(), Vec::<String>::new());
    stripe.id.clone()
}
