//! The pure half of the sync: what a listing of Stripe's lines makes it write, the keys it
//! uses, and the checks of Metron's input and Stripe's amounts.

use super::*;
use chrono::TimeZone;

fn at(unix: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(unix, 0).single().expect("valid")
}

fn line(id: &str, line_type: LineType, amount_minor: i64) -> LineToSync {
    LineToSync {
        line_id: id.to_owned(),
        line_type,
        amount_minor,
        description: format!("{id} usage"),
        period_start: at(1_700_000_000),
        period_end: at(1_702_592_000),
        tax_behavior: Some(TaxBehavior::Exclusive),
        tax_code: None,
    }
}

fn invoice(lines: Vec<LineToSync>) -> InvoiceToSync {
    InvoiceToSync {
        invoice_id: "inv1".to_owned(),
        namespace: "default".to_owned(),
        app_id: "app1".to_owned(),
        customer_id: "c1".to_owned(),
        stripe_customer_id: "cus_1".to_owned(),
        currency: "USD".to_owned(),
        collection_method: CollectionMethod::ChargeAutomatically,
        days_until_due: None,
        default_payment_method: None,
        automatic_tax: false,
        expected_total_minor: lines
            .iter()
            .fold(0_i64, |s, l| s.wrapping_add(l.amount_minor)),
        lines,
    }
}

/// The line Stripe lists after Metron's create of `line`.
fn listed(line: &LineToSync, n: u32) -> LineItem {
    LineItem {
        id: format!("il_{n}"),
        kind: "invoiceitem".to_owned(),
        invoice_item: Some(format!("ii_{n}")),
        amount: line.amount_minor,
        description: Some(line.description.clone()),
        period: period(line),
        metadata: item_metadata(line),
        ..LineItem::default()
    }
}

fn stripe_invoice(subtotal: i64, total: i64) -> Invoice {
    Invoice {
        id: "in_1".to_owned(),
        customer: "cus_1".to_owned(),
        currency: "usd".to_owned(),
        subtotal,
        total,
        ..Invoice::default()
    }
}

#[test]
fn an_empty_draft_gets_one_create_per_line_keyed_by_metrons_ids() {
    let inv = invoice(vec![
        line("d1", LineType::Discount, -100),
        line("l1", LineType::Line, 7725),
    ]);
    let plan = plan(&inv, "in_1", &[]);
    assert!(plan.updates.is_empty() && plan.deletes.is_empty());
    let keys: Vec<&str> = plan.creates.iter().map(|(_, _, k)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["invoiceitem-create-inv1-d1", "invoiceitem-create-inv1-l1"]
    );
    let (_, params, _) = &plan.creates[0];
    assert_eq!(params.amount, -100);
    assert_eq!(params.invoice.as_deref(), Some("in_1"));
    assert_eq!(params.customer, "cus_1");
    assert_eq!(params.currency.as_deref(), Some("usd"));
    assert_eq!(
        params.period,
        Period {
            start: 1_700_000_000,
            end: 1_702_592_000
        }
    );
    assert_eq!(
        params.metadata.get(META_LINE_ID).map(String::as_str),
        Some("d1")
    );
    assert_eq!(
        params.metadata.get(META_LINE_TYPE).map(String::as_str),
        Some("discount")
    );
}

#[test]
fn a_draft_that_already_holds_every_line_needs_no_write() {
    let lines = vec![
        line("l1", LineType::Line, 10),
        line("c1", LineType::Credit, -3),
    ];
    let listing: Vec<LineItem> = lines.iter().zip(1..).map(|(l, n)| listed(l, n)).collect();
    assert_eq!(plan(&invoice(lines), "in_1", &listing), Plan::default());
}

