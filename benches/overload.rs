//! Sustained overload over HTTP (issue #10): many writers send large line-protocol bodies back to back,
//! more than the server can commit, while one reader queries. A bench binary, not criterion.
//!
//! The server runs in this process (`silt::server::app` on a loopback port, 2 runtime workers, fsync on
//! every write, 64-value head pages, a head memory cap of `OVERLOAD_MEMORY_CAP_MIB` (default 256 MiB; pages
//! past it are compacted into blocks, oldest first) with a write admission budget of `OVERLOAD_BUDGET_MIB`
//! (default 32 MiB, so that the writers' bodies in flight, 64 × 1 MiB, exceed it). For `OVERLOAD_SECS` (default 20 s) 64 writer threads
//! each send 1 MiB bodies (~12,000 lines of new timestamps) on their own keep-alive connection; a 503 is
//! counted and the writer waits its `Retry-After` scaled down to 100 ms (a collector would wait the whole
//! 5 s). Each write has its own connection: a refused write's connection may be closed under its sender,
//! which counts as a refusal too. Printed: samples acknowledged per second, writes accepted and refused, the process's peak resident
//! memory, and the reader's median and p99 query latency with the writers idle and under the overload,
//! with their ratio, and whether it is within the stated bound (median 3x, p99 12x). The server decodes
//! `OVERLOAD_WRITE_WORKERS` write bodies at once (default: `silt::server::default_write_workers`, the
//! cores less one); the others wait for a slot without using CPU.
//!
//! The writers patch the timestamps of a body built once (see `Bodies`) instead of formatting every body,
//! so that the load generator takes less of the cores it shares with the server; the bodies are the same
//! bytes. Its CPU time is printed.
//!
//! Run: `cargo bench --bench overload`. Under `cargo test --benches` it runs for 1 s with 4 writers.

#[path = "support/http.rs"]
mod http;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{peak_rss_bytes, status_bytes, Client};
use silt::server::{app, AppState};
use silt::{Aggregation, Db, Durability, MetricConfig, Options};

const T: i64 = 1_700_000_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A body of `lines` samples of writer `w`, batch `k`: 100 hosts × `lines / 100` steps, new timestamps.
fn body(w: usize, k: i64, lines: usize) -> Vec<u8> {
    let mut b = String::with_capacity(lines * 90);
    let steps = (lines / 100) as i64;
    for s in 0..steps {
        let ts = T + (k * steps + s) * 10;
        for h in 0..100 {
            b.push_str(&format!("load,cluster=c,hostname=w{w}h{h:03},type=node value={}.5 {ts}\n", (s + h) % 97));
        }
    }
    b.into_bytes()
}

/// Writer `w`'s bodies, built once: [`body`]'s text with every timestamp rewritten in place per batch, so
/// that the load generator, which shares the cores with the server, spends ~0.1 ms per body rather than
/// the ~3 ms of formatting 12,000 lines (the bytes sent are the same as [`body`]'s).
struct Bodies {
    text: Vec<u8>,
    /// Offset of each line's 10-digit timestamp, and the line's step.
    stamps: Vec<(usize, i64)>,
    steps: i64,
}

impl Bodies {
    fn new(w: usize, lines: usize) -> Bodies {
        let text = body(w, 0, lines);
        let steps = (lines / 100) as i64;
        let mut stamps = Vec::with_capacity(lines);
        let mut start = 0;
        for (s, line) in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
            let at = start + line.len() - 10;
            assert_eq!(&line[line.len() - 10..], (T + (s as i64 / 100) * 10).to_string().as_bytes());
            stamps.push((at, s as i64 / 100));
            start += line.len() + 1;
        }
        Bodies { text, stamps, steps }
    }

    /// [`body`]`(w, k, lines)`.
    fn batch(&mut self, k: i64) -> &[u8] {
        for &(at, s) in &self.stamps {
            let ts = T + (k * self.steps + s) * 10;
            assert!((1_000_000_000..10_000_000_000).contains(&ts), "timestamps stay 10 digits");
            let mut v = ts;
            for i in (0..10).rev() {
                self.text[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        &self.text
    }
}

/// One write on its own connection (`Connection: close`): the status, or `None` when the connection broke
/// (a server that refuses a write before reading its body may close the connection under the sender).
fn post(addr: std::net::SocketAddr, body: &[u8]) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    let head = format!(
        "POST /api/write HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let sent = s.write_all(head.as_bytes()).and_then(|()| s.write_all(body));
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let status = std::str::from_utf8(answer.get(9..12)?).ok()?.parse().ok();
    if sent.is_err() && status.is_none() {
        return None;
    }
    status
}

/// CPU seconds (user + system) of this process's threads so far, summed by thread name.
fn cpu_by_thread_name() -> Vec<(String, f64)> {
    let tick = 100.0; // USER_HZ on Linux
    let mut by: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    for t in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let dir = t.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_owned();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: f64 = [11, 12].iter().filter_map(|&i| f.get(i)?.parse::<f64>().ok()).sum();
        *by.entry(name).or_default() += ticks / tick;
    }
    let mut v: Vec<(String, f64)> = by.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

fn percentile(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() * p).div_ceil(100)).saturating_sub(1).min(v.len() - 1)]
}

