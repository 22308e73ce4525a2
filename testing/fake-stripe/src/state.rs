//! The fake's objects, their Stripe JSON (acacia shapes) and the event outbox.

use crate::limits::INVOICE_LINES_INLINE;
use crate::spec::ACACIA;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub type Metadata = BTreeMap<String, String>;

#[derive(Debug, Clone, Serialize)]
pub struct Account {
    pub id: String,
    pub country: String,
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Customer {
    pub id: String,
    pub created: i64,
    pub name: Option<String>,
    pub email: Option<String>,
    pub description: Option<String>,
    pub phone: Option<String>,
    pub currency: Option<String>,
    pub address: Option<Metadata>,
    pub metadata: Metadata,
    pub invoice_prefix: String,
    pub next_invoice_sequence: u32,
    pub default_payment_method: Option<String>,
    pub footer: Option<String>,
    pub tax_exempt: String,
    pub balance: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PaymentMethod {
    pub id: String,
    pub created: i64,
    pub customer: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    /// `billing_details.address`; `None` makes the method unusable for OpenMeter's validation.
    pub address: Option<Metadata>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Draft,
    Open,
    Paid,
    Uncollectible,
    Void,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Draft => "draft",
            InvoiceStatus::Open => "open",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Uncollectible => "uncollectible",
            InvoiceStatus::Void => "void",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Invoice {
    pub id: String,
    pub created: i64,
    pub customer: String,
    pub currency: String,
    pub status: InvoiceStatus,
    pub number: Option<String>,
    pub auto_advance: bool,
    pub collection_method: String,
    pub days_until_due: Option<i64>,
    pub due_date: Option<i64>,
    pub default_payment_method: Option<String>,
    pub automatic_tax: bool,
    pub automatic_tax_status: Option<String>,
    pub description: Option<String>,
    pub footer: Option<String>,
    pub statement_descriptor: Option<String>,
    pub metadata: Metadata,
    pub rendering: Option<Value>,
    pub payment_intent: Option<String>,
    pub subtotal: i64,
    pub total: i64,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub amount_remaining: i64,
    pub attempt_count: u32,
    pub attempted: bool,
    pub paid_out_of_band: bool,
    pub last_finalization_error: Option<Value>,
    pub next_payment_attempt: Option<i64>,
    pub finalized_at: Option<i64>,
    pub paid_at: Option<i64>,
    pub voided_at: Option<i64>,
    pub marked_uncollectible_at: Option<i64>,
}

/// An invoice item; attached to an invoice it is also that invoice's line `line_id` (il_).
#[derive(Debug, Clone, Serialize)]
pub struct InvoiceItem {
    pub id: String,
    pub line_id: Option<String>,
    pub invoice: Option<String>,
    pub customer: String,
    pub created: i64,
    pub amount: i64,
    pub currency: String,
    pub description: Option<String>,
    pub period_start: i64,
    pub period_end: i64,
    pub metadata: Metadata,
    pub tax_behavior: Option<String>,
    pub tax_code: Option<String>,
    pub discountable: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct WebhookEndpoint {
    pub id: String,
    pub created: i64,
    pub url: String,
    pub secret: String,
    pub enabled_events: Vec<String>,
    pub api_version: Option<String>,
    pub description: Option<String>,
    pub metadata: Metadata,
}

impl WebhookEndpoint {
    /// Whether this endpoint receives events of `kind`.
    pub fn wants(&self, kind: &str) -> bool {
        self.enabled_events.iter().any(|e| e == "*" || e == kind)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: i64,
    /// The whole event as Stripe sends it (the body of its webhook).
    pub json: Value,
}

/// One request the fake answered.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub request_id: String,
    pub method: String,
    pub path: String,
    /// The decoded form pairs (body for POST, query otherwise).
    pub params: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
    pub status: u16,
    /// The injected fault, if any (`Status500`, `FailAfterWrite`, …).
    pub fault: Option<String>,
    pub replayed: bool,
    /// When the request was answered (Unix milliseconds): the billing bench measures the time
    /// from a period's end to its invoice's finalization with it.
    pub at_ms: i64,
}

/// One webhook delivery attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub event_id: String,
    pub endpoint_id: String,
    pub attempt: u32,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// Everything the fake holds. Guarded by one mutex in the server.
#[derive(Debug, Clone, Serialize)]
pub struct Store {
    pub account: Account,
    pub customers: Vec<Customer>,
    pub payment_methods: Vec<PaymentMethod>,
    pub invoices: Vec<Invoice>,
    pub invoice_items: Vec<InvoiceItem>,
    pub webhook_endpoints: Vec<WebhookEndpoint>,
    pub events: Vec<Event>,
    pub checkout_sessions: Vec<Value>,
    pub portal_sessions: Vec<Value>,
    pub requests: Vec<RequestRecord>,
    pub deliveries: Vec<Delivery>,
    pub violations: Vec<String>,
    /// Events not yet handed to the webhook sender.
    #[serde(skip)]
    pub outbox: Vec<String>,
    /// The request being executed, for `event.request`.
    #[serde(skip)]
    pub current_request: Option<(String, Option<String>)>,
    #[serde(skip)]
    rng: StdRng,
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The current time in unix seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Store {
    pub fn new(seed: u64) -> Store {
        let mut store = Store {
            account: Account {
                id: String::new(),
                country: "US".to_owned(),
                name: "Fake Stripe Test Account".to_owned(),
                email: "billing@example.com".to_owned(),
            },
            customers: Vec::new(),
            payment_methods: Vec::new(),
            invoices: Vec::new(),
            invoice_items: Vec::new(),
            webhook_endpoints: Vec::new(),
            events: Vec::new(),
            checkout_sessions: Vec::new(),
            portal_sessions: Vec::new(),
            requests: Vec::new(),
            deliveries: Vec::new(),
            violations: Vec::new(),
            outbox: Vec::new(),
            current_request: None,
            rng: StdRng::seed_from_u64(seed),
        };
        store.account.id = store.id("acct_", 16);
        store
    }

    /// A fresh ID: the prefix and `len` base62 characters.
    pub fn id(&mut self, prefix: &str, len: usize) -> String {
        let mut id = String::with_capacity(prefix.len() + len);
        id.push_str(prefix);
        for _ in 0..len {
            id.push(char::from(BASE62[self.rng.random_range(0..BASE62.len())]));
        }
        id
    }

    // Lookups search from the newest: what a client works on was mostly made last (the
    // billing bench holds 10,000 customers and invoices).
    pub fn customer(&self, id: &str) -> Option<&Customer> {
        self.customers.iter().rev().find(|c| c.id == id)
    }

    pub fn customer_mut(&mut self, id: &str) -> Option<&mut Customer> {
        self.customers.iter_mut().rev().find(|c| c.id == id)
    }

    pub fn invoice(&self, id: &str) -> Option<&Invoice> {
        self.invoices.iter().rev().find(|i| i.id == id)
    }

    pub fn invoice_mut(&mut self, id: &str) -> Option<&mut Invoice> {
        self.invoices.iter_mut().rev().find(|i| i.id == id)
    }

    /// The lines of an invoice, in the order they were added.
    pub fn lines(&self, invoice: &str) -> Vec<&InvoiceItem> {
        self.invoice_items
            .iter()
            .filter(|item| item.invoice.as_deref() == Some(invoice))
            .collect()
    }

    /// Recomputes an invoice's totals from its items (no tax, discounts or balance applied).
    pub fn recompute(&mut self, invoice: &str) {
        let subtotal: i64 = self.lines(invoice).iter().map(|item| item.amount).sum();
        if let Some(inv) = self.invoice_mut(invoice) {
            inv.subtotal = subtotal;
            inv.total = subtotal;
            inv.amount_due = subtotal.max(0);
            inv.amount_remaining = (inv.amount_due - inv.amount_paid).max(0);
        }
    }

    /// Records an event and queues it for webhook delivery.
    pub fn emit(&mut self, kind: &str, object: Value, previous: Option<Value>) -> String {
        debug_assert!(
            crate::ops::EVENTS.contains(&kind),
            "{kind} is not in ops::EVENTS"
        );
        let id = self.id("evt_", 24);
        let created = now();
        let pending = self
            .webhook_endpoints
            .iter()
            .filter(|e| e.wants(kind))
            .count();
        let (request_id, key) = self.current_request.clone().unwrap_or_default();
        let mut data = json!({ "object": object });
        if let Some(previous) = previous {
            data["previous_attributes"] = previous;
        }
        let json = json!({
            "id": id, "object": "event", "api_version": ACACIA, "created": created,
            "data": data, "livemode": false, "pending_webhooks": pending,
            "request": {"id": (!request_id.is_empty()).then_some(request_id), "idempotency_key": key},
            "type": kind,
        });
        self.events.push(Event {
            id: id.clone(),
            kind: kind.to_owned(),
            created,
            json,
        });
        self.outbox.push(id.clone());
        id
    }
}

fn address_json(address: Option<&Metadata>) -> Value {
    match address {
        None => Value::Null,
        Some(a) => {
            let field = |k: &str| a.get(k).cloned();
            json!({"city": field("city"), "country": field("country"), "line1": field("line1"),
                   "line2": field("line2"), "postal_code": field("postal_code"), "state": field("state")})
        }
    }
}

impl PaymentMethod {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id, "object": "payment_method", "created": self.created, "customer": self.customer,
            "type": "card", "livemode": false, "metadata": {},
            "billing_details": {"address": address_json(self.address.as_ref()), "email": self.email,
                                "name": self.name, "phone": null},
            "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034, "country": "US", "funding": "credit"},
        })
    }
}

impl Customer {
    /// The customer; `expand` may name `invoice_settings.default_payment_method` and `tax`.
    pub fn json(&self, store: &Store, expand: &[String]) -> Value {
        let expanded = |field: &str| expand.iter().any(|e| e == field);
        let pm = match &self.default_payment_method {
            Some(id) if expanded("invoice_settings.default_payment_method") => store
                .payment_methods
                .iter()
                .find(|pm| &pm.id == id)
                .map_or(json!(id), PaymentMethod::json),
            other => json!(other),
        };
        let mut json = json!({
            "id": self.id, "object": "customer", "address": address_json(self.address.as_ref()),
            "balance": self.balance, "created": self.created, "currency": self.currency,
            "default_source": null, "delinquent": false, "description": self.description,
            "discount": null, "email": self.email, "invoice_prefix": self.invoice_prefix,
            "invoice_settings": {"custom_fields": null, "default_payment_method": pm,
                                 "footer": self.footer, "rendering_options": null},
            "livemode": false, "metadata": self.metadata, "name": self.name,
            "next_invoice_sequence": self.next_invoice_sequence, "phone": self.phone,
            "preferred_locales": [], "shipping": null, "tax_exempt": self.tax_exempt, "test_clock": null,
        });
        if expanded("tax") {
            let country = self
                .address
                .as_ref()
                .and_then(|a| a.get("country"))
                .cloned();
            json["tax"] = match country {
                Some(country) => json!({"automatic_tax": "supported", "ip_address": null,
                    "location": {"country": country, "source": "billing_address",
                                 "state": self.address.as_ref().and_then(|a| a.get("state"))}}),
                None => {
                    json!({"automatic_tax": "unrecognized_location", "ip_address": null, "location": null})
                }
            };
        }
        json
    }
}

impl InvoiceItem {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id, "object": "invoiceitem", "amount": self.amount, "currency": self.currency,
            "customer": self.customer, "date": self.created, "description": self.description,
            "discountable": self.discountable, "discounts": [], "invoice": self.invoice, "livemode": false,
            "metadata": self.metadata, "period": {"start": self.period_start, "end": self.period_end},
            "price": null, "proration": false, "quantity": 1, "subscription": null,
            "subscription_item": null,
            "tax_rates": [], "test_clock": null, "unit_amount": self.amount,
            "unit_amount_decimal": self.amount.to_string(),
        })
    }

    /// The invoice line (`line_item`) this item is on its invoice.
    pub fn line_json(&self) -> Value {
        json!({
            "id": self.line_id, "object": "line_item", "amount": self.amount,
            "amount_excluding_tax": self.amount, "currency": self.currency,
            "description": self.description, "discount_amounts": [], "discountable": self.discountable,
            "discounts": [], "invoice": self.invoice, "invoice_item": self.id, "livemode": false,
            "metadata": self.metadata, "period": {"start": self.period_start, "end": self.period_end},
            "price": null, "proration": false, "proration_details": {"credited_items": null},
            "quantity": 1, "subscription": null, "subscription_item": null, "tax_amounts": [],
            "tax_rates": [], "type": "invoiceitem",
            "unit_amount_excluding_tax": self.amount.to_string(),
        })
    }
}

