//! The write-ahead log: fixed-size segments of CRC32-framed records. Spec: `format/wal.md`.
//!
//! Owns the `wal/` directory of a database. Invariants:
//! - LSNs are contiguous from 1; segment `n+1` starts where segment `n` ends.
//! - Only the newest segment may hold unsynced bytes: the writer syncs a segment before it creates the next.
//! - After recovery, a torn tail is overwritten with zeros (and synced) before anything is appended, so
//!   stale bytes of a crashed write can never be read back as records.
//!
//! Replay ([`Wal::open`]) reports a bad frame in the newest segment as a torn tail (not an error, since a crash
//! may leave one) and a bad frame, bad header or non-zero bytes after the end in any older segment as
//! [`StorageError::Corruption`].
//!
//! Not thread-safe: the engine's writer thread owns the [`Wal`].

pub mod payload;
pub mod record;
pub mod segment;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::error::{CorruptionKind, StorageError};
use crate::storage::io::Vfs;
use crate::storage::Lsn;
use record::{encode_frame, frame_len, FRAME_HEADER_LEN, MAX_PAYLOAD_LEN};
use segment::{parse_segment_name, scan, segment_name, ScanEnd, SegmentWriter, SEGMENT_HEADER_LEN};

/// What replay found at the end of the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayReport {
    /// Records applied (LSN greater than the replay start).
    pub applied: u64,
    /// Records skipped because the checkpoint already covers them.
    pub skipped: u64,
    /// The highest LSN seen (applied or skipped), or the replay start.
    pub last_lsn: u64,
    /// A torn tail: segment file and offset from which bytes were discarded (and zeroed).
    pub torn_tail: Option<(PathBuf, u64, CorruptionKind)>,
    /// Newest segment files removed because their header never reached the disk whole.
    pub removed_empty: Vec<PathBuf>,
}

/// The log of one database.
pub struct Wal {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    segment_size: u64,
    current: SegmentWriter,
    pending: Vec<u8>,
    next_lsn: u64,
    /// Bytes written and not yet synced (for the metrics of the durability policy).
    unsynced: bool,
}

/// Lists `(seq, path)` of the segments in `dir`, in order. Files that are not segments are ignored.
pub fn list_segments(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let names = vfs.list_dir(dir).map_err(|e| StorageError::io("list", dir, e))?;
    let mut segs: Vec<_> = names.iter().filter_map(|n| parse_segment_name(n).map(|s| (s, dir.join(n)))).collect();
    segs.sort();
    Ok(segs)
}

