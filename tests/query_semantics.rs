//! The query layer's cc-metric-store cases: aggregation over children, groups and wildcards, alignment of
//! children with different ranges, padding, free, retention keep-sets and the debug view.

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
    for (name, aggregation) in [("flops", Aggregation::Sum), ("load", Aggregation::Avg), ("temp", Aggregation::None)] {
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
