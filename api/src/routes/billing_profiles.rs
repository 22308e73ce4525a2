//! Billing profiles (`/api/v1/billing/profiles`) and customer overrides
//! (`/api/v1/billing/customers`), as OpenMeter's `openmeter/billing/httpdriver` serves them.
//!
//! Profiles answer their apps as references (`{"id"}`) unless `expand=apps`; creates and
//! updates answer them expanded, as OpenMeter does. Rule violations answer 400 with
//! OpenMeter's validation issue in `extensions` (`code`, `message`, `severity`).

use crate::error::ApiError;
use crate::params::Params;
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use metron_storage::billing_profiles::{
    BillingProfile, BillingProfileCreate, BillingProfileError, BillingProfileUpdate, OverrideEntry,
    OverrideFilter, OverrideOrder, ProfileAppReferences, ProfileFilter, ProfileOrder,
};
use serde::Deserialize;
use serde_json::{Value, json};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/billing/profiles", web::get().to(list))
        .route("/api/v1/billing/profiles", web::post().to(create))
        .route("/api/v1/billing/profiles/{id}", web::get().to(get))
        .route("/api/v1/billing/profiles/{id}", web::put().to(update))
        .route("/api/v1/billing/profiles/{id}", web::delete().to(delete))
        .route("/api/v1/billing/customers", web::get().to(list_overrides))
        .route(
            "/api/v1/billing/customers/{customer}",
            web::get().to(get_override),
        )
        .route(
            "/api/v1/billing/customers/{customer}",
            web::put().to(upsert_override),
        )
        .route(
            "/api/v1/billing/customers/{customer}",
            web::delete().to(delete_override),
        );
}

pub(crate) fn profile_error(error: BillingProfileError) -> ApiError {
    if let BillingProfileError::Catalog(e) = error {
        return crate::routes::customers::catalog_error(e);
    }
    let status = match &error {
        BillingProfileError::Catalog(_) => StatusCode::INTERNAL_SERVER_ERROR,
        BillingProfileError::NotFound(_)
        | BillingProfileError::DefaultNotFound
        | BillingProfileError::AppNotFound { .. }
        | BillingProfileError::CustomerNotFound(_)
        | BillingProfileError::OverrideNotFound(_) => StatusCode::NOT_FOUND,
        BillingProfileError::Invalid(_)
        | BillingProfileError::AlreadyDeleted(_)
        | BillingProfileError::DefaultCannotBeDeleted(_)
        | BillingProfileError::DefaultCannotBeUnset(_)
        | BillingProfileError::Referenced { .. }
        | BillingProfileError::AppsDiffer => StatusCode::BAD_REQUEST,
    };
    let mut api = ApiError::new(status, error.to_string());
    if let Some(code) = error.code() {
        api.extensions = Some(json!({
            "code": code,
            "message": error.issue_message(),
            "severity": "critical",
        }));
    }
    api
}

/// Which `expand` values a request names.
fn expands(p: &Params, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
    let values: Vec<String> = p
        .all("expand")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::to_owned)
        .collect();
    if let Some(bad) = values.iter().find(|v| !allowed.contains(&v.as_str())) {
        return Err(ApiError::bad_request(format!(
            "invalid expand {bad:?}: allowed {}",
            allowed.join(", ")
        )));
    }
    Ok(values)
}

/// The apps of a profile, expanded (`BillingProfileApps`).
async fn expanded_apps(state: &AppState, refs: &ProfileAppReferences) -> Result<Value, ApiError> {
    let catalog = state.pipeline.catalog();
    let namespace = state.pipeline.namespace();
    let mut out = serde_json::Map::new();
    for (role, reference) in [
        ("tax", &refs.tax),
        ("invoicing", &refs.invoicing),
        ("payment", &refs.payment),
    ] {
        let app = catalog
            .app_by_id(namespace, &reference.id)
            .await
            .map_err(profile_error)?;
        out.insert(
            role.into(),
            serde_json::to_value(app).unwrap_or(Value::Null),
        );
    }
    Ok(Value::Object(out))
}

