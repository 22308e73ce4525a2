//! Features in the catalog: a key that entitlements name, optionally backed by a
//! meter and group-by filters that scope the meter's usage.

use crate::catalog::{Catalog, Error, Result};
use crate::customers::{CustomerError, is_ulid};
use chrono::{DateTime, Utc};
use metron_engine::filter::StringFilter;
use metron_engine::meter::Meter;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::BTreeMap;

/// OpenMeter's `FilterString` as sent: a JSON object such as `{"$in": ["a", "b"]}`.
pub type FilterString = serde_json::Value;

/// Longest feature key (OpenMeter's key pattern).
pub const FEATURE_KEY_LEN_MAX: usize = 64;

/// The API read model of a feature (OpenMeter's `Feature`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Feature {
    pub id: String,
    pub key: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_group_by_filters: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced_meter_group_by_filters: Option<BTreeMap<String, FilterString>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_cost: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Feature {
    /// The meter group-by filters this feature applies: meterGroupByFilters as `$eq`
    /// plus the advanced ones (validated at create; an unparsable one is skipped).
    pub fn group_filters(&self) -> BTreeMap<String, StringFilter> {
        let mut out: BTreeMap<String, StringFilter> = self
            .meter_group_by_filters
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), StringFilter::Eq(v.clone())))
            .collect();
        for (k, v) in self.advanced_meter_group_by_filters.iter().flatten() {
            if let Ok(f) = StringFilter::parse(v) {
                out.insert(k.clone(), f);
            }
        }
        out
    }
}

/// `FeatureCreateInputs`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureCreate {
    pub key: String,
    pub name: String,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub meter_slug: Option<String>,
    #[serde(default)]
    pub meter_group_by_filters: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub advanced_meter_group_by_filters: Option<BTreeMap<String, FilterString>>,
    #[serde(default)]
    pub unit_cost: Option<serde_json::Value>,
}

