//! Lookup information: `GET /api/v1/info/currencies` and `GET /api/v1/info/progress/{id}`.
//!
//! The currencies are [`metron_engine::billing::CURRENCIES`], in OpenMeter's order, as a bare
//! array of `Currency{code, name, symbol, subunits}`.
//!
//! A progress is what OpenMeter's progress manager records for a long-running query started
//! with a `clientId` (its ClickHouse connector counts the rows it scans, in Redis, for five
//! minutes); with the progress manager disabled, its default, every id is a 404. Metron runs no
//! operation that records progress, so every id is unknown: 404 with OpenMeter's detail.

use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use metron_engine::billing::CURRENCIES;
use tracing::debug;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/info/currencies", web::get().to(currencies))
        .route("/api/v1/info/progress/{id}", web::get().to(progress));
}

/// `listCurrencies`: every currency Metron can bill in.
pub async fn currencies() -> HttpResponse {
    HttpResponse::Ok().json(CURRENCIES)
}

/// `getProgress`: progress ids are scoped to a namespace, as in OpenMeter; no operation
/// records progress, so no id is known in any.
pub async fn progress(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let namespace = state.pipeline.namespace();
    debug!(namespace, id, "Answered an unknown progress id.");
    Err(ApiError::not_found(format!(
        "progress not found for id: {id}"
    )))
}
