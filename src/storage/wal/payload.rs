//! WAL record payloads: the codec of `format/wal.md` ("Payloads").
//!
//! Every integer is little-endian; `varint` is unsigned LEB128 and `zigzag` maps signed to unsigned as in
//! protobuf. Decoding treats bytes as untrusted: every length is bounds-checked and a payload must be consumed
//! exactly.

use crate::storage::error::CorruptionKind;
use crate::storage::{Aggregation, MetricConfig, SeriesId};

/// Record kinds (the `kind` byte of a frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A metric declaration.
    DeclareMetric = 1,
    /// New series in the registry.
    DefineSeries = 2,
    /// Samples.
    Samples = 3,
    /// Free whole pages older than a time.
    Free = 4,
    /// Refuse writes to whole pages older than a time, keeping the pages (before they are compacted).
    Seal = 5,
}

impl Kind {
    /// The kind for a byte, if known.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::DeclareMetric,
            2 => Kind::DefineSeries,
            3 => Kind::Samples,
            4 => Kind::Free,
            5 => Kind::Seal,
            _ => return None,
        })
    }
}

/// One sample: series, timestamp in seconds, value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// The series.
    pub series: SeriesId,
    /// Unix seconds.
    pub ts: i64,
    /// The value (NaN allowed; stored bit for bit).
    pub value: f64,
}

/// A series definition: id, metric id and the canonical path bytes of `keys::SeriesPath::encode`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesDef {
    /// The id given to the series.
    pub id: SeriesId,
    /// The metric's id.
    pub metric: u32,
    /// Canonical path bytes.
    pub path: Vec<u8>,
}

/// A decoded record payload.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// `DeclareMetric`.
    DeclareMetric {
        /// Dense metric id.
        id: u32,
        /// Metric name.
        name: String,
        /// Frequency and aggregation.
        config: MetricConfig,
    },
    /// `DefineSeries`.
    DefineSeries(Vec<SeriesDef>),
    /// `Samples`.
    Samples(Vec<Sample>),
    /// `Free`: for each series, drop whole pages whose every slot lies before the time.
    Free(Vec<(SeriesId, i64)>),
    /// `Seal`: for each series, refuse writes to whole pages whose every slot lies before the time; the
    /// pages stay.
    Seal(Vec<(SeriesId, i64)>),
}

fn bad(msg: impl Into<String>) -> CorruptionKind {
    CorruptionKind::Invalid(msg.into())
}

/// Appends an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Bounds-checked reader over a payload.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }
    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CorruptionKind> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(CorruptionKind::OutOfBounds(format!(
                "need {n} bytes at payload offset {}, have {}",
                self.pos,
                self.buf.len() - self.pos
            )));
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], CorruptionKind> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    /// Takes a `u8`.
    pub fn u8(&mut self) -> Result<u8, CorruptionKind> {
        Ok(self.array::<1>()?[0])
    }
    /// Takes a little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, CorruptionKind> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// Takes a little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, CorruptionKind> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Takes a little-endian `i64`.
    pub fn i64(&mut self) -> Result<i64, CorruptionKind> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// Takes an unsigned LEB128 varint of at most 10 bytes.
    pub fn varint(&mut self) -> Result<u64, CorruptionKind> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(bad("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint longer than 10 bytes"))
    }
    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Errors unless every byte was consumed.
    pub fn finish(&self) -> Result<(), CorruptionKind> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(bad(format!("{} trailing bytes in payload", self.remaining())))
        }
    }
}

fn aggregation_byte(a: Aggregation) -> u8 {
    match a {
        Aggregation::None => 0,
        Aggregation::Sum => 1,
        Aggregation::Avg => 2,
        Aggregation::Max => 3,
        Aggregation::Min => 4,
    }
}

/// Decodes an aggregation byte (`format/wal.md`, `format/manifest.md`): 0 None, 1 Sum, 2 Avg, 3 Max, 4 Min;
/// any other byte is refused.
pub fn aggregation_from(b: u8) -> Result<Aggregation, CorruptionKind> {
    Ok(match b {
        0 => Aggregation::None,
        1 => Aggregation::Sum,
        2 => Aggregation::Avg,
        3 => Aggregation::Max,
        4 => Aggregation::Min,
        other => return Err(bad(format!("unknown aggregation {other}"))),
    })
}

/// Encodes aggregation as its byte.
pub fn aggregation_to(a: Aggregation) -> u8 {
    aggregation_byte(a)
}

/// Encodes a `DeclareMetric` payload.
pub fn encode_declare_metric(out: &mut Vec<u8>, id: u32, name: &str, config: MetricConfig) {
    out.extend_from_slice(&id.to_le_bytes());
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&config.frequency.to_le_bytes());
    out.push(aggregation_byte(config.aggregation));
}

