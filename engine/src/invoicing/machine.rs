//! The transition table: which [`Trigger`] moves which [`ExtendedStatus`] where under which
//! [`Context`], and the [`Effect`]s the billing service performs on arrival.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::status::ExtendedStatus;

/// The most `next` steps [`advance_until_stable`] takes. The `next` edges form no cycle
/// (a test walks them all), so this is never reached; it bounds the loop anyway.
pub const ADVANCE_STEPS_MAX: usize = 32;

pub type Result<T, E = InvalidTransition> = std::result::Result<T, E>;

/// A trigger refused in a state. The messages and [`codes`](Self::code) are OpenMeter's
/// (`billing.ErrInvoiceCannotAdvance`, `ErrInvoiceActionNotAvailable`,
/// `ErrInvoiceCannotDeleteGathering`); OpenMeter answers them with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTransition {
    #[error("cannot advance invoice in status [{from}]: invoice cannot advance")]
    CannotAdvance { from: ExtendedStatus },
    #[error("cannot {trigger} invoice in status [{from}]: invoice action not available")]
    NotAvailable {
        from: ExtendedStatus,
        trigger: Trigger,
    },
    #[error("gathering invoices cannot be deleted, please delete the upcoming lines instead")]
    DeleteGathering,
}

impl InvalidTransition {
    /// The validation issue code OpenMeter puts in the problem's `extensions`.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::CannotAdvance { .. } => "invoice_cannot_advance",
            Self::NotAvailable { .. } => "invoice_action_not_available",
            Self::DeleteGathering => "invoice_cannot_delete_gathering",
        }
    }
}

/// What asks an invoice to move: a user's action, the service's own progress, or the
/// invoicing or payment app (a Stripe webhook, a custom-invoicing callback). Serde uses the
/// snake_case variant names (`snapshot_quantities`); `Display` uses OpenMeter's trigger names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Move on by itself when the guards allow (`advance` action, automatic advancement).
    Next,
    /// Approve a draft (`approve` action).
    Approve,
    /// Retry the failed step (`retry` action, or a payment retried by the app).
    Retry,
    /// The state's work failed (an effect, a validation, the app reported a failure).
    Failed,
    /// The invoice was edited; refused where the invoice is immutable.
    Updated,
    /// Collect now, not at `collectionAt` (`snapshot-quantities` action; OpenMeter's
    /// `trigger_force_collect`).
    SnapshotQuantities,
    /// Delete the invoice (`DELETE` on the invoice).
    Delete,
    /// The payment app reports the invoice paid.
    Paid,
    /// The payment app reports funds authorized (held, not settled).
    Authorized,
    /// The payment needs the customer's action (3-D Secure, ...).
    ActionRequired,
    /// The payment app gave up collecting.
    PaymentUncollectible,
    /// The invoice is past its due date.
    PaymentOverdue,
    /// Void the invoice (`void` action, or the app reports it voided).
    Void,
    /// Invoice a gathering invoice's pending lines now (`invoice` action).
    Invoice,
}

impl Trigger {
    pub const ALL: &[Trigger] = &[
        Self::Next,
        Self::Approve,
        Self::Retry,
        Self::Failed,
        Self::Updated,
        Self::SnapshotQuantities,
        Self::Delete,
        Self::Paid,
        Self::Authorized,
        Self::ActionRequired,
        Self::PaymentUncollectible,
        Self::PaymentOverdue,
        Self::Void,
        Self::Invoice,
    ];

    /// OpenMeter's trigger name, as its error messages show it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Next => "trigger_next",
            Self::Approve => "trigger_approve",
            Self::Retry => "trigger_retry",
            Self::Failed => "trigger_failed",
            Self::Updated => "trigger_updated",
            Self::SnapshotQuantities => "trigger_force_collect",
            Self::Delete => "trigger_delete",
            Self::Paid => "trigger_paid",
            Self::Authorized => "trigger_authorized",
            Self::ActionRequired => "trigger_action_required",
            Self::PaymentUncollectible => "trigger_payment_uncollectible",
            Self::PaymentOverdue => "trigger_payment_overdue",
            Self::Void => "trigger_void",
            Self::Invoice => "trigger_invoice",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the invoicing app holds a step until it calls back (custom invoicing's
/// `enableDraftSyncHook` / `enableIssuingSyncHook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Hook {
    /// The app syncs synchronously (Stripe, sandbox, custom invoicing without the hook).
    #[default]
    Disabled,
    /// The app was asked and has not called back yet: the invoice waits in the syncing state.
    Pending,
    /// The app called back (`.../draft/synchronized`, `.../issuing/synchronized`).
    Done,
}

impl Hook {
    const fn allows_advance(self) -> bool {
        !matches!(self, Self::Pending)
    }
}

/// Who fired the trigger; decides whether a void must also be done in the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Origin {
    /// A user through the API, or the service itself.
    #[default]
    Api,
    /// The invoicing or payment app reported it (webhook, callback): it already happened there.
    App,
}

