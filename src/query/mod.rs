//! The query layer: read, stats, free and the debug view over selectors, with cc-metric-store's semantics.
//!
//! **Which series.** A selector names levels ([`selector`]). At each named level, if the level holds the metric
//! its series is taken; otherwise its children are searched the same way, recursively (cc-metric-store's
//! `findBuffers`). All series found are aggregated together, flat, with the metric's aggregation: `sum`
//! adds them, `avg` divides the sum by their number, `max` and `min` take the largest and the smallest value
//! at each step. More than one series for a metric without aggregation is [`QueryError::NoAggregation`]. A
//! series with no data in the range (never written there, or freed) takes no part: it neither counts for
//! `avg` nor turns the result into NaN. That is how empty series and levels are pruned from results. One
//! series taking part comes back bit for bit, whatever the aggregation.
//!
//! **Alignment.** The query samples every series at the times `from + k*F` (`k = 0, 1, …` while the time is
//! before `to`; F = the metric's frequency), taking the slot that contains each time, exactly as
//! cc-metric-store's `buffer.read` walks `t := from; t < to; t += F`. So series whose grids differ (their first
//! writes were at different offsets) still line up step by step, and the order in which children are
//! visited never changes the result. The result spans the **union** of the taking-part series' data ranges
//! (never an error, unlike cc-metric-store's "data does not align", its issue #566). For `sum` and `avg`, a
//! step where any taking-part series has no value is NaN, as NaN + x is NaN in cc-metric-store's sums. For
//! `max` and `min`, a step is the maximum (minimum) over the series that have a value there, skipping those
//! that do not (NaN, written or a gap), and NaN only where none has one; `-0.0` counts as below `+0.0`, so
//! the order of the series never shows even in the sign of a zero.
//!
//! **Range.** `from > to` is [`QueryError::InvalidRange`]; an unknown metric is [`QueryError::UnknownMetric`];
//! a selector that finds nothing (an unknown host) gives an empty result. The returned `from`/`to` are the
//! first step with data and one step past the last; with [`Padding::Front`] the values are NaN-filled back to
//! the requested `from` (cc-metric-store's `PadDataWithNull`), with [`Padding::Full`] also forward to the
//! requested `to`, so the array always has `ceil((to - from) / F)` values (cc-backend's #539).
//!
//! **Resolution** is applied last ([`mod@resample`]): a multiple of F, LTTB by default or averaging, and series
//! under 1000 points are returned unchanged at F. The returned resolution says which.
//!
//! **Stats** (cc-metric-store's `Stats`): per series samples/avg/min/max over non-NaN values with nominal
//! times in `[from, to)`; then samples add up, min and max are taken over the series, and avg is the sum of
//! the series' averages for `sum` and their mean for `avg`. `series` counts the series with such values;
//! with one, its stats are the result whatever the aggregation (with none, `samples` is 0 and the rest NaN).
//!
//! For `max` and `min` over more than one such series, the stats are those of the aggregated series itself,
//! not a combination of per-series stats (the mean of a per-step maximum is not derived from per-series
//! means): exactly the values [`read`] returns for `[from, to)` at native resolution, NaN steps skipped.
//! `samples` counts the steps with a value, `avg` is their mean, `min`/`max` their extremes (so for `max`,
//! `min` is the lowest per-step maximum). The steps are the read's `from + k*F < to`, not nominal times in
//! `[from, to)`, so at the edges of a range that does not start on a slot's middle a slot can count here
//! that per-series stats leave out, or the reverse; `series` still counts as above. These stats are not
//! limited to [`MAX_POINTS`] steps.

pub mod index;
pub mod resample;
pub mod selector;
pub(crate) mod source;

use parking_lot::RwLock;

use crate::keys::Namespace;
use crate::storage::block::{Block, ChunkMeta};
use crate::storage::{Aggregation, Engine, SeriesId, StorageError};
use index::{Index, Level};
use resample::{resample, Resampler, ResolutionError};
use selector::Selector;

