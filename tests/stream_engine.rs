//! The stream engine's graphs and runtime: invalid graphs are refused before anything runs, forward edges
//! of equal parallelism are chained, forward and shuffle edges deliver exactly what a single-threaded model
//! computes (proptest), a slow sink holds the queues at their capacity without dropping anything, and a
//! panicking operator fails its pipeline with the panic's message.

use std::sync::Arc;

use arrow_array::{Array, BooleanArray, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use proptest::prelude::*;
use silt::stream::graph::{EdgeKind, GraphError, LogicalGraph, LogicalNode, NodeKind, PhysicalPlan};
use silt::stream::operators::{ChannelSink, Filter, Map, VecSource};
use silt::stream::runtime::{partition_of_i64, start};
use silt::stream::StreamError;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("key", DataType::Int64, false), Field::new("value", DataType::Int64, false)]))
}

fn batch(rows: &[(i64, i64)]) -> RecordBatch {
    let k = Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
    let v = Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>());
    RecordBatch::try_new(schema(), vec![Arc::new(k), Arc::new(v)]).unwrap()
}

fn rows_of(b: &RecordBatch) -> Vec<(i64, i64)> {
    let k = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    let v = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
    (0..b.num_rows()).map(|i| (k.value(i), v.value(i))).collect()
}

/// A source node whose subtask `s` emits `inputs[s % inputs.len()]`'s batches... exactly once overall:
/// subtask `s` takes the batches `s, s + p, s + 2p, …`.
fn source(name: &str, p: usize, batches: Vec<Vec<(i64, i64)>>) -> LogicalNode {
    let batches = Arc::new(batches);
    LogicalNode {
        name: name.into(),
        parallelism: p,
        input_schema: None,
        output_schema: Some(schema()),
        kind: NodeKind::Source(Arc::new(move |s, p| {
            let mine: Vec<RecordBatch> = batches.iter().skip(s).step_by(p).map(|b| batch(b)).collect();
            Box::new(VecSource::new(mine))
        })),
    }
}

fn op(name: &str, p: usize, kind: NodeKind, emits: bool) -> LogicalNode {
    LogicalNode {
        name: name.into(),
        parallelism: p,
        input_schema: Some(schema()),
        output_schema: emits.then(schema),
        kind,
    }
}

fn filter_odd_values() -> NodeKind {
    NodeKind::Operator(Arc::new(|_, _| {
        Box::new(Filter(|b: &RecordBatch| {
            let v = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            Ok(BooleanArray::from((0..v.len()).map(|i| v.value(i) % 2 != 0).collect::<Vec<_>>()))
        }))
    }))
}

fn double_values() -> NodeKind {
    NodeKind::Operator(Arc::new(|_, _| {
        Box::new(Map(|b: RecordBatch| {
            let v = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            let doubled = Int64Array::from((0..v.len()).map(|i| v.value(i) * 2).collect::<Vec<_>>());
            Ok(RecordBatch::try_new(b.schema(), vec![b.column(0).clone(), Arc::new(doubled)])?)
        }))
    }))
}

fn sink(tx: crossbeam_channel::Sender<(usize, RecordBatch)>) -> NodeKind {
    NodeKind::Operator(Arc::new(move |s, _| Box::new(ChannelSink { subtask: s, tx: tx.clone() })))
}