/// Everything the guards read, gathered by the billing service from the invoice, its
/// workflow settings and the clock. No field is read from anywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub now: DateTime<Utc>,
    /// `workflow.invoicing.autoAdvance`: approve by itself once `draft_until` passed.
    pub auto_advance: bool,
    /// `draftUntil`: the end of the draft period; `None` never auto-approves.
    pub draft_until: Option<DateTime<Utc>>,
    /// `collectionAt`: the end of the collection period; `None` collects at once.
    pub collection_at: Option<DateTime<Utc>>,
    /// The invoice has a validation issue of severity `critical`.
    pub critical_issues: bool,
    pub draft_sync: Hook,
    pub issuing_sync: Hook,
    /// Every line of the invoice is deleted: issuing deletes the invoice instead.
    pub lines_empty: bool,
    /// A gathering invoice has lines that can be invoiced now (offers `invoice`).
    pub lines_invoicable: bool,
    pub origin: Origin,
}

impl Context {
    /// OpenMeter's defaults: `autoAdvance=true`, no hooks, nothing pending, nothing wrong.
    pub const fn new(now: DateTime<Utc>) -> Self {
        Self {
            now,
            auto_advance: true,
            draft_until: None,
            collection_at: None,
            critical_issues: false,
            draft_sync: Hook::Disabled,
            issuing_sync: Hook::Disabled,
            lines_empty: false,
            lines_invoicable: false,
            origin: Origin::Api,
        }
    }

    fn collection_due(&self) -> bool {
        self.collection_at.is_none_or(|at| self.now >= at)
    }

    fn approval_due(&self) -> bool {
        self.auto_advance && self.draft_until.is_some_and(|at| self.now >= at)
    }
}

/// Where a deletion comes from (OpenMeter's `ChangeSource` for `deleteInvoice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeleteSource {
    /// A user deleted the invoice: its lines are deleted like API line deletes.
    Api,
    /// Issuing found no lines left: the lines stay visible on the deleted invoice.
    System,
}

/// What a notification announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notification {
    /// `invoice.created`.
    InvoiceCreated,
    /// `invoice.updated`, carrying the invoice before and after.
    InvoiceUpdated,
}

/// Work the billing service does on a transition, in the order given. An effect that fails
/// makes the service fire [`Trigger::Failed`] from the state it arrived in (and skip the
/// rest); effects change what the service puts in the next [`Context`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Demote the invoice's critical validation issues to warnings (before a retry).
    DowngradeCriticalIssues,
    /// Rate the lines and recompute the totals.
    Calculate,
    /// Read the meters for the usage lines and freeze their quantities; set
    /// `quantitySnapshotedAt`.
    SnapshotQuantities,
    /// Ask the invoicing app to validate the invoice; its errors become validation issues.
    Validate,
    /// Upsert the draft in the invoicing app (Stripe: create or update the draft invoice).
    SyncDraft,
    /// Let line engines make the lines final before issuing.
    FinalizeLines,
    /// Upsert in the app, set `issuedAt` and `dueAt`, then finalize in the app (Stripe:
    /// `POST /v1/invoices/{id}/finalize`), which assigns the number.
    SyncIssuing,
    /// Book the issued invoice's charges.
    BookCharges,
    /// Set `paymentProcessingEnteredAt` to now unless it is set.
    RecordPaymentProcessing,
    /// Book the authorized payment.
    BookPaymentAuthorized,
    /// Book the settled payment.
    BookPaymentSettled,
    /// Delete the lines and set `deletedAt` (unless set by an earlier attempt); clear the
    /// validation issues.
    PrepareDelete(DeleteSource),
    /// Delete the invoice in the invoicing app (Stripe: `DELETE /v1/invoices/{id}`).
    DeleteInApp,
    /// Void the invoice in the invoicing app (Stripe: `POST /v1/invoices/{id}/void`).
    VoidInApp,
    /// Set `voidedAt` to now.
    RecordVoided,
    /// Create a standard invoice from the gathering invoice's invoicable lines.
    CreateInvoice,
    /// Advance the invoice again at this time: a guard waits for it.
    ScheduleAt(DateTime<Utc>),
    Notify(Notification),
}

