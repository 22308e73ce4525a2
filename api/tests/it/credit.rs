//! Credit: ports of the subtests of OpenMeter's e2e `TestCredit` (`e2e/e2e_test.go`): a feature
//! with a group-by filter, a metered subject entitlement, the 409 on a duplicate, default grants
//! from `issueAfterReset`, `measureUsageFrom`, a grant with recurrence and rollover, the value at
//! a past `time`, resets, override and listing. Go runs the subtests in order on one shared
//! stack; here every scenario is its own `#[test]` with its own server and builds the state the
//! Go subtest found (see [`Credit::start`]). The "Slow: Reset testing" subtests wait for
//! wall-clock minutes in Go; their ports put events, grants and resets at past minutes instead.

use crate::helpers::*;
use crate::server::*;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

const METER: &str = "credit_test_meter";

/// Go's `customerIOTA(n).Key()`: `customer1` is iota 0, so its key is `customer-0`.
fn customer_key(iota: u32) -> String {
    format!("customer-{iota}")
}

/// The state `TestCredit` has built before "Create Grant": customer `customer-0` with subject
/// `customer-0`, the feature "Credit Test Feature" on `credit_test_meter` filtered to
/// `model = gpt-4`, and a metered entitlement (MONTH from 2024-01-01) of the subject.
struct Credit {
    server: TestServer,
    subject: String,
    feature: Value,
    entitlement: Value,
}

impl Credit {
    fn start() -> Credit {
        let server = TestServer::start_with_config(CREDIT_CONFIG);
        let subject = customer_key(0);
        create_customer_with_subject(&server, &subject, &subject);
        let feature = create_feature(&server, &feature_body());
        let entitlement = create_subject_entitlement(
            &server,
            &subject,
            &metered_entitlement(&text(&feature, "id"), ANCHOR_2024, "MONTH"),
        );
        Credit {
            server,
            subject,
            feature,
            entitlement,
        }
    }

    fn entitlement_id(&self) -> String {
        text(&self.entitlement, "id")
    }

    fn feature_id(&self) -> String {
        text(&self.feature, "id")
    }

    fn entitlement_path(&self) -> String {
        format!(
            "/api/v1/subjects/{}/entitlements/{}",
            self.subject,
            self.entitlement_id()
        )
    }

    fn grants(&self) -> Vec<Value> {
        list_grants(&self.server, &self.entitlement_path())
    }
}

fn feature_key() -> String {
    format!("credit_test_feature_{}", Utc::now().timestamp())
}

fn feature_body() -> Value {
    json!({
        "name": "Credit Test Feature",
        "meterSlug": METER,
        "key": feature_key(),
        "meterGroupByFilters": { "model": "gpt-4" },
    })
}

/// The grant of "Create Grant": 100, effective at `effective_at`, expiring after one MONTH,
/// priority 1, rollover between 0 and 100, recurring yearly from 2024-01-01, with metadata.
fn recurring_grant(effective_at: DateTime<Utc>) -> Value {
    json!({
        "amount": 100,
        "effectiveAt": rfc3339(effective_at),
        "expiration": { "duration": "MONTH", "count": 1 },
        "priority": 1,
        "maxRolloverAmount": 100,
        "minRolloverAmount": 0,
        "recurrence": { "anchor": ANCHOR_2024, "interval": "YEAR" },
        "metadata": { "some_key": "some_value" },
    })
}

/// `GET {entitlement_path}/grants` without paging: a bare `EntitlementGrant[]`.
#[track_caller]
fn list_grants(server: &TestServer, entitlement_path: &str) -> Vec<Value> {
    let body = server
        .get(&format!("{entitlement_path}/grants"))
        .send()
        .expect_status(200)
        .json();
    body.as_array()
        .unwrap_or_else(|| panic!("grants are not a bare array: {body}"))
        .clone()
}

/// A `credit_event` CloudEvent of the subject for `model` (source `credit-test`, as in Go).
fn credit_event(subject: &str, time: DateTime<Utc>, model: &str) -> Value {
    cloud_event(
        &new_id(),
        "credit-test",
        "credit_event",
        subject,
        time,
        json!({ "model": model }),
    )
}

