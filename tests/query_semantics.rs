//! The query layer's cc-metric-store cases: aggregation over children (sum, avg, max, min), groups and
//! wildcards, alignment of children with different ranges, padding, free, retention keep-sets and the debug
//! view.

use std::sync::Arc;

use silt::storage::io::sim::SimVfs;
use silt::{
    Aggregation, Batch, Db, Error, HostKey, MetricConfig, Options, Padding, QueryError, ReadOptions, Selector,
    SelectorElement,
};

const T: i64 = 1_700_000_000;
const F: i64 = 10;

fn open() -> Db {
    let vfs = SimVfs::new();
    let db = Db::open(
        "/db",
        Options {
            vfs: Arc::new(vfs),
            segment_size: 64 << 10,
            pages_per_file: 16,
            checkpoint_interval: None,
            ..Options::default()
        },
    )
    .expect("open");
    for (name, aggregation) in [
        ("flops", Aggregation::Sum),
        ("load", Aggregation::Avg),
        ("temp", Aggregation::None),
        ("bp", Aggregation::Max),
        ("idle", Aggregation::Min),
    ] {
        db.declare_metric(name, MetricConfig { frequency: F, aggregation }).expect("declare");
    }
    db
}

fn hw(host: &str, t: u32) -> HostKey {
    HostKey::new("emmy", host).and_then(|k| k.component("hwthread", t)).expect("key")
}

fn node(host: &str) -> HostKey {
    HostKey::new("emmy", host).expect("key")
}

fn write(db: &Db, key: &HostKey, metric: &str, samples: &[(i64, f64)]) {
    let mut b = Batch::new();
    for &(ts, v) in samples {
        b.push(key, metric, ts, v);
    }
    db.write(&b).expect("write");
}

fn same(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
}

#[test]
fn hwthread_children_are_summed_and_averaged_at_the_host() {
    let db = open();
    for t in 0..4u32 {
        let v = f64::from(t + 1);
        write(&db, &hw("n1", t), "flops", &[(T, v), (T + 10, v * 10.0)]);
        write(&db, &hw("n1", t), "load", &[(T, v), (T + 10, v * 10.0)]);
    }
    let r = db.read(&node("n1"), "flops", T, T + 20).expect("read");
    assert_eq!(r.values, vec![10.0, 100.0]);
    let r = db.read(&node("n1"), "load", T, T + 20).expect("read");
    assert_eq!(r.values, vec![2.5, 25.0]);
    let s = db.stats(&node("n1"), "load", T, T + 20).expect("stats");
    assert_eq!(s.samples, 8);
    assert_eq!((s.min, s.max), (1.0, 40.0));
    assert!((s.avg - 13.75).abs() < 1e-12, "{}", s.avg);
    let s = db.stats(&node("n1"), "flops", T, T + 20).expect("stats");
    assert!((s.avg - 55.0).abs() < 1e-12, "sum of the children's averages: {}", s.avg);
}

#[test]
fn a_metric_without_aggregation_refuses_to_combine_but_reads_alone() {
    let db = open();
    write(&db, &hw("n1", 0), "temp", &[(T, 50.0)]);
    assert_eq!(db.read(&hw("n1", 0), "temp", T, T + 10).expect("read").values, vec![50.0]);
    // One child only: nothing to combine.
    assert_eq!(db.read(&node("n1"), "temp", T, T + 10).expect("read").values, vec![50.0]);
    write(&db, &hw("n1", 1), "temp", &[(T, 60.0)]);
    let e = db.read(&node("n1"), "temp", T, T + 10).expect_err("two children, no aggregation");
    assert!(matches!(e, Error::Query(QueryError::NoAggregation { series: 2, .. })), "{e}");
    assert!(matches!(db.stats(&node("n1"), "temp", T, T + 10), Err(Error::Query(QueryError::NoAggregation { .. }))));
}

