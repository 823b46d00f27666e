//! The live ingest stream: write taps see exactly the accepted samples of their metric and selector, in
//! write order (proptest against a model); a full tap drops and counts without failing or blocking the
//! write; dropping a tap unregisters it; line-protocol ingest is tapped; and a `LiveSource` of parallelism
//! 2 in a pipeline delivers every written sample exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use proptest::prelude::*;
use silt::ingest::lineproto::Precision;
use silt::ingest::writer::LineWriter;
use silt::keys::{Namespace, SeriesPath};
use silt::storage::head::MAX_ABS_TS;
use silt::stream::graph::{EdgeKind, LogicalGraph, LogicalNode, NodeKind};
use silt::stream::live::LiveSource;
use silt::stream::operators::ChannelSink;
use silt::stream::runtime::start;
use silt::stream::store::scan_schema;
use silt::{
    Aggregation, Batch, Db, Durability, Error, HostKey, Key, MetricConfig, Options, Selector, SelectorElement, WriteTap,
};

const T: i64 = 1_700_000_000;
const METRICS: [&str; 3] = ["load", "temp", "undeclared"];
const CLUSTERS: [&str; 2] = ["c", "d"];

fn open(dir: &std::path::Path) -> Arc<Db> {
    let opts = Options {
        durability: Durability::None,
        checkpoint_interval: None,
        segment_size: 1 << 20,
        pages_per_file: 256,
        ..Options::default()
    };
    let db = Db::open(dir, opts).expect("open");
    for m in &METRICS[..2] {
        db.declare_metric(m, MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).expect("declare");
    }
    Arc::new(db)
}

fn sel(elements: &[Option<&str>]) -> Selector {
    let e = elements.iter().map(|e| e.map_or(SelectorElement::Any, |n| SelectorElement::Name(n.into()))).collect();
    Selector::new(Namespace::Host, e).expect("selector")
}

/// `host:<cluster>/h<host>` or `host:<cluster>/h<host>/cpu<c>`.
fn path(cluster: usize, host: usize, cpu: Option<u32>) -> SeriesPath {
    let k = HostKey::new(CLUSTERS[cluster], &format!("h{host}")).expect("key");
    match cpu {
        Some(c) => k.component("cpu", c).expect("component").path(),
        None => k.path(),
    }
}

/// Everything a tap delivered: `(series text, time, value)` in order, and the number of batches.
fn drain(tap: &WriteTap) -> (Vec<(String, i64, f64)>, usize) {
    let (mut rows, mut batches) = (Vec::new(), 0);
    let mut last_lsn = None;
    while let Some(b) = tap.try_recv() {
        assert!(!b.is_empty(), "an empty batch was delivered");
        assert!(last_lsn.is_none_or(|l| l <= b.lsn()), "batches out of log order");
        last_lsn = Some(b.lsn());
        batches += 1;
        rows.extend(b.iter().map(|(s, t, v)| (s.text.clone(), t, v)));
    }
    (rows, batches)
}

#[derive(Clone, Debug)]
struct Op {
    by_id: bool,
    metric: usize,
    cluster: usize,
    host: usize,
    cpu: Option<u32>,
    ts: i64,
}

fn op() -> impl Strategy<Value = Op> {
    let ts = prop_oneof![20 => (0i64..60).prop_map(|i| T + i * 10), 1 => Just(MAX_ABS_TS + 1)];
    (any::<bool>(), 0..3usize, 0..2usize, 0..3usize, proptest::option::of(0..2u32), ts)
        .prop_map(|(by_id, metric, cluster, host, cpu, ts)| Op { by_id, metric, cluster, host, cpu, ts })
}

/// A tap's metric and which paths it covers.
struct Model {
    metric: usize,
    covers: fn(&Op) -> bool,
}