/// Most values one read may return before resampling (a guard against a range that would allocate
/// gigabytes: 50 M values is over 15 years at 10 s).
pub const MAX_POINTS: i64 = 50_000_000;

/// An error of the query layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The metric was never declared.
    #[error("unknown metric {0:?}")]
    UnknownMetric(String),
    /// `from` is after `to`, or the range holds more than [`MAX_POINTS`] steps.
    #[error("invalid time range: from {from}, to {to} ({why})")]
    InvalidRange {
        /// Requested start.
        from: i64,
        /// Requested end.
        to: i64,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Several series would have to be combined but the metric has no aggregation.
    #[error("metric {metric:?} has no aggregation, but the selector covers {series} series with data")]
    NoAggregation {
        /// The metric.
        metric: String,
        /// How many series took part.
        series: usize,
    },
    /// The resolution is not a positive multiple of the frequency.
    #[error(transparent)]
    Resolution(#[from] ResolutionError),
    /// The engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// NaN padding of a read result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Padding {
    /// Only the steps that have data.
    #[default]
    None,
    /// NaN back to the requested `from` (cc-metric-store's `with-padding`).
    Front,
    /// NaN back to `from` and forward to `to`: always the full-length array.
    Full,
}

/// How a read is shaped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Seconds between returned values; 0 for the metric's frequency.
    pub resolution: i64,
    /// How to downsample.
    pub resampler: Resampler,
    /// NaN padding.
    pub padding: Padding,
}

/// What a read returns.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    /// Time of the first value.
    pub from: i64,
    /// End of the covered range (one step past the last value at native resolution).
    pub to: i64,
    /// Seconds between values as returned.
    pub resolution: i64,
    /// The values, NaN for missing steps.
    pub values: Vec<f64>,
    /// How many series took part.
    pub series: usize,
}

/// What stats return. `samples == 0` means no data (avg/min/max are NaN).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StatsResult {
    /// Non-NaN samples over all series (for `max`/`min` over several series: steps of the aggregated series
    /// with a value; see the module docs).
    pub samples: u64,
    /// Average (see the module docs for aggregates).
    pub avg: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// How many series took part.
    pub series: usize,
}

/// One level of the debug view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugLevel {
    /// The level's name (empty for a namespace root).
    pub name: String,
    /// Per metric held at this level: name, pages, bytes of head memory.
    pub metrics: Vec<(String, usize, u64)>,
    /// Non-empty child levels.
    pub children: Vec<DebugLevel>,
}

/// Brings the index up to date; the write lock is taken only when the registry grew.
fn refresh(engine: &Engine, index: &RwLock<Index>) {
    if !index.read().is_current(engine) {
        index.write().refresh(engine);
    }
}

fn series_for(engine: &Engine, index: &RwLock<Index>, sel: &Selector, metric: u32) -> Vec<SeriesId> {
    refresh(engine, index);
    let idx = index.read();
    let mut out = Vec::new();
    for l in idx.select(sel) {
        l.collect(metric, &mut out);
    }
    out
}

/// The metric's id and configuration, after checking the range.
fn metric_of(
    engine: &Engine,
    metric: &str,
    from: i64,
    to: i64,
) -> Result<(u32, crate::storage::MetricConfig), QueryError> {
    let m = engine.metric(metric).ok_or_else(|| QueryError::UnknownMetric(metric.to_owned()))?;
    if from > to {
        return Err(QueryError::InvalidRange { from, to, why: "from is after to" });
    }
    Ok(m)
}

/// The series of a selector sampled at `t0 + k*F` (`k` in `0..n`) and combined step by step, before `avg`'s
/// division and before trimming, padding and resampling.
struct Combined {
    /// `n` values: the one series taking part as it is, the sum of all of them (`sum`, `avg`, `none`), or
    /// their maximum or minimum (`max`, `min`); NaN where none has a value.
    values: Vec<f64>,
    /// How many series took part (had data in the steps).
    taking_part: usize,
    /// First step within the data of a series taking part (`usize::MAX` if none took part).
    lo: usize,
    /// Last step within the data of a series taking part.
    hi: usize,
}