/// One move of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: ExtendedStatus,
    pub trigger: Trigger,
    pub to: ExtendedStatus,
    pub effects: Vec<Effect>,
}

/// The moves [`advance_until_stable`] makes and where they end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub to: ExtendedStatus,
    pub steps: Vec<Transition>,
}

/// Fires `trigger` in `from`: the state it leads to and the effects of the move, or why
/// the state refuses it. Pure: nothing changes until the caller performs the effects.
pub fn fire(from: ExtendedStatus, trigger: Trigger, ctx: &Context) -> Result<Transition> {
    let Some(to) = target(from, trigger, ctx) else {
        return Err(refusal(from, trigger));
    };
    Ok(Transition {
        from,
        trigger,
        to,
        effects: effects(from, trigger, to, ctx),
    })
}

/// Whether [`fire`] would succeed.
pub fn can_fire(from: ExtendedStatus, trigger: Trigger, ctx: &Context) -> bool {
    target(from, trigger, ctx).is_some()
}

/// Fires [`Trigger::Next`] while the state allows, as OpenMeter's `AdvanceUntilStateStable`,
/// assuming every effect succeeds and leaves `ctx` as it is. The service, whose effects can
/// fail and change the context, fires `Next` one step at a time instead.
pub fn advance_until_stable(from: ExtendedStatus, ctx: &Context) -> Path {
    let mut path = Path {
        to: from,
        steps: Vec::new(),
    };
    for _ in 0..ADVANCE_STEPS_MAX {
        let Ok(step) = fire(path.to, Trigger::Next, ctx) else {
            break;
        };
        path.to = step.to;
        path.steps.push(step);
    }
    path
}

/// The effects of arriving in a new invoice's first state, `draft.created`.
pub fn created_effects() -> Vec<Effect> {
    vec![
        Effect::Calculate,
        Effect::Notify(Notification::InvoiceCreated),
    ]
}

/// When a state that cannot advance now will be able to by the clock alone: the end of the
/// collection period or of the draft period. A scheduler keeps it across restarts.
pub fn wake_at(state: ExtendedStatus, ctx: &Context) -> Option<DateTime<Utc>> {
    match state {
        ExtendedStatus::DraftWaitingForCollection => ctx.collection_at.filter(|at| ctx.now < *at),
        ExtendedStatus::DraftWaitingAutoApproval if ctx.auto_advance => {
            ctx.draft_until.filter(|at| ctx.now < *at)
        }
        _ => None,
    }
}

fn refusal(from: ExtendedStatus, trigger: Trigger) -> InvalidTransition {
    match (from, trigger) {
        (ExtendedStatus::Gathering, Trigger::Delete) => InvalidTransition::DeleteGathering,
        (_, Trigger::Next) => InvalidTransition::CannotAdvance { from },
        _ => InvalidTransition::NotAvailable { from, trigger },
    }
}

/// The transition table, OpenMeter's `allocateStateMachine` permit by permit.
fn target(from: ExtendedStatus, trigger: Trigger, ctx: &Context) -> Option<ExtendedStatus> {
    use ExtendedStatus as S;
    match trigger {
        Trigger::Updated => updatable(from).then_some(S::DraftUpdating),
        Trigger::Delete => deletable(from).then_some(S::DeleteInProgress),
        Trigger::Void => voidable(from).then_some(S::Voided),
        Trigger::Invoice => (from == S::Gathering && ctx.lines_invoicable).then_some(S::Gathering),
        _ if from.status() == super::InvoiceStatus::Draft => draft_target(from, trigger, ctx),
        _ => later_target(from, trigger, ctx),
    }
}

