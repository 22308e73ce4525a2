//! The product catalog's versioned documents: plans and add-ons.
//!
//! Both follow OpenMeter's lifecycle. A key has numbered versions; at most one version per key
//! is a draft; a version's status follows from its effective period at the time of reading
//! (no `effectiveFrom`: draft; `effectiveFrom` in the future: scheduled; in the period: active;
//! after `effectiveTo`: archived). Publishing a version makes it active from now and archives
//! the key's active version at the same instant; only drafts and scheduled versions can be
//! edited; active versions cannot be deleted. [`Versions`] keeps that lifecycle once for both
//! kinds; [`plans`] holds what is particular to each document and its validation.

pub mod plan_addons;
pub mod plans;
#[cfg(test)]
mod tests;

use crate::catalog::{Catalog, CatalogRow, Error as CatalogError, from_ms, ms};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;

/// A validation issue in OpenMeter's shape (`ValidationError` in the v1 API): which field,
/// a stable code and a message. Critical issues refuse a write; the others are kept on the
/// document (`validationErrors`) and refuse only publishing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Issue {
    pub field: String,
    pub code: String,
    pub message: String,
    #[serde(skip)]
    pub critical: bool,
}

impl Issue {
    pub fn warning(field: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code: code.to_owned(),
            message: message.into(),
            critical: false,
        }
    }

    pub fn critical(field: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        Self {
            critical: true,
            ..Self::warning(field, code, message)
        }
    }

    /// The same issue under a parent field, as OpenMeter's field selectors nest:
    /// `phases[key=trial]` + `duration` = `phases[key=trial].duration`.
    pub fn under(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_owned()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProductError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{}", join_issues(.0))]
    Invalid(Vec<Issue>),
    #[error("{0}")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
}

impl From<sqlx::Error> for ProductError {
    fn from(error: sqlx::Error) -> Self {
        Self::Catalog(CatalogError::Query(error))
    }
}

fn join_issues(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| {
            if i.field.is_empty() {
                i.message.clone()
            } else {
                format!("{}: {}", i.field, i.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub type Result<T, E = ProductError> = std::result::Result<T, E>;

/// Which kind of versioned document a row holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Plan,
    Addon,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Plan => "plan",
            Kind::Addon => "addon",
        }
    }

    /// The noun OpenMeter's messages use.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Plan => "Plan",
            Kind::Addon => "Addon",
        }
    }
}

/// A version's status at an instant (OpenMeter's `PlanStatus` / `AddonStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Draft,
    Active,
    Archived,
    Scheduled,
}

impl Status {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "draft" => Status::Draft,
            "active" => Status::Active,
            "archived" => Status::Archived,
            "scheduled" => Status::Scheduled,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Active => "active",
            Status::Archived => "archived",
            Status::Scheduled => "scheduled",
        }
    }
}

/// One version of a document with its lifecycle fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Version<T> {
    pub id: String,
    pub key: String,
    pub version: i64,
    pub body: T,
    pub effective_from: Option<DateTime<Utc>>,
    pub effective_to: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl<T> Version<T> {
    /// The status at `now`, from the effective period alone (as OpenMeter derives it).
    pub fn status(&self, now: DateTime<Utc>) -> Status {
        match (self.effective_from, self.effective_to) {
            (None, _) => Status::Draft,
            (Some(_), Some(to)) if to <= now => Status::Archived,
            (Some(from), _) if from > now => Status::Scheduled,
            _ => Status::Active,
        }
    }
}

/// Filters of a version listing (`listPlans`, `listAddons`).
#[derive(Clone, Debug, Default)]
pub struct VersionFilter {
    pub include_deleted: bool,
    pub ids: Vec<String>,
    pub keys: Vec<String>,
    /// `keyVersion`: key → versions.
    pub key_versions: Vec<(String, Vec<i64>)>,
    pub statuses: Vec<Status>,
    pub currencies: Vec<String>,
    pub order_by: VersionOrder,
    pub descending: bool,
    pub page: usize,
    pub page_size: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VersionOrder {
    Id,
    Key,
    Version,
    #[default]
    CreatedAt,
    UpdatedAt,
}

/// A document body: what the lifecycle needs to know of it.
pub trait Body: Serialize + DeserializeOwned + Clone {
    const KIND: Kind;
    /// ISO 4217 code, for the `currency` filter.
    fn currency(&self) -> &str;
    /// Every issue of the body (critical and warnings).
    fn issues(&self) -> Vec<Issue>;
}

/// The stored row: body plus lifecycle, as JSON in `definition`.
#[derive(Serialize, serde::Deserialize)]
struct Stored<T> {
    body: T,
}

/// Versioned documents of one kind in the catalog.
pub struct Versions<'a> {
    catalog: &'a Catalog,
    namespace: &'a str,
}

