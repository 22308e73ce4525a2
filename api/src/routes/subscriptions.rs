//! Subscriptions (`/api/v1/subscriptions`, `/api/v1/customers/{id}/subscriptions`): create from
//! a published plan or a custom plan, read expanded, cancel and continue, change plan, migrate
//! to another version, delete a scheduled one. A rate card's entitlement template becomes the
//! customer's entitlement for its phase, through the entitlements engine; the entitlement API
//! refuses to delete it.

use crate::error::ApiError;
use crate::params::Params;
use crate::routes::entitlements::{
    create_managed, reload_customer, render_managed, set_managed_end,
};
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Duration, Utc};
use metron_engine::billing::{EntitlementTemplate, RateCard};
use metron_engine::event::parse_time;
use metron_storage::customers::Customer;
use metron_storage::product_catalog::Status as PlanStatus;
use metron_storage::product_catalog::plans::PlanBody;
use metron_storage::subscriptions::patch::{self, Patch, PatchError};
use metron_storage::subscriptions::{
    Item, NewSubscription, PlanRef, Status, Subscription, SubscriptionError, build,
};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/subscriptions", web::post().to(create))
        .route("/api/v1/subscriptions/{id}", web::get().to(get))
        .route("/api/v1/subscriptions/{id}", web::delete().to(delete))
        .route("/api/v1/subscriptions/{id}", web::patch().to(edit))
        .route("/api/v1/subscriptions/{id}/cancel", web::post().to(cancel))
        .route(
            "/api/v1/subscriptions/{id}/unschedule-cancelation",
            web::post().to(unschedule_cancelation),
        )
        .route(
            "/api/v1/subscriptions/{id}/restore",
            web::post().to(restore),
        )
        .route("/api/v1/subscriptions/{id}/change", web::post().to(change))
        .route(
            "/api/v1/subscriptions/{id}/migrate",
            web::post().to(migrate),
        )
        .route(
            "/api/v1/customers/{customer}/subscriptions",
            web::get().to(list_customer),
        );
}

/// How far in the past a scheduled start may be (OpenMeter's create tolerance).
const PAST_TOLERANCE_SECONDS: i64 = 120;

pub(crate) fn subscription_error(error: SubscriptionError) -> ApiError {
    match error {
        SubscriptionError::Catalog(e) => crate::routes::customers::catalog_error(e),
        SubscriptionError::Invalid(detail) => ApiError::bad_request(detail),
        SubscriptionError::NotFound(id) => {
            ApiError::not_found(format!("subscription {id:?} not found"))
        }
        e @ SubscriptionError::Forbidden { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, e.to_string())
        }
        e @ SubscriptionError::Overlap { .. } => {
            let SubscriptionError::Overlap { conflicting_id } = &e else {
                unreachable!("matched above")
            };
            let mut api = ApiError::new(StatusCode::CONFLICT, e.to_string());
            api.extensions = Some(json!({"validationErrors": [{
                "code": "only_single_subscription_allowed_per_customer_at_a_time",
                "message": "only single subscription is allowed per customer at a time",
                "field": "",
                "attributes": {"conflictingSubscriptionId": conflicting_id},
            }]}));
            api
        }
    }
}

pub(crate) fn ns(state: &AppState) -> &str {
    state.pipeline.namespace()
}

/// `SubscriptionTiming`: `immediate`, `next_billing_cycle` or a time.
pub(crate) enum Timing {
    Immediate,
    NextBillingCycle,
    At(DateTime<Utc>),
}

pub(crate) fn timing(body: &Value, default: Option<Timing>) -> Result<Timing, ApiError> {
    match body.get("timing") {
        None | Some(Value::Null) => {
            default.ok_or_else(|| ApiError::bad_request("timing is required"))
        }
        Some(Value::String(s)) if s == "immediate" => Ok(Timing::Immediate),
        Some(Value::String(s)) if s == "next_billing_cycle" => Ok(Timing::NextBillingCycle),
        Some(Value::String(s)) => parse_time(s)
            .map(Timing::At)
            .ok_or_else(|| ApiError::bad_request(format!("invalid timing {s:?}"))),
        Some(other) => Err(ApiError::bad_request(format!("invalid timing {other}"))),
    }
}

