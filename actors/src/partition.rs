//! `PartitionActor`: reads one stream partition, drops duplicates, routes batches.

use crate::attribution::CustomerRef;
use crate::customer::{Activation, CustomerKey, Matcher, Subscription, UsageSample, UsageSink};
use crate::health::Health;
use crate::meter::{Barrier, Fold, MeterActor, Reservation, Rollups};
use crate::metrics::Metrics;
use actix::prelude::*;
use bytes::Bytes;
use chrono::Utc;
use metron_connectors::{EventStream, PartitionId, Record};
use metron_engine::failpoint::Action;
use metron_engine::meter::{CompiledMeter, Extract};
use metron_engine::record::{self, RecordView};
use metron_engine::window::floor_minute_ms;
use metron_storage::dedup::{DedupIndex, dedup_key};
use metron_storage::manifest::EventFile;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Where a partition sends a meter's samples.
#[derive(Clone)]
pub struct Route {
    pub namespace: String,
    pub meter_id: String,
    pub compiled: CompiledMeter,
    pub addr: Addr<MeterActor>,
}

/// Limits of one partition's read loop.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub batch_records_max: usize,
    pub wait: Duration,
    /// Above this many events held since the last seal, the partition asks for a
    /// checkpoint early.
    pub pending_events_max: usize,
    /// The partition's share of the memory budget for events it holds (read and not yet
    /// in a committed checkpoint): at it, the partition stops reading until a checkpoint
    /// frees some, so the unread backlog grows and ingest answers 429.
    pub held_bytes_max: usize,
    /// The memory share of every meter's minute states not yet in a committed checkpoint
    /// (process-wide, `Metrics::live_window_bytes`): at it, every partition stops reading.
    pub live_window_bytes_max: usize,
}

/// Records held in memory: one shared chunk per batch read (a read of the held events
/// shares them instead of copying). Each is a slice of the stream's read buffer.
pub type Chunk = Arc<Vec<Bytes>>;

/// The one dedup index of all partitions.
pub type SharedDedup = Arc<parking_lot::Mutex<DedupIndex>>;

/// The records of a chunk, read in place (every held record was parsed once already).
pub fn views(chunk: &[Bytes]) -> impl Iterator<Item = RecordView<'_>> {
    chunk.iter().filter_map(|r| RecordView::parse(r).ok())
}

/// Resident bytes one held event takes, estimated from its record's size: the record's
/// bytes, its `Bytes` handle and its share of the buffer it came in; a checkpoint
/// encodes the events it writes once more as Arrow columns. Kept on the high side: an
/// underestimate lets resident memory pass the budget.
pub fn held_bytes_of(record_len: usize) -> usize {
    record_len * 2 + 64
}

pub struct PartitionActor {
    partition: PartitionId,
    stream: Arc<dyn EventStream>,
    /// The dedup index every partition shares, so that an event is a duplicate of any
    /// earlier one with its (namespace, source, id), whatever its subject and partition.
    /// Used only on blocking threads (its lookups read run files, its spills and
    /// checkpoints write and fsync them).
    dedup: SharedDedup,
    routes: Arc<Vec<Route>>,
    next_offset: u64,
    consumed: Arc<Vec<AtomicU64>>,
    metrics: Arc<Metrics>,
    limits: ReadLimits,
    /// Events since the last seal, one shared chunk per batch read.
    pending: Vec<Chunk>,
    pending_events: usize,
    pending_bytes: usize,
    /// Sealed events whose checkpoint is not committed yet, and their estimated bytes.
    sealed: Vec<(u64, Chunk, usize)>,
    /// Stopped reading at the memory share; a commit resumes.
    full: bool,
    /// A look at the shares is scheduled (live windows shrink on commits this actor
    /// does not receive).
    rechecking: bool,
    /// Event files of this partition in the last committed checkpoint.
    files: Vec<EventFile>,
    /// The dedup index's generation the pending events belong to: a batch of a later
    /// one (the index rotated for a checkpoint) first cuts the pending events.
    generation: u64,
    /// Events cut for the checkpoint of generation `.0` (up to offset `.1`), kept in
    /// `sealed` under [`UNASSIGNED`] until the Seal message names the checkpoint's epoch.
    cut: Option<(u64, u64)>,
    polling: bool,
    checkpoint_wanted: Arc<AtomicBool>,
    /// Customers with live balances, by namespace and subject: their usage is sent
    /// to their customer's row, one delivery per customer per batch.
    subscriptions: HashMap<String, Routes>,
    activation: Activation,
    health: Arc<Health>,
    /// Notified by [`PartitionHandle`] after each message it sends: ends a read that waits
    /// for records, so that the message is handled at once.
    attention: Arc<tokio::sync::Notify>,
}