fn draft_target(from: ExtendedStatus, trigger: Trigger, ctx: &Context) -> Option<ExtendedStatus> {
    use ExtendedStatus as S;
    use Trigger as T;
    let clean = !ctx.critical_issues;
    Some(match (from, trigger) {
        (S::DraftCreated, T::Next) => S::DraftWaitingForCollection,
        (S::DraftCreated, T::Failed) => S::DraftInvalid,
        (S::DraftWaitingForCollection, T::Next) if ctx.collection_due() => S::DraftCollecting,
        (S::DraftWaitingForCollection, T::SnapshotQuantities) => S::DraftCollecting,
        (S::DraftCollecting, T::Next) => S::DraftValidating,
        (S::DraftCollecting, T::Failed) => S::DraftInvalid,
        (S::DraftUpdating, T::Next) => S::DraftWaitingForCollection,
        (S::DraftUpdating, T::Failed) => S::DraftInvalid,
        (S::DraftValidating, T::Next) if clean => S::DraftSyncing,
        (S::DraftValidating, T::Failed) => S::DraftInvalid,
        (S::DraftInvalid, T::Retry) => S::DraftValidating,
        (S::DraftSyncing, T::Next) if clean && ctx.draft_sync.allows_advance() => {
            if ctx.auto_advance {
                S::DraftWaitingAutoApproval
            } else {
                S::DraftManualApprovalNeeded
            }
        }
        (S::DraftSyncing, T::Failed) => S::DraftSyncFailed,
        (S::DraftSyncFailed, T::Retry) => S::DraftValidating,
        (S::DraftReadyToIssue, T::Next) if ctx.lines_empty => S::DeleteSyncing,
        (S::DraftReadyToIssue, T::Next) => S::IssuingLineFinalization,
        (S::DraftWaitingAutoApproval, T::Approve) => S::DraftReadyToIssue,
        (S::DraftWaitingAutoApproval, T::Next) if clean && ctx.approval_due() => {
            S::DraftReadyToIssue
        }
        (S::DraftManualApprovalNeeded, T::Approve) if clean => S::DraftReadyToIssue,
        _ => return None,
    })
}

fn later_target(from: ExtendedStatus, trigger: Trigger, ctx: &Context) -> Option<ExtendedStatus> {
    use ExtendedStatus as S;
    use Trigger as T;
    Some(match (from, trigger) {
        (S::DeleteInProgress, T::Next) => S::DeleteSyncing,
        (S::DeleteInProgress, T::Failed) => S::DeleteFailed,
        (S::DeleteSyncing, T::Next) => S::Deleted,
        (S::DeleteSyncing, T::Failed) => S::DeleteFailed,

        (S::IssuingLineFinalization, T::Next) => S::IssuingSyncing,
        (S::IssuingLineFinalization, T::Failed) => S::IssuingLineFinalizationFailed,
        (S::IssuingLineFinalizationFailed, T::Retry) => S::IssuingLineFinalization,
        (S::IssuingSyncing, T::Next) if ctx.issuing_sync.allows_advance() => {
            S::IssuingChargeBooking
        }
        (S::IssuingSyncing, T::Failed) => S::IssuingSyncFailed,
        (S::IssuingSyncFailed, T::Retry) => S::IssuingSyncing,
        (S::IssuingChargeBooking, T::Next) => S::Issued,
        (S::IssuingChargeBooking, T::Failed) => S::IssuingChargeBookingFailed,
        (S::IssuingChargeBookingFailed, T::Retry) => S::IssuingChargeBooking,

        (S::Issued, T::Next) => S::PaymentProcessingPending,

        (S::PaymentProcessingBookingAuthorized, T::Next) => S::PaymentProcessingAuthorized,
        (S::PaymentProcessingBookingAuthorized, T::Failed) => {
            S::PaymentProcessingBookingAuthorizedFailed
        }
        (S::PaymentProcessingBookingAuthorizedFailed, T::Retry) => {
            S::PaymentProcessingBookingAuthorized
        }
        (S::PaymentProcessingBookingAuthorizedAndSettled, T::Next) => S::Paid,
        (S::PaymentProcessingBookingAuthorizedAndSettled, T::Failed) => {
            S::PaymentProcessingBookingAuthorizedAndSettledFailed
        }
        (S::PaymentProcessingBookingAuthorizedAndSettledFailed, T::Retry) => {
            S::PaymentProcessingBookingAuthorizedAndSettled
        }
        (S::PaymentProcessingBookingSettled, T::Next) => S::Paid,
        (S::PaymentProcessingBookingSettled, T::Failed) => S::PaymentProcessingBookingSettledFailed,
        (S::PaymentProcessingBookingSettledFailed, T::Retry) => S::PaymentProcessingBookingSettled,

        _ => return payment_target(from, trigger),
    })
}

