//! Data in and out of silt in the archive format ([`crate::archive`], cc-metric-store's long format): export
//! of a selector's series over a time range, import of an archive file, and the archiving of blocks that
//! pass long-term retention.
//!
//! A series maps onto the columns by its namespace:
//! - host keys `<cluster>/<host>[/<component>…]`: `cluster`, `hostname`; `scope`/`scope_id` from the
//!   innermost component split into its kind and id (`hwthread12` → `hwthread`, `12`; a known
//!   cc-metric-store kind is taken whole, otherwise the id starts at the first digit), or `node` and an
//!   empty id at the host itself;
//! - job keys `<job>/<operator>/<subtask>`: `cluster` = `job`, `hostname` = the job, `scope` = the operator,
//!   `scope_id` = the subtask;
//! - service keys `<service>/<instance>`: `cluster` = `service`, `hostname` = the service, `scope` =
//!   `instance`, `scope_id` = the instance.
//!
//! Timestamps are the slots' nominal times (a sample written on the grid comes back with its own time).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::archive::{self, ArchiveRow};
use crate::error::Error;
use crate::keys::{HostKey, JobKey, Key, Namespace, SeriesPath, ServiceKey};
use crate::query::selector::Selector;
use crate::storage::{Engine, SeriesId};
use crate::{Aggregation, Batch, Db, MetricConfig, ReadOptions};

/// Component kinds cc-metric-store knows, matched whole before splitting at the first digit.
const KINDS: [&str; 6] = ["hwthread", "core", "socket", "memoryDomain", "accelerator", "node"];

/// The `cluster`, `hostname`, `scope` and `scope_id` columns of a series path.
pub fn columns_of(path: &SeriesPath) -> (String, String, String, String) {
    let segs = path.segments();
    let seg = |i: usize| segs.get(i).cloned().unwrap_or_default();
    match path.namespace() {
        Namespace::Host => {
            let (scope, id) = match segs.get(2..).and_then(|c| c.last()) {
                None => ("node".to_owned(), String::new()),
                Some(c) => split_component(c),
            };
            (seg(0), seg(1), scope, id)
        }
        Namespace::Job => ("job".to_owned(), seg(0), seg(1), seg(2)),
        Namespace::Service => ("service".to_owned(), seg(0), "instance".to_owned(), seg(1)),
    }
}

fn split_component(c: &str) -> (String, String) {
    if let Some(k) = KINDS.iter().find(|k| c.len() > k.len() && c.starts_with(*k)) {
        return ((*k).to_owned(), c[k.len()..].to_owned());
    }
    match c.find(|ch: char| ch.is_ascii_digit()) {
        Some(i) if i > 0 => (c[..i].to_owned(), c[i..].to_owned()),
        _ => (c.to_owned(), String::new()),
    }
}

/// The series path the columns of a row name (the inverse of [`columns_of`]).
pub fn path_of(row: &ArchiveRow) -> Result<SeriesPath, Error> {
    Ok(match row.cluster.as_str() {
        "job" => JobKey::new(&row.hostname, &row.scope, parse_index(&row.scope_id)?)?.path(),
        "service" => ServiceKey::new(&row.hostname, &row.scope_id)?.path(),
        cluster => {
            let key = HostKey::new(cluster, &row.hostname)?;
            if row.scope == "node" || row.scope.is_empty() {
                key.path()
            } else {
                key.component(&row.scope, &row.scope_id)?.path()
            }
        }
    })
}

fn parse_index(s: &str) -> Result<u32, Error> {
    s.parse().map_err(|_| Error::InvalidArgument(format!("job subtask {s:?} is not a number")))
}

/// Appends the rows of one series' values: value `i` at nominal time `t0 + i*frequency`; NaN is skipped.
pub fn push_rows(out: &mut Vec<ArchiveRow>, metric: &str, path: &SeriesPath, frequency: i64, t0: i64, values: &[f64]) {
    let (cluster, hostname, scope, scope_id) = columns_of(path);
    for (i, &v) in values.iter().enumerate() {
        if !v.is_nan() {
            out.push(ArchiveRow {
                cluster: cluster.clone(),
                hostname: hostname.clone(),
                metric: metric.to_owned(),
                scope: scope.clone(),
                scope_id: scope_id.clone(),
                timestamp: t0 + i as i64 * frequency,
                frequency,
                value: v,
            });
        }
    }
}

impl Db {
    /// The rows of every series at or below the levels `sel` names (every metric) whose nominal times lie
    /// in `[from, to)`, from the head and the blocks.
    pub fn export_rows(&self, sel: &Selector, from: i64, to: i64) -> Result<Vec<ArchiveRow>, Error> {
        if from > to {
            return Err(Error::InvalidArgument(format!("export: from {from} is after to {to}")));
        }
        let mut rows = Vec::new();
        for (id, metric, path) in self.series_under(sel) {
            let Some(cfg) = self.metric(&metric) else { continue };
            let f = cfg.frequency;
            // Sample at the nominal times: the series' grid phase is that of any page or chunk start + F/2.
            let Some(phase) = self.grid_phase(id, f)? else { continue };
            let t0 = from + (phase - from).rem_euclid(f);
            if t0 >= to {
                continue;
            }
            let r = self.query(&Selector::exact(&path), &metric, t0, to, ReadOptions::default())?;
            push_rows(&mut rows, &metric, &path, r.resolution, r.from, &r.values);
        }
        Ok(rows)
    }

