use super::*;
use crate::customers::CustomerInput;

fn stripe_install() -> AppInstall {
    AppInstall {
        name: String::new(),
        kind: AppKind::Stripe {
            stripe_account_id: "acct_1".into(),
            livemode: false,
            masked_api_key: mask_api_key("sk_test_abcdefghijk123"),
        },
        id: None,
        secrets: vec![(
            SECRET_STRIPE_API_KEY.into(),
            "sk_test_abcdefghijk123".into(),
        )],
    }
}

// The read model carries the discriminator and the type's fields, never a secret; the
// secret row holds the key.
crate::catalog_test! {
    #[tokio::test]
    async fn stripe_app_keeps_its_key_out_of_the_read_model(db) {
        let catalog = db.open().await;
        let app = catalog
            .install_app("ns", stripe_install())
            .await
            .expect("install");
        assert_eq!(app.name, "Stripe", "an empty name takes the listing's");
        let json = serde_json::to_value(&app).expect("json");
        assert_eq!(json["type"], "stripe");
        assert_eq!(json["maskedAPIKey"], "sk_test_***123");
        assert_eq!(json["stripeAccountId"], "acct_1");
        assert!(!json.to_string().contains("abcdefghijk"), "{json}");
        assert_eq!(
            catalog
                .app_secret(&app.id, SECRET_STRIPE_API_KEY)
                .await
                .expect("secret")
                .as_deref(),
            Some("sk_test_abcdefghijk123")
        );
        let back: App = serde_json::from_value(json).expect("decode");
        assert_eq!(back, app);
        // Uninstall deletes the secrets; the app is gone from reads.
        catalog
            .uninstall_app("ns", &app.id)
            .await
            .expect("uninstall");
        assert!(catalog.get_app("ns", &app.id).await.expect("get").is_none());
        assert!(
            catalog
                .app_secret(&app.id, SECRET_STRIPE_API_KEY)
                .await
                .expect("secret")
                .is_none()
        );
    }
}

// Sandbox is a singleton per namespace; other namespaces are separate.
crate::catalog_test! {
    #[tokio::test]
    async fn one_sandbox_per_namespace(db) {
        let catalog = db.open().await;
        let sandbox = || AppInstall {
            name: String::new(),
            kind: AppKind::Sandbox,
            id: None,
            secrets: Vec::new(),
        };
        catalog.install_app("a", sandbox()).await.expect("first");
        assert!(matches!(
            catalog.install_app("a", sandbox()).await,
            Err(AppError::SandboxExists { .. })
        ));
        catalog.install_app("b", sandbox()).await.expect("other ns");
        let page = catalog.list_apps("a", None, 1, 100).await.expect("list");
        assert_eq!(page.total_count, 1);
    }
}

// An update must name the app's type; custom invoicing needs both hooks.
crate::catalog_test! {
    #[tokio::test]
    async fn updates_check_the_type_and_hooks(db) {
        let catalog = db.open().await;
        let app = catalog
            .install_app(
                "ns",
                AppInstall {
                    name: "ci".into(),
                    kind: AppKind::CustomInvoicing {
                        enable_draft_sync_hook: false,
                        enable_issuing_sync_hook: false,
                    },
                    id: None,
                    secrets: Vec::new(),
                },
            )
            .await
            .expect("install");
        let update = |kind: AppType, hooks: Option<bool>| AppUpdate {
            kind,
            name: "renamed".into(),
            description: Some("d".into()),
            metadata: None,
            enable_draft_sync_hook: hooks,
            enable_issuing_sync_hook: hooks,
            secret_api_key: None,
        };
        assert!(matches!(
            catalog
                .update_app("ns", &app.id, &update(AppType::Sandbox, Some(true)))
                .await,
            Err(AppError::TypeMismatch { .. })
        ));
        assert!(matches!(
            catalog
                .update_app("ns", &app.id, &update(AppType::CustomInvoicing, None))
                .await,
            Err(AppError::Invalid(_))
        ));
        let updated = catalog
            .update_app("ns", &app.id, &update(AppType::CustomInvoicing, Some(true)))
            .await
            .expect("update");
        assert_eq!(updated.name, "renamed");
        assert_eq!(
            updated.kind,
            AppKind::CustomInvoicing {
                enable_draft_sync_hook: true,
                enable_issuing_sync_hook: true
            }
        );
    }
}

// Customer data is typed by the app, replaced on upsert and deleted once.
crate::catalog_test! {
    #[tokio::test]
    async fn customer_data_round_trip(db) {
        let catalog = db.open().await;
        let app = catalog
            .install_app("ns", stripe_install())
            .await
            .expect("install");
        let customer = catalog
            .create_customer(
                "ns",
                CustomerInput {
                    name: "ACME".into(),
                    key: Some("acme".into()),
                    ..CustomerInput::default()
                },
            )
            .await
            .expect("customer");
        assert!(matches!(
            catalog
                .upsert_customer_app_data("ns", &app.id, &customer.id, &CustomerAppData::Sandbox)
                .await,
            Err(AppError::TypeMismatch { .. })
        ));
        for cus in ["cus_1", "cus_2"] {
            catalog
                .upsert_customer_app_data(
                    "ns",
                    &app.id,
                    &customer.id,
                    &CustomerAppData::Stripe {
                        stripe_customer_id: cus.into(),
                        stripe_default_payment_method_id: None,
                    },
                )
                .await
                .expect("upsert");
        }
        let all = catalog
            .list_customer_app_data("ns", &customer.id, None)
            .await
            .expect("list");
        assert_eq!(all.len(), 1);
        assert_eq!(
            all[0].data,
            CustomerAppData::Stripe {
                stripe_customer_id: "cus_2".into(),
                stripe_default_payment_method_id: None
            }
        );
        catalog
            .delete_customer_app_data("ns", &app.id, &customer.id)
            .await
            .expect("delete");
        assert!(matches!(
            catalog
                .delete_customer_app_data("ns", &app.id, &customer.id)
                .await,
            Err(AppError::CustomerDataNotFound { .. })
        ));
    }
}

#[test]
fn masks_like_openmeter() {
    assert_eq!(mask_api_key("sk_test_1234567890xyz"), "sk_test_***xyz");
    assert_eq!(mask_api_key("short"), "***");
    assert!(!stripe_livemode("sk_test_x"));
    assert!(!stripe_livemode("rk_test_x"));
    assert!(stripe_livemode("sk_live_x"));
}

#[test]
fn listings_are_sorted_with_three_capabilities() {
    let all = listings();
    let kinds: Vec<_> = all.iter().map(|l| l.kind.as_str()).collect();
    assert_eq!(kinds, ["custom_invoicing", "sandbox", "stripe"]);
    assert!(all.iter().all(|l| l.capabilities.len() == 3));
    assert_eq!(listing(AppType::Stripe).install_methods, ["with_api_key"]);
}
