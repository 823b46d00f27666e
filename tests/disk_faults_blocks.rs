//! A full disk (and I/O errors) where a compaction writes its block and where an archive writes its Parquet
//! files, through the fault-injecting file system (`SimVfs`).
//!
//! A fault at any step of a block write fails the compaction with an error naming the block, leaves no
//! temporary or partial block behind, keeps every page in the head (so nothing is lost, also over a power
//! cut) and leaves the database writable; the same compaction succeeds once the fault is gone. An archive
//! whose file cannot be written keeps its blocks and leaves no partial file; the next attempt archives them.
//!
//! `SimVfs` fails the next operation of a kind wherever it comes; a compaction first logs a seal record
//! (a WAL write and fsync), so the faults aimed at the block go through `Aimed` (`tests/aimed`), a thin
//! `Vfs` over the `SimVfs` that fails only operations on paths under a given directory.

mod aimed;

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use aimed::Aimed;

use silt::query::QueryError;
use silt::storage::io::sim::{FaultOp, SimVfs};
use silt::storage::io::{OpenMode, Vfs};
use silt::storage::StorageError;
use silt::{Aggregation, Batch, Db, Durability, Error, HostKey, MetricConfig, Options, Selector};

const T: i64 = 1_000_000;
const F: i64 = 10;
const PAGE: i64 = 512;
const HOSTS: u32 = 20;
/// Steps written per host: three full pages and part of a fourth.
const STEPS: i64 = 3 * PAGE + 100;
/// Compactions move the pages wholly before this: two per host.
const BEFORE: i64 = T - F / 2 + 2 * PAGE * F;

fn options(vfs: Arc<dyn Vfs>) -> Options {
    Options {
        vfs,
        durability: Durability::Sync,
        segment_size: 64 << 10,
        pages_per_file: 1024,
        checkpoint_interval: None,
        ..Options::default()
    }
}

fn open(vfs: Arc<dyn Vfs>) -> Db {
    let db = Db::open("/db", options(vfs)).expect("open");
    db.declare_metric("m", MetricConfig { frequency: F, aggregation: Aggregation::Avg }).expect("declare");
    db
}

fn key(h: u32) -> HostKey {
    HostKey::new("c", &format!("n{h}")).expect("key")
}

fn value(h: u32, i: i64) -> f64 {
    f64::from(h) * 1e5 + i as f64 / 8.0
}

/// A database on `vfs` with [`STEPS`] steps of every host written, in batches of 64 steps (a few WAL
/// segments' worth).
fn setup(vfs: Arc<dyn Vfs>) -> Db {
    let db = open(vfs);
    for first in (0..STEPS).step_by(64) {
        let mut b = Batch::new();
        for i in first..(first + 64).min(STEPS) {
            for h in 0..HOSTS {
                b.push(&key(h), "m", T + i * F, value(h, i));
            }
        }
        db.write(&b).expect("write");
    }
    db
}

/// Every host reads back every step written, with its value. Returns the samples compared.
fn check_all(db: &Db, what: &str) -> usize {
    let mut n = 0;
    for h in 0..HOSTS {
        let r = db.read(&key(h), "m", T, T + STEPS * F).unwrap_or_else(|e| panic!("{what}: read n{h}: {e}"));
        assert_eq!(r.from, T, "{what}: n{h}");
        assert_eq!(r.values.len(), STEPS as usize, "{what}: n{h}");
        for (i, v) in r.values.iter().enumerate() {
            assert_eq!(*v, value(h, i as i64), "{what}: n{h} step {i}");
        }
        n += r.values.len();
    }
    n
}

fn compact(db: &Db) -> Result<u64, Error> {
    db.compact_selector(&Selector::all_hosts("c").expect("selector"), BEFORE)
}

/// The storage error inside a database error.
fn storage(e: &Error) -> Option<&StorageError> {
    match e {
        Error::Storage(s) | Error::Query(QueryError::Storage(s)) => Some(s),
        _ => None,
    }
}

