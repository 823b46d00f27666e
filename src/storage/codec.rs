//! Value codecs for compacted blocks: a run of `f64` samples at a fixed frequency (timestamps are implicit),
//! NaN marking a gap, in and out of bytes.
//!
//! Three codecs; the [`Codec`] discriminant is stored on disk next to each encoding, and the decoder is
//! told the number of values, so no encoding stores its own count.
//!
//! - [`Codec::Raw`]: the values as little-endian `f64`, 8 bytes each, NaN payloads kept.
//! - [`Codec::Gorilla`]: the gap map (below), then the non-NaN values XOR-coded as in Facebook's Gorilla
//!   paper / Prometheus' XOR chunks, without timestamps. Bits are written most significant first. The
//!   first value is 64 raw bits; each further value `v` is coded against the previous one `p` through
//!   `x = v ^ p`: `0` if `x == 0`; `10` and the meaningful bits of `x` if they fit the previous window
//!   of leading/trailing zeros; else `11`, 5 bits of leading zeros (capped at 31), 6 bits of meaningful
//!   bit count (64 written as 0) and the meaningful bits. The last byte is padded with zero bits.
//! - [`Codec::Pco`]: the gap map, then, if any value is not NaN, the non-NaN values compressed by the
//!   [`pco`] crate in its *wrapped* format: pco's 2-byte format header, then for each run of up to
//!   2^20 values one pco chunk (chunk metadata and a single page). The counts are implied by the gap map.
//!
//! The gap map (Gorilla and Pco) is LEB128 varints: the number of values `n` (redundant with the
//! caller's count, so a wrong count is an error rather than a silent misread), the number of maximal
//! runs of NaN, then per run the number of non-NaN values since the end of the previous run (or the
//! start; only the first run may start at 0 distance) and the run's length (at least 1). A 512-value
//! page without gaps spends 3 bytes on it. A NaN decodes as the canonical `f64::NAN`; its payload is
//! not kept.
//!
//! Gaps are kept out of the XOR stream: a NaN between two values costs two full XOR windows where the
//! gap map costs 2–3 bytes. Measured on the workload of `benches/codec.rs` (~1% NaN in runs of 1–4),
//! XOR over the raw bits with NaN inline took 2.87 (512-value chunks) and 3.06 (4,096) bytes/sample
//! against 2.65 and 2.74 with the gap map.
//!
//! Decoding never panics and allocates at most O(n + bytes.len()): damaged input is an [`CodecError`].
//! For pco, whose decoder sizes some buffers from header fields, the fields that could ask for more
//! (a dictionary's length, a lookback window) are checked against the input before pco reads on.

use pco::errors::{ErrorKind, PcoError};
use pco::metadata::DeltaEncoding;
use pco::wrapped::{FileCompressor, FileDecompressor};
use pco::{ChunkConfig, DeltaSpec, PagingSpec};

/// A value codec; the discriminant is stored on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    /// Little-endian `f64`s, 8 bytes per value.
    Raw = 0,
    /// Gap map, then Gorilla XOR coding of the non-NaN values.
    Gorilla = 1,
    /// Gap map, then the non-NaN values compressed by pco (pcodec).
    Pco = 2,
}

impl Codec {
    /// The codec with this on-disk discriminant, if any.
    pub fn from_u8(b: u8) -> Option<Codec> {
        match b {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Gorilla),
            2 => Some(Codec::Pco),
            _ => None,
        }
    }
}

/// What is wrong with an encoding.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes end before all values are decoded.
    #[error("encoding is truncated")]
    Truncated,
    /// Bytes (or set padding bits) remain after the last value.
    #[error("{0} trailing bytes after the encoding")]
    TrailingBytes(usize),
    /// A header field holds an impossible value.
    #[error("bad header: {0}")]
    BadHeader(&'static str),
    /// The encoding holds a different number of values than asked for.
    #[error("count mismatch: {expected} values asked for, the encoding holds {found}")]
    CountMismatch {
        /// The number of values the caller asked for.
        expected: usize,
        /// The number of values the encoding describes (so far).
        found: usize,
    },
    /// The caller asked for more values than a `Vec<f64>` can hold.
    #[error("cannot decode {0} values: too many")]
    TooMany(usize),
    /// The coded values themselves are damaged.
    #[error("corrupt encoding: {0}")]
    Corrupt(String),
}

