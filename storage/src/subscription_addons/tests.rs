//! Merging add-ons into a subscription's items, and their rows against a real SQLite catalog.

use super::*;
use crate::product_catalog::plans::{PlanBody, PlanPhase, ProRatingConfig};
use crate::subscriptions::{NewSubscription, build};
use chrono::TimeZone;
use serde_json::json;

fn t(m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, m, d, 0, 0, 0).unwrap()
}

fn flat(key: &str, amount: Option<&str>) -> RateCard {
    let price = amount.map_or(
        serde_json::Value::Null,
        |a| json!({"type": "flat", "amount": a}),
    );
    serde_json::from_value(json!({"type": "flat_fee", "key": key, "name": key,
        "billingCadence": "P1M", "price": price}))
    .unwrap()
}

fn amount(card: &RateCard) -> Option<Decimal> {
    match card.price() {
        Some(Price::Flat(f)) => Some(f.amount),
        _ => None,
    }
}

/// One open-ended phase from Jan 1st with a `base` fee of 30.
fn sub() -> Subscription {
    let body = PlanBody {
        name: "Pro".into(),
        description: None,
        metadata: None,
        alignment: None,
        currency: "USD".into(),
        billing_cadence: "P1M".into(),
        pro_rating_config: ProRatingConfig::default(),
        settlement_mode: "credit_then_invoice".into(),
        phases: vec![PlanPhase {
            key: "default".into(),
            name: "Default".into(),
            description: None,
            metadata: None,
            duration: None,
            rate_cards: vec![flat("base", Some("30"))],
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
            active_from: t(1, 1),
            billing_anchor: None,
            starting_phase: None,
        },
        t(1, 1),
    )
    .unwrap()
}

fn addon(cards: Vec<RateCard>, instance_type: &str) -> SubscriptionAddon {
    SubscriptionAddon {
        id: "sa1".into(),
        subscription_id: "s".into(),
        addon: AddonRef {
            id: "a1".into(),
            key: "extra".into(),
            version: 1,
            instance_type: instance_type.into(),
        },
        name: "Extra".into(),
        description: None,
        metadata: None,
        rate_cards: cards,
        quantities: vec![QuantityChange {
            active_from: t(1, 10),
            quantity: 2,
        }],
        created_at: t(1, 10),
        updated_at: t(1, 10),
    }
}

type Version = (DateTime<Utc>, Option<DateTime<Utc>>, Option<Decimal>);

/// (from, to, amount) of every version of `key`.
fn versions(s: &Subscription, key: &str) -> Vec<Version> {
    s.phases[0]
        .items
        .iter()
        .filter(|i| i.rate_card.key() == key)
        .map(|i| {
            let (from, to) = s.item_interval(0, i);
            (from, to, amount(&i.rate_card))
        })
        .collect()
}

// Two of an add-on of the base fee's key: the fee is split at the purchase and its later
// version costs 30 + 2 × 5; going down to one and then to zero takes the add-on off again.
#[test]
fn an_addon_of_an_items_key_adds_its_flat_amount_per_unit() {
    let mut s = sub();
    let a = addon(vec![flat("base", Some("5"))], "multiple");
    apply_quantity(&mut s, &a, 0, 2, t(1, 10)).unwrap();
    let d = |n: i64| Some(Decimal::from(n));
    assert_eq!(
        versions(&s, "base"),
        vec![(t(1, 1), Some(t(1, 10)), d(30)), (t(1, 10), None, d(40))]
    );
    assert_eq!(a.affected_items(&s, "base").len(), 1);
    apply_quantity(&mut s, &a, 2, 1, t(2, 1)).unwrap();
    apply_quantity(&mut s, &a, 1, 0, t(3, 1)).unwrap();
    assert_eq!(
        versions(&s, "base"),
        vec![
            (t(1, 1), Some(t(1, 10)), d(30)),
            (t(1, 10), Some(t(2, 1)), d(40)),
            (t(2, 1), Some(t(3, 1)), d(35)),
            (t(3, 1), None, d(30)),
        ]
    );
    assert_eq!(a.affected_items(&s, "base").len(), 2);
}

// A key the subscription lacks becomes a new item from the purchase, its amount times the
// quantity, and ends when the quantity drops to zero.
#[test]
fn an_addon_of_a_new_key_adds_an_item_until_zero() {
    let mut s = sub();
    let a = addon(vec![flat("seats", Some("5"))], "multiple");
    apply_quantity(&mut s, &a, 0, 2, t(1, 10)).unwrap();
    assert_eq!(
        versions(&s, "seats"),
        vec![(t(1, 10), None, Some(Decimal::from(10)))]
    );
    assert!(s.phases[0].items.iter().any(|i| i.from_addons));
    apply_quantity(&mut s, &a, 2, 0, t(2, 1)).unwrap();
    assert_eq!(
        versions(&s, "seats"),
        vec![(t(1, 10), Some(t(2, 1)), Some(Decimal::from(10)))]
    );
    // The base fee was never touched.
    assert_eq!(
        versions(&s, "base"),
        vec![(t(1, 1), None, Some(Decimal::from(30)))]
    );
}

#[test]
fn incompatible_cards_are_refused() {
    let usage: RateCard = serde_json::from_value(json!({"type": "usage_based", "key": "base",
        "name": "B", "billingCadence": "P1M", "price": {"type": "unit", "amount": "1"}}))
    .unwrap();
    assert!(merge(&flat("base", Some("1")), &usage, 1, false).is_err());
    let yearly: RateCard = serde_json::from_value(json!({"type": "flat_fee", "key": "base",
        "name": "B", "billingCadence": "P1Y", "price": {"type": "flat", "amount": "1"}}))
    .unwrap();
    assert!(merge(&flat("base", Some("1")), &yearly, 1, false).is_err());
    assert!(
        merge(
            &flat("base", Some("1")),
            &flat("base", Some("2")),
            -1,
            false
        )
        .is_err()
    );
    assert_eq!(
        amount(&merge(&flat("base", None), &flat("base", Some("2")), 3, false).unwrap()),
        Some(Decimal::from(6))
    );
}

#[test]
fn timeline_and_quantity_at() {
    let mut a = addon(Vec::new(), "multiple");
    a.quantities.push(QuantityChange {
        active_from: t(2, 1),
        quantity: 0,
    });
    assert_eq!(a.quantity_at(t(1, 1)), 0);
    assert_eq!(a.quantity_at(t(1, 10)), 2);
    assert_eq!(a.quantity_at(t(2, 1)), 0);
    assert_eq!(a.active_to(), Some(t(2, 1)));
    assert_eq!(
        a.timeline(),
        vec![
            Segment {
                active_from: t(1, 10),
                active_to: Some(t(2, 1)),
                quantity: 2
            },
            Segment {
                active_from: t(2, 1),
                active_to: None,
                quantity: 0
            },
        ]
    );
}

// The add-on and the subscription it changed are written together; a second purchase of
// the same add-on is refused.
crate::catalog_test! {
    #[tokio::test]
    async fn rows_round_trip_and_an_addon_is_bought_once(db) {
        let catalog = db.open().await;
        let mut s = sub();
        catalog.insert_subscription("ns", &s, None).await.unwrap();
        let mut a = addon(vec![flat("base", Some("5"))], "multiple");
        a.subscription_id = s.id.clone();
        apply_quantity(&mut s, &a, 0, 2, t(1, 10)).unwrap();
        catalog
            .save_subscription_addon("ns", &a, &s, true)
            .await
            .unwrap();
        let stored = catalog
            .get_subscription("ns", &s.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, s);
        assert_eq!(
            catalog.subscription_addons("ns", &s.id).await.unwrap(),
            vec![a.clone()]
        );
        let mut again = a.clone();
        again.id = "sa2".into();
        assert!(matches!(
            catalog
                .save_subscription_addon("ns", &again, &s, true)
                .await,
            Err(Error::Duplicate)
        ));
        a.quantities.push(QuantityChange {
            active_from: t(2, 1),
            quantity: 1,
        });
        catalog
            .save_subscription_addon("ns", &a, &s, false)
            .await
            .unwrap();
        let got = catalog
            .get_subscription_addon("ns", &s.id, "sa1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.quantities.len(), 2);
        assert!(
            catalog
                .get_subscription_addon("ns", "other", "sa1")
                .await
                .unwrap()
                .is_none()
        );
    }
}

fn metered(issue: Option<u32>) -> RateCard {
    let mut template = json!({"type": "metered", "isSoftLimit": true});
    if let Some(issue) = issue {
        template["issueAfterReset"] = json!(issue);
    }
    serde_json::from_value(
        json!({"type": "usage_based", "key": "tokens", "name": "Tokens",
        "featureKey": "tokens", "billingCadence": "P1M", "entitlementTemplate": template}),
    )
    .unwrap()
}

fn grant(card: &RateCard) -> Option<Decimal> {
    match card.view().entitlement_template {
        Some(metron_engine::billing::EntitlementTemplate::Metered(m)) => m.issue_after_reset,
        _ => None,
    }
}

// Metered grants add up per unit (1000 + 2 × 500), and come off again; the version with the
// bigger grant drops its entitlement so a new one is made for it, while the version before
// the purchase keeps the old one.
#[test]
fn metered_grants_add_up_and_the_changed_version_needs_a_new_entitlement() {
    let target = metered(Some(1000));
    let two = merge(&target, &metered(Some(500)), 2, false).unwrap();
    assert_eq!(grant(&two), Some(Decimal::from(2000)));
    assert_eq!(
        grant(&merge(&two, &metered(Some(500)), -2, false).unwrap()),
        Some(Decimal::from(1000))
    );
    assert!(merge(&target, &metered(Some(5000)), -1, false).is_err());

    let mut s = sub();
    let mut item = crate::subscriptions::Item::new(target, None, None);
    item.entitlement_id = Some("ent1".into());
    s.phases[0].items.push(item);
    let a = addon(vec![metered(Some(500))], "multiple");
    apply_quantity(&mut s, &a, 0, 2, t(1, 10)).unwrap();
    let tokens: Vec<(Option<&str>, Option<Decimal>)> = s.phases[0]
        .items
        .iter()
        .filter(|i| i.rate_card.key() == "tokens")
        .map(|i| (i.entitlement_id.as_deref(), grant(&i.rate_card)))
        .collect();
    assert_eq!(
        tokens,
        vec![
            (Some("ent1"), Some(Decimal::from(1000))),
            (None, Some(Decimal::from(2000)))
        ]
    );
    // A new key's item gets the add-on's grant times the quantity.
    let mut s = sub();
    apply_quantity(&mut s, &a, 0, 3, t(1, 10)).unwrap();
    let created = s.phases[0]
        .items
        .iter()
        .find(|i| i.rate_card.key() == "tokens")
        .unwrap();
    assert_eq!(grant(&created.rate_card), Some(Decimal::from(1500)));
}
