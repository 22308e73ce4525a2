use super::*;
use metron_engine::meter::MeterCreate;

fn meter(slug: &str, id: &str) -> Meter {
    let create = MeterCreate {
        slug: slug.into(),
        name: None,
        description: Some("d".into()),
        metadata: None,
        aggregation: "SUM".into(),
        event_type: "t".into(),
        event_from: None,
        value_property: Some("$.v".into()),
        group_by: None,
    };
    create
        .into_meter(id.into(), "default", Utc::now())
        .expect("valid")
}

// Meters survive a reopen; slugs are unique among live meters; deleted ones hide.
#[tokio::test]
async fn meters_round_trip_and_slugs_are_unique() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("catalog.db");
    let catalog = Catalog::open_sqlite(&path).await.expect("open");
    let m = meter("tokens", "01A");
    catalog.insert_meter(&m).await.expect("insert");
    assert!(matches!(
        catalog.insert_meter(&meter("tokens", "01B")).await,
        Err(Error::SlugTaken { .. })
    ));
    catalog.close().await;
    let catalog = Catalog::open_sqlite(&path).await.expect("reopen");
    let got = catalog.get_meter("default", "tokens").await.expect("get");
    assert_eq!(got.as_ref().map(|g| g.id.as_str()), Some("01A"));
    assert_eq!(got.map(|g| g.namespace), Some("default".to_owned()));
    assert!(
        catalog
            .get_meter("other", "tokens")
            .await
            .expect("get")
            .is_none()
    );
    let mut deleted = m.clone();
    deleted.deleted_at = Some(Utc::now());
    catalog.update_meter(&deleted).await.expect("delete");
    assert!(
        catalog
            .get_meter("default", "01A")
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(
        catalog
            .list_meters("default", true)
            .await
            .expect("list")
            .len(),
        1
    );
    catalog
        .insert_meter(&meter("tokens", "01C"))
        .await
        .expect("slug free again");
}