impl Wal {
    /// Opens the log in `dir` (created if missing), replays every record with an LSN above `after` from the
    /// segments numbered `min_seq` and up through `apply` in order, repairs a torn tail, and returns the log
    /// ready to append at the next LSN (in a new segment `min_seq` if none is left).
    ///
    /// `apply` gets `(lsn, kind, payload)`; an error from it stops replay and is returned.
    pub fn open(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        segment_size: u64,
        after: Lsn,
        min_seq: u64,
        mut apply: impl FnMut(Lsn, u8, &[u8]) -> Result<(), StorageError>,
    ) -> Result<(Wal, ReplayReport), StorageError> {
        vfs.create_dir_all(dir).map_err(|e| StorageError::io("create dir", dir, e))?;
        // Segments below `min_seq` are covered by the checkpoint: not read (the caller removes them).
        let mut segs: Vec<_> = list_segments(&*vfs, dir)?.into_iter().filter(|(s, _)| *s >= min_seq).collect();
        let mut report = ReplayReport { last_lsn: after.0, ..ReplayReport::default() };
        let mut resume: Option<(u64, PathBuf, u64, bool)> = None;

        // A newest segment whose header is damaged never held a synced record (the header is synced with
        // the segment's creation, before any record): it is removed.
        // Only a segment newer than the manifest's first needed one can be such an interrupted creation: that
        // one was created and synced before the manifest naming it was written (segment 1 of a database
        // never checkpointed is the other exception).
        let removable = |seq: u64| seq > min_seq || (seq == 1 && min_seq <= 1);
        if let Some((seq, path)) = segs.last().filter(|(seq, _)| removable(*seq)) {
            let _ = seq;
            let path = path.clone();
            if let Err(StorageError::Corruption { .. }) = scan(&*vfs, &path) {
                let file = vfs
                    .open(&path, crate::storage::io::OpenMode::Read)
                    .map_err(|e| StorageError::io("open", &path, e))?;
                let bytes = file.read_all().map_err(|e| StorageError::io("read", &path, e))?;
                if bytes.iter().skip(SEGMENT_HEADER_LEN).any(|&b| b != 0) {
                    // Records behind a damaged header: that is damage, not an interrupted creation.
                    scan(&*vfs, &path)?;
                }
                vfs.remove_file(&path).map_err(|e| StorageError::io("remove", &path, e))?;
                vfs.sync_dir(dir).map_err(|e| StorageError::io("fsync dir", dir, e))?;
                report.removed_empty.push(path);
                segs.pop();
            }
        }

        let count = segs.len();
        // After removing an interrupted newest segment, the one before it was sealed (synced before the next
        // was created): damage in it is corruption, not a torn tail, and writing continues in a new segment.
        let last_is_sealed = !report.removed_empty.is_empty();
        let next_seq = segs.last().map_or(min_seq.max(1), |(s, _)| s + 1);
        let mut expected: Option<u64> = None;
        for (i, (seq, path)) in segs.iter().enumerate() {
            let last = i + 1 == count && !last_is_sealed;
            let s = scan(&*vfs, path)?;
            if s.header.seq.get() != *seq {
                return Err(StorageError::corrupt(
                    path,
                    8,
                    CorruptionKind::Invalid(format!("header says segment {}", s.header.seq.get())),
                ));
            }
            for f in &s.frames {
                if f.lsn <= after.0 {
                    report.skipped += 1;
                    report.last_lsn = report.last_lsn.max(f.lsn);
                    continue;
                }
                let want = expected.unwrap_or(after.0 + 1);
                if f.lsn != want {
                    return Err(StorageError::corrupt(
                        path,
                        (f.start - FRAME_HEADER_LEN) as u64,
                        CorruptionKind::LsnGap { expected: want, found: f.lsn },
                    ));
                }
                apply(Lsn(f.lsn), f.kind, s.payload(f))?;
                expected = Some(f.lsn + 1);
                report.applied += 1;
                report.last_lsn = f.lsn;
            }
            match (&s.end, last) {
                (ScanEnd::Clean(off), false) => {
                    if !s.zero_after_end {
                        return Err(StorageError::corrupt(
                            path,
                            *off,
                            CorruptionKind::Invalid("non-zero bytes after the last record of a sealed segment".into()),
                        ));
                    }
                }
                (ScanEnd::Bad(off, kind), false) => {
                    return Err(StorageError::corrupt(path, *off, kind.clone()));
                }
                (ScanEnd::Clean(off), true) => resume = Some((*seq, path.clone(), *off, !s.zero_after_end)),
                (ScanEnd::Bad(off, kind), true) => {
                    report.torn_tail = Some((path.clone(), *off, kind.clone()));
                    resume = Some((*seq, path.clone(), *off, true));
                }
            }
        }

        let next_lsn = report.last_lsn + 1;
        let current = match resume {
            Some((seq, path, off, zero)) => SegmentWriter::reopen(&*vfs, &path, seq, off, zero)?,
            None => SegmentWriter::create(&*vfs, dir, next_seq, next_lsn, segment_size)?,
        };
        let wal =
            Wal { vfs, dir: dir.to_owned(), segment_size, current, pending: Vec::new(), next_lsn, unsynced: false };
        Ok((wal, report))
    }

    /// The largest payload one record may carry in segments of this size.
    pub fn max_payload(&self) -> usize {
        let room = self.segment_size as usize - SEGMENT_HEADER_LEN - FRAME_HEADER_LEN;
        (room / 8 * 8).min(MAX_PAYLOAD_LEN)
    }

    /// The LSN the next record gets.
    pub fn next_lsn(&self) -> Lsn {
        Lsn(self.next_lsn)
    }

    /// Frames a record into the pending buffer (written by [`Wal::flush`]); returns its LSN. Moves to a new
    /// segment first if the record does not fit in this one.
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<Lsn, StorageError> {
        if payload.is_empty() || payload.len() > self.max_payload() {
            return Err(StorageError::corrupt(
                &self.dir,
                0,
                CorruptionKind::Invalid(format!("record payload of {} bytes", payload.len())),
            ));
        }
        let need = (self.pending.len() + frame_len(payload.len())) as u64;
        if need > self.current.remaining() {
            self.rotate()?;
        }
        let lsn = self.next_lsn;
        encode_frame(&mut self.pending, lsn, kind, payload);
        self.next_lsn += 1;
        Ok(Lsn(lsn))
    }

    /// Makes room for `bytes` more framed bytes in the current segment: if they do not fit behind what is
    /// pending, syncs the segment and starts the next one. A failure to sync is an ordinary error (the
    /// engine turns read-only: an fsync is never retried as if the data were safe). A failure to create the
    /// next segment (a full disk) is [`StorageError::NotLogged`]: the current segment stays, nothing of the
    /// bytes was logged, and a later call tries again (first removing what the failed attempt left).
    pub fn reserve(&mut self, bytes: u64) -> Result<(), StorageError> {
        if self.pending.len() as u64 + bytes <= self.current.remaining() {
            return Ok(());
        }
        self.rotate().map(|_| ())
    }

