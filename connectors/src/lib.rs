//! Metron's event streams.
//!
//! This crate owns the path between ingestion and aggregation: events are
//! appended to a partitioned, offset-addressed stream and read back by
//! consumers that track their own position. Every backend sits behind the one
//! [`EventStream`] trait, which is deliberately broker-shaped (partitions,
//! per-partition offsets starting at 0, a high watermark, consumer commits), so
//! callers do not know which backend they have. The default backend is
//! [`EmbeddedLog`], a durable partitioned log in a local directory with group
//! commit (one fsync shared by every append waiting at the same time);
//! [`KafkaStream`] keeps the stream in a Kafka topic, and `FluvioStream` (cargo feature
//! `fluvio`) in a Fluvio topic.
//!
//! [`webhook`] sends one signed webhook delivery (Standard Webhooks / Svix signing).
//!
//! The crate knows nothing about what the payloads mean: it stores and returns
//! bytes.

pub mod stream;
pub mod stripe;
pub mod webhook;

pub use stream::{
    AppendAck, EmbeddedLog, EmbeddedLogConfig, Error, EventStream, KafkaConfig, KafkaStream,
    Offset, PartitionId, Record, Result, Stats,
};
#[cfg(feature = "fluvio")]
pub use stream::{FluvioConfig, FluvioStream};
