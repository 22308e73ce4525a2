//! Metron's HTTP API (OpenMeter's v1 API, path for path, for the flows implemented)
//! and the `metron` binary's pieces: configuration, errors as problem+json, routes.
//! Handlers parse and validate, then hand the work to the [`metron_actors::Pipeline`].

pub mod config;
pub mod error;
pub mod fast;
pub mod limits;
pub mod params;
pub mod routes;
pub mod standby;
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
    // First: value checks matched by bytes, before any route's regular expression.
    .service(fast::ValueChecks)
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
    .route(sql::TABLES_PATH, web::post().to(sql::tables))
    .configure(routes::customers::configure)
    .configure(routes::subjects::configure)
    .configure(routes::features::configure)
    .configure(routes::entitlements::configure)
    .configure(routes::notifications::configure)
    .configure(routes::apps::configure)
    .configure(routes::billing_profiles::configure)
    .configure(routes::plans::configure)
    .configure(routes::subscriptions::configure)
    .configure(routes::subscription_addons::configure)
    .configure(routes::invoices::configure)
    .configure(routes::stripe_webhook::configure)
    .configure(routes::custom_invoicing::configure)
    .configure(routes::info::configure);
}

/// Every path [`configure`] serves, with its methods, as registered there and in the
/// `configure` functions of [`routes`]. actix registers one resource per path and method,
/// so a request with a method a path does not serve falls through to the default service,
/// [`no_route`], which answers 405 with `Allow` from this table (404 for unknown paths).
/// The test `served_table_matches_the_routes` checks every entry against the routes.
pub const SERVED: &[(&str, &[&str])] = &[
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/metrics", &["GET"]),
    ("/api/v1/debug/metrics", &["GET"]),
    ("/api/v1/events", &["GET", "POST"]),
    ("/api/v2/events", &["GET"]),
    ("/api/v1/meters", &["GET", "POST"]),
    ("/api/v1/meters/{meter}", &["GET", "PUT", "DELETE"]),
    ("/api/v1/meters/{meter}/query", &["GET", "POST"]),
    ("/api/v1/meters/{meter}/subjects", &["GET"]),
    ("/api/v1/meters/{meter}/group-by/{key}/values", &["GET"]),
    ("/api/v1/sql", &["POST"]),
    ("/api/v1/customers", &["GET", "POST"]),
    ("/api/v1/customers/{customer}", &["GET", "PUT", "DELETE"]),
    ("/api/v1/customers/{owner}/access", &["GET"]),
    (
        "/api/v1/customers/{owner}/entitlements/{ent}/value",
        &["GET"],
    ),
    ("/api/v1/subjects", &["GET", "POST"]),
    ("/api/v1/subjects/{subject}", &["GET", "DELETE"]),
    ("/api/v1/features", &["GET", "POST"]),
    ("/api/v1/features/{feature}", &["GET", "DELETE"]),
    ("/api/v2/customers/{owner}/entitlements", &["GET", "POST"]),
    (
        "/api/v2/customers/{owner}/entitlements/{ent}",
        &["GET", "DELETE"],
    ),
    (
        "/api/v2/customers/{owner}/entitlements/{ent}/override",
        &["PUT"],
    ),
    (
        "/api/v2/customers/{owner}/entitlements/{ent}/grants",
        &["GET", "POST"],
    ),
    (
        "/api/v2/customers/{owner}/entitlements/{ent}/value",
        &["GET"],
    ),
    (
        "/api/v2/customers/{owner}/entitlements/{ent}/history",
        &["GET"],
    ),
    (
        "/api/v2/customers/{owner}/entitlements/{ent}/reset",
        &["POST"],
    ),
    ("/api/v1/subjects/{owner}/entitlements", &["GET", "POST"]),
    (
        "/api/v1/subjects/{owner}/entitlements/{ent}",
        &["GET", "DELETE"],
    ),
    (
        "/api/v1/subjects/{owner}/entitlements/{ent}/override",
        &["PUT"],
    ),
    (
        "/api/v1/subjects/{owner}/entitlements/{ent}/grants",
        &["GET", "POST"],
    ),
    (
        "/api/v1/subjects/{owner}/entitlements/{ent}/value",
        &["GET"],
    ),
    (
        "/api/v1/subjects/{owner}/entitlements/{ent}/history",
        &["GET"],
    ),
    (
        "/api/v1/subjects/{owner}/entitlements/{ent}/reset",
        &["POST"],
    ),
    ("/api/v1/entitlements", &["GET"]),
    ("/api/v1/entitlements/{id}", &["GET"]),
    ("/api/v2/entitlements", &["GET"]),
    ("/api/v2/entitlements/{id}", &["GET"]),
    ("/api/v1/grants", &["GET"]),
    ("/api/v1/grants/{grant}", &["DELETE"]),
    ("/api/v2/grants", &["GET"]),
    ("/api/v1/notification/channels", &["GET", "POST"]),
    (
        "/api/v1/notification/channels/{id}",
        &["GET", "PUT", "DELETE"],
    ),
    ("/api/v1/notification/rules", &["GET", "POST"]),
    ("/api/v1/notification/rules/{id}", &["GET", "PUT", "DELETE"]),
    ("/api/v1/notification/rules/{id}/test", &["POST"]),
    ("/api/v1/notification/events", &["GET"]),
    ("/api/v1/notification/events/{id}", &["GET"]),
    ("/api/v1/notification/events/{id}/resend", &["POST"]),
    ("/api/v1/apps", &["GET"]),
    ("/api/v1/apps/{id}", &["GET", "PUT", "DELETE"]),
    ("/api/v1/apps/{id}/stripe/api-key", &["PUT"]),
    ("/api/v1/marketplace/listings", &["GET"]),
    ("/api/v1/marketplace/listings/{type}", &["GET"]),
    ("/api/v1/marketplace/listings/{type}/install", &["POST"]),
    (
        "/api/v1/marketplace/listings/{type}/install/apikey",
        &["POST"],
    ),
    ("/api/v1/customers/{customer}/apps", &["GET", "PUT"]),
    ("/api/v1/customers/{customer}/apps/{app}", &["DELETE"]),
    ("/api/v1/customers/{customer}/stripe", &["GET", "PUT"]),
    ("/api/v1/customers/{customer}/stripe/portal", &["POST"]),
    ("/api/v1/stripe/checkout/sessions", &["POST"]),
    ("/api/v1/billing/profiles", &["GET", "POST"]),
    ("/api/v1/billing/profiles/{id}", &["GET", "PUT", "DELETE"]),
    ("/api/v1/billing/customers", &["GET"]),
    (
        "/api/v1/billing/customers/{customer}",
        &["GET", "PUT", "DELETE"],
    ),
    ("/api/v1/plans", &["GET", "POST"]),
    ("/api/v1/plans/{plan}", &["GET", "PUT", "DELETE"]),
    ("/api/v1/plans/{plan}/publish", &["POST"]),
    ("/api/v1/plans/{plan}/archive", &["POST"]),
    ("/api/v1/plans/{plan}/next", &["POST"]),
    ("/api/v1/plans/{plan}/addons", &["GET", "POST"]),
    (
        "/api/v1/plans/{plan}/addons/{addon}",
        &["GET", "PUT", "DELETE"],
    ),
    ("/api/v1/addons", &["GET", "POST"]),
    ("/api/v1/addons/{addon}", &["GET", "PUT", "DELETE"]),
    ("/api/v1/addons/{addon}/publish", &["POST"]),
    ("/api/v1/addons/{addon}/archive", &["POST"]),
    ("/api/v1/subscriptions", &["POST"]),
    ("/api/v1/subscriptions/{id}", &["GET", "PATCH", "DELETE"]),
    ("/api/v1/subscriptions/{id}/addons", &["GET", "POST"]),
    (
        "/api/v1/subscriptions/{id}/addons/{addon}",
        &["GET", "PATCH"],
    ),
    ("/api/v1/subscriptions/{id}/cancel", &["POST"]),
    (
        "/api/v1/subscriptions/{id}/unschedule-cancelation",
        &["POST"],
    ),
    ("/api/v1/subscriptions/{id}/restore", &["POST"]),
    ("/api/v1/subscriptions/{id}/change", &["POST"]),
    ("/api/v1/subscriptions/{id}/migrate", &["POST"]),
    ("/api/v1/customers/{customer}/subscriptions", &["GET"]),
    ("/api/v1/billing/invoices", &["GET"]),
    ("/api/v1/billing/invoices/invoice", &["POST"]),
    ("/api/v1/billing/invoices/{id}", &["GET", "PUT", "DELETE"]),
    ("/api/v1/billing/invoices/{id}/advance", &["POST"]),
    ("/api/v1/billing/invoices/{id}/approve", &["POST"]),
    ("/api/v1/billing/invoices/{id}/retry", &["POST"]),
    (
        "/api/v1/billing/invoices/{id}/snapshot-quantities",
        &["POST"],
    ),
    ("/api/v1/billing/invoices/{id}/void", &["POST"]),
    ("/api/v1/billing/invoices/{id}/taxes/recalculate", &["POST"]),
    (
        "/api/v1/billing/customers/{customer}/invoices/pending-lines",
        &["POST"],
    ),
    (
        "/api/v1/billing/customers/{customer}/invoices/simulate",
        &["POST"],
    ),
    ("/api/v1/apps/{id}/stripe/webhook", &["POST"]),
    (
        "/api/v1/apps/custom-invoicing/{id}/draft/synchronized",
        &["POST"],
    ),
    (
        "/api/v1/apps/custom-invoicing/{id}/issuing/synchronized",
        &["POST"],
    ),
    (
        "/api/v1/apps/custom-invoicing/{id}/payment/status",
        &["POST"],
    ),
    ("/api/v1/info/currencies", &["GET"]),
    ("/api/v1/info/progress/{id}", &["GET"]),
];

