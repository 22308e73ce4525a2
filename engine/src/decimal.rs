//! Exact decimal values from JSON numbers and numeric strings, and their JSON form.

use rust_decimal::Decimal;
use std::str::FromStr;

/// Why a value could not become a decimal; the texts are OpenMeter's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("value cannot be NaN")]
    NaN,
    #[error("value cannot be infinity")]
    Infinity,
    #[error("value cannot be parsed as float64: {0}")]
    Unparsable(String),
}

/// Parses a numeric string the way Go's `strconv.ParseFloat` accepts it (decimal or
/// scientific notation, `NaN`, `Inf`, `Infinity`), into an exact decimal.
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
        // Too large or too precise for a decimal: fall back to the float reading, as Go does.
        Err(_) => match trimmed.parse::<f64>() {
            Ok(float) if float.is_finite() => from_f64(float),
            Ok(_) => Err(ValueError::Infinity),
            Err(_) => Err(ValueError::Unparsable(text.to_owned())),
        },
    }
}

/// A JSON number as an exact decimal: the shortest text that reads back as the same
/// float (`0.1` stays `0.1`), so values typed as decimals stay exact.
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

/// A JSON number from `serde_json`, as an exact decimal.
pub fn from_json_number(number: &serde_json::Number) -> Result<Decimal, ValueError> {
    if let Some(i) = number.as_i64() {
        return Ok(Decimal::from(i));
    }
    if let Some(u) = number.as_u64() {
        return Ok(Decimal::from(u));
    }
    match number.as_f64() {
        Some(f) => from_f64(f),
        None => Err(ValueError::Unparsable(number.to_string())),
    }
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

/// Go's `%f`: six digits after the point, rounded half to even like strconv.
pub fn format_fixed6(value: Decimal) -> String {
    let rounded =
        value.round_dp_with_strategy(6, rust_decimal::RoundingStrategy::MidpointNearestEven);
    // Padded by hand: `format!("{:.6}")` overflows rust_decimal's 32-byte buffer (a panic)
    // for values of 26 or more integer digits.
    let text = rounded.normalize().to_string();
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    format!("{int}.{frac:0<6}")
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
    fn floats_keep_their_shortest_decimal_text() {
        assert_eq!(from_f64(0.1).map(|d| d.to_string()), Ok("0.1".into()));
        assert_eq!(
            from_f64(1e-7).map(|d| d.to_string()),
            Ok("0.0000001".into())
        );
        assert_eq!(from_f64(f64::NAN), Err(ValueError::NaN));
    }

    #[test]
    fn fixed6_matches_go_percent_f() {
        assert_eq!(format_fixed6(Decimal::from(2000)), "2000.000000");
        assert_eq!(format_fixed6(Decimal::new(15, 1)), "1.500000");
        assert_eq!(format_fixed6(Decimal::new(12_345_675, 13)), "0.000001");
        assert_eq!(format_fixed6(Decimal::new(-15, 1)), "-1.500000");
        assert_eq!(format_fixed6(Decimal::ZERO), "0.000000");
        // Found by fuzzing: 10^25 and more used to panic in rust_decimal's formatter.
        assert_eq!(
            format_fixed6(
                Decimal::from_str("1e25")
                    .or_else(|_| Decimal::from_scientific("1e25"))
                    .unwrap()
            ),
            "10000000000000000000000000.000000"
        );
        assert_eq!(
            format_fixed6(Decimal::MAX),
            "79228162514264337593543950335.000000"
        );
        assert_eq!(
            format_fixed6(Decimal::MIN),
            "-79228162514264337593543950335.000000"
        );
    }

    #[test]
    fn json_text_is_a_plain_number() {
        assert_eq!(to_json_text(Decimal::new(2500, 2)), "25");
        assert_eq!(to_json_text(Decimal::new(-5, 1)), "-0.5");
        assert_eq!(to_json_text(Decimal::ZERO), "0");
    }
}
