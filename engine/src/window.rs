//! Tumbling windows (MINUTE, HOUR, DAY, MONTH) in any IANA time zone, DST-correct.
//!
//! Aggregates are kept per UTC minute. Every zone's offset is a whole number of
//! minutes, so a minute never straddles a window edge and any window is a union of
//! minutes: coarser windows are computed at query time.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A window size of a meter query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WindowSize {
    Minute,
    Hour,
    Day,
    Month,
}

impl WindowSize {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "MINUTE" => Some(Self::Minute),
            "HOUR" => Some(Self::Hour),
            "DAY" => Some(Self::Day),
            "MONTH" => Some(Self::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "MINUTE",
            Self::Hour => "HOUR",
            Self::Day => "DAY",
            Self::Month => "MONTH",
        }
    }
}

/// Milliseconds in a minute.
pub const MINUTE_MS: i64 = 60_000;

/// The start of the UTC minute holding `time_ms` (milliseconds since the epoch).
pub fn floor_minute_ms(time_ms: i64) -> i64 {
    time_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// A UTC instant from milliseconds since the epoch (clamped to chrono's range).
pub fn utc_from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Parses an IANA zone name.
pub fn parse_zone(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

/// One window: `[start, end)` in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The window of `size` in zone `tz` that holds `time`.
pub fn window_of(time: DateTime<Utc>, size: WindowSize, tz: Tz) -> Window {
    match size {
        WindowSize::Minute => {
            let start = utc_from_ms(floor_minute_ms(time.timestamp_millis()));
            Window {
                start,
                end: start + Duration::minutes(1),
            }
        }
        WindowSize::Hour => {
            // Offsets change on whole local hours, so the local minutes and seconds
            // past the hour are the distance to the window start in absolute time too.
            let local = time.with_timezone(&tz);
            let past = Duration::minutes(i64::from(local.minute()))
                + Duration::seconds(i64::from(local.second()))
                + Duration::nanoseconds(i64::from(local.nanosecond()));
            let start = time - past;
            Window {
                start,
                end: start + Duration::hours(1),
            }
        }
        WindowSize::Day => {
            let date = time.with_timezone(&tz).date_naive();
            let next = date.succ_opt().unwrap_or(date);
            Window {
                start: local_midnight(tz, date),
                end: local_midnight(tz, next),
            }
        }
        WindowSize::Month => {
            let date = time.with_timezone(&tz).date_naive();
            let first = date.with_day(1).unwrap_or(date);
            let next = if first.month() == 12 {
                NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
            }
            .unwrap_or(first);
            Window {
                start: local_midnight(tz, first),
                end: local_midnight(tz, next),
            }
        }
    }
}

/// The instant a local date begins in `tz`: local midnight, or where a DST gap
/// swallows midnight, the first local time of that date that exists.
pub fn local_midnight(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or(NaiveDateTime::MIN);
    let mut candidate = midnight;
    for _ in 0..=(24 * 4) {
        match tz.from_local_datetime(&candidate) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(earliest, _) => return earliest.with_timezone(&Utc),
            LocalResult::None => candidate += Duration::minutes(15),
        }
    }
    Utc.from_utc_datetime(&midnight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{format_time, parse_time};

    fn t(text: &str) -> DateTime<Utc> {
        parse_time(text).unwrap_or_default()
    }

    fn window(time: &str, size: WindowSize, zone: &str) -> (String, String) {
        let tz = parse_zone(zone).unwrap_or(Tz::UTC);
        let w = window_of(t(time), size, tz);
        (format_time(&w.start), format_time(&w.end))
    }

    #[test]
    fn windows_in_utc_and_zones() {
        let cases = [
            (
                "2024-01-01T10:17:45Z",
                WindowSize::Minute,
                "UTC",
                "2024-01-01T10:17:00Z",
                "2024-01-01T10:18:00Z",
            ),
            (
                "2024-01-01T10:17:45Z",
                WindowSize::Hour,
                "UTC",
                "2024-01-01T10:00:00Z",
                "2024-01-01T11:00:00Z",
            ),
            (
                "2024-01-01T10:17:45Z",
                WindowSize::Hour,
                "Asia/Kolkata",
                "2024-01-01T09:30:00Z",
                "2024-01-01T10:30:00Z",
            ),
            (
                "2024-01-01T10:17:45Z",
                WindowSize::Hour,
                "Asia/Kathmandu",
                "2024-01-01T10:15:00Z",
                "2024-01-01T11:15:00Z",
            ),
            (
                "2024-01-01T10:17:45Z",
                WindowSize::Day,
                "UTC",
                "2024-01-01T00:00:00Z",
                "2024-01-02T00:00:00Z",
            ),
            (
                "2024-01-01T03:00:00Z",
                WindowSize::Day,
                "America/New_York",
                "2023-12-31T05:00:00Z",
                "2024-01-01T05:00:00Z",
            ),
            (
                "2024-02-29T23:59:59Z",
                WindowSize::Month,
                "UTC",
                "2024-02-01T00:00:00Z",
                "2024-03-01T00:00:00Z",
            ),
            (
                "2024-12-15T00:00:00Z",
                WindowSize::Month,
                "Europe/Berlin",
                "2024-11-30T23:00:00Z",
                "2024-12-31T23:00:00Z",
            ),
        ];
        for (time, size, zone, start, end) in cases {
            assert_eq!(
                window(time, size, zone),
                (start.to_owned(), end.to_owned()),
                "{time} {size:?} {zone}"
            );
        }
    }

    #[test]
    fn los_angeles_days_are_contiguous_across_dst() {
        // Spring forward 2025-03-09 (23 h day), fall back 2025-11-02 (25 h day).
        let tz = parse_zone("America/Los_Angeles").unwrap_or(Tz::UTC);
        let spring = window_of(t("2025-03-09T18:00:00Z"), WindowSize::Day, tz);
        assert_eq!(format_time(&spring.start), "2025-03-09T08:00:00Z");
        assert_eq!(format_time(&spring.end), "2025-03-10T07:00:00Z");
        assert_eq!(spring.end - spring.start, Duration::hours(23));
        let fall = window_of(t("2025-11-02T18:00:00Z"), WindowSize::Day, tz);
        assert_eq!(format_time(&fall.start), "2025-11-02T07:00:00Z");
        assert_eq!(format_time(&fall.end), "2025-11-03T08:00:00Z");
        let mut start = t("2025-03-01T08:00:00Z");
        for _ in 0..300 {
            let w = window_of(start, WindowSize::Day, tz);
            assert_eq!(w.start, start);
            start = w.end;
        }
    }

    #[test]
    fn fall_back_hours_are_two_windows() {
        let tz = parse_zone("America/Los_Angeles").unwrap_or(Tz::UTC);
        let first = window_of(t("2025-11-02T08:30:00Z"), WindowSize::Hour, tz);
        let second = window_of(t("2025-11-02T09:30:00Z"), WindowSize::Hour, tz);
        assert_eq!(first.end, second.start);
        assert_eq!(format_time(&second.start), "2025-11-02T09:00:00Z");
    }

    #[test]
    fn a_midnight_swallowed_by_dst_starts_the_day_at_the_first_valid_time() {
        // Chile springs forward at 24:00 local: 2024-09-08 starts at 01:00 local.
        let tz = parse_zone("America/Santiago").unwrap_or(Tz::UTC);
        let w = window_of(t("2024-09-08T12:00:00Z"), WindowSize::Day, tz);
        assert_eq!(format_time(&w.start), "2024-09-08T04:00:00Z");
    }
}
