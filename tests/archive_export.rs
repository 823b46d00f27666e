//! Data leaving silt as Parquet: `silt export` and `silt import` round trip through the binary, and
//! long-term retention moves blocks into archive files that a reader other than silt's reads back with the
//! same values.

use std::collections::BTreeMap;
use std::process::Command;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::RowAccessor;
use silt::{Aggregation, Batch, Db, HostKey, Key, MetricConfig, Options, Selector};

const F: i64 = 60;

fn opts() -> Options {
    Options { checkpoint_interval: None, pages_per_file: 64, ..Options::default() }
}

/// (cluster, hostname, metric, scope, scope_id, timestamp) -> value, read with the parquet crate's generic
/// record reader (not silt's archive reader).
fn read_generic(path: &std::path::Path) -> BTreeMap<(String, String, String, String, String, i64), f64> {
    let reader = SerializedFileReader::new(std::fs::File::open(path).expect("open")).expect("parquet");
    let mut out = BTreeMap::new();
    for row in reader.get_row_iter(None).expect("rows") {
        let r = row.expect("row");
        assert_eq!(r.get_long(6).expect("frequency"), F);
        let key = (
            r.get_string(0).unwrap().clone(),
            r.get_string(1).unwrap().clone(),
            r.get_string(2).unwrap().clone(),
            r.get_string(3).unwrap().clone(),
            r.get_string(4).unwrap().clone(),
            r.get_long(5).unwrap(),
        );
        assert!(out.insert(key, r.get_double(7).unwrap()).is_none(), "a duplicate row");
    }
    out
}

fn value(h: u32, t: u32, i: i64) -> f64 {
    (f64::from(h) * 1000.0 + f64::from(t) + i as f64 / 1000.0 * 7.0).round() / 1000.0 + 1e9 * f64::from(t % 2)
}

/// Two hosts, each with 4 hwthreads of `cpu_load` and a node `mem_used`, `steps` steps from `t0`.
fn fill(db: &Db, t0: i64, steps: i64) {
    let mut b = Batch::new();
    for h in 0..2u32 {
        let node = HostKey::new("emmy", &format!("n{h}")).unwrap();
        for t in 0..4u32 {
            let k = node.clone().component("hwthread", t).unwrap();
            for i in 0..steps {
                b.push(&k, "cpu_load", t0 + i * F, value(h, t, i));
            }
        }
        for i in 0..steps {
            b.push(&node, "mem_used", t0 + i * F, 1e10 + i as f64);
        }
    }
    db.write(&b).expect("write");
}

fn declare(db: &Db) {
    for m in ["cpu_load", "mem_used"] {
        db.declare_metric(m, MetricConfig { frequency: F, aggregation: Aggregation::Avg }).expect("declare");
    }
}

