//! `/healthz`, `/readyz`, `/metrics`.

use crate::state::AppState;
use actix_web::{HttpResponse, web};

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Ready once every partition has replayed the log as it was at the start, and until a
/// fatal error: 503 with the reason otherwise.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let health = state.pipeline.health();
    if health.is_ready() {
        return HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n");
    }
    let reason = match health.fatal_reason() {
        Some(reason) => format!("stopping: {reason}\n"),
        None => "replaying the event log\n".to_owned(),
    };
    HttpResponse::ServiceUnavailable()
        .insert_header((
            "Retry-After",
            crate::limits::RETRY_AFTER_SECONDS.to_string(),
        ))
        .content_type("text/plain")
        .body(reason)
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(
            state.pipeline.metrics_text()
                + &state.entitlements.metrics_text()
                + &crate::standby::standby_gauge(false),
        )
}

/// `PUT /debug/failpoints` (only when the server started with `METRON_FAILPOINTS`):
/// the body is `name=action;...`, as in [`metron_engine::failpoint::configure`].
pub async fn set_failpoints(body: String) -> HttpResponse {
    match metron_engine::failpoint::configure(&body) {
        Ok(()) => HttpResponse::Ok()
            .content_type("text/plain")
            .body(metron_engine::failpoint::describe() + "\n"),
        Err(error) => HttpResponse::BadRequest()
            .content_type("text/plain")
            .body(error.to_string() + "\n"),
    }
}
