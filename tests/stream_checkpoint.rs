//! Checkpoints, stop and restart of stream pipelines under the controller:
//! - kill-and-restore: a pipeline stopped abruptly at random points and restored from its last completed
//!   checkpoint (by a new engine, as after a restart) leaves the store exactly as an uninterrupted run;
//! - a graceful stop resumes exactly where it stopped;
//! - a panicking operator fails the run with its message and the pipeline recovers from its checkpoint
//!   within its restart budget, or ends `Failed` past it;
//! - the state table refuses transitions it does not list;
//! - worker slots are filled by Arroyo's rule and a pipeline waits for free slots.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Float64Array, Int64Array, RecordBatch};
use rand::{Rng, SeedableRng};
use silt::stream::controller::{
    can_transition, checkpoint_name, PipelineDef, PipelineState, StopMode, StreamEngine, TRANSITIONS,
};
use silt::stream::graph::{EdgeKind, LogicalGraph, LogicalNode, NodeKind};
use silt::stream::operators::{Aggregate, Map, OrderedVecSource, TumblingWindow};
use silt::stream::runtime::{assign, RunConfig};
use silt::stream::store::StoreSink;
use silt::stream::StreamError;
use silt::{Aggregation, Db, HostKey, Key, MetricConfig, Options};

const T0: i64 = 1_700_000_040; // a multiple of 60
const KEYS: i64 = 6;
/// Rows over all source subtasks.
const TOTAL_ROWS: u64 = 120 * 20;

/// Events `(key, time, value)` of source subtask `s` of `p`: each subtask's own events in time order,
/// integer values so that sums are exact in any order.
fn events(s: usize, p: usize) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for b in 0..120i64 {
        let (mut k, mut t, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..20i64 {
            let n = b * 20 + i;
            if n as usize % p != s {
                continue;
            }
            k.push(n % KEYS);
            t.push(T0 + n * 3);
            v.push(((n * 7) % 11) as f64);
        }
        let cols: Vec<arrow_array::ArrayRef> =
            vec![Arc::new(Int64Array::from(k)), Arc::new(Int64Array::from(t)), Arc::new(Float64Array::from(v))];
        out.push(RecordBatch::try_new(TumblingWindow::input_schema(), cols).unwrap());
    }
    out
}

/// The source of [`events`], with `p` subtasks.
fn events_node(p: usize) -> LogicalNode {
    LogicalNode {
        name: "events".into(),
        parallelism: p,
        input_schema: None,
        output_schema: Some(TumblingWindow::input_schema()),
        kind: NodeKind::Source(Arc::new(|s, p| Box::new(OrderedVecSource::new(events(s, p), "time")))),
    }
}

/// events → (slow map, which may panic) → shuffle by key → 60 s sums → store sink writing `out`.
fn graph(db: Arc<Db>, slow: Duration, panic_at: Option<Arc<AtomicU64>>) -> LogicalGraph {
    graph_counting(db, slow, panic_at, Arc::new(AtomicU64::new(0)))
}

