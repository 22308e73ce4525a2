//! Fuzz targets for every parser that reads bytes from outside the process.
//!
//! Each target is a `pub fn NAME(data: &[u8])` that feeds `data` to one parser through
//! its public entry points, then drives whatever the parsed value feeds on the way in
//! (a meter's extraction, a query's evaluation, reads of recovered records, look-ups in
//! a verified run). A target never panics on its own: a panic is a finding in the code
//! under test. Targets that need files write the input, in the layout the reader
//! expects, into a fresh temporary directory (see [`scratch_dir`]).
//!
//! | target      | parser                                                                 |
//! |-------------|------------------------------------------------------------------------|
//! | `events`    | `metron_engine::event::parse_events{,_within}` (every `BodyKind`), then meters |
//! | `jsonpath`  | `metron_engine::jsonpath::JsonPath::parse` + look-ups, Go `%v` texts  |
//! | `filter`    | `metron_engine::filter::StringFilter::parse` + `matches`              |
//! | `query`     | `metron_api::params::Params::parse` + a meter query, as the API builds it |
//! | `segment`   | the embedded log's segment recovery scan and disk reads                |
//! | `dedup_run` | a dedup run file: open/verify (`DedupIndex::open`) and key look-ups    |
//! | `manifest`  | a checkpoint manifest: decode, validate, its dedup checkpoint states   |
//!
//! The read-only SQL check of `storage/src/query.rs` is not a target: it is not a
//! function of its own but the `SQLOptions` of DataFusion inside the async
//! `QueryService::sql`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use metron_api::params::Params;
use metron_connectors::{EmbeddedLog, EmbeddedLogConfig, EventStream};
use metron_engine::aggregate::{AggState, SampleValue};
use metron_engine::event::{
    BodyKind, EventLimits, IngestedEvent, format_time, parse_events, parse_events_within,
};
use metron_engine::filter::StringFilter;
use metron_engine::jsonpath::{Found, JsonPath, go_float_text, go_value_text};
use metron_engine::meter::{CompiledMeter, Extract, MeterCreate};
use metron_engine::quantity::Quantity;
use metron_engine::query::{CUSTOMER_ID, MeterQuery, RollupRow, evaluate};
use metron_engine::window::{MINUTE_MS, WindowSize, floor_minute_ms, parse_zone};
use metron_storage::dedup::{DedupConfig, DedupIndex, DedupState, RunMeta};
use metron_storage::manifest::Manifest;
use serde_json::{Map, Value};

/// A fuzz target.
pub type Target = fn(&[u8]);

/// Every target by name, in the order the README lists them.
pub const TARGETS: &[(&str, Target)] = &[
    ("events", events),
    ("jsonpath", jsonpath),
    ("filter", filter),
    ("query", query),
    ("segment", segment),
    ("dedup_run", dedup_run),
    ("manifest", manifest),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The fixed "now" of every target (2024-01-02T03:04:05Z), so runs are reproducible.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_704_164_645, 0).unwrap_or(DateTime::UNIX_EPOCH)
}

/// A fresh temporary directory for one input, removed when dropped: under
/// `$METRON_FUZZ_TMP` if set, else `/dev/shm` where it exists (fsyncs there cost
/// nothing), else the system's temporary directory.
pub fn scratch_dir() -> Option<tempfile::TempDir> {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        if let Some(dir) = std::env::var_os("METRON_FUZZ_TMP") {
            return PathBuf::from(dir);
        }
        let shm = Path::new("/dev/shm");
        let writable = shm.is_dir()
            && tempfile::Builder::new()
                .prefix("metron-fuzz-probe-")
                .tempdir_in(shm)
                .is_ok();
        if writable {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    });
    tempfile::Builder::new()
        .prefix("metron-fuzz-")
        .tempdir_in(base)
        .ok()
}

/// Splits `data` at the first `sep` (the separator belongs to neither side).
fn split_at_byte(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Takes `n` bytes (fewer when fewer are left) off the front of `data`.
fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = data.split_at(n.min(data.len()));
    *data = tail;
    head
}

fn take_u8(data: &mut &[u8]) -> u8 {
    take(data, 1).first().copied().unwrap_or(0)
}