/// Messages a partition's mailbox holds before a sender waits (actix's default is 16).
/// Past it, a message enqueues only when its sender is polled again, after the
/// notification: the partition may then handle it at its next wake-up, `readWaitMax` later.
const MAILBOX_CAPACITY: usize = 4096;

/// The address of a partition actor, for every sender of its messages.
///
/// A partition waits in its stream's read for records, and its mailbox waits behind the
/// read (the read is the actor's `wait`). Waiting a few milliseconds at a time kept seals,
/// subscriptions and reads of held events prompt, but woke each idle partition hundreds of
/// times a second: about 4 % of a core for a server doing nothing. Each send through the
/// handle notifies the partition's read, which returns at once, and the read may then wait
/// long ([`ReadLimits::wait`]).
#[derive(Clone)]
pub struct PartitionHandle {
    addr: Addr<PartitionActor>,
    attention: Arc<tokio::sync::Notify>,
}

impl PartitionHandle {
    /// Starts a partition actor on `arbiter`.
    pub fn start(
        arbiter: &ArbiterHandle,
        make: impl FnOnce() -> PartitionActor + Send + 'static,
    ) -> Self {
        let attention = Arc::new(tokio::sync::Notify::new());
        let shared = attention.clone();
        let addr = PartitionActor::start_in_arbiter(arbiter, move |ctx| {
            // Few messages come, each awaited or small: room for far more than ever
            // wait, so that none is held back at the mailbox's door, where the
            // notification would not see it.
            ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
            let mut actor = make();
            actor.attention = shared;
            actor
        });
        Self { addr, attention }
    }

    /// Sends a message and wakes the partition to handle it.
    pub async fn send<M>(&self, msg: M) -> Result<M::Result, MailboxError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        PartitionActor: Handler<M>,
    {
        let request = self.addr.send(msg);
        self.attention.notify_one();
        request.await
    }

    /// Sends a message without waiting for its answer, and wakes the partition.
    pub fn do_send<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        PartitionActor: Handler<M>,
    {
        self.addr.do_send(msg);
        self.attention.notify_one();
    }
}

