//! Stripe: the typed client, webhook signatures and the invoice sync.
//!
//! Data moves one way per concern. [`StripeClient`] is a thin blocking client of exactly the
//! endpoints in `shared/reference/stripe-contract.md` (API `2024-09-30.acacia`, form-encoded,
//! retried by stripe-go's rule with the caller's `Idempotency-Key` on every write). [`sync`]
//! turns a Metron invoice into a Stripe draft with one invoice item per line and finalizes it,
//! each step safe to repeat after a crash at any point: keys derive from Metron's ids, and what
//! Stripe already holds is read back before anything is written again. [`webhook`] checks
//! `Stripe-Signature` on what Stripe sends back. Nothing here touches storage; the billing
//! actors own the state and call in from `spawn_blocking`.

pub mod client;
pub mod config;
pub mod form;
pub mod sync;
pub mod types;
pub mod webhook;

pub use client::{Error, Result, StripeClient};
pub use config::{API_BASE_DEFAULT, API_VERSION, StripeConfig};
pub use types::*;
