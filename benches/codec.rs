//! Value codecs for compacted blocks (`silt::storage::codec`): bytes per sample on a synthetic
//! cc-metric-store workload, and encode/decode throughput on one core.
//!
//! Data shape: one node as in cc-metric-store's test shape, 10 hwthread metrics x 128 hwthreads + 5 node
//! metrics = 1,285 series at a fixed frequency (think 10 s), 8,192 samples each (about 23 h). Values:
//! - load-like (`cpu_load` in [0, 2], `cpu_user`/`cpu_idle`/`cpu_system` in [0, 1]): 2-3 decimals, a
//!   mean-reverting random walk around a level that jumps between "idle" and "busy" (a job starting or
//!   ending, about every 4 h);
//! - `ipc` (3 decimals), `flops_any`/`flops_dp` (GFLOP/s, 2 decimals), `mem_used` (GB, 2 decimals): the same
//!   walk at their own scale;
//! - `clock`: integer MHz, constant with an occasional change (2400.0, then 2000.0, ...);
//! - counters (`net_bytes_in`/`_out`, `ib_bytes`): monotonic integers (bytes) stored as f64, the rate itself
//!   a jumpy level with noise;
//! - constants: `cpu_iowait` and `flops_sp` at 0.0, `mem_total` at 527938092.0 (kB);
//! - gaps: every series has NaN runs of 1-4 samples starting with probability 0.4% per sample (~1% NaN).
//!
//! Every series is cut into chunks of 512 values (a head page) and of 4,096 values, each chunk encoded on
//! its own; the table gives bytes per sample (all samples, NaN included) per metric and for the node mix,
//! next to the reference points raw f64 (8 B/sample) and cc-metric-store's binary snapshot (float32,
//! 4 B/sample).
//! - `codec/<codec>/{encode,decode}/<chunk>`: throughput over the whole node (1,285 series x 4,096 samples
//!   in chunks of 512 or 4,096), one thread; criterion reports elements (samples) per second.
//!
//! Run: `cargo bench --bench codec`. Under `cargo test` every bench runs once on a small shape.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use silt::storage::codec::{decode, encode, Codec};

const CODECS: [(Codec, &str); 3] = [(Codec::Raw, "raw"), (Codec::Gorilla, "gorilla"), (Codec::Pco, "pco")];
const CHUNKS: [usize; 2] = [512, 4096];

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// How a metric's values move.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Mean-reverting walk in `[0, max]`, rounded to `decimals`; `busy` is the level range while a job runs
    /// (fractions of `max`), `idle` the level otherwise.
    Walk { max: f64, decimals: i32, busy: (f64, f64), idle: f64 },
    /// Integer MHz, constant with occasional changes.
    Clock,
    /// Monotonic byte counter.
    Counter,
    /// Always this value.
    Constant(f64),
}

struct Metric {
    name: &'static str,
    kind: Kind,
    /// Series per node: 128 for hwthread metrics, 1 for node metrics.
    per_node: usize,
}

const HWTHREADS: usize = 128;

fn metrics(hwthreads: usize) -> Vec<Metric> {
    let walk = |max, decimals, busy, idle| Kind::Walk { max, decimals, busy, idle };
    let hw = |name, kind| Metric { name, kind, per_node: hwthreads };
    let node = |name, kind| Metric { name, kind, per_node: 1 };
    vec![
        hw("cpu_load", walk(2.0, 2, (0.45, 0.55), 0.01)),
        hw("cpu_user", walk(1.0, 2, (0.85, 0.99), 0.01)),
        hw("cpu_system", walk(1.0, 3, (0.01, 0.05), 0.005)),
        hw("cpu_idle", walk(1.0, 2, (0.0, 0.1), 0.98)),
        hw("cpu_iowait", Kind::Constant(0.0)),
        hw("ipc", walk(4.0, 3, (0.1, 0.6), 0.1)),
        hw("flops_any", walk(60.0, 2, (0.05, 0.5), 0.0)),
        hw("flops_dp", walk(30.0, 2, (0.05, 0.5), 0.0)),
        hw("flops_sp", Kind::Constant(0.0)),
        hw("clock", Kind::Clock),
        node("mem_total", Kind::Constant(527_938_092.0)),
        node("mem_used", walk(512.0, 2, (0.1, 0.8), 0.02)),
        node("net_bytes_in", Kind::Counter),
        node("net_bytes_out", Kind::Counter),
        node("ib_bytes", Kind::Counter),
    ]
}

/// One series of `len` samples.
fn generate(kind: Kind, len: usize, rng: &mut StdRng) -> Vec<f64> {
    let switch = 1.0 / 1500.0; // a job boundary about every 4 h at 10 s
    let mut v = Vec::with_capacity(len);
    match kind {
        Kind::Walk { max, decimals, busy, idle } => {
            let scale = 10f64.powi(decimals);
            let level = |rng: &mut StdRng, busy_now: bool| {
                if busy_now {
                    max * rng.gen_range(busy.0..=busy.1)
                } else {
                    max * idle
                }
            };
            let mut busy_now = rng.gen_bool(0.7);
            let mut mean = level(rng, busy_now);
            let mut x = mean;
            for _ in 0..len {
                if rng.gen_bool(switch) {
                    busy_now = !busy_now;
                    mean = level(rng, busy_now);
                }
                let sigma = 0.02 * max.min(mean.abs() * 4.0 + max * 0.01);
                x += (mean - x) * 0.2 + sigma * (rng.gen::<f64>() + rng.gen::<f64>() - 1.0);
                x = x.clamp(0.0, max);
                v.push((x * scale).round() / scale);
            }
        }
        Kind::Clock => {
            const STEPS: [f64; 6] = [1500.0, 2000.0, 2200.0, 2400.0, 2600.0, 3000.0];
            let mut mhz = 2400.0;
            for _ in 0..len {
                if rng.gen_bool(0.002) {
                    mhz = STEPS[rng.gen_range(0..STEPS.len())];
                }
                v.push(mhz);
            }
        }
        Kind::Counter => {
            let mut total = rng.gen_range(1e9..1e13f64).round();
            let mut rate = 10f64.powf(rng.gen_range(3.0..8.0));
            for _ in 0..len {
                if rng.gen_bool(switch) {
                    rate = 10f64.powf(rng.gen_range(3.0..8.0));
                }
                total += (rate * 10.0 * rng.gen_range(0.5..1.5)).round();
                v.push(total);
            }
        }
        Kind::Constant(c) => v.resize(len, c),
    }
    // Gaps: NaN runs of 1-4 samples.
    let mut i = 0;
    while i < len {
        if rng.gen_bool(0.004) {
            let run = rng.gen_range(1..=4);
            for x in v.iter_mut().skip(i).take(run) {
                *x = f64::NAN;
            }
            i += run;
        }
        i += 1;
    }
    v
}

