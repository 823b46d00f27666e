//! Query-layer benchmarks.
//!
//! Data shapes (metric at 60 s):
//! - `aggregate/host_128_hwthreads_7d`: one host, 128 hwthreads, 7 days (10,080 samples each, 1.29 M values);
//!   a host-level read sums the hwthreads step by step. Against `aggregate/plain_sum_7d`: the same number of
//!   f64 summed into one output array from contiguous memory.
//! - `stats/1000_hosts_1d`: a node-level metric on 1,000 hosts over one day (1.44 M values), stats over
//!   `[cluster, *]`. Against `stats/plain_1000_1d`.
//! - `memory_cap`: a sustained write load with a 64 MiB head cap; resident memory and head bytes in use are
//!   printed every 20 rounds (not a criterion measurement).
//!
//! Run: `cargo bench --bench query`. Under `cargo test` every bench runs once on a small shape.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use silt::{Aggregation, Batch, Db, Durability, HostKey, MetricConfig, Options, ReadOptions, Selector};

const T: i64 = 1_700_000_000;
const F: i64 = 60;

fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn open(dir: &std::path::Path, cap: u64) -> Db {
    let db = Db::open(
        dir,
        Options {
            durability: Durability::None,
            checkpoint_interval: None,
            memory_cap_bytes: cap,
            ..Options::default()
        },
    )
    .expect("open");
    db.declare_metric("flops", MetricConfig { frequency: F, aggregation: Aggregation::Sum }).expect("declare");
    db
}

fn aggregate(c: &mut Criterion) {
    let (threads, steps) = if full() { (128u32, 7 * 1440i64) } else { (8, 200) };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), 0);
    let host = HostKey::new("bench", "n0001").expect("key");
    let ids: Vec<_> = (0..threads)
        .map(|t| db.series_id(&host.clone().component("hwthread", t).expect("key"), "flops").expect("id"))
        .collect();
    let mut b = Batch::new();
    for s in 0..steps {
        for (t, &id) in ids.iter().enumerate() {
            b.push_id(id, T + s * F, (t as f64) * 0.5 + (s % 97) as f64);
        }
        if b.len() > 50_000 {
            db.write(&b).expect("write");
            b.clear();
        }
    }
    db.write(&b).expect("write");
    let values = u64::from(threads) * steps as u64;
    let mut g = c.benchmark_group("aggregate");
    g.throughput(Throughput::Elements(values)).measurement_time(Duration::from_secs(5));
    let sel = Selector::from(&host);
    g.bench_function("host_128_hwthreads_7d", |bch| {
        bch.iter(|| {
            let r = db.query(&sel, "flops", T, T + steps * F, ReadOptions::default()).expect("query");
            assert_eq!(r.values.len(), steps as usize);
            black_box(r)
        })
    });
    let flat: Vec<f64> = (0..values).map(|i| (i % 977) as f64).collect();
    g.bench_function("plain_sum_7d", |bch| {
        bch.iter(|| {
            let mut out = vec![0.0f64; steps as usize];
            for chunk in black_box(&flat).chunks(steps as usize) {
                for (o, v) in out.iter_mut().zip(chunk) {
                    *o += *v;
                }
            }
            black_box(out)
        })
    });
    g.finish();
}

fn stats(c: &mut Criterion) {
    let (hosts, steps) = if full() { (1000u32, 1440i64) } else { (20, 100) };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), 0);
    let ids: Vec<_> = (0..hosts)
        .map(|h| db.series_id(&HostKey::new("bench", &format!("n{h:04}")).expect("key"), "flops").expect("id"))
        .collect();
    let mut b = Batch::new();
    for s in 0..steps {
        for (h, &id) in ids.iter().enumerate() {
            b.push_id(id, T + s * F, h as f64 + (s % 13) as f64);
        }
        if b.len() > 50_000 {
            db.write(&b).expect("write");
            b.clear();
        }
    }
    db.write(&b).expect("write");
    let values = u64::from(hosts) * steps as u64;
    let mut g = c.benchmark_group("stats");
    g.throughput(Throughput::Elements(values)).measurement_time(Duration::from_secs(5));
    let sel = Selector::all_hosts("bench").expect("selector");
    g.bench_function("1000_hosts_1d", |bch| {
        bch.iter(|| {
            let s = db.query_stats(&sel, "flops", T, T + steps * F).expect("stats");
            assert_eq!(s.samples, values);
            black_box(s)
        })
    });
    let flat: Vec<f64> = (0..values).map(|i| (i % 977) as f64).collect();
    g.bench_function("plain_1000_1d", |bch| {
        bch.iter(|| {
            let (mut n, mut sum, mut lo, mut hi) = (0u64, 0.0, f64::INFINITY, f64::NEG_INFINITY);
            for &v in black_box(&flat) {
                if !v.is_nan() {
                    n += 1;
                    sum += v;
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
            }
            black_box((n, sum, lo, hi))
        })
    });
    g.finish();
}

fn rss_mib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    (statm.split_whitespace().nth(1).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 4096) >> 20
}

fn memory_cap(_c: &mut Criterion) {
    let (hosts, rounds) = if full() { (2000u32, 200i64) } else { (20, 20) };
    let cap = 64u64 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), cap);
    let ids: Vec<_> = (0..hosts)
        .map(|h| db.series_id(&HostKey::new("bench", &format!("n{h:04}")).expect("key"), "flops").expect("id"))
        .collect();
    println!("memory_cap: {hosts} series, 64 MiB cap, one page per series per round");
    for round in 0..rounds {
        let mut b = Batch::new();
        for s in 0..512 {
            for &id in &ids {
                b.push_id(id, T + (round * 512 + s) * F, s as f64);
            }
        }
        db.write(&b).expect("write");
        if round % 20 == 19 || round + 1 == rounds {
            println!(
                "memory_cap: round {:4}: head in use {:4} MiB, head files {:4} MiB, rss {:4} MiB",
                round + 1,
                db.head_bytes_in_use() >> 20,
                db.engine().head().mapped_bytes() >> 20,
                rss_mib()
            );
        }
    }
}

criterion_group!(benches, aggregate, stats, memory_cap);
criterion_main!(benches);
