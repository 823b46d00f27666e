//! Job metrics of running pipelines: rates that follow an injected load, backpressure near 1 upstream of a
//! slow sink, and history that is still there after a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use silt::jobs::collector::Collector;
use silt::jobs::{store, JobReport};
use silt::stream::controller::{PipelineDef, PipelineState, StateStore, StreamEngine};
use silt::stream::graph::{EdgeKind, LogicalGraph, LogicalNode, NodeKind};
use silt::stream::operators::{ChannelSink, Collector as Emit, Operator, Source, SourcePoll};
use silt::stream::runtime::RunConfig;
use silt::stream::StreamError;
use silt::{Db, Options};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("key", DataType::Int64, false), Field::new("value", DataType::Int64, false)]))
}

fn rows(n: usize, from: i64) -> RecordBatch {
    let k = Int64Array::from((0..n as i64).map(|i| (from + i) % 7).collect::<Vec<_>>());
    let v = Int64Array::from((0..n as i64).map(|i| from + i).collect::<Vec<_>>());
    RecordBatch::try_new(schema(), vec![Arc::new(k), Arc::new(v)]).expect("batch")
}

/// Emits `batch` rows at a time so that on average `rate` rows per second go out (it catches up after a
/// late poll); `rate == 0` emits as fast as it is polled.
struct Paced {
    start: Option<Instant>,
    rate: f64,
    batch: usize,
    emitted: u64,
}

impl Source for Paced {
    fn poll(&mut self) -> Result<SourcePoll, StreamError> {
        let start = *self.start.get_or_insert_with(Instant::now);
        let due = start.elapsed().as_secs_f64() * self.rate;
        if self.rate > 0.0 && (self.emitted + self.batch as u64) as f64 > due {
            return Ok(SourcePoll::Idle);
        }
        let b = rows(self.batch, self.emitted as i64);
        self.emitted += self.batch as u64;
        Ok(SourcePoll::Batch(b))
    }
}

/// Passes batches on.
struct Pass;

impl Operator for Pass {
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut dyn Emit) -> Result<(), StreamError> {
        out.emit(batch)
    }
}

/// Takes each batch after sleeping.
struct Slow(Duration);

impl Operator for Slow {
    fn process(&mut self, _input: usize, _batch: RecordBatch, _out: &mut dyn Emit) -> Result<(), StreamError> {
        std::thread::sleep(self.0);
        Ok(())
    }
}

fn node(name: &str, parallelism: usize, kind: NodeKind, input: bool, output: bool) -> LogicalNode {
    LogicalNode {
        name: name.into(),
        parallelism,
        input_schema: input.then(schema),
        output_schema: output.then(schema),
        kind,
    }
}

/// source → (shuffle) → map → (shuffle) → sink, the sink with `sinks` subtasks.
fn graph(rate: f64, batch: usize, sink: NodeKind, sinks: usize) -> LogicalGraph {
    let mut g = LogicalGraph::new();
    let src = g.add(node(
        "source",
        1,
        NodeKind::Source(Arc::new(move |_, _| Box::new(Paced { start: None, rate, batch, emitted: 0 }))),
        false,
        true,
    ));
    let map = g.add(node("map", 1, NodeKind::Operator(Arc::new(|_, _| Box::new(Pass))), true, true));
    let snk = g.add(node("sink", sinks, sink, true, false));
    g.connect(src, map, EdgeKind::Shuffle { key: "key".into() });
    g.connect(map, snk, EdgeKind::Shuffle { key: "key".into() });
    g
}

/// A sink that sends every batch to the returned receiver.
fn channel_sink() -> (NodeKind, crossbeam_channel::Receiver<(usize, RecordBatch)>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (NodeKind::Operator(Arc::new(move |s, _| Box::new(ChannelSink { subtask: s, tx: tx.clone() }))), rx)
}

fn open(dir: &std::path::Path) -> Arc<Db> {
    Arc::new(Db::open(dir, Options { checkpoint_interval: None, ..Options::default() }).expect("open"))
}

