//! Calendar arithmetic the credit engine shares with OpenMeter: ISO-8601 intervals,
//! month-end clamped recurrences (`pkg/timeutil/recurrence.go`) and Go `time.AddDate`
//! expirations (`credit/grant/expiration.go`).

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};

use super::CreditError;

/// A calendar duration in whole units, as an ISO-8601 `P…T…` text spells it (no fractions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IsoDuration {
    pub years: u32,
    pub months: u32,
    pub weeks: u32,
    pub days: u32,
    pub hours: u32,
    pub minutes: u32,
    pub seconds: u32,
}

/// A usage-period or grant-recurrence interval: OpenMeter's enum names or an ISO duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
    Iso(IsoDuration),
}

/// A schedule of boundaries `anchor + n·interval` for every integer `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recurrence {
    pub interval: Interval,
    pub anchor: DateTime<Utc>,
}

/// The unit of a grant's `expiration.duration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpirationUnit {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

/// Rough seconds per component, only used to guess where to start searching for `n`.
const APPROX_SECONDS: [i64; 7] = [31_556_952, 2_629_746, 604_800, 86_400, 3_600, 60, 1];
/// How far a boundary search walks from its guess before giving up.
const SEARCH_STEPS_MAX: u32 = 10_000;

impl IsoDuration {
    /// Parses `P[nY][nM][nW][nD][T[nH][nM][nS]]` with integer components; at least one
    /// component, and the total must not be zero.
    pub fn parse(text: &str) -> Result<IsoDuration, CreditError> {
        let bad = || CreditError::InvalidInterval {
            text: text.to_owned(),
        };
        let rest = text.strip_prefix('P').ok_or_else(bad)?;
        let (date, time) = match rest.split_once('T') {
            Some((date, time)) if !time.is_empty() => (date, Some(time)),
            Some(_) => return Err(bad()),
            None => (rest, None),
        };
        let mut out = IsoDuration::default();
        let mut any = false;
        let mut parse_part = |part: &str, units: &[char]| -> Result<(), CreditError> {
            let mut digits = String::new();
            let mut next_unit = 0;
            for c in part.chars() {
                if c.is_ascii_digit() {
                    digits.push(c);
                    continue;
                }
                let position = units[next_unit..]
                    .iter()
                    .position(|u| *u == c)
                    .ok_or_else(bad)?;
                if digits.is_empty() {
                    return Err(bad());
                }
                let value: u32 = digits.parse().map_err(|_| bad())?;
                digits.clear();
                let unit = units[next_unit + position];
                next_unit += position + 1;
                any = true;
                match (units.len(), unit) {
                    (4, 'Y') => out.years = value,
                    (4, 'M') => out.months = value,
                    (4, 'W') => out.weeks = value,
                    (4, 'D') => out.days = value,
                    (3, 'H') => out.hours = value,
                    (3, 'M') => out.minutes = value,
                    (3, 'S') => out.seconds = value,
                    _ => return Err(bad()),
                }
            }
            if digits.is_empty() {
                Ok(())
            } else {
                Err(bad())
            }
        };
        parse_part(date, &['Y', 'M', 'W', 'D'])?;
        if let Some(time) = time {
            parse_part(time, &['H', 'M', 'S'])?;
        }
        if !any {
            return Err(bad());
        }
        if out.is_zero() {
            return Err(CreditError::ZeroInterval {
                text: text.to_owned(),
            });
        }
        Ok(out)
    }

    pub fn is_zero(&self) -> bool {
        self.components().iter().all(|c| *c == 0)
    }

    fn components(&self) -> [u32; 7] {
        [
            self.years,
            self.months,
            self.weeks,
            self.days,
            self.hours,
            self.minutes,
            self.seconds,
        ]
    }

    /// The ISO text, components in order, zero components left out (`P0D` when all are zero).
    pub fn iso(&self) -> String {
        let mut out = String::from("P");
        for (value, unit) in [
            (self.years, 'Y'),
            (self.months, 'M'),
            (self.weeks, 'W'),
            (self.days, 'D'),
        ] {
            if value > 0 {
                out.push_str(&format!("{value}{unit}"));
            }
        }
        if self.hours > 0 || self.minutes > 0 || self.seconds > 0 {
            out.push('T');
            for (value, unit) in [(self.hours, 'H'), (self.minutes, 'M'), (self.seconds, 'S')] {
                if value > 0 {
                    out.push_str(&format!("{value}{unit}"));
                }
            }
        }
        if out.len() == 1 {
            out.push_str("0D");
        }
        out
    }

