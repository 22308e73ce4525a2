//! A compact byte encoding of a live customer, for customers at rest.
//!
//! A ready customer is a few dozen small allocations (entries, ledgers, grants, ids,
//! minute series): about 2.5 KB for three metered entitlements. A customer nobody read
//! or fed for `entitlements.packAfter` is packed into one byte string — varints,
//! decimals as mantissa and scale, times as seconds and nanoseconds — at a few hundred
//! bytes, and unpacked in microseconds by its next read or usage. Nothing is lost: the
//! cached answer and the running totals are rebuilt by the next read; everything else
//! round-trips exactly.

use chrono::{DateTime, Utc};
use metron_engine::aggregate::{AggState, Aggregation};
use metron_engine::credit::{
    Entitlement, Grant, Interval, IsoDuration, Recurrence, Reset, State, UsageKind,
};
use metron_engine::quantity::{Quantity, i256};
use rust_decimal::Decimal;

/// Tags of a packed quantity that are not a scale.
const QUANTITY_ZERO: u8 = 0xFE;
const QUANTITY_WIDE: u8 = 0xFF;

#[derive(Debug, thiserror::Error)]
#[error("a packed customer is malformed: {0}")]
pub struct PackError(pub &'static str);

pub type Result<T> = std::result::Result<T, PackError>;

/// Appends values to a byte string.
#[derive(Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
    /// The seconds of the last time written: times are written as the difference.
    last_secs: i64,
}

impl Writer {
    /// A writer that appends to `bytes`.
    pub fn appending(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            last_secs: 0,
        }
    }

    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }

    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    pub fn u64(&mut self, v: u64) {
        self.u128(u128::from(v));
    }

    pub fn i64(&mut self, v: i64) {
        self.u64(((v << 1) ^ (v >> 63)) as u64);
    }

    fn u128(&mut self, mut v: u128) {
        while v >= 0x80 {
            self.bytes.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.bytes.push(v as u8);
    }

    pub fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.bytes.extend_from_slice(s.as_bytes());
    }

    /// An id: 16 bytes when it is a canonical ULID (Metron's ids), else text.
    pub fn id(&mut self, s: &str) {
        match ulid::Ulid::from_string(s) {
            Ok(ulid) if ulid.to_string() == s => {
                self.u8(1);
                self.bytes.extend_from_slice(&ulid.to_bytes());
            }
            _ => {
                self.u8(0);
                self.str(s);
            }
        }
    }

    pub fn decimal(&mut self, d: Decimal) {
        let m = d.mantissa();
        self.u128(((m << 1) ^ (m >> 127)) as u128);
        self.u8(d.scale() as u8);
    }

    /// A quantity: its scale without trailing zeros and the mantissa at that scale as a
    /// zigzag varint (`1.5` is two bytes); a mantissa past i128 as its 32 raw bytes.
    pub fn quantity(&mut self, q: Quantity) {
        let ten = i256::from_i128(10);
        let mut raw = q.raw();
        let mut scale = Quantity::SCALE as u8;
        while scale > 0 && raw != i256::ZERO && raw.wrapping_rem(ten) == i256::ZERO {
            raw = raw.wrapping_div(ten);
            scale -= 1;
        }
        match raw.to_i128() {
            Some(m) if raw != i256::ZERO => {
                self.u8(scale);
                self.u128(((m << 1) ^ (m >> 127)) as u128);
            }
            Some(_) => self.u8(QUANTITY_ZERO),
            None => {
                self.u8(QUANTITY_WIDE);
                self.bytes.extend_from_slice(&q.raw().to_le_bytes());
            }
        }
    }

    /// A time: seconds since the last time written (the times of one customer are
    /// close, so usually one or two bytes), flagged in the low bit when nanoseconds follow.
    pub fn time(&mut self, t: DateTime<Utc>) {
        let secs = t.timestamp();
        let nanos = t.timestamp_subsec_nanos();
        let delta = secs.wrapping_sub(self.last_secs);
        self.last_secs = secs;
        self.i64(delta.wrapping_mul(2) | i64::from(nanos != 0));
        if nanos != 0 {
            self.u64(u64::from(nanos));
        }
    }

    pub fn opt<T>(&mut self, v: Option<T>, mut each: impl FnMut(&mut Self, T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                each(self, v);
            }
        }
    }

    pub fn seq<'a, T: 'a>(
        &mut self,
        items: impl ExactSizeIterator<Item = &'a T>,
        mut each: impl FnMut(&mut Self, &'a T),
    ) {
        self.u64(items.len() as u64);
        for item in items {
            each(self, item);
        }
    }
}

