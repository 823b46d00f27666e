//! `read`, aggregation (sum, avg, max, min) and `stats` against a naive model (a `BTreeMap` of samples per
//! child) over random writes at arbitrary (off-grid) timestamps, some of them NaN, frees, compactions into
//! blocks and queries: the answers are the same whether the data is in the head, in blocks, or split across
//! both. The case count comes from `PROPTEST_CASES`.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use silt::storage::io::sim::SimVfs;
use silt::{Aggregation, Batch, Db, HostKey, MetricConfig, Options, ReadOptions, Selector};

const T: i64 = 1_000_000;
const F: i64 = 10;
const PAGE: i64 = 512;
const CHILDREN: u32 = 3;

#[derive(Clone, Debug)]
enum Op {
    Write(Vec<(u32, i64, f64)>),
    Free(i64),
    Compact(i64),
    Read(i64, i64),
    Stats(i64, i64),
}

fn op() -> impl Strategy<Value = Op> {
    let ts = 0i64..12_000;
    prop_oneof![
        5 => proptest::collection::vec((0..CHILDREN, ts.clone(), value()), 1..80).prop_map(Op::Write),
        1 => (0i64..12_000).prop_map(Op::Free),
        2 => (0i64..12_000).prop_map(Op::Compact),
        3 => (-500i64..13_000, 0i64..3_000).prop_map(|(a, len)| Op::Read(a, a + len)),
        2 => (-500i64..13_000, 0i64..3_000).prop_map(|(a, len)| Op::Stats(a, a + len)),
    ]
}

/// A sample value: mostly finite, sometimes NaN (no value, which `max`/`min` skip and `sum`/`avg` propagate).
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![8 => -1000.0f64..1000.0, 1 => Just(f64::NAN)]
}

/// The aggregations under test, and how the model combines a step's values of the series taking part.
fn aggregation() -> impl Strategy<Value = Aggregation> {
    prop_oneof![Just(Aggregation::Sum), Just(Aggregation::Avg), Just(Aggregation::Max), Just(Aggregation::Min)]
}

/// The model's step: `vals` are the values of the series taking part (NaN where one has none).
fn combine(agg: Aggregation, vals: &[f64]) -> f64 {
    match agg {
        Aggregation::Max | Aggregation::Min => {
            let present = vals.iter().copied().filter(|v| !v.is_nan());
            let folded = if agg == Aggregation::Max {
                present.fold(f64::NEG_INFINITY, f64::max)
            } else {
                present.fold(f64::INFINITY, f64::min)
            };
            if vals.iter().all(|v| v.is_nan()) {
                f64::NAN
            } else {
                folded
            }
        }
        _ => {
            let sum: f64 = vals.iter().sum();
            if agg == Aggregation::Avg {
                sum / vals.len() as f64
            } else {
                sum
            }
        }
    }
}

/// One child: its grid origin, floor page and slots in the head, as the head's rules define them, and the
/// slots compacted into blocks.
#[derive(Clone, Debug, Default)]
struct Child {
    origin: Option<i64>,
    floor: i64,
    slots: BTreeMap<i64, f64>,
    blocked: BTreeMap<i64, f64>,
}

