use super::*;
use crate::customers::CustomerInput;

fn supplier() -> BillingParty {
    BillingParty {
        name: Some("Supplier".into()),
        addresses: Some(vec![Address {
            country: Some("DE".into()),
            ..Address::default()
        }]),
        ..BillingParty::default()
    }
}

fn create(name: &str, default: bool, app: &str) -> BillingProfileCreate {
    BillingProfileCreate {
        name: name.into(),
        description: None,
        metadata: None,
        supplier: supplier(),
        default,
        workflow: BillingWorkflow::default(),
        apps: ProfileAppsCreate {
            tax: app.into(),
            invoicing: app.into(),
            payment: app.into(),
        },
    }
}

/// Customer `c` (named C) in namespace `ns`.
async fn customer_c(catalog: &Catalog) -> crate::customers::Customer {
    catalog
        .create_customer(
            "ns",
            CustomerInput {
                name: "C".into(),
                key: Some("c".into()),
                ..CustomerInput::default()
            },
        )
        .await
        .expect("customer")
}

fn update_of(p: &BillingProfile, default: bool) -> BillingProfileUpdate {
    BillingProfileUpdate {
        name: p.name.clone(),
        description: None,
        metadata: None,
        supplier: p.supplier.clone(),
        default,
        workflow: p.workflow.clone(),
    }
}

// The bootstrap is idempotent: one sandbox, one default profile using it.
crate::catalog_test! {
    #[tokio::test]
    async fn defaults_are_provisioned_once(db) {
        let catalog = db.open().await;
        catalog.ensure_billing_defaults("ns").await.expect("first");
        catalog.ensure_billing_defaults("ns").await.expect("second");
        let apps = catalog.list_apps("ns", None, 1, 100).await.expect("apps");
        assert_eq!(apps.total_count, 1);
        let default = catalog
            .default_billing_profile("ns")
            .await
            .expect("default")
            .expect("some");
        assert_eq!(default.name, DEFAULT_PROFILE_NAME);
        assert_eq!(default.apps.invoicing.id, apps.items[0].id);
        assert_eq!(default.workflow.collection.interval, "PT1H");
        assert_eq!(default.workflow.invoicing.due_after, "P30D");
    }
}

// Exactly one default: a new default demotes the old one, which then can be deleted; the
// default can neither be unset nor deleted; a pinned profile cannot be deleted.
crate::catalog_test! {
    #[tokio::test]
    async fn one_default_and_delete_rules(db) {
        let catalog = db.open().await;
        catalog
            .ensure_billing_defaults("ns")
            .await
            .expect("defaults");
        let first = catalog
            .default_billing_profile("ns")
            .await
            .expect("get")
            .expect("some");
        assert!(matches!(
            catalog.delete_billing_profile("ns", &first.id).await,
            Err(BillingProfileError::DefaultCannotBeDeleted(_))
        ));
        assert!(matches!(
            catalog
                .update_billing_profile("ns", &first.id, update_of(&first, false))
                .await,
            Err(BillingProfileError::DefaultCannotBeUnset(_))
        ));
        let second = catalog
            .create_billing_profile("ns", create("second", true, "sandbox"))
            .await
            .expect("create by type");
        assert_eq!(second.apps.tax.id, first.apps.tax.id);
        let demoted = catalog
            .get_billing_profile("ns", &first.id)
            .await
            .expect("get")
            .expect("some");
        assert!(!demoted.default);
        assert_eq!(
            catalog
                .default_billing_profile("ns")
                .await
                .expect("get")
                .map(|p| p.id),
            Some(second.id.clone())
        );
        let customer = customer_c(&catalog).await;
        catalog
            .upsert_customer_override("ns", &customer.id, Some(first.id.clone()), None)
            .await
            .expect("pin");
        let err = catalog.delete_billing_profile("ns", &first.id).await;
        assert!(
            matches!(&err, Err(BillingProfileError::Referenced { customer_ids, .. }) if customer_ids == &vec![customer.id.clone()]),
            "{err:?}"
        );
        catalog
            .delete_customer_override("ns", &customer.id)
            .await
            .expect("unpin");
        catalog
            .delete_billing_profile("ns", &first.id)
            .await
            .expect("delete");
        catalog
            .delete_billing_profile("ns", &first.id)
            .await
            .expect("deleting again does nothing");
        assert!(matches!(
            catalog
                .update_billing_profile("ns", &first.id, update_of(&first, false))
                .await,
            Err(BillingProfileError::AlreadyDeleted(_))
        ));
    }
}

