//! Prices, exactly OpenMeter v1's JSON: `FlatPriceWithPaymentTerm`, `UnitPriceWithCommitments`,
//! `TieredPriceWithCommitments`, `DynamicPriceWithCommitments`, `PackagePriceWithCommitments`
//! and their parts, with the validation rules of `openmeter/productcatalog/price.go`.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::issue::Issue;
use super::numeric;

/// When a flat fee is invoiced: at the start of its period or at its end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentTerm {
    /// OpenMeter's default when `paymentTerm` is absent.
    #[default]
    InAdvance,
    InArrears,
}

/// A flat amount per billing period (or once, without a cadence).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlatPrice {
    #[serde(with = "numeric")]
    pub amount: Decimal,
    #[serde(default)]
    pub payment_term: PaymentTerm,
}

/// Spend commitments of a usage-based price, per billing period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Commitments {
    #[serde(
        default,
        with = "numeric::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub minimum_amount: Option<Decimal>,
    #[serde(
        default,
        with = "numeric::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub maximum_amount: Option<Decimal>,
}

/// An amount per unit of usage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitPrice {
    #[serde(with = "numeric")]
    pub amount: Decimal,
    #[serde(flatten)]
    pub commitments: Commitments,
}

/// How tiers apply: the tier the whole quantity falls in (`volume`), or each tier to
/// the part of the quantity inside it (`graduated`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TieredMode {
    Volume,
    Graduated,
}

/// The flat component of a tier: `{"type": "flat", "amount": …}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "flat")]
pub struct TierFlatPrice {
    #[serde(with = "numeric")]
    pub amount: Decimal,
}

/// The per-unit component of a tier: `{"type": "unit", "amount": …}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "unit")]
pub struct TierUnitPrice {
    #[serde(with = "numeric")]
    pub amount: Decimal,
}

/// One tier: quantities up to and including `up_to_amount` (open-ended when `None`).
/// Both components are written, as `null` when absent (the spec requires the keys).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceTier {
    #[serde(
        default,
        with = "numeric::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub up_to_amount: Option<Decimal>,
    #[serde(default)]
    pub flat_price: Option<TierFlatPrice>,
    #[serde(default)]
    pub unit_price: Option<TierUnitPrice>,
}

/// Volume or graduated tiers. Tiers may come in any order: rating sorts them by
/// `up_to_amount`, open-ended last, as OpenMeter's `WithSortedTiers` does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TieredPrice {
    pub mode: TieredMode,
    pub tiers: Vec<PriceTier>,
    #[serde(flatten)]
    pub commitments: Commitments,
}

/// The usage quantity (a cost already in money) times `multiplier`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DynamicPrice {
    /// Written only when not the default `1`, as OpenMeter's v1 mapping does.
    #[serde(default = "one", with = "numeric", skip_serializing_if = "is_one")]
    pub multiplier: Decimal,
    #[serde(flatten)]
    pub commitments: Commitments,
}

/// `amount` per started package of `quantity_per_package` units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackagePrice {
    #[serde(with = "numeric")]
    pub amount: Decimal,
    #[serde(with = "numeric")]
    pub quantity_per_package: Decimal,
    #[serde(flatten)]
    pub commitments: Commitments,
}

/// OpenMeter's `RateCardUsageBasedPrice`, discriminated by `type`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Price {
    Flat(FlatPrice),
    Unit(UnitPrice),
    Tiered(TieredPrice),
    Dynamic(DynamicPrice),
    Package(PackagePrice),
}

fn one() -> Decimal {
    Decimal::ONE
}

fn is_one(value: &Decimal) -> bool {
    *value == Decimal::ONE
}

impl Price {
    /// The commitments; a flat price has none.
    pub fn commitments(&self) -> Commitments {
        match self {
            Price::Flat(_) => Commitments::default(),
            Price::Unit(p) => p.commitments.clone(),
            Price::Tiered(p) => p.commitments.clone(),
            Price::Dynamic(p) => p.commitments.clone(),
            Price::Package(p) => p.commitments.clone(),
        }
    }

