//! The catalog: meters (and, in later issues, customers, features, plans) in SQL.
//! sqlx on SQLite by default; the SQL is kept portable for PostgreSQL.

use chrono::{DateTime, Utc};
use metron_engine::meter::Meter;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("catalog database {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
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

/// A time as the catalog's rows keep it: milliseconds since the epoch.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A time read back from a row's milliseconds (out of range: the epoch).
pub(crate) fn from_ms(v: i64) -> DateTime<Utc> {
    use chrono::TimeZone;
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

/// The catalog's handle: a connection pool.
#[derive(Clone, Debug)]
pub struct Catalog {
    pub(crate) pool: SqlitePool,
}

/// Meter definitions as stored: the JSON of [`Meter`] with its namespace.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredMeter {
    namespace: String,
    #[serde(flatten)]
    meter: Meter,
}

impl Catalog {
    /// Opens (creating if needed) the SQLite catalog file and runs the migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| Error::Open {
                path: path.to_owned(),
                source,
            })?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            // Writers queue on the lock (BEGIN IMMEDIATE) instead of failing with "database is locked".
            .busy_timeout(std::time::Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| Error::Open {
                path: path.to_owned(),
                source,
            })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
