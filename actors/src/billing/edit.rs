//! Replacing an invoice (`PUT /api/v1/billing/invoices/{invoiceId}`, OpenMeter's
//! `UpdateInvoice`): the body (`InvoiceReplaceUpdate`) is the invoice as the caller wants it.
//!
//! Lines with the id of a live line are merged into it, lines without one (or with an unknown
//! one) are created, live lines left out are deleted; a line that changed, every created line
//! and every deleted line become `managedBy: manual` (OpenMeter's `applyAPIInvoiceLineEdits`),
//! a line sent back unchanged keeps its owner. A gathering invoice takes only its lines. A
//! standard invoice also takes its supplier, customer, metadata and the mutable workflow
//! settings, and is mutable only where the state machine permits `trigger_updated` (every
//! `draft.*` but `draft.updating` and `draft.syncing`); elsewhere the answer is OpenMeter's
//! `invoice_action_not_available`. The edit then fires that trigger: the invoice enters
//! `draft.updating` (rated and validated again) and advances from there as far as it goes,
//! through `draft.syncing`, so a draft already in Stripe is synced again.
//!
//! Everything the body can get wrong is found before anything is written.

use super::{Billing, Entry, Error, Result, add_iso, rate, workflow_of};
use chrono::{DateTime, Utc};
use metron_engine::billing::{Discounts, RateCard};
use metron_engine::invoicing::{self, ExtendedStatus, Origin, Trigger};
use metron_storage::billing_profiles::{BillingWorkflow, CollectionMethod, is_iso_duration};
use metron_storage::customers::Address;
use metron_storage::invoices::{Invoice, Line, LinePeriod};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

#[cfg(test)]
mod tests;

/// Longest line name (`InvoiceLineReplaceUpdate.name`).
const LINE_NAME_CHARS_MAX: usize = 256;
/// Longest description of an invoice or a line.
const DESCRIPTION_CHARS_MAX: usize = 1024;

impl Billing {
    /// `PUT /api/v1/billing/invoices/{invoiceId}`: replaces the invoice's lines (and, on a
    /// standard invoice, its supplier, customer, metadata and workflow settings), then
    /// recalculates it and fires `trigger_updated`. Returns the invoice and its live lines as
    /// they are once it stopped advancing.
    pub async fn replace_invoice(&self, id: &str, body: &Value) -> Result<(Invoice, Vec<Line>)> {
        let replacement = parse(body)?;
        let _guard = self.inner.work.lock().await;
        let now = self.now();
        let (mut invoice, lines) = self.get(id).await?;
        let gathering = invoice.is_gathering();
        let step = if gathering {
            None
        } else {
            let ctx = self.context(&invoice, &lines, now, Origin::Api);
            Some(invoicing::fire(invoice.status, Trigger::Updated, &ctx)?)
        };
        let plan = plan_lines(&lines, replacement.lines, now, |input| {
            self.api_line(
                &invoice.customer_id,
                &invoice.id,
                &invoice.currency,
                input,
                now,
            )
        })?;
        let Some(step) = step else {
            return self.replace_gathering(invoice, plan, now).await;
        };
        invoice.supplier = merge_supplier(&invoice.supplier, replacement.supplier)?;
        invoice.customer = merge_customer(&invoice.customer, replacement.customer)?;
        let workflow = merge_workflow(&workflow_of(&invoice), replacement.workflow)?;
        if let Value::Object(map) = &mut invoice.workflow {
            map.insert("workflow".into(), json!(workflow));
        }
        invoice.metadata = replacement.metadata;
        let created = plan.created.clone();
        let (changed, deleted) = (plan.changed, plan.deleted);
        let mut all = plan.lines();
        // A line that cannot be rated is the caller's error, answered before anything is
        // written (OpenMeter validates edited lines before it fires the trigger).
        self.calculate(&mut invoice, &mut all)
            .map_err(Error::Invalid)?;
        let live: Vec<&Line> = all.iter().filter(|l| l.deleted_at.is_none()).collect();
        invoice.collection_at = collection_at(&live, &workflow.collection.interval);
        if let Some(period) = period_of(&live) {
            invoice.period = Some(period);
        }
        invoice.draft_until = draft_until(&invoice, &workflow);
        // Written in draft.updating before the new lines: should the rest not happen, the
        // invoice can be neither approved nor issued from there, and every way on rates it
        // again.
        invoice.status = ExtendedStatus::DraftUpdating;
        invoice.updated_at = now;
        self.catalog()
            .save_invoice(self.ns(), &invoice, &all)
            .await?;
        self.catalog().insert_lines(self.ns(), &created).await?;
        tracing::info!(invoice = %invoice.id, created = created.len(), changed, deleted, "Replaced an invoice.");
        self.step(&mut invoice, &mut all, step, now).await?;
        self.advance(id, None, now).await?;
        self.get(id).await
    }

