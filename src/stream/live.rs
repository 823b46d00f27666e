//! The live ingest stream as a source: every sample of a metric that [`Db::write`] accepts at the series a
//! selector covers, read from a [`crate::tap::WriteTap`], in batches of [`scan_schema`] (series text, time,
//! value) so that it stands where a [`super::store::ScanSource`] would.
//!
//! # Partitioning
//!
//! Subtask `s` of `p` taps share `s` of `p` of the series ([`TapShare`]: by a hash of the series path), so
//! the `p` subtasks together see every sample exactly once and each series stays on one subtask.
//!
//! # Watermarks
//!
//! Samples arrive in write order, which is only loosely event-time order (collectors send late, hosts
//! differ). The watermark is bounded-out-of-orderness: the largest event time emitted so far minus a
//! lateness ([`LiveSource::lateness`], default the metric's frequency, i.e. one sample interval). A row
//! older than the watermark when it arrives is late for the windows downstream. A subtask whose series
//! see no writes stays `Idle` and holds no watermark.
//!
//! # Loss and replay
//!
//! A live source cannot be replayed: its snapshot is empty, and after a restore it resumes with the
//! writes accepted from then on; rows written while it was down are not seen (a [`super::store::ScanSource`]
//! over that time range reads them from the store). While it runs, writes whose samples do not fit its
//! tap's queue are dropped and counted ([`LiveSource::dropped`]), never blocking ingest.

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Float64Array, Int64Array, RecordBatch};

use super::operators::{Source, SourcePoll};
use super::store::scan_schema;
use super::StreamError;
use crate::tap::{TapBatch, TapShare, WriteTap};
use crate::{Db, Selector};

/// Samples a live source's tap holds at most before writes are dropped for it (24 bytes each).
pub const DEFAULT_CAPACITY_ROWS: usize = 1 << 18;

/// Most rows per batch a live source emits by default.
pub const DEFAULT_BATCH_ROWS: usize = 8192;

/// One subtask of the live stream of a metric (see [`crate::stream::live`]).
pub struct LiveSource {
    tap: WriteTap,
    lateness: i64,
    batch_rows: usize,
    /// A tap batch partly emitted, and the first sample not emitted yet.
    carry: Option<(TapBatch, usize)>,
    max_time: Option<i64>,
}

impl std::fmt::Debug for LiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSource")
            .field("tap", &self.tap)
            .field("lateness", &self.lateness)
            .field("batch_rows", &self.batch_rows)
            .field("max_time", &self.max_time)
            .finish_non_exhaustive()
    }
}

impl LiveSource {
    /// The live source of subtask `subtask` of `parallelism`, tapping `metric` at or below `selector` from
    /// now on with a queue of [`DEFAULT_CAPACITY_ROWS`]. An undeclared metric is an error.
    pub fn new(
        db: Arc<Db>,
        selector: &Selector,
        metric: &str,
        subtask: usize,
        parallelism: usize,
    ) -> Result<LiveSource, StreamError> {
        Self::with_capacity(db, selector, metric, subtask, parallelism, DEFAULT_CAPACITY_ROWS)
    }

    /// [`LiveSource::new`] with a tap queue of `capacity_rows` samples.
    pub fn with_capacity(
        db: Arc<Db>,
        selector: &Selector,
        metric: &str,
        subtask: usize,
        parallelism: usize,
        capacity_rows: usize,
    ) -> Result<LiveSource, StreamError> {
        let share = TapShare { index: subtask, count: parallelism.max(1) };
        let tap = db.tap_share(metric, selector, capacity_rows, share)?;
        let lateness = db.metric(metric).map_or(0, |c| c.frequency);
        Ok(LiveSource { tap, lateness, batch_rows: DEFAULT_BATCH_ROWS, carry: None, max_time: None })
    }

    /// Sets the lateness in seconds (at least 0): the watermark trails the largest event time seen by this
    /// much. Default: the metric's frequency.
    pub fn lateness(mut self, seconds: i64) -> Self {
        self.lateness = seconds.max(0);
        self
    }

    /// Sets the most rows per emitted batch (at least 1; default [`DEFAULT_BATCH_ROWS`]). Smaller tap
    /// batches are coalesced up to it, larger ones split.
    pub fn batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows.max(1);
        self
    }

    /// Samples dropped so far because the tap's queue was full.
    pub fn dropped(&self) -> u64 {
        self.tap.dropped()
    }

    /// The tap this source reads.
    pub fn tap(&self) -> &WriteTap {
        &self.tap
    }
}

