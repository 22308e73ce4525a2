//! Hand-worked ratings: every amount below was computed on paper.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::billing::price::{
    Commitments, DynamicPrice, PriceTier, TierFlatPrice, TierUnitPrice, UnitPrice,
};
use crate::billing::ratecard::{PercentageDiscount, UsageDiscount};

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn day(n: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 4, n, 0, 0, 0).unwrap()
}

fn april() -> Period {
    Period::new(day(1), Utc.with_ymd_and_hms(2025, 5, 1, 0, 0, 0).unwrap()).unwrap()
}

fn usd() -> Currency {
    Currency::lookup("USD").unwrap()
}

fn unit(amount: &str, min: Option<&str>, max: Option<&str>) -> Price {
    Price::Unit(UnitPrice {
        amount: d(amount),
        commitments: Commitments {
            minimum_amount: min.map(d),
            maximum_amount: max.map(d),
        },
    })
}

fn tier(up_to: Option<&str>, flat: Option<&str>, unit: Option<&str>) -> PriceTier {
    PriceTier {
        up_to_amount: up_to.map(d),
        flat_price: flat.map(|a| TierFlatPrice { amount: d(a) }),
        unit_price: unit.map(|a| TierUnitPrice { amount: d(a) }),
    }
}

fn tiered(mode: TieredMode, tiers: Vec<PriceTier>) -> Price {
    Price::Tiered(TieredPrice {
        mode,
        tiers,
        commitments: Commitments::default(),
    })
}

/// One whole-period line of `quantity`.
fn input<'a>(price: &'a Price, currency: &'a Currency, quantity: &str) -> RatingInput<'a> {
    RatingInput {
        name: "API calls",
        price,
        discounts: None,
        discount_correlation_id: "01JCORRELATION",
        currency,
        quantity: d(quantity),
        pre_line_period_quantity: Decimal::ZERO,
        previously_billed_amount: Decimal::ZERO,
        service_period: april(),
        billing_period: april(),
        pro_rating_full_period: None,
    }
}

/// A split of April: `[from, to)` days, with what earlier splits used and billed.
fn split<'a>(
    base: RatingInput<'a>,
    from: u32,
    to: Option<u32>,
    pre: &str,
    billed: &str,
) -> RatingInput<'a> {
    let end = to.map_or(april().to, day);
    RatingInput {
        service_period: Period::new(day(from), end).unwrap(),
        pre_line_period_quantity: d(pre),
        previously_billed_amount: d(billed),
        ..base
    }
}

/// (child key, quantity, per unit, total) of each detailed line.
fn summary(rating: &Rating) -> Vec<(String, String, String, String)> {
    rating
        .detailed_lines
        .iter()
        .map(|l| {
            (
                l.child_unique_reference_id.clone(),
                l.quantity.normalize().to_string(),
                l.per_unit_amount.normalize().to_string(),
                l.totals.total.to_string(),
            )
        })
        .collect()
}

fn row(key: &str, quantity: &str, per_unit: &str, total: &str) -> (String, String, String, String) {
    (key.into(), quantity.into(), per_unit.into(), total.into())
}

#[test]
fn unit_price_multiplies_and_rounds_half_away_from_zero() {
    let usd = usd();
    let price = unit("0.1", None, None);
    let rating = rate(&input(&price, &usd, "1500")).unwrap();
    assert_eq!(
        summary(&rating),
        [row("unit-price-usage", "1500", "0.1", "150.00")]
    );
    assert_eq!(rating.detailed_lines[0].name, "API calls: usage in period");
    assert_eq!(rating.totals.total, d("150.00"));

    // 0.001 × 1005 = 1.005 → 1.01 (banker's rounding would give 1.00).
    let price = unit("0.001", None, None);
    let rating = rate(&input(&price, &usd, "1005")).unwrap();
    assert_eq!(rating.totals.amount.to_string(), "1.01");

    let jpy = Currency::lookup("JPY").unwrap();
    let price = unit("0.5", None, None);
    assert_eq!(
        rate(&input(&price, &jpy, "5"))
            .unwrap()
            .totals
            .total
            .to_string(),
        "3"
    );

    let price = unit("0.1", None, None);
    assert!(
        rate(&input(&price, &usd, "0"))
            .unwrap()
            .detailed_lines
            .is_empty()
    );
}

