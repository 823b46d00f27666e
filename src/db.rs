//! [`Db`]: the embedded database, typed keys in, samples out. Everything here goes through the engine.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::keys::{validate_name, Key};
use crate::query::index::Index;
use crate::query::selector::Selector;
use crate::query::{self, DebugLevel, NodeHealth, QueryResult, ReadOptions, StatsResult};
use crate::storage::engine::{Engine, EngineOptions, MergePolicy, RecoveryReport, WritePause};
use crate::storage::head::DEFAULT_PAGES_PER_FILE;
use crate::storage::io::{StdVfs, Vfs};
use crate::storage::wal::payload::Sample;
use crate::storage::{Durability, Lsn, MetricConfig, SeriesId};

pub use crate::storage::engine::{WriteAck, WriteOutcome};

/// How a database is opened.
#[derive(Clone)]
pub struct Options {
    /// When writes are acknowledged. Default: [`Durability::Sync`], so an acknowledged sample is on disk.
    pub durability: Durability,
    /// Bytes per WAL segment. Default 64 MiB; at least 64 KiB.
    pub segment_size: u64,
    /// Pages per head file, header page included. Default 4096 (16 MiB files of 4 KiB pages). Only for a new
    /// data directory (an existing one keeps its own); `pages_per_file × 8 × page_slots` must be a multiple of
    /// 4096.
    pub pages_per_file: u32,
    /// Values per head page (the page class): a power of two from 8 to 512. Default 512 (4 KiB pages, as
    /// cc-metric-store's buffers). Smaller pages keep less memory per series that is being written (one open
    /// page each) at the cost of more pages per series. Only for a new data directory.
    pub page_slots: u32,
    /// Most series the database may hold, a cardinality limit against runaway tags (0, the default: no limit
    /// but the 2^32 − 2 series ids). A write that would define more is refused whole.
    pub max_series: u32,
    /// Time between scheduled checkpoints (`None`: only on [`Db::checkpoint`] and on close). Default 5 min.
    pub checkpoint_interval: Option<Duration>,
    /// The file system; default the real one. Tests pass a `storage::io::sim::SimVfs`.
    pub vfs: Arc<dyn Vfs>,
    /// How long data stays in the head (cc-metric-store's `retention-in-memory`): older pages are freed,
    /// except below the levels [`Db::set_retention_keep`] names. `None` (default): kept until freed. With
    /// [`Options::compaction`], a series' newest page stays in the head whatever its age until it is full,
    /// so that a writer catching up on a backlog keeps filling it: only full pages are compacted and sealed.
    /// (A series that stopped mid-page keeps that page in the head until the memory cap or a free takes it.)
    pub retention: Option<Duration>,
    /// Most bytes of head pages in use; past it the oldest pages go first. 0 (default): no cap.
    pub memory_cap_bytes: u64,
    /// Whether pages that leave the head by retention or the memory cap are first compacted into block
    /// files (default), where queries still find them, or dropped.
    pub compaction: bool,
    /// How long blocks are kept (long-term retention): a block whose every slot is older goes, archived
    /// first when `archive_dir` is set. `None` (default): kept for ever.
    pub block_retention: Option<Duration>,
    /// Where blocks past `block_retention` are archived as Parquet (cc-metric-store's long format, one
    /// file per cluster and time range). `None` (default): they are deleted.
    pub archive_dir: Option<std::path::PathBuf>,
    /// How often retention and the memory cap are enforced in the background. Default 1 s.
    pub maintenance_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Sync,
            segment_size: 64 << 20,
            pages_per_file: DEFAULT_PAGES_PER_FILE,
            page_slots: crate::storage::head::file::DEFAULT_PAGE_SLOTS as u32,
            max_series: 0,
            checkpoint_interval: Some(Duration::from_secs(300)),
            vfs: Arc::new(StdVfs),
            retention: None,
            memory_cap_bytes: 0,
            compaction: true,
            block_retention: None,
            archive_dir: None,
            maintenance_interval: Duration::from_secs(1),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("durability", &self.durability)
            .field("segment_size", &self.segment_size)
            .field("pages_per_file", &self.pages_per_file)
            .field("page_slots", &self.page_slots)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("retention", &self.retention)
            .field("memory_cap_bytes", &self.memory_cap_bytes)
            .field("compaction", &self.compaction)
            .finish_non_exhaustive()
    }
}

