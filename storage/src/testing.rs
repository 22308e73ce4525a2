//! Catalogs for tests, on every backend: [`catalog_test!`](crate::catalog_test) turns one test
//! body into `<name>::sqlite` (always run, a file in a temporary directory) and
//! `<name>::postgres` (a fresh database per test on the server `METRON_TEST_DATABASE_URL` names,
//! dropped at the end; tests run in parallel without seeing each other). Without the variable
//! the PostgreSQL case says it was skipped and passes, unless `CI` is set: then it fails, so a
//! CI run cannot skip it silently. `./scripts/test` starts PostgreSQL and sets the variable.
//!
//! Compiled for this crate's tests and, with the `testing` feature, for other crates' tests.

use crate::catalog::{Backend, Catalog};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;

/// The PostgreSQL server (a database to connect to, with the right to create databases) the
/// PostgreSQL cases run on, e.g. `postgres://metron:metron@127.0.0.1:5432/metron_test`.
pub const DATABASE_URL_VAR: &str = "METRON_TEST_DATABASE_URL";

/// Every database a test creates has this prefix (`./scripts/test` drops leftovers).
pub const DATABASE_PREFIX: &str = "metron_t_";

/// A place for one test's catalog: a temporary directory, or a fresh PostgreSQL database that
/// is dropped when this value is.
pub struct TestDatabase {
    backend: Backend,
    url: String,
    _dir: Option<tempfile::TempDir>,
    created: Option<Created>,
}

/// A database this test created, and how to drop it.
struct Created {
    admin: PgConnectOptions,
    name: String,
}

impl TestDatabase {
    /// A SQLite catalog file in a new temporary directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let url = crate::catalog::sqlite_url(&dir.path().join("catalog.db"));
        Self {
            backend: Backend::Sqlite,
            url,
            _dir: Some(dir),
            created: None,
        }
    }

    /// A fresh database on the server [`DATABASE_URL_VAR`] names. `None` (after saying so)
    /// when the variable is unset; panics when it is unset and `CI` is set.
    pub async fn postgres(test: &str) -> Option<Self> {
        let Some(admin_url) = std::env::var(DATABASE_URL_VAR)
            .ok()
            .filter(|u| !u.is_empty())
        else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{test}: {DATABASE_URL_VAR} is not set and CI is: the PostgreSQL catalog \
                     tests must run in CI (./scripts/test starts PostgreSQL and sets it)"
                );
            }
            eprintln!(
                "SKIPPED {test}: {DATABASE_URL_VAR} is not set, so the PostgreSQL case did not \
                 run (./scripts/test starts PostgreSQL and sets it)"
            );
            return None;
        };
        Some(Self::create_postgres(&admin_url).await)
    }

    async fn create_postgres(admin_url: &str) -> Self {
        let admin = PgConnectOptions::from_str(admin_url)
            .unwrap_or_else(|e| panic!("{DATABASE_URL_VAR} is not a PostgreSQL URL: {e}"));
        let name = format!(
            "{DATABASE_PREFIX}{}",
            ulid::Ulid::new().to_string().to_ascii_lowercase()
        );
        let mut conn = admin.connect().await.unwrap_or_else(|e| {
            panic!(
                "connecting to {} ({DATABASE_URL_VAR}): {e}",
                crate::catalog::redact(admin_url)
            )
        });
        // An ICU collation that sorts `a` before `B` where the server has ICU: the catalog's
        // ordering must come from its columns (COLLATE "C"), not from the database default.
        let icu = format!(
            "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' \
             LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        );
        if sqlx::query(sqlx::AssertSqlSafe(icu))
            .execute(&mut conn)
            .await
            .is_err()
        {
            let plain = format!("CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'");
            sqlx::query(sqlx::AssertSqlSafe(plain))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("creating the test database {name}: {e}"));
        }
        let _ = conn.close().await;
        let url = admin.clone().database(&name).to_url_lossy().to_string();
        Self {
            backend: Backend::Postgres,
            url,
            _dir: None,
            created: Some(Created { admin, name }),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The catalog's database URL (for `database.url`, `Catalog::connect`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens (the first time: creates and migrates) the catalog.
    pub async fn open(&self) -> Catalog {
        Catalog::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("opening the {} test catalog: {e}", self.backend.as_str()))
    }
}

impl Drop for TestDatabase {
    /// Drops the test's PostgreSQL database (closing the connections still open to it), on a
    /// thread of its own: the test's runtime may be the one this runs on.
    fn drop(&mut self) {
        let Some(Created { admin, name }) = self.created.take() else {
            return;
        };
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = admin.connect().await.map_err(|e| e.to_string())?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok(())
            })
        })
        .join();
        if let Ok(Err(error)) | Err(error) = dropped.map_err(|_| "panicked".to_owned()) {
            eprintln!(
                "warning: the test database was not dropped ({error}); ./scripts/test drops leftovers"
            );
        }
    }
}

/// What a test body returns: `()` or a `Result` whose error fails the test.
pub trait Outcome {
    fn check(self);
}

impl Outcome for () {
    fn check(self) {}
}

impl<E: std::fmt::Debug> Outcome for Result<(), E> {
    fn check(self) {
        if let Err(error) = self {
            panic!("test failed: {error:?}");
        }
    }
}

/// One catalog test, run on every backend: `catalog_test! { #[tokio::test] async fn name(db)
/// { ... } }` defines `name::sqlite` and `name::postgres`, each calling the body with its
/// [`TestDatabase`] (`db.open().await` opens the catalog; again after a `close` reopens it).
/// The attributes (the runner's, `#[tokio::test(flavor = "multi_thread")]` or
/// `#[actix_rt::test]`, and doc comments) go on both; the body may return `()` or a `Result`.
#[macro_export]
macro_rules! catalog_test {
    (
        $(#[$meta:meta])*
        async fn $name:ident($db:ident) $(-> $ret:ty)? $body:block
    ) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn catalog_test_body($db: $crate::testing::TestDatabase) $(-> $ret)? $body

            $(#[$meta])*
            async fn sqlite() {
                let db = $crate::testing::TestDatabase::sqlite();
                $crate::testing::Outcome::check(catalog_test_body(db).await);
            }

            $(#[$meta])*
            async fn postgres() {
                if let Some(db) = $crate::testing::TestDatabase::postgres(module_path!()).await {
                    $crate::testing::Outcome::check(catalog_test_body(db).await);
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Says which PostgreSQL the catalog tests' PostgreSQL cases ran on, or that they were
    /// skipped (`.config/nextest.toml` shows this test's output even when it passes).
    #[tokio::test]
    async fn postgres_backend() {
        let Some(db) = TestDatabase::postgres(module_path!()).await else {
            return;
        };
        let catalog = db.open().await;
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&catalog.pool)
            .await
            .expect("server_version");
        catalog.close().await;
        let server = std::env::var(DATABASE_URL_VAR).unwrap_or_default();
        eprintln!(
            "The PostgreSQL cases of the catalog tests ran on PostgreSQL {version} at {}",
            crate::catalog::redact(&server)
        );
    }
}
