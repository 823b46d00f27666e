//! `silt check`: the library check (`storage::check`) and the `silt check` binary on clean and damaged data
//! directories built with `silt::Db`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use silt::storage::check::{check, CheckReport, SegmentEnd, Severity};
use silt::storage::io::StdVfs;
use silt::storage::wal::record::FRAME_HEADER_LEN;
use silt::storage::wal::segment::scan;
use silt::{Aggregation, Batch, Db, Durability, HostKey, MetricConfig, Options};

const T: i64 = 1_700_000_000;
const SERIES: u32 = 10;
const PER_BATCH: i64 = 20;

fn options() -> Options {
    Options {
        durability: Durability::Sync,
        segment_size: 64 << 10,
        pages_per_file: 8,
        checkpoint_interval: None,
        ..Options::default()
    }
}

fn key(i: u32) -> HostKey {
    HostKey::new("emmy", "n0001").unwrap().component("hwthread", i).unwrap()
}

/// Writes batches `from..to`: each has `PER_BATCH` consecutive minutes for each of the `SERIES` series.
fn write_batches(db: &Db, from: i64, to: i64) {
    for b in from..to {
        let mut batch = Batch::new();
        for s in 0..SERIES {
            for j in 0..PER_BATCH {
                let slot = b * PER_BATCH + j;
                batch.push(&key(s), "cpu_load", T + slot * 60, (slot * 1000 + i64::from(s)) as f64);
            }
        }
        let ack = db.write(&batch).unwrap();
        assert_eq!(ack.outcome.stored, batch.len() as u64);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "LOCK" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// Every file under `dir` with its bytes, to show that a check changed nothing.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), fs::read(&p).unwrap());
            }
        }
    }
    out
}

struct Fixture {
    _tmp: tempfile::TempDir,
    /// The directory after `Db::close` (one empty segment after the final checkpoint).
    closed: PathBuf,
    /// A copy taken while the database was open, after a checkpoint and more writes: several segments, the
    /// older ones sealed, the newest one with records (what a crash or a live process leaves).
    image: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let closed = tmp.path().join("db");
    let image = tmp.path().join("image");
    let db = Db::open(&closed, options()).unwrap();
    db.declare_metric("cpu_load", MetricConfig { frequency: 60, aggregation: Aggregation::Avg }).unwrap();
    write_batches(&db, 0, 30);
    // Free the first page of one series so the manifest has a free list.
    assert_eq!(db.free(&key(0), "cpu_load", T + 512 * 60).unwrap(), 1);
    db.checkpoint().unwrap();
    write_batches(&db, 30, 90);

    // The live directory checks clean, and the check changes nothing in it (the lock is held meanwhile).
    let before = snapshot(&closed);
    let live = check(&StdVfs, &closed).unwrap();
    assert!(!live.is_damaged(), "{live}");
    assert_eq!(before, snapshot(&closed), "check modified the live directory");

    copy_dir(&closed, &image);
    db.close().unwrap();
    Fixture { _tmp: tmp, closed, image }
}

