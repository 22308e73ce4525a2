//! Notification channels, rules, events with their per-channel delivery status, and the
//! balance thresholds already fired, in the catalog.
//!
//! Channels and rules are soft-deleted (`deletedAt`), as in OpenMeter: events keep naming them.
//! Every document is stored as JSON beside the columns queries filter on.

use crate::catalog::{Catalog, CatalogRow, Tx};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("catalog query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("catalog row {id} of {table} is not valid: {source}")]
    Decode {
        table: &'static str,
        id: String,
        source: serde_json::Error,
    },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
}

impl Error {
    /// Whether the database refused a value the request carried (see
    /// [`crate::catalog::Error::is_refused_value`]).
    pub fn is_refused_value(&self) -> bool {
        matches!(self, Self::Query(error) if crate::catalog::refused_value(error))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub type Metadata = BTreeMap<String, String>;

/// A webhook channel (the only channel type).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub disabled: bool,
    pub url: String,
    #[serde(default)]
    pub custom_headers: BTreeMap<String, String>,
    pub signing_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// What a rule reacts to; also the type of the events it creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RuleType {
    #[serde(rename = "entitlements.balance.threshold")]
    BalanceThreshold,
    #[serde(rename = "entitlements.reset")]
    EntitlementReset,
    #[serde(rename = "invoice.created")]
    InvoiceCreated,
    #[serde(rename = "invoice.updated")]
    InvoiceUpdated,
}

impl RuleType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BalanceThreshold => "entitlements.balance.threshold",
            Self::EntitlementReset => "entitlements.reset",
            Self::InvoiceCreated => "invoice.created",
            Self::InvoiceUpdated => "invoice.updated",
        }
    }
}

/// A threshold's type; `NUMBER` and `PERCENT` are OpenMeter's deprecated names of
/// `usage_value` and `usage_percentage`, kept as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ThresholdType {
    #[serde(rename = "balance_value")]
    BalanceValue,
    #[serde(rename = "usage_percentage")]
    UsagePercentage,
    #[serde(rename = "usage_value")]
    UsageValue,
    #[serde(rename = "NUMBER")]
    Number,
    #[serde(rename = "PERCENT")]
    Percent,
}

/// `{value, type}` of a balance-threshold rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Threshold {
    #[serde(
        serialize_with = "metron_engine::decimal::serialize_as_number",
        deserialize_with = "decimal_from_number"
    )]
    pub value: Decimal,
    #[serde(rename = "type")]
    pub kind: ThresholdType,
}

/// A notification rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub id: String,
    #[serde(rename = "type")]
    pub rule_type: RuleType,
    pub name: String,
    pub disabled: bool,
    /// Channel ids.
    pub channels: Vec<String>,
    #[serde(default)]
    pub thresholds: Vec<Threshold>,
    /// Feature ids or keys; empty matches every feature.
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Rule {
    /// Whether the rule names this feature (by id or key), or names none.
    pub fn applies_to_feature(&self, feature_id: &str, feature_key: &str) -> bool {
        self.features.is_empty()
            || self
                .features
                .iter()
                .any(|f| f == feature_id || f == feature_key)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DeliveryState {
    Pending,
    Sending,
    Success,
    Failed,
    Resending,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Sending => "SENDING",
            Self::Success => "SUCCESS",
            Self::Failed => "FAILED",
            Self::Resending => "RESENDING",
        }
    }

    /// Still has an attempt to make.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Sending | Self::Resending)
    }
}

/// What a receiver answered to one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub body: String,
    pub duration_ms: u64,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub state: DeliveryState,
    pub response: AttemptResponse,
    pub timestamp: DateTime<Utc>,
}

/// The delivery of one event to one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub channel_id: String,
    pub state: DeliveryState,
    pub reason: String,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<DateTime<Utc>>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// Failed attempts since the delivery began or was last re-sent: picks the next retry delay.
    #[serde(default)]
    pub failures: u32,
}

