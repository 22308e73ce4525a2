//! The query benches' loader: writes N events of one month into a stopped server's data
//! directory as Metron's own checkpointed state, much faster than HTTP ingest.
//!
//! It reads the newest manifest, then builds checkpoints as the server does: every
//! `--checkpoint-events` events (in time order, as they would arrive) become raw-event
//! files per (partition, day) and one minute-rollup file of the meter, then Metron's own
//! compaction (`metron_actors::compaction`) merges small files; superseded files are
//! deleted at once (no query runs). The last manifest names the meter as complete, so
//! the restarted server serves it without a backfill. The dedup index does not learn the
//! loaded ids (it does not take part in queries).
//!
//! The meter must be a SUM of `$.tokens` grouped by `$.model`; events have subjects
//! `customer-00000`.., models `model-0`.., tokens 1..=1000, from a seeded generator. The
//! loader prints the total of `--probe-subject` per day as JSON, for the bench to check
//! Metron's and DuckDB's answers against.

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use clap::Parser;
use metron_actors::compaction;
use metron_engine::aggregate::AggState;
use metron_engine::event::{CloudEvent, IngestedEvent};
use metron_engine::meter::Meter;
use metron_engine::quantity::Quantity;
use metron_engine::query::RollupRow;
use metron_storage::manifest::{self, EventFile};
use metron_storage::objects::{ObjectRoot, object_path};
use metron_storage::query::QueryService;
use metron_storage::{events, paths};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
struct Args {
    /// The server's data directory (the server must be stopped).
    #[arg(long)]
    data_dir: PathBuf,
    /// The meter as `GET /api/v1/meters/{slug}` answers it (a JSON file).
    #[arg(long)]
    meter_json: PathBuf,
    /// Events to write.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Distinct subjects.
    #[arg(long, default_value_t = 1000)]
    subjects: u64,
    /// Distinct models (the group-by values).
    #[arg(long, default_value_t = 2)]
    models: u64,
    /// The month the events span, as YYYY-MM (UTC).
    #[arg(long, default_value = "2026-11")]
    month: String,
    /// Partitions of the server (its `partitions` setting).
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Events per simulated checkpoint.
    #[arg(long, default_value_t = 400_000)]
    checkpoint_events: u64,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The subject whose daily totals are printed.
    #[arg(long, default_value = "customer-00042")]
    probe_subject: String,
}

const NAMESPACE: &str = "default";
const MINUTE_US: i64 = 60_000_000;

/// splitmix64: a fixed, fast generator, so that a run is repeatable.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

struct Shape {
    start_us: i64,
    span_us: i64,
    events: u64,
    subjects: u64,
    models: u64,
    seed: u64,
    event_type: String,
}

/// Event `i`: its time, subject, model and tokens.
fn event_at(shape: &Shape, i: u64) -> (i64, String, String, u64) {
    let r = mix(shape.seed ^ mix(i));
    let offset = (i128::from(shape.span_us) * i128::from(i) / i128::from(shape.events)) as i64;
    let subject = format!("customer-{:05}", r % shape.subjects);
    let model = format!("model-{}", (r >> 20) % shape.models);
    let tokens = 1 + (r >> 40) % 1000;
    (shape.start_us + offset, subject, model, tokens)
}

fn ingested(shape: &Shape, i: u64, now: DateTime<Utc>) -> Result<IngestedEvent> {
    let (time_us, subject, model, tokens) = event_at(shape, i);
    let mut data = serde_json::Map::new();
    data.insert("tokens".into(), serde_json::Value::from(tokens));
    data.insert("model".into(), serde_json::Value::from(model));
    Ok(IngestedEvent {
        namespace: NAMESPACE.into(),
        ingested_at: now,
        event: CloudEvent {
            id: format!("ql-{i}"),
            source: "queryload".into(),
            specversion: "1.0".into(),
            event_type: shape.event_type.clone(),
            subject,
            time: DateTime::from_timestamp_micros(time_us).context("event time")?,
            datacontenttype: Some("application/json".into()),
            dataschema: None,
            data: Some(data),
        },
    })
}

