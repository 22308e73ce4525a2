//! Metron's domain, pure and synchronous: no IO, no async, no clock.
//!
//! Data moves through it in one direction. The API parses a request body into
//! [`event::CloudEvent`]s ([`event::parse_events`]), validated with OpenMeter's rules.
//! A [`meter::Meter`] turns an event into a [`meter::Sample`] (its value and group-by
//! values) or into OpenMeter's `validationError` text. Samples fold into mergeable
//! [`aggregate::AggState`]s keyed by minute ([`window`]), subject and group-by values;
//! [`query`] merges such minute rollups, wherever they were read from (memory or
//! Parquet), into the windows, time zone and groups a meter query asks for.
//! Every time is UTC; an IANA zone only decides window edges.

pub mod aggregate;
pub mod billing;
pub mod credit;
pub mod decimal;
pub mod event;
pub mod failpoint;
pub mod filter;
pub mod invoicing;
pub mod jsonpath;
pub mod meter;
pub mod quantity;
pub mod query;
pub mod rawjson;
pub mod record;
pub mod window;

/// The namespace every event, meter and query carries until tenancy arrives.
pub const DEFAULT_NAMESPACE: &str = "default";