/// A notification event: the webhook payload and where it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: RuleType,
    pub created_at: DateTime<Utc>,
    pub rule_id: String,
    /// `{"id","type","timestamp","data"}`: the body every channel receives.
    pub payload: serde_json::Value,
    #[serde(default)]
    pub annotations: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_key: Option<String>,
    /// Filled from the deliveries table on read; not part of the stored document.
    #[serde(default, skip)]
    pub deliveries: Vec<Delivery>,
}

/// A delivery with an attempt still to make, as found at startup.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenDelivery {
    pub namespace: String,
    pub event_id: String,
    pub delivery: Delivery,
}

/// Filter of an event listing; empty lists match everything.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Feature ids or keys.
    pub features: Vec<String>,
    pub subjects: Vec<String>,
    pub rules: Vec<String>,
    pub channels: Vec<String>,
}

impl EventFilter {
    fn admits(&self, event: &Event) -> bool {
        let any = |list: &[String], value: Option<&String>| {
            list.is_empty() || value.is_some_and(|v| list.contains(v))
        };
        (self.features.is_empty()
            || any(&self.features, event.feature_id.as_ref())
            || any(&self.features, event.feature_key.as_ref()))
            && any(&self.subjects, event.subject_key.as_ref())
            && any(&self.rules, Some(&event.rule_id))
            && (self.channels.is_empty()
                || event
                    .deliveries
                    .iter()
                    .any(|d| self.channels.contains(&d.channel_id)))
    }
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|source| Error::Encode { what, source })
}

fn decode<T: for<'de> Deserialize<'de>>(table: &'static str, id: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| Error::Decode {
        table,
        id: id.to_owned(),
        source,
    })
}

/// A table of JSON documents with `(id, namespace, definition, created_at, deleted_at)`:
/// its statements (sqlx takes static SQL, so each table spells its own).
struct DocTable {
    name: &'static str,
    insert: &'static str,
    update: &'static str,
    get: &'static str,
    list: &'static str,
}

const CHANNELS: DocTable = DocTable {
    name: "notification_channels",
    insert: "INSERT INTO notification_channels (id, namespace, definition, created_at, deleted_at) VALUES ($1, $2, $3, $4, $5)",
    update: "UPDATE notification_channels SET definition = $1, deleted_at = $2 WHERE namespace = $3 AND id = $4",
    get: "SELECT id, definition FROM notification_channels WHERE namespace = $1 AND id = $2",
    list: "SELECT id, definition FROM notification_channels WHERE namespace = $1 ORDER BY created_at, id",
};

const RULES: DocTable = DocTable {
    name: "notification_rules",
    insert: "INSERT INTO notification_rules (id, namespace, definition, created_at, deleted_at) VALUES ($1, $2, $3, $4, $5)",
    update: "UPDATE notification_rules SET definition = $1, deleted_at = $2 WHERE namespace = $3 AND id = $4",
    get: "SELECT id, definition FROM notification_rules WHERE namespace = $1 AND id = $2",
    list: "SELECT id, definition FROM notification_rules WHERE namespace = $1 ORDER BY created_at, id",
};

/// The lookup columns of one document.
struct Doc<'a> {
    id: &'a str,
    created_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
}

impl<'a> Doc<'a> {
    fn of(id: &'a str, created_at: DateTime<Utc>, deleted_at: Option<DateTime<Utc>>) -> Self {
        Self {
            id,
            created_at,
            deleted_at,
        }
    }
}

impl Catalog {
    // ---- channels and rules: one document table shape ----

    pub async fn insert_channel(&self, namespace: &str, channel: &Channel) -> Result<()> {
        let doc = Doc::of(&channel.id, channel.created_at, channel.deleted_at);
        self.insert_doc(&CHANNELS, namespace, doc, encode("channel", channel)?)
            .await
    }

    pub async fn update_channel(&self, namespace: &str, channel: &Channel) -> Result<()> {
        let doc = Doc::of(&channel.id, channel.created_at, channel.deleted_at);
        self.update_doc(&CHANNELS, namespace, doc, encode("channel", channel)?)
            .await
    }

