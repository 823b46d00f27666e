//! `/api/pipelines` through the router: a rollup submitted as JSON runs and writes its result, bad specs
//! are 400s naming the field, unknown pipelines 404s, and specs submitted through the API outlive the
//! server (kept in the store, started again from their checkpoint).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use silt::keys::{Namespace, SeriesPath};
use silt::server::{app, AppState};
use silt::stream::controller::StreamEngine;
use silt::{Aggregation, Batch, Db, HostKey, MetricConfig, Options, ReadOptions, Selector};
use tower::ServiceExt;

const T: i64 = 1_700_000_100; // a multiple of 300

fn open(dir: &std::path::Path) -> Arc<Db> {
    let db = Db::open(dir, Options { checkpoint_interval: None, ..Options::default() }).expect("open");
    db.declare_metric("load", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).expect("declare");
    Arc::new(db)
}

fn state(db: &Arc<Db>) -> AppState {
    let engine = StreamEngine::new(2, db.clone()).expect("engine");
    AppState { streams: Some(Arc::new(engine)), ..AppState::new(db.clone()) }
}

async fn call(st: &AppState, method: Method, uri: &str, body: impl Into<String>) -> (StatusCode, serde_json::Value) {
    let req = Request::builder().method(method).uri(uri).body(Body::from(body.into())).expect("request");
    let resp = app(st.clone()).oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

fn spec(name: &str) -> String {
    format!(
        r#"{{"name": "{name}",
            "source": {{"kind": "scan", "metric": "load", "selector": ["emmy"], "from": {T}, "to": {}}},
            "group_by": "cluster",
            "window": {{"width": 300, "aggregate": "avg"}},
            "sink": {{"metric": "load_5m"}},
            "parallelism": 2}}"#,
        T + 1800
    )
}

fn write_load(db: &Db) {
    let mut b = Batch::new();
    for h in 0..4 {
        for i in 0..180 {
            b.push(
                &HostKey::new("emmy", &format!("n{h}")).unwrap(),
                "load",
                T + i * 10,
                f64::from(h * 10) + (i % 30) as f64,
            );
        }
    }
    db.write(&b).expect("write");
}

async fn wait_stopped(st: &AppState, name: &str) -> serde_json::Value {
    for _ in 0..500 {
        let (s, info) = call(st, Method::GET, &format!("/api/pipelines/{name}"), "").await;
        assert_eq!(s, StatusCode::OK, "{info}");
        if info["state"] == "stopped" || info["state"] == "failed" {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pipeline {name} never stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollup_posted_as_json_runs_and_writes_per_cluster_averages() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    write_load(&db);
    let st = state(&db);
    let (s, info) = call(&st, Method::POST, "/api/pipelines", spec("load_rollup")).await;
    assert_eq!(s, StatusCode::CREATED, "{info}");
    assert_eq!(info["name"], "load_rollup");
    let info = wait_stopped(&st, "load_rollup").await;
    assert_eq!(info["state"], "stopped", "{info}");
    assert!(info["checkpoint_epoch"].as_u64().unwrap() > 0, "{info}");

    // Each 5-minute window's average over the 4 hosts' 30 samples.
    let cluster = SeriesPath::new(Namespace::Host, vec!["emmy".into()]).unwrap();
    let r = db.query(&Selector::exact(&cluster), "load_5m", T, T + 1800, ReadOptions::default()).unwrap();
    let want: Vec<f64> = (0..6).map(|_| (0..4).map(|h| f64::from(h * 10)).sum::<f64>() / 4.0 + 14.5).collect();
    assert_eq!(r.values, want);

    let (s, list) = call(&st, Method::GET, "/api/pipelines", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().map(|a| a.len()), Some(1), "{list}");
    assert_eq!(list[0]["description"]["window"]["width"], 300, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_and_unknown_pipelines_are_json_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let st = state(&db);
    let bad = spec("x").replace(r#""width": 300"#, r#""width": 0"#);
    let (s, body) = call(&st, Method::POST, "/api/pipelines", bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("window.width"), "{body}");
    let (s, body) = call(&st, Method::POST, "/api/pipelines", spec("x").replace("\"load\"", "\"nope\"")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
    let (s, body) = call(&st, Method::POST, "/api/pipelines", "{not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, _) = call(&st, Method::GET, "/api/pipelines/ghost", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&st, Method::POST, "/api/pipelines/ghost/stop", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&st, Method::DELETE, "/api/pipelines/ghost", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&st, Method::POST, "/api/pipelines", spec("real")).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, body) = call(&st, Method::POST, "/api/pipelines/real/stop?mode=sideways", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("sideways"), "{body}");
    // Nothing was declared for the refused specs; nothing is listed but the real one.
    let (_, list) = call(&st, Method::GET, "/api/pipelines", "").await;
    assert_eq!(list.as_array().map(|a| a.len()), Some(1), "{list}");
    // Without a stream engine the routes say so.
    let plain = AppState::new(db.clone());
    let (s, body) = call(&plain, Method::GET, "/api/pipelines", "").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_posted_to_the_api_are_kept_and_deleted_ones_forgotten() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    write_load(&db);
    let st = state(&db);
    for name in ["kept", "dropped"] {
        let (s, info) = call(&st, Method::POST, "/api/pipelines", spec(name)).await;
        assert_eq!(s, StatusCode::CREATED, "{info}");
        wait_stopped(&st, name).await;
    }
    let (s, _) = call(&st, Method::DELETE, "/api/pipelines/dropped", "").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&st, Method::GET, "/api/pipelines/dropped", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let saved = silt::server::pipelines::saved_specs(&db).unwrap();
    assert_eq!(saved.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["kept"]);
    assert!(db.state(&silt::stream::controller::checkpoint_name("kept")).unwrap().is_some());
    assert!(db.state(&silt::stream::controller::checkpoint_name("dropped")).unwrap().is_none());
}
