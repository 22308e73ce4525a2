//! Rating: one invoice line's price and usage in, its detailed lines and totals out, as
//! OpenMeter's `openmeter/billing/rating/service` computes them.
//!
//! The pipeline (OpenMeter's `priceMutator`):
//! 1. the usage discount takes free units off the usage, earlier split lines first;
//! 2. the pricer of the price type writes the detailed lines (`rate/*.go`);
//! 3. the percentage discount, the maximum spend (progressive: counting what earlier split
//!    lines billed) and, on the period's last line, the minimum spend are applied;
//! 4. each detailed line gets its totals, every amount rounded by
//!    [`round_to_minor_units`] when written.
//!
//! A flat price only goes through the percentage discount; usage discounts and
//! commitments do not apply to it.

use rust_decimal::Decimal;
use serde::Serialize;

use super::currency::{Currency, round_to_minor_units};
use super::issue::Issue;
use super::numeric;
use super::period::Period;
use super::price::{FlatPrice, PackagePrice, PaymentTerm, Price, TieredMode, TieredPrice};
use super::ratecard::Discounts;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid price: {}", issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidPrice { issues: Vec<Issue> },
    #[error("{field} must not be negative")]
    NegativeQuantity { field: &'static str },
    #[error("service period [{}, {}) is not inside billing period [{}, {})", service.from, service.to, billing.from, billing.to)]
    ServiceOutsideBilling { service: Period, billing: Period },
    #[error("a volume tiered price cannot be billed progressively")]
    VolumeSplitNotSupported,
    #[error("an amount is too large")]
    Overflow,
}

/// One line to rate. Usage-based lines split by progressive billing are rated one split
/// at a time: `service_period` is this split, `billing_period` the whole period.
#[derive(Clone, Debug)]
pub struct RatingInput<'a> {
    /// The line's name (the rate card's `name`), prefix of the detailed lines' names.
    pub name: &'a str,
    pub price: &'a Price,
    /// The rate card's discounts.
    pub discounts: Option<&'a Discounts>,
    /// Links rate-card discounts across split lines (`rateCardDiscount/correlationID=…`).
    pub discount_correlation_id: &'a str,
    pub currency: &'a Currency,
    /// Metered usage in `service_period` (ignored by flat prices).
    pub quantity: Decimal,
    /// Metered usage earlier in the billing period, on previous split lines
    /// (OpenMeter's `preLinePeriodQuantity`); 0 for the first or only line.
    pub pre_line_period_quantity: Decimal,
    /// What previous split lines of this billing period billed: the sum of their
    /// `totals.amount` (OpenMeter's `SumNetAmount`, charges excluded); 0 for the first line.
    pub previously_billed_amount: Decimal,
    pub service_period: Period,
    /// The whole billing period; equal to `service_period` unless progressively billed.
    pub billing_period: Period,
    /// For a flat fee over part of its cadence period with pro-rating on: the full
    /// period. The amount becomes `amount × served/full` (OpenMeter's subscription sync).
    pub pro_rating_full_period: Option<Period>,
}

/// The rated line: its detailed lines and, summed, its totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rating {
    pub detailed_lines: Vec<DetailedLine>,
    /// Usage billed on this line after the usage discount.
    #[serde(with = "numeric")]
    pub quantity: Decimal,
    /// Usage of previous split lines after the usage discount.
    #[serde(with = "numeric")]
    pub pre_line_period_quantity: Decimal,
    /// The usage discount applied to this line, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_discount: Option<UsageDiscountApplied>,
    pub totals: Totals,
}

/// OpenMeter's detailed line (`InvoiceDetailedLine`, `rating.DetailedLine`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DetailedLine {
    pub name: String,
    #[serde(with = "numeric")]
    pub quantity: Decimal,
    #[serde(with = "numeric")]
    pub per_unit_amount: Decimal,
    /// Stable per parent line: `unit-price-usage`, `graduated-tiered-2-flat-price`, `min-spend`…
    #[serde(rename = "childUniqueReferenceID")]
    pub child_unique_reference_id: String,
    /// The service period; the whole billing period for a minimum-spend line.
    pub period: Period,
    pub payment_term: PaymentTerm,
    pub category: Category,
    pub amount_discounts: Vec<AmountDiscount>,
    pub totals: Totals,
}

