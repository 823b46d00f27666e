//! `/api/jobs/{job}/metrics` and the job and service families of `/metrics`, through the router: a running
//! pipeline's metrics in Arroyo's shape (every operator, metric and subtask, sorted), partial data rather
//! than an error when a subtask is missing, 400/404/503 as JSON, and `/metrics` that never fails for lack
//! of a job or service.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use silt::jobs::collector::Collector;
use silt::jobs::{store, JobMetric};
use silt::server::{app, AppState};
use silt::stream::controller::StreamEngine;
use silt::{Aggregation, Batch, Db, HostKey, MetricConfig, Options};
use tower::ServiceExt;

fn open(dir: &std::path::Path) -> Arc<Db> {
    let db = Db::open(dir, Options { checkpoint_interval: None, ..Options::default() }).expect("open");
    db.declare_metric("load", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).expect("declare");
    Arc::new(db)
}

fn state(db: &Arc<Db>) -> AppState {
    let engine = Arc::new(StreamEngine::new(2, db.clone()).expect("engine"));
    let base = AppState::new(db.clone());
    let mut sources = base.metrics.services();
    sources.push(Arc::new(silt::jobs::service::EngineServices(db.clone())));
    let collector = Collector::new(db.clone(), Some(engine.clone()), sources).expect("collector");
    AppState { streams: Some(engine), jobs: Some(Arc::new(collector)), ..base }
}

