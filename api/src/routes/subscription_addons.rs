//! Subscription add-ons (`/api/v1/subscriptions/{id}/addons`): buy a published add-on for a
//! subscription, read it with its quantity timeline, change its quantity at a timing (zero
//! takes it off). Each change merges the add-on's rate cards into the subscription's items
//! from its time on (`metron_storage::subscription_addons`), creates the entitlements of new
//! items and has billing look at the subscription again.

use crate::error::ApiError;
use crate::routes::subscriptions::{
    Timing, align_entitlements, create_entitlements, customer_of, end_dropped, metadata, ns,
    opt_str, require, resolve, subscription, subscription_error, timing,
};
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use metron_storage::product_catalog::Status as ProductStatus;
use metron_storage::product_catalog::plans::AddonBody;
use metron_storage::subscription_addons::{
    AddonRef, Error, QuantityChange, SubscriptionAddon, apply_quantity,
};
use metron_storage::subscriptions::{Status, Subscription};
use serde_json::{Value, json};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/subscriptions/{id}/addons", web::get().to(list))
        .route("/api/v1/subscriptions/{id}/addons", web::post().to(create))
        .route(
            "/api/v1/subscriptions/{id}/addons/{addon}",
            web::get().to(get),
        )
        .route(
            "/api/v1/subscriptions/{id}/addons/{addon}",
            web::patch().to(update),
        );
}

pub(crate) fn addon_error(error: Error) -> ApiError {
    match error {
        Error::Catalog(e) => crate::routes::customers::catalog_error(e),
        Error::Subscription(e) => subscription_error(e),
        e @ Error::Merge { .. } => ApiError::bad_request(e.to_string()),
        e @ Error::Duplicate => ApiError::new(StatusCode::CONFLICT, e.to_string()),
    }
}

/// `SubscriptionAddon`, its quantity resolved at `at`.
fn addon_json(addon: &SubscriptionAddon, sub: &Subscription, at: DateTime<Utc>) -> Value {
    let rate_cards: Vec<Value> = addon
        .rate_cards
        .iter()
        .map(|card| {
            json!({
                "rateCard": card,
                "affectedSubscriptionItemIds": addon.affected_items(sub, card.key()),
            })
        })
        .collect();
    let mut out = json!({
        "id": addon.id,
        "name": addon.name,
        "createdAt": addon.created_at,
        "updatedAt": addon.updated_at,
        "activeFrom": addon.active_from().unwrap_or(addon.created_at),
        "addon": addon.addon,
        "quantityAt": at,
        "quantity": addon.quantity_at(at),
        "timeline": addon.timeline(),
        "subscriptionId": addon.subscription_id,
        "rateCards": rate_cards,
    });
    if let Value::Object(map) = &mut out {
        if let Some(t) = addon.active_to() {
            map.insert("activeTo".into(), json!(t));
        }
        if let Some(d) = &addon.description {
            map.insert("description".into(), json!(d));
        }
        if let Some(m) = &addon.metadata {
            map.insert("metadata".into(), json!(m));
        }
    }
    out
}

/// OpenMeter's bounds on a resource's name and description.
const NAME_LEN_MAX: usize = 256;
const DESCRIPTION_LEN_MAX: usize = 1024;

fn name(body: &Value) -> Result<Option<String>, ApiError> {
    match opt_str(body, "name")? {
        Some(n) if n.is_empty() || n.chars().count() > NAME_LEN_MAX => Err(ApiError::bad_request(
            format!("name must be 1 to {NAME_LEN_MAX} characters"),
        )),
        n => Ok(n.map(str::to_owned)),
    }
}

fn description(body: &Value) -> Result<Option<String>, ApiError> {
    match opt_str(body, "description")? {
        Some(d) if d.chars().count() > DESCRIPTION_LEN_MAX => Err(ApiError::bad_request(format!(
            "description must be at most {DESCRIPTION_LEN_MAX} characters"
        ))),
        d => Ok(d.map(str::to_owned)),
    }
}

fn quantity(body: &Value) -> Result<Option<i64>, ApiError> {
    match body.get("quantity") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .filter(|q| *q >= 0)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request("quantity must be an integer of at least 0")),
    }
}

