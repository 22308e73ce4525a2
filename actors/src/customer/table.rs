//! The live customers: a sharded table of customer states.
//!
//! Each active customer is one logical actor — its state has a single writer at a
//! time and every change to it (usage, a reload, a read that fills a cache) is applied
//! in order — but the actors are rows of a table, not one actix actor each. A row is
//! guarded by its shard's lock, held for the few hundred nanoseconds a cached answer
//! takes (a few microseconds when the engine runs). That spares every check the two
//! cross-thread hops of a mailbox and every customer the mailbox, context and timer of
//! an actix actor (more than the whole state of a small customer).
//!
//! A row is `Loading` (its load runs as a task; readers wait, usage queues), `Ready`, or
//! `Failed`. The partitions deliver usage straight into the row (one call per customer
//! per batch) through the [`UsageSink`](super::UsageSink) of its subscription. A sweep
//! passivates rows nobody read or fed for `idleAfter`; the next use loads them again
//! from the catalog and the events.

use super::ledger::{LedgerError, ValueAt};
use super::service::{Entitlements, Loaded};
use super::{CustomerKey as Key, UsageSample};
use chrono::{DateTime, Utc};
use metron_storage::entitlements::EntitlementKind;
use metron_storage::features::Feature;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::oneshot;

/// What a value read found for one entitlement.
#[derive(Debug, Clone)]
pub enum ValueAnswer {
    /// The entitlement exists but is not active at the time asked.
    Inactive,
    /// Boolean: access; static: access and its config.
    Granted {
        config: Option<Box<str>>,
    },
    Metered {
        has_access: bool,
        value: ValueAt,
    },
    /// The time asked lies before the live series: computed from the events instead
    /// (the entitlement's id).
    Past(Box<str>),
}

/// Every active entitlement's value, by feature key.
pub type Access = BTreeMap<String, ValueAnswer>;

const SHARDS: usize = 64;

/// A customer that left memory: namespace, id, subscription generation, subjects.
pub(super) type Passivated = (Arc<str>, String, u64, Vec<String>);

pub(super) struct Table {
    shards: Box<[Mutex<Shard>]>,
    epoch: Instant,
    /// Subscription generations, unique across activations.
    generations: AtomicU64,
    namespaces: Mutex<HashMap<String, Arc<str>>>,
}

/// One shard of rows. Packed customers live in the shard's `arena`, one contiguous
/// buffer, so that a customer at rest costs its bytes and one table entry, and packing
/// frees whole pages of the hot state instead of leaving a small allocation in each.
#[derive(Default)]
struct Shard {
    slots: HashMap<Key, Slot>,
    arena: Vec<u8>,
    /// Bytes of `arena` no packed row uses any more.
    garbage: usize,
    /// The features and namespaces of the packed rows, by number.
    features: Vec<Arc<Feature>>,
    feature_numbers: HashMap<Box<str>, u32>,
    namespaces: Vec<Arc<str>>,
}

enum Slot {
    Loading(Box<Loading>),
    Ready(Box<Live>),
    /// A ready customer at rest, packed ([`super::pack`]); unpacked by its next use.
    Packed(Packed),
    Failed(Box<Failed>),
}

struct Failed {
    error: Box<str>,
    last_used: u64,
    /// When the load failed, and how many loads in a row failed: a read after
    /// [`retry_after_ms`] of them loads again.
    failed_at: u64,
    attempts: u32,
}

/// How long reads answer a failed load's error before one loads again: 100 ms, doubling
/// with each failure in a row, at most 30 s.
fn retry_after_ms(attempts: u32) -> u64 {
    100u64.saturating_mul(1 << attempts.min(16)).min(30_000)
}

/// How long a read waits for a customer's load before it answers an error.
const LOAD_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Where a packed customer's bytes are in its shard's arena.
struct Packed {
    generation: u64,
    last_used: u64,
    at: u32,
    len: u32,
    namespace: u32,
}

impl Packed {
    /// The row's bytes in its shard's `arena` (`None`: out of it, which never happens).
    fn bytes<'a>(&self, arena: &'a [u8]) -> Option<&'a [u8]> {
        let start = self.at as usize;
        arena.get(start..start + self.len as usize)
    }
}

impl Shard {
    fn bytes(&self, packed: &Packed) -> &[u8] {
        packed.bytes(&self.arena).unwrap_or_default()
    }