/// Graduated 0–1000 @0.10, above @0.05 plus a flat 5 on entering tier 2; usage 1500:
/// 1000 × 0.10 + 500 × 0.05 + 5 = 100 + 25 + 5 = 130.
#[test]
fn graduated_tiers_price_each_slice() {
    let usd = usd();
    let price = tiered(
        TieredMode::Graduated,
        vec![
            tier(None, Some("5"), Some("0.05")),
            tier(Some("1000"), None, Some("0.10")),
        ],
    );
    let rating = rate(&input(&price, &usd, "1500")).unwrap();
    assert_eq!(
        summary(&rating),
        [
            row("graduated-tiered-1-price-usage", "1000", "0.1", "100.00"),
            row("graduated-tiered-2-price-usage", "500", "0.05", "25.00"),
            row("graduated-tiered-2-flat-price", "1", "5", "5.00"),
        ]
    );
    assert_eq!(rating.totals.total, d("130.00"));
    assert_eq!(
        rating.detailed_lines[2].name,
        "API calls: flat price for tier 2"
    );

    // The same usage over two splits: 800 then 700 → 80, then 20 + 25 + 5.
    let first = rate(&split(input(&price, &usd, "800"), 1, Some(16), "0", "0")).unwrap();
    assert_eq!(
        summary(&first),
        [row("graduated-tiered-1-price-usage", "800", "0.1", "80.00")]
    );
    let second = rate(&split(input(&price, &usd, "700"), 16, None, "800", "80")).unwrap();
    assert_eq!(
        summary(&second),
        [
            row("graduated-tiered-1-price-usage", "200", "0.1", "20.00"),
            row("graduated-tiered-2-price-usage", "500", "0.05", "25.00"),
            row("graduated-tiered-2-flat-price", "1", "5", "5.00"),
        ]
    );
}

/// A flat price on tier 1 is due on the period's first line even without usage; later
/// lines that do not enter a new tier add nothing.
#[test]
fn graduated_first_tier_flat_price_is_billed_once() {
    let usd = usd();
    let price = tiered(
        TieredMode::Graduated,
        vec![
            tier(Some("10"), Some("3"), Some("1")),
            tier(None, None, Some("0.5")),
        ],
    );
    let zero = rate(&input(&price, &usd, "0")).unwrap();
    assert_eq!(zero.totals.total, d("3.00"));
    let later = rate(&split(input(&price, &usd, "0"), 10, None, "0", "3")).unwrap();
    assert_eq!(later.totals.total, d("0.00"));
    let within = rate(&split(input(&price, &usd, "4"), 10, None, "5", "8")).unwrap();
    assert_eq!(
        summary(&within),
        [row("graduated-tiered-1-price-usage", "4", "1", "4.00")]
    );
}

/// Volume: the tier of the whole quantity prices all of it.
#[test]
fn volume_tiers_price_the_whole_quantity() {
    let usd = usd();
    let price = tiered(
        TieredMode::Volume,
        vec![
            tier(Some("100"), Some("10"), None),
            tier(None, None, Some("0.5")),
        ],
    );
    let at_edge = rate(&input(&price, &usd, "100")).unwrap();
    assert_eq!(
        summary(&at_edge),
        [row("volume-flat-price", "1", "10", "10.00")]
    );
    let above = rate(&input(&price, &usd, "101")).unwrap();
    assert_eq!(
        summary(&above),
        [row("volume-tiered-price", "101", "0.5", "50.50")]
    );
    assert_eq!(
        above.detailed_lines[0].name,
        "API calls: unit price for tier 2"
    );

    let not_last = rate(&split(input(&price, &usd, "50"), 1, Some(10), "0", "0")).unwrap();
    assert!(not_last.detailed_lines.is_empty());
    let progressive = split(input(&price, &usd, "50"), 10, None, "50", "0");
    assert_eq!(rate(&progressive), Err(Error::VolumeSplitNotSupported));
}

