//! The node's leases on the partitions of a shared event stream (Kafka, Fluvio): taken at the
//! start, before the newest checkpoint is read; renewed in the background; given back at a
//! clean shutdown. See `metron_storage::leases` for the rules.
//!
//! A node that cannot renew its leases before they expire, or finds one taken over, stops
//! (a fatal error): another node may read those partitions from then on, and two readers would
//! count the same events twice. The embedded log needs no lease: its directory lock keeps a
//! second process out.

use crate::health::Health;
use chrono::Utc;
use metron_storage::catalog::Catalog;
use metron_storage::leases::{Lease, LeaseError};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The longest node id.
pub const NODE_ID_LEN_MAX: usize = 64;

/// Is `id` a node id: 1 to 64 ASCII letters, digits, '.', '_' or '-'?
pub fn is_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= NODE_ID_LEN_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The node id kept in `<data_dir>/node-id`, made (a new ULID) on the first start. A node that
/// restarts on its data directory is the same node, and takes its leases back at once.
pub fn node_id_of(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if is_node_id(id) {
                Ok(id.to_owned())
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} does not hold a node id", path.display()),
                ))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = ulid::Ulid::new().to_string().to_ascii_lowercase();
            let partial = data_dir.join("node-id.partial");
            std::fs::write(&partial, format!("{id}\n"))?;
            std::fs::File::open(&partial)?.sync_all()?;
            std::fs::rename(&partial, &path)?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

/// The leases this node holds, shared by the renewing task and the shutdown.
#[derive(Clone)]
pub(crate) struct StreamLeases {
    catalog: Catalog,
    ttl: Duration,
    held: Arc<tokio::sync::Mutex<Vec<Lease>>>,
}

impl StreamLeases {
    /// Takes the leases of partitions `0..partitions` of `stream` for `node_id`, all or none.
    pub(crate) async fn acquire(
        catalog: &Catalog,
        stream: &str,
        partitions: u32,
        node_id: &str,
        address: Option<&str>,
        ttl: Duration,
    ) -> Result<Self, LeaseError> {
        let all: Vec<u32> = (0..partitions).collect();
        let held = catalog
            .acquire_leases(stream, &all, node_id, address, Utc::now(), ttl)
            .await?;
        // From now on this node's catalog writes need these leases: once another node takes
        // them over, a write from here (frozen past their expiry, then woken) is refused.
        catalog.fence_writes(&held);
        tracing::info!(
            stream,
            node_id,
            partitions,
            epoch = held.first().map_or(0, |l| l.epoch),
            "Took the leases of the stream's partitions."
        );
        Ok(Self {
            catalog: catalog.clone(),
            ttl,
            held: Arc::new(tokio::sync::Mutex::new(held)),
        })
    }

    /// Renews the leases every third of their time to live until they are released, reporting
    /// with each how far the partition has been read (`consumed`, by partition; `u64::MAX`:
    /// not known yet). A lease lost is fatal, and so is a renewal not done while a sixth of the
    /// lease is left, whether it failed or the catalog did not answer: this node then stops
    /// before another can take the partitions.
    pub(crate) fn keep(
        &self,
        health: Arc<Health>,
        consumed: Arc<Vec<std::sync::atomic::AtomicU64>>,
    ) {
        let this = self.clone();
        let every = self.ttl / 3;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let mut held = this.held.lock().await;
                if held.is_empty() {
                    return;
                }
                for lease in held.iter_mut() {
                    lease.consumed = consumed
                        .get(lease.partition as usize)
                        .map(|c| c.load(std::sync::atomic::Ordering::Acquire))
                        .filter(|c| *c != u64::MAX);
                }
                // The renewal must be done while a sixth of the lease is left: a call that
                // hangs (a catalog cut off, a pool waiting for a connection) would otherwise let
                // the lease run out while this node reads on, beside the node that takes it.
                let left = |held: &[Lease]| {
                    held.iter()
                        .map(|l| l.expires_at)
                        .min()
                        .map_or(chrono::TimeDelta::zero(), |until| until - Utc::now())
                        .to_std()
                        .unwrap_or_default()
                };
                let budget = left(&held).saturating_sub(every / 2);
                let renewed = tokio::time::timeout(
                    budget,
                    this.catalog.renew_leases(&mut held, Utc::now(), this.ttl),
                )
                .await;
                let Ok(renewed) = renewed else {
                    health.fatal(format!(
                        "the stream's leases could not be renewed before they expire: the \
                         catalog did not answer within {budget:?}"
                    ));
                    return;
                };
                match renewed {
                    Ok(()) => {}
                    Err(lost @ LeaseError::Lost { .. }) => {
                        health.fatal(format!("{lost}: this node stops reading"));
                        return;
                    }
                    Err(error) => {
                        if left(&held) <= every {
                            health.fatal(format!(
                                "the stream's leases could not be renewed before they expire: {error}"
                            ));
                            return;
                        }
                        tracing::warn!(%error, "Renewing the stream's leases failed; trying again.");
                    }
                }
            }
        });
    }

    /// Gives the leases back, so that another node can take them at once; renewals stop.
    pub(crate) async fn release(&self) {
        let held = std::mem::take(&mut *self.held.lock().await);
        if let Err(error) = self.catalog.release_leases(&held).await {
            tracing::warn!(%error, "Releasing the stream's leases failed; they expire on their own.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_checked() {
        for ok in ["a", "node-1", "n.2_b", &"x".repeat(64)] {
            assert!(is_node_id(ok), "{ok}");
        }
        for bad in ["", "a b", "é", "a/b", &"x".repeat(65)] {
            assert!(!is_node_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_node_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = node_id_of(dir.path()).expect("made");
        assert!(is_node_id(&first));
        assert_eq!(node_id_of(dir.path()).expect("read"), first);
        std::fs::write(dir.path().join("node-id"), "not one\n").expect("write");
        assert!(node_id_of(dir.path()).is_err());
    }
}
