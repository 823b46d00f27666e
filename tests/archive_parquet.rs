//! The Parquet archive (`format/archive.md`, `silt::archive`): round trip, a second reader that is not
//! silt's, the golden file, damaged and foreign files, and the atomic write.
//!
//! Regenerate the golden file (only with a format version bump, see the spec) with
//! `SILT_BLESS=1 cargo test --test archive_parquet golden`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{Compression, Encoding};
use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::RowAccessor;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::ColumnDescriptor;
use proptest::prelude::*;
use silt::archive::{
    file_name, read_parquet, read_parquet_with, tmp_path, write_parquet, write_parquet_with, ArchiveError, ArchiveRow,
    COLUMNS, CRC_KEY, DATA_BYTES_KEY, ROW_GROUP_ROWS, VERSION_KEY,
};
use silt::storage::io::sim::{FaultOp, SimVfs};
use silt::storage::io::Vfs;

#[expect(clippy::too_many_arguments, reason = "one argument per column, in column order")]
fn row(cluster: &str, host: &str, metric: &str, scope: &str, id: &str, ts: i64, freq: i64, v: f64) -> ArchiveRow {
    ArchiveRow {
        cluster: cluster.into(),
        hostname: host.into(),
        metric: metric.into(),
        scope: scope.into(),
        scope_id: id.into(),
        timestamp: ts,
        frequency: freq,
        value: v,
    }
}

fn sort_key(r: &ArchiveRow) -> (&str, &str, &str, &str, &str, i64) {
    (&r.cluster, &r.hostname, &r.metric, &r.scope, &r.scope_id, r.timestamp)
}

/// What reading back `input` must give: stably sorted, values bit for bit (the column is `DOUBLE`).
fn expected(input: &[ArchiveRow]) -> Vec<ArchiveRow> {
    let mut rows = input.to_vec();
    rows.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    rows
}

/// Equal field by field; values bit for bit, except that any NaN matches any NaN (the payload is not kept).
fn assert_rows_eq(got: &[ArchiveRow], want: &[ArchiveRow]) {
    assert_eq!(got.len(), want.len(), "row count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(sort_key(g), sort_key(w), "row {i}");
        assert_eq!(g.frequency, w.frequency, "row {i}");
        if w.value.is_nan() {
            assert!(g.value.is_nan(), "row {i}: {} is not NaN", g.value);
        } else {
            assert_eq!(g.value.to_bits(), w.value.to_bits(), "row {i}: {} != {}", g.value, w.value);
        }
    }
}

/// The rows of the golden file, deliberately out of order.
fn golden_rows() -> Vec<ArchiveRow> {
    vec![
        row("fritz", "f0102", "mem_bw", "socket", "1", 1_700_000_060, 60, 12.5),
        row("fritz", "f0102", "mem_bw", "socket", "0", 1_700_000_060, 60, -0.0),
        row("fritz", "f0101", "cpu_load", "node", "", 1_700_000_000, 60, 0.5),
        row("fritz", "f0101", "cpu_load", "node", "", 1_700_000_060, 60, f64::INFINITY),
        row("fritz", "f0101", "cpu_load", "node", "", 1_700_000_120, 60, f64::NAN),
        row("fritz", "f0101", "flops_any", "hwthread", "10", 1_700_000_000, 60, f64::NEG_INFINITY),
        row("fritz", "f0101", "flops_any", "hwthread", "2", 1_700_000_000, 60, 1.0e-3),
        row("fritz", "f0101", "nv_util", "accelerator", "00000000:3B:00.0", 1_700_000_000, 10, 97.0),
        row("fritz", "f0102", "mem_bw", "socket", "0", 1_700_000_000, 60, 3.0e38),
        row("fritz", "f0102", "mem_bw", "socket", "0", i64::MIN, i64::MAX, 1.0e300),
        row("fritz", "f0102", "Grüße", "memoryDomain", "3", -1, 0, 0.1),
    ]
}

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/archive_v1.parquet")
}

