//! Apps and the marketplace (`/api/v1/apps`, `/api/v1/marketplace/listings`), customers'
//! app data (`/api/v1/customers/{c}/apps`, `.../stripe`, `.../stripe/portal`) and Stripe
//! checkout sessions, as OpenMeter's `openmeter/app` httpdrivers serve them.
//!
//! Stripe is called through [`StripeClient`] (blocking, on `spawn_blocking`) exactly as
//! the contract's §1.2–1.3 say: the key is checked with `GET /v1/account`, a webhook
//! endpoint is registered at install and deleted at uninstall, customers are checked with
//! `GET /v1/customers/{id}`. The key and the webhook secret are stored as secrets, never
//! answered. A customer's Stripe app is the one of its effective billing profile.

use crate::error::ApiError;
use crate::params::Params;
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use metron_connectors::stripe::{
    self, CheckoutSessionCreate, CustomerCreate, Metadata, PortalSessionCreate, StripeClient,
    StripeConfig, WebhookEndpointCreate,
};
use metron_storage::apps::{
    self, App, AppError, AppInstall, AppKind, AppType, AppUpdate, CustomerAppData,
    CustomerAppEntry, SECRET_STRIPE_API_KEY, SECRET_STRIPE_WEBHOOK_ID,
    SECRET_STRIPE_WEBHOOK_SECRET,
};
use metron_storage::billing_profiles::{
    BillingParty, BillingProfileCreate, BillingWorkflow, ProfileAppsCreate,
};
use metron_storage::customers::{Address, Customer, CustomerInput};
use serde::Deserialize;
use serde_json::{Value, json};

/// The events a Stripe app's webhook endpoint is registered for (contract §1.2).
pub const STRIPE_WEBHOOK_EVENTS: [&str; 12] = [
    "setup_intent.succeeded",
    "setup_intent.setup_failed",
    "setup_intent.requires_action",
    "invoice.finalization_failed",
    "invoice.marked_uncollectible",
    "invoice.overdue",
    "invoice.paid",
    "invoice.payment_action_required",
    "invoice.payment_failed",
    "invoice.payment_succeeded",
    "invoice.sent",
    "invoice.voided",
];
const WEBHOOK_DESCRIPTION: &str = "OpenMeter Stripe Webhook, do not delete or modify manually";
const META_NAMESPACE: &str = "om_namespace";
const META_APP_ID: &str = "om_app_id";
const META_CUSTOMER_ID: &str = "om_customer_id";

/// Where Stripe is and where Stripe reaches this server (config `stripe.apiBase`,
/// `server.publicUrl`).
#[derive(Clone, Debug)]
pub struct StripeSettings {
    pub api_base: String,
    /// `None`: the scheme and host of the request that installs the app.
    pub public_url: Option<String>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/apps", web::get().to(list))
        .route("/api/v1/apps/{id}", web::get().to(get))
        .route("/api/v1/apps/{id}", web::put().to(update))
        .route("/api/v1/apps/{id}", web::delete().to(uninstall))
        .route(
            "/api/v1/apps/{id}/stripe/api-key",
            web::put().to(update_stripe_api_key),
        )
        .route("/api/v1/marketplace/listings", web::get().to(listings))
        .route(
            "/api/v1/marketplace/listings/{type}",
            web::get().to(listing),
        )
        .route(
            "/api/v1/marketplace/listings/{type}/install",
            web::post().to(install),
        )
        .route(
            "/api/v1/marketplace/listings/{type}/install/apikey",
            web::post().to(install_api_key),
        )
        .route(
            "/api/v1/customers/{customer}/apps",
            web::get().to(list_customer_data),
        )
        .route(
            "/api/v1/customers/{customer}/apps",
            web::put().to(upsert_customer_data),
        )
        .route(
            "/api/v1/customers/{customer}/apps/{app}",
            web::delete().to(delete_customer_data),
        )
        .route(
            "/api/v1/customers/{customer}/stripe",
            web::get().to(get_customer_stripe),
        )
        .route(
            "/api/v1/customers/{customer}/stripe",
            web::put().to(upsert_customer_stripe),
        )
        .route(
            "/api/v1/customers/{customer}/stripe/portal",
            web::post().to(create_portal_session),
        )
        .route(
            "/api/v1/stripe/checkout/sessions",
            web::post().to(create_checkout_session),
        );
}

pub(crate) fn app_error(error: AppError) -> ApiError {
    if let AppError::Catalog(e) = error {
        return crate::routes::customers::catalog_error(e);
    }
    let status = match &error {
        AppError::Catalog(_) => StatusCode::INTERNAL_SERVER_ERROR,
        AppError::Invalid(_) | AppError::TypeMismatch { .. } | AppError::ListingNotFound(_) => {
            StatusCode::BAD_REQUEST
        }
        AppError::NotFound(_)
        | AppError::CustomerNotFound(_)
        | AppError::CustomerDataNotFound { .. } => StatusCode::NOT_FOUND,
        AppError::SandboxExists { .. } | AppError::InUse { .. } => StatusCode::CONFLICT,
    };
    ApiError::new(status, error.to_string())
}

