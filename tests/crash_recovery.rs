//! Model-based crash recovery through the fault-injecting file system.
//!
//! Random interleavings of writes, frees, compactions into blocks, checkpoints, injected I/O faults (every mutating file operation after
//! the N-th fails, which freezes the disk at that point, like a crash in the middle of whatever was running) and
//! crashes (a crash drops any subset of unsynced writes, tears writes, keeps each dirty mmapped page old or new,
//! and undoes a random suffix of unsynced directory operations). After every crash the database is reopened
//! and compared with a model of what was acknowledged: with `Durability::Sync` every acknowledged sample must
//! be there with its exact bits, and nothing may appear that was never written. The one operation that failed
//! (its outcome is unknown to the caller) may have happened or not, sample by sample.
//!
//! The case count comes from `PROPTEST_CASES`.
#![allow(clippy::needless_range_loop)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use silt::storage::io::sim::SimVfs;
use silt::{Aggregation, Batch, Db, Durability, JobKey, MetricConfig, Options, Selector};

const T: i64 = 1_000_000;
const F: i64 = 10;
const SERIES: u32 = 3;
const SLOTS: i64 = 12_000; // the range observed; writes move forward through it
const STEP: i64 = 250; // each write op moves the window forward by this many slots
const PAGE: i64 = 512;

#[derive(Clone, Debug)]
enum Op {
    Write(Vec<(u32, i64, f64)>),
    Free(u32, i64),
    Compact(u32, i64),
    Checkpoint,
    Fault(u64),
    Crash(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec((0..SERIES, 0..700i64, -1e6f64..1e6), 1..300).prop_map(Op::Write),
        1 => (0..SERIES, 0..3i64).prop_map(|(s, k)| Op::Free(s, k)),
        1 => (0..SERIES, 0..3i64).prop_map(|(s, k)| Op::Compact(s, k)),
        2 => Just(Op::Checkpoint),
        1 => (0u64..120).prop_map(Op::Fault),
        2 => any::<u64>().prop_map(Op::Crash),
    ]
}

/// What the database must hold: per series, slot -> value in the head and in blocks, and the floor page.
/// (A page may also still be in the head after a crash between a compaction's block and its free; the head
/// then holds the same values, so the model does not tell the two apart.)
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    slots: Vec<BTreeMap<i64, f64>>,
    blocked: Vec<BTreeMap<i64, f64>>,
    floor: Vec<i64>,
}

impl Model {
    fn new() -> Self {
        Model {
            slots: vec![BTreeMap::new(); SERIES as usize],
            blocked: vec![BTreeMap::new(); SERIES as usize],
            floor: vec![0; SERIES as usize],
        }
    }
    /// What a read shows: blocked slots below the head's oldest page, and the head's slots.
    fn visible(&self, s: usize) -> BTreeMap<i64, f64> {
        let head_lo = self.slots[s].keys().next().map_or(i64::MAX, |k| k / PAGE * PAGE);
        let mut v: BTreeMap<i64, f64> = self.blocked[s].range(..head_lo).map(|(k, v)| (*k, *v)).collect();
        v.extend(self.slots[s].iter().map(|(k, v)| (*k, *v)));
        v
    }
    /// Moves the head's pages below `k` into a new block (if they hold anything); writes there are refused.
    fn compact(&mut self, s: u32, k: i64) {
        let s = s as usize;
        let moved: Vec<(i64, f64)> = self.slots[s].range(..k * PAGE).map(|(a, b)| (*a, *b)).collect();
        if let Some(&(last, _)) = moved.last() {
            self.floor[s] = self.floor[s].max(last / PAGE + 1);
            self.slots[s].retain(|slot, _| slot / PAGE >= k);
            self.blocked[s].extend(moved);
        }
    }
    fn pages(&self, s: usize) -> BTreeSet<i64> {
        self.slots[s].keys().map(|k| k / PAGE).collect()
    }
    fn write(&mut self, samples: &[(u32, i64, f64)]) {
        for &(s, slot, v) in samples {
            if slot / PAGE >= self.floor[s as usize] {
                self.slots[s as usize].insert(slot, v);
            }
        }
    }
    fn free(&mut self, s: u32, k: i64) {
        let s = s as usize;
        let freed: Vec<i64> = self.pages(s).into_iter().filter(|&p| p < k).collect();
        if let Some(&last) = freed.last() {
            self.floor[s] = self.floor[s].max(last + 1);
            self.slots[s].retain(|slot, _| slot / PAGE >= k);
        }
    }
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Write(w) => self.write(w),
            Op::Free(s, k) => self.free(*s, *k),
            Op::Compact(s, k) => self.compact(*s, *k),
            _ => {}
        }
    }
}