/// Asserts the metered value's `hasAccess`, `balance`, `usage` and `overage`.
#[track_caller]
fn assert_balance(value: &Value, has_access: bool, balance: f64, usage: f64, overage: f64) {
    assert_eq!(
        value["hasAccess"],
        json!(has_access),
        "hasAccess in {value}"
    );
    assert_eq!(num(value, "balance"), balance, "balance in {value}");
    assert_eq!(num(value, "usage"), usage, "usage in {value}");
    assert_eq!(num(value, "overage"), overage, "overage in {value}");
}

#[test]
fn credit_create_feature_with_group_by_filter() {
    // TestCredit/"Create Feature": the feature echoes its deprecated `meterGroupByFilters` and
    // the same filter as an advanced `$eq` filter; createdAt and updatedAt are set and nothing
    // else (no archivedAt, metadata or unit cost) is.
    let server = TestServer::start_with_config(CREDIT_CONFIG);
    create_customer_with_subject(&server, &customer_key(0), &customer_key(0));
    let body = feature_body();
    let feature = server
        .post("/api/v1/features")
        .json(&body)
        .send()
        .expect_status(201)
        .json();
    assert!(
        !text(&feature, "createdAt").is_empty(),
        "createdAt: {feature}"
    );
    assert!(
        !text(&feature, "updatedAt").is_empty(),
        "updatedAt: {feature}"
    );
    let expected = json!({
        "id": text(&feature, "id"),
        "name": "Credit Test Feature",
        "key": body["key"],
        "meterSlug": METER,
        "meterGroupByFilters": { "model": "gpt-4" },
        "advancedMeterGroupByFilters": { "model": { "$eq": "gpt-4" } },
    });
    assert_json_eq(&without(&feature, &["createdAt", "updatedAt"]), &expected);
}

#[test]
fn credit_create_metered_entitlement() {
    // TestCredit/"Create a Entitlement": a metered entitlement (MONTH from 2024-01-01) created
    // on the subject is 201 and belongs to that subject and feature.
    let credit = Credit::start();
    assert_eq!(text(&credit.entitlement, "subjectKey"), credit.subject);
    assert_eq!(text(&credit.entitlement, "type"), "metered");
    assert_eq!(text(&credit.entitlement, "featureId"), credit.feature_id());
    assert!(
        !credit.entitlement_id().is_empty(),
        "{}",
        credit.entitlement
    );
}

#[test]
fn credit_duplicate_entitlement_conflict() {
    // TestCredit/"Create for same subject and feature": a second entitlement for the same
    // subject and feature is 409, and the problem's `extensions.conflictingEntityId` names the
    // first one.
    let credit = Credit::start();
    let resp = credit
        .server
        .post(&format!("/api/v1/subjects/{}/entitlements", credit.subject))
        .json(&metered_entitlement(
            &credit.feature_id(),
            ANCHOR_2024,
            "MONTH",
        ))
        .send();
    assert_problem(&resp, 409);
    let problem = resp.json();
    assert_eq!(
        problem["extensions"]["conflictingEntityId"],
        json!(credit.entitlement_id()),
        "problem {problem}"
    );
}

#[test]
fn credit_entitlement_with_default_grants() {
    // TestCredit/"Create a Entitlement With Default Grants": `measureUsageFrom` as a time is
    // echoed, and `issueAfterReset` 100 with priority 6 creates one grant of 100, priority 6,
    // annotated `{"issueAfterReset": true}`.
    let credit = Credit::start();
    let server = &credit.server;
    let (customer, subject) = (new_id(), new_id());
    create_customer_with_subject(server, &customer, &subject);
    let mut body = metered_entitlement(&credit.feature_id(), ANCHOR_2024, "MONTH");
    body["measureUsageFrom"] = json!(ANCHOR_2024);
    body["issueAfterReset"] = json!(100.0);
    body["issueAfterResetPriority"] = json!(6);
    let entitlement = create_subject_entitlement(server, &subject, &body);
    assert_eq!(text(&entitlement, "subjectKey"), subject);
    assert_json_eq(&entitlement["measureUsageFrom"], &json!(ANCHOR_2024));

    let id = text(&entitlement, "id");
    let grants = list_grants(
        server,
        &format!("/api/v1/subjects/{subject}/entitlements/{id}"),
    );
    assert_eq!(grants.len(), 1, "grants {grants:?}");
    let grant = &grants[0];
    assert_json_eq(&grant["amount"], &entitlement["issueAfterReset"]);
    assert_json_eq(&grant["amount"], &json!(100));
    assert_json_eq(&grant["priority"], &entitlement["issueAfterResetPriority"]);
    assert_json_eq(&grant["priority"], &json!(6));
    assert_eq!(text(grant, "entitlementId"), id);
    assert_eq!(grant["annotations"], json!({ "issueAfterReset": true }));
}

