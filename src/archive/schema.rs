//! The archive's schema and writer settings, and the check a reader makes of a file's schema
//! (`format/archive.md`, "Schema").

use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, ConvertedType, Encoding, LogicalType, Repetition, Type as PhysicalType, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{WriterProperties, WriterVersion};
use parquet::schema::types::{ColumnDescriptor, ColumnPath, SchemaDescriptor, Type, TypePtr};

use super::ArchiveError;

/// The columns in file order. The first five are strings, `timestamp` and `frequency` are `INT64`, `value`
/// is `FLOAT`.
pub const COLUMNS: [&str; 8] =
    ["cluster", "hostname", "metric", "scope", "scope_id", "timestamp", "frequency", "value"];
/// The key-value metadata key that carries the archive format version.
pub const VERSION_KEY: &str = "silt.archive.version";
/// The key-value metadata key that holds the length in bytes of the data region: the file from byte 0 up to
/// the end of the last column chunk (magic and every row group), in decimal.
pub const DATA_BYTES_KEY: &str = "silt.archive.data_bytes";
/// The key-value metadata key that holds the CRC32 of the data region, as 8 lowercase hex digits.
pub const CRC_KEY: &str = "silt.archive.data_crc32";
/// The archive format version this code writes and reads, stored as decimal text under [`VERSION_KEY`].
pub const FORMAT_VERSION: u32 = 1;
/// The most rows one row group holds (2^20).
pub const ROW_GROUP_ROWS: usize = 1 << 20;
/// The zstd level of every column chunk (parquet-go's default, which cc-metric-store uses, is about 3).
pub const ZSTD_LEVEL: i32 = 3;

/// Number of leading string columns in [`COLUMNS`].
pub(super) const STRING_COLUMNS: usize = 5;
/// Index of `timestamp` in [`COLUMNS`].
pub(super) const TIMESTAMP: usize = 5;
/// Index of `frequency` in [`COLUMNS`].
pub(super) const FREQUENCY: usize = 6;
/// Index of `value` in [`COLUMNS`].
pub(super) const VALUE: usize = 7;
/// The root (message) name of the schema; readers ignore it.
const ROOT_NAME: &str = "archive";

/// The schema [`super::write_parquet`] writes: every column `REQUIRED`.
pub(super) fn write_schema() -> Result<TypePtr, ParquetError> {
    let mut fields = Vec::with_capacity(COLUMNS.len());
    for (i, name) in COLUMNS.iter().enumerate() {
        let (physical, logical) = match i {
            i if i < STRING_COLUMNS => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
            TIMESTAMP | FREQUENCY => (PhysicalType::INT64, Some(LogicalType::integer(64, true))),
            _ => (PhysicalType::DOUBLE, None),
        };
        let field = Type::primitive_type_builder(name, physical)
            .with_repetition(Repetition::REQUIRED)
            .with_logical_type(logical)
            .build()?;
        fields.push(Arc::new(field));
    }
    Ok(Arc::new(Type::group_type_builder(ROOT_NAME).with_fields(fields).build()?))
}

/// The writer settings: zstd, dictionaries (falling back to plain when a dictionary outgrows 1 MiB),
/// `DELTA_BINARY_PACKED` timestamps, data page v1, the version key and the sort order.
pub(super) fn write_properties() -> Result<Arc<WriterProperties>, ParquetError> {
    let timestamp = ColumnPath::from(COLUMNS[TIMESTAMP]);
    let sorting = [0, 1, 2, 3, 4, TIMESTAMP]
        .iter()
        .map(|&i| SortingColumn { column_idx: i as i32, descending: false, nulls_first: false })
        .collect();
    let props = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_dictionary_enabled(true)
        .set_column_dictionary_enabled(timestamp.clone(), false)
        .set_column_encoding(timestamp, Encoding::DELTA_BINARY_PACKED)
        .set_key_value_metadata(Some(vec![KeyValue::new(VERSION_KEY.to_string(), FORMAT_VERSION.to_string())]))
        .set_sorting_columns(Some(sorting))
        .build();
    Ok(Arc::new(props))
}

