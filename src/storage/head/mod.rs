//! The head: recent samples in mmapped pages of `page_slots` `f64` (a power of two from 8 to 512, fixed per data
//! directory; 512 in directories made before page classes). Spec of the files: `format/head.md`.
//!
//! **Grid.** A series' first write at `ts` fixes its grid origin `ts - F/2` (F = the metric's frequency).
//! Slot `s` covers `[origin + s*F, origin + (s+1)*F)`; its nominal time is `origin + s*F + F/2`, so a timestamp
//! snaps to the nearest multiple of F from the first write. With `P` slots per page, page `n` of a series holds
//! slots `P*n .. P*n+P-1` and starts at `origin + P*n*F`. A series is a list of pages sorted by start (the on-disk chain links each
//! page to the previous, older one); a page exists only where something was written, so a gap of more than a
//! page costs nothing, and a timestamp past the newest page starts a new page. A full page is never copied.
//!
//! **Writes** (the single writer thread, [`HeadWriter`]): a slot written twice keeps the last value; writing
//! slot `k` of a page whose length is `len <= k` fills slots `len..k` with NaN first and then publishes
//! `len = k + 1`. Slots at or past `len` are undefined (they may hold bytes from before a crash or from an
//! earlier owner of the page) and are never read. A write to a page below the series' floor (older than its
//! oldest page, or freed) is not stored and is reported as too old.
//!
//! **Readers** run concurrently with the writer without locks on values: values are `AtomicU64` stores and
//! loads (never torn); a page's length is published with `Release` after its values and loaded with `Acquire`.
//! A reader takes a snapshot of a series' page list (an `Arc<[PageRef]>`) and holds the `reclaim` read lock
//! while it reads, so no page it may touch is handed to another series meanwhile.
//!
//! **Free pages.** A freed page goes to `pending` and only becomes reusable once a checkpoint that records it
//! as free is durable (else a crash could leave the manifest pointing at a page whose bytes were overwritten by
//! its new owner), and only under the `reclaim` write lock. Files are reused through the free list before a
//! new file is created.
//!
//! **A full disk.** A head file is allocated whole when it is created (`fallocate`), so a store through the
//! map never meets a full disk (on a sparse file it would be a SIGBUS). The writer makes sure of the files a
//! write's samples need before it logs the write ([`HeadWriter::reserve`]): a file the disk has no room for
//! refuses the write before anything of it is in the WAL, and applying a logged write never creates a file.

pub mod file;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::storage::error::{CorruptionKind, StorageError};
use crate::storage::io::Vfs;
use crate::storage::SeriesId;
use file::{load, store, HeadFile};

/// Largest absolute timestamp accepted (2^50 s), so grid arithmetic never overflows.
pub const MAX_ABS_TS: i64 = 1 << 50;
/// Largest frequency accepted (one year in seconds).
pub const MAX_FREQUENCY: i64 = 366 * 86_400;

/// Clamps a query range to where data can be (well inside ±2^52 s), so slot arithmetic never overflows.
fn clamp_range(from: i64, to: i64) -> (i64, i64) {
    const LIMIT: i64 = 4 * MAX_ABS_TS;
    (from.clamp(-LIMIT, LIMIT), to.clamp(-LIMIT, LIMIT))
}

/// Four independent lanes of count/sum/min/max, so the scan is not one long dependency chain.
struct Acc4 {
    n: [u64; 4],
    sum: [f64; 4],
    min: [f64; 4],
    max: [f64; 4],
}

impl Acc4 {
    #[allow(clippy::needless_range_loop)] // four lanes in step
    fn fold(&self, version: u32) -> file::PageStats {
        let mut p = file::PageStats { version, samples: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY };
        for k in 0..4 {
            p.samples += self.n[k];
            p.sum += self.sum[k];
            p.min = p.min.min(self.min[k]);
            p.max = p.max.max(self.max[k]);
        }
        p
    }
}

impl Default for Acc4 {
    fn default() -> Self {
        Acc4 { n: [0; 4], sum: [0.0; 4], min: [f64::INFINITY; 4], max: [f64::NEG_INFINITY; 4] }
    }
}

#[inline]
#[allow(clippy::needless_range_loop)] // indexing four lanes in step is the point
fn scan_stats(words: &[std::sync::atomic::AtomicU64], acc: &mut Acc4) {
    let mut chunks = words.chunks_exact(4);
    for c in &mut chunks {
        for k in 0..4 {
            let v = load(&c[k]);
            if !v.is_nan() {
                acc.n[k] += 1;
                acc.sum[k] += v;
                acc.min[k] = if v < acc.min[k] { v } else { acc.min[k] };
                acc.max[k] = if v > acc.max[k] { v } else { acc.max[k] };
            }
        }
    }
    for w in chunks.remainder() {
        let v = load(w);
        if !v.is_nan() {
            acc.n[0] += 1;
            acc.sum[0] += v;
            acc.min[0] = acc.min[0].min(v);
            acc.max[0] = acc.max[0].max(v);
        }
    }
}

/// A page of a series: its global page number and the start time of its first slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRef {
    /// Global page number: `file * pages_per_file + page_in_file`.
    pub no: u32,
    /// Start of the page's first slot.
    pub start: i64,
}

/// The state of one series that readers share.
pub struct SharedSeries {
    frequency: i64,
    pages: RwLock<Arc<[PageRef]>>,
    /// Writes before this time (a page boundary) are refused, after a free or a seal; `i64::MIN` if none.
    floor_time: std::sync::atomic::AtomicI64,
}

