//! Metron's actors and their wiring, inside actix's `System`, on one `Arbiter` per core.
//!
//! A [`partition::PartitionActor`] per stream partition reads its partition in
//! batches, drops duplicates through its dedup index, and sends one
//! [`meter::Fold`] per touched meter per batch. A [`meter::MeterActor`] per meter
//! keeps minute aggregates in memory until a checkpoint moves them to Parquet. The
//! [`snapshot::SnapshotActor`] runs checkpoints: it seals every partition (which
//! pauses it) and then every meter, resumes the partitions, writes Parquet files and
//! a manifest, and tells everyone what was committed. [`pipeline::Pipeline`] is the
//! API's handle on all of it: ingest, meter queries, event listing, SQL, meters.
//! [`attribution::Attribution`] maps subjects to the customers their usage belongs to.
//! The [`notification::Notifier`] evaluates notification rules against balance changes and
//! delivers signed webhooks with retries.

/// Makes a type a key of a `HashMap`/`HashSet` looked up by `&str`: `Borrow<str>`, and
/// the hash and equality of the text `$key` reads from it (as `Borrow` requires). Lets a
/// set borrow its keys from the records it holds instead of storing a copy of each.
macro_rules! keyed_by_str {
    ($t:ty, $key:expr) => {
        impl std::borrow::Borrow<str> for $t {
            fn borrow(&self) -> &str {
                $key(self)
            }
        }
        impl std::hash::Hash for $t {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                $key(self).hash(state);
            }
        }
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                $key(self) == $key(other)
            }
        }
        impl Eq for $t {}
    };
}
pub(crate) use keyed_by_str;

pub mod attribution;
pub mod billing;
pub mod compaction;
pub mod customer;
pub mod front;
pub mod health;
pub mod leases;
pub mod memory;
pub mod meter;
pub mod metrics;
pub mod notification;
pub mod partition;
pub mod pipeline;
pub mod snapshot;

pub use notification::{
    BalanceObservation, Notifier, NotifierConfig, Payload, PayloadSource, ResetObservation,
};
pub use pipeline::{LEASE_TTL_DEFAULT, Pipeline, PipelineConfig, StreamBackend};
