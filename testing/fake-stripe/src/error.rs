//! Stripe's error shape: an HTTP status and `{"error":{"type","code","message","param"}}`.

use crate::spec::Invalid;
use serde_json::{Value, json};

/// One Stripe API error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {kind} {code:?}: {message}")]
pub struct ApiError {
    pub status: u16,
    /// `invalid_request_error`, `api_error`, `card_error` or `idempotency_error`.
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub message: String,
    pub param: Option<String>,
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    /// A 400 `invalid_request_error`.
    pub fn invalid(code: Option<&'static str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param: None,
        }
    }

    /// A 404 `resource_missing` for `what` (`invoice`, `customer`, …) named by `id`.
    pub fn missing(what: &str, id: &str, param: &str) -> ApiError {
        ApiError {
            status: 404,
            kind: "invalid_request_error",
            code: Some("resource_missing"),
            message: format!("No such {what}: '{id}'"),
            param: Some(param.to_owned()),
        }
    }

    /// A 400 for a lifecycle step the invoice's status does not allow.
    pub fn transition(id: &str, status: &str, action: &str) -> ApiError {
        ApiError::invalid(
            None,
            format!("You can't {action} invoice {id} because its status is {status}."),
        )
    }

    /// An `api_error` (injected 5xx).
    pub fn api(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind: "api_error",
            code: None,
            message: message.into(),
            param: None,
        }
    }

    pub fn with_param(mut self, param: &str) -> ApiError {
        self.param = Some(param.to_owned());
        self
    }

    /// The JSON body Stripe sends.
    pub fn body(&self) -> Value {
        let mut error = json!({"type": self.kind, "message": self.message});
        if let Some(code) = self.code {
            error["code"] = json!(code);
            error["doc_url"] = json!(format!(
                "https://stripe.com/docs/error-codes/{}",
                code.replace('_', "-")
            ));
        }
        if let Some(param) = &self.param {
            error["param"] = json!(param);
        }
        json!({ "error": error })
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> ApiError {
        let status = if invalid.code == "resource_missing" {
            404
        } else {
            400
        };
        ApiError {
            status,
            kind: "invalid_request_error",
            code: Some(invalid.code),
            message: invalid.message,
            param: (!invalid.param.is_empty()).then_some(invalid.param),
        }
    }
}
