//! Entitlements, grants, values, resets, history and access: the customer-scoped v2
//! API, the subject-scoped v1 API, and the admin lists. Handlers resolve the owner,
//! validate, write the catalog, and reload the customer's actor so the next read
//! sees the change; values come from the actor's memory.

use crate::error::ApiError;
use crate::params::Params;
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use metron_actors::customer::views::{self, Flavor, Owner};
use metron_actors::customer::{
    EntitlementsError, ValueAnswer, engine_grant, engine_inputs, expiration_unit, recurrence,
    subject_key,
};
use metron_engine::aggregate::Aggregation;
use metron_engine::credit::{self, Interval, Recurrence, ceil_minute, truncate_minute};
use metron_engine::decimal::from_json_number;
use metron_engine::window::{WindowSize, parse_zone, window_of};
use metron_storage::customers::Customer;
use metron_storage::entitlements::{
    EntitlementKind, EntitlementRecord, ExpirationRecord, GrantRecord, Insert, IssueRecord,
    PeriodRecord, ResetRecord,
};
use metron_storage::features::Feature;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Who owns the entitlements a route names, and which read models it answers with.
#[derive(Clone, Copy)]
pub(crate) struct Api {
    by_subject: bool,
    flavor: Flavor,
}

pub(crate) const V2_CUSTOMER: Api = Api {
    by_subject: false,
    flavor: Flavor::V2,
};
pub(crate) const V1_SUBJECT: Api = Api {
    by_subject: true,
    flavor: Flavor::V1,
};
/// `GET /api/v1/customers/{c}/entitlements/{featureKey}/value`: customer-scoped, v1 value.
pub(crate) const CUSTOMER_V1: Api = Api {
    by_subject: false,
    flavor: Flavor::V1,
};

/// The access checks, registered before every other route: actix tries routes in
/// order, and each dynamic route it tries first costs a regex match per request.
pub fn configure_checks(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/v2/customers/{owner}/entitlements/{ent}/value",
        web::get().to(|s, r| value(s, r, V2_CUSTOMER)),
    )
    .route("/api/v1/customers/{owner}/access", web::get().to(access))
    .route(
        "/api/v1/subjects/{owner}/entitlements/{ent}/value",
        web::get().to(|s, r| value(s, r, V1_SUBJECT)),
    )
    .route(
        "/api/v1/customers/{owner}/entitlements/{ent}/value",
        web::get().to(|s, r| value(s, r, CUSTOMER_V1)),
    );
}

/// Registers every other entitlement route: the owned routes once per API (v2 by
/// customer, v1 by subject), then the admin lists and grant voids.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for (base, api) in [
        ("/api/v2/customers/{owner}/entitlements", V2_CUSTOMER),
        ("/api/v1/subjects/{owner}/entitlements", V1_SUBJECT),
    ] {
        let one = format!("{base}/{{ent}}");
        cfg.route(base, web::post().to(move |s, r, b| create(s, r, b, api)))
            .route(base, web::get().to(move |s, r| list_owned(s, r, api)))
            .route(&one, web::get().to(move |s, r| get_owned(s, r, api)))
            .route(&one, web::delete().to(move |s, r| delete(s, r, api)))
            .route(
                &format!("{one}/override"),
                web::put().to(move |s, r, b| override_(s, r, b, api)),
            )
            .route(
                &format!("{one}/grants"),
                web::get().to(move |s, r| list_grants_owned(s, r, api)),
            )
            .route(
                &format!("{one}/grants"),
                web::post().to(move |s, r, b| create_grant(s, r, b, api)),
            )
            .route(
                &format!("{one}/history"),
                web::get().to(move |s, r| history(s, r, api)),
            )
            .route(
                &format!("{one}/reset"),
                web::post().to(move |s, r, b| reset(s, r, b, api)),
            );
    }
    for (prefix, api) in [("/api/v2", V2_CUSTOMER), ("/api/v1", V1_SUBJECT)] {
        cfg.route(
            &format!("{prefix}/entitlements"),
            web::get().to(move |s, r| list_all(s, r, api)),
        )
        .route(
            &format!("{prefix}/entitlements/{{id}}"),
            web::get().to(move |s, r| get_by_id(s, r, api)),
        )
        .route(
            &format!("{prefix}/grants"),
            web::get().to(move |s, r| list_all_grants(s, r, api)),
        );
    }
    cfg.route("/api/v1/grants/{grant}", web::delete().to(void_grant));
}

// ---- owners, lookups, read models ----

fn namespace(state: &AppState) -> String {
    state.pipeline.namespace().to_owned()
}

fn path_part<'a>(req: &'a HttpRequest, name: &str) -> Result<&'a str, ApiError> {
    req.match_info()
        .get(name)
        .ok_or_else(|| ApiError::bad_request(format!("missing path parameter {name}")))
}

