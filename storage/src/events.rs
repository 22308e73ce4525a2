//! Raw events as Arrow record batches: the `events` table.
//!
//! Columns: `namespace`, `id`, `source`, `subject`, `type`, `time`, `ingested_at`
//! (timestamps in microseconds, UTC), `data` (the JSON text of the data object, or
//! null), `specversion`, `datacontenttype`, `dataschema`.

use chrono::DateTime;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::error::ArrowError;
use metron_engine::event::{CloudEvent, IngestedEvent};
use metron_engine::record::{self, RecordView};
use std::sync::{Arc, LazyLock};

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")));
    Arc::new(Schema::new(vec![
        Field::new("namespace", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("subject", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("time", ts(), false),
        Field::new("ingested_at", ts(), false),
        Field::new("data", DataType::Utf8, true),
        Field::new("specversion", DataType::Utf8, false),
        Field::new("datacontenttype", DataType::Utf8, true),
        Field::new("dataschema", DataType::Utf8, true),
    ]))
});

/// The schema of the `events` table.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// The batch of decoded events.
pub fn to_batch(events: &[IngestedEvent]) -> Result<RecordBatch, ArrowError> {
    let records: Vec<Vec<u8>> = events.iter().map(record::encode_event).collect();
    let views: Vec<RecordView<'_>> = records
        .iter()
        .filter_map(|r| RecordView::parse(r).ok())
        .collect();
    to_batch_views(&views)
}

/// The batch of stream records, read in place: each column is built straight from
/// the records' texts (`data` is the record's JSON text as it is).
pub fn to_batch_views(events: &[RecordView<'_>]) -> Result<RecordBatch, ArrowError> {
    let texts: usize = events
        .iter()
        .map(|e| {
            e.namespace.len() + e.id.len() + e.source.len() + e.subject.len() + e.event_type.len()
        })
        .sum();
    let mut strings: Vec<StringBuilder> = (0..5)
        .map(|_| StringBuilder::with_capacity(events.len(), texts / 4))
        .collect();
    let mut time = TimestampMicrosecondBuilder::with_capacity(events.len()).with_timezone("UTC");
    let mut ingested =
        TimestampMicrosecondBuilder::with_capacity(events.len()).with_timezone("UTC");
    let data_bytes: usize = events.iter().map(|e| e.data.map_or(0, str::len)).sum();
    let mut data = StringBuilder::with_capacity(events.len(), data_bytes);
    let mut spec = StringBuilder::with_capacity(events.len(), events.len() * 3);
    let mut ct = StringBuilder::new();
    let mut ds = StringBuilder::new();
    for e in events {
        for (builder, value) in
            strings
                .iter_mut()
                .zip([e.namespace, e.id, e.source, e.subject, e.event_type])
        {
            builder.append_value(value);
        }
        time.append_value(e.time_us());
        ingested.append_value(e.ingested_at_us);
        data.append_option(e.data);
        spec.append_value("1.0");
        ct.append_option(e.datacontenttype);
        ds.append_option(e.dataschema);
    }
    let mut columns: Vec<ArrayRef> = strings
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    columns.push(Arc::new(time.finish()));
    columns.push(Arc::new(ingested.finish()));
    columns.push(Arc::new(data.finish()));
    columns.push(Arc::new(spec.finish()));
    columns.push(Arc::new(ct.finish()));
    columns.push(Arc::new(ds.finish()));
    RecordBatch::try_new(schema(), columns)
}

pub fn from_batch(batch: &RecordBatch) -> Result<Vec<IngestedEvent>, ArrowError> {
    let missing =
        |name: &str| ArrowError::SchemaError(format!("events batch has no usable column {name}"));
    let text = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| missing(name))
    };
    let micros = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
            .ok_or_else(|| missing(name))
    };
    let (namespace, id, source, subject, kind) = (
        text("namespace")?,
        text("id")?,
        text("source")?,
        text("subject")?,
        text("type")?,
    );
    let (time, ingested) = (micros("time")?, micros("ingested_at")?);
    let (data, spec, ct, ds) = (
        text("data")?,
        text("specversion")?,
        text("datacontenttype")?,
        text("dataschema")?,
    );
    let opt = |a: &datafusion::arrow::array::StringArray, i: usize| {
        (!a.is_null(i)).then(|| a.value(i).to_owned())
    };
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let data = match opt(data, i) {
            Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Object(map)) => Some(map),
                _ => None,
            },
            None => None,
        };
        out.push(IngestedEvent {
            namespace: namespace.value(i).to_owned(),
            ingested_at: DateTime::from_timestamp_micros(ingested.value(i)).unwrap_or_default(),
            event: CloudEvent {
                id: id.value(i).to_owned(),
                source: source.value(i).to_owned(),
                specversion: spec.value(i).to_owned(),
                event_type: kind.value(i).to_owned(),
                subject: subject.value(i).to_owned(),
                time: DateTime::from_timestamp_micros(time.value(i)).unwrap_or_default(),
                datacontenttype: opt(ct, i),
                dataschema: opt(ds, i),
                data,
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metron_engine::event::parse_event;

    #[test]
    fn events_round_trip_through_arrow() {
        let now = chrono::Utc::now();
        let event = parse_event(
            serde_json::json!({"id": "1", "source": "s", "type": "t", "subject": "c",
                "time": "2024-01-01T00:00:00.123456Z", "data": {"a": [1, "x"]}, "datacontenttype": "application/json"}),
            now,
        )
        .expect("event");
        let bare = parse_event(serde_json::json!({"id": "2", "source": "s", "type": "t", "subject": "c", "time": "2024-01-01T00:00:00Z"}), now)
            .expect("event");
        let rows = vec![
            IngestedEvent {
                namespace: "default".into(),
                ingested_at: DateTime::from_timestamp_micros(now.timestamp_micros())
                    .unwrap_or_default(),
                event,
            },
            IngestedEvent {
                namespace: "default".into(),
                ingested_at: DateTime::from_timestamp_micros(5).unwrap_or_default(),
                event: bare,
            },
        ];
        let batch = to_batch(&rows).expect("batch");
        assert_eq!(from_batch(&batch).expect("rows"), rows);
    }
}
