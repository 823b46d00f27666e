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
pub const TARGETS: [&str; 6] = ["wal_record", "manifest", "series_path", "line_protocol", "block", "checkpoint"];

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

    let Ok(_) = parse(data) else { return };
    let vfs = SimVfs::new();
    let dir = Path::new("/f");
    vfs.create_dir_all(dir).expect("sim mkdir");
    let path = dir.join("00000000000000000001.blk");
    write_atomic(&vfs, &path, data).expect("sim write");
    let block = Block::open(&vfs, &path, 1).expect("a block that parses opens");
    let mut chunks = Vec::new();
    let mut codec = None;
    for c in block.chunks() {
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
    if block.chunks().iter().any(|c| c.codec != codec) {
        return;
    }
    let again = encode_block(chunks.clone(), codec);
    let (metas, _, _) = parse(&again).expect("silt's own block parses");
    assert_eq!(metas.len(), chunks.len(), "re-encoding lost chunks");
    write_atomic(&vfs, &path, &again).expect("sim write");
    let block = Block::open(&vfs, &path, 1).expect("silt's own block opens");
    for (m, c) in block.chunks().iter().zip(&chunks) {
        let mut values = Vec::new();
        block.decode(m, &mut values).expect("silt's own chunk decodes");
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
