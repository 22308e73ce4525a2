//! `statusDetails` as the API returns it: the `immutable` and `failed` flags and the
//! `availableActions` with the state each action would end in.

use serde::{Deserialize, Serialize};

use super::machine::{Context, Trigger, advance_until_stable, can_fire, fire};
use super::status::ExtendedStatus;

/// The actions of OpenMeter's invoice API (`POST /api/v1/billing/invoices/{id}/advance`,
/// `approve`, `retry`, `void`, `snapshot-quantities`, `DELETE .../{id}`, and
/// `POST /api/v1/billing/invoices/invoice` for a gathering invoice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Advance,
    Approve,
    Delete,
    Retry,
    SnapshotQuantities,
    Void,
    Invoice,
}

impl Action {
    pub const ALL: &[Action] = &[
        Self::Advance,
        Self::Approve,
        Self::Delete,
        Self::Retry,
        Self::SnapshotQuantities,
        Self::Void,
        Self::Invoice,
    ];

    /// The trigger the action fires; [`fire`] with it performs the action.
    pub const fn trigger(self) -> Trigger {
        match self {
            Self::Advance => Trigger::Next,
            Self::Approve => Trigger::Approve,
            Self::Delete => Trigger::Delete,
            Self::Retry => Trigger::Retry,
            Self::SnapshotQuantities => Trigger::SnapshotQuantities,
            Self::Void => Trigger::Void,
            Self::Invoice => Trigger::Invoice,
        }
    }
}

/// `InvoiceAvailableActionDetails`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionDetails {
    /// Where the invoice ends if the action and every automatic step after it succeed.
    pub resulting_state: ExtendedStatus,
}

/// `InvoiceAvailableActionInvoiceDetails`: an empty object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InvoiceActionDetails {}

/// `InvoiceAvailableActions`: an action is present exactly when [`fire`] accepts its trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AvailableActions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advance: Option<ActionDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approve: Option<ActionDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<ActionDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<ActionDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_quantities: Option<ActionDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub void: Option<ActionDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<InvoiceActionDetails>,
}

impl AvailableActions {
    /// Whether `action` is offered.
    pub const fn offers(&self, action: Action) -> bool {
        match action {
            Action::Advance => self.advance.is_some(),
            Action::Approve => self.approve.is_some(),
            Action::Delete => self.delete.is_some(),
            Action::Retry => self.retry.is_some(),
            Action::SnapshotQuantities => self.snapshot_quantities.is_some(),
            Action::Void => self.void.is_some(),
            Action::Invoice => self.invoice.is_some(),
        }
    }
}

/// `InvoiceStatusDetails`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    /// The invoice refuses edits.
    pub immutable: bool,
    pub failed: bool,
    pub extended_status: ExtendedStatus,
    pub available_actions: AvailableActions,
}

/// The `statusDetails` of an invoice in `state`.
pub fn status_details(state: ExtendedStatus, ctx: &Context) -> StatusDetails {
    let immutable = state != ExtendedStatus::Gathering && !can_fire(state, Trigger::Updated, ctx);
    StatusDetails {
        immutable,
        failed: state.is_failed(),
        extended_status: state,
        available_actions: available_actions(state, ctx),
    }
}

/// The actions offered in `state`. The resulting state is found as OpenMeter finds it: fire
/// the action's trigger, then `next` until stable, with the validation issues cleared
/// (`calculateAvailableActionDetails`); a deletion always results in `deleted`.
pub fn available_actions(state: ExtendedStatus, ctx: &Context) -> AvailableActions {
    AvailableActions {
        advance: resulting(state, Trigger::Next, ctx),
        approve: resulting(state, Trigger::Approve, ctx),
        delete: can_fire(state, Trigger::Delete, ctx).then_some(ActionDetails {
            resulting_state: ExtendedStatus::Deleted,
        }),
        retry: resulting(state, Trigger::Retry, ctx),
        snapshot_quantities: resulting(state, Trigger::SnapshotQuantities, ctx),
        void: resulting(state, Trigger::Void, ctx),
        invoice: can_fire(state, Trigger::Invoice, ctx).then_some(InvoiceActionDetails {}),
    }
}

fn resulting(state: ExtendedStatus, trigger: Trigger, ctx: &Context) -> Option<ActionDetails> {
    if !can_fire(state, trigger, ctx) {
        return None;
    }
    let cleared = Context {
        critical_issues: false,
        ..*ctx
    };
    let first = fire(state, trigger, &cleared).ok()?;
    Some(ActionDetails {
        resulting_state: advance_until_stable(first.to, &cleared).to,
    })
}