/// What a sampling walk found: the range of steps with data (if any), and the series' extent in the head,
/// `[first page start, one past its last defined slot)` (if it has pages).
pub type SampleExtent = (Option<(usize, usize)>, Option<(i64, i64)>);

/// The readable side of the head.
pub struct Head {
    /// Pages owned by series or freed but not yet reusable: the head memory a cap counts.
    in_use: std::sync::atomic::AtomicU64,
    pages_per_file: u32,
    /// Values per page.
    page_slots: u32,
    files: RwLock<Vec<Arc<HeadFile>>>,
    series: RwLock<Vec<Arc<SharedSeries>>>,
    reclaim: RwLock<()>,
}

/// The values of one series over a range, as [`Head::read`] returns them.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadRead {
    /// Nominal time of the first value.
    pub from: i64,
    /// Nominal time one step past the last value.
    pub to: i64,
    /// Seconds between values.
    pub frequency: i64,
    /// Values; NaN where nothing was written.
    pub values: Vec<f64>,
}

/// Count, sum, minimum and maximum over the non-NaN values of a range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeadStats {
    /// Non-NaN values seen.
    pub samples: u64,
    /// Their sum.
    pub sum: f64,
    /// Their minimum (+inf if none).
    pub min: f64,
    /// Their maximum (-inf if none).
    pub max: f64,
}

/// Per-series state as a checkpoint records it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SeriesState {
    /// Grid origin, once the series was first written.
    pub origin: Option<i64>,
    /// Lowest page number (on the series' grid) that may still be written.
    pub floor: i64,
    /// Pages sorted by start, with their lengths.
    pub pages: Vec<(PageRef, u16)>,
}

/// The head's part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HeadState {
    /// Pages per head file, the header page included.
    pub pages_per_file: u32,
    /// Values per page: a power of two from 8 to 512 (0 in a default value: not yet set).
    pub page_slots: u32,
    /// Number of head files.
    pub files: u32,
    /// The next never-used page number.
    pub hwm: u32,
    /// Free pages.
    pub free: Vec<u32>,
    /// Per series, indexed by `SeriesId`.
    pub series: Vec<SeriesState>,
}

/// Outcome of writing one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Stored.
    Stored,
    /// Older than the series' oldest page (or freed range): not stored.
    TooOld,
    /// Timestamp outside ±2^50 s: not stored.
    OutOfRange,
}

struct WriterSeries {
    shared: Arc<SharedSeries>,
    frequency: i64,
    /// Seconds a page spans: `page_slots * frequency`.
    span: i64,
    origin: Option<i64>,
    floor: i64,
    pages: Vec<PageRef>,
    /// The slot after the last one written, while it lies in the same page: a write there (the common case
    /// of a series moving forward one step at a time) needs no division and no page search.
    next: Option<NextSlot>,
}

impl WriterSeries {
    /// Makes the floor visible to readers as a time.
    fn publish_floor(&self) {
        if let (Some(origin), true) = (self.origin, self.floor > 0) {
            let t = origin.saturating_add(self.floor.saturating_mul(self.span));
            self.shared.floor_time.store(t, Ordering::Release);
        }
    }
}

#[derive(Clone, Copy)]
struct NextSlot {
    /// Start of the slot's interval.
    lo: i64,
    /// Its index in the page (below `page_slots`).
    i: u32,
    /// Index of the head file and of the page in it.
    file: u32,
    page: u32,
}

/// The writing side of the head, owned by the engine's writer thread.
pub struct HeadWriter {
    head: Arc<Head>,
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    files: Vec<Arc<HeadFile>>,
    series: Vec<WriterSeries>,
    free: Vec<u32>,
    pending: Vec<u32>,
    hwm: u32,
    /// Pages handed out since [`HeadWriter::take_discard_due`] last said yes.
    allocated: u64,
}

/// Fewest consecutive 4096-byte units [`Head::discard_idle`] lets go of at once (64 KiB).
pub const MIN_DISCARD_RUN: usize = 16;

/// Bytes of pages handed out between two [`Head::discard_idle`] calls the writer asks for: series that
/// move to new pages leave full ones resident until then.
pub const DISCARD_EVERY_BYTES: u64 = 16 << 20;

impl Head {
    fn file_of(&self, no: u32) -> Option<(Arc<HeadFile>, u32)> {
        let files = self.files.read();
        let f = files.get((no / self.pages_per_file) as usize)?;
        Some((f.clone(), no % self.pages_per_file))
    }

    /// Values per page.
    pub fn page_slots(&self) -> usize {
        self.page_slots as usize
    }

    /// Bytes per page.
    pub fn page_bytes(&self) -> u64 {
        u64::from(self.page_slots) * 8
    }

    /// Seconds one page of a series of frequency `f` spans.
    pub fn page_span(&self, f: i64) -> i64 {
        i64::from(self.page_slots).saturating_mul(f)
    }

    /// How many slots of a page are defined: one past its last written slot (0 for an unknown page).
    pub fn page_len(&self, page: &PageRef) -> u32 {
        self.file_of(page.no).map_or(0, |(f, p)| f.len(p).load(Ordering::Acquire))
    }

    /// The page list of a series (oldest first) and its frequency, or `None` for an unknown id.
    pub fn pages(&self, id: SeriesId) -> Option<(Arc<[PageRef]>, i64)> {
        let s = self.series.read().get(id.0 as usize)?.clone();
        let pages = s.pages.read().clone();
        Some((pages, s.frequency))
    }

