//! The declarative form of a rollup pipeline: a small JSON document that [`PipelineSpec::build`] turns into a
//! [`LogicalGraph`], so that a rollup needs no Rust code (`silt serve` reads it from the config's
//! `"pipelines"` array or from `POST /api/pipelines`).
//!
//! # The form
//!
//! ```json
//! {
//!   "name": "cluster_load_5m",
//!   "source": { "kind": "scan", "metric": "cpu_load", "selector": ["emmy"],
//!               "from": 1700000000, "to": 1700086400 },
//!   "filter": { "min": 0.0, "max": 1e9 },
//!   "map": { "scale": 0.001, "offset": 0.0 },
//!   "group_by": "cluster",
//!   "window": { "width": 300, "slide": 300, "aggregate": "avg" },
//!   "sink": { "metric": "cpu_load_5m_avg", "frequency": 300, "aggregation": "avg" },
//!   "parallelism": 2,
//!   "checkpoint_interval_secs": 10
//! }
//! ```
//!
//! | Field | Meaning |
//! |-------|---------|
//! | `name` | The pipeline's name; a key name ([`validate_name`]). |
//! | `source.kind` | `"scan"`: the stored samples of `[from, to)`, then the pipeline ends. `"ingest"`: the live stream of writes (no `from`/`to`). |
//! | `source.metric` | The metric read; it must be declared when the pipeline is built. |
//! | `source.namespace` | Optional, `"host"` (default), `"job"` or `"service"`. |
//! | `source.selector` | cc-metric-store selector elements, top level first: a name, `"*"` (any name) or an array of names (any of them); at least one. Every series at or below the selected levels is read. |
//! | `filter` | Optional: keeps rows whose value `v` has `min ≤ v ≤ max` (either bound optional), tested on the value as read. |
//! | `map` | Optional: the value becomes `v * scale + offset` (defaults 1 and 0), after the filter. |
//! | `group_by` | `"cluster"` (the first path segment), `"host"` (the first two), `"series"` (the whole path) or `{"level": N}` (the first `N`, `1 ≤ N ≤ 8`). A series with fewer than `N` segments belongs to no group and is left out. |
//! | `window.width` | Window length in seconds, `> 0`. |
//! | `window.slide` | Optional, seconds between window starts, `1..=width`, with `ceil(width / slide)` at most [`MAX_WINDOWS_PER_ROW`] (the windows each row falls in); defaults to `width` (tumbling windows). Windows start at multiples of `slide` (unix time); sliding windows at the edges of a scan's range hold only the part inside it. |
//! | `window.aggregate` | `"count"`, `"sum"`, `"avg"`, `"min"`, `"max"` or `"last"`. |
//! | `sink.metric` | The metric written, one sample per group and window at the group's path, at the window's start. It must differ from `source.metric`. Declared if missing; an error if declared with another frequency (or another aggregation, when `aggregation` is given). |
//! | `sink.frequency` | Optional, the sink metric's frequency in seconds; defaults to `slide`. It must divide `slide`, so every window start is a slot of its own. |
//! | `sink.aggregation` | Optional, how the sink metric combines children (`"sum"`, `"avg"`, `"max"`, `"min"`, `"none"`); defaults to `"sum"` for `count`/`sum` and `"avg"` otherwise. |
//! | `parallelism` | Optional, subtasks per operator, `1..=64`; defaults to 1. |
//! | `checkpoint_interval_secs` | Optional, seconds between checkpoints (`> 0`); for the runtime that runs the graph. |
//!
//! Unknown fields are errors (a typo is never silently ignored). Parse errors carry serde's message with its
//! line and column; the semantic checks of [`PipelineSpec::validate`] name the field (`window.slide`, …).
//!
//! # The graph
//!
//! `source → key → (shuffle by key) → window → sink`, every node at `parallelism`; the key operator is
//! chained with the source. The key operator ([`GroupKeyOperator`]) turns each row's `series` text into
//! the group path, applies the filter and the map, and emits `(key, time, value)` for
//! [`TumblingWindow`]; the sink ([`StoreSink`]) writes the window's aggregate at the group path.
//!
//! # Keys
//!
//! A group's window key is [`group_key`]: the 64-bit FNV-1a hash of the group path's canonical text form
//! (`host:emmy`), as an `i64`. It depends on nothing but those bytes, so it is the same in every process
//! and every release: a window state checkpointed by one process is read correctly by the next. The key
//! operator fills a [`KeyDictionary`] (key → path) shared with the sink of the same graph, and keeps the
//! entries it added in its checkpoint state: a restored window may emit a key before the key operator sees
//! that group again, so restoring the key operator refills the dictionary. Two groups whose keys collide, or
//! a key the sink cannot find, fail the pipeline with a [`StreamError`]; neither panics.
//!
//! # Locks
//!
//! The dictionary is one `RwLock` per built graph: written by the key operators once per new group and on
//! restore, read by the sinks once per run of equal keys in a batch.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use parking_lot::RwLock;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use super::graph::{EdgeKind, LogicalGraph, LogicalNode, NodeKind};
use super::operators::{Aggregate, Collector, Operator, TumblingWindow};
use super::store::{scan_schema, ScanSource, StoreSink};
use super::StreamError;
use crate::keys::{validate_name, Namespace, SeriesPath, MAX_SEGMENTS};
use crate::query::selector::{Selector, SelectorElement};
use crate::storage::{Aggregation, MetricConfig};
use crate::Db;