/// [`graph`], counting the rows through the map in `rows`.
fn graph_counting(db: Arc<Db>, slow: Duration, panic_at: Option<Arc<AtomicU64>>, rows: Arc<AtomicU64>) -> LogicalGraph {
    let mut g = LogicalGraph::new();
    let src = g.add(events_node(2));
    let slowed = g.add(LogicalNode {
        name: "slow".into(),
        parallelism: 2,
        input_schema: Some(TumblingWindow::input_schema()),
        output_schema: Some(TumblingWindow::input_schema()),
        kind: NodeKind::Operator(Arc::new(move |_, _| {
            let panic_at = panic_at.clone();
            let rows = rows.clone();
            Box::new(Map(move |b: RecordBatch| {
                rows.fetch_add(b.num_rows() as u64, Ordering::SeqCst);
                std::thread::sleep(slow);
                if let Some(n) = &panic_at {
                    // Counts down across runs; panics once when it reaches 1.
                    if n.fetch_sub(1, Ordering::SeqCst) == 1 {
                        panic!("planted failure");
                    }
                }
                Ok::<_, StreamError>(b)
            }))
        })),
    });
    let win = g.add(LogicalNode {
        name: "sum".into(),
        parallelism: 2,
        input_schema: Some(TumblingWindow::input_schema()),
        output_schema: Some(TumblingWindow::output_schema()),
        kind: NodeKind::Operator(Arc::new(|_, _| {
            Box::new(TumblingWindow::new(60, Aggregate::Sum, "key", "time", "value"))
        })),
    });
    let sink = g.add(LogicalNode {
        name: "store".into(),
        parallelism: 2,
        input_schema: Some(TumblingWindow::output_schema()),
        output_schema: None,
        kind: NodeKind::Operator(Arc::new(move |_, _| {
            Box::new(StoreSink {
                db: db.clone(),
                metric: "out".into(),
                columns: ["key".into(), "window_start".into(), "value".into()],
                key_of: Arc::new(|k| Ok(HostKey::new("c", &format!("h{k}")).unwrap().path())),
            })
        })),
    });
    g.connect(src, slowed, EdgeKind::Forward);
    g.connect(slowed, win, EdgeKind::Shuffle { key: "key".into() });
    g.connect(win, sink, EdgeKind::Forward);
    g
}

fn open(dir: &std::path::Path) -> Arc<Db> {
    let db =
        Db::open(dir, Options { checkpoint_interval: None, durability: silt::Durability::None, ..Options::default() })
            .unwrap();
    db.declare_metric("out", MetricConfig { frequency: 60, aggregation: Aggregation::Sum }).unwrap();
    Arc::new(db)
}

/// What the store holds of `out`, key by key.
fn output(db: &Db) -> Vec<Vec<u64>> {
    (0..KEYS)
        .map(|k| {
            let r = db.read(&HostKey::new("c", &format!("h{k}")).unwrap(), "out", T0, T0 + 3 * 2400 + 120).unwrap();
            r.values.iter().map(|v| v.to_bits()).collect()
        })
        .collect()
}

fn def(name: &str, g: LogicalGraph, interval: Option<Duration>) -> PipelineDef {
    let mut d = PipelineDef::new(name, g);
    d.checkpoint_interval = interval;
    d.run = RunConfig { queue_rows: 64, ..RunConfig::default() };
    d
}

fn finished(h: &silt::stream::controller::PipelineHandle) -> PipelineState {
    h.wait_for(Duration::from_secs(60), |i| matches!(i.state, PipelineState::Stopped | PipelineState::Failed)).state
}

fn reference() -> Vec<Vec<u64>> {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let engine = StreamEngine::new(4, db.clone()).unwrap();
    let h = engine.submit(def("rollup", graph(db.clone(), Duration::ZERO, None), None)).unwrap();
    assert_eq!(finished(&h), PipelineState::Stopped, "{:?}", h.info());
    let out = output(&db);
    let stored: usize = out.iter().map(|s| s.iter().filter(|&&v| !f64::from_bits(v).is_nan()).count()).sum();
    assert!(stored > 100, "the reference run should write many windows, wrote {stored}");
    out
}

