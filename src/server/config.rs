//! cc-metric-store's `config.json`, so `silt serve --config config.json` reads the same file.
//!
//! # Layout
//!
//! cc-metric-store 1.5 (with cc-backend's `pkg/metricstore` and cc-lib's `ccConfig`/`nats`) reads four
//! top-level sections, each of which may instead be read from a file named by `<section>-file`
//! (`"metrics-file": "./metrics.json"`; ccConfig's rule, so only `main-file`, `metrics-file` and `nats-file`:
//! `metric-store-file` is not a thing there and is not here). Relative paths, here as everywhere in the
//! file, are relative to the working directory, as in cc-metric-store.
//!
//! ```json
//! {
//!   "main": { "addr": "0.0.0.0:8082", "https-cert-file": "", "https-key-file": "", "user": "", "group": "",
//!             "backend-url": "", "debug": { "dump-to-file": "", "gops": false }, "jwt-public-key": "…" },
//!   "metrics": { "cpu_load": { "frequency": 60, "aggregation": null } },
//!   "metric-store": {
//!     "num-workers": 0, "retention-in-memory": "48h", "checkpoint-interval": "12h", "memory-cap": 100,
//!     "checkpoints": { "file-format": "wal", "directory": "./var/checkpoints", "max-wal-size": 0 },
//!     "debug": { "dump-to-file": "", "gops": false },
//!     "cleanup": { "mode": "archive", "directory": "./var/archive" },
//!     "nats-subscriptions": [ { "subscribe-to": "hpc-nats", "cluster-tag": "fritz" } ]
//!   },
//!   "nats": { "address": "nats://0.0.0.0:4222", "username": "root", "password": "root", "creds-file-path": "" }
//! }
//! ```
//!
//! Required, as cc-metric-store requires them: the sections `main`, `metrics` and `metric-store`;
//! `main.addr` (cc-metric-store would listen on a random port without it); in each metric `frequency` and
//! `aggregation` (`null` for none); `metric-store.retention-in-memory` and `metric-store.memory-cap`;
//! `subscribe-to` in each subscription; `cleanup.directory` in archive mode; `nats.address` when `nats` is
//! given. A JSON `null` counts as absent (Go leaves the default in place), and an empty string in an optional
//! string field means "not set", as in cc-metric-store.
//!
//! The older layout of cc-metric-store ≤ 0.x (top-level `http-api`, `checkpoints`, `archive`,
//! `retention-in-memory`, `jwt-public-key`, `debug`, and `nats` as a list of servers with their own
//! `subscriptions`; the repository's `configs/config-nats.json` is one) is read too and mapped onto the same
//! [`Config`]: see [`ConfigLayout::Legacy`].
//!
//! # Stricter than cc-metric-store
//!
//! - Unknown keys are rejected at every level, top level included (ccConfig ignores unknown top-level
//!   sections, and a bad key in `nats` only makes cc-metric-store warn), with the dotted path of the key:
//!   `unknown key "metric-store.checkpoints.dirctory"`. Keys match exactly (Go's `encoding/json` also matches
//!   them case-insensitively, so it would take `"Addr"`).
//! - An unknown aggregation is an error naming the metric (cc-metric-store warns and uses none); `""` is
//!   none, as there. silt also knows `"max"` and `"min"` (cc-metric-store only `"sum"` and `"avg"`).
//! - A bad `checkpoint-interval` is an error (cc-metric-store logs it and uses 12h); `retention-in-memory`
//!   and `checkpoint-interval` must be positive (a zero makes Go's ticker panic).
//! - `memory-cap`, `num-workers`, `max-wal-size` must not be negative; `frequency` must be in
//!   `1..=`[`MAX_FREQUENCY`] and metric names must pass
//!   [`validate_name`]; `checkpoints.file-format` must be `json`, `wal` or `avro`
//!   (cc-backend 1.5 knows `json` and `wal`; `avro` is what older versions wrote).
//! - Anything after the JSON value is an error (Go's decoder reads the first value and stops).
//!
//! # What silt uses
//!
//! Used: `main.addr`, the TLS files (`https-cert-file`, `https-key-file`), `jwt-public-key`, `metrics`,
//! `metric-store.retention-in-memory`, `memory-cap`, `checkpoint-interval` and `checkpoints.directory`
//! (the data directory: [`Config::data_dir`]; see [`Config::db_options`]), `cleanup` (long-term retention,
//! below), `nats` and
//! `nats-subscriptions`; and silt's own `metric-store.page-slots` (the head page class of a new data directory,
//! [`DEFAULT_SERVER_PAGE_SLOTS`] when absent), `metric-store.max-series` (a cardinality limit,
//! [`DEFAULT_SERVER_MAX_SERIES`] when absent, 0 for none) and `metric-store.block-retention` (below), and
//! `main.write-workers` (how many `/api/write`
//! bodies are decoded at once; [`crate::server::default_write_workers`] when absent or 0). Kept but ignored by silt for now (each field's documentation says so):
//! `user`/`group`, `backend-url`, both `debug` sections, `num-workers`, `checkpoints.file-format` and
//! `max-wal-size`.
//!
//! # Long-term retention
//!
//! Data older than `retention-in-memory` leaves silt's head for compacted block files on disk (so does data
//! the memory cap pushes out). cc-metric-store's cleanup worker deletes (`"mode": "delete"`, its default) or
//! archives to Parquet in `cleanup.directory` (`"mode": "archive"`) what is older than
//! `retention-in-memory` on disk; silt does the same with its blocks
//! ([`Options::block_retention`](crate::Options::block_retention) and
//! [`Options::archive_dir`](crate::Options::archive_dir), enforced by the maintenance thread). silt's own
//! `metric-store.block-retention` (a positive Go duration) keeps blocks longer than that; it may not be
//! shorter than `retention-in-memory` (an error naming both keys). One deliberate difference: with no
//! `cleanup` section (or `"cleanup": null`) cc-metric-store deletes, silt keeps the blocks for ever unless
//! `block-retention` is given (then it deletes them past it): silt does not delete data the file did not ask
//! it to. The whole mapping is in [`Config::db_options`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::keys::validate_name;
use crate::storage::head::MAX_FREQUENCY;
use crate::storage::{Aggregation, MetricConfig};

