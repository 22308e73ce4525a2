//! The delivery actor: persists new events and delivers every (event, channel) pair, one
//! attempt at a time, retrying on the configured schedule.
//!
//! Each delivery waits in its own timer task until it is due; the attempt itself (blocking
//! HTTP) runs on tokio's blocking pool, so the actor's arbiter never stalls. The catalog is
//! the truth: an attempt re-reads the delivery and does nothing unless it is still open, so a
//! stale timer is harmless, and whatever is open at a crash is resumed at the next start.

use super::{NotifierConfig, pending};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use metron_connectors::webhook;
use metron_storage::catalog::Catalog;
use metron_storage::notifications::{
    self as store, Attempt, AttemptResponse, DeliveryState, Event, Threshold,
};

/// Persist a new event (and the threshold that fired it) and deliver it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Create {
    pub namespace: String,
    pub event: Event,
    pub fired: Option<(String, Threshold)>,
    /// The payload's `data`, when it is still being built (read from the catalog).
    pub data: Option<DataFuture>,
}

/// A payload `data` being built.
pub type DataFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = serde_json::Value> + Send>>;

/// Answered once every [`Create`] sent before it is stored (each holds the mailbox until
/// then): a clean stop waits for it before it closes the catalog.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for DeliveryActor {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {}
}

/// Attempt a delivery once `due` has come.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue {
    pub namespace: String,
    pub event_id: String,
    pub channel_id: String,
    pub due: DateTime<Utc>,
}

pub struct DeliveryActor {
    catalog: Catalog,
    config: NotifierConfig,
}

impl DeliveryActor {
    pub fn new(catalog: Catalog, config: NotifierConfig) -> Self {
        Self { catalog, config }
    }
}

impl Actor for DeliveryActor {
    type Context = Context<Self>;
}

impl Handler<Create> for DeliveryActor {
    type Result = ();

    /// Events are stored one at a time, in the order they fired (`ctx.wait` holds the
    /// mailbox), so the last threshold persisted for a key is the last one fired.
    fn handle(&mut self, msg: Create, ctx: &mut Context<Self>) {
        let catalog = self.catalog.clone();
        let namespace = msg.namespace.clone();
        let store = async move {
            let mut msg = msg;
            if let Some(data) = msg.data.take() {
                let data = data.await;
                if let Some(payload) = msg.event.payload.as_object_mut() {
                    payload.insert("data".into(), data);
                }
            }
            let event = with_deliveries(&catalog, &msg.namespace, msg.event).await?;
            // The threshold is recorded as fired with its event, in one transaction: never
            // one without the other.
            let fired = msg.fired.as_ref().map(|(key, t)| (key.as_str(), t));
            catalog
                .insert_fired_event(&msg.namespace, &event, fired)
                .await?;
            Ok::<_, super::Error>(event)
        };
        ctx.wait(actix::fut::wrap_future::<_, Self>(store).map(
            move |result, _actor, ctx| match result {
                Ok(event) => {
                    for d in &event.deliveries {
                        ctx.notify(Enqueue {
                            namespace: namespace.clone(),
                            event_id: event.id.clone(),
                            channel_id: d.channel_id.clone(),
                            due: event.created_at,
                        });
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, %namespace, "Could not store a notification event; it is dropped.");
                }
            },
        ));
    }
}

impl Handler<Enqueue> for DeliveryActor {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        let catalog = self.catalog.clone();
        let config = self.config.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            let wait = (msg.due - Utc::now()).to_std().unwrap_or_default();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            match attempt(
                &catalog,
                &config,
                &msg.namespace,
                &msg.event_id,
                &msg.channel_id,
            )
            .await
            {
                Ok(Some(due)) => addr.do_send(Enqueue { due, ..msg }),
                Ok(None) => {}
                Err(error) => tracing::warn!(
                    %error,
                    event_id = %msg.event_id,
                    channel_id = %msg.channel_id,
                    "A webhook delivery could not be updated; it resumes at the next start."
                ),
            }
        });
    }
}