/// Appends the encoding of `values` to `out`. Gaps are NaN. Every non-NaN value must decode bit for bit
/// (incl. -0.0, infinities, subnormals); every NaN decodes as a NaN (payload need not be kept).
pub fn encode(codec: Codec, values: &[f64], out: &mut Vec<u8>) {
    match codec {
        Codec::Raw => {
            out.reserve(values.len() * 8);
            for v in values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Codec::Gorilla => {
            let n_valid = write_gap_map(values, out);
            if n_valid > 0 {
                let mut w = BitWriter::new(out);
                gorilla_encode(values.iter().filter(|v| !v.is_nan()).map(|v| v.to_bits()), &mut w);
                w.finish();
            }
        }
        Codec::Pco => {
            let n_valid = write_gap_map(values, out);
            if n_valid > 0 {
                let valid: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
                pco_encode(&valid, out);
            }
        }
    }
}

/// Decodes exactly `n` values from `bytes` (the whole encoding, nothing after it) into `out` (appended).
/// Any input, however damaged, gives Err or Ok; never a panic, never an allocation larger than
/// O(n + bytes.len()). On Err, `out` is left as it was.
pub fn decode(codec: Codec, bytes: &[u8], n: usize, out: &mut Vec<f64>) -> Result<(), CodecError> {
    let start = out.len();
    let res = match codec {
        Codec::Raw => decode_raw(bytes, n, out),
        Codec::Gorilla => decode_gorilla(bytes, n, out),
        Codec::Pco => decode_pco(bytes, n, out),
    };
    if res.is_err() {
        out.truncate(start);
    }
    res
}

fn reserve(out: &mut Vec<f64>, n: usize) -> Result<(), CodecError> {
    out.try_reserve_exact(n).map_err(|_| CodecError::TooMany(n))
}

fn decode_raw(bytes: &[u8], n: usize, out: &mut Vec<f64>) -> Result<(), CodecError> {
    let want = n.checked_mul(8).ok_or(CodecError::Truncated)?;
    if bytes.len() < want {
        return Err(CodecError::Truncated);
    }
    if bytes.len() > want {
        return Err(CodecError::TrailingBytes(bytes.len() - want));
    }
    reserve(out, n)?;
    out.extend(bytes.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])));
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Gap map

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint at `*pos`, advancing it. Refuses encodings longer than 10 bytes or above `u64`.
fn read_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, CodecError> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *bytes.get(*pos).ok_or(CodecError::Truncated)?;
        *pos += 1;
        if i == 9 && b > 1 {
            return Err(CodecError::BadHeader("varint overflows 64 bits"));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CodecError::BadHeader("varint longer than 10 bytes"))
}

/// Writes the gap map of `values` and returns the number of non-NaN values.
fn write_gap_map(values: &[f64], out: &mut Vec<u8>) -> usize {
    // Two passes: count the runs first so the count can lead (no back-patching of a varint).
    write_varint(out, values.len() as u64);
    let mut runs = 0u64;
    let mut in_gap = false;
    for v in values {
        let nan = v.is_nan();
        if nan && !in_gap {
            runs += 1;
        }
        in_gap = nan;
    }
    write_varint(out, runs);
    let mut n_valid = 0;
    let mut since = 0u64; // non-NaN values since the previous run
    let mut run = 0u64; // length of the current run
    for v in values {
        if v.is_nan() {
            if run == 0 {
                write_varint(out, since);
                since = 0;
            }
            run += 1;
        } else {
            if run > 0 {
                write_varint(out, run);
                run = 0;
            }
            since += 1;
            n_valid += 1;
        }
    }
    if run > 0 {
        write_varint(out, run);
    }
    n_valid
}

/// A parsed gap map: iterates `(valid, nan)` run pairs; `valid` may be 0 only for the first pair.
struct GapMap<'a> {
    bytes: &'a [u8],
    /// Position of the next run pair in `bytes`.
    pos: usize,
    /// Runs left to read.
    runs: u64,
    /// Values covered so far.
    covered: usize,
    n: usize,
}

impl<'a> GapMap<'a> {
    /// Reads the run count. `n` is the number of values the caller asked for.
    fn new(bytes: &'a [u8], n: usize) -> Result<Self, CodecError> {
        let mut pos = 0;
        let stored = read_varint(bytes, &mut pos)?;
        if stored != n as u64 {
            return Err(CodecError::CountMismatch {
                expected: n,
                found: usize::try_from(stored).unwrap_or(usize::MAX),
            });
        }
        let runs = read_varint(bytes, &mut pos)?;
        // Each run takes at least 2 bytes and at least one value, and runs are separated by values.
        if runs > (n as u64).div_ceil(2) {
            return Err(CodecError::CountMismatch { expected: n, found: usize::try_from(runs).unwrap_or(usize::MAX) });
        }
        if runs > (bytes.len() as u64) / 2 {
            return Err(CodecError::Truncated);
        }
        Ok(GapMap { bytes, pos, runs, covered: 0, n })
    }