/// The instant a change to a running subscription takes effect.
pub(crate) fn resolve(
    sub: &Subscription,
    t: Timing,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ApiError> {
    match t {
        Timing::Immediate => Ok(now),
        Timing::NextBillingCycle => Ok(sub.aligned_period_at(now).map_err(subscription_error)?.1),
        Timing::At(at) => {
            if at < now {
                return Err(ApiError::bad_request(
                    "cannot schedule a change in the past",
                ));
            }
            if !sub.is_period_boundary(at).map_err(subscription_error)? {
                return Err(ApiError::bad_request(format!(
                    "timing {} is not aligned with the billing period of the subscription",
                    at.to_rfc3339()
                )));
            }
            Ok(at)
        }
    }
}

pub(crate) fn opt_str<'a>(body: &'a Value, name: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    }
}

fn opt_time(body: &Value, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    opt_str(body, name)?
        .map(|s| {
            parse_time(s).ok_or_else(|| ApiError::bad_request(format!("invalid {name} {s:?}")))
        })
        .transpose()
}

pub(crate) fn metadata(body: &Value) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    match body.get("metadata") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| ApiError::bad_request(format!("metadata: {e}"))),
    }
}

pub(crate) async fn customer_of(state: &AppState, id_or_key: &str) -> Result<Customer, ApiError> {
    state
        .pipeline
        .catalog()
        .get_customer(ns(state), id_or_key)
        .await
        .map_err(crate::routes::customers::catalog_error)?
        .ok_or_else(|| ApiError::not_found(format!("customer {id_or_key:?} not found")))
}

pub(crate) async fn subscription(state: &AppState, id: &str) -> Result<Subscription, ApiError> {
    state
        .pipeline
        .catalog()
        .get_subscription(ns(state), id)
        .await
        .map_err(subscription_error)?
        .ok_or_else(|| ApiError::not_found(format!("subscription {id:?} not found")))
}

/// The plan a request names: `plan: {key, version?}` (the key's active version when no
/// version is given; a given version must be published), or a `customPlan`.
async fn plan_of(state: &AppState, body: &Value) -> Result<(Option<PlanRef>, PlanBody), ApiError> {
    if let Some(custom) = body.get("customPlan") {
        let plan: PlanBody = serde_json::from_value(custom.clone())
            .map_err(|e| ApiError::bad_request(format!("customPlan: {e}")))?;
        let issues = metron_storage::product_catalog::Body::issues(&plan);
        if !issues.is_empty() {
            return Err(crate::routes::plans::product_error(
                metron_storage::product_catalog::ProductError::Invalid(issues),
            ));
        }
        return Ok((None, plan));
    }
    let reference = body
        .get("plan")
        .ok_or_else(|| ApiError::bad_request("plan or customPlan is required"))?;
    let key = reference
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("plan.key is required"))?;
    let version = match reference.get("version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| ApiError::bad_request("plan.version must be an integer"))?,
        ),
    };
    find_plan(state, key, version).await
}

async fn find_plan(
    state: &AppState,
    key: &str,
    version: Option<i64>,
) -> Result<(Option<PlanRef>, PlanBody), ApiError> {
    let versions = state.pipeline.catalog().versions(ns(state));
    let now = Utc::now();
    let found = match version {
        Some(v) => versions.get_by_key_version::<PlanBody>(key, v).await,
        None => versions.get_by_id_or_key::<PlanBody>(key, false, now).await,
    }
    .map_err(crate::routes::plans::product_error)?;
    let plan = found.ok_or_else(|| {
        ApiError::not_found(match version {
            Some(v) => format!("plan {key:?} version {v} not found"),
            None => format!("plan {key:?} has no active version"),
        })
    })?;
    if plan.status(now) == PlanStatus::Draft {
        return Err(ApiError::bad_request(format!(
            "plan {key:?} version {} is a draft: only published plans can be subscribed to",
            plan.version
        )));
    }
    Ok((
        Some(PlanRef {
            id: plan.id.clone(),
            key: plan.key.clone(),
            version: plan.version,
        }),
        plan.body,
    ))
}

