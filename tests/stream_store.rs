//! A rollup that needs no other system: scan a metric from the store, average it per host over 1-minute
//! windows, and write the averages back as a new metric through the typed key space.

use std::sync::Arc;

use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use silt::stream::graph::{EdgeKind, LogicalGraph, LogicalNode, NodeKind};
use silt::stream::operators::{Aggregate, Map, TumblingWindow};
use silt::stream::runtime::start;
use silt::stream::store::{scan_schema, ScanSource, StoreSink};
use silt::{Aggregation, Batch, Db, HostKey, Key, MetricConfig, Options, Selector};

const T: i64 = 1_700_000_040; // a multiple of 60

#[test]
fn scan_window_and_write_back() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(tmp.path(), Options { checkpoint_interval: None, ..Options::default() }).unwrap());
    db.declare_metric("load", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).unwrap();
    db.declare_metric("load_avg_1m", MetricConfig { frequency: 60, aggregation: Aggregation::Avg }).unwrap();
    let mut b = Batch::new();
    for h in 0..3i64 {
        for i in 0..60 {
            b.push(&HostKey::new("c", &format!("h{h}")).unwrap(), "load", T + i * 10, (h * 100 + i) as f64);
        }
    }
    db.write(&b).unwrap();

    let sel = Selector::new(silt::keys::Namespace::Host, vec![silt::SelectorElement::Name("c".into())]).unwrap();
    let window_in = TumblingWindow::input_schema();
    let mut g = LogicalGraph::new();
    let db_src = db.clone();
    let src = g.add(LogicalNode {
        name: "scan".into(),
        parallelism: 2,
        input_schema: None,
        output_schema: Some(scan_schema()),
        kind: NodeKind::Source(Arc::new(move |s, p| {
            Box::new(ScanSource::new(db_src.clone(), &sel, "load", T, T + 600, s, p))
        })),
    });
    // Series text "host:c/h2" -> key 2.
    let key = g.add(LogicalNode {
        name: "key".into(),
        parallelism: 2,
        input_schema: Some(scan_schema()),
        output_schema: Some(window_in.clone()),
        kind: NodeKind::Operator(Arc::new(|_, _| {
            Box::new(Map(|b: RecordBatch| {
                let names = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
                let keys: Vec<i64> =
                    (0..names.len()).map(|i| names.value(i).rsplit('h').next().unwrap().parse().unwrap()).collect();
                Ok(RecordBatch::try_new(
                    TumblingWindow::input_schema(),
                    vec![Arc::new(Int64Array::from(keys)), b.column(1).clone(), b.column(2).clone()],
                )?)
            }))
        })),
    });
    let win = g.add(LogicalNode {
        name: "avg".into(),
        parallelism: 2,
        input_schema: Some(window_in),
        output_schema: Some(TumblingWindow::output_schema()),
        kind: NodeKind::Operator(Arc::new(|_, _| {
            Box::new(TumblingWindow::new(60, Aggregate::Avg, "key", "time", "value"))
        })),
    });
    let db_sink = db.clone();
    let sink = g.add(LogicalNode {
        name: "store".into(),
        parallelism: 2,
        input_schema: Some(TumblingWindow::output_schema()),
        output_schema: None,
        kind: NodeKind::Operator(Arc::new(move |_, _| {
            Box::new(StoreSink {
                db: db_sink.clone(),
                metric: "load_avg_1m".into(),
                columns: ["key".into(), "window_start".into(), "value".into()],
                key_of: Arc::new(|k| Ok(HostKey::new("c", &format!("h{k}")).unwrap().path())),
            })
        })),
    });
    g.connect(src, key, EdgeKind::Forward);
    g.connect(key, win, EdgeKind::Shuffle { key: "key".into() });
    g.connect(win, sink, EdgeKind::Forward);
    start(&g, 128).unwrap().join().unwrap();

    for h in 0..3i64 {
        let r = db.read(&HostKey::new("c", &format!("h{h}")).unwrap(), "load_avg_1m", T, T + 600).unwrap();
        let want: Vec<f64> = (0..10).map(|w| (0..6).map(|i| (h * 100 + w * 6 + i) as f64).sum::<f64>() / 6.0).collect();
        assert_eq!(r.values, want, "host {h}");
    }
}
