//! The built `silt serve` on a real file system that fills up: a small tmpfs mounted for the test (root, or
//! `CAP_SYS_ADMIN`, is needed; without it each test says so loudly and returns). A ballast file takes every
//! free byte, so the next file the server needs (a head file, a WAL segment, a block) meets `ENOSPC`.
//!
//! Checked, against a model of every sample a 200 acknowledged: a write that needs room the disk has not is
//! refused with 507 (or 503), a JSON body `{"status", "error"}` and `Retry-After`; the process stays up
//! and queries answer 200 with exactly the acknowledged values; once the ballast is gone, the same write is
//! accepted; after a SIGTERM and a restart on the same directory every acknowledged sample is there with
//! its value. Head files are memory-mapped: a store into a page the file system never allocated would be a
//! SIGBUS on a full tmpfs, so the server staying up while the disk is full is part of what is checked.
//!
//! The tmpfs is unmounted when the test ends, also by a panic (the server is killed first).

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, free_port, signal, Server};

const F: i64 = 10;
/// Size of the tmpfs: two 16 MiB head files and two 16 MiB WAL segments (a checkpoint starts the next before
/// it drops the old one) fit, with room to spare for the ballast to take.
const TMPFS_MIB: u64 = 72;

/// A tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB on `dir`; `None` (after saying why) where mounting is not allowed.
    fn mount(dir: &Path, mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        if !out.status.success() {
            eprintln!(
                "\n**********************************************************************\n\
                 SKIPPED: cannot mount a tmpfs on {} ({}): this test needs root or CAP_SYS_ADMIN.\n\
                 **********************************************************************\n",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs { dir: dir.to_owned() })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: detached at once even if something still has a file open in it.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A running server, killed (and waited for) on drop unless it was stopped, with what it logged.
struct Running(Option<Server>, Arc<Mutex<Vec<String>>>);

impl Running {
    fn addr(&self) -> SocketAddr {
        self.0.as_ref().expect("server").addr
    }

    fn log(&self) -> Vec<String> {
        self.1.lock().expect("log").clone()
    }

    /// Whether a logged line holds every one of `words`.
    fn logged(&self, words: &[&str]) -> bool {
        self.log().iter().any(|l| words.iter().all(|w| l.contains(w)))
    }

    fn assert_alive(&mut self, when: &str) {
        let srv = self.0.as_mut().expect("server");
        if let Some(status) = srv.child.try_wait().expect("try_wait") {
            panic!("{when}: silt serve died: {status}");
        }
    }

    /// SIGTERM; returns whether it exited 0.
    fn stop(&mut self) -> bool {
        let mut srv = self.0.take().expect("server");
        signal(&srv.child, "TERM");
        let status = srv.child.wait().expect("wait");
        status.success()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(srv) = &mut self.0 {
            let _ = srv.child.kill();
            let _ = srv.child.wait();
        }
    }
}

/// A file in the tmpfs that takes its free space.
struct Ballast(PathBuf);

impl Ballast {
    /// Appends zeros until the file system is full; returns the bytes added.
    fn fill(&self) -> u64 {
        let mut f = OpenOptions::new().create(true).append(true).open(&self.0).expect("open ballast");
        let chunk = vec![0u8; 64 << 10];
        let mut added = 0;
        for size in [64 << 10, 4096] {
            loop {
                match f.write(&chunk[..size]) {
                    Ok(0) => break,
                    Ok(n) => added += n as u64,
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => panic!("ballast: {e}"),
                }
            }
        }
        added
    }

    fn remove(&self) {
        std::fs::remove_file(&self.0).expect("remove ballast");
    }
}

/// One HTTP exchange: status, the `Retry-After` header if any, body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Option<String>, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read");
    let resp = String::from_utf8_lossy(&resp);
    let (head, body) = resp.split_once("\r\n\r\n").expect("a response head");
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status");
    let retry = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("retry-after").then(|| value.trim().to_owned())
    });
    (status, retry, body.to_owned())
}

/// Every sample acknowledged: host → timestamp → value.
#[derive(Default)]
struct Model(BTreeMap<u32, BTreeMap<i64, f64>>);

