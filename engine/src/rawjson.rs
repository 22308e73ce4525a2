//! Reading JSON text without building a tree: the value at a [`JsonPath`] inside a
//! data object kept as text, and the checks an event's data gets at ingest (count of
//! values, compact form).
//!
//! The functions here expect text that a JSON parser has already accepted (the API
//! validates every event before it becomes a record): on anything else they answer
//! "missing" or an error, never panic.

use crate::jsonpath::Step;
use std::borrow::Cow;

/// What a path finds in a data object's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFound<'a> {
    /// The path is `$`: the data object itself.
    Root,
    /// The text of the value at the path.
    Value(&'a str),
    Missing,
}

/// The value at `steps` inside the JSON object `data`. As a decoded map does, a key
/// given twice finds its last value.
pub fn lookup<'a>(data: &'a str, steps: &[Step]) -> RawFound<'a> {
    if steps.is_empty() {
        return RawFound::Root;
    }
    let bytes = data.as_bytes();
    let Some(mut start) = skip_ws(bytes, 0) else {
        return RawFound::Missing;
    };
    let mut end = match skip_value(bytes, start) {
        Some(end) => end,
        None => return RawFound::Missing,
    };
    for step in steps {
        let found = match step {
            Step::Field(name) => field(bytes, start, name),
            Step::Index(index) => element(bytes, start, *index),
        };
        match found {
            Some((s, e)) => (start, end) = (s, e),
            None => return RawFound::Missing,
        }
    }
    data.get(start..end)
        .map_or(RawFound::Missing, RawFound::Value)
}

/// The span of member `name`'s value in the object at `at` (the last one if repeated).
fn field(bytes: &[u8], at: usize, name: &str) -> Option<(usize, usize)> {
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    let mut pos = skip_ws(bytes, at + 1)?;
    let mut found = None;
    if bytes.get(pos) == Some(&b'}') {
        return None;
    }
    loop {
        let key_end = skip_string(bytes, pos)?;
        let key = bytes.get(pos + 1..key_end - 1)?;
        pos = skip_ws(bytes, key_end)?;
        if bytes.get(pos) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(bytes, pos + 1)?;
        let value_end = skip_value(bytes, value_start)?;
        if key_matches(key, name) {
            found = Some((value_start, value_end));
        }
        pos = skip_ws(bytes, value_end)?;
        match bytes.get(pos) {
            Some(b',') => pos = skip_ws(bytes, pos + 1)?,
            Some(b'}') => return found,
            _ => return None,
        }
    }
}

/// The span of element `index` of the array at `at`.
fn element(bytes: &[u8], at: usize, index: usize) -> Option<(usize, usize)> {
    if bytes.get(at) != Some(&b'[') {
        return None;
    }
    let mut pos = skip_ws(bytes, at + 1)?;
    if bytes.get(pos) == Some(&b']') {
        return None;
    }
    let mut i = 0;
    loop {
        let end = skip_value(bytes, pos)?;
        if i == index {
            return Some((pos, end));
        }
        i += 1;
        pos = skip_ws(bytes, end)?;
        match bytes.get(pos) {
            Some(b',') => pos = skip_ws(bytes, pos + 1)?,
            _ => return None,
        }
    }
}

/// Does a key's text (between its quotes, escapes as written) equal `name`?
fn key_matches(raw: &[u8], name: &str) -> bool {
    if !raw.contains(&b'\\') {
        return raw == name.as_bytes();
    }
    let Ok(quoted) = std::str::from_utf8(raw) else {
        return false;
    };
    serde_json::from_str::<String>(&format!("\"{quoted}\"")).is_ok_and(|k| k == name)
}

/// The first position at or after `pos` that is not JSON whitespace.
fn skip_ws(bytes: &[u8], mut pos: usize) -> Option<usize> {
    while let Some(b) = bytes.get(pos) {
        if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            return Some(pos);
        }
        pos += 1;
    }
    Some(pos)
}

/// One past the closing quote of the string that starts at `pos`.
fn skip_string(bytes: &[u8], pos: usize) -> Option<usize> {
    if bytes.get(pos) != Some(&b'"') {
        return None;
    }
    let mut i = pos + 1;
    loop {
        let rest = bytes.get(i..)?;
        let step = rest.iter().position(|b| *b == b'"' || *b == b'\\')?;
        i += step;
        if bytes.get(i) == Some(&b'"') {
            return Some(i + 1);
        }
        i += 2;
    }
}

