//! Parquet and checkpoints on S3: the server with `storage.url: s3://...` against the
//! S3-compatible server of `METRON_TEST_S3_ENDPOINT` (moto, started by `./scripts/test`).

use crate::helpers::*;
use crate::server::*;
use chrono::{DateTime, Duration, Utc};
use metron_storage::objects::testing::{self, BUCKET, ENDPOINT_VAR};
use metron_storage::objects::{ObjectRoot, object_path};
use metron_storage::{manifest, paths};
use serde_json::{Value, json};

/// The endpoint, or `None` (printed as a skip) outside CI; in CI a missing endpoint fails.
pub(crate) fn endpoint(test: &str) -> Option<String> {
    match std::env::var(ENDPOINT_VAR) {
        Ok(endpoint) if !endpoint.is_empty() => Some(endpoint),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but {ENDPOINT_VAR} is not: {test} must run against S3")
        }
        _ => {
            eprintln!("{test}: skipped ({ENDPOINT_VAR} is not set; ./scripts/test starts moto)");
            None
        }
    }
}

#[test]
fn parquet_and_checkpoints_on_s3_answer_after_a_restart() {
    // Ingest with the objects on S3, wait for checkpoints, restart: the meter query and SQL
    // answer from the Parquet files and the manifest on S3; nothing lands in
    // <data_dir>/objects.
    let Some(endpoint) = endpoint("parquet_and_checkpoints_on_s3_answer_after_a_restart") else {
        return;
    };
    testing::create_bucket(&endpoint, BUCKET).expect("bucket");
    let prefix = format!("e2e-{}", new_id());
    let config = format!(
        r#"
meters:
  - slug: calls
    eventType: call
    aggregation: SUM
    valueProperty: $.n
partitions: 2
checkpointInterval: 500ms
storage:
  url: s3://{BUCKET}/{prefix}
  endpoint: {endpoint}
  region: us-east-1
  accessKeyId: test
  secretAccessKey: test
  allowHttp: true
"#
    );
    let mut server = TestServer::start_with_config(&config);
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 86_400, 0).expect("time");
    let events: Vec<Value> = (0..200)
        .map(|i| {
            cloud_event(
                &format!("s3-{i}"),
                "s3-test",
                "call",
                &format!("s{}", i % 4),
                t0 + Duration::seconds(i),
                json!({ "n": i }),
            )
        })
        .collect();
    server.ingest_batch(&events).expect_status(204);
    let sum: f64 = (0..200).map(f64::from).sum();
    wait_for_total(&server, "calls", sum);
    // A checkpoint on S3 covers every event: its manifest names event files of 200 rows.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let root =
        ObjectRoot::s3(BUCKET, &prefix, &testing::s3_options(&endpoint, None)).expect("root");
    let latest = eventually(VISIBLE, || {
        let latest = runtime
            .block_on(manifest::load_latest(&root, 2))
            .map_err(|e| e.to_string())?;
        match latest {
            Some(m) if m.event_files.iter().map(|f| f.rows).sum::<u64>() == 200 => Ok(m),
            other => Err(format!("newest manifest on S3: {other:?}")),
        }
    });
    let listed = runtime.block_on(root.list("")).expect("list");
    assert!(!latest.rollup_files.is_empty(), "{latest:?}");
    assert!(!latest.event_files.is_empty(), "{latest:?}");
    let listed: Vec<String> = listed.iter().map(ToString::to_string).collect();
    for file in latest
        .rollup_files
        .iter()
        .map(|f| &f.path)
        .chain(latest.event_files.iter().map(|f| &f.path))
    {
        assert!(listed.contains(file), "{file} not on S3: {listed:?}");
    }
    assert!(
        listed
            .iter()
            .any(|p| paths::manifest_epoch(&object_path(p)) == Some(latest.epoch)),
        "{listed:?}"
    );
    assert!(
        !server.data_dir().join("objects").exists(),
        "nothing under <data_dir>/objects"
    );

    // SIGKILL: no final checkpoint; the new process starts from the manifest on S3.
    server.kill();
    server.restart();
    let row = wait_for_total(&server, "calls", sum);
    assert_eq!(row.value, sum);
    let by_subject =
        parse_query(&server.query("calls", &[("groupBy", "subject".into())])).expect("query");
    assert_eq!(by_subject.data.len(), 4, "{by_subject:?}");
    let answer =
        server.sql("SELECT count(*) AS n, sum(CAST(subject = 's1' AS INT)) AS s1 FROM events");
    assert_eq!(answer["rows"], json!([[200, 50]]), "{answer}");
    assert!(!server.data_dir().join("objects").exists());
}
