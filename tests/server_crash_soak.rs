//! The built `silt serve` under concurrent HTTP writers and readers, killed with SIGKILL at random moments
//! and restarted on the same data directory again and again; after every restart each series is read back
//! whole and compared with the writers' logs. A second scenario stops it with SIGTERM while the writers are
//! paused: it must exit 0 and come back with exactly what was acknowledged.
//!
//! Writers: one per series (metric `soak` at host `w<i>`), each request a batch of [`BATCH`] samples at the
//! next timestamps on the metric's grid. A sample is acknowledged when its request got a 2xx (durability
//! `sync`: fsynced before the answer). A request that failed is never resent: its samples may or may not be
//! there after a restart, but only with the value written, and once a restart has shown one it must stay.
//! Every value names its series and timestamp, so a torn or foreign value cannot pass. Readers query random
//! windows all along: an answer is a 2xx with well-formed JSON (or a connection error while the server is
//! down), holds no value that was not written, and holds every sample acknowledged before it was asked.
//!
//! The data starts 30 days back, behind the 48 h retention, so pages leave the head for blocks as they fill
//! (the maintenance pass runs every second, so half the kills come 1 to 2.5 s after the writers resume), and
//! the server checkpoints every 200 ms: kills land in WAL appends, checkpoints and compactions alike. A
//! SIGKILL leaves the OS's page cache intact, so this does not test fsync (the crash tests with a simulated
//! disk do), but recovery, the ordering of acknowledgements and the server's restart. A third of the
//! restarts are themselves killed within their first 100 ms, while they recover.
//!
//! `SILT_SOAK_DURABILITY` (e.g. `100ms`) runs the server with that `--durability` instead of `sync`.
//! `SILT_SOAK_CYCLES` sets the number of kills (default 20; the SIGTERM scenario runs a quarter as many
//! restarts, at least 3); `SILT_SOAK_SEED` the seed of the kill moments and the readers' windows (printed).

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{eventually, free_port, signal, spawn_silt, spawn_silt_unwaited, try_http, Server};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The metric's frequency: every timestamp written is `t0 + step * F`.
const F: i64 = 10;
/// Samples per write request.
const BATCH: usize = 20;
const WRITERS: usize = 3;
const READERS: usize = 2;
/// Bound on every HTTP exchange of writers and readers; a server that is up must answer within it.
const TIMEOUT: Duration = Duration::from_secs(20);
/// Steps per verification query.
const WINDOW: usize = 20_000;

