//! Logical and physical dataflow graphs.
//!
//! A [`LogicalGraph`] is operators (nodes) with a parallelism each, joined by edges that are *forward*
//! (subtask `i` to subtask `i`, both sides of equal parallelism) or *shuffle* (every upstream subtask to
//! every downstream subtask, rows partitioned by the hash of a key column). [`LogicalGraph::validate`]
//! rejects what cannot run before anything starts: cycles, a forward edge between different parallelisms,
//! a schema that differs across an edge, a shuffle key the schema lacks, a source with inputs or an
//! operator without. [`PhysicalPlan::of`] expands it into tasks, one per subtask of each *chain*: forward
//! edges between equal parallelisms where the upstream has one output and the downstream one input are
//! fused, so their operators run on one thread and pass batches by a function call (Arroyo's chaining).

use std::sync::Arc;

use arrow_schema::SchemaRef;

use super::operators::{Operator, Source};

/// How an edge moves batches between the subtasks of its two ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EdgeKind {
    /// Subtask `i` to subtask `i`; both ends need the same parallelism.
    Forward,
    /// Every upstream subtask to every downstream subtask, each row to subtask `hash(key) % parallelism`.
    Shuffle {
        /// The column hashed (an `Int64`, `UInt32` or `Utf8` column of the upstream's output schema).
        key: String,
    },
}

/// An edge of a logical graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// Upstream node.
    pub from: usize,
    /// Downstream node.
    pub to: usize,
    /// Forward or shuffle.
    pub kind: EdgeKind,
}

/// Makes the operator of one subtask: `(subtask, parallelism)`.
pub type OperatorFactory = Arc<dyn Fn(usize, usize) -> Box<dyn Operator> + Send + Sync>;
/// Makes the source of one subtask: `(subtask, parallelism)`.
pub type SourceFactory = Arc<dyn Fn(usize, usize) -> Box<dyn Source> + Send + Sync>;

/// What a node runs.
#[derive(Clone)]
pub enum NodeKind {
    /// Produces batches; has no inputs.
    Source(SourceFactory),
    /// Takes batches from its inputs and emits batches (a sink emits none).
    Operator(OperatorFactory),
}

/// A node of a logical graph.
#[derive(Clone)]
pub struct LogicalNode {
    /// Name, for errors and metrics.
    pub name: String,
    /// Subtasks.
    pub parallelism: usize,
    /// The schema of the batches it takes (`None` for a source).
    pub input_schema: Option<SchemaRef>,
    /// The schema of the batches it emits (`None` for a sink).
    pub output_schema: Option<SchemaRef>,
    /// What it runs.
    pub kind: NodeKind,
}

impl std::fmt::Debug for LogicalNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogicalNode").field("name", &self.name).field("parallelism", &self.parallelism).finish()
    }
}

