//! What goes to Stripe and what comes back, in `2024-09-30.acacia` shapes.
//!
//! Requests are plain structs that know their form ([`InvoiceCreate::to_form`], …). Responses
//! read only the fields Metron uses; every field has a default, `null` reads as the default and
//! unknown fields are ignored, so a newer acacia response never fails to decode. Money is `i64`
//! in the currency's minor units, times are unix seconds as Stripe sends them.

use super::form::{Form, Value};
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type Metadata = BTreeMap<String, String>;

/// `collection_method` of an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectionMethod {
    #[default]
    ChargeAutomatically,
    SendInvoice,
}

impl CollectionMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChargeAutomatically => "charge_automatically",
            Self::SendInvoice => "send_invoice",
        }
    }
}

/// `tax_behavior` of an invoice item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaxBehavior {
    Inclusive,
    Exclusive,
}

impl TaxBehavior {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inclusive => "inclusive",
            Self::Exclusive => "exclusive",
        }
    }
}

/// A service period in unix seconds (`period[start]`, `period[end]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Period {
    pub start: i64,
    pub end: i64,
}

impl Period {
    fn to_value(self) -> Value {
        Value::Map(vec![
            ("start".to_owned(), self.start.into()),
            ("end".to_owned(), self.end.into()),
        ])
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

/// `POST /v1/webhook_endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookEndpointCreate {
    pub url: String,
    pub enabled_events: Vec<String>,
    pub api_version: Option<String>,
    pub description: Option<String>,
    pub metadata: Metadata,
}

impl WebhookEndpointCreate {
    pub fn to_form(&self) -> Form {
        Form::new()
            .field("url", self.url.as_str())
            .field("enabled_events", &self.enabled_events[..])
            .field_opt("api_version", self.api_version.as_deref())
            .field_opt("description", self.description.as_deref())
            .map("metadata", map_entries(&self.metadata))
    }
}

/// `POST /v1/customers`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomerCreate {
    pub name: Option<String>,
    pub email: Option<String>,
    pub metadata: Metadata,
}

impl CustomerCreate {
    pub fn to_form(&self) -> Form {
        Form::new()
            .field_opt("name", self.name.as_deref())
            .field_opt("email", self.email.as_deref())
            .map("metadata", map_entries(&self.metadata))
    }
}

/// `POST /v1/checkout/sessions` in setup mode (contract §1.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckoutSessionCreate {
    pub customer: String,
    /// `setup` unless set.
    pub mode: Option<String>,
    /// `setup_intent_data[metadata][…]`: the `om_*` keys plus the caller's.
    pub setup_intent_metadata: Metadata,
    pub billing_address_collection: Option<String>,
    pub cancel_url: Option<String>,
    pub client_reference_id: Option<String>,
    /// `customer_update[address|name|shipping]` (`auto` or `never`).
    pub customer_update_address: Option<String>,
    pub customer_update_name: Option<String>,
    pub customer_update_shipping: Option<String>,
    /// Lower-case ISO code.
    pub currency: Option<String>,
    pub consent_payment_method_reuse_agreement_position: Option<String>,
    pub consent_promotions: Option<String>,
    pub consent_terms_of_service: Option<String>,
    pub custom_text_after_submit: Option<String>,
    pub custom_text_shipping_address: Option<String>,
    pub custom_text_submit: Option<String>,
    pub custom_text_terms_of_service_acceptance: Option<String>,
    pub expires_at: Option<i64>,
    pub locale: Option<String>,
    pub return_url: Option<String>,
    pub success_url: Option<String>,
    pub ui_mode: Option<String>,
    pub payment_method_types: Vec<String>,
    pub redirect_on_completion: Option<String>,
    pub tax_id_collection_enabled: Option<bool>,
    pub tax_id_collection_required: Option<String>,
}

