//! The event stream on Kafka: the server with `stream.url: kafka://...` against the brokers of
//! `METRON_TEST_KAFKA_BROKERS` (tansu, started by `./scripts/test`).

use crate::helpers::*;
use crate::server::*;
use chrono::{DateTime, Utc};
use metron_connectors::EventStream;
use metron_connectors::stream::testing;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

#[test]
fn events_go_through_a_kafka_topic_and_count_once_across_a_sigkill() {
    let test = "kafka::events_go_through_a_kafka_topic_and_count_once_across_a_sigkill";
    let Some(topic) = TestTopic::kafka(test) else {
        return;
    };
    let (stream, open) = topic.into_parts();
    count_once_across_a_sigkill(&stream, open);
}

/// Ingests through the stream `stream` (the lines of the config's `stream:` section) with 3
/// partitions, SIGKILLs the server mid-ingest, restarts it, and resends what was not
/// acknowledged and a batch that was: the total counts every event exactly once, and the
/// records are in the topic `open` opens (the embedded log was never made).
pub(crate) fn count_once_across_a_sigkill(
    stream: &str,
    open: impl FnOnce(&tokio::runtime::Runtime) -> Arc<dyn EventStream>,
) {
    let config = format!(
        r#"
meters:
  - slug: calls
    eventType: call
    aggregation: SUM
    valueProperty: $.n
partitions: 3
checkpointInterval: 300ms
stream:
{stream}"#
    );
    let mut server = TestServer::start_with_config(&config);
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 86_400, 0).expect("time");
    let mut total = 0.0;
    let mut next = 0;
    let first = sum_batch("k", next, 300, t0);
    server.ingest_batch(&first.events).expect_status(204);
    total += first.sum;
    next += 300;
    wait_for_total(&server, "calls", total);

    // Batches from a second thread while the server is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (client, stop) = (server.client(), stop.clone());
        thread::spawn(move || {
            let (mut acked, mut cut) = (Vec::new(), Vec::new());
            let mut id = next;
            while !stop.load(Ordering::SeqCst) {
                let b = sum_batch("k", id, 20, t0);
                id += 20;
                match client.try_ingest_batch(&b.events) {
                    Ok(resp) if resp.status == 204 => acked.push(b),
                    Ok(resp) => panic!("a valid batch got {}: {}", resp.status, resp.body),
                    Err(_) => {
                        cut.push(b);
                        break;
                    }
                }
            }
            (acked, cut, id)
        })
    };
    thread::sleep(Duration::from_millis(400));
    server.kill();
    stop.store(true, Ordering::SeqCst);
    let (acked, cut, end) = sender.join().expect("sender");
    assert!(
        !acked.is_empty(),
        "some batches were acknowledged before the kill"
    );
    println!(
        "killed with {} batches acknowledged and {} cut",
        acked.len(),
        cut.len()
    );
    total += acked.iter().chain(&cut).map(|b| b.sum).sum::<f64>();

    server.restart();
    for b in &cut {
        server.ingest_batch(&b.events).expect_status(204);
    }
    // A client's retry of a batch that was acknowledged: dedup drops it.
    server.ingest_batch(&first.events).expect_status(204);
    let row = wait_for_total(&server, "calls", total);
    assert_eq!(row.value, total);
    let answer = server.sql("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM events");
    let distinct = end as u64;
    assert_eq!(answer["rows"], json!([[distinct, distinct]]), "{answer}");

    // The records are in the topic: every event sent at least once, the resent batch twice.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let stream = open(&runtime);
    let records: u64 = (0..3)
        .map(|p| stream.end_offset(p).expect("end offset"))
        .sum();
    assert!(
        records >= distinct + 300,
        "{records} records in the topic for {distinct} events and a resent batch of 300"
    );
    assert!(
        !server.data_dir().join("stream").exists(),
        "the embedded log is not used"
    );
}

#[test]
fn ingest_answers_503_when_the_broker_stops_answering() {
    // A broker of this test's own, frozen with SIGSTOP under a running server: produce
    // requests go unanswered until the request timeout, and ingest answers 503 (retry
    // later), not 500. After SIGCONT the same batch is taken.
    let test = "kafka::ingest_answers_503_when_the_broker_stops_answering";
    let Some(tansu) = testing::tansu_binary(test) else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listener = format!("tcp://127.0.0.1:{port}");
    let mut broker = std::process::Command::new(tansu)
        .args([
            "broker",
            "--listener-url",
            &listener,
            "--advertised-listener-url",
            &listener,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting tansu");
    eventually(VISIBLE, || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .map(drop)
            .map_err(|e| format!("tansu on port {port}: {e}"))
    });
    let config = format!(
        "meters:\n  - slug: calls\n    eventType: call\n    aggregation: COUNT\npartitions: 1\n\
         stream:\n  url: kafka://127.0.0.1:{port}/events\n  requestTimeout: 1s\n  fetchWaitMax: 50ms\n"
    );
    let server = TestServer::start_with_config(&config);
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 3_600, 0).expect("time");
    server
        .ingest_batch(&sum_batch("k", 0, 10, t0).events)
        .expect_status(204);
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &broker.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {name}");
    };
    signal("-STOP");
    let second = sum_batch("k", 10, 10, t0);
    let resp = server.ingest_batch(&second.events);
    signal("-CONT");
    let detail = assert_problem(&resp, 503);
    assert!(detail.contains("event stream is unavailable"), "{detail}");
    eventually(VISIBLE, || {
        match server.ingest_batch(&second.events).status {
            204 => Ok(()),
            other => Err(format!("ingest after SIGCONT answered {other}")),
        }
    });
    wait_for_total(&server, "calls", 20.0);
    let _ = broker.kill();
    let _ = broker.wait();
}

#[test]
fn a_server_on_an_unreachable_broker_fails_to_start_and_says_why() {
    // Nothing listens on port 1: the start fails within the request timeout, naming the cause.
    let work = tempfile::tempdir().expect("temporary directory");
    let config = work.path().join("config.yaml");
    std::fs::write(
        &config,
        "stream:\n  url: kafka://127.0.0.1:1/events\n  requestTimeout: 500ms\n",
    )
    .expect("config");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_metron"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(work.path().join("data"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running metron");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("event stream is unavailable while connecting to the brokers")
            && stderr.contains("127.0.0.1:1"),
        "{stderr}"
    );
}
