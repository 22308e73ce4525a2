//! A node's front when another node holds the partitions of the shared stream (Kafka,
//! Fluvio): a standby.
//!
//! One node at a time reads the stream and keeps the state (meters, balances, the dedup
//! index): the holder of the partitions' leases (`crate::leases`). Every other node on the same
//! stream, catalog and object store is a [`Front`]: it takes events itself (it appends them
//! to the stream, as the holder would: they are durable in the brokers when it answers), and
//! the API forwards every other request to the holder's address, recorded with its leases
//! ([`Front::holder`]). When the holder stops or dies, its leases expire and a standby takes
//! them ([`Front::wait_until_free`], then `Pipeline::start`): it loads the newest checkpoint
//! and its dedup runs from the object store and reads on from the checkpoint's offsets.

use crate::pipeline::{
    self, Error, PipelineConfig, Result, append_groups, open_catalog, open_stream,
    records_by_partition,
};
use chrono::{DateTime, Utc};
use metron_connectors::EventStream;
use metron_engine::event::EventParts;
use metron_storage::catalog::Catalog;
use metron_storage::objects::ObjectRoot;
use metron_storage::query::{QueryService, SqlAnswer, SqlRequest, SqlTable};

/// A taken SQL slot ([`Front::try_sql_slot`]), freed when dropped.
pub type SqlSlot = tokio::sync::OwnedSemaphorePermit;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The node holding a shared stream's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub node_id: String,
    /// Its HTTP API's URL, when it gave one.
    pub address: Option<String>,
    pub expires_at: DateTime<Utc>,
    /// How far it had read each partition at its last renewal (by partition; `None` before
    /// its first renewal).
    pub consumed: Vec<Option<u64>>,
}

/// How long a looked-up holder is trusted before the leases are read again.
pub const HOLDER_FRESH: Duration = Duration::from_millis(500);

/// A standby node's handle on the shared stream and catalog.
#[derive(Clone)]
pub struct Front {
    stream: Arc<dyn EventStream>,
    catalog: Catalog,
    lease_name: String,
    node_id: String,
    backlog_records_max: u64,
    cached: Arc<parking_lot::Mutex<Option<(Holder, Instant)>>>,
    /// Runs SQL here over the holder's files and live rows ([`Self::sql`]); `None` when the
    /// config gave no SQL runtime.
    query: Option<QueryService>,
    /// Whether [`Self::sql`] said that the holder's object root is not this node's (once).
    told_other_root: Arc<std::sync::atomic::AtomicBool>,
}