/// Where the columns a reader needs are in a file, and how they are stored.
pub(super) struct Layout {
    /// Leaf column index of each of [`COLUMNS`].
    pub index: [usize; 8],
    /// Whether the column is `OPTIONAL` (nulls are then refused value by value).
    pub optional: [bool; 8],
}

/// The data-region checksum a silt archive carries.
pub(super) struct DataChecksum {
    /// Length of the data region in bytes.
    pub bytes: u64,
    /// Its CRC32.
    pub crc: u32,
}

/// Checks the `silt.archive.*` keys. No version key: a file from another writer, nothing to check. Version
/// [`FORMAT_VERSION`]: the data-region length and CRC must be there and well-formed. Any other version is
/// refused.
pub(super) fn check_metadata(path: &Path, kv: Option<&Vec<KeyValue>>) -> Result<Option<DataChecksum>, ArchiveError> {
    let get = |key: &str| kv.into_iter().flatten().find(|kv| kv.key == key).map(|kv| kv.value.as_deref());
    let Some(version) = get(VERSION_KEY) else {
        return Ok(None);
    };
    if version != Some(FORMAT_VERSION.to_string().as_str()) {
        return Err(ArchiveError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version.unwrap_or("").to_string(),
            supported: FORMAT_VERSION,
        });
    }
    let invalid = |key: &'static str, value: Option<Option<&str>>| ArchiveError::InvalidMetadata {
        path: path.to_path_buf(),
        key,
        value: value.flatten().map(str::to_string),
    };
    let bytes = get(DATA_BYTES_KEY);
    let bytes = match bytes.flatten() {
        Some(v) if is_decimal(v) => v.parse::<u64>().map_err(|_| invalid(DATA_BYTES_KEY, bytes))?,
        _ => return Err(invalid(DATA_BYTES_KEY, bytes)),
    };
    let crc = get(CRC_KEY);
    let crc = match crc.flatten() {
        Some(v) if v.len() == 8 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            u32::from_str_radix(v, 16).map_err(|_| invalid(CRC_KEY, crc))?
        }
        _ => return Err(invalid(CRC_KEY, crc)),
    };
    Ok(Some(DataChecksum { bytes, crc }))
}

fn is_decimal(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())
}

/// Finds each of [`COLUMNS`] among the top-level leaf columns of `schema` and checks its type. Other
/// columns are ignored.
pub(super) fn check_schema(path: &Path, schema: &SchemaDescriptor) -> Result<Layout, ArchiveError> {
    let mut layout = Layout { index: [0; 8], optional: [false; 8] };
    for (i, &name) in COLUMNS.iter().enumerate() {
        let found = schema.columns().iter().position(|c| {
            let parts = c.path().parts();
            parts.len() == 1 && parts.first().is_some_and(|p| p == name)
        });
        let Some(index) = found else {
            return Err(ArchiveError::MissingColumn { path: path.to_path_buf(), column: name });
        };
        let Some(column) = schema.columns().get(index) else {
            return Err(ArchiveError::MissingColumn { path: path.to_path_buf(), column: name });
        };
        let (ok, expected) = match i {
            i if i < STRING_COLUMNS => (is_string(column), "BYTE_ARRAY (STRING or no logical type)"),
            TIMESTAMP | FREQUENCY => (is_int64(column), "INT64 (signed 64-bit INTEGER or no logical type)"),
            _ => (is_value(column), "FLOAT or DOUBLE without logical type"),
        };
        let repetition = column.self_type().get_basic_info();
        let repetition = repetition.has_repetition().then(|| repetition.repetition());
        let optional = match repetition {
            Some(Repetition::REQUIRED) => false,
            Some(Repetition::OPTIONAL) => true,
            _ => {
                return Err(ArchiveError::WrongType {
                    path: path.to_path_buf(),
                    column: name,
                    expected: "REQUIRED or OPTIONAL",
                    found: describe(column),
                })
            }
        };
        if !ok || column.max_rep_level() != 0 {
            return Err(ArchiveError::WrongType {
                path: path.to_path_buf(),
                column: name,
                expected,
                found: describe(column),
            });
        }
        layout.index[i] = index;
        layout.optional[i] = optional;
    }
    Ok(layout)
}

