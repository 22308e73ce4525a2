//! `POST /api/v1/events`, `GET /api/v1/events`, `GET /api/v2/events`.

use crate::error::ApiError;
use crate::limits::{INGEST_BODY_BYTES_MAX, LIST_EVENTS_MAX};
use crate::params::Params;
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use metron_actors::metrics::Metrics;
use metron_actors::pipeline::{EventFilter, EventKey, ListedEvent};
use metron_engine::event::{BodyError, BodyKind, EventLimits, format_time, parse_parts};
use metron_engine::filter::StringFilter;
use serde_json::{Value, json};

/// Which body kind a Content-Type announces (parameters such as charset are ignored).
pub fn body_kind(content_type: Option<&str>) -> Result<BodyKind, ApiError> {
    let raw = content_type.unwrap_or("");
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/cloudevents+json" => Ok(BodyKind::Single),
        "application/cloudevents-batch+json" => Ok(BodyKind::Batch),
        "application/json" => Ok(BodyKind::Json),
        _ => Err(ApiError::bad_request(format!(
            "invalid content type: {raw}"
        ))),
    }
}

/// The events of an ingest request's body, as its Content-Type announces them.
pub fn parse_ingest<'a>(
    req: &HttpRequest,
    body: &'a [u8],
) -> Result<Vec<metron_engine::event::EventParts<'a>>, ApiError> {
    if body.len() > INGEST_BODY_BYTES_MAX {
        return Err(ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        ));
    }
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    let limits = EventLimits::default();
    body_kind(content_type).and_then(|kind| {
        parse_parts(body, kind, Utc::now(), &limits).map_err(|e| match e {
            BodyError::TooManyEvents { .. } => ApiError::new(
                actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                e.to_string(),
            ),
            _ => ApiError::bad_request(e.to_string()),
        })
    })
}

pub async fn ingest(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let metrics = state.pipeline.metrics();
    Metrics::add(&metrics.ingest_requests_total, 1);
    let parsed = parse_ingest(&req, &body);
    let events = match parsed {
        Ok(events) => events,
        Err(error) => {
            Metrics::add(&metrics.ingest_rejected_total, 1);
            return Err(error);
        }
    };
    match state
        .pipeline
        .ingest(state.pipeline.namespace(), &events)
        .await
    {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(error) => {
            use metron_actors::pipeline::Error as E;
            let cause = match &error {
                E::PartlyStored { cause, .. } => cause.as_ref(),
                other => other,
            };
            if matches!(cause, E::Overloaded { .. }) {
                Metrics::add(&metrics.ingest_overloaded_total, 1);
            }
            Err(error.into())
        }
    }
}

fn listed_json(item: &ListedEvent) -> Value {
    let mut value = json!({
        "event": item.event.event,
        "ingestedAt": format_time(&item.event.ingested_at),
        "storedAt": format_time(&item.event.ingested_at),
    });
    if let (Some(id), Some(map)) = (&item.customer_id, value.as_object_mut()) {
        map.insert("customerId".into(), Value::String(id.clone()));
    }
    if let (Some(error), Some(map)) = (&item.validation_error, value.as_object_mut()) {
        map.insert("validationError".into(), Value::String(error.clone()));
    }
    value
}

/// The attribution (key and subject keys) of the live customers asked for; an
/// unknown id is a 400, as OpenMeter's event listing answers.
async fn customer_subjects(state: &AppState, ids: &[String]) -> Result<Vec<String>, ApiError> {
    let namespace = state.pipeline.namespace();
    let mut subjects = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        let customer = state
            .pipeline
            .catalog()
            .get_customer_by_id(namespace, id)
            .await
            .map_err(crate::routes::customers::catalog_error)?
            .filter(|c| c.deleted_at.is_none());
        match customer {
            Some(c) => subjects.extend(c.subjects()),
            None => missing.push(id.as_str()),
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::bad_request(format!(
            "customers not found in namespace {namespace}: {}",
            missing.join(", ")
        )));
    }
    Ok(subjects)
}

pub async fn list_v1(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.ready()?;
    let p = Params::parse(req.query_string())?;
    let now = Utc::now();
    let from = p.time("from")?;
    let to = p.time("to")?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(ApiError::bad_request("from must be before to"));
    }
    let customer_subjects = customer_subjects(&state, &p.all("customerId")).await?;
    let filter = EventFilter {
        namespace: state.pipeline.namespace().to_owned(),
        from,
        to,
        ingested_from: p.time("ingestedAtFrom")?,
        ingested_to: p.time("ingestedAtTo")?,
        subjects: p.all("subject"),
        id_contains: p.one("id").map(str::to_owned),
        customer_subjects,
        limit: p.usize_in("limit", LIST_EVENTS_MAX, 1, LIST_EVENTS_MAX)?,
        ..EventFilter::default()
    };
    let _ = now;
    let items = state.pipeline.list_events(&filter).await?;
    let body: Vec<Value> = items.iter().map(listed_json).collect();
    Ok(HttpResponse::Ok().json(body))
}

