//! Golden bytes of the on-disk formats: `format/wal.md`, `format/head.md`, `format/manifest.md`,
//! `format/block.md`, `format/checkpoint.md`.
//!
//! Every test decodes bytes the crate wrote with a little-endian parser written here from the specs alone
//! (module `spec`), never with the crate's decoders, and checks every CRC32 with `crc32fast` itself. Each
//! format also has one literal byte dump for a fixed input, so that any change of the format fails here
//! loudly: such a change needs a version bump, a spec update and new golden bytes (STYLE.md, "Format specs").

use std::path::Path;

use silt::keys::SeriesPath;
use silt::storage::head::file::{head_file_name, HeadFileHeader};
use silt::storage::head::{HeadState, PageRef, SeriesState};
use silt::storage::manifest::{Manifest, MetricEntry, SeriesEntry};
use silt::storage::wal::payload::{self, Payload, Sample, SeriesDef};
use silt::storage::wal::record::encode_frame;
use silt::storage::wal::segment::{segment_name, SegmentHeader};
use silt::{Aggregation, Batch, Db, Durability, HostKey, JobKey, Key, Lsn, MetricConfig, Options, SeriesId};
use zerocopy::IntoBytes;

/// A reader of the formats written from the specs, independent of the crate's codecs.
mod spec {
    /// CRC32 as `format/README.md` defines it (IEEE, as `crc32fast` computes it).
    pub fn crc(parts: &[&[u8]]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        for p in parts {
            h.update(p);
        }
        h.finalize()
    }

    /// A little-endian cursor that panics (fails the test) on any read past the end.
    pub struct Le<'a> {
        buf: &'a [u8],
        pub pos: usize,
    }

    impl<'a> Le<'a> {
        pub fn new(buf: &'a [u8]) -> Self {
            Le { buf, pos: 0 }
        }
        pub fn take(&mut self, n: usize) -> &'a [u8] {
            let s = self
                .buf
                .get(self.pos..self.pos + n)
                .unwrap_or_else(|| panic!("read of {n} bytes at {} runs past {}", self.pos, self.buf.len()));
            self.pos += n;
            s
        }
        pub fn arr<const N: usize>(&mut self) -> [u8; N] {
            self.take(N).try_into().unwrap()
        }
        pub fn u8(&mut self) -> u8 {
            self.take(1)[0]
        }
        pub fn u16(&mut self) -> u16 {
            u16::from_le_bytes(self.arr())
        }
        pub fn u32(&mut self) -> u32 {
            u32::from_le_bytes(self.arr())
        }
        pub fn u64(&mut self) -> u64 {
            u64::from_le_bytes(self.arr())
        }
        pub fn i64(&mut self) -> i64 {
            i64::from_le_bytes(self.arr())
        }
        /// Unsigned LEB128, at most 10 bytes.
        pub fn varint(&mut self) -> u64 {
            let mut v = 0u64;
            for i in 0..10 {
                let b = self.u8();
                v |= u64::from(b & 0x7f) << (7 * i);
                if b & 0x80 == 0 {
                    return v;
                }
            }
            panic!("varint longer than 10 bytes");
        }
        pub fn remaining(&self) -> usize {
            self.buf.len() - self.pos
        }
        pub fn done(&self) {
            assert_eq!(self.remaining(), 0, "trailing bytes");
        }
    }

    pub fn unzigzag(v: u64) -> i64 {
        ((v >> 1) as i64) ^ -((v & 1) as i64)
    }

    pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub fn zigzag(v: i64) -> u64 {
        ((v << 1) ^ (v >> 63)) as u64
    }

    // ---- wal.md ----

    #[derive(Debug, PartialEq)]
    pub struct SegmentHeader {
        pub magic: [u8; 4],
        pub version: u32,
        pub seq: u64,
        pub first_lsn: u64,
        pub reserved: u32,
        pub crc: u32,
    }

    /// Parses the 32-byte segment header and checks its CRC (bytes 0..28).
    pub fn segment_header(b: &[u8]) -> SegmentHeader {
        let mut r = Le::new(&b[..32]);
        let h = SegmentHeader {
            magic: r.arr(),
            version: r.u32(),
            seq: r.u64(),
            first_lsn: r.u64(),
            reserved: r.u32(),
            crc: r.u32(),
        };
        r.done();
        assert_eq!(h.crc, crc(&[&b[..28]]), "segment header CRC");
        h
    }

    #[derive(Debug, PartialEq)]
    pub struct Frame {
        pub offset: usize,
        pub len: u32,
        pub lsn: u64,
        pub kind: u8,
        pub payload: Vec<u8>,
    }

    /// Frames a whole segment as `wal.md` says: frames from offset 32, each 24-byte header + payload + zero
    /// padding to 8, up to an all-zero header (or fewer than 24 bytes left, all zero). Asserts every CRC,
    /// every padding byte and that everything after the end is zero. Returns the frames and the end offset.
    pub fn frames(seg: &[u8]) -> (Vec<Frame>, usize) {
        let mut out = Vec::new();
        let mut off = 32;
        loop {
            assert_eq!(off % 8, 0, "frame at {off} not 8-aligned");
            let rest = &seg[off.min(seg.len())..];
            if rest.len() < 24 || rest[..24].iter().all(|&b| b == 0) {
                assert!(rest.iter().all(|&b| b == 0), "non-zero bytes after the end marker at {off}");
                return (out, off);
            }
            let mut r = Le::new(&rest[..24]);
            let stored = r.u32();
            let len = r.u32();
            let lsn = r.u64();
            let kind = r.u8();
            let reserved: [u8; 7] = r.arr();
            assert_eq!(reserved, [0; 7], "frame reserved bytes");
            assert!((1..=16 << 20).contains(&len), "frame length {len}");
            let payload = &rest[24..24 + len as usize];
            assert_eq!(stored, crc(&[&rest[4..24], payload]), "frame CRC at {off}");
            let total = (24 + len as usize).div_ceil(8) * 8;
            assert!(rest[24 + len as usize..total].iter().all(|&b| b == 0), "padding at {off}");
            out.push(Frame { offset: off, len, lsn, kind, payload: payload.to_vec() });
            off += total;
        }
    }

    #[derive(Debug, PartialEq)]
    pub enum Record {
        DeclareMetric {
            id: u32,
            name: String,
            frequency: i64,
            aggregation: u8,
        },
        DefineSeries(Vec<(u32, u32, Vec<u8>)>),
        /// (series, ts, value bits)
        Samples(Vec<(u32, i64, u64)>),
        Free(Vec<(u32, i64)>),
        Seal(Vec<(u32, i64)>),
    }

    /// Decodes a payload by its kind byte, consuming it exactly.
    pub fn record(kind: u8, p: &[u8]) -> Record {
        let mut r = Le::new(p);
        let rec = match kind {
            1 => {
                let id = r.u32();
                let n = r.u8() as usize;
                let name = String::from_utf8(r.take(n).to_vec()).unwrap();
                Record::DeclareMetric { id, name, frequency: r.i64(), aggregation: r.u8() }
            }
            2 => {
                let count = r.u32();
                let defs = (0..count)
                    .map(|_| {
                        let id = r.u32();
                        let metric = r.u32();
                        let n = r.u16() as usize;
                        (id, metric, r.take(n).to_vec())
                    })
                    .collect();
                Record::DefineSeries(defs)
            }
            3 => {
                let count = r.u32();
                let base = r.i64();
                let s = (0..count)
                    .map(|_| {
                        let series = u32::try_from(r.varint()).unwrap();
                        let ts = base.wrapping_add(unzigzag(r.varint()));
                        (series, ts, r.u64())
                    })
                    .collect();
                Record::Samples(s)
            }
            4 => {
                let count = r.u32();
                Record::Free((0..count).map(|_| (r.u32(), r.i64())).collect())
            }
            5 => {
                let count = r.u32();
                Record::Seal((0..count).map(|_| (r.u32(), r.i64())).collect())
            }
            k => panic!("unknown kind {k}"),
        };
        r.done();
        rec
    }

    /// Builds one frame as `wal.md` describes it.
    pub fn frame(lsn: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut tail = Vec::new();
        tail.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        tail.extend_from_slice(&lsn.to_le_bytes());
        tail.push(kind);
        tail.extend_from_slice(&[0; 7]);
        let mut out = crc(&[&tail, payload]).to_le_bytes().to_vec();
        out.extend_from_slice(&tail);
        out.extend_from_slice(payload);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        out
    }

    // ---- head.md ----

    #[derive(Debug, PartialEq)]
    pub struct HeadHeader {
        pub magic: [u8; 4],
        pub version: u32,
        pub index: u32,
        pub page_bytes: u32,
        pub pages: u32,
        pub reserved: [u8; 8],
        pub crc: u32,
    }

    /// Parses the 32-byte head file header and checks its CRC (bytes 0..28).
    pub fn head_header(b: &[u8]) -> HeadHeader {
        let mut r = Le::new(&b[..32]);
        let h = HeadHeader {
            magic: r.arr(),
            version: r.u32(),
            index: r.u32(),
            page_bytes: r.u32(),
            pages: r.u32(),
            reserved: r.arr(),
            crc: r.u32(),
        };
        r.done();
        assert_eq!(h.crc, crc(&[&b[..28]]), "head header CRC");
        h
    }

    /// The bits of slot `slot` of page `page` of a head file.
    pub fn slot(file: &[u8], page: u32, slot: usize) -> u64 {
        let off = page as usize * 4096 + slot * 8;
        u64::from_le_bytes(file[off..off + 8].try_into().unwrap())
    }

    // ---- manifest.md ----

    #[derive(Debug, PartialEq)]
    pub struct Series {
        pub metric: u32,
        pub origin: i64,
        pub floor: i64,
        pub page_count: u32,
        pub path: Vec<u8>,
    }

    #[derive(Debug, PartialEq)]
    pub struct Desc {
        pub no: u32,
        pub series: u32,
        pub start: i64,
        pub prev: u32,
        pub len: u16,
        pub pad: [u8; 2],
    }

    #[derive(Debug, PartialEq)]
    pub struct Manifest {
        pub magic: [u8; 4],
        pub version: u32,
        pub checkpoint_lsn: u64,
        pub wal_seq: u64,
        pub pages_per_file: u32,
        pub files: u32,
        pub hwm: u32,
        /// Values per head page (version 2; reserved in version 1).
        pub page_slots: u32,
        /// (name, frequency, aggregation byte)
        pub metrics: Vec<(String, i64, u8)>,
        pub series: Vec<Series>,
        pub pages: Vec<Desc>,
        pub free: Vec<u32>,
        pub crc: u32,
    }

    /// Parses a whole manifest; checks the trailer CRC and that the sections fill the file exactly.
    pub fn manifest(b: &[u8]) -> Manifest {
        let body = &b[..b.len() - 4];
        let mut r = Le::new(body);
        let magic = r.arr();
        let version = r.u32();
        let checkpoint_lsn = r.u64();
        let wal_seq = r.u64();
        let pages_per_file = r.u32();
        let files = r.u32();
        let hwm = r.u32();
        let n_metrics = r.u32();
        let n_series = r.u32();
        let n_pages = r.u32();
        let n_free = r.u32();
        let page_slots = r.u32();
        assert_eq!(r.pos, 56, "fixed header length");
        let metrics = (0..n_metrics)
            .map(|_| {
                let n = r.u8() as usize;
                let name = String::from_utf8(r.take(n).to_vec()).unwrap();
                (name, r.i64(), r.u8())
            })
            .collect();
        let series = (0..n_series)
            .map(|_| {
                let metric = r.u32();
                let origin = r.i64();
                let floor = r.i64();
                let page_count = r.u32();
                let n = r.u16() as usize;
                Series { metric, origin, floor, page_count, path: r.take(n).to_vec() }
            })
            .collect();
        let pages = (0..n_pages)
            .map(|_| Desc { no: r.u32(), series: r.u32(), start: r.i64(), prev: r.u32(), len: r.u16(), pad: r.arr() })
            .collect();
        let free = (0..n_free).map(|_| r.u32()).collect();
        r.done();
        let crc_stored = u32::from_le_bytes(b[b.len() - 4..].try_into().unwrap());
        assert_eq!(crc_stored, crc(&[body]), "manifest trailer CRC");
        Manifest {
            magic,
            version,
            checkpoint_lsn,
            wal_seq,
            pages_per_file,
            files,
            hwm,
            page_slots,
            metrics,
            series,
            pages,
            free,
            crc: crc_stored,
        }
    }

    // ---- canonical series path (keys::SeriesPath::encode) ----

    /// `(namespace tag, segments)`, consuming the bytes exactly.
    pub fn path(b: &[u8]) -> (u8, Vec<String>) {
        let mut r = Le::new(b);
        let tag = r.u8();
        let count = r.u8();
        let segs = (0..count)
            .map(|_| {
                let n = r.u8() as usize;
                String::from_utf8(r.take(n).to_vec()).unwrap()
            })
            .collect();
        r.done();
        (tag, segs)
    }
}

