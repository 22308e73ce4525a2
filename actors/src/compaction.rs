//! Compaction: merges the small rollup and event files that checkpoints write, so that
//! a query opens a bounded number of files. Run by the checkpoint (`snapshot.rs`) after
//! the epoch's files are written and before its manifest is.

use crate::meter;
use metron_engine::meter::Meter;
use metron_storage::manifest::{EventFile, Manifest, RollupFile};
use metron_storage::query::{QueryService, TimeRange};
use metron_storage::{events, objects, paths, rollups};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Small files of one group are merged once there are this many.
pub const COMPACT_FILES_MIN: usize = 8;
/// A merge writes at most this many rows; files of at least half of it count as large
/// and are never merged again. Event files are merged one input at a time (memory: one
/// input's rows and the output's encoded bytes); rollup files are read together, to sum
/// their rows.
pub const COMPACT_ROWS_MAX: u64 = 1_000_000;

/// The files to merge in one group, if it has enough small ones: the smallest
/// first, as many as fit within [`COMPACT_ROWS_MAX`] rows.
fn pick_merge<F>(files: Vec<F>, rows: impl Fn(&F) -> u64) -> Option<Vec<F>> {
    let mut small: Vec<F> = files
        .into_iter()
        .filter(|f| rows(f) < COMPACT_ROWS_MAX / 2)
        .collect();
    if small.len() < COMPACT_FILES_MIN {
        return None;
    }
    small.sort_by_key(|f| rows(f));
    let mut total = 0u64;
    let picked: Vec<F> = small
        .into_iter()
        .take_while(|f| {
            total += rows(f);
            total <= COMPACT_ROWS_MAX
        })
        .collect();
    (picked.len() >= 2).then_some(picked)
}

/// Merges each meter's small rollup files; returns the superseded paths.
pub(crate) async fn compact_rollups(
    query: &QueryService,
    manifest: &mut Manifest,
    live: &HashMap<&str, &meter::Sealed>,
) -> Result<Vec<String>, String> {
    let meters: HashMap<String, Arc<Meter>> = live
        .iter()
        .map(|(id, sealed)| ((*id).to_owned(), sealed.meter.clone()))
        .collect();
    compact_meter_rollups(query, manifest, &meters).await
}

/// Merges the small rollup files of each of `meters` (by id; files of other meters are
/// left alone) into files sorted by (subject, minute, group); returns the superseded
/// paths. Public for the benches' loader, which builds state as checkpoints do.
pub async fn compact_meter_rollups(
    query: &QueryService,
    manifest: &mut Manifest,
    meters: &HashMap<String, Arc<Meter>>,
) -> Result<Vec<String>, String> {
    let mut superseded = Vec::new();
    let mut groups: BTreeMap<String, Vec<RollupFile>> = BTreeMap::new();
    for f in &manifest.rollup_files {
        groups
            .entry(f.meter_id.clone())
            .or_default()
            .push(f.clone());
    }
    let mut seq = 1u32;
    for (meter_id, files) in groups {
        let Some(meter) = meters.get(meter_id.as_str()) else {
            continue;
        };
        let Some(files) = pick_merge(files, |f| f.rows) else {
            continue;
        };
        let keys: Vec<String> = meter.group_by.keys().cloned().collect();
        let batches = read_all(
            query,
            rollups::schema(&keys),
            files.iter().map(|f| f.path.as_str()),
        )
        .await?;
        let mut merged = meter::Rollups::default();
        for batch in &batches {
            for row in
                rollups::from_batch(&keys, meter.aggregation, batch).map_err(|e| e.to_string())?
            {
                merged.merge(row);
            }
        }
        let rows = merged.drain_rows();
        let batch = rollups::to_batch(&keys, &rows).map_err(|e| e.to_string())?;
        let path = paths::rollup_file(&meter.namespace, &meter.id, manifest.epoch, seq);
        seq += 1;
        let written = query
            .write_parquet(path.clone(), batch)
            .await
            .map_err(|e| e.to_string())?;
        replace_files(
            &mut manifest.rollup_files,
            &files,
            |f| &f.path,
            RollupFile {
                namespace: meter.namespace.clone(),
                meter_id: meter.id.clone(),
                path: path.to_string(),
                rows: written,
            },
        );
        query.forget_files(files.iter().map(|f| f.path.as_str()));
        superseded.extend(files.into_iter().map(|f| f.path));
    }
    Ok(superseded)
}

