//! What the burn-down reads (grants, resets, the entitlement, a usage source) and what it
//! returns (a resumable [`State`], burn [`Segment`]s, a [`Value`]).

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::time::{Recurrence, truncate_minute};

/// A grant of credits to an entitlement, immutable except for voiding and deletion.
/// Every time is read truncated to the minute.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    /// ULID text; ties in the burn order are broken by id.
    pub id: String,
    pub amount: Decimal,
    /// Lower burns first.
    pub priority: u8,
    pub effective_at: DateTime<Utc>,
    /// Exclusive.
    pub expires_at: Option<DateTime<Utc>>,
    /// Inactive from `voided_at`.
    pub voided_at: Option<DateTime<Utc>>,
    /// Inactive from `deleted_at`.
    pub deleted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub max_rollover: Decimal,
    pub min_rollover: Decimal,
    pub recurrence: Option<Recurrence>,
}

/// An explicit (manual) usage reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reset {
    pub at: DateTime<Utc>,
    pub preserve_overage: bool,
    pub retain_anchor: bool,
}

/// How a phase's usage reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageKind {
    /// SUM, COUNT, ...: usage adds up over time.
    Additive,
    /// LATEST meters: each phase every active grant restarts at `amount` (grants act as limits).
    Latest,
}

/// The metered entitlement's settings the burn-down needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entitlement {
    pub measure_usage_from: DateTime<Utc>,
    /// As created (its anchor); a manual reset without retain_anchor re-anchors at the reset time from then on.
    pub usage_period: Recurrence,
    /// Used by the automatic period resets.
    pub preserve_overage_at_reset: bool,
    pub kind: UsageKind,
}

/// Usage of the feature for the customer; implementors answer for any minute-aligned window.
pub trait UsageSource {
    type Error;
    /// Usage of the feature for the customer in [from, to), both minute-aligned. For Additive kinds it is the
    /// aggregate of the window (SUM, COUNT, ...); for Latest the latest value in the window (0 if none).
    fn usage(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Decimal, Self::Error>;
}

/// The engine state at a phase boundary: enough to continue from there without looking back.
/// Every event at `at` (reset, activation, recurrence) is already applied.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub at: DateTime<Utc>,
    /// Per grant id that ever became active (sorted by id), including 0 balances.
    pub balances: Vec<(String, Decimal)>,
    pub overage: Decimal,
    /// Usage since the current usage period's start (or measure_usage_from).
    pub usage_in_period: Decimal,
    /// Usage covered by grants since the period start (including overage paid at the reset).
    pub grant_usage_in_period: Decimal,
    pub period_start: DateTime<Utc>,
    /// Current usage-period anchor (changes on a non-retaining reset).
    pub period_anchor: DateTime<Utc>,
}

/// One burn phase: the burndownHistory entries.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub usage: Decimal,
    /// Overage at the end of the phase.
    pub overage: Decimal,
    pub balance_at_start: Decimal,
    pub grant_balances_at_start: Vec<(String, Decimal)>,
    pub balance_at_end: Decimal,
    pub grant_balances_at_end: Vec<(String, Decimal)>,
    pub grant_usages: Vec<(String, Decimal)>,
    pub reset_at_start: bool,
}

/// What [`super::run`] returns: the state at `until` and every phase burnt on the way.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub state: State,
    pub segments: Vec<Segment>,
}

/// The entitlement value at `state.at`.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub balance: Decimal,
    pub usage: Decimal,
    pub overage: Decimal,
    pub total_available_grant_amount: Decimal,
    /// Active grants at t only, sorted by id.
    pub grant_balances: Vec<(String, Decimal)>,
}

impl Grant {
    /// When the grant stops being active: the earliest of expiry, void and deletion,
    /// never before it became effective.
    pub fn active_until(&self) -> Option<DateTime<Utc>> {
        let end = [self.expires_at, self.voided_at, self.deleted_at]
            .into_iter()
            .flatten()
            .map(truncate_minute)
            .min()?;
        Some(end.max(truncate_minute(self.effective_at)))
    }

    /// Active in `[effective_at, min(expires_at, voided_at, deleted_at))`, minute-truncated.
    pub fn active_at(&self, t: DateTime<Utc>) -> bool {
        truncate_minute(self.effective_at) <= t && self.active_until().is_none_or(|end| t < end)
    }

    /// The burn order: priority asc, then expiry asc (no expiry last), then creation, then id.
    pub fn burn_order(&self, other: &Grant) -> Ordering {
        let expiry = |g: &Grant| g.expires_at.map(|t| t.timestamp());
        self.priority
            .cmp(&other.priority)
            .then_with(|| match (expiry(self), expiry(other)) {
                (Some(a), Some(b)) => a.cmp(&b),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            })
            .then_with(|| self.created_at.cmp(&other.created_at))
            .then_with(|| self.id.cmp(&other.id))
    }

    /// The balance carried over a reset.
    pub fn rollover(&self, balance: Decimal) -> Decimal {
        self.max_rollover.min(self.min_rollover.max(balance))
    }
}

impl Outcome {
    /// balances of grants active at state.at summed; overage; usage_in_period; total_available = grant_usage_in_period + balance
    pub fn value(&self, grants: &[Grant]) -> Value {
        let state = &self.state;
        let grant_balances: Vec<(String, Decimal)> = state
            .balances
            .iter()
            .filter(|(id, _)| grants.iter().any(|g| &g.id == id && g.active_at(state.at)))
            .cloned()
            .collect();
        let balance = grant_balances.iter().map(|(_, b)| *b).sum::<Decimal>();
        Value {
            balance,
            usage: state.usage_in_period,
            overage: state.overage,
            total_available_grant_amount: state.grant_usage_in_period + balance,
            grant_balances,
        }
    }
}
