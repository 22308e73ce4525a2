//! `SnapshotActor`: checkpoints, and meter (re)registration, which must not
//! interleave with a checkpoint.

use crate::compaction;
use crate::health::Health;
use crate::meter::{self, MeterActor};
use crate::metrics::Metrics;
use crate::partition::{self, PartitionHandle, Route, SealReply, SetRoutes, SharedDedup};
use actix::prelude::*;
use chrono::Utc;
use metron_connectors::EventStream;
use metron_engine::failpoint::Action;
use metron_engine::meter::Meter;
use metron_engine::record::RecordView;
use metron_storage::dedup::DedupState;
use metron_storage::dedup_objects;
use metron_storage::manifest::{self, DedupRun, EventFile, Manifest, PartitionState};
use metron_storage::query::QueryService;
use metron_storage::{events, objects, paths};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A meter the pipeline runs.
#[derive(Clone)]
pub struct MeterEntry {
    pub meter: Arc<Meter>,
    pub addr: Addr<MeterActor>,
}

/// What was sealed but not yet durably written.
struct Pending {
    epoch: u64,
    partitions: Vec<SealReply>,
    meters: Vec<meter::Sealed>,
    /// The shared dedup index's runs at the seal.
    dedup: DedupState,
}

pub struct SnapshotActor {
    epoch: u64,
    manifest: Manifest,
    partitions: Vec<PartitionHandle>,
    dedup: SharedDedup,
    meters: BTreeMap<String, MeterEntry>,
    stream: Arc<dyn EventStream>,
    query: QueryService,
    metrics: Arc<Metrics>,
    interval: Duration,
    pending: Option<Pending>,
    garbage: Vec<Garbage>,
    running: bool,
    /// A meter change is re-routing the partitions: no checkpoint may start (its
    /// barriers would miss the meters a partition does not route to yet).
    routing: bool,
    /// Meter changes that came during a checkpoint, applied after it.
    deferred: Vec<SetMeters>,
    again: bool,
    waiting: Vec<Done>,
    wanted: Arc<std::sync::atomic::AtomicBool>,
    last_started: Instant,
    health: Arc<Health>,
    /// Checkpoints failing for this long are fatal.
    failure_deadline: Duration,
    /// Meters changed since the last checkpoint started.
    meters_changed: bool,
    /// The dedup index's directory when its runs are copied to the object store at every
    /// checkpoint (a stream several nodes share: see `metron_storage::dedup_objects`).
    ship_dedup: Option<std::path::PathBuf>,
}

type Done = tokio::sync::oneshot::Sender<Result<u64, String>>;

/// A file a committed checkpoint no longer names.
struct Garbage {
    epoch: u64,
    at: Instant,
    path: String,
}

/// How long a superseded file stays readable (longer than any query may run).
pub const GARBAGE_GRACE: Duration = Duration::from_secs(120);

