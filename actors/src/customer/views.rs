//! OpenMeter's read models of entitlements, grants and values, as JSON: what the API
//! answers and what notifications carry.

use chrono::{DateTime, SecondsFormat, Utc};
use metron_engine::credit::{Interval, Value as Balance};
use metron_engine::decimal::to_json_text;
use metron_storage::customers::{Customer, Subject};
use metron_storage::entitlements::{EntitlementKind, EntitlementRecord, GrantRecord, PeriodRecord};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

/// A decimal as a JSON number.
pub fn num(value: Decimal) -> Value {
    serde_json::from_str(&to_json_text(value)).unwrap_or(Value::Null)
}

pub fn time(t: DateTime<Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// Which API generation a read model is for: v1 (subject-scoped) or v2 (customer-scoped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    V1,
    V2,
}

/// `{interval, anchor, intervalISO}`.
pub fn period_view(period: &PeriodRecord) -> Value {
    let (name, iso) = match Interval::parse(&period.interval) {
        Ok(interval) => (interval.api_name(), interval.iso()),
        Err(_) => (period.interval.clone(), period.interval.clone()),
    };
    json!({"interval": name, "anchor": time(period.anchor), "intervalISO": iso})
}

/// Who an entitlement belongs to, as its read model names it.
pub struct Owner<'a> {
    pub customer_id: &'a str,
    pub customer_key: Option<&'a str>,
    pub subject_key: &'a str,
}

/// An entitlement's read model. `current` is the usage period containing now (metered).
pub fn entitlement_view(
    record: &EntitlementRecord,
    owner: &Owner<'_>,
    current: Option<(DateTime<Utc>, DateTime<Utc>)>,
    flavor: Flavor,
) -> Value {
    let mut v = Map::new();
    v.insert("type".into(), json!(record.kind.as_str()));
    v.insert("id".into(), json!(record.id));
    v.insert("featureId".into(), json!(record.feature_id));
    v.insert("featureKey".into(), json!(record.feature_key));
    match flavor {
        Flavor::V1 => {
            v.insert("subjectKey".into(), json!(owner.subject_key));
        }
        Flavor::V2 => {
            v.insert("customerId".into(), json!(owner.customer_id));
            if let Some(key) = owner.customer_key {
                v.insert("customerKey".into(), json!(key));
            }
        }
    }
    v.insert(
        "metadata".into(),
        serde_json::to_value(record.metadata.clone().unwrap_or_default()).unwrap_or_default(),
    );
    if let Some(annotations) = &record.annotations {
        v.insert("annotations".into(), Value::Object(annotations.clone()));
    }
    v.insert(
        "activeFrom".into(),
        time(record.active_from.unwrap_or(record.created_at)),
    );
    if let Some(to) = record.active_to {
        v.insert("activeTo".into(), time(to));
    }
    v.insert("createdAt".into(), time(record.created_at));
    v.insert("updatedAt".into(), time(record.updated_at));
    if let Some(deleted) = record.deleted_at {
        v.insert("deletedAt".into(), time(deleted));
    }
    if let Some(period) = &record.usage_period {
        v.insert("usagePeriod".into(), period_view(period));
    }
    if let Some((from, to)) = current {
        v.insert(
            "currentUsagePeriod".into(),
            json!({"from": time(from), "to": time(to)}),
        );
    }
    match record.kind {
        EntitlementKind::Metered => {
            v.insert("isSoftLimit".into(), json!(record.is_soft_limit));
            v.insert(
                "preserveOverageAtReset".into(),
                json!(record.preserve_overage_at_reset),
            );
            if flavor == Flavor::V1 {
                v.insert("isUnlimited".into(), json!(false));
            }
            if let Some(issue) = &record.issue {
                v.insert("issueAfterReset".into(), num(issue.amount));
                v.insert("issueAfterResetPriority".into(), json!(issue.priority));
                if flavor == Flavor::V2 {
                    v.insert(
                        "issue".into(),
                        json!({"amount": num(issue.amount), "priority": issue.priority}),
                    );
                }
            }
            if let Some(from) = record.measure_usage_from {
                v.insert("measureUsageFrom".into(), time(from));
            }
            if let Some((from, _)) = current {
                v.insert("lastReset".into(), time(from));
            }
        }
        EntitlementKind::Static => {
            v.insert(
                "config".into(),
                json!(record.config.clone().unwrap_or_default()),
            );
        }
        EntitlementKind::Boolean => {}
    }
    Value::Object(v)
}

