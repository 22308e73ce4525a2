//! Entitlements, grants and manual resets in the catalog.
//!
//! Records are what the API created, kept whole (as JSON beside the lookup columns);
//! the credit engine's inputs and the API's read models are derived from them in
//! `actors` and `api`. Grants are immutable but for `voided_at` and `deleted_at`.

use crate::catalog::{Catalog, CatalogRow, Error, Result, Tx};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::Row;
use std::collections::BTreeMap;

/// The three entitlement types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntitlementKind {
    Metered,
    Boolean,
    Static,
}

impl EntitlementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Metered => "metered",
            Self::Boolean => "boolean",
            Self::Static => "static",
        }
    }
}

/// A recurring period as created: `interval` is the text given (`MONTH` or an
/// ISO-8601 duration), `anchor` minute-truncated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeriodRecord {
    pub interval: String,
    pub anchor: DateTime<Utc>,
}

/// What `issueAfterReset` / `issue` asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IssueRecord {
    pub amount: Decimal,
    pub priority: u8,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementRecord {
    pub id: String,
    pub namespace: String,
    pub customer_id: String,
    pub feature_id: String,
    pub feature_key: String,
    pub kind: EntitlementKind,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub annotations: Option<Map<String, Value>>,
    #[serde(default)]
    pub is_soft_limit: bool,
    #[serde(default)]
    pub preserve_overage_at_reset: bool,
    #[serde(default)]
    pub issue: Option<IssueRecord>,
    /// Metered: when usage starts to count.
    #[serde(default)]
    pub measure_usage_from: Option<DateTime<Utc>>,
    #[serde(default)]
    pub usage_period: Option<PeriodRecord>,
    /// Static: the JSON text of the config object.
    #[serde(default)]
    pub config: Option<String>,
    /// Set only when something (a subscription) schedules the entitlement; the read
    /// model shows `createdAt` otherwise, and the entitlement is active from any time.
    #[serde(default)]
    pub active_from: Option<DateTime<Utc>>,
    #[serde(default)]
    pub active_to: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
}

impl EntitlementRecord {
    /// Active at `t`: inside `[activeFrom, activeTo)` and not deleted by then.
    pub fn active_at(&self, t: DateTime<Utc>) -> bool {
        self.active_from.is_none_or(|from| t >= from)
            && self.active_to.is_none_or(|to| t < to)
            && self.deleted_at.is_none_or(|d| t < d)
    }
}