/// `[lo, hi)` of a FilterTime.
type TimeBounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The v2 filter: `{"id": FilterString, "source": ..., "subject": ..., "type": ..., "time": FilterTime, "ingestedAt": FilterTime}`.
struct V2Filter {
    strings: Vec<(&'static str, StringFilter)>,
    /// `customerId` (FilterIDExact: `$in`).
    customers: Vec<String>,
    time: TimeBounds,
    ingested: TimeBounds,
}

fn time_filter(value: &Value, name: &str) -> Result<TimeBounds, ApiError> {
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(format!(
            "filter.{name} must be an object"
        )));
    };
    let (mut lo, mut hi) = (None, None);
    for (op, v) in map {
        let t = v
            .as_str()
            .and_then(metron_engine::event::parse_time)
            .ok_or_else(|| {
                ApiError::bad_request(format!("filter.{name}.{op} must be an RFC 3339 date-time"))
            })?;
        match op.as_str() {
            "$gte" => lo = Some(t),
            "$gt" => lo = Some(t + chrono::Duration::microseconds(1)),
            "$lt" => hi = Some(t),
            "$lte" => hi = Some(t + chrono::Duration::microseconds(1)),
            other => {
                return Err(ApiError::bad_request(format!(
                    "filter.{name}: unsupported operator {other}"
                )));
            }
        }
    }
    Ok((lo, hi))
}

fn parse_v2_filter(text: Option<&str>) -> Result<V2Filter, ApiError> {
    let mut out = V2Filter {
        strings: Vec::new(),
        customers: Vec::new(),
        time: (None, None),
        ingested: (None, None),
    };
    let Some(text) = text else {
        return Ok(out);
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request("filter must be a JSON object"));
    };
    for (key, v) in &map {
        match key.as_str() {
            "id" | "source" | "subject" | "type" => {
                let name: &'static str = match key.as_str() {
                    "id" => "id",
                    "source" => "source",
                    "subject" => "subject",
                    _ => "type",
                };
                let f = StringFilter::parse(v)
                    .map_err(|e| ApiError::bad_request(format!("filter.{key}: {e}")))?;
                out.strings.push((name, f));
            }
            "time" => out.time = time_filter(v, "time")?,
            "ingestedAt" => out.ingested = time_filter(v, "ingestedAt")?,
            "customerId" => {
                let ids = v
                    .get("$in")
                    .and_then(Value::as_array)
                    .filter(|_| v.as_object().is_some_and(|m| m.len() == 1))
                    .ok_or_else(|| {
                        ApiError::bad_request("filter.customerId must be {\"$in\": [ids]}")
                    })?;
                out.customers = ids
                    .iter()
                    .map(|i| {
                        i.as_str().map(str::to_owned).ok_or_else(|| {
                            ApiError::bad_request("filter.customerId.$in must list strings")
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "filter: unknown field {other}"
                )));
            }
        }
    }
    Ok(out)
}

pub async fn list_v2(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.ready()?;
    let p = Params::parse(req.query_string())?;
    let limit = p.usize_in("limit", LIST_EVENTS_MAX, 1, LIST_EVENTS_MAX)?;
    let filter = parse_v2_filter(p.one("filter"))?;
    // The cursor names the last item of the previous page: "<time micros>:<ingested micros>:<id>".
    let cursor = match p.one("cursor") {
        None => None,
        Some(text) => {
            let mut parts = text.splitn(3, ':');
            let t = parts.next().and_then(|s| s.parse::<i64>().ok());
            let i = parts.next().and_then(|s| s.parse::<i64>().ok());
            let id = parts.next();
            match (t, i, id) {
                (Some(time_us), Some(ingested_us), Some(id)) if !id.is_empty() => Some(EventKey {
                    time_us,
                    ingested_us,
                    id: id.to_owned(),
                }),
                _ => return Err(ApiError::bad_request("invalid cursor")),
            }
        }
    };
    let customer_subjects = customer_subjects(&state, &filter.customers).await?;
    // Filters, cursor and limit go into the listing itself: one more than a page
    // tells whether there is a next one.
    let query = EventFilter {
        namespace: state.pipeline.namespace().to_owned(),
        from: filter.time.0,
        to: filter.time.1,
        ingested_from: filter.ingested.0,
        ingested_to: filter.ingested.1,
        customer_subjects,
        matchers: filter.strings,
        before: cursor,
        limit: limit + 1,
        ..EventFilter::default()
    };
    let items = state.pipeline.list_events(&query).await?;
    let more = items.len() > limit;
    let page = &items[..items.len().min(limit)];
    let next = if more {
        page.last().map(|e| {
            let k = EventKey::of(&e.event);
            format!("{}:{}:{}", k.time_us, k.ingested_us, k.id)
        })
    } else {
        None
    };
    let items: Vec<Value> = page.iter().map(listed_json).collect();
    let mut body = json!({ "items": items });
    if let (Some(next), Some(map)) = (next, body.as_object_mut()) {
        map.insert("nextCursor".into(), Value::String(next));
    }
    Ok(HttpResponse::Ok().json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_read_leniently() {
        assert_eq!(
            body_kind(Some("application/cloudevents+json; charset=utf-8")).ok(),
            Some(BodyKind::Single)
        );
        assert_eq!(
            body_kind(Some("application/cloudevents-batch+json")).ok(),
            Some(BodyKind::Batch)
        );
        assert_eq!(
            body_kind(Some("Application/JSON")).ok(),
            Some(BodyKind::Json)
        );
        assert!(body_kind(Some("text/xml")).is_err());
        assert!(body_kind(None).is_err());
    }
}