#[test]
fn killed_at_random_points_and_restored_the_store_matches_an_uninterrupted_run() {
    let want = reference();
    let cases: u64 = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(8).min(16);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut all_kills, mut resumed_midway) = (0, 0);
    for case in 0..cases {
        let tmp = tempfile::tempdir().unwrap();
        let db = open(tmp.path());
        let mut kills = 0;
        // Each incarnation is a new engine, as after a process restart; the checkpoint is in the store.
        loop {
            let engine = StreamEngine::new(4, db.clone()).unwrap();
            let interval = Duration::from_millis(rng.gen_range(2..20));
            let rows = Arc::new(AtomicU64::new(0));
            let restored = db.state(&checkpoint_name("rollup")).unwrap().is_some();
            let g = graph_counting(db.clone(), Duration::from_micros(300), None, rows.clone());
            let h = engine.submit(def("rollup", g, Some(interval))).unwrap();
            let run_for = Duration::from_millis(rng.gen_range(5..60));
            let ended = h.wait_for(run_for, |i| matches!(i.state, PipelineState::Stopped | PipelineState::Failed));
            if matches!(ended.state, PipelineState::Stopped) || kills >= 6 {
                assert_eq!(finished(&h), PipelineState::Stopped, "{:?}", h.info());
                // A run restored from a checkpoint taken midway reads only what follows it.
                if restored && rows.load(Ordering::SeqCst) < TOTAL_ROWS {
                    resumed_midway += 1;
                }
                break;
            }
            h.stop(StopMode::Immediate);
            assert_eq!(finished(&h), PipelineState::Stopped, "{:?}", h.info());
            kills += 1;
        }
        all_kills += kills;
        assert_eq!(output(&db), want, "case {case}: after {kills} kills the output differs");
    }
    assert!(all_kills >= cases / 2, "too few kills to test anything: {all_kills} in {cases} cases");
    assert!(resumed_midway > 0, "no run resumed from a checkpoint taken midway");
}

#[test]
fn a_graceful_stop_resumes_exactly_where_it_stopped() {
    let want = reference();
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let engine = StreamEngine::new(4, db.clone()).unwrap();
    let h = engine.submit(def("rollup", graph(db.clone(), Duration::from_micros(500), None), None)).unwrap();
    h.wait_for(Duration::from_secs(10), |i| i.state == PipelineState::Running);
    std::thread::sleep(Duration::from_millis(30));
    h.stop(StopMode::Graceful);
    assert_eq!(finished(&h), PipelineState::Stopped);
    let stopped_at = h.info().checkpoint_epoch;
    assert!(stopped_at > 0, "a graceful stop takes a final checkpoint");
    let history = h.history();
    assert!(history.contains(&PipelineState::Stopping), "{history:?}");
    // The same name again resumes from that checkpoint.
    let h = engine.submit(def("rollup", graph(db.clone(), Duration::ZERO, None), None)).unwrap();
    assert_eq!(finished(&h), PipelineState::Stopped);
    assert!(h.info().checkpoint_epoch > stopped_at);
    assert_eq!(output(&db), want);
}

#[test]
fn a_panic_fails_the_run_and_the_pipeline_recovers_from_its_checkpoint() {
    let want = reference();
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let engine = StreamEngine::new(4, db.clone()).unwrap();
    let countdown = Arc::new(AtomicU64::new(90));
    let g = graph(db.clone(), Duration::from_micros(200), Some(countdown));
    let h = engine.submit(def("rollup", g, Some(Duration::from_millis(3)))).unwrap();
    assert_eq!(finished(&h), PipelineState::Stopped, "{:?}", h.info());
    let info = h.info();
    assert_eq!(info.total_restarts, 1, "{info:?}");
    assert!(info.error.as_deref().is_some_and(|e| e.contains("planted failure")), "{info:?}");
    let history = h.history();
    assert!(history.contains(&PipelineState::Recovering), "{history:?}");
    assert!(history.windows(2).all(|w| can_transition(w[0], w[1])), "{history:?}");
    assert_eq!(output(&db), want);
}