/// The payment reports: the same permits from every state that waits for money.
fn payment_target(from: ExtendedStatus, trigger: Trigger) -> Option<ExtendedStatus> {
    use ExtendedStatus as S;
    use Trigger as T;
    let waiting = matches!(
        from,
        S::PaymentProcessingPending
            | S::PaymentProcessingAuthorized
            | S::PaymentProcessingFailed
            | S::PaymentProcessingActionRequired
            | S::Overdue
    );
    if from == S::Uncollectible {
        return match trigger {
            T::Authorized => Some(S::PaymentProcessingBookingAuthorized),
            T::Paid => Some(S::PaymentProcessingBookingAuthorizedAndSettled),
            _ => None,
        };
    }
    if !waiting {
        return None;
    }
    let to = match trigger {
        // Funds held earlier are settled without booking the authorization twice.
        T::Paid if from == S::PaymentProcessingAuthorized => S::PaymentProcessingBookingSettled,
        T::Paid => S::PaymentProcessingBookingAuthorizedAndSettled,
        T::Authorized => S::PaymentProcessingBookingAuthorized,
        T::Failed => S::PaymentProcessingFailed,
        T::ActionRequired => S::PaymentProcessingActionRequired,
        T::PaymentOverdue => S::Overdue,
        T::PaymentUncollectible => S::Uncollectible,
        T::Retry => S::PaymentProcessingPending,
        _ => return None,
    };
    // Each state permits every report but the one that names itself, and nothing already
    // authorized is authorized again; pending is retried from the others only.
    let permitted = match from {
        S::PaymentProcessingPending => !matches!(trigger, T::Retry),
        S::PaymentProcessingAuthorized => !matches!(trigger, T::Retry | T::Authorized),
        S::PaymentProcessingFailed => !matches!(trigger, T::Failed),
        S::PaymentProcessingActionRequired => !matches!(trigger, T::ActionRequired),
        S::Overdue => !matches!(trigger, T::PaymentOverdue),
        _ => false,
    };
    permitted.then_some(to)
}

/// States where an edit is accepted (OpenMeter permits `trigger_updated`): every draft
/// state but `draft.updating` itself and `draft.syncing`. The others are `immutable`.
const fn updatable(state: ExtendedStatus) -> bool {
    use ExtendedStatus as S;
    matches!(
        state,
        S::DraftCreated
            | S::DraftWaitingForCollection
            | S::DraftCollecting
            | S::DraftValidating
            | S::DraftInvalid
            | S::DraftSyncFailed
            | S::DraftReadyToIssue
            | S::DraftWaitingAutoApproval
            | S::DraftManualApprovalNeeded
    )
}

/// Every draft and issuing state, and a failed deletion.
fn deletable(state: ExtendedStatus) -> bool {
    use super::InvoiceStatus as P;
    match state.status() {
        P::Draft | P::Issuing => true,
        P::Delete => state == ExtendedStatus::DeleteFailed,
        _ => false,
    }
}

/// Issued and every payment processing state, and uncollectible; not overdue.
fn voidable(state: ExtendedStatus) -> bool {
    use super::InvoiceStatus as P;
    matches!(state.status(), P::Issued | P::PaymentProcessing)
        || state == ExtendedStatus::Uncollectible
}

fn effects(
    from: ExtendedStatus,
    trigger: Trigger,
    to: ExtendedStatus,
    ctx: &Context,
) -> Vec<Effect> {
    use Effect as E;
    use ExtendedStatus as S;
    let mut effects = Vec::with_capacity(4);
    if trigger == Trigger::Retry {
        effects.push(E::DowngradeCriticalIssues);
    }
    match to {
        S::Gathering => return vec![E::CreateInvoice],
        S::DraftCollecting => effects.extend([E::SnapshotQuantities, E::Calculate]),
        S::DraftUpdating | S::DraftValidating => effects.extend([E::Calculate, E::Validate]),
        S::DraftSyncing => effects.push(E::SyncDraft),
        S::IssuingLineFinalization => effects.push(E::FinalizeLines),
        S::IssuingSyncing => effects.push(E::SyncIssuing),
        S::IssuingChargeBooking => effects.push(E::BookCharges),
        S::PaymentProcessingPending => effects.push(E::RecordPaymentProcessing),
        S::PaymentProcessingBookingAuthorized => effects.push(E::BookPaymentAuthorized),
        S::PaymentProcessingBookingAuthorizedAndSettled => {
            effects.extend([E::BookPaymentAuthorized, E::BookPaymentSettled]);
        }
        S::PaymentProcessingBookingSettled => effects.push(E::BookPaymentSettled),
        S::DeleteInProgress => effects.push(E::PrepareDelete(DeleteSource::Api)),
        S::DeleteSyncing => {
            if from == S::DraftReadyToIssue {
                effects.push(E::PrepareDelete(DeleteSource::System));
            }
            effects.push(E::DeleteInApp);
        }
        S::Voided => {
            if ctx.origin == Origin::Api {
                effects.push(E::VoidInApp);
            }
            effects.push(E::RecordVoided);
        }
        _ => {}
    }
    if let Some(at) = wake_at(to, ctx) {
        effects.push(E::ScheduleAt(at));
    }
    effects.push(E::Notify(Notification::InvoiceUpdated));
    effects
}