async fn call_text(st: &AppState, method: Method, uri: &str, body: impl Into<String>) -> (StatusCode, String) {
    let req = Request::builder().method(method).uri(uri).body(Body::from(body.into())).expect("request");
    let resp = app(st.clone()).oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn call(st: &AppState, method: Method, uri: &str, body: impl Into<String>) -> (StatusCode, serde_json::Value) {
    let (s, text) = call_text(st, method, uri, body).await;
    (s, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// A live rollup of `load` with parallelism 2.
fn spec(name: &str) -> String {
    format!(
        r#"{{"name": "{name}",
            "source": {{"kind": "ingest", "metric": "load", "selector": ["emmy"]}},
            "group_by": "cluster",
            "window": {{"width": 60, "aggregate": "avg"}},
            "sink": {{"metric": "load_1m"}},
            "parallelism": 2}}"#
    )
}

async fn wait_running(st: &AppState, name: &str) {
    for _ in 0..1000 {
        let (_, info) = call(st, Method::GET, &format!("/api/pipelines/{name}"), "").await;
        if info["state"] == "running" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pipeline {name} never ran");
}

fn write_load(db: &Db, t: i64) {
    let mut b = Batch::new();
    for h in 0..4 {
        b.push(&HostKey::new("emmy", &format!("n{h}")).expect("key"), "load", t, f64::from(h));
    }
    db.write(&b).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_pipeline_has_every_operator_metric_and_subtask() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = open(tmp.path());
    let st = state(&db);
    let (s, body) = call(&st, Method::POST, "/api/pipelines", spec("roll")).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    wait_running(&st, "roll").await;
    let c = st.jobs.clone().expect("collector");
    // Before any tick nothing is stored, but the pipeline runs: every subtask of every operator, no points.
    let (s, body) = call(&st, Method::GET, "/api/jobs/roll/metrics", "").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["operators"].as_array().expect("operators").len(), 4, "{body}");
    for o in body["operators"].as_array().expect("operators") {
        for m in o["metrics"].as_array().expect("metrics") {
            assert_eq!(m["subtasks"].as_array().expect("subtasks").len(), 2, "{m}");
            assert!(m["subtasks"].as_array().expect("subtasks").iter().all(|s| s["points"] == serde_json::json!([])));
        }
    }
    let t0 = now();
    for i in 0..3 {
        write_load(&db, t0 + i * 10);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let c = c.clone();
        tokio::task::spawn_blocking(move || c.tick((t0 - 10 + i * 2) * 1000)).await.expect("tick");
    }
    let (s, body) =
        call(&st, Method::GET, &format!("/api/jobs/roll/metrics?from={}&to={}", t0 - 20, t0 + 20), "").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["job"], "roll");
    let ops = body["operators"].as_array().expect("operators");
    let names: Vec<&str> = ops.iter().map(|o| o["operator"].as_str().expect("name")).collect();
    assert_eq!(names, vec!["key", "sink", "source", "window"], "sorted by name");
    let metric_names: Vec<&str> = {
        let mut v: Vec<&str> = JobMetric::ALL.iter().map(|m| m.name()).collect();
        v.sort();
        v
    };
    for o in ops {
        let ms = o["metrics"].as_array().expect("metrics");
        assert_eq!(ms.iter().map(|m| m["name"].as_str().expect("name")).collect::<Vec<_>>(), metric_names);
        for m in ms {
            let subtasks = m["subtasks"].as_array().expect("subtasks");
            assert_eq!(subtasks.iter().map(|s| s["index"].as_u64().expect("index")).collect::<Vec<_>>(), vec![0, 1]);
            for s in subtasks {
                let times: Vec<i64> =
                    s["points"].as_array().expect("points").iter().map(|p| p["time"].as_i64().expect("time")).collect();
                // Three ticks, 2 s apart: three points each, in order (a rate's first is stored as 0).
                assert_eq!(times, vec![t0 - 10, t0 - 8, t0 - 6], "{} {}", o["operator"], m["name"]);
            }
        }
        assert!(o["backpressure"].as_f64().expect("backpressure") >= 0.0);
    }
    // The rows written reached the source: its rate over the last tick is above zero on some subtask.
    let src = ops.iter().find(|o| o["operator"] == "source").expect("source");
    let sent = src["metrics"].as_array().expect("metrics").iter().find(|m| m["name"] == "messages_sent").expect("sent");
    let total: f64 = sent["subtasks"]
        .as_array()
        .expect("subtasks")
        .iter()
        .map(|s| s["points"][2]["value"].as_f64().expect("value"))
        .sum();
    assert!(total > 0.0, "{sent}");

    // /metrics carries the same subtasks with labels, and the services.
    let (s, text) = call_text(&st, Method::GET, "/metrics", "").await;
    assert_eq!(s, StatusCode::OK);
    for o in ["key", "sink", "source", "window"] {
        for sub in 0..2 {
            let line = format!("silt_job_backpressure{{job=\"roll\",operator=\"{o}\",subtask=\"{sub}\"}}");
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
    }
    assert!(text.contains("silt_job_messages_sent{job=\"roll\",operator=\"source\",subtask=\"1\"}"));
    assert!(text.contains("silt_service_total{service=\"http\",instance=\"server\",counter=\"requests\"}"), "{text}");
    assert!(text.contains("silt_service_total{service=\"ingest\",instance=\"engine\",counter=\"samples_stored\"}"));
    assert!(text.contains("silt_service_rate{service=\"pipeline\",instance=\"roll\",counter=\"rows_in\"}"));
    st.streams.as_ref().expect("engine").shutdown(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_subtask_gives_partial_data_and_bad_requests_are_json_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = open(tmp.path());
    silt::jobs::store::declare(&db).expect("declare");
    // A job that ran before (not running now) and left data for subtask 0 of "map" only.
    let t = 1_700_000_000;
    let mut b = Batch::new();
    store::push_tick(&mut b, "old", t, &[("map".into(), 0, JobMetric::MessagesRecv, 7.0)]);
    db.write(&b).expect("write");
    let st = state(&db);
    let (s, body) = call(&st, Method::GET, &format!("/api/jobs/old/metrics?from={}&to={}", t - 10, t + 10), "").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let sub = &body["operators"][0]["metrics"][0]["subtasks"];
    assert_eq!(sub.as_array().expect("subtasks").len(), 1);
    assert_eq!(sub[0]["points"][0]["value"], 7.0);
    assert_eq!(sub[0]["points"][0]["time"], t);
    // Bad ranges and names are 400s with a JSON body naming the problem; an unknown job is a 404.
    let (s, body) = call(&st, Method::GET, "/api/jobs/old/metrics?from=20&to=10", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().expect("error").contains("after"), "{body}");
    let (s, body) = call(&st, Method::GET, "/api/jobs/old/metrics?from=0&to=99999999", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().expect("error").contains("longer"), "{body}");
    let (s, _) = call(&st, Method::GET, "/api/jobs/old/metrics?from=abc", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Extreme times are a 400 too, never an overflow.
    let uri = format!("/api/jobs/old/metrics?from={}&to={}", i64::MIN, i64::MAX);
    let (s, body) = call(&st, Method::GET, &uri, "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, body) = call(&st, Method::GET, &format!("/api/jobs/old/metrics?to={}", i64::MIN), "").await;
    // An empty range at the earliest time: the job's series, without points.
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["operators"][0]["metrics"][0]["subtasks"][0]["points"], serde_json::json!([]), "{body}");
    let (s, body) = call(&st, Method::GET, "/api/jobs/nothing/metrics", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    // Without a collector: 503, and /metrics still answers.
    let bare = AppState::new(db.clone());
    let (s, body) = call(&bare, Method::GET, "/api/jobs/old/metrics", "").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (s, text) = call_text(&bare, Method::GET, "/metrics", "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.contains("silt_samples_total"));
    // A collector that has seen nothing: /metrics answers, without job series.
    let (s, text) = call_text(&st, Method::GET, "/metrics", "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(!text.contains("silt_job_backpressure{"), "{text}");
}