/// `regular` usage or flat fees; `commitment` for the minimum-spend top-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Regular,
    Commitment,
}

/// An amount taken off a detailed line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AmountDiscount {
    #[serde(with = "numeric")]
    pub amount: Decimal,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "childUniqueReferenceID")]
    pub child_unique_reference_id: String,
    pub reason: DiscountReason,
}

/// Why a discount applies (OpenMeter's `BillingDiscountReason`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DiscountReason {
    MaximumSpend,
    #[serde(rename_all = "camelCase")]
    RatecardPercentage {
        #[serde(with = "numeric::number")]
        percentage: Decimal,
        correlation_id: String,
    },
    #[serde(rename_all = "camelCase")]
    RatecardUsage {
        #[serde(with = "numeric")]
        quantity: Decimal,
        correlation_id: String,
    },
}

/// Free usage taken off this line (`InvoiceLineUsageDiscount`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageDiscountApplied {
    #[serde(with = "numeric")]
    pub quantity: Decimal,
    /// Free usage used up by previous split lines, when any.
    #[serde(with = "numeric::option", skip_serializing_if = "Option::is_none")]
    pub pre_line_period_quantity: Option<Decimal>,
    #[serde(rename = "childUniqueReferenceID")]
    pub child_unique_reference_id: String,
    pub reason: DiscountReason,
}

/// OpenMeter's `InvoiceTotals`; every field rounded to the currency's minor unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    #[serde(with = "numeric")]
    pub amount: Decimal,
    #[serde(with = "numeric")]
    pub charges_total: Decimal,
    #[serde(with = "numeric")]
    pub discounts_total: Decimal,
    #[serde(with = "numeric")]
    pub credits_total: Decimal,
    #[serde(with = "numeric")]
    pub taxes_inclusive_total: Decimal,
    #[serde(with = "numeric")]
    pub taxes_exclusive_total: Decimal,
    #[serde(with = "numeric")]
    pub taxes_total: Decimal,
    #[serde(with = "numeric")]
    pub total: Decimal,
}

pub const USAGE_KEY: &str = "usage";
pub const MIN_SPEND_KEY: &str = "min-spend";
pub const FLAT_PRICE_KEY: &str = "flat-price";
pub const UNIT_PRICE_USAGE_KEY: &str = "unit-price-usage";
pub const VOLUME_FLAT_PRICE_KEY: &str = "volume-flat-price";
pub const VOLUME_UNIT_PRICE_KEY: &str = "volume-tiered-price";
pub const MAXIMUM_SPEND_KEY: &str = "line_maximum_spend";

/// `graduated-tiered-{tier}-price-usage`, tiers counted from 1.
pub fn graduated_usage_key(tier: usize) -> String {
    format!("graduated-tiered-{tier}-price-usage")
}

/// `graduated-tiered-{tier}-flat-price`, tiers counted from 1.
pub fn graduated_flat_key(tier: usize) -> String {
    format!("graduated-tiered-{tier}-flat-price")
}

/// `rateCardDiscount/correlationID={id}`.
pub fn rate_card_discount_key(correlation_id: &str) -> String {
    format!("rateCardDiscount/correlationID={correlation_id}")
}