#[test]
fn a_level_that_holds_the_metric_is_not_aggregated_from_its_children() {
    let db = open();
    write(&db, &node("n1"), "flops", &[(T, 7.0)]);
    write(&db, &hw("n1", 0), "flops", &[(T, 1.0)]);
    assert_eq!(db.read(&node("n1"), "flops", T, T + 10).expect("read").values, vec![7.0]);
}

#[test]
fn groups_and_wildcards_select_levels() {
    let db = open();
    for (h, v) in [("n1", 1.0), ("n2", 2.0), ("n3", 4.0)] {
        write(&db, &node(h), "flops", &[(T, v)]);
    }
    let group = Selector::new(
        silt::keys::Namespace::Host,
        vec![SelectorElement::Name("emmy".into()), SelectorElement::Group(vec!["n1".into(), "n3".into()])],
    )
    .expect("selector");
    let r = db.query(&group, "flops", T, T + 10, ReadOptions::default()).expect("query");
    assert_eq!((r.values.clone(), r.series), (vec![5.0], 2));
    let all = Selector::all_hosts("emmy").expect("selector");
    let r = db.query(&all, "flops", T, T + 10, ReadOptions::default()).expect("query");
    assert_eq!((r.values.clone(), r.series), (vec![7.0], 3));
    let none = Selector::all_hosts("other").expect("selector");
    let r = db.query(&none, "flops", T, T + 10, ReadOptions::default()).expect("query");
    assert!(r.values.is_empty());
    assert_eq!(r.series, 0);
}

#[test]
fn children_with_different_ranges_give_the_union_with_nan_and_never_depend_on_order() {
    let db = open();
    // hwthread0 covers T..T+30, hwthread1 covers T+20..T+50, first written off-grid by 3 s.
    write(&db, &hw("n1", 0), "flops", &[(T, 1.0), (T + 10, 1.0), (T + 20, 1.0), (T + 30, 1.0)]);
    write(&db, &hw("n1", 1), "flops", &[(T + 23, 2.0), (T + 33, 2.0), (T + 43, 2.0), (T + 53, 2.0)]);
    let r = db.read(&node("n1"), "flops", T - 100, T + 100).expect("read");
    assert_eq!(r.from, T);
    let nan = f64::NAN;
    // Steps T, T+10 only hwthread0; T+20, T+30 both; T+40, T+50 only hwthread1 (its slot at T+50 started T+48).
    assert!(same(&r.values, &[nan, nan, 3.0, 3.0, nan, nan]), "{:?}", r.values);
    assert_eq!(r.to, T + 60);
    // The same data written in the other order, into another host, gives the same answer.
    write(&db, &hw("n2", 1), "flops", &[(T + 23, 2.0), (T + 33, 2.0), (T + 43, 2.0), (T + 53, 2.0)]);
    write(&db, &hw("n2", 0), "flops", &[(T, 1.0), (T + 10, 1.0), (T + 20, 1.0), (T + 30, 1.0)]);
    let r2 = db.read(&node("n2"), "flops", T - 100, T + 100).expect("read");
    assert!(same(&r.values, &r2.values) && r.from == r2.from && r.to == r2.to);
}

#[test]
fn padding_front_and_full() {
    let db = open();
    write(&db, &node("n1"), "flops", &[(T + 30, 1.0), (T + 40, 2.0)]);
    let nan = f64::NAN;
    let r = db.query(&Selector::from(&node("n1")), "flops", T, T + 100, ReadOptions::default()).expect("q");
    assert_eq!((r.from, r.to, r.values.clone()), (T + 30, T + 50, vec![1.0, 2.0]));
    let front = ReadOptions { padding: Padding::Front, ..ReadOptions::default() };
    let r = db.query(&Selector::from(&node("n1")), "flops", T, T + 100, front).expect("q");
    assert_eq!((r.from, r.to), (T, T + 50));
    assert!(same(&r.values, &[nan, nan, nan, 1.0, 2.0]));
    let full = ReadOptions { padding: Padding::Full, ..ReadOptions::default() };
    let r = db.query(&Selector::from(&node("n1")), "flops", T, T + 100, full).expect("q");
    assert_eq!((r.from, r.to, r.values.len()), (T, T + 100, 10));
    assert!(same(&r.values[3..5], &[1.0, 2.0]) && r.values[5..].iter().all(|v| v.is_nan()));
    // An unknown host with full padding is a full NaN array, without it empty.
    let r = db.query(&Selector::from(&node("nx")), "flops", T, T + 100, full).expect("q");
    assert_eq!(r.values.len(), 10);
    assert!(r.values.iter().all(|v| v.is_nan()));
}

