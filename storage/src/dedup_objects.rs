//! The dedup index's runs in the object store, for a stream that several nodes share.
//!
//! The dedup index lives in a node's data directory ([`crate::dedup`]). When the partitions of
//! a Kafka or Fluvio topic pass to another node (a node killed, its leases expired), the new
//! holder must drop the same duplicates the old one would have: a client that retries an
//! event whose first copy was counted before the takeover must not be counted twice. So every
//! checkpoint of a shared stream copies the runs its state names into the object store
//! ([`ship`]), and the manifest records where ([`DedupRun::object`]); a node that starts from
//! that manifest copies the runs it does not have into its own directory ([`fetch`]) before it
//! opens the index.
//!
//! Runs are immutable, so a run is copied once: a later checkpoint that names it again reuses
//! the object. The object's name carries the run's checksum ([`paths::dedup_run`]), so runs of
//! the same file name written by two nodes never overwrite each other, and a local file is
//! reused only when its checksum is the one the manifest names.

use crate::dedup::{self, run_checksum};
use crate::manifest::DedupRun;
use crate::objects::{self, ObjectRoot, object_path};
use crate::paths;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Objects(#[from] objects::Error),
    #[error(transparent)]
    Dedup(#[from] dedup::Error),
    #[error("dedup run {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What [`ship`] or [`fetch`] moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub runs: usize,
    pub bytes: u64,
}

/// Copies into the object store every run of `runs` (files in `dir`) that `base` (the last
/// committed manifest's runs) has not copied yet, and records each run's object in `runs`.
pub async fn ship(
    root: &ObjectRoot,
    dir: &Path,
    runs: &mut [DedupRun],
    base: &[DedupRun],
) -> Result<Moved> {
    let shipped: HashSet<&str> = base.iter().filter_map(|r| r.object.as_deref()).collect();
    let mut moved = Moved::default();
    for run in runs.iter_mut() {
        let local = dir.join(&run.file_name);
        let checksum = match run.checksum {
            Some(checksum) => checksum,
            None => {
                let checksum = run_checksum(&local)?;
                run.checksum = Some(checksum);
                checksum
            }
        };
        let object = paths::dedup_run(&run.file_name, checksum);
        if !shipped.contains(object.as_ref()) {
            root.put_file(&object, &local).await?;
            moved.runs += 1;
            moved.bytes += std::fs::metadata(&local).map_or(0, |m| m.len());
        }
        run.object = Some(object.to_string());
    }
    Ok(moved)
}

/// Makes `dir` hold every run of `runs` that has an object: a file there with the run's
/// checksum is kept, any other is replaced by the object's copy. Returns the runs the index
/// can open: those with a file now, in order. A run with neither a local file nor an object
/// (a manifest written by a node that did not ship its runs) is left out, and logged: its keys
/// no longer count as seen.
pub async fn fetch(
    root: &ObjectRoot,
    dir: &Path,
    runs: &[DedupRun],
) -> Result<(Vec<DedupRun>, Moved)> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut moved = Moved::default();
    let mut present = Vec::with_capacity(runs.len());
    for run in runs {
        let local = dir.join(&run.file_name);
        // A missing or damaged local file is fetched again.
        let have = run_checksum(&local).ok();
        let fresh = have.is_some() && (run.checksum.is_none() || have == run.checksum);
        match (&run.object, fresh) {
            (_, true) => present.push(run.clone()),
            (Some(object), false) => {
                let partial = dir.join(format!("{}.fetch", run.file_name));
                moved.bytes += root.get_file(&object_path(object), &partial).await?;
                std::fs::rename(&partial, &local).map_err(|source| Error::Io {
                    path: local.clone(),
                    source,
                })?;
                moved.runs += 1;
                present.push(run.clone());
            }
            (None, false) => tracing::warn!(
                file = %run.file_name,
                keys = run.keys,
                "A dedup run the checkpoint names is neither here nor in the object store: \
                 its keys are no longer known as seen."
            ),
        }
    }
    if moved.runs > 0 {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| Error::Io {
                path: dir.to_owned(),
                source,
            })?;
    }
    Ok((present, moved))
}

/// The run objects `old` names and `new` does not: garbage once no node can start from `old`.
pub fn superseded(old: &[DedupRun], new: &[DedupRun]) -> Vec<String> {
    let kept: HashSet<&str> = new.iter().filter_map(|r| r.object.as_deref()).collect();
    let mut gone: Vec<String> = old
        .iter()
        .filter_map(|r| r.object.as_deref())
        .filter(|o| !kept.contains(o))
        .map(str::to_owned)
        .collect();
    gone.sort();
    gone.dedup();
    gone
}

