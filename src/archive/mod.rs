//! Parquet archives in cc-metric-store's long format. Codec of `format/archive.md`.
//!
//! Data past long-term retention leaves silt as one Parquet file per cluster and time range, one row per
//! sample, with the columns cc-metric-store (cc-backend `pkg/metricstore/parquetArchive.go`) writes:
//! `cluster`, `hostname`, `metric`, `scope`, `scope_id`, `timestamp`, `frequency`, `value`. Any Parquet
//! reader can read it; [`read_parquet`] reads it back and refuses, with an [`ArchiveError`] naming the file,
//! anything that does not have that schema.
//!
//! - [`write_parquet`] sorts the rows, writes them with dictionary-encoded strings and zstd in row groups
//!   of at most [`ROW_GROUP_ROWS`] rows, and replaces the file atomically (temporary name, fsync, rename,
//!   fsync of the directory). The footer records the CRC32 of the data region (everything before the page
//!   index and footer), which the reader checks before it decodes a page.
//! - `value` is stored as a 64-bit `DOUBLE`, bit for bit (cc-metric-store stores a 32-bit `FLOAT`, which
//!   loses precision above 2^24; silt promises not to lose samples, and every reader of cc-metric-store's
//!   files reads a `DOUBLE` column too). The reader accepts both (see [`ArchiveRow::value`]).
//! - All file access goes through a [`Vfs`](crate::storage::io::Vfs); [`write_parquet_with`] and
//!   [`read_parquet_with`] take one, the plain functions use [`StdVfs`](crate::storage::io::StdVfs).

mod read;
mod schema;
mod write;

use std::path::PathBuf;

pub use read::{read_parquet, read_parquet_with};
pub use schema::{COLUMNS, CRC_KEY, DATA_BYTES_KEY, FORMAT_VERSION, ROW_GROUP_ROWS, VERSION_KEY, ZSTD_LEVEL};
pub use write::{tmp_path, write_parquet, write_parquet_with};

/// One sample in cc-metric-store's long format.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveRow {
    /// Cluster name.
    pub cluster: String,
    /// Host name.
    pub hostname: String,
    /// Metric name.
    pub metric: String,
    /// Hardware scope: `node`, `socket`, `memoryDomain`, `core`, `hwthread`, `accelerator`, …
    pub scope: String,
    /// The id within the scope (`"0"`, `"12"`), or empty for scope `node`.
    pub scope_id: String,
    /// Unix time of the sample in seconds.
    pub timestamp: i64,
    /// Sampling interval of the metric in seconds.
    pub frequency: i64,
    /// The sample, stored as a `DOUBLE` bit for bit (NaN payloads included). A file with a `FLOAT` value
    /// column (cc-metric-store's) is read widened to `f64` exactly.
    pub value: f64,
}

/// The file name of the archive of `cluster` for `[from, to]` (unix seconds):
/// `<cluster>-<from>-<to>.parquet`, each number at least 10 decimal digits, zero-padded (a negative number
/// keeps its `-` in front of the padding). Cluster names are already validated to contain no `/` or control
/// characters.
pub fn file_name(cluster: &str, from: i64, to: i64) -> String {
    format!("{cluster}-{from:010}-{to:010}.parquet")
}