/// OpenMeter's mapping of provider errors: 401 an authentication error, 400 a validation
/// error, anything else a failed precondition (412).
fn stripe_error(error: Box<stripe::Error>, namespace: &str, app_id: Option<&str>) -> ApiError {
    let scope = match app_id {
        Some(id) => format!("app {id}"),
        None => format!("app in {namespace} namespace"),
    };
    match error.as_ref() {
        stripe::Error::Unauthorized { .. } => ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("provider authentication error for {scope}: {error}"),
        ),
        stripe::Error::Api { status: 400, .. } | stripe::Error::Config { .. } => {
            ApiError::bad_request(format!("provider validation error for {scope}: {error}"))
        }
        _ => ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            format!("provider error for {scope}: {error}"),
        ),
    }
}

/// Runs a blocking Stripe call off the async workers.
/// (The client's error is large: it crosses the thread boxed.)
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, Box<stripe::Error>> + Send + 'static,
) -> Result<Result<T, Box<stripe::Error>>, ApiError> {
    tokio::task::spawn_blocking(call).await.map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("a Stripe call failed to run: {error}"),
        )
    })
}

fn client(settings: &StripeSettings, api_key: &str) -> Result<StripeClient, ApiError> {
    StripeClient::new(StripeConfig {
        api_base: settings.api_base.clone(),
        ..StripeConfig::new(api_key)
    })
    .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn page_params(p: &Params) -> Result<(usize, usize), ApiError> {
    Ok((
        p.usize_in("page", 1, 1, usize::MAX)?,
        p.usize_in("pageSize", 100, 1, 1000)?,
    ))
}

fn paged<T: serde::Serialize>(total: usize, page: usize, page_size: usize, items: &[T]) -> Value {
    json!({"totalCount": total, "page": page, "pageSize": page_size, "items": items})
}

fn app_type(text: &str) -> Result<AppType, ApiError> {
    AppType::parse(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid app type {text:?}: must be stripe, sandbox or custom_invoicing"
        ))
    })
}

async fn live_app(state: &AppState, id: &str) -> Result<App, ApiError> {
    state
        .pipeline
        .catalog()
        .get_app(state.pipeline.namespace(), id)
        .await
        .map_err(app_error)?
        .ok_or_else(|| ApiError::not_found(format!("app {id} not found")))
}

async fn live_customer(state: &AppState, id_or_key: &str) -> Result<Customer, ApiError> {
    state
        .pipeline
        .catalog()
        .get_customer(state.pipeline.namespace(), id_or_key)
        .await
        .map_err(super::customers::catalog_error)?
        .ok_or_else(|| ApiError::not_found(format!("customer {id_or_key:?} not found")))
}

pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let (page, page_size) = page_params(&p)?;
    let apps = state
        .pipeline
        .catalog()
        .list_apps(state.pipeline.namespace(), None, page, page_size)
        .await
        .map_err(app_error)?;
    Ok(HttpResponse::Ok().json(paged(apps.total_count, page, page_size, &apps.items)))
}

pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(live_app(&state, &path).await?))
}

pub async fn update(
    state: web::Data<AppState>,
    settings: web::Data<StripeSettings>,
    path: web::Path<String>,
    body: web::Json<AppUpdate>,
) -> Result<HttpResponse, ApiError> {
    let update = body.into_inner();
    if let Some(key) = update.secret_api_key.as_deref().filter(|k| !k.is_empty()) {
        let app = live_app(&state, &path).await?;
        if app.app_type() == AppType::Stripe {
            replace_stripe_key(&state, &settings, app, key).await?;
        }
    }
    let app = state
        .pipeline
        .catalog()
        .update_app(state.pipeline.namespace(), &path, &update)
        .await
        .map_err(app_error)?;
    Ok(HttpResponse::Ok().json(app))
}

