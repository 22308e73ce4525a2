//! The notifier driven directly: balance observations fire the highest newly crossed
//! threshold once per period, survive a restart, and reach a signed webhook receiver.

use super::*;
use metron_storage::notifications::ThresholdType;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Instant;

/// A received request: headers (names lowercased) and body.
type Request = (Vec<(String, String)>, String);

/// Answers every request 200 and hands back (headers lowercased, body).
fn receiver() -> (String, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let Ok(clone) = stream.try_clone() else {
                return;
            };
            let mut reader = BufReader::new(clone);
            let mut headers = Vec::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
                    if k == "content-length" {
                        length = v.parse().unwrap_or(0);
                    }
                    headers.push((k, v));
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut stream = stream;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if tx
                .send((headers, String::from_utf8_lossy(&body).into_owned()))
                .is_err()
            {
                return;
            }
        }
    });
    (url, rx)
}

fn observation(usage: i64, period_from: &str) -> BalanceObservation {
    let at = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    };
    BalanceObservation {
        namespace: "default".into(),
        entitlement_id: "ent1".into(),
        feature_id: "feat1".into(),
        feature_key: "tokens".into(),
        subject_key: "customer-1".into(),
        customer_id: None,
        period_from: at(period_from),
        measure_usage_from: at("2025-01-01T00:00:00Z"),
        usage: Decimal::from(usage),
        balance: Decimal::from(100 - usage),
        total_available_grant_amount: Decimal::from(100),
        overage: Decimal::ZERO,
        payload: Payload {
            entitlement: json!({"id": "ent1"}),
            feature: json!({"key": "tokens"}),
            subject: json!({"key": "customer-1"}),
            customer: None,
            value: json!({"usage": usage}),
        }
        .ready(),
    }
}

/// The `data.threshold.value`s of the namespace's events, once `count` exist and are delivered.
async fn delivered_thresholds(notifier: &Notifier, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = notifier
            .list_events("default", &EventFilter::default())
            .await
            .expect("list");
        let done = events.len() == count
            && events.iter().all(|e| {
                e.deliveries
                    .iter()
                    .all(|d| d.state == DeliveryState::Success)
            });
        if done {
            // Events of the same millisecond have no order among them: sort by value.
            let mut values: Vec<i64> = events
                .iter()
                .filter_map(|e| e.payload["data"]["threshold"]["value"].as_i64())
                .collect();
            values.sort_unstable();
            return values.into_iter().map(Value::from).collect();
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} delivered events, have {:?}",
            events
                .iter()
                .map(|e| (e.payload["data"]["threshold"].clone(), e.deliveries.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

metron_storage::catalog_test! {
    #[actix_rt::test]
    async fn balance_observations_fire_once_per_highest_threshold_and_period(db) {
        let catalog = db.open().await;
        let notifier = Notifier::start(
            catalog.clone(),
            NotifierConfig::default(),
            &Arbiter::current(),
        )
        .await
        .expect("start");
        let (url, received) = receiver();
        let channel = notifier
            .create_channel(
                "default",
                ChannelInput {
                    name: "hook".into(),
                    url,
                    ..ChannelInput::default()
                },
            )
            .await
            .expect("channel");
        let usage = |v: i64| Threshold {
            value: Decimal::from(v),
            kind: ThresholdType::UsageValue,
        };
        notifier
            .create_rule(
                "default",
                RuleInput {
                    rule_type: RuleType::BalanceThreshold,
                    name: "usage".into(),
                    disabled: false,
                    channels: vec![channel.id.clone()],
                    thresholds: vec![usage(50), usage(80)],
                    features: vec!["tokens".into()],
                    metadata: None,
                },
            )
            .await
            .expect("rule");

        let period = "2025-02-01T00:00:00Z";
        for u in [10, 50, 60, 90, 95] {
            notifier.balance_observed(observation(u, period));
        }
        assert_eq!(
            delivered_thresholds(&notifier, 2).await,
            vec![json!(50), json!(80)]
        );

        // The webhook is signed with the channel's secret over the exact body.
        let (headers, body) = received
            .recv_timeout(Duration::from_secs(10))
            .expect("webhook");
        let get = |k: &str| headers.iter().find(|(h, _)| h == k).map(|(_, v)| v.clone());
        let id = get("webhook-id").expect("webhook-id");
        let ts: i64 = get("svix-timestamp")
            .and_then(|t| t.parse().ok())
            .expect("timestamp");
        let expected = webhook::sign(&channel.signing_secret, &id, ts, body.as_bytes()).expect("sign");
        assert_eq!(get("webhook-signature"), Some(expected.clone()));
        assert_eq!(get("svix-signature"), Some(expected));
        let payload: Value = serde_json::from_str(&body).expect("json body");
        assert_eq!(payload["type"], "entitlements.balance.threshold");
        assert_eq!(payload["id"], id.as_str());

        // A restarted notifier remembers what fired: the same value fires nothing, a new
        // period does.
        let restarted = Notifier::start(
            catalog.clone(),
            NotifierConfig::default(),
            &Arbiter::current(),
        )
        .await
        .expect("restart");
        restarted.balance_observed(observation(95, period));
        restarted.balance_observed(observation(55, "2025-03-01T00:00:00Z"));
        assert_eq!(
            delivered_thresholds(&restarted, 3).await,
            vec![json!(50), json!(50), json!(80)]
        );
        // An unrelated feature matches no rule.
        let mut other = observation(99, "2025-04-01T00:00:00Z");
        other.feature_key = "other".into();
        other.feature_id = "feat2".into();
        restarted.balance_observed(other);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(delivered_thresholds(&restarted, 3).await.len(), 3);
    }
}