/// The methods [`SERVED`] lists for a path (none: an unknown path).
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    use actix_web::dev::ResourceDef;
    use std::sync::OnceLock;
    static TABLE: OnceLock<Vec<(ResourceDef, &'static [&'static str])>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        SERVED
            .iter()
            .map(|(pattern, methods)| (ResourceDef::new(*pattern), *methods))
            .collect()
    });
    let mut allowed: Vec<&'static str> = Vec::new();
    // A path that a static pattern names (`/api/v1/billing/invoices/invoice`) is that
    // resource, not an id of a dynamic one (`/api/v1/billing/invoices/{id}`), as actix
    // routes it (static resources are registered first).
    let exact = table
        .iter()
        .any(|(def, _)| def.pattern() == Some(path) && def.is_match(path));
    for (def, methods) in table {
        if def.is_match(path) && (!exact || def.pattern() == Some(path)) {
            for method in *methods {
                if !allowed.contains(method) {
                    allowed.push(method);
                }
            }
        }
    }
    allowed
}

/// The default service: a path that is served with other methods answers a problem+json
/// 405 with `Allow`; any other path a problem+json 404.
pub async fn no_route(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    use actix_web::ResponseError;
    use actix_web::http::{StatusCode, header};
    let allowed = allowed_methods(req.path());
    if allowed.is_empty() {
        return error::ApiError::not_found(format!("no route for {} {}", req.method(), req.path()))
            .error_response();
    }
    let allow = allowed.join(", ");
    let mut response = error::ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} is not allowed on {}: allowed {allow}",
            req.method(),
            req.path()
        ),
    )
    .error_response();
    if let Ok(value) = header::HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::{Method, StatusCode, header};
    use actix_web::{App, test};

    const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

    /// A concrete path for a pattern: every `{param}` becomes `x1`.
    fn sample(pattern: &str) -> String {
        pattern
            .split('/')
            .map(|s| if s.starts_with('{') { "x1" } else { s })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[actix_web::test]
    async fn served_table_matches_the_routes() {
        // No app data: a matched handler fails extracting its state (500) or answers
        // without it, but never through `no_route`; the rest must be `no_route`'s 405.
        let app = test::init_service(
            App::new()
                .configure(configure)
                .default_service(web::to(no_route)),
        )
        .await;
        for (pattern, served) in SERVED {
            let path = sample(pattern);
            for method in METHODS {
                let req = test::TestRequest::default()
                    .method(Method::from_bytes(method.as_bytes()).expect("method"))
                    .uri(&path)
                    .to_request();
                let resp = test::call_service(&app, req).await;
                if served.contains(&method) {
                    assert!(
                        ![StatusCode::METHOD_NOT_ALLOWED, StatusCode::NOT_FOUND]
                            .contains(&resp.status()),
                        "{method} {path} is in SERVED but not routed: {}",
                        resp.status()
                    );
                } else {
                    assert_eq!(
                        resp.status(),
                        StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {path} is routed but not in SERVED"
                    );
                    assert_eq!(
                        resp.headers()
                            .get(header::ALLOW)
                            .and_then(|v| v.to_str().ok()),
                        Some(served.join(", ").as_str()),
                        "Allow of {method} {path}"
                    );
                    assert_eq!(
                        resp.headers()
                            .get(header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok()),
                        Some("application/problem+json"),
                        "Content-Type of {method} {path}"
                    );
                }
            }
        }
    }

    #[actix_web::test]
    async fn unknown_paths_are_404() {
        let app = test::init_service(
            App::new()
                .configure(configure)
                .default_service(web::to(no_route)),
        )
        .await;
        for path in [
            "/nope",
            "/api/v1/meters/x/nope",
            "/api/v1/customers/x/nope",
            "/api/v3/meters",
        ] {
            for method in ["GET", "POST"] {
                let req = test::TestRequest::default()
                    .method(Method::from_bytes(method.as_bytes()).expect("method"))
                    .uri(path)
                    .to_request();
                let resp = test::call_service(&app, req).await;
                assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{method} {path}");
                assert!(resp.headers().get(header::ALLOW).is_none());
            }
        }
    }
}
