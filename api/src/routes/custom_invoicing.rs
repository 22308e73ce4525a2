//! The custom invoicing app's callbacks (`/api/v1/apps/custom-invoicing/{invoiceId}/...`): an
//! invoicing system of the user's own reports that it synced a draft, issued an invoice, or
//! learned of a payment outcome, and the invoice moves on.

use crate::error::ApiError;
use crate::routes::invoices::billing_error;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use metron_actors::billing::Action;
use metron_engine::invoicing::Trigger;
use serde_json::Value;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/v1/apps/custom-invoicing/{id}/draft/synchronized",
        web::post().to(draft_synchronized),
    )
    .route(
        "/api/v1/apps/custom-invoicing/{id}/issuing/synchronized",
        web::post().to(issuing_synchronized),
    )
    .route(
        "/api/v1/apps/custom-invoicing/{id}/payment/status",
        web::post().to(payment_status),
    );
}

async fn draft_synchronized(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Option<web::Json<Value>>,
) -> Result<HttpResponse, ApiError> {
    let body = body.map(|b| b.into_inner()).unwrap_or(Value::Null);
    let result = body.get("invoicing").cloned().unwrap_or(Value::Null);
    state
        .billing
        .custom_draft_synced(&path, &result)
        .await
        .map_err(billing_error)?;
    Ok(HttpResponse::NoContent().finish())
}

async fn issuing_synchronized(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Option<web::Json<Value>>,
) -> Result<HttpResponse, ApiError> {
    let body = body.map(|b| b.into_inner()).unwrap_or(Value::Null);
    state
        .billing
        .custom_issuing_synced(&path, &body)
        .await
        .map_err(billing_error)?;
    Ok(HttpResponse::NoContent().finish())
}

/// `CustomInvoicingUpdatePaymentStatusRequest`: `{trigger}`.
async fn payment_status(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let trigger = match body.get("trigger").and_then(Value::as_str) {
        Some("paid") => Trigger::Paid,
        Some("payment_failed") => Trigger::Failed,
        Some("payment_uncollectible") => Trigger::PaymentUncollectible,
        Some("payment_overdue") => Trigger::PaymentOverdue,
        Some("action_required") => Trigger::ActionRequired,
        Some("void") => Trigger::Void,
        Some(other) => return Err(ApiError::bad_request(format!("invalid trigger {other:?}"))),
        None => return Err(ApiError::bad_request("trigger is required")),
    };
    state
        .billing
        .act(&path, Action::App(trigger))
        .await
        .map_err(billing_error)?;
    Ok(HttpResponse::NoContent().finish())
}