/// The value written for series `i` at `step`: unique per series and step, exact in three decimals (the
/// API renders three).
fn value(i: usize, step: usize) -> f64 {
    assert!(step < 10_000_000, "step {step}: values of two series would meet");
    (i + 1) as f64 * 1e7 + step as f64 + 0.25
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Slot {
    /// Sent in a request that got no 2xx (or is in flight): may be there, with its value.
    Sent,
    /// Answered 2xx: must be there.
    Acked,
    /// Not acknowledged, but a restart showed it: must stay.
    Survived,
}

/// What one writer sent: `slots[k]` for the sample at `t0 + k * F`; steps past the end were never sent.
#[derive(Default)]
struct Log {
    slots: Vec<Slot>,
    acked: usize,
}

#[derive(Default)]
struct Ctl {
    running: bool,
    stop: bool,
    parked: usize,
}

struct Soak {
    addr: SocketAddr,
    t0: i64,
    logs: Vec<Mutex<Log>>,
    ctl: Mutex<Ctl>,
    cv: Condvar,
    failures: Mutex<Vec<String>>,
    answers: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Soak {
    fn new(addr: SocketAddr) -> Soak {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
        Soak {
            addr,
            t0: (now - 30 * 86_400) / F * F,
            logs: (0..WRITERS).map(|_| Mutex::default()).collect(),
            ctl: Mutex::default(),
            cv: Condvar::new(),
            failures: Mutex::default(),
            answers: AtomicU64::new(0),
        }
    }

    fn fail(&self, msg: String) {
        let mut f = lock(&self.failures);
        if f.len() < 20 {
            f.push(msg);
        }
    }

    /// Panics with every failure the threads recorded.
    fn assert_no_failures(&self, when: &str) {
        let f = lock(&self.failures);
        assert!(f.is_empty(), "{when}: {} failure(s):\n{}", f.len(), f.join("\n"));
    }

    /// For writers: parks while paused; false once stopped.
    fn wait_running(&self) -> bool {
        let mut c = lock(&self.ctl);
        if !c.running && !c.stop {
            c.parked += 1;
            self.cv.notify_all();
            while !c.running && !c.stop {
                c = self.cv.wait(c).unwrap_or_else(|e| e.into_inner());
            }
            c.parked -= 1;
        }
        !c.stop
    }

    fn resume(&self) {
        lock(&self.ctl).running = true;
        self.cv.notify_all();
    }

    /// Returns once every writer is parked: no write request is in flight and the logs hold still.
    fn pause(&self) {
        let mut c = lock(&self.ctl);
        c.running = false;
        let deadline = Instant::now() + TIMEOUT * 2;
        while c.parked < WRITERS {
            let left = deadline.checked_duration_since(Instant::now()).expect("writers never paused");
            c = self.cv.wait_timeout(c, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn stop(&self) {
        lock(&self.ctl).stop = true;
        self.cv.notify_all();
    }

    fn stopped(&self) -> bool {
        lock(&self.ctl).stop
    }

    fn acked(&self) -> Vec<usize> {
        self.logs.iter().map(|l| lock(l).acked).collect()
    }
}

/// Stops the writers and readers when the test's scope ends, also by a panic (else the scope would wait for
/// them forever).
struct StopOnDrop<'a>(&'a Soak);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)
}

fn writer(s: &Soak, i: usize) {
    while s.wait_running() {
        let first = {
            let mut log = lock(&s.logs[i]);
            log.slots.extend([Slot::Sent; BATCH]);
            log.slots.len() - BATCH
        };
        let mut body = String::with_capacity(BATCH * 64);
        for k in first..first + BATCH {
            let _ = writeln!(body, "soak,cluster=soak,hostname=w{i} value={} {}", value(i, k), s.t0 + k as i64 * F);
        }
        match try_http(s.addr, "POST", "/api/write", &body, TIMEOUT) {
            Ok((200..=299, _)) => {
                let mut log = lock(&s.logs[i]);
                log.slots[first..first + BATCH].fill(Slot::Acked);
                log.acked += BATCH;
            }
            Ok((status, b)) => s.fail(format!("writer {i}: steps {first}..{}: {status} {b}", first + BATCH)),
            Err(e) if is_timeout(&e) => s.fail(format!("writer {i}: no answer within {TIMEOUT:?}")),
            // The server is down (killed): back off, then go on with new timestamps.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Reads series `i` over steps `a..b`: the values present by step. The outer error is a failed exchange,
/// the inner one an answer that is not well-formed.
fn read_steps(
    s: &Soak,
    i: usize,
    a: usize,
    b: usize,
    timeout: Duration,
) -> std::io::Result<Result<BTreeMap<usize, f64>, String>> {
    let (from, to) = (s.t0 + a as i64 * F, s.t0 + b as i64 * F);
    let q = format!(r#"{{"cluster":"soak","from":{from},"to":{to},"queries":[{{"metric":"soak","host":"w{i}"}}]}}"#);
    let (status, body) = try_http(s.addr, "POST", "/api/query", &q, timeout)?;
    Ok(parse_answer(s.t0, status, &body)
        .map_err(|e| format!("query of w{i} over steps {a}..{b}: {e}: {status} {body:.500}")))
}

fn parse_answer(t0: i64, status: u16, body: &str) -> Result<BTreeMap<usize, f64>, String> {
    if !(200..300).contains(&status) {
        return Err("not a 2xx".into());
    }
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("not JSON ({e})"))?;
    let results = v["results"].as_array().filter(|r| r.len() == 1).ok_or("not one result list")?;
    let list = results[0].as_array().ok_or("result not a list")?;
    let mut out = BTreeMap::new();
    let Some(r) = list.first() else { return Ok(out) }; // the series does not exist (yet)
    if list.len() > 1 || r.get("error").is_some() {
        return Err("an error or more than one series".into());
    }
    let (from, res) = (r["from"].as_i64().ok_or("no from")?, r["resolution"].as_i64().ok_or("no resolution")?);
    if res != F || (from - t0).rem_euclid(F) != 0 || from < t0 {
        return Err(format!("from {from} resolution {res} off the grid of t0 {t0} step {F}"));
    }
    let first = ((from - t0) / F) as usize;
    for (j, d) in r["data"].as_array().ok_or("no data")?.iter().enumerate() {
        if !d.is_null() {
            out.insert(first + j, d.as_f64().ok_or("a value neither a number nor null")?);
        }
    }
    // Values grow with the step, so the stats' extremes are the first and last value present.
    let extremes = (out.values().next().copied(), out.values().next_back().copied());
    if (r["min"].as_f64(), r["max"].as_f64()) != extremes {
        return Err(format!("min {} and max {} are not the extremes of the data", r["min"], r["max"]));
    }
    Ok(out)
}

/// Checks values read for series `i` against its log: each one written, with its value.
fn check_written(s: &Soak, i: usize, got: &BTreeMap<usize, f64>, what: &str) {
    let log = lock(&s.logs[i]);
    for (&k, &v) in got {
        if k >= log.slots.len() {
            s.fail(format!("{what}: w{i} step {k}: {v} but that step was never written"));
        } else if v != value(i, k) {
            s.fail(format!("{what}: w{i} step {k}: {v}, written {} ({:?})", value(i, k), log.slots[k]));
        }
    }
}

fn reader(s: &Soak, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !s.stopped() {
        let i = rng.gen_range(0..WRITERS);
        let n = lock(&s.logs[i]).slots.len();
        if n == 0 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let a = rng.gen_range(0..n);
        let b = (a + rng.gen_range(1..=4_000)).min(n);
        let must: Vec<bool> = lock(&s.logs[i]).slots[a..b].iter().map(|&x| x != Slot::Sent).collect();
        match read_steps(s, i, a, b, TIMEOUT) {
            Ok(Ok(got)) => {
                check_written(s, i, &got, "reader");
                if let Some(k) = (a..b).find(|k| must[k - a] && !got.contains_key(k)) {
                    s.fail(format!("reader: w{i} step {k} acknowledged before the query, missing from its answer"));
                }
                s.answers.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => s.fail(format!("reader: {e}")),
            Err(e) if is_timeout(&e) => s.fail(format!("reader: no answer within {TIMEOUT:?}")),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Totals of one verification.
#[derive(Debug, Default)]
struct Verified {
    acked: usize,
    unacked: usize,
    survived: usize,
}

/// With the writers parked, reads every series back whole and compares it with the logs: acknowledged (and
/// survived) samples present with their value, others absent or with their value (then marked survived),
/// nothing past the last step written. `exact`: every sample sent must have been acknowledged.
fn verify(s: &Soak, what: &str, exact: bool) -> Verified {
    let mut t = Verified::default();
    for i in 0..WRITERS {
        let n = lock(&s.logs[i]).slots.len();
        let mut got = BTreeMap::new();
        for a in (0..n + BATCH).step_by(WINDOW) {
            match read_steps(s, i, a, (a + WINDOW).min(n + BATCH), TIMEOUT * 3) {
                Ok(Ok(part)) => got.extend(part),
                Ok(Err(e)) => panic!("{what}: {e}"),
                Err(e) => panic!("{what}: reading w{i} back: {e}"),
            }
        }
        check_written(s, i, &got, what);
        let mut log = lock(&s.logs[i]);
        for (k, slot) in log.slots.iter_mut().enumerate() {
            let present = got.contains_key(&k);
            match *slot {
                Slot::Acked if present => t.acked += 1,
                Slot::Acked => s.fail(format!("{what}: w{i} step {k}: acknowledged, lost")),
                Slot::Survived if present => t.survived += 1,
                Slot::Survived => s.fail(format!("{what}: w{i} step {k}: shown by an earlier restart, lost")),
                Slot::Sent if exact => s.fail(format!("{what}: w{i} step {k}: a write to a live server failed")),
                Slot::Sent if present => {
                    *slot = Slot::Survived;
                    t.survived += 1;
                }
                Slot::Sent => {}
            }
            if *slot != Slot::Acked {
                t.unacked += 1;
            }
        }
    }
    s.assert_no_failures(what);
    t
}

fn config(dir: &Path, port: u16) -> PathBuf {
    let data = dir.join("data");
    let cfg = dir.join("config.json");
    let text = format!(
        r#"{{
  "main": {{ "addr": "127.0.0.1:{port}" }},
  "metrics": {{ "soak": {{ "frequency": {F}, "aggregation": "avg" }} }},
  "metric-store": {{ "retention-in-memory": "48h", "memory-cap": 0, "checkpoint-interval": "200ms",
                    "checkpoints": {{ "directory": "{}" }} }}
}}"#,
        data.display()
    );
    std::fs::write(&cfg, text).expect("write config");
    cfg
}

/// `silt serve` on the config, with `--durability $SILT_SOAK_DURABILITY` when that is set (`100ms`: the
/// acknowledgement comes once the WAL record is written to the OS, which a SIGKILL does not undo).
fn args(cfg: &Path) -> Vec<&std::ffi::OsStr> {
    let mut args: Vec<&std::ffi::OsStr> = vec!["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()];
    if let Some(d) = DURABILITY.get_or_init(|| std::env::var_os("SILT_SOAK_DURABILITY")) {
        args.extend(["--durability".as_ref(), d.as_os_str()]);
    }
    args
}

static DURABILITY: std::sync::OnceLock<Option<std::ffi::OsString>> = std::sync::OnceLock::new();

fn start(cfg: &Path) -> Server {
    spawn_silt(&args(cfg))
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")))
}

/// A fresh data directory with its config, a server started on it, and the soak's shared state (the
/// directory lives as long as the returned `TempDir`).
fn boot() -> (tempfile::TempDir, PathBuf, Server, Soak) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(tmp.path(), free_port());
    let srv = start(&cfg);
    let soak = Soak::new(srv.addr);
    (tmp, cfg, srv, soak)
}

fn seed() -> u64 {
    std::env::var("SILT_SOAK_SEED").ok().map_or_else(
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64,
        |v| v.parse().unwrap_or_else(|_| panic!("SILT_SOAK_SEED={v}: not a number")),
    )
}

/// Stops the server with SIGTERM and checks that it exits 0.
fn stop_gracefully(srv: &mut Server) {
    signal(&srv.child, "TERM");
    let status = srv.child.wait().expect("wait");
    assert!(status.success(), "silt serve exited with {status} on SIGTERM");
}

/// Lets the writers run until each got `batches` more acknowledgements, then pauses them.
fn write_some(s: &Soak, batches: usize) {
    let before = s.acked();
    s.resume();
    let progressed = eventually(60, || s.acked().iter().zip(&before).all(|(now, was)| *now >= was + batches * BATCH));
    s.pause();
    s.assert_no_failures("writing");
    assert!(progressed, "the writers got no acknowledgement in 60 s (acked {:?}, before {before:?})", s.acked());
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_sample() {
    let cycles = env_or("SILT_SOAK_CYCLES", 20);
    let seed = seed();
    let durability =
        std::env::var("SILT_SOAK_DURABILITY").map_or(String::new(), |d| format!(" SILT_SOAK_DURABILITY={d}"));
    eprintln!("crash soak: seed {seed} (SILT_SOAK_SEED={seed} SILT_SOAK_CYCLES={cycles}{durability} repeats this run)");
    let started = Instant::now();
    let (tmp, cfg, mut srv, soak) = boot();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut early_kills = 0;
    let last = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&soak);
        spawn_load(scope, &soak, &mut rng);
        for cycle in 0..cycles {
            // Half the kills come early (WAL appends, checkpoints, the start-up's last steps), half after the
            // maintenance pass (every second) has had a chance to move pages into blocks.
            let kill_ms = if rng.gen() { rng.gen_range(50..=400) } else { rng.gen_range(1_000..=2_500) };
            soak.resume();
            std::thread::sleep(Duration::from_millis(kill_ms));
            signal(&srv.child, "KILL");
            let _ = srv.child.wait();
            soak.pause();
            let restart = Instant::now();
            // A third of the time, a first restart is killed too, within its start-up (recovery).
            if rng.gen_ratio(1, 3) {
                let mut early = spawn_silt_unwaited(&args(&cfg));
                std::thread::sleep(Duration::from_millis(rng.gen_range(0..=100)));
                signal(&early, "KILL");
                let _ = early.wait();
                early_kills += 1;
            }
            srv = start(&cfg);
            let v = verify(&soak, &format!("after SIGKILL {} ({kill_ms} ms)", cycle + 1), false);
            eprintln!(
                "cycle {}: killed {kill_ms} ms after resuming, restarted and read back in {:.2} s, {} acked and {} survived of {} unacked",
                cycle + 1,
                restart.elapsed().as_secs_f64(),
                v.acked,
                v.survived,
                v.unacked
            );
        }
        // A last stretch with the server up, until the maintenance pass has moved pages into blocks (so the
        // last read-back reads blocks too), then a graceful stop and restart over the crashed history.
        write_some(&soak, 2);
        let blocks = tmp.path().join("data/blocks");
        let block_files = || std::fs::read_dir(&blocks).map_or(0, |d| d.count());
        assert!(eventually(30, || block_files() > 0), "no page left the head for a block in 30 s");
        stop_gracefully(&mut srv);
        srv = start(&cfg);
        verify(&soak, "at the end", false)
    });
    let acked: usize = soak.acked().iter().sum();
    let answers = soak.answers.load(Ordering::Relaxed);
    assert_eq!(last.acked, acked, "verified is not acknowledged");
    assert!(acked > 0 && answers > 0, "nothing was acknowledged ({acked}) or answered ({answers})");
    eprintln!(
        "crash soak: {cycles} SIGKILL cycles (+{early_kills} during start-up), {acked} samples acknowledged, {} \
         verified ({} of {} unacknowledged samples survived), {answers} reader answers checked, {:.1} s, seed {seed}",
        last.acked,
        last.survived,
        last.unacked,
        started.elapsed().as_secs_f64()
    );
    stop_gracefully(&mut srv);
}

#[test]
fn sigterm_with_writers_paused_keeps_exactly_what_was_acknowledged() {
    let restarts = (env_or("SILT_SOAK_CYCLES", 20) / 4).max(3);
    let seed = seed();
    eprintln!("graceful soak: seed {seed} (SILT_SOAK_SEED={seed} repeats this run)");
    let started = Instant::now();
    let (_tmp, cfg, mut srv, soak) = boot();
    let mut rng = StdRng::seed_from_u64(seed);
    let last = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&soak);
        spawn_load(scope, &soak, &mut rng);
        let mut last = Verified::default();
        for r in 0..restarts {
            write_some(&soak, rng.gen_range(10..=300));
            let ends: Vec<usize> = soak.logs.iter().map(|l| lock(l).slots.len()).collect();
            stop_gracefully(&mut srv);
            srv = start(&cfg);
            last = verify(&soak, &format!("after SIGTERM {}", r + 1), true);
            // `verify` saw each series' last batch before the pause; say so where a reader of this test looks.
            assert_eq!(last.acked, ends.iter().sum::<usize>(), "samples acknowledged before the pause");
        }
        last
    });
    let acked: usize = soak.acked().iter().sum();
    assert_eq!((last.acked, last.unacked), (acked, 0));
    eprintln!(
        "graceful soak: {restarts} SIGTERM restarts, {acked} samples acknowledged, {} verified, {:.1} s",
        last.acked,
        started.elapsed().as_secs_f64()
    );
    stop_gracefully(&mut srv);
}

/// Starts the writers and the readers of `soak` in `scope`.
fn spawn_load<'scope>(scope: &'scope std::thread::Scope<'scope, '_>, soak: &'scope Soak, rng: &mut StdRng) {
    for i in 0..WRITERS {
        scope.spawn(move || writer(soak, i));
    }
    for _ in 0..READERS {
        let seed = rng.gen();
        scope.spawn(move || reader(soak, seed));
    }
}
