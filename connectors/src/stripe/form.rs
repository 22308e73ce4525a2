//! Stripe's form encoding: nested hashes `a[b][c]=v`, arrays `a[0]=x`, booleans `true`/`false`,
//! integers as decimal text. Requests are built as a tree of [`Value`]s and flattened once, so
//! no caller formats a bracket key by hand.

use std::collections::BTreeMap;

/// One parameter value before flattening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    /// A hash: `key[name]=…`, in this order.
    Map(Vec<(String, Value)>),
    /// An array: `key[0]=…`, `key[1]=…`.
    List(Vec<Value>),
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Self::Str(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Self::Str(value)
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Self::Int(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Self::Bool(value)
    }
}

impl From<&BTreeMap<String, String>> for Value {
    fn from(map: &BTreeMap<String, String>) -> Self {
        Self::Map(
            map.iter()
                .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
                .collect(),
        )
    }
}

impl From<&[String]> for Value {
    fn from(items: &[String]) -> Self {
        Self::List(items.iter().map(|s| Value::Str(s.clone())).collect())
    }
}

/// The parameters of one request, in the order they were added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    fields: Vec<(String, Value)>,
}

impl Form {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parameter.
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.push((name.to_owned(), value.into()));
        self
    }

    /// Adds a parameter when it is present.
    pub fn field_opt<V: Into<Value>>(self, name: &str, value: Option<V>) -> Self {
        match value {
            Some(value) => self.field(name, value),
            None => self,
        }
    }

    /// Adds a hash when it has entries (an empty one would be a no-op anyway).
    pub fn map(self, name: &str, entries: Vec<(String, Value)>) -> Self {
        if entries.is_empty() {
            self
        } else {
            self.field(name, Value::Map(entries))
        }
    }

    /// The flattened `(key, value)` pairs, unescaped: `("metadata[om_line_id]", "l1")`.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, value) in &self.fields {
            flatten(name.clone(), value, &mut out);
        }
        out
    }

    /// `application/x-www-form-urlencoded` text, also used as a query string. Brackets in keys
    /// stay literal (as Stripe's docs and curl send them); everything else is percent-encoded.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (key, value) in self.pairs() {
            if !out.is_empty() {
                out.push('&');
            }
            escape_into(&key, true, &mut out);
            out.push('=');
            escape_into(&value, false, &mut out);
        }
        out
    }
}

fn flatten(key: String, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Str(s) => out.push((key, s.clone())),
        Value::Int(i) => out.push((key, i.to_string())),
        Value::Bool(b) => out.push((key, b.to_string())),
        Value::Map(entries) => {
            for (name, inner) in entries {
                flatten(format!("{key}[{name}]"), inner, out);
            }
        }
        Value::List(items) => {
            for (index, inner) in items.iter().enumerate() {
                flatten(format!("{key}[{index}]"), inner, out);
            }
        }
    }
}

/// One path segment (an object id), percent-encoded.
pub(crate) fn escape_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(text, false, &mut out);
    out
}

fn escape_into(text: &str, brackets_literal: bool, out: &mut String) {
    for byte in text.bytes() {
        let literal = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~')
            || (brackets_literal && matches!(byte, b'[' | b']'));
        if literal {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(byte >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(byte & 0x0f)]));
        }
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests;
