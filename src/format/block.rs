//! Data blocks and the block trailer.
//!
//! A data block's payload, before compression, is its records followed by a search array, an
//! array of record offsets, the length of the prefix all its keys share, and the record count:
//!
//! ```text
//! record*  := kind u8 | key_len varint | value_len varint | key | value
//! search   := 8 bytes * count   (key bytes shared_len .. shared_len + 8 of each record,
//!                                zero-padded: a binary search mostly reads only these)
//! offsets  := u32 * count       (offset of each record from the payload's start)
//! shared   := u32               (length of the prefix common to every key of the block)
//! count    := u32
//! ```
//!
//! On disk every block (data, filter, index, key-group index) is followed by a trailer:
//! `compression u8 | uncompressed_len u32 | crc32 u32`, the CRC covering the stored payload and
//! the first five trailer bytes.

use std::cmp::Ordering;

use super::{check_crc, put_varint32, varint32_len, DecodeError, Reader};
use crate::error::Corruption;

/// The size of the trailer that follows every block.
pub const TRAILER_LEN: usize = 1 + 4 + 4;
/// Compression byte: stored as is.
pub const COMPRESSION_NONE: u8 = 0;
/// Compression byte: a zstd frame.
pub const COMPRESSION_ZSTD: u8 = 1;
/// Compression byte: an LZ4 block (the block format, no frame) that decompresses to the
/// trailer's uncompressed length. Valid in segments of version 2 and later only.
pub const COMPRESSION_LZ4: u8 = 2;
/// The largest uncompressed block a reader accepts (bounds allocation on corrupt input).
pub const MAX_BLOCK_LEN: u32 = 256 << 20;

/// What a record says about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// The key has this value.
    Put = 0,
    /// The key was deleted.
    Delete = 1,
    /// Append this operand to the key's older value.
    Merge = 2,
}

impl RecordKind {
    /// Decodes a kind byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(RecordKind::Put),
            1 => Some(RecordKind::Delete),
            2 => Some(RecordKind::Merge),
            _ => None,
        }
    }
}

/// Builds the uncompressed payload of one data block.
#[derive(Debug, Default)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    offsets: Vec<u32>,
    /// Where each record's key starts in `buf`, and its length.
    keys: Vec<(u32, u32)>,
}

impl BlockBuilder {
    /// Appends a record; keys must arrive in strictly increasing order.
    pub fn add(&mut self, kind: RecordKind, key: &[u8], value: &[u8]) {
        self.offsets.push(self.buf.len() as u32);
        self.buf.push(kind as u8);
        put_varint32(&mut self.buf, key.len() as u32);
        put_varint32(&mut self.buf, value.len() as u32);
        self.keys.push((self.buf.len() as u32, key.len() as u32));
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(value);
    }

    /// The payload size if the block were finished now.
    pub fn estimated_len(&self) -> usize {
        self.buf.len() + PER_RECORD_TRAILER * self.offsets.len() + 8
    }

    /// The size a record adds to the block.
    pub fn record_len(key: &[u8], value: &[u8]) -> usize {
        1 + varint32_len(key.len() as u32)
            + varint32_len(value.len() as u32)
            + key.len()
            + value.len()
            + PER_RECORD_TRAILER
    }

    /// The key of the record added last, if the block has one.
    #[inline]
    pub fn last_key(&self) -> Option<&[u8]> {
        self.keys.last().map(|&k| key_at(&self.buf, k))
    }

    /// Whether no record was added since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The number of records added.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Finishes the payload into `out` (whose contents are dropped) and resets the builder.
    /// The records are not copied: `out` takes the builder's buffer, and the builder keeps
    /// `out`'s allocation for the next block.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.clear();
        std::mem::swap(out, &mut self.buf);
        // Keys arrive sorted, so the prefix the first and last share is shared by all.
        let shared = match self.keys.len() {
            0 => 0,
            n => common_prefix(key_at(out, self.keys[0]), key_at(out, self.keys[n - 1])),
        };
        out.reserve(self.keys.len() * PER_RECORD_TRAILER + 8);
        for &k in &self.keys {
            let search = search_bytes(key_at(out, k), shared);
            out.extend_from_slice(&search);
        }
        for off in &self.offsets {
            out.extend_from_slice(&off.to_le_bytes());
        }
        out.extend_from_slice(&(shared as u32).to_le_bytes());
        out.extend_from_slice(&(self.offsets.len() as u32).to_le_bytes());
        self.offsets.clear();
        self.keys.clear();
    }
}

