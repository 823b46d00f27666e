//! Write semantics through the public API only, with cc-metric-store's buffer cases.

use std::sync::Arc;

use silt::storage::io::sim::SimVfs;
use silt::{Aggregation, Batch, Db, Durability, Error, HostKey, JobKey, MetricConfig, Options};

const T: i64 = 1_700_000_000;

fn opts(vfs: &SimVfs) -> Options {
    Options {
        vfs: Arc::new(vfs.clone()),
        segment_size: 64 << 10,
        pages_per_file: 8,
        checkpoint_interval: None,
        ..Options::default()
    }
}

fn open(vfs: &SimVfs) -> Db {
    let db = Db::open("/db", opts(vfs)).expect("open");
    db.declare_metric("load", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).expect("declare");
    db
}

fn key() -> HostKey {
    HostKey::new("emmy", "n0001").and_then(|k| k.component("hwthread", 3)).expect("key")
}

fn write(db: &Db, samples: &[(i64, f64)]) -> silt::WriteAck {
    let mut b = Batch::new();
    for &(ts, v) in samples {
        b.push(&key(), "load", ts, v);
    }
    db.write(&b).expect("write")
}

fn same(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

#[test]
fn three_writes_read_back_in_order() {
    let vfs = SimVfs::new();
    let db = open(&vfs);
    let ack = write(&db, &[(T, 1.0), (T + 10, 2.0), (T + 20, 3.0)]);
    assert_eq!(ack.durability, Durability::Sync);
    assert_eq!(ack.outcome.stored, 3);
    let r = db.read(&key(), "load", T, T + 30).expect("read");
    assert_eq!(r.values, vec![1.0, 2.0, 3.0]);
    assert_eq!((r.from, r.to, r.frequency), (T, T + 30, 10));
    // A sub-range.
    let r = db.read(&key(), "load", T + 10, T + 20).expect("read");
    assert_eq!(r.values, vec![2.0]);
}

#[test]
fn timestamps_snap_to_the_grid_and_overwrite() {
    let vfs = SimVfs::new();
    let db = open(&vfs);
    write(&db, &[(T, 1.0), (T + 14, 2.0), (T + 16, 3.0)]);
    // T+14 snaps to T+10; T+16 snaps to T+20.
    let r = db.read(&key(), "load", T, T + 30).expect("read");
    assert_eq!(r.values, vec![1.0, 2.0, 3.0]);
    write(&db, &[(T + 11, 5.0)]);
    let r = db.read(&key(), "load", T, T + 30).expect("read");
    assert_eq!(r.values, vec![1.0, 5.0, 3.0]);
}

#[test]
fn gaps_read_as_nan() {
    let vfs = SimVfs::new();
    let db = open(&vfs);
    write(&db, &[(T, 1.0), (T + 40, 5.0)]);
    let r = db.read(&key(), "load", T, T + 50).expect("read");
    assert!(same(&r.values, &[1.0, f64::NAN, f64::NAN, f64::NAN, 5.0]), "{:?}", r.values);
}

#[test]
fn writes_older_than_the_oldest_page_are_counted_not_stored() {
    let vfs = SimVfs::new();
    let db = open(&vfs);
    write(&db, &[(T, 1.0)]);
    let ack = write(&db, &[(T - 100, 9.0), (T + 10, 2.0)]);
    assert_eq!((ack.outcome.stored, ack.outcome.too_old), (1, 1));
    let r = db.read(&key(), "load", T - 200, T + 20).expect("read");
    assert_eq!(r.values, vec![1.0, 2.0]);
    assert_eq!(r.from, T);
}

#[test]
fn unknown_metric_is_counted_in_the_ack_and_an_error_on_read() {
    let vfs = SimVfs::new();
    let db = open(&vfs);
    let mut b = Batch::new();
    b.push(&key(), "nope", T, 1.0);
    b.push(&key(), "load", T, 1.0);
    let ack = db.write(&b).expect("write");
    assert_eq!((ack.outcome.stored, ack.outcome.unknown_metric), (1, 1));
    assert!(matches!(
        db.read(&key(), "nope", T, T + 10),
        Err(Error::Query(silt::QueryError::UnknownMetric(m))) if m == "nope"
    ));
}

#[test]
fn bad_range_and_unknown_series() {
    let vfs = SimVfs::new();
    let db = open(&vfs);
    assert!(matches!(db.read(&key(), "load", T + 10, T), Err(Error::Query(silt::QueryError::InvalidRange { .. }))));
    let other = HostKey::new("emmy", "n9999").expect("key");
    let r = db.read(&other, "load", T, T + 10).expect("read");
    assert!(r.values.is_empty());
}

#[test]
fn metric_redeclared_differently_is_a_conflict() {
    let vfs = SimVfs::new();
    let db = open(&vfs);
    db.declare_metric("load", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).expect("same again");
    let e = db.declare_metric("load", MetricConfig { frequency: 60, aggregation: Aggregation::Avg });
    assert!(matches!(e, Err(Error::MetricConflict { .. })));
    assert!(matches!(
        db.declare_metric("a/b", MetricConfig { frequency: 1, aggregation: Aggregation::Sum }),
        Err(Error::Key(_))
    ));
}

#[test]
fn a_jump_past_the_page_starts_a_new_page_and_old_pages_stay_readable() {
    let vfs = SimVfs::new();
    let db = open(&vfs);
    let far = T + 10 * 512 * 3 + 50;
    write(&db, &[(T, 1.0), (far, 2.0)]);
    // Late data into the gap between the pages is stored too.
    let ack = write(&db, &[(T + 10 * 600, 3.0)]);
    assert_eq!(ack.outcome.stored, 1);
    let r = db.read(&key(), "load", T, far + 10).expect("read");
    assert_eq!(r.values.len(), ((far - T) / 10 + 1) as usize);
    assert_eq!(r.values[0], 1.0);
    assert_eq!(r.values[600], 3.0);
    assert_eq!(*r.values.last().expect("last"), 2.0);
    assert_eq!(r.values.iter().filter(|v| !v.is_nan()).count(), 3);
}

#[test]
fn data_survives_close_and_reopen_with_and_without_checkpoint() {
    let vfs = SimVfs::new();
    {
        let db = open(&vfs);
        write(&db, &[(T, 1.0), (T + 10, 2.0)]);
        db.checkpoint().expect("checkpoint");
        write(&db, &[(T + 20, 3.0)]);
        // No close: simulate a crash that loses nothing synced.
        std::mem::forget(db);
    }
    let vfs2 = vfs.crash_clean();
    let db = open(&vfs2);
    let r = db.read(&key(), "load", T, T + 30).expect("read");
    assert_eq!(r.values, vec![1.0, 2.0, 3.0]);
    db.close().expect("close");
    let db = open(&vfs2);
    let r = db.read(&key(), "load", T, T + 30).expect("read");
    assert_eq!(r.values, vec![1.0, 2.0, 3.0]);
    assert_eq!(db.recovery().replay.applied, 0, "a clean close leaves nothing to replay");
}

#[test]
fn freed_pages_are_reused_after_a_checkpoint_not_before() {
    for checkpoint in [false, true] {
        let grew = free_then_add_series(checkpoint);
        assert_eq!(grew, !checkpoint, "checkpoint={checkpoint}: head grew={grew}");
    }
}

/// Frees one of series A's two pages, optionally checkpoints, then writes six new series (6 pages; the first
/// file has 7 usable pages). Returns whether the head had to create a new file.
fn free_then_add_series(checkpoint: bool) -> bool {
    let vfs = SimVfs::new();
    let db = open(&vfs);
    // Two pages for series A.
    let a = key();
    let mut b = Batch::new();
    for i in 0..1024 {
        b.push(&a, "load", T + i * 10, i as f64);
    }
    db.write(&b).expect("write");
    let freed = db.free(&a, "load", T + 10 * 512).expect("free");
    assert_eq!(freed, 1);
    let r = db.read(&a, "load", T, T + 10 * 1024).expect("read");
    assert_eq!(r.from, T + 10 * 512);
    assert_eq!(r.values[0], 512.0);
    // A write into the freed range is too old now.
    let mut b = Batch::new();
    b.push(&a, "load", T, 7.0);
    assert_eq!(db.write(&b).expect("write").outcome.too_old, 1);
    let used_before = db.engine().head().mapped_bytes();
    if checkpoint {
        db.checkpoint().expect("checkpoint");
    }
    let mut b = Batch::new();
    for h in 0..6 {
        let k = JobKey::new("job", "op", h).expect("key");
        b.push(&k, "load", T, h as f64);
    }
    db.write(&b).expect("write");
    for h in 0..6 {
        let k = JobKey::new("job", "op", h).expect("key");
        assert_eq!(db.read(&k, "load", T, T + 10).expect("read").values, vec![h as f64]);
    }
    db.engine().head().mapped_bytes() != used_before
}

#[test]
fn readers_run_while_the_writer_writes_and_never_see_torn_values() {
    let vfs = SimVfs::new();
    let db = Arc::new(open(&vfs));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let db = db.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = db.read(&key(), "load", T, T + 10 * 5000).expect("read");
                for (i, v) in r.values.iter().enumerate() {
                    // Every value ever written at slot i is i or i + 0.5: anything else is torn or misplaced.
                    let slot = ((r.from - T) / 10) as usize + i;
                    assert!(v.is_nan() || *v == slot as f64 || *v == slot as f64 + 0.5, "slot {slot}: {v}");
                }
                reads += 1;
            }
            reads
        })
    };
    for round in 0..2 {
        for chunk in 0..50 {
            let mut b = Batch::new();
            for i in chunk * 100..(chunk + 1) * 100 {
                b.push(&key(), "load", T + i * 10, i as f64 + if round == 1 { 0.5 } else { 0.0 });
            }
            db.write(&b).expect("write");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("reader");
    assert!(reads > 0);
    let r = db.read(&key(), "load", T, T + 10 * 5000).expect("read");
    assert_eq!(r.values.len(), 5000);
    assert!(r.values.iter().enumerate().all(|(i, v)| *v == i as f64 + 0.5));
}

#[test]
fn db_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Db>();
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Options { checkpoint_interval: None, ..Options::default() };
    let db = Db::open(dir.path(), o.clone()).expect("open");
    let second = Db::open(dir.path(), o);
    assert!(matches!(second, Err(Error::Storage(silt::storage::StorageError::Locked(_)))), "{second:?}");
    drop(db);
}