    /// Unpacks the customer's row if it is packed. `false`: its bytes would not unpack
    /// (the row is removed; the caller loads the customer afresh).
    fn unpack(&mut self, key: &Key) -> bool {
        let Some(Slot::Packed(packed)) = self.slots.get(key) else {
            return true;
        };
        let features = &self.features;
        let unpacked = Loaded::unpack(&key.id(), self.bytes(packed), |n| {
            usize::try_from(n)
                .ok()
                .and_then(|n| features.get(n))
                .cloned()
        });
        let namespace = self.namespaces.get(packed.namespace as usize).cloned();
        let (generation, last_used, len) = (packed.generation, packed.last_used, packed.len);
        self.garbage += len as usize;
        match (unpacked, namespace) {
            (Ok(loaded), Some(namespace)) => {
                self.slots.insert(
                    key.clone(),
                    Slot::Ready(Box::new(Live {
                        namespace,
                        generation,
                        last_used,
                        loaded,
                    })),
                );
                true
            }
            (Err(error), _) => {
                tracing::error!(%error, "A packed customer would not unpack; loading it afresh.");
                self.slots.remove(key);
                false
            }
            (Ok(_), None) => {
                tracing::error!("A packed customer's namespace is unknown; loading it afresh.");
                self.slots.remove(key);
                false
            }
        }
    }

    /// Packs a ready row into the arena (left ready if the arena is full).
    fn pack(&mut self, key: &Key) -> bool {
        let Some(Slot::Ready(live)) = self.slots.get(key) else {
            return false;
        };
        let at = self.arena.len();
        let mut writer = super::pack::Writer::appending(std::mem::take(&mut self.arena));
        let (features, numbers) = (&mut self.features, &mut self.feature_numbers);
        live.loaded.pack_into(&mut writer, |feature| {
            let number = match numbers.get(feature.id.as_str()) {
                Some(&n) => n,
                None => {
                    let n = features.len() as u32;
                    numbers.insert(feature.id.as_str().into(), n);
                    features.push(feature.clone());
                    n
                }
            };
            // A newer version of the feature (archived) replaces the older one.
            if let Some(known) = features.get_mut(number as usize)
                && !Arc::ptr_eq(known, feature)
                && known.updated_at <= feature.updated_at
            {
                *known = feature.clone();
            }
            u64::from(number)
        });
        self.arena = writer.bytes;
        // Offsets are u32: a shard's arena stays under 4 GiB (the row stays unpacked).
        if u32::try_from(self.arena.len()).is_err() {
            self.arena.truncate(at);
            return false;
        }
        let (at32, len) = (at as u32, (self.arena.len() - at) as u32);
        let namespace = match self
            .namespaces
            .iter()
            .position(|n| Arc::ptr_eq(n, &live.namespace) || **n == *live.namespace)
        {
            Some(i) => i as u32,
            None => {
                self.namespaces.push(live.namespace.clone());
                (self.namespaces.len() - 1) as u32
            }
        };
        let packed = Packed {
            generation: live.generation,
            last_used: live.last_used,
            at: at32,
            len,
            namespace,
        };
        self.slots.insert(key.clone(), Slot::Packed(packed));
        true
    }

    /// Copies the live packed rows into a fresh arena once at least half of it is
    /// garbage, and gives back the slack of its growth.
    fn compact(&mut self) {
        self.compact_with(false);
    }

    /// Rewrites the arena without its garbage: when `force`, whatever the garbage is;
    /// otherwise once it is at least half of the arena.
    fn compact_with(&mut self, force: bool) {
        let live = self.arena.len() - self.garbage.min(self.arena.len());
        if self.garbage > 0 && (force || self.garbage >= live) {
            let mut fresh = Vec::with_capacity(live);
            for slot in self.slots.values_mut() {
                if let Slot::Packed(packed) = slot {
                    let bytes = packed.bytes(&self.arena).unwrap_or_default();
                    // (A row out of the arena keeps no bytes: its unpack fails, it loads afresh.)
                    packed.len = bytes.len() as u32;
                    packed.at = fresh.len() as u32;
                    fresh.extend_from_slice(bytes);
                }
            }
            self.arena = fresh;
            self.garbage = 0;
        }
        if self.arena.capacity() > self.arena.len() + self.arena.len() / 4 {
            self.arena.shrink_to_fit();
        }
    }
}

/// A ready customer.
struct Live {
    namespace: Arc<str>,
    generation: u64,
    /// Milliseconds since the table's epoch.
    last_used: u64,
    loaded: Loaded,
}

struct Loading {
    namespace: Arc<str>,
    /// The subscription generation of the running load.
    generation: u64,
    /// The generation of the state being refreshed (grants changed): its usage counts
    /// if the refresh succeeds.
    previous: Option<u64>,
    usage: Vec<(u64, Vec<UsageSample>)>,
    readers: Vec<oneshot::Sender<()>>,
    reloads: Vec<oneshot::Sender<Result<(), String>>>,
    /// A change arrived while loading: what is loading may predate it.
    again: bool,
    /// Loads of this customer that failed in a row before this one.
    attempts: u32,
}

/// A load to start once the shard's lock is released.
struct Start {
    namespace: Arc<str>,
    customer_id: String,
    previous: Option<(u64, Loaded)>,
    generation: u64,
}