fn physical(column: &ColumnDescriptor) -> Option<PhysicalType> {
    match column.self_type() {
        Type::PrimitiveType { physical_type, .. } => Some(*physical_type),
        Type::GroupType { .. } => None,
    }
}

fn is_string(column: &ColumnDescriptor) -> bool {
    physical(column) == Some(PhysicalType::BYTE_ARRAY)
        && matches!(column.logical_type_ref(), None | Some(LogicalType::String))
        && matches!(column.converted_type(), ConvertedType::NONE | ConvertedType::UTF8)
}

fn is_int64(column: &ColumnDescriptor) -> bool {
    physical(column) == Some(PhysicalType::INT64)
        && match column.logical_type_ref() {
            None => true,
            Some(LogicalType::Integer(t)) => t.bit_width == 64 && t.is_signed,
            Some(_) => false,
        }
        && matches!(column.converted_type(), ConvertedType::NONE | ConvertedType::INT_64)
}

fn is_value(column: &ColumnDescriptor) -> bool {
    matches!(physical(column), Some(PhysicalType::FLOAT | PhysicalType::DOUBLE))
        && column.logical_type_ref().is_none()
        && column.converted_type() == ConvertedType::NONE
}

/// "OPTIONAL INT32 (Date)": repetition, physical type, logical or converted type.
fn describe(column: &ColumnDescriptor) -> String {
    let info = column.self_type().get_basic_info();
    let repetition = if info.has_repetition() { format!("{} ", info.repetition()) } else { String::new() };
    let physical = physical(column).map_or_else(|| "group".to_string(), |p| p.to_string());
    let annotation = match (column.logical_type_ref(), column.converted_type()) {
        (Some(l), _) => format!(" ({l:?})"),
        (None, ConvertedType::NONE) => String::new(),
        (None, c) => format!(" ({c})"),
    };
    format!("{repetition}{physical}{annotation}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, Option<&str>)]) -> Vec<KeyValue> {
        pairs.iter().map(|(k, v)| KeyValue::new(k.to_string(), v.map(str::to_string))).collect()
    }

    #[test]
    fn metadata_keys() {
        let p = Path::new("a.parquet");
        assert!(check_metadata(p, None).unwrap().is_none());
        assert!(check_metadata(p, Some(&kv(&[("other", Some("x"))]))).unwrap().is_none());
        let good = kv(&[(VERSION_KEY, Some("1")), (DATA_BYTES_KEY, Some("1234")), (CRC_KEY, Some("00c0ffee"))]);
        let sum = check_metadata(p, Some(&good)).unwrap().unwrap();
        assert_eq!((sum.bytes, sum.crc), (1234, 0x00c0_ffee));
        for (key, value) in [
            (DATA_BYTES_KEY, None),
            (DATA_BYTES_KEY, Some("")),
            (DATA_BYTES_KEY, Some("+12")),
            (DATA_BYTES_KEY, Some("99999999999999999999")),
            (CRC_KEY, Some("C0FFEE00")),
            (CRC_KEY, Some("c0ffee")),
            (CRC_KEY, None),
        ] {
            let mut bad = good.clone();
            for e in &mut bad {
                if e.key == key {
                    e.value = value.map(str::to_string);
                }
            }
            let err = check_metadata(p, Some(&bad)).map(|_| ()).unwrap_err();
            assert!(matches!(err, ArchiveError::InvalidMetadata { key: k, .. } if k == key), "{key} {value:?}: {err}");
        }
        for version in [Some("2"), Some("01"), Some(""), None] {
            let err = check_metadata(p, Some(&kv(&[(VERSION_KEY, version)]))).map(|_| ()).unwrap_err();
            assert!(matches!(err, ArchiveError::UnsupportedVersion { .. }), "{version:?}: {err}");
        }
    }

    #[test]
    fn the_written_schema_passes_the_check() {
        let schema = SchemaDescriptor::new(write_schema().unwrap());
        let layout = check_schema(Path::new("a.parquet"), &schema).unwrap();
        assert_eq!(layout.index, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(layout.optional, [false; 8]);
        write_properties().unwrap();
    }
}