impl CheckoutSessionCreate {
    pub fn to_form(&self) -> Form {
        let message = |text: &Option<String>| {
            text.as_ref()
                .map(|t| Value::Map(vec![("message".to_owned(), t.as_str().into())]))
        };
        let custom_text = entries([
            ("after_submit", message(&self.custom_text_after_submit)),
            (
                "shipping_address",
                message(&self.custom_text_shipping_address),
            ),
            ("submit", message(&self.custom_text_submit)),
            (
                "terms_of_service_acceptance",
                message(&self.custom_text_terms_of_service_acceptance),
            ),
        ]);
        let reuse = self
            .consent_payment_method_reuse_agreement_position
            .as_ref()
            .map(|p| Value::Map(vec![("position".to_owned(), p.as_str().into())]));
        let consent = entries([
            ("payment_method_reuse_agreement", reuse),
            ("promotions", str_value(&self.consent_promotions)),
            (
                "terms_of_service",
                str_value(&self.consent_terms_of_service),
            ),
        ]);
        let customer_update = entries([
            ("address", str_value(&self.customer_update_address)),
            ("name", str_value(&self.customer_update_name)),
            ("shipping", str_value(&self.customer_update_shipping)),
        ]);
        let tax_id_collection = entries([
            ("enabled", self.tax_id_collection_enabled.map(Value::Bool)),
            ("required", str_value(&self.tax_id_collection_required)),
        ]);
        let setup_intent_data = if self.setup_intent_metadata.is_empty() {
            Vec::new()
        } else {
            vec![(
                "metadata".to_owned(),
                Value::from(&self.setup_intent_metadata),
            )]
        };
        let payment_method_types = (!self.payment_method_types.is_empty())
            .then(|| Value::from(&self.payment_method_types[..]));
        Form::new()
            .field("mode", self.mode.as_deref().unwrap_or("setup"))
            .field("customer", self.customer.as_str())
            .map("setup_intent_data", setup_intent_data)
            .field_opt(
                "billing_address_collection",
                self.billing_address_collection.as_deref(),
            )
            .field_opt("cancel_url", self.cancel_url.as_deref())
            .field_opt("client_reference_id", self.client_reference_id.as_deref())
            .map("customer_update", customer_update)
            .field_opt("currency", self.currency.as_deref())
            .map("consent_collection", consent)
            .map("custom_text", custom_text)
            .field_opt("expires_at", self.expires_at)
            .field_opt("locale", self.locale.as_deref())
            .field_opt("return_url", self.return_url.as_deref())
            .field_opt("success_url", self.success_url.as_deref())
            .field_opt("ui_mode", self.ui_mode.as_deref())
            .field_opt("payment_method_types", payment_method_types)
            .field_opt(
                "redirect_on_completion",
                self.redirect_on_completion.as_deref(),
            )
            .map("tax_id_collection", tax_id_collection)
    }
}

/// `POST /v1/billing_portal/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortalSessionCreate {
    pub customer: String,
    pub configuration: Option<String>,
    pub return_url: Option<String>,
    pub locale: Option<String>,
}

impl PortalSessionCreate {
    pub fn to_form(&self) -> Form {
        Form::new()
            .field("customer", self.customer.as_str())
            .field_opt("configuration", self.configuration.as_deref())
            .field_opt("return_url", self.return_url.as_deref())
            .field_opt("locale", self.locale.as_deref())
    }
}

/// `POST /v1/invoices`: a draft that Metron fills with invoice items (contract §1.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InvoiceCreate {
    pub customer: String,
    /// ISO code; Stripe accepts either case and answers lower-case.
    pub currency: String,
    /// Always `false` on create: Metron finalizes explicitly.
    pub auto_advance: bool,
    pub collection_method: CollectionMethod,
    /// `send_invoice` only (required there, refused otherwise).
    pub days_until_due: Option<i64>,
    pub default_payment_method: Option<String>,
    pub automatic_tax: bool,
    pub description: Option<String>,
    pub statement_descriptor: Option<String>,
    /// `pending_invoice_items_behavior`: `exclude` keeps the customer's pending items out.
    pub pending_invoice_items_behavior: Option<String>,
    pub metadata: Metadata,
}

impl InvoiceCreate {
    pub fn to_form(&self) -> Form {
        Form::new()
            .field("customer", self.customer.as_str())
            .field("currency", self.currency.as_str())
            .field("auto_advance", self.auto_advance)
            .field("collection_method", self.collection_method.as_str())
            .field_opt("days_until_due", self.days_until_due)
            .field_opt(
                "default_payment_method",
                self.default_payment_method.as_deref(),
            )
            .map(
                "automatic_tax",
                vec![("enabled".to_owned(), self.automatic_tax.into())],
            )
            .field_opt("description", self.description.as_deref())
            .field_opt("statement_descriptor", self.statement_descriptor.as_deref())
            .field_opt(
                "pending_invoice_items_behavior",
                self.pending_invoice_items_behavior.as_deref(),
            )
            .map("metadata", map_entries(&self.metadata))
    }
}