/// Samples the series `ids` at `t0 + k*F` for `k` in `0..n` and combines them with `agg` (see [`Combined`]).
/// With one series taking part, its values come back bit for bit whatever `agg` is.
fn combine(
    engine: &Engine,
    ids: &[SeriesId],
    agg: Aggregation,
    f: i64,
    t0: i64,
    n: usize,
) -> Result<Combined, QueryError> {
    let mut acc = Vec::new();
    let (mut taking_part, mut lo, mut hi) = (0usize, usize::MAX, 0usize);
    if let [id] = ids[..] {
        // One series: sampled straight into the result, each value written once.
        if let Some((a, b)) = source::sample_into(engine, id, f, t0, n, &mut acc)? {
            taking_part = 1;
            (lo, hi) = (a, b);
        }
        return Ok(Combined { values: acc, taking_part, lo, hi });
    }
    // Max and min sample each series in full and keep the winner; the others add.
    let wins: Option<fn(f64, f64) -> bool> = match agg {
        Aggregation::Max => Some(|v, a| v > a),
        Aggregation::Min => Some(|v, a| v < a),
        Aggregation::Sum | Aggregation::Avg | Aggregation::None => None,
    };
    let mut tmp = Vec::new();
    // Folds series `id`, sampled from the head and `found` (its block chunks; `None`: read them after the
    // head), into `acc`. The first series taking part is stored, not folded into 0.0 or NaN, so one series
    // comes back bit for bit (-0.0 stays -0.0).
    let mut fold = |id: SeriesId,
                    found: Option<&[(&Block, ChunkMeta)]>,
                    acc: &mut Vec<f64>,
                    taking_part: &mut usize,
                    lo: &mut usize,
                    hi: &mut usize|
     -> Result<(), QueryError> {
        let first = *taking_part == 0;
        let r = match (wins, found) {
            (None, Some([])) => engine.head().sample_add(id, t0, acc, first),
            (None, Some(found)) => source::add_found(engine, id, found, f, t0, acc, first, &mut tmp)?,
            (None, None) => source::add_into(engine, id, f, t0, acc, first, &mut tmp)?,
            (Some(wins), found) => {
                let r = match found {
                    Some(found) => source::sample_found(engine, id, found, f, t0, n, &mut tmp)?,
                    None => source::sample_into(engine, id, f, t0, n, &mut tmp)?,
                };
                if r.is_some() {
                    if first {
                        acc.copy_from_slice(&tmp);
                    } else {
                        for (x, &v) in acc.iter_mut().zip(&tmp) {
                            // NaN (no value) never wins; -0.0 < +0.0, so the order of the series never
                            // matters.
                            if !v.is_nan() && (x.is_nan() || wins(v, *x) || (v == *x && wins(sign(v), sign(*x)))) {
                                *x = v;
                            }
                        }
                    }
                }
                r
            }
        };
        if let Some((a, b)) = r {
            *taking_part += 1;
            *lo = (*lo).min(a);
            *hi = (*hi).max(b);
        }
        Ok(())
    };
    // The series are taken a batch at a time, each batch's block chunks found before any of its values are
    // read, so that reads of cold data can be asked for together (`source::Ahead`). Series without blocks
    // are added straight from their pages. The head is read after the block list was taken: if a compaction
    // publishes a block meanwhile, a page it frees may be missed, the block generation tells, and the
    // combination starts over. The third attempt reads each series as `sample_into` does, head first, which
    // no compaction can fool.
    let to = t0.saturating_add((n as i64).saturating_mul(f));
    for attempt in 1.. {
        acc.clear();
        acc.resize(n, if wins.is_some() { f64::NAN } else { 0.0 });
        (taking_part, lo, hi) = (0, usize::MAX, 0);
        if attempt > 2 {
            for &id in ids {
                fold(id, None, &mut acc, &mut taking_part, &mut lo, &mut hi)?;
            }
            break;
        }
        let generation = engine.block_generation();
        let blocks = engine.blocks();
        for batch in ids.chunks(source::AHEAD) {
            let mut ahead = source::Ahead::new(engine, &blocks, t0, to);
            let found = ahead.chunks(batch)?;
            for (k, &id) in batch.iter().enumerate() {
                ahead.before_sampling(k, batch, &found);
                fold(id, Some(&found[k]), &mut acc, &mut taking_part, &mut lo, &mut hi)?;
            }
        }
        if engine.block_generation() == generation {
            break;
        }
    }
    if taking_part == 0 {
        acc.clear();
    }
    Ok(Combined { values: acc, taking_part, lo, hi })
}

