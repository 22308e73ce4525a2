//! The billing fault test: whatever Stripe and the process do, Stripe ends up holding exactly
//! one invoice per billing period, with exactly the expected items and amounts.
//!
//! One run is one seed: a fake Stripe with seeded random faults on a fraction of requests (429,
//! 409, 500, timeouts, dropped connections, failures after the write took effect, and 500s kept
//! for the idempotency key and replayed, before or after the write), and a
//! real `metron` billing the plan of `billing.rs` (a monthly fee of 30.00 in advance and
//! graduated usage, 1,500 tokens = 130.00) to a customer linked to Stripe. The seed also plans
//! SIGKILLs of `metron`: each one fires on the fake's request hook right after the n-th Stripe
//! request ran and before its answer leaves (or a few milliseconds later), then `metron` is
//! restarted on the same data. Invoices that end in a failed state are retried through
//! `POST /api/v1/billing/invoices/{id}/retry`, as a user would (Metron, like OpenMeter, does not
//! retry a failed sync by itself). The second period is reached by moving the billing clock
//! (`METRON_BILLING_CLOCK_OFFSET_SECONDS`) across a restart. After both invoices reached
//! `payment_processing`: Stripe holds two finalized invoices for the customer, 3000 and 16000
//! cents, with the items [3000] and [500, 2500, 3000, 10000], every `metadata[om_line_id]` once,
//! no pending item, no spec violation; and Metron's invoices name those Stripe invoices.
//!
//! `METRON_FAULT_SEEDS` (default 200) seeds from `METRON_FAULT_SEED_BASE` (default 0) run on
//! `METRON_FAULT_THREADS` (default 6) threads, each with its own fake and `metron`;
//! `METRON_FAULT_SEED=n` replays one seed. Every seed is printed with what happened to it.

use crate::server::*;
use chrono::Utc;
use metron_fake_stripe::{FakeConfig, FakeStripe, InvoiceStatus, RequestRecord};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

const METERS: &str = r#"
meters:
  - slug: tokens
    eventType: tokens
    aggregation: SUM
    valueProperty: $.tokens
"#;

/// 32 days: past the end of the first monthly period and its collection window.
const A_MONTH_LATER: &str = "2764800";
/// How long one period may take to reach `payment_processing`, kills and retries included.
const PERIOD_DEADLINE: Duration = Duration::from_secs(90);
/// The items Stripe must hold per invoice (cents, sorted): the fee in advance; then the
/// tiers of 1,500 tokens (1,000 × 0.10, 500 × 0.05, the flat 5) and the next fee.
const FIRST_ITEMS: [i64; 1] = [3000];
const SECOND_ITEMS: [i64; 4] = [500, 2500, 3000, 10000];

#[test]
fn stripe_holds_one_invoice_per_period_under_faults_and_kills() {
    let seeds = seeds();
    let threads = env_u64("METRON_FAULT_THREADS", 6).clamp(1, 16);
    let started = Instant::now();
    let queue = Arc::new(Mutex::new(seeds.clone()));
    let results = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let queue = Arc::clone(&queue);
            let results = Arc::clone(&results);
            std::thread::spawn(move || {
                loop {
                    let Some(seed) = queue.lock().pop() else {
                        return;
                    };
                    let outcome = std::panic::catch_unwind(|| run_seed(seed))
                        .unwrap_or_else(|panic| Err(panic_message(&panic)));
                    match &outcome {
                        Ok(report) => eprintln!("billing_faults seed {seed}: ok, {report}"),
                        Err(error) => eprintln!("billing_faults seed {seed}: FAILED: {error}"),
                    }
                    results.lock().push((seed, outcome));
                }
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .expect("a worker thread panicked outside a run");
    }
    let results = results.lock();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(seed, outcome)| outcome.as_ref().err().map(|e| format!("seed {seed}: {e}")))
        .collect();
    let passed: Vec<&Report> = results
        .iter()
        .filter_map(|(_, o)| o.as_ref().ok())
        .collect();
    let kills: u32 = passed.iter().map(|r| r.kills).sum();
    let retries: u32 = passed.iter().map(|r| r.retries).sum();
    let faults: u64 = passed.iter().map(|r| r.faults).sum();
    eprintln!(
        "billing_faults: {} seeds, {} failed, {kills} SIGKILLs, {faults} Stripe faults, {retries} retries, {:.0?}",
        results.len(),
        failed.len(),
        started.elapsed()
    );
    assert_eq!(results.len(), seeds.len());
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("METRON_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return vec![seed];
    }
    let base = env_u64("METRON_FAULT_SEED_BASE", 0);
    let count = env_u64("METRON_FAULT_SEEDS", 200);
    // Popped from the back: the lowest seeds run first.
    (base..base + count).rev().collect()
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic".to_owned())
}

