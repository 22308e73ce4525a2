//! Currencies and THE rounding of money.
//!
//! [`CURRENCIES`] is OpenMeter's `GET /api/v1/info/currencies` list; [`round_to_minor_units`]
//! is the single rounding function of the product: every amount written on an invoice line
//! goes through it.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

mod data;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("unknown currency {code:?}")]
    Unknown { code: String },
}

/// OpenMeter's `Currency`: ISO code, English name, symbol and the number of decimal
/// places of its minor unit (`subunits`: USD 2, JPY 0, KWD 3, CLF 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Currency {
    pub code: &'static str,
    pub name: &'static str,
    pub symbol: &'static str,
    pub subunits: u32,
}

/// Every currency `GET /api/v1/info/currencies` returns, in OpenMeter's order.
pub const CURRENCIES: &[Currency] = data::CURRENCIES;

impl Currency {
    /// The currency with this ISO code (exact, upper case, as the API spells it): one of
    /// [`CURRENCIES`], or an active ISO 4217 code gobl lacks (`UYW`, `VED`, `ZWG`, ...).
    ///
    /// Minor units are gobl's, as in OpenMeter, even where ISO differs (`HUF` is 0).
    pub fn lookup(code: &str) -> Result<Currency> {
        CURRENCIES
            .iter()
            .chain(data::ISO_ONLY)
            .find(|c| c.code == code)
            .copied()
            .ok_or_else(|| Error::Unknown {
                code: code.to_owned(),
            })
    }

    /// [`round_to_minor_units`] in this currency.
    pub fn round(&self, amount: Decimal) -> Decimal {
        round_to_minor_units(amount, self)
    }
}

/// Rounds `amount` to the currency's minor unit, **half away from zero**
/// (`0.125 → 0.13`, `-0.125 → -0.13`, `2.5 JPY → 3`).
///
/// This is what OpenMeter does wherever it writes a line amount: `currencyx`'s
/// `FiatCurrency.RoundToPrecision` (`pkg/currencyx/currency.go`) calls alpacadecimal's
/// `Decimal.Round(subunits)`, which rounds a remainder of half a unit or more away from
/// zero (`alpacadecimal/decimal.go`, `func (d Decimal) Round`: `m*2 >= s` rounds up; its
/// fallback is shopspring's `Round`, also half away from zero). Not banker's rounding.
///
/// The result keeps exactly `subunits` decimal places (`5` USD is `5.00`).
pub fn round_to_minor_units(amount: Decimal, currency: &Currency) -> Decimal {
    let mut rounded =
        amount.round_dp_with_strategy(currency.subunits, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(currency.subunits);
    rounded
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    #[test]
    fn minor_units_of_well_known_currencies() {
        for (code, subunits) in [
            ("USD", 2),
            ("EUR", 2),
            ("JPY", 0),
            ("KRW", 0),
            ("KWD", 3),
            ("BHD", 3),
            ("OMR", 3),
            ("TND", 3),
            ("CLF", 4),
            ("UYW", 4),
            ("VED", 2),
            ("HUF", 0),
        ] {
            assert_eq!(Currency::lookup(code).unwrap().subunits, subunits, "{code}");
        }
        assert_eq!(Currency::lookup("USD").unwrap().symbol, "$");
        assert!(Currency::lookup("usd").is_err());
        assert!(Currency::lookup("XYZ").is_err());
    }

    #[test]
    fn table_has_unique_codes_in_openmeters_order() {
        assert_eq!(CURRENCIES.len(), 171);
        assert_eq!(CURRENCIES[0].code, "USD");
        assert_eq!(CURRENCIES[1].code, "EUR");
        let mut codes: Vec<&str> = CURRENCIES.iter().map(|c| c.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), CURRENCIES.len());
        assert!(
            CURRENCIES
                .iter()
                .all(|c| c.code.len() == 3 && !c.name.is_empty())
        );
        assert!(
            data::ISO_ONLY
                .iter()
                .all(|extra| CURRENCIES.iter().all(|c| c.code != extra.code))
        );
    }

    /// Half away from zero, never half even, in every precision.
    #[test]
    fn rounds_half_away_from_zero() {
        let usd = Currency::lookup("USD").unwrap();
        let jpy = Currency::lookup("JPY").unwrap();
        let kwd = Currency::lookup("KWD").unwrap();
        let clf = Currency::lookup("CLF").unwrap();
        for (currency, input, expected) in [
            (usd, "0.125", "0.13"),
            (usd, "0.135", "0.14"),
            (usd, "-0.125", "-0.13"),
            (usd, "0.124999", "0.12"),
            (usd, "5", "5.00"),
            (jpy, "2.5", "3"),
            (jpy, "3.5", "4"),
            (jpy, "-2.5", "-3"),
            (kwd, "1.0005", "1.001"),
            (clf, "0.00005", "0.0001"),
            (clf, "0.00004", "0.0000"),
        ] {
            let rounded = round_to_minor_units(d(input), &currency);
            assert_eq!(rounded.to_string(), expected, "{input} {}", currency.code);
        }
    }
}
