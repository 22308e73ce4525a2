use crate::support::Client;
use metron_fake_stripe::{FakeConfig, FakeStripe, Fault, FaultRule};
use std::time::Duration;

/// Same key and parameters: the first answer again, marked as a replay, and one customer.
#[test]
fn a_repeated_key_replays_the_first_answer() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let form = [("name", "ACME"), ("metadata[om_customer_id]", "c1")];
    let first = client.post("/v1/customers", &form, Some("k1")).unwrap();
    let again = client.post("/v1/customers", &form, Some("k1")).unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(again.json, first.json);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("original-request"), first.header("request-id"));
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(fake.state().customers.len(), 1);
    assert!(fake.violations().is_empty());
}

#[test]
fn a_key_reused_with_other_parameters_is_an_idempotency_error() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    client
        .post("/v1/customers", &[("name", "A")], Some("k"))
        .unwrap();
    let reply = client
        .post("/v1/customers", &[("name", "B")], Some("k"))
        .unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json["error"]["type"], "idempotency_error");
    assert_eq!(fake.state().customers.len(), 1);
}

/// Rejected before execution: the key is not used up, so a corrected request goes through.
#[test]
fn a_validation_failure_does_not_store_the_key() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let bad = client
        .post(
            "/v1/customers",
            &[("name", "A"), ("nmae", "typo")],
            Some("k"),
        )
        .unwrap();
    assert_eq!(bad.code(), Some("parameter_unknown"));
    let good = client
        .post("/v1/customers", &[("name", "A")], Some("k"))
        .unwrap();
    assert_eq!(good.status, 200);
    assert_eq!(good.header("idempotent-replayed"), None);
}

/// An executed request that failed (404) is stored and replayed like a success.
#[test]
fn an_executed_error_is_replayed() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let form = [("customer", "cus_missing"), ("amount", "100")];
    let first = client.post("/v1/invoiceitems", &form, Some("k")).unwrap();
    assert_eq!(
        (first.status, first.code()),
        (404, Some("resource_missing"))
    );
    let again = client.post("/v1/invoiceitems", &form, Some("k")).unwrap();
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json, first.json);
}

/// While the first request with a key is held, a duplicate gets 409 `idempotency_key_in_use`.
#[test]
fn an_in_flight_duplicate_gets_409() {
    let fake = FakeStripe::start_with(FakeConfig {
        timeout_hold: Duration::from_secs(2),
        ..FakeConfig::default()
    })
    .unwrap();
    fake.inject_rule(FaultRule::on("POST", "/v1/customers", Fault::Timeout));
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    Client::new(&fake)
                        .post("/v1/customers", &[("name", "A")], Some("k"))
                        .map(|r| (r.status, r.code().map(str::to_owned)))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Ok((409, Some(code))) if code == "idempotency_key_in_use"))
        .count();
    let dropped = results.iter().filter(|r| r.is_err()).count();
    assert_eq!((conflicts, dropped), (1, 1), "{results:?}");
    assert!(fake.state().customers.is_empty());
}

#[test]
fn gets_ignore_the_key() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let customer = fake.create_customer("A", None);
    let reply = client.get(&format!("/v1/customers/{customer}")).unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("idempotency-key"), None);
}
