//! `billing`: the billing bench. Subscribes N customers to one plan whose billing periods all
//! end at the same instant, sends each customer's usage, then measures how fast Metron rates
//! and issues the N invoices into (fake) Stripe once that instant passes.
//!
//! It talks HTTP to a running `metron` (whose `stripe.apiBase` is the fake) and to the fake
//! Stripe server (`fake-stripe`, from `testing/fake-stripe`), whose request log carries the
//! time of every request: an invoice is in Stripe when its `POST /v1/invoices/{id}/finalize`
//! was answered 200. `benches/scripts/billing.sh` starts both and runs this.
//!
//! Printed: setup time, the period end, how many invoices Stripe holds finalized, invoices per
//! second (N over the time from the period end to the last finalization), and the distribution
//! of period end → finalized in Stripe. Every finalized invoice must total the expected amount
//! (30.00 in arrears plus 1,500 tokens at the graduated price = 160.00) and every customer must
//! hold exactly one, or the run fails.

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use clap::Parser;
use metron_benches::percentile;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "billing",
    about = "Invoices rated and issued per second, period end → Stripe"
)]
struct Args {
    /// Metron's base URL.
    #[arg(long)]
    url: String,
    /// The fake Stripe's base URL.
    #[arg(long)]
    stripe: String,
    /// Subscriptions (one customer each), all closing at the same period end.
    #[arg(long, default_value_t = 10_000)]
    subscriptions: usize,
    /// Concurrent connections for the setup.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds from the start until the period end (rounded up to a whole minute): the setup
    /// must finish before it.
    #[arg(long, default_value_t = 300)]
    setup_seconds: i64,
    /// Seconds to wait for every invoice after the period end.
    #[arg(long, default_value_t = 1800)]
    deadline_seconds: u64,
    /// `metron`'s process id, to report its CPU time (from /proc).
    #[arg(long)]
    metron_pid: Option<u32>,
}

/// Expected Stripe total per invoice, in cents: 30.00 in arrears; 1,000 tokens × 0.10 +
/// 500 × 0.05 + 5 flat = 130.00.
const EXPECTED_CENTS: i64 = 16_000;
const TOKENS: u64 = 1_500;
/// The largest answer read (the fake Stripe's whole state).
const STATE_BYTES_MAX: u64 = 4 << 30;

