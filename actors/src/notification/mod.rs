//! Notifications: rules evaluated against balance changes and resets, events persisted,
//! webhooks delivered with retries.
//!
//! [`Notifier`] is the handle everyone holds. The hot path, [`Notifier::balance_observed`],
//! reads an in-memory copy of the rules and of the thresholds already fired (both persisted
//! in the catalog) and returns at once when nothing newly crosses. When something does, it
//! records the threshold in memory and hands the new event to the [`delivery::DeliveryActor`],
//! which persists it (with the fired threshold) and delivers it to each channel: one attempt
//! now, then retries after each delay of the configured schedule, then FAILED. Deliveries
//! still open are resumed at startup.

pub mod delivery;
#[cfg(test)]
mod tests;
pub mod threshold;

use crate::notification::delivery::{Create, DataFuture, DeliveryActor, Enqueue, Flush};
use actix::prelude::*;
use chrono::{DateTime, SecondsFormat, Utc};
use metron_connectors::webhook;
use metron_storage::catalog::Catalog;
use metron_storage::notifications::{
    self as store, Channel, Delivery, DeliveryState, Event, EventFilter, Metadata, Rule, RuleType,
    Threshold,
};
use parking_lot::{Mutex, RwLock};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use threshold::{BalanceValue, ThresholdKind};

/// Annotation of the events `POST /rules/{id}/test` creates.
pub const ANNOTATION_RULE_TEST: &str = "notification.rule.test";
/// Bounds OpenMeter puts on a rule.
pub const RULE_CHANNELS_MAX: usize = 5;
pub const RULE_THRESHOLDS_MAX: usize = 10;
pub const NAME_CHARS_MAX: usize = 256;

/// How deliveries are retried.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// The delay before each retry after a failed attempt; when exhausted the delivery is FAILED.
    pub retry_schedule: Vec<Duration>,
    /// How long one attempt may take.
    pub request_timeout: Duration,
}