#[test]
fn a_changed_line_is_updated_by_its_item_id_under_a_key_that_names_the_change() {
    let before = line("l1", LineType::Line, 10);
    let mut after = before.clone();
    after.amount_minor = 20;
    let listing = [listed(&before, 7)];
    let plan_up = plan(&invoice(vec![after.clone()]), "in_1", &listing);
    assert!(plan_up.creates.is_empty() && plan_up.deletes.is_empty());
    let (line_id, item_id, params, key_up) = &plan_up.updates[0];
    assert_eq!((line_id.as_str(), item_id.as_str()), ("l1", "ii_7"));
    assert_eq!(params.amount, Some(20));
    assert!(
        key_up.starts_with("invoiceitem-update-inv1-l1-"),
        "{key_up}"
    );

    // A change Stripe does not echo (the tax code) is seen through the line hash.
    let mut coded = before.clone();
    coded.tax_code = Some("txcd_10000000".to_owned());
    let plan_coded = plan(&invoice(vec![coded]), "in_1", &listing);
    assert_eq!(plan_coded.updates.len(), 1);
    assert_ne!(&plan_coded.updates[0].3, key_up);

    // Changing back gets a key of its own, so Stripe cannot answer it from the first change.
    let plan_back = plan(&invoice(vec![before]), "in_1", &[listed(&after, 7)]);
    assert_ne!(&plan_back.updates[0].3, key_up);
}

#[test]
fn items_no_metron_line_claims_are_deleted_and_other_lines_left_alone() {
    let kept = line("l1", LineType::Line, 10);
    let mut unknown = listed(&line("gone", LineType::Line, 5), 2);
    unknown
        .metadata
        .insert(META_LINE_ID.to_owned(), "gone".to_owned());
    let mut manual = listed(&kept, 3);
    manual.metadata.clear();
    let duplicate = listed(&kept, 4);
    let subscription = LineItem {
        id: "il_sub".to_owned(),
        kind: "subscription".to_owned(),
        amount: 99,
        ..LineItem::default()
    };
    let listing = [listed(&kept, 1), unknown, manual, duplicate, subscription];
    let plan = plan(&invoice(vec![kept]), "in_1", &listing);
    assert_eq!(plan.deletes, ["ii_2", "ii_3", "ii_4"]);
    assert!(plan.creates.is_empty() && plan.updates.is_empty());
}

#[test]
fn stripes_amounts_must_be_metrons() {
    let lines = vec![
        line("l1", LineType::Line, 100),
        line("d1", LineType::Discount, -30),
    ];
    let inv = invoice(lines.clone());
    let listing: Vec<LineItem> = lines.iter().zip(1..).map(|(l, n)| listed(l, n)).collect();

    let synced = check(&inv, &stripe_invoice(70, 70), &listing).expect("matches");
    assert_eq!(synced.stripe_invoice_id, "in_1");
    assert_eq!(
        synced.lines.get("d1"),
        Some(&SyncedLine {
            line_item_id: "il_2".to_owned(),
            invoice_item_id: "ii_2".to_owned()
        })
    );

    let total = check(&inv, &stripe_invoice(70, 77), &listing);
    assert!(
        matches!(
            total,
            Err(Error::TotalMismatch {
                total_minor: 77,
                ..
            })
        ),
        "{total:?}"
    );
    let subtotal = check(&inv, &stripe_invoice(71, 71), &listing);
    assert!(matches!(
        subtotal,
        Err(Error::TotalMismatch {
            subtotal_minor: 71,
            ..
        })
    ));
    // With automatic tax Stripe adds tax to the total; the subtotal is still Metron's.
    let mut taxed = stripe_invoice(70, 77);
    taxed.automatic_tax.enabled = true;
    assert!(check(&inv, &taxed, &listing).is_ok());

    let mut wrong_line = listing.clone();
    wrong_line[1].amount = -31;
    let error = check(&inv, &stripe_invoice(69, 69), &wrong_line).expect_err("mismatch");
    assert!(
        matches!(&error, Error::LineMismatch { line_id, found_minor: Some(-31), .. } if line_id == "d1")
    );
    assert!(error.is_validation());
    let missing = check(&inv, &stripe_invoice(100, 100), &listing[..1]);
    assert!(matches!(
        missing,
        Err(Error::LineMismatch {
            found_minor: None,
            ..
        })
    ));
    let twice = [listing[0].clone(), listing[1].clone(), listed(&lines[1], 9)];
    assert!(matches!(
        check(&inv, &stripe_invoice(40, 40), &twice),
        Err(Error::LineMismatch { .. })
    ));
}

