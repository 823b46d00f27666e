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

#[test]
fn chunks_no_other_chunk_touches_are_copied_unchanged_and_give_the_bytes_of_encoding_them_anew() {
    use silt::storage::block::{encode_block_by, ChunkData};
    use silt::storage::engine::codec_for;
    use std::sync::atomic::Ordering::Relaxed;
    let vfs = SimVfs::new();
    let db = open(&vfs);
    let mut b = Batch::new();
    for h in 0..4u32 {
        for i in 0..2 * PAGE {
            b.push(&key(h), "m", T + i * F, f64::from(h) * 1e4 + (i * i % 97) as f64 / 8.0);
        }
    }
    db.write(&b).expect("write");
    // One block per host (disjoint series), plus a second page of host 0 in a fifth block: host 0's two
    // chunks touch and are merged, the other hosts' are copied.
    for h in 0..4 {
        db.compact_selector(&Selector::from(&key(h)), T - F / 2 + PAGE * F).expect("compact");
    }
    db.compact_selector(&Selector::from(&key(0)), T - F / 2 + 2 * PAGE * F).expect("compact");
    assert_eq!(db.engine().blocks().len(), 5);
    let before = snapshot4(&db);
    let st = db.engine().stats();
    let (copied, encoded) = (st.merge_chunks_copied.load(Relaxed), st.merge_chunks_encoded.load(Relaxed));
    assert_eq!(db.engine().merge_blocks(1 << 30).expect("merge"), 4);
    assert_eq!(st.merge_chunks_copied.load(Relaxed) - copied, 3, "hosts 1-3 copied");
    assert_eq!(st.merge_chunks_encoded.load(Relaxed) - encoded, 1, "host 0 merged");
    assert_eq!(snapshot4(&db), before);
    // The merged block holds exactly the bytes of its chunks encoded whole.
    let block = db.engine().blocks()[0].clone();
    let mut chunks = Vec::new();
    for c in block.chunks() {
        let c = c.expect("descriptor");
        let mut values = Vec::new();
        block.decode(&c, &mut values).expect("decode");
        chunks.push(ChunkData { series: c.series, start: c.start, frequency: c.frequency, values });
    }
    assert_eq!(chunks.iter().map(|c| c.values.len()).collect::<Vec<_>>(), [1024, 512, 512, 512]);
    let whole = encode_block_by(chunks, |c| codec_for(c.values.len(), false));
    let file = silt::storage::io::Vfs::open(&vfs, block.path(), silt::storage::io::OpenMode::Read).expect("open block");
    assert!(silt::storage::io::VFile::read_all(&*file).expect("read block") == whole);
    drop(db);
    assert_eq!(snapshot4(&open(&vfs)), before);
}

/// [`snapshot`] of four hosts over two pages.
fn snapshot4(db: &Db) -> Vec<Vec<u64>> {
    (0..4)
        .map(|h| {
            let r = db.read(&key(h), "m", T - 100, T + 2 * PAGE * F).expect("read");
            r.values.iter().map(|x| if x.is_nan() { u64::MAX } else { x.to_bits() }).collect()
        })
        .collect()
}
