//! Writing an archive (`format/archive.md`, "Writing").

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::writer::{SerializedColumnWriter, SerializedFileWriter};

use super::schema::{
    write_properties, write_schema, CRC_KEY, DATA_BYTES_KEY, FREQUENCY, ROW_GROUP_ROWS, STRING_COLUMNS, TIMESTAMP,
    VALUE,
};
use super::{ArchiveError, ArchiveRow};
use crate::storage::io::{OpenMode, StdVfs, VFile, Vfs};

/// Sorts `rows` by (cluster, hostname, metric, scope, scope_id, timestamp) and writes them to `path`
/// atomically: to a temp name in the same directory, fsync, rename, fsync the directory. Returns the number
/// of rows written.
///
/// The temporary name is [`tmp_path`]`(path)` (`<name>.tmp`); a leftover one is replaced. On any error the
/// temporary file is removed and nothing is left at `path` (if even the removal fails, a file may stay
/// behind, and the error still says what failed first).
pub fn write_parquet(path: &Path, rows: &mut [ArchiveRow]) -> Result<u64, ArchiveError> {
    write_parquet_with(&StdVfs, path, rows)
}

/// [`write_parquet`] through `vfs`.
pub fn write_parquet_with(vfs: &dyn Vfs, path: &Path, rows: &mut [ArchiveRow]) -> Result<u64, ArchiveError> {
    if path.file_name().is_none() {
        let source = io::Error::new(io::ErrorKind::InvalidInput, "not a file name");
        return Err(ArchiveError::Io { op: "create", path: path.to_path_buf(), source });
    }
    rows.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));

    let tmp = tmp_path(path);
    if vfs.exists(&tmp) {
        vfs.remove_file(&tmp).map_err(|e| io_err("remove", &tmp, e))?;
    }
    let file = vfs.open(&tmp, OpenMode::CreateNew).map_err(|e| io_err("create", &tmp, e))?;
    let written = encode(&*file, &tmp, rows).and_then(|()| file.sync_data().map_err(|e| io_err("fsync", &tmp, e)));
    drop(file);
    if let Err(e) = written {
        let _ = vfs.remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = vfs.rename(&tmp, path) {
        let _ = vfs.remove_file(&tmp);
        return Err(io_err("rename to", path, e));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Err(e) = vfs.sync_dir(dir) {
        // The rename may or may not be durable; the caller sees an error, so it must not see an archive.
        let _ = vfs.remove_file(path);
        return Err(io_err("fsync directory", dir, e));
    }
    Ok(rows.len() as u64)
}

/// The temporary name [`write_parquet`] writes `path` under before it renames it: `<file name>.tmp` in the
/// same directory.
pub fn tmp_path(path: &Path) -> PathBuf {
    crate::storage::io::tmp_path(path)
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> ArchiveError {
    ArchiveError::Io { op, path: path.to_path_buf(), source }
}

fn sort_key(row: &ArchiveRow) -> (&str, &str, &str, &str, &str, i64) {
    (&row.cluster, &row.hostname, &row.metric, &row.scope, &row.scope_id, row.timestamp)
}

/// The `i`-th string column of a row (`i < STRING_COLUMNS`).
fn string_field(row: &ArchiveRow, i: usize) -> &str {
    match i {
        0 => &row.cluster,
        1 => &row.hostname,
        2 => &row.metric,
        3 => &row.scope,
        _ => &row.scope_id,
    }
}

/// An [`io::Write`] that appends to a [`VFile`] at increasing offsets and hashes what it wrote. (The
/// encoder buffers in front of it.)
struct FileSink<'a> {
    file: &'a dyn VFile,
    offset: u64,
    crc: crc32fast::Hasher,
}

impl Write for FileSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all_at(buf, self.offset)?;
        self.offset += buf.len() as u64;
        self.crc.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Encodes the (sorted) rows as a whole Parquet file into `file`, which is named `path`. After the last row
/// group, the length and CRC32 of everything written so far (the data region) go into the footer.
fn encode(file: &dyn VFile, path: &Path, rows: &[ArchiveRow]) -> Result<(), ArchiveError> {
    let pq = |source| codec_error(path, source);
    let sink = FileSink { file, offset: 0, crc: crc32fast::Hasher::new() };
    let mut writer =
        SerializedFileWriter::new(sink, write_schema().map_err(pq)?, write_properties().map_err(pq)?).map_err(pq)?;
    for chunk in rows.chunks(ROW_GROUP_ROWS) {
        let mut group = writer.next_row_group().map_err(pq)?;
        let mut column = 0;
        while let Some(mut col) = group.next_column().map_err(pq)? {
            write_column(&mut col, column, chunk).map_err(pq)?;
            col.close().map_err(pq)?;
            column += 1;
        }
        group.close().map_err(pq)?;
    }
    writer.flush().map_err(|e| io_err("write", path, e))?;
    let data = writer.inner();
    let (data_bytes, crc) = (data.offset, data.crc.clone().finalize());
    writer.append_key_value_metadata(KeyValue::new(DATA_BYTES_KEY.to_string(), data_bytes.to_string()));
    writer.append_key_value_metadata(KeyValue::new(CRC_KEY.to_string(), format!("{crc:08x}")));
    writer.into_inner().map_err(pq)?;
    Ok(())
}

/// Writes column `column` of `rows`. Consecutive equal strings (the rows are sorted) share one buffer.
fn write_column(col: &mut SerializedColumnWriter<'_>, column: usize, rows: &[ArchiveRow]) -> Result<(), ParquetError> {
    match (column, col.untyped()) {
        (i, ColumnWriter::ByteArrayColumnWriter(w)) if i < STRING_COLUMNS => {
            let mut values: Vec<ByteArray> = Vec::with_capacity(rows.len());
            let mut last: Option<(&str, ByteArray)> = None;
            for row in rows {
                let s = string_field(row, i);
                let value = match &last {
                    Some((prev, value)) if *prev == s => value.clone(),
                    _ => {
                        let value = ByteArray::from(s.as_bytes().to_vec());
                        last = Some((s, value.clone()));
                        value
                    }
                };
                values.push(value);
            }
            w.write_batch(&values, None, None)?;
        }
        (TIMESTAMP, ColumnWriter::Int64ColumnWriter(w)) => {
            let values: Vec<i64> = rows.iter().map(|r| r.timestamp).collect();
            w.write_batch(&values, None, None)?;
        }
        (FREQUENCY, ColumnWriter::Int64ColumnWriter(w)) => {
            let values: Vec<i64> = rows.iter().map(|r| r.frequency).collect();
            w.write_batch(&values, None, None)?;
        }
        (VALUE, ColumnWriter::DoubleColumnWriter(w)) => {
            let values: Vec<f64> = rows.iter().map(|r| r.value).collect();
            w.write_batch(&values, None, None)?;
        }
        (i, _) => return Err(ParquetError::General(format!("archive schema: no writer for column {i}"))),
    }
    Ok(())
}

/// A codec error while writing `path`. An I/O error of the sink that the codec passed through becomes
/// [`ArchiveError::Io`] (a full disk is not a Parquet problem).
fn codec_error(path: &Path, source: ParquetError) -> ArchiveError {
    match source {
        ParquetError::External(e) => match e.downcast::<io::Error>() {
            Ok(io) => ArchiveError::Io { op: "write", path: path.to_path_buf(), source: *io },
            Err(e) => ArchiveError::Parquet { path: path.to_path_buf(), source: ParquetError::External(e) },
        },
        source => ArchiveError::Parquet { path: path.to_path_buf(), source },
    }
}