    /// A gathering invoice takes only its lines (OpenMeter's `updateGatheringInvoice`); the
    /// lines it was given are rated, and collection is scheduled for the first one due.
    async fn replace_gathering(
        &self,
        mut invoice: Invoice,
        plan: LinePlan,
        now: DateTime<Utc>,
    ) -> Result<(Invoice, Vec<Line>)> {
        let touched = plan.touched.clone();
        let created = plan.created.clone();
        let mut all = plan.lines();
        for line in all
            .iter_mut()
            .filter(|l| l.deleted_at.is_none() && touched.contains(&l.id))
        {
            if line.rate_card.price().is_none() {
                return Err(Error::Invalid(format!(
                    "line {:?}: price is required for usage based lines",
                    line.name
                )));
            }
            rate::rate_line(line).map_err(Error::Invalid)?;
        }
        invoice.updated_at = now;
        self.catalog()
            .save_invoice(self.ns(), &invoice, &all)
            .await?;
        self.catalog().insert_lines(self.ns(), &created).await?;
        if let Some(at) = all
            .iter()
            .filter(|l| l.deleted_at.is_none())
            .map(|l| l.invoice_at)
            .min()
        {
            self.schedule(at.max(now), Entry::Collect);
        }
        self.get(&invoice.id).await
    }
}

/// `InvoiceReplaceUpdate`, checked for shape.
#[derive(Debug)]
struct Replacement<'a> {
    metadata: Option<BTreeMap<String, String>>,
    supplier: &'a Map<String, Value>,
    customer: &'a Map<String, Value>,
    workflow: &'a Map<String, Value>,
    lines: &'a [Value],
}

fn invalid(message: impl Into<String>) -> Error {
    Error::Invalid(message.into())
}

/// The body's shape: `supplier`, `customer`, `lines` and `workflow` are required (as the
/// v1 schema says), every line is an object, metadata is a map of strings.
fn parse(body: &Value) -> Result<Replacement<'_>> {
    let body = body
        .as_object()
        .ok_or_else(|| invalid("the body must be an InvoiceReplaceUpdate object"))?;
    let object = |key: &str| {
        body.get(key)
            .and_then(Value::as_object)
            .ok_or_else(|| invalid(format!("{key} is required and must be an object")))
    };
    let lines = body
        .get("lines")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("lines is required and must be an array"))?;
    if let Some(at) = lines.iter().position(|l| !l.is_object()) {
        return Err(invalid(format!("lines[{at}] must be an object")));
    }
    text(
        body.get("description"),
        "description",
        DESCRIPTION_CHARS_MAX,
    )?;
    let workflow = object("workflow")?
        .get("workflow")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("workflow.workflow is required and must be an object"))?;
    Ok(Replacement {
        metadata: metadata(body.get("metadata"), "metadata")?,
        supplier: object("supplier")?,
        customer: object("customer")?,
        workflow,
        lines,
    })
}

/// An optional text of at most `max` characters.
fn text<'a>(value: Option<&'a Value>, field: &str, max: usize) -> Result<Option<&'a str>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s)),
        Some(Value::String(_)) => Err(invalid(format!("{field} must be at most {max} characters"))),
        Some(_) => Err(invalid(format!("{field} must be a string"))),
    }
}

/// `Metadata`: absent, null or empty is none (OpenMeter writes an empty map, which it
/// answers as no metadata).
fn metadata(value: Option<&Value>, field: &str) -> Result<Option<BTreeMap<String, String>>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let map: BTreeMap<String, String> = serde_json::from_value(v.clone())
                .map_err(|_| invalid(format!("{field} must be a map of strings")))?;
            Ok((!map.is_empty()).then_some(map))
        }
    }
}

