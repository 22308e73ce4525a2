//! The object store under a configurable root (a local directory by default).

use bytes::Bytes;
use datafusion::object_store::local::LocalFileSystem;
pub use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use futures::TryStreamExt;
use metron_engine::failpoint::Action;
use std::path::PathBuf;
use std::sync::Arc;

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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where Parquet files and checkpoints live, and the URL DataFusion reads them by.
#[derive(Clone, Debug)]
pub struct ObjectRoot {
    store: Arc<dyn ObjectStore>,
    url: String,
    local: Option<PathBuf>,
}

impl ObjectRoot {
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
        })
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The URL of an object, as DataFusion reads it.
    pub fn url_of(&self, path: &ObjectPath) -> String {
        format!("{}/{}", self.url, path.as_ref())
    }

    /// Writes an object whole. Returns once it is durable: on a local root the file
    /// is fsynced (the store writes a temporary file and renames it).
    pub async fn put(&self, path: &ObjectPath, bytes: Bytes) -> Result<()> {
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
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map_err(|source| Error::Store {
                path: path.to_string(),
                source,
            })?;
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

/// An object path from its stored text.
pub fn object_path(text: &str) -> ObjectPath {
    ObjectPath::from(text)
}
