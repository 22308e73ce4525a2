//! Rating stored lines (the engine's `billing::rating`) and turning rated lines into the
//! invoice items the Stripe sync writes. Pure: no IO.

use metron_connectors::stripe::TaxBehavior as StripeTaxBehavior;
use metron_connectors::stripe::sync::{LineToSync, LineType};
use metron_engine::billing::rating::{RatingInput, Totals as RatedTotals, rate};
use metron_engine::billing::{Currency, Period, round_to_minor_units};
use metron_storage::invoices::{DetailedLine, Line, Totals};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;

fn totals(t: &RatedTotals) -> Totals {
    Totals {
        amount: t.amount,
        charges_total: t.charges_total,
        discounts_total: t.discounts_total,
        credits_total: t.credits_total,
        taxes_inclusive_total: t.taxes_inclusive_total,
        taxes_exclusive_total: t.taxes_exclusive_total,
        taxes_total: t.taxes_total,
        total: t.total,
    }
}

/// Rates one line in place: its detailed lines (children, with ids stable across ratings)
/// and its totals. A line without a price rates to zero.
pub fn rate_line(line: &mut Line) -> Result<(), String> {
    let currency = Currency::lookup(&line.currency).map_err(|e| e.to_string())?;
    let Some(price) = line.rate_card.price() else {
        line.children.clear();
        line.totals = Totals::default();
        return Ok(());
    };
    let period = Period {
        from: line.period.from,
        to: line.period.to,
    };
    // A part of a split line group is rated within the group's whole period, after the usage
    // and the amounts of the parts before it (OpenMeter's progressive billing).
    let (billing_period, pre_quantity, billed) = match &line.split {
        Some(split) => (
            Period {
                from: split.group_period.from,
                to: split.group_period.to,
            },
            split
                .metered_pre_line_period_quantity
                .unwrap_or(Decimal::ZERO),
            split.previously_billed_amount,
        ),
        None => (period, Decimal::ZERO, Decimal::ZERO),
    };
    let quantity = line.quantity.unwrap_or(Decimal::ZERO);
    let correlation = line
        .subscription
        .as_ref()
        .map_or(line.id.as_str(), |s| s.item_id.as_str());
    let input = RatingInput {
        name: &line.name,
        price: &price,
        discounts: line.rate_card.view().discounts,
        discount_correlation_id: correlation,
        currency: &currency,
        quantity,
        pre_line_period_quantity: pre_quantity,
        previously_billed_amount: billed,
        service_period: period,
        billing_period,
        pro_rating_full_period: line.pro_rating_full_period.map(|p| Period {
            from: p.from,
            to: p.to,
        }),
    };
    let rated = rate(&input).map_err(|e| e.to_string())?;
    line.children = rated
        .detailed_lines
        .iter()
        .map(|d| DetailedLine {
            id: derived_id(&line.id, &d.child_unique_reference_id),
            rated: serde_json::to_value(d).unwrap_or(Value::Null),
            totals: totals(&d.totals),
        })
        .collect();
    line.totals = totals(&rated.totals);
    if let Some(split) = &mut line.split {
        split.pre_line_period_quantity = Some(rated.pre_line_period_quantity);
    }
    Ok(())
}

