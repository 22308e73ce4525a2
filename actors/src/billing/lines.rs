//! Which invoice lines a subscription owes by a given time: pure, no IO.
//!
//! Every priced item of every phase bills once per billing period of its cadence (anchored at
//! the subscription's `billingAnchor`), each period cut to the item's active time (its own
//! interval, which an edit or an add-on may set, within its phase, and the subscription's end). Each line belongs to the plan's billing period holding its
//! start, clipped to the phase (OpenMeter's `BillingPeriod`): a flat fee in advance falls due
//! (`invoiceAt`) at that period's start, so its lines of the whole plan period exist from
//! then; a fee in arrears and usage fall due once their own period and the plan's are over,
//! and exist once their period has started. A one-time fee (no cadence) bills once, at its
//! phase's start. Times are truncated to the minute, the meters' resolution. A flat fee over
//! part of its period, with pro-rating on, carries the full period so the rating can
//! pro-rate it.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use metron_engine::billing::TieredMode;
use metron_engine::billing::{BillingCadence, PaymentTerm, Period, Price, RateCard};
use metron_storage::invoices::{Line, LinePeriod, Split, SubscriptionRef, Totals};
use metron_storage::subscriptions::Subscription;

/// Most billing periods one item is billed for in one pass (a named limit: a subscription
/// anchored years back with a daily cadence is refused rather than expanded without end).
pub const ITEM_PERIODS_MAX: usize = 10_000;

/// A line a subscription owes, before it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct DueLine {
    /// Unique per namespace: subscription, item, period start.
    pub key: String,
    pub name: String,
    pub description: Option<String>,
    pub period: LinePeriod,
    pub invoice_at: DateTime<Utc>,
    pub rate_card: RateCard,
    pub pro_rating_full_period: Option<LinePeriod>,
    pub subscription: SubscriptionRef,
}

/// A time truncated to the minute, the meters' resolution: every line boundary, and the time
/// invoice-now bills up to (OpenMeter truncates by its `MinimumWindowSizeDuration`).
pub fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::minutes(1)).unwrap_or(t)
}

