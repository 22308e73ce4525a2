//! Pricing and rating: the money side of the product catalog, pure (no IO, no clock).
//!
//! - [`price`] and [`ratecard`]: OpenMeter v1's `RateCard` JSON with its prices (flat, unit,
//!   tiered volume and graduated, dynamic, package), commitments, discounts, tax config
//!   and entitlement template, exactly as on the wire (amounts are decimal strings, read
//!   into `rust_decimal::Decimal`, written back without trailing zeros), with OpenMeter's
//!   validation rules and messages ([`issue::Issue`]).
//! - [`period`]: billing cadences (ISO-8601 durations) and the billing periods they cut
//!   from an anchor, month ends clamped per period as OpenMeter's `timeutil.Recurrence`.
//! - [`currency`]: the currencies `GET /api/v1/info/currencies` lists and the one rounding
//!   function, [`currency::round_to_minor_units`].
//! - [`rating`]: one invoice line's price, usage and period in, its detailed lines and
//!   totals out, as OpenMeter's `openmeter/billing/rating` computes them.
//!
//! **Rounding.** Money is rounded in exactly one way: to the currency's minor unit
//! (`subunits`), half away from zero, by [`currency::round_to_minor_units`] (OpenMeter:
//! `currencyx` `RoundToPrecision`, alpacadecimal `Round`). It applies when a line amount
//! is written, never to inputs: a detailed line's `per_unit × quantity`, each discount, a
//! dynamic price's amount, a flat fee (pro-rated or not), the minimum-spend top-up, the
//! maximum spend, and every total. Unit prices, quantities and the pro-rating share
//! (16 places, a ratio) keep their digits.
//!
//! **Not here, as in OpenMeter v1's rating:** taxes (totals carry zero taxes), credits
//! applied to lines, `unit_config` conversions (a v3 feature). Where this module differs
//! from OpenMeter: a flat fee that rounds to zero yields no detailed line (OpenMeter's
//! subscription sync never creates such a line), and [`currency::Currency::lookup`] also
//! knows the active ISO 4217 codes gobl lacks (not listed by the API).

pub mod currency;
pub mod issue;
pub mod numeric;
pub mod period;
pub mod price;
pub mod ratecard;
pub mod rating;

pub use currency::{CURRENCIES, Currency, round_to_minor_units};
pub use issue::Issue;
pub use period::{BillingCadence, Period, ServicePeriod};
pub use price::{
    Commitments, DynamicPrice, FlatPrice, PackagePrice, PaymentTerm, Price, PriceTier,
    TierFlatPrice, TierUnitPrice, TieredMode, TieredPrice, UnitPrice,
};
pub use ratecard::{
    Discounts, EntitlementTemplate, PercentageDiscount, ProRatingConfig, RateCard, RateCardFlatFee,
    RateCardUsageBased, TaxConfig, UsageDiscount,
};
pub use rating::{DetailedLine, Rating, RatingInput, Totals, rate};
