//! Compaction and merges while a writer and readers run: every value a reader sees is the one written to
//! its slot, and every acknowledged sample stays readable, whether it is in the head, in a block being
//! written, or in blocks being merged; so do sums and maxima across series.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use silt::{Aggregation, Batch, Db, Durability, HostKey, MetricConfig, Options, Selector};

const T: i64 = 1_000_000;
const F: i64 = 10;
const SERIES: u32 = 4;

fn key(s: u32) -> HostKey {
    HostKey::new("c", &format!("n{s}")).expect("key")
}

fn value(s: u32, slot: i64) -> f64 {
    f64::from(s) * 1e6 + slot as f64
}

#[test]
fn compaction_under_concurrent_writes_and_reads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(
        Db::open(tmp.path(), Options { durability: Durability::None, checkpoint_interval: None, ..Options::default() })
            .expect("open"),
    );
    db.declare_metric("m", MetricConfig { frequency: F, aggregation: Aggregation::Sum }).expect("declare");
    db.declare_metric("mx", MetricConfig { frequency: F, aggregation: Aggregation::Max }).expect("declare");
    let acked = Arc::new(AtomicI64::new(0)); // slots below this are written and acknowledged
    let stop = Arc::new(AtomicBool::new(false));
    let total: i64 = 40 * 512;

    let writer = {
        let (db, acked) = (db.clone(), acked.clone());
        std::thread::spawn(move || {
            let mut slot = 0;
            while slot < total {
                let mut b = Batch::new();
                for i in slot..slot + 97 {
                    for s in 0..SERIES {
                        b.push(&key(s), "m", T + i * F, value(s, i));
                        // The maximum over the hosts changes host with the slot.
                        b.push(&key(s), "mx", T + i * F, value((s + i as u32) % SERIES, i));
                    }
                }
                let ack = db.write(&b).expect("write");
                assert_eq!(ack.outcome.stored, 2 * 97 * u64::from(SERIES), "a write into the live head was refused");
                slot += 97;
                acked.store(slot, Ordering::Release);
                // A collector's pace rather than a flood, so that compactions interleave with the writes.
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (db, acked, stop) = (db.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let upto = acked.load(Ordering::Acquire);
                    let s = (reads as u32 + r) % SERIES;
                    let res = db.read(&key(s), "m", T, T + upto * F).expect("read");
                    assert_eq!(res.from, T - F / 2 + F / 2, "series {s} lost its oldest data");
                    assert!(
                        res.values.len() as i64 >= upto,
                        "series {s}: {} values, {upto} acknowledged",
                        res.values.len()
                    );
                    for (i, v) in res.values.iter().take(upto as usize).enumerate() {
                        assert_eq!(*v, value(s, i as i64), "series {s} slot {i}");
                    }
                    let st = db.stats(&key(s), "m", T, T + upto * F).expect("stats");
                    assert_eq!(st.samples, upto as u64, "series {s}: stats lost samples");
                    // The sum over every host (an aggregation across series, some in blocks, some not).
                    let all = Selector::new(silt::keys::Namespace::Host, vec![silt::SelectorElement::Name("c".into())])
                        .expect("selector");
                    let sum = db.query(&all, "m", T, T + upto * F, silt::ReadOptions::default()).expect("query");
                    for (i, v) in sum.values.iter().take(upto as usize).enumerate() {
                        let want: f64 = (0..SERIES).map(|s| value(s, i as i64)).sum();
                        assert_eq!(*v, want, "sum slot {i}");
                    }
                    // The maximum over every host, sampled series by series, and its stats.
                    let max = db.query(&all, "mx", T, T + upto * F, silt::ReadOptions::default()).expect("query");
                    for (i, v) in max.values.iter().take(upto as usize).enumerate() {
                        assert_eq!(*v, value(SERIES - 1, i as i64), "max slot {i}");
                    }
                    let st = db.query_stats(&all, "mx", T, T + upto * F).expect("stats");
                    if upto > 0 {
                        assert_eq!((st.samples, st.series), (upto as u64, SERIES as usize), "max stats lost samples");
                        assert_eq!(st.max, value(SERIES - 1, upto - 1));
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    // Compact everything a page behind the writer, and merge, over and over.
    let all = Selector::new(silt::keys::Namespace::Host, vec![silt::SelectorElement::Name("c".into())]).unwrap();
    let (mut compactions, mut during) = (0, 0);
    while acked.load(Ordering::Acquire) < total {
        let upto = acked.load(Ordering::Acquire);
        let n = db.compact_selector(&all, T + (upto - 600).max(0) * F).expect("compact");
        compactions += n;
        during += u64::from(n > 0);
        db.engine().merge_blocks(1 << 20).expect("merge");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    writer.join().expect("writer");
    // The readers go on over the final compaction and merge.
    compactions += db.compact_selector(&all, T + (total - 600) * F).expect("compact");
    db.engine().merge_blocks(1 << 20).expect("merge");
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, Ordering::Release);
    let reads: u64 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    assert!(compactions >= 38 * u64::from(SERIES), "only {compactions} pages compacted");
    assert!(during >= 2, "only {during} compactions ran while the writer wrote");
    assert!(reads > 10, "readers barely ran: {reads}");
    assert!(!db.engine().blocks().is_empty());
}
