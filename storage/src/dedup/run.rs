//! Run files: immutable, sorted, unique keys.
//!
//! ```text
//! offset 0   header, 48 bytes (integers little-endian):
//!              magic "MTRDEDUP" | version u32 | reserved u32 (0) | count u64
//!              | first_insert_ms i64 | last_insert_ms i64 | body checksum u64
//! offset 48  body: `count` keys, strictly ascending, 16-byte big-endian
//! end - 8    trailer: checksum of the 48 header bytes (u64 LE)
//! ```
//! Checksums are xxh3-64. The header is a multiple of 16 bytes, so every key
//! lies inside one 4 KiB page of the file and a page-aligned read yields whole keys.
//!
//! Lookups need no per-key memory: keys are uniform hashes, so a key's
//! position is estimated by interpolation between two known keys (at first the
//! run's min and max), one page around the estimate is read with `pread`, and
//! the bracket is narrowed until the key is found or the bracket is empty.
//! When an interpolation step fails to halve the bracket the next step bisects,
//! so skewed key sets still take O(log n) reads; uniform ones take 1–3.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

use super::bloom::Bloom;
use super::{Error, Key, Result, RunMeta};

pub(crate) const MAGIC: [u8; 8] = *b"MTRDEDUP";
pub(crate) const VERSION: u32 = 1;
pub(crate) const HEADER_LEN: u64 = 48;
pub(crate) const TRAILER_LEN: u64 = 8;
pub(crate) const KEY_LEN: u64 = 16;
const PAGE: u64 = 4096;
/// When at most this many candidates remain, read them all in one go (8 KiB).
const SMALL_WINDOW_KEYS: u64 = 512;
/// An interpolated read covers up to this many pages either side of the
/// estimate's page, as many as 1.5 standard deviations of the estimate need.
const MAX_RADIUS_PAGES: u64 = 4;
const KEYS_PER_PAGE: u64 = PAGE / KEY_LEN;
const MAX_WINDOW_BYTES: usize = ((2 * MAX_RADIUS_PAGES + 1) * PAGE) as usize;
/// Keys per sequential read or write chunk (64 KiB).
const CHUNK_KEYS: u64 = 4096;

pub(crate) fn file_name(seq: u64) -> String {
    format!("run-{seq:016x}.dat")
}

/// The sequence number of a run file name as written by [`file_name`].
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("run-")?.strip_suffix(".dat")?;
    let canonical = hex.len() == 16
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !canonical {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

struct Header {
    count: u64,
    first_ms: i64,
    last_ms: i64,
    body_checksum: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut b = [0u8; HEADER_LEN as usize];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        // 12..16 reserved, zero.
        b[16..24].copy_from_slice(&self.count.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_ms.to_le_bytes());
        b[32..40].copy_from_slice(&self.last_ms.to_le_bytes());
        b[40..48].copy_from_slice(&self.body_checksum.to_le_bytes());
        b
    }

    fn decode(b: &[u8; HEADER_LEN as usize], path: &Path) -> Result<Self> {
        let u64_at = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(w)
        };
        if b[0..8] != MAGIC {
            return Err(Error::corrupt(path, "bad magic: not a dedup run file"));
        }
        let version = u64_at(8) as u32;
        if version != VERSION {
            return Err(Error::corrupt(
                path,
                format!("unsupported run version {version}"),
            ));
        }
        Ok(Self {
            count: u64_at(16),
            first_ms: u64_at(24) as i64,
            last_ms: u64_at(32) as i64,
            body_checksum: u64_at(40),
        })
    }
}

#[inline]
fn key_at(bytes: &[u8], i: usize) -> Key {
    let mut k = [0u8; KEY_LEN as usize];
    k.copy_from_slice(&bytes[i * KEY_LEN as usize..(i + 1) * KEY_LEN as usize]);
    Key::from_be_bytes(k)
}

/// Writes a new run file from keys pushed in strictly ascending order,
/// building its bloom filter on the way. The file is not fsynced here (the
/// owner does that before a checkpoint names it).
pub(crate) struct RunWriter {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    offset: u64,
    hasher: Xxh3Default,
    count: u64,
    min: Key,
    last: Option<Key>,
    bloom: Bloom,
}

