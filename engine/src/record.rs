//! The event stream's record: one accepted event as compact bytes, written once by the
//! API and read in place by everything after it (partitions, checkpoints, replay).
//!
//! Layout (version 1), integers little-endian, texts as a LEB128 length and UTF-8 bytes:
//!
//! ```text
//! u8   version (1)
//! u8   flags: 1 = datacontenttype, 2 = dataschema, 4 = data
//! i64  time, seconds since the epoch      u32  time, nanoseconds
//! i64  ingested_at, microseconds since the epoch
//! text namespace, id, source, type, subject
//! text datacontenttype, dataschema, data   (each only if its flag is set)
//! ```
//!
//! `data` is the event's data object as compact JSON text, exactly as accepted: a
//! meter reads the values it needs from the text ([`crate::rawjson`]), nothing builds
//! a tree of it. `specversion` is not kept: the API accepts only "1.0".
//!
//! Records written before this format are JSON objects (they start with `{`);
//! [`decode`] still reads them and [`RecordView::parse`] refuses them, so a reader
//! converts an old record once with [`upgrade`].

use crate::event::{CloudEvent, EventParts, IngestedEvent};
use chrono::{DateTime, Utc};
use std::borrow::Cow;

/// The version byte of the current layout.
pub const VERSION: u8 = 1;

const HAS_CONTENT_TYPE: u8 = 1;
const HAS_SCHEMA: u8 = 2;
const HAS_DATA: u8 = 4;

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the record ends early")]
    Truncated,
    #[error("the record has unknown version {0}")]
    Version(u8),
    #[error("a text of the record is not UTF-8")]
    Utf8,
    #[error("the record's time is out of range")]
    Time,
    #[error("the JSON record is invalid: {0}")]
    Json(String),
}

/// A record read in place: every text borrows the record's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub namespace: &'a str,
    pub id: &'a str,
    pub source: &'a str,
    pub event_type: &'a str,
    pub subject: &'a str,
    pub time_secs: i64,
    pub time_nanos: u32,
    pub ingested_at_us: i64,
    pub datacontenttype: Option<&'a str>,
    pub dataschema: Option<&'a str>,
    /// The data object's JSON text.
    pub data: Option<&'a str>,
}

/// Appends the record of one event to `out`.
pub fn encode_into(
    out: &mut Vec<u8>,
    namespace: &str,
    ingested_at_us: i64,
    event: &EventParts<'_>,
) {
    let mut flags = 0;
    for (present, flag) in [
        (event.datacontenttype.is_some(), HAS_CONTENT_TYPE),
        (event.dataschema.is_some(), HAS_SCHEMA),
        (event.data.is_some(), HAS_DATA),
    ] {
        if present {
            flags |= flag;
        }
    }
    out.reserve(
        30 + namespace.len()
            + event.id.len()
            + event.source.len()
            + event.event_type.len()
            + event.subject.len()
            + event.data.as_deref().map_or(0, str::len),
    );
    out.push(VERSION);
    out.push(flags);
    out.extend_from_slice(&event.time.timestamp().to_le_bytes());
    out.extend_from_slice(&event.time.timestamp_subsec_nanos().to_le_bytes());
    out.extend_from_slice(&ingested_at_us.to_le_bytes());
    for text in [
        namespace,
        &event.id,
        &event.source,
        &event.event_type,
        &event.subject,
    ] {
        put_text(out, text);
    }
    for text in [&event.datacontenttype, &event.dataschema, &event.data]
        .into_iter()
        .flatten()
    {
        put_text(out, text);
    }
}

/// The record of one event, in a buffer of its own.
pub fn encode(namespace: &str, ingested_at_us: i64, event: &EventParts<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, namespace, ingested_at_us, event);
    out
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    let mut len = text.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(text.as_bytes());
}

/// A cursor over a record's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self.pos.checked_add(n).ok_or(RecordError::Truncated)?;
        let out = self
            .bytes
            .get(self.pos..end)
            .ok_or(RecordError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn text(&mut self) -> Result<&'a str, RecordError> {
        let mut len = 0u64;
        for shift in (0..64).step_by(7) {
            let [byte] = self.array::<1>()?;
            len |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                let len = usize::try_from(len).map_err(|_| RecordError::Truncated)?;
                return std::str::from_utf8(self.take(len)?).map_err(|_| RecordError::Utf8);
            }
        }
        Err(RecordError::Truncated)
    }
}

