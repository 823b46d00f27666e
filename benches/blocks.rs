//! Blocks: bytes per sample on disk for cc-metric-store's workload, compaction throughput, and reading one
//! series over 30 days from blocks (a bench binary, not criterion: each figure is one long run).
//!
//! Workload (cc-metric-store's test shape, per host): 128 hwthreads x 10 metrics + 5 node metrics at 60 s:
//! hwthread loads and ratios with 2-3 decimals (random walks), clocks (mostly constant), counters
//! (monotonic integers), constant series, and 1 % gaps. Written through the Rust API, then compacted into
//! blocks in one go; the bytes are the blocks' total size. Printed next to the same data as raw f64 (8 B)
//! and as cc-metric-store's binary snapshot (float32, 4 B).
//!
//! Run: `cargo bench --bench blocks` (4 hosts x 1 day = 7.4 M samples; one series x 30 days). Under
//! `cargo test` it runs 1 host x 2 hours.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use silt::{Aggregation, Batch, Db, Durability, HostKey, Key, MetricConfig, Options, Selector};

const T: i64 = 1_700_000_000;
const F: i64 = 60;
const HW: [&str; 10] =
    ["cpu_load", "cpu_user", "flops_any", "flops_dp", "flops_sp", "ipc", "clock", "cpu_power", "mem_bw", "vec_ratio"];
const NODE: [&str; 5] = ["mem_used", "net_bytes_in", "net_bytes_out", "ib_recv", "mem_total"];

/// One series' values: a kind of metric, as collectors report it.
fn series(kind: &str, steps: usize, rng: &mut rand::rngs::StdRng) -> Vec<f64> {
    let mut out = Vec::with_capacity(steps);
    let mut x: f64 = rng.gen_range(0.0..1.0);
    let mut counter: f64 = rng.gen_range(1e6..1e9f64).round();
    for _ in 0..steps {
        let v = match kind {
            "clock" => {
                if rng.gen_bool(0.02) {
                    x = [1200.0, 2400.0, 3000.0][rng.gen_range(0..3)];
                }
                if x < 1000.0 {
                    x = 2400.0;
                }
                x
            }
            "mem_total" => 256e9,
            "net_bytes_in" | "net_bytes_out" | "ib_recv" => {
                counter += rng.gen_range(0.0..1e6f64).round();
                counter
            }
            "mem_used" => {
                x = (x + rng.gen_range(-0.01..0.01)).clamp(0.0, 1.0);
                (x * 256e9 / 4096.0).round() * 4096.0
            }
            "cpu_power" => (rng.gen_range(50.0..250.0f64) * 10.0).round() / 10.0,
            _ => {
                x = (x + rng.gen_range(-0.05..0.05)).clamp(0.0, 2.0);
                (x * 1000.0).round() / 1000.0
            }
        };
        out.push(if rng.gen_bool(0.01) { f64::NAN } else { v });
    }
    out
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (hosts, steps, days) = if full { (4, 1440usize, 30usize) } else { (1, 120, 2) };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let tmp = tempfile::tempdir().expect("tempdir");
    let db =
        Db::open(tmp.path(), Options { durability: Durability::None, checkpoint_interval: None, ..Options::default() })
            .expect("open");
    for m in HW.iter().chain(&NODE) {
        db.declare_metric(m, MetricConfig { frequency: F, aggregation: Aggregation::Sum }).expect("declare");
    }
    let mut samples = 0u64;
    for h in 0..hosts {
        let node = HostKey::new("bench", &format!("n{h:04}")).expect("key");
        let mut b = Batch::new();
        for t in 0..128 {
            let key = node.clone().component("hwthread", t).expect("key");
            for m in HW {
                for (i, v) in series(m, steps, &mut rng).into_iter().enumerate() {
                    if !v.is_nan() {
                        b.push(&key, m, T + i as i64 * F, v);
                        samples += 1;
                    }
                }
            }
        }
        for m in NODE {
            for (i, v) in series(m, steps, &mut rng).into_iter().enumerate() {
                if !v.is_nan() {
                    b.push(&node, m, T + i as i64 * F, v);
                    samples += 1;
                }
            }
        }
        db.write(&b).expect("write");
    }
    // Everything into blocks: pages end at the grid origin + 512 steps; compact well past the last.
    let end = T + (steps as i64 + 1024) * F;
    let all = Selector::new(silt::keys::Namespace::Host, vec![silt::SelectorElement::Name("bench".into())])
        .expect("selector");
    let t0 = Instant::now();
    let pages = db.compact_selector(&all, end).expect("compact");
    let secs = t0.elapsed().as_secs_f64();
    let bytes = dir_bytes(&tmp.path().join("blocks"));
    println!(
        "blocks size: {samples} samples ({hosts} hosts x {steps} steps) in {bytes} bytes of blocks: {:.3} B/sample \
         (raw f64 8.000, cc-metric-store binary snapshot 4.000; {:.1}x smaller than the snapshot)",
        bytes as f64 / samples as f64,
        4.0 * samples as f64 / bytes as f64
    );
    println!(
        "blocks compaction: {pages} pages in {secs:.3} s: {:.2} M samples/s (one compaction, single writer)",
        samples as f64 / secs / 1e6
    );

    // One series over 30 days, read back from blocks.
    let key = HostKey::new("bench", "long").expect("key");
    let n = days * 1440;
    let values = series("cpu_load", n, &mut rng);
    let mut b = Batch::new();
    for (i, v) in values.iter().enumerate() {
        b.push(&key, "cpu_load", T + i as i64 * F, *v);
    }
    db.write(&b).expect("write");
    let end = T + (n as i64 + 1024) * F;
    db.compact_selector(&Selector::exact(&key.path()), end).expect("compact");
    let runs = if full { 200 } else { 5 };
    let mut took = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let r = db.read(&key, "cpu_load", T, T + n as i64 * F).expect("read");
        took.push(t.elapsed().as_secs_f64());
        assert_eq!(r.values.len(), n);
    }
    took.sort_by(f64::total_cmp);
    let med = took[took.len() / 2];
    println!(
        "blocks read: one series over {days} days ({n} values) from blocks: median {:.3} ms, {:.1} M values/s",
        med * 1e3,
        n as f64 / med / 1e6
    );
}