fn month_bounds(month: &str) -> Result<(i64, i64)> {
    let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
        .with_context(|| format!("--month {month} is not YYYY-MM"))?;
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    }
    .context("next month")?;
    let at = |d: NaiveDate| Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN));
    Ok((at(first).timestamp_micros(), at(next).timestamp_micros()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.meter_json)?;
    let mut meter: Meter = serde_json::from_str(&text).context("the meter JSON")?;
    meter.namespace = NAMESPACE.into();
    if meter.group_by.keys().ne(["model"].iter()) {
        bail!("the meter must group by model alone");
    }
    let meter = Arc::new(meter);
    let (start_us, end_us) = month_bounds(&args.month)?;
    let shape = Shape {
        start_us,
        span_us: end_us - start_us,
        events: args.events.max(1),
        subjects: args.subjects.max(1),
        models: args.models.max(1),
        seed: args.seed,
        event_type: meter.event_type.clone(),
    };
    let root = ObjectRoot::local(args.data_dir.join("objects"))?;
    let query = QueryService::new(tokio::runtime::Handle::current(), root.clone());
    let mut manifest = manifest::load_latest(&root, args.partitions)
        .await?
        .context("no manifest: start the server once (it writes one at its first checkpoint)")?;
    let meters: HashMap<String, Arc<Meter>> = HashMap::from([(meter.id.clone(), meter.clone())]);
    let now = Utc::now();
    let started = std::time::Instant::now();
    let mut probe: BTreeMap<String, u64> = BTreeMap::new();
    let mut i = 0u64;
    while i < shape.events {
        let end = (i + args.checkpoint_events.max(1)).min(shape.events);
        manifest.epoch += 1;
        let epoch = manifest.epoch;
        let mut by_file: BTreeMap<(u32, NaiveDate), Vec<IngestedEvent>> = BTreeMap::new();
        let mut sums: HashMap<(i64, String, String), u64> = HashMap::new();
        for n in i..end {
            let event = ingested(&shape, n, now)?;
            let time_us = event.event.time.timestamp_micros();
            let model = event
                .event
                .data
                .as_ref()
                .and_then(|d| d.get("model"))
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_owned();
            let tokens = event
                .event
                .data
                .as_ref()
                .and_then(|d| d.get("tokens"))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or_default();
            if event.event.subject == args.probe_subject {
                let day = event.event.time.date_naive().to_string();
                *probe.entry(day).or_default() += tokens;
            }
            let minute_ms = time_us.div_euclid(MINUTE_US) * (MINUTE_US / 1000);
            *sums
                .entry((minute_ms, event.event.subject.clone(), model))
                .or_default() += tokens;
            let partition = metron_actors::pipeline::partition_of(
                NAMESPACE,
                &event.event.subject,
                args.partitions,
            );
            by_file
                .entry((partition, event.event.time.date_naive()))
                .or_default()
                .push(event);
        }
        for ((partition, day), list) in by_file {
            let path = paths::event_file(NAMESPACE, day, epoch, partition, 0);
            let times_us = list.iter().map(|e| e.event.time.timestamp_micros()).fold(
                None,
                |acc: Option<(i64, i64)>, t| {
                    Some(acc.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))))
                },
            );
            let rows = query
                .write_parquet(path.clone(), events::to_batch(&list)?)
                .await?;
            manifest.event_files.push(EventFile {
                namespace: NAMESPACE.into(),
                partition,
                day: day.to_string(),
                path: path.to_string(),
                rows,
                times_us,
            });
        }
        let rows: Vec<RollupRow> = sums
            .into_iter()
            .map(|((minute_ms, subject, model), tokens)| RollupRow {
                minute_ms,
                subject,
                group: vec![model],
                state: AggState::Sum(Quantity::from(tokens as i64)),
            })
            .collect();
        compaction::write_rollups(&query, &mut manifest, &meter, &rows)
            .await
            .map_err(anyhow::Error::msg)?;
        let mut superseded = compaction::compact_meter_rollups(&query, &mut manifest, &meters)
            .await
            .map_err(anyhow::Error::msg)?;
        superseded.extend(
            compaction::compact_events(&query, &mut manifest)
                .await
                .map_err(anyhow::Error::msg)?,
        );
        for path in superseded {
            root.delete(&object_path(&path)).await?;
        }
        i = end;
        eprintln!(
            "{i} events, epoch {epoch}, {} rollup files, {} event files, {:.0} s",
            manifest.rollup_files.len(),
            manifest.event_files.len(),
            started.elapsed().as_secs_f64()
        );
    }
    if !manifest.meters.contains(&meter.id) {
        manifest.meters.push(meter.id.clone());
    }
    manifest.created_at_ms = Utc::now().timestamp_millis();
    manifest::write(&root, &manifest, args.partitions).await?;
    let rollup_rows: u64 = manifest.rollup_files.iter().map(|f| f.rows).sum();
    eprintln!(
        "loaded {} events in {:.1} s: {} rollup files ({rollup_rows} rows), {} event files",
        shape.events,
        started.elapsed().as_secs_f64(),
        manifest.rollup_files.len(),
        manifest.event_files.len()
    );
    let total: u64 = probe.values().sum();
    println!(
        "{}",
        serde_json::json!({"subject": args.probe_subject, "total": total, "days": probe})
    );
    Ok(())
}
