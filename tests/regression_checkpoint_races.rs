//! Regressions found in review of the first engine cut.

use std::path::Path;
use std::sync::Arc;

use silt::storage::io::sim::SimVfs;
use silt::storage::io::Vfs;
use silt::{Aggregation, Batch, Db, Durability, Error, JobKey, MetricConfig, Options};

const T: i64 = 1_700_000_000;

fn opts(vfs: &SimVfs) -> Options {
    Options {
        vfs: Arc::new(vfs.clone()),
        durability: Durability::Sync,
        segment_size: 64 << 10,
        pages_per_file: 8,
        checkpoint_interval: None,
        ..Options::default()
    }
}

fn open(vfs: &SimVfs) -> Db {
    let db = Db::open("/db", opts(vfs)).expect("open");
    db.declare_metric("m", MetricConfig { frequency: 10, aggregation: Aggregation::Sum }).expect("declare");
    db
}

/// A checkpoint taken while other threads' writes were queued in the same group claimed their LSNs before
/// they were in the head; recovery then skipped them.
#[test]
fn checkpoints_racing_writers_never_skip_acknowledged_writes() {
    let vfs = SimVfs::new();
    let db = Arc::new(open(&vfs));
    let writers: Vec<_> = (0..6u32)
        .map(|w| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..150i64 {
                    let mut b = Batch::new();
                    // A new series every few writes, so DefineSeries records are in flight too.
                    let k = JobKey::new("job", &format!("op{}", i / 10), w).expect("key");
                    b.push(&k, "m", T + i * 10, f64::from(w) + i as f64);
                    db.write(&b).expect("write");
                }
            })
        })
        .collect();
    let checkpointer = {
        let db = db.clone();
        std::thread::spawn(move || {
            for _ in 0..60 {
                db.checkpoint().expect("checkpoint");
            }
        })
    };
    for w in writers {
        w.join().expect("writer");
    }
    checkpointer.join().expect("checkpointer");
    let crashed = vfs.crash_clean();
    drop(db);
    let db = open(&crashed);
    for w in 0..6u32 {
        for op in 0..15 {
            let k = JobKey::new("job", &format!("op{op}"), w).expect("key");
            let r = db.read(&k, "m", T, T + 1500).expect("read");
            let present: Vec<i64> = r
                .values
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_nan())
                .map(|(i, _)| (r.from - T) / 10 + i as i64)
                .collect();
            let want: Vec<i64> = (op * 10..op * 10 + 10).collect();
            assert_eq!(present, want, "writer {w} op{op}");
        }
    }
}

/// With no WAL segment left on disk, the log recreated segment 1 and then deleted it as older than the
/// manifest's first needed segment, so later writes went to a deleted file.
#[test]
fn a_wal_directory_without_segments_still_keeps_new_writes() {
    let vfs = SimVfs::new();
    {
        let db = open(&vfs);
        let mut b = Batch::new();
        b.push(&JobKey::new("j", "o", 0).expect("key"), "m", T, 1.0);
        db.write(&b).expect("write");
        db.checkpoint().expect("checkpoint");
        db.close().expect("close");
    }
    let wal = Path::new("/db/wal");
    for name in vfs.list_dir(wal).expect("list") {
        vfs.remove_file(&wal.join(name)).expect("remove");
    }
    vfs.sync_dir(wal).expect("sync");
    let db = open(&vfs);
    let mut b = Batch::new();
    b.push(&JobKey::new("j", "o", 0).expect("key"), "m", T + 10, 2.0);
    db.write(&b).expect("write");
    let crashed = vfs.crash_clean();
    drop(db);
    let db = open(&crashed);
    let r = db.read(&JobKey::new("j", "o", 0).expect("key"), "m", T, T + 20).expect("read");
    assert_eq!(r.values, vec![1.0, 2.0]);
}

/// Reading with extreme bounds after a write before 1970 overflowed.
#[test]
fn extreme_read_bounds_do_not_overflow() {
    let vfs = SimVfs::new();
    let db = open(&vfs);
    let k = JobKey::new("j", "o", 0).expect("key");
    let mut b = Batch::new();
    b.push(&k, "m", -1_000_000, 1.0);
    db.write(&b).expect("write");
    // A read that would span more steps than a query may return is refused, never a panic or overflow.
    let e = db.read(&k, "m", i64::MIN, i64::MAX).expect_err("too many steps");
    assert!(matches!(e, Error::Query(silt::QueryError::InvalidRange { .. })), "{e}");
    let r = db.read(&k, "m", -1_000_100, -1_000_000 + 10).expect("read");
    assert_eq!(r.values, vec![1.0]);
    assert_eq!(db.stats(&k, "m", i64::MIN, i64::MAX).expect("stats").samples, 1);
    assert_eq!(db.engine().head().read(silt::SeriesId(0), i64::MIN, i64::MAX).map(|r| r.values), Some(vec![1.0]));
}

