//! How pages leave the head and how blocks settle: small page classes, Gorilla for short chunks until they settle,
//! merges that turn a compaction's short chunks into long ones, compactions split into bounded
//! blocks, and compacting retention that reuses the pages it frees.

use std::sync::Arc;

use silt::storage::codec::Codec;
use silt::storage::engine::{MergePolicy, COMPACT_BATCH_VALUES, PCO_MIN_VALUES};
use silt::storage::io::sim::SimVfs;
use silt::{Aggregation, Batch, Db, HostKey, MetricConfig, Options, Selector};

const T: i64 = 1_000_000;
const F: i64 = 60;
const SLOTS: i64 = 64;

fn open(vfs: &SimVfs, o: Options) -> Db {
    let o = Options {
        vfs: Arc::new(vfs.clone()),
        segment_size: 1 << 20,
        page_slots: SLOTS as u32,
        pages_per_file: 64,
        checkpoint_interval: None,
        ..o
    };
    let db = Db::open("/db", o).expect("open");
    db.declare_metric("m", MetricConfig { frequency: F, aggregation: Aggregation::Avg }).expect("declare");
    db
}

fn key(h: u32) -> HostKey {
    HostKey::new("c", &format!("n{h}")).expect("key")
}

fn value(h: u32, i: i64) -> f64 {
    f64::from(h) * 1e4 + (i % 97) as f64 / 4.0
}

fn write(db: &Db, hosts: u32, slots: std::ops::Range<i64>) {
    let mut b = Batch::new();
    for h in 0..hosts {
        for i in slots.clone() {
            b.push(&key(h), "m", T + i * F, value(h, i));
        }
    }
    db.write(&b).expect("write");
}

fn read_all(db: &Db, hosts: u32, slots: i64) -> Vec<Vec<f64>> {
    (0..hosts).map(|h| db.read(&key(h), "m", T, T + slots * F).expect("read").values).collect()
}

fn expected(hosts: u32, slots: i64) -> Vec<Vec<f64>> {
    (0..hosts).map(|h| (0..slots).map(|i| value(h, i)).collect()).collect()
}

fn all() -> Selector {
    Selector::new(silt::keys::Namespace::Host, vec![silt::SelectorElement::Name("c".into())]).expect("selector")
}

#[test]
fn a_compaction_writes_short_chunks_with_gorilla_and_settling_makes_them_longer_and_pco() {
    let vfs = SimVfs::new();
    let db = open(&vfs, Options::default());
    let pages = 24;
    write(&db, 3, 0..pages * SLOTS);
    // Page by page, as compacting retention does while a writer fills pages: one block per page.
    for p in 1..=pages {
        assert_eq!(db.compact_selector(&all(), T - F / 2 + p * SLOTS * F).expect("compact"), 3);
    }
    let blocks = db.engine().blocks();
    assert_eq!(blocks.len(), pages as usize);
    assert!(blocks
        .iter()
        .flat_map(|b| b.chunks().map(Result::unwrap))
        .all(|c| c.codec == Codec::Gorilla && c.count == 64));
    assert_eq!(read_all(&db, 3, pages * SLOTS), expected(3, pages * SLOTS));

    // Tiered merges only runs of one size tier; these are all tiny (one tier), so all of them go.
    assert_eq!(db.engine().merge_blocks_with(1 << 30, MergePolicy::Tiered).expect("tiered"), pages as usize - 1);
    let blocks = db.engine().blocks();
    assert_eq!(blocks.len(), 1);
    // One chunk per series: 1,536 values, long enough for pco.
    assert!(blocks[0].chunks().map(Result::unwrap).all(|c| c.codec == Codec::Pco && c.count as i64 == pages * SLOTS));
    assert!(pages * SLOTS >= PCO_MIN_VALUES as i64);
    assert_eq!(read_all(&db, 3, pages * SLOTS), expected(3, pages * SLOTS));

    // Two more pages compacted: two blocks of short chunks beside the long one. Settle merges the short
    // ones only (the long block is not rewritten), and then has nothing left to do.
    write(&db, 3, pages * SLOTS..(pages + 2) * SLOTS);
    for p in pages + 1..=pages + 2 {
        db.compact_selector(&all(), T - F / 2 + p * SLOTS * F).expect("compact");
    }
    let long = db.engine().blocks()[0].path().to_owned();
    assert_eq!(db.engine().merge_blocks_with(1 << 30, MergePolicy::Settle).expect("settle"), 1);
    let blocks = db.engine().blocks();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].path(), long);
    assert!(blocks[1].chunks().map(Result::unwrap).all(|c| c.codec == Codec::Pco && c.count == 128));
    assert_eq!(db.engine().merge_blocks_with(1 << 30, MergePolicy::Settle).expect("settle again"), 0);
    assert_eq!(read_all(&db, 3, (pages + 2) * SLOTS), expected(3, (pages + 2) * SLOTS));
    drop(db);
    let db = open(&vfs, Options::default());
    assert_eq!(read_all(&db, 3, (pages + 2) * SLOTS), expected(3, (pages + 2) * SLOTS));
}