impl From<EntitlementsError> for ApiError {
    fn from(error: EntitlementsError) -> Self {
        match error {
            EntitlementsError::CustomerNotFound(_) | EntitlementsError::FeatureNotFound(_) => {
                ApiError::not_found(error.to_string())
            }
            EntitlementsError::Meter { .. } => ApiError::bad_request(error.to_string()),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl From<metron_storage::catalog::Error> for ApiError {
    fn from(error: metron_storage::catalog::Error) -> Self {
        crate::routes::customers::catalog_error(error)
    }
}

/// The customer a route names: by id or key (v2), or whose usage attribution holds the
/// subject (v1).
async fn owner(state: &AppState, req: &HttpRequest, api: Api) -> Result<Customer, ApiError> {
    owner_named(state, path_part(req, "owner")?, api).await
}

/// [`owner`] by the path's `{owner}` segment.
async fn owner_named(state: &AppState, name: &str, api: Api) -> Result<Customer, ApiError> {
    let ns = namespace(state);
    let catalog = state.pipeline.catalog();
    let found = if api.by_subject {
        match state.pipeline.attribution().customer_of(&ns, name) {
            Some(r) => catalog.get_customer_by_id(&ns, r.id()).await?,
            None => None,
        }
    } else {
        catalog.get_customer(&ns, name).await?
    };
    found.filter(|c| c.deleted_at.is_none()).ok_or_else(|| {
        if api.by_subject {
            ApiError::not_found(format!("no customer has subject {name}"))
        } else {
            ApiError::not_found(format!("customer {name} not found"))
        }
    })
}

/// The id of the customer a route names, from the in-memory attribution index (the
/// hot path of value and access checks: no catalog query); the catalog answers only
/// when the index does not know the name.
async fn owner_id(state: &AppState, name: &str, api: Api) -> Result<String, ApiError> {
    let ns = state.pipeline.namespace();
    let attribution = state.pipeline.attribution();
    let known = if api.by_subject {
        attribution
            .customer_of(ns, name)
            .map(|c| c.id().to_string())
    } else if attribution.knows(ns, name) {
        Some(name.to_owned())
    } else {
        attribution
            .customer_of(ns, name)
            .filter(|c| c.key() == Some(name))
            .map(|c| c.id().to_string())
    };
    match known {
        Some(id) => Ok(id),
        None => Ok(owner_named(state, name, api).await?.id),
    }
}

fn owner_of(customer: &Customer) -> (String, Option<String>, String) {
    (
        customer.id.clone(),
        customer.key.clone(),
        subject_key(customer, &customer.subjects()),
    )
}

/// The usage period containing now, for a metered entitlement's read model.
async fn current_period(
    state: &AppState,
    record: &EntitlementRecord,
    now: DateTime<Utc>,
) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, ApiError> {
    let Some(period) = &record.usage_period else {
        return Ok(None);
    };
    let usage_period = recurrence(period).map_err(ApiError::bad_request)?;
    if record.kind != EntitlementKind::Metered {
        return Ok(usage_period.period_containing(now));
    }
    let resets = state
        .pipeline
        .catalog()
        .entitlement_resets(&record.id)
        .await?;
    let inputs = engine_inputs(record, Aggregation::Sum, &[], &resets)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(credit::period_at(&inputs.entitlement, &inputs.resets, now))
}

async fn render(
    state: &AppState,
    record: &EntitlementRecord,
    customer: &Customer,
    flavor: Flavor,
) -> Result<Value, ApiError> {
    let (id, key, subject) = owner_of(customer);
    let current = current_period(state, record, Utc::now()).await?;
    Ok(views::entitlement_view(
        record,
        &Owner {
            customer_id: &id,
            customer_key: key.as_deref(),
            subject_key: &subject,
        },
        current,
        flavor,
    ))
}

/// A customer's entitlement by id or feature key (the active one, else the newest).
async fn find_entitlement(
    state: &AppState,
    customer: &Customer,
    id_or_key: &str,
    include_deleted: bool,
) -> Result<EntitlementRecord, ApiError> {
    let all = state
        .pipeline
        .catalog()
        .customer_entitlements(&namespace(state), &customer.id, include_deleted)
        .await?;
    let now = Utc::now();
    if let Some(found) = all.iter().find(|e| e.id == id_or_key) {
        return Ok(found.clone());
    }
    let of_feature: Vec<&EntitlementRecord> =
        all.iter().filter(|e| e.feature_key == id_or_key).collect();
    of_feature
        .iter()
        .find(|e| e.active_at(now))
        .or(of_feature.last())
        .map(|e| (*e).clone())
        .ok_or_else(|| ApiError::not_found(format!("entitlement {id_or_key} not found")))
}

/// Refuses a change the credit engine would reject (duplicate or too early resets, bad
/// amounts or intervals): checked before anything is written, so a customer never
/// holds an entitlement its actor cannot run.
async fn check_engine(
    state: &AppState,
    record: &EntitlementRecord,
    new_grants: &[GrantRecord],
    new_reset: Option<&ResetRecord>,
) -> Result<(), ApiError> {
    if record.kind != EntitlementKind::Metered {
        return Ok(());
    }
    let catalog = state.pipeline.catalog();
    let mut grants = catalog.entitlement_grants(&record.id).await?;
    grants.extend(new_grants.iter().cloned());
    let mut resets = catalog.entitlement_resets(&record.id).await?;
    resets.extend(new_reset.cloned());
    let inputs = engine_inputs(record, Aggregation::Sum, &grants, &resets)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    credit::validate(&inputs.entitlement, &inputs.grants, &inputs.resets)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

// ---- JSON inputs ----

fn field<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body.get(name).filter(|v| !v.is_null())
}

fn decimal_field(body: &Value, name: &str) -> Result<Option<Decimal>, ApiError> {
    match field(body, name) {
        None => Ok(None),
        Some(Value::Number(n)) => from_json_number(n)
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("{name} must be a finite number"))),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a number"))),
    }
}

fn bool_field(body: &Value, name: &str) -> Result<Option<bool>, ApiError> {
    match field(body, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a boolean"))),
    }
}

fn str_field<'a>(body: &'a Value, name: &str) -> Result<Option<&'a str>, ApiError> {
    match field(body, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    }
}

fn time_field(body: &Value, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    match str_field(body, name)? {
        None => Ok(None),
        Some(text) => metron_engine::event::parse_time(text)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be an RFC 3339 date-time"))),
    }
}

fn priority_field(body: &Value, name: &str, default: u8) -> Result<u8, ApiError> {
    match field(body, name) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .ok_or_else(|| {
                ApiError::bad_request(format!("{name} must be an integer from 0 to 255"))
            }),
    }
}

fn metadata_field(body: &Value) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    match field(body, "metadata") {
        None => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|_| ApiError::bad_request("metadata must map strings to strings")),
    }
}

fn annotations_field(body: &Value) -> Result<Option<Map<String, Value>>, ApiError> {
    match field(body, "annotations") {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(_) => Err(ApiError::bad_request("annotations must be an object")),
    }
}

/// `{interval, anchor?}`: the interval parsed, the anchor minute-truncated.
fn period_field(
    body: &Value,
    name: &str,
    default_anchor: DateTime<Utc>,
) -> Result<Option<(PeriodRecord, Recurrence)>, ApiError> {
    let Some(v) = field(body, name) else {
        return Ok(None);
    };
    let interval = str_field(v, "interval")?
        .ok_or_else(|| ApiError::bad_request(format!("{name}.interval is required")))?;
    let parsed = Interval::parse(interval)
        .map_err(|e| ApiError::bad_request(format!("{name}.interval: {e:?}")))?;
    let anchor = truncate_minute(time_field(v, "anchor")?.unwrap_or(default_anchor));
    let record = PeriodRecord {
        interval: interval.to_owned(),
        anchor,
    };
    Ok(Some((
        record,
        Recurrence {
            interval: parsed,
            anchor,
        },
    )))
}

#[derive(Deserialize)]
struct ExpirationIn {
    duration: String,
    count: u32,
}

