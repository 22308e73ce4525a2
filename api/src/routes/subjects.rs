//! Subjects (deprecated in OpenMeter, still in its SDKs): upsert an array, list,
//! get and delete by id or key. Any subject string can be ingested without one.

use crate::error::ApiError;
use crate::routes::customers::{catalog_error, customer_error};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use metron_storage::customers::SubjectUpsert;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/subjects", web::get().to(list))
        .route("/api/v1/subjects", web::post().to(upsert))
        .route("/api/v1/subjects/{subject}", web::get().to(get))
        .route("/api/v1/subjects/{subject}", web::delete().to(delete));
}

pub async fn upsert(
    state: web::Data<AppState>,
    body: web::Json<Vec<SubjectUpsert>>,
) -> Result<HttpResponse, ApiError> {
    let subjects = state
        .pipeline
        .catalog()
        .upsert_subjects(state.pipeline.namespace(), body.into_inner())
        .await
        .map_err(customer_error)?;
    Ok(HttpResponse::Ok().json(subjects))
}

pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let subjects = state
        .pipeline
        .catalog()
        .list_subjects(state.pipeline.namespace())
        .await
        .map_err(catalog_error)?;
    Ok(HttpResponse::Ok().json(subjects))
}

pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let subject = state
        .pipeline
        .catalog()
        .get_subject(state.pipeline.namespace(), &path)
        .await
        .map_err(catalog_error)?
        .ok_or_else(|| ApiError::not_found(format!("subject {:?} not found", path.as_str())))?;
    Ok(HttpResponse::Ok().json(subject))
}

pub async fn delete(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let deleted = state
        .pipeline
        .catalog()
        .delete_subject(state.pipeline.namespace(), &path)
        .await
        .map_err(catalog_error)?;
    if !deleted {
        return Err(ApiError::not_found(format!(
            "subject {:?} not found",
            path.as_str()
        )));
    }
    Ok(HttpResponse::NoContent().finish())
}