/// What one seed did.
#[derive(Debug, Default)]
struct Report {
    fault_rate: f64,
    kills: u32,
    retries: u32,
    faults: u64,
    requests: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fault rate {:.2}, {} Stripe requests, {} faults, {} SIGKILLs, {} retries",
            self.fault_rate, self.requests, self.faults, self.kills, self.retries
        )
    }
}

/// The seed's plan: how often Stripe fails, and after how many Stripe requests each SIGKILL
/// comes (counted from the previous start), right away or a few milliseconds late.
#[derive(Debug)]
struct Plan {
    fault_rate: f64,
    kills: Vec<Kill>,
}

#[derive(Debug, Clone, Copy)]
struct Kill {
    after_requests: u64,
    delay_ms: u64,
}

impl Plan {
    fn from_seed(seed: u64) -> Plan {
        let mut rng = StdRng::seed_from_u64(seed);
        let fault_rate = rng.random_range(0.05..0.35);
        let count = rng.random_range(0..=4);
        let kills = (0..count)
            .map(|_| Kill {
                after_requests: rng.random_range(1..=14),
                delay_ms: if rng.random_bool(0.5) {
                    0
                } else {
                    rng.random_range(1..=30)
                },
            })
            .collect();
        Plan { fault_rate, kills }
    }
}

/// SIGKILLs `metron` from the fake's request hook. Armed with a process id and a request
/// count; the main thread disarms it before it touches the process itself, so a kill never
/// reaches a process the test already reaped.
#[derive(Default)]
struct Killer {
    seen: AtomicU64,
    armed: Mutex<Option<Armed>>,
    kills: AtomicU64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Armed {
    pid: u32,
    at: u64,
    delay_ms: u64,
    generation: u64,
}

impl Killer {
    fn arm(&self, pid: u32, kill: Kill, generation: u64) {
        let at = self.seen.load(Ordering::SeqCst) + kill.after_requests;
        *self.armed.lock() = Some(Armed {
            pid,
            at,
            delay_ms: kill.delay_ms,
            generation,
        });
    }

    fn disarm(&self) {
        *self.armed.lock() = None;
    }

    fn on_request(self: &Arc<Self>, _request: &RequestRecord) {
        let seen = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        let Some(armed) = *self.armed.lock() else {
            return;
        };
        if seen < armed.at {
            return;
        }
        if armed.delay_ms == 0 {
            self.fire(armed);
            return;
        }
        let killer = Arc::clone(self);
        std::thread::spawn(move || {
            sleep(Duration::from_millis(armed.delay_ms));
            killer.fire(armed);
        });
    }

    /// Kills the armed process if it is still the one armed.
    fn fire(&self, armed: Armed) {
        let mut current = self.armed.lock();
        if *current != Some(armed) {
            return;
        }
        if sigkill(armed.pid) {
            self.kills.fetch_add(1, Ordering::SeqCst);
        }
        *current = None;
    }
}

#[allow(unsafe_code)]
fn sigkill(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) takes two integers and touches none of our memory; `pid` is a child of
    // ours that has not been reaped (the main thread disarms the killer, under the lock held
    // here, before it waits for or restarts the process), so it cannot name another process.
    unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
}

/// One seed's world: the fake, `metron`, the killer and what is left of the plan.
struct Run {
    stripe: FakeStripe,
    server: TestServer,
    killer: Arc<Killer>,
    kills: std::vec::IntoIter<Kill>,
    env: Vec<(&'static str, &'static str)>,
    generation: u64,
    retries: u32,
}

impl Run {
    /// Arms the next planned kill against the running process, if any is left.
    fn arm_next(&mut self) {
        self.generation += 1;
        match (self.kills.next(), self.server.pid()) {
            (Some(kill), Some(pid)) => self.killer.arm(pid, kill, self.generation),
            _ => self.killer.disarm(),
        }
    }

    /// Restarts `metron` (it was killed, or the clock moves) and arms the next kill.
    fn restart(&mut self) -> Result<(), String> {
        self.killer.disarm();
        self.server.set_env(&self.env);
        self.server
            .try_restart()
            .map_err(|e| format!("restart failed: {e:#}"))?;
        self.arm_next();
        Ok(())
    }

