//! The query service: DataFusion over Parquet (rollups, raw events) plus live
//! in-memory batches, on its own multi-threaded runtime so that a long query never
//! stalls an actor's Arbiter.

use crate::objects::{self, ObjectRoot};
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{DataFrame, Expr, ParquetReadOptions, col, lit};
use futures::StreamExt;

/// What a scan reads: Parquet files of `schema` (missing columns read as null), rows in
/// `range`, with `in_list`'s column among its values and each `equals` column equal.
pub struct Scan {
    pub schema: SchemaRef,
    pub urls: Vec<String>,
    pub range: TimeRange,
    pub in_list: Option<(&'static str, Vec<String>)>,
    pub equals: Vec<(&'static str, String)>,
}

/// Batches with fewer rows than this are copied into buffers of their size when a query
/// counts its memory.
const SMALL_BATCH_ROWS: usize = 1024;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("query failed: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("encoding Parquet failed: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    #[error(transparent)]
    Objects(#[from] objects::Error),
    #[error("the query did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the query task failed: {0}")]
    Join(String),
    #[error("invalid SQL: {0}")]
    Sql(String),
    /// The query needed more memory than its share.
    #[error("the query needs more memory than its limit of {limit} bytes: {detail}")]
    Memory { limit: usize, detail: String },
    /// Every SQL slot is taken.
    #[error("{0} SQL queries are running already; retry later")]
    Busy(usize),
    #[error(transparent)]
    Pruned(#[from] pruned::Error),
    /// A body of [`wire`] that is not one.
    #[error("malformed SQL tables from another node: {0}")]
    Wire(String),
}

/// What free SQL may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    /// Memory of one query (DataFusion's memory pool: sorts, joins, aggregations).
    pub memory_bytes: usize,
    /// Queries at once; one more is refused.
    pub concurrent_max: usize,
    /// What one scalar function call may build.
    pub values: guard::ValueLimits,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 128 << 20,
            concurrent_max: 4,
            values: guard::ValueLimits::default(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One table of a SQL request: its Parquet files and its live rows.
#[derive(Debug, Clone)]
pub struct SqlTable {
    pub name: String,
    pub schema: SchemaRef,
    pub urls: Vec<String>,
    pub live: Vec<RecordBatch>,
}

#[derive(Debug, Clone)]
pub struct SqlRequest {
    pub tables: Vec<SqlTable>,
    pub sql: String,
    pub row_limit: usize,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct SqlAnswer {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// More rows existed than the limit allowed.
    pub truncated: bool,
}

/// Time range filter of a scan, in the column's own unit.
#[derive(Debug, Clone, Copy)]
pub struct TimeRange {
    pub column: &'static str,
    pub lo: Option<i64>,
    pub hi: Option<i64>,
    pub micros: bool,
}

impl TimeRange {
    /// No bound: every row.
    pub fn everything() -> Self {
        Self {
            column: "",
            lo: None,
            hi: None,
            micros: false,
        }
    }
}

/// Handle to the query runtime and the object root.
#[derive(Clone, Debug)]
pub struct QueryService {
    runtime: tokio::runtime::Handle,
    /// Where free SQL runs: a runtime of its own, so that checkpoints (Parquet
    /// encoding and puts on `runtime`) never wait behind a user's query.
    sql_runtime: tokio::runtime::Handle,
    root: ObjectRoot,
    /// One DataFusion runtime for every query: its caches (Parquet footers, file
    /// listings) serve the next scan instead of decoding the same metadata again.
    env: Arc<RuntimeEnv>,
    sql_limits: SqlLimits,
    sql_slots: Arc<tokio::sync::Semaphore>,
    /// Metadata of the Parquet files meter queries read ([`Self::scan_rollups`]).
    footers: Arc<footers::Footers>,
}

impl QueryService {
    /// `runtime` must be a multi-threaded runtime that outlives the service.
    /// DataFusion reads the root's URLs through the root's store (an S3 bucket is
    /// registered for its `s3://bucket` URL).
    pub fn new(runtime: tokio::runtime::Handle, root: ObjectRoot) -> Self {
        let env = RuntimeEnv::default();
        root.register(&env);
        Self {
            sql_runtime: runtime.clone(),
            runtime,
            root,
            env: Arc::new(env),
            sql_limits: SqlLimits::default(),
            sql_slots: Arc::new(tokio::sync::Semaphore::new(
                SqlLimits::default().concurrent_max,
            )),
            footers: Arc::new(footers::Footers::new(footers::FOOTERS_BYTES_MAX)),
        }
    }

    /// Runs free SQL on `runtime` (multi-threaded, outliving the service) within `limits`.
    pub fn with_sql(mut self, runtime: tokio::runtime::Handle, limits: SqlLimits) -> Self {
        self.sql_runtime = runtime;
        self.sql_slots = Arc::new(tokio::sync::Semaphore::new(limits.concurrent_max.max(1)));
        self.sql_limits = limits;
        self
    }

    /// A session for one SQL query: its own memory pool of the query's share, the
    /// shared caches, and the guarded scalar functions.
    fn sql_context(&self) -> SessionContext {
        let env = RuntimeEnv {
            memory_pool: Arc::new(TrackConsumersPool::new(
                GreedyMemoryPool::new(self.sql_limits.memory_bytes),
                std::num::NonZeroUsize::MIN,
            )),
            disk_manager: self.env.disk_manager.clone(),
            cache_manager: self.env.cache_manager.clone(),
            object_store_registry: self.env.object_store_registry.clone(),
        };
        // Filters run inside the Parquet scan (late materialization): a selective
        // predicate on `subject` decodes the other columns only for the rows it keeps.
        let config = SessionConfig::new()
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            .set_bool("datafusion.execution.parquet.reorder_filters", true);
        let ctx = SessionContext::new_with_config_rt(config, Arc::new(env));
        guard::install(&ctx, self.sql_limits.values);
        utc::install(&ctx);
        ctx
    }

    fn context(&self) -> SessionContext {
        SessionContext::new_with_config_rt(SessionConfig::new(), self.env.clone())
    }

    pub fn root(&self) -> &ObjectRoot {
        &self.root
    }

    async fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.runtime
            .spawn(fut)
            .await
            .map_err(|e| Error::Join(e.to_string()))?
    }

    /// Encodes a batch as Parquet and writes it durably; returns the number of rows.
    pub async fn write_parquet(&self, path: ObjectPath, batch: RecordBatch) -> Result<u64> {
        let root = self.root.clone();
        self.run(async move {
            let rows = batch.num_rows() as u64;
            let bytes = tokio::task::spawn_blocking(move || encode_parquet(&batch))
                .await
                .map_err(|e| Error::Join(e.to_string()))??;
            root.put(&path, bytes).await?;
            Ok(rows)
        })
        .await
    }

    /// Rewrites the rows of Parquet files of `schema` (object paths under this service's
    /// root) as one file, in their order, and writes it durably; returns the number of
    /// rows. Inputs are read one at a time, in batches of [`PAGE_ROWS`] × 8 rows straight
    /// from their Parquet bytes, so the memory it takes is one input's compressed bytes,
    /// one batch and the output's encoded bytes. An input whose columns differ from
    /// `schema` (a file of an older version) goes through [`Self::scan`], which fills
    /// missing columns with nulls: it is decoded whole.
    pub async fn merge_parquet(
        &self,
        schema: SchemaRef,
        inputs: Vec<ObjectPath>,
        path: ObjectPath,
    ) -> Result<u64> {
        let this = self.clone();
        self.run(async move {
            let props = writer_properties(&schema);
            let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))?;
            let mut rows = 0u64;
            for input in inputs {
                let bytes = this.root.get(&input).await?;
                let expected = schema.clone();
                let (back, streamed) = tokio::task::spawn_blocking(move || {
                    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
                    if builder.schema().fields() != expected.fields() {
                        return Ok::<_, Error>((writer, None));
                    }
                    let mut rows = 0u64;
                    for batch in builder.with_batch_size(PAGE_ROWS * 8).build()? {
                        let batch = batch?;
                        rows += batch.num_rows() as u64;
                        writer.write(&batch)?;
                    }
                    Ok((writer, Some(rows)))
                })
                .await
                .map_err(|e| Error::Join(e.to_string()))??;
                writer = back;
                if let Some(n) = streamed {
                    rows += n;
                    continue;
                }
                let url = this.root.url_of(&input);
                let batches = this
                    .scan(
                        schema.clone(),
                        vec![url],
                        TimeRange::everything(),
                        None,
                        Vec::new(),
                    )
                    .await?;
                rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                writer = tokio::task::spawn_blocking(move || {
                    for batch in &batches {
                        writer.write(batch)?;
                    }
                    Ok::<_, Error>(writer)
                })
                .await
                .map_err(|e| Error::Join(e.to_string()))??;
            }
            let bytes = tokio::task::spawn_blocking(move || writer.into_inner().map(Bytes::from))
                .await
                .map_err(|e| Error::Join(e.to_string()))??;
            this.root.put(&path, bytes).await?;
            Ok(rows)
        })
        .await
    }

    /// Reads Parquet files of `schema` (missing columns read as null), filtered by a
    /// time range and optionally by one string column's values.
    pub async fn scan(
        &self,
        schema: SchemaRef,
        urls: Vec<String>,
        range: TimeRange,
        in_list: Option<(&'static str, Vec<String>)>,
        equals: Vec<(&'static str, String)>,
    ) -> Result<Vec<RecordBatch>> {
        self.scan_within(schema, urls, range, in_list, equals, None)
            .await
    }

    /// [`Self::scan`] for a query's answer: it runs in one of the SQL slots (waiting
    /// for one, not refused) and the batches it keeps may take at most one SQL query's
    /// memory share; past it the answer is [`Error::Memory`], so meter queries stay
    /// inside the SQL share of the memory budget whatever range they ask for.
    pub async fn scan_for_query(
        &self,
        schema: SchemaRef,
        urls: Vec<String>,
        range: TimeRange,
        in_list: Option<(&'static str, Vec<String>)>,
        equals: Vec<(&'static str, String)>,
    ) -> Result<Vec<RecordBatch>> {
        let _slot = self
            .sql_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::Join(e.to_string()))?;
        let limit = self.sql_limits.memory_bytes;
        self.scan_within(schema, urls, range, in_list, equals, Some(limit))
            .await
    }

    /// The rollup rows `scan` selects, read without a DataFusion plan: row groups and
    /// pages pruned by the files' cached statistics, then rows filtered exactly. Like
    /// [`Self::scan_for_query`], it holds a SQL slot and keeps at most one SQL query's
    /// memory share.
    pub async fn scan_rollups(&self, scan: pruned::RollupScan) -> Result<Vec<RecordBatch>> {
        if scan.paths.is_empty() {
            return Ok(Vec::new());
        }
        let _slot = self
            .sql_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::Join(e.to_string()))?;
        let limit = self.sql_limits.memory_bytes;
        let store = self.root.store();
        let footers = self.footers.clone();
        self.run(async move {
            let batches = pruned::read(store, footers, Arc::new(scan)).await?;
            let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
            if bytes > limit {
                return Err(Error::Memory {
                    limit,
                    detail: "the rollups in range take more than a query's memory share; \
                             ask for a shorter range (from, to) or fewer subjects"
                        .to_owned(),
                });
            }
            Ok(batches)
        })
        .await
    }

    /// Forgets the cached metadata of files that compaction superseded.
    pub fn forget_files<'a>(&self, paths: impl IntoIterator<Item = &'a str>) {
        for path in paths {
            self.footers.forget(path);
        }
    }

    /// Files whose metadata is cached, and its decoded bytes.
    pub fn footers_usage(&self) -> (usize, usize) {
        self.footers.usage()
    }

    async fn scan_within(
        &self,
        schema: SchemaRef,
        urls: Vec<String>,
        range: TimeRange,
        in_list: Option<(&'static str, Vec<String>)>,
        equals: Vec<(&'static str, String)>,
        max_bytes: Option<usize>,
    ) -> Result<Vec<RecordBatch>> {
        let kept = (Vec::new(), 0usize);
        let scan = Scan {
            schema,
            urls,
            range,
            in_list,
            equals,
        };
        let (batches, _) = self
            .scan_fold(scan, kept, move |kept, mut batch| {
                let Some(max_bytes) = max_bytes else {
                    kept.0.push(batch);
                    return Ok(());
                };
                // A filter's output keeps buffers sized for a whole batch (8,192 rows,
                // 460 KB for one rollup row): a few selected rows are copied out of them.
                if batch.num_rows() < SMALL_BATCH_ROWS {
                    let rows = UInt32Array::from_iter_values(0..batch.num_rows() as u32);
                    batch = take_record_batch(&batch, &rows)
                        .map_err(datafusion::error::DataFusionError::from)?;
                }
                kept.1 += batch.get_array_memory_size();
                if kept.1 > max_bytes {
                    return Err(Error::Memory {
                        limit: max_bytes,
                        detail: "the rollups in range take more than a query's memory share; \
                                 ask for a shorter range (from, to) or fewer subjects"
                            .to_owned(),
                    });
                }
                kept.0.push(batch);
                Ok(())
            })
            .await?;
        Ok(batches)
    }

    /// Reads like [`Self::scan`], one batch at a time into `fold`, so that a reader that
    /// keeps less than the batches (an aggregate) holds one batch at a time.
    pub async fn scan_fold<T: Send + 'static>(
        &self,
        scan: Scan,
        init: T,
        mut fold: impl FnMut(&mut T, RecordBatch) -> Result<()> + Send + 'static,
    ) -> Result<T> {
        let Scan {
            schema,
            urls,
            range,
            in_list,
            equals,
        } = scan;
        if urls.is_empty() {
            return Ok(init);
        }
        let ctx = self.context();
        self.run(async move {
            let mut df = ctx
                .read_parquet(urls, ParquetReadOptions::default().schema(&schema))
                .await?;
            let ts = |v: i64| {
                if range.micros {
                    lit(ScalarValue::TimestampMicrosecond(
                        Some(v),
                        Some(Arc::from("UTC")),
                    ))
                } else {
                    lit(ScalarValue::TimestampMillisecond(
                        Some(v),
                        Some(Arc::from("UTC")),
                    ))
                }
            };
            if let Some(lo) = range.lo {
                df = df.filter(col(range.column).gt_eq(ts(lo)))?;
            }
            if let Some(hi) = range.hi {
                df = df.filter(col(range.column).lt(ts(hi)))?;
            }
            if let Some((column, values)) = in_list
                && !values.is_empty()
            {
                let list: Vec<Expr> = values.into_iter().map(lit).collect();
                df = df.filter(col(column).in_list(list, false))?;
            }
            for (column, value) in equals {
                df = df.filter(col(column).eq(lit(value)))?;
            }
            let mut stream = df.execute_stream().await?;
            let mut acc = init;
            while let Some(batch) = stream.next().await {
                fold(&mut acc, batch?)?;
            }
            Ok(acc)
        })
        .await
    }

    /// One of the `sql.concurrentMax` SQL slots, held until the permit drops; [`Error::Busy`]
    /// when every one is taken. [`Self::sql`] takes one; so does a holder gathering a query's
    /// tables for a standby, which is a query's work too.
    pub fn try_sql_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.sql_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Busy(self.sql_limits.concurrent_max))
    }

    /// Runs a read-only SQL query over the given tables (and nothing else): DDL, DML
    /// and other statements are rejected, and no table reads a file or URL by name.
    /// It takes one SQL slot first ([`Error::Busy`] when none is free).
    pub async fn sql(&self, request: SqlRequest) -> Result<SqlAnswer> {
        let slot = self.try_sql_slot()?;
        self.sql_in_slot(slot, request).await
    }

    /// [`Self::sql`] in a slot the caller took before it gathered the tables, so that a
    /// query refused for want of a slot has copied no live rows.
    pub async fn sql_in_slot(
        &self,
        _slot: tokio::sync::OwnedSemaphorePermit,
        request: SqlRequest,
    ) -> Result<SqlAnswer> {
        let timeout = request.timeout;
        let limit = self.sql_limits.memory_bytes;
        let ctx = self.sql_context();
        let task = self.sql_runtime.spawn(async move {
            for table in &request.tables {
                let view = table_view(&ctx, table).await?;
                ctx.register_table(table.name.as_str(), view)?;
            }
            let options = SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let df = ctx
                .sql_with_options(&request.sql, options)
                .await
                .map_err(|e| Error::Sql(e.to_string()))?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let mut stream = df.execute_stream().await?;
            let mut batches = Vec::new();
            let mut rows = 0usize;
            let mut truncated = false;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let room = request.row_limit - rows;
                if batch.num_rows() > room {
                    batches.push(batch.slice(0, room));
                    truncated = true;
                    break;
                }
                rows += batch.num_rows();
                batches.push(batch);
                if rows == request.row_limit {
                    truncated = stream.next().await.is_some();
                    break;
                }
            }
            Ok(SqlAnswer {
                schema,
                batches,
                truncated,
            })
        });
        // On timeout the task is aborted: DataFusion's operators yield cooperatively,
        // so the work stops at its next yield instead of running on unseen.
        let abort = task.abort_handle();
        let answer = match tokio::time::timeout(timeout, task).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(join)) => Err(Error::Join(join.to_string())),
            Err(_) => {
                abort.abort();
                Err(Error::Timeout(timeout))
            }
        };
        answer.map_err(|e| user_error(e, limit))
    }
}

