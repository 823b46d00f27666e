//! Checks shared by the fuzz targets in `fuzz/fuzz_targets/` and the corpus replay test
//! `tests/fuzz_corpus_replay.rs`, so both run the very same code on the very same bytes.
//!
//! Each `check_*` function takes arbitrary bytes. It must never panic on any input, except when an
//! invariant of the codec under test is broken: a panic here is a bug in silt, not in the input.
//! Not part of the public API.

use std::path::Path;

use crate::ingest::lineproto::{self, Decoder, Line, Precision};
use crate::keys::SeriesPath;
use crate::storage::manifest::Manifest;
use crate::storage::wal::payload::{self, Payload};
use crate::storage::wal::record::{decode_frame, encode_frame, frame_len, Frame, FRAME_HEADER_LEN, MAX_PAYLOAD_LEN};

/// The names of the fuzz targets, which are also the corpus directories `fuzz/corpus/<name>/`.
pub const TARGETS: [&str; 9] = [
    "wal_record",
    "manifest",
    "series_path",
    "line_protocol",
    "block",
    "checkpoint",
    "config",
    "query_body",
    "pipeline_spec",
];

/// Runs the check of the target called `name` (one of [`TARGETS`]) on `data`.
///
/// # Panics
///
/// On an unknown target name, and wherever the named check panics.
pub fn check(name: &str, data: &[u8]) {
    match name {
        "wal_record" => check_wal_record(data),
        "manifest" => check_manifest(data),
        "series_path" => check_series_path(data),
        "line_protocol" => check_line_protocol(data),
        "block" => check_block(data),
        "checkpoint" => check_checkpoint(data),
        "config" => check_config(data),
        "query_body" => check_query_body(data),
        "pipeline_spec" => check_pipeline_spec(data),
        other => panic!("unknown fuzz target {other:?}"),
    }
}

/// Treats `data` as the body of a WAL segment and walks its frames from offset 0, following `next`
/// until `End` or `Bad`. For every record:
///
/// - `next` is the offset plus [`frame_len`] of the payload, so the walk always advances and stays
///   8-byte aligned;
/// - [`encode_frame`] of its `(lsn, kind, payload)` reproduces the input's header and payload byte for
///   byte. The padding after the payload is not checked by the decoder, so the input may carry any bytes
///   there (or end inside it); the re-encoded padding is zeros and is checked to be exactly what
///   `frame_len` says;
/// - [`payload::decode`] never panics, and when it succeeds, [`payload::encode`] gives back the same kind
///   and bytes that decode to the same payload (bit for bit, NaNs included). For `DeclareMetric`,
///   `DefineSeries` and `Free` the encoding is canonical, so the re-encoded bytes equal the input's
///   payload; a `Samples` payload may use a different base time or overlong varints, so there only
///   re-encoding is checked to be a fixed point.
///
/// A random mutation almost never keeps a frame's CRC valid, which would leave the payload decoders
/// nearly unreached by a fuzzer. So the same walk runs a second time on a copy of `data` whose frame CRCs
/// were recomputed (frame by frame, as long as a length field is plausible).
pub fn check_wal_record(data: &[u8]) {
    walk_segment(data);
    let repaired = with_frame_crcs_fixed(data);
    if repaired != data {
        walk_segment(&repaired);
    }
}

fn walk_segment(data: &[u8]) {
    let mut off = 0usize;
    loop {
        match decode_frame(data, off) {
            Frame::End | Frame::Bad(_) => return,
            Frame::Record { lsn, kind, payload, next } => {
                assert_eq!(next, off + frame_len(payload.len()), "frame at {off}: wrong next offset");
                assert_eq!(next % 8, 0, "frame at {off}: next offset {next} not aligned");
                let end = off + FRAME_HEADER_LEN + payload.len();
                assert!(end <= data.len(), "frame at {off}: payload runs past the input");

                let mut frame = Vec::new();
                encode_frame(&mut frame, lsn, kind, payload);
                assert_eq!(frame.len(), next - off, "frame at {off}: re-encoded length");
                assert_eq!(
                    &frame[..FRAME_HEADER_LEN + payload.len()],
                    &data[off..end],
                    "frame at {off}: re-encoded header and payload differ from the input"
                );
                assert!(frame[FRAME_HEADER_LEN + payload.len()..].iter().all(|&b| b == 0));

                check_payload(off, kind, payload);
                off = next;
            }
        }
    }
}

/// A copy of `data` with the CRC of every frame recomputed, from offset 0 for as long as the headers are
/// non-zero and their lengths fit.
fn with_frame_crcs_fixed(data: &[u8]) -> Vec<u8> {
    let mut buf = data.to_vec();
    let mut off = 0usize;
    while let Some(header) = buf.get(off..off + FRAME_HEADER_LEN) {
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let end = off + FRAME_HEADER_LEN + len;
        if len == 0 || len > MAX_PAYLOAD_LEN || end > buf.len() {
            break;
        }
        // The CRC covers header bytes 4..24 and the payload, which follows them directly.
        let crc = crc32fast::hash(&buf[off + 4..end]);
        buf[off..off + 4].copy_from_slice(&crc.to_le_bytes());
        off += frame_len(len);
    }
    buf
}