/// A grant's expiration as created (`duration` HOUR..YEAR, `count`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpirationRecord {
    pub duration: String,
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantRecord {
    pub id: String,
    pub namespace: String,
    pub entitlement_id: String,
    pub amount: Decimal,
    pub priority: u8,
    pub effective_at: DateTime<Utc>,
    #[serde(default)]
    pub expiration: Option<ExpirationRecord>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    pub max_rollover_amount: Decimal,
    pub min_rollover_amount: Decimal,
    #[serde(default)]
    pub recurrence: Option<PeriodRecord>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub annotations: Option<Map<String, Value>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub voided_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A manual reset (`POST .../reset`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetRecord {
    pub id: String,
    pub entitlement_id: String,
    pub at: DateTime<Utc>,
    pub retain_anchor: bool,
    pub preserve_overage: bool,
    pub created_at: DateTime<Utc>,
}

/// Why an entitlement could not be created.
#[derive(Debug)]
pub enum Insert {
    Created,
    /// The customer already has an active entitlement for the feature.
    Conflict {
        existing_id: String,
    },
}

impl Catalog {
    /// Inserts an entitlement with its first grants, unless the customer already has an
    /// active one for the feature (checked in the same transaction). `replaces` is
    /// soft-deleted first (override).
    pub async fn insert_entitlement(
        &self,
        entitlement: &EntitlementRecord,
        grants: &[GrantRecord],
        replaces: Option<&EntitlementRecord>,
    ) -> Result<Insert> {
        let mut tx = self.begin_write().await?;
        if let Some(old) = replaces {
            sqlx::query("UPDATE entitlements SET definition = $1, deleted_at = $2 WHERE id = $3")
                .bind(encode(old))
                .bind(old.deleted_at.map(|t| t.timestamp_millis()))
                .bind(&old.id)
                .execute(&mut *tx)
                .await?;
        }
        let rows = sqlx::query(
            "SELECT id, definition FROM entitlements WHERE namespace = $1 AND customer_id = $2 \
             AND feature_id = $3 AND deleted_at IS NULL",
        )
        .bind(&entitlement.namespace)
        .bind(&entitlement.customer_id)
        .bind(&entitlement.feature_id)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            let other: EntitlementRecord = decode_row(&row)?;
            let starts = entitlement.active_from.unwrap_or(entitlement.created_at);
            if other.active_to.is_none_or(|to| to > starts) {
                return Ok(Insert::Conflict {
                    existing_id: other.id,
                });
            }
        }
        sqlx::query(
            "INSERT INTO entitlements (id, namespace, customer_id, feature_id, definition, created_at, deleted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(&entitlement.id)
        .bind(&entitlement.namespace)
        .bind(&entitlement.customer_id)
        .bind(&entitlement.feature_id)
        .bind(encode(entitlement))
        .bind(entitlement.created_at.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        for grant in grants {
            insert_grant_in(&mut tx, grant).await?;
        }
        tx.commit().await?;
        Ok(Insert::Created)
    }

    /// Rewrites an entitlement (soft delete).
    pub async fn update_entitlement(&self, entitlement: &EntitlementRecord) -> Result<()> {
        sqlx::query("UPDATE entitlements SET definition = $1, deleted_at = $2 WHERE id = $3")
            .bind(encode(entitlement))
            .bind(entitlement.deleted_at.map(|t| t.timestamp_millis()))
            .bind(&entitlement.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// An entitlement by id (deleted ones included).
    pub async fn get_entitlement(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Option<EntitlementRecord>> {
        let row =
            sqlx::query("SELECT id, definition FROM entitlements WHERE namespace = $1 AND id = $2")
                .bind(namespace)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| decode_row(&row)).transpose()
    }

    /// A customer's entitlements, oldest first.
    pub async fn customer_entitlements(
        &self,
        namespace: &str,
        customer_id: &str,
        include_deleted: bool,
    ) -> Result<Vec<EntitlementRecord>> {
        let rows = sqlx::query(
            "SELECT id, definition, deleted_at FROM entitlements WHERE namespace = $1 AND customer_id = $2 \
             ORDER BY created_at, id",
        )
        .bind(namespace)
        .bind(customer_id)
        .fetch_all(&self.pool)
        .await?;
        decode_rows(rows, include_deleted)
    }

    /// Every entitlement of a namespace, oldest first.
    pub async fn all_entitlements(
        &self,
        namespace: &str,
        include_deleted: bool,
    ) -> Result<Vec<EntitlementRecord>> {
        let rows = sqlx::query(
            "SELECT id, definition, deleted_at FROM entitlements WHERE namespace = $1 ORDER BY created_at, id",
        )
        .bind(namespace)
        .fetch_all(&self.pool)
        .await?;
        decode_rows(rows, include_deleted)
    }

    /// The customers of a namespace that have a live entitlement, by id.
    pub async fn entitled_customers(&self, namespace: &str) -> Result<Vec<String>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT customer_id FROM entitlements WHERE namespace = $1 AND deleted_at IS NULL \
             ORDER BY customer_id",
        )
        .bind(namespace)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    pub async fn insert_grant(&self, grant: &GrantRecord) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert_grant_in(&mut tx, grant).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Rewrites a grant (void, delete).
    pub async fn update_grant(&self, grant: &GrantRecord) -> Result<()> {
        sqlx::query("UPDATE grants SET definition = $1 WHERE id = $2")
            .bind(encode(grant))
            .bind(&grant.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_grant(&self, namespace: &str, id: &str) -> Result<Option<GrantRecord>> {
        let row = sqlx::query("SELECT id, definition FROM grants WHERE namespace = $1 AND id = $2")
            .bind(namespace)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| decode_row(&row)).transpose()
    }

    /// An entitlement's grants, oldest first.
    pub async fn entitlement_grants(&self, entitlement_id: &str) -> Result<Vec<GrantRecord>> {
        let rows = sqlx::query(
            "SELECT id, definition FROM grants WHERE entitlement_id = $1 ORDER BY created_at, id",
        )
        .bind(entitlement_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|row| decode_row(&row)).collect()
    }

    /// Every grant of a namespace, oldest first.
    pub async fn all_grants(&self, namespace: &str) -> Result<Vec<GrantRecord>> {
        let rows = sqlx::query(
            "SELECT id, definition FROM grants WHERE namespace = $1 ORDER BY created_at, id",
        )
        .bind(namespace)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|row| decode_row(&row)).collect()
    }

    pub async fn insert_reset(&self, namespace: &str, reset: &ResetRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO entitlement_resets (id, namespace, entitlement_id, definition, reset_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&reset.id)
        .bind(namespace)
        .bind(&reset.entitlement_id)
        .bind(encode(reset))
        .bind(reset.at.timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An entitlement's manual resets, oldest first.
    pub async fn entitlement_resets(&self, entitlement_id: &str) -> Result<Vec<ResetRecord>> {
        let rows = sqlx::query(
            "SELECT id, definition FROM entitlement_resets WHERE entitlement_id = $1 ORDER BY reset_at, id",
        )
        .bind(entitlement_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|row| decode_row(&row)).collect()
    }
}

async fn insert_grant_in(tx: &mut Tx, grant: &GrantRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO grants (id, namespace, entitlement_id, definition, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&grant.id)
    .bind(&grant.namespace)
    .bind(&grant.entitlement_id)
    .bind(encode(grant))
    .bind(grant.created_at.timestamp_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn decode_rows(rows: Vec<CatalogRow>, include_deleted: bool) -> Result<Vec<EntitlementRecord>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let deleted: Option<i64> = row.try_get("deleted_at")?;
        if include_deleted || deleted.is_none() {
            out.push(decode_row(&row)?);
        }
    }
    Ok(out)
}

fn decode_row<T: for<'de> Deserialize<'de>>(row: &CatalogRow) -> Result<T> {
    decode(row.try_get("id")?, row.try_get("definition")?)
}

fn encode<T: Serialize>(record: &T) -> String {
    serde_json::to_string(record).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(id: String, definition: String) -> Result<T> {
    serde_json::from_str(&definition).map_err(|source| Error::Decode { id, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn entitlement(id: &str, customer: &str, feature: &str) -> EntitlementRecord {
        let now = Utc::now();
        EntitlementRecord {
            id: id.into(),
            namespace: "default".into(),
            customer_id: customer.into(),
            feature_id: feature.into(),
            feature_key: feature.into(),
            kind: EntitlementKind::Metered,
            metadata: None,
            annotations: None,
            is_soft_limit: false,
            preserve_overage_at_reset: false,
            issue: None,
            measure_usage_from: Some(now),
            usage_period: Some(PeriodRecord {
                interval: "MONTH".into(),
                anchor: now,
            }),
            config: None,
            active_from: None,
            active_to: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        }
    }

    crate::catalog_test! {
        #[tokio::test]
        async fn entitlements_grants_resets_round_trip_and_conflict(db) -> anyhow::Result<()> {
            let catalog = db.open().await;
            let first = entitlement("e1", "c1", "f1");
            let now = first.created_at;
            let grant = GrantRecord {
                id: "g1".into(),
                namespace: "default".into(),
                entitlement_id: "e1".into(),
                amount: Decimal::from_str("100.5")?,
                priority: 1,
                effective_at: now,
                expiration: None,
                expires_at: None,
                max_rollover_amount: Decimal::ZERO,
                min_rollover_amount: Decimal::ZERO,
                recurrence: None,
                metadata: None,
                annotations: None,
                created_at: now,
                updated_at: now,
                voided_at: None,
                deleted_at: None,
            };
            assert!(matches!(
                catalog
                    .insert_entitlement(&first, std::slice::from_ref(&grant), None)
                    .await?,
                Insert::Created
            ));
            match catalog
                .insert_entitlement(&entitlement("e2", "c1", "f1"), &[], None)
                .await?
            {
                Insert::Conflict { existing_id } => assert_eq!(existing_id, "e1"),
                Insert::Created => anyhow::bail!("a second active entitlement for the feature"),
            }
            // Override: the old one is deleted in the same transaction.
            let mut old = first.clone();
            old.deleted_at = Some(now);
            assert!(matches!(
                catalog
                    .insert_entitlement(&entitlement("e3", "c1", "f1"), &[], Some(&old))
                    .await?,
                Insert::Created
            ));
            let live = catalog
                .customer_entitlements("default", "c1", false)
                .await?;
            assert_eq!(
                live.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
                ["e3"]
            );
            assert_eq!(
                catalog
                    .customer_entitlements("default", "c1", true)
                    .await?
                    .len(),
                2
            );
            assert_eq!(catalog.entitlement_grants("e1").await?, vec![grant.clone()]);
            let mut voided = grant.clone();
            voided.voided_at = Some(now);
            catalog.update_grant(&voided).await?;
            assert_eq!(catalog.get_grant("default", "g1").await?, Some(voided));
            let reset = ResetRecord {
                id: "r1".into(),
                entitlement_id: "e3".into(),
                at: now,
                retain_anchor: false,
                preserve_overage: true,
                created_at: now,
            };
            catalog.insert_reset("default", &reset).await?;
            assert_eq!(catalog.entitlement_resets("e3").await?, vec![reset]);
            assert_eq!(
                catalog.entitled_customers("default").await?,
                vec!["c1".to_string()]
            );
            Ok(())
        }
    }

    crate::catalog_test! {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_writers_wait_instead_of_failing(db) -> anyhow::Result<()> {
            // Deferred transactions that upgrade to write fail with SQLITE_BUSY under
            // concurrency; write transactions take the write lock first (BEGIN IMMEDIATE,
            // PostgreSQL's advisory lock) and queue on it.
            let catalog = db.open().await;
            let mut tasks = Vec::new();
            for i in 0..32 {
                let catalog = catalog.clone();
                tasks.push(tokio::spawn(async move {
                    let e = entitlement(&format!("e{i}"), &format!("c{i}"), "f1");
                    catalog.insert_entitlement(&e, &[], None).await
                }));
            }
            for task in tasks {
                assert!(matches!(task.await??, Insert::Created));
            }
            assert_eq!(catalog.all_entitlements("default", false).await?.len(), 32);
            Ok(())
        }
    }
}
