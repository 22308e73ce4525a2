//! OpenMeter's two wire forms of a decimal: `Numeric`, a string matching
//! `^-?[0-9]+(\.[0-9]+)?$`, and `Percentage`, a JSON number. Both are written back
//! without trailing zeros, as Go's decimal `String()` does (`"1.50"` reads back as `"1.5"`).

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

/// Parses a `Numeric` text; `None` when it does not match OpenMeter's pattern or does not fit.
pub fn parse(text: &str) -> Option<Decimal> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match digits.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return None;
    }
    Decimal::from_str(text).ok()
}

/// The text OpenMeter writes for a decimal: no trailing zeros, no exponent.
pub fn text(value: &Decimal) -> String {
    value.normalize().to_string()
}

pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&text(value))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    let raw = String::deserialize(deserializer)?;
    parse(&raw).ok_or_else(|| D::Error::custom(format!("invalid numeric {raw:?}")))
}

/// `Option<Decimal>` as an optional `Numeric` (use with `skip_serializing_if = "Option::is_none"`
/// and `default`).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(
        value: &Option<Decimal>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Decimal>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            Some(raw) => parse(&raw)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("invalid numeric {raw:?}"))),
            None => Ok(None),
        }
    }
}

/// A decimal written as a JSON number (OpenMeter's `Percentage`, `issueAfterReset`).
///
/// Read through `serde_json::Value` so the exact digits survive `arbitrary_precision`
/// even inside internally tagged enums, which buffer their content.
pub mod number {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        let number =
            serde_json::Number::from_str(&text(value)).map_err(serde::ser::Error::custom)?;
        serde::Serialize::serialize(&number, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Number(number) => {
                let raw = number.to_string();
                Decimal::from_str(&raw)
                    .or_else(|_| Decimal::from_scientific(&raw))
                    .map_err(|_| D::Error::custom(format!("invalid number {raw}")))
            }
            other => Err(D::Error::custom(format!("expected a number, got {other}"))),
        }
    }

    /// `Option<Decimal>` as an optional JSON number.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            value: &Option<Decimal>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(value) => super::serialize(value, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Decimal>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(deserialize_with = "super::deserialize")] Decimal);
            Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(value)| value))
        }
    }
}