/// The data directory when the file names none (cc-metric-store's own default, `./var/checkpoints`, is not
/// used: silt's files are not cc-metric-store's checkpoints).
pub const DEFAULT_DATA_DIR: &str = "./silt-data";

/// The most `main.write-workers` accepted (each is a thread of tokio's blocking pool at most).
pub const MAX_WRITE_WORKERS: usize = 256;

/// The address [`Config::default_loopback`] listens on.
pub const DEFAULT_LOOPBACK_ADDR: &str = "127.0.0.1:8082";

/// Bytes per unit of `memory-cap`: cc-backend compares it with `runtime.MemStats.Alloc / 1e9`, so GB.
pub const MEMORY_CAP_UNIT: u64 = 1_000_000_000;

/// The longest duration accepted, as in Go (`time.Duration` is an `i64` of nanoseconds: about 292 years).
const MAX_DURATION_NANOS: u128 = i64::MAX as u128;

/// A configuration error; its message names the offending key by its dotted path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not JSON.
    #[error("{}invalid JSON at line {line}, column {column}: {message}", path_prefix(path))]
    Json {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A key this layout does not know.
    #[error("unknown key \"{}\"", dotted(section, key))]
    UnknownKey {
        /// Dotted path of the object holding the key (`metric-store.checkpoints`); empty at the top level.
        section: String,
        /// The key.
        key: String,
    },
    /// A value of the wrong type, out of range, missing, or otherwise unusable.
    #[error("{}{message}", field_prefix(field))]
    Invalid {
        /// Dotted path of the field (`metric-store.retention-in-memory`); empty when there is none (the top
        /// level, or [`parse_duration`] on its own).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn path_prefix(path: &Option<PathBuf>) -> String {
    path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default()
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

fn dotted(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_owned()
    } else {
        format!("{section}.{key}")
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), message: message.into() }
}

/// Which layout a file was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConfigLayout {
    /// cc-metric-store 1.5: sections `main`, `metrics`, `metric-store`, `nats`.
    #[default]
    Current,
    /// cc-metric-store ≤ 0.x (`configs/config-nats.json`), recognised by a top-level `http-api`,
    /// `checkpoints`, `archive`, `retention-in-memory`, `jwt-public-key` or `debug`, or a `nats` list, with
    /// no `main` or `metric-store`. Mapped as: `http-api.{address,https-cert-file,https-key-file}` →
    /// `main.{addr,…}`; `jwt-public-key`, `debug` → `main.…`; `retention-in-memory` → `metric-store.…`;
    /// `checkpoints.{interval,directory,file-format}` → `metric-store.{checkpoint-interval,checkpoints.…}`;
    /// `archive.{directory,delete-instead}` → `metric-store.cleanup` (mode `delete` when `delete-instead`);
    /// `archive.interval` → `metric-store.block-retention` (cc-metric-store ≤ 0.x deleted or archived the
    /// checkpoints older than it; so it too may not be shorter than `retention-in-memory`);
    /// the one `nats` server → `nats`, its `subscriptions` → `metric-store.nats-subscriptions`. Checked and
    /// dropped (no counterpart in 1.5): `checkpoints.restore` (a duration). More
    /// than one NATS server is an error. `memory-cap` is 0 (no cap) and `num-workers` 0 (automatic).
    Legacy,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The `main` section: the HTTP server.
    pub main: MainConfig,
    /// The `metrics` section: every metric the server accepts, by name.
    pub metrics: BTreeMap<String, MetricSpec>,
    /// The `metric-store` section: retention, memory, persistence, NATS subscriptions.
    pub metric_store: MetricStoreConfig,
    /// The `nats` section, if any: the NATS server to subscribe through (see [`crate::server::nats`]).
    pub nats: Option<NatsConfig>,
    /// The `pipelines` section (a silt extension): stream pipelines in their declarative form
    /// ([`crate::stream::spec`]), started with the server.
    pub pipelines: Vec<crate::stream::spec::PipelineSpec>,
    /// The layout the file was written in.
    pub layout: ConfigLayout,
}

/// The `main` section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MainConfig {
    /// `addr`: `host:port` to listen on (`:8082` listens on every interface, as in Go). Checked for a port at
    /// load time; resolved by [`MainConfig::listen_addr`].
    pub addr: String,
    /// `https-cert-file`: with `https-key-file`, serve HTTPS (PEM files; see [`crate::server::tls`]).
    pub https_cert_file: Option<PathBuf>,
    /// `https-key-file`: see `https_cert_file`.
    pub https_key_file: Option<PathBuf>,
    /// `user`: drop privileges to this user after binding. Ignored by silt.
    pub user: Option<String>,
    /// `group`: drop privileges to this group after binding. Ignored by silt.
    pub group: Option<String>,
    /// `backend-url`: cc-backend, asked which nodes run jobs (their buffers outlive retention). Ignored by
    /// silt.
    pub backend_url: Option<String>,
    /// `debug`. Ignored by silt.
    pub debug: DebugConfig,
    /// `jwt-public-key`: base64 Ed25519 key that verifies API tokens (see [`crate::server::auth`]).
    pub jwt_public_key: Option<String>,
    /// `write-workers` (a silt extension): how many `/api/write` bodies are decoded at once (on as many
    /// threads of lower priority), at least 1; `None` (absent, or 0) for
    /// [`crate::server::default_write_workers`]. Writes admitted beyond it wait without using CPU, so that
    /// reads keep a core under an overload (see [`crate::server::WriteWorkers`]).
    pub write_workers: Option<usize>,
}

