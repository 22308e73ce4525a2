//! The meter model, its validation (OpenMeter's rules) and value extraction.

use crate::aggregate::{Aggregation, SampleValue};
use crate::event::{CloudEvent, rfc3339};
use crate::jsonpath::{Found, JsonPath, go_float_text, go_value_text};
use crate::quantity::Quantity;
use crate::rawjson::{self, RawFound};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A meter: which events count (`eventType`, `eventFrom`), what value each carries
/// (`valueProperty`), how it aggregates and which dimensions group it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meter {
    pub id: String,
    #[serde(skip)]
    pub namespace: String,
    pub slug: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    pub aggregation: Aggregation,
    pub event_type: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339::option"
    )]
    pub event_from: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_property: Option<String>,
    #[serde(default)]
    pub group_by: BTreeMap<String, String>,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339::option"
    )]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// `MeterCreate` of OpenMeter's API (also the shape of a meter in the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeterCreate {
    pub slug: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    pub aggregation: String,
    pub event_type: String,
    #[serde(default, with = "rfc3339::option")]
    pub event_from: Option<DateTime<Utc>>,
    #[serde(default)]
    pub value_property: Option<String>,
    #[serde(default)]
    pub group_by: Option<BTreeMap<String, String>>,
}

/// `MeterUpdate`: only the fields that keep history intact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeterUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub group_by: Option<BTreeMap<String, String>>,
}

/// Why a meter definition is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeterError {
    #[error(
        "slug must be 1 to 64 characters of lowercase letters, digits and single underscores: {0:?}"
    )]
    Slug(String),
    #[error("name must be 1 to 256 characters")]
    Name,
    #[error("description must be at most 1024 characters")]
    Description,
    #[error(
        "invalid aggregation {0:?}: must be one of SUM, COUNT, UNIQUE_COUNT, AVG, MIN, MAX, LATEST"
    )]
    Aggregation(String),
    #[error("meter event type is required")]
    EventType,
    #[error("meter value property is required for aggregation {0}")]
    ValuePropertyRequired(&'static str),
    #[error("meter value property is not allowed for aggregation COUNT")]
    ValuePropertyForbidden,
    #[error("meter value property must be a JSONPath starting with $: {0}")]
    ValueProperty(String),
    #[error("meter group by key {0:?} must match ^[a-zA-Z_][0-9a-zA-Z_]*$")]
    GroupByKey(String),
    #[error("meter group by {key:?} must be a JSONPath starting with $: {path}")]
    GroupByPath { key: String, path: String },
    #[error("meter group by {0:?} cannot be the same as the value property")]
    GroupByIsValue(String),
    #[error("meter group by cannot drop keys of an existing meter: missing {0:?}")]
    GroupByDropped(String),
}