/// 25 per started 1000: 2500 → 3 packages; split 1200 + 1300 → 2, then 1.
#[test]
fn packages_count_started_packages() {
    let usd = usd();
    let price = Price::Package(crate::billing::price::PackagePrice {
        amount: d("25"),
        quantity_per_package: d("1000"),
        commitments: Commitments::default(),
    });
    let whole = rate(&input(&price, &usd, "2500")).unwrap();
    assert_eq!(summary(&whole), [row("usage", "3", "25", "75.00")]);
    let first = rate(&split(input(&price, &usd, "1200"), 1, Some(15), "0", "0")).unwrap();
    assert_eq!(summary(&first), [row("usage", "2", "25", "50.00")]);
    let second = rate(&split(input(&price, &usd, "1300"), 15, None, "1200", "50")).unwrap();
    assert_eq!(summary(&second), [row("usage", "1", "25", "25.00")]);
    let exact = rate(&input(&price, &usd, "2000")).unwrap();
    assert_eq!(exact.totals.total, d("50.00"));
}

/// Dynamic: the usage (a cost) × 1.2, rounded once: 10.005 × 1.2 = 12.006 → 12.01.
#[test]
fn dynamic_price_rounds_the_marked_up_cost() {
    let usd = usd();
    let price = Price::Dynamic(DynamicPrice {
        multiplier: d("1.2"),
        commitments: Commitments::default(),
    });
    let rating = rate(&input(&price, &usd, "10.005")).unwrap();
    assert_eq!(summary(&rating), [row("usage", "1", "12.01", "12.01")]);
}

/// Minimum 100: usage 30 gets a 70 commitment line; split, only the last line tops up.
#[test]
fn minimum_spend_tops_up_on_the_last_line() {
    let usd = usd();
    let price = unit("1", Some("100"), None);
    let rating = rate(&input(&price, &usd, "30")).unwrap();
    assert_eq!(
        summary(&rating),
        [
            row("unit-price-usage", "30", "1", "30.00"),
            row("min-spend", "1", "70", "70.00")
        ]
    );
    let min_line = &rating.detailed_lines[1];
    assert_eq!(min_line.category, Category::Commitment);
    assert_eq!(min_line.name, "API calls: minimum spend");
    assert_eq!(
        (min_line.totals.amount, min_line.totals.charges_total),
        (d("0.00"), d("70.00"))
    );
    assert_eq!(
        (rating.totals.amount, rating.totals.charges_total),
        (d("30.00"), d("70.00"))
    );
    assert_eq!(rating.totals.total, d("100.00"));

    let first = rate(&split(input(&price, &usd, "30"), 1, Some(15), "0", "0")).unwrap();
    assert_eq!(first.totals.total, d("30.00"));
    let last = rate(&split(input(&price, &usd, "20"), 15, None, "30", "30")).unwrap();
    assert_eq!(last.totals.charges_total, d("50.00"));
    assert_eq!(last.detailed_lines[1].period, april());

    let met = rate(&input(&price, &usd, "150")).unwrap();
    assert_eq!(met.detailed_lines.len(), 1);
}

/// Maximum 100: what goes over it is discounted, counting earlier splits' amounts.
#[test]
fn maximum_spend_discounts_the_overage() {
    let usd = usd();
    let price = unit("1", None, Some("100"));
    let rating = rate(&input(&price, &usd, "150")).unwrap();
    let line = &rating.detailed_lines[0];
    assert_eq!(line.amount_discounts.len(), 1);
    let discount = &line.amount_discounts[0];
    assert_eq!(discount.amount, d("50.00"));
    assert_eq!(discount.reason, DiscountReason::MaximumSpend);
    assert_eq!(discount.child_unique_reference_id, "line_maximum_spend");
    assert_eq!(
        discount.description.as_deref(),
        Some("Maximum spend discount for charges over 100")
    );
    assert_eq!(
        (
            line.totals.amount,
            line.totals.discounts_total,
            line.totals.total
        ),
        (d("150.00"), d("50.00"), d("100.00"))
    );

    let partly = rate(&split(input(&price, &usd, "50"), 15, None, "80", "80")).unwrap();
    assert_eq!(partly.totals.total, d("20.00"));
    let over = rate(&split(input(&price, &usd, "50"), 15, None, "120", "120")).unwrap();
    assert_eq!(
        (over.totals.discounts_total, over.totals.total),
        (d("50.00"), d("0.00"))
    );
}