    /// Where the pages of series `id` that hold slots in `[from, to)` lie: `(file, offset, len)` per page,
    /// appended to `out`. For [`Head::will_need`].
    pub fn page_bytes_of(&self, id: SeriesId, from: i64, to: i64, out: &mut Vec<(u32, u64, u64)>) {
        let Some((pages, f)) = self.pages(id) else { return };
        let span = self.page_span(f);
        let bytes = self.page_bytes();
        for p in pages.iter().filter(|p| p.start < to && p.start.saturating_add(span) > from) {
            let (file, page) = (p.no / self.pages_per_file, p.no % self.pages_per_file);
            out.push((file, u64::from(page) * bytes, bytes));
        }
    }

    /// Asks for bytes `offset..offset + len` of head file `file` to be read from disk ahead of use, without
    /// waiting ([`HeadFile::will_need`]). Pages let go of ([`Head::discard_idle`]) stay in the page cache
    /// only as long as the OS keeps them there; a query about to read many series asks for all their pages
    /// first, so that the reads of those the OS dropped overlap.
    pub fn will_need(&self, file: u32, offset: u64, len: u64) {
        if let Some(f) = self.files.read().get(file as usize) {
            f.will_need(offset, len);
        }
    }

    /// Reads the values of series `id` whose nominal times lie in `[from, to)`, clamped to what the series
    /// holds. `None` when the series has no data in the range.
    pub fn read(&self, id: SeriesId, from: i64, to: i64) -> Option<HeadRead> {
        let (from, to) = clamp_range(from, to);
        let _gate = self.reclaim.read();
        let (pages, f) = self.pages(id)?;
        let first = pages.first()?;
        let last = pages.last()?;
        let (last_file, last_page) = self.file_of(last.no)?;
        let last_len = i64::from(last_file.len(last_page).load(Ordering::Acquire));
        // Slot numbers relative to the first page's start; nominal time of slot s = first.start + s*F + F/2.
        let base = first.start;
        let data_end = (last.start - base) / f + last_len; // one past the last defined slot
        let slot_of = |t: i64| (t - base - f / 2).div_euclid(f);
        let lo = slot_of(from.max(base + f / 2)).max(0);
        // First slot whose nominal time is >= to, i.e. ceil((to - base - f/2) / f).
        let hi = (to - base - f / 2 + f - 1).div_euclid(f).min(data_end);
        if hi <= lo {
            return None;
        }
        let n = (hi - lo) as usize;
        let mut values = Vec::with_capacity(n);
        let files = self.files.read();
        for p in pages.iter() {
            let p_lo = (p.start - base) / f;
            let p_hi = p_lo + i64::from(self.page_slots);
            if p_hi <= lo || p_lo >= hi {
                continue;
            }
            let file = files.get((p.no / self.pages_per_file) as usize)?;
            let page = p.no % self.pages_per_file;
            let len = i64::from(file.len(page).load(Ordering::Acquire));
            let a = lo.max(p_lo);
            let b = hi.min(p_lo + len);
            if b <= a {
                continue;
            }
            values.resize((a - lo) as usize, f64::NAN); // a gap before this page
            let words = &file.page(page)[(a - p_lo) as usize..(b - p_lo) as usize];
            values.extend(words.iter().map(load));
        }
        values.resize(n, f64::NAN);
        Some(HeadRead { from: base + lo * f + f / 2, to: base + hi * f + f / 2, frequency: f, values })
    }

    /// Samples series `id` at the times `t0 + k*F` for `k` in `0..n` (F = its frequency) into `out` (cleared
    /// first, each value written once): the value of the slot containing that time, NaN where the series holds
    /// nothing. Returns the range of `k` (inclusive) within the series' data (from the first slot of its
    /// oldest page to its last defined slot); `None`, with `out` left empty, if none is.
    pub fn sample_vec(&self, id: SeriesId, t0: i64, n: usize, out: &mut Vec<f64>) -> Option<(usize, usize)> {
        out.clear();
        out.reserve(n);
        let r = self.sample_with(id, t0, n, |a, words| {
            out.resize(a, f64::NAN);
            out.extend(words.iter().map(load));
        });
        match r {
            Some(_) => out.resize(n, f64::NAN),
            None => out.clear(),
        }
        r
    }

    /// Like [`Head::sample_vec`] into a slice of `n` steps, but adds the series' values into `out` unless `first`, when it stores
    /// them; where the series has no value the step becomes NaN (as NaN plus anything is NaN). Leaves `out`
    /// untouched and returns `None` when the series has no data in the steps.
    pub fn sample_add(&self, id: SeriesId, t0: i64, out: &mut [f64], first: bool) -> Option<(usize, usize)> {
        let n = out.len();
        let mut done = 0usize;
        let r = self.sample_with(id, t0, n, |a, words| {
            out[done..a].fill(f64::NAN);
            let dst = &mut out[a..a + words.len()];
            if first {
                for (o, w) in dst.iter_mut().zip(words) {
                    *o = load(w);
                }
            } else {
                for (o, w) in dst.iter_mut().zip(words) {
                    *o += load(w);
                }
            }
            done = a + words.len();
        });
        if r.is_some() {
            out[done..].fill(f64::NAN);
        }
        r
    }

