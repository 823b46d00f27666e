//! `silt check`: a read-only verification of a data directory, in the spirit of `promtool tsdb analyze`.
//!
//! [`check`] reads the manifest, every WAL segment and every head file header through the existing decoders
//! ([`Manifest::decode`], [`segment::scan`], [`file::check_header`], [`payload`]) and reports what it found
//! in a [`CheckReport`]. It never writes: files are opened read-only, nothing is created, repaired or
//! removed, and the directory lock is not taken, so it can run on a directory a live process holds.
//!
//! **Live directories.** A process may checkpoint while the check runs (replacing the manifest and removing
//! old segments), which could make a consistent directory look damaged. The check reads the manifest again
//! at the end and starts over (up to [`ATTEMPTS`] times) if it changed or a file vanished meanwhile. A torn
//! tail in the newest segment of a live directory is normal (the writer may be mid-write): a warning.
//!
//! **Severity.** [`Severity::Damage`] means data is lost or the engine would refuse to open the directory;
//! [`Severity::Warning`] means recovery repairs it on its own (a torn tail in the newest segment, files an
//! interrupted operation left behind) or it costs nothing (an LSN gap the checkpoint covers).
//!
//! [`segment::scan`]: crate::storage::wal::segment::scan
//! [`file::check_header`]: crate::storage::head::file::check_header

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::storage::error::{CorruptionKind, StorageError};
use crate::storage::head::file::{self as head_file, HeadFileHeader, MAX_PAGE_SLOTS};
use crate::storage::io::{tmp_path, OpenMode, Vfs};
use crate::storage::manifest::{Manifest, MANIFEST_NAME};
use crate::storage::wal::list_segments;
use crate::storage::wal::payload;
use crate::storage::wal::record::{decode_frame, Frame, FrameHeader, FRAME_ALIGN, FRAME_HEADER_LEN};
use crate::storage::wal::segment::{self, ScanEnd, SEGMENT_HEADER_LEN};
use crate::storage::Lsn;
use zerocopy::FromBytes;

/// How many times [`check`] starts over when a live process changes the directory under it.
pub const ATTEMPTS: usize = 3;

/// Byte offset of `first_lsn` in a segment header.
const HEADER_FIRST_LSN_OFFSET: u64 = 16;
/// Byte offset of `seq` in a segment header.
const HEADER_SEQ_OFFSET: u64 = 8;

/// How bad a [`Problem`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Recovery repairs it on its own, or it costs nothing; the directory is usable.
    Warning,
    /// Data is lost, or the engine would refuse to open the directory.
    Damage,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Severity::Warning => "warning",
            Severity::Damage => "DAMAGE",
        })
    }
}

/// One thing the check found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Damage or warning.
    pub severity: Severity,
    /// The file (or directory) concerned.
    pub file: PathBuf,
    /// Byte offset in the file, where one applies.
    pub offset: Option<u64>,
    /// A human message that names the file and, where one applies, the offset.
    pub message: String,
}

impl Problem {
    fn new(severity: Severity, file: &Path, offset: Option<u64>, what: impl fmt::Display) -> Problem {
        let message = match offset {
            Some(o) => format!("{} at offset {o}: {what}", file.display()),
            None => format!("{}: {what}", file.display()),
        };
        Problem { severity, file: file.to_owned(), offset, message }
    }

    /// A problem from a decoder's error, which already names the file (and offset) itself.
    fn from_error(severity: Severity, fallback: &Path, context: &str, e: &StorageError) -> Problem {
        let (file, offset) = match e {
            StorageError::Corruption { file, offset, .. } => (file.clone(), Some(*offset)),
            StorageError::Io { path, .. } => (path.clone(), None),
            StorageError::UnsupportedVersion { file, .. } => (file.clone(), None),
            _ => (fallback.to_owned(), None),
        };
        let message = if context.is_empty() { e.to_string() } else { format!("{context}: {e}") };
        Problem { severity, file, offset, message }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<7} {}", self.severity, self.message)
    }
}

/// What the check found in the manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestReport {
    /// `DIR/MANIFEST`.
    pub path: PathBuf,
    /// Whether the file exists. A database that never checkpointed has none; recovery then starts from an
    /// empty head at LSN 0.
    pub found: bool,
    /// Whether it decoded and passed its own validation. The fields below are meaningful only then (or,
    /// with `found == false`, hold the defaults recovery would use).
    pub valid: bool,
    /// Every record up to this LSN is in the head files.
    pub checkpoint_lsn: Lsn,
    /// The first WAL segment recovery needs.
    pub wal_seq: u64,
    /// Declared metrics.
    pub metrics: usize,
    /// Registered series.
    pub series: usize,
    /// Pages in use by series.
    pub pages: usize,
    /// Pages on the free list.
    pub free_pages: usize,
    /// Head files.
    pub head_files: u32,
    /// Pages per head file, the header page included.
    pub pages_per_file: u32,
    /// The next never-used page number.
    pub hwm: u32,
}

/// How the records of a WAL segment end.
#[derive(Clone, Debug, PartialEq)]
pub enum SegmentEnd {
    /// After the last record there are only zeros (or the file ends).
    Clean,
    /// The newest segment ends in a frame that does not decode: a write a crash (or the live writer)
    /// interrupted. Recovery zeroes it from `offset` on.
    TornTail {
        /// Where the bad frame starts.
        offset: u64,
        /// What is wrong with it.
        kind: CorruptionKind,
    },
    /// A damaged header, a bad frame in a sealed segment, or stale bytes after its last record.
    Corrupt {
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        kind: CorruptionKind,
    },
    /// The file could not be read (I/O error, unsupported version).
    Unreadable(String),
}

/// What the check found in one WAL segment.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentReport {
    /// The file.
    pub path: PathBuf,
    /// Sequence number (from the file name).
    pub seq: u64,
    /// The file's size in bytes.
    pub size: u64,
    /// The first LSN its header names (`None` if the header is unreadable).
    pub first_lsn: Option<u64>,
    /// LSN of its last intact record.
    pub last_lsn: Option<u64>,
    /// Intact records.
    pub records: u64,
    /// Bytes from the start of the file to the end of the last intact record.
    pub bytes_used: u64,
    /// How the records end.
    pub end: SegmentEnd,
    /// Whether this is the newest segment (the only one that may have a torn tail).
    pub newest: bool,
    /// Whether the manifest no longer needs it (sequence number below the manifest's `wal_seq`): left between
    /// a checkpoint's manifest and its removal of old segments. Not a problem by itself, but recovery still
    /// reads it, so damage in it is still damage.
    pub obsolete: bool,
}

