//! Restoring the live source: while writers keep writing, a `LiveSource` restored from its last snapshot
//! re-emits from the store exactly the acknowledged samples it had not emitted, then goes on live:
//! - sources killed at random points (also in the middle of a replay) and restored, subtask by subtask,
//!   emit every acknowledged sample exactly once, under two concurrent writers;
//! - a pipeline LiveSource → shuffle → tumbling 10 s sums → store sink, killed at random points under the
//!   controller and restored from its checkpoints by new engines, writes exactly the sums of every
//!   acknowledged write.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use rand::{Rng, SeedableRng};
use silt::keys::Namespace;
use silt::stream::controller::{checkpoint_name, PipelineDef, PipelineState, StopMode, StreamEngine};
use silt::stream::graph::{EdgeKind, LogicalGraph, LogicalNode, NodeKind};
use silt::stream::live::LiveSource;
use silt::stream::operators::{Aggregate, Map, Source, SourcePoll, TumblingWindow};
use silt::stream::runtime::RunConfig;
use silt::stream::store::{scan_schema, StoreSink};
use silt::stream::StreamError;
use silt::{Aggregation, Batch, Db, Durability, HostKey, Key, MetricConfig, Options, Selector};

/// A multiple of the window width.
const T0: i64 = 1_700_000_000;

fn cases() -> u64 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(4).clamp(1, 16)
}

fn open(dir: &std::path::Path) -> Arc<Db> {
    let opts = Options { durability: Durability::None, checkpoint_interval: None, ..Options::default() };
    let db = Db::open(dir, opts).expect("open");
    db.declare_metric("load", MetricConfig { frequency: 1, aggregation: Aggregation::Avg }).expect("declare");
    db.declare_metric("out", MetricConfig { frequency: 10, aggregation: Aggregation::Sum }).expect("declare");
    Arc::new(db)
}

fn hosts() -> Selector {
    Selector::new(Namespace::Host, vec![silt::SelectorElement::Name("c".into())]).expect("selector")
}

/// A sample as a source emits it: series text, time, value bits.
type Row = (String, i64, u64);

fn rows_of(b: &RecordBatch, out: &mut Vec<Row>) {
    let names = b.column(0).as_any().downcast_ref::<StringArray>().expect("series");
    let times = b.column(1).as_any().downcast_ref::<Int64Array>().expect("time");
    let values = b.column(2).as_any().downcast_ref::<Float64Array>().expect("value");
    for i in 0..b.num_rows() {
        out.push((names.value(i).to_owned(), times.value(i), values.value(i).to_bits()));
    }
}

/// One writer: `hosts` series from the start and `late_hosts` more from step `steps / 3`, one write per step
/// at time `T0 + step`, except that host 0 writes every fifth step two steps late (out of order, within
/// the lateness). Before step `i` it waits (at most a minute) until `may_write(i)`.
/// Returns every acknowledged sample.
struct Writer {
    name: &'static str,
    hosts: usize,
    late_hosts: usize,
    steps: i64,
    pace: Duration,
}

impl Writer {
    fn run(&self, db: &Db, progress: &AtomicI64, may_write: &dyn Fn(i64) -> bool) -> Vec<Row> {
        let mut acked = Vec::new();
        let value = |h: usize, t: i64| ((t * 7 + h as i64 * 3) % 13) as f64;
        for step in 0..self.steps {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !may_write(step) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(100));
            }
            let active = self.hosts + if step >= self.steps / 3 { self.late_hosts } else { 0 };
            let mut b = Batch::new();
            let mut rows = Vec::new();
            for h in 0..active {
                let t = T0 + step;
                let t = match (h, step % 5) {
                    // (Not at the very start: a sample older than a series' first one is refused as too old.)
                    (0, 0) if step > 0 => continue,
                    (0, 2) if step > 5 => {
                        // Host 0's skipped sample, two seconds late, then its own.
                        rows.push((h, t - 2));
                        t
                    }
                    _ => t,
                };
                rows.push((h, t));
            }
            for &(h, t) in &rows {
                let key = HostKey::new("c", &format!("{}{h}", self.name)).expect("key");
                b.push(&key, "load", t, value(h, t));
            }
            db.write(&b).expect("write");
            for (h, t) in rows {
                acked.push((format!("host:c/{}{h}", self.name), t, value(h, t).to_bits()));
            }
            progress.store(step, Ordering::SeqCst);
            std::thread::sleep(self.pace);
        }
        progress.store(i64::MAX, Ordering::SeqCst);
        acked
    }
}

