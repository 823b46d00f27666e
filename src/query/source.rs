//! One series' values from wherever they are: the head, blocks, or both.
//!
//! A series' head pages own every slot from the start of its oldest head page on; blocks supply the slots
//! before it. Where blocks overlap (after a crash between publishing a block and freeing its pages, or a
//! merge), the block with the higher sequence number wins. So a read, an aggregation or a stats query gives
//! the same answer wherever the data lies.

use std::sync::Arc;

use crate::storage::block::{Block, ChunkMeta};
use crate::storage::head::HeadStats;
use crate::storage::io::thread_disk_reads;
use crate::storage::{Engine, SeriesId};

use super::QueryError;

/// The chunks of series `id` in `blocks` (oldest block first) that hold slots in `[lo, hi)` (slot
/// boundaries), with their block: the descriptors are read from the files of the blocks that hold the series
/// in that range (a block without it answers from its directory, without I/O).
pub(crate) fn chunks(
    blocks: &[Arc<Block>],
    id: SeriesId,
    lo: i64,
    hi: i64,
) -> Result<Vec<(&Block, ChunkMeta)>, QueryError> {
    let mut out = Vec::new();
    for b in blocks {
        let (bmin, bmax) = b.time_range();
        if bmax <= lo || bmin >= hi {
            continue;
        }
        for c in b.chunks_of(id)? {
            if c.start < hi && c.end() > lo {
                out.push((&**b, c));
            }
        }
    }
    Ok(out)
}

/// The slot boundaries `[lo, hi)` that `found` (chunks of one series) holds below `limit` (where the
/// head's domain starts), if any.
fn block_extent(found: &[(&Block, ChunkMeta)], limit: i64) -> Option<(i64, i64)> {
    let mut r: Option<(i64, i64)> = None;
    for (_, c) in found {
        if c.start < limit {
            let (a, e) = (c.start, c.end().min(limit));
            r = Some(r.map_or((a, e), |(x, y)| (x.min(a), y.max(e))));
        }
    }
    r
}

/// The slot boundaries `[lo, hi)` of everything series `id` holds, its head pages (whole) and its block
/// chunks, `None` if it holds nothing. A bound: slots inside may read as NaN. The head is read first and the
/// block list taken after, as in [`sample_into`], so a compaction meanwhile cannot hide a page.
pub(crate) fn extent(engine: &Engine, id: SeriesId) -> Result<Option<(i64, i64)>, QueryError> {
    let mut r: Option<(i64, i64)> = None;
    if let Some((pages, f)) = engine.head().pages(id) {
        if let (Some(first), Some(last)) = (pages.first(), pages.last()) {
            let span = engine.head().page_span(f);
            r = Some((first.start, last.start.saturating_add(span)));
        }
    }
    for (_, c) in chunks(&engine.blocks(), id, i64::MIN, i64::MAX)? {
        let (a, e) = (c.start, c.end());
        r = Some(r.map_or((a, e), |(x, y)| (x.min(a), y.max(e))));
    }
    Ok(r)
}

/// Samples series `id` at `t0 + k*F` for `k` in `0..n` into `out` (cleared first), as
/// [`crate::storage::head::Head::sample_vec`] does, from the head and the blocks. Returns the range of `k`
/// within the series' data (from the first slot of its oldest page or chunk to its last value), `None`
/// (and `out` empty) if none is.
///
/// The head is read first and the block list taken after: compaction publishes a block before it frees
/// the pages, so pages missing from the head snapshot are in the later block snapshot.
pub(crate) fn sample_into(
    engine: &Engine,
    id: SeriesId,
    f: i64,
    t0: i64,
    n: usize,
    out: &mut Vec<f64>,
) -> Result<Option<(usize, usize)>, QueryError> {
    out.clear();
    out.resize(n, f64::NAN);
    let (head_range, extent) = engine.head().sample_store(id, t0, out);
    let blocks = engine.blocks();
    let found = chunks(&blocks, id, i64::MIN, i64::MAX)?;
    sample_blocks(head_range, extent, &found, f, t0, n, out)
}

