use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use ExtendedStatus as S;
use Trigger as T;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

fn hours(n: i64) -> DateTime<Utc> {
    t0() + Duration::hours(n)
}

/// Draft period and collection period over, OpenMeter's default workflow.
fn open() -> Context {
    Context {
        draft_until: Some(hours(-1)),
        collection_at: Some(hours(-2)),
        ..Context::new(t0())
    }
}

fn manual() -> Context {
    Context {
        auto_advance: false,
        ..open()
    }
}

/// Fires `trigger`, then `next` until stable, as the billing service does.
fn act(state: ExtendedStatus, trigger: Trigger, ctx: &Context) -> Result<ExtendedStatus> {
    let first = fire(state, trigger, ctx)?;
    Ok(advance_until_stable(first.to, ctx).to)
}

struct Step {
    trigger: Trigger,
    ctx: Context,
    expect: ExtendedStatus,
}

fn step(trigger: Trigger, ctx: Context, expect: ExtendedStatus) -> Step {
    Step {
        trigger,
        ctx,
        expect,
    }
}

#[test]
fn documented_paths_reach_their_states() {
    let waiting = Context {
        draft_until: Some(hours(24)),
        ..open()
    };
    let approval_due = Context {
        now: hours(24),
        ..waiting
    };
    let not_collected = Context {
        collection_at: Some(hours(5)),
        draft_until: None,
        ..open()
    };
    let critical = Context {
        critical_issues: true,
        ..manual()
    };
    let draft_hook = Context {
        draft_sync: Hook::Pending,
        ..manual()
    };
    let issuing_hook = Context {
        issuing_sync: Hook::Pending,
        ..manual()
    };
    let empty = Context {
        lines_empty: true,
        ..manual()
    };
    let cases: Vec<(&str, ExtendedStatus, Vec<Step>)> = vec![
        (
            "auto approval after the draft period, then paid",
            S::DraftCreated,
            vec![
                step(T::Next, waiting, S::DraftWaitingAutoApproval),
                step(T::Next, approval_due, S::PaymentProcessingPending),
                step(T::Paid, approval_due, S::Paid),
            ],
        ),
        (
            "approve before the draft period ends",
            S::DraftCreated,
            vec![
                step(T::Next, waiting, S::DraftWaitingAutoApproval),
                step(T::Approve, waiting, S::PaymentProcessingPending),
            ],
        ),
        (
            "manual approval without autoAdvance",
            S::DraftCreated,
            vec![
                step(T::Next, manual(), S::DraftManualApprovalNeeded),
                step(T::Approve, manual(), S::PaymentProcessingPending),
            ],
        ),
        (
            "waits for collection, snapshot collects early",
            S::DraftCreated,
            vec![
                step(T::Next, not_collected, S::DraftWaitingForCollection),
                step(
                    T::SnapshotQuantities,
                    not_collected,
                    S::DraftWaitingAutoApproval,
                ),
                step(T::Approve, not_collected, S::PaymentProcessingPending),
            ],
        ),
        (
            "draft sync failure, then retry",
            S::DraftSyncing,
            vec![
                step(T::Failed, manual(), S::DraftSyncFailed),
                step(T::Retry, manual(), S::DraftManualApprovalNeeded),
            ],
        ),
        (
            "critical issue makes the draft invalid until retried",
            S::DraftCollecting,
            vec![
                step(T::Next, critical, S::DraftValidating),
                step(T::Failed, critical, S::DraftInvalid),
                step(T::Retry, manual(), S::DraftManualApprovalNeeded),
            ],
        ),
        (
            "issuing sync failure, then retry",
            S::IssuingSyncing,
            vec![
                step(T::Failed, manual(), S::IssuingSyncFailed),
                step(T::Retry, manual(), S::PaymentProcessingPending),
            ],
        ),
        (
            "custom invoicing holds the draft until its callback",
            S::DraftValidating,
            vec![
                step(T::Next, draft_hook, S::DraftSyncing),
                step(
                    T::Next,
                    Context {
                        draft_sync: Hook::Done,
                        ..manual()
                    },
                    S::DraftManualApprovalNeeded,
                ),
            ],
        ),
        (
            "custom invoicing holds issuing until its callback",
            S::DraftManualApprovalNeeded,
            vec![
                step(T::Approve, issuing_hook, S::IssuingSyncing),
                step(
                    T::Next,
                    Context {
                        issuing_sync: Hook::Done,
                        ..manual()
                    },
                    S::PaymentProcessingPending,
                ),
            ],
        ),
        (
            "edit sends the draft back through validation",
            S::DraftManualApprovalNeeded,
            vec![step(T::Updated, manual(), S::DraftManualApprovalNeeded)],
        ),
        (
            "void from issued",
            S::Issued,
            vec![step(T::Void, manual(), S::Voided)],
        ),
        (
            "void while payment is pending",
            S::PaymentProcessingPending,
            vec![step(T::Void, manual(), S::Voided)],
        ),
        (
            "overdue, then paid",
            S::PaymentProcessingPending,
            vec![
                step(T::PaymentOverdue, manual(), S::Overdue),
                step(T::Paid, manual(), S::Paid),
            ],
        ),
        (
            "uncollectible, then voided",
            S::PaymentProcessingPending,
            vec![
                step(T::PaymentUncollectible, manual(), S::Uncollectible),
                step(T::Void, manual(), S::Voided),
            ],
        ),
        (
            "uncollectible, then paid late",
            S::Overdue,
            vec![
                step(T::PaymentUncollectible, manual(), S::Uncollectible),
                step(T::Paid, manual(), S::Paid),
            ],
        ),
        (
            "payment fails, is retried, needs action, is paid",
            S::PaymentProcessingPending,
            vec![
                step(T::Failed, manual(), S::PaymentProcessingFailed),
                step(T::Retry, manual(), S::PaymentProcessingPending),
                step(
                    T::ActionRequired,
                    manual(),
                    S::PaymentProcessingActionRequired,
                ),
                step(T::Paid, manual(), S::Paid),
            ],
        ),
        (
            "authorized, then settled",
            S::PaymentProcessingPending,
            vec![
                step(T::Authorized, manual(), S::PaymentProcessingAuthorized),
                step(T::Paid, manual(), S::Paid),
            ],
        ),
        (
            "delete a draft",
            S::DraftManualApprovalNeeded,
            vec![step(T::Delete, manual(), S::Deleted)],
        ),
        (
            "delete fails in the app, then is retried",
            S::DeleteSyncing,
            vec![
                step(T::Failed, manual(), S::DeleteFailed),
                step(T::Delete, manual(), S::Deleted),
            ],
        ),
        (
            "an invoice without lines is deleted instead of issued",
            S::DraftManualApprovalNeeded,
            vec![step(T::Approve, empty, S::Deleted)],
        ),
    ];
    for (name, start, steps) in cases {
        let mut state = start;
        for (i, s) in steps.iter().enumerate() {
            state = act(state, s.trigger, &s.ctx)
                .unwrap_or_else(|e| panic!("{name}: step {i} ({}) refused: {e}", s.trigger));
            assert_eq!(state, s.expect, "{name}: step {i} ({})", s.trigger);
        }
    }
}

