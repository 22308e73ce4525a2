//! Meter queries' reads of rollup files without a DataFusion plan: the files' cached
//! metadata ([`super::footers`]) prunes row groups by their `minute` and `subject`
//! statistics and, within a row group, pages by the page index, so one subject's month
//! of a file sorted by (subject, minute) reads one or two pages per column. The rows read
//! are then filtered exactly.

use super::footers::{Footer, Footers, ObjectReader};
use crate::objects::object_path;
use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::TimestampMillisecondType;
use datafusion::arrow::error::ArrowError;
use datafusion::object_store::ObjectStore;
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::RowSelection;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::statistics::Statistics;
use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

/// Files read at once by one scan (their IO overlaps their decoding).
const FILES_AT_ONCE: usize = 4;
/// Rows per decoded batch.
const BATCH_ROWS: usize = 8192;

/// The rows of rollup files with `minute` in `[lo_ms, hi_ms)` and, unless `subjects` is
/// empty, `subject` among `subjects`.
#[derive(Debug, Clone, Default)]
pub struct RollupScan {
    pub paths: Vec<String>,
    pub lo_ms: Option<i64>,
    pub hi_ms: Option<i64>,
    pub subjects: BTreeSet<String>,
    /// Top-level columns not to read (say, state columns the aggregation never uses).
    pub skip: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading rollup file {path}: {source}")]
    Parquet { path: String, source: ParquetError },
    #[error("filtering rollup file {path}: {source}")]
    Arrow { path: String, source: ArrowError },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads what `scan` selects from every file, files in any order.
pub async fn read(
    store: Arc<dyn ObjectStore>,
    footers: Arc<Footers>,
    scan: Arc<RollupScan>,
) -> Result<Vec<RecordBatch>> {
    let files: Vec<Vec<RecordBatch>> = futures::stream::iter(0..scan.paths.len())
        .map(|i| {
            let (store, footers, scan) = (store.clone(), footers.clone(), scan.clone());
            async move { read_file(&store, &footers, &scan, &scan.paths[i]).await }
        })
        .buffer_unordered(FILES_AT_ONCE)
        .try_collect()
        .await?;
    Ok(files.into_iter().flatten().collect())
}

async fn read_file(
    store: &Arc<dyn ObjectStore>,
    footers: &Footers,
    scan: &RollupScan,
    path: &str,
) -> Result<Vec<RecordBatch>> {
    let parquet = |source| Error::Parquet {
        path: path.to_owned(),
        source,
    };
    let location = object_path(path);
    let Footer { metadata, size } = footers.get(store, &location).await.map_err(parquet)?;
    let meta = metadata.metadata().clone();
    let Some(plan) = plan(&meta, scan) else {
        return Ok(Vec::new());
    };
    let reader = ObjectReader::new(store.clone(), location, size).with_metadata(meta.clone());
    let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
        .with_batch_size(BATCH_ROWS)
        .with_row_groups(plan.row_groups);
    if !scan.skip.is_empty() {
        let schema = meta.file_metadata().schema_descr();
        let roots = schema
            .root_schema()
            .get_fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !scan.skip.contains(f.name()))
            .map(|(i, _)| i);
        builder = builder.with_projection(ProjectionMask::roots(schema, roots));
    }
    if let Some(selection) = plan.selection {
        builder = builder.with_row_selection(selection);
    }
    let mut stream = builder.build().map_err(parquet)?;
    let mut kept = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(parquet)?;
        let batch = keep_rows(&batch, scan).map_err(|source| Error::Arrow {
            path: path.to_owned(),
            source,
        })?;
        if batch.num_rows() > 0 {
            kept.push(batch);
        }
    }
    Ok(kept)
}

/// Which row groups, and which rows of them, may hold selected rows.
#[derive(Debug, PartialEq)]
struct Plan {
    row_groups: Vec<usize>,
    /// Rows of the chosen row groups (counted across them), when pages could be pruned.
    selection: Option<RowSelection>,
}

/// Columns of a file that statistics can prune by.
struct Columns {
    minute: Option<usize>,
    subject: Option<usize>,
}

fn columns(meta: &ParquetMetaData) -> Columns {
    let schema = meta.file_metadata().schema_descr();
    let find = |name: &str| {
        (0..schema.num_columns()).find(|&i| {
            let column = schema.column(i);
            column.path().parts().len() == 1 && column.name() == name
        })
    };
    Columns {
        minute: find("minute"),
        subject: find("subject"),
    }
}

fn plan(meta: &ParquetMetaData, scan: &RollupScan) -> Option<Plan> {
    let columns = columns(meta);
    let mut row_groups = Vec::new();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut rows_before = 0usize;
    let mut pruned_pages = false;
    for (i, group) in meta.row_groups().iter().enumerate() {
        if !group_may_hold(group, &columns, scan) {
            continue;
        }
        let rows = usize::try_from(group.num_rows()).unwrap_or(0);
        let within = page_ranges(meta, i, rows, &columns, scan);
        pruned_pages |= within.is_some();
        let whole: Range<usize> = 0..rows;
        let within = within.unwrap_or_else(|| Vec::from([whole]));
        if within.is_empty() {
            continue;
        }
        ranges.extend(
            within
                .into_iter()
                .map(|r| rows_before + r.start..rows_before + r.end),
        );
        rows_before += rows;
        row_groups.push(i);
    }
    if row_groups.is_empty() {
        return None;
    }
    let selection = pruned_pages
        .then(|| RowSelection::from_consecutive_ranges(ranges.into_iter(), rows_before));
    Some(Plan {
        row_groups,
        selection,
    })
}

