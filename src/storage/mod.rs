//! The storage engine: WAL segments, the mmapped head, manifests, checkpoint and recovery.
//!
//! This layer knows series only by [`SeriesId`] and never names a client (server, stream engine, jobs).

pub mod block;
pub mod check;
pub mod codec;
pub mod engine;
pub mod error;
pub mod head;
#[allow(clippy::len_without_is_empty)]
pub mod io;
pub mod manifest;
pub mod state;
pub mod wal;

pub use engine::{Engine, EngineOptions, MergePolicy, RecoveryReport, WriteAck, WriteOutcome};
pub use error::{CorruptionKind, StorageError};
/// Dense id of an interned series (path + metric). Ids are assigned in order from 0 and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(pub u32);

/// Log sequence number: the position of a record in the write-ahead log, from 1, without gaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Lsn(pub u64);

/// How samples of one metric at one level combine with their siblings when a query aggregates them (the
/// rules are in the query module's docs).
///
/// Stored as one byte in the WAL and the manifest: 0 = `None`, 1 = `Sum`, 2 = `Avg`, 3 = `Max`, 4 = `Min`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Aggregation {
    /// Do not aggregate: a query that would need to is an error.
    None,
    /// Add the children's values (a step where one child has no value is NaN).
    Sum,
    /// Average the children's values (a step where one child has no value is NaN).
    Avg,
    /// The largest of the children's values at each step, over the children that have one there (NaN only
    /// where none has).
    Max,
    /// The smallest of the children's values at each step, over the children that have one there (NaN only
    /// where none has).
    Min,
}

impl Aggregation {
    /// Every aggregation, in the order of their on-disk bytes.
    pub const ALL: [Aggregation; 5] =
        [Aggregation::None, Aggregation::Sum, Aggregation::Avg, Aggregation::Max, Aggregation::Min];

    /// The name configs, specs and the command line use: `none`, `sum`, `avg`, `max` or `min`.
    pub fn name(self) -> &'static str {
        match self {
            Aggregation::None => "none",
            Aggregation::Sum => "sum",
            Aggregation::Avg => "avg",
            Aggregation::Max => "max",
            Aggregation::Min => "min",
        }
    }

    /// The aggregation [`Aggregation::name`] gives `name` (exactly, lower case), if any.
    pub fn from_name(name: &str) -> Option<Aggregation> {
        Aggregation::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl std::fmt::Display for Aggregation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// A name that is not an aggregation's ([`Aggregation::from_name`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown aggregation {0:?} (expected \"none\", \"sum\", \"avg\", \"max\" or \"min\")")]
pub struct UnknownAggregation(pub String);

impl std::str::FromStr for Aggregation {
    type Err = UnknownAggregation;

    fn from_str(s: &str) -> Result<Aggregation, UnknownAggregation> {
        Aggregation::from_name(s).ok_or_else(|| UnknownAggregation(s.to_owned()))
    }
}

/// A metric's configuration: its sampling frequency and how it aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MetricConfig {
    /// Seconds between two samples; timestamps snap to this grid. Must be at least 1.
    pub frequency: i64,
    /// How to combine children when a level lacks the metric.
    pub aggregation: Aggregation,
}

/// When a write is acknowledged relative to the WAL reaching the disk. Chosen per database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Durability {
    /// fsync the WAL before acknowledging every batch (group commit shares one fsync among the batches
    /// that arrive together).
    Sync,
    /// Acknowledge once the WAL is written to the OS; fsync at most this many milliseconds later.
    IntervalMs(u64),
    /// Never fsync the WAL except at checkpoints and on close.
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregation_names_round_trip_and_unknown_names_list_the_accepted_ones() {
        let names: Vec<&str> = Aggregation::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(names, ["none", "sum", "avg", "max", "min"]);
        for a in Aggregation::ALL {
            assert_eq!(a.name().parse::<Aggregation>(), Ok(a));
            assert_eq!(a.to_string(), a.name());
        }
        for bad in ["", "Max", "maximum", "mean", " max"] {
            let e = bad.parse::<Aggregation>().expect_err(bad);
            assert_eq!(e, UnknownAggregation(bad.to_owned()));
            let msg = e.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(names.iter().all(|n| msg.contains(&format!("\"{n}\""))), "{msg}");
        }
    }
}