/// Why a graph cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    /// The graph has no nodes.
    #[error("the graph is empty")]
    Empty,
    /// An edge names a node that does not exist.
    #[error("edge {from} -> {to} names a node that does not exist")]
    UnknownNode {
        /// Upstream index.
        from: usize,
        /// Downstream index.
        to: usize,
    },
    /// A node has parallelism 0.
    #[error("node {0:?} has parallelism 0")]
    ZeroParallelism(String),
    /// The edges form a cycle through these nodes.
    #[error("the graph has a cycle through {0:?}")]
    Cycle(Vec<String>),
    /// A forward edge joins nodes of different parallelism.
    #[error("forward edge {from:?} -> {to:?} joins parallelism {from_parallelism} to {to_parallelism}")]
    ForwardParallelism {
        /// Upstream name.
        from: String,
        /// Downstream name.
        to: String,
        /// Upstream parallelism.
        from_parallelism: usize,
        /// Downstream parallelism.
        to_parallelism: usize,
    },
    /// The upstream's output schema differs from the downstream's input schema.
    #[error("edge {from:?} -> {to:?}: output schema {output} does not match input schema {input}")]
    SchemaMismatch {
        /// Upstream name.
        from: String,
        /// Downstream name.
        to: String,
        /// What the upstream emits.
        output: String,
        /// What the downstream takes.
        input: String,
    },
    /// A shuffle key is not a hashable column of the upstream's output.
    #[error("edge {from:?} -> {to:?}: shuffle key {key:?} is not an Int64, UInt32 or Utf8 column of {schema}")]
    BadKey {
        /// Upstream name.
        from: String,
        /// Downstream name.
        to: String,
        /// The key.
        key: String,
        /// The upstream's output schema.
        schema: String,
    },
    /// A source has an input, or an operator has none, or a node that emits nothing has an output.
    #[error("node {name:?}: {why}")]
    BadShape {
        /// The node.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// Nodes and edges, as a user builds them.
#[derive(Clone, Debug, Default)]
pub struct LogicalGraph {
    /// The nodes; an edge names them by index.
    pub nodes: Vec<LogicalNode>,
    /// The edges.
    pub edges: Vec<Edge>,
}

fn schema_text(s: &Option<SchemaRef>) -> String {
    match s {
        None => "none".into(),
        Some(s) => {
            let fields: Vec<String> = s.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect();
            format!("[{}]", fields.join(", "))
        }
    }
}

impl LogicalGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node; returns its index.
    pub fn add(&mut self, node: LogicalNode) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Adds an edge.
    pub fn connect(&mut self, from: usize, to: usize, kind: EdgeKind) {
        self.edges.push(Edge { from, to, kind });
    }

    /// Checks that the graph can run; returns its nodes in a topological order.
    pub fn validate(&self) -> Result<Vec<usize>, GraphError> {
        if self.nodes.is_empty() {
            return Err(GraphError::Empty);
        }
        let name = |i: usize| self.nodes[i].name.clone();
        for e in &self.edges {
            if e.from >= self.nodes.len() || e.to >= self.nodes.len() {
                return Err(GraphError::UnknownNode { from: e.from, to: e.to });
            }
        }
        for n in &self.nodes {
            if n.parallelism == 0 {
                return Err(GraphError::ZeroParallelism(n.name.clone()));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let inputs = self.edges.iter().filter(|e| e.to == i).count();
            let outputs = self.edges.iter().filter(|e| e.from == i).count();
            let why = match (&n.kind, inputs, outputs) {
                (NodeKind::Source(_), k, _) if k > 0 => Some("a source cannot have inputs"),
                (NodeKind::Operator(_), 0, _) => Some("an operator needs an input"),
                _ if n.output_schema.is_none() && outputs > 0 => Some("a node without an output schema has outputs"),
                _ => None,
            };
            if let Some(why) = why {
                return Err(GraphError::BadShape { name: n.name.clone(), why });
            }
        }
        // Kahn's algorithm: what is left over lies on a cycle.
        let mut indegree: Vec<usize> =
            (0..self.nodes.len()).map(|i| self.edges.iter().filter(|e| e.to == i).count()).collect();
        let mut ready: Vec<usize> = (0..self.nodes.len()).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(i) = ready.pop() {
            order.push(i);
            for e in self.edges.iter().filter(|e| e.from == i) {
                indegree[e.to] -= 1;
                if indegree[e.to] == 0 {
                    ready.push(e.to);
                }
            }
        }
        if order.len() < self.nodes.len() {
            let stuck = (0..self.nodes.len()).filter(|i| !order.contains(i)).map(name).collect();
            return Err(GraphError::Cycle(stuck));
        }
        for e in &self.edges {
            let (a, b) = (&self.nodes[e.from], &self.nodes[e.to]);
            if e.kind == EdgeKind::Forward && a.parallelism != b.parallelism {
                return Err(GraphError::ForwardParallelism {
                    from: a.name.clone(),
                    to: b.name.clone(),
                    from_parallelism: a.parallelism,
                    to_parallelism: b.parallelism,
                });
            }
            if a.output_schema != b.input_schema {
                return Err(GraphError::SchemaMismatch {
                    from: a.name.clone(),
                    to: b.name.clone(),
                    output: schema_text(&a.output_schema),
                    input: schema_text(&b.input_schema),
                });
            }
            if let EdgeKind::Shuffle { key } = &e.kind {
                let ok = a.output_schema.as_ref().and_then(|s| s.field_with_name(key).ok()).is_some_and(|f| {
                    matches!(
                        f.data_type(),
                        arrow_schema::DataType::Int64 | arrow_schema::DataType::UInt32 | arrow_schema::DataType::Utf8
                    )
                });
                if !ok {
                    return Err(GraphError::BadKey {
                        from: a.name.clone(),
                        to: b.name.clone(),
                        key: key.clone(),
                        schema: schema_text(&a.output_schema),
                    });
                }
            }
        }
        Ok(order)
    }
}

/// A chain of logical nodes that runs as one task per subtask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The nodes, upstream first.
    pub nodes: Vec<usize>,
    /// Their common parallelism.
    pub parallelism: usize,
}

/// A task: one subtask of one chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskId {
    /// Index into [`PhysicalPlan::chains`].
    pub chain: usize,
    /// Subtask index.
    pub subtask: usize,
}

/// The physical form of a validated graph: chains, and the edges between them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhysicalPlan {
    /// Chains in topological order.
    pub chains: Vec<Chain>,
    /// Logical edges that were not chained: `(from chain, to chain, edge index)`.
    pub links: Vec<(usize, usize, usize)>,
}

impl PhysicalPlan {
    /// Plans a graph (validating it first).
    pub fn of(g: &LogicalGraph) -> Result<PhysicalPlan, GraphError> {
        let order = g.validate()?;
        let outs = |i: usize| g.edges.iter().filter(|e| e.from == i).count();
        let ins = |i: usize| g.edges.iter().filter(|e| e.to == i).count();
        // An edge is chained when it is forward between equal parallelisms and is its ends' only link.
        let chained = |e: &Edge| {
            e.kind == EdgeKind::Forward
                && g.nodes[e.from].parallelism == g.nodes[e.to].parallelism
                && outs(e.from) == 1
                && ins(e.to) == 1
        };
        let mut chain_of = vec![usize::MAX; g.nodes.len()];
        let mut chains: Vec<Chain> = Vec::new();
        for &i in &order {
            let upstream = g.edges.iter().find(|e| e.to == i && chained(e)).map(|e| e.from);
            match upstream {
                Some(u) => {
                    let c = chain_of[u];
                    chains[c].nodes.push(i);
                    chain_of[i] = c;
                }
                None => {
                    chain_of[i] = chains.len();
                    chains.push(Chain { nodes: vec![i], parallelism: g.nodes[i].parallelism });
                }
            }
        }
        let links = g
            .edges
            .iter()
            .enumerate()
            .filter(|(_, e)| !chained(e))
            .map(|(k, e)| (chain_of[e.from], chain_of[e.to], k))
            .collect();
        Ok(PhysicalPlan { chains, links })
    }

    /// Every task, chain by chain.
    pub fn tasks(&self) -> Vec<TaskId> {
        self.chains
            .iter()
            .enumerate()
            .flat_map(|(c, ch)| (0..ch.parallelism).map(move |s| TaskId { chain: c, subtask: s }))
            .collect()
    }
}
