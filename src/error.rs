//! The error of the public API. Layer errors convert into it; it is rendered once, at the edge.

use crate::keys::KeyError;
use crate::storage::{MetricConfig, StorageError};

/// Any error of silt's public API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage engine failed (I/O, corruption, read-only after a failure, closed).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A name or key is not valid.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A metric that was never declared.
    #[error("unknown metric {0:?}")]
    UnknownMetric(String),
    /// A metric declared again with another configuration.
    #[error("metric {name:?} is already declared as {existing:?}, not {requested:?}")]
    MetricConflict {
        /// The metric.
        name: String,
        /// Its configuration.
        existing: MetricConfig,
        /// What was asked for.
        requested: MetricConfig,
    },
    /// A query is not valid (unknown metric, bad range or resolution, no aggregation).
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    /// Reading or writing an archive file failed.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    /// An argument is out of its range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}
