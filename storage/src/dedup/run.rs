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
//! A lookup reads at most one stretch of [`FENCE_KEYS`] keys (4 KiB): the run keeps every
//! [`FENCE_KEYS`]-th key in memory (its fences, 16 bytes per 256 keys, half a bit per key),
//! and a search over them names the stretch that can hold the key, whatever the keys'
//! distribution. Keys are uniform hashes, so interpolation inside the stretch finds the key
//! in a 1 KiB window with one `pread`, nearly always; skewed keys take a second.

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
/// Every this many keys one is kept in memory as a fence: a lookup reads the keys between two
/// fences (4 KiB).
pub(crate) const FENCE_KEYS: u64 = 256;
const FENCE_WINDOW_BYTES: usize = (FENCE_KEYS * KEY_LEN) as usize;
/// Keys a lookup reads around the interpolated place of its key in a stretch (1 KiB).
const WINDOW_KEYS: usize = 64;
/// Keys per sequential read or write chunk (64 KiB).
const CHUNK_KEYS: u64 = 4096;

/// Memory the fences of a run of `keys` keys take.
pub(crate) fn fence_bytes(keys: u64) -> usize {
    keys.div_ceil(FENCE_KEYS) as usize * size_of::<Key>()
}

pub(crate) fn file_name(seq: u64) -> String {
    format!("run-{seq:016x}.dat")
}

/// Where a merge writes its run until the index installs it under [`file_name`].
pub(crate) fn merge_file_name(seq: u64) -> String {
    format!("merge-{seq:016x}.tmp")
}

/// Whether `name` is a merge's unfinished output (deleted when an index opens).
pub(crate) fn is_merge_file(name: &str) -> bool {
    name.starts_with("merge-") && name.ends_with(".tmp")
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
    fences: Vec<Key>,
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
            fences: Vec::new(),
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
        if self.count.is_multiple_of(FENCE_KEYS) {
            self.fences.push(key);
        }
        self.buf.extend_from_slice(&key.to_be_bytes());
        self.count += 1;
        if self.buf.len() >= (CHUNK_KEYS * KEY_LEN) as usize {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        // The chunk's keys go into the filter together, prefetching ahead.
        let (keys, _) = self.buf.as_chunks::<{ KEY_LEN as usize }>();
        self.bloom.insert_all(keys, |k| Key::from_be_bytes(*k));
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
                checksum: Some(body_checksum),
            },
            seq,
            path: self.path,
            file: self.file,
            min_key: self.min,
            max_key: max,
            body_checksum,
            bloom: self.bloom,
            fences: self.fences,
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
    /// Every [`FENCE_KEYS`]-th key, from the first.
    fences: Vec<Key>,
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
        if let Some(expected) = meta.checksum
            && expected != header.body_checksum
        {
            return Err(Error::corrupt(
                &path,
                format!(
                    "body checksum {:016x} is not the checkpoint state's {expected:016x}",
                    header.body_checksum
                ),
            ));
        }
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
        let mut fences = Vec::with_capacity(header.count.div_ceil(FENCE_KEYS) as usize);
        let mut reader = RunReader::new(&file, &path, header.count, header.body_checksum);
        let mut index = 0u64;
        let mut pending = Vec::with_capacity(CHUNK_KEYS as usize);
        while let Some(key) = reader.next_key()? {
            pending.push(key);
            if pending.len() == CHUNK_KEYS as usize {
                bloom.insert_all(&pending, |k| *k);
                pending.clear();
            }
            if index.is_multiple_of(FENCE_KEYS) {
                fences.push(key);
            }
            index += 1;
            min_key.get_or_insert(key);
            max_key = key;
        }
        bloom.insert_all(&pending, |k| *k);
        let min_key = min_key.ok_or_else(|| Error::corrupt(&path, "empty run"))?;
        Ok(Self {
            meta: RunMeta {
                checksum: Some(header.body_checksum),
                ..meta.clone()
            },
            seq,
            path,
            file,
            min_key,
            max_key,
            body_checksum: header.body_checksum,
            bloom,
            fences,
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
        RunReader::new(&self.file, &self.path, self.meta.keys, self.body_checksum)
    }

    /// The file as a merge reads it, on any thread, while the run stays in use.
    pub(crate) fn source(&self) -> Result<RunSource> {
        Ok(RunSource {
            file: self
                .file
                .try_clone()
                .map_err(|e| Error::io(&self.path, e))?,
            path: self.path.clone(),
            count: self.meta.keys,
            body_checksum: self.body_checksum,
        })
    }

    /// Memory of the fences.
    pub(crate) fn fence_bytes(&self) -> usize {
        self.fences.len() * size_of::<Key>()
    }

    /// Moves the file (a merge's output to its final name).
    pub(crate) fn rename(&mut self, to: PathBuf) -> Result<()> {
        std::fs::rename(&self.path, &to).map_err(|e| Error::io(&self.path, e))?;
        self.path = to;
        Ok(())
    }

    /// Whether `key` lies within the run's key range (no I/O).
    #[inline]
    pub(crate) fn in_range(&self, key: Key) -> bool {
        (self.min_key..=self.max_key).contains(&key)
    }

    /// Whether the run holds `key`; adds the `pread`s it took to `reads`. The fences name
    /// the stretch of at most [`FENCE_KEYS`] keys that can hold it (found by interpolation
    /// and a galloping search, a cache miss or two); the key's place in the stretch is
    /// interpolated too, and a window of [`WINDOW_KEYS`] keys around it read (1 KiB). Keys
    /// are uniform hashes, so the window nearly always brackets the key; when it does not,
    /// the rest of the stretch on that side is read.
    pub(crate) fn contains(&self, key: Key, reads: &mut u64) -> Result<bool> {
        if key < self.min_key || key > self.max_key {
            return Ok(false);
        }
        if key == self.min_key || key == self.max_key {
            return Ok(true);
        }
        let guess = interpolate(key, self.min_key, self.max_key, self.fences.len());
        let stretch = last_at_most(&self.fences, key, guess);
        let lo_key = self.fences[stretch];
        if lo_key == key {
            return Ok(true);
        }
        let start = stretch as u64 * FENCE_KEYS;
        let n = (self.meta.keys - start).min(FENCE_KEYS) as usize;
        // The stretch's keys lie in [lo_key, hi_key), or up to max_key (the last key) for
        // the last stretch.
        let (hi_key, hi_index) = match self.fences.get(stretch + 1) {
            Some(next) => (*next, n),
            None => (self.max_key, n - 1),
        };
        let at = interpolate(key, lo_key, hi_key, hi_index + 1);
        let first = at
            .saturating_sub(WINDOW_KEYS / 2)
            .min(n.saturating_sub(WINDOW_KEYS));
        let end = (first + WINDOW_KEYS).min(n);
        let mut buf = [0u8; FENCE_WINDOW_BYTES];
        let window = self.read_keys(&mut buf, start, first, end, reads)?;
        if first == 0 && key_at(window, 0) != lo_key {
            return Err(Error::corrupt(
                &self.path,
                "a key differs from its fence (file changed after it was opened?)",
            ));
        }
        let count = end - first;
        if key < key_at(window, 0) && first > 0 {
            let before = self.read_keys(&mut buf, start, 0, first, reads)?;
            return Ok(search(before, first, key));
        }
        if key > key_at(window, count - 1) && end < n {
            let after = self.read_keys(&mut buf, start, end, n, reads)?;
            return Ok(search(after, n - end, key));
        }
        Ok(search(window, count, key))
    }

    /// Reads keys `[first, end)` of the stretch beginning at key `start` into `buf`.
    fn read_keys<'b>(
        &self,
        buf: &'b mut [u8; FENCE_WINDOW_BYTES],
        start: u64,
        first: usize,
        end: usize,
        reads: &mut u64,
    ) -> Result<&'b [u8]> {
        let bytes = &mut buf[..(end - first) * KEY_LEN as usize];
        self.file
            .read_exact_at(bytes, HEADER_LEN + (start + first as u64) * KEY_LEN)
            .map_err(|e| Error::io(&self.path, e))?;
        *reads += 1;
        Ok(bytes)
    }
}

