//! The store manifest: the segment set a store had when it was closed cleanly.
//!
//! ```text
//! magic "EDSM" | version u32 | next_segment_id u64
//! tag_count u32 | tag* := state_count u32 | (state u16 | count u32 | version u32 * count) * state_count
//! segment_count u32
//! segment*  := id u64 | tag u32 | max_value_len u32 | mask_count u32 | (first_kg u16 | last_kg u16) * mask_count
//! crc32 u32   (of everything before it)
//! ```
//!
//! A segment's mask lists the key-group ranges that were dropped after it was written: its
//! records in those key groups are invisible. Its tag (an index into the tags) says which
//! serializer versions wrote its records; `max_value_len` is the length of its longest value,
//! `u32::MAX` when unknown. Version 1 has neither the tags nor the two segment fields
//! (`format-spec/store-manifest.md`).

use super::{check_crc, DecodeError, Reader, SchemaTag};
use crate::error::Corruption;

/// The magic bytes of a store manifest.
pub const MANIFEST_MAGIC: [u8; 4] = *b"EDSM";
/// The store manifest version this build writes and the newest it reads.
pub const MANIFEST_VERSION: u32 = 2;
/// The oldest store manifest version this build reads.
pub const FIRST_MANIFEST_VERSION: u32 = 1;
/// The smallest manifest of any version: magic, version, next segment id, one count.
const FIXED_LEN: usize = MANIFEST_MAGIC.len() + 4 + 8 + 4;
const SEGMENT_FIXED_LEN_V1: usize = 8 + 4;
const SEGMENT_FIXED_LEN: usize = 8 + 4 + 4 + 4;
const UNKNOWN_LEN: u32 = u32::MAX;
const MASK_LEN: usize = 2 + 2;
const CRC_LEN: usize = 4;

/// A segment as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSegment {
    /// The segment id (its file is named after it).
    pub id: u64,
    /// Key-group ranges (inclusive) whose records are dropped.
    pub mask: Vec<(u16, u16)>,
    /// The serializer versions that wrote its records (empty in a version 1 manifest).
    pub tag: SchemaTag,
    /// The length of its longest value, if known (never in a version 1 manifest).
    pub max_value_len: Option<u32>,
}

impl ManifestSegment {
    /// A segment with mask `mask`, no tag and no known longest value.
    pub fn new(id: u64, mask: Vec<(u16, u16)>) -> Self {
        ManifestSegment { id, mask, tag: SchemaTag::default(), max_value_len: None }
    }
}

/// The decoded store manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreManifest {
    /// The id the next segment file will get.
    pub next_segment_id: u64,
    /// The live segments, newest first.
    pub segments: Vec<ManifestSegment>,
}

/// Why a manifest could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestError {
    /// The bytes are damaged.
    Corrupt(DecodeError),
    /// A newer version than this build reads.
    Version(u32),
}

impl From<DecodeError> for ManifestError {
    fn from(e: DecodeError) -> Self {
        ManifestError::Corrupt(e)
    }
}