impl Table {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            epoch: Instant::now(),
            generations: AtomicU64::new(0),
            namespaces: Mutex::new(HashMap::new()),
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        // FNV-1a: ids are ULIDs, so any mix of their bytes spreads them.
        let bytes = match key {
            Key::Ulid(bytes) => bytes.as_slice(),
            Key::Text(text) => text.as_bytes(),
        };
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        &self.shards[(hash % SHARDS as u64) as usize]
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn next_generation(&self) -> u64 {
        self.generations.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(super) fn namespace(&self, namespace: &str) -> Arc<str> {
        let mut namespaces = self.namespaces.lock();
        if let Some(known) = namespaces.get(namespace) {
            return known.clone();
        }
        let interned: Arc<str> = Arc::from(namespace);
        namespaces.insert(namespace.to_owned(), interned.clone());
        interned
    }

    fn loading(&self, namespace: Arc<str>, previous: Option<u64>) -> Box<Loading> {
        Box::new(Loading {
            namespace,
            generation: self.next_generation(),
            previous,
            usage: Vec::new(),
            readers: Vec::new(),
            reloads: Vec::new(),
            again: false,
            attempts: 0,
        })
    }

    /// Customers in memory (ready, loading or failed).
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().slots.len()).sum()
    }

    /// Runs `read` on the customer's state, loading it first if needed.
    pub(super) async fn read<T>(
        &self,
        service: &Entitlements,
        namespace: &str,
        customer_id: &str,
        mut read: impl FnMut(&mut Loaded) -> T,
    ) -> Result<T, String> {
        let key = Key::of(customer_id);
        loop {
            let mut start = None;
            let wait = {
                let mut shard = self.shard(&key).lock();
                match shard.slots.get_mut(&key) {
                    Some(Slot::Ready(live)) => {
                        live.last_used = self.now();
                        return Ok(read(&mut live.loaded));
                    }
                    // Unpacked (or, if its bytes fail, removed to load afresh): look again.
                    Some(Slot::Packed(_)) => {
                        shard.unpack(&key);
                        continue;
                    }
                    Some(Slot::Failed(failed)) => {
                        let now = self.now();
                        failed.last_used = now;
                        if now.saturating_sub(failed.failed_at) < retry_after_ms(failed.attempts) {
                            return Err(failed.error.to_string());
                        }
                        // Backed off long enough: load again.
                        let attempts = failed.attempts;
                        let mut loading = self.loading(self.namespace(namespace), None);
                        loading.attempts = attempts;
                        let (tx, rx) = oneshot::channel();
                        loading.readers.push(tx);
                        start = Some(self.start_of(&loading, customer_id, None));
                        shard.slots.insert(key.clone(), Slot::Loading(loading));
                        rx
                    }
                    Some(Slot::Loading(loading)) => {
                        let (tx, rx) = oneshot::channel();
                        loading.readers.push(tx);
                        rx
                    }
                    None => {
                        let mut loading = self.loading(self.namespace(namespace), None);
                        let (tx, rx) = oneshot::channel();
                        loading.readers.push(tx);
                        start = Some(self.start_of(&loading, customer_id, None));
                        shard.slots.insert(key.clone(), Slot::Loading(loading));
                        rx
                    }
                }
            };
            if let Some(start) = start {
                self.spawn(service, start);
            }
            // Woken when the load finished (or was dropped): look again.
            if tokio::time::timeout(LOAD_WAIT_MAX, wait).await.is_err() {
                return Err(format!(
                    "loading customer {customer_id} took longer than {LOAD_WAIT_MAX:?}"
                ));
            }
        }
    }

    /// Loads the customer if it is not in memory (usage of an entitled customer).
    pub(super) fn ensure(&self, service: &Entitlements, namespace: &str, customer_id: &str) {
        let start = {
            let key = Key::of(customer_id);
            let mut shard = self.shard(&key).lock();
            if shard.slots.contains_key(&key) {
                return;
            }
            let loading = self.loading(self.namespace(namespace), None);
            let start = self.start_of(&loading, customer_id, None);
            shard.slots.insert(key, Slot::Loading(loading));
            start
        };
        self.spawn(service, start);
    }

    /// Reloads the customer after a change of its entitlements, grants, resets or
    /// subjects; answers once the new state is live.
    pub(super) async fn reload(
        &self,
        service: &Entitlements,
        namespace: &str,
        customer_id: &str,
    ) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let key = Key::of(customer_id);
            let mut shard = self.shard(&key).lock();
            shard.unpack(&key);
            match shard.slots.remove(&key) {
                Some(Slot::Packed(_)) => None,
                Some(Slot::Loading(mut loading)) => {
                    loading.again = true;
                    loading.reloads.push(tx);
                    shard.slots.insert(key, Slot::Loading(loading));
                    None
                }
                Some(Slot::Ready(live)) => {
                    let Live {
                        namespace,
                        generation,
                        loaded,
                        ..
                    } = *live;
                    let mut loading = self.loading(namespace, Some(generation));
                    loading.reloads.push(tx);
                    let start = self.start_of(&loading, customer_id, Some((generation, loaded)));
                    shard.slots.insert(key, Slot::Loading(loading));
                    Some(start)
                }
                Some(Slot::Failed(_)) | None => {
                    let mut loading = self.loading(self.namespace(namespace), None);
                    loading.reloads.push(tx);
                    let start = self.start_of(&loading, customer_id, None);
                    shard.slots.insert(key, Slot::Loading(loading));
                    Some(start)
                }
            }
        };
        if let Some(start) = start {
            self.spawn(service, start);
        }
        rx.await
            .map_err(|_| "the customer's load was abandoned".to_string())?
    }

    /// Reloads the customer if it is in memory (its subjects changed).
    pub(super) fn reload_if_live(&self, service: &Entitlements, customer_id: &str) {
        let namespace = {
            let key = Key::of(customer_id);
            let shard = self.shard(&key).lock();
            match shard.slots.get(&key) {
                Some(Slot::Ready(live)) => live.namespace.clone(),
                Some(Slot::Packed(packed)) => match shard.namespaces.get(packed.namespace as usize)
                {
                    Some(namespace) => namespace.clone(),
                    None => return,
                },
                Some(Slot::Loading(loading)) => loading.namespace.clone(),
                _ => return,
            }
        };
        let (service, customer_id) = (service.clone(), customer_id.to_owned());
        service.clone().spawn_task(async move {
            let table = service.table();
            if let Err(error) = table.reload(&service, &namespace, &customer_id).await {
                tracing::warn!(customer = %customer_id, %error, "Could not reload a customer after its subjects changed.");
            }
        });
    }

    /// Tells the notifier every metered balance of the customer, if it is in memory (a
    /// packed one is unpacked; one loading is observed when its load ends).
    pub(super) fn observe_live(&self, service: &Entitlements, customer_id: &str) {
        let key = Key::of(customer_id);
        let mut shard = self.shard(&key).lock();
        if !shard.unpack(&key) {
            return;
        }
        if let Some(Slot::Ready(live)) = shard.slots.get_mut(&key) {
            service.observe_all(&live.namespace, &mut live.loaded);
        }
    }

    /// Every in-memory customer's id (a full attribution reload reloads them all).
    pub(super) fn live_ids(&self) -> Vec<String> {
        self.shards
            .iter()
            .flat_map(|s| s.lock().slots.keys().map(Key::id).collect::<Vec<_>>())
            .collect()
    }

    fn start_of(
        &self,
        loading: &Loading,
        customer_id: &str,
        previous: Option<(u64, Loaded)>,
    ) -> Start {
        Start {
            namespace: loading.namespace.clone(),
            customer_id: customer_id.to_owned(),
            previous,
            generation: loading.generation,
        }
    }

    fn spawn(&self, service: &Entitlements, start: Start) {
        let service = service.clone();
        service.clone().spawn_task(async move {
            let Start {
                namespace,
                customer_id,
                previous,
                generation,
            } = start;
            // Grants or resets changed: the same subscription and usage under new
            // inputs when that is exact, else a full load with a new subscription.
            if let Some((previous_generation, loaded)) = previous {
                match service.refresh(&namespace, loaded).await {
                    Ok(Ok(loaded)) => {
                        service.table().finish(
                            &service,
                            &customer_id,
                            Ok(loaded),
                            previous_generation,
                        );
                        return;
                    }
                    Ok(Err(_)) => {}
                    Err(error) => {
                        service.table().finish(
                            &service,
                            &customer_id,
                            Err(error.to_string()),
                            generation,
                        );
                        return;
                    }
                }
            }
            let result = service
                .load(&namespace, &customer_id, generation)
                .await
                .map_err(|e| e.to_string());
            service
                .table()
                .finish(&service, &customer_id, result, generation);
        });
    }

    /// A load ended: the row becomes ready (with the usage that queued meanwhile) or
    /// failed, and everyone waiting looks again.
    fn finish(
        &self,
        service: &Entitlements,
        customer_id: &str,
        result: Result<Loaded, String>,
        generation: u64,
    ) {
        let mut start = None;
        let (readers, reloads, outcome) = {
            let key = Key::of(customer_id);
            let mut shard = self.shard(&key).lock();
            let Some(Slot::Loading(mut loading)) = shard.slots.remove(&key) else {
                return;
            };
            let mut result = result;
            let mut stale = false;
            if let Ok(loaded) = result.as_mut() {
                let mut touched = Vec::new();
                for (_, samples) in loading.usage.drain(..).filter(|(g, _)| *g == generation) {
                    // Usage before the live series: only a full load is exact.
                    stale |= !apply(loaded, samples, &mut touched);
                }
            }
            if loading.again || stale {
                // Load again: a refresh of what just loaded when a change came in
                // meanwhile, a full load when usage fell before the live series.
                let previous = if stale {
                    None
                } else {
                    result.ok().map(|loaded| (generation, loaded))
                };
                loading.again = false;
                loading.usage.clear();
                loading.previous = previous.as_ref().map(|(g, _)| *g);
                loading.generation = self.next_generation();
                start = Some(self.start_of(&loading, customer_id, previous));
                shard.slots.insert(key, Slot::Loading(loading));
                (Vec::new(), Vec::new(), None)
            } else {
                let outcome = result.as_ref().map(|_| ()).map_err(Clone::clone);
                let now = self.now();
                let slot = match result {
                    Ok(mut loaded) => {
                        // The events read at activation moved the balances too: the
                        // notifier decides (it remembers what it already sent).
                        service.observe_all(&loading.namespace, &mut loaded);
                        if let Some(error) = loaded.entries.iter().find_map(|e| e.broken.as_ref()) {
                            tracing::debug!(customer = %customer_id, %error, "A customer loaded with a broken entitlement.");
                        }
                        Slot::Ready(Box::new(Live {
                            namespace: loading.namespace.clone(),
                            generation,
                            last_used: now,
                            loaded,
                        }))
                    }
                    Err(error) => {
                        tracing::warn!(customer = %customer_id, %error, "Could not load a customer's entitlements.");
                        Slot::Failed(Box::new(Failed {
                            error: error.into(),
                            last_used: now,
                            failed_at: now,
                            attempts: loading.attempts.saturating_add(1),
                        }))
                    }
                };
                shard.slots.insert(key, slot);
                let Loading {
                    readers, reloads, ..
                } = *loading;
                (readers, reloads, Some(outcome))
            }
        };
        if let Some(start) = start {
            self.spawn(service, start);
        }
        for reader in readers {
            let _ = reader.send(());
        }
        if let Some(outcome) = outcome {
            for reload in reloads {
                let _ = reload.send(outcome.clone());
            }
        }
    }

    /// A partition's usage of one customer (one batch). `false`: the subscription is
    /// no longer this customer's live one (the partition drops it).
    pub(super) fn deliver(
        &self,
        service: &Entitlements,
        key: &Key,
        generation: u64,
        samples: Vec<UsageSample>,
    ) -> bool {
        let start = {
            let mut shard = self.shard(key).lock();
            if let Some(Slot::Packed(packed)) = shard.slots.get(key)
                && packed.generation == generation
            {
                shard.unpack(key);
            }
            match shard.slots.get_mut(key) {
                Some(Slot::Ready(live)) if live.generation == generation => {
                    // Usage keeps the customer in memory: passivating a customer in use
                    // would only make its next batch rebuild it.
                    live.last_used = self.now();
                    let mut touched = Vec::new();
                    if apply(&mut live.loaded, samples, &mut touched) {
                        if !touched.is_empty() {
                            service.observe(&live.namespace, &mut live.loaded, &touched);
                        }
                        return true;
                    }
                    // Usage older than the live series (a late event from a past
                    // period): rebuild from the events, which already hold it.
                    let Some(Slot::Ready(live)) = shard.slots.remove(key) else {
                        return true;
                    };
                    let loading = self.loading(live.namespace.clone(), None);
                    let start = self.start_of(&loading, &key.id(), None);
                    shard.slots.insert(key.clone(), Slot::Loading(loading));
                    start
                }
                Some(Slot::Loading(loading))
                    if loading.generation == generation || loading.previous == Some(generation) =>
                {
                    loading.usage.push((generation, samples));
                    return true;
                }
                _ => return false,
            }
        };
        self.spawn(service, start);
        true
    }

    /// Packs the customers idle for `pack_ms` and passivates those idle for `idle_ms`;
    /// returns the passivated ones with their subscriptions (to drop at the
    /// partitions) and how many were packed.
    pub(super) fn sweep(&self, pack_ms: u64, idle_ms: u64) -> (Vec<Passivated>, usize) {
        let now = self.now();
        let idle = |last_used: u64, ms: u64| now.saturating_sub(last_used) >= ms;
        let mut gone = Vec::new();
        let mut packed_count = 0;
        for shard in self.shards.iter() {
            // Passivate under one short hold of the lock (removals are cheap); pack one
            // row per hold, so a check on this shard never waits behind a whole sweep.
            let mut to_pack: Vec<Key> = Vec::new();
            {
                let mut guard = shard.lock();
                let shard = &mut *guard;
                let mut freed = 0;
                let (namespaces, arena) = (&shard.namespaces, &shard.arena);
                shard.slots.retain(|key, slot| match slot {
                    Slot::Ready(live) if idle(live.last_used, idle_ms) => {
                        gone.extend(passivate(namespaces, arena, key, slot, &mut freed));
                        false
                    }
                    Slot::Packed(packed) if idle(packed.last_used, idle_ms) => {
                        gone.extend(passivate(namespaces, arena, key, slot, &mut freed));
                        false
                    }
                    Slot::Ready(live) if idle(live.last_used, pack_ms) => {
                        to_pack.push(key.clone());
                        true
                    }
                    Slot::Failed(failed) => !idle(failed.last_used, idle_ms),
                    _ => true,
                });
                shard.garbage += freed;
                shard.compact();
            }
            let packing = !to_pack.is_empty();
            for key in to_pack {
                let mut shard = shard.lock();
                // Read or fed since the scan: it stays unpacked.
                let Some(Slot::Ready(live)) = shard.slots.get(&key) else {
                    continue;
                };
                if !idle(live.last_used, pack_ms) {
                    continue;
                }
                if shard.pack(&key) {
                    packed_count += 1;
                }
            }
            if packing {
                shard.lock().compact();
            }
        }
        (gone, packed_count)
    }

    /// Estimated resident bytes of the customers in memory: ready rows by their size,
    /// packed rows by their arenas, loading rows at a round kilobyte, each with its slot.
    pub(super) fn memory_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let shard = s.lock();
                shard.arena.capacity()
                    + shard
                        .slots
                        .values()
                        .map(|slot| SLOT_BYTES + slot_heap_bytes(slot))
                        .sum::<usize>()
            })
            .sum()
    }

    /// Brings the customers' estimated bytes under `budget`: packs every ready row
    /// unused for a second, then passivates the least recently used rows (a later read
    /// or usage loads them again). Returns the passivated rows (to unsubscribe at the
    /// partitions), how many were packed, and the bytes before and after.
    pub(super) fn shed(&self, budget: usize) -> (Vec<Passivated>, usize, usize, usize) {
        let before = self.memory_bytes();
        if before <= budget {
            return (Vec::new(), 0, before, before);
        }
        let (mut gone, packed) = self.sweep(1_000, u64::MAX);
        let mut after = self.memory_bytes();
        if after > budget {
            let mut rows: Vec<(u64, usize, Key, usize)> = Vec::new();
            for (i, s) in self.shards.iter().enumerate() {
                let shard = s.lock();
                for (key, slot) in &shard.slots {
                    let last_used = match slot {
                        Slot::Ready(live) => live.last_used,
                        Slot::Packed(packed) => packed.last_used,
                        Slot::Loading(_) | Slot::Failed(_) => continue,
                    };
                    rows.push((
                        last_used,
                        i,
                        key.clone(),
                        SLOT_BYTES + slot_heap_bytes(slot),
                    ));
                }
            }
            rows.sort_unstable_by_key(|r| r.0);
            let mut excess = after - budget;
            let mut victims: Vec<Vec<Key>> = vec![Vec::new(); self.shards.len()];
            for (_, shard, key, bytes) in rows {
                if excess == 0 {
                    break;
                }
                excess = excess.saturating_sub(bytes);
                if let Some(list) = victims.get_mut(shard) {
                    list.push(key);
                }
            }
            for (s, keys) in self.shards.iter().zip(victims) {
                if keys.is_empty() {
                    continue;
                }
                let mut guard = s.lock();
                let shard = &mut *guard;
                let mut freed = 0;
                for key in keys {
                    match shard.slots.remove(&key) {
                        Some(mut slot @ (Slot::Ready(_) | Slot::Packed(_))) => gone.extend(
                            passivate(&shard.namespaces, &shard.arena, &key, &mut slot, &mut freed),
                        ),
                        // Loading or failed since the scan: not this row's turn.
                        Some(other) => {
                            shard.slots.insert(key, other);
                        }
                        None => {}
                    }
                }
                shard.garbage += freed;
                shard.compact_with(true);
                // The table keeps its capacity otherwise.
                shard.slots.shrink_to_fit();
            }
            after = self.memory_bytes();
        }
        (gone, packed, before, after)
    }

    /// Customers in memory packed,
    /// and the bytes they take in the arenas (with the garbage not yet compacted away).
    pub(super) fn packed(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(rows, bytes), s| {
            let shard = s.lock();
            let packed = shard
                .slots
                .values()
                .filter(|slot| matches!(slot, Slot::Packed(_)))
                .count();
            (rows + packed, bytes + shard.arena.len())
        })
    }
}