#[test]
fn metrons_input_is_checked_before_any_call() {
    let ok = invoice(vec![line("l1", LineType::Line, 1)]);
    assert!(check_input(&ok).is_ok());
    let mut cases = Vec::new();
    let mut repeated = invoice(vec![
        line("l1", LineType::Line, 1),
        line("l1", LineType::Line, 1),
    ]);
    repeated.expected_total_minor = 2;
    cases.push(repeated);
    let mut sum = ok.clone();
    sum.expected_total_minor = 2;
    cases.push(sum);
    let mut backwards = ok.clone();
    backwards.lines[0].period_end = at(0);
    cases.push(backwards);
    let mut send = ok.clone();
    send.collection_method = CollectionMethod::SendInvoice;
    cases.push(send);
    let mut currency = ok.clone();
    currency.currency = "US".to_owned();
    cases.push(currency);
    let mut overflow = invoice(vec![
        line("a", LineType::Line, i64::MAX),
        line("b", LineType::Line, 1),
    ]);
    overflow.expected_total_minor = 0;
    cases.push(overflow);
    for case in cases {
        assert!(
            matches!(check_input(&case), Err(Error::Input { .. })),
            "{case:?}"
        );
    }
}

#[test]
fn keys_are_deterministic_distinct_and_within_stripes_limit() {
    assert_eq!(
        idempotency_key(&["invoice-create", "inv1"]),
        "invoice-create-inv1"
    );
    let long = "x".repeat(300);
    let a = idempotency_key(&["invoiceitem-create", &long, "l1"]);
    let b = idempotency_key(&["invoiceitem-create", &long, "l2"]);
    assert!(a.len() <= IDEMPOTENCY_KEY_BYTES_MAX && a.starts_with("invoiceitem-create-"));
    assert_ne!(a, b);
    assert_eq!(a, idempotency_key(&["invoiceitem-create", &long, "l1"]));
}

#[test]
fn the_create_params_carry_metrons_ids_and_lower_case_currency() {
    let mut inv = invoice(Vec::new());
    inv.collection_method = CollectionMethod::SendInvoice;
    inv.days_until_due = Some(14);
    let params = invoice_create(&inv);
    assert_eq!(params.currency, "usd");
    assert!(!params.auto_advance);
    assert_eq!(params.days_until_due, Some(14));
    for (key, value) in [
        (META_NAMESPACE, "default"),
        (META_APP_ID, "app1"),
        (META_CUSTOMER_ID, "c1"),
        (META_INVOICE_ID, "inv1"),
    ] {
        assert_eq!(params.metadata.get(key).map(String::as_str), Some(value));
    }
    // days_until_due is only sent with send_invoice (Stripe refuses it otherwise).
    inv.collection_method = CollectionMethod::ChargeAutomatically;
    assert_eq!(invoice_create(&inv).days_until_due, None);
}

#[test]
fn each_update_bumps_the_revision_so_no_two_updates_share_a_key() {
    let first = line("l1", LineType::Line, 10);
    let mut second = first.clone();
    second.amount_minor = 20;
    let mut listed_first = listed(&first, 1);
    let up = plan(
        &invoice(vec![second.clone()]),
        "in_1",
        &[listed_first.clone()],
    );
    let (_, _, params, key_first) = &up.updates[0];
    assert_eq!(
        params.metadata.get(META_LINE_REVISION).map(String::as_str),
        Some("1")
    );
    // The same change from a later revision (first → second → first → second).
    listed_first
        .metadata
        .insert(META_LINE_REVISION.to_owned(), "2".to_owned());
    let again = plan(&invoice(vec![second]), "in_1", &[listed_first]);
    let (_, _, params, key_again) = &again.updates[0];
    assert_eq!(
        params.metadata.get(META_LINE_REVISION).map(String::as_str),
        Some("3")
    );
    assert_ne!(key_first, key_again);
    // The revision alone is no difference to sync.
    let mut bumped = listed(&first, 1);
    bumped
        .metadata
        .insert(META_LINE_REVISION.to_owned(), "7".to_owned());
    assert_eq!(
        plan(&invoice(vec![first]), "in_1", &[bumped]),
        Plan::default()
    );
}
