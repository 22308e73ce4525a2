//! Checkpoint manifests: which Parquet files make up the state, each partition's
//! stream offset and dedup runs, and which meters the rollups cover. A manifest is
//! written whole and atomically, once: each epoch has its own name and the put is
//! create-only (a conditional put on S3), so no manifest is ever overwritten or seen
//! half-written; the newest one that reads back valid wins. A new holder of a shared stream
//! first [`claim`]s the lineage, so that no manifest of an earlier holder can be newer than
//! what it loaded.

use crate::objects::{self, ObjectRoot};
use crate::paths;
use serde::{Deserialize, Serialize};

pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Objects(#[from] objects::Error),
    #[error("manifest {path} is not valid: {reason}")]
    Invalid { path: String, reason: String },
    /// Another writer committed a different manifest for the same epoch first.
    #[error("manifest {path} was written by another writer for the same epoch")]
    Conflict { path: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub version: u32,
    pub epoch: u64,
    pub created_at_ms: i64,
    pub partitions: Vec<PartitionState>,
    /// Meters whose rollups these files hold completely (up to the offsets).
    pub meters: Vec<String>,
    /// Every meter's rollup files: minute files, and for the meters of
    /// [`Manifest::hourly_meters`] hourly files besides ([`RollupFile::hourly`]).
    pub rollup_files: Vec<RollupFile>,
    /// Meters whose hourly rollup files hold exactly what their minute files hold,
    /// merged per hour: a query of whole UTC hours may read those instead. Absent in
    /// manifests written before hourly files; compaction then writes them from the
    /// minute files (see `metron_actors::compaction`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hourly_meters: Vec<String>,
    pub event_files: Vec<EventFile>,
    /// The runs of the one dedup index every partition shares. Absent in manifests
    /// written when each partition had an index of its own
    /// ([`PartitionState::dedup_runs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_runs: Option<Vec<DedupRun>>,
}

impl Manifest {
    /// A meter's rollup files, by tier.
    pub fn meter_files(&self, meter_id: &str) -> MeterFiles {
        let (hourly, minute): (Vec<RollupFile>, Vec<RollupFile>) = self
            .rollup_files
            .iter()
            .filter(|f| f.meter_id == meter_id)
            .cloned()
            .partition(|f| f.hourly);
        let complete = self.hourly_meters.iter().any(|m| m == meter_id);
        MeterFiles {
            minute,
            hourly: complete.then_some(hourly),
        }
    }

    /// The shared dedup index's state, if this manifest records one.
    pub fn dedup_state(&self) -> Option<crate::dedup::DedupState> {
        self.dedup_runs.as_deref().map(dedup_state)
    }
}

fn dedup_state(runs: &[DedupRun]) -> crate::dedup::DedupState {
    crate::dedup::DedupState {
        runs: runs
            .iter()
            .map(|r| crate::dedup::RunMeta {
                file_name: r.file_name.clone(),
                keys: r.keys,
                first_insert_ms: r.first_insert_ms,
                last_insert_ms: r.last_insert_ms,
                checksum: r.checksum,
            })
            .collect(),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionState {
    pub partition: u32,
    /// Every record below this offset is reflected in the files.
    pub offset: u64,
    /// The partition's own dedup index, in manifests written before the index was
    /// shared (empty since).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dedup_runs: Vec<DedupRun>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DedupRun {
    pub file_name: String,
    pub keys: u64,
    pub first_insert_ms: i64,
    pub last_insert_ms: i64,
    /// The run's body checksum ([`crate::dedup::RunMeta::checksum`]); absent in manifests
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<u64>,
    /// Where a copy of the run lives in the object store (`dedup/…`), so that the node that
    /// takes over a shared stream's partitions gets the dedup history with them (see
    /// [`crate::dedup_objects`]); absent when the index stays with one node's data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollupFile {
    pub namespace: String,
    pub meter_id: String,
    pub path: String,
    pub rows: u64,
    /// Rows per (hour, subject, group), the `minute` column holding the hour's start:
    /// the hourly tier of the meter's rollups. False for minute files.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hourly: bool,
}

/// One meter's rollup files in a manifest, by tier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterFiles {
    pub minute: Vec<RollupFile>,
    /// The hourly files, when they hold everything the minute files hold.
    pub hourly: Option<Vec<RollupFile>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventFile {
    pub namespace: String,
    pub partition: u32,
    pub day: String,
    pub path: String,
    pub rows: u64,
    /// The earliest and latest event `time` in the file (µs), so reads of a time range
    /// skip files without opening them (absent in manifests written before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times_us: Option<(i64, i64)>,
}

impl PartitionState {
    /// The partition's own dedup index's state, in manifests written before the
    /// index was shared.
    pub fn dedup_state(&self) -> crate::dedup::DedupState {
        dedup_state(&self.dedup_runs)
    }
}

/// A dedup run as a manifest records it.
impl From<&crate::dedup::RunMeta> for DedupRun {
    fn from(r: &crate::dedup::RunMeta) -> Self {
        Self {
            file_name: r.file_name.clone(),
            keys: r.keys,
            first_insert_ms: r.first_insert_ms,
            last_insert_ms: r.last_insert_ms,
            checksum: r.checksum,
            object: None,
        }
    }
}

impl EventFile {
    /// Can the file hold events with time in `[from, to)`?
    pub fn may_hold(&self, from: Option<i64>, to: Option<i64>) -> bool {
        self.times_us.is_none_or(|(lo, hi)| {
            from.is_none_or(|from| hi >= from) && to.is_none_or(|to| lo < to)
        })
    }
}

impl Manifest {
    /// Checks the invariants a manifest must hold, before writing and after reading.
    pub fn validate(&self, partitions: u32) -> Result<(), String> {
        if self.version != MANIFEST_VERSION {
            return Err(format!(
                "version {} is not {MANIFEST_VERSION}",
                self.version
            ));
        }
        if self.partitions.len() != partitions as usize {
            return Err(format!(
                "{} partitions recorded, the stream has {partitions}",
                self.partitions.len()
            ));
        }
        for (i, p) in self.partitions.iter().enumerate() {
            if p.partition as usize != i {
                return Err(format!(
                    "partition {} recorded at position {i}",
                    p.partition
                ));
            }
        }
        Ok(())
    }
}

/// Writes a manifest under its epoch's name, never over another; returns once it is
/// durable. A manifest already there that equals this one but for its creation time is
/// this writer's own (a retried put whose answer was lost): success. Any other is
/// [`Error::Conflict`]: two writers on one epoch.
pub async fn write(root: &ObjectRoot, manifest: &Manifest, partitions: u32) -> Result<()> {
    let path = paths::manifest(manifest.epoch);
    manifest
        .validate(partitions)
        .map_err(|reason| Error::Invalid {
            path: path.to_string(),
            reason,
        })?;
    let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| Error::Invalid {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    match root.put_new(&path, bytes.into()).await {
        Ok(()) => Ok(()),
        Err(objects::Error::Exists { .. }) => {
            let there = root.get(&path).await?;
            let same = serde_json::from_slice::<Manifest>(&there).is_ok_and(|m| {
                Manifest {
                    created_at_ms: manifest.created_at_ms,
                    ..m
                } == *manifest
            });
            if same {
                Ok(())
            } else {
                Err(Error::Conflict {
                    path: path.to_string(),
                })
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The newest manifest that reads back valid, if any.
pub async fn load_latest(root: &ObjectRoot, partitions: u32) -> Result<Option<Manifest>> {
    let mut epochs: Vec<(u64, _)> = root
        .list(paths::CHECKPOINTS)
        .await?
        .into_iter()
        .filter_map(|p| paths::manifest_epoch(&p).map(|e| (e, p)))
        .collect();
    epochs.sort_by_key(|(e, _)| std::cmp::Reverse(*e));
    for (epoch, path) in epochs {
        let bytes = root.get(&path).await?;
        match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(m) if m.epoch == epoch => {
                m.validate(partitions).map_err(|reason| Error::Invalid {
                    path: path.to_string(),
                    reason,
                })?;
                return Ok(Some(m));
            }
            Ok(_) | Err(_) => {
                tracing::warn!(path = %path, "Skipped an unreadable checkpoint manifest.")
            }
        }
    }
    Ok(None)
}

/// Takes over the checkpoint lineage for a new holder of a shared stream: loads the newest
/// manifest (`fresh` when there is none) and writes a copy of it, create-only, at the epoch
/// after the highest one named (`now_ms` its creation time). Returns the copy. When another
/// writer (a holder that lost its lease without knowing it yet) commits a manifest first, this
/// loads that one and tries again, up to `attempts` times.
///
/// Once the copy is written, no manifest written by an earlier holder can follow it: an
/// earlier holder has at most one checkpoint in flight, numbered at most one above the highest
/// epoch this saw, and that name is now taken (its put fails with [`Error::Conflict`]). So the
/// caller may delete the files the copy does not name: no later manifest will name them.
/// Without the copy, a late manifest of the earlier holder could become the newest, naming
/// files the new holder had deleted as garbage.
pub async fn claim(
    root: &ObjectRoot,
    partitions: u32,
    fresh: &Manifest,
    now_ms: i64,
    attempts: u32,
) -> Result<Manifest> {
    let mut last = None;
    for _ in 0..attempts.max(1) {
        let loaded = load_latest(root, partitions)
            .await?
            .unwrap_or_else(|| fresh.clone());
        let highest = highest_epoch(root).await?.unwrap_or(0);
        let copy = Manifest {
            epoch: highest.max(loaded.epoch) + 1,
            created_at_ms: now_ms,
            ..loaded
        };
        match write(root, &copy, partitions).await {
            Ok(()) => return Ok(copy),
            Err(conflict @ Error::Conflict { .. }) => last = Some(conflict),
            Err(other) => return Err(other),
        }
    }
    Err(last.unwrap_or(Error::Conflict {
        path: paths::CHECKPOINTS.to_owned(),
    }))
}

/// The highest epoch any manifest is named by, readable or not. Manifests are written
/// create-only, so the next checkpoint must be numbered above this one, not only above
/// the newest manifest [`load_latest`] could read.
pub async fn highest_epoch(root: &ObjectRoot) -> Result<Option<u64>> {
    Ok(root
        .list(paths::CHECKPOINTS)
        .await?
        .iter()
        .filter_map(paths::manifest_epoch)
        .max())
}

/// Deletes manifests older than the newest `keep`.
pub async fn prune(root: &ObjectRoot, newest: u64, keep: u64) -> Result<()> {
    for path in root.list(paths::CHECKPOINTS).await? {
        if let Some(epoch) = paths::manifest_epoch(&path)
            && epoch + keep <= newest
        {
            root.delete(&path).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::testing::roots;

    fn manifest(epoch: u64, offset: u64) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            epoch,
            created_at_ms: 1_700_000_000_000 + epoch as i64,
            partitions: (0..2)
                .map(|partition| PartitionState {
                    partition,
                    offset,
                    dedup_runs: Vec::new(),
                })
                .collect(),
            ..Manifest::default()
        }
    }

    // On every backend: the newest manifest loads, pruning keeps the newest ones, and a
    // retried write of the same checkpoint (another creation time) is accepted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn manifests_load_newest_and_prune() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for (backend, root) in roots(dir.path(), "manifests-newest")? {
            assert_eq!(load_latest(&root, 2).await?, None, "{backend}: empty");
            for epoch in 1..=5 {
                write(&root, &manifest(epoch, epoch * 10), 2).await?;
            }
            let retried = Manifest {
                created_at_ms: 1,
                ..manifest(5, 50)
            };
            write(&root, &retried, 2).await?;
            assert_eq!(
                load_latest(&root, 2).await?,
                Some(manifest(5, 50)),
                "{backend}"
            );
            prune(&root, 5, 3).await?;
            let mut left: Vec<u64> = root
                .list(paths::CHECKPOINTS)
                .await?
                .iter()
                .filter_map(paths::manifest_epoch)
                .collect();
            left.sort_unstable();
            assert_eq!(left, vec![3, 4, 5], "{backend}");
        }
        Ok(())
    }

    // Two writers on one epoch: the second gets `Conflict`, and the first one's manifest
    // is what loads, never a mix.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_writer_on_an_epoch_is_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for (backend, root) in roots(dir.path(), "manifests-conflict")? {
            write(&root, &manifest(7, 100), 2).await?;
            let other = write(&root, &manifest(7, 200), 2).await;
            assert!(
                matches!(other, Err(Error::Conflict { .. })),
                "{backend}: {other:?}"
            );
            assert_eq!(
                load_latest(&root, 2).await?,
                Some(manifest(7, 100)),
                "{backend}"
            );
        }
        Ok(())
    }

    // A new holder's claim copies the newest manifest to the next epoch, so that the previous
    // holder's checkpoint in flight (numbered one above what it last committed) can no longer
    // commit, and the claim is what loads. A manifest that lands before the claim is taken over
    // instead. With no manifest, the claim is the fresh one at epoch 1.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_shuts_out_the_previous_holders_late_manifest() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for (backend, root) in roots(dir.path(), "manifests-claim")? {
            let fresh = manifest(0, 0);
            let first = claim(&root, 2, &fresh, 1, 3).await?;
            assert_eq!(
                (first.epoch, first.partitions[0].offset),
                (1, 0),
                "{backend}"
            );

            // The old holder commits 2, then has 3 in flight when the new holder claims.
            write(&root, &manifest(2, 20), 2).await?;
            let claimed = claim(&root, 2, &fresh, 9, 3).await?;
            assert_eq!(
                claimed,
                Manifest {
                    epoch: 3,
                    created_at_ms: 9,
                    ..manifest(2, 20)
                },
                "{backend}: a copy of 2"
            );
            let late = write(&root, &manifest(3, 30), 2).await;
            assert!(
                matches!(late, Err(Error::Conflict { .. })),
                "{backend}: the late manifest is refused: {late:?}"
            );
            assert_eq!(load_latest(&root, 2).await?, Some(claimed), "{backend}");

            // A manifest that lands first (4, above the claim) is what the next claim copies.
            write(&root, &manifest(4, 40), 2).await?;
            let next = claim(&root, 2, &fresh, 10, 3).await?;
            assert_eq!(
                (next.epoch, next.partitions[0].offset),
                (5, 40),
                "{backend}"
            );
        }
        Ok(())
    }

    #[test]
    fn event_files_are_skipped_only_outside_their_times() {
        let mut file = EventFile {
            namespace: "default".into(),
            partition: 0,
            day: "2026-01-01".into(),
            path: "p".into(),
            rows: 1,
            times_us: Some((100, 200)),
        };
        assert!(file.may_hold(None, None));
        assert!(file.may_hold(Some(200), None), "from at the last event");
        assert!(!file.may_hold(Some(201), None));
        assert!(file.may_hold(None, Some(101)));
        assert!(!file.may_hold(None, Some(100)), "to is exclusive");
        assert!(file.may_hold(Some(150), Some(160)));
        file.times_us = None;
        assert!(
            file.may_hold(Some(i64::MAX), None),
            "unknown times: read the file"
        );
        let old: EventFile = serde_json::from_str(
            r#"{"namespace":"default","partition":0,"day":"2026-01-01","path":"p","rows":1}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old.times_us, None, "manifests written before still load");
    }
}
