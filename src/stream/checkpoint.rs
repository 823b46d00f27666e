//! The checkpoint container of a pipeline: which pipeline, which epoch, the shape of its graph, and one
//! entry (watermark and state bytes) per subtask that has state. Spec: `format/checkpoint.md`.
//!
//! [`Checkpoint::encode`] and [`Checkpoint::decode`] are the codec; a pipeline stores the encoded bytes as a
//! named blob with `Db::put_state`. Decoding treats every byte as untrusted: it checks the magic, the
//! declared length, the CRC32 and the version before it reads the body, bounds-checks every length and
//! count against the bytes it has (it never allocates from an unchecked count) and never panics. The
//! encoding is canonical: whatever decodes re-encodes to the very same bytes.
//!
//! The state bytes of each entry are opaque here; the operators that produce them define them
//! (`format/checkpoint.md`, "Operator states").

use std::fmt;

/// The magic number at bytes 0..8.
pub const MAGIC: [u8; 8] = *b"SILTCKP1";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of the fixed header (magic, version, reserved, file length, epoch).
pub const HEADER_LEN: usize = 32;
/// Bytes of the CRC32 trailer.
pub const TRAILER_LEN: usize = 4;
/// Bit 0 of an entry's `flags`: the entry has a watermark. The other bits are reserved (zero).
pub const FLAG_WATERMARK: u8 = 1;

/// A consistent snapshot of a pipeline: what restore needs to resume it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The pipeline's name.
    pub pipeline: String,
    /// The checkpoint's number; a pipeline's epochs increase.
    pub epoch: u64,
    /// Name and parallelism of each node of the logical graph, in node order. Restore checks that the
    /// pipeline it restores has the same ([`Checkpoint::check_graph`]).
    pub graph: Vec<(String, u32)>,
    /// One entry per subtask that saved something. [`Checkpoint::encode`] writes them sorted by
    /// `(node, subtask)`.
    pub entries: Vec<Entry>,
}

/// The saved state of one subtask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The node's index in [`Checkpoint::graph`].
    pub node: u32,
    /// The subtask, below the node's parallelism.
    pub subtask: u32,
    /// The subtask's watermark at the barrier, if it had one.
    pub watermark: Option<i64>,
    /// What the subtask's `snapshot` returned.
    pub state: Vec<u8>,
}

/// Why checkpoint bytes cannot be used (or do not fit the pipeline).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The bytes do not start with [`MAGIC`].
    #[error("not a checkpoint: bad magic {found:02x?} (want \"SILTCKP1\")")]
    BadMagic {
        /// The first 8 bytes.
        found: [u8; 8],
    },
    /// Written by a version of silt this one cannot read.
    #[error("unsupported checkpoint format version {version} (this build reads {supported})")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The bytes end before what they declare: a read of `needed` bytes at `offset` runs past the end.
    #[error("checkpoint truncated at offset {offset}: {what} needs {needed} bytes, {available} left")]
    Truncated {
        /// Where the read started.
        offset: u64,
        /// What was being read.
        what: &'static str,
        /// Bytes it needed.
        needed: u64,
        /// Bytes there were from `offset` on.
        available: u64,
    },
    /// The CRC32 trailer does not match the bytes before it.
    #[error("checkpoint checksum mismatch: stored {expected:#010x}, computed {got:#010x}")]
    ChecksumMismatch {
        /// The CRC stored in the trailer.
        expected: u32,
        /// The CRC of the bytes before it.
        got: u32,
    },
    /// More bytes than the structure (or the declared file length) accounts for.
    #[error("checkpoint has {count} trailing bytes at offset {offset}")]
    TrailingBytes {
        /// Where the unexplained bytes start.
        offset: u64,
        /// How many there are.
        count: u64,
    },
    /// A field holds an impossible value (bad UTF-8, a reserved bit set, an entry for a node or subtask
    /// that does not exist, entries out of order).
    #[error("invalid checkpoint at offset {offset}: {what}")]
    Invalid {
        /// Where the field starts.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A node of the checkpoint's graph differs from the pipeline's node of the same index.
    #[error(
        "node {node} is {checkpoint_name:?} with parallelism {checkpoint_parallelism} in the checkpoint, \
         {pipeline_name:?} with {pipeline_parallelism} in the pipeline"
    )]
    GraphMismatch {
        /// The node's index.
        node: u32,
        /// Its name in the checkpoint.
        checkpoint_name: String,
        /// Its parallelism in the checkpoint.
        checkpoint_parallelism: u32,
        /// Its name in the pipeline.
        pipeline_name: String,
        /// Its parallelism in the pipeline.
        pipeline_parallelism: u32,
    },
    /// The checkpoint's graph and the pipeline's have different numbers of nodes (and agree on the ones
    /// both have).
    #[error("the checkpoint has {checkpoint} nodes, the pipeline {pipeline}")]
    NodeCount {
        /// Nodes in the checkpoint.
        checkpoint: u32,
        /// Nodes in the pipeline.
        pipeline: u32,
    },
}

