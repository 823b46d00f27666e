//! A real process is killed with SIGKILL at random moments while it writes with fsync acknowledgements; the
//! parent reopens the directory and checks every acknowledged sample against the acks the child printed.
//!
//! The child is this same test binary, run with `SILT_SIGKILL_CHILD` set (see `child_writer`). The number of
//! kill cycles comes from `SILT_KILL_CYCLES` (default 8).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use silt::{Aggregation, Batch, Db, Durability, HostKey, MetricConfig, Options};

const T: i64 = 1_600_000_000;
const F: i64 = 10;
const HOSTS: u32 = 20;

fn options() -> Options {
    Options {
        durability: Durability::Sync,
        segment_size: 256 << 10,
        pages_per_file: 64,
        checkpoint_interval: None,
        ..Options::default()
    }
}

fn key(h: u32) -> HostKey {
    HostKey::new("kill", &format!("n{h:03}")).expect("key")
}

fn value(step: i64, h: u32) -> f64 {
    step as f64 * 1000.0 + f64::from(h) + 0.25
}

/// The child: writes step after step (one sample per host per step), printing `ack <step>` once the write
/// is acknowledged under fsync durability, and checkpointing every 40 steps. Runs until killed.
#[test]
#[ignore = "run by crash_sigkill_cycles as a child process"]
fn child_writer() {
    let Ok(dir) = std::env::var("SILT_SIGKILL_CHILD") else { return };
    let start: i64 = std::env::var("SILT_START").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let db = Db::open(&dir, options()).expect("child open");
    db.declare_metric("load", MetricConfig { frequency: F, aggregation: Aggregation::Avg }).expect("declare");
    println!("SILT-READY");
    for step in start.. {
        let mut b = Batch::new();
        for h in 0..HOSTS {
            b.push(&key(h), "load", T + step * F, value(step, h));
        }
        let ack = db.write(&b).expect("child write");
        assert_eq!(ack.durability, Durability::Sync);
        println!("ack {step}");
        if step % 40 == 39 {
            db.checkpoint().expect("child checkpoint");
        }
    }
}

/// Checks the directory against the acks: every step up to `acked` is there exactly; nothing past
/// `acked + 1` (the write that may have been in flight) exists. Returns the last step present.
fn verify(dir: &Path, acked: i64) -> i64 {
    let db = Db::open(dir, options()).expect("reopen after SIGKILL");
    let mut last = -1;
    for h in 0..HOSTS {
        let r = db.read(&key(h), "load", T, T + (acked + 100) * F).expect("read");
        if acked >= 0 {
            assert_eq!(r.from, T, "host {h}: data starts at {} not {T}", r.from);
        }
        for (i, v) in r.values.iter().enumerate() {
            let step = i as i64;
            if step <= acked {
                assert_eq!(v.to_bits(), value(step, h).to_bits(), "host {h} step {step} (acked {acked}): {v}");
            } else if !v.is_nan() {
                assert!(step == acked + 1, "host {h}: step {step} present but only {acked} acked and one in flight");
                assert_eq!(*v, value(step, h));
                last = last.max(step);
            }
        }
        last = last.max(acked);
    }
    db.close().expect("close");
    last
}

#[test]
fn crash_sigkill_cycles() {
    let cycles: u32 = std::env::var("SILT_KILL_CYCLES").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let seed: u64 = std::env::var("SILT_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5117);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let exe = std::env::current_exe().expect("current exe");
    let mut acked: i64 = -1;
    let mut total_acks = 0u64;
    for cycle in 0..cycles {
        let start = acked + 1;
        let mut child = Command::new(&exe)
            .args(["--exact", "child_writer", "--ignored", "--nocapture", "--test-threads=1"])
            .env("SILT_SIGKILL_CHILD", &dir)
            .env("SILT_START", start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let kill_after = Duration::from_millis(rng.gen_range(20..400));
        let (tx, rx) = std::sync::mpsc::channel::<i64>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("ack ") {
                    if let Ok(n) = n.trim().parse() {
                        let _ = tx.send(n);
                    }
                } else if line.ends_with("SILT-READY") {
                    let _ = tx.send(-1);
                }
            }
        });
        // Wait for the child to be ready, then let it write for a random while.
        let ready = rx.recv_timeout(Duration::from_secs(60)).expect("child never became ready");
        assert_eq!(ready, -1);
        let deadline = Instant::now() + kill_after;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(n) => {
                    assert_eq!(n, acked + 1, "acks out of order");
                    acked = n;
                    total_acks += 1;
                }
                Err(_) => break,
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        reader.join().expect("reader");
        // Acks printed before the kill but read after it still count.
        while let Ok(n) = rx.try_recv() {
            assert_eq!(n, acked + 1);
            acked = n;
            total_acks += 1;
        }
        let last = verify(&dir, acked);
        eprintln!("cycle {cycle}: killed after {kill_after:?}, acked through step {acked}, present through {last}");
        // The step that was in flight and did land counts as written: continue after it.
        acked = last;
    }
    assert!(total_acks > 0, "the child never acknowledged a write");
}
