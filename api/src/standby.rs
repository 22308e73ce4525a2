//! The HTTP API of a standby node: a node on a shared stream (Kafka, Fluvio) whose partitions
//! another node holds (`metron_actors::front`).
//!
//! A standby takes `POST /api/v1/events` itself: it appends the events to the stream, which the
//! holder reads. It runs `POST /api/v1/sql` itself too, over the Parquet files and the live rows
//! the holder sends ([`sql`]). It answers `/healthz`, `/readyz` and `/metrics` for itself. Every
//! other request (meter queries, balances and access checks, catalog changes) is forwarded to
//! the holder's address as it stands in the leases, and the holder's answer goes back unchanged.
//! A forwarded request carries [`FORWARDED_BY`]; a standby never forwards one again, so a
//! request crosses at most one hop, and a holder change in between answers 503.

use crate::error::ApiError;
use crate::limits::RETRY_AFTER_SECONDS;
use crate::routes::sql::{SqlBody, TABLES_PATH, TablesBody};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use metron_actors::front::{Front, Holder};
use metron_storage::query::wire;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The header a forwarded request carries: the id of the node that forwarded it.
pub const FORWARDED_BY: &str = "metron-forwarded-by";

/// The `metron_standby` gauge in Prometheus' text format: 1 on a standby, 0 on a full node
/// (the holder, or a node on the embedded log).
pub fn standby_gauge(standing_by: bool) -> String {
    format!(
        "# HELP metron_standby 1 while this node stands by (another node holds the stream).\n\
         # TYPE metron_standby gauge\nmetron_standby {}\n",
        u8::from(standing_by)
    )
}

/// The largest answer a standby reads whole: a SQL query's tables from the holder (past it, the
/// query is forwarded instead). Other answers are streamed through, whatever their size.
const RESPONSE_BYTES_MAX: u64 = 256 << 20;

/// What the standby's handlers share.
pub struct StandbyState {
    front: Front,
    namespace: String,
    agent: ureq::Agent,
    ingested: AtomicU64,
    ingest_requests: AtomicU64,
    forwarded: AtomicU64,
    forward_failures: AtomicU64,
    sql_queries: AtomicU64,
}

impl StandbyState {
    /// `timeout`: how long a forwarded request may take, answer included (the holder's
    /// slowest answer is a SQL query at its own timeout).
    pub fn new(front: Front, namespace: String, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .max_redirects(0)
            .allow_non_standard_methods(true)
            .build()
            .into();
        Self {
            front,
            namespace,
            agent,
            ingested: AtomicU64::new(0),
            ingest_requests: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            forward_failures: AtomicU64::new(0),
            sql_queries: AtomicU64::new(0),
        }
    }

    async fn holder(&self) -> Result<Holder, ApiError> {
        match self.front.holder_cached().await.map_err(ApiError::from)? {
            Some(holder) => Ok(holder),
            None => Err(unavailable(
                "no node holds the event stream's partitions now (a node is taking over)",
            )),
        }
    }

    fn forget_holder(&self) {
        self.front.forget_holder();
    }
}

fn unavailable(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, detail)
}

/// Registers the standby's routes; everything else goes to [`forward`].
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::default().limit(crate::limits::INGEST_BODY_BYTES_MAX))
        .route("/api/v1/events", web::post().to(ingest))
        .route("/api/v1/sql", web::post().to(sql))
        .route("/healthz", web::get().to(crate::routes::health::healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .default_service(web::to(forward));
}

async fn ingest(
    state: web::Data<StandbyState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    state.ingest_requests.fetch_add(1, Ordering::Relaxed);
    let events = crate::routes::events::parse_ingest(&req, &body)?;
    state.front.ingest(&state.namespace, &events).await?;
    state
        .ingested
        .fetch_add(events.len() as u64, Ordering::Relaxed);
    Ok(HttpResponse::NoContent().finish())
}

/// Ready: a standby takes events as long as the stream does, and forwards the rest.
async fn readyz(state: web::Data<StandbyState>) -> HttpResponse {
    let holder = match state.holder().await {
        Ok(holder) => format!("node {}", holder.node_id),
        Err(_) => "none at the moment".to_owned(),
    };
    HttpResponse::Ok()
        .content_type("text/plain")
        .body(format!("ready (standby; the stream's holder: {holder})\n"))
}

async fn metrics(state: web::Data<StandbyState>) -> HttpResponse {
    let counter = |name: &str, help: &str, value: &AtomicU64| {
        format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            value.load(Ordering::Relaxed)
        )
    };
    let body = [
        standby_gauge(true),
        counter(
            "metron_ingest_requests_total",
            "Ingest requests received.",
            &state.ingest_requests,
        ),
        counter(
            "metron_events_ingested_total",
            "Events appended to the stream.",
            &state.ingested,
        ),
        counter(
            "metron_forwarded_requests_total",
            "Requests forwarded to the stream's holder.",
            &state.forwarded,
        ),
        counter(
            "metron_forward_failures_total",
            "Forwarded requests the holder did not answer.",
            &state.forward_failures,
        ),
        counter(
            "metron_sql_queries_total",
            "SQL queries run here, over the files and live rows the holder sent.",
            &state.sql_queries,
        ),
    ]
    .concat();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}

