//! [`SimVfs`]: a simulated, in-memory [`Vfs`] that injects faults and rebuilds what a disk could hold after
//! a power loss. The crash suite runs the engine on it; nothing here touches the real file system.
//!
//! # State
//!
//! All state sits behind one [`parking_lot::Mutex`] shared by every clone of a [`SimVfs`] and by every
//! handle, region and lock guard it hands out; words of a memory map are atomics shared by the regions and
//! read or written without the lock.
//!
//! - **Paths** are plain [`PathBuf`] keys, compared as [`Path`] compares them (by components); nothing else
//!   is normalised. The roots `/` and the empty path (the parent of a relative name) always exist.
//! - **Directories** are recorded by [`Vfs::create_dir_all`] (with all their ancestors) and are durable at
//!   once; they are never removed or renamed. A file operation whose parent directory was never created
//!   fails with [`io::ErrorKind::NotFound`].
//! - **Files are inodes.** Each has `live` bytes (what reads see) and `durable` bytes (what the disk holds
//!   for sure), plus the ordered list of its unsynced operations: every [`VFile::write_all_at`] and
//!   [`VFile::set_len`] changes `live` and appends itself to that list; [`VFile::sync_data`] sets
//!   `durable = live` and clears the list. All handles to one inode see the same bytes, and an inode that
//!   was removed or renamed over stays valid for the handles and regions still open on it.
//! - **Directory entries.** Each directory has a `live` name → inode map, a `durable` one, and a log of its
//!   unsynced entry operations: create, remove, rename within the directory (one log entry, so it is
//!   atomic), and for a rename between two directories a removal logged in the source and an insertion
//!   logged in the target. [`Vfs::sync_dir`] sets the directory's `durable` map to its `live` map and clears
//!   its log.
//! - **Memory maps.** [`Vfs::map`] needs a length that is a non-zero multiple of [`PAGE_BYTES`] (else
//!   [`io::ErrorKind::InvalidInput`]). While an inode is mapped, the region's words (little-endian: word `i`
//!   is bytes `[8i, 8i + 8)`) *are* its live contents: reads read them, writes read-modify-write them
//!   without logging an operation (the pages just become dirty, as stores do), and
//!   [`VFile::set_len`] or a write past the end fails: a mapped file never changes length. Mapping a mapped
//!   inode again shares the same words. [`MappedRegion::flush`] (like `msync(MS_SYNC)`) and
//!   [`VFile::sync_data`] on a mapped inode set `durable` to the words and clear the inode's unsynced list.
//!   When the last region of an inode is dropped it is unmapped: the words become `live` again, and each
//!   page that differs from `durable` plus the unsynced list is appended to that list as one whole-page
//!   write, so an unmapped dirty page can still be lost, but only as a whole.
//! - **Directory locks** ([`Vfs::lock_dir`]) are exclusive within one [`SimVfs`] (shared by its clones); a
//!   second lock of a held path fails with [`io::ErrorKind::WouldBlock`]. No `LOCK` file appears.
//!
//! # Faults
//!
//! The mutating operations are `write_all_at`, `set_len`, `sync_data`, `remove_file`, `rename`, `sync_dir`,
//! [`MappedRegion::flush`] and `open` with [`OpenMode::CreateNew`]. An operation first makes its own checks
//! (missing file, existing name, mapped file, …); one that fails them fails as a real file system would,
//! without counting and without consuming a fault. Then:
//! - after [`SimVfs::fail_after`]`(n)`, once `n` more mutating operations have succeeded, every further one
//!   fails with `io::Error::other("injected fault")` (an EIO) until [`SimVfs::clear_faults`];
//! - [`SimVfs::fail_next`]`(op, kind)` makes the next operation of that [`FaultOp`] kind fail once with
//!   `kind` (checked after the `fail_after` budget, which it does not consume).
//!
//! An operation that fails changes nothing. Reads (`read_at`, `len`, `list_dir`, `exists`, `map`,
//! `create_dir_all`, `lock_dir`) never fail by injection. [`SimVfs::mutating_ops`] counts the mutating
//! operations that succeeded.
//!
//! # Crash model
//!
//! [`SimVfs::crash`]`(seed)` returns a new, independent [`SimVfs`] holding what a disk could hold after a
//! power loss at this instant. A splitmix64 generator seeded with `seed` makes every choice, walking
//! directories in path order and inodes in creation order, so one seed over one history gives one result.
//! 1. **Entries.** For each directory, its entries are its `durable` map with a random prefix (of length
//!    `0..=len`) of its unsynced log applied in order. A rename within one directory is one log entry, so a
//!    crash leaves exactly one of its two names; a rename between directories is two entries in two logs
//!    and may leave both names (one inode under two names) or neither.
//! 2. **Bytes.** Each inode reachable from the resulting entries starts from its `durable` bytes; then each
//!    of its unsynced operations, in order and independently, is dropped, applied fully, or, for a write
//!    of two bytes or more, applied as a random non-empty proper prefix of its bytes (a torn write; a write
//!    past the end extends the file only as far as the prefix reaches). Length changes and the whole-page
//!    writes left by an unmap are applied or dropped as a whole.
//! 3. **Mapped pages.** For an inode still mapped, each 4096-byte page of the words that differs from the
//!    image of step 2 (which is `durable` when the inode had no unsynced operations when it was mapped,
//!    the usual case) becomes, independently and at random, either the words' page (written back by the
//!    kernel) or stays as step 2 left it. So a flushed page always survives, and an unflushed dirty page
//!    comes back exactly old or exactly new.
//! 4. In the new file system every entry and every byte is durable, nothing is mapped or locked, no fault
//!    is armed and the operation count is zero. Regions, handles and locks of the old one keep working on
//!    the old one only.
//!
//! [`SimVfs::crash_clean`] is the deterministic variant that keeps nothing unsynced: durable entries,
//! durable bytes, durable pages.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{DirLock, MappedRegion, OpenMode, VFile, Vfs};

/// The page size of the simulated memory maps: a mapped file's length is a non-zero multiple of it, and a
/// crash keeps or loses each dirty mapped page as a whole.
pub const PAGE_BYTES: usize = 4096;

/// The kinds of mutating operation that [`SimVfs::fail_next`] can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// [`VFile::write_all_at`] and [`VFile::set_len`].
    Write,
    /// [`VFile::sync_data`].
    SyncData,
    /// [`Vfs::rename`].
    Rename,
    /// [`Vfs::sync_dir`].
    SyncDir,
    /// [`MappedRegion::flush`].
    Flush,
    /// [`Vfs::open`] with [`OpenMode::CreateNew`].
    Create,
    /// [`Vfs::remove_file`].
    Remove,
}

/// A simulated, fault-injecting, in-memory file system; see the module documentation for its crash model.
///
/// Clones share one file system.
#[derive(Clone)]
pub struct SimVfs {
    state: Arc<Mutex<State>>,
}

impl Default for SimVfs {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SimVfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        f.debug_struct("SimVfs")
            .field("dirs", &st.dirs.len())
            .field("inodes", &st.inodes.len())
            .field("mutating_ops", &st.ops)
            .finish_non_exhaustive()
    }
}

type Ino = u64;

#[derive(Default)]
struct State {
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    locks: BTreeSet<PathBuf>,
    faults: Faults,
    ops: u64,
}