/// Is `text` a key in OpenMeter's key pattern `^[a-z0-9]+(?:_[a-z0-9]+)*$`, 1–64 long?
pub fn is_key(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && !text.starts_with('_')
        && !text.ends_with('_')
        && !text.contains("__")
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn is_group_key(text: &str) -> bool {
    let mut bytes = text.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_group_by(
    group_by: &BTreeMap<String, String>,
    value_property: Option<&str>,
) -> Result<(), MeterError> {
    for (key, path) in group_by {
        if !is_group_key(key) {
            return Err(MeterError::GroupByKey(key.clone()));
        }
        if JsonPath::parse(path).is_err() {
            return Err(MeterError::GroupByPath {
                key: key.clone(),
                path: path.clone(),
            });
        }
        if Some(path.as_str()) == value_property {
            return Err(MeterError::GroupByIsValue(key.clone()));
        }
    }
    Ok(())
}

impl MeterCreate {
    /// Validates the definition and builds the meter; the caller supplies the id and
    /// the time (the engine has no clock).
    pub fn into_meter(
        self,
        id: String,
        namespace: &str,
        now: DateTime<Utc>,
    ) -> Result<Meter, MeterError> {
        if !is_key(&self.slug) {
            return Err(MeterError::Slug(self.slug));
        }
        let name = self
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| self.slug.clone());
        if name.chars().count() > 256 {
            return Err(MeterError::Name);
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 1024)
        {
            return Err(MeterError::Description);
        }
        let aggregation = Aggregation::parse(&self.aggregation)
            .ok_or(MeterError::Aggregation(self.aggregation))?;
        if self.event_type.trim().is_empty() {
            return Err(MeterError::EventType);
        }
        let value_property = self.value_property.filter(|v| !v.is_empty());
        match (&value_property, aggregation) {
            (Some(_), Aggregation::Count) => return Err(MeterError::ValuePropertyForbidden),
            (None, Aggregation::Count) => {}
            (None, other) => return Err(MeterError::ValuePropertyRequired(other.as_str())),
            (Some(path), _) => {
                if JsonPath::parse(path).is_err() {
                    return Err(MeterError::ValueProperty(path.clone()));
                }
            }
        }
        let group_by = self.group_by.unwrap_or_default();
        check_group_by(&group_by, value_property.as_deref())?;
        Ok(Meter {
            id,
            namespace: namespace.to_owned(),
            slug: self.slug,
            name,
            description: self.description,
            metadata: self.metadata.unwrap_or_default(),
            aggregation,
            event_type: self.event_type,
            event_from: self.event_from,
            value_property,
            group_by,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        })
    }
}

impl Meter {
    /// Applies an update. Group-by keys may be added, never removed (their history stays queryable).
    pub fn apply_update(
        &mut self,
        update: MeterUpdate,
        now: DateTime<Utc>,
    ) -> Result<(), MeterError> {
        if let Some(name) = update.name.filter(|n| !n.is_empty()) {
            if name.chars().count() > 256 {
                return Err(MeterError::Name);
            }
            self.name = name;
        }
        if let Some(description) = update.description {
            if description.chars().count() > 1024 {
                return Err(MeterError::Description);
            }
            self.description = Some(description);
        }
        if let Some(metadata) = update.metadata {
            self.metadata = metadata;
        }
        if let Some(group_by) = update.group_by {
            check_group_by(&group_by, self.value_property.as_deref())?;
            if let Some(dropped) = self.group_by.keys().find(|k| !group_by.contains_key(*k)) {
                return Err(MeterError::GroupByDropped(dropped.clone()));
            }
            self.group_by = group_by;
        }
        self.updated_at = now;
        Ok(())
    }

    /// The compiled form used on the hot path.
    pub fn compile(&self) -> CompiledMeter {
        CompiledMeter {
            aggregation: self.aggregation,
            event_type: self.event_type.clone(),
            event_from_ms: self.event_from.map(|t| t.timestamp_millis()),
            value: self
                .value_property
                .as_deref()
                .and_then(|p| JsonPath::parse(p).ok()),
            value_text: self.value_property.clone().unwrap_or_default(),
            group_by: self
                .group_by
                .iter()
                .map(|(k, p)| (k.clone(), JsonPath::parse(p).ok()))
                .collect(),
        }
    }
}

/// A meter ready to extract samples: its paths parsed once.
#[derive(Debug, Clone)]
pub struct CompiledMeter {
    pub aggregation: Aggregation,
    pub event_type: String,
    pub event_from_ms: Option<i64>,
    value: Option<JsonPath>,
    value_text: String,
    /// Group-by keys in key order, with their paths.
    group_by: Vec<(String, Option<JsonPath>)>,
}

/// What an event contributes to a meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub value: SampleValue,
    /// The group-by values in the meter's key order; a missing path gives "".
    pub group: Vec<String>,
}

/// The outcome of reading one event with one meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extract {
    /// The event is not for this meter (another type, or before `eventFrom`).
    Skip,
    /// The event is for this meter but carries no usable value: OpenMeter's `validationError`.
    Invalid(String),
    Sample(Sample),
}

impl CompiledMeter {
    pub fn group_keys(&self) -> impl Iterator<Item = &str> {
        self.group_by.iter().map(|(k, _)| k.as_str())
    }

    /// Does the event belong to this meter?
    pub fn matches(&self, event: &CloudEvent) -> bool {
        self.matches_at(&event.event_type, event.time.timestamp_millis())
    }

    /// [`Self::matches`] on an event's type and time (milliseconds).
    pub fn matches_at(&self, event_type: &str, time_ms: i64) -> bool {
        event_type == self.event_type && self.event_from_ms.is_none_or(|from| time_ms >= from)
    }

