//! A bounded cache of Parquet metadata (footer, statistics, page indexes) of the immutable
//! files a checkpoint names, keyed by object path, so that a query does not read and
//! decode the same footer again. Files are never rewritten under the same path while the
//! process runs (paths carry the checkpoint epoch), so an entry never goes stale; it is
//! dropped when compaction supersedes its file ([`Footers::forget`]) or when the cache is
//! over its byte budget (least recently used first).

use bytes::Bytes;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

/// What the cache holds at most by default (decoded metadata bytes).
pub const FOOTERS_BYTES_MAX: usize = 64 << 20;

/// Parquet metadata of files by path, shared by every query of a service.
#[derive(Debug)]
pub struct Footers {
    bytes_max: usize,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<String, Entry>,
    bytes: usize,
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    metadata: ArrowReaderMetadata,
    size: u64,
    bytes: usize,
    used: u64,
}

/// A file's metadata and its length in bytes.
#[derive(Debug, Clone)]
pub struct Footer {
    pub metadata: ArrowReaderMetadata,
    pub size: u64,
}

impl Footers {
    pub fn new(bytes_max: usize) -> Self {
        Self {
            bytes_max,
            inner: Mutex::new(Entries::default()),
        }
    }

    /// The metadata of `path`, page indexes included, from the cache or read once.
    pub async fn get(
        &self,
        store: &Arc<dyn ObjectStore>,
        path: &ObjectPath,
    ) -> Result<Footer, ParquetError> {
        if let Some(found) = self.lookup(path.as_ref()) {
            return Ok(found);
        }
        let size = store
            .head(path)
            .await
            .map_err(|e| ParquetError::External(Box::new(e)))?
            .size;
        let mut reader = ObjectReader::new(store.clone(), path.clone(), size);
        let metadata = load_metadata(&mut reader, size).await?;
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let metadata = ArrowReaderMetadata::try_new(Arc::new(metadata), options)?;
        self.insert(path.as_ref(), metadata.clone(), size);
        Ok(Footer { metadata, size })
    }

    pub(crate) fn lookup(&self, path: &str) -> Option<Footer> {
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let clock = inner.clock;
        let entry = inner.map.get_mut(path)?;
        entry.used = clock;
        Some(Footer {
            metadata: entry.metadata.clone(),
            size: entry.size,
        })
    }

    fn insert(&self, path: &str, metadata: ArrowReaderMetadata, size: u64) {
        let bytes = metadata.metadata().memory_size() + path.len();
        if bytes > self.bytes_max {
            return;
        }
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let used = inner.clock;
        let entry = Entry {
            metadata,
            size,
            bytes,
            used,
        };
        if let Some(old) = inner.map.insert(path.to_owned(), entry) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > self.bytes_max {
            let Some(oldest) = inner
                .map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = inner.map.remove(&oldest) {
                inner.bytes -= gone.bytes;
            }
        }
    }

    /// Drops the entry of a file that is superseded or deleted.
    pub fn forget(&self, path: &str) {
        let mut inner = self.inner.lock();
        if let Some(gone) = inner.map.remove(path) {
            inner.bytes -= gone.bytes;
        }
    }

    /// Files cached and their decoded bytes.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.map.len(), inner.bytes)
    }
}

async fn load_metadata(
    reader: &mut ObjectReader,
    size: u64,
) -> Result<ParquetMetaData, ParquetError> {
    ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .with_prefetch_hint(Some(64 << 10))
        .load_and_finish(reader, size)
        .await
}

/// Byte ranges of one object, for the Parquet async reader: several ranges are one
/// request to the store (on a local root, one open and a read per range).
pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
    metadata: Option<Arc<ParquetMetaData>>,
}

impl ObjectReader {
    pub fn new(store: Arc<dyn ObjectStore>, path: ObjectPath, size: u64) -> Self {
        Self {
            store,
            path,
            size,
            metadata: None,
        }
    }

    /// A reader that answers `get_metadata` from `metadata` instead of the file.
    pub fn with_metadata(mut self, metadata: Arc<ParquetMetaData>) -> Self {
        self.metadata = Some(metadata);
        self
    }
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            if let Some(metadata) = &self.metadata {
                return Ok(metadata.clone());
            }
            let size = self.size;
            Ok(Arc::new(load_metadata(self, size).await?))
        }
        .boxed()
    }
}