    /// Like [`Head::sample_vec`], but stores the values of the series' pages over `out` (one slot per step)
    /// and leaves every other step as it is: the head's pages win over older copies of the same slots.
    ///
    /// Also returns the series' extent in the head, `[first page start, one past its last defined slot)`,
    /// read from the same snapshot of its page list as the values (`None` without pages).
    pub fn sample_store(&self, id: SeriesId, t0: i64, out: &mut [f64]) -> SampleExtent {
        let n = out.len();
        self.sample_walk(id, t0, n, |a, words| {
            for (o, w) in out[a..a + words.len()].iter_mut().zip(words) {
                *o = load(w);
            }
        })
    }

    /// The walk behind the sampling functions: for each page with values in the steps, in step order, calls
    /// `emit(k, words)`: the values of steps `k .. k + words.len()` (steps before `k` not yet emitted are
    /// gaps). Emits nothing if it returns `None`.
    fn sample_with(
        &self,
        id: SeriesId,
        t0: i64,
        n: usize,
        emit: impl FnMut(usize, &[std::sync::atomic::AtomicU64]),
    ) -> Option<(usize, usize)> {
        self.sample_walk(id, t0, n, emit).0
    }

    /// [`Head::sample_with`], also returning the series' extent `[base, end)` in time from the same page
    /// list snapshot.
    fn sample_walk(
        &self,
        id: SeriesId,
        t0: i64,
        n: usize,
        mut emit: impl FnMut(usize, &[std::sync::atomic::AtomicU64]),
    ) -> SampleExtent {
        let n = n as i64;
        let t0 = t0.clamp(-4 * MAX_ABS_TS, 4 * MAX_ABS_TS);
        let _gate = self.reclaim.read();
        let Some((pages, f)) = self.pages(id) else { return (None, None) };
        let (Some(first), Some(last)) = (pages.first(), pages.last()) else { return (None, None) };
        let files = self.files.read();
        let file_of = |no: u32| files.get((no / self.pages_per_file) as usize).map(|f| (f, no % self.pages_per_file));
        let Some((last_file, last_page)) = file_of(last.no) else { return (None, None) };
        let base = first.start;
        let data_end = (last.start - base) / f + i64::from(last_file.len(last_page).load(Ordering::Acquire));
        let extent = Some((base, base.saturating_add(data_end.saturating_mul(f))));
        // Slot (relative to base) of k = 0.
        let s0 = (t0 - base).div_euclid(f);
        let k_first = (-s0).max(0);
        let k_last = (data_end - 1 - s0).min(n - 1);
        if k_first > k_last {
            return (None, extent);
        }
        for p in pages.iter() {
            let p_lo = (p.start - base) / f; // first slot of the page
            let Some((file, page)) = file_of(p.no) else { return (None, extent) };
            let len = i64::from(file.len(page).load(Ordering::Acquire));
            let a = (p_lo - s0).max(0);
            let b = (p_lo + len - s0).min(n);
            if b <= a {
                continue;
            }
            emit(a as usize, &file.page(page)[(a + s0 - p_lo) as usize..(b + s0 - p_lo) as usize]);
        }
        (Some((k_first as usize, k_last as usize)), extent)
    }

    /// Count, sum, minimum and maximum of the non-NaN values of series `id` whose nominal times lie in
    /// `[from, to)`. Scans the pages without copying them.
    pub fn stats(&self, id: SeriesId, from: i64, to: i64) -> HeadStats {
        self.stats_from(id, from, to).0
    }

    /// [`Head::stats`], also returning the start of the series' oldest page in the same snapshot of its
    /// page list (`None` without pages).
    pub fn stats_from(&self, id: SeriesId, from: i64, to: i64) -> (HeadStats, Option<i64>) {
        let (from, to) = clamp_range(from, to);
        let mut st = HeadStats { samples: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY };
        let _gate = self.reclaim.read();
        let Some((pages, f)) = self.pages(id) else { return (st, None) };
        let head_start = pages.first().map(|p| p.start);
        let files = self.files.read();
        let mut acc = Acc4::default();
        for p in pages.iter() {
            // Slot k of this page has nominal time p.start + k*F + F/2.
            let lo = (from - p.start - f / 2 + f - 1).div_euclid(f).max(0);
            let hi = (to - p.start - f / 2 + f - 1).div_euclid(f).min(i64::from(self.page_slots));
            if hi <= lo {
                continue;
            }
            let Some(file) = files.get((p.no / self.pages_per_file) as usize) else { continue };
            let page = p.no % self.pages_per_file;
            let len = i64::from(file.len(page).load(Ordering::Acquire));
            let hi = hi.min(len);
            if lo == 0 && hi == i64::from(self.page_slots) {
                // A whole full page: its stats are computed once and kept until it changes.
                let ps = file.cached_stats(page).unwrap_or_else(|| {
                    let version = file.version(page).load(Ordering::Acquire);
                    let mut one = Acc4::default();
                    scan_stats(file.page(page), &mut one);
                    let ps = one.fold(version);
                    file.cache_stats(page, ps);
                    ps
                });
                acc.n[0] += ps.samples;
                acc.sum[0] += ps.sum;
                acc.min[0] = acc.min[0].min(ps.min);
                acc.max[0] = acc.max[0].max(ps.max);
            } else if hi > lo {
                scan_stats(&file.page(page)[lo as usize..hi as usize], &mut acc);
            }
        }
        for k in 0..4 {
            st.samples += acc.n[k];
            st.sum += acc.sum[k];
            st.min = st.min.min(acc.min[k]);
            st.max = st.max.max(acc.max[k]);
        }
        (st, head_start)
    }