impl MainConfig {
    /// The certificate and key file when both are set, the condition under which cc-metric-store (and
    /// silt) serves HTTPS.
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        Some((self.https_cert_file.as_deref()?, self.https_key_file.as_deref()?))
    }

    /// Resolves `addr` to the first socket address it names; an empty host (`:8082`) is `0.0.0.0`.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        let field = "main.addr";
        let addr = if self.addr.starts_with(':') { format!("0.0.0.0{}", self.addr) } else { self.addr.clone() };
        let mut addrs =
            addr.to_socket_addrs().map_err(|e| invalid(field, format!("cannot resolve {:?}: {e}", self.addr)))?;
        addrs.next().ok_or_else(|| invalid(field, format!("{:?} resolves to no address", self.addr)))
    }
}

/// A `debug` object (in `main`, and in `metric-store`). Ignored by silt.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DebugConfig {
    /// `dump-to-file`: where to dump the internal state.
    pub dump_to_file: Option<PathBuf>,
    /// `gops`: run the gops agent.
    pub gops: bool,
}

/// One entry of the `metrics` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricSpec {
    /// `frequency`: seconds between samples, at least 1.
    pub frequency: i64,
    /// `aggregation`: `"sum"`, `"avg"`, `"max"`, `"min"`, or `null` / `""` for [`Aggregation::None`].
    pub aggregation: Aggregation,
}

impl MetricSpec {
    /// The storage engine's form of this metric.
    pub fn metric_config(&self) -> MetricConfig {
        MetricConfig { frequency: self.frequency, aggregation: self.aggregation }
    }
}

/// The `metric-store` section.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricStoreConfig {
    /// `num-workers`: checkpoint/archive workers, 0 (or absent) for automatic. Ignored by silt.
    pub num_workers: usize,
    /// `retention-in-memory` (required, positive): how long samples stay in memory.
    pub retention_in_memory: Duration,
    /// `checkpoint-interval`: time between checkpoints; `None` when absent (cc-metric-store then uses 12h,
    /// [`Config::db_options`] keeps silt's default).
    pub checkpoint_interval: Option<Duration>,
    /// `memory-cap` (required) in GB of 10^9 bytes; 0 is no cap. See [`Self::memory_cap_bytes`].
    pub memory_cap: u64,
    /// `checkpoints`.
    pub checkpoints: CheckpointsConfig,
    /// `debug`. Ignored by silt.
    pub debug: DebugConfig,
    /// `cleanup`: what happens to compacted blocks past the block retention, `None` when the file has no
    /// `cleanup` section (or `null`). With one, blocks older than `block_retention`, else than
    /// `retention-in-memory` (cc-metric-store's cleanup age), are deleted or archived; without one they are
    /// kept for ever unless `block_retention` is set. See [`Config::db_options`].
    pub cleanup: Option<CleanupConfig>,
    /// `block-retention` (a silt extension): how long compacted blocks are kept on disk, a positive Go
    /// duration no shorter than `retention-in-memory` (blocks hold what leaves memory, so a shorter one is an
    /// error naming both keys). `None` when absent. In the legacy layout, `archive.interval`.
    pub block_retention: Option<Duration>,
    /// `nats-subscriptions`: NATS subjects to ingest from (empty when absent).
    pub nats_subscriptions: Vec<NatsSubscription>,
    /// `page-slots` (a silt extension): values per head page of a new data directory, a power of two from 8
    /// to 512; default [`DEFAULT_SERVER_PAGE_SLOTS`]. An existing directory keeps its own.
    pub page_slots: u32,
    /// `max-series` (a silt extension): the most series the store may hold, a cardinality limit against
    /// runaway tags; a write that would define more is a 400. Default [`DEFAULT_SERVER_MAX_SERIES`]; 0 is
    /// no limit.
    pub max_series: u32,
}

/// The cardinality limit of `silt serve` unless `max-series` says otherwise: ten million series, about a
/// hundred times an 82-node cluster's 105,780 (head and catalog take ~1.5 KiB each, ~15 GB at the limit).
pub const DEFAULT_SERVER_MAX_SERIES: u32 = 10_000_000;

/// Head page class of a data directory `silt serve` creates: 64 values (512-byte pages), so that the page
/// every series being written keeps open costs 512 bytes rather than 4 KiB (52 MiB rather than 413 MiB for
/// the 105,780 series of an 82-node cluster), while a day at 60 s is still only 23 pages.
pub const DEFAULT_SERVER_PAGE_SLOTS: u32 = 64;

/// Bytes per WAL segment of `silt serve`. Segments are allocated in full when created and the newest is kept
/// after a checkpoint, so this is the WAL's floor on disk (16 MiB: under a second of the peer benchmark's
/// 4 M samples/s).
const SERVER_WAL_SEGMENT_BYTES: u64 = 16 << 20;

/// Bytes per head file of a data directory `silt serve` creates.
const SERVER_HEAD_FILE_BYTES: u32 = 16 << 20;

