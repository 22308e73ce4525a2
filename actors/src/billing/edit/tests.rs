use super::*;
use chrono::TimeZone;
use rust_decimal::Decimal;

fn t(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0)
        .single()
        .unwrap_or_default()
}

fn card(price: Value) -> RateCard {
    if price["type"] == "flat" {
        serde_json::from_value(json!({"type": "flat_fee", "key": "manual", "name": "x",
            "billingCadence": "P1M", "price": price}))
        .unwrap()
    } else {
        serde_json::from_value(
            json!({"type": "usage_based", "key": "tokens", "featureKey": "tokens",
            "name": "x", "billingCadence": "P1M", "price": price}),
        )
        .unwrap()
    }
}

/// A subscription line (read as stored, so that fields added with defaults need no change
/// here).
fn line(id: &str, name: &str, price: Value) -> Line {
    serde_json::from_value(json!({
        "id": id, "invoiceId": "inv", "customerId": "cus", "lineKey": format!("sub/{id}"),
        "name": name, "managedBy": "subscription", "currency": "USD",
        "period": {"from": t(1, 0), "to": t(2, 0)}, "invoiceAt": t(2, 0),
        "rateCard": card(price),
        "proRatingFullPeriod": {"from": t(1, 0), "to": t(31, 0)},
        "meteredQuantity": "4", "quantity": "4", "externalId": "il_1",
        "createdAt": t(1, 0), "updatedAt": t(1, 0),
    }))
    .unwrap()
}

/// A line from an input as a pending line would be: enough of `Billing::api_line`.
fn build(input: &Value) -> Result<Line> {
    let id = input["id"].as_str().unwrap_or("new").to_owned();
    let mut l = line(
        &id,
        input["name"].as_str().unwrap_or_default(),
        input["rateCard"]["price"].clone(),
    );
    l.managed_by = "manual".into();
    l.line_key = format!("manual/{id}");
    l.pro_rating_full_period = None;
    l.period =
        serde_json::from_value(input["period"].clone()).map_err(|e| invalid(e.to_string()))?;
    l.invoice_at =
        serde_json::from_value(input["invoiceAt"].clone()).map_err(|e| invalid(e.to_string()))?;
    l.metadata = serde_json::from_value(input["metadata"].clone()).ok();
    l.quantity = input["quantity"].as_str().and_then(|q| q.parse().ok());
    l.metered_quantity = l.quantity;
    if let Some(feature) = input["rateCard"]["featureKey"].as_str()
        && let RateCard::UsageBased(c) = &mut l.rate_card
    {
        c.key = feature.to_owned();
        c.feature_key = Some(feature.to_owned());
    }
    l.external_id = None;
    Ok(l)
}

fn unit(amount: &str) -> Value {
    json!({"type": "unit", "amount": amount})
}

fn flat(amount: &str) -> Value {
    json!({"type": "flat", "amount": amount, "paymentTerm": "in_advance"})
}

/// The line as the API would send it back.
fn input_of(l: &Line) -> Value {
    json!({"id": l.id, "name": l.name, "period": l.period, "invoiceAt": l.invoice_at,
           "rateCard": {"price": l.rate_card.price(), "featureKey": l.rate_card.view().feature_key}})
}

fn body() -> Value {
    json!({
        "supplier": {"name": "Us Inc.", "addresses": [{"country": "DE", "city": "Berlin"}], "taxId": {"code": "DE1"}},
        "customer": {"name": "ACME", "addresses": [{"country": "US"}]},
        "workflow": {"workflow": {"invoicing": {"autoAdvance": false, "draftPeriod": "P2D"},
                                  "payment": {"collectionMethod": "send_invoice"}}},
        "lines": [],
        "metadata": {"po": "7"},
    })
}

// The required parts of the body are checked before anything else: each missing or
// mistyped one is named.
#[test]
fn parse_requires_the_schema_parts() {
    let b = body();
    let parsed = parse(&b).unwrap();
    assert_eq!(
        parsed.metadata,
        Some(BTreeMap::from([("po".to_owned(), "7".to_owned())]))
    );
    for (key, value, needle) in [
        ("lines", Value::Null, "lines is required"),
        ("lines", json!([1]), "lines[0] must be an object"),
        ("supplier", json!("x"), "supplier is required"),
        ("customer", Value::Null, "customer is required"),
        ("workflow", json!({}), "workflow.workflow is required"),
        (
            "metadata",
            json!({"a": 1}),
            "metadata must be a map of strings",
        ),
        ("description", json!("x".repeat(1025)), "at most 1024"),
    ] {
        let mut b = body();
        b[key] = value;
        let err = parse(&b).unwrap_err().to_string();
        assert!(err.contains(needle), "{key}: {err}");
    }
    assert!(parse(&json!([])).is_err());
    let mut empty_metadata = body();
    empty_metadata["metadata"] = json!({});
    assert_eq!(parse(&empty_metadata).unwrap().metadata, None);
}

