//! Blocks on a real file system: compaction writes them, reopening maps them, damage is reported with the
//! block's path and offset, queries over other data keep working, and `silt check` finds it.

use std::process::Command;

use silt::{Aggregation, Batch, Db, HostKey, MetricConfig, Options, Selector};

const T: i64 = 1_700_000_000;
const F: i64 = 10;

fn opts() -> Options {
    Options { checkpoint_interval: None, pages_per_file: 64, ..Options::default() }
}

fn host(h: u32) -> HostKey {
    HostKey::new("c", &format!("n{h}")).expect("key")
}

/// Two hosts with 3 pages each, compacted below the third page: two chunks in one block.
fn setup(dir: &std::path::Path) -> std::path::PathBuf {
    let db = Db::open(dir, opts()).expect("open");
    db.declare_metric("m", MetricConfig { frequency: F, aggregation: Aggregation::Sum }).expect("declare");
    let mut b = Batch::new();
    for h in 0..2 {
        for i in 0..3 * 512 {
            b.push(&host(h), "m", T + i * F, (h * 10_000) as f64 + i as f64);
        }
    }
    db.write(&b).expect("write");
    let pages = db.compact_selector(&Selector::from(&HostKey::new("c", "n0").unwrap()), T + 2 * 512 * F).unwrap()
        + db.compact_selector(&Selector::from(&host(1)), T + 2 * 512 * F).unwrap();
    assert_eq!(pages, 4);
    let blocks = db.engine().blocks();
    assert_eq!(blocks.len(), 2);
    let path = blocks[0].path().to_owned();
    db.close().expect("close");
    path
}

fn check(dir: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_silt")).arg("check").arg(dir).output().expect("run silt check");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn compacted_data_survives_reopen_and_check_passes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    setup(tmp.path());
    let db = Db::open(tmp.path(), opts()).expect("reopen");
    let r = db.read(&host(1), "m", T, T + 3 * 512 * F).expect("read");
    assert_eq!(r.values.len(), 3 * 512);
    assert!(r.values.iter().enumerate().all(|(i, v)| *v == 10_000.0 + i as f64));
    drop(db);
    let (code, out) = check(tmp.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("block      00000000000000000001.blk  1 chunks, 1024 values"), "{out}");
}

#[test]
fn a_damaged_chunk_fails_only_its_queries_and_check_names_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = setup(tmp.path());
    // Flip a byte in the middle of the first (only) chunk's data.
    let mut bytes = std::fs::read(&path).expect("read block");
    let (chunks, _, _) = silt::storage::block::parse(&bytes).expect("parse");
    let c = chunks[0];
    bytes[(c.offset + u64::from(c.len) / 2) as usize] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write block");

    let db = Db::open(tmp.path(), opts()).expect("reopen: a damaged chunk is found when read");
    let err = db.read(&HostKey::new("c", "n0").unwrap(), "m", T, T + 3 * 512 * F).expect_err("damaged");
    let msg = err.to_string();
    assert!(msg.contains("00000000000000000001.blk") && msg.contains("offset 64"), "{msg}");
    // The other host's block and every host's head pages still answer.
    let r = db.read(&host(1), "m", T, T + 3 * 512 * F).expect("read the other block");
    assert_eq!(r.values.len(), 3 * 512);
    let recent = db.read(&HostKey::new("c", "n0").unwrap(), "m", T + 2 * 512 * F, T + 3 * 512 * F).expect("head");
    assert_eq!(recent.values.len(), 512);
    drop(db);

    let (code, out) = check(tmp.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("00000000000000000001.blk") && out.contains("DAMAGED"), "{out}");
}

#[test]
fn a_block_with_a_damaged_index_is_left_out_and_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = setup(tmp.path());
    let mut bytes = std::fs::read(&path).expect("read block");
    let n = bytes.len();
    bytes[n - 10] ^= 1; // inside the index
    std::fs::write(&path, &bytes).expect("write block");
    let db = Db::open(tmp.path(), opts()).expect("reopen");
    assert_eq!(db.recovery().damaged_blocks.len(), 1);
    assert!(db.recovery().damaged_blocks[0].contains("00000000000000000001.blk"), "{:?}", db.recovery().damaged_blocks);
    assert_eq!(db.engine().blocks().len(), 1);
    let r = db.read(&host(1), "m", T, T + 3 * 512 * F).expect("read");
    assert_eq!(r.values.len(), 3 * 512);
    drop(db);
    let (code, out) = check(tmp.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("checksum"), "{out}");
}