/// What the partitions must forget of a ready or packed row that leaves memory; a packed
/// row's bytes are added to `freed` (the arena's garbage).
fn passivate(
    namespaces: &[Arc<str>],
    arena: &[u8],
    key: &Key,
    slot: &mut Slot,
    freed: &mut usize,
) -> Option<Passivated> {
    match slot {
        Slot::Ready(live) => Some((
            live.namespace.clone(),
            key.id(),
            live.generation,
            std::mem::take(&mut live.loaded.subjects),
        )),
        Slot::Packed(packed) => {
            *freed += packed.len as usize;
            let bytes = packed.bytes(arena).unwrap_or_default();
            namespaces.get(packed.namespace as usize).map(|namespace| {
                (
                    namespace.clone(),
                    key.id(),
                    packed.generation,
                    Loaded::packed_subjects(bytes),
                )
            })
        }
        Slot::Loading(_) | Slot::Failed(_) => None,
    }
}

/// Bytes of one table slot (key, slot, hash table slack).
const SLOT_BYTES: usize = 2 * (std::mem::size_of::<Key>() + std::mem::size_of::<Slot>());

/// Estimated heap bytes of a slot beyond the table (a packed row's bytes are its arena's).
fn slot_heap_bytes(slot: &Slot) -> usize {
    match slot {
        Slot::Ready(live) => std::mem::size_of::<Live>() + live.loaded.size_bytes(),
        Slot::Loading(_) => 1024,
        Slot::Failed(failed) => std::mem::size_of::<Failed>() + failed.error.len(),
        Slot::Packed(_) => 0,
    }
}