/// A grant from its create input.
fn build_grant(
    body: &Value,
    entitlement: &EntitlementRecord,
    period_start: Option<DateTime<Utc>>,
    flavor: Flavor,
    now: DateTime<Utc>,
) -> Result<GrantRecord, ApiError> {
    if entitlement.kind != EntitlementKind::Metered {
        return Err(ApiError::bad_request(
            "grants can only be created for metered entitlements",
        ));
    }
    let amount = decimal_field(body, "amount")?
        .ok_or_else(|| ApiError::bad_request("amount is required"))?;
    if amount <= Decimal::ZERO {
        return Err(ApiError::bad_request("amount must be positive"));
    }
    let effective_at = truncate_minute(
        time_field(body, "effectiveAt")?
            .ok_or_else(|| ApiError::bad_request("effectiveAt is required"))?,
    );
    if let Some(start) = period_start
        && effective_at < start
    {
        return Err(ApiError::bad_request(
            "grant effectiveAt cannot be before the current usage period start",
        ));
    }
    let expiration = match field(body, "expiration") {
        None if flavor == Flavor::V1 => {
            return Err(ApiError::bad_request("expiration is required"));
        }
        None => None,
        Some(v) => {
            let e: ExpirationIn = serde_json::from_value(v.clone())
                .map_err(|e| ApiError::bad_request(format!("expiration: {e}")))?;
            if !(1..=1000).contains(&e.count) {
                return Err(ApiError::bad_request(
                    "expiration.count must be from 1 to 1000",
                ));
            }
            if expiration_unit(&e.duration).is_none() {
                return Err(ApiError::bad_request(format!(
                    "expiration.duration {:?} is not one of HOUR, DAY, WEEK, MONTH, YEAR",
                    e.duration
                )));
            }
            Some(ExpirationRecord {
                duration: e.duration,
                count: e.count,
            })
        }
    };
    let expires_at = match &expiration {
        Some(e) => {
            let unit = expiration_unit(&e.duration)
                .ok_or_else(|| ApiError::bad_request("invalid expiration.duration"))?;
            Some(
                credit::expires_at(effective_at, unit, e.count)
                    .ok_or_else(|| ApiError::bad_request("expiration is out of range"))?,
            )
        }
        None => None,
    };
    let max_default = if flavor == Flavor::V1 {
        Decimal::ZERO
    } else {
        amount
    };
    let max_rollover_amount = decimal_field(body, "maxRolloverAmount")?.unwrap_or(max_default);
    let min_rollover_amount = decimal_field(body, "minRolloverAmount")?.unwrap_or(Decimal::ZERO);
    if max_rollover_amount < Decimal::ZERO || min_rollover_amount < Decimal::ZERO {
        return Err(ApiError::bad_request("rollover amounts cannot be negative"));
    }
    let recurrence = period_field(body, "recurrence", effective_at)?.map(|(r, _)| r);
    let grant = GrantRecord {
        id: ulid::Ulid::new().to_string(),
        namespace: entitlement.namespace.clone(),
        entitlement_id: entitlement.id.clone(),
        amount,
        priority: priority_field(body, "priority", 0)?,
        effective_at,
        expiration,
        expires_at,
        max_rollover_amount,
        min_rollover_amount,
        recurrence,
        metadata: metadata_field(body)?,
        annotations: if flavor == Flavor::V2 {
            annotations_field(body)?
        } else {
            None
        },
        created_at: now,
        updated_at: now,
        voided_at: None,
        deleted_at: None,
    };
    engine_grant(&grant).map_err(ApiError::bad_request)?;
    Ok(grant)
}

/// An entitlement (and the grants it creates) from its create input.
async fn build_entitlement(
    state: &AppState,
    customer: &Customer,
    body: &Value,
    flavor: Flavor,
    now: DateTime<Utc>,
) -> Result<(EntitlementRecord, Vec<GrantRecord>), ApiError> {
    let ns = namespace(state);
    let kind = match str_field(body, "type")? {
        Some("metered") => EntitlementKind::Metered,
        Some("boolean") => EntitlementKind::Boolean,
        Some("static") => EntitlementKind::Static,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid entitlement type {other:?}"
            )));
        }
        None => return Err(ApiError::bad_request("type is required")),
    };
    let feature_ref = str_field(body, "featureId")?
        .or(str_field(body, "featureKey")?)
        .ok_or_else(|| ApiError::bad_request("featureKey or featureId is required"))?;
    let feature: Feature = state
        .pipeline
        .catalog()
        .get_feature(&ns, feature_ref)
        .await?
        .filter(|f| f.archived_at.is_none())
        .ok_or_else(|| ApiError::not_found(format!("feature {feature_ref} not found")))?;
    let now_minute = truncate_minute(now);
    let usage_period = period_field(body, "usagePeriod", now_minute)?;
    if let Some((_, r)) = &usage_period
        && !r.interval.at_least_one_hour()
    {
        return Err(ApiError::bad_request(
            "usagePeriod.interval must be at least 1 hour",
        ));
    }
    let mut record = EntitlementRecord {
        id: ulid::Ulid::new().to_string(),
        namespace: ns.clone(),
        customer_id: customer.id.clone(),
        feature_id: feature.id.clone(),
        feature_key: feature.key.clone(),
        kind,
        metadata: metadata_field(body)?,
        annotations: None,
        is_soft_limit: false,
        preserve_overage_at_reset: false,
        issue: None,
        measure_usage_from: None,
        usage_period: usage_period.as_ref().map(|(p, _)| p.clone()),
        config: None,
        active_from: None,
        active_to: None,
        created_at: now,
        updated_at: now,
        deleted_at: None,
    };
    let mut grants = Vec::new();
    match kind {
        EntitlementKind::Boolean => {}
        EntitlementKind::Static => {
            let config = str_field(body, "config")?.ok_or_else(|| {
                ApiError::bad_request("config is required for static entitlements")
            })?;
            match serde_json::from_str::<Value>(config) {
                Ok(Value::Object(_)) => record.config = Some(config.to_owned()),
                _ => {
                    return Err(ApiError::bad_request(
                        "config must be a JSON string encoding an object",
                    ));
                }
            }
        }
        EntitlementKind::Metered => {
            let Some((_, usage_period)) = &usage_period else {
                return Err(ApiError::bad_request(
                    "usagePeriod is required for metered entitlements",
                ));
            };
            let slug = feature.meter_slug.clone().ok_or_else(|| {
                ApiError::bad_request(format!("feature {} has no meter", feature.key))
            })?;
            let meter = state.pipeline.get_meter(&ns, &slug).await.map_err(|_| {
                ApiError::bad_request(format!("meter {slug} of feature {} not found", feature.key))
            })?;
            if !matches!(
                meter.aggregation,
                Aggregation::Sum
                    | Aggregation::Count
                    | Aggregation::UniqueCount
                    | Aggregation::Latest
            ) {
                return Err(ApiError::bad_request(format!(
                    "meter {slug} aggregates with {}: metered entitlements need SUM, COUNT, UNIQUE_COUNT or LATEST",
                    meter.aggregation.as_str()
                )));
            }
            let period_start = usage_period
                .period_containing(now)
                .map(|(from, _)| from)
                .unwrap_or(now_minute);
            record.measure_usage_from = Some(match field(body, "measureUsageFrom") {
                None => now_minute,
                Some(Value::String(s)) if s == "CURRENT_PERIOD_START" => period_start,
                Some(Value::String(s)) if s == "NOW" => now_minute,
                Some(_) => truncate_minute(time_field(body, "measureUsageFrom")?.unwrap_or(now)),
            });
            record.is_soft_limit = bool_field(body, "isSoftLimit")?.unwrap_or(false);
            record.preserve_overage_at_reset =
                bool_field(body, "preserveOverageAtReset")?.unwrap_or(false);
            let issue = match field(body, "issue") {
                Some(issue) if flavor == Flavor::V2 => decimal_field(issue, "amount")?
                    .map(|amount| {
                        Ok::<_, ApiError>((amount, priority_field(issue, "priority", 1)?))
                    })
                    .transpose()?,
                _ => decimal_field(body, "issueAfterReset")?
                    .map(|amount| {
                        Ok::<_, ApiError>((
                            amount,
                            priority_field(body, "issueAfterResetPriority", 1)?,
                        ))
                    })
                    .transpose()?,
            };
            if let Some((amount, priority)) = issue {
                if amount < Decimal::ZERO {
                    return Err(ApiError::bad_request("issueAfterReset cannot be negative"));
                }
                record.issue = Some(IssueRecord { amount, priority });
                if amount > Decimal::ZERO {
                    let mut annotations = Map::new();
                    annotations.insert("issueAfterReset".into(), Value::Bool(true));
                    grants.push(GrantRecord {
                        id: ulid::Ulid::new().to_string(),
                        namespace: ns.clone(),
                        entitlement_id: record.id.clone(),
                        amount,
                        priority,
                        effective_at: period_start,
                        expiration: None,
                        expires_at: None,
                        max_rollover_amount: amount,
                        min_rollover_amount: amount,
                        recurrence: None,
                        metadata: None,
                        annotations: Some(annotations),
                        created_at: now,
                        updated_at: now,
                        voided_at: None,
                        deleted_at: None,
                    });
                }
            }
            if flavor == Flavor::V2
                && let Some(Value::Array(inline)) = field(body, "grants")
            {
                for g in inline {
                    grants.push(build_grant(g, &record, Some(period_start), flavor, now)?);
                }
            }
        }
    }
    Ok((record, grants))
}