    /// The time before which writes to series `id` are refused (a page boundary, after a free or a seal), if
    /// any.
    pub fn write_floor(&self, id: SeriesId) -> Option<i64> {
        let t = self.series.read().get(id.0 as usize)?.floor_time.load(Ordering::Acquire);
        (t != i64::MIN).then_some(t)
    }

    /// Nominal time of the last defined slot of series `id` (its newest sample), if it has any.
    pub fn last_time(&self, id: SeriesId) -> Option<i64> {
        let (pages, f) = self.pages(id)?;
        let last = pages.last()?;
        let files = self.files.read();
        let file = files.get((last.no / self.pages_per_file) as usize)?;
        let len = i64::from(file.len(last.no % self.pages_per_file).load(Ordering::Acquire));
        (len > 0).then(|| last.start + (len - 1) * f + f / 2)
    }

    /// Pages owned by series or freed but not yet reusable (what a memory cap counts).
    pub fn pages_in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Bytes of head files mapped.
    pub fn mapped_bytes(&self) -> u64 {
        self.files.read().len() as u64 * u64::from(self.pages_per_file) * self.page_bytes()
    }

    /// Number of series known to the head.
    pub fn series_count(&self) -> usize {
        self.series.read().len()
    }

    /// Lets go of the resident memory of every head page but the newest page of each series (the page it
    /// is writing), 4096 bytes at a time: full and free pages are read by queries and compactions only, and
    /// the file keeps their bytes, dirty ones included ([`MappedRegion::discard`]). A page touched again is
    /// read back from the page cache. A page a series moves to meanwhile may be let go too: its next store
    /// maps it again. Returns the bytes let go.
    ///
    /// [`MappedRegion::discard`]: crate::storage::io::MappedRegion::discard
    pub fn discard_idle(&self) -> Result<u64, StorageError> {
        const OS_PAGE: u64 = 4096;
        let files = self.files.read().clone();
        let page_bytes = self.page_bytes();
        let os_pages = (u64::from(self.pages_per_file) * page_bytes).div_ceil(OS_PAGE) as usize;
        let mut keep = vec![vec![false; os_pages]; files.len()];
        let series = self.series.read().clone();
        for s in &series {
            let Some(last) = s.pages.read().last().copied() else { continue };
            let (file, page) = (last.no / self.pages_per_file, last.no % self.pages_per_file);
            if let Some(k) = keep.get_mut(file as usize) {
                // A page is at most 4096 bytes and its size divides 4096: it lies within one unit.
                k[(u64::from(page) * page_bytes / OS_PAGE) as usize] = true;
            }
        }
        let mut let_go = 0;
        for (f, keep) in files.iter().zip(&keep) {
            let mut i = 0;
            while i < keep.len() {
                if keep[i] {
                    i += 1;
                    continue;
                }
                let run = keep[i..].iter().take_while(|k| !**k).count();
                // Each call interrupts the process's other threads (a TLB shootdown): short runs between
                // newest pages stay resident rather than cost a call each.
                if run >= MIN_DISCARD_RUN {
                    f.discard(i * OS_PAGE as usize, run * OS_PAGE as usize)?;
                    let_go += run as u64 * OS_PAGE;
                }
                i += run;
            }
        }
        Ok(let_go)
    }

    /// msync every head file.
    pub fn flush(&self) -> Result<(), StorageError> {
        let files = self.files.read().clone();
        for f in files {
            f.flush()?;
        }
        Ok(())
    }
}

impl HeadWriter {
    /// Opens the head in `dir` as a checkpoint left it (`state`), or empty for a new database.
    pub fn open(vfs: Arc<dyn Vfs>, dir: &Path, state: &HeadState, frequencies: &[i64]) -> Result<Self, StorageError> {
        vfs.create_dir_all(dir).map_err(|e| StorageError::io("create dir", dir, e))?;
        let ppf = state.pages_per_file;
        let slots = state.page_slots;
        file::check_geometry(slots, ppf).map_err(|m| StorageError::corrupt(dir, 0, CorruptionKind::Invalid(m)))?;
        let mut files = Vec::new();
        for i in 0..state.files {
            files.push(Arc::new(HeadFile::open(&*vfs, dir, i, ppf, slots as usize)?));
        }
        // Files created after the checkpoint are not referenced by it: remove them so they are recreated clean.
        let mut removed = false;
        for name in vfs.list_dir(dir).map_err(|e| StorageError::io("list", dir, e))? {
            let stale = name
                .strip_suffix(".pages")
                .filter(|n| n.len() >= 6 && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|i| i >= state.files);
            if stale || name.ends_with(".tmp") {
                let p = dir.join(&name);
                vfs.remove_file(&p).map_err(|e| StorageError::io("remove", &p, e))?;
                removed = true;
            }
        }
        if removed {
            vfs.sync_dir(dir).map_err(|e| StorageError::io("fsync dir", dir, e))?;
        }
        let head = Arc::new(Head {
            in_use: std::sync::atomic::AtomicU64::new(0),
            pages_per_file: ppf,
            page_slots: slots,
            files: RwLock::new(files.clone()),
            series: RwLock::new(Vec::new()),
            reclaim: RwLock::new(()),
        });
        let mut w = HeadWriter {
            head,
            vfs,
            dir: dir.to_owned(),
            files,
            series: Vec::new(),
            free: state.free.clone(),
            pending: Vec::new(),
            allocated: 0,
            hwm: state.hwm,
        };
        let capacity = state.files.saturating_mul(ppf);
        let bad = |msg: String| StorageError::corrupt(dir, 0, CorruptionKind::Invalid(msg));
        if state.hwm > capacity || state.free.iter().any(|&p| p >= state.hwm || p % ppf == 0) {
            return Err(bad(format!("page numbers past the {capacity} pages of the head files")));
        }
        if state.series.len() > frequencies.len() {
            return Err(bad("more series states than series".into()));
        }
        for (i, &f) in frequencies.iter().enumerate() {
            w.add_series(f);
            let Some(st) = state.series.get(i) else { continue };
            let s = &mut w.series[i];
            s.origin = st.origin;
            s.floor = st.floor;
            s.publish_floor();
            for &(p, len) in &st.pages {
                if p.no >= state.hwm || p.no % ppf == 0 || u32::from(len) > slots {
                    return Err(bad(format!("series {i}: page {} of length {len} is out of bounds", p.no)));
                }
                let file = &w.files[(p.no / ppf) as usize];
                file.len(p.no % ppf).store(u32::from(len), Ordering::Release);
                s.pages.push(p);
            }
            s.shared.pages.write().clone_from(&Arc::from(s.pages.as_slice()));
        }
        w.head.in_use.store(w.used_pages() as u64, Ordering::Relaxed);
        Ok(w)
    }

