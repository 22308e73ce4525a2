//! Plans, add-ons and plan add-ons: the documents of the product catalog, their wire shape
//! (OpenMeter v1's `Plan`, `Addon`, `PlanAddon`) and their validation.

use super::{Body, Issue, Kind, Version};
use chrono::{DateTime, Utc};
use metron_engine::billing::BillingCadence;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};

/// A rate card as the API sends it (`RateCard`, discriminated by `type`), typed and
/// checked by the engine's billing module.
pub use metron_engine::billing::RateCard;

/// Billing cadences a plan may have (OpenMeter's `ErrPlanBillingCadenceAllowedValues`).
pub const PLAN_BILLING_CADENCES: &[&str] =
    &["P1W", "P2W", "P4W", "P1M", "P3M", "P6M", "P12M", "P1Y"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProRatingConfig {
    pub enabled: bool,
    pub mode: String,
}

impl Default for ProRatingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: "prorate_prices".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanPhase {
    pub key: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// ISO 8601; the last phase has none (open-ended).
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub rate_cards: Vec<RateCard>,
}

fn usd() -> String {
    "USD".into()
}

fn credit_then_invoice() -> String {
    "credit_then_invoice".into()
}

/// A plan's editable part: `PlanCreate` minus `key`, and `PlanReplaceUpdate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanBody {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alignment: Option<Value>,
    #[serde(default = "usd")]
    pub currency: String,
    pub billing_cadence: String,
    #[serde(default)]
    pub pro_rating_config: ProRatingConfig,
    #[serde(default = "credit_then_invoice")]
    pub settlement_mode: String,
    pub phases: Vec<PlanPhase>,
}

/// `PlanCreate`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanCreate {
    pub key: String,
    #[serde(flatten)]
    pub body: PlanBody,
}

/// An add-on's editable part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddonBody {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    pub instance_type: String,
    #[serde(default = "usd")]
    pub currency: String,
    #[serde(default)]
    pub rate_cards: Vec<RateCard>,
}

/// `AddonCreate`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddonCreate {
    pub key: String,
    #[serde(flatten)]
    pub body: AddonBody,
}

/// `AddonReplaceUpdate`: the same fields as the body except the currency, which stays.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddonUpdate {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    pub instance_type: String,
    #[serde(default)]
    pub rate_cards: Vec<RateCard>,
}

/// Is the text a key of OpenMeter's pattern `^[a-z0-9]+(?:_[a-z0-9]+)*$`, 1 to 64 long?
pub use crate::features::is_key;

fn key_issues(key: &str) -> Vec<Issue> {
    if key.is_empty() {
        vec![Issue::critical(
            "key",
            "resource_key_empty",
            "key must not be empty",
        )]
    } else if !is_key(key) {
        vec![Issue::critical(
            "key",
            "resource_key_invalid",
            format!(
                "key {key:?} must match ^[a-z0-9]+(?:_[a-z0-9]+)*$ and be at most 64 characters"
            ),
        )]
    } else {
        Vec::new()
    }
}

/// Key checks for a new plan or add-on (the key is not part of the body).
pub fn check_key(key: &str) -> Result<(), super::ProductError> {
    let issues = key_issues(key);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(super::ProductError::Invalid(issues))
    }
}

fn name_issues(name: &str) -> Vec<Issue> {
    if name.is_empty() {
        vec![Issue::critical(
            "name",
            "resource_name_empty",
            "name must not be empty",
        )]
    } else if name.chars().count() > 256 {
        vec![Issue::critical(
            "name",
            "resource_name_invalid",
            "name must be at most 256 characters",
        )]
    } else {
        Vec::new()
    }
}

/// OpenMeter's schema caps every description of the catalog (plan, phase, rate card,
/// add-on) at 1024 characters.
pub const DESCRIPTION_LEN_MAX: usize = 1024;

fn description_issues(description: Option<&str>) -> Vec<Issue> {
    if description.is_some_and(|d| d.chars().count() > DESCRIPTION_LEN_MAX) {
        vec![Issue::critical(
            "description",
            "resource_description_invalid",
            format!("description must be at most {DESCRIPTION_LEN_MAX} characters"),
        )]
    } else {
        Vec::new()
    }
}

fn currency_issues(currency: &str) -> Vec<Issue> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Vec::new()
    } else {
        vec![Issue::critical(
            "currency",
            "currency_invalid",
            format!("invalid currency code {currency:?}"),
        )]
    }
}

/// Issues of one rate card: its key, and every rule of OpenMeter's `RateCard.Validate`
/// (prices, discounts, cadence, entitlement template, tax config), all critical.
pub fn rate_card_issues(card: &RateCard) -> Vec<Issue> {
    let mut out = key_issues(card.key());
    let (name, description) = match card {
        RateCard::FlatFee(r) => (&r.name, &r.description),
        RateCard::UsageBased(r) => (&r.name, &r.description),
    };
    out.extend(name_issues(name));
    out.extend(description_issues(description.as_deref()));
    for issue in card.issues() {
        out.push(Issue::critical(
            issue.field(),
            issue.code().unwrap_or("rate_card_invalid"),
            issue.to_string(),
        ));
    }
    out
}

