//! Named state blobs (`Db::put_state`, `Db::state`, `Db::delete_state`) on the fault-injecting file
//! system: round trip, name checks, and a crash at every mutating file operation of a replacement (with the
//! operations after it failing, then any subset of the unsynced ones lost or torn) leaves the old value or
//! the new one, never a torn one; a replacement that returned `Ok` survives every crash.

use std::sync::Arc;

use silt::storage::io::sim::SimVfs;
use silt::storage::io::Vfs;
use silt::storage::StorageError;
use silt::{Db, Durability, Error, Options};

fn open(vfs: &SimVfs) -> Db {
    Db::open(
        "/db",
        Options {
            vfs: Arc::new(vfs.clone()),
            durability: Durability::Sync,
            checkpoint_interval: None,
            segment_size: 64 << 10,
            pages_per_file: 4,
            ..Options::default()
        },
    )
    .expect("open")
}

#[test]
fn put_read_replace_delete_and_reopen() {
    let vfs = SimVfs::new();
    let db = open(&vfs);
    assert_eq!(db.state("pipe").unwrap(), None);
    db.put_state("pipe", b"first").unwrap();
    db.put_state("other", &[0u8; 10_000]).unwrap();
    db.put_state("pipe", b"second").unwrap();
    assert_eq!(db.state("pipe").unwrap().as_deref(), Some(&b"second"[..]));
    db.close().unwrap();
    let db = open(&vfs);
    assert_eq!(db.state("pipe").unwrap().as_deref(), Some(&b"second"[..]));
    assert_eq!(db.state("other").unwrap().map(|v| v.len()), Some(10_000));
    assert!(db.delete_state("pipe").unwrap());
    assert!(!db.delete_state("pipe").unwrap());
    assert_eq!(db.state("pipe").unwrap(), None);
    assert_eq!(vfs.list_dir("/db/state".as_ref()).unwrap(), vec!["other".to_string()]);
    // A deletion is durable at once.
    let crashed = vfs.crash_clean();
    drop(db);
    assert_eq!(open(&crashed).state("pipe").unwrap(), None);
}

#[test]
fn bad_names_are_refused_clearly() {
    let vfs = SimVfs::new();
    let db = open(&vfs);
    let long = "x".repeat(201);
    for (name, why) in [
        ("", "empty"),
        ("a/b", "'/'"),
        ("..", "\"..\""),
        ("../x", "'/'"),
        ("a..b", "\"..\""),
        (".hidden", "starts with '.'"),
        ("x.tmp", "\".tmp\""),
        (long.as_str(), "longer than 200 bytes"),
    ] {
        for r in [db.put_state(name, b"v").err(), db.state(name).err(), db.delete_state(name).err()] {
            let e = r.unwrap_or_else(|| panic!("{name:?} was accepted"));
            assert!(matches!(e, Error::Storage(StorageError::InvalidName { .. })), "{name:?}: {e:?}");
            assert!(e.to_string().contains(why), "{name:?}: {e}");
        }
    }
    db.put_state(&"x".repeat(200), b"v").unwrap();
}

fn value(byte: u8, len: usize) -> Vec<u8> {
    vec![byte; len]
}

/// Replaces `old` (if any) with `new` on a fresh file system, with every mutating file operation after the
/// first `n` of the replacement failing; then crashes with several seeds (and cleanly) and checks what a
/// reopened database reads. Returns whether the replacement returned `Ok`.
fn crash_during_put(n: u64, old: Option<&[u8]>, new: &[u8]) -> bool {
    let vfs = SimVfs::new();
    let db = open(&vfs);
    if let Some(old) = old {
        db.put_state("ckpt", old).unwrap();
    }
    vfs.fail_after(n);
    let ok = db.put_state("ckpt", new).is_ok();
    let crashes: Vec<(String, SimVfs)> = (0..16u64)
        .map(|seed| (format!("seed {seed}"), vfs.crash(seed * 7919 + n)))
        .chain([("clean".to_string(), vfs.crash_clean())])
        .collect();
    vfs.clear_faults();
    drop(db);
    for (what, crashed) in crashes {
        let db = open(&crashed);
        let got = db.state("ckpt").unwrap();
        let got = got.as_deref();
        if ok {
            assert_eq!(got, Some(new), "n {n}, {what}: a put that returned Ok was lost");
        } else {
            assert!(
                got == old || got == Some(new),
                "n {n}, {what}: torn value of {} bytes",
                got.map_or(0, |g| g.len())
            );
        }
        // And the store goes on: the next put works.
        db.put_state("ckpt", b"after").unwrap();
        assert_eq!(db.state("ckpt").unwrap().as_deref(), Some(&b"after"[..]));
    }
    ok
}

#[test]
fn a_crash_at_any_point_of_a_replacement_leaves_old_or_new() {
    let old = value(b'o', 5000);
    let new = value(b'n', 9000);
    let mut succeeded = None;
    for n in 0..20 {
        if crash_during_put(n, Some(&old), &new) {
            succeeded = Some(n);
            break;
        }
    }
    let n = succeeded.expect("a replacement succeeds once enough operations are allowed");
    assert!(n >= 4, "a replacement takes create, write, fsync, rename, fsync dir; it succeeded after {n}");
    // A shorter new value over a longer old one.
    for n in 0..=n {
        crash_during_put(n, Some(&new), b"short");
    }
}

#[test]
fn a_crash_during_the_first_put_leaves_nothing_or_the_value() {
    for n in 0..12 {
        if crash_during_put(n, None, &value(b'v', 3000)) {
            return;
        }
    }
    panic!("the first put never succeeded");
}

#[test]
fn a_failed_fsync_of_the_temporary_file_keeps_the_old_value() {
    use silt::storage::io::sim::FaultOp;
    let vfs = SimVfs::new();
    let db = open(&vfs);
    db.put_state("ckpt", b"old").unwrap();
    vfs.fail_next(FaultOp::SyncData, std::io::ErrorKind::Other);
    let e = db.put_state("ckpt", b"new").unwrap_err();
    assert!(e.to_string().contains("fsync"), "{e}");
    assert_eq!(db.state("ckpt").unwrap().as_deref(), Some(&b"old"[..]));
    assert_eq!(vfs.list_dir("/db/state".as_ref()).unwrap(), vec!["ckpt".to_string()], "the temporary file went");
    db.put_state("ckpt", b"new").unwrap();
    assert_eq!(db.state("ckpt").unwrap().as_deref(), Some(&b"new"[..]));
}