/// +1.0 or -1.0 by the sign bit (to order -0.0 below +0.0).
fn sign(v: f64) -> f64 {
    1.0f64.copysign(v)
}

/// Reads `metric` over the series `sel` covers (see the module docs).
pub fn read(
    engine: &Engine,
    index: &RwLock<Index>,
    sel: &Selector,
    metric: &str,
    from: i64,
    to: i64,
    opts: ReadOptions,
) -> Result<QueryResult, QueryError> {
    let (mid, cfg) = metric_of(engine, metric, from, to)?;
    let f = cfg.frequency;
    let steps = ((i128::from(to) - i128::from(from) + i128::from(f) - 1) / i128::from(f)) as i64;
    if steps > MAX_POINTS {
        return Err(QueryError::InvalidRange { from, to, why: "more than 50 M steps" });
    }
    if opts.resolution != 0 {
        // Refuse a bad resolution even when the series is short enough to come back unchanged.
        resample(&[], f, opts.resolution, opts.resampler)?;
    }
    let n = steps as usize;
    let ids = series_for(engine, index, sel, mid);
    let Combined { values: mut acc, taking_part, lo, hi } = combine(engine, &ids, cfg.aggregation, f, from, n)?;
    if taking_part > 1 {
        match cfg.aggregation {
            Aggregation::Sum | Aggregation::Max | Aggregation::Min => {}
            Aggregation::Avg => {
                let inv = 1.0 / taking_part as f64;
                acc.iter_mut().for_each(|x| *x *= inv);
            }
            Aggregation::None => {
                return Err(QueryError::NoAggregation { metric: metric.to_owned(), series: taking_part });
            }
        }
    }
    let (mut values, mut first, mut last) = if taking_part == 0 {
        (Vec::new(), 0usize, 0usize)
    } else {
        acc.truncate(hi + 1);
        if lo > 0 {
            acc.drain(..lo);
        }
        (acc, lo, hi + 1)
    };
    match opts.padding {
        Padding::None => {}
        Padding::Front | Padding::Full => {
            if taking_part == 0 {
                last = if opts.padding == Padding::Full { n } else { 0 };
                values = vec![f64::NAN; last];
            } else {
                let mut padded = vec![f64::NAN; first];
                padded.extend_from_slice(&values);
                values = padded;
                if opts.padding == Padding::Full {
                    values.resize(n, f64::NAN);
                    last = n;
                }
            }
            first = 0;
        }
    }
    let (values, resolution) = if opts.resolution == 0 || opts.resolution == f {
        (values, f) // native: no copy
    } else {
        resample(&values, f, opts.resolution, opts.resampler)?
    };
    Ok(QueryResult {
        from: from + first as i64 * f,
        to: from + last.max(first) as i64 * f,
        resolution,
        values,
        series: taking_part,
    })
}