/// The v2 entitlement create body for a rate card's entitlement template.
fn entitlement_body(card: &RateCard, sub: &Subscription) -> Option<Value> {
    let view = card.view();
    let template = view.entitlement_template?;
    let feature = view.feature_key?;
    let mut body = match serde_json::to_value(template) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    body.insert("featureKey".into(), json!(feature));
    if let EntitlementTemplate::Metered(m) = template {
        let interval = m
            .usage_period
            .clone()
            .or_else(|| view.billing_cadence.map(str::to_owned))
            .unwrap_or_else(|| sub.billing_cadence.clone());
        body.insert(
            "usagePeriod".into(),
            json!({"interval": interval, "anchor": sub.billing_anchor}),
        );
    }
    Some(Value::Object(body))
}

/// Creates the entitlement of every item with a template that has none yet, for the item's
/// interval (items never active get none).
pub(crate) async fn create_entitlements(
    state: &AppState,
    customer: &Customer,
    sub: &mut Subscription,
) -> Result<(), ApiError> {
    for index in 0..sub.phases.len() {
        for item in 0..sub.phases[index].items.len() {
            let current = &sub.phases[index].items[item];
            if current.entitlement_id.is_some() {
                continue;
            }
            let (from, to) = sub.item_interval(index, current);
            if to.is_some_and(|to| to <= from) {
                continue;
            }
            let Some(body) = entitlement_body(&current.rate_card, sub) else {
                continue;
            };
            let record = create_managed(state, customer, &body, from, to, &sub.id).await?;
            sub.phases[index].items[item].entitlement_id = Some(record.id);
        }
    }
    Ok(())
}

/// Moves every managed entitlement's end to its item's (new) end, and has billing look at
/// the subscription again (its lines follow its end). Versions of an item split by an add-on
/// share their entitlement: it ends with the last of them.
pub(crate) async fn align_entitlements(
    state: &AppState,
    sub: &Subscription,
) -> Result<(), ApiError> {
    state.billing.subscription_changed(&sub.id);
    let mut ends: BTreeMap<&str, Option<DateTime<Utc>>> = BTreeMap::new();
    for (index, phase) in sub.phases.iter().enumerate() {
        for item in &phase.items {
            let Some(id) = &item.entitlement_id else {
                continue;
            };
            let (from, to) = sub.item_interval(index, item);
            // An item cut off by the end keeps an empty interval: never active.
            let to = to.map(|t| t.max(from));
            ends.entry(id)
                .and_modify(|end| {
                    *end = match (*end, to) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    }
                })
                .or_insert(to);
        }
    }
    for (id, to) in &ends {
        set_managed_end(state, id, *to).await?;
    }
    if !ends.is_empty() {
        reload_customer(state, &sub.customer_id).await?;
    }
    Ok(())
}

/// Ends, as never active, the entitlements no item of the spec holds any more (an edit dropped
/// the item, or an add-on changed its template).
pub(crate) async fn end_dropped(
    state: &AppState,
    before: &Subscription,
    after: &Subscription,
) -> Result<(), ApiError> {
    let kept: std::collections::BTreeSet<&str> = after
        .phases
        .iter()
        .flat_map(|p| &p.items)
        .filter_map(|i| i.entitlement_id.as_deref())
        .collect();
    for (index, phase) in before.phases.iter().enumerate() {
        for item in &phase.items {
            if let Some(id) = &item.entitlement_id
                && !kept.contains(id.as_str())
            {
                let (from, _) = before.item_interval(index, item);
                set_managed_end(state, id, Some(from)).await?;
            }
        }
    }
    Ok(())
}

/// Builds, stores and materialises a new subscription (the `ending` one is shortened in the
/// same transaction). If the entitlements cannot be created the new subscription is removed.
async fn start(
    state: &AppState,
    customer: &Customer,
    mut sub: Subscription,
    ending: Option<&Subscription>,
) -> Result<Subscription, ApiError> {
    state
        .pipeline
        .catalog()
        .insert_subscription(ns(state), &sub, ending)
        .await
        .map_err(subscription_error)?;
    if let Some(end) = ending {
        align_entitlements(state, end).await?;
    }
    if let Err(error) = create_entitlements(state, customer, &mut sub).await {
        sub.deleted_at = Some(Utc::now());
        let mut cut = sub.clone();
        cut.active_to = Some(sub.active_from);
        align_entitlements(state, &cut).await?;
        state
            .pipeline
            .catalog()
            .update_subscription(&sub)
            .await
            .map_err(subscription_error)?;
        if let Some(end) = ending {
            let mut restored = end.clone();
            restored.active_to = None;
            state
                .pipeline
                .catalog()
                .update_subscription(&restored)
                .await
                .map_err(subscription_error)?;
            align_entitlements(state, &restored).await?;
        }
        return Err(error);
    }
    state
        .pipeline
        .catalog()
        .update_subscription(&sub)
        .await
        .map_err(subscription_error)?;
    state.billing.subscription_changed(&sub.id);
    if let Some(end) = ending {
        state.billing.subscription_changed(&end.id);
    }
    Ok(sub)
}