impl Default for MetricStoreConfig {
    /// No cap, 48h retention (the value cc-metric-store ships), everything else at cc-metric-store's default
    /// except the data directory, which is left unset, and `cleanup`, which is absent (blocks are kept for
    /// ever, where cc-metric-store would delete).
    fn default() -> Self {
        MetricStoreConfig {
            num_workers: 0,
            retention_in_memory: Duration::from_secs(48 * 3600),
            checkpoint_interval: None,
            memory_cap: 0,
            checkpoints: CheckpointsConfig::default(),
            debug: DebugConfig::default(),
            cleanup: None,
            block_retention: None,
            nats_subscriptions: Vec::new(),
            page_slots: DEFAULT_SERVER_PAGE_SLOTS,
            max_series: DEFAULT_SERVER_MAX_SERIES,
        }
    }
}

impl MetricStoreConfig {
    /// `memory-cap` in bytes (GB × 10^9, as cc-backend counts them); 0 is no cap, as in
    /// [`Options::memory_cap_bytes`](crate::Options::memory_cap_bytes). cc-metric-store caps the whole Go
    /// heap; silt caps its head pages, which are most of its memory.
    pub fn memory_cap_bytes(&self) -> u64 {
        self.memory_cap.saturating_mul(MEMORY_CAP_UNIT)
    }
}

/// `metric-store.checkpoints`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckpointsConfig {
    /// `file-format`: how cc-metric-store writes checkpoints. Accepted and ignored: silt has one format.
    pub file_format: CheckpointFormat,
    /// `directory`: cc-metric-store's checkpoint directory, silt's data directory ([`Config::data_dir`]).
    pub directory: Option<PathBuf>,
    /// `max-wal-size`: bytes per host WAL before forced rotation, 0 for no limit. Ignored by silt.
    pub max_wal_size: u64,
}

/// `metric-store.checkpoints.file-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointFormat {
    /// `"json"`.
    Json,
    /// `"wal"`, cc-metric-store's default.
    #[default]
    Wal,
    /// `"avro"` (cc-metric-store before 1.5).
    Avro,
}

/// `metric-store.cleanup` (in the legacy layout, `archive`): what happens to blocks past the block
/// retention ([`MetricStoreConfig::block_retention`], else `retention-in-memory`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CleanupConfig {
    /// `mode`: `"delete"` (the default) or `"archive"`.
    pub mode: CleanupMode,
    /// `directory`: where archive mode writes (required in that mode; ignored in delete mode, as in
    /// cc-metric-store). [`crate::Options::archive_dir`].
    pub directory: Option<PathBuf>,
}

/// `metric-store.cleanup.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CleanupMode {
    /// Delete blocks past the block retention.
    #[default]
    Delete,
    /// Archive them first, as Parquet files in `cleanup.directory` (cc-metric-store's long format, one file
    /// per cluster; see [`crate::export`]), then delete them.
    Archive,
}

/// One entry of `metric-store.nats-subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSubscription {
    /// `subscribe-to` (required): the subject.
    pub subscribe_to: String,
    /// `cluster-tag`: the cluster of lines without a `cluster` tag.
    pub cluster_tag: Option<String>,
}

/// The `nats` section. `Debug` does not print the password.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// `address` (required): `nats://host:port`.
    pub address: String,
    /// `username`.
    pub username: Option<String>,
    /// `password`.
    pub password: Option<String>,
    /// `creds-file-path`: a NATS credentials file.
    pub creds_file_path: Option<PathBuf>,
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("creds_file_path", &self.creds_file_path)
            .finish()
    }
}

impl Config {
    /// Parses a configuration. `<section>-file` keys are read relative to the working directory.
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        parse(text, None)
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read(path)?;
        parse(&text, Some(path))
    }

    /// What `silt serve` runs with when given no file: listen on `127.0.0.1:8082`, no metrics, data in
    /// `./silt-data`, 48h retention, no memory cap.
    pub fn default_loopback() -> Config {
        Config {
            main: MainConfig { addr: DEFAULT_LOOPBACK_ADDR.to_owned(), ..MainConfig::default() },
            metrics: BTreeMap::new(),
            metric_store: MetricStoreConfig::default(),
            nats: None,
            pipelines: Vec::new(),
            layout: ConfigLayout::Current,
        }
    }

    /// The data directory: `metric-store.checkpoints.directory`, else [`DEFAULT_DATA_DIR`].
    pub fn data_dir(&self) -> PathBuf {
        self.metric_store.checkpoints.directory.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    /// The metrics in the storage engine's form, by name.
    pub fn metric_configs(&self) -> Vec<(String, MetricConfig)> {
        self.metrics.iter().map(|(name, spec)| (name.clone(), spec.metric_config())).collect()
    }

    /// [`crate::Options::default`] with `retention` from `retention-in-memory`, `memory_cap_bytes` from
    /// `memory-cap`, `checkpoint_interval` from `checkpoint-interval` when the file sets it, the head's
    /// page class from `page-slots` (in 16 MiB files), and long-term retention from `cleanup` and
    /// `block-retention`:
    ///
    /// | `cleanup` | `block_retention` | `archive_dir` |
    /// | --- | --- | --- |
    /// | absent | `block-retention`, else `None` (kept for ever) | `None` |
    /// | `"mode": "delete"` | `block-retention`, else `retention-in-memory` | `None` |
    /// | `"mode": "archive"` | `block-retention`, else `retention-in-memory` | `cleanup.directory` |
    ///
    /// With a `cleanup` section this is cc-metric-store's behaviour (data older than `retention-in-memory`
    /// leaves the store). Without one, cc-metric-store deletes too; silt deliberately keeps the blocks: it does
    /// not delete data unless the file asks it to.
    pub fn db_options(&self) -> crate::Options {
        let ms = &self.metric_store;
        let mut opts = crate::Options {
            retention: Some(ms.retention_in_memory),
            memory_cap_bytes: ms.memory_cap_bytes(),
            page_slots: ms.page_slots,
            pages_per_file: SERVER_HEAD_FILE_BYTES / (8 * ms.page_slots),
            segment_size: SERVER_WAL_SEGMENT_BYTES,
            max_series: ms.max_series,
            ..crate::Options::default()
        };
        if let Some(interval) = ms.checkpoint_interval {
            opts.checkpoint_interval = Some(interval);
        }
        match &ms.cleanup {
            None => opts.block_retention = ms.block_retention,
            Some(cleanup) => {
                opts.block_retention = Some(ms.block_retention.unwrap_or(ms.retention_in_memory));
                if cleanup.mode == CleanupMode::Archive {
                    opts.archive_dir = cleanup.directory.clone();
                }
            }
        }
        opts
    }
}