#[test]
fn wrong_state_actions_are_refused_with_openmeter_errors() {
    let critical = Context {
        critical_issues: true,
        ..manual()
    };
    let draft_period = Context {
        draft_until: Some(hours(1)),
        ..open()
    };
    let cases = [
        (S::Paid, T::Void, manual(), "invoice_action_not_available"),
        (S::Paid, T::Delete, manual(), "invoice_action_not_available"),
        (S::Paid, T::Next, manual(), "invoice_cannot_advance"),
        (S::Voided, T::Paid, manual(), "invoice_action_not_available"),
        (
            S::Deleted,
            T::Delete,
            manual(),
            "invoice_action_not_available",
        ),
        (
            S::Issued,
            T::Delete,
            manual(),
            "invoice_action_not_available",
        ),
        (S::Issued, T::Paid, manual(), "invoice_action_not_available"),
        (
            S::Overdue,
            T::Void,
            manual(),
            "invoice_action_not_available",
        ),
        (
            S::DraftCreated,
            T::Approve,
            manual(),
            "invoice_action_not_available",
        ),
        (
            S::DraftSyncing,
            T::Updated,
            manual(),
            "invoice_action_not_available",
        ),
        (
            S::DraftManualApprovalNeeded,
            T::Approve,
            critical,
            "invoice_action_not_available",
        ),
        (
            S::DraftManualApprovalNeeded,
            T::Next,
            manual(),
            "invoice_cannot_advance",
        ),
        (
            S::DraftValidating,
            T::Next,
            critical,
            "invoice_cannot_advance",
        ),
        (
            S::DraftWaitingAutoApproval,
            T::Next,
            draft_period,
            "invoice_cannot_advance",
        ),
        (
            S::PaymentProcessingPending,
            T::Retry,
            manual(),
            "invoice_action_not_available",
        ),
        (
            S::PaymentProcessingPending,
            T::Next,
            manual(),
            "invoice_cannot_advance",
        ),
        (
            S::Gathering,
            T::Delete,
            manual(),
            "invoice_cannot_delete_gathering",
        ),
        (
            S::Gathering,
            T::Invoice,
            manual(),
            "invoice_action_not_available",
        ),
        (
            S::Gathering,
            T::Approve,
            manual(),
            "invoice_action_not_available",
        ),
    ];
    for (state, trigger, ctx, code) in cases {
        let refusal = fire(state, trigger, &ctx).err();
        assert_eq!(refusal.map(|e| e.code()), Some(code), "{state} {trigger}");
    }
}