/// Bytes from an annotated hex dump: `//` starts a comment, whitespace is ignored.
fn unhex(s: &str) -> Vec<u8> {
    let digits: String = s
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap()).collect()
}

fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| c.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

const T: i64 = 1_700_000_000;

fn host_key() -> HostKey {
    HostKey::new("emmy", "n0001").and_then(|k| k.component("hwthread", 3)).unwrap()
}

fn host_path() -> Vec<u8> {
    host_key().path().to_bytes()
}

fn job_path() -> Vec<u8> {
    JobKey::new("wordcount", "map", 7).unwrap().path().to_bytes()
}

/// `wal.md`: a segment header for segment 1 and one frame of each record kind, as the crate writes them.
const WAL_GOLDEN: &str = "
    // segment header, 32 bytes
    53 4c 54 57              // magic \"SLTW\"
    02 00 00 00              // version 2
    01 00 00 00 00 00 00 00  // seq 1
    01 00 00 00 00 00 00 00  // first_lsn 1
    00 00 00 00              // reserved
    18 a1 61 bb              // CRC32 of bytes 0..28
    // frame at 32: DeclareMetric, payload 22 bytes, padding 2
    8e 6c 18 3b              // CRC32 of bytes 4..24 of the frame and the payload
    16 00 00 00              // len 22
    01 00 00 00 00 00 00 00  // lsn 1
    01                       // kind 1 = DeclareMetric
    00 00 00 00 00 00 00     // reserved
    00 00 00 00              // metric id 0
    08 63 70 75 5f 6c 6f 61 64  // name_len 8, \"cpu_load\"
    3c 00 00 00 00 00 00 00  // frequency 60
    02                       // aggregation 2 = Avg
    00 00                    // padding
    // frame at 80: DefineSeries, payload 37 bytes, padding 3
    5c 63 f9 37  25 00 00 00  02 00 00 00 00 00 00 00  02  00 00 00 00 00 00 00
    01 00 00 00              // count 1
    00 00 00 00              // series id 0
    00 00 00 00              // metric id 0
    17 00                    // path_len 23
    01 03 04 65 6d 6d 79 05 6e 30 30 30 31 09 68 77 74 68 72 65 61 64 33  // host:emmy/n0001/hwthread3
    00 00 00                 // padding
    // frame at 144: Samples, payload 43 bytes, padding 5
    7d 80 4b 25  2b 00 00 00  03 00 00 00 00 00 00 00  03  00 00 00 00 00 00 00
    03 00 00 00              // count 3
    00 f1 53 65 00 00 00 00  // base_ts 1700000000
    00     00     00 00 00 00 00 00 e0 3f  // series 0, zigzag(0), 0.5
    00     78     00 00 00 00 00 00 f8 3f  // series 0, zigzag(+60) = 120, 1.5
    ac 02  77     00 00 00 00 00 00 02 c0  // series 300 (varint), zigzag(-60) = 119, -2.25
    00 00 00 00 00           // padding
    // frame at 216: Free, payload 16 bytes, no padding
    2f 57 72 82  10 00 00 00  04 00 00 00 00 00 00 00  04  00 00 00 00 00 00 00
    01 00 00 00              // count 1
    00 00 00 00              // series 0
    e2 68 54 65 00 00 00 00  // before 1700030690
    // frame at 256: Seal, payload 16 bytes, no padding
    58 df d1 d2  10 00 00 00  05 00 00 00 00 00 00 00  05  00 00 00 00 00 00 00
    01 00 00 00              // count 1
    01 00 00 00              // series 1
    e2 e0 54 65 00 00 00 00  // before 1700061410
";

/// Version 1 of the golden segment (silt 0.1.0, record kinds 1-4): it must still be read.
const WAL_GOLDEN_V1: &str = "
    // segment header, 32 bytes
    53 4c 54 57              // magic \"SLTW\"
    01 00 00 00              // version 1
    01 00 00 00 00 00 00 00  // seq 1
    01 00 00 00 00 00 00 00  // first_lsn 1
    00 00 00 00              // reserved
    30 08 7f e3              // CRC32 of bytes 0..28
    // frame at 32: DeclareMetric, payload 22 bytes, padding 2
    8e 6c 18 3b              // CRC32 of bytes 4..24 of the frame and the payload
    16 00 00 00              // len 22
    01 00 00 00 00 00 00 00  // lsn 1
    01                       // kind 1 = DeclareMetric
    00 00 00 00 00 00 00     // reserved
    00 00 00 00              // metric id 0
    08 63 70 75 5f 6c 6f 61 64  // name_len 8, \"cpu_load\"
    3c 00 00 00 00 00 00 00  // frequency 60
    02                       // aggregation 2 = Avg
    00 00                    // padding
    // frame at 80: DefineSeries, payload 37 bytes, padding 3
    5c 63 f9 37  25 00 00 00  02 00 00 00 00 00 00 00  02  00 00 00 00 00 00 00
    01 00 00 00              // count 1
    00 00 00 00              // series id 0
    00 00 00 00              // metric id 0
    17 00                    // path_len 23
    01 03 04 65 6d 6d 79 05 6e 30 30 30 31 09 68 77 74 68 72 65 61 64 33  // host:emmy/n0001/hwthread3
    00 00 00                 // padding
    // frame at 144: Samples, payload 43 bytes, padding 5
    7d 80 4b 25  2b 00 00 00  03 00 00 00 00 00 00 00  03  00 00 00 00 00 00 00
    03 00 00 00              // count 3
    00 f1 53 65 00 00 00 00  // base_ts 1700000000
    00     00     00 00 00 00 00 00 e0 3f  // series 0, zigzag(0), 0.5
    00     78     00 00 00 00 00 00 f8 3f  // series 0, zigzag(+60) = 120, 1.5
    ac 02  77     00 00 00 00 00 00 02 c0  // series 300 (varint), zigzag(-60) = 119, -2.25
    00 00 00 00 00           // padding
    // frame at 216: Free, payload 16 bytes, no padding
    2f 57 72 82  10 00 00 00  04 00 00 00 00 00 00 00  04  00 00 00 00 00 00 00
    01 00 00 00              // count 1
    00 00 00 00              // series 0
    e2 68 54 65 00 00 00 00  // before 1700030690