/// The lines `sub` owes at `now`: those whose period has started, and every fee in advance
/// of the plan's current billing period.
/// Errors name the item whose cadence cannot be expanded.
pub fn due_lines(sub: &Subscription, now: DateTime<Utc>) -> Result<Vec<DueLine>, String> {
    let mut out = Vec::new();
    if sub.deleted_at.is_some() {
        return Ok(out);
    }
    let sub_cadence = sub.cadence().map_err(|e| e.to_string())?;
    for (index, phase) in sub.live_phases() {
        let (phase_from, phase_to) = sub.phase_interval(index);
        if phase_from > now {
            continue;
        }
        for item in &phase.items {
            // An edited or add-on item bills only in its own interval within the phase.
            let (from, to) = sub.item_interval(index, item);
            if from > now || to.is_some_and(|to| to <= from) {
                continue;
            }
            let card = &item.rate_card;
            let Some(price) = card.price() else {
                continue;
            };
            let view = card.view();
            let name = card_name(card);
            let description = card_description(card);
            let reference = |billing: LinePeriod| SubscriptionRef {
                subscription_id: sub.id.clone(),
                phase_id: phase.id.clone(),
                item_id: item.id.clone(),
                billing_period: billing,
            };
            let billing_at = |at: DateTime<Utc>| -> Result<LinePeriod, String> {
                let plan = sub_cadence
                    .period_containing(sub.billing_anchor, at)
                    .map_err(|e| e.to_string())?;
                Ok(LinePeriod {
                    from: minute(plan.from.max(phase_from)),
                    to: minute(phase_to.map_or(plan.to, |t| t.min(plan.to))),
                })
            };
            let cadence = match view.billing_cadence {
                Some(text) => Some(
                    BillingCadence::parse(text).map_err(|e| format!("item {}: {e}", card.key()))?,
                ),
                None => None,
            };
            let Some(cadence) = cadence else {
                // One-time fee: once, at the phase's start, over the first billing period.
                let full = sub_cadence
                    .period_containing(sub.billing_anchor, from)
                    .map_err(|e| e.to_string())?;
                let end = to.map_or(full.to, |t| t.min(full.to));
                let period = LinePeriod {
                    from: minute(from),
                    to: minute(end),
                };
                if period.to <= period.from {
                    continue;
                }
                let invoice_at = match &price {
                    Price::Flat(f) if f.payment_term == PaymentTerm::InArrears => period.to,
                    _ => period.from,
                };
                out.push(DueLine {
                    key: format!("sub/{}/{}/{}", sub.id, item.id, period.from.timestamp()),
                    name,
                    description,
                    period,
                    invoice_at,
                    rate_card: card.clone(),
                    pro_rating_full_period: None,
                    subscription: reference(billing_at(from)?),
                });
                continue;
            };
            let in_advance =
                matches!(&price, Price::Flat(f) if f.payment_term == PaymentTerm::InAdvance);
            let mut horizon = cadence
                .period_containing(sub.billing_anchor, now)
                .map_err(|e| e.to_string())?
                .to;
            if in_advance {
                // Fees in advance of the whole current plan period are due at its start.
                let plan = sub_cadence
                    .period_containing(sub.billing_anchor, now)
                    .map_err(|e| e.to_string())?;
                horizon = horizon.max(plan.to);
            }
            let active_to = to.map_or(horizon, |t| t.min(horizon));
            if active_to <= from {
                continue;
            }
            let active = Period {
                from,
                to: active_to,
            };
            let periods = cadence
                .service_periods(sub.billing_anchor, active, ITEM_PERIODS_MAX)
                .map_err(|e| format!("item {}: {e}", card.key()))?;
            for sp in periods {
                let billing = billing_at(sp.service.from)?;
                if sp.service.from > now && !(in_advance && billing.from <= now) {
                    break;
                }
                let period = LinePeriod {
                    from: minute(sp.service.from),
                    to: minute(sp.service.to),
                };
                if period.to <= period.from {
                    continue;
                }
                // OpenMeter's `GetInvoiceAt`: a fee in advance at the start of the plan's
                // billing period, everything else once its period and the plan's are over.
                let invoice_at = if in_advance {
                    billing.from
                } else {
                    period.to.max(billing.to)
                };
                let pro_rate = matches!(&price, Price::Flat(_))
                    && sub.pro_rating_config.enabled
                    && sp.service != sp.full;
                out.push(DueLine {
                    key: format!("sub/{}/{}/{}", sub.id, item.id, period.from.timestamp()),
                    name: name.clone(),
                    description: description.clone(),
                    period,
                    invoice_at,
                    rate_card: card.clone(),
                    pro_rating_full_period: pro_rate.then(|| LinePeriod {
                        from: minute(sp.full.from),
                        to: minute(sp.full.to),
                    }),
                    subscription: reference(billing),
                });
            }
        }
    }
    Ok(out)
}

/// When `sub` will owe a line it does not owe at `now`: the next billing period start of
/// any item, or the next phase start (`None`: nothing more, e.g. it ended).
pub fn next_line_at(sub: &Subscription, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if sub.deleted_at.is_some() || sub.active_to.is_some_and(|end| end <= now) {
        return None;
    }
    let mut next: Option<DateTime<Utc>> = None;
    let mut consider = |t: DateTime<Utc>| {
        if t > now && sub.active_to.is_none_or(|end| t < end) {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
    };
    for (index, phase) in sub.live_phases() {
        let (phase_from, _) = sub.phase_interval(index);
        consider(phase_from);
        for item in &phase.items {
            let (from, _) = sub.item_interval(index, item);
            consider(from);
            if let Some(Ok(cadence)) = item
                .rate_card
                .view()
                .billing_cadence
                .map(BillingCadence::parse)
                && let Ok(p) = cadence.period_containing(sub.billing_anchor, now.max(from))
            {
                consider(p.to);
            }
        }
    }
    next
}

/// What of a gathering line invoice-now bills at `as_of` (OpenMeter's `ResolveBillablePeriod`
/// and `gatherInScopeLines`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Billable {
    /// Nothing yet.
    No,
    /// The whole line.
    Whole,
    /// Progressive billing: the line's period up to this time; the rest stays gathering.
    Until(DateTime<Utc>),
}

