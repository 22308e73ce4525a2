//! Live balances: one logical actor per active customer, held as a row of a sharded
//! table ([`table`]).
//!
//! A customer is activated on demand (an access check, a value read, an entitlement
//! change). Activation loads the customer's entitlements, grants and resets from the
//! catalog, subscribes the customer at every partition that owns one of its subjects
//! (atomically with a read of the events that partition holds), and folds the
//! customer's past events into one minute series per metered entitlement. From then
//! on the partitions deliver the customer's usage, one call per batch, and
//! each [`Ledger`] answers `value` from memory: the credit engine runs from the state
//! at the current usage period's start over the series, and its answer is cached
//! until usage or time moves. An idle customer leaves memory (passivation); its state is
//! the catalog plus the events, so the next activation rebuilds it exactly.

mod ledger;
pub mod pack;
mod service;
mod table;
pub mod views;

pub use ledger::{Inputs, Ledger, LedgerError, Series, SeriesUsage, ValueAt, fold_sample};
pub use service::{
    Entitlements, EntitlementsConfig, Entry, Error as EntitlementsError, Loaded, engine_grant,
    engine_inputs, expiration_unit, recurrence, subject_key,
};
pub use table::{Access, ValueAnswer};

use crate::attribution::{Attribution, CustomerRef};
use metron_engine::aggregate::SampleValue;
use metron_engine::event::CloudEvent;
use metron_engine::filter::StringFilter;
use metron_engine::meter::{CompiledMeter, Extract};
use std::sync::Arc;

/// Where a partition delivers a subscribed customer's usage (one call per customer per
/// batch, with the subscription's generation). `false`: the subscription is no longer the
/// customer's live one (the customer left memory or loaded again under a newer
/// subscription); the partition drops it.
pub type UsageSink = Arc<dyn Fn(&CustomerKey, u64, Vec<UsageSample>) -> bool + Send + Sync>;

/// A customer id as the live table, the entitled set and the subscriptions key it: its
/// 16 bytes when it is a canonical ULID (every id Metron gives out), so that holding a
/// customer costs no allocation for its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CustomerKey {
    Ulid([u8; 16]),
    Text(Box<str>),
}

impl CustomerKey {
    pub fn of(customer_id: &str) -> CustomerKey {
        // Canonical: 26 upper-case Crockford characters, the first at most '7'.
        let bytes = customer_id.as_bytes();
        let canonical = bytes.len() == 26
            && bytes[0] <= b'7'
            && bytes.iter().all(|b| {
                matches!(b, b'0'..=b'9' | b'A'..=b'H' | b'J' | b'K' | b'M' | b'N' | b'P'..=b'T' | b'V'..=b'Z')
            });
        match ulid::Ulid::from_string(customer_id) {
            Ok(ulid) if canonical => CustomerKey::Ulid(ulid.to_bytes()),
            _ => CustomerKey::Text(customer_id.into()),
        }
    }

    pub fn id(&self) -> String {
        match self {
            CustomerKey::Ulid(bytes) => ulid::Ulid::from_bytes(*bytes).to_string(),
            CustomerKey::Text(text) => text.to_string(),
        }
    }
}

/// One event's contribution to one metered entitlement.
#[derive(Debug, Clone)]
pub struct UsageSample {
    pub ledger: u32,
    pub time_ms: i64,
    pub value: SampleValue,
}

/// Which events count for one metered entitlement: its feature's meter and group-by
/// filters (shared by every customer entitled to the feature).
#[derive(Debug, Clone)]
pub struct Matcher {
    pub ledger: u32,
    pub shape: Arc<MatchShape>,
}

/// A feature's meter, compiled, and its group-by filters.
#[derive(Debug)]
pub struct MatchShape {
    pub compiled: CompiledMeter,
    /// (index into the meter's group-by values, filter)
    pub filters: Vec<(Option<usize>, StringFilter)>,
}

impl Matcher {
    /// The sample this event brings to the entitlement, if any.
    pub fn sample(&self, event: &CloudEvent) -> Option<UsageSample> {
        let shape = &self.shape;
        if !shape.compiled.matches(event) {
            return None;
        }
        let extract = shape.compiled.extract_data(event.data.as_ref());
        self.admit(extract, event.time.timestamp_millis())
    }

    /// [`Self::sample`] of a stream record's type, time and data text.
    pub fn sample_at(
        &self,
        event_type: &str,
        time_ms: i64,
        data: Option<&str>,
    ) -> Option<UsageSample> {
        if !self.shape.compiled.matches_at(event_type, time_ms) {
            return None;
        }
        self.admit(self.shape.compiled.extract_text(data), time_ms)
    }

    fn admit(&self, extract: Extract, time_ms: i64) -> Option<UsageSample> {
        let shape = &self.shape;
        let Extract::Sample(sample) = extract else {
            return None;
        };
        let admitted = shape.filters.iter().all(|(index, filter)| {
            filter.matches(index.and_then(|i| sample.group.get(i)).map(String::as_str))
        });
        admitted.then_some(UsageSample {
            ledger: self.ledger,
            time_ms,
            value: sample.value,
        })
    }
}

/// A customer's subscription at the partitions: what `Subscribe` hands them (each keeps
/// it inline, one entry per subject).
pub struct Subscription {
    pub namespace: Arc<str>,
    /// Unique per activation: usage routed under an older subscription was already
    /// read by the newer one's load.
    pub generation: u64,
    /// The customer's subjects as the load read them (usually the attribution index's
    /// own record, shared).
    pub who: CustomerRef,
    /// Shared by every customer with the same entitlement layout.
    pub matchers: Arc<Vec<Matcher>>,
    pub sink: UsageSink,
}

impl Subscription {
    pub fn subjects(&self) -> impl Iterator<Item = &str> {
        self.who.subjects()
    }
}

/// What a partition calls when usage arrives for a customer that has no live actor.
pub type ActivateHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// How partitions activate customers on demand: usage of a subject that belongs to a
/// customer without a subscription asks for that customer's actor (the entitlement
/// service decides whether the customer has anything to track).
#[derive(Clone)]
pub struct Activation {
    attribution: Attribution,
    hook: Arc<parking_lot::RwLock<Option<ActivateHook>>>,
}

impl Activation {
    pub fn new(attribution: Attribution) -> Self {
        Self {
            attribution,
            hook: Arc::default(),
        }
    }

    /// Installs the hook (the entitlement service, once it runs).
    pub fn arm(&self, hook: ActivateHook) {
        *self.hook.write() = Some(hook);
    }

    /// The customer an event's subject belongs to, when activation is armed.
    pub fn customer_of(&self, namespace: &str, subject: &str) -> Option<String> {
        if self.hook.read().is_none() {
            return None;
        }
        self.attribution
            .customer_of(namespace, subject)
            .map(|c| c.id().to_string())
    }

    pub fn request(&self, namespace: &str, customer_id: &str) {
        if let Some(hook) = self.hook.read().clone() {
            hook(namespace, customer_id);
        }
    }
}
