//! Exact meter quantities: fixed-point decimals with 18 fractional digits in 256 bits.
//!
//! An event's value is read from its JSON text (never through `f64`) and kept exactly
//! when it has at most [`Quantity::EVENT_INTEGER_DIGITS`] (38) integer digits and at
//! most [`Quantity::SCALE`] (18) significant fractional digits; any other value is the
//! event's `validationError`, never rounded. Aggregates (SUM, AVG's sum, MIN, MAX,
//! LATEST) are held in the same type: a 256-bit integer holds 76 digits, so a sum of
//! events of 38 integer digits cannot pass 58 integer digits before 10^20 events were
//! added. At rest the same numbers are Arrow's `Decimal256(76, 18)`.
//!
//! AVG is the one inexact aggregate: sum ÷ count, rounded half to even at 18 digits.

pub use arrow_buffer::i256;
use rust_decimal::Decimal;
use std::cmp::Ordering;
use std::fmt;

/// Why a text is not a quantity. The first three texts are OpenMeter's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("value cannot be NaN")]
    NaN,
    #[error("value cannot be infinity")]
    Infinity,
    #[error("value cannot be parsed as float64: {0}")]
    Unparsable(String),
    #[error(
        "value has more than 18 fractional digits and cannot be kept exactly: {0} (values have at most 38 integer and 18 fractional digits)"
    )]
    TooPrecise(String),
    #[error(
        "value has more than 38 integer digits and cannot be kept exactly: {0} (values have at most 38 integer and 18 fractional digits)"
    )]
    TooLarge(String),
}

/// A decimal number with exactly 18 fractional digits: `raw × 10⁻¹⁸`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity(i256);

/// 10^18, the unit.
const UNIT: i256 = i256::from_i128(1_000_000_000_000_000_000);

impl Quantity {
    /// Fractional digits.
    pub const SCALE: u32 = 18;
    /// Integer digits an event's value may have.
    pub const EVENT_INTEGER_DIGITS: u32 = 38;
    /// Arrow's precision of the at-rest column (`Decimal256(76, 18)`).
    pub const PRECISION: u8 = 76;
    pub const ZERO: Self = Self(i256::ZERO);
    pub const ONE: Self = Self(UNIT);
    /// The largest and smallest numbers of `Decimal256(76, 18)`; sums saturate there,
    /// which takes more than 10^20 events of the largest value.
    pub const MAX: Self = Self(i256::from_i128(10).wrapping_pow(76).wrapping_sub(i256::ONE));
    pub const MIN: Self = Self(
        i256::from_i128(10)
            .wrapping_pow(76)
            .wrapping_sub(i256::ONE)
            .wrapping_neg(),
    );

    /// The number `raw × 10⁻¹⁸`.
    pub const fn from_raw(raw: i256) -> Self {
        Self(raw)
    }

    /// The integer `raw` with `raw × 10⁻¹⁸` equal to this number.
    pub const fn raw(self) -> i256 {
        self.0
    }

    pub fn from_i64(value: i64) -> Self {
        Self(i256::from_i128(i128::from(value)).wrapping_mul(UNIT))
    }

    pub fn from_u64(value: u64) -> Self {
        Self(i256::from_i128(i128::from(value)).wrapping_mul(UNIT))
    }

    /// `mantissa × 10^-scale` for `scale ≤ 18` (tests and fixtures).
    pub fn new(mantissa: i64, scale: u32) -> Self {
        let scale = scale.min(Self::SCALE);
        let factor = pow10(Self::SCALE - scale);
        Self(i256::from_i128(i128::from(mantissa)).wrapping_mul(factor))
    }

    pub fn is_zero(self) -> bool {
        self.0 == i256::ZERO
    }

    pub fn is_negative(self) -> bool {
        self.0.is_negative()
    }

