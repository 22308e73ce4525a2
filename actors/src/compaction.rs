//! Compaction: merges the small rollup and event files that checkpoints write, so that
//! a query opens a bounded number of files. Run by the checkpoint (`snapshot.rs`) after
//! the epoch's files are written and before its manifest is.
//!
//! A meter's rollups have two tiers: minute files, and hourly files holding the same
//! states merged per hour (60× fewer rows: a query of whole UTC hours, the usual
//! day and month windows among them, reads those). Each checkpoint writes both from the
//! same rows ([`write_rollups`]), and each tier is merged within itself, so the hourly
//! files always hold what the minute files hold. A meter whose state predates hourly
//! files gets them here, once, from each of its minute files ([`compact_meter_rollups`]).

use crate::meter;
use metron_engine::meter::Meter;
use metron_engine::query::RollupRow;
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

/// Writes one checkpoint's rows of a meter (`seq` 0 of `manifest.epoch`): a minute file,
/// and the same rows merged per hour when the meter's hourly files are complete (or it
/// has no files yet: then they start complete). Public for the benches' loader.
pub async fn write_rollups(
    query: &QueryService,
    manifest: &mut Manifest,
    meter: &Meter,
    rows: &[RollupRow],
) -> Result<(), String> {
    let hourly = manifest.hourly_meters.contains(&meter.id)
        || !manifest.rollup_files.iter().any(|f| f.meter_id == meter.id);
    if hourly && !manifest.hourly_meters.contains(&meter.id) {
        manifest.hourly_meters.push(meter.id.clone());
    }
    if rows.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = meter.group_by.keys().cloned().collect();
    let batch = rollups::to_batch(&keys, rows).map_err(|e| e.to_string())?;
    let epoch = manifest.epoch;
    let path = paths::rollup_file(&meter.namespace, &meter.id, epoch, 0);
    write_rollup_file(query, manifest, meter, path, batch.clone(), false).await?;
    if hourly {
        let hours =
            rollups::from_batch_in_slots(&keys, meter.aggregation, &batch, rollups::HOUR_MS)
                .map_err(|e| e.to_string())?;
        let batch = rollups::to_batch(&keys, &hours).map_err(|e| e.to_string())?;
        let path = paths::hourly_rollup_file(&meter.namespace, &meter.id, epoch, 0);
        write_rollup_file(query, manifest, meter, path, batch, true).await?;
    }
    Ok(())
}

/// Writes a rollup batch and lists the file in the manifest.
async fn write_rollup_file(
    query: &QueryService,
    manifest: &mut Manifest,
    meter: &Meter,
    path: metron_storage::objects::ObjectPath,
    batch: metron_storage::arrow::array::RecordBatch,
    hourly: bool,
) -> Result<(), String> {
    let rows = query
        .write_parquet(path.clone(), batch)
        .await
        .map_err(|e| e.to_string())?;
    manifest.rollup_files.push(RollupFile {
        namespace: meter.namespace.clone(),
        meter_id: meter.id.clone(),
        path: path.to_string(),
        rows,
        hourly,
    });
    Ok(())
}

