//! The peer benchmark's workload (`benches/peers/`) without HTTP, so that the cost of the HTTP and parsing
//! layers shows as the difference (issue #9).
//!
//! - `peers_embedded/rust_api`: one step of every host (105,780 samples) per iteration, from 4 writer
//!   threads (each its share of the hosts, as in the HTTP run), one `Batch` per host by interned series id,
//!   the timestamp advancing each iteration.
//! - `peers_embedded/line_protocol`: the same, as line protocol through `LineWriter` (parsing and the
//!   series cache, no HTTP), one body per host as the HTTP run sends them.
//!
//! Each under the durability `silt serve` uses (`sync`: an fsync per batch, group-committed) and under
//! `100ms` (the `silt-100ms` column of the HTTP run), with a checkpoint every 10 s as the server has. After
//! criterion it prints what a day of the workload takes on disk once compacted into blocks, for a few hosts
//! (the floor of silt's bytes per sample with today's block codec), what two days take when fed as a live
//! cluster sends them, a step a minute with a maintenance pass after each (short chunks, then merges), and the
//! workload's entropy (each value given the one before): the floor of any lossless store.
//!
//! Run: `cargo bench --bench peers_embedded`. Under `cargo test --benches` it runs each once on 2 hosts.

#[path = "peers/workload.rs"]
mod workload;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use silt::ingest::lineproto::Precision;
use silt::ingest::writer::LineWriter;
use silt::{Aggregation, Batch, Db, Durability, HostKey, MetricConfig, Options, SeriesId};
use workload::{Writer, FREQ, HW, NODE, THREADS};

/// Concurrent writers, as in the HTTP run.
const WRITERS: usize = 4;

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn hosts() -> usize {
    if full_run() {
        82
    } else {
        2
    }
}

fn open(dir: &std::path::Path, durability: Durability) -> Db {
    // As the HTTP run's server: a checkpoint every 10 s.
    open_with(dir, Options { durability, checkpoint_interval: Some(Duration::from_secs(10)), ..Options::default() })
}

/// Opens a database with `options` and declares the workload's metrics.
fn open_with(dir: &std::path::Path, options: Options) -> Db {
    let db = Db::open(dir, options).expect("open");
    for (s, agg) in HW.iter().map(|s| (s, Aggregation::Sum)).chain(NODE.iter().map(|s| (s, Aggregation::Avg))) {
        db.declare_metric(s.name, MetricConfig { frequency: FREQ, aggregation: agg }).expect("declare");
    }
    db
}

/// Every series of every host, interned, in the order [`Writer::step`] visits them.
fn intern(db: &Db, hosts: usize) -> Vec<Vec<SeriesId>> {
    (0..hosts)
        .map(|h| {
            let host = HostKey::new("bench", &format!("n{h:04}")).expect("key");
            let mut ids = Vec::new();
            for t in 0..THREADS {
                let k = host.clone().component("hwthread", t).expect("key");
                ids.extend(HW.iter().map(|s| db.series_id(&k, s.name).expect("intern")));
            }
            let node = host.clone();
            ids.extend(NODE.iter().map(|s| db.series_id(&node, s.name).expect("intern")));
            ids
        })
        .collect()
}