fn rate_cards_issues(cards: &[RateCard]) -> Vec<Issue> {
    let mut out = Vec::new();
    let mut keys = HashSet::new();
    for card in cards {
        let key = card.key();
        let selector = format!("rateCards[key={key}]");
        if !keys.insert(key) {
            out.push(
                Issue::critical(
                    "key",
                    "rate_card_duplicated_key",
                    "duplicated rate card key",
                )
                .under(&selector),
            );
        }
        out.extend(
            rate_card_issues(card)
                .into_iter()
                .map(|i| i.under(&selector)),
        );
    }
    out
}

/// OpenMeter's `ValidatePlanHasAlignedBillingCadences`: every priced rate card's billing
/// cadence must align with the plan's (a warning: the draft is kept, publishing refused).
pub fn cadence_alignment_issues(plan: Option<BillingCadence>, cards: &[RateCard]) -> Vec<Issue> {
    let Some(plan) = plan else {
        return Vec::new();
    };
    cards
        .iter()
        .filter(|card| card.price().is_some())
        .filter_map(|card| match card.billing_cadence() {
            Ok(Some(cadence)) if !plan.aligned_with(&cadence) => Some(
                Issue::warning(
                    "billingCadence",
                    "rate_card_billing_cadence_unaligned",
                    "ratecards with prices must have compatible billing cadence",
                )
                .under(&format!("rateCards[key={}]", card.key())),
            ),
            _ => None,
        })
        .collect()
}

/// Is the text an ISO 8601 duration (`P1M`, `P2W`, `PT1H`, `P1DT12H`)? The credit engine's
/// parser, the one every duration of the product goes through.
pub fn is_duration(text: &str) -> bool {
    metron_engine::credit::IsoDuration::parse(text).is_ok()
}

impl Body for PlanBody {
    const KIND: Kind = Kind::Plan;

    fn currency(&self) -> &str {
        &self.currency
    }

    fn issues(&self) -> Vec<Issue> {
        let mut out = name_issues(&self.name);
        out.extend(description_issues(self.description.as_deref()));
        out.extend(currency_issues(&self.currency));
        if !PLAN_BILLING_CADENCES.contains(&self.billing_cadence.as_str()) {
            out.push(Issue::critical(
                "billingCadence",
                "plan_billing_cadence_invalid",
                format!(
                    "billing cadence must be one of the following: {}",
                    PLAN_BILLING_CADENCES.join(", ")
                ),
            ));
        }
        if self.pro_rating_config.mode != "prorate_prices" {
            out.push(Issue::critical(
                "proRatingConfig.mode",
                "invalid_pro_rating_mode",
                format!(
                    "invalid ProRatingConfig: unsupported mode {:?}",
                    self.pro_rating_config.mode
                ),
            ));
        }
        if !["credit_then_invoice", "credit_only"].contains(&self.settlement_mode.as_str()) {
            out.push(Issue::critical(
                "settlementMode",
                "invalid_settlement_mode",
                format!("invalid settlement mode {:?}", self.settlement_mode),
            ));
        }
        if self.phases.is_empty() {
            out.push(Issue::warning(
                "phases",
                "plan_with_no_phases",
                "plan must have at least one phase",
            ));
        }
        let plan_cadence = BillingCadence::parse(&self.billing_cadence).ok();
        let mut keys = HashSet::new();
        let last = self.phases.len().saturating_sub(1);
        for (idx, phase) in self.phases.iter().enumerate() {
            let selector = format!("phases[key={}]", phase.key);
            let mut issues = key_issues(&phase.key);
            issues.extend(name_issues(&phase.name));
            issues.extend(description_issues(phase.description.as_deref()));
            if !keys.insert(phase.key.clone()) {
                issues.push(Issue::critical(
                    "key",
                    "plan_phase_duplicated_key",
                    "duplicated key",
                ));
            }
            match (&phase.duration, idx == last) {
                (None, false) => issues.push(Issue::warning(
                    "duration",
                    "plan_has_non_last_phase_with_no_duration",
                    "duration must be set for plan phase if it is not the last one",
                )),
                (Some(_), true) => issues.push(Issue::warning(
                    "duration",
                    "plan_has_last_phase_with_duration",
                    "duration must not be set for the last plan phase",
                )),
                _ => {}
            }
            if let Some(d) = &phase.duration
                && !is_duration(d)
            {
                issues.push(Issue::critical(
                    "duration",
                    "invalid_duration",
                    format!("invalid ISO 8601 duration {d:?}"),
                ));
            }
            if phase.rate_cards.is_empty() {
                issues.push(Issue::warning(
                    "rateCards",
                    "plan_phase_has_no_rate_cards",
                    "plan phase must have at least one rate card",
                ));
            }
            issues.extend(rate_cards_issues(&phase.rate_cards));
            issues.extend(cadence_alignment_issues(plan_cadence, &phase.rate_cards));
            out.extend(issues.into_iter().map(|i| i.under(&selector)));
        }
        out
    }
}

