//! Reads from the head against the memory-bandwidth limit.
//!
//! Data shape: metric at 10 s; one day = 8,640 samples per series.
//! - `read/one_series_1d`: `Db::read` of one series over a day (copies into a Vec<f64>), against
//!   `read/memcpy_1d`, a plain copy of the same number of contiguous f64.
//! - `stats/10k_series_1d`: `Db::stats_by_id` over 10,000 series of a day, against `stats/sum_10k_1d`,
//!   a plain sum/min/max over the same number of contiguous f64.
//!
//! Run: `cargo bench --bench read`. Under `cargo test` every bench runs once on a small shape.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use silt::{Aggregation, Batch, Db, Durability, HostKey, MetricConfig, Options, SeriesId};

const T: i64 = 1_700_000_000;
const F: i64 = 10;
const DAY: i64 = 8640;

fn setup(series: usize) -> (tempfile::TempDir, Db, Vec<SeriesId>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db =
        Db::open(dir.path(), Options { durability: Durability::None, checkpoint_interval: None, ..Options::default() })
            .expect("open");
    db.declare_metric("cpu_load", MetricConfig { frequency: F, aggregation: Aggregation::Avg }).expect("declare");
    let ids: Vec<SeriesId> = (0..series)
        .map(|i| {
            let key = HostKey::new("bench", &format!("n{:04}", i / 128))
                .and_then(|k| k.component("hwthread", i % 128))
                .expect("key");
            db.series_id(&key, "cpu_load").expect("intern")
        })
        .collect();
    let mut b = Batch::new();
    for step in 0..DAY {
        for (i, &id) in ids.iter().enumerate() {
            b.push_id(id, T + step * F, (i as f64) * 0.01 + (step % 100) as f64);
        }
        if b.len() >= 50_000 {
            db.write(&b).expect("write");
            b.clear();
        }
    }
    db.write(&b).expect("write");
    (dir, db, ids)
}

fn read(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let series = if full { 10_000 } else { 20 };
    let (_dir, db, ids) = setup(series);
    let key = HostKey::new("bench", "n0000").and_then(|k| k.component("hwthread", 0)).expect("key");

    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(DAY as u64)).measurement_time(Duration::from_secs(4));
    g.bench_function("one_series_1d", |b| {
        b.iter(|| {
            let r = db.read(&key, "cpu_load", T, T + DAY * F).expect("read");
            assert_eq!(r.values.len(), DAY as usize);
            black_box(r)
        })
    });
    let src: Vec<f64> = (0..DAY).map(|i| i as f64).collect();
    g.bench_function("memcpy_1d", |b| b.iter(|| black_box(black_box(&src).to_vec())));
    g.finish();

    let mut g = c.benchmark_group("stats");
    g.throughput(Throughput::Elements(DAY as u64 * ids.len() as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(6));
    g.bench_function("10k_series_1d", |b| {
        b.iter(|| {
            let mut n = 0;
            for &id in &ids {
                n += db.stats_by_id(id, T, T + DAY * F).samples;
            }
            assert_eq!(n, DAY as u64 * ids.len() as u64);
            n
        })
    });
    let flat: Vec<f64> = (0..DAY * ids.len() as i64).map(|i| (i % 977) as f64).collect();
    g.bench_function("sum_10k_1d", |b| {
        b.iter(|| {
            let (mut s, mut lo, mut hi) = (0.0, f64::INFINITY, f64::NEG_INFINITY);
            for &v in black_box(&flat) {
                if !v.is_nan() {
                    s += v;
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
            }
            black_box((s, lo, hi))
        })
    });
    g.finish();
}

criterion_group!(benches, read);
criterion_main!(benches);
