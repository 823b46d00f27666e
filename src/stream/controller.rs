//! Pipelines under control: scheduling onto worker slots, periodic checkpoints into the store, stop,
//! failure and restart from the last completed checkpoint (Arroyo's controller at in-process scale).
//!
//! A [`StreamEngine`] owns a [`SlotPool`] and a [`StateStore`] (the database, or memory in tests). Each
//! submitted pipeline gets a driver thread that moves it through [`PipelineState`]s; every transition is
//! checked against one table, [`TRANSITIONS`]:
//!
//! - `Created → Scheduling`: waits until the pipeline's slots (its largest parallelism) are free, loads its
//!   last completed checkpoint, if any, and launches the tasks with that state.
//! - `Running ⇄ Checkpointing`: every `checkpoint_interval` (or on [`PipelineHandle::checkpoint`]) the
//!   sources inject barrier `n`; when every task has reported its state for `n` (or its final state, if it
//!   finished before), the checkpoint is written to the store in one atomic replace and is *completed*.
//! - `Stopping → Stopped`: a graceful stop is a checkpoint whose barrier also stops every task; an immediate
//!   stop cancels the tasks and keeps the last completed checkpoint. A pipeline whose input ends is
//!   `Stopped` too, with a final checkpoint recording that it finished.
//! - `Running → Recovering → Scheduling`: an operator error or panic fails the run; the pipeline restarts
//!   from its last completed checkpoint after a backoff, at most `restart_budget` times in a row (a
//!   completed checkpoint resets the count); past the budget it is `Failed` with the error's message.
//!
//! Sinks that write to the store make their writes durable in `snapshot`, and writes are idempotent per
//! slot, so output replayed after a restore overwrites what the failed run wrote with the same values:
//! exactly-once for store sinks, given deterministic operators and replayable sources.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::checkpoint::Checkpoint;
use super::graph::LogicalGraph;
use super::probe::PipelineProbe;
use super::runtime::{keep_first_error, launch, slots_for, Event, NodeState, Pipeline, Restore, RunConfig, SlotPool};
use super::StreamError;

/// Where a pipeline is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PipelineState {
    /// Submitted, not yet scheduled.
    Created,
    /// Waiting for worker slots, loading its checkpoint, starting its tasks.
    Scheduling,
    /// Tasks running.
    Running,
    /// Tasks running, a checkpoint in flight.
    Checkpointing,
    /// Stopping (gracefully: taking the final checkpoint; or at once).
    Stopping,
    /// Stopped, or its input ended. Its state is its last completed checkpoint.
    Stopped,
    /// Failed past its restart budget (or could not be scheduled).
    Failed,
    /// A run failed; restarting from the last completed checkpoint.
    Recovering,
}

use PipelineState::*;

impl PipelineState {
    /// Stopped or failed: the pipeline runs no more (until submitted again).
    pub fn is_final(self) -> bool {
        matches!(self, Stopped | Failed)
    }
}

/// Every allowed transition, `(from, to)`. Anything else is a bug, refused by [`can_transition`].
pub const TRANSITIONS: &[(PipelineState, PipelineState)] = &[
    (Created, Scheduling),
    (Scheduling, Running),
    (Scheduling, Stopped),
    (Scheduling, Failed),
    (Scheduling, Recovering),
    (Running, Checkpointing),
    (Running, Stopping),
    (Running, Stopped),
    (Running, Recovering),
    (Running, Failed),
    (Checkpointing, Running),
    (Checkpointing, Stopping),
    (Checkpointing, Stopped),
    (Checkpointing, Recovering),
    (Checkpointing, Failed),
    (Stopping, Stopped),
    (Stopping, Recovering),
    (Stopping, Failed),
    (Recovering, Scheduling),
    (Recovering, Stopped),
    (Recovering, Failed),
];

/// Whether a pipeline may move from `from` to `to`.
pub fn can_transition(from: PipelineState, to: PipelineState) -> bool {
    TRANSITIONS.contains(&(from, to))
}

