//! Write taps: every sample [`Db::write`] hands to the engine, delivered to subscribers of a metric and a
//! selector (the stream engine's live source, [`crate::stream::live`], reads from one).
//!
//! # What a tap sees
//!
//! A [`WriteTap`] made by [`Db::tap`] receives, for each `Db::write` that succeeds after the tap was made,
//! the samples of its metric at a series at or below its selector's levels (the series
//! [`Db::series_under`] lists), as one [`TapBatch`] in the batch's order: samples with ids
//! ([`crate::Batch::push_id`], which the HTTP and NATS line-protocol ingest uses) first, then keyed ones
//! ([`crate::Batch::push`]), as the engine gets them. A sample is tapped whether it is stored or refused
//! as too old; samples of undeclared metrics and timestamps out of the engine's range (`|t| > 2^50`) are
//! never tapped. A write that fails delivers nothing. Writes from one thread arrive in order; writes from
//! several threads at once arrive in the order their calls finished with the engine, which need not be
//! their log order ([`TapBatch::lsn`] gives that).
//!
//! "After the tap was made" is decided once the engine has applied the write: `Db::write` selects a
//! write's samples for the taps after the engine answered it. So a write a tap does not get was applied
//! before the tap was registered. A reader that registers a tap, then pauses the writer (`Db::pause_writes`)
//! and reads the store, has every write either in the read (those at or below the pause's LSN) or in the
//! tap (those above it, applied after the pause), and tells by [`TapBatch::lsn`] which tap batches the read
//! already saw: nothing falls between the two (the stream engine's live source replays from the store so).
//!
//! # Cost
//!
//! With no tap, `Db::write` pays one relaxed atomic load. With taps, each write takes one lock per tap
//! and costs a lookup in a per-tap table of 4 bytes per series id: whether a series matches is decided
//! once per (tap, series), on the first sample of that series the tap sees, from the series' metric and
//! path. A batch allocates its two vectors once per write and tap, never per sample.
//!
//! # Backpressure
//!
//! A tap is a queue bounded in rows. Ingest never waits for a reader: when a write's samples do not fit
//! the room left, all of that write's samples for that tap are dropped and counted
//! ([`WriteTap::dropped`]); the write itself succeeds. Dropping the `WriteTap` unregisters it.
//!
//! # Locks
//!
//! The registry is an `RwLock` around an `Arc` snapshot of the taps, held only to clone or replace it. Per
//! tap, the match table and the queue have a mutex each; `Db::write` holds one of them at a time and never
//! while calling the engine's writer.

use std::collections::VecDeque;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::Error;
use crate::keys::SeriesPath;
use crate::query::selector::Selector;
use crate::storage::engine::Engine;
use crate::storage::head::MAX_ABS_TS;
use crate::storage::wal::payload::Sample;
use crate::storage::{Lsn, SeriesId};
use crate::Db;

/// Which share of the series a tap takes: those whose path hashes to `index` modulo `count`. Shares
/// `0..count` are disjoint and together take every series, so `count` taps see each sample exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapShare {
    /// This share, `0..count`.
    pub index: usize,
    /// How many shares.
    pub count: usize,
}

impl TapShare {
    /// Every series.
    pub const ALL: TapShare = TapShare { index: 0, count: 1 };

    /// Whether this share takes the series with the encoded path `path`. The hash is of the canonical bytes,
    /// so it does not depend on interning order (series ids of one host's metrics interleave).
    pub(crate) fn takes(&self, path: &[u8]) -> bool {
        if self.count <= 1 {
            return true;
        }
        let mut h = rustc_hash::FxHasher::default();
        h.write(path);
        (h.finish() % self.count as u64) as usize == self.index
    }
}

/// A series a tap has matched: its id, path and the path's text form.
#[derive(Debug)]
pub struct TapSeries {
    /// The series id.
    pub id: SeriesId,
    /// Its path.
    pub path: SeriesPath,
    /// `path` as text (`host:emmy/n0001/hwthread3`), kept so readers need not format it per sample.
    pub text: String,
}

/// One tapped sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TapSample {
    /// Index of its series in [`TapBatch::series`].
    pub series: u32,
    /// Time in unix seconds, as written.
    pub time: i64,
    /// The value, as written.
    pub value: f64,
}

/// The samples one [`Db::write`] gave a tap, in write order.
#[derive(Debug, Default)]
pub struct TapBatch {
    lsn: Lsn,
    series: Vec<Arc<TapSeries>>,
    samples: Vec<TapSample>,
}

impl TapBatch {
    /// The LSN of the write's last log record (its acknowledgement's).
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// The distinct series of the batch, in order of their first sample.
    pub fn series(&self) -> &[Arc<TapSeries>] {
        &self.series
    }