proptest! {
    #[test]
    fn taps_see_exactly_the_accepted_samples_in_order(writes in proptest::collection::vec(
        proptest::collection::vec(op(), 0..40), 1..8)) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = open(tmp.path());
        let models = [
            Model { metric: 0, covers: |o| o.cluster == 0 },
            Model { metric: 0, covers: |o| o.cluster == 0 && o.host == 1 },
            Model { metric: 1, covers: |_| true },
            Model { metric: 0, covers: |o| o.cpu == Some(1) },
        ];
        let taps = [
            db.tap("load", &sel(&[Some("c")]), 1 << 20).expect("tap"),
            db.tap("load", &sel(&[Some("c"), Some("h1")]), 1 << 20).expect("tap"),
            db.tap("temp", &sel(&[]), 1 << 20).expect("tap"),
            db.tap("load", &sel(&[None, None, Some("cpu1")]), 1 << 20).expect("tap"),
        ];
        let mut want: Vec<Vec<(String, i64, f64)>> = vec![Vec::new(); taps.len()];
        let mut want_batches = vec![0usize; taps.len()];
        let mut value = 0.0;
        for w in &writes {
            let mut batch = Batch::new();
            // The engine gets the samples pushed by id first, then the keyed ones.
            let (mut ids, mut keyed) = (Vec::new(), Vec::new());
            for o in w {
                value += 1.0;
                let p = path(o.cluster, o.host, o.cpu);
                if o.by_id && o.metric < 2 {
                    batch.push_id(db.series_id(&p, METRICS[o.metric]).expect("intern"), o.ts, value);
                    ids.push((o, p, value));
                } else {
                    batch.push(&p, METRICS[o.metric], o.ts, value);
                    keyed.push((o, p, value));
                }
            }
            db.write(&batch).expect("write");
            for (m, (model, rows)) in models.iter().zip(want.iter_mut()).enumerate() {
                let before = rows.len();
                for (o, p, v) in ids.iter().chain(&keyed) {
                    if o.metric == model.metric && (model.covers)(o) && o.ts.abs() <= MAX_ABS_TS {
                        rows.push((p.to_string(), o.ts, *v));
                    }
                }
                want_batches[m] += usize::from(rows.len() > before);
            }
        }
        for (i, tap) in taps.iter().enumerate() {
            let (got, batches) = drain(tap);
            prop_assert_eq!(&got, &want[i], "tap {}", i);
            prop_assert_eq!(batches, want_batches[i], "tap {}: one batch per write", i);
            prop_assert_eq!(tap.dropped(), 0);
        }
    }
}

#[test]
fn unknown_metric_is_refused_by_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = open(tmp.path());
    let err = db.tap("undeclared", &sel(&[]), 10).expect_err("unknown metric");
    assert!(matches!(&err, Error::UnknownMetric(m) if m == "undeclared"), "{err}");
    assert!(err.to_string().contains("undeclared"));
    let err = LiveSource::new(db.clone(), &sel(&[]), "undeclared", 0, 1).expect_err("unknown metric");
    assert!(err.to_string().contains("undeclared"), "{err}");
    assert!(db.tap("load", &sel(&[]), 0).is_err(), "capacity 0");
    assert_eq!(db.tap_count(), 0);
}

#[test]
fn too_old_samples_are_tapped_too() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = open(tmp.path());
    let tap = db.tap("load", &sel(&[]), 100).expect("tap");
    let k = HostKey::new("c", "h0").expect("key");
    let mut b = Batch::new();
    b.push(&k, "load", T, 1.0);
    db.write(&b).expect("write");
    let mut b = Batch::new();
    b.push(&k, "load", T - 100, 2.0);
    assert_eq!(db.write(&b).expect("write").outcome.too_old, 1);
    let (rows, _) = drain(&tap);
    assert_eq!(rows, vec![("host:c/h0".into(), T, 1.0), ("host:c/h0".into(), T - 100, 2.0)]);
}

#[test]
fn a_full_tap_drops_and_counts_and_the_write_stores_everything() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = open(tmp.path());
    let tap = db.tap("load", &sel(&[Some("c")]), 10).expect("tap");
    let k = HostKey::new("c", "h0").expect("key");
    let write = |from: i64, n: i64| {
        let mut b = Batch::new();
        for i in from..from + n {
            b.push(&k, "load", T + i * 10, i as f64);
        }
        let ack = db.write(&b).expect("write never fails for a full tap");
        assert_eq!(ack.outcome.stored, n as u64);
    };
    write(0, 6);
    assert_eq!((tap.queued_rows(), tap.dropped()), (6, 0));
    // 6 + 5 > 10: the whole second write is dropped for the tap.
    write(6, 5);
    assert_eq!((tap.queued_rows(), tap.dropped()), (6, 5));
    write(11, 4);
    assert_eq!((tap.queued_rows(), tap.dropped()), (10, 5));
    // A write larger than the whole queue never fits.
    write(15, 11);
    assert_eq!((tap.queued_rows(), tap.dropped()), (10, 16));
    let (rows, batches) = drain(&tap);
    assert_eq!(batches, 2);
    let times: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let want: Vec<i64> = (0..6).chain(11..15).map(|i| T + i * 10).collect();
    assert_eq!(times, want);
    // Room again after draining.
    write(26, 3);
    assert_eq!((tap.queued_rows(), tap.dropped()), (3, 16));
    // Everything was stored.
    let r = db.read(&k, "load", T, T + 290).expect("read");
    assert_eq!(r.values, (0..29).map(|i| i as f64).collect::<Vec<_>>());
}

#[test]
fn dropping_a_tap_unregisters_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = open(tmp.path());
    let k = HostKey::new("c", "h0").expect("key");
    let mut b = Batch::new();
    b.push(&k, "load", T, 1.0);
    assert_eq!(db.tap_count(), 0);
    let a = db.tap("load", &sel(&[]), 10).expect("tap");
    let other = db.tap("load", &sel(&[]), 10).expect("tap");
    assert_eq!(db.tap_count(), 2);
    db.write(&b).expect("write");
    drop(a);
    assert_eq!(db.tap_count(), 1);
    db.write(&b).expect("write");
    assert_eq!(drain(&other).1, 2);
    drop(other);
    assert_eq!(db.tap_count(), 0);
    db.write(&b).expect("write");
    // A tap made now sees only what is written from now on.
    let late = db.tap("load", &sel(&[]), 10).expect("tap");
    assert!(late.try_recv().is_none());
    db.write(&b).expect("write");
    assert!(late.recv_timeout(Duration::from_secs(5)).is_some());
    assert!(late.recv_timeout(Duration::from_millis(20)).is_none());
}

