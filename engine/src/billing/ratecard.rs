//! Rate cards, exactly OpenMeter v1's `RateCard` JSON (`RateCardFlatFee`,
//! `RateCardUsageBased`) with their discounts, tax config and entitlement template, and
//! the validation of `openmeter/productcatalog/ratecard.go`.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::issue::Issue;
use super::numeric;
use super::period::BillingCadence;
use super::price::{FlatPrice, Price};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A rate card that breaks one or more rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid rate card {key:?}: {}", join(issues))]
    Invalid { key: String, issues: Vec<Issue> },
}

fn join(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| format!("{}: {i}", i.field()))
        .collect::<Vec<_>>()
        .join("; ")
}

pub type Metadata = BTreeMap<String, String>;

fn no_discounts(discounts: &Option<Discounts>) -> bool {
    discounts
        .as_ref()
        .is_none_or(|d| d.percentage.is_none() && d.usage.is_none())
}

/// OpenMeter's `RateCard`, discriminated by `type`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RateCard {
    FlatFee(RateCardFlatFee),
    UsageBased(RateCardUsageBased),
}

/// A one-time purchase (`billing_cadence: None`) or a recurring fee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateCardFlatFee {
    pub key: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement_template: Option<EntitlementTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_config: Option<TaxConfig>,
    /// An ISO-8601 duration, or `null` for a one-time fee; kept as text so that
    /// validation, not parsing, reports a bad one with OpenMeter's message.
    #[serde(default)]
    pub billing_cadence: Option<String>,
    /// `null` when the feature or service is free.
    #[serde(default, with = "flat_only")]
    pub price: Option<FlatPrice>,
    /// Not written when absent or empty, as OpenMeter's v1 mapping does.
    #[serde(default, skip_serializing_if = "no_discounts")]
    pub discounts: Option<Discounts>,
}

/// A price on usage, billed every `billing_cadence`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateCardUsageBased {
    pub key: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement_template: Option<EntitlementTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_config: Option<TaxConfig>,
    pub billing_cadence: String,
    /// `null` when the feature or service is free.
    #[serde(default)]
    pub price: Option<Price>,
    /// Not written when absent or empty, as OpenMeter's v1 mapping does.
    #[serde(default, skip_serializing_if = "no_discounts")]
    pub discounts: Option<Discounts>,
}

/// Discounts on a rate card's price.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Discounts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<PercentageDiscount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageDiscount>,
}

/// `percentage` percent off every line amount; 50 % is `50`, a JSON number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PercentageDiscount {
    #[serde(with = "numeric::number")]
    pub percentage: Decimal,
}

/// The first `quantity` units of usage in each billing period are free.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageDiscount {
    #[serde(with = "numeric")]
    pub quantity: Decimal,
}

/// Whether tax is included in the price or added on top.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaxBehavior {
    Inclusive,
    Exclusive,
}

/// A provider's tax code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxCode {
    pub code: String,
}

/// OpenMeter's `TaxConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaxConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<TaxBehavior>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe: Option<TaxCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_invoicing: Option<TaxCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_code_id: Option<String>,
}

/// OpenMeter's `RateCardEntitlement`, discriminated by `type`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EntitlementTemplate {
    Metered(MeteredEntitlementTemplate),
    Static(StaticEntitlementTemplate),
    Boolean(BooleanEntitlementTemplate),
}

/// A metered entitlement created with the subscription; fields as on the wire, defaults
/// (`false`, priority 1, usage period = billing cadence) left to the reader.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeteredEntitlementTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_soft_limit: Option<bool>,
    #[serde(
        default,
        with = "numeric::number::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub issue_after_reset: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_after_reset_priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_overage_at_reset: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_period: Option<String>,
}

/// A static entitlement; `config` is JSON text (an object).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticEntitlementTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    pub config: String,
}

/// A boolean entitlement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BooleanEntitlementTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// A plan's pro-rating of flat fees over partial periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProRatingConfig {
    pub enabled: bool,
    pub mode: ProRatingMode,
}

impl Default for ProRatingConfig {
    /// The spec's defaults: enabled, `prorate_prices`.
    fn default() -> Self {
        ProRatingConfig {
            enabled: true,
            mode: ProRatingMode::ProratePrices,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProRatingMode {
    /// A flat fee for a partial period is its amount times the share of the period served.
    #[default]
    ProratePrices,
}

/// The flat-fee rate card's price carries `"type": "flat"` on the wire.
mod flat_only {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::FlatPrice;

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Tagged<T> {
        Flat(T),
    }

    pub fn serialize<S: Serializer>(
        value: &Option<FlatPrice>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.as_ref().map(Tagged::Flat).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<FlatPrice>, D::Error> {
        let tagged = Option::<Tagged<FlatPrice>>::deserialize(deserializer)?;
        Ok(tagged.map(|Tagged::Flat(price)| price))
    }
}

/// The parts of a rate card the rating and the validation read, whatever its type.
#[derive(Clone, Copy, Debug)]
pub struct RateCardView<'a> {
    pub key: &'a str,
    pub feature_key: Option<&'a str>,
    pub entitlement_template: Option<&'a EntitlementTemplate>,
    pub tax_config: Option<&'a TaxConfig>,
    pub billing_cadence: Option<&'a str>,
    pub discounts: Option<&'a Discounts>,
}

impl RateCard {
    pub fn key(&self) -> &str {
        self.view().key
    }

    /// The common fields.
    pub fn view(&self) -> RateCardView<'_> {
        match self {
            RateCard::FlatFee(r) => RateCardView {
                key: &r.key,
                feature_key: r.feature_key.as_deref(),
                entitlement_template: r.entitlement_template.as_ref(),
                tax_config: r.tax_config.as_ref(),
                billing_cadence: r.billing_cadence.as_deref(),
                discounts: r.discounts.as_ref(),
            },
            RateCard::UsageBased(r) => RateCardView {
                key: &r.key,
                feature_key: r.feature_key.as_deref(),
                entitlement_template: r.entitlement_template.as_ref(),
                tax_config: r.tax_config.as_ref(),
                billing_cadence: Some(&r.billing_cadence),
                discounts: r.discounts.as_ref(),
            },
        }
    }

    /// The price as the rating reads it (a flat fee's price is a [`Price::Flat`]).
    pub fn price(&self) -> Option<Price> {
        match self {
            RateCard::FlatFee(r) => r.price.clone().map(Price::Flat),
            RateCard::UsageBased(r) => r.price.clone(),
        }
    }

    /// The billing cadence, `None` for a one-time fee.
    pub fn billing_cadence(&self) -> std::result::Result<Option<BillingCadence>, Issue> {
        self.view()
            .billing_cadence
            .map(|text| BillingCadence::parse(text).map_err(|_| Issue::BillingCadenceInvalid))
            .transpose()
    }

    /// Every rule of OpenMeter's `RateCard.Validate` (meta, price, discounts, cadence,
    /// entitlement template, tax config); all broken rules are reported at once.
    pub fn validate(&self) -> Result<()> {
        let issues = self.issues();
        if issues.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid {
                key: self.key().to_owned(),
                issues,
            })
        }
    }