/// Reads values back, failing (never panicking) on a malformed string.
pub struct Reader<'a> {
    bytes: &'a [u8],
    last_secs: i64,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            last_secs: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn u8(&mut self) -> Result<u8> {
        let (&v, rest) = self.bytes.split_first().ok_or(PackError("truncated"))?;
        self.bytes = rest;
        Ok(v)
    }

    pub fn bool(&mut self) -> Result<bool> {
        Ok(self.u8()? != 0)
    }

    pub fn u64(&mut self) -> Result<u64> {
        u64::try_from(self.u128()?).map_err(|_| PackError("varint beyond 64 bits"))
    }

    pub fn i64(&mut self) -> Result<i64> {
        let v = self.u64()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn u128(&mut self) -> Result<u128> {
        let mut v = 0u128;
        for shift in (0..128).step_by(7) {
            let b = self.u8()?;
            v |= u128::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(PackError("varint too long"))
    }

    pub fn len(&mut self) -> Result<usize> {
        let n = self.u64()? as usize;
        // Every item takes at least one byte: a larger count is malformed.
        if n > self.bytes.len() {
            return Err(PackError("count beyond the end"));
        }
        Ok(n)
    }

    pub fn str(&mut self) -> Result<&'a str> {
        let n = self.len()?;
        let (s, rest) = self
            .bytes
            .split_at_checked(n)
            .ok_or(PackError("truncated"))?;
        self.bytes = rest;
        std::str::from_utf8(s).map_err(|_| PackError("not UTF-8"))
    }

    pub fn id(&mut self) -> Result<String> {
        match self.u8()? {
            0 => self.str().map(str::to_owned),
            1 => {
                let (raw, rest) = self
                    .bytes
                    .split_first_chunk::<16>()
                    .ok_or(PackError("truncated"))?;
                self.bytes = rest;
                Ok(ulid::Ulid::from_bytes(*raw).to_string())
            }
            _ => Err(PackError("id tag")),
        }
    }

    pub fn quantity(&mut self) -> Result<Quantity> {
        match self.u8()? {
            QUANTITY_ZERO => Ok(Quantity::ZERO),
            QUANTITY_WIDE => {
                let (raw, rest) = self
                    .bytes
                    .split_first_chunk::<32>()
                    .ok_or(PackError("truncated"))?;
                self.bytes = rest;
                Ok(Quantity::from_raw(i256::from_le_bytes(*raw)))
            }
            scale if u32::from(scale) <= Quantity::SCALE => {
                let z = self.u128()?;
                let m = ((z >> 1) as i128) ^ -((z & 1) as i128);
                let factor = i256::from_i128(10).wrapping_pow(Quantity::SCALE - u32::from(scale));
                Ok(Quantity::from_raw(i256::from_i128(m).wrapping_mul(factor)))
            }
            _ => Err(PackError("quantity scale")),
        }
    }

    pub fn decimal(&mut self) -> Result<Decimal> {
        let z = self.u128()?;
        let m = ((z >> 1) as i128) ^ -((z & 1) as i128);
        let scale = u32::from(self.u8()?);
        Decimal::try_from_i128_with_scale(m, scale).map_err(|_| PackError("decimal"))
    }

    pub fn time(&mut self) -> Result<DateTime<Utc>> {
        let v = self.i64()?;
        let secs = self.last_secs.wrapping_add(v >> 1);
        self.last_secs = secs;
        let nanos = if v & 1 == 1 {
            u32::try_from(self.u64()?).map_err(|_| PackError("nanoseconds"))?
        } else {
            0
        };
        DateTime::from_timestamp(secs, nanos).ok_or(PackError("time"))
    }

    pub fn opt<T>(&mut self, each: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        match self.u8()? {
            0 => Ok(None),
            1 => each(self).map(Some),
            _ => Err(PackError("option tag")),
        }
    }

    pub fn seq<T>(&mut self, mut each: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let n = self.len()?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(each(self)?);
        }
        Ok(items)
    }
}

pub fn recurrence(w: &mut Writer, r: &Recurrence) {
    match r.interval {
        Interval::Day => w.u8(0),
        Interval::Week => w.u8(1),
        Interval::Month => w.u8(2),
        Interval::Year => w.u8(3),
        Interval::Iso(d) => {
            w.u8(4);
            for part in [
                d.years, d.months, d.weeks, d.days, d.hours, d.minutes, d.seconds,
            ] {
                w.u64(u64::from(part));
            }
        }
    }
    w.time(r.anchor);
}

pub fn read_recurrence(r: &mut Reader<'_>) -> Result<Recurrence> {
    let interval = match r.u8()? {
        0 => Interval::Day,
        1 => Interval::Week,
        2 => Interval::Month,
        3 => Interval::Year,
        4 => {
            let mut part = || -> Result<u32> {
                u32::try_from(r.u64()?).map_err(|_| PackError("duration part"))
            };
            Interval::Iso(IsoDuration {
                years: part()?,
                months: part()?,
                weeks: part()?,
                days: part()?,
                hours: part()?,
                minutes: part()?,
                seconds: part()?,
            })
        }
        _ => return Err(PackError("interval tag")),
    };
    Ok(Recurrence {
        interval,
        anchor: r.time()?,
    })
}