/// Everything about a file that must not change within format version 1, read with the `parquet` crate's
/// generic reader: schema, key-value metadata (the data-region length and CRC only as present), row groups
/// with their sort order, and per column chunk its compression and encodings. Not the `created_by` string
/// (it names the `parquet` crate's version) and no byte offsets or sizes.
fn summary(path: &Path) -> String {
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    let meta = reader.metadata();
    let file = meta.file_metadata();
    let mut schema = Vec::new();
    parquet::schema::printer::print_schema(&mut schema, file.schema());
    let mut out = String::from_utf8(schema).unwrap();
    out += &format!("format version {}, {} rows\n", file.version(), file.num_rows());
    let mut kv: Vec<String> = file
        .key_value_metadata()
        .into_iter()
        .flatten()
        .map(|kv| match kv.key.as_str() {
            DATA_BYTES_KEY | CRC_KEY => format!("{} (present: {})", kv.key, kv.value.is_some()),
            _ => format!("{} = {:?}", kv.key, kv.value),
        })
        .collect();
    kv.sort();
    for line in kv {
        out += &format!("kv {line}\n");
    }
    for (i, group) in meta.row_groups().iter().enumerate() {
        let sorting: Vec<String> = group
            .sorting_columns()
            .into_iter()
            .flatten()
            .map(|s| format!("{}{}", s.column_idx, if s.descending { " desc" } else { "" }))
            .collect();
        out += &format!("row group {i}: {} rows, sorted by [{}]\n", group.num_rows(), sorting.join(", "));
        for col in group.columns() {
            let mut enc: Vec<String> = col.encodings().map(|e| e.to_string()).collect();
            enc.sort();
            // The zstd level is not stored in the file (a reader reports a default), only the codec.
            let codec = match col.compression() {
                Compression::ZSTD(_) => "ZSTD".to_string(),
                other => other.to_string(),
            };
            out += &format!("  {} {} {codec} [{}]\n", col.column_path(), col.column_type(), enc.join(" "));
        }
    }
    out
}

const GOLDEN_SUMMARY: &str = "\
message archive {
  REQUIRED BYTE_ARRAY cluster (STRING);
  REQUIRED BYTE_ARRAY hostname (STRING);
  REQUIRED BYTE_ARRAY metric (STRING);
  REQUIRED BYTE_ARRAY scope (STRING);
  REQUIRED BYTE_ARRAY scope_id (STRING);
  REQUIRED INT64 timestamp (INTEGER(64,true));
  REQUIRED INT64 frequency (INTEGER(64,true));
  REQUIRED DOUBLE value;
}
format version 1, 11 rows
kv silt.archive.data_bytes (present: true)
kv silt.archive.data_crc32 (present: true)
kv silt.archive.version = Some(\"1\")
row group 0: 11 rows, sorted by [0, 1, 2, 3, 4, 5]
  \"cluster\" BYTE_ARRAY ZSTD [PLAIN RLE RLE_DICTIONARY]
  \"hostname\" BYTE_ARRAY ZSTD [PLAIN RLE RLE_DICTIONARY]
  \"metric\" BYTE_ARRAY ZSTD [PLAIN RLE RLE_DICTIONARY]
  \"scope\" BYTE_ARRAY ZSTD [PLAIN RLE RLE_DICTIONARY]
  \"scope_id\" BYTE_ARRAY ZSTD [PLAIN RLE RLE_DICTIONARY]
  \"timestamp\" INT64 ZSTD [DELTA_BINARY_PACKED RLE]
  \"frequency\" INT64 ZSTD [PLAIN RLE RLE_DICTIONARY]
  \"value\" DOUBLE ZSTD [PLAIN RLE RLE_DICTIONARY]
";

// ---------------------------------------------------------------------------------------------------------
// (1) Round trip

fn text() -> impl Strategy<Value = String> {
    // Few distinct values (so keys collide and dictionaries matter), plus empty and non-ASCII strings.
    prop_oneof![Just(String::new()), "[a-c]{1,2}", "[α-γ0-9]{0,3}"]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        any::<f32>().prop_map(f64::from),
        Just(0.0),
        Just(-0.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::NAN),
        Just(-f64::NAN),
        Just(f64::from_bits(0x7ff0_0000_dead_beef)),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
    ]
}