/// Folds a batch into the ledgers; `false` when a sample falls before a live series.
fn apply(loaded: &mut Loaded, samples: Vec<UsageSample>, touched: &mut Vec<usize>) -> bool {
    let mut exact = true;
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
            Err(_) => exact = false,
        }
    }
    exact
}

/// One entitlement's answer at `at`.
pub(super) fn answer(
    loaded: &mut Loaded,
    index: usize,
    at: DateTime<Utc>,
) -> Result<ValueAnswer, String> {
    let Some(entry) = loaded.entries.get_mut(index) else {
        return Err("no such entitlement".into());
    };
    let head = &entry.head;
    if let Some(reason) = &entry.broken {
        return Err(format!(
            "entitlement {} cannot be evaluated: {reason}",
            head.id
        ));
    }
    if !head.active_at(at) {
        return Ok(ValueAnswer::Inactive);
    }
    let Some(ledger) = entry.ledger.as_mut() else {
        return Ok(ValueAnswer::Granted {
            config: (head.kind == EntitlementKind::Static)
                .then(|| head.config.clone())
                .flatten(),
        });
    };
    match ledger.value_at(at) {
        Ok(value) => Ok(ValueAnswer::Metered {
            has_access: head.is_soft_limit || value.value.balance > rust_decimal::Decimal::ZERO,
            value,
        }),
        Err(LedgerError::Stale) => Ok(ValueAnswer::Past(head.id.clone())),
        Err(error) => Err(error.to_string()),
    }
}