#[test]
fn credit_measure_usage_from_current_period_start() {
    // TestCredit/"Create a Entitlement With MeasureUsageFrom enum": with the usage period
    // anchored an hour ago, `measureUsageFrom: CURRENT_PERIOD_START` resolves to the anchor.
    let credit = Credit::start();
    let server = &credit.server;
    let (customer, subject) = (new_id(), new_id());
    create_customer_with_subject(server, &customer, &subject);
    let anchor = minute_floor(Utc::now()) - Duration::hours(1);
    let mut body = metered_entitlement(&credit.feature_id(), &rfc3339(anchor), "MONTH");
    body["measureUsageFrom"] = json!("CURRENT_PERIOD_START");
    let entitlement = create_subject_entitlement(server, &subject, &body);
    assert_eq!(text(&entitlement, "subjectKey"), subject);
    assert_eq!(instant(&entitlement, "measureUsageFrom"), anchor);
}

#[test]
fn credit_create_grant_with_recurrence_and_rollover() {
    // TestCredit/"Create Grant": the grant (100, MONTH expiration, priority 1, rollover 0..100,
    // yearly recurrence from 2024-01-01, metadata) echoes every input, reports the recurrence
    // as `YEAR`/`P1Y`, and has createdAt, updatedAt, expiresAt and nextRecurrence.
    let credit = Credit::start();
    let effective_at = minute_floor(Utc::now());
    let grant = create_subject_grant(
        &credit.server,
        &credit.subject,
        &credit.entitlement_id(),
        &recurring_grant(effective_at),
    );
    for field in ["updatedAt", "expiresAt", "createdAt", "nextRecurrence"] {
        assert!(!text(&grant, field).is_empty(), "{field} in {grant}");
    }
    assert!(
        instant(&grant, "expiresAt") > effective_at,
        "expiresAt after effectiveAt: {grant}"
    );
    let expected = json!({
        "id": text(&grant, "id"),
        "amount": 100,
        "entitlementId": credit.entitlement_id(),
        "priority": 1,
        "effectiveAt": rfc3339(effective_at),
        "maxRolloverAmount": 100,
        "minRolloverAmount": 0,
        "expiration": { "duration": "MONTH", "count": 1 },
        "recurrence": { "anchor": ANCHOR_2024, "interval": "YEAR", "intervalISO": "P1Y" },
        "metadata": { "some_key": "some_value" },
    });
    assert_json_eq(
        &without(
            &grant,
            &["createdAt", "updatedAt", "expiresAt", "nextRecurrence"],
        ),
        &expected,
    );
}

#[test]
fn credit_entitlement_value_with_group_by_filter() {
    // TestCredit/"Ingest usage" + "Entitlement Value": with the grant of 100, one gpt-4 event
    // and one gpt-3 event 15 s after the entitlement was created, the meter counts 2 but the
    // feature's `model = gpt-4` filter counts 1: the value two minutes after creation is exactly
    // {hasAccess: true, balance: 99, overage: 0, usage: 1, totalAvailableGrantAmount: 100}.
    let credit = Credit::start();
    let server = &credit.server;
    create_subject_grant(
        server,
        &credit.subject,
        &credit.entitlement_id(),
        &recurring_grant(minute_floor(Utc::now())),
    );
    let created_at = instant(&credit.entitlement, "createdAt");
    let et = created_at + Duration::seconds(15);
    server
        .ingest_batch(&[
            credit_event(&credit.subject, et, "gpt-4"),
            credit_event(&credit.subject, et, "gpt-3"),
        ])
        .expect_status(204);
    eventually(VISIBLE, || {
        let got = parse_query(&server.query(METER, &[("subject", credit.subject.clone())]))?;
        match got.data.as_slice() {
            [row] if row.value == 2.0 => Ok(()),
            _ => Err(format!("{METER} subject={}: {got:?}", credit.subject)),
        }
    });

    assert_eq!(credit.grants().len(), 1);
    let features = server
        .get("/api/v1/features")
        .query("meterSlug", METER)
        .send()
        .expect_status(200)
        .json();
    assert_eq!(
        features.as_array().map(Vec::len),
        Some(1),
        "features {features}"
    );

    let value = subject_value(
        server,
        &credit.subject,
        &credit.entitlement_id(),
        Some(created_at + Duration::minutes(2)),
    );
    assert_json_eq(
        &value,
        &json!({
            "hasAccess": true,
            "balance": 99,
            "overage": 0,
            "usage": 1,
            "totalAvailableGrantAmount": 100,
        }),
    );
}

