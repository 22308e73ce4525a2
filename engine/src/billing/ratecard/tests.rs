use serde_json::{Value, json};

use super::*;
use crate::billing::price::{PaymentTerm, TieredMode, TieredPrice};

/// JSON → Rust → JSON is the identity for a document in OpenMeter's canonical form.
fn round_trip(document: Value) -> RateCard {
    let card: RateCard = serde_json::from_value(document.clone()).unwrap();
    assert_eq!(serde_json::to_value(&card).unwrap(), document);
    let text = serde_json::to_string(&document).unwrap();
    let from_text: RateCard = serde_json::from_str(&text).unwrap();
    assert_eq!(from_text, card);
    card
}

#[test]
fn flat_fee_rate_cards_round_trip() {
    let card = round_trip(json!({
        "type": "flat_fee",
        "key": "platform_fee",
        "name": "Platform fee",
        "description": "Monthly platform fee",
        "metadata": {"externalId": "019142cc-a016-796a-8113-1a942fecd26d"},
        "taxConfig": {"behavior": "exclusive", "stripe": {"code": "txcd_10000000"}},
        "billingCadence": "P1M",
        "price": {"type": "flat", "amount": "100", "paymentTerm": "in_arrears"},
        "discounts": {"percentage": {"percentage": 12.5}}
    }));
    assert!(card.validate().is_ok());
    let RateCard::FlatFee(flat) = &card else {
        panic!("not a flat fee")
    };
    assert_eq!(
        flat.price.as_ref().unwrap().payment_term,
        PaymentTerm::InArrears
    );

    let one_time = round_trip(json!({
        "type": "flat_fee",
        "key": "setup",
        "name": "Setup",
        "billingCadence": null,
        "price": {"type": "flat", "amount": "0.5", "paymentTerm": "in_advance"}
    }));
    assert_eq!(one_time.billing_cadence().unwrap(), None);
    round_trip(json!({
        "type": "flat_fee", "key": "free", "name": "Free", "billingCadence": "P1Y", "price": null
    }));
}

#[test]
fn usage_based_rate_cards_round_trip_every_price_type() {
    let prices = [
        json!({"type": "unit", "amount": "0.01", "minimumAmount": "10", "maximumAmount": "1000"}),
        json!({"type": "tiered", "mode": "graduated", "tiers": [
            {"upToAmount": "1000", "flatPrice": null, "unitPrice": {"type": "unit", "amount": "0.1"}},
            {"flatPrice": {"type": "flat", "amount": "5"}, "unitPrice": {"type": "unit", "amount": "0.05"}}
        ], "minimumAmount": "20"}),
        json!({"type": "tiered", "mode": "volume", "tiers": [
            {"upToAmount": "100", "flatPrice": {"type": "flat", "amount": "10"}, "unitPrice": null},
            {"flatPrice": null, "unitPrice": {"type": "unit", "amount": "0.5"}}
        ]}),
        json!({"type": "dynamic", "multiplier": "1.2", "maximumAmount": "500"}),
        json!({"type": "package", "amount": "25", "quantityPerPackage": "1000"}),
        json!({"type": "flat", "amount": "9.99", "paymentTerm": "in_advance"}),
    ];
    for price in prices {
        let card = round_trip(json!({
            "type": "usage_based",
            "key": "tokens",
            "name": "Tokens",
            "featureKey": "tokens",
            "entitlementTemplate": {
                "type": "metered", "isSoftLimit": true, "issueAfterReset": 1000.5,
                "issueAfterResetPriority": 5, "preserveOverageAtReset": false, "usagePeriod": "P1M"
            },
            "billingCadence": "P1M",
            "price": price,
            "discounts": {"percentage": {"percentage": 10}, "usage": {"quantity": "100"}}
        }));
        let issues = card.issues();
        let flat = matches!(card.price(), Some(Price::Flat(_)));
        assert_eq!(issues.is_empty(), !flat, "{issues:?}");
    }
}