/// Stats of `metric` over the series `sel` covers (see the module docs).
pub fn stats(
    engine: &Engine,
    index: &RwLock<Index>,
    sel: &Selector,
    metric: &str,
    from: i64,
    to: i64,
) -> Result<StatsResult, QueryError> {
    let (mid, cfg) = metric_of(engine, metric, from, to)?;
    let mut r = StatsResult { samples: 0, avg: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY, series: 0 };
    let ids = series_for(engine, index, sel, mid);
    for &id in &ids {
        let s = source::stats(engine, id, from, to)?;
        if s.samples == 0 {
            continue;
        }
        r.series += 1;
        r.samples += s.samples;
        r.avg += s.sum / s.samples as f64;
        r.min = r.min.min(s.min);
        r.max = r.max.max(s.max);
    }
    if r.series == 0 {
        return Ok(StatsResult { samples: 0, avg: f64::NAN, min: f64::NAN, max: f64::NAN, series: 0 });
    }
    if r.series > 1 {
        match cfg.aggregation {
            Aggregation::Sum => {}
            Aggregation::Avg => r.avg /= r.series as f64,
            Aggregation::Max | Aggregation::Min => {
                return combined_stats(engine, &ids, cfg.aggregation, cfg.frequency, from, to, r.series);
            }
            Aggregation::None => {
                return Err(QueryError::NoAggregation { metric: metric.to_owned(), series: r.series });
            }
        }
    }
    Ok(r)
}

/// Steps a stats query over a `max`/`min` combination samples at a time (bounds its memory).
const STATS_WINDOW: i128 = 1 << 16;

/// Stats of the `max`/`min` combination of the series `ids` over `[from, to)`: of exactly the values [`read`]
/// gives at native resolution (steps `from + k*F < to`), NaN steps skipped. Only the steps within some
/// series' extent are sampled, a window at a time, so a long range costs neither time nor memory and,
/// unlike a read, is not limited to [`MAX_POINTS`] steps. `series` is what the caller counted.
fn combined_stats(
    engine: &Engine,
    ids: &[SeriesId],
    agg: Aggregation,
    f: i64,
    from: i64,
    to: i64,
    series: usize,
) -> Result<StatsResult, QueryError> {
    let (from_w, f_w) = (i128::from(from), i128::from(f));
    let n = (i128::from(to) - from_w + f_w - 1).div_euclid(f_w);
    // Step k samples the slot containing from + k*F: those within [lo, hi) have ceil((lo - from) / F) <= k
    // <= floor((hi - 1 - from) / F).
    let (mut k0, mut k1) = (n, -1i128);
    for &id in ids {
        if let Some((lo, hi)) = source::extent(engine, id)? {
            k0 = k0.min((i128::from(lo) - from_w + f_w - 1).div_euclid(f_w).max(0));
            k1 = k1.max((i128::from(hi) - 1 - from_w).div_euclid(f_w).min(n - 1));
        }
    }
    let (mut samples, mut sum, mut min, mut max) = (0u64, 0.0f64, f64::INFINITY, f64::NEG_INFINITY);
    let mut k = k0;
    while k <= k1 {
        let len = (k1 - k + 1).min(STATS_WINDOW);
        // Within a series' extent, so a valid timestamp.
        let t0 = (from_w + k * f_w) as i64;
        for v in combine(engine, ids, agg, f, t0, len as usize)?.values {
            if !v.is_nan() {
                samples += 1;
                sum += v;
                min = min.min(v);
                max = max.max(v);
            }
        }
        k += len;
    }
    if samples == 0 {
        return Ok(StatsResult { samples: 0, avg: f64::NAN, min: f64::NAN, max: f64::NAN, series });
    }
    Ok(StatsResult { samples, avg: sum / samples as f64, min, max, series })
}

/// Frees, in every series at or below the levels `sel` names (any metric), the pages whose every slot lies
/// before `before`. Returns the pages freed.
pub fn free(engine: &Engine, index: &RwLock<Index>, sel: &Selector, before: i64) -> Result<u64, QueryError> {
    free_ids(engine, selected(engine, index, sel), before, false, false)
}