    /// The samples, in write order; each names its series by index into [`TapBatch::series`].
    pub fn samples(&self) -> &[TapSample] {
        &self.samples
    }

    /// The samples with their series.
    pub fn iter(&self) -> impl Iterator<Item = (&TapSeries, i64, f64)> + '_ {
        self.samples.iter().map(|s| (&*self.series[s.series as usize], s.time, s.value))
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// Table entries: the series is not decided yet, or does not match; `MATCHED + i` is `matched[i]`.
const UNDECIDED: u32 = 0;
const NO_MATCH: u32 = 1;
const MATCHED: u32 = 2;

/// A matched series and where it sits in the batch being built.
struct Matched {
    series: Arc<TapSeries>,
    /// The write (`Filter::seq`) that last put it in a batch, and its index there.
    stamp: u64,
    slot: u32,
}

/// Which series a tap takes, decided per series id on first sight.
#[derive(Default)]
struct Filter {
    by_id: Vec<u32>,
    matched: Vec<Matched>,
    /// Counts the writes filtered, to tell whether a series is already in the current batch.
    seq: u64,
}

/// What one tap is and holds; shared by the [`WriteTap`] and the registry.
struct TapShared {
    id: u64,
    metric: u32,
    selector: Selector,
    share: TapShare,
    capacity_rows: usize,
    filter: Mutex<Filter>,
    queue: Mutex<Queue>,
    ready: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Queue {
    batches: VecDeque<TapBatch>,
    rows: usize,
}

impl TapShared {
    /// Whether series `id` is taken, deciding it from the catalog the first time.
    fn decide(&self, engine: &Engine, id: SeriesId, f: &mut Filter) -> u32 {
        let Some((metric, bytes)) = engine.series_info(id) else { return NO_MATCH };
        if metric != self.metric || !self.share.takes(&bytes) {
            return NO_MATCH;
        }
        let Ok((path, _)) = SeriesPath::decode(&bytes) else { return NO_MATCH };
        if !covers(&self.selector, &path) {
            return NO_MATCH;
        }
        let text = path.to_string();
        f.matched.push(Matched { series: Arc::new(TapSeries { id, path, text }), stamp: 0, slot: 0 });
        MATCHED + (f.matched.len() - 1) as u32
    }

    /// The samples of `samples` this tap takes, as a batch (empty if none).
    fn select(&self, engine: &Engine, samples: &[Sample]) -> TapBatch {
        let mut f = self.filter.lock();
        f.seq += 1;
        let seq = f.seq;
        let mut batch = TapBatch::default();
        for s in samples {
            let i = s.series.0 as usize;
            if i >= f.by_id.len() {
                let n = (i + 1).max(engine.series_count());
                f.by_id.resize(n, UNDECIDED);
            }
            let mut e = f.by_id[i];
            if e == UNDECIDED {
                e = self.decide(engine, s.series, &mut f);
                f.by_id[i] = e;
            }
            if e == NO_MATCH || !(-MAX_ABS_TS..=MAX_ABS_TS).contains(&s.ts) {
                continue;
            }
            let m = &mut f.matched[(e - MATCHED) as usize];
            if m.stamp != seq {
                m.stamp = seq;
                m.slot = batch.series.len() as u32;
                batch.series.push(m.series.clone());
            }
            batch.samples.push(TapSample { series: m.slot, time: s.ts, value: s.value });
        }
        batch
    }

    /// Queues a batch, or drops and counts it if it does not fit.
    fn deliver(&self, batch: TapBatch) {
        let n = batch.len();
        let mut q = self.queue.lock();
        if q.rows + n > self.capacity_rows {
            drop(q);
            self.dropped.fetch_add(n as u64, Ordering::Relaxed);
            return;
        }
        q.rows += n;
        q.batches.push_back(batch);
        drop(q);
        self.ready.notify_one();
    }

