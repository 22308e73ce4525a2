//! `/healthz`, `/readyz`, `/metrics`.

use crate::state::AppState;
use actix_web::{HttpResponse, web};

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Ready once the pipeline runs: the server only listens after it started.
pub async fn readyz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain")
        .body("ready\n")
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.pipeline.metrics_text() + &state.entitlements.metrics_text())
}
