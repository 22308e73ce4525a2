//! Meters: CRUD, queries (JSON and CSV), subjects and group-by values.

use crate::error::ApiError;
use crate::params::Params;
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use metron_engine::event::{format_time, parse_time};
use metron_engine::filter::StringFilter;
use metron_engine::meter::{Meter, MeterCreate, MeterUpdate};
use metron_engine::quantity::Quantity;
use metron_engine::query::{CUSTOMER_ID, MeterQuery, ResultRow};
use metron_engine::window::{WindowSize, parse_zone};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let include_deleted = p.bool("includeDeleted")?.unwrap_or(false);
    let mut meters = state
        .pipeline
        .list_meters(state.pipeline.namespace(), include_deleted)
        .await?;
    let descending = p.one("order") == Some("DESC");
    match p.one("orderBy").unwrap_or("key") {
        "key" => meters.sort_by(|a, b| a.slug.cmp(&b.slug)),
        "name" => meters.sort_by(|a, b| a.name.cmp(&b.name)),
        "aggregation" => meters.sort_by(|a, b| a.aggregation.as_str().cmp(b.aggregation.as_str())),
        "createdAt" => meters.sort_by_key(|m| m.created_at),
        "updatedAt" => meters.sort_by_key(|m| m.updated_at),
        other => return Err(ApiError::bad_request(format!("invalid orderBy: {other}"))),
    }
    if descending {
        meters.reverse();
    }
    if p.one("page").is_some() || p.one("pageSize").is_some() {
        let page = p.usize_in("page", 1, 1, usize::MAX)?;
        let size = p.usize_in("pageSize", 100, 1, 1000)?;
        meters = meters
            .into_iter()
            .skip((page - 1).saturating_mul(size))
            .take(size)
            .collect();
    }
    Ok(HttpResponse::Ok().json(meters))
}

pub async fn create(
    state: web::Data<AppState>,
    body: web::Json<MeterCreate>,
) -> Result<HttpResponse, ApiError> {
    let meter = state
        .pipeline
        .create_meter(state.pipeline.namespace(), body.into_inner())
        .await?;
    Ok(HttpResponse::Created().json(meter))
}

pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let meter = state
        .pipeline
        .get_meter(state.pipeline.namespace(), &path)
        .await?;
    Ok(HttpResponse::Ok().json(meter))
}

pub async fn update(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<MeterUpdate>,
) -> Result<HttpResponse, ApiError> {
    let meter = state
        .pipeline
        .update_meter(state.pipeline.namespace(), &path, body.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(meter))
}

pub async fn delete(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state
        .pipeline
        .delete_meter(state.pipeline.namespace(), &path)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `MeterQueryRequest`, the POST form of a query.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryBody {
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    window_size: Option<String>,
    #[serde(default)]
    window_time_zone: Option<String>,
    #[serde(default)]
    subject: Option<Vec<String>>,
    #[serde(default)]
    filter_customer_id: Option<Vec<String>>,
    #[serde(default)]
    group_by: Option<Vec<String>>,
    #[serde(default)]
    filter_group_by: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    advanced_meter_group_by_filters: Option<BTreeMap<String, Value>>,
}

/// The request's query, in one form for GET and POST.
struct RawQuery {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    window_size: Option<String>,
    time_zone: Option<String>,
    subjects: Vec<String>,
    customers: Vec<String>,
    group_by: Vec<String>,
    simple_filters: BTreeMap<String, Vec<String>>,
    advanced: Option<BTreeMap<String, Value>>,
}

fn time_field(name: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    match text {
        None => Ok(None),
        Some(t) => parse_time(t).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid {name}: {t:?} is not an RFC 3339 date-time"
            ))
        }),
    }
}

fn raw_from_params(p: &Params) -> Result<RawQuery, ApiError> {
    let advanced = match p.one("advancedMeterGroupByFilters") {
        None => None,
        Some(text) => Some(
            serde_json::from_str::<BTreeMap<String, Value>>(text).map_err(|e| {
                ApiError::bad_request(format!("invalid advancedMeterGroupByFilters: {e}"))
            })?,
        ),
    };
    Ok(RawQuery {
        from: p.time("from")?,
        to: p.time("to")?,
        window_size: p.one("windowSize").map(str::to_owned),
        time_zone: p.one("windowTimeZone").map(str::to_owned),
        subjects: p.all("subject"),
        customers: p.all("filterCustomerId"),
        group_by: p.all("groupBy"),
        simple_filters: p
            .map("filterGroupBy")
            .into_iter()
            .map(|(k, v)| (k, vec![v]))
            .collect(),
        advanced,
    })
}

fn raw_from_body(body: QueryBody) -> Result<RawQuery, ApiError> {
    let _ = body.client_id;
    Ok(RawQuery {
        from: time_field("from", body.from.as_deref())?,
        to: time_field("to", body.to.as_deref())?,
        window_size: body.window_size,
        time_zone: body.window_time_zone,
        subjects: body.subject.unwrap_or_default(),
        customers: body.filter_customer_id.unwrap_or_default(),
        group_by: body.group_by.unwrap_or_default(),
        simple_filters: body.filter_group_by.unwrap_or_default(),
        advanced: body.advanced_meter_group_by_filters,
    })
}

