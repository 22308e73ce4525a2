//! Query-string parsing the way OpenMeter's clients send it: repeated keys for
//! arrays (`subject=a&subject=b`), deepObject maps (`filterGroupBy[model]=x`).

use crate::error::ApiError;
use chrono::{DateTime, Utc};
use metron_engine::event::parse_time;
use std::collections::BTreeMap;

/// All pairs of a query string, in order.
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
        Ok(Self { pairs })
    }

    pub fn one(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated key (also `key[]`, and comma-free as sent).
    pub fn all(&self, key: &str) -> Vec<String> {
        let bracket = format!("{key}[]");
        self.pairs
            .iter()
            .filter(|(k, _)| k == key || *k == bracket)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A deepObject map whose values repeat: `key[name]=a&key[name]=b` (also `key[name][]`).
    pub fn map_all(&self, key: &str) -> BTreeMap<String, Vec<String>> {
        let prefix = format!("{key}[");
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in &self.pairs {
            let Some(rest) = k.strip_prefix(&prefix) else {
                continue;
            };
            let rest = rest.strip_suffix("[]").unwrap_or(rest);
            if let Some(name) = rest.strip_suffix(']') {
                out.entry(name.to_owned()).or_default().push(v.clone());
            }
        }
        out
    }

    /// A deepObject map: `key[name]=value`.
    pub fn map(&self, key: &str) -> BTreeMap<String, String> {
        let prefix = format!("{key}[");
        self.pairs
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(&prefix)?.strip_suffix(']')?;
                Some((name.to_owned(), v.clone()))
            })
            .collect()
    }

    pub fn time(&self, key: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        match self.one(key) {
            None => Ok(None),
            Some(text) => parse_time(text).map(Some).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid {key}: {text:?} is not an RFC 3339 date-time"
                ))
            }),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.one(key) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid {key}: {other:?} is not a boolean"
            ))),
        }
    }

    pub fn usize_in(
        &self,
        key: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, ApiError> {
        match self.one(key) {
            None => Ok(default),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "invalid {key}: must be an integer from {min} to {max}"
                ))),
            },
        }
    }
}

/// Does the `Accept` header ask for `text/csv`?
pub fn wants_csv(headers: &actix_web::http::header::HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',')
                .any(|p| p.split(';').next().unwrap_or("").trim() == "text/csv")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_and_deep_objects() {
        let p = Params::parse("subject=a&subject=b&groupBy=model&filterGroupBy%5Bmodel%5D=gpt&from=2024-01-01T00:00:00Z")
            .expect("parse");
        assert_eq!(p.all("subject"), vec!["a", "b"]);
        assert_eq!(
            p.map("filterGroupBy").get("model").map(String::as_str),
            Some("gpt")
        );
        assert!(p.time("from").expect("time").is_some());
        assert!(
            Params::parse("from=yesterday")
                .expect("parse")
                .time("from")
                .is_err()
        );
    }
}