/// Uninstalls an app; for Stripe, then deletes its webhook endpoint (404 and 401 ignored).
pub async fn uninstall(
    state: web::Data<AppState>,
    settings: web::Data<StripeSettings>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let catalog = state.pipeline.catalog();
    let app = live_app(&state, &path).await?;
    let (key, webhook) = if app.app_type() == AppType::Stripe {
        (
            catalog
                .app_secret(&app.id, SECRET_STRIPE_API_KEY)
                .await
                .map_err(app_error)?,
            catalog
                .app_secret(&app.id, SECRET_STRIPE_WEBHOOK_ID)
                .await
                .map_err(app_error)?,
        )
    } else {
        (None, None)
    };
    catalog
        .uninstall_app(state.pipeline.namespace(), &app.id)
        .await
        .map_err(app_error)?;
    if let (Some(key), Some(webhook)) = (key, webhook) {
        let client = client(&settings, &key)?;
        let id = webhook.clone();
        match blocking(move || client.delete_webhook_endpoint(&id).map_err(Box::new)).await? {
            Ok(()) => {}
            Err(e) if e.not_found() || matches!(*e, stripe::Error::Unauthorized { .. }) => {}
            Err(error) => {
                tracing::warn!(app_id = %app.id, webhook_id = %webhook, %error,
                    "Uninstalled a Stripe app but could not delete its webhook endpoint.");
            }
        }
    }
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInput {
    #[serde(rename = "secretAPIKey")]
    pub secret_api_key: String,
}

pub async fn update_stripe_api_key(
    state: web::Data<AppState>,
    settings: web::Data<StripeSettings>,
    path: web::Path<String>,
    body: web::Json<ApiKeyInput>,
) -> Result<HttpResponse, ApiError> {
    let app = live_app(&state, &path).await?;
    if app.app_type() != AppType::Stripe {
        return Err(ApiError::bad_request(format!(
            "app {} is not a stripe app",
            app.id
        )));
    }
    replace_stripe_key(&state, &settings, app, &body.secret_api_key).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// OpenMeter's `UpdateAPIKey`: same mode, a key Stripe accepts, the same account; then the
/// key is stored and the app is ready again.
async fn replace_stripe_key(
    state: &AppState,
    settings: &StripeSettings,
    mut app: App,
    key: &str,
) -> Result<(), ApiError> {
    let namespace = state.pipeline.namespace();
    let AppKind::Stripe {
        stripe_account_id,
        livemode,
        masked_api_key,
    } = &mut app.kind
    else {
        return Err(ApiError::bad_request("not a stripe app"));
    };
    if apps::stripe_livemode(key) != *livemode {
        return Err(ApiError::bad_request(format!(
            "api key livemode mismatch: the app is in {} mode",
            if *livemode { "live" } else { "test" }
        )));
    }
    let client = client(settings, key)?;
    let account = blocking(move || client.account().map_err(Box::new))
        .await?
        .map_err(|e| stripe_error(e, namespace, Some(&app.id)))?;
    if account.id != *stripe_account_id {
        return Err(ApiError::bad_request(format!(
            "stripe account id mismatch: the key is of {}, the app of {stripe_account_id}",
            account.id
        )));
    }
    *masked_api_key = apps::mask_api_key(key);
    app.status = apps::AppStatus::Ready;
    app.updated_at = Utc::now();
    state
        .pipeline
        .catalog()
        .update_app_secrets(
            namespace,
            &app,
            &[(SECRET_STRIPE_API_KEY.to_owned(), key.to_owned())],
        )
        .await
        .map_err(app_error)
}

pub async fn listings(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let (page, page_size) = page_params(&p)?;
    let all = apps::listings();
    let items: Vec<_> = all
        .iter()
        .skip(page.saturating_sub(1).saturating_mul(page_size))
        .take(page_size)
        .collect();
    Ok(HttpResponse::Ok().json(paged(all.len(), page, page_size, &items)))
}

pub async fn listing(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(apps::listing(app_type(&path)?)))
}

/// `MarketplaceInstallRequestPayload`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallInput {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub create_billing_profile: Option<bool>,
}

/// A JSON object body whose fields are all optional: an empty body is the defaults; a
/// malformed one, or one that is no object (serde would read `[]` as a struct of defaults), is
/// a 400, not the defaults that `Option<web::Json<T>>` would silently make of it.
pub(crate) fn optional_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let invalid =
        |e: serde_json::Error| ApiError::bad_request(format!("Json deserialize error: {e}"));
    let value: Value = serde_json::from_slice(body).map_err(invalid)?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "Json deserialize error: the body must be a JSON object",
        ));
    }
    serde_json::from_value(value).map_err(invalid)
}

/// Installs sandbox or custom invoicing (no credentials).
pub async fn install(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let kind = match app_type(&path)? {
        AppType::Sandbox => AppKind::Sandbox,
        AppType::CustomInvoicing => AppKind::CustomInvoicing {
            enable_draft_sync_hook: false,
            enable_issuing_sync_hook: false,
        },
        AppType::Stripe => {
            return Err(ApiError::bad_request(
                "app does not support this installation method. Supported methods: [with_api_key]",
            ));
        }
    };
    let input: InstallInput = optional_body(&body)?;
    let namespace = state.pipeline.namespace();
    let catalog = state.pipeline.catalog();
    let app = catalog
        .install_app(
            namespace,
            AppInstall {
                name: input.name.unwrap_or_default(),
                kind,
                id: None,
                secrets: Vec::new(),
            },
        )
        .await
        .map_err(app_error)?;
    // As OpenMeter's install: a sandbox provisions the default profile if there is none
    // and is default for every capability; custom invoicing creates no profile.
    let mut defaults: Vec<&str> = Vec::new();
    if input.create_billing_profile.unwrap_or(true) && app.app_type() == AppType::Sandbox {
        catalog
            .ensure_billing_defaults(namespace)
            .await
            .map_err(super::billing_profiles::profile_error)?;
        defaults = vec!["calculateTax", "invoiceCustomers", "collectPayments"];
    }
    Ok(HttpResponse::Ok().json(json!({"app": app, "defaultForCapabilityTypes": defaults})))
}

/// The body of `.../install/apikey`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInstallInput {
    #[serde(default)]
    pub name: Option<String>,
    pub api_key: String,
    #[serde(default)]
    pub create_billing_profile: Option<bool>,
}