/// Rates one line. Fails on an invalid price, negative usage, a service period outside
/// the billing period, a progressively billed volume price, or overflow; never panics.
pub fn rate(input: &RatingInput<'_>) -> Result<Rating> {
    check_input(input)?;
    let position = Position::of(input);
    if let Price::Flat(flat) = input.price {
        let lines = rate_flat(input, flat, position)?;
        let lines = apply_percentage(input, lines)?;
        return finish(
            input,
            lines,
            input.quantity,
            input.pre_line_period_quantity,
            None,
        );
    }
    let usage = apply_usage_discount(input);
    let lines = match input.price {
        Price::Flat(_) => Vec::new(),
        Price::Unit(p) => rate_unit(input, p.amount, usage.quantity),
        Price::Tiered(p) if p.mode == TieredMode::Volume => {
            rate_volume(input, p, &usage, position)?
        }
        Price::Tiered(p) => rate_graduated(input, p, &usage, position)?,
        Price::Dynamic(p) => rate_dynamic(input, p.multiplier, usage.quantity)?,
        Price::Package(p) => rate_package(input, p, &usage, position)?,
    };
    let lines = apply_percentage(input, lines)?;
    let commitments = input.price.commitments();
    let lines = match commitments.maximum_amount {
        Some(max) => apply_maximum(input, lines, max)?,
        None => lines,
    };
    let lines = match commitments.minimum_amount {
        Some(min) if position.last => apply_minimum(input, lines, min)?,
        _ => lines,
    };
    finish(
        input,
        lines,
        usage.quantity,
        usage.pre_line_period_quantity,
        usage.applied,
    )
}

/// Where the line sits in its billing period.
#[derive(Clone, Copy, Debug)]
struct Position {
    first: bool,
    last: bool,
}

impl Position {
    fn of(input: &RatingInput<'_>) -> Position {
        Position {
            first: input.service_period.from == input.billing_period.from,
            last: input.service_period.to == input.billing_period.to,
        }
    }
}

fn check_input(input: &RatingInput<'_>) -> Result<()> {
    let mut issues = Vec::new();
    input.price.check(&mut issues);
    if let Some(discounts) = input.discounts {
        if discounts
            .percentage
            .as_ref()
            .is_some_and(|p| p.percentage < Decimal::ZERO || p.percentage > Decimal::ONE_HUNDRED)
        {
            issues.push(Issue::PercentageOutOfRange);
        }
        if discounts
            .usage
            .as_ref()
            .is_some_and(|u| u.quantity < Decimal::ZERO)
        {
            issues.push(Issue::UsageDiscountNegative);
        }
    }
    if !issues.is_empty() {
        return Err(Error::InvalidPrice { issues });
    }
    for (field, value) in [
        ("quantity", input.quantity),
        ("pre_line_period_quantity", input.pre_line_period_quantity),
        ("previously_billed_amount", input.previously_billed_amount),
    ] {
        if value < Decimal::ZERO {
            return Err(Error::NegativeQuantity { field });
        }
    }
    let (service, billing) = (input.service_period, input.billing_period);
    if service.from < billing.from || service.to > billing.to || service.to <= service.from {
        return Err(Error::ServiceOutsideBilling { service, billing });
    }
    Ok(())
}

fn mul(a: Decimal, b: Decimal) -> Result<Decimal> {
    a.checked_mul(b).ok_or(Error::Overflow)
}

fn add(a: Decimal, b: Decimal) -> Result<Decimal> {
    a.checked_add(b).ok_or(Error::Overflow)
}

fn sub(a: Decimal, b: Decimal) -> Result<Decimal> {
    a.checked_sub(b).ok_or(Error::Overflow)
}

/// A regular, in-arrears detailed line over the service period.
fn line(
    input: &RatingInput<'_>,
    name: String,
    quantity: Decimal,
    per_unit: Decimal,
    key: String,
) -> DetailedLine {
    DetailedLine {
        name,
        quantity,
        per_unit_amount: per_unit,
        child_unique_reference_id: key,
        period: input.service_period,
        payment_term: PaymentTerm::InArrears,
        category: Category::Regular,
        amount_discounts: Vec::new(),
        totals: Totals::default(),
    }
}

