//! Billing profiles and customer overrides (OpenMeter's `openmeter/billing/profile.go`,
//! `customeroverride.go` and their service rules).
//!
//! A profile names its supplier, its workflow (collection, invoicing, payment, tax) and the
//! one app that taxes, invoices and collects payment. Exactly one live profile of a
//! namespace is the default (a partial unique index keeps it so); making another one
//! default demotes it. A customer override pins a customer to a profile and may override
//! workflow settings; [`Catalog::effective_billing_profile`] merges the two for the billing
//! engine.

use crate::apps::{App, AppError, AppInstall, AppKind, AppType, decode_app};
use crate::catalog::{Catalog, Error as CatalogError, Tx};
use crate::customers::{Address, Customer};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::BTreeMap;

pub const PROFILE_NAME_LEN_MAX: usize = 256;
pub const PROFILE_DESCRIPTION_LEN_MAX: usize = 1024;
/// The default profile OpenMeter provisions in each namespace.
pub const DEFAULT_PROFILE_NAME: &str = "openmeter-sandbox";

#[derive(Debug, thiserror::Error)]
pub enum BillingProfileError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Invalid(String),
    #[error("profile not found [id={0}]")]
    NotFound(String),
    #[error("default profile not found")]
    DefaultNotFound,
    #[error("profile already deleted [id={0}]")]
    AlreadyDeleted(String),
    #[error("default profile cannot be deleted [id={0}]")]
    DefaultCannotBeDeleted(String),
    #[error("default profile cannot be unset [id={0}]")]
    DefaultCannotBeUnset(String),
    #[error(
        "profile is referenced by customer overrides [profile_id={id}, customer_ids={customer_ids:?}]"
    )]
    Referenced {
        id: String,
        customer_ids: Vec<String>,
    },
    #[error("all apps must be the same")]
    AppsDiffer,
    #[error("cannot resolve {role} app: app {reference} not found")]
    AppNotFound {
        role: &'static str,
        reference: String,
    },
    #[error("customer not found [id={0}]")]
    CustomerNotFound(String),
    #[error("customer override not found [id={0}]")]
    OverrideNotFound(String),
}

pub type Result<T, E = BillingProfileError> = std::result::Result<T, E>;

impl BillingProfileError {
    /// OpenMeter's validation issue code (`extensions.code` of the problem), if it has one.
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            Self::NotFound(_) => "profile_not_found",
            Self::DefaultNotFound => "default_profile_not_found",
            Self::AlreadyDeleted(_) => "profile_already_deleted",
            Self::DefaultCannotBeDeleted(_) => "default_profile_cannot_be_deleted",
            Self::DefaultCannotBeUnset(_) => "default_profile_cannot_be_unset",
            Self::Referenced { .. } => "profile_referenced",
            Self::CustomerNotFound(_) => "customer_not_found",
            Self::OverrideNotFound(_) => "customer_override_not_found",
            Self::Catalog(_) | Self::Invalid(_) | Self::AppsDiffer | Self::AppNotFound { .. } => {
                return None;
            }
        })
    }

    /// The issue's message without the ids (OpenMeter's `ValidationIssue.Message`).
    pub fn issue_message(&self) -> String {
        match self {
            Self::NotFound(_) => "profile not found".into(),
            Self::AlreadyDeleted(_) => "profile already deleted".into(),
            Self::DefaultCannotBeDeleted(_) => "default profile cannot be deleted".into(),
            Self::DefaultCannotBeUnset(_) => "default profile cannot be unset".into(),
            Self::Referenced { .. } => "profile is referenced by customer overrides".into(),
            Self::CustomerNotFound(_) => "customer not found".into(),
            Self::OverrideNotFound(_) => "customer override not found".into(),
            other => other.to_string(),
        }
    }
}

impl From<sqlx::Error> for BillingProfileError {
    fn from(error: sqlx::Error) -> Self {
        Self::Catalog(CatalogError::Query(error))
    }
}

impl From<AppError> for BillingProfileError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Catalog(c) => Self::Catalog(c),
            other => Self::Invalid(other.to_string()),
        }
    }
}

/// `BillingPartyTaxIdentity`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// `BillingParty`: the supplier of a profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingParty {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_id: Option<TaxIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<Address>>,
}

