//! End-to-end tests of the `metron` binary: every test starts the real server (see
//! [`server::TestServer`]) on a loopback port with its own data directory and talks OpenMeter's
//! v1 HTTP API to it. The scenarios of OpenMeter's Go e2e suite (`e2e/e2e_test.go`) are ported
//! in `ingest` and `query`, its credit and entitlement scenarios in `credit` and
//! `entitlements`; `crash` and `proptest_queries` are seeded and print their seeds; `postgres` runs
//! the server with its catalog on PostgreSQL.

mod apps;
mod billing;
mod billing_edit;
mod billing_faults;
mod billing_prices;
mod billing_profiles;
mod billing_progressive;
mod cluster;
mod crash;
mod credit;
mod customers;
mod entitlements;
mod exact;
mod fluvio;
mod hardening;
mod helpers;
mod info;
mod ingest;
mod kafka;
mod leases;
mod listing;
mod meters;
mod notifications;
mod plans;
mod postgres;
mod proptest_queries;
mod query;
mod restart;
mod s3;
mod server;
mod sql;
mod subscription_edits;
mod subscriptions;