    /// A channel, deleted ones included.
    pub async fn get_channel(&self, namespace: &str, id: &str) -> Result<Option<Channel>> {
        self.get_doc(&CHANNELS, namespace, id).await
    }

    /// The channels of a namespace, oldest first.
    pub async fn list_channels(&self, namespace: &str) -> Result<Vec<Channel>> {
        self.list_docs(&CHANNELS, namespace).await
    }

    pub async fn insert_rule(&self, namespace: &str, rule: &Rule) -> Result<()> {
        let doc = Doc::of(&rule.id, rule.created_at, rule.deleted_at);
        self.insert_doc(&RULES, namespace, doc, encode("rule", rule)?)
            .await
    }

    pub async fn update_rule(&self, namespace: &str, rule: &Rule) -> Result<()> {
        let doc = Doc::of(&rule.id, rule.created_at, rule.deleted_at);
        self.update_doc(&RULES, namespace, doc, encode("rule", rule)?)
            .await
    }

    /// A rule, deleted ones included.
    pub async fn get_rule(&self, namespace: &str, id: &str) -> Result<Option<Rule>> {
        self.get_doc(&RULES, namespace, id).await
    }

    /// The rules of a namespace, oldest first, deleted ones included.
    pub async fn list_rules(&self, namespace: &str) -> Result<Vec<Rule>> {
        self.list_docs(&RULES, namespace).await
    }