/// Compacts into one block, in every series at or below the levels `sel` names, the pages whose every slot
/// lies before `before`, and frees them from the head. Returns the pages compacted.
pub fn compact(engine: &Engine, index: &RwLock<Index>, sel: &Selector, before: i64) -> Result<u64, QueryError> {
    free_ids(engine, selected(engine, index, sel), before, true, false)
}

/// Every series of metric `metric` at or below the levels `sel` names, at any depth (as write taps select
/// them, unlike [`read`], which stops at the first level holding the metric), and how many series of the
/// registry (ids `0..n`) the index held when it listed them.
pub(crate) fn series_of_metric(
    engine: &Engine,
    index: &RwLock<Index>,
    sel: &Selector,
    metric: u32,
) -> (Vec<SeriesId>, usize) {
    fn walk(l: &index::Level, metric: u32, out: &mut Vec<SeriesId>) {
        out.extend(l.metrics.get(&metric));
        for c in l.children.values() {
            walk(c, metric, out);
        }
    }
    refresh(engine, index);
    let idx = index.read();
    let mut out = Vec::new();
    for l in idx.select(sel) {
        walk(l, metric, &mut out);
    }
    (out, idx.seen())
}

/// One series at `t0 + k*F` for `k` in `0..n` into `out` (cleared first, NaN where it has no value), from
/// the head and the blocks.
pub(crate) fn sample_series(
    engine: &Engine,
    id: SeriesId,
    f: i64,
    t0: i64,
    n: usize,
    out: &mut Vec<f64>,
) -> Result<(), QueryError> {
    if source::sample_into(engine, id, f, t0, n, out)?.is_none() {
        out.clear();
        out.resize(n, f64::NAN);
    }
    Ok(())
}

/// Every series at or below the levels `sel` names, any metric.
pub fn series_under(engine: &Engine, index: &RwLock<Index>, sel: &Selector) -> Vec<SeriesId> {
    selected(engine, index, sel)
}

fn selected(engine: &Engine, index: &RwLock<Index>, sel: &Selector) -> Vec<SeriesId> {
    refresh(engine, index);
    let mut ids = Vec::new();
    for l in index.read().select(sel) {
        l.all_series(&mut ids);
    }
    ids
}

fn free_ids(
    engine: &Engine,
    ids: Vec<SeriesId>,
    before: i64,
    compact: bool,
    spare_newest: bool,
) -> Result<u64, QueryError> {
    let head = engine.head();
    let span = |f: i64| head.page_span(f);
    let items: Vec<(SeriesId, i64)> = ids
        .into_iter()
        .filter_map(|id| {
            let (pages, f) = head.pages(id)?;
            // With `spare_newest`, nothing after the series' newest written slot is sealed, and a newest page
            // that is not full stays: a writer may still be filling it (a collector catching up on a backlog
            // writes far behind the clock), and a seal there would refuse its next samples. A full newest page
            // goes (its writer has moved on to the next page's range, which stays open).
            let before = match (spare_newest, pages.last()) {
                (true, Some(newest)) if head.page_len(newest) as usize >= head.page_slots() => {
                    before.min(newest.start.saturating_add(span(f)))
                }
                (true, Some(newest)) => before.min(newest.start),
                _ => before,
            };
            // Only series with a whole page before `before`: nothing else would be freed or compacted.
            pages.first().filter(|p| p.start.saturating_add(span(f)) <= before).map(|_| (id, before))
        })
        .collect();
    if items.is_empty() {
        return Ok(0);
    }
    if compact {
        return Ok(engine.compact(items)?.pages);
    }
    Ok(engine.free(items)?)
}