/// Headers that belong to one connection, not to the request: never relayed.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// The holder to send a request to, and its address. A request forwarded to this node
/// already is refused (503), so that none crosses more than one hop.
async fn holder_address(
    state: &StandbyState,
    req: &HttpRequest,
) -> Result<(Holder, String), ApiError> {
    if req.headers().contains_key(FORWARDED_BY) {
        return Err(unavailable(
            "forwarded to a node that no longer holds the event stream (a takeover is under way)",
        ));
    }
    let holder = state.holder().await?;
    let Some(address) = holder.address.clone() else {
        return Err(unavailable(format!(
            "node {} holds the event stream but gave no address to forward to \
             (start it with --advertise-url)",
            holder.node_id
        )));
    };
    Ok((holder, address))
}

/// Relays the request to the holder and its answer back.
async fn forward(
    state: web::Data<StandbyState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (holder, address) = holder_address(&state, &req).await?;
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
    let url = format!("{}{path}", address.trim_end_matches('/'));
    let mut builder = ureq::http::Request::builder()
        .method(req.method().as_str())
        .uri(&url)
        .header(FORWARDED_BY, state.front.node_id());
    for (name, value) in req.headers() {
        if !hop_by_hop(name.as_str()) {
            builder = builder.header(name.as_str(), value.as_bytes());
        }
    }
    let opened = open(&state, builder, body)
        .await
        .map_err(|reason| holder_failed(&state, &holder, &address, &reason))?;
    state.forwarded.fetch_add(1, Ordering::Relaxed);
    Ok(relay_streamed(opened))
}

/// A 503 for a holder that did not answer; the holder is looked up again next time.
fn holder_failed(state: &StandbyState, holder: &Holder, address: &str, reason: &str) -> ApiError {
    state.forward_failures.fetch_add(1, Ordering::Relaxed);
    state.forget_holder();
    unavailable(format!(
        "node {} (the event stream's holder, at {address}) did not answer: {reason}",
        holder.node_id
    ))
}

/// The holder's status and headers, its body still to read.
struct Opened {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: ureq::Body,
}

/// Sends a request to the holder (on a blocking thread); returns once its status and headers
/// have come.
async fn open(
    state: &StandbyState,
    builder: ureq::http::request::Builder,
    body: web::Bytes,
) -> Result<Opened, String> {
    let agent = state.agent.clone();
    let sent = web::block(move || -> Result<Opened, String> {
        let sent = if body.is_empty() {
            builder
                .body(ureq::SendBody::none())
                .map_err(|e| e.to_string())
                .and_then(|r| agent.run(r).map_err(|e| e.to_string()))
        } else {
            builder
                .body(body.to_vec())
                .map_err(|e| e.to_string())
                .and_then(|r| agent.run(r).map_err(|e| e.to_string()))
        };
        let (parts, body) = sent?.into_parts();
        let headers = parts
            .headers
            .iter()
            .filter(|(name, _)| !hop_by_hop(name.as_str()))
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        Ok(Opened {
            status: parts.status.as_u16(),
            headers,
            body,
        })
    })
    .await;
    match sent {
        Ok(opened) => opened,
        Err(join) => Err(join.to_string()),
    }
}

