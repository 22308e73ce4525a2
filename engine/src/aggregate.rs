//! Mergeable aggregate states for the seven meter aggregations.
//!
//! Every state merges with another of its kind (associative, commutative), so minute
//! aggregates can be combined into any coarser window, and a late event is just one
//! more state merged into its minute.

use crate::quantity::Quantity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A meter's aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Aggregation {
    Sum,
    Count,
    Avg,
    Min,
    Max,
    UniqueCount,
    Latest,
}

impl Aggregation {
    pub const ALL: [Aggregation; 7] = [
        Self::Sum,
        Self::Count,
        Self::Avg,
        Self::Min,
        Self::Max,
        Self::UniqueCount,
        Self::Latest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sum => "SUM",
            Self::Count => "COUNT",
            Self::Avg => "AVG",
            Self::Min => "MIN",
            Self::Max => "MAX",
            Self::UniqueCount => "UNIQUE_COUNT",
            Self::Latest => "LATEST",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// What one event contributes to an aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SampleValue {
    /// COUNT: the event itself.
    One,
    /// SUM, AVG, MIN, MAX, LATEST.
    Number(Quantity),
    /// UNIQUE_COUNT: the value's text.
    Text(String),
}

/// A mergeable aggregate state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggState {
    Sum(Quantity),
    Count(u64),
    Avg {
        sum: Quantity,
        count: u64,
    },
    Min(Quantity),
    Max(Quantity),
    UniqueCount(BTreeSet<String>),
    /// The value of the event with the latest time; ties keep the larger value so
    /// that merging is order-independent.
    Latest {
        time_ms: i64,
        value: Quantity,
    },
}

impl AggState {
    /// The state of one sample, or `None` when the sample does not fit the aggregation.
    pub fn from_sample(
        aggregation: Aggregation,
        sample: &SampleValue,
        time_ms: i64,
    ) -> Option<Self> {
        Some(match (aggregation, sample) {
            (Aggregation::Count, _) => Self::Count(1),
            (Aggregation::Sum, SampleValue::Number(v)) => Self::Sum(*v),
            (Aggregation::Avg, SampleValue::Number(v)) => Self::Avg { sum: *v, count: 1 },
            (Aggregation::Min, SampleValue::Number(v)) => Self::Min(*v),
            (Aggregation::Max, SampleValue::Number(v)) => Self::Max(*v),
            (Aggregation::Latest, SampleValue::Number(v)) => Self::Latest { time_ms, value: *v },
            (Aggregation::UniqueCount, SampleValue::Text(t)) => {
                Self::UniqueCount(BTreeSet::from([t.clone()]))
            }
            _ => return None,
        })
    }

    /// Folds one sample into this state.
    pub fn fold(&mut self, sample: &SampleValue, time_ms: i64) {
        match (self, sample) {
            (Self::Count(c), _) => *c = c.saturating_add(1),
            (Self::Sum(s), SampleValue::Number(v)) => *s = saturating_add(*s, *v),
            (Self::Avg { sum, count }, SampleValue::Number(v)) => {
                *sum = saturating_add(*sum, *v);
                *count = count.saturating_add(1);
            }
            (Self::Min(m), SampleValue::Number(v)) => *m = (*m).min(*v),
            (Self::Max(m), SampleValue::Number(v)) => *m = (*m).max(*v),
            (Self::UniqueCount(set), SampleValue::Text(t)) if !set.contains(t) => {
                set.insert(t.clone());
            }
            (Self::Latest { time_ms: t, value }, SampleValue::Number(v))
                if time_ms > *t || (time_ms == *t && *v > *value) =>
            {
                *t = time_ms;
                *value = *v;
            }
            _ => {}
        }
    }

    /// Merges another state of the same aggregation into this one.
    pub fn merge(&mut self, other: &AggState) {
        match (self, other) {
            (Self::Count(a), Self::Count(b)) => *a = a.saturating_add(*b),
            (Self::Sum(a), Self::Sum(b)) => *a = saturating_add(*a, *b),
            (Self::Avg { sum, count }, Self::Avg { sum: s2, count: c2 }) => {
                *sum = saturating_add(*sum, *s2);
                *count = count.saturating_add(*c2);
            }
            (Self::Min(a), Self::Min(b)) => *a = (*a).min(*b),
            (Self::Max(a), Self::Max(b)) => *a = (*a).max(*b),
            (Self::UniqueCount(a), Self::UniqueCount(b)) => a.extend(b.iter().cloned()),
            (
                Self::Latest { time_ms, value },
                Self::Latest {
                    time_ms: t2,
                    value: v2,
                },
            ) if *t2 > *time_ms || (*t2 == *time_ms && *v2 > *value) => {
                *time_ms = *t2;
                *value = *v2;
            }
            _ => {}
        }
    }

