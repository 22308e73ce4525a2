//! The HTTP routes, path for path as OpenMeter's v1 API.

pub mod events;
pub mod health;
pub mod meters;
pub mod notifications;
pub mod sql;