/// What a query's own failure is for its client: running out of its memory share, or
/// an error of the query itself (a plan or execution error, 4xx); storage failures
/// stay server errors.
fn user_error(error: Error, limit: usize) -> Error {
    use datafusion::error::DataFusionError as E;
    let Error::DataFusion(e) = error else {
        return error;
    };
    match e.find_root() {
        E::ResourcesExhausted(detail) => Error::Memory {
            limit,
            detail: detail.clone(),
        },
        E::ObjectStore(_) | E::IoError(_) | E::ParquetError(_) | E::Internal(_) => {
            Error::DataFusion(e)
        }
        _ => Error::Sql(e.to_string()),
    }
}

async fn table_view(
    ctx: &SessionContext,
    table: &SqlTable,
) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
    let schema = view_types(&table.schema);
    let live = table
        .live
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| with_schema(b, &schema))
        .collect::<Result<Vec<_>>>()?;
    let memory = MemTable::try_new(schema.clone(), vec![live.clone()])?;
    if table.urls.is_empty() {
        return Ok(Arc::new(memory));
    }
    let files: DataFrame = ctx
        .read_parquet(
            table.urls.clone(),
            ParquetReadOptions::default().schema(&schema),
        )
        .await?;
    // Without live rows the table is the files alone: no union in the plan, so an
    // aggregate such as count(*) can be answered from the files' statistics.
    if live.is_empty() {
        return Ok(files.into_view());
    }
    let memory = ctx.read_table(Arc::new(memory))?;
    Ok(files.union(memory)?.into_view())
}