impl Model {
    fn samples(&self) -> usize {
        self.0.values().map(BTreeMap::len).sum()
    }
}

/// Line protocol for `samples` (host, ts, value) of metric `m` in cluster `c`.
fn lines(samples: &[(u32, i64, f64)]) -> String {
    samples.iter().map(|(h, ts, v)| format!("m,cluster=c,hostname=h{h} value={v} {ts}\n")).collect()
}

/// Writes `samples`; on a 200 adds them to the model. Returns the status, `Retry-After` and body.
fn write(addr: SocketAddr, model: &mut Model, samples: &[(u32, i64, f64)]) -> (u16, Option<String>, String) {
    let r = http(addr, "POST", "/api/write", &lines(samples));
    if r.0 == 200 {
        for &(h, ts, v) in samples {
            model.0.entry(h).or_default().insert(ts, v);
        }
    }
    r
}

/// Checks that a refusal is a 507 or 503 with `Retry-After` and a JSON body naming the problem.
fn assert_refusal(r: &(u16, Option<String>, String)) {
    assert!(r.0 == 507 || r.0 == 503, "expected 507 or 503, got {} {}", r.0, r.2);
    assert!(r.1.is_some(), "no Retry-After on a {}", r.0);
    let v: serde_json::Value = serde_json::from_str(&r.2).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.2));
    assert!(v["status"].is_string() && v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
}

/// Reads every host of the model back (100 queries a request) and compares each value the model holds; a
/// value the model lacks must not be there either. Returns the samples compared.
fn verify(addr: SocketAddr, model: &Model, what: &str) -> usize {
    let (Some(lo), Some(hi)) = (
        model.0.values().filter_map(|s| s.keys().next()).min(),
        model.0.values().filter_map(|s| s.keys().next_back()).max(),
    ) else {
        return 0;
    };
    let (from, to) = (*lo, hi + F);
    let hosts: Vec<u32> = model.0.keys().copied().collect();
    let mut checked = 0;
    for part in hosts.chunks(100) {
        let queries: Vec<String> = part.iter().map(|h| format!(r#"{{"metric":"m","host":"h{h}"}}"#)).collect();
        let q = format!(r#"{{"cluster":"c","from":{from},"to":{to},"queries":[{}]}}"#, queries.join(","));
        let (status, _, body) = http(addr, "POST", "/api/query", &q);
        assert_eq!(status, 200, "{what}: query: {body:.500}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("query JSON");
        let results = v["results"].as_array().expect("results");
        assert_eq!(results.len(), part.len(), "{what}: {body:.300}");
        for (h, res) in part.iter().zip(results) {
            let want = &model.0[h];
            let r = res.as_array().and_then(|r| r.first()).unwrap_or_else(|| panic!("{what}: h{h}: no series: {res}"));
            let (rfrom, res_s) = (r["from"].as_i64().expect("from"), r["resolution"].as_i64().expect("resolution"));
            assert_eq!(res_s, F, "{what}: h{h}");
            let mut got = BTreeMap::new();
            for (j, d) in r["data"].as_array().expect("data").iter().enumerate() {
                if !d.is_null() {
                    got.insert(rfrom + j as i64 * F, d.as_f64().expect("a number"));
                }
            }
            for (&ts, &v) in want {
                // The API's times are nominal: a sample at `ts` shows at `ts` (written on the grid).
                assert_eq!(got.get(&ts), Some(&v), "{what}: h{h} at {ts}: acknowledged {v}; answer {r}");
            }
            assert_eq!(got.len(), want.len(), "{what}: h{h}: values that were never acknowledged");
            checked += want.len();
        }
    }
    checked
}

/// The config: metric `m` every `F` s, the data directory in the tmpfs, pages of 512 values (4 KiB; 4,095 to
/// a 16 MiB head file).
fn config(dir: &Path, data: &Path, port: u16, retention: &str, checkpoint: &str) -> PathBuf {
    let cfg = dir.join("config.json");
    let text = format!(
        r#"{{
  "main": {{ "addr": "127.0.0.1:{port}" }},
  "metrics": {{ "m": {{ "frequency": {F}, "aggregation": "avg" }} }},
  "metric-store": {{ "retention-in-memory": "{retention}", "memory-cap": 0, "checkpoint-interval": "{checkpoint}",
                    "page-slots": 512,
                    "checkpoints": {{ "directory": "{}" }} }}
}}"#,
        data.display()
    );
    std::fs::write(&cfg, text).expect("write config");
    cfg
}

/// Starts `silt serve` on the config and waits for its address; its log lines are kept.
fn start(cfg: &Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_silt"))
        .args(["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn silt serve");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) =
                line.split("addr=").nth(1).and_then(|r| r.split_whitespace().next()?.parse::<SocketAddr>().ok())
            {
                let _ = tx.send(a);
            }
            lines.lock().expect("log").push(line);
        }
    });
    let mut running = Running(None, log);
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => running.0 = Some(Server { child, addr }),
        Err(e) => {
            let _ = child.kill();
            panic!("no address from silt serve ({e}):\n{}", running.log().join("\n"));
        }
    }
    running
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// Files in `dir` (none if it does not exist).
fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).map_or_else(
        |_| Vec::new(),
        |d| d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect(),
    )
}

