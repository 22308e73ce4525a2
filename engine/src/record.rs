//! The event stream's record: one accepted event as compact bytes, written once by the
//! API and read in place by everything after it (partitions, checkpoints, replay).
//!
//! Layout (version 1), integers little-endian:
//!
//! ```text
//! u8   version (1)
//! u8   flags: 1 = datacontenttype, 2 = dataschema, 4 = data
//! i64  time, seconds since the epoch      u32  time, nanoseconds
//! i64  ingested_at, microseconds since the epoch
//! LEB128 byte lengths of namespace, id, source, type, subject, then of
//!        datacontenttype, dataschema, data (each only if its flag is set)
//! the texts, in that order, back to back (UTF-8)
//! ```
//!
//! The texts come last and together, so a reader checks their UTF-8 once per record.
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
    let optional = [&event.datacontenttype, &event.dataschema, &event.data];
    let texts = || {
        [
            namespace,
            &event.id,
            &event.source,
            &event.event_type,
            &event.subject,
        ]
        .into_iter()
        .chain(optional.into_iter().flatten().map(|t| &**t))
    };
    for text in texts() {
        put_len(out, text.len());
    }
    for text in texts() {
        out.extend_from_slice(text.as_bytes());
    }
}

/// The record of one event, in a buffer of its own.
pub fn encode(namespace: &str, ingested_at_us: i64, event: &EventParts<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, namespace, ingested_at_us, event);
    out
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    let mut len = len as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
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

    fn len(&mut self) -> Result<usize, RecordError> {
        let mut len = 0u64;
        for shift in (0..64).step_by(7) {
            let [byte] = self.array::<1>()?;
            len |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return usize::try_from(len).map_err(|_| RecordError::Truncated);
            }
        }
        Err(RecordError::Truncated)
    }
}

/// The texts of a record, cut from their one checked string.
struct Texts<'a> {
    all: &'a str,
    at: usize,
}

impl<'a> Texts<'a> {
    fn next(&mut self, len: usize) -> Result<&'a str, RecordError> {
        let end = self.at.checked_add(len).ok_or(RecordError::Truncated)?;
        let text = self.all.get(self.at..end).ok_or(RecordError::Utf8)?;
        self.at = end;
        Ok(text)
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
        let mut lens = [0usize; 8];
        let mut count = 5;
        for len in lens.iter_mut().take(5) {
            *len = r.len()?;
        }
        for flag in [HAS_CONTENT_TYPE, HAS_SCHEMA, HAS_DATA] {
            if flags & flag != 0 {
                lens[count] = r.len()?;
                count += 1;
            }
        }
        let rest = r.bytes.get(r.pos..).ok_or(RecordError::Truncated)?;
        let total = lens.iter().try_fold(0usize, |sum, l| sum.checked_add(*l));
        if total != Some(rest.len()) {
            return Err(RecordError::Truncated);
        }
        let mut t = Texts {
            all: std::str::from_utf8(rest).map_err(|_| RecordError::Utf8)?,
            at: 0,
        };
        let (namespace, id, source, event_type, subject) = (
            t.next(lens[0])?,
            t.next(lens[1])?,
            t.next(lens[2])?,
            t.next(lens[3])?,
            t.next(lens[4])?,
        );
        let mut next = 5;
        let mut optional = |flag: u8| -> Result<Option<&'a str>, RecordError> {
            if flags & flag == 0 {
                return Ok(None);
            }
            let len = lens.get(next).copied().ok_or(RecordError::Truncated)?;
            next += 1;
            t.next(len).map(Some)
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

    proptest::proptest! {
        // Any texts round-trip, and no change of a record's bytes makes a reader panic.
        #[test]
        fn any_texts_round_trip(
            texts in proptest::collection::vec(".{0,40}", 5),
            optional in proptest::collection::vec(proptest::option::of(".{0,40}"), 3),
            secs in -62_135_596_800i64..253_402_300_799,
            nanos in 0u32..1_000_000_000,
            flip in proptest::prelude::any::<(usize, u8)>(),
        ) {
            let data = optional[2].as_ref().map(|t| serde_json::json!({"k": t}).to_string());
            let parts = EventParts {
                id: Cow::Borrowed(&texts[1]),
                source: Cow::Borrowed(&texts[2]),
                event_type: Cow::Borrowed(&texts[3]),
                subject: Cow::Borrowed(&texts[4]),
                time: DateTime::from_timestamp(secs, nanos).expect("in range"),
                datacontenttype: optional[0].as_deref().map(Cow::Borrowed),
                dataschema: optional[1].as_deref().map(Cow::Borrowed),
                data: data.as_deref().map(Cow::Borrowed),
            };
            let bytes = encode(&texts[0], 7, &parts);
            let view = RecordView::parse(&bytes).expect("view");
            proptest::prop_assert_eq!(
                [view.namespace, view.id, view.source, view.event_type, view.subject],
                [&*texts[0], &*texts[1], &*texts[2], &*texts[3], &*texts[4]]
            );
            proptest::prop_assert_eq!(view.datacontenttype, optional[0].as_deref());
            proptest::prop_assert_eq!(view.dataschema, optional[1].as_deref());
            proptest::prop_assert_eq!(view.data, data.as_deref());
            proptest::prop_assert_eq!((view.time_secs, view.time_nanos, view.ingested_at_us), (secs, nanos, 7));
            let mut damaged = bytes.clone();
            let at = flip.0 % damaged.len();
            damaged[at] ^= flip.1 | 1;
            let _ = RecordView::parse(&damaged).map(|v| v.to_ingested());
            let _ = decode(&damaged);
        }
    }
}
