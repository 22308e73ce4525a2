//! Partition leases in the catalog: which node reads which partition of a shared event stream
//! (a Kafka or Fluvio topic).
//!
//! Two nodes reading the same partition would each count its events. A node therefore holds a
//! lease on every partition it reads, in the catalog all nodes share (PostgreSQL):
//!
//! - [`Catalog::acquire_leases`] takes a set of partitions all or nothing. A partition free,
//!   expired, or already this node's is taken, and its `epoch` grows by one; one that another
//!   node holds unexpired refuses the whole set ([`LeaseError::Held`]).
//! - [`Catalog::renew_leases`] moves the expiry on, only while the row still shows this node
//!   and the epoch it acquired: a lease that expired and was taken over is lost for good
//!   ([`LeaseError::Lost`]), and its holder must stop reading.
//! - [`Catalog::release_leases`] gives them back at a clean stop, so that another node need not
//!   wait for the expiry.
//!
//! Times are the callers' clocks in milliseconds: the nodes' clocks must agree to well within
//! the lease's time to live. The leases only separate nodes that share the catalog: nodes on
//! SQLite files of their own do not see each other's.

use crate::catalog::{Catalog, Error, from_ms, ms};
use chrono::{DateTime, Utc};
use sqlx::Row;

/// A lease a node holds on one partition of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The stream's identity (`kafka://BROKERS/TOPIC`, `fluvio://SC/TOPIC`).
    pub stream: String,
    pub partition: u32,
    pub node_id: String,
    /// Grows by one at every acquisition; renewals and releases must show it.
    pub epoch: i64,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The URL of the holder's HTTP API (`http://10.0.0.7:8888`), where the other nodes
    /// forward what only the holder can answer; `None` when the holder gave none.
    pub address: Option<String>,
    /// The offset below which the holder has read the partition, as of its last renewal
    /// ([`Catalog::renew_leases`] writes it); `None` until the first renewal.
    pub consumed: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another node holds the partition's lease and it has not expired.
    #[error(
        "partition {partition} of {stream} is read by node {node_id:?} (its lease runs until {expires_at})"
    )]
    Held {
        stream: String,
        partition: u32,
        node_id: String,
        expires_at: DateTime<Utc>,
    },
    /// The lease expired and another node took it, or it was released.
    #[error(
        "the lease of partition {partition} of {stream} (epoch {epoch}) is no longer this node's"
    )]
    Lost {
        stream: String,
        partition: u32,
        epoch: i64,
    },
    #[error(transparent)]
    Catalog(#[from] Error),
}

impl From<sqlx::Error> for LeaseError {
    fn from(e: sqlx::Error) -> Self {
        Self::Catalog(Error::Query(e))
    }
}

impl Catalog {
    /// Takes the leases of `partitions` of `stream` for `node_id` until `now + ttl`, all or
    /// none. See the module documentation.
    pub async fn acquire_leases(
        &self,
        stream: &str,
        partitions: &[u32],
        node_id: &str,
        address: Option<&str>,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<Vec<Lease>, LeaseError> {
        let expires_at = now + ttl;
        let mut tx = self.begin_write().await?;
        let mut leases = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            let row = sqlx::query(
                "SELECT node_id, epoch, expires_at FROM stream_leases WHERE stream = $1 AND partition_id = $2",
            )
            .bind(stream)
            .bind(i64::from(partition))
            .fetch_optional(&mut *tx)
            .await?;
            let epoch = match row {
                None => {
                    sqlx::query(
                        "INSERT INTO stream_leases (stream, partition_id, node_id, epoch, acquired_at, expires_at, address) VALUES ($1, $2, $3, 1, $4, $5, $6)",
                    )
                    .bind(stream)
                    .bind(i64::from(partition))
                    .bind(node_id)
                    .bind(ms(now))
                    .bind(ms(expires_at))
                    .bind(address)
                    .execute(&mut *tx)
                    .await?;
                    1
                }
                Some(row) => {
                    let holder: String = row.try_get("node_id")?;
                    let epoch: i64 = row.try_get("epoch")?;
                    let until = from_ms(row.try_get("expires_at")?);
                    if holder != node_id && until > now {
                        // Dropping the transaction rolls back what this call took so far.
                        return Err(LeaseError::Held {
                            stream: stream.to_owned(),
                            partition,
                            node_id: holder,
                            expires_at: until,
                        });
                    }
                    sqlx::query(
                        "UPDATE stream_leases SET node_id = $3, epoch = $4, acquired_at = $5, expires_at = $6, address = $7, consumed = NULL WHERE stream = $1 AND partition_id = $2",
                    )
                    .bind(stream)
                    .bind(i64::from(partition))
                    .bind(node_id)
                    .bind(epoch + 1)
                    .bind(ms(now))
                    .bind(ms(expires_at))
                    .bind(address)
                    .execute(&mut *tx)
                    .await?;
                    epoch + 1
                }
            };
            leases.push(Lease {
                stream: stream.to_owned(),
                partition,
                node_id: node_id.to_owned(),
                epoch,
                acquired_at: from_ms(ms(now)),
                expires_at: from_ms(ms(expires_at)),
                address: address.map(str::to_owned),
                consumed: None,
            });
        }
        tx.commit().await?;
        Ok(leases)
    }

