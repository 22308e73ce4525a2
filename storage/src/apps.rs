//! Installed apps (OpenMeter's `openmeter/app`): the marketplace listings, apps with their
//! secrets, and each customer's data in an app.
//!
//! An app row keeps its API read model (`App`) as JSON; what must never be answered (the
//! Stripe API key, the webhook endpoint and its signing secret) lives in `app_secrets`.
//! Sandbox is a singleton per namespace, as OpenMeter's factory makes it; every namespace
//! gets one, and a default billing profile using it, from [`Catalog::ensure_billing_defaults`].
//! Talking to Stripe is the API's work: this module only stores what it learnt.

use crate::billing_profiles::BillingProfileError;
use crate::catalog::{Catalog, Error as CatalogError, Tx};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::BTreeMap;

/// Longest app name and description (OpenMeter's `App` schema).
pub const APP_NAME_LEN_MAX: usize = 256;
pub const APP_DESCRIPTION_LEN_MAX: usize = 1024;

/// Secret names in `app_secrets`.
pub const SECRET_STRIPE_API_KEY: &str = "stripe_api_key";
pub const SECRET_STRIPE_WEBHOOK_ID: &str = "stripe_webhook_id";
pub const SECRET_STRIPE_WEBHOOK_SECRET: &str = "stripe_webhook_secret";

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Invalid(String),
    #[error("app {0} not found")]
    NotFound(String),
    #[error("marketplace listing {0:?} not found")]
    ListingNotFound(String),
    #[error("sandbox app: {name} already exists")]
    SandboxExists { name: String },
    #[error("app is used in {count} billing profiles: {references}")]
    InUse { count: usize, references: String },
    #[error("app {app_id} is of type {actual}, not {expected}")]
    TypeMismatch {
        app_id: String,
        actual: AppType,
        expected: AppType,
    },
    #[error("customer {0} not found")]
    CustomerNotFound(String),
    #[error("customer {customer_id} has no data in app {app_id}")]
    CustomerDataNotFound { app_id: String, customer_id: String },
}

pub type Result<T, E = AppError> = std::result::Result<T, E>;

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        Self::Catalog(CatalogError::Query(error))
    }
}

/// `AppType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppType {
    Stripe,
    Sandbox,
    CustomInvoicing,
}

impl AppType {
    pub const ALL: [AppType; 3] = [AppType::Stripe, AppType::Sandbox, AppType::CustomInvoicing];