    /// The next `(valid, nan)` run pair, or `None` after the last one.
    fn next_run(&mut self) -> Result<Option<(usize, usize)>, CodecError> {
        if self.runs == 0 {
            return Ok(None);
        }
        let first = self.covered == 0;
        let valid = read_varint(self.bytes, &mut self.pos)?;
        let nan = read_varint(self.bytes, &mut self.pos)?;
        if (valid == 0 && !first) || nan == 0 {
            return Err(CodecError::BadHeader("empty run in the gap map"));
        }
        let remaining = (self.n - self.covered) as u64;
        let total = valid.saturating_add(nan);
        if total > remaining {
            let found = self.covered.saturating_add(usize::try_from(total).unwrap_or(usize::MAX));
            return Err(CodecError::CountMismatch { expected: self.n, found });
        }
        self.runs -= 1;
        // Both fit in usize: total <= remaining <= n.
        let (valid, nan) = (valid as usize, nan as usize);
        self.covered += valid + nan;
        Ok(Some((valid, nan)))
    }

    /// Reads all runs and returns the number of non-NaN values and the offset where the values start.
    fn count_valid(mut self) -> Result<(usize, usize), CodecError> {
        let mut nan_total = 0;
        while let Some((_, nan)) = self.next_run()? {
            nan_total += nan;
        }
        Ok((self.n - nan_total, self.pos))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Bit I/O (most significant bit first)

struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Pending bits, right-aligned; `nbits < 64`.
    acc: u64,
    nbits: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter { out, acc: 0, nbits: 0 }
    }

    /// Writes the low `n` bits of `v` (`n <= 64`; the bits above `n` must be zero).
    #[inline]
    fn write(&mut self, v: u64, n: u32) {
        debug_assert!(n <= 64 && (n == 64 || v >> n == 0));
        let free = 64 - self.nbits;
        if n < free {
            self.acc = (self.acc << n) | v;
            self.nbits += n;
        } else {
            let rest = n - free; // bits of v that do not fit in this word
            let head = if free == 64 { 0 } else { self.acc << free };
            let word = head | if rest == 0 { v } else { v >> rest };
            self.out.extend_from_slice(&word.to_be_bytes());
            self.acc = if rest == 0 { 0 } else { v & ((1u64 << rest) - 1) };
            self.nbits = rest;
        }
    }