impl Checkpoint {
    /// The bytes of `format/checkpoint.md`, entries sorted by `(node, subtask)`.
    ///
    /// # Panics
    ///
    /// If a name, a state or a count exceeds `u32::MAX` (bytes or items), which the format cannot hold.
    /// A checkpoint with two entries for one subtask encodes, but its bytes do not decode.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(HEADER_LEN + 64 + self.entries.iter().map(|e| 21 + e.state.len()).sum::<usize>());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // file_len, patched below
        out.extend_from_slice(&self.epoch.to_le_bytes());
        put_bytes(&mut out, self.pipeline.as_bytes());
        put_u32(&mut out, self.graph.len());
        for (name, parallelism) in &self.graph {
            put_bytes(&mut out, name.as_bytes());
            out.extend_from_slice(&parallelism.to_le_bytes());
        }
        let mut entries: Vec<&Entry> = self.entries.iter().collect();
        entries.sort_by_key(|e| (e.node, e.subtask));
        put_u32(&mut out, entries.len());
        for e in entries {
            out.extend_from_slice(&e.node.to_le_bytes());
            out.extend_from_slice(&e.subtask.to_le_bytes());
            out.push(if e.watermark.is_some() { FLAG_WATERMARK } else { 0 });
            out.extend_from_slice(&e.watermark.unwrap_or(0).to_le_bytes());
            put_bytes(&mut out, &e.state);
        }
        let file_len = (out.len() + TRAILER_LEN) as u64;
        out[16..24].copy_from_slice(&file_len.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads bytes [`Checkpoint::encode`] wrote. Checks, in order: at least the header and trailer, the
    /// magic, the declared length against the bytes given, the CRC32, the version; then the body, field by
    /// field (see `format/checkpoint.md`, "Reading").
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let mut r = Reader { buf: bytes, pos: 0 };
        if bytes.len() < HEADER_LEN + TRAILER_LEN {
            // Name the first field that does not fit.
            r.take(8, "magic")?;
            let found: [u8; 8] = bytes.get(..8).and_then(|b| b.try_into().ok()).unwrap_or_default();
            if found != MAGIC {
                return Err(CheckpointError::BadMagic { found });
            }
            r.take(HEADER_LEN + TRAILER_LEN - 8, "header and trailer")?;
        }
        let magic: [u8; 8] = r.array("magic")?;
        if magic != MAGIC {
            return Err(CheckpointError::BadMagic { found: magic });
        }
        let version = r.u32("version")?;
        let reserved = r.u32("reserved")?;
        let file_len = r.u64("file_len")?;
        let len = bytes.len() as u64;
        if file_len > len {
            return Err(CheckpointError::Truncated {
                offset: 0,
                what: "the file (its declared file_len)",
                needed: file_len,
                available: len,
            });
        }
        if file_len < len {
            return Err(CheckpointError::TrailingBytes { offset: file_len, count: len - file_len });
        }
        let body_end = bytes.len() - TRAILER_LEN;
        let (covered, trailer) = bytes.split_at(body_end);
        let expected = u32::from_le_bytes(trailer.try_into().unwrap_or_default());
        let got = crc32fast::hash(covered);
        if expected != got {
            return Err(CheckpointError::ChecksumMismatch { expected, got });
        }
        if version != VERSION {
            return Err(CheckpointError::UnsupportedVersion { version, supported: VERSION });
        }
        if reserved != 0 {
            return Err(CheckpointError::Invalid {
                offset: 12,
                what: format!("reserved word is {reserved:#x}, not 0"),
            });
        }
        // The body: everything between the header and the trailer.
        let mut r = Reader { buf: covered, pos: r.pos };
        let epoch = r.u64("epoch")?;
        let pipeline = r.string("pipeline name")?;
        let node_count = r.count("node count", 8)?;
        let mut graph = Vec::new();
        for _ in 0..node_count {
            let name = r.string("node name")?;
            let at = r.pos;
            let parallelism = r.u32("node parallelism")?;
            if parallelism == 0 {
                return Err(CheckpointError::Invalid {
                    offset: at as u64,
                    what: format!("node {name:?} has parallelism 0"),
                });
            }
            graph.push((name, parallelism));
        }
        let entry_count = r.count("entry count", 21)?;
        let mut entries: Vec<Entry> = Vec::new();
        for _ in 0..entry_count {
            let at = r.pos as u64;
            let node = r.u32("entry node")?;
            let subtask = r.u32("entry subtask")?;
            let flags_at = r.pos as u64;
            let flags = r.u8("entry flags")?;
            let wm_at = r.pos as u64;
            let watermark = r.i64("entry watermark")?;
            let state = r.bytes("entry state")?.to_vec();
            let Some((name, parallelism)) = graph.get(node as usize) else {
                return Err(CheckpointError::Invalid {
                    offset: at,
                    what: format!("entry for node {node}, but the graph has {} nodes", graph.len()),
                });
            };
            if subtask >= *parallelism {
                return Err(CheckpointError::Invalid {
                    offset: at + 4,
                    what: format!("entry for subtask {subtask} of node {node} ({name:?}) of parallelism {parallelism}"),
                });
            }
            if let Some(prev) = entries.last() {
                if (prev.node, prev.subtask) >= (node, subtask) {
                    return Err(CheckpointError::Invalid {
                        offset: at,
                        what: format!(
                            "entry ({node}, {subtask}) after ({}, {}): entries must be strictly increasing",
                            prev.node, prev.subtask
                        ),
                    });
                }
            }
            if flags & !FLAG_WATERMARK != 0 {
                return Err(CheckpointError::Invalid {
                    offset: flags_at,
                    what: format!("entry flags {flags:#04x} set reserved bits"),
                });
            }
            let watermark = if flags & FLAG_WATERMARK != 0 {
                Some(watermark)
            } else if watermark != 0 {
                return Err(CheckpointError::Invalid {
                    offset: wm_at,
                    what: format!("watermark {watermark} present but its flag is clear"),
                });
            } else {
                None
            };
            entries.push(Entry { node, subtask, watermark, state });
        }
        if r.pos != covered.len() {
            return Err(CheckpointError::TrailingBytes { offset: r.pos as u64, count: (covered.len() - r.pos) as u64 });
        }
        Ok(Checkpoint { pipeline, epoch, graph, entries })
    }