/// The schema SQL reads a table as: text columns as `Utf8View`, which the Parquet
/// reader fills without copying each string into one buffer and which DataFusion groups
/// and compares faster (its own default for Parquet).
fn view_types(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => Field::clone(f).with_data_type(DataType::Utf8View),
            _ => Field::clone(f),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A batch cast to `schema` (same columns, possibly other types).
fn with_schema(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A record batch as Parquet bytes (Snappy).
pub fn encode_parquet(batch: &RecordBatch) -> Result<Bytes> {
    let props = writer_properties(&batch.schema());
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buffer, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(buffer))
}

/// How Metron writes Parquet.
fn writer_properties(schema: &Schema) -> WriterProperties {
    // Small pages with a page index: a reader of one subject's rows in a file sorted by
    // (subject, minute) decodes a page or two per column instead of a row group. Only
    // text columns keep a dictionary: a reader of one page must decode the column's
    // whole dictionary page first, which for minutes, values and times is as large as the
    // column itself.
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS);
    for field in schema.fields() {
        if !matches!(field.data_type(), DataType::Utf8 | DataType::List(_)) {
            props = props.set_column_dictionary_enabled(
                datafusion::parquet::schema::types::ColumnPath::from(field.name().as_str()),
                false,
            );
        }
    }
    props.build()
}

/// Rows per row group of the Parquet files Metron writes.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Rows per data page at most (the page index's granularity).
pub const PAGE_ROWS: usize = 1024;

pub mod footers;
pub mod guard;
pub mod pruned;
#[cfg(test)]
mod tests;
pub mod utc;
pub mod wire;