// Deleting a profile and pinning a customer to it are each a check and a write in one write
// transaction: each waits for the other's open transaction, then sees what it wrote. (Both
// used to check outside it, so a delete and a pin at once could leave a customer pinned to a
// deleted profile.) The one wait each side makes here is 300 ms.
crate::catalog_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delete_and_pin_do_not_cross(db) {
        let catalog = db.open().await;
        catalog
            .ensure_billing_defaults("ns")
            .await
            .expect("defaults");
        let profile = catalog
            .create_billing_profile("ns", create("second", false, "sandbox"))
            .await
            .expect("profile");
        let customer = customer_c(&catalog).await;
        let pause = std::time::Duration::from_millis(300);

        // A pin in an open write transaction: the delete waits for it, then is refused.
        let pin = CustomerOverride {
            customer_id: customer.id.clone(),
            billing_profile_id: Some(profile.id.clone()),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            workflow: None,
        };
        let mut held = catalog.begin_write().await.expect("begin");
        sqlx::query(
            "INSERT INTO billing_customer_overrides (namespace, customer_id, profile_id, definition, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind("ns")
        .bind(&customer.id)
        .bind(&profile.id)
        .bind(serde_json::to_string(&pin).expect("json"))
        .bind(Utc::now().timestamp_millis())
        .execute(&mut *held)
        .await
        .expect("pin in the held transaction");
        let other = catalog.clone();
        let id = profile.id.clone();
        let delete = tokio::spawn(async move { other.delete_billing_profile("ns", &id).await });
        tokio::time::sleep(pause).await;
        assert!(!delete.is_finished(), "the delete must wait for the pin");
        held.commit().await.expect("commit");
        let deleted = delete.await.expect("task");
        assert!(
            matches!(&deleted, Err(BillingProfileError::Referenced { .. })),
            "{deleted:?}"
        );

        // A delete in an open write transaction: the pin waits for it, then is refused.
        catalog
            .delete_customer_override("ns", &customer.id)
            .await
            .expect("unpin");
        let mut gone = profile.clone();
        gone.deleted_at = Some(Utc::now());
        let mut held = catalog.begin_write().await.expect("begin");
        sqlx::query("UPDATE billing_profiles SET definition = $1, deleted_at = $2 WHERE id = $3")
            .bind(encode_profile(&gone))
            .bind(Utc::now().timestamp_millis())
            .bind(&gone.id)
            .execute(&mut *held)
            .await
            .expect("delete in the held transaction");
        let other = catalog.clone();
        let (id, customer_id) = (profile.id.clone(), customer.id.clone());
        let pin = tokio::spawn(async move {
            other
                .upsert_customer_override("ns", &customer_id, Some(id), None)
                .await
        });
        tokio::time::sleep(pause).await;
        assert!(!pin.is_finished(), "the pin must wait for the delete");
        held.commit().await.expect("commit");
        let pinned = pin.await.expect("task");
        assert!(
            matches!(&pinned, Err(BillingProfileError::AlreadyDeleted(_))),
            "{pinned:?}"
        );
        assert!(
            catalog
                .get_customer_override("ns", &customer.id)
                .await
                .expect("get")
                .is_none()
        );
    }
}