fn damage(r: &CheckReport) -> Vec<&silt::storage::check::Problem> {
    r.problems.iter().filter(|p| p.severity == Severity::Damage).collect()
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn clean_directories_check_clean() {
    let f = fixture();
    let r = check(&StdVfs, &f.closed).unwrap();
    assert!(r.problems.is_empty(), "{r}");
    assert!(!r.is_damaged());
    assert!(r.manifest.found && r.manifest.valid);
    assert_eq!(r.manifest.metrics, 1);
    assert_eq!(r.manifest.series, SERIES as usize);
    assert_eq!(r.segments.len(), 1, "{r}");
    assert_eq!(r.segments[0].records, 0);
    assert_eq!(r.segments[0].first_lsn, Some(r.manifest.checkpoint_lsn.0 + 1));
    assert!(r.pages.checked && r.pages.bad == 0 && r.pages.leaked == 0, "{r}");
    assert_eq!(r.head_files.len() as u32, r.manifest.head_files);
    assert!(r.head_files.iter().all(|h| h.referenced && h.header_valid && h.size == h.expected_size));
    assert!(r.to_string().contains("result     ok"), "{r}");

    let r = check(&StdVfs, &f.image).unwrap();
    assert!(!r.is_damaged(), "{r}");
    assert!(r.problems.is_empty(), "{r}");
    assert!(r.segments.len() >= 3, "need sealed segments with records: {r}");
    assert!(r.segments.iter().all(|s| s.end == SegmentEnd::Clean), "{r}");
    assert!(r.lsn.gaps.is_empty(), "{r}");
    assert!(r.segments.last().unwrap().records > 0, "{r}");
    assert!(r.lsn.to_replay > 0);
    assert!(r.manifest.free_pages >= 1, "{r}");
    assert!(r.head_files.iter().any(|h| !h.referenced), "head files created after the checkpoint: {r}");
}

#[test]
fn flipped_byte_in_a_sealed_segment_is_damage() {
    let f = fixture();
    let r = check(&StdVfs, &f.image).unwrap();
    let sealed = r.segments.iter().rev().skip(1).find(|s| s.records >= 3).expect("a sealed segment with records");
    let path = sealed.path.clone();
    let s = scan(&StdVfs, &path).unwrap();
    let frame = s.frames[s.frames.len() / 2];
    let at = frame.start + frame.len / 2;
    let mut bytes = fs::read(&path).unwrap();
    bytes[at] ^= 0x10;
    fs::write(&path, &bytes).unwrap();

    let before = snapshot(&f.image);
    let r = check(&StdVfs, &f.image).unwrap();
    assert_eq!(before, snapshot(&f.image));
    assert!(r.is_damaged(), "{r}");
    let d = damage(&r);
    let frame_off = (frame.start - FRAME_HEADER_LEN) as u64;
    assert!(d.iter().any(|p| p.file == path && p.offset == Some(frame_off) && p.message.contains(&name(&path))), "{r}");
    let seg = r.segments.iter().find(|s| s.path == path).unwrap();
    assert!(matches!(seg.end, SegmentEnd::Corrupt { offset, .. } if offset == frame_off), "{seg:?}");
    assert!(r.to_string().contains(&name(&path)), "{r}");
    // The engine agrees: it refuses to open the log.
    assert!(Db::open(&f.image, options()).is_err());
}

#[test]
fn flipped_byte_in_the_manifest_is_damage() {
    let f = fixture();
    let path = f.closed.join("MANIFEST");
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&path, &bytes).unwrap();

    let r = check(&StdVfs, &f.closed).unwrap();
    assert!(r.is_damaged(), "{r}");
    assert!(r.manifest.found && !r.manifest.valid);
    assert!(!r.pages.checked);
    assert!(damage(&r).iter().any(|p| p.file == path && p.message.contains("MANIFEST")), "{r}");
    assert!(Db::open(&f.closed, options()).is_err());
}

#[test]
fn torn_tail_in_the_newest_segment_is_only_a_warning() {
    let f = fixture();
    let r = check(&StdVfs, &f.image).unwrap();
    let newest = r.segments.last().unwrap().path.clone();
    let s = scan(&StdVfs, &newest).unwrap();
    let last = *s.frames.last().unwrap();
    // Cut the file in the middle of the last record's payload, as a crash during that write could.
    let cut = (last.start + last.len / 2) as u64;
    fs::OpenOptions::new().write(true).open(&newest).unwrap().set_len(cut).unwrap();

    let before = snapshot(&f.image);
    let r = check(&StdVfs, &f.image).unwrap();
    assert_eq!(before, snapshot(&f.image), "check repaired the tail");
    assert!(!r.is_damaged(), "{r}");
    let tail_off = (last.start - FRAME_HEADER_LEN) as u64;
    assert_eq!(r.problems.len(), 1, "{r}");
    let p = &r.problems[0];
    assert_eq!((p.severity, &p.file, p.offset), (Severity::Warning, &newest, Some(tail_off)));
    assert!(p.message.contains(&name(&newest)), "{r}");
    let seg = r.segments.last().unwrap();
    assert!(matches!(seg.end, SegmentEnd::TornTail { offset, .. } if offset == tail_off), "{seg:?}");
    assert_eq!(seg.records, s.frames.len() as u64 - 1);

    // The engine agrees: it opens, repairing the tail.
    let db = Db::open(&f.image, options()).unwrap();
    assert!(db.recovery().replay.torn_tail.is_some());
    db.close().unwrap();
}