    /// Reads the event's value and group-by values, with OpenMeter's parse rules and texts.
    pub fn extract(&self, event: &CloudEvent) -> Extract {
        if !self.matches(event) {
            return Extract::Skip;
        }
        self.extract_data(event.data.as_ref())
    }

    /// [`Self::extract`] on the data alone (the event is known to match).
    pub fn extract_data(&self, data: Option<&Map<String, Value>>) -> Extract {
        self.extract_with(data.is_some(), |path| {
            match data.map(|d| path.lookup_in(d)) {
                None | Some(Found::Missing) => Leaf::Missing,
                Some(Found::Value(value)) => Leaf::of_value(value),
                Some(Found::Root) => match data {
                    Some(d) => Leaf::Composite(Cow::Owned(Value::Object(d.clone()))),
                    None => Leaf::Missing,
                },
            }
        })
    }

    /// [`Self::extract_data`] on the data object's JSON text (a record's), reading only
    /// the values the meter's paths name.
    pub fn extract_text(&self, data: Option<&str>) -> Extract {
        self.extract_with(data.is_some(), |path| {
            match data.map(|d| rawjson::lookup(d, path.steps())) {
                None | Some(RawFound::Missing) => Leaf::Missing,
                Some(RawFound::Value(raw)) => Leaf::of_text(raw),
                Some(RawFound::Root) => data.map_or(Leaf::Missing, Leaf::of_text),
            }
        })
    }

    fn extract_with<'a>(&self, has_data: bool, find: impl Fn(&JsonPath) -> Leaf<'a>) -> Extract {
        let group = self
            .group_by
            .iter()
            .map(|(_, path)| match path {
                Some(path) if has_data => find(path).go_text(),
                _ => String::new(),
            })
            .collect();
        if self.aggregation == Aggregation::Count {
            return Extract::Sample(Sample {
                value: SampleValue::One,
                group,
            });
        }
        if !has_data {
            return invalid("null and missing value property");
        }
        let Some(path) = &self.value else {
            return invalid("non count meter value property is missing");
        };
        let leaf = find(path);
        match leaf {
            Leaf::Missing => {
                return invalid(&format!("missing value property: {:?}", self.value_text));
            }
            Leaf::Null => return invalid("value cannot be null"),
            _ => {}
        }
        if self.aggregation == Aggregation::UniqueCount {
            return Extract::Sample(Sample {
                value: SampleValue::Text(leaf.go_text()),
                group,
            });
        }
        let number = match &leaf {
            Leaf::Text(text) => Quantity::parse(text),
            Leaf::Number(text) => Quantity::parse(text),
            Leaf::Bool(_) => return invalid("unsupported value property type: bool"),
            Leaf::Composite(value) if value.is_array() => {
                return invalid("unsupported value property type: []interface {}");
            }
            Leaf::Composite(_) => {
                return invalid("unsupported value property type: map[string]interface {}");
            }
            Leaf::Missing | Leaf::Null => return invalid("value cannot be null"),
        };
        match number {
            Ok(value) => Extract::Sample(Sample {
                value: SampleValue::Number(value),
                group,
            }),
            Err(error) => invalid(&error.to_string()),
        }
    }
}