#[test]
fn refusals_read_like_openmeter() {
    let refusals = [
        (
            S::Paid,
            T::Approve,
            "cannot trigger_approve invoice in status [paid]: invoice action not available",
        ),
        (
            S::Issued,
            T::Delete,
            "cannot trigger_delete invoice in status [issued]: invoice action not available",
        ),
        (
            S::Voided,
            T::Next,
            "cannot advance invoice in status [voided]: invoice cannot advance",
        ),
        (
            S::Gathering,
            T::Delete,
            "gathering invoices cannot be deleted, please delete the upcoming lines instead",
        ),
    ];
    for (state, trigger, text) in refusals {
        let refusal = fire(state, trigger, &manual()).err();
        assert_eq!(refusal.map(|e| e.to_string()).as_deref(), Some(text));
    }
}

/// Every state's accepted triggers with every guard open, transcribed from OpenMeter's
/// `allocateStateMachine` on its own (not from `target`).
#[test]
fn each_state_accepts_openmeters_triggers() {
    let ctx = Context {
        lines_invoicable: true,
        ..open()
    };
    let draft_common = [T::Delete, T::Updated];
    let pay = [
        T::Authorized,
        T::Paid,
        T::Failed,
        T::ActionRequired,
        T::PaymentOverdue,
        T::PaymentUncollectible,
        T::Retry,
        T::Void,
    ];
    let without = |all: &[Trigger], gone: &[Trigger]| -> Vec<Trigger> {
        all.iter().copied().filter(|t| !gone.contains(t)).collect()
    };
    let with =
        |extra: &[Trigger]| -> Vec<Trigger> { draft_common.iter().chain(extra).copied().collect() };
    let table: Vec<(ExtendedStatus, Vec<Trigger>)> = vec![
        (S::Gathering, vec![T::Invoice]),
        (S::DraftCreated, with(&[T::Next, T::Failed])),
        (
            S::DraftWaitingForCollection,
            with(&[T::Next, T::SnapshotQuantities]),
        ),
        (S::DraftCollecting, with(&[T::Next, T::Failed])),
        (S::DraftUpdating, vec![T::Next, T::Delete, T::Failed]),
        (S::DraftValidating, with(&[T::Next, T::Failed])),
        (S::DraftInvalid, with(&[T::Retry])),
        (S::DraftSyncing, vec![T::Next, T::Delete, T::Failed]),
        (S::DraftSyncFailed, with(&[T::Retry])),
        (S::DraftReadyToIssue, with(&[T::Next])),
        (S::DraftWaitingAutoApproval, with(&[T::Approve, T::Next])),
        (S::DraftManualApprovalNeeded, with(&[T::Approve])),
        (S::DeleteInProgress, vec![T::Next, T::Failed]),
        (S::DeleteSyncing, vec![T::Next, T::Failed]),
        (S::DeleteFailed, vec![T::Delete]),
        (S::Deleted, vec![]),
        (
            S::IssuingLineFinalization,
            vec![T::Next, T::Failed, T::Delete],
        ),
        (S::IssuingLineFinalizationFailed, vec![T::Delete, T::Retry]),
        (S::IssuingSyncing, vec![T::Next, T::Failed, T::Delete]),
        (S::IssuingSyncFailed, vec![T::Delete, T::Retry]),
        (S::IssuingChargeBooking, vec![T::Next, T::Failed, T::Delete]),
        (S::IssuingChargeBookingFailed, vec![T::Delete, T::Retry]),
        (S::Issued, vec![T::Next, T::Void]),
        (S::PaymentProcessingPending, without(&pay, &[T::Retry])),
        (
            S::PaymentProcessingBookingAuthorized,
            vec![T::Next, T::Failed, T::Void],
        ),
        (
            S::PaymentProcessingBookingAuthorizedFailed,
            vec![T::Retry, T::Void],
        ),
        (
            S::PaymentProcessingBookingAuthorizedAndSettled,
            vec![T::Next, T::Failed, T::Void],
        ),
        (
            S::PaymentProcessingBookingAuthorizedAndSettledFailed,
            vec![T::Retry, T::Void],
        ),
        (
            S::PaymentProcessingAuthorized,
            without(&pay, &[T::Authorized, T::Retry]),
        ),
        (S::PaymentProcessingFailed, without(&pay, &[T::Failed])),
        (
            S::PaymentProcessingActionRequired,
            without(&pay, &[T::ActionRequired]),
        ),
        (
            S::PaymentProcessingBookingSettled,
            vec![T::Next, T::Failed, T::Void],
        ),
        (
            S::PaymentProcessingBookingSettledFailed,
            vec![T::Retry, T::Void],
        ),
        (S::Overdue, without(&pay, &[T::PaymentOverdue, T::Void])),
        (S::Paid, vec![]),
        (S::Uncollectible, vec![T::Void, T::Authorized, T::Paid]),
        (S::Voided, vec![]),
    ];
    assert_eq!(table.len(), ExtendedStatus::ALL.len());
    for (state, expected) in table {
        for &trigger in Trigger::ALL {
            assert_eq!(
                can_fire(state, trigger, &ctx),
                expected.contains(&trigger),
                "{state} {trigger}"
            );
        }
    }
}

