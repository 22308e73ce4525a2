//! The CloudEvent model and its validation, with OpenMeter's rules.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A validated usage event. `time` is always set (UTC); `data` is a JSON object or absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub id: String,
    pub source: String,
    pub specversion: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub subject: String,
    #[serde(with = "rfc3339")]
    pub time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
}

/// An accepted event as the stream and the `events` table keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestedEvent {
    pub namespace: String,
    #[serde(with = "rfc3339")]
    pub ingested_at: DateTime<Utc>,
    pub event: CloudEvent,
}

impl IngestedEvent {
    /// The stream's record payload.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a record payload back.
    pub fn decode(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

/// How the request body carries its events, decided by its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/cloudevents+json`: one event.
    Single,
    /// `application/cloudevents-batch+json`: an array of events.
    Batch,
    /// `application/json`: an object or an array.
    Json,
}

/// What one request may carry, checked before anything of it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// Events in one request.
    pub events_per_request_max: usize,
    /// Bytes of `id`, `source`, `type` and `subject` each.
    pub attribute_bytes_max: usize,
    /// Properties of `data`, at any depth.
    pub data_values_max: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self {
            events_per_request_max: 10_000,
            attribute_bytes_max: 4096,
            data_values_max: 10_000,
        }
    }
}

/// Why one event is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event must be a JSON object")]
    NotAnObject,
    #[error("{field}: REQUIRED but MISSING")]
    Missing { field: &'static str },
    #[error("{field}: MUST be a non-empty string")]
    NotAString { field: &'static str },
    #[error("specversion: unknown value {0:?}, only \"1.0\" is supported")]
    SpecVersion(String),
    #[error("time: {0:?} is not an RFC 3339 timestamp")]
    Time(String),
    #[error("datacontenttype: unsupported {0:?}, only application/json is accepted")]
    ContentType(String),
    #[error("dataschema: MUST be a string")]
    DataSchema,
    #[error("data: MUST be a JSON object, got {0}")]
    Data(&'static str),
    #[error("{field}: longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("data: more than {max} values")]
    TooManyValues { max: usize },
}

/// Why a request body carries no valid events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("no events found")]
    Empty,
    #[error("expected a JSON array of events")]
    NotAnArray,
    #[error("invalid event: {0}")]
    Event(EventError),
    #[error("invalid event at index {index}: {error}")]
    EventAt { index: usize, error: EventError },
    #[error("{count} events in one request; at most {max}")]
    TooManyEvents { count: usize, max: usize },
}

/// Parses a request body into validated events. A batch with one invalid event is
/// rejected whole, naming the index of the bad event.
pub fn parse_events(
    body: &[u8],
    kind: BodyKind,
    now: DateTime<Utc>,
) -> Result<Vec<CloudEvent>, BodyError> {
    parse_events_within(body, kind, now, &EventLimits::default())
}

/// [`parse_events`] with explicit limits.
pub fn parse_events_within(
    body: &[u8],
    kind: BodyKind,
    now: DateTime<Utc>,
    limits: &EventLimits,
) -> Result<Vec<CloudEvent>, BodyError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| BodyError::Json(e.to_string()))?;
    let one = |value| {
        parse_event(value, now)
            .and_then(|e| check_limits(e, limits))
            .map_err(BodyError::Event)
    };
    match (kind, value) {
        (BodyKind::Single, value) => Ok(vec![one(value)?]),
        (BodyKind::Json, Value::Object(map)) => Ok(vec![one(Value::Object(map))?]),
        (BodyKind::Batch | BodyKind::Json, Value::Array(items)) => {
            if items.is_empty() {
                return Err(BodyError::Empty);
            }
            if items.len() > limits.events_per_request_max {
                return Err(BodyError::TooManyEvents {
                    count: items.len(),
                    max: limits.events_per_request_max,
                });
            }
            items
                .into_iter()
                .enumerate()
                .map(|(index, item)| {
                    parse_event(item, now)
                        .and_then(|e| check_limits(e, limits))
                        .map_err(|error| BodyError::EventAt { index, error })
                })
                .collect()
        }
        (BodyKind::Batch, _) => Err(BodyError::NotAnArray),
        (BodyKind::Json, Value::Null) => Err(BodyError::Empty),
        (BodyKind::Json, _) => Err(BodyError::Event(EventError::NotAnObject)),
    }
}