/// A flat fee: once, on the period's first line (in advance) or last line (in arrears),
/// pro-rated when asked; no line when its amount rounds to zero.
fn rate_flat(
    input: &RatingInput<'_>,
    flat: &FlatPrice,
    position: Position,
) -> Result<Vec<DetailedLine>> {
    let due = match flat.payment_term {
        PaymentTerm::InAdvance => position.first,
        PaymentTerm::InArrears => position.last,
    };
    if !due {
        return Ok(Vec::new());
    }
    let amount = match &input.pro_rating_full_period {
        Some(full) => mul(flat.amount, input.service_period.share_of(full))?,
        None => flat.amount,
    };
    let amount = round_to_minor_units(amount, input.currency);
    if amount.is_zero() {
        return Ok(Vec::new());
    }
    let mut flat_line = line(
        input,
        input.name.to_owned(),
        Decimal::ONE,
        amount,
        FLAT_PRICE_KEY.to_owned(),
    );
    flat_line.payment_term = flat.payment_term;
    Ok(vec![flat_line])
}

/// Usage after the usage discount (OpenMeter's `ApplyUsageDiscount`).
struct Usage {
    quantity: Decimal,
    pre_line_period_quantity: Decimal,
    applied: Option<UsageDiscountApplied>,
}

/// The free units go to the earliest usage of the period: previous split lines use them
/// up first, this line gets what remains.
fn apply_usage_discount(input: &RatingInput<'_>) -> Usage {
    let (quantity, pre) = (input.quantity, input.pre_line_period_quantity);
    let Some(free) = input.discounts.and_then(|d| d.usage.as_ref()) else {
        return Usage {
            quantity,
            pre_line_period_quantity: pre,
            applied: None,
        };
    };
    let used_before = free.quantity.min(pre);
    let used_now = (free.quantity - used_before).min(quantity);
    let applied = (!used_now.is_zero()).then(|| UsageDiscountApplied {
        quantity: used_now,
        pre_line_period_quantity: (!used_before.is_zero()).then_some(used_before),
        child_unique_reference_id: rate_card_discount_key(input.discount_correlation_id),
        reason: DiscountReason::RatecardUsage {
            quantity: free.quantity,
            correlation_id: input.discount_correlation_id.to_owned(),
        },
    });
    Usage {
        quantity: quantity - used_now,
        pre_line_period_quantity: pre - used_before,
        applied,
    }
}

fn rate_unit(input: &RatingInput<'_>, amount: Decimal, quantity: Decimal) -> Vec<DetailedLine> {
    if quantity <= Decimal::ZERO {
        return Vec::new();
    }
    let name = format!("{}: usage in period", input.name);
    vec![line(
        input,
        name,
        quantity,
        amount,
        UNIT_PRICE_USAGE_KEY.to_owned(),
    )]
}

/// The usage times the multiplier, rounded, as one line of quantity 1.
fn rate_dynamic(
    input: &RatingInput<'_>,
    multiplier: Decimal,
    quantity: Decimal,
) -> Result<Vec<DetailedLine>> {
    if quantity <= Decimal::ZERO {
        return Ok(Vec::new());
    }
    let amount = round_to_minor_units(mul(quantity, multiplier)?, input.currency);
    let name = format!("{}: usage in period", input.name);
    Ok(vec![line(
        input,
        name,
        Decimal::ONE,
        amount,
        USAGE_KEY.to_owned(),
    )])
}

/// Started packages up to the end of this line, minus those billed by earlier lines.
fn rate_package(
    input: &RatingInput<'_>,
    price: &PackagePrice,
    usage: &Usage,
    position: Position,
) -> Result<Vec<DetailedLine>> {
    let total = add(usage.quantity, usage.pre_line_period_quantity)?;
    let before = if position.first {
        Decimal::ZERO
    } else {
        packages(usage.pre_line_period_quantity, price.quantity_per_package)?
    };
    let billed = sub(packages(total, price.quantity_per_package)?, before)?;
    if billed.is_zero() {
        return Ok(Vec::new());
    }
    let name = format!("{}: usage in period", input.name);
    Ok(vec![line(
        input,
        name,
        billed,
        price.amount,
        USAGE_KEY.to_owned(),
    )])
}