/// The first of a party's `addresses` (at most one), as stored.
fn first_address(party: &Map<String, Value>, who: &str) -> Result<Option<Value>> {
    let addresses = match party.get("addresses") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid(format!("{who}.addresses must be an array"))),
    };
    if addresses.len() > 1 {
        return Err(invalid(format!(
            "{who}.addresses takes at most one address"
        )));
    }
    addresses
        .first()
        .map(|a| {
            serde_json::from_value::<Address>(a.clone())
                .map(|a| json!(a))
                .map_err(|e| invalid(format!("{who}.addresses[0]: {e}")))
        })
        .transpose()
}

fn party_name(party: &Map<String, Value>, who: &str) -> Result<String> {
    match text(party.get("name"), &format!("{who}.name"), usize::MAX)? {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err(invalid(format!("{who}: name is required"))),
    }
}

/// OpenMeter's `mergeInvoiceSupplierFromAPI` and `SupplierContact.Validate`: the name, the
/// address (which needs a country) and the tax id are replaced; the key is kept.
fn merge_supplier(existing: &Value, update: &Map<String, Value>) -> Result<Value> {
    let mut out = existing.as_object().cloned().unwrap_or_default();
    out.insert("name".into(), json!(party_name(update, "supplier")?));
    let address = first_address(update, "supplier")?;
    let country = address
        .as_ref()
        .and_then(|a| a.get("country"))
        .and_then(Value::as_str);
    match country {
        Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) => {}
        Some(c) => {
            return Err(invalid(format!(
                "supplier: country {c:?} is not an ISO 3166-1 alpha-2 code"
            )));
        }
        None => return Err(invalid("supplier: country is required")),
    }
    out.insert("addresses".into(), json!([address]));
    let code = match update.get("taxId") {
        None | Some(Value::Null) => None,
        Some(Value::Object(t)) => text(t.get("code"), "supplier.taxId.code", usize::MAX)?,
        Some(_) => return Err(invalid("supplier.taxId must be an object")),
    };
    match code {
        Some(code) => out.insert("taxId".into(), json!({"code": code})),
        None => out.remove("taxId"),
    };
    Ok(Value::Object(out))
}

/// OpenMeter's `mergeInvoiceCustomerFromAPI` and `InvoiceCustomer.Validate`: the name and the
/// billing address are replaced; id, key and usage attribution are kept.
fn merge_customer(existing: &Value, update: &Map<String, Value>) -> Result<Value> {
    let mut out = existing.as_object().cloned().unwrap_or_default();
    out.insert("name".into(), json!(party_name(update, "customer")?));
    let addresses: Vec<Value> = first_address(update, "customer")?.into_iter().collect();
    out.insert("addresses".into(), json!(addresses));
    Ok(Value::Object(out))
}

/// OpenMeter's `mergeInvoiceWorkflowFromAPI`: `autoAdvance`, `draftPeriod`, `dueAfter` and
/// the collection method are replaced, each left out taking its default; the rest of the
/// workflow stays as the invoice was created with it.
fn merge_workflow(
    existing: &BillingWorkflow,
    update: &Map<String, Value>,
) -> Result<BillingWorkflow> {
    let defaults = BillingWorkflow::default();
    let mut out = existing.clone();
    let section = |name: &str| match update.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(invalid(format!(
            "workflow.workflow.{name} must be an object"
        ))),
    };
    let invoicing = section("invoicing")?;
    let field = |key: &str| invoicing.and_then(|i| i.get(key)).filter(|v| !v.is_null());
    out.invoicing.auto_advance = match field("autoAdvance") {
        None => defaults.invoicing.auto_advance,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(invalid(
                "workflow.workflow.invoicing.autoAdvance must be a boolean",
            ));
        }
    };
    let duration = |key: &str, what: &str, default: &str| match field(key) {
        None => Ok(default.to_owned()),
        Some(Value::String(s)) if is_iso_duration(s) => Ok(s.clone()),
        Some(v) => Err(invalid(format!(
            "failed to parse {what}: {v} is not an ISO 8601 duration"
        ))),
    };
    out.invoicing.draft_period = duration(
        "draftPeriod",
        "draft period",
        &defaults.invoicing.draft_period,
    )?;
    out.invoicing.due_after = duration("dueAfter", "due after", &defaults.invoicing.due_after)?;
    out.payment.collection_method = match section("payment")?
        .and_then(|p| p.get("collectionMethod"))
        .filter(|v| !v.is_null())
    {
        None => CollectionMethod::default(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            invalid(format!(
                "workflow.workflow.payment.collectionMethod: {v} is not charge_automatically or send_invoice"
            ))
        })?,
    };
    Ok(out)
}

