//! Subscriptions: a customer's schedule of plan phases and their rate cards (OpenMeter's
//! `Subscription`). A subscription is created from a published plan (or a custom plan), starts
//! at its `activeFrom`, runs its phases one after the other (a phase ends where the next
//! begins; the last runs until the subscription ends) and bills from `billingAnchor` every
//! `billingCadence`. Its status at an instant follows from its active interval and deletion,
//! as OpenMeter's `GetStatusAt`: scheduled, active, canceled (an end is set, not reached),
//! inactive. A customer has at most one subscription at a time.
//!
//! The stored spec keeps absolute phase starts: phases are resolved once, from the plan's
//! durations, when the subscription is created; cancelation only sets the end. Edits
//! ([`patch`]) and add-ons (`crate::subscription_addons`) version items: an item may start
//! after its phase and end before it (`activeFrom`/`activeTo`), so billing and entitlements
//! see each version only in its own interval.

pub mod patch;

use crate::catalog::{Catalog, CatalogRow, Error as CatalogError, Tx, ms};
use crate::product_catalog::plans::{PlanBody, ProRatingConfig, RateCard};
use chrono::{DateTime, Utc};
use metron_engine::billing::BillingCadence;
use metron_engine::credit::IsoDuration;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Invalid(String),
    /// OpenMeter's `only_single_subscription_allowed_per_customer_at_a_time` (409).
    #[error("only single subscription is allowed per customer at a time")]
    Overlap { conflicting_id: String },
    /// A lifecycle action the status does not allow (403 in OpenMeter).
    #[error("transition {action} in state {status} not allowed")]
    Forbidden {
        action: &'static str,
        status: &'static str,
    },
    #[error("subscription {0:?} not found")]
    NotFound(String),
}

impl From<sqlx::Error> for SubscriptionError {
    fn from(error: sqlx::Error) -> Self {
        Self::Catalog(CatalogError::Query(error))
    }
}

pub type Result<T, E = SubscriptionError> = std::result::Result<T, E>;

/// `PlanReference`: the plan version a subscription was created from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanRef {
    pub id: String,
    pub key: String,
    pub version: i64,
}

/// One item of a phase: a rate card and the entitlement it created, if any. A phase may hold
/// several versions of one key one after the other (an edit or an add-on closes a version and
/// opens the next); without `active_from`/`active_to` an item spans its phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub id: String,
    pub rate_card: RateCard,
    #[serde(default)]
    pub entitlement_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_from: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_to: Option<DateTime<Utc>>,
    /// Subscription add-on id → the quantity of it merged into this version.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub addons: BTreeMap<String, i64>,
    /// The version exists only because of add-ons (no plan or edit item had the key then):
    /// it ends once their quantity is zero.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_addons: bool,
}

impl Item {
    /// A new item spanning `[from, to)` (`None`: its phase's bound).
    pub fn new(
        rate_card: RateCard,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Self {
        Item {
            id: ulid::Ulid::new().to_string(),
            rate_card,
            entitlement_id: None,
            active_from: from,
            active_to: to,
            addons: BTreeMap::new(),
            from_addons: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    pub id: String,
    pub key: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    pub active_from: DateTime<Utc>,
    pub items: Vec<Item>,
}

/// A subscription as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    pub customer_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanRef>,
    pub currency: String,
    pub billing_cadence: String,
    pub pro_rating_config: ProRatingConfig,
    pub settlement_mode: String,
    pub billing_anchor: DateTime<Utc>,
    pub active_from: DateTime<Utc>,
    #[serde(default)]
    pub active_to: Option<DateTime<Utc>>,
    pub phases: Vec<Phase>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// `SubscriptionStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Inactive,
    Canceled,
    Scheduled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Inactive => "inactive",
            Status::Canceled => "canceled",
            Status::Scheduled => "scheduled",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Some(match text {
            "active" => Status::Active,
            "inactive" => Status::Inactive,
            "canceled" => Status::Canceled,
            "scheduled" => Status::Scheduled,
            _ => return None,
        })
    }
}

impl Subscription {
    /// OpenMeter's `GetStatusAt`.
    pub fn status(&self, at: DateTime<Utc>) -> Status {
        if self.deleted_at.is_some_and(|d| d <= at) {
            return Status::Inactive;
        }
        if self.active_from > at {
            return Status::Scheduled;
        }
        match self.active_to {
            None => Status::Active,
            Some(to) if to > at => Status::Canceled,
            Some(_) => Status::Inactive,
        }
    }

