//! Every rule a rate card or price can break, with OpenMeter's message and error code
//! (`openmeter/productcatalog/errors.go`, `price.go`, `ratecard.go`, `discount.go`,
//! `entitlement.go`, `tax.go`).

/// One broken rule. `Display` is OpenMeter's message; [`Issue::code`] its error code
/// where OpenMeter has one; [`Issue::field`] the JSON path of the offending field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Issue {
    #[error("the Amount must not be negative")]
    AmountNegative { field: String },
    #[error("at least one PriceTier must be provided")]
    TiersEmpty,
    #[error("multiple PriceTiers with same UpToAmount are not allowed")]
    TiersDuplicateUpToAmount,
    #[error("at least one PriceTier must be open-ended")]
    TiersNoOpenEnded,
    #[error("invalid PriceTier: the UpToAmount must not be negative")]
    TierUpToAmountNegative { index: usize },
    #[error("invalid PriceTier: either FlatPrice or UnitPrice must be provided in PriceTier")]
    TierWithoutPrice { index: usize },
    #[error("invalid PriceTier: invalid FlatPrice in PriceTier: the Amount must not be negative")]
    TierFlatPriceNegative { index: usize },
    #[error("invalid PriceTier: invalid UnitPrice in PriceTier: the Amount must not be negative")]
    TierUnitPriceNegative { index: usize },
    #[error("the MinimumAmount must not be negative")]
    MinimumAmountNegative,
    #[error("the MaximumAmount must not be negative")]
    MaximumAmountNegative,
    #[error("the MinimumAmount must not be greater than MaximumAmount")]
    MinimumAboveMaximum,
    #[error("the markup rate must not be less than 0")]
    MultiplierNegative,
    #[error("the QuantityPerPackage must not be negative")]
    QuantityPerPackageNegative,
    #[error("the QuantityPerPackage must not be zero")]
    QuantityPerPackageZero,
    #[error("billing cadence must be positive and 1 hour long duration at least")]
    BillingCadenceInvalid,
    #[error("usage-based price requires feature to be associated with")]
    UsageBasedPriceWithoutFeature,
    #[error("rate card key must match feature key")]
    KeyFeatureKeyMismatch,
    #[error("entitlement template requires feature to be associated with")]
    EntitlementTemplateWithoutFeature,
    #[error("issueAfterReset is required for metered entitlement templates")]
    IssueAfterResetRequired,
    #[error(
        "invalid entitlement template as issue after reset is required if issue after reset priority is set"
    )]
    IssueAfterResetPriorityWithoutIssue,
    #[error("usage period must be positive")]
    UsagePeriodNotPositive,
    #[error("usage period must be at least 1 hour")]
    UsagePeriodUnderAnHour,
    #[error("invalid JSON in static entitlement config")]
    StaticConfigInvalidJson,
    #[error("price is required for discounts")]
    DiscountsWithoutPrice,
    #[error("percentage must be between 0 and 100")]
    PercentageOutOfRange,
    #[error("usage must be greater than 0")]
    UsageDiscountNegative,
    #[error("usage discount is not supported for flat price")]
    UsageDiscountWithFlatPrice,
    #[error("invalid product tax code: {code}")]
    StripeTaxCodeInvalid { code: String },
}

impl Issue {
    /// OpenMeter's error code, when it gives the rule one.
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            Issue::BillingCadenceInvalid => "billing_cadence_invalid_value",
            Issue::UsageBasedPriceWithoutFeature => "usage_based_price_with_no_feature",
            Issue::KeyFeatureKeyMismatch => "rate_card_key_feature_key_mismatch",
            Issue::EntitlementTemplateWithoutFeature => "entitlement_template_with_no_feature",
            Issue::IssueAfterResetRequired => "entitlement_template_issue_after_reset_required",
            Issue::IssueAfterResetPriorityWithoutIssue => {
                "entitlement_template_invalid_issue_after_reset_with_priority"
            }
            Issue::UsagePeriodNotPositive => "entitlement_template_negative_usage_period",
            Issue::UsagePeriodUnderAnHour => "entitlement_template_usage_period_less_then_an_hour",
            Issue::StaticConfigInvalidJson => "entitlement_template_invalid_json_config",
            Issue::PercentageOutOfRange => "percentage_discount_invalid_value",
            Issue::UsageDiscountNegative => "usage_discount_negative_quantity",
            Issue::UsageDiscountWithFlatPrice => "usage_discount_with_flat_price",
            _ => return None,
        })
    }

    /// The JSON path of the field the rule is about, relative to the rate card.
    pub fn field(&self) -> String {
        let fixed = match self {
            Issue::AmountNegative { field } => return field.clone(),
            Issue::TierUpToAmountNegative { index } => {
                return format!("price.tiers[{index}].upToAmount");
            }
            Issue::TierWithoutPrice { index } => return format!("price.tiers[{index}]"),
            Issue::TierFlatPriceNegative { index } => {
                return format!("price.tiers[{index}].flatPrice.amount");
            }
            Issue::TierUnitPriceNegative { index } => {
                return format!("price.tiers[{index}].unitPrice.amount");
            }
            Issue::StripeTaxCodeInvalid { .. } => "taxConfig.stripe.code",
            Issue::TiersEmpty | Issue::TiersDuplicateUpToAmount | Issue::TiersNoOpenEnded => {
                "price.tiers"
            }
            Issue::MinimumAmountNegative | Issue::MinimumAboveMaximum => "price.minimumAmount",
            Issue::MaximumAmountNegative => "price.maximumAmount",
            Issue::MultiplierNegative => "price.multiplier",
            Issue::QuantityPerPackageNegative | Issue::QuantityPerPackageZero => {
                "price.quantityPerPackage"
            }
            Issue::BillingCadenceInvalid => "billingCadence",
            Issue::UsageBasedPriceWithoutFeature
            | Issue::EntitlementTemplateWithoutFeature
            | Issue::KeyFeatureKeyMismatch => "featureKey",
            Issue::IssueAfterResetRequired | Issue::IssueAfterResetPriorityWithoutIssue => {
                "entitlementTemplate.issueAfterReset"
            }
            Issue::UsagePeriodNotPositive | Issue::UsagePeriodUnderAnHour => {
                "entitlementTemplate.usagePeriod"
            }
            Issue::StaticConfigInvalidJson => "entitlementTemplate.config",
            Issue::DiscountsWithoutPrice => "discounts",
            Issue::PercentageOutOfRange => "discounts.percentage.percentage",
            Issue::UsageDiscountNegative | Issue::UsageDiscountWithFlatPrice => {
                "discounts.usage.quantity"
            }
        };
        fixed.to_owned()
    }
}