/// Frees pages older than `before` in every series of every namespace except those at or below the levels
/// the `keep` selectors name (cc-metric-store keeps the nodes of running jobs past retention). With
/// `compact`, the pages are first compacted into a block (see `Engine::compact`), so they stay readable.
/// With `spare_newest`, a series' newest page is left alone unless it is full, and nothing after it is
/// sealed, so that a writer filling it, however far behind the clock, is never refused.
pub fn free_except(
    engine: &Engine,
    index: &RwLock<Index>,
    keep: &[Selector],
    before: i64,
    compact: bool,
    spare_newest: bool,
) -> Result<u64, QueryError> {
    refresh(engine, index);
    let idx = index.read();
    let mut kept = std::collections::HashSet::new();
    for sel in keep {
        for l in idx.select(sel) {
            let mut v = Vec::new();
            l.all_series(&mut v);
            kept.extend(v);
        }
    }
    let mut ids = Vec::new();
    for ns in [Namespace::Host, Namespace::Job, Namespace::Service] {
        if let Some(root) = idx.root(ns) {
            root.all_series(&mut ids);
        }
    }
    drop(idx);
    ids.retain(|id| !kept.contains(id));
    free_ids(engine, ids, before, compact, spare_newest)
}

/// The names of the children of the levels a selector names, sorted, without repeats (cc-metric-store's
/// `ListChildren`, which `for-all-nodes` uses on a cluster). A level stays listed after its data is freed,
/// as in cc-metric-store's tree.
pub fn children(engine: &Engine, index: &RwLock<Index>, sel: &Selector) -> Vec<String> {
    refresh(engine, index);
    let idx = index.read();
    let mut names: Vec<String> = idx.select(sel).iter().flat_map(|l| l.children.keys().cloned()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The tree below the levels `sel` names, with page counts and bytes per metric, leaving out series with
/// no pages and levels with nothing below them (cc-metric-store's `/api/debug`).
pub fn debug(engine: &Engine, index: &RwLock<Index>, sel: &Selector) -> Vec<DebugLevel> {
    refresh(engine, index);
    let idx = index.read();
    let names: Vec<String> = engine.metrics().into_iter().map(|(n, _)| n).collect();
    let head = engine.head();
    fn walk(name: &str, l: &Level, names: &[String], head: &crate::storage::head::Head) -> Option<DebugLevel> {
        let mut metrics = Vec::new();
        for (&m, &id) in &l.metrics {
            let pages = head.pages(id).map_or(0, |(p, _)| p.len());
            if pages > 0 {
                let name = names.get(m as usize).cloned().unwrap_or_default();
                metrics.push((name, pages, pages as u64 * head.page_bytes()));
            }
        }
        let children: Vec<DebugLevel> = l.children.iter().filter_map(|(n, c)| walk(n, c, names, head)).collect();
        (!metrics.is_empty() || !children.is_empty()).then(|| DebugLevel { name: name.to_owned(), metrics, children })
    }
    let mut out = Vec::new();
    // The selected levels with their names (the tree's `select` drops the names).
    fn select_named<'a>(
        l: &'a Level,
        elems: &[selector::SelectorElement],
        name: &'a str,
        out: &mut Vec<(&'a str, &'a Level)>,
    ) {
        match elems.split_first() {
            None => out.push((name, l)),
            Some((e, rest)) => {
                for (n, c) in &l.children {
                    if e.matches(n) {
                        select_named(c, rest, n, out);
                    }
                }
            }
        }
    }
    if let Some(root) = idx.root(sel.namespace()) {
        let mut levels = Vec::new();
        select_named(root, sel.elements(), "", &mut levels);
        for (name, l) in levels {
            if let Some(d) = walk(name, l, &names, head) {
                out.push(d);
            }
        }
    }
    out
}

/// The time before which freeing every page brings the head down by at least `pages` pages: the end of the
/// `pages`-th oldest page over all series (oldest first, as cc-metric-store's memory cap frees). `None` if
/// the head holds fewer pages.
pub fn oldest_pages_cutoff(engine: &Engine, index: &RwLock<Index>, pages: usize) -> Option<i64> {
    if pages == 0 {
        return None;
    }
    refresh(engine, index);
    let mut ids = Vec::new();
    {
        let idx = index.read();
        for ns in [Namespace::Host, Namespace::Job, Namespace::Service] {
            if let Some(root) = idx.root(ns) {
                root.all_series(&mut ids);
            }
        }
    }
    let head = engine.head();
    let mut ends: Vec<i64> = Vec::new();
    for id in ids {
        if let Some((p, f)) = head.pages(id) {
            let span = head.page_span(f);
            ends.extend(p.iter().map(|p| p.start.saturating_add(span)));
        }
    }
    if ends.len() < pages {
        return ends.iter().max().copied();
    }
    let (_, nth, _) = ends.select_nth_unstable(pages - 1);
    Some(*nth)
}

/// A node's monitoring state, as cc-metric-store's health check gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonitoringState {
    /// Every expected metric is healthy.
    Full,
    /// Some are missing or degraded.
    Partial,
    /// The node is unknown, or no expected metric is healthy.
    Failed,
}