fn check_payload(off: usize, kind: u8, bytes: &[u8]) {
    let Ok(p) = payload::decode(kind, bytes) else {
        return;
    };
    let mut again = Vec::new();
    assert_eq!(payload::encode(&mut again, &p), kind, "frame at {off}: payload re-encodes to another kind");
    let back = payload::decode(kind, &again)
        .unwrap_or_else(|e| panic!("frame at {off}: re-encoded payload {p:?} does not decode: {e}"));
    assert!(same_payload(&p, &back), "frame at {off}: payload {p:?} re-decodes as {back:?}");
    match p {
        Payload::Samples(_) => {
            let mut third = Vec::new();
            payload::encode(&mut third, &back);
            assert_eq!(third, again, "frame at {off}: re-encoding a Samples payload is not a fixed point");
        }
        _ => assert_eq!(again, bytes, "frame at {off}: canonical payload re-encodes differently"),
    }
}

/// Payload equality with sample values compared bit for bit (so NaN equals the same NaN).
fn same_payload(a: &Payload, b: &Payload) -> bool {
    match (a, b) {
        (Payload::Samples(x), Payload::Samples(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(s, t)| s.series == t.series && s.ts == t.ts && s.value.to_bits() == t.value.to_bits())
        }
        _ => a == b,
    }
}

/// Decodes `data` as a manifest. When that succeeds, the manifest must survive a round trip:
/// decoding its [`Manifest::encode`] gives an equal manifest, the encoding has the input's length (only
/// the reserved header word, the descriptor padding and hence the CRC may differ), and encoding again
/// gives the same bytes.
///
/// As for the WAL, the check runs a second time on a copy of `data` whose CRC trailer was recomputed, so
/// that mutated inputs reach the parser behind the checksum.
pub fn check_manifest(data: &[u8]) {
    manifest_round_trip(data);
    if let Some(n) = data.len().checked_sub(4) {
        let mut fixed = data.to_vec();
        let crc = crc32fast::hash(&fixed[..n]);
        fixed[n..].copy_from_slice(&crc.to_le_bytes());
        if fixed != data {
            manifest_round_trip(&fixed);
        }
    }
}

fn manifest_round_trip(data: &[u8]) {
    let path = Path::new("fuzz");
    let Ok(m) = Manifest::decode(path, data) else {
        return;
    };
    let bytes = m.encode();
    assert_eq!(bytes.len(), data.len(), "re-encoded manifest has another length");
    match Manifest::decode(path, &bytes) {
        Ok(back) => {
            assert_eq!(back, m, "manifest changes in a round trip");
            assert_eq!(back.encode(), bytes, "manifest encoding is not a fixed point");
        }
        Err(e) => panic!("re-encoded manifest does not decode: {e}\nmanifest: {m:?}"),
    }
}

/// Decodes `data` as canonical path bytes and parses it (if UTF-8) as the text form.
///
/// - On `Ok((p, n))` from [`SeriesPath::decode`]: `n` is `p`'s encoded length, [`SeriesPath::encode`]
///   writes exactly `data[..n]`, and `p`'s text form parses back to `p`.
/// - On `Ok(p)` from `FromStr`: `p`'s `Display` is the input text, and `p`'s bytes decode back to `p`.
pub fn check_series_path(data: &[u8]) {
    if let Ok((p, n)) = SeriesPath::decode(data) {
        assert!(n <= data.len(), "decode consumed {n} of {} bytes", data.len());
        assert_eq!(n, p.encoded_len(), "decode consumed {n} bytes of {p:?}");
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(out, &data[..n], "{p:?} re-encodes differently");
        let text = p.to_string();
        assert_eq!(text.parse::<SeriesPath>().as_ref(), Ok(&p), "text form {text:?} does not parse back");
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(p) = s.parse::<SeriesPath>() {
            assert_eq!(p.to_string(), s, "text form does not round-trip");
            let bytes = p.to_bytes();
            assert_eq!(SeriesPath::decode(&bytes), Ok((p, bytes.len())), "bytes of {s:?} do not decode back");
        }
    }
}