    /// Addition within `Decimal256(76, 18)`, or `None`.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0
            .checked_add(other.0)
            .map(Self)
            .filter(|s| *s >= Self::MIN && *s <= Self::MAX)
    }

    /// Addition that never panics: it saturates at ±(10^58 − 10^−18), more than 10^20
    /// events of the largest accepted value away.
    pub fn saturating_add(self, other: Self) -> Self {
        self.checked_add(other).unwrap_or(if other.is_negative() {
            Self::MIN
        } else {
            Self::MAX
        })
    }

    /// `self ÷ count`, rounded half to even at 18 fractional digits (AVG); 0 for 0.
    pub fn div_count(self, count: u64) -> Self {
        if count == 0 {
            return Self::ZERO;
        }
        let divisor = i256::from_i128(i128::from(count));
        let (Some(quotient), Some(remainder)) =
            (self.0.checked_div(divisor), self.0.checked_rem(divisor))
        else {
            return Self::ZERO;
        };
        // |remainder| < count ≤ 2^64: doubling cannot overflow.
        let twice = remainder.wrapping_abs().wrapping_mul(i256::from_i128(2));
        let round_away = match twice.cmp(&divisor) {
            Ordering::Greater => true,
            Ordering::Equal => quotient.wrapping_rem(i256::from_i128(2)) != i256::ZERO,
            Ordering::Less => false,
        };
        if !round_away {
            return Self(quotient);
        }
        let step = if self.0.is_negative() {
            i256::MINUS_ONE
        } else {
            i256::ONE
        };
        Self(quotient.wrapping_add(step))
    }

    /// Reads a JSON number's text or a numeric string the way Go's `strconv.ParseFloat`
    /// spells numbers (sign, digits, point, exponent; `NaN`, `Inf`, `Infinity`), exactly.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let unparsable = || ValueError::Unparsable(text.to_owned());
        let (negative, unsigned) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let lower = unsigned.to_ascii_lowercase();
        if lower == "nan" {
            return Err(ValueError::NaN);
        }
        if lower == "inf" || lower == "infinity" {
            return Err(ValueError::Infinity);
        }
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
            None => (unsigned, None),
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (int_part.is_empty() && frac_part.is_empty())
            || !digits_only(int_part)
            || !digits_only(frac_part)
        {
            return Err(unparsable());
        }
        // The exponent, clamped: anything past ±10^6 is out of range either way.
        let exponent: i64 = match exponent {
            None => 0,
            Some(e) => {
                let (sign, body) = match e.as_bytes().first() {
                    Some(b'-') => (-1, &e[1..]),
                    Some(b'+') => (1, &e[1..]),
                    _ => (1, e),
                };
                if body.is_empty() || !digits_only(body) {
                    return Err(unparsable());
                }
                let trimmed = body.trim_start_matches('0');
                let magnitude: i64 = if trimmed.len() > 7 {
                    10_000_000
                } else {
                    trimmed.parse().unwrap_or(0)
                };
                sign * magnitude
            }
        };
        // All significant digits and the power of ten of the last one.
        let all = format!("{int_part}{frac_part}");
        let significant = all.trim_start_matches('0');
        let kept = significant.trim_end_matches('0');
        if kept.is_empty() {
            return Ok(Self::ZERO);
        }
        let trailing_zeros = (significant.len() - kept.len()) as i64;
        let frac_len = frac_part.len() as i64;
        // value = kept × 10^last_power
        let last_power = exponent - frac_len + trailing_zeros;
        let integer_digits = kept.len() as i64 + last_power;
        if last_power < -i64::from(Self::SCALE) {
            return Err(ValueError::TooPrecise(text.to_owned()));
        }
        if integer_digits > i64::from(Self::EVENT_INTEGER_DIGITS) {
            return Err(ValueError::TooLarge(text.to_owned()));
        }
        // kept has at most 56 digits here; scaled to 18 fractional digits it has at most 56.
        let mut raw = i256::ZERO;
        let ten = i256::from_i128(10);
        for b in kept.bytes() {
            raw = raw
                .wrapping_mul(ten)
                .wrapping_add(i256::from_i128(i128::from(b - b'0')));
        }
        let shift = u32::try_from(last_power + i64::from(Self::SCALE)).map_err(|_| unparsable())?;
        raw = raw.wrapping_mul(pow10(shift));
        Ok(Self(if negative { raw.wrapping_neg() } else { raw }))
    }

    /// A JSON number, from its text (serde_json keeps it with `arbitrary_precision`).
    pub fn from_json_number(number: &serde_json::Number) -> Result<Self, ValueError> {
        Self::parse(number.as_str())
    }

    /// The nearest `rust_decimal` (28–29 significant digits, rounded half to even), for
    /// the entitlement and billing arithmetic; saturates past ±7.9 × 10^28.
    pub fn to_decimal(self) -> Decimal {
        let text = self.to_string();
        match Decimal::from_str_exact(&text) {
            Ok(d) => d.normalize(),
            Err(_) => round_to_decimal(&text, self.is_negative()),
        }
    }

    /// A decimal as a quantity: exact up to 18 fractional digits, rounded half to even
    /// past them (rust_decimal holds at most 28 fractional digits).
    pub fn from_decimal(value: Decimal) -> Self {
        let rounded = value.round_dp_with_strategy(
            Self::SCALE,
            rust_decimal::RoundingStrategy::MidpointNearestEven,
        );
        let scale = rounded.scale().min(Self::SCALE);
        let raw = i256::from_i128(rounded.mantissa()).wrapping_mul(pow10(Self::SCALE - scale));
        Self(raw)
    }

    /// Go's `%f`: six fractional digits, rounded half to even (the CSV answer of a query).
    pub fn format_fixed6(self) -> String {
        let step = pow10(Self::SCALE - 6);
        let (Some(quotient), Some(remainder)) =
            (self.0.checked_div(step), self.0.checked_rem(step))
        else {
            return "0.000000".to_owned();
        };
        let twice = remainder.wrapping_abs().wrapping_mul(i256::from_i128(2));
        let round_away = match twice.cmp(&step) {
            Ordering::Greater => true,
            Ordering::Equal => quotient.wrapping_rem(i256::from_i128(2)) != i256::ZERO,
            Ordering::Less => false,
        };
        let q = if round_away {
            quotient.wrapping_add(if self.0.is_negative() {
                i256::MINUS_ONE
            } else {
                i256::ONE
            })
        } else {
            quotient
        };
        let negative = q.is_negative();
        let digits = q.wrapping_abs().to_string();
        let digits = format!(
            "{}{digits}",
            "0".repeat(7usize.saturating_sub(digits.len()))
        );
        let (int, frac) = digits.split_at(digits.len() - 6);
        format!("{}{int}.{frac}", if negative { "-" } else { "" })
    }
}

