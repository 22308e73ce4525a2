//! The product catalog: plans (`/api/v1/plans`), add-ons (`/api/v1/addons`) and the add-ons a
//! plan offers (`/api/v1/plans/{planId}/addons`), with OpenMeter's versioned lifecycle.

use crate::error::ApiError;
use crate::params::Params;
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use metron_storage::catalog::Catalog;
use metron_storage::product_catalog::plan_addons::{PlanAddon, plan_addon_json};
use metron_storage::product_catalog::plans::{
    AddonBody, AddonCreate, AddonUpdate, PlanAddonBody, PlanBody, PlanCreate, addon_json,
    check_key, plan_json,
};
use metron_storage::product_catalog::{
    Body, ProductError, Status, Version, VersionFilter, VersionOrder,
};
use serde_json::{Value, json};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/plans", web::get().to(list::<PlanBody>))
        .route("/api/v1/plans", web::post().to(create::<PlanCreate>))
        .route("/api/v1/plans/{plan}", web::get().to(get::<PlanBody>))
        .route("/api/v1/plans/{plan}", web::put().to(update_plan))
        .route("/api/v1/plans/{plan}", web::delete().to(delete::<PlanBody>))
        .route("/api/v1/plans/{plan}/publish", web::post().to(publish_plan))
        .route(
            "/api/v1/plans/{plan}/archive",
            web::post().to(archive::<PlanBody>),
        )
        .route("/api/v1/plans/{plan}/next", web::post().to(next_plan))
        .route(
            "/api/v1/plans/{plan}/addons",
            web::get().to(list_plan_addons),
        )
        .route(
            "/api/v1/plans/{plan}/addons",
            web::post().to(create_plan_addon),
        )
        .route(
            "/api/v1/plans/{plan}/addons/{addon}",
            web::get().to(get_plan_addon),
        )
        .route(
            "/api/v1/plans/{plan}/addons/{addon}",
            web::put().to(update_plan_addon),
        )
        .route(
            "/api/v1/plans/{plan}/addons/{addon}",
            web::delete().to(delete_plan_addon),
        )
        .route("/api/v1/addons", web::get().to(list::<AddonBody>))
        .route("/api/v1/addons", web::post().to(create::<AddonCreate>))
        .route("/api/v1/addons/{addon}", web::get().to(get::<AddonBody>))
        .route("/api/v1/addons/{addon}", web::put().to(update_addon))
        .route(
            "/api/v1/addons/{addon}",
            web::delete().to(delete::<AddonBody>),
        )
        .route(
            "/api/v1/addons/{addon}/publish",
            web::post().to(publish_addon),
        )
        .route(
            "/api/v1/addons/{addon}/archive",
            web::post().to(archive::<AddonBody>),
        );
}

/// A product catalog error as OpenMeter answers it: validation issues are a 400 whose
/// `extensions.validationErrors` lists them.
pub(crate) fn product_error(error: ProductError) -> ApiError {
    match error {
        ProductError::Catalog(e) => crate::routes::customers::catalog_error(e),
        ProductError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
        ProductError::Conflict(detail) => ApiError::new(StatusCode::CONFLICT, detail),
        ProductError::Invalid(issues) => {
            let detail = ProductError::Invalid(issues.clone()).to_string();
            let mut e = ApiError::bad_request(detail);
            e.extensions = Some(json!({ "validationErrors": issues }));
            e
        }
    }
}

fn catalog(state: &AppState) -> &Catalog {
    state.pipeline.catalog()
}

fn namespace(state: &AppState) -> &str {
    state.pipeline.namespace()
}

/// The listing filter shared by plans and add-ons.
fn version_filter(p: &Params) -> Result<VersionFilter, ApiError> {
    let order_by = match p.one("orderBy").unwrap_or("created_at") {
        "id" => VersionOrder::Id,
        "key" => VersionOrder::Key,
        "version" => VersionOrder::Version,
        "created_at" => VersionOrder::CreatedAt,
        "updated_at" => VersionOrder::UpdatedAt,
        other => return Err(ApiError::bad_request(format!("invalid orderBy: {other}"))),
    };
    let descending = match p.one("order").unwrap_or("ASC") {
        "ASC" => false,
        "DESC" => true,
        other => return Err(ApiError::bad_request(format!("invalid order: {other}"))),
    };
    let mut statuses = Vec::new();
    for s in p.all("status") {
        statuses.push(
            Status::parse(&s)
                .ok_or_else(|| ApiError::bad_request(format!("invalid status: {s}")))?,
        );
    }
    let mut key_versions = Vec::new();
    for (key, values) in p.map_all("keyVersion") {
        let mut versions = Vec::new();
        for v in values {
            versions.push(v.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid keyVersion[{key}]: {v:?} is not an integer"
                ))
            })?);
        }
        key_versions.push((key, versions));
    }
    Ok(VersionFilter {
        include_deleted: p.bool("includeDeleted")?.unwrap_or(false),
        ids: p.all("id"),
        keys: p.all("key"),
        key_versions,
        statuses,
        currencies: p.all("currency"),
        order_by,
        descending,
        page: p.usize_in("page", 1, 1, usize::MAX)?,
        page_size: p.usize_in("pageSize", 100, 1, 1000)?,
    })
}