fn take_u16(data: &mut &[u8]) -> u16 {
    let b = take(data, 2);
    u16::from_le_bytes([
        b.first().copied().unwrap_or(0),
        b.get(1).copied().unwrap_or(0),
    ])
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    data.get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

// ---------------------------------------------------------------------------------------
// events

/// A meter as (aggregation, value property, group-by key and path pairs).
type MeterDef = (
    &'static str,
    Option<&'static str>,
    &'static [(&'static str, &'static str)],
);

/// Meters of every aggregation, with paths that reach into typical data.
fn event_meters() -> &'static [CompiledMeter] {
    static METERS: OnceLock<Vec<CompiledMeter>> = OnceLock::new();
    METERS.get_or_init(|| {
        let defs: [MeterDef; 8] = [
            (
                "SUM",
                Some("$.tokens"),
                &[("model", "$.model"), ("nested", "$.a.b[0]")],
            ),
            ("COUNT", None, &[("type", "$.type"), ("all", "$")]),
            ("UNIQUE_COUNT", Some("$.user"), &[]),
            ("AVG", Some("$.value"), &[("model", "$['model']")]),
            ("MIN", Some("$.value"), &[]),
            ("MAX", Some("$[\"value\"]"), &[]),
            ("LATEST", Some("$.list[1]"), &[]),
            ("SUM", Some("$"), &[]),
        ];
        defs.iter()
            .enumerate()
            .filter_map(|(i, (aggregation, value, group_by))| {
                let create = MeterCreate {
                    slug: format!("m{i}"),
                    name: None,
                    description: None,
                    metadata: None,
                    aggregation: (*aggregation).to_owned(),
                    event_type: "prompt".to_owned(),
                    event_from: DateTime::from_timestamp(1_700_000_000, 0),
                    value_property: value.map(str::to_owned),
                    group_by: Some(
                        group_by
                            .iter()
                            .map(|(k, p)| ((*k).to_owned(), (*p).to_owned()))
                            .collect(),
                    ),
                };
                create
                    .into_meter(format!("id{i}"), metron_engine::DEFAULT_NAMESPACE, now())
                    .ok()
                    .map(|m| m.compile())
            })
            .collect()
    })
}

/// Folds a sample into a state the way the rollup actors do, and prints its value.
fn aggregate(meter: &CompiledMeter, sample: &SampleValue, time_ms: i64) {
    if let Some(mut state) = AggState::from_sample(meter.aggregation, sample, time_ms) {
        state.fold(sample, time_ms.saturating_add(1));
        let other = state.clone();
        state.merge(&other);
        let value = state.value();
        let _ = value.to_string();
        let _ = value.format_fixed6();
        let _ = value.to_decimal();
        let _ = state.size_bytes();
    }
}

/// Limits small enough for short inputs to hit each of them.
const TIGHT_LIMITS: EventLimits = EventLimits {
    events_per_request_max: 3,
    attribute_bytes_max: 8,
    data_values_max: 6,
};

/// An ingest request body: parsed as each `BodyKind` (with the default limits, then
/// with tight ones); every accepted event goes through the stream's record encoding
/// and every meter. The body is also read as a stream record payload
/// (`IngestedEvent::decode`).
pub fn events(data: &[u8]) {
    let now = now();
    for kind in [BodyKind::Single, BodyKind::Batch, BodyKind::Json] {
        let _ = parse_events_within(data, kind, now, &TIGHT_LIMITS);
        let Ok(events) = parse_events(data, kind, now) else {
            continue;
        };
        for event in events {
            let time_ms = event.time.timestamp_millis();
            let _ = format_time(&event.time);
            for meter in event_meters() {
                let _ = meter.matches(&event);
                if let Extract::Sample(sample) = meter.extract_data(event.data.as_ref()) {
                    aggregate(meter, &sample.value, time_ms);
                }
            }
            let record = IngestedEvent {
                namespace: metron_engine::DEFAULT_NAMESPACE.to_owned(),
                ingested_at: now,
                event,
            };
            let _ = IngestedEvent::decode(&record.encode());
        }
    }
    let _ = IngestedEvent::decode(data);
}