/// A grant's read model. v1 grants always carry an expiration (v2 grants without one
/// are listed by v1 with OpenMeter's placeholder).
pub fn grant_view(
    grant: &GrantRecord,
    next_recurrence: Option<DateTime<Utc>>,
    flavor: Flavor,
) -> Value {
    let mut v = Map::new();
    v.insert("id".into(), json!(grant.id));
    v.insert("entitlementId".into(), json!(grant.entitlement_id));
    v.insert("amount".into(), num(grant.amount));
    v.insert("priority".into(), json!(grant.priority));
    v.insert("effectiveAt".into(), time(grant.effective_at));
    match (&grant.expiration, flavor) {
        (Some(e), _) => {
            v.insert(
                "expiration".into(),
                json!({"duration": e.duration, "count": e.count}),
            );
        }
        (None, Flavor::V1) => {
            // OpenMeter's placeholder (MapEntitlementGrantToAPI): 100 years, and an
            // expiresAt 100 years from now.
            v.insert(
                "expiration".into(),
                json!({"duration": "YEAR", "count": 100}),
            );
        }
        (None, Flavor::V2) => {}
    }
    match (grant.expires_at, flavor) {
        (Some(expires), _) => {
            v.insert("expiresAt".into(), time(expires));
        }
        (None, Flavor::V1) => {
            if let Some(far) = Utc::now().checked_add_months(chrono::Months::new(12 * 100)) {
                v.insert("expiresAt".into(), time(far));
            }
        }
        (None, Flavor::V2) => {}
    }
    v.insert("maxRolloverAmount".into(), num(grant.max_rollover_amount));
    v.insert("minRolloverAmount".into(), num(grant.min_rollover_amount));
    if let Some(recurrence) = &grant.recurrence {
        v.insert("recurrence".into(), period_view(recurrence));
    }
    if let Some(next) = next_recurrence {
        v.insert("nextRecurrence".into(), time(next));
    }
    v.insert(
        "metadata".into(),
        serde_json::to_value(grant.metadata.clone().unwrap_or_default()).unwrap_or_default(),
    );
    if let Some(annotations) = &grant.annotations {
        v.insert("annotations".into(), Value::Object(annotations.clone()));
    }
    v.insert("createdAt".into(), time(grant.created_at));
    v.insert("updatedAt".into(), time(grant.updated_at));
    if let Some(voided) = grant.voided_at {
        v.insert("voidedAt".into(), time(voided));
    }
    if let Some(deleted) = grant.deleted_at {
        v.insert("deletedAt".into(), time(deleted));
    }
    Value::Object(v)
}

/// A metered value: `{hasAccess, balance, usage, overage, totalAvailableGrantAmount}`
/// (v2 adds `grantBalances`).
pub fn metered_value_view(has_access: bool, balance: &Balance, flavor: Flavor) -> Value {
    let mut v = json!({
        "hasAccess": has_access,
        "balance": num(balance.balance),
        "usage": num(balance.usage),
        "overage": num(balance.overage),
        "totalAvailableGrantAmount": num(balance.total_available_grant_amount),
    });
    if flavor == Flavor::V2
        && let Some(map) = v.as_object_mut()
    {
        let grants: Map<String, Value> = balance
            .grant_balances
            .iter()
            .map(|(id, b)| (id.clone(), num(*b)))
            .collect();
        map.insert("grantBalances".into(), Value::Object(grants));
    }
    v
}

/// A boolean or static value (`config` for static), or `{hasAccess:false}`.
/// A boolean or static entitlement's value (`config`: a static entitlement's).
pub fn plain_value_view(has_access: bool, config: Option<&str>) -> Value {
    let mut v = json!({"hasAccess": has_access});
    if has_access && let (Some(map), Some(config)) = (v.as_object_mut(), config) {
        map.insert("config".into(), json!(config));
    }
    v
}

/// The `Subject` of a notification payload: the stored subject of that key (the deprecated
/// subject API), else one standing for the customer's usage attribution (the customer's id
/// and times), so `id`, `createdAt` and `updatedAt` are always there.
pub fn subject_view(key: &str, stored: Option<&Subject>, customer: Option<&Customer>) -> Value {
    if let Some(subject) = stored
        && let Ok(v) = serde_json::to_value(subject)
    {
        return v;
    }
    match customer {
        Some(c) => json!({
            "id": c.id,
            "key": key,
            "createdAt": time(c.created_at),
            "updatedAt": time(c.updated_at),
        }),
        None => json!({"key": key}),
    }
}
