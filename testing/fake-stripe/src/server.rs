//! The HTTP side: routing, auth, `Stripe-Version`, spec checks, idempotency, faults and the
//! `/_test` control API. Every Stripe request runs through [`stripe`]: checks that fail before
//! execution are never stored under an idempotency key; anything that executed is.

use crate::error::ApiError;
use crate::fault::{Fault, FaultRule, Faults};
use crate::form::{self, Param};
use crate::state::{RequestRecord, Store};
use crate::webhook::{self, WebhookRequest};
use crate::{ops, spec};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The operations served: exactly the contract's list.
pub const OPERATIONS: [(&str, &str); 24] = [
    ("GET", "/v1/account"),
    ("POST", "/v1/webhook_endpoints"),
    ("DELETE", "/v1/webhook_endpoints/{webhook_endpoint}"),
    ("POST", "/v1/customers"),
    ("GET", "/v1/customers/{customer}"),
    ("POST", "/v1/customers/{customer}"),
    ("GET", "/v1/payment_methods/{payment_method}"),
    ("POST", "/v1/invoices"),
    ("GET", "/v1/invoices"),
    ("GET", "/v1/invoices/{invoice}"),
    ("POST", "/v1/invoices/{invoice}"),
    ("DELETE", "/v1/invoices/{invoice}"),
    ("POST", "/v1/invoices/{invoice}/finalize"),
    ("POST", "/v1/invoices/{invoice}/pay"),
    ("POST", "/v1/invoices/{invoice}/void"),
    ("POST", "/v1/invoices/{invoice}/mark_uncollectible"),
    ("POST", "/v1/invoices/{invoice}/send"),
    ("GET", "/v1/invoices/{invoice}/lines"),
    ("POST", "/v1/invoiceitems"),
    ("GET", "/v1/invoiceitems"),
    ("POST", "/v1/invoiceitems/{invoiceitem}"),
    ("DELETE", "/v1/invoiceitems/{invoiceitem}"),
    ("POST", "/v1/checkout/sessions"),
    ("POST", "/v1/billing_portal/sessions"),
];

/// State shared by the server's handlers and the [`crate::FakeStripe`] handle.
pub struct Shared {
    pub store: Arc<Mutex<Store>>,
    pub faults: Mutex<Faults>,
    pub api_key: String,
    pub timeout_hold: Duration,
    pub sender: webhook::Sender,
    pub last_webhook: Mutex<Option<WebhookRequest>>,
    /// Called with each Stripe request once it is logged, before its answer is sent.
    pub hook: Mutex<Option<RequestHook>>,
    idempotency: Mutex<HashMap<(String, String, String), Stored>>,
}

/// A test's callback on every logged Stripe request (see [`crate::FakeStripe::on_request`]).
pub type RequestHook = Arc<dyn Fn(&RequestRecord) + Send + Sync>;

enum Stored {
    InFlight {
        params: String,
    },
    Done {
        params: String,
        status: u16,
        body: String,
        request_id: String,
    },
}

/// The connection's socket (a duplicate descriptor), so a fault can close it with no answer.
pub struct Socket(std::net::TcpStream);

/// Keeps each connection's socket for [`Fault::Drop`].
pub fn on_connect(connection: &dyn std::any::Any, extensions: &mut actix_web::dev::Extensions) {
    use std::os::fd::AsFd;
    if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>()
        && let Ok(fd) = tcp.as_fd().try_clone_to_owned()
    {
        extensions.insert(Socket(std::net::TcpStream::from(fd)));
    }
}

impl Shared {
    pub fn new(
        store: Store,
        faults: Faults,
        api_key: String,
        timeout_hold: Duration,
    ) -> std::io::Result<Shared> {
        let store = Arc::new(Mutex::new(store));
        let sender = webhook::Sender::start(Arc::clone(&store))?;
        Ok(Shared {
            store,
            faults: Mutex::new(faults),
            api_key,
            timeout_hold,
            sender,
            last_webhook: Mutex::new(None),
            hook: Mutex::new(None),
            idempotency: Mutex::new(HashMap::new()),
        })
    }