    /// Appends every rule this price breaks to `issues` (OpenMeter's `Price.Validate`).
    pub fn check(&self, issues: &mut Vec<Issue>) {
        let negative = |amount: &Decimal, field: &str, issues: &mut Vec<Issue>| {
            if amount.is_sign_negative() && !amount.is_zero() {
                issues.push(Issue::AmountNegative {
                    field: field.to_owned(),
                });
            }
        };
        match self {
            Price::Flat(p) => negative(&p.amount, "price.amount", issues),
            Price::Unit(p) => {
                negative(&p.amount, "price.amount", issues);
                p.commitments.check(issues);
            }
            Price::Tiered(p) => p.check(issues),
            Price::Dynamic(p) => {
                if p.multiplier < Decimal::ZERO {
                    issues.push(Issue::MultiplierNegative);
                }
                p.commitments.check(issues);
            }
            Price::Package(p) => {
                negative(&p.amount, "price.amount", issues);
                if p.quantity_per_package < Decimal::ZERO {
                    issues.push(Issue::QuantityPerPackageNegative);
                }
                if p.quantity_per_package.is_zero() {
                    issues.push(Issue::QuantityPerPackageZero);
                }
                p.commitments.check(issues);
            }
        }
    }
}

impl Commitments {
    fn check(&self, issues: &mut Vec<Issue>) {
        let min = self.minimum_amount.unwrap_or_default();
        let max = self.maximum_amount.unwrap_or_default();
        if min < Decimal::ZERO {
            issues.push(Issue::MinimumAmountNegative);
        }
        if max < Decimal::ZERO {
            issues.push(Issue::MaximumAmountNegative);
        }
        if self.minimum_amount.is_some() && self.maximum_amount.is_some() && min > max {
            issues.push(Issue::MinimumAboveMaximum);
        }
    }
}

impl TieredPrice {
    /// OpenMeter's `TieredPrice.Validate`: at least one tier, one of them open-ended, no two
    /// with the same non-zero `upToAmount`, each with a non-negative flat or unit price.
    fn check(&self, issues: &mut Vec<Issue>) {
        if self.tiers.is_empty() {
            issues.push(Issue::TiersEmpty);
        }
        let mut seen: Vec<Decimal> = Vec::with_capacity(self.tiers.len());
        for (index, tier) in self.tiers.iter().enumerate() {
            let up_to = tier.up_to_amount.unwrap_or_default();
            if !up_to.is_zero() {
                if seen.contains(&up_to) {
                    issues.push(Issue::TiersDuplicateUpToAmount);
                    continue;
                }
                seen.push(up_to);
            }
            if up_to < Decimal::ZERO {
                issues.push(Issue::TierUpToAmountNegative { index });
            }
            if tier.flat_price.is_none() && tier.unit_price.is_none() {
                issues.push(Issue::TierWithoutPrice { index });
            }
            if tier
                .flat_price
                .as_ref()
                .is_some_and(|p| p.amount < Decimal::ZERO)
            {
                issues.push(Issue::TierFlatPriceNegative { index });
            }
            if tier
                .unit_price
                .as_ref()
                .is_some_and(|p| p.amount < Decimal::ZERO)
            {
                issues.push(Issue::TierUnitPriceNegative { index });
            }
        }
        if !self.tiers.iter().any(|t| t.up_to_amount.is_none()) {
            issues.push(Issue::TiersNoOpenEnded);
        }
        self.commitments.check(issues);
    }

    /// The tiers by `up_to_amount` ascending, open-ended ones last (a stable sort).
    pub fn sorted_tiers(&self) -> Vec<PriceTier> {
        let mut tiers = self.tiers.clone();
        tiers.sort_by(|a, b| match (a.up_to_amount, b.up_to_amount) {
            (Some(a), Some(b)) => a.cmp(&b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        tiers
    }
}