impl StoreManifest {
    /// Encodes the manifest.
    pub fn encode(&self) -> Vec<u8> {
        let mut tags: Vec<&SchemaTag> = Vec::new();
        for s in &self.segments {
            if !tags.contains(&&s.tag) {
                tags.push(&s.tag);
            }
        }
        let mut out = Vec::with_capacity(FIXED_LEN + 4 + self.segments.len() * SEGMENT_FIXED_LEN + CRC_LEN);
        out.extend_from_slice(&MANIFEST_MAGIC);
        out.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
        out.extend_from_slice(&self.next_segment_id.to_le_bytes());
        out.extend_from_slice(&(tags.len() as u32).to_le_bytes());
        for t in &tags {
            out.extend_from_slice(&(t.versions().len() as u32).to_le_bytes());
            for (state, versions) in t.versions() {
                out.extend_from_slice(&state.to_le_bytes());
                out.extend_from_slice(&(versions.len() as u32).to_le_bytes());
                for v in versions {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        out.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        for s in &self.segments {
            out.extend_from_slice(&s.id.to_le_bytes());
            let tag = tags.iter().position(|t| **t == s.tag).unwrap_or(0) as u32;
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&s.max_value_len.unwrap_or(UNKNOWN_LEN).to_le_bytes());
            out.extend_from_slice(&(s.mask.len() as u32).to_le_bytes());
            for (a, b) in &s.mask {
                out.extend_from_slice(&a.to_le_bytes());
                out.extend_from_slice(&b.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and verifies the manifest file at `path`, with errors that name it.
    pub fn decode_file(bytes: &[u8], path: &std::path::Path) -> crate::Result<Self> {
        Self::decode(bytes).map_err(|e| match e {
            ManifestError::Corrupt(d) => d.into_error(path),
            ManifestError::Version(found) => {
                crate::Error::UnsupportedVersion { file: path.to_path_buf(), found, supported: MANIFEST_VERSION }
            }
        })
    }

    /// Decodes and verifies a manifest.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() < FIXED_LEN + CRC_LEN {
            return Err(DecodeError::new(
                0,
                Corruption::Truncated { needed: (FIXED_LEN + CRC_LEN) as u64, available: bytes.len() as u64 },
            )
            .into());
        }
        let mut r = Reader::new(bytes, 0);
        if r.array::<4>()? != MANIFEST_MAGIC {
            return Err(DecodeError::new(0, Corruption::BadMagic).into());
        }
        let version = r.u32()?;
        // The checksum comes first, so that a damaged version byte reads as damage; every
        // version ends with the CRC32 of the bytes before it.
        let body_len = bytes.len() - CRC_LEN;
        let stored =
            u32::from_le_bytes([bytes[body_len], bytes[body_len + 1], bytes[body_len + 2], bytes[body_len + 3]]);
        check_crc(&bytes[..body_len], stored, body_len as u64)?;
        if !(FIRST_MANIFEST_VERSION..=MANIFEST_VERSION).contains(&version) {
            return Err(ManifestError::Version(version));
        }
        let mut r = Reader::new(&bytes[..body_len], 0);
        r.take(MANIFEST_MAGIC.len() + 4)?;
        let next_segment_id = r.u64()?;
        let tags = if version >= 2 { tags(&mut r)? } else { Vec::new() };
        let count = r.u32()?;
        let fixed = if version >= 2 { SEGMENT_FIXED_LEN } else { SEGMENT_FIXED_LEN_V1 };
        if u64::from(count) * fixed as u64 > r.remaining() as u64 {
            return Err(DecodeError::malformed(r.offset(), "segment count").into());
        }
        let mut segments = Vec::with_capacity(count as usize);
        let mut used = 0;
        for _ in 0..count {
            let at = r.offset();
            let id = r.u64()?;
            let (tag, max_value_len) = if version >= 2 {
                // Tags are listed in the order the segments first use them, each once.
                let index = r.u32()? as usize;
                if index > used || index >= tags.len() {
                    return Err(DecodeError::malformed(at + 8, "tag index").into());
                }
                used = used.max(index + 1);
                let len = r.u32()?;
                (tags[index].clone(), (len != UNKNOWN_LEN).then_some(len))
            } else {
                (SchemaTag::default(), None)
            };
            let masks = r.u32()?;
            if u64::from(masks) * MASK_LEN as u64 > r.remaining() as u64 {
                return Err(DecodeError::malformed(at, "mask count").into());
            }
            let mut mask = Vec::with_capacity(masks as usize);
            for _ in 0..masks {
                let (a, b) = (r.u16()?, r.u16()?);
                if a > b {
                    return Err(DecodeError::malformed(at, "mask range").into());
                }
                mask.push((a, b));
            }
            if id >= next_segment_id || segments.iter().any(|s: &ManifestSegment| s.id == id) {
                return Err(DecodeError::malformed(at, "segment id").into());
            }
            segments.push(ManifestSegment { id, mask, tag, max_value_len });
        }
        if used != tags.len() {
            return Err(DecodeError::malformed((FIXED_LEN - 4) as u64, "a tag no segment uses").into());
        }
        if r.remaining() != 0 {
            return Err(DecodeError::malformed(r.offset(), "trailing bytes").into());
        }
        Ok(StoreManifest { next_segment_id, segments })
    }
}

/// The tags of a version 2 manifest.
fn tags(r: &mut Reader<'_>) -> Result<Vec<SchemaTag>, DecodeError> {
    // Every counted item takes at least four bytes: counts are bounded by what is left.
    let bounded = |r: &Reader<'_>, n: u32, what| {
        if u64::from(n) * 4 > r.remaining() as u64 {
            Err(DecodeError::malformed(r.offset() - 4, what))
        } else {
            Ok(n)
        }
    };
    let n = r.u32()?;
    let n = bounded(r, n, "tag count")?;
    let mut tags = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let states = r.u32()?;
        let states = bounded(r, states, "state count")?;
        let mut versions: Vec<(u16, Vec<u32>)> = Vec::with_capacity(states as usize);
        for _ in 0..states {
            let at = r.offset();
            let state = r.u16()?;
            let m = r.u32()?;
            let m = bounded(r, m, "version count")?;
            let vs = (0..m).map(|_| r.u32()).collect::<Result<Vec<u32>, _>>()?;
            if versions.last().is_some_and(|(s, _)| *s >= state) {
                return Err(DecodeError::malformed(at, "tag states out of order"));
            }
            versions.push((state, vs));
        }
        let tag = SchemaTag::new(versions);
        if tags.contains(&tag) {
            return Err(DecodeError::malformed(r.offset(), "tag repeated"));
        }
        tags.push(tag);
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_serde_roundtrip_and_detect_corruption() {
        let m = StoreManifest {
            next_segment_id: 9,
            segments: vec![
                ManifestSegment { id: 8, mask: vec![], tag: SchemaTag::new([(1, vec![2, 1])]), max_value_len: Some(7) },
                ManifestSegment { id: 5, mask: vec![], tag: SchemaTag::default(), max_value_len: None },
                ManifestSegment {
                    id: 3,
                    mask: vec![(0, 5), (9, 9)],
                    tag: SchemaTag::new([(1, vec![2, 1])]),
                    max_value_len: Some(0),
                },
            ],
        };
        let bytes = m.encode();
        assert_eq!(StoreManifest::decode(&bytes).unwrap(), m);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(StoreManifest::decode(&bad).is_err(), "flip at {i}");
        }
        for cut in 0..bytes.len() {
            assert!(StoreManifest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
