//! `CustomerActor`: one customer's entitlements and live balances.

use super::ledger::{LedgerError, ValueAt};
use super::service::{Entitlements, Loaded};
use super::{Usage, UsageSample};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use metron_storage::entitlements::EntitlementRecord;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a value read found for one entitlement.
#[derive(Debug, Clone)]
pub enum ValueAnswer {
    /// The entitlement exists but is not active at the time asked.
    Inactive(Arc<EntitlementRecord>),
    /// Boolean: access; static: access and config.
    Granted(Arc<EntitlementRecord>),
    Metered {
        record: Arc<EntitlementRecord>,
        has_access: bool,
        value: ValueAt,
    },
    /// The time asked lies before the live series: computed from the events instead.
    Past(Arc<EntitlementRecord>),
}

/// `value`: by entitlement id or feature key, at a time (default now).
#[derive(Message)]
#[rtype(result = "Result<Option<ValueAnswer>, String>")]
pub struct GetValue {
    pub entitlement: String,
    pub at: DateTime<Utc>,
}

/// Every active entitlement's value, by feature key.
pub type Access = BTreeMap<String, ValueAnswer>;

#[derive(Message)]
#[rtype(result = "Result<Access, String>")]
pub struct GetAccess {
    pub at: DateTime<Utc>,
}

/// Reloads the customer from the catalog and the events (after any change to its
/// entitlements, grants, resets or subjects). Answers once the new state is live.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Reload;

pub struct CustomerActor {
    service: Entitlements,
    namespace: String,
    customer_id: String,
    generation: u64,
    state: Result<Loaded, String>,
    last_used: Instant,
}

impl CustomerActor {
    pub fn new(service: Entitlements, namespace: String, customer_id: String) -> Self {
        Self {
            service,
            namespace,
            customer_id,
            generation: 0,
            state: Err("loading".into()),
            last_used: Instant::now(),
        }
    }

    /// Loads the customer; messages wait until it is done (`ctx.wait`).
    fn load(
        &mut self,
        ctx: &mut Context<Self>,
        done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
        try_refresh: bool,
    ) {
        let next_generation = self.generation + 1;
        let service = self.service.clone();
        let (namespace, customer_id) = (self.namespace.clone(), self.customer_id.clone());
        let previous = if try_refresh {
            std::mem::replace(&mut self.state, Err("reloading".into())).ok()
        } else {
            None
        };
        let recipient = ctx.address().recipient::<Usage>();
        let load = async move {
            // Grants or resets changed: the same subscription and usage under new
            // inputs when that is exact, else a full load with a new subscription.
            if let Some(previous) = previous {
                match service.refresh(&namespace, previous).await {
                    Ok(Ok(loaded)) => return (Ok(loaded), false),
                    Ok(Err(_)) => {}
                    Err(error) => return (Err(error), false),
                }
            }
            let loaded = service
                .load(&namespace, &customer_id, next_generation, recipient)
                .await;
            (loaded, true)
        };
        ctx.wait(load.into_actor(self).map(move |(result, full), act, _| {
            if full {
                act.generation = next_generation;
            }
            act.state = result.map_err(|e| e.to_string());
            match &mut act.state {
                Err(error) => {
                    tracing::warn!(customer = %act.customer_id, %error, "Could not load a customer's entitlements.");
                }
                // The events read at activation moved the balances too: the notifier
                // decides (it remembers what it already sent).
                Ok(loaded) => {
                    let metered: Vec<usize> = loaded
                        .entries
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| e.ledger.is_some())
                        .map(|(i, _)| i)
                        .collect();
                    act.service.observe(loaded, &metered);
                }
            }
            if let Some(done) = done {
                let _ = done.send(act.state.as_ref().map(|_| ()).map_err(Clone::clone));
            }
        }));
    }

    fn answer(&mut self, index: usize, at: DateTime<Utc>) -> Result<ValueAnswer, String> {
        let loaded = self.state.as_mut().map_err(|e| e.clone())?;
        let Some(entry) = loaded.entries.get_mut(index) else {
            return Err("no such entitlement".into());
        };
        let record = entry.record.clone();
        if let Some(reason) = &entry.broken {
            return Err(format!(
                "entitlement {} cannot be evaluated: {reason}",
                record.id
            ));
        }
        if !record.active_at(at) {
            return Ok(ValueAnswer::Inactive(record));
        }
        let Some(ledger) = entry.ledger.as_mut() else {
            return Ok(ValueAnswer::Granted(record));
        };
        match ledger.value_at(at) {
            Ok(value) => Ok(ValueAnswer::Metered {
                has_access: record.is_soft_limit
                    || value.value.balance > rust_decimal::Decimal::ZERO,
                record,
                value,
            }),
            Err(LedgerError::Stale) => Ok(ValueAnswer::Past(record)),
            Err(error) => Err(error.to_string()),
        }
    }

    fn apply(&mut self, samples: Vec<UsageSample>, ctx: &mut Context<Self>) {
        let Ok(loaded) = self.state.as_mut() else {
            return;
        };
        let mut touched: Vec<usize> = Vec::new();
        let mut stale = false;
        for sample in samples {
            let index = sample.ledger as usize;
            let Some(ledger) = loaded
                .entries
                .get_mut(index)
                .and_then(|e| e.ledger.as_mut())
            else {
                continue;
            };
            match ledger.add(sample.time_ms, &sample.value) {
                Ok(()) => {
                    if !touched.contains(&index) {
                        touched.push(index);
                    }
                }
                Err(_) => stale = true,
            }
        }
        if stale {
            // Usage older than the live series (a late event from a past period):
            // rebuild from the events, which already hold it.
            self.load(ctx, None, false);
            return;
        }
        if !touched.is_empty() {
            self.service.observe(loaded, &touched);
        }
    }
}

