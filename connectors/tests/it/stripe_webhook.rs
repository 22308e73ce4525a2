//! Webhooks the fake signs, checked by our verifier: two independent implementations of
//! Stripe's scheme must agree.

use crate::support::{client, fake, invoice};
use chrono::Utc;
use metron_connectors::stripe::sync::{finalize_invoice, upsert_invoice};
use metron_connectors::stripe::webhook::{SignatureError, TOLERANCE_DEFAULT, sign, verify};
use metron_connectors::stripe::{Invoice, InvoiceStatus, WebhookEndpointCreate};

#[test]
fn events_signed_by_the_fake_verify_and_a_wrong_secret_does_not() {
    let fake = fake();
    let stripe = client(&fake, 2);
    let params = WebhookEndpointCreate {
        // Nobody listens there; the test takes the signed requests from the fake directly.
        url: "http://127.0.0.1:1/api/v1/apps/app1/stripe/webhook".to_owned(),
        enabled_events: vec!["invoice.paid".to_owned(), "invoice.finalized".to_owned()],
        api_version: Some("2024-09-30.acacia".to_owned()),
        ..WebhookEndpointCreate::default()
    };
    let endpoint = stripe
        .create_webhook_endpoint(&params, "webhook-endpoint-create-app1")
        .expect("registered");
    let secret = endpoint.secret.expect("a secret on create");

    let customer = fake.create_customer("ACME", None);
    fake.create_payment_method(&customer).expect("a card");
    let metron = invoice("inv1", &customer);
    let id = upsert_invoice(&stripe, &metron, None)
        .expect("synced")
        .stripe_invoice_id;
    finalize_invoice(&stripe, &id, "inv1", false).expect("finalized");
    fake.pay_invoice(&id).expect("paid");

    let event_id = fake
        .state()
        .events
        .iter()
        .find(|e| e.kind == "invoice.paid")
        .map(|e| e.id.clone())
        .expect("an invoice.paid event");
    let request = fake
        .webhook_request(&event_id, &endpoint.id)
        .expect("the endpoint wants it");
    let event = verify(
        request.body.as_bytes(),
        &request.signature,
        &secret,
        TOLERANCE_DEFAULT,
        Utc::now(),
    )
    .expect("verifies");
    assert_eq!(event.id, event_id);
    assert_eq!(event.kind, "invoice.paid");
    let paid: Invoice = event.object().expect("an invoice");
    assert_eq!(
        (paid.id.as_str(), paid.status),
        (id.as_str(), InvoiceStatus::Paid)
    );

    // And the other way round: what we sign, the fake's verifier accepts.
    let ours = sign(request.body.as_bytes(), &secret, Utc::now().timestamp());
    assert!(metron_fake_stripe::webhook::verify(
        &secret,
        &ours,
        &request.body
    ));

    let forged = request.with_bad_signature();
    let error = verify(
        forged.body.as_bytes(),
        &forged.signature,
        &secret,
        TOLERANCE_DEFAULT,
        Utc::now(),
    )
    .expect_err("forged");
    assert_eq!(error, SignatureError::Mismatch);
}
