//! Features: create, list (bare array unless paged), get by id or key, archive.

use crate::error::ApiError;
use crate::params::Params;
use crate::routes::customers::{catalog_error, customer_error, feature_error};
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use metron_storage::features::FeatureCreate;
use serde_json::json;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/features", web::get().to(list))
        .route("/api/v1/features", web::post().to(create))
        .route("/api/v1/features/{feature}", web::get().to(get))
        .route("/api/v1/features/{feature}", web::delete().to(archive));
}

pub async fn create(
    state: web::Data<AppState>,
    body: web::Json<FeatureCreate>,
) -> Result<HttpResponse, ApiError> {
    let input = body.into_inner();
    let namespace = state.pipeline.namespace();
    let meter = match &input.meter_slug {
        Some(slug) => state
            .pipeline
            .catalog()
            .get_meter(namespace, slug)
            .await
            .map_err(catalog_error)?,
        None => None,
    };
    input.validate(meter.as_ref()).map_err(customer_error)?;
    let feature = state
        .pipeline
        .catalog()
        .create_feature(namespace, input)
        .await
        .map_err(feature_error)?;
    Ok(HttpResponse::Created().json(feature))
}

pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let include_archived = p.bool("includeArchived")?.unwrap_or(false);
    let slugs = p.all("meterSlug");
    let mut features = state
        .pipeline
        .catalog()
        .all_features(state.pipeline.namespace())
        .await
        .map_err(catalog_error)?;
    features.retain(|f| {
        (include_archived || f.archived_at.is_none())
            && (slugs.is_empty() || f.meter_slug.as_ref().is_some_and(|s| slugs.contains(s)))
    });
    match p.one("orderBy").unwrap_or("updatedAt") {
        "id" => features.sort_by(|a, b| a.id.cmp(&b.id)),
        "key" => features.sort_by(|a, b| (&a.key, &a.id).cmp(&(&b.key, &b.id))),
        "name" => features.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id))),
        "createdAt" => features.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id))),
        "updatedAt" => features.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id))),
        other => return Err(ApiError::bad_request(format!("invalid orderBy: {other}"))),
    }
    if p.one("order") == Some("DESC") {
        features.reverse();
    }
    if p.one("page").is_some() || p.one("pageSize").is_some() {
        let page = p.usize_in("page", 1, 1, usize::MAX)?;
        let size = p.usize_in("pageSize", 100, 1, 1000)?;
        let total = features.len();
        let items: Vec<_> = features
            .into_iter()
            .skip((page - 1).saturating_mul(size))
            .take(size)
            .collect();
        return Ok(HttpResponse::Ok().json(json!({
            "totalCount": total,
            "page": page,
            "pageSize": size,
            "items": items,
        })));
    }
    let offset = p.usize_in("offset", 0, 0, usize::MAX)?;
    let limit = p.usize_in("limit", 1000, 1, 1000)?;
    let items: Vec<_> = features.into_iter().skip(offset).take(limit).collect();
    Ok(HttpResponse::Ok().json(items))
}

pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let feature = state
        .pipeline
        .catalog()
        .get_feature(state.pipeline.namespace(), &path)
        .await
        .map_err(catalog_error)?
        .ok_or_else(|| ApiError::not_found(format!("feature {:?} not found", path.as_str())))?;
    Ok(HttpResponse::Ok().json(feature))
}

pub async fn archive(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state
        .pipeline
        .catalog()
        .archive_feature(state.pipeline.namespace(), &path)
        .await
        .map_err(feature_error)?;
    Ok(HttpResponse::NoContent().finish())
}