    /// Writes [`Db::export_rows`] to `out` as an archive file (atomically). Returns the rows written.
    pub fn export_parquet(&self, sel: &Selector, from: i64, to: i64, out: &Path) -> Result<u64, Error> {
        let mut rows = self.export_rows(sel, from, to)?;
        Ok(archive::write_parquet(out, &mut rows)?)
    }

    /// Reads an archive file and writes its rows. A metric that is not declared is declared with the rows'
    /// frequency and `avg` aggregation; a row whose frequency differs from its metric's is an error.
    /// Returns the samples stored.
    pub fn import_parquet(&self, file: &Path) -> Result<u64, Error> {
        let rows = archive::read_parquet(file)?;
        let mut batch = Batch::new();
        let mut seen: BTreeMap<String, i64> = BTreeMap::new();
        for row in &rows {
            match seen.get(&row.metric) {
                Some(&f) if f == row.frequency => {}
                Some(&f) => {
                    return Err(Error::InvalidArgument(format!(
                        "{}: metric {:?} has frequency {} and {}",
                        file.display(),
                        row.metric,
                        f,
                        row.frequency
                    )))
                }
                None => {
                    match self.metric(&row.metric) {
                        Some(c) if c.frequency != row.frequency => {
                            return Err(Error::InvalidArgument(format!(
                                "{}: metric {:?} is declared with frequency {}, the file has {}",
                                file.display(),
                                row.metric,
                                c.frequency,
                                row.frequency
                            )))
                        }
                        Some(_) => {}
                        None => self.declare_metric(
                            &row.metric,
                            MetricConfig { frequency: row.frequency, aggregation: Aggregation::Avg },
                        )?,
                    }
                    seen.insert(row.metric.clone(), row.frequency);
                }
            }
            batch.push(&path_of(row)?, &row.metric, row.timestamp, row.value);
        }
        Ok(self.write(&batch)?.outcome.stored)
    }

    /// Archives the blocks whose every slot lies before `before` into `dir` (one file per cluster, named
    /// by [`archive::file_name`] with the blocks' time range) and removes them; without a `dir`, only
    /// removes them. The archive files go through the database's [`crate::storage::io::Vfs`], and the blocks
    /// are removed only once every archive file is written and synced. Returns the blocks removed. (Long-term
    /// retention; the maintenance thread runs it with [`crate::Options::block_retention`].)
    pub fn archive_blocks_before(&self, before: i64, dir: Option<&Path>) -> Result<usize, Error> {
        archive_blocks(self.engine(), before, dir)
    }
}

/// The metric name and path of a series, from the engine's registry.
pub(crate) fn series_name(engine: &Engine, id: SeriesId) -> Option<(String, SeriesPath)> {
    let (metric, path) = engine.series_info(id)?;
    let name = engine.metrics().get(metric as usize)?.0.clone();
    Some((name, SeriesPath::decode(&path).ok()?.0))
}

/// See [`Db::archive_blocks_before`].
pub(crate) fn archive_blocks(engine: &Engine, before: i64, dir: Option<&Path>) -> Result<usize, Error> {
    let blocks = engine.blocks_before(before);
    if blocks.is_empty() {
        return Ok(0);
    }
    if let Some(dir) = dir {
        let mut by_cluster: BTreeMap<String, Vec<ArchiveRow>> = BTreeMap::new();
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        let mut values = Vec::new();
        for b in &blocks {
            let (a, z) = b.time_range();
            (lo, hi) = (lo.min(a), hi.max(z));
            for c in b.chunks() {
                let c = c?;
                let Some((metric, path)) = series_name(engine, c.series) else { continue };
                values.clear();
                b.decode(&c, &mut values)?;
                let (cluster, ..) = columns_of(&path);
                let rows = by_cluster.entry(cluster).or_default();
                push_rows(rows, &metric, &path, c.frequency, c.start + c.frequency / 2, &values);
            }
        }
        // Through the engine's file system, like every file of the database: a full disk (or a simulated
        // one) fails the archive before any block is removed.
        let vfs = engine.vfs();
        vfs.create_dir_all(dir).map_err(|e| crate::storage::StorageError::io("create dir", dir, e))?;
        for (cluster, mut rows) in by_cluster {
            let path: PathBuf = dir.join(archive::file_name(&cluster, lo, hi));
            archive::write_parquet_with(&**vfs, &path, &mut rows)?;
        }
    }
    let seqs: Vec<u64> = blocks.iter().map(|b| b.seq()).collect();
    engine.remove_blocks(&seqs)?;
    Ok(seqs.len())
}