/// Polls until the source is idle (or `limit` batches), collecting rows.
fn poll_some(src: &mut LiveSource, limit: usize, out: &mut Vec<Row>) {
    for _ in 0..limit {
        match src.poll().expect("poll") {
            SourcePoll::Batch(b) => rows_of(&b, out),
            SourcePoll::Idle => return,
            SourcePoll::End => panic!("a live source never ends"),
        }
    }
}

#[test]
fn restored_sources_emit_every_acknowledged_sample_once_under_concurrent_writers() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for case in 0..cases() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = open(tmp.path());
        let sel = hosts();
        let make =
            |s: usize| LiveSource::new(db.clone(), &sel, "load", s, 2).expect("source").lateness(20).batch_rows(16);
        // Subtask by subtask: the state of its last snapshot, the rows it had emitted as of then, and the
        // current incarnation with what it emitted since that snapshot (lost if it is killed).
        let mut states: Vec<Vec<u8>> = Vec::new();
        let mut kept: Vec<Vec<Row>> = vec![Vec::new(), Vec::new()];
        let mut live: Vec<(LiveSource, Vec<Row>)> = Vec::new();
        for s in 0..2 {
            // A checkpoint right at the start: before the first row.
            let mut src = make(s);
            states.push(src.snapshot().expect("snapshot"));
            live.push((src, Vec::new()));
        }
        let progress = [AtomicI64::new(-1), AtomicI64::new(-1)];
        let (mut kills, mut replayed, mut mid_replay) = (0u64, 0u64, 0u64);
        let acked: Vec<Row> = std::thread::scope(|scope| {
            let writers: Vec<_> = (0..2)
                .map(|w| {
                    let (db, progress) = (&db, &progress);
                    scope.spawn(move || {
                        let writer = Writer {
                            name: ["a", "b"][w],
                            hosts: 6,
                            late_hosts: 3,
                            steps: 400,
                            pace: Duration::from_micros(300),
                        };
                        // At most 5 steps ahead of the other writer: within the lateness.
                        writer.run(db, &progress[w], &|step| progress[1 - w].load(Ordering::SeqCst) >= step - 5)
                    })
                })
                .collect();
            while !writers.iter().all(|w| w.is_finished()) || kills < 3 {
                let s = rng.gen_range(0..2);
                let (src, since) = &mut live[s];
                match rng.gen_range(0..10) {
                    // Poll a little.
                    0..=5 => {
                        let n = rng.gen_range(1..4);
                        poll_some(src, n, since);
                    }
                    // A checkpoint: what was emitted so far is kept.
                    6..=7 => {
                        if src.replaying() {
                            mid_replay += 1;
                        }
                        states[s] = src.snapshot().expect("snapshot");
                        kept[s].append(since);
                    }
                    // A kill: what was emitted since the checkpoint is lost; a new source restores it.
                    _ => {
                        replayed += src.replayed();
                        *src = make(s);
                        src.restore(&states[s]).expect("restore");
                        since.clear();
                        kills += 1;
                    }
                }
                std::thread::sleep(Duration::from_micros(rng.gen_range(0..500)));
            }
            writers.into_iter().flat_map(|w| w.join().expect("writer")).collect()
        });
        // The end: one last kill, and each subtask's last incarnation reads everything.
        for (s, (src, _)) in live.iter_mut().enumerate() {
            replayed += src.replayed();
            *src = make(s);
            src.restore(&states[s]).expect("restore");
            poll_some(src, usize::MAX, &mut kept[s]);
            assert!(!src.replaying(), "idle only after the replay");
            replayed += src.replayed();
            assert_eq!(src.dropped(), 0);
        }
        let mut got: Vec<Row> = kept.concat();
        let mut want = acked;
        got.sort();
        want.sort();
        let missing: Vec<&Row> = want.iter().filter(|r| got.binary_search(r).is_err()).take(5).collect();
        let mut dup = got.clone();
        dup.dedup();
        assert_eq!(dup.len(), got.len(), "case {case}: a row was emitted twice");
        assert!(
            missing.is_empty(),
            "case {case}: {} rows of {} missing, e.g. {missing:?}",
            want.len() - got.len().min(want.len()),
            want.len()
        );
        assert_eq!(got, want, "case {case}");
        assert!(kills >= 3, "case {case}: only {kills} kills");
        assert!(replayed > 0, "case {case}: nothing was replayed");
        eprintln!("case {case}: {kills} kills, {replayed} rows replayed, {mid_replay} checkpoints mid-replay");
    }
}