/// `POST /v1/invoices/{id}`: only what is set is sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InvoiceUpdate {
    pub automatic_tax: Option<bool>,
    pub collection_method: Option<CollectionMethod>,
    pub days_until_due: Option<i64>,
    pub default_payment_method: Option<String>,
    pub description: Option<String>,
    pub statement_descriptor: Option<String>,
    pub metadata: Metadata,
}

impl InvoiceUpdate {
    pub fn to_form(&self) -> Form {
        let automatic_tax = self
            .automatic_tax
            .map(|enabled| vec![("enabled".to_owned(), enabled.into())])
            .unwrap_or_default();
        Form::new()
            .map("automatic_tax", automatic_tax)
            .field_opt(
                "collection_method",
                self.collection_method.map(CollectionMethod::as_str),
            )
            .field_opt("days_until_due", self.days_until_due)
            .field_opt(
                "default_payment_method",
                self.default_payment_method.as_deref(),
            )
            .field_opt("description", self.description.as_deref())
            .field_opt("statement_descriptor", self.statement_descriptor.as_deref())
            .map("metadata", map_entries(&self.metadata))
    }

    pub fn is_empty(&self) -> bool {
        self.to_form().pairs().is_empty()
    }
}

/// `POST /v1/invoiceitems`: one amount-mode item on a draft (contract §1.5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InvoiceItemCreate {
    pub customer: String,
    pub invoice: Option<String>,
    /// Signed, minor units (discounts and credits are negative).
    pub amount: i64,
    pub currency: Option<String>,
    pub description: Option<String>,
    pub period: Period,
    pub metadata: Metadata,
    pub tax_behavior: Option<TaxBehavior>,
    pub tax_code: Option<String>,
}

impl InvoiceItemCreate {
    pub fn to_form(&self) -> Form {
        Form::new()
            .field("customer", self.customer.as_str())
            .field_opt("invoice", self.invoice.as_deref())
            .field("amount", self.amount)
            .field_opt("currency", self.currency.as_deref())
            .field_opt("description", self.description.as_deref())
            .field("period", self.period.to_value())
            .map("metadata", map_entries(&self.metadata))
            .field_opt("tax_behavior", self.tax_behavior.map(TaxBehavior::as_str))
            .field_opt("tax_code", self.tax_code.as_deref())
    }
}

/// `POST /v1/invoiceitems/{ii_id}`: only what is set is sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InvoiceItemUpdate {
    pub amount: Option<i64>,
    pub description: Option<String>,
    pub period: Option<Period>,
    pub metadata: Metadata,
    pub tax_behavior: Option<TaxBehavior>,
    pub tax_code: Option<String>,
}

impl InvoiceItemUpdate {
    pub fn to_form(&self) -> Form {
        Form::new()
            .field_opt("amount", self.amount)
            .field_opt("description", self.description.as_deref())
            .field_opt("period", self.period.map(Period::to_value))
            .map("metadata", map_entries(&self.metadata))
            .field_opt("tax_behavior", self.tax_behavior.map(TaxBehavior::as_str))
            .field_opt("tax_code", self.tax_code.as_deref())
    }
}

fn map_entries(map: &Metadata) -> Vec<(String, Value)> {
    map.iter()
        .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
        .collect()
}

fn str_value(text: &Option<String>) -> Option<Value> {
    text.as_ref().map(|t| Value::Str(t.clone()))
}

fn entries<const N: usize>(items: [(&str, Option<Value>); N]) -> Vec<(String, Value)> {
    items
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name.to_owned(), v)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Responses

/// `null` reads as the default (Stripe sends `null` for many absent values).
pub(crate) fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A field that is an id unless it was expanded (`expand[]=…`).
#[derive(Debug, Clone, PartialEq)]
pub enum Expandable<T> {
    Id(String),
    Object(Box<T>),
}

/// Objects that have an `id`.
pub trait HasId {
    fn id(&self) -> &str;
}

impl<T: HasId> Expandable<T> {
    /// The id, expanded or not.
    pub fn id(&self) -> &str {
        match self {
            Self::Id(id) => id,
            Self::Object(object) => object.id(),
        }
    }

    pub fn object(&self) -> Option<&T> {
        match self {
            Self::Id(_) => None,
            Self::Object(object) => Some(object),
        }
    }
}

// Read through a `Value`, not `#[serde(untagged)]`: with serde_json's arbitrary_precision an
// untagged enum cannot read integers inside the object.
impl<'de, T: DeserializeOwned> Deserialize<'de> for Expandable<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(id) => Ok(Self::Id(id)),
            object => serde_json::from_value(object)
                .map(|o| Self::Object(Box::new(o)))
                .map_err(serde::de::Error::custom),
        }
    }
}

