//! The engine: recovery, the writer thread (group commit), checkpoints. Works on `SeriesId`s and bytes only.
//!
//! **Threads and locks.** One writer thread owns the [`Wal`] and the [`HeadWriter`]; every mutation reaches it
//! through one `crossbeam` channel, so the WAL order is the order in which the head changes, and replay
//! rebuilds exactly the same state. Callers encode WAL payloads on their own threads. The catalog (metric
//! and series names to ids) is shared under an `RwLock`; a new metric or series is given its id and its
//! definition is sent into the channel while that lock is held, so no record that uses an id can enter the
//! channel before the record that defines it.
//!
//! **Acknowledgement.** With [`Durability::Sync`] a batch is appended, the WAL is fsynced (once for all the
//! batches the writer found waiting: group commit), then the head is updated and the caller answered. With
//! `IntervalMs`/`None` the batch is written to the OS, applied and answered at once; the fsync follows within
//! the interval, or at the next checkpoint. The [`WriteAck`] says which applied.
//!
//! **Pause.** [`Engine::pause`] stops the writer thread between two groups, after every write logged so far is
//! applied, until its guard is dropped: a reader then sees the head exactly at one LSN (the stream engine's
//! live source replays from the store so).
//!
//! **Failure.** A failed WAL write or fsync makes the engine read-only ([`StorageError::PreviousIo`]): the
//! state of what that write covered is unknown, so it is never retried as if it were safe.
//!
//! **Checkpoint.** On the writer thread, after every write already logged is applied: seal the WAL segment
//! (fsync) and start the next, and take the head's state at that LSN. On the checkpointer thread, while the
//! writer goes on: msync the head files and write the manifest atomically. Back on the writer thread once
//! that is durable: release the pages freed before the checkpoint for reuse and remove the WAL segments the
//! manifest no longer needs. One checkpoint is in flight at a time; a request that arrives meanwhile gets
//! the next one. The final checkpoint on close runs wholly on the writer thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use parking_lot::{Mutex, RwLock};

use crate::storage::block::{parse_block_name, Block, BlockList, ChunkData, BLOCK_DIR};
use crate::storage::error::{CorruptionKind, StorageError};
use crate::storage::head::{Applied, Head, HeadState, HeadWriter, DEFAULT_PAGES_PER_FILE, MAX_FREQUENCY};
use crate::storage::io::{DirLock, Vfs};
use crate::storage::manifest::{Manifest, MetricEntry, SeriesEntry};
use crate::storage::wal::payload::{self, Payload, Sample, SeriesDef};
use crate::storage::wal::{ReplayReport, Wal};
use crate::storage::{Durability, Lsn, MetricConfig, SeriesId};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// When writes are acknowledged.
    pub durability: Durability,
    /// Bytes per WAL segment (at least 64 KiB).
    pub segment_size: u64,
    /// Pages per head file, the header page included (at least 2; with `page_slots`, whole 4096-byte units).
    /// Only for a new data directory: an existing one keeps what its manifest records.
    pub pages_per_file: u32,
    /// Values per head page: a power of two from 8 to 512. Only for a new data directory.
    pub page_slots: u32,
    /// Most series the database may hold (a cardinality limit; 0: no limit but the id space). A write that
    /// would define more is refused whole with [`StorageError::TooManySeries`].
    pub max_series: u32,
    /// Time between scheduled checkpoints; `None` checkpoints only on request and on close.
    pub checkpoint_interval: Option<Duration>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            durability: Durability::IntervalMs(100),
            segment_size: 64 << 20,
            pages_per_file: DEFAULT_PAGES_PER_FILE,
            page_slots: crate::storage::head::file::DEFAULT_PAGE_SLOTS as u32,
            max_series: 0,
            checkpoint_interval: Some(Duration::from_secs(300)),
        }
    }
}

/// How a write was acknowledged and what happened to its samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteAck {
    /// LSN of the batch's last WAL record (0 if nothing was logged).
    pub lsn: Lsn,
    /// The durability the acknowledgement was given under: `Sync` means the samples were fsynced first.
    pub durability: Durability,
    /// What happened to the samples.
    pub outcome: WriteOutcome,
}

/// Counts of what a write did with its samples. Nothing is dropped silently: every sample is in one count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Stored.
    pub stored: u64,
    /// Older than the series' oldest page (or a freed range): not stored.
    pub too_old: u64,
    /// For a metric that was never declared: not stored.
    pub unknown_metric: u64,
    /// Timestamp outside ±2^50 s: not stored.
    pub out_of_range: u64,
}

impl WriteOutcome {
    fn count(&mut self, a: Applied) {
        match a {
            Applied::Stored => self.stored += 1,
            Applied::TooOld => self.too_old += 1,
            Applied::OutOfRange => self.out_of_range += 1,
        }
    }
}

/// What recovery did when the engine opened.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecoveryReport {
    /// LSN of the checkpoint recovery started from.
    pub checkpoint_lsn: Lsn,
    /// What WAL replay found.
    pub replay: ReplayReport,
    /// Block files that could not be opened (damaged), with the error naming file and offset: left in
    /// place, left out of every query.
    pub damaged_blocks: Vec<String>,
}

/// What one compaction did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompactReport {
    /// Pages copied into the block and freed.
    pub pages: u64,
    /// Series with a chunk in the block.
    pub series: usize,
    /// The (last) block written, if any.
    pub block: Option<PathBuf>,
    /// Bytes of the blocks written.
    pub bytes: u64,
    /// Non-NaN values written.
    pub samples: u64,
}

/// The codec long chunks are written with: pco, chosen by measurement (`format/block.md`, "Values").
pub const BLOCK_CODEC: crate::storage::codec::Codec = crate::storage::codec::Codec::Pco;

/// Chunks of fewer values that a compaction or a tiered merge writes are Gorilla rather than pco: these
/// chunks are short-lived (the next merges make them long), and pco's cost per chunk makes it slow on short
/// ones (4–14 M values/s on 64-value chunks, ~21 M on 1,440; Gorilla ~200 M). It is also the chunk length
/// below which a block is one that [`MergePolicy::Settle`] merges.
pub const PCO_MIN_VALUES: usize = 512;

/// Chunks of fewer values that a settle merge writes are Gorilla rather than pco: below it pco's headers
/// outweigh what it saves. Settled chunks are the ones that stay: a live cluster's last hours, whose hourly
/// compactions write about 60 values a series. Measured on the peer benchmark's series (`format/block.md`,
/// "Compaction"), bytes per value at 8 values Gorilla 6.6, pco 7.5; at 16, 6.3 against 3.6; at 64, 6.1
/// against 2.0: Gorilla gains nothing from decimal fractions, which most metrics are.
pub const SETTLED_PCO_MIN_VALUES: usize = 16;

/// The codec a chunk of `len` values is written with: by a settle merge (`settled`), whose chunks stay, or
/// by a compaction or another merge, whose short chunks are soon merged again.
pub fn codec_for(len: usize, settled: bool) -> crate::storage::codec::Codec {
    let min = if settled { SETTLED_PCO_MIN_VALUES } else { PCO_MIN_VALUES };
    if len >= min {
        BLOCK_CODEC
    } else {
        crate::storage::codec::Codec::Gorilla
    }
}

/// Counters of the engine (monotonic).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Samples stored.
    pub samples_stored: AtomicU64,
    /// Samples refused as too old.
    pub samples_too_old: AtomicU64,
    /// Samples refused for an unknown metric.
    pub samples_unknown_metric: AtomicU64,
    /// WAL fsyncs.
    pub wal_syncs: AtomicU64,
    /// Checkpoints completed.
    pub checkpoints: AtomicU64,
    /// Bytes appended to the WAL (framed: headers and padding included).
    pub wal_bytes: AtomicU64,
    /// WAL fsyncs by latency: `wal_sync_buckets[i]` counts those that took at most
    /// [`WAL_SYNC_BUCKETS_US`]`[i]` µs and more than the bound before it; the last slot counts the rest.
    pub wal_sync_buckets: [AtomicU64; WAL_SYNC_BUCKETS_US.len() + 1],
    /// Total time spent in WAL fsyncs, in nanoseconds.
    pub wal_sync_nanos: AtomicU64,
    /// When the last checkpoint completed (or the engine opened, before the first), in unix milliseconds; while
    /// nothing was logged since it, when a timed checkpoint last found it current.
    pub last_checkpoint_unix_ms: AtomicU64,
    /// Head pages compacted into blocks.
    pub pages_compacted: AtomicU64,
    /// Blocks written by compaction.
    pub blocks_written: AtomicU64,
    /// Bytes of the blocks written by compaction.
    pub block_bytes_written: AtomicU64,
    /// Chunks merges copied unchanged (no other chunk of their series touched them).
    pub merge_chunks_copied: AtomicU64,
    /// Chunks merges wrote anew (merged from several, or re-encoded).
    pub merge_chunks_encoded: AtomicU64,
    /// Batches of series (up to 256) whose reads a query asked for at once, having found their data not in
    /// the page cache (`query::source::Ahead`).
    pub query_reads_ahead: AtomicU64,
}