/// How many series a multi-series read takes at once ([`Ahead`]): enough reads in flight to keep a disk
/// busy, few enough that the descriptors held stay small whatever a query selects.
pub(crate) const AHEAD: usize = 256;

/// Ranges [`Ahead`] asks for less than this far apart in one file are asked for as one: reading the gap
/// costs a cold disk less than another request.
const AHEAD_GAP: u64 = 32 << 10;

/// [`Ahead`] looks whether the thread went to the disk after the first series, and then every this many.
const AHEAD_CHECK: usize = 16;

/// Reading many series, one after another, with reads from the disk overlapped when the data turns out not
/// to be in the page cache (written long ago, or dropped by the OS while the process was idle): then every
/// read the rest of the batch will make is asked for at once ([`crate::storage::io::ReadRegion::will_need`]),
/// so a cold query waits for the disk about once rather than once per series. Whether the thread went to the
/// disk is its count of major faults and block reads ([`thread_disk_reads`]), looked at after the first
/// series and every [`AHEAD_CHECK`]; a warm query so pays a few system calls, not one per series.
pub(crate) struct Ahead<'e, 'b> {
    engine: &'e Engine,
    blocks: &'b [Arc<Block>],
    /// The steps' span, `[from, to)`: only pages and chunks in it are asked for.
    from: i64,
    to: i64,
    /// The thread's disk reads ([`thread_disk_reads`]; another counter in tests) and their count when the
    /// batch began.
    probe: fn() -> u64,
    reads: u64,
    /// Whether the rest of the batch has been asked for (at most once).
    asked: bool,
}

impl<'e, 'b> Ahead<'e, 'b> {
    /// A batch (at most [`AHEAD`] series) read from `blocks` and the head over `[from, to)`.
    pub(crate) fn new(engine: &'e Engine, blocks: &'b [Arc<Block>], from: i64, to: i64) -> Self {
        Self::with_probe(engine, blocks, from, to, thread_disk_reads)
    }

    fn with_probe(engine: &'e Engine, blocks: &'b [Arc<Block>], from: i64, to: i64, probe: fn() -> u64) -> Self {
        Ahead { engine, blocks, from, to, probe, reads: probe(), asked: false }
    }