/// The most subtasks per operator a spec may ask for.
pub const MAX_PARALLELISM: i64 = 64;

/// The most windows one row may fall in, `ceil(width / slide)`: a sliding window operator adds every row to
/// each of its windows, so an unbounded ratio is unbounded work and memory per row (a day at a slide of
/// 10 s is 8,640).
pub const MAX_WINDOWS_PER_ROW: i64 = 10_000;

/// Why a pipeline spec was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The text is not a spec: bad JSON, a missing or unknown field, a value of the wrong type, an unknown
    /// name in a field with a fixed set of names. `message` is serde's (it names the field where serde
    /// knows it).
    #[error("invalid pipeline spec at line {line}, column {column}: {message}")]
    Json {
        /// 1-based line (0 when the spec was not read from text).
        line: usize,
        /// 1-based column (0 when the spec was not read from text).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A field's value is out of its range or otherwise unusable.
    #[error("{field}: {problem}")]
    Invalid {
        /// Dotted path of the field (`window.slide`, `source.selector[1]`).
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// A metric the pipeline reads is not declared in the database.
    #[error("{field}: unknown metric {metric:?}")]
    UnknownMetric {
        /// The field naming it (`source.metric`).
        field: &'static str,
        /// The metric.
        metric: String,
    },
    /// The sink metric is declared with another configuration than the spec asks for.
    #[error("sink.metric: {metric:?} is already declared as {existing:?}, not {requested:?}")]
    SinkConflict {
        /// The metric.
        metric: String,
        /// Its configuration.
        existing: MetricConfig,
        /// What the spec asks for.
        requested: MetricConfig,
    },
    /// The database refused to declare the sink metric.
    #[error("sink.metric: cannot declare {metric:?}: {source}")]
    Declare {
        /// The metric.
        metric: String,
        /// Why.
        #[source]
        source: crate::Error,
    },
    /// The spec is valid but asks for something this build cannot run yet.
    #[error("not supported yet: {0}")]
    Unsupported(String),
    /// Two pipelines of one configuration have the same name.
    #[error("pipelines[{index}]: a pipeline named {name:?} is already defined")]
    DuplicateName {
        /// Index of the second one in the `pipelines` array.
        index: usize,
        /// The name.
        name: String,
    },
    /// A pipeline of the configuration's `pipelines` array is refused.
    #[error("pipelines[{index}]: {source}")]
    InConfig {
        /// Its index in the array.
        index: usize,
        /// Why.
        #[source]
        source: Box<SpecError>,
    },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> SpecError {
    SpecError::Invalid { field: field.into(), problem: problem.into() }
}

fn json_error(e: serde_json::Error) -> SpecError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    SpecError::Json { line: e.line(), column: e.column(), message }
}

/// A declarative rollup pipeline (see the [module documentation](self) for the JSON form).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// The pipeline's name (a key name).
    pub name: String,
    /// What it reads.
    pub source: SourceSpec,
    /// Which rows it keeps (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterSpec>,
    /// A derived value (the value as read when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<MapSpec>,
    /// Which level of the path its groups are.
    pub group_by: GroupBy,
    /// The windows and their aggregate.
    pub window: WindowSpec,
    /// Where the aggregates are written.
    pub sink: SinkSpec,
    /// Subtasks per operator, `1..=`[`MAX_PARALLELISM`].
    #[serde(default = "one")]
    pub parallelism: i64,
    /// Seconds between checkpoints (positive), for the runtime; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval_secs: Option<i64>,
}

fn one() -> i64 {
    1
}

/// Whether a source reads stored samples once or follows the live writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// The stored samples of a time range (`"scan"`); the pipeline ends after them.
    Scan,
    /// The live stream of writes (`"ingest"`); the pipeline runs until stopped.
    Ingest,
}

/// What a pipeline reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// `"scan"` or `"ingest"`.
    #[serde(with = "source_kind")]
    pub kind: SourceKind,
    /// The metric read.
    pub metric: String,
    /// The selector's namespace (`"host"` when absent).
    #[serde(default = "host_namespace", with = "namespace")]
    pub namespace: Namespace,
    /// Selector elements, top level first.
    pub selector: Vec<SelectorPart>,
    /// Start of the scanned range (unix seconds, inclusive); scan only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    /// End of the scanned range (unix seconds, exclusive); scan only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
}

fn host_namespace() -> Namespace {
    Namespace::Host
}

