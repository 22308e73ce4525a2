//! Errors become HTTP statuses and `application/problem+json` bodies here, shaped
//! like OpenMeter's: `{"type","title","status","detail","instance","extensions"?}`.

use crate::limits::RETRY_AFTER_SECONDS;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use metron_actors::pipeline::Error as PipelineError;
use serde_json::{Value, json};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    pub extensions: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            extensions: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 503 + `Retry-After`: the server is replaying its log (or stopping).
    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is replaying its event log and is not ready to answer reads yet",
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.detail)
    }
}

static REQUESTS: AtomicU64 = AtomicU64::new(0);

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let request = REQUESTS.fetch_add(1, Ordering::Relaxed);
        // A 500's detail is blanked, as OpenMeter does; the log keeps it. A 503 says
        // why (not ready, checkpoints failing): the client can do something about it.
        let detail = if self.status.is_server_error()
            && self.status != StatusCode::SERVICE_UNAVAILABLE
        {
            tracing::error!(status = self.status.as_u16(), detail = %self.detail, "Answered a server error.");
            String::new()
        } else {
            self.detail.clone()
        };
        let mut body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": detail,
            "instance": format!("urn:request:{:016x}", request),
        });
        if let (Some(ext), Some(map)) = (&self.extensions, body.as_object_mut()) {
            map.insert("extensions".into(), ext.clone());
        }
        let mut response = HttpResponse::build(self.status);
        response.content_type("application/problem+json");
        if self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status == StatusCode::SERVICE_UNAVAILABLE
        {
            response.insert_header(("Retry-After", RETRY_AFTER_SECONDS.to_string()));
        }
        response.body(body.to_string())
    }
}

impl From<PipelineError> for ApiError {
    fn from(error: PipelineError) -> Self {
        if let PipelineError::Catalog(e) = error {
            return crate::routes::customers::catalog_error(e);
        }
        Self::new(pipeline_status(&error), error.to_string())
    }
}

/// The status of a pipeline error (a partly stored request: its cause's).
fn pipeline_status(error: &PipelineError) -> StatusCode {
    match error {
        PipelineError::PartlyStored { cause, .. } => pipeline_status(cause),
        PipelineError::Catalog(e) => crate::routes::customers::catalog_status(e),
        PipelineError::Overloaded { .. } | PipelineError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
        PipelineError::Meter(_) | PipelineError::Sql(_) | PipelineError::QueryTooLarge(_) => {
            StatusCode::BAD_REQUEST
        }
        PipelineError::MeterNotFound(_) => StatusCode::NOT_FOUND,
        PipelineError::MeterExists(_) => StatusCode::CONFLICT,
        PipelineError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
        PipelineError::Stopped
        | PipelineError::NotReady
        | PipelineError::Unavailable(_)
        | PipelineError::Lease(_) => StatusCode::SERVICE_UNAVAILABLE,
        PipelineError::EventTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        PipelineError::Stream(_) | PipelineError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Turns actix's own extractor errors (bad JSON, too large) into problem+json.
pub fn json_error(
    error: actix_web::error::JsonPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    let status = match &error {
        actix_web::error::JsonPayloadError::Overflow { .. }
        | actix_web::error::JsonPayloadError::OverflowKnownLength { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, error.to_string()).into()
}
