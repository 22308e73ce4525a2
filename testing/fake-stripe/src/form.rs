//! Stripe's form encoding parsed into a tree: `a[b][c]=v` nests, `a[0]=x` and `a[]=x` index
//! arrays, `metadata[k]=v` fills a map, and an empty value means "unset".

use serde::Serialize;
use std::collections::BTreeMap;

/// One parameter value: a leaf string or a map of children (arrays are maps with index keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Param {
    Value(String),
    Map(BTreeMap<String, Param>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("Invalid form encoding: {reason}")]
    Encoding { reason: String },
    #[error("Invalid key {key:?}: its brackets do not close")]
    Brackets { key: String },
    #[error("Parameter {key} is given both as a value and as a hash")]
    Shape { key: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The canonical form of a request's parameters: sorted pairs, for idempotency comparisons.
pub fn canonical(pairs: &[(String, String)]) -> String {
    let mut sorted = pairs.to_vec();
    sorted.sort();
    serde_urlencoded::to_string(&sorted).unwrap_or_default()
}

/// Decodes `application/x-www-form-urlencoded` text (a body or a query string) into pairs.
pub fn pairs(text: &str) -> Result<Vec<(String, String)>> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(text).map_err(|error| Error::Encoding {
        reason: error.to_string(),
    })
}

/// Builds the parameter tree from decoded pairs, in order (so `a[]` keeps its order).
pub fn parse(pairs: &[(String, String)]) -> Result<Param> {
    let mut root = BTreeMap::new();
    for (key, value) in pairs {
        let path = segments(key)?;
        insert(&mut root, key, &path, value.clone())?;
    }
    Ok(Param::Map(root))
}

/// `a[b][]` → `["a", "b", ""]`.
fn segments(key: &str) -> Result<Vec<String>> {
    let brackets = || Error::Brackets {
        key: key.to_owned(),
    };
    let Some(open) = key.find('[') else {
        return Ok(vec![key.to_owned()]);
    };
    let mut out = vec![key[..open].to_owned()];
    let mut rest = &key[open..];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[').ok_or_else(brackets)?;
        let close = inner.find(']').ok_or_else(brackets)?;
        out.push(inner[..close].to_owned());
        rest = &inner[close + 1..];
    }
    Ok(out)
}

fn insert(
    map: &mut BTreeMap<String, Param>,
    key: &str,
    path: &[String],
    value: String,
) -> Result<()> {
    let shape = || Error::Shape {
        key: key.to_owned(),
    };
    let Some((first, rest)) = path.split_first() else {
        return Err(shape());
    };
    // `a[]` appends: the next index of this array.
    let name = if first.is_empty() {
        map.len().to_string()
    } else {
        first.clone()
    };
    if rest.is_empty() {
        if matches!(map.get(&name), Some(Param::Map(_))) {
            return Err(shape());
        }
        map.insert(name, Param::Value(value));
        return Ok(());
    }
    let child = map
        .entry(name)
        .or_insert_with(|| Param::Map(BTreeMap::new()));
    match child {
        Param::Map(inner) => insert(inner, key, rest, value),
        Param::Value(_) => Err(shape()),
    }
}

impl Param {
    /// The child `key` of a map.
    pub fn get(&self, key: &str) -> Option<&Param> {
        match self {
            Param::Map(map) => map.get(key),
            Param::Value(_) => None,
        }
    }

    /// The string at `key`, `None` when absent or empty (empty means unset).
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Param::Value(v)) if !v.is_empty() => Some(v.as_str()),
            _ => None,
        }
    }

    /// The parsed integer at `key` (validation already checked the type).
    pub fn int(&self, key: &str) -> Option<i64> {
        self.str(key).and_then(|v| v.parse().ok())
    }

    /// The boolean at `key`.
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.str(key).map(|v| v == "true")
    }

    /// Whether `key` is present with an empty value: "unset this".
    pub fn is_unset(&self, key: &str) -> bool {
        matches!(self.get(key), Some(Param::Value(v)) if v.is_empty())
    }

    /// The elements of an array parameter in index order; `None` when the keys are not indexes.
    pub fn items(&self) -> Option<Vec<&Param>> {
        let Param::Map(map) = self else { return None };
        let mut indexed = Vec::with_capacity(map.len());
        for (key, value) in map {
            indexed.push((key.parse::<usize>().ok()?, value));
        }
        indexed.sort_by_key(|(index, _)| *index);
        Some(indexed.into_iter().map(|(_, value)| value).collect())
    }

    /// The strings of an array parameter (`expand[]`, `enabled_events[]`).
    pub fn strings(&self, key: &str) -> Vec<String> {
        let Some(items) = self.get(key).and_then(Param::items) else {
            return Vec::new();
        };
        items
            .into_iter()
            .filter_map(|item| match item {
                Param::Value(v) if !v.is_empty() => Some(v.clone()),
                _ => None,
            })
            .collect()
    }

    /// A string map parameter (`metadata[k]=v`), empty values kept so callers can unset keys.
    pub fn string_map(&self, key: &str) -> Option<BTreeMap<String, String>> {
        let Some(Param::Map(map)) = self.get(key) else {
            return None;
        };
        Some(
            map.iter()
                .filter_map(|(k, v)| match v {
                    Param::Value(v) => Some((k.clone(), v.clone())),
                    Param::Map(_) => None,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests;