/// Parses a Go duration (`time.ParseDuration`): a sequence of decimal numbers, each with an optional
/// fraction and a unit (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`), as in `"48h"`, `"1h30m"`, `"1.5h"`,
/// `"2h45m10.5s"`, `"500ms"`. A leading `+` is allowed and `"0"` needs no unit, as in Go; unlike Go, a `-`
/// is rejected (no negative durations). Fractions are truncated to whole nanoseconds, and the total may not
/// exceed Go's limit of 2^63−1 ns (about 292 years). No spaces; `""` is an error.
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    let err = |detail: &str| invalid("", format!("invalid duration {s:?}: {detail}"));
    if s.starts_with('-') {
        return Err(err("negative durations are not allowed"));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(err("empty"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        // The number: digits, optionally `.` and more digits; at least one digit either side.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after) = rest.split_at(int_len);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(err("expected a number"));
        }
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(err("missing unit")),
            other => return Err(err(&format!("unknown unit {other:?}"))),
        };
        let out_of_range = || err("out of range (at most 2562047h47m16.854775807s)");
        // 20 digits cannot overflow a u128 and more than 20 integer digits are out of range anyway.
        if int_digits.trim_start_matches('0').len() > 20 {
            return Err(out_of_range());
        }
        let int: u128 = if int_digits.is_empty() { 0 } else { int_digits.parse().map_err(|_| out_of_range())? };
        // Beyond 20 fraction digits nothing reaches a nanosecond, even in hours.
        let frac_digits = &frac_digits[..frac_digits.len().min(20)];
        let frac: u128 = if frac_digits.is_empty() { 0 } else { frac_digits.parse().map_err(|_| out_of_range())? };
        let scale = 10u128.pow(frac_digits.len() as u32);
        total = int
            .checked_mul(nanos_per_unit)
            .and_then(|v| v.checked_add(frac * nanos_per_unit / scale))
            .and_then(|v| v.checked_add(total))
            .filter(|&v| v <= MAX_DURATION_NANOS)
            .ok_or_else(out_of_range)?;
        rest = after;
    }
    Ok(Duration::from_nanos(total as u64))
}

// ---------------------------------------------------------------------------------------------------------
// Parsing.

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_owned(), source })
}

fn parse_value(text: &str, path: Option<&Path>) -> Result<Value, ConfigError> {
    serde_json::from_str(text).map_err(|e| {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
        ConfigError::Json { path: path.map(Path::to_owned), line: e.line(), column: e.column(), message }
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON object at a dotted path, with typed accessors whose errors name `path.key`.
struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    fn new(path: impl Into<String>, v: &'a Value) -> Result<Obj<'a>, ConfigError> {
        let path = path.into();
        match v {
            Value::Object(map) => Ok(Obj { path, map }),
            other => Err(invalid(path, format!("expected an object, found {}", kind(other)))),
        }
    }

    fn field(&self, key: &str) -> String {
        dotted(&self.path, key)
    }

    /// Rejects the first key (in sorted order) not in `allowed`.
    fn deny_unknown(&self, allowed: &[&str]) -> Result<(), ConfigError> {
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(key) => Err(ConfigError::UnknownKey { section: self.path.clone(), key: key.clone() }),
            None => Ok(()),
        }
    }

    /// The value, `None` when absent or `null`.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn required<T>(&self, key: &str, v: Option<T>) -> Result<T, ConfigError> {
        v.ok_or_else(|| invalid(self.field(key), "required but missing"))
    }

    fn wrong(&self, key: &str, expected: &str, v: &Value) -> ConfigError {
        invalid(self.field(key), format!("expected {expected}, found {}", kind(v)))
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    /// A string where `""` means "not set".
    fn opt_string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.str(key)?.filter(|s| !s.is_empty()).map(str::to_owned))
    }

    fn opt_path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.opt_string(key)?.map(PathBuf::from))
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong(key, "a boolean", v)),
        }
    }

    fn int(&self, key: &str) -> Result<Option<i64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
                let what = if n.is_u64() { "is too large" } else { "is not an integer" };
                invalid(self.field(key), format!("{n} {what}"))
            }),
            Some(v) => Err(self.wrong(key, "an integer", v)),
        }
    }

    fn non_negative(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.int(key)? {
            None => Ok(None),
            Some(i) => u64::try_from(i).map(Some).map_err(|_| invalid(self.field(key), format!("{i} is negative"))),
        }
    }

    fn obj(&self, key: &str) -> Result<Option<Obj<'a>>, ConfigError> {
        self.get(key).map(|v| Obj::new(self.field(key), v)).transpose()
    }

    fn array(&self, key: &str) -> Result<Option<&'a [Value]>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong(key, "an array", v)),
        }
    }

    /// A positive duration.
    fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        let Some(s) = self.str(key)? else { return Ok(None) };
        let d = parse_duration(s).map_err(|e| match e {
            ConfigError::Invalid { message, .. } => invalid(self.field(key), message),
            other => other,
        })?;
        if d.is_zero() {
            return Err(invalid(self.field(key), format!("duration {s:?} must be positive")));
        }
        Ok(Some(d))
    }
}