";

/// `head.md`: the header of head file 7 of 16 pages.
const HEAD_GOLDEN: &str = "
    53 4c 54 48              // magic \"SLTH\"
    01 00 00 00              // version 1
    07 00 00 00              // index 7
    00 10 00 00              // page_bytes 4096
    10 00 00 00              // pages 16
    00 00 00 00 00 00 00 00  // reserved
    48 e3 cf 0e              // CRC32 of bytes 0..28
";

/// `manifest.md`: the manifest of `golden_manifest()`.
const MANIFEST_GOLDEN: &str = "
    // fixed header, 56 bytes
    53 4c 54 4d              // magic \"SLTM\"
    02 00 00 00              // version 2
    11 00 00 00 00 00 00 00  // checkpoint_lsn 17
    03 00 00 00 00 00 00 00  // wal_seq 3
    04 00 00 00              // pages_per_file 4
    02 00 00 00              // files 2
    07 00 00 00              // hwm 7
    03 00 00 00              // n_metrics 3
    02 00 00 00              // n_series 2
    02 00 00 00              // n_pages 2
    03 00 00 00              // n_free 3
    00 02 00 00              // page_slots 512
    // metric table at 56
    08 63 70 75 5f 6c 6f 61 64  3c 00 00 00 00 00 00 00  02  // \"cpu_load\", 60 s, Avg
    08 6d 65 6d 5f 75 73 65 64  0a 00 00 00 00 00 00 00  01  // \"mem_used\", 10 s, Sum
    02 75 70                    1e 00 00 00 00 00 00 00  00  // \"up\", 30 s, None
    // series registry at 104
    00 00 00 00              // series 0: metric 0
    e2 f0 53 65 00 00 00 00  // origin 1699999970
    01 00 00 00 00 00 00 00  // floor 1
    02 00 00 00              // page_count 2
    17 00                    // path_len 23
    01 03 04 65 6d 6d 79 05 6e 30 30 30 31 09 68 77 74 68 72 65 61 64 33  // host:emmy/n0001/hwthread3
    02 00 00 00              // series 1: metric 2
    00 00 00 00 00 00 00 80  // origin: none (i64::MIN)
    00 00 00 00 00 00 00 00  // floor 0
    00 00 00 00              // page_count 0
    12 00                    // path_len 18
    02 03 09 77 6f 72 64 63 6f 75 6e 74 03 6d 61 70 01 37  // job:wordcount/map/7
    // page descriptors at 197, 24 bytes each
    05 00 00 00  00 00 00 00  e2 68 54 65 00 00 00 00  ff ff ff ff  00 02  00 00  // page 5, series 0, start 1700030690, no prev, len 512
    02 00 00 00  00 00 00 00  e2 e0 54 65 00 00 00 00  05 00 00 00  03 00  00 00  // page 2, series 0, start 1700061410, prev 5, len 3
    // free list at 245
    06 00 00 00  01 00 00 00  03 00 00 00
    // trailer at 257
    f6 e1 0b c7              // CRC32 of bytes 0..257
";

/// `manifest.md`: the same manifest as written by version 1 (before page classes), which still reads.
const MANIFEST_V1_GOLDEN: &str = "
    // fixed header, 56 bytes
    53 4c 54 4d              // magic \"SLTM\"
    01 00 00 00              // version 1
    11 00 00 00 00 00 00 00  // checkpoint_lsn 17
    03 00 00 00 00 00 00 00  // wal_seq 3
    04 00 00 00              // pages_per_file 4
    02 00 00 00              // files 2
    07 00 00 00              // hwm 7
    03 00 00 00              // n_metrics 3
    02 00 00 00              // n_series 2
    02 00 00 00              // n_pages 2
    03 00 00 00              // n_free 3
    00 00 00 00              // reserved
    // metric table at 56
    08 63 70 75 5f 6c 6f 61 64  3c 00 00 00 00 00 00 00  02  // \"cpu_load\", 60 s, Avg
    08 6d 65 6d 5f 75 73 65 64  0a 00 00 00 00 00 00 00  01  // \"mem_used\", 10 s, Sum
    02 75 70                    1e 00 00 00 00 00 00 00  00  // \"up\", 30 s, None
    // series registry at 104
    00 00 00 00              // series 0: metric 0
    e2 f0 53 65 00 00 00 00  // origin 1699999970
    01 00 00 00 00 00 00 00  // floor 1
    02 00 00 00              // page_count 2
    17 00                    // path_len 23
    01 03 04 65 6d 6d 79 05 6e 30 30 30 31 09 68 77 74 68 72 65 61 64 33  // host:emmy/n0001/hwthread3
    02 00 00 00              // series 1: metric 2
    00 00 00 00 00 00 00 80  // origin: none (i64::MIN)
    00 00 00 00 00 00 00 00  // floor 0
    00 00 00 00              // page_count 0
    12 00                    // path_len 18
    02 03 09 77 6f 72 64 63 6f 75 6e 74 03 6d 61 70 01 37  // job:wordcount/map/7
    // page descriptors at 197, 24 bytes each
    05 00 00 00  00 00 00 00  e2 68 54 65 00 00 00 00  ff ff ff ff  00 02  00 00  // page 5, series 0, start 1700030690, no prev, len 512
    02 00 00 00  00 00 00 00  e2 e0 54 65 00 00 00 00  05 00 00 00  03 00  00 00  // page 2, series 0, start 1700061410, prev 5, len 3
    // free list at 245
    06 00 00 00  01 00 00 00  03 00 00 00
    // trailer at 257
    11 2d c9 c5              // CRC32 of bytes 0..257
";

/// The payloads of `wal_golden_records()`, built by hand from `wal.md` ("Payloads").
fn spec_payloads() -> Vec<(u8, Vec<u8>)> {
    let path = host_path();
    let mut declare = 0u32.to_le_bytes().to_vec();
    declare.push(8);
    declare.extend_from_slice(b"cpu_load");
    declare.extend_from_slice(&60i64.to_le_bytes());
    declare.push(2);

    let mut define = 1u32.to_le_bytes().to_vec();
    define.extend_from_slice(&0u32.to_le_bytes());
    define.extend_from_slice(&0u32.to_le_bytes());
    define.extend_from_slice(&(path.len() as u16).to_le_bytes());
    define.extend_from_slice(&path);

    let mut samples = 3u32.to_le_bytes().to_vec();
    samples.extend_from_slice(&T.to_le_bytes());
    for (series, ts, v) in [(0u32, T, 0.5f64), (0, T + 60, 1.5), (300, T - 60, -2.25)] {
        spec::put_varint(&mut samples, u64::from(series));
        spec::put_varint(&mut samples, spec::zigzag(ts - T));
        samples.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    let mut free = 1u32.to_le_bytes().to_vec();
    free.extend_from_slice(&0u32.to_le_bytes());
    free.extend_from_slice(&(T - 30 + 512 * 60).to_le_bytes());

    let mut seal = 1u32.to_le_bytes().to_vec();
    seal.extend_from_slice(&1u32.to_le_bytes());
    seal.extend_from_slice(&(T - 30 + 1024 * 60).to_le_bytes());

    vec![(1, declare), (2, define), (3, samples), (4, free), (5, seal)]
}

#[test]
fn wal_version_1_segments_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(segment_name(1));
    let mut bytes = unhex(WAL_GOLDEN_V1);
    bytes.resize(64 << 10, 0);
    std::fs::write(&path, &bytes).unwrap();
    let scan = silt::storage::wal::segment::scan(&silt::storage::io::StdVfs, &path).expect("a v1 segment reads");
    let got: Vec<Payload> =
        scan.frames.iter().map(|f| payload::decode(f.kind, scan.payload(f)).expect("payload")).collect();
    assert_eq!(got, wal_golden_records()[..4].to_vec());
}