impl Catalog {
    /// The versioned plans and add-ons of a namespace.
    pub fn versions<'a>(&'a self, namespace: &'a str) -> Versions<'a> {
        Versions {
            catalog: self,
            namespace,
        }
    }
}

fn decode<T: Body>(row: &CatalogRow) -> Result<Version<T>> {
    let id: String = row.try_get("id")?;
    let definition: String = row.try_get("definition")?;
    let stored: Stored<T> =
        serde_json::from_str(&definition).map_err(|source| CatalogError::Decode {
            id: id.clone(),
            source,
        })?;
    Ok(Version {
        id,
        key: row.try_get("key")?,
        version: row.try_get("version")?,
        body: stored.body,
        effective_from: row
            .try_get::<Option<i64>, _>("effective_from")?
            .map(from_ms),
        effective_to: row.try_get::<Option<i64>, _>("effective_to")?.map(from_ms),
        created_at: from_ms(row.try_get("created_at")?),
        updated_at: from_ms(row.try_get("updated_at")?),
        deleted_at: row.try_get::<Option<i64>, _>("deleted_at")?.map(from_ms),
    })
}

fn encode<T: Body>(body: &T) -> Result<String> {
    serde_json::to_string(&Stored { body: body.clone() }).map_err(|source| {
        ProductError::Catalog(CatalogError::Decode {
            id: String::new(),
            source,
        })
    })
}

/// `SELECT <every column> FROM product_versions <rest>`, as one static string (sqlx runs
/// only static SQL).
macro_rules! select_versions {
    ($rest:literal) => {
        concat!(
            "SELECT id, key, version, definition, effective_from, effective_to, created_at, updated_at, deleted_at \
             FROM product_versions ",
            $rest
        )
    };
}

/// Refuses a body with critical issues (warnings are kept on the document).
fn check_critical<T: Body>(body: &T) -> Result<()> {
    let critical: Vec<Issue> = body.issues().into_iter().filter(|i| i.critical).collect();
    if critical.is_empty() {
        Ok(())
    } else {
        Err(ProductError::Invalid(critical))
    }
}

