//! The invoice's public `status` and OpenMeter's `statusDetails.extendedStatus`, with their
//! wire strings (the names of `StandardInvoiceStatus` in `openmeter/billing/stdinvoice.go`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A status string that is not one of OpenMeter's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid invoice status: {text}")]
pub struct UnknownStatus {
    pub text: String,
}

/// Declares a fieldless enum whose variants have one wire string each, with `ALL`,
/// `as_str`, `Display`, `FromStr` and serde through that string.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in OpenMeter's declaration order.
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            /// The wire string.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(text: &str) -> Result<Self, UnknownStatus> {
                match text {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(UnknownStatus { text: text.to_owned() }),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

wire_enum! {
    /// The public `status` of an invoice: the part of its [`ExtendedStatus`] before the dot.
    ///
    /// `delete` and `deleted` are not in the v1 `InvoiceStatus` enum, yet OpenMeter's API
    /// answers them for deleted invoices (it sends `ShortStatus()` as is); its list filter
    /// rejects them.
    InvoiceStatus {
        Gathering => "gathering",
        Draft => "draft",
        Delete => "delete",
        Deleted => "deleted",
        Issuing => "issuing",
        Issued => "issued",
        PaymentProcessing => "payment_processing",
        Overdue => "overdue",
        Paid => "paid",
        Uncollectible => "uncollectible",
        Voided => "voided",
    }
}

wire_enum! {
    /// Where an invoice is in its lifecycle: OpenMeter's `StandardInvoiceStatus`, sent as
    /// `statusDetails.extendedStatus`. See [`super`] for the diagram.
    ExtendedStatus {
        /// The customer's single mutable staging invoice per currency; outside the machine.
        Gathering => "gathering",
        DraftCreated => "draft.created",
        DraftWaitingForCollection => "draft.waiting_for_collection",
        DraftCollecting => "draft.collecting",
        DraftUpdating => "draft.updating",
        DraftManualApprovalNeeded => "draft.manual_approval_needed",
        DraftValidating => "draft.validating",
        DraftInvalid => "draft.invalid",
        DraftSyncing => "draft.syncing",
        DraftSyncFailed => "draft.sync_failed",
        DraftWaitingAutoApproval => "draft.waiting_auto_approval",
        DraftReadyToIssue => "draft.ready_to_issue",
        DeleteInProgress => "delete.in_progress",
        DeleteSyncing => "delete.syncing",
        DeleteFailed => "delete.failed",
        Deleted => "deleted",
        IssuingLineFinalization => "issuing.line_finalization",
        IssuingLineFinalizationFailed => "issuing.line_finalization_failed",
        IssuingSyncing => "issuing.syncing",
        /// OpenMeter's `StandardInvoiceStatusIssuingSyncFailed`, spelled `issuing.failed`.
        IssuingSyncFailed => "issuing.failed",
        IssuingChargeBooking => "issuing.charge_booking",
        IssuingChargeBookingFailed => "issuing.charge_booking_failed",
        Issued => "issued",
        PaymentProcessingPending => "payment_processing.pending",
        PaymentProcessingBookingAuthorized => "payment_processing.booking_authorized",
        PaymentProcessingBookingAuthorizedFailed => "payment_processing.booking_authorized_failed",
        PaymentProcessingBookingAuthorizedAndSettled => "payment_processing.booking_authorized_and_settled",
        PaymentProcessingBookingAuthorizedAndSettledFailed => "payment_processing.booking_authorized_and_settled_failed",
        PaymentProcessingAuthorized => "payment_processing.authorized",
        PaymentProcessingFailed => "payment_processing.failed",
        PaymentProcessingActionRequired => "payment_processing.action_required",
        PaymentProcessingBookingSettled => "payment_processing.booking_settled",
        PaymentProcessingBookingSettledFailed => "payment_processing.booking_settled_failed",
        Overdue => "overdue",
        Paid => "paid",
        Uncollectible => "uncollectible",
        Voided => "voided",
    }
}

impl ExtendedStatus {
    /// The public `status` (OpenMeter's `ShortStatus()`: the text before the first dot).
    pub const fn status(self) -> InvoiceStatus {
        use ExtendedStatus as S;
        match self {
            S::Gathering => InvoiceStatus::Gathering,
            S::DraftCreated
            | S::DraftWaitingForCollection
            | S::DraftCollecting
            | S::DraftUpdating
            | S::DraftManualApprovalNeeded
            | S::DraftValidating
            | S::DraftInvalid
            | S::DraftSyncing
            | S::DraftSyncFailed
            | S::DraftWaitingAutoApproval
            | S::DraftReadyToIssue => InvoiceStatus::Draft,
            S::DeleteInProgress | S::DeleteSyncing | S::DeleteFailed => InvoiceStatus::Delete,
            S::Deleted => InvoiceStatus::Deleted,
            S::IssuingLineFinalization
            | S::IssuingLineFinalizationFailed
            | S::IssuingSyncing
            | S::IssuingSyncFailed
            | S::IssuingChargeBooking
            | S::IssuingChargeBookingFailed => InvoiceStatus::Issuing,
            S::Issued => InvoiceStatus::Issued,
            S::PaymentProcessingPending
            | S::PaymentProcessingBookingAuthorized
            | S::PaymentProcessingBookingAuthorizedFailed
            | S::PaymentProcessingBookingAuthorizedAndSettled
            | S::PaymentProcessingBookingAuthorizedAndSettledFailed
            | S::PaymentProcessingAuthorized
            | S::PaymentProcessingFailed
            | S::PaymentProcessingActionRequired
            | S::PaymentProcessingBookingSettled
            | S::PaymentProcessingBookingSettledFailed => InvoiceStatus::PaymentProcessing,
            S::Overdue => InvoiceStatus::Overdue,
            S::Paid => InvoiceStatus::Paid,
            S::Uncollectible => InvoiceStatus::Uncollectible,
            S::Voided => InvoiceStatus::Voided,
        }
    }

    /// `statusDetails.failed`: a step failed and waits for `retry` (or `delete`). OpenMeter's
    /// `failedStatuses`; `draft.invalid` is not among them although `retry` leaves it.
    pub const fn is_failed(self) -> bool {
        use ExtendedStatus as S;
        matches!(
            self,
            S::DraftSyncFailed
                | S::IssuingLineFinalizationFailed
                | S::IssuingSyncFailed
                | S::IssuingChargeBookingFailed
                | S::DeleteFailed
                | S::PaymentProcessingBookingAuthorizedFailed
                | S::PaymentProcessingBookingAuthorizedAndSettledFailed
                | S::PaymentProcessingFailed
                | S::PaymentProcessingBookingSettledFailed
        )
    }

    /// OpenMeter's `IsFinal()`: the invoice's outcome is decided. `uncollectible` is final
    /// but not [terminal](Self::is_terminal): a late payment or a void still moves it.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            Self::Deleted | Self::Paid | Self::Uncollectible | Self::Voided
        )
    }

    /// No trigger leaves the state.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Deleted | Self::Paid | Self::Voided)
    }
}