    /// The shared, readable head.
    pub fn head(&self) -> &Arc<Head> {
        &self.head
    }

    /// Registers the next series id with its frequency.
    pub fn add_series(&mut self, frequency: i64) -> SeriesId {
        let shared = Arc::new(SharedSeries {
            frequency,
            pages: RwLock::new(Arc::from(Vec::new())),
            floor_time: std::sync::atomic::AtomicI64::new(i64::MIN),
        });
        self.head.series.write().push(shared.clone());
        let span = self.head.page_span(frequency);
        self.series.push(WriterSeries {
            shared,
            frequency,
            span,
            origin: None,
            floor: 0,
            pages: Vec::new(),
            next: None,
        });
        SeriesId((self.series.len() - 1) as u32)
    }

    /// Whether [`DISCARD_EVERY_BYTES`] of pages were handed out since it last said yes: the full pages the
    /// series left behind should leave memory ([`Head::discard_idle`]).
    pub fn take_discard_due(&mut self) -> bool {
        let due = self.allocated * self.head.page_bytes() >= DISCARD_EVERY_BYTES;
        if due {
            self.allocated = 0;
        }
        due
    }

    fn alloc_page(&mut self) -> Result<u32, StorageError> {
        let p = self.alloc_page_inner()?;
        self.allocated += 1;
        self.head.in_use.fetch_add(1, Ordering::Relaxed);
        Ok(p)
    }

    fn alloc_page_inner(&mut self) -> Result<u32, StorageError> {
        if let Some(p) = self.free.pop() {
            return Ok(p);
        }
        let ppf = self.head.pages_per_file;
        if self.hwm.is_multiple_of(ppf) {
            self.hwm += 1; // page 0 of every file is its header
        }
        if self.hwm >= self.files.len() as u32 * ppf {
            self.add_file()?;
            if self.hwm.is_multiple_of(ppf) {
                self.hwm += 1;
            }
        }
        let p = self.hwm;
        self.hwm += 1;
        Ok(p)
    }

    /// Creates the next head file (allocated, synced) and maps it. On failure nothing of it is left, so a
    /// later call can try again.
    fn add_file(&mut self) -> Result<(), StorageError> {
        let index = self.files.len() as u32;
        let (ppf, slots) = (self.head.pages_per_file, self.head.page_slots());
        let f = Arc::new(HeadFile::create(&*self.vfs, &self.dir, index, ppf, slots)?);
        self.files.push(f.clone());
        self.head.files.write().push(f);
        Ok(())
    }

    /// Pages that can be allocated without creating a head file: the free list and the never-used pages of
    /// the existing files (header pages excluded).
    fn room(&self) -> u64 {
        let ppf = u64::from(self.head.pages_per_file);
        let capacity = self.files.len() as u64 * ppf;
        let hwm = u64::from(self.hwm);
        let unused = capacity.saturating_sub(hwm);
        // Header pages at or past the high-water mark: page 0 of files `ceil(hwm / ppf)..files`.
        let headers = (self.files.len() as u64).saturating_sub(hwm.div_ceil(ppf));
        self.free.len() as u64 + unused.saturating_sub(headers)
    }

    /// Makes sure the head files hold room for `already` pages (reserved by earlier writes not yet applied)
    /// plus every page the samples `(series, ts)` could need, creating head files now if not. Returns the
    /// pages counted for these samples, to add to `already` for the next write of the same group.
    /// `frequency_of` gives the frequency of a series defined but not yet added to the head (by a definition
    /// logged in the same group), if known.
    ///
    /// The writer calls this before it logs a write, so that applying the write after it is in the WAL
    /// never has to create a file: a head file that cannot be created (a full disk) is then a write refused
    /// before anything of it was logged, not a failure after the fact that makes the database read-only.
    /// The count never falls short: a sample needs a page only if its page is not in its series' list; for a
    /// series not written yet (its grid origin not fixed), the samples' time span bounds the pages whatever
    /// the origin turns out to be (and their number does, where the frequency is not known).
    pub fn reserve<I>(
        &mut self,
        samples: I,
        already: u64,
        frequency_of: impl Fn(SeriesId) -> Option<i64>,
    ) -> Result<u64, StorageError>
    where
        I: ExactSizeIterator<Item = (SeriesId, i64)>,
    {
        // Each sample needs at most one page: the common case needs no counting.
        let most = samples.len() as u64;
        if already + most <= self.room() {
            return Ok(most);
        }
        let need = self.pages_needed(samples, frequency_of);
        while already + need > self.room() {
            self.add_file()?;
        }
        Ok(need)
    }

