//! The CloudEvent model and its validation, with OpenMeter's rules.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, de};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;

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
    /// The stream's record payload ([`crate::record`]).
    pub fn encode(&self) -> Vec<u8> {
        crate::record::encode_event(self)
    }

    /// Reads a record payload back, of the current layout or the older JSON one.
    pub fn decode(payload: &[u8]) -> Result<Self, crate::record::RecordError> {
        crate::record::decode(payload)
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
    #[error("data: a \\u escape names half of a UTF-16 surrogate pair, not a character")]
    LoneSurrogate,
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

/// One validated event whose texts borrow the request body where they can (a text
/// with escapes is unescaped into its own string). `data` is the data object's compact
/// JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct EventParts<'a> {
    pub id: Cow<'a, str>,
    pub source: Cow<'a, str>,
    pub event_type: Cow<'a, str>,
    pub subject: Cow<'a, str>,
    pub time: DateTime<Utc>,
    pub datacontenttype: Option<Cow<'a, str>>,
    pub dataschema: Option<Cow<'a, str>>,
    pub data: Option<Cow<'a, str>>,
}

impl EventParts<'_> {
    /// The owned event, its data decoded.
    pub fn to_cloud_event(&self) -> CloudEvent {
        CloudEvent {
            id: self.id.to_string(),
            source: self.source.to_string(),
            specversion: "1.0".to_owned(),
            event_type: self.event_type.to_string(),
            subject: self.subject.to_string(),
            time: self.time,
            datacontenttype: self.datacontenttype.as_deref().map(str::to_owned),
            dataschema: self.dataschema.as_deref().map(str::to_owned),
            data: self
                .data
                .as_deref()
                .and_then(|text| match serde_json::from_str(text) {
                    Ok(Value::Object(map)) => Some(map),
                    _ => None,
                }),
        }
    }
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
    Ok(parse_parts(body, kind, now, limits)?
        .iter()
        .map(EventParts::to_cloud_event)
        .collect())
}

/// Parses a request body into validated events in one pass, without a tree of the
/// body: each event's attributes and data are read as spans of the body.
pub fn parse_parts<'a>(
    body: &'a [u8],
    kind: BodyKind,
    now: DateTime<Utc>,
    limits: &EventLimits,
) -> Result<Vec<EventParts<'a>>, BodyError> {
    // The array's items are kept up to the limit only: past it they are counted, not kept, so
    // a body of many tiny items costs no more memory than the largest batch allowed.
    let seed = TopSeed {
        max: limits.events_per_request_max,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let top = de::DeserializeSeed::deserialize(seed, &mut deserializer)
        .and_then(|top| deserializer.end().map(|()| top))
        .map_err(|e| BodyError::Json(e.to_string()))?;
    let one = |item: Item<'a>| match item {
        Item::Event(raw) => raw.validate(now, limits),
        Item::Other => Err(EventError::NotAnObject),
    };
    match (kind, top) {
        (BodyKind::Single, Top::Event(item)) => Ok(vec![one(item).map_err(BodyError::Event)?]),
        (BodyKind::Json, Top::Event(Item::Event(raw))) => {
            Ok(vec![raw.validate(now, limits).map_err(BodyError::Event)?])
        }
        (BodyKind::Batch | BodyKind::Json, Top::TooMany(count)) => Err(BodyError::TooManyEvents {
            count,
            max: limits.events_per_request_max,
        }),
        (BodyKind::Batch | BodyKind::Json, Top::Events(items)) => {
            if items.is_empty() {
                return Err(BodyError::Empty);
            }
            items
                .into_iter()
                .enumerate()
                .map(|(index, item)| one(item).map_err(|error| BodyError::EventAt { index, error }))
                .collect()
        }
        (BodyKind::Batch, _) => Err(BodyError::NotAnArray),
        (BodyKind::Json, Top::Null) => Err(BodyError::Empty),
        (BodyKind::Json, _) => Err(BodyError::Event(EventError::NotAnObject)),
        (BodyKind::Single, Top::Null | Top::Events(_) | Top::TooMany(_)) => {
            Err(BodyError::Event(EventError::NotAnObject))
        }
    }
}

