//! Operator and source state for checkpoints (`format/checkpoint.md`, "Operator states"): a window
//! snapshotted mid-stream and restored into a fresh operator gives exactly the output of an uninterrupted
//! one (bit for bit, every aggregate, tumbling and sliding); restores of another configuration or of
//! garbage are errors, never panics; a store scan resumes right after its snapshot; a store sink's
//! snapshot makes its writes durable under any durability.

use std::sync::Arc;

use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use proptest::prelude::*;
use silt::keys::Namespace;
use silt::storage::io::sim::SimVfs;
use silt::stream::operators::{Aggregate, Collector, Operator, Source, SourcePoll, TumblingWindow};
use silt::stream::store::{ScanSource, StoreSink};
use silt::stream::StreamError;
use silt::{Aggregation, Batch, Db, Durability, HostKey, Key, MetricConfig, Options, Selector, SelectorElement};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("time", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

fn batch(rows: &[(i64, i64, f64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

/// Output rows as (key, window_start, value bits), in emission order.
#[derive(Default)]
struct Out(Vec<(i64, i64, u64)>);

impl Collector for Out {
    fn emit(&mut self, b: RecordBatch) -> Result<(), StreamError> {
        let k = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let s = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        let v = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        self.0.extend((0..b.num_rows()).map(|i| (k.value(i), s.value(i), v.value(i).to_bits())));
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Step {
    Rows(Vec<(i64, i64, f64)>),
    /// Advance the watermark by this much.
    Watermark(i64),
}

fn run(w: &mut TumblingWindow, steps: &[Step], wm: &mut i64, out: &mut Out) {
    for s in steps {
        match s {
            Step::Rows(rows) => w.process(0, batch(rows), out).unwrap(),
            Step::Watermark(d) => {
                *wm += d;
                w.on_watermark(*wm, out).unwrap();
            }
        }
    }
}

fn aggregate() -> impl Strategy<Value = Aggregate> {
    prop_oneof![
        Just(Aggregate::Count),
        Just(Aggregate::Sum),
        Just(Aggregate::Avg),
        Just(Aggregate::Min),
        Just(Aggregate::Max),
        Just(Aggregate::Last)
    ]
}

fn value() -> impl Strategy<Value = f64> {
    // Arbitrary finite values (sums depend on the order of addition, so bit equality checks the order too),
    // plus the awkward ones.
    prop_oneof![
        8 => -1e12f64..1e12,
        1 => Just(-0.0),
        1 => Just(f64::MAX),
        1 => Just(f64::NAN),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let rows = proptest::collection::vec((0i64..4, 0i64..400, value()), 1..6).prop_map(Step::Rows);
    let wm = (0i64..60).prop_map(Step::Watermark);
    proptest::collection::vec(prop_oneof![4 => rows, 1 => wm], 0..60)
}

proptest! {
    #[test]
    fn a_restored_window_continues_like_an_uninterrupted_one(
        steps in steps(),
        split in 0usize..60,
        width in 1i64..120,
        slide_div in 1i64..4,
        agg in aggregate(),
    ) {
        // Tumbling when slide_div is 1, else sliding.
        let slide = (width / slide_div).max(1);
        let make = || TumblingWindow::sliding(width, slide, agg, "key", "time", "value");
        let split = split.min(steps.len());

        let mut whole = make();
        let (mut wm, mut want) = (-1000, Out::default());
        run(&mut whole, &steps, &mut wm, &mut want);
        whole.finish(&mut want).unwrap();

        let mut first = make();
        let (mut wm, mut got) = (-1000, Out::default());
        run(&mut first, &steps[..split], &mut wm, &mut got);
        let state = first.snapshot().unwrap();
        prop_assert_eq!(first.snapshot().unwrap(), state.clone(), "a snapshot changes nothing");
        let mut second = make();
        second.restore(&state).unwrap();
        prop_assert_eq!(second.snapshot().unwrap(), state, "restore then snapshot is the identity");
        run(&mut second, &steps[split..], &mut wm, &mut got);
        second.finish(&mut got).unwrap();

        prop_assert_eq!(got.0, want.0);
        prop_assert_eq!(second.late, whole.late);
    }

    #[test]
    fn window_restore_of_garbage_is_an_error_never_a_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..300),
        header in any::<bool>(),
        agg in aggregate(),
    ) {
        let mut w = TumblingWindow::sliding(60, 20, agg, "key", "time", "value");
        let bytes = if header {
            // A valid header of this operator's configuration and a window count that fits the length, so
            // the garbage reaches the windows' checks.
            let mut b = w.snapshot().unwrap();
            b.truncate(34);
            let n = tail.len() / 64;
            b.extend_from_slice(&(n as u32).to_le_bytes());
            b.extend_from_slice(&tail[..n * 64]);
            b
        } else {
            tail
        };
        let before = w.snapshot().unwrap();
        if w.restore(&bytes).is_err() {
            prop_assert_eq!(w.snapshot().unwrap(), before, "a refused restore changes nothing");
        }
        let mut out = Out::default();
        w.process(0, batch(&[(1, 5, 1.0)]), &mut out).unwrap();
        w.finish(&mut out).unwrap();
    }
}

fn window_with_state() -> (TumblingWindow, Vec<u8>) {
    let mut w = TumblingWindow::sliding(60, 30, Aggregate::Avg, "key", "time", "value");
    let mut out = Out::default();
    w.process(0, batch(&[(1, 10, 1.0), (2, 70, 2.0), (1, 95, 3.0)]), &mut out).unwrap();
    w.on_watermark(60, &mut out).unwrap();
    let s = w.snapshot().unwrap();
    (w, s)
}

#[test]
fn window_state_of_another_configuration_is_refused() {
    let (_, state) = window_with_state();
    let cases = [
        ("width", TumblingWindow::sliding(120, 30, Aggregate::Avg, "key", "time", "value")),
        ("slide", TumblingWindow::sliding(60, 20, Aggregate::Avg, "key", "time", "value")),
        ("aggregate", TumblingWindow::sliding(60, 30, Aggregate::Sum, "key", "time", "value")),
        ("tumbling", TumblingWindow::new(60, Aggregate::Avg, "key", "time", "value")),
    ];
    for (what, mut w) in cases {
        let e = w.restore(&state).unwrap_err().to_string();
        assert!(e.contains("taken with width 60, slide 30, Avg"), "{what}: {e}");
    }
    // Same configuration, other column names: accepted.
    TumblingWindow::sliding(60, 30, Aggregate::Avg, "k", "t", "v").restore(&state).unwrap();
}

#[test]
fn every_truncation_and_bad_field_of_window_state_is_refused() {
    let (mut w, state) = window_with_state();
    // Open after the watermark 60: (30, 2), (60, 1), (60, 2), (90, 1).
    assert_eq!(state.len(), 38 + 4 * 64);
    for n in 0..state.len() {
        assert!(w.restore(&state[..n]).is_err(), "truncated to {n}");
    }
    let bad = |at: usize, v: u8| {
        let mut s = state.clone();
        s[at] = v;
        s
    };
    for (what, s) in [
        ("version", bad(0, 2)),
        ("aggregate tag", bad(17, 9)),
        ("count", bad(34, 5)),
        ("window order", {
            let mut s = state.clone();
            let (a, b) = (38, 38 + 64);
            let first: Vec<u8> = s[a..b].to_vec();
            s.copy_within(b..b + 64, a);
            s[b..b + 64].copy_from_slice(&first);
            s
        }),
        ("off the grid", bad(38, 31)),
        ("empty window", {
            let mut s = state.clone();
            s[38 + 16..38 + 24].fill(0);
            s
        }),
    ] {
        let e = w.restore(&s).unwrap_err();
        assert!(e.to_string().starts_with("operator failed: window state:"), "{what}: {e}");
    }
    let mut longer = state.clone();
    longer.push(0);
    assert!(w.restore(&longer).is_err());
    w.restore(&state).unwrap();
}

// ---- Store scan source and sink ----------------------------------------------------------------------

const T: i64 = 1_700_000_040;

fn host(h: usize) -> HostKey {
    HostKey::new("c", &format!("h{h:02}")).unwrap()
}

fn selector() -> Selector {
    Selector::new(Namespace::Host, vec![SelectorElement::Name("c".into())]).unwrap()
}

/// A database with `hosts` series of "load" (host 3 has no data in the scanned range).
fn db_with_series(vfs: &SimVfs, hosts: usize) -> Arc<Db> {
    let db = Db::open("/db", Options { vfs: Arc::new(vfs.clone()), checkpoint_interval: None, ..Options::default() })
        .unwrap();
    db.declare_metric("load", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).unwrap();
    let mut b = Batch::new();
    for h in 0..hosts {
        let t0 = if h == 3 { T + 10_000 } else { T };
        for i in 0..5 {
            b.push(&host(h), "load", t0 + i * 10, (h * 10) as f64 + i as f64);
        }
    }
    db.write(&b).unwrap();
    Arc::new(db)
}

/// Every row a source gives from now on, as (series, time, value), until it ends.
fn drain(src: &mut dyn Source) -> Vec<(String, i64, f64)> {
    let mut rows = Vec::new();
    while let SourcePoll::Batch(b) = src.poll().unwrap() {
        rows.extend(batch_rows(&b));
    }
    rows
}

fn batch_rows(b: &RecordBatch) -> Vec<(String, i64, f64)> {
    let s = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
    let t = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
    let v = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
    (0..b.num_rows()).map(|i| (s.value(i).to_owned(), t.value(i), v.value(i))).collect()
}

#[test]
fn a_restored_scan_resumes_right_after_its_snapshot() {
    let vfs = SimVfs::new();
    let db = db_with_series(&vfs, 7);
    let scan = |s, p| ScanSource::new(db.clone(), &selector(), "load", T, T + 600, s, p);
    for (subtask, parallelism) in [(0, 1), (1, 2), (0, 3)] {
        let whole = drain(&mut scan(subtask, parallelism));
        assert!(!whole.is_empty());
        // Snapshot after every number of polls, including after the end.
        for polls in 0..=whole.len() {
            let mut first = scan(subtask, parallelism);
            let mut got = Vec::new();
            for _ in 0..polls {
                match first.poll().unwrap() {
                    SourcePoll::Batch(b) => got.extend(batch_rows(&b)),
                    _ => break,
                }
            }
            let state = first.snapshot().unwrap();
            let mut second = scan(subtask, parallelism);
            second.restore(&state).unwrap();
            assert_eq!(second.watermark(), first.watermark());
            assert_eq!(second.snapshot().unwrap(), state);
            got.extend(drain(&mut second));
            assert_eq!(got, whole, "subtask {subtask}/{parallelism}, snapshot after {polls} polls");
            assert_eq!(second.watermark(), Some(T + 600));
        }
    }
}

#[test]
fn scan_restore_refuses_positions_past_its_series_and_garbage() {
    let vfs = SimVfs::new();
    let db = db_with_series(&vfs, 7);
    let mut all = ScanSource::new(db.clone(), &selector(), "load", T, T + 600, 0, 1);
    drain(&mut all);
    let state = all.snapshot().unwrap();
    assert_eq!(state, [1, 7, 0, 0, 0, 0, 0, 0, 0, 1], "version 1, position 7, done");
    // Subtask 1 of 2 has only 3 of the 7 series.
    let mut half = ScanSource::new(db.clone(), &selector(), "load", T, T + 600, 1, 2);
    let e = half.restore(&state).unwrap_err().to_string();
    assert!(e.contains("position 7 is past this subtask's 3 series"), "{e}");
    let bads: [&[u8]; 5] = [&[], &[1], &state[..9], &[2, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[1, 0, 0, 0, 0, 0, 0, 0, 0, 2]];
    for bad in bads {
        assert!(half.restore(bad).is_err(), "{bad:?}");
    }
    let mut long = state.clone();
    long.push(0);
    assert!(all.restore(&long).is_err());
    // A refused restore left it where it was: at the start.
    let fresh = drain(&mut ScanSource::new(db.clone(), &selector(), "load", T, T + 600, 1, 2));
    assert!(!fresh.is_empty());
    assert_eq!(drain(&mut half), fresh);
}

#[test]
fn a_store_sink_snapshot_makes_its_writes_durable_under_any_durability() {
    let vfs = SimVfs::new();
    let opts = |vfs: &SimVfs| Options {
        vfs: Arc::new(vfs.clone()),
        durability: Durability::None,
        checkpoint_interval: None,
        ..Options::default()
    };
    let db = Arc::new(Db::open("/db", opts(&vfs)).unwrap());
    db.declare_metric("avg", MetricConfig { frequency: 60, aggregation: Aggregation::Avg }).unwrap();
    let mut sink = StoreSink {
        db: db.clone(),
        metric: "avg".into(),
        columns: ["key".into(), "time".into(), "value".into()],
        key_of: Arc::new(|k| Ok(host(k as usize).path())),
    };
    let rows: Vec<(i64, i64, f64)> = (0..20).map(|i| (i % 3, T + 60 * i, i as f64 * 0.5)).collect();
    sink.process(0, batch(&rows), &mut Out::default()).unwrap();
    assert_eq!(sink.snapshot().unwrap(), Vec::<u8>::new());
    // Written after the barrier: may be lost.
    sink.process(0, batch(&[(0, T + 60 * 100, 7.0)]), &mut Out::default()).unwrap();
    let crashed = vfs.crash_clean();
    drop(sink);
    drop(db);
    let db = Db::open("/db", opts(&crashed)).unwrap();
    for (k, t, v) in rows {
        let r = db.read(&host(k as usize), "avg", t, t + 60).unwrap();
        assert_eq!(r.values.first().map(|x| x.to_bits()), Some(v.to_bits()), "row ({k}, {t})");
    }
}
