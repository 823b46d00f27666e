//! Quickstart: open a database, declare a metric, write three samples, read them back, close.
//!
//! ```text
//! cargo run --example quickstart            # uses ./silt-data
//! cargo run --example quickstart -- DIR     # uses DIR
//! ```
//!
//! Running it again on the same directory is fine: the metric declaration is idempotent and the samples
//! overwrite themselves. Afterwards, `cargo run --bin silt -- check silt-data` verifies the directory.

use silt::{Aggregation, Batch, Db, HostKey, Key, MetricConfig, Options};

fn main() -> Result<(), silt::Error> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "silt-data".to_owned());
    let db = Db::open(&dir, Options::default())?;
    let recovery = db.recovery();
    println!(
        "opened {dir}: checkpoint LSN {}, {} WAL records replayed",
        recovery.checkpoint_lsn.0, recovery.replay.applied
    );

    db.declare_metric("cpu_load", MetricConfig { frequency: 60, aggregation: Aggregation::Avg })?;
    let key = HostKey::new("emmy", "n0001")?.component("hwthread", 3)?;

    const T: i64 = 1_700_000_000;
    let mut batch = Batch::new();
    batch.push(&key, "cpu_load", T, 0.25);
    batch.push(&key, "cpu_load", T + 60, 0.5);
    batch.push(&key, "cpu_load", T + 120, 0.75);
    let ack = db.write(&batch)?;
    println!(
        "wrote {} samples at LSN {}, acknowledged with durability {:?}",
        ack.outcome.stored, ack.lsn.0, ack.durability
    );

    let read = db.read(&key, "cpu_load", T, T + 180)?;
    let path = key.path();
    for (i, v) in read.values.iter().enumerate() {
        println!("cpu_load {path} @ {}: {v}", read.from + i as i64 * read.frequency);
    }

    db.close()?;
    println!("closed");
    Ok(())
}
