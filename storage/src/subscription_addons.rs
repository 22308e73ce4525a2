//! Subscription add-ons (OpenMeter's `SubscriptionAddon`): an add-on bought for a
//! subscription, with a timeline of quantity changes. Its rate cards are merged into the
//! subscription's spec from each change on, as OpenMeter's `addon/diff` does: an item of the
//! same key is split at the change and its later version gets the add-on's rate card applied
//! `quantity` times (flat amounts add up, a card without a price takes the add-on's, metered
//! entitlement templates add up their `issueAfterReset`); where no item has the key a new item
//! carries the add-on's card, its flat amount and grant times the quantity, and ends when the
//! quantity drops to zero. A version whose template changed gets a new entitlement (the
//! caller creates it; the previous one ends with the previous version). The add-on row and the changed
//! subscription are written in one transaction.

use crate::catalog::{Catalog, CatalogRow, Error as CatalogError, ms};
use crate::subscriptions::{self, Item, Subscription, SubscriptionError};
use chrono::{DateTime, Utc};
use metron_engine::billing::{EntitlementTemplate, Price, RateCard};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    /// The add-on's rate card cannot be merged into an item (400).
    #[error("add-on rate card {key}: {reason}")]
    Merge { key: String, reason: String },
    /// OpenMeter's "subscription already has that addon purchased" (409).
    #[error("subscription already has that addon purchased")]
    Duplicate,
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Self::Catalog(CatalogError::Query(error))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The add-on version a subscription add-on was bought from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddonRef {
    pub id: String,
    pub key: String,
    pub version: i64,
    pub instance_type: String,
}

/// From `active_from` on, the add-on counts `quantity` times.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuantityChange {
    pub active_from: DateTime<Utc>,
    pub quantity: i64,
}

/// One segment of the timeline (`SubscriptionAddonTimelineSegment`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    pub active_from: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_to: Option<DateTime<Utc>>,
    pub quantity: i64,
}

/// A subscription add-on as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionAddon {
    pub id: String,
    pub subscription_id: String,
    pub addon: AddonRef,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// The add-on version's rate cards, as bought.
    pub rate_cards: Vec<RateCard>,
    /// Sorted by time, never empty.
    pub quantities: Vec<QuantityChange>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SubscriptionAddon {
    /// The quantity in force at `at` (zero before the first change).
    pub fn quantity_at(&self, at: DateTime<Utc>) -> i64 {
        self.quantities
            .iter()
            .rev()
            .find(|q| q.active_from <= at)
            .map_or(0, |q| q.quantity)
    }

    /// The quantity changes as continuous segments.
    pub fn timeline(&self) -> Vec<Segment> {
        self.quantities
            .iter()
            .enumerate()
            .map(|(i, q)| Segment {
                active_from: q.active_from,
                active_to: self.quantities.get(i + 1).map(|n| n.active_from),
                quantity: q.quantity,
            })
            .collect()
    }

    /// When it first counts.
    pub fn active_from(&self) -> Option<DateTime<Utc>> {
        self.quantities.first().map(|q| q.active_from)
    }

    /// When it stops counting: the last change, if that sets zero.
    pub fn active_to(&self) -> Option<DateTime<Utc>> {
        self.quantities
            .last()
            .filter(|q| q.quantity == 0)
            .map(|q| q.active_from)
    }

    /// The last scheduled quantity (what later changes start from).
    pub fn last_quantity(&self) -> i64 {
        self.quantities.last().map_or(0, |q| q.quantity)
    }

    /// The ids of the subscription's items that carry this add-on's rate card `key`.
    pub fn affected_items(&self, sub: &Subscription, key: &str) -> Vec<String> {
        sub.phases
            .iter()
            .flat_map(|p| &p.items)
            .filter(|i| i.rate_card.key() == key && i.addons.contains_key(&self.id))
            .map(|i| i.id.clone())
            .collect()
    }
}