impl BillingParty {
    /// OpenMeter's `SupplierContact.Validate`: a name and a country.
    fn validate(&self) -> Result<()> {
        if self.name.as_deref().unwrap_or_default().is_empty() {
            return Err(BillingProfileError::Invalid(
                "invalid supplier: name is required".into(),
            ));
        }
        let country = self
            .addresses
            .as_ref()
            .and_then(|a| a.first())
            .and_then(|a| a.country.as_deref());
        match country {
            Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) => {}
            Some(c) => {
                return Err(BillingProfileError::Invalid(format!(
                    "invalid supplier: country {c:?} is not an ISO 3166-1 alpha-2 code"
                )));
            }
            None => {
                return Err(BillingProfileError::Invalid(
                    "invalid supplier: country is required".into(),
                ));
            }
        }
        if self
            .tax_id
            .as_ref()
            .and_then(|t| t.code.as_ref())
            .is_some_and(|c| c.is_empty() || c.len() > 32)
        {
            return Err(BillingProfileError::Invalid(
                "invalid supplier: taxId.code must be 1 to 32 characters".into(),
            ));
        }
        Ok(())
    }
}

/// `RecurringPeriodV2`: an interval (ISO 8601 duration or DAY/WEEK/MONTH/YEAR) and an anchor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecurringPeriod {
    pub interval: String,
    pub anchor: DateTime<Utc>,
}

/// `BillingWorkflowCollectionAlignment`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum Alignment {
    #[default]
    Subscription,
    Anchored {
        recurring_period: RecurringPeriod,
    },
}

/// `BillingWorkflowCollectionSettings`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CollectionSettings {
    pub alignment: Alignment,
    pub interval: String,
}

impl Default for CollectionSettings {
    fn default() -> Self {
        Self {
            alignment: Alignment::Subscription,
            interval: "PT1H".into(),
        }
    }
}

/// `BillingWorkflowInvoicingSettings`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InvoicingSettings {
    pub auto_advance: bool,
    pub draft_period: String,
    pub due_after: String,
    pub progressive_billing: bool,
    pub subscription_end_proration_mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_tax_config: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Default for InvoicingSettings {
    fn default() -> Self {
        Self {
            auto_advance: true,
            draft_period: "P0D".into(),
            due_after: "P30D".into(),
            progressive_billing: true,
            subscription_end_proration_mode: "bill_actual_period".into(),
            default_tax_config: None,
        }
    }
}

/// `CollectionMethod`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectionMethod {
    #[default]
    ChargeAutomatically,
    SendInvoice,
}

/// `BillingWorkflowPaymentSettings`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PaymentSettings {
    pub collection_method: CollectionMethod,
}

/// `BillingWorkflowTaxSettings`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaxSettings {
    pub enabled: bool,
    pub enforced: bool,
}

impl Default for TaxSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            enforced: false,
        }
    }
}

/// `BillingWorkflow`; every part left out takes OpenMeter's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BillingWorkflow {
    pub collection: CollectionSettings,
    pub invoicing: InvoicingSettings,
    pub payment: PaymentSettings,
    pub tax: TaxSettings,
}

impl BillingWorkflow {
    /// OpenMeter's `WorkflowConfig.Validate`: durations, alignment, enums.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| {
            Err(BillingProfileError::Invalid(format!(
                "invalid workflow configuration: {m}"
            )))
        };
        for (field, value) in [
            ("collection.interval", &self.collection.interval),
            ("invoicing.draftPeriod", &self.invoicing.draft_period),
            ("invoicing.dueAfter", &self.invoicing.due_after),
        ] {
            if !is_iso_duration(value) {
                return invalid(format!("{field}: {value:?} is not an ISO 8601 duration"));
            }
        }
        if let Alignment::Anchored { recurring_period } = &self.collection.alignment {
            let interval = &recurring_period.interval;
            let named = ["DAY", "WEEK", "MONTH", "YEAR"].contains(&interval.as_str());
            if !named && (!is_iso_duration(interval) || is_zero_duration(interval)) {
                return invalid(format!(
                    "collection.alignment.recurringPeriod.interval: {interval:?} must be a positive ISO 8601 duration or DAY, WEEK, MONTH, YEAR"
                ));
            }
        }
        if !["bill_full_period", "bill_actual_period"]
            .contains(&self.invoicing.subscription_end_proration_mode.as_str())
        {
            return invalid(format!(
                "invalid subscription end proration mode: {}",
                self.invoicing.subscription_end_proration_mode
            ));
        }
        if let Some(behavior) = self
            .invoicing
            .default_tax_config
            .as_ref()
            .and_then(|c| c.get("behavior"))
            && !(behavior == "inclusive" || behavior == "exclusive")
        {
            return invalid(format!("invalid tax behavior: {behavior}"));
        }
        Ok(())
    }
}