/// Named blobs that outlive the process: where checkpoints go.
pub trait StateStore: Send + Sync {
    /// Replaces blob `name` atomically and durably.
    fn save(&self, name: &str, bytes: &[u8]) -> Result<(), StreamError>;
    /// Blob `name`, if it exists.
    fn load(&self, name: &str) -> Result<Option<Vec<u8>>, StreamError>;
}

impl StateStore for crate::Db {
    fn save(&self, name: &str, bytes: &[u8]) -> Result<(), StreamError> {
        self.put_state(name, bytes).map_err(|e| StreamError::Operator(format!("saving {name}: {e}")))
    }

    fn load(&self, name: &str) -> Result<Option<Vec<u8>>, StreamError> {
        self.state(name).map_err(|e| StreamError::Operator(format!("loading {name}: {e}")))
    }
}

/// Blobs in memory (tests; pipelines whose state need not outlive the process).
#[derive(Default)]
pub struct MemoryStore(Mutex<HashMap<String, Vec<u8>>>);

impl StateStore for MemoryStore {
    fn save(&self, name: &str, bytes: &[u8]) -> Result<(), StreamError> {
        self.0.lock().insert(name.to_owned(), bytes.to_vec());
        Ok(())
    }

    fn load(&self, name: &str) -> Result<Option<Vec<u8>>, StreamError> {
        Ok(self.0.lock().get(name).cloned())
    }
}

/// The name a pipeline's checkpoint is stored under.
pub fn checkpoint_name(pipeline: &str) -> String {
    format!("stream.{pipeline}.checkpoint")
}

/// A pipeline to run.
pub struct PipelineDef {
    /// Unique among the engine's pipelines; names its checkpoint.
    pub name: String,
    /// What it runs.
    pub graph: LogicalGraph,
    /// Time between checkpoints (`None`: only on request, at a graceful stop, and at the end of input).
    pub checkpoint_interval: Option<Duration>,
    /// Restarts in a row (without a completed checkpoint between) before the pipeline is `Failed`.
    pub restart_budget: u32,
    /// Queues and idleness.
    pub run: RunConfig,
    /// How long scheduling waits for free slots before the pipeline fails.
    pub schedule_timeout: Duration,
    /// A description shown by the API (e.g. the declarative form it came from).
    pub description: Option<serde_json::Value>,
}

impl PipelineDef {
    /// A definition with defaults: checkpoints every 10 s, restart budget 3, default queues, 30 s to get
    /// slots.
    pub fn new(name: &str, graph: LogicalGraph) -> Self {
        PipelineDef {
            name: name.to_owned(),
            graph,
            checkpoint_interval: Some(Duration::from_secs(10)),
            restart_budget: 3,
            run: RunConfig::default(),
            schedule_timeout: Duration::from_secs(30),
            description: None,
        }
    }
}

/// What the API shows of a pipeline.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PipelineInfo {
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: PipelineState,
    /// Restarts in a row so far.
    pub restarts: u32,
    /// Restarts over its whole life.
    pub total_restarts: u64,
    /// The epoch of its last completed checkpoint (0: none).
    pub checkpoint_epoch: u64,
    /// The last failure's message.
    pub error: Option<String>,
    /// Tasks of the current run.
    pub tasks: usize,
    /// Worker slots it holds.
    pub slots: Vec<usize>,
    /// Its definition's description.
    pub description: Option<serde_json::Value>,
}

/// How to stop a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Drain to a final checkpoint, then stop; a restart resumes exactly there.
    Graceful,
    /// Cancel at once; a restart resumes from the last completed checkpoint.
    Immediate,
}

enum Command {
    Checkpoint,
    Stop(StopMode),
}

/// A submitted pipeline: its state, and the way to talk to its driver.
pub struct PipelineHandle {
    info: Mutex<PipelineInfo>,
    changed: Condvar,
    commands: crossbeam_channel::Sender<Command>,
    /// Transitions so far, in order (for tests and the log).
    history: Mutex<Vec<PipelineState>>,
    /// The current run's counters and queues, while it runs.
    probe: Mutex<Option<PipelineProbe>>,
}

