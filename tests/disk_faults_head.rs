//! A full disk where the head needs its next file. The writer makes sure of the head files a write needs
//! before it logs the write (`HeadWriter::reserve`), so a head file that cannot be created refuses the write
//! whole (`StorageError::NotLogged`, nothing of it logged) and the database stays writable; before, the
//! write was logged, then failed while applied (a 500), and the database turned read-only.
//!
//! Faults go through `Aimed` (`tests/aimed`), aimed at `/db/head`.

mod aimed;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aimed::Aimed;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use silt::storage::io::sim::{FaultOp, SimVfs};
use silt::storage::io::Vfs;
use silt::storage::StorageError;
use silt::{Aggregation, Batch, Db, Durability, Error, HostKey, MetricConfig, Options};

const T: i64 = 1_000_000;
const F: i64 = 10;
const PAGE: i64 = 512;
/// Pages per head file, the header page included: 15 pages of data each.
const PPF: u32 = 16;

fn options(vfs: Arc<dyn Vfs>) -> Options {
    Options {
        vfs,
        durability: Durability::Sync,
        segment_size: 1 << 20,
        pages_per_file: PPF,
        checkpoint_interval: None,
        ..Options::default()
    }
}

fn open(vfs: Arc<dyn Vfs>) -> Db {
    let db = Db::open("/db", options(vfs)).expect("open");
    db.declare_metric("m", MetricConfig { frequency: F, aggregation: Aggregation::Avg }).expect("declare");
    db
}

fn key(h: u32) -> HostKey {
    HostKey::new("c", &format!("n{h}")).expect("key")
}

/// What was acknowledged: host → step → value.
type Model = BTreeMap<u32, BTreeMap<i64, f64>>;

fn write(db: &Db, model: &mut Model, samples: &[(u32, i64, f64)]) -> Result<(), Error> {
    let mut b = Batch::new();
    for &(h, i, v) in samples {
        b.push(&key(h), "m", T + i * F, v);
    }
    let ack = db.write(&b)?;
    assert_eq!(ack.outcome.stored, samples.len() as u64, "every sample stored: {:?}", ack.outcome);
    for &(h, i, v) in samples {
        model.entry(h).or_default().insert(i, v);
    }
    Ok(())
}

/// Every acknowledged sample reads back with its value, and nothing else is there. Returns the samples.
fn check(db: &Db, model: &Model, what: &str) -> usize {
    let mut n = 0;
    for (&h, steps) in model {
        let (Some(&lo), Some(&hi)) = (steps.keys().next(), steps.keys().next_back()) else { continue };
        let r = db.read(&key(h), "m", T + lo * F, T + (hi + 1) * F).unwrap_or_else(|e| panic!("{what}: n{h}: {e}"));
        let mut got = BTreeMap::new();
        for (j, v) in r.values.iter().enumerate() {
            if !v.is_nan() {
                got.insert((r.from - T) / F + j as i64, *v);
            }
        }
        assert_eq!(&got, steps, "{what}: n{h}");
        n += steps.len();
    }
    n
}

fn head_files(sim: &SimVfs) -> Vec<String> {
    sim.list_dir(Path::new("/db/head")).expect("head dir").into_iter().filter(|f| f.ends_with(".pages")).collect()
}