impl Child {
    fn write(&mut self, ts: i64, v: f64) {
        let origin = *self.origin.get_or_insert(ts - F / 2);
        if ts < origin {
            return;
        }
        let slot = (ts - origin) / F;
        if slot / PAGE < self.floor {
            return;
        }
        self.slots.insert(slot, v);
    }
    fn free(&mut self, before: i64) {
        let Some(origin) = self.origin else { return };
        let pages: Vec<i64> = self.slots.keys().map(|s| s / PAGE).collect();
        let freed: Vec<i64> = pages.into_iter().filter(|&p| origin + (p + 1) * PAGE * F <= before).collect();
        if let Some(&last) = freed.iter().max() {
            self.floor = self.floor.max(last + 1);
            self.slots.retain(|s, _| s / PAGE > last);
        }
    }
    /// Moves the head's pages whose every slot lies before `before` into blocks; writes there are refused
    /// from then on. NaN written last in the moved pages does not reach the block (compaction trims a
    /// chunk's trailing NaN; pages holding only NaN make no chunk), so the series' data range shrinks.
    fn compact(&mut self, before: i64) {
        let Some(origin) = self.origin else { return };
        let pages: Vec<i64> = self.slots.keys().map(|s| s / PAGE).collect();
        let moved: Vec<i64> = pages.into_iter().filter(|&p| origin + (p + 1) * PAGE * F <= before).collect();
        if let Some(&last) = moved.iter().max() {
            self.floor = self.floor.max(last + 1);
            let keep = self.slots.split_off(&((last + 1) * PAGE));
            while self.slots.last_key_value().is_some_and(|(_, v)| v.is_nan()) {
                self.slots.pop_last();
            }
            self.blocked.append(&mut self.slots);
            self.slots = keep;
        }
    }
    /// First slot of the head's oldest page: the head owns every slot from there on, blocks the rest.
    fn head_lo(&self) -> i64 {
        self.slots.keys().next().map_or(i64::MAX, |s| s / PAGE * PAGE)
    }
    fn value(&self, s: i64) -> f64 {
        let v = if s >= self.head_lo() { self.slots.get(&s) } else { self.blocked.get(&s) };
        v.copied().unwrap_or(f64::NAN)
    }
    /// Data range in slots: first slot of the oldest page (head or block) .. last defined slot.
    fn range(&self) -> Option<(i64, i64)> {
        let head = self.slots.keys().next().map(|&f| (f / PAGE * PAGE, *self.slots.keys().next_back().unwrap_or(&f)));
        let hl = self.head_lo();
        let mut blocked = self.blocked.range(..hl).map(|(s, _)| *s);
        let block =
            blocked.next().map(|f| (f / PAGE * PAGE, self.blocked.range(..hl).next_back().map_or(f, |(s, _)| *s)));
        match (head, block) {
            (Some(h), Some(b)) => Some((h.0.min(b.0), h.1.max(b.1))),
            (h, b) => h.or(b),
        }
    }
    fn sample(&self, t: i64) -> (bool, f64) {
        let (Some(origin), Some((lo, hi))) = (self.origin, self.range()) else { return (false, f64::NAN) };
        let s = (t - origin).div_euclid(F);
        if s < lo || s > hi {
            return (false, f64::NAN);
        }
        (true, self.value(s))
    }
    /// Every defined slot a query sees, with its value.
    fn visible(&self) -> Vec<(i64, f64)> {
        let hl = self.head_lo();
        self.blocked.range(..hl).chain(self.slots.iter()).map(|(s, v)| (*s, *v)).collect()
    }
}

