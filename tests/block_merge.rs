//! Merging adjacent blocks: the same answers before, during (a crash at every step, through the
//! fault-injecting file system) and after, and fewer blocks once it completes.

use std::sync::Arc;

use silt::storage::io::sim::SimVfs;
use silt::{Aggregation, Batch, Db, HostKey, MetricConfig, Options, Selector};

const T: i64 = 1_000_000;
const F: i64 = 10;
const PAGE: i64 = 512;

fn open(vfs: &SimVfs) -> Db {
    let o = Options {
        vfs: Arc::new(vfs.clone()),
        segment_size: 1 << 20,
        pages_per_file: 64,
        checkpoint_interval: None,
        ..Options::default()
    };
    let db = Db::open("/db", o).expect("open");
    db.declare_metric("m", MetricConfig { frequency: F, aggregation: Aggregation::Sum }).expect("declare");
    db
}

fn key(h: u32) -> HostKey {
    HostKey::new("c", &format!("n{h}")).expect("key")
}

/// Three series with six pages each, compacted one page at a time: five blocks. Series 2 skips page 3.
fn setup(vfs: &SimVfs) -> Db {
    let db = open(vfs);
    let mut b = Batch::new();
    for h in 0..3u32 {
        for i in 0..6 * PAGE {
            if h == 2 && i / PAGE == 3 {
                continue;
            }
            b.push(&key(h), "m", T + i * F, f64::from(h) * 1e4 + i as f64 / 8.0);
        }
    }
    db.write(&b).expect("write");
    for k in 1..=5 {
        for h in 0..3 {
            db.compact_selector(&Selector::from(&key(h)), T - F / 2 + k * PAGE * F).expect("compact");
        }
    }
    db
}

fn snapshot(db: &Db) -> Vec<Vec<u64>> {
    (0..3)
        .map(|h| {
            let r = db.read(&key(h), "m", T - 100, T + 7 * PAGE * F).expect("read");
            let mut v: Vec<u64> = vec![r.from as u64];
            v.extend(r.values.iter().map(|x| if x.is_nan() { u64::MAX } else { x.to_bits() }));
            v
        })
        .collect()
}

#[test]
fn merging_keeps_every_answer_and_leaves_one_block() {
    let vfs = SimVfs::new();
    let db = setup(&vfs);
    assert_eq!(db.engine().blocks().len(), 14); // series 2 has no page 3 to compact
    let before = snapshot(&db);
    let stats = db.query_stats(&Selector::from(&HostKey::new("c", "n1").unwrap()), "m", T, T + 6 * PAGE * F).unwrap();
    let gone = db.engine().merge_blocks(1 << 30).expect("merge");
    assert_eq!(gone, 13);
    assert_eq!(db.engine().blocks().len(), 1);
    assert_eq!(snapshot(&db), before);
    let after = db.query_stats(&Selector::from(&HostKey::new("c", "n1").unwrap()), "m", T, T + 6 * PAGE * F).unwrap();
    assert_eq!((after.samples, after.min, after.max), (stats.samples, stats.min, stats.max));
    // One chunk per series where its pages touch; series 2 has a gap at page 3 but merges across it only
    // where chunks touch: pages 0-2 and page 4.
    let b = &db.engine().blocks()[0];
    assert_eq!((b.chunk_count(), b.chunks().count()), (4, 4));
    assert_eq!(db.engine().merge_blocks(1 << 30).expect("merge again"), 0);
    drop(db);
    let db = open(&vfs);
    assert_eq!(snapshot(&db), before);
}

#[test]
fn a_crash_at_every_step_of_a_merge_changes_no_answer() {
    let reference = snapshot(&setup(&SimVfs::new()));
    let mut completed = false;
    for n in 0..40 {
        let vfs = SimVfs::new();
        let db = setup(&vfs);
        vfs.fail_after(n);
        let merged = db.engine().merge_blocks(1 << 30);
        for (seed, crashed) in [(n, vfs.crash(n)), (u64::MAX, vfs.crash_clean())] {
            let db = open(&crashed);
            assert_eq!(snapshot(&db), reference, "fault after {n} operations, crash seed {seed}");
            assert!(db.recovery().damaged_blocks.is_empty(), "{:?}", db.recovery().damaged_blocks);
        }
        drop(db);
        if merged.is_ok() {
            completed = true;
            break;
        }
    }
    assert!(completed, "the merge never got through: the sweep did not reach its end");
}
