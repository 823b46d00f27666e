//! End-to-end HTTP line-protocol ingest in cc-metric-store's test shape (a bench binary, not criterion).
//!
//! Data shape: 82 hosts × (128 hwthreads × 10 metrics + 5 node metrics) = 105,370 samples per step, 60 s
//! frequency, second timestamps, one POST /api/write per host and step (1,285 lines, ~80 KiB), sent by
//! 4 writer threads over keep-alive loopback connections to the server running in this process
//! (durability: fsync every 100 ms). Prints samples/s, the server's CPU seconds per million samples and
//! the load generator's (thread CPU time of the writers), for the first step (every series new) and the
//! steady state after it. Then the median and p99 latency of three queries over HTTP: one host's
//! node-level `cpu_load` (a sum over its 128 hwthreads), one job (8 hosts x 4 metrics), and `mem_used`
//! for all nodes (`for-all-nodes`).
//!
//! Run: `cargo bench --bench http_ingest` (full: 40 steps, 4.2 M samples). Under `cargo test` it runs
//! 2 steps on 4 hosts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use silt::server::{app, AppState};
use silt::{Aggregation, Db, Durability, MetricConfig, Options};

const T: i64 = 1_700_000_000;
const WRITERS: usize = 4;
const QUERY_RUNS: usize = 200;
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

#[path = "support/http.rs"]
mod http;

use http::{thread_cpu_seconds, Client};

fn cpu_seconds() -> f64 {
    http::process_cpu_seconds("self")
}

/// Sends `bodies` from `writers` threads over keep-alive connections; returns (wall seconds, client CPU
/// seconds).
fn send(addr: SocketAddr, bodies: &Arc<Vec<String>>, writers: usize) -> (f64, f64) {
    let t0 = Instant::now();
    let clients: Vec<_> = (0..writers)
        .map(|c| {
            let bodies = bodies.clone();
            std::thread::spawn(move || {
                let cpu0 = thread_cpu_seconds();
                let mut client = Client::connect(addr);
                for b in bodies.iter().skip(c).step_by(writers) {
                    client.ok("POST", "/api/write?cluster=bench", b.as_bytes());
                }
                thread_cpu_seconds() - cpu0
            })
        })
        .collect();
    let client_cpu = clients.into_iter().map(|c| c.join().expect("client")).sum();
    (t0.elapsed().as_secs_f64(), client_cpu)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (hosts, steps) = if full { (82usize, 40i64) } else { (4, 2) };
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
    let mut bodies: Vec<String> = Vec::new();
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
    let per_step = hosts * (128 * HW_METRICS.len() + NODE_METRICS.len());
    let report = |what: &str, bodies: Vec<String>| {
        let samples = bodies.len() / hosts * per_step;
        let cpu0 = cpu_seconds();
        let (secs, client_cpu) = send(addr, &Arc::new(bodies), WRITERS);
        let server_cpu = cpu_seconds() - cpu0 - client_cpu;
        let m = samples as f64 / 1e6;
        println!(
            "http_ingest {what}: {samples} samples in {secs:.2} s: {:.2} M samples/s; server {:.3} CPU-s per \
             million samples, load generator {:.3} CPU-s per million",
            m / secs,
            server_cpu / m,
            client_cpu / m
        );
    };
    // The first step creates every series (105,370 of them in the full run); later steps are the steady
    // state a collector produces.
    let rest = bodies.split_off(hosts);
    report("first step (new series)", bodies);
    if !rest.is_empty() {
        report(&format!("steady state ({} steps)", steps - 1), rest);
    }

    // Query latency over HTTP, as cc-backend asks: the whole range, one host's node-level metric (a sum
    // over 128 hwthreads), one job (8 hosts x 4 metrics), and a node metric for every node.
    let (from, to) = (T, T + steps * 60);
    let host =
        format!(r#"{{"cluster":"bench","from":{from},"to":{to},"queries":[{{"metric":"cpu_load","host":"n0001"}}]}}"#);
    let mut job = Vec::new();
    for h in 0..hosts.min(8) {
        for m in ["cpu_load", "flops_any", "mem_bw", "mem_used"] {
            job.push(format!(r#"{{"metric":"{m}","host":"n{h:04}"}}"#));
        }
    }
    let job = format!(r#"{{"cluster":"bench","from":{from},"to":{to},"queries":[{}]}}"#, job.join(","));
    let all = format!(r#"{{"cluster":"bench","from":{from},"to":{to},"for-all-nodes":["mem_used"]}}"#);
    let mut client = Client::connect(addr);
    for (what, body) in [("one host", &host), ("one job", &job), ("all nodes", &all)] {
        let mut took: Vec<f64> = (0..QUERY_RUNS)
            .map(|_| {
                let t = Instant::now();
                client.ok("GET", "/api/query", body.as_bytes());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        took.sort_by(f64::total_cmp);
        let p99 = took[(took.len() * 99 / 100).min(took.len() - 1)];
        println!(
            "http_query {what}: median {:.3} ms, p99 {p99:.3} ms ({QUERY_RUNS} runs, {steps} points per series)",
            took[took.len() / 2]
        );
    }
}