#[derive(Default)]
struct Faults {
    /// How many more mutating operations may succeed; `None` is unlimited.
    budget: Option<u64>,
    /// One-shot failures, at most one per kind.
    next: Vec<(FaultOp, io::ErrorKind)>,
}

#[derive(Default)]
struct Dir {
    live: BTreeMap<OsString, Ino>,
    durable: BTreeMap<OsString, Ino>,
    log: Vec<DirOp>,
}

/// One unsynced directory-entry operation.
enum DirOp {
    /// A created file, or the target half of a rename from another directory.
    Insert { name: OsString, ino: Ino },
    /// A removed file, or the source half of a rename to another directory.
    Remove { name: OsString },
    /// A rename within the directory, replacing `to`.
    Rename { from: OsString, to: OsString, ino: Ino },
}

impl DirOp {
    fn apply(&self, entries: &mut BTreeMap<OsString, Ino>) {
        match self {
            DirOp::Insert { name, ino } => {
                entries.insert(name.clone(), *ino);
            }
            DirOp::Remove { name } => {
                entries.remove(name);
            }
            DirOp::Rename { from, to, ino } => {
                entries.remove(from);
                entries.insert(to.clone(), *ino);
            }
        }
    }
}

/// One unsynced file operation.
enum FileOp {
    /// `write_all_at`; a crash may tear it.
    Write { offset: usize, bytes: Vec<u8> },
    /// `set_len`.
    SetLen(usize),
    /// A dirty page written back at unmap; a crash keeps or loses it whole.
    Page { offset: usize, bytes: Vec<u8> },
}

#[derive(Default)]
struct Inode {
    /// The contents while not mapped (empty and unused while mapped).
    live: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<FileOp>,
    map: Option<Mapping>,
    /// Open [`SimFile`] handles.
    handles: usize,
}

struct Mapping {
    words: Arc<[AtomicU64]>,
    regions: usize,
}

impl Inode {
    fn len(&self) -> usize {
        match &self.map {
            Some(m) => m.words.len() * 8,
            None => self.live.len(),
        }
    }

    fn current_bytes(&self) -> Vec<u8> {
        match &self.map {
            Some(m) => words_to_bytes(&m.words),
            None => self.live.clone(),
        }
    }

    fn sync(&mut self) {
        self.durable = self.current_bytes();
        self.unsynced.clear();
    }

    /// Durable bytes with every unsynced operation applied.
    fn implied(&self) -> Vec<u8> {
        let mut img = self.durable.clone();
        for op in &self.unsynced {
            match op {
                FileOp::Write { offset, bytes } | FileOp::Page { offset, bytes } => {
                    write_into(&mut img, *offset, bytes)
                }
                FileOp::SetLen(len) => img.resize(*len, 0),
            }
        }
        img
    }

    fn unmap(&mut self) {
        let Some(m) = self.map.take() else { return };
        let current = words_to_bytes(&m.words);
        let implied = self.implied();
        for (i, page) in current.chunks(PAGE_BYTES).enumerate() {
            let start = i * PAGE_BYTES;
            if implied.get(start..start + page.len()) != Some(page) {
                self.unsynced.push(FileOp::Page { offset: start, bytes: page.to_vec() });
            }
        }
        self.live = current;
    }

    fn crash_image(&self, chooser: &mut Chooser) -> Vec<u8> {
        let mut img = self.durable.clone();
        for op in &self.unsynced {
            match op {
                FileOp::Write { offset, bytes } => {
                    let n = chooser.write_fate(bytes.len());
                    if let Some(prefix) = bytes.get(..n).filter(|p| !p.is_empty()) {
                        write_into(&mut img, *offset, prefix);
                    }
                }
                FileOp::SetLen(len) => {
                    if chooser.coin() {
                        img.resize(*len, 0);
                    }
                }
                FileOp::Page { offset, bytes } => {
                    if chooser.coin() {
                        write_into(&mut img, *offset, bytes);
                    }
                }
            }
        }
        if let Some(m) = &self.map {
            let current = words_to_bytes(&m.words);
            for (i, page) in current.chunks(PAGE_BYTES).enumerate() {
                let start = i * PAGE_BYTES;
                let differs = img.get(start..start + page.len()) != Some(page);
                if differs && chooser.coin() {
                    write_into(&mut img, start, page);
                }
            }
        }
        img
    }
}

/// Writes `bytes` into `buf` at `offset`, zero-filling any gap and extending `buf` as needed.
fn write_into(buf: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
    let end = offset + bytes.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    if let Some(dst) = buf.get_mut(offset..end) {
        dst.copy_from_slice(bytes);
    }
}

fn words_to_bytes(words: &[AtomicU64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(words.len() * 8);
    for w in words {
        out.extend_from_slice(&w.load(Ordering::Acquire).to_le_bytes());
    }
    out
}

fn bytes_to_words(bytes: &[u8]) -> Arc<[AtomicU64]> {
    bytes
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            AtomicU64::new(u64::from_le_bytes(b))
        })
        .collect()
}

/// Copies the words' bytes `[offset, offset + buf.len())` into `buf`; the range must lie inside the words.
fn read_words(words: &[AtomicU64], offset: usize, buf: &mut [u8]) {
    let mut pos = offset;
    let end = offset + buf.len();
    while pos < end {
        let within = pos % 8;
        let n = (8 - within).min(end - pos);
        let Some(word) = words.get(pos / 8) else {
            return;
        };
        let b = word.load(Ordering::Acquire).to_le_bytes();
        buf[pos - offset..pos - offset + n].copy_from_slice(&b[within..within + n]);
        pos += n;
    }
}

/// Stores `bytes` into the words at byte `offset` (read-modify-write of partly covered words); the range
/// must lie inside the words.
fn write_words(words: &[AtomicU64], offset: usize, bytes: &[u8]) {
    let mut pos = offset;
    let end = offset + bytes.len();
    while pos < end {
        let within = pos % 8;
        let n = (8 - within).min(end - pos);
        let Some(word) = words.get(pos / 8) else {
            return;
        };
        let mut b = word.load(Ordering::Acquire).to_le_bytes();
        b[within..within + n].copy_from_slice(&bytes[pos - offset..pos - offset + n]);
        word.store(u64::from_le_bytes(b), Ordering::Release);
        pos += n;
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): small, fast and good enough to pick crash outcomes.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; `n` must be non-zero.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// Makes the choices of a crash.
enum Chooser {
    Random(SplitMix64),
    /// Always loses whatever is unsynced.
    Clean,
}

impl Chooser {
    /// How many entries of a directory log of `len` entries survive.
    fn prefix(&mut self, len: usize) -> usize {
        match self {
            Chooser::Random(rng) => rng.below(len + 1),
            Chooser::Clean => 0,
        }
    }

    /// How many leading bytes of an unsynced write of `len` bytes reach the disk.
    fn write_fate(&mut self, len: usize) -> usize {
        match self {
            Chooser::Random(rng) => match rng.below(3) {
                0 => 0,
                1 => len,
                _ if len >= 2 => 1 + rng.below(len - 1),
                _ => len,
            },
            Chooser::Clean => 0,
        }
    }

    /// Whether an all-or-nothing change reaches the disk.
    fn coin(&mut self) -> bool {
        match self {
            Chooser::Random(rng) => rng.next_u64() & 1 == 1,
            Chooser::Clean => false,
        }
    }
}

fn not_found(what: &str, path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{what} {} not found", path.display()))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn to_usize(v: u64) -> io::Result<usize> {
    usize::try_from(v).map_err(|_| invalid(format!("offset or length {v} too large")))
}

/// Splits a file path into its directory and its name.
fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = path.file_name().ok_or_else(|| invalid(format!("{} does not name a file", path.display())))?;
    Ok((path.parent().unwrap_or(Path::new("")), name))
}