impl RunWriter {
    pub(crate) fn create(path: PathBuf, bloom: Bloom) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Self {
            file,
            path,
            buf: Vec::with_capacity((CHUNK_KEYS * KEY_LEN) as usize),
            offset: HEADER_LEN,
            hasher: Xxh3Default::new(),
            count: 0,
            min: 0,
            last: None,
            bloom,
        })
    }

    pub(crate) fn push(&mut self, key: Key) -> Result<()> {
        match self.last {
            Some(prev) if key <= prev => {
                return Err(Error::corrupt(
                    &self.path,
                    "internal: keys pushed out of order",
                ));
            }
            Some(_) => {}
            None => self.min = key,
        }
        self.last = Some(key);
        self.buf.extend_from_slice(&key.to_be_bytes());
        self.bloom.insert(key);
        self.count += 1;
        if self.buf.len() >= (CHUNK_KEYS * KEY_LEN) as usize {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(&self.buf, self.offset)
            .map_err(|e| Error::io(&self.path, e))?;
        self.hasher.update(&self.buf);
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes the trailer and the header and returns the open run.
    pub(crate) fn finish(mut self, seq: u64, first_ms: i64, last_ms: i64) -> Result<Run> {
        self.flush()?;
        let Some(max) = self.last else {
            return Err(Error::corrupt(&self.path, "internal: empty run"));
        };
        let body_checksum = self.hasher.digest();
        let header = Header {
            count: self.count,
            first_ms,
            last_ms,
            body_checksum,
        }
        .encode();
        self.file
            .write_all_at(&xxh3_64(&header).to_le_bytes(), self.offset)
            .and_then(|()| self.file.write_all_at(&header, 0))
            .map_err(|e| Error::io(&self.path, e))?;
        let file_name = file_name(seq);
        Ok(Run {
            meta: RunMeta {
                file_name,
                keys: self.count,
                first_insert_ms: first_ms,
                last_insert_ms: last_ms,
            },
            seq,
            path: self.path,
            file: self.file,
            min_key: self.min,
            max_key: max,
            body_checksum,
            bloom: self.bloom,
            synced: false,
        })
    }
}

/// An open run: its metadata, file handle, key range and bloom filter.
pub(crate) struct Run {
    pub(crate) meta: RunMeta,
    pub(crate) seq: u64,
    pub(crate) path: PathBuf,
    file: File,
    min_key: Key,
    max_key: Key,
    body_checksum: u64,
    pub(crate) bloom: Bloom,
    /// Whether the file has been fsynced since it was written.
    pub(crate) synced: bool,
}

impl Run {
    /// Opens a run named by a checkpoint state, verifies header, trailer,
    /// length, body checksum, key order and agreement with `meta`, and
    /// builds its bloom filter with `bloom_blocks` blocks — all in one
    /// sequential pass over the file.
    pub(crate) fn open(dir: &Path, meta: &RunMeta, seq: u64, bloom_blocks: usize) -> Result<Self> {
        let path = dir.join(&meta.file_name);
        let file = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::MissingRun { path: path.clone() }
            } else {
                Error::io(&path, e)
            }
        })?;
        let header = read_header(&file, &path)?;
        if header.count != meta.keys
            || header.first_ms != meta.first_insert_ms
            || header.last_ms != meta.last_insert_ms
        {
            return Err(Error::corrupt(
                &path,
                format!(
                    "header (keys {}, first {}, last {}) does not match the checkpoint state \
                     (keys {}, first {}, last {})",
                    header.count,
                    header.first_ms,
                    header.last_ms,
                    meta.keys,
                    meta.first_insert_ms,
                    meta.last_insert_ms
                ),
            ));
        }
        let mut bloom = Bloom::new(bloom_blocks, header.count);
        let (mut min_key, mut max_key) = (None, 0);
        let mut reader = RunReader::new(&file, &path, &header);
        while let Some(key) = reader.next_key()? {
            bloom.insert(key);
            min_key.get_or_insert(key);
            max_key = key;
        }
        let min_key = min_key.ok_or_else(|| Error::corrupt(&path, "empty run"))?;
        Ok(Self {
            meta: meta.clone(),
            seq,
            path,
            file,
            min_key,
            max_key,
            body_checksum: header.body_checksum,
            bloom,
            synced: true,
        })
    }

    pub(crate) fn sync(&mut self) -> Result<()> {
        if !self.synced {
            self.file.sync_all().map_err(|e| Error::io(&self.path, e))?;
            self.synced = true;
        }
        Ok(())
    }

    /// A sequential reader over the keys, verifying order and checksum again
    /// (so a merge never propagates a run that rotted on disk).
    pub(crate) fn reader(&self) -> RunReader<'_> {
        RunReader {
            file: &self.file,
            path: &self.path,
            count: self.meta.keys,
            next_index: 0,
            buf: Vec::new(),
            pos: 0,
            hasher: Xxh3Default::new(),
            expected_checksum: Some(self.body_checksum),
            prev: None,
        }
    }

    /// Whether `key` lies within the run's key range (no I/O).
    #[inline]
    pub(crate) fn in_range(&self, key: Key) -> bool {
        (self.min_key..=self.max_key).contains(&key)
    }

    /// Whether the run holds `key`; adds the number of preads to `reads`.
    pub(crate) fn contains(&self, key: Key, reads: &mut u64) -> Result<bool> {
        if key < self.min_key || key > self.max_key {
            return Ok(false);
        }
        if key == self.min_key || key == self.max_key {
            return Ok(true);
        }
        // Invariant: keys[lo] == klo < key < khi == keys[hi]; candidates are (lo, hi).
        let (mut lo, mut hi) = (0u64, self.meta.keys - 1);
        let (mut klo, mut khi) = (self.min_key, self.max_key);
        let mut buf = [0u8; MAX_WINDOW_BYTES];
        let mut bisect = false;
        loop {
            let candidates = hi - lo - 1;
            if candidates == 0 {
                return Ok(false);
            }
            let (start, end) = if candidates <= SMALL_WINDOW_KEYS {
                (lo + 1, hi)
            } else {
                let (estimate, radius) = if bisect {
                    (lo + (hi - lo) / 2, 0)
                } else {
                    interpolate(key, lo, hi, klo, khi)
                };
                page_window(estimate, radius, lo + 1, hi)
            };
            let n = (end - start) as usize;
            let bytes = &mut buf[..n * KEY_LEN as usize];
            self.file
                .read_exact_at(bytes, HEADER_LEN + start * KEY_LEN)
                .map_err(|e| Error::io(&self.path, e))?;
            *reads += 1;
            let (first, last) = (key_at(bytes, 0), key_at(bytes, n - 1));
            if first <= klo || last >= khi || first > last {
                return Err(Error::corrupt(
                    &self.path,
                    "keys out of order (file changed after it was opened?)",
                ));
            }
            if key < first {
                hi = start;
                khi = first;
            } else if key > last {
                lo = end - 1;
                klo = last;
            } else {
                let (mut a, mut b) = (0, n);
                while a < b {
                    let mid = a + (b - a) / 2;
                    match key_at(bytes, mid).cmp(&key) {
                        std::cmp::Ordering::Less => a = mid + 1,
                        std::cmp::Ordering::Greater => b = mid,
                        std::cmp::Ordering::Equal => return Ok(true),
                    }
                }
                return Ok(false);
            }
            // Bisect next time if this step did not at least halve the bracket.
            bisect = !bisect && (hi - lo).saturating_sub(1) > candidates / 2;
        }
    }
}

