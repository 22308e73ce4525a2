//! Invoices (`/api/v1/billing/invoices`): listing, reading, the lifecycle actions of
//! OpenMeter's invoice state machine, and invoicing a customer's pending lines now.

use crate::error::ApiError;
use crate::params::Params;
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use metron_actors::billing::render::invoice_json;
use metron_actors::billing::{Action, Error as BillingError};
use metron_storage::invoices::{Invoice, InvoiceFilter};
use serde_json::{Value, json};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/billing/invoices", web::get().to(list))
        // Registered before `{id}`, with every other method answered by `no_route` (405 +
        // `Allow`), so that `GET .../invoices/invoice` is not read as an invoice id.
        .service(
            web::resource("/api/v1/billing/invoices/invoice")
                .route(web::post().to(invoice_now))
                .default_service(web::to(crate::no_route)),
        )
        .route("/api/v1/billing/invoices/{id}", web::get().to(get))
        .route("/api/v1/billing/invoices/{id}", web::put().to(replace))
        .route("/api/v1/billing/invoices/{id}", web::delete().to(delete))
        .route(
            "/api/v1/billing/invoices/{id}/advance",
            web::post().to(advance),
        )
        .route(
            "/api/v1/billing/invoices/{id}/approve",
            web::post().to(approve),
        )
        .route("/api/v1/billing/invoices/{id}/retry", web::post().to(retry))
        .route(
            "/api/v1/billing/invoices/{id}/snapshot-quantities",
            web::post().to(snapshot_quantities),
        )
        .route("/api/v1/billing/invoices/{id}/void", web::post().to(void))
        .route(
            "/api/v1/billing/invoices/{id}/taxes/recalculate",
            web::post().to(recalculate),
        )
        .route(
            "/api/v1/billing/customers/{customer}/invoices/pending-lines",
            web::post().to(pending_lines),
        )
        .route(
            "/api/v1/billing/customers/{customer}/invoices/simulate",
            web::post().to(simulate),
        );
}

pub(crate) fn billing_error(error: BillingError) -> ApiError {
    match error {
        BillingError::NotFound(id) => ApiError::not_found(format!("invoice {id:?} not found")),
        BillingError::Transition { code, message } => {
            let mut e = ApiError::bad_request(message.clone());
            e.extensions = Some(
                json!({"validationErrors": [{"code": code, "message": message, "field": ""}]}),
            );
            e
        }
        BillingError::Invalid(detail) => ApiError::bad_request(detail),
        BillingError::Catalog(e) => crate::routes::customers::catalog_error(e),
    }
}

fn expands_lines(p: &Params) -> bool {
    p.all("expand")
        .iter()
        .flat_map(|v| v.split(',').map(str::to_owned).collect::<Vec<_>>())
        .any(|e| e == "lines")
}

async fn render(state: &AppState, invoice: &Invoice, lines: bool) -> Result<Value, ApiError> {
    let (_, all) = state
        .billing
        .get(&invoice.id)
        .await
        .map_err(billing_error)?;
    Ok(invoice_json(&state.billing, invoice, &all, lines))
}

fn between(
    t: Option<DateTime<Utc>>,
    after: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
) -> bool {
    match t {
        Some(t) => after.is_none_or(|a| t >= a) && before.is_none_or(|b| t <= b),
        None => after.is_none() && before.is_none(),
    }
}

