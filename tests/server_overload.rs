//! Writes under overload through the router (`app().oneshot`): an admitted write waits for one of
//! `AppState::write_workers` decode slots before any CPU is spent on it, reads are answered meanwhile, the
//! admission budget still answers 503 to writes that cannot even queue, and a write given up while it
//! waits gives everything back. Slots are taken by the test itself, so nothing here depends on timing:
//! every wait is for a state the server must reach.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use silt::server::{app, AppState, WriteWorkers};
use silt::storage::io::sim::SimVfs;
use silt::{Aggregation, Db, HostKey, MetricConfig, Options};
use tokio::sync::Semaphore;
use tower::ServiceExt;

const T: i64 = 1_700_000_000;

fn state(write_workers: usize) -> AppState {
    let db = Db::open(
        "/db",
        Options { vfs: Arc::new(SimVfs::new()), checkpoint_interval: None, pages_per_file: 64, ..Options::default() },
    )
    .expect("open");
    db.declare_metric("load", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).expect("declare");
    let mut st = AppState::new(Arc::new(db));
    st.write_workers = WriteWorkers::new(write_workers);
    st
}

/// A request with its `Content-Length`, as clients send it (admission charges the budget by it).
async fn call(st: &AppState, method: Method, uri: &str, body: String) -> (StatusCode, Option<String>, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .expect("request");
    let resp = app(st.clone()).oneshot(req).await.expect("response");
    let status = resp.status();
    let retry = resp.headers().get(header::RETRY_AFTER).map(|v| v.to_str().expect("ascii").to_owned());
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, retry, String::from_utf8_lossy(&bytes).into_owned())
}

fn line(host: u32) -> String {
    format!("load,cluster=emmy,hostname=n{host} value={host} {T}\n")
}

/// The value of an unlabelled metric on `/metrics`.
fn metric(st: &AppState, name: &str) -> i64 {
    let text = st.metrics.render(&st.db, None);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

/// Waits (up to 60 s, polling) until `name` reads `value`.
async fn until(st: &AppState, name: &str, value: i64) {
    for _ in 0..6000 {
        if metric(st, name) == value {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name} never reached {value}: {}", metric(st, name));
}

fn stored(st: &AppState, host: u32) -> bool {
    let r = st.db.read(&HostKey::new("emmy", &format!("n{host}")).expect("key"), "load", T, T + 10).expect("read");
    r.values.iter().any(|v| !v.is_nan())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_write_workers_wait_for_a_slot_and_reads_go_on() {
    let mut st = state(1);
    // Room for three small writes in flight (each holds 1 KiB of the budget).
    st.writes = Arc::new(Semaphore::new(3));
    assert_eq!(call(&st, Method::POST, "/api/write", line(9)).await.0, StatusCode::OK);
    // The one decode slot is taken, as by a write being decoded: admitted writes must queue behind it.
    let slot = st.write_workers.slots().clone().acquire_owned().await.expect("slot");
    let writes: Vec<_> = (0..3u32)
        .map(|h| {
            let st = st.clone();
            tokio::spawn(async move { call(&st, Method::POST, "/api/write", line(h)).await })
        })
        .collect();
    until(&st, "silt_http_writes_waiting", 3).await;
    assert_eq!(metric(&st, "silt_http_writes_decoding"), 0);
    assert!((0..3).all(|h| !stored(&st, h)), "a write was stored without a decode slot");

    // A read is answered while they wait.
    let q = format!(
        r#"{{"cluster":"emmy","from":{T},"to":{},"queries":[{{"metric":"load","host":"n9"}},{{"metric":"load","host":"n1"}}]}}"#,
        T + 10
    );
    let (s, _, b) = call(&st, Method::GET, "/api/query", q).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.contains("9.000") && !b.contains("1.000"), "{b}");

    // The queued writes hold the whole admission budget: one more cannot even queue.
    let (s, retry, b) = call(&st, Method::POST, "/api/write", line(3)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(retry.as_deref(), Some("5"));
    assert!(b.contains("admission budget"), "{b}");

    // The slot is free: the queued writes are decoded (one at a time) and stored.
    drop(slot);
    for w in writes {
        let (s, _, b) = w.await.expect("write task");
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    assert!((0..3).all(|h| stored(&st, h)));
    assert_eq!(st.db.engine().stats().samples_stored.load(std::sync::atomic::Ordering::Relaxed), 4);
    assert_eq!(metric(&st, "silt_http_writes_waiting"), 0);
    assert_eq!(metric(&st, "silt_http_writes_decoding"), 0);
    // Every slot and every KiB of the budget is back.
    assert_eq!((st.write_workers.slots().available_permits(), st.writes.available_permits()), (1, 3));
    assert_eq!(call(&st, Method::POST, "/api/write", line(3)).await.0, StatusCode::OK);
    assert!(stored(&st, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_given_up_while_it_waits_for_a_slot_is_not_stored_and_gives_back_its_budget() {
    let mut st = state(1);
    st.request_timeout = Duration::from_millis(300);
    let budget = st.writes.available_permits();
    let slot = st.write_workers.slots().clone().acquire_owned().await.expect("slot");
    // It waits for the slot until the request's time limit answers it 503.
    let (s, retry, b) = call(&st, Method::POST, "/api/write", line(7)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(retry.as_deref(), Some("5"));
    assert!(b.contains("took longer"), "{b}");
    assert_eq!(metric(&st, "silt_http_writes_waiting"), 0);
    assert_eq!(st.writes.available_permits(), budget);
    drop(slot);
    // A later write goes through; the one given up was never decoded, so never stored.
    assert_eq!(call(&st, Method::POST, "/api/write", line(8)).await.0, StatusCode::OK);
    assert!(stored(&st, 8));
    assert!(!stored(&st, 7));
    assert_eq!(st.write_workers.slots().available_permits(), 1);
}

#[test]
fn write_workers_come_from_main_write_workers() {
    use silt::server::config::{Config, ConfigError};
    let config = |extra: &str| {
        Config::from_json(&format!(
            r#"{{"main":{{"addr":"127.0.0.1:8082"{extra}}},"metrics":{{}},
                "metric-store":{{"retention-in-memory":"48h","memory-cap":0}}}}"#
        ))
    };
    assert_eq!(config("").expect("absent").main.write_workers, None);
    assert_eq!(config(r#","write-workers":0"#).expect("0").main.write_workers, None);
    assert_eq!(config(r#","write-workers":3"#).expect("3").main.write_workers, Some(3));
    for bad in ["-1", "257", "\"2\""] {
        match config(&format!(r#","write-workers":{bad}"#)) {
            Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "main.write-workers", "{bad}"),
            other => panic!("{bad}: expected Invalid at main.write-workers, got {other:?}"),
        }
    }
    assert!(silt::server::default_write_workers() >= 1);
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_decoded_on_threads_of_lower_priority() {
    let st = state(1);
    assert_eq!(call(&st, Method::POST, "/api/write", line(5)).await.0, StatusCode::OK);
    // The nice value (field 19 of /proc/<pid>/task/<tid>/stat) of every decode thread that has started.
    let nice: Vec<i64> = std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("silt-decode-")))
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            stat.rsplit(')').next()?.split_whitespace().nth(16)?.parse().ok()
        })
        .collect();
    // The write above was decoded on one, after its start lowered its priority.
    assert!(nice.contains(&silt::server::DECODE_NICE.into()), "decode threads' nice values: {nice:?}");
}
