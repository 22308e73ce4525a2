//! Seeded random scenarios checked against a reference model: random meters (every aggregation,
//! random group-bys, declared in the config, created before the events, or created after them),
//! random events (duplicates, several sources, out-of-order and late arrivals spread over days,
//! sent through all three content types), and random queries (windows MINUTE/HOUR/DAY/MONTH or
//! none, time zones UTC/America/Los_Angeles/Asia/Kolkata/Asia/Kathmandu, from/to, subject
//! filters, group-bys, group-by filters, GET and POST). Every answer must equal what a plain
//! loop over the distinct events computes.
//!
//! `METRON_PROP_SEED=<u64>` replays a run (the seed is printed); `METRON_PROP_SCENARIOS=<n>`
//! changes the number of scenarios (default 8).

use crate::helpers::*;
use crate::server::*;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;

const ZONES: [&str; 4] = [
    "UTC",
    "America/Los_Angeles",
    "Asia/Kolkata",
    "Asia/Kathmandu",
];
const WINDOWS: [Option<&str>; 5] = [
    None,
    Some("MINUTE"),
    Some("HOUR"),
    Some("DAY"),
    Some("MONTH"),
];
const EVENT_TYPES: [&str; 2] = ["prop_a", "prop_b"];
const SUBJECTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];
const SOURCES: [&str; 2] = ["src-one", "src-two"];
/// Group-by keys a meter may use, with their JSONPaths (one nested).
const GROUP_KEYS: [(&str, &str); 3] = [
    ("region", "$.region"),
    ("tier", "$.tier"),
    ("k", "$.nested.k"),
];
const REGIONS: [&str; 3] = ["eu", "us", "ap"];
const TIERS: [&str; 2] = ["free", "pro"];
const KS: [&str; 2] = ["x", "y"];
const UNIQUES: [&str; 6] = ["u1", "u2", "u3", "u4", "u5", "u6"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Agg {
    Sum,
    Count,
    Avg,
    Min,
    Max,
    UniqueCount,
    Latest,
}

const AGGS: [Agg; 7] = [
    Agg::Sum,
    Agg::Count,
    Agg::Avg,
    Agg::Min,
    Agg::Max,
    Agg::UniqueCount,
    Agg::Latest,
];

impl Agg {
    fn name(self) -> &'static str {
        match self {
            Agg::Sum => "SUM",
            Agg::Count => "COUNT",
            Agg::Avg => "AVG",
            Agg::Min => "MIN",
            Agg::Max => "MAX",
            Agg::UniqueCount => "UNIQUE_COUNT",
            Agg::Latest => "LATEST",
        }
    }

    fn value_property(self) -> Option<&'static str> {
        match self {
            Agg::Count => None,
            Agg::UniqueCount => Some("$.u"),
            _ => Some("$.v"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Created {
    Config,
    ApiBeforeEvents,
    ApiAfterEvents,
}

#[derive(Clone, Debug)]
struct MeterSpec {
    slug: String,
    event_type: &'static str,
    agg: Agg,
    group_by: BTreeMap<&'static str, &'static str>,
    created: Created,
}

impl MeterSpec {
    fn create_body(&self) -> Value {
        let mut body = json!({
            "slug": self.slug,
            "eventType": self.event_type,
            "aggregation": self.agg.name(),
        });
        if let Some(vp) = self.agg.value_property() {
            body["valueProperty"] = json!(vp);
        }
        if !self.group_by.is_empty() {
            body["groupBy"] = json!(self.group_by);
        }
        body
    }

    fn config_yaml(&self) -> String {
        let mut s = format!(
            "  - slug: {}\n    eventType: {}\n    aggregation: {}\n",
            self.slug,
            self.event_type,
            self.agg.name()
        );
        if let Some(vp) = self.agg.value_property() {
            let _ = writeln!(s, "    valueProperty: \"{vp}\"");
        }
        if !self.group_by.is_empty() {
            s.push_str("    groupBy:\n");
            for (k, path) in &self.group_by {
                let _ = writeln!(s, "      {k}: \"{path}\"");
            }
        }
        s
    }
}

#[derive(Clone, Debug)]
struct Ev {
    id: String,
    source: &'static str,
    subject: &'static str,
    event_type: &'static str,
    time: DateTime<Utc>,
    data: Value,
}

impl Ev {
    fn to_json(&self) -> Value {
        cloud_event(
            &self.id,
            self.source,
            self.event_type,
            self.subject,
            self.time,
            self.data.clone(),
        )
    }

    /// The value at a `$.a.b` path of the data, if any.
    fn at(&self, path: &str) -> Option<&Value> {
        let mut v = &self.data;
        for part in path.strip_prefix("$.")?.split('.') {
            v = v.get(part)?;
        }
        Some(v)
    }
}

/// A value as a meter reads it.
#[derive(Clone, Debug)]
enum Val {
    Num(f64),
    Str(String),
}

/// The meter's reading of an event: `None` when it has no usable value (not aggregated).
fn meter_value(meter: &MeterSpec, e: &Ev) -> Option<Val> {
    match meter.agg {
        Agg::Count => Some(Val::Num(1.0)),
        Agg::UniqueCount => e
            .at("$.u")
            .and_then(Value::as_str)
            .map(|s| Val::Str(s.to_owned())),
        _ => {
            let x = match e.at("$.v")? {
                Value::Number(n) => n.as_f64()?,
                Value::String(s) => s.parse::<f64>().ok()?,
                _ => return None,
            };
            x.is_finite().then_some(Val::Num(x))
        }
    }
}

fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(60) * 60, 0).expect("time")
}

fn local_midnight(tz: Tz, d: NaiveDate) -> DateTime<Utc> {
    tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
        .earliest()
        .expect("local midnight exists")
        .with_timezone(&Utc)
}

/// The tumbling window of `size` containing `t`, in time zone `tz`.
fn window(size: &str, tz: Tz, t: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let local = t.with_timezone(&tz);
    match size {
        "MINUTE" => {
            let s = floor_minute(t);
            (s, s + Duration::minutes(1))
        }
        "HOUR" => {
            // The local hour: drop the local minutes and seconds (offsets here change on hours).
            let s = floor_minute(t) - Duration::minutes(i64::from(local.minute()));
            (s, s + Duration::hours(1))
        }
        "DAY" => {
            let d = local.date_naive();
            (
                local_midnight(tz, d),
                local_midnight(tz, d.succ_opt().expect("next day")),
            )
        }
        "MONTH" => {
            let first = NaiveDate::from_ymd_opt(local.year(), local.month(), 1).expect("first");
            let next = if local.month() == 12 {
                NaiveDate::from_ymd_opt(local.year() + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(local.year(), local.month() + 1, 1)
            }
            .expect("next month");
            (local_midnight(tz, first), local_midnight(tz, next))
        }
        other => panic!("unknown window size {other}"),
    }
}

#[derive(Clone, Debug)]
struct Query {
    window: Option<&'static str>,
    tz: Option<&'static str>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    subjects: Vec<&'static str>,
    /// Meter group-by keys and possibly "subject".
    group_by: Vec<&'static str>,
    filter: Option<(&'static str, &'static str)>,
    post: bool,
}

impl Query {
    fn total() -> Query {
        Query {
            window: None,
            tz: None,
            from: None,
            to: None,
            subjects: Vec::new(),
            group_by: Vec::new(),
            filter: None,
            post: false,
        }
    }

    fn run(&self, server: &TestServer, slug: &str) -> Resp {
        if self.post {
            let mut body = json!({});
            if let Some(w) = self.window {
                body["windowSize"] = json!(w);
            }
            if let Some(tz) = self.tz {
                body["windowTimeZone"] = json!(tz);
            }
            if let Some(from) = self.from {
                body["from"] = json!(rfc3339(from));
            }
            if let Some(to) = self.to {
                body["to"] = json!(rfc3339(to));
            }
            if !self.subjects.is_empty() {
                body["subject"] = json!(self.subjects);
            }
            if !self.group_by.is_empty() {
                body["groupBy"] = json!(self.group_by);
            }
            if let Some((k, v)) = self.filter {
                body["filterGroupBy"] = json!({ k: [v] });
            }
            server
                .post(&format!("/api/v1/meters/{slug}/query"))
                .json(&body)
                .send()
        } else {
            let filter_key = self.filter.map(|(k, _)| format!("filterGroupBy[{k}]"));
            let mut params: Vec<(&str, String)> = Vec::new();
            if let Some(w) = self.window {
                params.push(("windowSize", w.to_owned()));
            }
            if let Some(tz) = self.tz {
                params.push(("windowTimeZone", tz.to_owned()));
            }
            if let Some(from) = self.from {
                params.push(("from", rfc3339(from)));
            }
            if let Some(to) = self.to {
                params.push(("to", rfc3339(to)));
            }
            for s in &self.subjects {
                params.push(("subject", (*s).to_owned()));
            }
            for g in &self.group_by {
                params.push(("groupBy", (*g).to_owned()));
            }
            if let (Some(key), Some((_, v))) = (&filter_key, self.filter) {
                params.push((key.as_str(), v.to_owned()));
            }
            server.query(slug, &params)
        }
    }
}

type GroupKey = (
    Option<(DateTime<Utc>, DateTime<Utc>)>,
    Option<String>,
    BTreeMap<String, Option<String>>,
);

/// The reference answer: plain loops over the distinct events.
fn reference(meter: &MeterSpec, events: &[Ev], q: &Query) -> QueryResult {
    let tz: Tz = q.tz.unwrap_or("UTC").parse().expect("known zone");
    let by_subject = !q.subjects.is_empty() || q.group_by.contains(&"subject");
    let keys: Vec<&str> = q
        .group_by
        .iter()
        .copied()
        .filter(|g| *g != "subject")
        .collect();
    struct Acc {
        min_t: DateTime<Utc>,
        max_t: DateTime<Utc>,
        values: Vec<(DateTime<Utc>, Val)>,
    }
    let mut groups: BTreeMap<GroupKey, Acc> = BTreeMap::new();
    for e in events {
        if e.event_type != meter.event_type
            || q.from.is_some_and(|f| e.time < f)
            || q.to.is_some_and(|t| e.time >= t)
            || (!q.subjects.is_empty() && !q.subjects.contains(&e.subject))
        {
            continue;
        }
        let group_value = |key: &str| -> Option<String> {
            let path = meter.group_by.get(key)?;
            e.at(path).and_then(Value::as_str).map(str::to_owned)
        };
        if let Some((k, v)) = q.filter
            && group_value(k).as_deref() != Some(v)
        {
            continue;
        }
        let key: GroupKey = (
            q.window.map(|w| window(w, tz, e.time)),
            by_subject.then(|| e.subject.to_owned()),
            keys.iter()
                .map(|k| ((*k).to_owned(), group_value(k)))
                .collect(),
        );
        let acc = groups.entry(key).or_insert(Acc {
            min_t: e.time,
            max_t: e.time,
            values: Vec::new(),
        });
        // Metron's rule: a total's window spans the events that carry a value
        // (events with a validationError count for nothing, not even the span).
        if let Some(v) = meter_value(meter, e) {
            if acc.values.is_empty() {
                acc.min_t = e.time;
                acc.max_t = e.time;
            }
            acc.min_t = acc.min_t.min(e.time);
            acc.max_t = acc.max_t.max(e.time);
            acc.values.push((e.time, v));
        }
    }
    let nums = |acc: &Acc| -> Vec<f64> {
        acc.values
            .iter()
            .filter_map(|(_, v)| match v {
                Val::Num(x) => Some(*x),
                Val::Str(_) => None,
            })
            .collect()
    };
    let mut data = Vec::new();
    for ((win, subject, group_by), acc) in groups {
        if acc.values.is_empty() {
            continue; // no usable value: no row
        }
        let value = match meter.agg {
            Agg::Count => acc.values.len() as f64,
            Agg::Sum => nums(&acc).iter().sum(),
            Agg::Avg => {
                let n = nums(&acc);
                n.iter().sum::<f64>() / n.len() as f64
            }
            Agg::Min => nums(&acc).into_iter().fold(f64::INFINITY, f64::min),
            Agg::Max => nums(&acc).into_iter().fold(f64::NEG_INFINITY, f64::max),
            Agg::UniqueCount => acc
                .values
                .iter()
                .filter_map(|(_, v)| match v {
                    Val::Str(s) => Some(s.as_str()),
                    Val::Num(_) => None,
                })
                .collect::<BTreeSet<_>>()
                .len() as f64,
            Agg::Latest => {
                let (_, v) = acc
                    .values
                    .iter()
                    .max_by_key(|(t, _)| *t)
                    .expect("non-empty");
                match v {
                    Val::Num(x) => *x,
                    Val::Str(_) => unreachable!("LATEST reads numbers"),
                }
            }
        };
        let (window_start, window_end) = win.unwrap_or((
            q.from.unwrap_or_else(|| floor_minute(acc.min_t)),
            q.to.unwrap_or_else(|| floor_minute(acc.max_t) + Duration::minutes(1)),
        ));
        data.push(Row {
            value,
            window_start,
            window_end,
            subject,
            customer_id: None,
            group_by,
        });
    }
    QueryResult {
        from: q.from,
        to: q.to,
        window_size: q.window.map(str::to_owned),
        data,
    }
}

/// Rows sorted by group, then window: a row that differs only in its window lines up with its
/// counterpart in a diff.
fn sort_rows(rows: &mut [Row]) {
    rows.sort_by(|a, b| {
        (&a.subject, &a.group_by, a.window_start).cmp(&(&b.subject, &b.group_by, b.window_start))
    });
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// `Ok` when the answer equals the reference (rows in any order, values to 1e-9 relative).
fn compare(resp: &Resp, want: &QueryResult) -> Result<(), String> {
    let mut got = parse_query(resp)?;
    let mut want = want.clone();
    sort_rows(&mut got.data);
    sort_rows(&mut want.data);
    let same_rows = got.data.len() == want.data.len()
        && got.data.iter().zip(&want.data).all(|(g, w)| {
            close(g.value, w.value)
                && g.window_start == w.window_start
                && g.window_end == w.window_end
                && g.subject == w.subject
                && g.group_by == w.group_by
        });
    if same_rows
        && got.from == want.from
        && got.to == want.to
        && got.window_size == want.window_size
    {
        return Ok(());
    }
    let mut diff = String::new();
    let _ = writeln!(
        diff,
        "echo: got from={:?} to={:?} windowSize={:?}; want from={:?} to={:?} windowSize={:?}",
        got.from, got.to, got.window_size, want.from, want.to, want.window_size
    );
    let _ = writeln!(
        diff,
        "got {} rows, want {} rows",
        got.data.len(),
        want.data.len()
    );
    let n = got.data.len().max(want.data.len());
    let mut shown = 0;
    for i in 0..n {
        let (g, w) = (got.data.get(i), want.data.get(i));
        let equal = match (g, w) {
            (Some(g), Some(w)) => {
                close(g.value, w.value)
                    && g.window_start == w.window_start
                    && g.window_end == w.window_end
                    && g.subject == w.subject
                    && g.group_by == w.group_by
            }
            _ => false,
        };
        if !equal && shown < 6 {
            shown += 1;
            let _ = writeln!(diff, "  row {i}:\n    got:  {g:?}\n    want: {w:?}");
        }
    }
    Err(diff)
}

/// Sends events in random chunks through the three content types.
fn send_events(server: &TestServer, rng: &mut StdRng, events: &[Value]) {
    let mut rest = events;
    while !rest.is_empty() {
        let n = rng.random_range(1..=60).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let resp = match (n, rng.random_range(0..3)) {
            (1, 0) => server.ingest_one(&chunk[0]),
            (_, 1) => server
                .post("/api/v1/events")
                .body("application/json", Value::Array(chunk.to_vec()).to_string())
                .send(),
            _ => server.ingest_batch(chunk),
        };
        resp.expect_status(204);
    }
}

fn random_query(rng: &mut StdRng, meter: &MeterSpec, lo: DateTime<Utc>, span: i64) -> Query {
    let window = *WINDOWS.choose(rng).expect("windows");
    let tz = if rng.random_bool(0.8) {
        Some(*ZONES.choose(rng).expect("zones"))
    } else {
        None
    };
    let (from, to) = match rng.random_range(0..4) {
        0 | 1 => (None, None),
        2 => {
            let from = lo + Duration::seconds(rng.random_range(-3600..span));
            let to = from + Duration::seconds(rng.random_range(60..=span.max(61)));
            // Whole minutes half of the time, arbitrary seconds otherwise.
            if rng.random_bool(0.5) {
                (Some(floor_minute(from)), Some(floor_minute(to)))
            } else {
                (Some(from), Some(to))
            }
        }
        _ => {
            let t = floor_minute(lo + Duration::seconds(rng.random_range(0..span)));
            if rng.random_bool(0.5) {
                (Some(t), None)
            } else {
                (None, Some(t))
            }
        }
    };
    let subjects: Vec<&'static str> = match rng.random_range(0..4) {
        0 => vec![*SUBJECTS.choose(rng).expect("subjects")],
        1 => SUBJECTS.choose_multiple(rng, 2).copied().collect(),
        _ => Vec::new(),
    };
    let mut group_by: Vec<&'static str> = meter
        .group_by
        .keys()
        .copied()
        .filter(|_| rng.random_bool(0.5))
        .collect();
    if subjects.len() > 1 || rng.random_bool(0.25) {
        group_by.push("subject");
    }
    let filter = if !meter.group_by.is_empty() && rng.random_bool(0.25) {
        let keys: Vec<&'static str> = meter.group_by.keys().copied().collect();
        let key = *keys.choose(rng).expect("keys");
        let value = match key {
            "region" => *REGIONS.choose(rng).expect("regions"),
            "tier" => *TIERS.choose(rng).expect("tiers"),
            _ => *KS.choose(rng).expect("ks"),
        };
        Some((key, value))
    } else {
        None
    };
    Query {
        window,
        tz,
        from,
        to,
        subjects,
        group_by,
        filter,
        post: rng.random_bool(0.3),
    }
}

fn run_scenario(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    // Values that no meter can read (missing, non-numeric, NaN) in half of the scenarios only:
    // without a window or `from`/`to`, OpenMeter spans a row over all the group's events, also
    // those whose value is unusable; the other half tests everything else without that rule.
    let with_unusable = rng.random_bool(0.5);

    // Meters: every aggregation once, plus two random ones.
    let mut meters = Vec::new();
    let aggs: Vec<Agg> = AGGS
        .iter()
        .copied()
        .chain((0..2).map(|_| *AGGS.choose(&mut rng).expect("aggs")))
        .collect();
    for (i, agg) in aggs.into_iter().enumerate() {
        let group_by = GROUP_KEYS
            .iter()
            .copied()
            .filter(|_| rng.random_bool(0.4))
            .collect();
        let created = match rng.random_range(0..3) {
            0 => Created::Config,
            1 => Created::ApiBeforeEvents,
            _ => Created::ApiAfterEvents,
        };
        meters.push(MeterSpec {
            slug: format!("m{i}_{}", agg.name().to_lowercase()),
            event_type: EVENT_TYPES.choose(&mut rng).expect("types"),
            agg,
            group_by,
            created,
        });
    }
    // Two config COUNT meters that show when everything sent is visible.
    for event_type in EVENT_TYPES {
        meters.push(MeterSpec {
            slug: format!("seen_{event_type}"),
            event_type,
            agg: Agg::Count,
            group_by: BTreeMap::new(),
            created: Created::Config,
        });
    }

    let mut yaml = String::from("checkpointInterval: 500ms\nmeters:\n");
    for m in meters
        .iter()
        .filter(|m| matches!(m.created, Created::Config))
    {
        yaml.push_str(&m.config_yaml());
    }
    let server = TestServer::start_with_config(&yaml);
    for m in meters
        .iter()
        .filter(|m| matches!(m.created, Created::ApiBeforeEvents))
    {
        server.create_meter(&m.create_body());
    }

    // Events: distinct times (LATEST is well defined), over 1–45 days, sometimes across the
    // 2025 DST changes of Los Angeles.
    let lo = match rng.random_range(0..4) {
        0 => Utc
            .with_ymd_and_hms(2025, 3, 7, 0, 0, 0)
            .single()
            .expect("date"),
        1 => Utc
            .with_ymd_and_hms(2025, 10, 30, 0, 0, 0)
            .single()
            .expect("date"),
        _ => {
            let a = Utc
                .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
                .single()
                .expect("date");
            a + Duration::seconds(rng.random_range(0..700 * 86_400))
        }
    };
    let span: i64 = rng.random_range(1..=45) * 86_400;
    let n = rng.random_range(150..=300);
    let mut used = HashSet::new();
    let mut events: Vec<Ev> = Vec::with_capacity(n);
    for i in 0..n {
        let offset = loop {
            // Clustered half of the time, so small windows get several events.
            let o = if rng.random_bool(0.5) {
                rng.random_range(0..span)
            } else {
                rng.random_range(0..span.min(4 * 3600))
            };
            if used.insert(o) {
                break o;
            }
        };
        let v: Value = {
            let x = f64::from(rng.random_range(-200..800)) / 4.0;
            match rng.random_range(0..100) {
                0..=3 if with_unusable => Value::Null, // missing
                4..=5 if with_unusable => json!("not a number"),
                6 if with_unusable => json!("NaN"),
                7..=16 => json!(x.to_string()),
                _ => json!(x),
            }
        };
        let mut data = json!({
            "u": *UNIQUES.choose(&mut rng).expect("uniques"),
            "region": *REGIONS.choose(&mut rng).expect("regions"),
            "tier": *TIERS.choose(&mut rng).expect("tiers"),
            "nested": { "k": *KS.choose(&mut rng).expect("ks") },
        });
        if !v.is_null() {
            data["v"] = v;
        }
        // Some ids repeat under another source: distinct events all the same.
        let source = *SOURCES.choose(&mut rng).expect("sources");
        let mut id = format!("p{seed}-{i}");
        if i > 0 && rng.random_bool(0.05) {
            let reused = events[rng.random_range(0..i)].id.clone();
            if !events.iter().any(|e| e.id == reused && e.source == source) {
                id = reused;
            }
        }
        events.push(Ev {
            id,
            source,
            subject: SUBJECTS.choose(&mut rng).expect("subjects"),
            event_type: EVENT_TYPES.choose(&mut rng).expect("types"),
            time: lo + Duration::seconds(offset),
            data,
        });
    }

    // Phase 1: the newer half (shuffled); phase 2: the older half (late arrivals) mixed with
    // exact duplicates of phase-1 events.
    let mut by_time: Vec<usize> = (0..events.len()).collect();
    by_time.sort_by_key(|&i| events[i].time);
    let (older, newer) = by_time.split_at(by_time.len() / 2);
    let mut phase1: Vec<Value> = newer.iter().map(|&i| events[i].to_json()).collect();
    phase1.shuffle(&mut rng);
    let mut phase2: Vec<Value> = older.iter().map(|&i| events[i].to_json()).collect();
    phase2.extend(
        phase1
            .choose_multiple(&mut rng, phase1.len() / 10)
            .cloned()
            .collect::<Vec<_>>(),
    );
    phase2.shuffle(&mut rng);

    let wait_seen = |subset: &[Ev]| {
        for event_type in EVENT_TYPES {
            let want = subset.iter().filter(|e| e.event_type == event_type).count() as f64;
            let slug = format!("seen_{event_type}");
            eventually(VISIBLE, || {
                let got = parse_query(&server.query(&slug, &[]))?;
                let value = got.data.first().map_or(0.0, |r| r.value);
                if value == want {
                    Ok(())
                } else {
                    Err(format!("seed {seed}: {slug} is {value}, want {want}"))
                }
            });
        }
    };

    send_events(&server, &mut rng, &phase1);
    let newer_events: Vec<Ev> = newer.iter().map(|&i| events[i].clone()).collect();
    wait_seen(&newer_events);
    // Answer some queries now, so that state exists before the late events arrive.
    for m in meters
        .iter()
        .filter(|m| !matches!(m.created, Created::ApiAfterEvents))
    {
        let q = random_query(&mut rng, m, lo, span);
        let want = reference(m, &newer_events, &q);
        // Meters may lag behind the `seen_*` meters a little: poll.
        if let Err(diff) = try_eventually(VISIBLE, || compare(&q.run(&server, &m.slug), &want)) {
            panic!("seed {seed}, before late events, meter {m:?}\nquery {q:?}\n{diff}");
        }
    }

    send_events(&server, &mut rng, &phase2);
    wait_seen(&events);
    for m in meters
        .iter()
        .filter(|m| matches!(m.created, Created::ApiAfterEvents))
    {
        server.create_meter(&m.create_body());
    }

    // Totals first (waiting for backfilled meters), then random queries.
    for m in &meters {
        let q = Query::total();
        let want = reference(m, &events, &q);
        if let Err(diff) = try_eventually(VISIBLE, || compare(&q.run(&server, &m.slug), &want)) {
            panic!("seed {seed}: total of meter {m:?}\n{diff}");
        }
    }
    let mut failures = Vec::new();
    for m in &meters {
        for _ in 0..8 {
            let q = random_query(&mut rng, m, lo, span);
            let want = reference(m, &events, &q);
            if let Err(diff) = compare(&q.run(&server, &m.slug), &want) {
                failures.push(format!("meter {m:?}\nquery {q:?}\n{diff}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "seed {seed}: {} queries differ from the reference:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn random_scenarios_match_reference() {
    // Seeded random meters, events and queries (see the module docs): every answer equals the
    // reference computed from the distinct events.
    let base: u64 = std::env::var("METRON_PROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::random::<u32>().into());
    let scenarios: u64 = std::env::var("METRON_PROP_SCENARIOS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    println!(
        "query scenarios: seed {base} (replay with METRON_PROP_SEED={base}), {scenarios} scenarios"
    );
    for i in 0..scenarios {
        run_scenario(base.wrapping_add(i));
    }
}

#[test]
fn reference_windows_follow_local_time() {
    // The reference model's windows (no server): local hours in half- and quarter-hour zones,
    // 23 h and 25 h days and DST-aware months in Los Angeles.
    let utc = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    };
    let tz = |name: &str| -> Tz { name.parse().expect("zone") };
    let cases = [
        (
            "MINUTE",
            "Asia/Kathmandu",
            "2025-01-01T10:10:59Z",
            "2025-01-01T10:10:00Z",
            "2025-01-01T10:11:00Z",
        ),
        (
            "HOUR",
            "UTC",
            "2025-01-01T10:10:00Z",
            "2025-01-01T10:00:00Z",
            "2025-01-01T11:00:00Z",
        ),
        (
            "HOUR",
            "Asia/Kolkata",
            "2025-01-01T10:10:00Z",
            "2025-01-01T09:30:00Z",
            "2025-01-01T10:30:00Z",
        ),
        (
            "HOUR",
            "Asia/Kathmandu",
            "2025-01-01T10:10:00Z",
            "2025-01-01T09:15:00Z",
            "2025-01-01T10:15:00Z",
        ),
        (
            "DAY",
            "America/Los_Angeles",
            "2025-03-09T17:00:00Z",
            "2025-03-09T08:00:00Z",
            "2025-03-10T07:00:00Z",
        ),
        (
            "DAY",
            "America/Los_Angeles",
            "2025-11-02T17:00:00Z",
            "2025-11-02T07:00:00Z",
            "2025-11-03T08:00:00Z",
        ),
        (
            "DAY",
            "Asia/Kolkata",
            "2025-01-01T20:00:00Z",
            "2025-01-01T18:30:00Z",
            "2025-01-02T18:30:00Z",
        ),
        (
            "MONTH",
            "America/Los_Angeles",
            "2025-11-15T00:00:00Z",
            "2025-11-01T07:00:00Z",
            "2025-12-01T08:00:00Z",
        ),
        (
            "MONTH",
            "UTC",
            "2025-12-31T23:59:59Z",
            "2025-12-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
        ),
    ];
    for (size, zone, t, start, end) in cases {
        assert_eq!(
            window(size, tz(zone), utc(t)),
            (utc(start), utc(end)),
            "{size} {zone} {t}"
        );
    }
}