impl Source for LiveSource {
    fn poll(&mut self) -> Result<SourcePoll, StreamError> {
        let mut names = StringBuilder::new();
        let mut times = Vec::new();
        let mut values = Vec::new();
        while times.len() < self.batch_rows {
            let (batch, from) = match self.carry.take() {
                Some(c) => c,
                None => match self.tap.try_recv() {
                    Some(b) => (b, 0),
                    None => break,
                },
            };
            let room = self.batch_rows - times.len();
            let to = batch.len().min(from + room);
            let series = batch.series();
            for s in &batch.samples()[from..to] {
                names.append_value(&series[s.series as usize].text);
                times.push(s.time);
                values.push(s.value);
            }
            if to < batch.len() {
                self.carry = Some((batch, to));
            }
        }
        if times.is_empty() {
            return Ok(SourcePoll::Idle);
        }
        if let Some(&m) = times.iter().max() {
            self.max_time = Some(self.max_time.map_or(m, |x| x.max(m)));
        }
        let cols: Vec<arrow_array::ArrayRef> =
            vec![Arc::new(names.finish()), Arc::new(Int64Array::from(times)), Arc::new(Float64Array::from(values))];
        Ok(SourcePoll::Batch(RecordBatch::try_new(scan_schema(), cols)?))
    }

    /// The largest event time emitted minus the lateness; `None` before the first row.
    fn watermark(&self) -> Option<i64> {
        self.max_time.map(|m| m.saturating_sub(self.lateness))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{HostKey, Namespace};
    use crate::{Aggregation, Batch, MetricConfig, Options};
    use arrow_array::{Array, StringArray};

    fn db(dir: &std::path::Path) -> Arc<Db> {
        let db = Db::open(dir, Options { checkpoint_interval: None, ..Options::default() }).expect("open");
        db.declare_metric("load", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).expect("declare");
        Arc::new(db)
    }

    fn write(db: &Db, rows: &[(&str, i64, f64)]) {
        let mut b = Batch::new();
        for &(h, t, v) in rows {
            b.push(&HostKey::new("c", h).expect("key"), "load", t, v);
        }
        db.write(&b).expect("write");
    }

    fn poll(src: &mut LiveSource) -> Option<RecordBatch> {
        match src.poll().expect("poll") {
            SourcePoll::Batch(b) => Some(b),
            SourcePoll::Idle => None,
            SourcePoll::End => panic!("a live source never ends"),
        }
    }

    #[test]
    fn watermark_is_max_time_minus_lateness() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = db(tmp.path());
        let sel = Selector::new(Namespace::Host, vec![]).expect("selector");
        let mut src = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source").lateness(30);
        assert!(poll(&mut src).is_none());
        assert_eq!(src.watermark(), None);
        write(&db, &[("a", 1000, 1.0), ("b", 1100, 2.0), ("a", 1050, 3.0)]);
        assert_eq!(poll(&mut src).map(|b| b.num_rows()), Some(3));
        assert_eq!(src.watermark(), Some(1070));
        // An older write does not move the watermark back.
        write(&db, &[("a", 900, 4.0)]);
        assert_eq!(poll(&mut src).map(|b| b.num_rows()), Some(1));
        assert_eq!(src.watermark(), Some(1070));
        write(&db, &[("b", 1200, 5.0)]);
        poll(&mut src);
        assert_eq!(src.watermark(), Some(1170));
        // The default lateness is the metric's frequency.
        let mut src = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source");
        write(&db, &[("b", 1300, 5.0)]);
        poll(&mut src);
        assert_eq!(src.watermark(), Some(1290));
    }

    #[test]
    fn coalesces_and_splits_at_the_row_bound() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = db(tmp.path());
        let sel = Selector::new(Namespace::Host, vec![]).expect("selector");
        let mut src = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source").batch_rows(5);
        for i in 0..3 {
            write(&db, &[("a", 1000 + i * 10, i as f64), ("b", 1000 + i * 10, i as f64)]);
        }
        let b = poll(&mut src).expect("batch");
        assert_eq!(b.num_rows(), 5);
        let names = b.column(0).as_any().downcast_ref::<StringArray>().expect("names");
        assert_eq!(names.value(0), "host:c/a");
        assert_eq!(names.value(1), "host:c/b");
        let b = poll(&mut src).expect("batch");
        assert_eq!(b.num_rows(), 1);
        let times = b.column(1).as_any().downcast_ref::<Int64Array>().expect("times");
        assert_eq!(times.value(0), 1020);
        assert!(poll(&mut src).is_none());
        assert!(LiveSource::new(db, &sel, "nope", 0, 1).is_err());
    }
}