// ---- read models ----

fn item_json(
    sub: &Subscription,
    card: &RateCard,
    id: &str,
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
    included: Option<Value>,
) -> Value {
    let card_json = serde_json::to_value(card).unwrap_or(Value::Null);
    let pick = |name: &str| card_json.get(name).cloned();
    let mut out = json!({
        "id": id,
        "name": pick("name").unwrap_or(Value::Null),
        "createdAt": sub.created_at,
        "updatedAt": sub.updated_at,
        "activeFrom": from,
        "key": card.key(),
        "currency": sub.currency,
        "billingCadence": pick("billingCadence").unwrap_or(Value::Null),
        "price": pick("price").unwrap_or(Value::Null),
    });
    if let Value::Object(map) = &mut out {
        for name in [
            "description",
            "metadata",
            "featureKey",
            "discounts",
            "taxConfig",
        ] {
            if let Some(v) = pick(name).filter(|v| !v.is_null()) {
                map.insert(name.into(), v);
            }
        }
        if let Some(to) = to {
            map.insert("activeTo".into(), json!(to));
        }
        if let Some(included) = included {
            map.insert("included".into(), included);
        }
    }
    out
}

/// `Subscription`.
fn subscription_json(sub: &Subscription, at: DateTime<Utc>) -> Value {
    let mut out = json!({
        "id": sub.id,
        "name": sub.name,
        "createdAt": sub.created_at,
        "updatedAt": sub.updated_at,
        "activeFrom": sub.active_from,
        "status": sub.status(at),
        "customerId": sub.customer_id,
        "currency": sub.currency,
        "costBasisMode": "dynamic",
        "costBasisPins": [],
        "billingCadence": sub.billing_cadence,
        "proRatingConfig": sub.pro_rating_config,
        "billingAnchor": sub.billing_anchor,
        "settlementMode": sub.settlement_mode,
    });
    if let Value::Object(map) = &mut out {
        if let Some(d) = &sub.description {
            map.insert("description".into(), json!(d));
        }
        if let Some(m) = &sub.metadata {
            map.insert("metadata".into(), json!(m));
        }
        if let Some(t) = sub.active_to {
            map.insert("activeTo".into(), json!(t));
        }
        if let Some(t) = sub.deleted_at {
            map.insert("deletedAt".into(), json!(t));
        }
        if let Some(p) = &sub.plan {
            map.insert("plan".into(), json!(p));
        }
    }
    out
}

/// An item version with its active interval.
type Version<'a> = (DateTime<Utc>, Option<DateTime<Utc>>, &'a Item);

/// An item's `included`: its feature and the entitlement it manages.
async fn included_json(
    state: &AppState,
    customer: &Customer,
    item: &Item,
) -> Result<Option<Value>, ApiError> {
    let Some(key) = item.rate_card.view().feature_key else {
        return Ok(None);
    };
    let feature = state
        .pipeline
        .catalog()
        .get_feature(ns(state), key)
        .await
        .map_err(crate::routes::customers::catalog_error)?;
    let entitlement = match &item.entitlement_id {
        Some(id) => render_managed(state, customer, id).await?,
        None => None,
    };
    Ok(feature.map(|f| {
        let mut inc = json!({"feature": f});
        if let (Value::Object(m), Some(e)) = (&mut inc, entitlement) {
            m.insert("entitlement".into(), e);
        }
        inc
    }))
}

