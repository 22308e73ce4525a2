//! The catalog: meters, customers, features, entitlements, notifications, apps, billing,
//! the product catalog, subscriptions and invoices, in SQL. sqlx's `Any` driver runs the same
//! queries on SQLite (a file, the default) or PostgreSQL (`Catalog::connect`); what differs
//! between the two is here: how a connection is set up, the migration history
//! (`migrations/sqlite`, `migrations/postgres`) and how a writer takes the write lock
//! ([`Catalog::begin_write`]). The SQL itself is portable: `$n` parameters, `ON CONFLICT`,
//! times as `i64` milliseconds, booleans as `0`/`1`, documents as JSON text.

use chrono::{DateTime, Utc};
use metron_engine::meter::Meter;
use sqlx::AnyPool;
use sqlx::Row;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("catalog database {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("catalog database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error(
        "catalog database URL {url:?}: expected postgres://USER:PASSWORD@HOST:PORT/DATABASE \
         or sqlite://PATH (without parameters)"
    )]
    Url { url: String },
    #[error("catalog migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("catalog query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("catalog row of meter {id} is not a valid meter: {source}")]
    Decode {
        id: String,
        source: serde_json::Error,
    },
    #[error("a meter with slug {slug:?} already exists")]
    SlugTaken { slug: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the database refused a value the request carried rather than failed:
    /// text with a NUL character, which PostgreSQL's `text` cannot hold (SQLSTATE 22021;
    /// SQLite stores it). The caller's error (400), not the server's.
    pub fn is_refused_value(&self) -> bool {
        matches!(self, Self::Query(error) if refused_value(error))
    }

    /// Whether this is a write refused because this node no longer holds the stream leases
    /// it took ([`Fenced`]).
    pub fn is_fenced(&self) -> bool {
        matches!(self, Self::Query(sqlx::Error::Database(e)) if e.code().as_deref() == Some(FENCED_CODE))
    }
}

/// Whether a query failed on a value the database cannot hold: see
/// [`Error::is_refused_value`].
pub fn refused_value(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "22021")
}