/// Decodes `data` as an InfluxDB line-protocol body, line by line, and as one line.
///
/// - [`Decoder`] never panics, and its line numbers strictly increase.
/// - Every line that parses survives a round trip: its canonical text (`Display`) parses back to the same
///   line (floats bit for bit), that text is a fixed point, and as a one-line body it decodes to the same
///   line again.
/// - [`lineproto::to_sample`] never panics on a parsed line, with or without a default cluster, in every
///   precision.
/// - [`lineproto::parse_line`] on the whole input never panics, and what it parses round-trips too.
/// - [`lineproto::decode_into`] never panics, and the batch holds exactly the samples it reports added.
pub fn check_line_protocol(data: &[u8]) {
    let mut last = 0;
    for result in Decoder::new(data) {
        let line_no = match &result {
            Ok((no, _)) => *no,
            Err(e) => e.line,
        };
        assert!(line_no > last, "line number {line_no} after {last}");
        last = line_no;
        if let Ok((_, line)) = result {
            line_round_trip(&line);
            for precision in [
                Precision::Seconds,
                Precision::Milliseconds,
                Precision::Microseconds,
                Precision::Nanoseconds,
                Precision::Auto,
            ] {
                if let Ok(sample) = lineproto::to_sample(&line, None, precision, 0) {
                    assert_eq!(sample.metric, line.measurement);
                }
                let _ = lineproto::to_sample(&line, Some("fuzz"), precision, 0);
            }
        }
    }
    if let Ok(line) = lineproto::parse_line(data) {
        line_round_trip(&line);
    }
    let mut batch = crate::Batch::new();
    match lineproto::decode_into(data, &mut batch, Some("fuzz"), Precision::Auto, 0) {
        Ok(added) => assert_eq!(batch.len(), added, "decode_into miscounts"),
        Err(e) => assert_eq!(batch.len(), e.added, "decode_into miscounts before line {}", e.line),
    }
}

fn line_round_trip(line: &Line<'_>) {
    let text = line.to_string();
    let back = lineproto::parse_line(text.as_bytes())
        .unwrap_or_else(|e| panic!("canonical text {text:?} of {line:?} does not parse: {e}"));
    assert!(back.identical(line), "canonical text {text:?} parses as {back:?}, not {line:?}");
    assert_eq!(back.to_string(), text, "canonical text is not a fixed point");
    let mut decoded = Decoder::new(text.as_bytes());
    match decoded.next() {
        Some(Ok((1, again))) => assert!(again.identical(line), "{text:?} decodes as {again:?}"),
        other => panic!("canonical text {text:?} as a body decodes as {other:?}"),
    }
    assert!(decoded.next().is_none(), "canonical text {text:?} decodes to more than one line");
}

/// Treats `data` as a block file:
///
/// - opening it (header, index) and decoding every chunk never panics, whatever the bytes;
/// - a block that opens and decodes whole re-encodes, with the same codec, to a block that decodes to the
///   same chunks, values bit for bit (NaN as NaN), with the same per-chunk counts;
/// - every decoded chunk holds exactly `count` values, of which `samples` are not NaN... unless the
///   descriptor lies, which only an encoder bug or damage can cause: a lying descriptor is tolerated here
///   (the decoder must not trust it), but whatever silt itself encodes must be truthful.
pub fn check_block(data: &[u8]) {
    use crate::storage::block::{encode_block, parse, Block, ChunkData};
    use crate::storage::io::sim::SimVfs;
    use crate::storage::io::{write_atomic, Vfs};

    let Ok((parsed, _, _)) = parse(data) else { return };
    let vfs = SimVfs::new();
    let dir = Path::new("/f");
    vfs.create_dir_all(dir).expect("sim mkdir");
    let path = dir.join("00000000000000000001.blk");
    write_atomic(&vfs, &path, data).expect("sim write");
    let block = Block::open(&vfs, &path, 1).expect("a block that parses opens");
    // The descriptors read from the file, in order and series by series, are the ones parsed whole.
    let read: Vec<_> = block.chunks().collect::<Result<_, _>>().expect("a block that opens reads its index");
    assert_eq!(read, parsed, "the index read in batches differs from the index parsed whole");
    for c in &parsed {
        let of = block.chunks_of(c.series).expect("a block that opens reads a series' descriptors");
        assert!(block.holds(c.series) && of.contains(c), "series {} lost a chunk", c.series.0);
    }
    let mut chunks = Vec::new();
    let mut codec = None;
    for c in &read {
        let mut values = Vec::new();
        if block.decode(c, &mut values).is_err() {
            return;
        }
        assert_eq!(values.len(), c.count as usize, "decode gave another count than the descriptor's");
        codec = Some(c.codec);
        chunks.push(ChunkData { series: c.series, start: c.start, frequency: c.frequency, values });
    }
    let Some(codec) = codec else { return };
    // Re-encode only blocks of one codec, with chunk values that silt itself would write.
    if read.iter().any(|c| c.codec != codec) {
        return;
    }
    let again = encode_block(chunks.clone(), codec);
    let (metas, _, _) = parse(&again).expect("silt's own block parses");
    assert_eq!(metas.len(), chunks.len(), "re-encoding lost chunks");
    write_atomic(&vfs, &path, &again).expect("sim write");
    let block = Block::open(&vfs, &path, 1).expect("silt's own block opens");
    for (m, c) in block.chunks().zip(&chunks) {
        let m = m.expect("silt's own index reads");
        let mut values = Vec::new();
        block.decode(&m, &mut values).expect("silt's own chunk decodes");
        assert_eq!((m.series, m.start, m.frequency), (c.series, c.start, c.frequency));
        let bits = |v: &[f64]| v.iter().map(|x| if x.is_nan() { u64::MAX } else { x.to_bits() }).collect::<Vec<_>>();
        assert_eq!(bits(&values), bits(&c.values), "values changed in a round trip");
        assert_eq!(m.samples as usize, values.iter().filter(|v| !v.is_nan()).count(), "samples miscounted");
    }
}

