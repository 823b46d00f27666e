//! The built `silt serve` binary on a free loopback port, driven over real HTTP: write, query, a graceful
//! stop (SIGTERM → exit 0) and a SIGKILL, each followed by a restart with the data still there.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::{http, http_with, signal, spawn_silt, Server};

const T: i64 = 1_700_000_000;

fn start(dir: &std::path::Path) -> Server {
    let args = ["serve", "--addr", "127.0.0.1:0", "--metric", "load=10:avg", "--data"];
    let mut args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    args.push(dir.as_os_str());
    spawn_silt(&args)
}

fn query(addr: SocketAddr) -> String {
    let body =
        format!(r#"{{"cluster":"emmy","from":{T},"to":{},"queries":[{{"metric":"load","host":"n1"}}]}}"#, T + 30);
    http(addr, "GET", "/api/query", &body).1
}

#[test]
fn serve_write_query_and_survive_restarts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let mut srv = start(&dir);
    let lines =
        format!("load,cluster=emmy,hostname=n1 value=1 {T}\nload,cluster=emmy,hostname=n1 value=2 {}\n", T + 10);
    let (s, b) = http(srv.addr, "POST", "/api/write", &lines);
    assert_eq!(s, 200, "{b}");
    assert!(query(srv.addr).contains("[1.000,2.000]"));
    let (s, b) = http(srv.addr, "POST", "/api/write", "garbage line\n");
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("\"status\":\"Bad Request\""), "{b}");

    // Graceful stop: SIGTERM, exit 0, data there after a restart.
    signal(&srv.child, "TERM");
    let status = srv.child.wait().expect("wait");
    assert!(status.success(), "silt serve exited with {status} on SIGTERM");
    srv = start(&dir);
    assert!(query(srv.addr).contains("[1.000,2.000]"), "data lost over a graceful restart");

    // SIGKILL after an acknowledged write: the write is there after a restart (fsync before the ack).
    let (s, _) = http(srv.addr, "POST", "/api/write", &format!("load,cluster=emmy,hostname=n1 value=3 {}\n", T + 20));
    assert_eq!(s, 200);
    signal(&srv.child, "KILL");
    let _ = srv.child.wait();
    srv = start(&dir);
    assert!(query(srv.addr).contains("[1.000,2.000,3.000]"), "acknowledged write lost over SIGKILL");
    signal(&srv.child, "TERM");
    assert!(srv.child.wait().expect("wait").success());
}

const CONFIG: &str = r#"{
  "main": { "addr": "127.0.0.1:0" },
  "metrics": { "cpu_load": { "frequency": 60, "aggregation": null }, "flops_any": { "frequency": 60, "aggregation": "sum" } },
  "metric-store": { "retention-in-memory": "48h", "memory-cap": 0, "checkpoints": { "directory": "DATA" } }
}"#;