pub fn entitlement(w: &mut Writer, e: &Entitlement) {
    w.time(e.measure_usage_from);
    recurrence(w, &e.usage_period);
    w.bool(e.preserve_overage_at_reset);
    w.bool(e.kind == UsageKind::Latest);
}

pub fn read_entitlement(r: &mut Reader<'_>) -> Result<Entitlement> {
    Ok(Entitlement {
        measure_usage_from: r.time()?,
        usage_period: read_recurrence(r)?,
        preserve_overage_at_reset: r.bool()?,
        kind: if r.bool()? {
            UsageKind::Latest
        } else {
            UsageKind::Additive
        },
    })
}

pub fn grant(w: &mut Writer, g: &Grant) {
    w.id(&g.id);
    w.decimal(g.amount);
    w.u8(g.priority);
    w.time(g.effective_at);
    w.opt(g.expires_at, Writer::time);
    w.opt(g.voided_at, Writer::time);
    w.opt(g.deleted_at, Writer::time);
    w.time(g.created_at);
    w.decimal(g.max_rollover);
    w.decimal(g.min_rollover);
    w.opt(g.recurrence.as_ref(), recurrence);
}

pub fn read_grant(r: &mut Reader<'_>) -> Result<Grant> {
    Ok(Grant {
        id: r.id()?,
        amount: r.decimal()?,
        priority: r.u8()?,
        effective_at: r.time()?,
        expires_at: r.opt(Reader::time)?,
        voided_at: r.opt(Reader::time)?,
        deleted_at: r.opt(Reader::time)?,
        created_at: r.time()?,
        max_rollover: r.decimal()?,
        min_rollover: r.decimal()?,
        recurrence: r.opt(read_recurrence)?,
    })
}

pub fn reset(w: &mut Writer, x: &Reset) {
    w.time(x.at);
    w.bool(x.preserve_overage);
    w.bool(x.retain_anchor);
}

pub fn read_reset(r: &mut Reader<'_>) -> Result<Reset> {
    Ok(Reset {
        at: r.time()?,
        preserve_overage: r.bool()?,
        retain_anchor: r.bool()?,
    })
}

pub fn state(w: &mut Writer, s: &State) {
    w.time(s.at);
    w.seq(s.balances.iter(), |w, (id, balance)| {
        w.id(id);
        w.decimal(*balance);
    });
    w.decimal(s.overage);
    w.decimal(s.usage_in_period);
    w.decimal(s.grant_usage_in_period);
    w.time(s.period_start);
    w.time(s.period_anchor);
}

pub fn read_state(r: &mut Reader<'_>) -> Result<State> {
    Ok(State {
        at: r.time()?,
        balances: r.seq(|r| Ok((r.id()?, r.decimal()?)))?,
        overage: r.decimal()?,
        usage_in_period: r.decimal()?,
        grant_usage_in_period: r.decimal()?,
        period_start: r.time()?,
        period_anchor: r.time()?,
    })
}

const AGGREGATIONS: [Aggregation; 7] = [
    Aggregation::Sum,
    Aggregation::Count,
    Aggregation::Avg,
    Aggregation::Min,
    Aggregation::Max,
    Aggregation::UniqueCount,
    Aggregation::Latest,
];

pub fn aggregation(w: &mut Writer, a: Aggregation) {
    w.u8(AGGREGATIONS.iter().position(|x| *x == a).unwrap_or(0) as u8);
}

pub fn read_aggregation(r: &mut Reader<'_>) -> Result<Aggregation> {
    AGGREGATIONS
        .get(usize::from(r.u8()?))
        .copied()
        .ok_or(PackError("aggregation tag"))
}

pub fn agg_state(w: &mut Writer, s: &AggState) {
    match s {
        AggState::Sum(d) => {
            w.u8(0);
            w.quantity(*d);
        }
        AggState::Count(n) => {
            w.u8(1);
            w.u64(*n);
        }
        AggState::Avg { sum, count } => {
            w.u8(2);
            w.quantity(*sum);
            w.u64(*count);
        }
        AggState::Min(d) => {
            w.u8(3);
            w.quantity(*d);
        }
        AggState::Max(d) => {
            w.u8(4);
            w.quantity(*d);
        }
        AggState::UniqueCount(values) => {
            w.u8(5);
            w.seq(values.iter(), |w, v| w.str(v));
        }
        AggState::Latest { time_ms, value } => {
            w.u8(6);
            w.i64(*time_ms);
            w.quantity(*value);
        }
    }
}