/// Packages needed for `quantity`: every started package counts.
fn packages(quantity: Decimal, size: Decimal) -> Result<Decimal> {
    let whole = quantity.checked_div(size).ok_or(Error::Overflow)?.floor();
    let remainder = quantity.checked_rem(size).ok_or(Error::Overflow)?;
    Ok(if remainder.is_zero() {
        whole
    } else {
        add(whole, Decimal::ONE)?
    })
}

/// The tier the whole quantity falls in prices all of it; only on the period's last line.
fn rate_volume(
    input: &RatingInput<'_>,
    price: &TieredPrice,
    usage: &Usage,
    position: Position,
) -> Result<Vec<DetailedLine>> {
    if !position.last {
        return Ok(Vec::new());
    }
    if !usage.pre_line_period_quantity.is_zero() {
        return Err(Error::VolumeSplitNotSupported);
    }
    let tiers = price.sorted_tiers();
    let quantity = usage.quantity;
    let Some((index, tier)) = tiers
        .iter()
        .enumerate()
        .find(|(_, t)| t.up_to_amount.is_none_or(|up_to| quantity <= up_to))
    else {
        return Err(Error::InvalidPrice {
            issues: vec![Issue::TiersNoOpenEnded],
        });
    };
    let mut out = Vec::with_capacity(2);
    if let Some(flat) = &tier.flat_price {
        let name = format!("{}: flat price for tier {}", input.name, index + 1);
        out.push(line(
            input,
            name,
            Decimal::ONE,
            flat.amount,
            VOLUME_FLAT_PRICE_KEY.to_owned(),
        ));
    }
    if let Some(unit) = &tier.unit_price
        && !quantity.is_zero()
    {
        let name = format!("{}: unit price for tier {}", input.name, index + 1);
        out.push(line(
            input,
            name,
            quantity,
            unit.amount,
            VOLUME_UNIT_PRICE_KEY.to_owned(),
        ));
    }
    Ok(out)
}

/// A slice of one tier: `[from, to]` of the cumulative period usage.
struct TierRange {
    index: usize,
    from: Decimal,
    to: Decimal,
    /// The slice starts at the tier's lower bound (the tier's flat price is due here).
    at_tier_start: bool,
}

/// Each tier prices the part of the period's usage inside it; this line gets the parts
/// between the usage before it and the usage at its end. A tier's flat price is billed
/// by the line whose usage enters the tier (tier 1's by the period's first line).
fn rate_graduated(
    input: &RatingInput<'_>,
    price: &TieredPrice,
    usage: &Usage,
    position: Position,
) -> Result<Vec<DetailedLine>> {
    let from = usage.pre_line_period_quantity;
    let to = add(from, usage.quantity)?;
    let tiers = price.sorted_tiers();
    let ranges = tier_ranges(&tiers, from, to);
    let mut out = Vec::with_capacity(2 * tiers.len());
    let mut emitting = false;
    for range in &ranges {
        emitting |= range.from == from;
        if emitting && let Some(tier) = tiers.get(range.index) {
            let number = range.index + 1;
            if let Some(unit) = &tier.unit_price {
                let name = format!("{}: usage price for tier {number}", input.name);
                let quantity = sub(range.to, range.from)?;
                out.push(line(
                    input,
                    name,
                    quantity,
                    unit.amount,
                    graduated_usage_key(number),
                ));
            }
            let flat_due = range.index > 0 || position.first;
            if let Some(flat) = &tier.flat_price
                && range.at_tier_start
                && flat_due
            {
                let name = format!("{}: flat price for tier {number}", input.name);
                out.push(line(
                    input,
                    name,
                    Decimal::ONE,
                    flat.amount,
                    graduated_flat_key(number),
                ));
            }
        }
        if range.to >= to {
            break;
        }
    }
    Ok(out)
}