/// A value a meter's path found, from a decoded tree or from JSON text.
enum Leaf<'a> {
    Missing,
    Null,
    Bool(bool),
    /// A JSON number's text.
    Number(Cow<'a, str>),
    /// A JSON string's (unescaped) text.
    Text(Cow<'a, str>),
    /// An array or an object.
    Composite(Cow<'a, Value>),
}

impl<'a> Leaf<'a> {
    fn of_value(value: &'a Value) -> Self {
        match value {
            Value::Null => Leaf::Null,
            Value::Bool(b) => Leaf::Bool(*b),
            Value::Number(n) => Leaf::Number(Cow::Borrowed(n.as_str())),
            Value::String(s) => Leaf::Text(Cow::Borrowed(s)),
            Value::Array(_) | Value::Object(_) => Leaf::Composite(Cow::Borrowed(value)),
        }
    }

    fn of_text(raw: &'a str) -> Self {
        match raw.as_bytes().first() {
            Some(b'"') => rawjson::string_value(raw).map_or(Leaf::Missing, Leaf::Text),
            Some(b'{' | b'[') => {
                serde_json::from_str(raw).map_or(Leaf::Missing, |v| Leaf::Composite(Cow::Owned(v)))
            }
            Some(b't') => Leaf::Bool(true),
            Some(b'f') => Leaf::Bool(false),
            Some(b'n') => Leaf::Null,
            Some(_) => Leaf::Number(Cow::Borrowed(raw)),
            None => Leaf::Missing,
        }
    }

    /// Go's `%v` text of the value ("" when missing).
    fn go_text(&self) -> String {
        match self {
            Leaf::Missing => String::new(),
            Leaf::Null => "<nil>".to_owned(),
            Leaf::Bool(b) => b.to_string(),
            Leaf::Number(text) => match text.parse::<f64>() {
                Ok(f) if f.is_finite() => go_float_text(f),
                _ => text.to_string(),
            },
            Leaf::Text(text) => text.to_string(),
            Leaf::Composite(value) => go_value_text(value),
        }
    }
}

fn invalid(reason: &str) -> Extract {
    Extract::Invalid(format!("invalid event: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{parse_event, parse_time};
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        parse_time("2024-01-01T00:00:00Z").unwrap_or_default()
    }

    fn create(aggregation: &str, value: Option<&str>) -> MeterCreate {
        MeterCreate {
            slug: "m1".into(),
            name: None,
            description: None,
            metadata: None,
            aggregation: aggregation.into(),
            event_type: "request".into(),
            event_from: None,
            value_property: value.map(str::to_owned),
            group_by: Some(BTreeMap::from([
                ("method".into(), "$.method".into()),
                ("path".into(), "$.path".into()),
            ])),
        }
    }

    fn meter(aggregation: &str, value: Option<&str>) -> CompiledMeter {
        create(aggregation, value)
            .into_meter("01J".into(), "default", now())
            .expect("valid meter")
            .compile()
    }

    fn event(data: Value) -> CloudEvent {
        let mut e = json!({"id": "1", "source": "s", "type": "request", "subject": "c", "time": "2024-01-01T00:00:00Z"});
        if !data.is_null() {
            e["data"] = data;
        }
        parse_event(e, now()).expect("event")
    }

    #[test]
    fn meter_validation_follows_openmeter() {
        assert_eq!(
            create("COUNT", Some("$.x")).into_meter("i".into(), "d", now()),
            Err(MeterError::ValuePropertyForbidden)
        );
        assert_eq!(
            create("SUM", None).into_meter("i".into(), "d", now()),
            Err(MeterError::ValuePropertyRequired("SUM"))
        );
        assert!(matches!(
            create("SUM", Some("x")).into_meter("i".into(), "d", now()),
            Err(MeterError::ValueProperty(_))
        ));
        assert!(matches!(
            create("TOTAL", None).into_meter("i".into(), "d", now()),
            Err(MeterError::Aggregation(_))
        ));
        let mut bad_slug = create("COUNT", None);
        bad_slug.slug = "Bad-Slug".into();
        assert!(matches!(
            bad_slug.into_meter("i".into(), "d", now()),
            Err(MeterError::Slug(_))
        ));
        let mut same = create("SUM", Some("$.method"));
        same.group_by = Some(BTreeMap::from([("m".into(), "$.method".into())]));
        assert_eq!(
            same.into_meter("i".into(), "d", now()),
            Err(MeterError::GroupByIsValue("m".into()))
        );
        let mut bad_key = create("COUNT", None);
        bad_key.group_by = Some(BTreeMap::from([("1x".into(), "$.a".into())]));
        assert!(matches!(
            bad_key.into_meter("i".into(), "d", now()),
            Err(MeterError::GroupByKey(_))
        ));
        assert!(is_key("tokens_total") && !is_key("a__b") && !is_key("_a") && !is_key(""));
    }

    #[test]
    fn extraction_gives_openmeter_validation_errors() {
        let sum = meter("SUM", Some("$.duration_ms"));
        let cases = [
            (
                Value::Null,
                Err("invalid event: null and missing value property"),
            ),
            (
                json!({}),
                Err("invalid event: missing value property: \"$.duration_ms\""),
            ),
            (
                json!({"duration_ms": null}),
                Err("invalid event: value cannot be null"),
            ),
            (
                json!({"duration_ms": "NaN"}),
                Err("invalid event: value cannot be NaN"),
            ),
            (
                json!({"duration_ms": "Inf"}),
                Err("invalid event: value cannot be infinity"),
            ),
            (
                json!({"duration_ms": "abc"}),
                Err("invalid event: value cannot be parsed as float64: abc"),
            ),
            (
                json!({"duration_ms": true}),
                Err("invalid event: unsupported value property type: bool"),
            ),
            (json!({"duration_ms": "100"}), Ok("100")),
            (json!({"duration_ms": 2.5, "method": "GET"}), Ok("2.5")),
            (
                json!({"duration_ms": "0.0000000000000000001"}),
                Err(
                    "invalid event: value has more than 18 fractional digits and cannot be kept exactly: 0.0000000000000000001 (values have at most 38 integer and 18 fractional digits)",
                ),
            ),
            // JSON numbers are read from their text, never through f64.
            (
                serde_json::from_str(r#"{"duration_ms": 12345678901234567890.123456789012345678}"#)
                    .unwrap_or_default(),
                Ok("12345678901234567890.123456789012345678"),
            ),
            (
                serde_json::from_str(r#"{"duration_ms": 1e38}"#).unwrap_or_default(),
                Err(
                    "invalid event: value has more than 38 integer digits and cannot be kept exactly: 1e+38 (values have at most 38 integer and 18 fractional digits)",
                ),
            ),
        ];
        for (data, expected) in cases {
            let got = match sum.extract(&event(data.clone())) {
                Extract::Sample(Sample {
                    value: SampleValue::Number(v),
                    ..
                }) => Ok(v.to_string()),
                Extract::Invalid(text) => Err(text),
                other => Err(format!("{other:?}")),
            };
            assert_eq!(
                got,
                expected.map(str::to_owned).map_err(str::to_owned),
                "data {data}"
            );
        }
    }

    #[test]
    fn group_by_values_and_counts() {
        let count = meter("COUNT", None);
        let got = count.extract(&event(json!({"method": "GET", "path": 12})));
        assert_eq!(
            got,
            Extract::Sample(Sample {
                value: SampleValue::One,
                group: vec!["GET".into(), "12".into()]
            })
        );
        let got = count.extract(&event(Value::Null));
        assert_eq!(
            got,
            Extract::Sample(Sample {
                value: SampleValue::One,
                group: vec![String::new(), String::new()]
            })
        );
        let unique = meter("UNIQUE_COUNT", Some("$.user"));
        let got = unique.extract(&event(json!({"user": 1000000})));
        assert!(
            matches!(got, Extract::Sample(Sample { value: SampleValue::Text(ref t), .. }) if t == "1e+06")
        );
        let mut other = event(json!({}));
        other.event_type = "other".into();
        assert_eq!(count.extract(&other), Extract::Skip);
    }

    fn arb_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e9f64..1e9)
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            Just(json!(1e300)),
            "[a-z0-9.\\\" ]{0,5}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::btree_map("[ab]", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        // A record's data is read as text, an event's as a tree: every meter reads the
        // same samples and the same validation errors from both, pretty-printed or not.
        #[test]
        fn text_and_tree_extract_alike(
            data in proptest::collection::btree_map("[ab]", arb_value(), 0..4),
            pretty in proptest::prelude::any::<bool>(),
        ) {
            let data: Map<String, Value> = data.into_iter().collect();
            let object = Value::Object(data.clone());
            let text = if pretty { serde_json::to_string_pretty(&object) } else { serde_json::to_string(&object) }
                .expect("json");
            for aggregation in ["SUM", "COUNT", "UNIQUE_COUNT", "MAX"] {
                for value in ["$.a", "$.a.b", "$.b[1]", "$"] {
                    let mut c = create(aggregation, (aggregation != "COUNT").then_some(value));
                    c.group_by = Some(BTreeMap::from([
                        ("x".into(), "$.a.a".into()),
                        ("y".into(), "$.b[0]".into()),
                        ("z".into(), "$.b.a".into()),
                    ]));
                    let m = c.into_meter("01J".into(), "default", now()).expect("valid meter").compile();
                    proptest::prop_assert_eq!(m.extract_text(Some(&text)), m.extract_data(Some(&data)));
                    proptest::prop_assert_eq!(m.extract_text(None), m.extract_data(None));
                }
            }
        }
    }
}