/// An ISO 8601 duration as OpenMeter's pattern admits it: `P[nY][nM][nW][nD][T[nH][nM][nS]]`,
/// at least one part, non-negative numbers (fractions allowed).
pub fn is_iso_duration(text: &str) -> bool {
    let Some(rest) = text.strip_prefix('P') else {
        return false;
    };
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return false,
        None => (rest, None),
    };
    let parts = |s: &str, units: &[char]| -> Option<usize> {
        let mut count = 0;
        let mut next_unit = 0;
        let mut number = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let at = units[next_unit..].iter().position(|u| *u == c)? + next_unit;
            if number.is_empty() || number.parse::<f64>().is_err() {
                return None;
            }
            number.clear();
            next_unit = at + 1;
            count += 1;
        }
        number.is_empty().then_some(count)
    };
    let Some(date_parts) = parts(date, &['Y', 'M', 'W', 'D']) else {
        return false;
    };
    let time_parts = match time {
        Some(t) => match parts(t, &['H', 'M', 'S']) {
            Some(0) | None => return false,
            Some(n) => n,
        },
        None => 0,
    };
    date_parts + time_parts > 0
}

fn is_zero_duration(text: &str) -> bool {
    text.chars()
        .filter(|c| c.is_ascii_digit())
        .all(|c| c == '0')
}

/// `AppReference`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppReference {
    pub id: String,
}

/// `BillingProfileAppReferences`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileAppReferences {
    pub tax: AppReference,
    pub invoicing: AppReference,
    pub payment: AppReference,
}

/// The API read model of a profile (`BillingProfile`, apps as references).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingProfile {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    pub supplier: BillingParty,
    pub workflow: BillingWorkflow,
    pub apps: ProfileAppReferences,
    pub default: bool,
}

/// `BillingProfileAppsCreate`: each an app id or an app type (its first live app).
#[derive(Clone, Debug, Deserialize)]
pub struct ProfileAppsCreate {
    pub tax: String,
    pub invoicing: String,
    pub payment: String,
}

/// `BillingProfileCreate`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingProfileCreate {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    pub supplier: BillingParty,
    pub default: bool,
    #[serde(default)]
    pub workflow: BillingWorkflow,
    pub apps: ProfileAppsCreate,
}

/// `BillingProfileReplaceUpdateWithWorkflow` (apps cannot be changed).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingProfileUpdate {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    pub supplier: BillingParty,
    pub default: bool,
    pub workflow: BillingWorkflow,
}

fn validate_texts(name: &str, description: Option<&str>) -> Result<()> {
    if name.is_empty() {
        return Err(BillingProfileError::Invalid("name is required".into()));
    }
    if name.chars().count() > PROFILE_NAME_LEN_MAX {
        return Err(BillingProfileError::Invalid(
            "name must be at most 256 characters".into(),
        ));
    }
    if description.is_some_and(|d| d.chars().count() > PROFILE_DESCRIPTION_LEN_MAX) {
        return Err(BillingProfileError::Invalid(
            "description must be at most 1024 characters".into(),
        ));
    }
    Ok(())
}

/// Ordering of a profile listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProfileOrder {
    #[default]
    CreatedAt,
    UpdatedAt,
    Default,
    Name,
}

/// `GET /api/v1/billing/profiles` parameters.
#[derive(Clone, Debug)]
pub struct ProfileFilter {
    pub include_archived: bool,
    pub order_by: ProfileOrder,
    pub descending: bool,
    pub page: usize,
    pub page_size: usize,
}

/// One page of profiles.
#[derive(Clone, Debug)]
pub struct ProfilePage {
    pub total_count: usize,
    pub items: Vec<BillingProfile>,
}

/// Workflow settings a customer overrides (OpenMeter's `CustomerOverride` fields); unset
/// fields keep the profile's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alignment: Option<Alignment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_advance: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progressive_billing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_tax_config: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection_method: Option<CollectionMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_enforced: Option<bool>,
}

impl WorkflowOverride {
    /// OpenMeter's `Profile.Merge`: each set field replaces the profile's; tax config keys
    /// of the override replace the profile's keys.
    pub fn merge(&self, base: &BillingWorkflow) -> BillingWorkflow {
        let mut w = base.clone();
        if let Some(a) = &self.alignment {
            w.collection.alignment = a.clone();
        }
        if let Some(i) = &self.interval {
            w.collection.interval = i.clone();
        }
        if let Some(v) = self.auto_advance {
            w.invoicing.auto_advance = v;
        }
        if let Some(v) = &self.draft_period {
            w.invoicing.draft_period = v.clone();
        }
        if let Some(v) = &self.due_after {
            w.invoicing.due_after = v.clone();
        }
        if let Some(v) = self.progressive_billing {
            w.invoicing.progressive_billing = v;
        }
        if let Some(over) = &self.default_tax_config {
            let mut merged = w.invoicing.default_tax_config.take().unwrap_or_default();
            for (k, v) in over {
                merged.insert(k.clone(), v.clone());
            }
            w.invoicing.default_tax_config = Some(merged);
        }
        if let Some(v) = self.collection_method {
            w.payment.collection_method = v;
        }
        if let Some(v) = self.tax_enabled {
            w.tax.enabled = v;
        }
        if let Some(v) = self.tax_enforced {
            w.tax.enforced = v;
        }
        w
    }
}