// Validation: supplier name and country, ISO durations, one app for all three roles.
crate::catalog_test! {
    #[tokio::test]
    async fn invalid_profiles_are_refused(db) {
        let catalog = db.open().await;
        catalog
            .ensure_billing_defaults("ns")
            .await
            .expect("defaults");
        let ci = catalog
            .install_app(
                "ns",
                AppInstall {
                    name: String::new(),
                    kind: AppKind::CustomInvoicing {
                        enable_draft_sync_hook: false,
                        enable_issuing_sync_hook: false,
                    },
                    id: None,
                    secrets: Vec::new(),
                },
            )
            .await
            .expect("ci");
        let mut mixed = create("mixed", false, "sandbox");
        mixed.apps.payment = ci.id.clone();
        assert!(matches!(
            catalog.create_billing_profile("ns", mixed).await,
            Err(BillingProfileError::AppsDiffer)
        ));
        let mut no_country = create("x", false, "sandbox");
        no_country.supplier.addresses = None;
        assert!(matches!(
            catalog.create_billing_profile("ns", no_country).await,
            Err(BillingProfileError::Invalid(m)) if m.contains("country")
        ));
        let mut bad_duration = create("x", false, "sandbox");
        bad_duration.workflow.invoicing.due_after = "30 days".into();
        assert!(matches!(
            catalog.create_billing_profile("ns", bad_duration).await,
            Err(BillingProfileError::Invalid(_))
        ));
        assert!(matches!(
            catalog
                .create_billing_profile("ns", create("x", false, "01J00000000000000000000000"))
                .await,
            Err(BillingProfileError::AppNotFound { .. })
        ));
        // The app is in use by the default profile: it cannot be uninstalled.
        let sandbox = catalog
            .list_apps("ns", Some(AppType::Sandbox), 1, 1)
            .await
            .expect("list")
            .items
            .remove(0);
        assert!(matches!(
            catalog.uninstall_app("ns", &sandbox.id).await,
            Err(AppError::InUse { count: 1, .. })
        ));
    }
}

// The effective profile: the pinned one (else the default), workflow overrides merged.
crate::catalog_test! {
    #[tokio::test]
    async fn effective_profile_merges_the_override(db) {
        let catalog = db.open().await;
        catalog
            .ensure_billing_defaults("ns")
            .await
            .expect("defaults");
        let customer = customer_c(&catalog).await;
        let resolved = catalog
            .effective_billing_profile("ns", "c")
            .await
            .expect("resolve");
        assert!(resolved.profile.default);
        assert_eq!(resolved.invoicing_app.app_type(), AppType::Sandbox);
        let mut other = create("other", false, "sandbox");
        other.workflow.payment.collection_method = CollectionMethod::SendInvoice;
        let other = catalog
            .create_billing_profile("ns", other)
            .await
            .expect("create");
        catalog
            .upsert_customer_override(
                "ns",
                &customer.id,
                Some(other.id.clone()),
                Some(WorkflowOverride {
                    due_after: Some("P7D".into()),
                    ..WorkflowOverride::default()
                }),
            )
            .await
            .expect("override");
        let resolved = catalog
            .effective_billing_profile("ns", &customer.id)
            .await
            .expect("resolve");
        assert_eq!(resolved.profile.id, other.id);
        assert_eq!(resolved.workflow.invoicing.due_after, "P7D");
        assert_eq!(
            resolved.workflow.payment.collection_method,
            CollectionMethod::SendInvoice
        );
        assert_eq!(resolved.profile.workflow.invoicing.due_after, "P30D");
        assert!(matches!(
            catalog.effective_billing_profile("ns", "nobody").await,
            Err(BillingProfileError::CustomerNotFound(_))
        ));
    }
}

#[test]
fn iso_durations() {
    for ok in ["P0D", "P30D", "PT1H", "P1Y2M3W4DT5H6M7S", "PT0.5S", "P1M"] {
        assert!(is_iso_duration(ok), "{ok}");
    }
    for bad in [
        "", "P", "PT", "1D", "P1H", "P-1D", "PT1D", "P1DT", "P1M1Y", "P1.2.3D",
    ] {
        assert!(!is_iso_duration(bad), "{bad}");
    }
}

// Defaults fill what a create leaves out, as OpenMeter's schema says.
#[test]
fn workflow_defaults() {
    let w: BillingWorkflow =
        serde_json::from_str(r#"{"payment":{"collectionMethod":"send_invoice"}}"#).expect("parse");
    assert_eq!(w.payment.collection_method, CollectionMethod::SendInvoice);
    assert!(
        w.invoicing.auto_advance
            && w.invoicing.progressive_billing
            && w.tax.enabled
            && !w.tax.enforced
    );
    assert_eq!(w.invoicing.draft_period, "P0D");
    let json = serde_json::to_value(&w).expect("json");
    assert_eq!(json["collection"]["alignment"]["type"], "subscription");
    let anchored: BillingWorkflow = serde_json::from_str(
        r#"{"collection":{"alignment":{"type":"anchored","recurringPeriod":{"interval":"P1M","anchor":"2025-01-01T00:00:00Z"}}}}"#,
    )
    .expect("anchored");
    anchored.validate().expect("valid");
}