    /// A phase's active interval: from its start to the next phase's start, clipped to the
    /// subscription's end. `None` end: open-ended.
    pub fn phase_interval(&self, index: usize) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
        let from = self
            .phases
            .get(index)
            .map_or(self.active_from, |p| p.active_from);
        let next = self.phases.get(index + 1).map(|p| p.active_from);
        let to = match (next, self.active_to) {
            (Some(n), Some(end)) => Some(n.min(end)),
            (n, end) => n.or(end),
        };
        (from, to)
    }

    /// An item's active interval: its own bounds clipped to its phase's (`index`). It may be
    /// empty (an item removed at the instant it was to start).
    pub fn item_interval(
        &self,
        index: usize,
        item: &Item,
    ) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
        let (phase_from, phase_to) = self.phase_interval(index);
        let from = item.active_from.map_or(phase_from, |f| f.max(phase_from));
        let to = match (item.active_to, phase_to) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (from, to)
    }

    /// Phases that have a non-empty interval (a cancelation may cut later phases off).
    pub fn live_phases(&self) -> impl Iterator<Item = (usize, &Phase)> {
        self.phases.iter().enumerate().filter(|(i, _)| {
            let (from, to) = self.phase_interval(*i);
            to.is_none_or(|to| to > from)
        })
    }

    /// The phase running at `at`, if any.
    pub fn phase_at(&self, at: DateTime<Utc>) -> Option<(usize, &Phase)> {
        self.live_phases().find(|(i, _)| {
            let (from, to) = self.phase_interval(*i);
            from <= at && to.is_none_or(|to| at < to)
        })
    }

    pub fn cadence(&self) -> Result<BillingCadence> {
        BillingCadence::parse(&self.billing_cadence)
            .map_err(|e| SubscriptionError::Invalid(e.to_string()))
    }

    /// The billing period (from the anchor, every cadence) containing `at`, clipped to the
    /// subscription (`SubscriptionAlignment.currentAlignedBillingPeriod`).
    pub fn aligned_period_at(&self, at: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
        let period = self
            .cadence()?
            .period_containing(self.billing_anchor, at)
            .map_err(|e| SubscriptionError::Invalid(e.to_string()))?;
        let from = period.from.max(self.active_from);
        let to = self.active_to.map_or(period.to, |end| period.to.min(end));
        Ok((from, to))
    }

    /// Is `t` a billing period boundary of this subscription?
    pub fn is_period_boundary(&self, t: DateTime<Utc>) -> Result<bool> {
        let period = self
            .cadence()?
            .period_containing(self.billing_anchor, t)
            .map_err(|e| SubscriptionError::Invalid(e.to_string()))?;
        Ok(period.from == t)
    }
}

/// What a new subscription is built from: a plan version (or a custom plan) and the
/// request's choices.
pub struct NewSubscription<'a> {
    pub customer_id: String,
    pub plan: Option<PlanRef>,
    pub body: &'a PlanBody,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub settlement_mode: Option<String>,
    pub active_from: DateTime<Utc>,
    pub billing_anchor: Option<DateTime<Utc>>,
    pub starting_phase: Option<String>,
}

/// Builds the subscription's spec: phases from `startingPhase` on, each starting where the
/// previous one's duration ends, the first at `active_from`.
pub fn build(new: NewSubscription<'_>, now: DateTime<Utc>) -> Result<Subscription> {
    let body = new.body;
    let start_index = match &new.starting_phase {
        None => 0,
        Some(key) => body
            .phases
            .iter()
            .position(|p| &p.key == key)
            .ok_or_else(|| {
                SubscriptionError::Invalid(format!("starting phase {key:?} not found in plan"))
            })?,
    };
    let mut phases = Vec::new();
    let mut start = new.active_from;
    for (i, phase) in body.phases.iter().enumerate().skip(start_index) {
        phases.push(Phase {
            id: ulid::Ulid::new().to_string(),
            key: phase.key.clone(),
            name: phase.name.clone(),
            description: phase.description.clone(),
            metadata: phase.metadata.clone(),
            active_from: start,
            items: phase
                .rate_cards
                .iter()
                .map(|rc| Item::new(rc.clone(), None, None))
                .collect(),
        });
        let last = i + 1 == body.phases.len();
        if !last {
            let Some(text) = &phase.duration else {
                return Err(SubscriptionError::Invalid(format!(
                    "phase {:?} is not the last one and has no duration",
                    phase.key
                )));
            };
            let duration = IsoDuration::parse(text).map_err(|_| {
                SubscriptionError::Invalid(format!("invalid phase duration {text:?}"))
            })?;
            start = duration
                .add_times(start, 1)
                .ok_or_else(|| SubscriptionError::Invalid("phase start out of range".into()))?;
        }
    }
    let sub = Subscription {
        id: ulid::Ulid::new().to_string(),
        customer_id: new.customer_id,
        name: new
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| body.name.clone()),
        description: new.description.or_else(|| body.description.clone()),
        metadata: new.metadata,
        plan: new.plan,
        currency: body.currency.clone(),
        billing_cadence: body.billing_cadence.clone(),
        pro_rating_config: body.pro_rating_config.clone(),
        settlement_mode: new
            .settlement_mode
            .unwrap_or_else(|| body.settlement_mode.clone()),
        billing_anchor: new.billing_anchor.unwrap_or(new.active_from),
        active_from: new.active_from,
        active_to: None,
        phases,
        created_at: now,
        updated_at: now,
        deleted_at: None,
    };
    sub.cadence()?;
    Ok(sub)
}

