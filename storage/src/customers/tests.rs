use super::*;

fn input(name: &str, key: Option<&str>, subjects: &[&str]) -> CustomerInput {
    CustomerInput {
        name: name.into(),
        key: key.map(str::to_owned),
        usage_attribution: Some(UsageAttribution {
            subject_keys: subjects.iter().map(|s| (*s).to_owned()).collect(),
        }),
        ..CustomerInput::default()
    }
}

// A subject belongs to at most one live customer, keys are unique among live ones,
// a delete frees both, and everything survives a reopen.
crate::catalog_test! {
    #[tokio::test]
    async fn attribution_is_exclusive_and_freed_by_delete(db) {
        let catalog = db.open().await;
        let a = catalog
            .create_customer("default", input("A", Some("acme"), &["s1", "s2", "s1"]))
            .await
            .expect("create");
        assert_eq!(a.subjects(), vec!["acme", "s1", "s2"]);
        assert!(matches!(
            catalog
                .create_customer("default", input("B", Some("acme"), &[]))
                .await,
            Err(CustomerError::KeyTaken { .. })
        ));
        assert!(matches!(
            catalog
                .create_customer("default", input("B", None, &["s2"]))
                .await,
            Err(CustomerError::SubjectTaken { .. })
        ));
        // Another customer's key is an attribution value too.
        assert!(matches!(
            catalog
                .create_customer("default", input("B", None, &["acme"]))
                .await,
            Err(CustomerError::SubjectTaken { .. })
        ));
        assert!(matches!(
            catalog
                .create_customer("default", input("B", None, &[]))
                .await,
            Err(CustomerError::Invalid(_))
        ));
        // Other namespaces are independent.
        catalog
            .create_customer("other", input("A2", Some("acme"), &["s1"]))
            .await
            .expect("other namespace");
        catalog
            .delete_customer("default", "acme")
            .await
            .expect("delete");
        assert!(
            catalog
                .get_customer("default", &a.id)
                .await
                .expect("get")
                .is_none()
        );
        let deleted = catalog
            .get_customer_by_id("default", &a.id)
            .await
            .expect("get");
        assert!(deleted.is_some_and(|c| c.deleted_at.is_some()));
        let b = catalog
            .create_customer("default", input("B", Some("acme"), &["s2"]))
            .await
            .expect("freed by delete");
        catalog.close().await;
        let catalog = db.open().await;
        let by_key = catalog.get_customer("default", "acme").await.expect("get");
        assert_eq!(by_key.map(|c| c.id), Some(b.id.clone()));
        let owner = catalog
            .customer_by_subject("default", "s2")
            .await
            .expect("by subject");
        assert_eq!(owner.map(|c| c.id), Some(b.id));
        assert_eq!(catalog.all_customers().await.expect("all").len(), 2);
    }
}

// Listing filters case-insensitively, orders and pages.
crate::catalog_test! {
    #[tokio::test]
    async fn listing_filters_orders_and_pages(db) {
        let catalog = db.open().await;
        for (name, key) in [("Charlie", "c"), ("alpha", "a"), ("Bravo", "b")] {
            catalog
                .create_customer("default", input(name, Some(key), &[&format!("sub-{key}")]))
                .await
                .expect("create");
        }
        let page = catalog
            .list_customers(
                "default",
                &CustomerFilter {
                    order_by: CustomerOrder::Key,
                    descending: true,
                    page: 1,
                    page_size: 2,
                    ..CustomerFilter::default()
                },
            )
            .await
            .expect("list");
        assert_eq!(page.total_count, 3);
        let keys: Vec<_> = page.items.iter().filter_map(|c| c.key.clone()).collect();
        assert_eq!(keys, vec!["c", "b"]);
        let found = catalog
            .list_customers(
                "default",
                &CustomerFilter {
                    subject: Some("SUB-B".into()),
                    page: 1,
                    page_size: 10,
                    ..CustomerFilter::default()
                },
            )
            .await
            .expect("list");
        assert_eq!(found.total_count, 1);
        assert_eq!(found.items[0].name, "Bravo");
    }
}