/// Whether a row group's statistics admit the scan (missing statistics admit all).
fn group_may_hold(group: &RowGroupMetaData, columns: &Columns, scan: &RollupScan) -> bool {
    if let Some(i) = columns.minute
        && let Some(Statistics::Int64(stats)) = group.column(i).statistics()
        && let (Some(min), Some(max)) = (stats.min_opt(), stats.max_opt())
        && !minutes_overlap(*min, *max, scan)
    {
        return false;
    }
    if let Some(i) = columns.subject
        && !scan.subjects.is_empty()
        && let Some(Statistics::ByteArray(stats)) = group.column(i).statistics()
        && let (Some(min), Some(max)) = (stats.min_opt(), stats.max_opt())
        && !subjects_overlap(min.data(), max.data(), scan)
    {
        return false;
    }
    true
}

fn minutes_overlap(min: i64, max: i64, scan: &RollupScan) -> bool {
    scan.lo_ms.is_none_or(|lo| max >= lo) && scan.hi_ms.is_none_or(|hi| min < hi)
}

fn subjects_overlap(min: &[u8], max: &[u8], scan: &RollupScan) -> bool {
    scan.subjects
        .iter()
        .any(|s| s.as_bytes() >= min && s.as_bytes() <= max)
}

/// The rows of row group `group` (`rows` long) whose pages may hold selected rows, if the
/// file has page indexes for the pruning columns; `None` when it cannot tell.
fn page_ranges(
    meta: &ParquetMetaData,
    group: usize,
    rows: usize,
    columns: &Columns,
    scan: &RollupScan,
) -> Option<Vec<Range<usize>>> {
    let column_index = meta.column_index()?.get(group)?;
    let offset_index = meta.offset_index()?.get(group)?;
    let mut selected: Option<Vec<Range<usize>>> = None;
    let mut narrow = |column: usize, keep: &dyn Fn(usize) -> Option<bool>| -> Option<()> {
        let locations = offset_index.get(column)?.page_locations();
        let mut ranges = Vec::new();
        for (page, location) in locations.iter().enumerate() {
            let start = usize::try_from(location.first_row_index).ok()?;
            let end = match locations.get(page + 1) {
                Some(next) => usize::try_from(next.first_row_index).ok()?,
                None => rows,
            };
            if keep(page).unwrap_or(true) {
                push_range(&mut ranges, start..end);
            }
        }
        selected = Some(match selected.take() {
            Some(before) => intersect(&before, &ranges),
            None => ranges,
        });
        Some(())
    };
    if let Some(i) = columns.minute
        && let Some(ColumnIndexMetaData::INT64(index)) = column_index.get(i)
    {
        narrow(i, &|page| {
            Some(minutes_overlap(
                *index.min_value(page)?,
                *index.max_value(page)?,
                scan,
            ))
        });
    }
    if let Some(i) = columns.subject
        && !scan.subjects.is_empty()
        && let Some(ColumnIndexMetaData::BYTE_ARRAY(index)) = column_index.get(i)
    {
        narrow(i, &|page| {
            Some(subjects_overlap(
                index.min_value(page)?,
                index.max_value(page)?,
                scan,
            ))
        });
    }
    selected
}

/// Appends a range, joining it to the last one when they touch.
fn push_range(ranges: &mut Vec<Range<usize>>, range: Range<usize>) {
    match ranges.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => ranges.push(range),
    }
}

/// The rows in both sorted, disjoint range lists.
fn intersect(a: &[Range<usize>], b: &[Range<usize>]) -> Vec<Range<usize>> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let start = a[i].start.max(b[j].start);
        let end = a[i].end.min(b[j].end);
        if start < end {
            push_range(&mut out, start..end);
        }
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The rows of a batch the scan selects exactly.
fn keep_rows(batch: &RecordBatch, scan: &RollupScan) -> Result<RecordBatch, ArrowError> {
    let minute: Option<&TimestampMillisecondArray> = batch
        .column_by_name("minute")
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>());
    let subject: Option<&StringArray> = batch
        .column_by_name("subject")
        .and_then(|c| c.as_string_opt::<i32>());
    let mask: BooleanArray = (0..batch.num_rows())
        .map(|i| {
            let in_range = minute.is_none_or(|m| {
                !m.is_null(i) && {
                    let v = m.value(i);
                    scan.lo_ms.is_none_or(|lo| v >= lo) && scan.hi_ms.is_none_or(|hi| v < hi)
                }
            });
            let subject_ok = scan.subjects.is_empty()
                || subject.is_some_and(|s| !s.is_null(i) && scan.subjects.contains(s.value(i)));
            Some(in_range && subject_ok)
        })
        .collect();
    if mask.true_count() == batch.num_rows() {
        return Ok(batch.clone());
    }
    filter_record_batch(batch, &mask)
}

#[cfg(test)]
mod tests;
