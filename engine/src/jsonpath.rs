//! The JSONPath subset meters use (`$.a.b`, `$['a b']`, `$.list[0]`), and Go's `%v`
//! text of a JSON value, which OpenMeter uses for group-by and UNIQUE_COUNT values.

use serde_json::{Map, Value};

/// One step of a parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Field(String),
    Index(usize),
}

/// A parsed JSONPath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

/// Why a path text is not a JSONPath meters accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("JSONPath must start with $")]
    NoRoot,
    #[error("JSONPath {path:?} is invalid at character {at}")]
    Syntax { path: String, at: usize },
}

impl JsonPath {
    /// Parses `$`, `.name`, `['name']`, `["name"]` and `[index]` steps.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let rest = text.strip_prefix('$').ok_or(PathError::NoRoot)?;
        let bytes = rest.as_bytes();
        let syntax = |at: usize| PathError::Syntax {
            path: text.to_owned(),
            at: at + 1,
        };
        let mut steps = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'.' => {
                    let start = i + 1;
                    let mut end = start;
                    while end < bytes.len() && bytes[end] != b'.' && bytes[end] != b'[' {
                        end += 1;
                    }
                    if end == start {
                        return Err(syntax(i));
                    }
                    steps.push(Step::Field(rest[start..end].to_owned()));
                    i = end;
                }
                b'[' => {
                    let close = rest[i..]
                        .find(']')
                        .map(|p| p + i)
                        .ok_or_else(|| syntax(i))?;
                    let inner = rest[i + 1..close].trim();
                    let quoted = inner.len() >= 2
                        && ((inner.starts_with('\'') && inner.ends_with('\''))
                            || (inner.starts_with('"') && inner.ends_with('"')));
                    if quoted {
                        steps.push(Step::Field(inner[1..inner.len() - 1].to_owned()));
                    } else {
                        let index = inner.parse::<usize>().map_err(|_| syntax(i))?;
                        steps.push(Step::Index(index));
                    }
                    i = close + 1;
                }
                _ => return Err(syntax(i)),
            }
        }
        Ok(Self { steps })
    }

    /// The path's steps.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The value at this path, or `None` when a step is missing.
    pub fn lookup<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        self.walk(root, &self.steps)
    }

    /// The value at this path inside an event's data object, without building a
    /// `Value` around it (the hot path reads events' data maps as they are).
    pub fn lookup_in<'v>(&self, data: &'v Map<String, Value>) -> Found<'v> {
        match self.steps.split_first() {
            None => Found::Root,
            Some((Step::Field(name), rest)) => match data.get(name) {
                Some(value) => self.walk(value, rest).map_or(Found::Missing, Found::Value),
                None => Found::Missing,
            },
            Some((Step::Index(_), _)) => Found::Missing,
        }
    }

    fn walk<'v>(&self, root: &'v Value, steps: &[Step]) -> Option<&'v Value> {
        let mut current = root;
        for step in steps {
            current = match (step, current) {
                (Step::Field(name), Value::Object(map)) => map.get(name)?,
                (Step::Index(index), Value::Array(list)) => list.get(*index)?,
                _ => return None,
            };
        }
        Some(current)
    }
}

/// What a path finds in a data object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Found<'v> {
    /// The path is `$`: the data object itself.
    Root,
    Value(&'v Value),
    Missing,
}

/// Go's `fmt.Sprintf("%v", v)` of a value decoded by `encoding/json`.
pub fn go_value_text(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) => go_float_text(f),
            None => n.to_string(),
        },
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_value_text).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", map.get(k).map(go_value_text).unwrap_or_default()))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

/// Go's `%v` of a float64: `%g` with the shortest digits, exponent form when the
/// decimal exponent is below -4 or at least 6 (`1e+06`, `1e-05`).
pub fn go_float_text(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Rust's `{:e}` prints the shortest round-trip digits: "1.2345e6".
    let sci = format!("{value:e}");
    let (mantissa, exponent) = match sci.split_once('e') {
        Some(parts) => parts,
        None => return sci,
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if !(-4..6).contains(&exponent) {
        let (head, tail) = digits.split_at(1);
        let fraction = if tail.is_empty() {
            String::new()
        } else {
            format!(".{tail}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{head}{fraction}e{exp_sign}{:02}", exponent.abs());
    }
    let point = exponent + 1; // digits before the decimal point
    let text = if point <= 0 {
        format!("0.{}{}", "0".repeat(point.unsigned_abs() as usize), digits)
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    };
    format!("{sign}{text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_parse_and_look_up() {
        let doc = json!({"a": {"b c": [10, {"d": "x"}]}, "n": 1});
        let cases = [
            ("$.n", Some(json!(1))),
            ("$.a['b c'][0]", Some(json!(10))),
            ("$.a[\"b c\"][1].d", Some(json!("x"))),
            ("$.missing", None),
            ("$.n.deeper", None),
            ("$", Some(doc.clone())),
        ];
        for (path, expected) in cases {
            let parsed = JsonPath::parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(parsed.lookup(&doc).cloned(), expected, "path {path}");
        }
    }

    #[test]
    fn lookups_in_a_data_object_match_lookups_in_its_value() {
        let doc = json!({"a": {"b c": [10, {"d": "x"}]}, "n": 1});
        let map = doc.as_object().cloned().unwrap_or_default();
        for path in [
            "$.n",
            "$.a['b c'][0]",
            "$.a[\"b c\"][1].d",
            "$.missing",
            "$.n.deeper",
            "$[0]",
        ] {
            let parsed = JsonPath::parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let expected = parsed.lookup(&doc).map_or(Found::Missing, Found::Value);
            assert_eq!(parsed.lookup_in(&map), expected, "path {path}");
        }
        assert_eq!(
            JsonPath::parse("$").map(|p| p.lookup_in(&map)),
            Ok(Found::Root)
        );
    }

    #[test]
    fn bad_paths_are_errors() {
        assert_eq!(JsonPath::parse("a.b"), Err(PathError::NoRoot));
        assert!(JsonPath::parse("$..a").is_err());
        assert!(JsonPath::parse("$[x]").is_err());
        assert!(JsonPath::parse("$.a[").is_err());
    }

    #[test]
    fn floats_print_like_go() {
        let cases = [
            (100.0, "100"),
            (0.5, "0.5"),
            (123456.0, "123456"),
            (1_000_000.0, "1e+06"),
            (1_234_567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
            (1e21, "1e+21"),
        ];
        for (value, expected) in cases {
            assert_eq!(go_float_text(value), expected, "value {value}");
        }
        assert_eq!(go_value_text(&json!(true)), "true");
        assert_eq!(go_value_text(&json!(["a", 1])), "[a 1]");
        assert_eq!(go_value_text(&json!({"b": 1, "a": "x"})), "map[a:x b:1]");
    }
}