async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let filter = InvoiceFilter {
        customers: p.all("customers"),
        statuses: p.all("statuses"),
        extended_statuses: p.all("extendedStatuses"),
        currencies: Vec::new(),
        include_deleted: p.bool("includeDeleted")?.unwrap_or(false),
    };
    let (issued_after, issued_before) = (p.time("issuedAfter")?, p.time("issuedBefore")?);
    let (period_after, period_before) = (p.time("periodStartAfter")?, p.time("periodStartBefore")?);
    let (created_after, created_before) = (p.time("createdAfter")?, p.time("createdBefore")?);
    let mut invoices: Vec<Invoice> = state
        .pipeline
        .catalog()
        .list_invoices(state.pipeline.namespace(), &filter)
        .await
        .map_err(crate::routes::customers::catalog_error)?
        .into_iter()
        .filter(|i| between(i.issued_at, issued_after, issued_before))
        .filter(|i| between(i.period.map(|p| p.from), period_after, period_before))
        .filter(|i| between(Some(i.created_at), created_after, created_before))
        .collect();
    match p.one("orderBy").unwrap_or("createdAt") {
        "createdAt" => invoices.sort_by_key(|i| (i.created_at, i.id.clone())),
        "updatedAt" => invoices.sort_by_key(|i| (i.updated_at, i.id.clone())),
        "issuedAt" => invoices.sort_by_key(|i| (i.issued_at, i.id.clone())),
        "periodStart" => invoices.sort_by_key(|i| (i.period.map(|p| p.from), i.id.clone())),
        "status" => invoices.sort_by_key(|i| (i.status.as_str().to_owned(), i.id.clone())),
        "customer.name" => invoices.sort_by_key(|i| {
            (
                i.customer
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                i.id.clone(),
            )
        }),
        other => return Err(ApiError::bad_request(format!("invalid orderBy: {other}"))),
    }
    match p.one("order").unwrap_or("ASC") {
        "ASC" => {}
        "DESC" => invoices.reverse(),
        other => return Err(ApiError::bad_request(format!("invalid order: {other}"))),
    }
    let page = p.usize_in("page", 1, 1, usize::MAX)?;
    let page_size = p.usize_in("pageSize", 100, 1, 1000)?;
    let lines = expands_lines(&p);
    let total = invoices.len();
    let mut items = Vec::new();
    for invoice in invoices
        .iter()
        .skip(page.saturating_sub(1).saturating_mul(page_size))
        .take(page_size)
    {
        items.push(render(&state, invoice, lines).await?);
    }
    Ok(HttpResponse::Ok().json(json!({
        "totalCount": total, "page": page, "pageSize": page_size, "items": items,
    })))
}

async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let (invoice, lines) = state.billing.get(&path).await.map_err(billing_error)?;
    // `expand` defaults to lines on a single invoice, as OpenMeter's read does.
    let expand = p.all("expand").is_empty() || expands_lines(&p);
    Ok(HttpResponse::Ok().json(invoice_json(&state.billing, &invoice, &lines, expand)))
}

/// `PUT /api/v1/billing/invoices/{invoiceId}` (`InvoiceReplaceUpdate` → `Invoice`): the
/// invoice's lines (and a standard invoice's supplier, customer, metadata and workflow
/// settings) replaced, recalculated and advanced; answered with its lines, as `GET` renders
/// it. An immutable invoice answers 400 (`invoice_action_not_available`), as OpenMeter does.
async fn replace(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    state.ready()?;
    let (invoice, lines) = state
        .billing
        .replace_invoice(&path, &body)
        .await
        .map_err(billing_error)?;
    Ok(HttpResponse::Ok().json(invoice_json(&state.billing, &invoice, &lines, true)))
}

async fn act(state: &AppState, id: &str, action: Action) -> Result<HttpResponse, ApiError> {
    // An action may snapshot usage: not from half-replayed state.
    state.ready()?;
    let invoice = state.billing.act(id, action).await.map_err(billing_error)?;
    Ok(HttpResponse::Ok().json(render(state, &invoice, true).await?))
}

async fn advance(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    act(&state, &path, Action::Advance).await
}

async fn approve(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    act(&state, &path, Action::Approve).await
}

async fn retry(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    act(&state, &path, Action::Retry).await
}

async fn snapshot_quantities(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    act(&state, &path, Action::SnapshotQuantities).await
}

/// `taxes/recalculate`: a draft's lines are rated again and its totals recomputed (taxes are
/// zero until a tax app computes them, as OpenMeter's v1 rating writes them); an immutable
/// invoice answers 400.
async fn recalculate(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    act(&state, &path, Action::Recalculate).await
}