/// Installs Stripe with an API key (contract §1.2): `GET /v1/account`, then the webhook
/// endpoint, then the row with the masked key; the key and the webhook secret are secrets.
pub async fn install_api_key(
    state: web::Data<AppState>,
    settings: web::Data<StripeSettings>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<ApiKeyInstallInput>,
) -> Result<HttpResponse, ApiError> {
    if app_type(&path)? != AppType::Stripe {
        return Err(ApiError::bad_request(
            "app does not support this installation method. Supported methods: [no_credentials_required]",
        ));
    }
    let input = body.into_inner();
    let name = input.name.clone().unwrap_or_default();
    if name.chars().count() > apps::APP_NAME_LEN_MAX {
        return Err(ApiError::bad_request("name must be at most 256 characters"));
    }
    let namespace = state.pipeline.namespace().to_owned();
    let key = input.api_key.clone();
    let livemode = apps::stripe_livemode(&key);
    let stripe = client(&settings, &key)?;
    let account_client = stripe.clone();
    let account = blocking(move || account_client.account().map_err(Box::new))
        .await?
        .map_err(|e| stripe_error(e, &namespace, None))?;
    let app_id = ulid::Ulid::new().to_string();
    let endpoint = WebhookEndpointCreate {
        url: format!(
            "{}/api/v1/apps/{app_id}/stripe/webhook",
            public_base(&settings, &req)
        ),
        enabled_events: STRIPE_WEBHOOK_EVENTS.map(str::to_owned).to_vec(),
        api_version: Some(stripe::API_VERSION.to_owned()),
        description: Some(WEBHOOK_DESCRIPTION.to_owned()),
        metadata: Metadata::from([
            (META_NAMESPACE.to_owned(), namespace.clone()),
            (META_APP_ID.to_owned(), app_id.clone()),
        ]),
    };
    let webhook_client = stripe.clone();
    let idempotency = format!("webhook-create-{app_id}");
    let webhook = blocking(move || {
        webhook_client
            .create_webhook_endpoint(&endpoint, &idempotency)
            .map_err(Box::new)
    })
    .await?
    .map_err(|e| stripe_error(e, &namespace, Some(&app_id)))?;
    let mut secrets = vec![
        (SECRET_STRIPE_API_KEY.to_owned(), key.clone()),
        (SECRET_STRIPE_WEBHOOK_ID.to_owned(), webhook.id.clone()),
    ];
    if let Some(secret) = &webhook.secret {
        secrets.push((SECRET_STRIPE_WEBHOOK_SECRET.to_owned(), secret.clone()));
    }
    let catalog = state.pipeline.catalog();
    let installed = catalog
        .install_app(
            &namespace,
            AppInstall {
                name,
                kind: AppKind::Stripe {
                    stripe_account_id: account.id.clone(),
                    livemode,
                    masked_api_key: apps::mask_api_key(&key),
                },
                id: Some(app_id),
                secrets,
            },
        )
        .await;
    let app = match installed {
        Ok(app) => app,
        Err(error) => {
            // Nothing refers to the endpoint: take it back (best effort).
            let webhook_id = webhook.id.clone();
            let _ = blocking(move || {
                stripe
                    .delete_webhook_endpoint(&webhook_id)
                    .map_err(Box::new)
            })
            .await;
            return Err(app_error(error));
        }
    };
    let mut defaults: Vec<&str> = Vec::new();
    if input.create_billing_profile.unwrap_or(true) {
        defaults = stripe_billing_profile(&state, &app, &account).await?;
    }
    Ok(HttpResponse::Ok().json(json!({"app": app, "defaultForCapabilityTypes": defaults})))
}

/// OpenMeter's `makeStripeDefaultBillingApp`: a "Stripe Billing Profile" using the app,
/// made default when the current default invoices with the sandbox.
async fn stripe_billing_profile(
    state: &AppState,
    app: &App,
    account: &stripe::Account,
) -> Result<Vec<&'static str>, ApiError> {
    let catalog = state.pipeline.catalog();
    let namespace = state.pipeline.namespace();
    let current = catalog
        .default_billing_profile(namespace)
        .await
        .map_err(super::billing_profiles::profile_error)?;
    let mut make_default = false;
    if let Some(profile) = current {
        let invoicing = catalog
            .app_by_id(namespace, &profile.apps.invoicing.id)
            .await
            .map_err(super::billing_profiles::profile_error)?;
        make_default = invoicing.is_some_and(|a| a.app_type() == AppType::Sandbox);
    }
    let livemode = matches!(app.kind, AppKind::Stripe { livemode: true, .. });
    let (name, country) = if livemode {
        (
            account
                .business_profile
                .name
                .clone()
                .unwrap_or_else(|| account.id.clone()),
            account.country.clone().unwrap_or_else(|| "US".to_owned()),
        )
    } else {
        ("Stripe Test Account".to_owned(), "US".to_owned())
    };
    catalog
        .create_billing_profile(
            namespace,
            BillingProfileCreate {
                name: "Stripe Billing Profile".into(),
                description: Some("Stripe Billing Profile, created automatically".into()),
                metadata: None,
                supplier: BillingParty {
                    name: Some(name),
                    addresses: Some(vec![Address {
                        country: Some(country.to_uppercase()),
                        ..Address::default()
                    }]),
                    ..BillingParty::default()
                },
                default: make_default,
                workflow: BillingWorkflow::default(),
                apps: ProfileAppsCreate {
                    tax: app.id.clone(),
                    invoicing: app.id.clone(),
                    payment: app.id.clone(),
                },
            },
        )
        .await
        .map_err(super::billing_profiles::profile_error)?;
    Ok(vec!["calculateTax", "invoiceCustomers", "collectPayments"])
}

