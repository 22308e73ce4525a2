//! Partition leases: two servers on one Kafka topic and one PostgreSQL catalog. Only one reads
//! the topic's partitions at a time; the other stands by (taking events, forwarding the rest to
//! the holder) until the holder stops cleanly (its leases are released) or dies and its leases
//! expire, and then takes over.

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

/// The name the config's Kafka topic has in the leases (`kafka/<topic>`).
fn leased_stream(config: &str) -> String {
    let topic = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("url: kafka://"))
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, topic)| topic.to_owned())
        .expect("the topic");
    format!("kafka/{topic}")
}

/// A server on the config; a refusal's log shows its cause, not a backtrace.
fn start(config: &str) -> TestServer {
    TestServer::builder()
        .with_config(config)
        .with_env("RUST_BACKTRACE", "0")
        .start()
}

#[test]
fn a_second_node_stands_by_until_the_first_stops_and_then_reads_every_event_once() {
    let test = "leases::a_second_node_stands_by_until_the_first_stops";
    // A lease that outlives the test: only a release lets the second node take over.
    let Some((_db, config)) = setup(test, "10m") else {
        return;
    };
    let mut a = start(&config);
    a.ingest_batch(&events(0, 40)).expect_status(204);
    wait_for_total(&a, "calls", 40.0);
    let a_id = node_id(&a);

    // The second node stands by: it takes events (into the topic, which the first reads) and
    // forwards reads to the first, whose id its readiness names.
    let b = start(&config);
    let b_id = node_id(&b);
    assert_ne!(a_id, b_id, "each data directory is its own node");
    assert!(standing_by(&b));
    assert_eq!(gauge(&a, "metron_standby"), Some(0), "the holder shows 0");
    let ready = b.get("/readyz").send().expect_status(200).body;
    assert!(ready.contains(&a_id), "{ready}");
    // A request that was forwarded once is never forwarded again (no loops between nodes
    // that disagree about the holder): 503, retry.
    let looped = b
        .get("/api/v1/meters")
        .header("metron-forwarded-by", "another-node")
        .send();
    assert_problem(&looped, 503);
    b.ingest_batch(&events(40, 5)).expect_status(204);
    wait_for_total(&b, "calls", 45.0);
    wait_for_total(&a, "calls", 45.0);
    // Each node here has an object root of its own (its data directory): the standby cannot
    // read the holder's files, so its SQL goes to the holder, and the answer is the holder's.
    let sql = "SELECT count(*) AS n FROM events";
    assert_eq!(b.sql(sql), a.sql(sql));
    assert_eq!(b.sql(sql)["rows"], json!([[45]]));
    assert_eq!(
        gauge(&b, "metron_sql_queries_total"),
        Some(0),
        "b ran no query"
    );
    assert_eq!(gauge(&a, "metron_sql_queries_total"), Some(3), "a ran them");

    // A clean stop gives the leases back: the second node takes over at once, reads the topic
    // (its own data directory has no checkpoint) and counts every event once.
    a.terminate().expect("a stops cleanly");
    eventually(VISIBLE, || {
        if standing_by(&b) {
            Err("b still stands by".to_owned())
        } else {
            Ok(())
        }
    });
    b.ingest_batch(&events(45, 5)).expect_status(204);
    wait_for_total(&b, "calls", 50.0);

    // The first node, restarted on its own data directory, now stands by, forwarding to b.
    a.try_restart().expect("a restarts");
    assert!(standing_by(&a));
    let ready = a.get("/readyz").send().expect_status(200).body;
    assert!(ready.contains(&b_id), "{ready}");
    wait_for_total(&a, "calls", 50.0);

    // The holder killed, its 10-minute leases live on: the standby still takes events (into
    // the topic), and what it would forward answers 503 with Retry-After, not an error page.
    let mut b = b;
    b.kill();
    a.ingest_batch(&events(50, 5)).expect_status(204);
    let resp = a.query("calls", &[]);
    let detail = assert_problem(&resp, 503);
    assert!(detail.contains(&b_id), "{detail}");
    assert!(resp.header("retry-after").is_some(), "{resp}");
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
    let b = start(&config);
    // A node of role `api` only ever stands by: it never takes the leases over.
    let c = TestServer::builder()
        .with_config(&config)
        .with_env("RUST_BACKTRACE", "0")
        .with_env("METRON_ROLE", "api")
        .start();
    // Renewed every third of the 2 s: a live node's leases never lapse.
    std::thread::sleep(Duration::from_secs(3));
    assert!(standing_by(&b), "b still stands by after 3 s");

    a.kill();
    // SIGKILL releases nothing: b takes over once the leases expire.
    eventually(Duration::from_secs(30), || {
        if standing_by(&b) {
            Err("b still stands by".to_owned())
        } else {
            Ok(())
        }
    });
    b.ingest_batch(&events(30, 5)).expect_status(204);
    wait_for_total(&b, "calls", 35.0);
    assert!(standing_by(&c), "the api node still stands by");
    c.ingest_batch(&events(35, 5)).expect_status(204);
    wait_for_total(&c, "calls", 40.0);
    // The killed node, restarted on its data directory, stands by while b reads.
    a.try_restart().expect("a restarts");
    assert!(standing_by(&a));
    let ready = a.get("/readyz").send().expect_status(200).body;
    assert!(ready.contains(&node_id(&b)), "{ready}");
}