/// A body read whole, up to [`RESPONSE_BYTES_MAX`] (on a blocking thread).
async fn read_whole(body: ureq::Body) -> Result<Vec<u8>, String> {
    let read = web::block(move || {
        body.into_with_config()
            .limit(RESPONSE_BYTES_MAX)
            .read_to_vec()
            .map_err(|e| e.to_string())
    })
    .await;
    match read {
        Ok(body) => body,
        Err(join) => Err(join.to_string()),
    }
}

/// The holder's status and headers, as this node's.
fn relay_head(status: u16, headers: Vec<(String, Vec<u8>)>) -> actix_web::HttpResponseBuilder {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    for (name, value) in headers {
        if let Ok(value) = actix_web::http::header::HeaderValue::from_bytes(&value) {
            response.append_header((name, value));
        }
    }
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        response.insert_header(("Retry-After", RETRY_AFTER_SECONDS.to_string()));
    }
    response
}

/// The holder's answer as this node's, its body streamed as it comes: a blocking thread reads
/// it in 64 KiB pieces, at most four ahead of the client, so a standby holds little of a large
/// answer (an event listing) at a time, however many it relays.
fn relay_streamed(opened: Opened) -> HttpResponse {
    let (pieces, received) = tokio::sync::mpsc::channel::<Result<web::Bytes, std::io::Error>>(4);
    let mut reader = opened.body.into_reader();
    tokio::task::spawn_blocking(move || {
        loop {
            let mut piece = vec![0; 64 << 10];
            let sent = match std::io::Read::read(&mut reader, &mut piece) {
                Ok(0) => break,
                Ok(n) => {
                    piece.truncate(n);
                    pieces.blocking_send(Ok(web::Bytes::from(piece)))
                }
                Err(error) => {
                    let _ = pieces.blocking_send(Err(error));
                    break;
                }
            };
            if sent.is_err() {
                break; // the client went away
            }
        }
    });
    let body = futures::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|piece| (piece, received))
    });
    relay_head(opened.status, opened.headers).streaming(body)
}

/// `POST /api/v1/sql`, run here: the holder sends the files and live rows of the tables
/// the text names (`routes::sql::tables`), and this node runs the query over them, so the
/// holder's CPU goes to the stream, not to the query. The answer is the one the holder
/// would give. A body the full API would refuse, a holder without that route (404), or a holder
/// whose files this node cannot read (another object root) is forwarded as before.
async fn sql(
    state: web::Data<StandbyState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let json = req
        .mime_type()
        .ok()
        .flatten()
        .is_some_and(|m| m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON));
    let parsed = if json {
        serde_json::from_slice::<SqlBody>(&body).ok()
    } else {
        None
    };
    let Some(parsed) = parsed else {
        return forward(state, req, body).await;
    };
    let (limit, timeout) = parsed.limits()?;
    let slot = match state.front.try_sql_slot() {
        Some(slot) => slot?,
        None => return forward(state, req, body).await,
    };
    let (holder, address) = holder_address(&state, &req).await?;
    let tables = serde_json::to_vec(&TablesBody {
        sql: parsed.sql.clone(),
    })
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let builder = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("{}{TABLES_PATH}", address.trim_end_matches('/')))
        .header(FORWARDED_BY, state.front.node_id())
        .header("content-type", "application/json");
    let opened = open(&state, builder, web::Bytes::from(tables))
        .await
        .map_err(|reason| holder_failed(&state, &holder, &address, &reason))?;
    if opened.status == StatusCode::NOT_FOUND.as_u16() {
        return forward(state, req, body).await;
    }
    if opened.status != StatusCode::OK.as_u16() {
        return Ok(relay_streamed(opened));
    }
    let read = read_whole(opened.body).await;
    let (root, tables) = match read
        .and_then(|bytes| wire::decode(&bytes).map_err(|e| e.to_string()))
    {
        Ok(decoded) => decoded,
        Err(error) => {
            tracing::warn!(%error, "The holder's SQL tables could not be read: SQL is forwarded.");
            return forward(state, req, body).await;
        }
    };
    match state
        .front
        .sql(slot, &root, tables, parsed.sql, limit, timeout)
        .await?
    {
        Some(answer) => {
            state.sql_queries.fetch_add(1, Ordering::Relaxed);
            crate::routes::sql::answer_response(&req, &answer)
        }
        None => forward(state, req, body).await,
    }
}
