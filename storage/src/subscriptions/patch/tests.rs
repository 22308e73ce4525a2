use super::*;
use crate::product_catalog::plans::{PlanBody, PlanPhase, ProRatingConfig};
use crate::subscriptions::{NewSubscription, build};
use chrono::TimeZone;
use serde_json::json;

fn t(m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, m, d, 0, 0, 0).unwrap()
}

fn card(key: &str, amount: &str) -> RateCard {
    serde_json::from_value(json!({"type": "flat_fee", "key": key, "name": key,
        "billingCadence": "P1M", "price": {"type": "flat", "amount": amount}}))
    .unwrap()
}

/// Trial (one month from Jan 1st) then default; each with a `base` item.
fn sub() -> Subscription {
    let phase = |key: &str, duration: Option<&str>| PlanPhase {
        key: key.into(),
        name: key.into(),
        description: None,
        metadata: None,
        duration: duration.map(str::to_owned),
        rate_cards: vec![card("base", "10")],
    };
    let body = PlanBody {
        name: "Pro".into(),
        description: None,
        metadata: None,
        alignment: None,
        currency: "USD".into(),
        billing_cadence: "P1M".into(),
        pro_rating_config: ProRatingConfig::default(),
        settlement_mode: "credit_then_invoice".into(),
        phases: vec![phase("trial", Some("P1M")), phase("default", None)],
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
            active_from: t(1, 1),
            billing_anchor: None,
            starting_phase: None,
        },
        t(1, 1),
    )
    .unwrap()
}

fn op(value: serde_json::Value) -> Patch {
    Patch::from_json(&value).unwrap()
}

fn intervals(
    s: &Subscription,
    phase: usize,
    key: &str,
) -> Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> {
    s.phases[phase]
        .items
        .iter()
        .filter(|i| i.rate_card.key() == key)
        .map(|i| s.item_interval(phase, i))
        .collect()
}

// Adding a key to the running phase starts it at the edit time; adding it again closes the
// first version there; removing ends the last version at the edit time.
#[test]
fn items_of_the_running_phase_are_versioned_at_the_edit_time() {
    let mut s = sub();
    let add = op(json!({"op": "add_item", "phaseKey": "trial",
        "rateCard": {"type": "flat_fee", "key": "extra", "name": "Extra", "billingCadence": "P1M",
                     "price": {"type": "flat", "amount": "5"}}}));
    apply(&mut s, std::slice::from_ref(&add), t(1, 10)).unwrap();
    assert_eq!(intervals(&s, 0, "extra"), vec![(t(1, 10), Some(t(2, 1)))]);
    apply(&mut s, &[add], t(1, 20)).unwrap();
    assert_eq!(
        intervals(&s, 0, "extra"),
        vec![(t(1, 10), Some(t(1, 20))), (t(1, 20), Some(t(2, 1)))]
    );
    let remove = op(json!({"op": "remove_item", "phaseKey": "trial", "itemKey": "base"}));
    apply(&mut s, &[remove], t(1, 15)).unwrap();
    assert_eq!(intervals(&s, 0, "base"), vec![(t(1, 1), Some(t(1, 15)))]);
    // A future phase loses the item outright.
    let remove = op(json!({"op": "remove_item", "phaseKey": "default", "itemKey": "base"}));
    apply(&mut s, &[remove], t(1, 15)).unwrap();
    assert!(intervals(&s, 1, "base").is_empty());
}

// OpenMeter's refusals: a past phase is forbidden, a future phase's existing key too, an
// unknown phase or key is invalid, an overlap with a scheduled end is forbidden.
#[test]
fn refusals_follow_openmeter() {
    let at = t(2, 10);
    let cases = [
        (
            json!({"op": "add_item", "phaseKey": "trial", "rateCard": {"type": "flat_fee", "key": "x", "name": "X"}}),
            "forbidden",
        ),
        (
            json!({"op": "remove_item", "phaseKey": "trial", "itemKey": "base"}),
            "forbidden",
        ),
        (
            json!({"op": "remove_item", "phaseKey": "default", "itemKey": "nope"}),
            "invalid",
        ),
        (
            json!({"op": "remove_item", "phaseKey": "nope", "itemKey": "base"}),
            "invalid",
        ),
        (
            json!({"op": "remove_phase", "phaseKey": "default", "shift": "next"}),
            "forbidden",
        ),
        (
            json!({"op": "stretch_phase", "phaseKey": "trial", "extendBy": "P1D"}),
            "forbidden",
        ),
        (
            json!({"op": "stretch_phase", "phaseKey": "default", "extendBy": "PT0S"}),
            "invalid",
        ),
        (
            json!({"op": "add_phase", "phase": {"key": "default", "name": "D", "startAfter": "P3M"}}),
            "conflict",
        ),
        (
            json!({"op": "add_phase", "phase": {"key": "old", "name": "Old", "startAfter": "P1D"}}),
            "forbidden",
        ),
        (
            json!({"op": "add_item", "phaseKey": "default", "rateCard": {"type": "flat_fee", "key": "BAD KEY", "name": "X"}}),
            "rate_card",
        ),
    ];
    for (value, want) in cases {
        let mut s = sub();
        let err = apply(&mut s, &[op(value.clone())], at).unwrap_err();
        let got = match err {
            PatchError::Invalid { .. } => "invalid",
            PatchError::Forbidden { .. } => "forbidden",
            PatchError::Conflict { .. } => "conflict",
            PatchError::RateCard { .. } => "rate_card",
        };
        assert_eq!(got, want, "{value}");
    }
    // A removal scheduled later than a new version's start must be deleted first.
    let mut s = sub();
    s.phases[1].items[0].active_to = Some(t(3, 1));
    let add = op(
        json!({"op": "add_item", "phaseKey": "default", "rateCard": {"type": "flat_fee", "key": "base", "name": "B"}}),
    );
    assert!(matches!(
        apply(&mut s, &[add], at),
        Err(PatchError::Forbidden { index: 0, .. })
    ));
    // The index names the failing patch.
    let mut s = sub();
    let ok = op(json!({"op": "remove_item", "phaseKey": "default", "itemKey": "base"}));
    let bad = op(json!({"op": "remove_item", "phaseKey": "default", "itemKey": "base"}));
    assert!(matches!(
        apply(&mut s, &[ok, bad], t(1, 10)),
        Err(PatchError::Invalid { index: 1, .. })
    ));
}

