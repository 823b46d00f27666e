//! Running a physical plan: tasks on worker slots, bounded queues between tasks, checkpoint barriers.
//!
//! **Slots.** A [`SlotPool`] is a fixed number of worker threads, each driving a single-threaded tokio
//! runtime. A pipeline takes as many slots as its largest parallelism, and its subtasks are placed by
//! Arroyo's slot-filling rule ([`assign`]): node by node, subtask `i` goes to the current slot until it
//! holds its share, then the next. A task (one subtask of one chain) is an async task on its slot; the
//! operators themselves are plain synchronous code, called between awaits, so an operator that blocks (a
//! sink waiting on a full channel, a write waiting for fsync) holds up the other tasks of its slot too.
//!
//! **Queues.** Each task has one inbound [`RowQueue`], fed by every upstream subtask of every link into its
//! chain; its capacity is counted in rows, so a slow consumer makes producers wait (backpressure) instead
//! of memory growing. A batch larger than the capacity still passes when the queue is empty. A task ends
//! when every upstream subtask has sent its end marker; it then finishes its operators in order and sends
//! its own.
//!
//! **Watermarks.** A task's watermark is the minimum over its live senders' watermarks. A sender that ended
//! is left out; so is a sender that said it is idle (a source with no input for [`RunConfig::idle_after`]),
//! until it sends again. A task whose every live sender is idle says so downstream.
//!
//! **Checkpoints.** [`Control::request_checkpoint`] asks the sources for epoch `n`. Each source, between two
//! batches, snapshots its position and its chain's operators, reports the snapshot, and sends a barrier
//! downstream. A task that gets the barrier from one sender holds that sender's later messages until every
//! live sender's barrier has come (alignment), then snapshots its chain, reports, forwards the barrier, and
//! goes on with what it held. A task that ends reports its final state instead (a restored pipeline then
//! knows it had finished). With `stop`, every task exits after the barrier without finishing its operators:
//! a graceful stop whose state is the checkpoint.
//!
//! **Failure.** The first operator error or panic fails the pipeline: every queue is closed, every task
//! stops, and [`Pipeline::join`] returns that error. [`Pipeline::cancel`] is the immediate stop.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, Int64Array, RecordBatch, StringArray, UInt32Array};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::graph::{EdgeKind, LogicalGraph, NodeKind, PhysicalPlan};
use super::operators::{Collector, Operator, Source, SourcePoll};
use super::probe::{NodeCounters, PipelineProbe, TaskProbe};
use super::StreamError;

enum Msg {
    /// A batch from `sender` for input `input` of the downstream node.
    Batch(usize, usize, RecordBatch),
    /// A sender's watermark: it will send no row with an earlier event time.
    Watermark(usize, i64),
    /// A sender has had no input for a while: leave it out of the watermark until it sends again.
    Idle(usize),
    /// A checkpoint barrier: `(sender, epoch, stop)`.
    Barrier(usize, u64, bool),
    /// A sender is done.
    End(usize),
}

impl Msg {
    fn sender(&self) -> usize {
        match *self {
            Msg::Batch(s, ..) | Msg::Watermark(s, _) | Msg::Idle(s) | Msg::Barrier(s, ..) | Msg::End(s) => s,
        }
    }
}

struct QueueState {
    items: VecDeque<Msg>,
    rows: usize,
    closed: bool,
}

/// A bounded, multi-producer, single-consumer queue of batches whose capacity is counted in rows.
pub struct RowQueue {
    state: Mutex<QueueState>,
    not_empty: Notify,
    not_full: Notify,
    capacity: usize,
}

