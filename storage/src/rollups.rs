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
use metron_engine::query::RollupRow;
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

/// Rollup rows to one record batch.
pub fn to_batch(group_keys: &[String], rows: &[RollupRow]) -> Result<RecordBatch, ArrowError> {
    let mut minute = TimestampMillisecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
    let mut subject = StringBuilder::new();
    let mut groups: Vec<StringBuilder> = group_keys.iter().map(|_| StringBuilder::new()).collect();
    let mut value = Decimal256Builder::with_capacity(rows.len())
        .with_precision_and_scale(VALUE_PRECISION, VALUE_SCALE)?;
    let mut count = Int64Builder::with_capacity(rows.len());
    let mut latest = Int64Builder::with_capacity(rows.len());
    let mut uniques = ListBuilder::new(StringBuilder::new());
    for row in rows {
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
    let missing =
        |name: &str| ArrowError::SchemaError(format!("rollup batch has no column {name}"));
    let column = |name: &str| batch.column_by_name(name).ok_or_else(|| missing(name));
    let minute = column("minute")?
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| missing("minute (timestamp)"))?;
    let subject = column("subject")?
        .as_string_opt::<i32>()
        .ok_or_else(|| missing("subject (utf8)"))?;
    let groups: Vec<Option<&datafusion::arrow::array::StringArray>> = group_keys
        .iter()
        .map(|k| {
            batch
                .column_by_name(&group_column(k))
                .and_then(|c| c.as_string_opt::<i32>())
        })
        .collect();
    let value_column = column("value")?;
    let value_at = |i: usize| -> Option<Quantity> {
        if let Some(array) = value_column.as_primitive_opt::<Decimal256Type>() {
            return (!array.is_null(i)).then(|| Quantity::from_raw(array.value(i)));
        }
        let array = value_column.as_primitive_opt::<Decimal128Type>()?;
        let factor = i256::from_i128(10).wrapping_pow(Quantity::SCALE - LEGACY_SCALE);
        (!array.is_null(i))
            .then(|| Quantity::from_raw(i256::from_i128(array.value(i)).wrapping_mul(factor)))
    };
    if value_column.as_primitive_opt::<Decimal256Type>().is_none()
        && value_column.as_primitive_opt::<Decimal128Type>().is_none()
    {
        return Err(missing("value (decimal)"));
    }
    let count = column("count")?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| missing("count (int64)"))?;
    let latest = column("latest_ms")?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| missing("latest_ms (int64)"))?;
    let uniques = column("uniques")?
        .as_list_opt::<i32>()
        .ok_or_else(|| missing("uniques (list)"))?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let v = value_at(i).unwrap_or(Quantity::ZERO);
        let c = if count.is_null(i) {
            0
        } else {
            u64::try_from(count.value(i)).unwrap_or(0)
        };
        let state = match aggregation {
            Aggregation::Sum => AggState::Sum(v),
            Aggregation::Count => AggState::Count(c),
            Aggregation::Avg => AggState::Avg { sum: v, count: c },
            Aggregation::Min => AggState::Min(v),
            Aggregation::Max => AggState::Max(v),
            Aggregation::Latest => AggState::Latest {
                time_ms: if latest.is_null(i) {
                    0
                } else {
                    latest.value(i)
                },
                value: v,
            },
            Aggregation::UniqueCount => {
                let mut set = BTreeSet::new();
                if !uniques.is_null(i) {
                    let items = uniques.value(i);
                    if let Some(strings) = items.as_string_opt::<i32>() {
                        set.extend(strings.iter().flatten().map(str::to_owned));
                    }
                }
                AggState::UniqueCount(set)
            }
        };
        rows.push(RollupRow {
            minute_ms: minute.value(i),
            subject: subject.value(i).to_owned(),
            group: groups
                .iter()
                .map(|g| {
                    g.filter(|g| !g.is_null(i))
                        .map(|g| g.value(i).to_owned())
                        .unwrap_or_default()
                })
                .collect(),
            state,
        });
    }
    Ok(rows)
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