/// One past the end of the value that starts at `pos`.
fn skip_value(bytes: &[u8], pos: usize) -> Option<usize> {
    match bytes.get(pos)? {
        b'"' => skip_string(bytes, pos),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = pos;
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i = skip_string(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let rest = bytes.get(pos..)?;
            let len = rest
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(rest.len());
            (len > 0).then_some(pos + len)
        }
    }
}

/// The text of a JSON string value (`"..."`), unescaped only when it has escapes.
pub fn string_value(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

/// Whether a JSON text's strings hold a `\u` escape of an unpaired UTF-16 surrogate: valid
/// JSON syntax that no string can hold (serde_json refuses to decode it, so such data could
/// be stored but never read back).
pub fn has_lone_surrogate(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    // The last escape was a high surrogate: the next character must be a low one's escape.
    let mut high = false;
    while let Some(&b) = bytes.get(i) {
        if b != b'\\' {
            if high {
                return true;
            }
            i += 1;
            continue;
        }
        if bytes.get(i + 1) != Some(&b'u') {
            if high {
                return true;
            }
            i += 2;
            continue;
        }
        let Some(unit) = bytes
            .get(i + 2..i + 6)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
        else {
            // Not an escape JSON allows: the parser refuses the text itself.
            return false;
        };
        let is_low = (0xDC00..=0xDFFF).contains(&unit);
        if high != is_low {
            return true;
        }
        high = !high && (0xD800..=0xDBFF).contains(&unit);
        i += 6;
    }
    high
}

/// How many values a JSON object's text holds at any depth (the object itself not
/// counted), and whether it has whitespace outside strings. Stops counting past `max`.
pub fn census(data: &str, max: usize) -> (usize, bool) {
    let bytes = data.as_bytes();
    let mut count = 0usize;
    let mut spaced = false;
    // Values start after `:` (members), after `[` or `,` inside arrays, and the
    // top-level object is not counted: count `:` and array elements instead.
    let mut stack: Vec<bool> = Vec::new(); // true = array
    let mut i = 0;
    let mut expect_element = false;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                if expect_element {
                    count += 1;
                    expect_element = false;
                }
                match skip_string(bytes, i) {
                    Some(end) => i = end,
                    None => return (count, spaced),
                }
                continue;
            }
            b' ' | b'\t' | b'\n' | b'\r' => spaced = true,
            b':' => count += 1,
            b'{' | b'[' => {
                if expect_element {
                    count += 1;
                }
                stack.push(b == b'[');
                expect_element = b == b'[';
            }
            b'}' | b']' => {
                stack.pop();
                expect_element = false;
            }
            b',' => expect_element = stack.last() == Some(&true),
            _ => {
                if expect_element {
                    count += 1;
                    expect_element = false;
                }
            }
        }
        if count > max {
            return (count, spaced);
        }
        i += 1;
    }
    (count, spaced)
}