/// Which runs of adjacent blocks [`Engine::merge_blocks_with`] merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergePolicy {
    /// At least [`MERGE_MIN_BLOCKS`] small blocks, whatever their sizes.
    Small,
    /// At least [`MERGE_MIN_BLOCKS`] small blocks of one size tier (sizes within a factor of 4: below 1 MiB,
    /// 1–3 MiB, 4–15 MiB, …), so that while blocks keep coming each value is rewritten about once per tier
    /// rather than once per merge.
    Tiered,
    /// At least 2 blocks of short chunks (fewer than [`PCO_MIN_VALUES`] values on average), whatever their
    /// sizes, together at most `target`: once pages stop leaving the head, the short chunks compactions
    /// wrote are merged into long ones, and written with pco from [`SETTLED_PCO_MIN_VALUES`] on.
    Settle,
}

/// The size tier of a block of `bytes` (see [`MergePolicy::Tiered`]).
fn size_tier(bytes: u64) -> u32 {
    (64 - (bytes >> 20).leading_zeros()).div_ceil(2)
}

/// Most head values (slots) one compaction copies into one block: larger compactions are split into blocks of
/// about this many (16 MiB of values), so the copy held in memory stays bounded.
pub const COMPACT_BATCH_VALUES: usize = 2 << 20;

/// Fewest adjacent small blocks worth merging.
pub const MERGE_MIN_BLOCKS: usize = 4;

impl Engine {
    /// Merges the oldest run of at least [`MERGE_MIN_BLOCKS`] adjacent blocks (by sequence number) that are
    /// each under half of `target` bytes and together at most `target`, into one block. Returns how many
    /// blocks went away (0: nothing to merge). Same as [`Engine::merge_blocks_with`] with
    /// [`MergePolicy::Small`].
    ///
    /// The merged block takes the name (and so the precedence) of the newest block of the run, which it
    /// replaces by a rename; the older ones are removed after that rename is durable. Only a run with no
    /// other block between its members is merged, so no block's precedence over another changes. A crash at
    /// any point leaves either the inputs, or the merged block beside some inputs whose every slot it holds
    /// with the newest value: the same answers either way. Extra disk during a merge: at most `target`
    /// bytes. Series are merged in parallel (`rayon`).
    pub fn merge_blocks(&self, target: u64) -> Result<usize, StorageError> {
        self.merge_blocks_with(target, MergePolicy::Small)
    }

    /// Merges the oldest run of adjacent blocks that `policy` picks (each under half of `target` bytes,
    /// together at most `target`) into one block, as [`Engine::merge_blocks`] describes. Returns how many
    /// blocks went away (0: nothing to merge).
    pub fn merge_blocks_with(&self, target: u64, policy: MergePolicy) -> Result<usize, StorageError> {
        let _one = self.shared.compaction.lock();
        let list = self.blocks();
        let (min, tiered) = match policy {
            MergePolicy::Small => (MERGE_MIN_BLOCKS, false),
            MergePolicy::Tiered => (MERGE_MIN_BLOCKS, true),
            MergePolicy::Settle => (2, false),
        };
        let mut run: Vec<Arc<Block>> = Vec::new();
        let mut total = 0u64;
        for b in list.iter() {
            let small = match policy {
                MergePolicy::Settle => b.mean_chunk_values() < PCO_MIN_VALUES,
                _ => b.size() < target / 2,
            };
            let same_tier = !tiered || run.first().is_none_or(|f| size_tier(f.size()) == size_tier(b.size()));
            if small && same_tier && total + b.size() <= target {
                total += b.size();
                run.push(b.clone());
                continue;
            }
            if run.len() >= min {
                break;
            }
            run.clear();
            total = 0;
            if small {
                total = b.size();
                run.push(b.clone());
            }
        }
        if run.len() < min {
            return Ok(0);
        }
        let newest = run.iter().map(|b| b.seq()).max().unwrap_or(0);
        let dir = self.dir.join(BLOCK_DIR);
        let settled = policy == MergePolicy::Settle;
        let block = write_merged(&*self.vfs, &self.shared.stats, &run, &dir, newest, settled)
            .and_then(|path| Block::open(&*self.vfs, &path, newest))
            .inspect_err(|_| {
                let tmp = crate::storage::io::tmp_path(&dir.join(crate::storage::block::block_name(newest)));
                let _ = self.vfs.remove_file(&tmp);
            })?;
        let gone: Vec<u64> = run.iter().map(|b| b.seq()).filter(|&s| s != newest).collect();
        {
            let mut l = self.shared.blocks.write();
            let mut next: Vec<Arc<Block>> =
                l.iter().filter(|b| !run.iter().any(|r| r.seq() == b.seq())).cloned().collect();
            next.push(Arc::new(block));
            next.sort_by_key(|b| b.seq());
            *l = Arc::new(next);
        }
        for seq in &gone {
            let path = dir.join(crate::storage::block::block_name(*seq));
            self.vfs.remove_file(&path).map_err(|e| StorageError::io("remove block", &path, e))?;
        }
        self.vfs.sync_dir(&dir).map_err(|e| StorageError::io("fsync dir", &dir, e))?;
        Ok(gone.len())
    }

    /// The blocks whose every slot lies before `before` (their `max_time` is at most `before`), oldest first:
    /// candidates for long-term retention.
    pub fn blocks_before(&self, before: i64) -> Vec<Arc<Block>> {
        self.blocks().iter().filter(|b| b.time_range().1 <= before).cloned().collect()
    }

    /// Removes blocks (by sequence number) from the published list and deletes their files, then syncs the
    /// directory. Readers holding a block keep reading it until they drop it.
    pub fn remove_blocks(&self, seqs: &[u64]) -> Result<(), StorageError> {
        let _one = self.shared.compaction.lock();
        {
            let mut l = self.shared.blocks.write();
            let next: Vec<Arc<Block>> = l.iter().filter(|b| !seqs.contains(&b.seq())).cloned().collect();
            *l = Arc::new(next);
        }
        let dir = self.dir.join(BLOCK_DIR);
        for seq in seqs {
            let path = dir.join(crate::storage::block::block_name(*seq));
            if self.vfs.exists(&path) {
                self.vfs.remove_file(&path).map_err(|e| StorageError::io("remove block", &path, e))?;
            }
        }
        self.vfs.sync_dir(&dir).map_err(|e| StorageError::io("fsync dir", &dir, e))
    }

    /// After a failed block write: removes what it may have left (the temporary file, or the block if the
    /// rename happened but the directory sync failed) and syncs the directory. If that fails too, a block
    /// may still become durable later, after its pages were freed or rewritten: the engine turns read-only,
    /// as after a failed WAL fsync (the fsync is never retried as if the data were safe).
    fn abandon_block(&self, dir: &Path, seq: u64, e: StorageError) -> StorageError {
        let path = dir.join(crate::storage::block::block_name(seq));
        let tmp = crate::storage::io::tmp_path(&path);
        let mut clean = true;
        for p in [&tmp, &path] {
            if self.vfs.exists(p) && self.vfs.remove_file(p).is_err() {
                clean = false;
            }
        }
        if !clean || self.vfs.sync_dir(dir).is_err() {
            let mut f = self.shared.failed.lock();
            if f.is_none() {
                *f = Some(format!("compaction: {e}"));
                tracing::error!(error = %e, "block write failed and could not be undone; the database is read-only");
            }
        }
        e
    }
}

/// Most decoded values a merge holds at once: series are merged and encoded in groups of about this many
/// (8 MiB of values), written out before the next group.
const MERGE_GROUP_VALUES: usize = 1 << 20;