    /// Hands the store's new events to the webhook sender, one request per matching endpoint.
    pub fn dispatch(&self) {
        let requests = {
            let mut store = self.store.lock();
            let outbox = std::mem::take(&mut store.outbox);
            outbox
                .iter()
                .flat_map(|event| webhook_requests(&store, event))
                .collect::<Vec<_>>()
        };
        for request in requests {
            *self.last_webhook.lock() = Some(request.clone());
            self.sender.enqueue(request);
        }
    }
}

/// The signed requests that deliver `event_id` to every enabled endpoint that wants it.
pub fn webhook_requests(store: &Store, event_id: &str) -> Vec<WebhookRequest> {
    let Some(event) = store.events.iter().find(|e| e.id == event_id) else {
        return Vec::new();
    };
    store
        .webhook_endpoints
        .iter()
        .filter(|endpoint| endpoint.wants(&event.kind))
        .map(|endpoint| {
            let mut json = event.json.clone();
            if let Some(version) = &endpoint.api_version {
                json["api_version"] = json!(version);
            }
            let body = json.to_string();
            WebhookRequest {
                event_id: event.id.clone(),
                endpoint_id: endpoint.id.clone(),
                url: endpoint.url.clone(),
                signature: webhook::sign(&endpoint.secret, crate::state::now(), &body),
                body,
            }
        })
        .collect()
}

/// Matches a path to a served operation: its template and the `{…}` segments.
pub fn route(method: &str, path: &str) -> Option<(&'static str, Vec<String>)> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    OPERATIONS.iter().find_map(|(m, template)| {
        if *m != method {
            return None;
        }
        let parts: Vec<&str> = template.split('/').collect();
        if parts.len() != segments.len() {
            return None;
        }
        let mut ids = Vec::new();
        for (part, segment) in parts.iter().zip(&segments) {
            if part.starts_with('{') {
                if segment.is_empty() {
                    return None;
                }
                ids.push((*segment).to_owned());
            } else if part != segment {
                return None;
            }
        }
        Some((*template, ids))
    })
}

/// What the handler learned about a request before deciding how to answer it.
struct Incoming {
    request_id: String,
    version: String,
    method: String,
    path: String,
    pairs: Vec<(String, String)>,
    key: Option<String>,
}

/// Every `/v1/...` request.
pub async fn stripe(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let mut incoming = Incoming {
        request_id: shared.store.lock().id("req_", 14),
        version: spec::ACACIA.to_owned(),
        method: req.method().as_str().to_owned(),
        path: req.path().to_owned(),
        pairs: Vec::new(),
        key: header(&req, "Idempotency-Key"),
    };
    match prepare(&req, &body, &shared, &mut incoming) {
        Ok((template, ids, params)) => run(&req, &shared, incoming, template, ids, params).await,
        Err((error, violation)) => {
            if violation {
                let line = format!(
                    "{} {}: {} ({})",
                    incoming.method,
                    incoming.path,
                    error.message,
                    error.param.clone().unwrap_or_default()
                );
                shared.store.lock().violations.push(line);
            }
            finish(
                &shared,
                &incoming,
                error.status,
                &error.body().to_string(),
                None,
                false,
                &[],
            )
        }
    }
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

type Prepared = (&'static str, Vec<String>, Param);

/// Auth, version, route, decoding and spec checks; an error says whether it is a violation.
fn prepare(
    req: &HttpRequest,
    body: &[u8],
    shared: &Shared,
    incoming: &mut Incoming,
) -> Result<Prepared, (ApiError, bool)> {
    authenticate(req, &shared.api_key).map_err(|e| (e, false))?;
    if let Some(version) = header(req, "Stripe-Version") {
        if !known_version(&version) {
            let error = ApiError::invalid(None, format!("Invalid Stripe API version: {version}"))
                .with_param("Stripe-Version");
            return Err((error, true));
        }
        incoming.version = version;
    }
    let Some((template, ids)) = route(&incoming.method, &incoming.path) else {
        let message = format!(
            "Unrecognized request URL ({}: {}).",
            incoming.method, incoming.path
        );
        let error = ApiError {
            status: 404,
            kind: "invalid_request_error",
            code: None,
            message,
            param: None,
        };
        return Err((error, true));
    };
    let text = if incoming.method == "POST" {
        String::from_utf8_lossy(body).into_owned()
    } else {
        req.query_string().to_owned()
    };
    let invalid_form = |e: form::Error| {
        (
            ApiError::invalid(Some("parameter_invalid_string"), e.to_string()),
            true,
        )
    };
    incoming.pairs = form::pairs(&text).map_err(invalid_form)?;
    let params = form::parse(&incoming.pairs).map_err(invalid_form)?;
    spec::spec()
        .check(&incoming.method, template, &params)
        .map_err(|e| (ApiError::from(e), true))?;
    ops::contract(&incoming.method, template, &params).map_err(|e| (ApiError::from(e), true))?;
    if incoming
        .key
        .as_ref()
        .is_some_and(|k| k.chars().count() > crate::limits::IDEMPOTENCY_KEY_CHARS_MAX)
    {
        let error = ApiError::invalid(None, "Idempotency-Key must be at most 255 characters.")
            .with_param("Idempotency-Key");
        return Err((error, true));
    }
    if incoming.method != "POST" {
        incoming.key = None;
    }
    Ok((template, ids, params))
}

fn known_version(version: &str) -> bool {
    let (date, release) = version.split_once('.').unwrap_or((version, ""));
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok()
        && release.chars().all(|c| c.is_ascii_lowercase())
}

/// `Authorization: Bearer <key>` or Basic with the key as the user.
fn authenticate(req: &HttpRequest, api_key: &str) -> Result<(), ApiError> {
    let unauthorized = |message: String| ApiError {
        status: 401,
        kind: "invalid_request_error",
        code: None,
        message,
        param: None,
    };
    let Some(value) = header(req, "Authorization") else {
        return Err(unauthorized("You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').".to_owned()));
    };
    let given = if let Some(token) = value.strip_prefix("Bearer ") {
        token.trim().to_owned()
    } else if let Some(basic) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&decoded).into_owned();
        text.split_once(':')
            .map_or(text.clone(), |(user, _)| user.to_owned())
    } else {
        String::new()
    };
    if given == api_key {
        return Ok(());
    }
    let tail: String = given
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(unauthorized(format!(
        "Invalid API Key provided: sk_test_****{tail}"
    )))
}