/// The restructured "Slow: Reset testing" state: a subject entitlement whose usage period and
/// usage measurement start at `t0` (ten minutes ago, minute-aligned), so grants, events and
/// resets can all sit at past minutes instead of waiting for the clock.
struct PastEntitlement {
    credit: Credit,
    subject: String,
    id: String,
    t0: DateTime<Utc>,
}

impl PastEntitlement {
    fn start(extra: Value) -> PastEntitlement {
        let credit = Credit::start();
        let t0 = minute_floor(Utc::now()) - Duration::minutes(10);
        let subject = customer_key(1);
        create_customer_with_subject(&credit.server, &subject, &subject);
        let mut body = metered_entitlement(&credit.feature_id(), &rfc3339(t0), "MONTH");
        body["measureUsageFrom"] = json!(rfc3339(t0));
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let entitlement = create_subject_entitlement(&credit.server, &subject, &body);
        let id = text(&entitlement, "id");
        PastEntitlement {
            credit,
            subject,
            id,
            t0,
        }
    }

    fn server(&self) -> &TestServer {
        &self.credit.server
    }

    fn path(&self) -> String {
        format!("/api/v1/subjects/{}/entitlements/{}", self.subject, self.id)
    }

    fn grant(&self, body: &Value) -> Value {
        create_subject_grant(self.server(), &self.subject, &self.id, body)
    }

    /// Ingests `gpt4` matching and `gpt3` filtered-out events at `time` and waits until the
    /// meter's total (all subjects) is `total`.
    fn usage(&self, time: DateTime<Utc>, gpt4: usize, gpt3: usize, total: f64) {
        let mut events = Vec::new();
        events.extend((0..gpt4).map(|_| credit_event(&self.subject, time, "gpt-4")));
        events.extend((0..gpt3).map(|_| credit_event(&self.subject, time, "gpt-3")));
        ingest_and_wait(self.server(), &events, METER, total);
    }

    fn reset(&self, body: &Value) {
        self.server()
            .post(&format!("{}/reset", self.path()))
            .json(body)
            .send()
            .expect_status(204);
    }

    fn value(&self, time: Option<DateTime<Utc>>) -> Value {
        subject_value(self.server(), &self.subject, &self.id, time)
    }
}

#[test]
fn credit_reset_usage() {
    // TestCredit/"Slow: Reset testing"/"Reset", with past times instead of a one-minute sleep:
    // grant 100 (rollover 0..100) at t0, one matching and one filtered event at t0+2m, then a
    // reset at t0+5m is 204. Before the reset the value is 99 with usage 1; after it the usage
    // restarts at 0 and the 99 left rolls over (below maxRolloverAmount 100).
    let past = PastEntitlement::start(json!({}));
    let t0 = past.t0;
    past.grant(&json!({
        "amount": 100,
        "effectiveAt": rfc3339(t0),
        "expiration": { "duration": "MONTH", "count": 1 },
        "priority": 1,
        "maxRolloverAmount": 100,
        "minRolloverAmount": 0,
    }));
    past.usage(t0 + Duration::minutes(2), 1, 1, 2.0);
    assert_balance(&past.value(None), true, 99.0, 1.0, 0.0);

    assert_eq!(list_grants(past.server(), &past.path()).len(), 1);
    let features = past
        .server()
        .get("/api/v1/features")
        .send()
        .expect_status(200)
        .json();
    assert_eq!(
        features.as_array().map(Vec::len),
        Some(1),
        "features {features}"
    );

    past.reset(&json!({ "effectiveAt": rfc3339(t0 + Duration::minutes(5)) }));
    assert_balance(&past.value(None), true, 99.0, 0.0, 0.0);
    // Usage after the reset burns the rolled-over balance.
    past.usage(t0 + Duration::minutes(6), 1, 0, 3.0);
    assert_balance(&past.value(None), true, 98.0, 1.0, 0.0);
}