fn archive_row() -> impl Strategy<Value = ArchiveRow> {
    (text(), text(), text(), text(), text(), prop_oneof![any::<i64>(), 0..4i64], any::<i64>(), value()).prop_map(
        |(cluster, hostname, metric, scope, scope_id, timestamp, frequency, value)| ArchiveRow {
            cluster,
            hostname,
            metric,
            scope,
            scope_id,
            timestamp,
            frequency,
            value,
        },
    )
}

proptest! {
    #[test]
    fn round_trip(input in proptest::collection::vec(archive_row(), 0..300)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name("c", 0, 1));
        let mut rows = input.clone();
        let n = write_parquet(&path, &mut rows).unwrap();
        prop_assert_eq!(n, input.len() as u64);
        // The slice comes back sorted (stably: equal keys keep their order).
        let want = expected(&input);
        prop_assert!(rows.iter().zip(&want).all(|(a, b)| sort_key(a) == sort_key(b)));
        assert_rows_eq(&read_parquet(&path).unwrap(), &want);
        // The same rows through the generic record reader.
        assert_rows_eq(&read_generic(&path), &want);
    }
}

#[test]
fn special_values_survive_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("special.parquet");
    let values = [0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, -f64::NAN, 1.0e300, -1.0e300, 1.0e-50, 0.1];
    let mut rows: Vec<ArchiveRow> =
        values.iter().enumerate().map(|(i, &v)| row("c", "h", "m", "node", "", i as i64, 60, v)).collect();
    write_parquet(&path, &mut rows).unwrap();
    let got: Vec<f64> = read_parquet(&path).unwrap().iter().map(|r| r.value).collect();
    assert_eq!(got[0].to_bits(), 0.0f64.to_bits());
    assert_eq!(got[1].to_bits(), (-0.0f64).to_bits(), "the sign of zero is kept");
    assert_eq!(got[2], f64::INFINITY);
    assert_eq!(got[3], f64::NEG_INFINITY);
    assert!(got[4].is_nan() && got[5].is_nan(), "NaN stays NaN");
    for i in 6..10 {
        assert_eq!(got[i].to_bits(), values[i].to_bits(), "value {i} changed (a DOUBLE column keeps every bit)");
    }
}

#[test]
fn more_rows_than_one_row_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.parquet");
    let n = ROW_GROUP_ROWS + 3;
    let mut rows: Vec<ArchiveRow> = (0..n)
        .rev()
        .map(|i| row("c", if i % 2 == 0 { "h0" } else { "h1" }, "m", "node", "", i as i64, 60, i as f64))
        .collect();
    let want = expected(&rows);
    assert_eq!(write_parquet(&path, &mut rows).unwrap(), n as u64);
    let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
    let groups: Vec<i64> = reader.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
    assert_eq!(groups, vec![ROW_GROUP_ROWS as i64, 3]);
    assert_rows_eq(&read_parquet(&path).unwrap(), &want);
}

#[test]
fn empty_archive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.parquet");
    assert_eq!(write_parquet(&path, &mut []).unwrap(), 0);
    assert!(read_parquet(&path).unwrap().is_empty());
    assert!(read_generic(&path).is_empty());
}

// ---------------------------------------------------------------------------------------------------------
// (2) A reader that is not silt's: the parquet crate's record API.

fn read_generic(path: &Path) -> Vec<ArchiveRow> {
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    let names: Vec<String> =
        reader.metadata().file_metadata().schema_descr().columns().iter().map(|c| c.name().to_string()).collect();
    assert_eq!(names, COLUMNS);
    reader
        .get_row_iter(None)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            ArchiveRow {
                cluster: r.get_string(0).unwrap().clone(),
                hostname: r.get_string(1).unwrap().clone(),
                metric: r.get_string(2).unwrap().clone(),
                scope: r.get_string(3).unwrap().clone(),
                scope_id: r.get_string(4).unwrap().clone(),
                timestamp: r.get_long(5).unwrap(),
                frequency: r.get_long(6).unwrap(),
                value: r.get_double(7).unwrap(),
            }
        })
        .collect()
}