/// `SubscriptionExpanded`: phases with their items, each item's feature and entitlement.
async fn expanded_json(
    state: &AppState,
    customer: &Customer,
    sub: &Subscription,
    at: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let mut out = subscription_json(sub, at);
    let mut phases = Vec::new();
    for (index, phase) in sub.live_phases() {
        let (from, to) = sub.phase_interval(index);
        let mut items = Vec::new();
        let mut timelines = Map::new();
        let mut keys: Vec<&str> = Vec::new();
        for item in &phase.items {
            if !keys.contains(&item.rate_card.key()) {
                keys.push(item.rate_card.key());
            }
        }
        for key in keys {
            // Every version of the key in time order (never-active ones left out); `items`
            // shows one per key as OpenMeter flattens them: the one running at `at` in the
            // current phase, the last of a past phase, the first of a future one.
            let mut versions: Vec<Version<'_>> = phase
                .items
                .iter()
                .filter(|i| i.rate_card.key() == key)
                .map(|i| {
                    let (f, t) = sub.item_interval(index, i);
                    (f, t, i)
                })
                .filter(|(f, t, _)| t.is_none_or(|t| t > *f))
                .collect();
            versions.sort_by_key(|(f, _, _)| *f);
            let shown = if from > at {
                versions.first()
            } else if to.is_some_and(|t| t <= at) {
                versions.last()
            } else {
                versions
                    .iter()
                    .find(|(f, t, _)| *f <= at && t.is_none_or(|t| at < t))
            }
            .map(|(_, _, item)| item.id.clone());
            let mut timeline = Vec::new();
            for (f, t, item) in versions {
                let included = included_json(state, customer, item).await?;
                let json = item_json(sub, &item.rate_card, &item.id, f, t, included);
                if shown.as_deref() == Some(item.id.as_str()) {
                    items.push(json.clone());
                }
                timeline.push(json);
            }
            if !timeline.is_empty() {
                timelines.insert(key.to_owned(), json!(timeline));
            }
        }
        let mut p = json!({
            "id": phase.id,
            "name": phase.name,
            "createdAt": sub.created_at,
            "updatedAt": sub.updated_at,
            "key": phase.key,
            "activeFrom": from,
            "items": items,
            "itemTimelines": timelines,
        });
        if let Value::Object(map) = &mut p {
            if let Some(t) = to {
                map.insert("activeTo".into(), json!(t));
            }
            if let Some(d) = &phase.description {
                map.insert("description".into(), json!(d));
            }
            if let Some(m) = &phase.metadata {
                map.insert("metadata".into(), json!(m));
            }
        }
        phases.push(p);
    }
    let mut alignment = json!({"billablesMustAlign": true});
    if matches!(sub.status(at), Status::Active | Status::Canceled)
        && let Ok((from, to)) = sub.aligned_period_at(at)
        && let Value::Object(map) = &mut alignment
    {
        map.insert(
            "currentAlignedBillingPeriod".into(),
            json!({"from": from, "to": to}),
        );
    }
    if let Value::Object(map) = &mut out {
        map.insert("phases".into(), json!(phases));
        map.insert("alignment".into(), alignment);
    }
    Ok(out)
}

// ---- handlers ----

async fn create(
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let customer_ref = opt_str(&body, "customerId")?
        .or(opt_str(&body, "customerKey")?)
        .ok_or_else(|| ApiError::bad_request("customerId or customerKey is required"))?;
    let customer = customer_of(&state, customer_ref).await?;
    let now = Utc::now();
    let active_from = match timing(&body, Some(Timing::Immediate))? {
        Timing::Immediate => now,
        Timing::At(at) => {
            if at < now - Duration::seconds(PAST_TOLERANCE_SECONDS) {
                return Err(ApiError::bad_request(
                    "cannot create subscription in the past",
                ));
            }
            at
        }
        Timing::NextBillingCycle => {
            return Err(ApiError::bad_request(
                "timing next_billing_cycle is not supported when creating a subscription",
            ));
        }
    };
    let (plan, plan_body) = plan_of(&state, &body).await?;
    let sub = build(
        NewSubscription {
            customer_id: customer.id.clone(),
            plan,
            body: &plan_body,
            name: opt_str(&body, "name")?.map(str::to_owned),
            description: opt_str(&body, "description")?.map(str::to_owned),
            metadata: metadata(&body)?,
            settlement_mode: opt_str(&body, "settlementMode")?.map(str::to_owned),
            active_from,
            billing_anchor: opt_time(&body, "billingAnchor")?,
            starting_phase: opt_str(&body, "startingPhase")?.map(str::to_owned),
        },
        now,
    )
    .map_err(subscription_error)?;
    let sub = start(&state, &customer, sub, None).await?;
    Ok(HttpResponse::Created().json(expanded_json(&state, &customer, &sub, now).await?))
}

