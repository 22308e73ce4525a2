//! Invoices and their lines in the catalog (OpenMeter's `Invoice`, `InvoiceLine`).
//!
//! Every customer has one *gathering* invoice per currency that collects upcoming lines;
//! when lines fall due the billing service moves them, in one transaction, onto a new
//! *standard* invoice, which then follows the invoice state machine
//! (`metron_engine::invoicing`). A line generated from a subscription has a unique
//! `line_key` (subscription, item, billing period start): generating it twice, after a crash
//! or a retry, inserts nothing the second time. The catalog is the truth; the billing actor
//! rebuilds its schedule from it.
//!
//! Progressive billing splits a gathering usage line at a time: the part before it moves to a
//! standard invoice, the rest stays gathering under a new key (the group's key plus the split
//! time). Both parts share a [`Split`] group (OpenMeter's split line group); the split is
//! written in one transaction ([`Catalog::split_lines`]).

use crate::catalog::{Catalog, CatalogRow, Error as CatalogError, Tx, ms};
use chrono::{DateTime, Utc};
use metron_engine::billing::RateCard;
use metron_engine::invoicing::ExtendedStatus;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use std::collections::BTreeMap;

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// `Period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinePeriod {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// `InvoiceTotals`, amounts in the invoice currency, rounded to its minor unit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    #[serde(with = "metron_engine::billing::numeric")]
    pub amount: Decimal,
    #[serde(with = "metron_engine::billing::numeric")]
    pub charges_total: Decimal,
    #[serde(with = "metron_engine::billing::numeric")]
    pub discounts_total: Decimal,
    #[serde(with = "metron_engine::billing::numeric")]
    pub credits_total: Decimal,
    #[serde(with = "metron_engine::billing::numeric")]
    pub taxes_inclusive_total: Decimal,
    #[serde(with = "metron_engine::billing::numeric")]
    pub taxes_exclusive_total: Decimal,
    #[serde(with = "metron_engine::billing::numeric")]
    pub taxes_total: Decimal,
    #[serde(with = "metron_engine::billing::numeric")]
    pub total: Decimal,
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.amount += other.amount;
        self.charges_total += other.charges_total;
        self.discounts_total += other.discounts_total;
        self.credits_total += other.credits_total;
        self.taxes_inclusive_total += other.taxes_inclusive_total;
        self.taxes_exclusive_total += other.taxes_exclusive_total;
        self.taxes_total += other.taxes_total;
        self.total += other.total;
    }
}

/// Where a subscription line comes from (`InvoiceLineSubscriptionReference`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionRef {
    pub subscription_id: String,
    pub phase_id: String,
    pub item_id: String,
    pub billing_period: LinePeriod,
}

/// `InvoiceValidationIssue` (severity critical or warning).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationIssue {
    pub id: String,
    pub severity: String,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    pub message: String,
    pub component: String,
}

/// A detailed (child) line as rated, with its stable id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetailedLine {
    pub id: String,
    /// The rating's JSON of the detailed line (name, quantity, perUnitAmount,
    /// childUniqueReferenceID, period, paymentTerm, category, amountDiscounts, totals).
    pub rated: Value,
    pub totals: Totals,
}

/// A line's place in its split line group (OpenMeter's `SplitLineGroup`): a usage line billed
/// progressively, part by part, over the group's whole period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Split {
    /// The group's id (OpenMeter's `splitLineGroupId`), shared by every part.
    pub group_id: String,
    /// The key of the line split first (the whole period's line): what a subscription knows
    /// the group by.
    pub group_key: String,
    /// The whole service period the parts bill together (the rating's billing period).
    pub group_period: LinePeriod,
    /// Usage metered in the group before this part's period (snapshotted with the quantity).
    #[serde(default, with = "metron_engine::billing::numeric::option")]
    pub metered_pre_line_period_quantity: Option<Decimal>,
    /// The same after usage discounts (written by the rating).
    #[serde(default, with = "metron_engine::billing::numeric::option")]
    pub pre_line_period_quantity: Option<Decimal>,
    /// What earlier parts billed (the sum of their `totals.amount` on live standard invoices),
    /// read before each rating.
    #[serde(default, with = "metron_engine::billing::numeric")]
    pub previously_billed_amount: Decimal,
}