#[test]
fn payment_reports_lead_where_openmeter_books_them() {
    let cases = [
        (
            S::PaymentProcessingPending,
            T::Paid,
            S::PaymentProcessingBookingAuthorizedAndSettled,
        ),
        (
            S::PaymentProcessingAuthorized,
            T::Paid,
            S::PaymentProcessingBookingSettled,
        ),
        (
            S::Overdue,
            T::Authorized,
            S::PaymentProcessingBookingAuthorized,
        ),
        (
            S::Uncollectible,
            T::Paid,
            S::PaymentProcessingBookingAuthorizedAndSettled,
        ),
        (
            S::PaymentProcessingActionRequired,
            T::Retry,
            S::PaymentProcessingPending,
        ),
        (S::DraftSyncing, T::Next, S::DraftManualApprovalNeeded),
        (
            S::DraftWaitingForCollection,
            T::SnapshotQuantities,
            S::DraftCollecting,
        ),
        (S::IssuingSyncing, T::Failed, S::IssuingSyncFailed),
    ];
    for (from, trigger, to) in cases {
        assert_eq!(
            fire(from, trigger, &manual()).map(|t| t.to),
            Ok(to),
            "{from} {trigger}"
        );
    }
}

#[test]
fn effects_name_the_work_of_each_arrival() {
    use Effect as E;
    let updated = E::Notify(Notification::InvoiceUpdated);
    let waiting = Context {
        draft_until: Some(hours(24)),
        collection_at: Some(hours(3)),
        ..open()
    };
    let app = Context {
        origin: Origin::App,
        ..manual()
    };
    let empty = Context {
        lines_empty: true,
        ..manual()
    };
    let cases = [
        (
            S::DraftCreated,
            T::Next,
            waiting,
            vec![E::ScheduleAt(hours(3)), updated],
        ),
        (
            S::DraftWaitingForCollection,
            T::SnapshotQuantities,
            waiting,
            vec![E::SnapshotQuantities, E::Calculate, updated],
        ),
        (
            S::DraftSyncing,
            T::Next,
            waiting,
            vec![E::ScheduleAt(hours(24)), updated],
        ),
        (
            S::DraftManualApprovalNeeded,
            T::Updated,
            manual(),
            vec![E::Calculate, E::Validate, updated],
        ),
        (
            S::DraftInvalid,
            T::Retry,
            manual(),
            vec![
                E::DowngradeCriticalIssues,
                E::Calculate,
                E::Validate,
                updated,
            ],
        ),
        (
            S::DraftValidating,
            T::Next,
            manual(),
            vec![E::SyncDraft, updated],
        ),
        (
            S::IssuingLineFinalization,
            T::Next,
            manual(),
            vec![E::SyncIssuing, updated],
        ),
        (
            S::Issued,
            T::Next,
            manual(),
            vec![E::RecordPaymentProcessing, updated],
        ),
        (
            S::PaymentProcessingPending,
            T::Paid,
            manual(),
            vec![E::BookPaymentAuthorized, E::BookPaymentSettled, updated],
        ),
        (
            S::Issued,
            T::Void,
            manual(),
            vec![E::VoidInApp, E::RecordVoided, updated],
        ),
        (S::Issued, T::Void, app, vec![E::RecordVoided, updated]),
        (
            S::DraftSyncFailed,
            T::Delete,
            manual(),
            vec![E::PrepareDelete(DeleteSource::Api), updated],
        ),
        (
            S::DeleteInProgress,
            T::Next,
            manual(),
            vec![E::DeleteInApp, updated],
        ),
        (
            S::DraftReadyToIssue,
            T::Next,
            empty,
            vec![
                E::PrepareDelete(DeleteSource::System),
                E::DeleteInApp,
                updated,
            ],
        ),
        (
            S::Gathering,
            T::Invoice,
            Context {
                lines_invoicable: true,
                ..manual()
            },
            vec![E::CreateInvoice],
        ),
    ];
    for (from, trigger, ctx, effects) in cases {
        assert_eq!(
            fire(from, trigger, &ctx).map(|t| t.effects),
            Ok(effects),
            "{from} {trigger}"
        );
    }
}