fn engine(db: &Arc<Db>) -> Arc<StreamEngine> {
    Arc::new(StreamEngine::new(2, db.clone() as Arc<dyn StateStore>).expect("engine"))
}

fn submit(engine: &StreamEngine, name: &str, g: LogicalGraph, queue_rows: usize) {
    let mut def = PipelineDef::new(name, g);
    def.checkpoint_interval = None;
    def.run = RunConfig { queue_rows, ..RunConfig::default() };
    let h = engine.submit(def).expect("submit");
    let info = h.wait_for(Duration::from_secs(30), |i| i.state == PipelineState::Running);
    assert_eq!(info.state, PipelineState::Running);
}

/// The newest value of `metric` of `operator` subtask 0 in a report.
fn newest(r: &JobReport, operator: &str, metric: &str) -> f64 {
    newest_of(r, operator, 0, metric)
}

/// The newest value of `metric` of `operator` subtask `subtask` in a report.
fn newest_of(r: &JobReport, operator: &str, subtask: u32, metric: &str) -> f64 {
    let op = r.operators.iter().find(|o| o.operator == operator).unwrap_or_else(|| panic!("no operator {operator}"));
    let m = op.metrics.iter().find(|m| m.name == metric).unwrap_or_else(|| panic!("no metric {metric}"));
    let s = m.subtasks.iter().find(|s| s.index == subtask).unwrap_or_else(|| panic!("no subtask {subtask}"));
    s.points.last().map(|p| p.value).unwrap_or_else(|| panic!("{operator}/{metric}: no points"))
}

/// Ticks every `every` for `n` ticks.
fn run_ticks(c: &Collector, n: usize, every: Duration) {
    for _ in 0..n {
        std::thread::sleep(every);
        c.tick_now();
    }
}

#[test]
fn rates_follow_the_injected_load() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = open(tmp.path());
    let streams = engine(&db);
    let (sink, rx) = channel_sink();
    // 4000 rows/s in batches of 40: 100 batches/s.
    submit(&streams, "load", graph(4000.0, 40, sink, 1), 1 << 16);
    let c = Collector::new(db.clone(), Some(streams.clone()), Vec::new()).expect("collector");
    c.tick_now();
    run_ticks(&c, 12, Duration::from_millis(500));
    let r = c.job_report("load").expect("a report of a running job");
    // Tolerance: 15 % (the source catches up after late polls, so its average rate is exact; what is left is
    // how the 500 ms sampling windows cut its 10 ms batches).
    let near = |v: f64, want: f64| (v - want).abs() <= want * 0.15;
    for (op, metric) in
        [("source", "messages_sent"), ("map", "messages_recv"), ("map", "messages_sent"), ("sink", "messages_recv")]
    {
        let v = newest(&r, op, metric);
        assert!(near(v, 4000.0), "{op}/{metric} = {v}, want 4000 ± 15 %");
    }
    let v = newest(&r, "sink", "batches_recv");
    assert!(near(v, 100.0), "sink/batches_recv = {v}, want 100 ± 15 %");
    // Bytes follow rows: each batch of 40 rows of two Int64 columns is at least 640 bytes.
    let v = newest(&r, "source", "bytes_sent");
    assert!(v >= 4000.0 * 16.0 * 0.85, "source/bytes_sent = {v}");
    // A source receives nothing and a sink sends nothing.
    assert_eq!(newest(&r, "source", "messages_recv"), 0.0);
    assert_eq!(newest(&r, "sink", "messages_sent"), 0.0);
    // A fast pipeline is not held back.
    assert!(newest(&r, "source", "backpressure") < 0.5);
    // The rows really went through.
    assert!(rx.len() > 100);
    // The same values are in the store, under the job's keys, with rates summing over subtasks.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let stored = store::report(&db, "load", now - 60, now + 2).expect("report from the store");
    assert_eq!(stored.operators.iter().map(|o| o.operator.as_str()).collect::<Vec<_>>(), vec!["map", "sink", "source"]);
    assert!(near(newest(&stored, "sink", "messages_recv"), 4000.0));
    for o in &stored.operators {
        assert_eq!(o.metrics.len(), silt::jobs::JobMetric::ALL.len(), "{}: every metric is stored", o.operator);
    }
    streams.shutdown(Duration::from_secs(10));
}