macro_rules! has_id {
    ($($t:ty),*) => { $(impl HasId for $t { fn id(&self) -> &str { &self.id } })* };
}

/// A page of a list: `{object:"list", data, has_more, url}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, bound(deserialize = "T: Deserialize<'de>"))]
pub struct List<T> {
    #[serde(deserialize_with = "nullable")]
    pub data: Vec<T>,
    pub has_more: bool,
    #[serde(deserialize_with = "nullable")]
    pub url: String,
}

impl<T> Default for List<T> {
    fn default() -> Self {
        Self {
            data: Vec::new(),
            has_more: false,
            url: String::new(),
        }
    }
}

/// `{id, object, deleted:true}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct Deleted {
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct Address {
    pub city: Option<String>,
    pub country: Option<String>,
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub postal_code: Option<String>,
    pub state: Option<String>,
}

/// `GET /v1/account`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct Account {
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    pub country: Option<String>,
    pub email: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub business_profile: BusinessProfile,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct BusinessProfile {
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct WebhookEndpoint {
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    /// `whsec_…`, only in the answer to the create.
    pub secret: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub url: String,
    #[serde(deserialize_with = "nullable")]
    pub enabled_events: Vec<String>,
    pub api_version: Option<String>,
    pub description: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub metadata: Metadata,
    pub livemode: bool,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct Customer {
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub currency: Option<String>,
    pub address: Option<Address>,
    pub balance: i64,
    pub delinquent: Option<bool>,
    pub invoice_prefix: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub invoice_settings: InvoiceSettings,
    /// With `expand[]=tax`.
    pub tax: Option<CustomerTax>,
    pub tax_exempt: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub metadata: Metadata,
    pub livemode: bool,
    pub created: i64,
    /// Set on a deleted customer.
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct InvoiceSettings {
    /// Expanded with `expand[]=invoice_settings.default_payment_method`.
    pub default_payment_method: Option<Expandable<PaymentMethod>>,
    pub footer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct CustomerTax {
    /// `supported | not_collecting | failed | unrecognized_location`.
    #[serde(deserialize_with = "nullable")]
    pub automatic_tax: String,
    pub ip_address: Option<String>,
    pub location: Option<TaxLocation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct TaxLocation {
    pub country: Option<String>,
    pub state: Option<String>,
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct PaymentMethod {
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    /// The owning customer's id (`cus_…`), or absent when detached.
    pub customer: Option<String>,
    #[serde(rename = "type", deserialize_with = "nullable")]
    pub kind: String,
    #[serde(deserialize_with = "nullable")]
    pub billing_details: BillingDetails,
    pub livemode: bool,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct BillingDetails {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub address: Option<Address>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct CheckoutSession {
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub mode: String,
    /// `seti_…`; a setup-mode session always has one.
    pub setup_intent: Option<String>,
    pub url: Option<String>,
    pub client_secret: Option<String>,
    pub client_reference_id: Option<String>,
    pub customer: Option<String>,
    pub customer_email: Option<String>,
    pub currency: Option<String>,
    pub status: Option<String>,
    pub expires_at: i64,
    pub cancel_url: Option<String>,
    pub success_url: Option<String>,
    pub return_url: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub metadata: Metadata,
    pub livemode: bool,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct PortalSession {
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub url: String,
    pub return_url: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub customer: String,
    pub configuration: Option<String>,
    pub locale: Option<String>,
    pub livemode: bool,
    pub created: i64,
}

/// `status` of an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    #[default]
    Draft,
    Open,
    Paid,
    Uncollectible,
    Void,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct Invoice {
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub customer: String,
    #[serde(deserialize_with = "nullable")]
    pub currency: String,
    #[serde(deserialize_with = "nullable")]
    pub status: InvoiceStatus,
    /// Empty while a draft; Stripe numbers the invoice at finalize.
    pub number: Option<String>,
    pub auto_advance: bool,
    #[serde(deserialize_with = "nullable")]
    pub collection_method: CollectionMethod,
    pub days_until_due: Option<i64>,
    pub due_date: Option<i64>,
    pub default_payment_method: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub automatic_tax: AutomaticTax,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub amount_remaining: i64,
    pub subtotal: i64,
    pub subtotal_excluding_tax: Option<i64>,
    pub tax: Option<i64>,
    pub total: i64,
    pub total_excluding_tax: Option<i64>,
    pub starting_balance: i64,
    pub ending_balance: Option<i64>,
    pub attempt_count: i64,
    pub attempted: bool,
    pub paid: bool,
    pub paid_out_of_band: bool,
    /// `pi_…`, set when a charge_automatically invoice is finalized.
    pub payment_intent: Option<Expandable<PaymentIntent>>,
    pub last_finalization_error: Option<ErrorBody>,
    pub hosted_invoice_url: Option<String>,
    pub invoice_pdf: Option<String>,
    pub description: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub metadata: Metadata,
    pub period_start: i64,
    pub period_end: i64,
    pub created: i64,
    pub effective_at: Option<i64>,
    #[serde(deserialize_with = "nullable")]
    pub status_transitions: StatusTransitions,
    pub livemode: bool,
    /// Set on a deleted invoice.
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct AutomaticTax {
    pub enabled: bool,
    /// `complete | failed | requires_location_inputs`.
    pub status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct StatusTransitions {
    pub finalized_at: Option<i64>,
    pub paid_at: Option<i64>,
    pub voided_at: Option<i64>,
    pub marked_uncollectible_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct PaymentIntent {
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    pub status: Option<String>,
}

/// Stripe's error object (`{"error": {...}}` and `last_finalization_error`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    #[serde(rename = "type", deserialize_with = "nullable")]
    pub kind: String,
    pub code: Option<String>,
    pub message: Option<String>,
    pub param: Option<String>,
    pub decline_code: Option<String>,
    pub doc_url: Option<String>,
    pub request_log_url: Option<String>,
}

/// One line of an invoice (`il_…`); for `type=invoiceitem` it mirrors an invoice item.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct LineItem {
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    /// `invoiceitem | subscription`.
    #[serde(rename = "type", deserialize_with = "nullable")]
    pub kind: String,
    /// The `ii_…` id (acacia), for `type=invoiceitem`.
    pub invoice_item: Option<String>,
    pub invoice: Option<String>,
    pub amount: i64,
    pub amount_excluding_tax: Option<i64>,
    #[serde(deserialize_with = "nullable")]
    pub currency: String,
    pub description: Option<String>,
    pub discountable: bool,
    #[serde(deserialize_with = "nullable")]
    pub metadata: Metadata,
    #[serde(deserialize_with = "nullable")]
    pub period: Period,
    pub price: Option<Price>,
    pub proration: bool,
    pub quantity: Option<i64>,
    pub livemode: bool,
}

/// The inline price Stripe makes for an amount-mode item (it carries the `tax_behavior`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct Price {
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    pub tax_behavior: Option<String>,
    pub unit_amount: Option<i64>,
}

/// An invoice item (`ii_…`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct InvoiceItem {
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    pub amount: i64,
    #[serde(deserialize_with = "nullable")]
    pub currency: String,
    #[serde(deserialize_with = "nullable")]
    pub customer: String,
    pub date: i64,
    pub description: Option<String>,
    pub discountable: bool,
    pub invoice: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub metadata: Metadata,
    #[serde(deserialize_with = "nullable")]
    pub period: Period,
    pub price: Option<Price>,
    pub proration: bool,
    pub quantity: i64,
    pub unit_amount: Option<i64>,
    pub livemode: bool,
    pub deleted: bool,
}

/// A webhook event; `data.object` is kept as JSON for the handler to read by `type`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct Event {
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    #[serde(rename = "type", deserialize_with = "nullable")]
    pub kind: String,
    pub api_version: Option<String>,
    pub created: i64,
    pub livemode: bool,
    pub pending_webhooks: i64,
    #[serde(deserialize_with = "nullable")]
    pub data: EventData,
    pub request: Option<EventRequest>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct EventData {
    pub object: serde_json::Value,
    pub previous_attributes: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct EventRequest {
    pub id: Option<String>,
    pub idempotency_key: Option<String>,
}

impl Event {
    /// `data.object` read as a typed object (e.g. an [`Invoice`] for `invoice.*` events).
    pub fn object<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(self.data.object.clone())
    }
}

has_id!(
    Account,
    WebhookEndpoint,
    Customer,
    PaymentMethod,
    CheckoutSession,
    PortalSession
);
has_id!(Invoice, PaymentIntent, LineItem, InvoiceItem, Price);

#[cfg(test)]
mod tests;
