//! Retention (with a keep-set) and the memory cap, dropping pages (`compaction: false`) or compacting them
//! into blocks, where they stay readable.

use std::sync::Arc;
use std::time::Duration;

use silt::storage::io::sim::SimVfs;
use silt::{Aggregation, Batch, Db, HostKey, MetricConfig, Options, Selector};

const F: i64 = 10;

fn open(retention: Option<Duration>, cap: u64, interval: Duration) -> Db {
    open_with(retention, cap, interval, false)
}

fn open_with(retention: Option<Duration>, cap: u64, interval: Duration, compaction: bool) -> Db {
    let db = Db::open(
        "/db",
        Options {
            vfs: Arc::new(SimVfs::new()),
            segment_size: 1 << 20,
            pages_per_file: 32,
            checkpoint_interval: None,
            retention,
            memory_cap_bytes: cap,
            maintenance_interval: interval,
            compaction,
            ..Options::default()
        },
    )
    .expect("open");
    db.declare_metric("m", MetricConfig { frequency: F, aggregation: Aggregation::Sum }).expect("declare");
    db
}

fn node(h: u32) -> HostKey {
    HostKey::new("c", &format!("n{h}")).expect("key")
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Three hours of data (3 pages at 10 s) for each host, ending now.
fn fill(db: &Db, hosts: u32) -> i64 {
    fill_hours(db, hosts, 3)
}

/// `hours` of data for each host, ending now.
fn fill_hours(db: &Db, hosts: u32, hours: i64) -> i64 {
    let start = now() - hours * 3600;
    let mut b = Batch::new();
    for h in 0..hosts {
        for i in 0..(hours * 3600 / F) {
            b.push(&node(h), "m", start + i * F, 1.0);
        }
    }
    db.write(&b).expect("write");
    start
}

#[test]
fn retention_frees_old_pages_except_kept_hosts() {
    let db = open(Some(Duration::from_secs(3600)), 0, Duration::from_secs(3600));
    let start = fill(&db, 2);
    db.set_retention_keep(vec![Selector::from(&node(1))]);
    let freed = db.enforce_retention(now()).expect("retention");
    assert!(freed >= 1, "{freed}");
    let n0 = db.read(&node(0), "m", start, now()).expect("read");
    assert!(n0.from >= now() - 3600 - 512 * F, "n0 still starts at {} (now {})", n0.from, now());
    let n1 = db.read(&node(1), "m", start, now()).expect("read");
    assert_eq!(n1.from, start, "the kept host lost data");
}

#[test]
fn retention_runs_in_the_background() {
    let db = open(Some(Duration::from_secs(3600)), 0, Duration::from_millis(10));
    let start = fill(&db, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = db.read(&node(0), "m", start, now()).expect("read");
        if r.from > start {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "background retention never freed anything");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A sustained load far past the cap: 8 hosts, one page per host per round, 40 rounds, the cap enforced
/// after each and checked. Returns the head's mapped bytes after each round.
fn sustained_load(db: &Db, start: i64, cap: u64) -> Vec<u64> {
    let mut mapped = Vec::new();
    for round in 0..40i64 {
        let mut b = Batch::new();
        for h in 0..8 {
            for i in 0..512 {
                b.push(&node(h), "m", start + (round * 512 + i) * F, round as f64);
            }
        }
        db.write(&b).expect("write");
        db.enforce_memory_cap().expect("cap");
        assert!(db.head_bytes_in_use() <= cap, "round {round}: {} bytes in use", db.head_bytes_in_use());
        mapped.push(db.engine().head().mapped_bytes());
    }
    mapped
}

#[test]
fn the_memory_cap_frees_the_oldest_pages_and_the_head_stops_growing() {
    let page = 4096u64;
    let cap = 40 * page;
    let db = open(None, cap, Duration::from_secs(3600));
    let start = now() - 100 * 86_400;
    let mapped = sustained_load(&db, start, cap);
    // The newest data is all there; the oldest went first.
    let r = db.read(&node(3), "m", start, start + 40 * 512 * F).expect("read");
    assert_eq!(*r.values.last().expect("last"), 39.0);
    assert!(r.from > start, "nothing was freed");
    assert_eq!(mapped[39], mapped[20], "files kept growing under the cap: {mapped:?}");
}

#[test]
fn a_cap_of_zero_means_no_cap() {
    let db = open(None, 0, Duration::from_secs(3600));
    fill(&db, 4);
    assert_eq!(db.enforce_memory_cap().expect("cap"), 0);
    assert!(db.head_bytes_in_use() >= 4 * 3 * 4096);
}

#[test]
fn with_compaction_retention_empties_the_head_but_the_data_stays_readable() {
    let db = open_with(Some(Duration::from_secs(3600)), 0, Duration::from_secs(3600), true);
    // Retention compacts whole pages (5120 s) that end before `now - 1 h` floored to the hour: with four
    // hours of data the first page qualifies at any time of the hour (three hours fail after about :38).
    let start = fill_hours(&db, 2, 4);
    let before: Vec<_> = (0..2).map(|h| db.read(&node(h), "m", start, now()).expect("read")).collect();
    let pages_before = db.head_bytes_in_use();
    let compacted = db.enforce_retention(now()).expect("retention");
    assert!(compacted >= 2, "{compacted}");
    db.checkpoint().expect("checkpoint");
    assert!(db.head_bytes_in_use() < pages_before, "the head kept its pages");
    assert_eq!(db.engine().blocks().len(), 1);
    for h in 0..2 {
        let r = db.read(&node(h), "m", start, now()).expect("read");
        assert_eq!((r.from, r.to), (before[h as usize].from, before[h as usize].to));
        assert_eq!(r.values.len(), before[h as usize].values.len());
        assert!(r.values.iter().zip(&before[h as usize].values).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
    let all = db.query_stats(&Selector::from(&node(0)), "m", start, now()).expect("stats");
    assert_eq!(all.samples, (4 * 3600 / F) as u64);
}

#[test]
fn with_compaction_the_memory_cap_moves_old_pages_to_blocks() {
    let page = 4096u64;
    let cap = 40 * page;
    let db = open_with(None, cap, Duration::from_secs(3600), true);
    let start = now() - 100 * 86_400;
    sustained_load(&db, start, cap);
    let r = db.read(&node(3), "m", start, start + 40 * 512 * F).expect("read");
    assert_eq!(r.from, start, "compacted data is gone");
    assert_eq!(r.values.len(), 40 * 512);
    for (i, v) in r.values.iter().enumerate() {
        assert_eq!(*v, (i / 512) as f64, "slot {i}");
    }
    assert!(!db.engine().blocks().is_empty());
    // Past the cap, writes are to wait (the server answers 503); a compacting pass then frees the head down
    // to three quarters of the cap, so that writes have room until the next pass.
    let mut b = Batch::new();
    for h in 0..8 {
        for i in 0..(6 * 512) {
            b.push(&node(h), "m", start + (40 * 512 + i) * F, 7.0);
        }
    }
    db.write(&b).expect("write");
    // The write found the head over its cap and nudged the maintenance thread, which may already be running
    // the pass: then the head comes down to three quarters of the cap by itself.
    if !db.over_memory_cap() {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while db.head_bytes_in_use() > cap - cap / 4 {
            assert!(std::time::Instant::now() < deadline, "{} bytes in use for a cap of {cap}", db.head_bytes_in_use());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    db.enforce_memory_cap().expect("cap");
    assert!(db.head_bytes_in_use() <= cap - cap / 4, "{} bytes in use after the pass", db.head_bytes_in_use());
    assert!(!db.over_memory_cap());
    let r = db.read(&node(5), "m", start, start + 46 * 512 * F).expect("read");
    assert_eq!((r.values.len(), r.values[0], r.values[46 * 512 - 1]), (46 * 512, 0.0, 7.0), "nothing lost");
}

#[test]
fn without_compaction_the_memory_cap_frees_no_more_than_it_must() {
    let page = 4096u64;
    let cap = 40 * page;
    let db = open_with(None, cap, Duration::from_secs(3600), false);
    let start = now() - 100 * 86_400;
    sustained_load(&db, start, cap);
    // Freeing drops data here: the pass stops at the cap, not below it (8 series' newest pages aside).
    db.checkpoint().expect("checkpoint");
    assert!(db.head_bytes_in_use() > cap - cap / 4, "{} bytes in use for a cap of {cap}", db.head_bytes_in_use());
}

/// A collector catching up on a backlog writes far behind the clock while compacting retention runs: each
/// series' newest page is spared, so no sample of the backfill is refused, and everything reads back (before
/// this, retention sealed the whole range below `now - retention`, and the backfill's next samples were
/// refused as too old).
#[test]
fn a_backfill_under_compacting_retention_loses_nothing() {
    let db = open_with(Some(Duration::from_secs(3600)), 0, Duration::from_secs(3600), true);
    // A day at 10 s, ending now, written a step at a time for two hosts, with retention enforced after every
    // 100 steps (as the maintenance thread would, every second, while the backlog streams in).
    let steps = 86_400 / F;
    let start = now() - steps * F;
    for i in 0..steps {
        let mut b = Batch::new();
        for h in 0..2 {
            b.push(&node(h), "m", start + i * F, (i % 1000) as f64);
        }
        let ack = db.write(&b).expect("write");
        assert_eq!(ack.outcome.too_old, 0, "step {i} refused");
        if i % 100 == 99 {
            db.enforce_retention(now()).expect("retention");
        }
    }
    // Most pages went to blocks on the way; every sample reads back.
    assert!(!db.engine().blocks().is_empty(), "closed pages were compacted");
    db.enforce_retention(now()).expect("retention");
    db.checkpoint().expect("checkpoint"); // freed pages count as in use until a checkpoint records them free
    let pages_in_head = db.head_bytes_in_use() / 4096;
    // 17 pages per series were written; what stays is the last hour and a bit: the newest page and the one
    // or two before it.
    assert!(pages_in_head <= 2 * 3, "{pages_in_head} pages left in the head");
    for h in 0..2 {
        let r = db.read(&node(h), "m", start, start + steps * F).expect("read");
        assert_eq!(r.values.len() as i64, steps);
        for (i, v) in r.values.iter().enumerate() {
            assert_eq!(*v, (i % 1000) as f64, "host {h} step {i}");
        }
    }
    // Late data into a compacted (sealed) range is still refused, and says so.
    let mut b = Batch::new();
    b.push(&node(0), "m", start, 5.0);
    assert_eq!(db.write(&b).expect("write").outcome.too_old, 1);
}
