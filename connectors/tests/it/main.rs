//! Integration tests of `metron_connectors::stripe` against the fake Stripe server
//! (`testing/fake-stripe`), in one binary.

mod stripe_client;
mod stripe_sync;
mod stripe_webhook;
mod support;