#[test]
fn the_real_file_system_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Options { checkpoint_interval: None, pages_per_file: 16, segment_size: 64 << 10, ..Options::default() };
    {
        let db = Db::open(dir.path(), o.clone()).expect("open");
        db.declare_metric("load", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).expect("declare");
        let mut b = Batch::new();
        for i in 0..3000 {
            b.push(&key(), "load", T + i * 10, i as f64);
        }
        assert_eq!(db.write(&b).expect("write").outcome.stored, 3000);
        db.close().expect("close");
    }
    let db = Db::open(dir.path(), o).expect("reopen");
    let r = db.read(&key(), "load", T, T + 30_000).expect("read");
    assert_eq!(r.values.len(), 3000);
    assert!(r.values.iter().enumerate().all(|(i, v)| *v == i as f64));
}

#[test]
fn stats_skip_nan_and_respect_the_range() {
    let vfs = SimVfs::new();
    let db = open(&vfs);
    write(&db, &[(T, 1.0), (T + 10, f64::NAN), (T + 20, 3.0), (T + 40, 8.0)]);
    let s = db.stats(&key(), "load", T, T + 30).expect("stats");
    assert_eq!((s.samples, s.avg, s.min, s.max), (2, 2.0, 1.0, 3.0));
    let s = db.stats(&key(), "load", T + 10, T + 100).expect("stats");
    assert_eq!((s.samples, s.min, s.max), (2, 3.0, 8.0));
    let s = db.stats(&key(), "load", T + 100, T + 200).expect("stats");
    assert_eq!(s.samples, 0);
    assert!(s.avg.is_nan());
    // Across a page boundary.
    let mut b = Batch::new();
    for i in 0..1500 {
        b.push(&key(), "load", T + i * 10, 1.0);
    }
    db.write(&b).expect("write");
    let s = db.stats(&key(), "load", T + 5000, T + 10_000).expect("stats");
    assert_eq!(s.samples, 500);
}
