//! Block files: immutable, compressed, column-oriented copies of head pages that left the head. Codec of
//! `format/block.md`.
//!
//! A block holds, per series, one or more *chunks*: the values of consecutive grid slots from a slot
//! boundary `start` (value `i` lies at nominal time `start + i*F + F/2`, as in a head page), NaN for gaps,
//! encoded by a [`Codec`], with the count, sum, minimum and maximum of its non-NaN values kept in the
//! chunk's descriptor so that stats over whole chunks need no decoding. Descriptors are sorted by series and
//! start and sit in an index at the end of the file, which is CRC-checked when the block is opened; each
//! chunk's bytes carry their own CRC, checked when the chunk is decoded.
//!
//! Blocks are written whole to a temporary name, synced and renamed into `blocks/` ([`write_block`]), then
//! mapped read-only ([`Block::open`]). Where two blocks hold the same slot of a series (only after a crash
//! between publishing a block and freeing its pages in the head, or a merge), the block with the higher
//! sequence number wins; the head wins over every block.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::codec::{self, Codec};
use crate::storage::error::{CorruptionKind, StorageError};
use crate::storage::io::{write_atomic, OpenMode, ReadRegion, VFile, Vfs};
use crate::storage::wal::payload::Cursor;
use crate::storage::SeriesId;

/// Magic number at the start of a block.
pub const BLOCK_MAGIC: [u8; 8] = *b"SILTBLK1";
/// Block format version.
pub const BLOCK_VERSION: u32 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 64;
/// Bytes of one chunk descriptor in the index.
pub const DESCRIPTOR_LEN: usize = 80;
/// Most values one chunk may hold (a year at one-second frequency).
pub const MAX_CHUNK_VALUES: u32 = 366 * 86_400;
/// The directory of block files in the data directory.
pub const BLOCK_DIR: &str = "blocks";

/// The file name of block `seq`.
pub fn block_name(seq: u64) -> String {
    format!("{seq:020}.blk")
}

/// The sequence number of a block file name, if it is one.
pub fn parse_block_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".blk")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// One chunk's descriptor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChunkMeta {
    /// The series.
    pub series: SeriesId,
    /// How the values are encoded.
    pub codec: Codec,
    /// Slot boundary of value 0.
    pub start: i64,
    /// Seconds between values.
    pub frequency: i64,
    /// Values, NaN included.
    pub count: u32,
    /// Non-NaN values.
    pub samples: u32,
    /// Offset of the encoded bytes in the file.
    pub offset: u64,
    /// Length of the encoded bytes.
    pub len: u32,
    /// CRC32 of the encoded bytes.
    pub crc: u32,
    /// Sum of the non-NaN values (0 if none).
    pub sum: f64,
    /// Minimum of the non-NaN values (+inf if none).
    pub min: f64,
    /// Maximum of the non-NaN values (-inf if none).
    pub max: f64,
}

impl ChunkMeta {
    /// One past the last slot's boundary: `start + count * frequency`.
    pub fn end(&self) -> i64 {
        self.start.saturating_add(i64::from(self.count).saturating_mul(self.frequency))
    }
}

/// Values of one series for a block: slot boundary of the first value, frequency, values (NaN = gap).
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkData {
    /// The series.
    pub series: SeriesId,
    /// Slot boundary of value 0.
    pub start: i64,
    /// Seconds between values.
    pub frequency: i64,
    /// The values.
    pub values: Vec<f64>,
}