// ---- handlers ----

async fn insert(
    state: &AppState,
    customer: &Customer,
    record: &EntitlementRecord,
    grants: &[GrantRecord],
    replaces: Option<&EntitlementRecord>,
    flavor: Flavor,
) -> Result<HttpResponse, ApiError> {
    check_engine(state, record, grants, None).await?;
    match state
        .pipeline
        .catalog()
        .insert_entitlement(record, grants, replaces)
        .await?
    {
        Insert::Created => {}
        Insert::Conflict { existing_id } => {
            let mut error = ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "entitlement with feature {} already exists for the customer",
                    record.feature_key
                ),
            );
            error.extensions = Some(json!({"conflictingEntityId": existing_id}));
            return Err(error);
        }
    }
    state
        .entitlements
        .reload(&record.namespace, &customer.id)
        .await?;
    Ok(HttpResponse::Created().json(render(state, record, customer, flavor).await?))
}

/// The annotation naming the subscription that manages an entitlement (OpenMeter's
/// `subscription.id`): such an entitlement follows its subscription item and the
/// entitlement API refuses to delete or override it (403).
pub(crate) const SUBSCRIPTION_ANNOTATION: &str = "subscription.id";

fn refuse_managed(record: &EntitlementRecord) -> Result<(), ApiError> {
    if record
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(SUBSCRIPTION_ANNOTATION))
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "entitlement is managed by subscription",
        ));
    }
    Ok(())
}

/// Creates an entitlement a subscription item manages: built from the template as the API
/// would build it (`body` in the v2 create shape), active over `[active_from, active_to)`,
/// annotated with the subscription's id.
pub(crate) async fn create_managed(
    state: &AppState,
    customer: &Customer,
    body: &Value,
    active_from: DateTime<Utc>,
    active_to: Option<DateTime<Utc>>,
    subscription_id: &str,
) -> Result<EntitlementRecord, ApiError> {
    let (mut record, grants) =
        build_entitlement(state, customer, body, Flavor::V2, active_from).await?;
    record.active_from = Some(active_from);
    record.active_to = active_to;
    let mut annotations = record.annotations.take().unwrap_or_default();
    annotations.insert(SUBSCRIPTION_ANNOTATION.into(), json!(subscription_id));
    record.annotations = Some(annotations);
    check_engine(state, &record, &grants, None).await?;
    match state
        .pipeline
        .catalog()
        .insert_entitlement(&record, &grants, None)
        .await?
    {
        Insert::Created => {}
        Insert::Conflict { existing_id } => {
            let mut error = ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "entitlement with feature {} already exists for the customer",
                    record.feature_key
                ),
            );
            error.extensions = Some(json!({"conflictingEntityId": existing_id}));
            return Err(error);
        }
    }
    state
        .entitlements
        .reload(&record.namespace, &customer.id)
        .await?;
    Ok(record)
}

/// Moves a managed entitlement's end (a subscription canceled, continued or changed);
/// `None` makes it open-ended again. The caller reloads the customer once it moved them all
/// ([`reload_customer`]).
pub(crate) async fn set_managed_end(
    state: &AppState,
    entitlement_id: &str,
    active_to: Option<DateTime<Utc>>,
) -> Result<(), ApiError> {
    let ns = namespace(state);
    let Some(mut record) = state
        .pipeline
        .catalog()
        .get_entitlement(&ns, entitlement_id)
        .await?
    else {
        return Ok(());
    };
    record.active_to = active_to;
    record.updated_at = Utc::now();
    state.pipeline.catalog().update_entitlement(&record).await?;
    Ok(())
}

/// Reloads a customer's live entitlements after their records changed.
pub(crate) async fn reload_customer(state: &AppState, customer_id: &str) -> Result<(), ApiError> {
    state
        .entitlements
        .reload(&namespace(state), customer_id)
        .await?;
    Ok(())
}

