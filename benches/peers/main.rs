//! silt side by side with VictoriaMetrics and InfluxDB, in one run on one machine (issue #9).
//!
//! Each system runs as its own server process on loopback with a fresh data directory and gets the same
//! InfluxDB line protocol over HTTP from the same load generator (this program): cc-metric-store's test shape,
//! 82 hosts × (128 hwthreads × 10 metrics + 10 node metrics) = 105,780 series at 60 s, second timestamps,
//! values that move like real counters and gauges (bounded random walks at the precision collectors send),
//! one request per host and step (1,290 lines) from 4 writer threads over keep-alive connections. The last
//! step is "now", so nothing is outside anyone's retention.
//!
//! Per system it measures: ingest samples/s (first byte to last acknowledgement), the server's CPU seconds
//! per million samples (ingest and the flush after it, from `/proc/<pid>/stat`), its peak resident memory
//! (`VmHWM`, at the end), bytes per sample on disk once its flush/compaction has settled (allocated blocks
//! of the data directory, unchanged over three polls 2 s apart, after waiting out the system's own flush
//! timer: 12 s for silt's checkpoint, 40 s for InfluxDB's full compaction), and the median and p99 latency of three
//! queries over the whole range: one series; one host's sum over its hwthreads of a metric; the average over
//! all hosts of a node metric. The load generator's own CPU is reported beside the ingest rate.
//!
//! - VictoriaMetrics (`victoria-metrics`): `/write?precision=s`, `-influxSkipSingleField` (metric name =
//!   measurement), `-search.disableCache` (queries do their work every time, as silt's do), retention 100y;
//!   flush: `/internal/force_flush` then `/internal/force_merge`; queries: `/api/v1/query_range` at 60 s.
//! - InfluxDB 1.x (`influxd`): `/write?db=bench&precision=s`; the cache is snapshotted to TSM after 10 s cold
//!   and fully compacted after 30 s; queries: InfluxQL `GROUP BY time(60s)`.
//! - silt (`silt serve`, built in release mode by cargo with this bench): `/api/write`, the config declares
//!   the metrics (hwthread metrics sum, node metrics avg) with `retention-in-memory` 1h: with compaction
//!   (silt's default) that is how long samples stay in the head before they move into compressed blocks,
//!   where queries still find them, so the backfill's pages are compacted as it goes (`PEERS_SILT_RETENTION`
//!   sets another, e.g. cc-metric-store's usual 48h, which keeps the whole day raw in the head); the head's
//!   page class is `silt serve`'s default, 64 values; `checkpoint-interval` 10s (the flush: a checkpoint drops the WAL
//!   segments below it); queries: `/api/query` (the all-host average is
//!   a query without `host`, silt's extension of cc-metric-store's API).
//!
//! Run: `benches/peers/run.sh` (installs the peers, then `cargo bench --bench peers`). Environment:
//! `PEERS_STEPS` (default 1440: one day, 152 M samples), `PEERS_HOSTS` (82), `PEERS_SYSTEMS` (default
//! `silt,silt-100ms,victoria-metrics,influxdb`; `silt-100ms` is `silt serve --durability 100ms`; those
//! not installed are skipped), `PEERS_QUERY_RUNS` (21), `PEERS_QUERY_TIMES` (set: print each query's times and the server's page faults in run order), `PEERS_SILT_RETENTION` (1h), `PEERS_SILT_PAGE_SLOTS` (64), `PEERS_SILT_CHECKPOINT` (silt's checkpoint interval in seconds, 10),
//! `PEERS_SILT_WRITE_WORKERS` (silt's `main.write-workers`; default the server's), `PEERS_SILT_WRAP` (a command silt runs under, e.g. `valgrind --tool=massif`; the memory and CPU figures are then the wrapper's), `PEERS_OUT` (the Markdown file, default `target/peers/results.md`). Without `--bench` (under
//! `cargo test --benches`) it runs silt alone on 2 hosts × 3 steps.

#[path = "../support/http.rs"]
mod http;
mod workload;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{page_faults, peak_rss_bytes, process_cpu_seconds, status_bytes, thread_cpu_seconds, Client};
use workload::{push_fixed, Writer, FREQ, HW, NODE, THREADS};

