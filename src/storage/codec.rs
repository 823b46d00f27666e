//! Value codecs for block chunks. (Placeholder with the raw codec only; the measured codecs replace it.)

/// A value codec; the discriminant is stored on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    /// Little-endian `f64`s.
    Raw = 0,
}

impl Codec {
    /// The codec for a stored byte, if known.
    pub fn from_u8(b: u8) -> Option<Codec> {
        match b {
            0 => Some(Codec::Raw),
            _ => None,
        }
    }
}

/// What is wrong with an encoding.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CodecError {
    /// The bytes do not hold the expected number of values.
    #[error("{got} bytes for {n} values")]
    Length {
        /// Values expected.
        n: usize,
        /// Bytes given.
        got: usize,
    },
}

/// Appends the encoding of `values` to `out`.
pub fn encode(codec: Codec, values: &[f64], out: &mut Vec<u8>) {
    match codec {
        Codec::Raw => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
    }
}

/// Decodes exactly `n` values from `bytes` into `out` (appended).
pub fn decode(codec: Codec, bytes: &[u8], n: usize, out: &mut Vec<f64>) -> Result<(), CodecError> {
    match codec {
        Codec::Raw => {
            if bytes.len() != n.saturating_mul(8) {
                return Err(CodecError::Length { n, got: bytes.len() });
            }
            out.extend(bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))));
            Ok(())
        }
    }
}