/// Validates one event; a missing `time` becomes `now`, a missing `specversion` "1.0".
pub fn parse_event(value: Value, now: DateTime<Utc>) -> Result<CloudEvent, EventError> {
    let Value::Object(mut map) = value else {
        return Err(EventError::NotAnObject);
    };
    let id = required_string(&mut map, "id")?;
    let source = required_string(&mut map, "source")?;
    let specversion = match map.remove("specversion") {
        None | Some(Value::Null) => "1.0".to_owned(),
        Some(Value::String(v)) if v == "1.0" => v,
        Some(Value::String(v)) => return Err(EventError::SpecVersion(v)),
        Some(_) => {
            return Err(EventError::NotAString {
                field: "specversion",
            });
        }
    };
    let event_type = required_string(&mut map, "type")?;
    let subject = required_string(&mut map, "subject")?;
    let time = match map.remove("time") {
        None | Some(Value::Null) => now,
        Some(Value::String(text)) => parse_time(&text).ok_or(EventError::Time(text))?,
        Some(other) => return Err(EventError::Time(other.to_string())),
    };
    let datacontenttype = match map.remove("datacontenttype") {
        None | Some(Value::Null) => None,
        Some(Value::String(ct)) => {
            let essence = ct
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if essence != "application/json" {
                return Err(EventError::ContentType(ct));
            }
            Some(ct)
        }
        Some(other) => return Err(EventError::ContentType(other.to_string())),
    };
    let dataschema = match map.remove("dataschema") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(EventError::DataSchema),
    };
    let data = match map.remove("data") {
        None | Some(Value::Null) => None,
        Some(Value::Object(data)) => Some(data),
        Some(Value::String(_)) => return Err(EventError::Data("a string")),
        Some(Value::Array(_)) => return Err(EventError::Data("an array")),
        Some(Value::Number(_)) => return Err(EventError::Data("a number")),
        Some(Value::Bool(_)) => return Err(EventError::Data("a boolean")),
    };
    if map.contains_key("data_base64") {
        return Err(EventError::Data("base64 data"));
    }
    Ok(CloudEvent {
        id,
        source,
        specversion,
        event_type,
        subject,
        time,
        datacontenttype,
        dataschema,
        data,
    })
}

fn check_limits(event: CloudEvent, limits: &EventLimits) -> Result<CloudEvent, EventError> {
    let max = limits.attribute_bytes_max;
    for (field, value) in [
        ("id", &event.id),
        ("source", &event.source),
        ("type", &event.event_type),
        ("subject", &event.subject),
    ] {
        if value.len() > max {
            return Err(EventError::TooLong { field, max });
        }
    }
    if let Some(data) = &event.data {
        let mut budget = limits.data_values_max;
        let mut stack: Vec<&Value> = data.values().collect();
        while let Some(value) = stack.pop() {
            budget = budget.checked_sub(1).ok_or(EventError::TooManyValues {
                max: limits.data_values_max,
            })?;
            match value {
                Value::Object(map) => stack.extend(map.values()),
                Value::Array(items) => stack.extend(items.iter()),
                _ => {}
            }
        }
    }
    Ok(event)
}

fn required_string(
    map: &mut Map<String, Value>,
    field: &'static str,
) -> Result<String, EventError> {
    match map.remove(field) {
        None | Some(Value::Null) => Err(EventError::Missing { field }),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(EventError::NotAString { field }),
    }
}

