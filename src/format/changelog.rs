//! The changelog file: the store's writes in the order they were made, in checksummed frames.
//! `format-spec/changelog.md` is the byte-level specification:
//!
//! ```text
//! header := magic "EDLG" | version u32 | log_seq u64 | crc32 u32 (of the 16 bytes before it)
//! frame  := payload_len u32 | crc32 u32 (of the payload) | payload
//! record := kind u8 | group_len varint | key_len varint | value_len varint | key | value
//! ```
//!
//! A frame holds whole records, at least one. A checkpoint names a changelog file with the
//! length that belongs to it; a reader reads exactly that many bytes, and every one of them must
//! be part of a frame.

use super::{check_crc, put_varint32, DecodeError, Reader, RecordKind};
use crate::error::Corruption;

/// The magic bytes of a changelog file.
pub const CHANGELOG_MAGIC: [u8; 4] = *b"EDLG";
/// The changelog version this build writes and the newest it reads.
pub const CHANGELOG_VERSION: u32 = 1;
/// The length of the file header.
pub const CHANGELOG_HEADER_LEN: usize = 20;
/// The length of a frame's header (payload length and CRC).
pub const FRAME_HEADER_LEN: usize = 8;

/// The header of changelog file `log_seq`.
pub fn encode_header(log_seq: u64) -> [u8; CHANGELOG_HEADER_LEN] {
    let mut h = [0u8; CHANGELOG_HEADER_LEN];
    h[0..4].copy_from_slice(&CHANGELOG_MAGIC);
    h[4..8].copy_from_slice(&CHANGELOG_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&log_seq.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The longest key a record may hold (the store's limit).
pub const MAX_LOG_KEY: usize = u16::MAX as usize;
/// The longest value a record may hold (the store's limit).
pub const MAX_LOG_VALUE: usize = 128 << 20;

/// Appends one record to a frame payload being built. `group_len` is the length of the group
/// the key was written under (the entries of one map), 0 for none.
#[inline]
pub fn put_record(out: &mut Vec<u8>, kind: RecordKind, key: &[u8], group_len: usize, value: &[u8]) {
    out.reserve(1 + 3 + 3 + 5 + key.len() + value.len());
    out.push(kind as u8);
    // Keys and values are bounded by the store (64 KiB, 128 MiB): both fit a u32.
    put_varint32(out, group_len as u32);
    put_varint32(out, key.len() as u32);
    put_varint32(out, value.len() as u32);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// The frame header of `payload`.
pub fn frame_header(payload: &[u8]) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    // A frame is cut long before 4 GiB (the writer sends a few hundred KiB at a time, and one
    // record is at most 128 MiB plus its key).
    h[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[4..8].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    h
}

/// Why a changelog file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangelogError {
    /// The bytes are damaged.
    Corrupt(DecodeError),
    /// A newer format version than this build reads.
    Version(u32),
}

impl ChangelogError {
    /// The error as the crate reports it, naming `path`.
    pub fn into_error(self, path: &std::path::Path) -> crate::Error {
        match self {
            ChangelogError::Corrupt(d) => d.into_error(path),
            ChangelogError::Version(found) => {
                crate::Error::UnsupportedVersion { file: path.to_path_buf(), found, supported: CHANGELOG_VERSION }
            }
        }
    }
}

impl From<DecodeError> for ChangelogError {
    fn from(e: DecodeError) -> Self {
        ChangelogError::Corrupt(e)
    }
}

/// One record of a changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRecord<'a> {
    /// What the write did.
    pub kind: RecordKind,
    /// The length of the group the key was written under (a prefix of the key), 0 for none.
    pub group_len: usize,
    /// The key.
    pub key: &'a [u8],
    /// The value (Put), operand (Merge) or nothing (Delete).
    pub value: &'a [u8],
}

/// Reads the records of a changelog file's bytes, verifying each frame before its records are
/// returned.
#[derive(Debug)]
pub struct ChangelogReader<'a> {
    bytes: &'a [u8],
    log_seq: u64,
    /// The next frame's offset.
    next_frame: usize,
    /// The current frame's payload, its offset in the file, and the position within it.
    frame: &'a [u8],
    frame_at: usize,
    pos: usize,
}

impl<'a> ChangelogReader<'a> {
    /// Checks the header of `bytes`, the whole file as a checkpoint names it.
    pub fn new(bytes: &'a [u8]) -> Result<Self, ChangelogError> {
        let mut r = Reader::new(bytes, 0);
        let magic = r.array::<4>()?;
        if magic != CHANGELOG_MAGIC {
            return Err(DecodeError::new(0, Corruption::BadMagic).into());
        }
        let version = r.u32()?;
        let log_seq = r.u64()?;
        let crc = r.u32()?;
        check_crc(&bytes[..16], crc, 16)?;
        if version == 0 {
            return Err(DecodeError::malformed(4, "changelog version 0").into());
        }
        if version > CHANGELOG_VERSION {
            return Err(ChangelogError::Version(version));
        }
        Ok(ChangelogReader { bytes, log_seq, next_frame: CHANGELOG_HEADER_LEN, frame: &[], frame_at: 0, pos: 0 })
    }

    /// The file's sequence number, from its header.
    pub fn log_seq(&self) -> u64 {
        self.log_seq
    }

    /// The next record, `None` at the end of the bytes.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<LogRecord<'a>>, DecodeError> {
        if self.pos == self.frame.len() {
            if self.next_frame == self.bytes.len() {
                return Ok(None);
            }
            self.open_frame()?;
        }
        let base = (self.frame_at + self.pos) as u64;
        let mut r = Reader::new(&self.frame[self.pos..], base);
        let kind = r.u8()?;
        let kind = RecordKind::from_u8(kind).ok_or(DecodeError::malformed(base, "record kind"))?;
        let group_len = r.varint32()? as usize;
        let key_len = r.varint32()? as usize;
        let value_len = r.varint32()? as usize;
        let key = r.take(key_len)?;
        let value = r.take(value_len)?;
        if kind == RecordKind::Delete && !value.is_empty() {
            return Err(DecodeError::malformed(base, "a delete with a value"));
        }
        if key.len() < 2 || key.len() > MAX_LOG_KEY || value.len() > MAX_LOG_VALUE {
            return Err(DecodeError::malformed(base, "key or value length"));
        }
        let group_ok = match kind {
            RecordKind::Merge => group_len == 0,
            _ => group_len == 0 || (2..=key.len()).contains(&group_len),
        };
        if !group_ok {
            return Err(DecodeError::malformed(base, "group length"));
        }
        self.pos = self.frame.len() - r.remaining();
        Ok(Some(LogRecord { kind, group_len, key, value }))
    }

    fn open_frame(&mut self) -> Result<(), DecodeError> {
        let at = self.next_frame;
        let mut r = Reader::new(&self.bytes[at..], at as u64);
        let len = r.u32()? as usize;
        let crc = r.u32()?;
        if len == 0 {
            return Err(DecodeError::malformed(at as u64, "an empty frame"));
        }
        let payload = r.take(len)?;
        check_crc(payload, crc, (at + 4) as u64)?;
        self.frame = payload;
        self.frame_at = at + FRAME_HEADER_LEN;
        self.pos = 0;
        self.next_frame = at + FRAME_HEADER_LEN + len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Rec<'a> = (RecordKind, &'a [u8], &'a [u8]);
    type Owned = (RecordKind, Vec<u8>, Vec<u8>);

    fn file(frames: &[&[Rec<'_>]]) -> Vec<u8> {
        let mut out = encode_header(7).to_vec();
        for f in frames {
            let mut payload = Vec::new();
            for (k, key, value) in f.iter() {
                put_record(&mut payload, *k, key, 0, value);
            }
            out.extend_from_slice(&frame_header(&payload));
            out.extend_from_slice(&payload);
        }
        out
    }

    fn all(bytes: &[u8]) -> Result<Vec<Owned>, ChangelogError> {
        let mut r = ChangelogReader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next()? {
            out.push((rec.kind, rec.key.to_vec(), rec.value.to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn records_come_back_in_order_across_frames() {
        let bytes = file(&[
            &[(RecordKind::Put, b"\x00\x01a", b"1"), (RecordKind::Merge, b"\x00\x01b", b"xy")],
            &[(RecordKind::Delete, b"\x00\x02c", b"")],
        ]);
        let got = all(&bytes).unwrap();
        assert_eq!(
            got,
            vec![
                (RecordKind::Put, b"\x00\x01a".to_vec(), b"1".to_vec()),
                (RecordKind::Merge, b"\x00\x01b".to_vec(), b"xy".to_vec()),
                (RecordKind::Delete, b"\x00\x02c".to_vec(), Vec::new()),
            ]
        );
        assert_eq!(ChangelogReader::new(&bytes).unwrap().log_seq(), 7);
        assert_eq!(all(&encode_header(1)).unwrap(), Vec::new());
    }

    #[test]
    fn every_truncation_and_bit_flip_is_a_typed_error() {
        let bytes = file(&[&[(RecordKind::Put, b"\x00\x01a", b"1")], &[(RecordKind::Put, b"\x00\x01b", b"22")]]);
        let first_frame_end = CHANGELOG_HEADER_LEN + FRAME_HEADER_LEN + 8;
        for cut in 0..bytes.len() {
            // Cutting exactly between frames leaves a shorter, valid log.
            if cut == CHANGELOG_HEADER_LEN || cut == first_frame_end {
                assert!(all(&bytes[..cut]).is_ok());
            } else {
                assert!(all(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(all(&b).is_err(), "flip of bit {bit} of byte {i}");
            }
        }
    }

    #[test]
    fn future_versions_and_bad_records_are_refused() {
        let mut h = encode_header(1);
        h[4..8].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&h[..16]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(ChangelogReader::new(&h).unwrap_err(), ChangelogError::Version(2));
        // A delete with a value, a one-byte key, an unknown kind, a group longer than its key and
        // a merge in a group, each in a well-sealed frame.
        for payload in [
            &[1u8, 0, 3, 1, 0, 1, b'a', b'v'][..],
            &[0u8, 0, 1, 0, 9][..],
            &[9u8, 0, 2, 0, 0, 1][..],
            &[0u8, 4, 3, 0, 0, 1, b'a'][..],
            &[2u8, 2, 3, 1, 0, 1, b'a', b'v'][..],
        ] {
            let mut bytes = encode_header(1).to_vec();
            bytes.extend_from_slice(&frame_header(payload));
            bytes.extend_from_slice(payload);
            assert!(matches!(all(&bytes), Err(ChangelogError::Corrupt(_))));
        }
    }
}