/// The key at `(start, len)` of a block's record bytes.
#[inline]
fn key_at(buf: &[u8], (start, len): (u32, u32)) -> &[u8] {
    &buf[start as usize..(start + len) as usize]
}

/// Bytes per record after the records: 8 search bytes and a 4-byte offset.
const PER_RECORD_TRAILER: usize = 8 + 4;

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Key bytes `shared .. shared + 8`, zero-padded.
#[inline]
fn search_bytes(key: &[u8], shared: usize) -> [u8; 8] {
    let mut out = [0u8; 8];
    let rest = key.get(shared..).unwrap_or(&[]);
    let n = rest.len().min(8);
    out[..n].copy_from_slice(&rest[..n]);
    out
}

/// The compression byte of the block stored at `file[offset..offset + len]`, if the trailer
/// is inside the file (the byte is not verified: [`read_block`] does that).
pub fn compression_of(file: &[u8], offset: u64, len: u32) -> Option<u8> {
    let at = usize::try_from(offset).ok()?.checked_add(len as usize)?;
    file.get(at).copied()
}

/// Appends the trailer for a stored payload that has already been written to `out`.
/// `stored_start` is where the payload begins in `out`.
pub fn append_trailer(out: &mut Vec<u8>, stored_start: usize, compression: u8, uncompressed_len: u32) {
    out.push(compression);
    out.extend_from_slice(&uncompressed_len.to_le_bytes());
    let crc = crc32fast::hash(&out[stored_start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Verifies the block stored at `file[offset..offset + len]` plus its trailer and returns its
/// uncompressed payload (borrowed when it is stored uncompressed). `lz4` says whether the
/// file's format version allows [`COMPRESSION_LZ4`].
pub fn read_block<'a>(
    file: &'a [u8],
    offset: u64,
    len: u32,
    decompressor: &mut Option<zstd::bulk::Decompressor<'static>>,
    lz4: bool,
) -> Result<std::borrow::Cow<'a, [u8]>, DecodeError> {
    let start = usize::try_from(offset).map_err(|_| DecodeError::malformed(offset, "block offset"))?;
    let end = start
        .checked_add(len as usize)
        .and_then(|e| e.checked_add(TRAILER_LEN))
        .ok_or_else(|| DecodeError::malformed(offset, "block length"))?;
    if end > file.len() {
        return Err(DecodeError::new(
            offset,
            Corruption::Truncated { needed: (end - start) as u64, available: file.len().saturating_sub(start) as u64 },
        ));
    }
    let covered = &file[start..end - 4];
    let mut trailer = Reader::new(&file[start + len as usize..end], offset + u64::from(len));
    let compression = trailer.u8()?;
    let uncompressed_len = trailer.u32()?;
    let stored_crc = trailer.u32()?;
    check_crc(covered, stored_crc, offset)?;
    let stored = &file[start..start + len as usize];
    match compression {
        COMPRESSION_NONE => {
            if uncompressed_len != len {
                return Err(DecodeError::malformed(offset, "uncompressed block length"));
            }
            Ok(std::borrow::Cow::Borrowed(stored))
        }
        COMPRESSION_ZSTD => {
            if uncompressed_len > MAX_BLOCK_LEN {
                return Err(DecodeError::malformed(offset, "block length"));
            }
            let dec = match decompressor {
                Some(d) => d,
                None => decompressor.insert(
                    zstd::bulk::Decompressor::new().map_err(|_| DecodeError::new(offset, Corruption::Decompression))?,
                ),
            };
            let mut out = Vec::with_capacity(uncompressed_len as usize);
            let n = dec
                .decompress_to_buffer(stored, &mut out)
                .map_err(|_| DecodeError::new(offset, Corruption::Decompression))?;
            if n != uncompressed_len as usize {
                return Err(DecodeError::new(offset, Corruption::Decompression));
            }
            Ok(std::borrow::Cow::Owned(out))
        }
        COMPRESSION_LZ4 if lz4 => {
            if uncompressed_len > MAX_BLOCK_LEN {
                return Err(DecodeError::malformed(offset, "block length"));
            }
            let mut out = vec![0u8; uncompressed_len as usize];
            let n = lz4_flex::block::decompress_into(stored, &mut out)
                .map_err(|_| DecodeError::new(offset, Corruption::Decompression))?;
            if n != uncompressed_len as usize {
                return Err(DecodeError::new(offset, Corruption::Decompression));
            }
            Ok(std::borrow::Cow::Owned(out))
        }
        _ => Err(DecodeError::malformed(offset, "compression type")),
    }
}

/// A data block payload borrowed from wherever it lives (a memory map or a [`Block`]).
///
/// [`BlockView::new`] checks only the framing (count and offsets array), in O(1);
/// [`BlockView::validate`] checks every record and the key order. Accessors never panic on a
/// malformed payload: a record that does not parse reads as an empty delete.
#[derive(Debug, Clone, Copy)]
pub struct BlockView<'a> {
    data: &'a [u8],
    count: u32,
    shared: usize,
    search_start: usize,
    offsets_start: usize,
}

