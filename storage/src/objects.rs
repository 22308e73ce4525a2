//! The object store under a configurable root: a local directory by default, or a
//! bucket and prefix on S3 (or an S3-compatible server).

use bytes::Bytes;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::object_store::local::LocalFileSystem;
pub use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::prefix::PrefixStore;
use datafusion::object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart,
};
use futures::TryStreamExt;
use metron_engine::failpoint::Action;
use object_store::aws::AmazonS3Builder;
use std::path::PathBuf;
use std::sync::Arc;

pub mod testing;
#[cfg(test)]
mod tests;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object store at {path}: {source}")]
    Store {
        path: String,
        source: datafusion::object_store::Error,
    },
    #[error("cannot create the object root {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failpoint objects.put refused {path}")]
    Failpoint { path: String },
    #[error("cannot sync {path}: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A create-only put found the object there already (another writer made it).
    #[error("object {path} exists already")]
    Exists { path: String },
    #[error("storage URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("cannot open the S3 bucket {bucket}: {source}")]
    S3 {
        bucket: String,
        source: datafusion::object_store::Error,
    },
}

/// Where the objects live and how to reach them (the `storage` section of the config).
/// A setting left `None` comes from the usual AWS variables (`AWS_ENDPOINT_URL`,
/// `AWS_REGION` or `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_ALLOW_HTTP`), read by object_store's `AmazonS3Builder::from_env`.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StorageOptions {
    /// `s3://bucket/prefix`, `file:///path`, or `None` for the default directory.
    pub url: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Plain HTTP to the endpoint (an S3-compatible server on loopback).
    pub allow_http: Option<bool>,
}

/// The secret key never reaches a log: it shows as `"…"` when set.
impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageOptions")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "…"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where Parquet files and checkpoints live, and the URL DataFusion reads them by.
#[derive(Clone, Debug)]
pub struct ObjectRoot {
    /// Paths are relative to the root (the prefix is the store's).
    store: Arc<dyn ObjectStore>,
    url: String,
    local: Option<PathBuf>,
    /// The bucket's whole store and its URL (`s3://bucket`), which DataFusion reads
    /// [`Self::url_of`] URLs through; `None` for a local root (DataFusion knows `file://`).
    bucket: Option<(ObjectStoreUrl, Arc<dyn ObjectStore>)>,
}