/// The rendered (v2) entitlement of a subscription item.
pub(crate) async fn render_managed(
    state: &AppState,
    customer: &Customer,
    entitlement_id: &str,
) -> Result<Option<Value>, ApiError> {
    let ns = namespace(state);
    let Some(record) = state
        .pipeline
        .catalog()
        .get_entitlement(&ns, entitlement_id)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(render(state, &record, customer, Flavor::V2).await?))
}

async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Value>,
    api: Api,
) -> Result<HttpResponse, ApiError> {
    let customer = owner(&state, &req, api).await?;
    let (record, grants) =
        build_entitlement(&state, &customer, &body, api.flavor, Utc::now()).await?;
    insert(&state, &customer, &record, &grants, None, api.flavor).await
}

async fn override_(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Value>,
    api: Api,
) -> Result<HttpResponse, ApiError> {
    let customer = owner(&state, &req, api).await?;
    let mut old = find_entitlement(&state, &customer, path_part(&req, "ent")?, false).await?;
    refuse_managed(&old)?;
    let now = Utc::now();
    let (record, grants) = build_entitlement(&state, &customer, &body, api.flavor, now).await?;
    old.deleted_at = Some(now);
    old.updated_at = now;
    insert(&state, &customer, &record, &grants, Some(&old), api.flavor).await
}

async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    api: Api,
) -> Result<HttpResponse, ApiError> {
    let customer = owner(&state, &req, api).await?;
    let mut record = find_entitlement(&state, &customer, path_part(&req, "ent")?, false).await?;
    refuse_managed(&record)?;
    let now = Utc::now();
    record.deleted_at = Some(now);
    record.updated_at = now;
    state.pipeline.catalog().update_entitlement(&record).await?;
    state
        .entitlements
        .reload(&record.namespace, &customer.id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn get_owned(
    state: web::Data<AppState>,
    req: HttpRequest,
    api: Api,
) -> Result<HttpResponse, ApiError> {
    let customer = owner(&state, &req, api).await?;
    let record = find_entitlement(&state, &customer, path_part(&req, "ent")?, true).await?;
    Ok(HttpResponse::Ok().json(render(&state, &record, &customer, api.flavor).await?))
}

async fn list_owned(
    state: web::Data<AppState>,
    req: HttpRequest,
    api: Api,
) -> Result<HttpResponse, ApiError> {
    state.ready()?;
    let p = Params::parse(req.query_string())?;
    let customer = owner(&state, &req, api).await?;
    let include_deleted = p.bool("includeDeleted")?.unwrap_or(false);
    let mut records = state
        .pipeline
        .catalog()
        .customer_entitlements(&namespace(&state), &customer.id, include_deleted)
        .await?;
    order_entitlements(&mut records, &p)?;
    let mut items = Vec::with_capacity(records.len());
    for record in &records {
        items.push(render(&state, record, &customer, api.flavor).await?);
    }
    let paging = Paging::parse(&p)?;
    Ok(HttpResponse::Ok().json(paging.answer(items, api.flavor == Flavor::V2)))
}

fn order_entitlements(records: &mut [EntitlementRecord], p: &Params) -> Result<(), ApiError> {
    match p.one("orderBy").unwrap_or("createdAt") {
        "createdAt" => records.sort_by_key(|e| (e.created_at, e.id.clone())),
        "updatedAt" => records.sort_by_key(|e| (e.updated_at, e.id.clone())),
        other => return Err(ApiError::bad_request(format!("invalid orderBy: {other}"))),
    }
    if p.one("order") == Some("DESC") {
        records.reverse();
    }
    Ok(())
}

/// `page`/`pageSize` (which win) or `limit`/`offset`; without any, legacy lists answer
/// a bare array.
struct Paging {
    offset: usize,
    limit: usize,
    page: usize,
    size: usize,
    explicit: bool,
}

impl Paging {
    fn parse(p: &Params) -> Result<Self, ApiError> {
        if p.one("page").is_some() || p.one("pageSize").is_some() {
            let page = p.usize_in("page", 1, 1, usize::MAX)?;
            let size = p.usize_in("pageSize", 100, 1, 1000)?;
            return Ok(Self {
                offset: (page - 1).saturating_mul(size),
                limit: size,
                page,
                size,
                explicit: true,
            });
        }
        if p.one("limit").is_some() || p.one("offset").is_some() {
            let limit = p.usize_in("limit", 1000, 1, 1000)?;
            let offset = p.usize_in("offset", 0, 0, usize::MAX)?;
            // OpenMeter answers limit/offset with zeroed page fields.
            return Ok(Self {
                offset,
                limit,
                page: 0,
                size: 0,
                explicit: true,
            });
        }
        Ok(Self {
            offset: 0,
            limit: 100,
            page: 1,
            size: 100,
            explicit: false,
        })
    }

    /// The page; `paginated` forces the `{totalCount,page,pageSize,items}` shape.
    fn answer(&self, items: Vec<Value>, paginated: bool) -> Value {
        if !paginated && !self.explicit {
            return Value::Array(items);
        }
        let total = items.len();
        let page: Vec<Value> = items
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect();
        json!({"totalCount": total, "page": self.page, "pageSize": self.size, "items": page})
    }
}

async fn list_all(
    state: web::Data<AppState>,
    req: HttpRequest,
    api: Api,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let ns = namespace(&state);
    let catalog = state.pipeline.catalog();
    let mut records = catalog.all_entitlements(&ns, false).await?;
    let features = p.all("feature");
    let types = p.all("entitlementType");
    if let Some(bad) = types
        .iter()
        .find(|t| !["metered", "boolean", "static"].contains(&t.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "invalid entitlementType {bad:?}"
        )));
    }
    let exclude_inactive = p.bool("excludeInactive")?.unwrap_or(false);
    let now = Utc::now();
    records.retain(|e| {
        (features.is_empty()
            || features.contains(&e.feature_key)
            || features.contains(&e.feature_id))
            && (types.is_empty() || types.iter().any(|t| t == e.kind.as_str()))
            && (!exclude_inactive || e.active_at(now))
    });
    order_entitlements(&mut records, &p)?;
    let customers = customers_by_id(&state, records.iter().map(|e| e.customer_id.as_str())).await?;
    let subjects = p.all("subject");
    let (customer_ids, customer_keys) = (p.all("customerIds"), p.all("customerKeys"));
    let mut items = Vec::new();
    for record in &records {
        let Some(customer) = customers.get(&record.customer_id) else {
            continue;
        };
        let admitted = if api.by_subject {
            subjects.is_empty() || customer.subjects().iter().any(|s| subjects.contains(s))
        } else {
            (customer_ids.is_empty() || customer_ids.contains(&customer.id))
                && (customer_keys.is_empty()
                    || customer
                        .key
                        .as_ref()
                        .is_some_and(|k| customer_keys.contains(k)))
        };
        if admitted {
            items.push(render(&state, record, customer, api.flavor).await?);
        }
    }
    let paging = Paging::parse(&p)?;
    Ok(HttpResponse::Ok().json(paging.answer(items, api.flavor == Flavor::V2)))
}

