//! The invoice sync (contract §1.4, §1.5, §1.8): a Metron invoice becomes a Stripe draft with
//! one invoice item per line, discount and credit, and is then finalized.
//!
//! Every step is safe to repeat after a crash at any point, because each write either carries a
//! deterministic `Idempotency-Key` derived from Metron's ids or is preceded by a read of what
//! Stripe already holds:
//! - the draft: an earlier draft for this Metron invoice is found by `metadata[om_invoice_id]`
//!   among the customer's drafts, else created with `invoice-create-{invoiceId}`;
//! - the items: Stripe's lines are listed and matched by `metadata[om_line_id]`; a missing line is
//!   created with `invoiceitem-create-{invoiceId}-{lineId}`, a changed one updated by its `ii_` id
//!   with a key that hashes the change and the state it changes from (with a revision kept in
//!   the item's metadata, so keys never repeat), a line no Metron line claims is deleted;
//! - the result: the lines are listed again and Stripe's amounts compared with Metron's; a
//!   mismatch is an error ([`Error::is_validation`]), never accepted silently;
//! - finalize: `invoice-finalize-{invoiceId}`; an invoice already finalized is reported as it is.
//!
//! The decisions ([`plan`], [`check`]) are pure functions of what was read; the IO around them
//! is in [`upsert_invoice`], [`finalize_invoice`] and [`delete_invoice`].

use super::client::{self, StripeClient};
use super::config::IDEMPOTENCY_KEY_BYTES_MAX;
use super::form::Form;
use super::types::{
    CollectionMethod, Invoice, InvoiceCreate, InvoiceItemCreate, InvoiceItemUpdate, InvoiceStatus,
    InvoiceUpdate, LineItem, Metadata, Period, TaxBehavior,
};
use chrono::{DateTime, Utc};
use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet};
use tracing::{info, warn};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Metadata keys Metron writes (OpenMeter's names).
pub const META_NAMESPACE: &str = "om_namespace";
pub const META_APP_ID: &str = "om_app_id";
pub const META_CUSTOMER_ID: &str = "om_customer_id";
pub const META_INVOICE_ID: &str = "om_invoice_id";
pub const META_LINE_ID: &str = "om_line_id";
pub const META_LINE_TYPE: &str = "om_line_type";
/// A hash of everything Metron sent for a line, so a change Stripe does not echo back (say a
/// tax code) is still seen.
pub const META_LINE_HASH: &str = "om_line_hash";
/// How many times Metron updated the item (absent: never). Update keys hash the state they
/// change from, revision included, so a line changed back and forth within Stripe's 24 h key
/// window still gets a fresh key each time.
pub const META_LINE_REVISION: &str = "om_line_rev";
/// The same for the invoice's own updates.
pub const META_INVOICE_REVISION: &str = "om_invoice_rev";

/// One Metron invoice as Stripe should hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceToSync {
    /// Metron's invoice id: every idempotency key derives from it.
    pub invoice_id: String,
    pub namespace: String,
    pub app_id: String,
    /// Metron's customer id.
    pub customer_id: String,
    pub stripe_customer_id: String,
    /// ISO 4217 code, either case (sent lower-case).
    pub currency: String,
    pub collection_method: CollectionMethod,
    /// Sent with `send_invoice` only.
    pub days_until_due: Option<u32>,
    pub default_payment_method: Option<String>,
    pub automatic_tax: bool,
    /// In invoice order: for each leaf line its discounts, its credits, then itself.
    pub lines: Vec<LineToSync>,
    /// Σ line amounts, in minor units: what Stripe's subtotal must be.
    pub expected_total_minor: i64,
}

impl InvoiceToSync {
    /// A digest of everything sent to Stripe (128 bits of SHA-256, as the keys hash). Equal
    /// digests mean the Stripe draft synced from one needs no update to match the other; it is
    /// only compared within one version of Metron (a new version may digest differently, which
    /// costs one re-sync).
    pub fn digest(&self) -> String {
        hash_hex(&[&format!("{self:?}")])
    }
}

/// `metadata[om_line_type]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineType {
    Line,
    Discount,
    Credit,
}

impl LineType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Line => "line",
            Self::Discount => "discount",
            Self::Credit => "credit",
        }
    }
}

/// One invoice item to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineToSync {
    /// Metron's line, discount or credit id (`metadata[om_line_id]`).
    pub line_id: String,
    pub line_type: LineType,
    /// Signed minor units: discounts and credits are negative.
    pub amount_minor: i64,
    pub description: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub tax_behavior: Option<TaxBehavior>,
    pub tax_code: Option<String>,
}

/// Where a Metron line lives in Stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedLine {
    /// `il_…`, the line on the invoice.
    pub line_item_id: String,
    /// `ii_…`, the invoice item behind it (the id mutations use).
    pub invoice_item_id: String,
}