/// One selector element in JSON: a name (`"n01"`), any name (`"*"`), or any of several names
/// (`["n01", "n02"]`), as cc-metric-store writes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectorPart(pub SelectorElement);

impl Serialize for SelectorPart {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            SelectorElement::Name(n) => s.serialize_str(n),
            SelectorElement::Any => s.serialize_str("*"),
            SelectorElement::Group(g) => {
                let mut seq = s.serialize_seq(Some(g.len()))?;
                for n in g {
                    seq.serialize_element(n)?;
                }
                seq.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for SelectorPart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SelectorPart;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a selector element (a name, \"*\", or an array of names)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SelectorPart, E> {
                Ok(SelectorPart(if v == "*" { SelectorElement::Any } else { SelectorElement::Name(v.to_owned()) }))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SelectorPart, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<String>()? {
                    names.push(n);
                }
                Ok(SelectorPart(SelectorElement::Group(names)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Which rows a pipeline keeps: those with `min ≤ value ≤ max` (a missing bound does not limit).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Smallest value kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest value kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl FilterSpec {
    /// Whether a value is kept (never NaN).
    pub fn keeps(&self, v: f64) -> bool {
        !v.is_nan() && self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }
}

/// A derived value: `value * scale + offset`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapSpec {
    /// Factor (1 when absent).
    #[serde(default = "one_f64")]
    pub scale: f64,
    /// Added after scaling (0 when absent).
    #[serde(default)]
    pub offset: f64,
}

fn one_f64() -> f64 {
    1.0
}

impl MapSpec {
    /// The derived value.
    pub fn apply(&self, v: f64) -> f64 {
        v * self.scale + self.offset
    }
}

/// Which level of a series' path is its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// The first segment (`"cluster"`).
    Cluster,
    /// The first two segments (`"host"`).
    Host,
    /// The whole path (`"series"`).
    Series,
    /// The first `N` segments (`{"level": N}`).
    Level(i64),
}

impl GroupBy {
    /// Segments kept, `None` for the whole path.
    pub fn depth(&self) -> Option<usize> {
        match *self {
            GroupBy::Cluster => Some(1),
            GroupBy::Host => Some(2),
            GroupBy::Series => None,
            GroupBy::Level(n) => usize::try_from(n).ok(),
        }
    }

    /// The group of a series, `None` if its path is shallower than the group level.
    pub fn group_of(&self, path: &SeriesPath) -> Option<SeriesPath> {
        match self.depth() {
            None => Some(path.clone()),
            Some(n) if n >= 1 && path.segments().len() >= n => {
                if n == path.segments().len() {
                    return Some(path.clone());
                }
                // A prefix of a valid path is valid (1..=n segments, each already checked).
                SeriesPath::new(path.namespace(), path.segments()[..n].to_vec()).ok()
            }
            Some(_) => None,
        }
    }
}

impl Serialize for GroupBy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            GroupBy::Cluster => s.serialize_str("cluster"),
            GroupBy::Host => s.serialize_str("host"),
            GroupBy::Series => s.serialize_str("series"),
            GroupBy::Level(n) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("level", n)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for GroupBy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GroupBy;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("group_by: \"cluster\", \"host\", \"series\" or {\"level\": N}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GroupBy, E> {
                match v {
                    "cluster" => Ok(GroupBy::Cluster),
                    "host" => Ok(GroupBy::Host),
                    "series" => Ok(GroupBy::Series),
                    other => Err(E::custom(format!(
                        "group_by: unknown grouping {other:?} (expected \"cluster\", \"host\", \"series\" or {{\"level\": N}})"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GroupBy, A::Error> {
                let mut level = None;
                while let Some(k) = map.next_key::<String>()? {
                    if k != "level" {
                        return Err(de::Error::custom(format!("group_by: unknown field `{k}`, expected `level`")));
                    }
                    if level.is_some() {
                        return Err(de::Error::custom("group_by: duplicate field `level`"));
                    }
                    level = Some(map.next_value::<i64>()?);
                }
                level.map(GroupBy::Level).ok_or_else(|| de::Error::custom("group_by: missing field `level`"))
            }
        }
        d.deserialize_any(V)
    }
}

/// The windows and their aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Window length in seconds (positive).
    pub width: i64,
    /// Seconds between window starts, `1..=width` (`width` when absent: tumbling windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide: Option<i64>,
    /// The aggregate of each window's values.
    #[serde(with = "aggregate")]
    pub aggregate: Aggregate,
}

impl WindowSpec {
    /// The slide, `width` when not given.
    pub fn slide(&self) -> i64 {
        self.slide.unwrap_or(self.width)
    }
}

/// Where the aggregates are written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// The metric written.
    pub metric: String,
    /// Its frequency in seconds (the window slide when absent); must divide the slide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<i64>,
    /// How it combines children (from the window's aggregate when absent).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "aggregation")]
    pub aggregation: Option<Aggregation>,
}

/// serde for [`SourceKind`] with an error that names the field.
mod source_kind {
    use super::*;

    pub fn serialize<S: Serializer>(k: &SourceKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match k {
            SourceKind::Scan => "scan",
            SourceKind::Ingest => "ingest",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SourceKind, D::Error> {
        match String::deserialize(d)?.as_str() {
            "scan" => Ok(SourceKind::Scan),
            "ingest" => Ok(SourceKind::Ingest),
            other => {
                Err(de::Error::custom(format!("source.kind: unknown kind {other:?} (expected \"scan\" or \"ingest\")")))
            }
        }
    }
}

/// serde for [`Namespace`] by its text-form name.
mod namespace {
    use super::*;

    pub fn serialize<S: Serializer>(n: &Namespace, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(n.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Namespace, D::Error> {
        let name = String::deserialize(d)?;
        Namespace::from_name(&name).ok_or_else(|| {
            de::Error::custom(format!(
                "source.namespace: unknown namespace {name:?} (expected \"host\", \"job\" or \"service\")"
            ))
        })
    }
}

/// serde for the window's [`Aggregate`] by name.
mod aggregate {
    use super::*;

    pub fn name(a: Aggregate) -> &'static str {
        match a {
            Aggregate::Count => "count",
            Aggregate::Sum => "sum",
            Aggregate::Avg => "avg",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Last => "last",
        }
    }

    pub fn serialize<S: Serializer>(a: &Aggregate, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name(*a))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Aggregate, D::Error> {
        let all = [Aggregate::Count, Aggregate::Sum, Aggregate::Avg, Aggregate::Min, Aggregate::Max, Aggregate::Last];
        let s = String::deserialize(d)?;
        all.into_iter().find(|a| name(*a) == s).ok_or_else(|| {
            de::Error::custom(format!(
                "window.aggregate: unknown aggregate {s:?} (expected \"count\", \"sum\", \"avg\", \"min\", \"max\" or \"last\")"
            ))
        })
    }
}

/// serde for the sink metric's optional [`Aggregation`] by name.
mod aggregation {
    use super::*;

    pub fn serialize<S: Serializer>(a: &Option<Aggregation>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            None => s.serialize_none(),
            Some(a) => s.serialize_str(a.name()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Aggregation>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(name) => name.parse().map(Some).map_err(|e| de::Error::custom(format_args!("sink.aggregation: {e}"))),
        }
    }
}

impl PipelineSpec {
    /// Parses and validates a spec from JSON text. A parse error keeps serde's message, line and column.
    pub fn from_json(text: &str) -> Result<PipelineSpec, SpecError> {
        let spec: PipelineSpec = serde_json::from_str(text).map_err(json_error)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parses and validates a spec from a JSON value (one element of a config's `pipelines` array). Its
    /// errors have no line or column.
    pub fn from_value(value: &serde_json::Value) -> Result<PipelineSpec, SpecError> {
        let spec = PipelineSpec::deserialize(value).map_err(json_error)?;
        spec.validate()?;
        Ok(spec)
    }

    /// The source's selector.
    pub fn selector(&self) -> Result<Selector, SpecError> {
        Selector::new(self.source.namespace, self.source.selector.iter().map(|p| p.0.clone()).collect())
            .map_err(|e| invalid("source.selector", e.to_string()))
    }

    /// The sink metric's configuration: its frequency (the slide unless given) and aggregation (sum for a
    /// count or sum, avg otherwise, unless given).
    pub fn sink_config(&self) -> MetricConfig {
        let aggregation = self.sink.aggregation.unwrap_or(match self.window.aggregate {
            Aggregate::Count | Aggregate::Sum => Aggregation::Sum,
            _ => Aggregation::Avg,
        });
        MetricConfig { frequency: self.sink.frequency.unwrap_or_else(|| self.window.slide()), aggregation }
    }

    /// The checkpoint interval, if the spec asks for checkpoints.
    pub fn checkpoint_interval(&self) -> Option<std::time::Duration> {
        self.checkpoint_interval_secs.and_then(|s| u64::try_from(s).ok()).map(std::time::Duration::from_secs)
    }

    /// Checks every field that does not need the database; the error names the first bad field.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_name("pipeline name", &self.name).map_err(|e| invalid("name", e.to_string()))?;
        let s = &self.source;
        validate_name("metric", &s.metric).map_err(|e| invalid("source.metric", e.to_string()))?;
        if s.selector.is_empty() {
            return Err(invalid("source.selector", "is empty (use [\"*\"] for every top level)"));
        }
        if s.selector.len() > MAX_SEGMENTS {
            return Err(invalid(
                "source.selector",
                format!("{} elements, more than the limit of {MAX_SEGMENTS}", s.selector.len()),
            ));
        }
        for (i, part) in s.selector.iter().enumerate() {
            let field = format!("source.selector[{i}]");
            match &part.0 {
                SelectorElement::Name(n) => {
                    validate_name("selector element", n).map_err(|e| invalid(&field, e.to_string()))?
                }
                SelectorElement::Group(g) if g.is_empty() => {
                    return Err(invalid(field, "an empty group matches nothing"))
                }
                SelectorElement::Group(g) => {
                    for n in g {
                        validate_name("selector group name", n).map_err(|e| invalid(&field, e.to_string()))?;
                    }
                }
                SelectorElement::Any => {}
            }
        }
        match s.kind {
            SourceKind::Scan => {
                let from = s.from.ok_or_else(|| invalid("source.from", "required for a scan"))?;
                let to = s.to.ok_or_else(|| invalid("source.to", "required for a scan"))?;
                if from >= to {
                    return Err(invalid("source.from", format!("from {from} is not before to {to}")));
                }
            }
            SourceKind::Ingest => {
                if s.from.is_some() || s.to.is_some() {
                    let field = if s.from.is_some() { "source.from" } else { "source.to" };
                    return Err(invalid(field, "an ingest source has no time range"));
                }
            }
        }
        if let Some(f) = &self.filter {
            if let (Some(min), Some(max)) = (f.min, f.max) {
                if min > max {
                    return Err(invalid("filter.min", format!("min {min} is above max {max}")));
                }
            }
        }
        if let Some(m) = &self.map {
            if !m.scale.is_finite() {
                return Err(invalid("map.scale", "must be finite"));
            }
            if !m.offset.is_finite() {
                return Err(invalid("map.offset", "must be finite"));
            }
        }
        if let GroupBy::Level(n) = self.group_by {
            if !(1..=MAX_SEGMENTS as i64).contains(&n) {
                return Err(invalid("group_by.level", format!("{n} is not in 1..={MAX_SEGMENTS}")));
            }
        }
        let w = &self.window;
        if w.width <= 0 {
            return Err(invalid("window.width", format!("{} is not positive", w.width)));
        }
        if let Some(slide) = w.slide {
            if !(1..=w.width).contains(&slide) {
                return Err(invalid("window.slide", format!("{slide} is not in 1..={} (the width)", w.width)));
            }
            let per_row = (w.width - 1) / slide + 1;
            if per_row > MAX_WINDOWS_PER_ROW {
                return Err(invalid(
                    "window.slide",
                    format!(
                        "a slide of {slide} in a width of {} puts each row in {per_row} windows, more than the limit \
                         of {MAX_WINDOWS_PER_ROW}",
                        w.width
                    ),
                ));
            }
        }
        validate_name("metric", &self.sink.metric).map_err(|e| invalid("sink.metric", e.to_string()))?;
        if self.sink.metric == s.metric {
            return Err(invalid(
                "sink.metric",
                "must differ from source.metric (the rollup would overwrite its input)",
            ));
        }
        if let Some(f) = self.sink.frequency {
            let slide = w.slide();
            if f < 1 || slide % f != 0 {
                return Err(invalid("sink.frequency", format!("{f} does not divide the window slide {slide}")));
            }
        }
        if !(1..=MAX_PARALLELISM).contains(&self.parallelism) {
            return Err(invalid("parallelism", format!("{} is not in 1..={MAX_PARALLELISM}", self.parallelism)));
        }
        if let Some(c) = self.checkpoint_interval_secs {
            if c <= 0 {
                return Err(invalid("checkpoint_interval_secs", format!("{c} is not positive")));
            }
        }
        Ok(())
    }

    /// Validates the spec against `db` and builds its graph: the source metric must be declared, and the sink
    /// metric is declared here if it is not (an error if it is, with another frequency, or another aggregation
    /// when the spec names one). Run the graph with [`super::runtime::start`].
    pub fn build(&self, db: Arc<Db>) -> Result<LogicalGraph, SpecError> {
        self.validate()?;
        let selector = self.selector()?;
        if db.metric(&self.source.metric).is_none() {
            return Err(SpecError::UnknownMetric { field: "source.metric", metric: self.source.metric.clone() });
        }
        let wanted = self.sink_config();
        if let Some(existing) = db.metric(&self.sink.metric) {
            let aggregation_differs = self.sink.aggregation.is_some_and(|a| a != existing.aggregation);
            if existing.frequency != wanted.frequency || aggregation_differs {
                return Err(SpecError::SinkConflict { metric: self.sink.metric.clone(), existing, requested: wanted });
            }
        }
        let source: super::graph::SourceFactory = match self.source.kind {
            SourceKind::Scan => {
                let (db, metric) = (db.clone(), self.source.metric.clone());
                // validate() made both present for a scan.
                let (from, to) = (self.source.from.unwrap_or_default(), self.source.to.unwrap_or_default());
                Arc::new(move |s, p| Box::new(ScanSource::new(db.clone(), &selector, &metric, from, to, s, p)))
            }
            SourceKind::Ingest => {
                let (db, metric) = (db.clone(), self.source.metric.clone());
                Arc::new(move |s, p| match super::live::LiveSource::new(db.clone(), &selector, &metric, s, p) {
                    Ok(src) => Box::new(src),
                    // The factory cannot fail; the source's first poll reports why it could not start.
                    Err(e) => Box::new(FailedSource(Some(e))),
                })
            }
        };
        if db.metric(&self.sink.metric).is_none() {
            db.declare_metric(&self.sink.metric, wanted).map_err(|e| match e {
                crate::Error::MetricConflict { existing, requested, .. } => {
                    SpecError::SinkConflict { metric: self.sink.metric.clone(), existing, requested }
                }
                source => SpecError::Declare { metric: self.sink.metric.clone(), source },
            })?;
        }

        let p = usize::try_from(self.parallelism).unwrap_or(1);
        let dictionary = KeyDictionary::default();
        let mut g = LogicalGraph::new();
        let src = g.add(LogicalNode {
            name: "source".into(),
            parallelism: p,
            input_schema: None,
            output_schema: Some(scan_schema()),
            kind: NodeKind::Source(source),
        });
        let (group_by, filter, map, dict) = (self.group_by, self.filter, self.map, dictionary.clone());
        let key = g.add(LogicalNode {
            name: "key".into(),
            parallelism: p,
            input_schema: Some(scan_schema()),
            output_schema: Some(TumblingWindow::input_schema()),
            kind: NodeKind::Operator(Arc::new(move |_, _| {
                Box::new(GroupKeyOperator::new(group_by, filter, map, dict.clone()))
            })),
        });
        let (width, slide, agg) = (self.window.width, self.window.slide(), self.window.aggregate);
        let win = g.add(LogicalNode {
            name: "window".into(),
            parallelism: p,
            input_schema: Some(TumblingWindow::input_schema()),
            output_schema: Some(TumblingWindow::output_schema()),
            kind: NodeKind::Operator(Arc::new(move |_, _| {
                Box::new(if slide == width {
                    TumblingWindow::new(width, agg, "key", "time", "value")
                } else {
                    TumblingWindow::sliding(width, slide, agg, "key", "time", "value")
                })
            })),
        });
        let (sink_metric, pipeline) = (self.sink.metric.clone(), self.name.clone());
        let sink = g.add(LogicalNode {
            name: "sink".into(),
            parallelism: p,
            input_schema: Some(TumblingWindow::output_schema()),
            output_schema: None,
            kind: NodeKind::Operator(Arc::new(move |_, _| {
                let (dict, pipeline) = (dictionary.clone(), pipeline.clone());
                Box::new(StoreSink {
                    db: db.clone(),
                    metric: sink_metric.clone(),
                    columns: ["key".into(), "window_start".into(), "value".into()],
                    key_of: Arc::new(move |k| {
                        dict.get(k).ok_or_else(|| {
                            StreamError::Operator(format!(
                                "pipeline {pipeline:?}: window key {k} names no known group \
                                 (the key operator's dictionary lacks it: was its state restored?)"
                            ))
                        })
                    }),
                })
            })),
        });
        g.connect(src, key, EdgeKind::Forward);
        g.connect(key, win, EdgeKind::Shuffle { key: "key".into() });
        g.connect(win, sink, EdgeKind::Forward);
        Ok(g)
    }
}

/// A source that could not be made: its first poll fails with the reason.
struct FailedSource(Option<StreamError>);

impl super::operators::Source for FailedSource {
    fn poll(&mut self) -> Result<super::operators::SourcePoll, StreamError> {
        Err(self.0.take().unwrap_or_else(|| StreamError::Operator("the source could not start".into())))
    }
}

/// Reads the `"pipelines"` array of silt's JSON config (absent or `null`: none). Each element is a
/// [`PipelineSpec`], validated; names must be unique. Errors name the element (`pipelines[2]: …`).
pub fn pipelines_from_config(config: &serde_json::Value) -> Result<Vec<PipelineSpec>, SpecError> {
    let list = match config.get("pipelines") {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Array(a)) => a,
        Some(_) => return Err(invalid("pipelines", "expected an array of pipeline specs")),
    };
    let mut out: Vec<PipelineSpec> = Vec::with_capacity(list.len());
    for (index, v) in list.iter().enumerate() {
        let spec = PipelineSpec::from_value(v).map_err(|e| SpecError::InConfig { index, source: Box::new(e) })?;
        if out.iter().any(|s| s.name == spec.name) {
            return Err(SpecError::DuplicateName { index, name: spec.name });
        }
        out.push(spec);
    }
    Ok(out)
}

/// The window key of a group: the 64-bit FNV-1a hash (offset basis `0xcbf29ce484222325`, prime
/// `0x100000001b3`) of the path's canonical text form (`host:emmy`), reinterpreted as an `i64`. It depends
/// only on those bytes, so it is stable across processes and releases (checkpointed window state holds it).
pub fn group_key(path: &SeriesPath) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// Window key → group path, shared by the key operators (which fill it) and the sinks (which read it) of one
/// built graph. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct KeyDictionary(Arc<RwLock<HashMap<i64, SeriesPath>>>);

impl KeyDictionary {
    /// The group path of a key.
    pub fn get(&self, key: i64) -> Option<SeriesPath> {
        self.0.read().get(&key).cloned()
    }

    /// Records a key's path; a key already recorded for another path (a hash collision) is an error.
    pub fn insert(&self, key: i64, path: &SeriesPath) -> Result<(), StreamError> {
        if let Some(p) = self.0.read().get(&key) {
            return check_same(key, p, path);
        }
        let mut map = self.0.write();
        match map.get(&key) {
            Some(p) => check_same(key, p, path),
            None => {
                map.insert(key, path.clone());
                Ok(())
            }
        }
    }

    /// Keys recorded.
    pub fn len(&self) -> usize {
        self.0.read().len()
    }

    /// Whether no key is recorded.
    pub fn is_empty(&self) -> bool {
        self.0.read().is_empty()
    }
}

fn check_same(key: i64, have: &SeriesPath, new: &SeriesPath) -> Result<(), StreamError> {
    if have == new {
        Ok(())
    } else {
        Err(StreamError::Operator(format!("groups {have} and {new} have the same window key {key}")))
    }
}

/// Version byte of [`GroupKeyOperator`]'s checkpoint state.
const KEY_STATE_VERSION: u8 = 1;

/// The key operator of a built pipeline: reads [`scan_schema`] rows (`series` text, `time`, `value`), keeps
/// those the filter keeps and whose path has a group, applies the map, and emits
/// [`TumblingWindow::input_schema`] rows `(group_key(group), time, value)`, recording each group in the
/// shared [`KeyDictionary`] before emitting its first row.
///
/// Its checkpoint state is the groups it recorded, so that [`Operator::restore`] refills the dictionary:
///
/// ```text
/// u8 version (1) | u32 count | count × ( i64 key | u16 len | len bytes: SeriesPath::encode )
/// ```
///
/// all little-endian. Restoring checks every length, every path and that each key is its path's
/// [`group_key`]; anything else is a [`StreamError`].
pub struct GroupKeyOperator {
    group_by: GroupBy,
    filter: Option<FilterSpec>,
    map: Option<MapSpec>,
    dictionary: KeyDictionary,
    /// The groups this subtask recorded (its checkpoint state).
    seen: BTreeMap<i64, SeriesPath>,
    /// The last series text and its key (`None`: the series has no group), since a batch is usually one series.
    last: Option<(String, Option<i64>)>,
    /// Rows left out because their series' path is shallower than the group level.
    pub ungrouped: u64,
}

impl GroupKeyOperator {
    /// A key operator recording into `dictionary`.
    pub fn new(
        group_by: GroupBy,
        filter: Option<FilterSpec>,
        map: Option<MapSpec>,
        dictionary: KeyDictionary,
    ) -> GroupKeyOperator {
        GroupKeyOperator { group_by, filter, map, dictionary, seen: BTreeMap::new(), last: None, ungrouped: 0 }
    }

    fn key_of(&mut self, series: &str) -> Result<Option<i64>, StreamError> {
        if let Some((s, k)) = &self.last {
            if s == series {
                return Ok(*k);
            }
        }
        let path: SeriesPath = series.parse().map_err(|e| StreamError::Operator(format!("series {series:?}: {e}")))?;
        let key = match self.group_by.group_of(&path) {
            None => None,
            Some(group) => {
                let k = group_key(&group);
                if !self.seen.contains_key(&k) {
                    self.dictionary.insert(k, &group)?;
                    self.seen.insert(k, group);
                }
                Some(k)
            }
        };
        self.last = Some((series.to_owned(), key));
        Ok(key)
    }
}

impl Operator for GroupKeyOperator {
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut dyn Collector) -> Result<(), StreamError> {
        let col = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| StreamError::Operator(format!("key operator: no column {name:?}")))
        };
        let series = col("series")?.as_any().downcast_ref::<StringArray>();
        let times = col("time")?.as_any().downcast_ref::<Int64Array>();
        let values = col("value")?.as_any().downcast_ref::<Float64Array>();
        let (Some(series), Some(times), Some(values)) = (series, times, values) else {
            return Err(StreamError::Operator("key operator wants Utf8 series, Int64 time, Float64 value".into()));
        };
        let n = batch.num_rows();
        let (mut keys, mut ts, mut vs) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            let v = values.value(i);
            if values.is_null(i) || v.is_nan() || self.filter.is_some_and(|f| !f.keeps(v)) {
                continue;
            }
            let Some(k) = self.key_of(series.value(i))? else {
                self.ungrouped += 1;
                continue;
            };
            keys.push(k);
            ts.push(times.value(i));
            vs.push(self.map.map_or(v, |m| m.apply(v)));
        }
        if keys.is_empty() {
            return Ok(());
        }
        let cols: Vec<ArrayRef> =
            vec![Arc::new(Int64Array::from(keys)), Arc::new(Int64Array::from(ts)), Arc::new(Float64Array::from(vs))];
        out.emit(RecordBatch::try_new(TumblingWindow::input_schema(), cols)?)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, StreamError> {
        let mut s = vec![KEY_STATE_VERSION];
        let count = u32::try_from(self.seen.len())
            .map_err(|_| StreamError::Operator(format!("key operator: {} groups", self.seen.len())))?;
        s.extend_from_slice(&count.to_le_bytes());
        let mut buf = Vec::new();
        for (k, path) in &self.seen {
            buf.clear();
            path.encode(&mut buf);
            // An encoded path is at most MAX_ENCODED_LEN (1034) bytes.
            let len = u16::try_from(buf.len())
                .map_err(|_| StreamError::Operator(format!("key operator: path {path} encodes too long")))?;
            s.extend_from_slice(&k.to_le_bytes());
            s.extend_from_slice(&len.to_le_bytes());
            s.extend_from_slice(&buf);
        }
        Ok(s)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), StreamError> {
        if state.is_empty() {
            return Ok(());
        }
        let bad = |why: String| StreamError::Operator(format!("key operator state: {why}"));
        let mut r = state;
        let mut take = |n: usize, what: &str| -> Result<&[u8], StreamError> {
            if r.len() < n {
                return Err(bad(format!("truncated in {what}")));
            }
            let (head, rest) = r.split_at(n);
            r = rest;
            Ok(head)
        };
        let version = take(1, "the version")?[0];
        if version != KEY_STATE_VERSION {
            return Err(bad(format!("version {version}, want {KEY_STATE_VERSION}")));
        }
        let count = u32::from_le_bytes(take(4, "the count")?.try_into().unwrap_or_default());
        let mut entries = Vec::new();
        for i in 0..count {
            let key = i64::from_le_bytes(take(8, "a key")?.try_into().unwrap_or_default());
            let len = u16::from_le_bytes(take(2, "a length")?.try_into().unwrap_or_default());
            let bytes = take(usize::from(len), "a path")?;
            let (path, used) = SeriesPath::decode(bytes).map_err(|e| bad(format!("entry {i}: {e}")))?;
            if used != bytes.len() {
                return Err(bad(format!("entry {i}: {} bytes after the path", bytes.len() - used)));
            }
            if group_key(&path) != key {
                return Err(bad(format!("entry {i}: key {key} is not the key of {path}")));
            }
            entries.push((key, path));
        }
        if !r.is_empty() {
            return Err(bad(format!("{} bytes after the last entry", r.len())));
        }
        for (key, path) in entries {
            self.dictionary.insert(key, &path)?;
            self.seen.insert(key, path);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_key_is_fnv1a_of_the_text_form() {
        // FNV-1a 64 of "host:emmy", computed independently.
        let p: SeriesPath = "host:emmy".parse().expect("path");
        let mut h: u64 = 0xcbf29ce484222325;
        for b in b"host:emmy" {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
        assert_eq!(group_key(&p), h as i64);
        // Pinned, so a change of algorithm (which would orphan checkpointed window state) fails here.
        assert_eq!(group_key(&"host:a".parse().expect("path")), 0x673b_a774_564f_1cca_u64 as i64);
    }

    #[test]
    fn groups_are_path_prefixes() {
        let p: SeriesPath = "host:emmy/n1/cpu0".parse().expect("path");
        assert_eq!(GroupBy::Cluster.group_of(&p).map(|g| g.to_string()).as_deref(), Some("host:emmy"));
        assert_eq!(GroupBy::Host.group_of(&p).map(|g| g.to_string()).as_deref(), Some("host:emmy/n1"));
        assert_eq!(GroupBy::Series.group_of(&p), Some(p.clone()));
        assert_eq!(GroupBy::Level(3).group_of(&p), Some(p.clone()));
        assert_eq!(GroupBy::Level(4).group_of(&p), None);
    }

    #[test]
    fn restore_refuses_bad_state() {
        let mut op = GroupKeyOperator::new(GroupBy::Cluster, None, None, KeyDictionary::default());
        assert!(op.restore(&[2, 0, 0, 0, 0]).is_err());
        assert!(op.restore(&[1, 1, 0, 0, 0]).is_err());
        let p: SeriesPath = "host:emmy".parse().expect("path");
        let mut s = vec![1, 1, 0, 0, 0];
        s.extend_from_slice(&(group_key(&p) ^ 1).to_le_bytes());
        let b = p.to_bytes();
        s.extend_from_slice(&(b.len() as u16).to_le_bytes());
        s.extend_from_slice(&b);
        assert!(op.restore(&s).is_err(), "a key that is not its path's hash");
    }
}