/// Treats `data` as a pipeline checkpoint (`format/checkpoint.md`). [`Checkpoint::decode`] never panics, and
/// when it returns `Ok(c)`:
///
/// - the encoding is canonical: `c.encode()` is `data` byte for byte;
/// - [`Checkpoint::state_of`] finds every entry and [`Checkpoint::check_graph`] accepts `c`'s own graph;
/// - every entry's state that starts like a window state is restored into a [`TumblingWindow`] of the
///   configuration it names: restoring never panics, and when it succeeds the window snapshots the same
///   bytes and can still be flushed.
///
/// Random mutations almost never keep the CRC32 valid, so the check runs a second time on a copy whose
/// `file_len` and CRC were set to match its length and bytes.
///
/// [`Checkpoint::decode`]: crate::stream::checkpoint::Checkpoint::decode
/// [`Checkpoint::state_of`]: crate::stream::checkpoint::Checkpoint::state_of
/// [`Checkpoint::check_graph`]: crate::stream::checkpoint::Checkpoint::check_graph
/// [`TumblingWindow`]: crate::stream::operators::TumblingWindow
pub fn check_checkpoint(data: &[u8]) {
    use crate::stream::checkpoint::{HEADER_LEN, TRAILER_LEN};
    checkpoint_round_trip(data);
    if data.len() >= HEADER_LEN + TRAILER_LEN {
        let mut fixed = data.to_vec();
        let n = fixed.len() - TRAILER_LEN;
        fixed[16..24].copy_from_slice(&(data.len() as u64).to_le_bytes());
        let crc = crc32fast::hash(&fixed[..n]);
        fixed[n..].copy_from_slice(&crc.to_le_bytes());
        if fixed != data {
            checkpoint_round_trip(&fixed);
        }
    }
}

fn checkpoint_round_trip(data: &[u8]) {
    use crate::stream::checkpoint::Checkpoint;
    let Ok(c) = Checkpoint::decode(data) else { return };
    assert_eq!(c.encode(), data, "checkpoint encoding is not canonical: {c:?}");
    for e in &c.entries {
        assert_eq!(c.state_of(e.node, e.subtask), Some(e), "state_of misses an entry");
        window_state(&e.state);
    }
    assert_eq!(c.check_graph(&c.graph), Ok(()), "a checkpoint does not match its own graph");
}

/// Restores `state` into a window of the configuration its header names, if it has one.
fn window_state(state: &[u8]) {
    use crate::stream::operators::{Aggregate, Collector, Operator, TumblingWindow};
    use crate::stream::StreamError;
    struct Discard;
    impl Collector for Discard {
        fn emit(&mut self, _: arrow_array::RecordBatch) -> Result<(), StreamError> {
            Ok(())
        }
    }
    let word = |at: usize| state.get(at..at + 8).and_then(|b| b.try_into().ok()).map(i64::from_le_bytes);
    let (Some(width), Some(slide), Some(&tag)) = (word(1), word(9), state.get(17)) else { return };
    let aggregate = match tag {
        0 => Aggregate::Count,
        1 => Aggregate::Sum,
        2 => Aggregate::Avg,
        3 => Aggregate::Min,
        4 => Aggregate::Max,
        _ => Aggregate::Last,
    };
    let mut w = TumblingWindow::sliding(width, slide, aggregate, "key", "time", "value");
    if w.restore(state).is_ok() {
        assert_eq!(w.snapshot().ok().as_deref(), Some(state), "window state does not survive restore and snapshot");
        w.on_watermark(0, &mut Discard).expect("a watermark on a restored window");
        w.finish(&mut Discard).expect("finishing a restored window");
    }
}

// ---------------------------------------------------------------------------------------------------------
// JSON inputs: the server's config file, the HTTP API's bodies, pipeline specs.

/// The top-level keys that make [`Config::from_json`](crate::server::config::Config::from_json) read another
/// file (`main-file`, `metrics-file`, `nats-file`, `pipelines-file`: any key ending in `-file`).
fn names_a_file(root: &serde_json::Value) -> bool {
    root.as_object().is_some_and(|m| m.keys().any(|k| k.ends_with("-file")))
}