impl MonitoringState {
    /// cc-lib's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            MonitoringState::Full => "full",
            MonitoringState::Partial => "partial",
            MonitoringState::Failed => "failed",
        }
    }
}

/// The health of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeHealth {
    /// Overall state.
    pub state: MonitoringState,
    /// Expected metrics with no data anywhere below the node (or never declared).
    pub missing: Vec<String>,
    /// Expected metrics with at least one series whose newest sample is older than
    /// [`MAX_MISSING_DATA_POINTS`] steps.
    pub degraded: Vec<String>,
}

/// Steps a series may lag behind `now` before it counts as stale (cc-metric-store's `MaxMissingDataPoints`).
pub const MAX_MISSING_DATA_POINTS: i64 = 5;

/// cc-metric-store's health check: for each node of `cluster`, which expected metrics are missing (no series
/// with data anywhere below the node) or degraded (a series below it whose newest sample is older than
/// `now - 5 * frequency`), and the resulting state.
pub fn health(
    engine: &Engine,
    index: &RwLock<Index>,
    cluster: &str,
    nodes: &[String],
    metrics: &[String],
    now: i64,
) -> Vec<(String, NodeHealth)> {
    refresh(engine, index);
    let idx = index.read();
    let head = engine.head();
    let root = idx.root(Namespace::Host).and_then(|r| r.children.get(cluster));
    nodes
        .iter()
        .map(|node| {
            let level = root.and_then(|c| c.children.get(node));
            let mut h = NodeHealth { state: MonitoringState::Failed, missing: Vec::new(), degraded: Vec::new() };
            let mut healthy = 0;
            for m in metrics {
                let (Some(level), Some((mid, cfg))) = (level, engine.metric(m)) else {
                    h.missing.push(m.clone());
                    continue;
                };
                let mut ids = Vec::new();
                all_of_metric(level, mid, &mut ids);
                let lasts: Vec<i64> = ids.iter().filter_map(|&id| head.last_time(id)).collect();
                if lasts.is_empty() {
                    h.missing.push(m.clone());
                } else if lasts.iter().any(|&t| t < now - MAX_MISSING_DATA_POINTS * cfg.frequency) {
                    h.degraded.push(m.clone());
                } else {
                    healthy += 1;
                }
            }
            h.state = if level.is_none() || (healthy == 0 && !metrics.is_empty()) {
                MonitoringState::Failed
            } else if h.missing.is_empty() && h.degraded.is_empty() {
                MonitoringState::Full
            } else {
                MonitoringState::Partial
            };
            (node.clone(), h)
        })
        .collect()
}

/// Every series of `metric` at or below a level (not stopping where a level holds it).
fn all_of_metric(level: &Level, metric: u32, out: &mut Vec<SeriesId>) {
    if let Some(&id) = level.metrics.get(&metric) {
        out.push(id);
    }
    for c in level.children.values() {
        all_of_metric(c, metric, out);
    }
}