const CURRENT_SECTIONS: &[&str] = &[
    "main",
    "main-file",
    "metric-store",
    "metrics",
    "metrics-file",
    "nats",
    "nats-file",
    "pipelines",
    "pipelines-file",
];
const LEGACY_ONLY_SECTIONS: &[&str] =
    &["archive", "checkpoints", "debug", "http-api", "jwt-public-key", "retention-in-memory"];

fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
    let root = parse_value(text, path)?;
    let top = Obj::new("", &root).map_err(|_| invalid("", format!("expected a JSON object, found {}", kind(&root))))?;
    let current = ["main", "main-file", "metric-store"].iter().any(|k| top.map.contains_key(*k));
    let legacy = LEGACY_ONLY_SECTIONS.iter().any(|k| top.map.contains_key(*k))
        || matches!(top.map.get("nats"), Some(Value::Array(_)));
    if legacy && !current {
        parse_legacy(&top)
    } else {
        parse_current(&top)
    }
}

/// A top-level section, inline or from `<name>-file`; `None` when neither is there. The included text is
/// kept in `holder` so the returned value can borrow from it.
fn section<'a>(top: &Obj<'a>, name: &str, holder: &'a mut Option<Value>) -> Result<Option<&'a Value>, ConfigError> {
    let file_key = format!("{name}-file");
    match (top.get(name), top.map.get(&file_key)) {
        (Some(_), Some(_)) => Err(invalid(&file_key, format!("both \"{name}\" and \"{file_key}\" are given"))),
        (inline, None) => Ok(inline),
        (None, Some(v)) => {
            let Value::String(file) = v else { return Err(top.wrong(&file_key, "a string", v)) };
            let file = Path::new(file);
            *holder = Some(parse_value(&read(file)?, Some(file))?);
            Ok(holder.as_ref())
        }
    }
}

fn parse_current(top: &Obj<'_>) -> Result<Config, ConfigError> {
    top.deny_unknown(CURRENT_SECTIONS)?;
    let (mut main_holder, mut metrics_holder, mut nats_holder, mut pipelines_holder) = (None, None, None, None);
    let missing = |name: &str| invalid(name, "required section is missing");

    let main = section(top, "main", &mut main_holder)?.ok_or_else(|| missing("main"))?;
    let main = parse_main(&Obj::new("main", main)?)?;

    let metrics = section(top, "metrics", &mut metrics_holder)?.ok_or_else(|| missing("metrics"))?;
    let metrics = parse_metrics(&Obj::new("metrics", metrics)?, true)?;

    let ms = top.get("metric-store").ok_or_else(|| missing("metric-store"))?;
    let metric_store = parse_metric_store(&Obj::new("metric-store", ms)?)?;

    let nats = match section(top, "nats", &mut nats_holder)? {
        None => None,
        Some(v) => Some(parse_nats(&Obj::new("nats", v)?, &["address", "creds-file-path", "password", "username"])?),
    };
    let pipelines = match section(top, "pipelines", &mut pipelines_holder)? {
        None => Vec::new(),
        Some(v) => {
            let root = serde_json::json!({ "pipelines": v });
            crate::stream::spec::pipelines_from_config(&root).map_err(|e| invalid("pipelines", e.to_string()))?
        }
    };
    Ok(Config { main, metrics, metric_store, nats, pipelines, layout: ConfigLayout::Current })
}

fn parse_main(o: &Obj<'_>) -> Result<MainConfig, ConfigError> {
    o.deny_unknown(&[
        "addr",
        "backend-url",
        "debug",
        "group",
        "https-cert-file",
        "https-key-file",
        "jwt-public-key",
        "user",
        "write-workers",
    ])?;
    let write_workers = match o.non_negative("write-workers")? {
        None | Some(0) => None,
        Some(n) => Some(
            usize::try_from(n)
                .ok()
                .filter(|&n| n <= MAX_WRITE_WORKERS)
                .ok_or_else(|| invalid(o.field("write-workers"), format!("{n} is more than {MAX_WRITE_WORKERS}")))?,
        ),
    };
    Ok(MainConfig {
        write_workers,
        addr: parse_addr(o, "addr")?,
        https_cert_file: o.opt_path("https-cert-file")?,
        https_key_file: o.opt_path("https-key-file")?,
        user: o.opt_string("user")?,
        group: o.opt_string("group")?,
        backend_url: o.opt_string("backend-url")?,
        debug: parse_debug(o.obj("debug")?)?,
        jwt_public_key: o.opt_string("jwt-public-key")?,
    })
}

/// A required `host:port` (host may be empty or a bracketed IPv6 address); not resolved here.
fn parse_addr(o: &Obj<'_>, key: &str) -> Result<String, ConfigError> {
    let addr = o.required(key, o.str(key)?.filter(|s| !s.is_empty()))?;
    let port = addr.rsplit_once(':').map(|(_, p)| p);
    if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
        return Err(invalid(o.field(key), format!("{addr:?} is not host:port")));
    }
    Ok(addr.to_owned())
}