/// Idempotency, fault and execution of a checked request.
async fn run(
    req: &HttpRequest,
    shared: &Shared,
    incoming: Incoming,
    template: &'static str,
    ids: Vec<String>,
    params: Param,
) -> HttpResponse {
    let canonical = form::canonical(&incoming.pairs);
    let scope = incoming
        .key
        .clone()
        .map(|k| (k, incoming.method.clone(), incoming.path.clone()));
    if let Some(scope) = &scope
        && let Some(early) = claim(shared, &incoming, scope, &canonical)
    {
        return early;
    }
    let fault = shared.faults.lock().pick(&incoming.method, &incoming.path);
    let release = |stored: Option<Stored>| {
        if let Some(scope) = &scope {
            let mut map = shared.idempotency.lock();
            match stored {
                Some(stored) => map.insert(scope.clone(), stored),
                None => map.remove(scope),
            };
        }
    };
    let fault_name = fault.map(|f| format!("{f:?}"));
    if let Some((error, should_retry)) = fault.and_then(Fault::answer) {
        release(None);
        let headers: Vec<(&str, &str)> = should_retry
            .map(|retry| vec![("Stripe-Should-Retry", retry)])
            .unwrap_or_default();
        let body = error.body().to_string();
        return finish(
            shared,
            &incoming,
            error.status,
            &body,
            fault_name,
            false,
            &headers,
        );
    }
    match fault {
        Some(Fault::Timeout) => {
            // The client may go away during the hold and actix then drops this future: the
            // guard frees the key all the same (nothing executed).
            let guard = InFlightGuard {
                shared,
                scope: scope.as_ref(),
            };
            actix_web::rt::time::sleep(shared.timeout_hold).await;
            drop(guard);
            return dropped(req, shared, &incoming, fault_name);
        }
        Some(Fault::Drop) => {
            release(None);
            return dropped(req, shared, &incoming, fault_name);
        }
        _ => {}
    }
    let stored_failure = || {
        ApiError::api(
            500,
            "An unknown error occurred (injected, kept for the key).",
        )
        .body()
        .to_string()
    };
    if fault == Some(Fault::StoredFailure) {
        let body = stored_failure();
        release(Some(Stored::Done {
            params: canonical,
            status: 500,
            body: body.clone(),
            request_id: incoming.request_id.clone(),
        }));
        return finish(shared, &incoming, 500, &body, fault_name, false, &[]);
    }
    let (status, body) = {
        let mut store = shared.store.lock();
        store.current_request = Some((incoming.request_id.clone(), incoming.key.clone()));
        let result = ops::execute(&mut store, &incoming.method, template, &ids, &params);
        store.current_request = None;
        match result {
            Ok(value) => (200, value.to_string()),
            Err(error) => (error.status, error.body().to_string()),
        }
    };
    shared.dispatch();
    let (status, body) = if fault == Some(Fault::StoredFailureAfterWrite) {
        (500, stored_failure())
    } else {
        (status, body)
    };
    release(Some(Stored::Done {
        params: canonical,
        status,
        body: body.clone(),
        request_id: incoming.request_id.clone(),
    }));
    match fault {
        Some(Fault::FailAfterWrite) => {
            let body = ApiError::api(
                500,
                "An error occurred after the request was applied (injected).",
            )
            .body()
            .to_string();
            finish(shared, &incoming, 500, &body, fault_name, false, &[])
        }
        Some(Fault::DropAfterWrite) => dropped(req, shared, &incoming, fault_name),
        Some(Fault::StoredFailureAfterWrite) => {
            finish(shared, &incoming, status, &body, fault_name, false, &[])
        }
        _ => finish(shared, &incoming, status, &body, None, false, &[]),
    }
}