impl SnapshotActor {
    // Each argument is a separate piece of wiring made once at startup.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        manifest: Manifest,
        partitions: Vec<PartitionHandle>,
        dedup: SharedDedup,
        meters: BTreeMap<String, MeterEntry>,
        stream: Arc<dyn EventStream>,
        query: QueryService,
        metrics: Arc<Metrics>,
        interval: Duration,
        wanted: Arc<std::sync::atomic::AtomicBool>,
        health: Arc<Health>,
        failure_deadline: Duration,
    ) -> Self {
        Self {
            meters_changed: false,
            health,
            failure_deadline,
            epoch: manifest.epoch,
            manifest,
            partitions,
            dedup,
            meters,
            stream,
            query,
            metrics,
            interval,
            pending: None,
            garbage: Vec::new(),
            running: false,
            routing: false,
            deferred: Vec::new(),
            again: false,
            waiting: Vec::new(),
            wanted,
            last_started: Instant::now(),
            ship_dedup: None,
        }
    }

    /// Copies the dedup runs each checkpoint names from `dir` into the object store, and
    /// records them in its manifest, so that another node can take over with them.
    pub fn shipping_dedup(mut self, dir: std::path::PathBuf) -> Self {
        self.ship_dedup = Some(dir);
        self
    }

    /// Numbers the next checkpoints above `epoch` (the highest manifest name in the
    /// store, which may be one `manifest::load_latest` could not read): manifests are
    /// written create-only, so reusing its epoch would fail every checkpoint.
    pub fn with_epoch_floor(mut self, epoch: u64) -> Self {
        if epoch > self.epoch {
            tracing::warn!(
                loaded = self.epoch,
                highest = epoch,
                "A newer checkpoint manifest than the one loaded exists; the next checkpoints are numbered above it."
            );
            self.epoch = epoch;
        }
        self
    }

    /// The routes every partition uses for the current meters.
    pub fn routes(meters: &BTreeMap<String, MeterEntry>) -> Arc<Vec<Route>> {
        Arc::new(
            meters
                .values()
                .map(|m| Route {
                    namespace: m.meter.namespace.clone(),
                    meter_id: m.meter.id.clone(),
                    compiled: m.meter.compile(),
                    addr: m.addr.clone(),
                })
                .collect(),
        )
    }

    fn checkpoint(&mut self, ctx: &mut Context<Self>, done: Option<Done>) {
        // One checkpoint at a time: a tick or request during one is served by the next.
        if self.running || self.routing {
            self.waiting.extend(done);
            self.again = true;
            return;
        }
        self.running = true;
        self.meters_changed = false;
        let done: Vec<Done> = done
            .into_iter()
            .chain(std::mem::take(&mut self.waiting))
            .collect();
        let epoch = self.epoch + 1;
        let pending = self.pending.take();
        let partitions = self.partitions.clone();
        let dedup = self.dedup.clone();
        let meters: Vec<Addr<MeterActor>> = self.meters.values().map(|m| m.addr.clone()).collect();
        let base = self.manifest.clone();
        let query = self.query.clone();
        let stream = self.stream.clone();
        let ship_dedup = self.ship_dedup.clone();
        let health = self.health.clone();
        // Files superseded by compaction are deleted once no query can still hold
        // them: two checkpoints later and at least a query timeout after.
        let now = Instant::now();
        let (due, kept): (Vec<Garbage>, Vec<Garbage>) = std::mem::take(&mut self.garbage)
            .into_iter()
            .partition(|g| g.epoch + 2 <= self.epoch && now.duration_since(g.at) >= GARBAGE_GRACE);
        self.garbage = kept;
        let work = async move {
            for g in due {
                if let Err(error) = query.root().delete(&objects::object_path(&g.path)).await {
                    tracing::warn!(path = %g.path, %error, "Could not delete a compacted file.");
                }
            }
            let pending = match pending {
                Some(p) => p,
                None => seal(epoch, &partitions, &dedup, &meters).await?,
            };
            match write(&query, &base, &pending, ship_dedup.as_deref(), &health).await {
                Ok((manifest, superseded)) => {
                    for p in &manifest.partitions {
                        if let Err(error) = stream.commit(p.partition, p.offset).await {
                            tracing::warn!(partition = p.partition, %error, "Could not trim the stream after a checkpoint.");
                        }
                    }
                    if let Err(error) = manifest::prune(query.root(), manifest.epoch, 3).await {
                        tracing::warn!(%error, "Could not prune old checkpoint manifests.");
                    }
                    Ok((manifest, superseded))
                }
                Err(reason) => Err((reason, Some(pending))),
            }
        };
        ctx.wait(work.into_actor(self).map(
            move |result: Result<(Manifest, Vec<String>), (String, Option<Pending>)>, act, ctx| {
                act.running = false;
                match result {
                    Ok((manifest, superseded)) => {
                        act.epoch = manifest.epoch;
                        let at = Instant::now();
                        act.garbage
                            .extend(superseded.into_iter().map(|path| Garbage {
                                epoch: manifest.epoch,
                                at,
                                path,
                            }));
                        for entry in act.meters.values() {
                            entry.addr.do_send(meter::Committed {
                                epoch: manifest.epoch,
                                files: manifest.meter_files(&entry.meter.id),
                            });
                        }
                        for (i, addr) in act.partitions.iter().enumerate() {
                            let files = manifest
                                .event_files
                                .iter()
                                .filter(|f| f.partition as usize == i)
                                .cloned()
                                .collect();
                            addr.do_send(partition::Committed {
                                epoch: manifest.epoch,
                                files,
                            });
                        }
                        Metrics::add(&act.metrics.checkpoints_total, 1);
                        act.metrics
                            .checkpoint_epoch
                            .store(manifest.epoch, std::sync::atomic::Ordering::Relaxed);
                        act.health.checkpoint_outcome(true);
                        // The checkpoint freed what it wrote (the partitions' held events,
                        // their Arrow batches and Parquet bytes, compaction's buffers): hand
                        // the pages back, or the allocator keeps them. Measured at full rate
                        // with a 512 MiB budget: 372 MB free but resident in glibc's arenas,
                        // 45 % of the process's anonymous memory.
                        tokio::task::spawn_blocking(crate::memory::release_freed_memory);
                        tracing::debug!(epoch = manifest.epoch, "Committed a checkpoint.");
                        let epoch = manifest.epoch;
                        act.manifest = manifest;
                        for d in done {
                            let _ = d.send(Ok(epoch));
                        }
                    }
                    Err((reason, pending)) => {
                        Metrics::add(&act.metrics.checkpoint_failures_total, 1);
                        let failing = act.health.checkpoint_outcome(false).unwrap_or_default();
                        if pending.is_none() {
                            // A failed seal leaves state the next checkpoint cannot
                            // describe: restart from the last manifest.
                            act.health
                                .fatal(format!("sealing a checkpoint failed: {reason}"));
                        } else if failing >= act.failure_deadline {
                            act.health.fatal(format!(
                                "checkpoints have failed for {:.0?} (deadline {:?}): {reason}",
                                failing, act.failure_deadline
                            ));
                        } else {
                            tracing::error!(%reason, "A checkpoint failed; it will be retried.");
                        }
                        act.pending = pending;
                        for d in done {
                            let _ = d.send(Err(reason.clone()));
                        }
                    }
                }
                if !act.deferred.is_empty() {
                    // Meter changes first; the last one starts the checkpoint asked for.
                    for msg in std::mem::take(&mut act.deferred) {
                        ctx.notify(msg);
                    }
                } else if std::mem::take(&mut act.again) {
                    act.checkpoint(ctx, None);
                }
            },
        ));
    }
}

