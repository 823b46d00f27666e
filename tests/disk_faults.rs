//! A full disk where the WAL needs room: the write that meets it is refused whole (nothing of it logged),
//! everything acknowledged stays, reads go on, and writing resumes once there is room again. Through the
//! fault-injecting file system (`SimVfs`) and through the HTTP API (507 with a JSON body and `Retry-After`).

use std::io::ErrorKind;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use silt::server::{app, AppState};
use silt::storage::io::sim::{FaultOp, SimVfs};
use silt::storage::io::Vfs;
use silt::storage::StorageError;
use silt::{Aggregation, Batch, Db, Durability, Error, HostKey, MetricConfig, Options};
use tower::ServiceExt;

const T: i64 = 1_700_000_000;
const F: i64 = 10;

fn options(vfs: &SimVfs) -> Options {
    Options {
        vfs: Arc::new(vfs.clone()),
        durability: Durability::Sync,
        segment_size: 64 << 10,
        pages_per_file: 1024,
        checkpoint_interval: None,
        ..Options::default()
    }
}

fn open(vfs: &SimVfs) -> Db {
    let db = Db::open("/db", options(vfs)).expect("open");
    db.declare_metric("m", MetricConfig { frequency: F, aggregation: Aggregation::Avg }).expect("declare");
    db
}

fn key(h: u32) -> HostKey {
    HostKey::new("c", &format!("n{h}")).expect("key")
}

/// Batch `i`: one sample for each of 50 hosts at step `i`.
fn batch(i: i64) -> Batch {
    let mut b = Batch::new();
    for h in 0..50 {
        b.push(&key(h), "m", T + i * F, (i * 100 + i64::from(h)) as f64);
    }
    b
}

/// A database with batch 0 written (which creates the head file, a create too: faults start after it), and
/// the steps acknowledged so far.
fn started() -> (SimVfs, Db, Vec<i64>) {
    let vfs = SimVfs::new();
    let db = open(&vfs);
    db.write(&batch(0)).expect("first write");
    (vfs, db, vec![0])
}

/// Every step in `steps` is what batch `i` wrote, for every host.
fn check(db: &Db, steps: &[i64]) {
    for h in [0u32, 17, 49] {
        let r = db.read(&key(h), "m", T, T + 1_000_000).expect("read");
        for &i in steps {
            let at = ((T + i * F - r.from) / F) as usize;
            assert_eq!(r.values.get(at).copied(), Some((i * 100 + i64::from(h)) as f64), "host {h} step {i}");
        }
    }
}

#[test]
fn a_full_disk_at_a_wal_rotation_refuses_the_write_and_writing_resumes_when_space_returns() {
    let (vfs, db, mut acked) = started();
    let mut refusals = 0;
    let mut i = 1;
    // Over several rotations of 64 KiB segments, every segment creation first meets a full disk.
    while acked.len() < 600 {
        vfs.fail_next(FaultOp::Create, ErrorKind::StorageFull);
        match db.write(&batch(i)) {
            Ok(_) => acked.push(i),
            Err(Error::Storage(StorageError::NotLogged { full: true, message })) => {
                refusals += 1;
                assert!(message.contains(".wal"), "{message}");
                // Reads go on meanwhile, and nothing acknowledged is missing.
                check(&db, &acked);
                // The same write again, now that there is room: it goes through.
                vfs.clear_faults();
                db.write(&batch(i)).expect("the write after space returned");
                acked.push(i);
            }
            Err(e) => panic!("batch {i}: {e}"),
        }
        vfs.clear_faults();
        i += 1;
    }
    assert!(refusals >= 3, "only {refusals} rotations met the full disk");
    check(&db, &acked);
    // Nothing acknowledged is lost over a power cut either, whichever unsynced writes survive.
    for seed in [1, 2, 3] {
        let crashed = vfs.crash(seed);
        let db = Db::open("/db", options(&crashed)).expect("reopen after crash");
        check(&db, &acked);
        assert!(db.recovery().damaged_blocks.is_empty());
    }
}

#[test]
fn an_io_error_creating_a_segment_is_a_refusal_too_but_a_failed_fsync_makes_the_database_read_only() {
    let (vfs, db, mut acked) = started();
    let mut i = 1;
    // EIO on the create: refused, not full.
    let mut seen = false;
    while !seen {
        vfs.fail_next(FaultOp::Create, ErrorKind::Other);
        match db.write(&batch(i)) {
            Ok(_) => acked.push(i),
            Err(Error::Storage(StorageError::NotLogged { full: false, .. })) => seen = true,
            Err(e) => panic!("batch {i}: {e}"),
        }
        vfs.clear_faults();
        i += 1;
    }
    db.write(&batch(i)).expect("writable after a refused write");
    acked.push(i);
    i += 1;
    // A failed fsync of the WAL is never retried as if the data were safe: read-only from then on.
    vfs.fail_next(FaultOp::SyncData, ErrorKind::Other);
    assert!(db.write(&batch(i)).is_err());
    vfs.clear_faults();
    match db.write(&batch(i + 1)) {
        Err(Error::Storage(StorageError::PreviousIo(_))) => {}
        other => panic!("expected read-only, got {other:?}"),
    }
    check(&db, &acked);
}

