//! End-to-end HTTP line-protocol ingest in cc-metric-store's test shape (a bench binary, not criterion).
//!
//! Data shape: 82 hosts × (128 hwthreads × 10 metrics + 5 node metrics) = 105,370 samples per step, 60 s
//! frequency, second timestamps, one POST /api/write per host and step (1,285 lines, ~80 KiB), sent by
//! 2 client threads over loopback to the server running in this process (durability: fsync every 100 ms).
//! Prints samples/s and the process CPU seconds per million samples (server and client together).
//!
//! Run: `cargo bench --bench http_ingest` (full: 20 steps, 2.1 M samples). Under `cargo test` it runs
//! 1 step on 4 hosts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use silt::server::{app, AppState};
use silt::{Aggregation, Db, Durability, MetricConfig, Options};

const T: i64 = 1_700_000_000;
const HW_METRICS: [&str; 10] = [
    "cpu_load",
    "cpu_user",
    "flops_any",
    "flops_dp",
    "flops_sp",
    "ipc",
    "clock",
    "cpu_power",
    "mem_bw",
    "vectorization_ratio",
];
const NODE_METRICS: [&str; 5] = ["mem_used", "net_bytes_in", "net_bytes_out", "ib_recv", "ib_xmit"];

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn post(addr: SocketAddr, body: &str) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let req = format!(
        "POST /api/write?cluster=bench HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send head");
    s.write_all(body.as_bytes()).expect("send body");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read");
    assert!(resp.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&resp[..resp.len().min(200)]));
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (hosts, steps) = if full { (82usize, 20i64) } else { (4, 1) };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(
        dir.path(),
        Options { durability: Durability::IntervalMs(100), checkpoint_interval: None, ..Options::default() },
    )
    .expect("open");
    for m in HW_METRICS.iter().chain(&NODE_METRICS) {
        db.declare_metric(m, MetricConfig { frequency: 60, aggregation: Aggregation::Sum }).expect("declare");
    }
    let state = AppState::new(Arc::new(db));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move { axum::serve(listener, app(state)).await });

    // Payloads: one body per host and step.
    let mut bodies = Vec::new();
    for step in 0..steps {
        let ts = T + step * 60;
        for h in 0..hosts {
            let mut b = String::with_capacity(100 * 1300);
            for t in 0..128 {
                for (i, m) in HW_METRICS.iter().enumerate() {
                    let v = ((h * 131 + t * 7 + i) % 1000) as f64 / 1000.0 + step as f64;
                    b.push_str(&format!("{m},hostname=n{h:04},type=hwthread,type-id={t} value={v:.3} {ts}\n"));
                }
            }
            for (i, m) in NODE_METRICS.iter().enumerate() {
                b.push_str(&format!("{m},hostname=n{h:04} value={} {ts}\n", (h * 17 + i) as f64 * 1.5));
            }
            bodies.push(b);
        }
    }
    let samples = steps as usize * hosts * (128 * HW_METRICS.len() + NODE_METRICS.len());
    let bodies = Arc::new(bodies);
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let bodies = bodies.clone();
            std::thread::spawn(move || {
                for b in bodies.iter().skip(c).step_by(2) {
                    post(addr, b);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "http_ingest: {samples} samples ({hosts} hosts x {steps} steps) in {secs:.2} s: {:.2} M samples/s, \
         {:.2} CPU-s per million samples (server + client)",
        samples as f64 / secs / 1e6,
        cpu / (samples as f64 / 1e6)
    );
}
