//! Entitlement checks against a running `metron`: sets up a SUM meter, one feature per
//! entitlement, N customers each with metered entitlements (a grant each, from
//! `issueAfterReset`) and some usage, then measures
//! (a) a fixed-rate open-loop run of value checks (`GET .../value`),
//! (b) a closed-loop maximum-throughput run,
//! (c) bulk access: `GET /api/v1/customers/{c}/access` for 100 customers × 100 features,
//! (d) balance visibility: ack of one event → the value's usage moves,
//! and the server's resident memory per customer (with `--server-pid`).

use anyhow::{Context, Result, bail};
use clap::Parser;
use metron_benches::{RawConnection, percentile};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8888")]
    url: String,
    /// Customers with metered entitlements for the value checks.
    #[arg(long, default_value_t = 1000)]
    customers: usize,
    /// Metered entitlements (one feature each) per customer.
    #[arg(long, default_value_t = 1)]
    entitlements_per_customer: usize,
    /// Open-loop target rate of value checks per second.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Seconds of each of the open-loop and closed-loop runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connections (one thread each) for the check runs.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Connections for creating customers and entitlements. More than one currently
    /// makes the catalog answer 500 "database is locked" (concurrent SQLite write
    /// transactions), hence the default of 1.
    #[arg(long, default_value_t = 1)]
    setup_connections: usize,
    /// Phases to run, comma separated: open, closed, bulk, visibility (setup always runs).
    #[arg(long, default_value = "open,closed,bulk,visibility")]
    phases: String,
    /// Customers of the bulk-access phase.
    #[arg(long, default_value_t = 100)]
    bulk_customers: usize,
    /// Features (metered entitlements) per customer of the bulk-access phase.
    #[arg(long, default_value_t = 100)]
    bulk_features: usize,
    /// Visibility probes.
    #[arg(long, default_value_t = 200)]
    probes: usize,
    /// PID of the server, for CPU time and resident memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Reuse the customers and features of an earlier run (its id, printed by it)
    /// instead of setting up new ones.
    #[arg(long)]
    reuse_run: Option<String>,
    /// Seconds of the open loop spent first on one customer (the first), on the same
    /// connections and at the same rate, and left out of the figures: the run then
    /// starts on warm connections, code and server threads, while every other
    /// customer stays as it was (packed, if it was).
    #[arg(long, default_value_t = 0.0)]
    warmup_seconds: f64,
    /// The value route of the check runs: `v2` (`/api/v2/customers/{key}/...`) or `v1`
    /// (`/api/v1/subjects/{subject}/...`; each customer's subject is its key).
    #[arg(long, default_value = "v2", value_parser = ["v1", "v2"])]
    route: String,
}

/// One agent per thread: ureq pools at most a few idle connections per host and agent.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// CPU seconds and resident KiB (`RssAnon:`) of the server.
fn proc_stats(pid: u32) -> Option<(f64, u64)> {
    metron_benches::proc_stats(pid, "RssAnon:")
}

fn summary(label: &str, mut ms: Vec<f64>) -> String {
    ms.sort_by(|a, b| a.total_cmp(b));
    format!(
        "{label}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} samples)",
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN),
        ms.len()
    )
}

/// xorshift64*: a dependency-free generator for picking customers and features.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Result<(u16, String)> {
    let mut r = agent.post(url).send_json(body)?;
    let status = r.status().as_u16();
    Ok((status, r.body_mut().read_to_string()?))
}

fn get(agent: &ureq::Agent, url: &str) -> Result<(u16, String)> {
    let mut r = agent.get(url).call()?;
    let status = r.status().as_u16();
    Ok((status, r.body_mut().read_to_string()?))
}

fn expect_created(what: &str, (status, body): (u16, String)) -> Result<()> {
    if status != 201 && status != 409 {
        bail!("{what} answered {status}: {body}");
    }
    Ok(())
}

/// The names of one run's objects.
#[derive(Clone)]
struct Names {
    run: String,
}
impl Names {
    fn meter(&self) -> String {
        format!("checks_{}", self.run)
    }
    fn feature(&self, set: &str, f: usize) -> String {
        format!("checks_{}_{set}_{f}", self.run)
    }
    fn customer(&self, set: &str, c: usize) -> String {
        format!("{set}-{}-{c}", self.run)
    }
}

