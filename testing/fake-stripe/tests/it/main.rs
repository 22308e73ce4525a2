//! The fake Stripe server driven over HTTP with a plain client (ureq), as the connector will.

mod control;
mod faults;
mod idempotency;
mod lifecycle;
mod pagination;
mod shapes;
mod support;
mod validation;
mod webhooks;