    /// An upper bound of the pages applying `samples` would allocate (see [`HeadWriter::reserve`]).
    fn pages_needed(
        &self,
        samples: impl Iterator<Item = (SeriesId, i64)>,
        frequency_of: impl Fn(SeriesId) -> Option<i64>,
    ) -> u64 {
        let slots = i64::from(self.head.page_slots);
        let mut new_pages = std::collections::HashSet::new();
        // Series without an origin: (count, min ts, max ts).
        let mut fresh: std::collections::HashMap<SeriesId, (u64, i64, i64)> = std::collections::HashMap::new();
        for (id, ts) in samples {
            if !(-MAX_ABS_TS..=MAX_ABS_TS).contains(&ts) {
                continue;
            }
            let Some((s, origin)) = self.series.get(id.0 as usize).and_then(|s| Some((s, s.origin?))) else {
                let e = fresh.entry(id).or_insert((0, ts, ts));
                *e = (e.0 + 1, e.1.min(ts), e.2.max(ts));
                continue;
            };
            if let Some(nx) = s.next {
                if ts >= nx.lo && ts - nx.lo < s.frequency {
                    continue;
                }
            }
            if ts < origin {
                continue;
            }
            let n = (ts - origin) / s.frequency / slots;
            if n < s.floor {
                continue;
            }
            let start = origin + n * s.span;
            let exists = match s.pages.last() {
                Some(last) if last.start == start => true,
                _ => s.pages.binary_search_by_key(&start, |p| p.start).is_ok(),
            };
            if !exists {
                new_pages.insert((id, start));
            }
        }
        let fresh: u64 = fresh
            .iter()
            .map(|(&id, &(count, lo, hi))| {
                let span = match self.series.get(id.0 as usize) {
                    Some(s) => Some(s.span),
                    None => frequency_of(id).filter(|&f| f > 0).map(|f| f.saturating_mul(slots)),
                };
                // A time span of `hi - lo` meets at most `(hi - lo) / span + 2` pages of width `span`.
                span.map_or(count, |span| count.min(((hi - lo) / span) as u64 + 2))
            })
            .sum();
        new_pages.len() as u64 + fresh
    }

    /// Writes one sample. The series id must have been added.
    pub fn apply(&mut self, id: SeriesId, ts: i64, value: f64) -> Result<Applied, StorageError> {
        if !(-MAX_ABS_TS..=MAX_ABS_TS).contains(&ts) {
            return Ok(Applied::OutOfRange);
        }
        let Some(s) = self.series.get_mut(id.0 as usize) else {
            return Err(StorageError::corrupt(
                &self.dir,
                0,
                CorruptionKind::Invalid(format!("unknown series {}", id.0)),
            ));
        };
        let f = s.frequency;
        let slots = self.head.page_slots;
        if let Some(nx) = s.next {
            if ts >= nx.lo && ts - nx.lo < f {
                let file = &self.files[nx.file as usize];
                Self::store_slot(file, nx.page, nx.i as usize, value);
                s.next = (nx.i + 1 < slots).then_some(NextSlot { lo: nx.lo + f, i: nx.i + 1, ..nx });
                return Ok(Applied::Stored);
            }
        }
        let origin = *s.origin.get_or_insert(ts - f / 2);
        if ts < origin {
            return Ok(Applied::TooOld);
        }
        let slot = (ts - origin) / f;
        let n = slot / i64::from(slots);
        if n < s.floor {
            return Ok(Applied::TooOld);
        }
        let i = (slot % i64::from(slots)) as usize;
        let start = origin + n * s.span;
        let pos = match s.pages.last() {
            Some(last) if last.start == start => Ok(s.pages.len() - 1),
            _ => s.pages.binary_search_by_key(&start, |p| p.start),
        };
        let no = match pos {
            Ok(k) => s.pages[k].no,
            Err(k) => {
                let no = self.alloc_page()?;
                let s = &mut self.series[id.0 as usize];
                s.pages.insert(k, PageRef { no, start });
                let ppf = self.head.pages_per_file;
                let file = &self.files[(no / ppf) as usize];
                file.len(no % ppf).store(0, Ordering::Release);
                file.bump_version(no % ppf); // a new owner: whatever was cached is not its data
                *s.shared.pages.write() = Arc::from(s.pages.as_slice());
                no
            }
        };
        let ppf = self.head.pages_per_file;
        let (file_idx, page) = (no / ppf, no % ppf);
        Self::store_slot(&self.files[file_idx as usize], page, i, value);
        let s = &mut self.series[id.0 as usize];
        s.next = (i + 1 < slots as usize).then_some(NextSlot {
            lo: start + (i as i64 + 1) * f,
            i: i as u32 + 1,
            file: file_idx,
            page,
        });
        Ok(Applied::Stored)
    }

    /// Stores a value in slot `i` of a page, NaN-filling any slots between the page's length and `i` and
    /// publishing the new length after the values.
    #[inline]
    fn store_slot(file: &HeadFile, page: u32, i: usize, value: f64) {
        let words = file.page(page);
        let len_cell = file.len(page);
        let len = len_cell.load(Ordering::Relaxed) as usize;
        store(&words[i], value);
        if i < len {
            file.bump_version(page); // an overwrite: cached stats of this page are stale
        } else {
            for w in &words[len..i] {
                store(w, f64::NAN);
            }
            len_cell.store(i as u32 + 1, Ordering::Release);
        }
    }

