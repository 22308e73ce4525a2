//! Stripe's webhook (`POST /api/v1/apps/{id}/stripe/webhook`): the `Stripe-Signature` is
//! checked against the app's endpoint secret (HMAC-SHA256, any `v1` signature, 5 minutes of
//! tolerance); a bad signature is a 400 and changes nothing. A verified event moves the
//! invoice it names (see `metron_actors::billing::webhook`), once per event id.

use crate::error::ApiError;
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use metron_connectors::stripe::webhook::{TOLERANCE_DEFAULT, verify};
use metron_storage::apps::{AppType, SECRET_STRIPE_WEBHOOK_SECRET};
use serde_json::json;

/// Largest webhook body accepted (OpenMeter's limit); a larger one is a 413.
pub const WEBHOOK_BODY_BYTES_MAX: usize = 512 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/apps/{id}/stripe/webhook")
            .app_data(web::PayloadConfig::new(WEBHOOK_BODY_BYTES_MAX))
            .route(web::post().to(webhook))
            .default_service(web::to(crate::no_route)),
    );
}

async fn webhook(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ns = state.pipeline.namespace();
    let catalog = state.pipeline.catalog();
    let app = catalog
        .get_app(ns, &path)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .filter(|a| a.app_type() == AppType::Stripe)
        .ok_or_else(|| ApiError::not_found(format!("stripe app {:?} not found", path.as_str())))?;
    let secret = catalog
        .app_secret(&app.id, SECRET_STRIPE_WEBHOOK_SECRET)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .ok_or_else(|| ApiError::bad_request("the app has no webhook secret"))?;
    let header = req
        .headers()
        .get("Stripe-Signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("missing Stripe-Signature header"))?;
    let event = verify(
        &body,
        header,
        &secret,
        TOLERANCE_DEFAULT,
        chrono::Utc::now(),
    )
    .map_err(|e| ApiError::bad_request(format!("invalid webhook: {e}")))?;
    let outcome = state
        .billing
        .stripe_event(&app, &event)
        .await
        .map_err(crate::routes::invoices::billing_error)?;
    let mut answer = json!({"namespaceId": ns, "appId": app.id});
    if let Some(map) = answer.as_object_mut() {
        if let Some(c) = outcome.customer_id {
            map.insert("customerId".into(), json!(c));
        }
        if let Some(m) = outcome.message {
            map.insert("message".into(), json!(m));
        }
    }
    Ok(HttpResponse::Created().json(answer))
}