/// Every active entitlement's answer at `at`, by feature key.
pub(super) fn access(loaded: &mut Loaded, customer_id: &str, at: DateTime<Utc>) -> Access {
    let indexes: Vec<(String, usize)> = loaded
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.head.deleted_at.is_none())
        .map(|(i, e)| (e.head.feature_key.to_string(), i))
        .collect();
    let mut access = Access::new();
    for (key, index) in indexes {
        let answer = match answer(loaded, index, at) {
            Ok(answer) => answer,
            Err(error) => {
                // A broken entitlement leaves the others' access answered.
                tracing::warn!(customer = %customer_id, %error, "Left an entitlement out of access.");
                continue;
            }
        };
        // Of two entitlements of one feature (an override), the active one wins.
        let replace = match access.get(&key) {
            None => true,
            Some(ValueAnswer::Inactive) => true,
            Some(_) => false,
        };
        if replace {
            access.insert(key, answer);
        }
    }
    access
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(id: &str, subject: &str) -> Slot {
        Slot::Ready(Box::new(Live {
            namespace: Arc::from("default"),
            generation: 7,
            last_used: 0,
            loaded: Loaded {
                customer_id: id.into(),
                subject_key: subject.into(),
                subjects: vec![subject.to_owned(), format!("{subject}-alias")],
                entries: Vec::new(),
            },
        }))
    }

    #[test]
    fn keys_are_ulid_bytes_when_canonical() {
        let id = ulid::Ulid::new().to_string();
        assert!(matches!(Key::of(&id), Key::Ulid(_)));
        assert_eq!(Key::of(&id).id(), id);
        // Lower case parses as the same ULID but is another id: kept as text.
        let lower = id.to_lowercase();
        assert!(matches!(Key::of(&lower), Key::Text(_)));
        assert_eq!(Key::of(&lower).id(), lower);
        assert!(matches!(Key::of("customer-1"), Key::Text(_)));
    }

    // Past the share, the least recently used rows leave memory first, until the rest fit.
    #[test]
    fn shedding_passivates_the_least_recently_used() {
        let table = Table::new();
        for i in 0..200u64 {
            let id = format!("customer-{i:03}");
            let mut slot = live(&id, &format!("subject-{i}"));
            if let Slot::Ready(live) = &mut slot {
                live.last_used = i;
            }
            table
                .shard(&Key::of(&id))
                .lock()
                .slots
                .insert(Key::of(&id), slot);
        }
        let full = table.memory_bytes();
        let budget = full / 2;
        // Nothing was idle for a second: nothing is packed, the oldest are passivated.
        let (gone, packed, before, after) = table.shed(budget);
        assert_eq!((packed, before), (0, full));
        assert!(after <= budget, "{after} > {budget}");
        assert!(
            after >= budget / 2,
            "shed far too much: {after} of {budget}"
        );
        let mut ids: Vec<String> = gone.iter().map(|(_, id, _, _)| id.clone()).collect();
        ids.sort();
        let expected: Vec<String> = (0..ids.len()).map(|i| format!("customer-{i:03}")).collect();
        assert_eq!(ids, expected);
        assert_eq!(table.len(), 200 - gone.len());
        // Under the share: nothing more leaves.
        let (gone, _, _, _) = table.shed(budget);
        assert!(gone.is_empty());
    }

    #[test]
    fn packed_rows_survive_compaction() {
        let mut shard = Shard::default();
        let ids: Vec<String> = (0..6).map(|_| ulid::Ulid::new().to_string()).collect();
        for (i, id) in ids.iter().enumerate() {
            shard.slots.insert(Key::of(id), live(id, &format!("s{i}")));
            assert!(shard.pack(&Key::of(id)));
        }
        let full = shard.arena.len();
        // Four of six come back to life: their bytes are garbage, and compaction drops them.
        for id in &ids[..4] {
            assert!(shard.unpack(&Key::of(id)));
        }
        shard.compact();
        assert_eq!(shard.garbage, 0);
        assert!(shard.arena.len() < full / 2);
        for (i, id) in ids.iter().enumerate() {
            assert!(shard.unpack(&Key::of(id)));
            let Some(Slot::Ready(live)) = shard.slots.get(&Key::of(id)) else {
                panic!("row {i} is not ready");
            };
            assert_eq!(&*live.loaded.customer_id, id.as_str());
            assert_eq!(
                live.loaded.subjects,
                [format!("s{i}"), format!("s{i}-alias")]
            );
            assert_eq!(&*live.namespace, "default");
            assert_eq!(live.generation, 7);
        }
    }

    #[test]
    fn ids_and_subject_keys_come_back_from_the_row() {
        let mut shard = Shard::default();
        // A text id, and a subject key that is none of the subjects: both come back.
        let mut row = live("customer-1", "s");
        if let Slot::Ready(live) = &mut row {
            live.loaded.subject_key = "elsewhere".into();
        }
        shard.slots.insert(Key::of("customer-1"), row);
        // A subject key that is the second subject.
        let ulid = ulid::Ulid::new().to_string();
        let mut row = live(&ulid, "t");
        if let Slot::Ready(live) = &mut row {
            live.loaded.subject_key = "t-alias".into();
        }
        shard.slots.insert(Key::of(&ulid), row);
        for id in ["customer-1", ulid.as_str()] {
            assert!(shard.pack(&Key::of(id)));
        }
        for (id, subject_key) in [("customer-1", "elsewhere"), (ulid.as_str(), "t-alias")] {
            assert!(shard.unpack(&Key::of(id)));
            let Some(Slot::Ready(live)) = shard.slots.get(&Key::of(id)) else {
                panic!("{id} is not ready");
            };
            assert_eq!(&*live.loaded.customer_id, id);
            assert_eq!(&*live.loaded.subject_key, subject_key);
        }
    }

    #[test]
    fn garbage_bytes_fail_the_unpack_not_the_process() {
        let mut shard = Shard::default();
        let id = ulid::Ulid::new().to_string();
        shard.slots.insert(Key::of(&id), live(&id, "s"));
        assert!(shard.pack(&Key::of(&id)));
        shard.arena.iter_mut().for_each(|b| *b = 0xff);
        assert!(!shard.unpack(&Key::of(&id)));
        assert!(shard.slots.is_empty());
    }
}

#[cfg(test)]
mod retry_tests {
    use super::retry_after_ms;

    #[test]
    fn failed_loads_back_off_exponentially_up_to_30s() {
        assert_eq!(retry_after_ms(0), 100);
        assert_eq!(retry_after_ms(1), 200);
        assert_eq!(retry_after_ms(5), 3_200);
        assert_eq!(retry_after_ms(9), 30_000);
        assert_eq!(retry_after_ms(u32::MAX), 30_000);
    }
}