impl PipelineHandle {
    /// What it is doing now.
    pub fn info(&self) -> PipelineInfo {
        self.info.lock().clone()
    }

    /// Its state now.
    pub fn state(&self) -> PipelineState {
        self.info.lock().state
    }

    /// Every state it has been in, in order.
    pub fn history(&self) -> Vec<PipelineState> {
        self.history.lock().clone()
    }

    /// The counters and queues of the current run (`None` unless running); a restart starts new counters.
    pub fn probe(&self) -> Option<PipelineProbe> {
        self.probe.lock().clone()
    }

    /// Asks for a checkpoint now (ignored unless running).
    pub fn checkpoint(&self) {
        let _ = self.commands.send(Command::Checkpoint);
    }

    /// Asks it to stop.
    pub fn stop(&self, mode: StopMode) {
        let _ = self.commands.send(Command::Stop(mode));
    }

    /// Waits until `pred` holds for its info, or `timeout` passes; returns the info then.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&PipelineInfo) -> bool) -> PipelineInfo {
        let deadline = Instant::now() + timeout;
        let mut info = self.info.lock();
        while !pred(&info) {
            if self.changed.wait_until(&mut info, deadline).timed_out() {
                break;
            }
        }
        info.clone()
    }

    fn update(&self, f: impl FnOnce(&mut PipelineInfo)) {
        f(&mut self.info.lock());
        self.changed.notify_all();
    }

    fn set(&self, to: PipelineState) {
        let mut info = self.info.lock();
        let from = info.state;
        assert!(can_transition(from, to), "pipeline {:?}: no transition from {from:?} to {to:?}", info.name);
        tracing::debug!(pipeline = %info.name, ?from, ?to, "pipeline state");
        info.state = to;
        self.history.lock().push(to);
        drop(info);
        self.changed.notify_all();
    }
}