#[test]
fn generic_reader_sees_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("generic.parquet");
    let input = golden_rows();
    write_parquet(&path, &mut input.clone()).unwrap();
    assert_rows_eq(&read_generic(&path), &expected(&input));
    let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
    for col in reader.metadata().row_group(0).columns() {
        assert!(matches!(col.compression(), Compression::ZSTD(_)), "{} is zstd", col.column_path());
        if col.column_path().string() != "timestamp" {
            assert!(col.encodings().any(|e| e == Encoding::RLE_DICTIONARY), "{} has a dictionary", col.column_path());
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// (3) The golden file

#[test]
fn golden_file_still_decodes_and_matches_what_is_written_now() {
    let golden = golden_path();
    if std::env::var_os("SILT_BLESS").is_some() {
        fs::create_dir_all(golden.parent().unwrap()).unwrap();
        write_parquet(&golden, &mut golden_rows()).unwrap();
    }
    let want = expected(&golden_rows());
    assert_rows_eq(&read_parquet(&golden).unwrap(), &want);
    assert_rows_eq(&read_generic(&golden), &want);
    assert_eq!(summary(&golden), GOLDEN_SUMMARY);

    let dir = tempfile::tempdir().unwrap();
    let now = dir.path().join("now.parquet");
    write_parquet(&now, &mut golden_rows()).unwrap();
    assert_eq!(summary(&now), summary(&golden));
}

// ---------------------------------------------------------------------------------------------------------
// (4) Damaged and foreign files

/// The error names the file, in its fields and in its message.
fn assert_names(err: &ArchiveError, path: &Path) {
    assert_eq!(err.path(), path, "{err}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[test]
fn damaged_files_are_errors_naming_the_path() {
    let golden = fs::read(golden_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let len = golden.len();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()),
        ("only_magic", b"PAR1PAR1".to_vec()),
        ("truncated_by_one", golden[..len - 1].to_vec()),
        ("truncated_half", golden[..len / 2].to_vec()),
        ("footer_length_too_big", {
            let mut b = golden.clone();
            b[len - 8..len - 4].copy_from_slice(&u32::MAX.to_le_bytes());
            b
        }),
        ("data_byte_flipped", {
            let mut b = golden.clone();
            b[10] ^= 0x01;
            b
        }),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(format!("{name}.parquet"));
        fs::write(&path, &bytes).unwrap();
        let err = read_parquet(&path).expect_err(name);
        assert_names(&err, &path);
    }
    let missing = dir.path().join("missing.parquet");
    let err = read_parquet(&missing).unwrap_err();
    assert!(matches!(err, ArchiveError::Io { .. }), "{err}");
    assert_names(&err, &missing);
}

#[test]
fn a_flipped_data_byte_fails_the_checksum() {
    let mut bytes = fs::read(golden_path()).unwrap();
    bytes[20] ^= 0x80;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flipped.parquet");
    fs::write(&path, &bytes).unwrap();
    let err = read_parquet(&path).unwrap_err();
    assert!(matches!(err, ArchiveError::ChecksumMismatch { .. } | ArchiveError::Parquet { .. }), "{err}");
    assert_names(&err, &path);
}

/// Every truncation and every single-bit flip of the golden file: never a panic, and never wrong rows
/// without an error.
#[test]
fn every_truncation_and_bit_flip_is_an_error_or_the_right_rows() {
    let golden = fs::read(golden_path()).unwrap();
    let want = expected(&golden_rows());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.parquet");
    let mut wrong = Vec::new();
    let mut check = |bytes: &[u8], what: String| {
        fs::write(&path, bytes).unwrap();
        match read_parquet(&path) {
            Err(e) => assert_names(&e, &path),
            Ok(rows) => {
                let same = rows.len() == want.len()
                    && rows.iter().zip(&want).all(|(g, w)| {
                        sort_key(g) == sort_key(w)
                            && g.frequency == w.frequency
                            && (g.value.to_bits() == w.value.to_bits() || (g.value.is_nan() && w.value.is_nan()))
                    });
                if !same {
                    wrong.push(what);
                }
            }
        }
    };
    for len in 0..golden.len() {
        check(&golden[..len], format!("truncated to {len}"));
    }
    for i in 0..golden.len() {
        for bit in [0x01u8, 0x10, 0x80] {
            let mut b = golden.clone();
            b[i] ^= bit;
            check(&b, format!("byte {i} ^ {bit:#04x}"));
        }
    }
    assert!(wrong.is_empty(), "damage read back as wrong rows without an error: {wrong:?}");
}

/// A column's data for [`write_foreign`]: `None` is a null.
enum Col {
    Str(Vec<Option<&'static str>>),
    I64(Vec<Option<i64>>),
    I32(Vec<Option<i32>>),
    F32(Vec<Option<f32>>),
    F64(Vec<Option<f64>>),
}

/// Writes a file with an arbitrary schema through the parquet crate, as another tool would.
fn write_foreign(path: &Path, schema: &str, kv: Vec<(&str, &str)>, columns: Vec<Col>) {
    let schema = Arc::new(parse_message_type(schema).unwrap());
    let kv = kv.into_iter().map(|(k, v)| KeyValue::new(k.to_string(), v.to_string())).collect();
    let props = Arc::new(WriterProperties::builder().set_key_value_metadata(Some(kv)).build());
    let mut writer = SerializedFileWriter::new(File::create(path).unwrap(), schema, props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut columns = columns.into_iter();
    while let Some(mut col) = group.next_column().unwrap() {
        let data = columns.next().unwrap();
        // One value (or null) per row; a repeated column gets one-element lists.
        fn split<T: Clone>(v: &[Option<T>], d: &ColumnDescriptor) -> (Vec<T>, Option<Vec<i16>>, Option<Vec<i16>>) {
            let values = v.iter().flatten().cloned().collect();
            let defs = (d.max_def_level() > 0).then(|| v.iter().map(|x| i16::from(x.is_some())).collect());
            let reps = (d.max_rep_level() > 0).then(|| vec![0; v.len()]);
            (values, defs, reps)
        }
        match (col.untyped(), data) {
            (ColumnWriter::ByteArrayColumnWriter(w), Col::Str(v)) => {
                let (values, defs, reps) = split(&v, w.get_descriptor());
                let values: Vec<ByteArray> = values.into_iter().map(ByteArray::from).collect();
                w.write_batch(&values, defs.as_deref(), reps.as_deref()).unwrap();
            }
            (ColumnWriter::Int64ColumnWriter(w), Col::I64(v)) => {
                let (values, defs, reps) = split(&v, w.get_descriptor());
                w.write_batch(&values, defs.as_deref(), reps.as_deref()).unwrap();
            }
            (ColumnWriter::Int32ColumnWriter(w), Col::I32(v)) => {
                let (values, defs, reps) = split(&v, w.get_descriptor());
                w.write_batch(&values, defs.as_deref(), reps.as_deref()).unwrap();
            }
            (ColumnWriter::FloatColumnWriter(w), Col::F32(v)) => {
                let (values, defs, reps) = split(&v, w.get_descriptor());
                w.write_batch(&values, defs.as_deref(), reps.as_deref()).unwrap();
            }
            (ColumnWriter::DoubleColumnWriter(w), Col::F64(v)) => {
                let (values, defs, reps) = split(&v, w.get_descriptor());
                w.write_batch(&values, defs.as_deref(), reps.as_deref()).unwrap();
            }
            _ => panic!("column data does not match the schema"),
        }
        col.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
}

fn strs(v: &[&'static str]) -> Col {
    Col::Str(v.iter().map(|s| Some(*s)).collect())
}

/// What cc-metric-store writes (cc-backend `pkg/metricstore/parquetArchive.go`, parquet-go): every column
/// required, strings `STRING`, integers `INTEGER(64,true)`, `value` a `FLOAT`, no silt metadata.
const CC_SCHEMA: &str = "message ParquetMetricRow {
  required binary cluster (STRING); required binary hostname (STRING); required binary metric (STRING);
  required binary scope (STRING); required binary scope_id (STRING);
  required int64 timestamp (INTEGER(64,true)); required int64 frequency (INTEGER(64,true));
  required float value;
}";

fn cc_columns() -> Vec<Col> {
    vec![
        strs(&["fritz", "fritz"]),
        strs(&["f0101", "f0101"]),
        strs(&["cpu_load", "mem_bw"]),
        strs(&["node", "socket"]),
        strs(&["", "0"]),
        Col::I64(vec![Some(1000), Some(1000)]),
        Col::I64(vec![Some(60), Some(60)]),
        Col::F32(vec![Some(0.5), Some(100.0)]),
    ]
}

#[test]
fn reads_what_cc_metric_store_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("1700000000.parquet");
    write_foreign(&path, CC_SCHEMA, vec![], cc_columns());
    let rows = read_parquet(&path).unwrap();
    assert_eq!(
        rows,
        vec![
            row("fritz", "f0101", "cpu_load", "node", "", 1000, 60, 0.5),
            row("fritz", "f0101", "mem_bw", "socket", "0", 1000, 60, 100.0),
        ]
    );
}

#[test]
fn reads_optional_double_reordered_columns_with_extras() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pandas.parquet");
    let schema = "message schema {
      optional double value; optional binary cluster (UTF8); optional int32 extra; optional binary hostname;
      optional binary metric (STRING); optional binary scope (STRING); optional binary scope_id (STRING);
      optional int64 frequency; optional int64 timestamp;
    }";
    write_foreign(
        &path,
        schema,
        vec![("pandas", "{}")],
        vec![
            Col::F64(vec![Some(0.1)]),
            strs(&["c"]),
            Col::I32(vec![None]),
            strs(&["h"]),
            strs(&["m"]),
            strs(&["node"]),
            strs(&[""]),
            Col::I64(vec![Some(60)]),
            Col::I64(vec![Some(7)]),
        ],
    );
    assert_eq!(read_parquet(&path).unwrap(), vec![row("c", "h", "m", "node", "", 7, 60, 0.1)]);
}

#[test]
fn wrong_schemas_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // (file name, schema, key-value metadata, columns, expected error variant)
    type Case = (&'static str, String, Vec<(&'static str, &'static str)>, Vec<Col>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "missing_scope_id",
            CC_SCHEMA.replace("required binary scope_id (STRING);", ""),
            vec![],
            {
                let mut c = cc_columns();
                c.remove(4);
                c
            },
            "MissingColumn",
        ),
        (
            "value_int32",
            CC_SCHEMA.replace("required float value", "required int32 value"),
            vec![],
            {
                let mut c = cc_columns();
                c[7] = Col::I32(vec![Some(1), Some(2)]);
                c
            },
            "WrongType",
        ),
        (
            "timestamp_millis",
            CC_SCHEMA.replace(
                "required int64 timestamp (INTEGER(64,true))",
                "required int64 timestamp (TIMESTAMP(MILLIS,true))",
            ),
            vec![],
            cc_columns(),
            "WrongType",
        ),
        (
            "repeated_metric",
            CC_SCHEMA.replace("required binary metric", "repeated binary metric"),
            vec![],
            cc_columns(),
            "WrongType",
        ),
        ("version_2", CC_SCHEMA.to_string(), vec![(VERSION_KEY, "2")], cc_columns(), "UnsupportedVersion"),
        ("version_1_without_crc", CC_SCHEMA.to_string(), vec![(VERSION_KEY, "1")], cc_columns(), "InvalidMetadata"),
        (
            "null_hostname",
            CC_SCHEMA.replace("required binary hostname", "optional binary hostname"),
            vec![],
            {
                let mut c = cc_columns();
                c[1] = Col::Str(vec![Some("f0101"), None]);
                c
            },
            "Null",
        ),
    ];
    for (name, schema, kv, columns, kind) in cases {
        let path = dir.path().join(format!("{name}.parquet"));
        write_foreign(&path, &schema, kv, columns);
        let err = read_parquet(&path).expect_err(name);
        assert!(format!("{err:?}").starts_with(kind), "{name}: {err:?}");
        assert_names(&err, &path);
    }
}

#[test]
fn invalid_utf8_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.parquet");
    let schema = Arc::new(parse_message_type(&CC_SCHEMA.replace("(STRING)", "")).unwrap());
    let mut writer = SerializedFileWriter::new(File::create(&path).unwrap(), schema, Default::default()).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut i = 0;
    while let Some(mut col) = group.next_column().unwrap() {
        match col.untyped() {
            ColumnWriter::ByteArrayColumnWriter(w) => {
                let v = if i == 2 { vec![0xC4u8, 0x3F] } else { b"x".to_vec() };
                w.write_batch(&[ByteArray::from(v)], None, None).unwrap();
            }
            ColumnWriter::Int64ColumnWriter(w) => w.write_batch(&[1], None, None).map(|_| ()).unwrap(),
            ColumnWriter::FloatColumnWriter(w) => w.write_batch(&[1.0], None, None).map(|_| ()).unwrap(),
            _ => unreachable!(),
        }
        col.close().unwrap();
        i += 1;
    }
    group.close().unwrap();
    writer.close().unwrap();
    let err = read_parquet(&path).unwrap_err();
    assert!(matches!(err, ArchiveError::InvalidUtf8 { column: "metric", .. }), "{err:?}");
    assert_names(&err, &path);
}