/// The draft after a sync, checked against Metron's amounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedInvoice {
    pub stripe_invoice_id: String,
    /// Empty while a draft.
    pub number: Option<String>,
    pub status: InvoiceStatus,
    /// By Metron line id.
    pub lines: BTreeMap<String, SyncedLine>,
    pub stripe_subtotal: i64,
    pub stripe_total: i64,
}

/// The invoice once Stripe finalized it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalizedInvoice {
    pub stripe_invoice_id: String,
    /// Stripe numbers invoices; it is the source of truth.
    pub number: Option<String>,
    /// `pi_…`, when something is to be charged.
    pub payment_intent: Option<String>,
    pub status: InvoiceStatus,
    pub total: i64,
    pub amount_due: i64,
    /// Automatic tax was turned off to finalize (tax not enforced, location invalid).
    pub automatic_tax_disabled: bool,
}

/// A Stripe call of the sync, for errors and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    FindInvoice,
    CreateInvoice,
    ReadInvoice,
    UpdateInvoice,
    ListLines,
    CreateItem,
    UpdateItem,
    DeleteItem,
    FinalizeInvoice,
    DeleteInvoice,
    VoidInvoice,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::FindInvoice => "finding the draft invoice",
            Self::CreateInvoice => "creating the invoice",
            Self::ReadInvoice => "reading the invoice",
            Self::UpdateInvoice => "updating the invoice",
            Self::ListLines => "listing the invoice lines",
            Self::CreateItem => "creating an invoice item",
            Self::UpdateItem => "updating an invoice item",
            Self::DeleteItem => "deleting an invoice item",
            Self::FinalizeInvoice => "finalizing the invoice",
            Self::DeleteInvoice => "deleting the invoice",
            Self::VoidInvoice => "voiding the invoice",
        };
        f.write_str(name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the invoice to sync is invalid: {reason}")]
    Input { reason: String },
    #[error("Stripe failed {step} (invoice {stripe_invoice_id:?}, line {line_id:?})")]
    Stripe {
        step: Step,
        stripe_invoice_id: Option<String>,
        line_id: Option<String>,
        #[source]
        source: Box<client::Error>,
    },
    #[error("Stripe invoice {stripe_invoice_id} is {status:?}, not a draft")]
    NotDraft {
        stripe_invoice_id: String,
        status: InvoiceStatus,
    },
    #[error("Stripe invoice {stripe_invoice_id} does not belong to this invoice: {reason}")]
    Conflict {
        stripe_invoice_id: String,
        reason: String,
    },
    #[error(
        "Stripe's line for {line_id} on {stripe_invoice_id} is {found_minor:?}, Metron's is {expected_minor}"
    )]
    LineMismatch {
        stripe_invoice_id: String,
        line_id: String,
        expected_minor: i64,
        /// Absent when Stripe has no line for it.
        found_minor: Option<i64>,
    },
    #[error(
        "Stripe computed subtotal {subtotal_minor} and total {total_minor} for {stripe_invoice_id}; Metron expects {expected_minor}"
    )]
    TotalMismatch {
        stripe_invoice_id: String,
        expected_minor: i64,
        subtotal_minor: i64,
        total_minor: i64,
    },
    #[error(
        "Stripe cannot tax invoice {stripe_invoice_id}: the customer's tax location is invalid ({message})"
    )]
    TaxLocationInvalid {
        stripe_invoice_id: String,
        message: String,
    },
}

impl Error {
    /// Whether this is an invoice validation issue (Metron's data or Stripe's answer disagree,
    /// or Stripe refused the request as invalid), as opposed to a failure worth retrying.
    pub fn is_validation(&self) -> bool {
        match self {
            Self::Input { .. }
            | Self::NotDraft { .. }
            | Self::Conflict { .. }
            | Self::LineMismatch { .. }
            | Self::TotalMismatch { .. }
            | Self::TaxLocationInvalid { .. } => true,
            Self::Stripe { source, .. } => matches!(
                **source,
                client::Error::Api { status: 400 | 402, ref kind, .. } if kind != "idempotency_error"
            ),
        }
    }

    fn stripe(
        step: Step,
        invoice: Option<&str>,
        line: Option<&str>,
        source: client::Error,
    ) -> Self {
        Self::Stripe {
            step,
            stripe_invoice_id: invoice.map(str::to_owned),
            line_id: line.map(str::to_owned),
            source: Box::new(source),
        }
    }
}