impl Default for NotifierConfig {
    /// Svix's default schedule: 5s, 5m, 30m, 2h, 5h, 10h, 10h.
    fn default() -> Self {
        let s = Duration::from_secs;
        Self {
            retry_schedule: vec![
                s(5),
                s(300),
                s(1800),
                s(7200),
                s(18_000),
                s(36_000),
                s(36_000),
            ],
            request_timeout: s(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Catalog(#[from] store::Error),
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("the notifier is shutting down")]
    Stopped,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A metered entitlement's balance after a change.
#[derive(Clone)]
pub struct BalanceObservation {
    pub namespace: String,
    pub entitlement_id: String,
    pub feature_id: String,
    pub feature_key: String,
    pub subject_key: String,
    pub customer_id: Option<String>,
    pub period_from: DateTime<Utc>,
    pub measure_usage_from: DateTime<Utc>,
    pub usage: Decimal,
    pub balance: Decimal,
    pub total_available_grant_amount: Decimal,
    pub overage: Decimal,
    /// The payload's read models, built only when a threshold fires (a balance changes
    /// on every usage batch; a threshold fires rarely, and the read models come from the
    /// catalog, not from the live customer's memory).
    pub payload: PayloadSource,
}

/// JSON read models for a payload's `data`: entitlement (EntitlementMetered), feature,
/// subject, customer, value (EntitlementValue).
#[derive(Debug, Clone)]
pub struct Payload {
    pub entitlement: Value,
    pub feature: Value,
    pub subject: Value,
    pub customer: Option<Value>,
    pub value: Value,
}

/// Builds a payload when asked (once per fired threshold).
pub type PayloadSource = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Payload> + Send>> + Send + Sync,
>;

impl Payload {
    /// A source that answers this payload.
    pub fn ready(self) -> PayloadSource {
        Arc::new(move || {
            let payload = self.clone();
            Box::pin(async move { payload })
        })
    }
}

impl std::fmt::Debug for BalanceObservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalanceObservation")
            .field("namespace", &self.namespace)
            .field("entitlement_id", &self.entitlement_id)
            .field("period_from", &self.period_from)
            .field("usage", &self.usage)
            .field("balance", &self.balance)
            .finish_non_exhaustive()
    }
}

/// An entitlement's usage was reset.
#[derive(Debug, Clone)]
pub struct ResetObservation {
    pub namespace: String,
    pub entitlement_id: String,
    pub feature_id: String,
    pub feature_key: String,
    pub subject_key: String,
    pub customer_id: Option<String>,
    pub reset_at: DateTime<Utc>,
    pub entitlement: Value,
    pub feature: Value,
    pub subject: Value,
    pub customer: Option<Value>,
    pub value: Value,
}

/// A channel as created or replaced (PUT).
#[derive(Debug, Clone, Default)]
pub struct ChannelInput {
    pub name: String,
    pub disabled: bool,
    pub url: String,
    pub custom_headers: BTreeMap<String, String>,
    pub signing_secret: Option<String>,
    pub metadata: Option<Metadata>,
}

/// A rule as created or replaced (PUT).
#[derive(Debug, Clone)]
pub struct RuleInput {
    pub rule_type: RuleType,
    pub name: String,
    pub disabled: bool,
    pub channels: Vec<String>,
    pub thresholds: Vec<Threshold>,
    pub features: Vec<String>,
    pub metadata: Option<Metadata>,
}

/// The handle: cheap to clone; the observation methods never block and never fail the caller.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Catalog,
    /// Live rules per namespace, replaced whole on every rule change.
    rules: RwLock<HashMap<String, Arc<Vec<Rule>>>>,
    /// The threshold last fired per rule, kind, entitlement, feature and subject: for the
    /// newest usage period only (an older period's entry is replaced, so the map holds
    /// one entry per live rule and entitlement, not one per period ever seen).
    fired: Mutex<HashMap<String, Fired>>,
    deliveries: Addr<DeliveryActor>,
}

impl Notifier {
    /// Loads rules and fired thresholds, starts the delivery actor on `arbiter` and resumes
    /// every delivery still open.
    pub async fn start(
        catalog: Catalog,
        config: NotifierConfig,
        arbiter: &ArbiterHandle,
    ) -> Result<Self> {
        let mut rules: HashMap<String, Vec<Rule>> = HashMap::new();
        for (namespace, rule) in catalog.all_live_rules().await? {
            rules.entry(namespace).or_default().push(rule);
        }
        let mut fired: HashMap<String, Fired> = HashMap::new();
        for (key, threshold) in catalog.fired_thresholds().await? {
            let Some((prefix, period)) = split_key(&key) else {
                continue;
            };
            let newer = fired.get(prefix).is_none_or(|f| period > f.period.as_str());
            if newer {
                fired.insert(
                    prefix.to_owned(),
                    Fired {
                        period: period.to_owned(),
                        threshold,
                    },
                );
            }
        }
        let open = catalog.open_deliveries().await?;
        let c = catalog.clone();
        let deliveries =
            DeliveryActor::start_in_arbiter(arbiter, move |_| DeliveryActor::new(c, config));
        let resumed = open.len();
        for o in open {
            deliveries.do_send(Enqueue {
                namespace: o.namespace,
                event_id: o.event_id,
                channel_id: o.delivery.channel_id,
                due: o.delivery.next_attempt.unwrap_or_else(Utc::now),
            });
        }
        if resumed > 0 {
            tracing::info!(resumed, "Resumed open webhook deliveries.");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                catalog,
                rules: RwLock::new(rules.into_iter().map(|(ns, r)| (ns, Arc::new(r))).collect()),
                fired: Mutex::new(fired),
                deliveries,
            }),
        })
    }

    fn rules_of(&self, namespace: &str) -> Option<Arc<Vec<Rule>>> {
        self.inner.rules.read().get(namespace).cloned()
    }

    /// Waits (up to `within`) until every event fired so far is stored with its deliveries:
    /// those not sent yet are then sent after the next start. `false` when the wait ran out.
    pub async fn flush(&self, within: Duration) -> bool {
        matches!(
            tokio::time::timeout(within, self.inner.deliveries.send(Flush)).await,
            Ok(Ok(()))
        )
    }

    /// Whether any enabled balance-threshold rule exists in the namespace (else
    /// observations are not worth building).
    pub fn watches_balances(&self, namespace: &str) -> bool {
        self.rules_of(namespace).is_some_and(|rules| {
            rules
                .iter()
                .any(|r| r.rule_type == RuleType::BalanceThreshold && !r.disabled)
        })
    }

    /// Called after every balance change of a metered entitlement. Fires, per matching rule and
    /// threshold kind, the highest crossed threshold unless it was the last one fired for the
    /// same usage period.
    pub fn balance_observed(&self, observation: BalanceObservation) {
        let Some(rules) = self.rules_of(&observation.namespace) else {
            return;
        };
        let value = BalanceValue {
            usage: observation.usage,
            balance: observation.balance,
            total_available_grant_amount: observation.total_available_grant_amount,
        };
        let mut firing: Vec<(&Rule, String, Threshold)> = Vec::new();
        for rule in rules.iter().filter(|r| {
            r.rule_type == RuleType::BalanceThreshold
                && !r.disabled
                && r.applies_to_feature(&observation.feature_id, &observation.feature_key)
        }) {
            for (kind, highest) in threshold::highest_crossed(&rule.thresholds, &value) {
                let (prefix, period) = dedup_key(&observation, &rule.id, kind);
                let mut fired = self.inner.fired.lock();
                let last = match fired.get(&prefix) {
                    // A period older than the newest one seen fires nothing.
                    Some(f) if f.period > period => continue,
                    Some(f) if f.period == period => Some(&f.threshold),
                    _ => None,
                };
                if threshold::should_fire(last, &highest) {
                    let key = format!("{prefix}/{period}");
                    fired.insert(
                        prefix,
                        Fired {
                            period,
                            threshold: highest,
                        },
                    );
                    firing.push((rule, key, highest));
                }
            }
        }
        for (rule, key, threshold) in firing {
            let now = Utc::now();
            let id = ulid::Ulid::new().to_string();
            let event = new_event(
                id,
                rule,
                now,
                Value::Null,
                annotations(
                    &observation.subject_key,
                    &observation.feature_id,
                    &observation.feature_key,
                    observation.customer_id.as_deref(),
                ),
                (
                    &observation.feature_id,
                    &observation.feature_key,
                    &observation.subject_key,
                ),
            );
            let payload = (observation.payload)();
            let threshold_json = json!(threshold);
            let data: DataFuture = Box::pin(async move {
                let p = payload.await;
                let mut data = entitlement_data(
                    &p.entitlement,
                    &p.feature,
                    &p.subject,
                    p.customer.as_ref(),
                    &p.value,
                );
                data.insert("threshold".into(), threshold_json);
                Value::Object(data)
            });
            self.inner.deliveries.do_send(Create {
                namespace: observation.namespace.clone(),
                event,
                fired: Some((key, threshold)),
                data: Some(data),
            });
        }
    }

    /// Called when an entitlement's usage is reset: fires every matching reset rule.
    pub fn reset_observed(&self, observation: ResetObservation) {
        let Some(rules) = self.rules_of(&observation.namespace) else {
            return;
        };
        for rule in rules.iter().filter(|r| {
            r.rule_type == RuleType::EntitlementReset
                && !r.disabled
                && r.applies_to_feature(&observation.feature_id, &observation.feature_key)
        }) {
            let data = entitlement_data(
                &observation.entitlement,
                &observation.feature,
                &observation.subject,
                observation.customer.as_ref(),
                &observation.value,
            );
            let event = new_event(
                ulid::Ulid::new().to_string(),
                rule,
                Utc::now(),
                Value::Object(data),
                annotations(
                    &observation.subject_key,
                    &observation.feature_id,
                    &observation.feature_key,
                    observation.customer_id.as_deref(),
                ),
                (
                    &observation.feature_id,
                    &observation.feature_key,
                    &observation.subject_key,
                ),
            );
            self.inner.deliveries.do_send(Create {
                namespace: observation.namespace.clone(),
                event,
                fired: None,
                data: None,
            });
        }
    }

    /// Whether an enabled rule of `rule_type` exists in the namespace.
    pub fn watches(&self, namespace: &str, rule_type: RuleType) -> bool {
        self.rules_of(namespace).is_some_and(|rules| {
            rules
                .iter()
                .any(|r| r.rule_type == rule_type && !r.disabled)
        })
    }

    /// An invoice was created or changed (`invoice.created` / `invoice.updated`): every
    /// enabled rule of that type gets an event whose `data` is the invoice as the API
    /// answers it. Gathering invoices never notify (the caller does not report them).
    pub fn invoice_observed(&self, namespace: &str, rule_type: RuleType, invoice: Value) {
        let Some(rules) = self.rules_of(namespace) else {
            return;
        };
        for rule in rules
            .iter()
            .filter(|r| r.rule_type == rule_type && !r.disabled)
        {
            let event = new_event(
                ulid::Ulid::new().to_string(),
                rule,
                Utc::now(),
                invoice.clone(),
                BTreeMap::new(),
                ("", "", ""),
            );
            self.inner.deliveries.do_send(Create {
                namespace: namespace.to_owned(),
                event,
                fired: None,
                data: None,
            });
        }
    }

    // ---- channels ----

    pub async fn create_channel(&self, namespace: &str, input: ChannelInput) -> Result<Channel> {
        let now = Utc::now();
        let channel = channel_from(ulid::Ulid::new().to_string(), input, now, now)?;
        self.inner
            .catalog
            .insert_channel(namespace, &channel)
            .await?;
        Ok(channel)
    }

    pub async fn get_channel(&self, namespace: &str, id: &str) -> Result<Channel> {
        match self.inner.catalog.get_channel(namespace, id).await? {
            Some(c) if c.deleted_at.is_none() => Ok(c),
            _ => Err(not_found("channel", id)),
        }
    }

    pub async fn list_channels(&self, namespace: &str) -> Result<Vec<Channel>> {
        Ok(self.inner.catalog.list_channels(namespace).await?)
    }

    pub async fn update_channel(
        &self,
        namespace: &str,
        id: &str,
        input: ChannelInput,
    ) -> Result<Channel> {
        let old = self.get_channel(namespace, id).await?;
        let mut input = input;
        if input.signing_secret.is_none() {
            input.signing_secret = Some(old.signing_secret.clone());
        }
        let channel = channel_from(old.id, input, old.created_at, Utc::now())?;
        self.inner
            .catalog
            .update_channel(namespace, &channel)
            .await?;
        Ok(channel)
    }

    /// Soft-deletes a channel; refused while a rule names it.
    pub async fn delete_channel(&self, namespace: &str, id: &str) -> Result<()> {
        let mut channel = self.get_channel(namespace, id).await?;
        let users: Vec<String> = self
            .inner
            .catalog
            .list_rules(namespace)
            .await?
            .into_iter()
            .filter(|r| r.deleted_at.is_none() && r.channels.iter().any(|c| c == id))
            .map(|r| r.id)
            .collect();
        if !users.is_empty() {
            return Err(Error::Invalid(format!(
                "failed to delete channel as it is assigned to one or more rules [channel.id={id}]: {users:?}"
            )));
        }
        let now = Utc::now();
        channel.deleted_at = Some(now);
        channel.updated_at = now;
        self.inner
            .catalog
            .update_channel(namespace, &channel)
            .await?;
        Ok(())
    }

    // ---- rules ----

    pub async fn create_rule(&self, namespace: &str, input: RuleInput) -> Result<Rule> {
        self.check_rule(namespace, &input).await?;
        let now = Utc::now();
        let rule = rule_from(ulid::Ulid::new().to_string(), input, now, now);
        self.inner.catalog.insert_rule(namespace, &rule).await?;
        self.reload_rules(namespace).await?;
        Ok(rule)
    }

    pub async fn get_rule(&self, namespace: &str, id: &str) -> Result<Rule> {
        match self.inner.catalog.get_rule(namespace, id).await? {
            Some(r) if r.deleted_at.is_none() => Ok(r),
            _ => Err(not_found("rule", id)),
        }
    }

    pub async fn list_rules(&self, namespace: &str) -> Result<Vec<Rule>> {
        Ok(self.inner.catalog.list_rules(namespace).await?)
    }

    pub async fn update_rule(&self, namespace: &str, id: &str, input: RuleInput) -> Result<Rule> {
        let old = self.get_rule(namespace, id).await?;
        if old.rule_type != input.rule_type {
            return Err(Error::Invalid(format!(
                "the type of rule {id} is {}; it cannot change",
                old.rule_type.as_str()
            )));
        }
        self.check_rule(namespace, &input).await?;
        let rule = rule_from(old.id, input, old.created_at, Utc::now());
        self.inner.catalog.update_rule(namespace, &rule).await?;
        self.reload_rules(namespace).await?;
        Ok(rule)
    }

    pub async fn delete_rule(&self, namespace: &str, id: &str) -> Result<()> {
        let mut rule = self.get_rule(namespace, id).await?;
        let now = Utc::now();
        rule.deleted_at = Some(now);
        rule.updated_at = now;
        self.inner.catalog.update_rule(namespace, &rule).await?;
        self.reload_rules(namespace).await
    }

    async fn check_rule(&self, namespace: &str, input: &RuleInput) -> Result<()> {
        check_name(&input.name)?;
        if input.channels.is_empty() || input.channels.len() > RULE_CHANNELS_MAX {
            return Err(Error::Invalid(format!(
                "a rule needs 1 to {RULE_CHANNELS_MAX} channels"
            )));
        }
        for id in &input.channels {
            match self.inner.catalog.get_channel(namespace, id).await? {
                Some(c) if c.deleted_at.is_none() => {}
                _ => return Err(Error::Invalid(format!("channel {id:?} not found"))),
            }
        }
        if input.rule_type == RuleType::BalanceThreshold {
            if input.thresholds.is_empty() || input.thresholds.len() > RULE_THRESHOLDS_MAX {
                return Err(Error::Invalid(format!(
                    "a balance threshold rule needs 1 to {RULE_THRESHOLDS_MAX} thresholds"
                )));
            }
            if let Some(t) = input.thresholds.iter().find(|t| t.value < Decimal::ZERO) {
                return Err(Error::Invalid(format!(
                    "threshold value {} must not be negative",
                    t.value
                )));
            }
        }
        Ok(())
    }

    async fn reload_rules(&self, namespace: &str) -> Result<()> {
        let live: Vec<Rule> = self
            .inner
            .catalog
            .list_rules(namespace)
            .await?
            .into_iter()
            .filter(|r| r.deleted_at.is_none())
            .collect();
        self.inner
            .rules
            .write()
            .insert(namespace.to_owned(), Arc::new(live));
        Ok(())
    }

    /// Creates an event with an example payload, annotated as a test, and delivers it.
    pub async fn test_rule(&self, namespace: &str, id: &str) -> Result<Event> {
        let rule = self.get_rule(namespace, id).await?;
        let event_id = ulid::Ulid::new().to_string();
        let mut data = example_data();
        if rule.rule_type == RuleType::BalanceThreshold {
            let threshold = rule.thresholds.first().copied().unwrap_or(Threshold {
                value: Decimal::ONE_HUNDRED,
                kind: store::ThresholdType::UsageValue,
            });
            data.insert("threshold".into(), json!(threshold));
        }
        let mut annotations = BTreeMap::new();
        annotations.insert(ANNOTATION_RULE_TEST.to_owned(), Value::Bool(true));
        let event = new_event(
            event_id,
            &rule,
            Utc::now(),
            Value::Object(data),
            annotations,
            ("", "", ""),
        );
        self.create_event(namespace, event).await
    }

    async fn create_event(&self, namespace: &str, event: Event) -> Result<Event> {
        let event = self.with_deliveries(namespace, event).await?;
        self.inner.catalog.insert_event(namespace, &event).await?;
        for d in &event.deliveries {
            self.inner.deliveries.do_send(Enqueue {
                namespace: namespace.to_owned(),
                event_id: event.id.clone(),
                channel_id: d.channel_id.clone(),
                due: event.created_at,
            });
        }
        Ok(event)
    }

    async fn with_deliveries(&self, namespace: &str, event: Event) -> Result<Event> {
        delivery::with_deliveries(&self.inner.catalog, namespace, event).await
    }

    // ---- events ----

    pub async fn get_event(&self, namespace: &str, id: &str) -> Result<Event> {
        self.inner
            .catalog
            .get_event(namespace, id)
            .await?
            .ok_or_else(|| not_found("event", id))
    }

    pub async fn list_events(&self, namespace: &str, filter: &EventFilter) -> Result<Vec<Event>> {
        Ok(self.inner.catalog.list_events(namespace, filter).await?)
    }

    /// Re-sends an event to the given channels (all when empty) whose delivery is SENDING,
    /// SUCCESS or FAILED; disabled channels are skipped, as in OpenMeter.
    pub async fn resend_event(&self, namespace: &str, id: &str, channels: &[String]) -> Result<()> {
        let event = self.get_event(namespace, id).await?;
        let known: Vec<&str> = event
            .deliveries
            .iter()
            .map(|d| d.channel_id.as_str())
            .collect();
        if let Some(unknown) = channels.iter().find(|c| !known.contains(&c.as_str())) {
            return Err(Error::Invalid(format!("channel {unknown} not found")));
        }
        let now = Utc::now();
        for mut d in event.deliveries {
            if !channels.is_empty() && !channels.contains(&d.channel_id) {
                continue;
            }
            if !matches!(
                d.state,
                DeliveryState::Sending | DeliveryState::Success | DeliveryState::Failed
            ) {
                continue;
            }
            match self
                .inner
                .catalog
                .get_channel(namespace, &d.channel_id)
                .await?
            {
                Some(c) if !c.disabled && c.deleted_at.is_none() => {}
                _ => continue,
            }
            d.state = DeliveryState::Resending;
            d.reason = "event re-send was triggered".into();
            d.updated_at = now;
            d.next_attempt = Some(now);
            d.failures = 0;
            self.inner.catalog.update_delivery(&event.id, &d).await?;
            self.inner.deliveries.do_send(Enqueue {
                namespace: namespace.to_owned(),
                event_id: event.id.clone(),
                channel_id: d.channel_id,
                due: now,
            });
        }
        Ok(())
    }
}