/// Grant 5 with `minRolloverAmount = maxRolloverAmount = 5` at t0, 8 matching events at t0+2m
/// (balance 0, overage 3), then a reset at t0+5m with `preserveOverage`.
fn reset_with_overage(preserve_overage: bool) -> PastEntitlement {
    let past = PastEntitlement::start(json!({}));
    let t0 = past.t0;
    past.grant(&json!({
        "amount": 5,
        "effectiveAt": rfc3339(t0),
        "expiration": { "duration": "MONTH", "count": 1 },
        "priority": 1,
        "maxRolloverAmount": 5,
        "minRolloverAmount": 5,
    }));
    past.usage(t0 + Duration::minutes(2), 8, 0, 8.0);
    let before = past.value(None);
    assert_balance(&before, false, 0.0, 8.0, 3.0);
    assert_eq!(num(&before, "totalAvailableGrantAmount"), 5.0, "{before}");
    past.reset(&json!({
        "effectiveAt": rfc3339(t0 + Duration::minutes(5)),
        "preserveOverage": preserve_overage,
    }));
    past
}

#[test]
fn credit_reset_forgives_overage() {
    // TestCredit reset semantics (openmeter-semantics §4.5 step 4): a reset without
    // `preserveOverage` forgives the overage of 3 and rolls the grant back up to its
    // minRolloverAmount 5; one event after the reset leaves 4.
    let past = reset_with_overage(false);
    assert_balance(&past.value(None), true, 5.0, 0.0, 0.0);
    past.usage(past.t0 + Duration::minutes(6), 1, 0, 9.0);
    assert_balance(&past.value(None), true, 4.0, 1.0, 0.0);
}

#[test]
fn credit_reset_preserves_overage() {
    // TestCredit reset semantics (openmeter-semantics §4.5 step 4): a reset with
    // `preserveOverage: true` burns the overage of 3 from the rolled-over 5, leaving 2; one
    // event after the reset leaves 1.
    let past = reset_with_overage(true);
    assert_balance(&past.value(None), true, 2.0, 0.0, 0.0);
    past.usage(past.t0 + Duration::minutes(6), 1, 0, 9.0);
    assert_balance(&past.value(None), true, 1.0, 1.0, 0.0);
}

#[test]
fn credit_value_at_past_time() {
    // TestCredit "Entitlement Value" at a `time` in the past: with grant 100 at t0 and matching
    // events at t0+2m (2) and t0+6m (3), the value at t0+4m sees only the first two, the value
    // at t0+1m (before any usage) none, and the current value all five.
    let past = PastEntitlement::start(json!({}));
    let t0 = past.t0;
    past.grant(&json!({
        "amount": 100,
        "effectiveAt": rfc3339(t0),
        "expiration": { "duration": "MONTH", "count": 1 },
        "priority": 1,
    }));
    past.usage(t0 + Duration::minutes(2), 2, 1, 3.0);
    past.usage(t0 + Duration::minutes(6), 3, 0, 6.0);
    assert_balance(
        &past.value(Some(t0 + Duration::minutes(1))),
        true,
        100.0,
        0.0,
        0.0,
    );
    assert_balance(
        &past.value(Some(t0 + Duration::minutes(4))),
        true,
        98.0,
        2.0,
        0.0,
    );
    assert_balance(&past.value(None), true, 95.0, 5.0, 0.0);
}

#[test]
fn credit_issue_after_reset_restores_balance() {
    // TestCredit "Create entitlement with automatic grant issuing" + a reset: `issueAfterReset`
    // 10 issues one grant (rollover min = max = 10), so 4 events leave 6 and a reset at t0+5m
    // brings the balance back to 10 with usage 0.
    let past = PastEntitlement::start(json!({ "issueAfterReset": 10 }));
    let t0 = past.t0;
    let grants = list_grants(past.server(), &past.path());
    assert_eq!(grants.len(), 1, "grants {grants:?}");
    past.usage(t0 + Duration::minutes(2), 4, 0, 4.0);
    assert_balance(&past.value(None), true, 6.0, 4.0, 0.0);
    past.reset(&json!({ "effectiveAt": rfc3339(t0 + Duration::minutes(5)) }));
    assert_balance(&past.value(None), true, 10.0, 0.0, 0.0);
}