async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let at = Params::parse(req.query_string())?
        .time("at")?
        .unwrap_or_else(Utc::now);
    let sub = subscription(&state, &path).await?;
    let customer = customer_of(&state, &sub.customer_id).await?;
    Ok(HttpResponse::Ok().json(expanded_json(&state, &customer, &sub, at).await?))
}

/// OpenMeter's state machine: `action` is allowed only in the `allowed` status (403).
pub(crate) fn require(
    sub: &Subscription,
    action: &'static str,
    allowed: Status,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let status = sub.status(now);
    if status == allowed {
        Ok(())
    } else {
        Err(subscription_error(SubscriptionError::Forbidden {
            action,
            status: status.as_str(),
        }))
    }
}

/// Most operations in one edit (`SubscriptionEdit.customizations`, `maxItems`).
const EDIT_OPERATIONS_MAX: usize = 100;

fn patch_error(error: PatchError) -> ApiError {
    let detail = error.to_string();
    match error {
        PatchError::Invalid { .. } => ApiError::bad_request(detail),
        PatchError::RateCard { index, issues } => {
            let prefix = format!("customizations[{index}].rateCard");
            crate::routes::plans::product_error(
                metron_storage::product_catalog::ProductError::Invalid(
                    issues.into_iter().map(|i| i.under(&prefix)).collect(),
                ),
            )
        }
        PatchError::Forbidden { .. } => ApiError::new(StatusCode::FORBIDDEN, detail),
        PatchError::Conflict { .. } => ApiError::new(StatusCode::CONFLICT, detail),
    }
}

/// The edits of a `SubscriptionEdit` body.
fn customizations(body: &Value) -> Result<Vec<Patch>, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the body must be an object"));
    }
    let list = match body.get("customizations") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(ApiError::bad_request("missing customizations"));
        }
        Some(_) => return Err(ApiError::bad_request("customizations must be an array")),
    };
    if list.len() > EDIT_OPERATIONS_MAX {
        return Err(ApiError::bad_request(format!(
            "at most {EDIT_OPERATIONS_MAX} customizations are allowed"
        )));
    }
    list.iter()
        .enumerate()
        .map(|(idx, op)| {
            Patch::from_json(op).map_err(|e| {
                ApiError::bad_request(format!(
                    "failed to map patch at idx {idx} to subscription.Patch: {e}"
                ))
            })
        })
        .collect()
}

/// `PATCH /api/v1/subscriptions/{id}`: applies the edits at `timing` (immediate, or the next
/// billing cycle within the running phase; OpenMeter refuses a custom time), materialises the
/// entitlements of added items and ends those of removed ones, and has billing look again.
/// The plan reference stays, as in OpenMeter.
async fn edit(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let patches = customizations(&body)?;
    let before = subscription(&state, &path).await?;
    let now = Utc::now();
    require(&before, "update", Status::Active, now)?;
    let addons = state
        .pipeline
        .catalog()
        .subscription_addons(ns(&state), &before.id)
        .await
        .map_err(crate::routes::subscription_addons::addon_error)?;
    if addons.iter().any(|a| a.last_quantity() > 0) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "subscription with addons cannot be edited",
        ));
    }
    let at = match timing(&body, Some(Timing::Immediate))? {
        Timing::At(_) => {
            return Err(ApiError::bad_request(
                "invalid timing: cannot edit running subscription with custom timing",
            ));
        }
        t => resolve(&before, t, now)?,
    };
    if let (Some((current, _)), Some((later, _))) = (before.phase_at(now), before.phase_at(at))
        && current != later
    {
        return Err(ApiError::bad_request(
            "invalid timing: cannot edit to the next billing cycle as it falls into a different phase",
        ));
    }
    let mut sub = before.clone();
    patch::apply(&mut sub, &patches, at).map_err(patch_error)?;
    sub.updated_at = now;
    let catalog = state.pipeline.catalog();
    catalog
        .update_subscription(&sub)
        .await
        .map_err(subscription_error)?;
    end_dropped(&state, &before, &sub).await?;
    align_entitlements(&state, &sub).await?;
    let customer = customer_of(&state, &sub.customer_id).await?;
    if let Err(error) = create_entitlements(&state, &customer, &mut sub).await {
        // Back to the spec before the edit; entitlements created so far are never active.
        end_dropped(&state, &sub, &before).await?;
        catalog
            .update_subscription(&before)
            .await
            .map_err(subscription_error)?;
        align_entitlements(&state, &before).await?;
        return Err(error);
    }
    catalog
        .update_subscription(&sub)
        .await
        .map_err(subscription_error)?;
    state.billing.subscription_changed(&sub.id);
    Ok(HttpResponse::Ok().json(expanded_json(&state, &customer, &sub, now).await?))
}

