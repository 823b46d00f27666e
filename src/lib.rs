//! silt: an embedded time-series database for cluster and job metrics.
//!
//! The centre is the storage engine ([`storage`]): a write-ahead log of fixed-size segments, a head of
//! mmapped 4 KiB pages of 512 `f64`, and checkpoints that make the head durable so the log can be dropped.
//! Clients name series through the typed key space ([`keys`]) and reach the engine through [`Db`].
//!
//! ```no_run
//! use silt::{Db, Options, MetricConfig, Aggregation, HostKey, Batch};
//! # fn main() -> Result<(), silt::Error> {
//! let db = Db::open("data", Options::default())?;
//! db.declare_metric("cpu_load", MetricConfig { frequency: 60, aggregation: Aggregation::Avg })?;
//! let key = HostKey::new("emmy", "n0001")?.component("hwthread", 3)?;
//! let mut batch = Batch::new();
//! batch.push(&key, "cpu_load", 1_700_000_000, 0.5);
//! let ack = db.write(&batch)?;
//! let series = db.read(&key, "cpu_load", 1_700_000_000, 1_700_000_600)?;
//! # let _ = (ack, series);
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::needless_range_loop))]

pub mod archive;
pub mod db;
pub mod error;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod ingest;
pub mod jobs;
pub mod keys;
pub mod query;
pub mod server;
pub mod storage;
pub mod stream;
pub mod tap;

pub use db::{Batch, Db, Options, ReadResult, Stats, WriteAck, WriteOutcome};
pub use error::Error;
pub use keys::{HostKey, JobKey, Key, KeyError, ServiceKey};
pub use query::resample::Resampler;
pub use query::selector::{Selector, SelectorElement};
pub use query::{Padding, QueryError, QueryResult, ReadOptions, StatsResult};
pub use storage::Lsn;
pub use storage::{Aggregation, Durability, MetricConfig, SeriesId};
pub use tap::{TapBatch, WriteTap};