impl PartitionActor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        partition: PartitionId,
        stream: Arc<dyn EventStream>,
        dedup: SharedDedup,
        routes: Arc<Vec<Route>>,
        offset: u64,
        files: Vec<EventFile>,
        consumed: Arc<Vec<AtomicU64>>,
        metrics: Arc<Metrics>,
        limits: ReadLimits,
        checkpoint_wanted: Arc<AtomicBool>,
        activation: Activation,
        health: Arc<Health>,
    ) -> Self {
        Self {
            health,
            checkpoint_wanted,
            partition,
            stream,
            dedup,
            routes,
            next_offset: offset,
            consumed,
            metrics,
            limits,
            pending: Vec::new(),
            pending_events: 0,
            pending_bytes: 0,
            sealed: Vec::new(),
            full: false,
            rechecking: false,
            files,
            generation: 0,
            cut: None,
            polling: false,
            subscriptions: HashMap::new(),
            activation,
            attention: Arc::new(tokio::sync::Notify::new()),
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.polling || self.health.fatal_reason().is_some() {
            return;
        }
        let windows = self.live_window_bytes();
        if self.held_bytes() >= self.limits.held_bytes_max
            || windows >= self.limits.live_window_bytes_max
        {
            // At a memory share: read nothing more until a checkpoint commits.
            if !self.full {
                self.full = true;
                tracing::warn!(
                    partition = self.partition,
                    held_bytes = self.held_bytes(),
                    held_bytes_max = self.limits.held_bytes_max,
                    live_window_bytes = windows,
                    live_window_bytes_max = self.limits.live_window_bytes_max,
                    "The partition holds its share of memory (or the live windows theirs); it stops reading until a checkpoint frees some."
                );
            }
            if !self.rechecking {
                // Live windows are freed by a commit the partition does not see: look again.
                self.rechecking = true;
                ctx.run_later(Duration::from_millis(100), |act, ctx| {
                    act.rechecking = false;
                    act.poll(ctx);
                });
            }
            self.checkpoint_wanted.store(true, Ordering::Release);
            return;
        }
        self.full = false;
        match metron_engine::failpoint::eval("partition.read") {
            None => {}
            Some(Action::Sleep(d)) => {
                ctx.run_later(d, |act, ctx| act.poll(ctx));
                return;
            }
            Some(Action::Error) => {
                ctx.run_later(Duration::from_millis(200), |act, ctx| act.poll(ctx));
                return;
            }
            Some(Action::Panic) => panic!("failpoint partition.read"),
        }
        self.polling = true;
        let stream = self.stream.clone();
        let (partition, from, limits) = (self.partition, self.next_offset, self.limits);
        let dedup = self.dedup.clone();
        let attention = self.attention.clone();
        let read = async move {
            // A message sent through the handle ends the wait: the reads are cancel-safe
            // (nothing is consumed until the batch is processed).
            let records = tokio::select! {
                biased;
                records = stream.read(partition, from, limits.batch_records_max, limits.wait) => records?,
                () = attention.notified() => Vec::new(),
            };
            Ok(dedup_batch(records, dedup).await)
        };
        ctx.wait(read.into_actor(self).map(|result, act, ctx| {
            act.polling = false;
            match result {
                Ok(batch) => {
                    let processed = batch.and_then(|b| {
                        if b.generation > act.generation {
                            // The dedup index rotated before this batch: what came before
                            // it belongs to that checkpoint.
                            act.cut();
                            act.generation = b.generation;
                        }
                        act.process(b)
                    });
                    if let Err(reason) = processed {
                        act.health.fatal(format!("partition {}: {reason}", act.partition));
                        return;
                    }
                }
                Err(metron_connectors::Error::Closed) => {
                    tracing::debug!(partition = act.partition, "The stream closed; the partition stops reading.");
                    return;
                }
                Err(error) => {
                    tracing::error!(partition = act.partition, %error, "Reading the stream failed.");
                    ctx.run_later(Duration::from_millis(200), |act, ctx| act.poll(ctx));
                    return;
                }
            }
            // Yield to the mailbox (seals, reads, route changes) before the next read.
            ctx.run_later(Duration::ZERO, |act, ctx| act.poll(ctx));
        }));
    }

    /// Folds a deduplicated batch per meter (one message per touched meter), keeps it for the checkpoint.
    fn process(&mut self, batch: Deduped) -> Result<(), String> {
        let Deduped {
            next_offset,
            records: record_count,
            bytes,
            events,
            fresh,
            generation: _,
        } = batch;
        if record_count == 0 {
            return Ok(());
        }
        let processed = events.len() as u64;
        let mut folds: Vec<Rollups> = self.routes.iter().map(|_| Rollups::default()).collect();
        let mut invalid = 0u64;
        let mut kept = Vec::with_capacity(events.len());
        let mut usage = Usage::new();
        let mut activate: std::collections::BTreeSet<(String, String)> = Default::default();
        for (payload, is_new) in events.into_iter().zip(fresh) {
            if !is_new {
                continue;
            }
            let Ok(event) = RecordView::parse(&payload) else {
                continue;
            };
            let time_ms = event.time_ms();
            for (route, fold) in self.routes.iter().zip(folds.iter_mut()) {
                if route.namespace != event.namespace
                    || !route.compiled.matches_at(event.event_type, time_ms)
                {
                    continue;
                }
                match route.compiled.extract_text(event.data) {
                    Extract::Sample(sample) => fold.fold_at(
                        floor_minute_ms(time_ms),
                        event.subject,
                        sample.group,
                        route.compiled.aggregation,
                        &sample.value,
                        time_ms,
                    ),
                    Extract::Invalid(_) => invalid += 1,
                    Extract::Skip => {}
                }
            }

            if !route_usage(&self.subscriptions, &event, time_ms, &mut usage)
                && let Some(customer) = self.activation.customer_of(event.namespace, event.subject)
            {
                activate.insert((event.namespace.to_owned(), customer));
            }
            kept.push(payload);
        }
        Metrics::add(
            &self.metrics.events_duplicate_total,
            (record_count - kept.len()) as u64,
        );
        Metrics::add(&self.metrics.events_invalid_total, invalid);
        for (route, mut fold) in self.routes.iter().zip(folds) {
            if !fold.is_empty() {
                let reserved = Reservation::new(self.metrics.clone(), fold.bytes());
                route.addr.do_send(Fold {
                    partition: self.partition,
                    rows: fold.drain_rows(),
                    reserved,
                });
            }
        }
        for (namespace, customers) in usage {
            let Some(sink) = self.subscriptions.get(&namespace).map(|r| r.sink.clone()) else {
                continue;
            };
            for ((_, generation), (who, samples)) in customers {
                let customer = CustomerKey::of(who.id());
                if !sink(&customer, generation, samples) {
                    // The customer left memory (passivated) or loaded again: its next
                    // activation reads these events from the partition, so ask for it now.
                    self.drop_routes(&namespace, generation, &who);
                    activate.insert((namespace.clone(), who.id().to_owned()));
                }
            }
        }
        for (namespace, customer) in activate {
            self.activation.request(&namespace, &customer);
        }
        // Counted once folded and delivered to the customers: a reader that saw the
        // count sees the customers' usage of these events.
        Metrics::add(&self.metrics.events_processed_total, processed);
        self.pending_events += kept.len();
        self.pending_bytes += bytes;
        self.metrics
            .held_event_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        if !kept.is_empty() {
            self.pending.push(Arc::new(kept));
        }
        if self.pending_events >= self.limits.pending_events_max
            || self.held_bytes() >= self.limits.held_bytes_max / 2
            || self.live_window_bytes() >= self.limits.live_window_bytes_max / 2
        {
            self.checkpoint_wanted.store(true, Ordering::Release);
        }
        self.next_offset = next_offset;
        if let Some(consumed) = self.consumed.get(self.partition as usize) {
            consumed.store(next_offset, Ordering::Release);
        }
        Ok(())
    }
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.poll(ctx);
    }
}

