//! Billing cadences (ISO-8601 durations) and the billing periods they cut from an anchor.
//!
//! Period `n` is `[anchor + n·cadence, anchor + (n+1)·cadence)`, each boundary computed
//! from the anchor with month ends clamped, as OpenMeter's `timeutil.Recurrence`
//! (`pkg/timeutil/recurrence.go`, `addIntervalNTimes(r.Anchor, n)`) does: a Jan 31 anchor
//! with `P1M` gives Feb 28 (29), then Mar 31. The arithmetic is the credit engine's
//! [`Recurrence`], shared, not repeated.

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::credit::{Interval, IsoDuration, Recurrence};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid ISO-8601 duration {text:?}")]
    InvalidDuration { text: String },
    #[error("billing cadence {text:?} must be at least 1 hour")]
    UnderAnHour { text: String },
    #[error("period [{from}, {to}) is empty or reversed")]
    EmptyPeriod {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    #[error("a period boundary is out of range")]
    OutOfRange,
    #[error("more than {max} billing periods between {from} and {to}")]
    TooManyPeriods {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        max: usize,
    },
}

/// One billing period of a schedule, cut to the time the item is active.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServicePeriod {
    /// What is billed: the period cut to `[active.from, active.to)`.
    pub service: Period,
    /// The whole cadence period it belongs to (the denominator of pro-rating).
    pub full: Period,
}

/// A positive ISO-8601 duration such as `P1M`, `P2W`, `P1DT12H` (whole components).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BillingCadence(IsoDuration);

/// The length of `d` in seconds with months of `days_in_month` days and days of
/// `hours_in_day` hours (OpenMeter's `convertPeriodToSeconds`).
fn seconds_in(d: &IsoDuration, days_in_month: u64, hours_in_day: u64) -> u64 {
    let hour = 3_600u64;
    let day = hours_in_day * hour;
    u64::from(d.years) * 12 * days_in_month * day
        + u64::from(d.months) * days_in_month * day
        + u64::from(d.weeks) * 7 * day
        + u64::from(d.days) * day
        + u64::from(d.hours) * hour
        + u64::from(d.minutes) * 60
        + u64::from(d.seconds)
}

/// A half-open interval of time `[from, to)`; on the wire `{"from": …, "to": …}` (RFC 3339).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Period {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Digits of the served share of a period: OpenMeter divides with shopspring's default
/// `DivisionPrecision` (16 places, half away from zero).
const SHARE_SCALE: u32 = 16;

impl BillingCadence {
    /// A billing cadence: positive and at least one hour (OpenMeter's
    /// `billing_cadence_invalid_value`).
    pub fn parse(text: &str) -> Result<BillingCadence> {
        let cadence = BillingCadence::parse_any(text)?;
        if !cadence.at_least_one_hour() {
            return Err(Error::UnderAnHour {
                text: text.to_owned(),
            });
        }
        Ok(cadence)
    }

    /// Any positive duration (usage periods check the hour themselves).
    pub fn parse_any(text: &str) -> Result<BillingCadence> {
        IsoDuration::parse(text)
            .map(BillingCadence)
            .map_err(|_| Error::InvalidDuration {
                text: text.to_owned(),
            })
    }

    pub fn duration(&self) -> IsoDuration {
        self.0
    }

    /// The canonical text (`P1M`, `P1DT12H`).
    pub fn iso(&self) -> String {
        self.0.iso()
    }

    pub fn at_least_one_hour(&self) -> bool {
        Interval::Iso(self.0).at_least_one_hour()
    }

    /// Whether a rate card billed every `other` fits a plan billed every `self` (OpenMeter's
    /// `ValidateBillingCadencesAlign`): the two are equal, or one divides the other without
    /// remainder for every month length (28–31 days) and day length (23–25 hours), so `P1M`
    /// fits `P1Y` and `P1D`, while `P1W` does not fit `P1M` (a 29-day month is not whole weeks).
    pub fn aligned_with(&self, other: &BillingCadence) -> bool {
        if self.0 == other.0 {
            return true;
        }
        let divides = |large: &IsoDuration, small: &IsoDuration| {
            [28u64, 29, 30, 31].iter().all(|&days_in_month| {
                [23u64, 24, 25].iter().all(|&hours_in_day| {
                    let l = seconds_in(large, days_in_month, hours_in_day);
                    let s = seconds_in(small, days_in_month, hours_in_day);
                    l > 0 && s > 0 && l.is_multiple_of(s)
                })
            })
        };
        divides(&self.0, &other.0) || divides(&other.0, &self.0)
    }

    fn recurrence(&self, anchor: DateTime<Utc>) -> Recurrence {
        Recurrence {
            interval: Interval::Iso(self.0),
            anchor,
        }
    }

    /// Period `n` (may be negative) of the schedule anchored at `anchor`.
    pub fn period(&self, anchor: DateTime<Utc>, n: i64) -> Result<Period> {
        let recurrence = self.recurrence(anchor);
        let from = recurrence.boundary(n).ok_or(Error::OutOfRange)?;
        let to = recurrence
            .boundary(n.checked_add(1).ok_or(Error::OutOfRange)?)
            .ok_or(Error::OutOfRange)?;
        Ok(Period { from, to })
    }

    /// The period with `from <= t < to`.
    pub fn period_containing(&self, anchor: DateTime<Utc>, t: DateTime<Utc>) -> Result<Period> {
        let (from, to) = self
            .recurrence(anchor)
            .period_containing(t)
            .ok_or(Error::OutOfRange)?;
        Ok(Period { from, to })
    }
}

impl BillingCadence {
    /// The billing periods of the schedule anchored at `anchor` that overlap `active`, each
    /// cut to it, in order; at most `max` of them (a named limit of the caller).
    pub fn service_periods(
        &self,
        anchor: DateTime<Utc>,
        active: Period,
        max: usize,
    ) -> Result<Vec<ServicePeriod>> {
        let mut out = Vec::new();
        let mut full = self.period_containing(anchor, active.from)?;
        while full.from < active.to {
            if out.len() == max {
                return Err(Error::TooManyPeriods {
                    from: active.from,
                    to: active.to,
                    max,
                });
            }
            let service = Period {
                from: full.from.max(active.from),
                to: full.to.min(active.to),
            };
            out.push(ServicePeriod { service, full });
            full = self.period_containing(anchor, full.to)?;
        }
        Ok(out)
    }
}

impl Period {
    /// A non-empty period.
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Period> {
        if to <= from {
            return Err(Error::EmptyPeriod { from, to });
        }
        Ok(Period { from, to })
    }

    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && t < self.to
    }

    /// Length in nanoseconds (saturating; periods are far shorter than 292 years).
    fn nanos(&self) -> i64 {
        (self.to - self.from).num_nanoseconds().unwrap_or(i64::MAX)
    }

    /// The share of `full` this period covers, `served / full` in nanoseconds, to 16 places,
    /// as OpenMeter's `PeriodPercentage` (subscription sync's `phaseiterator.go`) computes it;
    /// `1` when `full` is empty.
    pub fn share_of(&self, full: &Period) -> Decimal {
        let full_nanos = full.nanos();
        if full_nanos <= 0 {
            return Decimal::ONE;
        }
        let served = Decimal::from(self.nanos().max(0));
        (served / Decimal::from(full_nanos))
            .round_dp_with_strategy(SHARE_SCALE, RoundingStrategy::MidpointAwayFromZero)
    }
}

#[cfg(test)]
mod tests;