#[test]
fn past_its_restart_budget_a_pipeline_fails_with_the_panic_message() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let engine = StreamEngine::new(4, db.clone()).unwrap();
    let mut g = LogicalGraph::new();
    let src = g.add(events_node(1));
    let boom = g.add(LogicalNode {
        name: "boom".into(),
        parallelism: 1,
        input_schema: Some(TumblingWindow::input_schema()),
        output_schema: None,
        kind: NodeKind::Operator(Arc::new(|_, _| {
            Box::new(Map(|_b: RecordBatch| -> Result<RecordBatch, StreamError> { panic!("always broken") }))
        })),
    });
    g.connect(src, boom, EdgeKind::Forward);
    let mut d = def("doomed", g, None);
    d.restart_budget = 2;
    let h = engine.submit(d).unwrap();
    assert_eq!(finished(&h), PipelineState::Failed);
    let info = h.info();
    assert_eq!(info.total_restarts, 2, "{info:?}");
    assert!(info.error.as_deref().is_some_and(|e| e.contains("always broken")), "{info:?}");
    assert_eq!(engine.slots().1, 4, "a failed pipeline gives its slots back");
}

#[test]
fn only_the_listed_transitions_are_allowed() {
    use PipelineState::*;
    let all = [Created, Scheduling, Running, Checkpointing, Stopping, Stopped, Failed, Recovering];
    // No pair is listed twice.
    for (i, t) in TRANSITIONS.iter().enumerate() {
        assert!(!TRANSITIONS[i + 1..].contains(t), "{t:?} is listed twice");
    }
    assert!(!can_transition(Created, Running), "a pipeline is scheduled before it runs");
    assert!(!can_transition(Stopped, Running));
    assert!(!can_transition(Failed, Recovering), "failed is final");
    // Every state but the final ones has a way out, and every state but Created a way in.
    for s in all {
        let out = all.iter().any(|&t| can_transition(s, t));
        assert_eq!(out, !matches!(s, Stopped | Failed), "{s:?}");
        let into = all.iter().any(|&t| can_transition(t, s));
        assert_eq!(into, s != Created, "{s:?}");
    }
}

#[test]
fn slots_are_filled_node_by_node_and_a_pipeline_waits_for_free_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let g = graph(db.clone(), Duration::ZERO, None);
    // Arroyo's rule with one slot each: subtask i of every node on the i-th slot given.
    let a = assign(&g, &[5, 9], 1);
    for n in 0..g.nodes.len() {
        assert_eq!((a[&(n, 0)], a[&(n, 1)]), (5, 9));
    }
    // Two per slot: subtasks 0 and 1 share the first.
    let a = assign(&g, &[5, 9], 2);
    assert_eq!((a[&(0, 0)], a[&(0, 1)]), (5, 5));

    let engine = StreamEngine::new(3, db.clone()).unwrap();
    let err = engine.submit(def("too_wide", wide_graph(4), None)).err().expect("needs 4 slots of 3");
    assert!(err.to_string().contains("needs 4 worker slots"), "{err}");
    // The first pipeline holds 2 of 3 slots until it is stopped; the second, needing 2, waits.
    let first = engine.submit(def("first", graph(db.clone(), Duration::from_millis(2), None), None)).unwrap();
    first.wait_for(Duration::from_secs(10), |i| i.state == PipelineState::Running);
    assert_eq!(engine.slots(), (3, 1));
    let second = engine.submit(def("second", graph(db.clone(), Duration::ZERO, None), None)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(second.state(), PipelineState::Scheduling);
    first.stop(StopMode::Immediate);
    assert_eq!(finished(&second), PipelineState::Stopped, "{:?}", second.info());
    let names: Vec<String> = engine.list().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["first", "second"]);
}

fn wide_graph(p: usize) -> LogicalGraph {
    let mut g = LogicalGraph::new();
    let src = g.add(events_node(p));
    let sink = g.add(LogicalNode {
        name: "drop".into(),
        parallelism: p,
        input_schema: Some(TumblingWindow::input_schema()),
        output_schema: None,
        kind: NodeKind::Operator(Arc::new(|_, _| Box::new(Map(Ok::<RecordBatch, StreamError>)))),
    });
    g.connect(src, sink, EdgeKind::Forward);
    g
}