impl Split {
    /// The key of the part of `group_key` that starts at `at`.
    pub fn key_at(group_key: &str, at: DateTime<Utc>) -> String {
        format!("{group_key}/split/{}", at.timestamp())
    }
}

/// One invoice line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    pub id: String,
    pub invoice_id: String,
    pub customer_id: String,
    /// Unique per namespace: what makes generating a line idempotent.
    pub line_key: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// `subscription` | `manual` | `system`.
    pub managed_by: String,
    pub currency: String,
    pub period: LinePeriod,
    pub invoice_at: DateTime<Utc>,
    pub rate_card: RateCard,
    /// For a flat fee over part of its cadence period with pro-rating on: the full period.
    #[serde(default)]
    pub pro_rating_full_period: Option<LinePeriod>,
    #[serde(default)]
    pub subscription: Option<SubscriptionRef>,
    /// Usage snapshot: metered quantity in the period (none until snapshotted).
    #[serde(default, with = "metron_engine::billing::numeric::option")]
    pub metered_quantity: Option<Decimal>,
    #[serde(default, with = "metron_engine::billing::numeric::option")]
    pub quantity: Option<Decimal>,
    #[serde(default)]
    pub children: Vec<DetailedLine>,
    #[serde(default)]
    pub totals: Totals,
    /// The invoicing app's id of the line (Stripe: `il_…`).
    #[serde(default)]
    pub external_id: Option<String>,
    /// Progressive billing: the split line group this line is a part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// One invoice (the header; lines are rows of their own).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invoice {
    pub id: String,
    pub customer_id: String,
    pub currency: String,
    pub status: ExtendedStatus,
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// The customer as billed (`BillingInvoiceCustomerExtendedDetails`).
    pub customer: Value,
    /// `BillingParty` of the profile.
    pub supplier: Value,
    /// `InvoiceWorkflowSettings`: `{apps, sourceBillingProfileId, workflow}`.
    pub workflow: Value,
    pub invoicing_app_id: String,
    #[serde(default)]
    pub period: Option<LinePeriod>,
    #[serde(default)]
    pub totals: Totals,
    #[serde(default)]
    pub validation_issues: Vec<ValidationIssue>,
    #[serde(default)]
    pub external_invoicing_id: Option<String>,
    /// The digest of what the last successful draft sync sent to the invoicing app
    /// (`InvoiceToSync::digest`): issuing skips re-syncing a draft that has not changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_digest: Option<String>,
    #[serde(default)]
    pub external_payment_id: Option<String>,
    #[serde(default)]
    pub draft_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub collection_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub quantity_snapshoted_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub issued_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub due_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub voided_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub sent_to_customer_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub payment_processing_entered_at: Option<DateTime<Utc>>,
    /// The invoicing app (custom invoicing) holds draft syncing until it calls back.
    #[serde(default)]
    pub draft_sync_hook: bool,
    /// The invoicing app (custom invoicing) holds issuing until it calls back.
    #[serde(default)]
    pub issuing_sync_hook: bool,
    #[serde(default)]
    pub draft_synced_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub issuing_synced_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Invoice {
    pub fn is_gathering(&self) -> bool {
        self.status == ExtendedStatus::Gathering
    }
}

/// Filters of an invoice listing (`listInvoices`).
#[derive(Clone, Debug, Default)]
pub struct InvoiceFilter {
    pub customers: Vec<String>,
    pub statuses: Vec<String>,
    pub extended_statuses: Vec<String>,
    pub currencies: Vec<String>,
    pub include_deleted: bool,
}

