//! What every handler shares.

use metron_actors::Pipeline;

pub struct AppState {
    pub pipeline: Pipeline,
}
