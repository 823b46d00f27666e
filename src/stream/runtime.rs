//! Running a physical plan: one thread per task, bounded queues between tasks.
//!
//! Each task has one inbound [`RowQueue`], fed by every upstream subtask of every link into its chain; its
//! capacity is counted in rows, so a slow consumer makes producers wait (backpressure) instead of memory
//! growing. A batch larger than the capacity still passes when the queue is empty. A task ends when every
//! upstream subtask has sent its end marker; it then finishes its operators in order and sends its own.
//! The first operator error or panic fails the pipeline: every queue is closed, every task stops, and
//! [`Pipeline::join`] returns that error.

use std::collections::VecDeque;
use std::hash::Hasher;
use std::sync::Arc;

use arrow_array::{Array, Int64Array, RecordBatch, StringArray, UInt32Array};
use parking_lot::{Condvar, Mutex};

use super::graph::{EdgeKind, LogicalGraph, NodeKind, PhysicalPlan};
use super::operators::{Collector, Operator, Source, SourcePoll};
use super::StreamError;

enum Msg {
    Batch(usize, RecordBatch),
    /// A sender's watermark: it will send no row with an earlier event time.
    Watermark(usize, i64),
    /// A sender is done.
    End(usize),
}

struct QueueState {
    items: VecDeque<Msg>,
    rows: usize,
    closed: bool,
}

/// A bounded, multi-producer queue of batches whose capacity is counted in rows.
pub struct RowQueue {
    state: Mutex<QueueState>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
}