/// The configured public URL, else the scheme and host the request came to.
fn public_base(settings: &StripeSettings, req: &HttpRequest) -> String {
    match settings.public_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

// ---- customer app data ----

/// `CustomerAppData` with its app (`id`, `type`, the type's fields, `app`).
fn customer_data_json(entry: &CustomerAppEntry) -> Value {
    let mut out = serde_json::to_value(&entry.data).unwrap_or_else(|_| json!({}));
    if let Some(map) = out.as_object_mut() {
        map.insert("id".into(), json!(entry.app.id));
        map.insert(
            "app".into(),
            serde_json::to_value(&entry.app).unwrap_or(Value::Null),
        );
    }
    out
}

pub async fn list_customer_data(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let (page, page_size) = page_params(&p)?;
    let kind = p.one("type").map(app_type).transpose()?;
    let customer = live_customer(&state, &path).await?;
    let all = state
        .pipeline
        .catalog()
        .list_customer_app_data(state.pipeline.namespace(), &customer.id, kind)
        .await
        .map_err(app_error)?;
    let items: Vec<Value> = all
        .iter()
        .skip(page.saturating_sub(1).saturating_mul(page_size))
        .take(page_size)
        .map(customer_data_json)
        .collect();
    Ok(HttpResponse::Ok().json(paged(all.len(), page, page_size, &items)))
}

/// `CustomerAppDataCreateOrUpdateItem`: the data, and the app id (else the customer's
/// billing profile's app of that type).
#[derive(Debug, Deserialize)]
pub struct CustomerDataItem {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(flatten)]
    pub data: CustomerAppData,
}

pub async fn upsert_customer_data(
    state: web::Data<AppState>,
    settings: web::Data<StripeSettings>,
    path: web::Path<String>,
    body: web::Json<Vec<CustomerDataItem>>,
) -> Result<HttpResponse, ApiError> {
    let customer = live_customer(&state, &path).await?;
    let mut out = Vec::new();
    for item in body.into_inner() {
        let app = match &item.id {
            Some(id) => live_app(&state, id).await?,
            None => profile_app(&state, &customer.id, item.data.app_type()).await?,
        };
        let entry = upsert_checked(&state, &settings, &app, &customer.id, &item.data).await?;
        out.push(customer_data_json(&entry));
    }
    Ok(HttpResponse::Ok().json(out))
}

pub async fn delete_customer_data(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (customer, app_id) = path.into_inner();
    let customer = live_customer(&state, &customer).await?;
    let app = live_app(&state, &app_id).await?;
    state
        .pipeline
        .catalog()
        .delete_customer_app_data(state.pipeline.namespace(), &app.id, &customer.id)
        .await
        .map_err(app_error)?;
    Ok(HttpResponse::NoContent().finish())
}

/// The app of a type in the customer's effective billing profile (OpenMeter's
/// `GetCustomerApp`): 412 when the profile uses another type.
async fn profile_app(state: &AppState, customer_id: &str, kind: AppType) -> Result<App, ApiError> {
    let resolved = state
        .pipeline
        .catalog()
        .effective_billing_profile(state.pipeline.namespace(), customer_id)
        .await
        .map_err(super::billing_profiles::profile_error)?;
    [
        resolved.invoicing_app,
        resolved.payment_app,
        resolved.tax_app,
    ]
    .into_iter()
    .find(|a| a.app_type() == kind && a.deleted_at.is_none())
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            format!("no {kind} app found in billing profile for customer {customer_id}"),
        )
    })
}

/// Stores customer data; Stripe data is checked with Stripe first (contract §1.3): the
/// customer must exist and the payment method, if any, must be the customer's.
async fn upsert_checked(
    state: &AppState,
    settings: &StripeSettings,
    app: &App,
    customer_id: &str,
    data: &CustomerAppData,
) -> Result<CustomerAppEntry, ApiError> {
    if let CustomerAppData::Stripe {
        stripe_customer_id,
        stripe_default_payment_method_id,
    } = data
    {
        let client = app_client(state, settings, app).await?;
        check_stripe_customer(
            state,
            client,
            &app.id,
            stripe_customer_id,
            stripe_default_payment_method_id.as_deref(),
        )
        .await?;
    }
    state
        .pipeline
        .catalog()
        .upsert_customer_app_data(state.pipeline.namespace(), &app.id, customer_id, data)
        .await
        .map_err(app_error)
}

async fn check_stripe_customer(
    state: &AppState,
    client: StripeClient,
    app_id: &str,
    stripe_customer_id: &str,
    payment_method: Option<&str>,
) -> Result<(), ApiError> {
    let namespace = state.pipeline.namespace();
    let id = stripe_customer_id.to_owned();
    let pm = payment_method.map(str::to_owned);
    let checked = blocking(move || {
        let customer = client.customer(&id).map_err(Box::new)?;
        let method = match pm {
            Some(pm) => Some(client.payment_method(&pm).map_err(Box::new)?),
            None => None,
        };
        Ok((customer, method))
    })
    .await?;
    match checked {
        Ok((customer, method)) => {
            if customer.deleted {
                return Err(ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    format!("stripe customer {stripe_customer_id} not found"),
                ));
            }
            if let Some(method) = method
                && method.customer.as_deref() != Some(stripe_customer_id)
            {
                return Err(ApiError::bad_request(format!(
                    "stripe payment method {} does not belong to stripe customer {stripe_customer_id}",
                    method.id
                )));
            }
            Ok(())
        }
        Err(e) if e.not_found() => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            format!("stripe customer {stripe_customer_id} or its payment method not found"),
        )),
        Err(e) => Err(stripe_error(e, namespace, Some(app_id))),
    }
}

/// A client with the app's stored key.
async fn app_client(
    state: &AppState,
    settings: &StripeSettings,
    app: &App,
) -> Result<StripeClient, ApiError> {
    let key = state
        .pipeline
        .catalog()
        .app_secret(&app.id, SECRET_STRIPE_API_KEY)
        .await
        .map_err(app_error)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                format!("stripe app {} has no API key", app.id),
            )
        })?;
    client(settings, &key)
}

fn stripe_data_json(app: &App, data: &CustomerAppData) -> Value {
    customer_data_json(&CustomerAppEntry {
        app: app.clone(),
        customer_id: String::new(),
        data: data.clone(),
    })
}