/// OpenMeter's `CalculateDraftUntil`: with auto-advance, the draft period after the later of
/// `collectionAt` and `createdAt`; without, none.
fn draft_until(invoice: &Invoice, workflow: &BillingWorkflow) -> Option<DateTime<Utc>> {
    if !workflow.invoicing.auto_advance {
        return None;
    }
    let anchor = invoice
        .collection_at
        .unwrap_or(invoice.created_at)
        .max(invoice.created_at);
    Some(add_iso(anchor, &workflow.invoicing.draft_period))
}

/// When usage can be collected: the collection interval after the last usage line ends (as
/// collection sets it when the invoice is created).
fn collection_at(lines: &[&Line], interval: &str) -> Option<DateTime<Utc>> {
    lines
        .iter()
        .filter(|l| matches!(l.rate_card, RateCard::UsageBased(_)))
        .map(|l| add_iso(l.period.to, interval))
        .max()
}

/// The invoice period: from the first line's start to the last line's end.
fn period_of(lines: &[&Line]) -> Option<LinePeriod> {
    Some(LinePeriod {
        from: lines.iter().map(|l| l.period.from).min()?,
        to: lines.iter().map(|l| l.period.to).max()?,
    })
}

/// What a replacement does to an invoice's lines.
#[derive(Debug, Default)]
struct LinePlan {
    /// Every live line, merged (a changed one `manual`) or deleted (`manual`, `deletedAt`).
    existing: Vec<Line>,
    /// New lines, `manual`.
    created: Vec<Line>,
    /// Ids of the lines created or changed.
    touched: BTreeSet<String>,
    changed: usize,
    deleted: usize,
}

impl LinePlan {
    fn lines(self) -> Vec<Line> {
        let mut all = self.existing;
        all.extend(self.created);
        all
    }
}

/// OpenMeter's `mergeStandardInvoiceLinesFromAPI`: `build` turns an input into a line as a
/// pending line would be (`Billing::api_line`).
fn plan_lines(
    existing: &[Line],
    inputs: &[Value],
    now: DateTime<Utc>,
    build: impl Fn(&Value) -> Result<Line>,
) -> Result<LinePlan> {
    let by_id: BTreeMap<&str, &Line> = existing.iter().map(|l| (l.id.as_str(), l)).collect();
    let mut merged: BTreeMap<String, Line> = BTreeMap::new();
    let mut plan = LinePlan::default();
    for (at, input) in inputs.iter().enumerate() {
        let name = input
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name.chars().count() > LINE_NAME_CHARS_MAX {
            return Err(invalid(format!(
                "lines[{at}].name must be at most {LINE_NAME_CHARS_MAX} characters"
            )));
        }
        let description = text(
            input.get("description"),
            &format!("lines[{at}].description"),
            DESCRIPTION_CHARS_MAX,
        )?
        .map(str::to_owned);
        metadata(input.get("metadata"), &format!("lines[{at}].metadata"))?;
        let id = input.get("id").and_then(Value::as_str);
        match id.and_then(|id| by_id.get(id)) {
            Some(line) => {
                if merged.contains_key(&line.id) {
                    return Err(invalid(format!("line {} is given twice", line.id)));
                }
                let fresh = build(input)?;
                let (line, changed) = merge_line(line, fresh, input, description, now)?;
                if changed {
                    plan.touched.insert(line.id.clone());
                    plan.changed += 1;
                }
                merged.insert(line.id.clone(), line);
            }
            None => {
                // An unknown id only names the line within the request (OpenMeter lets
                // discounts refer to it); the line gets an id of its own.
                let mut input = input.clone();
                if let Value::Object(map) = &mut input {
                    map.remove("id");
                }
                let mut line = build(&input)?;
                line.description = description;
                line.rate_card = with_discounts(&line.rate_card, &input, None)?;
                plan.touched.insert(line.id.clone());
                plan.created.push(line);
            }
        }
    }
    for line in existing {
        match merged.remove(&line.id) {
            Some(m) => plan.existing.push(m),
            None => {
                let mut gone = line.clone();
                gone.deleted_at = Some(now);
                gone.updated_at = now;
                gone.managed_by = "manual".into();
                plan.deleted += 1;
                plan.existing.push(gone);
            }
        }
    }
    Ok(plan)
}

