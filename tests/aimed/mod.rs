//! `Aimed`: a `Vfs` over a `SimVfs` whose faults hit only operations on paths under a given directory, or
//! the n-th mutating operation, once or (sticky) until disarmed. The crash images are the `SimVfs`'s.

#![allow(dead_code)]

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use silt::storage::io::sim::{FaultOp, SimVfs};
use silt::storage::io::{DirLock, MappedRegion, OpenMode, ReadRegion, VFile, Vfs};

/// One armed fault: after `skip` matching operations, the next `op` (any mutating operation if `None`) on
/// a path under `under` fails with `kind`.
#[derive(Clone, Debug)]
struct Rule {
    op: Option<FaultOp>,
    kind: ErrorKind,
    under: PathBuf,
    skip: u64,
    /// Fails every matching operation until disarmed, not just the next.
    sticky: bool,
}

/// A `SimVfs` with faults aimed at a directory. Clones share the file system and the rule.
#[derive(Clone)]
pub struct Aimed {
    pub sim: SimVfs,
    rule: Arc<Mutex<Option<Rule>>>,
}

impl Aimed {
    pub fn new(sim: SimVfs) -> Aimed {
        Aimed { sim, rule: Arc::default() }
    }

    pub fn aim(&self, op: FaultOp, kind: ErrorKind, under: &str) {
        *self.rule.lock().expect("rule") =
            Some(Rule { op: Some(op), kind, under: under.into(), skip: 0, sticky: false });
    }

    /// Fails every `op` under `under` with `kind` until [`Aimed::disarm`].
    pub fn aim_sticky(&self, op: FaultOp, kind: ErrorKind, under: &str) {
        *self.rule.lock().expect("rule") =
            Some(Rule { op: Some(op), kind, under: under.into(), skip: 0, sticky: true });
    }

    /// Fails mutating operation `n` (from 0) from now on, whatever it is, once.
    pub fn aim_nth(&self, n: u64, kind: ErrorKind) {
        *self.rule.lock().expect("rule") = Some(Rule { op: None, kind, under: "/".into(), skip: n, sticky: false });
    }

    /// Whether the armed fault is still waiting (it fires once).
    pub fn armed(&self) -> bool {
        self.rule.lock().expect("rule").is_some()
    }

    pub fn disarm(&self) {
        *self.rule.lock().expect("rule") = None;
    }

    fn check(rule: &Mutex<Option<Rule>>, op: FaultOp, path: &Path) -> io::Result<()> {
        let mut r = rule.lock().expect("rule");
        match &mut *r {
            Some(x) if x.op.is_none_or(|o| o == op) && path.starts_with(&x.under) => {
                if x.skip > 0 {
                    x.skip -= 1;
                    return Ok(());
                }
                let e = io::Error::new(x.kind, format!("aimed fault ({op:?} {})", path.display()));
                if !x.sticky {
                    *r = None;
                }
                Err(e)
            }
            _ => Ok(()),
        }
    }
}

struct AimedFile {
    inner: Box<dyn VFile>,
    path: PathBuf,
    rule: Arc<Mutex<Option<Rule>>>,
}

impl VFile for AimedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        Aimed::check(&self.rule, FaultOp::Write, &self.path)?;
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        Aimed::check(&self.rule, FaultOp::SyncData, &self.path)?;
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        Aimed::check(&self.rule, FaultOp::Write, &self.path)?;
        self.inner.set_len(len)
    }
}

impl Vfs for Aimed {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.sim.create_dir_all(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn VFile>> {
        if mode == OpenMode::CreateNew {
            Aimed::check(&self.rule, FaultOp::Create, path)?;
        }
        let inner = self.sim.open(path, mode)?;
        Ok(Box::new(AimedFile { inner, path: path.to_owned(), rule: self.rule.clone() }))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        Aimed::check(&self.rule, FaultOp::Remove, path)?;
        self.sim.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        Aimed::check(&self.rule, FaultOp::Rename, from)?;
        self.sim.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        Aimed::check(&self.rule, FaultOp::SyncDir, path)?;
        self.sim.sync_dir(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.sim.list_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.sim.exists(path)
    }
    fn map(&self, path: &Path) -> io::Result<Arc<dyn MappedRegion>> {
        self.sim.map(path)
    }
    fn map_read(&self, path: &Path) -> io::Result<Arc<dyn ReadRegion>> {
        self.sim.map_read(path)
    }
    fn create_allocated(&self, path: &Path, len_bytes: u64) -> io::Result<()> {
        Aimed::check(&self.rule, FaultOp::Create, path)?;
        self.sim.create_allocated(path, len_bytes)
    }
    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        self.sim.lock_dir(path)
    }
}
