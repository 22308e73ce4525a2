//! Three nodes on one Kafka (or Fluvio) topic, one PostgreSQL catalog and one S3 prefix.
//!
//! One node holds the topic's partitions and keeps the state; the others stand by: they take
//! events themselves (appending to the topic) and forward every other request to the holder.
//! Events go to all three; the holder is SIGKILLed mid-ingest; a standby takes over once the
//! leases expire, from the newest checkpoint on S3 and the dedup runs shipped with it; the killed
//! node comes back as a standby. Every acknowledged event is counted exactly once, in the meter,
//! in SQL and in a customer's balance, and a client's retry of events counted before the kill is
//! dropped by the new holder.

use crate::helpers::*;
use crate::server::*;
use chrono::{DateTime, Utc};
use metron_connectors::EventStream;
use metron_storage::objects::testing::{self as s3, BUCKET};
use metron_storage::testing::TestDatabase;
use metron_storage::{manifest, paths};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

const SUBJECTS: usize = 5;
const GRANT: f64 = 1_000_000.0;

/// What the nodes of a test share: a fresh PostgreSQL database, an S3 prefix, and the config
/// they all run with.
struct Cluster {
    db: TestDatabase,
    endpoint: String,
    prefix: String,
    config: String,
}

/// A [`Cluster`] on the stream whose config lines (under `stream:`) are `stream`, with a meter
/// `calls` (the sum of `$.n`) and 3 partitions; `None` (after saying so) when S3 or PostgreSQL
/// is not configured.
fn cluster(
    test: &str,
    runtime: &tokio::runtime::Runtime,
    stream: &str,
    checkpoint_interval: &str,
) -> Option<Cluster> {
    let endpoint = crate::s3::endpoint(test)?;
    let db = runtime.block_on(TestDatabase::postgres(test))?;
    s3::create_bucket(&endpoint, BUCKET).expect("bucket");
    let prefix = format!("cluster-{}", new_id());
    let config = format!(
        r#"
meters:
  - slug: calls
    eventType: call
    aggregation: SUM
    valueProperty: $.n
partitions: 3
checkpointInterval: {checkpoint_interval}
database:
  url: "{db}"
storage:
  url: s3://{BUCKET}/{prefix}
  endpoint: {endpoint}
  region: us-east-1
  accessKeyId: test
  secretAccessKey: test
  allowHttp: true
stream:
{stream}  leaseTtl: 2s
"#,
        db = db.url()
    );
    Some(Cluster {
        db,
        endpoint,
        prefix,
        config,
    })
}

