//! The versioned lifecycle of plans and add-ons, against a real SQLite catalog.

use super::plans::{PlanBody, PlanPhase, ProRatingConfig, is_duration};
use super::{ProductError, Status, VersionFilter};
use chrono::{Duration, TimeZone, Utc};
use serde_json::json;

fn body(name: &str) -> PlanBody {
    PlanBody {
        name: name.into(),
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
            rate_cards: vec![
                serde_json::from_value(json!({"type": "flat_fee", "key": "base", "name": "Base"}))
                    .unwrap(),
            ],
        }],
    }
}

crate::catalog_test! {
    #[tokio::test]
    async fn versions_move_draft_active_archived_and_publish_archives_the_previous_one(db) {
        let catalog = db.open().await;
        let versions = catalog.versions("default");
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let v1 = versions.create("pro", body("Pro"), t0).await.unwrap();
        assert_eq!((v1.version, v1.status(t0)), (1, Status::Draft));
        // A second draft of the same key is refused while the first is one.
        assert!(matches!(
            versions.create("pro", body("Pro 2"), t0).await,
            Err(ProductError::Invalid(_))
        ));
        let t1 = t0 + Duration::hours(1);
        let v1 = versions.publish::<PlanBody>(&v1.id, t1).await.unwrap();
        assert_eq!(v1.status(t1), Status::Active);
        // Active versions cannot be edited or deleted.
        assert!(versions.update(&v1.id, body("x"), t1).await.is_err());
        assert!(versions.delete::<PlanBody>(&v1.id, t1).await.is_err());

        let v2 = versions.next::<PlanBody>("pro", t1).await.unwrap();
        assert_eq!((v2.version, v2.body.name.as_str()), (2, "Pro"));
        let v2 = versions.update(&v2.id, body("Pro v2"), t1).await.unwrap();
        let t2 = t1 + Duration::hours(1);
        versions.publish::<PlanBody>(&v2.id, t2).await.unwrap();
        let v1 = versions.get::<PlanBody>(&v1.id).await.unwrap().unwrap();
        assert_eq!(v1.status(t2), Status::Archived);
        assert_eq!(v1.effective_to, Some(t2));

        // By key: the active version; with include_latest the highest.
        let active = versions
            .get_by_id_or_key::<PlanBody>("pro", false, t2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(active.version, 2);
        let v3 = versions.next::<PlanBody>("pro", t2).await.unwrap();
        let latest = versions
            .get_by_id_or_key::<PlanBody>("pro", true, t2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(latest.id, v3.id);

        // Listing by status.
        let filter = VersionFilter {
            statuses: vec![Status::Archived],
            page: 1,
            page_size: 10,
            ..Default::default()
        };
        let (total, items) = versions.list::<PlanBody>(&filter, t2).await.unwrap();
        assert_eq!((total, items[0].version), (1, 1));

        // Archived and draft versions can be deleted; deleted ones are gone by key.
        versions.delete::<PlanBody>(&v1.id, t2).await.unwrap();
        versions.delete::<PlanBody>(&v3.id, t2).await.unwrap();
        let all = versions.all_of_key::<PlanBody>("pro").await.unwrap();
        assert_eq!(all.len(), 1);
    }
}

crate::catalog_test! {
    #[tokio::test]
    async fn critical_issues_refuse_a_write_and_warnings_refuse_publishing(db) {
        let catalog = db.open().await;
        let versions = catalog.versions("default");
        let now = Utc::now();
        let mut bad = body("Pro");
        bad.billing_cadence = "P5D".into();
        let Err(ProductError::Invalid(issues)) = versions.create("pro", bad, now).await else {
            panic!("a P5D cadence must be refused");
        };
        assert_eq!(issues[0].code, "plan_billing_cadence_invalid");

        let mut warn = body("Pro");
        warn.phases[0].duration = Some("P1M".into());
        let v = versions.create("pro", warn, now).await.unwrap();
        let Err(ProductError::Invalid(issues)) = versions.publish::<PlanBody>(&v.id, now).await else {
            panic!("a last phase with a duration must refuse publishing");
        };
        assert_eq!(issues[0].code, "plan_has_last_phase_with_duration");
        assert_eq!(issues[0].field, "phases[key=default].duration");
    }
}

#[test]
fn iso_durations() {
    for ok in ["P1M", "P1Y", "P2W", "PT1H", "P1DT12H", "P1Y2M3DT4H5M6S"] {
        assert!(is_duration(ok), "{ok}");
    }
    for bad in [
        "", "P", "1M", "PT", "P1", "PM", "P1M1Y", "P1H", "PT1D", "P1DT",
    ] {
        assert!(!is_duration(bad), "{bad}");
    }
}
