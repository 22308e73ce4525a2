//! A thin, blocking, typed client of exactly the Stripe endpoints in the contract.
//!
//! Every request pins `Stripe-Version`, authenticates with `Authorization: Bearer` and sends
//! form-encoded parameters ([`Form`]). A call is retried with exponential backoff and jitter on
//! what stripe-go retries (contract §1.1): connection errors and timeouts, 409, 429 with
//! `code=lock_timeout`, 5xx, or whatever `Stripe-Should-Retry` says, which always wins. Every
//! retry of a write carries the caller's `Idempotency-Key`, so Stripe applies it at most once.
//! Blocking (ureq): callers run it in `tokio::task::spawn_blocking`.

use super::config::{
    API_VERSION, IDEMPOTENCY_KEY_BYTES_MAX, PAGE_LIMIT, PAGES_MAX, RESPONSE_BYTES_MAX,
    RETRIES_MAX_LIMIT, StripeConfig,
};
use super::form::{Form, Value, escape_segment};
use super::types::{
    Account, CheckoutSession, CheckoutSessionCreate, Customer, CustomerCreate, Deleted, ErrorBody,
    Invoice, InvoiceCreate, InvoiceItem, InvoiceItemCreate, InvoiceItemUpdate, InvoiceStatus,
    InvoiceUpdate, LineItem, List, PaymentMethod, PortalSession, PortalSessionCreate,
    WebhookEndpoint, WebhookEndpointCreate,
};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Stripe config is invalid: {reason}")]
    Config { reason: String },
    #[error(
        "an idempotency key is {bytes} bytes long; Stripe takes 1 to {IDEMPOTENCY_KEY_BYTES_MAX}"
    )]
    IdempotencyKey { bytes: usize },
    /// Stripe answered with an error object (any status but 401).
    #[error(
        "Stripe answered {status} ({kind}, code {code:?}, param {param:?}, request {request_id:?}): {message}"
    )]
    Api {
        status: u16,
        /// The error's `type`: `invalid_request_error`, `api_error`, `card_error`, `idempotency_error`.
        kind: String,
        code: Option<String>,
        message: String,
        param: Option<String>,
        request_id: Option<String>,
        /// The `Stripe-Should-Retry` header, when Stripe sent one.
        should_retry: Option<bool>,
    },
    /// A 5xx that Stripe replayed from the idempotency key's cache (`Idempotent-Replayed`):
    /// Stripe keeps the answer of a request that started executing, a 500 included, and gives
    /// it to every retry under that key for 24 hours. `original_request` is the first
    /// request's id (`Original-Request`).
    #[error(
        "Stripe replayed the {status} kept for the idempotency key (first request {original_request:?}): {message}"
    )]
    ReplayedFailure {
        status: u16,
        original_request: String,
        message: String,
    },
    /// 401: the key is wrong, revoked or missing.
    #[error("Stripe refused the API key (request {request_id:?}): {message}")]
    Unauthorized {
        message: String,
        request_id: Option<String>,
    },
    /// No complete answer: refused or dropped connection, a broken body. Retryable.
    #[error("no complete answer from Stripe to {method} {path}: {message}")]
    Transport {
        method: &'static str,
        path: String,
        message: String,
    },
    #[error("Stripe did not answer {method} {path} within {timeout:?}")]
    Timeout {
        method: &'static str,
        path: String,
        timeout: Duration,
    },
    /// The request could not be made at all (a bad URL, TLS setup). Not retryable.
    #[error("{method} {path} could not be sent: {message}")]
    Request {
        method: &'static str,
        path: String,
        message: String,
    },
    #[error("Stripe's {status} answer to {method} {path} could not be read: {message}")]
    Decode {
        method: &'static str,
        path: String,
        status: u16,
        message: String,
    },
    #[error("the list at {path} still had more after {pages} pages")]
    Endless { path: String, pages: u32 },
}