#[test]
fn auto_advancement_walks_the_whole_issuing_chain() {
    let path = advance_until_stable(S::DraftReadyToIssue, &manual());
    let visited: Vec<_> = path.steps.iter().map(|s| s.to).collect();
    assert_eq!(
        visited,
        [
            S::IssuingLineFinalization,
            S::IssuingSyncing,
            S::IssuingChargeBooking,
            S::Issued,
            S::PaymentProcessingPending,
        ]
    );
    assert_eq!(path.to, S::PaymentProcessingPending);
    assert!(path.steps.windows(2).all(|w| w[0].to == w[1].from));
}

#[test]
fn next_edges_form_no_cycle() {
    let contexts = [
        open(),
        manual(),
        Context {
            lines_empty: true,
            ..open()
        },
        Context::new(t0()),
    ];
    for ctx in contexts {
        for &state in ExtendedStatus::ALL {
            let path = advance_until_stable(state, &ctx);
            assert!(path.steps.len() < ADVANCE_STEPS_MAX, "{state}");
            assert!(
                !can_fire(path.to, T::Next, &ctx),
                "{state} stopped at {}",
                path.to
            );
        }
    }
}

#[test]
fn wake_at_names_the_guard_that_waits() {
    let ctx = Context {
        draft_until: Some(hours(24)),
        collection_at: Some(hours(3)),
        ..open()
    };
    assert_eq!(wake_at(S::DraftWaitingForCollection, &ctx), Some(hours(3)));
    assert_eq!(wake_at(S::DraftWaitingAutoApproval, &ctx), Some(hours(24)));
    assert_eq!(
        wake_at(
            S::DraftWaitingAutoApproval,
            &Context {
                auto_advance: false,
                ..ctx
            }
        ),
        None
    );
    assert_eq!(
        wake_at(
            S::DraftWaitingForCollection,
            &Context {
                now: hours(3),
                ..ctx
            }
        ),
        None
    );
    assert_eq!(wake_at(S::DraftManualApprovalNeeded, &ctx), None);
}