async fn customers_by_id<'a>(
    state: &AppState,
    ids: impl Iterator<Item = &'a str>,
) -> Result<BTreeMap<String, Customer>, ApiError> {
    let ns = namespace(state);
    let mut out = BTreeMap::new();
    for id in ids {
        if !out.contains_key(id)
            && let Some(c) = state.pipeline.catalog().get_customer_by_id(&ns, id).await?
        {
            out.insert(id.to_owned(), c);
        }
    }
    Ok(out)
}

async fn get_by_id(
    state: web::Data<AppState>,
    req: HttpRequest,
    api: Api,
) -> Result<HttpResponse, ApiError> {
    let id = path_part(&req, "id")?;
    let ns = namespace(&state);
    let record = state
        .pipeline
        .catalog()
        .get_entitlement(&ns, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("entitlement {id} not found")))?;
    let customer = state
        .pipeline
        .catalog()
        .get_customer_by_id(&ns, &record.customer_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("customer of entitlement {id} not found")))?;
    Ok(HttpResponse::Ok().json(render(&state, &record, &customer, api.flavor).await?))
}

// ---- grants ----

async fn create_grant(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<Value>,
    api: Api,
) -> Result<HttpResponse, ApiError> {
    let customer = owner(&state, &req, api).await?;
    let record = find_entitlement(&state, &customer, path_part(&req, "ent")?, false).await?;
    let period_start = current_period(&state, &record, Utc::now())
        .await?
        .map(|p| p.0);
    let grant = build_grant(&body, &record, period_start, api.flavor, Utc::now())?;
    check_engine(&state, &record, std::slice::from_ref(&grant), None).await?;
    state.pipeline.catalog().insert_grant(&grant).await?;
    state
        .entitlements
        .reload(&record.namespace, &customer.id)
        .await?;
    Ok(HttpResponse::Created().json(grant_json(&grant, api.flavor)))
}

fn grant_json(grant: &GrantRecord, flavor: Flavor) -> Value {
    let now = Utc::now();
    let next = grant
        .recurrence
        .as_ref()
        .and_then(|r| recurrence(r).ok())
        .and_then(|r| r.next_after(now));
    // A v1 grant without an expiration shows OpenMeter's placeholder (views::grant_view).
    views::grant_view(grant, next, flavor)
}

fn order_grants(grants: &mut [GrantRecord], p: &Params) -> Result<(), ApiError> {
    match p.one("orderBy").unwrap_or("createdAt") {
        "id" => grants.sort_by(|a, b| a.id.cmp(&b.id)),
        "createdAt" => grants.sort_by_key(|g| (g.created_at, g.id.clone())),
        "updatedAt" => grants.sort_by_key(|g| (g.updated_at, g.id.clone())),
        "effectiveAt" => grants.sort_by_key(|g| (g.effective_at, g.id.clone())),
        "expiresAt" => grants.sort_by_key(|g| (g.expires_at, g.id.clone())),
        other => return Err(ApiError::bad_request(format!("invalid orderBy: {other}"))),
    }
    if p.one("order") == Some("DESC") {
        grants.reverse();
    }
    Ok(())
}

async fn list_grants_owned(
    state: web::Data<AppState>,
    req: HttpRequest,
    api: Api,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let paging = Paging::parse(&p)?;
    let customer = owner(&state, &req, api).await?;
    let record = find_entitlement(&state, &customer, path_part(&req, "ent")?, true).await?;
    let include_deleted = p.bool("includeDeleted")?.unwrap_or(false);
    let mut grants = state
        .pipeline
        .catalog()
        .entitlement_grants(&record.id)
        .await?;
    grants.retain(|g| include_deleted || g.deleted_at.is_none());
    order_grants(&mut grants, &p)?;
    let items = grants.iter().map(|g| grant_json(g, api.flavor)).collect();
    Ok(HttpResponse::Ok().json(paging.answer(items, api.flavor == Flavor::V2)))
}

async fn list_all_grants(
    state: web::Data<AppState>,
    req: HttpRequest,
    api: Api,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let paging = Paging::parse(&p)?;
    let ns = namespace(&state);
    let catalog = state.pipeline.catalog();
    let include_deleted = p.bool("includeDeleted")?.unwrap_or(false);
    let entitlements: BTreeMap<String, EntitlementRecord> = catalog
        .all_entitlements(&ns, true)
        .await?
        .into_iter()
        .map(|e| (e.id.clone(), e))
        .collect();
    let customers = customers_by_id(
        &state,
        entitlements.values().map(|e| e.customer_id.as_str()),
    )
    .await?;
    let features = p.all("feature");
    let owners = if api.by_subject {
        p.all("subject")
    } else {
        p.all("customer")
    };
    let mut grants = catalog.all_grants(&ns).await?;
    grants.retain(|g| {
        let Some(e) = entitlements.get(&g.entitlement_id) else {
            return false;
        };
        let owner_ok = owners.is_empty()
            || customers.get(&e.customer_id).is_some_and(|c| {
                if api.by_subject {
                    c.subjects().iter().any(|s| owners.contains(s))
                } else {
                    owners.contains(&c.id) || c.key.as_ref().is_some_and(|k| owners.contains(k))
                }
            });
        (include_deleted || g.deleted_at.is_none())
            && (features.is_empty()
                || features.contains(&e.feature_key)
                || features.contains(&e.feature_id))
            && owner_ok
    });
    order_grants(&mut grants, &p)?;
    let items = grants.iter().map(|g| grant_json(g, api.flavor)).collect();
    Ok(HttpResponse::Ok().json(paging.answer(items, api.flavor == Flavor::V2)))
}

