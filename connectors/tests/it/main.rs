//! Integration tests, in one binary: `metron_connectors::stripe` against the fake Stripe server
//! (`testing/fake-stripe`), and the `EventStream` suite on every backend.

mod stream_suite;
mod stripe_client;
mod stripe_sync;
mod stripe_webhook;
mod support;