#[test]
fn a_bad_resolution_is_an_error_and_native_is_returned_unchanged() {
    let db = open();
    write(&db, &node("n1"), "flops", &[(T, 1.0), (T + 10, 2.0)]);
    let sel = Selector::from(&node("n1"));
    let bad = ReadOptions { resolution: 15, ..ReadOptions::default() };
    assert!(matches!(db.query(&sel, "flops", T, T + 20, bad), Err(Error::Query(QueryError::Resolution(_)))));
    let short = ReadOptions { resolution: 60, ..ReadOptions::default() };
    let r = db.query(&sel, "flops", T, T + 20, short).expect("q");
    assert_eq!((r.resolution, r.values.clone()), (F, vec![1.0, 2.0]), "short series come back at native resolution");
}

#[test]
fn free_by_selector_prunes_series_from_aggregates() {
    let db = open();
    let mut b = Batch::new();
    for i in 0..1024 {
        b.push(&hw("n1", 0), "load", T + i * F, 1.0);
    }
    for i in 512..1024 {
        b.push(&hw("n1", 1), "load", T + i * F, 3.0);
    }
    db.write(&b).expect("write");
    let avg = |from: i64| db.read(&node("n1"), "load", from, from + 10).expect("read").values;
    assert_eq!(avg(T + 600 * F), vec![2.0]);
    // Free hwthread1 entirely and the first page of hwthread0.
    let freed = db.free_selector(&Selector::from(&hw("n1", 1)), T + 2000 * F).expect("free");
    assert_eq!(freed, 1);
    let freed = db.free_selector(&Selector::from(&node("n1")), T + 512 * F - 5).expect("free");
    assert_eq!(freed, 1);
    // hwthread1 has no pages now: it no longer takes part, so the average is hwthread0's alone.
    assert_eq!(avg(T + 600 * F), vec![1.0]);
    assert!(db.read(&node("n1"), "load", T, T + 100).expect("read").values.is_empty());
    let d = db.debug(&Selector::from(&node("n1")));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].name, "n1");
    assert_eq!(d[0].children.len(), 1, "the emptied hwthread1 is pruned from the debug view: {d:?}");
    assert_eq!(d[0].children[0].metrics, vec![("load".to_string(), 1, 4096)]);
}

#[test]
fn free_except_keeps_the_listed_hosts() {
    let db = open();
    let mut b = Batch::new();
    for h in ["n1", "n2"] {
        for i in 0..1024 {
            b.push(&node(h), "flops", T + i * F, 1.0);
        }
    }
    db.write(&b).expect("write");
    let freed = db.free_except(&[Selector::from(&node("n2"))], T + 512 * F).expect("free");
    assert_eq!(freed, 1);
    assert!(db.read(&node("n1"), "flops", T, T + 10).expect("r").values.is_empty());
    assert_eq!(db.read(&node("n2"), "flops", T, T + 10).expect("r").values, vec![1.0]);
}