/// Each batch brings 200 new hosts, one sample each: a page each, so the head file fills (4,095 pages of 4 KiB
/// in the server's 16 MiB head files) and the server needs a second one, which the full disk refuses.
/// Meanwhile the server checkpoints every 300 ms, which needs a new WAL segment the disk has no room for
/// either. Writes that need no new page go on; a restart on the full disk serves what was acknowledged.
#[test]
fn a_full_tmpfs_refuses_the_write_that_needs_a_new_head_file_and_writing_resumes_when_space_returns() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(fs) = Tmpfs::mount(&tmp.path().join("mnt"), TMPFS_MIB) else { return };
    let data = fs.dir.join("data");
    let cfg = config(tmp.path(), &data, free_port(), "48h", "300ms");
    let mut srv = start(&cfg);
    let addr = srv.addr();
    let t0 = (now() - 3_600) / F * F;
    let value = |h: u32, step: i64| f64::from(h) * 1000.0 + step as f64 + 0.25;
    let mut model = Model::default();
    // The head file exists once something is written; then the ballast takes every byte left.
    let r = write(addr, &mut model, &[(0, t0, value(0, 0))]);
    assert_eq!(r.0, 200, "{}", r.2);
    let ballast = Ballast(fs.dir.join("ballast"));
    let filled = ballast.fill();
    eprintln!("ballast: {} MiB", filled >> 20);
    let mut next_host = 1u32;
    let mut batches = 0;
    let refused = loop {
        assert!(next_host < 10_000, "4,095 pages never filled the head file");
        ballast.fill(); // what a finished checkpoint freed (an old WAL segment) is taken again
        let batch: Vec<(u32, i64, f64)> = (next_host..next_host + 200).map(|h| (h, t0, value(h, 0))).collect();
        let r = write(addr, &mut model, &batch);
        if r.0 != 200 {
            break (r, batch);
        }
        next_host += 200;
        batches += 1;
    };
    let (r, batch) = refused;
    assert_refusal(&r);
    assert_eq!(r.0, 507, "a full disk is 507: {}", r.2);
    assert!(r.2.contains("No space left") || r.2.contains("full"), "{}", r.2);
    srv.assert_alive("after the refusal");
    assert!(!files_in(&data.join("head")).iter().any(|f| f == "000001.pages"), "a half-made head file is left");
    eprintln!("refused after {batches} batches ({} hosts): {} {}", next_host, r.0, r.2.trim());
    // Samples that land in pages the head has need no room: accepted, also while the disk is full.
    let more: Vec<(u32, i64, f64)> = (0..next_host).step_by(7).map(|h| (h, t0 + F, value(h, 1))).collect();
    let r2 = write(addr, &mut model, &more);
    assert_eq!(r2.0, 200, "a write into existing pages on a full disk: {}", r2.2);
    // The same write again, still no room: refused again, nothing of it stored.
    assert_refusal(&write(addr, &mut model, &batch));
    std::thread::sleep(Duration::from_millis(700)); // two checkpoint intervals, on a full disk
    srv.assert_alive("after checkpoints on the full disk");
    assert!(srv.logged(&["checkpoint not started", "No space left"]), "{}", srv.log().join("\n"));
    let n = verify(addr, &model, "on the full disk");
    assert_eq!(n, model.samples());

    // A stop and a restart while the disk is still full: the final checkpoint may fail (it needs a new WAL
    // segment); recovery replays the WAL. Everything acknowledged is served.
    let clean = srv.stop();
    eprintln!("SIGTERM on the full disk: exit {}", if clean { "0" } else { "non-zero" });
    let mut srv = start(&cfg);
    let addr = srv.addr();
    assert_eq!(verify(addr, &model, "restarted on the full disk"), model.samples());
    assert_refusal(&write(addr, &mut model, &batch));

    // Space returns: the same write is accepted, and writing goes on.
    ballast.remove();
    let r = write(addr, &mut model, &batch);
    assert_eq!(r.0, 200, "after space returned: {}", r.2);
    assert!(files_in(&data.join("head")).iter().any(|f| f == "000001.pages"));
    for k in 0..5u32 {
        let h0 = next_host + 200 + k * 200;
        let batch: Vec<(u32, i64, f64)> = (h0..h0 + 200).map(|h| (h, t0 + 2 * F, value(h, 2))).collect();
        let r = write(addr, &mut model, &batch);
        assert_eq!(r.0, 200, "{}", r.2);
    }
    assert_eq!(verify(addr, &model, "after space returned"), model.samples());
    assert!(srv.stop(), "SIGTERM with room: exit 0");
    let mut srv = start(&cfg);
    let n = verify(srv.addr(), &model, "after the restart");
    assert_eq!(n, model.samples());
    srv.assert_alive("at the end");
    assert!(srv.stop());
    eprintln!(
        "tmpfs head file: {n} samples of {} hosts verified after the restart, {:.1} s",
        model.0.len(),
        started.elapsed().as_secs_f64()
    );
    drop(fs);
}