/// A time as the catalog's rows keep it: milliseconds since the epoch.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A time read back from a row's milliseconds (out of range: the epoch).
pub(crate) fn from_ms(v: i64) -> DateTime<Utc> {
    use chrono::TimeZone;
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

/// A row of any backend.
pub(crate) type CatalogRow = sqlx::any::AnyRow;

/// A write transaction (from [`Catalog::begin_write`]).
pub(crate) type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// The database a catalog is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names (`postgres://`, `postgresql://`, `sqlite:`).
    pub fn of_url(url: &str) -> Option<Self> {
        let scheme = url.split_once(':')?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(Self::Postgres),
            "sqlite" => Some(Self::Sqlite),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// The key of the PostgreSQL advisory lock every catalog writer holds until it commits
/// (ASCII "metroncw": metron catalog writer). Advisory locks are per database.
const POSTGRES_WRITER_LOCK: i64 = 0x6d65_7472_6f6e_6377;

/// Connections of one catalog: SQLite has one writer at a time anyway.
const SQLITE_CONNECTIONS_MAX: u32 = 4;
const POSTGRES_CONNECTIONS_MAX: u32 = 8;

/// The catalog's handle: a connection pool.
#[derive(Clone, Debug)]
pub struct Catalog {
    pub(crate) pool: AnyPool,
    backend: Backend,
    /// The stream leases this handle's write transactions require
    /// ([`Catalog::fence_writes`]), shared by its clones.
    fence: Arc<parking_lot::RwLock<Option<Fence>>>,
}

/// Leases a node holds (stream, node and each partition's epoch): its writes need them.
#[derive(Clone, Debug)]
struct Fence {
    stream: String,
    node_id: String,
    epochs: BTreeSet<(i64, i64)>,
}

/// A write refused because this node no longer holds the stream's leases it took: another
/// node took them over, and writes from here could undo that node's.
#[derive(Debug)]
pub struct Fenced {
    message: String,
}

impl std::fmt::Display for Fenced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fenced {}

impl sqlx::error::DatabaseError for Fenced {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(std::borrow::Cow::Borrowed(FENCED_CODE))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}

/// The code a [`Fenced`] refusal carries (`sqlx::error::DatabaseError::code`).
pub const FENCED_CODE: &str = "metron-fenced";

/// Meter definitions as stored: the JSON of [`Meter`] with its namespace.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredMeter {
    namespace: String,
    #[serde(flatten)]
    meter: Meter,
}

impl Catalog {
    /// Opens (creating if needed) the catalog a database URL names and runs the migrations:
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (the database must exist; sqlx's URL
    /// parameters such as `sslmode` apply) or `sqlite://PATH` (a file, created if missing).
    pub async fn connect(url: &str) -> Result<Self> {
        match Backend::of_url(url) {
            Some(Backend::Postgres) => Self::open_postgres(url).await,
            Some(Backend::Sqlite) => {
                let invalid = || Error::Url {
                    url: url.to_owned(),
                };
                // A catalog is a file: no in-memory database, no parameters (`mode=ro`, ...).
                if url.contains('?') || url.contains(":memory:") {
                    return Err(invalid());
                }
                let options = SqliteConnectOptions::from_str(url).map_err(|_| invalid())?;
                let path = options.get_filename();
                if path.as_os_str().is_empty() {
                    return Err(invalid());
                }
                Self::open_sqlite(path).await
            }
            None => Err(Error::Url { url: redact(url) }),
        }
    }

    /// Opens (creating if needed) the SQLite catalog file and runs the migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Self> {
        let open_error = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        let absolute = std::path::absolute(path).map_err(|e| open_error(sqlx::Error::Io(e)))?;
        let url = format!("{}?mode=rwc", sqlite_url(&absolute));
        let options = AnyConnectOptions::from_str(&url).map_err(open_error)?;
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(SQLITE_CONNECTIONS_MAX)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Writers queue on the lock (BEGIN IMMEDIATE) for 30 s instead of failing
                    // with "database is locked"; WAL lets readers read beside the writer.
                    for pragma in [
                        "PRAGMA busy_timeout = 30000",
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = FULL",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(open_error)?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        Ok(Self {
            pool,
            backend: Backend::Sqlite,
            fence: Arc::default(),
        })
    }

    async fn open_postgres(url: &str) -> Result<Self> {
        let connect_error = |source| Error::Connect {
            url: redact(url),
            source,
        };
        let options = AnyConnectOptions::from_str(url).map_err(connect_error)?;
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(POSTGRES_CONNECTIONS_MAX)
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        POSTGRES_MIGRATIONS.run(&pool).await?;
        Ok(Self {
            pool,
            backend: Backend::Postgres,
            fence: Arc::default(),
        })
    }

    /// The database this catalog is on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a write transaction. Such transactions run one at a time and each sees every
    /// write committed before it began, on both backends: SQLite's `BEGIN IMMEDIATE` takes the
    /// database's write lock; on PostgreSQL the transaction (read committed: every statement
    /// sees what committed before it) first takes a transaction-scoped advisory lock, released
    /// at commit or rollback. Readers never wait. A check-then-write (a free slug, one default
    /// profile, no overlapping subscription) is therefore safe in such a transaction; a
    /// single-statement write outside one is atomic on its own.
    ///
    /// Once [`Self::fence_writes`] named this node's leases, each such transaction first checks
    /// that the catalog still shows them, and fails with [`Fenced`] otherwise. Leases are taken
    /// over in a write transaction too, so a node that was frozen past its leases' expiry
    /// cannot write after another took them: its writes would undo the new holder's (an
    /// invoice's status put back, a line moved back).
    pub(crate) async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        let mut tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                let mut tx = self
                    .pool
                    .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                    .await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(POSTGRES_WRITER_LOCK)
                    .execute(&mut *tx)
                    .await?;
                tx
            }
        };
        let fence = self.fence.read().clone();
        if let Some(fence) = fence {
            let rows = sqlx::query(
                "SELECT partition_id, epoch FROM stream_leases WHERE stream = $1 AND node_id = $2",
            )
            .bind(&fence.stream)
            .bind(&fence.node_id)
            .fetch_all(&mut *tx)
            .await?;
            let held = rows
                .iter()
                .map(|r| Ok((r.try_get("partition_id")?, r.try_get("epoch")?)))
                .collect::<Result<BTreeSet<(i64, i64)>, sqlx::Error>>()?;
            if !fence.epochs.is_subset(&held) {
                return Err(sqlx::Error::Database(Box::new(Fenced {
                    message: format!(
                        "node {:?} no longer holds the leases of {} it took: its catalog writes are refused",
                        fence.node_id, fence.stream
                    ),
                })));
            }
        }
        Ok(tx)
    }

    /// From now on, this handle's (and its clones') write transactions require `leases`, the
    /// leases this node took: see [`Self::begin_write`].
    pub fn fence_writes(&self, leases: &[crate::leases::Lease]) {
        let Some(first) = leases.first() else {
            return;
        };
        *self.fence.write() = Some(Fence {
            stream: first.stream.clone(),
            node_id: first.node_id.clone(),
            epochs: leases
                .iter()
                .map(|l| (i64::from(l.partition), l.epoch))
                .collect(),
        });
    }

    /// Every meter of a namespace, oldest first.
    pub async fn list_meters(&self, namespace: &str, include_deleted: bool) -> Result<Vec<Meter>> {
        let rows = sqlx::query(
            "SELECT id, definition FROM meters WHERE namespace = $1 ORDER BY created_at, id",
        )
        .bind(namespace)
        .fetch_all(&self.pool)
        .await?;
        let mut meters = Vec::with_capacity(rows.len());
        for row in rows {
            let meter = decode(row.try_get("id")?, row.try_get("definition")?)?;
            if include_deleted || meter.deleted_at.is_none() {
                meters.push(meter);
            }
        }
        Ok(meters)
    }

    /// Every live meter of every namespace.
    pub async fn all_meters(&self) -> Result<Vec<Meter>> {
        let rows = sqlx::query(
            "SELECT id, definition FROM meters WHERE deleted_at IS NULL ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| decode(row.try_get("id")?, row.try_get("definition")?))
            .collect()
    }

    /// A live meter by id or slug.
    pub async fn get_meter(&self, namespace: &str, id_or_slug: &str) -> Result<Option<Meter>> {
        let row = sqlx::query(
            "SELECT id, definition FROM meters WHERE namespace = $1 AND (id = $2 OR slug = $2) AND deleted_at IS NULL \
             ORDER BY CASE WHEN id = $2 THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(namespace)
        .bind(id_or_slug)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some(decode(
                row.try_get("id")?,
                row.try_get("definition")?,
            )?)),
            None => Ok(None),
        }
    }

    /// Inserts a new meter; its slug must be free among live meters of the namespace.
    pub async fn insert_meter(&self, meter: &Meter) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let taken: Option<String> = sqlx::query_scalar(
            "SELECT id FROM meters WHERE namespace = $1 AND slug = $2 AND deleted_at IS NULL",
        )
        .bind(&meter.namespace)
        .bind(&meter.slug)
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some() {
            return Err(Error::SlugTaken {
                slug: meter.slug.clone(),
            });
        }
        sqlx::query("INSERT INTO meters (id, namespace, slug, definition, created_at, deleted_at) VALUES ($1, $2, $3, $4, $5, NULL)")
            .bind(&meter.id)
            .bind(&meter.namespace)
            .bind(&meter.slug)
            .bind(encode(meter))
            .bind(meter.created_at.timestamp_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a meter's definition (updates and soft deletes).
    pub async fn update_meter(&self, meter: &Meter) -> Result<()> {
        sqlx::query("UPDATE meters SET definition = $1, deleted_at = $2 WHERE id = $3")
            .bind(encode(meter))
            .bind(
                meter
                    .deleted_at
                    .map(|t: DateTime<Utc>| t.timestamp_millis()),
            )
            .bind(&meter.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The `sqlite://` URL of a catalog file: every byte but `A-Z a-z 0-9 / - . _ ~` is
/// percent-encoded (sqlx decodes the path; a `%`, `?` or `#` in it stays itself).
pub fn sqlite_url(path: &Path) -> String {
    let mut url = String::from("sqlite://");
    for &byte in path.as_os_str().as_encoded_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            url.push(char::from(byte));
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url
}

/// The URL without its password (for errors and logs).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn encode(meter: &Meter) -> String {
    let stored = StoredMeter {
        namespace: meter.namespace.clone(),
        meter: meter.clone(),
    };
    serde_json::to_string(&stored).unwrap_or_default()
}

fn decode(id: String, definition: String) -> Result<Meter> {
    let stored: StoredMeter =
        serde_json::from_str(&definition).map_err(|source| Error::Decode { id, source })?;
    let mut meter = stored.meter;
    meter.namespace = stored.namespace;
    Ok(meter)
}

#[cfg(test)]
mod tests;
