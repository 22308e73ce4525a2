//! Metron's HTTP API (OpenMeter's v1 API, path for path, for the flows implemented)
//! and the `metron` binary's pieces: configuration, errors as problem+json, routes.
//! Handlers parse and validate, then hand the work to the [`metron_actors::Pipeline`].

pub mod config;
pub mod error;
pub mod limits;
pub mod params;
pub mod routes;
pub mod state;

use actix_web::web;
use limits::JSON_BODY_BYTES_MAX;
use routes::{events, health, meters, sql};

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_BODY_BYTES_MAX)
            .error_handler(error::json_error),
    )
    .app_data(web::PayloadConfig::default().limit(limits::INGEST_BODY_BYTES_MAX))
    .route("/api/v1/events", web::post().to(events::ingest))
    .configure(routes::entitlements::configure_checks)
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(health::metrics))
    .route("/api/v1/debug/metrics", web::get().to(health::metrics))
    .route("/api/v1/events", web::get().to(events::list_v1))
    .route("/api/v2/events", web::get().to(events::list_v2))
    .route("/api/v1/meters", web::get().to(meters::list))
    .route("/api/v1/meters", web::post().to(meters::create))
    .route("/api/v1/meters/{meter}", web::get().to(meters::get))
    .route("/api/v1/meters/{meter}", web::put().to(meters::update))
    .route("/api/v1/meters/{meter}", web::delete().to(meters::delete))
    .route(
        "/api/v1/meters/{meter}/query",
        web::get().to(meters::query_get),
    )
    .route(
        "/api/v1/meters/{meter}/query",
        web::post().to(meters::query_post),
    )
    .route(
        "/api/v1/meters/{meter}/subjects",
        web::get().to(meters::subjects),
    )
    .route(
        "/api/v1/meters/{meter}/group-by/{key}/values",
        web::get().to(meters::group_by_values),
    )
    .route("/api/v1/sql", web::post().to(sql::run))
    .configure(routes::customers::configure)
    .configure(routes::subjects::configure)
    .configure(routes::features::configure)
    .configure(routes::entitlements::configure)
    .configure(routes::notifications::configure);
}

/// Any other path: a problem+json 404.
pub async fn not_found(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    use actix_web::ResponseError;
    error::ApiError::not_found(format!("no route for {} {}", req.method(), req.path()))
        .error_response()
}