    /// Moves the expiry of every lease in `leases` to `now + ttl`, records each one's
    /// [`Lease::consumed`], and updates them. Fails
    /// with [`LeaseError::Lost`] at the first lease whose row no longer shows its node and
    /// epoch (the others are renewed all the same).
    pub async fn renew_leases(
        &self,
        leases: &mut [Lease],
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<(), LeaseError> {
        let expires_at = now + ttl;
        let mut lost = None;
        for lease in leases.iter_mut() {
            let renewed = sqlx::query(
                "UPDATE stream_leases SET expires_at = $5, consumed = $6 WHERE stream = $1 AND partition_id = $2 AND node_id = $3 AND epoch = $4",
            )
            .bind(&lease.stream)
            .bind(i64::from(lease.partition))
            .bind(&lease.node_id)
            .bind(lease.epoch)
            .bind(ms(expires_at))
            .bind(lease.consumed.map(|c| i64::try_from(c).unwrap_or(i64::MAX)))
            .execute(&self.pool)
            .await?
            .rows_affected();
            if renewed == 1 {
                lease.expires_at = from_ms(ms(expires_at));
            } else if lost.is_none() {
                lost = Some(LeaseError::Lost {
                    stream: lease.stream.clone(),
                    partition: lease.partition,
                    epoch: lease.epoch,
                });
            }
        }
        lost.map_or(Ok(()), Err)
    }

    /// Gives the leases back (those still this node's at their epoch): they expire at once.
    /// The rows stay, so that epochs keep growing.
    pub async fn release_leases(&self, leases: &[Lease]) -> Result<(), LeaseError> {
        for lease in leases {
            sqlx::query(
                "UPDATE stream_leases SET expires_at = 0 WHERE stream = $1 AND partition_id = $2 AND node_id = $3 AND epoch = $4",
            )
            .bind(&lease.stream)
            .bind(i64::from(lease.partition))
            .bind(&lease.node_id)
            .bind(lease.epoch)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Every lease of a stream, by partition, expired ones included.
    pub async fn stream_leases(&self, stream: &str) -> Result<Vec<Lease>, LeaseError> {
        let rows = sqlx::query(
            "SELECT partition_id, node_id, epoch, acquired_at, expires_at, address, consumed FROM stream_leases WHERE stream = $1 ORDER BY partition_id",
        )
        .bind(stream)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let partition: i64 = row.try_get("partition_id")?;
                Ok(Lease {
                    stream: stream.to_owned(),
                    partition: u32::try_from(partition).unwrap_or(u32::MAX),
                    node_id: row.try_get("node_id")?,
                    epoch: row.try_get("epoch")?,
                    acquired_at: from_ms(row.try_get("acquired_at")?),
                    expires_at: from_ms(row.try_get("expires_at")?),
                    address: row.try_get("address")?,
                    consumed: row
                        .try_get::<Option<i64>, _>("consumed")?
                        .map(|c| u64::try_from(c).unwrap_or(0)),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(LeaseError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TTL: Duration = Duration::from_secs(10);
    const S: &str = "kafka://b:9092/events";

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    crate::catalog_test! {
        /// A free set is taken; another node is refused while the leases live, all or
        /// nothing; it takes them once they expire, and the first holder's renewal then fails.
        #[tokio::test]
        async fn leases_are_exclusive_until_they_expire(db) {
            let catalog = db.open().await;
            let mut a = catalog
                .acquire_leases(S, &[0, 1, 2], "a", Some("http://a:8888"), t(0), TTL)
                .await
                .expect("a");
            assert_eq!(a.iter().map(|l| l.epoch).collect::<Vec<_>>(), [1, 1, 1]);
            let listed = catalog.stream_leases(S).await.expect("list");
            assert_eq!(listed[2].address.as_deref(), Some("http://a:8888"), "the holder's address");
            // b asks for a free partition and a held one: it gets neither.
            match catalog.acquire_leases(S, &[3, 1], "b", None, t(5), TTL).await {
                Err(LeaseError::Held { partition: 1, node_id, expires_at, .. }) => {
                    assert_eq!((node_id.as_str(), expires_at), ("a", t(10)));
                }
                other => panic!("expected Held, got {other:?}"),
            }
            assert_eq!(catalog.stream_leases(S).await.expect("list").len(), 3, "3 stays free");
            // Another stream is another set of leases.
            catalog.acquire_leases("fluvio://sc:9003/events", &[1], "b", None, t(5), TTL).await.expect("other stream");
            // a renews at 8 (until 18), reporting how far it has read: b is still refused
            // at 12.
            a[1].consumed = Some(42);
            catalog.renew_leases(&mut a, t(8), TTL).await.expect("renew");
            assert_eq!(a[0].expires_at, t(18));
            let listed = catalog.stream_leases(S).await.expect("list");
            assert_eq!((listed[0].consumed, listed[1].consumed), (None, Some(42)));
            assert!(matches!(
                catalog.acquire_leases(S, &[0], "b", None, t(12), TTL).await,
                Err(LeaseError::Held { .. })
            ));
            // a stops renewing (killed): at 19 b takes partition 0, at a new epoch.
            let b = catalog.acquire_leases(S, &[0], "b", None, t(19), TTL).await.expect("take over");
            assert_eq!((b[0].epoch, b[0].expires_at), (2, t(29)));
            let listed = catalog.stream_leases(S).await.expect("list");
            assert_eq!(listed[0].address, None, "a new holder's address replaces the old one");
            assert_eq!(listed[1].consumed, Some(42));
            match catalog.renew_leases(&mut a, t(20), TTL).await {
                Err(LeaseError::Lost { partition: 0, epoch: 1, .. }) => {}
                other => panic!("expected Lost, got {other:?}"),
            }
            // a's other leases were renewed all the same; releasing gives back only a's.
            catalog.release_leases(&a).await.expect("release");
            let live: Vec<(u32, String)> = catalog
                .stream_leases(S)
                .await
                .expect("list")
                .into_iter()
                .filter(|l| l.expires_at > t(20))
                .map(|l| (l.partition, l.node_id))
                .collect();
            assert_eq!(live, [(0, "b".to_owned())]);
        }
    }

    crate::catalog_test! {
        /// Once a node's catalog writes are fenced by its leases, they go through while the
        /// catalog shows those leases, and are refused once another node took them over
        /// (here after they expired): a frozen holder that wakes cannot undo the new one's
        /// writes. The other node's writes go through.
        #[tokio::test]
        async fn writes_of_a_node_whose_leases_were_taken_are_refused(db) {
            let a = db.open().await;
            let b = db.open().await;
            let held = a.acquire_leases(S, &[0, 1], "a", None, t(0), TTL).await.expect("a");
            a.fence_writes(&held);
            assert_eq!(a.next_sequence("ns", "x").await.expect("a writes"), 1);
            // Renewals and b's refused attempts change nothing.
            let mut renewed = held.clone();
            a.renew_leases(&mut renewed, t(5), TTL).await.expect("renew");
            assert!(b.acquire_leases(S, &[0, 1], "b", None, t(6), TTL).await.is_err());
            assert_eq!(a.next_sequence("ns", "x").await.expect("a writes"), 2);
            // b takes the leases over once they expired.
            let taken = b.acquire_leases(S, &[0, 1], "b", None, t(20), TTL).await.expect("b");
            b.fence_writes(&taken);
            let refused = a.next_sequence("ns", "x").await;
            assert!(refused.as_ref().is_err_and(Error::is_fenced), "{refused:?}");
            assert_eq!(b.next_sequence("ns", "x").await.expect("b writes"), 3);
            a.close().await;
            b.close().await;
        }
    }

    crate::catalog_test! {
        /// A node that restarts takes its own leases back at once, at a new epoch, which fences
        /// anything still running with the old one; released leases are free at once.
        #[tokio::test]
        async fn a_restarted_node_takes_its_leases_back_and_fences_the_old_ones(db) {
            let catalog = db.open().await;
            let mut old = catalog.acquire_leases(S, &[0, 1], "a", None, t(0), TTL).await.expect("a");
            let mut new = catalog.acquire_leases(S, &[0, 1], "a", None, t(1), TTL).await.expect("again");
            assert_eq!(new.iter().map(|l| l.epoch).collect::<Vec<_>>(), [2, 2]);
            assert!(matches!(
                catalog.renew_leases(&mut old, t(2), TTL).await,
                Err(LeaseError::Lost { epoch: 1, .. })
            ));
            catalog.renew_leases(&mut new, t(2), TTL).await.expect("renew");
            catalog.release_leases(&old).await.expect("a stale release does nothing");
            let live = |leases: Vec<Lease>| leases.iter().filter(|l| l.expires_at > t(2)).count();
            assert_eq!(live(catalog.stream_leases(S).await.expect("list")), 2);
            catalog.release_leases(&new).await.expect("release");
            assert_eq!(live(catalog.stream_leases(S).await.expect("list")), 0);
            let b = catalog.acquire_leases(S, &[0, 1], "b", None, t(3), TTL).await.expect("free at once");
            assert_eq!(b[0].epoch, 3, "epochs keep growing across releases");
        }
    }
}