/// A request body: one event, an array of them, or anything else.
enum Top<'a> {
    Event(Item<'a>),
    Events(Vec<Item<'a>>),
    /// An array of more items than allowed: how many.
    TooMany(usize),
    /// A JSON null.
    Null,
}

/// Reads a [`Top`], keeping at most `max` array items.
struct TopSeed {
    max: usize,
}

/// An array item or a single body: an object (an event to validate) or not.
enum Item<'a> {
    Event(RawEvent<'a>),
    Other,
}

/// An event's attributes as spans of JSON text, before validation (last one wins for a
/// repeated name, as in a decoded map).
#[derive(Default)]
struct RawEvent<'a> {
    id: Option<&'a RawValue>,
    source: Option<&'a RawValue>,
    specversion: Option<&'a RawValue>,
    event_type: Option<&'a RawValue>,
    subject: Option<&'a RawValue>,
    time: Option<&'a RawValue>,
    datacontenttype: Option<&'a RawValue>,
    dataschema: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    data_base64: bool,
}

/// The JSON text of a value, or `None` for a missing or null one.
fn present(raw: Option<&RawValue>) -> Option<&str> {
    raw.map(RawValue::get).filter(|t| *t != "null")
}

/// The text of a JSON string's span, or `None` when it is not a string.
fn text_of(raw: &str) -> Option<Cow<'_, str>> {
    crate::rawjson::string_value(raw)
}

impl<'a> RawEvent<'a> {
    /// OpenMeter's rules, in the order [`parse_event`] checks them, then the limits.
    fn validate(
        self,
        now: DateTime<Utc>,
        limits: &EventLimits,
    ) -> Result<EventParts<'a>, EventError> {
        let required = |raw: Option<&'a RawValue>, field: &'static str| {
            let text = present(raw).ok_or(EventError::Missing { field })?;
            match text_of(text) {
                Some(s) if !s.is_empty() => Ok(s),
                _ => Err(EventError::NotAString { field }),
            }
        };
        let id = required(self.id, "id")?;
        let source = required(self.source, "source")?;
        if let Some(text) = present(self.specversion) {
            match text_of(text) {
                Some(v) if v == "1.0" => {}
                Some(v) => return Err(EventError::SpecVersion(v.into_owned())),
                None => {
                    return Err(EventError::NotAString {
                        field: "specversion",
                    });
                }
            }
        }
        let event_type = required(self.event_type, "type")?;
        let subject = required(self.subject, "subject")?;
        let time = match present(self.time) {
            None => now,
            Some(text) => match text_of(text) {
                Some(t) => parse_time(&t).ok_or_else(|| EventError::Time(t.into_owned()))?,
                None => return Err(EventError::Time(text.to_owned())),
            },
        };
        let datacontenttype = match present(self.datacontenttype) {
            None => None,
            Some(text) => match text_of(text) {
                Some(ct) => {
                    let essence = ct
                        .split(';')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_ascii_lowercase();
                    if essence != "application/json" {
                        return Err(EventError::ContentType(ct.into_owned()));
                    }
                    Some(ct)
                }
                None => return Err(EventError::ContentType(text.to_owned())),
            },
        };
        let dataschema = match present(self.dataschema) {
            None => None,
            Some(text) => Some(text_of(text).ok_or(EventError::DataSchema)?),
        };
        let data = match present(self.data) {
            None => None,
            Some(text) => match text.as_bytes().first() {
                Some(b'{') => Some(text),
                Some(b'"') => return Err(EventError::Data("a string")),
                Some(b'[') => return Err(EventError::Data("an array")),
                Some(b't' | b'f') => return Err(EventError::Data("a boolean")),
                _ => return Err(EventError::Data("a number")),
            },
        };
        if self.data_base64 {
            return Err(EventError::Data("base64 data"));
        }
        let max = limits.attribute_bytes_max;
        for (field, value) in [
            ("id", &id),
            ("source", &source),
            ("type", &event_type),
            ("subject", &subject),
        ] {
            if value.len() > max {
                return Err(EventError::TooLong { field, max });
            }
        }
        let data = match data {
            None => None,
            Some(text) => {
                let (values, spaced) = crate::rawjson::census(text, limits.data_values_max);
                if values > limits.data_values_max {
                    return Err(EventError::TooManyValues {
                        max: limits.data_values_max,
                    });
                }
                // Accepted, such data could never be decoded again: listings would lose the
                // event, and meters its values.
                if text.contains("\\u") && crate::rawjson::has_lone_surrogate(text) {
                    return Err(EventError::LoneSurrogate);
                }
                Some(if spaced {
                    Cow::Owned(crate::rawjson::compact(text))
                } else {
                    Cow::Borrowed(text)
                })
            }
        };
        Ok(EventParts {
            id,
            source,
            event_type,
            subject,
            time,
            datacontenttype,
            dataschema,
            data,
        })
    }
}