/// `DELETE /api/v1/grants/{grantId}?at=`: voids a grant from `at` (default now).
async fn void_grant(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let id = path_part(&req, "grant")?;
    let ns = namespace(&state);
    let catalog = state.pipeline.catalog();
    let mut grant = catalog
        .get_grant(&ns, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("grant {id} not found")))?;
    if grant.voided_at.is_some() {
        return Err(ApiError::bad_request(format!(
            "grant {id} is already voided"
        )));
    }
    let now = Utc::now();
    let at = p.time("at")?.unwrap_or(now);
    if at > now {
        return Err(ApiError::bad_request("at cannot be in the future"));
    }
    let record = catalog
        .get_entitlement(&ns, &grant.entitlement_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("entitlement of grant {id} not found")))?;
    if let Some((start, _)) = current_period(&state, &record, now).await?
        && at < start
    {
        return Err(ApiError::bad_request(
            "at cannot be before the current usage period start",
        ));
    }
    grant.voided_at = Some(at);
    grant.updated_at = now;
    catalog.update_grant(&grant).await?;
    state
        .entitlements
        .reload(&record.namespace, &record.customer_id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- values, access, history, reset ----

pub(crate) fn value_json(answer: &ValueAnswer, flavor: Flavor) -> Value {
    match answer {
        ValueAnswer::Inactive => views::plain_value_view(false, None),
        ValueAnswer::Granted { config } => views::plain_value_view(true, config.as_deref()),
        ValueAnswer::Metered { has_access, value } => {
            views::metered_value_view(*has_access, &value.value, flavor)
        }
        // Resolved by the service before it answers.
        ValueAnswer::Past(_) => views::plain_value_view(false, None),
    }
}

async fn value(
    state: web::Data<AppState>,
    req: HttpRequest,
    api: Api,
) -> Result<HttpResponse, ApiError> {
    value_check(
        &state,
        api,
        path_part(&req, "owner")?,
        path_part(&req, "ent")?,
        req.query_string(),
    )
    .await
}

/// An entitlement value check, `GET .../{owner}/entitlements/{ent}/value?time=`: the
/// router's handler and the hot path in front of the router ([`crate::fast`]) both answer
/// with this, so that the two answer alike, errors included.
pub(crate) async fn value_check(
    state: &AppState,
    api: Api,
    owner: &str,
    ent: &str,
    query: &str,
) -> Result<HttpResponse, ApiError> {
    state.ready()?;
    let at = if query.is_empty() {
        Utc::now()
    } else {
        Params::parse(query)?.time("time")?.unwrap_or_else(Utc::now)
    };
    let customer_id = owner_id(state, owner, api).await?;
    let ns = state.pipeline.namespace();
    let answer = match state.entitlements.value(ns, &customer_id, ent, at).await {
        Ok(answer) => answer,
        Err(error) => match before_measurement(state, &customer_id, ent, at).await? {
            Some(Unmeasured::Inactive) => Some(ValueAnswer::Inactive),
            Some(Unmeasured::NotYetMeasured(from)) => {
                return Err(ApiError::bad_request(format!(
                    "time {} is before the entitlement's measureUsageFrom {}",
                    views::time(at).as_str().unwrap_or_default(),
                    views::time(from).as_str().unwrap_or_default(),
                )));
            }
            None => return Err(error.into()),
        },
    }
    .ok_or_else(|| ApiError::not_found(format!("entitlement {ent} not found")))?;
    let mut body = Vec::with_capacity(256);
    crate::fast::write_value(&mut body, &answer, api.flavor);
    Ok(HttpResponse::Ok()
        .insert_header((
            actix_web::http::header::CONTENT_TYPE,
            actix_web::http::header::HeaderValue::from_static("application/json"),
        ))
        .body(body))
}

/// Why a metered entitlement has no value at a time before its `measureUsageFrom`.
enum Unmeasured {
    /// The time is also before the entitlement became active (`activeFrom`, else its
    /// creation): OpenMeter answers `{"hasAccess": false}`, as for any inactive one.
    Inactive,
    /// Active, but usage is measured only from this time on (a future `measureUsageFrom`):
    /// a 400, as the history answers for a `from` before it.
    NotYetMeasured(DateTime<Utc>),
}

/// Called when the customer's actor could not answer a value: whether the entitlement
/// it resolved (by id, else the feature's entitlement active at `at`, else the newest,
/// as the actor resolves it) is a metered one asked about a time before usage is
/// measured, which the credit engine cannot evaluate.
async fn before_measurement(
    state: &AppState,
    customer_id: &str,
    id_or_key: &str,
    at: DateTime<Utc>,
) -> Result<Option<Unmeasured>, ApiError> {
    let all = state
        .pipeline
        .catalog()
        .customer_entitlements(&namespace(state), customer_id, true)
        .await?;
    let of_feature = || all.iter().filter(|e| e.feature_key == id_or_key);
    let Some(record) = all
        .iter()
        .find(|e| e.id == id_or_key)
        .or_else(|| of_feature().find(|e| e.active_at(at)))
        .or_else(|| of_feature().next_back())
    else {
        return Ok(None);
    };
    let Some(measured_from) = record.measure_usage_from else {
        return Ok(None);
    };
    if record.kind != EntitlementKind::Metered || ceil_minute(at) >= measured_from {
        return Ok(None);
    }
    if at < record.active_from.unwrap_or(record.created_at) {
        Ok(Some(Unmeasured::Inactive))
    } else {
        Ok(Some(Unmeasured::NotYetMeasured(measured_from)))
    }
}

async fn access(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    state.ready()?;
    let customer_id = owner_id(&state, path_part(&req, "owner")?, V2_CUSTOMER).await?;
    let now = Utc::now();
    let answers = match state
        .entitlements
        .access(&namespace(&state), &customer_id, now)
        .await
    {
        Ok(answers) => answers,
        Err(error) => access_one_by_one(&state, &customer_id, now)
            .await?
            .ok_or(error)?,
    };
    let entitlements: Map<String, Value> = answers
        .iter()
        .map(|(key, answer)| (key.clone(), value_json(answer, Flavor::V1)))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "entitlements": entitlements })))
}