/// Writes the merge of `run` (oldest block first) as block `seq` in `dir`, group of series by group of
/// series ([`MERGE_GROUP_VALUES`]), each group merged and encoded in parallel (`rayon`); returns its path.
fn write_merged(
    vfs: &dyn Vfs,
    stats: &EngineStats,
    run: &[Arc<Block>],
    dir: &Path,
    seq: u64,
    settled: bool,
) -> Result<PathBuf, StorageError> {
    use rayon::prelude::*;
    type Chunks = Vec<(usize, crate::storage::block::ChunkMeta)>;
    let files = run
        .iter()
        .map(|b| {
            vfs.open(b.path(), crate::storage::io::OpenMode::Read).map_err(|e| StorageError::io("open", b.path(), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut writer = crate::storage::block::BlockWriter::create(vfs, dir, seq)?;
    // Each block's chunks are sorted by series: walk them all with one cursor per block (which reads the
    // descriptors from the file a batch at a time), series by series, a group of about MERGE_GROUP_VALUES
    // values at a time, so only one group's descriptors are held.
    let mut cursors: Vec<_> = run.iter().map(|b| b.chunks()).collect();
    loop {
        let mut group: Vec<(SeriesId, Chunks)> = Vec::new();
        let mut values = 0usize;
        while group.is_empty() || values < MERGE_GROUP_VALUES {
            let mut next = None;
            for cursor in &mut cursors {
                if let Some(c) = cursor.peek()? {
                    next = Some(next.map_or(c.series, |n: SeriesId| n.min(c.series)));
                }
            }
            let Some(series) = next else { break };
            let mut chunks: Chunks = Vec::new();
            for (i, cursor) in cursors.iter_mut().enumerate() {
                while let Some(&c) = cursor.peek()?.filter(|c| c.series == series) {
                    chunks.push((i, c));
                    cursor.advance();
                }
            }
            values += series_values(&chunks);
            group.push((series, chunks));
        }
        if group.is_empty() {
            break;
        }
        let merged: Vec<Result<Vec<Merged>, StorageError>> = group
            .par_iter()
            .map(|(series, chunks)| merge_series(run, &files, *series, chunks.clone(), settled))
            .collect();
        for series in merged {
            for chunk in series? {
                let counter = match chunk {
                    Merged::Encoded(c, codec, bytes) => {
                        writer.push(&c, codec, &bytes)?;
                        &stats.merge_chunks_encoded
                    }
                    Merged::Copied(meta, bytes) => {
                        writer.push_copied(&meta, &bytes)?;
                        &stats.merge_chunks_copied
                    }
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    writer.finish(vfs)
}

/// Values (slots) in a series' chunks.
fn series_values(chunks: &[(usize, crate::storage::block::ChunkMeta)]) -> usize {
    chunks.iter().map(|(_, c)| c.count as usize).sum()
}

/// One chunk of a merged block.
enum Merged {
    /// Merged from several chunks (or re-encoded), with its codec and bytes.
    Encoded(ChunkData, crate::storage::codec::Codec, Vec<u8>),
    /// A chunk that touches no other, copied with its descriptor (offset aside) and bytes unchanged.
    Copied(crate::storage::block::ChunkMeta, Vec<u8>),
}

impl Merged {
    fn start(&self) -> i64 {
        match self {
            Merged::Encoded(c, ..) => c.start,
            Merged::Copied(m, _) => m.start,
        }
    }
}

/// The chunks of one series from the blocks of `run` (oldest block first) merged: chunks that overlap or
/// touch become one, slot by slot with the newer block's values (NaN included) over the older's, and are
/// encoded anew ([`codec_for`], `settled` for a settle merge). A chunk that touches no other and is pco or
/// already has the codec its length calls for is copied unchanged, without decoding: merging blocks of
/// different series, or of times apart, costs a read and a write. Sorted by start.
fn merge_series(
    run: &[Arc<Block>],
    files: &[Box<dyn crate::storage::io::VFile>],
    series: SeriesId,
    mut chunks: Vec<(usize, crate::storage::block::ChunkMeta)>,
    settled: bool,
) -> Result<Vec<Merged>, StorageError> {
    // Group chunks that overlap or touch (same frequency), in start order.
    chunks.sort_by_key(|(i, c)| (c.frequency, c.start, *i));
    let mut out: Vec<Merged> = Vec::new();
    let mut group: Vec<(usize, crate::storage::block::ChunkMeta)> = Vec::new();
    let flush = |group: &mut Vec<(usize, crate::storage::block::ChunkMeta)>, out: &mut Vec<Merged>| {
        let (mut tmp, mut buf) = (Vec::new(), Vec::new());
        match group.as_slice() {
            [] => return Ok(()),
            [(i, c)] if c.codec == BLOCK_CODEC || c.codec == codec_for(c.count as usize, settled) => {
                run[*i].read_encoded(&*files[*i], c, &mut buf)?;
                out.push(Merged::Copied(*c, buf));
                group.clear();
                return Ok(());
            }
            _ => {}
        }
        let f = group[0].1.frequency;
        let start = group.iter().map(|(_, c)| c.start).min().unwrap_or(0);
        let end = group.iter().map(|(_, c)| c.end()).max().unwrap_or(start);
        let mut values = vec![f64::NAN; ((end - start) / f) as usize];
        group.sort_by_key(|(i, _)| *i); // older blocks first, newer overwrite
        for (i, c) in group.iter() {
            tmp.clear();
            run[*i].decode_read(&*files[*i], c, &mut buf, &mut tmp)?;
            let off = ((c.start - start) / f) as usize;
            values[off..off + tmp.len()].copy_from_slice(&tmp);
        }
        while values.last().is_some_and(|v| v.is_nan()) {
            values.pop();
        }
        let codec = codec_for(values.len(), settled);
        let mut bytes = Vec::new();
        crate::storage::codec::encode(codec, &values, &mut bytes);
        out.push(Merged::Encoded(ChunkData { series, start, frequency: f, values }, codec, bytes));
        group.clear();
        Ok::<(), StorageError>(())
    };
    for (i, c) in chunks {
        let joins = group.last().is_some_and(|(_, g)| {
            g.frequency == c.frequency
                && c.start <= group.iter().map(|(_, x)| x.end()).max().unwrap_or(g.end())
                && (c.start - g.start) % c.frequency == 0
        });
        if !joins {
            flush(&mut group, &mut out)?;
        }
        group.push((i, c));
    }
    flush(&mut group, &mut out)?;
    // Chunks of different frequencies were grouped apart: the block wants them by start.
    out.sort_by_key(Merged::start);
    Ok(out)
}

/// Blocks opened, damaged ones (their errors), next sequence number.
type OpenedBlocks = (Vec<Arc<Block>>, Vec<String>, u64);

/// Opens every block in `dir` (if it exists), oldest sequence first, removing temporary files a crash
/// left. A block that fails its checks is reported, not opened. Returns the blocks, the damaged ones and the
/// next free sequence number.
fn open_blocks(vfs: &dyn Vfs, dir: &Path) -> Result<OpenedBlocks, StorageError> {
    if !vfs.exists(dir) {
        return Ok((Vec::new(), Vec::new(), 1)); // created by the first compaction
    }
    let mut names = vfs.list_dir(dir).map_err(|e| StorageError::io("list", dir, e))?;
    names.sort();
    let (mut blocks, mut damaged, mut next) = (Vec::new(), Vec::new(), 1u64);
    for name in names {
        let path = dir.join(&name);
        if name.ends_with(".tmp") {
            vfs.remove_file(&path).map_err(|e| StorageError::io("remove", &path, e))?;
            continue;
        }
        let Some(seq) = parse_block_name(&name) else { continue };
        next = next.max(seq + 1);
        match Block::open(vfs, &path, seq) {
            Ok(b) => blocks.push(Arc::new(b)),
            Err(e) => damaged.push(e.to_string()),
        }
    }
    Ok((blocks, damaged, next))
}

/// Upper bounds (µs) of the WAL fsync latency buckets in [`EngineStats::wal_sync_buckets`].
pub const WAL_SYNC_BUCKETS_US: [u64; 12] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000];

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[derive(Default)]
struct Catalog {
    metrics: Vec<MetricEntry>,
    metric_ids: HashMap<String, u32>,
    series: Vec<SeriesEntry>,
    /// Keyed by [`series_key`]: one byte string, so lookups borrow a reused buffer instead of allocating.
    series_ids: HashMap<Vec<u8>, SeriesId>,
}

/// The catalog's key of a series: metric id (little-endian) then the canonical path, built in `buf`.
fn series_key<'a>(buf: &'a mut Vec<u8>, metric: u32, path: &[u8]) -> &'a [u8] {
    buf.clear();
    buf.extend_from_slice(&metric.to_le_bytes());
    buf.extend_from_slice(path);
    buf
}

/// Largest canonical path a series may have (it must fit a `u16` length and any WAL record).
pub const MAX_PATH_BYTES: usize = 4096;

type Reply<T> = Sender<Result<T, StorageError>>;

/// What a write is answered with: its acknowledgement, and the samples it applied handed back (empty for
/// other operations), so that the caller can use them after the write without having copied them.
type Written = (WriteAck, Vec<Sample>);

enum Cmd {
    /// Records to log and apply. `samples` are applied after logging; `defs`/`declare` too.
    Write {
        records: Vec<(u8, Vec<u8>)>,
        op: Op,
        unknown: u64,
        reply: Option<Reply<Written>>,
    },
    Checkpoint {
        reply: Reply<Lsn>,
    },
    /// Make every record logged so far durable (fsync the WAL), whatever the durability.
    Sync {
        reply: Reply<()>,
    },
    Shutdown {
        reply: Reply<()>,
    },
    /// Stop applying writes: answer with the LSN of the last record applied (every record logged before
    /// it is applied by then), then wait until `resume` is dropped (see [`Engine::pause`]).
    Pause {
        reply: Reply<Lsn>,
        resume: Receiver<()>,
    },
}

/// The writer thread paused by [`Engine::pause`]: every record up to [`WritePause::lsn`] is applied and
/// none after it is until this is dropped.
#[must_use = "the writer resumes when this is dropped"]
pub struct WritePause {
    lsn: Lsn,
    _resume: Sender<()>,
}

impl WritePause {
    /// The LSN of the last record applied before the pause (0 if none was ever logged).
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }
}

enum Op {
    Declare { id: u32, name: String, config: MetricConfig },
    Define(Vec<SeriesDef>),
    Samples(Vec<Sample>),
    Free(Vec<(SeriesId, i64)>),
    Seal(Vec<(SeriesId, i64)>),
}

struct Shared {
    catalog: RwLock<Catalog>,
    head: Arc<Head>,
    blocks: RwLock<BlockList>,
    /// Bumped whenever a compaction publishes a block (before it frees the pages).
    block_generation: AtomicU64,
    next_block_seq: AtomicU64,
    /// Held for the whole of a compaction: one at a time.
    compaction: Mutex<()>,
    /// Held by writers of `state/` (`put_state`, `delete_state`): one at a time.
    state: Mutex<()>,
    failed: Mutex<Option<String>>,
    stats: EngineStats,
    durability: Durability,
    max_payload: usize,
    /// Most series the catalog may hold (0: only `u32::MAX - 1`, the most a `SeriesId` numbers).
    max_series: u32,
    /// Wakes the thread that lets go of idle head pages ([`Head::discard_idle`]).
    discards: Sender<()>,
}

impl Shared {
    /// Asks the head-trim thread to let go of idle head pages; a request already waiting will do.
    fn request_discard(&self) {
        let _ = self.discards.try_send(());
    }
}

/// An open engine. `Send + Sync`; cheap operations take `&self`.
pub struct Engine {
    shared: Arc<Shared>,
    tx: Sender<Cmd>,
    thread: Mutex<Option<JoinHandle<()>>>,
    recovery: RecoveryReport,
    dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    _lock: Box<dyn DirLock>,
}

struct Writer {
    shared: Arc<Shared>,
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    wal: Wal,
    head: HeadWriter,
    metrics: Vec<MetricEntry>,
    series: Vec<SeriesEntry>,
    options: EngineOptions,
    last_sync: Instant,
    last_checkpoint: Instant,
    /// The LSN of the last checkpoint completed since the engine opened.
    last_checkpoint_lsn: Option<Lsn>,
    /// The checkpoint whose msync and manifest write run on the checkpointer thread.
    in_flight: Option<InFlight>,
    /// Callers that asked for a checkpoint while one was in flight: they need one that starts later.
    waiting: Vec<Reply<Lsn>>,
    jobs: Sender<CheckpointJob>,
    done: Receiver<Result<(), StorageError>>,
}

/// What the writer remembers of a checkpoint in flight.
struct InFlight {
    lsn: Lsn,
    wal_seq: u64,
    pending: usize,
    waiters: Vec<Reply<Lsn>>,
}

/// The part of a checkpoint that runs off the writer thread: stores into the head after the state was taken
/// only ever hold values that WAL replay from the checkpoint LSN rewrites, so the msync may run while the
/// writer goes on.
struct CheckpointJob {
    manifest: Manifest,
}

fn run_checkpoint_job(vfs: &dyn Vfs, dir: &Path, head: &Head, job: &CheckpointJob) -> Result<(), StorageError> {
    head.flush()?;
    job.manifest.store(vfs, dir)
}

fn apply_payload(
    lsn: Lsn,
    kind: u8,
    bytes: &[u8],
    head: &mut HeadWriter,
    metrics: &mut Vec<MetricEntry>,
    series: &mut Vec<SeriesEntry>,
    wal_dir: &Path,
) -> Result<(), StorageError> {
    let bad = |k: CorruptionKind| StorageError::corrupt(wal_dir, lsn.0, k);
    if kind == payload::Kind::Samples as u8 {
        let mut err = None;
        payload::for_each_sample(bytes, |s| {
            if err.is_none() {
                if let Err(e) = head.apply(s.series, s.ts, s.value) {
                    err = Some(e);
                }
            }
        })
        .map_err(bad)?;
        return err.map_or(Ok(()), Err);
    }
    match payload::decode(kind, bytes).map_err(bad)? {
        Payload::DeclareMetric { id, name, config } => {
            if id as usize != metrics.len() {
                return Err(bad(CorruptionKind::Invalid(format!("metric id {id}, expected {}", metrics.len()))));
            }
            metrics.push(MetricEntry { name, config });
        }
        Payload::DefineSeries(defs) => {
            for d in defs {
                let Some(m) = metrics.get(d.metric as usize) else {
                    return Err(bad(CorruptionKind::Invalid(format!(
                        "series {} of unknown metric {}",
                        d.id.0, d.metric
                    ))));
                };
                if d.id.0 as usize != series.len() {
                    return Err(bad(CorruptionKind::Invalid(format!(
                        "series id {}, expected {}",
                        d.id.0,
                        series.len()
                    ))));
                }
                head.add_series(m.config.frequency);
                series.push(SeriesEntry { metric: d.metric, path: d.path });
            }
        }
        Payload::Samples(_) => {}
        Payload::Free(items) => {
            for (id, before) in items {
                head.free_before(id, before);
            }
        }
        Payload::Seal(items) => {
            for (id, before) in items {
                head.seal_before(id, before);
            }
        }
    }
    Ok(())
}

impl Engine {
    /// Opens (or creates) the engine in `dir`: takes the directory lock, loads the manifest, maps the head,
    /// replays the WAL and starts the writer thread.
    pub fn open(vfs: Arc<dyn Vfs>, dir: &Path, options: EngineOptions) -> Result<Engine, StorageError> {
        if options.segment_size < crate::storage::wal::segment::MIN_SEGMENT_SIZE {
            return Err(StorageError::corrupt(dir, 0, CorruptionKind::Invalid("segment_size below 64 KiB".into())));
        }
        crate::storage::head::file::check_geometry(options.page_slots, options.pages_per_file)
            .map_err(|m| StorageError::corrupt(dir, 0, CorruptionKind::Invalid(m)))?;
        vfs.create_dir_all(dir).map_err(|e| StorageError::io("create dir", dir, e))?;
        let lock = vfs.lock_dir(dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                StorageError::Locked(dir.to_owned())
            } else {
                StorageError::io("lock", dir, e)
            }
        })?;
        let tmp = crate::storage::io::tmp_path(&dir.join(crate::storage::manifest::MANIFEST_NAME));
        if vfs.exists(&tmp) {
            vfs.remove_file(&tmp).map_err(|e| StorageError::io("remove", &tmp, e))?;
        }
        let manifest = Manifest::load(&*vfs, dir)?.unwrap_or_else(|| Manifest {
            head: HeadState {
                pages_per_file: options.pages_per_file,
                page_slots: options.page_slots,
                ..HeadState::default()
            },
            wal_seq: 1,
            ..Manifest::default()
        });
        if !vfs.exists(&dir.join(crate::storage::manifest::MANIFEST_NAME)) {
            // Without a manifest the WAL must still start at its first segment (nothing was ever checkpointed);
            // otherwise the manifest was lost, and opening would discard data: refuse before touching anything.
            let wal_dir = dir.join("wal");
            if vfs.exists(&wal_dir) {
                if let Some((seq, path)) = crate::storage::wal::list_segments(&*vfs, &wal_dir)?.first() {
                    if *seq != 1 {
                        return Err(StorageError::corrupt(
                            path,
                            0,
                            CorruptionKind::Invalid(format!(
                                "MANIFEST is missing but the WAL starts at segment {seq}: the checkpoint that covers \
                                 the earlier records is lost"
                            )),
                        ));
                    }
                }
            }
        }
        let frequencies: Vec<i64> =
            manifest.series.iter().map(|s| manifest.metrics[s.metric as usize].config.frequency).collect();
        let mut head = HeadWriter::open(vfs.clone(), &dir.join("head"), &manifest.head, &frequencies)?;
        let mut metrics = manifest.metrics.clone();
        let mut series = manifest.series.clone();
        let wal_dir = dir.join("wal");
        let (mut wal, replay) = Wal::open(
            vfs.clone(),
            &wal_dir,
            options.segment_size,
            manifest.checkpoint_lsn,
            manifest.wal_seq,
            |lsn, kind, bytes| apply_payload(lsn, kind, bytes, &mut head, &mut metrics, &mut series, &wal_dir),
        )?;
        // Segments below the manifest's first needed one are left over from a crash during a checkpoint.
        wal.remove_below(manifest.wal_seq)?;

        let mut catalog = Catalog::default();
        for (i, m) in metrics.iter().enumerate() {
            catalog.metric_ids.insert(m.name.clone(), i as u32);
        }
        for (i, s) in series.iter().enumerate() {
            catalog.series_ids.insert(series_key(&mut Vec::new(), s.metric, &s.path).to_vec(), SeriesId(i as u32));
        }
        catalog.metrics = metrics.clone();
        catalog.series = series.clone();

        let (blocks, damaged_blocks, next_block_seq) = open_blocks(&*vfs, &dir.join(BLOCK_DIR))?;
        // One thread lets go of idle head pages (Head::discard_idle), when asked (Shared::request_discard):
        // after a checkpoint, after a compaction batch, and every DISCARD_EVERY_BYTES of new pages.
        let (discards_tx, discards_rx) = bounded::<()>(1);
        {
            let head = head.head().clone();
            std::thread::Builder::new()
                .name("silt-head-trim".into())
                .spawn(move || {
                    for () in discards_rx {
                        if let Err(e) = head.discard_idle() {
                            tracing::warn!(error = %e, "letting go of idle head pages");
                        }
                    }
                })
                .map_err(|e| StorageError::io("spawn head trim thread", dir, e))?;
        }
        let shared = Arc::new(Shared {
            catalog: RwLock::new(catalog),
            head: head.head().clone(),
            blocks: RwLock::new(Arc::new(blocks)),
            block_generation: AtomicU64::new(0),
            next_block_seq: AtomicU64::new(next_block_seq),
            compaction: Mutex::new(()),
            state: Mutex::new(()),
            failed: Mutex::new(None),
            stats: EngineStats { last_checkpoint_unix_ms: AtomicU64::new(unix_ms()), ..EngineStats::default() },
            durability: options.durability,
            max_payload: wal.max_payload(),
            max_series: options.max_series,
            discards: discards_tx,
        });
        let (tx, rx) = unbounded();
        let (jobs_tx, jobs_rx) = bounded::<CheckpointJob>(1);
        let (done_tx, done_rx) = bounded(1);
        {
            let vfs = vfs.clone();
            let data_dir = dir.to_owned();
            let head = shared.head.clone();
            std::thread::Builder::new()
                .name("silt-checkpointer".into())
                .spawn(move || {
                    for job in jobs_rx {
                        if done_tx.send(run_checkpoint_job(&*vfs, &data_dir, &head, &job)).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| StorageError::io("spawn checkpointer thread", dir, e))?;
        }
        let writer = Writer {
            shared: shared.clone(),
            vfs: vfs.clone(),
            dir: dir.to_owned(),
            wal,
            head,
            metrics,
            series,
            options,
            last_sync: Instant::now(),
            last_checkpoint: Instant::now(),
            last_checkpoint_lsn: None,
            in_flight: None,
            waiting: Vec::new(),
            jobs: jobs_tx,
            done: done_rx,
        };
        let thread = std::thread::Builder::new()
            .name("silt-wal-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StorageError::io("spawn writer thread", dir, e))?;
        Ok(Engine {
            shared,
            tx,
            thread: Mutex::new(Some(thread)),
            recovery: RecoveryReport { checkpoint_lsn: manifest.checkpoint_lsn, replay, damaged_blocks },
            dir: dir.to_owned(),
            vfs,
            _lock: lock,
        })
    }

    fn check_failed(&self) -> Result<(), StorageError> {
        match &*self.shared.failed.lock() {
            Some(msg) => Err(StorageError::PreviousIo(msg.clone())),
            None => Ok(()),
        }
    }

    fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, StorageError> {
        let (rtx, rrx) = bounded(1);
        self.tx.send(make(rtx)).map_err(|_| StorageError::Closed)?;
        rrx.recv().map_err(|_| StorageError::Closed)?
    }

    /// What recovery found when the engine opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The engine's counters.
    pub fn stats(&self) -> &EngineStats {
        &self.shared.stats
    }

    /// The database's durability.
    pub fn durability(&self) -> Durability {
        self.shared.durability
    }

    /// Declares a metric, or checks that an existing declaration matches. Returns the metric id. Durable
    /// under the database's durability once this returns.
    pub fn declare_metric(&self, name: &str, config: MetricConfig) -> Result<Result<u32, MetricConfig>, StorageError> {
        self.check_failed()?;
        if !(1..=MAX_FREQUENCY).contains(&config.frequency) {
            return Err(StorageError::corrupt(
                name,
                0,
                CorruptionKind::Invalid(format!("frequency {} outside 1..={MAX_FREQUENCY}", config.frequency)),
            ));
        }
        if name.is_empty() || name.len() > u8::MAX as usize {
            return Err(StorageError::corrupt(
                name,
                0,
                CorruptionKind::Invalid(format!("metric name of {} bytes (1..=255)", name.len())),
            ));
        }
        let reply_rx;
        {
            let mut cat = self.shared.catalog.write();
            if let Some(&id) = cat.metric_ids.get(name) {
                let existing = cat.metrics[id as usize].config;
                return Ok(if existing == config { Ok(id) } else { Err(existing) });
            }
            let id = cat.metrics.len() as u32;
            let mut bytes = Vec::new();
            payload::encode_declare_metric(&mut bytes, id, name, config);
            let (rtx, rrx) = bounded(1);
            reply_rx = rrx;
            self.tx
                .send(Cmd::Write {
                    records: vec![(payload::Kind::DeclareMetric as u8, bytes)],
                    op: Op::Declare { id, name: name.to_owned(), config },
                    unknown: 0,
                    reply: Some(rtx),
                })
                .map_err(|_| StorageError::Closed)?;
            cat.metrics.push(MetricEntry { name: name.to_owned(), config });
            cat.metric_ids.insert(name.to_owned(), id);
            // The id is visible to others only now, after its record is in the channel.
            drop(cat);
            let id_out = id;
            reply_rx.recv().map_err(|_| StorageError::Closed)??;
            Ok(Ok(id_out))
        }
    }

    /// The id and configuration of a declared metric.
    pub fn metric(&self, name: &str) -> Option<(u32, MetricConfig)> {
        let cat = self.shared.catalog.read();
        cat.metric_ids.get(name).map(|&id| (id, cat.metrics[id as usize].config))
    }

    /// Every declared metric, in id order.
    pub fn metrics(&self) -> Vec<(String, MetricConfig)> {
        self.shared.catalog.read().metrics.iter().map(|m| (m.name.clone(), m.config)).collect()
    }

    /// The id of an existing series.
    pub fn lookup_series(&self, metric: u32, path: &[u8]) -> Option<SeriesId> {
        let mut key = Vec::with_capacity(4 + path.len());
        self.shared.catalog.read().series_ids.get(series_key(&mut key, metric, path)).copied()
    }

    /// Interns series: returns the id of each `(metric id, canonical path)`, defining the new ones (their
    /// definition is logged before any record that can use them).
    pub fn intern(&self, wanted: &[(u32, &[u8])]) -> Result<Vec<SeriesId>, StorageError> {
        let mut out = Vec::with_capacity(wanted.len());
        let mut key = Vec::with_capacity(64);
        let mut missing = false;
        {
            let cat = self.shared.catalog.read();
            for &(m, p) in wanted {
                match cat.series_ids.get(series_key(&mut key, m, p)) {
                    Some(&id) => out.push(id),
                    None => {
                        missing = true;
                        out.push(SeriesId(u32::MAX));
                    }
                }
            }
        }
        if !missing {
            return Ok(out);
        }
        self.check_failed()?;
        let mut cat = self.shared.catalog.write();
        // Everything is checked before the catalog changes: an error leaves no series half-defined.
        let mut new = std::collections::HashSet::new();
        for (i, &(m, p)) in wanted.iter().enumerate() {
            if out[i].0 != u32::MAX || cat.series_ids.contains_key(series_key(&mut key, m, p)) {
                continue;
            }
            if p.is_empty() || p.len() > MAX_PATH_BYTES {
                return Err(StorageError::corrupt(
                    &self.dir,
                    0,
                    CorruptionKind::Invalid(format!("series path of {} bytes (1..={MAX_PATH_BYTES})", p.len())),
                ));
            }
            if (m as usize) >= cat.metrics.len() {
                return Err(StorageError::corrupt(&self.dir, 0, CorruptionKind::Invalid(format!("metric id {m}"))));
            }
            new.insert(key.clone());
        }
        let limit = match self.shared.max_series {
            0 => u32::MAX - 1,
            n => n.min(u32::MAX - 1),
        };
        if cat.series.len() + new.len() > limit as usize {
            return Err(StorageError::TooManySeries { limit, new: new.len() });
        }
        let mut defs = Vec::new();
        for (i, &(m, p)) in wanted.iter().enumerate() {
            if out[i].0 != u32::MAX {
                continue;
            }
            if let Some(&id) = cat.series_ids.get(series_key(&mut key, m, p)) {
                out[i] = id;
                continue;
            }
            let n = cat.series.len();
            let id = SeriesId(n as u32);
            cat.series.push(SeriesEntry { metric: m, path: p.to_vec() });
            cat.series_ids.insert(series_key(&mut key, m, p).to_vec(), id);
            defs.push(SeriesDef { id, metric: m, path: p.to_vec() });
            out[i] = id;
        }
        if !defs.is_empty() {
            // Split so every record fits a segment.
            let mut records = Vec::new();
            let mut start = 0;
            while start < defs.len() {
                let mut end = start;
                let mut size = 4;
                while end < defs.len() && size + 10 + defs[end].path.len() <= self.shared.max_payload {
                    size += 10 + defs[end].path.len();
                    end += 1;
                }
                let mut bytes = Vec::with_capacity(size);
                payload::encode_define_series(&mut bytes, &defs[start..end]);
                records.push((payload::Kind::DefineSeries as u8, bytes));
                start = end;
            }
            self.tx
                .send(Cmd::Write { records, op: Op::Define(defs), unknown: 0, reply: None })
                .map_err(|_| StorageError::Closed)?;
        }
        drop(cat);
        Ok(out)
    }

    /// The metric id and canonical path of a series.
    pub fn series_info(&self, id: SeriesId) -> Option<(u32, Vec<u8>)> {
        let cat = self.shared.catalog.read();
        cat.series.get(id.0 as usize).map(|s| (s.metric, s.path.clone()))
    }

    /// The series registered from id `start` on: `(id, metric id, canonical path)`. Lets a client keep an
    /// index of the registry up to date incrementally.
    pub fn series_since(&self, start: usize) -> Vec<(SeriesId, u32, Vec<u8>)> {
        let cat = self.shared.catalog.read();
        cat.series.iter().enumerate().skip(start).map(|(i, s)| (SeriesId(i as u32), s.metric, s.path.clone())).collect()
    }

    /// Number of series.
    pub fn series_count(&self) -> usize {
        self.shared.catalog.read().series.len()
    }

    /// Writes samples (every id must come from [`Engine::intern`]); `unknown_metric` samples the caller could
    /// not resolve are counted in the outcome. Acknowledged under the database's durability.
    pub fn write(&self, samples: Vec<Sample>, unknown_metric: u64) -> Result<WriteAck, StorageError> {
        self.write_returning(samples, unknown_metric).map(|(ack, _)| ack)
    }

    /// [`Engine::write`], handing the samples back once they are applied (`Db::write` gives them to the
    /// write taps then).
    pub fn write_returning(
        &self,
        samples: Vec<Sample>,
        unknown_metric: u64,
    ) -> Result<(WriteAck, Vec<Sample>), StorageError> {
        self.check_failed()?;
        if samples.is_empty() {
            let outcome = WriteOutcome { unknown_metric, ..WriteOutcome::default() };
            self.shared.stats.samples_unknown_metric.fetch_add(unknown_metric, Ordering::Relaxed);
            return Ok((WriteAck { lsn: Lsn(0), durability: self.shared.durability, outcome }, samples));
        }
        // A sample takes at most 5 + 10 + 8 bytes.
        let per_record = ((self.shared.max_payload - 12) / 23).max(1);
        let mut records = Vec::with_capacity(samples.len().div_ceil(per_record));
        for chunk in samples.chunks(per_record) {
            let mut bytes = Vec::new();
            payload::encode_samples(&mut bytes, chunk);
            records.push((payload::Kind::Samples as u8, bytes));
        }
        self.call(|reply| Cmd::Write { records, op: Op::Samples(samples), unknown: unknown_metric, reply: Some(reply) })
    }

    /// Frees, per series, the pages whose every slot lies before the time. Returns the pages freed.
    pub fn free(&self, items: Vec<(SeriesId, i64)>) -> Result<u64, StorageError> {
        let records = self.range_records(payload::Kind::Free, &items)?;
        let (ack, _) =
            self.call(|reply| Cmd::Write { records, op: Op::Free(items), unknown: 0, reply: Some(reply) })?;
        Ok(ack.outcome.stored)
    }

    /// Seals, per series, the pages whose every slot lies before the time: later writes there are refused
    /// as too old, the pages stay readable until freed. Durable under the database's durability, like a
    /// write. Returns the pages sealed.
    pub fn seal(&self, items: Vec<(SeriesId, i64)>) -> Result<u64, StorageError> {
        let records = self.range_records(payload::Kind::Seal, &items)?;
        let (ack, _) =
            self.call(|reply| Cmd::Write { records, op: Op::Seal(items), unknown: 0, reply: Some(reply) })?;
        Ok(ack.outcome.stored)
    }

    fn range_records(
        &self,
        kind: payload::Kind,
        items: &[(SeriesId, i64)],
    ) -> Result<Vec<(u8, Vec<u8>)>, StorageError> {
        self.check_failed()?;
        let per_record = ((self.shared.max_payload - 4) / 12).max(1);
        Ok(items
            .chunks(per_record)
            .map(|chunk| {
                let mut bytes = Vec::new();
                payload::encode_free(&mut bytes, chunk);
                (kind as u8, bytes)
            })
            .collect())
    }

    /// The file system every file of this engine goes through; other writers into the data directory's
    /// neighbourhood (archives) use it too, so that a simulated disk faults them like the engine's own files.
    pub fn vfs(&self) -> &Arc<dyn Vfs> {
        &self.vfs
    }

    /// The shared head, for the query layer.
    pub fn head(&self) -> &Arc<Head> {
        &self.shared.head
    }

    /// How many blocks compaction has published: a reader that walked the head without blocks can tell
    /// whether pages moved to a block meanwhile.
    pub fn block_generation(&self) -> u64 {
        self.shared.block_generation.load(Ordering::Acquire)
    }

    /// The published blocks, oldest first: a snapshot that stays valid while held.
    pub fn blocks(&self) -> BlockList {
        self.shared.blocks.read().clone()
    }

    /// Compacts, per series, the pages whose every slot lies before the time into new blocks (one per
    /// [`COMPACT_BATCH_VALUES`] values of pages), then frees them from the head (they become reusable after
    /// the next checkpoint).
    ///
    /// The steps, each safe to crash after: (1) seal the pages (a WAL record: later writes there are refused
    /// as too old, so the copy cannot miss one); (2) copy their values and write the block under a
    /// temporary name, fsync, rename into `blocks/`, fsync the directory; (3) publish it to readers;
    /// (4) free the pages (a WAL record). A crash before (2) completes leaves the pages in the head; a
    /// crash between (2) and (4) leaves them in both, where the head wins on read and a later compaction
    /// copies them again into a newer block. On an error the pages stay in the head, sealed.
    pub fn compact(&self, items: Vec<(SeriesId, i64)>) -> Result<CompactReport, StorageError> {
        let _one = self.shared.compaction.lock();
        if items.is_empty() || self.seal(items.clone())? == 0 {
            return Ok(CompactReport::default());
        }
        // The sealed pages go in batches of at most COMPACT_BATCH_VALUES values, one block each, so the
        // values copied out of the head at once stay bounded however many series are compacted.
        let head = self.head().clone();
        let mut report = CompactReport::default();
        let mut batch: Vec<(SeriesId, i64)> = Vec::new();
        let mut batch_values = 0usize;
        for &(id, before) in &items {
            let values = head.pages(id).map_or(0, |(list, f)| {
                let span = head.page_span(f);
                list.iter().take_while(|p| p.start.saturating_add(span) <= before).count() * head.page_slots()
            });
            if !batch.is_empty() && batch_values + values > COMPACT_BATCH_VALUES {
                self.compact_sealed(std::mem::take(&mut batch), &mut report)?;
                batch_values = 0;
            }
            batch.push((id, before));
            batch_values += values;
        }
        self.compact_sealed(batch, &mut report)?;
        Ok(report)
    }

    /// Copies the sealed pages of `items` into one block, publishes it and frees the pages; adds to `report`
    /// (the last block written is the report's `block`).
    fn compact_sealed(&self, items: Vec<(SeriesId, i64)>, report: &mut CompactReport) -> Result<(), StorageError> {
        if items.is_empty() {
            return Ok(());
        }
        let head = self.head();
        // Series by series, in order, each chunk encoded and handed to the block writer before the next is
        // read: one series' values are held at a time, not the batch's (nor the encoded block).
        let mut order: Vec<(SeriesId, i64)> = items.clone();
        order.sort_unstable_by_key(|&(id, before)| (id, std::cmp::Reverse(before)));
        order.dedup_by_key(|(id, _)| *id);
        let dir = self.dir.join(BLOCK_DIR);
        let mut writer: Option<(crate::storage::block::BlockWriter, u64)> = None;
        let (mut pages, mut values, mut bytes) = (0u64, Vec::new(), Vec::new());
        for &(id, before) in &order {
            let Some((list, f)) = head.pages(id) else { continue };
            let span = head.page_span(f);
            let n_pages = list.iter().take_while(|p| p.start.saturating_add(span) <= before).count();
            let (Some(first), Some(last)) = (list.first(), list.get(n_pages.wrapping_sub(1))) else { continue };
            pages += n_pages as u64;
            let n = ((last.start - first.start) / f) as usize + head.page_slots();
            if head.sample_vec(id, first.start + f / 2, n, &mut values).is_none() {
                continue;
            }
            while values.last().is_some_and(|v| v.is_nan()) {
                values.pop();
            }
            if values.is_empty() {
                continue;
            }
            let (w, seq) = match &mut writer {
                Some(ws) => ws,
                None => {
                    self.vfs.create_dir_all(&dir).map_err(|e| StorageError::io("create dir", &dir, e))?;
                    let seq = self.shared.next_block_seq.fetch_add(1, Ordering::Relaxed);
                    let w = crate::storage::block::BlockWriter::create(&*self.vfs, &dir, seq)
                        .map_err(|e| self.abandon_block(&dir, seq, e))?;
                    writer.insert((w, seq))
                }
            };
            let c = ChunkData { series: id, start: first.start, frequency: f, values: std::mem::take(&mut values) };
            bytes.clear();
            let codec = codec_for(c.values.len(), false);
            crate::storage::codec::encode(codec, &c.values, &mut bytes);
            let seq = *seq;
            w.push(&c, codec, &bytes).map_err(|e| self.abandon_block(&dir, seq, e))?;
            report.series += 1;
            report.samples += c.values.iter().filter(|v| !v.is_nan()).count() as u64;
            values = c.values;
        }
        report.pages += pages;
        if let Some((w, seq)) = writer {
            let block = w
                .finish(&*self.vfs)
                .and_then(|path| Block::open(&*self.vfs, &path, seq))
                .map_err(|e| self.abandon_block(&dir, seq, e))?;
            let block = Arc::new(block);
            let (path, size) = (block.path().to_owned(), block.size());
            {
                let mut list = self.shared.blocks.write();
                let mut next = (**list).clone();
                next.push(block);
                *list = Arc::new(next);
                self.shared.block_generation.fetch_add(1, Ordering::AcqRel);
            }
            report.bytes += size;
            report.block = Some(path);
            let st = &self.shared.stats;
            st.blocks_written.fetch_add(1, Ordering::Relaxed);
            st.block_bytes_written.fetch_add(size, Ordering::Relaxed);
        }
        self.free(items)?;
        // The pages just copied became resident again when read; they are free now.
        self.shared.request_discard();
        self.shared.stats.pages_compacted.fetch_add(pages, Ordering::Relaxed);
        Ok(())
    }

    /// Runs a checkpoint now; returns its LSN.
    pub fn checkpoint(&self) -> Result<Lsn, StorageError> {
        self.check_failed()?;
        self.call(|reply| Cmd::Checkpoint { reply })
    }

    /// Returns once every record logged before the call (every write acknowledged before it) is durable in
    /// the WAL, whatever the [`Durability`]: under `IntervalMs` and `None` the writer thread fsyncs the WAL
    /// now; under `Sync` it returns at once, since every acknowledged write is already durable. A failed
    /// fsync makes the engine read-only, as for a write.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.check_failed()?;
        if self.shared.durability == Durability::Sync {
            return Ok(());
        }
        self.call(|reply| Cmd::Sync { reply })
    }

    /// Pauses the writer thread once every write sent before this call is applied, and keeps it paused
    /// (writes wait in its channel; their callers block) until the returned [`WritePause`] is dropped.
    /// While it is held, a read of the head or the blocks sees exactly the writes up to
    /// [`WritePause::lsn`]. Hold it briefly, and never while waiting on the writer (a write, a sync, a
    /// checkpoint): that would deadlock.
    pub fn pause(&self) -> Result<WritePause, StorageError> {
        self.check_failed()?;
        let (resume_tx, resume_rx) = bounded(0);
        let lsn = self.call(|reply| Cmd::Pause { reply, resume: resume_rx })?;
        Ok(WritePause { lsn, _resume: resume_tx })
    }

    /// Reads the state blob `name` (`storage::state`); `None` if there is none.
    pub fn state(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        crate::storage::state::read(&*self.vfs, &self.dir, name)
    }

    /// Replaces the state blob `name` atomically and durably (`storage::state::write`): on `Ok` the new value
    /// is durable; on an error the blob holds the old or the new value, also after a crash. Refused once the
    /// engine is read-only.
    pub fn put_state(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        crate::storage::state::check_name(name)?;
        self.check_failed()?;
        let _one = self.shared.state.lock();
        crate::storage::state::write(&*self.vfs, &self.dir, name, bytes)
    }

    /// Removes the state blob `name` durably; returns whether there was one. Refused once the engine is
    /// read-only.
    pub fn delete_state(&self, name: &str) -> Result<bool, StorageError> {
        crate::storage::state::check_name(name)?;
        self.check_failed()?;
        let _one = self.shared.state.lock();
        crate::storage::state::remove(&*self.vfs, &self.dir, name)
    }

    /// Checkpoints (unless read-only after a failure) and stops the writer thread.
    pub fn close(&self) -> Result<(), StorageError> {
        let Some(thread) = self.thread.lock().take() else { return Ok(()) };
        let r = self.call(|reply| Cmd::Shutdown { reply });
        let _ = thread.join();
        r
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Writer {
    fn fail(&self, e: &StorageError) {
        let mut f = self.shared.failed.lock();
        if f.is_none() {
            *f = Some(e.to_string());
            tracing::error!(error = %e, "WAL write failed; the database is read-only from now on");
        }
    }

    fn run(mut self, rx: Receiver<Cmd>) {
        let mut group: Vec<Cmd> = Vec::new();
        loop {
            let timeout = self.next_timeout().unwrap_or(Duration::from_secs(3600));
            crossbeam_channel::select! {
                recv(rx) -> c => match c {
                    Ok(c) => {
                        group.push(c);
                        while group.len() < 1024 {
                            match rx.try_recv() {
                                Ok(c) => group.push(c),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(_) => return,
                },
                recv(self.done) -> r => {
                    let r = r.unwrap_or(Err(StorageError::Closed));
                    self.finish_checkpoint(r);
                }
                default(timeout) => {}
            }
            if self.process(&mut group) {
                return;
            }
            if self.head.take_discard_due() {
                self.shared.request_discard();
            }
            self.tick();
        }
    }

    fn next_timeout(&self) -> Option<Duration> {
        let mut t: Option<Duration> = None;
        if let Durability::IntervalMs(ms) = self.options.durability {
            if self.wal.has_unsynced() {
                t = Some(Duration::from_millis(ms).saturating_sub(self.last_sync.elapsed()));
            }
        }
        if let Some(iv) = self.options.checkpoint_interval {
            let c = iv.saturating_sub(self.last_checkpoint.elapsed());
            t = Some(t.map_or(c, |t| t.min(c)));
        }
        t
    }

    fn tick(&mut self) {
        if self.shared.failed.lock().is_some() {
            return;
        }
        if let Durability::IntervalMs(ms) = self.options.durability {
            if self.wal.has_unsynced() && self.last_sync.elapsed() >= Duration::from_millis(ms) {
                if let Err(e) = self.sync() {
                    self.fail(&e);
                }
            }
        }
        if let Some(iv) = self.options.checkpoint_interval {
            if self.in_flight.is_none() && self.last_checkpoint.elapsed() >= iv {
                // Nothing logged since the last checkpoint: the manifest would say the same again (blocks are
                // not in it), so an idle engine does not rewrite it, nor start a WAL segment, every interval.
                if self.last_checkpoint_lsn == Some(Lsn(self.wal.next_lsn().0 - 1)) && self.head.pending_len() == 0 {
                    self.last_checkpoint = Instant::now();
                    // The durable state is current: the age of the last checkpoint does not grow while idle.
                    self.shared.stats.last_checkpoint_unix_ms.store(unix_ms(), Ordering::Relaxed);
                } else {
                    self.start_checkpoint(Vec::new());
                }
            }
        }
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        let start = Instant::now();
        self.wal.sync()?;
        self.last_sync = Instant::now();
        let took = self.last_sync - start;
        let stats = &self.shared.stats;
        stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
        stats.wal_sync_nanos.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        let us = took.as_micros() as u64;
        let bucket = WAL_SYNC_BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(WAL_SYNC_BUCKETS_US.len());
        stats.wal_sync_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Logs, syncs, applies and answers a group of commands. Returns true on shutdown.
    fn process(&mut self, group: &mut Vec<Cmd>) -> bool {
        let failed = self.shared.failed.lock().clone();
        // 1. Log every write of the group.
        let mut lsns = Vec::with_capacity(group.len());
        let mut log_err: Option<StorageError> = failed.map(StorageError::PreviousIo);
        // A write the WAL had no room for (its next segment could not be created) is refused whole, with
        // every write after it in the group, before anything of it is logged; the engine stays writable.
        // Samples, frees and seals are refused so (a compaction that meets a full disk fails, it does not
        // make the database read-only): nothing of them changes before they are applied. A metric
        // declaration or series definition is in the catalog before it is logged and later records name it,
        // so one that finds no room makes the engine read-only, as any failed log write does.
        let mut refused: Option<(bool, String)> = None;
        let mut refused_cmd = vec![false; group.len()];
        // Head pages the group's writes may need, made sure of before each is logged (see
        // `HeadWriter::reserve`), and the frequencies of series the group defines.
        let mut head_reserved = 0u64;
        let mut group_freq: HashMap<SeriesId, i64> = HashMap::new();
        for (i, cmd) in group.iter().enumerate() {
            let mut last = Lsn(0);
            if let (Cmd::Write { records, op, .. }, None) = (cmd, &log_err) {
                if let Op::Define(defs) = op {
                    for d in defs {
                        if let Some(m) = self.metrics.get(d.metric as usize) {
                            group_freq.insert(d.id, m.config.frequency);
                        }
                    }
                }
                let refusable = matches!(op, Op::Samples(_) | Op::Free(_) | Op::Seal(_));
                if refused.is_some() && refusable {
                    refused_cmd[i] = true;
                    lsns.push(last);
                    continue;
                }
                // A head file the samples need but the disk has no room for: refused like a full WAL,
                // before anything is logged (else the write would be in the WAL but not in the head).
                if let Op::Samples(samples) = op {
                    let wanted = samples.iter().map(|s| (s.series, s.ts));
                    match self.head.reserve(wanted, head_reserved, |id| group_freq.get(&id).copied()) {
                        Ok(n) => head_reserved += n,
                        Err(e) => {
                            let e = crate::storage::wal::not_logged(e);
                            tracing::warn!(error = %e, "write refused: no room for the head file it needs");
                            if let StorageError::NotLogged { full, message } = e {
                                refused = Some((full, message));
                            }
                            refused_cmd[i] = true;
                            lsns.push(last);
                            continue;
                        }
                    }
                }
                let framed: u64 =
                    records.iter().map(|(_, b)| crate::storage::wal::record::frame_len(b.len()) as u64).sum();
                match self.wal.reserve(framed) {
                    Ok(()) => {}
                    Err(StorageError::NotLogged { full, message }) if refusable => {
                        tracing::warn!(error = %message, "write refused: the WAL has no room");
                        refused = Some((full, message));
                        refused_cmd[i] = true;
                        lsns.push(last);
                        continue;
                    }
                    Err(e) => {
                        log_err = Some(e);
                        lsns.push(last);
                        continue;
                    }
                }
                for (kind, bytes) in records {
                    match self.wal.append(*kind, bytes) {
                        Ok(l) => {
                            last = l;
                            let framed = crate::storage::wal::record::frame_len(bytes.len()) as u64;
                            self.shared.stats.wal_bytes.fetch_add(framed, Ordering::Relaxed);
                        }
                        Err(e) => {
                            log_err = Some(e);
                            break;
                        }
                    }
                }
            }
            lsns.push(last);
        }
        if log_err.is_none() {
            let r = if self.options.durability == Durability::Sync { self.sync() } else { self.wal.flush() };
            if let Err(e) = r {
                log_err = Some(e);
            }
        }
        if let Some(e) = &log_err {
            if !matches!(e, StorageError::PreviousIo(_)) {
                self.fail(e);
            }
        }
        // 2. Apply and answer the writes, in order. Checkpoints and shutdown wait until every write of the
        //    group is applied: the checkpoint LSN covers every record logged so far, so all of them must be
        //    in the head when it is taken.
        let mut shutdown = false;
        let mut deferred = Vec::new();
        for (i, (cmd, lsn)) in group.drain(..).zip(lsns).enumerate() {
            match cmd {
                Cmd::Write { op, unknown, reply, .. } => {
                    let r = match (&log_err, &refused) {
                        (Some(e), _) => Err(StorageError::PreviousIo(e.to_string())),
                        (None, Some((full, message))) if refused_cmd[i] => {
                            Err(StorageError::NotLogged { full: *full, message: message.clone() })
                        }
                        _ => self.apply(op, unknown, lsn),
                    };
                    if let Err(e) = &r {
                        if log_err.is_none() && !matches!(e, StorageError::NotLogged { .. }) {
                            self.fail(e);
                        }
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(r);
                    }
                }
                other => deferred.push(other),
            }
        }
        for cmd in deferred {
            match cmd {
                Cmd::Checkpoint { reply } => {
                    let failed = self.shared.failed.lock().clone();
                    match failed {
                        Some(e) => {
                            let _ = reply.send(Err(StorageError::PreviousIo(e)));
                        }
                        None => self.start_checkpoint(vec![reply]),
                    }
                }
                Cmd::Sync { reply } => {
                    // Every write before this command was logged and flushed above (or in an earlier group).
                    let failed = self.shared.failed.lock().clone();
                    let r = match failed {
                        Some(e) => Err(StorageError::PreviousIo(e)),
                        None => self.sync().inspect_err(|e| self.fail(e)),
                    };
                    let _ = reply.send(r);
                }
                Cmd::Shutdown { reply } => {
                    // Let a checkpoint in flight finish, then take the final one here.
                    if self.in_flight.is_some() {
                        let r = self.done.recv().unwrap_or(Err(StorageError::Closed));
                        self.finish_checkpoint(r);
                    }
                    let r = if self.shared.failed.lock().is_some() { Ok(()) } else { self.checkpoint().map(|_| ()) };
                    for w in self.waiting.drain(..) {
                        let _ = w
                            .send(r.as_ref().map(|_| Lsn(self.wal.next_lsn().0 - 1)).map_err(|_| StorageError::Closed));
                    }
                    let _ = reply.send(r);
                    shutdown = true;
                }
                Cmd::Pause { reply, resume } => {
                    // Every write logged so far was applied above (or in an earlier group).
                    let lsn = Lsn(self.wal.next_lsn().0.saturating_sub(1));
                    if reply.send(Ok(lsn)).is_ok() {
                        // Returns when the `WritePause` is dropped (its sender goes).
                        let _ = resume.recv();
                    }
                }
                Cmd::Write { .. } => {}
            }
        }
        shutdown
    }

    fn apply(&mut self, op: Op, unknown: u64, lsn: Lsn) -> Result<Written, StorageError> {
        let mut applied = Vec::new();
        let mut outcome = WriteOutcome { unknown_metric: unknown, ..WriteOutcome::default() };
        match op {
            Op::Declare { id, name, config } => {
                debug_assert_eq!(id as usize, self.metrics.len());
                self.metrics.push(MetricEntry { name, config });
            }
            Op::Define(defs) => {
                for d in defs {
                    let f = self.metrics[d.metric as usize].config.frequency;
                    self.head.add_series(f);
                    self.series.push(SeriesEntry { metric: d.metric, path: d.path });
                }
            }
            Op::Samples(samples) => {
                for s in &samples {
                    outcome.count(self.head.apply(s.series, s.ts, s.value)?);
                }
                applied = samples;
                let st = &self.shared.stats;
                st.samples_stored.fetch_add(outcome.stored, Ordering::Relaxed);
                st.samples_too_old.fetch_add(outcome.too_old + outcome.out_of_range, Ordering::Relaxed);
                st.samples_unknown_metric.fetch_add(unknown, Ordering::Relaxed);
            }
            Op::Free(items) => {
                for (id, before) in items {
                    outcome.stored += self.head.free_before(id, before) as u64;
                }
            }
            Op::Seal(items) => {
                for (id, before) in items {
                    outcome.stored += self.head.seal_before(id, before) as u64;
                }
            }
        }
        Ok((WriteAck { lsn, durability: self.shared.durability, outcome }, applied))
    }

    /// Takes the state for a checkpoint at the current LSN: seals the WAL segment and starts the next, so
    /// the manifest can name the first segment recovery needs.
    fn begin_checkpoint(&mut self) -> Result<(CheckpointJob, InFlight), StorageError> {
        let seq = self.wal.rotate()?;
        self.last_sync = Instant::now();
        let lsn = Lsn(self.wal.next_lsn().0 - 1);
        let pending = self.head.pending_len();
        let manifest = Manifest {
            checkpoint_lsn: lsn,
            wal_seq: seq,
            metrics: self.metrics.clone(),
            series: self.series.clone(),
            head: self.head.state(),
        };
        Ok((CheckpointJob { manifest }, InFlight { lsn, wal_seq: seq, pending, waiters: Vec::new() }))
    }

    /// Starts a checkpoint on the checkpointer thread, or queues the waiters for the next one if one is in
    /// flight (it may have started before their writes).
    fn start_checkpoint(&mut self, waiters: Vec<Reply<Lsn>>) {
        if self.in_flight.is_some() {
            self.waiting.extend(waiters);
            return;
        }
        match self.begin_checkpoint() {
            Ok((job, mut meta)) => {
                meta.waiters = waiters;
                if self.jobs.send(job).is_err() {
                    let e = StorageError::Closed;
                    self.fail(&e);
                    for w in meta.waiters {
                        let _ = w.send(Err(StorageError::Closed));
                    }
                    return;
                }
                self.in_flight = Some(meta);
            }
            // No room for the segment a checkpoint starts: nothing changed; retry one interval from now.
            Err(StorageError::NotLogged { full, message }) => {
                tracing::warn!(error = %message, "checkpoint not started; the next one tries again");
                self.last_checkpoint = Instant::now();
                for w in waiters {
                    let _ = w.send(Err(StorageError::NotWritten { full, message: message.clone() }));
                }
            }
            Err(e) => {
                self.fail(&e);
                for w in waiters {
                    let _ = w.send(Err(StorageError::PreviousIo(e.to_string())));
                }
            }
        }
    }

    /// Completes the checkpoint in flight once its manifest is durable (or failed).
    fn finish_checkpoint(&mut self, r: Result<(), StorageError>) {
        let Some(meta) = self.in_flight.take() else { return };
        let r = r.and_then(|()| self.complete(meta.lsn, meta.wal_seq, meta.pending));
        match &r {
            // The old manifest stands and the WAL still holds everything: the next checkpoint, one interval
            // from now, tries again; the database stays writable.
            Err(StorageError::NotWritten { message, .. }) => {
                tracing::warn!(error = %message, "checkpoint not written; the next one tries again");
                self.last_checkpoint = Instant::now();
            }
            Err(e) => {
                tracing::error!(error = %e, "checkpoint failed");
                self.fail(e);
            }
            // The pages just synced are clean: the process need not keep the full ones resident.
            Ok(_) => self.shared.request_discard(),
        }
        for w in meta.waiters {
            let _ = w.send(match &r {
                Ok(lsn) => Ok(*lsn),
                Err(StorageError::NotWritten { full, message }) => {
                    Err(StorageError::NotWritten { full: *full, message: message.clone() })
                }
                Err(e) => Err(StorageError::PreviousIo(e.to_string())),
            });
        }
        let waiting = std::mem::take(&mut self.waiting);
        if !waiting.is_empty() {
            let failed = self.shared.failed.lock().clone();
            match failed {
                Some(e) => {
                    for w in waiting {
                        let _ = w.send(Err(StorageError::PreviousIo(e.clone())));
                    }
                }
                None => self.start_checkpoint(waiting),
            }
        }
    }

    /// After the manifest is durable: pages freed before the checkpoint become reusable and the WAL below
    /// it goes.
    fn complete(&mut self, lsn: Lsn, wal_seq: u64, pending: usize) -> Result<Lsn, StorageError> {
        self.head.release_pending(pending);
        self.wal.remove_below(wal_seq)?;
        self.last_checkpoint = Instant::now();
        self.last_checkpoint_lsn = Some(lsn);
        self.shared.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.shared.stats.last_checkpoint_unix_ms.store(unix_ms(), Ordering::Relaxed);
        Ok(lsn)
    }

    /// A whole checkpoint on this thread (at shutdown).
    fn checkpoint(&mut self) -> Result<Lsn, StorageError> {
        let (job, meta) = self.begin_checkpoint()?;
        run_checkpoint_job(&*self.vfs, &self.dir, self.head.head(), &job)?;
        self.complete(meta.lsn, meta.wal_seq, meta.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_tiers_grow_by_a_factor_of_four() {
        let mib = 1u64 << 20;
        let tiers: Vec<u32> = [0, mib - 1, mib, 3 * mib, 4 * mib - 1, 4 * mib, 15 * mib, 16 * mib, 64 * mib]
            .into_iter()
            .map(size_tier)
            .collect();
        assert_eq!(tiers, [0, 0, 1, 1, 1, 2, 2, 3, 4]);
    }

    #[test]
    fn short_chunks_are_gorilla_until_settled_and_long_ones_pco() {
        use crate::storage::codec::Codec::Gorilla;
        for settled in [false, true] {
            assert_eq!(codec_for(1, settled), Gorilla);
            assert_eq!(codec_for(PCO_MIN_VALUES, settled), BLOCK_CODEC);
        }
        assert_eq!(codec_for(PCO_MIN_VALUES - 1, false), Gorilla);
        assert_eq!(codec_for(SETTLED_PCO_MIN_VALUES - 1, true), Gorilla);
        assert_eq!(codec_for(SETTLED_PCO_MIN_VALUES, true), BLOCK_CODEC);
    }
}