/// Files under `/db/blocks` (none if it does not exist).
fn block_files(vfs: &SimVfs) -> Vec<String> {
    vfs.list_dir(Path::new("/db/blocks")).unwrap_or_default()
}

/// Opens a crash image, checks every sample and that no block is damaged (recovery and the checker).
fn check_image(image: &SimVfs, what: &str) -> usize {
    let report = silt::storage::check::check(image, Path::new("/db")).expect("check");
    assert!(!report.is_damaged(), "{what}: the checker finds damage: {report}");
    let db = Db::open("/db", options(Arc::new(image.clone()))).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    assert!(db.recovery().damaged_blocks.is_empty(), "{what}: {:?}", db.recovery().damaged_blocks);
    check_all(&db, what)
}

#[test]
fn each_failing_step_of_a_block_write_fails_the_compaction_keeps_the_pages_and_the_retry_succeeds() {
    let faults = [
        (FaultOp::Create, ErrorKind::StorageFull),
        (FaultOp::Write, ErrorKind::StorageFull),
        (FaultOp::Write, ErrorKind::Other),
        (FaultOp::SyncData, ErrorKind::StorageFull),
        (FaultOp::SyncData, ErrorKind::Other),
        (FaultOp::Rename, ErrorKind::StorageFull),
        (FaultOp::Rename, ErrorKind::Other),
        (FaultOp::SyncDir, ErrorKind::Other),
    ];
    let mut verified = 0;
    for (op, kind) in faults {
        let what = format!("{op:?} {kind:?}");
        let sim = SimVfs::new();
        let vfs = Aimed::new(sim.clone());
        let db = setup(Arc::new(vfs.clone()));
        let pages = db.engine().head().pages_in_use();
        vfs.aim(op, kind, "/db/blocks");
        let err = compact(&db).expect_err(&what);
        assert!(!vfs.armed(), "{what}: the fault never fired");
        match storage(&err) {
            Some(StorageError::Io { op: "write block", path, source }) => {
                assert!(path.starts_with("/db/blocks"), "{what}: {err}");
                assert_eq!(source.kind(), kind, "{what}: {err}");
            }
            _ => panic!("{what}: expected an I/O error writing the block, got {err:?}"),
        }
        // Nothing left behind, nothing published, every page still in the head.
        assert_eq!(block_files(&sim), Vec::<String>::new(), "{what}");
        assert!(db.engine().blocks().is_empty(), "{what}");
        assert_eq!(db.engine().head().pages_in_use(), pages, "{what}");
        verified += check_all(&db, &what);
        // Writable: a write of the next step of host 0 goes through (and is undone by rewriting it below).
        let mut b = Batch::new();
        b.push(&key(0), "m", T + (STEPS - 1) * F, value(0, STEPS - 1));
        db.write(&b).unwrap_or_else(|e| panic!("{what}: not writable after the failed compaction: {e}"));
        // A power cut now: everything there, no damage.
        for seed in [1, 2] {
            verified += check_image(&sim.crash(seed), &format!("{what}, crash {seed}"));
        }
        verified += check_image(&sim.crash_clean(), &format!("{what}, clean crash"));
        // The same compaction, the fault gone: it succeeds and moves the pages into one block.
        let moved = compact(&db).unwrap_or_else(|e| panic!("{what}: the retry: {e}"));
        assert_eq!(moved, u64::from(HOSTS) * 2, "{what}");
        assert_eq!(block_files(&sim).len(), 1, "{what}: {:?}", block_files(&sim));
        verified += check_all(&db, &format!("{what}, after the retry"));
        verified += check_image(&sim.crash(3), &format!("{what}, crash after the retry"));
    }
    eprintln!("{} aimed faults, {verified} samples verified", faults.len());
}

