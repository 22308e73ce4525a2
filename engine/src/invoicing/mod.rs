//! The invoice lifecycle: OpenMeter's standard invoice state machine
//! (`openmeter/billing/service/stdinvoicestate.go`) as a pure function. [`fire`] maps a
//! state, a [`Trigger`] and a [`Context`] (workflow settings, deadlines, validation, the
//! invoicing app's hooks, the time) to the next state and the [`Effect`]s the billing
//! service performs there; [`advance_until_stable`] follows `next` as far as it goes;
//! [`status_details`] gives the API's `statusDetails` with the `availableActions`.
//!
//! The billing service drives it: load the invoice, fire, perform the effects in order,
//! fire [`Trigger::Failed`] from the arrival state if one fails, persist, then fire
//! [`Trigger::Next`] with a fresh context until it is refused.
//!
//! ```text
//! gathering ──invoice──▶ gathering (+ a new standard invoice in draft.created)
//!
//! draft.created ──next──▶ draft.waiting_for_collection
//! draft.waiting_for_collection ──next [collectionAt passed] / snapshot_quantities──▶ draft.collecting
//! draft.collecting ──next──▶ draft.validating ──next [no critical issue]──▶ draft.syncing
//! draft.syncing ──next [no critical issue, draft hook not pending]──▶
//!       draft.waiting_auto_approval (autoAdvance) | draft.manual_approval_needed (otherwise)
//! draft.waiting_auto_approval ──next [draftUntil passed, no critical issue] / approve──▶ draft.ready_to_issue
//! draft.manual_approval_needed ──approve [no critical issue]──▶ draft.ready_to_issue
//! draft.ready_to_issue ──next──▶ issuing.line_finalization | delete.syncing (every line deleted)
//! issuing.line_finalization ──next──▶ issuing.syncing ──next [issuing hook not pending]──▶
//!       issuing.charge_booking ──next──▶ issued ──next──▶ payment_processing.pending
//!
//! edit:    every draft.* but draft.updating and draft.syncing ──updated──▶ draft.updating
//!          draft.updating ──next──▶ draft.waiting_for_collection
//! failure: draft.created, draft.collecting, draft.updating, draft.validating ──failed──▶ draft.invalid
//!          draft.invalid, draft.sync_failed ──retry──▶ draft.validating
//!          draft.syncing ──failed──▶ draft.sync_failed
//!          issuing.line_finalization ⇄ issuing.line_finalization_failed (failed / retry)
//!          issuing.syncing ⇄ issuing.failed; issuing.charge_booking ⇄ issuing.charge_booking_failed
//! delete:  every draft.* and issuing.*, delete.failed ──delete──▶ delete.in_progress
//!          delete.in_progress ──next──▶ delete.syncing ──next──▶ deleted
//!          delete.in_progress, delete.syncing ──failed──▶ delete.failed
//! payment: W = payment_processing.{pending, authorized, failed, action_required}, overdue
//!          W ──paid──▶ payment_processing.booking_authorized_and_settled ──next──▶ paid
//!          payment_processing.authorized ──paid──▶ payment_processing.booking_settled ──next──▶ paid
//!          W but authorized ──authorized──▶ payment_processing.booking_authorized ──next──▶ payment_processing.authorized
//!          W ──failed──▶ payment_processing.failed; ──action_required──▶ payment_processing.action_required;
//!            ──payment_overdue──▶ overdue; ──payment_uncollectible──▶ uncollectible (never to itself)
//!          payment_processing.{failed, action_required}, overdue ──retry──▶ payment_processing.pending
//!          payment_processing.booking_X ⇄ payment_processing.booking_X_failed (failed / retry)
//!          uncollectible ──paid / authorized──▶ as from W
//! void:    issued, every payment_processing.*, uncollectible (not overdue) ──void──▶ voided
//! terminal: paid, voided, deleted
//! ```
//!
//! Deliberate differences from OpenMeter, each for a reason:
//! - `void` is offered in `availableActions` wherever the table permits it. OpenMeter never
//!   fills it (TODO OM-988) and answers 501 to the void action; the brief asks for it, and
//!   computing it from the same table keeps offer and acceptance equal.
//! - A void fired through the API ([`Origin::Api`]) carries [`Effect::VoidInApp`]: OpenMeter
//!   only learns of voids from Stripe's webhook, so an API void would leave Stripe collecting.
//!   A void reported by the app ([`Origin::App`]) does not. Both record `voidedAt`, which
//!   OpenMeter never sets.
//! - Gathering is a state that refuses every trigger but `invoice` (a move to itself with
//!   [`Effect::CreateInvoice`]); OpenMeter keeps it outside the machine. Deleting it gives
//!   OpenMeter's `invoice_cannot_delete_gathering`; the other refusals use the usual errors
//!   instead of OpenMeter's "is not a standard invoice", which needs the invoice id.
//! - Effects are data. OpenMeter runs them inside the machine and fires `trigger_failed`
//!   itself when one fails; here the service does. Every transition notifies
//!   `invoice.updated`, including the first move of a user action, which OpenMeter only
//!   announces through the automatic steps after it.
//! - [`Effect::ScheduleAt`] names when a waiting guard (collection period, draft period)
//!   opens; OpenMeter's `AutoAdvancer` polls for such invoices instead.
//! - The retry action's demotion of critical validation issues to warnings
//!   (`RetryInvoice`) is [`Effect::DowngradeCriticalIssues`] on every `retry`.
//! - The line-finalization and booking states of OpenMeter's charges stay, so that the
//!   extended statuses and `resultingState`s are OpenMeter's; until Metron books charges,
//!   [`Effect::FinalizeLines`], [`Effect::BookCharges`] and the `BookPayment*` effects are
//!   no-ops and these states pass at once.
//! - [`ExtendedStatus::is_terminal`] (no trigger leaves) is ours; OpenMeter's `IsFinal`
//!   also counts `uncollectible`, which a late payment or a void still moves.

mod actions;
mod machine;
mod status;

#[cfg(test)]
mod tests;

pub use actions::{
    Action, ActionDetails, AvailableActions, InvoiceActionDetails, StatusDetails,
    available_actions, status_details,
};
pub use machine::{
    ADVANCE_STEPS_MAX, Context, DeleteSource, Effect, Hook, InvalidTransition, Notification,
    Origin, Path, Result, Transition, Trigger, advance_until_stable, can_fire, created_effects,
    fire, wake_at,
};
pub use status::{ExtendedStatus, InvoiceStatus, UnknownStatus};