/// Estimated index of `key` between two known keys, strictly inside (lo, hi),
/// and how many pages either side of it to read. For uniform keys the
/// estimate's error is binomial: sigma = sqrt(n f (1 - f)) positions.
fn interpolate(key: Key, lo: u64, hi: u64, klo: Key, khi: Key) -> (u64, u64) {
    let frac = (key - klo) as f64 / (khi - klo) as f64;
    let span = (hi - lo) as f64;
    let estimate = (lo + (frac * span) as u64).clamp(lo + 1, hi - 1);
    let sigma = (span * frac * (1.0 - frac)).sqrt();
    let radius = ((1.5 * sigma) / KEYS_PER_PAGE as f64).ceil() as u64;
    (estimate, radius.min(MAX_RADIUS_PAGES))
}

/// The keys `[start, end)` in the file pages within `radius` pages of the
/// page holding key `index`, clipped to `[min_start, max_end)`.
fn page_window(index: u64, radius: u64, min_start: u64, max_end: u64) -> (u64, u64) {
    let page = (HEADER_LEN + index * KEY_LEN) / PAGE;
    let first_byte = page.saturating_sub(radius) * PAGE;
    let end_byte = (page + radius + 1) * PAGE;
    let first = first_byte.saturating_sub(HEADER_LEN) / KEY_LEN;
    let end = (end_byte - HEADER_LEN) / KEY_LEN;
    (first.max(min_start), end.min(max_end))
}