#[test]
fn serve_reads_cc_metric_store_config_json() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("ccms-data");
    let cfg = tmp.path().join("config.json");
    std::fs::write(&cfg, CONFIG.replace("DATA", &data.display().to_string())).expect("write config");
    let Server { mut child, addr } = spawn_silt(&["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    let (s, b) = http(addr, "POST", "/api/write", &format!("flops_any,cluster=c,hostname=h value=4 {T}\n"));
    assert_eq!(s, 200, "{b}");
    let body =
        format!(r#"{{"cluster":"c","from":{T},"to":{},"queries":[{{"metric":"flops_any","host":"h"}}]}}"#, T + 60);
    assert!(http(addr, "GET", "/api/query", &body).1.contains("[4.000]"));
    signal(&child, "TERM");
    assert!(child.wait().expect("wait").success());
    assert!(data.join("MANIFEST").exists(), "the data went somewhere other than the config's directory");
}

#[test]
fn serve_refuses_what_it_cannot_honour() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("config.json");
    let with_key =
        CONFIG.replace(r#""addr": "127.0.0.1:0""#, r#""addr": "127.0.0.1:0", "jwt-public-key": "not base64!""#);
    std::fs::write(&cfg, with_key.replace("DATA", &tmp.path().join("d").display().to_string())).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_silt")).args(["serve", "--config"]).arg(&cfg).output().expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("jwt-public-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A directory with someone else's files.
    let foreign = tmp.path().join("var-checkpoints");
    std::fs::create_dir_all(foreign.join("emmy")).expect("mkdir");
    let out = Command::new(env!("CARGO_BIN_EXE_silt"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(&foreign)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a silt data directory"));
    // --durability takes sync, none and an interval, and refuses anything else with the accepted forms.
    for ok in ["sync", "none", "100ms"] {
        let out = Command::new(env!("CARGO_BIN_EXE_silt"))
            .args(["serve", "--addr", "127.0.0.1:0", "--durability", ok, "--data"])
            .arg(&foreign)
            .output()
            .expect("run");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a silt data directory"), "{ok}");
    }
    for bad in ["0ms", "always", "100"] {
        let out = Command::new(env!("CARGO_BIN_EXE_silt"))
            .args(["serve", "--addr", "127.0.0.1:0", "--durability", bad, "--data"])
            .arg(&foreign)
            .output()
            .expect("run");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("expected sync, none"), "{bad}");
    }
    // --metric takes every aggregation name (the same directory: the parse passed, the data directory did
    // not) and refuses others, listing the names.
    let out = Command::new(env!("CARGO_BIN_EXE_silt"))
        .args(["serve", "--addr", "127.0.0.1:0", "--metric", "bp=10:max", "--metric", "idle=10:min", "--data"])
        .arg(&foreign)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a silt data directory"));
    let out = Command::new(env!("CARGO_BIN_EXE_silt"))
        .args(["serve", "--addr", "127.0.0.1:0", "--metric", "bp=10:maximum", "--data"])
        .arg(&foreign)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"maximum\"") && !stderr.contains("not a silt data directory"), "{stderr}");
    for name in ["none", "sum", "avg", "max", "min"] {
        assert!(stderr.contains(&format!("\"{name}\"")), "{stderr} lacks {name}");
    }
    // An unknown key in the config names it.
    std::fs::write(&cfg, CONFIG.replace(r#""memory-cap": 0"#, r#""memory-cap": 0, "memroy": 1"#)).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_silt")).args(["serve", "--config"]).arg(&cfg).output().expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("metric-store.memroy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every route of cc-metric-store's API, with and without the trailing slash, through the binary; an
/// unknown path is a 404 and a known path with the wrong method a 405, both with JSON bodies.
#[test]
fn every_route_answers_through_the_binary() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = start(tmp.path());
    let addr = server.addr;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    for slash in ["", "/"] {
        let (s, b) = http(
            addr,
            "POST",
            &format!("/api/write{slash}?cluster=emmy"),
            &format!("load,hostname=n1 value=1 {now}\n"),
        );
        assert_eq!(s, 200, "write{slash}: {b}");
        let q = format!(
            r#"{{"cluster":"emmy","from":{},"to":{},"queries":[{{"metric":"load","host":"n1"}}]}}"#,
            now - 10,
            now + 10
        );
        for method in ["GET", "POST"] {
            let (s, b) = http(addr, method, &format!("/api/query{slash}"), &q);
            assert_eq!(s, 200, "{method} query{slash}: {b}");
            assert!(b.contains("1.000"), "{method} query{slash}: {b}");
        }
        let (s, b) = http(addr, "GET", &format!("/api/debug{slash}?selector=emmy"), "");
        assert_eq!(s, 200, "debug{slash}: {b}");
        assert!(b.contains("n1"), "{b}");
        let hc = r#"{"cluster":"emmy","nodes":["n1","n9"],"metric-names":["load"]}"#;
        let (s, b) = http(addr, "GET", &format!("/api/healthcheck{slash}"), hc);
        assert_eq!(s, 200, "healthcheck{slash}: {b}");
        let v: serde_json::Value = serde_json::from_str(&b).expect("json");
        assert_eq!((v["n1"]["State"].as_str(), v["n9"]["State"].as_str()), (Some("full"), Some("failed")), "{b}");
        let (s, b) = http(addr, "POST", &format!("/api/free{slash}?to={}", now - 86_400), r#"[["emmy","n1"]]"#);
        assert_eq!((s, b.as_str()), (200, "buffers freed: 0\n"), "free{slash}");
    }
    let (s, b) = http(addr, "GET", "/api/nothing", "");
    assert_eq!(s, 404, "{b}");
    assert!(serde_json::from_str::<serde_json::Value>(&b).is_ok_and(|v| v["error"].is_string()), "{b}");
    let (s, b) = http(addr, "GET", "/api/write", "");
    assert_eq!(s, 405, "{b}");
    assert!(serde_json::from_str::<serde_json::Value>(&b).is_ok_and(|v| v["error"].is_string()), "{b}");
    let (s, b) = http(addr, "POST", "/api/write?cluster=emmy", "load,hostname=n1 value=\"str\"\n");
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("line 1"), "{b}");
    signal(&server.child, "TERM");
    assert!(server.child.wait().expect("wait").success());
}

/// With `jwt-public-key` in config.json, /api needs an EdDSA token signed by the matching key; /metrics
/// stays open.
#[test]
fn auth_through_the_binary() {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    use ed25519_dalek::{Signer, SigningKey};

    let sk = SigningKey::from_bytes(&[7; 32]);
    let public = STANDARD.encode(sk.verifying_key().to_bytes());
    let token = |sk: &SigningKey| {
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 600;
        let msg = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"test","exp":{exp}}}"#))
        );
        format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sk.sign(msg.as_bytes()).to_bytes()))
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("config.json");
    let text = CONFIG
        .replace(r#""addr": "127.0.0.1:0""#, &format!(r#""addr": "127.0.0.1:0", "jwt-public-key": "{public}""#))
        .replace("DATA", &tmp.path().join("d").display().to_string());
    std::fs::write(&cfg, text).expect("write");
    let mut server = spawn_silt(&["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    let line = format!("flops_any,cluster=c,hostname=h value=4 {T}\n");
    let (s, b) = http(server.addr, "POST", "/api/write", &line);
    assert_eq!(s, 401, "{b}");
    let other = SigningKey::from_bytes(&[8; 32]);
    let bad = format!("Authorization: Bearer {}\r\n", token(&other));
    assert_eq!(http_with(server.addr, "POST", "/api/write", &bad, &line).0, 401);
    let good = format!("Authorization: Bearer {}\r\n", token(&sk));
    let (s, b) = http_with(server.addr, "POST", "/api/write", &good, &line);
    assert_eq!(s, 200, "{b}");
    assert_eq!(http(server.addr, "GET", "/metrics", "").0, 200);
    signal(&server.child, "TERM");
    assert!(server.child.wait().expect("wait").success());
}

const PIPELINE_CONFIG: &str = r#"{
  "main": { "addr": "127.0.0.1:0" },
  "metrics": { "load": { "frequency": 10, "aggregation": "avg" } },
  "metric-store": { "retention-in-memory": "48h", "memory-cap": 0, "checkpoints": { "directory": "DATA" } },
  "pipelines": [ { "name": "from_config", "source": { "kind": "ingest", "metric": "load", "selector": ["emmy"] },
                   "group_by": "cluster", "window": { "width": 60, "aggregate": "max" }, "sink": { "metric": "load_1m_max" } } ]
}"#;

/// Writes [`PIPELINE_CONFIG`] with its data directory in `dir`; returns the config's path.
fn pipeline_config(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, PIPELINE_CONFIG.replace("DATA", &dir.join("data").display().to_string())).expect("config");
    cfg
}

