//! Head data files: the codec of `format/head.md`.
//!
//! A head file `head/<index:06>.pages` holds `pages_per_file` pages of `8 × page_slots` bytes (the data
//! directory's page size, from its manifest: 64 to 4096 bytes). Page 0 is the file header; pages 1.. hold
//! `page_slots` little-endian `f64` each and nothing else (descriptors live in the manifest).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::storage::error::{CorruptionKind, StorageError};
use crate::storage::io::{create_zeroed, MappedRegion, OpenMode, Vfs};

/// Values in a page of the largest class, and of every data directory made before page classes (manifest v1).
pub const MAX_PAGE_SLOTS: usize = 512;
/// Values in a page of the smallest class.
pub const MIN_PAGE_SLOTS: usize = 8;
/// Values in a page of a new data directory unless its options say otherwise.
pub const DEFAULT_PAGE_SLOTS: usize = 512;
/// A head file's length is a multiple of this (the memory-map granularity).
pub const FILE_ALIGN: usize = 4096;

/// Whether `page_slots` is a page class: a power of two in `MIN_PAGE_SLOTS..=MAX_PAGE_SLOTS`.
pub fn is_page_class(page_slots: u32) -> bool {
    let slots = page_slots as usize;
    slots.is_power_of_two() && (MIN_PAGE_SLOTS..=MAX_PAGE_SLOTS).contains(&slots)
}

/// Checks a page class: a power of two in `MIN_PAGE_SLOTS..=MAX_PAGE_SLOTS`, and `pages_per_file` pages of
/// it (at least 2) filling whole 4096-byte units. The error names what is wrong.
pub fn check_geometry(page_slots: u32, pages_per_file: u32) -> Result<(), String> {
    if !is_page_class(page_slots) {
        return Err(format!("page_slots {page_slots} is not a power of two from {MIN_PAGE_SLOTS} to {MAX_PAGE_SLOTS}"));
    }
    let slots = page_slots as usize;
    if pages_per_file < 2 {
        return Err(format!("pages_per_file {pages_per_file} is below 2"));
    }
    if !(u64::from(pages_per_file) * slots as u64 * 8).is_multiple_of(FILE_ALIGN as u64) {
        return Err(format!(
            "pages_per_file {pages_per_file} pages of {} bytes is not a multiple of {FILE_ALIGN} bytes",
            slots * 8
        ));
    }
    Ok(())
}

/// Magic number of a head file.
pub const HEAD_MAGIC: [u8; 4] = *b"SLTH";
/// Head file format version.
pub const HEAD_VERSION: u32 = 1;

/// The header at the start of page 0 of a head file.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct HeadFileHeader {
    /// `SLTH`.
    pub magic: [u8; 4],
    /// Format version.
    pub version: U32,
    /// Index of this file (the number in its name).
    pub index: U32,
    /// Bytes per page: `8 × page_slots`.
    pub page_bytes: U32,
    /// Pages in the file, the header page included.
    pub pages: U32,
    /// Zero.
    pub reserved: [u8; 8],
    /// CRC32 of bytes 0..28.
    pub crc: U32,
}

impl HeadFileHeader {
    /// A header for file `index` of `pages` pages of `page_bytes` bytes.
    pub fn new(index: u32, pages: u32, page_bytes: u32) -> Self {
        let mut h = HeadFileHeader {
            magic: HEAD_MAGIC,
            version: U32::new(HEAD_VERSION),
            index: U32::new(index),
            page_bytes: U32::new(page_bytes),
            pages: U32::new(pages),
            reserved: [0; 8],
            crc: U32::new(0),
        };
        h.crc = U32::new(crc32fast::hash(&h.as_bytes()[..28]));
        h
    }
}

/// The file name of head file `index`.
pub fn head_file_name(index: u32) -> String {
    format!("{index:06}.pages")
}