/// OpenMeter's quantity rules: a single-instance add-on counts at most once, and a plan's
/// assignment may cap the quantity (`maxQuantity`).
async fn check_quantity(
    state: &AppState,
    sub: &Subscription,
    addon: &AddonRef,
    quantity: i64,
) -> Result<(), ApiError> {
    if addon.instance_type == "single" && quantity > 1 {
        return Err(ApiError::bad_request(format!(
            "quantity {quantity} is invalid: add-on {} is single instance, its quantity can be 0 or 1",
            addon.key
        )));
    }
    let Some(plan) = &sub.plan else {
        return Ok(());
    };
    let assignment = state
        .pipeline
        .catalog()
        .plan_addons(ns(state), &plan.id, false)
        .await
        .map_err(crate::routes::plans::product_error)?
        .into_iter()
        .find(|pa| pa.addon_id == addon.id);
    if let Some(max) = assignment.and_then(|pa| pa.body.max_quantity)
        && quantity > max
    {
        return Err(ApiError::bad_request(format!(
            "quantity {quantity} exceeds the maximum quantity {max} of add-on {} for plan {}",
            addon.key, plan.key
        )));
    }
    Ok(())
}

/// A plan subscription may buy only add-ons its plan offers, from the plan's `fromPlanPhase`
/// on; a custom subscription any active add-on of its currency.
async fn check_offered(
    state: &AppState,
    sub: &Subscription,
    addon: &AddonRef,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    let Some(plan) = &sub.plan else {
        return Ok(());
    };
    let Some(assignment) = state
        .pipeline
        .catalog()
        .plan_addons(ns(state), &plan.id, false)
        .await
        .map_err(crate::routes::plans::product_error)?
        .into_iter()
        .find(|pa| pa.addon_id == addon.id)
    else {
        return Err(ApiError::bad_request(format!(
            "add-on {} is not available for plan {} version {}",
            addon.key, plan.key, plan.version
        )));
    };
    let from = sub
        .phases
        .iter()
        .position(|p| p.key == assignment.body.from_plan_phase);
    let running = sub.phase_at(at).map(|(i, _)| i);
    if let (Some(from), Some(running)) = (from, running)
        && running < from
    {
        return Err(ApiError::bad_request(format!(
            "add-on {} is available from phase {} on",
            addon.key, assignment.body.from_plan_phase
        )));
    }
    Ok(())
}

fn require_active_at(sub: &Subscription, at: DateTime<Utc>) -> Result<(), ApiError> {
    if sub.active_from <= at && sub.active_to.is_none_or(|end| at < end) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "subscription is not active at the time of adding the addon",
        ))
    }
}

/// Stores the add-on with the subscription it changed (`before`: as it was), then ends the
/// entitlements no item holds any more, materialises those of new items and lets billing know.
async fn commit(
    state: &AppState,
    addon: &SubscriptionAddon,
    before: &Subscription,
    mut sub: Subscription,
    insert: bool,
) -> Result<Subscription, ApiError> {
    let catalog = state.pipeline.catalog();
    catalog
        .save_subscription_addon(ns(state), addon, &sub, insert)
        .await
        .map_err(addon_error)?;
    end_dropped(state, before, &sub).await?;
    align_entitlements(state, &sub).await?;
    let customer = customer_of(state, &sub.customer_id).await?;
    create_entitlements(state, &customer, &mut sub).await?;
    catalog
        .update_subscription(&sub)
        .await
        .map_err(subscription_error)?;
    state.billing.subscription_changed(&sub.id);
    Ok(sub)
}