/// A verified, uncompressed data block that owns its bytes.
#[derive(Debug)]
pub struct Block {
    data: Box<[u8]>,
    count: u32,
    shared: usize,
    search_start: usize,
    offsets_start: usize,
}

/// One record of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// What the record says.
    pub kind: RecordKind,
    /// The key.
    pub key: &'a [u8],
    /// The value (a merge operand for [`RecordKind::Merge`], empty for deletes).
    pub value: &'a [u8],
}

const EMPTY: Record<'static> = Record { kind: RecordKind::Delete, key: &[], value: &[] };

impl<'a> BlockView<'a> {
    /// Checks the framing of a payload: the record count and the offsets array fit.
    /// `offset` is the block's position in its file, for errors.
    pub fn new(data: &'a [u8], offset: u64) -> Result<Self, DecodeError> {
        let len = data.len();
        if len < 8 {
            return Err(DecodeError::new(offset, Corruption::Truncated { needed: 8, available: len as u64 }));
        }
        let mut r = Reader::new(&data[len - 8..], offset + len as u64 - 8);
        let shared = r.u32()? as usize;
        let count = r.u32()?;
        let arrays = (count as usize)
            .checked_mul(PER_RECORD_TRAILER)
            .filter(|n| *n <= len - 8)
            .ok_or_else(|| DecodeError::malformed(offset, "block record count"))?;
        let search_start = len - 8 - arrays;
        let offsets_start = search_start + 8 * count as usize;
        Ok(BlockView { data, count, shared, search_start, offsets_start })
    }

    /// Checks every record: offsets in order and back to back, records well formed, keys
    /// strictly increasing.
    pub fn validate(&self, offset: u64) -> Result<(), DecodeError> {
        let mut prev: Option<&[u8]> = None;
        let mut first: Option<&[u8]> = None;
        let mut expected_offset = 0usize;
        for i in 0..self.count {
            let rec_off = self.offset_of(i);
            if rec_off != expected_offset {
                return Err(DecodeError::malformed(offset + rec_off as u64, "record offset"));
            }
            let (rec, next) = self.parse(rec_off).map_err(|e| DecodeError { offset: offset + e.offset, ..e })?;
            if let Some(p) = prev {
                if p >= rec.key {
                    return Err(DecodeError::malformed(offset + rec_off as u64, "key order"));
                }
            }
            if self.search_of(i as usize) != search_bytes(rec.key, self.shared) {
                return Err(DecodeError::malformed(offset + rec_off as u64, "block search bytes"));
            }
            if let Some(first) = first {
                if rec.key.len() < self.shared || rec.key[..self.shared] != first[..self.shared] {
                    return Err(DecodeError::malformed(offset + rec_off as u64, "block shared prefix"));
                }
            } else if rec.key.len() < self.shared {
                return Err(DecodeError::malformed(offset + rec_off as u64, "block shared prefix"));
            }
            first = first.or(Some(rec.key));
            prev = Some(rec.key);
            expected_offset = next;
        }
        if expected_offset != self.search_start || (self.count == 0 && self.shared != 0) {
            return Err(DecodeError::malformed(offset + expected_offset as u64, "block records"));
        }
        Ok(())
    }

    #[inline]
    fn offset_of(&self, i: u32) -> usize {
        let at = self.offsets_start + 4 * i as usize;
        match self.data.get(at..at + 4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
            None => usize::MAX,
        }
    }