// ---------------------------------------------------------------------------------------------------------
// (5) The atomic write

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

#[test]
fn successful_write_leaves_only_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let name = file_name("fritz", 1_700_000_000, 1_700_086_399);
    let path = dir.path().join(&name);
    // A temporary file left by a crash is replaced, and an older archive at the same name is replaced.
    fs::write(tmp_path(&path), b"leftover").unwrap();
    fs::write(&path, b"old").unwrap();
    write_parquet(&path, &mut golden_rows()).unwrap();
    assert_eq!(names(dir.path()), vec![name]);
    assert_rows_eq(&read_parquet(&path).unwrap(), &expected(&golden_rows()));
}

#[test]
fn failed_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The directory does not exist: nothing can be created.
    let path = dir.path().join("no/such/dir/a.parquet");
    let err = write_parquet(&path, &mut golden_rows()).unwrap_err();
    assert!(matches!(err, ArchiveError::Io { op: "create", .. }), "{err}");
    assert!(err.to_string().contains("a.parquet.tmp"), "{err}");
    assert_eq!(names(dir.path()), Vec::<String>::new());

    // The final name is a non-empty directory: the rename fails after the file was written and synced.
    let path = dir.path().join("x.parquet");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("keep"), b"").unwrap();
    let err = write_parquet(&path, &mut golden_rows()).unwrap_err();
    assert!(matches!(err, ArchiveError::Io { op: "rename to", .. }), "{err}");
    assert_names(&err, &path);
    assert_eq!(names(dir.path()), vec!["x.parquet"]);
    assert!(path.is_dir());
}