#[test]
fn templates_and_tax_configs_round_trip() {
    for template in [
        json!({"type": "static", "config": "{\"integrations\":[\"github\"]}", "metadata": {"a": "b"}}),
        json!({"type": "boolean"}),
    ] {
        round_trip(json!({
            "type": "flat_fee", "key": "sso", "name": "SSO", "featureKey": "sso",
            "entitlementTemplate": template,
            "taxConfig": {"customInvoicing": {"code": "A1"}, "taxCodeId": "01G65Z755AFWAKHE12NY0CQ9FH"},
            "billingCadence": "P1M", "price": null
        }));
    }
}

#[test]
fn amounts_are_written_like_openmeter_writes_them() {
    let card: RateCard = serde_json::from_value(json!({
        "type": "usage_based", "key": "a", "name": "A", "billingCadence": "P1M", "featureKey": "a",
        "price": {"type": "unit", "amount": "1.500"}
    }))
    .unwrap();
    let written = serde_json::to_value(&card).unwrap();
    assert_eq!(written["price"]["amount"], json!("1.5"));
    let dynamic: RateCard = serde_json::from_value(json!({
        "type": "usage_based", "key": "a", "name": "A", "billingCadence": "P1M", "featureKey": "a",
        "price": {"type": "dynamic"}
    }))
    .unwrap();
    let written = serde_json::to_value(&dynamic).unwrap();
    assert_eq!(written["price"], json!({"type": "dynamic"}));
    let RateCard::UsageBased(RateCardUsageBased {
        price: Some(Price::Dynamic(price)),
        ..
    }) = &dynamic
    else {
        panic!("not dynamic")
    };
    assert_eq!(price.multiplier, Decimal::ONE);
    let empty: RateCard = serde_json::from_value(json!({
        "type": "flat_fee", "key": "a", "name": "A", "billingCadence": null, "price": null,
        "discounts": {}
    }))
    .unwrap();
    assert!(
        serde_json::to_value(&empty)
            .unwrap()
            .get("discounts")
            .is_none()
    );
    let defaulted: RateCard = serde_json::from_value(json!({
        "type": "flat_fee", "key": "a", "name": "A", "billingCadence": null,
        "price": {"type": "flat", "amount": "1"}
    }))
    .unwrap();
    assert_eq!(
        serde_json::to_value(&defaulted).unwrap()["price"]["paymentTerm"],
        json!("in_advance")
    );
}

#[test]
fn malformed_numbers_and_types_are_refused() {
    for price in [
        json!({"type": "unit", "amount": 1}),
        json!({"type": "unit", "amount": "1e3"}),
        json!({"type": "unit", "amount": "1."}),
        json!({"type": "unit", "amount": " 1"}),
        json!({"type": "unit", "amount": "+1"}),
        json!({"type": "unit", "amount": "1_000"}),
        json!({"type": "unit", "amount": "99999999999999999999999999999999"}),
        json!({"type": "bogus", "amount": "1"}),
        json!({"type": "tiered", "mode": "stepped", "tiers": []}),
    ] {
        let document = json!({
            "type": "usage_based", "key": "a", "name": "A", "billingCadence": "P1M", "price": price
        });
        assert!(
            serde_json::from_value::<RateCard>(document.clone()).is_err(),
            "{document}"
        );
    }
    assert!(
        serde_json::from_value::<RateCard>(json!({
            "type": "usage_based", "key": "a", "name": "A", "billingCadence": "P1M", "price": null,
            "discounts": {"percentage": {"percentage": "10"}}
        }))
        .is_err()
    );
}