async fn profile_json(
    state: &AppState,
    profile: &BillingProfile,
    expand_apps: bool,
) -> Result<Value, ApiError> {
    let mut out = serde_json::to_value(profile).unwrap_or_else(|_| json!({}));
    if expand_apps && let Some(map) = out.as_object_mut() {
        map.insert("apps".into(), expanded_apps(state, &profile.apps).await?);
    }
    Ok(out)
}

pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let expand_apps = expands(&p, &["apps"])?.iter().any(|e| e == "apps");
    let order_by = match p.one("orderBy").unwrap_or("createdAt") {
        "createdAt" => ProfileOrder::CreatedAt,
        "updatedAt" => ProfileOrder::UpdatedAt,
        "default" => ProfileOrder::Default,
        "name" => ProfileOrder::Name,
        other => return Err(ApiError::bad_request(format!("invalid orderBy: {other}"))),
    };
    let filter = ProfileFilter {
        include_archived: p.bool("includeArchived")?.unwrap_or(false),
        order_by,
        // OpenMeter's handler defaults to DESC (its spec says ASC).
        descending: descending(&p, true)?,
        page: p.usize_in("page", 1, 1, usize::MAX)?,
        page_size: p.usize_in("pageSize", 100, 1, 1000)?,
    };
    let page = state
        .pipeline
        .catalog()
        .list_billing_profiles(state.pipeline.namespace(), &filter)
        .await
        .map_err(profile_error)?;
    let mut items = Vec::with_capacity(page.items.len());
    for profile in &page.items {
        items.push(profile_json(&state, profile, expand_apps).await?);
    }
    Ok(HttpResponse::Ok().json(json!({
        "totalCount": page.total_count,
        "page": filter.page,
        "pageSize": filter.page_size,
        "items": items,
    })))
}

fn descending(p: &Params, default: bool) -> Result<bool, ApiError> {
    match p.one("order") {
        None => Ok(default),
        Some("ASC") => Ok(false),
        Some("DESC") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!("invalid order: {other}"))),
    }
}

pub async fn create(
    state: web::Data<AppState>,
    body: web::Json<BillingProfileCreate>,
) -> Result<HttpResponse, ApiError> {
    let profile = state
        .pipeline
        .catalog()
        .create_billing_profile(state.pipeline.namespace(), body.into_inner())
        .await
        .map_err(profile_error)?;
    Ok(HttpResponse::Created().json(profile_json(&state, &profile, true).await?))
}

pub async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let expand_apps = expands(&p, &["apps"])?.iter().any(|e| e == "apps");
    let profile = state
        .pipeline
        .catalog()
        .get_billing_profile(state.pipeline.namespace(), &path)
        .await
        .map_err(profile_error)?
        .ok_or_else(|| profile_error(BillingProfileError::NotFound(path.to_string())))?;
    Ok(HttpResponse::Ok().json(profile_json(&state, &profile, expand_apps).await?))
}

pub async fn update(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<BillingProfileUpdate>,
) -> Result<HttpResponse, ApiError> {
    let profile = state
        .pipeline
        .catalog()
        .update_billing_profile(state.pipeline.namespace(), &path, body.into_inner())
        .await
        .map_err(profile_error)?;
    Ok(HttpResponse::Ok().json(profile_json(&state, &profile, true).await?))
}