async fn void(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    act(&state, &path, Action::Void).await
}

async fn delete(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state
        .billing
        .act(&path, Action::Delete)
        .await
        .map_err(billing_error)?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /api/v1/billing/invoices/invoice` (`InvoicePendingLinesActionInput`).
async fn invoice_now(
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    state.ready()?;
    let body = body.into_inner();
    let customer_ref = body
        .get("customerId")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("customerId is required"))?;
    let customer = state
        .pipeline
        .catalog()
        .get_customer(state.pipeline.namespace(), customer_ref)
        .await
        .map_err(crate::routes::customers::catalog_error)?
        .ok_or_else(|| ApiError::not_found(format!("customer {customer_ref:?} not found")))?;
    let as_of = match body.get("asOf") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            metron_engine::event::parse_time(s)
                .ok_or_else(|| ApiError::bad_request(format!("invalid asOf {s:?}")))?,
        ),
        Some(_) => return Err(ApiError::bad_request("asOf must be a date-time")),
    };
    let progressive = match body.get("progressiveBillingOverride") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(ApiError::bad_request(
                "progressiveBillingOverride must be a boolean",
            ));
        }
    };
    let line_ids: Option<Vec<String>> = match body.get("filters").map(|f| f.get("lineIds")) {
        None | Some(None) | Some(Some(Value::Null)) => None,
        Some(Some(Value::Array(ids))) => Some(
            ids.iter()
                .map(|id| id.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| ApiError::bad_request("filters.lineIds must be strings"))?,
        ),
        Some(Some(_)) => return Err(ApiError::bad_request("filters.lineIds must be an array")),
    };
    let invoices = state
        .billing
        .invoice_pending(&customer.id, as_of, progressive, line_ids.as_deref())
        .await
        .map_err(billing_error)?;
    let mut out = Vec::new();
    for invoice in &invoices {
        out.push(render(&state, invoice, true).await?);
    }
    Ok(HttpResponse::build(StatusCode::CREATED).json(out))
}

async fn customer_id(state: &AppState, id_or_key: &str) -> Result<String, ApiError> {
    Ok(state
        .pipeline
        .catalog()
        .get_customer(state.pipeline.namespace(), id_or_key)
        .await
        .map_err(crate::routes::customers::catalog_error)?
        .ok_or_else(|| ApiError::not_found(format!("customer {id_or_key:?} not found")))?
        .id)
}

/// `POST /api/v1/billing/customers/{customerId}/invoices/pending-lines`
/// (`InvoicePendingLineCreateInput` → `InvoicePendingLineCreateResponse`).
async fn pending_lines(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let customer = customer_id(&state, &path).await?;
    let currency = body
        .get("currency")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("currency is required"))?;
    let inputs = body
        .get("lines")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ApiError::bad_request("lines must have at least one line"))?;
    let (lines, invoice, is_new) = state
        .billing
        .pending_lines(&customer, currency, inputs)
        .await
        .map_err(billing_error)?;
    let (_, all) = state
        .billing
        .get(&invoice.id)
        .await
        .map_err(billing_error)?;
    Ok(HttpResponse::Created().json(json!({
        "lines": lines.iter().map(|l| metron_actors::billing::render::line_json(&invoice, l)).collect::<Vec<_>>(),
        "invoice": invoice_json(&state.billing, &invoice, &all, false),
        "isInvoiceNew": is_new,
    })))
}

/// `POST /api/v1/billing/customers/{customerId}/invoices/simulate` (`InvoiceSimulationInput`
/// → `Invoice`): rated, stored nowhere.
async fn simulate(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let customer = customer_id(&state, &path).await?;
    let (invoice, lines) = state
        .billing
        .simulate(&customer, &body)
        .await
        .map_err(billing_error)?;
    Ok(HttpResponse::Ok().json(invoice_json(&state.billing, &invoice, &lines, true)))
}