#[test]
fn cached_page_stats_follow_overwrites_and_page_reuse() {
    let db = open();
    let mut b = Batch::new();
    for i in 0..1024 {
        b.push(&node("n1"), "flops", T + i * F, 1.0);
    }
    db.write(&b).expect("write");
    let range = (T - 5, T + 1024 * F);
    let s = db.stats(&node("n1"), "flops", range.0, range.1).expect("stats");
    assert_eq!((s.samples, s.max), (1024, 1.0));
    // Overwrite inside a full page whose stats are now cached.
    write(&db, &node("n1"), "flops", &[(T + 100 * F, 5.0)]);
    let s = db.stats(&node("n1"), "flops", range.0, range.1).expect("stats");
    assert_eq!((s.samples, s.max), (1024, 5.0));
    write(&db, &node("n1"), "flops", &[(T + 100 * F, f64::NAN)]);
    let s = db.stats(&node("n1"), "flops", range.0, range.1).expect("stats");
    assert_eq!((s.samples, s.max), (1023, 1.0));
    // Free both pages, reuse them for another series filled with 2.0: no stale 1.0 may show.
    assert_eq!(db.free_selector(&Selector::from(&node("n1")), T + 2048 * F).expect("free"), 2);
    db.checkpoint().expect("checkpoint");
    let mut b = Batch::new();
    for i in 0..1024 {
        b.push(&node("n2"), "flops", T + i * F, 2.0);
    }
    db.write(&b).expect("write");
    let s = db.stats(&node("n2"), "flops", range.0, range.1).expect("stats");
    assert_eq!((s.samples, s.min, s.max), (1024, 2.0, 2.0));
}

#[test]
fn resolution_downsamples_long_series_with_lttb_or_averages() {
    let db = open();
    let mut b = Batch::new();
    for i in 0..2000i64 {
        let v = if i == 1234 { 1000.0 } else { (i % 10) as f64 };
        b.push(&node("n1"), "flops", T + i * F, v);
    }
    db.write(&b).expect("write");
    let sel = Selector::from(&node("n1"));
    let lttb = ReadOptions { resolution: 100, ..ReadOptions::default() };
    let r = db.query(&sel, "flops", T, T + 2000 * F, lttb).expect("q");
    assert_eq!((r.resolution, r.values.len()), (100, 200));
    assert_eq!((r.values[0], r.values[199]), (0.0, 9.0), "LTTB keeps the first and the last point");
    assert!(r.values.contains(&1000.0), "LTTB keeps the spike");
    let avg = ReadOptions { resolution: 100, resampler: silt::Resampler::Average, ..ReadOptions::default() };
    let r = db.query(&sel, "flops", T, T + 2000 * F, avg).expect("q");
    assert_eq!((r.resolution, r.values.len()), (100, 200));
    assert_eq!(r.values[0], 4.5);
    assert_eq!(r.values[123], (4.5 * 10.0 - 4.0 + 1000.0) / 10.0, "the bucket holding the spike");
    // Under 1000 points the series comes back at its native frequency.
    let r = db.query(&sel, "flops", T, T + 999 * F, lttb).expect("q");
    assert_eq!((r.resolution, r.values.len()), (F, 999));
}

/// The same children for `bp` (max) and `idle` (min), hand-computed: hwthread0 covers T..T+30 with a NaN
/// written at T+20; hwthread1 starts off-grid at T+13 (its slots start at T+8), has a gap at T+23 and runs to
/// T+43. Steps of a read from T: T only hwthread0, T+10 both, T+20 neither has a value, T+30 both, T+40
/// only hwthread1.
fn max_min_children(db: &Db, host: &str) {
    for m in ["bp", "idle"] {
        write(db, &hw(host, 0), m, &[(T, 1.0), (T + 10, 5.0), (T + 20, f64::NAN), (T + 30, 2.0)]);
        write(db, &hw(host, 1), m, &[(T + 13, 3.0), (T + 33, 7.0), (T + 43, -1.0)]);
    }
}