/// Removes a key's in-flight claim when dropped, however the request ended.
struct InFlightGuard<'a> {
    shared: &'a Shared,
    scope: Option<&'a (String, String, String)>,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if let Some(scope) = self.scope {
            let mut map = self.shared.idempotency.lock();
            if matches!(map.get(scope), Some(Stored::InFlight { .. })) {
                map.remove(scope);
            }
        }
    }
}

/// Looks the key up: a replay, a mismatch, an in-flight duplicate, or (None) claimed for this request.
fn claim(
    shared: &Shared,
    incoming: &Incoming,
    scope: &(String, String, String),
    canonical: &str,
) -> Option<HttpResponse> {
    let mut map = shared.idempotency.lock();
    let key = &scope.0;
    let mismatch = || {
        let message = format!(
            "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
        );
        ApiError {
            status: 400,
            kind: "idempotency_error",
            code: None,
            message,
            param: None,
        }
    };
    let answer = match map.get(scope) {
        None => {
            map.insert(
                scope.clone(),
                Stored::InFlight {
                    params: canonical.to_owned(),
                },
            );
            return None;
        }
        Some(Stored::InFlight { params }) | Some(Stored::Done { params, .. })
            if params != canonical =>
        {
            Err(mismatch())
        }
        Some(Stored::InFlight { .. }) => Err(ApiError {
            status: 409,
            kind: "invalid_request_error",
            code: Some("idempotency_key_in_use"),
            message: format!(
                "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): {key}. Please try again later."
            ),
            param: None,
        }),
        Some(Stored::Done {
            status,
            body,
            request_id,
            ..
        }) => Ok((*status, body.clone(), request_id.clone())),
    };
    drop(map);
    Some(match answer {
        Ok((status, body, original)) => finish(
            shared,
            incoming,
            status,
            &body,
            None,
            true,
            &[("Original-Request", original.as_str())],
        ),
        Err(error) => finish(
            shared,
            incoming,
            error.status,
            &error.body().to_string(),
            None,
            false,
            &[],
        ),
    })
}

/// Closes the connection with no answer.
fn dropped(
    req: &HttpRequest,
    shared: &Shared,
    incoming: &Incoming,
    fault: Option<String>,
) -> HttpResponse {
    // Logged first: the client may look at the log as soon as the connection closes.
    log(shared, incoming, 0, fault, false);
    if let Some(Socket(socket)) = req.conn_data::<Socket>()
        && let Err(error) = socket.shutdown(std::net::Shutdown::Both)
    {
        tracing::warn!(%error, "Could not close a connection for an injected fault.");
    }
    HttpResponse::new(StatusCode::INTERNAL_SERVER_ERROR)
}

