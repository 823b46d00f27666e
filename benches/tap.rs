//! What write taps cost ingest.
//!
//! Data shape: 100,000 series (782 hosts x 128 hwthreads, rounded to 100,000) of one metric at 10 s,
//! batches of 100,000 samples by interned series id (one per series, the timestamp advancing one step per
//! batch), durability IntervalMs(100), one writer thread.
//! - `tap/none`: no tap (the hot path pays one relaxed load).
//! - `tap/all`: one tap whose selector covers every series; a second thread drains it.
//! - `tap/nothing`: one tap of the same metric whose selector covers no series (per sample, one table
//!   lookup).
//!
//! Run: `cargo bench --bench tap`. Under `cargo test` every bench runs once on a small shape.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use silt::keys::Namespace;
use silt::{Aggregation, Batch, Db, Durability, HostKey, MetricConfig, Options, Selector, SelectorElement, SeriesId};

const T: i64 = 1_700_000_000;
const F: i64 = 10;

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn tap(c: &mut Criterion) {
    let series = if full_run() { 100_000 } else { 2_000 };
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options { durability: Durability::IntervalMs(100), checkpoint_interval: None, ..Options::default() };
    let db = Arc::new(Db::open(dir.path(), opts).expect("open"));
    db.declare_metric("cpu_load", MetricConfig { frequency: F, aggregation: Aggregation::Avg }).expect("declare");
    let ids: Vec<SeriesId> = (0..series)
        .map(|i| {
            let key = HostKey::new("bench", &format!("n{:04}", i / 128))
                .and_then(|k| k.component("hwthread", i % 128))
                .expect("key");
            db.series_id(&key, "cpu_load").expect("intern")
        })
        .collect();
    let mut step = 0i64;
    let mut batch = Batch::new();
    let mut write = |db: &Db| {
        batch.clear();
        for (i, &id) in ids.iter().enumerate() {
            batch.push_id(id, T + step * F, (i % 1000) as f64 * 0.001 + step as f64);
        }
        step += 1;
        let ack = db.write(&batch).expect("write");
        assert_eq!(ack.outcome.stored as usize, series);
    };

    let mut g = c.benchmark_group("tap");
    g.throughput(Throughput::Elements(series as u64));
    g.sample_size(10);

    g.bench_function("none", |b| b.iter(|| write(&db)));

    let all = Selector::new(Namespace::Host, vec![]).expect("selector");
    let tap = db.tap("cpu_load", &all, 1 << 24).expect("tap");
    let stop = Arc::new(AtomicBool::new(false));
    let drainer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut rows = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if let Some(b) = tap.recv_timeout(Duration::from_millis(10)) {
                    rows += b.len();
                }
            }
            (rows, tap.dropped())
        })
    };
    g.bench_function("all", |b| b.iter(|| write(&db)));
    stop.store(true, Ordering::Relaxed);
    let (rows, dropped) = drainer.join().expect("drainer");
    println!("tap/all: {rows} samples drained, {dropped} dropped");

    let other = Selector::new(Namespace::Host, vec![SelectorElement::Name("elsewhere".into())]).expect("selector");
    let tap = db.tap("cpu_load", &other, 1 << 24).expect("tap");
    g.bench_function("nothing", |b| b.iter(|| write(&db)));
    assert!(tap.try_recv().is_none());
    g.finish();
}

criterion_group!(benches, tap);
criterion_main!(benches);