const WRITERS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    /// `silt serve` as it ships: a write is acknowledged after its WAL fsync.
    Silt,
    /// `silt serve --durability 100ms`: acknowledged once written to the OS, fsynced within 100 ms (closer
    /// to what the peers do: VictoriaMetrics flushes about once a second).
    SiltInterval,
    Victoria,
    Influx,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Silt => "silt",
            System::SiltInterval => "silt-100ms",
            System::Victoria => "victoria-metrics",
            System::Influx => "influxdb",
        }
    }

    fn write_path(self) -> &'static str {
        match self {
            System::Silt | System::SiltInterval => "/api/write",
            System::Victoria => "/write?precision=s",
            System::Influx => "/write?db=bench&precision=s",
        }
    }

    fn installed(self) -> bool {
        match self {
            System::Silt | System::SiltInterval => true,
            System::Victoria => which("victoria-metrics"),
            System::Influx => which("influxd"),
        }
    }
}

fn which(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A running server.
struct Server {
    system: System,
    child: Child,
    addr: SocketAddr,
    data: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        // A wrapped silt (a profiler) is stopped with SIGTERM and waited for, so that it writes its report.
        let group = format!("-{}", self.pid());
        if std::env::var_os("PEERS_SILT_WRAP").is_some() && matches!(self.system, System::Silt | System::SiltInterval) {
            let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
            let deadline = Instant::now() + Duration::from_secs(300);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        // The whole group: a wrapper's child too.
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn start(system: System, dir: &Path) -> Server {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let log = std::fs::File::create(dir.join("server.log")).expect("log");
        let mut cmd = match system {
            System::Silt | System::SiltInterval => {
                let mut metrics = String::new();
                for (s, agg) in HW.iter().map(|s| (s, "sum")).chain(NODE.iter().map(|s| (s, "avg"))) {
                    let _ = write!(metrics, r#""{}": {{"frequency": {FREQ}, "aggregation": "{agg}"}},"#, s.name);
                }
                metrics.pop();
                let config = format!(
                    r#"{{"main": {{"addr": "{addr}"{workers}}}, "metrics": {{{metrics}}},
                        "metric-store": {{"retention-in-memory": "{retention}", "memory-cap": 0, "checkpoint-interval": "{checkpoint}s",
                                          "page-slots": {slots}, "checkpoints": {{"directory": "{}"}}}}}}"#,
                    data.display(),
                    checkpoint = silt_checkpoint_secs(),
                    retention = std::env::var("PEERS_SILT_RETENTION").unwrap_or_else(|_| "1h".into()),
                    slots = std::env::var("PEERS_SILT_PAGE_SLOTS").unwrap_or_else(|_| "64".into()),
                    workers = std::env::var("PEERS_SILT_WRITE_WORKERS")
                        .map(|n| format!(r#", "write-workers": {n}"#))
                        .unwrap_or_default(),
                );
                let path = dir.join("config.json");
                std::fs::write(&path, config).expect("config");
                // `PEERS_SILT_WRAP` runs silt under another program, e.g. `valgrind --tool=massif` for a heap profile.
                let wrap = std::env::var("PEERS_SILT_WRAP").unwrap_or_default();
                let mut wrap = wrap.split_whitespace();
                let mut c = match wrap.next() {
                    Some(program) => {
                        let mut c = Command::new(program);
                        c.args(wrap).arg(env!("CARGO_BIN_EXE_silt"));
                        c
                    }
                    None => Command::new(env!("CARGO_BIN_EXE_silt")),
                };
                c.arg("serve").arg("--config").arg(path).env("RUST_LOG", "warn");
                if system == System::SiltInterval {
                    c.args(["--durability", "100ms"]);
                }
                c
            }
            System::Victoria => {
                let mut c = Command::new("victoria-metrics");
                c.arg(format!("-storageDataPath={}", data.display())).arg(format!("-httpListenAddr={addr}")).args([
                    "-retentionPeriod=100y",
                    "-influxSkipSingleField",
                    "-search.disableCache",
                    "-loggerLevel=ERROR",
                ]);
                c
            }
            System::Influx => {
                let config = format!(
                    "reporting-disabled = true\nbind-address = \"127.0.0.1:{}\"\n[meta]\n  dir = \"{d}/meta\"\n\
                     [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
                     cache-snapshot-write-cold-duration = \"10s\"\n  compact-full-write-cold-duration = \"30s\"\n\
                     max-series-per-database = 0\n  max-values-per-tag = 0\n\
                     [http]\n  bind-address = \"{addr}\"\n  log-enabled = false\n[monitor]\n  store-enabled = false\n\
                     [continuous_queries]\n  enabled = false\n",
                    free_port(),
                    d = data.display()
                );
                let path = dir.join("influxdb.conf");
                std::fs::write(&path, config).expect("config");
                let mut c = Command::new("influxd");
                c.arg("run").arg("-config").arg(path);
                c
            }
        };
        // In a process group of its own, so that a wrapped silt (a profiler's child) is stopped with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", system.name()));
        let server = Server { system, child, addr, data };
        server.wait_ready();
        if system == System::Influx {
            Client::connect(addr).ok("POST", "/query?q=CREATE%20DATABASE%20bench", b"");
        }
        server
    }

    fn wait_ready(&self) {
        let path = match self.system {
            System::Silt | System::SiltInterval => "/api/healthcheck",
            System::Victoria => "/health",
            System::Influx => "/ping",
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(s) = std::net::TcpStream::connect(self.addr) {
                drop(s);
                let (status, _) = Client::connect(self.addr).request("GET", path, b"");
                if status < 500 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{} did not become ready on {}", self.system.name(), self.addr);
    }

    /// Asks the server to flush and compact, then waits until its data directory stops changing.
    fn flush(&self) {
        let mut c = Client::connect(self.addr);
        if self.system == System::Victoria {
            c.ok("GET", "/internal/force_flush", b"");
            c.request("GET", "/internal/force_merge", b"");
        }
        // Each system's own flush has a timer: silt checkpoints (and drops the WAL below it) every 10 s,
        // InfluxDB compacts a shard fully after 30 s without writes. Wait past it before the size may settle.
        let settle = match self.system {
            System::Silt | System::SiltInterval => Duration::from_secs(silt_checkpoint_secs() + 2),
            System::Influx => Duration::from_secs(40),
            System::Victoria => Duration::ZERO,
        };
        std::thread::sleep(settle);
        let mut last = (0, 0);
        let mut same = 0;
        let deadline = Instant::now() + Duration::from_secs(300);
        while same < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(2));
            let now = (disk_bytes(&self.data), file_count(&self.data));
            same = if now == last { same + 1 } else { 0 };
            last = now;
        }
    }

    /// The three queries: `(what, path, body)`.
    fn queries(&self, from: i64, to: i64) -> Vec<(&'static str, String, String)> {
        let enc = |q: &str| -> String {
            q.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        let end = to - FREQ; // the last sample's time; ranges below are [from, to)
        match self.system {
            System::Silt | System::SiltInterval => {
                let q = |body: &str| format!(r#"{{"cluster":"bench","from":{from},"to":{to},"queries":[{body}]}}"#);
                vec![
                    (
                        "one series",
                        "/api/query".into(),
                        q(r#"{"metric":"cpu_load","host":"n0001","type":"hwthread","type-ids":["7"]}"#),
                    ),
                    ("host hwthread sum", "/api/query".into(), q(r#"{"metric":"flops_any","host":"n0001"}"#)),
                    ("all-host node avg", "/api/query".into(), q(r#"{"metric":"mem_used"}"#)),
                ]
            }
            System::Victoria => {
                let q = |e: &str| format!("/api/v1/query_range?query={}&start={from}&end={end}&step=60s", enc(e));
                vec![
                    ("one series", q(r#"cpu_load{hostname="n0001",type="hwthread",type\-id="7"}"#), String::new()),
                    ("host hwthread sum", q(r#"sum(flops_any{hostname="n0001",type="hwthread"})"#), String::new()),
                    ("all-host node avg", q(r#"avg(mem_used{type="node"})"#), String::new()),
                ]
            }
            System::Influx => {
                let range = format!("time >= {from}s AND time < {to}s");
                let q = |e: String| format!("/query?db=bench&epoch=s&q={}", enc(&e));
                vec![
                    (
                        "one series",
                        q(format!(r#"SELECT value FROM cpu_load WHERE hostname='n0001' AND type='hwthread' AND "type-id"='7' AND {range}"#)),
                        String::new(),
                    ),
                    (
                        "host hwthread sum",
                        q(format!("SELECT sum(value) FROM flops_any WHERE hostname='n0001' AND type='hwthread' AND {range} GROUP BY time(60s)")),
                        String::new(),
                    ),
                    ("all-host node avg", q(format!("SELECT mean(value) FROM mem_used WHERE {range} GROUP BY time(60s)")), String::new()),
                ]
            }
        }
    }
}

/// Allocated bytes of every file below `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

fn disk_bytes_of(file: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(file).map_or(0, |m| m.blocks() * 512)
}

fn file_count(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

/// What one system did.
struct Figures {
    system: System,
    samples: u64,
    ingest_per_s: f64,
    cpu_per_million: f64,
    loadgen_cpu_share: f64,
    peak_rss: u64,
    bytes_per_sample: f64,
    /// `(what, median ms, p99 ms, points in the answer)`.
    queries: Vec<(&'static str, f64, f64, usize)>,
}

/// How many values a query's answer holds (to check that every system answered the whole range).
fn points_in(system: System, body: &[u8]) -> usize {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    match system {
        System::Silt | System::SiltInterval => {
            v["results"][0][0]["data"].as_array().map_or(0, |a| a.iter().filter(|x| !x.is_null()).count())
        }
        System::Victoria => v["data"]["result"][0]["values"].as_array().map_or(0, Vec::len),
        System::Influx => v["results"][0]["series"][0]["values"].as_array().map_or(0, Vec::len),
    }
}

fn run(system: System, hosts: usize, steps: i64, runs: usize) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(system, dir.path());
    let pid = server.pid();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let t0 = (now - steps * FREQ).div_euclid(FREQ) * FREQ + FREQ;
    let cpu0 = process_cpu_seconds(&pid);
    let started = Instant::now();
    let addr = server.addr;
    let path = system.write_path();
    let writers: Vec<_> = (0..WRITERS.min(hosts))
        .map(|w| {
            std::thread::spawn(move || {
                let cpu = thread_cpu_seconds();
                let mut gen = Writer::new(w, WRITERS, hosts);
                let mut client = Client::connect(addr);
                let mut body = Vec::with_capacity(1 << 17);
                for step in 0..steps {
                    for i in 0..gen.hosts.len() {
                        gen.body(i, t0 + step * FREQ, &mut body);
                        client.ok("POST", path, &body);
                    }
                }
                thread_cpu_seconds() - cpu
            })
        })
        .collect();
    // Resident memory sampled every 100 ms: its largest value during ingest and during the flush.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (pid, sampling) = (pid.clone(), sampling.clone());
        std::thread::spawn(move || {
            let mut peak = (0u64, 0u64);
            while sampling.load(Ordering::Relaxed) {
                let (a, f) = (status_bytes(&pid, "RssAnon"), status_bytes(&pid, "RssFile"));
                if a + f > peak.0 + peak.1 {
                    peak = (a, f);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    };
    let loadgen_cpu: f64 = writers.into_iter().map(|w| w.join().expect("writer")).sum();
    let ingest_secs = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let ingest_peak = sampler.join().expect("sampler");
    let samples = (hosts * (THREADS * HW.len() + NODE.len())) as u64 * steps as u64;
    server.flush();
    let cpu = process_cpu_seconds(&pid) - cpu0;
    if matches!(system, System::Silt | System::SiltInterval) {
        // Every sample was stored, none refused (the query answers below show each peer's completeness). silt
        // also stores its own service metrics, so "stored" is at least the workload.
        let text = String::from_utf8_lossy(&Client::connect(addr).ok("GET", "/metrics", b"")).into_owned();
        let count = |outcome: &str| -> u64 {
            let prefix = format!(r#"silt_samples_total{{outcome="{outcome}"}} "#);
            text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
        };
        assert!(count("stored") >= samples, "{}: {} of {samples} samples stored", system.name(), count("stored"));
        assert_eq!(count("too_old"), 0, "{}: samples refused as too old", system.name());
    }
    let bytes = disk_bytes(&server.data);
    let mut parts: Vec<String> = std::fs::read_dir(&server.data)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let p = e.path();
                    let (b, n) = if p.is_dir() { (disk_bytes(&p), file_count(&p)) } else { (disk_bytes_of(&p), 1) };
                    format!("{} {:.1} MiB in {n}", e.file_name().to_string_lossy(), b as f64 / (1 << 20) as f64)
                })
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    eprintln!("{}: on disk after the flush: {}", system.name(), parts.join(", "));
    let list_blocks = || -> Vec<String> {
        let mut sizes: Vec<String> = std::fs::read_dir(server.data.join("blocks"))
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        format!(
                            "{} {:.1} MiB",
                            e.file_name().to_string_lossy(),
                            disk_bytes_of(&e.path()) as f64 / (1 << 20) as f64
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        sizes.sort();
        sizes
    };
    let blocks_before = list_blocks();
    if !blocks_before.is_empty() {
        eprintln!("{}: blocks: {}", system.name(), blocks_before.join(", "));
    }
    let (from, to) = (t0, t0 + steps * FREQ);
    let mut client = Client::connect(addr);
    let mut queries = Vec::new();
    for (what, path, body) in server.queries(from, to) {
        let mut took = Vec::with_capacity(runs);
        let mut faults = Vec::with_capacity(runs);
        let mut points = 0;
        for _ in 0..runs {
            let before = page_faults(&pid);
            let t = Instant::now();
            let (status, answer) = client.request("GET", &path, body.as_bytes());
            took.push(t.elapsed().as_secs_f64() * 1e3);
            let after = page_faults(&pid);
            faults.push((after.0 - before.0, after.1 - before.1));
            assert!(
                (200..300).contains(&status),
                "{}: {what}: {status} {}",
                system.name(),
                String::from_utf8_lossy(&answer)
            );
            points = points_in(system, &answer);
        }
        if std::env::var_os("PEERS_QUERY_TIMES").is_some() {
            let times: Vec<String> = took.iter().map(|t| format!("{t:.2}")).collect();
            eprintln!("{}: {what}: ms in run order: {}", system.name(), times.join(" "));
            let faults: Vec<String> = faults.iter().map(|(min, maj)| format!("{min}/{maj}")).collect();
            eprintln!("{}: {what}: page faults (minor/major) in run order: {}", system.name(), faults.join(" "));
        }
        took.sort_by(f64::total_cmp);
        let p99 = took[((took.len() * 99).div_ceil(100)).saturating_sub(1).min(took.len() - 1)];
        queries.push((what, took[took.len() / 2], p99, points));
    }
    // A compaction or merge during the queries (silt's blocks changed) competes with them for the CPU.
    let blocks_after = list_blocks();
    if blocks_after != blocks_before {
        eprintln!("{}: blocks changed during the queries, now: {}", system.name(), blocks_after.join(", "));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mib = |field| status_bytes(&pid, field) as f64 / (1 << 20) as f64;
    let to_mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "{}: resident at the end: {:.0} MiB anonymous, {:.0} MiB file-backed; largest sample during ingest: {:.0} + {:.0} MiB; peak {:.0} MiB",
        system.name(),
        mib("RssAnon"),
        mib("RssFile"),
        to_mib(ingest_peak.0),
        to_mib(ingest_peak.1),
        mib("VmHWM")
    );
    Figures {
        system,
        samples,
        ingest_per_s: samples as f64 / ingest_secs,
        cpu_per_million: cpu / (samples as f64 / 1e6),
        loadgen_cpu_share: loadgen_cpu / (ingest_secs * cores),
        peak_rss: peak_rss_bytes(&pid),
        bytes_per_sample: bytes as f64 / samples as f64,
        queries,
    }
}

/// The table, with each figure's ratio to the best peer (not silt) in brackets.
fn table(figs: &[Figures], hosts: usize, steps: i64) -> String {
    let mut out = String::new();
    let series = hosts * (THREADS * HW.len() + NODE.len());
    let _ = writeln!(
        out,
        "Workload: {hosts} hosts x (128 hwthreads x 10 + 10 node metrics) = {series} series, {steps} steps at 60 s, \
         {} samples, {WRITERS} writers over HTTP. Ratios are to the best peer (higher is better for ingest, lower \
         for the rest).\n",
        figs.first().map_or(0, |f| f.samples)
    );
    let peers: Vec<&Figures> =
        figs.iter().filter(|f| !matches!(f.system, System::Silt | System::SiltInterval)).collect();
    let best = |f: &dyn Fn(&Figures) -> f64, higher: bool| -> Option<f64> {
        peers.iter().map(|p| f(p)).reduce(|a, b| if (a > b) == higher { a } else { b })
    };
    let cell = |v: f64, best: Option<f64>, unit: &str, prec: usize| match best {
        Some(b) if b > 0.0 => format!("{v:.prec$}{unit} ({:.2}x)", v / b),
        _ => format!("{v:.prec$}{unit}"),
    };
    let mut header = "| figure |".to_owned();
    let mut rule = "|---|".to_owned();
    for f in figs {
        let _ = write!(header, " {} |", f.system.name());
        rule.push_str("---|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    type Get = Box<dyn Fn(&Figures) -> f64>;
    let mut rows: Vec<(String, Get, bool, &str, usize)> = vec![
        ("ingest, M samples/s".into(), Box::new(|f: &Figures| f.ingest_per_s / 1e6), true, "", 2),
        ("server CPU-s per M samples".into(), Box::new(|f: &Figures| f.cpu_per_million), false, "", 2),
        ("peak resident memory, MiB".into(), Box::new(|f: &Figures| f.peak_rss as f64 / 1048576.0), false, "", 0),
        ("disk, bytes per sample".into(), Box::new(|f: &Figures| f.bytes_per_sample), false, "", 2),
    ];
    for (i, (what, ..)) in figs[0].queries.iter().enumerate() {
        rows.push((format!("{what}: median ms"), Box::new(move |f: &Figures| f.queries[i].1), false, "", 2));
        rows.push((format!("{what}: p99 ms"), Box::new(move |f: &Figures| f.queries[i].2), false, "", 2));
    }
    for (name, get, higher, unit, prec) in &rows {
        let b = best(get.as_ref(), *higher);
        let _ = write!(out, "| {name} |");
        for f in figs {
            let _ = write!(out, " {} |", cell(get(f), b, unit, *prec));
        }
        out.push('\n');
    }
    let _ = write!(out, "| load generator CPU, share of the machine during ingest |");
    for f in figs {
        let _ = write!(out, " {:.0} % |", f.loadgen_cpu_share * 100.0);
    }
    out.push('\n');
    let _ = write!(out, "| points per query answer |");
    for f in figs {
        let pts: Vec<String> = f.queries.iter().map(|q| q.3.to_string()).collect();
        let _ = write!(out, " {} |", pts.join(" / "));
    }
    out.push('\n');
    out
}

/// silt's `checkpoint-interval` in the bench, in seconds (`PEERS_SILT_CHECKPOINT`, default 10): the flush waits
/// for one checkpoint past the last write.
fn silt_checkpoint_secs() -> u64 {
    env_or("PEERS_SILT_CHECKPOINT", 10u64)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    check_fixed();
    let full = std::env::args().any(|a| a == "--bench");
    let hosts = if full { env_or("PEERS_HOSTS", 82usize) } else { 2 };
    let steps = if full { env_or("PEERS_STEPS", 1440i64) } else { 3 };
    let runs = if full { env_or("PEERS_QUERY_RUNS", 21usize) } else { 3 };
    let wanted = if full {
        std::env::var("PEERS_SYSTEMS").unwrap_or_else(|_| "silt,silt-100ms,victoria-metrics,influxdb".into())
    } else {
        "silt".into()
    };
    let systems: Vec<System> = [System::Silt, System::SiltInterval, System::Victoria, System::Influx]
        .into_iter()
        .filter(|s| wanted.split(',').any(|w| w.trim() == s.name()))
        .filter(|s| {
            let ok = s.installed();
            if !ok {
                eprintln!("peers: {} is not installed, skipped (benches/peers/run.sh installs it)", s.name());
            }
            ok
        })
        .collect();
    let mut figs = Vec::new();
    for s in systems {
        eprintln!("peers: {} ...", s.name());
        let f = run(s, hosts, steps, runs);
        eprintln!(
            "peers: {}: {:.2} M samples/s, {:.2} CPU-s/M, {:.0} MiB peak, {:.2} B/sample, queries {:?}",
            s.name(),
            f.ingest_per_s / 1e6,
            f.cpu_per_million,
            f.peak_rss as f64 / 1048576.0,
            f.bytes_per_sample,
            f.queries
        );
        figs.push(f);
    }
    if figs.is_empty() {
        return;
    }
    let text = table(&figs, hosts, steps);
    println!("{text}");
    if !full && std::env::var_os("PEERS_OUT").is_none() {
        return; // a smoke run under `cargo test` leaves the last real run's file alone
    }
    let out = std::env::var("PEERS_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("peers").join("results.md"));
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&out, format!("# silt and its peers\n\n{text}")).expect("write results");
    eprintln!("peers: written to {}", out.display());
}

/// The number formatting the payload relies on (checked at every start: it is cheap).
fn check_fixed() {
    let f = |v, d| {
        let mut o = Vec::new();
        push_fixed(&mut o, v, d);
        String::from_utf8(o).expect("ascii")
    };
    for (v, d, want) in [
        (0, 0, "0"),
        (0, 2, "0.00"),
        (5, 2, "0.05"),
        (12345, 2, "123.45"),
        (-7, 1, "-0.7"),
        (1_700_000_000, 0, "1700000000"),
    ] {
        assert_eq!(f(v, d), want, "push_fixed({v}, {d})");
    }
}