/// The line is split or splittable, but its price cannot be billed progressively
/// (OpenMeter's `invoice_progressive_billing_not_supported`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line_id}: progressive billing is not supported")]
pub struct ProgressiveNotSupported {
    pub line_id: String,
}

/// What of `line` invoice-now bills at `as_of` (a whole minute). A flat fee is billed whole
/// once it is due and never split. With `progressive` on, a usage line whose meter only grows
/// (`meter_only_grows`: sum, count, max, unique count) is billed up to `as_of` once `as_of` is
/// past its start; a volume-tiered price, or a meter that can go down, only once its period
/// is over. With `progressive` off, only lines due by `as_of` (`invoiceAt`) are billed.
pub fn billable(
    line: &Line,
    as_of: DateTime<Utc>,
    progressive: bool,
    meter_only_grows: bool,
) -> Result<Billable, ProgressiveNotSupported> {
    let not_supported = || ProgressiveNotSupported {
        line_id: line.id.clone(),
    };
    let due = minute(line.invoice_at) <= as_of;
    let (from, to) = (minute(line.period.from), minute(line.period.to));
    let outcome = match line.rate_card.price() {
        None | Some(Price::Flat(_)) => {
            if line.split.is_some() {
                return Err(not_supported());
            }
            if due { Billable::Whole } else { Billable::No }
        }
        Some(Price::Tiered(t)) if t.mode == TieredMode::Volume => {
            if line.split.is_some() {
                return Err(not_supported());
            }
            if as_of < to {
                Billable::No
            } else {
                Billable::Whole
            }
        }
        Some(_) if progressive && meter_only_grows => {
            if as_of <= from {
                Billable::No
            } else if as_of < to {
                Billable::Until(as_of)
            } else {
                Billable::Whole
            }
        }
        Some(_) => {
            if as_of < to {
                Billable::No
            } else {
                Billable::Whole
            }
        }
    };
    // Without progressive billing a line is billed only once it is due, even when its own
    // period is over (a weekly item of a monthly plan waits for the plan's period end).
    Ok(if !progressive && !due {
        Billable::No
    } else {
        outcome
    })
}

/// `line` split at `at` (inside its period): the part `[from, at)`, due at `at`, keeps the
/// line's id and key; the rest `[at, to)` is a new line `rest_id` keyed by the group's key and
/// `at`. Both join the line's split group, or a new one `group_id` over the line's period.
pub fn split_at(
    line: &Line,
    at: DateTime<Utc>,
    group_id: String,
    rest_id: String,
    now: DateTime<Utc>,
) -> (Line, Line) {
    let split = line.split.clone().unwrap_or_else(|| Split {
        group_id,
        group_key: line.line_key.clone(),
        group_period: line.period,
        metered_pre_line_period_quantity: None,
        pre_line_period_quantity: None,
        previously_billed_amount: rust_decimal::Decimal::ZERO,
    });
    let mut part = line.clone();
    part.period.to = at;
    part.invoice_at = at;
    part.split = Some(split.clone());
    part.updated_at = now;
    let mut rest = line.clone();
    rest.id = rest_id;
    rest.line_key = Split::key_at(&split.group_key, at);
    rest.period.from = at;
    rest.split = Some(Split {
        metered_pre_line_period_quantity: None,
        pre_line_period_quantity: None,
        ..split
    });
    rest.metered_quantity = None;
    rest.quantity = None;
    rest.children = Vec::new();
    rest.totals = Totals::default();
    rest.external_id = None;
    rest.created_at = now;
    rest.updated_at = now;
    (part, rest)
}

/// A gathering part of a split group after its subscription changed to owe `due` over the
/// group's key: the group takes the new period, the part keeps its start and takes the new end
/// (deleted when nothing of it is left). `None`: nothing changed.
pub fn follow_group(line: &Line, due: &DueLine, now: DateTime<Utc>) -> Option<Line> {
    let split = line.split.as_ref()?;
    if split.group_period == due.period && line.invoice_at == due.invoice_at {
        return None;
    }
    let mut out = line.clone();
    out.period = LinePeriod {
        from: line.period.from.max(due.period.from),
        to: due.period.to,
    };
    out.invoice_at = due.invoice_at;
    if let Some(s) = &mut out.split {
        s.group_period = due.period;
    }
    if out.period.to <= out.period.from {
        out.deleted_at = Some(now);
    }
    out.updated_at = now;
    Some(out)
}

