//! Limits of free SQL that DataFusion's memory pool cannot see: scalar functions that
//! build one huge value in a single call (`repeat('x', 2^31)`, `range(10^12)`,
//! `lpad(s, 10^10)`). Each is replaced, under its own name, by a wrapper that checks
//! its arguments first and answers a plan error instead of allocating. Row-generating
//! *table* functions (`generate_series`, `range` in `FROM`) stream their rows and are
//! bounded by the query's timeout and row limit instead.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// What one value built by a scalar function may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ValueLimits {
    /// Bytes of one string value (`repeat`, `lpad`, `rpad`).
    pub string_bytes_max: usize,
    /// Elements of one list value (`range`, `generate_series` as scalar functions).
    pub list_elements_max: usize,
}

impl Default for ValueLimits {
    fn default() -> Self {
        Self {
            string_bytes_max: 1 << 20,
            list_elements_max: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Check {
    /// `repeat(text, n)`: length of text × n.
    Repeat,
    /// `lpad`/`rpad(text, n, ...)`: n characters.
    Pad,
    /// `range`/`generate_series(start, stop[, step])`.
    Series,
}

/// Replaces the guarded functions of a session by their checked wrappers.
pub fn install(ctx: &SessionContext, limits: ValueLimits) {
    let state = ctx.state();
    for (name, check) in [
        ("repeat", Check::Repeat),
        ("lpad", Check::Pad),
        ("rpad", Check::Pad),
        ("range", Check::Series),
        ("generate_series", Check::Series),
    ] {
        if let Some(inner) = state.scalar_functions().get(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Guarded {
                inner: inner.as_ref().clone(),
                check,
                limits,
            }));
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Guarded {
    inner: ScalarUDF,
    check: Check,
    limits: ValueLimits,
}

impl Guarded {
    fn admit(&self, args: &ScalarFunctionArgs) -> Result<()> {
        let rows = args.number_rows.max(1);
        let name = self.inner.name();
        match self.check {
            Check::Repeat => {
                let max = self.limits.string_bytes_max;
                for row in 0..rows {
                    let len = text_len(args.args.first(), row);
                    let times = int_at(args.args.get(1), row).unwrap_or(0).max(0) as u128;
                    if (len as u128) * times > max as u128 {
                        return plan_err!("{name}: the result would pass {max} bytes");
                    }
                }
            }
            Check::Pad => {
                let max = self.limits.string_bytes_max;
                for row in 0..rows {
                    let n = int_at(args.args.get(1), row).unwrap_or(0);
                    if n > max as i64 {
                        return plan_err!("{name}: a length over {max} characters");
                    }
                }
            }
            Check::Series => {
                let max = self.limits.list_elements_max;
                if args
                    .args
                    .iter()
                    .any(|a| !matches!(a.data_type(), DataType::Int64 | DataType::Null))
                {
                    return plan_err!(
                        "{name}: only integer arguments are allowed in SQL here (at most {max} elements)"
                    );
                }
                for row in 0..rows {
                    let at = |i: usize| int_at(args.args.get(i), row);
                    let (start, stop, step) = match args.args.len() {
                        1 => (Some(0), at(0), Some(1)),
                        _ => (at(0), at(1), at(2).or(Some(1))),
                    };
                    let (Some(start), Some(stop), Some(step)) = (start, stop, step) else {
                        continue;
                    };
                    let span = (i128::from(stop) - i128::from(start)).unsigned_abs();
                    let count = span / u128::from(step.unsigned_abs().max(1)) + 1;
                    if count > max as u128 {
                        return plan_err!("{name}: more than {max} elements");
                    }
                }
            }
        }
        Ok(())
    }
}

fn int_at(value: Option<&ColumnarValue>, row: usize) -> Option<i64> {
    match value? {
        ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Int64).ok()? {
            ScalarValue::Int64(v) => v,
            _ => None,
        },
        ColumnarValue::Array(a) => {
            let a = datafusion::arrow::compute::cast(a, &DataType::Int64).ok()?;
            let a = a.as_primitive_opt::<Int64Type>()?;
            (row < a.len() && a.is_valid(row)).then(|| a.value(row))
        }
    }
}

fn text_len(value: Option<&ColumnarValue>, row: usize) -> usize {
    match value {
        Some(ColumnarValue::Scalar(s)) => s.to_string().len(),
        Some(ColumnarValue::Array(a)) => {
            match datafusion::arrow::compute::cast(a, &DataType::Utf8) {
                Ok(a) => a
                    .as_string_opt::<i32>()
                    .filter(|s| row < s.len() && s.is_valid(row))
                    .map_or(0, |s| s.value(row).len()),
                Err(_) => 0,
            }
        }
        None => 0,
    }
}

impl ScalarUDFImpl for Guarded {
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

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.admit(&args)?;
        self.inner.invoke_with_args(args)
    }
}