/// The string at a dotted path of objects, `None` when a step is missing or `null` (the config's "absent").
fn json_str<'a>(root: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(root, |v, k| v.get(k).filter(|v| !v.is_null()))?.as_str()
}

/// Treats `data` as the text of `silt serve --config` (skipped unless UTF-8) and parses it with
/// [`Config::from_json`](crate::server::config::Config::from_json), which must never panic; its error must
/// print. Text with a top-level `<section>-file` key is skipped: the parser would read that file (a fuzzer
/// must not open `/dev/zero`). When it parses:
///
/// - parsing the same text again gives the same `Config`;
/// - `retention-in-memory` and `checkpoint-interval` (`checkpoints.interval` in the legacy layout) are
///   exactly what [`parse_duration`](crate::server::config::parse_duration) gives for their text, and
///   positive; [`Config::db_options`](crate::server::config::Config::db_options) carries them;
/// - `block-retention` (`archive.interval` in the legacy layout) is what `parse_duration` gives for its text
///   and no shorter than the retention; the options' block retention is it, else the retention when there
///   is a `cleanup` section, else none; the archive directory is `cleanup.directory` in archive mode only;
/// - the metrics are the `metrics` object's keys, each a valid name with a frequency in
///   `1..=MAX_FREQUENCY`, and `metric_configs` lists them all;
/// - `memory-cap` in bytes does not overflow; `main.addr` ends in a port; the data directory is
///   `checkpoints.directory` or the default;
/// - every pipeline validates, their names are unique, and each equals `PipelineSpec::from_value` of its
///   element of the `pipelines` array;
/// - the `nats` section's `Debug` shows its password as `<redacted>`.
///
/// Nothing is resolved or opened (no `listen_addr`, no TLS files).
pub fn check_config(data: &[u8]) {
    use crate::server::config::{parse_duration, CleanupMode, Config, ConfigLayout, DEFAULT_DATA_DIR, MEMORY_CAP_UNIT};
    use crate::stream::spec::PipelineSpec;

    let Ok(text) = std::str::from_utf8(data) else { return };
    let root: Option<serde_json::Value> = serde_json::from_str(text).ok();
    if root.as_ref().is_some_and(names_a_file) {
        return;
    }
    let c = match Config::from_json(text) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "a config error prints nothing");
            return;
        }
    };
    let root = root.expect("a config that parses is JSON");
    assert_eq!(Config::from_json(text).ok().as_ref(), Some(&c), "parsing the same text twice differs");

    let legacy = c.layout == ConfigLayout::Legacy;
    let retention_path: &[&str] =
        if legacy { &["retention-in-memory"] } else { &["metric-store", "retention-in-memory"] };
    let interval_path: &[&str] =
        if legacy { &["checkpoints", "interval"] } else { &["metric-store", "checkpoint-interval"] };
    let ms = &c.metric_store;
    let retention = json_str(&root, retention_path).expect("a parsed config has a retention");
    assert_eq!(parse_duration(retention).ok(), Some(ms.retention_in_memory), "retention {retention:?}");
    assert!(!ms.retention_in_memory.is_zero(), "zero retention accepted");
    let interval = json_str(&root, interval_path);
    assert_eq!(interval.map(|s| parse_duration(s).ok()), ms.checkpoint_interval.map(Some), "interval {interval:?}");
    assert!(ms.checkpoint_interval.is_none_or(|d| !d.is_zero()), "zero checkpoint interval accepted");
    let opts = c.db_options();
    assert_eq!(opts.retention, Some(ms.retention_in_memory));
    if let Some(d) = ms.checkpoint_interval {
        assert_eq!(opts.checkpoint_interval, Some(d));
    }
    let block_path: &[&str] = if legacy { &["archive", "interval"] } else { &["metric-store", "block-retention"] };
    let block = json_str(&root, block_path);
    assert_eq!(block.map(|s| parse_duration(s).ok()), ms.block_retention.map(Some), "block retention {block:?}");
    assert!(ms.block_retention.is_none_or(|d| d >= ms.retention_in_memory), "block retention under retention");
    let want_block = match &ms.cleanup {
        None => ms.block_retention,
        Some(_) => Some(ms.block_retention.unwrap_or(ms.retention_in_memory)),
    };
    assert_eq!(opts.block_retention, want_block, "block retention in the options");
    let archive = ms.cleanup.as_ref().filter(|c| c.mode == CleanupMode::Archive);
    assert_eq!(opts.archive_dir, archive.and_then(|c| c.directory.clone()), "archive directory in the options");
    assert!(archive.is_none_or(|c| c.directory.is_some()), "archive mode without a directory accepted");

    let names: Vec<&String> = root["metrics"].as_object().map(|m| m.keys().collect()).unwrap_or_default();
    assert_eq!(c.metrics.keys().collect::<Vec<_>>(), names, "metrics differ from the file's keys");
    for (name, spec) in &c.metrics {
        crate::keys::validate_name("metric", name).expect("an accepted metric name is valid");
        assert!((1..=crate::storage::head::MAX_FREQUENCY).contains(&spec.frequency), "frequency of {name:?}");
    }
    assert_eq!(c.metric_configs().len(), c.metrics.len());

    assert!(ms.memory_cap.checked_mul(MEMORY_CAP_UNIT).is_some(), "memory-cap overflows");
    assert_eq!(ms.memory_cap_bytes(), ms.memory_cap * MEMORY_CAP_UNIT);
    let port = c.main.addr.rsplit_once(':').map(|(_, p)| p);
    assert!(port.and_then(|p| p.parse::<u16>().ok()).is_some(), "addr {:?} has no port", c.main.addr);
    let dir = ms.checkpoints.directory.clone().unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    assert_eq!(c.data_dir(), dir);

    let elements = root.get("pipelines").and_then(|p| p.as_array()).map(Vec::as_slice).unwrap_or_default();
    assert_eq!(c.pipelines.len(), if legacy { 0 } else { elements.len() });
    for (i, spec) in c.pipelines.iter().enumerate() {
        spec.validate().expect("an accepted pipeline validates");
        assert!(c.pipelines[..i].iter().all(|s| s.name != spec.name), "duplicate pipeline {:?}", spec.name);
        assert_eq!(PipelineSpec::from_value(&elements[i]).ok().as_ref(), Some(spec), "pipelines[{i}]");
    }
    if let Some(n) = &c.nats {
        if n.password.is_some() {
            let shown = format!("{n:?}");
            assert!(shown.contains(r#"password: Some("<redacted>")"#), "nats Debug shows the password: {shown}");
        }
    }
}

/// Start of the samples in [`fuzz_db`].
const FUZZ_T: i64 = 1_700_000_000;

/// One in-memory database for the checks that need one, made once per process: metrics `load` (10 s,
/// avg), `flops` (10 s, sum), `bp` (10 s, max), `mem` (60 s, none), `idle` (60 s, min) and the pipeline
/// sinks `load_1m` (60 s, avg) and `load_count` (30 s, sum); cluster `emmy` with hosts `n1` and `n2`, each
/// with `hwthread0..3` below `socket0`/`socket1`-less paths and `socket0/core0..1`, 40 steps of samples from
/// [`FUZZ_T`] with a gap, NaNs and negative values.
fn fuzz_db() -> &'static std::sync::Arc<crate::Db> {
    use std::sync::{Arc, OnceLock};

    use crate::keys::HostKey;
    use crate::{Aggregation, Batch, Db, MetricConfig, Options};

    static DB: OnceLock<Arc<Db>> = OnceLock::new();
    DB.get_or_init(|| {
        let opts = Options {
            vfs: Arc::new(crate::storage::io::sim::SimVfs::new()),
            checkpoint_interval: None,
            durability: crate::Durability::None,
            pages_per_file: 64,
            ..Options::default()
        };
        let db = Db::open("/fuzz", opts).expect("opening the in-memory database");
        let cfg = |frequency, aggregation| MetricConfig { frequency, aggregation };
        for (name, c) in [
            ("load", cfg(10, Aggregation::Avg)),
            ("flops", cfg(10, Aggregation::Sum)),
            ("bp", cfg(10, Aggregation::Max)),
            ("mem", cfg(60, Aggregation::None)),
            ("idle", cfg(60, Aggregation::Min)),
            ("load_1m", cfg(60, Aggregation::Avg)),
            ("load_count", cfg(30, Aggregation::Sum)),
        ] {
            db.declare_metric(name, c).expect("declaring a metric");
        }
        let mut batch = Batch::new();
        for (h, host) in ["n1", "n2"].into_iter().enumerate() {
            let node = HostKey::new("emmy", host).expect("host key");
            for step in 0..40i64 {
                if step % 13 == 7 {
                    continue; // a gap
                }
                let t = FUZZ_T + step * 10;
                let v = (step as f64 - 5.0) * (h as f64 + 0.5);
                batch.push(&node, "mem", FUZZ_T + step * 60, v);
                batch.push(&node, "idle", FUZZ_T + step * 60, -v);
                for i in 0..4u32 {
                    let hw = node.clone().component("hwthread", i).expect("hwthread key");
                    batch.push(&hw, "load", t, if step == 3 { f64::NAN } else { v + f64::from(i) });
                    batch.push(&hw, "flops", t, v * 1e9);
                }
                for core in 0..2u32 {
                    let c =
                        node.clone().component("socket", 0).and_then(|s| s.component("core", core)).expect("core key");
                    batch.push(&c, "bp", t, v - f64::from(core));
                }
            }
        }
        db.write(&batch).expect("writing the samples");
        Arc::new(db)
    })
}