fn pow10(exp: u32) -> i256 {
    i256::from_i128(10).wrapping_pow(exp)
}

/// Rounds a plain decimal text (`-123.456`) to what `rust_decimal` holds.
fn round_to_decimal(text: &str, negative: bool) -> Decimal {
    let unsigned = text.trim_start_matches('-');
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let saturated = if negative { Decimal::MIN } else { Decimal::MAX };
    if int.len() > 29 {
        return saturated;
    }
    // Keep as many fractional digits as fit, then let rust_decimal round the rest.
    for keep in (0..=frac.len().min(28)).rev() {
        let candidate = if keep == 0 {
            int.to_owned()
        } else {
            format!("{int}.{}", &frac[..keep])
        };
        if let Ok(d) = Decimal::from_str_exact(&candidate) {
            let next = frac.as_bytes().get(keep).copied();
            let rest = &frac[(keep + 1).min(frac.len())..];
            let magnitude = d.abs();
            let ulp = Decimal::new(1, d.scale());
            let half_up = match next {
                Some(b'5') => rest.bytes().any(|b| b != b'0') || (magnitude.mantissa() % 2 == 1),
                Some(b) => b > b'5',
                None => false,
            };
            let magnitude = if half_up {
                magnitude.checked_add(ulp).unwrap_or(Decimal::MAX)
            } else {
                magnitude
            };
            return if negative { -magnitude } else { magnitude }.normalize();
        }
    }
    saturated
}

