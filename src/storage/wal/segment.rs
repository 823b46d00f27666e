//! WAL segment files: the codec of `format/wal.md` ("Segments").
//!
//! A segment is a file of fixed size, preallocated with zeros, named `<seq:020>.wal`. It starts with a 32-byte
//! header; frames ([`super::record`]) follow from offset 32 up to the first all-zero frame header.

use std::path::{Path, PathBuf};

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::record::{decode_frame, Frame};
use crate::storage::error::{CorruptionKind, StorageError};
use crate::storage::io::{OpenMode, VFile, Vfs};

/// Magic number at the start of every segment.
pub const SEGMENT_MAGIC: [u8; 4] = *b"SLTW";
/// The segment format version this build writes and reads.
pub const SEGMENT_VERSION: u32 = 2;
/// The oldest segment version this build reads (version 1 lacks record kind 5, `Seal`, and is otherwise
/// the same).
pub const MIN_SEGMENT_VERSION: u32 = 1;
/// Length of the segment header; the first frame starts here.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Smallest segment size accepted (64 KiB).
pub const MIN_SEGMENT_SIZE: u64 = 64 << 10;

/// The segment header as it lies on disk.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct SegmentHeader {
    /// `SLTW`.
    pub magic: [u8; 4],
    /// Format version.
    pub version: U32,
    /// Sequence number of the segment; equals the number in the file name.
    pub seq: U64,
    /// LSN the first record of this segment has (or would have).
    pub first_lsn: U64,
    /// Zero.
    pub reserved: U32,
    /// CRC32 of bytes 0..28.
    pub crc: U32,
}

impl SegmentHeader {
    /// A header for a new segment.
    pub fn new(seq: u64, first_lsn: u64) -> Self {
        let mut h = SegmentHeader {
            magic: SEGMENT_MAGIC,
            version: U32::new(SEGMENT_VERSION),
            seq: U64::new(seq),
            first_lsn: U64::new(first_lsn),
            reserved: U32::new(0),
            crc: U32::new(0),
        };
        h.crc = U32::new(crc32fast::hash(&h.as_bytes()[..28]));
        h
    }
}

/// The file name of segment `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

/// Parses a segment file name back to its sequence number.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checks a header read from `path`.
pub fn check_header(path: &Path, bytes: &[u8]) -> Result<SegmentHeader, StorageError> {
    let Ok((h, _)) = SegmentHeader::read_from_prefix(bytes) else {
        return Err(StorageError::corrupt(
            path,
            0,
            CorruptionKind::OutOfBounds("segment shorter than its header".into()),
        ));
    };
    if h.magic != SEGMENT_MAGIC {
        return Err(StorageError::corrupt(path, 0, CorruptionKind::BadMagic));
    }
    let got = crc32fast::hash(&h.as_bytes()[..28]);
    if got != h.crc.get() {
        return Err(StorageError::corrupt(path, 0, CorruptionKind::ChecksumMismatch { expected: h.crc.get(), got }));
    }
    if !(MIN_SEGMENT_VERSION..=SEGMENT_VERSION).contains(&h.version.get()) {
        return Err(StorageError::UnsupportedVersion {
            file: path.to_owned(),
            version: h.version.get(),
            supported: SEGMENT_VERSION,
        });
    }
    Ok(h)
}

/// How the frames of a scanned segment end.
#[derive(Debug, Clone, PartialEq)]
pub enum ScanEnd {
    /// An all-zero header at this offset (or the end of the file).
    Clean(u64),
    /// A frame that fails to decode at this offset: a torn write, or corruption.
    Bad(u64, CorruptionKind),
}

/// One frame found by [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    /// LSN of the record.
    pub lsn: u64,
    /// Kind byte.
    pub kind: u8,
    /// Payload start in the segment.
    pub start: usize,
    /// Payload length.
    pub len: usize,
}

/// A segment read into memory and framed.
pub struct Scan {
    /// The file.
    pub path: PathBuf,
    /// The segment's bytes.
    pub data: Vec<u8>,
    /// The header.
    pub header: SegmentHeader,
    /// The valid frames, in order.
    pub frames: Vec<FrameRef>,
    /// Where and how the frames end.
    pub end: ScanEnd,
    /// For a clean end: whether every byte after it is zero.
    pub zero_after_end: bool,
}

impl Scan {
    /// The payload of a frame.
    pub fn payload(&self, f: &FrameRef) -> &[u8] {
        &self.data[f.start..f.start + f.len]
    }
}

