//! `/api/v1/notification/*`: channels, rules, events (OpenMeter's notification API).
//! Handlers parse and render; the [`Notifier`](metron_actors::Notifier) validates, stores and
//! delivers.

use crate::error::ApiError;
use crate::params::Params;
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, SecondsFormat, Utc};
use metron_actors::notification::{ChannelInput, Error as NotifyError, RuleInput};
use metron_storage::notifications::{
    Channel, Delivery, Event, EventFilter, Metadata, Rule, RuleType, Threshold,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Registers every notification route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/v1/notification/channels",
        web::get().to(list_channels),
    )
    .route(
        "/api/v1/notification/channels",
        web::post().to(create_channel),
    )
    .route(
        "/api/v1/notification/channels/{id}",
        web::get().to(get_channel),
    )
    .route(
        "/api/v1/notification/channels/{id}",
        web::put().to(update_channel),
    )
    .route(
        "/api/v1/notification/channels/{id}",
        web::delete().to(delete_channel),
    )
    .route("/api/v1/notification/rules", web::get().to(list_rules))
    .route("/api/v1/notification/rules", web::post().to(create_rule))
    .route("/api/v1/notification/rules/{id}", web::get().to(get_rule))
    .route(
        "/api/v1/notification/rules/{id}",
        web::put().to(update_rule),
    )
    .route(
        "/api/v1/notification/rules/{id}",
        web::delete().to(delete_rule),
    )
    .route(
        "/api/v1/notification/rules/{id}/test",
        web::post().to(test_rule),
    )
    .route("/api/v1/notification/events", web::get().to(list_events))
    .route("/api/v1/notification/events/{id}", web::get().to(get_event))
    .route(
        "/api/v1/notification/events/{id}/resend",
        web::post().to(resend_event),
    );
}

impl From<NotifyError> for ApiError {
    fn from(error: NotifyError) -> Self {
        let status = match &error {
            NotifyError::NotFound { .. } => StatusCode::NOT_FOUND,
            NotifyError::Invalid(_) => StatusCode::BAD_REQUEST,
            NotifyError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            NotifyError::Catalog(e) if e.is_refused_value() => {
                return ApiError::bad_request(crate::routes::customers::REFUSED_VALUE);
            }
            NotifyError::Catalog(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.to_string())
    }
}

type Reply = Result<HttpResponse, ApiError>;

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `{totalCount, page, pageSize, items}` of one page.
fn paginate<T>(p: &Params, items: Vec<T>, render: impl Fn(&T) -> Value) -> Result<Value, ApiError> {
    let page = p.usize_in("page", 1, 1, usize::MAX)?;
    let page_size = p.usize_in("pageSize", 100, 1, 1000)?;
    let total = items.len();
    let rendered: Vec<Value> = items
        .iter()
        .skip((page - 1).saturating_mul(page_size))
        .take(page_size)
        .map(render)
        .collect();
    Ok(json!({"totalCount": total, "page": page, "pageSize": page_size, "items": rendered}))
}

/// `order=ASC|DESC` (ASC by default).
fn descending(p: &Params) -> Result<bool, ApiError> {
    match p.one("order").map(str::to_ascii_uppercase).as_deref() {
        None | Some("ASC") => Ok(false),
        Some("DESC") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid order: {other:?} is not ASC or DESC"
        ))),
    }
}

// ---- channels ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChannelBody {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(default)]
    disabled: bool,
    url: String,
    #[serde(default)]
    custom_headers: BTreeMap<String, String>,
    signing_secret: Option<String>,
    metadata: Option<Metadata>,
}

impl ChannelBody {
    fn into_input(self) -> Result<ChannelInput, ApiError> {
        if self.kind != "WEBHOOK" {
            return Err(ApiError::bad_request(format!(
                "invalid channel type {:?}: only WEBHOOK is supported",
                self.kind
            )));
        }
        Ok(ChannelInput {
            name: self.name,
            disabled: self.disabled,
            url: self.url,
            custom_headers: self.custom_headers,
            signing_secret: self.signing_secret,
            metadata: self.metadata,
        })
    }
}

