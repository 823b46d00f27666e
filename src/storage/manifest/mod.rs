//! The manifest: what a checkpoint makes durable. Codec of `format/manifest.md`.
//!
//! One file, `MANIFEST`, replaced atomically (`MANIFEST.tmp`, fsync, rename, fsync of the directory). It holds
//! the checkpoint LSN, the first WAL segment still needed, the metric table, the series registry and the page
//! descriptors of the head. One CRC32 trailer covers every byte before it; a reader checks it before it parses
//! anything, and then still bounds-checks every field.

use std::path::Path;

use crate::storage::error::{CorruptionKind, StorageError};
use crate::storage::head::{HeadState, PageRef, SeriesState};
use crate::storage::io::{OpenMode, Vfs};
use crate::storage::wal::payload::{aggregation_from, aggregation_to, Cursor};
use crate::storage::{Lsn, MetricConfig};

/// Magic number of a manifest.
pub const MANIFEST_MAGIC: [u8; 4] = *b"SLTM";
/// Manifest format version written. Version 2 records the head's page class (`page_slots`) where version 1
/// had a reserved zero word; a version 1 manifest still reads, as a head of 512-slot pages.
pub const MANIFEST_VERSION: u32 = 2;
/// Values per page of a head described by a version 1 manifest.
const V1_PAGE_SLOTS: u32 = 512;
/// The manifest's file name in the data directory.
pub const MANIFEST_NAME: &str = "MANIFEST";
const NO_ORIGIN: i64 = i64::MIN;
const NO_PAGE: u32 = u32::MAX;

/// A metric as the manifest records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricEntry {
    /// Metric name.
    pub name: String,
    /// Its configuration.
    pub config: MetricConfig,
}

/// A series as the manifest records it (its id is its index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesEntry {
    /// Index into the metric table.
    pub metric: u32,
    /// Canonical path bytes (`keys::SeriesPath::encode`).
    pub path: Vec<u8>,
}

/// Everything a checkpoint records.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Every WAL record up to and including this LSN is reflected in the head files.
    pub checkpoint_lsn: Lsn,
    /// The first WAL segment recovery needs; older ones may be deleted.
    pub wal_seq: u64,
    /// Metrics, indexed by metric id.
    pub metrics: Vec<MetricEntry>,
    /// Series registry, indexed by `SeriesId`.
    pub series: Vec<SeriesEntry>,
    /// The head's pages.
    pub head: HeadState,
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