/// An error reading or writing an archive. Each names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
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
    /// The Parquet codec refused the file (bad magic, damaged footer or page, failed decompression, a read
    /// past the end) or failed to encode it.
    #[error("{path}: parquet: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The codec's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A required column is not in the file's schema.
    #[error("{path}: missing column `{column}`")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column's name.
        column: &'static str,
    },
    /// A column has a type, logical type or repetition that this reader does not accept.
    #[error("{path}: column `{column}` is {found}, expected {expected}")]
    WrongType {
        /// The file.
        path: PathBuf,
        /// The column's name.
        column: &'static str,
        /// What the reader accepts.
        expected: &'static str,
        /// What the file has.
        found: String,
    },
    /// The file's `silt.archive.version` metadata names a version this reader does not know.
    #[error("{path}: unsupported archive version {found:?} (supported: {supported})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The value of the `silt.archive.version` key.
        found: String,
        /// The version this reader reads.
        supported: u32,
    },
    /// A `silt.archive.*` metadata value is missing or malformed.
    #[error("{path}: metadata {key} is {value:?}")]
    InvalidMetadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// Its value, if the key is there and has one.
        value: Option<String>,
    },
    /// The data region does not match the CRC32 the footer records for it.
    #[error("{path}: checksum mismatch over the first {bytes} bytes: stored {expected:#010x}, computed {got:#010x}")]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// Length of the data region.
        bytes: u64,
        /// The CRC32 the footer records.
        expected: u32,
        /// The CRC32 of the bytes read.
        got: u32,
    },
    /// The Parquet codec panicked on the file (it asserts on some impossible metadata); caught and reported
    /// as damage.
    #[error("{path}: parquet decoder failed: {message}")]
    DecoderPanic {
        /// The file.
        path: PathBuf,
        /// The panic message.
        message: String,
    },
    /// A row group's metadata for a column chunk is impossible.
    #[error("{path}: row group {row_group}, column `{column}`: column chunk {problem}")]
    ColumnChunk {
        /// The file.
        path: PathBuf,
        /// Index of the row group.
        row_group: usize,
        /// The column's name.
        column: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// A row group's column decodes to a different number of values than the row group declares.
    #[error("{path}: row group {row_group}, column `{column}`: {got} values for {expected} rows")]
    RowCount {
        /// The file.
        path: PathBuf,
        /// Index of the row group.
        row_group: usize,
        /// The column's name.
        column: &'static str,
        /// Rows the row group declares.
        expected: u64,
        /// Values found (at most `expected + 1`: decoding stops there).
        got: u64,
    },
    /// An optional column holds a null.
    #[error("{path}: row group {row_group}, column `{column}`: null value")]
    Null {
        /// The file.
        path: PathBuf,
        /// Index of the row group.
        row_group: usize,
        /// The column's name.
        column: &'static str,
    },
    /// A string column holds bytes that are not UTF-8.
    #[error("{path}: row group {row_group}, column `{column}`: value is not UTF-8")]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// Index of the row group.
        row_group: usize,
        /// The column's name.
        column: &'static str,
    },
}

impl ArchiveError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            ArchiveError::Io { path, .. }
            | ArchiveError::Parquet { path, .. }
            | ArchiveError::MissingColumn { path, .. }
            | ArchiveError::WrongType { path, .. }
            | ArchiveError::UnsupportedVersion { path, .. }
            | ArchiveError::InvalidMetadata { path, .. }
            | ArchiveError::ChecksumMismatch { path, .. }
            | ArchiveError::DecoderPanic { path, .. }
            | ArchiveError::ColumnChunk { path, .. }
            | ArchiveError::RowCount { path, .. }
            | ArchiveError::Null { path, .. }
            | ArchiveError::InvalidUtf8 { path, .. } => path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_zero_padded() {
        assert_eq!(file_name("emmy", 0, 86_399), "emmy-0000000000-0000086399.parquet");
        assert_eq!(file_name("fritz", 1_700_000_000, 1_700_086_399), "fritz-1700000000-1700086399.parquet");
        assert_eq!(file_name("a-b", -5, i64::MAX), "a-b--000000005-9223372036854775807.parquet");
    }

    #[test]
    fn round_trip_through_the_simulated_file_system() {
        use crate::storage::io::sim::SimVfs;
        use crate::storage::io::Vfs;
        let vfs = SimVfs::new();
        vfs.create_dir_all(std::path::Path::new("/a")).unwrap();
        let path = std::path::Path::new("/a/c.parquet");
        let row = |host: &str, ts: i64, value: f64| ArchiveRow {
            cluster: "c".into(),
            hostname: host.into(),
            metric: "m".into(),
            scope: "node".into(),
            scope_id: String::new(),
            timestamp: ts,
            frequency: 60,
            value,
        };
        let mut rows = vec![row("b", 1, 1.5), row("a", 2, -0.0), row("a", 1, f64::NAN)];
        assert_eq!(write_parquet_with(&vfs, path, &mut rows).unwrap(), 3);
        assert_eq!(vfs.list_dir(std::path::Path::new("/a")).unwrap(), vec!["c.parquet"]);
        let back = read_parquet_with(&vfs, path).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!((back[0].hostname.as_str(), back[0].timestamp), ("a", 1));
        assert!(back[0].value.is_nan());
        assert_eq!(back[1].value.to_bits(), (-0.0f64).to_bits());
        assert_eq!((back[2].hostname.as_str(), back[2].value), ("b", 1.5));
    }
}