// ---------------------------------------------------------------------------------------
// jsonpath

/// `PATH \n JSON`: the path is compiled and looked up in the document (a fixed one
/// when the rest is not JSON), directly and as a meter's value property and group-by.
/// The first 8 bytes are also printed as a float the way Go's `%v` does.
pub fn jsonpath(data: &[u8]) {
    if let Some(bytes) = data.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
        let _ = go_float_text(f64::from_le_bytes(bytes));
    }
    let (path_bytes, doc_bytes) = split_at_byte(data, b'\n');
    let text = String::from_utf8_lossy(path_bytes);
    let doc: Value = serde_json::from_slice(doc_bytes).unwrap_or_else(|_| {
        serde_json::json!({"a": {"b c": [10, {"d": "x"}], "n": 1.5e300},
                           "list": [1, "2", null, true], "": {"": 0}})
    });
    let _ = go_value_text(&doc);
    let Ok(path) = JsonPath::parse(&text) else {
        return;
    };
    if let Some(found) = path.lookup(&doc) {
        let _ = go_value_text(found);
    }
    let empty = Map::new();
    let data_map = doc.as_object().unwrap_or(&empty);
    if let Found::Value(found) = path.lookup_in(data_map) {
        let _ = go_value_text(found);
    }
    for aggregation in ["SUM", "UNIQUE_COUNT", "LATEST"] {
        let create = MeterCreate {
            slug: "m".to_owned(),
            name: None,
            description: None,
            metadata: None,
            aggregation: aggregation.to_owned(),
            event_type: "t".to_owned(),
            event_from: None,
            value_property: Some(text.to_string()),
            group_by: Some(BTreeMap::from([("k".to_owned(), text.to_string())])),
        };
        // A group-by path equal to the value property is refused: try it alone too.
        let mut alone = create.clone();
        alone.group_by = None;
        for create in [create, alone] {
            if let Ok(meter) = create.into_meter("id".to_owned(), "default", now()) {
                let compiled = meter.compile();
                let _ = compiled.extract_data(Some(data_map));
                let _ = compiled.extract_data(None);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// filter

/// Strings a filter is matched against besides those of the filter itself: empty,
/// LIKE metacharacters, and characters whose lower case has another length.
const FILTER_PROBES: &[&str] = &[
    "", "a", "gpt-4o", "%", "_", "\\", "\\%", "a%b_c", "İ", "ǅ", "ß", "Σσς", "\u{0}",
];

/// Collects up to `max` strings (object keys and string values) from a JSON value.
fn strings_of<'v>(value: &'v Value, out: &mut Vec<&'v str>, max: usize) {
    if out.len() >= max {
        return;
    }
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| strings_of(v, out, max)),
        Value::Object(map) => {
            for (k, v) in map {
                if out.len() < max {
                    out.push(k);
                }
                strings_of(v, out, max);
            }
        }
        _ => {}
    }
}

/// A `FilterString` JSON object, parsed and matched against absent values, fixed
/// probes and every string in the filter (so LIKE patterns meet themselves).
pub fn filter(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(parsed) = StringFilter::parse(&value) else {
        return;
    };
    let mut probes: Vec<&str> = FILTER_PROBES.to_vec();
    strings_of(&value, &mut probes, FILTER_PROBES.len() + 32);
    let _ = parsed.matches(None);
    for probe in &probes {
        let _ = parsed.matches(Some(probe));
    }
}

// ---------------------------------------------------------------------------------------
// query

/// The group-by keys of the meter the `query` target queries.
const QUERY_GROUP_KEYS: [&str; 2] = ["model", "type"];

/// Milliseconds since the epoch of an RFC 3339 time (0 if it does not parse).
fn ms(text: &str) -> i64 {
    metron_engine::event::parse_time(text).map_or(0, |t| t.timestamp_millis())
}

