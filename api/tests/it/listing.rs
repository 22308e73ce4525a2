//! Event listings: v2 pages with random limits and filters over events that share
//! timestamps return every matching event exactly once, in `(time, ingestedAt, id)`
//! order, with some events in Parquet files and some in memory; and a v1 listing over
//! many stored events answers within bounded memory.

use crate::helpers::*;
use crate::server::*;
use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// (time, ingestedAt, id) of a listed item, as the order compares them (times as
/// instants: their texts have varying fractional digits).
fn key(item: &Value) -> (DateTime<Utc>, DateTime<Utc>, String) {
    let t = |v: &Value| {
        v.as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    };
    (
        t(&item["event"]["time"]),
        t(&item["ingestedAt"]),
        item["event"]["id"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn v2_pages_return_every_matching_event_once() {
    let seed: u64 = std::env::var("METRON_PROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::random::<u32>().into());
    println!("listing: seed {seed} (replay with METRON_PROP_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let server = TestServer::start_with_config("checkpointInterval: 300ms\n");
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 3 * 86_400, 0).expect("time");
    // Few distinct times, so many events share one; several ingest requests, so ingestedAt
    // differs too; a checkpoint between some of them, so files and memory both hold events.
    let subjects = ["a", "b", "c"];
    let sources = ["s1", "s2"];
    let mut all: Vec<(String, String, String)> = Vec::new(); // (id, subject, source)
    for round in 0..6 {
        let events: Vec<Value> = (0..60)
            .map(|i| {
                let id = format!("r{round}-e{i:02}");
                let subject = *subjects.choose(&mut rng).unwrap_or(&"a");
                let source = *sources.choose(&mut rng).unwrap_or(&"s1");
                all.push((id.clone(), subject.to_owned(), source.to_owned()));
                let time = t0 + Duration::minutes(rng.random_range(0..4i64));
                cloud_event(&id, source, "request", subject, time, json!({"n": i}))
            })
            .collect();
        server.ingest_batch(&events).expect_status(204);
        if round % 2 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(700));
        }
    }
    eventually(VISIBLE, || {
        let answer = server.sql("SELECT count(*) FROM events");
        (answer["rows"] == json!([[all.len()]]))
            .then_some(())
            .ok_or(format!("{answer}"))
    });
    for case in 0..12 {
        let mut filter = serde_json::Map::new();
        let mut want: BTreeSet<String> = all.iter().map(|(id, _, _)| id.clone()).collect();
        if rng.random_bool(0.5) {
            let s = *subjects.choose(&mut rng).unwrap_or(&"a");
            filter.insert("subject".into(), json!({"$eq": s}));
            want.retain(|id| all.iter().any(|(i, sub, _)| i == id && sub == s));
        }
        if rng.random_bool(0.4) {
            let s = *sources.choose(&mut rng).unwrap_or(&"s1");
            filter.insert("source".into(), json!({"$ne": s}));
            want.retain(|id| all.iter().any(|(i, _, src)| i == id && src != s));
        }
        let limit = rng.random_range(1..=37usize);
        let mut seen: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        for _page in 0..1000 {
            let mut req = server
                .get("/api/v2/events")
                .query("limit", limit.to_string());
            if !filter.is_empty() {
                req = req.query("filter", Value::Object(filter.clone()).to_string());
            }
            if let Some(c) = &cursor {
                req = req.query("cursor", c);
            }
            let page = req.send().expect_status(200).json();
            let items = page["items"].as_array().cloned().unwrap_or_default();
            assert!(items.len() <= limit, "case {case}: page over the limit");
            seen.extend(items);
            match page["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let ids: Vec<String> = seen
            .iter()
            .map(|i| i["event"]["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        let unique: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "case {case} (seed {seed}): an event twice"
        );
        assert_eq!(
            unique, want,
            "case {case} (seed {seed}), filter {filter:?}, limit {limit}"
        );
        let keys: Vec<_> = seen.iter().map(key).collect();
        assert!(
            keys.windows(2).all(|w| w[0] > w[1]),
            "case {case} (seed {seed}): not in (time, ingestedAt, id) order, newest first"
        );
    }
    // A cursor that overflows or is malformed is a 400, not a crash.
    for bad in [
        "9223372036854775807:9223372036854775807:x",
        "1:2",
        "x:y:z",
        "1:2:",
    ] {
        let resp = server.get("/api/v2/events").query("cursor", bad).send();
        assert!(
            resp.status == 200 || resp.status == 400,
            "cursor {bad:?}: {resp}"
        );
    }
}

/// Peak resident memory since the last reset, in KiB (and resets it).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    // Writing 5 resets the peak to the current resident size.
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    peak
}

#[test]
fn v1_listing_over_many_events_is_bounded() {
    let n: usize = std::env::var("METRON_LISTING_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let server = TestServer::start_with_config("checkpointInterval: 500ms\n");
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 20 * 86_400, 0).expect("time");
    let client = server.client();
    let pad = "p".repeat(200);
    for chunk in (0..n).collect::<Vec<_>>().chunks(2000) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|&i| {
                cloud_event(
                    &format!("l{i}"),
                    "listing",
                    "request",
                    &format!("s{}", i % 50),
                    t0 + Duration::seconds(i as i64 * 17),
                    json!({"n": i, "pad": pad}),
                )
            })
            .collect();
        let resp = client.try_ingest_batch(&events).expect("ingest");
        assert_eq!(resp.status, 204, "{resp}");
    }
    eventually(VISIBLE, || {
        let answer = server.sql("SELECT count(*) FROM events");
        (answer["rows"] == json!([[n]]))
            .then_some(())
            .ok_or(format!("{answer}"))
    });
    // Let a checkpoint move everything into files, then measure the listing alone.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let pid = server.pid().expect("pid");
    peak_rss_kib(pid);
    let before = peak_rss_kib(pid);
    let listed = server.get("/api/v1/events").query("limit", "100").send();
    let after = peak_rss_kib(pid);
    let items = listed.expect_status(200).json();
    let items = items.as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 100);
    assert_eq!(items[0]["event"]["id"], json!(format!("l{}", n - 1)));
    let growth = after.saturating_sub(before);
    eprintln!(
        "v1 listing over {n} stored events: peak resident +{growth} KiB ({before} -> {after} KiB)"
    );
    // The events alone are ~n * 300 bytes as JSON; the listing holds 100 of them and
    // one file at a time.
    assert!(
        growth < 64 * 1024,
        "listing grew resident memory by {growth} KiB over {n} events"
    );
}
