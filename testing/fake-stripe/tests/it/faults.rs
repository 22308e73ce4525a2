use crate::support::Client;
use metron_fake_stripe::{FakeConfig, FakeStripe, Fault, FaultRule};
use std::time::{Duration, Instant};

/// The write happens, the client sees 500; its retry with the same key gets the real answer.
#[test]
fn fail_after_write_applies_the_write_and_the_retry_replays_it() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let customer = fake.create_customer("A", None);
    fake.inject_rule(FaultRule::on(
        "POST",
        "/v1/invoiceitems",
        Fault::FailAfterWrite,
    ));
    let form = [("customer", customer.as_str()), ("amount", "100")];
    let failed = client
        .post("/v1/invoiceitems", &form, Some("ii-1"))
        .unwrap();
    assert_eq!(failed.status, 500);
    assert_eq!(fake.state().invoice_items.len(), 1, "the write took effect");
    let retry = client
        .post("/v1/invoiceitems", &form, Some("ii-1"))
        .unwrap();
    assert_eq!(retry.status, 200);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.json["id"], fake.state().invoice_items[0].id);
    assert_eq!(fake.state().invoice_items.len(), 1);
}

#[test]
fn drop_after_write_closes_the_connection_but_applies_the_write() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    fake.inject(Fault::DropAfterWrite);
    assert!(
        client
            .post("/v1/customers", &[("name", "A")], Some("c"))
            .is_err()
    );
    assert_eq!(fake.state().customers.len(), 1);
}