#[test]
fn credit_entitlement_with_automatic_grant_issuing() {
    // TestCredit/"Slow: Reset testing"/"Create entitlement with automatic grant issuing" (no
    // sleep needed): customer-1's entitlement with `issueAfterReset` 50 has exactly one grant,
    // of 50, and (no usage yet) a balance of 50.
    let credit = Credit::start();
    let server = &credit.server;
    let subject = customer_key(1);
    create_customer_with_subject(server, &subject, &subject);
    let mut body = metered_entitlement(&credit.feature_id(), ANCHOR_2024, "MONTH");
    body["issueAfterReset"] = json!(50.0);
    let entitlement = create_subject_entitlement(server, &subject, &body);
    assert_eq!(text(&entitlement, "subjectKey"), subject);
    let id = text(&entitlement, "id");
    let grants = list_grants(
        server,
        &format!("/api/v1/subjects/{subject}/entitlements/{id}"),
    );
    assert_eq!(grants.len(), 1, "grants {grants:?}");
    assert_eq!(num(&grants[0], "amount"), 50.0, "grant {}", grants[0]);
    assert_balance(
        &subject_value(server, &subject, &id, None),
        true,
        50.0,
        0.0,
        0.0,
    );
}

#[test]
fn credit_override_entitlement() {
    // TestCredit/"Override previous entitlement": PUT .../override with the same body is 201
    // and creates a new entitlement (new id) for the subject; the subject's list then holds only
    // the new one (the old one is soft-deleted).
    let credit = Credit::start();
    let server = &credit.server;
    let subject = customer_key(2);
    create_customer_with_subject(server, &subject, &subject);
    let body = metered_entitlement(&credit.feature_id(), ANCHOR_2024, "MONTH");
    let first = create_subject_entitlement(server, &subject, &body);
    let old_id = text(&first, "id");
    let replaced = server
        .put(&format!(
            "/api/v1/subjects/{subject}/entitlements/{old_id}/override"
        ))
        .json(&body)
        .send()
        .expect_status(201)
        .json();
    assert_eq!(text(&replaced, "subjectKey"), subject);
    let new_id = text(&replaced, "id");
    assert_ne!(new_id, old_id);
    let listed = server
        .get(&format!("/api/v1/subjects/{subject}/entitlements"))
        .send()
        .expect_status(200)
        .json();
    let ids: Vec<String> = listed
        .as_array()
        .unwrap_or_else(|| panic!("not a bare array: {listed}"))
        .iter()
        .map(|e| text(e, "id"))
        .collect();
    assert_eq!(ids, vec![new_id]);
}

#[test]
fn credit_list_entitlements() {
    // TestCredit/"List entitlements": filtered by type `metered`, the subject and the feature
    // key, paged (page 1, size 10), the list is {page: 1, totalCount: 1, items: [1]} even with
    // another subject's entitlement of the same feature; types `static` + `boolean` give 0; an
    // unknown type is 400.
    let credit = Credit::start();
    let server = &credit.server;
    let other = customer_key(2);
    create_customer_with_subject(server, &other, &other);
    create_subject_entitlement(
        server,
        &other,
        &metered_entitlement(&credit.feature_id(), ANCHOR_2024, "MONTH"),
    );
    let feature_key = text(&credit.feature, "key");
    let list = |types: &[&str]| {
        let mut req = server.get("/api/v1/entitlements");
        for t in types {
            req = req.query("entitlementType", t);
        }
        req.query("subject", &credit.subject)
            .query("feature", &feature_key)
            .query("page", "1")
            .query("pageSize", "10")
            .send()
    };

    let metered = list(&["metered"]).expect_status(200).json();
    assert_eq!(num(&metered, "page"), 1.0, "{metered}");
    assert_eq!(num(&metered, "totalCount"), 1.0, "{metered}");
    assert_eq!(
        metered["items"].as_array().map(Vec::len),
        Some(1),
        "{metered}"
    );
    assert_eq!(text(&metered["items"][0], "id"), credit.entitlement_id());

    let none = list(&["static", "boolean"]).expect_status(200).json();
    assert_eq!(num(&none, "page"), 1.0, "{none}");
    assert_eq!(num(&none, "totalCount"), 0.0, "{none}");
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0), "{none}");

    assert_problem(&list(&["INVALID_STR"]), 400);
}