#[test]
fn a_settle_merge_writes_lone_short_chunks_with_pco_and_other_merges_copy_them() {
    use std::sync::atomic::Ordering::Relaxed;
    let vfs = SimVfs::new();
    let db = open(&vfs, Options::default());
    let chunks = |db: &Db| -> Vec<(Codec, u32)> {
        db.engine().blocks().iter().flat_map(|b| b.chunks().map(Result::unwrap)).map(|c| (c.codec, c.count)).collect()
    };
    let st = || {
        let s = db.engine().stats();
        (s.merge_chunks_copied.load(Relaxed), s.merge_chunks_encoded.load(Relaxed))
    };
    // Pages 0 and 3 of 3 series, each compacted alone: their chunks touch no other.
    for p in [0, 3] {
        write(&db, 3, p * SLOTS..(p + 1) * SLOTS);
        db.compact_selector(&all(), T - F / 2 + (p + 1) * SLOTS * F).expect("compact");
    }
    assert_eq!(chunks(&db), vec![(Codec::Gorilla, 64); 6]);
    // Settling re-encodes them, lone as they are: they stay.
    let (copied, encoded) = st();
    assert_eq!(db.engine().merge_blocks_with(1 << 30, MergePolicy::Settle).expect("settle"), 1);
    assert_eq!(st(), (copied, encoded + 6));
    assert_eq!(chunks(&db), vec![(Codec::Pco, 64); 6]);
    // Three more lone pages, then a merge that does not settle: the pco chunks are copied as they are, not
    // made Gorilla again, and so are the new Gorilla ones.
    for p in [6, 9, 12] {
        write(&db, 3, p * SLOTS..(p + 1) * SLOTS);
        db.compact_selector(&all(), T - F / 2 + (p + 1) * SLOTS * F).expect("compact");
    }
    let (copied, encoded) = st();
    assert_eq!(db.engine().merge_blocks_with(1 << 30, MergePolicy::Tiered).expect("tiered"), 3);
    assert_eq!(st(), (copied + 15, encoded));
    let after = chunks(&db);
    assert_eq!(after.iter().filter(|c| **c == (Codec::Pco, 64)).count(), 6);
    assert_eq!(after.iter().filter(|c| **c == (Codec::Gorilla, 64)).count(), 9);
    for h in 0..3 {
        let got = db.read(&key(h), "m", T, T + 13 * SLOTS * F).expect("read").values;
        for (i, v) in got.iter().enumerate() {
            let i = i as i64;
            if [0, 3, 6, 9, 12].contains(&(i / SLOTS)) {
                assert_eq!(*v, value(h, i), "host {h} slot {i}");
            } else {
                assert!(v.is_nan(), "host {h} slot {i}: {v}");
            }
        }
    }
}

#[test]
fn a_large_compaction_is_split_into_bounded_blocks() {
    let vfs = SimVfs::new();
    let db = open(&vfs, Options { pages_per_file: 8192, ..Options::default() });
    // Enough series that their full pages hold more than one batch of values.
    let hosts = (COMPACT_BATCH_VALUES as i64 / (2 * SLOTS)) as u32 + 64;
    write(&db, hosts, 0..2 * SLOTS);
    let pages = db.compact_selector(&all(), T - F / 2 + 2 * SLOTS * F).expect("compact");
    assert_eq!(pages, 2 * u64::from(hosts));
    let blocks = db.engine().blocks();
    assert_eq!(blocks.len(), 2, "{} values in batches of {COMPACT_BATCH_VALUES}", pages as i64 * SLOTS);
    for b in blocks.iter() {
        let values: u64 = b.chunks().map(|c| u64::from(c.unwrap().count)).sum();
        assert!(values <= COMPACT_BATCH_VALUES as u64, "{values}");
    }
    for h in [0, hosts / 2, hosts - 1] {
        let got = db.read(&key(h), "m", T, T + 2 * SLOTS * F).expect("read").values;
        assert_eq!(got, (0..2 * SLOTS).map(|i| value(h, i)).collect::<Vec<_>>(), "host {h}");
    }
    // Every page was freed; a checkpoint makes them reusable.
    db.checkpoint().expect("checkpoint");
    assert_eq!(db.engine().head().pages_in_use(), 0);
}

#[test]
fn compacting_retention_reuses_the_pages_it_frees() {
    // A backfill of two days for a few series, far behind the clock, with an hour of retention: every pass
    // compacts what filled since the last one. The freed pages must come back into use (a checkpoint records
    // them free), so the head stays a few pages per series instead of growing with the backfill.
    let vfs = SimVfs::new();
    let hosts = 8;
    let db = open(
        &vfs,
        Options { retention: Some(std::time::Duration::from_secs(3600)), compaction: true, ..Options::default() },
    );
    let slots = 2 * 1440;
    let now = T + slots * F + 3600 * 4;
    let step = SLOTS / 2;
    let mut i = 0;
    while i < slots {
        write(&db, hosts, i..(i + step).min(slots));
        db.enforce_retention(now).expect("retention");
        i += step;
    }
    let head = db.engine().head();
    assert!(head.pages_in_use() <= 3 * u64::from(hosts), "{} pages in use for {hosts} series", head.pages_in_use());
    // One head file of 64 pages holds them all: without reuse the backfill would have needed 45 pages per
    // series, 6 files.
    assert_eq!(head.mapped_bytes(), 64 * 512);
    assert_eq!(read_all(&db, hosts, slots), expected(hosts, slots));
}