    /// The search bytes of record `i`.
    #[inline]
    fn search_of(&self, i: usize) -> [u8; 8] {
        let at = self.search_start + 8 * i;
        let mut out = [0u8; 8];
        if let Some(b) = self.data.get(at..at + 8) {
            out.copy_from_slice(b);
        }
        out
    }

    #[inline]
    fn parse(&self, at: usize) -> Result<(Record<'a>, usize), DecodeError> {
        let area = self.data.get(..self.search_start).unwrap_or(&[]);
        if at >= area.len() {
            return Err(DecodeError::malformed(at as u64, "record offset"));
        }
        let mut r = Reader::new(&area[at..], at as u64);
        let kind = RecordKind::from_u8(r.u8()?).ok_or_else(|| DecodeError::malformed(at as u64, "record kind"))?;
        let klen = r.varint32()? as usize;
        let vlen = r.varint32()? as usize;
        let key = r.take(klen)?;
        let value = r.take(vlen)?;
        if kind == RecordKind::Delete && !value.is_empty() {
            return Err(DecodeError::malformed(at as u64, "delete with a value"));
        }
        let next = at + (area.len() - at - r.remaining());
        Ok((Record { kind, key, value }, next))
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the block has no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The record at index `i` as its kind and the ranges of its key and value in the
    /// payload (`None` out of range or malformed).
    #[inline]
    pub fn record_spans(&self, i: usize) -> Option<(RecordKind, std::ops::Range<usize>, std::ops::Range<usize>)> {
        if i >= self.count as usize {
            return None;
        }
        let (rec, next) = self.parse(self.offset_of(i as u32)).ok()?;
        let value_start = next - rec.value.len();
        let key_start = value_start - rec.key.len();
        Some((rec.kind, key_start..value_start, value_start..next))
    }

    /// The record at index `i` (out of range, or malformed: an empty delete).
    #[inline]
    pub fn record(&self, i: usize) -> Record<'a> {
        if i >= self.count as usize {
            return EMPTY;
        }
        self.parse(self.offset_of(i as u32)).map(|(r, _)| r).unwrap_or(EMPTY)
    }

    /// The index of the first record whose key is `>= key` (`len()` if none), and the index of
    /// a record whose key equals `key`, if the search met one (in a valid block, the same).
    #[inline]
    fn search(&self, key: &[u8]) -> (usize, Option<usize>) {
        let count = self.count as usize;
        if count == 0 {
            return (0, None);
        }
        // Against the block's shared prefix first: a key outside it is before or after all.
        let shared = self.record(0).key.get(..self.shared).unwrap_or(&[]);
        let head = &key[..key.len().min(shared.len())];
        match head.cmp(&shared[..head.len()]) {
            Ordering::Less => return (0, None),
            Ordering::Greater => return (count, None),
            Ordering::Equal if key.len() < shared.len() => return (0, None),
            Ordering::Equal => {}
        }
        let target = u64::from_be_bytes(search_bytes(key, shared.len()));
        let (mut lo, mut hi) = (0usize, count);
        let mut exact = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let order = match u64::from_be_bytes(self.search_of(mid)).cmp(&target) {
                Ordering::Equal => self.record(mid).key.cmp(key),
                other => other,
            };
            match order {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => {
                    hi = mid;
                    exact = Some(mid);
                }
            }
        }
        (lo, exact)
    }

    /// The index of the first record whose key is `>= key` (`len()` if none).
    pub fn seek(&self, key: &[u8]) -> usize {
        self.search(key).0
    }

    /// The record with exactly this key.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<Record<'a>> {
        // The record whose key compared equal: even in a block whose keys are out of order
        // (one that passed its checksum but not `validate`), never another key's record.
        self.search(key).1.map(|i| self.record(i))
    }
}

impl Block {
    /// Decodes and fully validates a block payload ([`BlockView::validate`]).
    pub fn decode(data: Box<[u8]>, offset: u64) -> Result<Self, DecodeError> {
        let block = Self::new(data, offset)?;
        block.view().validate(offset)?;
        Ok(block)
    }

