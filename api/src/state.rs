//! What every handler shares.

use metron_actors::Pipeline;
use metron_actors::customer::Entitlements;

pub struct AppState {
    pub pipeline: Pipeline,
    /// Customer actors: live balances, access checks, entitlement reloads.
    pub entitlements: Entitlements,
}