impl Error {
    /// Whether the same request (same idempotency key) may be sent again, by stripe-go's rule:
    /// `Stripe-Should-Retry` decides when present; otherwise 409, 429 with `lock_timeout`, 5xx,
    /// connection errors and timeouts are retried, nothing else. A 5xx replayed from the key's
    /// cache never is: the same key gets the same answer.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api {
                status,
                code,
                should_retry,
                ..
            } => should_retry.unwrap_or_else(|| {
                *status == 409
                    || (*status == 429 && code.as_deref() == Some("lock_timeout"))
                    || *status >= 500
            }),
            Self::Transport { .. } | Self::Timeout { .. } => true,
            _ => false,
        }
    }

    /// The first request's id when this is a 5xx Stripe replayed from its idempotency cache:
    /// retrying under the same key cannot succeed (for 24 hours).
    pub fn replayed_failure(&self) -> Option<&str> {
        match self {
            Self::ReplayedFailure {
                original_request, ..
            } => Some(original_request),
            _ => None,
        }
    }

    /// Whether the object does not exist (404 or `resource_missing`).
    pub fn not_found(&self) -> bool {
        matches!(self, Self::Api { status: 404, .. }) || self.code() == Some("resource_missing")
    }

    /// The Stripe error `code`, if Stripe answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The Stripe error `type`, if Stripe answered with one.
    pub fn kind(&self) -> Option<&str> {
        match self {
            Self::Api { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Delete => "DELETE",
        }
    }
}