/// The attribute names an event's reader tells apart.
enum Name {
    Id,
    Source,
    SpecVersion,
    Type,
    Subject,
    Time,
    DataContentType,
    DataSchema,
    Data,
    DataBase64,
    Other,
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Name;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an attribute name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Name, E> {
                Ok(match name {
                    "id" => Name::Id,
                    "source" => Name::Source,
                    "specversion" => Name::SpecVersion,
                    "type" => Name::Type,
                    "subject" => Name::Subject,
                    "time" => Name::Time,
                    "datacontenttype" => Name::DataContentType,
                    "dataschema" => Name::DataSchema,
                    "data" => Name::Data,
                    "data_base64" => Name::DataBase64,
                    _ => Name::Other,
                })
            }
        }
        deserializer.deserialize_identifier(V)
    }
}

/// Reads any JSON value: an object becomes an event's spans, anything else is skipped.
struct ItemVisitor;

impl<'de> de::Visitor<'de> for ItemVisitor {
    type Value = Item<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an event")
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Item<'de>, A::Error> {
        let mut raw = RawEvent::default();
        while let Some(name) = map.next_key::<Name>()? {
            let slot = match name {
                Name::Id => &mut raw.id,
                Name::Source => &mut raw.source,
                Name::SpecVersion => &mut raw.specversion,
                Name::Type => &mut raw.event_type,
                Name::Subject => &mut raw.subject,
                Name::Time => &mut raw.time,
                Name::DataContentType => &mut raw.datacontenttype,
                Name::DataSchema => &mut raw.dataschema,
                Name::Data => &mut raw.data,
                Name::DataBase64 => {
                    raw.data_base64 = true;
                    map.next_value::<de::IgnoredAny>()?;
                    continue;
                }
                Name::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<&'de RawValue>()?);
        }
        Ok(Item::Event(raw))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Item<'de>, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(Item::Other)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Item<'de>, E> {
        Ok(Item::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Item<'de>, E> {
        Ok(Item::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Item<'de>, E> {
        Ok(Item::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Item<'de>, E> {
        Ok(Item::Other)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Item<'de>, E> {
        Ok(Item::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Item<'de>, E> {
        Ok(Item::Other)
    }
    fn visit_none<E: de::Error>(self) -> Result<Item<'de>, E> {
        Ok(Item::Other)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Item<'de>, D::Error> {
        d.deserialize_any(ItemVisitor)
    }
}

impl<'de> Deserialize<'de> for Item<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ItemVisitor)
    }
}

impl<'de> de::DeserializeSeed<'de> for TopSeed {
    type Value = Top<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Top<'de>, D::Error> {
        struct V {
            max: usize,
        }
        impl<'de> de::Visitor<'de> for V {
            type Value = Top<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event or an array of events")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Top<'de>, A::Error> {
                ItemVisitor.visit_map(map).map(Top::Event)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Top<'de>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(16).min(4096));
                while items.len() < self.max {
                    match seq.next_element::<Item<'de>>()? {
                        Some(item) => items.push(item),
                        None => return Ok(Top::Events(items)),
                    }
                }
                if seq.next_element::<de::IgnoredAny>()?.is_none() {
                    return Ok(Top::Events(items));
                }
                let mut count = items.len() + 1;
                drop(items);
                while seq.next_element::<de::IgnoredAny>()?.is_some() {
                    count += 1;
                }
                Ok(Top::TooMany(count))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Top<'de>, E> {
                Ok(Top::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Top<'de>, E> {
                Ok(Top::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Top<'de>, E> {
                Ok(Top::Event(Item::Other))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Top<'de>, E> {
                Ok(Top::Event(Item::Other))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Top<'de>, E> {
                Ok(Top::Event(Item::Other))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Top<'de>, E> {
                Ok(Top::Event(Item::Other))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Top<'de>, E> {
                Ok(Top::Event(Item::Other))
            }
        }
        deserializer.deserialize_any(V { max: self.max })
    }
}

