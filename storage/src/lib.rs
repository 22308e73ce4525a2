//! Metron's state at rest.
//!
//! The [`catalog`] (sqlx on a SQLite file by default, or PostgreSQL) holds meter definitions,
//! customers, entitlements, billing and the product catalog, and [`notifications`] the
//! notification channels, rules, events and delivery status; [`testing`] gives tests a catalog
//! on every backend. Checkpoints
//! write minute rollups ([`rollups`]) and raw events ([`events`]) as Parquet through
//! the [`objects`] root (a local directory by default), then a [`manifest`] that
//! names the files and records each partition's offset and dedup runs ([`dedup`]).
//! The [`query`] service runs DataFusion over those files plus the live rows the
//! actors hold. Every object name comes from [`paths`].

pub mod apps;
pub mod billing_profiles;
pub mod catalog;
pub mod customers;
pub mod dedup;
pub mod dedup_objects;
pub mod entitlements;
pub mod events;
pub mod features;
pub mod invoices;
pub mod leases;
pub mod manifest;
pub mod notifications;
pub mod objects;
pub mod paths;
pub mod product_catalog;
pub mod query;
pub mod rollups;
pub mod subscription_addons;
pub mod subscriptions;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use datafusion::arrow;