/// A break in the LSN sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LsnGap {
    /// The segment where the sequence breaks.
    pub file: PathBuf,
    /// Offset of the record (or header field) that breaks it.
    pub offset: u64,
    /// The LSN that should have come next.
    pub expected: u64,
    /// The LSN found instead.
    pub found: u64,
    /// Damage when records after the checkpoint LSN are missing or out of order.
    pub severity: Severity,
}

/// LSN continuity across the segments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LsnReport {
    /// Lowest LSN of an intact record.
    pub first: Option<u64>,
    /// Highest LSN of an intact record.
    pub last: Option<u64>,
    /// Intact records after the checkpoint LSN: what recovery would replay.
    pub to_replay: u64,
    /// Every break in the sequence, in log order.
    pub gaps: Vec<LsnGap>,
}

/// What the check found in one head file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadFileReport {
    /// The file.
    pub path: PathBuf,
    /// Its index (the number in its name).
    pub index: u32,
    /// Whether the manifest refers to it (`index < files`). Files past that were created after the
    /// checkpoint (normal in a live directory); recovery removes them and replays the WAL into new ones, so
    /// they are listed but are not a problem.
    pub referenced: bool,
    /// Whether it exists.
    pub exists: bool,
    /// Whether its header is intact and agrees with the manifest.
    pub header_valid: bool,
    /// Its size in bytes, if it could be read.
    pub size: Option<u64>,
    /// The size the manifest implies (`pages_per_file * 4096`), for referenced files.
    pub expected_size: Option<u64>,
}

/// The page descriptor checks (meaningful only with a valid manifest: `checked`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageReport {
    /// Whether the checks ran.
    pub checked: bool,
    /// Pages per head file.
    pub pages_per_file: u32,
    /// The next never-used page number.
    pub hwm: u32,
    /// Pages the head files of the manifest hold (headers included).
    pub capacity: u64,
    /// Pages in use by series.
    pub used: usize,
    /// Pages on the free list.
    pub free: usize,
    /// Pages below the high-water mark that are neither used, free nor a file header.
    pub leaked: usize,
    /// Descriptors that failed a check.
    pub bad: usize,
}

/// One block file as [`check`] found it: header, index and every chunk's CRC and values.
#[derive(Clone, Debug, Default)]
pub struct BlockReport {
    /// The file.
    pub path: PathBuf,
    /// Its sequence number.
    pub seq: u64,
    /// Chunks in its index (0 if the index could not be read).
    pub chunks: usize,
    /// Values over all chunks.
    pub values: u64,
    /// Whether header, index and every chunk checked out.
    pub ok: bool,
}

/// Everything [`check`] found.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// The data directory.
    pub dir: PathBuf,
    /// The manifest.
    pub manifest: ManifestReport,
    /// The WAL segments, oldest first.
    pub segments: Vec<SegmentReport>,
    /// LSN continuity.
    pub lsn: LsnReport,
    /// The head files, by index.
    pub head_files: Vec<HeadFileReport>,
    /// The page descriptors.
    pub pages: PageReport,
    /// The block files, oldest first.
    pub blocks: Vec<BlockReport>,
    /// Everything wrong, in the order found.
    pub problems: Vec<Problem>,
    /// How many passes the check needed (more than one when a live process changed the directory).
    pub attempts: usize,
}

impl CheckReport {
    /// Whether any problem is [`Severity::Damage`].
    pub fn is_damaged(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Damage)
    }

    /// Number of problems of a severity.
    pub fn count(&self, severity: Severity) -> usize {
        self.problems.iter().filter(|p| p.severity == severity).count()
    }

    fn push(&mut self, severity: Severity, file: &Path, offset: Option<u64>, what: impl fmt::Display) {
        self.problems.push(Problem::new(severity, file, offset, what));
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "data directory {}", self.dir.display())?;
        let m = &self.manifest;
        if !m.found {
            writeln!(f, "manifest   none (never checkpointed: recovery starts at LSN 0)")?;
        } else if !m.valid {
            writeln!(f, "manifest   INVALID")?;
        } else {
            writeln!(
                f,
                "manifest   valid: checkpoint LSN {}, WAL from segment {}, {} metrics, {} series, {} pages ({} free), \
                 {} head files of {} pages, hwm {}",
                m.checkpoint_lsn.0,
                m.wal_seq,
                m.metrics,
                m.series,
                m.pages,
                m.free_pages,
                m.head_files,
                m.pages_per_file,
                m.hwm
            )?;
        }
        let l = &self.lsn;
        write!(f, "wal        {} segments", self.segments.len())?;
        match (l.first, l.last) {
            (Some(a), Some(b)) => write!(f, ", LSN {a}..={b}")?,
            _ => write!(f, ", no records")?,
        }
        writeln!(
            f,
            ", {} records to replay, {}",
            l.to_replay,
            if l.gaps.is_empty() { "LSNs continuous".to_owned() } else { format!("{} LSN gaps", l.gaps.len()) }
        )?;
        for s in &self.segments {
            write!(f, "  {}", file_name(&s.path))?;
            match s.first_lsn {
                Some(lsn) => write!(f, "  first LSN {lsn:<8}")?,
                None => write!(f, "  first LSN {:<8}", "?")?,
            }
            write!(f, " {:>6} records  {:>9} of {} bytes  ", s.records, s.bytes_used, s.size)?;
            match &s.end {
                SegmentEnd::Clean => write!(f, "clean")?,
                SegmentEnd::TornTail { offset, kind } => write!(f, "torn tail at offset {offset} ({kind})")?,
                SegmentEnd::Corrupt { offset, kind } => write!(f, "CORRUPT at offset {offset} ({kind})")?,
                SegmentEnd::Unreadable(e) => write!(f, "UNREADABLE ({e})")?,
            }
            if s.obsolete {
                write!(f, " [covered by the checkpoint]")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "head       {} files", self.head_files.len())?;
        for h in &self.head_files {
            write!(f, "  {}", file_name(&h.path))?;
            if !h.exists {
                writeln!(f, "  MISSING")?;
                continue;
            }
            write!(f, "  header {}", if h.header_valid { "ok" } else { "BAD" })?;
            match h.size {
                Some(s) => write!(f, "  {s} bytes")?,
                None => write!(f, "  size ?")?,
            }
            // Without a valid manifest, whether a file is referenced is unknown.
            let known = self.manifest.valid || !self.manifest.found;
            match (h.referenced, h.expected_size, h.size) {
                (false, _, _) if known => write!(f, "  [not in the manifest]")?,
                (true, Some(e), Some(s)) if e != s => write!(f, " (expected {e})")?,
                _ => {}
            }
            writeln!(f)?;
        }
        let p = &self.pages;
        if p.checked {
            writeln!(
                f,
                "pages      {} used, {} free, {} leaked, hwm {} of {}: {}",
                p.used,
                p.free,
                p.leaked,
                p.hwm,
                p.capacity,
                if p.bad == 0 { "descriptors ok".to_owned() } else { format!("{} bad descriptors", p.bad) }
            )?;
        } else {
            writeln!(f, "pages      not checked (no valid manifest)")?;
        }
        for b in &self.blocks {
            writeln!(
                f,
                "block      {}  {} chunks, {} values{}",
                file_name(&b.path),
                b.chunks,
                b.values,
                if b.ok { "" } else { "  DAMAGED" }
            )?;
        }
        if self.attempts > 1 {
            writeln!(f, "note       the directory changed during the check; {} passes were needed", self.attempts)?;
        }
        if self.problems.is_empty() {
            writeln!(f, "problems   none")?;
        } else {
            writeln!(f, "problems   {}", self.problems.len())?;
            for pr in &self.problems {
                writeln!(f, "  {pr}")?;
            }
        }
        let (d, w) = (self.count(Severity::Damage), self.count(Severity::Warning));
        if d > 0 {
            write!(f, "result     DAMAGED ({d} damage, {w} warnings)")
        } else if w > 0 {
            write!(f, "result     ok ({w} warnings)")
        } else {
            write!(f, "result     ok")
        }
    }
}