/// Retention compacts pages up to a multiple of this many seconds (an hour).
const COMPACTION_STEP: i64 = 3600;

/// Blocks smaller than this are merged with their neighbours, up to this size (see `Engine::merge_blocks`).
const MERGE_TARGET_BYTES: u64 = 256 << 20;

/// The most bytes of blocks of short chunks merged at once when pages stop leaving the head (see
/// `MergePolicy::Settle`); merges stream, so this bounds the extra disk a merge takes, not its memory.
const SETTLE_TARGET_BYTES: u64 = 2 << 30;

/// Most size-tier merges in one compacting maintenance pass (each merges one run of blocks).
const MAX_TIERED_MERGES_PER_PASS: usize = 8;

#[derive(Clone, Debug)]
struct KeyedSample {
    path: usize,
    metric: usize,
    ts: i64,
    value: f64,
}

/// Samples to write together. Samples for a metric that is not declared are counted, not stored.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    paths: Vec<Vec<u8>>,
    path_index: HashMap<Vec<u8>, usize>,
    metrics: Vec<String>,
    keyed: Vec<KeyedSample>,
    by_id: Vec<Sample>,
    scratch: Vec<u8>,
    unknown: u64,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sample of `metric` at `key` (unix seconds).
    pub fn push(&mut self, key: &impl Key, metric: &str, ts: i64, value: f64) {
        self.scratch.clear();
        key.path().encode(&mut self.scratch);
        let path = match self.path_index.get(&self.scratch) {
            Some(&i) => i,
            None => {
                self.paths.push(self.scratch.clone());
                self.path_index.insert(self.scratch.clone(), self.paths.len() - 1);
                self.paths.len() - 1
            }
        };
        let metric = match self.metrics.iter().position(|m| m == metric) {
            Some(i) => i,
            None => {
                self.metrics.push(metric.to_owned());
                self.metrics.len() - 1
            }
        };
        self.keyed.push(KeyedSample { path, metric, ts, value });
    }

    /// Adds a sample of a series interned with [`Db::series_id`] (the fast path: no name lookups).
    pub fn push_id(&mut self, id: SeriesId, ts: i64, value: f64) {
        self.by_id.push(Sample { series: id, ts, value });
    }

    /// Counts `n` samples of metrics that are not declared, resolved by the caller (for the ack).
    pub(crate) fn add_unknown(&mut self, n: u64) {
        self.unknown += n;
    }

    /// Number of samples (those counted with `add_unknown` included).
    pub fn len(&self) -> usize {
        self.keyed.len() + self.by_id.len() + self.unknown as usize
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every sample, keeping the allocations.
    pub fn clear(&mut self) {
        self.paths.clear();
        self.path_index.clear();
        self.metrics.clear();
        self.keyed.clear();
        self.by_id.clear();
        self.unknown = 0;
    }
}

/// Values of one series over a range.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadResult {
    /// Time of the first value (the requested `from` if there is no data).
    pub from: i64,
    /// One step past the last value (equal to `from` if there is no data).
    pub to: i64,
    /// Seconds between values.
    pub frequency: i64,
    /// Values, NaN for missing steps.
    pub values: Vec<f64>,
}

/// Statistics over a range, as cc-metric-store's `stats`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// Non-NaN values.
    pub samples: u64,
    /// Their average.
    pub avg: f64,
    /// Their minimum.
    pub min: f64,
    /// Their maximum.
    pub max: f64,
}

/// An open database. `Send + Sync`: share it between threads with an `Arc`.
pub struct Db {
    inner: Arc<Inner>,
    maintenance: parking_lot::Mutex<Option<(crossbeam_channel::Sender<()>, std::thread::JoinHandle<()>)>>,
}

