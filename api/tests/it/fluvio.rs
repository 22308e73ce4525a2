//! The event stream on Fluvio: the server with `stream.url: fluvio://...` against the cluster
//! `METRON_FLUVIO_ENDPOINT` names (a `fluvio-run` built from source, started by
//! `./scripts/test` when it finds one; see `connectors/README.md`).

use crate::kafka::count_once_across_a_sigkill;
use metron_connectors::stream::testing;
use metron_connectors::{FluvioConfig, FluvioStream};
use std::sync::Arc;

#[test]
fn events_go_through_a_fluvio_topic_and_count_once_across_a_sigkill() {
    let test = "fluvio::events_go_through_a_fluvio_topic_and_count_once_across_a_sigkill";
    let Some(endpoint) = testing::fluvio_endpoint(test) else {
        return;
    };
    let topic = testing::unique_topic();
    let stream = format!("  url: fluvio://{endpoint}/{topic}\n  requestTimeout: 10s\n");
    count_once_across_a_sigkill(&stream, |runtime| {
        let stream = runtime
            .block_on(FluvioStream::connect(FluvioConfig {
                endpoint,
                topic,
                partitions: 3,
                ..FluvioConfig::default()
            }))
            .expect("the topic exists with 3 partitions");
        Arc::new(stream)
    });
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