/// Verifies the data directory `dir` without modifying it. `Err` only if the directory itself cannot be
/// read; everything wrong inside it is a [`Problem`] in the report.
pub fn check(vfs: &dyn Vfs, dir: &Path) -> Result<CheckReport, StorageError> {
    let mut attempt = 1;
    loop {
        let (mut report, stable) = Checker::run(vfs, dir)?;
        report.attempts = attempt;
        if stable {
            return Ok(report);
        }
        if attempt == ATTEMPTS {
            report.push(
                Severity::Warning,
                dir,
                None,
                format!(
                    "the directory changed during each of {ATTEMPTS} passes (a live process checkpointing); \
                     this report may mix two checkpoints"
                ),
            );
            return Ok(report);
        }
        attempt += 1;
    }
}

fn is_not_found(e: &StorageError) -> bool {
    matches!(e, StorageError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

fn read_file(vfs: &dyn Vfs, path: &Path) -> Result<Vec<u8>, StorageError> {
    let file = vfs.open(path, OpenMode::Read).map_err(|e| StorageError::io("open", path, e))?;
    file.read_all().map_err(|e| StorageError::io("read", path, e))
}

/// Where the LSN sequence stands while the segments are walked.
#[derive(Clone, Copy, Debug)]
enum Next {
    /// Before the first segment: anything up to the checkpoint LSN + 1 may come.
    Start,
    /// After a segment whose records could not be read: anything may come.
    Unknown,
    /// This LSN must come next.
    At(u64),
}

struct Checker<'a> {
    vfs: &'a dyn Vfs,
    report: CheckReport,
    /// A file listed a moment ago was gone when read: a live process changed the directory.
    vanished: bool,
}

impl<'a> Checker<'a> {
    fn run(vfs: &'a dyn Vfs, dir: &Path) -> Result<(CheckReport, bool), StorageError> {
        let names = vfs.list_dir(dir).map_err(|e| StorageError::io("list", dir, e))?;
        let mut c = Checker {
            vfs,
            report: CheckReport {
                dir: dir.to_owned(),
                manifest: ManifestReport::default(),
                segments: Vec::new(),
                lsn: LsnReport::default(),
                head_files: Vec::new(),
                pages: PageReport::default(),
                blocks: Vec::new(),
                problems: Vec::new(),
                attempts: 1,
            },
            vanished: false,
        };
        let manifest_path = dir.join(MANIFEST_NAME);
        let before = c.read_manifest_bytes(&manifest_path);
        let manifest = c.check_manifest(&manifest_path, &names, &before);
        c.check_wal(dir, manifest.as_ref(), manifest.is_some() || !c.report.manifest.found);
        c.check_head(dir, manifest.as_ref());
        if let Some(m) = &manifest {
            c.check_pages(m);
        }
        c.check_blocks(dir);
        if !c.report.manifest.found && c.report.segments.is_empty() && c.report.head_files.is_empty() {
            c.report.push(
                Severity::Damage,
                dir,
                None,
                "not a silt data directory: no MANIFEST, no WAL segments, no head files",
            );
        }
        let after = c.read_manifest_bytes(&manifest_path);
        let stable = !c.vanished && before == after;
        Ok((c.report, stable))
    }

    /// Every block: header and index (as opening it does), then every chunk decoded (its CRC and codec) and
    /// its count and stats compared with the descriptor.
    fn check_blocks(&mut self, dir: &Path) {
        let blocks_dir = dir.join(crate::storage::block::BLOCK_DIR);
        if !self.vfs.exists(&blocks_dir) {
            return;
        }
        let mut names = match self.vfs.list_dir(&blocks_dir) {
            Ok(n) => n,
            Err(e) => {
                self.report.push(Severity::Damage, &blocks_dir, None, format!("cannot list: {e}"));
                return;
            }
        };
        names.sort();
        for name in names {
            let path = blocks_dir.join(&name);
            let Some(seq) = crate::storage::block::parse_block_name(&name) else {
                if name.ends_with(".tmp") {
                    self.report.push(Severity::Warning, &path, None, "an unfinished block (removed at the next open)");
                }
                continue;
            };
            let mut br = BlockReport { path: path.clone(), seq, ..BlockReport::default() };
            match crate::storage::block::Block::open(self.vfs, &path, seq) {
                Err(e) if is_not_found(&e) => self.vanished = true,
                Err(e) => self.report.problems.push(Problem::from_error(Severity::Damage, &path, "block", &e)),
                Ok(b) => {
                    br.chunks = b.chunk_count();
                    br.ok = true;
                    let mut values = Vec::new();
                    for c in b.chunks() {
                        let c = match c {
                            Ok(c) => c,
                            Err(e) => {
                                br.ok = false;
                                self.report.problems.push(Problem::from_error(Severity::Damage, &path, "block", &e));
                                break;
                            }
                        };
                        values.clear();
                        br.values += u64::from(c.count);
                        if let Err(e) = b.decode(&c, &mut values) {
                            br.ok = false;
                            self.report.problems.push(Problem::from_error(Severity::Damage, &path, "block chunk", &e));
                            continue;
                        }
                        let samples = values.iter().filter(|v| !v.is_nan()).count();
                        if samples != c.samples as usize {
                            br.ok = false;
                            self.report.push(
                                Severity::Damage,
                                &path,
                                Some(c.offset),
                                format!(
                                    "chunk of series {} holds {samples} values, its descriptor says {}",
                                    c.series.0, c.samples
                                ),
                            );
                        }
                    }
                }
            }
            self.report.blocks.push(br);
        }
    }

    /// The manifest's bytes: `None` if absent, `Some(Err)` if unreadable.
    fn read_manifest_bytes(&mut self, path: &Path) -> Option<Result<Vec<u8>, String>> {
        if !self.vfs.exists(path) {
            return None;
        }
        match read_file(self.vfs, path) {
            Ok(b) => Some(Ok(b)),
            Err(e) if is_not_found(&e) => None,
            Err(e) => Some(Err(e.to_string())),
        }
    }

    fn check_manifest(
        &mut self,
        path: &Path,
        names: &[String],
        bytes: &Option<Result<Vec<u8>, String>>,
    ) -> Option<Manifest> {
        let r = &mut self.report;
        r.manifest.path = path.to_owned();
        let tmp = tmp_path(path);
        if names.iter().any(|n| Some(n.as_str()) == tmp.file_name().and_then(|n| n.to_str())) {
            r.push(
                Severity::Warning,
                &tmp,
                None,
                "a checkpoint in progress, or left over from an interrupted one; recovery removes it \
                 (MANIFEST is authoritative)",
            );
        }
        match bytes {
            None => {
                r.manifest.checkpoint_lsn = Lsn(0);
                r.manifest.wal_seq = 1;
                None
            }
            Some(Err(e)) => {
                r.manifest.found = true;
                r.push(Severity::Damage, path, None, format!("cannot read the manifest: {e}"));
                None
            }
            Some(Ok(bytes)) => {
                r.manifest.found = true;
                match Manifest::decode(path, bytes) {
                    Ok(m) => {
                        let h = &m.head;
                        r.manifest = ManifestReport {
                            path: path.to_owned(),
                            found: true,
                            valid: true,
                            checkpoint_lsn: m.checkpoint_lsn,
                            wal_seq: m.wal_seq,
                            metrics: m.metrics.len(),
                            series: m.series.len(),
                            pages: h.series.iter().map(|s| s.pages.len()).sum(),
                            free_pages: h.free.len(),
                            head_files: h.files,
                            pages_per_file: h.pages_per_file,
                            hwm: h.hwm,
                        };
                        Some(m)
                    }
                    Err(e) => {
                        r.problems.push(Problem::from_error(Severity::Damage, path, "manifest", &e));
                        None
                    }
                }
            }
        }
    }

    /// Records a break in the LSN sequence. Missing or reordered records after the checkpoint are damage
    /// (recovery stops there); before it they are covered by the checkpoint. With no trustworthy checkpoint
    /// LSN every break is damage.
    fn gap(&mut self, file: &Path, offset: u64, expected: u64, found: u64, checkpoint: Option<u64>, what: &str) {
        let damage = match checkpoint {
            None => true,
            Some(c) => (found > expected && found - 1 > c) || (found < expected && found > c),
        };
        let severity = if damage { Severity::Damage } else { Severity::Warning };
        let detail = if found > expected {
            let missing = if found - 1 == expected {
                format!("LSN {expected} is")
            } else {
                format!("LSNs {expected}..={} are", found - 1)
            };
            format!("LSN gap: {what} {found}, expected {expected}: {missing} missing")
        } else {
            format!("LSN gap: {what} {found}, expected {expected}: the log goes back")
        };
        let consequence = match (checkpoint, damage) {
            (None, _) => String::new(),
            (Some(c), true) => {
                format!(" (after the checkpoint LSN {c}: recovery cannot replay past it)")
            }
            (Some(c), false) => format!(" (covered by the checkpoint LSN {c}: nothing is lost)"),
        };
        self.report.push(severity, file, Some(offset), format!("{detail}{consequence}"));
        self.report.lsn.gaps.push(LsnGap { file: file.to_owned(), offset, expected, found, severity });
    }

    /// Checks that `found` is the LSN the sequence expects, then moves on past it.
    fn step(&mut self, next: &mut Next, file: &Path, offset: u64, found: u64, checkpoint: Option<u64>, what: &str) {
        match *next {
            Next::At(n) if n != found => self.gap(file, offset, n, found, checkpoint, what),
            Next::Start => {
                if let Some(c) = checkpoint {
                    if found > c + 1 {
                        self.gap(file, offset, c + 1, found, checkpoint, what);
                    }
                }
            }
            _ => {}
        }
    }

    /// `trust_checkpoint`: whether the checkpoint LSN is known (a valid manifest, or none at all).
    fn check_wal(&mut self, dir: &Path, manifest: Option<&Manifest>, trust_checkpoint: bool) {
        let wal_dir = dir.join("wal");
        if !self.vfs.exists(&wal_dir) {
            if self.report.manifest.found {
                self.report.push(Severity::Damage, &wal_dir, None, "the WAL directory is missing");
            }
            return;
        }
        let segs = match list_segments(self.vfs, &wal_dir) {
            Ok(s) => s,
            Err(e) => {
                self.report.problems.push(Problem::from_error(Severity::Damage, &wal_dir, "", &e));
                return;
            }
        };
        let checkpoint = trust_checkpoint.then_some(self.report.manifest.checkpoint_lsn.0);
        let wal_seq = manifest.map(|m| m.wal_seq);
        if let Some(ws) = wal_seq {
            if !segs.iter().any(|(s, _)| *s == ws) {
                // The segment a checkpoint starts is created before the manifest that names it is written,
                // and removed only by a later checkpoint, after a newer manifest.
                self.report.push(
                    Severity::Damage,
                    &wal_dir.join(segment::segment_name(ws)),
                    None,
                    format!("missing: the manifest needs the WAL from segment {ws} on"),
                );
            }
        }
        let mut next = Next::Start;
        let mut prev_seq: Option<u64> = None;
        let count = segs.len();
        for (i, (seq, path)) in segs.iter().enumerate() {
            let newest = i + 1 == count;
            let obsolete = wal_seq.is_some_and(|ws| *seq < ws);
            if let Some(p) = prev_seq {
                if *seq != p + 1 {
                    let missing = if p + 2 == *seq {
                        format!("segment {} is missing", p + 1)
                    } else {
                        format!("segments {}..={} are missing", p + 1, seq - 1)
                    };
                    self.report.push(
                        Severity::Warning,
                        path,
                        None,
                        format!("{missing} before this one (the LSN checks tell whether records are lost)"),
                    );
                }
            }
            prev_seq = Some(*seq);
            let mut sr = SegmentReport {
                path: path.clone(),
                seq: *seq,
                size: 0,
                first_lsn: None,
                last_lsn: None,
                records: 0,
                bytes_used: 0,
                end: SegmentEnd::Clean,
                newest,
                obsolete,
            };
            let scan = match segment::scan(self.vfs, path) {
                Ok(s) => s,
                Err(e) => {
                    if is_not_found(&e) {
                        self.vanished = true;
                    }
                    self.check_bad_segment(&mut sr, newest, wal_seq, &e);
                    self.report.segments.push(sr);
                    next = Next::Unknown;
                    continue;
                }
            };
            sr.size = scan.data.len() as u64;
            let h = scan.header;
            if h.seq.get() != *seq {
                self.report.push(
                    Severity::Damage,
                    path,
                    Some(HEADER_SEQ_OFFSET),
                    format!("the header says segment {}, the name says {seq}; recovery refuses it", h.seq.get()),
                );
            }
            let first = h.first_lsn.get();
            sr.first_lsn = Some(first);
            self.step(
                &mut next,
                path,
                HEADER_FIRST_LSN_OFFSET,
                first,
                checkpoint,
                "the segment header names first LSN",
            );
            next = Next::At(first);
            for f in &scan.frames {
                let off = (f.start - FRAME_HEADER_LEN) as u64;
                self.step(&mut next, path, off, f.lsn, checkpoint, "the record has LSN");
                next = Next::At(f.lsn + 1);
                let l = &mut self.report.lsn;
                l.first = Some(l.first.map_or(f.lsn, |x| x.min(f.lsn)));
                l.last = Some(l.last.map_or(f.lsn, |x| x.max(f.lsn)));
                let replayed = checkpoint.is_none_or(|c| f.lsn > c);
                if replayed {
                    l.to_replay += 1;
                }
                let bytes = scan.payload(f);
                let decoded = if f.kind == payload::Kind::Samples as u8 {
                    payload::for_each_sample(bytes, |_| {})
                } else {
                    payload::decode(f.kind, bytes).map(|_| ())
                };
                if let Err(kind) = decoded {
                    let (sev, why) = if replayed {
                        (Severity::Damage, "recovery would stop at it")
                    } else {
                        (Severity::Warning, "the checkpoint covers it, recovery skips it")
                    };
                    self.report.push(
                        sev,
                        path,
                        Some(off),
                        format!("record LSN {} (kind {}) has an undecodable payload: {kind}; {why}", f.lsn, f.kind),
                    );
                }
            }
            sr.records = scan.frames.len() as u64;
            sr.last_lsn = scan.frames.last().map(|f| f.lsn);
            let last_lsn = sr.last_lsn.unwrap_or(first.saturating_sub(1));
            match &scan.end {
                ScanEnd::Clean(off) => {
                    sr.bytes_used = *off;
                    if !scan.zero_after_end {
                        let intact = describe_intact(&scan.data, *off as usize, last_lsn);
                        if newest {
                            self.report.push(
                                Severity::Warning,
                                path,
                                Some(*off),
                                format!("non-zero bytes after the last record of the newest segment; recovery zeroes them{intact}"),
                            );
                        } else {
                            let kind = CorruptionKind::Invalid("non-zero bytes after the last record".into());
                            self.report.push(
                                Severity::Damage,
                                path,
                                Some(*off),
                                format!("{kind} of a sealed segment; recovery refuses it{intact}"),
                            );
                            sr.end = SegmentEnd::Corrupt { offset: *off, kind };
                        }
                    }
                }
                ScanEnd::Bad(off, kind) => {
                    sr.bytes_used = *off;
                    let intact = describe_intact(&scan.data, *off as usize, last_lsn);
                    if newest {
                        self.report.push(
                            Severity::Warning,
                            path,
                            Some(*off),
                            format!("torn tail in the newest segment ({kind}); recovery discards everything from here{intact}"),
                        );
                        sr.end = SegmentEnd::TornTail { offset: *off, kind: kind.clone() };
                    } else {
                        self.report.push(
                            Severity::Damage,
                            path,
                            Some(*off),
                            format!(
                                "corrupt record in a sealed segment after LSN {last_lsn} ({kind}); \
                                 recovery refuses to open the log{intact}"
                            ),
                        );
                        sr.end = SegmentEnd::Corrupt { offset: *off, kind: kind.clone() };
                    }
                }
            }
            self.report.segments.push(sr);
        }
        if segs.is_empty() && self.report.manifest.found && wal_seq.is_none() {
            self.report.push(
                Severity::Damage,
                &wal_dir,
                None,
                "no WAL segments: the log after the checkpoint is missing",
            );
        }
    }

    /// A segment whose header (or whole file) cannot be read.
    /// `wal_seq`: the first segment the manifest needs; a segment up to that one was created (and synced)
    /// before the manifest was written, so a damaged header there cannot be an interrupted creation.
    fn check_bad_segment(&mut self, sr: &mut SegmentReport, newest: bool, wal_seq: Option<u64>, e: &StorageError) {
        let path = sr.path.clone();
        match e {
            StorageError::Corruption { offset, kind, .. } => {
                let bytes = read_file(self.vfs, &path).ok();
                sr.size = bytes.as_ref().map_or(0, |b| b.len() as u64);
                let zero_after = bytes.as_ref().is_some_and(|b| b.iter().skip(SEGMENT_HEADER_LEN).all(|&x| x == 0));
                let completed = wal_seq.is_some_and(|ws| sr.seq <= ws);
                if newest && zero_after && !completed {
                    self.report.problems.push(Problem::from_error(
                        Severity::Warning,
                        &path,
                        "the newest segment's header never reached the disk whole and no records follow (an \
                         interrupted segment creation); recovery removes the file",
                        e,
                    ));
                    sr.end = SegmentEnd::TornTail { offset: *offset, kind: kind.clone() };
                } else {
                    let ctx = if newest && zero_after {
                        "damaged header of the newest segment, which the manifest names (so its creation \
                         completed); recovery would remove it as an interrupted creation"
                    } else if newest {
                        "damaged header of the newest segment with records behind it"
                    } else {
                        "damaged header of a sealed segment"
                    };
                    self.report.problems.push(Problem::from_error(Severity::Damage, &path, ctx, e));
                    sr.end = SegmentEnd::Corrupt { offset: *offset, kind: kind.clone() };
                }
            }
            _ => {
                if !is_not_found(e) {
                    self.report.problems.push(Problem::from_error(Severity::Damage, &path, "WAL segment", e));
                }
                sr.end = SegmentEnd::Unreadable(e.to_string());
            }
        }
    }

    fn check_head(&mut self, dir: &Path, manifest: Option<&Manifest>) {
        let head_dir = dir.join("head");
        let expected = manifest.map(|m| (m.head.files, m.head.pages_per_file));
        // The page size the manifest records (4096 without one: what an unreferenced file is read with).
        let page_bytes = manifest.map_or(MAX_PAGE_SLOTS * 8, |m| m.head.page_slots as usize * 8);
        let names = if self.vfs.exists(&head_dir) {
            match self.vfs.list_dir(&head_dir) {
                Ok(n) => n,
                Err(e) => {
                    let e = StorageError::io("list", &head_dir, e);
                    self.report.problems.push(Problem::from_error(Severity::Damage, &head_dir, "", &e));
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let mut indexes: Vec<u32> = Vec::new();
        for name in &names {
            if let Some(i) = name.strip_suffix(".pages").and_then(|n| n.parse::<u32>().ok()) {
                indexes.push(i);
            } else if name.ends_with(".tmp") {
                self.report.push(
                    Severity::Warning,
                    &head_dir.join(name),
                    None,
                    "left over from an interrupted operation; recovery removes it",
                );
            }
        }
        if let Some((files, _)) = expected {
            indexes.extend(0..files);
        }
        indexes.sort_unstable();
        indexes.dedup();
        for index in indexes {
            let path = head_dir.join(head_file::head_file_name(index));
            let referenced = expected.is_some_and(|(files, _)| index < files);
            let mut hr = HeadFileReport {
                path: path.clone(),
                index,
                referenced,
                exists: names.iter().any(|n| n == &head_file::head_file_name(index)),
                header_valid: false,
                size: None,
                expected_size: expected.filter(|_| referenced).map(|(_, ppf)| u64::from(ppf) * page_bytes as u64),
            };
            if !hr.exists {
                self.report.push(Severity::Damage, &path, None, "missing: the manifest refers to this head file");
                self.report.head_files.push(hr);
                continue;
            }
            let read = (|| -> Result<(Vec<u8>, u64), StorageError> {
                let file = self.vfs.open(&path, OpenMode::Read).map_err(|e| StorageError::io("open", &path, e))?;
                let len = file.len().map_err(|e| StorageError::io("stat", &path, e))?;
                let mut header = vec![0u8; (len as usize).min(32)];
                file.read_exact_at(&mut header, 0).map_err(|e| StorageError::io("read", &path, e))?;
                Ok((header, len))
            })();
            let (header, len) = match read {
                Ok(x) => x,
                Err(e) => {
                    if is_not_found(&e) {
                        self.vanished = true;
                    } else if referenced {
                        self.report.problems.push(Problem::from_error(Severity::Damage, &path, "head file", &e));
                    }
                    self.report.head_files.push(hr);
                    continue;
                }
            };
            hr.size = Some(len);
            // Unreferenced files are checked against their own page count; only referenced ones matter.
            let own = HeadFileHeader::read_from_prefix(&header).ok().map(|(h, _)| (h.pages.get(), h.page_bytes.get()));
            let (pages, bytes) = match expected.filter(|_| referenced) {
                Some((_, ppf)) => (ppf, page_bytes as u32),
                None => own.unwrap_or((0, 0)),
            };
            match head_file::check_header(&path, &header, index, pages, bytes) {
                Ok(()) => hr.header_valid = true,
                Err(e) if referenced => {
                    self.report.problems.push(Problem::from_error(Severity::Damage, &path, "head file header", &e))
                }
                Err(_) => {}
            }
            if let (true, Some(want)) = (referenced, hr.expected_size) {
                if len != want {
                    self.report.push(
                        Severity::Damage,
                        &path,
                        None,
                        format!("head file is {len} bytes, the manifest implies {want} ({pages} pages of {bytes})"),
                    );
                }
            }
            self.report.head_files.push(hr);
        }
    }

    fn check_pages(&mut self, m: &Manifest) {
        let h = &m.head;
        let ppf = h.pages_per_file;
        let capacity = u64::from(h.files) * u64::from(ppf);
        let mut pr = PageReport {
            checked: true,
            pages_per_file: ppf,
            hwm: h.hwm,
            capacity,
            used: 0,
            free: h.free.len(),
            leaked: 0,
            bad: 0,
        };
        let path = self.report.manifest.path.clone();
        let mut bad: Vec<String> = Vec::new();
        if u64::from(h.hwm) > capacity {
            bad.push(format!("high-water mark {} lies past the {capacity} pages of the {} head files", h.hwm, h.files));
        }
        let in_range = |no: u32| no < h.hwm && !no.is_multiple_of(ppf);
        let mut owner: HashMap<u32, usize> = HashMap::new();
        for (i, st) in h.series.iter().enumerate() {
            let name = format!("series {i}");
            let frequency = m
                .series
                .get(i)
                .and_then(|s| m.metrics.get(s.metric as usize))
                .map_or(1, |metric| metric.config.frequency);
            let span = i128::from(frequency) * i128::from(h.page_slots);
            if !st.pages.is_empty() && st.origin.is_none() {
                bad.push(format!("{name} has pages but no grid origin"));
            }
            let first = st.pages.first().map(|(p, _)| p.start);
            let mut prev_start: Option<i64> = None;
            for &(p, len) in &st.pages {
                pr.used += 1;
                if !in_range(p.no) {
                    let why = if p.no.is_multiple_of(ppf) {
                        "a head file header".to_owned()
                    } else {
                        format!("not below hwm {}", h.hwm)
                    };
                    bad.push(format!("{name}: page {} is {why}", p.no));
                }
                if let Some(other) = owner.insert(p.no, i) {
                    bad.push(format!("page {} is owned by series {other} and {name}", p.no));
                }
                if u32::from(len) > h.page_slots {
                    bad.push(format!("{name}: page {} has length {len} > {}", p.no, h.page_slots));
                }
                if let Some(ps) = prev_start {
                    if p.start <= ps {
                        bad.push(format!("{name}: page {} starts at {} after a page starting at {ps}", p.no, p.start));
                    }
                }
                prev_start = Some(p.start);
                let first = first.unwrap_or(p.start);
                if (i128::from(p.start) - i128::from(first)).rem_euclid(span) != 0 {
                    bad.push(format!(
                        "{name}: page {} starts at {}, off the grid of {} x {frequency} s from {first}",
                        p.no, p.start, h.page_slots
                    ));
                } else if let Some(origin) = st.origin {
                    let d = i128::from(p.start) - i128::from(origin);
                    if d.rem_euclid(span) != 0 {
                        bad.push(format!(
                            "{name}: page {} starts at {}, off the grid of 512 x {frequency} s from origin {origin}",
                            p.no, p.start
                        ));
                    } else if d.div_euclid(span) < i128::from(st.floor) {
                        bad.push(format!(
                            "{name}: page {} (page {} of the grid) lies below the series' floor {}",
                            p.no,
                            d.div_euclid(span),
                            st.floor
                        ));
                    }
                }
            }
        }
        let mut free_seen: HashMap<u32, ()> = HashMap::new();
        for &no in &h.free {
            if !in_range(no) {
                let why = if no.is_multiple_of(ppf) {
                    "a head file header".to_owned()
                } else {
                    format!("not below hwm {}", h.hwm)
                };
                bad.push(format!("free page {no} is {why}"));
            }
            if let Some(s) = owner.get(&no) {
                bad.push(format!("page {no} is both free and used by series {s}"));
            }
            if free_seen.insert(no, ()).is_some() {
                bad.push(format!("page {no} is on the free list twice"));
            }
        }
        pr.bad = bad.len();
        for b in bad {
            self.report.push(Severity::Damage, &path, None, format!("page descriptors: {b}"));
        }
        if u64::from(h.hwm) <= capacity {
            let leaked: Vec<u32> = (1..h.hwm)
                .filter(|&no| !no.is_multiple_of(ppf) && !owner.contains_key(&no) && !free_seen.contains_key(&no))
                .collect();
            pr.leaked = leaked.len();
            if !leaked.is_empty() {
                let shown: Vec<String> = leaked.iter().take(8).map(|n| n.to_string()).collect();
                self.report.push(
                    Severity::Warning,
                    &path,
                    None,
                    format!(
                        "page descriptors: {} pages below the high-water mark are neither used nor free (leaked): {}{}",
                        leaked.len(),
                        shown.join(", "),
                        if leaked.len() > shown.len() { ", ..." } else { "" }
                    ),
                );
            }
        }
        self.report.pages = pr;
    }
}

/// Looks for intact records behind a bad frame or stale bytes (frames of a later write that reached the
/// disk while an earlier one did not, or records after a corrupted one) and describes them for a message.
fn describe_intact(data: &[u8], from: usize, after_lsn: u64) -> String {
    let limit = after_lsn.saturating_add((data.len() / (FRAME_HEADER_LEN + FRAME_ALIGN)) as u64 + 1);
    let mut off = from + FRAME_ALIGN;
    while off + FRAME_HEADER_LEN <= data.len() {
        // Cheap plausibility test on the LSN before decode_frame checksums the payload.
        let plausible = FrameHeader::read_from_prefix(&data[off..])
            .is_ok_and(|(h, _)| h.lsn.get() > after_lsn && h.lsn.get() <= limit);
        if plausible {
            if let Frame::Record { lsn: first, next, .. } = decode_frame(data, off) {
                let (mut last, mut count, mut at) = (first, 1u64, next);
                while let Frame::Record { lsn, next, .. } = decode_frame(data, at) {
                    if lsn != last + 1 {
                        break;
                    }
                    last = lsn;
                    count += 1;
                    at = next;
                }
                return format!("; {count} intact records (LSN {first}..={last}) follow at offset {off}");
            }
        }
        off += FRAME_ALIGN;
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::head::file::HeadFile;
    use crate::storage::head::{HeadState, PageRef, SeriesState};
    use crate::storage::io::sim::SimVfs;
    use crate::storage::manifest::{MetricEntry, SeriesEntry};
    use crate::storage::wal::record::encode_frame;
    use crate::storage::wal::segment::{segment_name, SegmentWriter};
    use crate::storage::{Aggregation, MetricConfig, SeriesId};

    fn dir() -> PathBuf {
        PathBuf::from("/db")
    }

    /// Checkpoint LSN 3, WAL from segment 2; pages 1 and 2 used, 3 free, hwm 4, two files of 4 pages.
    fn manifest() -> Manifest {
        Manifest {
            checkpoint_lsn: Lsn(3),
            wal_seq: 2,
            metrics: vec![MetricEntry {
                name: "cpu_load".into(),
                config: MetricConfig { frequency: 60, aggregation: Aggregation::Avg },
            }],
            series: vec![SeriesEntry { metric: 0, path: vec![1, 1, 1, b'a'] }],
            head: HeadState {
                pages_per_file: 4,
                page_slots: 512,
                files: 2,
                hwm: 4,
                free: vec![3],
                series: vec![SeriesState {
                    origin: Some(970),
                    floor: 0,
                    pages: vec![(PageRef { no: 1, start: 970 }, 512), (PageRef { no: 2, start: 970 + 512 * 60 }, 3)],
                }],
            },
        }
    }

    fn free_payload() -> Vec<u8> {
        let mut b = Vec::new();
        payload::encode_free(&mut b, &[(SeriesId(0), 0)]);
        b
    }

    /// Writes segment `seq` (first LSN `first`) holding records of the given LSNs and kinds.
    fn segment(vfs: &SimVfs, seq: u64, first: u64, records: &[(u64, u8)]) -> PathBuf {
        let wal = dir().join("wal");
        let mut w = SegmentWriter::create(vfs, &wal, seq, first, 64 << 10).unwrap();
        let mut buf = Vec::new();
        for &(lsn, kind) in records {
            encode_frame(&mut buf, lsn, kind, &free_payload());
        }
        if !buf.is_empty() {
            w.append(&buf).unwrap();
        }
        w.sync().unwrap();
        wal.join(segment_name(seq))
    }

    fn build(m: &Manifest) -> SimVfs {
        let vfs = SimVfs::new();
        vfs.create_dir_all(&dir().join("wal")).unwrap();
        vfs.create_dir_all(&dir().join("head")).unwrap();
        for i in 0..m.head.files {
            HeadFile::create(&vfs, &dir().join("head"), i, m.head.pages_per_file, 512).unwrap();
        }
        m.store(&vfs, &dir()).unwrap();
        vfs
    }

    fn free_kind() -> u8 {
        payload::Kind::Free as u8
    }

    fn severities(r: &CheckReport) -> Vec<Severity> {
        r.problems.iter().map(|p| p.severity).collect()
    }

    #[test]
    fn clean_directory_and_no_writes() {
        let m = manifest();
        let vfs = build(&m);
        segment(&vfs, 2, 4, &[(4, free_kind()), (5, free_kind())]);
        let ops = vfs.mutating_ops();
        let r = check(&vfs, &dir()).unwrap();
        assert_eq!(vfs.mutating_ops(), ops, "the check wrote");
        assert!(r.problems.is_empty(), "{r}");
        assert_eq!(r.lsn.to_replay, 2);
        assert_eq!((r.pages.used, r.pages.free, r.pages.leaked, r.pages.bad), (2, 1, 0, 0));
        assert_eq!(r.head_files.len(), 2);
    }

    #[test]
    fn page_descriptor_checks() {
        type Edit = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("not below hwm", Box::new(|m| m.head.series[0].pages[1].0.no = 6)),
            ("a head file header", Box::new(|m| m.head.series[0].pages[1].0.no = 4)),
            ("length 513", Box::new(|m| m.head.series[0].pages[1].1 = 513)),
            ("off the grid of 512 x 60 s from 970", Box::new(|m| m.head.series[0].pages[1].0.start += 60)),
            ("from origin 1030", Box::new(|m| m.head.series[0].origin = Some(1030))),
            ("below the series' floor", Box::new(|m| m.head.series[0].floor = 1)),
            ("free page 4 is a head file header", Box::new(|m| m.head.free = vec![3, 4])),
            ("lies past the 8 pages", Box::new(|m| m.head.hwm = 9)),
        ];
        for (what, edit) in cases {
            let mut m = manifest();
            edit(&mut m);
            let vfs = build(&m);
            segment(&vfs, 2, 4, &[]);
            let r = check(&vfs, &dir()).unwrap();
            assert!(r.is_damaged(), "{what}: {r}");
            assert!(r.problems.iter().any(|p| p.message.contains(what) && p.file.ends_with("MANIFEST")), "{what}: {r}");
        }
        // A page neither used nor free: a warning only.
        let mut m = manifest();
        m.head.free.clear();
        let vfs = build(&m);
        segment(&vfs, 2, 4, &[]);
        let r = check(&vfs, &dir()).unwrap();
        assert_eq!(severities(&r), [Severity::Warning], "{r}");
        assert_eq!(r.pages.leaked, 1);
    }

    #[test]
    fn lsn_gaps_before_the_checkpoint_are_warnings_after_it_damage() {
        let vfs = build(&manifest());
        // Obsolete segment 1: LSN 2 missing, covered by the checkpoint (3).
        segment(&vfs, 1, 1, &[(1, free_kind()), (3, free_kind())]);
        let s2 = segment(&vfs, 2, 4, &[(4, free_kind()), (6, free_kind())]);
        let r = check(&vfs, &dir()).unwrap();
        assert_eq!(severities(&r), [Severity::Warning, Severity::Damage], "{r}");
        assert_eq!(r.lsn.gaps.len(), 2);
        assert_eq!(r.problems[1].file, s2);
        assert!(r.problems[1].message.contains("LSN 5 is missing"), "{r}");
        assert!(r.segments[0].obsolete && !r.segments[1].obsolete);
    }

    #[test]
    fn log_must_start_right_after_the_checkpoint() {
        let vfs = build(&manifest());
        segment(&vfs, 2, 6, &[(6, free_kind())]);
        let r = check(&vfs, &dir()).unwrap();
        assert!(r.is_damaged(), "{r}");
        assert!(r.problems[0].message.contains("LSNs 4..=5 are missing"), "{r}");
    }

    #[test]
    fn missing_segment_and_head_file_are_damage() {
        let m = manifest();
        let vfs = build(&m);
        vfs.remove_file(&dir().join("head").join("000001.pages")).unwrap();
        let r = check(&vfs, &dir()).unwrap();
        assert!(r.problems.iter().any(|p| p.message.contains("segment 2 on")), "{r}");
        assert!(r.problems.iter().any(|p| p.file.ends_with("000001.pages") && p.severity == Severity::Damage), "{r}");
    }

    #[test]
    fn undecodable_payload_after_the_checkpoint_is_damage() {
        let vfs = build(&manifest());
        segment(&vfs, 2, 4, &[(4, free_kind()), (5, 99)]);
        let r = check(&vfs, &dir()).unwrap();
        assert_eq!(severities(&r), [Severity::Damage], "{r}");
        assert!(r.problems[0].message.contains("unknown record kind 99"), "{r}");
    }

    #[test]
    fn interrupted_segment_creation_and_leftovers_are_warnings() {
        let vfs = build(&manifest());
        segment(&vfs, 2, 4, &[(4, free_kind())]);
        let s3 = segment(&vfs, 3, 5, &[]);
        // The header of the newest segment never reached the disk.
        let f = vfs.open(&s3, OpenMode::ReadWrite).unwrap();
        f.write_all_at(&[0u8; SEGMENT_HEADER_LEN], 0).unwrap();
        let f = vfs.open(&dir().join("MANIFEST.tmp"), OpenMode::CreateNew).unwrap();
        f.write_all_at(b"partial", 0).unwrap();
        let r = check(&vfs, &dir()).unwrap();
        assert!(!r.is_damaged(), "{r}");
        assert_eq!(severities(&r), [Severity::Warning, Severity::Warning], "{r}");
        assert!(matches!(r.segments[1].end, SegmentEnd::TornTail { offset: 0, .. }));
    }

    #[test]
    fn damaged_header_of_the_segment_the_manifest_names_is_damage() {
        let vfs = build(&manifest());
        let s2 = segment(&vfs, 2, 4, &[]);
        let f = vfs.open(&s2, OpenMode::ReadWrite).unwrap();
        f.write_all_at(&[0xff], 20).unwrap();
        let r = check(&vfs, &dir()).unwrap();
        assert_eq!(severities(&r), [Severity::Damage], "{r}");
        assert_eq!(r.problems[0].file, s2);
    }

    #[test]
    fn bad_frame_in_the_newest_segment_is_a_torn_tail_with_what_follows() {
        let vfs = build(&manifest());
        let s2 = segment(&vfs, 2, 4, &[(4, free_kind()), (5, free_kind()), (6, free_kind())]);
        let f = vfs.open(&s2, OpenMode::ReadWrite).unwrap();
        let second = (SEGMENT_HEADER_LEN + crate::storage::wal::record::frame_len(free_payload().len())) as u64;
        f.write_all_at(&[0xff], second + FRAME_HEADER_LEN as u64 + 2).unwrap();
        let r = check(&vfs, &dir()).unwrap();
        assert_eq!(severities(&r), [Severity::Warning], "{r}");
        assert_eq!(r.problems[0].offset, Some(second));
        assert!(r.problems[0].message.contains("1 intact records (LSN 6..=6)"), "{r}");
        assert_eq!(r.segments[0].records, 1);
    }

    #[test]
    fn unreadable_directory_is_an_error() {
        let vfs = SimVfs::new();
        assert!(check(&vfs, Path::new("/nope")).is_err());
        vfs.create_dir_all(&dir()).unwrap();
        let r = check(&vfs, &dir()).unwrap();
        assert!(r.is_damaged(), "an empty directory is not a database: {r}");
    }
}