/// A batch read, decoded and checked against the dedup index.
struct Deduped {
    /// One past the batch's last record.
    next_offset: u64,
    records: usize,
    /// Estimated bytes the batch's events hold.
    bytes: usize,
    /// The records, each parsed once already (a record of the older JSON layout is
    /// rewritten in the current one here).
    events: Vec<Bytes>,
    /// Per event: not a duplicate.
    fresh: Vec<bool>,
    /// The dedup index's generation the keys went into.
    generation: u64,
}

/// Decodes records and checks them against the dedup index, whose lookups, spills and
/// compactions read and write files: on a blocking thread, so that the Arbiter running
/// this partition (and other actors) never waits for the disk.
async fn dedup_batch(
    records: Vec<Record>,
    dedup: Arc<parking_lot::Mutex<DedupIndex>>,
) -> Result<Deduped, String> {
    let Some(last) = records.last() else {
        return Ok(Deduped {
            next_offset: 0,
            records: 0,
            bytes: 0,
            events: Vec::new(),
            fresh: Vec::new(),
            generation: 0,
        });
    };
    let next_offset = last.offset + 1;
    let bytes: usize = records.iter().map(|r| held_bytes_of(r.payload.len())).sum();
    let mut events = Vec::with_capacity(records.len());
    let mut keys: Vec<u128> = Vec::with_capacity(records.len());
    for record in records {
        let not_an_event = |error: record::RecordError| {
            format!("record {} is not an event: {error}", record.offset)
        };
        let payload = match record::upgrade(&record.payload).map_err(not_an_event)? {
            None => record.payload,
            Some(current) => Bytes::from(current),
        };
        let view = RecordView::parse(&payload).map_err(not_an_event)?;
        keys.push(dedup_key(view.namespace, view.source, view.id));
        events.push(payload);
    }
    let now = Utc::now().timestamp_millis();
    let (fresh, generation) = tokio::task::spawn_blocking(move || {
        let mut index = dedup.lock();
        index
            .insert_batch(&keys, now)
            .map(|f| (f, index.generation()))
    })
    .await
    .map_err(|e| format!("the dedup thread failed: {e}"))?
    .map_err(|e| e.to_string())?;
    Ok(Deduped {
        next_offset,
        records: events.len(),
        bytes,
        events,
        fresh,
        generation,
    })
}