fn parse_debug(o: Option<Obj<'_>>) -> Result<DebugConfig, ConfigError> {
    let Some(o) = o else { return Ok(DebugConfig::default()) };
    o.deny_unknown(&["dump-to-file", "gops"])?;
    Ok(DebugConfig { dump_to_file: o.opt_path("dump-to-file")?, gops: o.bool("gops")?.unwrap_or(false) })
}

fn parse_metrics(o: &Obj<'_>, aggregation_required: bool) -> Result<BTreeMap<String, MetricSpec>, ConfigError> {
    let mut metrics = BTreeMap::new();
    for (name, v) in o.map {
        validate_name("metric", name).map_err(|e| invalid(&o.path, e.to_string()))?;
        let m = Obj::new(o.field(name), v)?;
        m.deny_unknown(&["aggregation", "frequency"])?;
        let frequency = m.required("frequency", m.int("frequency")?)?;
        if !(1..=MAX_FREQUENCY).contains(&frequency) {
            return Err(invalid(
                m.field("frequency"),
                format!("{frequency} is outside 1..={MAX_FREQUENCY} seconds (metric {name:?})"),
            ));
        }
        if aggregation_required && !m.map.contains_key("aggregation") {
            return Err(invalid(m.field("aggregation"), "required but missing (null for no aggregation)"));
        }
        // null or "" is none, as in cc-metric-store ("none" is not a name there).
        let aggregation = match m.str("aggregation")? {
            None | Some("") => Aggregation::None,
            Some(other) => match Aggregation::from_name(other) {
                Some(a) if a != Aggregation::None => a,
                _ => {
                    return Err(invalid(
                        m.field("aggregation"),
                        format!(
                            "unknown aggregation {other:?} for metric {name:?} (expected \"sum\", \"avg\", \"max\", \"min\" \
                             or null)"
                        ),
                    ))
                }
            },
        };
        metrics.insert(name.clone(), MetricSpec { frequency, aggregation });
    }
    Ok(metrics)
}

fn parse_metric_store(o: &Obj<'_>) -> Result<MetricStoreConfig, ConfigError> {
    o.deny_unknown(&[
        "block-retention",
        "checkpoint-interval",
        "checkpoints",
        "cleanup",
        "debug",
        "memory-cap",
        "nats-subscriptions",
        "num-workers",
        "max-series",
        "page-slots",
        "retention-in-memory",
    ])?;
    let page_slots = match o.non_negative("page-slots")? {
        None => DEFAULT_SERVER_PAGE_SLOTS,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|&n| crate::storage::head::file::is_page_class(n))
            .ok_or_else(|| invalid(o.field("page-slots"), format!("{n} is not a power of two from 8 to 512")))?,
    };
    let memory_cap = o.required("memory-cap", o.non_negative("memory-cap")?)?;
    if memory_cap.checked_mul(MEMORY_CAP_UNIT).is_none() {
        return Err(invalid(o.field("memory-cap"), format!("{memory_cap} GB does not fit in 64 bits of bytes")));
    }
    let checkpoints = match o.obj("checkpoints")? {
        None => CheckpointsConfig::default(),
        Some(c) => {
            c.deny_unknown(&["directory", "file-format", "max-wal-size"])?;
            CheckpointsConfig {
                file_format: parse_file_format(&c)?,
                directory: c.opt_path("directory")?,
                max_wal_size: c.non_negative("max-wal-size")?.unwrap_or(0),
            }
        }
    };
    let cleanup = match o.obj("cleanup")? {
        None => None,
        Some(c) => Some({
            c.deny_unknown(&["directory", "mode"])?;
            let mode = match c.str("mode")? {
                None | Some("delete") => CleanupMode::Delete,
                Some("archive") => CleanupMode::Archive,
                Some(other) => {
                    return Err(invalid(
                        c.field("mode"),
                        format!("unknown mode {other:?} (expected \"delete\" or \"archive\")"),
                    ))
                }
            };
            let directory = c.opt_path("directory")?;
            if mode == CleanupMode::Archive && directory.is_none() {
                return Err(invalid(c.field("directory"), "required in archive mode"));
            }
            CleanupConfig { mode, directory }
        }),
    };
    let retention_in_memory = o.required("retention-in-memory", o.duration("retention-in-memory")?)?;
    let block_retention = o.duration("block-retention")?;
    check_block_retention(o, "block-retention", block_retention, o, "retention-in-memory", retention_in_memory)?;
    let mut nats_subscriptions = Vec::new();
    for (i, v) in o.array("nats-subscriptions")?.unwrap_or_default().iter().enumerate() {
        nats_subscriptions.push(parse_subscription(&Obj::new(format!("{}[{i}]", o.field("nats-subscriptions")), v)?)?);
    }
    let num_workers = o.non_negative("num-workers")?.unwrap_or(0);
    Ok(MetricStoreConfig {
        num_workers: usize::try_from(num_workers)
            .map_err(|_| invalid(o.field("num-workers"), format!("{num_workers} is too large")))?,
        retention_in_memory,
        checkpoint_interval: o.duration("checkpoint-interval")?,
        memory_cap,
        checkpoints,
        debug: parse_debug(o.obj("debug")?)?,
        cleanup,
        block_retention,
        nats_subscriptions,
        page_slots,
        max_series: match o.non_negative("max-series")? {
            None => DEFAULT_SERVER_MAX_SERIES,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|&n| n < u32::MAX - 1)
                .ok_or_else(|| invalid(o.field("max-series"), format!("{n} is more than {}", u32::MAX - 2)))?,
        },
    })
}