#[test]
fn wal_golden_bytes() {
    // What the crate writes.
    let mut seg = SegmentHeader::new(1, 1).as_bytes().to_vec();
    for (i, p) in wal_golden_records().iter().enumerate() {
        let mut b = Vec::new();
        let kind = payload::encode(&mut b, p);
        encode_frame(&mut seg, i as u64 + 1, kind, &b);
    }
    assert_eq!(hex(&seg), hex(&unhex(WAL_GOLDEN)), "the WAL format changed: bump the version, update format/wal.md");

    // What the spec says, built by hand.
    let mut by_spec = Vec::new();
    by_spec.extend_from_slice(b"SLTW");
    by_spec.extend_from_slice(&2u32.to_le_bytes());
    by_spec.extend_from_slice(&1u64.to_le_bytes());
    by_spec.extend_from_slice(&1u64.to_le_bytes());
    by_spec.extend_from_slice(&0u32.to_le_bytes());
    let c = spec::crc(&[&by_spec]);
    by_spec.extend_from_slice(&c.to_le_bytes());
    for (i, (kind, p)) in spec_payloads().iter().enumerate() {
        by_spec.extend_from_slice(&spec::frame(i as u64 + 1, *kind, p));
    }
    assert_eq!(hex(&seg), hex(&by_spec));

    // Read back with the spec alone, in a preallocated (zero-filled) segment of 64 KiB.
    seg.resize(64 << 10, 0);
    let h = spec::segment_header(&seg);
    assert_eq!(
        h,
        spec::SegmentHeader { magic: *b"SLTW", version: 2, seq: 1, first_lsn: 1, reserved: 0, crc: 0xbb61_a118 }
    );
    let (frames, end) = spec::frames(&seg);
    assert_eq!(end, 296);
    let offsets: Vec<_> = frames.iter().map(|f| (f.offset, f.len, f.lsn, f.kind)).collect();
    assert_eq!(offsets, vec![(32, 22, 1, 1), (80, 37, 2, 2), (144, 43, 3, 3), (216, 16, 4, 4), (256, 16, 5, 5)]);
    let records: Vec<_> = frames.iter().map(|f| spec::record(f.kind, &f.payload)).collect();
    assert_eq!(
        records,
        vec![
            spec::Record::DeclareMetric { id: 0, name: "cpu_load".into(), frequency: 60, aggregation: 2 },
            spec::Record::DefineSeries(vec![(0, 0, host_path())]),
            spec::Record::Samples(vec![
                (0, T, 0.5f64.to_bits()),
                (0, T + 60, 1.5f64.to_bits()),
                (300, T - 60, (-2.25f64).to_bits()),
            ]),
            spec::Record::Free(vec![(0, T - 30 + 512 * 60)]),
            spec::Record::Seal(vec![(1, T - 30 + 1024 * 60)]),
        ]
    );
}

#[test]
fn wal_crc_covers_header_bytes_4_to_24_and_payload_but_not_padding() {
    for len in 1..=41usize {
        let payload: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37).wrapping_add(1)).collect();
        let mut f = Vec::new();
        encode_frame(&mut f, 0x0102_0304_0506_0708, 0xab, &payload);
        assert_eq!(f.len(), (24 + len).div_ceil(8) * 8, "frame length for payload {len}");
        assert_eq!(f, spec::frame(0x0102_0304_0506_0708, 0xab, &payload));
        let stored = u32::from_le_bytes(f[..4].try_into().unwrap());
        assert_eq!(stored, spec::crc(&[&f[4..24 + len]]));
        assert!(f[24 + len..].iter().all(|&b| b == 0));
    }
}

