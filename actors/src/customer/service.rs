//! `Entitlements`: the API's handle on the live customers — activation, passivation,
//! loading a customer's entitlements, and exact computations from the events for
//! times before an actor's live series (a past `?time=`, history).

use super::ledger::{Inputs, Ledger, Series, SeriesUsage, ValueAt, fold_sample};
use super::table::{self, Access, Table, ValueAnswer};
use super::views::{self, Flavor, Owner};
use super::{CustomerKey, MatchShape, Matcher, Subscription, UsageSink};
use crate::notification::{BalanceObservation, Notifier, Payload, PayloadSource, ResetObservation};
use crate::pipeline::{self, Pipeline};
use chrono::{DateTime, Utc};
use metron_engine::aggregate::Aggregation;
use metron_engine::credit::{
    self, Entitlement, ExpirationUnit, Grant, Interval, Outcome, Recurrence, Reset, UsageKind,
    ceil_minute,
};
use metron_engine::event::IngestedEvent;
use metron_engine::meter::Meter;
use metron_storage::catalog;
use metron_storage::customers::Customer;
use metron_storage::entitlements::{
    EntitlementKind, EntitlementRecord, GrantRecord, PeriodRecord, ResetRecord,
};
use metron_storage::features::Feature;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("customer {0} not found")]
    CustomerNotFound(String),
    #[error("feature {0} not found")]
    FeatureNotFound(String),
    #[error("feature {feature} has no usable meter: {reason}")]
    Meter { feature: String, reason: String },
    #[error("entitlement {id} is invalid: {reason}")]
    Invalid { id: String, reason: String },
    #[error(transparent)]
    Catalog(#[from] catalog::Error),
    #[error(transparent)]
    Pipeline(#[from] pipeline::Error),
    #[error("customer: {0}")]
    Actor(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct EntitlementsConfig {
    /// A customer with no reads or usage for this long leaves memory (its state is
    /// rebuilt on demand).
    pub idle_after: Duration,
    /// A customer with no reads or usage for this long is packed into a compact byte
    /// string (unpacked, in microseconds, by its next read or usage).
    pub pack_after: Duration,
    /// The customers' share of the memory budget (estimated bytes; 0: no share): past
    /// it, customers are packed and the least recently used passivated, checked every
    /// [`SHED_EVERY`].
    pub memory_bytes: usize,
}

impl Default for EntitlementsConfig {
    fn default() -> Self {
        Self {
            idle_after: Duration::from_secs(600),
            pack_after: Duration::from_secs(30),
            memory_bytes: 0,
        }
    }
}

/// How often the customers' estimated bytes are checked against their share.
pub const SHED_EVERY: Duration = Duration::from_secs(2);

impl Loaded {
    /// Appends the customer as one byte string ([`super::pack`]). Its entries' features
    /// are shared, so only their numbers in `features` are written.
    pub(super) fn pack_into(
        &self,
        w: &mut super::pack::Writer,
        mut features: impl FnMut(&Arc<Feature>) -> u64,
    ) {
        use super::pack::Writer;
        // No customer id: the row's key has it. The subject key is nearly always one of
        // the subjects, so it is written as its position (1-based; 0: the text follows).
        w.seq(self.subjects.iter(), |w, s| w.str(s));
        match self.subjects.iter().position(|s| *s == *self.subject_key) {
            Some(i) => w.u64(i as u64 + 1),
            None => {
                w.u64(0);
                w.str(&self.subject_key);
            }
        }
        w.seq(self.entries.iter(), |w, e| {
            let head = &e.head;
            w.id(&head.id);
            w.u64(e.feature.as_ref().map_or(0, |f| features(f) + 1));
            // The key is the feature's unless the feature is gone.
            w.opt(
                (e.feature.as_ref().map(|f| f.key.as_str()) != Some(&*head.feature_key))
                    .then_some(&*head.feature_key),
                Writer::str,
            );
            w.u8(match head.kind {
                EntitlementKind::Metered => 0,
                EntitlementKind::Boolean => 1,
                EntitlementKind::Static => 2,
            });
            w.bool(head.is_soft_limit);
            w.opt(head.active_from, Writer::time);
            w.opt(head.active_to, Writer::time);
            w.opt(head.deleted_at, Writer::time);
            w.opt(head.config.as_deref(), Writer::str);
            w.opt(e.broken.as_deref(), Writer::str);
            w.opt(e.ledger.as_deref(), |w, l| l.pack(w));
        });
    }

    /// Customer `customer_id` from [`Loaded::pack_into`]'s bytes; `features` gives back a
    /// feature by its number.
    pub(super) fn unpack(
        customer_id: &str,
        bytes: &[u8],
        features: impl Fn(u64) -> Option<Arc<Feature>>,
    ) -> Result<Loaded, super::pack::PackError> {
        use super::pack::{PackError, Reader};
        let mut r = Reader::new(bytes);
        let customer_id = customer_id.into();
        let subjects = r.seq(|r| r.str().map(str::to_owned))?;
        let subject_key = match r.u64()? {
            0 => r.str()?.into(),
            n => usize::try_from(n - 1)
                .ok()
                .and_then(|i| subjects.get(i))
                .ok_or(PackError("subject key"))?
                .as_str()
                .into(),
        };
        let entries = r.seq(|r| {
            let id = r.id()?.into();
            let feature = match r.u64()? {
                0 => None,
                n => Some(features(n - 1).ok_or(PackError("feature number"))?),
            };
            let feature_key = match r.opt(|r| r.str().map(Box::<str>::from))? {
                Some(key) => key,
                None => feature
                    .as_ref()
                    .map(|f| f.key.as_str().into())
                    .ok_or(PackError("feature key"))?,
            };
            let head = Head {
                id,
                feature_key,
                kind: match r.u8()? {
                    0 => EntitlementKind::Metered,
                    1 => EntitlementKind::Boolean,
                    2 => EntitlementKind::Static,
                    _ => return Err(PackError("entitlement kind")),
                },
                is_soft_limit: r.bool()?,
                active_from: r.opt(Reader::time)?,
                active_to: r.opt(Reader::time)?,
                deleted_at: r.opt(Reader::time)?,
                config: r.opt(|r| r.str().map(Into::into))?,
            };
            let broken = r.opt(|r| r.str().map(Into::into))?;
            let ledger = r.opt(|r| Ledger::unpack(r).map(Box::new))?;
            Ok(Entry {
                head,
                feature,
                ledger,
                broken,
            })
        })?;
        if !r.is_empty() {
            return Err(PackError("trailing bytes"));
        }
        Ok(Loaded {
            customer_id,
            subject_key,
            subjects,
            entries,
        })
    }

    /// The subjects of a packed customer (the start of its bytes).
    pub(super) fn packed_subjects(bytes: &[u8]) -> Vec<String> {
        let mut r = super::pack::Reader::new(bytes);
        r.seq(|r| r.str().map(str::to_owned)).unwrap_or_default()
    }
}

/// What a live customer keeps of an entitlement record: what a check reads. The full
/// record stays in the catalog (read when a notification payload or a past value needs it).
#[derive(Debug, Clone)]
pub struct Head {
    pub id: Box<str>,
    pub feature_key: Box<str>,
    pub kind: EntitlementKind,
    pub is_soft_limit: bool,
    pub active_from: Option<DateTime<Utc>>,
    pub active_to: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// A static entitlement's config.
    pub config: Option<Box<str>>,
}

impl Head {
    pub fn of(record: &EntitlementRecord) -> Self {
        Self {
            id: record.id.as_str().into(),
            feature_key: record.feature_key.as_str().into(),
            kind: record.kind,
            is_soft_limit: record.is_soft_limit,
            active_from: record.active_from,
            active_to: record.active_to,
            deleted_at: record.deleted_at,
            config: record.config.as_deref().map(Into::into),
        }
    }

    /// As [`EntitlementRecord::active_at`].
    pub fn active_at(&self, t: DateTime<Utc>) -> bool {
        self.active_from.is_none_or(|from| t >= from)
            && self.active_to.is_none_or(|to| t < to)
            && self.deleted_at.is_none_or(|d| t < d)
    }
}

/// One entitlement of a loaded customer.
pub struct Entry {
    pub head: Head,
    /// Shared by every customer entitled to the feature.
    pub feature: Option<Arc<Feature>>,
    pub ledger: Option<Box<Ledger>>,
    /// Why this entitlement cannot be evaluated, if it cannot.
    pub broken: Option<Box<str>>,
}

/// A customer as its row in the live table holds it.
pub struct Loaded {
    pub customer_id: Box<str>,
    /// The subject key its read models and notifications show.
    pub subject_key: Box<str>,
    pub subjects: Vec<String>,
    pub entries: Vec<Entry>,
}

impl Loaded {
    /// Estimated resident bytes of the customer: its strings, entries and ledgers (the
    /// features are shared and not counted).
    pub fn size_bytes(&self) -> usize {
        const MALLOC_OVERHEAD: usize = 16;
        const HEAD_STRINGS: usize = 256;
        std::mem::size_of::<Self>()
            + self.customer_id.len()
            + self.subject_key.len()
            + self
                .subjects
                .iter()
                .map(|s| s.len() + std::mem::size_of::<String>() + MALLOC_OVERHEAD)
                .sum::<usize>()
            + self
                .entries
                .iter()
                .map(|e| {
                    std::mem::size_of::<Entry>()
                        + HEAD_STRINGS
                        + e.ledger
                            .as_ref()
                            .map_or(0, |l| l.size_bytes() + MALLOC_OVERHEAD)
                })
                .sum::<usize>()
    }

    /// An entitlement by id, else by feature key (the one active at `at`, else the newest).
    pub fn find(&self, id_or_feature_key: &str, at: DateTime<Utc>) -> Option<usize> {
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| &*e.head.id == id_or_feature_key)
        {
            return Some(i);
        }
        let of_feature = || {
            self.entries
                .iter()
                .enumerate()
                .filter(|(_, e)| &*e.head.feature_key == id_or_feature_key)
        };
        of_feature()
            .find(|(_, e)| e.head.active_at(at))
            .or_else(|| of_feature().next_back())
            .map(|(i, _)| i)
    }
}

#[derive(Clone)]
pub struct Entitlements {
    inner: Arc<Inner>,
}

struct Inner {
    pipeline: Pipeline,
    config: EntitlementsConfig,
    table: Table,
    /// Where the partitions deliver usage (into `table`).
    sink: UsageSink,
    /// Customers with live entitlements: usage for them activates them.
    entitled: parking_lot::RwLock<HashMap<String, HashSet<CustomerKey>>>,
    activations: AtomicU64,
    value_reads: AtomicU64,
    /// The customers' estimated bytes at the last check against their share.
    customer_bytes: AtomicU64,
    /// Features and match shapes shared by every loaded customer (one copy per feature
    /// version, not one per customer).
    shared: parking_lot::Mutex<Shared>,
    /// Until the pipeline has caught up with the log after its start: the customers whose
    /// balances moved meanwhile, observed once it has (`None` from then on). A balance seen
    /// halfway through the replay is lower than the one the notifier last fired from, and
    /// would fire thresholds again ([`Entitlements::observe`]).
    deferred: parking_lot::Mutex<Option<HashSet<String>>>,
}

#[derive(Default)]
struct Shared {
    features: HashMap<String, Arc<Feature>>,
    /// By feature id.
    shapes: HashMap<String, SharedShape>,
    /// Matcher lists by layout: (ledger, shape) pairs, the shapes by address (each
    /// list holds its shapes, so an address is not reused while its entry lives).
    matchers: HashMap<Vec<(u32, usize)>, Arc<Vec<Matcher>>>,
}

/// Matcher layouts kept before the cache starts afresh.
const MATCHER_LAYOUTS: usize = 4096;

/// A shape and the versions it was compiled from.
struct SharedShape {
    feature_updated_at: DateTime<Utc>,
    meter_id: String,
    meter_updated_at: DateTime<Utc>,
    shape: Arc<MatchShape>,
}

impl Entitlements {
    /// Starts the service: customers with entitlements become activatable by usage.
    pub async fn start(pipeline: Pipeline, config: EntitlementsConfig) -> Result<Self> {
        let namespace = pipeline.namespace().to_owned();
        let entitled = pipeline.catalog().entitled_customers(&namespace).await?;
        let this = Self::new(pipeline, config);
        this.inner
            .entitled
            .write()
            .entry(namespace)
            .or_default()
            .extend(entitled.iter().map(|id| CustomerKey::of(id)));
        let weak = Arc::downgrade(&this.inner);
        this.inner.pipeline.activation().arm(Arc::new(
            move |namespace: &str, customer_id: &str| {
                if let Some(inner) = weak.upgrade() {
                    let entitled = inner
                        .entitled
                        .read()
                        .get(namespace)
                        .is_some_and(|ids| ids.contains(&CustomerKey::of(customer_id)));
                    if entitled {
                        let this = Entitlements { inner };
                        this.inner.table.ensure(&this, namespace, customer_id);
                    }
                }
            },
        ));
        this.spawn_sweeper();
        this.spawn_deferred_observer();
        Ok(this)
    }

    /// Once the pipeline has caught up, observes the balances of the customers whose usage
    /// moved during the replay (see [`Inner::deferred`]).
    fn spawn_deferred_observer(&self) {
        let this = self.clone();
        self.spawn_task(async move {
            if this.inner.pipeline.health().wait_ready().await.is_err() {
                return;
            }
            let Some(customers) = this.inner.deferred.lock().take() else {
                return;
            };
            if !customers.is_empty() {
                tracing::debug!(
                    customers = customers.len(),
                    "Observing the balances that moved during the replay."
                );
            }
            for customer_id in customers {
                this.inner.table.observe_live(&this, &customer_id);
            }
        });
    }

    fn new(pipeline: Pipeline, config: EntitlementsConfig) -> Self {
        let this = Self {
            inner: Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
                let weak = weak.clone();
                let sink: UsageSink =
                    Arc::new(move |customer: &CustomerKey, generation: u64, samples| {
                        let Some(inner) = weak.upgrade() else {
                            return false;
                        };
                        let this = Entitlements { inner };
                        this.inner
                            .table
                            .deliver(&this, customer, generation, samples)
                    });
                Inner {
                    pipeline,
                    config,
                    table: Table::new(),
                    sink,
                    entitled: parking_lot::RwLock::new(HashMap::new()),
                    activations: AtomicU64::new(0),
                    value_reads: AtomicU64::new(0),
                    customer_bytes: AtomicU64::new(0),
                    shared: parking_lot::Mutex::new(Shared::default()),
                    deferred: parking_lot::Mutex::new(Some(HashSet::new())),
                }
            }),
        };
        // A customer's subjects changed: it reloads its subscription if it is in
        // memory; after a full reload every customer in memory does.
        let weak = Arc::downgrade(&this.inner);
        this.inner
            .pipeline
            .attribution()
            .on_change(Box::new(move |changed| {
                if let Some(inner) = weak.upgrade() {
                    let this = Entitlements { inner };
                    let ids = match changed {
                        Some((_, id)) => vec![id.to_owned()],
                        None => this.inner.table.live_ids(),
                    };
                    for id in ids {
                        this.inner.table.reload_if_live(&this, &id);
                    }
                }
            }));
        this
    }

    pub(super) fn table(&self) -> &Table {
        &self.inner.table
    }

    /// Runs a task of the service (loads, the passivation sweep) on the pipeline's
    /// arbiters.
    pub(super) fn spawn_task(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.pipeline.arbiter().spawn(task);
    }

    /// Passivation: customers idle for `idleAfter` leave memory.
    fn spawn_sweeper(&self) {
        let idle = self.inner.config.idle_after;
        let pack = self.inner.config.pack_after;
        let budget = self.inner.config.memory_bytes;
        let every = idle
            .min(pack)
            .min(Duration::from_secs(60))
            .max(Duration::from_millis(100));
        let tick = if budget > 0 {
            every.min(SHED_EVERY)
        } else {
            every
        };
        let weak = Arc::downgrade(&self.inner);
        self.spawn_task(async move {
            let mut last_sweep = std::time::Instant::now();
            loop {
                tokio::time::sleep(tick).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let sweep_due = last_sweep.elapsed() >= every;
                if sweep_due {
                    last_sweep = std::time::Instant::now();
                }
                // The sweep (packing thousands of rows) and the trim are long CPU work: on a
                // blocking thread, never on the Arbiter that runs actors.
                let work = inner.clone();
                let swept = tokio::task::spawn_blocking(move || {
                    let started = std::time::Instant::now();
                    let (mut gone, mut packed) = if sweep_due {
                        work.table
                            .sweep(pack.as_millis() as u64, idle.as_millis() as u64)
                    } else {
                        (Vec::new(), 0)
                    };
                    if budget > 0 {
                        let (shed, shed_packed, before, after) = work.table.shed(budget);
                        work.customer_bytes.store(after as u64, Ordering::Relaxed);
                        if before > budget {
                            tracing::warn!(
                                before,
                                after,
                                budget,
                                packed = shed_packed,
                                passivated = shed.len(),
                                "Customers passed their memory share: packed and passivated the least recently used."
                            );
                        }
                        gone.extend(shed);
                        packed += shed_packed;
                    }
                    let swept = started.elapsed();
                    // Trimming walks the allocator's arenas (other threads' allocations
                    // wait): worth it when a sweep freed much, not for a few rows.
                    let trimmed = (gone.len() + packed >= RELEASE_AFTER_ROWS).then(|| {
                        let trimming = std::time::Instant::now();
                        crate::memory::release_freed_memory();
                        trimming.elapsed()
                    });
                    (gone, packed, swept, trimmed)
                })
                .await;
                let Ok((gone, packed, swept, trimmed)) = swept else {
                    continue;
                };
                let passivated = gone.len();
                for (namespace, customer_id, generation, subjects) in gone {
                    inner
                        .pipeline
                        .unsubscribe(&namespace, &customer_id, generation, subjects);
                }
                if let Some(trim) = trimmed {
                    tracing::info!(
                        packed,
                        passivated,
                        sweep_ms = swept.as_secs_f64() * 1e3,
                        trim_ms = trim.as_secs_f64() * 1e3,
                        "customers packed and passivated; freed memory handed back"
                    );
                } else if packed + passivated > 0 {
                    tracing::debug!(
                        packed,
                        passivated,
                        sweep_ms = swept.as_secs_f64() * 1e3,
                        "customers packed and passivated"
                    );
                }
            }
        });
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }

    pub fn idle_after(&self) -> Duration {
        self.inner.config.idle_after
    }

    /// Customers in memory (live balances).
    pub fn active_customers(&self) -> usize {
        self.inner.table.len()
    }

    /// Prometheus text of the live customers.
    pub fn metrics_text(&self) -> String {
        let (packed, packed_bytes) = self.inner.table.packed();
        format!(
            "# HELP metron_customer_actors Customers in memory (live balances).\n\
             # TYPE metron_customer_actors gauge\n\
             metron_customer_actors {}\n\
             # HELP metron_customers_packed Customers in memory packed (at rest).\n\
             # TYPE metron_customers_packed gauge\n\
             metron_customers_packed {}\n\
             # HELP metron_customers_packed_bytes Bytes of the packed customers' arenas.\n\
             # TYPE metron_customers_packed_bytes gauge\n\
             metron_customers_packed_bytes {}\n\
             # HELP metron_customer_bytes Estimated bytes of the customers in memory at the last check against their share (0 without a share).\n\
             # TYPE metron_customer_bytes gauge\n\
             metron_customer_bytes {}\n\
             # HELP metron_customer_activations_total Customer loads (on a read, an entitlement change or usage).\n\
             # TYPE metron_customer_activations_total counter\n\
             metron_customer_activations_total {}\n\
             # HELP metron_entitlement_value_reads_total Entitlement values answered.\n\
             # TYPE metron_entitlement_value_reads_total counter\n\
             metron_entitlement_value_reads_total {}\n",
            self.active_customers(),
            packed,
            packed_bytes,
            self.inner.customer_bytes.load(Ordering::Relaxed),
            self.inner.activations.load(Ordering::Relaxed),
            self.inner.value_reads.load(Ordering::Relaxed),
        )
    }

    /// Reloads a customer after a change to its entitlements, grants or resets.
    pub async fn reload(&self, namespace: &str, customer_id: &str) -> Result<()> {
        self.inner
            .table
            .reload(self, namespace, customer_id)
            .await
            .map_err(Error::Actor)
    }

    /// One entitlement's value at `at` (by id or feature key); `None` when the customer
    /// has no such entitlement.
    pub async fn value(
        &self,
        namespace: &str,
        customer_id: &str,
        entitlement: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<ValueAnswer>> {
        self.inner.value_reads.fetch_add(1, Ordering::Relaxed);
        let answer = self
            .inner
            .table
            .read(self, namespace, customer_id, |loaded| {
                loaded
                    .find(entitlement, at)
                    .map(|index| table::answer(loaded, index, at))
                    .transpose()
            })
            .await
            .map_err(Error::Actor)?
            .map_err(Error::Actor)?;
        match answer {
            Some(ValueAnswer::Past(id)) => Ok(Some(self.past_value(namespace, &id, at).await?)),
            other => Ok(other),
        }
    }

    /// Every active entitlement's value, by feature key.
    pub async fn access(
        &self,
        namespace: &str,
        customer_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Access> {
        let mut access = self
            .inner
            .table
            .read(self, namespace, customer_id, |loaded| {
                table::access(loaded, customer_id, at)
            })
            .await
            .map_err(Error::Actor)?;
        for answer in access.values_mut() {
            if let ValueAnswer::Past(id) = answer {
                let id = id.clone();
                *answer = self.past_value(namespace, &id, at).await?;
            }
        }
        Ok(access)
    }

    /// A value before the live series: computed from the events.
    async fn past_value(
        &self,
        namespace: &str,
        entitlement_id: &str,
        at: DateTime<Utc>,
    ) -> Result<ValueAnswer> {
        let record = self
            .inner
            .pipeline
            .catalog()
            .get_entitlement(namespace, entitlement_id)
            .await?
            .ok_or_else(|| Error::Invalid {
                id: entitlement_id.to_owned(),
                reason: "no longer in the catalog".into(),
            })?;
        let until = ceil_minute(at);
        let (outcome, inputs) = self.compute(&record, until, &[]).await?;
        let value = outcome.value(&inputs.grants);
        let period =
            credit::period_at(&inputs.entitlement, &inputs.resets, until).unwrap_or((until, until));
        Ok(ValueAnswer::Metered {
            has_access: record.is_soft_limit || value.balance > rust_decimal::Decimal::ZERO,
            value: ValueAt {
                until,
                value,
                period,
            },
        })
    }

    /// Runs the credit engine for one metered entitlement over its events, from
    /// `measureUsageFrom` to `until`, with extra cuts (window edges of a history).
    pub async fn compute(
        &self,
        record: &EntitlementRecord,
        until: DateTime<Utc>,
        extra_cuts: &[DateTime<Utc>],
    ) -> Result<(Outcome, Inputs)> {
        let customer = self
            .inner
            .pipeline
            .catalog()
            .get_customer_by_id(&record.namespace, &record.customer_id)
            .await?
            .ok_or_else(|| Error::CustomerNotFound(record.customer_id.clone()))?;
        let feature = self.feature(record).await?;
        let (inputs, meter) = self.inputs(record, &feature).await?;
        let matcher = Matcher {
            ledger: 0,
            shape: self.shape(&meter, &feature),
        };
        let from = inputs.entitlement.measure_usage_from;
        let events = self
            .inner
            .pipeline
            .customer_events(
                &record.namespace,
                customer.subjects(),
                vec![meter.event_type.clone()],
                Some(from),
                Some(until),
            )
            .await?;
        let mut series = Series::new();
        fold_events(&events, std::slice::from_ref(&matcher), |_, sample| {
            if sample.time_ms >= from.timestamp_millis() {
                fold_sample(
                    &mut series,
                    meter.aggregation,
                    sample.time_ms,
                    &sample.value,
                );
            }
        });
        let mut usage = SeriesUsage { series: &series };
        let outcome = credit::run(
            &inputs.entitlement,
            &inputs.grants,
            &inputs.resets,
            None,
            until,
            extra_cuts,
            &mut usage,
        )
        .map_err(|e| Error::Invalid {
            id: record.id.clone(),
            reason: format!("{e:?}"),
        })?;
        Ok((outcome, inputs))
    }

    async fn feature(&self, record: &EntitlementRecord) -> Result<Arc<Feature>> {
        let feature = self
            .inner
            .pipeline
            .catalog()
            .get_feature(&record.namespace, &record.feature_id)
            .await?
            .ok_or_else(|| Error::FeatureNotFound(record.feature_id.clone()))?;
        let mut shared = self.inner.shared.lock();
        if let Some(known) = shared.features.get(&feature.id)
            && known.updated_at == feature.updated_at
            && known.archived_at == feature.archived_at
        {
            return Ok(known.clone());
        }
        let feature = Arc::new(feature);
        shared.features.insert(feature.id.clone(), feature.clone());
        Ok(feature)
    }

    /// A customer's matchers, shared with every customer of the same layout.
    fn matchers(&self, matchers: &[Matcher]) -> Arc<Vec<Matcher>> {
        let layout: Vec<(u32, usize)> = matchers
            .iter()
            .map(|m| (m.ledger, Arc::as_ptr(&m.shape) as usize))
            .collect();
        let mut shared = self.inner.shared.lock();
        if let Some(known) = shared.matchers.get(&layout) {
            return known.clone();
        }
        // A cache: the layouts of shapes since replaced go with a clear.
        if shared.matchers.len() >= MATCHER_LAYOUTS {
            shared.matchers.clear();
        }
        // A thin pointer: every routing entry of the customer holds one.
        let fresh = Arc::new(matchers.to_vec());
        shared.matchers.insert(layout, fresh.clone());
        fresh
    }

    /// The feature's match shape, shared while neither the feature nor its meter changes.
    fn shape(&self, meter: &Meter, feature: &Feature) -> Arc<MatchShape> {
        let mut shared = self.inner.shared.lock();
        if let Some(known) = shared.shapes.get(&feature.id)
            && known.feature_updated_at == feature.updated_at
            && known.meter_id == meter.id
            && known.meter_updated_at == meter.updated_at
        {
            return known.shape.clone();
        }
        let shape = Arc::new(match_shape(meter, feature));
        shared.shapes.insert(
            feature.id.clone(),
            SharedShape {
                feature_updated_at: feature.updated_at,
                meter_id: meter.id.clone(),
                meter_updated_at: meter.updated_at,
                shape: shape.clone(),
            },
        );
        shape
    }

    /// The engine inputs of a metered entitlement, and its feature's meter.
    pub async fn inputs(
        &self,
        record: &EntitlementRecord,
        feature: &Feature,
    ) -> Result<(Inputs, Arc<Meter>)> {
        let slug = feature.meter_slug.clone().ok_or_else(|| Error::Meter {
            feature: feature.key.clone(),
            reason: "no meterSlug".into(),
        })?;
        let meter = self
            .inner
            .pipeline
            .get_meter(&record.namespace, &slug)
            .await
            .map_err(|e| Error::Meter {
                feature: feature.key.clone(),
                reason: e.to_string(),
            })?;
        let catalog = self.inner.pipeline.catalog();
        let grants = catalog.entitlement_grants(&record.id).await?;
        let resets = catalog.entitlement_resets(&record.id).await?;
        let inputs = engine_inputs(record, meter.aggregation, &grants, &resets)?;
        Ok((inputs, Arc::new(meter)))
    }

    /// Loads a customer: entitlements, ledgers rebuilt from the events, and the
    /// subscription at the partitions (taken atomically with the event read).
    pub(super) async fn load(
        &self,
        namespace: &str,
        customer_id: &str,
        generation: u64,
    ) -> Result<Loaded> {
        self.inner.activations.fetch_add(1, Ordering::Relaxed);
        let catalog = self.inner.pipeline.catalog();
        let customer = catalog
            .get_customer_by_id(namespace, customer_id)
            .await?
            .filter(|c| c.deleted_at.is_none())
            .ok_or_else(|| Error::CustomerNotFound(customer_id.to_owned()))?;
        let subjects = customer.subjects();
        let records = catalog
            .customer_entitlements(namespace, customer_id, false)
            .await?;
        let mut entries = Vec::with_capacity(records.len());
        let mut matchers = Vec::new();
        let mut metered: Vec<(usize, Inputs, Aggregation)> = Vec::new();
        let mut types = Vec::new();
        let mut earliest: Option<DateTime<Utc>> = None;
        for record in records {
            // One broken entitlement (its meter deleted, say) answers an error of its
            // own; the customer's other entitlements keep working.
            let mut broken = None;
            let feature = match self.feature(&record).await {
                Ok(feature) => Some(feature),
                Err(error) => {
                    broken = Some(error.to_string());
                    None
                }
            };
            if let (Some(feature), EntitlementKind::Metered) = (&feature, record.kind) {
                match self.inputs(&record, feature).await {
                    Ok((inputs, meter)) => {
                        let index = entries.len();
                        matchers.push(Matcher {
                            ledger: index as u32,
                            shape: self.shape(&meter, feature),
                        });
                        types.push(meter.event_type.clone());
                        let from = inputs.entitlement.measure_usage_from;
                        earliest = Some(earliest.map_or(from, |e: DateTime<Utc>| e.min(from)));
                        metered.push((index, inputs, meter.aggregation));
                    }
                    Err(error) => broken = Some(error.to_string()),
                }
            }
            if let Some(reason) = &broken {
                tracing::warn!(entitlement = %record.id, %reason, "An entitlement cannot be evaluated.");
            }
            entries.push(Entry {
                head: Head::of(&record),
                feature,
                ledger: None,
                broken: broken.map(Into::into),
            });
        }
        let mut series: Vec<Series> = vec![Series::new(); entries.len()];
        if !matchers.is_empty() && !subjects.is_empty() {
            types.sort();
            types.dedup();
            let subscription = Arc::new(Subscription {
                namespace: self.inner.table.namespace(namespace),
                generation,
                who: self.inner.pipeline.attribution().record(
                    namespace,
                    &customer.id,
                    customer.key.as_deref(),
                    &subjects,
                ),
                matchers: self.matchers(&matchers),
                sink: self.inner.sink.clone(),
            });
            let events = self
                .inner
                .pipeline
                .subscribe(subscription, types, earliest)
                .await?;
            let aggregations: HashMap<usize, Aggregation> =
                metered.iter().map(|(i, _, a)| (*i, *a)).collect();
            fold_events(&events, &matchers, |index, sample| {
                if let (Some(s), Some(a)) = (series.get_mut(index), aggregations.get(&index)) {
                    fold_sample(s, *a, sample.time_ms, &sample.value);
                }
            });
        }
        for (index, inputs, aggregation) in metered {
            let from_ms = inputs.entitlement.measure_usage_from.timestamp_millis();
            let mut s = std::mem::take(&mut series[index]);
            s = s.split_off(&metron_engine::window::floor_minute_ms(from_ms));
            if let Some(entry) = entries.get_mut(index) {
                entry.ledger = Some(Box::new(Ledger::new(inputs, aggregation, s)));
            }
        }
        {
            let mut entitled = self.inner.entitled.write();
            let key = CustomerKey::of(customer_id);
            if entries.is_empty() {
                if let Some(ids) = entitled.get_mut(namespace) {
                    ids.remove(&key);
                }
            } else if let Some(ids) = entitled.get_mut(namespace) {
                ids.insert(key);
            } else {
                entitled
                    .entry(namespace.to_owned())
                    .or_default()
                    .insert(key);
            }
        }
        entries.shrink_to_fit();
        Ok(Loaded {
            customer_id: customer.id.as_str().into(),
            subject_key: subject_key(&customer, &subjects).into(),
            subjects,
            entries,
        })
    }

    /// A manual reset happened: tell the notifier (`entitlements.reset` rules).
    pub async fn reset_observed(
        &self,
        customer: &Customer,
        record: &EntitlementRecord,
        at: DateTime<Utc>,
    ) {
        let subject_key = subject_key(customer, &customer.subjects());
        let answer = self
            .value(&record.namespace, &customer.id, &record.id, Utc::now())
            .await;
        let (value, period) = match answer {
            Ok(Some(ValueAnswer::Metered {
                has_access, value, ..
            })) => (
                views::metered_value_view(has_access, &value.value, Flavor::V1),
                Some(value.period),
            ),
            _ => (serde_json::json!({"hasAccess": false}), None),
        };
        let owner = Owner {
            customer_id: &customer.id,
            customer_key: customer.key.as_deref(),
            subject_key: &subject_key,
        };
        let feature = match self.feature(record).await {
            Ok(f) => serde_json::to_value(f.as_ref()).unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        let stored = self
            .inner
            .pipeline
            .catalog()
            .get_subject(&record.namespace, &subject_key)
            .await
            .ok()
            .flatten();
        self.inner
            .pipeline
            .notifier()
            .reset_observed(ResetObservation {
                namespace: record.namespace.clone(),
                entitlement_id: record.id.clone(),
                feature_id: record.feature_id.clone(),
                feature_key: record.feature_key.clone(),
                subject_key: subject_key.clone(),
                customer_id: Some(customer.id.clone()),
                reset_at: at,
                entitlement: views::entitlement_view(record, &owner, period, Flavor::V1),
                feature,
                subject: views::subject_view(&subject_key, stored.as_ref(), Some(customer)),
                customer: serde_json::to_value(customer).ok(),
                value,
            });
    }

    /// After a change of grants or resets: the customer's ledgers under the new inputs
    /// over the usage they already hold, without reading any event. `Err(loaded)` gives
    /// the customer back unchanged when only a full load is exact (entitlements or
    /// subjects changed, or a ledger already moved its series past a period start).
    pub(super) async fn refresh(
        &self,
        namespace: &str,
        loaded: Loaded,
    ) -> Result<Result<Loaded, Loaded>> {
        let catalog = self.inner.pipeline.catalog();
        let customer_id = loaded.customer_id.to_string();
        let Some(fresh) = catalog
            .get_customer_by_id(namespace, &customer_id)
            .await?
            .filter(|c| c.deleted_at.is_none())
        else {
            return Ok(Err(loaded));
        };
        let records = catalog
            .customer_entitlements(namespace, &customer_id, false)
            .await?;
        let same_set = fresh.subjects() == loaded.subjects
            && records.len() == loaded.entries.len()
            && records
                .iter()
                .zip(&loaded.entries)
                .all(|(r, e)| r.id == *e.head.id && e.broken.is_none());
        if !same_set {
            return Ok(Err(loaded));
        }
        let mut ledgers = Vec::with_capacity(records.len());
        for (record, entry) in records.iter().zip(&loaded.entries) {
            let Some(ledger) = &entry.ledger else {
                ledgers.push(None);
                continue;
            };
            let grants = catalog.entitlement_grants(&record.id).await?;
            let resets = catalog.entitlement_resets(&record.id).await?;
            let inputs = engine_inputs(record, ledger.aggregation, &grants, &resets)?;
            match ledger.with_inputs(inputs) {
                Some(next) => ledgers.push(Some(Box::new(next))),
                None => return Ok(Err(loaded)),
            }
        }
        let mut loaded = loaded;
        loaded.subject_key = subject_key(&fresh, &loaded.subjects).into();
        for ((entry, record), ledger) in loaded.entries.iter_mut().zip(records).zip(ledgers) {
            entry.head = Head::of(&record);
            entry.ledger = ledger;
        }
        Ok(Ok(loaded))
    }

    /// [`Self::observe`] of every metered entitlement of the customer.
    pub(super) fn observe_all(&self, namespace: &str, loaded: &mut Loaded) {
        let metered: Vec<usize> = loaded
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.ledger.is_some())
            .map(|(i, _)| i)
            .collect();
        self.observe(namespace, loaded, &metered);
    }

    /// Balances moved: tell the notifier (it decides whether a threshold was crossed;
    /// the payload's read models are read from the catalog only if one was).
    pub(super) fn observe(&self, namespace: &str, loaded: &mut Loaded, touched: &[usize]) {
        let notifier: &Notifier = self.inner.pipeline.notifier();
        if !notifier.watches_balances(namespace) {
            return;
        }
        {
            // Checked under the lock the post-replay observer takes the set with: a customer
            // deferred here is in the set it observes.
            let mut deferred = self.inner.deferred.lock();
            if let Some(customers) = deferred.as_mut()
                && !self.inner.pipeline.health().is_ready()
            {
                customers.insert(loaded.customer_id.to_string());
                return;
            }
        }
        let now = Utc::now();
        for &index in touched {
            let Some(entry) = loaded.entries.get_mut(index) else {
                continue;
            };
            let (Some(ledger), Some(feature)) = (entry.ledger.as_mut(), entry.feature.as_ref())
            else {
                continue;
            };
            if !entry.head.active_at(now) {
                continue;
            }
            let Ok(at) = ledger.value_at(now) else {
                continue;
            };
            let has_access =
                entry.head.is_soft_limit || at.value.balance > rust_decimal::Decimal::ZERO;
            let payload = {
                let this = self.clone();
                let (namespace, entitlement_id) = (namespace.to_owned(), entry.head.id.to_string());
                let customer_id = loaded.customer_id.to_string();
                let (subject_key, feature) = (loaded.subject_key.to_string(), feature.clone());
                let (period, value) = (at.period, at.value.clone());
                Arc::new(move || {
                    let this = this.clone();
                    let (namespace, entitlement_id, customer_id) = (
                        namespace.clone(),
                        entitlement_id.clone(),
                        customer_id.clone(),
                    );
                    let (subject_key, feature, value) =
                        (subject_key.clone(), feature.clone(), value.clone());
                    Box::pin(async move {
                        let catalog = this.inner.pipeline.catalog();
                        let record = catalog.get_entitlement(&namespace, &entitlement_id).await;
                        let customer = catalog.get_customer_by_id(&namespace, &customer_id).await;
                        let (record, customer) = (record.ok().flatten(), customer.ok().flatten());
                        let stored = catalog
                            .get_subject(&namespace, &subject_key)
                            .await
                            .ok()
                            .flatten();
                        let entitlement = match &record {
                            Some(record) => views::entitlement_view(
                                record,
                                &Owner {
                                    customer_id: &customer_id,
                                    customer_key: customer.as_ref().and_then(|c| c.key.as_deref()),
                                    subject_key: &subject_key,
                                },
                                Some(period),
                                Flavor::V1,
                            ),
                            None => serde_json::json!({"id": entitlement_id}),
                        };
                        Payload {
                            entitlement,
                            feature: serde_json::to_value(feature.as_ref()).unwrap_or_default(),
                            subject: views::subject_view(
                                &subject_key,
                                stored.as_ref(),
                                customer.as_ref(),
                            ),
                            customer: customer.and_then(|c| serde_json::to_value(c).ok()),
                            value: views::metered_value_view(has_access, &value, Flavor::V1),
                        }
                    })
                        as std::pin::Pin<Box<dyn std::future::Future<Output = Payload> + Send>>
                }) as PayloadSource
            };
            notifier.balance_observed(BalanceObservation {
                namespace: namespace.to_owned(),
                entitlement_id: entry.head.id.to_string(),
                feature_id: feature.id.clone(),
                feature_key: entry.head.feature_key.to_string(),
                subject_key: loaded.subject_key.to_string(),
                customer_id: Some(loaded.customer_id.to_string()),
                period_from: at.period.0,
                measure_usage_from: ledger.inputs.entitlement.measure_usage_from,
                usage: at.value.usage,
                balance: at.value.balance,
                total_available_grant_amount: at.value.total_available_grant_amount,
                overage: at.value.overage,
                payload,
            });
        }
    }
}

/// Customers packed or passivated by one sweep before it releases freed memory.
const RELEASE_AFTER_ROWS: usize = 1024;

/// The subject key a customer's v1 read models show: its first subject key, else its key.
pub fn subject_key(customer: &Customer, subjects: &[String]) -> String {
    customer
        .usage_attribution
        .subject_keys
        .first()
        .or(customer.key.as_ref())
        .or(subjects.first())
        .cloned()
        .unwrap_or_default()
}

fn match_shape(meter: &Meter, feature: &Feature) -> MatchShape {
    let compiled = meter.compile();
    let keys: Vec<String> = compiled.group_keys().map(str::to_owned).collect();
    let filters = feature
        .group_filters()
        .into_iter()
        .map(|(key, filter)| (keys.iter().position(|k| *k == key), filter))
        .collect();
    MatchShape { compiled, filters }
}

fn fold_events(
    events: &[IngestedEvent],
    matchers: &[Matcher],
    mut each: impl FnMut(usize, &super::UsageSample),
) {
    for event in events {
        for matcher in matchers {
            if let Some(sample) = matcher.sample(&event.event) {
                each(matcher.ledger as usize, &sample);
            }
        }
    }
}

/// A recurring period from its record.
pub fn recurrence(period: &PeriodRecord) -> Result<Recurrence, String> {
    Ok(Recurrence {
        interval: Interval::parse(&period.interval).map_err(|e| format!("{e:?}"))?,
        anchor: period.anchor,
    })
}

/// A grant's expiration unit from its record text.
pub fn expiration_unit(text: &str) -> Option<ExpirationUnit> {
    Some(match text {
        "HOUR" => ExpirationUnit::Hour,
        "DAY" => ExpirationUnit::Day,
        "WEEK" => ExpirationUnit::Week,
        "MONTH" => ExpirationUnit::Month,
        "YEAR" => ExpirationUnit::Year,
        _ => return None,
    })
}

/// The credit engine's view of a grant record.
pub fn engine_grant(grant: &GrantRecord) -> Result<Grant, String> {
    Ok(Grant {
        id: grant.id.clone(),
        amount: grant.amount,
        priority: grant.priority,
        effective_at: grant.effective_at,
        expires_at: grant.expires_at,
        voided_at: grant.voided_at,
        deleted_at: grant.deleted_at,
        created_at: grant.created_at,
        max_rollover: grant.max_rollover_amount,
        min_rollover: grant.min_rollover_amount,
        recurrence: grant.recurrence.as_ref().map(recurrence).transpose()?,
    })
}

/// The credit engine's inputs for a metered entitlement record.
pub fn engine_inputs(
    record: &EntitlementRecord,
    aggregation: Aggregation,
    grants: &[GrantRecord],
    resets: &[ResetRecord],
) -> Result<Inputs> {
    let invalid = |reason: String| Error::Invalid {
        id: record.id.clone(),
        reason,
    };
    let period = record
        .usage_period
        .as_ref()
        .ok_or_else(|| invalid("no usage period".into()))?;
    let entitlement = Entitlement {
        measure_usage_from: record.measure_usage_from.unwrap_or(record.created_at),
        usage_period: recurrence(period).map_err(invalid)?,
        preserve_overage_at_reset: record.preserve_overage_at_reset,
        kind: if aggregation == Aggregation::Latest {
            UsageKind::Latest
        } else {
            UsageKind::Additive
        },
    };
    let mut grants = grants
        .iter()
        .map(engine_grant)
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    // Held for as long as the customer is live: no spare capacity.
    grants.shrink_to_fit();
    let resets: Vec<Reset> = resets
        .iter()
        .map(|r| Reset {
            at: r.at,
            preserve_overage: r.preserve_overage,
            retain_anchor: r.retain_anchor,
        })
        .collect();
    Ok(Inputs {
        entitlement,
        grants,
        resets,
    })
}
