//! Meter queries: ports of OpenMeter's e2e TestQuery (total, MINUTE/HOUR/DAY windows, subject
//! filter, POST JSON with default and explicit Accept, POST CSV byte for byte) and
//! TestQueryDSTTransition, plus group-by, filters, CSV details, subjects, group-by values and
//! parameter validation. Every test runs its own server with OpenMeter's e2e meters.

use crate::helpers::*;
use crate::server::*;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::America::Los_Angeles;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const CUSTOMER_COUNT: usize = 5;
const PATHS: [&str; 4] = ["/", "/about", "/users", "/contact"];
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

/// The TestQuery data set: for each of 4 times (t, t+1m, t+1h, t+1d, where t is a UTC midnight)
/// one event per customer (5) with duration 100 and one random method and path per time.
struct QueryFixture {
    server: TestServer,
    t: DateTime<Utc>,
    /// (time, method, path) of each group of 5 events.
    sets: Vec<(DateTime<Utc>, &'static str, &'static str)>,
}

impl QueryFixture {
    fn start() -> QueryFixture {
        // Reproducible random data, as the Go test's gofakeit.New(8675309).
        let mut rng = StdRng::seed_from_u64(8_675_309);
        let lo = Utc
            .with_ymd_and_hms(2023, 5, 6, 0, 0, 0)
            .single()
            .expect("date");
        let hi = Utc::now() + Duration::days(365);
        let secs = rng.random_range(lo.timestamp()..hi.timestamp());
        let day = DateTime::from_timestamp(secs, 0)
            .expect("time")
            .date_naive();
        let t = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();

        let times = [
            t,
            t + Duration::minutes(1),
            t + Duration::hours(1),
            t + Duration::days(1),
        ];
        let sets: Vec<_> = times
            .iter()
            .map(|&time| {
                let method = METHODS[rng.random_range(0..METHODS.len())];
                let path = PATHS[rng.random_range(0..PATHS.len())];
                (time, method, path)
            })
            .collect();
        let mut events = Vec::new();
        for &(time, method, path) in &sets {
            for c in 1..=CUSTOMER_COUNT {
                events.push(cloud_event(
                    &new_id(),
                    "my-app",
                    "query",
                    &format!("customer-{c}"),
                    time,
                    json!({ "duration_ms": "100", "method": method, "path": path }),
                ));
            }
        }
        let server = TestServer::start_with_config(E2E_CONFIG);
        server.ingest_batch(&events).expect_status(204);
        QueryFixture { server, t, sets }
    }

    /// The answer to a query without parameters once everything is visible.
    fn total(&self) -> QueryResult {
        QueryResult {
            from: None,
            to: None,
            window_size: None,
            data: vec![Row::plain(
                (CUSTOMER_COUNT * 4 * 100) as f64,
                self.t,
                self.t + Duration::days(1) + Duration::minutes(1),
            )],
        }
    }

    /// The answer to a query by UTC day once everything is visible.
    fn days(&self) -> QueryResult {
        let (t, d) = (self.t, Duration::days(1));
        windowed(
            "DAY",
            vec![
                Row::plain(1500.0, t, t + d),
                Row::plain(500.0, t + d, t + d * 2),
            ],
        )
    }

    fn wait_all_visible(&self) {
        wait_for_query(&self.server, "query", &[], &self.total());
    }
}

fn windowed(size: &str, rows: Vec<Row>) -> QueryResult {
    QueryResult {
        from: None,
        to: None,
        window_size: Some(size.to_owned()),
        data: rows,
    }
}

#[test]
fn query_total() {
    // TestQuery/Total: without parameters the answer is one row with the sum of all events,
    // windowStart = first event's minute, windowEnd = last event's minute + 1 minute, no subject,
    // groupBy {}, and no from/to/windowSize echoed.
    let f = QueryFixture::start();
    wait_for_query(&f.server, "query", &[], &f.total());
}

#[test]
fn query_window_minute() {
    // TestQuery/WindowSize/Minute: one row per minute that has events, ordered by windowStart.
    let f = QueryFixture::start();
    let t = f.t;
    let m = Duration::minutes(1);
    let expected = windowed(
        "MINUTE",
        [t, t + m, t + Duration::hours(1), t + Duration::days(1)]
            .into_iter()
            .map(|s| Row::plain(500.0, s, s + m))
            .collect(),
    );
    wait_for_query(
        &f.server,
        "query",
        &[("windowSize", "MINUTE".into())],
        &expected,
    );
}