async fn delete(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut sub = subscription(&state, &path).await?;
    let now = Utc::now();
    require(&sub, "delete", Status::Scheduled, now)?;
    sub.deleted_at = Some(now);
    sub.updated_at = now;
    let mut cut = sub.clone();
    cut.active_to = Some(sub.active_from);
    align_entitlements(&state, &cut).await?;
    state
        .pipeline
        .catalog()
        .update_subscription(&sub)
        .await
        .map_err(subscription_error)?;
    Ok(HttpResponse::NoContent().finish())
}

async fn cancel(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // Empty is the defaults; malformed or not an object is a 400.
    let body: Value = crate::routes::apps::optional_body(&body)?;
    let mut sub = subscription(&state, &path).await?;
    let now = Utc::now();
    require(&sub, "cancel", Status::Active, now)?;
    let end = resolve(&sub, timing(&body, Some(Timing::Immediate))?, now)?;
    sub.active_to = Some(end);
    sub.updated_at = now;
    state
        .pipeline
        .catalog()
        .update_subscription(&sub)
        .await
        .map_err(subscription_error)?;
    align_entitlements(&state, &sub).await?;
    let customer = customer_of(&state, &sub.customer_id).await?;
    Ok(HttpResponse::Ok().json(expanded_json(&state, &customer, &sub, now).await?))
}

async fn continue_(
    state: &AppState,
    mut sub: Subscription,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    sub.active_to = None;
    sub.updated_at = now;
    state
        .pipeline
        .catalog()
        .update_subscription(&sub)
        .await
        .map_err(subscription_error)?;
    align_entitlements(state, &sub).await?;
    let customer = customer_of(state, &sub.customer_id).await?;
    expanded_json(state, &customer, &sub, now).await
}

async fn unschedule_cancelation(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sub = subscription(&state, &path).await?;
    let now = Utc::now();
    require(&sub, "continue", Status::Canceled, now)?;
    Ok(HttpResponse::Ok().json(continue_(&state, sub, now).await?))
}

/// Deprecated `restore`: the customer's subscriptions scheduled after this one are deleted
/// and this one continues without an end.
async fn restore(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sub = subscription(&state, &path).await?;
    let now = Utc::now();
    if sub.active_to.is_none() {
        return Err(ApiError::bad_request("subscription is not canceled"));
    }
    for mut later in state
        .pipeline
        .catalog()
        .customer_subscriptions(ns(&state), &sub.customer_id)
        .await
        .map_err(subscription_error)?
    {
        if later.id != sub.id && later.active_from >= sub.active_from {
            later.deleted_at = Some(now);
            later.updated_at = now;
            let mut cut = later.clone();
            cut.active_to = Some(later.active_from.min(now).max(later.active_from));
            align_entitlements(&state, &cut).await?;
            state
                .pipeline
                .catalog()
                .update_subscription(&later)
                .await
                .map_err(subscription_error)?;
        }
    }
    let value = continue_(&state, sub, now).await?;
    // `restore` answers the plain `Subscription`.
    let mut plain = value;
    if let Value::Object(map) = &mut plain {
        map.remove("phases");
        map.remove("alignment");
    }
    Ok(HttpResponse::Ok().json(plain))
}