/// The end of an open interval, for comparisons.
fn end(t: Option<DateTime<Utc>>) -> DateTime<Utc> {
    t.unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Changes `addon`'s quantity in `sub` from `from_quantity` to `to_quantity` at `at`: every
/// live phase running at or after `at` gets the difference, as OpenMeter's apply and restore.
pub fn apply_quantity(
    sub: &mut Subscription,
    addon: &SubscriptionAddon,
    from_quantity: i64,
    to_quantity: i64,
    at: DateTime<Utc>,
) -> Result<()> {
    let delta = to_quantity - from_quantity;
    if delta == 0 {
        return Ok(());
    }
    let single = addon.addon.instance_type == "single";
    for card in &addon.rate_cards {
        for index in 0..sub.phases.len() {
            let (phase_from, phase_to) = sub.phase_interval(index);
            if end(phase_to) <= at || end(phase_to) <= phase_from {
                continue;
            }
            let split = at.max(phase_from);
            split_at(sub, index, card.key(), split);
            merge_from(sub, index, addon, card, delta, to_quantity, split, single)?;
            if to_quantity > 0 {
                fill_gaps(sub, index, addon, card, to_quantity, split)?;
            }
        }
    }
    Ok(())
}

/// Splits the version of `key` running across `split` into two, the second from `split`.
fn split_at(sub: &mut Subscription, index: usize, key: &str, split: DateTime<Utc>) {
    let mut i = 0;
    while i < sub.phases[index].items.len() {
        let item = &sub.phases[index].items[i];
        let (from, to) = sub.item_interval(index, item);
        if item.rate_card.key() == key && from < split && split < end(to) {
            let mut later = item.clone();
            later.id = ulid::Ulid::new().to_string();
            later.active_from = Some(split);
            sub.phases[index].items[i].active_to = Some(split);
            sub.phases[index].items.insert(i + 1, later);
            i += 1;
        }
        i += 1;
    }
}

/// Applies the difference to every version of the card's key starting at or after `split`;
/// a version that only the add-ons made is dropped once they count zero.
#[allow(clippy::too_many_arguments)]
fn merge_from(
    sub: &mut Subscription,
    index: usize,
    addon: &SubscriptionAddon,
    card: &RateCard,
    delta: i64,
    quantity: i64,
    split: DateTime<Utc>,
    single: bool,
) -> Result<()> {
    let starts: Vec<DateTime<Utc>> = sub.phases[index]
        .items
        .iter()
        .map(|item| sub.item_interval(index, item).0)
        .collect();
    let mut drop = Vec::new();
    for (i, item) in sub.phases[index].items.iter_mut().enumerate() {
        if item.rate_card.key() != card.key() || starts[i] < split {
            continue;
        }
        if quantity == 0 {
            item.addons.remove(&addon.id);
        } else {
            item.addons.insert(addon.id.clone(), quantity);
        }
        if item.from_addons && item.addons.is_empty() {
            drop.push(i);
            continue;
        }
        let merged = merge(&item.rate_card, card, delta, single)?;
        if merged.view().entitlement_template != item.rate_card.view().entitlement_template {
            item.entitlement_id = None;
        }
        item.rate_card = merged;
    }
    for i in drop.into_iter().rev() {
        sub.phases[index].items.remove(i);
    }
    Ok(())
}

/// Creates an item for each stretch of `[split, phase end)` no version of the key covers.
fn fill_gaps(
    sub: &mut Subscription,
    index: usize,
    addon: &SubscriptionAddon,
    card: &RateCard,
    quantity: i64,
    split: DateTime<Utc>,
) -> Result<()> {
    let (phase_from, phase_to) = sub.phase_interval(index);
    let mut covered: Vec<(DateTime<Utc>, DateTime<Utc>)> = sub.phases[index]
        .items
        .iter()
        .filter(|i| i.rate_card.key() == card.key())
        .map(|i| {
            let (from, to) = sub.item_interval(index, i);
            (from, end(to))
        })
        .filter(|(from, to)| from < to)
        .collect();
    covered.sort();
    let mut gaps = Vec::new();
    let mut cursor = split;
    for (from, to) in covered {
        if from > cursor {
            gaps.push((cursor, from));
        }
        cursor = cursor.max(to);
    }
    if cursor < end(phase_to) {
        gaps.push((cursor, end(phase_to)));
    }
    let mut base = card.clone();
    set_price(&mut base, None).map_err(|reason| merge_error(card, reason))?;
    set_template(&mut base, None);
    let merged = merge(&base, card, quantity, false)?;
    for (from, to) in gaps {
        let mut item = Item::new(
            merged.clone(),
            (from > phase_from).then_some(from),
            (to < end(phase_to)).then_some(to),
        );
        item.from_addons = true;
        item.addons.insert(addon.id.clone(), quantity);
        sub.phases[index].items.push(item);
    }
    Ok(())
}

fn merge_error(card: &RateCard, reason: impl Into<String>) -> Error {
    Error::Merge {
        key: card.key().to_owned(),
        reason: reason.into(),
    }
}

fn set_template(card: &mut RateCard, template: Option<EntitlementTemplate>) {
    match card {
        RateCard::FlatFee(r) => r.entitlement_template = template,
        RateCard::UsageBased(r) => r.entitlement_template = template,
    }
}

/// The entitlement template after applying the add-on's `times` times: metered grants add up
/// (`issueAfterReset`); a card without a template takes the add-on's; boolean and static
/// templates are kept as they are.
fn merge_template(
    target: Option<&EntitlementTemplate>,
    addon: Option<&EntitlementTemplate>,
    times: i64,
) -> Result<Option<EntitlementTemplate>, String> {
    let Some(addon) = addon else {
        return Ok(target.cloned());
    };
    Ok(match (target, addon) {
        (Some(EntitlementTemplate::Metered(t)), EntitlementTemplate::Metered(a)) => {
            let mut merged = t.clone();
            let issue = t.issue_after_reset.unwrap_or_default()
                + a.issue_after_reset.unwrap_or_default() * Decimal::from(times);
            if issue.is_sign_negative() && !issue.is_zero() {
                return Err("restoring the entitlement would yield a negative grant".into());
            }
            merged.issue_after_reset = Some(issue);
            Some(EntitlementTemplate::Metered(merged))
        }
        (Some(t), a) if std::mem::discriminant(t) != std::mem::discriminant(a) => {
            return Err("entitlement template types differ".into());
        }
        (Some(t), _) => Some(t.clone()),
        (None, EntitlementTemplate::Metered(a)) if times > 0 => {
            let mut merged = a.clone();
            merged.issue_after_reset = a
                .issue_after_reset
                .map(|issue| issue * Decimal::from(times));
            Some(EntitlementTemplate::Metered(merged))
        }
        (None, a) if times > 0 => Some(a.clone()),
        (None, _) => None,
    })
}

fn set_price(card: &mut RateCard, price: Option<Price>) -> Result<(), String> {
    match card {
        RateCard::FlatFee(r) => {
            r.price = match price {
                None => None,
                Some(Price::Flat(f)) => Some(f),
                Some(_) => return Err("a flat fee rate card takes a flat price only".into()),
            }
        }
        RateCard::UsageBased(r) => r.price = price,
    }
    Ok(())
}

/// `target` with the add-on's `card` applied `times` times (negative: taken off again), as
/// OpenMeter's `SubscriptionAddonRateCard.Apply` and `Restore`: flat amounts add up, a target
/// without a price takes the add-on's, other prices cannot be stacked. Feature and cadence
/// must match.
pub fn merge(target: &RateCard, card: &RateCard, times: i64, single: bool) -> Result<RateCard> {
    let fail = |reason: &str| merge_error(card, reason);
    let (t, a) = (target.view(), card.view());
    if std::mem::discriminant(target) != std::mem::discriminant(card) {
        return Err(fail("rate card types differ"));
    }
    if a.feature_key.is_some() && t.feature_key != a.feature_key {
        return Err(fail("feature keys differ"));
    }
    if t.billing_cadence != a.billing_cadence {
        return Err(fail("billing cadences differ"));
    }
    let template = merge_template(t.entitlement_template, a.entitlement_template, times)
        .map_err(|reason| fail(&reason))?;
    let mut out = target.clone();
    set_template(&mut out, template);
    let Some(price) = card.price() else {
        return Ok(out);
    };
    let merged = match (target.price(), &price) {
        (None, Price::Flat(f)) if times > 0 => {
            let mut flat = f.clone();
            flat.amount = f.amount * Decimal::from(times);
            Some(Price::Flat(flat))
        }
        (None, other) if times == 1 => Some(other.clone()),
        (None, _) if times < 0 => {
            return Err(fail(
                "target price is nil, cannot restore price without addon",
            ));
        }
        (Some(Price::Flat(mut flat)), Price::Flat(f)) => {
            flat.amount += f.amount * Decimal::from(times);
            if flat.amount.is_sign_negative() && !flat.amount.is_zero() {
                return Err(fail("restoring flat price would yield a negative amount"));
            }
            Some(Price::Flat(flat))
        }
        (Some(_), _) if times < 0 && single => None,
        (Some(p), _) => {
            return Err(fail(&format!(
                "not supported price type: {}",
                price_type(&p)
            )));
        }
        (None, p) => {
            return Err(fail(&format!(
                "not supported price type: {}",
                price_type(p)
            )));
        }
    };
    set_price(&mut out, merged).map_err(|reason| fail(&reason))?;
    Ok(out)
}

fn price_type(price: &Price) -> String {
    serde_json::to_value(price)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

fn decode(row: &CatalogRow) -> Result<SubscriptionAddon> {
    let id: String = row.try_get("id")?;
    let definition: String = row.try_get("definition")?;
    serde_json::from_str(&definition)
        .map_err(|source| Error::Catalog(CatalogError::Decode { id, source }))
}

fn encode(addon: &SubscriptionAddon) -> String {
    serde_json::to_string(addon).unwrap_or_default()
}

impl Catalog {
    /// A subscription's add-ons, oldest first.
    pub async fn subscription_addons(
        &self,
        namespace: &str,
        subscription_id: &str,
    ) -> Result<Vec<SubscriptionAddon>> {
        let rows = sqlx::query(
            "SELECT id, definition FROM subscription_addons WHERE namespace = $1 AND subscription_id = $2 \
             ORDER BY created_at, id",
        )
        .bind(namespace)
        .bind(subscription_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    pub async fn get_subscription_addon(
        &self,
        namespace: &str,
        subscription_id: &str,
        id: &str,
    ) -> Result<Option<SubscriptionAddon>> {
        let row = sqlx::query(
            "SELECT id, definition FROM subscription_addons WHERE namespace = $1 AND subscription_id = $2 AND id = $3",
        )
        .bind(namespace)
        .bind(subscription_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Writes a new (`insert`) or changed add-on and the subscription it changed, in one
    /// transaction; a second purchase of the same add-on is [`Error::Duplicate`].
    pub async fn save_subscription_addon(
        &self,
        namespace: &str,
        addon: &SubscriptionAddon,
        sub: &Subscription,
        insert: bool,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if insert {
            let taken = sqlx::query(
                "SELECT id FROM subscription_addons WHERE namespace = $1 AND subscription_id = $2 AND addon_id = $3",
            )
            .bind(namespace)
            .bind(&addon.subscription_id)
            .bind(&addon.addon.id)
            .fetch_optional(&mut *tx)
            .await?;
            if taken.is_some() {
                return Err(Error::Duplicate);
            }
            sqlx::query(
                "INSERT INTO subscription_addons (id, namespace, subscription_id, addon_id, definition, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&addon.id)
            .bind(namespace)
            .bind(&addon.subscription_id)
            .bind(&addon.addon.id)
            .bind(encode(addon))
            .bind(ms(addon.created_at))
            .bind(ms(addon.updated_at))
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE subscription_addons SET definition = $1, updated_at = $2 WHERE namespace = $3 AND id = $4",
            )
            .bind(encode(addon))
            .bind(ms(addon.updated_at))
            .bind(namespace)
            .bind(&addon.id)
            .execute(&mut *tx)
            .await?;
        }
        subscriptions::save(&mut tx, sub).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