#[test]
fn a_compaction_failing_at_any_step_loses_nothing_over_a_power_cut_and_completes_after_reopening() {
    // How many mutating operations a compaction takes (the same history every time).
    let steps = {
        let sim = SimVfs::new();
        let db = setup(Arc::new(sim.clone()));
        let before = sim.mutating_ops();
        assert_eq!(compact(&db).expect("compact"), u64::from(HOSTS) * 2);
        sim.mutating_ops() - before
    };
    assert!(steps >= 8, "a compaction of {steps} operations");
    let (mut failed, mut verified, mut read_only) = (0, 0, 0);
    for n in 0..steps {
        let sim = SimVfs::new();
        let db = setup(Arc::new(sim.clone()));
        sim.fail_after(n);
        let r = compact(&db);
        sim.clear_faults();
        let err = r.expect_err(&format!("a compaction whose operation {n} of {steps} fails"));
        failed += 1;
        assert!(storage(&err).is_some(), "step {n}: an untyped error {err:?}");
        // Reads go on, with every sample (from the head, or from a block that was published).
        verified += check_all(&db, &format!("step {n}"));
        // A power cut right after the failed step: everything there, no damaged block.
        for seed in [n, n + 1000] {
            verified += check_image(&sim.crash(seed), &format!("step {n}, crash {seed}"));
        }
        let image = sim.crash_clean();
        verified += check_image(&image, &format!("step {n}, clean crash"));
        // A failed WAL record (the seal or the free) or a block write that could not be undone leaves the
        // database read-only, as after a failed fsync; otherwise the same compaction now succeeds.
        match compact(&db) {
            Ok(_) => verified += check_all(&db, &format!("step {n}, compacted")),
            Err(e) => {
                assert!(matches!(storage(&e), Some(StorageError::PreviousIo(_))), "step {n}: the retry: {e}");
                read_only += 1;
            }
        }
        // Reopened after the power cut, the compaction completes: each host keeps its last two pages.
        drop(db);
        let db = Db::open("/db", options(Arc::new(image.clone()))).expect("reopen");
        compact(&db).unwrap_or_else(|e| panic!("step {n}: the compaction after reopening: {e}"));
        for h in 0..HOSTS {
            let id = db.series_id(&key(h), "m").expect("id");
            let (pages, _) = db.engine().head().pages(id).expect("pages");
            assert_eq!(pages.len(), 2, "step {n}: n{h} after the compaction");
        }
        verified += check_all(&db, &format!("step {n}, compacted after reopening"));
        assert!(!block_files(&image).iter().any(|f| f.ends_with(".tmp")), "step {n}: {:?}", block_files(&image));
    }
    eprintln!(
        "compaction of {steps} operations failed at each: {failed} faults, {read_only} left the database \
         read-only, {verified} samples verified"
    );
}