/// The minute rollups the `query` target evaluates: around DST changes, at the ends
/// of the times events may carry (years 0000 and 9999), at the epoch and at the
/// query's own bounds.
fn query_rows(query: &MeterQuery) -> Vec<RollupRow> {
    let mut minutes = vec![
        0,
        ms("2024-01-01T10:00:00Z"),
        ms("2024-01-01T10:00:00Z"),
        ms("2025-03-09T07:59:00Z"),
        ms("2025-03-09T08:00:00Z"),
        ms("2024-10-27T00:59:00Z"),
        ms("2024-10-27T01:00:00Z"),
        ms("2024-02-29T23:59:00Z"),
        ms("0000-01-01T00:00:00Z"),
        ms("9999-12-31T23:59:00Z"),
    ];
    for bound in [query.from, query.to].into_iter().flatten() {
        let at = floor_minute_ms(bound.timestamp_millis());
        minutes.extend([
            at.saturating_sub(MINUTE_MS),
            at,
            at.saturating_add(MINUTE_MS),
        ]);
    }
    let mut subjects = vec!["a".to_owned(), "b".to_owned()];
    subjects.extend(query.subjects.first().cloned());
    subjects.extend(query.customers.keys().next().cloned());
    let groups: Vec<Vec<String>> = vec![
        vec!["gpt-4".to_owned(), "chat".to_owned()],
        vec!["gpt-3".to_owned(), String::new()],
        query
            .filters
            .keys()
            .map(|k| format!("{k}-value"))
            .chain(std::iter::repeat(String::new()))
            .take(QUERY_GROUP_KEYS.len())
            .collect(),
    ];
    let mut rows = Vec::new();
    for (i, minute_ms) in minutes.into_iter().enumerate() {
        let subject = subjects[i % subjects.len()].clone();
        let group = groups[i % groups.len()].clone();
        let state = match i % 3 {
            0 => AggState::Sum(quantity_from(i)),
            1 => AggState::Sum(quantity_from(i * 1000 + 7)),
            _ => AggState::Sum(quantity_from(1)),
        };
        rows.push(RollupRow {
            minute_ms,
            subject,
            group,
            state,
        });
    }
    rows
}

fn quantity_from(n: usize) -> Quantity {
    Quantity::from_u64(n as u64)
}

/// A meter query string (`GET /api/v1/meters/{meter}/query?...`): parsed with
/// `Params::parse`, turned into a `MeterQuery` with the checks of the API's
/// `build_query` (private to the api crate, so mirrored here with the same public
/// engine functions), then evaluated over fixed minute rollups.
pub fn query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(params) = Params::parse(&text) else {
        return;
    };
    // Other reads the list endpoints make of a query string.
    let _ = params.usize_in("limit", 100, 1, 1000);
    let _ = params.usize_in("page", 1, 1, usize::MAX);
    let _ = params.bool("includeDeleted");
    let _ = params.time("ingestedAtFrom");
    let _ = params.all("id");
    let _ = params.one("clientId");

    let (Ok(from), Ok(to)) = (params.time("from"), params.time("to")) else {
        return;
    };
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return;
    }
    let window_size = match params.one("windowSize") {
        None => None,
        Some(text) => match WindowSize::parse(text) {
            Some(size) => Some(size),
            None => return,
        },
    };
    let time_zone: Tz = match params.one("windowTimeZone") {
        None | Some("") => Tz::UTC,
        Some(name) => match parse_zone(name) {
            Some(tz) => tz,
            None => return,
        },
    };
    // `filterCustomerId` resolves through the catalog in the API; here each id is
    // its own customer's one subject.
    let customers: BTreeMap<String, String> = params
        .all("filterCustomerId")
        .into_iter()
        .take(100)
        .map(|id| (format!("subject-of-{id}"), id))
        .collect();
    let mut group_by = params.all("groupBy");
    let known = |key: &str| QUERY_GROUP_KEYS.contains(&key);
    if customers.is_empty() && group_by.iter().any(|g| g == CUSTOMER_ID) {
        return;
    }
    if group_by
        .iter()
        .any(|k| k != "subject" && k != CUSTOMER_ID && !known(k))
    {
        return;
    }
    let simple = params.map("filterGroupBy");
    let advanced = match params.one("advancedMeterGroupByFilters") {
        None => None,
        Some(text) => match serde_json::from_str::<BTreeMap<String, Value>>(text) {
            Ok(map) => Some(map),
            Err(_) => return,
        },
    };
    if !simple.is_empty() && advanced.is_some() {
        return;
    }
    let mut filters = BTreeMap::new();
    for (key, value) in simple {
        if !known(&key) {
            return;
        }
        filters.insert(key, StringFilter::Eq(value));
    }
    for (key, value) in advanced.unwrap_or_default() {
        if !known(&key) {
            return;
        }
        let Ok(filter) = StringFilter::parse(&value) else {
            return;
        };
        filters.insert(key, filter);
    }
    group_by.dedup();
    if !customers.is_empty() && !group_by.iter().any(|g| g == CUSTOMER_ID) {
        group_by.push(CUSTOMER_ID.to_owned());
    }
    let query = MeterQuery {
        from,
        to,
        window_size,
        time_zone,
        subjects: params.all("subject"),
        group_by,
        filters,
        customers,
    };
    let keys: Vec<String> = QUERY_GROUP_KEYS.iter().map(|k| (*k).to_owned()).collect();
    let _ = query.minute_range_ms();
    let _ = query.subjects_to_scan();
    for row in evaluate(&keys, &query, query_rows(&query)) {
        let _ = format_time(&row.window_start);
        let _ = format_time(&row.window_end);
        let _ = row.value.to_string();
    }
}

