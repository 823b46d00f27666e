//! The cardinality limit (`Options::max_series`, `metric-store.max-series`): a write that would define series
//! past it is refused whole, with an error that names the limit, and nothing of it is stored.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use silt::server::{app, AppState};
use silt::storage::io::sim::SimVfs;
use silt::storage::StorageError;
use silt::{Aggregation, Batch, Db, Error, HostKey, MetricConfig, Options};
use tower::ServiceExt;

const T: i64 = 1_700_000_000;

fn options(vfs: &SimVfs) -> Options {
    Options { vfs: Arc::new(vfs.clone()), max_series: 100, checkpoint_interval: None, ..Options::default() }
}

fn open(vfs: &SimVfs) -> Db {
    let db = Db::open("/db", options(vfs)).expect("open");
    db.declare_metric("m", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).expect("declare");
    db
}

fn hosts(range: std::ops::Range<u32>) -> Batch {
    let mut b = Batch::new();
    for h in range {
        b.push(&HostKey::new("c", &format!("n{h}")).expect("key"), "m", T, f64::from(h));
    }
    b
}

fn stored(db: &Db, h: u32) -> bool {
    let r = db.read(&HostKey::new("c", &format!("n{h}")).expect("key"), "m", T, T + 10);
    r.is_ok_and(|r| r.values == vec![f64::from(h)])
}

#[test]
fn a_write_past_the_limit_is_refused_whole_and_the_limit_holds_across_a_restart() {
    let vfs = SimVfs::new();
    let db = open(&vfs);
    db.write(&hosts(0..90)).expect("90 series");
    match db.write(&hosts(85..110)) {
        Err(Error::Storage(StorageError::TooManySeries { limit, new })) => assert_eq!((limit, new), (100, 20)),
        other => panic!("expected the limit, got {other:?}"),
    }
    let msg = db.write(&hosts(85..110)).unwrap_err().to_string();
    assert!(msg.contains("20 new series, past the limit of 100"), "{msg}");
    // None of the refused write's new series exists.
    assert!((90..110).all(|h| !stored(&db, h)));
    assert_eq!(db.engine().series_count(), 90);
    // Up to the limit exactly, and known series are always written.
    db.write(&hosts(80..100)).expect("to the limit");
    assert!((0..100).all(|h| stored(&db, h)));
    db.write(&hosts(0..100)).expect("known series");
    drop(db);
    let db = open(&vfs);
    assert!((0..100).all(|h| stored(&db, h)));
    assert!(matches!(db.write(&hosts(100..101)), Err(Error::Storage(StorageError::TooManySeries { .. }))));
}

#[tokio::test]
async fn http_answers_400_naming_the_limit() {
    let vfs = SimVfs::new();
    let st = AppState::new(Arc::new(open(&vfs)));
    let body =
        |r: std::ops::Range<u32>| -> String { r.map(|h| format!("m,cluster=c,hostname=n{h} value=1 {T}\n")).collect() };
    let call = |b: String| {
        let st = st.clone();
        async move {
            let req = Request::builder().method(Method::POST).uri("/api/write").body(Body::from(b)).expect("req");
            let resp = app(st).oneshot(req).await.expect("response");
            let s = resp.status();
            (s, String::from_utf8_lossy(&resp.into_body().collect().await.expect("body").to_bytes()).into_owned())
        }
    };
    assert_eq!(call(body(0..100)).await.0, StatusCode::OK);
    let (s, b) = call(body(99..102)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).expect("JSON");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("past the limit of 100")), "{v}");
}
