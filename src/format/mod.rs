//! The on-disk formats, byte by byte, as specified in `format-spec/`.
//!
//! # Overview of types
//!
//! - [`block`]: data blocks (sorted records) and the trailer (compression, length, CRC32) that
//!   every block of a segment carries;
//! - [`bloom`]: the blocked Bloom filter of a segment's keys;
//! - [`segment`]: [`SegmentWriter`] writes a segment file, [`SegmentReader`] opens and reads
//!   one, verifying every byte before it is used;
//! - [`store_manifest`]: the store's clean-close manifest (the segment set and its masks).
//!
//! All integers are little-endian. Every decoder takes untrusted bytes and returns a
//! [`DecodeError`] (an offset and a [`Corruption`]) instead of panicking.

pub mod block;
pub mod bloom;
pub mod changelog;
pub mod checkpoint;
pub mod meta;
pub mod savepoint;
mod schema;
pub mod segment;
pub mod store_manifest;

pub use block::{Block, BlockView, RecordKind};
pub use schema::SchemaTag;
pub use segment::{SegmentReader, SegmentWriter, WriterOptions};

use crate::error::Corruption;

/// A decoding failure: where in the file it was found, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset within the file.
    pub offset: u64,
    /// What is wrong.
    pub kind: Corruption,
}

impl DecodeError {
    pub(crate) fn new(offset: u64, kind: Corruption) -> Self {
        DecodeError { offset, kind }
    }

    pub(crate) fn malformed(offset: u64, what: &'static str) -> Self {
        DecodeError { offset, kind: Corruption::Malformed(what) }
    }

    pub(crate) fn into_error(self, file: impl Into<std::path::PathBuf>) -> crate::Error {
        crate::Error::corrupted(file, self.offset, self.kind)
    }
}

/// Checked little-endian reads over a byte slice that sits at `base` in its file.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], base: u64) -> Self {
        Reader { bytes, pos: 0, base }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::new(
                self.offset(),
                Corruption::Truncated { needed: n as u64, available: self.remaining() as u64 },
            ));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// An unsigned LEB128 varint of at most 5 bytes that fits in a u32.
    pub(crate) fn varint32(&mut self) -> Result<u32, DecodeError> {
        let start = self.offset();
        let mut value: u32 = 0;
        for i in 0..5 {
            let byte = self.u8()?;
            let bits = u32::from(byte & 0x7f);
            if i == 4 && bits > 0x0f {
                return Err(DecodeError::malformed(start, "varint"));
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::malformed(start, "varint"))
    }
}

/// Appends `v` as an unsigned LEB128 varint.
#[inline]
pub(crate) fn put_varint32(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The number of bytes [`put_varint32`] writes for `v`.
#[inline]
pub(crate) fn varint32_len(v: u32) -> usize {
    match v {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0x0fff_ffff => 4,
        _ => 5,
    }
}

/// Verifies that `stored` is the CRC32 of `covered`.
pub(crate) fn check_crc(covered: &[u8], stored: u32, offset: u64) -> Result<(), DecodeError> {
    let computed = crc32fast::hash(covered);
    if computed == stored {
        Ok(())
    } else {
        Err(DecodeError::new(offset, Corruption::ChecksumMismatch { stored, computed }))
    }
}

/// A stable 64-bit hash of a key, used by the Bloom filter. Its definition is part of the
/// segment format (`format-spec/segment.md`): never change it without a format version.
pub fn key_hash64(key: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = (key.len() as u64).wrapping_mul(K);
    let mut chunks = key.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(K).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // The rest, zero-padded to a little-endian word. For keys of 8 bytes or more it is
        // read as the key's last 8 bytes, shifted: one load, where copying the rest into a
        // zeroed word would make the load wait for the bytes to be stored first.
        let word = if key.len() >= 8 {
            let mut last = [0u8; 8];
            last.copy_from_slice(&key[key.len() - 8..]);
            u64::from_le_bytes(last) >> (8 * (8 - rest.len()))
        } else {
            rest.iter().rev().fold(0u64, |w, &b| (w << 8) | u64::from(b))
        };
        h = (h ^ word).wrapping_mul(K).rotate_left(29);
    }
    // fmix64 from MurmurHash3.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_length() {
        for v in [0u32, 1, 127, 128, 300, 16383, 16384, 1 << 21, (1 << 28) - 1, 1 << 28, u32::MAX] {
            let mut out = Vec::new();
            put_varint32(&mut out, v);
            assert_eq!(out.len(), varint32_len(v), "length of {v}");
            let mut r = Reader::new(&out, 0);
            assert_eq!(r.varint32().unwrap(), v);
            assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn varint_rejects_overlong_and_truncated() {
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x7f], 0).varint32().is_err());
        assert!(Reader::new(&[0x80, 0x80], 0).varint32().is_err());
        assert!(Reader::new(&[0xff; 6], 0).varint32().is_err());
    }

    #[test]
    fn key_hash_is_stable() {
        // Part of the on-disk format: these values must never change.
        assert_eq!(key_hash64(b""), 0);
        assert_eq!(key_hash64(b"eddy"), key_hash64(b"eddy"));
        assert_ne!(key_hash64(b"eddy"), key_hash64(b"eddz"));
        assert_ne!(key_hash64(b"\0"), key_hash64(b""));
    }
}