/// Is the text a key of OpenMeter's pattern `^[a-z0-9]+(?:_[a-z0-9]+)*$`, 1 to 64 long?
pub fn is_key(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= FEATURE_KEY_LEN_MAX
        && text.split('_').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

impl FeatureCreate {
    /// Checks the input against the feature's meter (`None` when `meterSlug` names none).
    pub fn validate(&self, meter: Option<&Meter>) -> Result<(), CustomerError> {
        let invalid = |m: String| Err(CustomerError::Invalid(m));
        if !is_key(&self.key) {
            return invalid(format!(
                "invalid feature key {:?}: must match ^[a-z0-9]+(?:_[a-z0-9]+)*$ and be at most 64 characters",
                self.key
            ));
        }
        if self.name.is_empty() {
            return invalid("name is required".into());
        }
        let has_filters = self
            .meter_group_by_filters
            .as_ref()
            .is_some_and(|m| !m.is_empty())
            || self
                .advanced_meter_group_by_filters
                .as_ref()
                .is_some_and(|m| !m.is_empty());
        let Some(slug) = &self.meter_slug else {
            if has_filters {
                return invalid("meter group by filters need a meterSlug".into());
            }
            return Ok(());
        };
        let Some(meter) = meter else {
            return invalid(format!("meter {slug:?} not found"));
        };
        let keys = self
            .meter_group_by_filters
            .iter()
            .flat_map(|m| m.keys())
            .chain(
                self.advanced_meter_group_by_filters
                    .iter()
                    .flat_map(|m| m.keys()),
            );
        for key in keys {
            if !meter.group_by.contains_key(key) {
                return invalid(format!(
                    "invalid meter group by filter: {key} is not a group by key of meter {slug}"
                ));
            }
        }
        for (key, value) in self.advanced_meter_group_by_filters.iter().flatten() {
            if let Err(e) = StringFilter::parse(value) {
                return invalid(format!("invalid advancedMeterGroupByFilters.{key}: {e}"));
            }
        }
        Ok(())
    }
}

/// Why a feature change was refused.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error(transparent)]
    Catalog(#[from] Error),
    #[error("a feature with key {key:?} already exists")]
    KeyTaken { key: String },
    #[error("feature {0:?} not found")]
    NotFound(String),
}

impl From<sqlx::Error> for FeatureError {
    fn from(error: sqlx::Error) -> Self {
        Self::Catalog(Error::Query(error))
    }
}

impl Catalog {
    /// A feature by id (archived included) or by key among live features.
    pub async fn get_feature(&self, namespace: &str, id_or_key: &str) -> Result<Option<Feature>> {
        if is_ulid(id_or_key) {
            let row =
                sqlx::query("SELECT id, definition FROM features WHERE namespace = $1 AND id = $2")
                    .bind(namespace)
                    .bind(id_or_key)
                    .fetch_optional(&self.pool)
                    .await?;
            if let Some(r) = row {
                return decode_feature(r.try_get("id")?, r.try_get("definition")?).map(Some);
            }
        }
        let row = sqlx::query(
            "SELECT id, definition FROM features WHERE namespace = $1 AND key = $2 AND archived_at IS NULL \
             ORDER BY created_at, id LIMIT 1",
        )
        .bind(namespace)
        .bind(id_or_key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| decode_feature(r.try_get("id")?, r.try_get("definition")?))
            .transpose()
    }

    /// Every feature of a namespace, archived included, oldest first.
    pub async fn all_features(&self, namespace: &str) -> Result<Vec<Feature>> {
        let rows = sqlx::query(
            "SELECT id, definition FROM features WHERE namespace = $1 ORDER BY created_at, id",
        )
        .bind(namespace)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| decode_feature(r.try_get("id")?, r.try_get("definition")?))
            .collect()
    }

    /// Creates a feature from validated input; its key must be free among live features.
    /// `meterGroupByFilters` are echoed as advanced `$eq` filters, as OpenMeter does.
    pub async fn create_feature(
        &self,
        namespace: &str,
        input: FeatureCreate,
    ) -> Result<Feature, FeatureError> {
        let now = Utc::now();
        let mut advanced = input.advanced_meter_group_by_filters.unwrap_or_default();
        for (k, v) in input.meter_group_by_filters.iter().flatten() {
            advanced
                .entry(k.clone())
                .or_insert_with(|| serde_json::json!({ "$eq": v }));
        }
        let feature = Feature {
            id: ulid::Ulid::new().to_string(),
            key: input.key,
            name: input.name,
            metadata: input.metadata,
            meter_slug: input.meter_slug,
            meter_group_by_filters: input.meter_group_by_filters,
            advanced_meter_group_by_filters: (!advanced.is_empty()).then_some(advanced),
            unit_cost: input.unit_cost,
            archived_at: None,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.begin_write().await?;
        let taken: Option<String> = sqlx::query_scalar(
            "SELECT id FROM features WHERE namespace = $1 AND key = $2 AND archived_at IS NULL",
        )
        .bind(namespace)
        .bind(&feature.key)
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some() {
            return Err(FeatureError::KeyTaken { key: feature.key });
        }
        sqlx::query(
            "INSERT INTO features (id, namespace, key, definition, created_at, archived_at) VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(&feature.id)
        .bind(namespace)
        .bind(&feature.key)
        .bind(encode_feature(&feature))
        .bind(now.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(feature)
    }

    /// Archives a live feature (sets `archivedAt`).
    pub async fn archive_feature(
        &self,
        namespace: &str,
        id_or_key: &str,
    ) -> Result<Feature, FeatureError> {
        let mut feature = self
            .get_feature(namespace, id_or_key)
            .await?
            .filter(|f| f.archived_at.is_none())
            .ok_or_else(|| FeatureError::NotFound(id_or_key.to_owned()))?;
        let now = Utc::now();
        feature.archived_at = Some(now);
        feature.updated_at = now;
        sqlx::query("UPDATE features SET definition = $1, archived_at = $2 WHERE id = $3")
            .bind(encode_feature(&feature))
            .bind(now.timestamp_millis())
            .bind(&feature.id)
            .execute(&self.pool)
            .await?;
        Ok(feature)
    }
}

fn encode_feature(feature: &Feature) -> String {
    serde_json::to_string(feature).unwrap_or_default()
}

fn decode_feature(id: String, definition: String) -> Result<Feature> {
    serde_json::from_str(&definition).map_err(|source| Error::Decode { id, source })
}
