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

pub use engine::{Engine, EngineOptions, RecoveryReport, WriteAck, WriteOutcome};
pub use error::{CorruptionKind, StorageError};
/// Dense id of an interned series (path + metric). Ids are assigned in order from 0 and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(pub u32);

/// Log sequence number: the position of a record in the write-ahead log, from 1, without gaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Lsn(pub u64);

/// How samples of one metric at one level combine with their siblings when a query aggregates them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Aggregation {
    /// Do not aggregate: a query that would need to is an error.
    None,
    /// Add the children's values.
    Sum,
    /// Average the children's values.
    Avg,
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