impl Manifest {
    /// Encodes the manifest (see `format/manifest.md`).
    pub fn encode(&self) -> Vec<u8> {
        let h = &self.head;
        let pages: usize = h.series.iter().map(|s| s.pages.len()).sum();
        let mut out = Vec::with_capacity(64 + self.series.len() * 48 + pages * 24 + h.free.len() * 4);
        out.extend_from_slice(&MANIFEST_MAGIC);
        put_u32(&mut out, MANIFEST_VERSION);
        put_u64(&mut out, self.checkpoint_lsn.0);
        put_u64(&mut out, self.wal_seq);
        put_u32(&mut out, h.pages_per_file);
        put_u32(&mut out, h.files);
        put_u32(&mut out, h.hwm);
        put_u32(&mut out, self.metrics.len() as u32);
        put_u32(&mut out, self.series.len() as u32);
        put_u32(&mut out, pages as u32);
        put_u32(&mut out, h.free.len() as u32);
        put_u32(&mut out, h.page_slots);
        debug_assert_eq!(out.len(), 56);
        for m in &self.metrics {
            out.push(m.name.len() as u8);
            out.extend_from_slice(m.name.as_bytes());
            put_i64(&mut out, m.config.frequency);
            out.push(aggregation_to(m.config.aggregation));
        }
        for (i, s) in self.series.iter().enumerate() {
            let st = h.series.get(i).cloned().unwrap_or_default();
            put_u32(&mut out, s.metric);
            put_i64(&mut out, st.origin.unwrap_or(NO_ORIGIN));
            put_i64(&mut out, st.floor);
            put_u32(&mut out, st.pages.len() as u32);
            out.extend_from_slice(&(s.path.len() as u16).to_le_bytes());
            out.extend_from_slice(&s.path);
        }
        for (i, st) in h.series.iter().enumerate() {
            let mut prev = NO_PAGE;
            for &(p, len) in &st.pages {
                put_u32(&mut out, p.no);
                put_u32(&mut out, i as u32);
                put_i64(&mut out, p.start);
                put_u32(&mut out, prev);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&[0, 0]);
                prev = p.no;
            }
        }
        for &p in &h.free {
            put_u32(&mut out, p);
        }
        let crc = crc32fast::hash(&out);
        put_u32(&mut out, crc);
        out
    }

    /// Decodes and validates a manifest read from `path`.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Manifest, StorageError> {
        let corrupt = |off: usize, kind: CorruptionKind| StorageError::corrupt(path, off as u64, kind);
        if bytes.len() < 60 {
            return Err(corrupt(0, CorruptionKind::OutOfBounds(format!("manifest of {} bytes", bytes.len()))));
        }
        if bytes[..4] != MANIFEST_MAGIC {
            return Err(corrupt(0, CorruptionKind::BadMagic));
        }
        let (body, trailer) = bytes.split_at(bytes.len() - 4);
        let expected = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let got = crc32fast::hash(body);
        if got != expected {
            return Err(corrupt(body.len(), CorruptionKind::ChecksumMismatch { expected, got }));
        }
        let mut c = Cursor::new(body);
        let at = |c: &Cursor<'_>| body.len() - c.remaining();
        let wrap = |c: &Cursor<'_>, k: CorruptionKind| corrupt(at(c), k);
        c.take(4).map_err(|k| wrap(&c, k))?;
        let version = c.u32().map_err(|k| wrap(&c, k))?;
        if version != 1 && version != MANIFEST_VERSION {
            return Err(StorageError::UnsupportedVersion {
                file: path.to_owned(),
                version,
                supported: MANIFEST_VERSION,
            });
        }
        let mut m = Manifest::default();
        let r = (|| -> Result<(), CorruptionKind> {
            m.checkpoint_lsn = Lsn(c.u64()?);
            m.wal_seq = c.u64()?;
            m.head.pages_per_file = c.u32()?;
            m.head.files = c.u32()?;
            m.head.hwm = c.u32()?;
            let n_metrics = c.u32()? as usize;
            let n_series = c.u32()? as usize;
            let n_pages = c.u32()? as usize;
            let n_free = c.u32()? as usize;
            let page_slots = c.u32()?; // reserved (ignored) in version 1
            m.head.page_slots = if version == 1 { V1_PAGE_SLOTS } else { page_slots };
            crate::storage::head::file::check_geometry(m.head.page_slots, m.head.pages_per_file)
                .map_err(CorruptionKind::Invalid)?;
            // Lower bounds of each section's size, checked before allocating.
            let min = n_metrics.saturating_mul(10)
                + n_series.saturating_mul(26)
                + n_pages.saturating_mul(24)
                + n_free.saturating_mul(4);
            if min > c.remaining() {
                return Err(CorruptionKind::OutOfBounds("section counts exceed the file".into()));
            }
            for _ in 0..n_metrics {
                let n = c.u8()? as usize;
                let name = std::str::from_utf8(c.take(n)?)
                    .map_err(|_| CorruptionKind::Invalid("metric name is not UTF-8".into()))?
                    .to_owned();
                let frequency = c.i64()?;
                if frequency < 1 {
                    return Err(CorruptionKind::Invalid(format!("metric {name} has frequency {frequency}")));
                }
                let aggregation = aggregation_from(c.u8()?)?;
                m.metrics.push(MetricEntry { name, config: MetricConfig { frequency, aggregation } });
            }
            let mut counts = Vec::with_capacity(n_series);
            for i in 0..n_series {
                let metric = c.u32()?;
                if metric as usize >= n_metrics {
                    return Err(CorruptionKind::Invalid(format!("series {i} names metric {metric}")));
                }
                let origin = c.i64()?;
                let floor = c.i64()?;
                counts.push(c.u32()? as usize);
                let n = u16::from_le_bytes(c.array()?) as usize;
                let path = c.take(n)?.to_vec();
                m.series.push(SeriesEntry { metric, path });
                m.head.series.push(SeriesState {
                    origin: (origin != NO_ORIGIN).then_some(origin),
                    floor,
                    pages: Vec::new(),
                });
            }
            if counts.iter().sum::<usize>() != n_pages {
                return Err(CorruptionKind::Invalid("page counts of the series do not add up".into()));
            }
            for (i, &count) in counts.iter().enumerate() {
                let mut prev = NO_PAGE;
                for _ in 0..count {
                    let no = c.u32()?;
                    let series = c.u32()?;
                    let start = c.i64()?;
                    let link = c.u32()?;
                    let len = u16::from_le_bytes(c.array()?);
                    let _pad = c.array::<2>()?;
                    if series as usize != i || link != prev {
                        return Err(CorruptionKind::Invalid(format!(
                            "page {no}: descriptor says series {series}, prev {link}; expected series {i}, prev {prev}"
                        )));
                    }
                    if let Some(&(last, _)) = m.head.series[i].pages.last() {
                        if start <= last.start {
                            return Err(CorruptionKind::Invalid(format!("series {i}: pages out of order")));
                        }
                    }
                    m.head.series[i].pages.push((PageRef { no, start }, len));
                    prev = no;
                }
            }
            for _ in 0..n_free {
                m.head.free.push(c.u32()?);
            }
            c.finish()
        })();
        r.map_err(|k| wrap(&c, k))?;
        // Every page belongs to at most one owner.
        let mut seen = std::collections::HashSet::new();
        let owners =
            m.head.series.iter().flat_map(|s| s.pages.iter().map(|(p, _)| p.no)).chain(m.head.free.iter().copied());
        for no in owners {
            if !seen.insert(no) {
                return Err(corrupt(0, CorruptionKind::Invalid(format!("page {no} has two owners"))));
            }
        }
        Ok(m)
    }

    /// Reads the manifest of data directory `dir`; `None` if there is none yet.
    pub fn load(vfs: &dyn Vfs, dir: &Path) -> Result<Option<Manifest>, StorageError> {
        let path = dir.join(MANIFEST_NAME);
        if !vfs.exists(&path) {
            return Ok(None);
        }
        let file = vfs.open(&path, OpenMode::Read).map_err(|e| StorageError::io("open", &path, e))?;
        let bytes = file.read_all().map_err(|e| StorageError::io("read", &path, e))?;
        Manifest::decode(&path, &bytes).map(Some)
    }

    /// Writes the manifest atomically into `dir`.
    ///
    /// A failure before the rename (creating, writing or syncing `MANIFEST.tmp`, or the rename itself) leaves
    /// the old `MANIFEST` in place and is [`StorageError::NotWritten`]: nothing changed, and a later
    /// checkpoint may try again. A failure to sync the directory after the rename is an ordinary error: which
    /// manifest a crash would leave is then unknown.
    pub fn store(&self, vfs: &dyn Vfs, dir: &Path) -> Result<(), StorageError> {
        let path = dir.join(MANIFEST_NAME);
        let tmp = crate::storage::io::tmp_path(&path);
        let not_written = |op: &'static str, p: &Path, e: std::io::Error| {
            let full = crate::storage::error::is_disk_full(&e);
            let message = StorageError::io(op, p, e).to_string();
            if vfs.exists(&tmp) {
                let _ = vfs.remove_file(&tmp);
            }
            StorageError::NotWritten { full, message }
        };
        if vfs.exists(&tmp) {
            vfs.remove_file(&tmp).map_err(|e| not_written("remove", &tmp, e))?;
        }
        let file = vfs.open(&tmp, OpenMode::CreateNew).map_err(|e| not_written("create", &tmp, e))?;
        file.write_all_at(&self.encode(), 0).map_err(|e| not_written("write", &tmp, e))?;
        file.sync_data().map_err(|e| not_written("fsync", &tmp, e))?;
        drop(file);
        vfs.rename(&tmp, &path).map_err(|e| not_written("rename", &tmp, e))?;
        vfs.sync_dir(dir).map_err(|e| StorageError::io("fsync dir", dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Aggregation;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            checkpoint_lsn: Lsn(17),
            wal_seq: 3,
            metrics: vec![MetricEntry {
                name: "cpu_load".into(),
                config: MetricConfig { frequency: 60, aggregation: Aggregation::Avg },
            }],
            series: vec![SeriesEntry { metric: 0, path: vec![1, 2, 4, b'e', b'm', b'm', b'y', 1, b'n'] }],
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
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(Path::new("M"), &bytes).ok(), Some(m));
    }

    /// Re-signs `bytes` after an edit.
    fn resign(bytes: &mut [u8]) {
        let l = bytes.len();
        let crc = crc32fast::hash(&bytes[..l - 4]);
        bytes[l - 4..].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn page_class_is_recorded_and_a_version_1_manifest_reads_as_512_slot_pages() {
        let mut m = sample();
        m.head.page_slots = 64;
        m.head.series[0].pages =
            vec![(PageRef { no: 1, start: 970 }, 64), (PageRef { no: 2, start: 970 + 64 * 60 }, 3)];
        let bytes = m.encode();
        assert_eq!(bytes[4..8], 2u32.to_le_bytes(), "version");
        assert_eq!(bytes[52..56], 64u32.to_le_bytes(), "page_slots");
        assert_eq!(Manifest::decode(Path::new("M"), &bytes).ok(), Some(m));
        // Version 1 had a reserved word there, whatever it holds: pages of 512.
        let mut v1 = sample().encode();
        v1[4..8].copy_from_slice(&1u32.to_le_bytes());
        v1[52..56].copy_from_slice(&7u32.to_le_bytes());
        resign(&mut v1);
        assert_eq!(Manifest::decode(Path::new("M"), &v1).ok(), Some(sample()));
        // A page class that is not a power of two from 8 to 512, or files that do not fill 4096-byte units.
        for (slots, ppf, what) in [
            (0, 16, "page_slots 0"),
            (48, 16, "page_slots 48"),
            (1024, 16, "page_slots 1024"),
            (4, 16, "page_slots 4"),
            (64, 4, "not a multiple of 4096"),
        ] {
            let mut bad = sample().encode();
            bad[52..56].copy_from_slice(&(slots as u32).to_le_bytes());
            bad[24..28].copy_from_slice(&(ppf as u32).to_le_bytes());
            resign(&mut bad);
            let e = Manifest::decode(Path::new("M"), &bad).expect_err(what);
            assert!(e.to_string().contains(what), "{what}: {e}");
        }
        let mut v3 = sample().encode();
        v3[4..8].copy_from_slice(&3u32.to_le_bytes());
        resign(&mut v3);
        assert!(matches!(
            Manifest::decode(Path::new("M"), &v3),
            Err(StorageError::UnsupportedVersion { version: 3, .. })
        ));
    }

    #[test]
    fn max_and_min_round_trip_and_other_aggregation_bytes_are_refused() {
        let mut m = sample();
        m.metrics = vec![
            MetricEntry {
                name: "backpressure".into(),
                config: MetricConfig { frequency: 60, aggregation: Aggregation::Max },
            },
            MetricEntry { name: "idle".into(), config: MetricConfig { frequency: 60, aggregation: Aggregation::Min } },
        ];
        let bytes = m.encode();
        // Metric table at 56: name_len, 12 name bytes, frequency, then the aggregation byte.
        let at = 56 + 1 + 12 + 8;
        assert_eq!(bytes[at], 3, "Max");
        assert_eq!(bytes[at + 1 + 4 + 8 + 1], 4, "Min");
        assert_eq!(Manifest::decode(Path::new("M"), &bytes).ok(), Some(m));
        for b in [5u8, 6, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[at] = b;
            let l = bad.len();
            let crc = crc32fast::hash(&bad[..l - 4]);
            bad[l - 4..].copy_from_slice(&crc.to_le_bytes());
            let e = Manifest::decode(Path::new("M"), &bad).expect_err("unknown aggregation");
            assert!(e.to_string().contains(&format!("unknown aggregation {b}")), "{e}");
        }
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(Manifest::decode(Path::new("M"), &b).is_err(), "byte {i}");
        }
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(Path::new("M"), &bytes[..cut]).is_err(), "cut {cut}");
        }
    }
}
