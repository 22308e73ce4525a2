//! `date_trunc` over UTC timestamps at the speed of plain arithmetic.
//!
//! DataFusion truncates a timestamp with a time zone value by value through chrono-tz,
//! even when the zone is UTC; without a zone it truncates `hour` and `day` (and finer)
//! arithmetically, and coarser units without zone lookups. Metron's `time`, `ingested_at`
//! and `minute` columns are all UTC, where both give the same instants: so the wrapper
//! hands DataFusion's own function the same values without their zone and puts the zone
//! back on the answer. Any other zone, and scalars, go to DataFusion unchanged.

use datafusion::arrow::array::{Array, ArrayRef, make_array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::Result;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// Replaces a session's `date_trunc` by the UTC fast path.
pub fn install(ctx: &SessionContext) {
    let state = ctx.state();
    if let Some(inner) = state.scalar_functions().get("date_trunc") {
        ctx.register_udf(ScalarUDF::new_from_impl(UtcDateTrunc {
            inner: inner.as_ref().clone(),
        }));
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct UtcDateTrunc {
    inner: ScalarUDF,
}

/// Is this a timestamp type in UTC?
fn utc(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Timestamp(_, Some(tz))
        if matches!(tz.as_ref(), "UTC" | "+00:00" | "Z" | "Etc/UTC"))
}

/// The same type without its zone.
fn zoneless(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Timestamp(unit, _) => DataType::Timestamp(*unit, None),
        other => other.clone(),
    }
}

/// The same values under another timestamp type of the same unit (no conversion).
fn retype(array: &ArrayRef, data_type: DataType) -> Result<ArrayRef> {
    let data = array
        .to_data()
        .into_builder()
        .data_type(data_type)
        .build()?;
    Ok(make_array(data))
}

fn retype_field(field: &FieldRef, data_type: DataType) -> FieldRef {
    Arc::new(Field::clone(field).with_data_type(data_type))
}

impl ScalarUDFImpl for UtcDateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let zone = match args.args.get(1) {
            Some(ColumnarValue::Array(array)) if utc(array.data_type()) => {
                array.data_type().clone()
            }
            _ => return self.inner.invoke_with_args(args),
        };
        let plain = zoneless(&zone);
        if let Some(ColumnarValue::Array(array)) = args.args.get_mut(1) {
            *array = retype(array, plain.clone())?;
        }
        if let Some(field) = args.arg_fields.get_mut(1) {
            *field = retype_field(field, plain.clone());
        }
        let answer_type = args.return_field.data_type().clone();
        args.return_field = retype_field(&args.return_field, zoneless(&answer_type));
        match self.inner.invoke_with_args(args)? {
            ColumnarValue::Array(array) if array.data_type() == &zoneless(&answer_type) => {
                Ok(ColumnarValue::Array(retype(&array, answer_type)?))
            }
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::array::TimestampMicrosecondArray;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;

    async fn truncated(fast: bool, unit: &str, values: &[i64]) -> String {
        let ctx = SessionContext::new();
        if fast {
            install(&ctx);
            let udf = ctx
                .state()
                .scalar_functions()
                .get("date_trunc")
                .cloned()
                .expect("date_trunc");
            assert!(
                format!("{:?}", udf.inner()).contains("UtcDateTrunc"),
                "installed"
            );
        }
        let array = TimestampMicrosecondArray::from(values.to_vec()).with_timezone("UTC");
        let schema = Arc::new(Schema::new(vec![Field::new(
            "time",
            array.data_type().clone(),
            false,
        )]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(array)]).expect("batch");
        let table = MemTable::try_new(schema, vec![vec![batch]]).expect("table");
        ctx.register_table("t", Arc::new(table)).expect("register");
        let sql = format!(
            "SELECT arrow_typeof(date_trunc('{unit}', time)) AS ty, date_trunc('{unit}', time) AS d FROM t"
        );
        let batches = ctx
            .sql(&sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        pretty_format_batches(&batches).expect("format").to_string()
    }

    // The fast path answers exactly what DataFusion's own date_trunc does, type included,
    // for every unit, over instants around day, month and year edges and before 1970.
    #[tokio::test]
    async fn utc_truncation_equals_datafusions() {
        let values = [
            0,
            -1,
            1_764_547_199_999_999,
            1_764_547_200_000_000,
            1_767_225_599_123_456,
            1_709_164_800_000_001,
            -86_400_000_001,
            1_234_567_890_123_456,
        ];
        for unit in [
            "microsecond",
            "millisecond",
            "second",
            "minute",
            "hour",
            "day",
            "week",
            "month",
            "quarter",
            "year",
        ] {
            let fast = truncated(true, unit, &values).await;
            assert_eq!(fast, truncated(false, unit, &values).await, "{unit}");
            assert!(fast.contains("UTC"), "{fast}");
        }
    }
}