/// Rejects a block retention (`o.key`, already parsed into `block_retention`) shorter than the in-memory
/// retention (`r.retention_key`): blocks hold what leaves memory (past the retention, or earlier under the
/// memory cap), so the disk must keep data at least as long as memory does.
fn check_block_retention(
    o: &Obj<'_>,
    key: &str,
    block_retention: Option<Duration>,
    r: &Obj<'_>,
    retention_key: &str,
    retention: Duration,
) -> Result<(), ConfigError> {
    match block_retention {
        Some(b) if b < retention => {
            let text = |o: &Obj<'_>, key: &str| o.str(key).ok().flatten().unwrap_or_default().to_owned();
            Err(invalid(
                o.field(key),
                format!(
                    "{:?} is shorter than {} ({:?}): data must stay on disk at least as long as in memory",
                    text(o, key),
                    r.field(retention_key),
                    text(r, retention_key),
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn parse_file_format(c: &Obj<'_>) -> Result<CheckpointFormat, ConfigError> {
    match c.str("file-format")? {
        None => Ok(CheckpointFormat::Wal),
        Some("json") => Ok(CheckpointFormat::Json),
        Some("wal") => Ok(CheckpointFormat::Wal),
        Some("avro") => Ok(CheckpointFormat::Avro),
        Some(other) => Err(invalid(
            c.field("file-format"),
            format!("unknown format {other:?} (expected \"json\", \"wal\" or \"avro\")"),
        )),
    }
}

fn parse_subscription(o: &Obj<'_>) -> Result<NatsSubscription, ConfigError> {
    o.deny_unknown(&["cluster-tag", "subscribe-to"])?;
    Ok(NatsSubscription {
        subscribe_to: o.required("subscribe-to", o.opt_string("subscribe-to")?)?,
        cluster_tag: o.opt_string("cluster-tag")?,
    })
}

fn parse_nats(o: &Obj<'_>, allowed: &[&str]) -> Result<NatsConfig, ConfigError> {
    o.deny_unknown(allowed)?;
    Ok(NatsConfig {
        address: o.required("address", o.opt_string("address")?)?,
        username: o.opt_string("username")?,
        password: o.opt_string("password")?,
        creds_file_path: o.opt_path("creds-file-path")?,
    })
}

fn parse_legacy(top: &Obj<'_>) -> Result<Config, ConfigError> {
    top.deny_unknown(&[
        "archive",
        "checkpoints",
        "debug",
        "http-api",
        "jwt-public-key",
        "metrics",
        "nats",
        "retention-in-memory",
    ])?;
    let http = top.obj("http-api")?.ok_or_else(|| invalid("http-api", "required section is missing"))?;
    http.deny_unknown(&["address", "https-cert-file", "https-key-file"])?;
    let main = MainConfig {
        addr: parse_addr(&http, "address")?,
        https_cert_file: http.opt_path("https-cert-file")?,
        https_key_file: http.opt_path("https-key-file")?,
        debug: parse_debug(top.obj("debug")?)?,
        jwt_public_key: top.opt_string("jwt-public-key")?,
        ..MainConfig::default()
    };
    let metrics = match top.obj("metrics")? {
        Some(m) => parse_metrics(&m, false)?,
        None => return Err(invalid("metrics", "required section is missing")),
    };

    let mut metric_store = MetricStoreConfig {
        retention_in_memory: top.required("retention-in-memory", top.duration("retention-in-memory")?)?,
        ..MetricStoreConfig::default()
    };
    if let Some(c) = top.obj("checkpoints")? {
        c.deny_unknown(&["directory", "file-format", "interval", "restore"])?;
        metric_store.checkpoint_interval = c.duration("interval")?;
        metric_store.checkpoints.directory = c.opt_path("directory")?;
        metric_store.checkpoints.file_format = parse_file_format(&c)?;
        c.duration("restore")?;
    }
    if let Some(a) = top.obj("archive")? {
        a.deny_unknown(&["delete-instead", "directory", "interval"])?;
        // cc-metric-store ≤ 0.x removed the checkpoints older than `interval`, every `interval`.
        metric_store.block_retention = a.duration("interval")?;
        check_block_retention(
            &a,
            "interval",
            metric_store.block_retention,
            top,
            "retention-in-memory",
            metric_store.retention_in_memory,
        )?;
        let directory = a.opt_path("directory")?;
        let mode = if a.bool("delete-instead")?.unwrap_or(false) { CleanupMode::Delete } else { CleanupMode::Archive };
        if mode == CleanupMode::Archive && directory.is_none() {
            return Err(invalid(a.field("directory"), "required unless delete-instead is true"));
        }
        metric_store.cleanup = Some(CleanupConfig { mode, directory });
    }

    let servers = top.array("nats")?.unwrap_or_default();
    if servers.len() > 1 {
        return Err(invalid("nats", format!("{} servers given; silt supports one", servers.len())));
    }
    let nats = match servers.first() {
        None => None,
        Some(v) => {
            let o = Obj::new("nats[0]", v)?;
            let nats = parse_nats(&o, &["address", "creds-file-path", "password", "subscriptions", "username"])?;
            for (i, v) in o.array("subscriptions")?.unwrap_or_default().iter().enumerate() {
                let s = Obj::new(format!("nats[0].subscriptions[{i}]"), v)?;
                metric_store.nats_subscriptions.push(parse_subscription(&s)?);
            }
            Some(nats)
        }
    };
    Ok(Config { main, metrics, metric_store, nats, pipelines: Vec::new(), layout: ConfigLayout::Legacy })
}