impl Invoice {
    /// The invoice with its first ten lines; `expand` may name `customer`.
    pub fn json(&self, store: &Store, expand: &[String]) -> Value {
        let lines = store.lines(&self.id);
        let customer = store.customer(&self.customer);
        let customer_json = match customer {
            Some(c) if expand.iter().any(|e| e == "customer") => c.json(store, &[]),
            _ => json!(self.customer),
        };
        let finalized = self.status != InvoiceStatus::Draft;
        let tax = self.automatic_tax.then_some(0);
        json!({
            "id": self.id, "object": "invoice", "account_country": store.account.country,
            "account_name": store.account.name, "account_tax_ids": null,
            "amount_due": self.amount_due, "amount_paid": self.amount_paid,
            "amount_remaining": self.amount_remaining, "amount_shipping": 0, "application": null,
            "application_fee_amount": null, "attempt_count": self.attempt_count, "attempted": self.attempted,
            "auto_advance": self.auto_advance,
            "automatic_tax": {"enabled": self.automatic_tax, "liability": null, "status": self.automatic_tax_status},
            "billing_reason": "manual", "charge": null, "collection_method": self.collection_method,
            "created": self.created, "currency": self.currency, "custom_fields": null,
            "customer": customer_json,
            "customer_address": address_json(customer.and_then(|c| c.address.as_ref())),
            "customer_email": customer.and_then(|c| c.email.clone()),
            "customer_name": customer.and_then(|c| c.name.clone()),
            "customer_phone": customer.and_then(|c| c.phone.clone()),
            "customer_shipping": null, "customer_tax_exempt": customer.map(|c| c.tax_exempt.clone()),
            "customer_tax_ids": [],
            "default_payment_method": self.default_payment_method, "default_source": null,
            "default_tax_rates": [], "description": self.description, "discount": null, "discounts": [],
            "due_date": self.due_date, "effective_at": self.finalized_at, "ending_balance": finalized.then_some(0),
            "footer": self.footer, "from_invoice": null,
            "hosted_invoice_url": finalized.then(|| format!("https://invoice.stripe.com/i/{}", self.id)),
            "invoice_pdf": finalized.then(|| format!("https://pay.stripe.com/invoice/{}/pdf", self.id)),
            "issuer": {"type": "self"}, "last_finalization_error": self.last_finalization_error,
            "latest_revision": null,
            "lines": {"object": "list", "data": lines.iter().take(INVOICE_LINES_INLINE).map(|l| l.line_json()).collect::<Vec<_>>(),
                      "has_more": lines.len() > INVOICE_LINES_INLINE,
                      "url": format!("/v1/invoices/{}/lines", self.id)},
            "livemode": false, "metadata": self.metadata, "next_payment_attempt": self.next_payment_attempt,
            "number": self.number, "on_behalf_of": null, "paid": self.status == InvoiceStatus::Paid,
            "paid_out_of_band": self.paid_out_of_band, "payment_intent": self.payment_intent,
            "payment_settings": {"default_mandate": null, "payment_method_options": null, "payment_method_types": null},
            "period_end": self.created, "period_start": self.created,
            "post_payment_credit_notes_amount": 0, "pre_payment_credit_notes_amount": 0, "quote": null,
            "receipt_number": null, "rendering": self.rendering, "shipping_cost": null, "shipping_details": null,
            "starting_balance": 0, "statement_descriptor": self.statement_descriptor,
            "status": self.status.as_str(),
            "status_transitions": {"finalized_at": self.finalized_at, "marked_uncollectible_at": self.marked_uncollectible_at,
                                   "paid_at": self.paid_at, "voided_at": self.voided_at},
            "subscription": null, "subtotal": self.subtotal, "subtotal_excluding_tax": self.subtotal,
            "tax": tax, "test_clock": null, "total": self.total, "total_discount_amounts": [],
            "total_excluding_tax": self.total, "total_tax_amounts": [], "transfer_data": null,
            "webhooks_delivered_at": self.created,
        })
    }
}

impl WebhookEndpoint {
    /// The endpoint; the secret only in the create answer.
    pub fn json(&self, with_secret: bool) -> Value {
        let mut json = json!({
            "id": self.id, "object": "webhook_endpoint", "api_version": self.api_version,
            "application": null, "created": self.created, "description": self.description,
            "enabled_events": self.enabled_events, "livemode": false, "metadata": self.metadata,
            "status": "enabled", "url": self.url,
        });
        if with_secret {
            json["secret"] = json!(self.secret);
        }
        json
    }
}