/// Seals the events of dedup generation `generation` for checkpoint `epoch`: those read
/// before the index rotated. The partition never stops reading: a batch read after the
/// rotation cut them already (see [`PartitionActor::cut`]); otherwise they are cut now.
#[derive(Message)]
#[rtype(result = "Result<SealReply, String>")]
pub struct Seal {
    pub epoch: u64,
    pub generation: u64,
}

pub struct SealReply {
    pub partition: PartitionId,
    /// Every record below it is in `events` or an earlier checkpoint.
    pub offset: u64,
    pub events: Chunk,
}

/// The epoch of events cut for a checkpoint whose Seal message has not come yet.
const UNASSIGNED: u64 = u64::MAX;

/// Checkpoint `epoch` is durable; these are the partition's event files now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Committed {
    pub epoch: u64,
    pub files: Vec<EventFile>,
}

/// Replaces the meter routes; answers with every event the partition holds in
/// memory (all events read and not in committed files), so that a new meter can be
/// backfilled: events before this message come from the answer, after it by routing.
#[derive(Message)]
#[rtype(result = "Held")]
pub struct SetRoutes {
    pub routes: Arc<Vec<Route>>,
}

/// A namespace's subscribed customers at one partition.
struct Routes {
    /// Where usage goes (the newest subscription's; there is one entitlement service).
    sink: UsageSink,
    by_subject: HashSet<Routed>,
}

/// One subject of a subscribed customer. Held for every customer in memory, so it is
/// the whole subscription inline (no allocation of its own, 56 bytes): it reads as the
/// subject's text, borrowed from the customer's record, so the set holds no copy of the
/// string, and the customer's id is the record's.
struct Routed {
    who: CustomerRef,
    /// Where the subject starts in `who`.
    at: usize,
    generation: u64,
    matchers: Arc<Vec<Matcher>>,
}

impl Routed {
    fn subject(&self) -> &str {
        self.who.at(self.at).map_or("", |(s, _)| s)
    }
}

crate::keyed_by_str!(Routed, Routed::subject);

/// One batch's usage: by namespace, then by customer (its record, by address: the
/// value holds the record, so the address stays its own for the batch) and
/// subscription generation.
type Usage = HashMap<String, HashMap<(usize, u64), (CustomerRef, Vec<UsageSample>)>>;