fn ingest(c: &mut Criterion) {
    let hosts = hosts();
    let per_step = (hosts * (THREADS * HW.len() + NODE.len())) as u64;
    let mut g = c.benchmark_group("peers_embedded");
    g.throughput(Throughput::Elements(per_step)).sample_size(10).measurement_time(Duration::from_secs(10));

    for (name, durability) in [("sync", Durability::Sync), ("100ms", Durability::IntervalMs(100))] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path(), durability);
        let ids = intern(&db, hosts);
        let mut gens: Vec<Writer> = (0..WRITERS).map(|w| Writer::new(w, WRITERS, hosts)).collect();
        let mut ts = 1_700_000_000i64;
        let scale = |dec: u32| 10f64.powi(-(dec as i32));
        g.bench_function(format!("rust_api/{name}"), |b| {
            b.iter(|| {
                ts += FREQ;
                let (db, ids) = (&db, &ids);
                std::thread::scope(|sc| {
                    for gen in gens.iter_mut() {
                        sc.spawn(move || {
                            let mut batch = Batch::new();
                            for i in 0..gen.hosts.len() {
                                let host_ids = &ids[gen.hosts[i]];
                                batch.clear();
                                gen.step(i, |k, _, v, dec| batch.push_id(host_ids[k], ts, v as f64 * scale(dec)));
                                db.write(&batch).expect("write");
                            }
                        });
                    }
                });
            })
        });

        report_syncs(&format!("rust_api/{name}"), &db);

        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path(), durability);
        let lines = LineWriter::new();
        let mut gens: Vec<Writer> = (0..WRITERS).map(|w| Writer::new(w, WRITERS, hosts)).collect();
        let mut ts = 1_700_000_000i64;
        g.bench_function(format!("line_protocol/{name}"), |b| {
            b.iter(|| {
                ts += FREQ;
                let (db, lines) = (&db, &lines);
                std::thread::scope(|sc| {
                    for gen in gens.iter_mut() {
                        sc.spawn(move || {
                            let mut body = Vec::new();
                            for i in 0..gen.hosts.len() {
                                gen.body(i, ts, &mut body);
                                let r = lines.write(db, &body, None, Precision::Auto, ts).expect("write");
                                assert!(r.error.is_none());
                            }
                        });
                    }
                });
            })
        });
        report_syncs(&format!("line_protocol/{name}"), &db);
    }
    g.finish();
}

/// WAL fsyncs so far: how many, their mean time, and samples per fsync (what group commit achieved).
fn report_syncs(what: &str, db: &Db) {
    use std::sync::atomic::Ordering::Relaxed;
    let st = db.engine().stats();
    let syncs = st.wal_syncs.load(Relaxed).max(1);
    println!(
        "peers_embedded/{what}: {syncs} WAL fsyncs, mean {:.2} ms, {:.0} samples per fsync",
        st.wal_sync_nanos.load(Relaxed) as f64 / syncs as f64 / 1e6,
        st.samples_stored.load(Relaxed) as f64 / syncs as f64
    );
}

/// A day of `hosts` hosts, compacted into blocks: bytes of the block files per sample.
fn compacted_bytes_per_sample(hosts: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), Durability::IntervalMs(100));
    let ids = intern(&db, hosts);
    let mut gen = Writer::new(0, 1, hosts);
    let steps = 1440i64;
    let t0 = 1_700_000_000i64;
    let scale = |dec: u32| 10f64.powi(-(dec as i32));
    for step in 0..steps {
        for (i, host_ids) in ids.iter().enumerate() {
            let mut batch = Batch::new();
            gen.step(i, |k, _, v, dec| batch.push_id(host_ids[k], t0 + step * FREQ, v as f64 * scale(dec)));
            db.write(&batch).expect("write");
        }
    }
    let all = silt::Selector::all_hosts("bench").expect("selector");
    // Every page whose slots all lie before the end: the day's full pages (a partly filled page stays).
    db.compact_selector(&all, t0 + steps * FREQ + 512 * FREQ).expect("compact");
    let (blocks, _) = block_files(dir.path());
    let samples = (hosts * (THREADS * HW.len() + NODE.len())) as u64 * steps as u64;
    println!(
        "peers_embedded: a day of {hosts} hosts ({samples} samples) compacted: {blocks} bytes of blocks, {:.3} bytes \
         per sample",
        blocks as f64 / samples as f64
    );
}

/// Bytes and number of the block files of the database in `dir`.
fn block_files(dir: &std::path::Path) -> (u64, usize) {
    let sizes: Vec<u64> = std::fs::read_dir(dir.join("blocks"))
        .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).collect())
        .unwrap_or_default();
    (sizes.iter().sum(), sizes.len())
}