async fn create(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if !body.is_object() {
        return Err(ApiError::bad_request("the body must be an object"));
    }
    let addon_id = body
        .get("addon")
        .and_then(|a| a.get("id"))
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("addon.id is required"))?;
    let count = quantity(&body)?.ok_or_else(|| ApiError::bad_request("quantity is required"))?;
    let requested = timing(&body, None)?;
    let mut sub = subscription(&state, &path).await?;
    let now = Utc::now();
    require(&sub, "change_addons", Status::Active, now)?;
    let version = state
        .pipeline
        .catalog()
        .versions(ns(&state))
        .get::<AddonBody>(addon_id)
        .await
        .map_err(crate::routes::plans::product_error)?
        .ok_or_else(|| ApiError::not_found(format!("add-on {addon_id:?} not found")))?;
    if version.status(now) != ProductStatus::Active {
        return Err(ApiError::bad_request(format!(
            "add-on {} version {} is not active",
            version.key, version.version
        )));
    }
    if version.body.currency != sub.currency {
        return Err(ApiError::bad_request(format!(
            "add-on currency {} does not match the subscription's {}",
            version.body.currency, sub.currency
        )));
    }
    let reference = AddonRef {
        id: version.id.clone(),
        key: version.key.clone(),
        version: version.version,
        instance_type: version.body.instance_type.clone(),
    };
    let at = match requested {
        Timing::Immediate => now,
        t => resolve(&sub, t, now)?,
    };
    require_active_at(&sub, at)?;
    check_offered(&state, &sub, &reference, at).await?;
    check_quantity(&state, &sub, &reference, count).await?;
    let addon = SubscriptionAddon {
        id: ulid::Ulid::new().to_string(),
        subscription_id: sub.id.clone(),
        addon: reference,
        name: name(&body)?.ok_or_else(|| ApiError::bad_request("name is required"))?,
        description: description(&body)?,
        metadata: metadata(&body)?,
        rate_cards: version.body.rate_cards.clone(),
        quantities: vec![QuantityChange {
            active_from: at,
            quantity: count,
        }],
        created_at: now,
        updated_at: now,
    };
    let before = sub.clone();
    apply_quantity(&mut sub, &addon, 0, count, at).map_err(addon_error)?;
    sub.updated_at = now;
    let sub = commit(&state, &addon, &before, sub, true).await?;
    Ok(HttpResponse::Created().json(addon_json(&addon, &sub, now)))
}

async fn list(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sub = subscription(&state, &path).await?;
    let now = Utc::now();
    let addons = state
        .pipeline
        .catalog()
        .subscription_addons(ns(&state), &sub.id)
        .await
        .map_err(addon_error)?;
    let items: Vec<Value> = addons.iter().map(|a| addon_json(a, &sub, now)).collect();
    Ok(HttpResponse::Ok().json(items))
}

async fn find(
    state: &AppState,
    sub: &Subscription,
    id: &str,
) -> Result<SubscriptionAddon, ApiError> {
    state
        .pipeline
        .catalog()
        .get_subscription_addon(ns(state), &sub.id, id)
        .await
        .map_err(addon_error)?
        .ok_or_else(|| ApiError::not_found(format!("subscription add-on {id:?} not found")))
}

async fn get(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, addon_id) = path.into_inner();
    let sub = subscription(&state, &id).await?;
    let addon = find(&state, &sub, &addon_id).await?;
    Ok(HttpResponse::Ok().json(addon_json(&addon, &sub, Utc::now())))
}

/// `SubscriptionAddonUpdate`: name, description and metadata in place; a quantity from
/// `timing` on (default immediate), never before the last change.
async fn update(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if !body.is_object() {
        return Err(ApiError::bad_request("the body must be an object"));
    }
    let (id, addon_id) = path.into_inner();
    let mut sub = subscription(&state, &id).await?;
    let before = sub.clone();
    let mut addon = find(&state, &sub, &addon_id).await?;
    let now = Utc::now();
    if let Some(name) = name(&body)? {
        addon.name = name;
    }
    if let Some(d) = description(&body)? {
        addon.description = Some(d);
    }
    if body.get("metadata").is_some() {
        addon.metadata = metadata(&body)?;
    }
    if let Some(count) = quantity(&body)? {
        let at = match timing(&body, Some(Timing::Immediate))? {
            Timing::Immediate => now,
            t => resolve(&sub, t, now)?,
        };
        let last = addon.quantities.last().copied();
        if last.is_some_and(|l| at < l.active_from) {
            return Err(ApiError::bad_request(
                "cannot change the quantity before its last scheduled change",
            ));
        }
        let previous = addon.last_quantity();
        if count != previous {
            require(&sub, "change_addons", Status::Active, now)?;
            require_active_at(&sub, at)?;
            check_quantity(&state, &sub, &addon.addon, count).await?;
            apply_quantity(&mut sub, &addon, previous, count, at).map_err(addon_error)?;
            match addon.quantities.last_mut() {
                Some(l) if l.active_from == at => l.quantity = count,
                _ => addon.quantities.push(QuantityChange {
                    active_from: at,
                    quantity: count,
                }),
            }
            sub.updated_at = now;
        }
    }
    addon.updated_at = now;
    let sub = commit(&state, &addon, &before, sub, false).await?;
    Ok(HttpResponse::Ok().json(addon_json(&addon, &sub, now)))
}