    /// Writes the pending frames to the segment (to the OS, not synced).
    pub fn flush(&mut self) -> Result<(), StorageError> {
        if !self.pending.is_empty() {
            self.current.append(&self.pending)?;
            self.pending.clear();
            self.unsynced = true;
        }
        Ok(())
    }

    /// Writes pending frames and fsyncs the segment.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.flush()?;
        if self.unsynced {
            self.current.sync()?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Whether written bytes await an fsync.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced || !self.pending.is_empty()
    }

    /// Syncs the current segment and starts the next one; returns the new segment's sequence number. Every
    /// record from now on lies in segments with that number or higher.
    ///
    /// A failure to sync the current segment is an ordinary error. A failure to create the next one (a full
    /// disk) is [`StorageError::NotLogged`]: the current segment stays, and a later call tries again, first
    /// removing what the failed attempt left.
    pub fn rotate(&mut self) -> Result<u64, StorageError> {
        self.sync()?;
        let seq = self.current.seq() + 1;
        let path = self.dir.join(segment_name(seq));
        // A segment numbered past the current one holds no record: it is what an earlier failed attempt left.
        if self.vfs.exists(&path) {
            self.vfs.remove_file(&path).map_err(|e| not_logged(StorageError::io("remove", &path, e)))?;
        }
        match SegmentWriter::create(&*self.vfs, &self.dir, seq, self.next_lsn, self.segment_size) {
            Ok(w) => {
                self.current = w;
                Ok(seq)
            }
            Err(e) => {
                if self.vfs.exists(&path) {
                    let _ = self.vfs.remove_file(&path);
                }
                Err(not_logged(e))
            }
        }
    }

    /// Removes every segment numbered below `seq` (their records are covered by a durable checkpoint).
    pub fn remove_below(&mut self, seq: u64) -> Result<usize, StorageError> {
        let mut n = 0;
        let seq = seq.min(self.current.seq());
        for (s, path) in list_segments(&*self.vfs, &self.dir)? {
            if s < seq {
                self.vfs.remove_file(&path).map_err(|e| StorageError::io("remove", &path, e))?;
                n += 1;
            }
        }
        if n > 0 {
            self.vfs.sync_dir(&self.dir).map_err(|e| StorageError::io("fsync dir", &self.dir, e))?;
        }
        Ok(n)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `e`, from starting a WAL segment (or a head file), as a write refused before anything was logged.
pub(crate) fn not_logged(e: StorageError) -> StorageError {
    let full = matches!(&e, StorageError::Io { source, .. } if crate::storage::error::is_disk_full(source));
    StorageError::NotLogged { full, message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::io::sim::{FaultOp, SimVfs};

    fn open(vfs: &SimVfs) -> Result<(Wal, ReplayReport), StorageError> {
        Wal::open(Arc::new(vfs.clone()), Path::new("/w"), 4096, Lsn(0), 1, |_, _, _| Ok(()))
    }

    /// A rotate whose new segment could not be created, nor its file removed, leaves that file behind (length 0,
    /// its directory entry not synced). Records then go on into the old segment; unsynced, a crash can tear
    /// them while keeping the new segment's entry, and recovery, which removes the empty newest segment and
    /// judges the one before as sealed, refuses the tear as damage. This is how
    /// `tests/crash_recovery.rs`'s background-checkpoint proptest failed (seed `c21e07e7…`); not fixed yet:
    /// making the next append rotate first (tried) made that proptest fail far more often.
    #[test]
    #[ignore = "known bug: a failed rotate's leftover segment makes a later torn tail unrecoverable"]
    fn a_failed_rotate_that_left_its_file_does_not_make_a_later_torn_tail_unrecoverable() {
        let vfs = SimVfs::new();
        let (mut wal, _) = open(&vfs).expect("open");
        wal.append(1, &[1; 100]).expect("append");
        wal.sync().expect("sync");
        // The new segment's file is created, then writing its zeros fails, and so does removing it.
        vfs.fail_next(FaultOp::Write, std::io::ErrorKind::Other);
        vfs.fail_next(FaultOp::Remove, std::io::ErrorKind::Other);
        assert!(matches!(wal.rotate(), Err(StorageError::NotLogged { .. })));
        assert!(vfs.exists(Path::new("/w").join(segment_name(2)).as_path()), "the failed attempt left its file");
        wal.append(1, &[2; 100]).expect("append after the failed rotate");
        wal.flush().expect("flush");
        // Unsynced as the second record is, whatever a crash keeps of it, the log must open.
        for seed in 0..64 {
            let (_, report) = open(&vfs.crash(seed)).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert!(report.last_lsn >= 1, "seed {seed}: the synced record survives");
        }
    }
}