/// The usage one event brings to its customer's entitlements, if the customer is
/// subscribed (false when not).
fn route_usage(
    subscriptions: &HashMap<String, Routes>,
    event: &RecordView<'_>,
    time_ms: i64,
    usage: &mut Usage,
) -> bool {
    let Some(routed) = subscriptions
        .get(event.namespace)
        .and_then(|routes| routes.by_subject.get(event.subject))
    else {
        return false;
    };
    let mut samples = routed
        .matchers
        .iter()
        .filter_map(|m| m.sample_at(event.event_type, time_ms, event.data))
        .peekable();
    if samples.peek().is_none() {
        return true;
    }
    let of_namespace = match usage.get_mut(event.namespace) {
        Some(of_namespace) => of_namespace,
        None => usage.entry(event.namespace.to_owned()).or_default(),
    };
    of_namespace
        .entry((routed.who.address(), routed.generation))
        .or_insert_with(|| (routed.who.clone(), Vec::new()))
        .1
        .extend(samples);
    true
}

/// Starts sending a customer's usage to its actor, atomically with a read of the
/// customer's events held so far: every event is either in the answer or in a later
/// delivery to the subscription's sink, never both.
#[derive(Message)]
#[rtype(result = "Held")]
pub struct Subscribe {
    pub subscription: Arc<Subscription>,
}

/// Stops sending a customer's usage (only if the subscription is still this customer's).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub namespace: String,
    pub customer_id: String,
    /// Only the subscription of this generation (a newer one stays).
    pub generation: u64,
    pub subjects: Vec<String>,
}

impl Handler<Subscribe> for PartitionActor {
    type Result = MessageResult<Subscribe>;
    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        let sub = msg.subscription;
        let routes = match self.subscriptions.get_mut(&*sub.namespace) {
            Some(routes) => {
                routes.sink = sub.sink.clone();
                routes
            }
            None => self
                .subscriptions
                .entry(sub.namespace.to_string())
                .or_insert_with(|| Routes {
                    sink: sub.sink.clone(),
                    by_subject: HashSet::new(),
                }),
        };
        for at in sub.who.subject_starts() {
            routes.by_subject.replace(Routed {
                who: sub.who.clone(),
                at,
                generation: sub.generation,
                matchers: sub.matchers.clone(),
            });
        }
        let subjects: Vec<&str> = sub.subjects().collect();
        let admits = |r: &Bytes| {
            RecordView::parse(r)
                .is_ok_and(|e| e.namespace == &*sub.namespace && subjects.contains(&e.subject))
        };
        let events: Vec<Chunk> = self
            .sealed
            .iter()
            .map(|(_, list, _)| list)
            .chain(&self.pending)
            .map(|list| Arc::new(list.iter().filter(|e| admits(e)).cloned().collect()))
            .collect();
        MessageResult(Held {
            files: self
                .files
                .iter()
                .filter(|f| *f.namespace == *sub.namespace)
                .cloned()
                .collect(),
            events,
        })
    }
}

impl PartitionActor {
    /// Forgets a subscription's subjects (those still routed to it).
    fn drop_routes(&mut self, namespace: &str, generation: u64, who: &CustomerRef) {
        self.unroute(namespace, who.id(), generation, who.subjects());
    }

    fn unroute<'a>(
        &mut self,
        namespace: &str,
        customer_id: &str,
        generation: u64,
        subjects: impl Iterator<Item = &'a str>,
    ) {
        let Some(routes) = self.subscriptions.get_mut(namespace) else {
            return;
        };
        for subject in subjects {
            if routes
                .by_subject
                .get(subject)
                .is_some_and(|r| r.who.id() == customer_id && r.generation == generation)
            {
                routes.by_subject.remove(subject);
            }
        }
        if routes.by_subject.is_empty() {
            self.subscriptions.remove(namespace);
        }
    }
}

impl Handler<Unsubscribe> for PartitionActor {
    type Result = ();
    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        self.unroute(
            &msg.namespace,
            &msg.customer_id,
            msg.generation,
            msg.subjects.iter().map(String::as_str),
        );
    }
}

/// The events a partition holds: committed files and in-memory events.
#[derive(Message)]
#[rtype(result = "Held")]
pub struct ReadHeld;

pub struct Held {
    pub files: Vec<EventFile>,
    pub events: Vec<Chunk>,
}

impl PartitionActor {
    fn held(&self) -> Held {
        let events: Vec<Chunk> = self
            .sealed
            .iter()
            .map(|(_, e, _)| e.clone())
            .chain(self.pending.iter().cloned())
            .collect();
        Held {
            files: self.files.clone(),
            events,
        }
    }