// Supplier and customer: name and address replaced, the supplier needs a country, a missing
// tax id is removed; ids, keys and usage attribution stay.
#[test]
fn parties_are_merged_as_openmeter_does() {
    let b = body();
    let existing = json!({"key": "us", "name": "Old", "taxId": {"code": "OLD"}});
    let supplier = merge_supplier(&existing, b["supplier"].as_object().unwrap()).unwrap();
    assert_eq!(
        supplier,
        json!({"key": "us", "name": "Us Inc.", "taxId": {"code": "DE1"},
               "addresses": [{"country": "DE", "city": "Berlin"}]})
    );
    let no_tax = json!({"name": "Us", "addresses": [{"country": "DE"}]});
    let merged = merge_supplier(&existing, no_tax.as_object().unwrap()).unwrap();
    assert!(merged.get("taxId").is_none(), "{merged}");
    for (bad, needle) in [
        (
            json!({"addresses": [{"country": "DE"}]}),
            "supplier: name is required",
        ),
        (json!({"name": "Us"}), "supplier: country is required"),
        (
            json!({"name": "Us", "addresses": [{"country": "de"}]}),
            "alpha-2",
        ),
        (
            json!({"name": "Us", "addresses": [{"country": "DE"}, {"country": "FR"}]}),
            "at most one",
        ),
    ] {
        let err = merge_supplier(&existing, bad.as_object().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{bad}: {err}");
    }
    let customer = json!({"id": "c1", "key": "acme", "name": "Old", "usageAttribution": {"subjectKeys": ["a"]},
                          "addresses": [{"country": "FR"}]});
    let merged = merge_customer(
        &customer,
        &Map::from_iter([("name".to_owned(), json!("New"))]),
    )
    .unwrap();
    assert_eq!(
        merged,
        json!({"id": "c1", "key": "acme", "name": "New", "usageAttribution": {"subjectKeys": ["a"]},
               "addresses": []})
    );
    assert!(merge_customer(&customer, &Map::new()).is_err());
}

// The mutable workflow settings are replaced, each left out taking its default; collection
// and tax stay as created; bad durations and methods are refused.
#[test]
fn workflow_is_merged_with_defaults() {
    let mut existing = BillingWorkflow::default();
    existing.collection.interval = "PT2H".into();
    existing.invoicing.due_after = "P7D".into();
    existing.tax.enabled = false;
    let b = body();
    let merged = merge_workflow(&existing, b["workflow"]["workflow"].as_object().unwrap()).unwrap();
    assert!(!merged.invoicing.auto_advance);
    assert_eq!(merged.invoicing.draft_period, "P2D");
    assert_eq!(merged.invoicing.due_after, "P30D", "left out: the default");
    assert_eq!(
        merged.payment.collection_method,
        CollectionMethod::SendInvoice
    );
    assert_eq!(merged.collection.interval, "PT2H");
    assert!(!merged.tax.enabled);
    let defaults = merge_workflow(&merged, &Map::new()).unwrap();
    assert!(defaults.invoicing.auto_advance);
    assert_eq!(defaults.invoicing.draft_period, "P0D");
    assert_eq!(
        defaults.payment.collection_method,
        CollectionMethod::ChargeAutomatically
    );
    for bad in [
        json!({"invoicing": {"draftPeriod": "2 days"}}),
        json!({"invoicing": {"autoAdvance": "yes"}}),
        json!({"payment": {"collectionMethod": "cash"}}),
        json!({"invoicing": 3}),
    ] {
        assert!(
            merge_workflow(&existing, bad.as_object().unwrap()).is_err(),
            "{bad}"
        );
    }
}

// draftUntil is the draft period after the later of collectionAt and createdAt, none
// without auto-advance.
#[test]
fn draft_until_follows_openmeter() {
    let mut invoice: Invoice = serde_json::from_value(json!({
        "id": "i", "customerId": "c", "currency": "USD", "status": "draft.manual_approval_needed",
        "customer": {}, "supplier": {}, "workflow": {}, "invoicingAppId": "a",
        "createdAt": t(3, 0), "updatedAt": t(3, 0),
    }))
    .unwrap();
    let mut w = BillingWorkflow::default();
    w.invoicing.draft_period = "P2D".into();
    assert_eq!(draft_until(&invoice, &w), Some(t(5, 0)));
    invoice.collection_at = Some(t(4, 6));
    assert_eq!(draft_until(&invoice, &w), Some(t(6, 6)));
    invoice.collection_at = Some(t(1, 0));
    assert_eq!(
        draft_until(&invoice, &w),
        Some(t(5, 0)),
        "never before createdAt"
    );
    w.invoicing.auto_advance = false;
    assert_eq!(draft_until(&invoice, &w), None);
}

// Lines: one sent back as it is keeps its owner, one changed becomes manual, one left out is
// deleted (manual), one without an id or with an unknown id is created with an id of its own.
#[test]
fn lines_are_merged_created_and_deleted() {
    let now = t(10, 0);
    let kept = line("01KEPT", "Kept", flat("30"));
    let mut changed = line("01CHANGED", "Seats", unit("2.5"));
    changed.metadata = Some(BTreeMap::from([("k".to_owned(), "v".to_owned())]));
    let gone = line("01GONE", "Gone", flat("1"));
    let existing = vec![kept.clone(), changed.clone(), gone.clone()];
    let mut edit = input_of(&changed);
    edit["rateCard"]["price"] = unit("3.35");
    edit["quantity"] = json!("7");
    edit["rateCard"]["featureKey"] = json!("calls");
    let mut created = input_of(&kept);
    created["id"] = json!("01UNKNOWN");
    created["name"] = json!("Support");
    created["description"] = json!("Priority");
    let plan = plan_lines(&existing, &[input_of(&kept), edit, created], now, build).unwrap();
    assert_eq!((plan.changed, plan.deleted, plan.created.len()), (1, 1, 1));
    let by_id: BTreeMap<&str, &Line> = plan.existing.iter().map(|l| (l.id.as_str(), l)).collect();
    assert_eq!(by_id["01KEPT"], &kept, "unchanged: as it was");
    let c = by_id["01CHANGED"];
    assert_eq!(c.managed_by, "manual");
    assert_eq!(c.updated_at, now);
    assert_eq!(
        c.quantity,
        Some(Decimal::from(4)),
        "usage is measured, not edited"
    );
    assert_eq!(c.rate_card.price(), card(unit("3.35")).price());
    let view = c.rate_card.view();
    assert_eq!((view.key, view.feature_key), ("calls", Some("calls")));
    assert_eq!(c.metadata, changed.metadata, "metadata left out is kept");
    assert_eq!(c.line_key, changed.line_key);
    assert_eq!(c.external_id.as_deref(), Some("il_1"));
    assert_eq!(
        c.pro_rating_full_period, changed.pro_rating_full_period,
        "same period"
    );
    let g = by_id["01GONE"];
    assert_eq!((g.deleted_at, g.managed_by.as_str()), (Some(now), "manual"));
    let n = &plan.created[0];
    assert_ne!(n.id, "01UNKNOWN");
    assert_eq!(n.managed_by, "manual");
    assert_eq!(n.description.as_deref(), Some("Priority"));
    assert_eq!(
        plan.touched,
        BTreeSet::from(["01CHANGED".to_owned(), n.id.clone()])
    );
}

// A changed period drops the line's pro-rating; a description set on an existing line is a
// change; the same id twice and a long name are refused.
#[test]
fn line_edits_and_refusals() {
    let now = t(10, 0);
    let fee = line("01FEE", "Fee", flat("30"));
    let mut moved = input_of(&fee);
    moved["period"]["to"] = json!(t(3, 0));
    let plan = plan_lines(std::slice::from_ref(&fee), &[moved.clone()], now, build).unwrap();
    assert_eq!(plan.existing[0].pro_rating_full_period, None);
    assert_eq!(plan.existing[0].managed_by, "manual");
    let mut described = input_of(&fee);
    described["description"] = json!("Monthly");
    let plan = plan_lines(std::slice::from_ref(&fee), &[described], now, build).unwrap();
    assert_eq!(plan.changed, 1);
    assert_eq!(plan.existing[0].description.as_deref(), Some("Monthly"));
    let twice = plan_lines(
        std::slice::from_ref(&fee),
        &[input_of(&fee), moved],
        now,
        build,
    );
    assert!(twice.unwrap_err().to_string().contains("given twice"));
    let mut long = input_of(&fee);
    long["name"] = json!("n".repeat(257));
    assert!(plan_lines(&[], &[long], now, build).is_err());
}

// Discounts given replace the card's; left out, the line keeps its own; a flat price on a
// usage card stays a usage card, a unit price on a flat card becomes a usage card.
#[test]
fn cards_and_discounts() {
    let usage = card(unit("1"));
    let with = with_discounts(
        &usage,
        &json!({"rateCard": {"discounts": {"percentage": {"percentage": 10}}}}),
        None,
    )
    .unwrap();
    let kept = with.view().discounts.cloned();
    assert!(kept.as_ref().is_some_and(|d| d.percentage.is_some()));
    let again = with_discounts(&usage, &json!({}), kept.as_ref()).unwrap();
    assert_eq!(again.view().discounts, kept.as_ref());
    assert!(
        with_discounts(
            &usage,
            &json!({"rateCard": {"discounts": {"usage": 3}}}),
            None
        )
        .is_err()
    );
    let merged = merge_card(&usage, &card(flat("5"))).unwrap();
    assert!(matches!(merged, RateCard::UsageBased(_)), "{merged:?}");
    let merged = merge_card(&card(flat("5")), &usage).unwrap();
    assert!(matches!(merged, RateCard::UsageBased(_)), "{merged:?}");
    assert_eq!(merged.view().key, "tokens", "the feature is the key");
}