/// Makes the Stripe draft hold exactly `invoice`'s lines, creating the draft when
/// `existing_stripe_invoice_id` is absent. Repeating it, after success or a failure at any
/// point, converges to the same draft with one item per line and never creates a second draft
/// or item. The caller stores `stripe_invoice_id` (and may do so before retrying a failure).
/// An invoice finalized already is checked and reported as it is when its lines are Metron's
/// (issuing repeated after a crash), and is [`Error::NotDraft`] when they would change.
pub fn upsert_invoice(
    client: &StripeClient,
    invoice: &InvoiceToSync,
    existing_stripe_invoice_id: Option<&str>,
) -> Result<SyncedInvoice> {
    check_input(invoice)?;
    let draft = match existing_stripe_invoice_id {
        Some(id) => update_draft(client, invoice, id)?,
        None => create_draft(client, invoice)?,
    };
    let id = draft.id.as_str();
    let lines = list_lines(client, id)?;
    let plan = plan(invoice, id, &lines);
    // Finalized already (a repeat of issuing after a crash): fine while nothing is to change.
    if draft.status != InvoiceStatus::Draft {
        if plan != Plan::default() {
            return Err(Error::NotDraft {
                stripe_invoice_id: id.to_owned(),
                status: draft.status,
            });
        }
        return check(invoice, &draft, &lines);
    }
    let created = apply(client, invoice, id, &plan)?;
    let mut lines = list_lines(client, id)?;
    if recreate_stale(client, invoice, id, &created, &lines)? {
        lines = list_lines(client, id)?;
    }
    let current = client
        .invoice(id)
        .map_err(|e| Error::stripe(Step::ReadInvoice, Some(id), None, e))?;
    check(invoice, &current, &lines)
}

/// A create answered from Stripe's idempotency cache may name an item deleted since (a line
/// removed and added back within the key's 24 h). Each such line is created again under a key
/// naming the stale item: as deterministic, and never used before. Whether any was.
fn recreate_stale(
    client: &StripeClient,
    invoice: &InvoiceToSync,
    id: &str,
    created: &[(String, String)],
    lines: &[LineItem],
) -> Result<bool> {
    let mut any = false;
    for (line_id, item_id) in created {
        let listed = lines
            .iter()
            .any(|l| l.invoice_item.as_ref() == Some(item_id));
        let Some(line) = invoice.lines.iter().find(|l| &l.line_id == line_id) else {
            continue;
        };
        if listed {
            continue;
        }
        warn!(invoice_id = %invoice.invoice_id, line_id, stale_item = item_id, "Stripe replayed the create of a deleted invoice item; creating it again.");
        let key = idempotency_key(&[
            "invoiceitem-create",
            &invoice.invoice_id,
            line_id,
            "after",
            item_id,
        ]);
        client
            .create_invoice_item(&item_create(invoice, id, line), &key)
            .map_err(|e| Error::stripe(Step::CreateItem, Some(id), Some(line_id), e))?;
        any = true;
    }
    Ok(any)
}

/// Finalizes the draft with `auto_advance=true` so that Stripe collects. An invoice already
/// finalized (by an earlier attempt whose answer was lost) is reported as it is. When Stripe
/// cannot locate the customer for tax: with tax enforced that is [`Error::TaxLocationInvalid`];
/// otherwise automatic tax is turned off and the invoice finalized without it (OpenMeter's rule).
pub fn finalize_invoice(
    client: &StripeClient,
    stripe_invoice_id: &str,
    metron_invoice_id: &str,
    tax_enforced: bool,
) -> Result<FinalizedInvoice> {
    let id = stripe_invoice_id;
    let key = idempotency_key(&["invoice-finalize", metron_invoice_id]);
    let not_draft = || {
        let current = client
            .invoice(id)
            .map_err(|e| Error::stripe(Step::ReadInvoice, Some(id), None, e))?;
        Ok((current.status != InvoiceStatus::Draft).then_some(current))
    };
    let error = match write(&key, |key| client.finalize_invoice(id, key), not_draft)? {
        Ok(invoice) => return Ok(finalized(invoice, false)),
        Err(error) => error,
    };
    if error.code() != Some("customer_tax_location_invalid") {
        return already_finalized(client, id, Step::FinalizeInvoice, error)
            .map(|invoice| finalized(invoice, false));
    }
    let current = client
        .invoice(id)
        .map_err(|e| Error::stripe(Step::ReadInvoice, Some(id), None, e))?;
    if current.status != InvoiceStatus::Draft {
        let disabled = !current.automatic_tax.enabled;
        return Ok(finalized(current, disabled));
    }
    if tax_enforced {
        return Err(Error::TaxLocationInvalid {
            stripe_invoice_id: id.to_owned(),
            message: error.to_string(),
        });
    }
    warn!(
        stripe_invoice_id = id,
        metron_invoice_id,
        "Finalizing without automatic tax: Stripe cannot locate the customer and tax is not enforced."
    );
    if current.automatic_tax.enabled {
        let update = InvoiceUpdate {
            automatic_tax: Some(false),
            ..InvoiceUpdate::default()
        };
        update_invoice(client, metron_invoice_id, &current, update)?;
    }
    // The first key's answer (the tax error) is cached by Stripe, so this finalize needs its own.
    let key = idempotency_key(&["invoice-finalize", metron_invoice_id, "without-tax"]);
    match write(&key, |key| client.finalize_invoice(id, key), not_draft)? {
        Ok(invoice) => Ok(finalized(invoice, true)),
        Err(error) => already_finalized(client, id, Step::FinalizeInvoice, error)
            .map(|invoice| finalized(invoice, true)),
    }
}