/// live (2) → key from the host name (2) → shuffle → tumbling 10 s sums (2) → store sink writing `out` (2).
fn pipeline(db: Arc<Db>) -> LogicalGraph {
    fn input_schema() -> arrow_schema::SchemaRef {
        TumblingWindow::input_schema()
    }
    let mut g = LogicalGraph::new();
    let db_src = db.clone();
    let src = g.add(LogicalNode {
        name: "live".into(),
        parallelism: 2,
        input_schema: None,
        output_schema: Some(scan_schema()),
        kind: NodeKind::Source(Arc::new(move |s, p| {
            Box::new(LiveSource::new(db_src.clone(), &hosts(), "load", s, p).expect("live source").lateness(5))
        })),
    });
    let key = g.add(LogicalNode {
        name: "key".into(),
        parallelism: 2,
        input_schema: Some(scan_schema()),
        output_schema: Some(input_schema()),
        kind: NodeKind::Operator(Arc::new(|_, _| {
            Box::new(Map(|b: RecordBatch| {
                let names = b.column(0).as_any().downcast_ref::<StringArray>().expect("series");
                let keys: Result<Vec<i64>, StreamError> = (0..b.num_rows())
                    .map(|i| {
                        names
                            .value(i)
                            .strip_prefix("host:c/h")
                            .and_then(|k| k.parse().ok())
                            .ok_or_else(|| StreamError::Operator(format!("unexpected series {}", names.value(i))))
                    })
                    .collect();
                let cols: Vec<arrow_array::ArrayRef> =
                    vec![Arc::new(Int64Array::from(keys?)), b.column(1).clone(), b.column(2).clone()];
                Ok::<_, StreamError>(RecordBatch::try_new(input_schema(), cols)?)
            }))
        })),
    });
    let win = g.add(LogicalNode {
        name: "sum".into(),
        parallelism: 2,
        input_schema: Some(input_schema()),
        output_schema: Some(TumblingWindow::output_schema()),
        kind: NodeKind::Operator(Arc::new(|_, _| {
            Box::new(TumblingWindow::new(10, Aggregate::Sum, "key", "time", "value"))
        })),
    });
    let sink = g.add(LogicalNode {
        name: "store".into(),
        parallelism: 2,
        input_schema: Some(TumblingWindow::output_schema()),
        output_schema: None,
        kind: NodeKind::Operator(Arc::new(move |_, _| {
            Box::new(StoreSink {
                db: db.clone(),
                metric: "out".into(),
                columns: ["key".into(), "window_start".into(), "value".into()],
                key_of: Arc::new(|k| {
                    HostKey::new("c", &format!("h{k}"))
                        .map(|h| h.path())
                        .map_err(|e| StreamError::Operator(e.to_string()))
                }),
            })
        })),
    });
    g.connect(src, key, EdgeKind::Forward);
    g.connect(key, win, EdgeKind::Shuffle { key: "key".into() });
    g.connect(win, sink, EdgeKind::Forward);
    g
}

fn def(g: LogicalGraph, interval: Duration) -> PipelineDef {
    let mut d = PipelineDef::new("live_sums", g);
    d.checkpoint_interval = Some(interval);
    d.run = RunConfig { queue_rows: 256, idle_after: Duration::from_secs(60) };
    d
}

/// Sums of `out` the store holds, by (host, window start).
fn stored_sums(db: &Db, hosts: usize, to: i64) -> BTreeMap<(usize, i64), f64> {
    let mut out = BTreeMap::new();
    for h in 0..hosts {
        let r = db.read(&HostKey::new("c", &format!("h{h}")).expect("key"), "out", T0, to).expect("read");
        for (i, v) in r.values.iter().enumerate() {
            if !v.is_nan() {
                out.insert((h, r.from + i as i64 * r.frequency), *v);
            }
        }
    }
    out
}