type SealResult = Result<Pending, (String, Option<Pending>)>;

/// An asynchronous barrier snapshot: the dedup index every partition shares rotates (the
/// cut, an instant under its lock: a partition's batches before it belong to this
/// checkpoint, after it to the next); each partition cuts its events at its first batch
/// after the rotation, or at this Seal if none came, and sends a barrier to every meter;
/// each meter answers once every partition's barrier came. No partition stops reading.
/// Then the frozen dedup tier is written.
async fn seal(
    epoch: u64,
    partitions: &[PartitionHandle],
    dedup: &SharedDedup,
    meters: &[Addr<MeterActor>],
) -> SealResult {
    let started = Instant::now();
    let rotated = {
        let mut index = dedup.lock();
        let generation = index.generation();
        index
            .rotate(Utc::now().timestamp_millis())
            .map(|job| (job, generation))
    };
    let (job, generation) = match rotated {
        Ok(rotated) => rotated,
        Err(error) => return Err((format!("the dedup checkpoint failed: {error}"), None)),
    };
    let mut failure = None;
    let replies = futures::future::join_all(
        partitions
            .iter()
            .map(|addr| addr.send(partition::Seal { epoch, generation })),
    )
    .await;
    let mut sealed_partitions = Vec::with_capacity(partitions.len());
    for reply in replies {
        match reply {
            Ok(Ok(reply)) => sealed_partitions.push(reply),
            Ok(Err(reason)) => failure = Some(reason),
            Err(error) => failure = Some(error.to_string()),
        }
    }
    // Every partition has cut its events: it reads on meanwhile (a failpoint holds the
    // checkpoint here in the tests that show it).
    match metron_engine::failpoint::eval("checkpoint.align") {
        None => {}
        Some(Action::Sleep(d)) => tokio::time::sleep(d).await,
        Some(Action::Error) => failure = Some("failpoint checkpoint.align".into()),
        Some(Action::Panic) => panic!("failpoint checkpoint.align"),
    }
    let mut sealed = Vec::with_capacity(meters.len());
    if failure.is_none() {
        let replies = futures::future::join_all(
            meters
                .iter()
                .map(|addr| addr.send(meter::Seal { epoch, generation })),
        )
        .await;
        for reply in replies {
            match reply {
                Ok(Ok(s)) => sealed.push(s),
                Ok(Err(reason)) => failure = Some(reason),
                Err(error) => failure = Some(error.to_string()),
            }
        }
    }
    let aligned_ms = started.elapsed().as_millis();
    let mut dedup_state = DedupState::default();
    if failure.is_none() {
        let dedup = dedup.clone();
        let written = tokio::task::spawn_blocking(move || {
            let spilled = job.write()?;
            dedup.lock().install(spilled, Utc::now().timestamp_millis())
        })
        .await;
        match written {
            Ok(Ok(state)) => dedup_state = state,
            Ok(Err(error)) => failure = Some(format!("the dedup checkpoint failed: {error}")),
            Err(error) => failure = Some(format!("the dedup thread failed: {error}")),
        }
    }
    tracing::debug!(
        epoch,
        aligned_ms,
        sealed_ms = started.elapsed().as_millis(),
        "Sealed a checkpoint."
    );
    match failure {
        // The caller ends the process (no pending state to retry with).
        Some(reason) => Err((reason, None)),
        None => Ok(Pending {
            epoch,
            partitions: sealed_partitions,
            meters: sealed,
            dedup: dedup_state,
        }),
    }
}