/// 100 free units: the first split uses 60 of them, the second the remaining 40.
#[test]
fn usage_discount_frees_the_first_units_of_the_period() {
    let usd = usd();
    let price = unit("1", None, None);
    let discounts = Discounts {
        percentage: None,
        usage: Some(UsageDiscount { quantity: d("100") }),
    };
    let base = RatingInput {
        discounts: Some(&discounts),
        ..input(&price, &usd, "60")
    };
    let first = rate(&split(base.clone(), 1, Some(15), "0", "0")).unwrap();
    assert!(first.detailed_lines.is_empty());
    assert_eq!(first.usage_discount.as_ref().unwrap().quantity, d("60"));
    let second = rate(&RatingInput {
        quantity: d("100"),
        ..split(base, 15, None, "60", "0")
    })
    .unwrap();
    assert_eq!(
        summary(&second),
        [row("unit-price-usage", "60", "1", "60.00")]
    );
    let applied = second.usage_discount.unwrap();
    assert_eq!(
        (applied.quantity, applied.pre_line_period_quantity),
        (d("40"), Some(d("60")))
    );
    assert_eq!(
        applied.child_unique_reference_id,
        "rateCardDiscount/correlationID=01JCORRELATION"
    );
    assert_eq!(
        (second.quantity, second.pre_line_period_quantity),
        (d("60"), d("0"))
    );
}

/// 10 % of 33.33 is 3.333 → 3.33; 12.5 % of 0.04 is 0.005 → 0.01.
#[test]
fn percentage_discount_is_rounded_per_line() {
    let usd = usd();
    let price = unit("1", None, None);
    let ten = Discounts {
        percentage: Some(PercentageDiscount {
            percentage: d("10"),
        }),
        usage: None,
    };
    let rating = rate(&RatingInput {
        discounts: Some(&ten),
        ..input(&price, &usd, "33.33")
    })
    .unwrap();
    assert_eq!(
        (rating.totals.discounts_total, rating.totals.total),
        (d("3.33"), d("30.00"))
    );
    let eighth = Discounts {
        percentage: Some(PercentageDiscount {
            percentage: d("12.5"),
        }),
        usage: None,
    };
    let rating = rate(&RatingInput {
        discounts: Some(&eighth),
        ..input(&price, &usd, "0.04")
    })
    .unwrap();
    assert_eq!(rating.totals.discounts_total, d("0.01"));
}

#[test]
fn flat_fees_follow_their_payment_term_and_pro_rating() {
    let usd = usd();
    let advance = Price::Flat(FlatPrice {
        amount: d("100"),
        payment_term: PaymentTerm::InAdvance,
    });
    let arrears = Price::Flat(FlatPrice {
        amount: d("100"),
        payment_term: PaymentTerm::InArrears,
    });
    let whole = rate(&input(&advance, &usd, "0")).unwrap();
    assert_eq!(summary(&whole), [row("flat-price", "1", "100", "100.00")]);
    assert_eq!(whole.detailed_lines[0].name, "API calls");
    assert_eq!(whole.detailed_lines[0].payment_term, PaymentTerm::InAdvance);
    assert!(
        rate(&split(input(&advance, &usd, "0"), 10, None, "0", "0"))
            .unwrap()
            .detailed_lines
            .is_empty()
    );
    assert!(
        rate(&split(input(&arrears, &usd, "0"), 1, Some(10), "0", "0"))
            .unwrap()
            .detailed_lines
            .is_empty()
    );

    // Half of April, then a third of it: 100 × 0.5 = 50; 100 × 0.3333… = 33.33.
    let half = RatingInput {
        service_period: Period::new(day(16), april().to).unwrap(),
        billing_period: Period::new(day(16), april().to).unwrap(),
        pro_rating_full_period: Some(april()),
        ..input(&arrears, &usd, "0")
    };
    assert_eq!(rate(&half).unwrap().totals.total, d("50.00"));
    let third = RatingInput {
        service_period: Period::new(day(21), april().to).unwrap(),
        billing_period: Period::new(day(21), april().to).unwrap(),
        ..half
    };
    assert_eq!(rate(&third).unwrap().totals.total, d("33.33"));
    let free = Price::Flat(FlatPrice {
        amount: d("0"),
        payment_term: PaymentTerm::InAdvance,
    });
    assert!(
        rate(&input(&free, &usd, "0"))
            .unwrap()
            .detailed_lines
            .is_empty()
    );
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let usd = usd();
    let price = unit("1", None, None);
    assert_eq!(
        rate(&input(&price, &usd, "-1")),
        Err(Error::NegativeQuantity { field: "quantity" })
    );
    let bad = unit("-1", None, None);
    assert!(matches!(
        rate(&input(&bad, &usd, "1")),
        Err(Error::InvalidPrice { .. })
    ));
    let outside = RatingInput {
        billing_period: Period::new(day(2), april().to).unwrap(),
        ..input(&price, &usd, "1")
    };
    assert!(matches!(
        rate(&outside),
        Err(Error::ServiceOutsideBilling { .. })
    ));
    let huge = unit("79228162514264337593543950335", None, None);
    assert_eq!(rate(&input(&huge, &usd, "2")), Err(Error::Overflow));
    let percent = Discounts {
        percentage: Some(PercentageDiscount {
            percentage: d("101"),
        }),
        usage: None,
    };
    let over = RatingInput {
        discounts: Some(&percent),
        ..input(&price, &usd, "1")
    };
    assert!(matches!(rate(&over), Err(Error::InvalidPrice { .. })));
}

