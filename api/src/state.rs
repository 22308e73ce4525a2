//! What every handler shares.

use metron_actors::Pipeline;
use metron_actors::billing::Billing;
use metron_actors::customer::Entitlements;

pub struct AppState {
    pub pipeline: Pipeline,
    /// Customer actors: live balances, access checks, entitlement reloads.
    pub entitlements: Entitlements,
    /// The namespace's billing: invoices, the billing actor's schedule.
    pub billing: Billing,
}

impl AppState {
    /// Reads answer only from state caught up with the log: until then a 503 with
    /// `Retry-After`, never a partial answer.
    pub fn ready(&self) -> Result<(), crate::error::ApiError> {
        if self.pipeline.health().is_ready() {
            Ok(())
        } else {
            Err(crate::error::ApiError::not_ready())
        }
    }
}