/// Runs pipelines on a pool of worker slots, with checkpoints in a state store.
pub struct StreamEngine {
    pool: Arc<SlotPool>,
    store: Arc<dyn StateStore>,
    pipelines: Mutex<BTreeMap<String, Arc<PipelineHandle>>>,
    drivers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl StreamEngine {
    /// An engine with `slots` worker threads.
    pub fn new(slots: usize, store: Arc<dyn StateStore>) -> Result<StreamEngine, StreamError> {
        Ok(StreamEngine {
            pool: Arc::new(SlotPool::new(slots)?),
            store,
            pipelines: Mutex::new(BTreeMap::new()),
            drivers: Mutex::new(Vec::new()),
        })
    }

    /// Worker slots in all, and free now.
    pub fn slots(&self) -> (usize, usize) {
        (self.pool.len(), self.pool.free())
    }

    /// Validates and starts a pipeline. A name in use by a pipeline that is not stopped or failed is an
    /// error; a stopped or failed one of that name is replaced (and resumes from its checkpoint).
    pub fn submit(&self, def: PipelineDef) -> Result<Arc<PipelineHandle>, StreamError> {
        crate::keys::validate_name("pipeline name", &def.name)
            .map_err(|e| StreamError::Operator(format!("bad pipeline name: {e}")))?;
        super::graph::PhysicalPlan::of(&def.graph)?;
        let needed = slots_for(&def.graph);
        if needed > self.pool.len() {
            return Err(StreamError::Operator(format!(
                "pipeline {:?} needs {needed} worker slots; the engine has {}",
                def.name,
                self.pool.len()
            )));
        }
        let mut pipelines = self.pipelines.lock();
        if let Some(old) = pipelines.get(&def.name) {
            if !old.state().is_final() {
                return Err(StreamError::Exists(def.name.clone()));
            }
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = Arc::new(PipelineHandle {
            info: Mutex::new(PipelineInfo {
                name: def.name.clone(),
                state: Created,
                restarts: 0,
                total_restarts: 0,
                checkpoint_epoch: 0,
                error: None,
                tasks: 0,
                slots: Vec::new(),
                description: def.description.clone(),
            }),
            changed: Condvar::new(),
            commands: tx,
            history: Mutex::new(vec![Created]),
            probe: Mutex::new(None),
        });
        let driver =
            Driver { def, pool: self.pool.clone(), store: self.store.clone(), handle: handle.clone(), commands: rx };
        let thread = std::thread::Builder::new()
            .name(format!("silt-pipeline-{}", driver.def.name))
            .spawn(move || driver.run())
            .map_err(|e| StreamError::Operator(format!("starting the pipeline driver: {e}")))?;
        let mut drivers = self.drivers.lock();
        drivers.retain(|d| !d.is_finished());
        drivers.push(thread);
        pipelines.insert(handle.info().name, handle.clone());
        Ok(handle)
    }

    /// A pipeline by name.
    pub fn get(&self, name: &str) -> Option<Arc<PipelineHandle>> {
        self.pipelines.lock().get(name).cloned()
    }

    /// Forgets a pipeline that is stopped or failed; returns whether it did.
    pub fn remove(&self, name: &str) -> bool {
        let mut pipelines = self.pipelines.lock();
        let gone = pipelines.get(name).is_some_and(|h| h.state().is_final());
        if gone {
            pipelines.remove(name);
        }
        gone
    }

    /// Every pipeline, by name.
    pub fn list(&self) -> Vec<PipelineInfo> {
        self.pipelines.lock().values().map(|h| h.info()).collect()
    }

    /// Stops every pipeline (gracefully; at once if that takes longer than `timeout`) and waits for their
    /// drivers to exit, so nothing of theirs (a database handle) outlives this call.
    pub fn shutdown(&self, timeout: Duration) {
        let all: Vec<_> = self.pipelines.lock().values().cloned().collect();
        all.iter().for_each(|h| h.stop(StopMode::Graceful));
        for h in &all {
            if !h.wait_for(timeout, |i| i.state.is_final()).state.is_final() {
                h.stop(StopMode::Immediate);
            }
        }
        for d in self.drivers.lock().drain(..) {
            let _ = d.join();
        }
    }
}

/// How a run ended.
enum RunEnd {
    /// Stopped (asked, or the input ended).
    Stopped,
    /// Failed with this error.
    Failed(StreamError),
}

struct Driver {
    def: PipelineDef,
    pool: Arc<SlotPool>,
    store: Arc<dyn StateStore>,
    handle: Arc<PipelineHandle>,
    commands: crossbeam_channel::Receiver<Command>,
}

impl Driver {
    fn graph_shape(&self) -> Vec<(String, u32)> {
        self.def.graph.nodes.iter().map(|n| (n.name.clone(), n.parallelism as u32)).collect()
    }

    fn run(self) {
        let mut backoff = Duration::from_millis(50);
        loop {
            self.handle.set(Scheduling);
            let end = match self.schedule() {
                Ok(Some(slots)) => {
                    let end = self.run_once(&slots);
                    self.pool.release(&slots);
                    self.handle.update(|i| {
                        i.slots.clear();
                        i.tasks = 0;
                    });
                    end
                }
                Ok(None) => RunEnd::Stopped,
                Err(e) => RunEnd::Failed(e),
            };
            match end {
                RunEnd::Stopped => {
                    self.handle.set(Stopped);
                    return;
                }
                RunEnd::Failed(e) => {
                    let msg = e.to_string();
                    tracing::warn!(pipeline = %self.def.name, error = %msg, "pipeline failed");
                    let restarts = self.handle.info().restarts;
                    if restarts >= self.def.restart_budget {
                        self.handle.update(|i| i.error = Some(msg));
                        self.handle.set(Failed);
                        return;
                    }
                    self.handle.set(Recovering);
                    self.handle.update(|i| {
                        i.error = Some(msg);
                        i.restarts += 1;
                        i.total_restarts += 1;
                    });
                    // Wait out the backoff unless told to stop.
                    if let Ok(Command::Stop(_)) = self.commands.recv_timeout(backoff) {
                        self.handle.set(Stopped);
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Waits for slots; `None` if told to stop meanwhile.
    fn schedule(&self) -> Result<Option<Vec<usize>>, StreamError> {
        let needed = slots_for(&self.def.graph);
        let deadline = Instant::now() + self.def.schedule_timeout;
        loop {
            if let Some(slots) = self.pool.reserve(needed) {
                return Ok(Some(slots));
            }
            if Instant::now() >= deadline {
                return Err(StreamError::Operator(format!(
                    "no {needed} free worker slots within {:?} ({} of {} free)",
                    self.def.schedule_timeout,
                    self.pool.free(),
                    self.pool.len()
                )));
            }
            if let Ok(Command::Stop(_)) = self.commands.recv_timeout(Duration::from_millis(20)) {
                return Ok(None);
            }
        }
    }

    fn load_restore(&self) -> Result<Option<Restore>, StreamError> {
        let Some(bytes) = self.store.load(&checkpoint_name(&self.def.name))? else { return Ok(None) };
        let ck = Checkpoint::decode(&bytes).map_err(|e| StreamError::Operator(format!("checkpoint: {e}")))?;
        ck.check_graph(&self.graph_shape()).map_err(|e| StreamError::Operator(format!("checkpoint: {e}")))?;
        let states = ck.entries.into_iter().map(|e| ((e.node, e.subtask), e)).collect();
        Ok(Some(Restore { epoch: ck.epoch, states }))
    }

    fn save(&self, epoch: u64, states: Vec<NodeState>) -> Result<(), StreamError> {
        let ck = Checkpoint { pipeline: self.def.name.clone(), epoch, graph: self.graph_shape(), entries: states };
        self.store.save(&checkpoint_name(&self.def.name), &ck.encode())?;
        self.handle.update(|i| {
            i.checkpoint_epoch = epoch;
            i.restarts = 0;
        });
        Ok(())
    }

    fn run_once(&self, slots: &[usize]) -> RunEnd {
        let restore = match self.load_restore() {
            Ok(r) => r,
            Err(e) => return RunEnd::Failed(e),
        };
        let launched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            launch(&self.def.graph, &self.pool, slots, &self.def.run, restore.as_ref())
        }));
        let pipeline = match launched {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return RunEnd::Failed(e),
            Err(_) => return RunEnd::Failed(StreamError::Panic("an operator factory panicked".into())),
        };
        let restored = restore.as_ref().map(|r| r.epoch);
        self.handle.update(|i| {
            i.slots = slots.to_vec();
            i.tasks = pipeline.tasks();
            if let Some(e) = restored {
                i.checkpoint_epoch = e;
            }
        });
        *self.handle.probe.lock() = Some(pipeline.probe().clone());
        self.handle.set(Running);
        let mut epoch = restore.map_or(0, |r| r.epoch);
        let end = self.supervise(&pipeline, &mut epoch);
        *self.handle.probe.lock() = None;
        // `supervise` returns once every task is done, unless the tasks vanished without saying so: then make
        // sure nothing of theirs runs on before the slots are reused.
        if matches!(end, RunEnd::Failed(_)) {
            pipeline.cancel();
        }
        end
    }

    /// Drives a running pipeline until it stops or fails.
    fn supervise(&self, p: &Pipeline, epoch: &mut u64) -> RunEnd {
        let tasks = p.tasks();
        let mut snapshots: BTreeMap<u64, HashMap<usize, Vec<NodeState>>> = BTreeMap::new();
        let mut finished: HashMap<usize, Vec<NodeState>> = HashMap::new();
        let mut done = 0usize;
        let mut failure: Option<StreamError> = None;
        let mut stopping: Option<StopMode> = None;
        let mut in_flight: Option<u64> = None;
        let mut next_due = self.def.checkpoint_interval.map(|d| Instant::now() + d);
        loop {
            if done == tasks {
                break;
            }
            let wait = next_due.map_or(Duration::from_millis(50), |d| d.saturating_duration_since(Instant::now()));
            let mut checkpoint_now = false;
            crossbeam_channel::select! {
                recv(p.events()) -> ev => match ev {
                    Ok(Event::Snapshot { task, epoch: e, states }) => {
                        snapshots.entry(e).or_default().insert(task, states);
                    }
                    Ok(Event::Finished { task, states }) => {
                        finished.insert(task, states);
                    }
                    Ok(Event::Done { result, .. }) => {
                        done += 1;
                        if let Err(e) = result {
                            // Cancellations are what an immediate stop asked for, not failures.
                            if !(matches!(e, StreamError::Cancelled) && stopping == Some(StopMode::Immediate)) {
                                if failure.is_none() {
                                    p.cancel();
                                }
                                keep_first_error(&mut failure, e);
                            }
                        }
                    }
                    Err(_) => {
                        failure.get_or_insert(StreamError::Panic("the pipeline's tasks vanished".into()));
                        break;
                    }
                },
                recv(self.commands) -> cmd => match cmd {
                    Ok(Command::Checkpoint) => checkpoint_now = true,
                    Ok(Command::Stop(mode)) => {
                        if stopping.is_none() && failure.is_none() {
                            stopping = Some(mode);
                            self.handle.set(Stopping);
                            match mode {
                                StopMode::Immediate => p.cancel(),
                                StopMode::Graceful => {
                                    *epoch += 1;
                                    in_flight = Some(*epoch);
                                    p.control().request_checkpoint(*epoch, true);
                                }
                            }
                        }
                    }
                    Err(_) => {}
                },
                default(wait) => {
                    if next_due.is_some_and(|d| Instant::now() >= d) {
                        next_due = self.def.checkpoint_interval.map(|d| Instant::now() + d);
                        checkpoint_now = true;
                    }
                }
            }
            if checkpoint_now && in_flight.is_none() && stopping.is_none() && failure.is_none() {
                *epoch += 1;
                in_flight = Some(*epoch);
                self.handle.set(Checkpointing);
                p.control().request_checkpoint(*epoch, false);
            }
            // A checkpoint is complete when every task has its state for it, or finished before it.
            if let (Some(e), None) = (in_flight, &failure) {
                let got = snapshots.get(&e);
                let complete = (0..tasks).all(|t| got.is_some_and(|g| g.contains_key(&t)) || finished.contains_key(&t));
                if complete {
                    let mut got = snapshots.remove(&e).unwrap_or_default();
                    let states: Vec<NodeState> = (0..tasks)
                        .flat_map(|t| got.remove(&t).or_else(|| finished.get(&t).cloned()).unwrap_or_default())
                        .collect();
                    snapshots.retain(|&k, _| k > e);
                    in_flight = None;
                    if let Err(err) = self.save(e, states) {
                        failure = Some(err);
                        p.cancel();
                    } else if stopping.is_none() {
                        self.handle.set(Running);
                    }
                }
            }
        }
        if let Some(e) = failure {
            return RunEnd::Failed(e);
        }
        if stopping == Some(StopMode::Immediate) {
            return RunEnd::Stopped;
        }
        // The input ended (every task finished) or a graceful stop's checkpoint completed. After the end of
        // input, record it, so a restart does not run the input again.
        if stopping.is_none() && finished.len() == tasks {
            *epoch += 1;
            let states = (0..tasks).flat_map(|t| finished.remove(&t).unwrap_or_default()).collect();
            if let Err(e) = self.save(*epoch, states) {
                return RunEnd::Failed(e);
            }
        }
        if stopping.is_none() {
            self.handle.set(Stopping);
        }
        RunEnd::Stopped
    }
}
