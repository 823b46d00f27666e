//! The built `silt serve` binary on a free loopback port, driven over real HTTP: write, query, a graceful
//! stop (SIGTERM → exit 0) and a SIGKILL, each followed by a restart with the data still there.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const T: i64 = 1_700_000_000;

struct Server {
    child: Child,
    addr: SocketAddr,
}

fn start(dir: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_silt"))
        .args(["serve", "--addr", "127.0.0.1:0", "--metric", "load=10:avg", "--data"])
        .arg(dir)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn silt serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("addr=").nth(1) {
                if let Ok(a) = rest.split_whitespace().next().unwrap_or("").parse::<SocketAddr>() {
                    let _ = tx.send(a);
                }
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("server never reported its address");
    Server { child, addr }
}

fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn query(addr: SocketAddr) -> String {
    let body =
        format!(r#"{{"cluster":"emmy","from":{T},"to":{},"queries":[{{"metric":"load","host":"n1"}}]}}"#, T + 30);
    http(addr, "GET", "/api/query", &body).1
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args(["-s", sig, &child.id().to_string()]).status().expect("kill").success();
    assert!(ok, "kill -s {sig} failed");
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_silt"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) =
                line.split("addr=").nth(1).and_then(|r| r.split_whitespace().next()?.parse::<SocketAddr>().ok())
            {
                let _ = tx.send(a);
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("no address");
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