/// Creates the meter and features `0..features` of `set`.
fn setup_features(
    agent: &ureq::Agent,
    url: &str,
    names: &Names,
    set: &str,
    features: usize,
) -> Result<()> {
    let meter = json!({"slug": names.meter(), "eventType": names.meter(), "aggregation": "SUM",
        "valueProperty": "$.tokens"});
    expect_created(
        "creating the meter",
        post(agent, &format!("{url}/api/v1/meters"), &meter)?,
    )?;
    for f in 0..features {
        let key = names.feature(set, f);
        let body = json!({"key": key, "name": key, "meterSlug": names.meter()});
        expect_created(
            "creating a feature",
            post(agent, &format!("{url}/api/v1/features"), &body)?,
        )?;
    }
    Ok(())
}

/// Creates customers `0..customers` of `set`, each with a metered entitlement (MONTH,
/// a grant of 1,000,000 from `issueAfterReset`) for features `0..features`, over
/// `connections` parallel connections. Returns the seconds it took.
fn setup_customers(
    args: &Args,
    names: &Names,
    set: &str,
    customers: usize,
    features: usize,
    connections: usize,
) -> Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let anchor = chrono::Utc::now().format("%Y-%m-01T00:00:00Z").to_string();
    let mut threads = Vec::new();
    for _ in 0..connections {
        let (next, errors, names, url, set, anchor) = (
            next.clone(),
            errors.clone(),
            names.clone(),
            args.url.clone(),
            set.to_string(),
            anchor.clone(),
        );
        threads.push(std::thread::spawn(move || -> Result<()> {
            let agent = agent();
            loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                if c >= customers {
                    return Ok(());
                }
                if c > 0 && c % 10_000 == 0 {
                    eprintln!("  {c} customers of {set} created");
                }
                let key = names.customer(&set, c);
                let body = json!({"key": key, "name": key, "currency": "USD",
                    "usageAttribution": {"subjectKeys": [key]}});
                let created = post(&agent, &format!("{url}/api/v1/customers"), &body)?;
                if let Err(e) = expect_created("creating a customer", created) {
                    eprintln!("{e}");
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                for f in 0..features {
                    let body = json!({"type": "metered", "featureKey": names.feature(&set, f),
                        "usagePeriod": {"anchor": anchor, "interval": "MONTH"},
                        "issueAfterReset": 1_000_000});
                    let created = post(
                        &agent,
                        &format!("{url}/api/v2/customers/{key}/entitlements"),
                        &body,
                    )?;
                    if let Err(e) = expect_created("creating an entitlement", created) {
                        eprintln!("{e}");
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a setup thread panicked"))??;
    }
    let errors = errors.load(Ordering::Relaxed);
    if errors > 0 {
        bail!("{errors} setup requests failed");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Sends `events` usage events (1 token each, now) for customer `c` of `set`, feature-agnostic
/// (every feature of the run's meter sees them).
fn usage_batch(names: &Names, set: &str, customers: usize, seq: &mut u64) -> Vec<Value> {
    let now = chrono::Utc::now().to_rfc3339();
    (0..customers)
        .map(|c| {
            *seq += 1;
            json!({"id": format!("{}-{set}-{seq}", names.run), "source": "checks", "specversion": "1.0",
                "type": names.meter(), "subject": names.customer(set, c), "time": now,
                "data": {"tokens": 1 + (*seq % 10)}})
        })
        .collect()
}

fn ingest(agent: &ureq::Agent, url: &str, events: &[Value]) -> Result<()> {
    for chunk in events.chunks(500) {
        let r = agent
            .post(&format!("{url}/api/v1/events"))
            .header("content-type", "application/cloudevents-batch+json")
            .send_json(chunk)?;
        if r.status().as_u16() != 204 {
            bail!("ingest answered {}", r.status());
        }
    }
    Ok(())
}

fn value_path(args: &Args, names: &Names, c: usize, f: usize) -> String {
    let owner = if args.route == "v1" {
        "v1/subjects"
    } else {
        "v2/customers"
    };
    format!(
        "/api/{owner}/{}/entitlements/{}/value",
        names.customer("c", c),
        names.feature("c", f)
    )
}

fn value_url(args: &Args, names: &Names, c: usize, f: usize) -> String {
    format!("{}{}", args.url, value_path(args, names, c, f))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// One value read per customer (activates its actor), over `connections`. Returns seconds.
fn activate(args: &Args, names: &Names, connections: usize) -> Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut threads = Vec::new();
    for _ in 0..connections {
        let (next, errors, names, args) =
            (next.clone(), errors.clone(), names.clone(), args.clone());
        threads.push(std::thread::spawn(move || -> Result<()> {
            let agent = agent();
            loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                if c >= args.customers {
                    return Ok(());
                }
                let (status, body) = get(&agent, &value_url(&args, &names, c, 0))?;
                if status != 200 {
                    eprintln!("activating answered {status}: {body}");
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("an activation thread panicked"))??;
    }
    let errors = errors.load(Ordering::Relaxed);
    if errors > 0 {
        bail!("{errors} activation reads failed");
    }
    Ok(started.elapsed().as_secs_f64())
}

struct RunResult {
    ok: u64,
    errors: u64,
    elapsed: f64,
    /// From the intended send time (open loop) or the send (closed loop), ms.
    latencies: Vec<f64>,
    /// From the actual send, ms (open loop: excludes time waiting behind a slow request).
    service: Vec<f64>,
    /// When each request was due, seconds after the run started (same order as the two
    /// above).
    due: Vec<f64>,
    /// Wall-clock time of the run's start, to line stalls up with the server's log.
    started_at: chrono::DateTime<chrono::Utc>,
    /// Requests of the warm-up (not in the figures above; in the server's CPU time).
    warmup: u64,
}

/// Value checks over `connections` threads for `seconds`: at `rate` per second in total
/// (open loop; latency counted from each request's scheduled time, so a stalled
/// connection's backlog counts) or as fast as possible (`rate` None).
fn checks_run(args: &Args, names: &Names, rate: Option<u64>) -> Result<RunResult> {
    let warmup = match rate {
        Some(_) => Duration::from_secs_f64(args.warmup_seconds.max(0.0)),
        None => Duration::ZERO,
    };
    let started = Instant::now() + Duration::from_millis(50) + warmup;
    let started_at = chrono::Utc::now()
        + chrono::Duration::milliseconds(50)
        + chrono::Duration::from_std(warmup).unwrap_or_default();
    let warm_from = started - warmup;
    let duration = Duration::from_secs(args.seconds);
    let tickets = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..args.connections {
        let (args, names, tickets) = (args.clone(), names.clone(), tickets.clone());
        threads.push(std::thread::spawn(move || -> Result<_> {
            let mut connection = RawConnection::open(&args.url)?;
            let mut rng =
                Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            let (mut ok, mut errors, mut warm) = (0u64, 0u64, 0u64);
            let mut latencies = Vec::new();
            let mut service = Vec::new();
            let mut due = Vec::new();
            let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r as f64));
            loop {
                // The next request of the schedule goes to whichever connection is free
                // (as in a client's connection pool): one slow answer does not hold
                // back the requests after it, but when every connection is busy they
                // wait, and that wait counts in their latency.
                let scheduled = match interval {
                    Some(i) => {
                        warm_from + i.mul_f64(tickets.fetch_add(1, Ordering::Relaxed) as f64)
                    }
                    None => Instant::now().max(started),
                };
                let warming = scheduled < started;
                // Stop at the deadline: requests a slow server left unsent are not sent late.
                if scheduled >= started + duration || Instant::now() >= started + duration {
                    break;
                }
                let now = Instant::now();
                if scheduled > now {
                    std::thread::sleep(scheduled - now);
                }
                let (c, f) = if warming {
                    (0, 0)
                } else {
                    (
                        rng.below(args.customers),
                        rng.below(args.entitlements_per_customer),
                    )
                };
                let sent = Instant::now();
                let answered = match connection.get(&value_path(&args, &names, c, f)) {
                    Ok((200, body)) => contains(body, b"\"balance\""),
                    Ok(_) => false,
                    Err(_) => {
                        connection = RawConnection::open(&args.url)?;
                        false
                    }
                };
                let done = Instant::now();
                if warming {
                    warm += 1;
                    continue;
                }
                if answered {
                    ok += 1;
                } else {
                    errors += 1;
                }
                latencies.push((done - scheduled).as_secs_f64() * 1000.0);
                service.push((done - sent).as_secs_f64() * 1000.0);
                due.push(scheduled.saturating_duration_since(started).as_secs_f64());
            }
            Ok((ok, errors, warm, latencies, service, due))
        }));
    }
    let mut result = RunResult {
        ok: 0,
        errors: 0,
        elapsed: 0.0,
        latencies: Vec::new(),
        service: Vec::new(),
        due: Vec::new(),
        started_at,
        warmup: 0,
    };
    for t in threads {
        let (ok, errors, warm, latencies, service, due) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a check thread panicked"))??;
        result.ok += ok;
        result.errors += errors;
        result.warmup += warm;
        result.latencies.extend(latencies);
        result.service.extend(service);
        result.due.extend(due);
    }
    result.elapsed = started.elapsed().as_secs_f64();
    Ok(result)
}

fn report_run(label: &str, r: RunResult, cpu: Option<f64>) {
    println!(
        "{label}: {} ok, {} errors in {:.1} s = {:.0} checks/s{}",
        r.ok,
        r.errors,
        r.elapsed,
        r.ok as f64 / r.elapsed,
        cpu.map(|c| format!(
            ", server CPU {c:.1} s = {:.1} µs CPU per check",
            c * 1e6 / (r.ok + r.errors + r.warmup).max(1) as f64
        ))
        .unwrap_or_default()
    );
    if r.warmup > 0 {
        println!(
            "  after a warm-up of {} checks on one customer (left out of the figures)",
            r.warmup
        );
    }
    let stalls = stalls(&r);
    println!("  {}", summary("latency", r.latencies));
    println!("  {}", summary("service time", r.service));
    if !stalls.is_empty() {
        println!(
            "  slowest {STALL_WINDOW_MS} ms windows (run started {}):",
            r.started_at.format("%H:%M:%S%.3f")
        );
        for line in stalls {
            println!("    {line}");
        }
    }
}

/// Width of the windows `stalls` reports.
const STALL_WINDOW_MS: f64 = 100.0;

/// The five windows with the highest latency above 2 ms: when they were due, the
/// highest latency and service time in them, and how many requests were over 1 ms.
/// A window whose latency is far above its service time waited for a connection (a
/// stall of the client or of the machine), one whose service time is high waited for
/// the server.
fn stalls(r: &RunResult) -> Vec<String> {
    let mut windows: std::collections::BTreeMap<u64, (f64, f64, usize)> = Default::default();
    for ((&due, &latency), &service) in r.due.iter().zip(&r.latencies).zip(&r.service) {
        let w = windows
            .entry((due * 1000.0 / STALL_WINDOW_MS) as u64)
            .or_default();
        w.0 = w.0.max(latency);
        w.1 = w.1.max(service);
        w.2 += usize::from(latency > 1.0);
    }
    let mut slow: Vec<_> = windows.into_iter().filter(|(_, w)| w.0 > 2.0).collect();
    slow.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    slow.truncate(5);
    slow.into_iter()
        .map(|(w, (latency, service, over))| {
            format!(
                "at {:.1} s: latency max {latency:.2} ms, service time max {service:.2} ms, {over} requests over 1 ms",
                w as f64 * STALL_WINDOW_MS / 1000.0
            )
        })
        .collect()
}

fn cpu_delta(pid: Option<u32>, before: Option<(f64, u64)>) -> Option<f64> {
    let (b, _) = before?;
    let (a, _) = proc_stats(pid?)?;
    Some(a - b)
}

/// `--bulk-customers` × `--bulk-features` (default 100 × 100): `GET /api/v1/customers/{c}/access` for every customer,
/// sequentially and over 8 connections (twice each: the first activates the actors).
fn bulk(args: &Args, names: &Names) -> Result<()> {
    let (n, features) = (args.bulk_customers, args.bulk_features);
    let agent = agent();
    setup_features(&agent, &args.url, names, "b", features)?;
    let secs = setup_customers(args, names, "b", n, features, args.setup_connections)?;
    println!("bulk setup: {n} customers × {features} entitlements in {secs:.1} s");
    let access = |agent: &ureq::Agent, c: usize| -> Result<()> {
        let (status, body) = get(
            agent,
            &format!(
                "{}/api/v1/customers/{}/access",
                args.url,
                names.customer("b", c)
            ),
        )?;
        let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let got = parsed["entitlements"].as_object().map_or(0, |m| m.len());
        if status != 200 || got != features {
            bail!("access answered {status} with {got} entitlements");
        }
        Ok(())
    };
    for round in ["first (activates)", "second (warm)"] {
        let started = Instant::now();
        for c in 0..n {
            access(&agent, c)?;
        }
        let seq = started.elapsed().as_secs_f64() * 1000.0;
        let started = Instant::now();
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        let agent = self::agent();
                        loop {
                            let c = next.fetch_add(1, Ordering::Relaxed);
                            if c >= n {
                                return Ok(());
                            }
                            access(&agent, c)?;
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a bulk thread panicked"))??;
            }
            Ok(())
        })?;
        let par = started.elapsed().as_secs_f64() * 1000.0;
        println!(
            "bulk access {n} customers × {features} features, {round}: sequential {seq:.1} ms, 8 connections {par:.1} ms"
        );
    }
    Ok(())
}

/// Ingests one event for a customer and polls its value until the usage moves.
fn visibility(args: &Args, names: &Names) -> Result<()> {
    let agent = agent();
    let mut latencies = Vec::new();
    let mut timeouts = 0;
    for p in 0..args.probes {
        let c = p % args.customers;
        let url = value_url(args, names, c, 0);
        let usage = |agent: &ureq::Agent| -> Result<f64> {
            let (status, body) = get(agent, &url)?;
            let v: Value = serde_json::from_str(&body).context("value body")?;
            if status != 200 {
                bail!("value answered {status}: {body}");
            }
            v["usage"].as_f64().context("no usage in the value")
        };
        let before = usage(&agent)?;
        let ev = json!({"id": format!("{}-probe-{p}", names.run), "source": "checks-probe",
            "specversion": "1.0", "type": names.meter(), "subject": names.customer("c", c),
            "time": chrono::Utc::now().to_rfc3339(), "data": {"tokens": 1}});
        let r = agent
            .post(&format!("{}/api/v1/events", args.url))
            .header("content-type", "application/cloudevents+json")
            .send_json(&ev)?;
        if r.status().as_u16() != 204 {
            bail!("probe ingest answered {}", r.status());
        }
        let acked = Instant::now();
        loop {
            if usage(&agent)? > before {
                latencies.push(acked.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if acked.elapsed() > Duration::from_secs(10) {
                timeouts += 1;
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "  {} ; {timeouts} probes not visible within 10 s",
        summary("ack -> usage visible in value", latencies)
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let phases: Vec<&str> = args.phases.split(',').map(str::trim).collect();
    let names = Names {
        run: args
            .reuse_run
            .clone()
            .unwrap_or_else(|| format!("{}", std::process::id())),
    };
    println!("run {}", names.run);
    let setup_agent = agent();
    let rss = |label: &str| {
        if let Some((_, kb)) = args.server_pid.and_then(proc_stats) {
            println!("server anonymous resident memory {label}: {kb} KiB");
        }
        args.server_pid.and_then(proc_stats).map(|(_, kb)| kb)
    };
    let rss0 = rss("before setup");
    if args.reuse_run.is_some() {
        return phases_run(&args, &names, &phases);
    }
    setup_features(
        &setup_agent,
        &args.url,
        &names,
        "c",
        args.entitlements_per_customer,
    )?;
    let secs = setup_customers(
        &args,
        &names,
        "c",
        args.customers,
        args.entitlements_per_customer,
        args.setup_connections,
    )?;
    println!(
        "setup: {} customers × {} entitlements ({} requests) in {secs:.1} s = {:.0} requests/s",
        args.customers,
        args.entitlements_per_customer,
        args.customers * (1 + args.entitlements_per_customer),
        (args.customers * (1 + args.entitlements_per_customer)) as f64 / secs
    );
    // Some usage: one event per customer, twice.
    let mut seq = 0u64;
    for _ in 0..2 {
        ingest(
            &setup_agent,
            &args.url,
            &usage_batch(&names, "c", args.customers, &mut seq),
        )?;
    }
    let rss1 = rss("after setup and usage");
    let secs = activate(&args, &names, 8)?;
    println!("activation: one value read per customer in {secs:.1} s");
    let rss2 = rss("after activating every customer");
    if let (Some(a), Some(b), Some(c)) = (rss0, rss1, rss2) {
        let n = args.customers as f64;
        println!(
            "resident memory per customer: setup {:.0} B, activation {:.0} B, total {:.0} B",
            (b as f64 - a as f64) * 1024.0 / n,
            (c as f64 - b as f64) * 1024.0 / n,
            (c as f64 - a as f64) * 1024.0 / n
        );
    }
    phases_run(&args, &names, &phases)
}

fn phases_run(args: &Args, names: &Names, phases: &[&str]) -> Result<()> {
    let rss = |label: &str| {
        if let Some((_, kb)) = args.server_pid.and_then(proc_stats) {
            println!("server anonymous resident memory {label}: {kb} KiB");
        }
    };
    if phases.contains(&"open") {
        let before = args.server_pid.and_then(proc_stats);
        let r = checks_run(args, names, Some(args.rate))?;
        let label = format!(
            "open loop at {}/s over {} connections",
            args.rate, args.connections
        );
        report_run(&label, r, cpu_delta(args.server_pid, before));
    }
    if phases.contains(&"closed") {
        let before = args.server_pid.and_then(proc_stats);
        let r = checks_run(args, names, None)?;
        let label = format!("closed loop over {} connections", args.connections);
        report_run(&label, r, cpu_delta(args.server_pid, before));
    }
    if phases.contains(&"bulk") {
        bulk(args, names)?;
    }
    if phases.contains(&"visibility") {
        visibility(args, names)?;
    }
    rss("at end");
    Ok(())
}