/// Checks a head file header against what the manifest expects.
pub fn check_header(path: &Path, bytes: &[u8], index: u32, pages: u32, page_bytes: u32) -> Result<(), StorageError> {
    let Ok((h, _)) = HeadFileHeader::read_from_prefix(bytes) else {
        return Err(StorageError::corrupt(path, 0, CorruptionKind::OutOfBounds("head file header".into())));
    };
    if h.magic != HEAD_MAGIC {
        return Err(StorageError::corrupt(path, 0, CorruptionKind::BadMagic));
    }
    let got = crc32fast::hash(&h.as_bytes()[..28]);
    if got != h.crc.get() {
        return Err(StorageError::corrupt(path, 0, CorruptionKind::ChecksumMismatch { expected: h.crc.get(), got }));
    }
    if h.version.get() != HEAD_VERSION {
        return Err(StorageError::UnsupportedVersion {
            file: path.to_owned(),
            version: h.version.get(),
            supported: HEAD_VERSION,
        });
    }
    if h.index.get() != index || h.pages.get() != pages || h.page_bytes.get() != page_bytes {
        return Err(StorageError::corrupt(
            path,
            8,
            CorruptionKind::Invalid(format!(
                "header says file {} of {} pages of {} bytes; expected file {index} of {pages} pages of {page_bytes}",
                h.index.get(),
                h.pages.get(),
                h.page_bytes.get()
            )),
        ));
    }
    Ok(())
}

/// Count, sum, minimum and maximum over the non-NaN values of one full page.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PageStats {
    /// The page's version when these were computed.
    pub version: u32,
    /// Non-NaN values.
    pub samples: u64,
    /// Their sum.
    pub sum: f64,
    /// Their minimum.
    pub min: f64,
    /// Their maximum.
    pub max: f64,
}

/// One mapped head file, the live lengths of its pages, and what readers know of its full pages.
pub struct HeadFile {
    region: Arc<dyn MappedRegion>,
    /// Values per page.
    slots: usize,
    lens: Box<[AtomicU32]>,
    /// Bumped by the writer whenever a page's existing values may change (an overwrite below its length, or
    /// the page changing owner), so cached stats of a full page are valid while the version is unchanged.
    versions: Box<[AtomicU32]>,
    /// One per page for pages of at least [`STATS_CACHE_MIN_SLOTS`] values, else empty: a smaller page is
    /// summed again faster than its 56 bytes of cache are worth (14 MiB for the peer benchmark's head).
    stats: Box<[parking_lot::Mutex<Option<PageStats>>]>,
    path: PathBuf,
}

/// Pages of at least this many values keep their stats once computed ([`HeadFile::cached_stats`]).
pub const STATS_CACHE_MIN_SLOTS: usize = 256;

impl HeadFile {
    /// Creates head file `index` with `pages` pages of `slots` values (zeroed, header written and synced) and
    /// maps it. The geometry must pass [`check_geometry`].
    pub fn create(vfs: &dyn Vfs, dir: &Path, index: u32, pages: u32, slots: usize) -> Result<HeadFile, StorageError> {
        let path = dir.join(head_file_name(index));
        let page_bytes = (slots * 8) as u32;
        let made = (|| {
            create_zeroed(vfs, &path, u64::from(pages) * u64::from(page_bytes))
                .map_err(|e| StorageError::io("create", &path, e))?;
            let file = vfs.open(&path, OpenMode::ReadWrite).map_err(|e| StorageError::io("open", &path, e))?;
            file.write_all_at(HeadFileHeader::new(index, pages, page_bytes).as_bytes(), 0)
                .map_err(|e| StorageError::io("write", &path, e))?;
            file.sync_data().map_err(|e| StorageError::io("fsync", &path, e))?;
            drop(file);
            Self::map(vfs, &path, pages, slots)
        })();
        if made.is_err() && vfs.exists(&path) {
            // Nothing refers to the file yet: remove what the failed attempt left (a full disk leaves an empty
            // or partly allocated file), so that the next attempt can create it anew.
            let _ = vfs.remove_file(&path);
        }
        made
    }