async fn list_versions<T: Body>(
    state: &AppState,
    req: &HttpRequest,
    to_json: fn(&Version<T>, DateTime<Utc>) -> Value,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let filter = version_filter(&p)?;
    let now = Utc::now();
    let (total, items) = catalog(state)
        .versions(namespace(state))
        .list::<T>(&filter, now)
        .await
        .map_err(product_error)?;
    let items: Vec<Value> = items.iter().map(|v| to_json(v, now)).collect();
    Ok(HttpResponse::Ok().json(json!({
        "totalCount": total,
        "page": filter.page,
        "pageSize": filter.page_size,
        "items": items,
    })))
}

/// A version by id, or by key (its active version; with `includeLatest=true` its newest).
async fn find<T: Body>(
    state: &AppState,
    id_or_key: &str,
    include_latest: bool,
) -> Result<Version<T>, ApiError> {
    catalog(state)
        .versions(namespace(state))
        .get_by_id_or_key::<T>(id_or_key, include_latest, Utc::now())
        .await
        .map_err(product_error)?
        .filter(|v| v.deleted_at.is_none())
        .ok_or_else(|| ApiError::not_found(format!("{} {id_or_key:?} not found", T::KIND.noun())))
}

/// A live version by id only (the actions and edits take ids).
async fn by_id<T: Body>(state: &AppState, id: &str) -> Result<Version<T>, ApiError> {
    catalog(state)
        .versions(namespace(state))
        .get::<T>(id)
        .await
        .map_err(product_error)?
        .filter(|v| v.deleted_at.is_none())
        .ok_or_else(|| ApiError::not_found(format!("{} {id:?} not found", T::KIND.noun())))
}

fn include_latest(req: &HttpRequest) -> Result<bool, ApiError> {
    Ok(Params::parse(req.query_string())?
        .bool("includeLatest")?
        .unwrap_or(false))
}

/// What the handlers shared by plans and add-ons need of a document: its read model.
trait Doc: Body + 'static {
    fn json(v: &Version<Self>, now: DateTime<Utc>) -> Value;
}

impl Doc for PlanBody {
    fn json(v: &Version<Self>, now: DateTime<Utc>) -> Value {
        plan_json(v, now)
    }
}

impl Doc for AddonBody {
    fn json(v: &Version<Self>, now: DateTime<Utc>) -> Value {
        addon_json(v, now)
    }
}

/// A create request (`PlanCreate`, `AddonCreate`): a key and a body.
trait Create: serde::de::DeserializeOwned + 'static {
    type Body: Doc;
    fn split(self) -> (String, Self::Body);
}

impl Create for PlanCreate {
    type Body = PlanBody;
    fn split(self) -> (String, PlanBody) {
        (self.key, self.body)
    }
}

impl Create for AddonCreate {
    type Body = AddonBody;
    fn split(self) -> (String, AddonBody) {
        (self.key, self.body)
    }
}

async fn list<T: Doc>(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    list_versions::<T>(&state, &req, T::json).await
}

async fn create<C: Create>(
    state: web::Data<AppState>,
    body: web::Json<C>,
) -> Result<HttpResponse, ApiError> {
    let (key, body) = body.into_inner().split();
    check_key(&key).map_err(product_error)?;
    let now = Utc::now();
    let v = catalog(&state)
        .versions(namespace(&state))
        .create(&key, body, now)
        .await
        .map_err(product_error)?;
    Ok(HttpResponse::Created().json(C::Body::json(&v, now)))
}

async fn get<T: Doc>(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let v = find::<T>(&state, &path, include_latest(&req)?).await?;
    Ok(HttpResponse::Ok().json(T::json(&v, Utc::now())))
}

