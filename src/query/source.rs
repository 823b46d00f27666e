//! One series' values from wherever they are: the head, blocks, or both.
//!
//! A series' head pages own every slot from the start of its oldest head page on; blocks supply the slots
//! before it. Where blocks overlap (after a crash between publishing a block and freeing its pages, or a
//! merge), the block with the higher sequence number wins. So a read, an aggregation or a stats query gives
//! the same answer wherever the data lies.

use std::sync::Arc;

use crate::storage::block::{Block, ChunkMeta};
use crate::storage::head::HeadStats;
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
    let limit = extent.map_or(i64::MAX, |(start, _)| start);
    let blocks = engine.blocks();
    let found = chunks(&blocks, id, i64::MIN, i64::MAX)?;
    let Some((lo, hi)) = block_extent(&found, limit) else {
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
    for (block, c) in found.into_iter().filter(|(_, c)| c.start < span_hi && c.end() > t0) {
        // Step k samples the slot containing t0 + k*F: slot s = (t0 + k*F - start) / F of this chunk.
        let first_k = (c.start - t0 + f - 1).div_euclid(f).max(0);
        let end = c.end().min(limit); // slots at or after the head's start belong to the head
        let last_k = (end - 1 - t0).div_euclid(f).min(n as i64 - 1);
        if c.frequency != f || last_k < first_k {
            continue;
        }
        tmp.clear();
        block.decode(&c, &mut tmp)?;
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
    if r.is_some() {
        if first {
            acc.copy_from_slice(tmp);
        } else {
            acc.iter_mut().zip(tmp.iter()).for_each(|(a, v)| *a += v);
        }
    }
    Ok(r)
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