/// Turns generated ops (write offsets relative to a window that moves forward with every write, frees relative
/// to the window's page) into absolute slots and page numbers, like a live series moving through time.
fn materialize(ops: Vec<Op>) -> Vec<Op> {
    let mut cursor = 0i64;
    ops.into_iter()
        .map(|op| match op {
            Op::Write(w) => {
                let out = w.into_iter().map(|(s, off, v)| (s, (cursor + off).min(SLOTS - 1), v)).collect();
                cursor += STEP;
                Op::Write(out)
            }
            Op::Free(s, back) => Op::Free(s, (cursor / PAGE - back).max(1)),
            Op::Compact(s, back) => Op::Compact(s, (cursor / PAGE - back).max(1)),
            other => other,
        })
        .collect()
}

fn key(s: u32) -> JobKey {
    JobKey::new("job", "op", s).expect("key")
}

fn options(vfs: &SimVfs) -> Options {
    Options {
        vfs: Arc::new(vfs.clone()),
        durability: Durability::Sync,
        segment_size: 64 << 10,
        pages_per_file: 4,
        checkpoint_interval: None,
        ..Options::default()
    }
}

thread_local! {
    /// Scheduled checkpoints for the variant that runs them in the background all the time.
    static BACKGROUND: std::cell::Cell<Option<std::time::Duration>> = const { std::cell::Cell::new(None) };
}

fn open(vfs: &SimVfs) -> Db {
    let o = Options { checkpoint_interval: BACKGROUND.with(|b| b.get()), ..options(vfs) };
    let db = Db::open("/data", o).unwrap_or_else(|e| panic!("recovery failed: {e}"));
    db.declare_metric("m", MetricConfig { frequency: F, aggregation: Aggregation::Sum }).expect("declare");
    db
}

/// Reads every series back as slot -> value (NaN = absent; the model only writes finite values).
fn observe(db: &Db) -> Vec<BTreeMap<i64, f64>> {
    (0..SERIES)
        .map(|s| {
            let r = db.read(&key(s), "m", T - 100 * F, T + (SLOTS + 100) * F).expect("read");
            let first = (r.from - T) / F;
            r.values.iter().enumerate().filter(|(_, v)| !v.is_nan()).map(|(i, v)| (first + i as i64, *v)).collect()
        })
        .collect()
}

/// The samples of a write op as a batch.
fn batch(w: &[(u32, i64, f64)]) -> Batch {
    let mut b = Batch::new();
    for &(s, slot, v) in w {
        b.push(&key(s), "m", T + slot * F, v);
    }
    b
}

/// Fixes every series' grid before anything can fail (slot 0 is the first write of each); returns the model.
fn setup(db: &Db) -> Model {
    let first: Vec<(u32, i64, f64)> = (0..SERIES).map(|s| (s, 0, 0.5)).collect();
    db.write(&batch(&first)).expect("setup write");
    let mut model = Model::new();
    model.write(&first);
    model
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut vfs = SimVfs::new();
    let mut db = open(&vfs);
    let mut model = setup(&db);
    let mut uncertain: Option<Op> = None;

    for op in ops {
        match &op {
            Op::Write(w) => match db.write(&batch(w)) {
                Ok(ack) => {
                    prop_assert_eq!(ack.durability, Durability::Sync);
                    let before = model.clone();
                    model.write(w);
                    let stored: usize = w.len() - too_old(&before, w);
                    prop_assert_eq!(ack.outcome.stored as usize, stored);
                }
                Err(_) if uncertain.is_none() => uncertain = Some(op.clone()),
                Err(_) => {}
            },
            Op::Free(s, k) => match db.free(&key(*s), "m", T - F / 2 + k * PAGE * F) {
                Ok(_) => model.free(*s, *k),
                Err(_) if uncertain.is_none() => uncertain = Some(op.clone()),
                Err(_) => {}
            },
            Op::Compact(s, k) => match db.compact_selector(&Selector::from(&key(*s)), T - F / 2 + k * PAGE * F) {
                Ok(_) => model.compact(*s, *k),
                Err(_) if uncertain.is_none() => uncertain = Some(op.clone()),
                Err(_) => {}
            },
            Op::Checkpoint => {
                let _ = db.checkpoint();
            }
            Op::Fault(n) => vfs.fail_after(*n),
            Op::Crash(seed) => {
                let crashed = vfs.crash(*seed);
                drop(db);
                vfs = crashed;
                db = open(&vfs);
                let got = observe(&db);
                model = reconcile(&model, uncertain.take(), &got, &db)?;
            }
        }
    }
    // A final crash that keeps only what was synced.
    let crashed = vfs.crash_clean();
    drop(db);
    let db = open(&crashed);
    reconcile(&model, uncertain.take(), &observe(&db), &db)?;
    // And a clean reopen after close is identical.
    let before = observe(&db);
    db.close().expect("close");
    let db = open(&crashed);
    prop_assert_eq!(observe(&db), before);
    Ok(())
}