#[test]
fn max_and_min_skip_missing_values_and_span_the_union() {
    let db = open();
    max_min_children(&db, "n1");
    let nan = f64::NAN;
    let r = db.query(&Selector::from(&node("n1")), "bp", T - 100, T + 100, ReadOptions::default()).expect("max");
    assert_eq!((r.from, r.to, r.series), (T, T + 50, 2));
    assert!(same(&r.values, &[1.0, 5.0, nan, 7.0, -1.0]), "{:?}", r.values);
    let r = db.query(&Selector::from(&node("n1")), "idle", T - 100, T + 100, ReadOptions::default()).expect("min");
    assert_eq!((r.from, r.to, r.series), (T, T + 50, 2));
    assert!(same(&r.values, &[1.0, 3.0, nan, 2.0, -1.0]), "{:?}", r.values);
    // A range inside: only the steps asked for, still skipping the NaN.
    let r = db.read(&node("n1"), "bp", T + 10, T + 40).expect("max");
    assert!(same(&r.values, &[5.0, nan, 7.0]) && r.from == T + 10 && r.to == T + 40, "{r:?}");
    // The same data summed: any missing value makes the step NaN (the sum path is unchanged).
    write(&db, &hw("n2", 0), "flops", &[(T, 1.0), (T + 10, 5.0), (T + 20, f64::NAN), (T + 30, 2.0)]);
    write(&db, &hw("n2", 1), "flops", &[(T + 13, 3.0), (T + 33, 7.0), (T + 43, -1.0)]);
    let r = db.read(&node("n2"), "flops", T - 100, T + 100).expect("sum");
    assert!(same(&r.values, &[nan, 8.0, nan, 9.0, nan]), "{:?}", r.values);
}

#[test]
fn max_and_min_with_one_series_and_signed_zeros() {
    let db = open();
    max_min_children(&db, "n1");
    // One series taking part comes back as it is (hwthread1 has no data before T+8).
    let r = db.read(&node("n1"), "bp", T - 20, T + 5).expect("one series");
    assert_eq!(r.values, vec![1.0]);
    assert_eq!(db.query(&Selector::from(&node("n1")), "bp", T, T + 5, ReadOptions::default()).expect("q").series, 1);
    // -0.0 is below +0.0 whichever child holds which.
    for (host, a, b) in [("z1", -0.0, 0.0), ("z2", 0.0, -0.0)] {
        for m in ["bp", "idle"] {
            write(&db, &hw(host, 0), m, &[(T, a)]);
            write(&db, &hw(host, 1), m, &[(T, b)]);
        }
        let max = db.read(&node(host), "bp", T, T + 10).expect("max").values;
        let min = db.read(&node(host), "idle", T, T + 10).expect("min").values;
        assert!(max.len() == 1 && max[0] == 0.0 && max[0].is_sign_positive(), "{host}: max {max:?}");
        assert!(min.len() == 1 && min[0] == 0.0 && min[0].is_sign_negative(), "{host}: min {min:?}");
    }
    // A step where every child wrote NaN stays NaN; infinities take part like any value.
    write(&db, &hw("n3", 0), "bp", &[(T, f64::NAN), (T + 10, f64::NEG_INFINITY)]);
    write(&db, &hw("n3", 1), "bp", &[(T, f64::NAN), (T + 10, f64::NAN)]);
    let r = db.read(&node("n3"), "bp", T, T + 20).expect("max");
    assert!(same(&r.values, &[f64::NAN, f64::NEG_INFINITY]), "{:?}", r.values);
}