/// The text without whitespace outside strings.
pub fn compact(data: &str) -> String {
    let bytes = data.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                let end = skip_string(bytes, i).unwrap_or(bytes.len());
                out.extend_from_slice(bytes.get(i..end).unwrap_or_default());
                i = end;
                continue;
            }
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| data.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonpath::JsonPath;
    use proptest::prelude::*;
    use serde_json::Value;

    // Exactly the texts serde_json cannot decode for a lone surrogate are flagged: a pair, an
    // escaped backslash before `u`, and other escapes are fine.
    #[test]
    fn lone_surrogates_are_found() {
        for (text, lone) in [
            (r#"{"a":"\ud800"}"#, true),
            (r#"{"a":"\udc00"}"#, true),
            (r#"{"a":"\ud800x"}"#, true),
            (r#"{"a":"\ud800\n"}"#, true),
            (r#"{"a":"\ud800\u0041"}"#, true),
            (r#"{"a":"\ud800\ud800\udc00"}"#, true),
            (r#"{"a":"\ud83d\ude00"}"#, false),
            (r#"{"a":"\\ud800"}"#, false),
            (r#"{"a":"\u00e9\n\"x"}"#, false),
            (r#"{"a":"plain","b":[1,2]}"#, false),
        ] {
            assert_eq!(has_lone_surrogate(text), lone, "{text}");
            assert_eq!(
                serde_json::from_str::<Value>(text).is_err(),
                lone,
                "serde_json on {text}"
            );
        }
    }

    fn steps(path: &str) -> Vec<Step> {
        JsonPath::parse(path)
            .expect("a valid path")
            .steps()
            .to_vec()
    }

    #[test]
    fn paths_find_values_in_text() {
        let data = r#"{ "tokens": 12.5, "model" : "gpt-4", "a b": {"c": [1, {"d": "x\"y"}]}, "e\u0041": true }"#;
        assert_eq!(lookup(data, &steps("$.tokens")), RawFound::Value("12.5"));
        assert_eq!(
            lookup(data, &steps("$.model")),
            RawFound::Value("\"gpt-4\"")
        );
        assert_eq!(
            lookup(data, &steps("$['a b'].c[1].d")),
            RawFound::Value(r#""x\"y""#)
        );
        assert_eq!(lookup(data, &steps("$['a b'].c[2]")), RawFound::Missing);
        assert_eq!(lookup(data, &steps("$.eA")), RawFound::Value("true"));
        assert_eq!(lookup(data, &steps("$.nope")), RawFound::Missing);
        assert_eq!(lookup(data, &steps("$.tokens.x")), RawFound::Missing);
        assert_eq!(lookup(data, &steps("$")), RawFound::Root);
        assert_eq!(
            lookup(r#"{"k":1,"k":2}"#, &steps("$.k")),
            RawFound::Value("2")
        );
        assert_eq!(lookup("{}", &steps("$.k")), RawFound::Missing);
        assert_eq!(lookup("", &steps("$.k")), RawFound::Missing);
        assert_eq!(lookup("{\"k\":", &steps("$.k")), RawFound::Missing);
    }

    #[test]
    fn census_counts_values_at_any_depth() {
        assert_eq!(census("{}", 100), (0, false));
        assert_eq!(census(r#"{"a":1}"#, 100), (1, false));
        assert_eq!(census(r#"{"a": [1, 2, {"b": 3}]}"#, 100), (5, true));
        assert_eq!(census(r#"{"a":[],"b":[[]],"c":"x,[y"}"#, 100), (4, false));
        assert_eq!(
            compact("{ \"a b\" : [ 1 , \"x y\" ] }"),
            r#"{"a b":[1,"x y"]}"#
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "[a-z\"\\\\ ,:\\[\\]{}]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c ]{1,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn count(value: &Value) -> usize {
        match value {
            Value::Object(m) => m.values().map(|v| 1 + count(v)).sum(),
            Value::Array(a) => a.iter().map(|v| 1 + count(v)).sum(),
            _ => 0,
        }
    }

    proptest! {
        // Whatever the object, the text lookup agrees with the tree lookup, and the
        // census with a walk of the tree, pretty-printed or not.
        #[test]
        fn text_agrees_with_the_tree(map in prop::collection::btree_map("[a-c ]{1,2}", arb_json(), 0..5),
                                     key in "[a-c ]{1,2}", index in 0usize..4, pretty in any::<bool>()) {
            let root = Value::Object(map.into_iter().collect());
            let text = if pretty { serde_json::to_string_pretty(&root) } else { serde_json::to_string(&root) }
                .unwrap_or_default();
            for path in [format!("$['{key}']"), format!("$['{key}'][{index}]"), format!("$['{key}']['{key}']")] {
                let parsed = JsonPath::parse(&path).expect("a valid path");
                let expected = parsed.lookup(&root).cloned();
                let found = match lookup(&text, parsed.steps()) {
                    RawFound::Value(raw) => serde_json::from_str::<Value>(raw).ok(),
                    _ => None,
                };
                prop_assert_eq!(found, expected, "path {} in {}", path, text);
            }
            prop_assert_eq!(census(&text, usize::MAX).0, count(&root));
            prop_assert_eq!(serde_json::from_str::<Value>(&compact(&text)).ok(), Some(root));
        }
    }
}