/// `days` of `hosts` hosts written as a live cluster sends them, one step a minute, with the maintenance pass
/// `silt serve` runs (retention 1h, as the HTTP run; page class 64, as `silt serve`) after every step: what the
/// blocks take on disk when data arrives in real time rather than as a backfill.
fn live_bytes_per_sample(hosts: usize, days: i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        durability: Durability::IntervalMs(100),
        checkpoint_interval: Some(Duration::from_secs(10)),
        page_slots: 64,
        retention: Some(Duration::from_secs(3600)),
        // The passes are run below, at the data's clock; the background thread's wall clock would see the whole
        // day past retention at once.
        maintenance_interval: Duration::from_secs(365 * 86_400),
        ..Options::default()
    };
    let db = open_with(dir.path(), options);
    let ids = intern(&db, hosts);
    let mut gen = Writer::new(0, 1, hosts);
    let steps = days * 1440;
    let t0 = 1_700_000_000i64;
    let scale = |dec: u32| 10f64.powi(-(dec as i32));
    let mut batch = Batch::new();
    for step in 0..steps {
        let ts = t0 + step * FREQ;
        for (i, host_ids) in ids.iter().enumerate() {
            batch.clear();
            gen.step(i, |k, _, v, dec| batch.push_id(host_ids[k], ts, v as f64 * scale(dec)));
            db.write(&batch).expect("write");
        }
        db.enforce_retention(ts + FREQ).expect("maintenance pass");
    }
    let (blocks, files) = block_files(dir.path());
    // Samples in blocks: all but the last hour or so, which the head still holds.
    let st = db.engine().stats();
    let compacted = (hosts * (THREADS * HW.len() + NODE.len())) as u64 * steps as u64 - db.head_bytes_in_use() / 8;
    use std::sync::atomic::Ordering::Relaxed;
    println!(
        "peers_embedded: {days} day(s) of {hosts} hosts live, a maintenance pass a step: {blocks} bytes in {files} \
         block(s), about {:.3} bytes per compacted sample; {} blocks written, {} chunks copied and {} encoded by merges",
        blocks as f64 / compacted as f64,
        st.blocks_written.load(Relaxed),
        st.merge_chunks_copied.load(Relaxed),
        st.merge_chunks_encoded.load(Relaxed),
    );
}

/// The workload's entropy: the bits of each value given the one before, averaged over a day of `hosts` hosts
/// (the walks' states as they are visited). No lossless encoding of these samples takes less on average.
fn entropy_bytes_per_sample(hosts: usize) {
    let mut gen = Writer::new(0, 1, hosts);
    let shapes: Vec<&workload::Shape> = HW.iter().cycle().take(THREADS * HW.len()).chain(NODE.iter()).collect();
    // Each host's values after the day's first step, then each later step's entropy given them.
    let mut prev: Vec<Vec<i64>> = (0..hosts)
        .map(|i| {
            let mut first = Vec::with_capacity(shapes.len());
            gen.step(i, |_, _, v, _| first.push(v));
            first
        })
        .collect();
    let (mut bits, mut n) = (0.0, 0u64);
    for _ in 1..1440 {
        for (i, prev) in prev.iter_mut().enumerate() {
            gen.step(i, |k, _, v, _| {
                bits += workload::next_value_entropy_bits(shapes[k], prev[k]);
                n += 1;
                prev[k] = v;
            });
        }
    }
    println!(
        "peers_embedded: the workload's entropy (each value given the one before, {hosts} hosts for a day): {:.2} \
         bits, {:.3} bytes per sample",
        bits / n as f64,
        bits / n as f64 / 8.0
    );
}

fn compaction(_: &mut Criterion) {
    entropy_bytes_per_sample(if full_run() { 4 } else { 1 });
    compacted_bytes_per_sample(if full_run() { 4 } else { 1 });
    live_bytes_per_sample(if full_run() { 4 } else { 1 }, if full_run() { 2 } else { 1 });
}

criterion_group!(benches, ingest, compaction);
criterion_main!(benches);