struct Inner {
    engine: Engine,
    index: parking_lot::RwLock<Index>,
    /// Levels kept past retention (cc-metric-store keeps the nodes of running jobs).
    keep: parking_lot::RwLock<Vec<Selector>>,
    retention: Option<Duration>,
    memory_cap_bytes: u64,
    compaction: bool,
    block_retention: Option<Duration>,
    archive_dir: Option<std::path::PathBuf>,
    /// Wakes the maintenance thread at once when a write finds the head over its cap.
    nudge: crossbeam_channel::Sender<()>,
    /// Write taps ([`crate::tap`]): subscribers to the samples of every write.
    taps: crate::tap::Taps,
}

impl Inner {
    fn enforce_retention(&self, now: i64) -> Result<u64, Error> {
        let Some(r) = self.retention else { return Ok(0) };
        let keep = self.keep.read().clone();
        let mut before = now.saturating_sub(i64::try_from(r.as_secs()).unwrap_or(i64::MAX));
        if self.compaction {
            // Compact in hourly steps, so that blocks gather an hour of pages rather than a few per pass.
            before = before.div_euclid(COMPACTION_STEP) * COMPACTION_STEP;
        }
        // Compacting retention spares each series' newest page until it is full: a backfill far behind the
        // clock keeps filling it instead of having its next samples refused by the seal.
        let n = query::free_except(&self.engine, &self.index, &keep, before, self.compaction, self.compaction)?;
        if self.compaction {
            if n > 0 {
                // While pages keep leaving the head, merge by size tier; once they stop, merge what is left.
                // Every tier that is due is merged now, not one run a pass: a backfill compacts several
                // blocks a pass, and blocks left waiting keep their descriptors in memory.
                for _ in 0..MAX_TIERED_MERGES_PER_PASS {
                    if self.engine.merge_blocks_with(MERGE_TARGET_BYTES, MergePolicy::Tiered)? == 0 {
                        break;
                    }
                }
                // The pages just freed become reusable once a checkpoint records them free: without it the
                // head would grow by every page compacted until the next scheduled checkpoint.
                self.engine.checkpoint()?;
            } else {
                self.engine.merge_blocks_with(SETTLE_TARGET_BYTES, MergePolicy::Settle)?;
            }
        }
        if let Some(long) = self.block_retention {
            let before = now.saturating_sub(i64::try_from(long.as_secs()).unwrap_or(i64::MAX));
            crate::export::archive_blocks(&self.engine, before, self.archive_dir.as_deref())?;
        }
        Ok(n)
    }

    fn enforce_memory_cap(&self) -> Result<u64, Error> {
        if self.memory_cap_bytes == 0 {
            return Ok(0);
        }
        let page = self.engine.head().page_bytes();
        let used = self.engine.head().pages_in_use() * page;
        if used <= self.memory_cap_bytes {
            return Ok(0);
        }
        // With compaction, the freed pages move into blocks and nothing leaves the database: free down to
        // three quarters of the cap, so that writes (refused past the cap, `over_memory_cap`) have room until
        // the next pass. Without it, freeing drops data: free down to the cap only, as cc-metric-store does.
        let target =
            if self.compaction { self.memory_cap_bytes - self.memory_cap_bytes / 4 } else { self.memory_cap_bytes };
        let excess = ((used - target).div_ceil(page)) as usize;
        let Some(cutoff) = query::oldest_pages_cutoff(&self.engine, &self.index, excess) else { return Ok(0) };
        let freed = query::free_except(&self.engine, &self.index, &[], cutoff, self.compaction, false)?;
        if self.compaction {
            self.engine.merge_blocks_with(MERGE_TARGET_BYTES, MergePolicy::Tiered)?;
        }
        // Freed pages become reusable once a checkpoint records them free.
        self.engine.checkpoint()?;
        Ok(freed)
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("dir", &self.inner.engine.dir()).finish_non_exhaustive()
    }
}