pub async fn delete(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state
        .pipeline
        .catalog()
        .delete_billing_profile(state.pipeline.namespace(), &path)
        .await
        .map_err(profile_error)?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- customer overrides ----

/// `BillingProfileCustomerOverrideWithDetails`.
async fn override_json(
    state: &AppState,
    entry: &OverrideEntry,
    expand: &[String],
) -> Result<Value, ApiError> {
    let apps = if expand.iter().any(|e| e == "apps") {
        expanded_apps(state, &entry.profile.apps).await?
    } else {
        serde_json::to_value(&entry.profile.apps).unwrap_or(Value::Null)
    };
    let mut out = json!({
        "baseBillingProfileId": entry.profile.id,
        "customerProfile": {
            "supplier": entry.profile.supplier,
            "workflow": entry.workflow,
            "apps": apps,
        },
    });
    let Some(map) = out.as_object_mut() else {
        return Ok(out);
    };
    if let Some(o) = &entry.customer_override {
        let mut value = json!({
            "customerId": o.customer_id,
            "createdAt": o.created_at,
            "updatedAt": o.updated_at,
        });
        if let (Some(id), Some(v)) = (&o.billing_profile_id, value.as_object_mut()) {
            v.insert("billingProfileId".into(), json!(id));
        }
        map.insert("customerOverride".into(), value);
    }
    if expand.iter().any(|e| e == "customer") {
        map.insert(
            "customer".into(),
            serde_json::to_value(&entry.customer).unwrap_or(Value::Null),
        );
    }
    Ok(out)
}

pub async fn list_overrides(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let expand = expands(&p, &["apps", "customer"])?;
    let order_by = match p.one("orderBy").unwrap_or("customerId") {
        "customerId" => OverrideOrder::CustomerId,
        "customerName" => OverrideOrder::CustomerName,
        "customerKey" => OverrideOrder::CustomerKey,
        "customerPrimaryEmail" => OverrideOrder::CustomerPrimaryEmail,
        "customerCreatedAt" => OverrideOrder::CustomerCreatedAt,
        other => return Err(ApiError::bad_request(format!("invalid orderBy: {other}"))),
    };
    let text = |key: &str| p.one(key).filter(|v| !v.is_empty()).map(str::to_owned);
    let filter = OverrideFilter {
        billing_profiles: p.all("billingProfile"),
        customers_without_pinned_profile: p.bool("customersWithoutPinnedProfile")?.unwrap_or(false),
        include_all_customers: p.bool("includeAllCustomers")?.unwrap_or(true),
        customer_ids: p.all("customerId"),
        customer_name: text("customerName"),
        customer_key: text("customerKey"),
        customer_primary_email: text("customerPrimaryEmail"),
        order_by,
        descending: descending(&p, false)?,
        page: p.usize_in("page", 1, 1, usize::MAX)?,
        page_size: p.usize_in("pageSize", 100, 1, 1000)?,
    };
    let page = state
        .pipeline
        .catalog()
        .list_customer_overrides(state.pipeline.namespace(), &filter)
        .await
        .map_err(profile_error)?;
    let mut items = Vec::with_capacity(page.items.len());
    for entry in &page.items {
        items.push(override_json(&state, entry, &expand).await?);
    }
    Ok(HttpResponse::Ok().json(json!({
        "totalCount": page.total_count,
        "page": filter.page,
        "pageSize": filter.page_size,
        "items": items,
    })))
}

pub async fn get_override(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let expand = expands(&p, &["apps", "customer"])?;
    let entry = state
        .pipeline
        .catalog()
        .customer_override_details(state.pipeline.namespace(), &path)
        .await
        .map_err(profile_error)?;
    Ok(HttpResponse::Ok().json(override_json(&state, &entry, &expand).await?))
}

/// `BillingProfileCustomerOverrideCreate`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverrideInput {
    #[serde(default)]
    pub billing_profile_id: Option<String>,
}

pub async fn upsert_override(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let input: OverrideInput = super::apps::optional_body(&body)?;
    let catalog = state.pipeline.catalog();
    let namespace = state.pipeline.namespace();
    let current = catalog
        .customer_override_details(namespace, &path)
        .await
        .map_err(profile_error)?;
    // The v1 API sets no workflow overrides: keep those stored.
    let workflow = current.customer_override.and_then(|o| o.workflow);
    catalog
        .upsert_customer_override(
            namespace,
            &current.customer.id,
            input.billing_profile_id.filter(|id| !id.is_empty()),
            workflow,
        )
        .await
        .map_err(profile_error)?;
    let entry = catalog
        .customer_override_details(namespace, &current.customer.id)
        .await
        .map_err(profile_error)?;
    Ok(HttpResponse::Ok().json(override_json(&state, &entry, &[]).await?))
}

pub async fn delete_override(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let catalog = state.pipeline.catalog();
    let namespace = state.pipeline.namespace();
    let customer = catalog
        .get_customer(namespace, &path)
        .await
        .map_err(super::customers::catalog_error)?
        .ok_or_else(|| profile_error(BillingProfileError::CustomerNotFound(path.to_string())))?;
    catalog
        .delete_customer_override(namespace, &customer.id)
        .await
        .map_err(profile_error)?;
    Ok(HttpResponse::NoContent().finish())
}
