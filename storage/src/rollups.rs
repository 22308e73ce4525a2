//! Minute rollups as Arrow record batches and Parquet files.
//!
//! Schema of a meter's rollup table: `minute` (timestamp, UTC), `subject`, one
//! `group_<key>` column per group-by key, then the state: `value` (Decimal256(76, 18),
//! every [`Quantity`] exactly: SUM, AVG's sum, MIN, MAX, LATEST; files written before
//! exact values have Decimal128(38, 12) and are still read), `count` (COUNT, AVG's count), `latest_ms`
//! (LATEST's event time) and `uniques` (UNIQUE_COUNT's distinct values).

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal256Builder, Int64Builder, ListBuilder, RecordBatch,
    StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Decimal256Type, Field, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampMillisecondType, i256,
};
use datafusion::arrow::error::ArrowError;
use metron_engine::aggregate::{AggState, Aggregation};
use metron_engine::quantity::Quantity;
use metron_engine::query::{MeterQuery, RollupRow};
use metron_engine::window::WindowSize;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Fractional digits of meter values at rest.
pub const VALUE_SCALE: i8 = Quantity::SCALE as i8;
pub const VALUE_PRECISION: u8 = Quantity::PRECISION;
/// Scale of the Decimal128(38, 12) value column of files written before exact values.
const LEGACY_SCALE: u32 = 12;

/// The column of a group-by key.
pub fn group_column(key: &str) -> String {
    format!("group_{key}")
}

/// The rollup schema of a meter with these group-by keys.
pub fn schema(group_keys: &[String]) -> SchemaRef {
    let utc: Arc<str> = Arc::from("UTC");
    let mut fields = vec![
        Field::new(
            "minute",
            DataType::Timestamp(TimeUnit::Millisecond, Some(utc)),
            false,
        ),
        Field::new("subject", DataType::Utf8, false),
    ];
    fields.extend(
        group_keys
            .iter()
            .map(|k| Field::new(group_column(k), DataType::Utf8, true)),
    );
    fields.push(Field::new(
        "value",
        DataType::Decimal256(VALUE_PRECISION, VALUE_SCALE),
        true,
    ));
    fields.push(Field::new("count", DataType::Int64, true));
    fields.push(Field::new("latest_ms", DataType::Int64, true));
    fields.push(Field::new(
        "uniques",
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        true,
    ));
    Arc::new(Schema::new(fields))
}

/// One state spread over the value, count, latest and uniques columns.
type StateColumns<'a> = (
    Option<Quantity>,
    Option<u64>,
    Option<i64>,
    Option<&'a BTreeSet<String>>,
);

/// The order rollup files keep rows in: by subject, then minute, then group, so that one
/// subject's rows of a file are a few consecutive pages (see `query::pruned`).
fn file_order(rows: &[RollupRow]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        let (a, b) = (&rows[a], &rows[b]);
        (&a.subject, a.minute_ms, &a.group).cmp(&(&b.subject, b.minute_ms, &b.group))
    });
    order
}

/// Rollup rows to one record batch, ordered by (subject, minute, group).
pub fn to_batch(group_keys: &[String], rows: &[RollupRow]) -> Result<RecordBatch, ArrowError> {
    let mut minute = TimestampMillisecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
    let mut subject = StringBuilder::new();
    let mut groups: Vec<StringBuilder> = group_keys.iter().map(|_| StringBuilder::new()).collect();
    let mut value = Decimal256Builder::with_capacity(rows.len())
        .with_precision_and_scale(VALUE_PRECISION, VALUE_SCALE)?;
    let mut count = Int64Builder::with_capacity(rows.len());
    let mut latest = Int64Builder::with_capacity(rows.len());
    let mut uniques = ListBuilder::new(StringBuilder::new());
    for row in file_order(rows).into_iter().map(|i| &rows[i]) {
        minute.append_value(row.minute_ms);
        subject.append_value(&row.subject);
        for (i, builder) in groups.iter_mut().enumerate() {
            builder.append_option(row.group.get(i));
        }
        let (v, c, l, u): StateColumns<'_> = match &row.state {
            AggState::Sum(s) => (Some(*s), None, None, None),
            AggState::Count(n) => (None, Some(*n), None, None),
            AggState::Avg { sum, count } => (Some(*sum), Some(*count), None, None),
            AggState::Min(m) | AggState::Max(m) => (Some(*m), None, None, None),
            AggState::Latest { time_ms, value } => (Some(*value), None, Some(*time_ms), None),
            AggState::UniqueCount(set) => (None, None, None, Some(set)),
        };
        value.append_option(v.map(Quantity::raw));
        count.append_option(c.map(|n| i64::try_from(n).unwrap_or(i64::MAX)));
        latest.append_option(l);
        match u {
            Some(set) => {
                for item in set {
                    uniques.values().append_value(item);
                }
                uniques.append(true);
            }
            None => uniques.append(false),
        }
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(minute.finish()), Arc::new(subject.finish())];
    columns.extend(groups.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(value.finish()));
    columns.push(Arc::new(count.finish()));
    columns.push(Arc::new(latest.finish()));
    columns.push(Arc::new(uniques.finish()));
    RecordBatch::try_new(schema(group_keys), columns)
}