fn pipeline_state(addr: SocketAddr, name: &str) -> serde_json::Value {
    let (s, b) = http(addr, "GET", &format!("/api/pipelines/{name}"), "");
    assert_eq!(s, 200, "{b}");
    serde_json::from_str(&b).expect("json")
}

/// Waits (up to 4 s) for a pipeline to be running; returns its info.
fn wait_running(addr: SocketAddr, name: &str) -> serde_json::Value {
    let mut state = pipeline_state(addr, name);
    for _ in 0..200 {
        if state["state"] == "running" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        state = pipeline_state(addr, name);
    }
    assert_eq!(state["state"], "running", "{state}");
    state
}

/// Pipelines from the config and from the API run over live HTTP writes, and both come back, from their
/// checkpoints, after a graceful restart.
#[test]
fn serve_runs_pipelines_from_the_config_and_the_api_across_restarts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = pipeline_config(tmp.path());
    let args = ["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()];
    let Server { mut child, addr } = spawn_silt(&args);
    let posted = r#"{"name": "from_api", "source": {"kind": "ingest", "metric": "load", "selector": ["emmy"]},
                     "group_by": "host", "window": {"width": 60, "aggregate": "count"}, "sink": {"metric": "load_1m_n"}}"#;
    let (s, b) = http(addr, "POST", "/api/pipelines", posted);
    assert_eq!(s, 201, "{b}");
    let (s, b) = http(addr, "POST", "/api/pipelines", posted);
    assert_eq!(s, 409, "the same name while running: {b}");
    for name in ["from_config", "from_api"] {
        wait_running(addr, name);
    }
    // Two minutes of samples: the first minute's window closes once the watermark passes it.
    let lines: String =
        (0..12).map(|i| format!("load,cluster=emmy,hostname=n1 value={i} {}\n", T - T % 60 + i * 10)).collect();
    let (s, b) = http(addr, "POST", "/api/write", &lines);
    assert_eq!(s, 200, "{b}");
    let window = T - T % 60;
    let body = format!(
        r#"{{"cluster":"emmy","from":{window},"to":{},"queries":[{{"metric":"load_1m_n","host":"n1"}}]}}"#,
        window + 60
    );
    let mut counted = String::new();
    for _ in 0..250 {
        counted = http(addr, "GET", "/api/query", &body).1;
        if counted.contains("[6.000]") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(counted.contains("[6.000]"), "six samples in the first minute: {counted}");

    signal(&child, "TERM");
    assert!(child.wait().expect("wait").success(), "silt serve should stop its pipelines and exit 0");
    let Server { mut child, addr } = spawn_silt(&args);
    let (s, b) = http(addr, "GET", "/api/pipelines", "");
    assert_eq!(s, 200, "{b}");
    let list: serde_json::Value = serde_json::from_str(&b).expect("json");
    let names: Vec<&str> = list.as_array().expect("array").iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["from_api", "from_config"], "{b}");
    // Each resumes from the checkpoint it stopped at (shown once it is scheduled and restored).
    for name in names {
        let p = wait_running(addr, name);
        assert!(p["checkpoint_epoch"].as_u64().unwrap_or(0) > 0, "each stopped at a checkpoint: {p}");
    }
    signal(&child, "TERM");
    assert!(child.wait().expect("wait").success());
}

