//! The HTTP routes, path for path as OpenMeter's v1 API.

pub mod apps;
pub mod billing_profiles;
pub mod custom_invoicing;
pub mod customers;
pub mod entitlements;
pub mod events;
pub mod features;
pub mod health;
pub mod info;
pub mod invoices;
pub mod meters;
pub mod notifications;
pub mod plans;
pub mod sql;
pub mod stripe_webhook;
pub mod subjects;
pub mod subscription_addons;
pub mod subscriptions;
