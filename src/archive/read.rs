//! Reading an archive (`format/archive.md`, "Reading").
//!
//! The file is untrusted: every byte range the codec asks for is checked against the file's length before
//! it is read (so no allocation is sized by an unchecked offset or length), each row group's columns must
//! decode to exactly the row count it declares, and values are decoded in bounded batches.

use std::io::{self, BufReader, Read};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{ByteArray, DataType};
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, FileReader, Length, RowGroupReader};
use parquet::file::serialized_reader::SerializedFileReader;

use super::schema::{
    check_metadata, check_schema, DataChecksum, Layout, COLUMNS, DATA_BYTES_KEY, FREQUENCY, STRING_COLUMNS, TIMESTAMP,
    VALUE,
};
use super::{ArchiveError, ArchiveRow};
use crate::storage::io::{OpenMode, StdVfs, VFile, Vfs};

/// Values decoded per call into the codec: bounds what one call allocates.
const BATCH: usize = 64 * 1024;
/// Bytes read per call while the data-region CRC is computed.
const CRC_CHUNK: usize = 1 << 20;

/// Reads every row of an archive file written by write_parquet (or any file with the same schema).
///
/// "The same schema": the eight columns of [`COLUMNS`](super::COLUMNS) at the top level, found by name in
/// any order, strings as `BYTE_ARRAY` (`STRING` or no logical type), `timestamp` and `frequency` as `INT64`
/// (signed 64-bit `INTEGER` or none), `value` as `FLOAT` or `DOUBLE`; each `REQUIRED`, or `OPTIONAL`
/// without nulls. Other columns are ignored. Rows come back in file order. A file whose
/// `silt.archive.version` is present and not `1` is refused; one whose version is `1` must carry the
/// data-region checksum, and it must match. A panic of the Parquet codec on a damaged file is caught and
/// returned as [`ArchiveError::DecoderPanic`].
pub fn read_parquet(path: &Path) -> Result<Vec<ArchiveRow>, ArchiveError> {
    read_parquet_with(&StdVfs, path)
}

/// [`read_parquet`] through `vfs`.
pub fn read_parquet_with(vfs: &dyn Vfs, path: &Path) -> Result<Vec<ArchiveRow>, ArchiveError> {
    let io_err = |op: &'static str| move |source| ArchiveError::Io { op, path: path.to_path_buf(), source };
    let file: Arc<dyn VFile> = Arc::from(vfs.open(path, OpenMode::Read).map_err(io_err("open"))?);
    let len = file.len().map_err(io_err("stat"))?;
    // The `parquet` crate asserts on some impossible metadata instead of returning an error. What this module
    // knows of is checked before it gets there; anything else it panics on becomes an error here, so a
    // damaged file never takes the process down (with the default `panic = "unwind"`).
    panic::catch_unwind(AssertUnwindSafe(|| decode(path, file, len))).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(ArchiveError::DecoderPanic { path: path.to_path_buf(), message })
    })
}

fn decode(path: &Path, file: Arc<dyn VFile>, len: u64) -> Result<Vec<ArchiveRow>, ArchiveError> {
    let pq = |source| ArchiveError::Parquet { path: path.to_path_buf(), source };
    let reader = SerializedFileReader::new(Source { file: Arc::clone(&file), len }).map_err(pq)?;
    let meta = reader.metadata().file_metadata();
    if let Some(sum) = check_metadata(path, meta.key_value_metadata())? {
        verify_data(path, &*file, len, &sum)?;
    }
    let layout = check_schema(path, meta.schema_descr())?;

    let mut rows = Vec::new();
    for index in 0..reader.num_row_groups() {
        let group = reader.get_row_group(index).map_err(pq)?;
        let declared = group.metadata().num_rows();
        let expected = u64::try_from(declared)
            .map_err(|_| pq(ParquetError::General(format!("row group {index} declares {declared} rows"))))?;
        let mut ctx = Group { path, index, expected, group: &*group, layout: &layout, file_len: len };
        rows.append(&mut ctx.read()?);
    }
    Ok(rows)
}