/// What an edit can change of a line, for telling a line sent back unchanged.
fn intent(line: &Line) -> Value {
    let view = line.rate_card.view();
    json!({
        "name": line.name,
        "description": line.description,
        "metadata": line.metadata,
        "period": line.period,
        "invoiceAt": line.invoice_at,
        "price": line.rate_card.price(),
        "featureKey": view.feature_key,
        "taxConfig": view.tax_config,
        "discounts": view.discounts,
    })
}

/// OpenMeter's `mergeStandardLineFromInvoiceLineReplaceUpdate`: name, description, period,
/// invoiceAt, price, feature and tax config are replaced, metadata when given. A line that
/// changes becomes `manual`; its pro-rating is kept only while its period is. Its quantity is
/// not edited: it is measured again when the invoice is collected. Returns the line and
/// whether it changed.
fn merge_line(
    existing: &Line,
    fresh: Line,
    input: &Value,
    description: Option<String>,
    now: DateTime<Utc>,
) -> Result<(Line, bool)> {
    let mut line = existing.clone();
    line.name = fresh.name;
    line.description = description;
    if input.get("metadata").is_some_and(|m| !m.is_null()) {
        line.metadata = fresh.metadata;
    }
    line.period = fresh.period;
    line.invoice_at = fresh.invoice_at;
    line.rate_card = merge_card(&existing.rate_card, &fresh.rate_card)?;
    line.rate_card = with_discounts(&line.rate_card, input, existing.rate_card.view().discounts)?;
    if intent(&line) == intent(existing) {
        return Ok((existing.clone(), false));
    }
    if line.period != existing.period {
        line.pro_rating_full_period = None;
    }
    line.managed_by = "manual".into();
    line.updated_at = now;
    Ok((line, true))
}

/// The existing rate card with the fresh one's price, feature and tax config; the fresh one
/// (under the existing name) where the price no longer fits the existing kind.
fn merge_card(existing: &RateCard, fresh: &RateCard) -> Result<RateCard> {
    let fresh_json = json!(fresh);
    let mut card = json!(existing);
    if let Value::Object(map) = &mut card {
        for key in ["price", "featureKey", "taxConfig"] {
            match fresh_json.get(key).filter(|v| !v.is_null()) {
                Some(v) => map.insert(key.into(), v.clone()),
                None => map.remove(key),
            };
        }
        // A card's feature is its key (as a pending line's card is made).
        if let Some(feature) = fresh_json.get("featureKey").filter(|v| !v.is_null()) {
            map.insert("key".into(), feature.clone());
        }
    }
    if let Ok(card) = serde_json::from_value::<RateCard>(card) {
        return Ok(card);
    }
    let mut card = fresh_json;
    if let (Value::Object(map), Value::Object(old)) = (&mut card, json!(existing))
        && let Some(name) = old.get("name")
    {
        map.insert("name".into(), name.clone());
    }
    serde_json::from_value(card).map_err(|e| invalid(e.to_string()))
}

/// The card with the input's `rateCard.discounts` when it gives them, else with `kept`.
fn with_discounts(card: &RateCard, input: &Value, kept: Option<&Discounts>) -> Result<RateCard> {
    let given = input
        .pointer("/rateCard/discounts")
        .filter(|d| !d.is_null());
    let discounts = match given {
        Some(d) => Some(
            serde_json::from_value::<Discounts>(d.clone())
                .map_err(|e| invalid(format!("rateCard.discounts: {e}")))?,
        ),
        None => kept.cloned(),
    };
    let mut json = json!(card);
    if let Value::Object(map) = &mut json {
        match discounts {
            Some(d) => map.insert("discounts".into(), json!(d)),
            None => map.remove("discounts"),
        };
    }
    let card: RateCard = serde_json::from_value(json).map_err(|e| invalid(e.to_string()))?;
    if let Some(issue) = card.issues().first() {
        return Err(invalid(issue.to_string()));
    }
    Ok(card)
}