fn key(c: u32) -> HostKey {
    HostKey::new("c", "h").and_then(|k| k.component("hwthread", c)).expect("key")
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// The model's read of steps `from + k*F`, `k` in `0..n`: the combined values, the series taking part and the
/// range of steps within their data (`None` if none takes part).
fn model_read(model: &[Child], agg: Aggregation, from: i64, n: usize) -> (Vec<f64>, usize, Option<(usize, usize)>) {
    let mut cols = Vec::new();
    let (mut lo, mut hi) = (usize::MAX, 0);
    for c in model {
        let col: Vec<(bool, f64)> = (0..n).map(|k| c.sample(from + k as i64 * F)).collect();
        let Some(first) = col.iter().position(|x| x.0) else { continue };
        let last = col.iter().rposition(|x| x.0).unwrap_or(first);
        lo = lo.min(first);
        hi = hi.max(last);
        cols.push(col);
    }
    let values = (0..n).map(|k| combine(agg, &cols.iter().map(|c| c[k].1).collect::<Vec<_>>())).collect();
    (values, cols.len(), (!cols.is_empty()).then_some((lo, hi)))
}

fn run(ops: Vec<Op>, agg: Aggregation) -> Result<(), TestCaseError> {
    let db = Db::open(
        "/db",
        Options {
            vfs: Arc::new(SimVfs::new()),
            segment_size: 64 << 10,
            pages_per_file: 64,
            checkpoint_interval: None,
            ..Options::default()
        },
    )
    .expect("open");
    db.declare_metric("m", MetricConfig { frequency: F, aggregation: agg }).expect("declare");
    let host = HostKey::new("c", "h").expect("key");
    let mut model: Vec<Child> = vec![Child::default(); CHILDREN as usize];
    for op in ops {
        match op {
            Op::Write(w) => {
                let mut b = Batch::new();
                for &(c, ts, v) in &w {
                    b.push(&key(c), "m", T + ts, v);
                    model[c as usize].write(T + ts, v);
                }
                db.write(&b).expect("write");
            }
            Op::Free(before) => {
                db.free_selector(&Selector::from(&host), T + before).expect("free");
                model.iter_mut().for_each(|c| c.free(T + before));
            }
            Op::Compact(before) => {
                db.compact_selector(&Selector::from(&host), T + before).expect("compact");
                model.iter_mut().for_each(|c| c.compact(T + before));
            }
            Op::Read(a, b) => {
                let (from, to) = (T + a, T + b);
                let r = db.query(&Selector::from(&host), "m", from, to, ReadOptions::default()).expect("read");
                let n = ((to - from + F - 1) / F) as usize;
                let (acc, parts, range) = model_read(&model, agg, from, n);
                prop_assert_eq!(r.series, parts);
                let Some((lo, hi)) = range else {
                    prop_assert!(r.values.is_empty(), "expected nothing, got {:?}", r.values);
                    continue;
                };
                let want = &acc[lo..=hi];
                prop_assert_eq!(r.from, from + lo as i64 * F);
                prop_assert_eq!(r.to, from + (hi as i64 + 1) * F);
                prop_assert_eq!(r.values.len(), want.len());
                for (k, (g, w)) in r.values.iter().zip(want).enumerate() {
                    prop_assert!(close(*g, *w), "read [{}, {}) step {}: got {}, model {}", a, b, k, g, w);
                }
            }
            Op::Stats(a, b) => {
                let (from, to) = (T + a, T + b);
                let s = db.query_stats(&Selector::from(&host), "m", from, to).expect("stats");
                let (mut parts, mut samples, mut avg_sum, mut min, mut max) =
                    (0u64, 0u64, 0.0, f64::INFINITY, f64::NEG_INFINITY);
                for c in &model {
                    let Some(origin) = c.origin else { continue };
                    let vals: Vec<f64> = c
                        .visible()
                        .into_iter()
                        .filter(|(s, v)| {
                            let t = origin + *s * F + F / 2;
                            t >= from && t < to && !v.is_nan()
                        })
                        .map(|(_, v)| v)
                        .collect();
                    if vals.is_empty() {
                        continue;
                    }
                    parts += 1;
                    samples += vals.len() as u64;
                    avg_sum += vals.iter().sum::<f64>() / vals.len() as f64;
                    min = vals.iter().copied().fold(min, f64::min);
                    max = vals.iter().copied().fold(max, f64::max);
                }
                prop_assert_eq!(s.series as u64, parts);
                if parts > 1 && matches!(agg, Aggregation::Max | Aggregation::Min) {
                    // The stats of the combined series: of the model's read of [from, to), NaN skipped.
                    let n = ((to - from + F - 1) / F) as usize;
                    let vals: Vec<f64> =
                        model_read(&model, agg, from, n).0.into_iter().filter(|v| !v.is_nan()).collect();
                    prop_assert_eq!(s.samples, vals.len() as u64);
                    if !vals.is_empty() {
                        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
                        prop_assert!(close(s.avg, mean), "avg {} vs {}", s.avg, mean);
                        let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
                        let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        prop_assert_eq!((s.min, s.max), (lo, hi));
                    }
                    continue;
                }
                prop_assert_eq!(s.samples, samples);
                if parts > 0 {
                    let want_avg = if agg == Aggregation::Avg { avg_sum / parts as f64 } else { avg_sum };
                    prop_assert!(close(s.avg, want_avg), "avg {} vs {}", s.avg, want_avg);
                    prop_assert_eq!((s.min, s.max), (min, max));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn read_and_stats_match_the_model(ops in proptest::collection::vec(op(), 1..30), agg in aggregation()) {
        run(ops, agg)?;
    }
}