/// Runs the three-node scenario on the stream whose config lines (under `stream:`) are
/// `stream`, with the test's own PostgreSQL database and S3 prefix.
pub(crate) fn three_nodes_count_every_event_once(
    test: &str,
    stream: &str,
    open: impl FnOnce(&tokio::runtime::Runtime) -> Arc<dyn EventStream>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let Some(Cluster {
        db: _db,
        endpoint,
        prefix,
        config,
    }) = cluster(test, &runtime, stream, "300ms")
    else {
        return;
    };
    let start = || {
        TestServer::builder()
            .with_config(&config)
            .with_env("RUST_BACKTRACE", "0")
            .start()
    };
    let mut a = start();
    let b = start();
    let c = start();
    assert!(!standing_by(&a), "the first node holds the stream");
    assert!(standing_by(&b) && standing_by(&c), "the others stand by");

    // The customer, feature and entitlement are made through a standby: forwarded.
    let subjects: Vec<String> = (0..SUBJECTS).map(|i| format!("s{i}")).collect();
    b.post("/api/v1/customers")
        .json(&json!({
            "name": "Acme",
            "key": "acme",
            "usageAttribution": { "subjectKeys": subjects },
        }))
        .send()
        .expect_status(201);
    let feature = c
        .post("/api/v1/features")
        .json(&json!({ "key": "calls", "name": "Calls", "meterSlug": "calls" }))
        .send()
        .expect_status(201)
        .json();
    let mut entitlement = metered_entitlement(
        feature["id"].as_str().expect("feature id"),
        "2024-01-01T00:00:00Z",
        "MONTH",
    );
    entitlement["measureUsageFrom"] = json!("2024-01-01T00:00:00Z");
    entitlement["issueAfterReset"] = json!(GRANT);
    b.post("/api/v2/customers/acme/entitlements")
        .json(&entitlement)
        .send()
        .expect_status(201);

    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 7_200, 0).expect("time");
    let first = sum_batch("c", 0, 300, t0);
    c.ingest_batch(&first.events).expect_status(204);
    let mut total = first.sum;
    wait_for_total(&b, "calls", total);
    // A checkpoint covers the first batch before the kill: its dedup keys are then only in
    // the runs that checkpoint shipped to S3.
    let root = s3::s3_root(&endpoint, &prefix).expect("root");
    eventually(VISIBLE, || {
        let newest = runtime
            .block_on(manifest::load_latest(&root, 3))
            .map_err(|e| e.to_string())?;
        let covered: u64 = newest
            .iter()
            .flat_map(|m| &m.partitions)
            .map(|p| p.offset)
            .sum();
        if covered >= 300 {
            Ok(())
        } else {
            Err(format!("the newest checkpoint covers {covered} records"))
        }
    });

    // One sender per node, each with its own ids, while the holder is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let senders: Vec<_> = [&a, &b, &c]
        .iter()
        .enumerate()
        .map(|(n, node)| {
            let (client, stop, acks) = (node.client(), stop.clone(), acks[n].clone());
            thread::spawn(move || {
                let (mut acked, mut cut) = (Vec::new(), Vec::new());
                let mut id = 1_000_000 * (n + 1);
                while !stop.load(Ordering::SeqCst) {
                    let b = sum_batch("c", id, 20, t0);
                    id += 20;
                    match client.try_ingest_batch(&b.events) {
                        Ok(resp) if resp.status == 204 => {
                            acked.push(b);
                            acks.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(resp) if resp.status == 503 || resp.status == 429 => {
                            cut.push(b);
                            thread::sleep(Duration::from_millis(50));
                        }
                        Ok(resp) => panic!("a valid batch got {}: {}", resp.status, resp.body),
                        Err(_) => {
                            cut.push(b);
                            break;
                        }
                    }
                }
                (acked, cut)
            })
        })
        .collect();
    // Mid-ingest: once every node has acknowledged a batch (a loaded machine may take more
    // than a moment), and a while more.
    eventually(Duration::from_secs(30), || {
        let counts: Vec<usize> = acks.iter().map(|n| n.load(Ordering::SeqCst)).collect();
        if counts.iter().all(|&n| n > 0) {
            Ok(())
        } else {
            Err(format!(
                "batches acknowledged by each node so far: {counts:?}"
            ))
        }
    });
    thread::sleep(Duration::from_millis(300));
    let a_id = node_id(&a);
    a.kill();
    thread::sleep(Duration::from_millis(600));
    stop.store(true, Ordering::SeqCst);
    let mut acked_batches = 0;
    let mut cut = Vec::new();
    let mut sent: Vec<Batch> = Vec::new();
    for (n, sender) in senders.into_iter().enumerate() {
        let (acked, node_cut) = sender.join().expect("sender");
        assert!(!acked.is_empty(), "node {n} acknowledged batches");
        println!(
            "node {n}: {} batches acknowledged, {} cut",
            acked.len(),
            node_cut.len()
        );
        acked_batches += acked.len();
        total += acked.iter().map(|b| b.sum).sum::<f64>();
        cut.extend(node_cut);
        sent.extend(acked);
    }
    total += cut.iter().map(|b| b.sum).sum::<f64>();
    let distinct = 300 + 20 * (acked_batches + cut.len()) as u64;

    // A standby takes over once the killed node's leases expire.
    let holder = eventually(Duration::from_secs(60), || {
        match [&b, &c].into_iter().find(|n| !standing_by(n)) {
            Some(node) => Ok(node_id(node)),
            None => Err("both still stand by".to_owned()),
        }
    });
    assert_ne!(holder, a_id);
    println!("node {holder} took over from {a_id}");

    // The killed node comes back as a standby; the cut batches are resent through it, and
    // so is the first batch, counted before the kill: the new holder drops it.
    a.restart();
    assert!(standing_by(&a), "the restarted node stands by");
    for b in &cut {
        a.ingest_batch(&b.events).expect_status(204);
    }
    a.ingest_batch(&first.events).expect_status(204);

    let counted = try_eventually(VISIBLE, || {
        let got = parse_query(&c.query("calls", &[]))?;
        match got.data.as_slice() {
            [row] if row.value == total => Ok(()),
            _ => Err(format!("total of calls: want {total}, got {got:?}")),
        }
    });
    if let Err(reason) = counted {
        // Where the missing events went: not in the topic (the broker lost acknowledged
        // records), or in the topic but not counted (Metron dropped them).
        let expected: BTreeSet<String> = std::iter::once(&first)
            .chain(&sent)
            .chain(&cut)
            .flat_map(|b| b.events.iter())
            .filter_map(|e| e["id"].as_str().map(str::to_owned))
            .collect();
        let stream = open(&runtime);
        let mut in_topic = BTreeMap::new();
        for p in 0..3 {
            let end = stream.end_offset(p).expect("end offset");
            let mut next = 0;
            while next < end {
                let records = runtime
                    .block_on(stream.read(p, next, 10_000, Duration::from_secs(5)))
                    .expect("read");
                let Some(last) = records.last() else { break };
                next = last.offset + 1;
                for r in &records {
                    if let Ok(view) = metron_engine::record::RecordView::parse(&r.payload) {
                        in_topic.insert(view.id.to_owned(), (p, r.offset));
                    }
                }
            }
        }
        let answer = c.sql("SELECT DISTINCT id FROM events");
        let counted: BTreeSet<String> = answer["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row[0].as_str().map(str::to_owned))
            .collect();
        let lost: Vec<&String> = expected
            .iter()
            .filter(|id| !in_topic.contains_key(*id))
            .collect();
        let dropped: Vec<(&String, &(u32, u64))> = in_topic
            .iter()
            .filter(|(id, _)| expected.contains(*id) && !counted.contains(*id))
            .collect();
        panic!(
            "{reason}\n{} acknowledged events not in the topic: {:?}\n{} in the topic but not \
             counted (id, (partition, offset)): {:?}",
            lost.len(),
            lost.iter().take(20).collect::<Vec<_>>(),
            dropped.len(),
            dropped.iter().take(20).collect::<Vec<_>>()
        );
    }
    for node in [&a, &b] {
        let row = wait_for_total(node, "calls", total);
        assert_eq!(row.value, total);
    }
    let answer = c.sql("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM events");
    assert_eq!(answer["rows"], json!([[distinct, distinct]]), "{answer}");
    let value = a
        .get("/api/v2/customers/acme/entitlements/calls/value")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(value["usage"].as_f64(), Some(total), "{value}");
    assert_eq!(value["balance"].as_f64(), Some(GRANT - total), "{value}");
    assert_eq!(value["hasAccess"], json!(true), "{value}");

    // The dedup runs went to S3 with the checkpoints.
    let runs = runtime
        .block_on(root.list(paths::DEDUP))
        .expect("list dedup runs");
    assert!(!runs.is_empty(), "dedup runs on S3");
}

#[test]
fn three_nodes_on_kafka_count_every_event_once_across_a_sigkill_of_the_holder() {
    let test = "cluster::three_nodes_on_kafka";
    let Some(topic) = TestTopic::kafka(test) else {
        return;
    };
    let (stream, open) = topic.into_parts();
    three_nodes_count_every_event_once(test, &stream, open);
}

#[test]
fn three_nodes_on_fluvio_count_every_event_once_across_a_sigkill_of_the_holder() {
    let test = "cluster::three_nodes_on_fluvio";
    let Some(topic) = TestTopic::fluvio(test) else {
        return;
    };
    let (stream, open) = topic.into_parts();
    three_nodes_count_every_event_once(test, &stream, open);
}

// Proves a standby runs SQL itself: the holder only sends the files and live rows of the
// tables the text names (its `metron_sql_tables_sent_total` counts them, its
// `metron_sql_queries_total` stays 0), and the standby's answer counts both the events in
// checkpointed Parquet on S3 and those the holder has read since (with an hour between
// checkpoints, only in its memory), exactly as the holder's own answer does. A body the API
// refuses is still the holder's refusal.
#[test]
fn a_standby_runs_sql_itself_over_the_holders_files_and_live_rows() {
    let test = "cluster::a_standby_runs_sql_itself";
    let Some(TestTopic { stream, .. }) = TestTopic::kafka(test) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let Some(cluster) = cluster(test, &runtime, &stream, "1h") else {
        return;
    };
    let start = |config: &str| {
        TestServer::builder()
            .with_config(config)
            .with_env("RUST_BACKTRACE", "0")
            .with_env("METRON_FAILPOINTS", "")
            .start()
    };
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 7_200, 0).expect("time");
    // The first events go to Parquet on S3 with the checkpoint of a clean stop. The holder
    // runs one SQL query at a time (so that its refusal can be shown below), the standby 4.
    let mut a = start(&format!("{}sql:\n  concurrentMax: 1\n", cluster.config));
    // A new holder takes the checkpoints over with a manifest of its own (here the empty one,
    // at 1): a late manifest of an earlier holder cannot follow it.
    assert_eq!(gauge(&a, "metron_checkpoint_epoch"), Some(1));
    let first = sum_batch("f", 0, 100, t0);
    a.ingest_batch(&first.events).expect_status(204);
    wait_for_total(&a, "calls", first.sum);
    a.terminate().expect("a stops cleanly");
    a.try_restart().expect("a restarts");
    assert!(!standing_by(&a), "a holds the stream again");
    assert_eq!(
        gauge(&a, "metron_checkpoint_epoch"),
        Some(3),
        "2 was the clean stop's checkpoint, 3 the copy a took over with"
    );
    let b = start(&cluster.config);
    assert!(standing_by(&b), "b stands by");
    // The next ones the holder has read, but no checkpoint holds.
    let second = sum_batch("s", 100, 50, t0);
    b.ingest_batch(&second.events).expect_status(204);
    let total = first.sum + second.sum;
    wait_for_total(&a, "calls", total);

    let sql = "SELECT count(*) AS n, count(DISTINCT id) AS ids, \
               (SELECT CAST(sum(value) AS DOUBLE) FROM meter_calls) AS total FROM events";
    let here = b.sql(sql);
    assert_eq!(gauge(&b, "metron_sql_queries_total"), Some(1), "b ran it");
    assert_eq!(
        gauge(&a, "metron_sql_tables_sent_total"),
        Some(1),
        "a sent the tables"
    );
    assert_eq!(
        gauge(&a, "metron_sql_queries_total"),
        Some(0),
        "a ran no query"
    );
    assert_eq!(here["rows"], json!([[150, 150, total]]), "{here}");
    assert_eq!(here, a.sql(sql), "the holder's own answer");
    let csv = b
        .post("/api/v1/sql")
        .header("accept", "text/csv")
        .json(&json!({ "sql": "SELECT count(*) AS n FROM events" }))
        .send()
        .expect_status(200);
    assert_eq!(csv.body, "n\n150\n");
    // A body the API refuses goes to the holder, whose refusal comes back.
    let refused = b
        .post("/api/v1/sql")
        .json(&json!({ "sql": "SELECT 1", "rows": 3 }))
        .send();
    assert_problem(&refused, 400);
    let bad = b
        .post("/api/v1/sql")
        .json(&json!({ "sql": "SELEC 1" }))
        .send();
    assert_problem(&bad, 400);
    assert_eq!(gauge(&b, "metron_sql_queries_total"), Some(2));
    // Other answers are streamed through from the holder, as they are.
    let listing = "/api/v1/events?limit=100";
    let through = b.get(listing).send().expect_status(200);
    assert_eq!(through.body, a.get(listing).send().expect_status(200).body);
    assert_eq!(through.json().as_array().map(Vec::len), Some(100));

    // A holder without the tables route (an older binary: 404) runs the query itself.
    set_failpoints(&a, "sql.tables=error");
    assert_eq!(b.sql(sql), here, "forwarded, the same answer");
    assert_eq!(gauge(&b, "metron_sql_queries_total"), Some(2), "b ran none");
    assert_eq!(gauge(&a, "metron_sql_queries_total"), Some(2), "a ran it");

    // A holder whose SQL slots are all taken refuses the tables, and its 429 reaches the
    // standby's client: the first query holds a's one slot for 3 s while the second comes.
    set_failpoints(&a, "sql.tables=sleep(3000)");
    let slow = std::thread::spawn({
        let b = b.client();
        move || {
            b.post("/api/v1/sql")
                .json(&json!({ "sql": "SELECT count(*) AS n FROM events" }))
                .send()
                .status
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let busy = b
        .post("/api/v1/sql")
        .json(&json!({ "sql": "SELECT count(*) AS n FROM events" }))
        .send();
    assert_problem(&busy, 429);
    assert_eq!(slow.join().expect("the slow query"), 200);
    set_failpoints(&a, "sql.tables=off");
}