/// The client gives up before the fake answers, and the write never happens.
#[test]
fn a_timeout_does_not_apply_the_write() {
    let fake = FakeStripe::start_with(FakeConfig {
        timeout_hold: Duration::from_secs(2),
        ..FakeConfig::default()
    })
    .unwrap();
    let client = Client::with_timeout(&fake, Duration::from_millis(300));
    fake.inject_rule(FaultRule::on("POST", "/v1/customers", Fault::Timeout));
    assert!(
        client
            .post("/v1/customers", &[("name", "A")], Some("c"))
            .is_err()
    );
    // While the fake still holds it, the key is in use (409); then it executes, because nothing
    // was stored for it.
    let patient = Client::new(&fake);
    let deadline = Instant::now() + Duration::from_secs(20);
    let retry = loop {
        let reply = patient
            .post("/v1/customers", &[("name", "A")], Some("c"))
            .unwrap();
        if reply.status != 409 || Instant::now() > deadline {
            break reply;
        }
        assert_eq!(reply.code(), Some("idempotency_key_in_use"));
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(retry.status, 200);
    assert_eq!(retry.header("idempotent-replayed"), None);
    assert_eq!(fake.state().customers.len(), 1);
}

#[test]
fn a_dropped_connection_gets_no_response_and_no_write() {
    let fake = FakeStripe::start().unwrap();
    fake.inject(Fault::Drop);
    assert!(
        Client::new(&fake)
            .post("/v1/customers", &[("name", "A")], None)
            .is_err()
    );
    assert!(fake.state().customers.is_empty());
    assert_eq!(fake.state().requests[0].fault.as_deref(), Some("Drop"));
}

#[test]
fn status_faults_answer_like_stripe_and_do_not_write() {
    let fake = FakeStripe::start().unwrap();
    let client = Client::new(&fake);
    let cases = [
        (
            Fault::Status429 { lock_timeout: true },
            429,
            Some("lock_timeout"),
            Some("true"),
        ),
        (
            Fault::Status429 {
                lock_timeout: false,
            },
            429,
            Some("rate_limit"),
            Some("false"),
        ),
        (Fault::Status409, 409, None, Some("true")),
        (Fault::Status500, 500, None, None),
    ];
    for (fault, status, code, retry) in cases {
        fake.inject(fault);
        let reply = client
            .post("/v1/customers", &[("name", "A")], Some("k"))
            .unwrap();
        assert_eq!(
            (
                reply.status,
                reply.code(),
                reply.header("stripe-should-retry")
            ),
            (status, code, retry),
            "{fault:?}"
        );
    }
    assert!(fake.state().customers.is_empty());
    // The key was never stored, so it still works.
    assert_eq!(
        client
            .post("/v1/customers", &[("name", "A")], Some("k"))
            .unwrap()
            .status,
        200
    );
}

/// Random faults: the same seed and requests give the same faults; another seed differs.
#[test]
fn random_faults_are_deterministic_per_seed() {
    let run = |seed| {
        let kinds = vec![
            Fault::Status500,
            Fault::Status409,
            Fault::Status429 { lock_timeout: true },
            Fault::FailAfterWrite,
            Fault::Drop,
        ];
        let fake = FakeStripe::start_with(FakeConfig {
            seed,
            fault_rate: 0.5,
            fault_kinds: kinds,
            ..FakeConfig::default()
        })
        .unwrap();
        let client = Client::new(&fake);
        for i in 0..30 {
            let _ = client.post("/v1/customers", &[("name", &format!("c{i}"))], None);
        }
        let faults: Vec<Option<String>> = fake
            .state()
            .requests
            .iter()
            .map(|r| r.fault.clone())
            .collect();
        let written = fake.state().customers.len();
        (faults, written)
    };
    let (a, written) = run(11);
    assert_eq!(run(11).0, a);
    assert_ne!(run(12).0, a);
    let applied = a
        .iter()
        .filter(|f| f.is_none() || f.as_deref() == Some("FailAfterWrite"))
        .count();
    assert_eq!(written, applied);
    assert!(a.iter().any(Option::is_some) && a.iter().any(Option::is_none));
}

/// Under random faults, a client that retries with the same key until it gets an answer makes
/// each object exactly once, for every seed: the fake never loses or doubles an acknowledged
/// write, and never writes on a fault that promises no write. (Not the failures kept for the
/// key: those answer every retry under it alike, see the next test.)
#[test]
fn retrying_with_keys_writes_each_object_once_under_random_faults() {
    for seed in 0..60 {
        let config = FakeConfig {
            seed,
            fault_rate: 0.3,
            timeout_hold: Duration::from_millis(100),
            fault_kinds: Fault::ALL
                .into_iter()
                .filter(|f| !matches!(f, Fault::StoredFailure | Fault::StoredFailureAfterWrite))
                .collect(),
            ..FakeConfig::default()
        };
        let fake = FakeStripe::start_with(config).unwrap();
        let client = Client::with_timeout(&fake, Duration::from_millis(50));
        let patient = Client::new(&fake);
        let mut ids = Vec::new();
        for i in 0..5 {
            let key = format!("create-{i}");
            let name = format!("c{i}");
            let form = [("name", name.as_str())];
            let mut answer = None;
            for attempt in 0..200 {
                // Alternate the impatient client (for timeouts) with a patient one.
                let chosen = if attempt % 2 == 0 { &client } else { &patient };
                match chosen.post("/v1/customers", &form, Some(&key)) {
                    Ok(reply) if reply.status == 200 => {
                        answer = Some(reply.json["id"].as_str().unwrap().to_owned());
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            ids.push(answer.unwrap_or_else(|| panic!("seed {seed}: {key} never succeeded")));
        }
        let state = fake.state();
        let stored: Vec<&str> = state.customers.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(stored, ids, "seed {seed}");
        assert!(fake.violations().is_empty(), "seed {seed}");
    }
}

/// A failure kept for the key (as Stripe keeps the answer of a request that started
/// executing) is replayed to every retry under the key, marked `Idempotent-Replayed` with the
/// first request's id; the write happened only with `StoredFailureAfterWrite`. Another key
/// writes as usual.
#[test]
fn failures_kept_for_the_key_are_replayed() {
    for (fault, written) in [
        (Fault::StoredFailure, 0),
        (Fault::StoredFailureAfterWrite, 1),
    ] {
        let fake = FakeStripe::start().unwrap();
        let client = Client::new(&fake);
        fake.inject(fault);
        let form = [("name", "ACME")];
        let first = client.post("/v1/customers", &form, Some("k1")).unwrap();
        assert_eq!(first.status, 500, "{fault:?}");
        let again = client.post("/v1/customers", &form, Some("k1")).unwrap();
        assert_eq!(again.status, 500, "{fault:?}");
        assert_eq!(
            again.header("idempotent-replayed"),
            Some("true"),
            "{fault:?}"
        );
        assert_eq!(
            again.header("original-request"),
            first.header("request-id"),
            "{fault:?}"
        );
        assert_eq!(fake.state().customers.len(), written, "{fault:?}");
        let other = client.post("/v1/customers", &form, Some("k2")).unwrap();
        assert_eq!(other.status, 200, "{fault:?}");
        assert_eq!(fake.state().customers.len(), written + 1, "{fault:?}");
    }
}

/// The request hook sees every request once, after it ran and before its answer, and the
/// fault rate can be turned up and down while the seeded draws go on.
#[test]
fn the_hook_sees_each_request_and_the_fault_rate_can_change() {
    let fake = FakeStripe::start_with(FakeConfig {
        seed: 3,
        fault_kinds: vec![Fault::Status500],
        ..FakeConfig::default()
    })
    .unwrap();
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&seen);
    fake.on_request(move |r| {
        sink.lock()
            .push((r.path.clone(), r.status, r.fault.clone()))
    });
    let client = Client::new(&fake);
    let ok = client
        .post("/v1/customers", &[("name", "A")], None)
        .unwrap();
    fake.set_fault_rate(1.0);
    let failed = client
        .post("/v1/customers", &[("name", "B")], None)
        .unwrap();
    fake.set_fault_rate(0.0);
    let again = client
        .post("/v1/customers", &[("name", "C")], None)
        .unwrap();
    assert_eq!((ok.status, failed.status, again.status), (200, 500, 200));
    let seen = seen.lock().clone();
    assert_eq!(
        seen,
        vec![
            ("/v1/customers".to_owned(), 200, None),
            (
                "/v1/customers".to_owned(),
                500,
                Some("Status500".to_owned())
            ),
            ("/v1/customers".to_owned(), 200, None),
        ]
    );
    assert_eq!(fake.state().customers.len(), 2);
}
