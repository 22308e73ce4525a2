//! Stripe's webhook events acted on, as OpenMeter's Stripe app does (`service/billing.go`):
//! the invoice is found by its Stripe id, re-read from Stripe (a late or replayed event
//! must not move it back), and the event's trigger fired when Stripe's invoice agrees.
//! An event already acted on has no second effect.

use super::{Action, Billing, Error, Result};
use metron_connectors::stripe::{Event, InvoiceStatus};
use metron_engine::invoicing::{ExtendedStatus, Trigger};
use metron_storage::apps::{App, CustomerAppData};
use serde_json::Value;

/// What the webhook answers (`StripeWebhookResponse`).
#[derive(Debug, Default)]
pub struct Outcome {
    pub customer_id: Option<String>,
    pub message: Option<String>,
}

fn ignored(message: &str) -> Outcome {
    Outcome {
        customer_id: None,
        message: Some(message.to_owned()),
    }
}

impl Billing {
    /// Acts on one verified Stripe event of `app`.
    pub async fn stripe_event(&self, app: &App, event: &Event) -> Result<Outcome> {
        let _guard = self.inner.work.lock().await;
        if self
            .catalog()
            .webhook_event_seen(&app.id, &event.id)
            .await?
        {
            return Ok(ignored("event already processed"));
        }
        let outcome = match event.kind.as_str() {
            "setup_intent.succeeded" => self.setup_succeeded(app, &event.data.object).await?,
            "setup_intent.setup_failed"
            | "setup_intent.requires_action"
            | "invoice.payment_succeeded" => ignored("event acknowledged"),
            kind if kind.starts_with("invoice.") => {
                self.invoice_event(app, kind, &event.data.object).await?
            }
            other => return Err(Error::Invalid(format!("unsupported event type {other:?}"))),
        };
        self.catalog()
            .record_webhook_event(&app.id, &event.id, self.now())
            .await?;
        Ok(outcome)
    }

    /// `setup_intent.succeeded`: the customer's new payment method becomes its default.
    async fn setup_succeeded(&self, app: &App, object: &Value) -> Result<Outcome> {
        let meta = |k: &str| {
            object
                .pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
        };
        if meta("om_app_id") != Some(app.id.as_str()) {
            return Ok(ignored("setup intent of another app"));
        }
        if meta("om_namespace").is_some_and(|ns| ns != self.ns()) {
            return Err(Error::Invalid("setup intent of another namespace".into()));
        }
        let (Some(customer_id), Some(stripe_customer), Some(pm)) = (
            meta("om_customer_id"),
            object.get("customer").and_then(Value::as_str),
            object.get("payment_method").and_then(Value::as_str),
        ) else {
            return Err(Error::Invalid(
                "setup intent without customer, payment method or om_customer_id".into(),
            ));
        };
        self.catalog()
            .upsert_customer_app_data(
                self.ns(),
                &app.id,
                customer_id,
                &CustomerAppData::Stripe {
                    stripe_customer_id: stripe_customer.to_owned(),
                    stripe_default_payment_method_id: Some(pm.to_owned()),
                },
            )
            .await
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Outcome {
            customer_id: Some(customer_id.to_owned()),
            message: None,
        })
    }

    async fn invoice_event(&self, app: &App, kind: &str, object: &Value) -> Result<Outcome> {
        let Some(stripe_id) = object.get("id").and_then(Value::as_str) else {
            return Err(Error::Invalid("invoice event without an invoice id".into()));
        };
        let Some(invoice) = self
            .catalog()
            .invoice_by_external_id(self.ns(), stripe_id)
            .await?
        else {
            return Ok(ignored("invoice not managed by Metron"));
        };
        let customer = Some(invoice.customer_id.clone());
        // Re-read the invoice: the event may be late.
        let client = self.stripe(app).await.map_err(Error::Invalid)?;
        let id = stripe_id.to_owned();
        let current =
            tokio::task::spawn_blocking(move || client.invoice(&id).map_err(|e| e.to_string()))
                .await
                .map_err(|e| Error::Invalid(e.to_string()))?
                .map_err(Error::Invalid)?;
        let state = invoice.status;
        let status = current.status;
        let (trigger, holds, ignored_in): (Option<Trigger>, bool, &[ExtendedStatus]) = match kind {
            "invoice.paid" => (
                Some(Trigger::Paid),
                status == InvoiceStatus::Paid,
                &[ExtendedStatus::Paid],
            ),
            "invoice.payment_failed" => (
                Some(Trigger::Failed),
                status == InvoiceStatus::Open,
                &[ExtendedStatus::Paid, ExtendedStatus::Uncollectible],
            ),
            "invoice.payment_action_required" => (
                Some(Trigger::ActionRequired),
                status == InvoiceStatus::Open,
                &[ExtendedStatus::Paid, ExtendedStatus::Uncollectible],
            ),
            "invoice.overdue" => (
                Some(Trigger::PaymentOverdue),
                status == InvoiceStatus::Open,
                &[ExtendedStatus::Uncollectible, ExtendedStatus::Overdue],
            ),
            "invoice.marked_uncollectible" => (
                Some(Trigger::PaymentUncollectible),
                status == InvoiceStatus::Uncollectible,
                &[ExtendedStatus::Uncollectible],
            ),
            "invoice.voided" => (
                Some(Trigger::Void),
                status == InvoiceStatus::Void,
                &[ExtendedStatus::Paid, ExtendedStatus::Voided],
            ),
            "invoice.finalization_failed" => (
                Some(Trigger::Failed),
                current.last_finalization_error.is_some(),
                &[ExtendedStatus::Paid, ExtendedStatus::Uncollectible],
            ),
            "invoice.sent" => {
                if invoice.sent_to_customer_at.is_none() {
                    let mut sent = invoice.clone();
                    sent.sent_to_customer_at = Some(self.now());
                    self.catalog().save_invoice(self.ns(), &sent, &[]).await?;
                }
                (None, false, &[])
            }
            "invoice.created" | "invoice.updated" | "invoice.finalized" | "invoice.deleted" => {
                (None, false, &[])
            }
            other => return Err(Error::Invalid(format!("unsupported event type {other:?}"))),
        };
        let Some(trigger) = trigger else {
            return Ok(Outcome {
                customer_id: customer,
                message: Some("event acknowledged".into()),
            });
        };
        if !holds || ignored_in.contains(&state) {
            return Ok(Outcome {
                customer_id: customer,
                message: Some(format!(
                    "invoice is {} in Stripe and {} in Metron: nothing to do",
                    status_text(status),
                    state.as_str()
                )),
            });
        }
        let now = self.now();
        match self
            .advance(&invoice.id, Some(Action::App(trigger)), now)
            .await
        {
            Ok(_) => Ok(Outcome {
                customer_id: customer,
                message: None,
            }),
            // The state does not take the trigger (already there, or past it): nothing to do.
            Err(Error::Transition { message, .. }) => Ok(Outcome {
                customer_id: customer,
                message: Some(message),
            }),
            Err(other) => Err(other),
        }
    }
}

fn status_text(s: InvoiceStatus) -> &'static str {
    match s {
        InvoiceStatus::Draft => "draft",
        InvoiceStatus::Open => "open",
        InvoiceStatus::Paid => "paid",
        InvoiceStatus::Uncollectible => "uncollectible",
        InvoiceStatus::Void => "void",
    }
}