#[test]
fn wal_payload_edge_encodings() {
    // varint boundaries, as LEB128: 7 bits per byte, low group first, high bit = "more".
    for (v, bytes) in [
        (0u64, &[0x00][..]),
        (127, &[0x7f]),
        (128, &[0x80, 0x01]),
        (300, &[0xac, 0x02]),
        (16383, &[0xff, 0x7f]),
        (16384, &[0x80, 0x80, 0x01]),
        (u64::from(u32::MAX), &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        (u64::MAX, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
    ] {
        let mut out = Vec::new();
        payload::put_varint(&mut out, v);
        assert_eq!(out, bytes, "varint {v}");
    }
    // zigzag: 0 -> 0, -1 -> 1, 1 -> 2, -2 -> 3, ...
    for (v, z) in
        [(0i64, 0u64), (-1, 1), (1, 2), (-2, 3), (60, 120), (-60, 119), (i64::MAX, u64::MAX - 1), (i64::MIN, u64::MAX)]
    {
        assert_eq!(spec::zigzag(v), z);
        assert_eq!(spec::unzigzag(z), v);
    }

    // Samples: deltas wrap (two's complement), values are stored bit for bit.
    let quiet_nan = f64::NAN;
    let signalling = f64::from_bits(0x7ff0_0000_0000_0001);
    let samples = vec![
        Sample { series: SeriesId(u32::MAX), ts: i64::MAX, value: -0.0 },
        Sample { series: SeriesId(127), ts: i64::MIN, value: quiet_nan },
        Sample { series: SeriesId(128), ts: 0, value: signalling },
    ];
    let mut b = Vec::new();
    assert_eq!(payload::encode(&mut b, &Payload::Samples(samples.clone())), 3);
    let mut want = 3u32.to_le_bytes().to_vec();
    want.extend_from_slice(&i64::MAX.to_le_bytes());
    want.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
    want.extend_from_slice(&(-0.0f64).to_bits().to_le_bytes());
    want.extend_from_slice(&[0x7f, 0x02]); // i64::MIN - i64::MAX wraps to 1; zigzag(1) = 2
    want.extend_from_slice(&quiet_nan.to_bits().to_le_bytes());
    // series 128 = 80 01; 0 - i64::MAX = i64::MIN + 1; zigzag = 2^64 - 3 = fd ff ff ff ff ff ff ff ff 01.
    want.extend_from_slice(&[0x80, 0x01, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    want.extend_from_slice(&0x7ff0_0000_0000_0001u64.to_le_bytes());
    assert_eq!(hex(&b), hex(&want));
    assert_eq!(
        spec::record(3, &b),
        spec::Record::Samples(samples.iter().map(|s| (s.series.0, s.ts, s.value.to_bits())).collect())
    );

    // Empty lists: a bare count (Samples also has base_ts = 0).
    let mut b = Vec::new();
    payload::encode(&mut b, &Payload::Samples(vec![]));
    assert_eq!(b, [0u8; 12]);
    let mut b = Vec::new();
    payload::encode(&mut b, &Payload::DefineSeries(vec![]));
    assert_eq!(b, [0u8; 4]);
    let mut b = Vec::new();
    payload::encode(&mut b, &Payload::Free(vec![(SeriesId(7), -5)]));
    assert_eq!(spec::record(4, &b), spec::Record::Free(vec![(7, -5)]));
    assert_eq!(b.len(), 4 + 12);

    // DeclareMetric: each aggregation byte.
    for (agg, byte) in [
        (Aggregation::None, 0u8),
        (Aggregation::Sum, 1),
        (Aggregation::Avg, 2),
        (Aggregation::Max, 3),
        (Aggregation::Min, 4),
    ] {
        let mut b = Vec::new();
        let p =
            Payload::DeclareMetric { id: 9, name: "x".into(), config: MetricConfig { frequency: 1, aggregation: agg } };
        assert_eq!(payload::encode(&mut b, &p), 1);
        assert_eq!(
            spec::record(1, &b),
            spec::Record::DeclareMetric { id: 9, name: "x".into(), frequency: 1, aggregation: byte }
        );
    }
}

/// `wal.md` ("DeclareMetric"): declarations of a Max and a Min metric, one payload after the other.
const DECLARE_MAX_MIN_GOLDEN: &str = "
    // DeclareMetric payload, 14 + 12 bytes
    04 00 00 00              // metric id 4
    0c 62 61 63 6b 70 72 65 73 73 75 72 65  // name_len 12, \"backpressure\"
    0a 00 00 00 00 00 00 00  // frequency 10
    03                       // aggregation 3 = Max
    // DeclareMetric payload, 14 + 4 bytes
    05 00 00 00              // metric id 5
    04 69 64 6c 65           // name_len 4, \"idle\"
    3c 00 00 00 00 00 00 00  // frequency 60
    04                       // aggregation 4 = Min
";

/// `manifest.md`: a manifest with a Max and a Min metric and nothing else.
const MANIFEST_MAX_MIN_GOLDEN: &str = "
    // fixed header, 56 bytes
    53 4c 54 4d              // magic \"SLTM\"
    02 00 00 00              // version 2
    05 00 00 00 00 00 00 00  // checkpoint_lsn 5
    02 00 00 00 00 00 00 00  // wal_seq 2
    04 00 00 00              // pages_per_file 4
    00 00 00 00              // files 0
    00 00 00 00              // hwm 0
    02 00 00 00              // n_metrics 2
    00 00 00 00              // n_series 0
    00 00 00 00              // n_pages 0
    00 00 00 00              // n_free 0
    00 02 00 00              // page_slots 512
    // metric table at 56
    0c 62 61 63 6b 70 72 65 73 73 75 72 65  0a 00 00 00 00 00 00 00  03  // \"backpressure\", 10 s, Max
    04 69 64 6c 65                          3c 00 00 00 00 00 00 00  04  // \"idle\", 60 s, Min
    // trailer at 92
    ab 00 be 2f              // CRC32 of bytes 0..92
";

fn max_min_configs() -> [(&'static str, MetricConfig); 2] {
    [
        ("backpressure", MetricConfig { frequency: 10, aggregation: Aggregation::Max }),
        ("idle", MetricConfig { frequency: 60, aggregation: Aggregation::Min }),
    ]
}

#[test]
fn declare_metric_max_and_min_golden_bytes() {
    let mut got = Vec::new();
    let mut payloads = Vec::new();
    for (i, (name, config)) in max_min_configs().into_iter().enumerate() {
        let p = Payload::DeclareMetric { id: 4 + i as u32, name: name.into(), config };
        let mut b = Vec::new();
        assert_eq!(payload::encode(&mut b, &p), 1);
        assert_eq!(b.len(), 14 + name.len());
        // The spec's reading, and the crate's round trip.
        let byte = if config.aggregation == Aggregation::Max { 3 } else { 4 };
        assert_eq!(
            spec::record(1, &b),
            spec::Record::DeclareMetric {
                id: 4 + i as u32,
                name: name.into(),
                frequency: config.frequency,
                aggregation: byte
            }
        );
        assert_eq!(payload::decode(1, &b), Ok(p.clone()));
        got.extend_from_slice(&b);
        payloads.push(b);
    }
    assert_eq!(
        hex(&got),
        hex(&unhex(DECLARE_MAX_MIN_GOLDEN)),
        "the DeclareMetric payload changed: update format/wal.md"
    );
    // Any other aggregation byte is refused.
    for bad in [5u8, 0x83, 0xff] {
        let mut b = payloads[0].clone();
        *b.last_mut().unwrap() = bad;
        assert!(payload::decode(1, &b).is_err(), "aggregation byte {bad}");
    }
}

#[test]
fn manifest_max_and_min_golden_bytes() {
    let m = Manifest {
        checkpoint_lsn: Lsn(5),
        wal_seq: 2,
        metrics: max_min_configs().into_iter().map(|(n, config)| MetricEntry { name: n.into(), config }).collect(),
        head: HeadState { pages_per_file: 4, page_slots: 512, ..HeadState::default() },
        ..Manifest::default()
    };
    let got = m.encode();
    assert_eq!(
        hex(&got),
        hex(&unhex(MANIFEST_MAX_MIN_GOLDEN)),
        "the manifest format changed: update format/manifest.md"
    );
    let p = spec::manifest(&got);
    assert_eq!(p.metrics, vec![("backpressure".into(), 10, 3), ("idle".into(), 60, 4)]);
    assert_eq!(p.crc, 0x2fbe_00ab);
    assert_eq!(Manifest::decode(Path::new("MANIFEST"), &got).expect("decode"), m);
    // Aggregation 5 under a valid CRC is refused.
    let mut bad = got.clone();
    bad[56 + 1 + 12 + 8] = 5;
    let crc = spec::crc(&[&bad[..92]]);
    bad[92..].copy_from_slice(&crc.to_le_bytes());
    assert!(Manifest::decode(Path::new("MANIFEST"), &bad).is_err());
}

#[test]
fn file_names() {
    assert_eq!(segment_name(1), "00000000000000000001.wal");
    assert_eq!(segment_name(u64::MAX), "18446744073709551615.wal");
    assert_eq!(head_file_name(0), "000000.pages");
    assert_eq!(head_file_name(7), "000007.pages");
    // Six digits is a minimum width, not a maximum (see format/head.md).
    assert_eq!(head_file_name(1_234_567), "1234567.pages");
}

#[test]
fn head_header_golden_bytes() {
    let got = HeadFileHeader::new(7, 16, 4096).as_bytes().to_vec();
    assert_eq!(hex(&got), hex(&unhex(HEAD_GOLDEN)), "the head format changed: bump the version, update format/head.md");
    let h = spec::head_header(&got);
    assert_eq!(
        h,
        spec::HeadHeader {
            magic: *b"SLTH",
            version: 1,
            index: 7,
            page_bytes: 4096,
            pages: 16,
            reserved: [0; 8],
            crc: 0x0ecf_e348,
        }
    );
}

#[test]
fn series_path_canonical_bytes() {
    // keys::SeriesPath::encode: ns tag u8, segment count u8, then per segment len u8 + UTF-8.
    let host = host_path();
    assert_eq!(hex(&host), hex(&unhex("01 03  04 656d6d79  05 6e30303031  09 687774687265616433")));
    assert_eq!(spec::path(&host), (1, vec!["emmy".into(), "n0001".into(), "hwthread3".into()]));
    assert_eq!(spec::path(&job_path()), (2, vec!["wordcount".into(), "map".into(), "7".into()]));
    let svc = silt::ServiceKey::new("ingest", "0").unwrap().path().to_bytes();
    assert_eq!(hex(&svc), hex(&unhex("03 02  06 696e67657374  01 30")));
    let p: SeriesPath = "host:emmy/n0001".parse().unwrap();
    assert_eq!(spec::path(&p.to_bytes()), (1, vec!["emmy".into(), "n0001".into()]));
}

#[test]
fn manifest_golden_bytes() {
    let m = golden_manifest();
    let got = m.encode();
    assert_eq!(
        hex(&got),
        hex(&unhex(MANIFEST_GOLDEN)),
        "the manifest format changed: bump the version, update format/manifest.md"
    );
    let origin = T - 30;
    let p = spec::manifest(&got);
    assert_eq!(
        p,
        spec::Manifest {
            magic: *b"SLTM",
            version: 2,
            checkpoint_lsn: 17,
            wal_seq: 3,
            pages_per_file: 4,
            files: 2,
            hwm: 7,
            page_slots: 512,
            metrics: vec![("cpu_load".into(), 60, 2), ("mem_used".into(), 10, 1), ("up".into(), 30, 0)],
            series: vec![
                spec::Series { metric: 0, origin, floor: 1, page_count: 2, path: host_path() },
                spec::Series { metric: 2, origin: i64::MIN, floor: 0, page_count: 0, path: job_path() },
            ],
            pages: vec![
                spec::Desc { no: 5, series: 0, start: origin + 512 * 60, prev: u32::MAX, len: 512, pad: [0; 2] },
                spec::Desc { no: 2, series: 0, start: origin + 2 * 512 * 60, prev: 5, len: 3, pad: [0; 2] },
            ],
            free: vec![6, 1, 3],
            crc: 0xc70b_e1f6,
        }
    );
    // Length: 56 + metrics (10 + name) + series (26 + path) + 24 per page + 4 per free page + 4.
    let metrics: usize = p.metrics.iter().map(|(n, ..)| 10 + n.len()).sum();
    let series: usize = p.series.iter().map(|s| 26 + s.path.len()).sum();
    assert_eq!(got.len(), 56 + metrics + series + 24 * 2 + 4 * 3 + 4);
}

#[test]
fn version_1_manifest_still_reads_as_512_slot_pages() {
    let v1 = unhex(MANIFEST_V1_GOLDEN);
    let p = spec::manifest(&v1);
    assert_eq!((p.version, p.page_slots), (1, 0));
    let m = Manifest::decode(Path::new("MANIFEST"), &v1).expect("a version 1 manifest decodes");
    assert_eq!(m, golden_manifest());
    assert_eq!(m.head.page_slots, 512);
    // Re-encoding writes version 2, byte for byte the current golden.
    assert_eq!(hex(&m.encode()), hex(&unhex(MANIFEST_GOLDEN)));
}

#[test]
fn head_header_of_a_64_slot_page_class() {
    // Only `page_bytes` (and so the CRC) differs from HEAD_GOLDEN: 512-byte pages, file 7 of 16 pages.
    let got = HeadFileHeader::new(7, 16, 512).as_bytes().to_vec();
    let mut want = unhex(HEAD_GOLDEN);
    want[12..16].copy_from_slice(&512u32.to_le_bytes());
    let crc = spec::crc(&[&want[..28]]);
    want[28..32].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(hex(&got), hex(&want));
    assert_eq!(spec::head_header(&got).page_bytes, 512);
}

#[test]
fn a_64_slot_data_directory_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let opts = Options { pages_per_file: 16, page_slots: 64, checkpoint_interval: None, ..Options::default() };
    let db = Db::open(&dir, opts.clone()).unwrap();
    db.declare_metric("cpu_load", MetricConfig { frequency: 60, aggregation: Aggregation::Avg }).unwrap();
    let key = host_key();
    let mut b = Batch::new();
    for i in 0..65 {
        b.push(&key, "cpu_load", T + 60 * i, i as f64);
    }
    db.write(&b).unwrap();
    db.checkpoint().unwrap();
    let head = read(&dir.join("head/000000.pages"));
    assert_eq!(head.len(), 16 * 512, "16 pages of 512 bytes");
    let h = spec::head_header(&head);
    assert_eq!((h.page_bytes, h.pages), (512, 16));
    // Slot i of page p is at p * 512 + 8 i: the 65th sample opens a second page.
    let word = |page: usize, i: usize| u64::from_le_bytes(head[page * 512 + 8 * i..][..8].try_into().unwrap());
    assert_eq!((word(1, 0), word(1, 63), word(2, 0)), (0f64.to_bits(), 63f64.to_bits(), 64f64.to_bits()));
    let m = spec::manifest(&read(&dir.join("MANIFEST")));
    assert_eq!((m.version, m.page_slots, m.pages_per_file), (2, 64, 16));
    let origin = T - 30;
    assert_eq!(
        m.pages.iter().map(|d| (d.no, d.start, d.len)).collect::<Vec<_>>(),
        vec![(1, origin, 64), (2, origin + 64 * 60, 1)]
    );
    drop(db);
    // Reopened with other options, the directory keeps its own page class.
    let db = Db::open(&dir, Options { page_slots: 512, pages_per_file: 4, ..opts }).unwrap();
    let got = db.read(&key, "cpu_load", T, T + 65 * 60).unwrap();
    assert_eq!(got.values, (0..65).map(f64::from).collect::<Vec<_>>());
}

#[test]
fn empty_manifest_is_60_bytes() {
    let m = Manifest {
        wal_seq: 1,
        head: HeadState { pages_per_file: 4096, page_slots: 512, ..HeadState::default() },
        ..Manifest::default()
    };
    let b = m.encode();
    assert_eq!(b.len(), 60);
    let p = spec::manifest(&b);
    assert_eq!((p.checkpoint_lsn, p.wal_seq, p.pages_per_file, p.files, p.hwm), (0, 1, 4096, 0, 0));
    assert!(p.metrics.is_empty() && p.series.is_empty() && p.pages.is_empty() && p.free.is_empty());
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The one segment in `wal/`, checked for name, size and header; returns its records as (lsn, record).
fn only_segment(dir: &Path, seq: u64, first_lsn: u64, size: usize) -> Vec<(u64, spec::Record)> {
    let wal = dir.join("wal");
    assert_eq!(names(&wal), vec![format!("{seq:020}.wal")]);
    let seg = read(&wal.join(format!("{seq:020}.wal")));
    assert_eq!(seg.len(), size, "segments are preallocated to their full size");
    let h = spec::segment_header(&seg);
    assert_eq!((h.magic, h.version, h.seq, h.first_lsn, h.reserved), (*b"SLTW", 2, seq, first_lsn, 0));
    let (frames, _) = spec::frames(&seg);
    frames.iter().map(|f| (f.lsn, spec::record(f.kind, &f.payload))).collect()
}

#[test]
fn data_directory_written_by_db() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let opts = || Options {
        durability: Durability::Sync,
        segment_size: 64 << 10,
        pages_per_file: 4,
        checkpoint_interval: None,
        ..Options::default()
    };
    let key = host_key();
    let path = host_path();
    let origin = T - 30;
    let span = 512 * 60;
    let nan = f64::NAN.to_bits();
    assert_eq!(nan, 0x7ff8_0000_0000_0000);

    // 1. Declare, define, write: three records in segment 1, one head file, no manifest yet.
    let db = Db::open(&dir, opts()).unwrap();
    db.declare_metric("cpu_load", MetricConfig { frequency: 60, aggregation: Aggregation::Avg }).unwrap();
    let mut b = Batch::new();
    b.push(&key, "cpu_load", T, 0.5);
    b.push(&key, "cpu_load", T + 60, 1.5);
    assert_eq!(db.write(&b).unwrap().lsn, Lsn(3));
    assert_eq!(names(&dir), vec!["LOCK", "head", "wal"]);
    assert_eq!(
        only_segment(&dir, 1, 1, 64 << 10),
        vec![
            (1, spec::Record::DeclareMetric { id: 0, name: "cpu_load".into(), frequency: 60, aggregation: 2 }),
            (2, spec::Record::DefineSeries(vec![(0, 0, path.clone())])),
            (3, spec::Record::Samples(vec![(0, T, 0.5f64.to_bits()), (0, T + 60, 1.5f64.to_bits())])),
        ]
    );
    assert_eq!(names(&dir.join("head")), vec!["000000.pages"]);
    let head = read(&dir.join("head/000000.pages"));
    assert_eq!(head.len(), 4 * 4096);
    let h = spec::head_header(&head);
    assert_eq!((h.magic, h.version, h.index, h.page_bytes, h.pages, h.reserved), (*b"SLTH", 1, 0, 4096, 4, [0; 8]));
    assert!(head[32..4096].iter().all(|&b| b == 0), "the rest of the header page is zero");
    // The first page allocated is global page 1 (page 0 is the header); slot = (ts - origin) / F.
    assert_eq!((spec::slot(&head, 1, 0), spec::slot(&head, 1, 1)), (0.5f64.to_bits(), 1.5f64.to_bits()));

    // 2. Checkpoint: MANIFEST appears, segment 1 is replaced by an empty segment 2.
    assert_eq!(db.checkpoint().unwrap(), Lsn(3));
    assert_eq!(names(&dir), vec!["LOCK", "MANIFEST", "head", "wal"]);
    let m = spec::manifest(&read(&dir.join("MANIFEST")));
    assert_eq!((m.magic, m.version, m.checkpoint_lsn, m.wal_seq), (*b"SLTM", 2, 3, 2));
    assert_eq!((m.pages_per_file, m.files, m.hwm, m.page_slots), (4, 1, 2, 512));
    assert_eq!(m.metrics, vec![("cpu_load".to_string(), 60, 2)]);
    assert_eq!(m.series, vec![spec::Series { metric: 0, origin, floor: 0, page_count: 1, path: path.clone() }]);
    assert_eq!(m.pages, vec![spec::Desc { no: 1, series: 0, start: origin, prev: u32::MAX, len: 2, pad: [0; 2] }]);
    assert!(m.free.is_empty());
    assert_eq!(only_segment(&dir, 2, 4, 64 << 10), vec![]);

    // 3. A sample on the next page of the grid, then free the first page.
    let mut b = Batch::new();
    b.push(&key, "cpu_load", T + span, 2.5);
    assert_eq!(db.write(&b).unwrap().lsn, Lsn(4));
    assert_eq!(db.free(&key, "cpu_load", origin + span).unwrap(), 1);
    assert_eq!(
        only_segment(&dir, 2, 4, 64 << 10),
        vec![
            (4, spec::Record::Samples(vec![(0, T + span, 2.5f64.to_bits())])),
            (5, spec::Record::Free(vec![(0, origin + span)])),
        ]
    );
    let head = read(&dir.join("head/000000.pages"));
    assert_eq!(spec::slot(&head, 2, 0), 2.5f64.to_bits());

    // 4. Close checkpoints: the freed page is in the free list, the floor moved past it.
    db.close().unwrap();
    assert_eq!(names(&dir), vec!["LOCK", "MANIFEST", "head", "wal"]);
    let m = spec::manifest(&read(&dir.join("MANIFEST")));
    assert_eq!((m.checkpoint_lsn, m.wal_seq, m.files, m.hwm), (5, 3, 1, 3));
    assert_eq!(m.series, vec![spec::Series { metric: 0, origin, floor: 1, page_count: 1, path: path.clone() }]);
    assert_eq!(
        m.pages,
        vec![spec::Desc { no: 2, series: 0, start: origin + span, prev: u32::MAX, len: 1, pad: [0; 2] }]
    );
    assert_eq!(m.free, vec![1]);
    assert_eq!(only_segment(&dir, 3, 6, 64 << 10), vec![]);

    // 5. Reopen: the free page is reused (after the durable checkpoint that recorded it), gaps are NaN.
    let db = Db::open(&dir, opts()).unwrap();
    assert_eq!(db.read(&key, "cpu_load", T + span, T + span + 60).unwrap().values, vec![2.5]);
    let mut b = Batch::new();
    b.push(&key, "cpu_load", T + 2 * span, 3.5);
    b.push(&key, "cpu_load", T + 2 * span + 180, 4.5);
    assert_eq!(db.write(&b).unwrap().lsn, Lsn(6));
    assert_eq!(
        only_segment(&dir, 3, 6, 64 << 10),
        vec![(
            6,
            spec::Record::Samples(vec![(0, T + 2 * span, 3.5f64.to_bits()), (0, T + 2 * span + 180, 4.5f64.to_bits())])
        )]
    );
    db.close().unwrap();
    let m = spec::manifest(&read(&dir.join("MANIFEST")));
    assert_eq!((m.checkpoint_lsn, m.wal_seq, m.files, m.hwm), (6, 4, 1, 3));
    assert_eq!(m.series, vec![spec::Series { metric: 0, origin, floor: 1, page_count: 2, path: path.clone() }]);
    assert_eq!(
        m.pages,
        vec![
            spec::Desc { no: 2, series: 0, start: origin + span, prev: u32::MAX, len: 1, pad: [0; 2] },
            spec::Desc { no: 1, series: 0, start: origin + 2 * span, prev: 2, len: 4, pad: [0; 2] },
        ]
    );
    assert!(m.free.is_empty());
    let head = read(&dir.join("head/000000.pages"));
    let page1: Vec<u64> = (0..4).map(|s| spec::slot(&head, 1, s)).collect();
    assert_eq!(page1, vec![3.5f64.to_bits(), nan, nan, 4.5f64.to_bits()]);
    assert_eq!(only_segment(&dir, 4, 7, 64 << 10), vec![]);
    assert_eq!(names(&dir.join("head")), vec!["000000.pages"]);
}

fn wal_golden_records() -> Vec<Payload> {
    vec![
        Payload::DeclareMetric {
            id: 0,
            name: "cpu_load".into(),
            config: MetricConfig { frequency: 60, aggregation: Aggregation::Avg },
        },
        Payload::DefineSeries(vec![SeriesDef { id: SeriesId(0), metric: 0, path: host_path() }]),
        Payload::Samples(vec![
            Sample { series: SeriesId(0), ts: T, value: 0.5 },
            Sample { series: SeriesId(0), ts: T + 60, value: 1.5 },
            Sample { series: SeriesId(300), ts: T - 60, value: -2.25 },
        ]),
        Payload::Free(vec![(SeriesId(0), T - 30 + 512 * 60)]),
        Payload::Seal(vec![(SeriesId(1), T - 30 + 1024 * 60)]),
    ]
}

fn golden_manifest() -> Manifest {
    let origin = T - 30;
    Manifest {
        checkpoint_lsn: Lsn(17),
        wal_seq: 3,
        metrics: vec![
            MetricEntry {
                name: "cpu_load".into(),
                config: MetricConfig { frequency: 60, aggregation: Aggregation::Avg },
            },
            MetricEntry {
                name: "mem_used".into(),
                config: MetricConfig { frequency: 10, aggregation: Aggregation::Sum },
            },
            MetricEntry { name: "up".into(), config: MetricConfig { frequency: 30, aggregation: Aggregation::None } },
        ],
        series: vec![SeriesEntry { metric: 0, path: host_path() }, SeriesEntry { metric: 2, path: job_path() }],
        head: HeadState {
            pages_per_file: 4,
            page_slots: 512,
            files: 2,
            hwm: 7,
            free: vec![6, 1, 3],
            series: vec![
                SeriesState {
                    origin: Some(origin),
                    floor: 1,
                    pages: vec![
                        (PageRef { no: 5, start: origin + 512 * 60 }, 512),
                        (PageRef { no: 2, start: origin + 2 * 512 * 60 }, 3),
                    ],
                },
                SeriesState { origin: None, floor: 0, pages: vec![] },
            ],
        },
    }
}

/// `format/block.md`'s example: two chunks, raw values.
const BLOCK_GOLDEN: &str = "
    // header, 64 bytes
    53 49 4c 54 42 4c 4b 31  // magic \"SILTBLK1\"
    01 00 00 00              // version 1
    02 00 00 00              // count 2
    00 00 00 00 00 00 00 00  // min_time 0
    a0 00 00 00 00 00 00 00  // max_time 160 (= 100 + 1 x 60)
    60 00 00 00 00 00 00 00  // index_offset 96
    ad 81 14 b4              // index_crc: CRC32 of bytes 96..256
    00 00 00 00              // reserved
    00 01 00 00 00 00 00 00  // file_len 256
    00 00 00 00              // reserved
    7f d0 fd fe              // header_crc: CRC32 of bytes 0..60
    // chunk data at 64: series 1, raw 1.0, NaN, 2.5
    00 00 00 00 00 00 f0 3f  00 00 00 00 00 00 f8 7f  00 00 00 00 00 00 04 40
    // chunk data at 88: series 7, raw -0.0
    00 00 00 00 00 00 00 80
    // descriptor 0 at 96
    01 00 00 00  00  00 00 00   // series 1, codec 0 (raw), padding
    00 00 00 00 00 00 00 00     // start 0
    0a 00 00 00 00 00 00 00     // frequency 10
    03 00 00 00  02 00 00 00    // count 3, samples 2
    40 00 00 00 00 00 00 00     // offset 64
    18 00 00 00  46 64 83 05    // len 24, crc
    00 00 00 00 00 00 0c 40     // sum 3.5
    00 00 00 00 00 00 f0 3f     // min 1.0
    00 00 00 00 00 00 04 40     // max 2.5
    00 00 00 00 00 00 00 00     // reserved
    // descriptor 1 at 176
    07 00 00 00  00  00 00 00   // series 7, codec 0
    64 00 00 00 00 00 00 00     // start 100
    3c 00 00 00 00 00 00 00     // frequency 60
    01 00 00 00  01 00 00 00    // count 1, samples 1
    58 00 00 00 00 00 00 00     // offset 88
    08 00 00 00  49 5c 9a 88    // len 8, crc
    00 00 00 00 00 00 00 00     // sum 0.0 (+0.0 + -0.0)
    00 00 00 00 00 00 00 80     // min -0.0
    00 00 00 00 00 00 00 80     // max -0.0
    00 00 00 00 00 00 00 00     // reserved
";

/// A block parsed with `format/block.md` alone: (series, codec, start, frequency, values as bits, samples,
/// sum, min, max) per chunk.
#[allow(clippy::type_complexity)]
fn spec_block(b: &[u8]) -> Vec<(u32, u8, i64, i64, Vec<u64>, u32, f64, f64, f64)> {
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    assert_eq!(&b[0..8], b"SILTBLK1");
    assert_eq!(u32_at(60), spec::crc(&[&b[0..60]]), "header CRC");
    assert_eq!(u32_at(8), 1, "version");
    let count = u32_at(12) as usize;
    let index = u64_at(32) as usize;
    assert_eq!(u64_at(48) as usize, b.len());
    assert_eq!(index + count * 80, b.len());
    assert_eq!(u32_at(40), spec::crc(&[&b[index..]]), "index CRC");
    (0..count)
        .map(|i| {
            let d = index + i * 80;
            let (off, len) = (u64_at(d + 32) as usize, u32_at(d + 40) as usize);
            let data = &b[off..off + len];
            assert_eq!(u32_at(d + 44), spec::crc(&[data]), "chunk CRC");
            assert_eq!(b[d + 4], 0, "raw codec");
            let values = data.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
            (
                u32_at(d),
                b[d + 4],
                u64_at(d + 8) as i64,
                u64_at(d + 16) as i64,
                values,
                u32_at(d + 28),
                f64::from_bits(u64_at(d + 48)),
                f64::from_bits(u64_at(d + 56)),
                f64::from_bits(u64_at(d + 64)),
            )
        })
        .collect()
}

#[test]
fn block_golden_bytes() {
    use silt::storage::block::{encode_block, ChunkData};
    use silt::storage::codec::Codec;
    let chunks = vec![
        ChunkData { series: SeriesId(7), start: 100, frequency: 60, values: vec![-0.0] },
        ChunkData { series: SeriesId(1), start: 0, frequency: 10, values: vec![1.0, f64::NAN, 2.5] },
    ];
    let bytes = encode_block(chunks, Codec::Raw);
    assert_eq!(
        hex(&bytes),
        hex(&unhex(BLOCK_GOLDEN)),
        "the block format changed: bump the version, update format/block.md"
    );
    let parsed = spec_block(&bytes);
    assert_eq!(parsed.len(), 2);
    let (series, _, start, f, values, samples, sum, min, max) = parsed[0].clone();
    assert_eq!((series, start, f, samples, sum, min, max), (1, 0, 10, 2, 3.5, 1.0, 2.5));
    assert_eq!(values, vec![1.0f64.to_bits(), 0x7ff8_0000_0000_0000, 2.5f64.to_bits()]);
    let (series, _, start, f, values, ..) = parsed[1].clone();
    assert_eq!((series, start, f, values), (7, 100, 60, vec![(-0.0f64).to_bits()]));
    // And the crate reads what the spec describes.
    let (metas, lo, hi) = silt::storage::block::parse(&unhex(BLOCK_GOLDEN)).expect("parse");
    assert_eq!((metas.len(), lo, hi), (2, 0, 160));
}

/// The codecs of block chunks on a fixed input (`format/block.md`, "Values"): the gap map, then Gorilla's
/// bits or pco's wrapped format. A change here changes every block written.
#[test]
fn block_value_codecs_golden_bytes() {
    use silt::storage::codec::{decode, encode, Codec};
    let input = [0.25, 0.5, f64::NAN, 0.75, 0.125, 1.0, 1.0, 1.0];
    let cases = [
        (
            Codec::Gorilla,
            // gap map: n 8, 1 run, 2 values before it, length 1; then the XOR stream
            "08 01 02 01 3f d0 00 00 00 00 00 00 d4 17 b0 1e a0 ed 80",
        ),
        (
            Codec::Pco,
            // the same gap map; then pco's wrapped format: header, one chunk of 7 values (fewer than 512: with
            // first-order deltas, format/block.md)
            "08 01 02 01 04 01 10 31 03 00 00 00 00 00 00 00 60 ff 01 04 00 00 00 00 00 00 00 08 18 00 00 00 \
             00 00 00 02 a0 0d 00 00 00 00 00 00 d0 bf 24 02 03 00 00 00 00 00 00 08 00 00 00 00 00 00 00 00 \
             00 00 00 00 80 02",
        ),
    ];
    // What the encoder wrote for the same values before short chunks took first-order deltas (pco's own
    // search chose none): readers take any pco chunk, so blocks written then still decode.
    let earlier = "08 01 02 01 04 01 00 23 00 20 00 00 00 00 00 00 f0 af 4d 00 00 00 00 00 00 f0 bf 00 00 0a 07 00 \
                   00 00 00 00 00 04 00 00 00 00 00 00 02 00 00 00 00 00 a0 00 00 00 00 00 00 00";
    let mut back = Vec::new();
    decode(Codec::Pco, &unhex(earlier), input.len(), &mut back).expect("decode the earlier encoding");
    assert!(back.iter().zip(&input).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())));
    assert_eq!(back.len(), input.len());
    for (codec, golden) in cases {
        let mut out = Vec::new();
        encode(codec, &input, &mut out);
        assert_eq!(hex(&out), hex(&unhex(golden)), "{codec:?} changed: bump the block version, update format/block.md");
        let mut back = Vec::new();
        decode(codec, &out, input.len(), &mut back).expect("decode");
        assert!(back.iter().zip(&input).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())));
    }
    // The gap map, from the spec: LEB128 n, runs, then (values before, length) per run.
    assert_eq!(&unhex(cases[1].1)[..4], &[8, 1, 2, 1]);
}