impl Versions<'_> {
    fn pool(&self) -> &sqlx::AnyPool {
        &self.catalog.pool
    }

    /// Creates a new draft version of `key` (version = highest + 1). A key has at most one
    /// live draft.
    pub async fn create<T: Body>(
        &self,
        key: &str,
        body: T,
        now: DateTime<Utc>,
    ) -> Result<Version<T>> {
        check_critical(&body)?;
        let kind = T::KIND;
        let mut tx = self.catalog.begin_write().await?;
        let rows = sqlx::query(select_versions!(
            "WHERE namespace = $1 AND kind = $2 AND key = $3"
        ))
        .bind(self.namespace)
        .bind(kind.as_str())
        .bind(key)
        .fetch_all(&mut *tx)
        .await?;
        let mut version = 1;
        for row in &rows {
            let v: Version<T> = decode(row)?;
            if v.deleted_at.is_none() && v.status(now) == Status::Draft {
                return Err(ProductError::Invalid(vec![Issue::critical(
                    "",
                    "only_single_draft_allowed",
                    format!("only a single draft version is allowed for {}", kind.noun()),
                )]));
            }
            version = version.max(v.version + 1);
        }
        let created = Version {
            id: ulid::Ulid::new().to_string(),
            key: key.to_owned(),
            version,
            body,
            effective_from: None,
            effective_to: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        sqlx::query(
            "INSERT INTO product_versions (id, namespace, kind, key, version, definition, effective_from, effective_to, created_at, updated_at, deleted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, $7, $7, NULL)",
        )
        .bind(&created.id)
        .bind(self.namespace)
        .bind(kind.as_str())
        .bind(key)
        .bind(version)
        .bind(encode(&created.body)?)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(created)
    }

    /// A version by id (deleted ones included: the caller decides).
    pub async fn get<T: Body>(&self, id: &str) -> Result<Option<Version<T>>> {
        let row = sqlx::query(select_versions!(
            "WHERE namespace = $1 AND kind = $2 AND id = $3"
        ))
        .bind(self.namespace)
        .bind(T::KIND.as_str())
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Every live version of a key, oldest first.
    pub async fn all_of_key<T: Body>(&self, key: &str) -> Result<Vec<Version<T>>> {
        let rows = sqlx::query(select_versions!(
            "WHERE namespace = $1 AND kind = $2 AND key = $3 \
             AND deleted_at IS NULL ORDER BY version"
        ))
        .bind(self.namespace)
        .bind(T::KIND.as_str())
        .bind(key)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode).collect()
    }

    /// OpenMeter's `GET /plans/{planId}`: an id, or a key meaning the key's active version
    /// (with `include_latest`, its highest version whatever its status).
    pub async fn get_by_id_or_key<T: Body>(
        &self,
        id_or_key: &str,
        include_latest: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<Version<T>>> {
        if let Some(v) = self.get::<T>(id_or_key).await? {
            return Ok(Some(v));
        }
        let versions = self.all_of_key::<T>(id_or_key).await?;
        Ok(if include_latest {
            versions.into_iter().next_back()
        } else {
            versions
                .into_iter()
                .rev()
                .find(|v| v.status(now) == Status::Active)
        })
    }

    /// A key's given version (live).
    pub async fn get_by_key_version<T: Body>(
        &self,
        key: &str,
        version: i64,
    ) -> Result<Option<Version<T>>> {
        Ok(self
            .all_of_key::<T>(key)
            .await?
            .into_iter()
            .find(|v| v.version == version))
    }

    /// A page of versions and the total count, filtered as the listing asks.
    pub async fn list<T: Body>(
        &self,
        filter: &VersionFilter,
        now: DateTime<Utc>,
    ) -> Result<(usize, Vec<Version<T>>)> {
        let rows = sqlx::query(select_versions!("WHERE namespace = $1 AND kind = $2"))
            .bind(self.namespace)
            .bind(T::KIND.as_str())
            .fetch_all(self.pool())
            .await?;
        let mut all: Vec<Version<T>> =
            rows.iter()
                .map(decode)
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .filter(|v: &Version<T>| filter.include_deleted || v.deleted_at.is_none())
                .filter(|v| filter.ids.is_empty() || filter.ids.contains(&v.id))
                .filter(|v| filter.keys.is_empty() || filter.keys.contains(&v.key))
                .filter(|v| {
                    filter.key_versions.is_empty()
                        || filter.key_versions.iter().any(|(k, vs)| {
                            *k == v.key && (vs.is_empty() || vs.contains(&v.version))
                        })
                })
                .filter(|v| filter.statuses.is_empty() || filter.statuses.contains(&v.status(now)))
                .filter(|v| {
                    filter.currencies.is_empty()
                        || filter
                            .currencies
                            .iter()
                            .any(|c| c.eq_ignore_ascii_case(v.body.currency()))
                })
                .collect();
        all.sort_by(|a, b| {
            let order = match filter.order_by {
                VersionOrder::Id => a.id.cmp(&b.id),
                VersionOrder::Key => a.key.cmp(&b.key).then(a.version.cmp(&b.version)),
                VersionOrder::Version => a.version.cmp(&b.version).then(a.key.cmp(&b.key)),
                VersionOrder::CreatedAt => a.created_at.cmp(&b.created_at),
                VersionOrder::UpdatedAt => a.updated_at.cmp(&b.updated_at),
            }
            .then(a.id.cmp(&b.id));
            if filter.descending {
                order.reverse()
            } else {
                order
            }
        });
        let total = all.len();
        let start = filter
            .page
            .saturating_sub(1)
            .saturating_mul(filter.page_size);
        let items = all.into_iter().skip(start).take(filter.page_size).collect();
        Ok((total, items))
    }

    async fn live<T: Body>(&self, id: &str) -> Result<Version<T>> {
        self.get::<T>(id)
            .await?
            .filter(|v| v.deleted_at.is_none())
            .ok_or_else(|| ProductError::NotFound(format!("{} {id:?}", T::KIND.noun())))
    }

    async fn save<T: Body>(&self, v: &Version<T>) -> Result<()> {
        sqlx::query(
            "UPDATE product_versions SET definition = $1, effective_from = $2, effective_to = $3, \
             updated_at = $4, deleted_at = $5 WHERE id = $6",
        )
        .bind(encode(&v.body)?)
        .bind(v.effective_from.map(ms))
        .bind(v.effective_to.map(ms))
        .bind(ms(v.updated_at))
        .bind(v.deleted_at.map(ms))
        .bind(&v.id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    fn refuse<T>(kind: Kind, what: &str, allowed: &[Status], status: Status) -> Result<T> {
        let allowed: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
        Err(ProductError::Invalid(vec![Issue::critical(
            "status",
            &format!("{}_invalid_status", kind.as_str()),
            format!(
                "only {}s in [{}] can be {what}, but it has {} state",
                kind.noun(),
                allowed.join(" "),
                status.as_str()
            ),
        )]))
    }

    /// Replaces the body of a draft or scheduled version.
    pub async fn update<T: Body>(
        &self,
        id: &str,
        body: T,
        now: DateTime<Utc>,
    ) -> Result<Version<T>> {
        check_critical(&body)?;
        let mut v = self.live::<T>(id).await?;
        let status = v.status(now);
        let allowed = [Status::Draft, Status::Scheduled];
        if !allowed.contains(&status) {
            return Self::refuse(T::KIND, "updated", &allowed, status);
        }
        v.body = body;
        v.updated_at = now;
        self.save(&v).await?;
        Ok(v)
    }

    /// Makes a draft (or scheduled) version active from `now`; the key's active version is
    /// archived at the same instant. A version with any validation issue is refused.
    pub async fn publish<T: Body>(&self, id: &str, now: DateTime<Utc>) -> Result<Version<T>> {
        let mut v = self.live::<T>(id).await?;
        let status = v.status(now);
        let allowed = [Status::Draft, Status::Scheduled];
        if !allowed.contains(&status) {
            return Self::refuse(T::KIND, "published/rescheduled", &allowed, status);
        }
        let issues = v.body.issues();
        if !issues.is_empty() {
            return Err(ProductError::Invalid(issues));
        }
        for mut other in self.all_of_key::<T>(&v.key).await? {
            if other.id != v.id && other.status(now) == Status::Active {
                other.effective_to = Some(now);
                other.updated_at = now;
                self.save(&other).await?;
            }
        }
        v.effective_from = Some(now);
        v.effective_to = None;
        v.updated_at = now;
        self.save(&v).await?;
        Ok(v)
    }

    /// Ends an active version's effective period at `now`.
    pub async fn archive<T: Body>(&self, id: &str, now: DateTime<Utc>) -> Result<Version<T>> {
        let mut v = self.live::<T>(id).await?;
        let status = v.status(now);
        if status != Status::Active {
            return Self::refuse(T::KIND, "archived", &[Status::Active], status);
        }
        v.effective_to = Some(now);
        v.updated_at = now;
        self.save(&v).await?;
        Ok(v)
    }

    /// Soft-deletes a draft, scheduled or archived version.
    pub async fn delete<T: Body>(&self, id: &str, now: DateTime<Utc>) -> Result<Version<T>> {
        let mut v = self.live::<T>(id).await?;
        let status = v.status(now);
        let allowed = [Status::Archived, Status::Scheduled, Status::Draft];
        if !allowed.contains(&status) {
            return Self::refuse(T::KIND, "deleted", &allowed, status);
        }
        v.deleted_at = Some(now);
        v.updated_at = now;
        self.save(&v).await?;
        Ok(v)
    }

    /// A new draft version copied from the given version (id) or a key's highest version.
    pub async fn next<T: Body>(&self, id_or_key: &str, now: DateTime<Utc>) -> Result<Version<T>> {
        let source = match self
            .get::<T>(id_or_key)
            .await?
            .filter(|v| v.deleted_at.is_none())
        {
            Some(v) => v,
            None => self
                .all_of_key::<T>(id_or_key)
                .await?
                .into_iter()
                .next_back()
                .ok_or_else(|| {
                    ProductError::NotFound(format!("{} {id_or_key:?}", T::KIND.noun()))
                })?,
        };
        self.create(&source.key, source.body, now).await
    }
}