impl ObjectRoot {
    /// The root `options` name: `s3://bucket/prefix`, `file:///path`, or `default_dir`
    /// when no URL is given.
    pub fn open(options: &StorageOptions, default_dir: PathBuf) -> Result<Self> {
        let Some(url) = options.url.as_deref().filter(|u| !u.trim().is_empty()) else {
            return Self::local(default_dir);
        };
        let invalid = |reason| Error::Url {
            url: url.to_owned(),
            reason,
        };
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid("a file URL needs an absolute path (file:///dir)"));
            }
            return Self::local(PathBuf::from(path));
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(invalid("use s3://bucket/prefix or file:///path"));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("the bucket is missing (s3://bucket/prefix)"));
        }
        Self::s3(bucket, prefix, options)
    }

    /// A prefix (possibly empty) of an S3 bucket. Settings not in `options` come from
    /// the AWS variables; the bucket must exist.
    pub fn s3(bucket: &str, prefix: &str, options: &StorageOptions) -> Result<Self> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(endpoint) = &options.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &options.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &options.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &options.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(allow) = options.allow_http {
            builder = builder.with_allow_http(allow);
        }
        let s3: Arc<dyn ObjectStore> = Arc::new(builder.build().map_err(|source| Error::S3 {
            bucket: bucket.to_owned(),
            source,
        })?);
        let bucket_url =
            ObjectStoreUrl::parse(format!("s3://{bucket}")).map_err(|_| Error::Url {
                url: format!("s3://{bucket}"),
                reason: "the bucket is not a valid host name",
            })?;
        let prefix = ObjectPath::from(prefix);
        let (store, url): (Arc<dyn ObjectStore>, String) = if prefix.as_ref().is_empty() {
            (s3.clone(), format!("s3://{bucket}"))
        } else {
            (
                Arc::new(PrefixStore::new(s3.clone(), prefix.clone())),
                format!("s3://{bucket}/{prefix}"),
            )
        };
        Ok(Self {
            store,
            url,
            local: None,
            bucket: Some((bucket_url, s3)),
        })
    }

    /// A local directory (created if missing).
    pub fn local(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|source| Error::Root {
            path: dir.clone(),
            source,
        })?;
        let dir = dir.canonicalize().map_err(|source| Error::Root {
            path: dir.clone(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(&dir).map_err(|source| Error::Store {
            path: dir.display().to_string(),
            source,
        })?;
        let url = format!("file://{}", dir.display());
        Ok(Self {
            store: Arc::new(store),
            url,
            local: Some(dir),
            bucket: None,
        })
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The root's URL: `file:///dir` or `s3://bucket/prefix`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Lets DataFusion sessions on `env` read this root's [`Self::url_of`] URLs.
    pub fn register(&self, env: &RuntimeEnv) {
        if let Some((url, store)) = &self.bucket {
            env.register_object_store(url.as_ref(), store.clone());
        }
    }

    /// The URL of an object, as DataFusion reads it.
    pub fn url_of(&self, path: &ObjectPath) -> String {
        format!("{}/{}", self.url, path.as_ref())
    }

    /// Writes an object whole. Returns once it is durable: on a local root the file
    /// is fsynced (the store writes a temporary file and renames it).
    pub async fn put(&self, path: &ObjectPath, bytes: Bytes) -> Result<()> {
        self.put_mode(path, bytes, PutMode::Overwrite).await
    }

    /// Writes an object whole if none is at `path`, atomically: on S3 a conditional
    /// put (`If-None-Match: *`), on a local root a hard link of the written temporary
    /// file. [`Error::Exists`] when the object is there already; durable like [`Self::put`].
    pub async fn put_new(&self, path: &ObjectPath, bytes: Bytes) -> Result<()> {
        self.put_mode(path, bytes, PutMode::Create).await
    }

    async fn put_mode(&self, path: &ObjectPath, bytes: Bytes, mode: PutMode) -> Result<()> {
        match metron_engine::failpoint::eval("objects.put") {
            None => {}
            Some(Action::Error) => {
                return Err(Error::Failpoint {
                    path: path.to_string(),
                });
            }
            Some(Action::Panic) => panic!("failpoint objects.put"),
            Some(Action::Sleep(d)) => tokio::time::sleep(d).await,
        }
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        self.store
            .put_opts(path, PutPayload::from(bytes), options)
            .await
            .map_err(|source| match source {
                datafusion::object_store::Error::AlreadyExists { .. } => Error::Exists {
                    path: path.to_string(),
                },
                source => Error::Store {
                    path: path.to_string(),
                    source,
                },
            })?;
        self.sync_local(path).await
    }

    /// Copies the file at `local` to `path`, in parts of [`FILE_PART_BYTES`] (a multipart
    /// upload on S3), so a large file never sits in memory whole; durable like [`Self::put`].
    pub async fn put_file(&self, path: &ObjectPath, local: &std::path::Path) -> Result<()> {
        use tokio::io::AsyncReadExt;
        let store_error = |source| Error::Store {
            path: path.to_string(),
            source,
        };
        let read_error = |source| Error::Sync {
            path: local.to_owned(),
            source,
        };
        let mut file = tokio::fs::File::open(local).await.map_err(read_error)?;
        let upload = self.store.put_multipart(path).await.map_err(store_error)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, FILE_PART_BYTES);
        let mut buf = vec![0u8; FILE_PART_BYTES];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(error) => {
                    let _ = writer.abort().await;
                    return Err(read_error(error));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(error) = writer.wait_for_capacity(2).await {
                return Err(store_error(error));
            }
            writer.write(buf.get(..n).unwrap_or_default());
        }
        writer.finish().await.map_err(store_error)?;
        self.sync_local(path).await
    }

    /// Copies the object at `path` into a new file at `local` (replaced if there), chunk by
    /// chunk, and fsyncs the file.
    pub async fn get_file(&self, path: &ObjectPath, local: &std::path::Path) -> Result<u64> {
        use tokio::io::AsyncWriteExt;
        let store_error = |source| Error::Store {
            path: path.to_string(),
            source,
        };
        let write_error = |source| Error::Sync {
            path: local.to_owned(),
            source,
        };
        let mut stream = self
            .store
            .get(path)
            .await
            .map_err(store_error)?
            .into_stream();
        let mut file = tokio::fs::File::create(local).await.map_err(write_error)?;
        let mut written = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(store_error)? {
            file.write_all(&chunk).await.map_err(write_error)?;
            written += chunk.len() as u64;
        }
        file.sync_all().await.map_err(write_error)?;
        Ok(written)
    }

    /// On a local root, fsyncs the file at `path` and its directory (no-op on S3).
    async fn sync_local(&self, path: &ObjectPath) -> Result<()> {
        if let Some(root) = &self.local {
            // fsync blocks: on a blocking thread, never on the caller's runtime worker.
            let file = root.join(path.as_ref());
            let synced = tokio::task::spawn_blocking(move || {
                let sync = |p: &std::path::Path| std::fs::File::open(p).and_then(|f| f.sync_all());
                sync(&file).map_err(|source| Error::Sync {
                    path: file.clone(),
                    source,
                })?;
                if let Some(parent) = file.parent() {
                    sync(parent).map_err(|source| Error::Sync {
                        path: parent.to_owned(),
                        source,
                    })?;
                }
                Ok(())
            })
            .await;
            match synced {
                Ok(result) => result?,
                Err(join) => {
                    return Err(Error::Sync {
                        path: root.join(path.as_ref()),
                        source: std::io::Error::other(join.to_string()),
                    });
                }
            }
        }
        Ok(())
    }

    pub async fn get(&self, path: &ObjectPath) -> Result<Bytes> {
        let result = self.store.get(path).await.map_err(|source| Error::Store {
            path: path.to_string(),
            source,
        })?;
        result.bytes().await.map_err(|source| Error::Store {
            path: path.to_string(),
            source,
        })
    }

    /// Deletes an object; a missing one is not an error.
    pub async fn delete(&self, path: &ObjectPath) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(datafusion::object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(Error::Store {
                path: path.to_string(),
                source,
            }),
        }
    }

    /// Every object under a prefix.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectPath>> {
        let prefix = ObjectPath::from(prefix);
        self.store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|source| Error::Store {
                path: prefix.to_string(),
                source,
            })
    }
}

/// The part size of [`ObjectRoot::put_file`] (S3's minimum part is 5 MiB).
pub const FILE_PART_BYTES: usize = 8 << 20;

/// An object path from its stored text.
pub fn object_path(text: &str) -> ObjectPath {
    ObjectPath::from(text)
}
