//! Which balance thresholds a value crosses, and whether that fires: pure, no IO.
//!
//! Thresholds come in two kinds: usage (`usage_value`, `usage_percentage` and their deprecated
//! names `NUMBER`, `PERCENT`) and balance (`balance_value`). Per kind only the highest crossed
//! threshold counts (the largest usage in credits, the smallest balance). It fires when it
//! differs from the threshold last fired for the same key (rule, entitlement, feature, usage
//! period, measureUsageFrom, kind), as OpenMeter's balance-threshold consumer decides: when the
//! balance goes back up (a new grant) a lower threshold is the highest crossed again and fires
//! again; when nothing is crossed nothing fires and the last fired one stays recorded.
//! Without grants (total available amount not positive) nothing is crossed, as in OpenMeter.

use metron_storage::notifications::{Threshold, ThresholdType};
use rust_decimal::Decimal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThresholdKind {
    Usage,
    Balance,
}

impl ThresholdKind {
    pub fn of(kind: ThresholdType) -> Self {
        match kind {
            ThresholdType::BalanceValue => Self::Balance,
            ThresholdType::UsagePercentage
            | ThresholdType::UsageValue
            | ThresholdType::Number
            | ThresholdType::Percent => Self::Usage,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Usage => "usage",
            Self::Balance => "balance",
        }
    }
}

/// The numbers of an entitlement's value that thresholds compare against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceValue {
    pub usage: Decimal,
    pub balance: Decimal,
    pub total_available_grant_amount: Decimal,
}

/// The threshold in credits of usage (usage kind) or of balance (balance kind).
fn credits(threshold: &Threshold, total: Decimal) -> Decimal {
    match threshold.kind {
        ThresholdType::UsagePercentage | ThresholdType::Percent => {
            threshold.value * total / Decimal::ONE_HUNDRED
        }
        _ => threshold.value,
    }
}

/// Whether the value has reached the threshold.
pub fn is_crossed(threshold: &Threshold, value: &BalanceValue) -> bool {
    let total = value.total_available_grant_amount;
    if total <= Decimal::ZERO {
        return false;
    }
    match threshold.kind {
        ThresholdType::BalanceValue => value.balance <= threshold.value,
        ThresholdType::UsageValue | ThresholdType::Number => value.usage >= threshold.value,
        ThresholdType::UsagePercentage | ThresholdType::Percent => {
            value.usage * Decimal::ONE_HUNDRED / total >= threshold.value
        }
    }
}

/// The highest crossed threshold of each kind, usage first.
pub fn highest_crossed(
    thresholds: &[Threshold],
    value: &BalanceValue,
) -> Vec<(ThresholdKind, Threshold)> {
    let total = value.total_available_grant_amount;
    let mut usage: Option<Threshold> = None;
    let mut balance: Option<Threshold> = None;
    for t in thresholds.iter().filter(|t| is_crossed(t, value)) {
        match ThresholdKind::of(t.kind) {
            ThresholdKind::Usage => {
                if usage.is_none_or(|u| credits(t, total) > credits(&u, total)) {
                    usage = Some(*t);
                }
            }
            ThresholdKind::Balance => {
                if balance.is_none_or(|b| t.value < b.value) {
                    balance = Some(*t);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(2);
    if let Some(t) = usage {
        out.push((ThresholdKind::Usage, t));
    }
    if let Some(t) = balance {
        out.push((ThresholdKind::Balance, t));
    }
    out
}

/// Fires unless this very threshold was the last one fired for the key.
pub fn should_fire(last_fired: Option<&Threshold>, highest: &Threshold) -> bool {
    last_fired != Some(highest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ThresholdType::*;

    fn t(value: i64, kind: ThresholdType) -> Threshold {
        Threshold {
            value: Decimal::from(value),
            kind,
        }
    }

    fn v(usage: i64, balance: i64, total: i64) -> super::BalanceValue {
        super::BalanceValue {
            usage: Decimal::from(usage),
            balance: Decimal::from(balance),
            total_available_grant_amount: Decimal::from(total),
        }
    }

    #[test]
    fn crossing_each_threshold_type() {
        let cases = [
            // (threshold, value, crossed)
            (t(20, BalanceValue), v(80, 20, 100), true),
            (t(20, BalanceValue), v(79, 21, 100), false),
            (t(0, BalanceValue), v(100, 0, 100), true),
            (t(0, BalanceValue), v(120, -20, 100), true),
            (t(50, UsageValue), v(50, 50, 100), true),
            (t(50, UsageValue), v(49, 51, 100), false),
            (t(50, Number), v(50, 50, 100), true),
            (t(80, UsagePercentage), v(40, 10, 50), true),
            (t(80, UsagePercentage), v(39, 11, 50), false),
            (t(80, Percent), v(40, 10, 50), true),
            (t(150, UsagePercentage), v(150, -50, 100), true),
            // No grants: nothing is crossed, whatever the type.
            (t(10, UsageValue), v(50, 0, 0), false),
            (t(0, BalanceValue), v(50, 0, 0), false),
            (t(10, UsagePercentage), v(50, 0, 0), false),
        ];
        for (threshold, value, crossed) in cases {
            assert_eq!(
                is_crossed(&threshold, &value),
                crossed,
                "{threshold:?} at {value:?}"
            );
        }
    }

    #[test]
    fn highest_crossed_per_kind() {
        let rule = [
            t(50, UsagePercentage),
            t(90, UsagePercentage),
            t(60, UsageValue),
            t(30, BalanceValue),
            t(10, BalanceValue),
        ];
        let cases = [
            (v(10, 90, 100), vec![]),
            (
                v(50, 50, 100),
                vec![(ThresholdKind::Usage, t(50, UsagePercentage))],
            ),
            // 60 credits of usage beats 50%; balance 40 crosses nothing yet.
            (
                v(60, 40, 100),
                vec![(ThresholdKind::Usage, t(60, UsageValue))],
            ),
            (
                v(75, 25, 100),
                vec![
                    (ThresholdKind::Usage, t(60, UsageValue)),
                    (ThresholdKind::Balance, t(30, BalanceValue)),
                ],
            ),
            (
                v(95, 5, 100),
                vec![
                    (ThresholdKind::Usage, t(90, UsagePercentage)),
                    (ThresholdKind::Balance, t(10, BalanceValue)),
                ],
            ),
            // Percentages are of the grant total: with 200 available, 50% is 100 credits and
            // beats 60 credits of usage; 90% (180 credits) is not reached.
            (
                v(150, 50, 200),
                vec![(ThresholdKind::Usage, t(50, UsagePercentage))],
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(highest_crossed(&rule, &value), expected, "{value:?}");
        }
    }

    #[test]
    fn fires_once_per_highest_and_again_when_it_changes() {
        let rule = [t(50, UsageValue), t(80, UsageValue)];
        let mut last: Option<Threshold> = None;
        let mut fired = Vec::new();
        // Usage climbs, repeats, then a grant raises the total and usage is measured again.
        for usage in [10, 50, 55, 70, 80, 90, 90, 60, 85] {
            for (_, highest) in highest_crossed(&rule, &v(usage, 100 - usage, 100)) {
                if should_fire(last.as_ref(), &highest) {
                    fired.push((usage, highest.value));
                    last = Some(highest);
                }
            }
        }
        let d = Decimal::from;
        assert_eq!(
            fired,
            vec![(50, d(50)), (80, d(80)), (60, d(50)), (85, d(80))]
        );
    }
}
