//! The live ingest stream as a source: every sample of a metric that [`Db::write`] accepts at the series a
//! selector covers, read from a [`crate::tap::WriteTap`], in batches of [`scan_schema`] (series text, time,
//! value) so that it stands where a [`super::store::ScanSource`] would.
//!
//! # Partitioning
//!
//! Subtask `s` of `p` taps share `s` of `p` of the series ([`TapShare`]: by a hash of the series path), so
//! the `p` subtasks together see every sample exactly once and each series stays on one subtask. A restored
//! subtask replays from the store the same share.
//!
//! # Watermarks
//!
//! Samples arrive in write order, which is only loosely event-time order (collectors send late, hosts
//! differ). The watermark is bounded-out-of-orderness: the largest event time emitted so far minus a
//! lateness ([`LiveSource::lateness`], default the metric's frequency, i.e. one sample interval). A row
//! older than the watermark when it arrives is late for the windows downstream. A subtask whose series
//! see no writes stays `Idle` and holds no watermark.
//!
//! # Start
//!
//! A source starts at a point in the write log: when it is made it registers its tap, then pauses the
//! database's writer for a moment (`Db::pause_writes`) and takes the LSN of the last write applied. It
//! emits exactly the writes acknowledged after that LSN (a tap batch at or below it is dropped), and notes,
//! per series of its share, the newest slot stored before it (what it did not emit and must not replay).
//! The pause lasts one lookup per series of the share.
//!
//! # Loss and replay
//!
//! A live source restored from a checkpoint re-emits, from the store, the acknowledged samples it had not
//! emitted as of that checkpoint, each once, then goes on live. Its snapshot (live state v1,
//! `format/checkpoint.md`) records what it has emitted: its largest event time (the watermark's), a
//! *horizon* (its watermark at the snapshot), and per series, by path text, the slots (of the metric's
//! frequency, by nominal time) at or after the horizon that it emitted a sample into, as ranges; at its
//! first start, also the slots stored before it (above).
//!
//! On restore it lists the series of its share (those defined later are wholly in its tap) and, before it
//! reads its tap at all, replays them, a group per poll, each group read while the writer is paused: every
//! stored slot from the one holding the horizon on that it did not emit, as a row at the slot's nominal
//! time. Each replayed series remembers the pause's LSN, and a tap batch of that series whose LSN is at or
//! below it is dropped: the read saw that write. A write it did not see is in the tap, because write taps
//! select a write's samples only after the engine applied it (so a write applied after the pause was
//! selected after the tap was made). The replay goes series by series, not in time order, so the watermark
//! stays at the restored one until it is done, and the tap batches queued by then (written while it ran,
//! some older than what it replayed last) are emitted; then it moves to the largest time replayed.
//!
//! What a restore cannot give back exactly is what the store does not hold as written:
//!
//! - **Out of order.** A sample older than its series' newest one but in a slot at or after the horizon is
//!   replayed (within the lateness, the usual case). One in a slot before the horizon is not, also of a
//!   series that first appears after the checkpoint: it was behind the watermark at the checkpoint, so an
//!   uninterrupted run would have emitted it late too, where windows may already be closed.
//! - **One value per slot.** The store keeps the last value written into each slot: of several samples in
//!   one slot (rewrites, timestamps jittered within an interval) only the last is replayed, and none if the
//!   source had emitted a sample into that slot before the checkpoint.
//! - **Not stored.** NaN values (a NaN slot reads as empty), samples refused as too old, and pages freed
//!   (retention, `free`) before the replay read them are not replayed.
//! - **Time.** A replayed row carries its slot's nominal time: the written time for samples on the series'
//!   grid (its first sample's time plus multiples of the frequency), else within half an interval of it.
//!
//! Nothing is replayed twice, and a sample emitted before the checkpoint is not replayed (rows emitted
//! after the checkpoint by the failed run are emitted again, as every operator restores to the checkpoint).
//! A restore also recovers samples the failed run's tap dropped after the checkpoint. An empty state (a
//! checkpoint from before live state existed) restores as a fresh start.
//!
//! While it runs, writes whose samples do not fit its tap's queue are dropped and counted
//! ([`LiveSource::dropped`]), never blocking ingest; that includes the tap filling up while a long replay
//! runs. Each replay pause reads until about [`LiveSource::batch_rows`] rows (or 64 Ki slots) are found,
//! and one series at least, whole.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Float64Array, Int64Array, RecordBatch};
use rustc_hash::FxHashMap;

use super::operators::{Source, SourcePoll};
use super::store::scan_schema;
use super::StreamError;
use crate::keys::SeriesPath;
use crate::storage::{Lsn, SeriesId};
use crate::tap::{TapBatch, TapSeries, TapShare, WriteTap};
use crate::{Db, Selector};

/// Samples a live source's tap holds at most before writes are dropped for it (24 bytes each).
pub const DEFAULT_CAPACITY_ROWS: usize = 1 << 18;

/// Most rows per batch a live source emits by default.
pub const DEFAULT_BATCH_ROWS: usize = 8192;

/// Slots one replay pause reads at most, beyond the first series (which is read whole).
const REPLAY_SCAN_SLOTS: usize = 1 << 16;

/// Ranges of emitted slots a series keeps before it forgets those behind the horizon.
const PRUNE_AT: usize = 8;

/// The version byte of [`LiveSource`]'s state.
const LIVE_STATE_VERSION: u8 = 1;