/// RFC 3339 with optional fractional seconds, normalised to UTC.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// RFC 3339 in UTC, with as many fractional digits as needed (none for whole seconds).
pub fn format_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Serde for RFC 3339 timestamps printed the way OpenMeter prints them.
pub mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        time: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_time(time))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_time(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid RFC 3339 time {text:?}")))
    }

    /// The same for an optional timestamp.
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            time: &Option<DateTime<Utc>>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match time {
                Some(t) => serializer.serialize_str(&super::super::format_time(t)),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            match Option::<String>::deserialize(deserializer)? {
                None => Ok(None),
                Some(text) => super::super::parse_time(&text).map(Some).ok_or_else(|| {
                    serde::de::Error::custom(format!("invalid RFC 3339 time {text:?}"))
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        parse_time("2024-01-02T03:04:05Z").unwrap_or_default()
    }

    fn valid() -> Value {
        json!({"id": "1", "source": "app", "specversion": "1.0", "type": "prompt", "subject": "c1",
               "time": "2024-01-01T00:00:00.123456+02:00", "data": {"tokens": 3}})
    }

    #[test]
    fn a_valid_event_is_normalised_to_utc() {
        let event = parse_event(valid(), now()).expect("valid");
        assert_eq!(format_time(&event.time), "2023-12-31T22:00:00.123456Z");
        assert_eq!(
            event.data.as_ref().and_then(|d| d.get("tokens")),
            Some(&json!(3))
        );
    }

    #[test]
    fn invalid_events_name_the_field() {
        let cases: Vec<(&str, Value, EventError)> = vec![
            ("id", Value::Null, EventError::Missing { field: "id" }),
            ("id", json!(""), EventError::NotAString { field: "id" }),
            (
                "source",
                Value::Null,
                EventError::Missing { field: "source" },
            ),
            ("type", json!(5), EventError::NotAString { field: "type" }),
            (
                "subject",
                json!(""),
                EventError::NotAString { field: "subject" },
            ),
            (
                "specversion",
                json!("0.3"),
                EventError::SpecVersion("0.3".into()),
            ),
            (
                "time",
                json!("yesterday"),
                EventError::Time("yesterday".into()),
            ),
            ("data", json!("<xml/>"), EventError::Data("a string")),
            (
                "datacontenttype",
                json!("application/xml"),
                EventError::ContentType("application/xml".into()),
            ),
        ];
        for (field, value, expected) in cases {
            let mut event = valid();
            if let Some(map) = event.as_object_mut() {
                if value.is_null() {
                    map.remove(field);
                } else {
                    map.insert(field.to_owned(), value);
                }
            }
            assert_eq!(parse_event(event, now()), Err(expected), "field {field}");
        }
    }

    #[test]
    fn limits_are_checked_with_the_index() {
        let limits = EventLimits {
            events_per_request_max: 3,
            attribute_bytes_max: 8,
            data_values_max: 4,
        };
        let batch = |items: Vec<Value>| serde_json::to_vec(&Value::Array(items)).unwrap();
        let mut long = valid();
        long["subject"] = json!("a-subject-too-long");
        let body = batch(vec![valid(), long]);
        assert_eq!(
            parse_events_within(&body, BodyKind::Batch, now(), &limits),
            Err(BodyError::EventAt {
                index: 1,
                error: EventError::TooLong {
                    field: "subject",
                    max: 8
                }
            })
        );
        let body = batch(vec![valid(), valid(), valid(), valid()]);
        assert_eq!(
            parse_events_within(&body, BodyKind::Batch, now(), &limits),
            Err(BodyError::TooManyEvents { count: 4, max: 3 })
        );
        let mut deep = valid();
        deep["data"] = json!({"a": [1, 2, {"b": 3}]});
        let body = batch(vec![deep]);
        assert_eq!(
            parse_events_within(&body, BodyKind::Batch, now(), &limits),
            Err(BodyError::EventAt {
                index: 0,
                error: EventError::TooManyValues { max: 4 }
            })
        );
        let body = batch(vec![valid(), valid(), valid()]);
        assert_eq!(
            parse_events_within(&body, BodyKind::Batch, now(), &limits).map(|v| v.len()),
            Ok(3)
        );
    }

    #[test]
    fn missing_time_and_null_data_are_accepted() {
        let event = parse_event(
            json!({"id": "1", "source": "s", "type": "t", "subject": "x", "data": null}),
            now(),
        )
        .expect("valid");
        assert_eq!(event.time, now());
        assert_eq!(event.specversion, "1.0");
        assert!(event.data.is_none());
    }

    #[test]
    fn batches_are_rejected_whole_with_the_index() {
        let body = serde_json::to_vec(&json!([valid(), {"id": "2"}])).unwrap_or_default();
        let err = parse_events(&body, BodyKind::Batch, now()).expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "invalid event at index 1: source: REQUIRED but MISSING"
        );
        let body = serde_json::to_vec(&json!([valid(), valid()])).unwrap_or_default();
        assert_eq!(
            parse_events(&body, BodyKind::Json, now()).map(|v| v.len()),
            Ok(2)
        );
        let body = serde_json::to_vec(&valid()).unwrap_or_default();
        assert_eq!(
            parse_events(&body, BodyKind::Json, now()).map(|v| v.len()),
            Ok(1)
        );
        assert_eq!(
            parse_events(b"[]", BodyKind::Json, now()),
            Err(BodyError::Empty)
        );
        assert!(matches!(
            parse_events(b"<a/>", BodyKind::Single, now()),
            Err(BodyError::Json(_))
        ));
    }

    #[test]
    fn events_round_trip_through_json() {
        let event = parse_event(valid(), now()).expect("valid");
        let text = serde_json::to_string(&event).expect("serialise");
        let back: CloudEvent = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, event);
    }
}