impl Body for AddonBody {
    const KIND: Kind = Kind::Addon;

    fn currency(&self) -> &str {
        &self.currency
    }

    fn issues(&self) -> Vec<Issue> {
        let mut out = name_issues(&self.name);
        out.extend(description_issues(self.description.as_deref()));
        out.extend(currency_issues(&self.currency));
        if !["single", "multiple"].contains(&self.instance_type.as_str()) {
            out.push(Issue::critical(
                "instanceType",
                "addon_invalid_instance_type",
                format!("invalid instance type {:?}", self.instance_type),
            ));
        }
        if self.rate_cards.is_empty() {
            out.push(Issue::warning(
                "rateCards",
                "addon_has_no_rate_cards",
                "add-on must have at least one rate card",
            ));
        }
        out.extend(rate_cards_issues(&self.rate_cards));
        out
    }
}

fn issues_json(issues: Vec<Issue>) -> Value {
    if issues.is_empty() {
        Value::Null
    } else {
        json!(issues)
    }
}

/// The lifecycle fields every versioned document shows, merged into its body's JSON.
fn versioned_json<T: Body>(v: &Version<T>, now: DateTime<Utc>) -> Value {
    let mut out = serde_json::to_value(&v.body).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut out {
        map.insert("id".into(), json!(v.id));
        map.insert("key".into(), json!(v.key));
        map.insert("version".into(), json!(v.version));
        map.insert("createdAt".into(), json!(v.created_at));
        map.insert("updatedAt".into(), json!(v.updated_at));
        if let Some(t) = v.deleted_at {
            map.insert("deletedAt".into(), json!(t));
        }
        if let Some(t) = v.effective_from {
            map.insert("effectiveFrom".into(), json!(t));
        }
        if let Some(t) = v.effective_to {
            map.insert("effectiveTo".into(), json!(t));
        }
        map.insert("status".into(), json!(v.status(now)));
        map.insert("validationErrors".into(), issues_json(v.body.issues()));
    }
    out
}

/// OpenMeter's `Plan` read model.
pub fn plan_json(v: &Version<PlanBody>, now: DateTime<Utc>) -> Value {
    versioned_json(v, now)
}

/// OpenMeter's `Addon` read model.
pub fn addon_json(v: &Version<AddonBody>, now: DateTime<Utc>) -> Value {
    versioned_json(v, now)
}

/// What a plan add-on holds besides the two ids (`PlanAddonCreate` / `PlanAddonReplaceUpdate`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanAddonBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    pub from_plan_phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_quantity: Option<i64>,
}

/// The issues of assigning `addon` to `plan` (OpenMeter's `PlanAddon.Validate`); all are
/// warnings there: they are shown on the assignment and refuse publishing the plan.
pub fn plan_addon_issues(
    plan: &Version<PlanBody>,
    addon: &Version<AddonBody>,
    body: &PlanAddonBody,
    now: DateTime<Utc>,
) -> Vec<Issue> {
    let mut out = Vec::new();
    if !plan
        .body
        .phases
        .iter()
        .any(|p| p.key == body.from_plan_phase)
    {
        out.push(Issue::warning(
            "fromPlanPhase",
            "plan_addon_unknown_plan_phase_key",
            "add-on must define valid/existing plan phase key from which the add-on is available for purchase",
        ));
    }
    match (addon.body.instance_type.as_str(), body.max_quantity) {
        ("single", Some(_)) => out.push(Issue::warning(
            "maxQuantity",
            "plan_addon_max_quantity_must_not_be_set",
            "maximum quantity must not be set for add-on with single instance type",
        )),
        ("multiple", Some(q)) if q < 1 => out.push(Issue::warning(
            "maxQuantity",
            "plan_addon_max_quantity_must_be_set",
            "maximum quantity, when set, must be a positive integer for add-ons with multiple instance type",
        )),
        _ => {}
    }
    if !addon
        .body
        .currency
        .eq_ignore_ascii_case(&plan.body.currency)
    {
        out.push(Issue::warning(
            "currency",
            "plan_addon_currency_mismatch",
            "add-on cannot change an existing rate card's currency",
        ));
    }
    let addon_status = addon.status(now);
    if addon_status != super::Status::Active {
        out.push(Issue::warning(
            "status",
            "plan_addon_incompatible_status",
            "plan status is incompatible with the addon status",
        ));
    }
    out
}