/// What [`check_query_body`] lets one request cost: the server's limits, smaller, so one input stays cheap.
pub const FUZZ_REQUEST_LIMITS: crate::server::RequestLimits =
    crate::server::RequestLimits { query_selectors: 2_000, query_values: 200_000, health_checks: 20_000 };

/// Treats `data` as the body of `/api/query`, of `/api/free` and of `/api/healthcheck` and runs it through
/// the handlers' own functions ([`crate::server::fuzz_bodies`]: parse, checks, limits, the database calls)
/// against [`fuzz_db`], with [`FUZZ_REQUEST_LIMITS`]. None may panic, and:
///
/// - an error is a 400 with a message (the database is in memory and healthy: nothing here is a 5xx);
/// - a query answer is JSON with one `results` entry per query, those `for-all-nodes` added included (and
///   echoed in `queries`); each result without an `error` has `from <= to`, a positive resolution and
///   `avg`/`min`/`max` that are numbers or `null`; the values of all results together are within the
///   request's value limit;
/// - `/api/free` below `i64::MIN` frees nothing;
/// - a health answer has at most one entry per node asked for, each with a known `State` and
///   `HealthMetrics` that is itself JSON with `missing` and `degraded` lists.
pub fn check_query_body(data: &[u8]) {
    use serde_json::Value;

    let db = fuzz_db();
    let out = crate::server::fuzz_bodies(db, data, FUZZ_REQUEST_LIMITS, FUZZ_T + 1_000);
    let bad_request = |what: &str, e: &crate::server::ApiError| {
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{what}: {}", e.message());
        assert!(!e.message().is_empty(), "{what}: an error without a message");
    };
    match &out.query {
        Err(e) => bad_request("query", e),
        Ok(json) => {
            let req: Value = serde_json::from_slice(data).expect("a body the server took is JSON");
            let asked = req.get("queries").and_then(Value::as_array).map_or(0, Vec::len);
            let answer: Value = serde_json::from_slice(json).expect("the query answer is JSON");
            let echoed = answer.get("queries").map_or(0, |q| q.as_array().expect("queries is a list").len());
            let results = answer["results"].as_array().expect("results is a list");
            assert_eq!(results.len(), asked + echoed, "one result list per query");
            let mut values = 0u64;
            for r in results.iter().flat_map(|r| r.as_array().expect("a result list")) {
                for k in ["avg", "min", "max"] {
                    assert!(r[k].is_null() || r[k].is_number(), "{k} is {}", r[k]);
                }
                if r.get("error").is_some() {
                    continue;
                }
                let (from, to, res) = (r["from"].as_i64(), r["to"].as_i64(), r["resolution"].as_i64());
                assert!(from <= to && res.is_some_and(|x| x > 0), "result {r}");
                if let Some(d) = r.get("data") {
                    values += d.as_array().expect("data is a list").len() as u64;
                }
            }
            assert!(values <= FUZZ_REQUEST_LIMITS.query_values, "{values} values answered, over the limit");
        }
    }
    match &out.free {
        Err(e) => bad_request("free", e),
        Ok(n) => assert_eq!(*n, 0, "freeing below i64::MIN freed pages"),
    }
    match &out.health {
        Err(e) => bad_request("healthcheck", e),
        Ok(answer) => {
            let req: Value = serde_json::from_slice(data).expect("a body the server took is JSON");
            let nodes = req.get("nodes").and_then(Value::as_array).map_or(0, Vec::len);
            let map = answer.as_object().expect("the health answer is an object");
            assert!(map.len() <= nodes, "{} entries for {nodes} nodes", map.len());
            for h in map.values() {
                assert!(matches!(h["State"].as_str(), Some("full" | "partial" | "failed")), "state {h}");
                let m: Value = serde_json::from_str(h["HealthMetrics"].as_str().expect("HealthMetrics is text"))
                    .expect("HealthMetrics is JSON");
                assert!(m["missing"].is_array() && m["degraded"].is_array(), "HealthMetrics {m}");
            }
        }
    }
}