fn decode<T: serde::de::DeserializeOwned>(row: &CatalogRow) -> Result<T> {
    let id: String = row.try_get("id")?;
    let definition: String = row.try_get("definition")?;
    serde_json::from_str(&definition).map_err(|source| CatalogError::Decode { id, source })
}

fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

async fn put_invoice(tx: &mut Tx, namespace: &str, invoice: &Invoice) -> Result<()> {
    sqlx::query(
        "INSERT INTO invoices (id, namespace, customer_id, currency, status, definition, created_at, updated_at, deleted_at, external_invoicing_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, definition = excluded.definition, \
         updated_at = excluded.updated_at, deleted_at = excluded.deleted_at, \
         external_invoicing_id = excluded.external_invoicing_id",
    )
    .bind(&invoice.id)
    .bind(namespace)
    .bind(&invoice.customer_id)
    .bind(&invoice.currency)
    .bind(invoice.status.as_str())
    .bind(encode(invoice))
    .bind(ms(invoice.created_at))
    .bind(ms(invoice.updated_at))
    .bind(invoice.deleted_at.map(ms))
    .bind(invoice.external_invoicing_id.as_deref())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn put_line(tx: &mut Tx, namespace: &str, line: &Line) -> Result<()> {
    sqlx::query(
        "UPDATE invoice_lines SET invoice_id = $1, definition = $2, invoice_at = $3, updated_at = $4, deleted_at = $5, \
         split_group_id = $8 WHERE id = $6 AND namespace = $7",
    )
    .bind(&line.invoice_id)
    .bind(encode(line))
    .bind(ms(line.invoice_at))
    .bind(ms(line.updated_at))
    .bind(line.deleted_at.map(ms))
    .bind(&line.id)
    .bind(namespace)
    .bind(line.split.as_ref().map(|s| s.group_id.as_str()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One split for [`Catalog::split_lines`].
#[derive(Clone, Copy, Debug)]
pub struct SplitWrite<'a> {
    /// The line's period as it was read (the split applies only to that).
    pub read: LinePeriod,
    /// The line cut at the split time.
    pub part: &'a Line,
    /// The rest of the period, a new line (none: nothing is left).
    pub rest: Option<&'a Line>,
}

async fn insert_line(tx: &mut Tx, namespace: &str, line: &Line) -> Result<u64> {
    let done = sqlx::query(
        "INSERT INTO invoice_lines (id, namespace, invoice_id, customer_id, line_key, definition, invoice_at, created_at, updated_at, deleted_at, split_group_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, NULL, $9) ON CONFLICT (namespace, line_key) DO NOTHING",
    )
    .bind(&line.id)
    .bind(namespace)
    .bind(&line.invoice_id)
    .bind(&line.customer_id)
    .bind(&line.line_key)
    .bind(encode(line))
    .bind(ms(line.invoice_at))
    .bind(ms(line.created_at))
    .bind(line.split.as_ref().map(|s| s.group_id.as_str()))
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

impl Catalog {
    /// The customer's gathering invoice in `currency`, created (from `make`) if missing.
    pub async fn gathering_invoice(
        &self,
        namespace: &str,
        customer_id: &str,
        currency: &str,
        make: impl FnOnce() -> Invoice,
    ) -> Result<Invoice> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT id, definition FROM invoices WHERE namespace = $1 AND customer_id = $2 AND currency = $3 \
             AND status = 'gathering' AND deleted_at IS NULL",
        )
        .bind(namespace)
        .bind(customer_id)
        .bind(currency)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            return decode(&row);
        }
        let invoice = make();
        put_invoice(&mut tx, namespace, &invoice).await?;
        tx.commit().await?;
        Ok(invoice)
    }

    /// Inserts the lines whose `line_key` is new; returns how many were inserted.
    pub async fn insert_lines(&self, namespace: &str, lines: &[Line]) -> Result<usize> {
        let mut tx = self.begin_write().await?;
        let mut inserted = 0;
        for line in lines {
            inserted += insert_line(&mut tx, namespace, line).await? as usize;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// The live lines of an invoice, in creation order.
    pub async fn invoice_lines(&self, namespace: &str, invoice_id: &str) -> Result<Vec<Line>> {
        let rows = sqlx::query(
            "SELECT id, definition FROM invoice_lines WHERE namespace = $1 AND invoice_id = $2 \
             AND deleted_at IS NULL ORDER BY invoice_at, created_at, id",
        )
        .bind(namespace)
        .bind(invoice_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    pub async fn get_invoice(&self, namespace: &str, id: &str) -> Result<Option<Invoice>> {
        let row =
            sqlx::query("SELECT id, definition FROM invoices WHERE namespace = $1 AND id = $2")
                .bind(namespace)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(decode).transpose()
    }

    /// The invoice whose invoicing app id (e.g. Stripe's `in_…`) is `external_id` (indexed).
    pub async fn invoice_by_external_id(
        &self,
        namespace: &str,
        external_id: &str,
    ) -> Result<Option<Invoice>> {
        let row = sqlx::query(
            "SELECT id, definition FROM invoices WHERE namespace = $1 AND external_invoicing_id = $2 \
             ORDER BY created_at LIMIT 1",
        )
        .bind(namespace)
        .bind(external_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Invoices of a namespace, filtered, oldest first.
    pub async fn list_invoices(
        &self,
        namespace: &str,
        filter: &InvoiceFilter,
    ) -> Result<Vec<Invoice>> {
        let rows = sqlx::query(
            "SELECT id, definition FROM invoices WHERE namespace = $1 ORDER BY created_at, id",
        )
        .bind(namespace)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            let invoice: Invoice = decode(row)?;
            let status = invoice.status.status();
            let keep = (filter.include_deleted || invoice.deleted_at.is_none())
                && (filter.customers.is_empty() || filter.customers.contains(&invoice.customer_id))
                && (filter.statuses.is_empty()
                    || filter.statuses.iter().any(|s| s == status.as_str()))
                && (filter.extended_statuses.is_empty()
                    || filter
                        .extended_statuses
                        .iter()
                        .any(|s| s == invoice.status.as_str()))
                && (filter.currencies.is_empty()
                    || filter
                        .currencies
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case(&invoice.currency)));
            if keep {
                out.push(invoice);
            }
        }
        Ok(out)
    }

    /// Gathering lines of a namespace due at `at` (`invoice_at <= at`), by customer.
    pub async fn due_gathering_lines(
        &self,
        namespace: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<Line>> {
        let rows = sqlx::query(
            "SELECT l.id, l.definition FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id \
             WHERE l.namespace = $1 AND i.status = 'gathering' AND l.deleted_at IS NULL AND l.invoice_at <= $2 \
             ORDER BY l.customer_id, l.invoice_at, l.id",
        )
        .bind(namespace)
        .bind(ms(at))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Creates `invoice` and moves `lines` (still on their gathering invoice) onto it, in one
    /// transaction; lines that another collection already moved are left out. Returns the
    /// lines moved (none: nothing was created).
    pub async fn collect_lines(
        &self,
        namespace: &str,
        invoice: &Invoice,
        lines: &[Line],
    ) -> Result<Vec<Line>> {
        let mut tx = self.begin_write().await?;
        let mut moved = Vec::new();
        for line in lines {
            let done = sqlx::query(
                "UPDATE invoice_lines SET invoice_id = $1 WHERE namespace = $2 AND id = $3 AND invoice_id = $4",
            )
            .bind(&invoice.id)
            .bind(namespace)
            .bind(&line.id)
            .bind(&line.invoice_id)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                let mut l = line.clone();
                l.invoice_id = invoice.id.clone();
                put_line(&mut tx, namespace, &l).await?;
                moved.push(l);
            }
        }
        if moved.is_empty() {
            return Ok(moved);
        }
        put_invoice(&mut tx, namespace, invoice).await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// Splits gathering lines, in one transaction: each `(part, rest)` writes `part` (the line
    /// cut short, same id and key) and inserts `rest` (the remainder, under its own key).
    /// A line no longer on the gathering invoice it was read from, no longer with the period it
    /// was read with (`read`), or whose rest's key exists is left alone: repeating a split
    /// writes nothing. Returns the parts written.
    pub async fn split_lines(
        &self,
        namespace: &str,
        splits: &[SplitWrite<'_>],
    ) -> Result<Vec<Line>> {
        let mut tx = self.begin_write().await?;
        let mut written = Vec::new();
        for split in splits {
            let row = sqlx::query(
                "SELECT id, definition FROM invoice_lines WHERE namespace = $1 AND id = $2 \
                 AND invoice_id = $3 AND deleted_at IS NULL",
            )
            .bind(namespace)
            .bind(&split.part.id)
            .bind(&split.part.invoice_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { continue };
            let stored: Line = decode(&row)?;
            if stored.period != split.read {
                continue;
            }
            // A rest whose key exists was split off already: leave the line as it is.
            if let Some(rest) = split.rest
                && insert_line(&mut tx, namespace, rest).await? == 0
            {
                continue;
            }
            put_line(&mut tx, namespace, split.part).await?;
            written.push(split.part.clone());
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Every line of a split line group, with its invoice (deleted ones included).
    pub async fn split_group_lines(
        &self,
        namespace: &str,
        customer_id: &str,
        group_id: &str,
    ) -> Result<Vec<(Line, Invoice)>> {
        let rows = sqlx::query(
            "SELECT l.id AS id, l.definition AS definition, i.id AS invoice_row_id, i.definition AS invoice_definition \
             FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id \
             WHERE l.namespace = $1 AND l.split_group_id = $3 AND l.customer_id = $2 \
             ORDER BY l.invoice_at, l.id",
        )
        .bind(namespace)
        .bind(customer_id)
        .bind(group_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let line: Line = decode(row)?;
            let id: String = row.try_get("invoice_row_id")?;
            let definition: String = row.try_get("invoice_definition")?;
            let invoice: Invoice = serde_json::from_str(&definition)
                .map_err(|source| CatalogError::Decode { id, source })?;
            out.push((line, invoice));
        }
        Ok(out)
    }

    /// Writes an invoice and its lines in one transaction.
    pub async fn save_invoice(
        &self,
        namespace: &str,
        invoice: &Invoice,
        lines: &[Line],
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        put_invoice(&mut tx, namespace, invoice).await?;
        for line in lines {
            put_line(&mut tx, namespace, line).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The next number of a sequence (per namespace and scope), committed at once.
    pub async fn next_sequence(&self, namespace: &str, scope: &str) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sequences (namespace, scope, value) VALUES ($1, $2, 0) ON CONFLICT (namespace, scope) DO NOTHING",
        )
        .bind(namespace)
        .bind(scope)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE sequences SET value = value + 1 WHERE namespace = $1 AND scope = $2")
            .bind(namespace)
            .bind(scope)
            .execute(&mut *tx)
            .await?;
        let value: i64 =
            sqlx::query_scalar("SELECT value FROM sequences WHERE namespace = $1 AND scope = $2")
                .bind(namespace)
                .bind(scope)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(value)
    }
}

impl Catalog {
    /// Has this app's webhook event already been acted on?
    pub async fn webhook_event_seen(&self, app_id: &str, event_id: &str) -> Result<bool> {
        let seen: Option<i64> = sqlx::query_scalar(
            "SELECT processed_at FROM stripe_webhook_events WHERE app_id = $1 AND event_id = $2",
        )
        .bind(app_id)
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(seen.is_some())
    }

    /// Records that this app's webhook event was acted on (a second record is a no-op).
    pub async fn record_webhook_event(
        &self,
        app_id: &str,
        event_id: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO stripe_webhook_events (app_id, event_id, processed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (app_id, event_id) DO NOTHING",
        )
        .bind(app_id)
        .bind(event_id)
        .bind(ms(at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
