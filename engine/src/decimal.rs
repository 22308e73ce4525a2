//! `rust_decimal` values (grant amounts, balances, thresholds) from JSON numbers and
//! numeric strings, and their JSON form. Meter values are [`crate::quantity::Quantity`].

use rust_decimal::Decimal;
use std::str::FromStr;

pub use crate::quantity::ValueError;

/// Parses a numeric string the way Go's `strconv.ParseFloat` accepts it (decimal or
/// scientific notation, `NaN`, `Inf`, `Infinity`), into an exact decimal; past
/// rust_decimal's 28 digits it falls back to the float reading, as Go would.
pub fn parse_numeric_str(text: &str) -> Result<Decimal, ValueError> {
    let trimmed = text.strip_prefix('+').unwrap_or(text);
    let unsigned = trimmed.strip_prefix('-').unwrap_or(trimmed);
    let lower = unsigned.to_ascii_lowercase();
    if lower == "nan" {
        return Err(ValueError::NaN);
    }
    if lower == "inf" || lower == "infinity" {
        return Err(ValueError::Infinity);
    }
    if text.is_empty() || text.contains(char::is_whitespace) || text.contains('_') {
        return Err(ValueError::Unparsable(text.to_owned()));
    }
    let parsed = if lower.contains('e') {
        Decimal::from_scientific(trimmed)
    } else {
        Decimal::from_str(trimmed)
    };
    match parsed {
        Ok(value) => Ok(value.normalize()),
        Err(_) => match trimmed.parse::<f64>() {
            Ok(float) if float.is_finite() => from_f64(float),
            Ok(_) => Err(ValueError::Infinity),
            Err(_) => Err(ValueError::Unparsable(text.to_owned())),
        },
    }
}

/// A float as a decimal: the shortest text that reads back as the same float (`0.1`
/// stays `0.1`).
pub fn from_f64(value: f64) -> Result<Decimal, ValueError> {
    if value.is_nan() {
        return Err(ValueError::NaN);
    }
    if value.is_infinite() {
        return Err(ValueError::Infinity);
    }
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(value);
    let parsed = if text.contains('e') {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str(text)
    };
    parsed
        .map(|d| d.normalize())
        .map_err(|_| ValueError::Unparsable(text.to_owned()))
}

/// A JSON number from `serde_json` (which keeps its text), as a decimal: exact within
/// rust_decimal's 28 digits.
pub fn from_json_number(number: &serde_json::Number) -> Result<Decimal, ValueError> {
    parse_numeric_str(number.as_str())
}

/// The JSON text of a decimal: a plain number, never a string, never exponent notation.
pub fn to_json_text(value: Decimal) -> String {
    let normalized = value.normalize();
    if normalized.is_zero() {
        return "0".to_owned();
    }
    normalized.to_string()
}

/// Serialises a decimal as a JSON number with its exact digits (no float rounding).
pub fn serialize_as_number<S: serde::Serializer>(
    value: &Decimal,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    match serde_json::value::RawValue::from_string(to_json_text(*value)) {
        Ok(raw) => raw.serialize(serializer),
        Err(error) => Err(serde::ser::Error::custom(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_strings_follow_parse_float() {
        let cases: &[(&str, Result<&str, ValueError>)] = &[
            ("100", Ok("100")),
            ("1.50", Ok("1.5")),
            ("-2e3", Ok("-2000")),
            ("1E-2", Ok("0.01")),
            ("NaN", Err(ValueError::NaN)),
            ("nan", Err(ValueError::NaN)),
            ("Inf", Err(ValueError::Infinity)),
            ("-Infinity", Err(ValueError::Infinity)),
            ("+inf", Err(ValueError::Infinity)),
            ("abc", Err(ValueError::Unparsable("abc".into()))),
            ("", Err(ValueError::Unparsable(String::new()))),
            ("1 2", Err(ValueError::Unparsable("1 2".into()))),
        ];
        for (input, expected) in cases {
            let got = parse_numeric_str(input).map(|d| d.to_string());
            let expected = expected.clone().map(str::to_owned);
            assert_eq!(got, expected, "input {input:?}");
        }
    }

    #[test]
    fn json_numbers_are_read_from_their_text() {
        let number: serde_json::Number =
            serde_json::from_str("0.1000000000000000055511151231257827")
                .unwrap_or_else(|_| 0.into());
        assert_eq!(
            from_json_number(&number).map(|d| d.to_string()),
            Ok("0.1000000000000000055511151231".into())
        );
    }

    #[test]
    fn floats_keep_their_shortest_decimal_text() {
        assert_eq!(from_f64(0.1).map(|d| d.to_string()), Ok("0.1".into()));
        assert_eq!(
            from_f64(1e-7).map(|d| d.to_string()),
            Ok("0.0000001".into())
        );
        assert_eq!(from_f64(f64::NAN), Err(ValueError::NaN));
    }

    #[test]
    fn json_text_is_a_plain_number() {
        assert_eq!(to_json_text(Decimal::new(2500, 2)), "25");
        assert_eq!(to_json_text(Decimal::new(-5, 1)), "-0.5");
        assert_eq!(to_json_text(Decimal::ZERO), "0");
    }
}