/// The tiers cut into slices at `from` and `to` (OpenMeter's `TieredPriceCalculator`):
/// ascending, non-overlapping, one slice starting at `from` and one ending at `to`.
fn tier_ranges(tiers: &[super::price::PriceTier], from: Decimal, to: Decimal) -> Vec<TierRange> {
    let mut out = Vec::with_capacity(tiers.len() + 2);
    let mut lower = Decimal::ZERO;
    for (index, tier) in tiers.iter().enumerate() {
        if lower >= to {
            break;
        }
        let upper = tier.up_to_amount.unwrap_or(to);
        let mut pending = TierRange {
            index,
            from: lower,
            to: upper,
            at_tier_start: true,
        };
        for cut in [from, to] {
            if pending.from < cut && pending.to > cut {
                out.push(TierRange {
                    index,
                    from: pending.from,
                    to: cut,
                    at_tier_start: pending.at_tier_start,
                });
                pending = TierRange {
                    index,
                    from: cut,
                    to: pending.to,
                    at_tier_start: false,
                };
            }
        }
        out.push(pending);
        lower = upper;
    }
    if to.is_zero() {
        out.push(TierRange {
            index: 0,
            from: Decimal::ZERO,
            to: Decimal::ZERO,
            at_tier_start: true,
        });
    }
    out
}

/// `round(per_unit × quantity)` minus the line's rounded discounts (OpenMeter's `TotalAmount`).
fn line_total(line: &DetailedLine, currency: &Currency) -> Result<Decimal> {
    let gross = round_to_minor_units(mul(line.per_unit_amount, line.quantity)?, currency);
    sub(gross, discounts_sum(line, currency)?)
}

fn discounts_sum(line: &DetailedLine, currency: &Currency) -> Result<Decimal> {
    line.amount_discounts
        .iter()
        .try_fold(Decimal::ZERO, |sum, d| {
            add(sum, round_to_minor_units(d.amount, currency))
        })
}

/// `percentage` % of each line's total, rounded, as a discount on that line.
fn apply_percentage(
    input: &RatingInput<'_>,
    mut lines: Vec<DetailedLine>,
) -> Result<Vec<DetailedLine>> {
    let Some(percentage) = input.discounts.and_then(|d| d.percentage.as_ref()) else {
        return Ok(lines);
    };
    for line in &mut lines {
        let total = line_total(line, input.currency)?;
        let off = mul(total, percentage.percentage)?
            .checked_div(Decimal::ONE_HUNDRED)
            .ok_or(Error::Overflow)?;
        line.amount_discounts.push(AmountDiscount {
            amount: round_to_minor_units(off, input.currency),
            description: None,
            child_unique_reference_id: rate_card_discount_key(input.discount_correlation_id),
            reason: DiscountReason::RatecardPercentage {
                percentage: percentage.percentage,
                correlation_id: input.discount_correlation_id.to_owned(),
            },
        });
    }
    Ok(lines)
}

/// Caps what the billing period bills at `max` by discounting, line by line, whatever
/// goes over it (OpenMeter's `MaxAmountCommitment`, `AddDiscountForOverage`).
fn apply_maximum(
    input: &RatingInput<'_>,
    mut lines: Vec<DetailedLine>,
    max: Decimal,
) -> Result<Vec<DetailedLine>> {
    let currency = input.currency;
    let max = round_to_minor_units(max, currency);
    let mut billed = input.previously_billed_amount;
    for line in &mut lines {
        let total = line_total(line, currency)?;
        let billable = add(round_to_minor_units(billed, currency), total)?;
        if billable > max {
            let amount = if billed >= max {
                total
            } else {
                sub(billable, max)?
            };
            line.amount_discounts.push(AmountDiscount {
                amount,
                description: Some(format!(
                    "Maximum spend discount for charges over {}",
                    numeric::text(&max)
                )),
                child_unique_reference_id: MAXIMUM_SPEND_KEY.to_owned(),
                reason: DiscountReason::MaximumSpend,
            });
        }
        billed = add(billed, line_total(line, currency)?)?;
    }
    Ok(lines)
}