async fn delete<T: Doc>(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = by_id::<T>(&state, &path).await?.id;
    catalog(&state)
        .versions(namespace(&state))
        .delete::<T>(&id, Utc::now())
        .await
        .map_err(product_error)?;
    Ok(HttpResponse::NoContent().finish())
}

async fn archive<T: Doc>(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = by_id::<T>(&state, &path).await?.id;
    let now = Utc::now();
    let v = catalog(&state)
        .versions(namespace(&state))
        .archive::<T>(&id, now)
        .await
        .map_err(product_error)?;
    Ok(HttpResponse::Ok().json(T::json(&v, now)))
}

// ---- plans ----

async fn update_plan(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<PlanBody>,
) -> Result<HttpResponse, ApiError> {
    let id = by_id::<PlanBody>(&state, &path).await?.id;
    let mut body = body.into_inner();
    // `PlanReplaceUpdate` has no currency: the plan keeps its own.
    let current = by_id::<PlanBody>(&state, &id).await?;
    body.currency = current.body.currency;
    let now = Utc::now();
    let v = catalog(&state)
        .versions(namespace(&state))
        .update(&id, body, now)
        .await
        .map_err(product_error)?;
    Ok(HttpResponse::Ok().json(plan_json(&v, now)))
}

async fn publish_plan(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let plan = by_id::<PlanBody>(&state, &path).await?;
    let now = Utc::now();
    // Publishing also checks the plan's add-on assignments, as OpenMeter does.
    let mut incompatible = Vec::new();
    for pa in catalog(&state)
        .plan_addons(namespace(&state), &plan.id, false)
        .await
        .map_err(product_error)?
    {
        if let Some(addon) = catalog(&state)
            .versions(namespace(&state))
            .get::<AddonBody>(&pa.addon_id)
            .await
            .map_err(product_error)?
            && !metron_storage::product_catalog::plans::plan_addon_issues(
                &plan, &addon, &pa.body, now,
            )
            .is_empty()
        {
            incompatible.push(metron_storage::product_catalog::Issue::warning(
                "addons",
                "plan_has_incompatible_addon",
                format!(
                    "incompatible add-on assignement [id={}, key={}, version={}]: plan has incompatible add-on assignment",
                    addon.id, addon.key, addon.version
                ),
            ));
        }
    }
    if !incompatible.is_empty() {
        return Err(product_error(ProductError::Invalid(incompatible)));
    }
    let v = catalog(&state)
        .versions(namespace(&state))
        .publish::<PlanBody>(&plan.id, now)
        .await
        .map_err(product_error)?;
    Ok(HttpResponse::Ok().json(plan_json(&v, now)))
}

async fn next_plan(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let now = Utc::now();
    let v = catalog(&state)
        .versions(namespace(&state))
        .next::<PlanBody>(&path, now)
        .await
        .map_err(product_error)?;
    Ok(HttpResponse::Created().json(plan_json(&v, now)))
}

// ---- add-ons ----

async fn update_addon(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<AddonUpdate>,
) -> Result<HttpResponse, ApiError> {
    let current = by_id::<AddonBody>(&state, &path).await?;
    let u = body.into_inner();
    let body = AddonBody {
        name: u.name,
        description: u.description,
        metadata: u.metadata,
        instance_type: u.instance_type,
        currency: current.body.currency,
        rate_cards: u.rate_cards,
    };
    let now = Utc::now();
    let v = catalog(&state)
        .versions(namespace(&state))
        .update(&current.id, body, now)
        .await
        .map_err(product_error)?;
    Ok(HttpResponse::Ok().json(addon_json(&v, now)))
}

async fn publish_addon(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = by_id::<AddonBody>(&state, &path).await?.id;
    let now = Utc::now();
    let v = catalog(&state)
        .versions(namespace(&state))
        .publish::<AddonBody>(&id, now)
        .await
        .map_err(product_error)?;
    Ok(HttpResponse::Ok().json(addon_json(&v, now)))
}

// ---- plan add-ons ----

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlanAddonCreate {
    addon_id: String,
    #[serde(flatten)]
    body: PlanAddonBody,
}