fn not_found(what: &'static str, id: &str) -> Error {
    Error::NotFound {
        what,
        id: id.to_owned(),
    }
}

fn check_name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if chars == 0 || chars > NAME_CHARS_MAX {
        return Err(Error::Invalid(format!(
            "name must be 1 to {NAME_CHARS_MAX} characters"
        )));
    }
    Ok(())
}

fn channel_from(
    id: String,
    input: ChannelInput,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> Result<Channel> {
    check_name(&input.name)?;
    let url = input.url.trim();
    let lower = url.to_ascii_lowercase();
    let host = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
        return Err(Error::Invalid(format!(
            "invalid webhook url {url:?}: an http or https URL is required"
        )));
    }
    let signing_secret = match input.signing_secret {
        Some(secret) => {
            webhook::secret_key(&secret).map_err(|e| Error::Invalid(e.to_string()))?;
            secret
        }
        None => webhook::generate_secret(),
    };
    Ok(Channel {
        id,
        name: input.name,
        disabled: input.disabled,
        url: url.to_owned(),
        custom_headers: input.custom_headers,
        signing_secret,
        metadata: input.metadata,
        created_at,
        updated_at,
        deleted_at: None,
    })
}

fn rule_from(
    id: String,
    input: RuleInput,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> Rule {
    Rule {
        id,
        rule_type: input.rule_type,
        name: input.name,
        disabled: input.disabled,
        channels: input.channels,
        thresholds: if input.rule_type == RuleType::BalanceThreshold {
            input.thresholds
        } else {
            Vec::new()
        },
        features: input.features,
        metadata: input.metadata,
        created_at,
        updated_at,
        deleted_at: None,
    }
}

/// The threshold last fired for one key, and the period it fired in.
struct Fired {
    /// `<period start>/<measureUsageFrom>`, RFC 3339 UTC with milliseconds: later periods
    /// compare greater as text.
    period: String,
    threshold: Threshold,
}

/// The dedup key of a fired threshold, as (namespace, rule, kind, entitlement, feature,
/// subject) and (usage period start, measureUsageFrom). A new period starts clean. The
/// catalog stores `<prefix>/<period>`.
fn dedup_key(o: &BalanceObservation, rule_id: &str, kind: ThresholdKind) -> (String, String) {
    let t = |d: DateTime<Utc>| d.to_rfc3339_opts(SecondsFormat::Millis, true);
    (
        format!(
            "{}/{}/{}/{}/{}/{}",
            o.namespace,
            rule_id,
            kind.as_str(),
            o.entitlement_id,
            o.feature_id,
            o.subject_key,
        ),
        format!("{}/{}", t(o.period_from), t(o.measure_usage_from)),
    )
}

/// A stored dedup key split into its prefix and period (the last two segments; the
/// subject in the prefix may itself hold a `/`).
fn split_key(key: &str) -> Option<(&str, &str)> {
    let (rest, _muf) = key.rsplit_once('/')?;
    let (prefix, _period) = rest.rsplit_once('/')?;
    Some((prefix, key.get(prefix.len() + 1..)?))
}

fn entitlement_data(
    entitlement: &Value,
    feature: &Value,
    subject: &Value,
    customer: Option<&Value>,
    value: &Value,
) -> serde_json::Map<String, Value> {
    let mut data = serde_json::Map::new();
    data.insert("entitlement".into(), entitlement.clone());
    data.insert("feature".into(), feature.clone());
    data.insert("subject".into(), subject.clone());
    if let Some(c) = customer {
        data.insert("customer".into(), c.clone());
    }
    data.insert("value".into(), value.clone());
    data
}

fn annotations(
    subject_key: &str,
    feature_id: &str,
    feature_key: &str,
    customer_id: Option<&str>,
) -> BTreeMap<String, Value> {
    let mut a = BTreeMap::new();
    a.insert("event.subject.key".to_owned(), json!(subject_key));
    a.insert("event.feature.id".to_owned(), json!(feature_id));
    a.insert("event.feature.key".to_owned(), json!(feature_key));
    if let Some(c) = customer_id {
        a.insert("event.customer.id".to_owned(), json!(c));
    }
    a
}

/// An event (without deliveries yet) whose payload is `{"id","type","timestamp","data"}`.
fn new_event(
    id: String,
    rule: &Rule,
    now: DateTime<Utc>,
    data: Value,
    annotations: BTreeMap<String, Value>,
    (feature_id, feature_key, subject_key): (&str, &str, &str),
) -> Event {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Event {
        payload: json!({
            "id": id,
            "type": rule.rule_type.as_str(),
            "timestamp": now.to_rfc3339_opts(SecondsFormat::Millis, true),
            "data": data,
        }),
        id,
        event_type: rule.rule_type,
        created_at: now,
        rule_id: rule.id.clone(),
        annotations,
        feature_id: some(feature_id),
        feature_key: some(feature_key),
        subject_key: some(subject_key),
        deliveries: Vec::new(),
    }
}

/// An example `data` for test events, shaped like a real one.
fn example_data() -> serde_json::Map<String, Value> {
    let at = "2024-01-01T00:00:00Z";
    entitlement_data(
        &json!({
            "type": "metered", "id": "01J5AVN2T6S8RDM5DMZTF8T3WF", "featureId": "01J5AVN2T6S8RDM5DMZTF8T3WG",
            "featureKey": "test", "subjectKey": "test-subject", "isSoftLimit": false,
            "isUnlimited": false, "issueAfterReset": 0, "preserveOverageAtReset": false,
            "usagePeriod": {"interval": "MONTH", "anchor": at, "intervalISO": "P1M"},
            "measureUsageFrom": at, "activeFrom": at,
            "currentUsagePeriod": {"from": at, "to": "2024-02-01T00:00:00Z"},
            "lastReset": at, "createdAt": at, "updatedAt": at
        }),
        &json!({"id": "01J5AVN2T6S8RDM5DMZTF8T3WG", "key": "test", "name": "test", "createdAt": at, "updatedAt": at}),
        &json!({"id": "01J5AVN2T6S8RDM5DMZTF8T3WH", "key": "test-subject", "displayName": "Test Subject", "createdAt": at, "updatedAt": at}),
        None,
        &json!({"hasAccess": true, "balance": 10000, "usage": 0, "overage": 0, "totalAvailableGrantAmount": 10000}),
    )
}

/// A new delivery for a channel.
fn pending(channel_id: &str, now: DateTime<Utc>) -> Delivery {
    Delivery {
        channel_id: channel_id.to_owned(),
        state: DeliveryState::Pending,
        reason: String::new(),
        updated_at: now,
        next_attempt: Some(now),
        attempts: Vec::new(),
        failures: 0,
    }
}

#[cfg(test)]
mod key_tests {
    use super::split_key;

    #[test]
    fn stored_keys_split_at_their_period() {
        let key =
            "ns/rule/balance/ent/feat/sub/ject/2025-02-01T00:00:00.000Z/2025-01-01T00:00:00.000Z";
        assert_eq!(
            split_key(key),
            Some((
                "ns/rule/balance/ent/feat/sub/ject",
                "2025-02-01T00:00:00.000Z/2025-01-01T00:00:00.000Z"
            ))
        );
        assert_eq!(split_key("nokey"), None);
    }
}