impl Actor for CustomerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.load(ctx, None, false);
        let idle = self.service.idle_after();
        ctx.run_interval(
            idle.min(Duration::from_secs(60))
                .max(Duration::from_millis(100)),
            move |act, ctx| {
                if act.last_used.elapsed() >= idle {
                    ctx.stop();
                }
            },
        );
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        let subjects = match &self.state {
            Ok(loaded) => loaded.subjects.clone(),
            Err(_) => Vec::new(),
        };
        self.service
            .passivated(&self.namespace, &self.customer_id, subjects, &ctx.address());
    }
}

impl Handler<Usage> for CustomerActor {
    type Result = ();
    fn handle(&mut self, msg: Usage, ctx: &mut Context<Self>) {
        // Usage keeps the actor alive: passivating a customer in use would only make
        // the next batch rebuild it.
        self.last_used = Instant::now();
        if msg.generation == self.generation {
            self.apply(msg.samples, ctx);
        }
    }
}

impl Handler<GetValue> for CustomerActor {
    type Result = Result<Option<ValueAnswer>, String>;
    fn handle(&mut self, msg: GetValue, _: &mut Context<Self>) -> Self::Result {
        self.last_used = Instant::now();
        let loaded = self.state.as_ref().map_err(|e| e.clone())?;
        let Some(index) = loaded.find(&msg.entitlement, msg.at) else {
            return Ok(None);
        };
        self.answer(index, msg.at).map(Some)
    }
}

impl Handler<GetAccess> for CustomerActor {
    type Result = Result<Access, String>;
    fn handle(&mut self, msg: GetAccess, _: &mut Context<Self>) -> Self::Result {
        self.last_used = Instant::now();
        let loaded = self.state.as_ref().map_err(|e| e.clone())?;
        let indexes: Vec<(String, usize)> = loaded
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.record.deleted_at.is_none())
            .map(|(i, e)| (e.record.feature_key.clone(), i))
            .collect();
        let mut access = Access::new();
        for (key, index) in indexes {
            let answer = match self.answer(index, msg.at) {
                Ok(answer) => answer,
                Err(error) => {
                    // A broken entitlement leaves the others' access answered.
                    tracing::warn!(customer = %self.customer_id, %error, "Left an entitlement out of access.");
                    continue;
                }
            };
            // Of two entitlements of one feature (an override), the active one wins.
            let replace = match access.get(&key) {
                None => true,
                Some(ValueAnswer::Inactive(_)) => true,
                Some(_) => false,
            };
            if replace {
                access.insert(key, answer);
            }
        }
        Ok(access)
    }
}

impl Handler<Reload> for CustomerActor {
    type Result = ResponseFuture<Result<(), String>>;
    fn handle(&mut self, _: Reload, ctx: &mut Context<Self>) -> Self::Result {
        self.last_used = Instant::now();
        let (done, wait) = tokio::sync::oneshot::channel();
        self.load(ctx, Some(done), true);
        Box::pin(async move {
            wait.await
                .map_err(|_| "the customer actor stopped".to_string())?
        })
    }
}