fn usage_card(price: Value, extra: Value) -> RateCard {
    let mut document = json!({
        "type": "usage_based", "key": "api", "name": "API", "featureKey": "api",
        "billingCadence": "P1M", "price": price
    });
    if let (Some(target), Some(extra)) = (document.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            target.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(document).unwrap()
}

/// Each OpenMeter rule, with its message and code.
#[test]
fn validation_reports_openmeters_rules() {
    let cases: Vec<(RateCard, Issue)> = vec![
        (
            usage_card(json!({"type": "unit", "amount": "-1"}), json!({})),
            Issue::AmountNegative {
                field: "price.amount".into(),
            },
        ),
        (
            usage_card(
                json!({"type": "tiered", "mode": "volume", "tiers": []}),
                json!({}),
            ),
            Issue::TiersEmpty,
        ),
        (
            usage_card(
                json!({"type": "tiered", "mode": "graduated", "tiers": [
                {"upToAmount": "10", "unitPrice": {"type": "unit", "amount": "1"}, "flatPrice": null},
                {"upToAmount": "10", "unitPrice": {"type": "unit", "amount": "1"}, "flatPrice": null},
                {"unitPrice": {"type": "unit", "amount": "1"}, "flatPrice": null}]}),
                json!({}),
            ),
            Issue::TiersDuplicateUpToAmount,
        ),
        (
            usage_card(
                json!({"type": "tiered", "mode": "graduated", "tiers": [
                {"upToAmount": "10", "unitPrice": {"type": "unit", "amount": "1"}, "flatPrice": null}]}),
                json!({}),
            ),
            Issue::TiersNoOpenEnded,
        ),
        (
            usage_card(
                json!({"type": "tiered", "mode": "graduated", "tiers": [
                {"flatPrice": null, "unitPrice": null}]}),
                json!({}),
            ),
            Issue::TierWithoutPrice { index: 0 },
        ),
        (
            usage_card(
                json!({"type": "tiered", "mode": "graduated", "tiers": [
                {"flatPrice": {"type": "flat", "amount": "-2"}, "unitPrice": null}]}),
                json!({}),
            ),
            Issue::TierFlatPriceNegative { index: 0 },
        ),
        (
            usage_card(
                json!({"type": "unit", "amount": "1", "minimumAmount": "10", "maximumAmount": "5"}),
                json!({}),
            ),
            Issue::MinimumAboveMaximum,
        ),
        (
            usage_card(
                json!({"type": "unit", "amount": "1", "maximumAmount": "-5"}),
                json!({}),
            ),
            Issue::MaximumAmountNegative,
        ),
        (
            usage_card(json!({"type": "dynamic", "multiplier": "-0.5"}), json!({})),
            Issue::MultiplierNegative,
        ),
        (
            usage_card(
                json!({"type": "package", "amount": "1", "quantityPerPackage": "0"}),
                json!({}),
            ),
            Issue::QuantityPerPackageZero,
        ),
        (
            usage_card(
                json!({"type": "package", "amount": "1", "quantityPerPackage": "-3"}),
                json!({}),
            ),
            Issue::QuantityPerPackageNegative,
        ),
        (
            usage_card(
                json!({"type": "unit", "amount": "1"}),
                json!({"billingCadence": "PT30M"}),
            ),
            Issue::BillingCadenceInvalid,
        ),
        (
            usage_card(
                json!({"type": "unit", "amount": "1"}),
                json!({"billingCadence": "P0D"}),
            ),
            Issue::BillingCadenceInvalid,
        ),
        (
            usage_card(
                json!({"type": "unit", "amount": "1"}),
                json!({"featureKey": "other"}),
            ),
            Issue::KeyFeatureKeyMismatch,
        ),
        (
            usage_card(
                json!({"type": "unit", "amount": "1"}),
                json!({"discounts": {"percentage": {"percentage": 100.5}}}),
            ),
            Issue::PercentageOutOfRange,
        ),
        (
            usage_card(
                json!({"type": "unit", "amount": "1"}),
                json!({"discounts": {"usage": {"quantity": "-1"}}}),
            ),
            Issue::UsageDiscountNegative,
        ),
        (
            usage_card(
                json!({"type": "flat", "amount": "1"}),
                json!({"discounts": {"usage": {"quantity": "1"}}}),
            ),
            Issue::UsageDiscountWithFlatPrice,
        ),
        (
            usage_card(
                Value::Null,
                json!({"discounts": {"usage": {"quantity": "1"}}}),
            ),
            Issue::DiscountsWithoutPrice,
        ),
        (
            usage_card(
                json!({"type": "unit", "amount": "1"}),
                json!({"taxConfig": {"stripe": {"code": "txcd_123"}}}),
            ),
            Issue::StripeTaxCodeInvalid {
                code: "txcd_123".into(),
            },
        ),
        (
            usage_card(
                json!({"type": "unit", "amount": "1"}),
                json!({"entitlementTemplate": {"type": "metered"}}),
            ),
            Issue::IssueAfterResetRequired,
        ),
        (
            usage_card(
                json!({"type": "unit", "amount": "1"}),
                json!({"entitlementTemplate": {"type": "metered", "issueAfterReset": 1, "usagePeriod": "PT5M"}}),
            ),
            Issue::UsagePeriodUnderAnHour,
        ),
        (
            usage_card(
                json!({"type": "unit", "amount": "1"}),
                json!({"entitlementTemplate": {"type": "metered", "issueAfterResetPriority": 2, "issueAfterReset": null}}),
            ),
            Issue::IssueAfterResetPriorityWithoutIssue,
        ),
        (
            usage_card(
                json!({"type": "unit", "amount": "1"}),
                json!({"entitlementTemplate": {"type": "static", "config": "{nope"}}),
            ),
            Issue::StaticConfigInvalidJson,
        ),
    ];
    for (card, expected) in cases {
        let issues = card.issues();
        assert!(issues.contains(&expected), "{expected:?} not in {issues:?}");
        let message = card.validate().unwrap_err().to_string();
        assert!(message.contains(&expected.to_string()), "{message}");
    }
    let no_feature: RateCard = serde_json::from_value(json!({
        "type": "usage_based", "key": "api", "name": "API", "billingCadence": "P1M",
        "price": {"type": "unit", "amount": "1"}, "entitlementTemplate": {"type": "boolean"}
    }))
    .unwrap();
    let issues = no_feature.issues();
    assert_eq!(
        issues,
        vec![
            Issue::EntitlementTemplateWithoutFeature,
            Issue::UsageBasedPriceWithoutFeature
        ]
    );
    assert_eq!(issues[1].code(), Some("usage_based_price_with_no_feature"));
    assert_eq!(
        Issue::BillingCadenceInvalid.code(),
        Some("billing_cadence_invalid_value")
    );
    assert_eq!(Issue::BillingCadenceInvalid.field(), "billingCadence");
}

/// OpenMeter sorts tiers rather than refusing unsorted ones.
#[test]
fn unsorted_tiers_are_valid_and_sorted_for_rating() {
    let card = usage_card(
        json!({"type": "tiered", "mode": "graduated", "tiers": [
            {"unitPrice": {"type": "unit", "amount": "1"}, "flatPrice": null},
            {"upToAmount": "100", "unitPrice": {"type": "unit", "amount": "2"}, "flatPrice": null},
            {"upToAmount": "10", "unitPrice": {"type": "unit", "amount": "3"}, "flatPrice": null}]}),
        json!({}),
    );
    assert!(card.validate().is_ok());
    let Some(Price::Tiered(TieredPrice { mode, .. })) = card.price() else {
        panic!("not tiered")
    };
    assert_eq!(mode, TieredMode::Graduated);
    if let Some(Price::Tiered(tiered)) = card.price() {
        let order: Vec<String> = tiered
            .sorted_tiers()
            .iter()
            .map(|t| t.up_to_amount.map_or("inf".into(), |d| d.to_string()))
            .collect();
        assert_eq!(order, ["10", "100", "inf"]);
    }
}

#[test]
fn pro_rating_config_reads_the_spec_form() {
    let config: ProRatingConfig =
        serde_json::from_value(json!({"enabled": true, "mode": "prorate_prices"})).unwrap();
    assert_eq!(config, ProRatingConfig::default());
    assert!(
        serde_json::from_value::<ProRatingConfig>(json!({"enabled": true, "mode": "x"})).is_err()
    );
}