/// A record batch of the rollup schema back to rows of the meter's aggregation.
/// Group columns missing from the batch (keys added later) read as "".
pub fn from_batch(
    group_keys: &[String],
    aggregation: Aggregation,
    batch: &RecordBatch,
) -> Result<Vec<RollupRow>, ArrowError> {
    from_batch_in_slots(group_keys, aggregation, batch, MINUTE_MS)
}

/// The slot of minute rollup rows and files.
pub const MINUTE_MS: i64 = 60_000;
/// The slot of hourly rollup rows and files.
pub const HOUR_MS: i64 = 3_600_000;

/// The state columns an aggregation never reads: a reader may leave them out.
pub fn unused_columns(aggregation: Aggregation) -> &'static [&'static str] {
    match aggregation {
        Aggregation::Sum | Aggregation::Min | Aggregation::Max => {
            &["count", "latest_ms", "uniques"]
        }
        Aggregation::Count => &["value", "latest_ms", "uniques"],
        Aggregation::Avg => &["latest_ms", "uniques"],
        Aggregation::Latest => &["count", "uniques"],
        Aggregation::UniqueCount => &["value", "count", "latest_ms"],
    }
}

/// The widest slot a query's rows may be merged into without changing its answer: an
/// hour when its windows are hours, days or months in UTC and its range starts and ends
/// on hours (every window then holds whole UTC hours), else a minute.
pub fn query_slot_ms(query: &MeterQuery) -> i64 {
    let on_hour = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.is_none_or(|t| t.timestamp_micros().rem_euclid(HOUR_MS * 1000) == 0)
    };
    let windows = matches!(
        query.window_size,
        Some(WindowSize::Hour | WindowSize::Day | WindowSize::Month)
    );
    if windows && query.time_zone.name() == "UTC" && on_hour(query.from) && on_hour(query.to) {
        HOUR_MS
    } else {
        MINUTE_MS
    }
}

/// [`from_batch`], with each row's minute floored to a multiple of `slot_ms` and adjacent
/// rows of one (slot, subject, group) merged into one. Rows sorted by (subject, minute)
/// (as files keep them) come out one per (slot, subject, group); strings are copied once
/// per row that comes out, not per row read.
pub fn from_batch_in_slots(
    group_keys: &[String],
    aggregation: Aggregation,
    batch: &RecordBatch,
    slot_ms: i64,
) -> Result<Vec<RollupRow>, ArrowError> {
    let columns = Columns::of(group_keys, batch)?;
    let slot_ms = slot_ms.max(1);
    let mut rows: Vec<RollupRow> = Vec::new();
    // Rows of the current (slot, subject): one per group, merged as they come.
    let mut open = 0usize;
    for i in 0..batch.num_rows() {
        let slot = columns.minute.value(i).div_euclid(slot_ms) * slot_ms;
        let subject = columns.subject.value(i);
        let current = rows
            .get(open)
            .is_some_and(|r| r.minute_ms == slot && r.subject == subject);
        if !current {
            open = rows.len();
        }
        let state = columns.state(aggregation, i);
        let same_group = |r: &RollupRow| {
            r.group
                .iter()
                .enumerate()
                .all(|(g, value)| value == columns.group(g, i))
        };
        match rows[open..].iter_mut().find(|r| same_group(r)) {
            Some(row) => row.state.merge(&state),
            None => rows.push(RollupRow {
                minute_ms: slot,
                subject: subject.to_owned(),
                group: (0..group_keys.len())
                    .map(|g| columns.group(g, i).to_owned())
                    .collect(),
                state,
            }),
        }
    }
    Ok(rows)
}

