//! Partition leases: two servers on one Kafka topic and one PostgreSQL catalog. Only one reads
//! the topic's partitions at a time; the other is refused at its start, naming the holder, until
//! the holder stops cleanly (its leases are released) or dies and its leases expire.

use crate::helpers::*;
use crate::server::*;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use metron_connectors::stream::testing;
use metron_storage::catalog::Catalog;
use metron_storage::testing::TestDatabase;
use serde_json::json;
use std::time::Duration;

/// The shared PostgreSQL catalog and Kafka topic, and the config both servers run with; `None`
/// when either is not configured (after saying so).
fn setup(test: &str, lease_ttl: &str) -> Option<(TestDatabase, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let db = runtime.block_on(TestDatabase::postgres(test))?;
    let brokers = testing::kafka_brokers(test)?;
    let topic = testing::unique_topic();
    let config = format!(
        r#"
meters:
  - slug: calls
    eventType: call
    aggregation: COUNT
partitions: 2
checkpointInterval: 300ms
database:
  url: "{}"
stream:
  url: kafka://{}/{topic}
  requestTimeout: 10s
  fetchWaitMax: 50ms
  leaseTtl: {lease_ttl}
"#,
        db.url(),
        brokers.join(",")
    );
    Some((db, config))
}

fn events(first: usize, len: usize) -> Vec<serde_json::Value> {
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 3_600, 0).expect("time");
    (first..first + len)
        .map(|i| {
            cloud_event(
                &format!("l-{i}"),
                "lease-test",
                "call",
                &format!("s{}", i % 3),
                t0 + ChronoDuration::seconds(i as i64),
                json!({}),
            )
        })
        .collect()
}

/// A server on the config; a refusal's log shows its cause, not a backtrace.
fn start(config: &str) -> TestServer {
    TestServer::builder()
        .with_config(config)
        .with_env("RUST_BACKTRACE", "0")
        .start()
}

fn node_id(server: &TestServer) -> String {
    std::fs::read_to_string(server.data_dir().join("node-id"))
        .expect("the node id file")
        .trim()
        .to_owned()
}

/// Starts a second server on the config, expecting it to be refused because `holder` reads the
/// partitions; returns the refusal.
fn refused(config: &str, holder: &str) -> String {
    let error = match TestServer::builder()
        .with_config(config)
        .with_env("RUST_BACKTRACE", "0")
        .try_start()
    {
        Ok(_) => panic!("a second node started while {holder} holds the partitions"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("is read by node") && error.contains(holder),
        "the refusal names the holder {holder}: {error}"
    );
    error
}

#[test]
fn a_second_node_is_refused_until_the_first_stops_and_then_reads_every_event_once() {
    let test = "leases::a_second_node_is_refused_until_the_first_stops";
    // A lease that outlives the test: only a release lets the second node in.
    let Some((_db, config)) = setup(test, "10m") else {
        return;
    };
    let mut a = start(&config);
    a.ingest_batch(&events(0, 40)).expect_status(204);
    wait_for_total(&a, "calls", 40.0);
    let a_id = node_id(&a);
    refused(&config, &a_id);

    // A clean stop gives the leases back: the second node starts at its first try, reads the
    // topic (its own data directory has no checkpoint) and counts every event once.
    a.terminate().expect("a stops cleanly");
    let mut b = start(&config);
    let b_id = node_id(&b);
    assert_ne!(a_id, b_id, "each data directory is its own node");
    b.ingest_batch(&events(40, 10)).expect_status(204);
    wait_for_total(&b, "calls", 50.0);

    // Now the first node is the one refused, on its own data directory.
    let error = a.try_restart().expect_err("a is refused while b reads");
    let error = format!("{error:#}");
    assert!(error.contains(&b_id), "{error}");
    b.terminate().expect("b stops cleanly");
}

#[test]
fn the_leases_of_a_killed_node_are_taken_over_once_they_expire() {
    let test = "leases::the_leases_of_a_killed_node_are_taken_over_once_they_expire";
    let Some((_db, config)) = setup(test, "2s") else {
        return;
    };
    let mut a = start(&config);
    a.ingest_batch(&events(0, 30)).expect_status(204);
    wait_for_total(&a, "calls", 30.0);
    let a_id = node_id(&a);
    // Renewed every third of the 2 s: a live node's leases never lapse.
    std::thread::sleep(Duration::from_secs(3));
    refused(&config, &a_id);

    a.kill();
    // SIGKILL releases nothing: another node gets in once the leases expire.
    let b = eventually(Duration::from_secs(30), || {
        TestServer::builder()
            .with_config(&config)
            .with_env("RUST_BACKTRACE", "0")
            .try_start()
            .map_err(|e| format!("{e:#}"))
    });
    b.ingest_batch(&events(30, 5)).expect_status(204);
    wait_for_total(&b, "calls", 35.0);
    // The killed node, restarted on its data directory, is refused while b reads.
    let error = a.try_restart().expect_err("a is refused while b reads");
    assert!(format!("{error:#}").contains(&node_id(&b)), "{error:#}");
}

#[test]
fn a_node_whose_lease_is_taken_stops() {
    // Another node takes the leases (as if this one's had lapsed): at its next renewal this
    // one finds them gone and stops, rather than read on beside the new holder.
    let test = "leases::a_node_whose_lease_is_taken_stops";
    let Some((db, config)) = setup(test, "2s") else {
        return;
    };
    let mut a = start(&config);
    a.ingest_batch(&events(0, 5)).expect_status(204);
    wait_for_total(&a, "calls", 5.0);
    let topic = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("url: kafka://"))
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, topic)| topic.to_owned())
        .expect("the topic");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let catalog = Catalog::connect(db.url()).await.expect("catalog");
        let later = Utc::now() + ChronoDuration::hours(1);
        catalog
            .acquire_leases(
                &format!("kafka/{topic}"),
                &[0, 1],
                "intruder",
                later,
                Duration::from_secs(60),
            )
            .await
            .expect("taken");
        catalog.close().await;
    });
    let status = a.wait_exit(Duration::from_secs(30)).expect("a stops");
    assert!(!status.success(), "{status}");
    let log = a.log_tail(40);
    assert!(log.contains("is no longer this node's"), "{log}");
}