/// Runs the reader for `secs`, returning its latencies in ms.
fn read_for(addr: std::net::SocketAddr, secs: f64) -> Vec<f64> {
    let mut c = Client::connect(addr);
    let q =
        format!(r#"{{"cluster":"c","from":{T},"to":{},"queries":[{{"metric":"load","host":"w0h007"}}]}}"#, T + 3600);
    let start = Instant::now();
    let mut took = Vec::new();
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        let (status, _) = c.request("GET", "/api/query", q.as_bytes());
        assert_eq!(status, 200, "query");
        took.push(t.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(20));
    }
    took
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs: f64 = if full { env_or("OVERLOAD_SECS", 20.0) } else { 1.0 };
    let writers = if full { 64 } else { 4 };
    let lines = if full { 12_000 } else { 1_000 };
    let budget_mib: usize = env_or("OVERLOAD_BUDGET_MIB", 32);
    let dir = tempfile::tempdir().expect("tempdir");
    let cap_mib: u64 = env_or("OVERLOAD_MEMORY_CAP_MIB", 256);
    let db = Db::open(
        dir.path(),
        Options {
            durability: Durability::Sync,
            memory_cap_bytes: cap_mib << 20,
            page_slots: 64,
            pages_per_file: 32768,
            ..Options::default()
        },
    )
    .expect("open");
    db.declare_metric("load", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).expect("declare");
    let db = Arc::new(db);
    let db_for_stats = db.clone();
    let mut state = AppState::new(db);
    state.writes = Arc::new(tokio::sync::Semaphore::new(budget_mib << 10));
    let write_workers: usize = env_or("OVERLOAD_WRITE_WORKERS", silt::server::default_write_workers());
    state.write_workers = silt::server::WriteWorkers::new(write_workers);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move { axum::serve(listener, app(state)).await });

    // Some data for the reader, then its latency with the writers idle.
    Client::connect(addr).ok("POST", "/api/write", &body(0, 0, 1_000));
    let mut idle = read_for(addr, secs.min(5.0));

    assert_eq!(Bodies::new(3, lines).batch(5), body(3, 5, lines).as_slice(), "patched bodies are body()'s");
    let stop = Arc::new(AtomicBool::new(false));
    let (accepted, refused, samples) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stale = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (stop, accepted, refused, samples) = (stop.clone(), accepted.clone(), refused.clone(), samples.clone());
            let stale = stale.clone();
            std::thread::spawn(move || {
                let mut k = 1;
                let mut bodies = Bodies::new(w, lines);
                let cpu = http::thread_cpu_seconds();
                while !stop.load(Ordering::Relaxed) {
                    let b = bodies.batch(k);
                    match post(addr, b) {
                        Some(200) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            samples.fetch_add((lines / 100 * 100) as u64, Ordering::Relaxed);
                            k += 1;
                        }
                        Some(503) | None => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        // A writer that fell far behind the others in time (after many 503s): the memory
                        // cap compacts the oldest pages first and seals them, and its next body lands in a
                        // sealed page: 400, samples older than the data kept. Counted; it moves on.
                        Some(400) => {
                            stale.fetch_add(1, Ordering::Relaxed);
                            k += 1;
                        }
                        Some(s) => panic!("write: status {s}"),
                    }
                }
                http::thread_cpu_seconds() - cpu
            })
        })
        .collect();
    let mut loaded = read_for(addr, secs);
    stop.store(true, Ordering::Relaxed);
    let generator_cpu: f64 = handles.into_iter().map(|h| h.join().expect("writer")).sum();
    let elapsed = started.elapsed().as_secs_f64();
    let cpu: Vec<String> = cpu_by_thread_name().iter().take(8).map(|(n, s)| format!("{n} {s:.1}")).collect();
    eprintln!("overload: CPU seconds by thread name (server and bench, since start): {}", cpu.join(", "));
    eprintln!(
        "overload: resident at the end {} MiB anonymous, {} MiB file-backed; head pages in use {} MiB",
        status_bytes("self", "RssAnon") >> 20,
        status_bytes("self", "RssFile") >> 20,
        (db_for_stats.engine().head().pages_in_use() * db_for_stats.engine().head().page_bytes()) >> 20
    );
    let (im, ip) = (percentile(&mut idle, 50), percentile(&mut idle, 99));
    let (lm, lp) = (percentile(&mut loaded, 50), percentile(&mut loaded, 99));
    let (median_factor, p99_factor) = (lm / im, lp / ip);
    println!(
        "overload: {writers} writers x {lines}-line bodies for {elapsed:.1} s, admission budget {budget_mib} MiB, \
         head memory cap {cap_mib} MiB, {write_workers} write workers: \
         {:.2} M samples/s acknowledged, {} writes accepted, {} refused (503), {} stale retries (400); peak RSS {} MiB; query median \
         {im:.2} -> {lm:.2} ms ({median_factor:.1}x), p99 {ip:.2} -> {lp:.2} ms ({p99_factor:.1}x) over {} -> {} \
         queries; load generator CPU {generator_cpu:.1} s",
        samples.load(Ordering::Relaxed) as f64 / elapsed / 1e6,
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        stale.load(Ordering::Relaxed),
        peak_rss_bytes("self") >> 20,
        idle.len(),
        loaded.len(),
    );
    // The bound stated for reads under this overload (issue #10); printed, not asserted: a bench on a
    // shared machine measures, it does not gate.
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "overload: read latency bound: median within {MEDIAN_BOUND}x of idle ({}), p99 within {P99_BOUND}x ({})",
        met(median_factor <= MEDIAN_BOUND),
        met(p99_factor <= P99_BOUND),
    );
}

/// The stated bound on query latency under the overload, as a factor of the idle latency.
const MEDIAN_BOUND: f64 = 3.0;
/// The same for the 99th percentile (7.7-11.4x over three runs of session 6, see RELIABILITY.md).
const P99_BOUND: f64 = 12.0;