/// Writes the sealed state as Parquet plus a manifest; returns the manifest.
async fn write(
    query: &QueryService,
    base: &Manifest,
    pending: &Pending,
    ship_dedup: Option<&std::path::Path>,
    health: &Health,
) -> Result<(Manifest, Vec<String>), String> {
    let epoch = pending.epoch;
    let mut manifest = Manifest {
        version: manifest::MANIFEST_VERSION,
        epoch,
        created_at_ms: Utc::now().timestamp_millis(),
        partitions: Vec::new(),
        meters: Vec::new(),
        rollup_files: Vec::new(),
        hourly_meters: Vec::new(),
        event_files: base.event_files.clone(),
        dedup_runs: Some(pending.dedup.runs.iter().map(DedupRun::from).collect()),
    };
    for reply in &pending.partitions {
        manifest.partitions.push(PartitionState {
            partition: reply.partition,
            offset: reply.offset,
            dedup_runs: Vec::new(),
        });
        let mut by_day: BTreeMap<(&str, chrono::NaiveDate), Vec<RecordView<'_>>> = BTreeMap::new();
        for event in partition::views(&reply.events) {
            let Ok(time) = event.time() else {
                continue;
            };
            by_day
                .entry((event.namespace, time.date_naive()))
                .or_default()
                .push(event);
        }
        for ((namespace, day), list) in by_day {
            let path = paths::event_file(namespace, day, epoch, reply.partition, 0);
            let batch = events::to_batch_views(&list).map_err(|e| e.to_string())?;
            let times_us =
                list.iter()
                    .map(RecordView::time_us)
                    .fold(None, |acc: Option<(i64, i64)>, t| {
                        Some(acc.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))))
                    });
            let rows = query
                .write_parquet(path.clone(), batch)
                .await
                .map_err(|e| e.to_string())?;
            manifest.event_files.push(EventFile {
                namespace: namespace.to_owned(),
                partition: reply.partition,
                day: day.to_string(),
                path: path.to_string(),
                rows,
                times_us,
            });
        }
    }
    let live: HashMap<&str, &meter::Sealed> = pending
        .meters
        .iter()
        .map(|m| (m.meter.id.as_str(), m))
        .collect();
    manifest.rollup_files = base
        .rollup_files
        .iter()
        .filter(|f| live.contains_key(f.meter_id.as_str()))
        .cloned()
        .collect();
    manifest.hourly_meters = base
        .hourly_meters
        .iter()
        .filter(|id| live.contains_key(id.as_str()))
        .cloned()
        .collect();
    for sealed in &pending.meters {
        if sealed.complete {
            manifest.meters.push(sealed.meter.id.clone());
        }
        compaction::write_rollups(query, &mut manifest, &sealed.meter, &sealed.rows).await?;
    }
    let mut superseded = compaction::compact_rollups(query, &mut manifest, &live).await?;
    superseded.extend(compaction::compact_events(query, &mut manifest).await?);
    if let (Some(dir), Some(runs)) = (ship_dedup, manifest.dedup_runs.as_mut()) {
        let base_runs = base.dedup_runs.as_deref().unwrap_or_default();
        let moved = dedup_objects::ship(query.root(), dir, runs, base_runs)
            .await
            .map_err(|e| format!("copying the dedup runs to the object store: {e}"))?;
        if moved.runs > 0 {
            tracing::debug!(
                runs = moved.runs,
                bytes = moved.bytes,
                "Copied dedup runs to the object store."
            );
        }
        superseded.extend(dedup_objects::superseded(base_runs, runs));
    }
    // A process whose end is decided writes no manifest: on a shared stream the fatal error
    // may be the loss of the leases (stopped before they can expire, see `crate::leases`), and
    // another node may then hold the partitions and write checkpoints of its own. The check
    // comes last, so that the put follows it by one request only.
    if let Some(reason) = health.fatal_reason() {
        return Err(format!("not committed: the process is ending ({reason})"));
    }
    let partitions = pending.partitions.len() as u32;
    manifest::write(query.root(), &manifest, partitions)
        .await
        .map_err(|e| e.to_string())?;
    Ok((manifest, superseded))
}

