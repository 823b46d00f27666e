//! Durability modes, the checkpoint schedule, and what a failed fsync does.

use std::sync::Arc;
use std::time::Duration;

use silt::storage::io::sim::{FaultOp, SimVfs};
use silt::storage::StorageError;
use silt::{Aggregation, Batch, Db, Durability, Error, HostKey, MetricConfig, Options};

const T: i64 = 1_700_000_000;

fn opts(vfs: &SimVfs, durability: Durability, checkpoint: Option<Duration>) -> Options {
    Options {
        vfs: Arc::new(vfs.clone()),
        durability,
        segment_size: 64 << 10,
        pages_per_file: 8,
        checkpoint_interval: checkpoint,
        ..Options::default()
    }
}

fn key() -> HostKey {
    HostKey::new("emmy", "n0001").expect("key")
}

fn open(vfs: &SimVfs, durability: Durability, checkpoint: Option<Duration>) -> Db {
    let db = Db::open("/db", opts(vfs, durability, checkpoint)).expect("open");
    db.declare_metric("load", MetricConfig { frequency: 10, aggregation: Aggregation::Sum }).expect("declare");
    db
}

fn write(db: &Db, from: i64, n: i64) -> Result<silt::WriteAck, Error> {
    let mut b = Batch::new();
    for i in from..from + n {
        b.push(&key(), "load", T + i * 10, i as f64);
    }
    db.write(&b)
}

fn count(db: &Db) -> usize {
    db.read(&key(), "load", T, T + 1_000_000).expect("read").values.iter().filter(|v| !v.is_nan()).count()
}

#[test]
fn interval_durability_syncs_within_the_interval() {
    let vfs = SimVfs::new();
    let db = open(&vfs, Durability::IntervalMs(20), None);
    let ack = write(&db, 0, 10).expect("write");
    assert_eq!(ack.durability, Durability::IntervalMs(20));
    std::thread::sleep(Duration::from_millis(300));
    let crashed = vfs.crash_clean();
    drop(db);
    let db = open(&crashed, Durability::IntervalMs(20), None);
    assert_eq!(count(&db), 10, "samples acknowledged under IntervalMs(20) were not synced after 300 ms");
}

#[test]
fn no_durability_loses_unsynced_writes_on_a_crash_but_not_checkpointed_ones() {
    let vfs = SimVfs::new();
    let db = open(&vfs, Durability::None, None);
    write(&db, 0, 10).expect("write");
    db.checkpoint().expect("checkpoint");
    write(&db, 10, 10).expect("write");
    let crashed = vfs.crash_clean();
    drop(db);
    let db = open(&crashed, Durability::None, None);
    // Everything before the checkpoint is there; what came after was never synced.
    assert_eq!(count(&db), 10);
}