/// Treats `data` as a pipeline spec (skipped unless UTF-8): [`PipelineSpec::from_json`] never panics and its
/// error prints. When it is `Ok(spec)`:
///
/// - `spec.validate()` passes, its selector builds, and the sink's frequency is positive and divides the
///   slide;
/// - serialized to JSON (text and value), it parses back to the same spec;
/// - built against [`fuzz_db`]: with an undeclared source metric, [`PipelineSpec::build`] is
///   `UnknownMetric`; with a declared source and a declared sink (`load_1m`, `load_count`, …) it builds, or
///   refuses with `SinkConflict`, and the graph validates and plans. (A spec with an undeclared sink is not
///   built: building declares the sink, which would change the shared database.) The graph's key and window
///   operators then take a few rows of four series (the filter and map applied, a group, a window, late
///   rows, extreme times), snapshot and restore into fresh operators, and finish, none of which may panic
///   or take unbounded time or memory.
///
/// [`PipelineSpec::from_json`]: crate::stream::spec::PipelineSpec::from_json
/// [`PipelineSpec::build`]: crate::stream::spec::PipelineSpec::build
pub fn check_pipeline_spec(data: &[u8]) {
    use std::sync::Arc;

    use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray};

    use crate::stream::graph::{NodeKind, PhysicalPlan};
    use crate::stream::operators::Collector;
    use crate::stream::spec::{PipelineSpec, SpecError};
    use crate::stream::StreamError;

    let Ok(text) = std::str::from_utf8(data) else { return };
    let spec = match PipelineSpec::from_json(text) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "a spec error prints nothing");
            return;
        }
    };
    spec.validate().expect("a parsed spec validates");
    spec.selector().expect("a validated spec's selector builds");
    let sink = spec.sink_config();
    assert!(sink.frequency >= 1 && spec.window.slide() % sink.frequency == 0, "sink frequency {}", sink.frequency);
    let text2 = serde_json::to_string(&spec).expect("a spec serializes");
    assert_eq!(PipelineSpec::from_json(&text2).ok().as_ref(), Some(&spec), "spec does not round-trip: {text2}");
    let value = serde_json::to_value(&spec).expect("a spec serializes to a value");
    assert_eq!(PipelineSpec::from_value(&value).ok().as_ref(), Some(&spec), "spec does not round-trip as a value");

    let db = fuzz_db();
    if db.metric(&spec.source.metric).is_none() {
        // Refused before anything is declared.
        let r = spec.build(db.clone());
        assert!(matches!(r, Err(SpecError::UnknownMetric { .. })), "undeclared source built: {:?}", r.err());
        return;
    }
    if db.metric(&spec.sink.metric).is_none() {
        return;
    }
    let g = match spec.build(db.clone()) {
        Ok(g) => g,
        Err(SpecError::SinkConflict { .. }) => return,
        Err(e) => panic!("a valid spec with declared metrics does not build: {e}"),
    };
    g.validate().expect("a built graph validates");
    PhysicalPlan::of(&g).expect("a built graph plans");
    let factory = |name: &str| {
        let node = g.nodes.iter().find(|n| n.name == name).expect("the graph has the node");
        match &node.kind {
            NodeKind::Operator(f) => f.clone(),
            NodeKind::Source(_) => panic!("{name} is a source"),
        }
    };
    let (key_factory, window_factory) = (factory("key"), factory("window"));

    struct Keep(Vec<RecordBatch>);
    impl Collector for Keep {
        fn emit(&mut self, b: RecordBatch) -> Result<(), StreamError> {
            self.0.push(b);
            Ok(())
        }
    }
    let rows: [(&str, i64, f64); 9] = [
        ("host:emmy/n1", FUZZ_T, 1.5),
        ("host:emmy/n1/hwthread0", FUZZ_T + 10, -2.0),
        ("host:emmy/n2/socket0/core1", FUZZ_T + 3_600, 1e9),
        ("host:alex", FUZZ_T - 86_400, 0.0),
        ("job:1234.batch/map/7", 0, f64::NAN),
        ("service:ingest/0", -1, f64::INFINITY),
        ("host:emmy/n1", i64::MIN, 7.0),
        ("host:emmy/n1", i64::MAX, 8.0),
        ("host:emmy/n1", FUZZ_T + 5, 3.0),
    ];
    let batch = RecordBatch::try_new(
        crate::stream::store::scan_schema(),
        vec![
            Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ],
    )
    .expect("a scan batch");
    let mut key = key_factory(0, 1);
    let mut keyed = Keep(Vec::new());
    key.process(0, batch, &mut keyed).expect("the key operator takes scan rows");
    let mut window = window_factory(0, 1);
    let mut out = Keep(Vec::new());
    for b in keyed.0 {
        window.process(0, b, &mut out).expect("the window takes keyed rows");
    }
    window.on_watermark(FUZZ_T + 60, &mut out).expect("a watermark");
    let (key_state, window_state) =
        (key.snapshot().expect("key snapshot"), window.snapshot().expect("window snapshot"));
    let mut key2 = key_factory(0, 1);
    key2.restore(&key_state).expect("a key operator restores its own snapshot");
    let mut window2 = window_factory(0, 1);
    window2.restore(&window_state).expect("a window restores its own snapshot");
    assert_eq!(window2.snapshot().ok(), Some(window_state), "window state changes through restore");
    window.finish(&mut out).expect("finishing the window");
    for b in &out.0 {
        assert_eq!(b.schema(), crate::stream::operators::TumblingWindow::output_schema(), "window output schema");
    }
}