impl<'a> RecordView<'a> {
    /// Reads a record of the current layout.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, RecordError> {
        let mut r = Reader { bytes, pos: 0 };
        let [version, flags] = r.array::<2>()?;
        if version != VERSION {
            return Err(RecordError::Version(version));
        }
        let time_secs = i64::from_le_bytes(r.array()?);
        let time_nanos = u32::from_le_bytes(r.array()?);
        let ingested_at_us = i64::from_le_bytes(r.array()?);
        let (namespace, id, source, event_type, subject) =
            (r.text()?, r.text()?, r.text()?, r.text()?, r.text()?);
        let mut optional = |flag: u8| -> Result<Option<&'a str>, RecordError> {
            if flags & flag == 0 {
                Ok(None)
            } else {
                r.text().map(Some)
            }
        };
        let datacontenttype = optional(HAS_CONTENT_TYPE)?;
        let dataschema = optional(HAS_SCHEMA)?;
        let data = optional(HAS_DATA)?;
        Ok(Self {
            namespace,
            id,
            source,
            event_type,
            subject,
            time_secs,
            time_nanos,
            ingested_at_us,
            datacontenttype,
            dataschema,
            data,
        })
    }

    /// The event's time in milliseconds since the epoch (rounded down).
    pub fn time_ms(&self) -> i64 {
        self.time_secs
            .saturating_mul(1000)
            .saturating_add(i64::from(self.time_nanos / 1_000_000))
    }

    /// The event's time in microseconds since the epoch (rounded down).
    pub fn time_us(&self) -> i64 {
        self.time_secs
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(self.time_nanos / 1_000))
    }

    pub fn time(&self) -> Result<DateTime<Utc>, RecordError> {
        DateTime::from_timestamp(self.time_secs, self.time_nanos).ok_or(RecordError::Time)
    }

    /// The event with owned parts and its data decoded.
    pub fn to_ingested(&self) -> Result<IngestedEvent, RecordError> {
        let data = match self.data {
            None => None,
            Some(text) => match serde_json::from_str(text) {
                Ok(serde_json::Value::Object(map)) => Some(map),
                Ok(_) => return Err(RecordError::Json("data is not an object".into())),
                Err(e) => return Err(RecordError::Json(e.to_string())),
            },
        };
        Ok(IngestedEvent {
            namespace: self.namespace.to_owned(),
            ingested_at: DateTime::from_timestamp_micros(self.ingested_at_us)
                .ok_or(RecordError::Time)?,
            event: CloudEvent {
                id: self.id.to_owned(),
                source: self.source.to_owned(),
                specversion: "1.0".to_owned(),
                event_type: self.event_type.to_owned(),
                subject: self.subject.to_owned(),
                time: self.time()?,
                datacontenttype: self.datacontenttype.map(str::to_owned),
                dataschema: self.dataschema.map(str::to_owned),
                data,
            },
        })
    }
}

/// Any record, of this layout or the older JSON one, as an owned event.
pub fn decode(payload: &[u8]) -> Result<IngestedEvent, RecordError> {
    match payload.first() {
        Some(b'{') => serde_json::from_slice(payload).map_err(|e| RecordError::Json(e.to_string())),
        _ => RecordView::parse(payload)?.to_ingested(),
    }
}

/// A record of the older JSON layout rewritten in the current one; `None` when the
/// payload is already current.
pub fn upgrade(payload: &[u8]) -> Result<Option<Vec<u8>>, RecordError> {
    if payload.first() != Some(&b'{') {
        return Ok(None);
    }
    let event = decode(payload)?;
    Ok(Some(encode_event(&event)))
}

/// The record of an owned event.
pub fn encode_event(event: &IngestedEvent) -> Vec<u8> {
    let e = &event.event;
    let data = e
        .data
        .as_ref()
        .map(|d| Cow::Owned(serde_json::Value::Object(d.clone()).to_string()));
    let parts = EventParts {
        id: Cow::Borrowed(&e.id),
        source: Cow::Borrowed(&e.source),
        event_type: Cow::Borrowed(&e.event_type),
        subject: Cow::Borrowed(&e.subject),
        time: e.time,
        datacontenttype: e.datacontenttype.as_deref().map(Cow::Borrowed),
        dataschema: e.dataschema.as_deref().map(Cow::Borrowed),
        data,
    };
    encode(
        &event.namespace,
        event.ingested_at.timestamp_micros(),
        &parts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{parse_event, parse_time};
    use serde_json::json;

    fn event() -> IngestedEvent {
        let now = parse_time("2024-01-02T03:04:05Z").expect("time");
        IngestedEvent {
            namespace: "default".into(),
            ingested_at: parse_time("2024-01-02T03:04:05.123456Z").expect("time"),
            event: parse_event(
                json!({"id": "1", "source": "s", "type": "t", "subject": "é",
                       "time": "2024-01-01T00:00:00.123456789Z", "data": {"tokens": 3, "m": "x"},
                       "datacontenttype": "application/json"}),
                now,
            )
            .expect("event"),
        }
    }

    #[test]
    fn records_round_trip() {
        let e = event();
        let bytes = encode_event(&e);
        let view = RecordView::parse(&bytes).expect("view");
        assert_eq!(view.subject, "é");
        assert_eq!(view.time_ms(), 1_704_067_200_123);
        assert_eq!(view.time_us(), 1_704_067_200_123_456);
        assert_eq!(view.data, Some(r#"{"m":"x","tokens":3}"#));
        assert_eq!(decode(&bytes), Ok(e.clone()));
        // The older JSON layout still reads, and upgrades to the same bytes.
        let old = serde_json::to_vec(&e).expect("json");
        assert_eq!(decode(&old), Ok(e));
        assert_eq!(upgrade(&old), Ok(Some(bytes.clone())));
        assert_eq!(upgrade(&bytes), Ok(None));
    }

    #[test]
    fn damaged_records_are_errors() {
        let bytes = encode_event(&event());
        for len in 0..bytes.len() {
            assert!(RecordView::parse(&bytes[..len]).is_err(), "prefix of {len}");
        }
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(RecordView::parse(&other), Err(RecordError::Version(9)));
        assert!(decode(b"{not json").is_err());
        assert!(decode(&[1, 0, 0xff, 0xff]).is_err());
    }
}