    /// Takes a payload whose framing checks out ([`BlockView::new`]); its bytes were verified
    /// by their checksum.
    pub fn new(data: Box<[u8]>, offset: u64) -> Result<Self, DecodeError> {
        let BlockView { count, shared, search_start, offsets_start, .. } = BlockView::new(&data, offset)?;
        Ok(Block { data, count, shared, search_start, offsets_start })
    }

    /// The uncompressed payload.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The block as a view.
    #[inline]
    pub fn view(&self) -> BlockView<'_> {
        BlockView {
            data: &self.data,
            count: self.count,
            shared: self.shared,
            search_start: self.search_start,
            offsets_start: self.offsets_start,
        }
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the block has no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The record at index `i` (see [`BlockView::record`]).
    #[inline]
    pub fn record(&self, i: usize) -> Record<'_> {
        self.view().record(i)
    }

    /// See [`BlockView::seek`].
    pub fn seek(&self, key: &[u8]) -> usize {
        self.view().seek(key)
    }

    /// See [`BlockView::get`].
    pub fn get(&self, key: &[u8]) -> Option<Record<'_>> {
        self.view().get(key)
    }

    /// The memory the block holds.
    pub fn size_in_memory(&self) -> usize {
        self.data.len() + std::mem::size_of::<Self>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(records: &[(RecordKind, &[u8], &[u8])]) -> Vec<u8> {
        let mut b = BlockBuilder::default();
        for (k, key, value) in records {
            b.add(*k, key, value);
        }
        let mut out = Vec::new();
        b.finish(&mut out);
        out
    }

    #[test]
    fn block_serde_roundtrip() {
        let recs: &[(RecordKind, &[u8], &[u8])] = &[
            (RecordKind::Put, b"\0\0a", b"1"),
            (RecordKind::Delete, b"\0\0b", b""),
            (RecordKind::Merge, b"\0\x01c", &[7u8; 300]),
        ];
        let block = Block::decode(build(recs).into_boxed_slice(), 0).unwrap();
        assert_eq!(block.len(), 3);
        for (i, (k, key, value)) in recs.iter().enumerate() {
            assert_eq!(block.record(i), Record { kind: *k, key, value });
        }
        assert_eq!(block.seek(b"\0\0b"), 1);
        assert_eq!(block.seek(b"\0\0bb"), 2);
        assert_eq!(block.seek(b"\xff"), 3);
        assert_eq!(block.get(b"\0\x01c").unwrap().value.len(), 300);
        assert!(block.get(b"\0\x01").is_none());
    }

    /// Keys with long shared prefixes, search bytes that tie, keys that are prefixes of
    /// others: seek and get agree with a linear search.
    #[test]
    fn search_matches_a_linear_scan() {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for a in 0..4u8 {
            for b in 0..5u8 {
                let mut k = b"\x00\x07state-name/".to_vec();
                k.push(a);
                k.extend(std::iter::repeat_n(b'x', b as usize * 3));
                keys.push(k.clone());
                k.extend_from_slice(&[0, b]);
                keys.push(k);
            }
        }
        keys.sort();
        keys.dedup();
        let mut builder = BlockBuilder::default();
        for k in &keys {
            builder.add(RecordKind::Put, k, b"v");
        }
        let mut out = Vec::new();
        builder.finish(&mut out);
        let block = Block::decode(out.into_boxed_slice(), 0).unwrap();
        let mut probes = keys.clone();
        for k in &keys {
            for cut in 0..k.len() {
                probes.push(k[..cut].to_vec());
            }
            let mut longer = k.clone();
            longer.push(0);
            probes.push(longer);
        }
        probes.push(b"\x00\x08".to_vec());
        probes.push(b"\x00\x06\xff".to_vec());
        for p in &probes {
            let expected = keys.iter().position(|k| k >= p).unwrap_or(keys.len());
            assert_eq!(block.seek(p), expected, "seek {p:?}");
            assert_eq!(block.get(p).is_some(), keys.contains(p), "get {p:?}");
        }
    }

    /// Regression: a block that passes its checksum but has keys out of order (a writer bug
    /// or a crafted file) made `get` return the record where the binary search ended, which
    /// could hold another key. `get` must return the record it compared equal, or nothing.
    #[test]
    fn get_on_an_unsorted_block_never_returns_another_key() {
        let keys: Vec<Vec<u8>> = (0..40u32).map(|i| vec![0, 1, ((i * 37) % 41) as u8, i as u8]).collect();
        let mut builder = BlockBuilder::default();
        for k in &keys {
            builder.add(RecordKind::Put, k, k);
        }
        let mut out = Vec::new();
        builder.finish(&mut out);
        let view = BlockView::new(&out, 0).unwrap();
        assert!(view.validate(0).is_err(), "the block is out of order");
        for k in &keys {
            if let Some(rec) = view.get(k) {
                assert_eq!(rec.key, &k[..]);
            }
        }
    }

    #[test]
    fn block_detect_corruption() {
        let good = build(&[(RecordKind::Put, b"ab", b"x"), (RecordKind::Put, b"ac", b"y")]);
        // Every truncation and every single-byte change either decodes to a valid block or
        // fails with an error; none panics.
        for cut in 0..good.len() {
            let _ = Block::decode(good[..cut].to_vec().into_boxed_slice(), 0);
        }
        for i in 0..good.len() {
            for x in [1u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= x;
                if let Ok(b) = Block::decode(bad.into_boxed_slice(), 0) {
                    for j in 0..b.len() {
                        let _ = b.record(j);
                    }
                }
            }
        }
        // Unsorted keys are refused.
        let unsorted = build(&[(RecordKind::Put, b"b", b""), (RecordKind::Put, b"a", b"")]);
        assert!(Block::decode(unsorted.into_boxed_slice(), 0).is_err());
    }

    #[test]
    fn trailer_checks_crc_and_compression() {
        let payload = build(&[(RecordKind::Put, b"key", b"value")]);
        let mut file = payload.clone();
        append_trailer(&mut file, 0, COMPRESSION_NONE, payload.len() as u32);
        let mut dec = None;
        assert_eq!(&*read_block(&file, 0, payload.len() as u32, &mut dec, true).unwrap(), &payload[..]);
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x10;
            assert!(read_block(&bad, 0, payload.len() as u32, &mut dec, true).is_err(), "flip at {i}");
        }
        assert!(read_block(&file[..file.len() - 1], 0, payload.len() as u32, &mut dec, true).is_err());

        let compressed = zstd::bulk::compress(&payload, 1).unwrap();
        let mut file = compressed.clone();
        append_trailer(&mut file, 0, COMPRESSION_ZSTD, payload.len() as u32);
        assert_eq!(&*read_block(&file, 0, compressed.len() as u32, &mut dec, true).unwrap(), &payload[..]);
    }

    #[test]
    fn lz4_blocks_decompress_to_their_length_where_the_version_allows_them() {
        let payload = build(&[(RecordKind::Put, b"key-1", &[b'v'; 200]), (RecordKind::Put, b"key-2", &[b'w'; 200])]);
        let compressed = lz4_flex::block::compress(&payload);
        assert!(compressed.len() < payload.len());
        let stored = |stream: &[u8], uncompressed_len: u32| {
            let mut file = stream.to_vec();
            append_trailer(&mut file, 0, COMPRESSION_LZ4, uncompressed_len);
            file
        };
        let mut dec = None;
        let n = compressed.len() as u32;
        let file = stored(&compressed, payload.len() as u32);
        assert_eq!(&*read_block(&file, 0, n, &mut dec, true).unwrap(), &payload[..]);
        // In a version without LZ4 the byte is unknown.
        let err = read_block(&file, 0, n, &mut dec, false).unwrap_err();
        assert_eq!(err, DecodeError::malformed(0, "compression type"));
        // A length that does not match what the stream holds, a stream cut short, and a
        // length beyond the bound: typed errors (with valid checksums).
        for bad_len in [payload.len() as u32 - 1, payload.len() as u32 + 1] {
            let err = read_block(&stored(&compressed, bad_len), 0, n, &mut dec, true).unwrap_err();
            assert_eq!(err, DecodeError::new(0, Corruption::Decompression), "length {bad_len}");
        }
        let cut = &compressed[..compressed.len() - 3];
        let err = read_block(&stored(cut, payload.len() as u32), 0, cut.len() as u32, &mut dec, true).unwrap_err();
        assert_eq!(err, DecodeError::new(0, Corruption::Decompression));
        let err = read_block(&stored(&compressed, MAX_BLOCK_LEN + 1), 0, n, &mut dec, true).unwrap_err();
        assert_eq!(err, DecodeError::malformed(0, "block length"));
    }
}