impl fmt::Display for Quantity {
    /// The shortest plain decimal text: no exponent, no trailing zeros, `0` for zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let negative = self.0.is_negative();
        let digits = self.0.wrapping_abs().to_string();
        let scale = Self::SCALE as usize;
        let padded = if digits.len() <= scale {
            format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
        } else {
            digits
        };
        let (int, frac) = padded.split_at(padded.len() - scale);
        let frac = frac.trim_end_matches('0');
        let sign = if negative { "-" } else { "" };
        if frac.is_empty() {
            write!(f, "{sign}{int}")
        } else {
            write!(f, "{sign}{int}.{frac}")
        }
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Quantity {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl From<i64> for Quantity {
    fn from(value: i64) -> Self {
        Self::from_i64(value)
    }
}

impl serde::Serialize for Quantity {
    /// A JSON number with every digit (serde_json's `arbitrary_precision` keeps the text).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match serde_json::value::RawValue::from_string(self.to_string()) {
            Ok(raw) => raw.serialize(serializer),
            Err(error) => Err(serde::ser::Error::custom(error)),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Quantity {
    /// A JSON number or a numeric string.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Number(n) => Self::from_json_number(&n).map_err(D::Error::custom),
            serde_json::Value::String(s) => Self::parse(&s).map_err(D::Error::custom),
            other => Err(D::Error::custom(format!("expected a number, got {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn bounds_are_ten_to_the_76_minus_one() {
        let max = format!("{}.{}", "9".repeat(58), "9".repeat(18));
        assert_eq!(Quantity::MAX.to_string(), max);
        assert_eq!(Quantity::MIN.to_string(), format!("-{max}"));
        assert_eq!(Quantity::MAX.saturating_add(Quantity::ONE), Quantity::MAX);
        assert_eq!(Quantity::MIN.saturating_add(q("-1")), Quantity::MIN);
    }

    #[test]
    fn texts_parse_exactly() {
        let cases = [
            ("100", "100"),
            ("1.50", "1.5"),
            ("-2e3", "-2000"),
            ("1E-2", "0.01"),
            ("+7", "7"),
            ("0.000000000000000001", "0.000000000000000001"),
            (
                "12345678901234567890.123456789012345678",
                "12345678901234567890.123456789012345678",
            ),
            (
                "99999999999999999999999999999999999999.999999999999999999",
                "99999999999999999999999999999999999999.999999999999999999",
            ),
            ("1.2300000000000000000000000", "1.23"),
            ("123e-18", "0.000000000000000123"),
            ("0e999999999999", "0"),
            ("-0", "0"),
            (".5", "0.5"),
            ("5.", "5"),
            ("1e37", "10000000000000000000000000000000000000"),
        ];
        for (input, expected) in cases {
            assert_eq!(q(input).to_string(), expected, "{input}");
        }
    }

    #[test]
    fn values_out_of_range_are_errors() {
        let errors = [
            ("NaN", ValueError::NaN),
            ("-inf", ValueError::Infinity),
            ("Infinity", ValueError::Infinity),
            ("abc", ValueError::Unparsable("abc".into())),
            ("", ValueError::Unparsable(String::new())),
            ("1 2", ValueError::Unparsable("1 2".into())),
            ("1e", ValueError::Unparsable("1e".into())),
            ("--1", ValueError::Unparsable("--1".into())),
            (".", ValueError::Unparsable(".".into())),
            ("0x10", ValueError::Unparsable("0x10".into())),
            (
                "0.0000000000000000001",
                ValueError::TooPrecise("0.0000000000000000001".into()),
            ),
            ("1e-19", ValueError::TooPrecise("1e-19".into())),
            ("123e-20", ValueError::TooPrecise("123e-20".into())),
            ("1e38", ValueError::TooLarge("1e38".into())),
            (
                "1e99999999999",
                ValueError::TooLarge("1e99999999999".into()),
            ),
            (
                "1e-99999999999",
                ValueError::TooPrecise("1e-99999999999".into()),
            ),
        ];
        for (input, expected) in errors {
            assert_eq!(Quantity::parse(input), Err(expected), "{input}");
        }
    }

    #[test]
    fn averages_round_half_to_even() {
        assert_eq!(q("1").div_count(3).to_string(), "0.333333333333333333");
        assert_eq!(q("2").div_count(3).to_string(), "0.666666666666666667");
        assert_eq!(q("-2").div_count(3).to_string(), "-0.666666666666666667");
        // Exactly half an ulp: to even.
        assert_eq!(q("0.000000000000000001").div_count(2), Quantity::ZERO);
        assert_eq!(
            q("0.000000000000000003").div_count(2),
            q("0.000000000000000002")
        );
        assert_eq!(
            q("-0.000000000000000003").div_count(2),
            q("-0.000000000000000002")
        );
        assert_eq!(q("7").div_count(0), Quantity::ZERO);
    }

    #[test]
    fn fixed6_matches_go_percent_f() {
        assert_eq!(q("2000").format_fixed6(), "2000.000000");
        assert_eq!(q("1.5").format_fixed6(), "1.500000");
        assert_eq!(q("0.0000012345675").format_fixed6(), "0.000001");
        assert_eq!(q("0.0000005").format_fixed6(), "0.000000");
        assert_eq!(q("0.0000015").format_fixed6(), "0.000002");
        assert_eq!(q("-1.5").format_fixed6(), "-1.500000");
        assert_eq!(q("-0.0000004").format_fixed6(), "0.000000");
        assert_eq!(Quantity::ZERO.format_fixed6(), "0.000000");
        assert_eq!(
            Quantity::MAX.format_fixed6(),
            format!("1{}.000000", "0".repeat(58))
        );
    }

    #[test]
    fn decimals_convert_with_rounding_past_their_range() {
        assert_eq!(q("1.5").to_decimal(), Decimal::new(15, 1));
        assert_eq!(
            q("12345678901234567890.123456789012345678").to_decimal(),
            Decimal::from_str_exact("12345678901234567890.123456789").unwrap_or_default()
        );
        assert_eq!(Quantity::MAX.to_decimal(), Decimal::MAX);
        assert_eq!(Quantity::MIN.to_decimal(), Decimal::MIN);
        assert_eq!(Quantity::from_decimal(Decimal::new(-25, 1)), q("-2.5"));
        assert_eq!(
            Quantity::from_decimal(
                Decimal::from_str_exact("0.0000000000000000005").unwrap_or_default()
            ),
            Quantity::ZERO
        );
    }

    #[test]
    fn serde_keeps_every_digit() {
        let value = q("12345678901234567890.123456789012345678");
        let text = serde_json::to_string(&value).unwrap_or_default();
        assert_eq!(text, "12345678901234567890.123456789012345678");
        let back: Quantity = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back, value);
        let from_string: Quantity = serde_json::from_str("\"-1e-18\"").unwrap_or_default();
        assert_eq!(from_string, q("-0.000000000000000001"));
    }

    proptest! {
        // Text → quantity → text is the identity on normalised decimals in range.
        #[test]
        fn text_round_trips(int in "[1-9][0-9]{0,37}|0", frac in "[0-9]{0,17}[1-9]|", negative in any::<bool>()) {
            let text = match (frac.is_empty(), negative && !(int == "0" && frac.is_empty())) {
                (true, n) => format!("{}{int}", if n { "-" } else { "" }),
                (false, n) => format!("{}{int}.{frac}", if n { "-" } else { "" }),
            };
            prop_assert_eq!(q(&text).to_string(), text);
        }

        // Addition agrees with rust_decimal where rust_decimal is exact.
        #[test]
        fn addition_agrees_with_rust_decimal(a in any::<i64>(), sa in 0u32..=18, b in any::<i64>(), sb in 0u32..=18) {
            let (da, db) = (Decimal::new(a, sa), Decimal::new(b, sb));
            let sum = Quantity::from_decimal(da).saturating_add(Quantity::from_decimal(db));
            prop_assert_eq!(sum.to_decimal(), (da + db).normalize());
            prop_assert_eq!(Quantity::from_decimal(da).cmp(&Quantity::from_decimal(db)), da.cmp(&db));
        }
    }
}