/// One Stripe account's API. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct StripeClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: StripeConfig,
    agent: ureq::Agent,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl StripeClient {
    /// A client for this config; checks the base URL and the key, makes no request.
    pub fn new(mut config: StripeConfig) -> Result<Self> {
        let base = config.api_base.trim_end_matches('/').to_owned();
        let scheme_ok = base.starts_with("https://") || base.starts_with("http://");
        let host = base.split_once("://").map(|(_, rest)| rest).unwrap_or("");
        if !scheme_ok || host.is_empty() || host.contains('/') {
            return Err(Error::Config {
                reason: format!(
                    "apiBase must be http(s)://host[:port] without a path, not {:?}",
                    config.api_base
                ),
            });
        }
        let key_ok =
            !config.api_key.is_empty() && config.api_key.bytes().all(|b| b.is_ascii_graphic());
        if !key_ok {
            return Err(Error::Config {
                reason: "the API key is empty or has spaces or control characters".to_owned(),
            });
        }
        if config.timeout.is_zero() || config.backoff_initial > config.backoff_max {
            return Err(Error::Config {
                reason: "the timeout must be positive and backoff_initial at most backoff_max"
                    .to_owned(),
            });
        }
        config.api_base = base;
        config.retries_max = config.retries_max.min(RETRIES_MAX_LIMIT);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.timeout))
            .max_redirects(0)
            .user_agent(concat!("metron/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Self {
            inner: Arc::new(Inner { config, agent }),
        })
    }

    pub fn config(&self) -> &StripeConfig {
        &self.inner.config
    }

    /// `GET /v1/account`: the key check of an app install.
    pub fn account(&self) -> Result<Account> {
        self.call(Method::Get, "/v1/account", &Form::new(), None)
    }

    pub fn create_webhook_endpoint(
        &self,
        params: &WebhookEndpointCreate,
        idempotency_key: &str,
    ) -> Result<WebhookEndpoint> {
        let form = params.to_form();
        self.call(
            Method::Post,
            "/v1/webhook_endpoints",
            &form,
            Some(idempotency_key),
        )
    }

    pub fn delete_webhook_endpoint(&self, id: &str) -> Result<()> {
        let path = format!("/v1/webhook_endpoints/{}", escape_segment(id));
        self.call::<Deleted>(Method::Delete, &path, &Form::new(), None)
            .map(drop)
    }

    /// `GET /v1/customers/{id}` with the default payment method and tax expanded.
    pub fn customer(&self, id: &str) -> Result<Customer> {
        let path = format!("/v1/customers/{}", escape_segment(id));
        let expand = Value::List(vec![
            "invoice_settings.default_payment_method".into(),
            "tax".into(),
        ]);
        let form = Form::new().field("expand", expand);
        self.call(Method::Get, &path, &form, None)
    }

    pub fn create_customer(
        &self,
        params: &CustomerCreate,
        idempotency_key: &str,
    ) -> Result<Customer> {
        self.call(
            Method::Post,
            "/v1/customers",
            &params.to_form(),
            Some(idempotency_key),
        )
    }

    pub fn payment_method(&self, id: &str) -> Result<PaymentMethod> {
        let path = format!("/v1/payment_methods/{}", escape_segment(id));
        self.call(Method::Get, &path, &Form::new(), None)
    }

    pub fn create_checkout_session(
        &self,
        params: &CheckoutSessionCreate,
        idempotency_key: &str,
    ) -> Result<CheckoutSession> {
        let form = params.to_form();
        self.call(
            Method::Post,
            "/v1/checkout/sessions",
            &form,
            Some(idempotency_key),
        )
    }

    pub fn create_portal_session(
        &self,
        params: &PortalSessionCreate,
        idempotency_key: &str,
    ) -> Result<PortalSession> {
        let form = params.to_form();
        let path = "/v1/billing_portal/sessions";
        self.call(Method::Post, path, &form, Some(idempotency_key))
    }

    pub fn create_invoice(&self, params: &InvoiceCreate, idempotency_key: &str) -> Result<Invoice> {
        self.call(
            Method::Post,
            "/v1/invoices",
            &params.to_form(),
            Some(idempotency_key),
        )
    }

    pub fn invoice(&self, id: &str) -> Result<Invoice> {
        let path = format!("/v1/invoices/{}", escape_segment(id));
        self.call(Method::Get, &path, &Form::new(), None)
    }

    /// `GET /v1/invoices?customer=…&status=…`, every page.
    pub fn invoices(&self, customer: &str, status: Option<InvoiceStatus>) -> Result<Vec<Invoice>> {
        let status = status.map(|s| match s {
            InvoiceStatus::Draft => "draft",
            InvoiceStatus::Open => "open",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Uncollectible => "uncollectible",
            InvoiceStatus::Void => "void",
        });
        let form = Form::new()
            .field("customer", customer)
            .field_opt("status", status);
        self.list_all("/v1/invoices", &form)
    }

    pub fn update_invoice(
        &self,
        id: &str,
        params: &InvoiceUpdate,
        idempotency_key: &str,
    ) -> Result<Invoice> {
        let path = format!("/v1/invoices/{}", escape_segment(id));
        self.call(
            Method::Post,
            &path,
            &params.to_form(),
            Some(idempotency_key),
        )
    }

    /// `DELETE /v1/invoices/{id}`; Stripe deletes drafts only.
    pub fn delete_invoice(&self, id: &str) -> Result<()> {
        let path = format!("/v1/invoices/{}", escape_segment(id));
        self.call::<Deleted>(Method::Delete, &path, &Form::new(), None)
            .map(drop)
    }

    /// `POST /v1/invoices/{id}/finalize` with `auto_advance=true`: Stripe then collects.
    pub fn finalize_invoice(&self, id: &str, idempotency_key: &str) -> Result<Invoice> {
        let path = format!("/v1/invoices/{}/finalize", escape_segment(id));
        let form = Form::new().field("auto_advance", true);
        self.call(Method::Post, &path, &form, Some(idempotency_key))
    }

    /// `POST /v1/invoices/{id}/void`: an open invoice is voided (Stripe's only way to stop
    /// collecting one; a voided invoice is final). An already voided one answers as it is.
    pub fn void_invoice(&self, id: &str, idempotency_key: &str) -> Result<Invoice> {
        let path = format!("/v1/invoices/{}/void", escape_segment(id));
        match self.call(Method::Post, &path, &Form::new(), Some(idempotency_key)) {
            Err(error)
                if error.code() == Some("invoice_not_editable")
                    || error.kind() == Some("invalid_request_error") =>
            {
                let current = self.invoice(id)?;
                if current.status == InvoiceStatus::Void {
                    Ok(current)
                } else {
                    Err(error)
                }
            }
            other => other,
        }
    }

    /// `GET /v1/invoices/{id}/lines`, every page, in invoice order.
    pub fn invoice_lines(&self, id: &str) -> Result<Vec<LineItem>> {
        let path = format!("/v1/invoices/{}/lines", escape_segment(id));
        self.list_all(&path, &Form::new())
    }

    pub fn create_invoice_item(
        &self,
        params: &InvoiceItemCreate,
        idempotency_key: &str,
    ) -> Result<InvoiceItem> {
        self.call(
            Method::Post,
            "/v1/invoiceitems",
            &params.to_form(),
            Some(idempotency_key),
        )
    }

    /// `POST /v1/invoiceitems/{ii_id}`: the item's `ii_` id, never the line's `il_` id.
    pub fn update_invoice_item(
        &self,
        id: &str,
        params: &InvoiceItemUpdate,
        idempotency_key: &str,
    ) -> Result<InvoiceItem> {
        let path = format!("/v1/invoiceitems/{}", escape_segment(id));
        self.call(
            Method::Post,
            &path,
            &params.to_form(),
            Some(idempotency_key),
        )
    }

    pub fn delete_invoice_item(&self, id: &str) -> Result<()> {
        let path = format!("/v1/invoiceitems/{}", escape_segment(id));
        self.call::<Deleted>(Method::Delete, &path, &Form::new(), None)
            .map(drop)
    }

    /// Every page of a list, following `starting_after` while `has_more`.
    fn list_all<T: DeserializeOwned + super::types::HasId>(
        &self,
        path: &str,
        filter: &Form,
    ) -> Result<Vec<T>> {
        let mut out: Vec<T> = Vec::new();
        for _ in 0..PAGES_MAX {
            let mut form = filter.clone().field("limit", i64::from(PAGE_LIMIT));
            if let Some(last) = out.last() {
                form = form.field("starting_after", last.id());
            }
            let page: List<T> = self.call(Method::Get, path, &form, None)?;
            let more = page.has_more && !page.data.is_empty();
            out.extend(page.data);
            if !more {
                return Ok(out);
            }
        }
        Err(Error::Endless {
            path: path.to_owned(),
            pages: PAGES_MAX,
        })
    }

    /// One call: the first attempt and up to `retries_max` retries of retryable failures.
    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        form: &Form,
        idempotency_key: Option<&str>,
    ) -> Result<T> {
        if let Some(key) = idempotency_key
            && (key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX)
        {
            return Err(Error::IdempotencyKey { bytes: key.len() });
        }
        let config = &self.inner.config;
        let mut retry = 0;
        loop {
            let outcome = self.attempt(method, path, form, idempotency_key);
            match outcome {
                Err(error) if error.is_retryable() && retry < config.retries_max => {
                    let jitter: f64 = rand::random();
                    let sleep = backoff(retry, config.backoff_initial, config.backoff_max, jitter);
                    warn!(
                        method = method.as_str(),
                        path,
                        retry = retry + 1,
                        sleep_ms = u64::try_from(sleep.as_millis()).unwrap_or(u64::MAX),
                        %error,
                        "Retrying a Stripe call."
                    );
                    std::thread::sleep(sleep);
                    retry += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// One HTTP exchange, its answer decoded or classified.
    fn attempt<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        form: &Form,
        idempotency_key: Option<&str>,
    ) -> Result<T> {
        let config = &self.inner.config;
        let agent = &self.inner.agent;
        let encoded = form.encode();
        let mut url = format!("{}{path}", config.api_base);
        if method != Method::Post && !encoded.is_empty() {
            url.push('?');
            url.push_str(&encoded);
        }
        let authorization = format!("Bearer {}", config.api_key);
        let sent = match method {
            Method::Get | Method::Delete => {
                let request = if method == Method::Get {
                    agent.get(&url)
                } else {
                    agent.delete(&url)
                };
                request
                    .header("Authorization", &authorization)
                    .header("Stripe-Version", API_VERSION)
                    .header("Accept", "application/json")
                    .call()
            }
            Method::Post => {
                let mut request = agent
                    .post(&url)
                    .header("Authorization", &authorization)
                    .header("Stripe-Version", API_VERSION)
                    .header("Accept", "application/json")
                    .content_type("application/x-www-form-urlencoded");
                if let Some(key) = idempotency_key {
                    request = request.header("Idempotency-Key", key);
                }
                request.send(encoded.as_str())
            }
        };
        let mut response = sent.map_err(|e| transport_error(method, path, config.timeout, e))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let request_id = header("request-id");
        let should_retry = header("stripe-should-retry").and_then(|v| match v.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        });
        let replayed = (header("idempotent-replayed").as_deref() == Some("true"))
            .then(|| header("original-request").unwrap_or_default());
        let body = response
            .body_mut()
            .with_config()
            .limit(RESPONSE_BYTES_MAX)
            .read_to_vec()
            .map_err(|e| transport_error(method, path, config.timeout, e))?;
        debug!(
            method = method.as_str(),
            path,
            status,
            request_id = request_id.as_deref().unwrap_or(""),
            "Stripe answered."
        );
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| Error::Decode {
                method: method.as_str(),
                path: path.to_owned(),
                status,
                message: e.to_string(),
            });
        }
        let error = api_error(status, &body, request_id, should_retry);
        match replayed {
            Some(original_request) if status >= 500 => Err(Error::ReplayedFailure {
                status,
                original_request,
                message: error.to_string(),
            }),
            _ => Err(error),
        }
    }
}