/// Encodes a `DefineSeries` payload.
pub fn encode_define_series(out: &mut Vec<u8>, defs: &[SeriesDef]) {
    out.extend_from_slice(&(defs.len() as u32).to_le_bytes());
    for d in defs {
        out.extend_from_slice(&d.id.0.to_le_bytes());
        out.extend_from_slice(&d.metric.to_le_bytes());
        out.extend_from_slice(&(d.path.len() as u16).to_le_bytes());
        out.extend_from_slice(&d.path);
    }
}

/// Encodes a `Samples` payload: `count u32 | base_ts i64 | (varint series, zigzag-varint ts-base, f64)*`.
/// `base_ts` is the first sample's timestamp.
pub fn encode_samples(out: &mut Vec<u8>, samples: &[Sample]) {
    let base = samples.first().map_or(0, |s| s.ts);
    out.reserve(12 + samples.len() * 13);
    out.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    out.extend_from_slice(&base.to_le_bytes());
    for s in samples {
        put_varint(out, u64::from(s.series.0));
        put_varint(out, zigzag(s.ts.wrapping_sub(base)));
        out.extend_from_slice(&s.value.to_bits().to_le_bytes());
    }
}

/// Encodes a `Free` (or `Seal`) payload: `count u32 | (series u32, before i64)*`.
pub fn encode_free(out: &mut Vec<u8>, items: &[(SeriesId, i64)]) {
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for (s, t) in items {
        out.extend_from_slice(&s.0.to_le_bytes());
        out.extend_from_slice(&t.to_le_bytes());
    }
}

/// Decodes a `Samples` payload, calling `f` for each sample without allocating.
pub fn for_each_sample(payload: &[u8], mut f: impl FnMut(Sample)) -> Result<(), CorruptionKind> {
    let mut c = Cursor::new(payload);
    let count = c.u32()?;
    let base = c.i64()?;
    // Each sample takes at least 10 bytes; reject counts the payload cannot hold before looping.
    if (count as usize).saturating_mul(10) > c.remaining() {
        return Err(CorruptionKind::OutOfBounds(format!("{count} samples in {} bytes", c.remaining())));
    }
    for _ in 0..count {
        let series = c.varint()?;
        let series = u32::try_from(series).map_err(|_| bad(format!("series id {series} exceeds u32")))?;
        let ts = base.wrapping_add(unzigzag(c.varint()?));
        let value = f64::from_bits(c.u64()?);
        f(Sample { series: SeriesId(series), ts, value });
    }
    c.finish()
}

/// Decodes a payload of the given kind.
pub fn decode(kind: u8, payload: &[u8]) -> Result<Payload, CorruptionKind> {
    let Some(kind) = Kind::from_u8(kind) else {
        return Err(bad(format!("unknown record kind {kind}")));
    };
    let mut c = Cursor::new(payload);
    let p = match kind {
        Kind::DeclareMetric => {
            let id = c.u32()?;
            let n = c.u8()? as usize;
            let name = std::str::from_utf8(c.take(n)?).map_err(|_| bad("metric name is not UTF-8"))?;
            let frequency = c.i64()?;
            if frequency < 1 {
                return Err(bad(format!("metric frequency {frequency}")));
            }
            let aggregation = aggregation_from(c.u8()?)?;
            Payload::DeclareMetric { id, name: name.to_owned(), config: MetricConfig { frequency, aggregation } }
        }
        Kind::DefineSeries => {
            let count = c.u32()? as usize;
            if count.saturating_mul(10) > c.remaining() {
                return Err(CorruptionKind::OutOfBounds(format!("{count} series in {} bytes", c.remaining())));
            }
            let mut defs = Vec::with_capacity(count);
            for _ in 0..count {
                let id = SeriesId(c.u32()?);
                let metric = c.u32()?;
                let n = u16::from_le_bytes(c.array()?) as usize;
                let path = c.take(n)?.to_vec();
                defs.push(SeriesDef { id, metric, path });
            }
            Payload::DefineSeries(defs)
        }
        Kind::Samples => {
            let mut v = Vec::new();
            for_each_sample(payload, |s| v.push(s))?;
            return Ok(Payload::Samples(v));
        }
        Kind::Free | Kind::Seal => {
            let count = c.u32()? as usize;
            if count.saturating_mul(12) > c.remaining() {
                return Err(CorruptionKind::OutOfBounds(format!("{count} frees in {} bytes", c.remaining())));
            }
            let mut v = Vec::with_capacity(count);
            for _ in 0..count {
                v.push((SeriesId(c.u32()?), c.i64()?));
            }
            if kind == Kind::Seal {
                Payload::Seal(v)
            } else {
                Payload::Free(v)
            }
        }
    };
    c.finish()?;
    Ok(p)
}

