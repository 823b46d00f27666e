//! cc-metric-store's API through the router (`app().oneshot`), with its own cases.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use silt::server::{app, AppState};
use silt::storage::io::sim::SimVfs;
use silt::{Aggregation, Db, MetricConfig, Options};
use tower::ServiceExt;

const T: i64 = 1_700_000_000;

fn state() -> AppState {
    let db = Db::open(
        "/db",
        Options { vfs: Arc::new(SimVfs::new()), checkpoint_interval: None, pages_per_file: 64, ..Options::default() },
    )
    .expect("open");
    db.declare_metric("load", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).expect("declare");
    db.declare_metric("flops", MetricConfig { frequency: 10, aggregation: Aggregation::Sum }).expect("declare");
    db.declare_metric("bp", MetricConfig { frequency: 10, aggregation: Aggregation::Max }).expect("declare");
    AppState::new(Arc::new(db))
}

async fn call(st: &AppState, method: Method, uri: &str, body: impl Into<String>) -> (StatusCode, String) {
    let req = Request::builder().method(method).uri(uri).body(Body::from(body.into())).expect("request");
    let resp = app(st.clone()).oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn query_body(extra: &str) -> String {
    format!(r#"{{"cluster":"emmy","from":{T},"to":{},"queries":[{extra}]}}"#, T + 30)
}

#[tokio::test]
async fn writes_at_t_t10_t20_read_back_with_stats() {
    let st = state();
    let lines = format!(
        "load,cluster=emmy,hostname=n1 value=1 {T}\nload,cluster=emmy,hostname=n1 value=2 {}\nload,cluster=emmy,hostname=n1 value=3 {}\n",
        T + 10,
        T + 20
    );
    let (s, b) = call(&st, Method::POST, "/api/write", lines).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = call(&st, Method::GET, "/api/query", query_body(r#"{"metric":"load","host":"n1"}"#)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.contains(r#""data":[1.000,2.000,3.000]"#), "{b}");
    assert!(b.contains(r#""avg":2.000,"min":1.000,"max":3.000"#), "{b}");
    assert!(b.contains(&format!(r#""from":{T},"to":{},"resolution":10"#, T + 30)), "{b}");
    // The same with a trailing slash and POST.
    let (s2, b2) = call(&st, Method::POST, "/api/query/", query_body(r#"{"metric":"load","host":"n1"}"#)).await;
    assert_eq!((s2, b2), (s, b));
}

#[tokio::test]
async fn scale_by_padding_and_with_data() {
    let st = state();
    let lines = format!("flops,cluster=emmy,hostname=n1 value=2 {}\n", T + 20);
    call(&st, Method::POST, "/api/write/?cluster=emmy", lines).await;
    let (_, b) =
        call(&st, Method::GET, "/api/query", query_body(r#"{"metric":"flops","host":"n1","scale-by":1.5}"#)).await;
    assert!(b.contains(r#""data":[null,null,3.000]"#), "front padding and scale: {b}");
    assert!(b.contains(r#""avg":3.000"#), "{b}");
    let body = format!(
        r#"{{"cluster":"emmy","from":{T},"to":{},"with-data":false,"with-padding":false,"queries":[{{"metric":"flops","host":"n1"}}]}}"#,
        T + 30
    );
    let (_, b) = call(&st, Method::GET, "/api/query", body).await;
    assert!(!b.contains("\"data\""), "{b}");
    assert!(b.contains(&format!(r#""from":{}"#, T + 20)), "{b}");
}

#[tokio::test]
async fn hwthreads_aggregate_or_come_back_one_by_one() {
    let st = state();
    let mut lines = String::new();
    for t in 0..4 {
        lines.push_str(&format!("flops,cluster=emmy,hostname=n1,type=hwthread,type-id={t} value={} {T}\n", t + 1));
    }
    let (s, b) = call(&st, Method::POST, "/api/write", lines).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let q = r#"{"metric":"flops","host":"n1","type":"hwthread","type-ids":["0","1","2","3"],"aggreg":true}"#;
    let (_, b) = call(&st, Method::GET, "/api/query", query_body(q)).await;
    assert!(b.contains(r#""data":[10.000]"#), "{b}");
    let q = r#"{"metric":"flops","host":"n1","type":"hwthread","type-ids":["1","3"]}"#;
    let (_, b) = call(&st, Method::GET, "/api/query", query_body(q)).await;
    assert!(b.contains(r#""data":[2.000]"#) && b.contains(r#""data":[4.000]"#), "{b}");
    // The host level lacks the metric: its hwthreads are summed.
    let (_, b) = call(&st, Method::GET, "/api/query", query_body(r#"{"metric":"flops","host":"n1"}"#)).await;
    assert!(b.contains(r#""data":[10.000]"#), "{b}");
}

#[tokio::test]
async fn a_max_metric_takes_the_largest_hwthread_per_step() {
    let st = state();
    let mut lines = String::new();
    // hwthread t: t + 1 at T, 4 - t at T + 10; at T + 20 only hwthread 2 has a value.
    for t in 0..4 {
        lines.push_str(&format!("bp,cluster=emmy,hostname=n1,type=hwthread,type-id={t} value={} {T}\n", t + 1));
        lines.push_str(&format!("bp,cluster=emmy,hostname=n1,type=hwthread,type-id={t} value={} {}\n", 4 - t, T + 10));
    }
    lines.push_str(&format!("bp,cluster=emmy,hostname=n1,type=hwthread,type-id=2 value=0.5 {}\n", T + 20));
    let (s, b) = call(&st, Method::POST, "/api/write", lines).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, b) = call(&st, Method::GET, "/api/query", query_body(r#"{"metric":"bp","host":"n1"}"#)).await;
    assert!(b.contains(r#""data":[4.000,4.000,0.500]"#), "{b}");
    assert!(b.contains(r#""avg":2.833,"min":0.500,"max":4.000"#), "{b}");
    let q = r#"{"metric":"bp","host":"n1","type":"hwthread","type-ids":["1","3"],"aggreg":true}"#;
    let (_, b) = call(&st, Method::GET, "/api/query", query_body(q)).await;
    assert!(b.contains(r#""data":[4.000,3.000"#), "{b}");
    assert!(b.contains(r#""avg":3.500,"min":3.000,"max":4.000"#), "{b}");
}

#[tokio::test]
async fn unknown_hosts_and_metrics_are_empty_not_errors() {
    let st = state();
    let (s, b) = call(&st, Method::GET, "/api/query", query_body(r#"{"metric":"load","host":"nope"}"#)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b.contains(r#""results":[[]]"#), "{b}");
    let (_, b) = call(&st, Method::GET, "/api/query", query_body(r#"{"metric":"nope","host":"n1"}"#)).await;
    assert!(b.contains(r#""results":[[]]"#), "{b}");
}

#[tokio::test]
async fn a_bad_line_is_a_400_naming_it_and_earlier_lines_stay() {
    let st = state();
    let lines = format!("load,cluster=emmy,hostname=n1 value=1 {T}\nload,cluster=emmy,hostname=n1 value=oops {T}\n");
    let (s, b) = call(&st, Method::POST, "/api/write", lines).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let v: serde_json::Value = serde_json::from_str(&b).expect("json error body");
    assert_eq!(v["status"], "Bad Request");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("line 2")), "{b}");
    let (_, b) = call(&st, Method::GET, "/api/query", query_body(r#"{"metric":"load","host":"n1"}"#)).await;
    assert!(b.contains(r#""data":[1.000"#), "the line before the bad one was not stored: {b}");
}

#[tokio::test]
async fn bad_query_bodies_and_routes() {
    let st = state();
    let (s, b) = call(&st, Method::GET, "/api/query", "{not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b.contains("\"error\""), "{b}");
    let (s, _) = call(&st, Method::GET, "/api/query", format!(r#"{{"cluster":"c","from":{},"to":{T}}}"#, T + 1)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(&st, Method::GET, "/api/nothing", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&st, Method::GET, "/api/write", "").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn free_needs_to_and_reports_buffers_freed() {
    let st = state();
    let mut lines = String::new();
    for i in 0..1024 {
        lines.push_str(&format!("load,cluster=emmy,hostname=n1 value=1 {}\n", T + i * 10));
    }
    call(&st, Method::POST, "/api/write", lines).await;
    let (s, _) = call(&st, Method::POST, "/api/free", r#"[["emmy","n1"]]"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, b) = call(&st, Method::POST, &format!("/api/free?to={}", T + 5200), r#"[["emmy","n1"]]"#).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, "buffers freed: 1\n"));
}

#[tokio::test]
async fn healthcheck_reports_full_partial_and_failed() {
    let st = state();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let lines = format!(
        "load,cluster=emmy,hostname=n1 value=1 {now}\nflops,cluster=emmy,hostname=n1 value=1 {now}\n\
         load,cluster=emmy,hostname=n2 value=1 {now}\nflops,cluster=emmy,hostname=n2 value=1 {}\n",
        now - 3600
    );
    let (s, b) = call(&st, Method::POST, "/api/write", lines).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let body = r#"{"cluster":"emmy","nodes":["n1","n2","n3"],"metric-names":["load","flops"]}"#;
    let (s, b) = call(&st, Method::GET, "/api/healthcheck", body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["n1"]["State"], "full", "{b}");
    assert_eq!(v["n2"]["State"], "partial", "{b}");
    assert!(v["n2"]["HealthMetrics"].as_str().is_some_and(|m| m.contains(r#""degraded":["flops"]"#)), "{b}");
    assert_eq!(v["n3"]["State"], "failed", "{b}");
    let (s, _) = call(&st, Method::GET, "/api/healthcheck/", r#"{"cluster":"emmy","bogus":1}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn debug_dumps_the_tree() {
    let st = state();
    let lines = format!("flops,cluster=emmy,hostname=n1,type=hwthread,type-id=0 value=1 {T}\n");
    call(&st, Method::POST, "/api/write", lines).await;
    let (s, b) = call(&st, Method::GET, "/api/debug?selector=emmy", "").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["emmy"]["children"]["n1"]["children"]["hwthread0"]["metrics"]["flops"]["pages"], 1, "{b}");
    let (s, _) = call(&st, Method::GET, "/api/debug?selector=emmy:..", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_oversized_body_is_a_413() {
    let st = state();
    let big = "x".repeat(silt::server::MAX_BODY_BYTES + 1);
    let (s, b) = call(&st, Method::POST, "/api/write", big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let v: serde_json::Value = serde_json::from_str(&b).expect("a JSON error body");
    assert_eq!(v["status"], "Payload Too Large");
}

#[tokio::test]
async fn an_overlong_line_is_a_413_naming_it_and_earlier_lines_stay() {
    let st = state();
    let long = format!("load,cluster=emmy,hostname=n1,pad={} value=2 {}", "p".repeat(70_000), T + 10);
    let body = format!("load,cluster=emmy,hostname=n1 value=1 {T}\n{long}\n");
    let (s, b) = call(&st, Method::POST, "/api/write", body).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).expect("a JSON error body");
    assert!(v["error"].as_str().expect("error").starts_with("line 2:"), "{b}");
    let (_, b) = call(&st, Method::GET, "/api/query", query_body(r#"{"metric":"load","host":"n1"}"#)).await;
    assert!(b.contains("1.000"), "{b}");
}

#[tokio::test]
async fn metrics_are_exposed_as_zero_before_anything_and_count_after() {
    let st = state();
    let (s, b) = call(&st, Method::GET, "/metrics", "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(b.contains(r#"silt_samples_total{outcome="stored"} 0"#), "{b}");
    assert!(b.contains(r#"silt_samples_total{outcome="unknown_metric"} 0"#), "{b}");
    assert!(b.contains("silt_query_duration_seconds_count 0"), "{b}");
    let value = |b: &str, name: &str| -> f64 {
        b.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).expect(name)
    };
    let (syncs, wal_bytes) = (value(&b, "silt_wal_fsync_duration_seconds_count"), value(&b, "silt_wal_bytes_total"));
    assert!(b.contains("# TYPE silt_checkpoint_age_seconds gauge"), "{b}");
    assert!(b.contains(r#"silt_nats_messages_total{result="error"} 0"#), "{b}");
    let lines = format!("load,cluster=emmy,hostname=n1 value=1 {T}\nnope,cluster=emmy,hostname=n1 value=1 {T}\n");
    call(&st, Method::POST, "/api/write", lines).await;
    call(&st, Method::GET, "/api/query", query_body(r#"{"metric":"load","host":"n1"}"#)).await;
    let (_, b) = call(&st, Method::GET, "/metrics", "").await;
    assert!(b.contains(r#"silt_samples_total{outcome="stored"} 1"#), "{b}");
    assert!(b.contains(r#"silt_samples_total{outcome="unknown_metric"} 1"#), "{b}");
    assert!(b.contains("silt_query_duration_seconds_count 1"), "{b}");
    assert!(b.contains("silt_series 1"), "{b}");
    // The write was logged and fsynced (durability Sync): the histogram and the WAL bytes grew.
    let after = value(&b, "silt_wal_fsync_duration_seconds_count");
    assert!(after > syncs, "{b}");
    assert_eq!(value(&b, r#"silt_wal_fsync_duration_seconds_bucket{le="+Inf"}"#), after, "{b}");
    assert!(value(&b, "silt_wal_bytes_total") > wal_bytes, "{b}");
    st.db.checkpoint().expect("checkpoint");
    let (_, b) = call(&st, Method::GET, "/metrics", "").await;
    let age = value(&b, "silt_checkpoint_age_seconds");
    assert!((0.0..5.0).contains(&age), "{age}");
}

#[tokio::test]
async fn a_request_over_the_time_limit_is_a_503() {
    let normal = state();
    let (s, _) =
        call(&normal, Method::POST, "/api/write", format!("load,cluster=emmy,hostname=n1 value=1 {T}\n")).await;
    assert_eq!(s, StatusCode::OK);
    let st = silt::server::AppState { request_timeout: std::time::Duration::from_millis(1), ..normal.clone() };
    // Ten million steps of NaN padding: far longer than a millisecond.
    let slow = format!(
        r#"{{"cluster":"emmy","from":{},"to":{},"queries":[{{"metric":"load","host":"n1"}}]}}"#,
        T - 100_000_000,
        T + 30
    );
    let (s, b) = call(&st, Method::GET, "/api/query", slow).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(b.contains(r#""status":"Service Unavailable""#), "{b}");
    assert_eq!(normal.request_timeout, silt::server::REQUEST_TIMEOUT);
    // The same query within the default limit answers.
    let (s, b) = call(&normal, Method::GET, "/api/query", query_body(r#"{"metric":"load","host":"n1"}"#)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn for_all_nodes_queries_every_node_of_the_cluster_in_name_order() {
    let st = state();
    let lines = format!(
        "load,cluster=emmy,hostname=n2 value=2 {T}\nload,cluster=emmy,hostname=n1 value=1 {T}\n\
         load,cluster=other,hostname=x9 value=9 {T}\n"
    );
    assert_eq!(call(&st, Method::POST, "/api/write", lines).await.0, StatusCode::OK);
    let body = format!(r#"{{"cluster":"emmy","from":{T},"to":{},"for-all-nodes":["load"]}}"#, T + 10);
    let (s, b) = call(&st, Method::GET, "/api/query", body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).expect("json");
    let hosts: Vec<&str> =
        v["queries"].as_array().expect("queries").iter().map(|q| q["host"].as_str().unwrap()).collect();
    assert_eq!(hosts, ["n1", "n2"], "{b}");
    assert_eq!(v["results"][0][0]["data"], serde_json::json!([1.0]), "{b}");
    assert_eq!(v["results"][1][0]["data"], serde_json::json!([2.0]), "{b}");
}

/// silt's extension: a query without `host` is over the whole cluster, every host aggregated by the
/// metric's aggregation (cc-metric-store requires a host).
#[tokio::test]
async fn a_query_without_host_aggregates_the_cluster() {
    let st = state();
    let lines = format!(
        "load,cluster=emmy,hostname=n1 value=1 {T}\nload,cluster=emmy,hostname=n2 value=3 {T}\n\
         flops,cluster=emmy,hostname=n1 value=1 {T}\nflops,cluster=emmy,hostname=n2 value=3 {T}\n\
         load,cluster=other,hostname=n9 value=100 {T}\n"
    );
    let (s, b) = call(&st, Method::POST, "/api/write", lines).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = call(&st, Method::GET, "/api/query", query_body(r#"{"metric":"load"},{"metric":"flops"}"#)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["results"][0][0]["data"][0], 2.0, "avg over emmy's two hosts: {b}");
    assert_eq!(v["results"][1][0]["data"][0], 4.0, "sum over emmy's two hosts: {b}");
    // A type without a host is refused with a message that says why.
    let (s, b) =
        call(&st, Method::GET, "/api/query", query_body(r#"{"metric":"load","type":"hwthread","type-ids":["0"]}"#))
            .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.contains("needs a host"), "{b}");
}

/// A sample the store refuses as too old (its range was freed) is never acknowledged with a 200: the answer
/// is a 400 that counts it, and the body's other samples are stored (cc-metric-store answers 400 for a write
/// "from past").
#[tokio::test]
async fn samples_refused_as_too_old_are_a_400_that_counts_them() {
    let st = state();
    let mut lines = String::new();
    for i in 0..1024 {
        lines.push_str(&format!("load,cluster=emmy,hostname=n1 value=1 {}\n", T + i * 10));
    }
    assert_eq!(call(&st, Method::POST, "/api/write", lines).await.0, StatusCode::OK);
    let (s, _) = call(&st, Method::POST, &format!("/api/free?to={}", T + 5200), r#"[["emmy","n1"]]"#).await;
    assert_eq!(s, StatusCode::OK);
    // One sample into the freed first page, one after everything.
    let lines = format!(
        "load,cluster=emmy,hostname=n1 value=7 {}\nload,cluster=emmy,hostname=n1 value=9 {}\n",
        T + 10,
        T + 10240
    );
    let (s, b) = call(&st, Method::POST, "/api/write", lines).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).expect("json");
    assert!(v["error"].as_str().expect("error").starts_with("1 of 2 samples were not stored"), "{b}");
    let q = format!(
        r#"{{"cluster":"emmy","from":{},"to":{},"queries":[{{"metric":"load","host":"n1"}}]}}"#,
        T + 10240,
        T + 10250
    );
    let (s, b) = call(&st, Method::GET, "/api/query", q).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.contains(r#""data":[9.000]"#), "the other sample was stored: {b}");
}

fn ids(n: usize) -> String {
    (0..n).map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(",")
}

/// The whole i64 range at resolution 1 asks for about 1.8e18 values at the metric's 10 s: refused with a 400
/// before any read (it used to be planned and then answered 200 with a per-entry error).
#[tokio::test]
async fn a_query_over_the_whole_time_range_is_a_400() {
    let st = state();
    call(&st, Method::POST, "/api/write", format!("load,cluster=emmy,hostname=n1 value=1 {T}\n")).await;
    let body = format!(
        r#"{{"cluster":"emmy","from":{},"to":{},"queries":[{{"metric":"load","host":"n1","resolution":1}}]}}"#,
        i64::MIN,
        i64::MAX
    );
    let (s, b) = call(&st, Method::POST, "/api/query", body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.contains("query too large") && b.contains("50000000 values"), "{b}");
    // An unknown metric reads nothing, so the same range is no error: the entry is skipped.
    let body = format!(
        r#"{{"cluster":"emmy","from":{},"to":{},"queries":[{{"metric":"nope","host":"n1"}}]}}"#,
        i64::MIN,
        i64::MAX
    );
    let (s, b) = call(&st, Method::POST, "/api/query", body).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, r#"{"results":[[]]}"#));
}

/// Two id lists of 1001 entries (12 kB of body) would expand to 1,002,001 series reads: a 400 before any is
/// built. Under the limit the same shape is answered.
#[tokio::test]
async fn a_product_of_type_and_subtype_ids_over_the_limit_is_a_400() {
    let st = state();
    let query = |n: usize| {
        query_body(&format!(
            r#"{{"metric":"load","host":"n1","type":"socket","type-ids":[{}],"subtype":"core","subtype-ids":[{}]}}"#,
            ids(n),
            ids(n)
        ))
    };
    let (s, b) = call(&st, Method::POST, "/api/query", query(1001)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.contains("more than 1000000 series reads"), "{b}");
    let (s, b) = call(&st, Method::POST, "/api/query", query(3)).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, r#"{"results":[[]]}"#));
}

/// The values limit is over the whole request: two entries that fit alone do not fit together.
#[tokio::test]
async fn the_values_limit_sums_over_the_entries_of_a_request() {
    let limits = silt::server::RequestLimits { query_values: 5, ..silt::server::RequestLimits::DEFAULT };
    let st = AppState { limits, ..state() };
    call(&st, Method::POST, "/api/write", format!("load,cluster=emmy,hostname=n1 value=1 {T}\n")).await;
    // T..T+30 at 10 s is 3 values per entry.
    let one = r#"{"metric":"load","host":"n1"}"#;
    let (s, b) = call(&st, Method::POST, "/api/query", query_body(one)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.contains(r#""data":[1.000]"#), "{b}");
    let (s, b) = call(&st, Method::POST, "/api/query", query_body(&format!("{one},{one}"))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.contains("more than 5 values") && b.contains("6 asked for"), "{b}");
    // for-all-nodes counts as well: one node, two metrics, of 3 values each.
    let body = format!(r#"{{"cluster":"emmy","from":{T},"to":{},"for-all-nodes":["load","flops"]}}"#, T + 30);
    let (s, b) = call(&st, Method::POST, "/api/query", body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
}

/// 1001 nodes × 1000 metric names asked for a list per pair: a 400 now.
#[tokio::test]
async fn a_health_check_over_the_limit_is_a_400() {
    let st = state();
    let body = |nodes: usize, metrics: usize| {
        format!(r#"{{"cluster":"emmy","nodes":[{}],"metric-names":[{}]}}"#, ids(nodes), ids(metrics))
    };
    let (s, b) = call(&st, Method::GET, "/api/healthcheck", body(1001, 1000)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.contains("1001 nodes × 1000 metrics") && b.contains("1000000 checks"), "{b}");
    let (s, b) = call(&st, Method::GET, "/api/healthcheck", body(2, 3)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.contains(r#""0":{"#) && b.contains(r#""1":{"#), "{b}");
}

/// A bad selector anywhere in a free body is a 400 before anything is freed (the selectors before it used to
/// be freed first).
#[tokio::test]
async fn free_checks_every_selector_before_freeing() {
    let st = state();
    let mut lines = String::new();
    for i in 0..1024 {
        lines.push_str(&format!("load,cluster=emmy,hostname=n1 value=1 {}\n", T + i * 10));
    }
    call(&st, Method::POST, "/api/write", lines).await;
    let uri = format!("/api/free?to={}", T + 5200);
    let (s, b) = call(&st, Method::POST, &uri, r#"[["emmy","n1"],["emmy","a/b"]]"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.contains("a/b"), "{b}");
    let (s, b) = call(&st, Method::POST, &uri, r#"[["emmy","n1"]]"#).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, "buffers freed: 1\n"), "the first selector was freed already");
}

#[tokio::test]
async fn writes_past_the_admission_budget_are_503_with_retry_after_and_reads_go_on() {
    let st = state();
    let send = |body: String, length: Option<usize>| {
        let st = st.clone();
        async move {
            let mut req = Request::builder().method(Method::POST).uri("/api/write");
            if let Some(n) = length {
                req = req.header("content-length", n);
            }
            let resp = app(st).oneshot(req.body(Body::from(body)).expect("request")).await.expect("response");
            let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap_or("").to_owned());
            let status = resp.status();
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            (status, retry, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let lines = |n: i64| -> String {
        (0..n).map(|i| format!("load,cluster=emmy,hostname=n1 value={i} {}\n", T + 10 * i)).collect()
    };
    // Writes in flight hold all of the budget but 1 KiB.
    let held = st.writes.clone().try_acquire_many_owned(st.writes.available_permits() as u32 - 1).expect("hold");
    let big = lines(60);
    assert!(big.len() > 1024);
    let (s, retry, b) = send(big.clone(), Some(big.len())).await;
    assert_eq!((s, retry.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("5")), "{b}");
    assert!(b.contains("overloaded") && b.contains("retry later"), "{b}");
    // Without a length a write is counted at the largest body: refused too.
    let small = lines(3);
    assert_eq!(send(small.clone(), None).await.0, StatusCode::SERVICE_UNAVAILABLE);
    // A write that fits what is left goes through, and reads are not held back.
    assert_eq!(send(small.clone(), Some(small.len())).await.0, StatusCode::OK);
    let (s, b) = call(&st, Method::GET, "/api/query", query_body(r#"{"metric":"load","host":"n1"}"#)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Once the writes in flight are answered, the big one is admitted; the budget is whole again after it.
    let before = st.writes.available_permits() + held.num_permits();
    drop(held);
    assert_eq!(send(big.clone(), Some(big.len())).await.0, StatusCode::OK);
    assert_eq!(st.writes.available_permits(), before);
}

#[tokio::test]
async fn writes_wait_while_the_head_is_far_over_its_memory_cap() {
    // A cap of 8 pages of 4 KiB, and no background pass: the test enforces the cap itself.
    let db = Db::open(
        "/db",
        Options {
            vfs: Arc::new(SimVfs::new()),
            checkpoint_interval: None,
            pages_per_file: 64,
            memory_cap_bytes: 8 * 4096,
            maintenance_interval: std::time::Duration::from_secs(3600),
            ..Options::default()
        },
    )
    .expect("open");
    db.declare_metric("load", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).expect("declare");
    let st = AppState::new(Arc::new(db));
    let lines = |hosts: std::ops::Range<u32>| -> String {
        hosts.map(|h| format!("load,cluster=emmy,hostname=n{h} value=1 {T}\n")).collect()
    };
    // 13 series, a page each: 13 pages > 8.
    assert_eq!(call(&st, Method::POST, "/api/write", lines(0..13)).await.0, StatusCode::OK);
    assert!(st.db.over_memory_cap());
    let (s, b) = call(&st, Method::POST, "/api/write", lines(13..14)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(b.contains("over its memory cap of 0 MiB") && b.contains("retry later"), "{b}");
    // Reads go on.
    let (s, b) = call(&st, Method::GET, "/api/query", query_body(r#"{"metric":"load","host":"n3"}"#)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Once the cap is enforced (compacted into blocks), writes are admitted again.
    st.db.enforce_memory_cap().expect("enforce");
    assert!(!st.db.over_memory_cap());
    assert_eq!(call(&st, Method::POST, "/api/write", lines(13..14)).await.0, StatusCode::OK);
}