/// Whether the `n` sorted keys in `bytes` hold `key`.
fn search(bytes: &[u8], n: usize, key: Key) -> bool {
    let (mut a, mut b) = (0, n);
    while a < b {
        let mid = a + (b - a) / 2;
        match key_at(bytes, mid).cmp(&key) {
            std::cmp::Ordering::Less => a = mid + 1,
            std::cmp::Ordering::Greater => b = mid,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

/// The index in `0..n` that `key` would have among `n` keys spread evenly over
/// `[lo, hi]` (`lo <= key <= hi`).
fn interpolate(key: Key, lo: Key, hi: Key, n: usize) -> usize {
    if hi <= lo || n == 0 {
        return 0;
    }
    let frac = (key - lo) as f64 / (hi - lo) as f64;
    ((frac * n as f64) as usize).min(n - 1)
}

/// The last index whose fence is at most `key` (`fences[0] <= key`), searched outwards
/// from `guess` in doubling steps, then by bisection.
fn last_at_most(fences: &[Key], key: Key, guess: usize) -> usize {
    let n = fences.len();
    let guess = guess.min(n - 1);
    let (lo, hi) = if fences[guess] <= key {
        // Up: fences[lo] <= key; find hi with fences[hi] > key (or n).
        let (mut lo, mut step) = (guess, 1);
        loop {
            let next = lo + step;
            if next >= n {
                break (lo, n);
            }
            if fences[next] > key {
                break (lo, next);
            }
            lo = next;
            step *= 2;
        }
    } else {
        // Down: fences[hi] > key; find lo with fences[lo] <= key (fences[0] is).
        let (mut hi, mut step) = (guess, 1);
        loop {
            if hi <= step {
                break (0, hi);
            }
            let next = hi - step;
            if fences[next] <= key {
                break (next, hi);
            }
            hi = next;
            step *= 2;
        }
    };
    lo + fences[lo..hi].partition_point(|f| *f <= key) - 1
}

/// A run's file as a merge reads it: a handle of its own, so that the merge runs on any thread
/// while the index goes on using the run.
pub(crate) struct RunSource {
    file: File,
    path: PathBuf,
    count: u64,
    body_checksum: u64,
}

impl RunSource {
    fn reader(&self) -> RunReader<'_> {
        RunReader::new(&self.file, &self.path, self.count, self.body_checksum)
    }
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

/// The body checksum in the header of the run file at `path` (the header itself verified).
pub(crate) fn checksum_of(path: &Path) -> Result<u64> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(read_header(&file, path)?.body_checksum)
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
    fn new(file: &'a File, path: &'a Path, count: u64, body_checksum: u64) -> Self {
        Self {
            file,
            path,
            count,
            next_index: 0,
            buf: Vec::new(),
            pos: 0,
            hasher: Xxh3Default::new(),
            expected_checksum: Some(body_checksum),
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
    inputs: &[RunSource],
    mut writer: RunWriter,
    seq: u64,
    first_ms: i64,
    last_ms: i64,
) -> Result<Run> {
    let mut readers: Vec<RunReader<'_>> = inputs.iter().map(RunSource::reader).collect();
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