/// Ends `current` at `at` and starts `next` there, atomically; answers `{current, next}`.
async fn switch(
    state: &AppState,
    mut current: Subscription,
    at: DateTime<Utc>,
    plan: Option<PlanRef>,
    plan_body: &PlanBody,
    body: &Value,
    now: DateTime<Utc>,
) -> Result<HttpResponse, ApiError> {
    let customer = customer_of(state, &current.customer_id).await?;
    current.active_to = Some(at);
    current.updated_at = now;
    let next = build(
        NewSubscription {
            customer_id: customer.id.clone(),
            plan,
            body: plan_body,
            name: opt_str(body, "name")?.map(str::to_owned),
            description: opt_str(body, "description")?.map(str::to_owned),
            metadata: metadata(body)?,
            settlement_mode: opt_str(body, "settlementMode")?
                .map(str::to_owned)
                .or_else(|| Some(current.settlement_mode.clone())),
            active_from: at,
            billing_anchor: opt_time(body, "billingAnchor")?.or(Some(current.billing_anchor)),
            starting_phase: opt_str(body, "startingPhase")?.map(str::to_owned),
        },
        now,
    )
    .map_err(subscription_error)?;
    let next = start(state, &customer, next, Some(&current)).await?;
    Ok(HttpResponse::Ok().json(json!({
        "current": subscription_json(&current, now),
        "next": expanded_json(state, &customer, &next, now).await?,
    })))
}

async fn change(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let current = subscription(&state, &path).await?;
    let now = Utc::now();
    require(&current, "update", Status::Active, now)?;
    let at = resolve(&current, timing(&body, None)?, now)?;
    let (plan, plan_body) = plan_of(&state, &body).await?;
    switch(&state, current, at, plan, &plan_body, &body, now).await
}

async fn migrate(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // Empty is the defaults; malformed or not an object is a 400.
    let body: Value = crate::routes::apps::optional_body(&body)?;
    let current = subscription(&state, &path).await?;
    let now = Utc::now();
    require(&current, "update", Status::Active, now)?;
    let Some(plan_ref) = current.plan.clone() else {
        return Err(ApiError::bad_request(
            "subscription has no plan: only plan subscriptions can be migrated",
        ));
    };
    let target = match body.get("targetVersion") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().filter(|v| *v >= 1).ok_or_else(|| {
            ApiError::bad_request("targetVersion must be an integer of at least 1")
        })?),
    };
    let (plan, plan_body) = find_plan(&state, &plan_ref.key, target).await?;
    if plan.as_ref().is_some_and(|p| p.version == plan_ref.version) {
        return Err(ApiError::bad_request(format!(
            "subscription is already on version {} of plan {:?}",
            plan_ref.version, plan_ref.key
        )));
    }
    let at = resolve(&current, timing(&body, Some(Timing::Immediate))?, now)?;
    switch(&state, current, at, plan, &plan_body, &body, now).await
}

async fn list_customer(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let customer = customer_of(&state, &path).await?;
    let now = Utc::now();
    let mut statuses = Vec::new();
    for s in p.all("status") {
        statuses.push(
            Status::parse(&s)
                .ok_or_else(|| ApiError::bad_request(format!("invalid status: {s}")))?,
        );
    }
    let mut subs: Vec<Subscription> = state
        .pipeline
        .catalog()
        .customer_subscriptions(ns(&state), &customer.id)
        .await
        .map_err(subscription_error)?
        .into_iter()
        .filter(|s| statuses.is_empty() || statuses.contains(&s.status(now)))
        .collect();
    match p.one("orderBy").unwrap_or("activeFrom") {
        "activeFrom" => subs.sort_by_key(|s| (s.active_from, s.id.clone())),
        "activeTo" => subs.sort_by_key(|s| {
            (
                s.active_to.unwrap_or(DateTime::<Utc>::MAX_UTC),
                s.id.clone(),
            )
        }),
        other => return Err(ApiError::bad_request(format!("invalid orderBy: {other}"))),
    }
    match p.one("order").unwrap_or("ASC") {
        "ASC" => {}
        "DESC" => subs.reverse(),
        other => return Err(ApiError::bad_request(format!("invalid order: {other}"))),
    }
    let page = p.usize_in("page", 1, 1, usize::MAX)?;
    let page_size = p.usize_in("pageSize", 100, 1, 1000)?;
    let total = subs.len();
    let items: Vec<Value> = subs
        .iter()
        .skip(page.saturating_sub(1).saturating_mul(page_size))
        .take(page_size)
        .map(|s| subscription_json(s, now))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "totalCount": total, "page": page, "pageSize": page_size, "items": items,
    })))
}
