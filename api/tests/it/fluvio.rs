//! The event stream on Fluvio: the server with `stream.url: fluvio://...` against the cluster
//! `METRON_FLUVIO_ENDPOINT` names (a `fluvio-run` built from source, started by
//! `./scripts/test` when it finds one; see `connectors/README.md`).

use crate::helpers::*;
use crate::kafka::count_once_across_a_sigkill;
use crate::server::*;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use metron_connectors::stream::testing;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn events_go_through_a_fluvio_topic_and_count_once_across_a_sigkill() {
    let test = "fluvio::events_go_through_a_fluvio_topic_and_count_once_across_a_sigkill";
    let Some(topic) = TestTopic::fluvio(test) else {
        return;
    };
    let (stream, open) = topic.into_parts();
    count_once_across_a_sigkill(&stream, open);
}

#[test]
fn a_server_pointed_at_no_cluster_exits_and_names_the_cause() {
    // Nothing listens on port 1 of loopback.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("metron.yaml");
    std::fs::write(
        &config,
        "stream:\n  url: fluvio://127.0.0.1:1/events\n  requestTimeout: 500ms\n",
    )
    .expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_metron"))
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run metron");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("connecting to the cluster"),
        "the cause is named: {stderr}"
    );
}

/// A Fluvio cluster of one test's own (`scripts/fluvio-cluster`), stopped on drop.
struct OwnCluster {
    dir: tempfile::TempDir,
    endpoint: String,
}

impl OwnCluster {
    fn start(fluvio_run: &Path) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fluvio-cluster");
        let mut last = String::new();
        // The script needs four ports from a base (the SC's two, the SPU's two): try a few.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let base = 20_000 + rand::random::<u16>() % 40_000;
            let output = Command::new(&script)
                .arg("start")
                .arg(fluvio_run)
                .arg(dir.path())
                .arg(base.to_string())
                .output()
                .expect("running scripts/fluvio-cluster");
            if output.status.success() {
                let endpoint = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                return Self { dir, endpoint };
            }
            last = String::from_utf8_lossy(&output.stderr).into_owned();
            let _ = Command::new(&script).arg("stop").arg(dir.path()).status();
        }
        panic!("no Fluvio cluster started: {last}");
    }

    /// The SPU's process id.
    fn spu_pid(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pids"))
            .expect("the pids file")
            .split_whitespace()
            .nth(1)
            .expect("the SPU's pid")
            .to_owned()
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fluvio-cluster");
        let _ = Command::new(script)
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn ingest_answers_503_while_the_spu_is_frozen_and_takes_the_retry_after() {
    // The SPU of a cluster of this test's own, frozen with SIGSTOP under a running server:
    // appends go unanswered until the request timeout, and ingest answers 503 (retry later),
    // not 500. After SIGCONT the same batch is taken again. The append that timed out may be
    // written too once the SPU runs (it was sent before the timeout), so the total also
    // checks that the dedup index drops such a copy.
    let test = "fluvio::ingest_answers_503_while_the_spu_is_frozen_and_takes_the_retry_after";
    let Some(fluvio_run) = testing::fluvio_run_binary(test) else {
        return;
    };
    let cluster = OwnCluster::start(&fluvio_run);
    let config = format!(
        "meters:\n  - slug: calls\n    eventType: call\n    aggregation: COUNT\npartitions: 1\n\
         stream:\n  url: fluvio://{}/events\n  requestTimeout: 1s\n",
        cluster.endpoint
    );
    let server = TestServer::start_with_config(&config);
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 3_600, 0).expect("time");
    let batch = |first: usize| -> Vec<serde_json::Value> {
        (first..first + 10)
            .map(|i| {
                cloud_event(
                    &format!("f-{i}"),
                    "fluvio-test",
                    "call",
                    "s",
                    t0 + ChronoDuration::seconds(i as i64),
                    json!({}),
                )
            })
            .collect()
    };
    server.ingest_batch(&batch(0)).expect_status(204);
    let spu = cluster.spu_pid();
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([name, &spu])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {name}");
    };
    signal("-STOP");
    let resp = server.ingest_batch(&batch(10));
    signal("-CONT");
    let detail = assert_problem(&resp, 503);
    assert!(detail.contains("unavailable"), "{detail}");
    eventually(VISIBLE, || match server.ingest_batch(&batch(10)).status {
        204 => Ok(()),
        other => Err(format!("ingest after SIGCONT answered {other}")),
    });
    wait_for_total(&server, "calls", 20.0);
}
