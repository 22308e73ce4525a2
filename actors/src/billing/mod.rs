//! Billing: subscriptions become invoice lines, due lines become invoices, invoices follow
//! OpenMeter's state machine (`metron_engine::invoicing`) to the invoicing app.
//!
//! [`Billing`] does the work, one namespace at a time under one lock; the [`BillingActor`]
//! drives it from a schedule: when each subscription next owes a line, when each invoice's
//! collection or draft period ends. The catalog is the truth: every step is written before
//! the next one starts, the schedule is rebuilt from the catalog at start, and every step is
//! safe to repeat (lines have unique keys, collection moves a line at most once, the Stripe
//! sync converges on Stripe's state under deterministic idempotency keys). So a crash
//! anywhere leaves at most a step to redo, never a second invoice or line.
//!
//! Usage is read from the meters exactly as a meter query answers it: the feature's meter
//! and filters, the customer's subjects, the line's period.

mod actor;
mod edit;
pub mod lines;
pub mod rate;
pub mod render;
pub mod webhook;

pub use actor::BillingActor;

use crate::pipeline::Pipeline;
use chrono::{DateTime, Duration, Utc};
use futures::stream::{self, StreamExt};
use metron_connectors::stripe::sync::{self as stripe_sync, InvoiceToSync};
use metron_connectors::stripe::{CollectionMethod, StripeClient, StripeConfig};
use metron_engine::credit::IsoDuration;
use metron_engine::invoicing::{
    self, Context, Effect, ExtendedStatus, Hook, InvalidTransition, Origin, Trigger,
};
use metron_engine::query::MeterQuery;
use metron_storage::apps::{App, AppType, CustomerAppData, SECRET_STRIPE_API_KEY};
use metron_storage::billing_profiles::{BillingWorkflow, ResolvedProfile};
use metron_storage::invoices::{Invoice, Line, LinePeriod, SplitWrite, Totals, ValidationIssue};
use metron_storage::subscriptions::Subscription;
use parking_lot::Mutex;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Catalog(#[from] metron_storage::catalog::Error),
    #[error("invoice {0:?} not found")]
    NotFound(String),
    #[error("{message}")]
    Transition { code: &'static str, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl From<InvalidTransition> for Error {
    fn from(e: InvalidTransition) -> Self {
        Error::Transition {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What billing needs from the configuration.
#[derive(Clone, Debug)]
pub struct BillingConfig {
    /// Stripe's API base URL (`stripe.apiBase`).
    pub stripe_api_base: String,
    /// Added to the wall clock for every billing decision. Zero in production; the end-to-end
    /// tests move it forward to close billing periods without waiting for them
    /// (`METRON_BILLING_CLOCK_OFFSET_SECONDS`).
    pub clock_offset: Duration,
    /// How often the actor looks at its schedule.
    pub tick: std::time::Duration,
    /// Stripe client retries (the sync is safe to repeat; this only bounds one attempt).
    pub stripe_retries_max: u32,
    pub stripe_timeout: std::time::Duration,
    /// Subscriptions, collections and invoices one pass works on at once (`billing.concurrency`):
    /// Stripe calls wait on the network, so invoices overlap them. Stripe's rate limits bound
    /// it (100 requests/s in live mode, 25 in test mode; an invoice takes about 5 requests plus
    /// one per line).
    pub concurrency: usize,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            stripe_api_base: metron_connectors::stripe::API_BASE_DEFAULT.to_owned(),
            clock_offset: Duration::zero(),
            tick: std::time::Duration::from_millis(500),
            stripe_retries_max: 2,
            stripe_timeout: std::time::Duration::from_secs(30),
            concurrency: 8,
        }
    }
}

/// An action on an invoice from the API (`POST /api/v1/billing/invoices/{id}/{action}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Advance,
    Approve,
    Retry,
    Void,
    SnapshotQuantities,
    Delete,
    /// `taxes/recalculate`: the draft is recalculated (OpenMeter's `trigger_updated`).
    Recalculate,
    /// A payment outcome reported by the payment app (Stripe webhook).
    App(Trigger),
}

impl Action {
    fn trigger(self) -> Trigger {
        match self {
            Action::Advance => Trigger::Next,
            Action::Approve => Trigger::Approve,
            Action::Retry => Trigger::Retry,
            Action::Void => Trigger::Void,
            Action::SnapshotQuantities => Trigger::SnapshotQuantities,
            Action::Delete => Trigger::Delete,
            Action::Recalculate => Trigger::Updated,
            Action::App(t) => t,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Entry {
    Subscription(String),
    Invoice(String),
    /// Manual lines fall due: collect.
    Collect,
}

struct Inner {
    pipeline: Pipeline,
    config: BillingConfig,
    /// Serialises every billing mutation of the namespace.
    work: tokio::sync::Mutex<()>,
    schedule: Mutex<BTreeSet<(DateTime<Utc>, Entry)>>,
}

/// Steps of one advance not written yet, and the effects they had (for notifications).
#[derive(Default)]
struct Unsaved {
    dirty: bool,
    effects: Vec<Effect>,
}

/// The billing service of one namespace (cheap to clone).
#[derive(Clone)]
pub struct Billing {
    inner: Arc<Inner>,
}

/// Most invoices a collection pass creates (a named limit; the next pass continues).
pub const COLLECT_CUSTOMERS_MAX: usize = 1_024;

/// Most schedule entries one pass takes (the next pass, a tick later, continues).
pub const TICK_ENTRIES_MAX: usize = 1_024;

/// When a subscription or invoice whose pass failed is looked at again.
const RETRY_AFTER: Duration = Duration::seconds(30);

/// The longest a due line waits for collection when nothing else wakes billing up.
const COLLECT_INTERVAL: Duration = Duration::seconds(60);

/// Most state machine steps one advance takes (the machine has no cycle along `next`).
const ADVANCE_STEPS_MAX: usize = 64;

fn add_iso(t: DateTime<Utc>, text: &str) -> DateTime<Utc> {
    if text
        .trim_start_matches(['P', 'T'])
        .chars()
        .all(|c| !c.is_ascii_digit() || c == '0')
    {
        return t;
    }
    IsoDuration::parse(text)
        .ok()
        .and_then(|d| d.add_times(t, 1))
        .unwrap_or(t)
}

fn issue(
    severity: &str,
    code: &str,
    message: impl Into<String>,
    component: &str,
) -> ValidationIssue {
    ValidationIssue {
        id: ulid::Ulid::new().to_string(),
        severity: severity.into(),
        field: None,
        code: Some(code.into()),
        message: message.into(),
        component: component.into(),
    }
}

impl Billing {
    pub fn new(pipeline: Pipeline, config: BillingConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                pipeline,
                config,
                work: tokio::sync::Mutex::new(()),
                schedule: Mutex::new(BTreeSet::new()),
            }),
        }
    }

    fn ns(&self) -> &str {
        self.inner.pipeline.namespace()
    }

    fn catalog(&self) -> &metron_storage::catalog::Catalog {
        self.inner.pipeline.catalog()
    }

    /// Billing's clock: the wall clock plus the configured offset.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.inner.config.clock_offset
    }

    fn schedule(&self, at: DateTime<Utc>, entry: Entry) {
        self.inner.schedule.lock().insert((at, entry));
    }

    /// Waits until the pipeline has caught up with the log (usage reads before would miss
    /// events being replayed); the fatal error's reason if it ends first.
    pub async fn wait_ready(&self) -> Result<(), String> {
        self.inner.pipeline.health().wait_ready().await
    }

    /// Rebuilds the schedule from the catalog: every subscription and every invoice that is
    /// not final is looked at now.
    pub async fn load(&self) -> Result<()> {
        let now = self.now();
        self.schedule(now, Entry::Collect);
        for sub in self
            .catalog()
            .all_subscriptions(self.ns())
            .await
            .map_err(sub_err)?
        {
            self.schedule(now, Entry::Subscription(sub.id));
        }
        for invoice in self
            .catalog()
            .list_invoices(self.ns(), &Default::default())
            .await?
        {
            if !invoice.is_gathering() && !invoice.status.is_terminal() {
                self.schedule(now, Entry::Invoice(invoice.id));
            }
        }
        Ok(())
    }

    /// A subscription was created or changed: bill it now.
    pub fn subscription_changed(&self, id: &str) {
        self.schedule(self.now(), Entry::Subscription(id.to_owned()));
    }

    /// Everything due: subscriptions owing lines, collection of due lines, invoices whose
    /// wait is over; at most [`TICK_ENTRIES_MAX`] entries, `config.concurrency` at a time
    /// (the rest stays due for the next tick, so that API actions, which wait for the pass,
    /// are not held behind a whole period end). Returns how many entries were handled.
    pub async fn tick(&self) -> Result<usize> {
        let _guard = self.inner.work.lock().await;
        let now = self.now();
        let concurrency = self.inner.config.concurrency.max(1);
        let due: Vec<Entry> = {
            let mut schedule = self.inner.schedule.lock();
            let mut due = Vec::new();
            while due.len() < TICK_ENTRIES_MAX
                && let Some(first) = schedule.first().cloned()
            {
                if first.0 > now {
                    break;
                }
                schedule.remove(&first);
                due.push(first.1);
            }
            due
        };
        let subscriptions: Vec<&String> = due
            .iter()
            .filter_map(|e| match e {
                Entry::Subscription(id) => Some(id),
                _ => None,
            })
            .collect();
        let mut handled = subscriptions.len();
        let failed: Vec<&String> = stream::iter(subscriptions)
            .map(|id| async move {
                let outcome = self.sync_subscription(id, now).await;
                if let Err(error) = &outcome {
                    tracing::warn!(subscription = %id, %error, "Could not bill a subscription; retrying later.");
                }
                outcome.err().map(|_| id)
            })
            .buffer_unordered(concurrency)
            .filter_map(|failed| async move { failed })
            .collect()
            .await;
        for id in failed {
            self.schedule(now + RETRY_AFTER, Entry::Subscription(id.clone()));
        }
        let mut invoices: BTreeSet<String> = due
            .iter()
            .filter_map(|e| match e {
                Entry::Invoice(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        if !due.is_empty() {
            match self.collect(now).await {
                Ok((created, more)) => {
                    invoices.extend(created);
                    if more {
                        self.schedule(now, Entry::Collect);
                    }
                }
                // The invoices taken from the schedule are still advanced below.
                Err(error) => {
                    tracing::warn!(%error, "Could not collect due lines; retrying later.");
                    self.schedule(now + RETRY_AFTER, Entry::Collect);
                }
            }
        }
        handled += invoices.len();
        let failed: Vec<String> = stream::iter(invoices)
            .map(|id| async move {
                match self.advance(&id, None, now).await {
                    Ok(_) => None,
                    Err(error) => {
                        tracing::warn!(invoice = %id, %error, "Could not advance an invoice; retrying later.");
                        Some(id)
                    }
                }
            })
            .buffer_unordered(concurrency)
            .filter_map(|failed| async move { failed })
            .collect()
            .await;
        for id in failed {
            self.schedule(now + RETRY_AFTER, Entry::Invoice(id));
        }
        // Lines due without a subscription look (manual lines): collected at least every
        // COLLECT_INTERVAL.
        let mut schedule = self.inner.schedule.lock();
        if !schedule.iter().any(|(_, e)| *e == Entry::Collect) {
            schedule.insert((now + COLLECT_INTERVAL, Entry::Collect));
        }
        Ok(handled)
    }

    /// Writes the lines a subscription owes by `now` onto the customer's gathering invoice
    /// (new ones inserted, changed ones still gathering updated, ones it no longer owes
    /// removed) and schedules its next look.
    async fn sync_subscription(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let Some(sub) = self
            .catalog()
            .get_subscription(self.ns(), id)
            .await
            .map_err(sub_err)?
        else {
            return Ok(());
        };
        let due = lines::due_lines(&sub, now).map_err(Error::Invalid)?;
        let gathering = self.gathering(&sub.customer_id, &sub.currency, now).await?;
        let existing = self
            .catalog()
            .invoice_lines(self.ns(), &gathering.id)
            .await?;
        let mut changed = Vec::new();
        let wanted: BTreeMap<&str, &lines::DueLine> =
            due.iter().map(|l| (l.key.as_str(), l)).collect();
        // Lines a user edited (`managedBy: manual`, see `edit.rs`) are the user's now: the
        // subscription leaves them alone, as OpenMeter's sync does.
        for line in existing.iter().filter(|l| {
            l.managed_by == "subscription"
                && l.subscription
                    .as_ref()
                    .is_some_and(|s| s.subscription_id == sub.id)
        }) {
            // A part of a split group is known to the subscription by its group's key.
            let key = line
                .split
                .as_ref()
                .map_or(line.line_key.as_str(), |s| s.group_key.as_str());
            match wanted.get(key) {
                Some(d) if line.split.is_some() => {
                    changed.extend(lines::follow_group(line, d, now));
                }
                Some(d) if d.period == line.period && d.invoice_at == line.invoice_at => {}
                Some(d) => {
                    let mut l = line.clone();
                    l.period = d.period;
                    l.invoice_at = d.invoice_at;
                    l.pro_rating_full_period = d.pro_rating_full_period;
                    l.updated_at = now;
                    changed.push(l);
                }
                None => {
                    let mut l = line.clone();
                    l.deleted_at = Some(now);
                    l.updated_at = now;
                    changed.push(l);
                }
            }
        }
        if !changed.is_empty() {
            self.catalog()
                .save_invoice(self.ns(), &gathering, &changed)
                .await?;
        }
        let new: Vec<Line> = due
            .into_iter()
            .map(|d| Line {
                id: ulid::Ulid::new().to_string(),
                invoice_id: gathering.id.clone(),
                customer_id: sub.customer_id.clone(),
                line_key: d.key,
                name: d.name,
                description: d.description,
                metadata: None,
                managed_by: "subscription".into(),
                currency: sub.currency.clone(),
                period: d.period,
                invoice_at: d.invoice_at,
                rate_card: d.rate_card,
                pro_rating_full_period: d.pro_rating_full_period,
                subscription: Some(d.subscription),
                metered_quantity: None,
                quantity: None,
                children: Vec::new(),
                totals: Totals::default(),
                external_id: None,
                split: None,
                created_at: now,
                updated_at: now,
                deleted_at: None,
            })
            .collect();
        self.catalog().insert_lines(self.ns(), &new).await?;
        if let Some(next) = lines::next_line_at(&sub, now) {
            self.schedule(next, Entry::Subscription(sub.id.clone()));
        }
        Ok(())
    }

    /// The customer's gathering invoice in `currency`.
    async fn gathering(
        &self,
        customer_id: &str,
        currency: &str,
        now: DateTime<Utc>,
    ) -> Result<Invoice> {
        let profile = self.profile(customer_id).await?;
        let invoice = new_invoice(&profile, currency, ExtendedStatus::Gathering, now);
        Ok(self
            .catalog()
            .gathering_invoice(self.ns(), customer_id, currency, move || invoice)
            .await?)
    }

    async fn profile(&self, customer_id: &str) -> Result<ResolvedProfile> {
        self.catalog()
            .effective_billing_profile(self.ns(), customer_id)
            .await
            .map_err(|e| Error::Invalid(e.to_string()))
    }

    /// Moves every due gathering line onto a new standard invoice per customer and currency,
    /// for at most [`COLLECT_CUSTOMERS_MAX`] of them, `config.concurrency` at a time. Returns
    /// the invoices created and whether customers were left for the next pass. A customer
    /// whose collection fails keeps its lines gathering; the next pass tries again.
    async fn collect(&self, now: DateTime<Utc>) -> Result<(Vec<String>, bool)> {
        let due = self.catalog().due_gathering_lines(self.ns(), now).await?;
        let mut groups: BTreeMap<(String, String), Vec<Line>> = BTreeMap::new();
        for line in due {
            groups
                .entry((line.customer_id.clone(), line.currency.clone()))
                .or_default()
                .push(line);
        }
        let more = groups.len() > COLLECT_CUSTOMERS_MAX;
        let created = stream::iter(groups.into_iter().take(COLLECT_CUSTOMERS_MAX))
            .map(|((customer_id, currency), lines)| async move {
                match self.collect_customer(&customer_id, &currency, lines, now).await {
                    Ok(created) => created,
                    Err(error) => {
                        tracing::warn!(customer = %customer_id, %error, "Could not collect a customer's lines; retrying later.");
                        None
                    }
                }
            })
            .buffer_unordered(self.inner.config.concurrency.max(1))
            .filter_map(|created| async move { created })
            .collect()
            .await;
        Ok((created, more))
    }

    /// One customer's due lines in one currency onto a new invoice, rated as far as is known.
    async fn collect_customer(
        &self,
        customer_id: &str,
        currency: &str,
        lines: Vec<Line>,
        now: DateTime<Utc>,
    ) -> Result<Option<String>> {
        let profile = self.profile(customer_id).await?;
        let mut invoice = new_invoice(&profile, currency, ExtendedStatus::DraftCreated, now);
        let interval = &profile.workflow.collection.interval;
        invoice.collection_at = lines
            .iter()
            .filter(|l| matches!(l.rate_card, metron_engine::billing::RateCard::UsageBased(_)))
            .map(|l| add_iso(l.period.to, interval))
            .max();
        invoice.period = Some(LinePeriod {
            from: lines.iter().map(|l| l.period.from).min().unwrap_or(now),
            to: lines.iter().map(|l| l.period.to).max().unwrap_or(now),
        });
        let mut lines = self
            .catalog()
            .collect_lines(self.ns(), &invoice, &lines)
            .await?;
        if lines.is_empty() {
            return Ok(None);
        }
        // draft.created: rate what is known, then advance.
        let effects = invoicing::created_effects();
        if let Err(message) = self.perform(&mut invoice, &mut lines, &effects, now).await {
            invoice.validation_issues.push(issue(
                "critical",
                "calculation_error",
                message,
                "calculation",
            ));
        }
        self.catalog()
            .save_invoice(self.ns(), &invoice, &lines)
            .await?;
        self.notify(&invoice, &lines, &effects);
        Ok(Some(invoice.id))
    }

    /// Fires `action` (or, with `None`, only advances) and then advances the invoice as far
    /// as it goes by itself. The state is written after every step that called the invoicing
    /// app (its answer is kept before the next call) and at the end; the steps in between
    /// only change Metron's own record, and a crash before they are written repeats them
    /// (the app's calls are idempotent). One write per stretch instead of one per step: each
    /// is a synced commit, the bound of a period end's throughput.
    pub async fn advance(
        &self,
        id: &str,
        action: Option<Action>,
        now: DateTime<Utc>,
    ) -> Result<Invoice> {
        let mut invoice = self
            .catalog()
            .get_invoice(self.ns(), id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let mut lines = self.catalog().invoice_lines(self.ns(), id).await?;
        let mut unsaved = Unsaved::default();
        if let Some(action) = action {
            let origin = if matches!(action, Action::App(_)) {
                Origin::App
            } else {
                Origin::Api
            };
            let ctx = self.context(&invoice, &lines, now, origin);
            let step = invoicing::fire(invoice.status, action.trigger(), &ctx)?;
            self.step_deferred(&mut invoice, &mut lines, step, now, &mut unsaved)
                .await?;
        }
        for _ in 0..ADVANCE_STEPS_MAX {
            let ctx = self.context(&invoice, &lines, now, Origin::Api);
            let Ok(step) = invoicing::fire(invoice.status, Trigger::Next, &ctx) else {
                break;
            };
            let before = invoice.status;
            self.step_deferred(&mut invoice, &mut lines, step, now, &mut unsaved)
                .await?;
            if invoice.status == before {
                break;
            }
        }
        // The sandbox app settles a pending payment at once (OpenMeter's post-advance hook).
        if invoice.status == ExtendedStatus::PaymentProcessingPending
            && self.app_type(&invoice).await == Some(AppType::Sandbox)
        {
            let target = invoice
                .metadata
                .as_ref()
                .and_then(|m| m.get("openmeter.io/sandbox/target-payment-status"))
                .map(String::as_str)
                .unwrap_or("paid");
            let trigger = match target {
                "failed" => Trigger::Failed,
                "uncollectible" => Trigger::PaymentUncollectible,
                "action_required" => Trigger::ActionRequired,
                _ => Trigger::Paid,
            };
            let ctx = self.context(&invoice, &lines, now, Origin::App);
            if let Ok(step) = invoicing::fire(invoice.status, trigger, &ctx) {
                self.step_deferred(&mut invoice, &mut lines, step, now, &mut unsaved)
                    .await?;
                for _ in 0..ADVANCE_STEPS_MAX {
                    let ctx = self.context(&invoice, &lines, now, Origin::App);
                    let Ok(step) = invoicing::fire(invoice.status, Trigger::Next, &ctx) else {
                        break;
                    };
                    self.step_deferred(&mut invoice, &mut lines, step, now, &mut unsaved)
                        .await?;
                }
            }
        }
        self.flush(&invoice, &lines, &mut unsaved).await?;
        let ctx = self.context(&invoice, &lines, now, Origin::Api);
        if let Some(at) = invoicing::wake_at(invoice.status, &ctx) {
            self.schedule(at, Entry::Invoice(invoice.id.clone()));
        }
        Ok(invoice)
    }

    /// One transition, written at once (with its notifications).
    async fn step(
        &self,
        invoice: &mut Invoice,
        lines: &mut [Line],
        step: invoicing::Transition,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut unsaved = Unsaved::default();
        self.step_deferred(invoice, lines, step, now, &mut unsaved)
            .await?;
        self.flush(invoice, lines, &mut unsaved).await
    }

    /// One transition: perform its effects; on failure, record the issue and fire `failed`
    /// from the state arrived in. Written (with the steps before it) when it called the
    /// invoicing app; otherwise left to the next [`Billing::flush`].
    async fn step_deferred(
        &self,
        invoice: &mut Invoice,
        lines: &mut [Line],
        step: invoicing::Transition,
        now: DateTime<Utc>,
        unsaved: &mut Unsaved,
    ) -> Result<()> {
        invoice.status = step.to;
        invoice.updated_at = now;
        if step.to == ExtendedStatus::DraftWaitingAutoApproval && invoice.draft_until.is_none() {
            let workflow = workflow_of(invoice);
            invoice.draft_until = Some(add_iso(now, &workflow.invoicing.draft_period));
        }
        if let Err(message) = self.perform(invoice, lines, &step.effects, now).await {
            invoice
                .validation_issues
                .push(issue("critical", "app_error", message, "app"));
            let ctx = self.context(invoice, lines, now, Origin::Api);
            if let Ok(failed) = invoicing::fire(invoice.status, Trigger::Failed, &ctx) {
                invoice.status = failed.to;
            }
        }
        unsaved.dirty = true;
        unsaved.effects.extend(step.effects.iter().copied());
        let called_app = step.effects.iter().any(|e| {
            matches!(
                e,
                Effect::SyncDraft | Effect::SyncIssuing | Effect::DeleteInApp | Effect::VoidInApp
            )
        });
        if called_app {
            self.flush(invoice, lines, unsaved).await?;
        }
        Ok(())
    }

    /// Writes the steps not written yet, then sends their notifications (each kind once).
    async fn flush(&self, invoice: &Invoice, lines: &[Line], unsaved: &mut Unsaved) -> Result<()> {
        if !unsaved.dirty {
            return Ok(());
        }
        self.catalog()
            .save_invoice(self.ns(), invoice, lines)
            .await?;
        let mut notes: Vec<Effect> = Vec::new();
        for effect in std::mem::take(&mut unsaved.effects) {
            if matches!(effect, Effect::Notify(_)) && !notes.contains(&effect) {
                notes.push(effect);
            }
        }
        self.notify(invoice, lines, &notes);
        unsaved.dirty = false;
        Ok(())
    }

    /// Sends the `invoice.created` / `invoice.updated` notifications the effects name, with
    /// the invoice as the API answers it (lines included).
    fn notify(&self, invoice: &Invoice, lines: &[Line], effects: &[Effect]) {
        use metron_storage::notifications::RuleType;
        if invoice.is_gathering() {
            return;
        }
        let notifier = self.inner.pipeline.notifier();
        for effect in effects {
            let rule_type = match effect {
                Effect::Notify(invoicing::Notification::InvoiceCreated) => RuleType::InvoiceCreated,
                Effect::Notify(invoicing::Notification::InvoiceUpdated) => RuleType::InvoiceUpdated,
                _ => continue,
            };
            if notifier.watches(self.ns(), rule_type) {
                let data = render::invoice_json(self, invoice, lines, true);
                notifier.invoice_observed(self.ns(), rule_type, data);
            }
        }
    }

    fn context(
        &self,
        invoice: &Invoice,
        lines: &[Line],
        now: DateTime<Utc>,
        origin: Origin,
    ) -> Context {
        let workflow = workflow_of(invoice);
        Context {
            now,
            auto_advance: workflow.invoicing.auto_advance,
            draft_until: invoice.draft_until,
            collection_at: invoice.collection_at,
            critical_issues: invoice
                .validation_issues
                .iter()
                .any(|i| i.severity == "critical"),
            draft_sync: hook(invoice.draft_sync_hook, invoice.draft_synced_at.is_some()),
            issuing_sync: hook(
                invoice.issuing_sync_hook,
                invoice.issuing_synced_at.is_some(),
            ),
            lines_empty: lines.iter().all(|l| l.deleted_at.is_some()),
            lines_invoicable: false,
            origin,
        }
    }

    async fn app(&self, invoice: &Invoice) -> Option<App> {
        self.catalog()
            .app_by_id(self.ns(), &invoice.invoicing_app_id)
            .await
            .ok()
            .flatten()
    }

    async fn app_type(&self, invoice: &Invoice) -> Option<AppType> {
        self.app(invoice).await.map(|a| a.app_type())
    }

    /// Performs effects in order; the first failure stops and is returned as a message.
    async fn perform(
        &self,
        invoice: &mut Invoice,
        lines: &mut [Line],
        effects: &[Effect],
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        for effect in effects {
            match effect {
                Effect::DowngradeCriticalIssues => {
                    for i in &mut invoice.validation_issues {
                        i.severity = "warning".into();
                    }
                }
                Effect::Calculate => {
                    self.previously_billed(lines).await?;
                    self.calculate(invoice, lines)?;
                }
                Effect::SnapshotQuantities => {
                    self.snapshot(invoice, lines).await?;
                    self.previously_billed(lines).await?;
                    invoice.quantity_snapshoted_at = Some(now);
                    self.calculate(invoice, lines)?;
                }
                Effect::Validate => {
                    invoice
                        .validation_issues
                        .retain(|i| i.component != "validation");
                    if let Some(problem) = self.validate(invoice).await {
                        invoice.validation_issues.push(issue(
                            "critical",
                            "invoice_validation",
                            problem,
                            "validation",
                        ));
                    }
                }
                Effect::SyncDraft => self.sync_draft(invoice, lines).await?,
                Effect::SyncIssuing => self.sync_issuing(invoice, lines, now).await?,
                Effect::RecordPaymentProcessing => {
                    invoice.payment_processing_entered_at.get_or_insert(now);
                }
                Effect::PrepareDelete(_) => {
                    invoice.deleted_at.get_or_insert(now);
                    invoice.validation_issues.clear();
                }
                Effect::DeleteInApp => self.delete_in_app(invoice).await?,
                Effect::VoidInApp => self.void_in_app(invoice).await?,
                Effect::RecordVoided => {
                    invoice.voided_at.get_or_insert(now);
                }
                Effect::ScheduleAt(at) => self.schedule(*at, Entry::Invoice(invoice.id.clone())),
                Effect::FinalizeLines
                | Effect::BookCharges
                | Effect::BookPaymentAuthorized
                | Effect::BookPaymentSettled
                | Effect::CreateInvoice
                | Effect::Notify(_) => {}
            }
        }
        Ok(())
    }

    /// Rates every line and sums the invoice totals.
    fn calculate(&self, invoice: &mut Invoice, lines: &mut [Line]) -> Result<(), String> {
        let mut totals = Totals::default();
        for line in lines.iter_mut().filter(|l| l.deleted_at.is_none()) {
            rate::rate_line(line)?;
            totals.add(&line.totals);
        }
        invoice.totals = totals;
        Ok(())
    }

    /// Reads every usage line's quantity from its feature's meter.
    async fn snapshot(&self, invoice: &Invoice, lines: &mut [Line]) -> Result<(), String> {
        let catalog = self.catalog();
        let customer = catalog
            .get_customer(self.ns(), &invoice.customer_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("customer {} not found", invoice.customer_id))?;
        let subjects = customer.subjects();
        for line in lines.iter_mut().filter(|l| l.deleted_at.is_none()) {
            let metron_engine::billing::RateCard::UsageBased(card) = &line.rate_card else {
                continue;
            };
            let Some(feature_key) = &card.feature_key else {
                continue;
            };
            let feature = catalog
                .get_feature(self.ns(), feature_key)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("feature {feature_key} not found"))?;
            let Some(slug) = &feature.meter_slug else {
                return Err(format!("feature {feature_key} has no meter"));
            };
            let meter = self
                .inner
                .pipeline
                .get_meter(self.ns(), slug)
                .await
                .map_err(|e| e.to_string())?;
            let filters = feature.group_filters();
            let usage = |from, to| self.usage(&meter, &subjects, &filters, from, to);
            // A later part of a split group: its usage is the group's up to its end minus the
            // group's before its start (OpenMeter's `getFeatureUsage`), so that a max or unique
            // count is not counted twice.
            let (total, pre) = match &line.split {
                Some(split) if split.group_period.from < line.period.from => {
                    let pre = usage(split.group_period.from, line.period.from).await?;
                    let upto = usage(split.group_period.from, line.period.to).await?;
                    (upto - pre, Some(pre))
                }
                _ => (usage(line.period.from, line.period.to).await?, None),
            };
            line.metered_quantity = Some(total);
            line.quantity = Some(total);
            if let Some(split) = &mut line.split {
                split.metered_pre_line_period_quantity = Some(pre.unwrap_or(Decimal::ZERO));
            }
        }
        Ok(())
    }

    /// A meter's usage by `subjects` in `[from, to)`, as a meter query answers it.
    async fn usage(
        &self,
        meter: &metron_engine::meter::Meter,
        subjects: &[String],
        filters: &BTreeMap<String, metron_engine::filter::StringFilter>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Decimal, String> {
        if subjects.is_empty() {
            return Ok(Decimal::ZERO);
        }
        let query = MeterQuery {
            from: Some(from),
            to: Some(to),
            subjects: subjects.to_vec(),
            filters: filters.clone(),
            ..Default::default()
        };
        let rows = self
            .inner
            .pipeline
            .query_meter(meter, &query)
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows.iter().map(|row| row.value.to_decimal()).sum())
    }

    /// What the earlier parts of each split line billed (OpenMeter's `SumNetAmount`: their
    /// `totals.amount` on standard invoices not deleted), for the rating.
    async fn previously_billed(&self, lines: &mut [Line]) -> Result<(), String> {
        for line in lines.iter_mut().filter(|l| l.deleted_at.is_none()) {
            let Some(split) = &line.split else {
                continue;
            };
            let members = self
                .catalog()
                .split_group_lines(self.ns(), &line.customer_id, &split.group_id)
                .await
                .map_err(|e| e.to_string())?;
            let billed = members
                .iter()
                .filter(|(l, invoice)| {
                    l.id != line.id
                        && l.deleted_at.is_none()
                        && l.period.to <= line.period.from
                        && !invoice.is_gathering()
                        && invoice.deleted_at.is_none()
                        && invoice.status != ExtendedStatus::Deleted
                })
                .map(|(l, _)| l.totals.amount)
                .sum();
            if let Some(split) = &mut line.split {
                split.previously_billed_amount = billed;
            }
        }
        Ok(())
    }

    /// The invoicing app's check of the invoice (Stripe: the customer is linked).
    async fn validate(&self, invoice: &Invoice) -> Option<String> {
        let app = self.app(invoice).await?;
        if app.app_type() != AppType::Stripe {
            return None;
        }
        match self
            .catalog()
            .get_customer_app_data(self.ns(), &app.id, &invoice.customer_id)
            .await
        {
            Ok(Some(CustomerAppData::Stripe { .. })) => None,
            _ => Some(format!(
                "customer {} has no Stripe customer in app {}",
                invoice.customer_id, app.id
            )),
        }
    }

    async fn stripe(&self, app: &App) -> Result<StripeClient, String> {
        let key = self
            .catalog()
            .app_secret(&app.id, SECRET_STRIPE_API_KEY)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("app {} has no Stripe API key", app.id))?;
        let config = StripeConfig {
            api_base: self.inner.config.stripe_api_base.clone(),
            api_key: key,
            timeout: self.inner.config.stripe_timeout,
            retries_max: self.inner.config.stripe_retries_max,
            ..StripeConfig::default()
        };
        StripeClient::new(config).map_err(|e| e.to_string())
    }

    async fn to_sync(
        &self,
        invoice: &Invoice,
        lines: &[Line],
        app: &App,
    ) -> Result<InvoiceToSync, String> {
        let Some(CustomerAppData::Stripe {
            stripe_customer_id,
            stripe_default_payment_method_id,
        }) = self
            .catalog()
            .get_customer_app_data(self.ns(), &app.id, &invoice.customer_id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Err(format!(
                "customer {} has no Stripe customer",
                invoice.customer_id
            ));
        };
        let live: Vec<Line> = lines
            .iter()
            .filter(|l| l.deleted_at.is_none())
            .cloned()
            .collect();
        let (items, total) = rate::items(&live)?;
        let workflow = workflow_of(invoice);
        let send = workflow.payment.collection_method
            == metron_storage::billing_profiles::CollectionMethod::SendInvoice;
        Ok(InvoiceToSync {
            invoice_id: invoice.id.clone(),
            namespace: self.ns().to_owned(),
            app_id: app.id.clone(),
            customer_id: invoice.customer_id.clone(),
            stripe_customer_id,
            currency: invoice.currency.clone(),
            collection_method: if send {
                CollectionMethod::SendInvoice
            } else {
                CollectionMethod::ChargeAutomatically
            },
            days_until_due: send.then(|| days(&workflow.invoicing.due_after)),
            default_payment_method: stripe_default_payment_method_id,
            automatic_tax: workflow.tax.enabled,
            lines: items,
            expected_total_minor: total,
        })
    }

    async fn sync_draft(&self, invoice: &mut Invoice, lines: &mut [Line]) -> Result<(), String> {
        let Some(app) = self.app(invoice).await else {
            return Err(format!(
                "invoicing app {} not found",
                invoice.invoicing_app_id
            ));
        };
        if app.app_type() != AppType::Stripe {
            return Ok(());
        }
        let client = self.stripe(&app).await?;
        let input = self.to_sync(invoice, lines, &app).await?;
        let digest = input.digest();
        let existing = invoice.external_invoicing_id.clone();
        let synced = tokio::task::spawn_blocking(move || {
            stripe_sync::upsert_invoice(&client, &input, existing.as_deref())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        invoice.external_invoicing_id = Some(synced.stripe_invoice_id.clone());
        invoice.synced_digest = Some(digest);
        for line in lines.iter_mut() {
            if let Some(child) = line.children.first()
                && let Some(s) = synced.lines.get(&child.id)
            {
                line.external_id = Some(s.line_item_id.clone());
            }
        }
        Ok(())
    }

    async fn sync_issuing(
        &self,
        invoice: &mut Invoice,
        lines: &mut [Line],
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let workflow = workflow_of(invoice);
        invoice.issued_at.get_or_insert(now);
        invoice
            .due_at
            .get_or_insert(add_iso(now, &workflow.invoicing.due_after));
        let Some(app) = self.app(invoice).await else {
            return Err(format!(
                "invoicing app {} not found",
                invoice.invoicing_app_id
            ));
        };
        match app.app_type() {
            AppType::Stripe => {
                // The draft sync put this very invoice into Stripe unless something changed
                // since (OpenMeter's issuing sync only finalizes).
                let unchanged = invoice.external_invoicing_id.is_some()
                    && invoice.synced_digest.as_deref()
                        == Some(self.to_sync(invoice, lines, &app).await?.digest().as_str());
                if !unchanged {
                    self.sync_draft(invoice, lines).await?;
                }
                let client = self.stripe(&app).await?;
                let stripe_id = invoice
                    .external_invoicing_id
                    .clone()
                    .ok_or_else(|| "the invoice has no Stripe invoice".to_owned())?;
                let id = invoice.id.clone();
                let enforced = workflow.tax.enforced;
                let finalized = tokio::task::spawn_blocking(move || {
                    stripe_sync::finalize_invoice(&client, &stripe_id, &id, enforced)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
                invoice.number = finalized.number;
                invoice.external_payment_id = finalized.payment_intent;
            }
            AppType::CustomInvoicing if invoice.issuing_sync_hook => {}
            kind => {
                if invoice.number.is_none() {
                    let (scope, prefix_text) = if kind == AppType::Sandbox {
                        ("invoices/app/sandbox", "OM-SANDBOX")
                    } else {
                        ("invoices/app/custom-invoicing", "OM")
                    };
                    let seq = self
                        .catalog()
                        .next_sequence(self.ns(), scope)
                        .await
                        .map_err(|e| e.to_string())?;
                    let prefix: String = invoice
                        .customer
                        .get("key")
                        .or_else(|| invoice.customer.get("name"))
                        .and_then(Value::as_str)
                        .unwrap_or("CUST")
                        .chars()
                        .filter(char::is_ascii_alphanumeric)
                        .take(8)
                        .collect::<String>()
                        .to_ascii_uppercase();
                    invoice.number = Some(format!("{prefix_text}-{prefix}-{seq}"));
                }
            }
        }
        Ok(())
    }

    async fn delete_in_app(&self, invoice: &Invoice) -> Result<(), String> {
        let (Some(app), Some(stripe_id)) = (
            self.app(invoice).await,
            invoice.external_invoicing_id.clone(),
        ) else {
            return Ok(());
        };
        if app.app_type() != AppType::Stripe {
            return Ok(());
        }
        let client = self.stripe(&app).await?;
        tokio::task::spawn_blocking(move || stripe_sync::delete_invoice(&client, &stripe_id))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    async fn void_in_app(&self, invoice: &Invoice) -> Result<(), String> {
        let (Some(app), Some(stripe_id)) = (
            self.app(invoice).await,
            invoice.external_invoicing_id.clone(),
        ) else {
            return Ok(());
        };
        if app.app_type() != AppType::Stripe {
            return Ok(());
        }
        let client = self.stripe(&app).await?;
        let id = invoice.id.clone();
        tokio::task::spawn_blocking(move || {
            stripe_sync::void_invoice(&client, &stripe_id, &id)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// An API action on an invoice, then advancing it.
    pub async fn act(&self, id: &str, action: Action) -> Result<Invoice> {
        let _guard = self.inner.work.lock().await;
        let now = self.now();
        self.advance(id, Some(action), now).await
    }

    /// `POST /api/v1/billing/invoices/invoice` with the billing profile's progressive billing:
    /// see [`Billing::invoice_pending`].
    pub async fn invoice_now(
        &self,
        customer_id: &str,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Vec<Invoice>> {
        self.invoice_pending(customer_id, as_of, None, None).await
    }

    /// `POST /api/v1/billing/invoices/invoice` (OpenMeter's `InvoicePendingLines`): the
    /// customer's gathering lines billable at `as_of` (default now, never later, truncated to
    /// the minute) become a new invoice per currency, returned. Flat fees and lines of a
    /// period that is over are billable once due; with progressive billing (the effective
    /// workflow's `invoicing.progressiveBilling`, or `progressive`), a usage line in progress
    /// is split at `as_of`: the part before it is invoiced, the rest stays gathering in the
    /// same split group (see [`lines::billable`]). The split is written in one transaction
    /// before the invoice is created; a repeated request splits and invoices nothing more.
    /// Nothing billable is an `invoice_create_no_lines` error, as OpenMeter's.
    pub async fn invoice_pending(
        &self,
        customer_id: &str,
        as_of: Option<DateTime<Utc>>,
        progressive: Option<bool>,
        line_ids: Option<&[String]>,
    ) -> Result<Vec<Invoice>> {
        let _guard = self.inner.work.lock().await;
        let now = self.now();
        let at = lines::minute(as_of.unwrap_or(now).min(now));
        for sub in self
            .catalog()
            .customer_subscriptions(self.ns(), customer_id)
            .await
            .map_err(sub_err)?
        {
            self.sync_subscription(&sub.id, now).await?;
        }
        let progressive = match progressive {
            Some(p) => p,
            None => {
                self.profile(customer_id)
                    .await?
                    .workflow
                    .invoicing
                    .progressive_billing
            }
        };
        let mut whole = Vec::new();
        let mut splits = Vec::new();
        for line in self.gathering_lines(customer_id).await? {
            // `filters.lineIds`: only the named pending lines.
            if line_ids.is_some_and(|ids| !ids.contains(&line.id)) {
                continue;
            }
            let grows = progressive && self.meter_only_grows(&line).await?;
            let billable =
                lines::billable(&line, at, progressive, grows).map_err(|e| Error::Transition {
                    code: "invoice_progressive_billing_not_supported",
                    message: e.to_string(),
                })?;
            match billable {
                lines::Billable::No => {}
                lines::Billable::Whole => whole.push(line),
                lines::Billable::Until(t) => {
                    let group = ulid::Ulid::new().to_string();
                    let rest = ulid::Ulid::new().to_string();
                    let (part, rest) = lines::split_at(&line, t, group, rest, now);
                    splits.push((line.period, part, rest));
                }
            }
        }
        if !splits.is_empty() {
            let writes: Vec<SplitWrite<'_>> = splits
                .iter()
                .map(|(read, part, rest)| SplitWrite {
                    read: *read,
                    part,
                    rest: Some(rest),
                })
                .collect();
            let parts = self.catalog().split_lines(self.ns(), &writes).await?;
            tracing::info!(customer = %customer_id, lines = parts.len(), %at, "Split usage lines for progressive billing.");
            whole.extend(parts);
        }
        let mut currencies: BTreeMap<String, Vec<Line>> = BTreeMap::new();
        for line in whole {
            currencies
                .entry(line.currency.clone())
                .or_default()
                .push(line);
        }
        let mut out = Vec::new();
        for (currency, lines) in currencies {
            if let Some(id) = self
                .collect_customer(customer_id, &currency, lines, at)
                .await?
            {
                out.push(self.advance(&id, None, now).await?);
            }
        }
        if out.is_empty() {
            return Err(Error::Transition {
                code: "invoice_create_no_lines",
                message: format!(
                    "the new invoice would have no lines: customer {customer_id} has nothing to invoice as of {at}"
                ),
            });
        }
        Ok(out)
    }

    /// The live lines on the customer's gathering invoices.
    async fn gathering_lines(&self, customer_id: &str) -> Result<Vec<Line>> {
        let filter = metron_storage::invoices::InvoiceFilter {
            customers: vec![customer_id.to_owned()],
            extended_statuses: vec![ExtendedStatus::Gathering.as_str().to_owned()],
            ..Default::default()
        };
        let mut out = Vec::new();
        for invoice in self.catalog().list_invoices(self.ns(), &filter).await? {
            out.extend(self.catalog().invoice_lines(self.ns(), &invoice.id).await?);
        }
        Ok(out)
    }

    /// Whether a usage line's meter only grows over time (sum, count, max, unique count), so
    /// that it can be billed progressively (OpenMeter's `isDependingOnIncreaseOnlyMeters`). A
    /// line without a feature or meter cannot.
    async fn meter_only_grows(&self, line: &Line) -> Result<bool> {
        use metron_engine::aggregate::Aggregation;
        let metron_engine::billing::RateCard::UsageBased(card) = &line.rate_card else {
            return Ok(false);
        };
        let Some(feature_key) = &card.feature_key else {
            return Ok(false);
        };
        let Some(feature) = self
            .catalog()
            .get_feature(self.ns(), feature_key)
            .await
            .map_err(|e| Error::Invalid(e.to_string()))?
        else {
            return Ok(false);
        };
        let Some(slug) = &feature.meter_slug else {
            return Ok(false);
        };
        let meter = self
            .inner
            .pipeline
            .get_meter(self.ns(), slug)
            .await
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(matches!(
            meter.aggregation,
            Aggregation::Sum | Aggregation::Count | Aggregation::Max | Aggregation::UniqueCount
        ))
    }

    /// The custom invoicing app reports that it synced the draft
    /// (`POST /api/v1/apps/custom-invoicing/{invoiceId}/draft/synchronized`): its invoice
    /// number, external id and line ids are kept, and the invoice moves on.
    pub async fn custom_draft_synced(&self, id: &str, result: &Value) -> Result<Invoice> {
        self.custom_callback(id, ExtendedStatus::DraftSyncing, |invoice, lines, now| {
            invoice.draft_synced_at = Some(now);
            if let Some(n) = result.get("invoiceNumber").and_then(Value::as_str) {
                invoice.number = Some(n.to_owned());
            }
            if let Some(e) = result.get("externalId").and_then(Value::as_str) {
                invoice.external_invoicing_id = Some(e.to_owned());
            }
            for m in result
                .get("lineExternalIds")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (Some(line_id), Some(ext)) = (
                    m.get("lineId").and_then(Value::as_str),
                    m.get("externalId").and_then(Value::as_str),
                ) else {
                    continue;
                };
                if let Some(line) = lines.iter_mut().find(|l| l.id == line_id) {
                    line.external_id = Some(ext.to_owned());
                }
            }
        })
        .await
    }

    /// The custom invoicing app reports that it issued the invoice
    /// (`.../issuing/synchronized`).
    pub async fn custom_issuing_synced(&self, id: &str, body: &Value) -> Result<Invoice> {
        self.custom_callback(id, ExtendedStatus::IssuingSyncing, |invoice, _, now| {
            invoice.issuing_synced_at = Some(now);
            if let Some(n) = body
                .pointer("/invoicing/invoiceNumber")
                .and_then(Value::as_str)
            {
                invoice.number = Some(n.to_owned());
            }
            if let Some(t) = body
                .pointer("/invoicing/sentToCustomerAt")
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            {
                invoice.sent_to_customer_at = Some(t.with_timezone(&Utc));
            }
            if let Some(e) = body.pointer("/payment/externalId").and_then(Value::as_str) {
                invoice.external_payment_id = Some(e.to_owned());
            }
        })
        .await
    }

    async fn custom_callback(
        &self,
        id: &str,
        expected: ExtendedStatus,
        apply: impl FnOnce(&mut Invoice, &mut [Line], DateTime<Utc>),
    ) -> Result<Invoice> {
        let _guard = self.inner.work.lock().await;
        let now = self.now();
        let (mut invoice, mut lines) = self.get(id).await?;
        if invoice.status != expected {
            return Err(Error::Transition {
                code: "invoice_action_not_available",
                message: format!(
                    "invoice {id} is {}, not {}: nothing to synchronize",
                    invoice.status.as_str(),
                    expected.as_str()
                ),
            });
        }
        apply(&mut invoice, &mut lines, now);
        invoice.updated_at = now;
        self.catalog()
            .save_invoice(self.ns(), &invoice, &lines)
            .await?;
        self.advance(id, None, now).await
    }

    /// A line given by the API (`InvoicePendingLineCreate` / `InvoiceSimulationLine`) as a
    /// stored line of `customer_id` on `invoice_id`.
    fn api_line(
        &self,
        customer_id: &str,
        invoice_id: &str,
        currency: &str,
        input: &Value,
        now: DateTime<Utc>,
    ) -> Result<Line> {
        let name = input
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::Invalid("a line needs a name".into()))?;
        let period: LinePeriod = input
            .get("period")
            .and_then(|p| serde_json::from_value(p.clone()).ok())
            .ok_or_else(|| {
                Error::Invalid(format!("line {name:?}: period {{from, to}} is required"))
            })?;
        if period.to < period.from {
            return Err(Error::Invalid(format!(
                "line {name:?}: period ends before it starts"
            )));
        }
        let invoice_at = input
            .get("invoiceAt")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| Error::Invalid(format!("line {name:?}: invoiceAt is required")))?;
        let rate_card = input.get("rateCard");
        let price = rate_card
            .and_then(|r| r.get("price"))
            .or_else(|| input.get("price"))
            .cloned()
            .unwrap_or(Value::Null);
        let feature_key = rate_card
            .and_then(|r| r.get("featureKey"))
            .or_else(|| input.get("featureKey"))
            .cloned();
        let tax_config = rate_card
            .and_then(|r| r.get("taxConfig"))
            .or_else(|| input.get("taxConfig"))
            .cloned();
        let mut card = if price.get("type").and_then(Value::as_str) == Some("flat") {
            json!({"type": "flat_fee", "key": "manual", "name": name, "billingCadence": null, "price": price})
        } else {
            json!({"type": "usage_based", "key": "manual", "name": name, "billingCadence": "P1M", "price": price})
        };
        if let Value::Object(map) = &mut card {
            if let Some(f) = feature_key.filter(|f| !f.is_null()) {
                map.insert("key".into(), f.clone());
                map.insert("featureKey".into(), f);
            }
            if let Some(t) = tax_config.filter(|t| !t.is_null()) {
                map.insert("taxConfig".into(), t);
            }
        }
        let rate_card: metron_engine::billing::RateCard = serde_json::from_value(card)
            .map_err(|e| Error::Invalid(format!("line {name:?}: {e}")))?;
        let issues = rate_card.issues();
        if let Some(first) = issues.first() {
            return Err(Error::Invalid(format!("line {name:?}: {first}")));
        }
        let quantity = input
            .get("quantity")
            .and_then(Value::as_str)
            .map(|q| {
                q.parse::<Decimal>()
                    .map_err(|_| Error::Invalid(format!("line {name:?}: invalid quantity {q:?}")))
            })
            .transpose()?;
        let id = input
            .get("id")
            .and_then(Value::as_str)
            .map_or_else(|| ulid::Ulid::new().to_string(), str::to_owned);
        Ok(Line {
            line_key: format!("manual/{id}"),
            id,
            invoice_id: invoice_id.to_owned(),
            customer_id: customer_id.to_owned(),
            name: name.to_owned(),
            description: None,
            metadata: input
                .get("metadata")
                .and_then(|m| serde_json::from_value(m.clone()).ok()),
            managed_by: "manual".into(),
            currency: currency.to_owned(),
            period,
            invoice_at,
            rate_card,
            pro_rating_full_period: None,
            subscription: None,
            metered_quantity: quantity,
            quantity,
            children: Vec::new(),
            totals: Totals::default(),
            external_id: None,
            split: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        })
    }

    /// `POST /api/v1/billing/customers/{customerId}/invoices/pending-lines`: manual lines on
    /// the customer's gathering invoice; they are invoiced when due like any other line.
    /// Returns the lines, the gathering invoice and whether it was new.
    pub async fn pending_lines(
        &self,
        customer_id: &str,
        currency: &str,
        inputs: &[Value],
    ) -> Result<(Vec<Line>, Invoice, bool)> {
        let _guard = self.inner.work.lock().await;
        let now = self.now();
        let currency = metron_engine::billing::Currency::lookup(currency)
            .map_err(|e| Error::Invalid(e.to_string()))?
            .code;
        let existed = self
            .catalog()
            .list_invoices(
                self.ns(),
                &metron_storage::invoices::InvoiceFilter {
                    customers: vec![customer_id.to_owned()],
                    extended_statuses: vec!["gathering".into()],
                    currencies: vec![currency.to_owned()],
                    ..Default::default()
                },
            )
            .await?
            .into_iter()
            .next()
            .is_some();
        let gathering = self.gathering(customer_id, currency, now).await?;
        let mut lines = Vec::new();
        for input in inputs {
            let mut line = self.api_line(customer_id, &gathering.id, currency, input, now)?;
            rate::rate_line(&mut line).map_err(Error::Invalid)?;
            lines.push(line);
        }
        self.catalog().insert_lines(self.ns(), &lines).await?;
        let due = lines.iter().map(|l| l.invoice_at).min();
        if let Some(at) = due {
            self.schedule(at.max(now), Entry::Collect);
        }
        Ok((lines, gathering, !existed))
    }

    /// `POST .../invoices/simulate`: the invoice the given lines (with their quantities)
    /// would make for the customer, rated, stored nowhere.
    pub async fn simulate(&self, customer_id: &str, body: &Value) -> Result<(Invoice, Vec<Line>)> {
        let now = self.now();
        let currency = body
            .get("currency")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Invalid("currency is required".into()))?;
        let currency = metron_engine::billing::Currency::lookup(currency)
            .map_err(|e| Error::Invalid(e.to_string()))?
            .code;
        let profile = self.profile(customer_id).await?;
        let mut invoice = new_invoice(&profile, currency, ExtendedStatus::DraftCreated, now);
        invoice.number = body
            .get("number")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut lines = Vec::new();
        for input in body
            .get("lines")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            lines.push(self.api_line(customer_id, &invoice.id, currency, input, now)?);
        }
        self.calculate(&mut invoice, &mut lines)
            .map_err(Error::Invalid)?;
        invoice.period = Some(LinePeriod {
            from: lines.iter().map(|l| l.period.from).min().unwrap_or(now),
            to: lines.iter().map(|l| l.period.to).max().unwrap_or(now),
        });
        Ok((invoice, lines))
    }

    /// Reads an invoice and its lines.
    pub async fn get(&self, id: &str) -> Result<(Invoice, Vec<Line>)> {
        let invoice = self
            .catalog()
            .get_invoice(self.ns(), id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let lines = self.catalog().invoice_lines(self.ns(), id).await?;
        Ok((invoice, lines))
    }

    /// The API's `statusDetails` of an invoice now.
    pub fn status_details(&self, invoice: &Invoice, lines: &[Line]) -> Value {
        let ctx = self.context(invoice, lines, self.now(), Origin::Api);
        serde_json::to_value(invoicing::status_details(invoice.status, &ctx)).unwrap_or(Value::Null)
    }
}

fn hook(enabled: bool, done: bool) -> Hook {
    match (enabled, done) {
        (false, _) => Hook::Disabled,
        (true, false) => Hook::Pending,
        (true, true) => Hook::Done,
    }
}

fn sub_err(e: metron_storage::subscriptions::SubscriptionError) -> Error {
    Error::Invalid(e.to_string())
}

fn days(text: &str) -> u32 {
    let t = DateTime::<Utc>::UNIX_EPOCH;
    u32::try_from((add_iso(t, text) - t).num_days()).unwrap_or(30)
}

/// The workflow an invoice was created with.
pub fn workflow_of(invoice: &Invoice) -> BillingWorkflow {
    invoice
        .workflow
        .get("workflow")
        .and_then(|w| serde_json::from_value(w.clone()).ok())
        .unwrap_or_default()
}

fn new_invoice(
    profile: &ResolvedProfile,
    currency: &str,
    status: ExtendedStatus,
    now: DateTime<Utc>,
) -> Invoice {
    let customer = &profile.customer;
    Invoice {
        id: ulid::Ulid::new().to_string(),
        customer_id: customer.id.clone(),
        currency: currency.to_owned(),
        status,
        number: None,
        metadata: None,
        customer: json!({
            "id": customer.id,
            "key": customer.key,
            "name": customer.name,
            "usageAttribution": customer.usage_attribution,
            "addresses": customer.billing_address.iter().collect::<Vec<_>>(),
        }),
        supplier: serde_json::to_value(&profile.profile.supplier).unwrap_or(Value::Null),
        workflow: json!({
            "sourceBillingProfileId": profile.profile.id,
            "workflow": profile.workflow,
            "apps": {
                "invoicing": {"id": profile.invoicing_app.id},
                "payment": {"id": profile.payment_app.id},
                "tax": {"id": profile.tax_app.id},
            },
        }),
        invoicing_app_id: profile.invoicing_app.id.clone(),
        period: None,
        totals: Totals::default(),
        validation_issues: Vec::new(),
        external_invoicing_id: None,
        synced_digest: None,
        external_payment_id: None,
        draft_until: None,
        collection_at: None,
        quantity_snapshoted_at: None,
        issued_at: None,
        due_at: None,
        voided_at: None,
        sent_to_customer_at: None,
        payment_processing_entered_at: None,
        draft_sync_hook: matches!(
            profile.invoicing_app.kind,
            metron_storage::apps::AppKind::CustomInvoicing {
                enable_draft_sync_hook: true,
                ..
            }
        ),
        issuing_sync_hook: matches!(
            profile.invoicing_app.kind,
            metron_storage::apps::AppKind::CustomInvoicing {
                enable_issuing_sync_hook: true,
                ..
            }
        ),
        draft_synced_at: None,
        issuing_synced_at: None,
        created_at: now,
        updated_at: now,
        deleted_at: None,
    }
}

/// Subscriptions are read through the catalog; re-exported for the API's read models.
pub type SubscriptionRecord = Subscription;