    fn pop(q: &mut Queue) -> Option<TapBatch> {
        let b = q.batches.pop_front()?;
        q.rows -= b.len();
        Some(b)
    }
}

/// Whether a selector covers a path: same namespace, and each element matches the segment at its level
/// (the path may go deeper), as [`Db::series_under`] selects.
pub(crate) fn covers(sel: &Selector, path: &SeriesPath) -> bool {
    let (elements, segments) = (sel.elements(), path.segments());
    path.namespace() == sel.namespace()
        && segments.len() >= elements.len()
        && elements.iter().zip(segments).all(|(e, s)| e.matches(s))
}

#[derive(Default)]
struct Registry {
    /// Taps registered; `Db::write` reads only this while it is 0.
    count: AtomicUsize,
    taps: RwLock<Arc<Vec<Arc<TapShared>>>>,
    next_id: AtomicU64,
}

/// The taps of a database (a field of its inner state; `Db::write` calls [`Taps::select`]).
#[derive(Default)]
pub(crate) struct Taps {
    registry: Arc<Registry>,
}

/// The tapped samples of one write, waiting for the engine to accept it.
pub(crate) struct Tapped(Vec<(Arc<TapShared>, TapBatch)>);

impl Tapped {
    /// Hands each tap its batch (the write succeeded with acknowledgement LSN `lsn`).
    pub(crate) fn deliver(self, lsn: Lsn) {
        for (tap, mut batch) in self.0 {
            batch.lsn = lsn;
            tap.deliver(batch);
        }
    }
}

impl Taps {
    /// The samples each tap takes from a write about to be handed to the engine; `None` (after one relaxed
    /// load) when there are no taps.
    #[inline]
    pub(crate) fn select(&self, engine: &Engine, samples: &[Sample]) -> Option<Tapped> {
        if self.registry.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.select_slow(engine, samples)
    }

    #[cold]
    fn select_slow(&self, engine: &Engine, samples: &[Sample]) -> Option<Tapped> {
        let taps = self.registry.taps.read().clone();
        let out: Vec<_> = taps
            .iter()
            .filter_map(|t| {
                let b = t.select(engine, samples);
                (!b.is_empty()).then(|| (t.clone(), b))
            })
            .collect();
        (!out.is_empty()).then_some(Tapped(out))
    }

    fn register(
        &self,
        engine: &Engine,
        metric: &str,
        selector: &Selector,
        capacity_rows: usize,
        share: TapShare,
    ) -> Result<WriteTap, Error> {
        let (metric_id, _) = engine.metric(metric).ok_or_else(|| Error::UnknownMetric(metric.to_owned()))?;
        if capacity_rows == 0 {
            return Err(Error::InvalidArgument(format!("tap of {metric:?}: capacity of 0 rows")));
        }
        if share.count == 0 || share.index >= share.count {
            return Err(Error::InvalidArgument(format!(
                "tap of {metric:?}: share {} of {} does not exist",
                share.index, share.count
            )));
        }
        let reg = &self.registry;
        let shared = Arc::new(TapShared {
            id: reg.next_id.fetch_add(1, Ordering::Relaxed),
            metric: metric_id,
            selector: selector.clone(),
            share,
            capacity_rows,
            filter: Mutex::new(Filter::default()),
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let mut taps = reg.taps.write();
        let mut next = Vec::clone(&taps);
        next.push(shared.clone());
        reg.count.store(next.len(), Ordering::Relaxed);
        *taps = Arc::new(next);
        drop(taps);
        Ok(WriteTap { shared, registry: reg.clone(), metric: metric.to_owned() })
    }
}

/// A subscription to the samples written to a metric at the series a selector covers (see [`crate::tap`]).
/// Dropping it unregisters it.
pub struct WriteTap {
    shared: Arc<TapShared>,
    registry: Arc<Registry>,
    metric: String,
}

impl std::fmt::Debug for WriteTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTap")
            .field("metric", &self.metric)
            .field("selector", &self.shared.selector)
            .field("share", &self.shared.share)
            .field("capacity_rows", &self.shared.capacity_rows)
            .finish_non_exhaustive()
    }
}

impl WriteTap {
    /// The next batch, if one is queued; never blocks.
    pub fn try_recv(&self) -> Option<TapBatch> {
        TapShared::pop(&mut self.shared.queue.lock())
    }

    /// The next batch, waiting up to `timeout` for one; `None` if none came.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<TapBatch> {
        let deadline = Instant::now() + timeout;
        let mut q = self.shared.queue.lock();
        loop {
            if let Some(b) = TapShared::pop(&mut q) {
                return Some(b);
            }
            if self.shared.ready.wait_until(&mut q, deadline).timed_out() {
                return TapShared::pop(&mut q);
            }
        }
    }

    /// Samples dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Samples queued now.
    pub fn queued_rows(&self) -> usize {
        self.shared.queue.lock().rows
    }

    /// Most samples queued at once.
    pub fn capacity_rows(&self) -> usize {
        self.shared.capacity_rows
    }

    /// The metric tapped.
    pub fn metric(&self) -> &str {
        &self.metric
    }

    /// The selector tapped.
    pub fn selector(&self) -> &Selector {
        &self.shared.selector
    }