// ---------------------------------------------------------------------------------------
// segment

/// The partition count file of a stream with one partition, as the log writes it.
const STREAM_META: &[u8] = b"metron-embedded-log 1\npartitions=1\n";

/// Rewrites the crc of every whole frame of a segment image, so that mutated lengths
/// and payloads still get past the crc check.
fn fix_frame_crcs(segment: &mut [u8]) {
    let mut pos = 0usize;
    while let Some(header) = segment.get(pos..pos + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|l| (pos + 8).checked_add(l))
            .filter(|&end| end <= segment.len())
        else {
            return;
        };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&len.to_le_bytes());
        hasher.update(&segment[pos + 8..end]);
        segment[pos + 4..pos + 8].copy_from_slice(&hasher.finalize().to_le_bytes());
        pos = end;
    }
}

/// Reads every record of partition 0, `batch` at a time, then each of the first 16
/// offsets on its own and one offset past the end.
async fn read_all(log: &EmbeddedLog, batch: usize) {
    let (Ok(earliest), Ok(end)) = (log.earliest_offset(0), log.end_offset(0)) else {
        return;
    };
    let mut from = earliest;
    while from < end {
        match log.read(0, from, batch, Duration::ZERO).await {
            Ok(records) => {
                let Some(last) = records.last() else {
                    break;
                };
                for record in &records {
                    let _ = IngestedEvent::decode(&record.payload);
                }
                from = last.offset.saturating_add(1);
            }
            Err(_) => break,
        }
    }
    for offset in (earliest..end).take(16) {
        let _ = log.read(0, offset, 2, Duration::ZERO).await;
    }
    let _ = log.read(0, end.saturating_add(1), 1, Duration::ZERO).await;
}

