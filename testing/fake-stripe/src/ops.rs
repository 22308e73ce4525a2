//! What each Stripe endpoint does to the store: the contract's behaviour and the invoice
//! lifecycle (draft → open → paid | void | uncollectible).

use crate::error::{ApiError, Result};
use crate::form::Param;
use crate::limits::{LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX};
use crate::spec::Invalid;
use crate::state::{
    Customer, Invoice, InvoiceItem, InvoiceStatus, Metadata, PaymentMethod, Store, WebhookEndpoint,
    now,
};
use serde_json::{Value, json};

/// Every event type the fake emits; each is in the spec's (or the acacia) event list.
pub const EVENTS: [&str; 17] = [
    "customer.created",
    "customer.updated",
    "invoice.created",
    "invoice.updated",
    "invoice.deleted",
    "invoice.finalized",
    "invoice.finalization_failed",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "invoice.sent",
    "invoice.overdue",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "invoiceitem.created",
    "invoiceitem.deleted",
];

/// Checks the contract asks for beyond the spec (README), before anything executes.
pub fn contract(method: &str, template: &str, params: &Param) -> Result<(), Invalid> {
    let missing = |param: &str| Invalid {
        code: "parameter_missing",
        param: param.to_owned(),
        message: format!("Missing required param: {param}."),
    };
    match (method, template) {
        ("POST", "/v1/invoices") => {
            if params.str("customer").is_none() && params.str("from_invoice").is_none() {
                return Err(missing("customer"));
            }
            let send = params.str("collection_method") == Some("send_invoice");
            let days = params.str("days_until_due").is_some();
            if send && !days && params.str("due_date").is_none() {
                return Err(missing("days_until_due"));
            }
            if !send && days {
                return Err(Invalid {
                    code: "parameter_unknown",
                    param: "days_until_due".to_owned(),
                    message: "days_until_due is only allowed with collection_method=send_invoice."
                        .to_owned(),
                });
            }
            Ok(())
        }
        ("POST", "/v1/invoiceitems" | "/v1/invoiceitems/{invoiceitem}") => {
            let amount = params.str("amount").is_some();
            let unit = params.str("unit_amount_decimal").is_some()
                || params.str("unit_amount").is_some()
                || params.str("price").is_some();
            if amount && unit {
                return Err(Invalid {
                    code: "parameters_exclusive",
                    param: "amount".to_owned(),
                    message:
                        "You may only specify one of these parameters: amount, unit_amount_decimal."
                            .to_owned(),
                });
            }
            Ok(())
        }
        ("POST", "/v1/checkout/sessions") => {
            let embedded = params.str("ui_mode") == Some("embedded");
            if !embedded && params.str("success_url").is_none() {
                return Err(missing("success_url"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Runs one validated request. `ids` are the path's `{…}` segments in order.
pub fn execute(
    store: &mut Store,
    method: &str,
    template: &str,
    ids: &[String],
    p: &Param,
) -> Result<Value> {
    let id = ids.first().map(String::as_str).unwrap_or_default();
    let expand = p.strings("expand");
    match (method, template) {
        ("GET", "/v1/account") => Ok(account(store)),
        ("POST", "/v1/webhook_endpoints") => Ok(create_webhook_endpoint(store, p)),
        ("DELETE", "/v1/webhook_endpoints/{webhook_endpoint}") => {
            delete_webhook_endpoint(store, id)
        }
        ("POST", "/v1/customers") => Ok(create_customer(store, p).json(store, &expand)),
        ("GET", "/v1/customers/{customer}") => {
            let customer = store
                .customer(id)
                .ok_or_else(|| ApiError::missing("customer", id, "id"))?;
            Ok(customer.json(store, &expand))
        }
        ("POST", "/v1/customers/{customer}") => update_customer(store, id, p, &expand),
        ("GET", "/v1/payment_methods/{payment_method}") => store
            .payment_methods
            .iter()
            .find(|pm| pm.id == id)
            .map(PaymentMethod::json)
            .ok_or_else(|| ApiError::missing("PaymentMethod", id, "payment_method")),
        ("POST", "/v1/invoices") => create_invoice(store, p, &expand),
        ("GET", "/v1/invoices") => list_invoices(store, p),
        ("GET", "/v1/invoices/{invoice}") => Ok(find_invoice(store, id)?.json(store, &expand)),
        ("POST", "/v1/invoices/{invoice}") => update_invoice(store, id, p, &expand),
        ("DELETE", "/v1/invoices/{invoice}") => delete_invoice(store, id),
        ("POST", "/v1/invoices/{invoice}/finalize") => finalize(store, id, p.bool("auto_advance")),
        ("POST", "/v1/invoices/{invoice}/pay") => pay(store, id, p),
        ("POST", "/v1/invoices/{invoice}/void") => void(store, id),
        ("POST", "/v1/invoices/{invoice}/mark_uncollectible") => mark_uncollectible(store, id),
        ("POST", "/v1/invoices/{invoice}/send") => send(store, id),
        ("GET", "/v1/invoices/{invoice}/lines") => {
            find_invoice(store, id)?;
            let lines: Vec<(String, Value)> = store
                .lines(id)
                .iter()
                .map(|l| (l.line_id.clone().unwrap_or_default(), l.line_json()))
                .collect();
            page(lines, p, &format!("/v1/invoices/{id}/lines"))
        }
        ("POST", "/v1/invoiceitems") => create_invoice_item(store, p),
        ("GET", "/v1/invoiceitems") => list_invoice_items(store, p),
        ("POST", "/v1/invoiceitems/{invoiceitem}") => update_invoice_item(store, id, p),
        ("DELETE", "/v1/invoiceitems/{invoiceitem}") => delete_invoice_item(store, id),
        ("POST", "/v1/checkout/sessions") => create_checkout_session(store, p),
        ("POST", "/v1/billing_portal/sessions") => create_portal_session(store, p),
        _ => Err(ApiError::invalid(
            None,
            format!("Unrecognized request URL ({method}: {template})."),
        )
        .with_param("url")),
    }
}

fn account(store: &Store) -> Value {
    let a = &store.account;
    json!({"id": a.id, "object": "account", "country": a.country, "email": a.email,
           "business_profile": {"name": a.name, "url": null, "support_email": a.email},
           "charges_enabled": true, "payouts_enabled": true, "default_currency": "usd",
           "details_submitted": true, "type": "standard", "settings": {}})
}

/// Applies `metadata[k]=v` (empty value unsets k, `metadata=` clears all).
fn merge_metadata(target: &mut Metadata, p: &Param) {
    if p.is_unset("metadata") {
        target.clear();
    }
    for (key, value) in p.string_map("metadata").unwrap_or_default() {
        if value.is_empty() {
            target.remove(&key);
        } else {
            target.insert(key, value);
        }
    }
}

fn opt(p: &Param, key: &str) -> Option<String> {
    p.str(key).map(str::to_owned)
}

/// Sets `target` from `key` when given: a value sets, an empty string unsets.
fn set(target: &mut Option<String>, p: &Param, key: &str) {
    if p.is_unset(key) {
        *target = None;
    } else if let Some(v) = p.str(key) {
        *target = Some(v.to_owned());
    }
}

fn create_webhook_endpoint(store: &mut Store, p: &Param) -> Value {
    let mut metadata = Metadata::new();
    merge_metadata(&mut metadata, p);
    let endpoint = WebhookEndpoint {
        id: store.id("we_", 24),
        created: now(),
        url: opt(p, "url").unwrap_or_default(),
        secret: store.id("whsec_", 32),
        enabled_events: p.strings("enabled_events"),
        api_version: opt(p, "api_version"),
        description: opt(p, "description"),
        metadata,
    };
    let json = endpoint.json(true);
    store.webhook_endpoints.push(endpoint);
    json
}

fn delete_webhook_endpoint(store: &mut Store, id: &str) -> Result<Value> {
    let before = store.webhook_endpoints.len();
    store.webhook_endpoints.retain(|e| e.id != id);
    if store.webhook_endpoints.len() == before {
        return Err(ApiError::missing(
            "webhook_endpoint",
            id,
            "webhook_endpoint",
        ));
    }
    Ok(json!({"id": id, "object": "webhook_endpoint", "deleted": true}))
}

/// Creates a customer from form params (also the seed helper's path).
pub fn create_customer(store: &mut Store, p: &Param) -> Customer {
    let prefix = store.id("", 8).to_uppercase();
    let mut customer = Customer {
        id: store.id("cus_", 14),
        created: now(),
        name: None,
        email: None,
        description: None,
        phone: None,
        currency: None,
        address: None,
        metadata: Metadata::new(),
        invoice_prefix: prefix,
        next_invoice_sequence: 1,
        default_payment_method: None,
        footer: None,
        tax_exempt: "none".to_owned(),
        balance: 0,
    };
    apply_customer(&mut customer, p);
    store.customers.push(customer.clone());
    store.emit("customer.created", customer.json(store, &[]), None);
    customer
}

fn apply_customer(c: &mut Customer, p: &Param) {
    set(&mut c.name, p, "name");
    set(&mut c.email, p, "email");
    set(&mut c.description, p, "description");
    set(&mut c.phone, p, "phone");
    if let Some(prefix) = p.str("invoice_prefix") {
        c.invoice_prefix = prefix.to_owned();
    }
    if let Some(tax_exempt) = p.str("tax_exempt") {
        c.tax_exempt = tax_exempt.to_owned();
    }
    if let Some(balance) = p.int("balance") {
        c.balance = balance;
    }
    if p.is_unset("address") {
        c.address = None;
    } else if let Some(address) = p.string_map("address") {
        c.address = Some(address.into_iter().filter(|(_, v)| !v.is_empty()).collect());
    }
    if let Some(settings) = p.get("invoice_settings") {
        set(
            &mut c.default_payment_method,
            settings,
            "default_payment_method",
        );
        set(&mut c.footer, settings, "footer");
    }
    merge_metadata(&mut c.metadata, p);
}

fn update_customer(store: &mut Store, id: &str, p: &Param, expand: &[String]) -> Result<Value> {
    let customer = store
        .customer_mut(id)
        .ok_or_else(|| ApiError::missing("customer", id, "id"))?;
    apply_customer(customer, p);
    let customer = customer.clone();
    let json = customer.json(store, expand);
    store.emit("customer.updated", customer.json(store, &[]), None);
    Ok(json)
}

fn find_invoice<'a>(store: &'a Store, id: &str) -> Result<&'a Invoice> {
    store
        .invoice(id)
        .ok_or_else(|| ApiError::missing("invoice", id, "invoice"))
}

fn invoice_json(store: &Store, id: &str) -> Value {
    store
        .invoice(id)
        .map(|i| i.json(store, &[]))
        .unwrap_or(Value::Null)
}

fn create_invoice(store: &mut Store, p: &Param, expand: &[String]) -> Result<Value> {
    let customer_id = p.str("customer").unwrap_or_default().to_owned();
    let customer = store
        .customer(&customer_id)
        .ok_or_else(|| ApiError::missing("customer", &customer_id, "customer"))?;
    let currency = p
        .str("currency")
        .map(str::to_lowercase)
        .or_else(|| customer.currency.clone())
        .unwrap_or_else(|| "usd".to_owned());
    let collection_method =
        opt(p, "collection_method").unwrap_or_else(|| "charge_automatically".to_owned());
    let id = store.id("in_", 24);
    let mut invoice = Invoice {
        id: id.clone(),
        created: now(),
        customer: customer_id.clone(),
        currency: currency.clone(),
        status: InvoiceStatus::Draft,
        number: None,
        auto_advance: p.bool("auto_advance").unwrap_or(true),
        collection_method,
        days_until_due: p.int("days_until_due"),
        due_date: p.int("due_date"),
        default_payment_method: opt(p, "default_payment_method"),
        automatic_tax: false,
        automatic_tax_status: None,
        description: opt(p, "description"),
        footer: opt(p, "footer"),
        statement_descriptor: opt(p, "statement_descriptor"),
        metadata: Metadata::new(),
        rendering: None,
        payment_intent: None,
        subtotal: 0,
        total: 0,
        amount_due: 0,
        amount_paid: 0,
        amount_remaining: 0,
        attempt_count: 0,
        attempted: false,
        paid_out_of_band: false,
        last_finalization_error: None,
        next_payment_attempt: None,
        finalized_at: None,
        paid_at: None,
        voided_at: None,
        marked_uncollectible_at: None,
    };
    apply_tax(&mut invoice, p);
    merge_metadata(&mut invoice.metadata, p);
    invoice.rendering = rendering(p);
    store.invoices.push(invoice);
    if let Some(customer) = store.customer_mut(&customer_id) {
        customer.currency.get_or_insert(currency);
    }
    if matches!(
        p.str("pending_invoice_items_behavior"),
        Some("include" | "include_and_require")
    ) {
        attach_pending(store, &id, &customer_id);
    }
    store.recompute(&id);
    store.emit("invoice.created", invoice_json(store, &id), None);
    Ok(find_invoice(store, &id)?.json(store, expand))
}

fn attach_pending(store: &mut Store, invoice: &str, customer: &str) {
    let pending: Vec<usize> = (0..store.invoice_items.len())
        .filter(|&i| {
            store.invoice_items[i].invoice.is_none() && store.invoice_items[i].customer == customer
        })
        .collect();
    for index in pending {
        let line_id = store.id("il_", 24);
        let item = &mut store.invoice_items[index];
        item.invoice = Some(invoice.to_owned());
        item.line_id = Some(line_id);
    }
}

fn apply_tax(invoice: &mut Invoice, p: &Param) {
    if let Some(enabled) = p.get("automatic_tax").and_then(|t| t.bool("enabled")) {
        invoice.automatic_tax = enabled;
        invoice.automatic_tax_status = None;
    }
}

fn rendering(p: &Param) -> Option<Value> {
    match p.get("rendering") {
        Some(Param::Map(_)) => serde_json::to_value(p.get("rendering")).ok(),
        _ => None,
    }
}

/// Fields an open (or later) invoice still accepts.
const FINALIZED_EDITABLE: [&str; 5] = [
    "metadata",
    "description",
    "footer",
    "auto_advance",
    "expand",
];

fn update_invoice(store: &mut Store, id: &str, p: &Param, expand: &[String]) -> Result<Value> {
    let before = invoice_json(store, id);
    let invoice = store
        .invoice_mut(id)
        .ok_or_else(|| ApiError::missing("invoice", id, "invoice"))?;
    if invoice.status != InvoiceStatus::Draft
        && let Param::Map(map) = p
        && let Some(key) = map
            .keys()
            .find(|k| !FINALIZED_EDITABLE.contains(&k.as_str()))
    {
        return Err(ApiError::invalid(
            Some("invoice_not_editable"),
            format!(
                "You can only update {key} on a draft invoice; {id} is {}.",
                invoice.status.as_str()
            ),
        )
        .with_param(key));
    }
    if let Some(auto_advance) = p.bool("auto_advance") {
        invoice.auto_advance = auto_advance;
    }
    if let Some(method) = p.str("collection_method") {
        invoice.collection_method = method.to_owned();
    }
    if let Some(days) = p.int("days_until_due") {
        invoice.days_until_due = Some(days);
    }
    if let Some(due) = p.int("due_date") {
        invoice.due_date = Some(due);
    }
    set(
        &mut invoice.default_payment_method,
        p,
        "default_payment_method",
    );
    set(&mut invoice.description, p, "description");
    set(&mut invoice.footer, p, "footer");
    set(&mut invoice.statement_descriptor, p, "statement_descriptor");
    apply_tax(invoice, p);
    merge_metadata(&mut invoice.metadata, p);
    if p.get("rendering").is_some() {
        invoice.rendering = rendering(p);
    }
    let after = invoice_json(store, id);
    store.emit(
        "invoice.updated",
        after,
        Some(changed(&before, &invoice_json(store, id))),
    );
    Ok(find_invoice(store, id)?.json(store, expand))
}

/// `previous_attributes`: the top-level fields whose value changed.
fn changed(before: &Value, after: &Value) -> Value {
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else {
        return json!({});
    };
    let fields: serde_json::Map<String, Value> = b
        .iter()
        .filter(|(k, v)| a.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(fields)
}

fn delete_invoice(store: &mut Store, id: &str) -> Result<Value> {
    let invoice = find_invoice(store, id)?;
    if invoice.status != InvoiceStatus::Draft {
        return Err(ApiError::invalid(
            Some("invoice_not_editable"),
            format!(
                "You can only delete draft invoices; {id} is {}.",
                invoice.status.as_str()
            ),
        ));
    }
    let json = invoice.json(store, &[]);
    store.invoices.retain(|i| i.id != id);
    store
        .invoice_items
        .retain(|item| item.invoice.as_deref() != Some(id));
    store.emit("invoice.deleted", json, None);
    Ok(json!({"id": id, "object": "invoice", "deleted": true}))
}

/// Finalizes a draft: number `{prefix}-{seq:04}`, a payment intent when something is due, and
/// `paid` at once when nothing is.
pub fn finalize(store: &mut Store, id: &str, auto_advance: Option<bool>) -> Result<Value> {
    let invoice = find_invoice(store, id)?.clone();
    if invoice.status != InvoiceStatus::Draft {
        return Err(ApiError::transition(
            id,
            invoice.status.as_str(),
            "finalize",
        ));
    }
    let customer = store.customer(&invoice.customer).cloned();
    let located = customer
        .as_ref()
        .and_then(|c| c.address.as_ref())
        .is_some_and(|a| a.contains_key("country"));
    if invoice.automatic_tax && !located {
        return Err(finalization_failed(store, id));
    }
    let number = customer
        .as_ref()
        .map(|c| format!("{}-{:04}", c.invoice_prefix, c.next_invoice_sequence));
    if let Some(c) = store.customer_mut(&invoice.customer) {
        c.next_invoice_sequence += 1;
    }
    let payment_intent = (invoice.amount_due > 0).then(|| store.id("pi_", 24));
    let at = now();
    let Some(inv) = store.invoice_mut(id) else {
        return Err(ApiError::missing("invoice", id, "invoice"));
    };
    inv.status = InvoiceStatus::Open;
    inv.number = number;
    inv.payment_intent = payment_intent;
    inv.finalized_at = Some(at);
    inv.last_finalization_error = None;
    if inv.automatic_tax {
        inv.automatic_tax_status = Some("complete".to_owned());
    }
    if let Some(auto_advance) = auto_advance {
        inv.auto_advance = auto_advance;
    }
    if inv.collection_method == "send_invoice" && inv.due_date.is_none() {
        inv.due_date = Some(at + inv.days_until_due.unwrap_or(30) * 86_400);
    }
    let zero = inv.amount_due == 0;
    store.emit("invoice.finalized", invoice_json(store, id), None);
    if zero {
        mark_paid(store, id, false);
    }
    Ok(invoice_json(store, id))
}

fn finalization_failed(store: &mut Store, id: &str) -> ApiError {
    let error = ApiError::invalid(
        Some("customer_tax_location_invalid"),
        "The customer's location isn't recognized, so automatic tax can't be calculated.",
    )
    .with_param("customer_tax_location");
    if let Some(inv) = store.invoice_mut(id) {
        inv.automatic_tax_status = Some("requires_location_inputs".to_owned());
        inv.last_finalization_error = Some(error.body()["error"].clone());
    }
    store.emit("invoice.finalization_failed", invoice_json(store, id), None);
    error
}

fn mark_paid(store: &mut Store, id: &str, out_of_band: bool) {
    if let Some(inv) = store.invoice_mut(id) {
        inv.status = InvoiceStatus::Paid;
        inv.paid_at = Some(now());
        inv.amount_paid = inv.amount_due;
        inv.amount_remaining = 0;
        inv.auto_advance = false;
        inv.paid_out_of_band = out_of_band;
        inv.attempted = true;
        inv.next_payment_attempt = None;
    }
    store.emit("invoice.paid", invoice_json(store, id), None);
    store.emit("invoice.payment_succeeded", invoice_json(store, id), None);
}

fn collectible(store: &Store, id: &str, action: &str) -> Result<Invoice> {
    let invoice = find_invoice(store, id)?;
    match invoice.status {
        InvoiceStatus::Open | InvoiceStatus::Uncollectible => Ok(invoice.clone()),
        status => Err(ApiError::transition(id, status.as_str(), action)),
    }
}

/// `POST /v1/invoices/{id}/pay`: out of band, or charging the invoice's or customer's method.
pub fn pay(store: &mut Store, id: &str, p: &Param) -> Result<Value> {
    // "Stripe automatically finalizes drafts before sending and attempting payment."
    if find_invoice(store, id)?.status == InvoiceStatus::Draft {
        let finalized = finalize(store, id, None)?;
        if finalized["status"] == "paid" {
            return Ok(finalized);
        }
    }
    let invoice = collectible(store, id, "pay")?;
    let out_of_band = p.bool("paid_out_of_band").unwrap_or(false);
    let method = p
        .str("payment_method")
        .map(str::to_owned)
        .or(invoice.default_payment_method)
        .or_else(|| {
            store
                .customer(&invoice.customer)
                .and_then(|c| c.default_payment_method.clone())
        });
    if !out_of_band && method.is_none() {
        fail_payment(store, id)?;
        return Err(ApiError {
            status: 402,
            kind: "card_error",
            code: Some("card_declined"),
            message: format!("Invoice {id} has no payment method to charge."),
            param: None,
        });
    }
    mark_paid(store, id, out_of_band);
    Ok(invoice_json(store, id))
}

/// A failed payment attempt: the invoice stays as it is, `invoice.payment_failed` is emitted.
pub fn fail_payment(store: &mut Store, id: &str) -> Result<Value> {
    collectible(store, id, "fail a payment of")?;
    if let Some(inv) = store.invoice_mut(id) {
        inv.attempt_count += 1;
        inv.attempted = true;
        inv.next_payment_attempt = Some(now() + 3 * 86_400);
    }
    store.emit("invoice.payment_failed", invoice_json(store, id), None);
    Ok(invoice_json(store, id))
}

pub fn void(store: &mut Store, id: &str) -> Result<Value> {
    collectible(store, id, "void")?;
    if let Some(inv) = store.invoice_mut(id) {
        inv.status = InvoiceStatus::Void;
        inv.voided_at = Some(now());
        inv.auto_advance = false;
        inv.next_payment_attempt = None;
    }
    store.emit("invoice.voided", invoice_json(store, id), None);
    Ok(invoice_json(store, id))
}

pub fn mark_uncollectible(store: &mut Store, id: &str) -> Result<Value> {
    let invoice = find_invoice(store, id)?;
    if invoice.status != InvoiceStatus::Open {
        return Err(ApiError::transition(
            id,
            invoice.status.as_str(),
            "mark uncollectible",
        ));
    }
    if let Some(inv) = store.invoice_mut(id) {
        inv.status = InvoiceStatus::Uncollectible;
        inv.marked_uncollectible_at = Some(now());
        inv.auto_advance = false;
    }
    store.emit(
        "invoice.marked_uncollectible",
        invoice_json(store, id),
        None,
    );
    Ok(invoice_json(store, id))
}

fn send(store: &mut Store, id: &str) -> Result<Value> {
    if find_invoice(store, id)?.status == InvoiceStatus::Draft {
        finalize(store, id, None)?;
    }
    let invoice = find_invoice(store, id)?;
    if invoice.status != InvoiceStatus::Open || invoice.collection_method != "send_invoice" {
        return Err(ApiError::transition(id, invoice.status.as_str(), "send"));
    }
    store.emit("invoice.sent", invoice_json(store, id), None);
    Ok(invoice_json(store, id))
}

/// An open invoice past due: `due_date` moves into the past and `invoice.overdue` is emitted.
pub fn mark_overdue(store: &mut Store, id: &str) -> Result<Value> {
    let invoice = find_invoice(store, id)?;
    if invoice.status != InvoiceStatus::Open {
        return Err(ApiError::transition(
            id,
            invoice.status.as_str(),
            "mark overdue",
        ));
    }
    if let Some(inv) = store.invoice_mut(id) {
        inv.due_date = Some(inv.due_date.unwrap_or(now()).min(now() - 1));
    }
    store.emit("invoice.overdue", invoice_json(store, id), None);
    Ok(invoice_json(store, id))
}

/// The payment needs the customer (3-D Secure): `invoice.payment_action_required`.
pub fn require_action(store: &mut Store, id: &str) -> Result<Value> {
    collectible(store, id, "require action on")?;
    if let Some(inv) = store.invoice_mut(id) {
        inv.attempt_count += 1;
        inv.attempted = true;
    }
    store.emit(
        "invoice.payment_action_required",
        invoice_json(store, id),
        None,
    );
    Ok(invoice_json(store, id))
}

fn create_invoice_item(store: &mut Store, p: &Param) -> Result<Value> {
    let customer = p.str("customer").unwrap_or_default().to_owned();
    let known = store
        .customer(&customer)
        .ok_or_else(|| ApiError::missing("customer", &customer, "customer"))?;
    let mut currency = p.str("currency").map(str::to_lowercase);
    let invoice = match p.str("invoice") {
        None => None,
        Some(id) => {
            let invoice = find_invoice(store, id)?;
            editable(invoice)?;
            if invoice.customer != customer {
                return Err(ApiError::invalid(
                    None,
                    format!("Invoice {id} belongs to another customer."),
                )
                .with_param("invoice"));
            }
            if currency.as_ref().is_some_and(|c| *c != invoice.currency) {
                return Err(ApiError::invalid(
                    None,
                    format!(
                        "The currency must match invoice {id}'s {}.",
                        invoice.currency
                    ),
                )
                .with_param("currency"));
            }
            currency = Some(invoice.currency.clone());
            Some(id.to_owned())
        }
    };
    let currency = currency
        .or_else(|| known.currency.clone())
        .unwrap_or_else(|| "usd".to_owned());
    let created = now();
    let period = p.get("period");
    let item = InvoiceItem {
        id: store.id("ii_", 24),
        line_id: invoice.as_ref().map(|_| store.id("il_", 24)),
        invoice: invoice.clone(),
        customer,
        created,
        amount: amount(p),
        currency,
        description: opt(p, "description"),
        period_start: period.and_then(|x| x.int("start")).unwrap_or(created),
        period_end: period.and_then(|x| x.int("end")).unwrap_or(created),
        metadata: p
            .string_map("metadata")
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect(),
        tax_behavior: opt(p, "tax_behavior"),
        tax_code: opt(p, "tax_code"),
        discountable: p
            .bool("discountable")
            .unwrap_or(p.int("amount").unwrap_or(0) >= 0),
    };
    let json = item.json();
    store.invoice_items.push(item);
    if let Some(invoice) = &invoice {
        store.recompute(invoice);
    }
    store.emit("invoiceitem.created", json.clone(), None);
    Ok(json)
}

/// The amount in minor units: `amount`, or `unit_amount(_decimal)` × `quantity` rounded.
fn amount(p: &Param) -> i64 {
    if let Some(amount) = p.int("amount") {
        return amount;
    }
    let quantity = p.int("quantity").unwrap_or(1);
    let unit = p
        .str("unit_amount_decimal")
        .and_then(|u| u.parse::<f64>().ok())
        .or_else(|| p.int("unit_amount").map(|u| u as f64))
        .unwrap_or(0.0);
    (unit * quantity as f64).round() as i64
}

fn editable(invoice: &Invoice) -> Result<()> {
    if invoice.status == InvoiceStatus::Draft {
        return Ok(());
    }
    Err(ApiError::invalid(
        Some("invoice_not_editable"),
        format!(
            "The invoice {} is {} and its items can no longer be changed.",
            invoice.id,
            invoice.status.as_str()
        ),
    ))
}

/// The item `id` and, when it is on an invoice, a check that the invoice is a draft.
fn editable_item(store: &Store, id: &str) -> Result<usize> {
    let index = store
        .invoice_items
        .iter()
        .position(|i| i.id == id)
        .ok_or_else(|| ApiError::missing("invoiceitem", id, "id"))?;
    if let Some(invoice) = store.invoice_items[index]
        .invoice
        .as_deref()
        .and_then(|i| store.invoice(i))
    {
        editable(invoice)?;
    }
    Ok(index)
}

fn update_invoice_item(store: &mut Store, id: &str, p: &Param) -> Result<Value> {
    let index = editable_item(store, id)?;
    let item = &mut store.invoice_items[index];
    if p.str("amount").is_some()
        || p.str("unit_amount_decimal").is_some()
        || p.str("unit_amount").is_some()
    {
        item.amount = amount(p);
    }
    set(&mut item.description, p, "description");
    set(&mut item.tax_behavior, p, "tax_behavior");
    set(&mut item.tax_code, p, "tax_code");
    if let Some(period) = p.get("period") {
        item.period_start = period.int("start").unwrap_or(item.period_start);
        item.period_end = period.int("end").unwrap_or(item.period_end);
    }
    if let Some(discountable) = p.bool("discountable") {
        item.discountable = discountable;
    }
    merge_metadata(&mut item.metadata, p);
    let json = item.json();
    if let Some(invoice) = item.invoice.clone() {
        store.recompute(&invoice);
    }
    // No event: Stripe has no `invoiceitem.updated` (the spec's event list has created and deleted).
    Ok(json)
}

fn delete_invoice_item(store: &mut Store, id: &str) -> Result<Value> {
    let index = editable_item(store, id)?;
    let item = store.invoice_items.remove(index);
    if let Some(invoice) = &item.invoice {
        store.recompute(invoice);
    }
    store.emit("invoiceitem.deleted", item.json(), None);
    Ok(json!({"id": id, "object": "invoiceitem", "deleted": true}))
}

fn list_invoices(store: &Store, p: &Param) -> Result<Value> {
    let mut rows: Vec<(String, Value)> = store
        .invoices
        .iter()
        .filter(|i| p.str("customer").is_none_or(|c| c == i.customer))
        .filter(|i| p.str("status").is_none_or(|s| s == i.status.as_str()))
        .filter(|i| {
            p.str("collection_method")
                .is_none_or(|m| m == i.collection_method)
        })
        .map(|i| (i.id.clone(), i.json(store, &[])))
        .collect();
    rows.reverse();
    page(rows, p, "/v1/invoices")
}

fn list_invoice_items(store: &Store, p: &Param) -> Result<Value> {
    let pending = p.bool("pending");
    let mut rows: Vec<(String, Value)> = store
        .invoice_items
        .iter()
        .filter(|i| p.str("customer").is_none_or(|c| c == i.customer))
        .filter(|i| {
            p.str("invoice")
                .is_none_or(|v| Some(v) == i.invoice.as_deref())
        })
        .filter(|i| pending.is_none_or(|pending| pending == i.invoice.is_none()))
        .map(|i| (i.id.clone(), i.json()))
        .collect();
    rows.reverse();
    page(rows, p, "/v1/invoiceitems")
}

/// One page of a list: `limit` (1–100, default 10) after `starting_after` or before `ending_before`.
fn page(rows: Vec<(String, Value)>, p: &Param, url: &str) -> Result<Value> {
    let limit = p.int("limit").unwrap_or(LIST_LIMIT_DEFAULT);
    if !(1..=LIST_LIMIT_MAX).contains(&limit) {
        return Err(ApiError::invalid(
            Some("parameter_invalid_integer"),
            "limit must be between 1 and 100.",
        )
        .with_param("limit"));
    }
    let limit = limit as usize;
    let position = |param: &str, cursor: &str| {
        rows.iter()
            .position(|(id, _)| id == cursor)
            .ok_or_else(|| ApiError::missing("object", cursor, param))
    };
    let (start, end) = if let Some(cursor) = p.str("starting_after") {
        let start = position("starting_after", cursor)? + 1;
        (start, (start + limit).min(rows.len()))
    } else if let Some(cursor) = p.str("ending_before") {
        let end = position("ending_before", cursor)?;
        (end.saturating_sub(limit), end)
    } else {
        (0, limit.min(rows.len()))
    };
    let has_more = if p.str("ending_before").is_some() {
        start > 0
    } else {
        end < rows.len()
    };
    let data: Vec<Value> = rows[start..end].iter().map(|(_, v)| v.clone()).collect();
    Ok(json!({"object": "list", "data": data, "has_more": has_more, "url": url}))
}

fn create_checkout_session(store: &mut Store, p: &Param) -> Result<Value> {
    let customer = p.str("customer").map(str::to_owned);
    if let Some(c) = &customer {
        store
            .customer(c)
            .ok_or_else(|| ApiError::missing("customer", c, "customer"))?;
    }
    let id = store.id("cs_test_", 58);
    let setup_intent = (p.str("mode") == Some("setup")).then(|| store.id("seti_", 24));
    let embedded = p.str("ui_mode") == Some("embedded");
    let mut metadata = Metadata::new();
    merge_metadata(&mut metadata, p);
    let currency = p.str("currency").map(str::to_lowercase).or_else(|| {
        customer
            .as_deref()
            .and_then(|c| store.customer(c))
            .and_then(|c| c.currency.clone())
    });
    let created = now();
    let json = json!({
        "id": id, "object": "checkout.session", "mode": p.str("mode"), "setup_intent": setup_intent,
        "url": (!embedded).then(|| format!("https://checkout.stripe.com/c/pay/{id}")),
        "client_secret": embedded.then(|| format!("{id}_secret_fake")), "status": "open",
        "expires_at": p.int("expires_at").unwrap_or(created + 86_400), "customer": customer,
        "customer_email": p.str("customer_email"), "client_reference_id": p.str("client_reference_id"),
        "currency": currency, "metadata": metadata, "success_url": p.str("success_url"),
        "cancel_url": p.str("cancel_url"), "return_url": p.str("return_url"),
        "ui_mode": p.str("ui_mode").unwrap_or("hosted"), "locale": p.str("locale"),
        "created": created, "livemode": false, "payment_status": "no_payment_required",
        "automatic_tax": {"enabled": false, "status": null}, "custom_fields": [],
        "custom_text": {"after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null},
        "payment_method_types": p.strings("payment_method_types"), "shipping_options": [],
    });
    store.checkout_sessions.push(json.clone());
    Ok(json)
}

fn create_portal_session(store: &mut Store, p: &Param) -> Result<Value> {
    let customer = p.str("customer").unwrap_or_default().to_owned();
    store
        .customer(&customer)
        .ok_or_else(|| ApiError::missing("customer", &customer, "customer"))?;
    let id = store.id("bps_", 24);
    let configuration = p
        .str("configuration")
        .map(str::to_owned)
        .unwrap_or_else(|| store.id("bpc_", 24));
    let json = json!({
        "id": id, "object": "billing_portal.session", "configuration": configuration, "customer": customer,
        "flow": null, "livemode": false, "locale": p.str("locale"), "on_behalf_of": null,
        "return_url": p.str("return_url"), "url": format!("https://billing.stripe.com/p/session/{id}"),
        "created": now(),
    });
    store.portal_sessions.push(json.clone());
    Ok(json)
}