    /// The share of the series tapped.
    pub fn share(&self) -> TapShare {
        self.shared.share
    }
}

impl Drop for WriteTap {
    fn drop(&mut self) {
        let mut taps = self.registry.taps.write();
        let next: Vec<_> = taps.iter().filter(|t| t.id != self.shared.id).cloned().collect();
        self.registry.count.store(next.len(), Ordering::Relaxed);
        *taps = Arc::new(next);
    }
}

impl Db {
    /// Taps the writes of `metric` at the series at or below the selector's levels: from now on, every
    /// sample of them that [`Db::write`] hands to the engine is queued on the returned tap, at most
    /// `capacity_rows` at a time (see [`crate::tap`] for what is tapped and what a full queue does). An
    /// undeclared metric or a capacity of 0 is an error.
    pub fn tap(&self, metric: &str, selector: &Selector, capacity_rows: usize) -> Result<WriteTap, Error> {
        self.tap_share(metric, selector, capacity_rows, TapShare::ALL)
    }

    /// [`Db::tap`] of one share of the series: `count` taps with shares `0..count` see every sample once.
    pub fn tap_share(
        &self,
        metric: &str,
        selector: &Selector,
        capacity_rows: usize,
        share: TapShare,
    ) -> Result<WriteTap, Error> {
        self.taps().register(self.engine(), metric, selector, capacity_rows, share)
    }

    /// Taps registered now.
    pub fn tap_count(&self) -> usize {
        self.taps().registry.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{HostKey, Key, Namespace};
    use crate::query::selector::SelectorElement;

    fn path(cluster: &str, host: &str, cpu: Option<u32>) -> SeriesPath {
        let k = HostKey::new(cluster, host).expect("key");
        match cpu {
            Some(c) => k.component("cpu", c).expect("component").path(),
            None => k.path(),
        }
    }

    #[test]
    fn covers_is_at_or_below() {
        let sel = Selector::new(Namespace::Host, vec![SelectorElement::Name("c".into()), SelectorElement::Any])
            .expect("selector");
        assert!(covers(&sel, &path("c", "h1", None)));
        assert!(covers(&sel, &path("c", "h1", Some(3))));
        assert!(!covers(&sel, &path("d", "h1", None)));
        let root = Selector::new(Namespace::Host, vec![]).expect("selector");
        assert!(covers(&root, &path("d", "h1", Some(0))));
        let job = Selector::new(Namespace::Job, vec![]).expect("selector");
        assert!(!covers(&job, &path("c", "h1", None)));
        let deep = Selector::exact(&path("c", "h1", Some(2)));
        assert!(!covers(&deep, &path("c", "h1", None)));
    }

    #[test]
    fn a_write_applied_after_the_tap_was_made_is_tapped_and_a_pause_reads_up_to_its_lsn() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let opts = crate::Options { checkpoint_interval: None, ..crate::Options::default() };
        let db = std::sync::Arc::new(Db::open(tmp.path(), opts).expect("open"));
        let cfg = crate::MetricConfig { frequency: 10, aggregation: crate::Aggregation::Avg };
        db.declare_metric("load", cfg).expect("declare");
        let key = HostKey::new("c", "h0").expect("key");
        fn write(db: &Db, t: i64) -> crate::WriteAck {
            let mut b = crate::Batch::new();
            b.push(&HostKey::new("c", "h0").expect("key"), "load", t, t as f64);
            db.write(&b).expect("write")
        }
        let first = write(&db, 1000);
        // A write that reaches the engine while its writer is paused is applied after the tap below is made,
        // so the tap gets it, although the write was called before.
        let pause = db.pause_writes().expect("pause");
        assert_eq!(pause.lsn(), first.lsn);
        let writer = {
            let db = db.clone();
            std::thread::spawn(move || write(&db, 1010))
        };
        std::thread::sleep(Duration::from_millis(50));
        let sel = Selector::new(Namespace::Host, vec![]).expect("selector");
        let tap = db.tap("load", &sel, 100).expect("tap");
        assert!(tap.try_recv().is_none(), "not applied yet");
        assert!(!writer.is_finished(), "a write waits while the writer is paused");
        drop(pause);
        let second = writer.join().expect("writer");
        let b = tap.recv_timeout(Duration::from_secs(10)).expect("the write was applied after the tap was made");
        assert_eq!((b.lsn(), b.len()), (second.lsn, 1));
        // A pause sees exactly the writes up to its LSN.
        let pause = db.pause_writes().expect("pause");
        assert_eq!(pause.lsn(), second.lsn);
        let r = db.read(&key, "load", 1000, 1020).expect("read");
        assert_eq!(r.values, vec![1000.0, 1010.0]);
        drop(pause);
        // And the writer goes on after it.
        assert!(write(&db, 1020).lsn > second.lsn);
    }

    #[test]
    fn shares_partition_the_series() {
        for count in 1..5 {
            for h in 0..50 {
                let bytes = path("c", &format!("h{h}"), None).to_bytes();
                let n = (0..count).filter(|&index| TapShare { index, count }.takes(&bytes)).count();
                assert_eq!(n, 1);
            }
        }
    }
}