#[test]
fn max_and_min_pad_and_resample_after_combining() {
    let db = open();
    max_min_children(&db, "n1");
    let nan = f64::NAN;
    let sel = Selector::from(&node("n1"));
    let full = ReadOptions { padding: Padding::Full, ..ReadOptions::default() };
    let r = db.query(&sel, "bp", T - 20, T + 70, full).expect("q");
    assert_eq!((r.from, r.to, r.series), (T - 20, T + 70, 2));
    assert!(same(&r.values, &[nan, nan, 1.0, 5.0, nan, 7.0, -1.0, nan, nan]), "{:?}", r.values);
    let front = ReadOptions { padding: Padding::Front, ..ReadOptions::default() };
    let r = db.query(&sel, "idle", T - 20, T + 70, front).expect("q");
    assert_eq!((r.from, r.to), (T - 20, T + 50));
    assert!(same(&r.values, &[nan, nan, 1.0, 3.0, nan, 2.0, -1.0]), "{:?}", r.values);

    // 2000 steps: hwthread0 counts 0..9, hwthread1 9..0, so each block of ten maxima is 9 8 7 6 5 5 6 7 8 9
    // (mean 7) and of minima 0 1 2 3 4 4 3 2 1 0 (mean 2); averaging to 100 s gives those means.
    let mut b = Batch::new();
    for i in 0..2000i64 {
        for m in ["bp", "idle"] {
            b.push(&hw("n9", 0), m, T + i * F, (i % 10) as f64);
            b.push(&hw("n9", 1), m, T + i * F, (9 - i % 10) as f64);
        }
    }
    db.write(&b).expect("write");
    let avg = ReadOptions { resolution: 100, resampler: silt::Resampler::Average, ..ReadOptions::default() };
    let sel = Selector::from(&node("n9"));
    for (m, mean) in [("bp", 7.0), ("idle", 2.0)] {
        let r = db.query(&sel, m, T, T + 2000 * F, avg).expect("q");
        assert_eq!((r.resolution, r.values.len(), r.series), (100, 200, 2));
        assert!(r.values.iter().all(|&v| v == mean), "{m}: {:?}", &r.values[..5]);
    }
}

#[test]
fn max_and_min_stats_are_those_of_the_combined_series() {
    let db = open();
    max_min_children(&db, "n1");
    // bp reads [1, 5, NaN, 7, -1]: 4 values, mean 3. Per-series stats would give 6 samples (hwthread0 1 5 2,
    // hwthread1 3 7 -1) and averages 8/3 and 3.
    let s = db.query_stats(&Selector::from(&node("n1")), "bp", T, T + 50).expect("stats");
    assert_eq!((s.samples, s.min, s.max, s.series), (4, -1.0, 7.0, 2));
    assert!((s.avg - 3.0).abs() < 1e-12, "{}", s.avg);
    // idle reads [1, 3, NaN, 2, -1]: mean 5/4, and its max is the highest minimum.
    let s = db.query_stats(&Selector::from(&node("n1")), "idle", T, T + 50).expect("stats");
    assert_eq!((s.samples, s.min, s.max, s.series), (4, -1.0, 3.0, 2));
    assert!((s.avg - 1.25).abs() < 1e-12, "{}", s.avg);
    // The stats of a range are those of the read of that range: [5, NaN, 7].
    let s = db.stats(&node("n1"), "bp", T + 10, T + 40).expect("stats");
    assert_eq!((s.samples, s.avg, s.min, s.max), (2, 6.0, 5.0, 7.0));
    // Only hwthread0 has a value with its nominal time in [T - 100, T + 10): its own stats, as before.
    let s = db.query_stats(&Selector::from(&node("n1")), "bp", T - 100, T + 10).expect("stats");
    assert_eq!((s.samples, s.avg, s.min, s.max, s.series), (1, 1.0, 1.0, 1.0, 1));
    // One series named directly: its per-series stats (1, 5, 2).
    let s = db.stats(&hw("n1", 0), "bp", T - 100, T + 100).expect("stats");
    assert_eq!((s.samples, s.min, s.max), (3, 1.0, 5.0));
    assert!((s.avg - 8.0 / 3.0).abs() < 1e-12, "{}", s.avg);
    // No data: zero samples, NaN.
    let s = db.query_stats(&Selector::from(&node("n1")), "bp", T + 1000, T + 2000).expect("stats");
    assert_eq!((s.samples, s.series), (0, 0));
    assert!(s.avg.is_nan() && s.min.is_nan() && s.max.is_nan());
    // A range far longer than a read may be (50 M steps) still works: only the data's steps are visited,
    // and the grid from 0 meets the data's steps from T (T is a multiple of F).
    let e = db.read(&node("n1"), "bp", 0, i64::MAX).expect_err("too many steps for a read");
    assert!(matches!(e, Error::Query(QueryError::InvalidRange { .. })), "{e}");
    let long = db.query_stats(&Selector::from(&node("n1")), "bp", 0, i64::MAX).expect("stats");
    let short = db.query_stats(&Selector::from(&node("n1")), "bp", T, T + 50).expect("stats");
    assert_eq!(long, short);
    let long = db.query_stats(&Selector::from(&node("n1")), "idle", i64::MIN, i64::MAX).expect("stats");
    assert_eq!((long.samples, long.min, long.max), (4, -1.0, 3.0));
}