fn too_old(model: &Model, w: &[(u32, i64, f64)]) -> usize {
    w.iter().filter(|&&(s, slot, _)| slot / PAGE < model.floor[s as usize]).count()
}

/// Checks the recovered state against the model, letting the one failed operation have happened or not per
/// sample, and returns the model that matches what is on disk now.
fn reconcile(
    model: &Model,
    uncertain: Option<Op>,
    got: &[BTreeMap<i64, f64>],
    db: &Db,
) -> Result<Model, TestCaseError> {
    let mut with = model.clone();
    if let Some(op) = &uncertain {
        with.apply(op);
    }
    for s in 0..SERIES as usize {
        let (mv, wv) = (model.visible(s), with.visible(s));
        let slots: BTreeSet<i64> = mv.keys().chain(wv.keys()).chain(got[s].keys()).copied().collect();
        for slot in slots {
            let g = got[s].get(&slot).map(|v| v.to_bits());
            let a = mv.get(&slot).map(|v| v.to_bits());
            let b = wv.get(&slot).map(|v| v.to_bits());
            prop_assert!(
                g == a || g == b,
                "series {} slot {}: recovered {:?}, acknowledged {:?}, with the failed op {:?} ({:?})",
                s,
                slot,
                g.map(f64::from_bits),
                a.map(f64::from_bits),
                b.map(f64::from_bits),
                uncertain
            );
        }
    }
    // Adopt what is on disk: the failed op's effect is now decided. A failed compaction changes no value; it
    // happened iff its block was published (then a later free of the head leaves its data readable).
    if let Some(Op::Compact(s, _)) = uncertain {
        let s = s as usize;
        let moved: Vec<i64> = with.blocked[s].keys().filter(|k| !model.blocked[s].contains_key(k)).copied().collect();
        let (Some(&lo), Some(&hi)) = (moved.first(), moved.last()) else { return Ok(model.clone()) };
        // Series ids follow the order of the first write (series 0, 1, 2 in `setup`).
        let (t_lo, t_hi) = (T - F / 2 + lo / PAGE * PAGE * F, T - F / 2 + hi * F);
        let happened = db.engine().blocks().iter().any(|b| {
            b.chunks_of(silt::storage::SeriesId(s as u32)).unwrap().iter().any(|c| c.start <= t_lo && c.end() > t_hi)
        });
        if happened {
            return Ok(with);
        }
        // No block: the values stay in the head, but the seal may have survived; the head says.
        let mut now = model.clone();
        if let Some(t) = db.engine().head().write_floor(silt::storage::SeriesId(s as u32)) {
            now.floor[s] = now.floor[s].max((t - (T - F / 2)) / (PAGE * F));
        }
        return Ok(now);
    }
    let mut now = model.clone();
    for s in 0..SERIES as usize {
        // Writes and frees touch the head only.
        now.slots[s] =
            got[s].iter().filter(|(k, _)| !model.blocked[s].contains_key(k)).map(|(k, v)| (*k, *v)).collect();
        if with.floor[s] != model.floor[s] {
            // A failed free: it happened iff none of the pages it frees holds data any more.
            let freed_data = model.slots[s].keys().any(|k| k / PAGE < with.floor[s]);
            let still = got[s].keys().any(|k| k / PAGE < with.floor[s]);
            if freed_data && !still {
                now.floor[s] = with.floor[s];
            }
        }
    }
    Ok(now)
}

proptest! {
    #![proptest_config(ProptestConfig { max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_samples_survive_any_crash(ops in proptest::collection::vec(op(), 1..40)) {
        BACKGROUND.with(|b| b.set(None));
        run(materialize(ops))?;
    }

    /// The same with a scheduled checkpoint every millisecond, so crashes and faults land while the
    /// checkpointer thread msyncs and writes the manifest concurrently with writes.
    #[test]
    fn acknowledged_samples_survive_crashes_during_background_checkpoints(ops in proptest::collection::vec(op(), 1..40)) {
        BACKGROUND.with(|b| b.set(Some(std::time::Duration::from_millis(1))));
        let r = run(materialize(ops));
        BACKGROUND.with(|b| b.set(None));
        r?;
    }
}