pub fn read_agg_state(r: &mut Reader<'_>) -> Result<AggState> {
    Ok(match r.u8()? {
        0 => AggState::Sum(r.quantity()?),
        1 => AggState::Count(r.u64()?),
        2 => AggState::Avg {
            sum: r.quantity()?,
            count: r.u64()?,
        },
        3 => AggState::Min(r.quantity()?),
        4 => AggState::Max(r.quantity()?),
        5 => AggState::UniqueCount(r.seq(|r| r.str().map(str::to_owned))?.into_iter().collect()),
        6 => AggState::Latest {
            time_ms: r.i64()?,
            value: r.quantity()?,
        },
        _ => return Err(PackError("aggregate tag")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn primitives_round_trip(
            u in any::<u64>(),
            i in any::<i64>(),
            m in any::<i64>(),
            scale in 0u32..=28,
            secs in -10_000_000_000i64..10_000_000_000,
            nanos in 0u32..1_000_000_000,
            s in ".{0,40}",
        ) {
            let d = Decimal::new(m, scale);
            let t = DateTime::from_timestamp(secs, nanos).unwrap_or_default();
            let mut w = Writer::default();
            w.u64(u);
            w.i64(i);
            w.decimal(d);
            w.time(t);
            w.str(&s);
            w.opt(Some(d), Writer::decimal);
            let ulid = ulid::Ulid::from_parts(u >> 16, u128::from(u)).to_string();
            w.id(&ulid);
            w.id(&s);
            let mut r = Reader::new(&w.bytes);
            prop_assert_eq!(r.u64().ok(), Some(u));
            prop_assert_eq!(r.i64().ok(), Some(i));
            let back = r.decimal().ok();
            prop_assert_eq!(back, Some(d));
            prop_assert_eq!(back.map(|b| b.scale()), Some(d.scale()));
            prop_assert_eq!(r.time().ok(), Some(t));
            prop_assert_eq!(r.str().ok(), Some(s.as_str()));
            prop_assert_eq!(r.opt(Reader::decimal).ok().flatten(), Some(d));
            prop_assert_eq!(r.id().ok(), Some(ulid));
            prop_assert_eq!(r.id().ok(), Some(s.clone()));
            prop_assert!(r.is_empty());
        }

        /// Every quantity reads back: zero, the bounds, 38 integer and 18 fractional digits.
        #[test]
        fn quantities_round_trip(
            int in "[1-9][0-9]{0,37}|0",
            frac in "[0-9]{0,17}[1-9]|",
            negative in any::<bool>(),
            wide in any::<bool>(),
        ) {
            let text = format!("{}{int}.{frac}0", if negative { "-" } else { "" });
            let q = match text.parse::<Quantity>() {
                Ok(q) if wide => q.saturating_add(if negative { Quantity::MIN } else { Quantity::MAX }),
                Ok(q) => q,
                Err(e) => return Err(TestCaseError::fail(format!("{text}: {e}"))),
            };
            let mut w = Writer::default();
            w.quantity(q);
            w.quantity(Quantity::ZERO);
            w.u8(7);
            let mut r = Reader::new(&w.bytes);
            prop_assert_eq!(r.quantity().ok(), Some(q));
            prop_assert_eq!(r.quantity().ok(), Some(Quantity::ZERO));
            prop_assert_eq!(r.u8().ok(), Some(7));
            prop_assert!(r.is_empty());
        }

        /// Times are written as differences: any sequence reads back, with or without
        /// nanoseconds, in either direction, up to chrono's extremes.
        #[test]
        fn time_sequences_round_trip(
            times in proptest::collection::vec(
                (prop_oneof![
                    Just(DateTime::<Utc>::MIN_UTC.timestamp()),
                    Just(DateTime::<Utc>::MAX_UTC.timestamp()),
                    -10_000_000_000i64..10_000_000_000,
                    1_700_000_000i64..1_700_100_000,
                ], prop_oneof![Just(0u32), 0u32..1_000_000_000]),
                0..12,
            ),
        ) {
            let times: Vec<DateTime<Utc>> = times
                .into_iter()
                .filter_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos))
                .collect();
            let mut w = Writer::default();
            for t in &times {
                w.time(*t);
            }
            let mut r = Reader::new(&w.bytes);
            for t in &times {
                prop_assert_eq!(r.time().ok(), Some(*t));
            }
            prop_assert!(r.is_empty());
        }

        /// A malformed string is an error, never a panic.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes);
            let _ = read_state(&mut r);
            let mut r = Reader::new(&bytes);
            let _ = read_grant(&mut r);
            let mut r = Reader::new(&bytes);
            let _ = read_agg_state(&mut r);
        }
    }
}