/// The descriptor of chunk `c`, encoded as `bytes` with `codec`, at `offset` in its file.
fn chunk_meta(c: &ChunkData, codec: Codec, offset: u64, bytes: &[u8]) -> ChunkMeta {
    let (mut samples, mut sum, mut min, mut max) = (0u32, 0.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &v in c.values.iter().filter(|v| !v.is_nan()) {
        samples += 1;
        sum += v;
        min = min.min(v);
        max = max.max(v);
    }
    ChunkMeta {
        series: c.series,
        codec,
        start: c.start,
        frequency: c.frequency,
        count: c.values.len() as u32,
        samples,
        offset,
        len: bytes.len() as u32,
        crc: crc32fast::hash(bytes),
        sum,
        min,
        max,
    }
}

/// The index (descriptors) of `metas`, which starts at `index_offset`, and the header of the block it ends:
/// `(index, header)`.
fn index_and_header(metas: &[ChunkMeta], index_offset: u64) -> (Vec<u8>, Vec<u8>) {
    let mut out = Vec::with_capacity(metas.len() * DESCRIPTOR_LEN);
    let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
    for m in metas {
        min_time = min_time.min(m.start);
        max_time = max_time.max(m.end());
        out.extend_from_slice(&m.series.0.to_le_bytes());
        out.push(m.codec as u8);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&m.start.to_le_bytes());
        out.extend_from_slice(&m.frequency.to_le_bytes());
        out.extend_from_slice(&m.count.to_le_bytes());
        out.extend_from_slice(&m.samples.to_le_bytes());
        out.extend_from_slice(&m.offset.to_le_bytes());
        out.extend_from_slice(&m.len.to_le_bytes());
        out.extend_from_slice(&m.crc.to_le_bytes());
        out.extend_from_slice(&m.sum.to_bits().to_le_bytes());
        out.extend_from_slice(&m.min.to_bits().to_le_bytes());
        out.extend_from_slice(&m.max.to_bits().to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
    }
    let index_crc = crc32fast::hash(&out);
    if metas.is_empty() {
        (min_time, max_time) = (0, 0);
    }
    let file_len = index_offset + out.len() as u64;
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(&BLOCK_MAGIC);
    h.extend_from_slice(&BLOCK_VERSION.to_le_bytes());
    h.extend_from_slice(&(metas.len() as u32).to_le_bytes());
    h.extend_from_slice(&min_time.to_le_bytes());
    h.extend_from_slice(&max_time.to_le_bytes());
    h.extend_from_slice(&index_offset.to_le_bytes());
    h.extend_from_slice(&index_crc.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&file_len.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    (out, h)
}

/// Encodes a block from chunks (any order; sorted here) with `codec`. Chunks without values are dropped.
pub fn encode_block(chunks: Vec<ChunkData>, codec: Codec) -> Vec<u8> {
    encode_block_by(chunks, |_| codec)
}

/// [`encode_block`] with each chunk's codec chosen by `pick`.
pub fn encode_block_by(mut chunks: Vec<ChunkData>, pick: impl Fn(&ChunkData) -> Codec) -> Vec<u8> {
    chunks.retain(|c| !c.values.is_empty());
    chunks.sort_by_key(|c| (c.series, c.start));
    let mut out = vec![0u8; HEADER_LEN];
    let mut metas = Vec::with_capacity(chunks.len());
    for c in &chunks {
        let offset = out.len() as u64;
        let codec = pick(c);
        codec::encode(codec, &c.values, &mut out);
        metas.push(chunk_meta(c, codec, offset, &out[offset as usize..]));
    }
    let (index, header) = index_and_header(&metas, out.len() as u64);
    out.extend_from_slice(&index);
    out[..HEADER_LEN].copy_from_slice(&header);
    out
}

/// Writes a block chunk by chunk, so that a large one (a merge) is never whole in memory: the same bytes as
/// [`encode_block`] for the same chunks, made durable as [`write_block`] makes them (temporary name, fsync,
/// rename, fsync of the directory). Chunks must come sorted by series and start. On an error the
/// temporary file may remain; the caller removes it (`io::tmp_path` of the block's path).
pub struct BlockWriter {
    file: Box<dyn crate::storage::io::VFile>,
    path: PathBuf,
    /// Bytes written or buffered so far (the next chunk's offset).
    offset: u64,
    /// Bytes not yet written, which start at `offset - buf.len()`.
    buf: Vec<u8>,
    metas: Vec<ChunkMeta>,
}

impl BlockWriter {
    /// Bytes gathered before each write to the file.
    const FLUSH_BYTES: usize = 1 << 20;

    /// Starts block `seq` in `dir` under its temporary name (a stale one is replaced).
    pub fn create(vfs: &dyn Vfs, dir: &Path, seq: u64) -> Result<BlockWriter, StorageError> {
        let path = dir.join(block_name(seq));
        let tmp = crate::storage::io::tmp_path(&path);
        if vfs.exists(&tmp) {
            vfs.remove_file(&tmp).map_err(|e| StorageError::io("remove", &tmp, e))?;
        }
        let file = vfs
            .open(&tmp, crate::storage::io::OpenMode::CreateNew)
            .map_err(|e| StorageError::io("write block", &tmp, e))?;
        Ok(BlockWriter { file, path, offset: HEADER_LEN as u64, buf: vec![0u8; HEADER_LEN], metas: Vec::new() })
    }

    /// Appends chunk `c`, already encoded with `codec` as `encoded`. A chunk without values is skipped.
    pub fn push(&mut self, c: &ChunkData, codec: Codec, encoded: &[u8]) -> Result<(), StorageError> {
        if c.values.is_empty() {
            return Ok(());
        }
        debug_assert!(
            self.metas.last().is_none_or(|m| (m.series, m.start) < (c.series, c.start)),
            "chunks out of order"
        );
        self.metas.push(chunk_meta(c, codec, self.offset, encoded));
        self.buf.extend_from_slice(encoded);
        self.offset += encoded.len() as u64;
        if self.buf.len() >= Self::FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends a chunk copied unchanged from another block: `meta` is its descriptor there (all but the
    /// offset carry over) and `encoded` its bytes, already checked against `meta.crc`.
    pub fn push_copied(&mut self, meta: &ChunkMeta, encoded: &[u8]) -> Result<(), StorageError> {
        debug_assert!(
            self.metas.last().is_none_or(|m| (m.series, m.start) < (meta.series, meta.start)),
            "chunks out of order"
        );
        debug_assert_eq!(encoded.len(), meta.len as usize);
        self.metas.push(ChunkMeta { offset: self.offset, ..*meta });
        self.buf.extend_from_slice(encoded);
        self.offset += encoded.len() as u64;
        if self.buf.len() >= Self::FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        let at = self.offset - self.buf.len() as u64;
        let tmp = crate::storage::io::tmp_path(&self.path);
        self.file.write_all_at(&self.buf, at).map_err(|e| StorageError::io("write block", &tmp, e))?;
        self.buf.clear();
        Ok(())
    }

    /// Writes the index and the header, fsyncs, renames into place and fsyncs the directory; returns the
    /// block's path.
    pub fn finish(mut self, vfs: &dyn Vfs) -> Result<PathBuf, StorageError> {
        let (index, header) = index_and_header(&self.metas, self.offset);
        self.buf.extend_from_slice(&index);
        self.offset += index.len() as u64;
        self.flush()?;
        let tmp = crate::storage::io::tmp_path(&self.path);
        self.file.write_all_at(&header, 0).map_err(|e| StorageError::io("write block", &tmp, e))?;
        self.file.sync_data().map_err(|e| StorageError::io("write block", &tmp, e))?;
        drop(self.file);
        vfs.rename(&tmp, &self.path).map_err(|e| StorageError::io("write block", &tmp, e))?;
        if let Some(dir) = self.path.parent() {
            vfs.sync_dir(dir).map_err(|e| StorageError::io("write block", dir, e))?;
        }
        Ok(self.path)
    }
}

/// Writes block `seq` into `dir` atomically (temporary name, fsync, rename, fsync of `dir`); returns its path.
pub fn write_block(vfs: &dyn Vfs, dir: &Path, seq: u64, bytes: &[u8]) -> Result<PathBuf, StorageError> {
    let path = dir.join(block_name(seq));
    write_atomic(vfs, &path, bytes).map_err(|e| StorageError::io("write block", &path, e))?;
    Ok(path)
}

/// An open block file.
///
/// Only a directory of the block's series is kept in memory (8 bytes a series); the chunk descriptors stay
/// in the file and are read with `pread` when asked for ([`Block::chunks_of`], [`Block::chunks`]). A block
/// written early in a backfill holds a chunk per series and page, and the blocks waiting to be merged held
/// more than 100 MiB of decoded descriptors in the peer benchmark. The index is CRC-checked, and every
/// descriptor checked, when the block is opened; a descriptor read later is checked again for what could
/// make it unsafe to use (bounds, codec, order), not for its CRC.
pub struct Block {
    path: PathBuf,
    seq: u64,
    region: Arc<dyn ReadRegion>,
    /// The file, open for reading descriptors.
    file: Box<dyn VFile>,
    /// Each series the block holds, sorted, with the index of its first descriptor.
    series: Vec<(SeriesId, u32)>,
    /// Descriptors in the index.
    count: usize,
    index_offset: u64,
    /// Values (slots) in all chunks.
    values: u64,
    min_time: i64,
    max_time: i64,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block").field("path", &self.path).field("chunks", &self.count).finish()
    }
}

/// Descriptors read with one `pread` when a block's index is read in order (80 KiB).
const INDEX_BATCH: usize = 1024;

impl Block {
    /// Maps block `path` (sequence `seq`) and checks its header and index: magic, version, CRCs, and that
    /// every descriptor lies within the file, names a known codec and is in order. Chunk bytes are checked
    /// when decoded.
    ///
    /// The header and index are read with `pread`, a batch of descriptors at a time, not through the map:
    /// index pages read through the map would stay resident in the process for as long as the block.
    pub fn open(vfs: &dyn Vfs, path: &Path, seq: u64) -> Result<Block, StorageError> {
        let corrupt = |(offset, kind)| StorageError::Corruption { file: path.to_owned(), offset, kind };
        let file = vfs.open(path, OpenMode::Read).map_err(|e| StorageError::io("open", path, e))?;
        let len = file.len().map_err(|e| StorageError::io("stat", path, e))?;
        let mut header = vec![0u8; HEADER_LEN.min(len as usize)];
        file.read_exact_at(&mut header, 0).map_err(|e| StorageError::io("read block", path, e))?;
        let h = parse_header(&header, len).map_err(corrupt)?;
        let mut series: Vec<(SeriesId, u32)> = Vec::new();
        let mut values = 0u64;
        let read = |at: u64, buf: &mut [u8]| file.read_exact_at(buf, at);
        scan_index(&h, read, |i, c| {
            if series.last().is_none_or(|(s, _)| *s != c.series) {
                series.push((c.series, i as u32));
            }
            values += u64::from(c.count);
        })
        .map_err(|e| match e {
            ScanError::Io(e) => StorageError::io("read block", path, e),
            ScanError::Parse(p) => corrupt(p),
        })?;
        series.shrink_to_fit();
        let region = vfs.map_read(path).map_err(|e| StorageError::io("map block", path, e))?;
        if region.bytes().len() as u64 != len {
            let kind =
                CorruptionKind::OutOfBounds(format!("{len} bytes when read, {} when mapped", region.bytes().len()));
            return Err(StorageError::Corruption { file: path.to_owned(), offset: 0, kind });
        }
        Ok(Block {
            path: path.to_owned(),
            seq,
            region,
            file,
            series,
            count: h.count,
            index_offset: h.index_offset,
            values,
            min_time: h.min_time,
            max_time: h.max_time,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sequence number (higher = newer data where blocks overlap).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Every chunk, sorted by series and start, read from the file a batch at a time.
    pub fn chunks(&self) -> ChunkCursor<'_> {
        ChunkCursor { block: self, next: 0, buf: Vec::new(), pos: 0 }
    }

    /// How many chunks the block holds.
    pub fn chunk_count(&self) -> usize {
        self.count
    }

    /// Bytes of the file.
    pub fn size(&self) -> u64 {
        self.region.bytes().len() as u64
    }

    /// Smallest chunk start and largest chunk end (both 0 for an empty block).
    pub fn time_range(&self) -> (i64, i64) {
        (self.min_time, self.max_time)
    }

    /// Whether the block holds chunks of series `id` (no I/O).
    pub fn holds(&self, id: SeriesId) -> bool {
        self.series.binary_search_by_key(&id, |(s, _)| *s).is_ok()
    }

    /// The chunks of one series, sorted by start, read from the file.
    pub fn chunks_of(&self, id: SeriesId) -> Result<Vec<ChunkMeta>, StorageError> {
        let Some((lo, hi)) = self.descriptors_of(id) else { return Ok(Vec::new()) };
        let mut out = Vec::with_capacity(hi - lo);
        self.read_descriptors(lo, hi, &mut out)?;
        if out.iter().any(|c| c.series != id) {
            let kind = CorruptionKind::Invalid(format!("the index no longer holds series {} where it did", id.0));
            return Err(StorageError::Corruption { file: self.path.clone(), offset: self.descriptor_at(lo), kind });
        }
        Ok(out)
    }

    /// The indexes `lo..hi` of series `id`'s descriptors, from the directory (no I/O); `None` if the block
    /// does not hold the series.
    fn descriptors_of(&self, id: SeriesId) -> Option<(usize, usize)> {
        let k = self.series.binary_search_by_key(&id, |(s, _)| *s).ok()?;
        let lo = self.series[k].1 as usize;
        let hi = self.series.get(k + 1).map_or(self.count, |(_, first)| *first as usize);
        Some((lo, hi))
    }

    /// Where series `id`'s descriptors lie in the file, `(offset, len)`, from the directory (no I/O); `None`
    /// if the block does not hold the series.
    pub fn descriptor_bytes(&self, id: SeriesId) -> Option<(u64, u64)> {
        let (lo, hi) = self.descriptors_of(id)?;
        Some((self.descriptor_at(lo), ((hi - lo) * DESCRIPTOR_LEN) as u64))
    }

    /// Asks for bytes `offset..offset + len` of the file (descriptors, [`Block::descriptor_bytes`], or chunk
    /// bytes, [`ChunkMeta::offset`]) to be read from disk ahead of use, without waiting
    /// ([`ReadRegion::will_need`]). A query about to read many series asks for all of them first, so that
    /// their reads overlap.
    pub fn will_need(&self, offset: u64, len: u64) {
        self.region.will_need(offset as usize, len as usize);
    }

    /// Values per chunk, on average (0 for an empty block).
    pub fn mean_chunk_values(&self) -> usize {
        self.values.checked_div(self.count as u64).unwrap_or(0) as usize
    }

    /// Where descriptor `i` lies in the file.
    fn descriptor_at(&self, i: usize) -> u64 {
        self.index_offset + (i * DESCRIPTOR_LEN) as u64
    }

    /// Reads descriptors `lo..hi` into `out` (appended), checking each as [`Block::open`] did, bar the CRC of
    /// the whole index.
    fn read_descriptors(&self, lo: usize, hi: usize, out: &mut Vec<ChunkMeta>) -> Result<(), StorageError> {
        let mut bytes = vec![0u8; (hi - lo) * DESCRIPTOR_LEN];
        let at = self.descriptor_at(lo);
        self.file.read_exact_at(&mut bytes, at).map_err(|e| StorageError::io("read block", &self.path, e))?;
        for (k, d) in bytes.chunks_exact(DESCRIPTOR_LEN).enumerate() {
            let i = lo + k;
            let c = parse_descriptor(d, i, self.descriptor_at(i), self.index_offset)
                .map_err(|(offset, kind)| StorageError::Corruption { file: self.path.clone(), offset, kind })?;
            if let Some(prev) = out.last().filter(|_| k > 0) {
                if (prev.series, prev.start) >= (c.series, c.start) {
                    let kind = CorruptionKind::Invalid(format!("chunk {i} is out of order"));
                    return Err(StorageError::Corruption {
                        file: self.path.clone(),
                        offset: self.descriptor_at(i),
                        kind,
                    });
                }
            }
            out.push(c);
        }
        Ok(())
    }

    /// Decodes a chunk of this block into `out` (appended), after checking its CRC.
    pub fn decode(&self, c: &ChunkMeta, out: &mut Vec<f64>) -> Result<(), StorageError> {
        let bytes = self.region.bytes();
        let range = c.offset as usize..(c.offset as usize).saturating_add(c.len as usize);
        let Some(data) = bytes.get(range) else {
            let kind = CorruptionKind::OutOfBounds(format!("chunk of {} bytes past the end", c.len));
            return Err(StorageError::Corruption { file: self.path.clone(), offset: c.offset, kind });
        };
        self.decode_bytes(c, data, out)
    }

    /// [`Block::decode`], reading the chunk's bytes from `file` (this block's file, opened) into `buf`
    /// rather than through the map: a merge reads every chunk once, and pages read through the map would
    /// stay resident in the process until the block goes.
    pub fn decode_read(
        &self,
        file: &dyn crate::storage::io::VFile,
        c: &ChunkMeta,
        buf: &mut Vec<u8>,
        out: &mut Vec<f64>,
    ) -> Result<(), StorageError> {
        self.read_encoded(file, c, buf)?;
        let bad = |kind| StorageError::Corruption { file: self.path.clone(), offset: c.offset, kind };
        codec::decode(c.codec, buf, c.count as usize, out).map_err(|e| bad(CorruptionKind::Invalid(e.to_string())))
    }

    /// Reads chunk `c`'s encoded bytes from `file` (this block's file, opened) into `buf` (replaced), after
    /// checking them against its CRC: what a merge copies unchanged into a new block.
    pub fn read_encoded(
        &self,
        file: &dyn crate::storage::io::VFile,
        c: &ChunkMeta,
        buf: &mut Vec<u8>,
    ) -> Result<(), StorageError> {
        if c.offset.saturating_add(u64::from(c.len)) > self.size() {
            let kind = CorruptionKind::OutOfBounds(format!("chunk of {} bytes past the end", c.len));
            return Err(StorageError::Corruption { file: self.path.clone(), offset: c.offset, kind });
        }
        buf.resize(c.len as usize, 0);
        file.read_exact_at(buf, c.offset).map_err(|e| StorageError::io("read block", &self.path, e))?;
        let got = crc32fast::hash(buf);
        if got != c.crc {
            let kind = CorruptionKind::ChecksumMismatch { expected: c.crc, got };
            return Err(StorageError::Corruption { file: self.path.clone(), offset: c.offset, kind });
        }
        Ok(())
    }

    fn decode_bytes(&self, c: &ChunkMeta, data: &[u8], out: &mut Vec<f64>) -> Result<(), StorageError> {
        let bad = |kind| StorageError::Corruption { file: self.path.clone(), offset: c.offset, kind };
        let got = crc32fast::hash(data);
        if got != c.crc {
            return Err(bad(CorruptionKind::ChecksumMismatch { expected: c.crc, got }));
        }
        codec::decode(c.codec, data, c.count as usize, out).map_err(|e| bad(CorruptionKind::Invalid(e.to_string())))
    }
}

/// A block's chunks in order, read from its file a batch of descriptors at a time ([`Block::chunks`]).
pub struct ChunkCursor<'a> {
    block: &'a Block,
    /// The next descriptor to read.
    next: usize,
    buf: Vec<ChunkMeta>,
    /// The next chunk in `buf`.
    pos: usize,
}

impl ChunkCursor<'_> {
    /// The next chunk, without moving past it (`None` at the end).
    pub fn peek(&mut self) -> Result<Option<&ChunkMeta>, StorageError> {
        let end = self.block.count;
        if self.pos == self.buf.len() && self.next < end {
            let hi = (self.next + INDEX_BATCH).min(end);
            self.buf.clear();
            self.pos = 0;
            if let Err(e) = self.block.read_descriptors(self.next, hi, &mut self.buf) {
                self.buf.clear();
                self.next = end;
                return Err(e);
            }
            self.next = hi;
        }
        Ok(self.buf.get(self.pos))
    }

    /// Moves past the chunk [`ChunkCursor::peek`] returned.
    pub fn advance(&mut self) {
        self.pos = (self.pos + 1).min(self.buf.len());
    }
}

impl Iterator for ChunkCursor<'_> {
    type Item = Result<ChunkMeta, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.peek() {
            Err(e) => Some(Err(e)),
            Ok(None) => None,
            Ok(Some(&c)) => {
                self.advance();
                Some(Ok(c))
            }
        }
    }
}

type ParseError = (u64, CorruptionKind);

/// Parses and checks a block's header and index.
pub fn parse(bytes: &[u8]) -> Result<(Vec<ChunkMeta>, i64, i64), ParseError> {
    let h = parse_header(bytes, bytes.len() as u64)?;
    let mut chunks = Vec::with_capacity(h.count);
    let read = |at: u64, buf: &mut [u8]| {
        buf.copy_from_slice(&bytes[at as usize..at as usize + buf.len()]);
        Ok(())
    };
    scan_index(&h, read, |_, c| chunks.push(c)).map_err(|e| match e {
        ScanError::Parse(p) => p,
        ScanError::Io(e) => (h.index_offset, CorruptionKind::Invalid(e.to_string())),
    })?;
    Ok((chunks, h.min_time, h.max_time))
}

/// A block header's fields that reading its index needs.
struct BlockHeader {
    count: usize,
    min_time: i64,
    max_time: i64,
    index_offset: u64,
    index_crc: u32,
}

/// Checks a block's 64-byte header (magic, CRC, version, lengths) for a file of `file_len` bytes.
fn parse_header(header: &[u8], file_len: u64) -> Result<BlockHeader, ParseError> {
    if header.len() < HEADER_LEN || file_len < HEADER_LEN as u64 {
        return Err((0, CorruptionKind::OutOfBounds(format!("{file_len} bytes, less than a header"))));
    }
    let mut c = Cursor::new(&header[..HEADER_LEN]);
    if c.array::<8>().map_err(|k| (0u64, k))? != BLOCK_MAGIC {
        return Err((0, CorruptionKind::BadMagic));
    }
    let stored_crc = u32::from_le_bytes([header[60], header[61], header[62], header[63]]);
    let crc = crc32fast::hash(&header[..60]);
    if crc != stored_crc {
        return Err((60, CorruptionKind::ChecksumMismatch { expected: stored_crc, got: crc }));
    }
    parse_header_fields(&mut c, file_len)
}

/// The header's fields after the magic, `c` positioned there (the CRC already checked).
fn parse_header_fields(c: &mut Cursor<'_>, actual_len: u64) -> Result<BlockHeader, ParseError> {
    let at0 = |k: CorruptionKind| (0u64, k);
    let oob = |what: String| (0u64, CorruptionKind::OutOfBounds(what));
    let version = c.u32().map_err(at0)?;
    if version != BLOCK_VERSION {
        return Err((8, CorruptionKind::Invalid(format!("block version {version}"))));
    }
    let count = c.u32().map_err(at0)? as usize;
    let min_time = c.i64().map_err(at0)?;
    let max_time = c.i64().map_err(at0)?;
    let index_offset = c.u64().map_err(at0)?;
    let index_crc = c.u32().map_err(at0)?;
    let _ = c.u32().map_err(at0)?;
    let file_len = c.u64().map_err(at0)?;
    if file_len != actual_len {
        return Err((48, CorruptionKind::OutOfBounds(format!("header says {file_len} bytes, file has {actual_len}"))));
    }
    let index_len = count.checked_mul(DESCRIPTOR_LEN).ok_or_else(|| oob(format!("{count} chunks")))?;
    if index_offset < HEADER_LEN as u64 || index_offset.checked_add(index_len as u64) != Some(file_len) {
        return Err((32, CorruptionKind::OutOfBounds(format!("index of {count} chunks at {index_offset}"))));
    }
    Ok(BlockHeader { count, min_time, max_time, index_offset, index_crc })
}

/// Why an index could not be read.
enum ScanError {
    Io(std::io::Error),
    Parse(ParseError),
}

/// Reads a block's index (at `h.index_offset`, to the end of the file) with `read(offset, buf)`, a batch of
/// descriptors at a time, checks its CRC and every descriptor, and hands each, in order, to `each(i, c)`.
/// A damaged descriptor is reported only if the CRC matches (a CRC mismatch is the error otherwise), and
/// nothing after it is handed on.
fn scan_index(
    h: &BlockHeader,
    mut read: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>,
    mut each: impl FnMut(usize, ChunkMeta),
) -> Result<(), ScanError> {
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; h.count.min(INDEX_BATCH) * DESCRIPTOR_LEN];
    let mut damage: Option<ParseError> = None;
    let mut prev: Option<(SeriesId, i64)> = None;
    let mut i = 0;
    while i < h.count {
        let n = (h.count - i).min(INDEX_BATCH);
        let bytes = &mut buf[..n * DESCRIPTOR_LEN];
        let at = h.index_offset + (i * DESCRIPTOR_LEN) as u64;
        read(at, bytes).map_err(ScanError::Io)?;
        crc.update(bytes);
        for (k, d) in bytes.chunks_exact(DESCRIPTOR_LEN).enumerate() {
            if damage.is_some() {
                break;
            }
            let (j, at) = (i + k, at + (k * DESCRIPTOR_LEN) as u64);
            match parse_descriptor(d, j, at, h.index_offset) {
                Err(e) => damage = Some(e),
                Ok(c) if prev.is_some_and(|p| p >= (c.series, c.start)) => {
                    damage = Some((at, CorruptionKind::Invalid(format!("chunk {j} is out of order"))));
                }
                Ok(c) => {
                    prev = Some((c.series, c.start));
                    each(j, c);
                }
            }
        }
        i += n;
    }
    let got = crc.finalize();
    if got != h.index_crc {
        return Err(ScanError::Parse((
            h.index_offset,
            CorruptionKind::ChecksumMismatch { expected: h.index_crc, got },
        )));
    }
    damage.map_or(Ok(()), |d| Err(ScanError::Parse(d)))
}