#[test]
fn line_protocol_ingest_is_tapped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = open(tmp.path());
    let tap = db.tap("load", &sel(&[Some("c")]), 100).expect("tap");
    let w = LineWriter::new();
    // LineWriter (HTTP and NATS ingest) resolves series ids itself and writes with `Batch::push_id`; the
    // second body is resolved from its cache.
    for (i, body) in
        [&b"load,hostname=a value=1 100\ntemp,hostname=a value=5 100\n"[..], b"load,hostname=a value=2 110\n"]
            .into_iter()
            .enumerate()
    {
        let r = w.write(&db, body, Some("c"), Precision::Seconds, 0).expect("write");
        assert!(r.error.is_none(), "body {i}: {:?}", r.error);
    }
    w.write(&db, b"load,hostname=a value=3 120\n", Some("d"), Precision::Seconds, 0).expect("write");
    let (rows, _) = drain(&tap);
    assert_eq!(rows, vec![("host:c/a".into(), 100, 1.0), ("host:c/a".into(), 110, 2.0)]);
}

#[test]
fn live_source_delivers_every_sample_once_across_subtasks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = open(tmp.path());
    let (tx, rx) = crossbeam_channel::unbounded::<(usize, RecordBatch)>();
    let mut g = LogicalGraph::new();
    let db_src = db.clone();
    let src = g.add(LogicalNode {
        name: "live".into(),
        parallelism: 2,
        input_schema: None,
        output_schema: Some(scan_schema()),
        kind: NodeKind::Source(Arc::new(move |s, p| {
            Box::new(LiveSource::new(db_src.clone(), &sel(&[Some("c")]), "load", s, p).expect("live source"))
        })),
    });
    let sink = g.add(LogicalNode {
        name: "sink".into(),
        parallelism: 2,
        input_schema: Some(scan_schema()),
        output_schema: None,
        kind: NodeKind::Operator(Arc::new(move |s, _| Box::new(ChannelSink { subtask: s, tx: tx.clone() }))),
    });
    g.connect(src, sink, EdgeKind::Forward);
    let pipeline = start(&g, 1024).expect("start");

    let mut want = Vec::new();
    for round in 0..20i64 {
        let mut b = Batch::new();
        for cluster in 0..2 {
            for host in 0..6 {
                for cpu in [None, Some(0), Some(1)] {
                    let p = path(cluster, host, cpu);
                    let v = (round * 1000 + host as i64 * 10 + cpu.map_or(9, i64::from)) as f64;
                    b.push(&p, "load", T + round * 10, v);
                    b.push(&p, "temp", T + round * 10, -v);
                    if cluster == 0 {
                        want.push((p.to_string(), T + round * 10, v));
                    }
                }
            }
        }
        db.write(&b).expect("write");
    }

    let mut got = Vec::new();
    let mut subtask_of: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // After everything arrived, wait a little more for any duplicate.
    let mut settle: Option<Instant> = None;
    while settle.is_none_or(|s| Instant::now() < s) && Instant::now() < deadline {
        let Ok((subtask, b)) = rx.recv_timeout(Duration::from_millis(20)) else { continue };
        let names = b.column(0).as_any().downcast_ref::<StringArray>().expect("series");
        let times = b.column(1).as_any().downcast_ref::<Int64Array>().expect("time");
        let values = b.column(2).as_any().downcast_ref::<Float64Array>().expect("value");
        for i in 0..b.num_rows() {
            got.push((names.value(i).to_owned(), times.value(i), values.value(i)));
            subtask_of.entry(names.value(i).to_owned()).or_default().insert(subtask);
        }
        if got.len() >= want.len() && settle.is_none() {
            settle = Some(Instant::now() + Duration::from_millis(200));
        }
    }
    // A live source never ends: the pipeline stops only when cancelled, idle sources included.
    pipeline.cancel();
    assert!(matches!(pipeline.join(), Err(silt::stream::StreamError::Cancelled)));

    let key = |r: &(String, i64, f64)| (r.0.clone(), r.1, r.2.to_bits());
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got.len(), want.len(), "rows: got {}, want {}", got.len(), want.len());
    assert_eq!(got, want);
    assert!(subtask_of.values().all(|s| s.len() == 1), "a series went to two subtasks");
    let used: BTreeSet<usize> = subtask_of.values().flatten().copied().collect();
    assert_eq!(used.len(), 2, "both subtasks got a share");
}