/// The plan's assignment of the add-on named by id or key, with both documents.
async fn assignment(
    state: &AppState,
    plan_id: &str,
    addon_id_or_key: &str,
) -> Result<(Version<PlanBody>, PlanAddon, Version<AddonBody>), ApiError> {
    let plan = by_id::<PlanBody>(state, plan_id).await?;
    let assignments = catalog(state)
        .plan_addons(namespace(state), &plan.id, false)
        .await
        .map_err(product_error)?;
    for pa in assignments {
        let Some(addon) = catalog(state)
            .versions(namespace(state))
            .get::<AddonBody>(&pa.addon_id)
            .await
            .map_err(product_error)?
        else {
            continue;
        };
        if addon.id == addon_id_or_key || addon.key == addon_id_or_key || pa.id == addon_id_or_key {
            return Ok((plan, pa, addon));
        }
    }
    Err(ApiError::not_found(format!(
        "plan add-on assignment {addon_id_or_key:?} of plan {plan_id:?} not found"
    )))
}

async fn list_plan_addons(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string())?;
    let filter = version_filter(&p)?;
    let plan = by_id::<PlanBody>(&state, &path).await?;
    let now = Utc::now();
    let mut rows = Vec::new();
    for pa in catalog(&state)
        .plan_addons(namespace(&state), &plan.id, filter.include_deleted)
        .await
        .map_err(product_error)?
    {
        let Some(addon) = catalog(&state)
            .versions(namespace(&state))
            .get::<AddonBody>(&pa.addon_id)
            .await
            .map_err(product_error)?
        else {
            continue;
        };
        let keep = (filter.ids.is_empty() || filter.ids.contains(&addon.id))
            && (filter.keys.is_empty() || filter.keys.contains(&addon.key))
            && (filter.key_versions.is_empty()
                || filter.key_versions.iter().any(|(k, vs)| {
                    *k == addon.key && (vs.is_empty() || vs.contains(&addon.version))
                }));
        if keep {
            rows.push((pa, addon));
        }
    }
    rows.sort_by(|(a, x), (b, y)| {
        let order = match filter.order_by {
            VersionOrder::Id => x.id.cmp(&y.id),
            VersionOrder::Key => x.key.cmp(&y.key),
            VersionOrder::Version => x.version.cmp(&y.version),
            VersionOrder::CreatedAt => a.created_at.cmp(&b.created_at),
            VersionOrder::UpdatedAt => a.updated_at.cmp(&b.updated_at),
        };
        if filter.descending {
            order.reverse()
        } else {
            order
        }
    });
    let total = rows.len();
    let start = filter
        .page
        .saturating_sub(1)
        .saturating_mul(filter.page_size);
    let items: Vec<Value> = rows
        .iter()
        .skip(start)
        .take(filter.page_size)
        .map(|(pa, addon)| plan_addon_json(pa, &plan, addon, now))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "totalCount": total,
        "page": filter.page,
        "pageSize": filter.page_size,
        "items": items,
    })))
}

async fn create_plan_addon(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<PlanAddonCreate>,
) -> Result<HttpResponse, ApiError> {
    let plan = by_id::<PlanBody>(&state, &path).await?;
    let PlanAddonCreate { addon_id, body } = body.into_inner();
    let addon = by_id::<AddonBody>(&state, &addon_id).await?;
    let now = Utc::now();
    let pa = catalog(&state)
        .create_plan_addon(namespace(&state), &plan, &addon, body, now)
        .await
        .map_err(product_error)?;
    Ok(HttpResponse::Created().json(plan_addon_json(&pa, &plan, &addon, now)))
}

async fn get_plan_addon(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (plan_id, addon) = path.into_inner();
    let (plan, pa, addon) = assignment(&state, &plan_id, &addon).await?;
    Ok(HttpResponse::Ok().json(plan_addon_json(&pa, &plan, &addon, Utc::now())))
}

async fn update_plan_addon(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Json<PlanAddonBody>,
) -> Result<HttpResponse, ApiError> {
    let (plan_id, addon) = path.into_inner();
    let (plan, pa, addon) = assignment(&state, &plan_id, &addon).await?;
    let now = Utc::now();
    let pa = catalog(&state)
        .update_plan_addon(&plan, pa, body.into_inner(), now)
        .await
        .map_err(product_error)?;
    Ok(HttpResponse::Ok().json(plan_addon_json(&pa, &plan, &addon, now)))
}

async fn delete_plan_addon(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (plan_id, addon) = path.into_inner();
    let (plan, pa, _) = assignment(&state, &plan_id, &addon).await?;
    catalog(&state)
        .delete_plan_addon(&plan, &pa, Utc::now())
        .await
        .map_err(product_error)?;
    Ok(HttpResponse::NoContent().finish())
}