    pub fn as_str(self) -> &'static str {
        match self {
            AppType::Stripe => "stripe",
            AppType::Sandbox => "sandbox",
            AppType::CustomInvoicing => "custom_invoicing",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

impl std::fmt::Display for AppType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `AppStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppStatus {
    Ready,
    Unauthorized,
}

/// `AppCapability`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    #[serde(rename = "type")]
    pub kind: String,
    pub key: String,
    pub name: String,
    pub description: String,
}

/// `MarketplaceListing`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarketplaceListing {
    #[serde(rename = "type")]
    pub kind: AppType,
    pub name: String,
    pub description: String,
    pub capabilities: Vec<Capability>,
    pub install_methods: Vec<String>,
}

/// The three capability types every listed app has, in OpenMeter's order.
pub const CAPABILITY_TYPES: [&str; 3] = ["collectPayments", "calculateTax", "invoiceCustomers"];

fn capabilities(prefix: &str) -> Vec<Capability> {
    let capability = |kind: &str, key: &str, name: &str, description: &str| Capability {
        kind: kind.to_owned(),
        key: format!("{prefix}_{key}"),
        name: name.to_owned(),
        description: description.to_owned(),
    };
    vec![
        capability(
            "collectPayments",
            "collect_payment",
            "Payment",
            "Process payments",
        ),
        capability(
            "calculateTax",
            "calculate_tax",
            "Calculate Tax",
            "Calculate tax for a payment",
        ),
        capability(
            "invoiceCustomers",
            "invoice_customer",
            "Invoice Customer",
            "Invoice a customer",
        ),
    ]
}

/// A listing by type, as OpenMeter registers them.
pub fn listing(kind: AppType) -> MarketplaceListing {
    let (name, description, method) = match kind {
        AppType::Stripe => (
            "Stripe",
            "Send invoices, calculate tax and collect payments.",
            "with_api_key",
        ),
        AppType::Sandbox => (
            "Sandbox",
            "Sandbox can be used to test OpenMeter without external connections.",
            "no_credentials_required",
        ),
        AppType::CustomInvoicing => (
            "Custom Invoicing",
            "Custom Invoicing can be used to interface with third party invoicing and payment systems",
            "no_credentials_required",
        ),
    };
    MarketplaceListing {
        kind,
        name: name.to_owned(),
        description: description.to_owned(),
        capabilities: capabilities(kind.as_str()),
        install_methods: vec![method.to_owned()],
    }
}

/// Every listing, ordered by type as OpenMeter's registry lists them.
pub fn listings() -> Vec<MarketplaceListing> {
    let mut all: Vec<_> = AppType::ALL.into_iter().map(listing).collect();
    all.sort_by(|a, b| a.kind.as_str().cmp(b.kind.as_str()));
    all
}

/// What differs between app types (the `type` discriminator and its fields).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum AppKind {
    Stripe {
        stripe_account_id: String,
        livemode: bool,
        #[serde(rename = "maskedAPIKey")]
        masked_api_key: String,
    },
    Sandbox,
    CustomInvoicing {
        enable_draft_sync_hook: bool,
        enable_issuing_sync_hook: bool,
    },
}

impl AppKind {
    pub fn app_type(&self) -> AppType {
        match self {
            AppKind::Stripe { .. } => AppType::Stripe,
            AppKind::Sandbox => AppType::Sandbox,
            AppKind::CustomInvoicing { .. } => AppType::CustomInvoicing,
        }
    }
}

/// The API read model of an app (`StripeApp`, `SandboxApp`, `CustomInvoicingApp`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
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
    pub listing: MarketplaceListing,
    pub status: AppStatus,
    #[serde(flatten)]
    pub kind: AppKind,
}

impl App {
    pub fn app_type(&self) -> AppType {
        self.kind.app_type()
    }
}

/// A new app: its name (empty: the listing's name), kind and secrets.
#[derive(Clone, Debug)]
pub struct AppInstall {
    pub name: String,
    pub kind: AppKind,
    /// Set when the caller generated the id first (Stripe's webhook URL names it).
    pub id: Option<String>,
    pub secrets: Vec<(String, String)>,
}

/// `AppReplaceUpdate`: the fields every type has, and custom invoicing's hooks.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppUpdate {
    #[serde(rename = "type")]
    pub kind: AppType,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub enable_draft_sync_hook: Option<bool>,
    #[serde(default)]
    pub enable_issuing_sync_hook: Option<bool>,
    /// Stripe only: a new key (the API checks it with Stripe before this is stored).
    #[serde(default, rename = "secretAPIKey")]
    pub secret_api_key: Option<String>,
}

/// One page of apps and how many there are in all.
#[derive(Clone, Debug)]
pub struct AppPage {
    pub total_count: usize,
    pub items: Vec<App>,
}

/// A customer's data in one app: `StripeCustomerAppData`, `SandboxCustomerAppData`,
/// `CustomInvoicingCustomerAppData` without the expanded `app`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum CustomerAppData {
    Stripe {
        stripe_customer_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stripe_default_payment_method_id: Option<String>,
    },
    Sandbox,
    CustomInvoicing {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<BTreeMap<String, String>>,
    },
}

impl CustomerAppData {
    pub fn app_type(&self) -> AppType {
        match self {
            CustomerAppData::Stripe { .. } => AppType::Stripe,
            CustomerAppData::Sandbox => AppType::Sandbox,
            CustomerAppData::CustomInvoicing { .. } => AppType::CustomInvoicing,
        }
    }
}

/// A customer's data in an app, with the app.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomerAppEntry {
    pub app: App,
    pub customer_id: String,
    pub data: CustomerAppData,
}

/// OpenMeter's masking of a secret key: the first 8 and the last 3 characters.
pub fn mask_api_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 11 {
        return "***".to_owned();
    }
    let head: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}***{tail}")
}

/// Test keys start with `sk_test` or `rk_test`; any other key is live (a local check).
pub fn stripe_livemode(key: &str) -> bool {
    !(key.starts_with("sk_test") || key.starts_with("rk_test"))
}

fn validate_text(name: &str, description: Option<&str>) -> Result<()> {
    if name.chars().count() > APP_NAME_LEN_MAX {
        return Err(AppError::Invalid(
            "name must be at most 256 characters".into(),
        ));
    }
    if description.is_some_and(|d| d.chars().count() > APP_DESCRIPTION_LEN_MAX) {
        return Err(AppError::Invalid(
            "description must be at most 1024 characters".into(),
        ));
    }
    Ok(())
}

impl Catalog {
    /// Installs an app; a second sandbox in a namespace is refused (409 in the API).
    pub async fn install_app(&self, namespace: &str, install: AppInstall) -> Result<App> {
        let kind = install.kind.app_type();
        let listing = listing(kind);
        let name = if install.name.is_empty() {
            listing.name.clone()
        } else {
            install.name
        };
        validate_text(&name, None)?;
        let now = Utc::now();
        let app = App {
            id: install.id.unwrap_or_else(|| ulid::Ulid::new().to_string()),
            name,
            description: None,
            metadata: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            listing,
            status: AppStatus::Ready,
            kind: install.kind,
        };
        let mut tx = self.begin_write().await?;
        if kind == AppType::Sandbox {
            let existing: Option<String> = sqlx::query_scalar(
                "SELECT definition FROM apps WHERE namespace = $1 AND type = $2 AND deleted_at IS NULL \
                 ORDER BY created_at, id LIMIT 1",
            )
            .bind(namespace)
            .bind(kind.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(definition) = existing {
                let existing = decode_app(String::new(), definition)?;
                return Err(AppError::SandboxExists {
                    name: existing.name,
                });
            }
        }
        sqlx::query(
            "INSERT INTO apps (id, namespace, type, definition, created_at, deleted_at) VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(&app.id)
        .bind(namespace)
        .bind(kind.as_str())
        .bind(encode(&app))
        .bind(now.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        for (name, value) in &install.secrets {
            put_secret(&mut tx, namespace, &app.id, name, value).await?;
        }
        tx.commit().await?;
        Ok(app)
    }

    /// A live app by id.
    pub async fn get_app(&self, namespace: &str, id: &str) -> Result<Option<App>> {
        let row = sqlx::query(
            "SELECT id, definition FROM apps WHERE namespace = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(namespace)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| decode_app(r.try_get("id")?, r.try_get("definition")?))
            .transpose()?)
    }

    /// Live apps of a namespace (of one type if given), oldest first, paged (1-based).
    pub async fn list_apps(
        &self,
        namespace: &str,
        kind: Option<AppType>,
        page: usize,
        page_size: usize,
    ) -> Result<AppPage> {
        let rows = sqlx::query(
            "SELECT id, type, definition FROM apps WHERE namespace = $1 AND deleted_at IS NULL ORDER BY created_at, id",
        )
        .bind(namespace)
        .fetch_all(&self.pool)
        .await?;
        let mut all = Vec::with_capacity(rows.len());
        for r in rows {
            let kind_text: String = r.try_get("type")?;
            if kind.is_some_and(|k| k.as_str() != kind_text) {
                continue;
            }
            all.push(decode_app(r.try_get("id")?, r.try_get("definition")?)?);
        }
        let total_count = all.len();
        let items = all
            .into_iter()
            .skip(page.saturating_sub(1).saturating_mul(page_size))
            .take(page_size)
            .collect();
        Ok(AppPage { total_count, items })
    }

    /// Replaces an app's name, description, metadata (and custom invoicing's hooks).
    pub async fn update_app(&self, namespace: &str, id: &str, update: &AppUpdate) -> Result<App> {
        validate_text(&update.name, update.description.as_deref())?;
        if update.name.is_empty() {
            return Err(AppError::Invalid("name is required".into()));
        }
        let mut app = self
            .get_app(namespace, id)
            .await?
            .ok_or_else(|| AppError::NotFound(id.to_owned()))?;
        if app.app_type() != update.kind {
            return Err(AppError::TypeMismatch {
                actual: app.app_type(),
                app_id: app.id,
                expected: update.kind,
            });
        }
        if let AppKind::CustomInvoicing {
            enable_draft_sync_hook,
            enable_issuing_sync_hook,
        } = &mut app.kind
        {
            match (
                update.enable_draft_sync_hook,
                update.enable_issuing_sync_hook,
            ) {
                (Some(draft), Some(issuing)) => {
                    *enable_draft_sync_hook = draft;
                    *enable_issuing_sync_hook = issuing;
                }
                _ => {
                    return Err(AppError::Invalid(
                        "enableDraftSyncHook and enableIssuingSyncHook are required".into(),
                    ));
                }
            }
        }
        app.name = update.name.clone();
        app.description = update.description.clone();
        app.metadata = update.metadata.clone();
        app.updated_at = Utc::now();
        self.store_app(&app).await?;
        Ok(app)
    }

    /// Rewrites a live app's read model (status, Stripe fields after a key change).
    pub async fn store_app(&self, app: &App) -> Result<()> {
        sqlx::query("UPDATE apps SET definition = $1 WHERE id = $2 AND deleted_at IS NULL")
            .bind(encode(app))
            .bind(&app.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Soft-deletes an app, its secrets and customer data; refused while a live billing
    /// profile uses it (OpenMeter's `isBillingProfileUsed`).
    pub async fn uninstall_app(&self, namespace: &str, id: &str) -> Result<App> {
        let mut app = self
            .get_app(namespace, id)
            .await?
            .ok_or_else(|| AppError::NotFound(id.to_owned()))?;
        let users = self
            .profiles_using_app(namespace, id)
            .await
            .map_err(|e| match e {
                BillingProfileError::Catalog(c) => AppError::Catalog(c),
                other => AppError::Invalid(other.to_string()),
            })?;
        if !users.is_empty() {
            return Err(AppError::InUse {
                count: users.len(),
                references: users
                    .iter()
                    .map(|p| format!("{}[{}]", p.name, p.id))
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
        let now = Utc::now();
        app.deleted_at = Some(now);
        app.updated_at = now;
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE apps SET definition = $1, deleted_at = $2 WHERE id = $3")
            .bind(encode(&app))
            .bind(now.timestamp_millis())
            .bind(&app.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM app_secrets WHERE app_id = $1")
            .bind(&app.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM app_customers WHERE app_id = $1")
            .bind(&app.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(app)
    }

    /// A secret of an app (deleted apps have none).
    pub async fn app_secret(&self, app_id: &str, name: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM app_secrets WHERE app_id = $1 AND name = $2")
                .bind(app_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Replaces secrets of an app and its read model in one transaction.
    pub async fn update_app_secrets(
        &self,
        namespace: &str,
        app: &App,
        secrets: &[(String, String)],
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for (name, value) in secrets {
            put_secret(&mut tx, namespace, &app.id, name, value).await?;
        }
        sqlx::query("UPDATE apps SET definition = $1 WHERE id = $2 AND deleted_at IS NULL")
            .bind(encode(app))
            .bind(&app.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A customer's data in every live app (of one type if given), by app install order.
    pub async fn list_customer_app_data(
        &self,
        namespace: &str,
        customer_id: &str,
        kind: Option<AppType>,
    ) -> Result<Vec<CustomerAppEntry>> {
        let rows = sqlx::query(
            "SELECT c.app_id, c.definition AS data, a.definition AS app FROM app_customers c \
             JOIN apps a ON a.id = c.app_id \
             WHERE c.namespace = $1 AND c.customer_id = $2 AND a.deleted_at IS NULL \
             ORDER BY a.created_at, a.id",
        )
        .bind(namespace)
        .bind(customer_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let app_id: String = r.try_get("app_id")?;
            let app = decode_app(app_id.clone(), r.try_get("app")?)?;
            if kind.is_some_and(|k| k != app.app_type()) {
                continue;
            }
            let data = decode_customer_data(&app_id, r.try_get("data")?)?;
            out.push(CustomerAppEntry {
                app,
                customer_id: customer_id.to_owned(),
                data,
            });
        }
        Ok(out)
    }

    /// A customer's data in one app.
    pub async fn get_customer_app_data(
        &self,
        namespace: &str,
        app_id: &str,
        customer_id: &str,
    ) -> Result<Option<CustomerAppData>> {
        let definition: Option<String> = sqlx::query_scalar(
            "SELECT definition FROM app_customers WHERE namespace = $1 AND app_id = $2 AND customer_id = $3",
        )
        .bind(namespace)
        .bind(app_id)
        .bind(customer_id)
        .fetch_optional(&self.pool)
        .await?;
        definition
            .map(|d| decode_customer_data(app_id, d))
            .transpose()
    }

    /// Creates or replaces a customer's data in a live app of the data's type.
    pub async fn upsert_customer_app_data(
        &self,
        namespace: &str,
        app_id: &str,
        customer_id: &str,
        data: &CustomerAppData,
    ) -> Result<CustomerAppEntry> {
        let app = self
            .get_app(namespace, app_id)
            .await?
            .ok_or_else(|| AppError::NotFound(app_id.to_owned()))?;
        if app.app_type() != data.app_type() {
            return Err(AppError::TypeMismatch {
                actual: app.app_type(),
                app_id: app.id,
                expected: data.app_type(),
            });
        }
        if let CustomerAppData::Stripe {
            stripe_customer_id, ..
        } = data
            && stripe_customer_id.is_empty()
        {
            return Err(AppError::Invalid("stripeCustomerId is required".into()));
        }
        let customer = self
            .get_customer_by_id(namespace, customer_id)
            .await?
            .filter(|c| c.deleted_at.is_none())
            .ok_or_else(|| AppError::CustomerNotFound(customer_id.to_owned()))?;
        sqlx::query(
            "INSERT INTO app_customers (app_id, customer_id, namespace, definition, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (app_id, customer_id) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at",
        )
        .bind(&app.id)
        .bind(&customer.id)
        .bind(namespace)
        .bind(serde_json::to_string(data).unwrap_or_default())
        .bind(Utc::now().timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(CustomerAppEntry {
            app,
            customer_id: customer.id,
            data: data.clone(),
        })
    }

    /// Deletes a customer's data in an app; an error when there was none.
    pub async fn delete_customer_app_data(
        &self,
        namespace: &str,
        app_id: &str,
        customer_id: &str,
    ) -> Result<()> {
        let done = sqlx::query(
            "DELETE FROM app_customers WHERE namespace = $1 AND app_id = $2 AND customer_id = $3",
        )
        .bind(namespace)
        .bind(app_id)
        .bind(customer_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(AppError::CustomerDataNotFound {
                app_id: app_id.to_owned(),
                customer_id: customer_id.to_owned(),
            });
        }
        Ok(())
    }
}

async fn put_secret(
    tx: &mut Tx,
    namespace: &str,
    app_id: &str,
    name: &str,
    value: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO app_secrets (app_id, namespace, name, value, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (app_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .bind(app_id)
    .bind(namespace)
    .bind(name)
    .bind(value)
    .bind(Utc::now().timestamp_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn encode(app: &App) -> String {
    serde_json::to_string(app).unwrap_or_default()
}

pub(crate) fn decode_app(id: String, definition: String) -> Result<App, CatalogError> {
    serde_json::from_str(&definition).map_err(|source| CatalogError::Decode { id, source })
}

fn decode_customer_data(app_id: &str, definition: String) -> Result<CustomerAppData> {
    serde_json::from_str(&definition).map_err(|source| {
        AppError::Catalog(CatalogError::Decode {
            id: app_id.to_owned(),
            source,
        })
    })
}

#[cfg(test)]
mod tests;
