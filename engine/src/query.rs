//! Meter queries over minute rollups: filters, groups, windows in a time zone.
//!
//! The input is any set of minute rollups (from memory, from Parquet, both; a
//! (minute, subject, group) key may appear more than once, since late events add
//! deltas): states merge, so the answer does not depend on how they were split.

use crate::aggregate::AggState;
use crate::filter::StringFilter;
use crate::quantity::Quantity;
use crate::window::{MINUTE_MS, Window, WindowSize, floor_minute_ms, utc_from_ms, window_of};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::collections::{BTreeMap, HashMap};

/// One minute's aggregate for one subject and one set of group-by values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    /// Start of the UTC minute, in milliseconds since the epoch.
    pub minute_ms: i64,
    pub subject: String,
    /// Group-by values in the meter's group-by key order.
    pub group: Vec<String>,
    pub state: AggState,
}

/// What a meter query asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterQuery {
    /// Inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: Option<DateTime<Utc>>,
    pub window_size: Option<WindowSize>,
    pub time_zone: Tz,
    /// Only these subjects (empty: all).
    pub subjects: Vec<String>,
    /// Dimensions of the answer: `subject` and/or group-by keys of the meter.
    pub group_by: Vec<String>,
    /// Filters on group-by values, by key.
    pub filters: BTreeMap<String, StringFilter>,
    /// Customer filter (OpenMeter's `filterCustomerId`): subject → customer id of the
    /// customers asked for. When not empty, only these subjects count and each row of
    /// the answer carries its customer id (`groupBy=customer_id`).
    pub customers: BTreeMap<String, String>,
}

impl Default for MeterQuery {
    fn default() -> Self {
        Self {
            from: None,
            to: None,
            window_size: None,
            time_zone: Tz::UTC,
            subjects: Vec::new(),
            group_by: Vec::new(),
            filters: BTreeMap::new(),
            customers: BTreeMap::new(),
        }
    }
}

/// One row of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRow {
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub subject: Option<String>,
    /// The customer of the row's subjects, when the query filters by customer.
    pub customer_id: Option<String>,
    /// Every requested group-by key (not `subject`, not `customer_id`) with its value.
    pub group_by: BTreeMap<String, Option<String>>,
    pub value: Quantity,
}

impl MeterQuery {
    /// The minutes a query reads: those that overlap `[from, to)` (meters have
    /// minute resolution, like OpenMeter's).
    pub fn minute_range_ms(&self) -> (i64, i64) {
        let lo = self
            .from
            .map_or(i64::MIN, |f| floor_minute_ms(f.timestamp_millis()));
        let hi = self.to.map_or(i64::MAX, |t| t.timestamp_millis());
        (lo, hi)
    }

    /// Does a rollup row pass the time, subject and group filters?
    pub fn admits(&self, group_keys: &[String], row: &RollupRow) -> bool {
        let (lo, hi) = self.minute_range_ms();
        if row.minute_ms < lo || row.minute_ms >= hi {
            return false;
        }
        if !self.subjects.is_empty() && !self.subjects.contains(&row.subject) {
            return false;
        }
        if !self.customers.is_empty() && !self.customers.contains_key(&row.subject) {
            return false;
        }
        self.filters.iter().all(|(key, filter)| {
            let value = group_keys
                .iter()
                .position(|k| k == key)
                .and_then(|i| row.group.get(i));
            filter.matches(value.map(String::as_str))
        })
    }

    /// Whether the answer carries subjects: asked for, or implied by a subject filter.
    pub fn groups_by_subject(&self) -> bool {
        !self.subjects.is_empty() || self.group_by.iter().any(|g| g == "subject")
    }

    /// Whether the answer carries customer ids: asked for, or implied by a customer filter.
    pub fn groups_by_customer(&self) -> bool {
        !self.customers.is_empty() || self.group_by.iter().any(|g| g == CUSTOMER_ID)
    }