#[test]
fn query_window_hour() {
    // TestQuery/WindowSize/Hour: t and t+1m share the first hour.
    let f = QueryFixture::start();
    let (t, h) = (f.t, Duration::hours(1));
    let expected = windowed(
        "HOUR",
        vec![
            Row::plain(1000.0, t, t + h),
            Row::plain(500.0, t + h, t + h * 2),
            Row::plain(500.0, t + Duration::days(1), t + Duration::days(1) + h),
        ],
    );
    wait_for_query(
        &f.server,
        "query",
        &[("windowSize", "HOUR".into())],
        &expected,
    );
}

#[test]
fn query_window_day() {
    // TestQuery/WindowSize/Day: UTC days (the default windowTimeZone).
    let f = QueryFixture::start();
    wait_for_query(
        &f.server,
        "query",
        &[("windowSize", "DAY".into())],
        &f.days(),
    );
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn whole_hour_queries_read_the_hourly_rollups() {
    // After a checkpoint, a query of whole UTC hours (here DAY windows) reads the meter's
    // hourly rollup files: with every minute file gone it still answers, while a MINUTE
    // query, which needs them, cannot.
    let mut f = QueryFixture::start();
    f.wait_all_visible();
    f.server.restart(); // SIGTERM writes the final checkpoint; nothing is live after it
    let files = files_under(&f.server.data_dir().join("objects/rollups"));
    let (hourly, minute): (Vec<_>, Vec<_>) = files
        .iter()
        .partition(|p| p.components().any(|c| c.as_os_str() == "hourly"));
    assert!(!hourly.is_empty(), "no hourly rollup files in {files:?}");
    assert!(!minute.is_empty(), "no minute rollup files in {files:?}");
    for path in &minute {
        std::fs::remove_file(path).expect("remove a minute file");
    }
    wait_for_query(
        &f.server,
        "query",
        &[("windowSize", "DAY".into())],
        &f.days(),
    );
    let resp = f
        .server
        .get("/api/v1/meters/query/query")
        .query("windowSize", "MINUTE")
        .send();
    assert_ne!(
        resp.status, 200,
        "a MINUTE query answered without the minute files: {resp}"
    );
}

#[test]
fn query_subject_filter() {
    // TestQuery/Subject: two subject filters group by subject; each row carries its subject
    // and that subject's total (row order is not specified without a window, so it is sorted).
    let f = QueryFixture::start();
    f.wait_all_visible();
    let t = f.t;
    let end = t + Duration::days(1) + Duration::minutes(1);
    let params = [
        ("subject", "customer-1".to_owned()),
        ("subject", "customer-2".to_owned()),
    ];
    let mut got = parse_query(&f.server.query("query", &params)).expect("subject query");
    got.data.sort_by(|a, b| a.subject.cmp(&b.subject));
    let expected = QueryResult {
        from: None,
        to: None,
        window_size: None,
        data: vec![
            Row::plain(400.0, t, end).with_subject("customer-1"),
            Row::plain(400.0, t, end).with_subject("customer-2"),
        ],
    };
    assert_eq!(got, expected);
}

#[test]
fn query_post_json() {
    // TestQuery/PostJSON: POST .../query with an empty JSON body answers JSON like the GET,
    // both without an Accept header preference and with Accept: application/json.
    let f = QueryFixture::start();
    f.wait_all_visible();
    let expected = f.total();
    for accept in [None, Some("application/json")] {
        let mut req = f.server.post("/api/v1/meters/query/query").json(&json!({}));
        if let Some(accept) = accept {
            req = req.header("Accept", accept);
        }
        let resp = req.send();
        assert_eq!(
            parse_query(&resp).expect("POST query"),
            expected,
            "Accept {accept:?}"
        );
        assert!(
            resp.content_type()
                .is_some_and(|c| c.starts_with("application/json")),
            "{resp}"
        );
    }
}

#[test]
fn query_post_csv_exact_body() {
    // TestQuery/PostCSV: POST with Accept: text/csv answers Content-Type exactly text/csv and
    // exactly "window_start,window_end,value\n<ws>,<we>,2000.000000\n".
    let f = QueryFixture::start();
    f.wait_all_visible();
    let resp = f
        .server
        .post("/api/v1/meters/query/query")
        .header("Accept", "text/csv")
        .json(&json!({}))
        .send()
        .expect_status(200);
    assert_eq!(resp.content_type(), Some("text/csv"), "{resp}");
    let ws = rfc3339(f.t);
    let we = rfc3339(f.t + Duration::days(1) + Duration::minutes(1));
    let value = format!("{:.6}", (CUSTOMER_COUNT * 4 * 100) as f64);
    assert_eq!(
        resp.body,
        format!("window_start,window_end,value\n{ws},{we},{value}\n")
    );
}

#[test]
fn query_get_csv_with_subject_and_window() {
    // GET with Accept: text/csv names the file after the meter and adds a subject column when
    // filtering by subject; windowed rows come in window order.
    let f = QueryFixture::start();
    f.wait_all_visible();
    let resp = f
        .server
        .get("/api/v1/meters/query/query")
        .header("Accept", "text/csv")
        .query("subject", "customer-1")
        .query("windowSize", "DAY")
        .send()
        .expect_status(200);
    assert_eq!(resp.content_type(), Some("text/csv"), "{resp}");
    assert_eq!(
        resp.header("content-disposition"),
        Some("attachment; filename=query.csv"),
        "{resp}"
    );
    let (t, d) = (f.t, Duration::days(1));
    let expected = format!(
        "window_start,window_end,subject,value\n{},{},customer-1,300.000000\n{},{},customer-1,100.000000\n",
        rfc3339(t),
        rfc3339(t + d),
        rfc3339(t + d),
        rfc3339(t + d * 2)
    );
    assert_eq!(resp.body, expected);
}

#[test]
fn query_group_by_and_filters() {
    // groupBy=method splits the total per method (rows carry groupBy.method); filterGroupBy and
    // advancedMeterGroupByFilters ($in) restrict the events counted; the POST body takes the same.
    let f = QueryFixture::start();
    f.wait_all_visible();
    let per_event = (CUSTOMER_COUNT * 100) as f64;
    let mut by_method: BTreeMap<&str, f64> = BTreeMap::new();
    let mut by_path: BTreeMap<&str, f64> = BTreeMap::new();
    for &(_, method, path) in &f.sets {
        *by_method.entry(method).or_default() += per_event;
        *by_path.entry(path).or_default() += per_event;
    }
    let window_of = |pred: &dyn Fn(&str, &str) -> bool| {
        let times: Vec<_> = f
            .sets
            .iter()
            .filter(|(_, m, p)| pred(m, p))
            .map(|(t, _, _)| *t)
            .collect();
        let lo = *times.iter().min().expect("some events");
        let hi = *times.iter().max().expect("some events");
        (lo, hi + Duration::minutes(1))
    };

    // groupBy=method: one row per method; without a window each row spans its own events.
    let mut got = parse_query(&f.server.query("query", &[("groupBy", "method".into())]))
        .expect("groupBy query");
    got.data
        .sort_by(|a, b| a.group_by.get("method").cmp(&b.group_by.get("method")));
    let expected: Vec<Row> = by_method
        .iter()
        .map(|(&method, &value)| {
            let (s, e) = window_of(&|m, _| m == method);
            Row::plain(value, s, e).with_group("method", method)
        })
        .collect();
    assert_eq!(got.data, expected);

    // filterGroupBy[path]=<first set's path>.
    let path = f.sets[0].2;
    let got = parse_query(&f.server.query(
        "query",
        &[
            ("filterGroupBy[path]", path.to_owned()),
            ("windowSize", "DAY".into()),
        ],
    ))
    .expect("filterGroupBy query");
    let total: f64 = got.data.iter().map(|r| r.value).sum();
    assert_eq!(total, by_path[path], "filterGroupBy[path]={path}: {got:?}");

    // advancedMeterGroupByFilters: path $in [first two sets' paths].
    let paths = [f.sets[0].2, f.sets[1].2];
    let want: f64 = f.sets.iter().filter(|(_, _, p)| paths.contains(p)).count() as f64 * per_event;
    let filter = json!({ "path": { "$in": paths } }).to_string();
    let got = parse_query(
        &f.server
            .query("query", &[("advancedMeterGroupByFilters", filter.clone())]),
    )
    .expect("advanced filter query");
    assert_eq!(got.data.len(), 1, "{got:?}");
    assert_eq!(got.data[0].value, want, "{filter}: {got:?}");

    // The same through POST: groupBy and advancedMeterGroupByFilters in the JSON body.
    let resp = f
        .server
        .post("/api/v1/meters/query/query")
        .json(&json!({
            "groupBy": ["method"],
            "advancedMeterGroupByFilters": { "path": { "$in": paths } },
        }))
        .send();
    let got = parse_query(&resp).expect("POST groupBy query");
    let got_total: f64 = got.data.iter().map(|r| r.value).sum();
    assert_eq!(got_total, want, "{resp}");
    assert!(
        got.data.iter().all(|r| r.group_by.contains_key("method")),
        "{resp}"
    );
}

#[test]
fn query_from_to_bounds() {
    // `from` is inclusive, `to` exclusive; without a window the row spans exactly [from, to)
    // and the answer echoes from and to.
    let f = QueryFixture::start();
    f.wait_all_visible();
    let (t, m) = (f.t, Duration::minutes(1));
    let (from, to) = (t + m, t + Duration::hours(1));
    let got = parse_query(
        &f.server
            .query("query", &[("from", rfc3339(from)), ("to", rfc3339(to))]),
    )
    .expect("from/to query");
    // Only t+1m is in [t+1m, t+1h).
    assert_eq!(
        got,
        QueryResult {
            from: Some(from),
            to: Some(to),
            window_size: None,
            data: vec![Row::plain(500.0, from, to)],
        }
    );
}

#[test]
fn meter_subjects_and_group_by_values() {
    // GET .../subjects lists the subjects with usage; GET .../group-by/{key}/values lists the
    // distinct values of a group-by key in [from, to).
    let f = QueryFixture::start();
    f.wait_all_visible();
    let sorted = |resp: Resp| -> Vec<String> {
        let mut v: Vec<String> = serde_json::from_str(&resp.body)
            .unwrap_or_else(|e| panic!("not a string array ({e}): {resp}"));
        v.sort();
        v
    };
    let subjects = sorted(
        f.server
            .get("/api/v1/meters/query/subjects")
            .send()
            .expect_status(200),
    );
    let want: Vec<String> = (1..=CUSTOMER_COUNT)
        .map(|c| format!("customer-{c}"))
        .collect();
    assert_eq!(subjects, want);

    let methods = sorted(
        f.server
            .get("/api/v1/meters/query/group-by/method/values")
            .query("from", rfc3339(f.t - Duration::days(1)))
            .query("to", rfc3339(f.t + Duration::days(3)))
            .send()
            .expect_status(200),
    );
    let mut want: Vec<String> = f.sets.iter().map(|s| s.1.to_owned()).collect();
    want.sort();
    want.dedup();
    assert_eq!(methods, want);
}

#[test]
fn query_parameter_validation() {
    // Invalid query parameters are 400 problem+json; an unknown meter is 404 problem+json.
    let server = TestServer::start_with_config(E2E_CONFIG);
    let t = rfc3339(Utc::now());
    let bad: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("from == to", vec![("from", t.clone()), ("to", t.clone())]),
        (
            "from > to",
            vec![
                ("from", t.clone()),
                ("to", rfc3339(Utc::now() - Duration::days(1))),
            ],
        ),
        ("bad from", vec![("from", "yesterday".into())]),
        ("bad windowSize", vec![("windowSize", "FORTNIGHT".into())]),
        (
            "bad windowTimeZone",
            vec![
                ("windowSize", "DAY".into()),
                ("windowTimeZone", "Mars/Olympus_Mons".into()),
            ],
        ),
        ("unknown groupBy", vec![("groupBy", "colour".into())]),
        (
            "unknown filterGroupBy",
            vec![("filterGroupBy[colour]", "red".into())],
        ),
        (
            "filterGroupBy with advanced filters",
            vec![
                ("filterGroupBy[method]", "GET".into()),
                (
                    "advancedMeterGroupByFilters",
                    json!({ "path": { "$eq": "/" } }).to_string(),
                ),
            ],
        ),
        (
            "advanced filters not JSON",
            vec![("advancedMeterGroupByFilters", "{path".into())],
        ),
    ];
    for (name, params) in bad {
        let resp = server.query("query", &params);
        assert_eq!(resp.status, 400, "{name}: {resp}");
        assert_problem(&resp, 400);
    }
    let resp = server.query("no_such_meter", &[]);
    assert_problem(&resp, 404);
}

