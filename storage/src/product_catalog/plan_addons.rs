//! Plan add-ons: which published add-ons a plan offers, from which phase, how many.
//! As in OpenMeter an assignment is named by its add-on (id or key) under its plan, and can
//! be changed only while the plan is a draft or scheduled.

use super::plans::{AddonBody, PlanAddonBody, PlanBody, addon_json, plan_addon_issues};
use super::{Issue, ProductError, Result, Status, Version, from_ms, ms};
use crate::catalog::{Catalog, CatalogRow, Error as CatalogError};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::Row;

/// One assignment of an add-on to a plan.
#[derive(Clone, Debug)]
pub struct PlanAddon {
    pub id: String,
    pub plan_id: String,
    pub addon_id: String,
    pub body: PlanAddonBody,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// OpenMeter's `PlanAddon` read model, with the add-on expanded.
pub fn plan_addon_json(
    pa: &PlanAddon,
    plan: &Version<PlanBody>,
    addon: &Version<AddonBody>,
    now: DateTime<Utc>,
) -> Value {
    let issues = plan_addon_issues(plan, addon, &pa.body, now);
    let mut out = json!({
        "createdAt": pa.created_at,
        "updatedAt": pa.updated_at,
        "addon": addon_json(addon, now),
        "fromPlanPhase": pa.body.from_plan_phase,
        "validationErrors": if issues.is_empty() { Value::Null } else { json!(issues) },
    });
    if let Value::Object(map) = &mut out {
        if let Some(t) = pa.deleted_at {
            map.insert("deletedAt".into(), json!(t));
        }
        if let Some(m) = &pa.body.metadata {
            map.insert("metadata".into(), json!(m));
        }
        if let Some(q) = pa.body.max_quantity {
            map.insert("maxQuantity".into(), json!(q));
        }
    }
    out
}

fn decode(row: &CatalogRow) -> Result<PlanAddon> {
    let id: String = row.try_get("id")?;
    let definition: String = row.try_get("definition")?;
    let body = serde_json::from_str(&definition).map_err(|source| CatalogError::Decode {
        id: id.clone(),
        source,
    })?;
    Ok(PlanAddon {
        id,
        plan_id: row.try_get("plan_id")?,
        addon_id: row.try_get("addon_id")?,
        body,
        created_at: from_ms(row.try_get("created_at")?),
        updated_at: from_ms(row.try_get("updated_at")?),
        deleted_at: row.try_get::<Option<i64>, _>("deleted_at")?.map(from_ms),
    })
}

fn encode(body: &PlanAddonBody) -> String {
    serde_json::to_string(body).unwrap_or_default()
}

fn editable(plan: &Version<PlanBody>, now: DateTime<Utc>) -> Result<()> {
    let status = plan.status(now);
    if matches!(status, Status::Draft | Status::Scheduled) {
        Ok(())
    } else {
        Err(ProductError::Invalid(vec![Issue::critical(
            "status",
            "plan_invalid_status",
            format!(
                "plan add-on assignments can be changed only for Plans in [draft scheduled], but it has {} state",
                status.as_str()
            ),
        )]))
    }
}

impl Catalog {
    /// The live assignments of a plan (deleted ones too with `include_deleted`), oldest first.
    pub async fn plan_addons(
        &self,
        namespace: &str,
        plan_id: &str,
        include_deleted: bool,
    ) -> Result<Vec<PlanAddon>> {
        let rows = sqlx::query(
            "SELECT id, plan_id, addon_id, definition, created_at, updated_at, deleted_at FROM plan_addons \
             WHERE namespace = $1 AND plan_id = $2 ORDER BY created_at, id",
        )
        .bind(namespace)
        .bind(plan_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(decode)
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|pa| include_deleted || pa.deleted_at.is_none())
            .collect())
    }

    /// Assigns an active add-on to a draft or scheduled plan.
    pub async fn create_plan_addon(
        &self,
        namespace: &str,
        plan: &Version<PlanBody>,
        addon: &Version<AddonBody>,
        body: PlanAddonBody,
        now: DateTime<Utc>,
    ) -> Result<PlanAddon> {
        editable(plan, now)?;
        if addon.status(now) != Status::Active {
            return Err(ProductError::Invalid(vec![Issue::critical(
                "addonId",
                "addon_invalid_status",
                format!(
                    "invalid add-on: only Addons in [active] can be assigned, but it has {} state",
                    addon.status(now).as_str()
                ),
            )]));
        }
        // OpenMeter's ValidateAddonBillingCadenceAreAlignedWithPlan.
        let unaligned = super::plans::cadence_alignment_issues(
            metron_engine::billing::BillingCadence::parse(&plan.body.billing_cadence).ok(),
            &addon.body.rate_cards,
        );
        if !unaligned.is_empty() {
            return Err(ProductError::Invalid(unaligned));
        }
        if self
            .plan_addons(namespace, &plan.id, false)
            .await?
            .iter()
            .any(|pa| pa.addon_id == addon.id)
        {
            return Err(ProductError::Conflict(format!(
                "plan add-on assignment already exists [plan.id={} addon.id={}]",
                plan.id, addon.id
            )));
        }
        let pa = PlanAddon {
            id: ulid::Ulid::new().to_string(),
            plan_id: plan.id.clone(),
            addon_id: addon.id.clone(),
            body,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        sqlx::query(
            "INSERT INTO plan_addons (id, namespace, plan_id, addon_id, definition, created_at, updated_at, deleted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, NULL)",
        )
        .bind(&pa.id)
        .bind(namespace)
        .bind(&pa.plan_id)
        .bind(&pa.addon_id)
        .bind(encode(&pa.body))
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(pa)
    }

    /// Replaces an assignment's phase, quantity and metadata.
    pub async fn update_plan_addon(
        &self,
        plan: &Version<PlanBody>,
        mut pa: PlanAddon,
        body: PlanAddonBody,
        now: DateTime<Utc>,
    ) -> Result<PlanAddon> {
        editable(plan, now)?;
        pa.body = body;
        pa.updated_at = now;
        sqlx::query("UPDATE plan_addons SET definition = $1, updated_at = $2 WHERE id = $3")
            .bind(encode(&pa.body))
            .bind(ms(now))
            .bind(&pa.id)
            .execute(&self.pool)
            .await?;
        Ok(pa)
    }

    /// Soft-deletes an assignment.
    pub async fn delete_plan_addon(
        &self,
        plan: &Version<PlanBody>,
        pa: &PlanAddon,
        now: DateTime<Utc>,
    ) -> Result<()> {
        editable(plan, now)?;
        sqlx::query("UPDATE plan_addons SET deleted_at = $1, updated_at = $1 WHERE id = $2")
            .bind(ms(now))
            .bind(&pa.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