#[test]
fn binary_exit_codes() {
    let f = fixture();
    let bin = env!("CARGO_BIN_EXE_silt");

    let out = Command::new(bin).arg("check").arg(&f.closed).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("result     ok"), "{stdout}");

    // Damage a sealed segment of the image: exit 1, and stdout names the file.
    let r = check(&StdVfs, &f.image).unwrap();
    let sealed = r.segments.iter().rev().skip(1).find(|s| s.records > 0).unwrap().path.clone();
    let s = scan(&StdVfs, &sealed).unwrap();
    let frame = s.frames[0];
    let mut bytes = fs::read(&sealed).unwrap();
    bytes[frame.start] ^= 0xff;
    fs::write(&sealed, &bytes).unwrap();
    let out = Command::new(bin).arg("check").arg(&f.image).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&name(&sealed)), "{stdout}");
    assert!(stdout.contains("DAMAGED"), "{stdout}");

    // A directory that cannot be read: exit 2, the error on stderr, nothing on stdout.
    let missing = f.closed.join("does-not-exist");
    let out = Command::new(bin).arg("check").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does-not-exist"), "{stderr}");
}

/// Max and Min declarations, one in the manifest and one only in the WAL, check clean; the same bytes with
/// an aggregation of 5 (under valid checksums) are damage that names it, and the engine refuses them too.
#[test]
fn max_and_min_declarations_check_clean_and_an_unknown_aggregation_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, image) = (tmp.path().join("db"), tmp.path().join("image"));
    let db = Db::open(&dir, options()).unwrap();
    db.declare_metric("backpressure", MetricConfig { frequency: 60, aggregation: Aggregation::Max }).unwrap();
    let mut b = Batch::new();
    b.push(&key(0), "backpressure", T, 1.0);
    db.write(&b).unwrap();
    db.checkpoint().unwrap();
    db.declare_metric("idle", MetricConfig { frequency: 60, aggregation: Aggregation::Min }).unwrap();
    copy_dir(&dir, &image);
    db.close().unwrap();

    let r = check(&StdVfs, &image).unwrap();
    assert!(r.problems.is_empty(), "{r}");
    assert_eq!(r.manifest.metrics, 1);
    let newest = r.segments.last().unwrap().path.clone();
    let s = scan(&StdVfs, &newest).unwrap();
    let declare = *s.frames.iter().find(|f| f.kind == 1).expect("the idle declaration in the WAL");
    assert_eq!(s.payload(&declare).last(), Some(&4), "Min is byte 4");

    // The WAL record with aggregation 5 and its CRC fixed: damage at that frame.
    let mut bytes = fs::read(&newest).unwrap();
    let at = declare.start + declare.len - 1;
    bytes[at] = 5;
    let header = declare.start - FRAME_HEADER_LEN;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[header + 4..header + FRAME_HEADER_LEN]);
    crc.update(&bytes[declare.start..declare.start + declare.len]);
    bytes[header..header + 4].copy_from_slice(&crc.finalize().to_le_bytes());
    let wal_image = tmp.path().join("wal-image");
    copy_dir(&image, &wal_image);
    fs::write(wal_image.join("wal").join(name(&newest)), &bytes).unwrap();
    let r = check(&StdVfs, &wal_image).unwrap();
    assert!(r.is_damaged(), "{r}");
    assert!(damage(&r).iter().any(|p| p.message.contains("unknown aggregation 5")), "{r}");
    assert!(Db::open(&wal_image, options()).is_err());

    // The manifest's Max entry (at 56: name_len, 12 name bytes, frequency, aggregation) set to 5.
    let path = dir.join("MANIFEST");
    let mut bytes = fs::read(&path).unwrap();
    let at = 56 + 1 + "backpressure".len() + 8;
    assert_eq!(bytes[at], 3, "Max is byte 3");
    bytes[at] = 5;
    let l = bytes.len();
    let crc = crc32fast::hash(&bytes[..l - 4]);
    bytes[l - 4..].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let r = check(&StdVfs, &dir).unwrap();
    assert!(r.is_damaged() && r.manifest.found && !r.manifest.valid, "{r}");
    assert!(damage(&r).iter().any(|p| p.file == path && p.message.contains("unknown aggregation 5")), "{r}");
    assert!(Db::open(&dir, options()).is_err());
}