fn main() -> Result<()> {
    let args = Args::parse();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    let metron = Http {
        agent: agent.clone(),
        base: args.url.trim_end_matches('/').to_owned(),
    };
    let stripe = Http {
        agent,
        base: args.stripe.trim_end_matches('/').to_owned(),
    };
    let started = Instant::now();
    let period_end = ceil_minute(Utc::now() + ChronoDuration::seconds(args.setup_seconds));
    let api_key = stripe.get("/_test/config")?["api_key"]
        .as_str()
        .context("the fake's api key")?
        .to_owned();
    setup_catalog(&metron, &api_key)?;
    let cpu_before = cpu_seconds(args.metron_pid);
    subscribe_all(&metron, &stripe, &args, &period_end)?;
    send_usage(&metron, args.subscriptions)?;
    wait_usage(&metron, args.subscriptions)?;
    let setup = started.elapsed();
    let setup_cpu = cpu_seconds(args.metron_pid)
        .zip(cpu_before)
        .map(|(a, b)| a - b);
    let now = Utc::now();
    if now >= period_end {
        bail!(
            "the setup took {setup:.1?} and ran past the period end {period_end}: raise --setup-seconds"
        );
    }
    println!(
        "setup: {} customers, subscriptions and usage in {setup:.1?} (metron CPU {}); period end {} ({:.1} s from now)",
        args.subscriptions,
        fmt_cpu(setup_cpu),
        period_end.to_rfc3339_opts(SecondsFormat::Secs, true),
        (period_end - now).as_seconds_f64()
    );
    std::thread::sleep((period_end - now).to_std().unwrap_or_default());
    let cpu_at_end = cpu_seconds(args.metron_pid);
    let deadline = Instant::now() + Duration::from_secs(args.deadline_seconds);
    loop {
        // Finalized invoices are open (charge_automatically) or paid by now.
        let summary = stripe.get("/_test/summary")?;
        let finalized: u64 = ["open", "paid", "uncollectible", "void"]
            .iter()
            .filter_map(|s| summary["invoices"][s].as_u64())
            .sum();
        if finalized >= args.subscriptions as u64 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{finalized} of {} invoices finalized in Stripe after {} s",
                args.subscriptions,
                args.deadline_seconds
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let state = stripe.get("/_test/state")?;
    let billing_cpu = cpu_seconds(args.metron_pid)
        .zip(cpu_at_end)
        .map(|(a, b)| a - b);
    report(&state, &period_end, args.subscriptions, billing_cpu)
}

struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    fn get(&self, path: &str) -> Result<Value> {
        let mut resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status().as_u16();
        // The fake's state (every request of 10,000 invoices) is far above ureq's 10 MB default.
        let text = resp
            .body_mut()
            .with_config()
            .limit(STATE_BYTES_MAX)
            .read_to_string()?;
        if status != 200 {
            bail!("GET {path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    fn send(&self, method: &str, path: &str, body: &Value, expect: u16) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "PUT" => self.agent.put(&url),
            _ => self.agent.post(&url),
        };
        let mut resp = request
            .header("content-type", "application/json")
            .send(body.to_string())
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string()?;
        if status != expect {
            bail!("{method} {path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, body: &Value, expect: u16) -> Result<Value> {
        self.send("POST", path, body, expect)
    }
}

/// The next whole minute at or after `t` (billing periods are whole minutes).
fn ceil_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp() + (60 - t.timestamp().rem_euclid(60)) % 60;
    DateTime::from_timestamp(secs, 0).unwrap_or(t)
}

/// The Stripe app, a default profile that invoices at once (no collection wait, no draft
/// period), the feature and the published plan.
fn setup_catalog(metron: &Http, api_key: &str) -> Result<()> {
    let installed = metron.post(
        "/api/v1/marketplace/listings/stripe/install/apikey",
        &json!({"apiKey": api_key, "name": "Stripe"}),
        200,
    )?;
    let app = installed["app"]["id"]
        .as_str()
        .context("the installed app's id")?;
    metron.post(
        "/api/v1/billing/profiles",
        &json!({"name": "bench", "default": true,
            "supplier": {"name": "Us Inc.", "addresses": [{"country": "US"}]},
            "workflow": {"collection": {"interval": "PT0S"},
                         "invoicing": {"autoAdvance": true, "draftPeriod": "P0D"}},
            "apps": {"tax": app, "invoicing": app, "payment": app}}),
        201,
    )?;
    metron.post(
        "/api/v1/features",
        &json!({"key": "tokens", "name": "Tokens", "meterSlug": "tokens"}),
        201,
    )?;
    let plan = metron.post(
        "/api/v1/plans",
        &json!({
            "key": "bench", "name": "Bench", "currency": "USD", "billingCadence": "P1M",
            "proRatingConfig": {"enabled": false, "mode": "prorate_prices"},
            "phases": [{"key": "default", "name": "Default", "duration": null, "rateCards": [
                {"type": "flat_fee", "key": "platform", "name": "Platform fee", "billingCadence": "P1M",
                 "price": {"type": "flat", "amount": "30", "paymentTerm": "in_arrears"}},
                {"type": "usage_based", "key": "tokens", "name": "Tokens", "featureKey": "tokens",
                 "billingCadence": "P1M",
                 "price": {"type": "tiered", "mode": "graduated", "tiers": [
                    {"upToAmount": "1000", "unitPrice": {"type": "unit", "amount": "0.10"}},
                    {"unitPrice": {"type": "unit", "amount": "0.05"}, "flatPrice": {"type": "flat", "amount": "5"}}
                 ]}}
            ]}]
        }),
        201,
    )?;
    let id = plan["id"].as_str().context("the plan's id")?;
    metron.post(&format!("/api/v1/plans/{id}/publish"), &json!({}), 200)?;
    Ok(())
}

/// Per customer: Metron's customer, a Stripe customer with a card, the link, and the
/// subscription anchored at the period end. Runs on `connections` threads.
fn subscribe_all(
    metron: &Http,
    stripe: &Http,
    args: &Args,
    period_end: &DateTime<Utc>,
) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let anchor = period_end.to_rfc3339_opts(SecondsFormat::Secs, true);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..args.connections.max(1))
            .map(|_| {
                let next = Arc::clone(&next);
                let anchor = anchor.clone();
                scope.spawn(move || -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= args.subscriptions {
                            return Ok(());
                        }
                        subscribe(metron, stripe, i, &anchor)?;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a setup thread panicked"))??;
        }
        Ok(())
    })
}

fn subscribe(metron: &Http, stripe: &Http, i: usize, anchor: &str) -> Result<()> {
    let key = format!("c{i}");
    metron.post(
        "/api/v1/customers",
        &json!({"name": key, "key": key, "primaryEmail": format!("{key}@bench.test"),
                "usageAttribution": {"subjectKeys": [key]}}),
        201,
    )?;
    let customer = stripe.post(
        "/_test/customers",
        &json!({"name": key, "email": format!("{key}@bench.test")}),
        200,
    )?;
    let stripe_id = customer["id"]
        .as_str()
        .context("the Stripe customer's id")?;
    let method = stripe.post(
        &format!("/_test/customers/{stripe_id}/payment_methods"),
        &json!({}),
        200,
    )?;
    metron.send(
        "PUT",
        &format!("/api/v1/customers/{key}/stripe"),
        &json!({"stripeCustomerId": stripe_id, "stripeDefaultPaymentMethodId": method["id"]}),
        200,
    )?;
    metron.post(
        "/api/v1/subscriptions",
        &json!({"customerKey": key, "plan": {"key": "bench"}, "billingAnchor": anchor}),
        201,
    )?;
    Ok(())
}