/// 200 hosts, 500 steps each per request: the head has room for every page, so the WAL's 16 MiB segment
/// fills first and its next segment meets the full disk (the server checkpoints once an hour only, so every
/// record stays in the WAL). The refusal is a 507; once the ballast is gone the same write goes through.
#[test]
fn a_full_tmpfs_refuses_the_write_that_needs_a_new_wal_segment_and_writing_resumes_when_space_returns() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(fs) = Tmpfs::mount(&tmp.path().join("mnt"), TMPFS_MIB) else { return };
    let data = fs.dir.join("data");
    let cfg = config(tmp.path(), &data, free_port(), "48h", "1h");
    let mut srv = start(&cfg);
    let addr = srv.addr();
    const HOSTS: u32 = 200;
    const STEPS: i64 = 500;
    let t0 = (now() - 40 * 3_600) / F * F;
    let value = |h: u32, step: i64| f64::from(h) * 1e6 + step as f64 + 0.5;
    let batch = |k: i64| -> Vec<(u32, i64, f64)> {
        (k * STEPS..(k + 1) * STEPS).flat_map(|i| (0..HOSTS).map(move |h| (h, t0 + i * F, value(h, i)))).collect()
    };
    let mut model = Model::default();
    let r = write(addr, &mut model, &batch(0));
    assert_eq!(r.0, 200, "{}", r.2);
    let ballast = Ballast(fs.dir.join("ballast"));
    ballast.fill();
    let mut k = 1;
    let refused = loop {
        assert!(k < 60, "the WAL segment never filled");
        let r = write(addr, &mut model, &batch(k));
        if r.0 != 200 {
            break r;
        }
        k += 1;
    };
    assert_refusal(&refused);
    assert_eq!(refused.0, 507, "{}", refused.2);
    assert!(refused.2.contains(".wal"), "the refusal names the segment: {}", refused.2);
    srv.assert_alive("after the refusal");
    eprintln!("WAL full after {k} requests of {} samples: {}", HOSTS as i64 * STEPS, refused.2.trim());
    assert_eq!(verify(addr, &model, "on the full disk"), model.samples());
    ballast.remove();
    let r = write(addr, &mut model, &batch(k));
    assert_eq!(r.0, 200, "after space returned: {}", r.2);
    assert_eq!(verify(addr, &model, "after space returned"), model.samples());
    assert!(srv.stop(), "SIGTERM: exit 0");
    let mut srv = start(&cfg);
    let n = verify(srv.addr(), &model, "after the restart");
    assert_eq!(n, model.samples());
    assert!(srv.stop());
    eprintln!("tmpfs WAL: {n} samples verified after the restart, {:.1} s", started.elapsed().as_secs_f64());
    drop(fs);
}