impl Front {
    /// Connects to the stream and the catalog of `config`, whose stream must be shared.
    pub async fn connect(config: &PipelineConfig) -> Result<Self> {
        let Some(lease_name) = config.stream.lease_name() else {
            return Err(Error::Unavailable(
                "a standby needs a shared stream (Kafka or Fluvio); the embedded log is one \
                 node's"
                    .into(),
            ));
        };
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| Error::Storage(format!("{}: {e}", config.data_dir.display())))?;
        let node_id = config.node_id()?;
        let stream = open_stream(config).await?;
        let catalog = open_catalog(config).await?;
        let query = match &config.sql_runtime {
            Some(runtime) => {
                let root = ObjectRoot::open(&config.storage, config.data_dir.join("objects"))
                    .map_err(|e| Error::Storage(e.to_string()))?;
                Some(
                    QueryService::new(runtime.clone(), root)
                        .with_sql(runtime.clone(), config.sql_limits),
                )
            }
            None => None,
        };
        Ok(Self {
            stream,
            catalog,
            lease_name,
            node_id,
            backlog_records_max: config.backlog_records_max,
            cached: Arc::default(),
            query,
            told_other_root: Arc::default(),
        })
    }

    /// One of this node's SQL slots, taken before the holder is asked for the tables so that a
    /// query this node would refuse costs the holder nothing: `None` when this node runs no
    /// SQL (the query is forwarded), [`crate::Error`] busy when every slot is taken.
    pub fn try_sql_slot(&self) -> Option<Result<SqlSlot>> {
        let query = self.query.as_ref()?;
        Some(query.try_sql_slot().map_err(Into::into))
    }

    /// Runs a SQL query here, over the tables the holder sent
    /// (`Pipeline::sql_tables_encoded`), read from the object root at `root`: the Parquet
    /// files from the object store, the live rows as sent. `None` when this node cannot read
    /// the holder's files (another object root, or no SQL runtime): the caller forwards the
    /// query instead.
    pub async fn sql(
        &self,
        slot: SqlSlot,
        root: &str,
        tables: Vec<SqlTable>,
        sql: String,
        row_limit: usize,
        timeout: Duration,
    ) -> Result<Option<SqlAnswer>> {
        let Some(query) = &self.query else {
            return Ok(None);
        };
        if query.root().url() != root {
            if self
                .told_other_root
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                return Ok(None);
            }
            tracing::warn!(
                holder = root,
                here = query.root().url(),
                "The stream's holder stores its files elsewhere than this node: SQL is forwarded."
            );
            return Ok(None);
        }
        let answer = query
            .sql_in_slot(
                slot,
                SqlRequest {
                    tables,
                    sql,
                    row_limit,
                    timeout,
                },
            )
            .await?;
        Ok(Some(answer))
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Appends events to their partitions of the stream; returns once all are durable.
    /// Refused ([`Error::Overloaded`], 429) when a partition's unread backlog exceeds
    /// `backlogRecordsMax`, as on the holder: the end is the one this node last saw (its own
    /// appends move it), what the holder has read is what it reported at its last lease
    /// renewal (every third of `leaseTtl`). While no node holds the leases, only the brokers'
    /// own limits apply.
    pub async fn ingest(&self, namespace: &str, events: &[EventParts<'_>]) -> Result<()> {
        let stream = self.stream.as_ref();
        let groups = records_by_partition(stream, namespace, events)?;
        let holder = match self.holder_cached().await {
            Ok(holder) => holder,
            Err(error) => {
                tracing::warn!(%error, "Reading the stream's leases failed; ingest goes on without the backlog check.");
                None
            }
        };
        if let Some(holder) = holder {
            for (p, group) in groups.iter().enumerate() {
                let Some(Some(consumed)) = holder.consumed.get(p) else {
                    continue;
                };
                if group.is_empty() {
                    continue;
                }
                let backlog = stream.end_offset(p as u32)?.saturating_sub(*consumed);
                if backlog > self.backlog_records_max {
                    return Err(Error::Overloaded { backlog });
                }
            }
        }
        append_groups(stream, groups, None).await
    }

    /// [`Self::holder`], looked up at most every [`HOLDER_FRESH`]; `None` also when this
    /// node is the holder.
    pub async fn holder_cached(&self) -> Result<Option<Holder>> {
        if let Some((holder, at)) = self.cached.lock().clone()
            && at.elapsed() < HOLDER_FRESH
        {
            return Ok(Some(holder));
        }
        let holder = self.holder().await?.filter(|h| h.node_id != self.node_id);
        *self.cached.lock() = holder.clone().map(|h| (h, Instant::now()));
        Ok(holder)
    }

    /// Forgets the cached holder (it did not answer): the next lookup reads the leases.
    pub fn forget_holder(&self) {
        *self.cached.lock() = None;
    }

    /// The node whose leases on the stream's partitions are live now; `None` while none is
    /// (the holder stopped or died and nobody has taken over yet). One node holds them all.
    pub async fn holder(&self) -> Result<Option<Holder>> {
        let now = Utc::now();
        let leases = self.catalog.stream_leases(&self.lease_name).await?;
        let Some(live) = leases
            .iter()
            .filter(|l| l.expires_at > now)
            .max_by_key(|l| l.expires_at)
        else {
            return Ok(None);
        };
        let partitions = leases.iter().map(|l| l.partition as usize + 1).max();
        let mut consumed = vec![None; partitions.unwrap_or(0)];
        for lease in leases.iter().filter(|l| l.node_id == live.node_id) {
            if let Some(slot) = consumed.get_mut(lease.partition as usize) {
                *slot = lease.consumed;
            }
        }
        Ok(Some(Holder {
            node_id: live.node_id.clone(),
            address: live.address.clone(),
            expires_at: live.expires_at,
            consumed,
        }))
    }

    /// Returns once no node holds the stream's leases (or this node does), polling every
    /// `every`; a catalog error is logged and polled through.
    pub async fn wait_until_free(&self, every: Duration) {
        loop {
            match self.holder().await {
                Ok(None) => return,
                Ok(Some(holder)) if holder.node_id == self.node_id => return,
                Ok(Some(_)) => {}
                Err(error) => {
                    tracing::warn!(%error, "Reading the stream's leases failed; trying again.");
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Closes the stream's connections.
    pub async fn close(&self) {
        self.stream.close();
        self.catalog.close().await;
    }
}

/// Whether a start failed because another node holds the stream's leases: the node then
/// stands by ([`Front`]) instead of stopping.
pub fn is_held_elsewhere(error: &pipeline::Error) -> bool {
    matches!(
        error,
        Error::Lease(metron_storage::leases::LeaseError::Held { .. })
    )
}