pub async fn get_customer_stripe(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let customer = live_customer(&state, &path).await?;
    let app = profile_app(&state, &customer.id, AppType::Stripe).await?;
    let data = state
        .pipeline
        .catalog()
        .get_customer_app_data(state.pipeline.namespace(), &app.id, &customer.id)
        .await
        .map_err(app_error)?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "customer {} has no stripe data in app {}",
                customer.id, app.id
            ))
        })?;
    Ok(HttpResponse::Ok().json(stripe_data_json(&app, &data)))
}

/// `StripeCustomerAppDataBase`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StripeDataInput {
    pub stripe_customer_id: String,
    #[serde(default)]
    pub stripe_default_payment_method_id: Option<String>,
}

pub async fn upsert_customer_stripe(
    state: web::Data<AppState>,
    settings: web::Data<StripeSettings>,
    path: web::Path<String>,
    body: web::Json<StripeDataInput>,
) -> Result<HttpResponse, ApiError> {
    let customer = live_customer(&state, &path).await?;
    let app = profile_app(&state, &customer.id, AppType::Stripe).await?;
    let input = body.into_inner();
    let data = CustomerAppData::Stripe {
        stripe_customer_id: input.stripe_customer_id,
        stripe_default_payment_method_id: input.stripe_default_payment_method_id,
    };
    let entry = upsert_checked(&state, &settings, &app, &customer.id, &data).await?;
    Ok(HttpResponse::Ok().json(customer_data_json(&entry)))
}

/// `CreateStripeCustomerPortalSessionParams`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortalInput {
    #[serde(default)]
    pub configuration_id: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub return_url: Option<String>,
}

pub async fn create_portal_session(
    state: web::Data<AppState>,
    settings: web::Data<StripeSettings>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // The body is required (its fields are optional): a missing, malformed or non-object one
    // is a 400.
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is required"));
    }
    let input: PortalInput = optional_body(&body)?;
    let customer = live_customer(&state, &path).await?;
    let app = profile_app(&state, &customer.id, AppType::Stripe).await?;
    let stripe_customer_id = match state
        .pipeline
        .catalog()
        .get_customer_app_data(state.pipeline.namespace(), &app.id, &customer.id)
        .await
        .map_err(app_error)?
    {
        Some(CustomerAppData::Stripe {
            stripe_customer_id, ..
        }) => stripe_customer_id,
        _ => {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                format!("customer {} has no stripe customer", customer.id),
            ));
        }
    };
    let client = app_client(&state, &settings, &app).await?;
    let params = PortalSessionCreate {
        customer: stripe_customer_id,
        configuration: input.configuration_id,
        return_url: input.return_url,
        locale: input.locale,
    };
    let key = ulid::Ulid::new().to_string();
    let session = blocking(move || {
        client
            .create_portal_session(&params, &key)
            .map_err(Box::new)
    })
    .await?
    .map_err(|e| stripe_error(e, state.pipeline.namespace(), Some(&app.id)))?;
    Ok(HttpResponse::Created().json(json!({
        "id": session.id,
        "stripeCustomerId": session.customer,
        "configurationId": session.configuration.unwrap_or_default(),
        "livemode": session.livemode,
        "createdAt": unix_time(session.created),
        "returnUrl": session.return_url.unwrap_or_default(),
        "locale": session.locale.unwrap_or_default(),
        "url": session.url,
    })))
}

fn unix_time(seconds: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(seconds, 0)
}

// ---- checkout sessions ----