#[test]
fn detailed_lines_serialize_like_openmeter() {
    let usd = usd();
    let price = unit("0.1", Some("20"), None);
    let rating = rate(&input(&price, &usd, "15")).unwrap();
    let written = serde_json::to_value(&rating.detailed_lines[1]).unwrap();
    assert_eq!(
        written,
        json!({
            "name": "API calls: minimum spend",
            "quantity": "1",
            "perUnitAmount": "18.5",
            "childUniqueReferenceID": "min-spend",
            "period": {"from": "2025-04-01T00:00:00Z", "to": "2025-05-01T00:00:00Z"},
            "paymentTerm": "in_arrears",
            "category": "commitment",
            "amountDiscounts": [],
            "totals": {
                "amount": "0", "chargesTotal": "18.5", "discountsTotal": "0", "creditsTotal": "0",
                "taxesInclusiveTotal": "0", "taxesExclusiveTotal": "0", "taxesTotal": "0",
                "total": "18.5"
            }
        })
    );
}

/// Progressive billing changes when a period is billed, not what: however the period's usage
/// (1,500) is cut into parts, each rated after the parts before it, the parts add up to the
/// whole period's rating. Graduated 1,000 @0.10 then @0.05: 125.00; 15 per started 1,000:
/// 30.00; 0.10 with a maximum of 100: 100.00; 0.02 with a minimum of 100: 100.00.
#[test]
fn parts_of_a_period_add_up_to_the_whole() {
    let usd = usd();
    let package = Price::Package(crate::billing::price::PackagePrice {
        amount: d("15"),
        quantity_per_package: d("1000"),
        commitments: Commitments::default(),
    });
    let graduated = tiered(
        TieredMode::Graduated,
        vec![
            tier(Some("1000"), None, Some("0.10")),
            tier(None, None, Some("0.05")),
        ],
    );
    let cases = [
        (graduated, "125.00"),
        (package, "30.00"),
        (unit("0.10", None, Some("100")), "100.00"),
        (unit("0.02", Some("100"), None), "100.00"),
    ];
    let cuts: [&[(u32, &str)]; 3] = [
        &[(1, "1500")],
        &[(1, "600"), (16, "900")],
        &[(1, "200"), (11, "400"), (21, "900")],
    ];
    for (price, whole) in &cases {
        for parts in cuts {
            let (mut before, mut billed, mut total) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
            for (i, (from, quantity)) in parts.iter().enumerate() {
                let to = parts.get(i + 1).map(|(next, _)| *next);
                let part = split(
                    input(price, &usd, quantity),
                    *from,
                    to,
                    &before.to_string(),
                    &billed.to_string(),
                );
                let rating = rate(&part).unwrap();
                before += d(quantity);
                billed += rating.totals.amount;
                total += rating.totals.total;
            }
            assert_eq!(total, d(whole), "{price:?} cut {parts:?}");
        }
    }
}