#[test]
fn each_failing_step_leaves_no_file() {
    let path = Path::new("/archive/fritz.parquet");
    for op in [FaultOp::Create, FaultOp::Write, FaultOp::SyncData, FaultOp::Rename, FaultOp::SyncDir] {
        let vfs = SimVfs::new();
        vfs.create_dir_all(Path::new("/archive")).unwrap();
        vfs.fail_next(op, std::io::ErrorKind::Other);
        let err = write_parquet_with(&vfs, path, &mut golden_rows()).expect_err(&format!("{op:?}"));
        assert!(matches!(err, ArchiveError::Io { .. }), "{op:?}: {err}");
        assert_eq!(vfs.list_dir(Path::new("/archive")).unwrap(), Vec::<String>::new(), "{op:?}");
    }
}

/// Fail after every possible number of operations, then crash at random: the final name either is absent
/// or holds the whole archive.
#[test]
fn crash_at_any_point_leaves_no_partial_archive() {
    let path = Path::new("/archive/fritz.parquet");
    let want = expected(&golden_rows());
    let ops = {
        let vfs = SimVfs::new();
        vfs.create_dir_all(Path::new("/archive")).unwrap();
        write_parquet_with(&vfs, path, &mut golden_rows()).unwrap();
        assert_eq!(vfs.list_dir(Path::new("/archive")).unwrap(), vec!["fritz.parquet"]);
        vfs.mutating_ops()
    };
    let mut complete = 0;
    for n in 0..=ops {
        let vfs = SimVfs::new();
        vfs.create_dir_all(Path::new("/archive")).unwrap();
        vfs.fail_after(n);
        let result = write_parquet_with(&vfs, path, &mut golden_rows());
        assert_eq!(result.is_ok(), n >= ops, "fail after {n} of {ops}");
        for seed in 0..8 {
            let after = vfs.crash(seed);
            if after.exists(path) {
                assert_rows_eq(&read_parquet_with(&after, path).unwrap(), &want);
                complete += 1;
            }
        }
    }
    assert!(complete > 0, "some crash keeps the archive");
}