#[test]
fn checkpoints_run_on_their_schedule_and_truncate_the_wal() {
    let vfs = SimVfs::new();
    let db = open(&vfs, Durability::Sync, Some(Duration::from_millis(50)));
    write(&db, 0, 100).expect("write");
    std::thread::sleep(Duration::from_millis(400));
    assert!(db.engine().stats().checkpoints.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    let crashed = vfs.crash_clean();
    drop(db);
    let db = open(&crashed, Durability::Sync, None);
    assert_eq!(count(&db), 100);
    assert_eq!(db.recovery().replay.applied, 0, "a scheduled checkpoint should have covered every record");
}

#[test]
fn a_failed_fsync_makes_the_database_read_only_and_is_never_retried() {
    let vfs = SimVfs::new();
    let db = open(&vfs, Durability::Sync, None);
    write(&db, 0, 10).expect("write");
    vfs.fail_next(FaultOp::SyncData, std::io::ErrorKind::Other);
    let e = write(&db, 10, 10).expect_err("the write whose fsync failed must not be acknowledged");
    assert!(matches!(e, Error::Storage(StorageError::Io { .. } | StorageError::PreviousIo(_))), "{e:?}");
    // The fault is gone, but the database stays read-only: the state of the failed write is unknown.
    let e = write(&db, 20, 10).expect_err("writes after a failed fsync");
    assert!(matches!(e, Error::Storage(StorageError::PreviousIo(_))), "{e:?}");
    assert!(matches!(db.checkpoint(), Err(Error::Storage(StorageError::PreviousIo(_)))));
    // Reads still work and show what was acknowledged.
    assert_eq!(count(&db), 10);
    // After a restart the acknowledged samples are there; the failed write may or may not be.
    let crashed = vfs.crash_clean();
    drop(db);
    let db = open(&crashed, Durability::Sync, None);
    let n = count(&db);
    assert!(n == 10 || n == 20, "{n}");
    write(&db, 30, 1).expect("a reopened database writes again");
}

#[test]
fn a_torn_wal_tail_is_repaired_and_writing_continues() {
    let vfs = SimVfs::new();
    let db = open(&vfs, Durability::None, None);
    write(&db, 0, 10).expect("write");
    db.checkpoint().expect("checkpoint");
    for i in 0..20 {
        write(&db, 10 + i * 5, 5).expect("write");
    }
    // Crash with random loss and tearing of the unsynced tail, many times over.
    for seed in 0..20u64 {
        let crashed = vfs.crash(seed);
        let db2 = open(&crashed, Durability::Sync, None);
        let n = count(&db2);
        assert!((10..=110).contains(&n), "seed {seed}: {n}");
        write(&db2, 200, 5).expect("write after repair");
        // Crash before close, so recovery must read the repaired segment, not a fresh checkpoint.
        let again = crashed.crash_clean();
        drop(db2);
        let db3 = open(&again, Durability::Sync, None);
        assert_eq!(count(&db3), n + 5, "seed {seed}: the repaired log lost or invented records");
    }
    drop(db);
}

/// `Db::sync` is a durability barrier under every durability: after it returns, a crash that loses any
/// unsynced writes (and tears the WAL's tail) keeps every write acknowledged before the call, bit for bit.
#[test]
fn sync_makes_every_earlier_write_durable_under_any_durability() {
    for durability in [Durability::None, Durability::IntervalMs(3_600_000), Durability::Sync] {
        let vfs = SimVfs::new();
        let db = open(&vfs, durability, None);
        for i in 0..10 {
            write(&db, i * 7, 7).expect("write");
        }
        db.sync().expect("sync");
        // Written after the barrier: may be lost, or torn off the tail.
        write(&db, 70, 30).expect("write");
        let crashes: Vec<SimVfs> = (0..12u64).map(|seed| vfs.crash(seed)).chain([vfs.crash_clean()]).collect();
        drop(db);
        for (seed, crashed) in crashes.into_iter().enumerate() {
            let db = open(&crashed, durability, None);
            let r = db.read(&key(), "load", T, T + 1000).expect("read");
            for i in 0..70 {
                assert_eq!(r.values[i].to_bits(), (i as f64).to_bits(), "{durability:?}, crash {seed}: sample {i}");
            }
        }
    }
    // Under `None` without the barrier, the same crash loses them: the test above is not vacuous.
    let vfs = SimVfs::new();
    let db = open(&vfs, Durability::None, None);
    write(&db, 0, 70).expect("write");
    let crashed = vfs.crash_clean();
    drop(db);
    assert_eq!(count(&open(&crashed, Durability::None, None)), 0);
}

#[test]
fn sync_after_a_failed_fsync_reports_read_only() {
    let vfs = SimVfs::new();
    let db = open(&vfs, Durability::None, None);
    write(&db, 0, 10).expect("write");
    vfs.fail_next(FaultOp::SyncData, std::io::ErrorKind::Other);
    let e = db.sync().expect_err("the fsync failed");
    assert!(matches!(e, Error::Storage(StorageError::Io { .. })), "{e:?}");
    let e = db.sync().expect_err("never retried");
    assert!(matches!(e, Error::Storage(StorageError::PreviousIo(_))), "{e:?}");
    assert!(matches!(write(&db, 10, 1), Err(Error::Storage(StorageError::PreviousIo(_)))));
}

/// Metrics declared `Max` and `Min` keep their aggregation through WAL replay after a crash (the declaration
/// is only in the WAL), through a checkpoint and a crash (only in the manifest) and through a close and a
/// reopen; node reads keep combining the hwthreads with it.
#[test]
fn max_and_min_declarations_survive_replay_checkpoints_and_reopen() {
    let bp = MetricConfig { frequency: 10, aggregation: Aggregation::Max };
    let idle = MetricConfig { frequency: 10, aggregation: Aggregation::Min };
    let hw = |t: u32| key().component("hwthread", t).expect("key");
    // hwthread0: 3, 1; hwthread1: NaN, 4. Max per step 3, 4; min 3, 1.
    let children = |db: &Db, metric: &str| {
        let mut b = Batch::new();
        b.push(&hw(0), metric, T, 3.0);
        b.push(&hw(0), metric, T + 10, 1.0);
        b.push(&hw(1), metric, T, f64::NAN);
        b.push(&hw(1), metric, T + 10, 4.0);
        db.write(&b).expect("write");
    };
    let node = |db: &Db, metric: &str| db.read(&key(), metric, T, T + 20).expect("read").values;
    let reopen = |vfs: &SimVfs| Db::open("/db", opts(vfs, Durability::Sync, None)).expect("open");

    let vfs = SimVfs::new();
    let db = reopen(&vfs);
    db.declare_metric("bp", bp).expect("declare");
    children(&db, "bp");
    assert_eq!(node(&db, "bp"), vec![3.0, 4.0]);
    // Crash before any checkpoint: the declaration comes back from the WAL alone.
    let crashed = vfs.crash_clean();
    drop(db);
    let db = reopen(&crashed);
    assert_eq!(db.metric("bp"), Some(bp), "after replay");
    assert_eq!(node(&db, "bp"), vec![3.0, 4.0], "after replay");

    // Checkpoint, then crash: the manifest holds both declarations, the WAL neither.
    db.declare_metric("idle", idle).expect("declare");
    children(&db, "idle");
    db.checkpoint().expect("checkpoint");
    let crashed = crashed.crash_clean();
    drop(db);
    let db = reopen(&crashed);
    assert_eq!((db.metric("bp"), db.metric("idle")), (Some(bp), Some(idle)), "after a checkpoint");
    assert_eq!(node(&db, "bp"), vec![3.0, 4.0], "after a checkpoint");
    assert_eq!(node(&db, "idle"), vec![3.0, 1.0], "after a checkpoint");
    // The stored configuration is the one compared with: another aggregation is refused.
    let sum = MetricConfig { frequency: 10, aggregation: Aggregation::Sum };
    assert!(db.declare_metric("bp", sum).is_err(), "bp was redeclared as sum");
    db.declare_metric("bp", bp).expect("the same declaration again");

    db.close().expect("close");
    let db = reopen(&crashed);
    assert_eq!((db.metric("bp"), db.metric("idle")), (Some(bp), Some(idle)), "after close");
    assert_eq!(node(&db, "idle"), vec![3.0, 1.0], "after close");
}