#[test]
fn invalid_graphs_are_refused_before_running() {
    let (tx, _rx) = crossbeam_channel::unbounded();
    assert_eq!(LogicalGraph::new().validate(), Err(GraphError::Empty));

    let mut g = LogicalGraph::new();
    let s = g.add(source("src", 2, vec![]));
    let f = g.add(op("filter", 3, filter_odd_values(), true));
    g.connect(s, f, EdgeKind::Forward);
    assert!(matches!(g.validate(), Err(GraphError::ForwardParallelism { from_parallelism: 2, to_parallelism: 3, .. })));

    let mut g = LogicalGraph::new();
    let s = g.add(source("src", 1, vec![]));
    let a = g.add(op("a", 1, double_values(), true));
    let b = g.add(op("b", 1, double_values(), true));
    g.connect(s, a, EdgeKind::Forward);
    g.connect(a, b, EdgeKind::Forward);
    g.connect(b, a, EdgeKind::Forward);
    match g.validate() {
        Err(GraphError::Cycle(nodes)) => assert_eq!(nodes, vec!["a".to_owned(), "b".to_owned()]),
        other => panic!("{other:?}"),
    }

    let mut g = LogicalGraph::new();
    let s = g.add(source("src", 1, vec![]));
    let mut other = op("sink", 1, sink(tx.clone()), false);
    other.input_schema = Some(Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, false)])));
    let k = g.add(other);
    g.connect(s, k, EdgeKind::Forward);
    let err = g.validate().unwrap_err();
    assert!(matches!(err, GraphError::SchemaMismatch { .. }), "{err}");
    assert!(err.to_string().contains("key: Int64") && err.to_string().contains("x: Utf8"), "{err}");

    let mut g = LogicalGraph::new();
    let s = g.add(source("src", 1, vec![]));
    let k = g.add(op("sink", 2, sink(tx.clone()), false));
    g.connect(s, k, EdgeKind::Shuffle { key: "nope".into() });
    assert!(matches!(g.validate(), Err(GraphError::BadKey { .. })));

    let mut g = LogicalGraph::new();
    g.add(op("lonely", 1, double_values(), true));
    assert!(matches!(g.validate(), Err(GraphError::BadShape { why: "an operator needs an input", .. })));

    let mut g = LogicalGraph::new();
    let s = g.add(source("src", 1, vec![]));
    let k = g.add(op("sink", 0, sink(tx), false));
    g.connect(s, k, EdgeKind::Forward);
    assert_eq!(g.validate(), Err(GraphError::ZeroParallelism("sink".into())));
}

#[test]
fn forward_edges_of_equal_parallelism_are_chained() {
    let (tx, _rx) = crossbeam_channel::unbounded();
    let mut g = LogicalGraph::new();
    let s = g.add(source("src", 2, vec![]));
    let f = g.add(op("filter", 2, filter_odd_values(), true));
    let m = g.add(op("map", 3, double_values(), true));
    let k = g.add(op("sink", 3, sink(tx), false));
    g.connect(s, f, EdgeKind::Forward);
    g.connect(f, m, EdgeKind::Shuffle { key: "key".into() });
    g.connect(m, k, EdgeKind::Forward);
    let plan = PhysicalPlan::of(&g).unwrap();
    let chains: Vec<Vec<usize>> = plan.chains.iter().map(|c| c.nodes.clone()).collect();
    assert_eq!(chains, vec![vec![s, f], vec![m, k]]);
    assert_eq!(plan.links, vec![(0, 1, 1)]);
    assert_eq!(plan.tasks().len(), 5);
}

type Rows = Vec<Vec<(i64, i64)>>;

fn run_pipeline(batches: Rows, p_src: usize, p_map: usize, queue: usize) -> Vec<(usize, (i64, i64))> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut g = LogicalGraph::new();
    let s = g.add(source("src", p_src, batches));
    let f = g.add(op("filter", p_src, filter_odd_values(), true));
    let m = g.add(op("map", p_map, double_values(), true));
    let k = g.add(op("sink", p_map, sink(tx), false));
    g.connect(s, f, EdgeKind::Forward);
    g.connect(f, m, EdgeKind::Shuffle { key: "key".into() });
    g.connect(m, k, EdgeKind::Forward);
    start(&g, queue).unwrap().join().unwrap();
    rx.try_iter().flat_map(|(sub, b)| rows_of(&b).into_iter().map(move |r| (sub, r))).collect()
}