#[test]
fn max_and_min_read_blocks_and_the_head_alike() {
    let db = open();
    // Two pages for each child; the first of each is compacted into a block.
    let mut b = Batch::new();
    for i in 0..1024i64 {
        b.push(&hw("n1", 0), "bp", T + i * F, (i % 7) as f64);
        if i % 5 != 0 {
            b.push(&hw("n1", 1), "bp", T + i * F, (i % 11) as f64 - 2.0);
        }
    }
    db.write(&b).expect("write");
    let sel = Selector::from(&node("n1"));
    let want: Vec<f64> = (0..1024i64)
        .map(|i| if i % 5 == 0 { (i % 7) as f64 } else { ((i % 7) as f64).max((i % 11) as f64 - 2.0) })
        .collect();
    let before = db.query(&sel, "bp", T, T + 1024 * F, ReadOptions::default()).expect("q");
    assert_eq!(before.values, want);
    let stats_before = db.query_stats(&sel, "bp", T, T + 1024 * F).expect("stats");
    // hwthread1 starts at T + 10 (slots from T + 5): both first pages end by T + 513 * F.
    assert_eq!(db.compact_selector(&sel, T + 513 * F).expect("compact"), 2);
    let after = db.query(&sel, "bp", T, T + 1024 * F, ReadOptions::default()).expect("q");
    assert_eq!(after.values, want);
    assert_eq!(db.query_stats(&sel, "bp", T, T + 1024 * F).expect("stats"), stats_before);
    assert_eq!(stats_before.samples, 1024);
}

#[test]
fn max_and_min_stats_equal_the_stats_of_the_read_over_long_off_grid_ranges() {
    let db = open();
    // 70 000 steps (more than one window of the stats' sampling), hwthread1 off-grid by 4 s and with gaps.
    let n = 70_000i64;
    let mut b = Batch::new();
    for i in 0..n {
        for m in ["bp", "idle"] {
            b.push(&hw("n1", 0), m, T + i * F, ((i * 7919) % 1000) as f64);
            if i % 3 != 0 {
                b.push(&hw("n1", 1), m, T + 4 + i * F, ((i * 104_729) % 1000) as f64 - 500.0);
            }
        }
    }
    db.write(&b).expect("write");
    let sel = Selector::from(&node("n1"));
    for m in ["bp", "idle"] {
        for (from, to) in [(T - 1000, T + n * F + 1000), (T + 3, T + n * F - 13), (T + 655_367, T + 655_377)] {
            let r = db.query(&sel, m, from, to, ReadOptions::default()).expect("read");
            let vals: Vec<f64> = r.values.iter().copied().filter(|v| !v.is_nan()).collect();
            let s = db.query_stats(&sel, m, from, to).expect("stats");
            assert_eq!((s.samples, s.series), (vals.len() as u64, 2), "{m} [{from}, {to})");
            assert!(vals.len() as i64 >= n.min((to - from) / F) - 2 && vals.len() as i64 <= n, "{m}: {}", vals.len());
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            assert!((s.avg - mean).abs() <= 1e-9 * mean.abs().max(1.0), "{m}: {} vs {mean}", s.avg);
            assert_eq!(s.min, vals.iter().copied().fold(f64::INFINITY, f64::min), "{m} [{from}, {to})");
            assert_eq!(s.max, vals.iter().copied().fold(f64::NEG_INFINITY, f64::max), "{m} [{from}, {to})");
        }
    }
}