#[test]
fn export_then_import_through_the_binary_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, out) = (tmp.path().join("src"), tmp.path().join("dst"), tmp.path().join("out.parquet"));
    let t0 = 1_700_000_000;
    let steps = 1200; // 2 pages + a partial one: part goes to blocks, part stays in the head
    {
        let db = Db::open(&src, opts()).unwrap();
        declare(&db);
        fill(&db, t0, steps);
        let emmy =
            Selector::new(silt::keys::Namespace::Host, vec![silt::SelectorElement::Name("emmy".into())]).unwrap();
        assert!(db.compact_selector(&emmy, t0 + 700 * F).unwrap() > 0);
        db.close().unwrap();
    }
    let run = |args: &[&std::ffi::OsStr]| {
        let o = Command::new(env!("CARGO_BIN_EXE_silt")).args(args).output().expect("run silt");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let said = run(&[
        "export".as_ref(),
        "--data".as_ref(),
        src.as_os_str(),
        "--from".as_ref(),
        (t0 - 100).to_string().as_ref(),
        "--to".as_ref(),
        (t0 + steps * F).to_string().as_ref(),
        "--selector".as_ref(),
        "emmy".as_ref(),
        out.as_os_str(),
    ]);
    let rows = read_generic(&out);
    assert_eq!(rows.len() as i64, 2 * 5 * steps, "{said}");
    assert!(said.contains(&format!("exported {} samples", 2 * 5 * steps)), "{said}");
    let k = ("emmy".into(), "n1".into(), "cpu_load".into(), "hwthread".into(), "3".into(), t0 + 1000 * F);
    assert_eq!(rows[&k].to_bits(), value(1, 3, 1000).to_bits());
    let k = ("emmy".into(), "n0".into(), "mem_used".into(), "node".into(), String::new(), t0 + 5 * F);
    assert_eq!(rows[&k], 1e10 + 5.0);

    run(&["import".as_ref(), "--data".as_ref(), dst.as_os_str(), out.as_os_str()]);
    let a = Db::open(&src, opts()).unwrap();
    let b = Db::open(&dst, opts()).unwrap();
    for h in 0..2u32 {
        let node = HostKey::new("emmy", &format!("n{h}")).unwrap();
        let keys = [node.clone().component("hwthread", 2).unwrap(), node.clone()];
        for (k, m) in keys.iter().zip(["cpu_load", "mem_used"]) {
            let (x, y) = (a.read(k, m, t0, t0 + steps * F).unwrap(), b.read(k, m, t0, t0 + steps * F).unwrap());
            assert_eq!((x.from, x.values.len()), (y.from, y.values.len()), "{}", k.path());
            assert!(x.values.iter().zip(&y.values).all(|(p, q)| p.to_bits() == q.to_bits()), "{}", k.path());
        }
    }
}

#[test]
fn retention_past_the_archive_horizon_moves_blocks_to_parquet_with_the_same_values() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("archive");
    let db = Db::open(tmp.path().join("data"), opts()).unwrap();
    declare(&db);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let t0 = now - 10 * 86_400;
    let steps = 2048; // 4 pages
    fill(&db, t0, steps);
    let emmy = Selector::new(silt::keys::Namespace::Host, vec![silt::SelectorElement::Name("emmy".into())]).unwrap();
    db.compact_selector(&emmy, t0 + 3 * 512 * F).unwrap(); // pages 0-2 into a block, page 3 stays
    let in_blocks: BTreeMap<_, _> = db
        .export_rows(&emmy, t0 - F, t0 + 3 * 512 * F)
        .unwrap()
        .into_iter()
        .map(|r| ((r.cluster, r.hostname, r.metric, r.scope, r.scope_id, r.timestamp), r.value))
        .collect();
    assert_eq!(in_blocks.len() as i64, 2 * 5 * 3 * 512);

    let removed = db.archive_blocks_before(now - 86_400, Some(&archive)).unwrap();
    assert_eq!(removed, 1);
    assert!(db.engine().blocks().is_empty());
    let files: Vec<_> = std::fs::read_dir(&archive).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].file_name().unwrap().to_string_lossy().starts_with("emmy-"), "{files:?}");
    let archived = read_generic(&files[0]);
    assert_eq!(archived.len(), in_blocks.len());
    for (k, v) in &in_blocks {
        assert_eq!(archived.get(k).map(|x| x.to_bits()), Some(v.to_bits()), "{k:?}");
    }
    // Gone from silt; the head's newer page is untouched.
    let r = db.read(&HostKey::new("emmy", "n0").unwrap(), "mem_used", t0, t0 + steps * F).unwrap();
    assert_eq!(r.from, t0 + 3 * 512 * F);
    assert_eq!(r.values.len(), 512);
}