#[test]
fn a_slow_sink_shows_backpressure_upstream() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = open(tmp.path());
    let streams = engine(&db);
    // Sink subtask 1 is slow; it runs on a worker slot of its own (slot filling puts every subtask 0 on the
    // first slot), so the source and the map keep running while it sleeps.
    let sink = NodeKind::Operator(Arc::new(|s, _| -> Box<dyn Operator> {
        if s == 1 {
            Box::new(Slow(Duration::from_millis(5)))
        } else {
            Box::new(Pass)
        }
    }));
    // As fast as it can, in batches of 16 rows, into queues of 1024 rows; the slow subtask takes ~200
    // batches/s.
    submit(&streams, "slow", graph(0.0, 16, sink, 2), 1024);
    let c = Collector::new(db.clone(), Some(streams.clone()), Vec::new()).expect("collector");
    c.tick_now();
    run_ticks(&c, 8, Duration::from_millis(250));
    let r = c.job_report("slow").expect("report");
    let bp = |op: &str| r.operators.iter().find(|o| o.operator == op).map(|o| o.backpressure).expect("operator");
    // The map sends into the slow subtask's full queue; the source into the map's queue, which fills as the
    // map waits.
    assert!(bp("map") > 0.9, "map backpressure {}", bp("map"));
    assert!(bp("source") > 0.9, "source backpressure {}", bp("source"));
    assert_eq!(bp("sink"), 0.0, "the slow sink itself sends nowhere");
    // The slow subtask's input queue is (nearly) full, and it takes at most 16 rows per 5 ms.
    assert!(newest_of(&r, "sink", 1, "queue_remaining") <= 32.0);
    assert_eq!(newest_of(&r, "sink", 1, "queue_size"), 1024.0);
    let recv = newest_of(&r, "sink", 1, "messages_recv");
    assert!(recv > 500.0 && recv < 3200.0 * 1.15, "sink subtask 1 takes at most 16 rows / 5 ms: {recv}");
    // Operator-level backpressure is the maximum over subtasks, also in the store.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let stored = store::report(&db, "slow", now - 60, now + 2).expect("stored report");
    assert!(stored.operators.iter().find(|o| o.operator == "map").expect("map").backpressure > 0.9);
    streams.shutdown(Duration::from_secs(10));
}

#[test]
fn job_metrics_history_survives_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let before = {
        let db = open(tmp.path());
        let streams = engine(&db);
        let (sink, _rx) = channel_sink();
        submit(&streams, "kept", graph(2000.0, 20, sink, 1), 1 << 16);
        let c = Collector::new(db.clone(), Some(streams.clone()), Vec::new()).expect("collector");
        // Ticks 2 s apart in the store's time (each in its own slot), driven by hand.
        let base = (now - 100) * 1000;
        for i in 0..5 {
            std::thread::sleep(Duration::from_millis(100));
            c.tick(base + i * 2000);
        }
        let r = store::report(&db, "kept", now - 120, now).expect("report");
        streams.shutdown(Duration::from_secs(10));
        drop(c);
        drop(streams);
        Arc::try_unwrap(db).unwrap_or_else(|_| panic!("the only handle")).close().expect("close");
        r
    };
    assert_eq!(before.operators.len(), 3);
    let src = before.operators.iter().find(|o| o.operator == "source").expect("source");
    let sent = src.metrics.iter().find(|m| m.name == "messages_sent").expect("messages_sent");
    assert_eq!(sent.subtasks[0].points.len(), 5, "one point per tick (the first a 0: no rate yet)");
    assert_eq!(sent.subtasks[0].points[0].value, 0.0);
    assert!(sent.subtasks[0].points[4].value > 0.0);
    // After a restart the same history reads back, bit for bit.
    let db = open(tmp.path());
    let after = store::report(&db, "kept", now - 120, now).expect("report after restart");
    assert_eq!(after, before);
}