/// Most customers one query may filter by (OpenMeter's `filterCustomerId` maxItems).
const FILTER_CUSTOMERS_MAX: usize = 100;

/// Resolves `filterCustomerId` to subject → customer id over the live customers'
/// attribution; an unknown id is a 404, as OpenMeter's `getFilterCustomer`.
async fn resolve_customers(
    state: &AppState,
    ids: &[String],
) -> Result<BTreeMap<String, String>, ApiError> {
    if ids.len() > FILTER_CUSTOMERS_MAX {
        return Err(ApiError::bad_request(format!(
            "filterCustomerId: at most {FILTER_CUSTOMERS_MAX} customers"
        )));
    }
    let namespace = state.pipeline.namespace();
    let mut out = BTreeMap::new();
    for id in ids {
        let customer = state
            .pipeline
            .catalog()
            .get_customer_by_id(namespace, id)
            .await
            .map_err(crate::routes::customers::catalog_error)?
            .filter(|c| c.deleted_at.is_none())
            .ok_or_else(|| ApiError::not_found(format!("customer with id {id} not found")))?;
        for subject in customer.subjects() {
            out.insert(subject, customer.id.clone());
        }
    }
    Ok(out)
}

/// Validates a query against its meter, with OpenMeter's rules; `customers` is the
/// resolved `filterCustomerId` (subject → customer id).
fn build_query(
    meter: &Meter,
    raw: RawQuery,
    customers: BTreeMap<String, String>,
) -> Result<MeterQuery, ApiError> {
    if let (Some(f), Some(t)) = (raw.from, raw.to)
        && f >= t
    {
        return Err(ApiError::bad_request("from must be before to"));
    }
    if customers.is_empty() && raw.group_by.iter().any(|g| g == CUSTOMER_ID) {
        return Err(ApiError::bad_request(
            "customer filter is required with customer_id group by",
        ));
    }
    let window_size = match raw.window_size.as_deref() {
        None => None,
        Some(text) => Some(WindowSize::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid windowSize {text:?}: must be MINUTE, HOUR, DAY or MONTH"
            ))
        })?),
    };
    let time_zone: Tz = match raw.time_zone.as_deref() {
        None | Some("") => Tz::UTC,
        Some(name) => parse_zone(name)
            .ok_or_else(|| ApiError::bad_request(format!("invalid windowTimeZone: {name:?}")))?,
    };
    for key in &raw.group_by {
        if key != "subject" && key != CUSTOMER_ID && !meter.group_by.contains_key(key) {
            return Err(ApiError::bad_request(format!(
                "invalid group by: {key} is not a group by key of meter {}",
                meter.slug
            )));
        }
    }
    if !raw.simple_filters.is_empty() && raw.advanced.is_some() {
        return Err(ApiError::bad_request(
            "filterGroupBy and advancedMeterGroupByFilters cannot be used together",
        ));
    }
    let mut filters = BTreeMap::new();
    for (key, values) in raw.simple_filters {
        if !meter.group_by.contains_key(&key) {
            return Err(ApiError::bad_request(format!(
                "invalid filterGroupBy: {key} is not a group by key of meter {}",
                meter.slug
            )));
        }
        let filter = if values.len() == 1 {
            StringFilter::Eq(values.into_iter().next().unwrap_or_default())
        } else {
            StringFilter::In(values)
        };
        filters.insert(key, filter);
    }
    for (key, value) in raw.advanced.unwrap_or_default() {
        if !meter.group_by.contains_key(&key) {
            return Err(ApiError::bad_request(format!(
                "invalid advancedMeterGroupByFilters: {key} is not a group by key of meter {}",
                meter.slug
            )));
        }
        let filter = StringFilter::parse(&value).map_err(|e| {
            ApiError::bad_request(format!("invalid advancedMeterGroupByFilters.{key}: {e}"))
        })?;
        filters.insert(key, filter);
    }
    let mut group_by = raw.group_by;
    group_by.dedup();
    if !customers.is_empty() && !group_by.iter().any(|g| g == CUSTOMER_ID) {
        group_by.push(CUSTOMER_ID.to_owned());
    }
    // Events before the meter's eventFrom never count.
    let from = match (raw.from, meter.event_from) {
        (Some(f), Some(e)) => Some(f.max(e)),
        (f, _) => f,
    };
    Ok(MeterQuery {
        from,
        to: raw.to,
        window_size,
        time_zone,
        subjects: raw.subjects,
        group_by,
        filters,
        customers,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RowJson<'a> {
    value: Quantity,
    window_start: String,
    window_end: String,
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_id: Option<&'a str>,
    group_by: &'a BTreeMap<String, Option<String>>,
}

fn answer(
    req: &HttpRequest,
    meter: &Meter,
    query: &MeterQuery,
    raw_from: Option<DateTime<Utc>>,
    rows: &[ResultRow],
) -> HttpResponse {
    if crate::params::wants_csv(req.headers()) {
        return HttpResponse::Ok()
            .content_type("text/csv")
            .insert_header((
                "Content-Disposition",
                format!("attachment; filename={}.csv", meter.slug),
            ))
            .body(csv(query, rows));
    }
    let data: Vec<RowJson<'_>> = rows
        .iter()
        .map(|r| RowJson {
            value: r.value,
            window_start: format_time(&r.window_start),
            window_end: format_time(&r.window_end),
            subject: r.subject.as_deref(),
            customer_id: r.customer_id.as_deref(),
            group_by: &r.group_by,
        })
        .collect();
    let mut body = serde_json::Map::new();
    if let Some(f) = raw_from {
        body.insert("from".into(), Value::String(format_time(&f)));
    }
    if let Some(t) = query.to {
        body.insert("to".into(), Value::String(format_time(&t)));
    }
    if let Some(w) = query.window_size {
        body.insert("windowSize".into(), Value::String(w.as_str().into()));
    }
    body.insert(
        "data".into(),
        serde_json::to_value(&data).unwrap_or(Value::Array(Vec::new())),
    );
    HttpResponse::Ok().json(Value::Object(body))
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// OpenMeter's CSV: `window_start,window_end[,subject][,<group keys>],value`, values as `%f`.
fn csv(query: &MeterQuery, rows: &[ResultRow]) -> String {
    let by_subject = query.groups_by_subject();
    let by_customer = query.groups_by_customer();
    let keys: Vec<&String> = query
        .group_by
        .iter()
        .filter(|g| *g != "subject" && *g != CUSTOMER_ID)
        .collect();
    let mut out = String::from("window_start,window_end");
    if by_subject {
        out.push_str(",subject");
    }
    if by_customer {
        out.push_str(",customer_id");
    }
    for k in &keys {
        out.push(',');
        out.push_str(&csv_field(k));
    }
    out.push_str(",value\n");
    for r in rows {
        out.push_str(&format_time(&r.window_start));
        out.push(',');
        out.push_str(&format_time(&r.window_end));
        if by_subject {
            out.push(',');
            out.push_str(&csv_field(r.subject.as_deref().unwrap_or("")));
        }
        if by_customer {
            out.push(',');
            out.push_str(&csv_field(r.customer_id.as_deref().unwrap_or("")));
        }
        for k in &keys {
            out.push(',');
            out.push_str(&csv_field(
                r.group_by
                    .get(*k)
                    .cloned()
                    .flatten()
                    .as_deref()
                    .unwrap_or(""),
            ));
        }
        out.push(',');
        out.push_str(&r.value.format_fixed6());
        out.push('\n');
    }
    out
}

pub async fn query_get(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = raw_from_params(&Params::parse(req.query_string())?)?;
    run_query(&state, &req, &path, raw).await
}

pub async fn query_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<QueryBody>,
) -> Result<HttpResponse, ApiError> {
    let raw = raw_from_body(body.into_inner())?;
    run_query(&state, &req, &path, raw).await
}

/// Validates a query (GET or POST form) against its meter and answers it.
async fn run_query(
    state: &AppState,
    req: &HttpRequest,
    meter_ref: &str,
    raw: RawQuery,
) -> Result<HttpResponse, ApiError> {
    state.ready()?;
    let meter = state
        .pipeline
        .get_meter(state.pipeline.namespace(), meter_ref)
        .await?;
    let raw_from = raw.from;
    let customers = resolve_customers(state, &raw.customers).await?;
    let query = build_query(&meter, raw, customers)?;
    let rows = state.pipeline.query_meter(&meter, &query).await?;
    Ok(answer(req, &meter, &query, raw_from, &rows))
}

pub async fn subjects(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.ready()?;
    let meter = state
        .pipeline
        .get_meter(state.pipeline.namespace(), &path)
        .await?;
    let p = Params::parse(req.query_string())?;
    let query = MeterQuery {
        from: p.time("from")?,
        to: p.time("to")?,
        ..MeterQuery::default()
    };
    let list = state.pipeline.meter_subjects(&meter, &query).await?;
    Ok(HttpResponse::Ok().json(list))
}

pub async fn group_by_values(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    state.ready()?;
    let (meter_ref, key) = path.into_inner();
    let meter = state
        .pipeline
        .get_meter(state.pipeline.namespace(), &meter_ref)
        .await?;
    if !meter.group_by.contains_key(&key) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{key} is not a group by key of meter {}", meter.slug),
        ));
    }
    let p = Params::parse(req.query_string())?;
    let from = p
        .time("from")?
        .unwrap_or_else(|| Utc::now() - chrono::Duration::hours(24));
    let query = MeterQuery {
        from: Some(from),
        to: p.time("to")?,
        ..MeterQuery::default()
    };
    let mut values = state.pipeline.group_by_values(&meter, &key, &query).await?;
    if let Some(search) = p.one("search") {
        let needle = search.to_lowercase();
        values.retain(|v| v.to_lowercase().contains(&needle));
    }
    Ok(HttpResponse::Ok().json(values))
}