#[test]
fn the_retention_pass_compacts_then_archives_by_the_options() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("archive");
    let day = std::time::Duration::from_secs(86_400);
    let o = Options {
        retention: Some(day),
        block_retention: Some(5 * day),
        archive_dir: Some(archive.clone()),
        maintenance_interval: std::time::Duration::from_secs(3600),
        ..opts()
    };
    let db = Db::open(tmp.path().join("data"), o).unwrap();
    declare(&db);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    fill(&db, now - 10 * 86_400, 1536); // three pages, ten days old
    db.enforce_retention(now).unwrap();
    assert!(db.engine().blocks().is_empty(), "the block should have been archived in the same pass");
    let files: Vec<_> = std::fs::read_dir(&archive).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    assert_eq!(read_generic(&files[0]).len(), 2 * 5 * 1536);
    let r = db.read(&HostKey::new("emmy", "n0").unwrap(), "mem_used", now - 11 * 86_400, now).unwrap();
    assert!(r.values.is_empty(), "archived data is gone from silt");
}

/// `silt serve`'s config drives the same pass: a day of data three days old is compacted (retention 24h)
/// but kept (block-retention 120h); four days later it is archived into `cleanup.directory` in archive
/// mode, deleted in delete mode (writing nothing), and kept with no `cleanup` section. The maintenance
/// thread is held off; the passes run at explicit times.
#[test]
fn the_server_configs_cleanup_archives_deletes_or_keeps_old_blocks() {
    let day = 86_400;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for mode in ["archive", "delete", "none"] {
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("archive");
        let mut store = serde_json::json!({"retention-in-memory": "24h", "memory-cap": 0});
        if mode != "none" {
            store["block-retention"] = "120h".into();
            store["cleanup"] = serde_json::json!({"mode": mode, "directory": archive.to_str().unwrap()});
        }
        let metrics = serde_json::json!({
            "cpu_load": {"frequency": F, "aggregation": "avg"},
            "mem_used": {"frequency": F, "aggregation": "avg"},
        });
        let text = serde_json::json!({"main": {"addr": "127.0.0.1:0"}, "metrics": metrics, "metric-store": store});
        let config = silt::server::config::Config::from_json(&text.to_string()).unwrap();
        let o = Options { maintenance_interval: std::time::Duration::from_secs(3600), ..config.db_options() };
        let db = Db::open(tmp.path().join("data"), o).unwrap();
        for (name, metric) in config.metric_configs() {
            db.declare_metric(&name, metric).unwrap();
        }
        let t0 = now - 3 * day;
        fill(&db, t0, 1536); // 25.6 hours from three days ago
        let node = HostKey::new("emmy", "n0").unwrap();

        db.enforce_retention(now).unwrap();
        assert!(!db.engine().blocks().is_empty(), "{mode}: past retention-in-memory, the pages are in blocks");
        assert!(!archive.exists(), "{mode}: nothing is past block-retention yet");
        assert_eq!(db.read(&node, "mem_used", t0, now).unwrap().values.len(), 1536, "{mode}");

        db.enforce_retention(now + 4 * day).unwrap();
        let read = db.read(&node, "mem_used", t0, now).unwrap();
        match mode {
            "archive" => {
                let files: Vec<_> = std::fs::read_dir(&archive).unwrap().map(|e| e.unwrap().path()).collect();
                assert_eq!(files.len(), 1, "one file for the one cluster");
                let rows = read_generic(&files[0]);
                assert_eq!(rows.len(), 2 * 5 * 1536);
                let key = ("emmy".into(), "n0".into(), "mem_used".into(), "node".into(), String::new(), t0);
                assert_eq!(rows.get(&key), Some(&1e10), "{:?}", rows.keys().next());
            }
            _ => assert!(!archive.exists(), "{mode}: no archive is written"),
        }
        if mode == "none" {
            assert!(!db.engine().blocks().is_empty(), "without cleanup the blocks are kept");
            assert_eq!(read.values.len(), 1536);
        } else {
            assert!(db.engine().blocks().is_empty(), "{mode}: past block-retention the blocks are gone");
            assert!(read.values.is_empty(), "{mode}: the data is gone from silt");
        }
    }
}