#[test]
fn available_actions_show_openmeters_resulting_states() {
    let d = |s| Some(ActionDetails { resulting_state: s });
    let manual_actions = available_actions(S::DraftManualApprovalNeeded, &manual());
    assert_eq!(
        manual_actions,
        AvailableActions {
            approve: d(S::PaymentProcessingPending),
            delete: d(S::Deleted),
            ..AvailableActions::default()
        }
    );
    // Critical issues hide `approve` but not the simulated path of `retry`.
    let critical = Context {
        critical_issues: true,
        ..manual()
    };
    assert_eq!(
        available_actions(S::DraftManualApprovalNeeded, &critical).approve,
        None
    );
    assert_eq!(
        available_actions(S::DraftInvalid, &critical).retry,
        d(S::DraftManualApprovalNeeded)
    );
    let created = available_actions(S::DraftCreated, &Context::new(t0()));
    assert_eq!(created.advance, d(S::DraftWaitingAutoApproval));
    let collecting = Context {
        collection_at: Some(hours(1)),
        ..manual()
    };
    assert_eq!(
        available_actions(S::DraftWaitingForCollection, &collecting),
        AvailableActions {
            snapshot_quantities: d(S::DraftManualApprovalNeeded),
            delete: d(S::Deleted),
            ..AvailableActions::default()
        }
    );
    assert_eq!(
        available_actions(S::Uncollectible, &manual()).void,
        d(S::Voided)
    );
    assert_eq!(
        available_actions(S::Overdue, &manual()).retry,
        d(S::PaymentProcessingPending)
    );
    assert_eq!(
        available_actions(S::Paid, &manual()),
        AvailableActions::default()
    );
    let gathering = Context {
        lines_invoicable: true,
        ..manual()
    };
    assert_eq!(
        available_actions(S::Gathering, &gathering),
        AvailableActions {
            invoice: Some(InvoiceActionDetails {}),
            ..AvailableActions::default()
        }
    );
}

#[test]
fn status_details_serialize_as_the_v1_schema() -> serde_json::Result<()> {
    let details = status_details(S::DraftManualApprovalNeeded, &manual());
    let expected = r#"{"immutable":false,"failed":false,"extendedStatus":"draft.manual_approval_needed","availableActions":{"approve":{"resultingState":"payment_processing.pending"},"delete":{"resultingState":"deleted"}}}"#;
    assert_eq!(serde_json::to_string(&details)?, expected);
    assert_eq!(serde_json::from_str::<StatusDetails>(expected)?, details);

    let gathering = status_details(
        S::Gathering,
        &Context {
            lines_invoicable: true,
            ..manual()
        },
    );
    assert_eq!(
        serde_json::to_string(&gathering)?,
        r#"{"immutable":false,"failed":false,"extendedStatus":"gathering","availableActions":{"invoice":{}}}"#
    );
    let failed = status_details(S::IssuingSyncFailed, &manual());
    assert!(failed.immutable && failed.failed);
    assert_eq!(
        failed.available_actions.retry.map(|a| a.resulting_state),
        Some(S::PaymentProcessingPending)
    );
    assert!(status_details(S::DraftSyncing, &manual()).immutable);
    Ok(())
}

#[test]
fn statuses_round_trip_their_wire_strings() -> serde_json::Result<()> {
    assert_eq!(ExtendedStatus::ALL.len(), 37);
    for &status in ExtendedStatus::ALL {
        let text = serde_json::to_string(&status)?;
        assert_eq!(text, format!("\"{}\"", status.as_str()));
        assert_eq!(serde_json::from_str::<ExtendedStatus>(&text)?, status);
        let short = status.as_str().split('.').next().unwrap_or_default();
        assert_eq!(status.status().as_str(), short, "{status}");
        assert_eq!(short.parse::<InvoiceStatus>(), Ok(status.status()));
    }
    let unique: std::collections::HashSet<_> =
        ExtendedStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(unique.len(), ExtendedStatus::ALL.len());
    assert_eq!(
        "issuing.sync_failed".parse::<ExtendedStatus>(),
        Err(UnknownStatus {
            text: "issuing.sync_failed".into()
        })
    );
    assert!(serde_json::from_str::<InvoiceStatus>("\"drafts\"").is_err());
    Ok(())
}