/// Merges each (namespace, partition, day)'s small event files; returns the superseded
/// paths. Public for the benches' loader.
pub async fn compact_events(
    query: &QueryService,
    manifest: &mut Manifest,
) -> Result<Vec<String>, String> {
    let mut superseded = Vec::new();
    let mut groups: BTreeMap<(String, u32, String), Vec<EventFile>> = BTreeMap::new();
    for f in &manifest.event_files {
        groups
            .entry((f.namespace.clone(), f.partition, f.day.clone()))
            .or_default()
            .push(f.clone());
    }
    let mut seq = 1u32;
    for ((namespace, partition, day), files) in groups {
        let Some(files) = pick_merge(files, |f| f.rows) else {
            continue;
        };
        let Ok(date) = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d") else {
            continue;
        };
        // The merged file spans its parts' times (unknown if any part's is).
        let times_us = files.iter().try_fold(None, |acc: Option<(i64, i64)>, f| {
            f.times_us
                .map(|(lo, hi)| Some(acc.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi)))))
        });
        let times_us = times_us.flatten();
        let path = paths::event_file(&namespace, date, manifest.epoch, partition, seq);
        seq += 1;
        let inputs = files
            .iter()
            .map(|f| objects::object_path(&f.path))
            .collect();
        let written = query
            .merge_parquet(events::schema(), inputs, path.clone())
            .await
            .map_err(|e| e.to_string())?;
        replace_files(
            &mut manifest.event_files,
            &files,
            |f| &f.path,
            EventFile {
                namespace,
                partition,
                day,
                path: path.to_string(),
                rows: written,
                times_us,
            },
        );
        query.forget_files(files.iter().map(|f| f.path.as_str()));
        superseded.extend(files.into_iter().map(|f| f.path));
    }
    Ok(superseded)
}

/// Every row of these files (of one schema).
async fn read_all<'a>(
    query: &QueryService,
    schema: metron_storage::arrow::datatypes::SchemaRef,
    paths: impl Iterator<Item = &'a str>,
) -> Result<Vec<metron_storage::arrow::array::RecordBatch>, String> {
    query
        .scan(
            schema,
            urls_of(query, paths),
            TimeRange::everything(),
            None,
            Vec::new(),
        )
        .await
        .map_err(|e| e.to_string())
}

/// The URLs the query service reads these object paths at.
fn urls_of<'a>(query: &QueryService, paths: impl Iterator<Item = &'a str>) -> Vec<String> {
    paths
        .map(|p| query.root().url_of(&objects::object_path(p)))
        .collect()
}

/// Swaps merged files for their merge in a manifest list.
fn replace_files<F>(list: &mut Vec<F>, merged: &[F], path: impl Fn(&F) -> &String, merge: F) {
    let gone: HashSet<&str> = merged.iter().map(|f| path(f).as_str()).collect();
    list.retain(|f| !gone.contains(path(f).as_str()));
    list.push(merge);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Merges start at COMPACT_FILES_MIN small files, take the smallest first and
    // never read more than COMPACT_ROWS_MAX rows; large files are left alone.
    #[test]
    fn merges_are_bounded() {
        assert_eq!(pick_merge(vec![1u64; COMPACT_FILES_MIN - 1], |r| *r), None);
        assert_eq!(
            pick_merge(vec![5u64; COMPACT_FILES_MIN], |r| *r).map(|v| v.len()),
            Some(COMPACT_FILES_MIN)
        );
        let mut files = vec![COMPACT_ROWS_MAX / 2 - 1; 8];
        files.push(COMPACT_ROWS_MAX * 10);
        files.push(3);
        let picked = pick_merge(files, |r| *r).unwrap_or_default();
        assert_eq!(picked[0], 3, "smallest first");
        assert!(picked.iter().sum::<u64>() <= COMPACT_ROWS_MAX);
        assert!(!picked.contains(&(COMPACT_ROWS_MAX * 10)));
    }
}