impl Db {
    /// Opens the database in `path`, creating it if needed and recovering what a crash left.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<Db, Error> {
        let engine = Engine::open(
            options.vfs.clone(),
            path.as_ref(),
            EngineOptions {
                durability: options.durability,
                segment_size: options.segment_size,
                pages_per_file: options.pages_per_file,
                page_slots: options.page_slots,
                max_series: options.max_series,
                checkpoint_interval: options.checkpoint_interval,
            },
        )?;
        let (nudge, nudged) = crossbeam_channel::bounded::<()>(1);
        let inner = Arc::new(Inner {
            nudge,
            engine,
            index: parking_lot::RwLock::new(Index::default()),
            keep: parking_lot::RwLock::new(Vec::new()),
            retention: options.retention,
            memory_cap_bytes: options.memory_cap_bytes,
            compaction: options.compaction,
            block_retention: options.block_retention,
            archive_dir: options.archive_dir.clone(),
            taps: crate::tap::Taps::default(),
        });
        let maintenance = if inner.retention.is_some() || inner.memory_cap_bytes > 0 || inner.block_retention.is_some()
        {
            let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
            let worker = inner.clone();
            let interval = options.maintenance_interval.max(Duration::from_millis(1));
            let handle = std::thread::Builder::new()
                .name("silt-maintenance".into())
                .spawn(move || maintain(&worker, &stopped, &nudged, interval))
                .map_err(|e| crate::storage::StorageError::io("spawn maintenance thread", path.as_ref(), e))?;
            Some((stop, handle))
        } else {
            None
        };
        Ok(Db { inner, maintenance: parking_lot::Mutex::new(maintenance) })
    }

    /// Declares a metric (idempotent for the same configuration; another configuration is an error).
    pub fn declare_metric(&self, name: &str, config: MetricConfig) -> Result<(), Error> {
        validate_name("metric", name)?;
        if config.frequency < 1 {
            return Err(Error::InvalidArgument(format!("metric {name:?}: frequency {} < 1", config.frequency)));
        }
        match self.inner.engine.declare_metric(name, config)? {
            Ok(_) => Ok(()),
            Err(existing) => Err(Error::MetricConflict { name: name.to_owned(), existing, requested: config }),
        }
    }

    /// A metric's configuration, if declared.
    pub fn metric(&self, name: &str) -> Option<MetricConfig> {
        self.inner.engine.metric(name).map(|(_, c)| c)
    }

    /// The id of the series `key` + `metric`, interning it if new.
    pub fn series_id(&self, key: &impl Key, metric: &str) -> Result<SeriesId, Error> {
        let (m, _) = self.inner.engine.metric(metric).ok_or_else(|| Error::UnknownMetric(metric.to_owned()))?;
        let path = key.path().to_bytes();
        Ok(self.inner.engine.intern(&[(m, &path)])?[0])
    }

    /// The ids of many series at once, interning new ones in one engine call: `wanted` holds encoded paths
    /// ([`crate::keys::SeriesPath::to_bytes`]) and metric names; `None` where the metric is not declared.
    pub(crate) fn intern_paths(&self, wanted: &[(&[u8], &str)]) -> Result<Vec<Option<SeriesId>>, Error> {
        let metric_ids: Vec<Option<u32>> =
            wanted.iter().map(|(_, m)| self.inner.engine.metric(m).map(|(id, _)| id)).collect();
        let known: Vec<(u32, &[u8])> =
            wanted.iter().zip(&metric_ids).filter_map(|(&(p, _), m)| m.map(|m| (m, p))).collect();
        let mut ids = self.inner.engine.intern(&known)?.into_iter();
        Ok(metric_ids.iter().map(|m| m.and_then(|_| ids.next())).collect())
    }

    /// Writes a batch. The acknowledgement says under which durability it was given and counts every sample
    /// as stored or not (too old, unknown metric, out of range). Once the engine accepted it, the write taps
    /// ([`Db::tap`]) get their samples.
    pub fn write(&self, batch: &Batch) -> Result<WriteAck, Error> {
        let mut samples = Vec::with_capacity(batch.len());
        let count = self.inner.engine.series_count();
        for s in &batch.by_id {
            if s.series.0 as usize >= count {
                return Err(Error::InvalidArgument(format!("series id {} was never interned", s.series.0)));
            }
        }
        samples.extend_from_slice(&batch.by_id);
        let mut unknown = batch.unknown;
        if !batch.keyed.is_empty() {
            let metric_ids: Vec<Option<u32>> =
                batch.metrics.iter().map(|m| self.inner.engine.metric(m).map(|(id, _)| id)).collect();
            // Intern each distinct (metric, path) once.
            let mut pairs: Vec<(u32, usize)> = Vec::new();
            let mut pair_index: HashMap<(u32, usize), usize> = HashMap::new();
            let mut which = Vec::with_capacity(batch.keyed.len());
            for k in &batch.keyed {
                match metric_ids[k.metric] {
                    None => which.push(usize::MAX),
                    Some(m) => {
                        let next = pairs.len();
                        let i = *pair_index.entry((m, k.path)).or_insert(next);
                        if i == next {
                            pairs.push((m, k.path));
                        }
                        which.push(i);
                    }
                }
            }
            let wanted: Vec<(u32, &[u8])> = pairs.iter().map(|&(m, p)| (m, batch.paths[p].as_slice())).collect();
            let ids = self.inner.engine.intern(&wanted)?;
            for (k, &w) in batch.keyed.iter().zip(&which) {
                if w == usize::MAX {
                    unknown += 1;
                } else {
                    samples.push(Sample { series: ids[w], ts: k.ts, value: k.value });
                }
            }
        }
        let (ack, samples) = self.inner.engine.write_returning(samples, unknown)?;
        // Write taps (crate::tap): one relaxed load when there are none. Selected after the engine applied the
        // write, so a write that misses a tap made meanwhile was applied before it (see `Db::pause_writes`).
        if let Some(t) = self.inner.taps.select(&self.inner.engine, &samples) {
            t.deliver(ack.lsn);
        }
        let cap = self.inner.memory_cap_bytes;
        if cap > 0 && self.head_bytes_in_use() > cap {
            let _ = self.inner.nudge.try_send(());
        }
        Ok(ack)
    }

    /// Reads `metric` at `key` from `from` to `to` at the metric's frequency (cc-metric-store's `read`: see
    /// [`crate::query`]). If the key's level lacks the metric, its children are aggregated. An unknown metric
    /// or `from > to` is an error; a key never written is an empty result.
    pub fn read(&self, key: &impl Key, metric: &str, from: i64, to: i64) -> Result<ReadResult, Error> {
        let r = self.query(&Selector::exact(&key.path()), metric, from, to, ReadOptions::default())?;
        Ok(ReadResult { from: r.from, to: r.to, frequency: r.resolution, values: r.values })
    }

    /// Reads `metric` over the series a selector covers, aggregated, resampled and padded as `opts` say.
    pub fn query(
        &self,
        sel: &Selector,
        metric: &str,
        from: i64,
        to: i64,
        opts: ReadOptions,
    ) -> Result<QueryResult, Error> {
        Ok(query::read(&self.inner.engine, &self.inner.index, sel, metric, from, to, opts)?)
    }

    /// Samples, average, minimum and maximum of the non-NaN values of `metric` at `key` with nominal times
    /// in `[from, to)`, aggregated over children as [`Db::read`] is (for `max`/`min` over several children:
    /// the stats of the aggregated series, see [`crate::query`]). `samples == 0` means there were none (and
    /// avg/min/max are NaN).
    pub fn stats(&self, key: &impl Key, metric: &str, from: i64, to: i64) -> Result<Stats, Error> {
        let r = self.query_stats(&Selector::exact(&key.path()), metric, from, to)?;
        Ok(Stats { samples: r.samples, avg: r.avg, min: r.min, max: r.max })
    }

    /// Stats over the series a selector covers (see [`crate::query`]).
    pub fn query_stats(&self, sel: &Selector, metric: &str, from: i64, to: i64) -> Result<StatsResult, Error> {
        Ok(query::stats(&self.inner.engine, &self.inner.index, sel, metric, from, to)?)
    }

    /// [`Db::stats`] for one interned series id.
    pub fn stats_by_id(&self, id: SeriesId, from: i64, to: i64) -> Stats {
        let h = self.inner.engine.head().stats(id, from, to);
        if h.samples == 0 {
            return Stats { samples: 0, avg: f64::NAN, min: f64::NAN, max: f64::NAN };
        }
        Stats { samples: h.samples, avg: h.sum / h.samples as f64, min: h.min, max: h.max }
    }

    /// Frees, in every series at or below the levels a selector names, the pages whose every slot lies
    /// before `before` (cc-metric-store's `free`). Returns the pages freed. They are reused after the next
    /// checkpoint.
    pub fn free_selector(&self, sel: &Selector, before: i64) -> Result<u64, Error> {
        Ok(query::free(&self.inner.engine, &self.inner.index, sel, before)?)
    }

    /// Compacts, in every series at or below the levels a selector names, the pages whose every slot lies
    /// before `before` into a block file, and frees them from the head: they stay readable. Returns the
    /// pages compacted. (Retention and the memory cap do this on their own with [`Options::compaction`].)
    pub fn compact_selector(&self, sel: &Selector, before: i64) -> Result<u64, Error> {
        Ok(query::compact(&self.inner.engine, &self.inner.index, sel, before)?)
    }

    /// Frees pages older than `before` everywhere except at or below the levels the `keep` selectors name.
    pub fn free_except(&self, keep: &[Selector], before: i64) -> Result<u64, Error> {
        Ok(query::free_except(&self.inner.engine, &self.inner.index, keep, before, false, false)?)
    }

    /// cc-metric-store's health check of `nodes` of `cluster` against the `metrics` expected there, at `now`.
    pub fn health(&self, cluster: &str, nodes: &[String], metrics: &[String], now: i64) -> Vec<(String, NodeHealth)> {
        query::health(&self.inner.engine, &self.inner.index, cluster, nodes, metrics, now)
    }

    /// Every series at or below the levels a selector names (any metric): id, metric name, path.
    pub fn series_under(&self, sel: &Selector) -> Vec<(SeriesId, String, crate::keys::SeriesPath)> {
        query::series_under(&self.inner.engine, &self.inner.index, sel)
            .into_iter()
            .filter_map(|id| self.series_name(id).map(|(m, p)| (id, m, p)))
            .collect()
    }

    /// The metric name and path of a series.
    pub fn series_name(&self, id: SeriesId) -> Option<(String, crate::keys::SeriesPath)> {
        crate::export::series_name(&self.inner.engine, id)
    }

    /// The time `t mod frequency` at which series `id`'s slots have their nominal times (from its oldest head
    /// page, else from a block chunk), if it holds anything.
    pub(crate) fn grid_phase(&self, id: SeriesId, frequency: i64) -> Result<Option<i64>, Error> {
        let engine = &self.inner.engine;
        let mut start = engine.head().pages(id).and_then(|(p, _)| p.first().map(|p| p.start));
        if start.is_none() {
            let blocks = engine.blocks();
            start = query::source::chunks(&blocks, id, i64::MIN, i64::MAX)?.first().map(|(_, c)| c.start);
        }
        Ok(start.map(|start| (start + frequency / 2).rem_euclid(frequency)))
    }

    /// The names of the children of a selector's levels, sorted (cc-metric-store's `ListChildren`).
    pub fn children(&self, sel: &Selector) -> Vec<String> {
        query::children(&self.inner.engine, &self.inner.index, sel)
    }

    /// The tree below a selector's levels with pages and bytes per metric (cc-metric-store's `/api/debug`).
    pub fn debug(&self, sel: &Selector) -> Vec<DebugLevel> {
        query::debug(&self.inner.engine, &self.inner.index, sel)
    }

    /// Frees the pages of `metric` at `key` whose every slot lies before `before`; returns how many pages.
    pub fn free(&self, key: &impl Key, metric: &str, before: i64) -> Result<u64, Error> {
        let (m, _) = self.inner.engine.metric(metric).ok_or_else(|| Error::UnknownMetric(metric.to_owned()))?;
        let Some(id) = self.inner.engine.lookup_series(m, &key.path().to_bytes()) else { return Ok(0) };
        Ok(self.inner.engine.free(vec![(id, before)])?)
    }

    /// Pauses the engine's writer once every write sent to it before the call is applied, until the returned
    /// guard is dropped: a read of this database while the guard is held sees exactly the writes whose
    /// acknowledgement LSN is at most [`WritePause::lsn`]. Ingest waits meanwhile, so hold it briefly, and
    /// never write, sync or checkpoint while holding it (that would wait for the paused writer for ever).
    ///
    /// With a write tap ([`Db::tap`]) made before the pause, every write is either applied before the pause
    /// or delivered to the tap (write taps select their samples after the engine applied the write), and a
    /// tap batch whose [`crate::tap::TapBatch::lsn`] is at most the pause's LSN is one the read saw: the
    /// stream engine's live source uses this to replay from the store without a gap or a duplicate.
    pub(crate) fn pause_writes(&self) -> Result<WritePause, Error> {
        Ok(self.inner.engine.pause()?)
    }

    /// Every series of the metric with id `metric` at or below the selector's levels (at any depth, as
    /// [`Db::tap`] selects them), and how many series the registry held when they were listed: the ones
    /// defined since are in `self.engine().series_since(n)`.
    pub(crate) fn series_of(&self, sel: &Selector, metric: u32) -> (Vec<(SeriesId, crate::keys::SeriesPath)>, usize) {
        let (ids, seen) = query::series_of_metric(&self.inner.engine, &self.inner.index, sel, metric);
        let paths = ids
            .into_iter()
            .filter_map(|id| {
                let (_, bytes) = self.inner.engine.series_info(id)?;
                let (path, _) = crate::keys::SeriesPath::decode(&bytes).ok()?;
                Some((id, path))
            })
            .collect();
        (paths, seen)
    }

    /// The nominal time of the newest stored slot of series `id` (of frequency `f`), from the head, else
    /// from the blocks (which hold only what is older than the head's pages); `None` if it holds nothing.
    pub(crate) fn stored_last(&self, id: SeriesId, f: i64) -> Result<Option<i64>, Error> {
        let engine = &self.inner.engine;
        if let Some(t) = engine.head().last_time(id) {
            return Ok(Some(t));
        }
        let blocks = engine.blocks();
        let found = query::source::chunks(&blocks, id, i64::MIN, i64::MAX)?;
        let ends = found.iter().filter(|(_, c)| c.count > 0 && c.frequency == f);
        Ok(ends.map(|(_, c)| c.end() - f + f / 2).max())
    }

    /// The nominal time of the oldest stored slot of series `id` (of frequency `f`), from the blocks, else
    /// from the head; `None` if it holds nothing.
    pub(crate) fn stored_first(&self, id: SeriesId, f: i64) -> Result<Option<i64>, Error> {
        let engine = &self.inner.engine;
        let blocks = engine.blocks();
        let found = query::source::chunks(&blocks, id, i64::MIN, i64::MAX)?;
        let starts = found.iter().filter(|(_, c)| c.count > 0 && c.frequency == f);
        let first = starts.map(|(_, c)| c.start + f / 2).min();
        Ok(first.or_else(|| engine.head().pages(id).and_then(|(p, _)| p.first().map(|p| p.start + f / 2))))
    }

    /// Series `id` (of frequency `f`) at `t0 + k*f` for `k` in `0..n` into `out` (cleared first): the value
    /// of the slot holding each time, NaN where it holds none, from the head and the blocks.
    pub(crate) fn sample_series(
        &self,
        id: SeriesId,
        f: i64,
        t0: i64,
        n: usize,
        out: &mut Vec<f64>,
    ) -> Result<(), Error> {
        query::sample_series(&self.inner.engine, id, f, t0, n, out)?;
        Ok(())
    }

    /// Checkpoints now: the head is made durable and the WAL below the returned LSN is dropped.
    pub fn checkpoint(&self) -> Result<Lsn, Error> {
        Ok(self.inner.engine.checkpoint()?)
    }

    /// What recovery found when the database opened.
    pub fn recovery(&self) -> &RecoveryReport {
        self.inner.engine.recovery()
    }

    /// The write taps, for [`Db::tap`] (in [`crate::tap`]).
    pub(crate) fn taps(&self) -> &crate::tap::Taps {
        &self.inner.taps
    }

    /// The engine underneath, for layers above (query, ingest) and tests.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Names the levels kept past retention (replacing the previous set), e.g. the nodes of running jobs.
    pub fn set_retention_keep(&self, keep: Vec<Selector>) {
        *self.inner.keep.write() = keep;
    }

    /// Frees everything older than `now - retention` except the kept levels (what the background thread
    /// does). Returns the pages freed.
    pub fn enforce_retention(&self, now: i64) -> Result<u64, Error> {
        self.inner.enforce_retention(now)
    }

    /// If head pages in use exceed the cap, frees the oldest pages over all series until they do not, and
    /// checkpoints so the pages can be reused (what the background thread does). Returns the pages freed.
    pub fn enforce_memory_cap(&self) -> Result<u64, Error> {
        self.inner.enforce_memory_cap()
    }

    /// The head memory cap in bytes ([`Options::memory_cap_bytes`]; 0: none).
    pub fn memory_cap_bytes(&self) -> u64 {
        self.inner.memory_cap_bytes
    }

    /// Whether the head holds more than its memory cap, so that new writes should wait for the background
    /// pass to catch up: the server then refuses writes with 503 rather than let the head grow past the cap.
    /// (A compacting pass frees the head down to three quarters of the cap, so a server that runs at its cap
    /// keeps taking writes.) Always false without a cap.
    pub fn over_memory_cap(&self) -> bool {
        let cap = self.inner.memory_cap_bytes;
        cap > 0 && self.head_bytes_in_use() > cap
    }

    /// Bytes of head pages in use (owned by series, or freed and awaiting a checkpoint).
    pub fn head_bytes_in_use(&self) -> u64 {
        self.inner.engine.head().pages_in_use() * self.inner.engine.head().page_bytes()
    }

    // ---- Durability barrier and named state blobs (stream checkpoints, issue 7) ----------------------

    /// Returns once every write acknowledged before the call is durable in the WAL, whatever
    /// [`Durability`] the database was opened with: under `IntervalMs` and `None` the WAL is fsynced now,
    /// under `Sync` it returns at once (acknowledged writes are durable already). A failed fsync makes the
    /// database read-only, as for a write.
    pub fn sync(&self) -> Result<(), Error> {
        Ok(self.inner.engine.sync()?)
    }

    /// Replaces the named state blob with `bytes`, atomically and durably: it is written to
    /// `<data dir>/state/<name>.tmp`, fsynced, renamed over `state/<name>`, and `state/` is fsynced. On `Ok`
    /// the new value is durable; on an error the blob holds the old value or the new one, also after a
    /// crash, never a mix. Blobs are opaque to silt (pipelines store `format/checkpoint.md` checkpoints);
    /// keep them small, each is written whole.
    ///
    /// `name`: 1 to 200 bytes; no `/`, `\` or NUL; no `..`; not starting with `.`; not ending in `.tmp`
    /// (otherwise [`StorageError::InvalidName`](crate::storage::StorageError::InvalidName)).
    pub fn put_state(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        Ok(self.inner.engine.put_state(name, bytes)?)
    }

    /// The named state blob [`Db::put_state`] stored last, or `None` if there is none.
    pub fn state(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.inner.engine.state(name)?)
    }

    /// Removes the named state blob durably; returns whether there was one.
    pub fn delete_state(&self, name: &str) -> Result<bool, Error> {
        Ok(self.inner.engine.delete_state(name)?)
    }

    // ---- end of durability barrier and state blobs ----------------------------------------------------

    fn stop_maintenance(&self) {
        if let Some((stop, handle)) = self.maintenance.lock().take() {
            drop(stop);
            let _ = handle.join();
        }
    }

    /// Checkpoints and closes. Dropping a `Db` does the same, ignoring errors.
    pub fn close(self) -> Result<(), Error> {
        self.stop_maintenance();
        Ok(self.inner.engine.close()?)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.stop_maintenance();
    }
}

/// Seconds since the Unix epoch by the wall clock (0 if the clock is before it).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The maintenance thread: enforces the memory cap and retention every interval until the `Db` goes. Each
/// pass walks the series index once (a few ms per 100,000 series).
fn maintain(
    inner: &Inner,
    stopped: &crossbeam_channel::Receiver<()>,
    nudged: &crossbeam_channel::Receiver<()>,
    interval: Duration,
) {
    loop {
        crossbeam_channel::select! {
            recv(stopped) -> _ => return,
            recv(nudged) -> _ => {}
            default(interval) => {}
        }
        if let Err(e) = inner.enforce_memory_cap() {
            tracing::warn!(error = %e, "enforcing the memory cap failed");
        }
        if let Err(e) = inner.enforce_retention(unix_now()) {
            tracing::warn!(error = %e, "enforcing retention failed");
        }
    }
}