fn send_usage(metron: &Http, n: usize) -> Result<()> {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"specversion": "1.0", "id": format!("u{i}"), "source": "bench",
                       "type": "tokens", "subject": format!("c{i}"), "time": now,
                       "data": {"tokens": TOKENS}})
            })
            .collect();
        let url = format!("{}/api/v1/events", metron.base);
        let mut resp = metron
            .agent
            .post(&url)
            .header("content-type", "application/cloudevents-batch+json")
            .send(Value::Array(events).to_string())?;
        if resp.status().as_u16() != 204 {
            bail!(
                "ingest: {} {}",
                resp.status(),
                resp.body_mut().read_to_string()?
            );
        }
    }
    Ok(())
}

/// Waits until the meter answers every token (the snapshot at the period end reads it).
fn wait_usage(metron: &Http, n: usize) -> Result<()> {
    let want = (n as u64 * TOKENS) as f64;
    let start = Instant::now();
    loop {
        let total = metron.get("/api/v1/meters/tokens/query")?["data"][0]["value"]
            .as_f64()
            .unwrap_or_default();
        if total == want {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("{total} of {want} tokens visible after 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stripe invoice id → when its finalization was answered (Unix ms).
fn finalized_invoices(state: &Value) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for request in state["requests"].as_array().into_iter().flatten() {
        let path = request["path"].as_str().unwrap_or_default();
        if request["method"] == "POST"
            && request["status"] == 200
            && let Some(id) = path
                .strip_prefix("/v1/invoices/")
                .and_then(|p| p.strip_suffix("/finalize"))
        {
            let at = request["at_ms"].as_i64().unwrap_or_default();
            out.entry(id.to_owned()).or_insert(at);
        }
    }
    out
}

fn report(
    state: &Value,
    period_end: &DateTime<Utc>,
    n: usize,
    billing_cpu: Option<f64>,
) -> Result<()> {
    let finalized = finalized_invoices(state);
    let invoices: BTreeMap<&str, &Value> = state["invoices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| Some((i["id"].as_str()?, i)))
        .collect();
    let mut per_customer: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for id in finalized.keys() {
        let invoice = invoices
            .get(id.as_str())
            .with_context(|| format!("the fake has no invoice {id}"))?;
        let total = invoice["total"].as_i64().unwrap_or(-1);
        if total != EXPECTED_CENTS {
            wrong.push(format!("{id}: {total}"));
        }
        let customer = invoice["customer"].as_str().unwrap_or_default().to_owned();
        *per_customer.entry(customer).or_default() += 1;
    }
    if !wrong.is_empty() {
        bail!(
            "{} invoices do not total {EXPECTED_CENTS}: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }
    if per_customer.len() != n || per_customer.values().any(|c| *c != 1) {
        bail!(
            "{} customers hold finalized invoices ({} invoices); each of {n} must hold one",
            per_customer.len(),
            finalized.len()
        );
    }
    let end_ms = period_end.timestamp_millis();
    let mut latencies: Vec<f64> = finalized
        .values()
        .map(|at| (at - end_ms) as f64 / 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| percentile(&latencies, q);
    let last = pick(1.0);
    let requests = state["requests"].as_array().map_or(0, Vec::len);
    println!(
        "invoices: {} finalized in Stripe, each {EXPECTED_CENTS} cents, one per customer; {:.1} invoices/s (period end → last finalized {last:.1} s)",
        finalized.len(),
        n as f64 / last
    );
    println!(
        "period end → finalized in Stripe: first {:.2} s, p50 {:.2} s, p90 {:.2} s, p99 {:.2} s, max {last:.2} s",
        pick(0.0),
        pick(0.5),
        pick(0.9),
        pick(0.99)
    );
    println!(
        "Stripe requests: {requests} in all ({:.1} per invoice incl. setup); metron CPU from the period end to the last invoice: {}",
        requests as f64 / n as f64,
        fmt_cpu(billing_cpu)
    );
    Ok(())
}

/// User + system CPU seconds of `metron`, from /proc.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    metron_benches::proc_stats(pid?, "VmRSS:").map(|(cpu, _)| cpu)
}

fn fmt_cpu(cpu: Option<f64>) -> String {
    cpu.map_or_else(|| "n/a".to_owned(), |s| format!("{s:.1} CPU-s"))
}
