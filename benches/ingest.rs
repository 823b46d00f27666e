//! Ingest through the Rust API.
//!
//! Data shape: 100,000 series (782 hosts x 128 hwthreads, rounded to 100,000), one metric at 10 s,
//! batches of 10,000 samples by interned series id, one writer thread. Each batch takes the next 10,000
//! series; after all 100,000 the timestamp advances one step.
//! - `ingest/wal_interval_100ms`: durability IntervalMs(100) (the 10 M samples/s target).
//! - `ingest/wal_sync_every_batch`: durability Sync; the p50/p99 ack latency is printed after the run.
//! - `head_bytes_per_sample`: resident memory of the head per stored sample (printed; target <= 8.5).
//!
//! Run: `cargo bench --bench ingest`. Under `cargo test` every bench runs once on a small shape.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use silt::{Aggregation, Batch, Db, Durability, HostKey, MetricConfig, Options, SeriesId};

const T: i64 = 1_700_000_000;
const F: i64 = 10;

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn setup(durability: Durability, series: usize) -> (tempfile::TempDir, Db, Vec<SeriesId>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db =
        Db::open(dir.path(), Options { durability, checkpoint_interval: None, ..Options::default() }).expect("open");
    db.declare_metric("cpu_load", MetricConfig { frequency: F, aggregation: Aggregation::Avg }).expect("declare");
    let ids = (0..series)
        .map(|i| {
            let key = HostKey::new("bench", &format!("n{:04}", i / 128))
                .and_then(|k| k.component("hwthread", i % 128))
                .expect("key");
            db.series_id(&key, "cpu_load").expect("intern")
        })
        .collect();
    (dir, db, ids)
}

struct Feeder {
    ids: Vec<SeriesId>,
    next: usize,
    step: i64,
    batch: Batch,
}

impl Feeder {
    fn fill(&mut self, size: usize) -> &Batch {
        self.batch.clear();
        for _ in 0..size {
            let id = self.ids[self.next];
            self.batch.push_id(id, T + self.step * F, (self.next % 1000) as f64 * 0.001 + self.step as f64);
            self.next += 1;
            if self.next == self.ids.len() {
                self.next = 0;
                self.step += 1;
            }
        }
        &self.batch
    }
}

fn ingest(c: &mut Criterion) {
    let (series, batch) = if full_run() { (100_000, 10_000) } else { (2_000, 500) };
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(batch as u64));
    g.sample_size(20).measurement_time(Duration::from_secs(8));

    let (_dir, db, ids) = setup(Durability::IntervalMs(100), series);
    let mut feed = Feeder { ids, next: 0, step: 0, batch: Batch::new() };
    g.bench_function("wal_interval_100ms", |b| {
        b.iter(|| {
            let ack = db.write(feed.fill(batch)).expect("write");
            assert_eq!(ack.outcome.stored as usize, batch);
        })
    });
    drop(db);

    let (_dir, db, ids) = setup(Durability::Sync, series);
    let mut feed = Feeder { ids, next: 0, step: 0, batch: Batch::new() };
    let mut lat = Vec::new();
    g.bench_function("wal_sync_every_batch", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch_ref = feed.fill(batch);
                let t0 = Instant::now();
                db.write(batch_ref).expect("write");
                let d = t0.elapsed();
                lat.push(d);
                total += d;
            }
            total
        })
    });
    lat.sort();
    if !lat.is_empty() {
        let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
        println!(
            "ingest/wal_sync_every_batch: {} batches of {batch}: ack latency p50 {:?}, p99 {:?}",
            lat.len(),
            p(0.5),
            p(0.99)
        );
    }
    g.finish();
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn head_memory(_c: &mut Criterion) {
    let (series, steps) = if full_run() { (10_000, 2048) } else { (200, 600) };
    let (_dir, db, ids) = setup(Durability::None, series);
    let before = rss_bytes();
    let mut feed = Feeder { ids, next: 0, step: 0, batch: Batch::new() };
    let total = series * steps;
    let mut written = 0;
    while written < total {
        let n = 10_000.min(total - written);
        db.write(feed.fill(n)).expect("write");
        written += n;
    }
    let after = rss_bytes();
    println!(
        "head_bytes_per_sample: {series} series x {steps} samples: resident {:.2} bytes/sample (rss +{} MiB)",
        (after.saturating_sub(before)) as f64 / total as f64,
        (after.saturating_sub(before)) >> 20
    );
}

criterion_group!(benches, ingest, head_memory);
criterion_main!(benches);