// ---- checkpoint.md ----------------------------------------------------------------------------------

fn checkpoint_golden_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/checkpoint_v1.bin")
}

/// `format/checkpoint.md`'s example, its states written by the operators themselves.
fn golden_checkpoint() -> silt::stream::checkpoint::Checkpoint {
    use std::sync::Arc;

    use arrow_array::{Float64Array, Int64Array, RecordBatch};
    use silt::storage::io::sim::SimVfs;
    use silt::stream::checkpoint::{Checkpoint, Entry};
    use silt::stream::operators::{Aggregate, Collector, Operator, Source, TumblingWindow};
    use silt::stream::store::ScanSource;
    use silt::stream::StreamError;

    struct Discard;
    impl Collector for Discard {
        fn emit(&mut self, _: RecordBatch) -> Result<(), StreamError> {
            Ok(())
        }
    }
    let rows = |rows: &[(i64, i64, f64)]| {
        RecordBatch::try_new(
            TumblingWindow::input_schema(),
            vec![
                Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(Float64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    };
    let mut w = TumblingWindow::new(60, Aggregate::Avg, "key", "time", "value");
    w.process(0, rows(&[(1, 30, 9.0)]), &mut Discard).unwrap();
    w.on_watermark(120, &mut Discard).unwrap();
    w.process(0, rows(&[(1, 130, 1.5), (2, 125, -0.0), (1, 170, 2.5), (1, 10, 4.0)]), &mut Discard).unwrap();
    let window = w.snapshot().unwrap();

    let vfs = SimVfs::new();
    let db = Db::open("/db", Options { vfs: Arc::new(vfs), checkpoint_interval: None, ..Options::default() }).unwrap();
    db.declare_metric("load", MetricConfig { frequency: 10, aggregation: Aggregation::Avg }).unwrap();
    let mut b = Batch::new();
    for h in 0..3 {
        b.push(&HostKey::new("c", &format!("h{h}")).unwrap(), "load", T, 1.0);
    }
    db.write(&b).unwrap();
    let sel = silt::Selector::new(silt::keys::Namespace::Host, vec![silt::SelectorElement::Name("c".into())]).unwrap();
    let mut scan = ScanSource::new(Arc::new(db), &sel, "load", T, T + 60, 1, 2);
    scan.poll().unwrap();
    let scan = scan.snapshot().unwrap();

    Checkpoint {
        pipeline: "rollup".into(),
        epoch: 7,
        graph: vec![("scan".into(), 2), ("avg".into(), 1), ("sink".into(), 1)],
        // Out of order on purpose: the encoding sorts them.
        entries: vec![
            Entry { node: 2, subtask: 0, watermark: None, state: Vec::new() },
            Entry { node: 1, subtask: 0, watermark: Some(120), state: window },
            Entry { node: 0, subtask: 1, watermark: None, state: scan },
        ],
    }
}

/// A checkpoint parsed with `format/checkpoint.md` alone.
#[derive(Debug, PartialEq)]
struct SpecCheckpoint {
    epoch: u64,
    pipeline: String,
    graph: Vec<(String, u32)>,
    /// (node, subtask, flags, watermark, state)
    entries: Vec<(u32, u32, u8, i64, Vec<u8>)>,
}

fn spec_checkpoint(b: &[u8]) -> SpecCheckpoint {
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let n = b.len();
    assert_eq!(&b[0..8], b"SILTCKP1", "magic");
    assert_eq!(u32_at(8), 1, "version");
    assert_eq!(u32_at(12), 0, "reserved");
    assert_eq!(u64_at(16) as usize, n, "file_len");
    assert_eq!(u32_at(n - 4), spec::crc(&[&b[..n - 4]]), "CRC32 of bytes 0..file_len-4");
    let epoch = u64_at(24);
    let mut r = spec::Le::new(&b[32..n - 4]);
    fn string(r: &mut spec::Le) -> String {
        let len = r.u32() as usize;
        String::from_utf8(r.take(len).to_vec()).expect("UTF-8")
    }
    let pipeline = string(&mut r);
    let graph = (0..r.u32()).map(|_| (string(&mut r), r.u32())).collect();
    let entries = (0..r.u32())
        .map(|_| {
            let (node, subtask, flags, watermark) = (r.u32(), r.u32(), r.u8(), r.i64());
            let len = r.u32() as usize;
            (node, subtask, flags, watermark, r.take(len).to_vec())
        })
        .collect();
    r.done();
    SpecCheckpoint { epoch, pipeline, graph, entries }
}

#[test]
fn checkpoint_golden_file() {
    use silt::stream::checkpoint::Checkpoint;
    let path = checkpoint_golden_path();
    let written = golden_checkpoint().encode();
    if std::env::var_os("SILT_BLESS").is_some() {
        std::fs::write(&path, &written).unwrap();
    }
    let golden = read(&path);
    assert_eq!(
        hex(&written),
        hex(&golden),
        "the checkpoint format changed: bump the version, update format/checkpoint.md, re-bless with SILT_BLESS=1"
    );
    assert_eq!(golden.len(), 328);

    let c = spec_checkpoint(&golden);
    assert_eq!((c.epoch, c.pipeline.as_str()), (7, "rollup"));
    assert_eq!(c.graph, vec![("scan".to_string(), 2), ("avg".to_string(), 1), ("sink".to_string(), 1)]);
    let keys: Vec<_> = c.entries.iter().map(|e| (e.0, e.1, e.2, e.3)).collect();
    assert_eq!(keys, vec![(0, 1, 0, 0), (1, 0, 1, 120), (2, 0, 0, 0)], "sorted; watermark only with flag bit 0");
    assert!(c.entries[2].4.is_empty());

    // Scan state v1: version, position, done.
    assert_eq!(c.entries[0].4, vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);

    // Window state v1, by the spec's offsets.
    let s = &c.entries[1].4;
    let word = |o: usize| u64::from_le_bytes(s[o..o + 8].try_into().unwrap());
    assert_eq!(s.len(), 38 + 2 * 64);
    assert_eq!(s[0], 1, "version");
    assert_eq!((word(1) as i64, word(9) as i64, s[17]), (60, 60, 2), "width, slide, aggregate avg");
    assert_eq!((word(18) as i64, word(26)), (120, 1), "emitted_to, late");
    assert_eq!(u32::from_le_bytes(s[34..38].try_into().unwrap()), 2, "open windows");
    let window = |i: usize| -> Vec<u64> { (0..8).map(|k| word(38 + 64 * i + 8 * k)).collect() };
    let f = |x: f64| x.to_bits();
    // (start, key, count, sum, min, max, last_time, last_value)
    assert_eq!(window(0), vec![120, 1, 2, f(4.0), f(1.5), f(2.5), 170, f(2.5)]);
    assert_eq!(window(1), vec![120, 2, 1, f(0.0), f(-0.0), f(-0.0), 125, f(-0.0)], "0.0 + -0.0 is +0.0");

    // And the crate reads what the spec describes, canonically.
    let decoded = Checkpoint::decode(&golden).expect("decode");
    assert_eq!(decoded.encode(), golden);
    assert_eq!(decoded.state_of(1, 0).map(|e| e.watermark), Some(Some(120)));
}