/// The DST scenario of TestQueryDSTTransition: one event at 10:00 Los Angeles time on each of
/// the 7 days starting `first`, then DAY windows in America/Los_Angeles over those days.
fn dst_scenario(first: NaiveDate, transition_index: usize) {
    let server = TestServer::start_with_config(E2E_CONFIG);
    let subject = "customer-dst";
    let days: Vec<NaiveDate> = first.iter_days().take(7).collect();
    let la_midnight = |d: NaiveDate| {
        Los_Angeles
            .from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
            .single()
            .expect("LA midnight exists")
    };
    let events: Vec<Value> = days
        .iter()
        .map(|d| {
            let time = Los_Angeles
                .from_local_datetime(&d.and_hms_opt(10, 0, 0).expect("10:00"))
                .single()
                .expect("10:00 exists")
                .with_timezone(&Utc);
            cloud_event(
                &new_id(),
                "dst-test",
                "query",
                subject,
                time,
                json!({ "duration_ms": "100" }),
            )
        })
        .collect();
    server.ingest_batch(&events).expect_status(204);

    let from = la_midnight(days[0]);
    let to = la_midnight(*days.last().expect("7 days") + Duration::days(1));
    let params = [
        ("subject", subject.to_owned()),
        ("windowSize", "DAY".to_owned()),
        ("windowTimeZone", "America/Los_Angeles".to_owned()),
        // With the LA offset, as the Go client sends a time.Time in that location.
        ("from", from.to_rfc3339()),
        ("to", to.to_rfc3339()),
    ];
    let rows = eventually(VISIBLE, || {
        let got = parse_query(&server.query("query", &params))?;
        if got.data.len() == 7 {
            Ok(got.data)
        } else {
            Err(format!("want 7 day windows, got {got:?}"))
        }
    });
    for pair in rows.windows(2) {
        assert_eq!(
            pair[0].window_end, pair[1].window_start,
            "gap between windows: {rows:?}"
        );
    }
    for (row, day) in rows.iter().zip(&days) {
        let start = row.window_start.with_timezone(&Los_Angeles);
        assert_eq!(
            (start.hour(), start.minute(), start.second()),
            (0, 0, 0),
            "window does not start at LA midnight: {row:?}"
        );
        assert_eq!(row.window_start, la_midnight(*day), "{row:?}");
        assert_eq!(
            row.window_end,
            la_midnight(*day + Duration::days(1)),
            "{row:?}"
        );
        assert_eq!(row.value, 100.0, "{row:?}");
        assert_eq!(row.subject.as_deref(), Some(subject), "{row:?}");
    }
    let dst = &rows[transition_index];
    let length = dst.window_end - dst.window_start;
    assert_ne!(
        length,
        Duration::hours(24),
        "the DST day should not be 24 h long: {dst:?}"
    );
}

#[test]
fn query_dst_spring_forward() {
    // TestQueryDSTTransition/DST_Spring_Forward: DAY windows in America/Los_Angeles over
    // 2025-03-06..12 are contiguous, start at local midnight, and 2025-03-09 is 23 h long.
    dst_scenario(NaiveDate::from_ymd_opt(2025, 3, 6).expect("date"), 3);
}

#[test]
fn query_dst_fall_back() {
    // TestQueryDSTTransition/DST_Fall_Back: the same over 2025-10-30..11-05; 2025-11-02 is 25 h.
    dst_scenario(NaiveDate::from_ymd_opt(2025, 10, 30).expect("date"), 3);
}