#[test]
fn failed_states_can_always_be_left_by_retry_or_delete() {
    for &state in ExtendedStatus::ALL.iter().filter(|s| s.is_failed()) {
        let actions = available_actions(state, &manual());
        assert!(
            actions.retry.is_some() || actions.delete.is_some(),
            "{state}"
        );
    }
}

fn any_context() -> impl Strategy<Value = Context> {
    let offset = || proptest::option::of(-3i64..3);
    let hook = || prop_oneof![Just(Hook::Disabled), Just(Hook::Pending), Just(Hook::Done)];
    let origin = prop_oneof![Just(Origin::Api), Just(Origin::App)];
    (
        (any::<bool>(), offset(), offset(), any::<bool>()),
        (hook(), hook(), any::<bool>(), any::<bool>(), origin),
    )
        .prop_map(
            |(
                (auto_advance, draft, collection, critical_issues),
                (draft_sync, issuing_sync, lines_empty, lines_invoicable, origin),
            )| Context {
                now: t0(),
                auto_advance,
                draft_until: draft.map(hours),
                collection_at: collection.map(hours),
                critical_issues,
                draft_sync,
                issuing_sync,
                lines_empty,
                lines_invoicable,
                origin,
            },
        )
}

fn check_consistent(
    state: ExtendedStatus,
    ctx: &Context,
) -> std::result::Result<(), TestCaseError> {
    let details = status_details(state, ctx);
    for &action in Action::ALL {
        let offered = details.available_actions.offers(action);
        let accepted = fire(state, action.trigger(), ctx).is_ok();
        prop_assert_eq!(offered, accepted, "{} {:?}", state, action);
    }
    let cleared = Context {
        critical_issues: false,
        ..*ctx
    };
    let actions = details.available_actions;
    for result in [
        actions.advance,
        actions.approve,
        actions.retry,
        actions.snapshot_quantities,
        actions.void,
    ]
    .into_iter()
    .flatten()
    {
        prop_assert!(
            !can_fire(result.resulting_state, T::Next, &cleared),
            "{} unstable",
            result.resulting_state
        );
    }
    if state != S::Gathering {
        prop_assert_eq!(details.immutable, !can_fire(state, T::Updated, ctx));
    }
    if state.is_terminal() {
        prop_assert!(Trigger::ALL.iter().all(|&t| !can_fire(state, t, ctx)));
    }
    Ok(())
}

proptest! {
    #[test]
    fn random_triggers_keep_the_machine_sound(
        start in 0..ExtendedStatus::ALL.len(),
        moves in proptest::collection::vec((0..Trigger::ALL.len(), any_context(), any::<bool>()), 0..40),
    ) {
        let mut state = ExtendedStatus::ALL[start];
        for (trigger, ctx, advance) in moves {
            let trigger = Trigger::ALL[trigger];
            check_consistent(state, &ctx)?;
            let was_terminal = state.is_terminal();
            match fire(state, trigger, &ctx) {
                Ok(t) => {
                    prop_assert!(!was_terminal, "{} left terminal {}", trigger, state);
                    prop_assert_eq!(t.from, state);
                    prop_assert_eq!(t.trigger, trigger);
                    if t.to != S::Gathering {
                        prop_assert_eq!(t.effects.last(), Some(&Effect::Notify(Notification::InvoiceUpdated)));
                    }
                    state = t.to;
                }
                Err(e) => {
                    prop_assert_eq!(trigger == T::Next, matches!(e, InvalidTransition::CannotAdvance { .. }));
                }
            }
            if advance {
                let path = advance_until_stable(state, &ctx);
                prop_assert!(!was_terminal || path.steps.is_empty());
                state = path.to;
            }
        }
    }
}