/// Encodes a payload (the inverse of [`decode`]); returns its kind byte.
pub fn encode(out: &mut Vec<u8>, p: &Payload) -> u8 {
    match p {
        Payload::DeclareMetric { id, name, config } => {
            encode_declare_metric(out, *id, name, *config);
            Kind::DeclareMetric as u8
        }
        Payload::DefineSeries(d) => {
            encode_define_series(out, d);
            Kind::DefineSeries as u8
        }
        Payload::Samples(s) => {
            encode_samples(out, s);
            Kind::Samples as u8
        }
        Payload::Free(f) => {
            encode_free(out, f);
            Kind::Free as u8
        }
        Payload::Seal(f) => {
            encode_free(out, f);
            Kind::Seal as u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> impl Strategy<Value = Vec<Sample>> {
        proptest::collection::vec(
            (any::<u32>(), any::<i64>(), any::<u64>()).prop_map(|(s, ts, v)| Sample {
                series: SeriesId(s),
                ts,
                value: f64::from_bits(v),
            }),
            0..50,
        )
    }

    fn same_bits(a: &[Sample], b: &[Sample]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.series == y.series && x.ts == y.ts && x.value.to_bits() == y.value.to_bits())
    }

    proptest! {
        #[test]
        fn samples_round_trip(s in samples()) {
            let mut buf = Vec::new();
            let kind = encode(&mut buf, &Payload::Samples(s.clone()));
            let Ok(Payload::Samples(back)) = decode(kind, &buf) else { panic!("decode failed") };
            prop_assert!(same_bits(&s, &back));
        }

        #[test]
        fn decode_never_panics(kind in 0u8..6, bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = decode(kind, &bytes);
        }

        #[test]
        fn free_round_trip(items in proptest::collection::vec((any::<u32>(), any::<i64>()), 0..20)) {
            let items: Vec<_> = items.into_iter().map(|(s, t)| (SeriesId(s), t)).collect();
            let mut buf = Vec::new();
            let kind = encode(&mut buf, &Payload::Free(items.clone()));
            prop_assert_eq!(decode(kind, &buf), Ok(Payload::Free(items)));
        }
    }

    #[test]
    fn declare_and_define_round_trip() {
        let p = Payload::DeclareMetric {
            id: 3,
            name: "cpu_load".into(),
            config: MetricConfig { frequency: 60, aggregation: Aggregation::Avg },
        };
        let mut buf = Vec::new();
        let k = encode(&mut buf, &p);
        assert_eq!(decode(k, &buf), Ok(p));
        let d = Payload::DefineSeries(vec![SeriesDef { id: SeriesId(9), metric: 3, path: vec![1, 2, 3] }]);
        let mut buf = Vec::new();
        let k = encode(&mut buf, &d);
        assert_eq!(decode(k, &buf), Ok(d));
    }

    #[test]
    fn every_aggregation_byte_round_trips_and_others_are_refused() {
        for (i, a) in Aggregation::ALL.into_iter().enumerate() {
            assert_eq!(aggregation_to(a), i as u8, "{a:?}");
            assert_eq!(aggregation_from(i as u8), Ok(a));
            let p = Payload::DeclareMetric {
                id: 1,
                name: "m".into(),
                config: MetricConfig { frequency: 10, aggregation: a },
            };
            let mut buf = Vec::new();
            let k = encode(&mut buf, &p);
            assert_eq!(buf.last(), Some(&(i as u8)), "the aggregation is the payload's last byte");
            assert_eq!(decode(k, &buf), Ok(p));
        }
        for b in 5..=u8::MAX {
            assert!(aggregation_from(b).is_err(), "byte {b}");
            let mut buf = Vec::new();
            encode_declare_metric(&mut buf, 0, "x", MetricConfig { frequency: 60, aggregation: Aggregation::Sum });
            *buf.last_mut().expect("payload") = b;
            assert!(decode(Kind::DeclareMetric as u8, &buf).is_err(), "byte {b}");
        }
    }

    #[test]
    fn trailing_bytes_and_bad_frequency_are_refused() {
        let mut buf = Vec::new();
        encode_free(&mut buf, &[(SeriesId(1), 5)]);
        buf.push(0);
        assert!(decode(Kind::Free as u8, &buf).is_err());
        let mut buf = Vec::new();
        encode_declare_metric(&mut buf, 0, "x", MetricConfig { frequency: 0, aggregation: Aggregation::Sum });
        assert!(decode(Kind::DeclareMetric as u8, &buf).is_err());
        assert!(decode(99, &[]).is_err());
    }
}