/// `BillingProfileCustomerOverride` (the stored row; `workflow` is not in the v1 API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerOverride {
    pub customer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_profile_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowOverride>,
}

/// A customer's profile after its override: what invoices of the customer use.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedProfile {
    /// The pinned profile, or the namespace's default.
    pub profile: BillingProfile,
    pub customer: Customer,
    pub customer_override: Option<CustomerOverride>,
    /// The profile's workflow with the override's settings merged in.
    pub workflow: BillingWorkflow,
    pub invoicing_app: App,
    pub payment_app: App,
    pub tax_app: App,
}

/// Ordering of an override listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OverrideOrder {
    #[default]
    CustomerId,
    CustomerName,
    CustomerKey,
    CustomerPrimaryEmail,
    CustomerCreatedAt,
}

/// `GET /api/v1/billing/customers` parameters.
#[derive(Clone, Debug, Default)]
pub struct OverrideFilter {
    pub billing_profiles: Vec<String>,
    pub customers_without_pinned_profile: bool,
    pub include_all_customers: bool,
    pub customer_ids: Vec<String>,
    pub customer_name: Option<String>,
    pub customer_key: Option<String>,
    pub customer_primary_email: Option<String>,
    pub order_by: OverrideOrder,
    pub descending: bool,
    pub page: usize,
    pub page_size: usize,
}

/// One customer in an override listing.
#[derive(Clone, Debug, PartialEq)]
pub struct OverrideEntry {
    pub customer: Customer,
    pub customer_override: Option<CustomerOverride>,
    /// The profile the customer is billed with (pinned, else the default).
    pub profile: BillingProfile,
    pub workflow: BillingWorkflow,
}

/// One page of overrides.
#[derive(Clone, Debug)]
pub struct OverridePage {
    pub total_count: usize,
    pub items: Vec<OverrideEntry>,
}

fn contains_folded(value: Option<&str>, needle: &Option<String>) -> bool {
    match needle {
        None => true,
        Some(n) => value.is_some_and(|v| v.to_lowercase().contains(&n.to_lowercase())),
    }
}

impl Catalog {
    /// What OpenMeter's namespace bootstrap provisions, idempotently: a sandbox app, and a
    /// default profile using it when the namespace has no default profile.
    pub async fn ensure_billing_defaults(&self, namespace: &str) -> Result<()> {
        let sandbox = match self
            .list_apps(namespace, Some(AppType::Sandbox), 1, 1)
            .await?
            .items
            .pop()
        {
            Some(app) => app,
            None => match self
                .install_app(
                    namespace,
                    AppInstall {
                        name: String::new(),
                        kind: AppKind::Sandbox,
                        id: None,
                        secrets: Vec::new(),
                    },
                )
                .await
            {
                Ok(app) => app,
                // Installed meanwhile by another caller: use theirs.
                Err(AppError::SandboxExists { .. }) => self
                    .list_apps(namespace, Some(AppType::Sandbox), 1, 1)
                    .await?
                    .items
                    .pop()
                    .ok_or(BillingProfileError::DefaultNotFound)?,
                Err(other) => return Err(other.into()),
            },
        };
        if self.default_billing_profile(namespace).await?.is_some() {
            return Ok(());
        }
        let created = self
            .create_billing_profile(
                namespace,
                BillingProfileCreate {
                    name: DEFAULT_PROFILE_NAME.into(),
                    description: Some("Default profile for OpenMeter sandbox".into()),
                    metadata: None,
                    supplier: BillingParty {
                        name: Some("OpenMeter".into()),
                        addresses: Some(vec![Address {
                            country: Some("US".into()),
                            ..Address::default()
                        }]),
                        ..BillingParty::default()
                    },
                    default: true,
                    workflow: BillingWorkflow::default(),
                    apps: ProfileAppsCreate {
                        tax: sandbox.id.clone(),
                        invoicing: sandbox.id.clone(),
                        payment: sandbox.id,
                    },
                },
            )
            .await?;
        tracing::info!(namespace, profile_id = %created.id, "Provisioned the default billing profile.");
        Ok(())
    }

