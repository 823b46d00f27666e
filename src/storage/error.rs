//! Errors of the storage engine. Anything about disk carries the file and, where known, the offset.

use std::path::PathBuf;

/// What kind of damage a reader found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// The file does not start with the expected magic number.
    #[error("bad magic")]
    BadMagic,
    /// A stored checksum does not match the bytes it covers.
    #[error("checksum mismatch: stored {expected:#010x}, computed {got:#010x}")]
    ChecksumMismatch {
        /// The checksum stored in the file.
        expected: u32,
        /// The checksum of the bytes read.
        got: u32,
    },
    /// A length, count or offset points outside its container.
    #[error("out of bounds: {0}")]
    OutOfBounds(String),
    /// A record decoded but says something impossible.
    #[error("invalid record: {0}")]
    Invalid(String),
    /// Log sequence numbers are not contiguous.
    #[error("LSN gap: expected {expected}, found {found}")]
    LsnGap {
        /// The next LSN the reader expected.
        expected: u64,
        /// The LSN it found.
        found: u64,
    },
}

/// An error of the storage engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An I/O call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file is damaged.
    #[error("corruption in {file} at offset {offset}: {kind}")]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        kind: CorruptionKind,
    },
    /// A file was written by a version of silt this one cannot read.
    #[error("{file}: unsupported format version {version} (this build reads {supported})")]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// The version found in it.
        version: u32,
        /// The version this build writes and reads.
        supported: u32,
    },
    /// An earlier fsync or write failed; the database is read-only from then on, since the state of the
    /// data that write covered is unknown (the PostgreSQL fsync lesson: never retry as if it were safe).
    #[error("the database is read-only after an earlier I/O failure: {0}")]
    PreviousIo(String),
    /// A write of samples (or a free or seal of pages) refused before any of it was logged, because there was
    /// no room for it: creating the WAL's next segment, or a head file the samples need, failed (a full disk,
    /// most often). Nothing acknowledged is affected, the database stays writable, and the same write may
    /// succeed later, once there is room. (A metric declaration or series definition that meets this makes
    /// the database read-only instead: the catalog already names it.)
    #[error("write refused, nothing of it was logged: {message}")]
    NotLogged {
        /// Whether the cause was a full disk or quota (`ENOSPC`, `EDQUOT`).
        full: bool,
        /// What failed.
        message: String,
    },
    /// A checkpoint's manifest could not be written (a full disk, most often) before it replaced the old
    /// one: nothing changed, the old manifest and the WAL still hold everything, and a later checkpoint tries
    /// again.
    #[error("checkpoint not written, nothing changed: {message}")]
    NotWritten {
        /// Whether the cause was a full disk or quota (`ENOSPC`, `EDQUOT`).
        full: bool,
        /// What failed.
        message: String,
    },
    /// The database is closed or its writer thread is gone.
    #[error("the database is closed")]
    Closed,
    /// The data directory is locked by another process.
    #[error("data directory {0} is in use by another process")]
    Locked(PathBuf),
    /// A write would define series past the database's limit (`Options::max_series`, or the most a
    /// `SeriesId` numbers); it is refused whole and nothing of it is stored.
    #[error("series limit reached: the write would define {new} new series, past the limit of {limit}")]
    TooManySeries {
        /// The limit.
        limit: u32,
        /// The new series the write would have defined.
        new: usize,
    },
    /// A name of a state blob that cannot be used (see `storage::state::check_name`).
    #[error("invalid state name {name:?}: {why}")]
    InvalidName {
        /// The name (its first 64 characters).
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Whether an I/O error says the disk or the quota is full (`ENOSPC`, `EDQUOT`).
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

impl StorageError {
    /// Wraps an I/O error with the operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io { op, path: path.into(), source }
    }

    /// A corruption error.
    pub fn corrupt(file: impl Into<PathBuf>, offset: u64, kind: CorruptionKind) -> Self {
        StorageError::Corruption { file: file.into(), offset, kind }
    }
}