    /// Repeats `call` until it answers, restarting `metron` whenever a kill took it down.
    fn until_answered(
        &mut self,
        what: &str,
        mut call: impl FnMut(&TestServer) -> anyhow::Result<Resp>,
    ) -> Result<Resp, String> {
        let start = Instant::now();
        loop {
            if !self.server.is_running() {
                self.restart()?;
            }
            match call(&self.server) {
                Ok(resp) => return Ok(resp),
                Err(error) if start.elapsed() > PERIOD_DEADLINE => {
                    return Err(format!("{what}: {error:#}"));
                }
                Err(_) => sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Waits until `n` invoices reached `payment_processing`, restarting after kills and
    /// retrying failed invoices. Returns them.
    fn drive(&mut self, n: usize) -> Result<Vec<Value>, String> {
        let start = Instant::now();
        let mut last = Vec::new();
        loop {
            if start.elapsed() > PERIOD_DEADLINE {
                return Err(format!(
                    "{n} invoices not in payment_processing after {PERIOD_DEADLINE:?}: {}",
                    summary(&last)
                ));
            }
            if !self.server.is_running() {
                self.restart()?;
                continue;
            }
            let Ok(invoices) = list_invoices(&self.server) else {
                sleep(Duration::from_millis(50));
                continue;
            };
            for invoice in &invoices {
                if invoice["statusDetails"]["failed"] == true {
                    let id = invoice["id"].as_str().unwrap_or_default();
                    let path = format!("/api/v1/billing/invoices/{id}/retry");
                    if self.server.post(&path).try_send().is_ok() {
                        self.retries += 1;
                    }
                }
            }
            let processing = invoices.iter().filter(|i| in_payment(i)).count();
            last = invoices;
            if processing >= n {
                return Ok(last);
            }
            sleep(Duration::from_millis(100));
        }
    }
}

fn in_payment(invoice: &Value) -> bool {
    invoice["statusDetails"]["extendedStatus"]
        .as_str()
        .is_some_and(|s| s.starts_with("payment_processing"))
}

/// Every invoice but the gathering one, with its lines.
fn list_invoices(server: &TestServer) -> anyhow::Result<Vec<Value>> {
    let resp = server
        .get("/api/v1/billing/invoices")
        .query("expand", "lines")
        .try_send()?;
    if resp.status != 200 {
        anyhow::bail!("listing invoices: {resp}");
    }
    let all = resp.try_json().map_err(anyhow::Error::msg)?;
    Ok(all["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i["status"] != "gathering")
        .collect())
}

fn summary(invoices: &[Value]) -> String {
    invoices
        .iter()
        .map(|i| {
            format!(
                "{} {} total {} stripe {} issues {}",
                i["id"].as_str().unwrap_or_default(),
                i["statusDetails"]["extendedStatus"],
                i["totals"]["total"],
                i["externalIds"]["invoicing"],
                i["validationIssues"]
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn plan_json() -> Value {
    json!({
        "key": "pro", "name": "Pro", "currency": "USD", "billingCadence": "P1M",
        "phases": [{"key": "default", "name": "Default", "duration": null, "rateCards": [
            {"type": "flat_fee", "key": "platform", "name": "Platform fee", "billingCadence": "P1M",
             "price": {"type": "flat", "amount": "30", "paymentTerm": "in_advance"}},
            {"type": "usage_based", "key": "tokens", "name": "Tokens", "featureKey": "tokens",
             "billingCadence": "P1M",
             "price": {"type": "tiered", "mode": "graduated", "tiers": [
                {"upToAmount": "1000", "unitPrice": {"type": "unit", "amount": "0.10"}},
                {"unitPrice": {"type": "unit", "amount": "0.05"}, "flatPrice": {"type": "flat", "amount": "5"}}
             ]}}
        ]}]
    })
}

/// Feature, plan, customer, the Stripe app and the customer's Stripe link, with no fault.
fn setup(server: &TestServer, stripe: &FakeStripe) -> String {
    server
        .post("/api/v1/features")
        .json(&json!({"key": "tokens", "name": "Tokens", "meterSlug": "tokens"}))
        .send()
        .expect_status(201);
    let plan = server
        .post("/api/v1/plans")
        .json(&plan_json())
        .send()
        .expect_status(201)
        .json();
    let plan_id = plan["id"].as_str().unwrap_or_default();
    server
        .post(&format!("/api/v1/plans/{plan_id}/publish"))
        .send()
        .expect_status(200);
    server
        .post("/api/v1/customers")
        .json(
            &json!({"name": "ACME", "key": "acme", "primaryEmail": "ops@acme.test",
                      "usageAttribution": {"subjectKeys": ["acme"]}}),
        )
        .send()
        .expect_status(201);
    server
        .post("/api/v1/marketplace/listings/stripe/install/apikey")
        .json(&json!({"apiKey": stripe.api_key(), "name": "Stripe"}))
        .send()
        .expect_status(200);
    let customer = stripe.create_customer("ACME", Some("ops@acme.test"));
    let method = stripe
        .create_payment_method(&customer)
        .expect("a payment method for the fake's own customer");
    server
        .put("/api/v1/customers/acme/stripe")
        .json(&json!({"stripeCustomerId": customer, "stripeDefaultPaymentMethodId": method}))
        .send()
        .expect_status(200);
    customer
}

fn usage_events() -> Value {
    let now = Utc::now().to_rfc3339();
    let events: Vec<Value> = [600, 900]
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"specversion": "1.0", "id": format!("u{i}"), "source": "test",
                             "type": "tokens", "subject": "acme", "time": now, "data": {"tokens": n}}))
        .collect();
    Value::Array(events)
}

fn run_seed(seed: u64) -> Result<Report, String> {
    let plan = Plan::from_seed(seed);
    let stripe = FakeStripe::start_with(FakeConfig {
        seed,
        fault_rate: 0.0,
        timeout_hold: Duration::from_millis(300),
        ..FakeConfig::default()
    })
    .map_err(|e| format!("fake Stripe: {e}"))?;
    let killer = Arc::new(Killer::default());
    let hook = Arc::clone(&killer);
    stripe.on_request(move |request| hook.on_request(request));
    let server = TestServer::builder()
        .with_config(&format!(
            "{METERS}\nstripe:\n  apiBase: {}\n",
            stripe.base_url()
        ))
        .try_start()
        .map_err(|e| format!("metron did not start: {e:#}"))?;
    let customer = setup(&server, &stripe);
    // Setup runs without faults (installing the app is not under test); billing with them.
    stripe.set_fault_rate(plan.fault_rate);
    let mut run = Run {
        stripe,
        server,
        killer,
        kills: plan.kills.clone().into_iter(),
        env: Vec::new(),
        generation: 0,
        retries: 0,
    };
    let outcome = periods(&mut run).and_then(|metron| check(&run.stripe, &customer, &metron));
    run.killer.disarm();
    let state = run.stripe.state();
    let report = Report {
        fault_rate: plan.fault_rate,
        kills: u32::try_from(run.killer.kills.load(Ordering::SeqCst)).unwrap_or(u32::MAX),
        retries: run.retries,
        faults: state.requests.iter().filter(|r| r.fault.is_some()).count() as u64,
        requests: state.requests.len(),
    };
    match outcome {
        Ok(()) => Ok(report),
        Err(error) => Err(format!(
            "{error}\n  plan: {plan:?}\n  {report}\n  metron log tail:\n{}",
            run.server.log_tail(30)
        )),
    }
}

/// Period one, the clock moved a month, period two; Metron's invoices at the end.
fn periods(run: &mut Run) -> Result<Vec<Value>, String> {
    run.server
        .post("/api/v1/subscriptions")
        .json(&json!({"customerKey": "acme", "plan": {"key": "pro"}}))
        .send()
        .expect_status(201);
    run.arm_next();
    let events = usage_events();
    let ingested = run.until_answered("ingesting usage", |s| {
        s.post("/api/v1/events")
            .body("application/cloudevents-batch+json", events.to_string())
            .try_send()
    })?;
    if ingested.status != 204 {
        return Err(format!("ingest: {ingested}"));
    }
    run.drive(1)?;
    // Usage must be visible before the period closes (the snapshot reads the meter).
    let start = Instant::now();
    loop {
        let resp = run.until_answered("querying usage", |s| {
            s.get("/api/v1/meters/tokens/query")
                .query("subject", "acme")
                .try_send()
        })?;
        let total = resp.try_json().unwrap_or_default()["data"][0]["value"]
            .as_f64()
            .unwrap_or_default();
        if total == 1500.0 {
            break;
        }
        if start.elapsed() > VISIBLE {
            return Err(format!("{total} of 1500 tokens visible"));
        }
        sleep(Duration::from_millis(100));
    }
    run.env = vec![("METRON_BILLING_CLOCK_OFFSET_SECONDS", A_MONTH_LATER)];
    run.restart()?;
    let invoices = run.drive(2)?;
    run.killer.disarm();
    Ok(invoices)
}

/// What Stripe and Metron hold after recovery.
fn check(stripe: &FakeStripe, customer: &str, metron: &[Value]) -> Result<(), String> {
    let state = stripe.state();
    let violations = stripe.violations();
    if !violations.is_empty() {
        return Err(format!("spec violations: {violations:?}"));
    }
    let invoices: Vec<_> = state
        .invoices
        .iter()
        .filter(|i| i.customer == customer)
        .collect();
    let describe = || {
        invoices
            .iter()
            .map(|i| {
                let items: Vec<(i64, Option<String>)> = state
                    .invoice_items
                    .iter()
                    .filter(|it| it.invoice.as_deref() == Some(i.id.as_str()))
                    .map(|it| (it.amount, it.metadata.get("om_line_id").cloned()))
                    .collect();
                format!(
                    "{} {:?} total {} om_invoice_id {:?} items {items:?}",
                    i.id,
                    i.status,
                    i.total,
                    i.metadata.get("om_invoice_id")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    if invoices.len() != 2 {
        return Err(format!(
            "Stripe holds {} invoices for the customer, not 2: {}",
            invoices.len(),
            describe()
        ));
    }
    let pending: Vec<_> = state
        .invoice_items
        .iter()
        .filter(|it| it.customer == customer && it.invoice.is_none())
        .map(|it| it.id.clone())
        .collect();
    if !pending.is_empty() {
        return Err(format!("pending invoice items left in Stripe: {pending:?}"));
    }
    // Nothing was made twice and thrown away: two drafts, five items, no deletion, ever.
    let writes = |method: &str, path: &str, exact: bool| {
        state
            .requests
            .iter()
            .filter(|r| r.method == method && executed(r))
            .filter(|r| {
                if exact {
                    r.path == path
                } else {
                    r.path.starts_with(path)
                }
            })
            .count()
    };
    let made = (
        writes("POST", "/v1/invoices", true),
        writes("POST", "/v1/invoiceitems", true),
        writes("DELETE", "/v1/", false),
    );
    if made != (2, 5, 0) {
        return Err(format!(
            "Stripe executed {made:?} invoice creates, item creates and deletes, not (2, 5, 0): {}",
            describe()
        ));
    }
    let mut line_ids = BTreeSet::new();
    let mut by_total = Vec::new();
    for invoice in &invoices {
        if invoice.status != InvoiceStatus::Open {
            return Err(format!("a Stripe invoice is not open: {}", describe()));
        }
        let mut amounts = Vec::new();
        for item in state
            .invoice_items
            .iter()
            .filter(|it| it.invoice.as_deref() == Some(invoice.id.as_str()))
        {
            amounts.push(item.amount);
            let line = item.metadata.get("om_line_id").cloned().unwrap_or_default();
            if line.is_empty() || !line_ids.insert(line.clone()) {
                return Err(format!(
                    "om_line_id {line:?} missing or twice: {}",
                    describe()
                ));
            }
        }
        amounts.sort_unstable();
        by_total.push((invoice.total, amounts));
    }
    by_total.sort();
    let expected = vec![(3000, FIRST_ITEMS.to_vec()), (16000, SECOND_ITEMS.to_vec())];
    if by_total != expected {
        return Err(format!(
            "Stripe's totals and items are {by_total:?}, not {expected:?}: {}",
            describe()
        ));
    }
    if metron.len() != 2 {
        return Err(format!(
            "Metron has {} invoices, not 2: {}",
            metron.len(),
            summary(metron)
        ));
    }
    let mut totals: Vec<&str> = metron
        .iter()
        .map(|i| i["totals"]["total"].as_str().unwrap_or_default())
        .collect();
    totals.sort_unstable();
    if totals != ["160", "30"] {
        return Err(format!(
            "Metron's totals are {totals:?}, not 30 and 160: {}",
            summary(metron)
        ));
    }
    for invoice in metron {
        let stripe_id = invoice["externalIds"]["invoicing"]
            .as_str()
            .unwrap_or_default();
        let Some(landed) = invoices.iter().find(|i| i.id == stripe_id) else {
            return Err(format!(
                "Metron invoice {} names Stripe invoice {stripe_id:?}, which Stripe does not hold for the customer: {}",
                invoice["id"],
                describe()
            ));
        };
        if landed.metadata.get("om_invoice_id").map(String::as_str) != invoice["id"].as_str()
            || invoice["number"].as_str() != landed.number.as_deref()
        {
            return Err(format!(
                "Metron invoice {} and Stripe invoice {stripe_id} disagree on id or number: {}",
                invoice,
                describe()
            ));
        }
    }
    Ok(())
}

/// Whether the fake applied the request: answered 200 first-hand, or failed after its write.
fn executed(request: &RequestRecord) -> bool {
    let applied_then_failed = matches!(
        request.fault.as_deref(),
        Some("FailAfterWrite" | "DropAfterWrite" | "StoredFailureAfterWrite")
    );
    applied_then_failed || (request.status == 200 && !request.replayed && request.fault.is_none())
}