/// Reads a segment and frames it. Only an unreadable file or a bad header is an error; a bad frame ends the
/// scan and is reported in [`Scan::end`] for the caller to judge (torn tail or corruption).
pub fn scan(vfs: &dyn Vfs, path: &Path) -> Result<Scan, StorageError> {
    let file = vfs.open(path, OpenMode::Read).map_err(|e| StorageError::io("open", path, e))?;
    let data = file.read_all().map_err(|e| StorageError::io("read", path, e))?;
    let header = check_header(path, &data)?;
    let mut frames = Vec::new();
    let mut off = SEGMENT_HEADER_LEN;
    let end = loop {
        match decode_frame(&data, off) {
            Frame::Record { lsn, kind, payload, next } => {
                frames.push(FrameRef { lsn, kind, start: off + super::record::FRAME_HEADER_LEN, len: payload.len() });
                off = next;
            }
            Frame::End => break ScanEnd::Clean(off.min(data.len()) as u64),
            Frame::Bad(kind) => break ScanEnd::Bad(off as u64, kind),
        }
    };
    let zero_after_end = match end {
        ScanEnd::Clean(o) => data[o as usize..].iter().all(|&b| b == 0),
        ScanEnd::Bad(..) => false,
    };
    Ok(Scan { path: path.to_owned(), data, header, frames, end, zero_after_end })
}

/// An open segment being appended to.
pub struct SegmentWriter {
    file: Box<dyn VFile>,
    path: PathBuf,
    seq: u64,
    offset: u64,
    size: u64,
}

impl SegmentWriter {
    /// Creates segment `seq` of `size` bytes in `dir`, with its header, synced with its directory.
    pub fn create(vfs: &dyn Vfs, dir: &Path, seq: u64, first_lsn: u64, size: u64) -> Result<Self, StorageError> {
        let path = dir.join(segment_name(seq));
        // Allocated (zeros, blocks reserved) and synced with the directory, then the header, synced: a
        // segment whose header is not intact never held a record.
        vfs.create_allocated(&path, size).map_err(|e| StorageError::io("create", &path, e))?;
        let file = vfs.open(&path, OpenMode::ReadWrite).map_err(|e| StorageError::io("open", &path, e))?;
        file.write_all_at(SegmentHeader::new(seq, first_lsn).as_bytes(), 0)
            .map_err(|e| StorageError::io("write", &path, e))?;
        file.sync_data().map_err(|e| StorageError::io("fsync", &path, e))?;
        Ok(SegmentWriter { file, path, seq, offset: SEGMENT_HEADER_LEN as u64, size })
    }

    /// Reopens an existing segment to append at `offset`, first zeroing everything from `offset` to the end
    /// when `zero_tail` (a torn tail must never be read as records again) and syncing that.
    pub fn reopen(vfs: &dyn Vfs, path: &Path, seq: u64, offset: u64, zero_tail: bool) -> Result<Self, StorageError> {
        let file = vfs.open(path, OpenMode::ReadWrite).map_err(|e| StorageError::io("open", path, e))?;
        let size = file.len().map_err(|e| StorageError::io("stat", path, e))?;
        if zero_tail && offset < size {
            crate::storage::io::write_zeros(&*file, offset, size - offset)
                .map_err(|e| StorageError::io("write", path, e))?;
            file.sync_data().map_err(|e| StorageError::io("fsync", path, e))?;
        }
        Ok(SegmentWriter { file, path: path.to_owned(), seq, offset, size })
    }

    /// Bytes still free.
    pub fn remaining(&self) -> u64 {
        self.size - self.offset
    }

    /// Writes bytes at the current end (no sync).
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        debug_assert!(bytes.len() as u64 <= self.remaining());
        self.file.write_all_at(bytes, self.offset).map_err(|e| StorageError::io("write", &self.path, e))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// fdatasync.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.file.sync_data().map_err(|e| StorageError::io("fsync", &self.path, e))
    }

    /// Sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Current end offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_name(42), "00000000000000000042.wal");
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("42.wal"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.wal"), None);
    }

    #[test]
    fn header_checks() {
        let h = SegmentHeader::new(3, 100);
        let p = Path::new("x.wal");
        assert_eq!(check_header(p, h.as_bytes()).map(|h| h.first_lsn.get()).ok(), Some(100));
        let mut bad = h.as_bytes().to_vec();
        bad[9] ^= 1;
        assert!(matches!(
            check_header(p, &bad),
            Err(StorageError::Corruption { kind: CorruptionKind::ChecksumMismatch { .. }, .. })
        ));
        bad = h.as_bytes().to_vec();
        bad[0] = b'X';
        assert!(matches!(check_header(p, &bad), Err(StorageError::Corruption { kind: CorruptionKind::BadMagic, .. })));
        let with_version = |v: u32| {
            let mut h = SegmentHeader::new(3, 100);
            h.version = U32::new(v);
            h.crc = U32::new(crc32fast::hash(&h.as_bytes()[..28]));
            h
        };
        assert!(check_header(p, with_version(1).as_bytes()).is_ok(), "version 1 is still read");
        for v in [0, 3] {
            let r = check_header(p, with_version(v).as_bytes());
            assert!(matches!(r, Err(StorageError::UnsupportedVersion { version, .. }) if version == v), "{v}");
        }
    }
}
