//! The load generator: sends HTTP batches of events to a running `metron`, then
//! reports events/s, the server's CPU-seconds per million events and resident
//! memory (read from /proc for `--server-pid`), and the p50/p99 of the time from an
//! acknowledged ingest to the event being visible in a meter query.

use anyhow::{Context, Result, bail};
use clap::Parser;
use metron_benches::{RawConnection, percentile};
use serde_json::json;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8888")]
    url: String,
    /// Seconds to run.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Concurrent senders.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Events per HTTP batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Distinct subjects.
    #[arg(long, default_value_t = 1000)]
    subjects: usize,
    /// PID of the server, for CPU time and resident memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Visibility probes (one every 200 ms); `--probe false` for none.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    probe: bool,
    /// Open loop: offer this many events per second in all (0: each connection sends
    /// as fast as it is answered). A connection whose answers come slower than its
    /// share falls behind; the offered rate is printed.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Every second, print the answers by status and the server's resident memory
    /// (needs --server-pid), and the highest resident memory at the end.
    #[arg(long)]
    every_second: bool,
    /// At the end, wait until the meter's total equals the tokens of every acknowledged
    /// event (nothing acknowledged lost, nothing counted twice); fail after this many
    /// seconds (0: no check).
    #[arg(long, default_value_t = 0)]
    verify_seconds: u64,
}

/// Answers by status class, counted by the senders.
#[derive(Default)]
struct Answers {
    ok: AtomicU64,
    overloaded: AtomicU64,
    unavailable: AtomicU64,
    other: AtomicU64,
}

impl Answers {
    fn snapshot(&self) -> [u64; 4] {
        [
            self.ok.load(Ordering::Relaxed),
            self.overloaded.load(Ordering::Relaxed),
            self.unavailable.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
        ]
    }
}

/// CPU seconds and resident KiB (`VmRSS:`) of the server.
fn proc_stats(pid: u32) -> Option<(f64, u64)> {
    metron_benches::proc_stats(pid, "VmRSS:")
}