#[test]
fn enospc_or_eio_at_any_one_step_of_a_compaction_fails_it_cleanly() {
    // The same history every time: a compaction of 10 operations (seal record: write, fsync; block: create,
    // write of the chunks and index, write of the header, fsync, rename, directory fsync; free record: write,
    // fsync).
    let steps = {
        let sim = SimVfs::new();
        let db = setup(Arc::new(sim.clone()));
        let before = sim.mutating_ops();
        compact(&db).expect("compact");
        sim.mutating_ops() - before
    };
    let (mut faults, mut block_steps, mut wal_steps, mut verified) = (0, 0, 0, 0);
    for kind in [ErrorKind::StorageFull, ErrorKind::Other] {
        for n in 0..steps {
            let what = format!("{kind:?} at step {n} of {steps}");
            let sim = SimVfs::new();
            let vfs = Aimed::new(sim.clone());
            let db = setup(Arc::new(vfs.clone()));
            vfs.aim_nth(n, kind);
            let err = compact(&db).expect_err(&what);
            assert!(!vfs.armed(), "{what}: the fault never fired");
            faults += 1;
            verified += check_all(&db, &what);
            match storage(&err) {
                // The block write failed: undone, the database writable, the same compaction succeeds.
                Some(StorageError::Io { op: "write block", source, .. }) => {
                    assert_eq!(source.kind(), kind, "{what}");
                    block_steps += 1;
                    assert!(block_files(&sim).is_empty(), "{what}: {:?}", block_files(&sim));
                    let mut b = Batch::new();
                    b.push(&key(0), "m", T + (STEPS - 1) * F, value(0, STEPS - 1));
                    db.write(&b).unwrap_or_else(|e| panic!("{what}: not writable: {e}"));
                    assert_eq!(compact(&db).unwrap_or_else(|e| panic!("{what}: retry: {e}")), u64::from(HOSTS) * 2);
                    verified += check_all(&db, &format!("{what}, retried"));
                }
                // A WAL record (the seal or the free) failed to write or sync: never retried as if it were
                // safe, the database is read-only.
                Some(StorageError::Io { .. } | StorageError::PreviousIo(_)) => {
                    wal_steps += 1;
                    assert!(
                        matches!(db.checkpoint(), Err(Error::Storage(StorageError::PreviousIo(_)))),
                        "{what}: {err}: expected read-only"
                    );
                }
                _ => panic!("{what}: {err:?}"),
            }
            // A power cut now (after the retry, where there was one): everything there, no damage.
            verified += check_image(&sim.crash(n), &format!("{what}, crash"));
            verified += check_image(&sim.crash_clean(), &format!("{what}, clean crash"));
        }
    }
    assert_eq!((block_steps, wal_steps), (12, 8), "block and WAL steps of {steps}");
    eprintln!(
        "{faults} one-shot faults over {steps} steps ({block_steps} in the block write, {wal_steps} in WAL \
         records), {verified} samples verified"
    );
}

#[test]
fn a_full_disk_at_the_wal_rotation_of_a_compaction_refuses_it_and_the_database_stays_writable() {
    let sim = SimVfs::new();
    let vfs = Aimed::new(sim.clone());
    let db = setup(Arc::new(vfs.clone()));
    let ids: Vec<_> = (0..HOSTS).map(|h| db.series_id(&key(h), "m").expect("id")).collect();
    // Seal records of the size of the compaction's (one item per host) that seal nothing (before the first
    // page) fill the WAL segment until one needs the next segment, which the full disk refuses.
    let mut refused = None;
    for k in 0..10_000 {
        vfs.aim(FaultOp::Create, ErrorKind::StorageFull, "/db/wal");
        match db.engine().seal(ids.iter().map(|&id| (id, T - PAGE * F)).collect()) {
            Ok(0) => {}
            Ok(n) => panic!("sealed {n} pages before the first"),
            Err(e) => {
                refused = Some((k, e));
                break;
            }
        }
    }
    let (k, e) = refused.expect("no seal met a rotation");
    assert!(k > 10, "the hunt ended after {k} seals");
    assert!(matches!(e, StorageError::NotLogged { full: true, .. }), "after {k} seals: {e}");
    // The compaction meets the same full disk at its seal: refused, nothing written, pages in the head.
    let pages = db.engine().head().pages_in_use();
    vfs.aim(FaultOp::Create, ErrorKind::StorageFull, "/db/wal");
    let err = compact(&db).expect_err("a compaction while the WAL has no room");
    assert!(matches!(storage(&err), Some(StorageError::NotLogged { full: true, .. })), "{err}");
    assert!(block_files(&sim).is_empty());
    assert_eq!(db.engine().head().pages_in_use(), pages);
    check_all(&db, "after the refused compaction");
    // Room again: writes and the compaction go through.
    vfs.disarm();
    let mut b = Batch::new();
    b.push(&key(0), "m", T + (STEPS - 1) * F, value(0, STEPS - 1));
    db.write(&b).expect("write once there is room");
    assert_eq!(compact(&db).expect("compact once there is room"), u64::from(HOSTS) * 2);
    check_all(&db, "compacted");
    check_image(&sim.crash(5), "crash after the compaction");
}