/// The columns of a rollup batch, typed.
struct Columns<'a> {
    minute: &'a datafusion::arrow::array::TimestampMillisecondArray,
    subject: &'a datafusion::arrow::array::StringArray,
    groups: Vec<Option<&'a datafusion::arrow::array::StringArray>>,
    value: Option<&'a ArrayRef>,
    count: Option<&'a datafusion::arrow::array::Int64Array>,
    latest: Option<&'a datafusion::arrow::array::Int64Array>,
    uniques: Option<&'a datafusion::arrow::array::ListArray>,
}

impl<'a> Columns<'a> {
    fn of(group_keys: &[String], batch: &'a RecordBatch) -> Result<Self, ArrowError> {
        let missing =
            |name: &str| ArrowError::SchemaError(format!("rollup batch has no column {name}"));
        let column = |name: &str| batch.column_by_name(name).ok_or_else(|| missing(name));
        // State columns the aggregation does not use may be left out of a read
        // ([`unused_columns`]); one that is there must have its type.
        let value = batch.column_by_name("value");
        if value.is_some_and(|v| {
            v.as_primitive_opt::<Decimal256Type>().is_none()
                && v.as_primitive_opt::<Decimal128Type>().is_none()
        }) {
            return Err(missing("value (decimal)"));
        }
        let typed = |name: &str, ok: bool| if ok { Ok(()) } else { Err(missing(name)) };
        let count = batch.column_by_name("count");
        let latest = batch.column_by_name("latest_ms");
        let uniques = batch.column_by_name("uniques");
        typed(
            "count (int64)",
            count.is_none_or(|c| c.as_primitive_opt::<Int64Type>().is_some()),
        )?;
        typed(
            "latest_ms (int64)",
            latest.is_none_or(|c| c.as_primitive_opt::<Int64Type>().is_some()),
        )?;
        typed(
            "uniques (list)",
            uniques.is_none_or(|c| c.as_list_opt::<i32>().is_some()),
        )?;
        Ok(Self {
            minute: column("minute")?
                .as_primitive_opt::<TimestampMillisecondType>()
                .ok_or_else(|| missing("minute (timestamp)"))?,
            subject: column("subject")?
                .as_string_opt::<i32>()
                .ok_or_else(|| missing("subject (utf8)"))?,
            groups: group_keys
                .iter()
                .map(|k| {
                    batch
                        .column_by_name(&group_column(k))
                        .and_then(|c| c.as_string_opt::<i32>())
                })
                .collect(),
            value,
            count: count.and_then(|c| c.as_primitive_opt::<Int64Type>()),
            latest: latest.and_then(|c| c.as_primitive_opt::<Int64Type>()),
            uniques: uniques.and_then(|c| c.as_list_opt::<i32>()),
        })
    }

