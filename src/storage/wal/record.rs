//! WAL record framing: the codec of `format/wal.md` ("Records").
//!
//! A frame is a 24-byte header, the payload, and zero padding to the next multiple of 8:
//!
//! ```text
//! | crc32 u32 | len u32 | lsn u64 | kind u8 | reserved [u8; 7] | payload [len] | pad to 8 |
//! ```
//!
//! The CRC32 (IEEE, `crc32fast`) covers header bytes 4..24 and the payload. A header of 24 zero bytes marks
//! the end of the records in a segment (segments are preallocated with zeros).

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::storage::error::CorruptionKind;

/// Size of a frame header in bytes.
pub const FRAME_HEADER_LEN: usize = 24;
/// Frames start at multiples of this.
pub const FRAME_ALIGN: usize = 8;
/// The largest payload a frame may carry (16 MiB). Larger batches are split by the writer.
pub const MAX_PAYLOAD_LEN: usize = 16 << 20;

/// The header of a frame as it lies on disk.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct FrameHeader {
    /// CRC32 of header bytes 4..24 and the payload.
    pub crc: U32,
    /// Payload length in bytes; at least 1.
    pub len: U32,
    /// Log sequence number of the record.
    pub lsn: U64,
    /// Record kind (see [`super::payload::Kind`]).
    pub kind: u8,
    /// Zero; a reader refuses other values.
    pub reserved: [u8; 7],
}

/// What [`decode_frame`] found at an offset.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    /// A valid frame.
    Record {
        /// Its LSN.
        lsn: u64,
        /// Its kind byte.
        kind: u8,
        /// Its payload.
        payload: &'a [u8],
        /// Offset of the next frame.
        next: usize,
    },
    /// Zeros: no more records in this segment.
    End,
    /// Not a valid frame: a torn write, or corruption.
    Bad(CorruptionKind),
}

/// Total bytes a frame with a payload of `len` bytes takes, padding included.
pub fn frame_len(len: usize) -> usize {
    (FRAME_HEADER_LEN + len).div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

fn checksum(header_tail: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header_tail);
    h.update(payload);
    h.finalize()
}

/// Appends one frame to `out`, which must already be 8-byte aligned in its final position.
pub fn encode_frame(out: &mut Vec<u8>, lsn: u64, kind: u8, payload: &[u8]) {
    debug_assert!(!payload.is_empty() && payload.len() <= MAX_PAYLOAD_LEN);
    let mut header = FrameHeader {
        crc: U32::new(0),
        len: U32::new(payload.len() as u32),
        lsn: U64::new(lsn),
        kind,
        reserved: [0; 7],
    };
    let crc = checksum(&header.as_bytes()[4..], payload);
    header.crc = U32::new(crc);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    let padded = frame_len(payload.len()) - FRAME_HEADER_LEN - payload.len();
    out.extend(std::iter::repeat_n(0u8, padded));
}

/// Decodes the frame at `offset` of `buf` (a whole segment, or its tail). Never panics on any input.
pub fn decode_frame(buf: &[u8], offset: usize) -> Frame<'_> {
    let Some(rest) = buf.get(offset..) else {
        return Frame::End;
    };
    if rest.len() < FRAME_HEADER_LEN {
        // Too short to hold a header: only zeros may stand here.
        return if rest.iter().all(|&b| b == 0) {
            Frame::End
        } else {
            Frame::Bad(CorruptionKind::OutOfBounds("partial frame header".into()))
        };
    }
    let Ok((header, body)) = FrameHeader::ref_from_prefix(rest) else {
        return Frame::Bad(CorruptionKind::OutOfBounds("frame header".into()));
    };
    if header.as_bytes().iter().all(|&b| b == 0) {
        return Frame::End;
    }
    let len = header.len.get() as usize;
    if len == 0 || len > MAX_PAYLOAD_LEN {
        return Frame::Bad(CorruptionKind::Invalid(format!("frame payload length {len}")));
    }
    let Some(payload) = body.get(..len) else {
        return Frame::Bad(CorruptionKind::OutOfBounds(format!(
            "frame payload of {len} bytes runs past the segment end"
        )));
    };
    let got = checksum(&header.as_bytes()[4..], payload);
    let expected = header.crc.get();
    if got != expected {
        return Frame::Bad(CorruptionKind::ChecksumMismatch { expected, got });
    }
    if header.reserved != [0; 7] {
        return Frame::Bad(CorruptionKind::Invalid("reserved header bytes are not zero".into()));
    }
    Frame::Record { lsn: header.lsn.get(), kind: header.kind, payload, next: offset + frame_len(len) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frame_round_trip_and_padding() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 7, 3, b"hello");
        assert_eq!(buf.len(), 32);
        encode_frame(&mut buf, 8, 1, &[1u8; 8]);
        assert_eq!(buf.len(), 64);
        buf.extend_from_slice(&[0u8; 24]);
        let Frame::Record { lsn, kind, payload, next } = decode_frame(&buf, 0) else { panic!() };
        assert_eq!((lsn, kind, payload, next), (7, 3, &b"hello"[..], 32));
        let Frame::Record { lsn, next, .. } = decode_frame(&buf, 32) else { panic!() };
        assert_eq!((lsn, next), (8, 64));
        assert_eq!(decode_frame(&buf, 64), Frame::End);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 42, 3, b"some payload bytes");
        for bit in 0..(FRAME_HEADER_LEN + 18) * 8 {
            let mut damaged = buf.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(decode_frame(&damaged, 0), Frame::Bad(_)),
                "bit {bit} flipped but the frame still decoded"
            );
        }
    }

    #[test]
    fn torn_frame_is_bad_not_end() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 1, 3, &[9u8; 100]);
        for cut in 1..buf.len() {
            let mut torn = buf[..cut].to_vec();
            torn.resize(buf.len(), 0);
            let got = decode_frame(&torn, 0);
            if cut >= FRAME_HEADER_LEN + 100 {
                assert!(matches!(got, Frame::Record { .. }));
            } else {
                assert!(matches!(got, Frame::Bad(_)), "cut at {cut}: {got:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), off in 0usize..220) {
            let _ = decode_frame(&bytes, off);
        }

        #[test]
        fn round_trip(lsn in any::<u64>(), kind in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 1..300)) {
            let mut buf = Vec::new();
            encode_frame(&mut buf, lsn, kind, &payload);
            prop_assert_eq!(buf.len() % FRAME_ALIGN, 0);
            let next = buf.len();
            prop_assert_eq!(decode_frame(&buf, 0), Frame::Record { lsn, kind, payload: &payload, next });
        }
    }
}