/// Segment files of an embedded log partition, recovered by `EmbeddedLog::open`
/// (scan, crc checks, torn-tail truncation) and read back from disk.
///
/// Input: a flags byte, then (if flag 3) a length byte and that many bytes of
/// `stream.meta`, then for each segment a base-offset delta byte and, except for the
/// last segment, a u16 LE length; the last segment takes the rest.
/// Flags: bits 0–1 segments − 1; bit 2 fix every whole frame's crc; bit 3 custom
/// `stream.meta`; bit 4 reopen after closing; bits 5–6 records per read (1, 3, 7,
/// 1000); bit 7 append a record after recovery.
pub fn segment(data: &[u8]) {
    let mut rest = data;
    let flags = take_u8(&mut rest);
    let segments = usize::from(flags & 0b11) + 1;
    let meta: Vec<u8> = if flags & 0b1000 != 0 {
        let len = usize::from(take_u8(&mut rest));
        take(&mut rest, len).to_vec()
    } else {
        STREAM_META.to_vec()
    };
    let mut files: Vec<(u64, Vec<u8>)> = Vec::with_capacity(segments);
    let mut base = 0u64;
    for i in 0..segments {
        base += u64::from(take_u8(&mut rest));
        let body = if i + 1 == segments {
            take(&mut rest, usize::MAX)
        } else {
            let len = usize::from(take_u16(&mut rest));
            take(&mut rest, len)
        };
        let mut body = body.to_vec();
        if flags & 0b100 != 0 {
            fix_frame_crcs(&mut body);
        }
        files.push((base, body));
    }
    let batch = [1, 3, 7, 1000][usize::from((flags >> 5) & 0b11)];

    let Some(dir) = scratch_dir() else {
        return;
    };
    let stream_dir = dir.path().join("stream");
    let partition_dir = stream_dir.join("p-00000");
    if std::fs::create_dir_all(&partition_dir).is_err()
        || std::fs::write(stream_dir.join("stream.meta"), &meta).is_err()
    {
        return;
    }
    for (base, body) in &files {
        if std::fs::write(partition_dir.join(format!("{base:020}.seg")), body).is_err() {
            return;
        }
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return;
    };
    let config = EmbeddedLogConfig {
        partitions: 1,
        segment_bytes_max: 4096,
        queue_batches_max: 16,
        record_bytes_max: 1 << 16,
        tail_cache_bytes_max: 1024,
    };
    runtime.block_on(async {
        let Ok(log) = EmbeddedLog::open(&stream_dir, config.clone()) else {
            return;
        };
        read_all(&log, batch).await;
        if flags & 0x80 != 0 {
            let payload = bytes::Bytes::from_static(b"{\"appended\":true}");
            if log.append(0, vec![payload]).await.is_ok() {
                read_all(&log, batch).await;
            }
        }
        log.close();
        drop(log);
        if flags & 0x10 != 0
            && let Ok(log) = EmbeddedLog::open(&stream_dir, config)
        {
            read_all(&log, batch).await;
            log.close();
        }
    });
}

// ---------------------------------------------------------------------------------------
// dedup_run

/// The name the `dedup_run` target writes its run file under.
const RUN_FILE: &str = "run-0000000000000001.dat";
const RUN_HEADER: usize = 48;
const RUN_TRAILER: usize = 8;
const RUN_KEY: usize = 16;

/// The smallest memory budget (64 KiB): a memory tier of 1024 keys.
fn small_dedup_config() -> DedupConfig {
    DedupConfig {
        horizon_ms: 24 * 60 * 60 * 1000,
        memory_budget_bytes: 64 << 10,
        memory_keys_max: 1024,
        ..DedupConfig::default()
    }
}

/// Sets magic, version and key count of a run image from its length.
fn fix_run_header(file: &mut [u8]) {
    if file.len() < RUN_HEADER {
        return;
    }
    file[0..8].copy_from_slice(b"MTRDEDUP");
    file[8..12].copy_from_slice(&1u32.to_le_bytes());
    let keys = file.len().saturating_sub(RUN_HEADER + RUN_TRAILER) / RUN_KEY;
    file[16..24].copy_from_slice(&(keys as u64).to_le_bytes());
}

/// Sets the body checksum in the header and the header checksum in the trailer.
fn fix_run_checksums(file: &mut [u8]) {
    let len = file.len();
    if len < RUN_HEADER + RUN_TRAILER {
        return;
    }
    let body = xxhash_rust::xxh3::xxh3_64(&file[RUN_HEADER..len - RUN_TRAILER]);
    file[40..48].copy_from_slice(&body.to_le_bytes());
    let header = xxhash_rust::xxh3::xxh3_64(&file[..RUN_HEADER]);
    file[len - RUN_TRAILER..].copy_from_slice(&header.to_le_bytes());
}