fn render_channel(c: &Channel) -> Value {
    let mut v = json!({
        "createdAt": time(c.created_at),
        "updatedAt": time(c.updated_at),
        "id": c.id,
        "type": "WEBHOOK",
        "name": c.name,
        "disabled": c.disabled,
        "url": c.url,
        "customHeaders": c.custom_headers,
        "signingSecret": c.signing_secret,
    });
    if let Some(map) = v.as_object_mut() {
        if let Some(t) = c.deleted_at {
            map.insert("deletedAt".into(), json!(time(t)));
        }
        if let Some(m) = &c.metadata {
            map.insert("metadata".into(), json!(m));
        }
    }
    v
}

async fn list_channels(state: web::Data<AppState>, req: HttpRequest) -> Reply {
    let p = Params::parse(req.query_string())?;
    let include_deleted = p.bool("includeDeleted")?.unwrap_or(false);
    let include_disabled = p.bool("includeDisabled")?.unwrap_or(false);
    let pipeline = &state.pipeline;
    let mut channels: Vec<Channel> = pipeline
        .notifier()
        .list_channels(pipeline.namespace())
        .await?
        .into_iter()
        .filter(|c| {
            (include_deleted || c.deleted_at.is_none()) && (include_disabled || !c.disabled)
        })
        .collect();
    match p.one("orderBy").unwrap_or("id") {
        // Every channel is a WEBHOOK: by type is by id.
        "id" | "type" => channels.sort_by(|a, b| a.id.cmp(&b.id)),
        "createdAt" => channels.sort_by_key(|c| c.created_at),
        "updatedAt" => channels.sort_by_key(|c| c.updated_at),
        other => return Err(ApiError::bad_request(format!("invalid orderBy: {other:?}"))),
    }
    if descending(&p)? {
        channels.reverse();
    }
    Ok(HttpResponse::Ok().json(paginate(&p, channels, render_channel)?))
}

async fn create_channel(state: web::Data<AppState>, body: web::Json<ChannelBody>) -> Reply {
    let input = body.into_inner().into_input()?;
    let pipeline = &state.pipeline;
    let channel = pipeline
        .notifier()
        .create_channel(pipeline.namespace(), input)
        .await?;
    Ok(HttpResponse::Created().json(render_channel(&channel)))
}

async fn get_channel(state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    let pipeline = &state.pipeline;
    let channel = pipeline
        .notifier()
        .get_channel(pipeline.namespace(), &id)
        .await?;
    Ok(HttpResponse::Ok().json(render_channel(&channel)))
}

async fn update_channel(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<ChannelBody>,
) -> Reply {
    let input = body.into_inner().into_input()?;
    let pipeline = &state.pipeline;
    let channel = pipeline
        .notifier()
        .update_channel(pipeline.namespace(), &id, input)
        .await?;
    Ok(HttpResponse::Ok().json(render_channel(&channel)))
}