proptest! {
    /// source → filter (forward, chained) → shuffle by key → map → sink (forward, chained), against the
    /// same computation done in one thread: the same rows come out, and each key at the subtask its hash
    /// names.
    #[test]
    fn forward_and_shuffle_match_a_single_threaded_model(
        batches in proptest::collection::vec(proptest::collection::vec((-20i64..20, -1000i64..1000), 0..40), 0..12),
        p_src in 1usize..4,
        p_map in 1usize..4,
        queue in 1usize..200,
    ) {
        let mut want: Vec<(i64, i64)> =
            batches.iter().flatten().filter(|(_, v)| v % 2 != 0).map(|&(k, v)| (k, v * 2)).collect();
        want.sort();
        let got = run_pipeline(batches, p_src, p_map, queue);
        for (sub, (k, _)) in &got {
            prop_assert_eq!(*sub, partition_of_i64(*k, p_map), "key {} went to the wrong subtask", k);
        }
        let mut rows: Vec<(i64, i64)> = got.into_iter().map(|(_, r)| r).collect();
        rows.sort();
        prop_assert_eq!(rows, want);
    }
}

#[test]
fn a_slow_sink_fills_the_queues_to_their_capacity_and_loses_nothing() {
    // Sink subtask 1 is slow (its channel takes nothing until the reader starts); subtask 0 is fast. They run
    // on different worker slots, so the source (on subtask 0's slot) keeps going until subtask 1's queue is
    // full, and then waits.
    let (slow_tx, slow_rx) = crossbeam_channel::bounded::<(usize, RecordBatch)>(0);
    let (fast_tx, fast_rx) = crossbeam_channel::unbounded::<(usize, RecordBatch)>();
    let batches: Rows = (0..200).map(|i| (0..10).map(|j| (i64::from(j), 2 * i64::from(i) + 1)).collect()).collect();
    let mut g = LogicalGraph::new();
    let s = g.add(source("src", 1, batches));
    let sinks = NodeKind::Operator(Arc::new(move |s, _| {
        let tx = if s == 1 { slow_tx.clone() } else { fast_tx.clone() };
        Box::new(ChannelSink { subtask: s, tx })
    }));
    let k = g.add(op("sink", 2, sinks, false));
    g.connect(s, k, EdgeKind::Shuffle { key: "key".into() });
    let pipeline = start(&g, 50).unwrap();
    drop(g); // the graph's sink factory holds senders too: the readers end when the sinks are done
    let slow_rows: usize = (0..10).filter(|&k| partition_of_i64(k, 2) == 1).count() * 200;
    assert!(slow_rows > 100, "the slow subtask should get a good share of the keys");
    // Let the source run ahead of the slow sink, which takes nothing yet.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let queued = pipeline.queued_rows();
    assert!(queued.iter().all(|&q| q <= 50), "{queued:?}");
    assert!(queued.iter().any(|&q| q >= 40), "the slow sink's queue should be full while it waits: {queued:?}");
    let reader = std::thread::spawn(move || {
        let mut total = 0;
        for (s, b) in slow_rx.iter() {
            assert_eq!(s, 1);
            total += b.num_rows();
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        total
    });
    pipeline.join().unwrap();
    let slow = reader.join().unwrap();
    let fast: usize = fast_rx.try_iter().map(|(_, b)| b.num_rows()).sum();
    assert_eq!((slow, fast), (slow_rows, 2000 - slow_rows), "every row arrives, at its key's subtask");
}

#[test]
fn a_panicking_operator_fails_the_pipeline_with_its_message() {
    let (tx, _rx) = crossbeam_channel::unbounded();
    let batches: Rows = (0..50).map(|i| vec![(i, 1)]).collect();
    let mut g = LogicalGraph::new();
    let s = g.add(source("src", 1, batches));
    let boom = NodeKind::Operator(Arc::new(|_, _| {
        Box::new(Map(|b: RecordBatch| -> Result<RecordBatch, StreamError> {
            let k = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            assert!(k.value(0) != 7, "key 7 is cursed");
            Ok(b)
        }))
    }));
    let m = g.add(op("boom", 2, boom, true));
    let k = g.add(op("sink", 2, sink(tx), false));
    g.connect(s, m, EdgeKind::Shuffle { key: "key".into() });
    g.connect(m, k, EdgeKind::Forward);
    let err = start(&g, 4).unwrap().join().unwrap_err();
    assert!(matches!(&err, StreamError::Panic(m) if m.contains("key 7 is cursed")), "{err}");
}