/// A dedup run file, opened and verified by `DedupIndex::open` from a checkpoint state
/// naming it; when it opens, every stored key, its neighbours and the midpoints
/// between neighbours are looked up (interpolation search over the file).
///
/// Input: a flags byte, then the file. Flags: bit 0 fix magic, version and key count;
/// bit 1 fix both checksums; bit 2 the state's key count is off by one; bits 3–4 the
/// name in the state (0 the file's, 1 another valid name, 2 and 3 invalid names).
pub fn dedup_run(data: &[u8]) {
    let Some((&flags, file)) = data.split_first() else {
        return;
    };
    let mut file = file.to_vec();
    if flags & 1 != 0 {
        fix_run_header(&mut file);
    }
    if flags & 2 != 0 {
        fix_run_checksums(&mut file);
    }
    let mut meta = RunMeta {
        file_name: RUN_FILE.to_owned(),
        keys: u64_at(&file, 16),
        first_insert_ms: u64_at(&file, 24) as i64,
        last_insert_ms: u64_at(&file, 32) as i64,
        checksum: None,
    };
    if flags & 4 != 0 {
        meta.keys = meta.keys.wrapping_add(1);
    }
    meta.file_name = match (flags >> 3) & 0b11 {
        0 => RUN_FILE,
        1 => "run-0000000000000002.dat",
        2 => "run-000000000000000A.dat",
        _ => "../run-0000000000000001.dat",
    }
    .to_owned();
    let now_ms = meta.last_insert_ms;

    let Some(dir) = scratch_dir() else {
        return;
    };
    let index_dir = dir.path().join("dedup");
    if std::fs::create_dir_all(&index_dir).is_err()
        || std::fs::write(index_dir.join(RUN_FILE), &file).is_err()
    {
        return;
    }
    let state = DedupState { runs: vec![meta] };
    let Ok(mut index) = DedupIndex::open(&index_dir, small_dedup_config(), Some(&state)) else {
        return;
    };
    let body = file
        .get(RUN_HEADER..file.len().saturating_sub(RUN_TRAILER))
        .unwrap_or(&[]);
    let stored: Vec<u128> = body
        .chunks_exact(RUN_KEY)
        .filter_map(|c| <[u8; 16]>::try_from(c).ok())
        .map(u128::from_be_bytes)
        .collect();
    let mut probes = vec![0, 1, u128::MAX, u128::MAX / 2];
    for pair in stored.windows(2).take(300) {
        let (a, b) = (pair[0], pair[1]);
        probes.extend([a, a.wrapping_add(1), a.wrapping_sub(1), a / 2 + b / 2]);
    }
    probes.extend(stored.last().map(|k| k.wrapping_add(1)));
    // Fewer new keys than the memory tier holds, so nothing spills to a new run.
    probes.truncate(1000);
    for chunk in probes.chunks(250) {
        if index.insert_batch(chunk, now_ms).is_err() {
            break;
        }
    }
    let _ = index.stats();
}

// ---------------------------------------------------------------------------------------
// manifest

/// A checkpoint manifest (`checkpoints/manifest-<epoch>.json`): decoded and validated
/// as `manifest::load_latest` does, written back as `manifest::write` does, and each
/// partition's dedup runs turned into the state a `DedupIndex` opens from at start-up
/// (no run files exist, so a named run is missing).
pub fn manifest(data: &[u8]) {
    let Ok(manifest) = serde_json::from_slice::<Manifest>(data) else {
        return;
    };
    let partitions = u32::try_from(manifest.partitions.len()).unwrap_or(u32::MAX);
    let valid = manifest.validate(partitions).is_ok();
    let _ = manifest.validate(1);
    let path = metron_storage::paths::manifest(manifest.epoch);
    let _ = metron_storage::paths::manifest_epoch(&path);
    for file in &manifest.event_files {
        let _ = file.may_hold(None, None);
        if let Some((lo, hi)) = file.times_us {
            let _ = file.may_hold(Some(lo), Some(hi));
            let _ = file.may_hold(Some(hi.saturating_add(1)), Some(lo.saturating_sub(1)));
        }
    }
    if let Ok(bytes) = serde_json::to_vec_pretty(&manifest) {
        let _ = serde_json::from_slice::<Manifest>(&bytes);
    }
    if !valid {
        return;
    }
    let Some(dir) = scratch_dir() else {
        return;
    };
    for partition in manifest.partitions.iter().take(4) {
        let state = partition.dedup_state();
        let index_dir = dir
            .path()
            .join("dedup")
            .join(format!("p-{:05}", partition.partition));
        let _ = DedupIndex::open(&index_dir, small_dedup_config(), Some(&state));
    }
}
