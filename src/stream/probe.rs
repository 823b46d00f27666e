//! What a running pipeline tells about itself: per operator subtask, monotonic counters of what went in
//! and out, and the fill of the queues around it (Arroyo's worker metrics). The job-metrics subsystem
//! ([`crate::jobs`]) samples a [`PipelineProbe`] and turns the counters into rates; nothing here keeps
//! history.
//!
//! # What is counted
//!
//! For every logical node and subtask (also the ones chained into one task):
//! - **received**: the batches an operator was handed (from its task's queue or from the operator
//!   before it in the chain), their rows (`messages`) and their Arrow memory size (`bytes`,
//!   `RecordBatch::get_array_memory_size`, which counts whole buffers, also for slices);
//! - **sent**: the same for what it emitted. A source "sends" what it polls and receives nothing; a sink
//!   sends nothing.
//!
//! Counters are only ever added to; a restarted pipeline starts new ones at zero (a sampler treats a
//! counter that went down as a reset).
//!
//! # Queues and backpressure
//!
//! Each task has one input queue, counted in rows ([`super::runtime::RowQueue`]). A subtask reports the
//! size and remaining capacity of its task's input queue (a node chained behind another has no queue of
//! its own and reports `0`/`0`). Its **backpressure** is `1 - (remaining + 1) / (size + 1)` of each queue
//! its task sends into (the downstream input queues), the maximum over them: a subtask held back by a
//! slow consumer shows a value near 1, the slow consumer itself a value near 0, as in Arroyo, where the
//! gauge comes from the sender's transmit queues. Every node of a chain shares its task's value, since
//! they are held back together. A task that sends nowhere (a sink) has backpressure 0.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::RecordBatch;

use super::runtime::RowQueue;

/// Monotonic counters of one operator subtask. Written by the task that runs it, read by anyone.
#[derive(Debug, Default)]
pub struct NodeCounters {
    messages_recv: AtomicU64,
    messages_sent: AtomicU64,
    bytes_recv: AtomicU64,
    bytes_sent: AtomicU64,
    batches_recv: AtomicU64,
    batches_sent: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl NodeCounters {
    /// Counts a batch handed to the operator.
    pub fn recv(&self, b: &RecordBatch) {
        add(&self.messages_recv, b.num_rows() as u64);
        add(&self.bytes_recv, b.get_array_memory_size() as u64);
        add(&self.batches_recv, 1);
    }

    /// Counts a batch the operator emitted.
    pub fn sent(&self, b: &RecordBatch) {
        add(&self.messages_sent, b.num_rows() as u64);
        add(&self.bytes_sent, b.get_array_memory_size() as u64);
        add(&self.batches_sent, 1);
    }

    /// The values now, in [`Counters`] order.
    pub fn load(&self) -> Counters {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            messages_recv: l(&self.messages_recv),
            messages_sent: l(&self.messages_sent),
            bytes_recv: l(&self.bytes_recv),
            bytes_sent: l(&self.bytes_sent),
            batches_recv: l(&self.batches_recv),
            batches_sent: l(&self.batches_sent),
        }
    }
}

/// A reading of one subtask's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Rows received.
    pub messages_recv: u64,
    /// Rows sent.
    pub messages_sent: u64,
    /// Arrow bytes received.
    pub bytes_recv: u64,
    /// Arrow bytes sent.
    pub bytes_sent: u64,
    /// Batches received.
    pub batches_recv: u64,
    /// Batches sent.
    pub batches_sent: u64,
}

/// `1 - (remaining + 1) / (size + 1)`: 0 for an empty queue, near 1 for a full one.
pub fn backpressure(size: u64, remaining: u64) -> f64 {
    let remaining = remaining.min(size);
    1.0 - (remaining as f64 + 1.0) / (size as f64 + 1.0)
}

/// One operator subtask as the probe sees it now.
#[derive(Clone, Debug, PartialEq)]
pub struct SubtaskReading {
    /// The logical node's index in its graph.
    pub node: usize,
    /// The operator's name for metrics: the node's name, with `-<node>` added when two nodes share it.
    pub operator: String,
    /// The subtask index.
    pub subtask: usize,
    /// The operator's parallelism.
    pub parallelism: usize,
    /// The counters.
    pub counters: Counters,
    /// Rows the task's input queue holds at most (0 for a node chained behind another, and for a source).
    pub queue_size: u64,
    /// Rows it can take now.
    pub queue_remaining: u64,
    /// The maximum over the queues the task sends into (see the module doc).
    pub backpressure: f64,
    /// Whether it is a source (the pipeline's input).
    pub source: bool,
    /// Whether it sends to no other task and is the last of its chain (the pipeline's output).
    pub sink: bool,
}

/// What the probe keeps of one task.
pub(crate) struct TaskProbe {
    /// `(node, operator name, counters)` for each node of the chain, upstream first.
    pub(crate) nodes: Vec<(usize, String, Arc<NodeCounters>)>,
    pub(crate) subtask: usize,
    pub(crate) parallelism: usize,
    /// The task's input queue (`None` for a source task).
    pub(crate) inbox: Option<Arc<RowQueue>>,
    /// The queues the task sends into.
    pub(crate) outs: Vec<Arc<RowQueue>>,
}

/// A cheap, cloneable view of a running pipeline's counters and queues.
#[derive(Clone)]
pub struct PipelineProbe {
    pub(crate) tasks: Arc<Vec<TaskProbe>>,
}

impl std::fmt::Debug for PipelineProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineProbe").field("tasks", &self.tasks.len()).finish()
    }
}

impl PipelineProbe {
    /// Reads every operator subtask, ordered by node then subtask.
    pub fn read(&self) -> Vec<SubtaskReading> {
        let mut out = Vec::new();
        for t in self.tasks.iter() {
            let bp = t
                .outs
                .iter()
                .map(|q| {
                    let size = q.capacity() as u64;
                    backpressure(size, size.saturating_sub(q.rows() as u64))
                })
                .fold(0.0f64, f64::max);
            let last = t.nodes.len().saturating_sub(1);
            for (i, (node, name, c)) in t.nodes.iter().enumerate() {
                let (queue_size, queue_remaining) = match (&t.inbox, i) {
                    (Some(q), 0) => {
                        let size = q.capacity() as u64;
                        (size, size.saturating_sub(q.rows() as u64))
                    }
                    _ => (0, 0),
                };
                out.push(SubtaskReading {
                    node: *node,
                    operator: name.clone(),
                    subtask: t.subtask,
                    parallelism: t.parallelism,
                    counters: c.load(),
                    queue_size,
                    queue_remaining,
                    backpressure: bp,
                    source: i == 0 && t.inbox.is_none(),
                    sink: i == last && t.outs.is_empty(),
                });
            }
        }
        out.sort_by_key(|r| (r.node, r.subtask));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backpressure_formula() {
        assert_eq!(backpressure(0, 0), 0.0);
        assert_eq!(backpressure(9, 9), 0.0);
        assert!((backpressure(9, 0) - 0.9).abs() < 1e-12);
        assert!((backpressure(3, 1) - 0.5).abs() < 1e-12);
        // More remaining than size (a stale reading) is clamped, never negative.
        assert_eq!(backpressure(3, 7), 0.0);
    }
}