/// A lost MANIFEST made open treat the directory as new and delete the head files before replay failed.
#[test]
fn a_lost_manifest_is_refused_without_deleting_anything() {
    let vfs = SimVfs::new();
    {
        let db = open(&vfs);
        let mut b = Batch::new();
        b.push(&JobKey::new("j", "o", 0).expect("key"), "m", T, 1.0);
        db.write(&b).expect("write");
        db.checkpoint().expect("checkpoint");
        db.close().expect("close");
    }
    vfs.remove_file(Path::new("/db/MANIFEST")).expect("remove");
    let heads = vfs.list_dir(Path::new("/db/head")).expect("list");
    assert!(!heads.is_empty());
    let e = Db::open("/db", opts(&vfs)).expect_err("opening without the manifest must fail");
    assert!(matches!(e, Error::Storage(silt::storage::StorageError::Corruption { .. })), "{e}");
    assert!(e.to_string().contains("MANIFEST is missing"), "{e}");
    assert_eq!(vfs.list_dir(Path::new("/db/head")).expect("list"), heads, "head files were touched");
}

/// After an interrupted newest segment (damaged header, nothing behind it) is removed, the segment before it
/// was sealed: damage in its records is corruption to report, not a torn tail to cut off silently.
#[test]
fn damage_before_an_interrupted_segment_is_reported_not_truncated() {
    use silt::storage::io::OpenMode;
    let vfs = SimVfs::new();
    let db = open(&vfs);
    for i in 0..5 {
        let mut b = Batch::new();
        b.push(&JobKey::new("j", "o", 0).expect("key"), "m", T + i * 10, i as f64);
        db.write(&b).expect("write");
    }
    let crashed = vfs.crash_clean();
    drop(db);
    let wal = Path::new("/db/wal");
    let segs = crashed.list_dir(wal).expect("list");
    assert_eq!(segs.len(), 1, "{segs:?}");
    let first = wal.join(&segs[0]);
    // Damage a byte inside the last record of segment 1.
    let bytes = crashed.snapshot_file(&first).expect("segment");
    let end = bytes.iter().rposition(|&b| b != 0).expect("records");
    let f = crashed.open(&first, OpenMode::ReadWrite).expect("open");
    f.write_all_at(&[bytes[end - 4] ^ 0xff], (end - 4) as u64).expect("damage");
    f.sync_data().expect("sync");
    // An all-zero segment 2: its creation "was interrupted" before the header reached the disk.
    let second = wal.join("00000000000000000002.wal");
    let f = crashed.open(&second, OpenMode::CreateNew).expect("create");
    f.write_all_at(&vec![0u8; 64 << 10], 0).expect("zeros");
    f.sync_data().expect("sync");
    crashed.sync_dir(wal).expect("sync dir");
    let e = Db::open("/db", opts(&crashed)).expect_err("damage in a sealed segment must be reported");
    assert!(matches!(e, Error::Storage(silt::storage::StorageError::Corruption { .. })), "{e}");
}

/// An idle engine rewrote its manifest (12 MiB for 100,000 series) and started a WAL segment at every
/// timed checkpoint: readers saw the latency. A timed checkpoint now waits until something was logged.
#[test]
fn timed_checkpoints_skip_an_idle_engine_and_resume_after_a_write() {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::{Duration, Instant};
    let vfs = SimVfs::new();
    let iv = Duration::from_millis(20);
    let db = Db::open("/db", Options { checkpoint_interval: Some(iv), ..opts(&vfs) }).expect("open");
    db.declare_metric("m", MetricConfig { frequency: 10, aggregation: Aggregation::Sum }).expect("declare");
    let key = JobKey::new("job", "op", 0).expect("key");
    let checkpoints = || db.engine().stats().checkpoints.load(Relaxed);
    let wait_for_more_than = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while checkpoints() <= n {
            assert!(Instant::now() < deadline, "no timed checkpoint after a write");
            std::thread::sleep(iv / 4);
        }
    };
    let mut b = Batch::new();
    b.push(&key, "m", T, 1.0);
    db.write(&b).expect("write");
    wait_for_more_than(0);
    // Let a checkpoint in flight finish, then stay idle for 15 intervals.
    std::thread::sleep(iv * 3);
    let idle = checkpoints();
    let manifest = vfs.open(Path::new("/db/MANIFEST"), silt::storage::io::OpenMode::Read).expect("manifest");
    let bytes = manifest.read_all().expect("read manifest");
    std::thread::sleep(iv * 15);
    assert_eq!(checkpoints(), idle, "timed checkpoints of an idle engine");
    let again = vfs.open(Path::new("/db/MANIFEST"), silt::storage::io::OpenMode::Read).expect("manifest");
    assert!(again.read_all().expect("read manifest") == bytes, "the manifest was rewritten");
    // A write: the next interval checkpoints again, and a reopen finds both values.
    let mut b = Batch::new();
    b.push(&key, "m", T + 10, 2.0);
    db.write(&b).expect("write");
    wait_for_more_than(idle);
    drop(db);
    let db = open(&vfs);
    let r = db.read(&key, "m", T, T + 20).expect("read");
    assert_eq!(r.values, [1.0, 2.0]);
}