    /// Every meter's estimated bytes of minute states not yet in a committed checkpoint.
    fn live_window_bytes(&self) -> usize {
        usize::try_from(self.metrics.live_window_bytes.load(Ordering::Relaxed))
            .unwrap_or(usize::MAX)
    }

    /// Estimated bytes of the events held in memory (pending and sealed).
    fn held_bytes(&self) -> usize {
        self.pending_bytes + self.sealed.iter().map(|(_, _, b)| b).sum::<usize>()
    }
}

impl PartitionActor {
    /// Cuts the pending events for the checkpoint of the current dedup generation, and
    /// tells every meter: its folds from this partition before the barrier belong to
    /// that checkpoint, those after it to the next (asynchronous barrier snapshot).
    fn cut(&mut self) {
        let chunks = std::mem::take(&mut self.pending);
        let mut events = Vec::with_capacity(self.pending_events);
        for chunk in chunks {
            // A chunk a reader still holds is copied (its records are shared); otherwise
            // it is moved.
            match Arc::try_unwrap(chunk) {
                Ok(list) => events.extend(list),
                Err(shared) => events.extend(shared.iter().cloned()),
            }
        }
        let bytes = std::mem::take(&mut self.pending_bytes);
        self.pending_events = 0;
        self.sealed.push((UNASSIGNED, Arc::new(events), bytes));
        self.cut = Some((self.generation, self.next_offset));
        for route in self.routes.iter() {
            route.addr.do_send(Barrier {
                partition: self.partition,
                generation: self.generation,
            });
        }
    }
}

impl Handler<Seal> for PartitionActor {
    type Result = MessageResult<Seal>;
    fn handle(&mut self, msg: Seal, _: &mut Context<Self>) -> Self::Result {
        if self.generation == msg.generation {
            // No batch since the rotation: everything read so far is before it.
            self.cut();
            self.generation += 1;
        }
        let reply = match self.cut.take() {
            Some((generation, offset)) if generation == msg.generation => {
                match self.sealed.iter_mut().find(|(e, _, _)| *e == UNASSIGNED) {
                    Some(entry) => {
                        entry.0 = msg.epoch;
                        Ok(SealReply {
                            partition: self.partition,
                            offset,
                            events: entry.1.clone(),
                        })
                    }
                    None => Err(format!(
                        "partition {}: the cut events of generation {generation} are missing",
                        self.partition
                    )),
                }
            }
            other => Err(format!(
                "partition {}: asked to seal generation {} but the cut is {other:?} (at generation {})",
                self.partition, msg.generation, self.generation
            )),
        };
        MessageResult(reply)
    }
}

impl Handler<Committed> for PartitionActor {
    type Result = ();
    fn handle(&mut self, msg: Committed, ctx: &mut Context<Self>) {
        let before = self.held_bytes();
        self.sealed.retain(|(epoch, _, _)| *epoch > msg.epoch);
        let freed = before.saturating_sub(self.held_bytes());
        self.metrics
            .held_event_bytes
            .fetch_sub(freed as u64, Ordering::Relaxed);
        self.files = msg.files;
        if self.full {
            self.poll(ctx);
        }
    }
}

impl Handler<SetRoutes> for PartitionActor {
    type Result = MessageResult<SetRoutes>;
    fn handle(&mut self, msg: SetRoutes, _: &mut Context<Self>) -> Self::Result {
        self.routes = msg.routes;
        MessageResult(self.held())
    }
}

impl Handler<ReadHeld> for PartitionActor {
    type Result = MessageResult<ReadHeld>;
    fn handle(&mut self, _: ReadHeld, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.held())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One entry per subject of every customer in memory, packed ones included: a field
    // added here costs its size × 1.3 (hash table slack) per customer at rest.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_routing_entry_stays_56_bytes() {
        assert_eq!(std::mem::size_of::<Routed>(), 56);
    }
}