    /// The broken rules, in OpenMeter's order.
    pub fn issues(&self) -> Vec<Issue> {
        let view = self.view();
        let price = self.price();
        let mut issues = Vec::new();
        if let Some(template) = view.entitlement_template {
            if view.feature_key.is_none() {
                issues.push(Issue::EntitlementTemplateWithoutFeature);
            }
            template.check(view.billing_cadence, &mut issues);
        }
        if let Some(tax) = view.tax_config {
            tax.check(&mut issues);
        }
        if let Some(price) = &price {
            price.check(&mut issues);
            if !matches!(price, Price::Flat(_)) && view.feature_key.is_none() {
                issues.push(Issue::UsageBasedPriceWithoutFeature);
            }
        }
        if view.feature_key.is_some_and(|f| f != view.key) {
            issues.push(Issue::KeyFeatureKeyMismatch);
        }
        if let Some(discounts) = view.discounts {
            discounts.check(price.as_ref(), &mut issues);
        }
        if let Some(cadence) = view.billing_cadence
            && BillingCadence::parse(cadence).is_err()
        {
            issues.push(Issue::BillingCadenceInvalid);
        }
        if matches!(self, RateCard::FlatFee(_))
            && view.discounts.is_some_and(|d| d.usage.is_some())
            && !issues.contains(&Issue::UsageDiscountWithFlatPrice)
        {
            issues.push(Issue::UsageDiscountWithFlatPrice);
        }
        issues
    }
}

impl Discounts {
    /// OpenMeter's `Discounts.ValidateForPrice`.
    fn check(&self, price: Option<&Price>, issues: &mut Vec<Issue>) {
        if self.percentage.is_none() && self.usage.is_none() {
            return;
        }
        let Some(price) = price else {
            issues.push(Issue::DiscountsWithoutPrice);
            return;
        };
        if let Some(p) = &self.percentage
            && (p.percentage < Decimal::ZERO || p.percentage > Decimal::ONE_HUNDRED)
        {
            issues.push(Issue::PercentageOutOfRange);
        }
        if let Some(u) = &self.usage {
            if u.quantity < Decimal::ZERO {
                issues.push(Issue::UsageDiscountNegative);
            }
            if matches!(price, Price::Flat(_)) {
                issues.push(Issue::UsageDiscountWithFlatPrice);
            }
        }
    }
}

impl TaxConfig {
    /// A Stripe tax code must look like `txcd_` and 8 digits.
    fn check(&self, issues: &mut Vec<Issue>) {
        if let Some(stripe) = &self.stripe {
            let digits = stripe.code.strip_prefix("txcd_");
            let valid =
                digits.is_some_and(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()));
            if !stripe.code.is_empty() && !valid {
                issues.push(Issue::StripeTaxCodeInvalid {
                    code: stripe.code.clone(),
                });
            }
        }
    }
}

impl EntitlementTemplate {
    /// OpenMeter's template checks; a metered template's usage period defaults to the
    /// rate card's billing cadence.
    fn check(&self, billing_cadence: Option<&str>, issues: &mut Vec<Issue>) {
        match self {
            EntitlementTemplate::Metered(t) => {
                if t.issue_after_reset_priority.is_some() && t.issue_after_reset.is_none() {
                    issues.push(Issue::IssueAfterResetPriorityWithoutIssue);
                }
                if let Some(period) = t.usage_period.as_deref().or(billing_cadence) {
                    match BillingCadence::parse_any(period) {
                        Err(_) => issues.push(Issue::UsagePeriodNotPositive),
                        Ok(d) if !d.at_least_one_hour() => {
                            issues.push(Issue::UsagePeriodUnderAnHour);
                        }
                        Ok(_) => {}
                    }
                }
                if t.issue_after_reset.is_none() {
                    issues.push(Issue::IssueAfterResetRequired);
                }
            }
            EntitlementTemplate::Static(t) => {
                if !t.config.is_empty()
                    && serde_json::from_str::<serde::de::IgnoredAny>(&t.config).is_err()
                {
                    issues.push(Issue::StaticConfigInvalidJson);
                }
            }
            EntitlementTemplate::Boolean(_) => {}
        }
    }
}

#[cfg(test)]
mod tests;