    /// Subjects a scan may be pruned to: the subject filter, else the customers' subjects.
    pub fn subjects_to_scan(&self) -> Vec<String> {
        if self.subjects.is_empty() {
            self.customers.keys().cloned().collect()
        } else {
            self.subjects.clone()
        }
    }
}

/// The group-by name of a row's customer.
pub const CUSTOMER_ID: &str = "customer_id";

type GroupKey = (i64, Option<String>, Option<String>, Vec<String>);

/// Folds minute rollups into the query's answer, ordered by window start, subject, groups.
pub fn evaluate(
    group_keys: &[String],
    query: &MeterQuery,
    rows: impl IntoIterator<Item = RollupRow>,
) -> Vec<ResultRow> {
    let by_subject = query.groups_by_subject();
    let by_customer = query.groups_by_customer();
    let picked: Vec<(String, Option<usize>)> = query
        .group_by
        .iter()
        .filter(|g| *g != "subject" && *g != CUSTOMER_ID)
        .map(|g| (g.clone(), group_keys.iter().position(|k| k == g)))
        .collect();
    let mut windows: HashMap<i64, Window> = HashMap::new();
    let mut groups: HashMap<GroupKey, (Window, AggState)> = HashMap::new();
    for row in rows {
        if !query.admits(group_keys, &row) {
            continue;
        }
        let window = match query.window_size {
            Some(size) => *windows
                .entry(row.minute_ms)
                .or_insert_with(|| window_of(utc_from_ms(row.minute_ms), size, query.time_zone)),
            // Without a window size each group spans its own first to last minute,
            // as OpenMeter's min(time)/max(time) per group.
            None => Window {
                start: utc_from_ms(row.minute_ms),
                end: utc_from_ms(row.minute_ms.saturating_add(MINUTE_MS)),
            },
        };
        let subject = by_subject.then(|| row.subject.clone());
        let values = picked
            .iter()
            .map(|(_, i)| {
                i.and_then(|i| row.group.get(i))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        let bucket = match query.window_size {
            Some(_) => window.start.timestamp_millis(),
            None => 0,
        };
        let customer = by_customer
            .then(|| query.customers.get(&row.subject).cloned())
            .flatten();
        let key = (bucket, subject, customer, values);
        match groups.get_mut(&key) {
            Some((span, state)) => {
                state.merge(&row.state);
                span.start = span.start.min(window.start);
                span.end = span.end.max(window.end);
            }
            None => {
                groups.insert(key, (window, row.state));
            }
        }
    }
    let mut out: Vec<ResultRow> = groups
        .into_iter()
        .map(|((_, subject, customer_id, values), (window, state))| {
            let (start, end) = match query.window_size {
                Some(_) => (window.start, window.end),
                None => (
                    query.from.unwrap_or(window.start),
                    query.to.unwrap_or(window.end),
                ),
            };
            ResultRow {
                window_start: start,
                window_end: end,
                subject,
                customer_id,
                group_by: picked
                    .iter()
                    .map(|(k, _)| k.clone())
                    .zip(values.into_iter().map(Some))
                    .collect(),
                value: state.value(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (a.window_start, &a.customer_id, &a.subject, &a.group_by).cmp(&(
            b.window_start,
            &b.customer_id,
            &b.subject,
            &b.group_by,
        ))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{format_time, parse_time};
    use crate::window::parse_zone;

    fn ms(text: &str) -> i64 {
        parse_time(text)
            .map(|t| t.timestamp_millis())
            .unwrap_or_default()
    }

    fn row(minute: &str, subject: &str, model: &str, v: i64) -> RollupRow {
        RollupRow {
            minute_ms: ms(minute),
            subject: subject.into(),
            group: vec![model.into()],
            state: AggState::Sum(Quantity::from_i64(v)),
        }
    }

    fn keys() -> Vec<String> {
        vec!["model".to_owned()]
    }

    #[test]
    fn total_without_window_spans_first_to_last_minute() {
        let rows = vec![
            row("2024-01-01T10:00:00Z", "a", "x", 1),
            row("2024-01-02T10:00:00Z", "b", "y", 2),
        ];
        let out = evaluate(&keys(), &MeterQuery::default(), rows);
        assert_eq!(out.len(), 1);
        assert_eq!(format_time(&out[0].window_start), "2024-01-01T10:00:00Z");
        assert_eq!(format_time(&out[0].window_end), "2024-01-02T10:01:00Z");
        assert_eq!(out[0].value, Quantity::from_i64(3));
        assert_eq!(out[0].subject, None);
    }

    #[test]
    fn duplicate_keys_merge_and_filters_apply() {
        let rows = vec![
            row("2024-01-01T10:00:00Z", "a", "x", 1),
            row("2024-01-01T10:00:00Z", "a", "x", 5),
            row("2024-01-01T11:00:00Z", "a", "y", 7),
            row("2024-01-01T11:30:00Z", "b", "x", 100),
        ];
        let query = MeterQuery {
            window_size: Some(WindowSize::Hour),
            subjects: vec!["a".into()],
            group_by: vec!["model".into()],
            ..MeterQuery::default()
        };
        let out = evaluate(&keys(), &query, rows.clone());
        let got: Vec<(String, Option<String>, Option<String>, String)> = out
            .iter()
            .map(|r| {
                (
                    format_time(&r.window_start),
                    r.subject.clone(),
                    r.group_by["model"].clone(),
                    r.value.to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "2024-01-01T10:00:00Z".into(),
                    Some("a".into()),
                    Some("x".into()),
                    "6".into()
                ),
                (
                    "2024-01-01T11:00:00Z".into(),
                    Some("a".into()),
                    Some("y".into()),
                    "7".into()
                ),
            ]
        );
        let filtered = MeterQuery {
            filters: BTreeMap::from([("model".to_owned(), StringFilter::Eq("x".into()))]),
            from: parse_time("2024-01-01T10:00:30Z"),
            to: parse_time("2024-01-01T11:30:00Z"),
            ..MeterQuery::default()
        };
        let out = evaluate(&keys(), &filtered, rows);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value, Quantity::from_i64(6));
        assert_eq!(format_time(&out[0].window_start), "2024-01-01T10:00:30Z");
    }

    // A customer filter keeps only its customers' subjects and merges them per customer.
    #[test]
    fn customers_filter_and_group() {
        let rows = vec![
            row("2024-01-01T10:00:00Z", "a1", "x", 1),
            row("2024-01-01T10:05:00Z", "a2", "x", 2),
            row("2024-01-01T10:06:00Z", "b1", "x", 4),
            row("2024-01-01T10:07:00Z", "stranger", "x", 100),
        ];
        let query = MeterQuery {
            customers: BTreeMap::from([
                ("a1".to_owned(), "A".to_owned()),
                ("a2".to_owned(), "A".to_owned()),
                ("b1".to_owned(), "B".to_owned()),
            ]),
            group_by: vec![CUSTOMER_ID.into()],
            ..MeterQuery::default()
        };
        let out = evaluate(&keys(), &query, rows);
        let got: Vec<(Option<String>, Option<String>, String, usize)> = out
            .iter()
            .map(|r| {
                (
                    r.customer_id.clone(),
                    r.subject.clone(),
                    r.value.to_string(),
                    r.group_by.len(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("A".into()), None, "3".into(), 0),
                (Some("B".into()), None, "4".into(), 0),
            ]
        );
    }

    #[test]
    fn days_in_a_zone() {
        let rows = vec![
            row("2025-03-09T07:59:00Z", "a", "x", 1),
            row("2025-03-09T08:00:00Z", "a", "x", 2),
        ];
        let query = MeterQuery {
            window_size: Some(WindowSize::Day),
            time_zone: parse_zone("America/Los_Angeles").unwrap_or(Tz::UTC),
            ..MeterQuery::default()
        };
        let out = evaluate(&keys(), &query, rows);
        assert_eq!(out.len(), 2);
        assert_eq!(format_time(&out[1].window_start), "2025-03-09T08:00:00Z");
        assert_eq!(format_time(&out[1].window_end), "2025-03-10T07:00:00Z");
    }
}