/// `CreateStripeCheckoutSessionRequest`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutInput {
    #[serde(default)]
    pub app_id: Option<String>,
    pub customer: Value,
    #[serde(default)]
    pub stripe_customer_id: Option<String>,
    #[serde(default)]
    pub options: CheckoutOptions,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Behaviors {
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub shipping: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Position {
    #[serde(default)]
    pub position: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Consent {
    #[serde(default)]
    pub payment_method_reuse_agreement: Option<Position>,
    #[serde(default)]
    pub promotions: Option<String>,
    #[serde(default)]
    pub terms_of_service: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomText {
    #[serde(default)]
    pub after_submit: Option<Message>,
    #[serde(default)]
    pub shipping_address: Option<Message>,
    #[serde(default)]
    pub submit: Option<Message>,
    #[serde(default)]
    pub terms_of_service_acceptance: Option<Message>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TaxIdCollection {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub required: Option<String>,
}

/// `CreateStripeCheckoutSessionRequestOptions`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutOptions {
    #[serde(default)]
    pub billing_address_collection: Option<String>,
    #[serde(default, rename = "cancelURL")]
    pub cancel_url: Option<String>,
    #[serde(default, rename = "clientReferenceID")]
    pub client_reference_id: Option<String>,
    #[serde(default)]
    pub customer_update: Option<Behaviors>,
    #[serde(default)]
    pub consent_collection: Option<Consent>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub custom_text: Option<CustomText>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    #[serde(default, rename = "returnURL")]
    pub return_url: Option<String>,
    #[serde(default, rename = "successURL")]
    pub success_url: Option<String>,
    #[serde(default)]
    pub ui_mode: Option<String>,
    #[serde(default)]
    pub payment_method_types: Option<Vec<String>>,
    #[serde(default)]
    pub redirect_on_completion: Option<String>,
    #[serde(default)]
    pub tax_id_collection: Option<TaxIdCollection>,
}

/// The customer of a checkout: by `id`, by `key`, or created from `CustomerCreate`.
async fn checkout_customer(state: &AppState, spec: &Value) -> Result<Customer, ApiError> {
    let text = |k: &str| {
        spec.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(name) = text("name") {
        let _ = name;
        let input: CustomerInput = serde_json::from_value(spec.clone())
            .map_err(|e| ApiError::bad_request(format!("invalid customer: {e}")))?;
        let catalog = state.pipeline.catalog();
        let customer = catalog
            .create_customer(state.pipeline.namespace(), input)
            .await
            .map_err(super::customers::customer_error)?;
        state
            .pipeline
            .attribution()
            .update(catalog, state.pipeline.namespace(), &customer.id)
            .await
            .map_err(super::customers::catalog_error)?;
        return Ok(customer);
    }
    match text("id").or_else(|| text("key")) {
        Some(id_or_key) => live_customer(state, id_or_key).await,
        None => Err(ApiError::bad_request("customer is required")),
    }
}

/// Creates a setup-mode checkout session (contract §1.3), creating the Stripe customer
/// first when the customer has none linked.
pub async fn create_checkout_session(
    state: web::Data<AppState>,
    settings: web::Data<StripeSettings>,
    body: web::Json<CheckoutInput>,
) -> Result<HttpResponse, ApiError> {
    let input = body.into_inner();
    let namespace = state.pipeline.namespace().to_owned();
    let customer = checkout_customer(&state, &input.customer).await?;
    let app = match &input.app_id {
        Some(id) => live_app(&state, id).await?,
        None => profile_app(&state, &customer.id, AppType::Stripe).await?,
    };
    if app.app_type() != AppType::Stripe {
        return Err(ApiError::bad_request(format!(
            "app {} is not a stripe app",
            app.id
        )));
    }
    let client = app_client(&state, &settings, &app).await?;
    let catalog = state.pipeline.catalog();
    let linked = catalog
        .get_customer_app_data(&namespace, &app.id, &customer.id)
        .await
        .map_err(app_error)?;
    let stripe_customer_id = match (&input.stripe_customer_id, linked) {
        (Some(id), _) => {
            let data = CustomerAppData::Stripe {
                stripe_customer_id: id.clone(),
                stripe_default_payment_method_id: None,
            };
            upsert_checked(&state, &settings, &app, &customer.id, &data).await?;
            id.clone()
        }
        (
            None,
            Some(CustomerAppData::Stripe {
                stripe_customer_id, ..
            }),
        ) => stripe_customer_id,
        (None, _) => {
            let params = CustomerCreate {
                name: Some(customer.name.clone()),
                email: customer.primary_email.clone(),
                metadata: Metadata::from([
                    (META_NAMESPACE.to_owned(), namespace.clone()),
                    (META_CUSTOMER_ID.to_owned(), customer.id.clone()),
                ]),
            };
            let create_client = client.clone();
            let key = ulid::Ulid::new().to_string();
            let created = blocking(move || {
                create_client
                    .create_customer(&params, &key)
                    .map_err(Box::new)
            })
            .await?
            .map_err(|e| stripe_error(e, &namespace, Some(&app.id)))?;
            catalog
                .upsert_customer_app_data(
                    &namespace,
                    &app.id,
                    &customer.id,
                    &CustomerAppData::Stripe {
                        stripe_customer_id: created.id.clone(),
                        stripe_default_payment_method_id: None,
                    },
                )
                .await
                .map_err(app_error)?;
            created.id
        }
    };
    let params = checkout_params(
        &namespace,
        &app,
        &customer,
        &stripe_customer_id,
        input.options,
    )?;
    let key = ulid::Ulid::new().to_string();
    let session = blocking(move || {
        client
            .create_checkout_session(&params, &key)
            .map_err(Box::new)
    })
    .await?
    .map_err(|e| stripe_error(e, &namespace, Some(&app.id)))?;
    let setup_intent = session.setup_intent.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            format!("stripe checkout session {} has no setup intent", session.id),
        )
    })?;
    let mut result = json!({
        "customerId": customer.id,
        "stripeCustomerId": stripe_customer_id,
        "sessionId": session.id,
        "setupIntentId": setup_intent,
        "clientSecret": session.client_secret,
        "clientReferenceId": session.client_reference_id,
        "customerEmail": session.customer_email,
        "currency": session.currency.map(|c| c.to_uppercase()),
        "createdAt": unix_time(session.created),
        "expiresAt": unix_time(session.expires_at),
        "metadata": session.metadata,
        "status": session.status,
        "url": session.url,
        "mode": session.mode,
        "cancelURL": session.cancel_url,
        "successURL": session.success_url,
        "returnURL": session.return_url,
    });
    // What Stripe leaves null is omitted, as OpenMeter's optional fields are (none is nullable).
    if let Some(fields) = result.as_object_mut() {
        fields.retain(|_, value| !value.is_null());
    }
    Ok(HttpResponse::Created().json(result))
}

fn checkout_params(
    namespace: &str,
    app: &App,
    customer: &Customer,
    stripe_customer_id: &str,
    options: CheckoutOptions,
) -> Result<CheckoutSessionCreate, ApiError> {
    let mut metadata = options.metadata.unwrap_or_default();
    if let Some(reserved) = metadata.keys().find(|k| k.starts_with("om_")) {
        return Err(ApiError::bad_request(format!(
            "metadata key {reserved:?} is reserved"
        )));
    }
    metadata.insert(META_NAMESPACE.to_owned(), namespace.to_owned());
    metadata.insert(META_APP_ID.to_owned(), app.id.clone());
    metadata.insert(META_CUSTOMER_ID.to_owned(), customer.id.clone());
    let update = options.customer_update.unwrap_or_default();
    let consent = options.consent_collection.unwrap_or_default();
    let text = options.custom_text.unwrap_or_default();
    let message = |m: Option<Message>| m.and_then(|m| m.message);
    let tax = options.tax_id_collection.unwrap_or_default();
    Ok(CheckoutSessionCreate {
        customer: stripe_customer_id.to_owned(),
        mode: None,
        setup_intent_metadata: metadata,
        billing_address_collection: options.billing_address_collection,
        cancel_url: options.cancel_url,
        client_reference_id: options.client_reference_id,
        customer_update_address: update.address,
        customer_update_name: update.name,
        customer_update_shipping: update.shipping,
        currency: options
            .currency
            .or_else(|| customer.currency.clone())
            .map(|c| c.to_lowercase()),
        consent_payment_method_reuse_agreement_position: consent
            .payment_method_reuse_agreement
            .and_then(|p| p.position),
        consent_promotions: consent.promotions,
        consent_terms_of_service: consent.terms_of_service,
        custom_text_after_submit: message(text.after_submit),
        custom_text_shipping_address: message(text.shipping_address),
        custom_text_submit: message(text.submit),
        custom_text_terms_of_service_acceptance: message(text.terms_of_service_acceptance),
        expires_at: options.expires_at,
        locale: options.locale,
        return_url: options.return_url,
        success_url: options.success_url,
        ui_mode: options.ui_mode,
        payment_method_types: options.payment_method_types.unwrap_or_default(),
        redirect_on_completion: options.redirect_on_completion,
        tax_id_collection_enabled: tax.enabled,
        tax_id_collection_required: tax.required,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> Box<stripe::Error> {
        Box::new(stripe::Error::Api {
            status,
            kind: "invalid_request_error".into(),
            code: None,
            message: "m".into(),
            param: None,
            request_id: None,
            should_retry: None,
        })
    }

    // OpenMeter's provider error mapping: 401 → 401, 400 → 400, anything else → 412.
    #[test]
    fn stripe_errors_map_as_openmeter_does() {
        let unauthorized = Box::new(stripe::Error::Unauthorized {
            message: "bad key".into(),
            request_id: None,
        });
        let timeout = Box::new(stripe::Error::Timeout {
            method: "GET",
            path: "/v1/account".into(),
            timeout: std::time::Duration::from_secs(1),
        });
        for (error, status) in [
            (unauthorized, 401),
            (api(400), 400),
            (api(404), 412),
            (api(500), 412),
            (timeout, 412),
        ] {
            let mapped = stripe_error(error, "default", Some("app"));
            assert_eq!(mapped.status.as_u16(), status, "{}", mapped.detail);
        }
        let mapped = stripe_error(api(500), "ns1", None);
        assert!(
            mapped.detail.contains("app in ns1 namespace"),
            "{}",
            mapped.detail
        );
    }

    // The webhook URL's base: the configured public URL (without a trailing slash), else
    // the request's scheme and host.
    #[test]
    fn public_base_prefers_the_config() {
        let req = actix_web::test::TestRequest::default()
            .insert_header(("host", "metron.local:8888"))
            .to_http_request();
        let configured = StripeSettings {
            api_base: String::new(),
            public_url: Some("https://metron.example.com/".into()),
        };
        assert_eq!(public_base(&configured, &req), "https://metron.example.com");
        let unset = StripeSettings {
            api_base: String::new(),
            public_url: None,
        };
        assert_eq!(public_base(&unset, &req), "http://metron.local:8888");
    }

    // Reserved metadata keys are refused; the om_* keys and the customer's currency
    // (lower-case) are set.
    #[test]
    fn checkout_params_set_the_reserved_metadata() {
        let now = Utc::now();
        let app = App {
            id: "app1".into(),
            name: "Stripe".into(),
            description: None,
            metadata: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            listing: apps::listing(AppType::Stripe),
            status: apps::AppStatus::Ready,
            kind: AppKind::Stripe {
                stripe_account_id: "acct_1".into(),
                livemode: false,
                masked_api_key: "sk_test_***abc".into(),
            },
        };
        let customer = Customer {
            id: "c1".into(),
            key: None,
            name: "C".into(),
            description: None,
            usage_attribution: Default::default(),
            primary_email: None,
            currency: Some("EUR".into()),
            billing_address: None,
            metadata: None,
            annotations: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        let params = checkout_params("ns", &app, &customer, "cus_1", CheckoutOptions::default())
            .expect("params");
        assert_eq!(params.currency.as_deref(), Some("eur"));
        assert_eq!(params.customer, "cus_1");
        let meta = &params.setup_intent_metadata;
        assert_eq!(meta.get("om_namespace").map(String::as_str), Some("ns"));
        assert_eq!(meta.get("om_app_id").map(String::as_str), Some("app1"));
        assert_eq!(meta.get("om_customer_id").map(String::as_str), Some("c1"));
        let reserved = CheckoutOptions {
            metadata: Some(Metadata::from([("om_x".to_owned(), "1".to_owned())])),
            ..CheckoutOptions::default()
        };
        assert!(checkout_params("ns", &app, &customer, "cus_1", reserved).is_err());
    }
}
