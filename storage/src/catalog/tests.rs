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

crate::catalog_test! {
    /// Meters survive a reopen; slugs are unique among live meters; deleted ones hide.
    #[tokio::test]
    async fn meters_round_trip_and_slugs_are_unique(db) {
        let catalog = db.open().await;
        assert_eq!(catalog.backend(), db.backend());
        let m = meter("tokens", "01A");
        catalog.insert_meter(&m).await.expect("insert");
        assert!(matches!(
            catalog.insert_meter(&meter("tokens", "01B")).await,
            Err(Error::SlugTaken { .. })
        ));
        catalog.close().await;
        let catalog = db.open().await;
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
}

crate::catalog_test! {
    /// Of 16 concurrent inserts of one slug (a check-then-write with no unique index behind
    /// it), exactly one wins.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_check_then_write_has_one_winner(db) {
        let catalog = db.open().await;
        let mut tasks = Vec::new();
        for i in 0..16 {
            let catalog = catalog.clone();
            tasks.push(tokio::spawn(async move {
                catalog.insert_meter(&meter("tokens", &format!("01R{i:02}"))).await
            }));
        }
        let (mut won, mut taken) = (0, 0);
        for task in tasks {
            match task.await.expect("task") {
                Ok(()) => won += 1,
                Err(Error::SlugTaken { .. }) => taken += 1,
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!((won, taken), (1, 15));
        assert_eq!(catalog.list_meters("default", false).await.expect("list").len(), 1);
    }
}

crate::catalog_test! {
    /// A writer waits for the write transaction open before it, then sees what it wrote: the
    /// second insert of a slug waits while the first is uncommitted (here for 300 ms, the
    /// one wait this test makes), then finds the slug taken.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_waits_for_the_open_write_transaction(db) {
        let catalog = db.open().await;
        let first = meter("tokens", "01W1");
        let mut held = catalog.begin_write().await.expect("begin");
        sqlx::query(
            "INSERT INTO meters (id, namespace, slug, definition, created_at, deleted_at) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(&first.id)
        .bind(&first.namespace)
        .bind(&first.slug)
        .bind(encode(&first))
        .bind(ms(first.created_at))
        .execute(&mut *held)
        .await
        .expect("insert in the held transaction");
        let other = catalog.clone();
        let second = tokio::spawn(async move { other.insert_meter(&meter("tokens", "01W2")).await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "the second writer must wait for the first");
        held.commit().await.expect("commit");
        assert!(matches!(
            second.await.expect("task"),
            Err(Error::SlugTaken { .. })
        ));
    }
}

crate::catalog_test! {
    /// Text sorts bytewise on both backends (SQLite's BINARY, PostgreSQL's COLLATE "C"
    /// columns), whatever the database's default collation: `A` < `B` < `_` < `a` < `b`.
    #[tokio::test]
    async fn text_sorts_bytewise(db) {
        let catalog = db.open().await;
        let keys = ["b", "B", "_x", "a", "A", "é"];
        let upserts = keys
            .iter()
            .map(|k| crate::customers::SubjectUpsert {
                key: (*k).to_owned(),
                display_name: None,
                metadata: None,
                current_period_start: None,
                current_period_end: None,
                stripe_customer_id: None,
            })
            .collect();
        catalog.upsert_subjects("default", upserts).await.expect("upsert");
        let listed: Vec<String> = catalog
            .list_subjects("default")
            .await
            .expect("list")
            .into_iter()
            .map(|s| s.key)
            .collect();
        assert_eq!(listed, ["A", "B", "_x", "a", "b", "é"]);
    }
}

crate::catalog_test! {
    /// Time columns hold milliseconds far past 2038 (BIGINT on both backends: PostgreSQL's
    /// INTEGER is 32 bits), and NULL stays NULL.
    #[tokio::test]
    async fn time_columns_hold_any_millisecond(db) {
        let catalog = db.open().await;
        let far = DateTime::<Utc>::from_timestamp_millis(253_402_300_799_999).expect("time");
        sqlx::query(
            "INSERT INTO meters (id, namespace, slug, definition, created_at, deleted_at) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind("01F")
        .bind("default")
        .bind("far")
        .bind("{}")
        .bind(ms(far))
        .execute(&catalog.pool)
        .await
        .expect("insert");
        let (created, deleted): (i64, Option<i64>) =
            sqlx::query_as("SELECT created_at, deleted_at FROM meters WHERE id = $1")
                .bind("01F")
                .fetch_one(&catalog.pool)
                .await
                .expect("select");
        assert_eq!((from_ms(created), deleted), (far, None));
    }
}

/// A `sqlite://` URL opens the file (created if missing); other URLs are refused before any
/// connection, and a refused URL never shows its password.
#[tokio::test]
async fn urls_name_the_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("by-url.db");
    let catalog = Catalog::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("sqlite://");
    assert_eq!(catalog.backend(), Backend::Sqlite);
    catalog.close().await;
    assert!(path.exists());
    let catalog = Catalog::connect(&format!("sqlite:{}", path.display()))
        .await
        .expect("sqlite:");
    catalog.close().await;
    // A file name that looks like URL syntax is still that file.
    let odd = dir.path().join("a %41 #b?.db");
    let catalog = Catalog::open_sqlite(&odd).await.expect("odd name");
    catalog.close().await;
    assert!(odd.exists());
    let catalog = Catalog::connect(&sqlite_url(&odd))
        .await
        .expect("odd name by URL");
    catalog.close().await;
    assert!(!dir.path().join("a A #b?.db").exists());
    for bad in [
        "sqlite::memory:",
        "sqlite://",
        "sqlite:///tmp/x.db?mode=ro",
        "mysql://u:secret@h/db",
        "/tmp/x.db",
    ] {
        let error = Catalog::connect(bad).await.expect_err(bad).to_string();
        assert!(!error.contains("secret"), "{error}");
    }
    assert_eq!(
        Backend::of_url("postgresql://h/db"),
        Some(Backend::Postgres)
    );
    assert_eq!(Backend::of_url("Postgres://h/db"), Some(Backend::Postgres));
    assert_eq!(Backend::of_url("sqlite:c.db"), Some(Backend::Sqlite));
    assert_eq!(Backend::of_url("c.db"), None);
    assert_eq!(
        redact("postgres://metron:pa@ss@127.0.0.1:5432/db?sslmode=require"),
        "postgres://metron:***@127.0.0.1:5432/db?sslmode=require"
    );
    assert_eq!(redact("postgres://metron@h/db"), "postgres://metron@h/db");
}

/// A PostgreSQL catalog opens over TLS (`sslmode=require`) when the server offers it (Debian's
/// cluster does, with its snakeoil certificate).
#[tokio::test]
async fn postgres_over_tls() {
    let Some(db) = crate::testing::TestDatabase::postgres(module_path!()).await else {
        return;
    };
    let catalog = db.open().await;
    let offered: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&catalog.pool)
        .await
        .expect("SHOW ssl");
    catalog.close().await;
    if offered != "on" {
        eprintln!("SKIPPED {}: the server has ssl = {offered}", module_path!());
        return;
    }
    let url = db.url().replace("sslmode=prefer", "sslmode=require");
    assert!(url.contains("sslmode=require"), "{url}");
    let catalog = Catalog::connect(&url).await.expect("connect with TLS");
    let tls: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&catalog.pool)
        .await
        .expect("pg_stat_ssl");
    assert!(tls);
    catalog.close().await;
}