#[test]
fn a_standby_answers_429_while_the_holder_is_too_far_behind() {
    let test = "leases::a_standby_answers_429_while_the_holder_is_too_far_behind";
    let Some((_db, config)) = setup(test, "2s") else {
        return;
    };
    let config = format!("{config}backlogRecordsMax: 20\n");
    // The holder stops reading (a failpoint): the topic's backlog only grows.
    let a = TestServer::builder()
        .with_config(&config)
        .with_env("RUST_BACKTRACE", "0")
        .with_env("METRON_FAILPOINTS", "partition.read=error")
        .start();
    let b = start(&config);
    assert!(standing_by(&b));
    // The standby takes events until the holder's renewals (every 2/3 s) report
    // that it read none of them, with more than 20 waiting in a partition: then 429.
    let mut next = 0;
    let mut taken = 0;
    let refused = eventually(VISIBLE, || {
        let resp = b.ingest_batch(&events(next, 30));
        next += 30;
        match resp.status {
            204 => {
                taken += 30;
                Err("taken".to_owned())
            }
            429 => Ok(resp),
            _ => panic!("a valid batch got {resp}"),
        }
    });
    assert!(taken >= 30, "the first batches were taken");
    assert!(refused.header("retry-after").is_some(), "{refused}");
    assert!(refused.body.contains("behind"), "{refused}");

    // The holder reads again: once it has reported so, the standby takes events again.
    set_failpoints(&a, "partition.read=off");
    eventually(VISIBLE, || {
        let resp = b.ingest_batch(&events(next, 5));
        match resp.status {
            204 => Ok(()),
            429 => Err("still refused".to_owned()),
            _ => panic!("a valid batch got {resp}"),
        }
    });
    taken += 5;
    wait_for_total(&b, "calls", taken as f64);
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
    let stream = leased_stream(&config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let catalog = Catalog::connect(db.url()).await.expect("catalog");
        let later = Utc::now() + ChronoDuration::hours(1);
        catalog
            .acquire_leases(
                &stream,
                &[0, 1],
                "intruder",
                None,
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

/// A TCP proxy to `upstream` that can be cut: its connections closed, new ones refused.
struct Proxy {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(upstream: String) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy port");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("proxy address").port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop, conns) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            // Returning drops the listener: connections are refused from then on.
            while !stop.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                if let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
                    client.try_clone(),
                    server.try_clone(),
                    client.try_clone(),
                    server.try_clone(),
                ) {
                    if let Ok(mut list) = conns.lock() {
                        list.push(c3);
                        list.push(s3);
                    }
                    pipe(client, s2);
                    pipe(server, c2);
                }
            }
        });
        Self { port, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(list) = self.open.lock() {
            for stream in list.iter() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

#[test]
fn a_holder_cut_off_from_the_catalog_stops_before_its_leases_can_be_taken() {
    // The holder reaches PostgreSQL through a proxy, which is cut: its renewals fail. It must
    // stop before its leases run out, so that the standby, which then takes them, is never a
    // second reader beside it.
    let test = "leases::a_holder_cut_off_from_the_catalog_stops_before_its_leases_can_be_taken";
    let Some((db, config)) = setup(test, "3s") else {
        return;
    };
    let url = db.url().to_owned();
    let host_port = url
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(hp, _)| hp.to_owned())
        .expect("host:port in the database URL");
    let proxy = Proxy::start(host_port.clone());
    let a_config = config.replace(&host_port, &format!("127.0.0.1:{}", proxy.port));
    assert_ne!(a_config, config);
    let mut a = start(&a_config);
    a.ingest_batch(&events(0, 20)).expect_status(204);
    wait_for_total(&a, "calls", 20.0);
    let b = start(&config);
    assert!(standing_by(&b));

    proxy.cut();
    eventually(Duration::from_secs(60), || {
        let b_holds = !standing_by(&b);
        let a_alive = a.is_running();
        assert!(
            !(b_holds && a_alive),
            "two holders at once; a's log:\n{}",
            a.log_tail(20)
        );
        if b_holds {
            Ok(())
        } else {
            Err("b still stands by".to_owned())
        }
    });
    let status = a.wait_exit(Duration::from_secs(5)).expect("a stopped");
    assert!(!status.success(), "{status}");
    let log = a.log_tail(40);
    assert!(
        log.contains("could not be renewed before they expire"),
        "{log}"
    );
    b.ingest_batch(&events(20, 5)).expect_status(204);
    wait_for_total(&b, "calls", 25.0);
}

/// The checkpoint manifests a server's local object root holds.
fn manifests(server_data: &std::path::Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(server_data.join("objects").join("checkpoints"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_holder_whose_end_is_decided_commits_no_more_checkpoints() {
    // A holder's start is held (`serve.start`) with its pipeline running: it reads the topic
    // and commits checkpoints, but the fatal error that ends it is acted on only once its HTTP
    // server is up. Another node takes its leases while a checkpoint of events it read is
    // being written (every object put takes 1.5 s): its next renewal finds the leases gone, its
    // end is decided, and that checkpoint must not be committed: the new holder reads those
    // events again.
    let test = "leases::a_holder_whose_end_is_decided_commits_no_more_checkpoints";
    let Some((db, config)) = setup(test, "2s") else {
        return;
    };
    let a_home = tempfile::tempdir().expect("a's data directory");
    let a_data = a_home.path().join("data");
    let a = {
        let (config, data) = (config.clone(), a_data.clone());
        std::thread::spawn(move || {
            TestServer::builder()
                .with_config(&config)
                .with_data_dir(data)
                .with_env(
                    "METRON_FAILPOINTS",
                    "serve.start=sleep(25000);objects.put=sleep(1500)",
                )
                .with_env("RUST_BACKTRACE", "0")
                .try_start()
        })
    };
    let stream = leased_stream(&config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let catalog = runtime
        .block_on(Catalog::connect(db.url()))
        .expect("catalog");
    // a holds the leases before it serves HTTP: b stands by and takes the events, and a's
    // pipeline reads them and commits checkpoints.
    eventually(Duration::from_secs(60), || {
        let leases = runtime
            .block_on(catalog.stream_leases(&stream))
            .map_err(|e| e.to_string())?;
        if leases.len() == 2 && leases.iter().all(|l| l.expires_at > Utc::now()) {
            Ok(())
        } else {
            Err(format!("a holds no leases yet: {leases:?}"))
        }
    });
    let b = start(&config);
    assert!(standing_by(&b));
    b.ingest_batch(&events(0, 20)).expect_status(204);
    eventually(Duration::from_secs(30), || {
        if manifests(&a_data).is_empty() {
            Err("no checkpoint from a yet".to_owned())
        } else {
            Ok(())
        }
    });
    // The next checkpoint starts within 300 ms of these events and takes seconds.
    b.ingest_batch(&events(20, 10)).expect_status(204);
    std::thread::sleep(Duration::from_millis(400));
    runtime
        .block_on(catalog.acquire_leases(
            &stream,
            &[0, 1],
            "intruder",
            None,
            Utc::now() + ChronoDuration::hours(1),
            Duration::from_secs(60),
        ))
        .expect("taken");
    // a renews every third of its 2 s lease: by now it found them gone.
    std::thread::sleep(Duration::from_millis(1_500));
    let before = manifests(&a_data);
    std::thread::sleep(Duration::from_secs(8));
    let after = manifests(&a_data);
    assert_eq!(
        before, after,
        "a committed a checkpoint after its end was decided"
    );
    let ended = a.join().expect("a's thread");
    assert!(ended.is_err(), "a started, though its leases were taken");
    runtime.block_on(catalog.close());
}