/// Validates one event; a missing `time` becomes `now`, a missing `specversion` "1.0".
/// No limits apply.
pub fn parse_event(value: Value, now: DateTime<Utc>) -> Result<CloudEvent, EventError> {
    if !value.is_object() {
        return Err(EventError::NotAnObject);
    }
    let text = value.to_string();
    let unlimited = EventLimits {
        events_per_request_max: usize::MAX,
        attribute_bytes_max: usize::MAX,
        data_values_max: usize::MAX,
    };
    match parse_parts(text.as_bytes(), BodyKind::Single, now, &unlimited) {
        Ok(parts) => parts
            .first()
            .map(EventParts::to_cloud_event)
            .ok_or(EventError::NotAnObject),
        Err(BodyError::Event(error) | BodyError::EventAt { error, .. }) => Err(error),
        Err(_) => Err(EventError::NotAnObject),
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

    // Data with a lone surrogate escape is refused at ingest: stored, it could not be read
    // back. A pair is a character like any other.
    #[test]
    fn data_with_a_lone_surrogate_is_refused() {
        let body = |data: &str| {
            format!(
                r#"{{"specversion":"1.0","id":"1","source":"s","type":"t","subject":"u","data":{data}}}"#
            )
        };
        let limits = EventLimits::default();
        let lone = body(r#"{"a":"\ud800"}"#);
        assert_eq!(
            parse_parts(lone.as_bytes(), BodyKind::Single, now(), &limits).map(|p| p.len()),
            Err(BodyError::Event(EventError::LoneSurrogate))
        );
        let pair = body(r#"{"a":"\ud83d\ude00"}"#);
        assert_eq!(
            parse_parts(pair.as_bytes(), BodyKind::Single, now(), &limits).map(|p| p.len()),
            Ok(1)
        );
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
        // Items past the limit are counted, not kept (any JSON counts), and the body must
        // still be whole JSON.
        let mut many = vec![valid(); 3];
        many.extend(std::iter::repeat_n(json!(0), 10_000));
        assert_eq!(
            parse_events_within(&batch(many), BodyKind::Batch, now(), &limits),
            Err(BodyError::TooManyEvents {
                count: 10_003,
                max: 3
            })
        );
        assert!(matches!(
            parse_events_within(b"[{},{},{},{},", BodyKind::Batch, now(), &limits),
            Err(BodyError::Json(_))
        ));
        assert!(matches!(
            parse_events_within(b"[0,0,0,0] x", BodyKind::Batch, now(), &limits),
            Err(BodyError::Json(_))
        ));
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