/// The value of the `/metrics` line that starts with `prefix` (`None` if there is none).
fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Job metrics of a running pipeline are collected every 2 s into the store, served per job and on
/// `/metrics`; after a graceful restart the history from before is still there, and the service counters
/// on `/metrics` continue from where they were instead of starting again at zero.
#[test]
fn job_metrics_and_service_totals_survive_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = pipeline_config(tmp.path());
    let args = ["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()];
    let Server { mut child, addr } = spawn_silt(&args);
    wait_running(addr, "from_config");
    let points = |addr: SocketAddr, from: i64, to: i64| -> Vec<i64> {
        let (s, b) = http(addr, "GET", &format!("/api/jobs/from_config/metrics?from={from}&to={to}"), "");
        assert_eq!(s, 200, "{b}");
        let v: serde_json::Value = serde_json::from_str(&b).expect("json");
        let src = v["operators"].as_array().expect("operators").iter().find(|o| o["operator"] == "source").cloned();
        let Some(src) = src else { return Vec::new() };
        let m = src["metrics"].as_array().expect("metrics").iter().find(|m| m["name"] == "messages_sent").cloned();
        m.map_or(Vec::new(), |m| {
            m["subtasks"][0]["points"]
                .as_array()
                .expect("points")
                .iter()
                .map(|p| p["time"].as_i64().expect("t"))
                .collect()
        })
    };
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let from = now() - 10;
    // Ticks every 2 s: wait for three points.
    assert!(common::eventually(20, || points(addr, from, now() + 2).len() >= 3), "three ticks within 20 s");
    let before = points(addr, from, now() + 2);
    let (s, text) = http(addr, "GET", "/metrics", "");
    assert_eq!(s, 200);
    assert!(text.contains(r#"silt_job_backpressure{job="from_config",operator="source",subtask="0"}"#), "{text}");
    let requests = r#"silt_service_total{service="http",instance="server",counter="requests"}"#;
    // Some requests were counted and kept by a tick.
    assert!(common::eventually(10, || {
        let t = http(addr, "GET", "/metrics", "").1;
        metric_value(&t, requests).is_some_and(|v| v >= 3.0)
    }));
    let counted = metric_value(&http(addr, "GET", "/metrics", "").1, requests).expect("requests counted");
    signal(&child, "TERM");
    assert!(child.wait().expect("wait").success());

    let Server { mut child, addr } = spawn_silt(&args);
    wait_running(addr, "from_config");
    let after = points(addr, from, now() + 2);
    assert!(before.iter().all(|t| after.contains(t)), "history before the restart: {before:?} in {after:?}");
    // The HTTP request total goes on from at least what was shown before the restart.
    assert!(common::eventually(10, || {
        let t = http(addr, "GET", "/metrics", "").1;
        metric_value(&t, requests).is_some_and(|v| v >= counted)
    }));
    signal(&child, "TERM");
    assert!(child.wait().expect("wait").success());
}