/// Checks the CRC32 of the data region before any page is decoded.
fn verify_data(path: &Path, file: &dyn VFile, len: u64, sum: &DataChecksum) -> Result<(), ArchiveError> {
    if sum.bytes < 4 || sum.bytes > len {
        return Err(ArchiveError::InvalidMetadata {
            path: path.to_path_buf(),
            key: DATA_BYTES_KEY,
            value: Some(sum.bytes.to_string()),
        });
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; usize::try_from(sum.bytes).unwrap_or(CRC_CHUNK).min(CRC_CHUNK)];
    let mut offset = 0u64;
    while offset < sum.bytes {
        let n = usize::try_from(sum.bytes - offset).unwrap_or(CRC_CHUNK).min(buf.len());
        let chunk = buf.get_mut(..n).unwrap_or_default();
        file.read_exact_at(chunk, offset).map_err(|source| ArchiveError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
        hasher.update(chunk);
        offset += n as u64;
    }
    let got = hasher.finalize();
    if got != sum.crc {
        return Err(ArchiveError::ChecksumMismatch {
            path: path.to_path_buf(),
            bytes: sum.bytes,
            expected: sum.crc,
            got,
        });
    }
    Ok(())
}

/// One row group being decoded.
struct Group<'a> {
    path: &'a Path,
    index: usize,
    expected: u64,
    group: &'a dyn RowGroupReader,
    layout: &'a Layout,
    file_len: u64,
}

impl Group<'_> {
    /// Decodes the row group column by column into rows.
    fn read(&mut self) -> Result<Vec<ArchiveRow>, ArchiveError> {
        let mut rows: Vec<ArchiveRow> = Vec::new();
        for column in 0..COLUMNS.len() {
            match column {
                c if c < STRING_COLUMNS => {
                    let values = match self.reader(column)? {
                        ColumnReader::ByteArrayColumnReader(mut r) => self.values(&mut r, column)?,
                        _ => return Err(self.wrong_type(column)),
                    };
                    if column == 0 {
                        rows.reserve_exact(values.len());
                        for value in &values {
                            rows.push(ArchiveRow {
                                cluster: self.utf8(value, column)?,
                                hostname: String::new(),
                                metric: String::new(),
                                scope: String::new(),
                                scope_id: String::new(),
                                timestamp: 0,
                                frequency: 0,
                                value: 0.0,
                            });
                        }
                    } else {
                        for (row, value) in rows.iter_mut().zip(&values) {
                            let s = self.utf8(value, column)?;
                            match column {
                                1 => row.hostname = s,
                                2 => row.metric = s,
                                3 => row.scope = s,
                                _ => row.scope_id = s,
                            }
                        }
                    }
                }
                TIMESTAMP | FREQUENCY => {
                    let values = match self.reader(column)? {
                        ColumnReader::Int64ColumnReader(mut r) => self.values(&mut r, column)?,
                        _ => return Err(self.wrong_type(column)),
                    };
                    for (row, value) in rows.iter_mut().zip(values) {
                        if column == TIMESTAMP {
                            row.timestamp = value;
                        } else {
                            row.frequency = value;
                        }
                    }
                }
                _ => {
                    let values: Vec<f64> = match self.reader(column)? {
                        ColumnReader::FloatColumnReader(mut r) => {
                            self.values(&mut r, column)?.into_iter().map(f64::from).collect()
                        }
                        ColumnReader::DoubleColumnReader(mut r) => self.values(&mut r, column)?,
                        _ => return Err(self.wrong_type(column)),
                    };
                    debug_assert_eq!(column, VALUE);
                    for (row, value) in rows.iter_mut().zip(values) {
                        row.value = value;
                    }
                }
            }
        }
        Ok(rows)
    }

    fn reader(&self, column: usize) -> Result<ColumnReader, ArchiveError> {
        let leaf = self.layout.index.get(column).copied().unwrap_or(usize::MAX);
        self.check_chunk(column, leaf)?;
        self.group
            .get_column_reader(leaf)
            .map_err(|source| ArchiveError::Parquet { path: self.path.to_path_buf(), source })
    }

    /// Checks what the codec would otherwise assert on (and panic): the row group has a chunk for the leaf,
    /// and the chunk's start and length are non-negative and inside the file.
    fn check_chunk(&self, column: usize, leaf: usize) -> Result<(), ArchiveError> {
        let problem = |problem| ArchiveError::ColumnChunk {
            path: self.path.to_path_buf(),
            row_group: self.index,
            column: COLUMNS.get(column).copied().unwrap_or("?"),
            problem,
        };
        let Some(chunk) = self.group.metadata().columns().get(leaf) else {
            return Err(problem("missing from the row group"));
        };
        let start = chunk.dictionary_page_offset().unwrap_or_else(|| chunk.data_page_offset());
        let (Ok(start), Ok(len)) = (u64::try_from(start), u64::try_from(chunk.compressed_size())) else {
            return Err(problem("negative offset or length"));
        };
        if start.checked_add(len).is_none_or(|end| end > self.file_len) {
            return Err(problem("extends past the end of the file"));
        }
        Ok(())
    }

    /// Decodes exactly `expected` values of one column, in batches of at most [`BATCH`], and checks that no
    /// null and no further value follows.
    fn values<T: DataType>(&self, reader: &mut ColumnReaderImpl<T>, column: usize) -> Result<Vec<T::T>, ArchiveError> {
        let name = COLUMNS.get(column).copied().unwrap_or("?");
        let optional = self.layout.optional.get(column).copied().unwrap_or(false);
        let pq = |source| ArchiveError::Parquet { path: self.path.to_path_buf(), source };
        let mut values = Vec::new();
        let mut levels: Vec<i16> = Vec::new();
        let mut got = 0u64;
        while got < self.expected + 1 {
            // Ask for one value past the declared count: there must be none.
            let want = usize::try_from(self.expected + 1 - got).unwrap_or(BATCH).min(BATCH);
            levels.clear();
            let before = values.len();
            let (records, _, _) =
                reader.read_records(want, optional.then_some(&mut levels), None, &mut values).map_err(pq)?;
            if records == 0 {
                break;
            }
            if values.len() - before != records {
                return Err(ArchiveError::Null { path: self.path.to_path_buf(), row_group: self.index, column: name });
            }
            got += records as u64;
        }
        if got != self.expected {
            return Err(ArchiveError::RowCount {
                path: self.path.to_path_buf(),
                row_group: self.index,
                column: name,
                expected: self.expected,
                got,
            });
        }
        Ok(values)
    }

    fn utf8(&self, value: &ByteArray, column: usize) -> Result<String, ArchiveError> {
        value.as_utf8().map(str::to_owned).map_err(|_| ArchiveError::InvalidUtf8 {
            path: self.path.to_path_buf(),
            row_group: self.index,
            column: COLUMNS.get(column).copied().unwrap_or("?"),
        })
    }

    /// The codec handed out a reader of another physical type than the schema check accepted.
    fn wrong_type(&self, column: usize) -> ArchiveError {
        ArchiveError::WrongType {
            path: self.path.to_path_buf(),
            column: COLUMNS.get(column).copied().unwrap_or("?"),
            expected: "the physical type its schema declares",
            found: "a column chunk of another type".to_string(),
        }
    }
}