    /// `t + n·self` the way OpenMeter's `DateTime.Add` does it: years, then months (each
    /// clamped to the end of the target month, never overflowing into the next), then
    /// weeks, days, hours, minutes and seconds. `None` when out of range.
    pub fn add_times(&self, t: DateTime<Utc>, n: i64) -> Option<DateTime<Utc>> {
        let years = i64::from(self.years).checked_mul(n)?;
        let months = i64::from(self.months).checked_mul(n)?;
        let t = add_months_clamped(t, years.checked_mul(12)?)?;
        let t = add_months_clamped(t, months)?;
        let days = i64::from(self.weeks)
            .checked_mul(7)?
            .checked_add(i64::from(self.days))?
            .checked_mul(n)?;
        let seconds = i64::from(self.hours)
            .checked_mul(3600)?
            .checked_add(i64::from(self.minutes).checked_mul(60)?)?
            .checked_add(i64::from(self.seconds))?
            .checked_mul(n)?;
        t.checked_add_signed(Duration::try_days(days)?)?
            .checked_add_signed(Duration::try_seconds(seconds)?)
    }

    fn approx_seconds(&self) -> i64 {
        self.components()
            .iter()
            .zip(APPROX_SECONDS)
            .map(|(c, s)| i64::from(*c) * s)
            .sum()
    }
}

impl Interval {
    /// `DAY`, `WEEK`, `MONTH`, `YEAR` or an ISO-8601 duration such as `PT2H` or `P1Y2M3DT4H`.
    pub fn parse(text: &str) -> Result<Interval, CreditError> {
        match text {
            "DAY" => Ok(Interval::Day),
            "WEEK" => Ok(Interval::Week),
            "MONTH" => Ok(Interval::Month),
            "YEAR" => Ok(Interval::Year),
            _ => IsoDuration::parse(text).map(Interval::Iso),
        }
    }

    /// The interval as a duration (`DAY` is `P1D`, ...).
    pub fn duration(&self) -> IsoDuration {
        let unit = IsoDuration::default();
        match self {
            Interval::Day => IsoDuration { days: 1, ..unit },
            Interval::Week => IsoDuration { weeks: 1, ..unit },
            Interval::Month => IsoDuration { months: 1, ..unit },
            Interval::Year => IsoDuration { years: 1, ..unit },
            Interval::Iso(d) => *d,
        }
    }

    /// OpenMeter's `intervalISO` read field.
    pub fn iso(&self) -> String {
        self.duration().iso()
    }

    /// OpenMeter's `interval` read field: the enum name when the duration is exactly one
    /// of them (`P7D` is a `WEEK`), else the ISO text.
    pub fn api_name(&self) -> String {
        let d = self.duration();
        let unit = IsoDuration::default();
        if d == (IsoDuration { days: 1, ..unit }) {
            "DAY".to_owned()
        } else if d == (IsoDuration { weeks: 1, ..unit }) || d == (IsoDuration { days: 7, ..unit })
        {
            "WEEK".to_owned()
        } else if d == (IsoDuration { months: 1, ..unit }) {
            "MONTH".to_owned()
        } else if d == (IsoDuration { years: 1, ..unit }) {
            "YEAR".to_owned()
        } else {
            d.iso()
        }
    }

    /// Usage periods must be at least one hour long.
    pub fn at_least_one_hour(&self) -> bool {
        let d = self.duration();
        d.years > 0
            || d.months > 0
            || d.weeks > 0
            || d.days > 0
            || u64::from(d.hours) * 3600 + u64::from(d.minutes) * 60 + u64::from(d.seconds) >= 3600
    }
}

impl Recurrence {
    /// The n-th boundary: anchor + n*interval (n may be negative), month-end clamped relative to the ANCHOR
    /// (anchor Jan 31 -> Feb 28/29 -> Mar 31), as OpenMeter's timeutil.Recurrence does.
    pub fn boundary(&self, n: i64) -> Option<DateTime<Utc>> {
        self.interval.duration().add_times(self.anchor, n)
    }