impl RowQueue {
    /// A queue holding up to `capacity` rows (at least one batch).
    pub fn new(capacity: usize) -> Self {
        RowQueue {
            state: Mutex::new(QueueState { items: VecDeque::new(), rows: 0, closed: false }),
            not_empty: Notify::new(),
            not_full: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    async fn push(&self, msg: Msg) -> Result<(), StreamError> {
        let rows = match &msg {
            Msg::Batch(_, _, b) => b.num_rows(),
            _ => 0,
        };
        let mut msg = Some(msg);
        loop {
            // Registered before the state is checked, so a wake-up between the check and the wait is kept.
            let notified = self.not_full.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.state.lock();
                if st.closed {
                    return Err(StreamError::Cancelled);
                }
                if st.rows == 0 || st.rows + rows <= self.capacity {
                    st.rows += rows;
                    st.items.extend(msg.take());
                    drop(st);
                    self.not_empty.notify_waiters();
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    async fn pop(&self) -> Result<Msg, StreamError> {
        loop {
            let notified = self.not_empty.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.state.lock();
                if st.closed {
                    return Err(StreamError::Cancelled);
                }
                if let Some(m) = st.items.pop_front() {
                    if let Msg::Batch(_, _, b) = &m {
                        st.rows -= b.num_rows();
                    }
                    drop(st);
                    self.not_full.notify_waiters();
                    return Ok(m);
                }
            }
            notified.await;
        }
    }

    fn close(&self) {
        self.state.lock().closed = true;
        self.not_empty.notify_waiters();
        self.not_full.notify_waiters();
    }

    /// Rows queued now.
    pub fn rows(&self) -> usize {
        self.state.lock().rows
    }

    /// Rows the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
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
    /// This task's index, which stamps everything it sends.
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

impl Router {
    async fn send(&self, batches: Vec<RecordBatch>) -> Result<(), StreamError> {
        for batch in batches {
            for r in &self.routes {
                match &r.kind {
                    EdgeKind::Forward => {
                        r.targets[self.subtask].push(Msg::Batch(self.task, r.input, batch.clone())).await?
                    }
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
                            r.targets[i].push(Msg::Batch(self.task, r.input, part)).await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends a control message to every downstream task this task feeds.
    async fn broadcast(&self, make: impl Fn() -> Msg) -> Result<(), StreamError> {
        for r in &self.routes {
            match r.kind {
                EdgeKind::Forward => r.targets[self.subtask].push(make()).await?,
                EdgeKind::Shuffle { .. } => {
                    for t in &r.targets {
                        t.push(make()).await?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// What a sender last said about event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SenderTime {
    Active(Option<i64>),
    Idle(Option<i64>),
}

/// The watermarks of a task's senders: the task's watermark is their minimum, ended and idle senders left
/// out.
struct Watermarks {
    by_sender: HashMap<usize, SenderTime>,
    current: Option<i64>,
}

impl Watermarks {
    fn new(senders: &[usize], current: Option<i64>) -> Self {
        Watermarks { by_sender: senders.iter().map(|&s| (s, SenderTime::Active(None))).collect(), current }
    }

    fn mark(&mut self, sender: usize, wm: Option<i64>) {
        if let Some(slot) = self.by_sender.get_mut(&sender) {
            let last = match *slot {
                SenderTime::Active(w) | SenderTime::Idle(w) => w,
            };
            let w = match (last, wm) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            *slot = SenderTime::Active(w);
        }
    }

    /// A sender sent data: it is active again.
    fn active(&mut self, sender: usize) {
        self.mark(sender, None);
    }

    /// A sender's watermark. Returns the task's watermark if it advanced.
    fn watermark(&mut self, sender: usize, wm: i64) -> Option<i64> {
        self.mark(sender, Some(wm));
        self.advance()
    }

    /// A sender went idle.
    fn idle(&mut self, sender: usize) -> Option<i64> {
        if let Some(slot) = self.by_sender.get_mut(&sender) {
            if let SenderTime::Active(w) = *slot {
                *slot = SenderTime::Idle(w);
            }
        }
        self.advance()
    }

    /// A sender ended.
    fn end(&mut self, sender: usize) -> Option<i64> {
        self.by_sender.remove(&sender);
        self.advance()
    }

    /// Every live sender is idle (and there is at least one).
    fn all_idle(&self) -> bool {
        !self.by_sender.is_empty() && self.by_sender.values().all(|s| matches!(s, SenderTime::Idle(_)))
    }

    fn advance(&mut self) -> Option<i64> {
        let mut min: Option<i64> = None;
        for s in self.by_sender.values() {
            match *s {
                SenderTime::Active(None) => return None,
                SenderTime::Active(Some(w)) => min = Some(min.map_or(w, |m| m.min(w))),
                SenderTime::Idle(_) => {}
            }
        }
        let min = min?;
        if self.current.is_some_and(|c| min <= c) {
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

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Runs operator code, turning a panic into [`StreamError::Panic`] with its message.
fn guarded<T>(f: impl FnOnce() -> Result<T, StreamError>) -> Result<T, StreamError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| Err(StreamError::Panic(panic_text(p))))
}

/// Runs batches through `ops` (the rest of a chain, with their counters); returns what comes out of its end.
fn through(
    ops: &mut [Box<dyn Operator>],
    counters: &[Arc<NodeCounters>],
    mut input: usize,
    mut batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>, StreamError> {
    for (op, c) in ops.iter_mut().zip(counters) {
        let mut out = Buffer(Vec::new());
        for b in batches {
            c.recv(&b);
            guarded(|| op.process(input, b, &mut out))?;
        }
        out.0.iter().for_each(|b| c.sent(b));
        batches = out.0;
        input = 0;
    }
    Ok(batches)
}

/// Calls `each` on every operator of a chain in order, passing what it emits through the operators after it.
fn each_op(
    ops: &mut [Box<dyn Operator>],
    counters: &[Arc<NodeCounters>],
    each: impl Fn(&mut dyn Operator, &mut Buffer) -> Result<(), StreamError>,
) -> Result<Vec<RecordBatch>, StreamError> {
    let mut outs = Vec::new();
    for i in 0..ops.len() {
        let (head, rest) = ops.split_at_mut(i + 1);
        let mut out = Buffer(Vec::new());
        guarded(|| each(head[i].as_mut(), &mut out))?;
        out.0.iter().for_each(|b| counters[i].sent(b));
        outs.extend(through(rest, &counters[i + 1..], 0, out.0)?);
    }
    Ok(outs)
}

/// One node's state in a checkpoint: the checkpoint's own entry type.
pub use super::checkpoint::Entry as NodeState;

/// What a running pipeline tells whoever drives it.
#[derive(Debug)]
pub enum Event {
    /// A task took its snapshot for `epoch` (and, with `stop`, is exiting after it).
    Snapshot {
        /// The task.
        task: usize,
        /// The checkpoint epoch.
        epoch: u64,
        /// The state of each node of its chain.
        states: Vec<NodeState>,
    },
    /// A task finished its input; these are its final states (what a restore after this point starts from).
    Finished {
        /// The task.
        task: usize,
        /// The state of each node of its chain after `finish`.
        states: Vec<NodeState>,
    },
    /// A task exited.
    Done {
        /// The task.
        task: usize,
        /// How.
        result: Result<(), StreamError>,
    },
}

/// Requests from whoever drives a pipeline to its sources.
#[derive(Default)]
pub struct Control {
    /// `epoch << 1 | stop` of the latest checkpoint requested.
    requested: AtomicU64,
    cancelled: AtomicBool,
}

impl Control {
    /// Asks every source to inject barrier `epoch` (greater than any before); with `stop`, the pipeline
    /// stops after it.
    pub fn request_checkpoint(&self, epoch: u64, stop: bool) {
        self.requested.fetch_max(epoch << 1 | u64::from(stop), Ordering::SeqCst);
    }

    fn requested(&self) -> (u64, bool) {
        let r = self.requested.load(Ordering::SeqCst);
        (r >> 1, r & 1 == 1)
    }
}

/// States to restore, by `(node, subtask)`, and the epoch they were taken at.
#[derive(Clone, Debug, Default)]
pub struct Restore {
    /// The checkpoint's epoch: the next barrier is a later one.
    pub epoch: u64,
    /// Each node's state by `(node, subtask)`.
    pub states: HashMap<(u32, u32), NodeState>,
}

/// How a pipeline runs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Each task's inbound queue holds this many rows.
    pub queue_rows: usize,
    /// A source that has had no input this long is idle: downstream watermarks leave it out.
    pub idle_after: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig { queue_rows: 65_536, idle_after: Duration::from_secs(5) }
    }
}

/// Worker threads, each running its tasks on a single-threaded async runtime.
pub struct SlotPool {
    slots: Vec<Slot>,
}

struct Slot {
    handle: tokio::runtime::Handle,
    stop: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Pipelines holding this slot.
    holders: AtomicUsize,
}

impl SlotPool {
    /// Starts `n` worker slots (at least one).
    pub fn new(n: usize) -> Result<SlotPool, StreamError> {
        let mut slots = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let (tx, rx) = std::sync::mpsc::channel();
            let stop = Arc::new(Notify::new());
            let stop_in = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("silt-slot-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(stop_in.notified());
                })
                .map_err(|e| StreamError::Operator(format!("starting worker slot {i}: {e}")))?;
            let handle = rx
                .recv()
                .map_err(|_| StreamError::Operator(format!("worker slot {i} died at start")))?
                .map_err(|e| StreamError::Operator(format!("worker slot {i}: {e}")))?;
            slots.push(Slot { handle, stop, thread: Some(thread), holders: AtomicUsize::new(0) });
        }
        Ok(SlotPool { slots })
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the pool has no slots (never: it has at least one).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slots no pipeline holds.
    pub fn free(&self) -> usize {
        self.slots.iter().filter(|s| s.holders.load(Ordering::SeqCst) == 0).count()
    }

    /// Takes `n` free slots, or none if fewer are free.
    pub fn reserve(&self, n: usize) -> Option<Vec<usize>> {
        let mut got = Vec::with_capacity(n);
        for (i, s) in self.slots.iter().enumerate() {
            if got.len() == n {
                break;
            }
            if s.holders.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                got.push(i);
            }
        }
        if got.len() < n {
            self.release(&got);
            return None;
        }
        Some(got)
    }

    /// Gives slots back.
    pub fn release(&self, slots: &[usize]) {
        for &i in slots {
            if let Some(s) = self.slots.get(i) {
                s.holders.store(0, Ordering::SeqCst);
            }
        }
    }
}

impl Drop for SlotPool {
    /// Tells every slot to stop. A slot whose thread is idle exits at once and is joined; one still inside an
    /// operator call (a sink blocked on a channel nobody reads) is left to finish on its own rather than
    /// hang the drop.
    fn drop(&mut self) {
        for s in &mut self.slots {
            s.stop.notify_one();
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        for s in &mut self.slots {
            if let Some(t) = s.thread.take() {
                while !t.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if t.is_finished() {
                    let _ = t.join();
                }
            }
        }
    }
}

/// Slots a graph needs: its largest parallelism (Arroyo's `slots_for_job`).
pub fn slots_for(g: &LogicalGraph) -> usize {
    g.nodes.iter().map(|n| n.parallelism).max().unwrap_or(0)
}

/// Arroyo's slot-filling assignment: for each node, its subtasks go to `slots` in order, `per_slot` to a
/// slot before moving to the next. Returns the slot of `(node, subtask)` for every subtask of every node.
pub fn assign(g: &LogicalGraph, slots: &[usize], per_slot: usize) -> HashMap<(usize, usize), usize> {
    let mut out = HashMap::new();
    let per_slot = per_slot.max(1);
    for (n, node) in g.nodes.iter().enumerate() {
        let (mut slot, mut count) = (0, 0);
        for s in 0..node.parallelism {
            out.insert((n, s), slots[slot.min(slots.len() - 1)]);
            count += 1;
            if count == per_slot {
                slot += 1;
                count = 0;
            }
        }
    }
    out
}

/// Keeps the first error of a failing pipeline, except that a real error replaces the cancellations it
/// caused in the other tasks.
pub fn keep_first_error(first: &mut Option<StreamError>, e: StreamError) {
    if first.as_ref().is_none_or(|f| matches!(f, StreamError::Cancelled) && !matches!(e, StreamError::Cancelled)) {
        *first = Some(e);
    }
}

/// A running pipeline.
pub struct Pipeline {
    events: crossbeam_channel::Receiver<Event>,
    tasks: usize,
    queues: Vec<Arc<RowQueue>>,
    control: Arc<Control>,
    probe: PipelineProbe,
    /// The pool a pipeline started by [`start`] owns (kept alive until the pipeline is dropped).
    _pool: Option<Arc<SlotPool>>,
}

impl Pipeline {
    /// Waits for every task; returns the first failure (every task stops once one fails).
    pub fn join(self) -> Result<(), StreamError> {
        let mut first = None;
        let mut done = 0;
        while done < self.tasks {
            let Ok(ev) = self.events.recv() else {
                return Err(StreamError::Panic("a worker slot died".into()));
            };
            if let Event::Done { result, .. } = ev {
                done += 1;
                if let Err(e) = result {
                    keep_first_error(&mut first, e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// What the tasks report, for a driver that takes checkpoints.
    pub fn events(&self) -> &crossbeam_channel::Receiver<Event> {
        &self.events
    }

    /// Number of tasks.
    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// The checkpoint and stop control.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Stops at once: every queue is closed, every task ends with [`StreamError::Cancelled`].
    pub fn cancel(&self) {
        self.control.cancelled.store(true, Ordering::SeqCst);
        self.queues.iter().for_each(|q| q.close());
    }

    /// Rows queued in each task's inbound queue (a backpressure gauge).
    pub fn queued_rows(&self) -> Vec<usize> {
        self.queues.iter().map(|q| q.rows()).collect()
    }

    /// The counters and queues of every operator subtask (see [`super::probe`]).
    pub fn probe(&self) -> &PipelineProbe {
        &self.probe
    }
}

/// Validates, plans and starts a graph on a pool of its own (one slot per subtask index), with inbound
/// queues of `queue_rows` rows and no checkpoints unless asked through [`Pipeline::control`].
pub fn start(g: &LogicalGraph, queue_rows: usize) -> Result<Pipeline, StreamError> {
    let pool = Arc::new(SlotPool::new(slots_for(g).max(1))?);
    let slots: Vec<usize> = (0..pool.len()).collect();
    let config = RunConfig { queue_rows, ..RunConfig::default() };
    let mut p = launch(g, &pool, &slots, &config, None)?;
    p._pool = Some(pool);
    Ok(p)
}

/// Everything one task runs with.
struct Task {
    index: usize,
    chain_nodes: Vec<usize>,
    subtask: usize,
    source: Option<Box<dyn Source>>,
    ops: Vec<Box<dyn Operator>>,
    /// The counters of each node of the chain, upstream first (a source's first).
    counters: Vec<Arc<NodeCounters>>,
    router: Router,
    inbox: Arc<RowQueue>,
    senders: Vec<usize>,
    watermarks: Watermarks,
    epoch: u64,
    control: Arc<Control>,
    events: crossbeam_channel::Sender<Event>,
    idle_after: Duration,
}

impl Task {
    fn states(&mut self) -> Result<Vec<NodeState>, StreamError> {
        let mut out = Vec::with_capacity(self.chain_nodes.len());
        let mut ops = self.ops.iter_mut();
        let wm = self.watermarks.current;
        for (i, &node) in self.chain_nodes.iter().enumerate() {
            let state = match (&mut self.source, i) {
                (Some(src), 0) => guarded(|| src.snapshot())?,
                _ => match ops.next() {
                    Some(op) => guarded(|| op.snapshot())?,
                    None => Vec::new(),
                },
            };
            out.push(NodeState { node: node as u32, subtask: self.subtask as u32, watermark: wm, state });
        }
        Ok(out)
    }

    fn restore(&mut self, restore: &Restore) -> Result<(), StreamError> {
        let mut ops = self.ops.iter_mut();
        for (i, &node) in self.chain_nodes.iter().enumerate() {
            let s = restore.states.get(&(node as u32, self.subtask as u32)).ok_or_else(|| {
                StreamError::Operator(format!("the checkpoint has no state for node {node} subtask {}", self.subtask))
            })?;
            if s.watermark.is_some() {
                self.watermarks.current = s.watermark;
            }
            match (&mut self.source, i) {
                (Some(src), 0) => guarded(|| src.restore(&s.state))?,
                _ => {
                    if let Some(op) = ops.next() {
                        guarded(|| op.restore(&s.state))?;
                    }
                }
            }
        }
        self.epoch = restore.epoch;
        Ok(())
    }

    /// Snapshots, reports and forwards barrier `epoch`.
    async fn barrier(&mut self, epoch: u64, stop: bool) -> Result<(), StreamError> {
        let states = self.states()?;
        self.epoch = epoch;
        let _ = self.events.send(Event::Snapshot { task: self.index, epoch, states });
        let task = self.index;
        self.router.broadcast(|| Msg::Barrier(task, epoch, stop)).await
    }

    async fn advance(&mut self, wm: i64) -> Result<(), StreamError> {
        let counters = &self.counters[usize::from(self.source.is_some())..];
        let out = each_op(&mut self.ops, counters, |op, out| op.on_watermark(wm, out))?;
        self.router.send(out).await?;
        let task = self.index;
        self.router.broadcast(|| Msg::Watermark(task, wm)).await
    }

    async fn finish(&mut self) -> Result<(), StreamError> {
        let counters = &self.counters[usize::from(self.source.is_some())..];
        let out = each_op(&mut self.ops, counters, |op, out| op.finish(out))?;
        self.router.send(out).await?;
        let states = self.states()?;
        let _ = self.events.send(Event::Finished { task: self.index, states });
        let task = self.index;
        self.router.broadcast(|| Msg::End(task)).await
    }

    async fn run_source(&mut self) -> Result<(), StreamError> {
        let mut last_wm = self.watermarks.current;
        let mut idle_since: Option<Instant> = None;
        let mut idle_said = false;
        let mut nap = Duration::from_micros(200);
        loop {
            if self.control.cancelled.load(Ordering::Relaxed) {
                return Err(StreamError::Cancelled);
            }
            let (epoch, stop) = self.control.requested();
            if epoch > self.epoch {
                self.barrier(epoch, stop).await?;
                if stop {
                    return Ok(());
                }
            }
            let Some(src) = self.source.as_mut() else { return Ok(()) };
            match guarded(|| src.poll())? {
                SourcePoll::Batch(b) => {
                    idle_since = None;
                    idle_said = false;
                    nap = Duration::from_micros(200);
                    let wm = src.watermark();
                    self.counters[0].sent(&b);
                    let out = through(&mut self.ops, &self.counters[1..], 0, vec![b])?;
                    self.router.send(out).await?;
                    if let Some(w) = wm.filter(|&w| last_wm.is_none_or(|l| w > l)) {
                        last_wm = Some(w);
                        self.watermarks.current = Some(w);
                        self.advance(w).await?;
                    }
                    tokio::task::yield_now().await;
                }
                SourcePoll::Idle => {
                    // A watermark may move without a batch (a live source ending its replay from the store).
                    if let Some(w) = src.watermark().filter(|&w| last_wm.is_none_or(|l| w > l)) {
                        last_wm = Some(w);
                        self.watermarks.current = Some(w);
                        self.advance(w).await?;
                    }
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if !idle_said && since.elapsed() >= self.idle_after {
                        idle_said = true;
                        let task = self.index;
                        self.router.broadcast(|| Msg::Idle(task)).await?;
                    }
                    tokio::time::sleep(nap).await;
                    nap = (nap * 2).min(Duration::from_millis(10));
                }
                SourcePoll::End => break,
            }
        }
        self.finish().await
    }

    async fn run_operator(&mut self) -> Result<(), StreamError> {
        let mut live: HashSet<usize> = self.senders.iter().copied().collect();
        // Alignment: senders whose barrier has come, and what they sent after it.
        let mut aligning: HashSet<usize> = HashSet::new();
        let mut barrier: Option<(u64, bool)> = None;
        let mut held: VecDeque<Msg> = VecDeque::new();
        let mut pending: VecDeque<Msg> = VecDeque::new();
        let mut idle_said = false;
        while !live.is_empty() {
            let msg = match pending.pop_front() {
                Some(m) => m,
                None => self.inbox.pop().await?,
            };
            if aligning.contains(&msg.sender()) {
                held.push_back(msg);
                continue;
            }
            match msg {
                Msg::Batch(sender, input, b) => {
                    self.watermarks.active(sender);
                    idle_said = false;
                    let out = through(&mut self.ops, &self.counters, input, vec![b])?;
                    self.router.send(out).await?;
                }
                Msg::Watermark(sender, wm) => {
                    idle_said = false;
                    if let Some(w) = self.watermarks.watermark(sender, wm) {
                        self.advance(w).await?;
                    }
                }
                Msg::Idle(sender) => {
                    if let Some(w) = self.watermarks.idle(sender) {
                        self.advance(w).await?;
                    }
                    if !idle_said && self.watermarks.all_idle() {
                        idle_said = true;
                        let task = self.index;
                        self.router.broadcast(|| Msg::Idle(task)).await?;
                    }
                }
                Msg::Barrier(sender, epoch, stop) => {
                    aligning.insert(sender);
                    barrier = Some((epoch, stop));
                }
                Msg::End(sender) => {
                    live.remove(&sender);
                    if let Some(w) = self.watermarks.end(sender) {
                        self.advance(w).await?;
                    }
                }
            }
            if !aligning.is_empty() && live.iter().all(|s| aligning.contains(s)) {
                let (epoch, stop) = barrier.take().unwrap_or((self.epoch, false));
                self.barrier(epoch, stop).await?;
                if stop {
                    return Ok(());
                }
                aligning.clear();
                held.append(&mut pending);
                pending = std::mem::take(&mut held);
            }
        }
        self.finish().await
    }
}

/// Validates and plans `g` and starts its tasks on `slots` of `pool` (Arroyo's slot-filling placement,
/// one subtask index per slot), restoring `restore` first if given.
pub fn launch(
    g: &LogicalGraph,
    pool: &SlotPool,
    slots: &[usize],
    config: &RunConfig,
    restore: Option<&Restore>,
) -> Result<Pipeline, StreamError> {
    let plan = PhysicalPlan::of(g)?;
    let needed = slots_for(g);
    if slots.len() < needed || slots.iter().any(|&s| s >= pool.len()) {
        return Err(StreamError::Operator(format!(
            "the pipeline needs {needed} worker slots and was given {}",
            slots.len()
        )));
    }
    let placement = assign(g, slots, 1);
    let tasks = plan.tasks();
    let queues: Vec<Arc<RowQueue>> = tasks.iter().map(|_| Arc::new(RowQueue::new(config.queue_rows))).collect();
    let index = |chain: usize, subtask: usize| tasks.iter().position(|t| t.chain == chain && t.subtask == subtask);
    let control = Arc::new(Control::default());
    let (events_tx, events) = crossbeam_channel::unbounded();
    let mut built = Vec::with_capacity(tasks.len());
    let mut probes = Vec::with_capacity(tasks.len());
    let operator_names = operator_names(g);
    for (ti, t) in tasks.iter().enumerate() {
        let chain = &plan.chains[t.chain];
        let p = chain.parallelism;
        let head = chain.nodes[0];
        let mut routes = Vec::new();
        let mut senders = Vec::new();
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
                match e.kind {
                    EdgeKind::Forward => senders.extend(index(from, t.subtask)),
                    EdgeKind::Shuffle { .. } => {
                        senders.extend((0..plan.chains[from].parallelism).filter_map(|s| index(from, s)))
                    }
                }
            }
        }
        let source: Option<Box<dyn Source>> = match &g.nodes[head].kind {
            NodeKind::Source(f) => Some(f(t.subtask, p)),
            NodeKind::Operator(_) => None,
        };
        let ops: Vec<Box<dyn Operator>> = chain
            .nodes
            .iter()
            .filter_map(|&n| match &g.nodes[n].kind {
                NodeKind::Operator(f) => Some(f(t.subtask, p)),
                NodeKind::Source(_) => None,
            })
            .collect();
        let counters: Vec<Arc<NodeCounters>> = chain.nodes.iter().map(|_| Arc::default()).collect();
        let is_source = source.is_some();
        probes.push(TaskProbe {
            nodes: chain.nodes.iter().zip(&counters).map(|(&n, c)| (n, operator_names[n].clone(), c.clone())).collect(),
            subtask: t.subtask,
            parallelism: p,
            inbox: (!is_source).then(|| queues[ti].clone()),
            outs: routes
                .iter()
                .flat_map(|r| match r.kind {
                    EdgeKind::Forward => vec![r.targets[t.subtask].clone()],
                    EdgeKind::Shuffle { .. } => r.targets.clone(),
                })
                .collect(),
        });
        let mut task = Task {
            index: ti,
            counters,
            chain_nodes: chain.nodes.clone(),
            subtask: t.subtask,
            source,
            ops,
            router: Router { task: ti, subtask: t.subtask, routes },
            inbox: queues[ti].clone(),
            watermarks: Watermarks::new(&senders, None),
            senders,
            epoch: 0,
            control: control.clone(),
            events: events_tx.clone(),
            idle_after: config.idle_after,
        };
        if let Some(r) = restore {
            task.restore(r)?;
        }
        built.push((placement[&(head, t.subtask)], task));
    }
    for (slot, mut task) in built {
        let all = queues.clone();
        pool.slots[slot].handle.spawn(async move {
            let r = if task.source.is_some() { task.run_source().await } else { task.run_operator().await };
            if r.is_err() {
                // One failure stops the pipeline: blocked tasks see closed queues, polling sources the flag.
                task.control.cancelled.store(true, Ordering::SeqCst);
                all.iter().for_each(|q| q.close());
            }
            let _ = task.events.send(Event::Done { task: task.index, result: r });
        });
    }
    let probe = PipelineProbe { tasks: Arc::new(probes) };
    Ok(Pipeline { events, tasks: tasks.len(), queues, control, probe, _pool: None })
}

/// Each node's name for metrics: its own, with `-<node index>` added where two nodes share a name.
fn operator_names(g: &LogicalGraph) -> Vec<String> {
    g.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if g.nodes.iter().filter(|m| m.name == n.name).count() > 1 {
                format!("{}-{i}", n.name)
            } else {
                n.name.clone()
            }
        })
        .collect()
}
