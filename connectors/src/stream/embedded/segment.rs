//! Segment files: naming, framing, positional IO, the recovery scan and reads
//! of records from disk.
//!
//! A segment is a file named after the offset of its first record (its base
//! offset, zero-padded to 20 digits, `.seg`). It holds frames back to back:
//!
//! ```text
//! u32 LE payload length | u32 LE crc32 of (length, payload) | payload bytes
//! ```

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::stream::{Error, Offset, Record, Result};

/// Bytes in a frame header (length + crc).
pub(super) const FRAME_HEADER: usize = 8;

/// One sparse index entry every this many records of a segment.
pub(super) const INDEX_INTERVAL: u64 = 4096;

/// How much a disk read or scan fetches at a time.
const READ_CHUNK: usize = 256 * 1024;

/// The file extension of segments.
const SEGMENT_EXT: &str = "seg";

/// The file name of the segment whose first record has offset `base`.
pub(super) fn segment_file_name(base: Offset) -> String {
    format!("{base:020}.{SEGMENT_EXT}")
}

/// The base offset encoded in a segment file name, or `None` when the name is
/// not a segment's.
pub(super) fn parse_segment_file_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(SEGMENT_EXT)?.strip_suffix('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Wraps an [`io::Error`] with the path it happened on.
pub(super) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Appends one frame for `payload` to `buf`. The caller has checked that the
/// payload length fits in a u32.
/// crc32 of the length and the payload: covering the length means a zero-filled
/// tail (len 0, crc 0) never reads as a valid empty record.
pub(super) fn frame_crc(len: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

pub(super) fn put_frame(buf: &mut BytesMut, len: u32, payload: &[u8]) {
    buf.reserve(FRAME_HEADER + payload.len());
    buf.put_u32_le(len);
    buf.put_u32_le(frame_crc(len, payload));
    buf.put_slice(payload);
}

/// Reads exactly `buf.len()` bytes at `pos` without moving any file cursor
/// that matters (segments are only ever accessed positionally).
#[cfg(unix)]
pub(super) fn read_exact_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, pos)
}

/// Writes all of `buf` at `pos`.
#[cfg(unix)]
pub(super) fn write_all_at(file: &File, buf: &[u8], pos: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, pos)
}

#[cfg(windows)]
pub(super) fn read_exact_at(file: &File, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, pos) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => {
                buf = &mut buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(windows)]
pub(super) fn write_all_at(file: &File, mut buf: &[u8], mut pos: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_write(buf, pos) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                buf = &buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes the creation, rename or removal of entries in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
    Ok(())
}

/// Opens (creating it if needed) a segment file for positional reads and
/// writes.
pub(super) fn open_segment_file(path: &Path, create_new: bool) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create_new)
        .open(path)
        .map_err(io_error(path))
}

/// Why the frames of a segment stop before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Damage {
    /// Fewer than 8 bytes are left for a header.
    ShortHeader,
    /// The header announces more payload bytes than are left.
    ShortPayload { len: u32 },
    /// The payload does not match its crc.
    CrcMismatch,
}

/// What [`FrameReader::next_frame`] found.
pub(super) enum Next {
    Frame { payload: Bytes },
    End,
    Damaged { position: u64, damage: Damage },
}

/// Reads frames sequentially from a byte range of a segment in large chunks.
pub(super) struct FrameReader<'a> {
    file: &'a File,
    path: &'a Path,
    /// The bytes fetched last, starting at file position `buf_pos`.
    buf: Bytes,
    buf_pos: u64,
    /// The next unread byte within `buf`.
    cur: usize,
    /// One past the last byte that may be read.
    end: u64,
}

impl<'a> FrameReader<'a> {
    pub(super) fn new(file: &'a File, path: &'a Path, start: u64, end: u64) -> Self {
        Self {
            file,
            path,
            buf: Bytes::new(),
            buf_pos: start,
            cur: 0,
            end: end.max(start),
        }
    }

    /// The file position of the next frame.
    pub(super) fn position(&self) -> u64 {
        self.buf_pos + self.cur as u64
    }

    /// Makes sure `need` unread bytes are buffered; `false` when fewer than
    /// that are left before the end.
    fn fill(&mut self, need: usize) -> Result<bool> {
        if self.buf.len() - self.cur >= need {
            return Ok(true);
        }
        let pos = self.position();
        let remaining = self.end - pos;
        if need as u64 > remaining {
            return Ok(false);
        }
        // `remaining` may exceed usize on 32-bit targets; the chunk does not.
        let len = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(READ_CHUNK)
            .max(need);
        let mut chunk = vec![0u8; len];
        read_exact_at(self.file, &mut chunk, pos).map_err(io_error(self.path))?;
        self.buf = Bytes::from(chunk);
        self.buf_pos = pos;
        self.cur = 0;
        Ok(true)
    }