#[test]
fn an_archive_that_cannot_be_written_keeps_its_blocks_and_the_next_attempt_archives_them() {
    let faults = [
        (FaultOp::Create, ErrorKind::StorageFull),
        (FaultOp::Write, ErrorKind::StorageFull),
        (FaultOp::Write, ErrorKind::Other),
        (FaultOp::SyncData, ErrorKind::StorageFull),
        (FaultOp::SyncData, ErrorKind::Other),
        (FaultOp::Rename, ErrorKind::StorageFull),
        (FaultOp::SyncDir, ErrorKind::Other),
    ];
    let archive = Path::new("/archive");
    for (op, kind) in faults {
        let what = format!("{op:?} {kind:?}");
        let sim = SimVfs::new();
        let vfs = Aimed::new(sim.clone());
        let db = setup(Arc::new(vfs.clone()));
        assert_eq!(compact(&db).expect("compact"), u64::from(HOSTS) * 2);
        let blocks = block_files(&sim);
        assert_eq!(blocks.len(), 1);
        vfs.aim(op, kind, "/archive");
        let err = db.archive_blocks_before(T + 3 * PAGE * F, Some(archive)).expect_err(&what);
        assert!(!vfs.armed(), "{what}: the fault never fired");
        match &err {
            Error::Archive(silt::archive::ArchiveError::Io { source, .. }) => assert_eq!(source.kind(), kind, "{err}"),
            other => panic!("{what}: expected an archive I/O error, got {other:?}"),
        }
        // The blocks stay, on disk and published; no file in the archive directory, not even a temporary.
        assert_eq!(block_files(&sim), blocks, "{what}");
        assert_eq!(db.engine().blocks().len(), 1, "{what}");
        assert_eq!(sim.list_dir(archive).expect("archive dir"), Vec::<String>::new(), "{what}");
        check_all(&db, &what);
        check_image(&sim.crash(7), &format!("{what}, crash"));
        // The next attempt archives them and removes the blocks.
        assert_eq!(db.archive_blocks_before(T + 3 * PAGE * F, Some(archive)).expect("archive"), 1, "{what}");
        assert!(block_files(&sim).is_empty(), "{what}");
        let files = sim.list_dir(archive).expect("archive dir");
        assert_eq!(files.len(), 1, "{what}: {files:?}");
        assert!(files[0].ends_with(".parquet"), "{what}: {files:?}");
        let rows = silt::archive::read_parquet_with(&sim, &archive.join(&files[0])).expect("read the archive");
        assert_eq!(rows.len(), (HOSTS as usize) * 2 * PAGE as usize, "{what}");
        for r in &rows {
            let h: u32 = r.hostname.trim_start_matches('n').parse().expect("host");
            let i = (r.timestamp - T) / F;
            assert_eq!(r.value, value(h, i), "{what}: {r:?}");
        }
    }
}

#[test]
fn the_archive_directory_that_cannot_be_created_is_an_error_and_keeps_the_blocks() {
    // The archive directory is made through the database's file system too: a file where it should be
    // fails it, before anything is removed.
    let sim = SimVfs::new();
    let db = setup(Arc::new(sim.clone()));
    compact(&db).expect("compact");
    sim.create_dir_all(Path::new("/a")).expect("dir");
    sim.open(Path::new("/a/file"), OpenMode::CreateNew).expect("a file");
    let err = db.archive_blocks_before(T + 3 * PAGE * F, Some(Path::new("/a/file/archive"))).expect_err("a file");
    assert!(matches!(storage(&err), Some(StorageError::Io { op: "create dir", .. })), "{err:?}");
    assert_eq!(block_files(&sim).len(), 1);
    check_all(&db, "after the failed archive");
}