    /// The entry of subtask `subtask` of node `node`, if it saved one.
    pub fn state_of(&self, node: u32, subtask: u32) -> Option<&Entry> {
        self.entries.iter().find(|e| e.node == node && e.subtask == subtask)
    }

    /// Whether `graph` (name and parallelism of each node of the pipeline, in node order) is the graph
    /// this checkpoint was taken of. Reports the first node that differs, then a differing node count.
    pub fn check_graph(&self, graph: &[(String, u32)]) -> Result<(), CheckpointError> {
        for (i, ((cn, cp), (pn, pp))) in self.graph.iter().zip(graph).enumerate() {
            if cn != pn || cp != pp {
                return Err(CheckpointError::GraphMismatch {
                    node: u32::try_from(i).unwrap_or(u32::MAX),
                    checkpoint_name: cn.clone(),
                    checkpoint_parallelism: *cp,
                    pipeline_name: pn.clone(),
                    pipeline_parallelism: *pp,
                });
            }
        }
        if self.graph.len() != graph.len() {
            return Err(CheckpointError::NodeCount {
                checkpoint: u32::try_from(self.graph.len()).unwrap_or(u32::MAX),
                pipeline: u32::try_from(graph.len()).unwrap_or(u32::MAX),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checkpoint {} of {:?} ({} nodes, {} entries)",
            self.epoch,
            self.pipeline,
            self.graph.len(),
            self.entries.len()
        )
    }
}

/// Appends a length as the format's `u32`.
fn put_u32(out: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n);
    assert!(n.is_ok(), "a checkpoint length or count exceeds u32::MAX");
    out.extend_from_slice(&n.unwrap_or(u32::MAX).to_le_bytes());
}

/// Appends a `u32` length and the bytes.
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

/// A little-endian reader over untrusted bytes: every read is bounds-checked and fails as `Truncated`.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CheckpointError> {
        let available = self.buf.len().saturating_sub(self.pos);
        match self.pos.checked_add(n).and_then(|end| self.buf.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(CheckpointError::Truncated {
                offset: self.pos as u64,
                what,
                needed: n as u64,
                available: available as u64,
            }),
        }
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CheckpointError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, CheckpointError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, CheckpointError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, CheckpointError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, CheckpointError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }
    /// A `u32` length and that many bytes.
    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], CheckpointError> {
        let n = self.u32(what)?;
        self.take(n as usize, what)
    }
    fn string(&mut self, what: &'static str) -> Result<String, CheckpointError> {
        let at = self.pos + 4;
        let b = self.bytes(what)?;
        String::from_utf8(b.to_vec()).map_err(|e| CheckpointError::Invalid {
            offset: (at + e.utf8_error().valid_up_to()) as u64,
            what: format!("{what} is not UTF-8"),
        })
    }
    /// A `u32` count of items of at least `min_item` bytes each, checked against the bytes left (so that
    /// a damaged count cannot make the caller loop or allocate for long).
    fn count(&mut self, what: &'static str, min_item: usize) -> Result<u32, CheckpointError> {
        let at = self.pos;
        let n = self.u32(what)?;
        let left = self.buf.len() - self.pos;
        if (n as usize).saturating_mul(min_item) > left {
            return Err(CheckpointError::Truncated {
                offset: at as u64,
                what,
                needed: (n as u64).saturating_mul(min_item as u64),
                available: left as u64,
            });
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            pipeline: "rollup".into(),
            epoch: 7,
            graph: vec![("scan".into(), 2), ("avg".into(), 3), ("sink".into(), 1)],
            entries: vec![
                Entry { node: 1, subtask: 2, watermark: Some(-5), state: vec![1, 2, 3] },
                Entry { node: 0, subtask: 0, watermark: None, state: vec![] },
                Entry { node: 1, subtask: 0, watermark: Some(i64::MAX), state: vec![9; 100] },
            ],
        }
    }

    fn sorted(mut c: Checkpoint) -> Checkpoint {
        c.entries.sort_by_key(|e| (e.node, e.subtask));
        c
    }

    #[test]
    fn round_trip_sorts_entries() {
        let c = sample();
        let b = c.encode();
        assert_eq!(Checkpoint::decode(&b).unwrap(), sorted(c));
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), b.len() as u64);
    }

    #[test]
    fn every_truncation_and_extension_is_an_error() {
        let b = sample().encode();
        for n in 0..b.len() {
            let e = Checkpoint::decode(&b[..n]).unwrap_err();
            assert!(matches!(e, CheckpointError::Truncated { .. }), "{n}: {e}");
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(
            Checkpoint::decode(&long).unwrap_err(),
            CheckpointError::TrailingBytes { offset: b.len() as u64, count: 1 }
        );
    }

    #[test]
    fn header_errors_are_named() {
        let b = sample().encode();
        let mut m = b.clone();
        m[0] = b'X';
        assert!(matches!(Checkpoint::decode(&m), Err(CheckpointError::BadMagic { .. })));
        let mut m = b.clone();
        m[40] ^= 1;
        assert!(matches!(Checkpoint::decode(&m), Err(CheckpointError::ChecksumMismatch { .. })));
        let mut m = b.clone();
        m[8] = 2;
        let n = m.len() - 4;
        let crc = crc32fast::hash(&m[..n]);
        m[n..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            Checkpoint::decode(&m).unwrap_err(),
            CheckpointError::UnsupportedVersion { version: 2, supported: 1 }
        );
    }

    #[test]
    fn graph_mismatch_names_the_node() {
        let c = sample();
        let mut g = c.graph.clone();
        assert_eq!(c.check_graph(&g), Ok(()));
        g[1] = ("sum".into(), 3);
        let e = c.check_graph(&g).unwrap_err();
        assert_eq!(
            e.to_string(),
            "node 1 is \"avg\" with parallelism 3 in the checkpoint, \"sum\" with 3 in the pipeline"
        );
        g[1] = ("avg".into(), 3);
        g.push(("extra".into(), 1));
        assert_eq!(c.check_graph(&g).unwrap_err().to_string(), "the checkpoint has 3 nodes, the pipeline 4");
    }

    fn checkpoint() -> impl Strategy<Value = Checkpoint> {
        let graph = proptest::collection::vec(("[a-z€]{0,6}", 1u32..4), 0..4);
        (".{0,8}", any::<u64>(), graph).prop_flat_map(|(pipeline, epoch, graph)| {
            let slots: Vec<(u32, u32)> =
                graph.iter().enumerate().flat_map(|(n, (_, p))| (0..*p).map(move |s| (n as u32, s))).collect();
            let k = slots.len();
            let entries = proptest::collection::vec(
                (any::<bool>(), proptest::option::of(any::<i64>()), proptest::collection::vec(any::<u8>(), 0..20)),
                k,
            );
            (Just(pipeline), Just(epoch), Just(graph), Just(slots), entries).prop_map(
                |(pipeline, epoch, graph, slots, e)| Checkpoint {
                    pipeline,
                    epoch,
                    graph,
                    entries: slots
                        .into_iter()
                        .zip(e)
                        .filter(|(_, (keep, _, _))| *keep)
                        .map(|((node, subtask), (_, watermark, state))| Entry { node, subtask, watermark, state })
                        .collect(),
                },
            )
        })
    }

    proptest! {
        #[test]
        fn round_trip(c in checkpoint()) {
            let b = c.encode();
            let d = Checkpoint::decode(&b).unwrap();
            prop_assert_eq!(&d, &c);
            prop_assert_eq!(d.encode(), b);
        }

        #[test]
        fn decoding_garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Checkpoint::decode(&b);
        }
    }
}