    /// The next frame, the clean end of the range, or where and how the
    /// frames stop making sense.
    pub(super) fn next_frame(&mut self) -> Result<Next> {
        let position = self.position();
        if position >= self.end {
            return Ok(Next::End);
        }
        if !self.fill(FRAME_HEADER)? {
            return Ok(Next::Damaged {
                position,
                damage: Damage::ShortHeader,
            });
        }
        let h = &self.buf[self.cur..self.cur + FRAME_HEADER];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let total = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(FRAME_HEADER));
        let Some(total) = total else {
            return Ok(Next::Damaged {
                position,
                damage: Damage::ShortPayload { len },
            });
        };
        if !self.fill(total)? {
            return Ok(Next::Damaged {
                position,
                damage: Damage::ShortPayload { len },
            });
        }
        let payload = self.buf.slice(self.cur + FRAME_HEADER..self.cur + total);
        if frame_crc(len, &payload) != crc {
            return Ok(Next::Damaged {
                position,
                damage: Damage::CrcMismatch,
            });
        }
        self.cur += total;
        Ok(Next::Frame { payload })
    }
}

/// The result of scanning a whole segment file on open.
#[derive(Debug)]
pub(super) struct Scan {
    /// Records in the valid prefix.
    pub records: u64,
    /// Bytes in the valid prefix.
    pub valid_len: u64,
    /// Bytes in the file.
    pub file_len: u64,
    /// Sparse index of the valid prefix (see [`INDEX_INTERVAL`]).
    pub index: Vec<(Offset, u64)>,
    /// Where and how the frames stop before the end of the file, if they do.
    pub damage: Option<(u64, Damage)>,
}

/// Reads every frame of a segment, checking crcs and building its sparse
/// index.
pub(super) fn scan(file: &File, path: &Path, base: Offset) -> Result<Scan> {
    let file_len = file.metadata().map_err(io_error(path))?.len();
    let mut reader = FrameReader::new(file, path, 0, file_len);
    let mut records = 0u64;
    let mut index = Vec::new();
    loop {
        let position = reader.position();
        match reader.next_frame()? {
            Next::Frame { .. } => {
                if records > 0 && records.is_multiple_of(INDEX_INTERVAL) {
                    index.push((base + records, position));
                }
                records += 1;
            }
            Next::End => {
                return Ok(Scan {
                    records,
                    valid_len: position,
                    file_len,
                    index,
                    damage: None,
                });
            }
            Next::Damaged { position, damage } => {
                return Ok(Scan {
                    records,
                    valid_len: position,
                    file_len,
                    index,
                    damage: Some((position, damage)),
                });
            }
        }
    }
}

/// The part of one segment a disk read covers.
pub(super) struct ReadSlice {
    pub path: PathBuf,
    pub file: Arc<File>,
    /// The offset of the record at `start_pos`.
    pub start_offset: Offset,
    pub start_pos: u64,
    /// One past the last durable record of the segment.
    pub end_offset: Offset,
    /// The durable byte length of the segment.
    pub size: u64,
}

/// Reads up to `max_records` records with offset >= `from` from consecutive
/// segment slices. Blocking: run it off the async runtime.
pub(super) fn read_slices(
    slices: &[ReadSlice],
    from: Offset,
    max_records: usize,
) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for slice in slices {
        let mut reader = FrameReader::new(&slice.file, &slice.path, slice.start_pos, slice.size);
        let mut offset = slice.start_offset;
        while offset < slice.end_offset && out.len() < max_records {
            match reader.next_frame()? {
                Next::Frame { payload } => {
                    if offset >= from {
                        out.push(Record { offset, payload });
                    }
                    offset += 1;
                }
                // Published metadata said there were more records here.
                Next::End => {
                    return Err(Error::Corrupt {
                        path: slice.path.clone(),
                        position: reader.position(),
                    });
                }
                Next::Damaged { position, .. } => {
                    return Err(Error::Corrupt {
                        path: slice.path.clone(),
                        position,
                    });
                }
            }
        }
        if out.len() >= max_records {
            break;
        }
    }
    Ok(out)
}