/// Writes hourly files for a meter that has none (its state predates them): one per
/// minute file, read one at a time. The meter's hourly tier is then complete.
async fn backfill_hourly(
    query: &QueryService,
    manifest: &mut Manifest,
    meter: &Meter,
    seq: &mut u32,
) -> Result<(), String> {
    let keys: Vec<String> = meter.group_by.keys().cloned().collect();
    let minute: Vec<RollupFile> = manifest
        .rollup_files
        .iter()
        .filter(|f| f.meter_id == meter.id && !f.hourly)
        .cloned()
        .collect();
    for file in &minute {
        let rows = read_merged(
            query,
            meter,
            std::iter::once(file.path.as_str()),
            rollups::HOUR_MS,
        )
        .await?;
        if rows.is_empty() {
            continue;
        }
        let batch = rollups::to_batch(&keys, &rows).map_err(|e| e.to_string())?;
        let path = paths::hourly_rollup_file(&meter.namespace, &meter.id, manifest.epoch, *seq);
        *seq += 1;
        write_rollup_file(query, manifest, meter, path, batch, true).await?;
    }
    tracing::info!(meter = %meter.slug, files = minute.len(), "hourly rollups written from the minute files");
    manifest.hourly_meters.push(meter.id.clone());
    Ok(())
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
    let mut seq = 1u32;
    let mut ids: Vec<&String> = meters.keys().collect();
    ids.sort();
    for id in ids {
        if !manifest.hourly_meters.contains(id)
            && let Some(meter) = meters.get(id)
        {
            backfill_hourly(query, manifest, meter, &mut seq).await?;
        }
    }
    // Each tier of each meter is merged within itself.
    let mut groups: BTreeMap<(String, bool), Vec<RollupFile>> = BTreeMap::new();
    for f in &manifest.rollup_files {
        groups
            .entry((f.meter_id.clone(), f.hourly))
            .or_default()
            .push(f.clone());
    }
    for ((meter_id, hourly), files) in groups {
        let Some(meter) = meters.get(meter_id.as_str()) else {
            continue;
        };
        let Some(files) = pick_merge(files, |f| f.rows) else {
            continue;
        };
        let keys: Vec<String> = meter.group_by.keys().cloned().collect();
        let rows = read_merged(
            query,
            meter,
            files.iter().map(|f| f.path.as_str()),
            rollups::MINUTE_MS,
        )
        .await?;
        let batch = rollups::to_batch(&keys, &rows).map_err(|e| e.to_string())?;
        let path = if hourly {
            paths::hourly_rollup_file(&meter.namespace, &meter.id, manifest.epoch, seq)
        } else {
            paths::rollup_file(&meter.namespace, &meter.id, manifest.epoch, seq)
        };
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
                hourly,
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

/// The rows of a meter's rollup files, each minute floored to a multiple of `slot_ms` and
/// rows of one (slot, subject, group) merged into one.
async fn read_merged<'a>(
    query: &QueryService,
    meter: &Meter,
    paths: impl Iterator<Item = &'a str>,
    slot_ms: i64,
) -> Result<Vec<RollupRow>, String> {
    let keys: Vec<String> = meter.group_by.keys().cloned().collect();
    let batches = read_all(query, rollups::schema(&keys), paths).await?;
    let mut merged = meter::Rollups::default();
    for batch in &batches {
        for row in rollups::from_batch_in_slots(&keys, meter.aggregation, batch, slot_ms)
            .map_err(|e| e.to_string())?
        {
            merged.merge(row);
        }
    }
    Ok(merged.drain_rows())
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
    use metron_engine::aggregate::AggState;
    use metron_engine::quantity::Quantity;

    fn test_meter() -> Meter {
        Meter {
            id: "m1".into(),
            namespace: "default".into(),
            slug: "tokens".into(),
            name: "tokens".into(),
            description: None,
            metadata: Default::default(),
            aggregation: metron_engine::aggregate::Aggregation::Sum,
            event_type: "t".into(),
            event_from: None,
            value_property: Some("$.v".into()),
            group_by: [("model".to_owned(), "$.model".to_owned())].into(),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            deleted_at: None,
        }
    }

    /// Rows over 3 hours of minutes, 3 subjects and 2 models; `salt` varies the values.
    fn rows(salt: i64) -> Vec<RollupRow> {
        let mut rows = Vec::new();
        for minute in (0..180).step_by(7) {
            for s in 0..3 {
                for model in ["a", "b"] {
                    rows.push(RollupRow {
                        minute_ms: 1_700_000_040_000 + (minute + salt % 5) * 60_000,
                        subject: format!("s{s}"),
                        group: vec![model.to_owned()],
                        state: AggState::Sum(Quantity::from(minute + s + salt)),
                    });
                }
            }
        }
        rows
    }

    /// A tier's rows, merged per (hour, subject, group).
    async fn tier(
        query: &QueryService,
        manifest: &Manifest,
        meter: &Meter,
        hourly: bool,
    ) -> BTreeMap<(i64, String, Vec<String>), AggState> {
        let keys: Vec<String> = meter.group_by.keys().cloned().collect();
        let files: Vec<&RollupFile> = manifest
            .rollup_files
            .iter()
            .filter(|f| f.hourly == hourly)
            .collect();
        let batches = read_all(
            query,
            rollups::schema(&keys),
            files.iter().map(|f| f.path.as_str()),
        )
        .await
        .expect("read");
        let mut merged = meter::Rollups::default();
        for batch in &batches {
            let rows =
                rollups::from_batch_in_slots(&keys, meter.aggregation, batch, rollups::HOUR_MS)
                    .expect("rows");
            for row in rows {
                merged.merge(row);
            }
        }
        merged
            .drain_rows()
            .into_iter()
            .map(|r| ((r.minute_ms, r.subject, r.group), r.state))
            .collect()
    }

    // A meter's hourly files hold what its minute files hold, merged per hour: written
    // from its minute files for a manifest from before hourly files (and only then: a
    // checkpoint of such a meter writes minute files alone), then by every checkpoint, and
    // merged within their tier by compaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hourly_files_hold_what_minute_files_hold() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (backend, root) in
            metron_storage::objects::testing::roots(dir.path(), "hourly-files").expect("roots")
        {
            eprintln!("backend: {backend}");
            let query = QueryService::new(tokio::runtime::Handle::current(), root);
            let meter = Arc::new(test_meter());
            let meters: HashMap<String, Arc<Meter>> = [(meter.id.clone(), meter.clone())].into();
            let keys: Vec<String> = meter.group_by.keys().cloned().collect();
            // A manifest from before hourly files: two minute files.
            let mut manifest = Manifest {
                epoch: 1,
                ..Manifest::default()
            };
            for seq in 0..2 {
                let path = paths::rollup_file("default", &meter.id, 1, seq);
                let batch = rollups::to_batch(&keys, &rows(i64::from(seq))).expect("batch");
                write_rollup_file(&query, &mut manifest, &meter, path, batch, false)
                    .await
                    .expect("write");
            }
            assert_eq!(manifest.meter_files(&meter.id).hourly, None);
            // A checkpoint of the meter writes its minute file only.
            manifest.epoch = 2;
            write_rollups(&query, &mut manifest, &meter, &rows(2))
                .await
                .expect("checkpoint");
            assert_eq!(manifest.rollup_files.len(), 3);
            assert!(manifest.rollup_files.iter().all(|f| !f.hourly));
            // Compaction writes one hourly file per minute file.
            compact_meter_rollups(&query, &mut manifest, &meters)
                .await
                .expect("compaction");
            let files = manifest.meter_files(&meter.id);
            assert_eq!(files.minute.len(), 3);
            assert_eq!(files.hourly.as_ref().map(Vec::len), Some(3));
            let minute = tier(&query, &manifest, &meter, false).await;
            assert_eq!(minute.len(), 4 * 3 * 2, "hours × subjects × models");
            assert_eq!(tier(&query, &manifest, &meter, true).await, minute);
            // Checkpoints now write both tiers; compaction merges each within itself.
            for epoch in 3..3 + COMPACT_FILES_MIN as u64 {
                manifest.epoch = epoch;
                write_rollups(&query, &mut manifest, &meter, &rows(epoch as i64))
                    .await
                    .expect("checkpoint");
                compact_meter_rollups(&query, &mut manifest, &meters)
                    .await
                    .expect("compaction");
            }
            let files = manifest.meter_files(&meter.id);
            let hourly = files.hourly.clone().expect("hourly files");
            assert!(
                files.minute.len() < 3 + COMPACT_FILES_MIN,
                "{:?}",
                files.minute
            );
            assert!(hourly.len() < 3 + COMPACT_FILES_MIN, "{hourly:?}");
            assert!(hourly.iter().all(|f| f.path.contains("/hourly/")));
            let hourly_rows: u64 = hourly.iter().map(|f| f.rows).sum();
            let minute_rows: u64 = files.minute.iter().map(|f| f.rows).sum();
            assert!(
                hourly_rows * 5 < minute_rows,
                "{hourly_rows} vs {minute_rows}"
            );
            assert_eq!(
                tier(&query, &manifest, &meter, true).await,
                tier(&query, &manifest, &meter, false).await
            );
            // A meter with no files yet starts with complete hourly files.
            let mut fresh = Manifest::default();
            write_rollups(&query, &mut fresh, &meter, &[])
                .await
                .expect("empty");
            assert_eq!(fresh.meter_files(&meter.id).hourly, Some(Vec::new()));
        }
    }

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
