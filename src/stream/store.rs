//! Operators that read and write the store through the typed key space: a scan of stored series over a
//! time range, and a sink that writes rows as samples (idempotent per slot, so a replay writes the same).
//!
//! For checkpoints (`format/checkpoint.md`, "Operator states"): the scan saves how many of its series it
//! has read, the sink saves nothing but makes its writes durable (`Db::sync`) before the barrier passes.

use std::sync::Arc;

use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::operators::{Collector, Operator, Source, SourcePoll};
use super::StreamError;
use crate::keys::SeriesPath;
use crate::{Batch, Db, ReadOptions, Selector};

/// The schema of [`ScanSource`]'s batches: `series` (the path, as text), `time`, `value`.
pub fn scan_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("series", DataType::Utf8, false),
        Field::new("time", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// Reads `metric` of every series at or below `selector` over `[from, to)`, one batch per series (gaps
/// left out); subtask `s` of `p` takes the series `s, s + p, …`. Its watermark is `to` once it is done.
pub struct ScanSource {
    db: Arc<Db>,
    metric: String,
    from: i64,
    to: i64,
    series: Vec<SeriesPath>,
    /// How many of `series` have been read (emitted, or skipped as empty).
    pos: usize,
    done: bool,
}

impl ScanSource {
    /// The scan of one subtask.
    pub fn new(
        db: Arc<Db>,
        selector: &Selector,
        metric: &str,
        from: i64,
        to: i64,
        subtask: usize,
        parallelism: usize,
    ) -> Self {
        let series: Vec<SeriesPath> = db
            .series_under(selector)
            .into_iter()
            .filter(|(_, m, _)| m == metric)
            .map(|(_, _, p)| p)
            .skip(subtask)
            .step_by(parallelism.max(1))
            .collect();
        ScanSource { db, metric: metric.to_owned(), from, to, series, pos: 0, done: false }
    }
}

impl Source for ScanSource {
    fn poll(&mut self) -> Result<SourcePoll, StreamError> {
        while let Some(path) = self.series.get(self.pos) {
            self.pos += 1;
            let r = self
                .db
                .query(&Selector::exact(path), &self.metric, self.from, self.to, ReadOptions::default())
                .map_err(|e| StreamError::Operator(e.to_string()))?;
            let (mut times, mut values) = (Vec::new(), Vec::new());
            for (i, v) in r.values.iter().enumerate() {
                if !v.is_nan() {
                    times.push(r.from + i as i64 * r.resolution);
                    values.push(*v);
                }
            }
            if times.is_empty() {
                continue;
            }
            let name = StringArray::from(vec![path.to_string(); times.len()]);
            let cols: Vec<arrow_array::ArrayRef> =
                vec![Arc::new(name), Arc::new(Int64Array::from(times)), Arc::new(Float64Array::from(values))];
            return Ok(SourcePoll::Batch(RecordBatch::try_new(scan_schema(), cols)?));
        }
        self.done = true;
        Ok(SourcePoll::End)
    }

    fn watermark(&self) -> Option<i64> {
        self.done.then_some(self.to)
    }

    /// Scan state v1 (`format/checkpoint.md`, "Operator states"): how many of its series it has read, and
    /// whether it has ended.
    fn snapshot(&mut self) -> Result<Vec<u8>, StreamError> {
        let mut s = Vec::with_capacity(SCAN_STATE_LEN);
        s.push(SCAN_STATE_VERSION);
        s.extend_from_slice(&(self.pos as u64).to_le_bytes());
        s.push(u8::from(self.done));
        Ok(s)
    }

    /// Resumes right after the series read before the snapshot. Refuses (changing nothing) another version
    /// or length, a `done` byte other than 0 or 1, and a position past this subtask's series.
    fn restore(&mut self, state: &[u8]) -> Result<(), StreamError> {
        let err = |what: String| StreamError::Operator(format!("scan state: {what}"));
        let [version, p0, p1, p2, p3, p4, p5, p6, p7, done] = *state else {
            return Err(err(format!("{} bytes, want {SCAN_STATE_LEN}", state.len())));
        };
        if version != SCAN_STATE_VERSION {
            return Err(err(format!("version {version} (this build reads {SCAN_STATE_VERSION})")));
        }
        let pos = u64::from_le_bytes([p0, p1, p2, p3, p4, p5, p6, p7]);
        let pos = usize::try_from(pos)
            .ok()
            .filter(|&p| p <= self.series.len())
            .ok_or_else(|| err(format!("position {pos} is past this subtask's {} series", self.series.len())))?;
        let done = match done {
            0 => false,
            1 => true,
            d => return Err(err(format!("done byte {d}, want 0 or 1"))),
        };
        self.pos = pos;
        self.done = done;
        Ok(())
    }
}

/// The version byte of [`ScanSource`]'s state.
const SCAN_STATE_VERSION: u8 = 1;
/// Bytes of that state: version, position, done.
const SCAN_STATE_LEN: usize = 10;

/// Maps a row's key to the series it is written to.
pub type KeyOf = Arc<dyn Fn(i64) -> Result<SeriesPath, StreamError> + Send + Sync>;

/// Writes rows `(key: Int64, time: Int64, value: Float64)` (column names given) into `metric` at the
/// series `key_of(key)`: one `Db::write` per batch, under the database's durability.
pub struct StoreSink {
    /// The database.
    pub db: Arc<Db>,
    /// The metric written (declared beforehand).
    pub metric: String,
    /// Key, time and value columns.
    pub columns: [String; 3],
    /// The series of a key.
    pub key_of: KeyOf,
}

impl Operator for StoreSink {
    fn process(&mut self, _input: usize, batch: RecordBatch, _out: &mut dyn Collector) -> Result<(), StreamError> {
        let col =
            |name: &str| batch.column_by_name(name).ok_or_else(|| StreamError::Operator(format!("no column {name:?}")));
        let keys = col(&self.columns[0])?.as_any().downcast_ref::<Int64Array>().cloned();
        let times = col(&self.columns[1])?.as_any().downcast_ref::<Int64Array>().cloned();
        let values = col(&self.columns[2])?.as_any().downcast_ref::<Float64Array>().cloned();
        let (Some(keys), Some(times), Some(values)) = (keys, times, values) else {
            return Err(StreamError::Operator("store sink wants Int64 key and time and Float64 value".into()));
        };
        let mut b = Batch::new();
        let mut last: Option<(i64, SeriesPath)> = None;
        for i in 0..batch.num_rows() {
            let k = keys.value(i);
            let path = match &last {
                Some((lk, p)) if *lk == k => p.clone(),
                _ => {
                    let p = (self.key_of)(k)?;
                    last = Some((k, p.clone()));
                    p
                }
            };
            b.push(&path, &self.metric, times.value(i), values.value(i));
        }
        self.db.write(&b).map_err(|e| StreamError::Operator(format!("store sink: {e}")))?;
        Ok(())
    }

    /// Makes every write of this sink so far durable ([`Db::sync`]), whatever the database's durability,
    /// so that a completed checkpoint never runs ahead of the data it covers. Its state is empty: the
    /// writes are idempotent per slot, so replaying rows after the checkpoint writes the same values.
    fn snapshot(&mut self) -> Result<Vec<u8>, StreamError> {
        self.db.sync().map_err(|e| StreamError::Operator(format!("store sink: sync: {e}")))?;
        Ok(Vec::new())
    }
}
