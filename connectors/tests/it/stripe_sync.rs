//! The invoice sync against the fake: the straight path, line changes, every fault on every
//! call, and crashes (a sync abandoned at any call, then run again from what Metron stored).

use crate::support::{assert_converged, client, fake, invoice, line, with_lines};
use metron_connectors::stripe::sync::{
    self, Error as SyncError, InvoiceToSync, LineType, delete_invoice, finalize_invoice,
    upsert_invoice,
};
use metron_connectors::stripe::{
    CustomerCreate, InvoiceItemCreate, InvoiceStatus as Status, Period, StripeClient,
};
use metron_fake_stripe::{FakeConfig, FakeStripe, Fault, FaultRule, InvoiceStatus};
use std::time::{Duration, Instant};

fn posts(fake: &FakeStripe) -> Vec<String> {
    fake.state()
        .requests
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// What the billing actor does when issuing: upsert (storing the id it gets), then finalize.
/// Returns the error of the first failing call, leaving `stored` as Metron would have it.
fn issue(
    stripe: &StripeClient,
    metron: &InvoiceToSync,
    stored: &mut Option<String>,
) -> Result<sync::FinalizedInvoice, SyncError> {
    let synced = upsert_invoice(stripe, metron, stored.as_deref())?;
    *stored = Some(synced.stripe_invoice_id.clone());
    finalize_invoice(stripe, &synced.stripe_invoice_id, &metron.invoice_id, false)
}

/// Create → items → lines → finalize, then both again: the repeats write nothing new.
#[test]
fn an_invoice_is_created_with_its_items_and_finalized_once() {
    let fake = fake();
    let stripe = client(&fake, 2);
    let customer = fake.create_customer("ACME", Some("a@acme.example"));
    fake.create_payment_method(&customer).expect("a card");
    let metron = invoice("inv1", &customer);

    let synced = upsert_invoice(&stripe, &metron, None).expect("synced");
    assert_eq!(synced.status, Status::Draft);
    assert_eq!(synced.number, None);
    assert_eq!(synced.stripe_subtotal, 8000);
    assert_eq!(synced.lines.len(), 4);
    for line in synced.lines.values() {
        assert!(line.line_item_id.starts_with("il_") && line.invoice_item_id.starts_with("ii_"));
    }
    assert_converged(&fake, &metron, InvoiceStatus::Draft);
    let writes = posts(&fake);
    assert_eq!(writes.len(), 5, "{writes:?}");

    let again = upsert_invoice(&stripe, &metron, Some(&synced.stripe_invoice_id)).expect("synced");
    assert_eq!(again, synced);
    assert_eq!(posts(&fake), writes, "an unchanged invoice writes nothing");

    let finalized =
        finalize_invoice(&stripe, &synced.stripe_invoice_id, "inv1", false).expect("finalized");
    assert_eq!(finalized.status, Status::Open);
    assert!(
        finalized
            .number
            .as_deref()
            .is_some_and(|n| n.ends_with("-0001"))
    );
    assert!(
        finalized
            .payment_intent
            .as_deref()
            .is_some_and(|p| p.starts_with("pi_"))
    );
    assert_eq!(finalized.total, 8000);
    let id = assert_converged(&fake, &metron, InvoiceStatus::Open);
    let state = fake.state();
    let stored = state
        .invoices
        .iter()
        .find(|i| i.id == id)
        .expect("the invoice");
    assert_eq!(stored.currency, "usd");
    assert_eq!(stored.collection_method, "charge_automatically");
    assert!(stored.auto_advance, "finalized with auto_advance=true");

    // Issuing repeated after a crash: the upsert checks the open invoice, finalize reports it.
    let repeat = upsert_invoice(&stripe, &metron, Some(&id)).expect("still Metron's");
    assert_eq!(repeat.status, Status::Open);
    let refinalized = finalize_invoice(&stripe, &id, "inv1", false).expect("reported");
    assert_eq!(refinalized.number, finalized.number);
    assert_converged(&fake, &metron, InvoiceStatus::Open);

    // A change after finalizing cannot be made.
    let mut changed = metron.clone();
    changed.lines[2].amount_minor += 1;
    changed.expected_total_minor += 1;
    let error = upsert_invoice(&stripe, &changed, Some(&id)).expect_err("not a draft");
    assert!(
        matches!(
            error,
            SyncError::NotDraft {
                status: Status::Open,
                ..
            }
        ),
        "{error:?}"
    );
}

/// Updates go to the item (`ii_`), removed lines and foreign items are deleted, new lines
/// created; changing a line back gets through too (its update key differs).
#[test]
fn line_changes_update_delete_and_create_items() {
    let fake = fake();
    let stripe = client(&fake, 2);
    let customer = fake.create_customer("ACME", None);
    let metron = invoice("inv1", &customer);
    let id = upsert_invoice(&stripe, &metron, None)
        .expect("synced")
        .stripe_invoice_id;

    // Someone adds an item by hand on the draft: no Metron line claims it.
    let foreign = InvoiceItemCreate {
        customer: customer.clone(),
        invoice: Some(id.clone()),
        amount: 999,
        description: Some("manual".to_owned()),
        period: Period { start: 1, end: 2 },
        ..InvoiceItemCreate::default()
    };
    stripe
        .create_invoice_item(&foreign, "manual-1")
        .expect("added");

    let mut changed = metron.clone();
    changed.lines[2].amount_minor = 8000; // l1
    changed.lines[1].description = "credits applied for l1 (promo)".to_owned(); // c1
    changed.lines.remove(3); // l2
    changed.lines.push(line("l3", LineType::Line, 42));
    changed.expected_total_minor = changed.lines.iter().map(|l| l.amount_minor).sum();
    let before = posts(&fake).len();
    let synced = upsert_invoice(&stripe, &changed, Some(&id)).expect("synced");
    assert_converged(&fake, &changed, InvoiceStatus::Draft);
    let writes = posts(&fake)[before..].to_vec();
    let updates = writes
        .iter()
        .filter(|w| w.starts_with("POST /v1/invoiceitems/ii_"))
        .count();
    let deletes = writes
        .iter()
        .filter(|w| w.starts_with("DELETE /v1/invoiceitems/ii_"))
        .count();
    let creates = writes
        .iter()
        .filter(|w| *w == "POST /v1/invoiceitems")
        .count();
    assert_eq!((updates, deletes, creates), (2, 2, 1), "{writes:?}");
    assert_eq!(synced.stripe_subtotal, changed.expected_total_minor);

    // Back to the first version: the same keys would replay; these are new.
    upsert_invoice(&stripe, &metron, Some(&id)).expect("synced back");
    assert_converged(&fake, &metron, InvoiceStatus::Draft);
    upsert_invoice(&stripe, &changed, Some(&id)).expect("synced forth");
    assert_converged(&fake, &changed, InvoiceStatus::Draft);
}

/// Metron lost the id (a crash right after the create): the next upsert finds the draft by
/// `metadata[om_invoice_id]` instead of making a second one.
#[test]
fn an_upsert_without_the_stored_id_finds_the_earlier_draft() {
    let fake = fake();
    let stripe = client(&fake, 2);
    let customer = fake.create_customer("ACME", None);
    let metron = invoice("inv1", &customer);
    let first = upsert_invoice(&stripe, &metron, None).expect("synced");
    // Another Metron invoice of the same customer is a different draft.
    let other = with_lines("inv2", &customer, vec![line("x1", LineType::Line, 5)]);
    let second_invoice = upsert_invoice(&stripe, &other, None).expect("synced");
    assert_ne!(second_invoice.stripe_invoice_id, first.stripe_invoice_id);
    let again = upsert_invoice(&stripe, &metron, None).expect("synced");
    assert_eq!(again.stripe_invoice_id, first.stripe_invoice_id);
    assert_converged(&fake, &metron, InvoiceStatus::Draft);
    assert_converged(&fake, &other, InvoiceStatus::Draft);
}

/// Each fault kind, on each call of the way, is absorbed by the client's retries (and, for a
/// failure Stripe keeps for the key and replays, by a derived key once Stripe shows the write
/// did not happen): one invoice, one item per line, finalized.
#[test]
fn every_fault_on_every_call_yields_one_invoice_and_one_item_per_line() {
    let faults = [
        Fault::Status429 { lock_timeout: true },
        Fault::Status500,
        Fault::Status409,
        Fault::Timeout,
        Fault::Drop,
        Fault::FailAfterWrite,
        Fault::DropAfterWrite,
        Fault::StoredFailure,
        Fault::StoredFailureAfterWrite,
    ];
    let targets = [
        FaultRule::on("POST", "/v1/invoices", Fault::Drop), // the create
        FaultRule::on("POST", "/v1/invoiceitems", Fault::Drop), // the first item
        FaultRule::on("POST", "/v1/invoiceitems", Fault::Drop).nth(4), // the last item
        FaultRule::on("POST", "/v1/invoices/", Fault::Drop), // the finalize
        FaultRule::on("GET", "/v1/invoices/", Fault::Drop), // the first lines listing
    ];
    for fault in faults {
        for target in &targets {
            let fake = fake();
            let stripe = client(&fake, 10);
            let customer = fake.create_customer("ACME", None);
            fake.create_payment_method(&customer).expect("a card");
            let metron = invoice("inv1", &customer);
            fake.inject_rule(FaultRule {
                fault,
                ..target.clone()
            });
            let mut stored = None;
            let finalized = issue(&stripe, &metron, &mut stored)
                .unwrap_or_else(|e| panic!("{fault:?} on {target:?}: {e:?}"));
            assert_eq!(finalized.status, Status::Open);
            // A held request is recorded when the fake lets it go, after the client moved on.
            let deadline = Instant::now() + Duration::from_secs(10);
            let faulted = loop {
                let faulted = fake
                    .state()
                    .requests
                    .iter()
                    .filter(|r| r.fault.is_some())
                    .count();
                if faulted > 0 || Instant::now() > deadline {
                    break faulted;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            assert_eq!(faulted, 1, "{fault:?} on {target:?} fired once");
            assert_converged(&fake, &metron, InvoiceStatus::Open);
        }
    }
}

/// A crash at any call: with no retries, a fault on the k-th request abandons issuing there;
/// issuing again from what Metron stored (no id if the upsert never returned) converges.
#[test]
fn issuing_abandoned_at_any_call_converges_when_run_again() {
    let faults = [
        Fault::FailAfterWrite,
        Fault::DropAfterWrite,
        Fault::Status500,
        Fault::Drop,
        Fault::Status429 {
            lock_timeout: false,
        },
        Fault::StoredFailure,
        Fault::StoredFailureAfterWrite,
    ];
    let clean_requests = {
        let fake = fake();
        let customer = fake.create_customer("ACME", None);
        let mut stored = None;
        issue(&client(&fake, 0), &invoice("inv1", &customer), &mut stored).expect("issued");
        fake.state().requests.len()
    };
    assert!(clean_requests >= 9, "{clean_requests}");
    for fault in faults {
        for k in 1..=clean_requests {
            let fake = fake();
            let stripe = client(&fake, 0);
            let customer = fake.create_customer("ACME", None);
            let metron = invoice("inv1", &customer);
            fake.inject_rule(FaultRule::next(fault).nth(u32::try_from(k).expect("small")));
            let mut stored = None;
            // The attempt may still succeed: a create whose answer was lost finds its draft.
            let finalized = match issue(&stripe, &metron, &mut stored) {
                Ok(finalized) => finalized,
                Err(_) => issue(&stripe, &metron, &mut stored)
                    .unwrap_or_else(|e| panic!("{fault:?} at request {k}, run again: {e:?}")),
            };
            let fired = fake
                .state()
                .requests
                .iter()
                .filter(|r| r.fault.is_some())
                .count();
            assert_eq!(fired, 1, "{fault:?} at request {k}");
            assert_eq!(finalized.status, Status::Open);
            assert_converged(&fake, &metron, InvoiceStatus::Open);
        }
    }
}

/// Random faults on a fifth of all requests, every failure treated as a crash: issuing is run
/// again until it succeeds, and the result is always exactly Metron's invoice.
#[test]
fn random_faults_with_a_crash_on_every_failure_converge() {
    for seed in 1..=6 {
        let fake = FakeStripe::start_with(FakeConfig {
            seed,
            fault_rate: 0.2,
            fault_kinds: vec![
                Fault::Status429 { lock_timeout: true },
                Fault::Status500,
                Fault::Status409,
                Fault::Drop,
                Fault::FailAfterWrite,
                Fault::DropAfterWrite,
                Fault::StoredFailure,
                Fault::StoredFailureAfterWrite,
            ],
            ..FakeConfig::default()
        })
        .expect("the fake starts");
        let customer = fake.create_customer("ACME", None);
        let metron = invoice("inv1", &customer);
        let retries = u32::try_from(seed % 3).expect("small");
        let stripe = client(&fake, retries);
        let mut stored = None;
        let mut attempts = 0;
        let finalized = loop {
            attempts += 1;
            match issue(&stripe, &metron, &mut stored) {
                Ok(finalized) => break finalized,
                Err(error) => assert!(attempts < 100, "seed {seed}: still failing: {error:?}"),
            }
        };
        assert_eq!(finalized.status, Status::Open, "seed {seed}");
        assert_converged(&fake, &metron, InvoiceStatus::Open);
    }
}

/// Stripe cannot locate the customer for tax: with tax enforced that is the invoice's error and
/// the draft stays; otherwise the invoice is finalized without automatic tax, once.
#[test]
fn an_invalid_tax_location_fails_when_enforced_and_finalizes_without_tax_otherwise() {
    let fake = fake();
    let stripe = client(&fake, 2);
    let params = CustomerCreate {
        name: Some("Nowhere".to_owned()),
        ..CustomerCreate::default()
    };
    let customer = stripe
        .create_customer(&params, "customer-create-c1")
        .expect("created")
        .id;
    let mut metron = invoice("inv1", &customer);
    metron.automatic_tax = true;
    let id = upsert_invoice(&stripe, &metron, None)
        .expect("synced")
        .stripe_invoice_id;

    let error = finalize_invoice(&stripe, &id, "inv1", true).expect_err("enforced");
    assert!(
        matches!(error, SyncError::TaxLocationInvalid { .. }),
        "{error:?}"
    );
    assert!(error.is_validation());
    assert_converged(&fake, &metron, InvoiceStatus::Draft);

    let finalized = finalize_invoice(&stripe, &id, "inv1", false).expect("without tax");
    assert!(finalized.automatic_tax_disabled);
    assert_eq!(finalized.status, Status::Open);
    let again = finalize_invoice(&stripe, &id, "inv1", false).expect("reported");
    assert_eq!(again.number, finalized.number);
    assert_converged(&fake, &metron, InvoiceStatus::Open);
}

#[test]
fn deleting_a_draft_is_repeatable_and_an_open_invoice_is_not_deleted() {
    let fake = fake();
    let stripe = client(&fake, 2);
    let customer = fake.create_customer("ACME", None);
    let metron = invoice("inv1", &customer);
    let id = upsert_invoice(&stripe, &metron, None)
        .expect("synced")
        .stripe_invoice_id;
    delete_invoice(&stripe, &id).expect("deleted");
    assert!(fake.state().invoices.is_empty());
    delete_invoice(&stripe, &id).expect("already gone counts as deleted");

    let open = with_lines("inv2", &customer, vec![line("l1", LineType::Line, 100)]);
    let mut stored = None;
    issue(&stripe, &open, &mut stored).expect("issued");
    let error = delete_invoice(&stripe, stored.as_deref().expect("an id")).expect_err("open");
    assert!(
        matches!(
            error,
            SyncError::NotDraft {
                status: Status::Open,
                ..
            }
        ),
        "{error:?}"
    );
    assert_converged(&fake, &open, InvoiceStatus::Open);
}

/// The client never waits on a held request longer than its timeout before retrying, and the
/// fake's 409 `idempotency_key_in_use` while it holds the first is retried too.
#[test]
fn a_held_create_is_retried_until_the_key_is_free() {
    let fake = FakeStripe::start_with(FakeConfig {
        timeout_hold: Duration::from_millis(400),
        ..FakeConfig::default()
    })
    .expect("the fake starts");
    let stripe = client(&fake, 10);
    let customer = fake.create_customer("ACME", None);
    let metron = invoice("inv1", &customer);
    fake.inject_rule(FaultRule::on("POST", "/v1/invoiceitems", Fault::Timeout));
    upsert_invoice(&stripe, &metron, None).expect("synced");
    let in_use = fake
        .state()
        .requests
        .iter()
        .filter(|r| r.status == 409 && r.fault.is_none())
        .count();
    assert!(in_use >= 1, "the retry met the held key");
    assert_converged(&fake, &metron, InvoiceStatus::Draft);
}

/// A line removed and added back within the keys' lifetime: its create key is answered from
/// the cache with the deleted item (same params) or refused as an `idempotency_error` (other
/// params); either way the line is created again, once.
#[test]
fn a_line_removed_and_added_back_is_created_again() {
    let fake = fake();
    let stripe = client(&fake, 2);
    let customer = fake.create_customer("ACME", None);
    let metron = invoice("inv1", &customer);
    let id = upsert_invoice(&stripe, &metron, None)
        .expect("synced")
        .stripe_invoice_id;

    let mut without = metron.clone();
    let removed = without.lines.remove(3);
    without.expected_total_minor -= removed.amount_minor;
    upsert_invoice(&stripe, &without, Some(&id)).expect("removed");
    assert_converged(&fake, &without, InvoiceStatus::Draft);

    // The same params: Stripe would replay the deleted item.
    upsert_invoice(&stripe, &metron, Some(&id)).expect("added back");
    assert_converged(&fake, &metron, InvoiceStatus::Draft);
    let replayed = fake.state().requests.iter().filter(|r| r.replayed).count();
    assert!(
        replayed >= 1,
        "the first create was answered from the cache"
    );

    // Removed again, then back with another amount: the key's params differ.
    upsert_invoice(&stripe, &without, Some(&id)).expect("removed");
    let mut changed = metron.clone();
    changed.lines[3].amount_minor += 1;
    changed.expected_total_minor += 1;
    upsert_invoice(&stripe, &changed, Some(&id)).expect("added back changed");
    assert_converged(&fake, &changed, InvoiceStatus::Draft);
}

/// Voiding an issued invoice converges whatever Stripe keeps for the void's key: a 500 kept
/// before the write (a derived key voids it), a 500 kept after it (the read shows it void),
/// and a repeat of a void that went through.
#[test]
fn voiding_converges_through_failures_stripe_keeps_for_the_key() {
    for fault in [
        None,
        Some(Fault::StoredFailure),
        Some(Fault::StoredFailureAfterWrite),
        Some(Fault::FailAfterWrite),
    ] {
        let fake = fake();
        let stripe = client(&fake, 1);
        let customer = fake.create_customer("ACME", None);
        let metron = invoice("inv1", &customer);
        let mut stored = None;
        let finalized = issue(&stripe, &metron, &mut stored).expect("issued");
        if let Some(fault) = fault {
            fake.inject_rule(FaultRule::on("POST", "/v1/invoices/", fault));
        }
        let voided = sync::void_invoice(&stripe, &finalized.stripe_invoice_id, "inv1")
            .unwrap_or_else(|e| panic!("{fault:?}: {e:?}"));
        assert_eq!(voided.status, Status::Void, "{fault:?}");
        let again = sync::void_invoice(&stripe, &finalized.stripe_invoice_id, "inv1")
            .unwrap_or_else(|e| panic!("{fault:?}, again: {e:?}"));
        assert_eq!(again.status, Status::Void, "{fault:?}");
        assert_converged(&fake, &metron, InvoiceStatus::Void);
    }
}