/// Access when the actor could not answer it whole: each live entitlement's value on its
/// own, leaving out the ones not measured yet (a future `measureUsageFrom`), as access
/// leaves out an entitlement that cannot be evaluated. `None` when another failure
/// remains (the caller answers the original error).
async fn access_one_by_one(
    state: &AppState,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<BTreeMap<String, ValueAnswer>>, ApiError> {
    let ns = namespace(state);
    let records = state
        .pipeline
        .catalog()
        .customer_entitlements(&ns, customer_id, false)
        .await?;
    let mut answers: BTreeMap<String, ValueAnswer> = BTreeMap::new();
    for record in &records {
        let answer = match state
            .entitlements
            .value(&ns, customer_id, &record.id, now)
            .await
        {
            Ok(Some(answer)) => answer,
            Ok(None) => continue,
            Err(_) => match before_measurement(state, customer_id, &record.id, now).await? {
                Some(Unmeasured::Inactive) => ValueAnswer::Inactive,
                Some(Unmeasured::NotYetMeasured(_)) => continue,
                None => return Ok(None),
            },
        };
        // Of two entitlements of one feature (an override), the active one wins.
        let replace = matches!(
            answers.get(&record.feature_key),
            None | Some(ValueAnswer::Inactive)
        );
        if replace {
            answers.insert(record.feature_key.clone(), answer);
        }
    }
    Ok(Some(answers))
}

async fn reset(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Option<web::Json<Value>>,
    api: Api,
) -> Result<HttpResponse, ApiError> {
    // The reset's webhook carries the balance at the reset: not from half-replayed usage.
    state.ready()?;
    let body = body.map(|b| b.into_inner()).unwrap_or(Value::Null);
    let customer = owner(&state, &req, api).await?;
    let record = find_entitlement(&state, &customer, path_part(&req, "ent")?, false).await?;
    if record.kind != EntitlementKind::Metered {
        return Err(ApiError::bad_request(
            "only metered entitlements can be reset",
        ));
    }
    let now = Utc::now();
    let at = truncate_minute(time_field(&body, "effectiveAt")?.unwrap_or(now));
    if at > now {
        return Err(ApiError::bad_request(
            "reset effectiveAt cannot be in the future",
        ));
    }
    if let Some((start, _)) = current_period(&state, &record, now).await?
        && at <= start
        && start > record.measure_usage_from.unwrap_or(record.created_at)
    {
        return Err(ApiError::bad_request(
            "reset effectiveAt must be after the last reset",
        ));
    }
    let reset = ResetRecord {
        id: ulid::Ulid::new().to_string(),
        entitlement_id: record.id.clone(),
        at,
        retain_anchor: bool_field(&body, "retainAnchor")?.unwrap_or(false),
        preserve_overage: bool_field(&body, "preserveOverage")?
            .unwrap_or(record.preserve_overage_at_reset),
        created_at: now,
    };
    check_engine(&state, &record, &[], Some(&reset)).await?;
    let catalog = state.pipeline.catalog();
    catalog.insert_reset(&record.namespace, &reset).await?;
    state
        .entitlements
        .reload(&record.namespace, &customer.id)
        .await?;
    state
        .entitlements
        .reset_observed(&customer, &record, at)
        .await;
    Ok(HttpResponse::NoContent().finish())
}

async fn history(
    state: web::Data<AppState>,
    req: HttpRequest,
    api: Api,
) -> Result<HttpResponse, ApiError> {
    state.ready()?;
    let p = Params::parse(req.query_string())?;
    let customer = owner(&state, &req, api).await?;
    let record = find_entitlement(&state, &customer, path_part(&req, "ent")?, true).await?;
    if record.kind != EntitlementKind::Metered {
        return Err(ApiError::bad_request(
            "history is only kept for metered entitlements",
        ));
    }
    let size = match p.one("windowSize") {
        Some(text) => WindowSize::parse(text)
            .ok_or_else(|| ApiError::bad_request(format!("invalid windowSize {text:?}")))?,
        None => return Err(ApiError::bad_request("windowSize is required")),
    };
    let tz = match p.one("windowTimeZone") {
        Some(name) => parse_zone(name)
            .ok_or_else(|| ApiError::bad_request(format!("invalid windowTimeZone {name:?}")))?,
        None => chrono_tz::UTC,
    };
    let now = Utc::now();
    let measure_from = record.measure_usage_from.unwrap_or(record.created_at);
    let from = match p.time("from")? {
        Some(t) => t,
        None => current_period(&state, &record, now)
            .await?
            .map_or(measure_from, |p| p.0),
    };
    if from < measure_from {
        return Err(ApiError::bad_request(
            "from cannot be before the entitlement's measureUsageFrom",
        ));
    }
    let to = ceil_minute(p.time("to")?.unwrap_or(now));
    if to <= from {
        return Err(ApiError::bad_request("to must be after from"));
    }
    let mut cuts = Vec::new();
    let mut edge = window_of(from, size, tz).start;
    while edge < to {
        if edge > from {
            cuts.push(edge);
        }
        let next = window_of(edge, size, tz).end;
        if next <= edge {
            break;
        }
        edge = next;
        if cuts.len() > 100_000 {
            return Err(ApiError::bad_request(
                "too many windows: use a larger windowSize",
            ));
        }
    }
    cuts.push(truncate_minute(from).max(measure_from));
    cuts.sort();
    cuts.dedup();
    let (windowed, _) = state.entitlements.compute(&record, to, &cuts).await?;
    let (burndown, _) = state
        .entitlements
        .compute(&record, to, &[truncate_minute(from).max(measure_from)])
        .await?;
    let mut windows: BTreeMap<DateTime<Utc>, (DateTime<Utc>, Decimal, Decimal)> = BTreeMap::new();
    // Windows that saw usage, as OpenMeter lists them.
    for segment in windowed
        .segments
        .iter()
        .filter(|s| s.to > from && s.from < to)
    {
        let window = window_of(segment.from, size, tz);
        let entry = windows.entry(window.start.max(from)).or_insert((
            window.end.min(to),
            Decimal::ZERO,
            segment.balance_at_start,
        ));
        entry.1 += segment.usage;
    }
    let windowed_history: Vec<Value> = windows
        .iter()
        .filter(|(_, (_, usage, _))| !usage.is_zero())
        .map(|(start, (end, usage, balance))| {
            json!({
                "period": {"from": views::time(*start), "to": views::time(*end)},
                "usage": views::num(*usage),
                "balanceAtStart": views::num(*balance),
            })
        })
        .collect();
    let balances = |list: &[(String, Decimal)]| -> Map<String, Value> {
        list.iter()
            .map(|(id, b)| (id.clone(), views::num(*b)))
            .collect()
    };
    let burndown_history: Vec<Value> = burndown
        .segments
        .iter()
        .filter(|s| s.to > from && s.from < to)
        .map(|s| {
            json!({
                "period": {"from": views::time(s.from), "to": views::time(s.to)},
                "usage": views::num(s.usage),
                "overage": views::num(s.overage),
                "balanceAtStart": views::num(s.balance_at_start),
                "grantBalancesAtStart": balances(&s.grant_balances_at_start),
                "balanceAtEnd": views::num(s.balance_at_end),
                "grantBalancesAtEnd": balances(&s.grant_balances_at_end),
                "grantUsages": s.grant_usages.iter()
                    .map(|(id, u)| json!({"grantId": id, "usage": views::num(*u)}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "windowedHistory": windowed_history,
        "burndownHistory": burndown_history,
    })))
}
