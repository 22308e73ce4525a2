//! The `BillingActor` of a namespace: looks at the billing schedule every tick and runs what
//! is due, one pass at a time.

use super::Billing;
use actix::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Drives one namespace's [`Billing`] from its schedule.
pub struct BillingActor {
    billing: Billing,
    running: Arc<AtomicBool>,
}

impl BillingActor {
    pub fn new(billing: Billing) -> Self {
        Self {
            billing,
            running: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Actor for BillingActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let billing = self.billing.clone();
        let running = self.running.clone();
        running.store(true, Ordering::SeqCst);
        ctx.spawn(
            async move {
                // Nothing is billed from half-replayed usage: the schedule starts (and the
                // ticks with it, `running` until then) once the pipeline caught up.
                if let Err(reason) = billing.wait_ready().await {
                    tracing::warn!(%reason, "Billing does not start: the pipeline ended.");
                    return;
                }
                if let Err(error) = billing.load().await {
                    tracing::error!(%error, "Could not load the billing schedule.");
                }
                running.store(false, Ordering::SeqCst);
            }
            .into_actor(self),
        );
        let tick = self.billing.inner.config.tick;
        ctx.run_interval(tick, |actor, ctx| {
            if actor.running.swap(true, Ordering::SeqCst) {
                return;
            }
            let billing = actor.billing.clone();
            let running = actor.running.clone();
            ctx.spawn(
                async move {
                    if let Err(error) = billing.tick().await {
                        tracing::warn!(%error, "A billing pass failed; the next tick retries.");
                    }
                    running.store(false, Ordering::SeqCst);
                }
                .into_actor(actor),
            );
        });
    }
}