fn decode(row: &CatalogRow) -> Result<Subscription> {
    let id: String = row.try_get("id")?;
    let definition: String = row.try_get("definition")?;
    serde_json::from_str(&definition)
        .map_err(|source| SubscriptionError::Catalog(CatalogError::Decode { id, source }))
}

fn encode(sub: &Subscription) -> String {
    serde_json::to_string(sub).unwrap_or_default()
}

/// Do two half-open intervals overlap (`None` end: open)?
fn overlaps(
    a: (DateTime<Utc>, Option<DateTime<Utc>>),
    b: (DateTime<Utc>, Option<DateTime<Utc>>),
) -> bool {
    a.1.is_none_or(|a_to| b.0 < a_to) && b.1.is_none_or(|b_to| a.0 < b_to)
}

impl Catalog {
    /// The customer's subscriptions (deleted ones excluded), oldest start first.
    pub async fn customer_subscriptions(
        &self,
        namespace: &str,
        customer_id: &str,
    ) -> Result<Vec<Subscription>> {
        let rows = sqlx::query(
            "SELECT id, definition FROM subscriptions WHERE namespace = $1 AND customer_id = $2 \
             AND deleted_at IS NULL ORDER BY active_from, id",
        )
        .bind(namespace)
        .bind(customer_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Every live subscription of a namespace (the billing actor's schedule is built from it).
    pub async fn all_subscriptions(&self, namespace: &str) -> Result<Vec<Subscription>> {
        let rows = sqlx::query(
            "SELECT id, definition FROM subscriptions WHERE namespace = $1 AND deleted_at IS NULL \
             ORDER BY active_from, id",
        )
        .bind(namespace)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    pub async fn get_subscription(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Option<Subscription>> {
        let row = sqlx::query(
            "SELECT id, definition FROM subscriptions WHERE namespace = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(namespace)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Inserts a subscription unless it overlaps another of the customer's (checked in the
    /// same transaction); `ending` is saved first in that transaction (a plan change ends the
    /// current subscription where the next begins).
    pub async fn insert_subscription(
        &self,
        namespace: &str,
        sub: &Subscription,
        ending: Option<&Subscription>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if let Some(end) = ending {
            save(&mut tx, end).await?;
        }
        let rows = sqlx::query(
            "SELECT id, definition FROM subscriptions WHERE namespace = $1 AND customer_id = $2 AND deleted_at IS NULL",
        )
        .bind(namespace)
        .bind(&sub.customer_id)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let other = decode(row)?;
            if other.id != sub.id
                && overlaps(
                    (other.active_from, other.active_to),
                    (sub.active_from, sub.active_to),
                )
            {
                return Err(SubscriptionError::Overlap {
                    conflicting_id: other.id,
                });
            }
        }
        sqlx::query(
            "INSERT INTO subscriptions (id, namespace, customer_id, definition, active_from, active_to, created_at, updated_at, deleted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, NULL)",
        )
        .bind(&sub.id)
        .bind(namespace)
        .bind(&sub.customer_id)
        .bind(encode(sub))
        .bind(ms(sub.active_from))
        .bind(sub.active_to.map(ms))
        .bind(ms(sub.created_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Saves a changed subscription (its end, its items' entitlements, its deletion).
    pub async fn update_subscription(&self, sub: &Subscription) -> Result<()> {
        let mut tx = self.begin_write().await?;
        save(&mut tx, sub).await?;
        tx.commit().await?;
        Ok(())
    }
}

pub(crate) async fn save(tx: &mut Tx, sub: &Subscription) -> Result<()> {
    sqlx::query(
        "UPDATE subscriptions SET definition = $1, active_from = $2, active_to = $3, updated_at = $4, deleted_at = $5 WHERE id = $6",
    )
    .bind(encode(sub))
    .bind(ms(sub.active_from))
    .bind(sub.active_to.map(ms))
    .bind(ms(sub.updated_at))
    .bind(sub.deleted_at.map(ms))
    .bind(&sub.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::product_catalog::plans::PlanPhase;
    use chrono::TimeZone;
    use serde_json::json;

    fn plan() -> PlanBody {
        let card: RateCard =
            serde_json::from_value(json!({"type": "flat_fee", "key": "base", "name": "Base"}))
                .unwrap();
        PlanBody {
            name: "Pro".into(),
            description: None,
            metadata: None,
            alignment: None,
            currency: "USD".into(),
            billing_cadence: "P1M".into(),
            pro_rating_config: ProRatingConfig::default(),
            settlement_mode: "credit_then_invoice".into(),
            phases: vec![
                PlanPhase {
                    key: "trial".into(),
                    name: "Trial".into(),
                    description: None,
                    metadata: None,
                    duration: Some("P1M".into()),
                    rate_cards: vec![card.clone()],
                },
                PlanPhase {
                    key: "default".into(),
                    name: "Default".into(),
                    description: None,
                    metadata: None,
                    duration: None,
                    rate_cards: vec![card],
                },
            ],
        }
    }

    fn new<'a>(
        body: &'a PlanBody,
        from: DateTime<Utc>,
        starting: Option<&str>,
    ) -> NewSubscription<'a> {
        NewSubscription {
            customer_id: "c".into(),
            plan: None,
            body,
            name: None,
            description: None,
            metadata: None,
            settlement_mode: None,
            active_from: from,
            billing_anchor: None,
            starting_phase: starting.map(str::to_owned),
        }
    }

    #[test]
    fn phases_start_where_the_previous_duration_ends_and_status_follows_the_interval() {
        let t = Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap();
        let body = plan();
        let mut sub = build(new(&body, t, None), t).unwrap();
        // Jan 31 + P1M = Feb 28 (month end clamped).
        assert_eq!(
            sub.phases[1].active_from,
            Utc.with_ymd_and_hms(2026, 2, 28, 12, 0, 0).unwrap()
        );
        assert_eq!(sub.phase_interval(0).1, Some(sub.phases[1].active_from));
        assert_eq!(sub.phase_at(t).map(|(_, p)| p.key.as_str()), Some("trial"));
        assert_eq!(
            sub.status(t - chrono::Duration::seconds(1)),
            Status::Scheduled
        );
        assert_eq!(sub.status(t), Status::Active);
        // Canceled before the second phase: it is cut off.
        sub.active_to = Some(Utc.with_ymd_and_hms(2026, 2, 10, 0, 0, 0).unwrap());
        assert_eq!(sub.status(t), Status::Canceled);
        assert_eq!(sub.live_phases().count(), 1);
        assert_eq!(
            sub.status(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()),
            Status::Inactive
        );
        // Billing periods from the anchor, clipped at the end.
        let (from, to) = sub.aligned_period_at(t).unwrap();
        assert_eq!(
            (from, to),
            (t, Utc.with_ymd_and_hms(2026, 2, 10, 0, 0, 0).unwrap())
        );
        assert!(
            sub.is_period_boundary(Utc.with_ymd_and_hms(2026, 2, 28, 12, 0, 0).unwrap())
                .unwrap()
        );
        assert!(
            !sub.is_period_boundary(Utc.with_ymd_and_hms(2026, 2, 28, 13, 0, 0).unwrap())
                .unwrap()
        );
    }

    #[test]
    fn a_starting_phase_skips_the_earlier_ones() {
        let t = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let body = plan();
        let sub = build(new(&body, t, Some("default")), t).unwrap();
        assert_eq!(sub.phases.len(), 1);
        assert_eq!(sub.phases[0].active_from, t);
        assert!(build(new(&body, t, Some("nope")), t).is_err());
    }

    #[test]
    fn intervals_overlap() {
        let t = |d| Utc.with_ymd_and_hms(2026, 1, d, 0, 0, 0).unwrap();
        assert!(overlaps((t(1), None), (t(5), None)));
        assert!(!overlaps((t(1), Some(t(5))), (t(5), None)));
        assert!(overlaps((t(1), Some(t(6))), (t(5), Some(t(7)))));
        assert!(!overlaps((t(5), Some(t(7))), (t(1), Some(t(5)))));
    }
}