    /// The live default profile of a namespace.
    pub async fn default_billing_profile(&self, namespace: &str) -> Result<Option<BillingProfile>> {
        let row = sqlx::query(
            "SELECT id, definition FROM billing_profiles WHERE namespace = $1 AND is_default = 1 AND deleted_at IS NULL",
        )
        .bind(namespace)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| decode_profile(r.try_get("id")?, r.try_get("definition")?))
            .transpose()
    }

    /// A profile by id, deleted ones included.
    pub async fn get_billing_profile(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Option<BillingProfile>> {
        select_profile(&self.pool, namespace, id).await
    }

    /// Profiles of a namespace, ordered and paged.
    pub async fn list_billing_profiles(
        &self,
        namespace: &str,
        filter: &ProfileFilter,
    ) -> Result<ProfilePage> {
        let rows = sqlx::query(
            "SELECT id, definition FROM billing_profiles WHERE namespace = $1 ORDER BY created_at, id",
        )
        .bind(namespace)
        .fetch_all(&self.pool)
        .await?;
        let mut all = Vec::with_capacity(rows.len());
        for r in rows {
            let p = decode_profile(r.try_get("id")?, r.try_get("definition")?)?;
            if filter.include_archived || p.deleted_at.is_none() {
                all.push(p);
            }
        }
        match filter.order_by {
            ProfileOrder::CreatedAt => {
                all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
            }
            ProfileOrder::UpdatedAt => {
                all.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)))
            }
            ProfileOrder::Default => {
                all.sort_by(|a, b| (a.default, &a.id).cmp(&(b.default, &b.id)))
            }
            ProfileOrder::Name => all.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id))),
        }
        if filter.descending {
            all.reverse();
        }
        let total_count = all.len();
        let items = all
            .into_iter()
            .skip(
                filter
                    .page
                    .saturating_sub(1)
                    .saturating_mul(filter.page_size),
            )
            .take(filter.page_size)
            .collect();
        Ok(ProfilePage { total_count, items })
    }

    /// Resolves an app id or type to a live app of the namespace.
    async fn resolve_app(
        &self,
        namespace: &str,
        role: &'static str,
        reference: &str,
    ) -> Result<App> {
        let found = match AppType::parse(reference) {
            Some(kind) => self
                .list_apps(namespace, Some(kind), 1, 1)
                .await?
                .items
                .pop(),
            None => self.get_app(namespace, reference).await?,
        };
        found.ok_or_else(|| BillingProfileError::AppNotFound {
            role,
            reference: reference.to_owned(),
        })
    }

    /// Creates a profile; a default one demotes the namespace's current default.
    pub async fn create_billing_profile(
        &self,
        namespace: &str,
        input: BillingProfileCreate,
    ) -> Result<BillingProfile> {
        validate_texts(&input.name, input.description.as_deref())?;
        input.supplier.validate()?;
        input.workflow.validate()?;
        let tax = self.resolve_app(namespace, "tax", &input.apps.tax).await?;
        let invoicing = self
            .resolve_app(namespace, "invoicing", &input.apps.invoicing)
            .await?;
        let payment = self
            .resolve_app(namespace, "payment", &input.apps.payment)
            .await?;
        if tax.id != invoicing.id || tax.id != payment.id {
            return Err(BillingProfileError::AppsDiffer);
        }
        let now = Utc::now();
        let reference = |app: &App| AppReference { id: app.id.clone() };
        let profile = BillingProfile {
            id: ulid::Ulid::new().to_string(),
            name: input.name,
            description: input.description,
            metadata: input.metadata,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            supplier: input.supplier,
            workflow: input.workflow,
            apps: ProfileAppReferences {
                tax: reference(&tax),
                invoicing: reference(&invoicing),
                payment: reference(&payment),
            },
            default: input.default,
        };
        let mut tx = self.begin_write().await?;
        if profile.default {
            demote_default(&mut tx, namespace, now).await?;
        }
        sqlx::query(
            "INSERT INTO billing_profiles (id, namespace, is_default, definition, created_at, deleted_at) VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(&profile.id)
        .bind(namespace)
        .bind(i64::from(profile.default))
        .bind(encode_profile(&profile))
        .bind(now.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(profile)
    }

    /// Replaces a live profile's fields (not its apps). The default cannot be unset, only
    /// replaced by making another profile default.
    pub async fn update_billing_profile(
        &self,
        namespace: &str,
        id: &str,
        input: BillingProfileUpdate,
    ) -> Result<BillingProfile> {
        validate_texts(&input.name, input.description.as_deref())?;
        input.supplier.validate()?;
        input.workflow.validate()?;
        // Read and written in one write transaction: a delete cannot come in between.
        let mut tx = self.begin_write().await?;
        let old = select_profile(&mut *tx, namespace, id)
            .await?
            .ok_or_else(|| BillingProfileError::NotFound(id.to_owned()))?;
        if old.deleted_at.is_some() {
            return Err(BillingProfileError::AlreadyDeleted(id.to_owned()));
        }
        if old.default && !input.default {
            return Err(BillingProfileError::DefaultCannotBeUnset(id.to_owned()));
        }
        let now = Utc::now();
        let profile = BillingProfile {
            name: input.name,
            description: input.description,
            metadata: input.metadata,
            updated_at: now,
            supplier: input.supplier,
            workflow: input.workflow,
            default: input.default,
            ..old.clone()
        };
        if profile.default && !old.default {
            demote_default(&mut tx, namespace, now).await?;
        }
        sqlx::query("UPDATE billing_profiles SET is_default = $1, definition = $2 WHERE id = $3")
            .bind(i64::from(profile.default))
            .bind(encode_profile(&profile))
            .bind(&profile.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(profile)
    }

    /// Soft-deletes a profile; the default and a profile customers are pinned to cannot be.
    /// Deleting a deleted profile does nothing.
    pub async fn delete_billing_profile(&self, namespace: &str, id: &str) -> Result<()> {
        // Checked and written in one write transaction: a customer cannot be pinned to the
        // profile, nor the profile made default, in between.
        let mut tx = self.begin_write().await?;
        let mut profile = select_profile(&mut *tx, namespace, id)
            .await?
            .ok_or_else(|| BillingProfileError::NotFound(id.to_owned()))?;
        if profile.deleted_at.is_some() {
            return Ok(());
        }
        if profile.default {
            return Err(BillingProfileError::DefaultCannotBeDeleted(id.to_owned()));
        }
        let customer_ids: Vec<String> = sqlx::query_scalar(
            "SELECT customer_id FROM billing_customer_overrides WHERE namespace = $1 AND profile_id = $2 ORDER BY customer_id",
        )
        .bind(namespace)
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        if !customer_ids.is_empty() {
            return Err(BillingProfileError::Referenced {
                id: id.to_owned(),
                customer_ids,
            });
        }
        let now = Utc::now();
        profile.deleted_at = Some(now);
        profile.updated_at = now;
        sqlx::query("UPDATE billing_profiles SET definition = $1, deleted_at = $2 WHERE id = $3")
            .bind(encode_profile(&profile))
            .bind(now.timestamp_millis())
            .bind(&profile.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Live profiles that use an app for tax, invoicing or payment.
    pub async fn profiles_using_app(
        &self,
        namespace: &str,
        app_id: &str,
    ) -> Result<Vec<BillingProfile>> {
        let page = self
            .list_billing_profiles(
                namespace,
                &ProfileFilter {
                    include_archived: false,
                    order_by: ProfileOrder::CreatedAt,
                    descending: false,
                    page: 1,
                    page_size: usize::MAX,
                },
            )
            .await?;
        Ok(page
            .items
            .into_iter()
            .filter(|p| {
                [&p.apps.tax.id, &p.apps.invoicing.id, &p.apps.payment.id]
                    .contains(&&app_id.to_owned())
            })
            .collect())
    }

    /// An app by id, uninstalled ones included: a deleted profile may name an app
    /// uninstalled since, and its references still expand.
    pub async fn app_by_id(&self, namespace: &str, id: &str) -> Result<Option<App>> {
        let row = sqlx::query("SELECT id, definition FROM apps WHERE namespace = $1 AND id = $2")
            .bind(namespace)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| decode_app(r.try_get("id")?, r.try_get("definition")?))
            .transpose()?)
    }

    /// A customer's override, if any.
    pub async fn get_customer_override(
        &self,
        namespace: &str,
        customer_id: &str,
    ) -> Result<Option<CustomerOverride>> {
        select_override(&self.pool, namespace, customer_id).await
    }

    /// Creates or replaces a live customer's override; a pinned profile must be live.
    pub async fn upsert_customer_override(
        &self,
        namespace: &str,
        customer_id: &str,
        billing_profile_id: Option<String>,
        workflow: Option<WorkflowOverride>,
    ) -> Result<CustomerOverride> {
        let customer = self.live_customer(namespace, customer_id).await?;
        // The profile is checked and the pin written in one write transaction: the profile
        // cannot be deleted in between.
        let mut tx = self.begin_write().await?;
        if let Some(id) = &billing_profile_id {
            let profile = select_profile(&mut *tx, namespace, id)
                .await?
                .ok_or_else(|| BillingProfileError::NotFound(id.clone()))?;
            if profile.deleted_at.is_some() {
                return Err(BillingProfileError::AlreadyDeleted(id.clone()));
            }
        }
        let now = Utc::now();
        let old = select_override(&mut *tx, namespace, &customer.id).await?;
        let customer_override = CustomerOverride {
            customer_id: customer.id.clone(),
            billing_profile_id,
            created_at: old.as_ref().map_or(now, |o| o.created_at),
            updated_at: now,
            workflow,
        };
        sqlx::query(
            "INSERT INTO billing_customer_overrides (namespace, customer_id, profile_id, definition, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (namespace, customer_id) DO UPDATE SET \
             profile_id = excluded.profile_id, definition = excluded.definition",
        )
        .bind(namespace)
        .bind(&customer.id)
        .bind(&customer_override.billing_profile_id)
        .bind(serde_json::to_string(&customer_override).unwrap_or_default())
        .bind(now.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(customer_override)
    }

    /// Deletes a customer's override; an error when there is none.
    pub async fn delete_customer_override(&self, namespace: &str, customer_id: &str) -> Result<()> {
        let done = sqlx::query(
            "DELETE FROM billing_customer_overrides WHERE namespace = $1 AND customer_id = $2",
        )
        .bind(namespace)
        .bind(customer_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(BillingProfileError::OverrideNotFound(
                customer_id.to_owned(),
            ));
        }
        Ok(())
    }

    /// The profile a customer is billed with, its merged workflow and its apps (for the
    /// billing engine and the customer's app endpoints).
    pub async fn effective_billing_profile(
        &self,
        namespace: &str,
        customer_id: &str,
    ) -> Result<ResolvedProfile> {
        let customer = self.live_customer(namespace, customer_id).await?;
        let customer_override = self.get_customer_override(namespace, &customer.id).await?;
        let profile = self
            .base_profile(namespace, customer_override.as_ref())
            .await?;
        let workflow = merged_workflow(&profile, customer_override.as_ref());
        let app = |id: String, role: &'static str| async move {
            self.app_by_id(namespace, &id)
                .await?
                .ok_or(BillingProfileError::AppNotFound {
                    role,
                    reference: id,
                })
        };
        Ok(ResolvedProfile {
            invoicing_app: app(profile.apps.invoicing.id.clone(), "invoicing").await?,
            payment_app: app(profile.apps.payment.id.clone(), "payment").await?,
            tax_app: app(profile.apps.tax.id.clone(), "tax").await?,
            profile,
            customer,
            customer_override,
            workflow,
        })
    }

    /// Customers with their overrides and effective profiles, filtered, ordered, paged.
    pub async fn list_customer_overrides(
        &self,
        namespace: &str,
        filter: &OverrideFilter,
    ) -> Result<OverridePage> {
        let default = self.default_billing_profile(namespace).await?;
        let rows = sqlx::query(
            "SELECT customer_id, definition FROM billing_customer_overrides WHERE namespace = $1",
        )
        .bind(namespace)
        .fetch_all(&self.pool)
        .await?;
        let mut overrides = BTreeMap::new();
        for r in rows {
            let customer_id: String = r.try_get("customer_id")?;
            let o = decode_override(&customer_id, r.try_get("definition")?)?;
            overrides.insert(customer_id, o);
        }
        let mut profiles: BTreeMap<String, BillingProfile> = BTreeMap::new();
        let mut entries = Vec::new();
        for (ns, customer) in self.all_customers().await? {
            if ns != namespace || !override_admits(filter, &customer) {
                continue;
            }
            let customer_override = overrides.get(&customer.id).cloned();
            let pinned = customer_override
                .as_ref()
                .and_then(|o| o.billing_profile_id.clone());
            if filter.customers_without_pinned_profile && pinned.is_some() {
                continue;
            }
            let include_all =
                filter.include_all_customers || filter.customers_without_pinned_profile;
            if !include_all && customer_override.is_none() {
                continue;
            }
            let profile = match &pinned {
                Some(id) => match profiles.get(id) {
                    Some(p) => p.clone(),
                    None => {
                        let p = self
                            .get_billing_profile(namespace, id)
                            .await?
                            .ok_or_else(|| BillingProfileError::NotFound(id.clone()))?;
                        profiles.insert(id.clone(), p.clone());
                        p
                    }
                },
                None => default
                    .clone()
                    .ok_or(BillingProfileError::DefaultNotFound)?,
            };
            if !filter.billing_profiles.is_empty() && !filter.billing_profiles.contains(&profile.id)
            {
                continue;
            }
            let workflow = merged_workflow(&profile, customer_override.as_ref());
            entries.push(OverrideEntry {
                customer,
                customer_override,
                profile,
                workflow,
            });
        }
        let key = |e: &OverrideEntry| -> (Option<String>, String) {
            let c = &e.customer;
            let field = match filter.order_by {
                OverrideOrder::CustomerId => None,
                OverrideOrder::CustomerName => Some(c.name.clone()),
                OverrideOrder::CustomerKey => c.key.clone(),
                OverrideOrder::CustomerPrimaryEmail => c.primary_email.clone(),
                OverrideOrder::CustomerCreatedAt => Some(c.created_at.to_rfc3339()),
            };
            (field, c.id.clone())
        };
        entries.sort_by_key(key);
        if filter.descending {
            entries.reverse();
        }
        let total_count = entries.len();
        let items = entries
            .into_iter()
            .skip(
                filter
                    .page
                    .saturating_sub(1)
                    .saturating_mul(filter.page_size),
            )
            .take(filter.page_size)
            .collect();
        Ok(OverridePage { total_count, items })
    }

    /// The pinned profile, else the default.
    async fn base_profile(
        &self,
        namespace: &str,
        o: Option<&CustomerOverride>,
    ) -> Result<BillingProfile> {
        match o.and_then(|o| o.billing_profile_id.as_deref()) {
            Some(id) => self
                .get_billing_profile(namespace, id)
                .await?
                .ok_or_else(|| BillingProfileError::NotFound(id.to_owned())),
            None => self
                .default_billing_profile(namespace)
                .await?
                .ok_or(BillingProfileError::DefaultNotFound),
        }
    }

    /// A customer's override with its effective profile (what `GET .../billing/customers/{id}` answers).
    pub async fn customer_override_details(
        &self,
        namespace: &str,
        customer_id: &str,
    ) -> Result<OverrideEntry> {
        let customer = self.live_customer(namespace, customer_id).await?;
        let customer_override = self.get_customer_override(namespace, &customer.id).await?;
        let profile = self
            .base_profile(namespace, customer_override.as_ref())
            .await?;
        let workflow = merged_workflow(&profile, customer_override.as_ref());
        Ok(OverrideEntry {
            customer,
            customer_override,
            profile,
            workflow,
        })
    }

    async fn live_customer(&self, namespace: &str, customer_id: &str) -> Result<Customer> {
        self.get_customer(namespace, customer_id)
            .await?
            .ok_or_else(|| BillingProfileError::CustomerNotFound(customer_id.to_owned()))
    }
}

fn override_admits(filter: &OverrideFilter, c: &Customer) -> bool {
    c.deleted_at.is_none()
        && (filter.customer_ids.is_empty() || filter.customer_ids.contains(&c.id))
        && contains_folded(Some(&c.name), &filter.customer_name)
        && contains_folded(c.key.as_deref(), &filter.customer_key)
        && contains_folded(c.primary_email.as_deref(), &filter.customer_primary_email)
}

fn merged_workflow(profile: &BillingProfile, o: Option<&CustomerOverride>) -> BillingWorkflow {
    match o.and_then(|o| o.workflow.as_ref()) {
        Some(w) => w.merge(&profile.workflow),
        None => profile.workflow.clone(),
    }
}

/// A profile by id, through the pool or in a transaction.
async fn select_profile<'c, E>(
    executor: E,
    namespace: &str,
    id: &str,
) -> Result<Option<BillingProfile>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row =
        sqlx::query("SELECT id, definition FROM billing_profiles WHERE namespace = $1 AND id = $2")
            .bind(namespace)
            .bind(id)
            .fetch_optional(executor)
            .await?;
    row.map(|r| decode_profile(r.try_get("id")?, r.try_get("definition")?))
        .transpose()
}