/// The nominal time of the slot holding time `t` on a grid of frequency `f` whose nominal times are
/// `phase` modulo `f` (a slot spans `[g - f/2, g - f/2 + f)` around its nominal time `g`, as in the head).
fn nominal(t: i64, phase: i64, f: i64) -> i64 {
    let (t, p, f) = (i128::from(t), i128::from(phase), i128::from(f.max(1)));
    let g = p + f * (t - p + f / 2).div_euclid(f);
    g.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Slots of one series, as sorted, disjoint, non-adjacent ranges `[lo, hi)` of nominal times.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Known(Vec<(i64, i64)>);

impl Known {
    fn contains(&self, g: i64) -> bool {
        let i = self.0.partition_point(|r| r.0 <= g);
        i > 0 && g < self.0[i - 1].1
    }

    /// Adds the slot at nominal time `g` of a series of frequency `f`.
    fn insert(&mut self, g: i64, f: i64) {
        let end = g.saturating_add(f);
        match self.0.last_mut() {
            // Moving forward, the common case.
            Some(last) if g == last.1 => {
                last.1 = end;
                return;
            }
            Some(last) if g > last.1 => {
                self.0.push((g, end));
                return;
            }
            None => {
                self.0.push((g, end));
                return;
            }
            Some(_) => {}
        }
        let i = self.0.partition_point(|r| r.0 <= g);
        if i > 0 && g < self.0[i - 1].1 {
            return;
        }
        let joins_prev = i > 0 && self.0[i - 1].1 == g;
        let joins_next = i < self.0.len() && self.0[i].0 == end;
        match (joins_prev, joins_next) {
            (true, true) => {
                self.0[i - 1].1 = self.0[i].1;
                self.0.remove(i);
            }
            (true, false) => self.0[i - 1].1 = end,
            (false, true) => self.0[i].0 = g,
            (false, false) => self.0.insert(i, (g, end)),
        }
    }

    /// Forgets the slots before time `from`.
    fn prune(&mut self, from: i64) {
        let gone = self.0.partition_point(|r| r.1 <= from);
        self.0.drain(..gone);
        if let Some(first) = self.0.first_mut() {
            first.0 = first.0.max(from);
        }
    }

    /// `t`, or the end of the range holding it.
    fn skip(&self, t: i64) -> i64 {
        let i = self.0.partition_point(|r| r.0 <= t);
        if i > 0 && t < self.0[i - 1].1 {
            self.0[i - 1].1
        } else {
            t
        }
    }
}

/// What a source knows of one series.
#[derive(Debug)]
struct Track {
    text: Arc<str>,
    /// Its id, once a tap batch or the series list named it (a restored series has none before).
    id: Option<SeriesId>,
    /// The nominal times of its slots, modulo the frequency, once it has stored data.
    phase: Option<i64>,
    /// Slots emitted (or stored before the source started), at or after the horizon.
    known: Known,
    /// The LSN a replay read of the series saw everything up to: tap samples of writes at or below it are
    /// in the store read, and dropped.
    cutoff: Lsn,
}

impl Track {
    /// Notes that a sample at time `t` was emitted (unless its slot is below `floor`, where it is forgotten
    /// anyway).
    fn record(&mut self, db: &Db, f: i64, t: i64, floor: Option<i64>) -> Result<(), StreamError> {
        if self.phase.is_none() {
            // The write was applied before its tap batch was made: its series has a grid, unless the sample
            // was refused as too old (or freed since), and then there is nothing to replay either.
            if let Some(id) = self.id {
                self.phase = db.grid_phase(id, f)?;
            }
        }
        let Some(phase) = self.phase else { return Ok(()) };
        let g = nominal(t, phase, f);
        if floor.is_some_and(|fl| g < fl) {
            return Ok(());
        }
        self.known.insert(g, f);
        if self.known.0.len() > PRUNE_AT {
            if let Some(fl) = floor {
                self.known.prune(fl);
            }
        }
        Ok(())
    }
}

/// The series a source knows, by id and by path text.
#[derive(Debug, Default)]
struct Tracks {
    all: Vec<Track>,
    by_id: FxHashMap<SeriesId, usize>,
    by_text: FxHashMap<Arc<str>, usize>,
}

impl Tracks {
    /// The track of a path text, made if new.
    fn of_text(&mut self, text: &str) -> usize {
        if let Some(&i) = self.by_text.get(text) {
            return i;
        }
        let text: Arc<str> = Arc::from(text);
        self.all.push(Track { text: text.clone(), id: None, phase: None, known: Known::default(), cutoff: Lsn(0) });
        self.by_text.insert(text, self.all.len() - 1);
        self.all.len() - 1
    }

    /// The track of series `id` with path text `text`.
    fn of(&mut self, id: SeriesId, text: &str) -> usize {
        if let Some(&i) = self.by_id.get(&id) {
            return i;
        }
        let i = self.of_text(text);
        self.all[i].id = Some(id);
        self.by_id.insert(id, i);
        i
    }

    fn of_tap(&mut self, s: &TapSeries) -> usize {
        self.of(s.id, &s.text)
    }
}

/// A replay from the store in progress (see the module docs).
#[derive(Debug, Default)]
struct Replay {
    /// Series still to read: track and id.
    pending: VecDeque<(usize, SeriesId)>,
    /// Rows read and not yet emitted: track, nominal time, value.
    rows: VecDeque<(usize, i64, f64)>,
    /// The largest time replayed so far.
    max_time: Option<i64>,
}

/// A decoded live state.
#[derive(Debug, PartialEq)]
struct LiveState {
    max_time: Option<i64>,
    horizon: Option<i64>,
    series: Vec<(String, Vec<(i64, i64)>)>,
}

/// One subtask of the live stream of a metric (see [`crate::stream::live`]).
pub struct LiveSource {
    db: Arc<Db>,
    selector: Selector,
    metric_id: u32,
    frequency: i64,
    share: TapShare,
    tap: WriteTap,
    lateness: i64,
    batch_rows: usize,
    /// A tap batch partly emitted, and the first sample not emitted yet.
    carry: Option<(TapBatch, usize)>,
    /// Tap batches queued when a replay ended, emitted before the watermark moves to `raise_to`.
    backlog: VecDeque<TapBatch>,
    /// The largest time a replay emitted, for the watermark once the backlog is emitted.
    raise_to: Option<i64>,
    max_time: Option<i64>,
    /// The largest horizon what is known was pruned to (never decreases).
    horizon: Option<i64>,
    /// Writes at or below this LSN were applied before the source started.
    start_lsn: Lsn,
    tracks: Tracks,
    replay: Option<Replay>,
    replayed: u64,
}

impl std::fmt::Debug for LiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSource")
            .field("tap", &self.tap)
            .field("lateness", &self.lateness)
            .field("batch_rows", &self.batch_rows)
            .field("max_time", &self.max_time)
            .field("horizon", &self.horizon)
            .field("series", &self.tracks.all.len())
            .field("replaying", &self.replay.is_some())
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
        let (metric_id, config) =
            db.engine().metric(metric).ok_or_else(|| crate::Error::UnknownMetric(metric.to_owned()))?;
        let mut src = LiveSource {
            db,
            selector: selector.clone(),
            metric_id,
            frequency: config.frequency.max(1),
            share,
            tap,
            lateness: config.frequency,
            batch_rows: DEFAULT_BATCH_ROWS,
            carry: None,
            backlog: VecDeque::new(),
            raise_to: None,
            max_time: None,
            horizon: None,
            start_lsn: Lsn(0),
            tracks: Tracks::default(),
            replay: None,
            replayed: 0,
        };
        src.start()?;
        Ok(src)
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

    /// Rows replayed from the store since the last restore.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }

    /// Whether a replay from the store is still under way.
    pub fn replaying(&self) -> bool {
        self.replay.is_some()
    }

    /// The tap this source reads.
    pub fn tap(&self) -> &WriteTap {
        &self.tap
    }

    /// The series of this subtask's share that exist now (in the order the index lists them), and how many
    /// series of the registry the list covers.
    fn share_series(&self) -> (Vec<(SeriesId, SeriesPath)>, usize) {
        let (mut list, seen) = self.db.series_of(&self.selector, self.metric_id);
        list.retain(|(_, p)| self.share.takes(&p.to_bytes()));
        (list, seen)
    }

    /// The series of this subtask's share defined since the registry held `seen`.
    fn share_series_since(&self, seen: usize) -> Vec<(SeriesId, SeriesPath)> {
        self.db
            .engine()
            .series_since(seen)
            .into_iter()
            .filter(|(_, m, bytes)| *m == self.metric_id && self.share.takes(bytes))
            .filter_map(|(id, _, bytes)| SeriesPath::decode(&bytes).ok().map(|(p, _)| (id, p)))
            .filter(|(_, p)| crate::tap::covers(&self.selector, p))
            .collect()
    }

    /// Fixes the start (see the module docs): the LSN before which writes are not this source's, and the
    /// newest slot each series of the share held then.
    fn start(&mut self) -> Result<(), StreamError> {
        let (list, seen) = self.share_series();
        let texts: Vec<String> = list.iter().map(|(_, p)| p.to_string()).collect();
        let f = self.frequency;
        let pause = self.db.pause_writes()?;
        self.start_lsn = pause.lsn();
        // Series defined after the list was taken.
        let extra = self.share_series_since(seen);
        let all =
            list.iter().zip(texts).map(|((id, _), t)| (*id, t)).chain(extra.iter().map(|(id, p)| (*id, p.to_string())));
        for (id, text) in all {
            if let Some(last) = self.db.stored_last(id, f)? {
                let i = self.tracks.of(id, &text);
                self.tracks.all[i].known = Known(vec![(i64::MIN, last.saturating_add(f))]);
            }
        }
        drop(pause);
        Ok(())
    }

    /// The horizon a snapshot now would have: the watermark, or an earlier snapshot's horizon if later.
    fn current_horizon(&self) -> Option<i64> {
        match (self.horizon, self.watermark()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Slots before this are forgotten: one interval before the horizon, so that the slot holding the
    /// horizon (where a replay starts) is always kept.
    fn floor(&self) -> Option<i64> {
        self.current_horizon().map(|h| h.saturating_sub(self.frequency))
    }

    fn poll_live(&mut self) -> Result<SourcePoll, StreamError> {
        let mut names = StringBuilder::new();
        let mut times = Vec::new();
        let mut values = Vec::new();
        let floor = self.floor();
        let mut slots: Vec<usize> = Vec::new();
        while times.len() < self.batch_rows {
            let (batch, from) = match self.carry.take() {
                Some(c) => c,
                None => match self.backlog.pop_front().or_else(|| self.tap.try_recv()) {
                    Some(b) => (b, 0),
                    None => break,
                },
            };
            let lsn = batch.lsn();
            if lsn <= self.start_lsn {
                continue;
            }
            slots.clear();
            slots.extend(batch.series().iter().map(|s| self.tracks.of_tap(s)));
            let samples = batch.samples();
            let mut i = from;
            while i < samples.len() && times.len() < self.batch_rows {
                let s = samples[i];
                i += 1;
                let track = &mut self.tracks.all[slots[s.series as usize]];
                if lsn <= track.cutoff {
                    continue;
                }
                names.append_value(&*track.text);
                times.push(s.time);
                values.push(s.value);
                track.record(&self.db, self.frequency, s.time, floor)?;
            }
            if i < samples.len() {
                self.carry = Some((batch, i));
            }
        }
        if let Some(&m) = times.iter().max() {
            self.max_time = Some(self.max_time.map_or(m, |x| x.max(m)));
        }
        if self.backlog.is_empty() && self.carry.is_none() {
            if let Some(m) = self.raise_to.take() {
                self.max_time = Some(self.max_time.map_or(m, |x| x.max(m)));
            }
        }
        if times.is_empty() {
            return Ok(SourcePoll::Idle);
        }
        let cols: Vec<arrow_array::ArrayRef> =
            vec![Arc::new(names.finish()), Arc::new(Int64Array::from(times)), Arc::new(Float64Array::from(values))];
        Ok(SourcePoll::Batch(RecordBatch::try_new(scan_schema(), cols)?))
    }

    /// Reads the next group of series to replay, with the writer paused.
    fn read_replay(&mut self) -> Result<(), StreamError> {
        let LiveSource { db, tracks, replay, horizon, frequency: f, batch_rows, .. } = self;
        let (Some(replay), f) = (replay.as_mut(), *f) else { return Ok(()) };
        let mut buf = Vec::new();
        let mut scanned = 0usize;
        let pause = db.pause_writes()?;
        while let Some((ti, id)) = replay.pending.pop_front() {
            let track = &mut tracks.all[ti];
            track.cutoff = pause.lsn();
            let (Some(first), Some(last)) = (db.stored_first(id, f)?, db.stored_last(id, f)?) else { continue };
            if track.phase.is_none() {
                track.phase = db.grid_phase(id, f)?;
            }
            let Some(phase) = track.phase else { continue };
            let lo = horizon.map_or(first, |h| nominal(h, phase, f).max(first));
            // On the series' grid (ranges of a state from elsewhere might not be).
            let skipped = track.known.skip(lo);
            let mut t0 = nominal(skipped, phase, f);
            if t0 < skipped {
                t0 = t0.saturating_add(f);
            }
            while t0 <= last {
                // Both on the series' grid, within the range of stored times.
                let n = usize::try_from((last - t0) / f + 1).unwrap_or(1).min(REPLAY_SCAN_SLOTS);
                db.sample_series(id, f, t0, n, &mut buf)?;
                for (k, &v) in buf.iter().enumerate() {
                    let g = t0 + k as i64 * f;
                    if !v.is_nan() && !track.known.contains(g) {
                        replay.rows.push_back((ti, g, v));
                    }
                }
                scanned += n;
                t0 = t0.saturating_add(n as i64 * f);
            }
            if replay.rows.len() >= *batch_rows || scanned >= REPLAY_SCAN_SLOTS {
                break;
            }
        }
        drop(pause);
        Ok(())
    }

    /// Reads until there are rows to replay or nothing is left to read; ends the replay then if none are
    /// left (the watermark moves on to what was replayed). Returns whether the replay goes on.
    fn fill_replay(&mut self) -> Result<bool, StreamError> {
        loop {
            let Some(replay) = self.replay.as_mut() else { return Ok(false) };
            if !replay.rows.is_empty() {
                return Ok(true);
            }
            if replay.pending.is_empty() {
                let replayed_to = replay.max_time;
                self.replay = None;
                // What the tap holds now was written while the replay ran, some of it (series replayed
                // early) older than what was replayed last: the watermark moves on once that is emitted.
                while let Some(b) = self.tap.try_recv() {
                    self.backlog.push_back(b);
                }
                match (replayed_to, self.backlog.is_empty()) {
                    (Some(m), true) => self.max_time = Some(self.max_time.map_or(m, |x| x.max(m))),
                    (m, _) => self.raise_to = m,
                }
                return Ok(false);
            }
            self.read_replay()?;
        }
    }

    /// The next replayed rows, or `None` once the replay is done.
    fn poll_replay(&mut self) -> Result<Option<RecordBatch>, StreamError> {
        if !self.fill_replay()? {
            return Ok(None);
        }
        let (Some(replay), f) = (self.replay.as_mut(), self.frequency) else { return Ok(None) };
        let n = replay.rows.len().min(self.batch_rows);
        let mut names = StringBuilder::new();
        let (mut times, mut values) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (ti, g, v) in replay.rows.drain(..n) {
            let track = &mut self.tracks.all[ti];
            names.append_value(&*track.text);
            times.push(g);
            values.push(v);
            track.known.insert(g, f);
            replay.max_time = Some(replay.max_time.map_or(g, |m| m.max(g)));
        }
        self.replayed += n as u64;
        // If these were the last rows, the replay ends now, so that the runtime, which asks for the watermark
        // after a batch, learns the new one with this batch rather than with the next live one (there may be
        // none for a while).
        self.fill_replay()?;
        let cols: Vec<arrow_array::ArrayRef> =
            vec![Arc::new(names.finish()), Arc::new(Int64Array::from(times)), Arc::new(Float64Array::from(values))];
        Ok(Some(RecordBatch::try_new(scan_schema(), cols)?))
    }
}

impl Source for LiveSource {
    fn poll(&mut self) -> Result<SourcePoll, StreamError> {
        if self.replay.is_some() {
            if let Some(b) = self.poll_replay()? {
                return Ok(SourcePoll::Batch(b));
            }
        }
        self.poll_live()
    }

    /// The largest event time emitted minus the lateness; `None` before the first row. While a replay runs
    /// (and until what the tap queued meanwhile is emitted), the restored one.
    fn watermark(&self) -> Option<i64> {
        self.max_time.map(|m| m.saturating_sub(self.lateness))
    }

    /// Live state v1 (`format/checkpoint.md`, "Operator states"): the largest time emitted, the horizon,
    /// and per series the slots at or after it that were emitted (see the module docs).
    fn snapshot(&mut self) -> Result<Vec<u8>, StreamError> {
        let horizon = self.current_horizon();
        self.horizon = horizon;
        let floor = self.floor();
        let mut kept: Vec<&Track> = Vec::new();
        for t in &mut self.tracks.all {
            if let Some(fl) = floor {
                t.known.prune(fl);
            }
        }
        kept.extend(self.tracks.all.iter().filter(|t| !t.known.0.is_empty()));
        kept.sort_by(|a, b| a.text.cmp(&b.text));
        let count = u32::try_from(kept.len())
            .map_err(|_| StreamError::Operator(format!("live state: {} series do not fit a u32", kept.len())))?;
        let mut s =
            Vec::with_capacity(22 + kept.iter().map(|t| 8 + t.text.len() + 16 * t.known.0.len()).sum::<usize>());
        s.push(LIVE_STATE_VERSION);
        s.push(u8::from(self.max_time.is_some()) | u8::from(horizon.is_some()) << 1);
        for v in [self.max_time, horizon].into_iter().flatten() {
            s.extend_from_slice(&v.to_le_bytes());
        }
        s.extend_from_slice(&count.to_le_bytes());
        for t in kept {
            let ranges = &t.known.0;
            let (len, n) = (u32::try_from(t.text.len()), u32::try_from(ranges.len()));
            let (Ok(len), Ok(n)) = (len, n) else {
                return Err(StreamError::Operator(format!("live state: series {:?} does not fit", t.text)));
            };
            s.extend_from_slice(&len.to_le_bytes());
            s.extend_from_slice(t.text.as_bytes());
            s.extend_from_slice(&n.to_le_bytes());
            for &(lo, hi) in ranges {
                s.extend_from_slice(&lo.to_le_bytes());
                s.extend_from_slice(&hi.to_le_bytes());
            }
        }
        Ok(s)
    }

    /// Restores live state v1 and starts a replay from the store (see the module docs); an empty state
    /// restores as a fresh start. Refuses (changing nothing) another version, unknown flag bits, a length
    /// that does not match the fields, a series text that is empty, not UTF-8 or repeated, and ranges that
    /// are empty, out of order or overlapping.
    fn restore(&mut self, state: &[u8]) -> Result<(), StreamError> {
        if state.is_empty() {
            return Ok(());
        }
        let st = decode_state(state)?;
        let mut tracks = Tracks::default();
        for (text, ranges) in st.series {
            let i = tracks.of_text(&text);
            tracks.all[i].known = Known(ranges);
        }
        let mut pending = VecDeque::new();
        let (list, _) = self.share_series();
        for (id, path) in list {
            let i = tracks.of(id, &path.to_string());
            pending.push_back((i, id));
        }
        self.tracks = tracks;
        self.max_time = st.max_time;
        self.horizon = st.horizon;
        self.carry = None;
        self.backlog.clear();
        self.raise_to = None;
        self.replayed = 0;
        self.replay = Some(Replay { pending, rows: VecDeque::new(), max_time: None });
        Ok(())
    }
}

/// Decodes live state v1.
fn decode_state(state: &[u8]) -> Result<LiveState, StreamError> {
    let err = |what: String| StreamError::Operator(format!("live state: {what}"));
    let mut r = Reader { bytes: state, at: 0 };
    let version = r.u8("version").map_err(err)?;
    if version != LIVE_STATE_VERSION {
        return Err(err(format!("version {version} (this build reads {LIVE_STATE_VERSION})")));
    }
    let flags = r.u8("flags").map_err(err)?;
    if flags & !0b11 != 0 {
        return Err(err(format!("unknown flag bits {flags:#04x}")));
    }
    let max_time = if flags & 1 != 0 { Some(r.i64("max_time").map_err(err)?) } else { None };
    let horizon = if flags & 2 != 0 { Some(r.i64("horizon").map_err(err)?) } else { None };
    let count = r.u32("series count").map_err(err)? as usize;
    // Each series takes at least 8 bytes: check before allocating for it.
    if count > r.left() / 8 {
        return Err(err(format!("truncated: {count} series need at least {} bytes, {} left", 8 * count, r.left())));
    }
    let mut series = Vec::with_capacity(count);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..count {
        let len = r.u32("series text length").map_err(err)? as usize;
        let text = r.take(len, "series text").map_err(err)?;
        let text = std::str::from_utf8(text).map_err(|_| err(format!("series text at {} is not UTF-8", r.at - len)))?;
        if text.is_empty() || !seen.insert(text) {
            return Err(err(format!("series text {text:?} is empty or repeated")));
        }
        let n = r.u32("range count").map_err(err)? as usize;
        if n > r.left() / 16 {
            return Err(err(format!("truncated: {n} ranges of {text:?} need {} bytes, {} left", 16 * n, r.left())));
        }
        let mut ranges: Vec<(i64, i64)> = Vec::with_capacity(n);
        for _ in 0..n {
            let (lo, hi) = (r.i64("range").map_err(err)?, r.i64("range").map_err(err)?);
            if lo >= hi || ranges.last().is_some_and(|p| p.1 > lo) {
                return Err(err(format!("range [{lo}, {hi}) of {text:?} is empty, out of order or overlapping")));
            }
            ranges.push((lo, hi));
        }
        series.push((text.to_owned(), ranges));
    }
    if r.left() != 0 {
        return Err(err(format!("{} bytes after the last series", r.left())));
    }
    Ok(LiveState { max_time, horizon, series })
}

/// Reads little-endian fields off a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.left() {
            return Err(format!("truncated at byte {} reading the {what}", self.at));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(b))
    }

    fn i64(&mut self, what: &str) -> Result<i64, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(i64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{HostKey, Namespace};
    use crate::{Aggregation, Batch, MetricConfig, Options};
    use arrow_array::{Array, Float64Array, Int64Array, StringArray};

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

    /// Everything a source emits until it is idle, as `(host, time, value)`, in order.
    fn drain(src: &mut LiveSource) -> Vec<(String, i64, f64)> {
        let mut out = Vec::new();
        while let Some(b) = poll(src) {
            let names = b.column(0).as_any().downcast_ref::<StringArray>().expect("names");
            let times = b.column(1).as_any().downcast_ref::<Int64Array>().expect("times");
            let values = b.column(2).as_any().downcast_ref::<Float64Array>().expect("values");
            for i in 0..b.num_rows() {
                let host = names.value(i).strip_prefix("host:c/").expect("a host of cluster c").to_owned();
                out.push((host, times.value(i), values.value(i)));
            }
        }
        out
    }

    fn sorted(mut rows: Vec<(String, i64, f64)>) -> Vec<(String, i64, f64)> {
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        rows
    }

    fn owned(rows: &[(&str, i64, f64)]) -> Vec<(String, i64, f64)> {
        rows.iter().map(|&(h, t, v)| (h.to_owned(), t, v)).collect()
    }

    #[test]
    fn known_slots_insert_merge_and_prune() {
        let mut k = Known::default();
        for g in [100, 110, 130, 120, 150, 90, 110] {
            k.insert(g, 10);
        }
        assert_eq!(k.0, vec![(90, 140), (150, 160)]);
        assert!(k.contains(90) && k.contains(130) && !k.contains(140) && k.contains(150) && !k.contains(160));
        k.insert(140, 10);
        assert_eq!(k.0, vec![(90, 160)]);
        assert_eq!((k.skip(85), k.skip(100), k.skip(160)), (85, 160, 160));
        k.prune(120);
        assert_eq!(k.0, vec![(120, 160)]);
        k.prune(160);
        assert!(k.0.is_empty());
        // Nominal times: a slot spans [g - f/2, g - f/2 + f) around g.
        assert_eq!((nominal(1004, 0, 10), nominal(1005, 0, 10), nominal(994, 7, 10)), (1000, 1010, 997));
        // No overflow at the edges: the grid point is clamped.
        assert_eq!((nominal(i64::MIN, 3, 10), nominal(i64::MIN, 9, 10)), (i64::MIN + 1, i64::MIN));
        assert_eq!(nominal(i64::MAX, 0, 10), i64::MAX);
    }

    #[test]
    fn snapshot_and_restore_round_trip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = db(tmp.path());
        let sel = Selector::new(Namespace::Host, vec![]).expect("selector");
        let mut a = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source").lateness(30);
        write(&db, &[("a", 1000, 1.0), ("b", 1000, 2.0), ("a", 1010, 3.0), ("a", 1030, 4.0), ("b", 1040, 5.0)]);
        assert_eq!(drain(&mut a).len(), 5);
        assert_eq!(a.watermark(), Some(1010));
        let state = a.snapshot().expect("snapshot");
        // Horizon 1010; slots from 1000 on (one interval before it) are kept.
        let want = LiveState {
            max_time: Some(1040),
            horizon: Some(1010),
            series: vec![
                ("host:c/a".into(), vec![(1000, 1020), (1030, 1040)]),
                ("host:c/b".into(), vec![(1000, 1010), (1040, 1050)]),
            ],
        };
        assert_eq!(decode_state(&state).expect("decode"), want);
        // A new source restored from it has the same watermark and snapshots the same bytes, before and
        // after its replay (which finds nothing: every stored slot was emitted).
        let mut b = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source").lateness(30);
        b.restore(&state).expect("restore");
        assert!(b.replaying());
        assert_eq!(b.watermark(), Some(1010));
        assert_eq!(b.snapshot().expect("snapshot"), state);
        assert!(drain(&mut b).is_empty());
        assert!(!b.replaying());
        assert_eq!(b.replayed(), 0);
        assert_eq!(b.snapshot().expect("snapshot"), state);
        // A state taken before the first row has no horizon and records what was stored at the start.
        let mut c = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source");
        let st = decode_state(&c.snapshot().expect("snapshot")).expect("decode");
        assert_eq!((st.max_time, st.horizon), (None, None));
        assert_eq!(
            st.series,
            vec![("host:c/a".into(), vec![(i64::MIN, 1040)]), ("host:c/b".into(), vec![(i64::MIN, 1050)])]
        );
    }

    #[test]
    fn restore_replays_exactly_what_was_not_emitted() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = db(tmp.path());
        let sel = Selector::new(Namespace::Host, vec![]).expect("selector");
        // Before the source: never emitted, never replayed.
        write(&db, &[("b", 900, 0.5), ("b", 910, 0.5)]);
        let mut a = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source").lateness(30);
        // Emitted before the snapshot; `a` has a gap at 1020.
        write(&db, &[("a", 1000, 1.0), ("a", 1010, 2.0), ("a", 1030, 3.0), ("b", 920, 4.0), ("b", 1040, 5.0)]);
        assert_eq!(drain(&mut a).len(), 5);
        // Acknowledged but still in the tap at the snapshot.
        write(&db, &[("a", 1040, 6.0), ("b", 1050, 7.0)]);
        let state = a.snapshot().expect("snapshot");
        assert_eq!(a.watermark(), Some(1010), "horizon 1010");
        // After the snapshot: in order, out of order into the gap (at or after the horizon), a series that
        // first appears now, and one behind the horizon (into `b`'s gap at 930..1030), which is lost.
        write(&db, &[("a", 1050, 8.0), ("a", 1020, 9.0), ("c", 1020, 10.0), ("b", 990, 11.0)]);
        // What the failed run emitted after the snapshot is emitted again: the downstream state is the
        // snapshot's too.
        assert_eq!(drain(&mut a).len(), 6);
        drop(a);
        // Written while no source runs.
        write(&db, &[("a", 1060, 12.0), ("c", 1030, 13.0)]);
        let mut b = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source").lateness(30).batch_rows(2);
        b.restore(&state).expect("restore");
        // After the restore, before the first poll: both in the store and in the tap, emitted once (`a` from
        // the store; `d`, defined after the restore listed the series, from the tap).
        write(&db, &[("a", 1070, 14.0), ("d", 1000, 15.0)]);
        // The replay comes in batches of 2 while the watermark stays at the restored one.
        let first = poll(&mut b).expect("a batch");
        assert_eq!(first.num_rows(), 2);
        assert!(b.replaying());
        assert_eq!(b.watermark(), Some(1010));
        let mut got = drain(&mut b);
        let names = first.column(0).as_any().downcast_ref::<StringArray>().expect("names");
        let times = first.column(1).as_any().downcast_ref::<Int64Array>().expect("times");
        let values = first.column(2).as_any().downcast_ref::<Float64Array>().expect("values");
        for i in 0..2 {
            got.push((names.value(i).trim_start_matches("host:c/").to_owned(), times.value(i), values.value(i)));
        }
        let want = owned(&[
            ("a", 1020, 9.0),
            ("a", 1040, 6.0),
            ("a", 1050, 8.0),
            ("a", 1060, 12.0),
            ("a", 1070, 14.0),
            ("b", 1050, 7.0),
            ("c", 1020, 10.0),
            ("c", 1030, 13.0),
            ("d", 1000, 15.0),
        ]);
        assert_eq!(sorted(got), want);
        assert_eq!(b.replayed(), 8, "all but `d` came from the store: the tap's copies were dropped");
        assert!(!b.replaying());
        assert_eq!(b.watermark(), Some(1040), "the largest time replayed minus the lateness");
        // Then live, once.
        write(&db, &[("a", 1080, 16.0), ("c", 1040, 17.0)]);
        assert_eq!(sorted(drain(&mut b)), owned(&[("a", 1080, 16.0), ("c", 1040, 17.0)]));
        assert_eq!(b.replayed(), 8);
        // A second restore from the same state replays the same and what came since, but not `d`: it is
        // in the store now, and behind the horizon.
        let mut c = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source").lateness(30);
        c.restore(&state).expect("restore");
        let again = sorted(drain(&mut c));
        assert_eq!(again.len(), 10, "{again:?}");
        assert!(again.contains(&("a".to_owned(), 1080, 16.0)) && !again.iter().any(|r| r.0 == "d"));
    }

    #[test]
    fn the_watermark_waits_for_what_was_written_while_the_replay_ran() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = db(tmp.path());
        let sel = Selector::new(Namespace::Host, vec![]).expect("selector");
        let mut a = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source").lateness(0);
        write(&db, &[("x", 1000, 1.0), ("y", 1000, 1.0), ("z", 1000, 1.0)]);
        assert_eq!(drain(&mut a).len(), 3);
        let state = a.snapshot().expect("snapshot");
        drop(a);
        let mut b = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source").lateness(0).batch_rows(1);
        b.restore(&state).expect("restore");
        write(&db, &[("x", 1010, 2.0), ("y", 1010, 2.0), ("z", 1010, 2.0)]);
        let one = |src: &mut LiveSource| {
            let b = poll(src).expect("a row");
            assert_eq!(b.num_rows(), 1);
            let names = b.column(0).as_any().downcast_ref::<StringArray>().expect("names");
            let times = b.column(1).as_any().downcast_ref::<Int64Array>().expect("times");
            (names.value(0).trim_start_matches("host:c/").to_owned(), times.value(0))
        };
        // Series by series: `x`, then `y` (read ahead), ...
        assert_eq!(one(&mut b), ("x".to_owned(), 1010));
        // ... while writes go on: `x` was read, so its new sample is in the tap; `z` is read later, newer.
        write(&db, &[("x", 1020, 3.0)]);
        write(&db, &[("z", 1020, 3.0), ("z", 1030, 4.0), ("z", 1040, 5.0)]);
        assert_eq!(one(&mut b), ("y".to_owned(), 1010));
        for t in [1010, 1020, 1030, 1040] {
            assert_eq!(one(&mut b), ("z".to_owned(), t));
        }
        // The replay is over, but `x` at 1020 is still to come: the watermark does not pass it yet, and a
        // checkpoint now keeps it replayable.
        assert!(!b.replaying());
        assert_eq!(b.watermark(), Some(1000));
        let state = b.snapshot().expect("snapshot");
        assert_eq!(drain(&mut b), owned(&[("x", 1020, 3.0)]), "`z`'s tap copies were dropped");
        assert_eq!(b.watermark(), Some(1040));
        let mut c = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source").lateness(0);
        c.restore(&state).expect("restore");
        assert_eq!(drain(&mut c), owned(&[("x", 1020, 3.0)]));
    }

    #[test]
    fn a_checkpoint_before_the_first_row_replays_from_the_start() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = db(tmp.path());
        let sel = Selector::new(Namespace::Host, vec![]).expect("selector");
        write(&db, &[("a", 1000, 1.0), ("a", 1010, 2.0)]);
        let mut a = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source");
        // Written after the start, never polled.
        write(&db, &[("a", 1020, 3.0), ("a", 1005, 4.0)]);
        let state = a.snapshot().expect("snapshot");
        drop(a);
        write(&db, &[("a", 1030, 5.0), ("b", 1000, 6.0)]);
        let mut b = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source");
        b.restore(&state).expect("restore");
        assert_eq!(b.watermark(), None);
        // The history before the start is not replayed; neither is the rewrite of the slot at 1010 (1005 is
        // in it): the slot was stored before the start.
        assert_eq!(poll(&mut b).map(|r| r.num_rows()), Some(3));
        // The last replayed batch ends the replay and moves the watermark (the runtime asks after a batch).
        assert!(!b.replaying());
        assert_eq!(b.watermark(), Some(1020));
        assert!(poll(&mut b).is_none());
        let mut c = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source");
        c.restore(&state).expect("restore");
        assert_eq!(sorted(drain(&mut c)), owned(&[("a", 1020, 3.0), ("a", 1030, 5.0), ("b", 1000, 6.0)]));
    }

    #[test]
    fn subtasks_replay_their_own_share() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = db(tmp.path());
        let sel = Selector::new(Namespace::Host, vec![]).expect("selector");
        let hosts: Vec<String> = (0..16).map(|h| format!("h{h}")).collect();
        let mut states = Vec::new();
        for s in 0..2 {
            let mut src = LiveSource::new(db.clone(), &sel, "load", s, 2).expect("source");
            states.push(src.snapshot().expect("snapshot"));
        }
        let rows: Vec<(&str, i64, f64)> = hosts.iter().map(|h| (h.as_str(), 1000, 1.0)).collect();
        write(&db, &rows);
        let mut got = Vec::new();
        for (s, state) in states.iter().enumerate() {
            let mut src = LiveSource::new(db.clone(), &sel, "load", s, 2).expect("source");
            src.restore(state).expect("restore");
            let mine = drain(&mut src);
            assert!(!mine.is_empty() && mine.len() < hosts.len(), "subtask {s} replayed {}", mine.len());
            got.extend(mine);
        }
        let mut want: Vec<(String, i64, f64)> = hosts.iter().map(|h| (h.clone(), 1000, 1.0)).collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(sorted(got), want);
    }

    #[test]
    fn a_bad_state_is_an_error_and_changes_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = db(tmp.path());
        let sel = Selector::new(Namespace::Host, vec![]).expect("selector");
        let mut a = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source").lateness(0);
        write(&db, &[("a", 1000, 1.0), ("b", 1000, 2.0)]);
        drain(&mut a);
        let good = a.snapshot().expect("snapshot");
        // version, flags, max_time, horizon, count, then "host:c/a" with one range, then "host:c/b".
        assert_eq!(good.len(), 1 + 1 + 8 + 8 + 4 + 2 * (4 + 8 + 4 + 16));
        let text_a = 1 + 1 + 16 + 4;
        let range_a = text_a + 4 + 8 + 4;
        let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
        let mut v = good.clone();
        v[0] = 2;
        cases.push((v, "version 2"));
        let mut v = good.clone();
        v[1] |= 4;
        cases.push((v, "flag bits"));
        cases.push((good[..good.len() - 1].to_vec(), "truncated"));
        cases.push((good[..1].to_vec(), "truncated"));
        let mut v = good.clone();
        v.push(0);
        cases.push((v, "after the last series"));
        let mut v = good.clone();
        v[18..22].copy_from_slice(&u32::MAX.to_le_bytes());
        cases.push((v, "series need"));
        let mut v = good.clone();
        v[text_a + 4] = 0xff;
        cases.push((v, "UTF-8"));
        let mut v = good.clone();
        v[text_a + 4 + 7] = b'b';
        cases.push((v, "repeated"));
        let mut v = good.clone();
        v[range_a..range_a + 8].copy_from_slice(&2000i64.to_le_bytes());
        cases.push((v, "empty, out of order"));
        let mut v = good.clone();
        v[text_a + 4 + 8..text_a + 4 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        cases.push((v, "ranges of"));
        let mut b = LiveSource::new(db.clone(), &sel, "load", 0, 1).expect("source").lateness(0);
        for (bytes, what) in &cases {
            let err = b.restore(bytes).expect_err(what).to_string();
            assert!(err.contains("live state") && err.contains(what), "{what}: {err}");
            assert!(!b.replaying(), "{what}: a refused state changes nothing");
        }
        // An empty state (from before live state existed) is a fresh start.
        b.restore(&[]).expect("empty");
        assert!(!b.replaying());
        b.restore(&good).expect("the good one");
        assert!(drain(&mut b).is_empty());
        assert_eq!(b.watermark(), Some(1000));
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