#[test]
fn crash_after_every_mutating_operation_of_a_fixed_workload() {
    // Deterministic sweep: a fault after exactly n operations, for every n the workload reaches.
    let ops_for = |n: u64| {
        materialize(vec![
            Op::Write((0..200).map(|i| (i % SERIES, i as i64 * 7 % SLOTS, i as f64)).collect()),
            Op::Checkpoint,
            Op::Fault(n),
            Op::Write((0..200).map(|i| (i % SERIES, i as i64 * 11 % SLOTS, -(i as f64))).collect()),
            Op::Free(1, 2),
            Op::Compact(0, 1),
            Op::Checkpoint,
            Op::Write((0..50).map(|i| (i % SERIES, 1500 + i as i64, 3.0)).collect()),
            Op::Compact(2, 0),
            Op::Free(2, 0),
            Op::Crash(n),
        ])
    };
    // Every step of the writes, the frees, both compactions (seal, block file, rename, directory sync,
    // free) and the checkpoints gets the fault once.
    for n in 0..90 {
        if let Err(e) = run(ops_for(n)) {
            panic!("fault after {n} operations: {e}");
        }
    }
}

/// With `Durability::None` nothing is promised between checkpoints, but a crash may still only show, for every
/// slot, its value at the last checkpoint or a value written to that very slot since, or nothing where the slot
/// was empty then or a free since covers it. A value from another series or slot, or from nowhere, fails this.
fn run_unsynced(ops: Vec<Op>, seed: u64) -> Result<(), TestCaseError> {
    let vfs = SimVfs::new();
    let db = Db::open("/data", Options { durability: Durability::None, ..options(&vfs) }).expect("open");
    db.declare_metric("m", MetricConfig { frequency: F, aggregation: Aggregation::Sum }).expect("declare");
    let mut model = setup(&db);
    db.checkpoint().expect("checkpoint");
    let mut durable = model.clone();
    let mut since: BTreeMap<(u32, i64), Vec<u64>> = BTreeMap::new();
    let mut freed_since: Vec<i64> = vec![0; SERIES as usize]; // pages below this may have been freed
    for op in &ops {
        match op {
            Op::Write(w) => {
                for &(s, slot, v) in w {
                    since.entry((s, slot)).or_default().push(v.to_bits());
                }
                let ack = db.write(&batch(w)).expect("write");
                prop_assert_eq!(ack.durability, Durability::None);
                model.write(w);
            }
            Op::Free(s, k) => {
                db.free(&key(*s), "m", T - F / 2 + k * PAGE * F).expect("free");
                model.free(*s, *k);
                freed_since[*s as usize] = freed_since[*s as usize].max(*k);
            }
            Op::Compact(s, k) => {
                db.compact_selector(&Selector::from(&key(*s)), T - F / 2 + k * PAGE * F).expect("compact");
                model.compact(*s, *k);
            }
            Op::Checkpoint => {
                db.checkpoint().expect("checkpoint");
                durable = model.clone();
                since.clear();
                freed_since = vec![0; SERIES as usize];
            }
            Op::Fault(_) | Op::Crash(_) => {}
        }
    }
    let crashed = vfs.crash(seed);
    drop(db);
    let db = open(&crashed);
    let got = observe(&db);
    for s in 0..SERIES {
        let su = s as usize;
        let dv = durable.visible(su);
        let slots: BTreeSet<i64> = dv.keys().chain(got[su].keys()).copied().collect();
        for slot in slots {
            let g = got[su].get(&slot).map(|v| v.to_bits());
            let d = dv.get(&slot).map(|v| v.to_bits());
            let ok = g == d
                || g.is_some_and(|g| since.get(&(s, slot)).is_some_and(|vs| vs.contains(&g)))
                || (g.is_none() && slot / PAGE < freed_since[su]);
            prop_assert!(
                ok,
                "series {} slot {}: recovered {:?}, at checkpoint {:?}",
                s,
                slot,
                g.map(f64::from_bits),
                d.map(f64::from_bits)
            );
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn unsynced_crash_shows_only_written_values(ops in proptest::collection::vec(op(), 1..40), seed in any::<u64>()) {
        run_unsynced(materialize(ops), seed)?;
    }
}