fn log(shared: &Shared, incoming: &Incoming, status: u16, fault: Option<String>, replayed: bool) {
    let record = RequestRecord {
        request_id: incoming.request_id.clone(),
        method: incoming.method.clone(),
        path: incoming.path.clone(),
        params: incoming.pairs.clone(),
        idempotency_key: incoming.key.clone(),
        status,
        fault,
        replayed,
        at_ms: chrono::Utc::now().timestamp_millis(),
    };
    let hook = shared.hook.lock().clone();
    if let Some(hook) = hook {
        hook(&record);
    }
    shared.store.lock().requests.push(record);
}

/// Logs the request and builds the answer with Stripe's headers.
fn finish(
    shared: &Shared,
    incoming: &Incoming,
    status: u16,
    body: &str,
    fault: Option<String>,
    replayed: bool,
    extra: &[(&str, &str)],
) -> HttpResponse {
    log(shared, incoming, status, fault, replayed);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(code);
    response
        .content_type("application/json")
        .insert_header(("Request-Id", incoming.request_id.as_str()))
        .insert_header(("Stripe-Version", incoming.version.as_str()));
    if let Some(key) = &incoming.key {
        response.insert_header(("Idempotency-Key", key.as_str()));
    }
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    for (name, value) in extra {
        response.insert_header((*name, *value));
    }
    response.body(body.to_owned())
}

/// The `/_test` control API.
pub fn control(config: &mut web::ServiceConfig) {
    config
        .route("/_test/state", web::get().to(state))
        .route("/_test/summary", web::get().to(summary))
        .route("/_test/violations", web::get().to(violations))
        .route("/_test/config", web::get().to(config_json))
        .route("/_test/faults", web::post().to(fault))
        .route("/_test/customers", web::post().to(customer))
        .route(
            "/_test/customers/{id}/payment_methods",
            web::post().to(payment_method),
        )
        .route(
            "/_test/invoices/{id}/{action}",
            web::post().to(invoice_action),
        )
        .route("/_test/events/{id}/deliver", web::post().to(deliver));
}

async fn state(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(&*shared.store.lock())
}

/// Invoices by status and the number of requests: what a load test polls, without the
/// whole state.
async fn summary(shared: web::Data<Shared>) -> HttpResponse {
    let store = shared.store.lock();
    let mut invoices: std::collections::BTreeMap<&str, usize> = Default::default();
    for invoice in &store.invoices {
        *invoices.entry(invoice.status.as_str()).or_default() += 1;
    }
    HttpResponse::Ok().json(json!({"invoices": invoices, "requests": store.requests.len()}))
}

async fn violations(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(&shared.store.lock().violations)
}

async fn config_json(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    let info = req.connection_info();
    HttpResponse::Ok().json(json!({"api_key": shared.api_key, "base_url": format!("{}://{}", info.scheme(), info.host())}))
}

async fn fault(shared: web::Data<Shared>, rule: web::Json<FaultRule>) -> HttpResponse {
    shared.faults.lock().push(rule.into_inner());
    HttpResponse::NoContent().finish()
}

#[derive(serde::Deserialize)]
struct CustomerSeed {
    name: String,
    #[serde(default)]
    email: Option<String>,
}

async fn customer(shared: web::Data<Shared>, seed: web::Json<CustomerSeed>) -> HttpResponse {
    let id = crate::seed_customer(&shared, &seed.name, seed.email.as_deref());
    let store = shared.store.lock();
    HttpResponse::Ok().json(store.customer(&id).map(|c| c.json(&store, &[])))
}

async fn payment_method(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    match crate::seed_payment_method(&shared, &id) {
        Ok(pm) => HttpResponse::Ok().json(json!({"id": pm})),
        Err(error) => answer(Err(error)),
    }
}

async fn invoice_action(
    shared: web::Data<Shared>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (id, action) = path.into_inner();
    answer(crate::drive(&shared, &id, &action))
}

async fn deliver(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    let outcomes: Vec<Value> = crate::deliver_now(&shared, &id)
        .into_iter()
        .map(|o| match o {
            Ok(status) => json!({"status": status}),
            Err(error) => json!({"error": error}),
        })
        .collect();
    HttpResponse::Ok().json(outcomes)
}

fn answer(result: Result<Value, ApiError>) -> HttpResponse {
    match result {
        Ok(value) => HttpResponse::Ok().json(value),
        Err(error) => HttpResponse::build(
            StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST),
        )
        .json(error.body()),
    }
}
