use crate::support::{Client, Receiver, draft_with_items};
use metron_fake_stripe::{FakeStripe, webhook};
use serde_json::Value;
use std::time::Duration;

fn endpoint(client: &Client, url: &str, events: &[&str]) -> (String, String) {
    let mut form = vec![
        ("url", url),
        ("api_version", "2024-09-30.acacia"),
        ("description", "test"),
        ("metadata[om_app_id]", "app"),
    ];
    form.extend(events.iter().map(|e| ("enabled_events[]", *e)));
    let created = client.ok("/v1/webhook_endpoints", &form);
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

/// Enabled events arrive signed, in order; others do not arrive.
#[test]
fn enabled_events_are_delivered_signed() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let receiver = Receiver::start();
    let (id, secret) = endpoint(
        &client,
        &receiver.url,
        &["invoice.finalized", "invoice.paid"],
    );
    assert!(id.starts_with("we_") && secret.starts_with("whsec_"));
    let (_, invoice) = draft_with_items(&fake, &client, &[100]);
    client.ok(&format!("/v1/invoices/{invoice}/finalize"), &[]);
    fake.pay_invoice(&invoice).unwrap();
    assert!(fake.wait_for_webhooks(Duration::from_secs(20)));
    let got = receiver.wait_for(2);
    let kinds: Vec<String> = got
        .iter()
        .map(|r| {
            assert!(webhook::verify(
                &secret,
                &r.headers["stripe-signature"],
                &r.body
            ));
            let event: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(event["data"]["object"]["id"], invoice);
            assert_eq!(event["api_version"], "2024-09-30.acacia");
            event["type"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(kinds, ["invoice.finalized", "invoice.paid"]);
}

#[test]
fn a_failed_delivery_is_retried() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let receiver = Receiver::start();
    receiver.statuses.lock().unwrap().push_back(500);
    let (endpoint_id, _) = endpoint(&client, &receiver.url, &["*"]);
    fake.create_customer("A", None);
    assert!(fake.wait_for_webhooks(Duration::from_secs(20)));
    let attempts: Vec<_> = fake
        .state()
        .deliveries
        .iter()
        .filter(|d| d.endpoint_id == endpoint_id)
        .map(|d| (d.attempt, d.status))
        .collect();
    assert_eq!(attempts, [(1, Some(500)), (2, Some(200))]);
    let got = receiver.wait_for(2);
    assert_eq!(got[0].body, got[1].body);
}

#[test]
fn a_bad_signature_does_not_verify_and_a_replay_is_identical() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let receiver = Receiver::start();
    let (endpoint_id, secret) = endpoint(&client, &receiver.url, &["customer.created"]);
    fake.create_customer("A", None);
    assert!(fake.wait_for_webhooks(Duration::from_secs(20)));
    let event = fake.state().events[0].id.clone();
    let good = fake.webhook_request(&event, &endpoint_id).unwrap();
    assert!(webhook::verify(&secret, &good.signature, &good.body));
    let bad = good.clone().with_bad_signature();
    assert!(!webhook::verify(&secret, &bad.signature, &bad.body));
    assert_eq!(bad.send(), Ok(200));
    assert_eq!(fake.replay_last_webhook(), Some(Ok(200)));
    let got = receiver.wait_for(3);
    assert_eq!(got.len(), 3);
    assert_eq!(
        (&got[2].body, &got[2].headers["stripe-signature"]),
        (&got[0].body, &got[0].headers["stripe-signature"])
    );
    assert_eq!(fake.deliver_event(&event), vec![Ok(200)]);
}

#[test]
fn a_deleted_endpoint_gets_nothing() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let receiver = Receiver::start();
    let (id, _) = endpoint(&client, &receiver.url, &["*"]);
    assert_eq!(
        client
            .delete(&format!("/v1/webhook_endpoints/{id}"))
            .unwrap()
            .json["deleted"],
        true
    );
    fake.create_customer("A", None);
    assert!(fake.wait_for_webhooks(Duration::from_secs(20)));
    assert!(fake.state().deliveries.is_empty());
    assert_eq!(
        client
            .delete(&format!("/v1/webhook_endpoints/{id}"))
            .unwrap()
            .status,
        404
    );
}