    /// Frees the pages of series `id` whose every slot lies before `before`; returns how many. Writes older
    /// than the freed range are refused from then on.
    pub fn free_before(&mut self, id: SeriesId, before: i64) -> usize {
        let n = self.seal_before(id, before);
        if n == 0 {
            return 0;
        }
        let s = &mut self.series[id.0 as usize];
        let freed: Vec<PageRef> = s.pages.drain(..n).collect();
        *s.shared.pages.write() = Arc::from(s.pages.as_slice());
        self.pending.extend(freed.iter().map(|p| p.no));
        n
    }

    /// Seals the pages of series `id` whose every slot lies before `before`: writes to them are refused
    /// from then on (as too old), but the pages stay, readable, until freed. Returns how many pages are
    /// sealed. Compaction seals pages before copying them into a block, so no write can slip in between.
    pub fn seal_before(&mut self, id: SeriesId, before: i64) -> usize {
        let Some(s) = self.series.get_mut(id.0 as usize) else { return 0 };
        let span = s.span;
        let n = s.pages.iter().position(|p| p.start.saturating_add(span) > before).unwrap_or(s.pages.len());
        if n == 0 {
            return 0;
        }
        if let (Some(origin), Some(last)) = (s.origin, s.pages.get(n - 1)) {
            s.floor = s.floor.max((last.start - origin) / span + 1);
        }
        s.next = None;
        s.publish_floor();
        n
    }

    /// What a checkpoint records. Pages pending reuse are recorded as free.
    pub fn state(&self) -> HeadState {
        let ppf = self.head.pages_per_file;
        let series = self
            .series
            .iter()
            .map(|s| SeriesState {
                origin: s.origin,
                floor: s.floor,
                pages: s
                    .pages
                    .iter()
                    .map(|p| (*p, self.files[(p.no / ppf) as usize].len(p.no % ppf).load(Ordering::Relaxed) as u16))
                    .collect(),
            })
            .collect();
        let mut free = self.free.clone();
        free.extend_from_slice(&self.pending);
        HeadState {
            pages_per_file: ppf,
            page_slots: self.head.page_slots,
            files: self.files.len() as u32,
            hwm: self.hwm,
            free,
            series,
        }
    }

    /// Number of pages freed but not yet reusable.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Makes the first `n` pending pages reusable: a checkpoint recording them as free is durable.
    pub fn release_pending(&mut self, n: usize) {
        let _gate = self.head.reclaim.write();
        let n = n.min(self.pending.len());
        self.free.extend(self.pending.drain(..n));
        self.head.in_use.fetch_sub(n as u64, Ordering::Relaxed);
    }

    /// Pages in use by series.
    pub fn used_pages(&self) -> usize {
        self.series.iter().map(|s| s.pages.len()).sum()
    }
}

/// Default pages per head file (16 MiB files).
pub const DEFAULT_PAGES_PER_FILE: u32 = 4096;

#[cfg(test)]
mod discard_tests {
    use super::*;
    use crate::storage::io::StdVfs;

    /// Resident KiB of the process's mappings of `path`, from `/proc/self/smaps`.
    #[cfg(target_os = "linux")]
    fn resident_kib(path: &Path) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let name = path.to_str().unwrap();
        let mut ours = false;
        let mut kib = 0;
        for line in smaps.lines() {
            if line
                .split_whitespace()
                .next()
                .is_some_and(|f| f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
            {
                ours = line.ends_with(name);
            } else if ours {
                if let Some(v) = line.strip_prefix("Rss:") {
                    kib += v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap();
                }
            }
        }
        kib
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn idle_pages_leave_memory_but_keep_their_values() {
        let dir = tempfile::tempdir().unwrap();
        let state = HeadState { pages_per_file: 1024, page_slots: 64, ..HeadState::default() };
        let mut w = HeadWriter::open(Arc::new(StdVfs), dir.path(), &state, &[]).unwrap();
        // 40 series of 300 values: 5 pages each, 200 pages of 512 bytes = 25 units of 4096 in use.
        let ids: Vec<SeriesId> = (0..40).map(|_| w.add_series(60)).collect();
        for step in 0..300i64 {
            for (k, &id) in ids.iter().enumerate() {
                assert_eq!(w.apply(id, 30 + step * 60, (k as i64 * 1000 + step) as f64).unwrap(), Applied::Stored);
            }
        }
        let head = w.head().clone();
        let path = dir.path().join(file::head_file_name(0));
        let before = resident_kib(&path);
        assert!(before >= 25 * 4, "{before} KiB resident after writing 200 pages");
        let st = w.state();
        let kept: std::collections::BTreeSet<u64> =
            st.series.iter().map(|s| u64::from(s.pages.last().unwrap().0.no) * 512 / 4096).collect();
        let let_go = head.discard_idle().unwrap();
        assert_eq!(let_go, 1024 * 512 - kept.len() as u64 * 4096, "every unit but those of the newest pages");
        let after = resident_kib(&path);
        assert!(after <= kept.len() as u64 * 4, "{after} KiB resident after letting go, {} units kept", kept.len());
        for (k, &id) in ids.iter().enumerate() {
            let r = head.read(id, 0, 300 * 60).unwrap();
            let want: Vec<f64> = (0..300).map(|step| (k as i64 * 1000 + step) as f64).collect();
            assert_eq!(r.values, want, "series {k} after its pages left memory");
        }
    }
}