    /// The aggregate's value: exact, except AVG (rounded half to even at 18 digits).
    pub fn value(&self) -> Quantity {
        match self {
            Self::Sum(s) => *s,
            Self::Count(c) => Quantity::from_u64(*c),
            Self::Avg { sum, count } => sum.div_count(*count),
            Self::Min(v) | Self::Max(v) => *v,
            Self::UniqueCount(set) => Quantity::from_u64(set.len() as u64),
            Self::Latest { value, .. } => *value,
        }
    }

    pub fn aggregation(&self) -> Aggregation {
        match self {
            Self::Sum(_) => Aggregation::Sum,
            Self::Count(_) => Aggregation::Count,
            Self::Avg { .. } => Aggregation::Avg,
            Self::Min(_) => Aggregation::Min,
            Self::Max(_) => Aggregation::Max,
            Self::UniqueCount(_) => Aggregation::UniqueCount,
            Self::Latest { .. } => Aggregation::Latest,
        }
    }

    /// Bytes this state holds on the heap and inline, for memory accounting.
    pub fn size_bytes(&self) -> usize {
        let inline = std::mem::size_of::<Self>();
        match self {
            Self::UniqueCount(set) => inline + set.iter().map(|s| s.len() + 48).sum::<usize>(),
            _ => inline,
        }
    }
}

/// Addition that never panics; see [`Quantity::saturating_add`] for why it never saturates
/// in practice.
fn saturating_add(a: Quantity, b: Quantity) -> Quantity {
    a.saturating_add(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_for(aggregation: Aggregation, v: i64) -> SampleValue {
        match aggregation {
            Aggregation::Count => SampleValue::One,
            Aggregation::UniqueCount => SampleValue::Text(format!("u{}", v % 7)),
            _ => SampleValue::Number(Quantity::new(v, 2)),
        }
    }

    fn fold_all(aggregation: Aggregation, items: &[(i64, i64)]) -> Option<AggState> {
        let mut state: Option<AggState> = None;
        for (v, t) in items {
            let sample = sample_for(aggregation, *v);
            match &mut state {
                Some(s) => s.fold(&sample, *t),
                None => state = AggState::from_sample(aggregation, &sample, *t),
            }
        }
        state
    }

    #[test]
    fn values_of_each_aggregation() {
        let items = [(150, 3), (-50, 1), (300, 2), (150, 3)];
        let expect = [
            (Aggregation::Sum, "5.5"),
            (Aggregation::Count, "4"),
            (Aggregation::Avg, "1.375"),
            (Aggregation::Min, "-0.5"),
            (Aggregation::Max, "3"),
            (Aggregation::UniqueCount, "3"),
            (Aggregation::Latest, "1.5"),
        ];
        for (aggregation, value) in expect {
            let state = fold_all(aggregation, &items).expect("state");
            assert_eq!(state.value().to_string(), value, "{aggregation:?}");
        }
    }

    proptest! {
        // Splitting a stream anywhere and merging the parts equals folding it whole,
        // in either merge order: what coarser windows and late events rely on.
        #[test]
        fn merge_equals_fold(items in proptest::collection::vec((-1000i64..1000, 0i64..50), 2..40), cut in 1usize..39) {
            let cut = cut.min(items.len() - 1);
            for aggregation in Aggregation::ALL {
                let whole = fold_all(aggregation, &items);
                let left = fold_all(aggregation, &items[..cut]);
                let right = fold_all(aggregation, &items[cut..]);
                if let (Some(mut l), Some(r)) = (left.clone(), right.clone()) {
                    l.merge(&r);
                    prop_assert_eq!(Some(l.value()), whole.as_ref().map(AggState::value));
                }
                if let (Some(l), Some(mut r)) = (left, right) {
                    r.merge(&l);
                    prop_assert_eq!(Some(r.value()), whole.as_ref().map(AggState::value));
                }
            }
        }
    }
}