impl Actor for SnapshotActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Checkpoints every `interval`, or sooner when a partition holds too many events.
        let tick = self.interval.min(Duration::from_millis(100));
        ctx.run_interval(tick, |act, ctx| {
            let wanted = act.wanted.swap(false, std::sync::atomic::Ordering::AcqRel);
            if wanted || act.last_started.elapsed() >= act.interval {
                act.last_started = Instant::now();
                // A periodic checkpoint with nothing new would only rewrite the manifest.
                if wanted || act.has_news() {
                    act.checkpoint(ctx, None);
                }
            }
        });
    }
}

/// Takes a checkpoint now; answers with its epoch once it is durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CheckpointNow {
    pub done: tokio::sync::oneshot::Sender<Result<u64, String>>,
}

impl Handler<CheckpointNow> for SnapshotActor {
    type Result = ();
    fn handle(&mut self, msg: CheckpointNow, ctx: &mut Context<Self>) {
        self.checkpoint(ctx, Some(msg.done));
    }
}

/// Registers (or replaces) meters and re-routes every partition; answers with the
/// events the partitions held at that moment, for backfilling new meters.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetMeters {
    pub upsert: Vec<MeterEntry>,
    pub remove: Vec<String>,
    pub done: tokio::sync::oneshot::Sender<Vec<partition::Held>>,
}

impl SnapshotActor {
    /// Anything for a checkpoint to write: records past the last one's offsets, a
    /// meter change, or a failed write to retry.
    fn has_news(&self) -> bool {
        self.meters_changed
            || self.pending.is_some()
            || self.manifest.partitions.iter().any(|p| {
                self.stream
                    .end_offset(p.partition)
                    .map_or(true, |end| end > p.offset)
            })
            || self.manifest.partitions.is_empty()
    }
}

impl Handler<SetMeters> for SnapshotActor {
    type Result = ();
    fn handle(&mut self, msg: SetMeters, ctx: &mut Context<Self>) {
        if self.running || self.routing {
            // A checkpoint's barriers must reach exactly the meters it seals.
            self.deferred.push(msg);
            return;
        }
        self.routing = true;
        self.meters_changed = true;
        for id in msg.remove {
            self.meters.remove(&id);
        }
        for entry in msg.upsert {
            self.meters.insert(entry.meter.id.clone(), entry);
        }
        let routes = Self::routes(&self.meters);
        let partitions = self.partitions.clone();
        let work = async move {
            let mut held = Vec::with_capacity(partitions.len());
            for addr in &partitions {
                if let Ok(h) = addr
                    .send(SetRoutes {
                        routes: routes.clone(),
                    })
                    .await
                {
                    held.push(h);
                }
            }
            let _ = msg.done.send(held);
        };
        // Waits so that no checkpoint seals between the route change and the answer.
        ctx.wait(work.into_actor(self).map(|(), act, ctx| {
            act.routing = false;
            if !act.deferred.is_empty() {
                for msg in std::mem::take(&mut act.deferred) {
                    ctx.notify(msg);
                }
            } else if std::mem::take(&mut act.again) {
                act.checkpoint(ctx, None);
            }
        }));
    }
}
