//! Stream engine throughput (a bench binary): source → shuffle by key → 1-minute tumbling average →
//! store sink (writing the averages back as a metric through the typed key space), at parallelism 1 and
//! 2, with 8192-row and 64-row batches (the difference is the per-batch overhead).
//!
//! Run: `cargo bench --bench stream` (10 M events, 1000 keys, one event per key per second). Under
//! `cargo test` it runs 100 k events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use silt::stream::graph::{EdgeKind, LogicalGraph, LogicalNode, NodeKind};
use silt::stream::operators::{Aggregate, OrderedVecSource, TumblingWindow};
use silt::stream::runtime::start;
use silt::stream::store::StoreSink;
use silt::{Aggregation, Db, Durability, HostKey, Key, MetricConfig, Options};

const KEYS: i64 = 1000;
const T: i64 = 1_700_000_000;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("time", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

fn batches(events: i64, rows: usize) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < events {
        let n = (rows as i64).min(events - i);
        let idx: Vec<i64> = (i..i + n).collect();
        let cols: Vec<arrow_array::ArrayRef> = vec![
            Arc::new(Int64Array::from(idx.iter().map(|j| j % KEYS).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(idx.iter().map(|j| T + j / KEYS).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(idx.iter().map(|j| (j % 97) as f64 / 10.0).collect::<Vec<_>>())),
        ];
        out.push(RecordBatch::try_new(schema(), cols).expect("batch"));
        i += n;
    }
    out
}

fn graph(db: &Arc<Db>, events: i64, rows: usize, p: usize) -> (LogicalGraph, usize) {
    let all = Arc::new(batches(events, rows));
    let n_batches = all.len();
    let mut g = LogicalGraph::new();
    let src = g.add(LogicalNode {
        name: "events".into(),
        parallelism: p,
        input_schema: None,
        output_schema: Some(schema()),
        kind: NodeKind::Source(Arc::new(move |s, p| {
            let mine: Vec<RecordBatch> = all.iter().skip(s).step_by(p).cloned().collect();
            Box::new(OrderedVecSource::new(mine, "time"))
        })),
    });
    let win = g.add(LogicalNode {
        name: "avg_1m".into(),
        parallelism: p,
        input_schema: Some(schema()),
        output_schema: Some(TumblingWindow::output_schema()),
        kind: NodeKind::Operator(Arc::new(|_, _| {
            Box::new(TumblingWindow::new(60, Aggregate::Avg, "key", "time", "value"))
        })),
    });
    let db2 = db.clone();
    let sink = g.add(LogicalNode {
        name: "store".into(),
        parallelism: p,
        input_schema: Some(TumblingWindow::output_schema()),
        output_schema: None,
        kind: NodeKind::Operator(Arc::new(move |_, _| {
            Box::new(StoreSink {
                db: db2.clone(),
                metric: "load_avg_1m".into(),
                columns: ["key".into(), "window_start".into(), "value".into()],
                key_of: Arc::new(|k| Ok(HostKey::new("bench", &format!("k{k}")).expect("key").path())),
            })
        })),
    });
    g.connect(src, win, EdgeKind::Shuffle { key: "key".into() });
    g.connect(win, sink, EdgeKind::Forward);
    (g, n_batches)
}

fn run(db: &Arc<Db>, events: i64, rows: usize, p: usize) -> f64 {
    let (g, n_batches) = graph(db, events, rows, p);
    let t0 = Instant::now();
    start(&g, 1 << 16).expect("start").join().expect("run");
    let secs = t0.elapsed().as_secs_f64();
    let rate = events as f64 / secs;
    println!(
        "stream: p={p}, {rows}-row batches ({n_batches} batches): {events} events in {secs:.3} s: {:.2} M events/s, \
         {:.2} us per batch",
        rate / 1e6,
        secs / n_batches as f64 * 1e6
    );
    rate
}

/// The same pipeline under the controller, checkpointing into the store every `every`.
fn run_checkpointed(db: &Arc<Db>, events: i64, p: usize, every: Duration, name: &str) -> f64 {
    use silt::stream::controller::{PipelineDef, PipelineState, StreamEngine};
    let (g, _) = graph(db, events, 8192, p);
    let engine = StreamEngine::new(p, db.clone()).expect("engine");
    let mut def = PipelineDef::new(name, g);
    def.checkpoint_interval = Some(every);
    let t0 = Instant::now();
    let h = engine.submit(def).expect("submit");
    let info =
        h.wait_for(Duration::from_secs(600), |i| matches!(i.state, PipelineState::Stopped | PipelineState::Failed));
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(info.state, PipelineState::Stopped, "{info:?}");
    let rate = events as f64 / secs;
    println!(
        "stream: p={p}, 8192-row batches, checkpoint every {} ms into the store: {events} events in {secs:.3} s: \
         {:.2} M events/s, {} checkpoints",
        every.as_millis(),
        rate / 1e6,
        info.checkpoint_epoch
    );
    rate
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let events = if full { 10_000_000 } else { 100_000 };
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(
        Db::open(
            tmp.path(),
            Options { durability: Durability::IntervalMs(100), checkpoint_interval: None, ..Options::default() },
        )
        .expect("open"),
    );
    db.declare_metric("load_avg_1m", MetricConfig { frequency: 60, aggregation: Aggregation::Avg }).expect("declare");
    for p in [1, 2] {
        run(&db, events, 8192, p);
        run(&db, events / 10, 64, p);
        run_checkpointed(&db, events, p, Duration::from_millis(100), &format!("bench{p}"));
    }
    let r = db.read(&HostKey::new("bench", "k7").expect("key"), "load_avg_1m", T, T + events / KEYS).expect("read");
    assert!(r.values.iter().any(|v| !v.is_nan()), "the rollup reached the store");
}