/// On the period's last line, tops what the period billed up to `min` with a
/// commitment line over the whole billing period (OpenMeter's `MinAmountCommitment`).
fn apply_minimum(
    input: &RatingInput<'_>,
    mut lines: Vec<DetailedLine>,
    min: Decimal,
) -> Result<Vec<DetailedLine>> {
    let currency = input.currency;
    let mut billed = input.previously_billed_amount;
    for line in &lines {
        billed = add(billed, line_total(line, currency)?)?;
    }
    if billed < min {
        let top_up = round_to_minor_units(sub(min, billed)?, currency);
        lines.push(DetailedLine {
            name: format!("{}: minimum spend", input.name),
            quantity: Decimal::ONE,
            per_unit_amount: top_up,
            child_unique_reference_id: MIN_SPEND_KEY.to_owned(),
            period: input.billing_period,
            payment_term: PaymentTerm::InArrears,
            category: Category::Commitment,
            amount_discounts: Vec::new(),
            totals: Totals::default(),
        });
    }
    Ok(lines)
}

/// Writes every detailed line's totals and their sum (OpenMeter's `getTotalsFromDetailedLines`).
fn finish(
    input: &RatingInput<'_>,
    mut lines: Vec<DetailedLine>,
    quantity: Decimal,
    pre_line_period_quantity: Decimal,
    usage_discount: Option<UsageDiscountApplied>,
) -> Result<Rating> {
    let currency = input.currency;
    let mut sum = Totals::default();
    for line in &mut lines {
        let amount = round_to_minor_units(mul(line.per_unit_amount, line.quantity)?, currency);
        let discounts = round_to_minor_units(discounts_sum(line, currency)?, currency);
        let (regular, charges) = match line.category {
            Category::Regular => (amount, Decimal::ZERO),
            Category::Commitment => (Decimal::ZERO, amount),
        };
        line.totals = Totals {
            amount: regular,
            charges_total: charges,
            discounts_total: discounts,
            total: round_to_minor_units(sub(add(regular, charges)?, discounts)?, currency),
            ..zero_totals(currency)
        };
        sum = add_totals(&sum, &line.totals)?;
    }
    let totals = round_totals(&sum, currency);
    Ok(Rating {
        detailed_lines: lines,
        quantity,
        pre_line_period_quantity,
        usage_discount,
        totals,
    })
}

fn zero_totals(currency: &Currency) -> Totals {
    round_totals(&Totals::default(), currency)
}

fn add_totals(a: &Totals, b: &Totals) -> Result<Totals> {
    Ok(Totals {
        amount: add(a.amount, b.amount)?,
        charges_total: add(a.charges_total, b.charges_total)?,
        discounts_total: add(a.discounts_total, b.discounts_total)?,
        credits_total: add(a.credits_total, b.credits_total)?,
        taxes_inclusive_total: add(a.taxes_inclusive_total, b.taxes_inclusive_total)?,
        taxes_exclusive_total: add(a.taxes_exclusive_total, b.taxes_exclusive_total)?,
        taxes_total: add(a.taxes_total, b.taxes_total)?,
        total: add(a.total, b.total)?,
    })
}

fn round_totals(t: &Totals, currency: &Currency) -> Totals {
    let r = |v: Decimal| round_to_minor_units(v, currency);
    Totals {
        amount: r(t.amount),
        charges_total: r(t.charges_total),
        discounts_total: r(t.discounts_total),
        credits_total: r(t.credits_total),
        taxes_inclusive_total: r(t.taxes_inclusive_total),
        taxes_exclusive_total: r(t.taxes_exclusive_total),
        taxes_total: r(t.taxes_total),
        total: r(t.total),
    }
}

#[cfg(test)]
mod tests;