/// Data 30 days old, behind the 48 h retention: the maintenance pass (every second) compacts its full pages
/// into a block, which the full disk refuses. The pages stay in the head, readable, and the server stays
/// writable; once there is room the next pass writes the block, and a restart finds everything.
#[test]
fn a_compaction_on_a_full_tmpfs_keeps_the_pages_in_the_head_and_completes_when_space_returns() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(fs) = Tmpfs::mount(&tmp.path().join("mnt"), TMPFS_MIB) else { return };
    let data = fs.dir.join("data");
    let blocks = data.join("blocks");
    let cfg = config(tmp.path(), &data, free_port(), "48h", "1h");
    let mut srv = start(&cfg);
    let addr = srv.addr();
    const HOSTS: u32 = 20;
    const STEPS: i64 = 3 * 512 + 10;
    let t0 = (now() - 30 * 86_400) / 3_600 * 3_600;
    let value = |h: u32, step: i64| f64::from(h) * 1e5 + step as f64 + 0.125;
    let mut model = Model::default();
    let r = write(addr, &mut model, &[(0, t0, value(0, 0))]);
    assert_eq!(r.0, 200, "{}", r.2);
    let ballast = Ballast(fs.dir.join("ballast"));
    ballast.fill();
    for first in (0..STEPS).step_by(100) {
        let samples: Vec<(u32, i64, f64)> = (first..(first + 100).min(STEPS))
            .flat_map(|i| (0..HOSTS).map(move |h| (h, t0 + i * F, value(h, i))))
            .collect();
        let r = write(addr, &mut model, &samples);
        assert_eq!(r.0, 200, "steps from {first} on a full disk, into the head file's free pages: {}", r.2);
    }
    // Several maintenance passes try to compact the pages behind the retention.
    std::thread::sleep(Duration::from_millis(3_500));
    srv.assert_alive("after compactions on the full disk");
    assert_eq!(files_in(&blocks), Vec::<String>::new(), "a block (or its temporary) on the full disk");
    assert!(
        srv.logged(&["retention", "write block", "No space left"]),
        "no compaction met the full disk:\n{}",
        srv.log().join("\n")
    );
    assert_eq!(verify(addr, &model, "compaction refused"), model.samples());
    // Still writable: the newest page of each host (not full, so not compacted) takes more.
    let more: Vec<(u32, i64, f64)> = (0..HOSTS).map(|h| (h, t0 + STEPS * F, value(h, STEPS))).collect();
    let r = write(addr, &mut model, &more);
    assert_eq!(r.0, 200, "{}", r.2);
    // Room again: a pass writes the block.
    ballast.remove();
    assert!(eventually(15, || files_in(&blocks).iter().any(|f| !f.ends_with(".tmp"))), "no block in 15 s");
    srv.assert_alive("after the compaction");
    assert_eq!(verify(addr, &model, "compacted"), model.samples());
    assert!(srv.stop(), "SIGTERM: exit 0");
    let mut srv = start(&cfg);
    let n = verify(srv.addr(), &model, "after the restart");
    assert_eq!(n, model.samples());
    assert!(!files_in(&blocks).is_empty());
    assert!(srv.stop());
    eprintln!(
        "tmpfs compaction: {n} samples verified after the restart ({:?} blocks), {:.1} s",
        files_in(&blocks),
        started.elapsed().as_secs_f64()
    );
    drop(fs);
}
