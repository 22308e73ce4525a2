// TEMPORARY local stand-in (not committed) until the notify branch merges.
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
#[derive(Clone, Default)]
pub struct Notifier;
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
    pub entitlement: serde_json::Value,
    pub feature: serde_json::Value,
    pub subject: serde_json::Value,
    pub customer: Option<serde_json::Value>,
    pub value: serde_json::Value,
}
pub struct ResetObservation {
    pub namespace: String,
    pub entitlement_id: String,
    pub feature_id: String,
    pub feature_key: String,
    pub subject_key: String,
    pub customer_id: Option<String>,
    pub reset_at: DateTime<Utc>,
    pub entitlement: serde_json::Value,
    pub feature: serde_json::Value,
    pub subject: serde_json::Value,
    pub customer: Option<serde_json::Value>,
    pub value: serde_json::Value,
}
impl Notifier {
    pub fn balance_observed(&self, _o: BalanceObservation) {}
    pub fn reset_observed(&self, _o: ResetObservation) {}
}
pub static NOTIFIER: Notifier = Notifier;
