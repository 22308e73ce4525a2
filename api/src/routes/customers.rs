//! Customers: CRUD and listing (`/api/v1/customers`). Every change reloads the
//! pipeline's usage-attribution index before it is answered.

use crate::error::ApiError;
use crate::params::Params;
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use metron_storage::catalog;
use metron_storage::customers::{CustomerError, CustomerFilter, CustomerInput, CustomerOrder};
use metron_storage::features::FeatureError;
use serde_json::json;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/customers", web::get().to(list))
        .route("/api/v1/customers", web::post().to(create))
        .route("/api/v1/customers/{customer}", web::get().to(get))
        .route("/api/v1/customers/{customer}", web::put().to(replace))
        .route("/api/v1/customers/{customer}", web::delete().to(delete));
}

pub(crate) fn catalog_error(error: catalog::Error) -> ApiError {
    ApiError::new(catalog_status(&error), refused_detail(&error))
}

/// 400 for a value the database refused ([`catalog::Error::is_refused_value`]), 503 for a
/// write of a node whose leases another took ([`catalog::Error::is_fenced`]: the client's
/// retry reaches the new holder), else 500.
pub(crate) fn catalog_status(error: &catalog::Error) -> StatusCode {
    if error.is_refused_value() {
        StatusCode::BAD_REQUEST
    } else if error.is_fenced() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// The problem detail of a catalog error: what is wrong with the request when the database
/// refused a value, else the error (blanked in the answer for a 500).
pub(crate) fn refused_detail(error: &catalog::Error) -> String {
    if error.is_refused_value() {
        REFUSED_VALUE.to_owned()
    } else {
        error.to_string()
    }
}

/// The detail of a 400 for a value the database refused.
pub(crate) const REFUSED_VALUE: &str = "text fields may not contain NUL (U+0000) characters";

pub(crate) fn customer_error(error: CustomerError) -> ApiError {
    if let CustomerError::Catalog(e) = error {
        return catalog_error(e);
    }
    let status = match &error {
        CustomerError::Catalog(e) => catalog_status(e),
        CustomerError::Invalid(_) => StatusCode::BAD_REQUEST,
        CustomerError::NotFound(_) => StatusCode::NOT_FOUND,
        CustomerError::KeyTaken { .. }
        | CustomerError::KeyIsId { .. }
        | CustomerError::SubjectTaken { .. } => StatusCode::CONFLICT,
    };
    ApiError::new(status, error.to_string())
}

pub(crate) fn feature_error(error: FeatureError) -> ApiError {
    if let FeatureError::Catalog(e) = error {
        return catalog_error(e);
    }
    let status = match &error {
        FeatureError::Catalog(e) => catalog_status(e),
        FeatureError::NotFound(_) => StatusCode::NOT_FOUND,
        FeatureError::KeyTaken { .. } => StatusCode::CONFLICT,
    };
    ApiError::new(status, error.to_string())
}

/// Updates the usage-attribution index for one customer (and its live actor).
async fn reattribute(state: &AppState, customer_id: &str) -> Result<(), ApiError> {
    let pipeline = &state.pipeline;
    pipeline
        .attribution()
        .update(pipeline.catalog(), pipeline.namespace(), customer_id)
        .await
        .map_err(catalog_error)
}

fn not_found(id_or_key: &str) -> ApiError {
    ApiError::not_found(format!("customer {id_or_key:?} not found"))
}

pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let order_by = match p.one("orderBy").unwrap_or("name") {
        "id" => CustomerOrder::Id,
        "key" => CustomerOrder::Key,
        "name" => CustomerOrder::Name,
        "primaryEmail" => CustomerOrder::PrimaryEmail,
        "createdAt" => CustomerOrder::CreatedAt,
        other => return Err(ApiError::bad_request(format!("invalid orderBy: {other}"))),
    };
    let descending = match p.one("order").unwrap_or("ASC") {
        "ASC" => false,
        "DESC" => true,
        other => return Err(ApiError::bad_request(format!("invalid order: {other}"))),
    };
    let text = |key: &str| p.one(key).filter(|v| !v.is_empty()).map(str::to_owned);
    let filter = CustomerFilter {
        include_deleted: p.bool("includeDeleted")?.unwrap_or(false),
        key: text("key"),
        name: text("name"),
        primary_email: text("primaryEmail"),
        subject: text("subject"),
        order_by,
        descending,
        page: p.usize_in("page", 1, 1, usize::MAX)?,
        page_size: p.usize_in("pageSize", 100, 1, 1000)?,
    };
    let page = state
        .pipeline
        .catalog()
        .list_customers(state.pipeline.namespace(), &filter)
        .await
        .map_err(catalog_error)?;
    Ok(HttpResponse::Ok().json(json!({
        "totalCount": page.total_count,
        "page": filter.page,
        "pageSize": filter.page_size,
        "items": page.items,
    })))
}

pub async fn create(
    state: web::Data<AppState>,
    body: web::Json<CustomerInput>,
) -> Result<HttpResponse, ApiError> {
    let customer = state
        .pipeline
        .catalog()
        .create_customer(state.pipeline.namespace(), body.into_inner())
        .await
        .map_err(customer_error)?;
    reattribute(&state, &customer.id).await?;
    Ok(HttpResponse::Created().json(customer))
}

pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let customer = state
        .pipeline
        .catalog()
        .get_customer(state.pipeline.namespace(), &path)
        .await
        .map_err(catalog_error)?
        .ok_or_else(|| not_found(&path))?;
    Ok(HttpResponse::Ok().json(customer))
}

pub async fn replace(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<CustomerInput>,
) -> Result<HttpResponse, ApiError> {
    let customer = state
        .pipeline
        .catalog()
        .replace_customer(state.pipeline.namespace(), &path, body.into_inner())
        .await
        .map_err(customer_error)?;
    reattribute(&state, &customer.id).await?;
    Ok(HttpResponse::Ok().json(customer))
}

pub async fn delete(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // As OpenMeter's subscription validator: a customer with a subscription active now
    // cannot be deleted.
    if let Some(existing) = state
        .pipeline
        .catalog()
        .get_customer(state.pipeline.namespace(), &path)
        .await
        .map_err(catalog_error)?
    {
        let now = chrono::Utc::now();
        let active = state
            .pipeline
            .catalog()
            .customer_subscriptions(state.pipeline.namespace(), &existing.id)
            .await
            .map_err(crate::routes::subscriptions::subscription_error)?
            .into_iter()
            .any(|s| s.active_from <= now && s.active_to.is_none_or(|to| to > now));
        if active {
            return Err(ApiError::bad_request(format!(
                "customer {} still have active subscriptions, please cancel them before deleting the customer",
                existing.id
            )));
        }
    }
    let customer = state
        .pipeline
        .catalog()
        .delete_customer(state.pipeline.namespace(), &path)
        .await
        .map_err(customer_error)?;
    reattribute(&state, &customer.id).await?;
    Ok(HttpResponse::NoContent().finish())
}
