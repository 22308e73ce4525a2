use super::*;
use crate::events;
use crate::paths;
use metron_engine::event::{IngestedEvent, parse_event};

fn event(id: usize) -> IngestedEvent {
    let e = parse_event(
        serde_json::json!({"id": id.to_string(), "source": "s", "type": "t", "subject": "c", "time": "2024-01-01T00:00:00Z"}),
        chrono::Utc::now(),
    )
    .expect("event");
    IngestedEvent {
        namespace: "default".into(),
        ingested_at: chrono::Utc::now(),
        event: e,
    }
}

// A scan over many files returns the rows of every file, and SQL sees files plus live rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_read_every_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (backend, root) in
        crate::objects::testing::roots(dir.path(), "scans-read-every-file").expect("roots")
    {
        eprintln!("backend: {backend}");
        let service = QueryService::new(tokio::runtime::Handle::current(), root.clone());
        let day = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap_or_default();
        let mut urls = Vec::new();
        for file in 0..10u64 {
            let rows: Vec<IngestedEvent> = (0..3).map(|i| event(file as usize * 10 + i)).collect();
            let path = paths::event_file("default", day, file + 1, (file % 2) as u32, 0);
            service
                .write_parquet(path.clone(), events::to_batch(&rows).expect("batch"))
                .await
                .expect("write");
            urls.push(root.url_of(&path));
        }
        let range = TimeRange {
            column: "time",
            lo: None,
            hi: None,
            micros: true,
        };
        let batches = service
            .scan(events::schema(), urls.clone(), range, None, Vec::new())
            .await
            .expect("scan");
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 30);
        let live = events::to_batch(&[event(999)]).expect("batch");
        let answer = service
            .sql(SqlRequest {
                tables: vec![SqlTable {
                    name: "events".into(),
                    schema: events::schema(),
                    urls,
                    live: vec![live],
                }],
                sql: "SELECT count(*) AS n FROM events".into(),
                row_limit: 10,
                timeout: Duration::from_secs(30),
            })
            .await
            .expect("sql");
        let n = answer.batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .map(|a| a.value(0));
        assert_eq!(n, Some(31));
        let denied = service
            .sql(SqlRequest {
                tables: Vec::new(),
                sql: "COPY (SELECT 1) TO '/tmp/x.csv'".into(),
                row_limit: 10,
                timeout: Duration::from_secs(30),
            })
            .await;
        assert!(matches!(denied, Err(Error::Sql(_))), "COPY is rejected");
    }
}

// Proves merge_parquet keeps every row of every input, in order, streaming the inputs of
// the current schema and filling the columns an older file lacks with nulls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_parquet_streams_inputs_and_fills_older_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (backend, root) in
        crate::objects::testing::roots(dir.path(), "merge-parquet-streams-inputs-and-fills-o")
            .expect("roots")
    {
        eprintln!("backend: {backend}");
        let service = QueryService::new(tokio::runtime::Handle::current(), root.clone());
        let day = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap_or_default();
        let mut inputs = Vec::new();
        // Two current files, the second larger than one streamed batch.
        for (file, n) in [(1u64, 5usize), (2, PAGE_ROWS * 8 + 7)] {
            let rows: Vec<IngestedEvent> =
                (0..n).map(|i| event(file as usize * 100_000 + i)).collect();
            let path = paths::event_file("default", day, file, 0, 0);
            service
                .write_parquet(path.clone(), events::to_batch(&rows).expect("batch"))
                .await
                .expect("write");
            inputs.push(path);
        }
        // An older file: the current schema without its last column.
        let full = events::to_batch(&[event(900_000), event(900_001)]).expect("batch");
        let kept = full.num_columns() - 1;
        let older = full
            .project(&(0..kept).collect::<Vec<_>>())
            .expect("project");
        let path = paths::event_file("default", day, 3, 0, 0);
        service
            .write_parquet(path.clone(), older)
            .await
            .expect("write");
        inputs.push(path);

        let merged = paths::event_file("default", day, 4, 0, 1);
        let rows = service
            .merge_parquet(events::schema(), inputs, merged.clone())
            .await
            .expect("merge");
        let expected = 5 + PAGE_ROWS * 8 + 7 + 2;
        assert_eq!(rows, expected as u64);
        let batches = service
            .scan(
                events::schema(),
                vec![root.url_of(&merged)],
                TimeRange::everything(),
                None,
                Vec::new(),
            )
            .await
            .expect("scan");
        let all = datafusion::arrow::compute::concat_batches(&events::schema(), &batches)
            .expect("concat");
        assert_eq!(all.num_rows(), expected);
        let back = events::from_batch(&all).expect("events");
        let ids: Vec<&str> = back.iter().map(|e| e.event.id.as_str()).collect();
        assert_eq!(ids[0], "100000");
        assert_eq!(ids[5], "200000");
        assert_eq!(ids[expected - 2..], ["900000", "900001"]);
        let last = all.column(kept);
        assert!(
            last.is_null(expected - 2) && last.is_null(expected - 1),
            "the older file's missing column reads as null"
        );
    }
}

// Proves the SQL slots bound queries at once: with `concurrentMax` 1, a held slot makes the
// next `try_sql_slot` and the next query answer Busy, and dropping it frees the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_slots_bound_queries_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = ObjectRoot::local(dir.path().to_path_buf()).expect("root");
    let limits = SqlLimits {
        concurrent_max: 1,
        ..SqlLimits::default()
    };
    let service = QueryService::new(tokio::runtime::Handle::current(), root)
        .with_sql(tokio::runtime::Handle::current(), limits);
    let held = service.try_sql_slot().expect("a free slot");
    assert!(matches!(service.try_sql_slot(), Err(Error::Busy(1))));
    let request = SqlRequest {
        tables: Vec::new(),
        sql: "SELECT 1".into(),
        row_limit: 10,
        timeout: Duration::from_secs(10),
    };
    assert!(matches!(
        service.sql(request.clone()).await,
        Err(Error::Busy(1))
    ));
    drop(held);
    assert!(service.sql(request).await.is_ok());
}