/// A customer's override, through the pool or in a transaction.
async fn select_override<'c, E>(
    executor: E,
    namespace: &str,
    customer_id: &str,
) -> Result<Option<CustomerOverride>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let definition: Option<String> = sqlx::query_scalar(
        "SELECT definition FROM billing_customer_overrides WHERE namespace = $1 AND customer_id = $2",
    )
    .bind(namespace)
    .bind(customer_id)
    .fetch_optional(executor)
    .await?;
    definition
        .map(|d| decode_override(customer_id, d))
        .transpose()
}

/// Unsets the namespace's live default (in the caller's transaction).
async fn demote_default(tx: &mut Tx, namespace: &str, now: DateTime<Utc>) -> Result<()> {
    let row = sqlx::query(
        "SELECT id, definition FROM billing_profiles WHERE namespace = $1 AND is_default = 1 AND deleted_at IS NULL",
    )
    .bind(namespace)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let mut old = decode_profile(row.try_get("id")?, row.try_get("definition")?)?;
    old.default = false;
    old.updated_at = now;
    sqlx::query("UPDATE billing_profiles SET is_default = 0, definition = $1 WHERE id = $2")
        .bind(encode_profile(&old))
        .bind(&old.id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn encode_profile(profile: &BillingProfile) -> String {
    serde_json::to_string(profile).unwrap_or_default()
}

fn decode_profile(id: String, definition: String) -> Result<BillingProfile> {
    serde_json::from_str(&definition)
        .map_err(|source| BillingProfileError::Catalog(CatalogError::Decode { id, source }))
}

fn decode_override(customer_id: &str, definition: String) -> Result<CustomerOverride> {
    serde_json::from_str(&definition).map_err(|source| {
        BillingProfileError::Catalog(CatalogError::Decode {
            id: customer_id.to_owned(),
            source,
        })
    })
}

#[cfg(test)]
mod tests;