    /// Opens and maps an existing head file of `pages` pages of `slots` values after checking its header and
    /// size.
    pub fn open(vfs: &dyn Vfs, dir: &Path, index: u32, pages: u32, slots: usize) -> Result<HeadFile, StorageError> {
        let path = dir.join(head_file_name(index));
        let page_bytes = (slots * 8) as u32;
        let file = vfs.open(&path, OpenMode::Read).map_err(|e| StorageError::io("open", &path, e))?;
        let mut header = [0u8; 32];
        file.read_exact_at(&mut header, 0).map_err(|e| StorageError::io("read", &path, e))?;
        check_header(&path, &header, index, pages, page_bytes)?;
        let len = file.len().map_err(|e| StorageError::io("stat", &path, e))?;
        if len != u64::from(pages) * u64::from(page_bytes) {
            return Err(StorageError::corrupt(
                &path,
                len,
                CorruptionKind::OutOfBounds(format!(
                    "head file is {len} bytes, expected {pages} pages of {page_bytes} bytes"
                )),
            ));
        }
        drop(file);
        Self::map(vfs, &path, pages, slots)
    }

    fn map(vfs: &dyn Vfs, path: &Path, pages: u32, slots: usize) -> Result<HeadFile, StorageError> {
        let region = vfs.map(path).map_err(|e| StorageError::io("mmap", path, e))?;
        let lens = (0..pages).map(|_| AtomicU32::new(0)).collect();
        let versions = (0..pages).map(|_| AtomicU32::new(0)).collect();
        let cached = if slots >= STATS_CACHE_MIN_SLOTS { pages } else { 0 };
        let stats = (0..cached).map(|_| parking_lot::Mutex::new(None)).collect();
        Ok(HeadFile { region, slots, lens, versions, stats, path: path.to_owned() })
    }

    /// The value words of page `page` (1-based within the file; page 0 is the header).
    pub fn page(&self, page: u32) -> &[AtomicU64] {
        let start = page as usize * self.slots;
        &self.region.words()[start..start + self.slots]
    }

    /// Asks for bytes `offset..offset + len` of the file to be read from disk ahead of use, without waiting
    /// ([`MappedRegion::will_need`]).
    pub fn will_need(&self, offset: u64, len: u64) {
        self.region.will_need(offset as usize, len as usize);
    }

    /// The live length of page `page`.
    pub fn len(&self, page: u32) -> &AtomicU32 {
        &self.lens[page as usize]
    }

    /// The version of page `page` (see the field's doc).
    pub fn version(&self, page: u32) -> &AtomicU32 {
        &self.versions[page as usize]
    }

    /// Marks page `page`'s values as changed: cached stats of it are stale from now on. Writer only.
    pub fn bump_version(&self, page: u32) {
        let v = &self.versions[page as usize];
        v.store(v.load(Ordering::Relaxed).wrapping_add(1), Ordering::Release);
    }

    /// The cached stats of page `page`, if computed at its current version (never for pages of fewer than
    /// [`STATS_CACHE_MIN_SLOTS`] values).
    pub fn cached_stats(&self, page: u32) -> Option<PageStats> {
        let cache = self.stats.get(page as usize)?;
        let version = self.versions[page as usize].load(Ordering::Acquire);
        (*cache.lock()).filter(|s| s.version == version)
    }

    /// Caches stats computed at `stats.version`, unless the page changed meanwhile or its pages are too small
    /// to keep stats.
    pub fn cache_stats(&self, page: u32, stats: PageStats) {
        let Some(cache) = self.stats.get(page as usize) else { return };
        if self.versions[page as usize].load(Ordering::Acquire) == stats.version {
            *cache.lock() = Some(stats);
        }
    }

    /// msync.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.region.flush().map_err(|e| StorageError::io("msync", &self.path, e))
    }

    /// Lets go of the resident memory behind bytes `offset..offset + len` (multiples of 4096); the bytes
    /// stay in the file ([`MappedRegion::discard`]).
    pub fn discard(&self, offset: usize, len: usize) -> Result<(), StorageError> {
        self.region.discard(offset, len).map_err(|e| StorageError::io("madvise", &self.path, e))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Stores a value in a slot (little-endian bits, so the file is the same on every host).
#[inline]
pub fn store(slot: &AtomicU64, v: f64) {
    slot.store(v.to_bits().to_le(), Ordering::Relaxed);
}

/// Loads a value from a slot.
#[inline]
pub fn load(slot: &AtomicU64) -> f64 {
    f64::from_bits(u64::from_le(slot.load(Ordering::Relaxed)))
}