    /// The index `n` with `boundary(n) <= t < boundary(n + 1)`.
    fn index_containing(&self, t: DateTime<Utc>) -> Option<i64> {
        let approx = self.interval.duration().approx_seconds();
        if approx <= 0 {
            return None;
        }
        let mut n = (t - self.anchor).num_seconds().div_euclid(approx);
        for _ in 0..SEARCH_STEPS_MAX {
            if self.boundary(n)? > t {
                n -= 1;
            } else if self.boundary(n + 1)? <= t {
                n += 1;
            } else {
                return Some(n);
            }
        }
        None
    }

    /// [from,to) with from <= t < to
    pub fn period_containing(&self, t: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let n = self.index_containing(t)?;
        Some((self.boundary(n)?, self.boundary(n + 1)?))
    }

    /// The first boundary strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let n = self.index_containing(t)?;
        self.boundary(n + 1)
    }

    /// Every boundary in `(from, to]`, ascending.
    pub fn boundaries_in(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Option<Vec<DateTime<Utc>>> {
        let mut out = Vec::new();
        if to <= from {
            return Some(out);
        }
        let mut n = self.index_containing(from)? + 1;
        loop {
            let b = self.boundary(n)?;
            if b > to {
                return Some(out);
            }
            out.push(b);
            n += 1;
        }
    }
}

/// effective_at + count*unit with Go `time.AddDate` overflow (Jan 31 + 1 MONTH = Mar 3 (Mar 2 in leap years)).
pub fn expires_at(
    effective_at: DateTime<Utc>,
    unit: ExpirationUnit,
    count: u32,
) -> Option<DateTime<Utc>> {
    let count = i64::from(count);
    match unit {
        ExpirationUnit::Hour => effective_at.checked_add_signed(Duration::try_hours(count)?),
        ExpirationUnit::Day => effective_at.checked_add_signed(Duration::try_days(count)?),
        ExpirationUnit::Week => {
            effective_at.checked_add_signed(Duration::try_days(count.checked_mul(7)?)?)
        }
        ExpirationUnit::Month => add_months_overflowing(effective_at, count),
        ExpirationUnit::Year => add_months_overflowing(effective_at, count.checked_mul(12)?),
    }
}

/// The minute `t` falls in.
pub fn truncate_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let extra =
        Duration::seconds(i64::from(t.second())) + Duration::nanoseconds(i64::from(t.nanosecond()));
    t - extra
}

/// `t` itself when minute-aligned, else the next minute.
pub fn ceil_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let truncated = truncate_minute(t);
    if truncated < t {
        truncated + Duration::minutes(1)
    } else {
        truncated
    }
}

/// Year and month (1-12) `months` after those of `t`.
fn shift_month(t: DateTime<Utc>, months: i64) -> Option<(i32, u32)> {
    let index = i64::from(t.year())
        .checked_mul(12)?
        .checked_add(i64::from(t.month0()))?
        .checked_add(months)?;
    let year = i32::try_from(index.div_euclid(12)).ok()?;
    let month = u32::try_from(index.rem_euclid(12)).ok()? + 1;
    Some((year, month))
}

fn with_date(t: DateTime<Utc>, date: NaiveDate) -> DateTime<Utc> {
    date.and_time(t.time()).and_utc()
}

/// Go `AddDate(0, months, 0)`: a day past the month's end overflows into the next month.
fn add_months_overflowing(t: DateTime<Utc>, months: i64) -> Option<DateTime<Utc>> {
    let (year, month) = shift_month(t, months)?;
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let date = first.checked_add_signed(Duration::try_days(i64::from(t.day()) - 1)?)?;
    Some(with_date(t, date))
}

/// OpenMeter's `AddMonthsNoOverflow`: a day past the month's end becomes its last day.
fn add_months_clamped(t: DateTime<Utc>, months: i64) -> Option<DateTime<Utc>> {
    if months == 0 {
        return Some(t);
    }
    let (year, month) = shift_month(t, months)?;
    let (next_year, next_month) = if month == 12 {
        (year.checked_add(1)?, 1)
    } else {
        (year, month + 1)
    };
    let last_day = NaiveDate::from_ymd_opt(next_year, next_month, 1)?
        .pred_opt()?
        .day();
    let date = NaiveDate::from_ymd_opt(year, month, t.day().min(last_day))?;
    Some(with_date(t, date))
}