/// Deletes the run objects under [`paths::DEDUP`] that `named` (the loaded manifest's runs)
/// does not name: copies made by a checkpoint that never committed, or superseded. Only
/// safe while no other node writes checkpoints of the stream (the caller holds its leases).
pub async fn collect_garbage(root: &ObjectRoot, named: &[DedupRun]) -> Result<usize> {
    let keep: HashMap<&str, ()> = named
        .iter()
        .filter_map(|r| r.object.as_deref())
        .map(|o| (o, ()))
        .collect();
    let mut deleted = 0;
    for path in root.list(paths::DEDUP).await? {
        if !keep.contains_key(path.as_ref()) {
            root.delete(&path).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::{DedupConfig, DedupIndex, DedupState, dedup_key};
    use crate::objects::testing::roots;

    fn runs_of(state: &DedupState) -> Vec<DedupRun> {
        state.runs.iter().map(DedupRun::from).collect()
    }

    fn state_of(runs: &[DedupRun]) -> DedupState {
        crate::manifest::Manifest {
            dedup_runs: Some(runs.to_vec()),
            ..Default::default()
        }
        .dedup_state()
        .unwrap_or_default()
    }

    /// A node's runs, shipped at two checkpoints, reach another node's empty directory and a
    /// directory holding a different run of the same name: both indexes then know every key.
    /// A run is copied once; what the second checkpoint dropped is superseded garbage.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_move_to_another_node_through_the_object_store() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for (backend, root) in roots(&dir.path().join("objects"), "dedup-objects")? {
            let a_dir = dir.path().join(backend).join("a");
            let config = DedupConfig {
                memory_budget_bytes: 1 << 20,
                memory_keys_max: 64,
                ..DedupConfig::default()
            };
            let now = 1_800_000_000_000;
            let mut a = DedupIndex::open(&a_dir, config.clone(), None)?;
            let key = |i: u32| dedup_key("default", "src", &format!("e{i}"));
            let first: Vec<_> = (0..100).map(key).collect();
            assert!(a.insert_batch(&first, now)?.iter().all(|new| *new));
            let mut one = runs_of(&a.checkpoint(now)?);
            let moved = ship(&root, &a_dir, &mut one, &[]).await?;
            assert_eq!(moved.runs, one.len(), "{backend}: every run copied");
            assert!(one.iter().all(|r| r.object.is_some()), "{backend}");
            let second: Vec<_> = (100..300).map(key).collect();
            a.insert_batch(&second, now + 1)?;
            let mut two = runs_of(&a.checkpoint(now + 1)?);
            let moved = ship(&root, &a_dir, &mut two, &one).await?;
            let reused = two.iter().filter(|r| one.contains(r)).count();
            assert_eq!(
                moved.runs,
                two.len() - reused,
                "{backend}: only new runs copied"
            );
            let gone = superseded(&one, &two);
            let listed = root.list(paths::DEDUP).await?.len();
            assert_eq!(listed, two.len() + gone.len(), "{backend}");

            // Node b has never seen the stream; node c has a run of the same name but
            // other keys (its own history, from before a takeover).
            let b_dir = dir.path().join(backend).join("b");
            let c_dir = dir.path().join(backend).join("c");
            std::fs::create_dir_all(&c_dir)?;
            let mut c_own = DedupIndex::open(&c_dir, config.clone(), None)?;
            c_own.insert_batch(&(1000..1100).map(key).collect::<Vec<_>>(), now)?;
            c_own.checkpoint(now)?;
            c_own.insert_batch(&(1100..1300).map(key).collect::<Vec<_>>(), now + 1)?;
            let c_state = c_own.checkpoint(now + 1)?;
            drop(c_own);
            assert!(
                c_state
                    .runs
                    .iter()
                    .any(|r| two.iter().any(|t| t.file_name == r.file_name)),
                "{backend}: c has a run file of the same name"
            );
            for node in [&b_dir, &c_dir] {
                let (present, moved) = fetch(&root, node, &two).await?;
                assert_eq!(present, two, "{backend}");
                assert!(moved.runs > 0, "{backend}");
                let mut index = DedupIndex::open(node, config.clone(), Some(&state_of(&present)))?;
                let all: Vec<_> = (0..300).map(key).collect();
                assert!(
                    index.insert_batch(&all, now + 2)?.iter().all(|new| !*new),
                    "{backend}: every key already seen at {}",
                    node.display()
                );
                // A second fetch finds the files in place and copies nothing.
                drop(index);
                let (_, again) = fetch(&root, node, &two).await?;
                assert_eq!(again, Moved::default(), "{backend}");
            }
            let deleted = collect_garbage(&root, &two).await?;
            assert_eq!(deleted, gone.len(), "{backend}");
            assert_eq!(root.list(paths::DEDUP).await?.len(), two.len(), "{backend}");
        }
        Ok(())
    }

    /// A run named without an object and missing here is left out, not an error.
    #[tokio::test]
    async fn a_run_neither_here_nor_shipped_is_left_out() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let root = ObjectRoot::local(dir.path().join("objects"))?;
        let run = DedupRun {
            file_name: "run-0000000000000001.dat".into(),
            keys: 3,
            ..DedupRun::default()
        };
        let (present, moved) = fetch(&root, &dir.path().join("d"), &[run]).await?;
        assert!(present.is_empty());
        assert_eq!(moved, Moved::default());
        Ok(())
    }
}