    /// Flushes the pending bits, padding the last byte with zeros.
    fn finish(self) {
        if self.nbits > 0 {
            let word = self.acc << (64 - self.nbits);
            let bytes = self.nbits.div_ceil(8) as usize;
            self.out.extend_from_slice(&word.to_be_bytes()[..bytes]);
        }
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    /// Bit position.
    pos: usize,
    len_bits: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0, len_bits: bytes.len() * 8 }
    }

    /// The 8 bytes from `i` as a big-endian word, zero-filled past the end.
    #[inline]
    fn word_at(&self, i: usize) -> u64 {
        match self.bytes.get(i..i + 8) {
            Some(s) => u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]),
            None => {
                let mut buf = [0u8; 8];
                let tail = self.bytes.get(i..).unwrap_or(&[]);
                buf[..tail.len()].copy_from_slice(tail);
                u64::from_be_bytes(buf)
            }
        }
    }

    /// Reads `n <= 64` bits.
    #[inline]
    fn read(&mut self, n: u32) -> Result<u64, CodecError> {
        if n == 0 {
            return Ok(0);
        }
        if self.len_bits - self.pos < n as usize {
            return Err(CodecError::Truncated);
        }
        let byte = self.pos / 8;
        let off = (self.pos % 8) as u32;
        let mut v = self.word_at(byte) << off;
        if off + n > 64 {
            // The bits reach into a ninth byte, which exists since they are within the input.
            v |= u64::from(self.bytes[byte + 8]) >> (8 - off);
        }
        self.pos += n as usize;
        Ok(v >> (64 - n))
    }

    #[inline]
    fn read_bit(&mut self) -> Result<bool, CodecError> {
        let b = *self.bytes.get(self.pos / 8).ok_or(CodecError::Truncated)?;
        let bit = (b >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    /// Checks that only zero padding bits remain.
    fn finish(&self) -> Result<(), CodecError> {
        let used = self.pos.div_ceil(8);
        if used < self.bytes.len() {
            return Err(CodecError::TrailingBytes(self.bytes.len() - used));
        }
        let pad = (8 - self.pos % 8) % 8;
        if pad > 0 && self.bytes[used - 1] & ((1u8 << pad) - 1) != 0 {
            return Err(CodecError::TrailingBytes(0));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------
// Gorilla

/// No XOR window yet: the next non-zero XOR must write its window.
const NO_WINDOW: u32 = u32::MAX;

fn gorilla_encode(bits: impl Iterator<Item = u64>, w: &mut BitWriter) {
    let mut bits = bits;
    let Some(first) = bits.next() else { return };
    w.write(first, 64);
    let mut prev = first;
    let mut lead = NO_WINDOW;
    let mut trail = 0;
    for v in bits {
        let x = v ^ prev;
        prev = v;
        if x == 0 {
            w.write(0, 1);
            continue;
        }
        let l = x.leading_zeros().min(31);
        let t = x.trailing_zeros();
        if lead != NO_WINDOW && l >= lead && t >= trail {
            w.write(0b10, 2);
            w.write(x >> trail, 64 - lead - trail);
        } else {
            let sig = 64 - l - t;
            w.write((0b11 << 11) | (u64::from(l) << 6) | u64::from(sig & 63), 13);
            w.write(x >> t, sig);
            lead = l;
            trail = t;
        }
    }
}

/// Decoder state of a Gorilla stream: decodes one value at a time.
struct GorillaDecoder<'a> {
    r: BitReader<'a>,
    prev: u64,
    started: bool,
    lead: u32,
    trail: u32,
}

impl<'a> GorillaDecoder<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        GorillaDecoder { r: BitReader::new(bytes), prev: 0, started: false, lead: NO_WINDOW, trail: 0 }
    }

    #[inline]
    fn next_bits(&mut self) -> Result<u64, CodecError> {
        if !self.started {
            self.started = true;
            self.prev = self.r.read(64)?;
            return Ok(self.prev);
        }
        if !self.r.read_bit()? {
            return Ok(self.prev);
        }
        let x = if !self.r.read_bit()? {
            if self.lead == NO_WINDOW {
                return Err(CodecError::Corrupt("XOR window reused before one was written".into()));
            }
            self.r.read(64 - self.lead - self.trail)? << self.trail
        } else {
            let h = self.r.read(11)? as u32;
            let l = h >> 6;
            let sig = match h & 63 {
                0 => 64,
                s => s,
            };
            if l + sig > 64 {
                return Err(CodecError::Corrupt("XOR window wider than 64 bits".into()));
            }
            let t = 64 - l - sig;
            self.lead = l;
            self.trail = t;
            self.r.read(sig)? << t
        };
        self.prev ^= x;
        Ok(self.prev)
    }
}

fn decode_gorilla(bytes: &[u8], n: usize, out: &mut Vec<f64>) -> Result<(), CodecError> {
    let (n_valid, values_at) = GapMap::new(bytes, n)?.count_valid()?;
    let stream = &bytes[values_at..];
    // The first value takes 64 bits and every further one at least one: refuse a count the bytes cannot
    // hold before reserving room for it.
    if n_valid > 0 && (stream.len() < 8 || n_valid - 1 > (stream.len() - 8) * 8) {
        return Err(CodecError::Truncated);
    }
    if n_valid == 0 && !stream.is_empty() {
        return Err(CodecError::TrailingBytes(stream.len()));
    }
    reserve(out, n)?;
    let mut dec = GorillaDecoder::new(stream);
    let mut gaps = GapMap::new(bytes, n)?;
    let mut decoded = 0;
    loop {
        let (valid, nan) = gaps.next_run()?.unwrap_or((n - decoded, 0));
        for _ in 0..valid {
            out.push(f64::from_bits(dec.next_bits()?));
        }
        out.extend(std::iter::repeat_n(f64::NAN, nan));
        decoded += valid + nan;
        if decoded == n {
            break;
        }
    }
    if n_valid > 0 {
        dec.r.finish()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Pco

/// Values per pco chunk. Pco allows up to 2^24; pages are far smaller, this only bounds huge inputs.
const PCO_CHUNK_MAX: usize = 1 << 20;
/// The largest lookback window (log2) the pco encoder writes; a larger one is refused before pco
/// allocates it.
const PCO_MAX_WINDOW_LOG: u32 = 15;

/// pco's compression level (0–12; its default is 8). Measured on the peer benchmark's random walks (chunks of
/// 1,440 values): level 4 compresses as small as 8 (1.089 B/value) at 2.6× the speed (21 against 8.2 M
/// values/s); level 2 is 1.9 % larger at 3.3×. Any level decodes the same way.
const PCO_LEVEL: usize = 4;

/// Chunks of fewer values are encoded with first-order deltas (`DeltaSpec::TryConsecutive(1)`) rather than
/// letting pco search for the best delta encoding, a search whose cost is per chunk. Measured on the peer
/// benchmark's series at level 4: 64 values 13.5 against 4.8 M values/s for 2.006 against 1.945 bytes per
/// value; 256 values 26 against 8.6 M values/s, the same size. Short pco chunks are what settle merges write
/// of a live cluster's last hours; later merges make them long, and those get the search.
const PCO_QUICK_BELOW: usize = 512;

fn pco_encode(valid: &[f64], out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail, and the configuration is valid for any count from 1 to
    // PCO_CHUNK_MAX: pco has no other reason to return an error here.
    const BUG: &str = "pco refused a valid configuration";
    let fc = FileCompressor::default();
    fc.write_header(&mut *out).expect(BUG);
    for chunk in valid.chunks(PCO_CHUNK_MAX) {
        let mut config = ChunkConfig::default()
            .with_compression_level(PCO_LEVEL)
            .with_paging_spec(PagingSpec::Exact(vec![chunk.len()]));
        if chunk.len() < PCO_QUICK_BELOW {
            config = config.with_delta_spec(DeltaSpec::TryConsecutive(1));
        }
        let mut cc = fc.chunk_compressor(chunk, &config).expect(BUG);
        cc.write_meta(&mut *out).expect(BUG);
        cc.write_page(0, &mut *out).expect(BUG);
    }
}

fn pco_error(e: PcoError) -> CodecError {
    match e.kind {
        ErrorKind::InsufficientData => CodecError::Truncated,
        _ => CodecError::Corrupt(e.message),
    }
}

/// Refuses a pco chunk whose metadata would make pco allocate more than the input can justify: a
/// dictionary (mode 4) longer than the bytes that would hold it. The mode is the low 4 bits of the
/// chunk's first byte, a dictionary's length the next 25 bits (pco writes bits least significant first).
fn pco_precheck_chunk(rest: &[u8]) -> Result<(), CodecError> {
    let Some(&b0) = rest.first() else { return Err(CodecError::Truncated) };
    if b0 & 0x0f == 4 {
        let mut le = [0u8; 4];
        let head = &rest[..rest.len().min(4)];
        le[..head.len()].copy_from_slice(head);
        let dict_len = (u32::from_le_bytes(le) >> 4) & ((1 << 25) - 1);
        if dict_len as usize * 8 > rest.len() {
            return Err(CodecError::Truncated);
        }
    }
    Ok(())
}

fn decode_pco(bytes: &[u8], n: usize, out: &mut Vec<f64>) -> Result<(), CodecError> {
    let (n_valid, values_at) = GapMap::new(bytes, n)?.count_valid()?;
    let stream = &bytes[values_at..];
    // Each pco chunk takes several bytes: refuse a count the bytes cannot hold before reserving room.
    if n_valid.div_ceil(PCO_CHUNK_MAX) > stream.len() {
        return Err(CodecError::Truncated);
    }
    let start = out.len();
    reserve(out, n)?;
    // Decode the non-NaN values to the front of the new region, then spread them out from the back.
    out.resize(start + n, f64::NAN);
    if n_valid == 0 {
        if !stream.is_empty() {
            return Err(CodecError::TrailingBytes(stream.len()));
        }
        return Ok(());
    }
    // The format header: pco >= 4 writes a major and a minor version byte.
    if stream.len() < 2 {
        return Err(CodecError::Truncated);
    }
    if stream[0] < 4 {
        return Err(CodecError::BadHeader("pco format version below 4"));
    }
    let (fd, mut rest) = FileDecompressor::new(stream).map_err(pco_error)?;
    let mut done = 0;
    while done < n_valid {
        let k = (n_valid - done).min(PCO_CHUNK_MAX);
        pco_precheck_chunk(rest)?;
        let (mut cd, after_meta) = fd.chunk_decompressor::<f64, &[u8]>(rest).map_err(pco_error)?;
        if let DeltaEncoding::Lookback { config, .. } = &cd.meta().delta_encoding {
            if config.window_n_log > PCO_MAX_WINDOW_LOG {
                return Err(CodecError::BadHeader("pco lookback window too large"));
            }
        }
        let mut pd = cd.page_decompressor(after_meta, k).map_err(pco_error)?;
        let dst = &mut out[start + done..start + done + k];
        let progress = pd.read(dst).map_err(pco_error)?;
        if progress.n_processed != k || !progress.finished {
            return Err(CodecError::Truncated);
        }
        rest = pd.into_src();
        done += k;
    }
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes(rest.len()));
    }
    // Spread: walk the runs, remember them (at most bytes.len() / 2 of them), then move values back.
    let mut gaps = GapMap::new(bytes, n)?;
    let mut runs = Vec::new();
    while let Some(r) = gaps.next_run()? {
        runs.push(r);
    }
    let region = &mut out[start..];
    let mut src_end = n_valid; // values not yet placed are region[..src_end]
    let mut dst_end = n; // region[dst_end..] is final
                         // The tail after the last gap.
    let covered: usize = runs.iter().map(|(v, g)| v + g).sum();
    let tail = n - covered;
    region.copy_within(src_end - tail..src_end, dst_end - tail);
    src_end -= tail;
    dst_end -= tail;
    for &(valid, nan) in runs.iter().rev() {
        region[dst_end - nan..dst_end].fill(f64::NAN);
        dst_end -= nan;
        region.copy_within(src_end - valid..src_end, dst_end - valid);
        src_end -= valid;
        dst_end -= valid;
    }
    debug_assert_eq!((src_end, dst_end), (0, 0));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Codec; 3] = [Codec::Raw, Codec::Gorilla, Codec::Pco];

    fn same(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| if x.is_nan() { y.is_nan() } else { x.to_bits() == y.to_bits() })
    }

    fn round_trip(codec: Codec, values: &[f64]) -> Result<(), TestCaseError> {
        let mut bytes = vec![0xAA]; // encode appends
        encode(codec, values, &mut bytes);
        let mut out = vec![1.5];
        let r = decode(codec, &bytes[1..], values.len(), &mut out);
        prop_assert_eq!(r, Ok(()), "{:?}", codec);
        prop_assert_eq!(out[0], 1.5);
        prop_assert!(same(values, &out[1..]), "{:?}: {:?} != {:?}", codec, values, &out[1..]);
        // One value more or fewer is refused, and so is a trailing byte.
        prop_assert!(decode(codec, &bytes[1..], values.len() + 1, &mut Vec::new()).is_err());
        if !values.is_empty() {
            prop_assert!(decode(codec, &bytes[1..], values.len() - 1, &mut Vec::new()).is_err());
        }
        bytes.push(0);
        prop_assert!(decode(codec, &bytes[1..], values.len(), &mut Vec::new()).is_err());
        Ok(())
    }

    /// A value from one of the shapes that matter: specials, decimals, integers, anything.
    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            2 => Just(f64::NAN),
            1 => prop_oneof![
                Just(0.0),
                Just(-0.0),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                Just(f64::MIN_POSITIVE / 4.0),
                Just(-f64::MIN_POSITIVE / 3.0),
                Just(f64::from_bits(1)),
                Just(f64::MAX),
                Just(f64::MIN),
            ],
            4 => (0u32..2000).prop_map(|k| f64::from(k) / 100.0),
            4 => (0u32..3000).prop_map(|k| f64::from(k) / 1000.0),
            2 => (0u64..10_000_000_000).prop_map(|k| k as f64),
            2 => any::<u64>().prop_map(f64::from_bits),
        ]
    }

    /// Series with runs: each element repeated a few times, so runs of NaN and of equal values appear.
    fn series() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec((value(), 1usize..8), 0..120)
            .prop_map(|runs| runs.into_iter().flat_map(|(v, k)| std::iter::repeat_n(v, k)).collect())
    }

    fn nan_payloads() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(
            prop_oneof![Just(1.0), (1u64..(1 << 51)).prop_map(|p| f64::from_bits(0x7ff8_0000_0000_0000 | p))],
            0..40,
        )
    }

    proptest! {
        #[test]
        fn raw_round_trips(v in series()) {
            round_trip(Codec::Raw, &v)?;
        }

        #[test]
        fn gorilla_round_trips(v in series()) {
            round_trip(Codec::Gorilla, &v)?;
        }

        #[test]
        fn pco_round_trips(v in series()) {
            round_trip(Codec::Pco, &v)?;
        }

        #[test]
        fn random_walks_round_trip(start in 0u32..1000, steps in prop::collection::vec(-3i32..4, 1..600), scale in prop_oneof![Just(100.0), Just(1000.0)]) {
            let mut k = i64::from(start);
            let v: Vec<f64> = steps.iter().map(|s| { k = (k + i64::from(*s)).max(0); k as f64 / scale }).collect();
            for codec in ALL {
                round_trip(codec, &v)?;
            }
        }

        #[test]
        fn nan_payloads_decode_as_nan(v in nan_payloads()) {
            for codec in ALL {
                round_trip(codec, &v)?;
            }
        }

        #[test]
        fn random_bytes_never_panic(codec in 0u8..3, n in 0usize..600, bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let codec = Codec::from_u8(codec).unwrap();
            let mut out = vec![7.0];
            match decode(codec, &bytes, n, &mut out) {
                Ok(()) => prop_assert_eq!(out.len(), n + 1),
                Err(_) => prop_assert_eq!(out, vec![7.0]),
            }
        }

        #[test]
        fn damaged_encodings_never_panic(
            codec in 0u8..3,
            v in series(),
            cut in any::<prop::sample::Index>(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
            n_delta in -1i64..2,
        ) {
            let codec = Codec::from_u8(codec).unwrap();
            let mut bytes = Vec::new();
            encode(codec, &v, &mut bytes);
            let n = (v.len() as i64 + n_delta).max(0) as usize;
            if !bytes.is_empty() {
                // Truncated at a random point.
                let at = cut.index(bytes.len());
                let r = decode(codec, &bytes[..at], v.len(), &mut Vec::new());
                prop_assert!(r.is_err(), "{:?} decoded from {} of {} bytes", codec, at, bytes.len());
                // Bits flipped.
                let mut bad = bytes.clone();
                for (i, bit) in &flips {
                    let i = i.index(bad.len());
                    bad[i] ^= 1 << bit;
                }
                let mut out = Vec::new();
                if decode(codec, &bad, n, &mut out).is_ok() {
                    prop_assert_eq!(out.len(), n);
                }
            }
        }
    }

    proptest! {
        /// Reaches the value decoders (the gap map's count check stops most random inputs first).
        #[test]
        fn random_streams_after_a_valid_gap_map_never_panic(
            codec in 1u8..3,
            n in 0usize..600,
            pco_header in any::<bool>(),
            stream in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let codec = Codec::from_u8(codec).unwrap();
            let mut bytes = Vec::new();
            write_varint(&mut bytes, n as u64);
            write_varint(&mut bytes, 0);
            if codec == Codec::Pco && pco_header {
                bytes.extend_from_slice(&[4, 1]);
            }
            bytes.extend_from_slice(&stream);
            let mut out = Vec::new();
            if decode(codec, &bytes, n, &mut out).is_ok() {
                prop_assert_eq!(out.len(), n);
            }
        }

        /// Damage confined to the coded values (after the gap map), on data where pco picks its
        /// multiplier, quantization and delta modes.
        #[test]
        fn value_stream_damage_never_panics(
            codec in 1u8..3,
            start in 0u32..1000,
            steps in prop::collection::vec(-3i32..4, 1..700),
            scale in prop_oneof![Just(1.0), Just(100.0), Just(1000.0)],
            flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let codec = Codec::from_u8(codec).unwrap();
            let mut k = i64::from(start);
            let v: Vec<f64> = steps.iter().map(|s| { k = (k + i64::from(*s)).max(0); k as f64 / scale }).collect();
            let mut bytes = Vec::new();
            encode(codec, &v, &mut bytes);
            let (_, at) = GapMap::new(&bytes, v.len()).unwrap().count_valid().unwrap();
            let mut bad = bytes.clone();
            for (i, bit) in &flips {
                let i = at + i.index(bad.len() - at);
                bad[i] ^= 1 << bit;
            }
            let mut out = Vec::new();
            if decode(codec, &bad, v.len(), &mut out).is_ok() {
                prop_assert_eq!(out.len(), v.len());
            }
            let cut = at + cut.index(bytes.len() - at);
            prop_assert!(decode(codec, &bytes[..cut], v.len(), &mut Vec::new()).is_err());
        }
    }

    #[test]
    fn empty_and_all_nan() {
        for codec in ALL {
            let mut bytes = Vec::new();
            encode(codec, &[], &mut bytes);
            let mut out = Vec::new();
            assert_eq!(decode(codec, &bytes, 0, &mut out), Ok(()));
            assert!(out.is_empty());
            for n in [1, 2, 512, 4096] {
                let v = vec![f64::NAN; n];
                let mut bytes = Vec::new();
                encode(codec, &v, &mut bytes);
                if codec != Codec::Raw {
                    assert!(bytes.len() <= 6, "{codec:?}: {} bytes for {n} NaN", bytes.len());
                }
                let mut out = Vec::new();
                assert_eq!(decode(codec, &bytes, n, &mut out), Ok(()));
                assert!(same(&v, &out));
            }
        }
    }

    #[test]
    fn specials_round_trip() {
        let v = [
            -0.0,
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::from_bits(1),
            f64::from_bits(0x000f_ffff_ffff_ffff),
            -f64::from_bits(3),
            f64::MAX,
            f64::MIN_POSITIVE,
            0.1,
            0.12,
            0.123,
        ];
        for codec in ALL {
            round_trip(codec, &v).unwrap();
        }
        // Many of each, so pco chooses its non-classic modes.
        let long: Vec<f64> = (0..4096).map(|i| v[i % v.len()]).collect();
        for codec in ALL {
            round_trip(codec, &long).unwrap();
        }
    }

    #[test]
    fn pages_larger_than_a_pco_chunk_round_trip() {
        let v: Vec<f64> =
            (0..PCO_CHUNK_MAX + 1000).map(|i| if i % 977 == 0 { f64::NAN } else { (i % 300) as f64 / 100.0 }).collect();
        round_trip(Codec::Pco, &v).unwrap();
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        for codec in ALL {
            let mut bytes = Vec::new();
            encode(codec, &[1.0, 2.0], &mut bytes);
            for n in [usize::MAX, usize::MAX / 8, 1 << 40] {
                assert!(decode(codec, &bytes, n, &mut Vec::new()).is_err());
            }
        }
        // A gap map that claims a huge run is a count mismatch, not an allocation.
        let mut bytes = Vec::new();
        write_varint(&mut bytes, 10);
        write_varint(&mut bytes, 1);
        write_varint(&mut bytes, 0);
        write_varint(&mut bytes, u64::MAX);
        assert!(matches!(decode(Codec::Gorilla, &bytes, 10, &mut Vec::new()), Err(CodecError::CountMismatch { .. })));
        assert!(matches!(decode(Codec::Pco, &bytes, 10, &mut Vec::new()), Err(CodecError::CountMismatch { .. })));
    }

    #[test]
    fn pco_hostile_dictionary_is_refused() {
        // A gap map, a pco header, then a chunk in dictionary mode claiming 2^25 - 1 entries in 8 bytes.
        let mut bytes = vec![1, 0];
        let mut v = Vec::new();
        pco_encode(&[1.0], &mut v);
        bytes.extend_from_slice(&v[..2]);
        bytes.extend_from_slice(&[0xf4, 0xff, 0xff, 0x1f, 0, 0, 0, 0]);
        assert_eq!(decode(Codec::Pco, &bytes, 1, &mut Vec::new()), Err(CodecError::Truncated));
    }

    #[test]
    fn codec_discriminants() {
        for codec in ALL {
            assert_eq!(Codec::from_u8(codec as u8), Some(codec));
        }
        assert_eq!(Codec::from_u8(3), None);
    }

    #[test]
    fn bit_io_round_trips_all_widths() {
        let mut bytes = Vec::new();
        let mut w = BitWriter::new(&mut bytes);
        let items: Vec<(u64, u32)> = (0..=64u32)
            .flat_map(|n| {
                let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
                [(0x9e37_79b9_7f4a_7c15 & mask, n), (mask, n), (1 & mask, n)]
            })
            .collect();
        for &(v, n) in &items {
            w.write(v, n);
        }
        w.finish();
        let mut r = BitReader::new(&bytes);
        for &(v, n) in &items {
            assert_eq!(r.read(n), Ok(v), "width {n}");
        }
        assert_eq!(r.finish(), Ok(()));
    }
}