/// The file as the codec sees it: every range is checked against `len` before anything is read.
struct Source {
    file: Arc<dyn VFile>,
    len: u64,
}

impl Length for Source {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for Source {
    type T = BufReader<SourceRead>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        if start > self.len {
            return Err(ParquetError::EOF(format!("read at offset {start} past the end ({} bytes)", self.len)));
        }
        Ok(BufReader::new(SourceRead { file: Arc::clone(&self.file), pos: start, end: self.len }))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match u64::try_from(length).ok().and_then(|l| start.checked_add(l)) {
            Some(end) if end <= self.len => {}
            _ => {
                return Err(ParquetError::EOF(format!(
                    "{length} bytes at offset {start} run past the end ({} bytes)",
                    self.len
                )))
            }
        }
        let mut buf = vec![0u8; length];
        self.file.read_exact_at(&mut buf, start)?;
        Ok(Bytes::from(buf))
    }
}

/// A sequential reader of `[pos, end)` of a file.
struct SourceRead {
    file: Arc<dyn VFile>,
    pos: u64,
    end: u64,
}

impl Read for SourceRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let n = buf.len().min(left);
        let Some(buf) = buf.get_mut(..n) else { return Ok(0) };
        if buf.is_empty() {
            return Ok(0);
        }
        let read = self.file.read_at(buf, self.pos)?;
        self.pos += read as u64;
        Ok(read)
    }
}