fn ensure_meter(agent: &ureq::Agent, url: &str) -> Result<()> {
    let body = json!({"slug": "loadgen_tokens", "eventType": "loadgen", "aggregation": "SUM",
        "valueProperty": "$.tokens", "groupBy": {"model": "$.model"}});
    let status = agent
        .post(&format!("{url}/api/v1/meters"))
        .send_json(&body)?
        .status()
        .as_u16();
    if status != 201 && status != 409 {
        bail!("creating the meter answered {status}");
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build();
    let agent: ureq::Agent = config.into();
    ensure_meter(&agent, &args.url).context("creating the loadgen meter")?;
    let sent = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let answers = Arc::new(Answers::default());
    // Tokens of every acknowledged event (probes included), for --verify-seconds.
    let acked_tokens = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let run_id = std::process::id();
    let before = args.server_pid.and_then(proc_stats);
    let started = Instant::now();
    let mut senders = Vec::new();
    for c in 0..args.connections {
        let (url, sent, rejected, stop, answers, acked_tokens) = (
            args.url.clone(),
            sent.clone(),
            rejected.clone(),
            stop.clone(),
            answers.clone(),
            acked_tokens.clone(),
        );
        let (batch, subjects) = (args.batch, args.subjects);
        // Open loop: this connection's batches are due every `interval`.
        let interval = (args.rate > 0).then(|| {
            Duration::from_secs_f64(batch as f64 * args.connections as f64 / args.rate as f64)
        });
        senders.push(std::thread::spawn(move || -> Result<()> {
            let mut conn = RawConnection::open(&url)?;
            let mut body = Vec::with_capacity(batch * 160);
            let mut seq = 0u64;
            let mut due = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Some(interval) = interval {
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    due += interval;
                }
                let mut tokens_sum = 0u64;
                let now = chrono::Utc::now().to_rfc3339();
                body.clear();
                body.push(b'[');
                for i in 0..batch {
                    seq += 1;
                    let model = ["a", "b", "c"][(seq % 3) as usize];
                    let tokens = seq % 100;
                    tokens_sum += tokens;
                    let subject = (seq as usize + i) % subjects;
                    if i > 0 {
                        body.push(b',');
                    }
                    write!(
                        body,
                        r#"{{"id":"{run_id}-{c}-{seq}","source":"loadgen","specversion":"1.0","type":"loadgen","subject":"customer-{subject}","time":"{now}","data":{{"tokens":{tokens},"model":"{model}"}}}}"#
                    )?;
                }
                body.push(b']');
                let status = match conn.post("/api/v1/events", "application/cloudevents-batch+json", &body) {
                    Ok((status, _)) => status,
                    Err(_) => {
                        // The connection broke: count it and open another.
                        conn = RawConnection::open(&url)?;
                        0
                    }
                };
                match status {
                    204 => {
                        sent.fetch_add(batch as u64, Ordering::Relaxed);
                        acked_tokens.fetch_add(tokens_sum, Ordering::Relaxed);
                        answers.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    429 | 503 => {
                        rejected.fetch_add(1, Ordering::Relaxed);
                        let counter = if status == 429 { &answers.overloaded } else { &answers.unavailable };
                        counter.fetch_add(1, Ordering::Relaxed);
                        if interval.is_none() {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                    _ => {
                        rejected.fetch_add(1, Ordering::Relaxed);
                        answers.other.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(())
        }));
    }
    // Every second: answers by status and resident memory.
    let max_rss_kb = Arc::new(AtomicU64::new(0));
    let reporter = args.every_second.then(|| {
        let (answers, stop, max_rss_kb, pid) = (
            answers.clone(),
            stop.clone(),
            max_rss_kb.clone(),
            args.server_pid,
        );
        std::thread::spawn(move || {
            let mut last = answers.snapshot();
            let mut second = 0u64;
            println!("second  204  429  503  other  rss_mib");
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                second += 1;
                let now = answers.snapshot();
                let rss_kb = pid.and_then(proc_stats).map_or(0, |(_, rss)| rss);
                max_rss_kb.fetch_max(rss_kb, Ordering::Relaxed);
                println!(
                    "{second:6} {:4} {:4} {:4} {:6} {:8}",
                    now[0] - last[0],
                    now[1] - last[1],
                    now[2] - last[2],
                    now[3] - last[3],
                    rss_kb / 1024
                );
                last = now;
            }
        })
    });
    // Visibility probes: a unique subject per probe, time from its 204 to a non-empty query.
    let mut latencies = Vec::new();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut probe = 0u64;
    while Instant::now() < deadline {
        if args.probe {
            probe += 1;
            let subject = format!("probe-{run_id}-{probe}");
            let ev = json!({"id": subject, "source": "loadgen-probe", "type": "loadgen", "subject": subject,
                "data": {"tokens": 1, "model": "a"}});
            let r = agent
                .post(&format!("{}/api/v1/events", args.url))
                .header("content-type", "application/cloudevents+json")
                .send_json(&ev)?;
            if r.status().as_u16() == 204 {
                acked_tokens.fetch_add(1, Ordering::Relaxed);
                let acked = Instant::now();
                let query = format!(
                    "{}/api/v1/meters/loadgen_tokens/query?subject={subject}",
                    args.url
                );
                while acked.elapsed() < Duration::from_secs(10) {
                    let mut resp = agent.get(&query).call()?;
                    let text = resp.body_mut().read_to_string()?;
                    if text.contains("\"value\"") {
                        latencies.push(acked.elapsed().as_secs_f64() * 1000.0);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        match s.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("a sender stopped: {error:#}"),
            Err(_) => eprintln!("a sender panicked"),
        }
    }
    if let Some(r) = reporter {
        let _ = r.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let events = sent.load(Ordering::Relaxed);
    let after = args.server_pid.and_then(proc_stats);
    latencies.sort_by(|a, b| a.total_cmp(b));
    println!(
        "events acknowledged: {events} in {elapsed:.1} s = {:.0} events/s",
        events as f64 / elapsed
    );
    println!(
        "requests rejected (429 or error): {}",
        rejected.load(Ordering::Relaxed)
    );
    if let (Some((cpu0, _)), Some((cpu1, rss_kb))) = (before, after) {
        let per_million = (cpu1 - cpu0) / (events.max(1) as f64 / 1e6);
        println!(
            "server CPU: {:.1} s, {per_million:.1} CPU-s per million events; resident memory at end: {} MiB",
            cpu1 - cpu0,
            rss_kb / 1024
        );
    }
    println!(
        "ack -> visible in query: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} probes",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.len()
    );
    let [ok, overloaded, unavailable, other] = answers.snapshot();
    println!(
        "answers: {ok} x 204, {overloaded} x 429, {unavailable} x 503, {other} other; offered {:.0} events/s",
        (ok + overloaded + unavailable + other) as f64 * args.batch as f64 / elapsed
    );
    if args.every_second {
        println!(
            "highest resident memory sampled: {} MiB",
            max_rss_kb.load(Ordering::Relaxed) / 1024
        );
    }
    if args.verify_seconds > 0 {
        let want = acked_tokens.load(Ordering::Relaxed);
        let query = format!("{}/api/v1/meters/loadgen_tokens/query", args.url);
        let started = Instant::now();
        loop {
            let got = agent
                .get(&query)
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<serde_json::Value>().ok())
                .and_then(|v| v["data"][0]["value"].as_f64());
            if got == Some(want as f64) {
                println!(
                    "verified: the meter counts the tokens of every acknowledged event exactly ({want})"
                );
                break;
            }
            if started.elapsed() > Duration::from_secs(args.verify_seconds) {
                bail!("the meter total is {got:?}, the acknowledged events' tokens {want}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(())
}