/// The event with one PENDING delivery per live, enabled channel of its rule.
pub async fn with_deliveries(
    catalog: &Catalog,
    namespace: &str,
    mut event: Event,
) -> Result<Event, super::Error> {
    let Some(rule) = catalog.get_rule(namespace, &event.rule_id).await? else {
        return Err(super::not_found("rule", &event.rule_id));
    };
    for id in &rule.channels {
        if let Some(c) = catalog.get_channel(namespace, id).await?
            && c.deleted_at.is_none()
            && !c.disabled
        {
            event.deliveries.push(pending(id, event.created_at));
        }
    }
    Ok(event)
}

/// One attempt of one delivery, if it is still open; returns when to retry, if ever.
async fn attempt(
    catalog: &Catalog,
    config: &NotifierConfig,
    namespace: &str,
    event_id: &str,
    channel_id: &str,
) -> Result<Option<DateTime<Utc>>, store::Error> {
    let Some(event) = catalog.get_event(namespace, event_id).await? else {
        return Ok(None);
    };
    let Some(mut delivery) = event
        .deliveries
        .iter()
        .find(|d| d.channel_id == channel_id)
        .cloned()
    else {
        return Ok(None);
    };
    if !delivery.state.is_open() {
        return Ok(None);
    }
    let channel = match catalog.get_channel(namespace, channel_id).await? {
        Some(c) if c.deleted_at.is_none() && !c.disabled => c,
        _ => {
            delivery.state = DeliveryState::Failed;
            delivery.reason = "the channel is disabled or deleted".into();
            delivery.updated_at = Utc::now();
            delivery.next_attempt = None;
            catalog.update_delivery(event_id, &delivery).await?;
            return Ok(None);
        }
    };
    let started = Utc::now();
    if delivery.state != DeliveryState::Resending {
        delivery.state = DeliveryState::Sending;
    }
    delivery.updated_at = started;
    delivery.next_attempt = None;
    catalog.update_delivery(event_id, &delivery).await?;

    let body = serde_json::to_vec(&event.payload).unwrap_or_default();
    let request = webhook::Delivery {
        url: channel.url.clone(),
        message_id: event.id.clone(),
        timestamp: started.timestamp(),
        body,
        secret: channel.signing_secret.clone(),
        custom_headers: channel.custom_headers.into_iter().collect(),
        timeout: config.request_timeout,
    };
    let outcome = tokio::task::spawn_blocking(move || webhook::send(&request))
        .await
        .unwrap_or_else(|error| webhook::Outcome {
            status: None,
            body: error.to_string(),
            duration_ms: 0,
        });
    let now = Utc::now();
    let success = outcome.is_success();
    delivery.attempts.push(Attempt {
        state: if success {
            DeliveryState::Success
        } else {
            DeliveryState::Failed
        },
        response: AttemptResponse {
            status_code: outcome.status,
            body: outcome.body.clone(),
            duration_ms: outcome.duration_ms,
            url: channel.url,
        },
        timestamp: started,
    });
    delivery.updated_at = now;
    let mut retry = None;
    if success {
        delivery.state = DeliveryState::Success;
        delivery.reason = String::new();
        delivery.failures = 0;
    } else {
        delivery.failures = delivery.failures.saturating_add(1);
        let why = match outcome.status {
            Some(status) => format!("the receiver answered HTTP {status}"),
            None => format!("the request failed: {}", outcome.body),
        };
        let delay = config
            .retry_schedule
            .get(delivery.failures as usize - 1)
            .and_then(|d| chrono::Duration::from_std(*d).ok());
        match delay {
            Some(delay) => {
                let due = now + delay;
                delivery.state = DeliveryState::Pending;
                delivery.reason = format!("{why}; retrying");
                delivery.next_attempt = Some(due);
                retry = Some(due);
            }
            None => {
                delivery.state = DeliveryState::Failed;
                delivery.reason = format!("{why}; gave up after {} attempts", delivery.failures);
            }
        }
    }
    catalog.update_delivery(event_id, &delivery).await?;
    Ok(retry)
}