/// The error of a non-2xx answer; a body that is not Stripe's error object still gives one.
pub(crate) fn api_error(
    status: u16,
    body: &[u8],
    request_id: Option<String>,
    should_retry: Option<bool>,
) -> Error {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: ErrorBody,
    }
    let parsed = serde_json::from_slice::<Envelope>(body).map(|e| e.error);
    let error = parsed.unwrap_or_else(|_| ErrorBody {
        kind: if status >= 500 {
            "api_error"
        } else {
            "invalid_request_error"
        }
        .to_owned(),
        message: Some(String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned()),
        ..ErrorBody::default()
    });
    let message = error.message.unwrap_or_default();
    if status == 401 {
        return Error::Unauthorized {
            message,
            request_id,
        };
    }
    Error::Api {
        status,
        kind: error.kind,
        code: error.code,
        message,
        param: error.param,
        request_id,
        should_retry,
    }
}

fn transport_error(method: Method, path: &str, timeout: Duration, error: ureq::Error) -> Error {
    let method = method.as_str();
    let path = path.to_owned();
    match error {
        ureq::Error::Timeout(_) => Error::Timeout {
            method,
            path,
            timeout,
        },
        ureq::Error::Io(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Protocol(_)
        | ureq::Error::BodyStalled => Error::Transport {
            method,
            path,
            message: error.to_string(),
        },
        other => Error::Request {
            method,
            path,
            message: other.to_string(),
        },
    }
}

/// The sleep before retry `retry` (0-based): `initial * 2^retry` capped at `max`, less up to a
/// quarter of jitter (`jitter` in `[0, 1)`), never below `initial`.
pub(crate) fn backoff(retry: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let base = initial
        .checked_mul(1_u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    base.mul_f64(0.75 + 0.25 * jitter).clamp(initial, max)
}

#[cfg(test)]
mod tests;