/// Decodes and checks descriptor `i` (`DESCRIPTOR_LEN` bytes at file offset `at`) of an index starting at
/// `index_offset`.
fn parse_descriptor(d: &[u8], i: usize, at: u64, index_offset: u64) -> Result<ChunkMeta, ParseError> {
    let mut c = Cursor::new(d);
    let e = |k: CorruptionKind| (at, k);
    let series = SeriesId(c.u32().map_err(e)?);
    let codec_byte = c.u8().map_err(e)?;
    let _pad = c.array::<3>().map_err(e)?;
    let codec = Codec::from_u8(codec_byte)
        .ok_or_else(|| (at, CorruptionKind::Invalid(format!("unknown codec {codec_byte}"))))?;
    let start = c.i64().map_err(e)?;
    let frequency = c.i64().map_err(e)?;
    let count = c.u32().map_err(e)?;
    let samples = c.u32().map_err(e)?;
    let offset = c.u64().map_err(e)?;
    let len = c.u32().map_err(e)?;
    let crc = c.u32().map_err(e)?;
    let sum = f64::from_bits(c.u64().map_err(e)?);
    let min = f64::from_bits(c.u64().map_err(e)?);
    let max = f64::from_bits(c.u64().map_err(e)?);
    let _ = c.u64().map_err(e)?;
    let invalid = |what: String| (at, CorruptionKind::Invalid(what));
    if frequency < 1 || count == 0 || count > MAX_CHUNK_VALUES || samples > count {
        return Err(invalid(format!("chunk {i}: frequency {frequency}, {count} values, {samples} samples")));
    }
    if i64::from(count).checked_mul(frequency).and_then(|span| start.checked_add(span)).is_none() {
        return Err(invalid(format!("chunk {i}: start {start} overflows")));
    }
    if offset < HEADER_LEN as u64 || offset.saturating_add(u64::from(len)) > index_offset {
        return Err((at, CorruptionKind::OutOfBounds(format!("chunk {i}: {len} bytes at {offset}"))));
    }
    Ok(ChunkMeta { series, codec, start, frequency, count, samples, offset, len, crc, sum, min, max })
}