/// The node: every series of every metric, grouped by metric.
fn node(hwthreads: usize, len: usize) -> Vec<(Metric, Vec<Vec<f64>>)> {
    let mut rng = StdRng::seed_from_u64(42);
    metrics(hwthreads)
        .into_iter()
        .map(|m| {
            let series = (0..m.per_node).map(|_| generate(m.kind, len, &mut rng)).collect();
            (m, series)
        })
        .collect()
}

fn encoded_len(codec: Codec, series: &[f64], chunk: usize, buf: &mut Vec<u8>, check: &mut Vec<f64>) -> usize {
    let mut total = 0;
    for page in series.chunks(chunk) {
        buf.clear();
        encode(codec, page, buf);
        total += buf.len();
        // Every figure is of an encoding that decodes.
        check.clear();
        decode(codec, buf, page.len(), check).expect("decode");
        assert!(page.iter().zip(check.iter()).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())));
    }
    total
}

/// Prints bytes per sample per metric and for the node mix.
fn sizes(_c: &mut Criterion) {
    let (hwthreads, len) = if full_run() { (HWTHREADS, 8192) } else { (4, 4096) };
    let node = node(hwthreads, len);
    let cols: Vec<(Codec, &str, usize)> =
        CHUNKS.iter().flat_map(|&ch| CODECS[1..].iter().map(move |&(c, name)| (c, name, ch))).collect();
    println!();
    println!(
        "codec sizes: bytes/sample, {} series ({hwthreads} hwthreads x 10 + 5 node metrics) x {len} samples, chunks encoded alone",
        node.iter().map(|(m, _)| m.per_node).sum::<usize>()
    );
    print!("{:<14} {:>6}", "metric", "series");
    for (_, name, ch) in &cols {
        print!(" {:>12}", format!("{name}/{ch}"));
    }
    println!();
    let (mut buf, mut check) = (Vec::new(), Vec::new());
    let mut mix = vec![0usize; cols.len()];
    let mut samples = 0;
    for (m, series) in &node {
        print!("{:<14} {:>6}", m.name, series.len());
        let n: usize = series.iter().map(|s| s.len()).sum();
        samples += n;
        for (i, &(codec, _, ch)) in cols.iter().enumerate() {
            let bytes: usize = series.iter().map(|s| encoded_len(codec, s, ch, &mut buf, &mut check)).sum();
            mix[i] += bytes;
            print!(" {:>12.3}", bytes as f64 / n as f64);
        }
        println!();
    }
    print!("{:<14} {:>6}", "node mix", node.iter().map(|(_, s)| s.len()).sum::<usize>());
    for bytes in &mix {
        print!(" {:>12.3}", *bytes as f64 / samples as f64);
    }
    println!();
    println!("reference: raw f64 = 8.000 B/sample; cc-metric-store binary snapshot (float32) = 4.000 B/sample");
}

/// Encode and decode throughput per codec and chunk size, over the whole node.
fn throughput(c: &mut Criterion) {
    let (hwthreads, len) = if full_run() { (HWTHREADS, 4096) } else { (2, 1024) };
    let node = node(hwthreads, len);
    let series: Vec<&[f64]> = node.iter().flat_map(|(_, s)| s.iter().map(|v| v.as_slice())).collect();
    let samples: usize = series.iter().map(|s| s.len()).sum();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(samples as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(1));
    for (codec, name) in CODECS {
        for chunk in CHUNKS {
            let pages: Vec<&[f64]> = series.iter().flat_map(|s| s.chunks(chunk)).collect();
            let mut buf = Vec::new();
            g.bench_function(BenchmarkId::new(format!("{name}/encode"), chunk), |b| {
                b.iter(|| {
                    let mut total = 0;
                    for p in &pages {
                        buf.clear();
                        encode(codec, p, &mut buf);
                        total += buf.len();
                    }
                    total
                })
            });
            let encoded: Vec<(Vec<u8>, usize)> = pages
                .iter()
                .map(|p| {
                    let mut b = Vec::new();
                    encode(codec, p, &mut b);
                    (b, p.len())
                })
                .collect();
            let mut out = Vec::with_capacity(chunk);
            g.bench_function(BenchmarkId::new(format!("{name}/decode"), chunk), |b| {
                b.iter(|| {
                    for (bytes, n) in &encoded {
                        out.clear();
                        decode(codec, bytes, *n, &mut out).expect("decode");
                    }
                    out.len()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, sizes, throughput);
criterion_main!(benches);