// Adding a phase before `default` pushes it to the new phase's end; removing it with `next`
// pulls the later phases back; stretching moves every later phase.
#[test]
fn phases_move_as_openmeter_shifts_them() {
    let mut s = sub();
    let add = op(
        json!({"op": "add_phase", "phase": {"key": "promo", "name": "Promo",
        "startAfter": "P1M", "duration": "P2M"}}),
    );
    apply(&mut s, &[add], t(1, 10)).unwrap();
    let starts: Vec<(&str, DateTime<Utc>)> = s
        .phases
        .iter()
        .map(|p| (p.key.as_str(), p.active_from))
        .collect();
    assert_eq!(
        starts,
        vec![("trial", t(1, 1)), ("promo", t(2, 1)), ("default", t(4, 1))]
    );

    let stretch = op(json!({"op": "stretch_phase", "phaseKey": "trial", "extendBy": "P10D"}));
    apply(&mut s, &[stretch], t(1, 10)).unwrap();
    assert_eq!(s.phases[1].active_from, t(2, 11));
    assert_eq!(s.phases[2].active_from, t(4, 11));
    let shrink = op(json!({"op": "stretch_phase", "phaseKey": "trial", "extendBy": "-P20D"}));
    assert!(matches!(
        apply(&mut s.clone(), &[shrink], t(1, 25)),
        Err(PatchError::Forbidden { .. })
    ));

    let mut next = s.clone();
    let remove = op(json!({"op": "remove_phase", "phaseKey": "promo", "shift": "next"}));
    apply(&mut next, &[remove], t(1, 10)).unwrap();
    assert_eq!(next.phases[1].key, "default");
    assert_eq!(next.phases[1].active_from, t(2, 11));
    let remove = op(json!({"op": "remove_phase", "phaseKey": "promo", "shift": "prev"}));
    apply(&mut s, &[remove], t(1, 10)).unwrap();
    assert_eq!(s.phases[1].active_from, t(4, 11));

    let mut single = sub();
    single.phases.truncate(1);
    let stretch = op(json!({"op": "stretch_phase", "phaseKey": "trial", "extendBy": "P1D"}));
    assert!(matches!(
        apply(&mut single, &[stretch], t(1, 10)),
        Err(PatchError::Conflict { .. })
    ));
}

// Unscheduling drops the running phase's scheduled versions and the scheduled end of the
// running one; an item that already ended stays ended.
#[test]
fn unschedule_edit_drops_what_is_scheduled() {
    let mut s = sub();
    s.phases[0].items[0].active_to = Some(t(1, 20));
    s.phases[0]
        .items
        .push(Item::new(card("base", "20"), Some(t(1, 20)), None));
    s.phases[0]
        .items
        .push(Item::new(card("gone", "1"), None, Some(t(1, 5))));
    apply(&mut s, &[op(json!({"op": "unschedule_edit"}))], t(1, 10)).unwrap();
    assert_eq!(intervals(&s, 0, "base"), vec![(t(1, 1), Some(t(2, 1)))]);
    assert_eq!(intervals(&s, 0, "gone"), vec![(t(1, 1), Some(t(1, 5)))]);

    let mut late = sub();
    late.active_to = Some(t(1, 15));
    assert!(matches!(
        apply(&mut late, &[op(json!({"op": "unschedule_edit"}))], t(1, 20)),
        Err(PatchError::Conflict { .. })
    ));
}

#[test]
fn operations_are_read_from_json() {
    assert!(Patch::from_json(&json!({"op": "nope"})).is_err());
    assert!(Patch::from_json(&json!([])).is_err());
    assert!(
        Patch::from_json(&json!({"op": "remove_phase", "phaseKey": "a", "shift": "up"})).is_err()
    );
    assert_eq!(
        Patch::from_json(&json!({"op": "stretch_phase", "phaseKey": "a", "extendBy": "P1D"}))
            .unwrap(),
        Patch::StretchPhase {
            phase_key: "a".into(),
            extend_by: "P1D".into()
        }
    );
}
