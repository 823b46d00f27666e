//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the same checks the fuzz targets
//! run (`silt::fuzzing`), so every input libFuzzer once found interesting keeps being tested by a plain
//! `cargo test`, without cargo-fuzz or a nightly compiler.
//!
//! The seed inputs are written by the ignored test `generate_seed_corpus`:
//!
//! ```text
//! cargo test --test fuzz_corpus_replay -- --ignored generate_seed_corpus
//! ```

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use silt::fuzzing;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus").join(target)
}

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read corpus {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())).path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target`'s check on every file of its corpus; fails naming every input that panicked.
fn replay(target: &str) {
    let files = corpus_files(target);
    assert!(!files.is_empty(), "corpus {} is empty: the replay would prove nothing", corpus_dir(target).display());
    let mut failed = Vec::new();
    for file in &files {
        let data = fs::read(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let outcome = catch_unwind(AssertUnwindSafe(|| fuzzing::check(target, &data)));
        if let Err(panic) = outcome {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            failed.push(format!("{}: {msg}", file.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} corpus inputs fail:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn wal_record_corpus() {
    replay("wal_record");
}

#[test]
fn manifest_corpus() {
    replay("manifest");
}

#[test]
fn series_path_corpus() {
    replay("series_path");
}

#[test]
fn line_protocol_corpus() {
    replay("line_protocol");
}

#[test]
fn block_corpus() {
    replay("block");
}

#[test]
fn checkpoint_corpus() {
    replay("checkpoint");
}

#[test]
fn config_corpus() {
    replay("config");
}

#[test]
fn query_body_corpus() {
    replay("query_body");
}

#[test]
fn pipeline_spec_corpus() {
    replay("pipeline_spec");
}

#[test]
fn every_target_has_a_replay_test() {
    assert_eq!(
        fuzzing::TARGETS,
        [
            "wal_record",
            "manifest",
            "series_path",
            "line_protocol",
            "block",
            "checkpoint",
            "config",
            "query_body",
            "pipeline_spec"
        ]
    );
}

/// Seed inputs, built with silt's own encoders. Files are named `seed-*`; inputs libFuzzer adds are named
/// by their SHA-1 and are left alone when the seeds are regenerated.
mod seeds {
    use silt::keys::{HostKey, JobKey, Key, SeriesPath, ServiceKey};
    use silt::storage::head::{HeadState, PageRef, SeriesState};
    use silt::storage::manifest::{Manifest, MetricEntry, SeriesEntry};
    use silt::storage::wal::payload::{self, Payload, Sample, SeriesDef};
    use silt::storage::wal::record::encode_frame;
    use silt::{Aggregation, Lsn, MetricConfig, SeriesId};

    pub type Seeds = Vec<(String, Vec<u8>)>;

    fn paths() -> Vec<SeriesPath> {
        vec![
            HostKey::new("emmy", "n0001").unwrap().path(),
            HostKey::new("emmy", "n0001")
                .unwrap()
                .component("socket", 0)
                .unwrap()
                .component("hwthread", 3)
                .unwrap()
                .path(),
            HostKey::new("alex", "a0101").unwrap().component("accelerator", "00000000:3B:00.0").unwrap().path(),
            JobKey::new("1234.batch", "map", 7).unwrap().path(),
            ServiceKey::new("ingest", "0").unwrap().path(),
            SeriesPath::new(silt::keys::Namespace::Host, vec!["clüster 節".into(), "🦀".into()]).unwrap(),
        ]
    }

    fn payloads() -> Vec<(&'static str, Payload)> {
        let cfg = |frequency, aggregation| MetricConfig { frequency, aggregation };
        vec![
            ("declare", Payload::DeclareMetric { id: 0, name: "cpu_load".into(), config: cfg(60, Aggregation::Avg) }),
            ("declare-utf8", Payload::DeclareMetric { id: 7, name: "mem_ü".into(), config: cfg(1, Aggregation::None) }),
            (
                "define",
                Payload::DefineSeries(
                    paths()
                        .iter()
                        .enumerate()
                        .take(3)
                        .map(|(i, p)| SeriesDef { id: SeriesId(i as u32), metric: 0, path: p.to_bytes() })
                        .collect(),
                ),
            ),
            ("define-empty", Payload::DefineSeries(Vec::new())),
            (
                "samples",
                Payload::Samples(vec![
                    Sample { series: SeriesId(0), ts: 1_700_000_000, value: 0.5 },
                    Sample { series: SeriesId(1), ts: 1_699_999_940, value: -1.0 },
                    Sample { series: SeriesId(300), ts: 1_700_000_060, value: f64::NAN },
                    Sample { series: SeriesId(u32::MAX), ts: i64::MIN, value: f64::INFINITY },
                ]),
            ),
            ("samples-empty", Payload::Samples(Vec::new())),
            ("free", Payload::Free(vec![(SeriesId(0), 1_700_000_000), (SeriesId(2), -5)])),
            // Last, so the seeds above keep their bytes.
            (
                "declare-max",
                Payload::DeclareMetric { id: 2, name: "backpressure".into(), config: cfg(10, Aggregation::Max) },
            ),
            ("declare-min", Payload::DeclareMetric { id: 3, name: "idle".into(), config: cfg(60, Aggregation::Min) }),
        ]
    }

    fn frame(lsn: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, lsn, kind, payload);
        out
    }

    /// Re-encodes a frame whose header bytes were edited, fixing its CRC (bytes 0..4).
    fn fix_frame_crc(f: &mut [u8]) {
        let len = u32::from_le_bytes(f[4..8].try_into().unwrap()) as usize;
        let crc = crc(&[&f[4..24], &f[24..24 + len]]);
        f[..4].copy_from_slice(&crc.to_le_bytes());
    }

    fn crc(parts: &[&[u8]]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        for part in parts {
            h.update(part);
        }
        h.finalize()
    }

    pub fn wal_record() -> Seeds {
        let mut seeds = Seeds::new();
        let zeros = [0u8; 24];
        let mut segment = Vec::new();
        for (i, (name, p)) in payloads().into_iter().enumerate() {
            let mut bytes = Vec::new();
            let kind = payload::encode(&mut bytes, &p);
            let f = frame(i as u64 + 1, kind, &bytes);
            segment.extend_from_slice(&f);
            let mut with_end = f.clone();
            with_end.extend_from_slice(&zeros);
            seeds.push((name.to_string(), with_end));
            // Torn: cut inside the header and inside the payload.
            seeds.push((format!("{name}-cut-header"), f[..13].to_vec()));
            seeds.push((format!("{name}-cut-payload"), f[..24 + bytes.len() / 2].to_vec()));
            // A flipped payload bit (CRC mismatch).
            let mut flipped = f.clone();
            flipped[24] ^= 0x10;
            seeds.push((format!("{name}-flipped"), flipped));
            // The payload with its last byte dropped, under a valid CRC: the frame decodes, the payload not.
            if bytes.len() > 1 {
                seeds.push((format!("{name}-short-payload"), frame(9, kind, &bytes[..bytes.len() - 1])));
            }
            // Trailing garbage in the payload, under a valid CRC.
            let mut longer = bytes.clone();
            longer.push(0xAA);
            seeds.push((format!("{name}-trailing-byte"), frame(9, kind, &longer)));
        }
        segment.extend_from_slice(&zeros);
        seeds.push(("segment-all-kinds".into(), segment.clone()));
        // The same segment with the last record torn.
        seeds.push(("segment-torn-tail".into(), segment[..segment.len() - 40].to_vec()));

        let ok = {
            let mut b = Vec::new();
            payload::encode_free(&mut b, &[(SeriesId(1), 5)]);
            b
        };
        // Unknown kind under a valid CRC.
        seeds.push(("unknown-kind".into(), frame(1, 9, &ok)));
        // Reserved header byte set, CRC fixed up (the decoder must refuse it anyway).
        let mut reserved = frame(1, 4, &ok);
        reserved[20] = 1;
        fix_frame_crc(&mut reserved);
        seeds.push(("reserved-nonzero".into(), reserved));
        // Non-zero padding after a valid frame (the decoder does not check padding), then a second frame.
        let mut odd = Vec::new();
        let cfg = MetricConfig { frequency: 60, aggregation: Aggregation::Sum };
        payload::encode_declare_metric(&mut odd, 1, "x", cfg);
        assert_eq!(odd.len(), 15);
        let mut padded = frame(1, 1, &odd);
        let n = padded.len();
        padded[n - 1] = 0xFF;
        padded.extend_from_slice(&frame(2, 4, &ok));
        seeds.push(("padding-nonzero".into(), padded));
        // Zero length, and a length beyond the maximum, with fixed CRCs over what is there.
        let mut zero_len = frame(1, 4, &ok);
        zero_len[4..8].copy_from_slice(&0u32.to_le_bytes());
        fix_frame_crc(&mut zero_len);
        seeds.push(("len-zero".into(), zero_len));
        let mut huge = frame(1, 4, &ok);
        huge[4..8].copy_from_slice(&(16u32 << 20 | 1).to_le_bytes());
        seeds.push(("len-too-large".into(), huge));
        // DeclareMetric with frequency 0 and an unknown aggregation, valid CRCs.
        let mut b = Vec::new();
        payload::encode_declare_metric(&mut b, 1, "x", MetricConfig { frequency: 0, aggregation: Aggregation::Sum });
        seeds.push(("declare-frequency-zero".into(), frame(1, 1, &b)));
        let mut b = Vec::new();
        payload::encode_declare_metric(&mut b, 1, "x", MetricConfig { frequency: 60, aggregation: Aggregation::Sum });
        let n = b.len();
        b[n - 1] = 7;
        seeds.push(("declare-bad-aggregation".into(), frame(1, 1, &b)));
        // Samples with an overlong (non-canonical) varint and a base that is not the first timestamp.
        let mut s = Vec::new();
        s.extend_from_slice(&1u32.to_le_bytes());
        s.extend_from_slice(&1000i64.to_le_bytes());
        s.extend_from_slice(&[0x85, 0x80, 0x00]); // series 5, overlong
        s.extend_from_slice(&[0x03]); // ts delta -2
        s.extend_from_slice(&2.5f64.to_bits().to_le_bytes());
        seeds.push(("samples-noncanonical".into(), frame(1, 3, &s)));
        // Samples whose count claims more than the payload holds.
        let mut s = Vec::new();
        s.extend_from_slice(&u32::MAX.to_le_bytes());
        s.extend_from_slice(&0i64.to_le_bytes());
        s.extend_from_slice(&[0; 10]);
        seeds.push(("samples-count-huge".into(), frame(1, 3, &s)));
        // A short non-zero tail after a frame, and a short zero tail.
        let mut tail = frame(1, 4, &ok);
        tail.extend_from_slice(&[0, 0, 1]);
        seeds.push(("partial-header-tail".into(), tail));
        seeds.push(("empty".into(), Vec::new()));
        seeds.push(("zeros".into(), vec![0; 64]));
        seeds
    }

    fn manifests() -> Vec<(&'static str, Manifest)> {
        let cfg = |frequency, aggregation| MetricConfig { frequency, aggregation };
        let p = paths();
        let small = Manifest {
            checkpoint_lsn: Lsn(17),
            wal_seq: 3,
            metrics: vec![MetricEntry { name: "cpu_load".into(), config: cfg(60, Aggregation::Avg) }],
            series: vec![SeriesEntry { metric: 0, path: p[1].to_bytes() }],
            head: HeadState {
                pages_per_file: 16,
                page_slots: 512,
                files: 1,
                hwm: 4,
                free: vec![3],
                series: vec![SeriesState {
                    origin: Some(970),
                    floor: 0,
                    pages: vec![(PageRef { no: 1, start: 970 }, 512), (PageRef { no: 2, start: 970 + 512 * 60 }, 3)],
                }],
            },
        };
        let larger = Manifest {
            checkpoint_lsn: Lsn(1_000_000),
            wal_seq: 42,
            metrics: vec![
                MetricEntry { name: "cpu_load".into(), config: cfg(60, Aggregation::Avg) },
                MetricEntry { name: "flops_any".into(), config: cfg(10, Aggregation::Sum) },
                MetricEntry { name: "mem_ü".into(), config: cfg(1, Aggregation::None) },
            ],
            series: p
                .iter()
                .enumerate()
                .map(|(i, p)| SeriesEntry { metric: (i % 3) as u32, path: p.to_bytes() })
                .collect(),
            head: HeadState {
                pages_per_file: 4,
                page_slots: 512,
                files: 3,
                hwm: 11,
                free: vec![9, 10],
                series: (0..p.len())
                    .map(|i| SeriesState {
                        origin: (i % 2 == 0).then_some(1_700_000_000 + i as i64),
                        floor: -(i as i64),
                        pages: if i < 4 {
                            vec![
                                (PageRef { no: 1 + 2 * i as u32, start: -100 }, 1),
                                (PageRef { no: 2 + 2 * i as u32, start: 512 }, 512),
                            ]
                        } else {
                            Vec::new()
                        },
                    })
                    .collect(),
            },
        };
        let empty = Manifest {
            head: HeadState { pages_per_file: 2, page_slots: 512, ..HeadState::default() },
            ..Manifest::default()
        };
        let max_min = Manifest {
            checkpoint_lsn: Lsn(5),
            wal_seq: 2,
            metrics: vec![
                MetricEntry { name: "backpressure".into(), config: cfg(10, Aggregation::Max) },
                MetricEntry { name: "idle".into(), config: cfg(60, Aggregation::Min) },
            ],
            head: HeadState { pages_per_file: 4, page_slots: 512, ..HeadState::default() },
            ..Manifest::default()
        };
        vec![("small", small), ("larger", larger), ("empty", empty), ("max-min", max_min)]
    }

    /// Recomputes the CRC trailer after the body was edited.
    fn fix_manifest_crc(b: &mut [u8]) {
        let n = b.len() - 4;
        let c = crc(&[&b[..n]]);
        b[n..].copy_from_slice(&c.to_le_bytes());
    }

    pub fn manifest() -> Seeds {
        let mut seeds = Seeds::new();
        for (name, m) in manifests() {
            let b = m.encode();
            seeds.push((name.to_string(), b.clone()));
            seeds.push((format!("{name}-truncated"), b[..b.len() - 5].to_vec()));
            let mut flipped = b.clone();
            flipped[20] ^= 0x40;
            seeds.push((format!("{name}-flipped"), flipped));
        }
        let small = manifests().remove(0).1.encode();
        let edit = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = small.clone();
            f(&mut b);
            fix_manifest_crc(&mut b);
            b
        };
        // Each edit below keeps a valid CRC so the decoder gets past it.
        seeds.push(("version-2".into(), edit(&|b| b[4] = 2)));
        seeds.push(("reserved-nonzero".into(), edit(&|b| b[52] = 0xEE)));
        seeds.push(("pages-per-file-1".into(), edit(&|b| b[24..28].copy_from_slice(&1u32.to_le_bytes()))));
        seeds.push(("metric-count-huge".into(), edit(&|b| b[36..40].copy_from_slice(&u32::MAX.to_le_bytes()))));
        seeds.push(("bad-magic".into(), edit(&|b| b[0] = b'X')));
        // Layout of `small` after the 56-byte header: metric (1 + 8 + 8 + 1 = 18 bytes), series (26 + path),
        // then two 24-byte page descriptors and one free page.
        let descr = small.len() - 4 - 4 - 48;
        seeds.push(("page-pad-nonzero".into(), edit(&|b| b[descr + 22] = 1)));
        seeds.push(("page-link-wrong".into(), edit(&|b| b[descr + 24 + 16] ^= 1)));
        seeds.push((
            "page-out-of-order".into(),
            edit(&|b| b[descr + 24 + 8..descr + 24 + 16].copy_from_slice(&0i64.to_le_bytes())),
        ));
        seeds.push((
            "free-page-owned".into(),
            edit(&|b| {
                let n = b.len();
                b[n - 8..n - 4].copy_from_slice(&1u32.to_le_bytes());
            }),
        ));
        seeds
            .push(("metric-frequency-zero".into(), edit(&|b| b[56 + 9..56 + 17].copy_from_slice(&0i64.to_le_bytes()))));
        seeds.push(("short".into(), small[..59].to_vec()));
        seeds
    }

    pub fn series_path() -> Seeds {
        let mut seeds = Seeds::new();
        for (i, p) in paths().iter().enumerate() {
            let b = p.to_bytes();
            seeds.push((format!("bytes-{i}"), b.clone()));
            let mut tail = b.clone();
            tail.extend_from_slice(b"\x01\x02trailing");
            seeds.push((format!("bytes-{i}-trailing"), tail));
            seeds.push((format!("bytes-{i}-truncated"), b[..b.len() - 1].to_vec()));
            seeds.push((format!("text-{i}"), p.to_string().into_bytes()));
        }
        let max = SeriesPath::new(
            silt::keys::Namespace::Service,
            (0..8).map(|i| format!("{i}{}", "s".repeat(127))).collect(),
        )
        .unwrap();
        seeds.push(("bytes-max".into(), max.to_bytes()));
        let raw: &[(&str, &[u8])] = &[
            ("bytes-count-0", b"\x01\x00"),
            ("bytes-count-9", b"\x01\x09\x01a\x01a\x01a\x01a\x01a\x01a\x01a\x01a\x01a"),
            ("bytes-tag-4", b"\x04\x01\x01a"),
            ("bytes-len-0", b"\x02\x01\x00"),
            ("bytes-len-past-end", b"\x03\x01\x05ab"),
            ("bytes-bad-utf8", b"\x01\x01\x02\xc3\x28"),
            ("bytes-control", b"\x01\x01\x02a\x00"),
            ("bytes-dotdot", b"\x01\x02\x01a\x02.."),
            ("bytes-slash", b"\x01\x01\x03a/b"),
            ("bytes-space", b"\x01\x01\x02a "),
            ("text-no-prefix", b"emmy/n0001"),
            ("text-unknown-ns", b"disk:a/b"),
            ("text-empty-rest", b"host:"),
            ("text-empty-segment", b"host:a//b"),
            ("text-dot", b"job:a/./b"),
            ("text-ws", b"service: a/b"),
            ("text-9-segments", b"host:a/b/c/d/e/f/g/h/i"),
            ("text-colons", b"host:a:b/c::d"),
            ("text-not-utf8", b"host:\xff/a"),
            ("text-control", b"host:a\tb/c"),
        ];
        for (name, b) in raw {
            seeds.push((name.to_string(), b.to_vec()));
        }
        seeds.push(("text-long-segment".into(), format!("host:{}", "x".repeat(129)).into_bytes()));
        seeds
    }

    pub fn line_protocol() -> Seeds {
        let valid: &[(&str, &str)] = &[
            ("cc-hwthread", "cpu_load,cluster=emmy,hostname=n1,type=hwthread,type-id=3 value=0.5 1700000000\n"),
            (
                "cc-socket-core",
                "flops_any,cluster=emmy,hostname=n1,type=socket,type-id=1,stype=core,stype-id=12 value=12i 1700000000\n",
            ),
            ("cc-subtype", "mem_bw,cluster=c,host=n,type=socket,type-id=0,subtype=core,stype-id=1 value=3u\n"),
            ("cc-node", "mem_used,hostname=n1,type=node value=t 1700000000123\n"),
            (
                "cc-accelerator",
                "acc_util,cluster=alex,hostname=a0101,type=accelerator,type-id=00000000:3B:00.0 value=97.5\n",
            ),
            ("cc-extra-tags-fields", "cpu_freq,cluster=c,hostname=n,unit=MHz value=2400,other=\"x\",more=2i 1\n"),
            (
                "body-comments-blank-crlf",
                "# cc-metric-collector\r\n\r\na,cluster=c,hostname=n value=1 1\r\n  \t\n  # indented\nb,cluster=c,hostname=n value=2 2",
            ),
            (
                "escapes-everywhere",
                "m\\ 1\\,x=y,t\\=k=v\\ w,u=a\\b,\\\\=\\\\ f\\,=1.5,l=\"q\\\"\\\\z, a=b\",e\\ k=-1e3 12\n",
            ),
            ("all-types", "m a=1,b=-0,c=1e-3,d=.5,e=1.,f=1E+308,g=42i,h=-9223372036854775808i,i=18446744073709551615u\n"),
            ("bools", "m a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE\n"),
            ("strings", "m s=\"\",t=\"a b,c=d #\",u=\"x\\y\",w=\"\\\\\\\"\",v=\"節 🦀\"\n"),
            ("unicode", "節🦀,tag=ü value=1\n"),
            ("whitespace", "  \tm,t=a   v=1\t-5 \t\n"),
            ("no-timestamp", "m v=1\n"),
            ("negative-timestamp", "m v=1 -1700000000\n"),
            ("max-timestamp", "m v=1 9223372036854775807\nm v=2 -9223372036854775808\n"),
        ];
        let invalid: &[(&str, &str)] = &[
            ("no-fields", "cpu\n"),
            ("no-fields-after-tags", "cpu,t=a  \n"),
            ("empty-measurement", ",t=a v=1\n"),
            ("empty-tag-key", "m,=a v=1\n"),
            ("tag-without-equals", "m,t v=1\n"),
            ("empty-tag-value", "m,t= v=1\n"),
            ("equals-in-tag-value", "m,t=a=b v=1\n"),
            ("duplicate-tag", "m,t=a,t=b v=1\n"),
            ("empty-field-key", "m =1\n"),
            ("trailing-comma", "m v=1,\n"),
            ("field-without-value", "m v=\n"),
            ("duplicate-field", "m v=1,v=2\n"),
            ("unknown-value-type", "m v=x\n"),
            ("bad-bool", "m v=tRUE\n"),
            ("bad-float", "m v=1.2.3\n"),
            ("bad-int", "m v=1.5i\n"),
            ("negative-uint", "m v=-1u\n"),
            ("int-overflow", "m v=9223372036854775808i\n"),
            ("float-overflow", "m v=1e400\n"),
            ("unterminated-string", "m v=\"abc\\\"\n"),
            ("string-across-lines", "m v=\"open\nclosed\"\n"),
            ("text-after-string", "m v=\"a\"b\n"),
            ("escape-at-end", "m,t=a\\"),
            ("control-char", "m\tx v=1\n"),
            ("bad-timestamp", "m v=1 1.5\n"),
            ("timestamp-overflow", "m v=1 9223372036854775808\n"),
            ("trailing-text", "m v=1 1 2\n"),
            ("replacement-char", "m,t=\u{fffd} v=1\n"),
            ("cc-missing-value", "m,cluster=c,hostname=n other=1\n"),
            ("cc-string-value", "m,cluster=c,hostname=n value=\"1\"\n"),
            ("cc-missing-host", "m,cluster=c value=1\n"),
            ("cc-conflicting-host", "m,cluster=c,hostname=a,host=b value=1\n"),
            ("cc-type-without-id", "m,cluster=c,hostname=n,type=socket value=1\n"),
            ("cc-stype-without-type", "m,cluster=c,hostname=n,stype=core,stype-id=1 value=1\n"),
            ("cc-bad-names", "a/b,cluster=..,hostname=n\\ ,type=x/y,type-id=0 value=1\n"),
            ("good-then-bad", "a,cluster=c,hostname=n value=1\nbroken\na,cluster=c,hostname=n value=2\n"),
        ];
        let mut seeds = Seeds::new();
        for (name, body) in valid.iter().chain(invalid) {
            seeds.push((name.to_string(), body.as_bytes().to_vec()));
        }
        // Bytes that are not UTF-8, in a data line and in a comment.
        seeds.push(("not-utf8".into(), b"m,t=\xff v=1\n# \xfe comment\nm v=1\n".to_vec()));
        // Many tags, one over the limit of 64.
        let tags: String = (0..65).map(|i| format!(",t{i}=v")).collect();
        seeds.push(("too-many-tags".into(), format!("m{tags} value=1\n").into_bytes()));
        seeds
    }

    pub fn block() -> Seeds {
        use silt::storage::block::{encode_block, ChunkData};
        use silt::storage::codec::Codec;
        let chunk = |series: u32, start: i64, frequency: i64, values: Vec<f64>| ChunkData {
            series: SeriesId(series),
            start,
            frequency,
            values,
        };
        let mut seeds: Seeds = vec![("empty".into(), encode_block(Vec::new(), Codec::Raw))];
        let two = vec![chunk(1, 0, 10, vec![1.0, f64::NAN, 2.5]), chunk(7, 100, 60, vec![-0.0])];
        seeds.push(("two-chunks".into(), encode_block(two.clone(), Codec::Raw)));
        let loads: Vec<f64> = (0..1024).map(|i| ((i * 37) % 1000) as f64 / 1000.0).collect();
        let mix = vec![
            chunk(0, -5, 60, loads),
            chunk(3, 1_700_000_000, 1, vec![0.0; 700]),
            chunk(9, 0, 10, (0..512).map(|i| if i % 7 == 0 { f64::NAN } else { i as f64 * 1e6 }).collect()),
        ];
        seeds.push(("mixed".into(), encode_block(mix, Codec::Raw)));
        let mut truncated = encode_block(two, Codec::Raw);
        truncated.truncate(100);
        seeds.push(("truncated".into(), truncated));
        seeds
    }

    pub fn checkpoint() -> Seeds {
        use std::sync::Arc;

        use arrow_array::{Float64Array, Int64Array, RecordBatch};
        use silt::stream::checkpoint::{Checkpoint, Entry};
        use silt::stream::operators::{Aggregate, Collector, Operator, TumblingWindow};
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
        let window = |width: i64, slide: i64, aggregate: Aggregate| {
            let mut w = TumblingWindow::sliding(width, slide, aggregate, "key", "time", "value");
            w.process(0, rows(&[(1, 30, 9.0), (2, -7, f64::NAN)]), &mut Discard).unwrap();
            w.on_watermark(60, &mut Discard).unwrap();
            w.process(0, rows(&[(1, 130, 1.5), (2, 125, -0.0), (1, 170, 2.5), (1, 10, 4.0)]), &mut Discard).unwrap();
            w.snapshot().unwrap()
        };
        let full = Checkpoint {
            pipeline: "rollup".into(),
            epoch: 7,
            graph: vec![("scan".into(), 2), ("avg".into(), 3), ("sink".into(), 1)],
            entries: vec![
                Entry { node: 0, subtask: 1, watermark: None, state: vec![1, 4, 0, 0, 0, 0, 0, 0, 0, 1] },
                Entry { node: 1, subtask: 0, watermark: Some(120), state: window(60, 60, Aggregate::Avg) },
                Entry { node: 1, subtask: 2, watermark: Some(-3), state: window(60, 20, Aggregate::Last) },
                Entry { node: 2, subtask: 0, watermark: None, state: Vec::new() },
            ],
        };
        let empty = Checkpoint { pipeline: String::new(), epoch: 0, graph: Vec::new(), entries: Vec::new() };
        let fix = |mut b: Vec<u8>| {
            let n = b.len() - 4;
            let crc = crc(&[&b[..n]]);
            b[n..].copy_from_slice(&crc.to_le_bytes());
            b
        };
        let bytes = full.encode();
        let mut seeds: Seeds = vec![("empty".into(), empty.encode()), ("full".into(), bytes.clone())];
        let mut flipped = bytes.clone();
        flipped[100] ^= 0x10;
        seeds.push(("full-flipped".into(), flipped.clone()));
        seeds.push(("full-flipped-fixed".into(), fix(flipped)));
        seeds.push(("full-truncated".into(), bytes[..bytes.len() / 2].to_vec()));
        let mut v2 = bytes.clone();
        v2[8] = 2;
        seeds.push(("version-2".into(), fix(v2)));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        seeds.push(("bad-magic".into(), magic));
        seeds
    }

    fn text_seeds(list: &[(&str, &str)]) -> Seeds {
        list.iter().map(|(name, text)| (name.to_string(), text.as_bytes().to_vec())).collect()
    }

    /// The current layout in full (as cc-metric-store's `configs/config.json`, shortened), with a pipeline.
    const CONFIG_FULL: &str = r#"{
  "main": {"addr": "0.0.0.0:8082", "https-cert-file": "", "https-key-file": "", "user": "", "group": "",
           "backend-url": "", "debug": {"dump-to-file": "", "gops": false},
           "jwt-public-key": "kzfYrYy+TzpanWZHJ5qSdMj5uKUWgq74BWhQG6copP0="},
  "nats": {"address": "nats://0.0.0.0:4222", "username": "root", "password": "root", "creds-file-path": ""},
  "metric-store": {
    "num-workers": 0, "checkpoint-interval": "12h", "memory-cap": 100, "retention-in-memory": "48h",
    "checkpoints": {"file-format": "wal", "directory": "./var/checkpoints", "max-wal-size": 0},
    "debug": {"dump-to-file": "", "gops": false},
    "cleanup": {"mode": "archive", "directory": "./var/archive"},
    "nats-subscriptions": [{"subscribe-to": "hpc-nats", "cluster-tag": "fritz"},
                           {"subscribe-to": "hpc-nats", "cluster-tag": "alex"}]
  },
  "metrics": {
    "clock": {"frequency": 60, "aggregation": "avg"},
    "cpu_user": {"frequency": 60, "aggregation": "avg"},
    "flops_any": {"frequency": 60, "aggregation": "sum"},
    "mem_used": {"frequency": 60, "aggregation": null},
    "backpressure": {"frequency": 10, "aggregation": "max"},
    "idle": {"frequency": 10, "aggregation": "min"},
    "nv_util": {"frequency": 60, "aggregation": ""}
  },
  "pipelines": [
    {"name": "cluster_load_5m",
     "source": {"kind": "scan", "metric": "cpu_user", "selector": ["emmy", ["n1", "n2"], "*"],
                "from": 1700000000, "to": 1700086400},
     "filter": {"min": 0.0, "max": 1e9}, "map": {"scale": 0.001, "offset": 0.0},
     "group_by": {"level": 2}, "window": {"width": 300, "slide": 300, "aggregate": "avg"},
     "sink": {"metric": "cpu_load_5m_avg", "frequency": 300, "aggregation": "avg"},
     "parallelism": 2, "checkpoint_interval_secs": 10}
  ]
}"#;

    /// The legacy layout (cc-metric-store's `configs/config-nats.json`, shortened).
    const CONFIG_LEGACY: &str = r#"{
  "metrics": {"clock": {"frequency": 60, "aggregation": "avg"}, "mem_used": {"frequency": 60}},
  "checkpoints": {"interval": "1h", "directory": "./var/checkpoints", "restore": "48h", "file-format": "avro"},
  "archive": {"interval": "168h", "directory": "./var/archive", "delete-instead": false},
  "http-api": {"address": "localhost:8081", "https-cert-file": null, "https-key-file": null},
  "retention-in-memory": "48h",
  "nats": [{"address": "nats://localhost:4222", "username": "root", "password": "root",
            "subscriptions": [{"subscribe-to": "updates", "cluster-tag": "alex"}]}],
  "jwt-public-key": "kzfYrYy+TzpanWZHJ5qSdMj5uKUWgq74BWhQG6copP0="
}"#;

    pub fn config() -> Seeds {
        let minimal = r#"{"main": {"addr": ":8082"}, "metrics": {}, "metric-store": {"retention-in-memory": "48h", "memory-cap": 0}}"#;
        let mut seeds = text_seeds(&[
            ("full", CONFIG_FULL),
            ("legacy", CONFIG_LEGACY),
            ("minimal", minimal),
            (
                "durations",
                r#"{"main": {"addr": "[::1]:0"}, "metrics": {"m": {"frequency": 31622400, "aggregation": "sum"}},
                   "metric-store": {"retention-in-memory": "1h30m0.5s", "checkpoint-interval": "+1.5h",
                                    "memory-cap": 18, "checkpoints": {"file-format": "json"},
                                    "cleanup": {"mode": "delete"}}}"#,
            ),
            (
                "duration-units",
                r#"{"main": {"addr": "h:1"}, "metrics": {}, "metric-store": {"retention-in-memory": "1ns2us3µs4μs5ms6s7m8h",
                   "checkpoint-interval": "2562047h47m16.854775807s", "memory-cap": 0}}"#,
            ),
            ("legacy-minimal", r#"{"http-api": {"address": ":8081"}, "metrics": {}, "retention-in-memory": "1m"}"#),
            (
                "block-retention",
                r#"{"main": {"addr": ":1"}, "metrics": {}, "metric-store": {"retention-in-memory": "48h", "memory-cap": 0,
                   "block-retention": "8760h", "cleanup": {"mode": "archive", "directory": "./var/archive"}}}"#,
            ),
            (
                "nulls",
                r#"{"main": {"addr": ":1", "debug": null}, "metrics": {}, "nats": null,
                          "metric-store": {"retention-in-memory": "48h", "memory-cap": 0, "checkpoint-interval": null},
                          "pipelines": null}"#,
            ),
            // Each of these is refused.
            ("not-json", "{\"main\": "),
            ("not-an-object", "[1, 2]"),
            ("empty", ""),
            ("trailing", &format!("{minimal} {{}}")),
            (
                "unknown-key",
                r#"{"main": {"addr": ":1", "Addr": ":2"}, "metrics": {}, "metric-store": {"retention-in-memory": "1h", "memory-cap": 0}}"#,
            ),
            (
                "no-port",
                r#"{"main": {"addr": "localhost"}, "metrics": {}, "metric-store": {"retention-in-memory": "1h", "memory-cap": 0}}"#,
            ),
            (
                "bad-aggregation",
                r#"{"main": {"addr": ":1"}, "metrics": {"m": {"frequency": 60, "aggregation": "median"}}, "metric-store": {"retention-in-memory": "1h", "memory-cap": 0}}"#,
            ),
            (
                "frequency-zero",
                r#"{"main": {"addr": ":1"}, "metrics": {"m": {"frequency": 0, "aggregation": null}}, "metric-store": {"retention-in-memory": "1h", "memory-cap": 0}}"#,
            ),
            (
                "bad-metric-name",
                r#"{"main": {"addr": ":1"}, "metrics": {"a/b": {"frequency": 1, "aggregation": null}}, "metric-store": {"retention-in-memory": "1h", "memory-cap": 0}}"#,
            ),
            (
                "negative-duration",
                r#"{"main": {"addr": ":1"}, "metrics": {}, "metric-store": {"retention-in-memory": "-1h", "memory-cap": 0}}"#,
            ),
            (
                "zero-duration",
                r#"{"main": {"addr": ":1"}, "metrics": {}, "metric-store": {"retention-in-memory": "0", "memory-cap": 0}}"#,
            ),
            (
                "duration-overflow",
                r#"{"main": {"addr": ":1"}, "metrics": {}, "metric-store": {"retention-in-memory": "2562048h", "memory-cap": 0}}"#,
            ),
            (
                "duration-no-unit",
                r#"{"main": {"addr": ":1"}, "metrics": {}, "metric-store": {"retention-in-memory": "12", "memory-cap": 0}}"#,
            ),
            (
                "memory-cap-huge",
                r#"{"main": {"addr": ":1"}, "metrics": {}, "metric-store": {"retention-in-memory": "1h", "memory-cap": 18446744074}}"#,
            ),
            (
                "memory-cap-float",
                r#"{"main": {"addr": ":1"}, "metrics": {}, "metric-store": {"retention-in-memory": "1h", "memory-cap": 1.5}}"#,
            ),
            (
                "two-nats-servers",
                r#"{"http-api": {"address": ":1"}, "metrics": {}, "retention-in-memory": "1h", "nats": [{"address": "a"}, {"address": "b"}]}"#,
            ),
            (
                "archive-without-directory",
                r#"{"main": {"addr": ":1"}, "metrics": {}, "metric-store": {"retention-in-memory": "1h", "memory-cap": 0, "cleanup": {"mode": "archive"}}}"#,
            ),
            (
                "block-retention-too-short",
                r#"{"main": {"addr": ":1"}, "metrics": {}, "metric-store": {"retention-in-memory": "48h", "block-retention": "24h", "memory-cap": 0}}"#,
            ),
            (
                "duplicate-pipeline",
                r#"{"main": {"addr": ":1"}, "metrics": {}, "metric-store": {"retention-in-memory": "1h", "memory-cap": 0},
                 "pipelines": [{"name": "p", "source": {"kind": "ingest", "metric": "a", "selector": ["*"]}, "group_by": "host",
                                "window": {"width": 60, "aggregate": "sum"}, "sink": {"metric": "b"}},
                               {"name": "p", "source": {"kind": "ingest", "metric": "a", "selector": ["*"]}, "group_by": "host",
                                "window": {"width": 60, "aggregate": "sum"}, "sink": {"metric": "b"}}]}"#,
            ),
        ]);
        seeds.push(("not-utf8".into(), b"{\"main\": {\"addr\": \"\xff:1\"}}".to_vec()));
        seeds
    }

    fn query(extra: &str) -> String {
        format!(r#"{{"cluster":"emmy","from":1700000000,"to":1700000400,"queries":[{extra}]}}"#)
    }

    pub fn query_body() -> Seeds {
        let mut seeds: Seeds = vec![
            ("query-host".into(), query(r#"{"metric":"load","host":"n1"}"#)),
            ("query-cluster".into(), query(r#"{"metric":"flops"}"#)),
            ("query-hwthreads".into(), query(r#"{"metric":"load","host":"n1","type":"hwthread","type-ids":["0","1","2","3"]}"#)),
            ("query-hwthreads-aggreg".into(), query(r#"{"metric":"load","host":"n2","type":"hwthread","type-ids":["1","3"],"aggreg":true}"#)),
            (
                "query-cores".into(),
                query(r#"{"metric":"bp","host":"n1","type":"socket","type-ids":["0"],"subtype":"core","subtype-ids":["0","1"]}"#),
            ),
            ("query-resolution".into(), query(r#"{"metric":"load","host":"n1","resolution":60},{"metric":"load","host":"n1","resolution":7}"#)),
            ("query-scale".into(), query(r#"{"metric":"flops","host":"n2","scale-by":1e-9},{"metric":"mem","host":"n1"},{"metric":"idle"}"#)),
            ("query-no-aggregation".into(), query(r#"{"metric":"mem"}"#)),
            ("query-unknown".into(), query(r#"{"metric":"nope","host":"n1"},{"metric":"load","host":"n9"}"#)),
            (
                "query-flags".into(),
                r#"{"cluster":"emmy","from":1699999000,"to":1700000400,"with-stats":false,"with-data":true,"with-padding":true,
                    "queries":[{"metric":"load","host":"n1","type":"hwthread","type-ids":["0"]}]}"#
                    .into(),
            ),
            (
                "query-for-all-nodes".into(),
                r#"{"cluster":"emmy","from":1700000000,"to":1700000400,"for-all-nodes":["load","mem","flops"]}"#.into(),
            ),
            // The brief's case: the whole i64 range at resolution 1 (refused before any read: over the values limit).
            (
                "query-whole-range".into(),
                format!(
                    r#"{{"cluster":"emmy","from":{},"to":{},"queries":[{{"metric":"load","host":"n1","resolution":1}}]}}"#,
                    i64::MIN,
                    i64::MAX
                ),
            ),
            (
                "query-id-product".into(),
                format!(
                    r#"{{"cluster":"emmy","from":1700000000,"to":1700000400,"queries":[{{"metric":"bp","host":"n1","type":"socket","type-ids":[{ids}],"subtype":"core","subtype-ids":[{ids}]}}]}}"#,
                    ids = (0..100).map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(",")
                ),
            ),
            ("query-from-after-to".into(), r#"{"cluster":"emmy","from":2,"to":1}"#.into()),
            ("query-type-without-host".into(), query(r#"{"metric":"load","type":"hwthread","type-ids":["0"]}"#)),
            ("query-bad-selector".into(), query(r#"{"metric":"load","host":"n1/../x"}"#)),
            ("query-unknown-field".into(), query(r#"{"metric":"load","hostname":"n1"}"#)),
            ("query-no-cluster".into(), r#"{"from":1,"to":2}"#.into()),
            ("free".into(), r#"[["emmy","n1"],["emmy"],[]]"#.into()),
            ("free-bad".into(), r#"[["emmy","n1"],["a/b"]]"#.into()),
            ("free-deep".into(), r#"[["a","b","c","d","e","f","g","h","i"]]"#.into()),
            ("health".into(), r#"{"cluster":"emmy","nodes":["n1","n2","n3"],"metric-names":["load","mem","bp","nope"]}"#.into()),
            ("health-empty".into(), r#"{"cluster":"none"}"#.into()),
            ("health-unknown-field".into(), r#"{"cluster":"emmy","node":["n1"]}"#.into()),
        ]
        .into_iter()
        .map(|(n, s): (String, String)| (n, s.into_bytes()))
        .collect();
        seeds.push(("not-json".into(), b"{\"cluster\":\xff".to_vec()));
        seeds.push(("empty".into(), Vec::new()));
        seeds
    }

    /// The documented spec (`src/stream/spec.rs`), on the fuzz database's metrics.
    const SPEC: &str = r#"{"name": "cluster_load_1m",
  "source": {"kind": "scan", "metric": "load", "selector": ["emmy", ["n1", "n2"], "*"], "from": 1700000000, "to": 1700086400},
  "filter": {"min": 0.0, "max": 1e9}, "map": {"scale": 0.001, "offset": 0.0},
  "group_by": {"level": 2},
  "window": {"width": 60, "slide": 60, "aggregate": "avg"},
  "sink": {"metric": "load_1m", "frequency": 60, "aggregation": "avg"},
  "parallelism": 2, "checkpoint_interval_secs": 10}"#;

    pub fn pipeline_spec() -> Seeds {
        let spec = |source: &str, group_by: &str, window: &str, sink: &str| {
            format!(r#"{{"name":"p","source":{source},"group_by":{group_by},"window":{window},"sink":{sink}}}"#)
        };
        let ingest = r#"{"kind":"ingest","metric":"load","selector":["*"]}"#;
        let mut seeds: Seeds = vec![
            ("documented".into(), SPEC.into()),
            (
                "ingest-sliding-count".into(),
                spec(ingest, r#""host""#, r#"{"width":120,"slide":30,"aggregate":"count"}"#, r#"{"metric":"load_count"}"#),
            ),
            (
                "series-last".into(),
                spec(
                    r#"{"kind":"scan","metric":"bp","namespace":"host","selector":["emmy","n1",["socket0"],"*"],"from":-5,"to":5}"#,
                    r#""series""#,
                    r#"{"width":60,"aggregate":"last"}"#,
                    r#"{"metric":"load_1m","frequency":60}"#,
                ),
            ),
            (
                "cluster-min-max".into(),
                spec(ingest, r#""cluster""#, r#"{"width":60,"aggregate":"max"}"#, r#"{"metric":"load_1m","aggregation":"max"}"#),
            ),
            (
                "job-namespace".into(),
                spec(
                    r#"{"kind":"ingest","metric":"flops","namespace":"job","selector":["1234.batch"]}"#,
                    r#"{"level":1}"#,
                    r#"{"width":30,"aggregate":"sum"}"#,
                    r#"{"metric":"load_count","aggregation":"sum"}"#,
                ),
            ),
            (
                "unknown-source".into(),
                spec(r#"{"kind":"ingest","metric":"nope","selector":["*"]}"#, r#""host""#, r#"{"width":60,"aggregate":"avg"}"#, r#"{"metric":"x"}"#),
            ),
            (
                "undeclared-sink".into(),
                spec(ingest, r#""host""#, r#"{"width":60,"aggregate":"avg"}"#, r#"{"metric":"fresh_sink"}"#),
            ),
            (
                "sink-conflict".into(),
                spec(ingest, r#""host""#, r#"{"width":120,"aggregate":"avg"}"#, r#"{"metric":"load_1m"}"#),
            ),
            // Each of these is refused.
            ("slide-over-width".into(), spec(ingest, r#""host""#, r#"{"width":60,"slide":61,"aggregate":"avg"}"#, r#"{"metric":"x"}"#)),
            ("width-zero".into(), spec(ingest, r#""host""#, r#"{"width":0,"aggregate":"avg"}"#, r#"{"metric":"x"}"#)),
            ("level-9".into(), spec(ingest, r#"{"level":9}"#, r#"{"width":60,"aggregate":"avg"}"#, r#"{"metric":"x"}"#)),
            ("sink-is-source".into(), spec(ingest, r#""host""#, r#"{"width":60,"aggregate":"avg"}"#, r#"{"metric":"load"}"#)),
            ("sink-frequency".into(), spec(ingest, r#""host""#, r#"{"width":60,"aggregate":"avg"}"#, r#"{"metric":"x","frequency":7}"#)),
            (
                "scan-without-range".into(),
                spec(r#"{"kind":"scan","metric":"load","selector":["*"]}"#, r#""host""#, r#"{"width":60,"aggregate":"avg"}"#, r#"{"metric":"x"}"#),
            ),
            (
                "empty-group".into(),
                spec(r#"{"kind":"ingest","metric":"load","selector":[[]]}"#, r#""host""#, r#"{"width":60,"aggregate":"avg"}"#, r#"{"metric":"x"}"#),
            ),
            ("unknown-field".into(), SPEC.replace("\"parallelism\"", "\"paralellism\"")),
            ("parallelism-65".into(), SPEC.replace("\"parallelism\": 2", "\"parallelism\": 65")),
            ("map-overflow".into(), SPEC.replace("\"scale\": 0.001", "\"scale\": 1e400")),
            ("truncated".into(), SPEC[..SPEC.len() / 2].into()),
            // Each row in 1e11 windows: builds on the fuzz database; before MAX_WINDOWS_PER_ROW it ran out of memory.
            (
                "window-too-many-per-row".into(),
                spec(ingest, r#""host""#, r#"{"width":6000000000000,"slide":60,"aggregate":"avg"}"#, r#"{"metric":"load_1m","frequency":60}"#),
            ),
        ]
        .into_iter()
        .map(|(n, s): (String, String)| (n, s.into_bytes()))
        .collect();
        seeds.push(("not-utf8".into(), b"{\"name\":\"\xff\"}".to_vec()));
        seeds
    }
}

/// Writes the seed corpora into `fuzz/corpus/<target>/seed-*`, replacing earlier seeds.
#[test]
#[ignore = "writes fuzz/corpus; run by hand when the seeds change"]
fn generate_seed_corpus() {
    let all = [
        ("wal_record", seeds::wal_record()),
        ("manifest", seeds::manifest()),
        ("series_path", seeds::series_path()),
        ("line_protocol", seeds::line_protocol()),
        ("block", seeds::block()),
        ("checkpoint", seeds::checkpoint()),
        ("config", seeds::config()),
        ("query_body", seeds::query_body()),
        ("pipeline_spec", seeds::pipeline_spec()),
    ];
    for (target, seeds) in all {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).unwrap();
        for old in corpus_files(target) {
            if old.file_name().unwrap().to_string_lossy().starts_with("seed-") {
                fs::remove_file(old).unwrap();
            }
        }
        for (name, bytes) in seeds {
            // Every seed must pass its own check before it is written.
            fuzzing::check(target, &bytes);
            fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}