#[test]
fn a_head_file_the_disk_has_no_room_for_refuses_the_write_and_the_database_stays_writable() {
    for (kind, full) in [(ErrorKind::StorageFull, true), (ErrorKind::Other, false)] {
        let sim = SimVfs::new();
        let vfs = Aimed::new(sim.clone());
        let db = open(Arc::new(vfs.clone()));
        let mut model = Model::new();
        // One page per new host: 15 fit in the first file.
        write(&db, &mut model, &[(0, 0, 0.0)]).expect("the first write");
        let mut h = 1;
        let refused = loop {
            assert!(h < 100, "no write needed a second head file");
            vfs.aim(FaultOp::Create, kind, "/db/head");
            let r = write(&db, &mut model, &[(h, 0, f64::from(h))]);
            match r {
                Ok(()) => h += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(h, PPF - 1, "{kind:?}: refused at host {h}");
        match &refused {
            Error::Storage(StorageError::NotLogged { full: f, message }) => {
                assert_eq!(*f, full, "{kind:?}: {message}");
                assert!(message.contains("000001.pages"), "{message}");
            }
            other => panic!("{kind:?}: expected NotLogged, got {other:?}"),
        }
        // Nothing of it is there, the half-made file neither; writes into existing pages go on.
        assert_eq!(head_files(&sim), vec!["000000.pages"], "{kind:?}");
        assert!(db.read(&key(h), "m", T, T + F).map_or(true, |r| r.values.iter().all(|v| v.is_nan())));
        write(&db, &mut model, &[(0, 1, 0.5), (3, 7, 3.5)]).expect("a write into existing pages");
        check(&db, &model, "refused");
        // A power cut: exactly the acknowledged samples.
        for image in [sim.crash(1), sim.crash_clean()] {
            check(&open(Arc::new(image)), &model, "crash");
        }
        // Room again: the same write goes through.
        vfs.disarm();
        write(&db, &mut model, &[(h, 0, f64::from(h))]).expect("the same write once there is room");
        assert_eq!(head_files(&sim), vec!["000000.pages", "000001.pages"], "{kind:?}");
        check(&db, &model, "after");
        check(&open(Arc::new(sim.crash(2))), &model, "crash after");
    }
}

/// Random writes from four threads (so the writer groups several of them), each on its own hosts: new hosts
/// with many samples over several pages, backfills into gaps, far jumps, the same step twice. Phases of 40
/// writes alternate between a disk that refuses every new head file and one with room. A write that needs
/// a file the disk has no room for must be refused before it is logged: had the writer counted too few
/// pages, applying it would need a file, fail, and leave the database read-only, which fails the test.
#[test]
fn the_pages_a_write_needs_are_never_undercounted() {
    let sim = SimVfs::new();
    let vfs = Aimed::new(sim.clone());
    let db = open(Arc::new(vfs.clone()));
    let models: Vec<Mutex<Model>> = (0..4).map(|_| Mutex::default()).collect();
    let (mut accepted, mut refused) = (0u32, 0u32);
    for phase in 0..12u64 {
        if phase % 2 == 0 {
            vfs.aim_sticky(FaultOp::Create, ErrorKind::StorageFull, "/db/head");
        } else {
            vfs.disarm();
        }
        let counts: Vec<(u32, u32)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4u32)
                .map(|t| {
                    let (db, model) = (&db, &models[t as usize]);
                    s.spawn(move || {
                        let mut rng = StdRng::seed_from_u64(phase * 10 + u64::from(t));
                        let (mut ok, mut no) = (0, 0);
                        for _ in 0..40 {
                            let mut samples = Vec::new();
                            for _ in 0..rng.gen_range(1..4) {
                                // Hosts t, t+4, …: 12 per thread; a new one now and then.
                                let h = t + 4 * rng.gen_range(0..12);
                                let start = match rng.gen_range(0..4) {
                                    0 => rng.gen_range(0..40) * PAGE,    // a page start, far ahead or back
                                    1 => rng.gen_range(0..40 * PAGE),    // anywhere
                                    2 => rng.gen_range(0..4) * PAGE - 3, // across a page boundary
                                    _ => 0,                              // the first page
                                };
                                let len = rng.gen_range(1..3 * PAGE);
                                let step = rng.gen_range(1..4);
                                for i in (start.max(0)..start.max(0) + len).step_by(step) {
                                    samples.push((h, i, rng.gen_range(-1e6..1e6f64).round()));
                                }
                            }
                            // A host's first samples fix its grid origin: earlier steps would be too old.
                            let mut seen = std::collections::BTreeSet::new();
                            let mut m = model.lock().expect("model");
                            let mut with_origins = Vec::with_capacity(samples.len() + 3);
                            for x in samples {
                                if !m.contains_key(&x.0) && seen.insert(x.0) {
                                    with_origins.push((x.0, 0, -0.5));
                                }
                                with_origins.push(x);
                            }
                            let mut samples = with_origins;
                            // The same step twice in one write: the last value counts.
                            if let Some(&(h, i, _)) = samples.first() {
                                samples.push((h, i, 0.25));
                            }
                            match write(db, &mut m, &samples) {
                                Ok(()) => ok += 1,
                                Err(Error::Storage(StorageError::NotLogged { full: true, .. })) => no += 1,
                                Err(e) => panic!("phase {phase} thread {t}: {e}"),
                            }
                        }
                        (ok, no)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        for (ok, no) in counts {
            accepted += ok;
            refused += no;
        }
    }
    vfs.disarm();
    let mut all = Model::new();
    for m in &models {
        all.extend(m.lock().expect("model").clone());
    }
    let n = check(&db, &all, "at the end");
    assert!(refused > 20 && accepted > 100, "accepted {accepted}, refused {refused}");
    assert!(head_files(&sim).len() > 3, "{:?}", head_files(&sim));
    drop(db);
    assert_eq!(check(&open(Arc::new(sim.crash(9))), &all, "after a crash"), n);
    eprintln!(
        "{accepted} writes accepted, {refused} refused for want of a head file, {} head files, {n} samples verified",
        head_files(&sim).len()
    );
}