async fn call(st: &AppState, method: Method, uri: &str, body: String) -> (StatusCode, Option<String>, String) {
    let req = Request::builder().method(method).uri(uri).body(Body::from(body)).expect("request");
    let resp = app(st.clone()).oneshot(req).await.expect("response");
    let status = resp.status();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap_or("").to_owned());
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, retry, String::from_utf8_lossy(&bytes).into_owned())
}

fn lines(i: i64) -> String {
    (0..50).map(|h| format!("m,cluster=c,hostname=n{h} value={} {}\n", i * 100 + h, T + i * F)).collect()
}

#[tokio::test]
async fn http_answers_507_with_retry_after_and_keeps_serving_reads() {
    let vfs = SimVfs::new();
    let st = AppState::new(Arc::new(open(&vfs)));
    let (s, _, b) = call(&st, Method::POST, "/api/write", lines(0)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut i = 1;
    let refused = loop {
        vfs.fail_next(FaultOp::Create, ErrorKind::StorageFull);
        let (s, retry, body) = call(&st, Method::POST, "/api/write", lines(i)).await;
        vfs.clear_faults();
        if s != StatusCode::OK {
            break (s, retry, body);
        }
        i += 1;
        assert!(i < 10_000, "no rotation met the full disk");
    };
    assert_eq!(refused.0, StatusCode::INSUFFICIENT_STORAGE, "{}", refused.2);
    assert_eq!(refused.1.as_deref(), Some("5"));
    let body: serde_json::Value = serde_json::from_str(&refused.2).expect("a JSON body");
    assert_eq!(body["status"], "Insufficient Storage");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("nothing of it was logged")), "{body}");
    // Reads are served, with everything acknowledged before.
    let q = format!(r#"{{"cluster":"c","from":{T},"to":{},"queries":[{{"metric":"m","host":"n7"}}]}}"#, T + i * F);
    let (s, _, b) = call(&st, Method::GET, "/api/query", q).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.contains(&format!("{:.3}]", ((i - 1) * 100 + 7) as f64)), "{b}");
    // Space is back: the same write is accepted.
    let (s, retry, b) = call(&st, Method::POST, "/api/write", lines(i)).await;
    assert_eq!((s, retry), (StatusCode::OK, None), "{b}");
}

#[test]
fn a_full_disk_while_new_series_are_defined_never_leaves_samples_of_an_unlogged_series() {
    // Each batch names a new host besides the 50 known ones. A definition that meets the full disk makes the
    // database read-only (the catalog already holds it); a batch of samples only is refused. Either way,
    // what was acknowledged reopens intact, and the WAL never holds samples of a series it does not define.
    let (vfs, db, mut acked) = started();
    let mut i = 1;
    let read_only = loop {
        assert!(i < 20_000, "no rotation met a definition");
        let mut b = batch(i);
        b.push(&key(1000 + i as u32), "m", T + i * F, 1.0);
        vfs.fail_next(FaultOp::Create, ErrorKind::StorageFull);
        let r = db.write(&b);
        vfs.clear_faults();
        match r {
            Ok(_) => acked.push(i),
            Err(Error::Storage(StorageError::NotLogged { .. })) => {}
            Err(e) => break e,
        }
        i += 1;
    };
    assert!(
        matches!(db.write(&batch(i + 1)), Err(Error::Storage(StorageError::PreviousIo(_)))),
        "read-only after {read_only}"
    );
    check(&db, &acked);
    drop(db);
    let db = Db::open("/db", options(&vfs.crash_clean())).expect("reopen");
    check(&db, &acked);
    let last = *acked.last().expect("acked");
    let r = db.read(&key(1000 + last as u32), "m", T, T + 1_000_000).expect("read the newest host");
    assert_eq!(r.values, vec![1.0]);
}

#[test]
fn a_checkpoint_that_cannot_write_changes_nothing_and_the_next_one_succeeds() {
    let (vfs, db, mut acked) = started();
    // Each fault in turn: no room for the WAL segment a checkpoint starts (create, directory fsync), and a
    // failed rename of the new manifest over the old one. None may turn the database read-only.
    for (n, (op, kind)) in [
        (FaultOp::Create, ErrorKind::StorageFull),
        (FaultOp::SyncDir, ErrorKind::Other),
        (FaultOp::Rename, ErrorKind::Other),
    ]
    .into_iter()
    .enumerate()
    {
        vfs.fail_next(op, kind);
        match db.checkpoint() {
            Err(Error::Storage(StorageError::NotWritten { full, message })) => {
                assert_eq!(full, kind == ErrorKind::StorageFull, "{message}");
            }
            other => panic!("{op:?}: expected NotWritten, got {other:?}"),
        }
        vfs.clear_faults();
        let i = n as i64 + 1;
        db.write(&batch(i)).expect("writable after a checkpoint that could not write");
        acked.push(i);
        assert!(!vfs.exists(std::path::Path::new("/db/MANIFEST.tmp")), "{op:?} left MANIFEST.tmp");
    }
    db.checkpoint().expect("the next checkpoint");
    db.write(&batch(10)).expect("write");
    acked.push(10);
    check(&db, &acked);
    for seed in [7, 8] {
        let db = Db::open("/db", options(&vfs.crash(seed))).expect("reopen after crash");
        check(&db, &acked);
    }
}