fn read_header(file: &File, path: &Path) -> Result<Header> {
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len < HEADER_LEN + TRAILER_LEN {
        return Err(Error::corrupt(
            path,
            format!("file is {len} bytes, too short for header and trailer"),
        ));
    }
    let mut raw = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut raw, 0)
        .map_err(|e| Error::io(path, e))?;
    let header = Header::decode(&raw, path)?;
    let expected = header
        .count
        .checked_mul(KEY_LEN)
        .and_then(|body| body.checked_add(HEADER_LEN + TRAILER_LEN));
    if expected != Some(len) {
        return Err(Error::corrupt(
            path,
            format!(
                "file is {len} bytes but the header says {} keys",
                header.count
            ),
        ));
    }
    let mut trailer = [0u8; TRAILER_LEN as usize];
    file.read_exact_at(&mut trailer, len - TRAILER_LEN)
        .map_err(|e| Error::io(path, e))?;
    if u64::from_le_bytes(trailer) != xxh3_64(&raw) {
        return Err(Error::corrupt(path, "header checksum mismatch"));
    }
    if header.count == 0 {
        return Err(Error::corrupt(path, "empty run"));
    }
    Ok(header)
}

/// Sequential, chunked reader over a run's keys. Fails with `Corrupt` if the
/// keys are not strictly ascending or, once the last key has been read, if the
/// body checksum does not match the header.
pub(crate) struct RunReader<'a> {
    file: &'a File,
    path: &'a Path,
    count: u64,
    next_index: u64,
    buf: Vec<u8>,
    pos: usize,
    hasher: Xxh3Default,
    /// Checked after the last key; `None` once checked.
    expected_checksum: Option<u64>,
    prev: Option<Key>,
}

impl<'a> RunReader<'a> {
    fn new(file: &'a File, path: &'a Path, header: &Header) -> Self {
        Self {
            file,
            path,
            count: header.count,
            next_index: 0,
            buf: Vec::new(),
            pos: 0,
            hasher: Xxh3Default::new(),
            expected_checksum: Some(header.body_checksum),
            prev: None,
        }
    }

    pub(crate) fn next_key(&mut self) -> Result<Option<Key>> {
        if self.pos == self.buf.len() {
            if self.next_index == self.count {
                if let Some(expected) = self.expected_checksum.take()
                    && self.hasher.digest() != expected
                {
                    return Err(Error::corrupt(self.path, "body checksum mismatch"));
                }
                return Ok(None);
            }
            let n = (self.count - self.next_index).min(CHUNK_KEYS);
            self.buf.resize((n * KEY_LEN) as usize, 0);
            self.file
                .read_exact_at(&mut self.buf, HEADER_LEN + self.next_index * KEY_LEN)
                .map_err(|e| Error::io(self.path, e))?;
            self.hasher.update(&self.buf);
            self.next_index += n;
            self.pos = 0;
        }
        let key = key_at(&self.buf[self.pos..], 0);
        self.pos += KEY_LEN as usize;
        if self.prev.is_some_and(|prev| key <= prev) {
            return Err(Error::corrupt(self.path, "keys not strictly ascending"));
        }
        self.prev = Some(key);
        Ok(Some(key))
    }
}

/// Merges `inputs` into `writer` (dropping keys present in several inputs).
pub(crate) fn merge(
    inputs: &[Run],
    mut writer: RunWriter,
    seq: u64,
    first_ms: i64,
    last_ms: i64,
) -> Result<Run> {
    let mut readers: Vec<RunReader<'_>> = inputs.iter().map(Run::reader).collect();
    let mut heap = BinaryHeap::with_capacity(readers.len());
    for (i, reader) in readers.iter_mut().enumerate() {
        if let Some(key) = reader.next_key()? {
            heap.push(Reverse((key, i)));
        }
    }
    let mut last_written = None;
    while let Some(Reverse((key, i))) = heap.pop() {
        if last_written != Some(key) {
            writer.push(key)?;
            last_written = Some(key);
        }
        if let Some(next) = readers[i].next_key()? {
            heap.push(Reverse((next, i)));
        }
    }
    writer.finish(seq, first_ms, last_ms)
}
