//! The client against the fake: app install, customers, sessions, errors.

use crate::support::{client, fake};
use metron_connectors::stripe::{
    CheckoutSessionCreate, CustomerCreate, Error, PortalSessionCreate, StripeClient, StripeConfig,
    WebhookEndpointCreate,
};
use std::collections::BTreeMap;

fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Install: the key check, then the webhook endpoint whose secret only the create returns;
/// uninstall deletes it, and a second delete is a not-found the caller may ignore.
#[test]
fn install_checks_the_key_and_registers_the_webhook_endpoint() {
    let fake = fake();
    let stripe = client(&fake, 2);
    let account = stripe.account().expect("the key works");
    assert!(account.id.starts_with("acct_"), "{account:?}");

    let events = [
        "setup_intent.succeeded",
        "invoice.finalization_failed",
        "invoice.paid",
        "invoice.payment_failed",
        "invoice.voided",
    ];
    let params = WebhookEndpointCreate {
        url: "https://metron.example/api/v1/apps/app1/stripe/webhook".to_owned(),
        enabled_events: events.iter().map(|e| (*e).to_owned()).collect(),
        api_version: Some("2024-09-30.acacia".to_owned()),
        description: Some("Metron Stripe webhook, do not delete or modify manually".to_owned()),
        metadata: metadata(&[("om_namespace", "default"), ("om_app_id", "app1")]),
    };
    let endpoint = stripe
        .create_webhook_endpoint(&params, "webhook-endpoint-create-app1")
        .expect("registered");
    assert!(endpoint.id.starts_with("we_"));
    assert!(
        endpoint
            .secret
            .as_deref()
            .is_some_and(|s| s.starts_with("whsec_"))
    );
    assert_eq!(endpoint.enabled_events, params.enabled_events);
    // A retry of the install (same key) gets the same endpoint, not a second one.
    let again = stripe
        .create_webhook_endpoint(&params, "webhook-endpoint-create-app1")
        .expect("replayed");
    assert_eq!(again.id, endpoint.id);
    assert_eq!(fake.state().webhook_endpoints.len(), 1);

    stripe
        .delete_webhook_endpoint(&endpoint.id)
        .expect("deleted");
    assert!(fake.state().webhook_endpoints.is_empty());
    let gone = stripe
        .delete_webhook_endpoint(&endpoint.id)
        .expect_err("gone");
    assert!(gone.not_found(), "{gone:?}");
    assert_eq!(fake.violations(), Vec::<String>::new());
}

#[test]
fn a_wrong_key_is_unauthorized_and_not_retried() {
    let fake = fake();
    let wrong = StripeClient::new(StripeConfig {
        api_base: fake.base_url(),
        ..StripeConfig::new("sk_test_wrong")
    })
    .expect("valid config");
    assert!(matches!(wrong.account(), Err(Error::Unauthorized { .. })));
    assert_eq!(fake.state().requests.len(), 1);
}

#[test]
fn customers_are_read_with_their_payment_method_and_tax_or_created_once() {
    let fake = fake();
    let stripe = client(&fake, 2);
    let customer_id = fake.create_customer("ACME", Some("billing@acme.example"));
    let pm_id = fake.create_payment_method(&customer_id).expect("a card");

    let customer = stripe.customer(&customer_id).expect("read");
    assert_eq!(customer.email.as_deref(), Some("billing@acme.example"));
    let default = customer
        .invoice_settings
        .default_payment_method
        .expect("a default payment method");
    assert_eq!(default.id(), pm_id);
    let expanded = default.object().expect("expanded");
    assert!(expanded.billing_details.address.is_some());
    assert!(customer.tax.is_some(), "tax is expanded");

    let pm = stripe.payment_method(&pm_id).expect("read");
    assert_eq!(pm.customer.as_deref(), Some(customer_id.as_str()));

    let missing = stripe.customer("cus_missing").expect_err("missing");
    assert!(missing.not_found(), "{missing:?}");

    let params = CustomerCreate {
        name: Some("Beta".to_owned()),
        email: None,
        metadata: metadata(&[("om_namespace", "default"), ("om_customer_id", "c2")]),
    };
    let created = stripe
        .create_customer(&params, "customer-create-c2")
        .expect("created");
    let replayed = stripe
        .create_customer(&params, "customer-create-c2")
        .expect("replayed");
    assert_eq!(created.id, replayed.id);
    assert_eq!(
        created.metadata.get("om_customer_id").map(String::as_str),
        Some("c2")
    );
    assert_eq!(fake.state().customers.len(), 2);
    assert_eq!(fake.violations(), Vec::<String>::new());
}

#[test]
fn checkout_and_portal_sessions_are_created() {
    let fake = fake();
    let stripe = client(&fake, 2);
    let customer_id = fake.create_customer("ACME", None);
    let checkout = CheckoutSessionCreate {
        customer: customer_id.clone(),
        setup_intent_metadata: metadata(&[
            ("om_namespace", "default"),
            ("om_app_id", "app1"),
            ("om_customer_id", "c1"),
        ]),
        currency: Some("usd".to_owned()),
        success_url: Some("https://acme.example/done".to_owned()),
        cancel_url: Some("https://acme.example/cancel".to_owned()),
        ..CheckoutSessionCreate::default()
    };
    let session = stripe
        .create_checkout_session(&checkout, "checkout-c1-1")
        .expect("created");
    assert_eq!(session.mode, "setup");
    assert!(
        session
            .setup_intent
            .as_deref()
            .is_some_and(|s| s.starts_with("seti_"))
    );
    assert!(session.url.is_some());

    let portal = PortalSessionCreate {
        customer: customer_id.clone(),
        return_url: Some("https://acme.example/account".to_owned()),
        ..PortalSessionCreate::default()
    };
    let portal = stripe
        .create_portal_session(&portal, "portal-c1-1")
        .expect("created");
    assert_eq!(portal.customer, customer_id);
    assert!(!portal.url.is_empty());
    assert_eq!(fake.violations(), Vec::<String>::new());
}