/// The published blocks, oldest sequence first. Replaced as a whole when a block is added or removed, so
/// readers hold a consistent snapshot.
pub type BlockList = Arc<Vec<Arc<Block>>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::io::sim::SimVfs;

    fn chunk(series: u32, start: i64, values: &[f64]) -> ChunkData {
        ChunkData { series: SeriesId(series), start, frequency: 10, values: values.to_vec() }
    }

    #[test]
    fn round_trip_with_stats_and_lookup() {
        let vfs = SimVfs::new();
        let dir = Path::new("/d");
        vfs.create_dir_all(dir).unwrap();
        let chunks = vec![chunk(3, 100, &[1.0, f64::NAN, 3.0]), chunk(1, 0, &[-0.0]), chunk(3, 0, &[5.0])];
        let bytes = encode_block(chunks, Codec::Raw);
        let path = write_block(&vfs, dir, 7, &bytes).unwrap();
        assert_eq!(path, dir.join("00000000000000000007.blk"));
        let b = Block::open(&vfs, &path, 7).unwrap();
        assert_eq!((b.chunk_count(), b.chunks().count()), (3, 3));
        assert_eq!(b.time_range(), (0, 130));
        let of3 = b.chunks_of(SeriesId(3)).unwrap();
        assert!(b.holds(SeriesId(3)) && !b.holds(SeriesId(2)));
        assert_eq!(of3.iter().map(|c| c.start).collect::<Vec<_>>(), vec![0, 100]);
        assert_eq!((of3[1].samples, of3[1].sum, of3[1].min, of3[1].max), (2, 4.0, 1.0, 3.0));
        let mut out = Vec::new();
        b.decode(&of3[1], &mut out).unwrap();
        assert_eq!(out[0], 1.0);
        assert!(out[1].is_nan());
        assert!(b.chunks_of(SeriesId(2)).unwrap().is_empty());
        let mut z = Vec::new();
        b.decode(&b.chunks_of(SeriesId(1)).unwrap()[0], &mut z).unwrap();
        assert!(z[0] == 0.0 && z[0].is_sign_negative());
    }

    #[test]
    fn a_block_written_chunk_by_chunk_has_the_bytes_of_one_encoded_whole() {
        let vfs = SimVfs::new();
        let dir = Path::new("/d");
        vfs.create_dir_all(dir).unwrap();
        // Enough bytes to pass the writer's flush size several times, and both compressed codecs.
        let long: Vec<f64> = (0..300_000u64).map(|i| ((i * 7919) % 1000) as f64 / 8.0).collect();
        let chunks = vec![
            chunk(1, 0, &long[..200_000]),
            chunk(1, 2_000_000, &[1.0, f64::NAN, 2.5]),
            chunk(2, 50, &[]),
            chunk(4, 10, &long[200_000..]),
        ];
        let pick = |c: &ChunkData| if c.values.len() > 10 { Codec::Pco } else { Codec::Gorilla };
        let whole = encode_block_by(chunks.clone(), pick);
        let mut w = BlockWriter::create(&vfs, dir, 9).unwrap();
        for c in &chunks {
            let mut bytes = Vec::new();
            codec::encode(pick(c), &c.values, &mut bytes);
            w.push(c, pick(c), &bytes).unwrap();
        }
        let path = w.finish(&vfs).unwrap();
        assert_eq!(path, dir.join(block_name(9)));
        let written = vfs.open(&path, crate::storage::io::OpenMode::Read).unwrap().read_all().unwrap();
        assert!(written == whole, "{} bytes written, {} encoded whole", written.len(), whole.len());
        assert!(!vfs.exists(&crate::storage::io::tmp_path(&path)));
        // Read back through the map and through a file handle alike.
        let b = Block::open(&vfs, &path, 9).unwrap();
        let metas: Vec<ChunkMeta> = b.chunks().collect::<Result<_, _>>().unwrap();
        assert_eq!(metas.iter().map(|c| c.codec).collect::<Vec<_>>(), [Codec::Pco, Codec::Gorilla, Codec::Pco]);
        let file = vfs.open(&path, crate::storage::io::OpenMode::Read).unwrap();
        let (mut a, mut r, mut buf) = (Vec::new(), Vec::new(), Vec::new());
        b.decode(&metas[2], &mut a).unwrap();
        b.decode_read(&*file, &metas[2], &mut buf, &mut r).unwrap();
        assert_eq!(a, long[200_000..]);
        assert_eq!(r, a);
        assert_eq!(b.mean_chunk_values(), (200_000 + 3 + 100_000) / 3);
    }

    #[test]
    fn descriptors_are_read_from_the_file_in_batches_and_series_by_series() {
        let vfs = SimVfs::new();
        let dir = Path::new("/d");
        vfs.create_dir_all(dir).unwrap();
        // More descriptors than one batch, with series of 1 to 3 chunks, some ids skipped.
        let mut chunks = Vec::new();
        for s in (0..1500u32).filter(|s| s % 7 != 3) {
            for k in 0..=(s % 3) {
                chunks.push(chunk(s, i64::from(k) * 1000, &[f64::from(s), f64::from(k)]));
            }
        }
        assert!(chunks.len() > 2 * INDEX_BATCH);
        let bytes = encode_block(chunks, Codec::Gorilla);
        let (parsed, _, _) = parse(&bytes).unwrap();
        let path = write_block(&vfs, dir, 3, &bytes).unwrap();
        let b = Block::open(&vfs, &path, 3).unwrap();
        assert_eq!(b.chunk_count(), parsed.len());
        let read: Vec<ChunkMeta> = b.chunks().collect::<Result<_, _>>().unwrap();
        assert_eq!(read, parsed);
        for s in 0..1501u32 {
            let want: Vec<ChunkMeta> = parsed.iter().filter(|c| c.series.0 == s).copied().collect();
            assert_eq!(b.chunks_of(SeriesId(s)).unwrap(), want, "series {s}");
            assert_eq!(b.holds(SeriesId(s)), !want.is_empty(), "series {s}");
        }
        // Peeking does not move the cursor; advancing does, across batches.
        let mut cur = b.chunks();
        for want in &parsed {
            assert_eq!(cur.peek().unwrap(), Some(want));
            assert_eq!(cur.peek().unwrap(), Some(want));
            cur.advance();
        }
        assert_eq!(cur.peek().unwrap(), None);
        assert_eq!(b.mean_chunk_values(), 2);
    }

    #[test]
    fn an_index_damaged_after_the_open_is_an_error_not_a_wrong_chunk() {
        let vfs = SimVfs::new();
        let dir = Path::new("/d");
        vfs.create_dir_all(dir).unwrap();
        let bytes = encode_block(vec![chunk(1, 0, &[1.0]), chunk(2, 0, &[2.0]), chunk(3, 0, &[3.0])], Codec::Raw);
        let path = write_block(&vfs, dir, 1, &bytes).unwrap();
        let b = Block::open(&vfs, &path, 1).unwrap();
        let (parsed, _, _) = parse(&bytes).unwrap();
        let index_offset = parsed.iter().map(|c| c.offset + u64::from(c.len)).max().unwrap();
        let file = vfs.open(&path, crate::storage::io::OpenMode::ReadWrite).unwrap();
        // Series 2's descriptor now names series 9; then chunk 3's codec byte becomes unknown.
        file.write_all_at(&9u32.to_le_bytes(), index_offset + DESCRIPTOR_LEN as u64).unwrap();
        assert!(matches!(b.chunks_of(SeriesId(2)), Err(StorageError::Corruption { .. })));
        file.write_all_at(&[200], index_offset + 2 * DESCRIPTOR_LEN as u64 + 4).unwrap();
        assert!(matches!(b.chunks_of(SeriesId(3)), Err(StorageError::Corruption { .. })));
        let all: Vec<_> = b.chunks().collect();
        assert!(all.iter().any(|c| c.is_err()), "{all:?}");
        assert_eq!(b.chunks_of(SeriesId(1)).unwrap(), parsed[..1]);
        // And reopened, the index CRC refuses the block.
        assert!(matches!(Block::open(&vfs, &path, 1), Err(StorageError::Corruption { .. })));
    }

    #[test]
    fn names() {
        assert_eq!(parse_block_name(&block_name(42)), Some(42));
        assert_eq!(parse_block_name("42.blk"), None);
        assert_eq!(parse_block_name("00000000000000000042.blk.tmp"), None);
    }

    #[test]
    fn every_flipped_bit_in_header_or_index_is_caught_at_open_and_in_data_at_decode() {
        let bytes = encode_block(vec![chunk(1, 0, &[1.0, 2.0]), chunk(2, 0, &[3.0])], Codec::Raw);
        let (chunks, _, _) = parse(&bytes).unwrap();
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            match parse(&b) {
                Err(_) => {}
                Ok((got, _, _)) => {
                    // Only a chunk's data bytes may change unnoticed by the index: its CRC catches it.
                    assert_eq!(got, chunks, "bit {bit} changed the index unnoticed");
                    let hit =
                        got.iter().find(|c| (c.offset * 8..(c.offset + u64::from(c.len)) * 8).contains(&(bit as u64)));
                    let c = hit.unwrap_or_else(|| panic!("bit {bit} outside any chunk went unnoticed"));
                    assert_ne!(crc32fast::hash(&b[c.offset as usize..(c.offset + u64::from(c.len)) as usize]), c.crc);
                }
            }
        }
    }

    #[test]
    fn truncations_are_errors() {
        let bytes = encode_block(vec![chunk(1, 0, &[1.0, 2.0])], Codec::Raw);
        for n in 0..bytes.len() {
            assert!(parse(&bytes[..n]).is_err(), "{n}");
        }
    }
}