#[test]
fn a_killed_live_pipeline_restored_from_its_checkpoints_writes_the_sums_of_every_acknowledged_write() {
    const HOSTS: usize = 6;
    const LATE_HOSTS: usize = 3;
    const STEPS: i64 = 900;
    let wait = Duration::from_secs(60);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for case in 0..cases().min(4) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = open(tmp.path());
        let progress = Arc::new(AtomicI64::new(-1));
        let writing = Arc::new(AtomicBool::new(true));
        // The writer gets an eighth of its steps per incarnation, given when the one before is killed, so that
        // the writes spread over at least eight incarnations and the times between them.
        let allowed = Arc::new(AtomicI64::new(STEPS / 8));
        let mut writer = None;
        let (mut kills, mut written_while_down, mut restored) = (0u64, 0i64, 0u64);
        // Each incarnation is a new engine on the same database, as after a process restart.
        let (engine, h) = loop {
            let engine = StreamEngine::new(2, db.clone()).expect("engine");
            restored += u64::from(db.state(&checkpoint_name("live_sums")).expect("state").is_some());
            let interval = Duration::from_millis(rng.gen_range(3..30));
            let h = engine.submit(def(pipeline(db.clone()), interval)).expect("submit");
            let running = h.wait_for(wait, |i| i.state == PipelineState::Running);
            assert_eq!(running.total_restarts, 0, "case {case}: {running:?}");
            assert_eq!(running.state, PipelineState::Running, "case {case}: {running:?}");
            if writer.is_none() {
                // The writer starts once the pipeline has a checkpoint: every write is the pipeline's, and even
                // the earliest kill restores from a checkpoint.
                let ck = h.wait_for(wait, |i| i.checkpoint_epoch > 0);
                assert!(ck.checkpoint_epoch > 0, "case {case}: no checkpoint: {ck:?}");
                let (db, progress, writing, allowed) = (db.clone(), progress.clone(), writing.clone(), allowed.clone());
                writer = Some(std::thread::spawn(move || {
                    let pace = Duration::from_micros(500);
                    let w = Writer { name: "h", hosts: HOSTS, late_hosts: LATE_HOSTS, steps: STEPS, pace };
                    let acked = w.run(&db, &progress, &|step| step < allowed.load(Ordering::SeqCst));
                    writing.store(false, Ordering::SeqCst);
                    acked
                }));
            }
            if !writing.load(Ordering::SeqCst) {
                break (engine, h);
            }
            std::thread::sleep(Duration::from_millis(rng.gen_range(10..100)));
            h.stop(StopMode::Immediate);
            let end = h.wait_for(wait, |i| i.state.is_final());
            assert_eq!(end.state, PipelineState::Stopped, "case {case}: {end:?}");
            kills += 1;
            drop(engine);
            // Down for a while, with at least one write meanwhile.
            let before = progress.load(Ordering::SeqCst);
            allowed.store(((kills as i64 + 1) * STEPS / 8).min(STEPS), Ordering::SeqCst);
            let deadline = Instant::now() + wait;
            while progress.load(Ordering::SeqCst) == before
                && writing.load(Ordering::SeqCst)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..20)));
            written_while_down += (progress.load(Ordering::SeqCst).min(STEPS) - before).max(0);
        };
        let acked = writer.take().expect("the writer ran").join().expect("writer");
        // A last write far ahead moves every source's watermark past every window written before.
        let mut b = Batch::new();
        for k in 0..HOSTS + LATE_HOSTS {
            b.push(&HostKey::new("c", &format!("h{k}")).expect("key"), "load", T0 + STEPS + 100, 0.0);
        }
        db.write(&b).expect("write");
        // The model: the 10 s sums of every acknowledged write.
        let mut want: BTreeMap<(usize, i64), f64> = BTreeMap::new();
        for (series, t, v) in &acked {
            let k: usize = series.strip_prefix("host:c/h").and_then(|k| k.parse().ok()).expect("host");
            *want.entry((k, t.div_euclid(10) * 10)).or_default() += f64::from_bits(*v);
        }
        // The store holds every acknowledged sample (what a replay reads).
        let stored: usize = (0..HOSTS + LATE_HOSTS)
            .map(|k| {
                let key = HostKey::new("c", &format!("h{k}")).expect("key");
                let r = db.read(&key, "load", T0, T0 + STEPS).expect("read");
                r.values.iter().filter(|v| !v.is_nan()).count()
            })
            .sum();
        assert_eq!(stored, acked.len(), "case {case}");
        let to = T0 + STEPS + 10;
        let deadline = Instant::now() + wait;
        let mut got = stored_sums(&db, HOSTS + LATE_HOSTS, to);
        while got != want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            got = stored_sums(&db, HOSTS + LATE_HOSTS, to);
        }
        let info = h.info();
        assert_eq!(info.total_restarts, 0, "case {case}: the last run failed: {info:?}");
        h.stop(StopMode::Immediate);
        let end = h.wait_for(wait, |i| i.state.is_final());
        assert_eq!(end.state, PipelineState::Stopped, "case {case}: {end:?}");
        drop(engine);
        let diff: Vec<_> =
            want.iter().filter(|(k, v)| got.get(k) != Some(v)).map(|(k, v)| (k, v, got.get(k))).take(5).collect();
        assert!(diff.is_empty(), "case {case} after {kills} kills: windows differ (key, want, got): {diff:?}");
        assert_eq!(got.len(), want.len(), "case {case}: windows the model does not have");
        assert!(kills >= 7, "case {case}: only {kills} kills");
        assert_eq!(restored, kills, "case {case}: every restart restores from a checkpoint");
        assert!(written_while_down > 0, "case {case}: nothing was written while the pipeline was down");
        eprintln!("case {case}: {kills} kills, {written_while_down} steps written while down");
    }
}
