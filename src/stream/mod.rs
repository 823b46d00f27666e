//! The stream engine: an in-process dataflow over Arrow record batches (Arroyo's shape at in-process
//! scale). A client of the store: it reads and writes through the typed key space like any other.
//!
//! - [`checkpoint`]: the checkpoint container (graph shape, per-subtask watermark and state) and its codec
//!   (`format/checkpoint.md`).
//! - [`graph`]: logical graphs (operators with a parallelism, forward and shuffle edges), validation, and
//!   the physical plan with forward edges chained into one task.
//! - [`operators`]: sources, filters, maps, tumbling event-time windows with count/sum/avg/min/max/last,
//!   channel sinks.
//! - [`store`]: a scan of stored series as a source, and a sink that writes rows back as samples.
//! - [`live`]: the live ingest stream as a source (every accepted write of a metric under a selector, read
//!   from a [`crate::tap::WriteTap`]), partitioned by series, with a bounded-out-of-orderness watermark;
//!   restored from a checkpoint, it replays from the store the acknowledged samples it had not emitted.
//! - [`spec`]: the declarative form of a rollup (JSON): validation, and the graph it builds.
//! - [`runtime`]: tasks on worker slots (Arroyo's slot-filling), bounded queues counted in rows, watermarks
//!   (the minimum over a task's live senders, ended and idle ones left out), aligned checkpoint barriers,
//!   failure of the whole pipeline on the first error or panic.
//! - [`probe`]: per operator subtask counters (rows, bytes and batches in and out) and queue fill, read by
//!   the job-metrics sampler ([`crate::jobs`]).
//! - [`controller`]: pipelines under control: the state table, scheduling, periodic checkpoints into the
//!   store, graceful and immediate stop, restart from the last checkpoint within a restart budget.
//!
//! The HTTP side (`GET/POST /api/pipelines`) is in `server::pipelines`.

pub mod checkpoint;
pub mod controller;
pub mod graph;
pub mod live;
pub mod operators;
pub mod probe;
pub mod runtime;
pub mod spec;
pub mod store;

/// Why a pipeline failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The graph cannot run.
    #[error(transparent)]
    Graph(#[from] graph::GraphError),
    /// Arrow refused an operation (a filter or take over mismatched arrays, …).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The database refused a request (an undeclared metric, …).
    #[error(transparent)]
    Db(#[from] crate::Error),
    /// An operator failed.
    #[error("operator failed: {0}")]
    Operator(String),
    /// An operator panicked; the message is the panic's.
    #[error("operator panicked: {0}")]
    Panic(String),
    /// A pipeline of that name exists and is not stopped.
    #[error("pipeline {0:?} exists and is not stopped")]
    Exists(String),
    /// The pipeline was stopped (cancelled, or another task failed first).
    #[error("cancelled")]
    Cancelled,
}