fn card_name(card: &RateCard) -> String {
    match card {
        RateCard::FlatFee(r) => r.name.clone(),
        RateCard::UsageBased(r) => r.name.clone(),
    }
}

fn card_description(card: &RateCard) -> Option<String> {
    match card {
        RateCard::FlatFee(r) => r.description.clone(),
        RateCard::UsageBased(r) => r.description.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use metron_storage::product_catalog::plans::{PlanBody, PlanPhase, ProRatingConfig};
    use metron_storage::subscriptions::{NewSubscription, build};
    use serde_json::json;

    fn t(m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, m, d, 0, 0, 0).unwrap()
    }

    fn sub(from: DateTime<Utc>, anchor: DateTime<Utc>) -> Subscription {
        let cards = json!([
            {"type": "flat_fee", "key": "base", "name": "Base", "billingCadence": "P1M",
             "price": {"type": "flat", "amount": "30", "paymentTerm": "in_advance"}},
            {"type": "usage_based", "key": "tokens", "name": "Tokens", "featureKey": "tokens",
             "billingCadence": "P1M", "price": {"type": "unit", "amount": "1"}},
            {"type": "flat_fee", "key": "setup", "name": "Setup", "billingCadence": null,
             "price": {"type": "flat", "amount": "5", "paymentTerm": "in_advance"}}
        ]);
        sub_with("P1M", cards, from, anchor)
    }

    fn sub_with(
        cadence: &str,
        cards: serde_json::Value,
        from: DateTime<Utc>,
        anchor: DateTime<Utc>,
    ) -> Subscription {
        let cards: Vec<RateCard> = serde_json::from_value(cards).unwrap();
        let body = PlanBody {
            name: "Pro".into(),
            description: None,
            metadata: None,
            alignment: None,
            currency: "USD".into(),
            billing_cadence: cadence.into(),
            pro_rating_config: ProRatingConfig::default(),
            settlement_mode: "credit_then_invoice".into(),
            phases: vec![PlanPhase {
                key: "default".into(),
                name: "Default".into(),
                description: None,
                metadata: None,
                duration: None,
                rate_cards: cards,
            }],
        };
        build(
            NewSubscription {
                customer_id: "c".into(),
                plan: None,
                body: &body,
                name: None,
                description: None,
                metadata: None,
                settlement_mode: None,
                active_from: from,
                billing_anchor: Some(anchor),
                starting_phase: None,
            },
            from,
        )
        .unwrap()
    }

    // Anchored on the 1st, started on the 16th of a 30-day month: the first flat fee is
    // pro-rated over [16th, 1st) of [1st, 1st); usage bills at the period end; the one-time
    // fee once. A month later the second period's lines exist too, and nothing is repeated.
    #[test]
    fn periods_cut_to_the_start_and_due_times() {
        let s = sub(t(4, 16), t(4, 1));
        let lines = due_lines(&s, t(4, 16)).unwrap();
        assert_eq!(lines.len(), 3);
        let base = &lines[0];
        assert_eq!(
            (base.period.from, base.period.to, base.invoice_at),
            (t(4, 16), t(5, 1), t(4, 16))
        );
        assert_eq!(
            base.pro_rating_full_period,
            Some(LinePeriod {
                from: t(4, 1),
                to: t(5, 1)
            })
        );
        let usage = &lines[1];
        assert_eq!(
            (usage.invoice_at, usage.pro_rating_full_period),
            (t(5, 1), None)
        );
        assert_eq!(
            lines[2].key,
            format!(
                "sub/{}/{}/{}",
                s.id,
                s.phases[0].items[2].id,
                t(4, 16).timestamp()
            )
        );

        let later = due_lines(&s, t(5, 2)).unwrap();
        assert_eq!(later.len(), 5);
        let keys: std::collections::HashSet<_> = later.iter().map(|l| l.key.clone()).collect();
        assert_eq!(keys.len(), 5);
        assert!(
            later
                .iter()
                .any(|l| l.period.from == t(5, 1) && l.pro_rating_full_period.is_none())
        );
        assert_eq!(next_line_at(&s, t(4, 16)), Some(t(5, 1)));
    }

    // A cancelation cuts the last period: the flat fee's line then covers only the served part.
    #[test]
    fn an_end_cuts_the_last_period() {
        let mut s = sub(t(4, 1), t(4, 1));
        s.active_to = Some(t(4, 11));
        let lines = due_lines(&s, t(4, 20)).unwrap();
        let base = &lines[0];
        assert_eq!((base.period.from, base.period.to), (t(4, 1), t(4, 11)));
        assert!(base.pro_rating_full_period.is_some());
        assert_eq!(next_line_at(&s, t(4, 20)), None);
    }

    // A line's billing period (its `subscription.billingPeriod`) is the plan's billing period
    // clipped to the phase and truncated to the minute, as OpenMeter's `BillingPeriod`: a
    // subscription started on the 16th at 10:30:45, anchored on the 1st, bills its first
    // period [16th 10:30, 1st), while its flat fee pro-rates over the full [1st, 1st).
    #[test]
    fn billing_period_is_the_plans_clipped_to_the_phase() {
        let start = Utc.with_ymd_and_hms(2026, 4, 16, 10, 30, 45).unwrap();
        let s = sub(start, t(4, 1));
        let lines = due_lines(&s, start).unwrap();
        let first = LinePeriod {
            from: Utc.with_ymd_and_hms(2026, 4, 16, 10, 30, 0).unwrap(),
            to: t(5, 1),
        };
        for line in &lines {
            assert_eq!(line.subscription.billing_period, first, "{}", line.name);
        }
        assert_eq!(
            lines[0].pro_rating_full_period,
            Some(LinePeriod {
                from: t(4, 1),
                to: t(5, 1)
            })
        );
        let later = due_lines(&s, t(5, 2)).unwrap();
        let second = later.iter().find(|l| l.period.from == t(5, 1)).unwrap();
        assert_eq!(
            second.subscription.billing_period,
            LinePeriod {
                from: t(5, 1),
                to: t(6, 1)
            }
        );
    }

    // Items billed weekly in a plan billed every four weeks (OpenMeter's
    // `TestAlignedSubscriptionInvoicing`): a fee in advance is due at the start of the plan's
    // billing period, so its four weekly lines all exist and fall due on the first day; a fee
    // in arrears and usage are due when both their week and the plan's period are over.
    #[test]
    fn shorter_cadences_fall_due_with_the_plans_period() {
        let cards = json!([
            {"type": "flat_fee", "key": "in-advance", "name": "In advance", "billingCadence": "P1W",
             "price": {"type": "flat", "amount": "5", "paymentTerm": "in_advance"}},
            {"type": "flat_fee", "key": "in-arrears", "name": "In arrears", "billingCadence": "P1W",
             "price": {"type": "flat", "amount": "7", "paymentTerm": "in_arrears"}},
            {"type": "usage_based", "key": "tokens", "name": "Tokens", "featureKey": "tokens",
             "billingCadence": "P1W", "price": {"type": "unit", "amount": "1"}}
        ]);
        let d = |m: u32, day: u32| Utc.with_ymd_and_hms(2024, m, day, 0, 0, 0).unwrap();
        let s = sub_with("P4W", cards, d(1, 1), d(1, 1));
        let lines = due_lines(&s, d(1, 10)).unwrap();
        let of = |name: &str| -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
            lines
                .iter()
                .filter(|l| l.name == name)
                .map(|l| (l.period.from, l.invoice_at))
                .collect()
        };
        assert_eq!(
            of("In advance"),
            vec![
                (d(1, 1), d(1, 1)),
                (d(1, 8), d(1, 1)),
                (d(1, 15), d(1, 1)),
                (d(1, 22), d(1, 1))
            ]
        );
        let arrears = vec![(d(1, 1), d(1, 29)), (d(1, 8), d(1, 29))];
        assert_eq!(of("In arrears"), arrears);
        assert_eq!(of("Tokens"), arrears);
        for line in &lines {
            assert_eq!(
                line.subscription.billing_period,
                LinePeriod {
                    from: d(1, 1),
                    to: d(1, 29)
                }
            );
        }
        // The next plan period's fees in advance appear when it starts, not before.
        let next = due_lines(&s, d(1, 29)).unwrap();
        assert_eq!(
            next.iter()
                .filter(|l| l.name == "In advance" && l.invoice_at == d(1, 29))
                .count(),
            4
        );
        assert_eq!(next_line_at(&s, d(1, 10)), Some(d(1, 15)));
    }

    // Items with their own interval (an edit added one on the 16th and ended another on the
    // 11th; a third starts on the 20th): each bills only its interval, a partial flat fee
    // pro-rated over the full period, and the scheduled one is not billed before it starts.
    #[test]
    fn item_intervals_cut_their_lines() {
        let mut s = sub(t(4, 1), t(4, 1));
        let added: RateCard = serde_json::from_value(json!({"type": "flat_fee", "key": "support",
            "name": "Support", "billingCadence": "P1M",
            "price": {"type": "flat", "amount": "10", "paymentTerm": "in_advance"}}))
        .unwrap();
        let phase = &mut s.phases[0];
        phase.items[0].active_to = Some(t(4, 11));
        phase.items.push(metron_storage::subscriptions::Item::new(
            added.clone(),
            Some(t(4, 16)),
            None,
        ));
        phase.items.push(metron_storage::subscriptions::Item::new(
            added,
            Some(t(4, 20)),
            None,
        ));
        let lines = due_lines(&s, t(4, 17)).unwrap();
        let periods = |name: &str| -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
            lines
                .iter()
                .filter(|l| l.name == name)
                .map(|l| (l.period.from, l.period.to))
                .collect()
        };
        assert_eq!(periods("Base"), vec![(t(4, 1), t(4, 11))]);
        assert_eq!(periods("Support"), vec![(t(4, 16), t(5, 1))]);
        let support = lines.iter().find(|l| l.name == "Support").unwrap();
        assert_eq!(
            support.pro_rating_full_period,
            Some(LinePeriod {
                from: t(4, 1),
                to: t(5, 1)
            })
        );
        assert_eq!(support.invoice_at, t(4, 1));
        assert_eq!(next_line_at(&s, t(4, 17)), Some(t(4, 20)));
    }

    fn stored(price: serde_json::Value, from: u32, to: u32) -> Line {
        let card = if price["type"] == "flat" {
            json!({"type": "flat_fee", "key": "f", "name": "Fee", "billingCadence": "P1M",
                   "price": price})
        } else {
            json!({"type": "usage_based", "key": "u", "name": "Usage", "featureKey": "u",
                   "billingCadence": "P1M", "price": price})
        };
        serde_json::from_value(json!({
            "id": "l1", "invoiceId": "g", "customerId": "c", "lineKey": "sub/s/i/1",
            "name": "Usage", "managedBy": "subscription", "currency": "USD",
            "period": {"from": t(4, from), "to": t(5, to)}, "invoiceAt": t(5, to),
            "rateCard": card, "createdAt": t(4, 1), "updatedAt": t(4, 1)
        }))
        .unwrap()
    }

    // OpenMeter's billable periods at invoice-now: with progressive billing a usage line on a
    // meter that only grows is billed up to `asOf` once `asOf` is past its start; a volume
    // price or a meter that can go down waits for the period end; a flat fee for its due time;
    // without progressive billing everything waits until it is due.
    #[test]
    fn billable_follows_price_meter_and_progressive_billing() {
        let unit = stored(json!({"type": "unit", "amount": "1"}), 1, 1);
        let volume = stored(
            json!({"type": "tiered", "mode": "volume", "tiers": [
                {"unitPrice": {"type": "unit", "amount": "1"}}]}),
            1,
            1,
        );
        let flat = stored(
            json!({"type": "flat", "amount": "5", "paymentTerm": "in_arrears"}),
            1,
            1,
        );
        let mid = t(4, 16);
        let cases = [
            (&unit, mid, true, true, Billable::Until(mid)),
            (&unit, t(4, 1), true, true, Billable::No),
            (&unit, t(5, 1), true, true, Billable::Whole),
            (&unit, t(5, 3), true, true, Billable::Whole),
            (&unit, mid, true, false, Billable::No),
            (&unit, mid, false, true, Billable::No),
            (&unit, t(5, 1), false, false, Billable::Whole),
            (&volume, mid, true, true, Billable::No),
            (&volume, t(5, 1), true, true, Billable::Whole),
            (&flat, mid, true, true, Billable::No),
            (&flat, t(5, 1), true, true, Billable::Whole),
        ];
        for (i, (line, at, progressive, grows, expected)) in cases.into_iter().enumerate() {
            assert_eq!(
                billable(line, at, progressive, grows),
                Ok(expected),
                "case {i}"
            );
        }
        // Due only at the plan's period end: without progressive billing it waits for that.
        let mut weekly = unit.clone();
        weekly.invoice_at = t(5, 10);
        assert_eq!(billable(&weekly, t(5, 2), false, true), Ok(Billable::No));
        assert_eq!(billable(&weekly, t(5, 2), true, true), Ok(Billable::Whole));
        // A split volume line is OpenMeter's `invoice_progressive_billing_not_supported`.
        let (part, _) = split_at(&volume, mid, "g".into(), "r".into(), mid);
        assert!(billable(&part, t(5, 1), true, true).is_err());
    }

    // A split cuts the line at the time: the part keeps id and key and falls due then, the
    // rest gets its own key and is not rated yet; both in one new group over the whole period.
    // Splitting the rest again keeps the group and its key. A changed subscription moves the
    // group's end, and deletes a part left with nothing.
    #[test]
    fn split_parts_share_a_group() {
        let mut line = stored(json!({"type": "unit", "amount": "1"}), 1, 1);
        line.quantity = Some(rust_decimal::Decimal::from(3));
        let (part, rest) = split_at(&line, t(4, 11), "g1".into(), "r1".into(), t(4, 11));
        let whole = line.period;
        assert_eq!(
            (part.id.as_str(), part.line_key.as_str()),
            ("l1", "sub/s/i/1")
        );
        assert_eq!(
            (part.period.from, part.period.to, part.invoice_at),
            (t(4, 1), t(4, 11), t(4, 11))
        );
        assert_eq!(
            (rest.period.from, rest.period.to, rest.invoice_at),
            (t(4, 11), t(5, 1), t(5, 1))
        );
        assert_eq!(
            rest.line_key,
            format!("sub/s/i/1/split/{}", t(4, 11).timestamp())
        );
        assert_eq!(rest.quantity, None);
        for l in [&part, &rest] {
            let s = l.split.as_ref().unwrap();
            assert_eq!(
                (s.group_id.as_str(), s.group_key.as_str(), s.group_period),
                ("g1", "sub/s/i/1", whole)
            );
        }
        let (again, last) = split_at(&rest, t(4, 21), "g2".into(), "r2".into(), t(4, 21));
        assert_eq!(again.split.as_ref().unwrap().group_id, "g1");
        assert_eq!(
            last.line_key,
            format!("sub/s/i/1/split/{}", t(4, 21).timestamp())
        );

        let due = |to: u32| DueLine {
            key: "sub/s/i/1".into(),
            name: "Usage".into(),
            description: None,
            period: LinePeriod {
                from: t(4, 1),
                to: t(4, to),
            },
            invoice_at: t(4, to),
            rate_card: line.rate_card.clone(),
            pro_rating_full_period: None,
            subscription: SubscriptionRef {
                subscription_id: "s".into(),
                phase_id: "p".into(),
                item_id: "i".into(),
                billing_period: whole,
            },
        };
        let mut unchanged = due(1);
        unchanged.period.to = t(5, 1);
        unchanged.invoice_at = t(5, 1);
        assert_eq!(follow_group(&rest, &unchanged, t(4, 12)), None);
        let shorter = follow_group(&rest, &due(20), t(4, 12)).unwrap();
        assert_eq!(
            (shorter.period.from, shorter.period.to),
            (t(4, 11), t(4, 20))
        );
        assert_eq!(shorter.split.unwrap().group_period.to, t(4, 20));
        assert!(
            follow_group(&rest, &due(5), t(4, 12))
                .unwrap()
                .deleted_at
                .is_some()
        );
    }
}