async fn delete_channel(state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    let pipeline = &state.pipeline;
    pipeline
        .notifier()
        .delete_channel(pipeline.namespace(), &id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- rules ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleBody {
    #[serde(rename = "type")]
    rule_type: RuleType,
    name: String,
    #[serde(default)]
    disabled: bool,
    channels: Vec<String>,
    #[serde(default)]
    thresholds: Vec<Threshold>,
    #[serde(default)]
    features: Vec<String>,
    metadata: Option<Metadata>,
}

impl From<RuleBody> for RuleInput {
    fn from(b: RuleBody) -> Self {
        RuleInput {
            rule_type: b.rule_type,
            name: b.name,
            disabled: b.disabled,
            channels: b.channels,
            thresholds: b.thresholds,
            features: b.features,
            metadata: b.metadata,
        }
    }
}

/// Features by id and by key, to show a rule's features as `{id, key}`.
struct FeatureNames(BTreeMap<String, (String, String)>);

impl FeatureNames {
    async fn load(state: &AppState) -> Result<Self, ApiError> {
        let pipeline = &state.pipeline;
        let features = pipeline
            .catalog()
            .all_features(pipeline.namespace())
            .await
            .map_err(|e| {
                ApiError::new(
                    actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                    e.to_string(),
                )
            })?;
        let mut names = BTreeMap::new();
        for f in features {
            let pair = (f.id.clone(), f.key.clone());
            names.insert(f.id.clone(), pair.clone());
            if f.archived_at.is_none() {
                names.insert(f.key.clone(), pair);
            }
        }
        Ok(Self(names))
    }

    fn view(&self, reference: &str) -> Value {
        match self.0.get(reference) {
            Some((id, key)) => json!({"id": id, "key": key}),
            None => json!({"id": reference, "key": reference}),
        }
    }

    /// A rule may only name features that exist.
    fn check(&self, features: &[String]) -> Result<(), ApiError> {
        match features.iter().find(|f| !self.0.contains_key(*f)) {
            Some(unknown) => Err(ApiError::bad_request(format!(
                "feature {unknown} not found"
            ))),
            None => Ok(()),
        }
    }
}

fn render_rule(r: &Rule, names: &FeatureNames) -> Value {
    let mut map = Map::new();
    map.insert("createdAt".into(), json!(time(r.created_at)));
    map.insert("updatedAt".into(), json!(time(r.updated_at)));
    if let Some(t) = r.deleted_at {
        map.insert("deletedAt".into(), json!(time(t)));
    }
    map.insert("id".into(), json!(r.id));
    map.insert("type".into(), json!(r.rule_type.as_str()));
    map.insert("name".into(), json!(r.name));
    map.insert("disabled".into(), json!(r.disabled));
    if let Some(m) = &r.metadata {
        map.insert("metadata".into(), json!(m));
    }
    let channels: Vec<Value> = r
        .channels
        .iter()
        .map(|id| json!({"id": id, "type": "WEBHOOK"}))
        .collect();
    map.insert("channels".into(), Value::Array(channels));
    if r.rule_type == RuleType::BalanceThreshold {
        map.insert("thresholds".into(), json!(r.thresholds));
    }
    if !r.features.is_empty() {
        let features: Vec<Value> = r.features.iter().map(|f| names.view(f)).collect();
        map.insert("features".into(), Value::Array(features));
    }
    Value::Object(map)
}

async fn list_rules(state: web::Data<AppState>, req: HttpRequest) -> Reply {
    let p = Params::parse(req.query_string())?;
    let include_deleted = p.bool("includeDeleted")?.unwrap_or(false);
    let include_disabled = p.bool("includeDisabled")?.unwrap_or(false);
    let features = p.all("feature");
    let channels = p.all("channel");
    let pipeline = &state.pipeline;
    let mut rules: Vec<Rule> = pipeline
        .notifier()
        .list_rules(pipeline.namespace())
        .await?
        .into_iter()
        .filter(|r| {
            (include_deleted || r.deleted_at.is_none())
                && (include_disabled || !r.disabled)
                && (features.is_empty() || r.features.iter().any(|f| features.contains(f)))
                && (channels.is_empty() || r.channels.iter().any(|c| channels.contains(c)))
        })
        .collect();
    match p.one("orderBy").unwrap_or("id") {
        "id" => rules.sort_by(|a, b| a.id.cmp(&b.id)),
        "type" => rules.sort_by_key(|r| r.rule_type.as_str()),
        "createdAt" => rules.sort_by_key(|r| r.created_at),
        "updatedAt" => rules.sort_by_key(|r| r.updated_at),
        other => return Err(ApiError::bad_request(format!("invalid orderBy: {other:?}"))),
    }
    if descending(&p)? {
        rules.reverse();
    }
    let names = FeatureNames::load(&state).await?;
    Ok(HttpResponse::Ok().json(paginate(&p, rules, |r| render_rule(r, &names))?))
}

async fn create_rule(state: web::Data<AppState>, body: web::Json<RuleBody>) -> Reply {
    let pipeline = &state.pipeline;
    let names = FeatureNames::load(&state).await?;
    names.check(&body.features)?;
    let rule = pipeline
        .notifier()
        .create_rule(pipeline.namespace(), body.into_inner().into())
        .await?;
    Ok(HttpResponse::Created().json(render_rule(&rule, &names)))
}

async fn get_rule(state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    let pipeline = &state.pipeline;
    let rule = pipeline
        .notifier()
        .get_rule(pipeline.namespace(), &id)
        .await?;
    let names = FeatureNames::load(&state).await?;
    Ok(HttpResponse::Ok().json(render_rule(&rule, &names)))
}

async fn update_rule(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<RuleBody>,
) -> Reply {
    let pipeline = &state.pipeline;
    let names = FeatureNames::load(&state).await?;
    names.check(&body.features)?;
    let rule = pipeline
        .notifier()
        .update_rule(pipeline.namespace(), &id, body.into_inner().into())
        .await?;
    Ok(HttpResponse::Ok().json(render_rule(&rule, &names)))
}

async fn delete_rule(state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    let pipeline = &state.pipeline;
    pipeline
        .notifier()
        .delete_rule(pipeline.namespace(), &id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn test_rule(state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    let pipeline = &state.pipeline;
    let event = pipeline
        .notifier()
        .test_rule(pipeline.namespace(), &id)
        .await?;
    let body = render_event(&state, event).await?;
    Ok(HttpResponse::Created().json(body))
}

// ---- events ----

fn render_delivery(d: &Delivery) -> Value {
    let mut v = json!({
        "state": d.state,
        "reason": d.reason,
        "updatedAt": time(d.updated_at),
        "channel": {"id": d.channel_id, "type": "WEBHOOK"},
        "attempts": d.attempts.iter().map(|a| json!({
            "state": a.state,
            "response": a.response,
            "timestamp": time(a.timestamp),
        })).collect::<Vec<_>>(),
    });
    if let (Some(t), Some(map)) = (d.next_attempt, v.as_object_mut()) {
        map.insert("nextAttempt".into(), json!(time(t)));
    }
    v
}

async fn render_event(state: &AppState, event: Event) -> Result<Value, ApiError> {
    let pipeline = &state.pipeline;
    let rule = pipeline
        .catalog()
        .get_rule(pipeline.namespace(), &event.rule_id)
        .await
        .map_err(NotifyError::from)?;
    let names = FeatureNames::load(state).await?;
    Ok(render_event_with(&event, rule.as_ref(), &names))
}

fn render_event_with(event: &Event, rule: Option<&Rule>, names: &FeatureNames) -> Value {
    json!({
        "id": event.id,
        "type": event.event_type.as_str(),
        "createdAt": time(event.created_at),
        "rule": rule.map_or_else(|| json!({"id": event.rule_id}), |r| render_rule(r, names)),
        "deliveryStatus": event.deliveries.iter().map(render_delivery).collect::<Vec<_>>(),
        "payload": event.payload,
        "annotations": event.annotations,
    })
}

async fn list_events(state: web::Data<AppState>, req: HttpRequest) -> Reply {
    let p = Params::parse(req.query_string())?;
    let filter = EventFilter {
        from: p.time("from")?,
        to: p.time("to")?,
        features: p.all("feature"),
        subjects: p.all("subject"),
        rules: p.all("rule"),
        channels: p.all("channel"),
    };
    let pipeline = &state.pipeline;
    let ns = pipeline.namespace();
    let mut events = pipeline.notifier().list_events(ns, &filter).await?;
    match p.one("orderBy").unwrap_or("createdAt") {
        "createdAt" => {}
        "id" => events.sort_by(|a, b| a.id.cmp(&b.id)),
        other => return Err(ApiError::bad_request(format!("invalid orderBy: {other:?}"))),
    }
    if descending(&p)? {
        events.reverse();
    }
    let rules: BTreeMap<String, Rule> = pipeline
        .catalog()
        .list_rules(ns)
        .await
        .map_err(NotifyError::from)?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let names = FeatureNames::load(&state).await?;
    let page = paginate(&p, events, |e| {
        render_event_with(e, rules.get(&e.rule_id), &names)
    })?;
    Ok(HttpResponse::Ok().json(page))
}

async fn get_event(state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    let pipeline = &state.pipeline;
    let event = pipeline
        .notifier()
        .get_event(pipeline.namespace(), &id)
        .await?;
    Ok(HttpResponse::Ok().json(render_event(&state, event).await?))
}

#[derive(Deserialize, Default)]
struct ResendBody {
    #[serde(default)]
    channels: Vec<String>,
}

async fn resend_event(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Reply {
    let body: ResendBody = if body.iter().all(u8::is_ascii_whitespace) {
        ResendBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?
    };
    let pipeline = &state.pipeline;
    pipeline
        .notifier()
        .resend_event(pipeline.namespace(), &id, &body.channels)
        .await?;
    Ok(HttpResponse::Accepted().finish())
}
