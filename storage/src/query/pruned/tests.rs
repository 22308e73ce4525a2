use super::*;
use crate::query::QueryService;
use crate::rollups;
use metron_engine::aggregate::{AggState, Aggregation};
use metron_engine::quantity::Quantity;
use metron_engine::query::RollupRow;

const MINUTE_MS: i64 = 60_000;

fn rows(subjects: usize, minutes: i64) -> Vec<RollupRow> {
    let mut rows = Vec::new();
    for s in 0..subjects {
        for m in 0..minutes {
            rows.push(RollupRow {
                minute_ms: m * MINUTE_MS,
                subject: format!("customer-{s:03}"),
                group: vec![format!("model-{}", m % 3)],
                state: AggState::Sum(Quantity::from(s as i64 * 1000 + m)),
            });
        }
    }
    rows
}

fn keys() -> Vec<String> {
    vec!["model".to_owned()]
}

async fn write(service: &QueryService, name: &str, rows: &[RollupRow]) -> String {
    let path = crate::objects::object_path(name);
    let batch = rollups::to_batch(&keys(), rows).expect("batch");
    service
        .write_parquet(path.clone(), batch)
        .await
        .expect("write");
    path.to_string()
}

fn read_back(batches: &[RecordBatch]) -> Vec<RollupRow> {
    let mut out: Vec<RollupRow> = batches
        .iter()
        .flat_map(|b| rollups::from_batch(&keys(), Aggregation::Sum, b).expect("rows"))
        .collect();
    out.sort_by(|a, b| (&a.subject, a.minute_ms).cmp(&(&b.subject, b.minute_ms)));
    out
}

fn expected(all: &[RollupRow], scan: &RollupScan) -> Vec<RollupRow> {
    let mut out: Vec<RollupRow> = all
        .iter()
        .filter(|r| scan.lo_ms.is_none_or(|lo| r.minute_ms >= lo))
        .filter(|r| scan.hi_ms.is_none_or(|hi| r.minute_ms < hi))
        .filter(|r| scan.subjects.is_empty() || scan.subjects.contains(&r.subject))
        .cloned()
        .collect();
    out.sort_by(|a, b| (&a.subject, a.minute_ms).cmp(&(&b.subject, b.minute_ms)));
    out
}

// A pruned read returns exactly the rows a full filter would, from a sorted file (pages
// pruned) and from an unsorted one (statistics prune nothing), for several scans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_reads_return_exactly_the_selected_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (backend, root) in
        crate::objects::testing::roots(dir.path(), "pruned-reads-return-exactly-the-selected")
            .expect("roots")
    {
        eprintln!("backend: {backend}");
        let service = QueryService::new(tokio::runtime::Handle::current(), root.clone());
        let mut sorted = rows(40, 500);
        sorted.sort_by(|a, b| (&a.subject, a.minute_ms).cmp(&(&b.subject, b.minute_ms)));
        let mut shuffled = sorted.clone();
        shuffled.sort_by_key(|r| (r.minute_ms, std::cmp::Reverse(r.subject.clone())));
        let sorted_path = write(&service, "rollups/sorted.parquet", &sorted).await;
        let shuffled_path = write(&service, "rollups/shuffled.parquet", &shuffled).await;
        let one = |s: &str| BTreeSet::from([s.to_owned()]);
        let scans = [
            (
                one("customer-007"),
                Some(10 * MINUTE_MS),
                Some(300 * MINUTE_MS),
            ),
            (one("customer-039"), None, None),
            (one("customer-000"), Some(499 * MINUTE_MS), None),
            (one("nobody"), None, None),
            (
                BTreeSet::from(["customer-001".to_owned(), "customer-020".to_owned()]),
                None,
                Some(5 * MINUTE_MS),
            ),
            (
                BTreeSet::new(),
                Some(100 * MINUTE_MS),
                Some(101 * MINUTE_MS),
            ),
        ];
        for (subjects, lo_ms, hi_ms) in scans {
            for path in [&sorted_path, &shuffled_path] {
                let scan = RollupScan {
                    paths: vec![path.clone()],
                    lo_ms,
                    hi_ms,
                    subjects: subjects.clone(),
                    // What a SUM meter's query leaves out.
                    skip: rollups::unused_columns(Aggregation::Sum)
                        .iter()
                        .map(|c| (*c).to_owned())
                        .collect(),
                };
                let got = service.scan_rollups(scan.clone()).await.expect("scan");
                assert!(
                    got.iter().all(|b| b.column_by_name("uniques").is_none()),
                    "projected"
                );
                assert_eq!(
                    read_back(&got),
                    expected(&sorted, &scan),
                    "{path} {subjects:?} {lo_ms:?} {hi_ms:?}"
                );
            }
        }
    }
}

// In a file sorted by (subject, minute) one subject's rows are a few pages: the plan
// selects far fewer rows than the file holds; in an unsorted file it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorted_files_prune_to_a_few_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (backend, root) in
        crate::objects::testing::roots(dir.path(), "sorted-files-prune-to-a-few-pages")
            .expect("roots")
    {
        eprintln!("backend: {backend}");
        let service = QueryService::new(tokio::runtime::Handle::current(), root.clone());
        let mut sorted = rows(40, 500);
        sorted.sort_by(|a, b| (&a.subject, a.minute_ms).cmp(&(&b.subject, b.minute_ms)));
        let path = write(&service, "rollups/sorted.parquet", &sorted).await;
        let footers = Footers::new(1 << 20);
        let store = root.store();
        let footer = footers
            .get(&store, &object_path(&path))
            .await
            .expect("footer");
        let scan = RollupScan {
            paths: vec![path.clone()],
            subjects: BTreeSet::from(["customer-010".to_owned()]),
            ..RollupScan::default()
        };
        let plan = plan(footer.metadata.metadata(), &scan).expect("a plan");
        let selection = plan.selection.expect("pages pruned");
        let selected = selection.row_count();
        assert!(selected >= 500, "at least the subject's rows: {selected}");
        assert!(
            selected <= 500 + 2 * crate::query::PAGE_ROWS,
            "a few pages: {selected}"
        );
        assert_eq!(footers.usage().0, 1);
        footers.forget(&path);
        assert_eq!(footers.usage(), (0, 0), "forgotten");
    }
}

// The cache keeps within its byte budget, dropping the least recently used file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_footer_cache_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (backend, root) in
        crate::objects::testing::roots(dir.path(), "the-footer-cache-is-bounded").expect("roots")
    {
        eprintln!("backend: {backend}");
        let service = QueryService::new(tokio::runtime::Handle::current(), root.clone());
        let small = rows(2, 10);
        let mut paths = Vec::new();
        for i in 0..4 {
            paths.push(write(&service, &format!("rollups/f{i}.parquet"), &small).await);
        }
        let store = root.store();
        let probe = Footers::new(usize::MAX);
        probe
            .get(&store, &object_path(&paths[0]))
            .await
            .expect("footer");
        let one = probe.usage().1;
        let footers = Footers::new(one * 2 + one / 2);
        for path in &paths[..2] {
            footers
                .get(&store, &object_path(path))
                .await
                .expect("footer");
        }
        footers
            .get(&store, &object_path(&paths[0]))
            .await
            .expect("footer");
        footers
            .get(&store, &object_path(&paths[2]))
            .await
            .expect("footer");
        let (files, bytes) = footers.usage();
        assert_eq!(files, 2);
        assert!(bytes <= one * 2 + one / 2);
        assert!(footers.lookup(&paths[0]).is_some(), "recently used stays");
        assert!(
            footers.lookup(&paths[1]).is_none(),
            "least recently used goes"
        );
    }
}