impl State {
    fn fresh() -> Self {
        let mut st = State::default();
        st.dirs.insert(PathBuf::from("/"), Dir::default());
        st.dirs.insert(PathBuf::new(), Dir::default());
        st
    }

    /// The inode named by `path` in the live entries.
    fn lookup(&self, path: &Path) -> io::Result<Ino> {
        if self.dirs.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, format!("{} is a directory", path.display())));
        }
        let (dir, name) = split(path)?;
        let dir = self.dirs.get(dir).ok_or_else(|| not_found("directory", dir))?;
        dir.live.get(name).copied().ok_or_else(|| not_found("file", path))
    }

    fn dir_mut(&mut self, path: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(path).ok_or_else(|| not_found("directory", path))
    }

    fn inode_mut(&mut self, ino: Ino) -> io::Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or_else(|| io::Error::other(format!("stale inode {ino}")))
    }

    /// Fails if a fault is armed for `op`; called after the operation's own checks, before it changes
    /// anything.
    fn inject(&mut self, op: FaultOp) -> io::Result<()> {
        if self.faults.budget == Some(0) {
            return Err(io::Error::other("injected fault"));
        }
        if let Some(i) = self.faults.next.iter().position(|(o, _)| *o == op) {
            let (_, kind) = self.faults.next.remove(i);
            return Err(io::Error::new(kind, format!("injected fault ({op:?})")));
        }
        Ok(())
    }

    /// Records a mutating operation that succeeded.
    fn succeeded(&mut self) {
        self.ops += 1;
        if let Some(b) = &mut self.faults.budget {
            *b = b.saturating_sub(1);
        }
    }

    /// Drops inodes that no entry, log, handle or region can reach any more.
    fn collect_garbage(&mut self) {
        let mut referenced = BTreeSet::new();
        for dir in self.dirs.values() {
            referenced.extend(dir.live.values().copied());
            referenced.extend(dir.durable.values().copied());
            for op in &dir.log {
                match op {
                    DirOp::Insert { ino, .. } | DirOp::Rename { ino, .. } => {
                        referenced.insert(*ino);
                    }
                    DirOp::Remove { .. } => {}
                }
            }
        }
        self.inodes.retain(|ino, inode| referenced.contains(ino) || inode.handles > 0 || inode.map.is_some());
    }
}

impl SimVfs {
    /// An empty file system holding only the roots `/` and the empty path (the directory of relative names).
    pub fn new() -> Self {
        Self::from_state(State::fresh())
    }

    fn from_state(state: State) -> Self {
        SimVfs { state: Arc::new(Mutex::new(state)) }
    }

    /// Lets `n` more mutating operations succeed, then fails every further one with
    /// `io::Error::other("injected fault")`, changing nothing, until [`SimVfs::clear_faults`].
    pub fn fail_after(&self, n: u64) {
        self.state.lock().faults.budget = Some(n);
    }

    /// Fails the next mutating operation of kind `op` once, with an error of `kind`, changing nothing.
    /// Arming a kind again replaces its pending fault.
    pub fn fail_next(&self, op: FaultOp, kind: io::ErrorKind) {
        let mut st = self.state.lock();
        st.faults.next.retain(|(o, _)| *o != op);
        st.faults.next.push((op, kind));
    }

    /// Disarms [`SimVfs::fail_after`] and every pending [`SimVfs::fail_next`].
    pub fn clear_faults(&self) {
        self.state.lock().faults = Faults::default();
    }

    /// How many mutating operations have succeeded on this file system.
    pub fn mutating_ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// The live bytes of the file at `path` (through its map if mapped), or `None` if there is none.
    pub fn snapshot_file(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state.lock();
        let ino = st.lookup(path).ok()?;
        st.inodes.get(&ino).map(Inode::current_bytes)
    }

    /// A new, independent file system holding what the disk could hold after a power loss now, with every
    /// random choice drawn from `seed` (see "Crash model" in the module documentation). `self` stays usable.
    pub fn crash(&self, seed: u64) -> SimVfs {
        self.crash_with(Chooser::Random(SplitMix64(seed)))
    }

    /// A new, independent file system holding only what is durable: durable entries, durable bytes and
    /// durable pages; everything unsynced is lost. `self` stays usable.
    pub fn crash_clean(&self) -> SimVfs {
        self.crash_with(Chooser::Clean)
    }

    fn crash_with(&self, mut chooser: Chooser) -> SimVfs {
        let st = self.state.lock();
        let mut dirs = BTreeMap::new();
        let mut reachable = BTreeSet::new();
        for (path, dir) in &st.dirs {
            let mut entries = dir.durable.clone();
            let keep = chooser.prefix(dir.log.len());
            for op in dir.log.iter().take(keep) {
                op.apply(&mut entries);
            }
            reachable.extend(entries.values().copied());
            dirs.insert(path.clone(), Dir { live: entries.clone(), durable: entries, log: Vec::new() });
        }
        let mut inodes = BTreeMap::new();
        for ino in reachable {
            let bytes = st.inodes.get(&ino).map(|inode| inode.crash_image(&mut chooser)).unwrap_or_default();
            inodes.insert(ino, Inode { live: bytes.clone(), durable: bytes, ..Inode::default() });
        }
        Self::from_state(State { dirs, inodes, next_ino: st.next_ino, ..State::default() })
    }
}

/// An open file of a [`SimVfs`].
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: Ino,
    writable: bool,
}

impl SimFile {
    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::PermissionDenied, "file opened read-only"))
        }
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut st = self.state.lock();
        if let Some(inode) = st.inodes.get_mut(&self.ino) {
            inode.handles = inode.handles.saturating_sub(1);
        }
        st.collect_garbage();
    }
}

impl VFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut st = self.state.lock();
        let inode = st.inode_mut(self.ino)?;
        let len = inode.len();
        let Ok(offset) = usize::try_from(offset) else {
            return Ok(0);
        };
        if offset >= len {
            return Ok(0);
        }
        let n = buf.len().min(len - offset);
        let dst = &mut buf[..n];
        match &inode.map {
            Some(m) => read_words(&m.words, offset, dst),
            None => dst.copy_from_slice(&inode.live[offset..offset + n]),
        }
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        let offset = to_usize(offset)?;
        let end = offset.checked_add(buf.len()).ok_or_else(|| invalid("write past the largest offset".to_string()))?;
        let mut st = self.state.lock();
        let inode = st.inode_mut(self.ino)?;
        if inode.map.is_some() && end > inode.len() {
            return Err(invalid(format!(
                "write to [{offset}, {end}) past the end of a mapped file of {} bytes",
                inode.len()
            )));
        }
        st.inject(FaultOp::Write)?;
        let inode = st.inode_mut(self.ino)?;
        match &inode.map {
            Some(m) => write_words(&m.words, offset, buf),
            None if buf.is_empty() => {}
            None => {
                write_into(&mut inode.live, offset, buf);
                inode.unsynced.push(FileOp::Write { offset, bytes: buf.to_vec() });
            }
        }
        st.succeeded();
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        st.inode_mut(self.ino)?;
        st.inject(FaultOp::SyncData)?;
        st.inode_mut(self.ino)?.sync();
        st.succeeded();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut st = self.state.lock();
        Ok(st.inode_mut(self.ino)?.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        let len = to_usize(len)?;
        let mut st = self.state.lock();
        if st.inode_mut(self.ino)?.map.is_some() {
            return Err(invalid("cannot change the length of a mapped file".to_string()));
        }
        st.inject(FaultOp::Write)?;
        let inode = st.inode_mut(self.ino)?;
        inode.live.resize(len, 0);
        inode.unsynced.push(FileOp::SetLen(len));
        st.succeeded();
        Ok(())
    }
}