    async fn insert_doc(
        &self,
        t: &DocTable,
        namespace: &str,
        doc: Doc<'_>,
        json: String,
    ) -> Result<()> {
        sqlx::query(t.insert)
            .bind(doc.id)
            .bind(namespace)
            .bind(json)
            .bind(doc.created_at.timestamp_millis())
            .bind(doc.deleted_at.map(|t| t.timestamp_millis()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn update_doc(
        &self,
        t: &DocTable,
        namespace: &str,
        doc: Doc<'_>,
        json: String,
    ) -> Result<()> {
        sqlx::query(t.update)
            .bind(json)
            .bind(doc.deleted_at.map(|t| t.timestamp_millis()))
            .bind(namespace)
            .bind(doc.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_doc<T: for<'de> Deserialize<'de>>(
        &self,
        t: &DocTable,
        namespace: &str,
        id: &str,
    ) -> Result<Option<T>> {
        let row = sqlx::query(t.get)
            .bind(namespace)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| decode_row(t.name, &row)).transpose()
    }

    async fn list_docs<T: for<'de> Deserialize<'de>>(
        &self,
        t: &DocTable,
        namespace: &str,
    ) -> Result<Vec<T>> {
        let rows = sqlx::query(t.list)
            .bind(namespace)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| decode_row(t.name, row)).collect()
    }

    /// Every live (not deleted) rule of every namespace, for the in-memory rule cache.
    pub async fn all_live_rules(&self) -> Result<Vec<(String, Rule)>> {
        let rows = sqlx::query(
            "SELECT id, namespace, definition FROM notification_rules WHERE deleted_at IS NULL ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let namespace: String = row.try_get("namespace")?;
                Ok((namespace, decode_row("notification_rules", row)?))
            })
            .collect()
    }

    // ---- events and deliveries ----

    /// Stores an event and its deliveries in one transaction.
    pub async fn insert_event(&self, namespace: &str, event: &Event) -> Result<()> {
        self.insert_fired_event(namespace, event, None).await
    }

    /// Stores an event with its deliveries and, when it fired a balance threshold, records
    /// that threshold as the last fired for its key ([`Self::set_fired_threshold`]), all in one
    /// transaction: a threshold is never recorded as fired without its event, which would
    /// then never be sent.
    pub async fn insert_fired_event(
        &self,
        namespace: &str,
        event: &Event,
        fired: Option<(&str, &Threshold)>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if let Some((dedup_key, threshold)) = fired {
            set_fired_in(&mut tx, namespace, dedup_key, threshold, event.created_at).await?;
        }
        sqlx::query(
            "INSERT INTO notification_events (id, namespace, rule_id, created_at, definition) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&event.id)
        .bind(namespace)
        .bind(&event.rule_id)
        .bind(event.created_at.timestamp_millis())
        .bind(encode("event", event)?)
        .execute(&mut *tx)
        .await?;
        for delivery in &event.deliveries {
            sqlx::query(
                "INSERT INTO notification_deliveries (event_id, channel_id, namespace, state, definition) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&event.id)
            .bind(&delivery.channel_id)
            .bind(namespace)
            .bind(delivery.state.as_str())
            .bind(encode("delivery", delivery)?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Replaces the status of one delivery.
    pub async fn update_delivery(&self, event_id: &str, delivery: &Delivery) -> Result<()> {
        sqlx::query(
            "UPDATE notification_deliveries SET state = $1, definition = $2 WHERE event_id = $3 AND channel_id = $4",
        )
        .bind(delivery.state.as_str())
        .bind(encode("delivery", delivery)?)
        .bind(event_id)
        .bind(&delivery.channel_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An event with its deliveries.
    pub async fn get_event(&self, namespace: &str, id: &str) -> Result<Option<Event>> {
        let row = sqlx::query(
            "SELECT id, definition FROM notification_events WHERE namespace = $1 AND id = $2",
        )
        .bind(namespace)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut event: Event = decode_row("notification_events", &row)?;
        event.deliveries = self.deliveries_of(&event.id).await?;
        Ok(Some(event))
    }

    async fn deliveries_of(&self, event_id: &str) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT event_id AS id, definition FROM notification_deliveries WHERE event_id = $1 ORDER BY channel_id",
        )
        .bind(event_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| decode_row("notification_deliveries", row))
            .collect()
    }

    /// The events of a namespace the filter admits, oldest first.
    pub async fn list_events(&self, namespace: &str, filter: &EventFilter) -> Result<Vec<Event>> {
        let from = filter.from.map_or(i64::MIN, |t| t.timestamp_millis());
        let to = filter.to.map_or(i64::MAX, |t| t.timestamp_millis());
        let rows = sqlx::query(
            "SELECT id, definition FROM notification_events WHERE namespace = $1 AND created_at >= $2 AND created_at <= $3 ORDER BY created_at, id",
        )
        .bind(namespace)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let mut events = Vec::new();
        for row in &rows {
            let mut event: Event = decode_row("notification_events", row)?;
            if filter.from.is_some_and(|f| event.created_at < f)
                || filter.to.is_some_and(|t| event.created_at > t)
            {
                continue;
            }
            event.deliveries = self.deliveries_of(&event.id).await?;
            if filter.admits(&event) {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// Every delivery with an attempt still to make (all namespaces): resumed at startup.
    pub async fn open_deliveries(&self) -> Result<Vec<OpenDelivery>> {
        let rows = sqlx::query(
            "SELECT event_id, namespace, definition FROM notification_deliveries WHERE state IN ('PENDING', 'SENDING', 'RESENDING')",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let event_id: String = row.try_get("event_id")?;
                let text: String = row.try_get("definition")?;
                Ok(OpenDelivery {
                    namespace: row.try_get("namespace")?,
                    delivery: decode("notification_deliveries", &event_id, &text)?,
                    event_id,
                })
            })
            .collect()
    }

    // ---- fired thresholds ----

    /// Records the threshold last fired for a dedup key.
    pub async fn set_fired_threshold(
        &self,
        namespace: &str,
        dedup_key: &str,
        threshold: &Threshold,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        set_fired_in(&mut tx, namespace, dedup_key, threshold, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every fired threshold by dedup key.
    pub async fn fired_thresholds(&self) -> Result<Vec<(String, Threshold)>> {
        let rows = sqlx::query("SELECT dedup_key, threshold FROM notification_thresholds")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let key: String = row.try_get("dedup_key")?;
                let text: String = row.try_get("threshold")?;
                let threshold = decode("notification_thresholds", &key, &text)?;
                Ok((key, threshold))
            })
            .collect()
    }
}

fn decode_row<T: for<'de> Deserialize<'de>>(table: &'static str, row: &CatalogRow) -> Result<T> {
    let id: String = row.try_get("id")?;
    let text: String = row.try_get("definition")?;
    decode(table, &id, &text)
}

/// A decimal from a JSON number (or a numeric string), exactly.
fn decimal_from_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    use serde::de::Error as _;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => {
            metron_engine::decimal::from_json_number(&n).map_err(D::Error::custom)
        }
        serde_json::Value::String(s) => s.parse().map_err(D::Error::custom),
        other => Err(D::Error::custom(format!("expected a number, got {other}"))),
    }
}

/// [`Catalog::set_fired_threshold`] in the caller's write transaction.
async fn set_fired_in(
    tx: &mut Tx,
    namespace: &str,
    dedup_key: &str,
    threshold: &Threshold,
    at: DateTime<Utc>,
) -> Result<()> {
    let text = encode("threshold", threshold)?;
    sqlx::query(
            "INSERT INTO notification_thresholds (dedup_key, namespace, threshold, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (dedup_key) DO UPDATE SET threshold = excluded.threshold, updated_at = excluded.updated_at",
        )
        .bind(dedup_key)
        .bind(namespace)
        .bind(text)
        .bind(at.timestamp_millis())
        .execute(&mut **tx)
        .await?;
    // The same key's earlier periods are closed: keep one row per key, not one per
    // period ever seen. The key is `<prefix>/<period start>/<measureUsageFrom>`; a row
    // of the same prefix has exactly one `/` after it (a longer subject has more).
    if let Some((rest, _)) = dedup_key.rsplit_once('/')
        && let Some((prefix, _)) = rest.rsplit_once('/')
    {
        sqlx::query(
            "DELETE FROM notification_thresholds WHERE namespace = $1 AND dedup_key <> $2 \
                 AND dedup_key < $2 AND substr(dedup_key, 1, length($3) + 1) = $3 || '/' \
                 AND length(substr(dedup_key, length($3) + 2)) \
                     - length(replace(substr(dedup_key, length($3) + 2), '/', '')) = 1",
        )
        .bind(namespace)
        .bind(dedup_key)
        .bind(prefix)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    crate::catalog_test! {
        #[tokio::test]
        async fn channels_rules_events_and_thresholds_round_trip(db) {
            let catalog = db.open().await;
            let t = at("2025-01-01T00:00:00Z");
            let channel = Channel {
                id: "c1".into(),
                name: "hook".into(),
                disabled: false,
                url: "http://x".into(),
                custom_headers: BTreeMap::new(),
                signing_secret: "whsec_x".into(),
                metadata: None,
                created_at: t,
                updated_at: t,
                deleted_at: None,
            };
            catalog
                .insert_channel("ns", &channel)
                .await
                .expect("insert");
            assert_eq!(
                catalog.get_channel("ns", "c1").await.expect("get"),
                Some(channel.clone())
            );
            assert_eq!(catalog.get_channel("other", "c1").await.expect("get"), None);

            let threshold: Threshold =
                serde_json::from_str(r#"{"value": 0.1, "type": "PERCENT"}"#).expect("threshold");
            assert_eq!(threshold.value, Decimal::new(1, 1));
            assert_eq!(
                serde_json::to_string(&threshold).expect("json"),
                r#"{"value":0.1,"type":"PERCENT"}"#
            );
            let rule = Rule {
                id: "r1".into(),
                rule_type: RuleType::BalanceThreshold,
                name: "r".into(),
                disabled: false,
                channels: vec!["c1".into()],
                thresholds: vec![threshold],
                features: vec!["f".into()],
                metadata: None,
                created_at: t,
                updated_at: t,
                deleted_at: None,
            };
            catalog.insert_rule("ns", &rule).await.expect("insert rule");
            assert_eq!(
                catalog.all_live_rules().await.expect("rules"),
                vec![("ns".to_owned(), rule.clone())]
            );

            let event = Event {
                id: "e1".into(),
                event_type: RuleType::BalanceThreshold,
                created_at: t,
                rule_id: "r1".into(),
                payload: serde_json::json!({"id": "e1"}),
                annotations: BTreeMap::new(),
                feature_id: Some("fid".into()),
                feature_key: Some("f".into()),
                subject_key: Some("s".into()),
                deliveries: vec![Delivery {
                    channel_id: "c1".into(),
                    state: DeliveryState::Pending,
                    reason: String::new(),
                    updated_at: t,
                    next_attempt: Some(t),
                    attempts: Vec::new(),
                    failures: 0,
                }],
            };
            catalog
                .insert_event("ns", &event)
                .await
                .expect("insert event");
            assert_eq!(
                catalog.get_event("ns", "e1").await.expect("get"),
                Some(event.clone())
            );
            assert_eq!(catalog.open_deliveries().await.expect("open").len(), 1);
            let mut done = event.deliveries[0].clone();
            done.state = DeliveryState::Success;
            catalog.update_delivery("e1", &done).await.expect("update");
            assert!(catalog.open_deliveries().await.expect("open").is_empty());

            let filter = |f: EventFilter| {
                let catalog = catalog.clone();
                async move { catalog.list_events("ns", &f).await.expect("list").len() }
            };
            assert_eq!(filter(EventFilter::default()).await, 1);
            assert_eq!(
                filter(EventFilter {
                    features: vec!["fid".into()],
                    ..Default::default()
                })
                .await,
                1
            );
            assert_eq!(
                filter(EventFilter {
                    subjects: vec!["z".into()],
                    ..Default::default()
                })
                .await,
                0
            );
            assert_eq!(
                filter(EventFilter {
                    channels: vec!["c1".into()],
                    ..Default::default()
                })
                .await,
                1
            );
            assert_eq!(
                filter(EventFilter {
                    from: Some(at("2025-01-02T00:00:00Z")),
                    ..Default::default()
                })
                .await,
                0
            );

            catalog
                .set_fired_threshold("ns", "k", &threshold, t)
                .await
                .expect("fire");
            let other = Threshold {
                value: Decimal::ONE,
                kind: ThresholdType::BalanceValue,
            };
            catalog
                .set_fired_threshold("ns", "k", &other, t)
                .await
                .expect("fire again");
            assert_eq!(
                catalog.fired_thresholds().await.expect("fired"),
                vec![("k".to_owned(), other)]
            );

            // A threshold is recorded as fired only with its event: when the event cannot be
            // stored (here: its id is taken), neither is; with a new id, both are.
            let again = catalog
                .insert_fired_event("ns", &event, Some(("k2", &threshold)))
                .await;
            assert!(again.is_err(), "{again:?}");
            assert_eq!(
                catalog.fired_thresholds().await.expect("fired"),
                vec![("k".to_owned(), other)],
                "no threshold without its event"
            );
            let second = Event {
                id: "e2".into(),
                ..event.clone()
            };
            catalog
                .insert_fired_event("ns", &second, Some(("k2", &threshold)))
                .await
                .expect("fired with its event");
            assert_eq!(
                catalog.fired_thresholds().await.expect("fired"),
                vec![("k".to_owned(), other), ("k2".to_owned(), threshold)]
            );
            assert_eq!(
                catalog.get_event("ns", "e2").await.expect("get"),
                Some(second)
            );

            // A later period of the same key replaces the earlier ones; a subject that only
            // starts with the same text (`a/b` vs `a`) is another key and stays.
            let key = |subject: &str, period: &str| {
                format!("ns/r/balance/e/f/{subject}/{period}T00:00:00.000Z/2024-01-01T00:00:00.000Z")
            };
            for k in [
                key("a", "2025-01-01"),
                key("a/b", "2025-01-01"),
                key("a", "2025-02-01"),
            ] {
                catalog
                    .set_fired_threshold("ns", &k, &threshold, t)
                    .await
                    .expect("fire");
            }
            let mut keys: Vec<String> = catalog
                .fired_thresholds()
                .await
                .expect("fired")
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            keys.sort();
            assert_eq!(
                keys,
                vec![
                    "k".to_owned(),
                    "k2".to_owned(),
                    key("a", "2025-02-01"),
                    key("a/b", "2025-01-01")
                ]
            );
        }
    }
}