/// Voids a finalized invoice (`POST /v1/invoices/{id}/void`). An invoice already void (by an
/// earlier attempt whose answer was lost) counts as voided.
pub fn void_invoice(
    client: &StripeClient,
    stripe_invoice_id: &str,
    metron_invoice_id: &str,
) -> Result<Invoice> {
    let id = stripe_invoice_id;
    let key = idempotency_key(&["invoice-void", metron_invoice_id]);
    let read = || {
        client
            .invoice(id)
            .map_err(|e| Error::stripe(Step::ReadInvoice, Some(id), None, e))
    };
    let void = || Ok(Some(read()?).filter(|i| i.status == InvoiceStatus::Void));
    match write(&key, |key| client.void_invoice(id, key), void)? {
        Ok(invoice) => Ok(invoice),
        Err(error) => match read() {
            Ok(current) if current.status == InvoiceStatus::Void => Ok(current),
            _ => Err(Error::stripe(Step::VoidInvoice, Some(id), None, error)),
        },
    }
}

/// Deletes a draft. A draft already gone counts as deleted; an invoice that is no longer a
/// draft cannot be deleted ([`Error::NotDraft`]).
pub fn delete_invoice(client: &StripeClient, stripe_invoice_id: &str) -> Result<()> {
    let id = stripe_invoice_id;
    match client.delete_invoice(id) {
        Ok(()) => Ok(()),
        Err(error) if error.not_found() => Ok(()),
        Err(error) => match client.invoice(id) {
            Ok(current) if current.status != InvoiceStatus::Draft => Err(Error::NotDraft {
                stripe_invoice_id: id.to_owned(),
                status: current.status,
            }),
            Err(read) if read.not_found() => Ok(()),
            _ => Err(Error::stripe(Step::DeleteInvoice, Some(id), None, error)),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// The draft

fn create_draft(client: &StripeClient, invoice: &InvoiceToSync) -> Result<Invoice> {
    // A draft from an attempt whose answer was lost, or whose key Stripe has since forgotten.
    if let Some(found) = find_draft(client, invoice)? {
        info!(invoice_id = %invoice.invoice_id, stripe_invoice_id = %found.id, "Found the Stripe draft of an earlier attempt.");
        return Ok(found);
    }
    let key = idempotency_key(&["invoice-create", &invoice.invoice_id]);
    let params = invoice_create(invoice);
    let sent = write(
        &key,
        |key| client.create_invoice(&params, key),
        || find_draft(client, invoice),
    )?;
    match sent {
        Ok(created) => {
            info!(invoice_id = %invoice.invoice_id, stripe_invoice_id = %created.id, "Created the Stripe draft.");
            Ok(created)
        }
        // Stripe may have made the draft and lost only the answer (and cached a 5xx for the key).
        Err(error) if error.is_retryable() => match find_draft(client, invoice) {
            Ok(Some(found)) => Ok(found),
            _ => Err(Error::stripe(Step::CreateInvoice, None, None, error)),
        },
        Err(error) => Err(Error::stripe(Step::CreateInvoice, None, None, error)),
    }
}

fn find_draft(client: &StripeClient, invoice: &InvoiceToSync) -> Result<Option<Invoice>> {
    let drafts = client
        .invoices(&invoice.stripe_customer_id, Some(InvoiceStatus::Draft))
        .map_err(|e| Error::stripe(Step::FindInvoice, None, None, e))?;
    Ok(drafts.into_iter().find(|d| {
        d.status == InvoiceStatus::Draft
            && d.metadata.get(META_INVOICE_ID) == Some(&invoice.invoice_id)
    }))
}

fn update_draft(client: &StripeClient, invoice: &InvoiceToSync, id: &str) -> Result<Invoice> {
    let current = client
        .invoice(id)
        .map_err(|e| Error::stripe(Step::ReadInvoice, Some(id), None, e))?;
    check_owner(invoice, &current)?;
    let update = invoice_update(invoice, &current);
    if update.is_empty() || current.status != InvoiceStatus::Draft {
        return Ok(current);
    }
    update_invoice(client, &invoice.invoice_id, &current, update)
}

/// Applies `update` to the draft `current`, bumping its revision. The key hashes the state it
/// changes from, revision included; revisions only grow, so no two updates share a key and a
/// change back is never answered from an earlier change's cache.
fn update_invoice(
    client: &StripeClient,
    metron_invoice_id: &str,
    current: &Invoice,
    mut update: InvoiceUpdate,
) -> Result<Invoice> {
    let id = current.id.as_str();
    let revision = next_revision(&current.metadata, META_INVOICE_REVISION);
    update
        .metadata
        .insert(META_INVOICE_REVISION.to_owned(), revision.clone());
    let key = idempotency_key(&[
        "invoice-update",
        metron_invoice_id,
        &hash_hex(&[&invoice_state(current), &update.to_form().encode()]),
    ]);
    let applied = || {
        let current = client
            .invoice(id)
            .map_err(|e| Error::stripe(Step::ReadInvoice, Some(id), None, e))?;
        Ok((current.metadata.get(META_INVOICE_REVISION) == Some(&revision)).then_some(current))
    };
    write(&key, |key| client.update_invoice(id, &update, key), applied)?
        .map_err(|e| Error::stripe(Step::UpdateInvoice, Some(id), None, e))
}

/// One more than the revision in `metadata` (absent is 0).
fn next_revision(metadata: &Metadata, key: &str) -> String {
    let current = metadata
        .get(key)
        .and_then(|r| r.parse::<u64>().ok())
        .unwrap_or(0);
    current.saturating_add(1).to_string()
}

fn check_owner(invoice: &InvoiceToSync, current: &Invoice) -> Result<()> {
    let conflict = |reason: String| Error::Conflict {
        stripe_invoice_id: current.id.clone(),
        reason,
    };
    if current.deleted {
        return Err(conflict("it was deleted".to_owned()));
    }
    if current.customer != invoice.stripe_customer_id {
        return Err(conflict(format!(
            "it is for customer {}, not {}",
            current.customer, invoice.stripe_customer_id
        )));
    }
    if !current.currency.eq_ignore_ascii_case(&invoice.currency) {
        return Err(conflict(format!(
            "it is in {}, not {}",
            current.currency, invoice.currency
        )));
    }
    match current.metadata.get(META_INVOICE_ID) {
        Some(other) if *other != invoice.invoice_id => {
            Err(conflict(format!("it is Metron invoice {other}'s")))
        }
        _ => Ok(()),
    }
}

fn invoice_create(invoice: &InvoiceToSync) -> InvoiceCreate {
    let metadata: Metadata = [
        (META_NAMESPACE, &invoice.namespace),
        (META_APP_ID, &invoice.app_id),
        (META_CUSTOMER_ID, &invoice.customer_id),
        (META_INVOICE_ID, &invoice.invoice_id),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.clone()))
    .collect();
    InvoiceCreate {
        customer: invoice.stripe_customer_id.clone(),
        currency: invoice.currency.to_ascii_lowercase(),
        auto_advance: false,
        collection_method: invoice.collection_method,
        days_until_due: days_until_due(invoice),
        default_payment_method: invoice.default_payment_method.clone(),
        automatic_tax: invoice.automatic_tax,
        pending_invoice_items_behavior: Some("exclude".to_owned()),
        metadata,
        ..InvoiceCreate::default()
    }
}

/// What differs between the draft and Metron's invoice-level settings.
fn invoice_update(invoice: &InvoiceToSync, current: &Invoice) -> InvoiceUpdate {
    let mut update = InvoiceUpdate::default();
    if current.automatic_tax.enabled != invoice.automatic_tax {
        update.automatic_tax = Some(invoice.automatic_tax);
    }
    if current.collection_method != invoice.collection_method {
        update.collection_method = Some(invoice.collection_method);
    }
    let days = days_until_due(invoice);
    if days.is_some() && current.days_until_due != days {
        update.days_until_due = days;
    }
    if invoice.default_payment_method.is_some()
        && current.default_payment_method != invoice.default_payment_method
    {
        update.default_payment_method = invoice.default_payment_method.clone();
    }
    update
}

fn days_until_due(invoice: &InvoiceToSync) -> Option<i64> {
    match invoice.collection_method {
        CollectionMethod::SendInvoice => invoice.days_until_due.map(i64::from),
        CollectionMethod::ChargeAutomatically => None,
    }
}

fn invoice_state(current: &Invoice) -> String {
    Form::new()
        .field("automatic_tax", current.automatic_tax.enabled)
        .field("collection_method", current.collection_method.as_str())
        .field_opt("days_until_due", current.days_until_due)
        .field_opt(
            "default_payment_method",
            current.default_payment_method.as_deref(),
        )
        .field_opt(
            "revision",
            current
                .metadata
                .get(META_INVOICE_REVISION)
                .map(String::as_str),
        )
        .encode()
}

// ---------------------------------------------------------------------------------------------
// The lines

/// The writes that make Stripe's lines Metron's, decided from one listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Metron lines Stripe does not have: `(line id, params, idempotency key)`.
    pub creates: Vec<(String, InvoiceItemCreate, String)>,
    /// Lines that differ: `(line id, ii_ id, params, idempotency key)`.
    pub updates: Vec<(String, String, InvoiceItemUpdate, String)>,
    /// `ii_` ids of items no Metron line claims (or a second item claiming the same line).
    pub deletes: Vec<String>,
}

/// Compares Stripe's lines with Metron's. Pure: the same listing always gives the same plan.
pub fn plan(invoice: &InvoiceToSync, stripe_invoice_id: &str, lines: &[LineItem]) -> Plan {
    let wanted: BTreeSet<&str> = invoice.lines.iter().map(|l| l.line_id.as_str()).collect();
    let mut claimed: BTreeMap<&str, &LineItem> = BTreeMap::new();
    let mut out = Plan::default();
    for line in lines {
        // Only invoice items can be changed; anything else shows up in the totals check.
        let Some(item_id) = line.invoice_item.as_deref() else {
            continue;
        };
        match line.metadata.get(META_LINE_ID).map(String::as_str) {
            Some(id) if wanted.contains(id) && !claimed.contains_key(id) => {
                claimed.insert(id, line);
            }
            _ => out.deletes.push(item_id.to_owned()),
        }
    }
    for line in &invoice.lines {
        match claimed.get(line.line_id.as_str()) {
            None => {
                let key =
                    idempotency_key(&["invoiceitem-create", &invoice.invoice_id, &line.line_id]);
                let params = item_create(invoice, stripe_invoice_id, line);
                out.creates.push((line.line_id.clone(), params, key));
            }
            Some(current) if differs(line, current) => {
                let mut update = item_update(line);
                let revision = next_revision(&current.metadata, META_LINE_REVISION);
                update
                    .metadata
                    .insert(META_LINE_REVISION.to_owned(), revision);
                let key = idempotency_key(&[
                    "invoiceitem-update",
                    &invoice.invoice_id,
                    &line.line_id,
                    &hash_hex(&[&line_state(current), &update.to_form().encode()]),
                ]);
                let item_id = current.invoice_item.clone().unwrap_or_default();
                out.updates
                    .push((line.line_id.clone(), item_id, update, key));
            }
            Some(_) => {}
        }
    }
    out
}

/// Runs a plan: deletes first (so a replaced line never counts twice), then updates, then
/// creates in Metron's order. Returns the `ii_` id each create answered with.
fn apply(
    client: &StripeClient,
    invoice: &InvoiceToSync,
    id: &str,
    plan: &Plan,
) -> Result<Vec<(String, String)>> {
    for item_id in &plan.deletes {
        match client.delete_invoice_item(item_id) {
            Ok(()) => {}
            Err(error) if error.not_found() => {}
            Err(error) => return Err(Error::stripe(Step::DeleteItem, Some(id), None, error)),
        }
    }
    // The item of a line as the draft holds it now, when its metadata says `wanted`.
    let on_draft = |line_id: &str, wanted: &dyn Fn(&LineItem) -> bool| -> Result<Option<String>> {
        Ok(list_lines(client, id)?
            .into_iter()
            .find(|l| {
                l.metadata.get(META_LINE_ID).map(String::as_str) == Some(line_id) && wanted(l)
            })
            .and_then(|l| l.invoice_item))
    };
    for (line_id, item_id, params, key) in &plan.updates {
        let revision = params.metadata.get(META_LINE_REVISION);
        write(
            key,
            |key| client.update_invoice_item(item_id, params, key).map(|_| ()),
            || {
                Ok(
                    on_draft(line_id, &|l| l.metadata.get(META_LINE_REVISION) == revision)?
                        .map(|_| ()),
                )
            },
        )?
        .map_err(|e| Error::stripe(Step::UpdateItem, Some(id), Some(line_id), e))?;
    }
    let mut created = Vec::with_capacity(plan.creates.len());
    for (line_id, params, key) in &plan.creates {
        let send = |key: &str| client.create_invoice_item(params, key).map(|item| item.id);
        let done = || on_draft(line_id, &|_| true);
        let item_id = match write(key, send, done)? {
            // The key was first used with other params (the line changed after a create whose
            // item never appeared): none of its items is on the draft, so a key naming these
            // params is as safe.
            Err(error) if error.kind() == Some("idempotency_error") => {
                let key = idempotency_key(&[
                    "invoiceitem-create",
                    &invoice.invoice_id,
                    line_id,
                    &hash_hex(&[&params.to_form().encode()]),
                ]);
                write(&key, send, done)?
            }
            other => other,
        }
        .map_err(|e| Error::stripe(Step::CreateItem, Some(id), Some(line_id), e))?;
        created.push((line_id.clone(), item_id));
    }
    Ok(created)
}

fn item_metadata(line: &LineToSync) -> Metadata {
    [
        (META_LINE_ID, line.line_id.clone()),
        (META_LINE_TYPE, line.line_type.as_str().to_owned()),
        (META_LINE_HASH, line_hash(line)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn period(line: &LineToSync) -> Period {
    Period {
        start: line.period_start.timestamp(),
        end: line.period_end.timestamp(),
    }
}

fn item_create(
    invoice: &InvoiceToSync,
    stripe_invoice_id: &str,
    line: &LineToSync,
) -> InvoiceItemCreate {
    InvoiceItemCreate {
        customer: invoice.stripe_customer_id.clone(),
        invoice: Some(stripe_invoice_id.to_owned()),
        amount: line.amount_minor,
        currency: Some(invoice.currency.to_ascii_lowercase()),
        description: Some(line.description.clone()),
        period: period(line),
        metadata: item_metadata(line),
        tax_behavior: line.tax_behavior,
        tax_code: line.tax_code.clone(),
    }
}

fn item_update(line: &LineToSync) -> InvoiceItemUpdate {
    InvoiceItemUpdate {
        amount: Some(line.amount_minor),
        description: Some(line.description.clone()),
        period: Some(period(line)),
        metadata: item_metadata(line),
        tax_behavior: line.tax_behavior,
        tax_code: line.tax_code.clone(),
    }
}

/// Whether Stripe's line differs from Metron's in anything Metron sends.
fn differs(line: &LineToSync, current: &LineItem) -> bool {
    current.amount != line.amount_minor
        || current.description.as_deref() != Some(line.description.as_str())
        || current.period != period(line)
        || current.metadata.get(META_LINE_TYPE).map(String::as_str) != Some(line.line_type.as_str())
        || current.metadata.get(META_LINE_HASH) != Some(&line_hash(line))
}

fn line_hash(line: &LineToSync) -> String {
    let fields = Form::new()
        .field("type", line.line_type.as_str())
        .field("amount", line.amount_minor)
        .field("description", line.description.as_str())
        .field("start", line.period_start.timestamp())
        .field("end", line.period_end.timestamp())
        .field_opt("tax_behavior", line.tax_behavior.map(TaxBehavior::as_str))
        .field_opt("tax_code", line.tax_code.as_deref());
    hash_hex(&[&fields.encode()])
}

fn line_state(current: &LineItem) -> String {
    Form::new()
        .field("amount", current.amount)
        .field_opt("description", current.description.as_deref())
        .field("start", current.period.start)
        .field("end", current.period.end)
        .field_opt(
            "hash",
            current.metadata.get(META_LINE_HASH).map(String::as_str),
        )
        .field_opt(
            "revision",
            current.metadata.get(META_LINE_REVISION).map(String::as_str),
        )
        .encode()
}

fn list_lines(client: &StripeClient, id: &str) -> Result<Vec<LineItem>> {
    client
        .invoice_lines(id)
        .map_err(|e| Error::stripe(Step::ListLines, Some(id), None, e))
}

// ---------------------------------------------------------------------------------------------
// Checks

fn check_input(invoice: &InvoiceToSync) -> Result<()> {
    let input = |reason: String| Err(Error::Input { reason });
    if invoice.invoice_id.is_empty() || invoice.stripe_customer_id.is_empty() {
        return input("the invoice id and the Stripe customer id are required".to_owned());
    }
    if invoice.currency.len() != 3 || !invoice.currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return input(format!("{:?} is not a currency code", invoice.currency));
    }
    if invoice.collection_method == CollectionMethod::SendInvoice
        && invoice.days_until_due.is_none()
    {
        return input("send_invoice needs days_until_due".to_owned());
    }
    let mut seen = BTreeSet::new();
    let mut sum: i64 = 0;
    for line in &invoice.lines {
        if line.line_id.is_empty() || !seen.insert(line.line_id.as_str()) {
            return input(format!("line id {:?} is empty or repeated", line.line_id));
        }
        if line.period_end < line.period_start {
            return input(format!("line {} ends before it starts", line.line_id));
        }
        let Some(next) = sum.checked_add(line.amount_minor) else {
            return input("the line amounts overflow".to_owned());
        };
        sum = next;
    }
    if sum != invoice.expected_total_minor {
        return input(format!(
            "the lines sum to {sum}, the expected total is {}",
            invoice.expected_total_minor
        ));
    }
    Ok(())
}

/// The synced draft, once every Metron line has exactly its amount in Stripe and Stripe's
/// subtotal (and, without automatic tax, its total) is Metron's expected total.
pub fn check(
    invoice: &InvoiceToSync,
    current: &Invoice,
    lines: &[LineItem],
) -> Result<SyncedInvoice> {
    let id = current.id.as_str();
    let mut synced = BTreeMap::new();
    for line in &invoice.lines {
        let mut matching = lines.iter().filter(|l| {
            l.metadata.get(META_LINE_ID) == Some(&line.line_id) && l.invoice_item.is_some()
        });
        let found = matching.next();
        let mismatch = |found_minor| Error::LineMismatch {
            stripe_invoice_id: id.to_owned(),
            line_id: line.line_id.clone(),
            expected_minor: line.amount_minor,
            found_minor,
        };
        let Some(found) = found else {
            return Err(mismatch(None));
        };
        if found.amount != line.amount_minor || matching.next().is_some() {
            return Err(mismatch(Some(found.amount)));
        }
        let synced_line = SyncedLine {
            line_item_id: found.id.clone(),
            invoice_item_id: found.invoice_item.clone().unwrap_or_default(),
        };
        synced.insert(line.line_id.clone(), synced_line);
    }
    let total_ok = current.automatic_tax.enabled || current.total == invoice.expected_total_minor;
    if current.subtotal != invoice.expected_total_minor || !total_ok {
        return Err(Error::TotalMismatch {
            stripe_invoice_id: id.to_owned(),
            expected_minor: invoice.expected_total_minor,
            subtotal_minor: current.subtotal,
            total_minor: current.total,
        });
    }
    Ok(SyncedInvoice {
        stripe_invoice_id: id.to_owned(),
        number: current.number.clone().filter(|n| !n.is_empty()),
        status: current.status,
        lines: synced,
        stripe_subtotal: current.subtotal,
        stripe_total: current.total,
    })
}

fn already_finalized(
    client: &StripeClient,
    id: &str,
    step: Step,
    error: client::Error,
) -> Result<Invoice> {
    match client.invoice(id) {
        Ok(current) if current.status != InvoiceStatus::Draft => {
            info!(stripe_invoice_id = id, %error, "The invoice was finalized by an earlier attempt.");
            Ok(current)
        }
        _ => Err(Error::stripe(step, Some(id), None, error)),
    }
}

fn finalized(invoice: Invoice, automatic_tax_disabled: bool) -> FinalizedInvoice {
    FinalizedInvoice {
        payment_intent: invoice.payment_intent.as_ref().map(|p| p.id().to_owned()),
        number: invoice.number.filter(|n| !n.is_empty()),
        status: invoice.status,
        total: invoice.total,
        amount_due: invoice.amount_due,
        automatic_tax_disabled,
        stripe_invoice_id: invoice.id,
    }
}

// ---------------------------------------------------------------------------------------------
// Keys

/// Most keys one write goes through while Stripe replays a kept 5xx.
const KEY_HOPS_MAX: usize = 4;

/// Sends a write under `key`. Stripe keeps the answer of a request that started executing, a
/// 500 included, and replays it to every retry under that key for 24 hours; the write may or
/// may not have happened. On such a replay `done` reads Stripe to tell: if it happened, its
/// result is taken; if not, the write is sent under a key derived from `key` and the replayed
/// request's id. The chain of keys is the same for every attempt (a crash and a retry derive
/// the same keys, and meet the same kept answers), and no key is reused for another write.
/// The outer error is `done`'s; the inner result is the last send's.
fn write<T>(
    key: &str,
    send: impl Fn(&str) -> client::Result<T>,
    done: impl Fn() -> Result<Option<T>>,
) -> Result<client::Result<T>> {
    let mut key = key.to_owned();
    for _ in 0..KEY_HOPS_MAX {
        let error = match send(&key) {
            Err(error) => error,
            ok => return Ok(ok),
        };
        let Some(original) = error.replayed_failure().map(str::to_owned) else {
            return Ok(Err(error));
        };
        if let Some(result) = done()? {
            return Ok(Ok(result));
        }
        warn!(key, original_request = %original, "Stripe replays a failure kept for the idempotency key and the write did not happen; sending it under a derived key.");
        key = idempotency_key(&[&key, "after", &original]);
    }
    Ok(send(&key))
}

/// `parts` joined with `-`; past Stripe's 255 bytes the tail after the first part is hashed, so
/// the key stays deterministic and distinct.
pub fn idempotency_key(parts: &[&str]) -> String {
    let key = parts.join("-");
    if key.len() <= IDEMPOTENCY_KEY_BYTES_MAX {
        return key;
    }
    let head = parts.first().copied().unwrap_or_default();
    let rest = parts.get(1..).unwrap_or_default().join("-");
    format!("{head}-{}", hash_hex(&[&rest]))
}

/// 128 bits of SHA-256 over the texts (each length-prefixed), in hex.
fn hash_hex(texts: &[&str]) -> String {
    let mut hasher = sha2::Sha256::new();
    for text in texts {
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests;