/// A memory map of a [`SimVfs`] inode.
struct SimRegion {
    state: Arc<Mutex<State>>,
    ino: Ino,
    words: Arc<[AtomicU64]>,
}

impl MappedRegion for SimRegion {
    fn words(&self) -> &[AtomicU64] {
        &self.words
    }

    fn flush(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        st.inode_mut(self.ino)?;
        st.inject(FaultOp::Flush)?;
        let inode = st.inode_mut(self.ino)?;
        inode.durable = words_to_bytes(&self.words);
        inode.unsynced.clear();
        st.succeeded();
        Ok(())
    }
}

impl Drop for SimRegion {
    fn drop(&mut self) {
        let mut st = self.state.lock();
        if let Some(inode) = st.inodes.get_mut(&self.ino) {
            if let Some(m) = &mut inode.map {
                m.regions = m.regions.saturating_sub(1);
                if m.regions == 0 {
                    inode.unmap();
                }
            }
        }
        st.collect_garbage();
    }
}

/// The guard of a [`SimVfs`] directory lock.
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

impl DirLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.state.lock().locks.remove(&self.path);
    }
}

impl Vfs for SimVfs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        for dir in path.ancestors() {
            if let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) {
                if st.dirs.get(parent).is_some_and(|d| d.live.contains_key(name)) {
                    return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} is a file", dir.display())));
                }
            }
        }
        for dir in path.ancestors() {
            st.dirs.entry(dir.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn VFile>> {
        let mut st = self.state.lock();
        let ino = match mode {
            OpenMode::Read | OpenMode::ReadWrite => st.lookup(path)?,
            OpenMode::CreateNew => {
                let (dir, name) = split(path)?;
                let exists = st.dirs.contains_key(path) || st.dir_mut(dir)?.live.contains_key(name);
                if exists {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} already exists", path.display()),
                    ));
                }
                st.inject(FaultOp::Create)?;
                let ino = st.next_ino;
                st.next_ino += 1;
                st.inodes.insert(ino, Inode::default());
                let d = st.dir_mut(dir)?;
                d.live.insert(name.to_os_string(), ino);
                d.log.push(DirOp::Insert { name: name.to_os_string(), ino });
                st.succeeded();
                ino
            }
        };
        st.inode_mut(ino)?.handles += 1;
        Ok(Box::new(SimFile { state: Arc::clone(&self.state), ino, writable: mode != OpenMode::Read }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.lookup(path)?;
        let (dir, name) = split(path)?;
        st.inject(FaultOp::Remove)?;
        let d = st.dir_mut(dir)?;
        d.live.remove(name);
        d.log.push(DirOp::Remove { name: name.to_os_string() });
        st.succeeded();
        st.collect_garbage();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        let ino = st.lookup(from)?;
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        if st.dirs.contains_key(to) {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, format!("{} is a directory", to.display())));
        }
        st.dir_mut(to_dir)?;
        st.inject(FaultOp::Rename)?;
        if from_dir == to_dir {
            if from_name != to_name {
                let d = st.dir_mut(from_dir)?;
                d.live.remove(from_name);
                d.live.insert(to_name.to_os_string(), ino);
                d.log.push(DirOp::Rename { from: from_name.to_os_string(), to: to_name.to_os_string(), ino });
            }
        } else {
            let d = st.dir_mut(from_dir)?;
            d.live.remove(from_name);
            d.log.push(DirOp::Remove { name: from_name.to_os_string() });
            let d = st.dir_mut(to_dir)?;
            d.live.insert(to_name.to_os_string(), ino);
            d.log.push(DirOp::Insert { name: to_name.to_os_string(), ino });
        }
        st.succeeded();
        st.collect_garbage();
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.dir_mut(path)?;
        st.inject(FaultOp::SyncDir)?;
        let d = st.dir_mut(path)?;
        d.durable = d.live.clone();
        d.log.clear();
        st.succeeded();
        st.collect_garbage();
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        let dir = st.dirs.get(path).ok_or_else(|| not_found("directory", path))?;
        let subdirs = st.dirs.keys().filter(|p| p.parent() == Some(path)).filter_map(|p| p.file_name());
        let mut names: Vec<String> = dir
            .live
            .keys()
            .map(OsString::as_os_str)
            .chain(subdirs)
            .filter_map(|n| n.to_str().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.state.lock();
        st.dirs.contains_key(path) || st.lookup(path).is_ok()
    }

    fn map(&self, path: &Path) -> io::Result<Arc<dyn MappedRegion>> {
        let mut st = self.state.lock();
        let ino = st.lookup(path)?;
        let inode = st.inode_mut(ino)?;
        let words = match &mut inode.map {
            Some(m) => {
                m.regions += 1;
                Arc::clone(&m.words)
            }
            None => {
                let len = inode.live.len();
                if len == 0 || len % PAGE_BYTES != 0 {
                    return Err(invalid(format!(
                        "cannot map {}: length {len} is not a non-zero multiple of {PAGE_BYTES}",
                        path.display()
                    )));
                }
                let words = bytes_to_words(&std::mem::take(&mut inode.live));
                inode.map = Some(Mapping { words: Arc::clone(&words), regions: 1 });
                words
            }
        };
        Ok(Arc::new(SimRegion { state: Arc::clone(&self.state), ino, words }))
    }

    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut st = self.state.lock();
        if !st.dirs.contains_key(path) {
            return Err(not_found("directory", path));
        }
        if !st.locks.insert(path.to_path_buf()) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, format!("{} is locked", path.display())));
        }
        Ok(Box::new(SimLock { state: Arc::clone(&self.state), path: path.to_path_buf() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::io::{create_zeroed, tmp_path, write_atomic};

    const SEEDS: std::ops::Range<u64> = 0..300;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    /// A file system with `/db` created.
    fn fs() -> SimVfs {
        let vfs = SimVfs::new();
        vfs.create_dir_all(&p("/db")).unwrap();
        vfs
    }

    fn write_file(vfs: &SimVfs, path: &Path, bytes: &[u8], sync: bool) {
        let f = vfs.open(path, OpenMode::CreateNew).unwrap();
        f.write_all_at(bytes, 0).unwrap();
        if sync {
            f.sync_data().unwrap();
            vfs.sync_dir(path.parent().unwrap()).unwrap();
        }
    }

    fn read(vfs: &SimVfs, path: &Path) -> Option<Vec<u8>> {
        vfs.exists(path).then(|| vfs.open(path, OpenMode::Read).unwrap().read_all().unwrap())
    }

    fn page_bytes(fill: u8) -> Vec<u8> {
        vec![fill; PAGE_BYTES]
    }

    #[test]
    fn basic_errors() {
        let vfs = fs();
        let e = |r: io::Result<Box<dyn VFile>>| r.err().map(|e| e.kind());
        assert_eq!(e(vfs.open(&p("/db/x"), OpenMode::Read)), Some(io::ErrorKind::NotFound));
        assert_eq!(e(vfs.open(&p("/db/x"), OpenMode::ReadWrite)), Some(io::ErrorKind::NotFound));
        assert_eq!(e(vfs.open(&p("/nodir/x"), OpenMode::CreateNew)), Some(io::ErrorKind::NotFound));
        write_file(&vfs, &p("/db/x"), b"abc", false);
        assert_eq!(e(vfs.open(&p("/db/x"), OpenMode::CreateNew)), Some(io::ErrorKind::AlreadyExists));
        assert_eq!(vfs.remove_file(&p("/db/y")).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(vfs.remove_file(&p("/nodir/y")).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(vfs.rename(&p("/db/y"), &p("/db/z")).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(vfs.rename(&p("/db/x"), &p("/nodir/z")).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(vfs.sync_dir(&p("/nodir")).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(vfs.list_dir(&p("/nodir")).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert!(vfs.exists(&p("/db")) && vfs.exists(&p("/")) && vfs.exists(&p("/db/x")));
        assert!(!vfs.exists(&p("/db/y")) && !vfs.exists(&p("/nodir")));
        let ro = vfs.open(&p("/db/x"), OpenMode::Read).unwrap();
        assert_eq!(ro.write_all_at(b"z", 0).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(vfs.mutating_ops(), 2);
    }

    #[test]
    fn read_write_set_len_and_shared_handles() {
        let vfs = fs();
        let a = vfs.open(&p("/db/f"), OpenMode::CreateNew).unwrap();
        let b = vfs.open(&p("/db/f"), OpenMode::ReadWrite).unwrap();
        a.write_all_at(b"hello", 0).unwrap();
        b.write_all_at(b"!", 7).unwrap();
        assert_eq!(a.read_all().unwrap(), b"hello\0\0!");
        assert_eq!(b.len().unwrap(), 8);
        let mut buf = [0u8; 4];
        assert_eq!(a.read_at(&mut buf, 6).unwrap(), 2);
        assert_eq!(a.read_at(&mut buf, 8).unwrap(), 0);
        assert_eq!(a.read_exact_at(&mut buf, 6).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        b.set_len(3).unwrap();
        assert_eq!(a.read_all().unwrap(), b"hel");
        a.set_len(5).unwrap();
        assert_eq!(vfs.snapshot_file(&p("/db/f")).unwrap(), b"hel\0\0");
        assert_eq!(vfs.snapshot_file(&p("/db/none")), None);
    }

    #[test]
    fn removed_and_replaced_inodes_stay_valid_for_open_handles() {
        let vfs = fs();
        write_file(&vfs, &p("/db/a"), b"old", true);
        let h = vfs.open(&p("/db/a"), OpenMode::ReadWrite).unwrap();
        write_file(&vfs, &p("/db/b"), b"new", true);
        vfs.rename(&p("/db/b"), &p("/db/a")).unwrap();
        vfs.sync_dir(&p("/db")).unwrap();
        assert_eq!(h.read_all().unwrap(), b"old");
        h.write_all_at(b"O", 0).unwrap();
        h.sync_data().unwrap();
        assert_eq!(read(&vfs, &p("/db/a")).unwrap(), b"new");
        vfs.remove_file(&p("/db/a")).unwrap();
        assert_eq!(h.read_all().unwrap(), b"Old");
        assert_eq!(vfs.list_dir(&p("/db")).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn list_dir_sorted_with_subdirs() {
        let vfs = fs();
        vfs.create_dir_all(&p("/db/wal/x")).unwrap();
        for n in ["c", "a", "b"] {
            write_file(&vfs, &p("/db").join(n), b"", false);
        }
        assert_eq!(vfs.list_dir(&p("/db")).unwrap(), ["a", "b", "c", "wal"]);
        assert_eq!(vfs.list_dir(&p("/db/wal")).unwrap(), ["x"]);
        assert_eq!(vfs.list_dir(&p("/")).unwrap(), ["db"]);
        assert!(vfs.create_dir_all(&p("/db/a/sub")).is_err());
        // Relative paths work too.
        vfs.create_dir_all(&p("rel/d")).unwrap();
        write_file(&vfs, &p("rel/d/f"), b"x", true);
        assert_eq!(read(&vfs, &p("rel/d/f")).unwrap(), b"x");
        assert_eq!(read(&vfs.crash(1), &p("rel/d/f")).unwrap(), b"x");
    }

    #[test]
    fn synced_data_survives_every_crash() {
        let vfs = fs();
        vfs.create_dir_all(&p("/db/wal")).unwrap();
        write_file(&vfs, &p("/db/a"), b"durable a", true);
        write_file(&vfs, &p("/db/wal/s1"), &[7u8; 1000], true);
        // Plenty of unsynced noise around it.
        let f = vfs.open(&p("/db/a"), OpenMode::ReadWrite).unwrap();
        f.write_all_at(b"more", 9).unwrap();
        write_file(&vfs, &p("/db/b"), b"unsynced", false);
        vfs.rename(&p("/db/b"), &p("/db/c")).unwrap();
        for seed in SEEDS {
            let c = vfs.crash(seed);
            let a = read(&c, &p("/db/a")).unwrap();
            assert!(a.starts_with(b"durable a"), "seed {seed}");
            assert_eq!(read(&c, &p("/db/wal/s1")).unwrap(), [7u8; 1000]);
        }
        let clean = vfs.crash_clean();
        assert_eq!(read(&clean, &p("/db/a")).unwrap(), b"durable a");
        assert_eq!(clean.list_dir(&p("/db")).unwrap(), ["a", "wal"]);
    }

    #[test]
    fn unsynced_write_may_vanish_or_tear_but_synced_prefix_is_intact() {
        let vfs = fs();
        write_file(&vfs, &p("/db/log"), b"SYNCED", true);
        let f = vfs.open(&p("/db/log"), OpenMode::ReadWrite).unwrap();
        f.write_all_at(b"0123456789", 6).unwrap();
        let (mut lost, mut full, mut torn) = (0, 0, 0);
        for seed in SEEDS {
            let got = read(&vfs.crash(seed), &p("/db/log")).unwrap();
            assert_eq!(&got[..6], b"SYNCED", "seed {seed}");
            let tail = &got[6..];
            assert!(b"0123456789".starts_with(tail), "seed {seed}: {tail:?}");
            match tail.len() {
                0 => lost += 1,
                10 => full += 1,
                _ => torn += 1,
            }
        }
        assert!(lost > 0 && full > 0 && torn > 0, "{lost} {full} {torn}");
        assert_eq!(read(&vfs.crash_clean(), &p("/db/log")).unwrap(), b"SYNCED");
    }

    #[test]
    fn overwrites_are_old_or_a_torn_prefix_of_new() {
        let vfs = fs();
        write_file(&vfs, &p("/db/f"), &[b'o'; 16], true);
        let f = vfs.open(&p("/db/f"), OpenMode::ReadWrite).unwrap();
        f.write_all_at(&[b'n'; 8], 4).unwrap();
        f.set_len(32).unwrap();
        let mut lens = BTreeSet::new();
        for seed in SEEDS {
            let got = read(&vfs.crash(seed), &p("/db/f")).unwrap();
            lens.insert(got.len());
            let n = got[4..12].iter().take_while(|&&b| b == b'n').count();
            assert!(got[4 + n..12].iter().all(|&b| b == b'o'), "seed {seed}");
            assert!(got[..4].iter().chain(&got[12..16]).all(|&b| b == b'o'));
            assert!(got[16..].iter().all(|&b| b == 0));
        }
        assert_eq!(lens, BTreeSet::from([16, 32]));
    }

    #[test]
    fn crash_is_deterministic_per_seed() {
        let vfs = fs();
        for i in 0..10u8 {
            write_file(&vfs, &p(&format!("/db/f{i}")), &[i; 100], i % 3 == 0);
        }
        for seed in 0..20 {
            let (a, b) = (vfs.crash(seed), vfs.crash(seed));
            let names = a.list_dir(&p("/db")).unwrap();
            assert_eq!(names, b.list_dir(&p("/db")).unwrap());
            for n in names {
                let path = p("/db").join(n);
                assert_eq!(read(&a, &path), read(&b, &path));
            }
        }
    }

    #[test]
    fn rename_without_sync_dir_is_atomic_but_may_be_undone() {
        let vfs = fs();
        write_file(&vfs, &p("/db/old"), b"v1", true);
        write_file(&vfs, &p("/db/tmp"), b"v2", true);
        write_file(&vfs, &p("/db/fresh.tmp"), b"v3", true);
        vfs.rename(&p("/db/tmp"), &p("/db/old")).unwrap();
        vfs.rename(&p("/db/fresh.tmp"), &p("/db/fresh")).unwrap();
        let (mut undone, mut done) = (0, 0);
        for seed in SEEDS {
            let c = vfs.crash(seed);
            let (tmp, old) = (read(&c, &p("/db/tmp")), read(&c, &p("/db/old")));
            match (tmp.as_deref(), old.as_deref()) {
                (Some(b"v2"), Some(b"v1")) => undone += 1,
                (None, Some(b"v2")) => done += 1,
                other => panic!("seed {seed}: {other:?}"),
            }
            let (ft, f) = (read(&c, &p("/db/fresh.tmp")), read(&c, &p("/db/fresh")));
            assert!(ft.is_some() != f.is_some(), "seed {seed}");
            assert_eq!(ft.or(f).unwrap(), b"v3");
        }
        assert!(undone > 0 && done > 0, "{undone} {done}");

        vfs.sync_dir(&p("/db")).unwrap();
        for seed in SEEDS {
            let c = vfs.crash(seed);
            assert_eq!(c.list_dir(&p("/db")).unwrap(), ["fresh", "old"]);
            assert_eq!(read(&c, &p("/db/old")).unwrap(), b"v2");
        }
    }

    #[test]
    fn unsynced_create_and_remove_may_be_lost() {
        let vfs = fs();
        write_file(&vfs, &p("/db/gone"), b"g", true);
        vfs.remove_file(&p("/db/gone")).unwrap();
        write_file(&vfs, &p("/db/new"), b"n", false);
        let mut seen = BTreeSet::new();
        for seed in SEEDS {
            let c = vfs.crash(seed);
            let names = c.list_dir(&p("/db")).unwrap();
            // Log order: remove gone, create new; a prefix of it applies.
            assert!([vec!["gone"], vec![], vec!["new"]].iter().any(|v| *v == names), "seed {seed}: {names:?}");
            if let Some(g) = read(&c, &p("/db/gone")) {
                assert_eq!(g, b"g");
            }
            seen.insert(names);
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(vfs.crash_clean().list_dir(&p("/db")).unwrap(), ["gone"]);
    }

    #[test]
    fn region_stores_are_visible_through_read_at_and_writes_through_words() {
        let vfs = fs();
        create_zeroed(&vfs, &p("/db/head"), 2 * PAGE_BYTES as u64).unwrap();
        let r = vfs.map(&p("/db/head")).unwrap();
        assert_eq!(r.words().len(), 2 * PAGE_BYTES / 8);
        r.words()[1].store(u64::from_le_bytes(*b"ABCDEFGH"), Ordering::Release);
        let f = vfs.open(&p("/db/head"), OpenMode::ReadWrite).unwrap();
        let mut buf = [0u8; 10];
        f.read_exact_at(&mut buf, 7).unwrap();
        assert_eq!(&buf, b"\0ABCDEFGH\0");
        f.write_all_at(b"xyz", 14).unwrap();
        assert_eq!(r.words()[1].load(Ordering::Acquire).to_le_bytes(), *b"ABCDEFxy");
        assert_eq!(r.words()[2].load(Ordering::Acquire).to_le_bytes()[0], b'z');
        let r2 = vfs.map(&p("/db/head")).unwrap();
        assert!(std::ptr::eq(r.words().as_ptr(), r2.words().as_ptr()));
        assert_eq!(f.len().unwrap(), 2 * PAGE_BYTES as u64);
        assert_eq!(f.set_len(PAGE_BYTES as u64).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert!(f.write_all_at(b"x", 2 * PAGE_BYTES as u64).is_err());
        assert_eq!(&vfs.snapshot_file(&p("/db/head")).unwrap()[8..17], b"ABCDEFxyz");
        drop((r, r2));
        // Unmapped: the bytes stay, and the file can change length again.
        assert_eq!(&f.read_all().unwrap()[8..17], b"ABCDEFxyz");
        f.set_len(PAGE_BYTES as u64).unwrap();
    }

    #[test]
    fn map_requires_a_page_multiple() {
        let vfs = fs();
        write_file(&vfs, &p("/db/small"), &[1; 100], true);
        write_file(&vfs, &p("/db/empty"), b"", true);
        for n in ["small", "empty"] {
            let err = vfs.map(&p("/db").join(n)).err().unwrap();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
        assert_eq!(vfs.map(&p("/db/none")).err().unwrap().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn flushed_pages_survive_and_dirty_pages_are_old_or_new() {
        const PAGES: usize = 4;
        let vfs = fs();
        create_zeroed(&vfs, &p("/db/head"), (PAGES * PAGE_BYTES) as u64).unwrap();
        let r = vfs.map(&p("/db/head")).unwrap();
        let words_per_page = PAGE_BYTES / 8;
        let fill = |page: usize, v: u8| {
            for w in &r.words()[page * words_per_page..(page + 1) * words_per_page] {
                w.store(u64::from_le_bytes([v; 8]), Ordering::Release);
            }
        };
        // Pages 0 and 1 flushed with 1, then page 1 dirtied to 2; pages 2 and 3 dirtied to 3 (3 only
        // in its first word: a partly dirty page is still old or new as a whole).
        fill(0, 1);
        fill(1, 1);
        r.flush().unwrap();
        fill(1, 2);
        fill(2, 3);
        r.words()[3 * words_per_page].store(u64::MAX, Ordering::Release);
        let mut new_page3 = vec![0u8; PAGE_BYTES];
        new_page3[..8].fill(0xFF);
        let mut outcomes = [[0usize; 2]; PAGES];
        for seed in SEEDS {
            let img = vfs.crash(seed).snapshot_file(&p("/db/head")).unwrap();
            assert_eq!(img.len(), PAGES * PAGE_BYTES);
            let pages: Vec<&[u8]> = img.chunks(PAGE_BYTES).collect();
            assert_eq!(pages[0], page_bytes(1), "seed {seed}");
            let cases = [
                (page_bytes(1), page_bytes(1)),
                (page_bytes(1), page_bytes(2)),
                (page_bytes(0), page_bytes(3)),
                (page_bytes(0), new_page3.clone()),
            ];
            for (i, (old, new)) in cases.iter().enumerate() {
                if pages[i] == old.as_slice() {
                    outcomes[i][0] += 1;
                } else if pages[i] == new.as_slice() {
                    outcomes[i][1] += 1;
                } else {
                    panic!("seed {seed}: page {i} is neither old nor new");
                }
            }
        }
        for (i, [old, new]) in outcomes.iter().enumerate().skip(1) {
            assert!(*old > 0 && *new > 0, "page {i}: {old} old, {new} new");
        }
        let clean = vfs.crash_clean().snapshot_file(&p("/db/head")).unwrap();
        assert_eq!(&clean[..2 * PAGE_BYTES], [page_bytes(1), page_bytes(1)].concat());
        assert!(clean[2 * PAGE_BYTES..].iter().all(|&b| b == 0));

        // After a flush every page survives every crash.
        r.flush().unwrap();
        let live = vfs.snapshot_file(&p("/db/head")).unwrap();
        for seed in SEEDS {
            assert_eq!(vfs.crash(seed).snapshot_file(&p("/db/head")).unwrap(), live);
        }
    }

    #[test]
    fn dirty_pages_of_an_unmapped_file_can_still_be_lost_whole() {
        let vfs = fs();
        create_zeroed(&vfs, &p("/db/head"), 2 * PAGE_BYTES as u64).unwrap();
        let r = vfs.map(&p("/db/head")).unwrap();
        r.words()[0].store(1, Ordering::Release);
        r.words()[PAGE_BYTES / 8].store(2, Ordering::Release);
        drop(r);
        let mut seen = BTreeSet::new();
        for seed in SEEDS {
            let img = vfs.crash(seed).snapshot_file(&p("/db/head")).unwrap();
            let w0 = img[0];
            let w1 = img[PAGE_BYTES];
            assert!(w0 <= 1 && (w1 == 0 || w1 == 2), "seed {seed}");
            seen.insert((w0, w1));
        }
        assert_eq!(seen.len(), 4);
        let f = vfs.open(&p("/db/head"), OpenMode::Read).unwrap();
        f.sync_data().unwrap();
        assert_eq!(vfs.crash_clean().snapshot_file(&p("/db/head")).unwrap()[PAGE_BYTES], 2);
    }

    #[test]
    fn old_regions_do_not_affect_the_crashed_file_system() {
        let vfs = fs();
        create_zeroed(&vfs, &p("/db/head"), PAGE_BYTES as u64).unwrap();
        let r = vfs.map(&p("/db/head")).unwrap();
        r.words()[0].store(5, Ordering::Release);
        r.flush().unwrap();
        let c = vfs.crash(3);
        r.words()[0].store(6, Ordering::Release);
        r.flush().unwrap();
        assert_eq!(c.snapshot_file(&p("/db/head")).unwrap()[0], 5);
        let r2 = c.map(&p("/db/head")).unwrap();
        assert_eq!(r2.words()[0].load(Ordering::Acquire), 5);
        assert_eq!(vfs.snapshot_file(&p("/db/head")).unwrap()[0], 6);
    }

    #[test]
    fn fail_after_fails_the_next_op_and_changes_nothing() {
        for n in 0..6u64 {
            let vfs = fs();
            write_file(&vfs, &p("/db/a"), b"aaaa", true);
            write_file(&vfs, &p("/db/b"), b"bbbb", true);
            let f = vfs.open(&p("/db/a"), OpenMode::ReadWrite).unwrap();
            let before_ops = vfs.mutating_ops();
            vfs.fail_after(n);
            // A sequence of six different mutating ops; the first n succeed.
            let ops: Vec<Box<dyn Fn() -> io::Result<()>>> = vec![
                Box::new(|| f.write_all_at(b"bb", 1)),
                Box::new(|| f.sync_data()),
                Box::new(|| f.set_len(2)),
                Box::new(|| vfs.open(&p("/db/d"), OpenMode::CreateNew).map(drop)),
                Box::new(|| vfs.rename(&p("/db/b"), &p("/db/c"))),
                Box::new(|| vfs.sync_dir(&p("/db"))),
            ];
            for op in &ops[..n as usize] {
                op().unwrap();
            }
            let snapshot = (vfs.list_dir(&p("/db")).unwrap(), vfs.snapshot_file(&p("/db/a")));
            let clean = vfs.crash_clean();
            let clean_snapshot = (clean.list_dir(&p("/db")).unwrap(), clean.snapshot_file(&p("/db/a")));
            assert_eq!(vfs.mutating_ops(), before_ops + n);
            for op in &ops[n as usize..] {
                let err = op().unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::Other);
                assert_eq!(err.to_string(), "injected fault");
            }
            assert_eq!(vfs.remove_file(&p("/db/a")).unwrap_err().kind(), io::ErrorKind::Other);
            assert_eq!((vfs.list_dir(&p("/db")).unwrap(), vfs.snapshot_file(&p("/db/a"))), snapshot);
            let clean = vfs.crash_clean();
            assert_eq!((clean.list_dir(&p("/db")).unwrap(), clean.snapshot_file(&p("/db/a"))), clean_snapshot);
            assert_eq!(vfs.mutating_ops(), before_ops + n);
            // Reads still work.
            assert_eq!(f.len().unwrap(), snapshot.1.as_ref().unwrap().len() as u64);
            vfs.clear_faults();
            f.write_all_at(b"z", 0).unwrap();
            vfs.remove_file(&p("/db/a")).unwrap();
        }
    }

    #[test]
    fn fail_after_covers_region_flush() {
        let vfs = fs();
        create_zeroed(&vfs, &p("/db/head"), PAGE_BYTES as u64).unwrap();
        let r = vfs.map(&p("/db/head")).unwrap();
        r.words()[0].store(9, Ordering::Release);
        vfs.fail_after(0);
        assert_eq!(r.flush().unwrap_err().kind(), io::ErrorKind::Other);
        assert_eq!(vfs.crash_clean().snapshot_file(&p("/db/head")).unwrap()[0], 0);
        vfs.clear_faults();
        r.flush().unwrap();
        assert_eq!(vfs.crash_clean().snapshot_file(&p("/db/head")).unwrap()[0], 9);
    }

    #[test]
    fn fail_next_fails_one_op_of_its_kind_once() {
        let vfs = fs();
        write_file(&vfs, &p("/db/a"), b"a", true);
        vfs.fail_next(FaultOp::Rename, io::ErrorKind::PermissionDenied);
        vfs.fail_next(FaultOp::SyncDir, io::ErrorKind::StorageFull);
        // Other kinds are unaffected, and a rename that fails its own checks does not consume the fault.
        write_file(&vfs, &p("/db/b"), b"b", false);
        assert_eq!(vfs.rename(&p("/db/x"), &p("/db/y")).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(vfs.rename(&p("/db/a"), &p("/db/c")).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(vfs.list_dir(&p("/db")).unwrap(), ["a", "b"]);
        vfs.rename(&p("/db/a"), &p("/db/c")).unwrap();
        assert_eq!(vfs.sync_dir(&p("/db")).unwrap_err().kind(), io::ErrorKind::StorageFull);
        assert_eq!(vfs.crash_clean().list_dir(&p("/db")).unwrap(), ["a"]);
        vfs.sync_dir(&p("/db")).unwrap();
        assert_eq!(vfs.crash_clean().list_dir(&p("/db")).unwrap(), ["b", "c"]);

        for op in [FaultOp::Write, FaultOp::SyncData, FaultOp::Create, FaultOp::Remove] {
            vfs.fail_next(op, io::ErrorKind::Other);
        }
        let f = vfs.open(&p("/db/c"), OpenMode::ReadWrite).unwrap();
        assert!(f.write_all_at(b"x", 0).is_err());
        assert!(f.sync_data().is_err());
        assert!(vfs.open(&p("/db/d"), OpenMode::CreateNew).is_err());
        assert!(vfs.remove_file(&p("/db/b")).is_err());
        assert_eq!(f.read_all().unwrap(), b"a");
        assert_eq!(vfs.list_dir(&p("/db")).unwrap(), ["b", "c"]);
        f.write_all_at(b"x", 0).unwrap();
        f.sync_data().unwrap();
        vfs.remove_file(&p("/db/b")).unwrap();
        vfs.open(&p("/db/d"), OpenMode::CreateNew).unwrap();
    }

    #[test]
    fn lock_dir_is_exclusive() {
        let vfs = fs();
        let guard = vfs.lock_dir(&p("/db")).unwrap();
        let err = vfs.clone().lock_dir(&p("/db")).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // Another directory, and the crashed file system, are independent.
        vfs.create_dir_all(&p("/other")).unwrap();
        let other = vfs.lock_dir(&p("/other")).unwrap();
        let crashed = vfs.crash(0);
        drop(crashed.lock_dir(&p("/db")).unwrap());
        drop(guard);
        let again = vfs.lock_dir(&p("/db")).unwrap();
        drop((again, other));
        assert_eq!(vfs.lock_dir(&p("/nodir")).err().unwrap().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn mod_helpers_work_on_sim() {
        let vfs = fs();
        write_atomic(&vfs, &p("/db/MANIFEST"), b"one").unwrap();
        write_atomic(&vfs, &p("/db/MANIFEST"), b"two").unwrap();
        create_zeroed(&vfs, &p("/db/head"), 3 * PAGE_BYTES as u64).unwrap();
        assert!(!vfs.exists(&tmp_path(&p("/db/MANIFEST"))));
        for seed in SEEDS {
            let c = vfs.crash(seed);
            assert_eq!(c.list_dir(&p("/db")).unwrap(), ["MANIFEST", "head"]);
            assert_eq!(read(&c, &p("/db/MANIFEST")).unwrap(), b"two");
            assert_eq!(read(&c, &p("/db/head")).unwrap(), vec![0u8; 3 * PAGE_BYTES]);
        }
        // A leftover temporary file is replaced.
        write_file(&vfs, &tmp_path(&p("/db/MANIFEST")), b"junk", false);
        write_atomic(&vfs, &p("/db/MANIFEST"), b"three").unwrap();
        assert_eq!(read(&vfs.crash_clean(), &p("/db/MANIFEST")).unwrap(), b"three");
        assert_eq!(create_zeroed(&vfs, &p("/db/head"), 8).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        // An injected fault in the middle of write_atomic leaves the old or the new version.
        for n in 0..6 {
            vfs.fail_after(n);
            let res = write_atomic(&vfs, &p("/db/MANIFEST"), b"four");
            vfs.clear_faults();
            assert_eq!(res.is_ok(), n >= 5, "n {n}");
            for seed in 0..50 {
                let got = read(&vfs.crash(seed), &p("/db/MANIFEST")).unwrap();
                assert!(got == b"three" || got == b"four", "n {n} seed {seed}");
            }
            if res.is_ok() {
                assert_eq!(read(&vfs.crash(n), &p("/db/MANIFEST")).unwrap(), b"four");
            }
            write_atomic(&vfs, &p("/db/MANIFEST"), b"three").unwrap();
        }
    }

    #[test]
    fn cross_directory_rename_can_leave_both_or_neither_name() {
        let vfs = fs();
        vfs.create_dir_all(&p("/db/a")).unwrap();
        vfs.create_dir_all(&p("/db/b")).unwrap();
        write_file(&vfs, &p("/db/a/f"), b"f", true);
        vfs.rename(&p("/db/a/f"), &p("/db/b/f")).unwrap();
        let mut seen = BTreeSet::new();
        for seed in SEEDS {
            let c = vfs.crash(seed);
            seen.insert((c.exists(&p("/db/a/f")), c.exists(&p("/db/b/f"))));
        }
        assert_eq!(seen.len(), 4);
        vfs.sync_dir(&p("/db/a")).unwrap();
        vfs.sync_dir(&p("/db/b")).unwrap();
        for seed in SEEDS {
            let c = vfs.crash(seed);
            assert!(!c.exists(&p("/db/a/f")) && read(&c, &p("/db/b/f")).unwrap() == b"f");
        }
    }

    #[test]
    fn unreachable_inodes_are_collected() {
        let vfs = fs();
        for i in 0..20 {
            write_file(&vfs, &p(&format!("/db/f{i}")), &[0; 64], true);
            vfs.remove_file(&p(&format!("/db/f{i}"))).unwrap();
            vfs.sync_dir(&p("/db")).unwrap();
        }
        assert_eq!(vfs.state.lock().inodes.len(), 0);
    }

    #[test]
    fn usable_from_many_threads_as_dyn_vfs() {
        let vfs: Arc<dyn Vfs> = Arc::new(fs());
        create_zeroed(&*vfs, &p("/db/head"), PAGE_BYTES as u64).unwrap();
        let region = vfs.map(&p("/db/head")).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (vfs, region) = (&vfs, &region);
                s.spawn(move || {
                    let name = p(&format!("/db/t{t}"));
                    let f = vfs.open(&name, OpenMode::CreateNew).unwrap();
                    for i in 0..100u64 {
                        region.words()[t as usize].store(i, Ordering::Release);
                        f.write_all_at(&i.to_le_bytes(), i * 8).unwrap();
                    }
                    f.sync_data().unwrap();
                });
            }
        });
        vfs.sync_dir(&p("/db")).unwrap();
        region.flush().unwrap();
        let head = vfs.open(&p("/db/head"), OpenMode::Read).unwrap().read_all().unwrap();
        for t in 0..4 {
            assert_eq!(head[t * 8], 99);
            assert_eq!(read_any(&*vfs, &p(&format!("/db/t{t}"))).len(), 800);
        }
    }

    fn read_any(vfs: &dyn Vfs, path: &Path) -> Vec<u8> {
        vfs.open(path, OpenMode::Read).unwrap().read_all().unwrap()
    }
}