    /// Group value `g` of row `i` ("" when null or the column is missing).
    fn group(&self, g: usize, i: usize) -> &'a str {
        match self.groups.get(g).copied().flatten() {
            Some(column) if !column.is_null(i) => column.value(i),
            _ => "",
        }
    }

    fn value(&self, i: usize) -> Option<Quantity> {
        let value = self.value?;
        if let Some(array) = value.as_primitive_opt::<Decimal256Type>() {
            return (!array.is_null(i)).then(|| Quantity::from_raw(array.value(i)));
        }
        let array = value.as_primitive_opt::<Decimal128Type>()?;
        let factor = i256::from_i128(10).wrapping_pow(Quantity::SCALE - LEGACY_SCALE);
        (!array.is_null(i))
            .then(|| Quantity::from_raw(i256::from_i128(array.value(i)).wrapping_mul(factor)))
    }

    fn state(&self, aggregation: Aggregation, i: usize) -> AggState {
        let v = self.value(i).unwrap_or(Quantity::ZERO);
        let c = match self.count {
            Some(count) if !count.is_null(i) => u64::try_from(count.value(i)).unwrap_or(0),
            _ => 0,
        };
        match aggregation {
            Aggregation::Sum => AggState::Sum(v),
            Aggregation::Count => AggState::Count(c),
            Aggregation::Avg => AggState::Avg { sum: v, count: c },
            Aggregation::Min => AggState::Min(v),
            Aggregation::Max => AggState::Max(v),
            Aggregation::Latest => AggState::Latest {
                time_ms: match self.latest {
                    Some(latest) if !latest.is_null(i) => latest.value(i),
                    _ => 0,
                },
                value: v,
            },
            Aggregation::UniqueCount => {
                let mut set = BTreeSet::new();
                if let Some(uniques) = self.uniques
                    && !uniques.is_null(i)
                {
                    let items = uniques.value(i);
                    if let Some(strings) = items.as_string_opt::<i32>() {
                        set.extend(strings.iter().flatten().map(str::to_owned));
                    }
                }
                AggState::UniqueCount(set)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Decimal128Builder;

    fn q(text: &str) -> Quantity {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    // Files written before exact values (Decimal128(38, 12)) read as the same numbers.
    #[test]
    fn legacy_decimal128_values_are_read() {
        let keys: Vec<String> = Vec::new();
        let rows = vec![RollupRow {
            minute_ms: 60_000,
            subject: "s".into(),
            group: Vec::new(),
            state: AggState::Sum(q("1.5")),
        }];
        let batch = to_batch(&keys, &rows).expect("batch");
        let mut legacy = Decimal128Builder::new()
            .with_precision_and_scale(38, 12)
            .expect("type");
        legacy.append_value(1_500_000_000_000);
        let mut columns = batch.columns().to_vec();
        let at = batch.schema().index_of("value").expect("value");
        columns[at] = Arc::new(legacy.finish());
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[at] = Field::new("value", DataType::Decimal128(38, 12), true);
        let old =
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("legacy batch");
        assert_eq!(
            from_batch(&keys, Aggregation::Sum, &old).expect("rows"),
            rows
        );
    }

    // Batches (and so files) hold rows by subject, then minute, then group, whatever order
    // they came in: a reader of one subject finds its rows on a few consecutive pages.
    #[test]
    fn batches_are_ordered_by_subject_then_minute() {
        let keys = vec!["model".to_owned()];
        let row = |minute_ms: i64, subject: &str, model: &str| RollupRow {
            minute_ms,
            subject: subject.into(),
            group: vec![model.into()],
            state: AggState::Count(1),
        };
        let rows = vec![
            row(120_000, "b", "x"),
            row(60_000, "b", "y"),
            row(180_000, "a", "x"),
            row(60_000, "b", "x"),
            row(60_000, "a", "z"),
        ];
        let batch = to_batch(&keys, &rows).expect("batch");
        let back = from_batch(&keys, Aggregation::Count, &batch).expect("rows");
        let order: Vec<(i64, &str, &str)> = back
            .iter()
            .map(|r| (r.minute_ms, r.subject.as_str(), r.group[0].as_str()))
            .collect();
        assert_eq!(
            order,
            vec![
                (60_000, "a", "z"),
                (180_000, "a", "x"),
                (60_000, "b", "x"),
                (60_000, "b", "y"),
                (120_000, "b", "x"),
            ]
        );
    }

    // Rows merged per hour keep every state whole: the per-hour totals of the merged rows
    // equal those of the minute rows, for each subject and group, sorted or not.
    #[test]
    fn rows_merged_into_hours_keep_their_totals() {
        let keys = vec!["model".to_owned()];
        let mut rows = Vec::new();
        for minute in 0..180i64 {
            for (subject, model) in [("a", "x"), ("a", "y"), ("b", "x")] {
                rows.push(RollupRow {
                    minute_ms: minute * MINUTE_MS,
                    subject: subject.into(),
                    group: vec![model.into()],
                    state: AggState::Sum(Quantity::from(minute + 1)),
                });
            }
        }
        let totals = |rows: &[RollupRow]| {
            let mut map = std::collections::BTreeMap::new();
            for r in rows {
                let key = (r.minute_ms / HOUR_MS, r.subject.clone(), r.group.clone());
                map.entry(key)
                    .or_insert(AggState::Sum(Quantity::ZERO))
                    .merge(&r.state);
            }
            map
        };
        let batch = to_batch(&keys, &rows).expect("batch");
        let merged = from_batch_in_slots(&keys, Aggregation::Sum, &batch, HOUR_MS).expect("rows");
        assert_eq!(merged.len(), 3 * 3, "one row per (hour, subject, group)");
        assert!(merged.iter().all(|r| r.minute_ms % HOUR_MS == 0));
        assert_eq!(totals(&merged), totals(&rows));
        let minutes = from_batch(&keys, Aggregation::Sum, &batch).expect("rows");
        assert_eq!(minutes.len(), rows.len(), "minute slots merge nothing here");
    }

    // Hours are taken only when no window can tell: hour, day or month windows in UTC
    // over a range that starts and ends on an hour.
    #[test]
    fn queries_merge_hours_only_when_windows_hold_whole_hours() {
        let at = |text: &str| Some(text.parse::<chrono::DateTime<chrono::Utc>>().expect("time"));
        let day = MeterQuery {
            window_size: Some(WindowSize::Day),
            from: at("2026-11-01T00:00:00Z"),
            to: at("2026-12-01T00:00:00Z"),
            ..MeterQuery::default()
        };
        assert_eq!(query_slot_ms(&day), HOUR_MS);
        let unbounded = MeterQuery {
            from: None,
            to: None,
            ..day.clone()
        };
        assert_eq!(query_slot_ms(&unbounded), HOUR_MS);
        let cases = [
            MeterQuery {
                window_size: Some(WindowSize::Minute),
                ..day.clone()
            },
            MeterQuery {
                window_size: None,
                ..day.clone()
            },
            MeterQuery {
                from: at("2026-11-01T00:30:00Z"),
                ..day.clone()
            },
            MeterQuery {
                to: at("2026-11-30T23:59:00Z"),
                ..day.clone()
            },
            MeterQuery {
                time_zone: "Asia/Kolkata".parse().expect("zone"),
                ..day.clone()
            },
        ];
        for query in cases {
            assert_eq!(query_slot_ms(&query), MINUTE_MS, "{query:?}");
        }
    }

    // A batch without the columns its aggregation never reads gives the same rows.
    #[test]
    fn unused_columns_may_be_left_out() {
        let keys = vec!["model".to_owned()];
        for aggregation in Aggregation::ALL {
            let state = match aggregation {
                Aggregation::Sum => AggState::Sum(q("1.5")),
                Aggregation::Count => AggState::Count(7),
                Aggregation::Avg => AggState::Avg {
                    sum: q("3"),
                    count: 2,
                },
                Aggregation::Min => AggState::Min(q("-1")),
                Aggregation::Max => AggState::Max(q("9")),
                Aggregation::Latest => AggState::Latest {
                    time_ms: 99,
                    value: q("4"),
                },
                Aggregation::UniqueCount => AggState::UniqueCount(BTreeSet::from(["a".into()])),
            };
            let rows = vec![RollupRow {
                minute_ms: 60_000,
                subject: "s".into(),
                group: vec!["gpt".into()],
                state,
            }];
            let batch = to_batch(&keys, &rows).expect("batch");
            let unused = unused_columns(aggregation);
            let kept: Vec<usize> = (0..batch.num_columns())
                .filter(|&i| !unused.contains(&batch.schema().field(i).name().as_str()))
                .collect();
            let narrow = batch.project(&kept).expect("project");
            assert!(narrow.num_columns() < batch.num_columns());
            let back = from_batch(&keys, aggregation, &narrow).expect("rows");
            assert_eq!(back, rows, "{aggregation:?}");
        }
    }

    // Every aggregation's state survives the trip through Arrow unchanged.
    #[test]
    fn rows_round_trip_through_arrow() {
        let keys = vec!["model".to_owned()];
        for aggregation in Aggregation::ALL {
            let state = match aggregation {
                Aggregation::Sum => AggState::Sum(q("12345678901234567890.123456789012345678")),
                Aggregation::Count => AggState::Count(7),
                Aggregation::Avg => AggState::Avg {
                    sum: q("-0.5"),
                    count: 2,
                },
                Aggregation::Min => AggState::Min(q("0.000000000000000001")),
                Aggregation::Max => AggState::Max(Quantity::MAX),
                Aggregation::Latest => AggState::Latest {
                    time_ms: 99,
                    value: Quantity::MIN,
                },
                Aggregation::UniqueCount => {
                    AggState::UniqueCount(BTreeSet::from(["a".into(), "b".into()]))
                }
            };
            let rows = vec![RollupRow {
                minute_ms: 60_000,
                subject: "s".into(),
                group: vec!["gpt".into()],
                state,
            }];
            let batch = to_batch(&keys, &rows).expect("batch");
            let back = from_batch(&keys, aggregation, &batch).expect("rows");
            assert_eq!(back, rows, "{aggregation:?}");
        }
    }
}