impl RowQueue {
    /// A queue holding up to `capacity` rows (at least one batch).
    pub fn new(capacity: usize) -> Self {
        RowQueue {
            state: Mutex::new(QueueState { items: VecDeque::new(), rows: 0, closed: false }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn push(&self, msg: Msg) -> Result<(), StreamError> {
        let rows = match &msg {
            Msg::Batch(_, b) => b.num_rows(),
            Msg::Watermark(..) | Msg::End(_) => 0,
        };
        let mut st = self.state.lock();
        while !st.closed && st.rows > 0 && st.rows + rows > self.capacity {
            self.not_full.wait(&mut st);
        }
        if st.closed {
            return Err(StreamError::Cancelled);
        }
        st.rows += rows;
        st.items.push_back(msg);
        self.not_empty.notify_one();
        Ok(())
    }

    fn pop(&self) -> Result<Msg, StreamError> {
        let mut st = self.state.lock();
        loop {
            if st.closed {
                return Err(StreamError::Cancelled);
            }
            if let Some(m) = st.items.pop_front() {
                if let Msg::Batch(_, b) = &m {
                    st.rows -= b.num_rows();
                }
                self.not_full.notify_all();
                return Ok(m);
            }
            self.not_empty.wait(&mut st);
        }
    }

    fn close(&self) {
        self.state.lock().closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }

    /// Rows queued now.
    pub fn rows(&self) -> usize {
        self.state.lock().rows
    }
}

/// Where a task's last operator sends its output: one entry per link out of its chain.
struct Route {
    kind: EdgeKind,
    /// The downstream chain's queues, by subtask.
    targets: Vec<Arc<RowQueue>>,
    /// The input index of this edge at the downstream node.
    input: usize,
}

struct Router {
    /// This task's index, which stamps its watermarks and end.
    task: usize,
    subtask: usize,
    routes: Vec<Route>,
}

fn hash_partitions(batch: &RecordBatch, key: &str, n: usize) -> Result<Vec<Vec<u32>>, StreamError> {
    let col = batch.column_by_name(key).ok_or_else(|| StreamError::Operator(format!("no key column {key:?}")))?;
    let mut parts = vec![Vec::new(); n];
    let mut put = |row: usize, h: u64| parts[(h % n as u64) as usize].push(row as u32);
    let hash = |f: &dyn Fn(&mut rustc_hash::FxHasher)| {
        let mut h = rustc_hash::FxHasher::default();
        f(&mut h);
        h.finish()
    };
    if let Some(a) = col.as_any().downcast_ref::<Int64Array>() {
        (0..a.len()).for_each(|r| put(r, hash(&|h| h.write_i64(a.value(r)))));
    } else if let Some(a) = col.as_any().downcast_ref::<UInt32Array>() {
        (0..a.len()).for_each(|r| put(r, hash(&|h| h.write_u32(a.value(r)))));
    } else if let Some(a) = col.as_any().downcast_ref::<StringArray>() {
        (0..a.len()).for_each(|r| put(r, hash(&|h| h.write(a.value(r).as_bytes()))));
    } else {
        return Err(StreamError::Operator(format!("key column {key:?} is not Int64, UInt32 or Utf8")));
    }
    Ok(parts)
}

/// The subtask a key value goes to under a shuffle to `n` subtasks (for tests and models).
pub fn partition_of_i64(key: i64, n: usize) -> usize {
    let mut h = rustc_hash::FxHasher::default();
    h.write_i64(key);
    (h.finish() % n as u64) as usize
}

impl Collector for Router {
    fn emit(&mut self, batch: RecordBatch) -> Result<(), StreamError> {
        for r in &self.routes {
            match &r.kind {
                EdgeKind::Forward => r.targets[self.subtask].push(Msg::Batch(r.input, batch.clone()))?,
                EdgeKind::Shuffle { key } => {
                    for (i, rows) in hash_partitions(&batch, key, r.targets.len())?.into_iter().enumerate() {
                        if rows.is_empty() {
                            continue;
                        }
                        let part = if rows.len() == batch.num_rows() {
                            batch.clone()
                        } else {
                            arrow_select::take::take_record_batch(&batch, &UInt32Array::from(rows))?
                        };
                        r.targets[i].push(Msg::Batch(r.input, part))?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Router {
    /// Sends a control message to every downstream task this task feeds.
    fn broadcast(&self, make: impl Fn() -> Msg) -> Result<(), StreamError> {
        for r in &self.routes {
            match r.kind {
                EdgeKind::Forward => r.targets[self.subtask].push(make())?,
                EdgeKind::Shuffle { .. } => {
                    for t in &r.targets {
                        t.push(make())?;
                    }
                }
            }
        }
        Ok(())
    }

    fn end(&self) -> Result<(), StreamError> {
        self.broadcast(|| Msg::End(self.task))
    }

    fn watermark(&self, wm: i64) -> Result<(), StreamError> {
        self.broadcast(|| Msg::Watermark(self.task, wm))
    }
}

/// Passes a new watermark through the chain's operators in order (each may emit), then downstream.
fn advance(ops: &mut [Box<dyn Operator>], wm: i64, router: &mut Router) -> Result<(), StreamError> {
    for i in 0..ops.len() {
        let (head, rest) = ops.split_at_mut(i + 1);
        let mut out = Buffer(Vec::new());
        head[i].on_watermark(wm, &mut out)?;
        for b in out.0 {
            push(rest, 0, b, router)?;
        }
    }
    router.watermark(wm)
}

/// The watermarks of a task's senders: the task's watermark is their minimum, ended senders left out.
struct Watermarks {
    by_sender: std::collections::HashMap<usize, Option<i64>>,
    current: Option<i64>,
}

impl Watermarks {
    fn new(senders: &[usize]) -> Self {
        Watermarks { by_sender: senders.iter().map(|&s| (s, None)).collect(), current: None }
    }

    /// Records a sender's watermark (or its end, `None`); returns the task's watermark if it advanced.
    fn update(&mut self, sender: usize, wm: Option<i64>) -> Option<i64> {
        match wm {
            Some(w) => {
                if let Some(slot) = self.by_sender.get_mut(&sender) {
                    *slot = Some(slot.map_or(w, |x| x.max(w)));
                }
            }
            None => {
                self.by_sender.remove(&sender);
            }
        }
        let min = self.by_sender.values().try_fold(i64::MAX, |m, w| w.map(|w| m.min(w)))?;
        if self.by_sender.is_empty() || self.current.is_some_and(|c| min <= c) {
            return None;
        }
        self.current = Some(min);
        Some(min)
    }
}

struct Buffer(Vec<RecordBatch>);

impl Collector for Buffer {
    fn emit(&mut self, batch: RecordBatch) -> Result<(), StreamError> {
        self.0.push(batch);
        Ok(())
    }
}

/// Runs `batch` through `ops[i..]` (the rest of a chain), then out through the router.
fn push(
    ops: &mut [Box<dyn Operator>],
    input: usize,
    batch: RecordBatch,
    router: &mut Router,
) -> Result<(), StreamError> {
    let Some((op, rest)) = ops.split_first_mut() else { return router.emit(batch) };
    let mut out = Buffer(Vec::new());
    op.process(input, batch, &mut out)?;
    for b in out.0 {
        push(rest, 0, b, router)?;
    }
    Ok(())
}

fn finish(ops: &mut [Box<dyn Operator>], router: &mut Router) -> Result<(), StreamError> {
    for i in 0..ops.len() {
        let (head, rest) = ops.split_at_mut(i + 1);
        let mut out = Buffer(Vec::new());
        head[i].finish(&mut out)?;
        for b in out.0 {
            push(rest, 0, b, router)?;
        }
    }
    Ok(())
}

/// A running pipeline.
pub struct Pipeline {
    threads: Vec<std::thread::JoinHandle<Result<(), StreamError>>>,
    queues: Vec<Arc<RowQueue>>,
}

impl Pipeline {
    /// Waits for every task; returns the first failure (every task stops once one fails).
    pub fn join(self) -> Result<(), StreamError> {
        let mut first = Ok(());
        for t in self.threads {
            let r = t.join().unwrap_or_else(|_| Err(StreamError::Panic("a task thread died".into())));
            if let Err(e) = r {
                if matches!(first, Ok(())) || matches!(first, Err(StreamError::Cancelled)) {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Stops at once: every queue is closed, every task ends with [`StreamError::Cancelled`].
    pub fn cancel(&self) {
        self.queues.iter().for_each(|q| q.close());
    }

    /// Rows queued in each task's inbound queue (a backpressure gauge).
    pub fn queued_rows(&self) -> Vec<usize> {
        self.queues.iter().map(|q| q.rows()).collect()
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Validates, plans and starts a graph: one thread per task, inbound queues of `queue_rows` rows.
pub fn start(g: &LogicalGraph, queue_rows: usize) -> Result<Pipeline, StreamError> {
    let plan = PhysicalPlan::of(g)?;
    let tasks = plan.tasks();
    let queues: Vec<Arc<RowQueue>> = tasks.iter().map(|_| Arc::new(RowQueue::new(queue_rows))).collect();
    let index = |chain: usize, subtask: usize| tasks.iter().position(|t| t.chain == chain && t.subtask == subtask);
    let mut threads = Vec::with_capacity(tasks.len());
    for (ti, t) in tasks.iter().enumerate() {
        let chain = &plan.chains[t.chain];
        let p = chain.parallelism;
        let head = chain.nodes[0];
        let mut routes = Vec::new();
        let mut expected_ends = 0;
        for &(from, to, k) in &plan.links {
            let e = &g.edges[k];
            if from == t.chain {
                let targets = (0..plan.chains[to].parallelism)
                    .map(|s| index(to, s).map(|i| queues[i].clone()))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| StreamError::Operator("plan names a missing task".into()))?;
                let input = g.edges.iter().filter(|x| x.to == e.to).position(|x| x == e).unwrap_or(0);
                routes.push(Route { kind: e.kind.clone(), targets, input });
            }
            if to == t.chain {
                expected_ends += match e.kind {
                    EdgeKind::Forward => 1,
                    EdgeKind::Shuffle { .. } => plan.chains[from].parallelism,
                };
            }
        }
        let mut router = Router { task: ti, subtask: t.subtask, routes };
        let mut senders = Vec::new();
        for &(from, to, k) in &plan.links {
            if to == t.chain {
                match g.edges[k].kind {
                    EdgeKind::Forward => senders.extend(index(from, t.subtask)),
                    EdgeKind::Shuffle { .. } => {
                        senders.extend((0..plan.chains[from].parallelism).filter_map(|s| index(from, s)))
                    }
                }
            }
        }
        let mut watermarks = Watermarks::new(&senders);
        let source: Option<Box<dyn Source>> = match &g.nodes[head].kind {
            NodeKind::Source(f) => Some(f(t.subtask, p)),
            NodeKind::Operator(_) => None,
        };
        let mut ops: Vec<Box<dyn Operator>> = chain
            .nodes
            .iter()
            .filter_map(|&n| match &g.nodes[n].kind {
                NodeKind::Operator(f) => Some(f(t.subtask, p)),
                NodeKind::Source(_) => None,
            })
            .collect();
        let inbox = queues[ti].clone();
        let all = queues.clone();
        let name = format!("silt-stream-{}-{}", g.nodes[head].name, t.subtask);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| -> Result<(), StreamError> {
                    if let Some(mut src) = source {
                        let mut last = None;
                        loop {
                            let b = match src.poll()? {
                                SourcePoll::Batch(b) => b,
                                SourcePoll::Idle => {
                                    std::thread::sleep(std::time::Duration::from_millis(1));
                                    continue;
                                }
                                SourcePoll::End => break,
                            };
                            push(&mut ops, 0, b, &mut router)?;
                            if let Some(wm) = src.watermark().filter(|&w| last.is_none_or(|l| w > l)) {
                                last = Some(wm);
                                advance(&mut ops, wm, &mut router)?;
                            }
                        }
                    } else {
                        let mut ended = 0;
                        while ended < expected_ends {
                            match inbox.pop()? {
                                Msg::Batch(input, b) => push(&mut ops, input, b, &mut router)?,
                                Msg::Watermark(sender, wm) => {
                                    if let Some(w) = watermarks.update(sender, Some(wm)) {
                                        advance(&mut ops, w, &mut router)?;
                                    }
                                }
                                Msg::End(sender) => {
                                    ended += 1;
                                    // An ended input no longer holds the watermark back.
                                    if let Some(w) = watermarks.update(sender, None) {
                                        advance(&mut ops, w, &mut router)?;
                                    }
                                }
                            }
                        }
                    }
                    finish(&mut ops, &mut router)?;
                    router.end()
                });
                let r = std::panic::catch_unwind(run).unwrap_or_else(|p| Err(StreamError::Panic(panic_text(p))));
                if r.is_err() {
                    all.iter().for_each(|q| q.close());
                }
                r
            })
            .map_err(|e| StreamError::Operator(format!("starting a task: {e}")))?;
        threads.push(thread);
    }
    Ok(Pipeline { threads, queues })
}