/// Crockford's base 32, the alphabet of ULIDs.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The id of a part of `parent` (a detailed line of a line, a discount of a detailed line):
/// shaped like a ULID, as the API's ids are (`^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$`),
/// and the same every time for the same parent and part, so that rating a line again keeps
/// its children's ids (and their Stripe items). The parent's time part when the parent is a
/// ULID, then 80 bits of SHA-256 over both.
pub fn derived_id(parent: &str, part: &str) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update((parent.len() as u64).to_le_bytes());
    hasher.update(parent.as_bytes());
    hasher.update(part.as_bytes());
    let hash = hasher.finalize();
    let mut bits = hash
        .iter()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    let mut out = vec![b'0'; 26];
    for slot in out.iter_mut().rev() {
        *slot = CROCKFORD[(bits & 31) as usize];
        bits >>= 5;
    }
    let time = parent.get(..10).filter(|t| {
        parent.len() == 26
            && t.bytes()
                .all(|b| CROCKFORD.contains(&b.to_ascii_uppercase()))
            && matches!(t.as_bytes()[0], b'0'..=b'7')
    });
    // Without it the first character holds the top 3 of 128 bits: 0 to 7, as a ULID's.
    if let Some(t) = time {
        out[..10].copy_from_slice(t.to_ascii_uppercase().as_bytes());
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Minor units of an amount already rounded to the currency (`round(total × 10^subunits)`,
/// half away from zero as OpenMeter's Stripe app does).
pub fn minor_units(amount: Decimal, currency: &Currency) -> Result<i64, String> {
    let rounded = round_to_minor_units(amount, currency);
    let scaled = rounded * Decimal::from(10_i64.pow(currency.subunits));
    i64::try_from(scaled.trunc().mantissa() / 10_i128.pow(scaled.trunc().scale()))
        .map_err(|_| format!("amount {amount} does not fit in minor units"))
}

/// A quantity as OpenMeter's Stripe app prints it (`FormatQuantity`, English): thousands
/// separators, and two decimals when it is fractional.
fn thousands(n: Decimal) -> String {
    let n = if n.fract().is_zero() {
        n.trunc()
    } else {
        n.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
    };
    let digits = n.trunc().abs().to_string();
    let mut out = String::new();
    if n.is_sign_negative() && !n.is_zero() {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if !n.fract().is_zero() {
        let cents = format!("{:.2}", n.fract().abs());
        out.push_str(cents.trim_start_matches('0'));
    }
    out
}

/// OpenMeter's item description: the name, and ` ({qty} x {unit price})` when the quantity
/// is above one or negative (`appinvoice.go`).
fn description(name: &str, rated: &Value, currency: &Currency) -> String {
    let qty = rated
        .get("quantity")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Decimal>().ok())
        .unwrap_or(Decimal::ONE);
    let unit = rated
        .get("perUnitAmount")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Decimal>().ok())
        .unwrap_or(Decimal::ZERO);
    if (Decimal::ZERO..=Decimal::ONE).contains(&qty) {
        name.to_owned()
    } else {
        format!(
            "{name} ({} x {}{})",
            thousands(qty),
            currency.symbol,
            unit.normalize()
        )
    }
}

/// A discount item's description: the detailed line's name, and the discount's own
/// description in brackets when it has one (`getDiscountLineName`).
fn discount_description(name: &str, discount: &Value) -> String {
    match discount.get("description").and_then(Value::as_str) {
        Some(text) => format!("{name} ({text})"),
        None => name.to_owned(),
    }
}

/// The Stripe invoice items of rated lines, in invoice order: for each detailed line its
/// amount discounts (negative), then the line itself (its amount before discounts).
pub fn items(lines: &[Line]) -> Result<(Vec<LineToSync>, i64), String> {
    let mut out = Vec::new();
    let mut total = 0_i64;
    for line in lines {
        let currency = Currency::lookup(&line.currency).map_err(|e| e.to_string())?;
        let tax_behavior = line
            .rate_card
            .view()
            .tax_config
            .and_then(|t| serde_json::to_value(t).ok())
            .and_then(|v| v.get("behavior").and_then(Value::as_str).map(str::to_owned))
            .and_then(|b| match b.as_str() {
                "inclusive" => Some(StripeTaxBehavior::Inclusive),
                "exclusive" => Some(StripeTaxBehavior::Exclusive),
                _ => None,
            });
        let tax_code = line
            .rate_card
            .view()
            .tax_config
            .and_then(|t| serde_json::to_value(t).ok())
            .and_then(|v| {
                v.pointer("/stripe/code")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        for child in &line.children {
            let name = child
                .rated
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(&line.name)
                .to_owned();
            let (from, to) = child
                .rated
                .get("period")
                .and_then(|p| serde_json::from_value::<Period>(p.clone()).ok())
                .map_or((line.period.from, line.period.to), |p| (p.from, p.to));
            if let Some(Value::Array(discounts)) = child.rated.get("amountDiscounts") {
                for (i, d) in discounts.iter().enumerate() {
                    let amount = d
                        .get("amount")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<Decimal>().ok())
                        .unwrap_or(Decimal::ZERO);
                    let minor = minor_units(amount, &currency)?;
                    if minor == 0 {
                        continue;
                    }
                    out.push(LineToSync {
                        line_id: derived_id(&child.id, &format!("discount-{i}")),
                        line_type: LineType::Discount,
                        amount_minor: -minor,
                        description: discount_description(&name, d),
                        period_start: from,
                        period_end: to,
                        tax_behavior,
                        tax_code: tax_code.clone(),
                    });
                    total -= minor;
                }
            }
            let amount = if child.totals.amount.is_zero() {
                child.totals.charges_total
            } else {
                child.totals.amount
            };
            let minor = minor_units(amount, &currency)?;
            out.push(LineToSync {
                line_id: child.id.clone(),
                line_type: LineType::Line,
                amount_minor: minor,
                description: description(&name, &child.rated, &currency),
                period_start: from,
                period_end: to,
                tax_behavior,
                tax_code: tax_code.clone(),
            });
            total += minor;
        }
    }
    Ok((out, total))
}

#[cfg(test)]
mod tests {
    #[test]
    fn derived_ids_are_ulid_shaped_and_stable() {
        let ulid_like = |id: &str| {
            id.len() == 26
                && matches!(id.as_bytes()[0], b'0'..=b'7')
                && id
                    .bytes()
                    .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b))
        };
        let parent = "01JD6Z755AFWAKHE12NY0CQ9FH";
        let a = derived_id(parent, "unit-price-usage");
        assert!(ulid_like(&a), "{a}");
        assert_eq!(&a[..10], &parent[..10], "the parent's time part");
        assert_eq!(a, derived_id(parent, "unit-price-usage"));
        assert_ne!(a, derived_id(parent, "min-spend"));
        assert_ne!(
            a,
            derived_id("01JD6Z755AFWAKHE12NY0CQ9FJ", "unit-price-usage")
        );
        // A parent that is not a ULID (or a derived id's own parts) still gives one.
        for parent in ["line-1", "", "ZZZZZZZZZZZZZZZZZZZZZZZZZZ", &a] {
            let id = derived_id(parent, "discount-0");
            assert!(ulid_like(&id), "{parent:?} -> {id}");
        }
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn minor_units_and_thousands() {
        let usd = Currency::lookup("USD").unwrap();
        assert_eq!(minor_units(Decimal::new(7725, 2), &usd).unwrap(), 7725);
        assert_eq!(minor_units(Decimal::new(-1005, 3), &usd).unwrap(), -101);
        let jpy = Currency::lookup("JPY").unwrap();
        assert_eq!(minor_units(Decimal::new(1005, 1), &jpy).unwrap(), 101);
        assert_eq!(thousands(Decimal::from(103_000_025)), "103,000,025");
        assert_eq!(thousands(Decimal::new(3220, 2)), "32.20");
    }

    // OpenMeter's item description adds ` ({qty} x {unit})` only when the quantity is above
    // one or negative (`appinvoice.go`): a fractional or zero quantity shows the name alone.
    // A quantity is printed with thousands separators, and with two decimals when fractional.
    #[test]
    fn description_suffix_only_above_one_or_negative() {
        let usd = Currency::lookup("USD").unwrap();
        let rated = |q: &str| json!({"quantity": q, "perUnitAmount": "0.15"});
        for (quantity, expected) in [
            ("0.5", "Calls"),
            ("0", "Calls"),
            ("1", "Calls"),
            ("333", "Calls (333 x $0.15)"),
            ("1.5", "Calls (1.50 x $0.15)"),
            ("1234.567", "Calls (1,234.57 x $0.15)"),
            ("-2", "Calls (-2 x $0.15)"),
        ] {
            assert_eq!(
                description("Calls", &rated(quantity), &usd),
                expected,
                "{quantity}"
            );
        }
    }

    // A discount item is named after its line, with the discount's description in brackets
    // when it has one; a percentage discount has none (`getDiscountLineName`).
    #[test]
    fn discount_item_names() {
        assert_eq!(
            discount_description("Calls: usage in period", &json!({"amount": "5"})),
            "Calls: usage in period"
        );
        assert_eq!(
            discount_description(
                "Storage",
                &json!({"amount": "50", "description": "Maximum spend discount for charges over 100"})
            ),
            "Storage (Maximum spend discount for charges over 100)"
        );
    }
}