    /// Whether, before series `k` of the batch, the batch's reads so far went to the disk (looked at only
    /// at the checkpoints) and nothing has been asked for yet.
    fn turned_cold(&mut self, k: usize) -> bool {
        if self.asked || !(k == 1 || k.is_multiple_of(AHEAD_CHECK)) || (self.probe)() == self.reads {
            return false;
        }
        self.asked = true;
        self.engine.stats().query_reads_ahead.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// The chunks of each of `ids` over all time, as [`chunks`]. If reading their descriptors goes to the
    /// disk, the descriptors and head pages of the rest are asked for, and then the chunk bytes of all.
    pub(crate) fn chunks(&mut self, ids: &[SeriesId]) -> Result<Vec<Vec<(&'b Block, ChunkMeta)>>, QueryError> {
        let mut out = Vec::with_capacity(ids.len());
        for (k, &id) in ids.iter().enumerate() {
            if self.turned_cold(k) {
                self.ask_head(ids);
                self.ask_descriptors(&ids[k..]);
            }
            out.push(chunks(self.blocks, id, i64::MIN, i64::MAX)?);
        }
        if self.asked {
            self.ask_chunks(&out);
        }
        Ok(out)
    }

    /// Before sampling series `k` of the batch, whose chunks are `found` (as [`Ahead::chunks`] returned
    /// them): if sampling the ones before went to the disk, asks for the head pages and chunk bytes of the
    /// rest.
    pub(crate) fn before_sampling(&mut self, k: usize, ids: &[SeriesId], found: &[Vec<(&'b Block, ChunkMeta)>]) {
        if self.turned_cold(k) {
            self.ask_head(&ids[k..]);
            self.ask_chunks(&found[k..]);
        }
    }

    fn ask_head(&self, ids: &[SeriesId]) {
        let head = self.engine.head();
        let mut pages = Vec::new();
        for &id in ids {
            head.page_bytes_of(id, self.from, self.to, &mut pages);
        }
        merged(pages, |file, offset, len| head.will_need(file, offset, len));
    }

    fn ask_descriptors(&self, ids: &[SeriesId]) {
        let mut wanted = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            let (bmin, bmax) = b.time_range();
            if bmax <= self.from || bmin >= self.to {
                continue;
            }
            wanted.extend(ids.iter().filter_map(|&id| b.descriptor_bytes(id)).map(|(offset, len)| (i, offset, len)));
        }
        merged(wanted, |i, offset, len| self.blocks[i].will_need(offset, len));
    }

    fn ask_chunks(&self, found: &[Vec<(&'b Block, ChunkMeta)>]) {
        let mut wanted = Vec::new();
        for (b, c) in found.iter().flatten().filter(|(_, c)| c.start < self.to && c.end() > self.from) {
            // The block's place in the list; chunks are only found in blocks of it.
            if let Some(i) = self.blocks.iter().position(|x| std::ptr::eq(&**x, *b)) {
                wanted.push((i, c.offset, u64::from(c.len)));
            }
        }
        merged(wanted, |i, offset, len| self.blocks[i].will_need(offset, len));
    }
}

/// Calls `ask(file, offset, len)` once per run of `ranges` (`(file, offset, len)`) in one file less than
/// [`AHEAD_GAP`] apart, covering the run.
fn merged<K: Copy + Ord>(mut ranges: Vec<(K, u64, u64)>, mut ask: impl FnMut(K, u64, u64)) {
    ranges.sort_unstable_by_key(|&(k, offset, _)| (k, offset));
    let mut run: Option<(K, u64, u64)> = None; // (file, start, end)
    for (k, offset, len) in ranges {
        let end = offset.saturating_add(len);
        match &mut run {
            Some((rk, _, rend)) if *rk == k && offset <= rend.saturating_add(AHEAD_GAP) => *rend = (*rend).max(end),
            _ => {
                if let Some((rk, start, rend)) = run.replace((k, offset, end)) {
                    ask(rk, start, rend - start);
                }
            }
        }
    }
    if let Some((k, start, end)) = run {
        ask(k, start, end - start);
    }
}

/// [`sample_into`] with the series' block chunks `found` already (by [`Ahead::chunks`]). The head is read
/// after the block list was taken, so a compaction in between can hide a page: the caller checks the block
/// generation and reads again if it moved.
pub(crate) fn sample_found(
    engine: &Engine,
    id: SeriesId,
    found: &[(&Block, ChunkMeta)],
    f: i64,
    t0: i64,
    n: usize,
    out: &mut Vec<f64>,
) -> Result<Option<(usize, usize)>, QueryError> {
    out.clear();
    out.resize(n, f64::NAN);
    let (head_range, extent) = engine.head().sample_store(id, t0, out);
    sample_blocks(head_range, extent, found, f, t0, n, out)
}

/// The rest of [`sample_into`] once the head has been sampled into `out` (`head_range`, `extent` as
/// [`crate::storage::head::Head::sample_store`] returned them): the steps before the head's domain from the
/// chunks `found`.
fn sample_blocks(
    head_range: Option<(usize, usize)>,
    extent: Option<(i64, i64)>,
    found: &[(&Block, ChunkMeta)],
    f: i64,
    t0: i64,
    n: usize,
    out: &mut Vec<f64>,
) -> Result<Option<(usize, usize)>, QueryError> {
    let limit = extent.map_or(i64::MAX, |(start, _)| start);
    let Some((lo, hi)) = block_extent(found, limit) else {
        if head_range.is_none() {
            out.clear();
        }
        return Ok(head_range);
    };
    let (lo, hi) = match extent {
        Some((a, b)) => (lo.min(a), hi.max(b)),
        None => (lo, hi),
    };
    let k_first = (lo - t0 + f - 1).div_euclid(f).max(0);
    let k_last = (hi - 1 - t0).div_euclid(f).min(n as i64 - 1);
    if k_first > k_last {
        out.clear();
        return Ok(None);
    }
    let span_hi = t0.saturating_add((n as i64).saturating_mul(f)).min(limit);
    let mut tmp = Vec::new();
    for (block, c) in found.iter().filter(|(_, c)| c.start < span_hi && c.end() > t0) {
        // Step k samples the slot containing t0 + k*F: slot s = (t0 + k*F - start) / F of this chunk.
        let first_k = (c.start - t0 + f - 1).div_euclid(f).max(0);
        let end = c.end().min(limit); // slots at or after the head's start belong to the head
        let last_k = (end - 1 - t0).div_euclid(f).min(n as i64 - 1);
        if c.frequency != f || last_k < first_k {
            continue;
        }
        tmp.clear();
        block.decode(c, &mut tmp)?;
        for k in first_k..=last_k {
            let s = (t0 + k * f - c.start).div_euclid(f) as usize;
            out[k as usize] = tmp[s];
        }
    }
    Ok(Some((k_first as usize, k_last as usize)))
}

/// Adds (or, if `first`, stores) series `id` sampled at `t0 + k*F` into `acc`, NaN where it has no value, as
/// [`crate::storage::head::Head::sample_add`] does, from the head and the blocks. Leaves `acc` untouched
/// and returns `None` if the series has no data in the steps.
pub(crate) fn add_into(
    engine: &Engine,
    id: SeriesId,
    f: i64,
    t0: i64,
    acc: &mut [f64],
    first: bool,
    tmp: &mut Vec<f64>,
) -> Result<Option<(usize, usize)>, QueryError> {
    let r = sample_into(engine, id, f, t0, acc.len(), tmp)?;
    add_sampled(r, acc, first, tmp);
    Ok(r)
}

/// [`add_into`] with the series' block chunks `found` already, as [`sample_found`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_found(
    engine: &Engine,
    id: SeriesId,
    found: &[(&Block, ChunkMeta)],
    f: i64,
    t0: i64,
    acc: &mut [f64],
    first: bool,
    tmp: &mut Vec<f64>,
) -> Result<Option<(usize, usize)>, QueryError> {
    let r = sample_found(engine, id, found, f, t0, acc.len(), tmp)?;
    add_sampled(r, acc, first, tmp);
    Ok(r)
}

/// Adds (or, if `first`, stores) the sampled `tmp` into `acc` if the series took part (`r`).
fn add_sampled(r: Option<(usize, usize)>, acc: &mut [f64], first: bool, tmp: &[f64]) {
    if r.is_some() {
        if first {
            acc.copy_from_slice(tmp);
        } else {
            acc.iter_mut().zip(tmp.iter()).for_each(|(a, v)| *a += v);
        }
    }
}

/// Count, sum, minimum and maximum of the non-NaN values of series `id` whose nominal times lie in
/// `[from, to)`, from the head and the blocks (the head first, as in [`sample_into`]). Whole chunks use
/// the stats in their descriptors.
pub(crate) fn stats(engine: &Engine, id: SeriesId, from: i64, to: i64) -> Result<HeadStats, QueryError> {
    let (mut st, head_start) = engine.head().stats_from(id, from, to);
    let limit = head_start.unwrap_or(i64::MAX);
    let blocks = engine.blocks();
    let to_b = to.min(limit);
    // Slots whose nominal time (start + i*F + F/2) lies in [from, to_b) lie within these boundaries.
    let found = chunks(&blocks, id, from.saturating_sub(crate::storage::head::MAX_FREQUENCY), to_b)?;
    if found.is_empty() {
        return Ok(st);
    }
    let overlapping = found
        .iter()
        .enumerate()
        .any(|(i, (_, a))| found[..i].iter().any(|(_, b)| a.start < b.end() && b.start < a.end()));
    fn add(st: &mut HeadStats, v: f64) {
        if !v.is_nan() {
            st.samples += 1;
            st.sum += v;
            st.min = st.min.min(v);
            st.max = st.max.max(v);
        }
    }
    let mut tmp = Vec::new();
    if !overlapping {
        for (block, c) in &found {
            let f = c.frequency;
            // Slots i with from <= start + i*F + F/2 < to_b.
            let lo = (from - c.start - f / 2 + f - 1).div_euclid(f).max(0);
            let hi = (to_b - c.start - f / 2 + f - 1).div_euclid(f).min(i64::from(c.count));
            if hi <= lo {
                continue;
            }
            if lo == 0 && hi == i64::from(c.count) {
                if c.samples > 0 {
                    st.samples += u64::from(c.samples);
                    st.sum += c.sum;
                    st.min = st.min.min(c.min);
                    st.max = st.max.max(c.max);
                }
                continue;
            }
            tmp.clear();
            block.decode(c, &mut tmp)?;
            tmp[lo as usize..hi as usize].iter().for_each(|&v| add(&mut st, v));
        }
        return Ok(st);
    }
    // Overlapping chunks: lay them out slot by slot, newer blocks over older ones, then scan.
    let f = found[0].1.frequency;
    let base = found.iter().map(|(_, c)| c.start).min().unwrap_or(0);
    let end = found.iter().map(|(_, c)| c.end()).max().unwrap_or(base).min(to_b.saturating_add(f));
    let mut line = vec![f64::NAN; ((end - base).max(0) / f) as usize];
    for (block, c) in &found {
        if c.frequency != f {
            continue;
        }
        tmp.clear();
        block.decode(c, &mut tmp)?;
        let off = ((c.start - base) / f) as usize;
        for (i, &v) in tmp.iter().enumerate() {
            if let Some(slot) = line.get_mut(off + i) {
                *slot = v;
            }
        }
    }
    for (i, &v) in line.iter().enumerate() {
        let t = base + i as i64 * f + f / 2;
        if t >= from && t < to_b {
            add(&mut st, v);
        }
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::keys::HostKey;
    use crate::query::{index::Index, selector::Selector};
    use crate::storage::io::sim::SimVfs;
    use crate::storage::{Aggregation, MetricConfig};
    use crate::{Batch, Db, Options};

    #[test]
    fn merged_asks_once_per_run_of_close_ranges_in_one_file() {
        let mut asked = Vec::new();
        let ranges = vec![
            (0u32, 100, 10),
            (1, 5, 5),
            (0, 0, 10),
            (0, 110 + AHEAD_GAP, 8),     // exactly the gap after the run's end: joined
            (0, 119 + 2 * AHEAD_GAP, 1), // one byte more than the gap: a run of its own
            (1, 7, 1),                   // inside the run before it
        ];
        merged(ranges, |k, offset, len| asked.push((k, offset, len)));
        assert_eq!(
            asked,
            vec![(0, 0, 118 + AHEAD_GAP), (0, 119 + 2 * AHEAD_GAP, 1), (1, 5, 5)],
            "runs per file, in order"
        );
        let mut none = 0;
        merged(Vec::<(u32, u64, u64)>::new(), |_, _, _| none += 1);
        assert_eq!(none, 0);
    }

    thread_local! {
        static PROBES: Cell<u64> = const { Cell::new(0) };
    }

    /// A probe that reports a disk read from its `COLD_AT`th call on (1-based).
    fn probe_cold_from<const COLD_AT: u64>() -> u64 {
        PROBES.with(|p| {
            p.set(p.get() + 1);
            p.get().saturating_sub(COLD_AT - 1)
        })
    }

    const F: i64 = 60;
    const T: i64 = 1_700_000_040;
    const THREADS: u32 = 300; // two batches
    const STEPS: i64 = 200;

    /// 300 hwthreads of one host, the first half of their steps compacted into blocks, the rest in the head.
    fn db() -> (Db, Vec<SeriesId>) {
        let opts = Options {
            vfs: Arc::new(SimVfs::new()),
            page_slots: 16,
            pages_per_file: 512,
            checkpoint_interval: None,
            ..Options::default()
        };
        let db = Db::open("/db", opts).expect("open");
        db.declare_metric("m", MetricConfig { frequency: F, aggregation: Aggregation::Sum }).expect("declare");
        let host = HostKey::new("c", "h").expect("key");
        for s in 0..STEPS {
            let mut b = Batch::new();
            for c in 0..THREADS {
                let key = host.clone().component("hwthread", c).expect("key");
                b.push(&key, "m", T + s * F, f64::from(c) * 0.5 + s as f64);
            }
            db.write(&b).expect("write");
        }
        db.compact_selector(&Selector::from(&host), T + STEPS / 2 * F).expect("compact");
        let index = parking_lot::RwLock::new(Index::default());
        let ids = crate::query::series_under(db.engine(), &index, &Selector::from(&host));
        assert_eq!(ids.len(), THREADS as usize);
        (db, ids)
    }

    /// The sum over `ids` read batch by batch through [`Ahead`] with `probe`.
    fn sum_ahead(engine: &Engine, ids: &[SeriesId], n: usize, probe: fn() -> u64) -> Vec<f64> {
        let blocks = engine.blocks();
        let mut acc = vec![0.0; n];
        let mut tmp = Vec::new();
        let mut first = true;
        for batch in ids.chunks(AHEAD) {
            let mut ahead = Ahead::with_probe(engine, &blocks, T, T + n as i64 * F, probe);
            let found = ahead.chunks(batch).expect("chunks");
            for (k, &id) in batch.iter().enumerate() {
                ahead.before_sampling(k, batch, &found);
                if add_found(engine, id, &found[k], F, T, &mut acc, first, &mut tmp).expect("add").is_some() {
                    first = false;
                }
            }
        }
        acc
    }

    /// The sum over `ids` read one series at a time, head first ([`add_into`]).
    fn sum_plain(engine: &Engine, ids: &[SeriesId], n: usize) -> Vec<f64> {
        let mut acc = vec![0.0; n];
        let mut tmp = Vec::new();
        let mut first = true;
        for &id in ids {
            if add_into(engine, id, F, T, &mut acc, first, &mut tmp).expect("add").is_some() {
                first = false;
            }
        }
        acc
    }

    #[test]
    fn batches_gone_cold_ask_once_each_and_read_the_same() {
        let (db, ids) = db();
        let engine = db.engine();
        assert!(!engine.blocks().is_empty(), "the test needs blocks");
        let n = STEPS as usize;
        let plain = sum_plain(engine, &ids, n);
        let expected: Vec<f64> =
            (0..STEPS).map(|s| (0..THREADS).map(|c| f64::from(c) * 0.5 + s as f64).sum()).collect();
        assert_eq!(plain, expected, "the plain read is the reference");
        let asked = || engine.stats().query_reads_ahead.load(Ordering::Relaxed);

        // Warm: the probe never moves, nothing is asked for.
        assert_eq!(
            sum_ahead(engine, &ids, n, || 7).iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(asked(), 0);

        // Cold from the first descriptors on: each batch asks once, while finding its chunks.
        PROBES.with(|p| p.set(0));
        let cold = sum_ahead(engine, &ids, n, probe_cold_from::<2>);
        assert_eq!(
            cold.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(asked(), 2, "two batches, each asked for once");

        // Descriptors warm, values cold: the first batch's probe is read once at its start and 16 times
        // while finding its 256 series' chunks (after series 1, 16, 32, ... 240), all warm; the 19th read,
        // at series 16 of the sampling, is the first cold one. The second batch starts cold and asks at once.
        PROBES.with(|p| p.set(0));
        let late = sum_ahead(engine, &ids, n, probe_cold_from::<19>);
        assert_eq!(
            late.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(asked(), 4, "both batches asked once more");
        assert_eq!(PROBES.with(Cell::get), 17 + 2 + 1 + 1, "the first batch asked at its second look while sampling");
    }
}
