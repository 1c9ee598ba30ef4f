//! The bodies of the fuzz targets, one plain function per target.
//!
//! Each function takes arbitrary bytes, feeds them to a decoder of on-disk data, and exercises
//! everything the decoded value offers. Errors are the expected outcome for almost every input;
//! a panic (including an integer overflow in a debug build or a failed assertion below) is a
//! bug. The assertions check only what the library promises for input it accepted.
//!
//! This file uses only `eddy` and `std`: `tests/fuzz_regressions.rs` includes it by path to
//! run the committed corpus and the regression inputs in the normal test suite.

use std::path::Path;
use std::sync::Arc;

use eddy::format::block::{read_block, TRAILER_LEN};
use eddy::format::key_hash64;
use eddy::format::store_manifest::{ManifestSegment, StoreManifest};
use eddy::format::{Block, SegmentReader};
use eddy::io::{FaultFs, FileBytes};
use eddy::keygroup::KeyGroupRange;
use eddy::store::StoreOptions;

/// The targets by name, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/` call them.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("segment", segment),
    ("block", block),
    ("store_manifest", store_manifest),
    ("store_open", store_open),
];

/// The target function of a name in [`TARGETS`].
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// At most this many data blocks of a segment are read one by one (after `verify`).
const MAX_BLOCKS: usize = 256;
/// At most this many records of a block are visited.
const MAX_RECORDS: usize = 4096;
/// At most this many point lookups per input.
const MAX_LOOKUPS: usize = 64;
/// At most this many entries of a store scan are read.
const MAX_SCAN: usize = 100_000;

/// A segment file: open, verify, read every block and record, look up keys.
pub fn segment(data: &[u8]) {
    let path = Path::new("/fuzz/0000000001.seg");
    let Ok(seg) = SegmentReader::open(FileBytes::from_vec(data.to_vec()), path) else { return };
    let verified = seg.verify().is_ok();
    let _ = (seg.path(), seg.records(), seg.file_len(), seg.index_memory(), seg.filter_len());
    assert_eq!(seg.file_len(), data.len() as u64);

    let mut dec = None;
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for i in 0..seg.block_count().min(MAX_BLOCKS) {
        let block = match seg.read_block(i, &mut dec) {
            Ok(block) => block,
            Err(e) => {
                assert!(!verified, "verify passed but block {i} does not read: {e}");
                continue;
            }
        };
        assert!(!block.is_empty(), "an empty block was accepted");
        let n = block.len().min(MAX_RECORDS);
        for j in 0..n {
            let rec = block.record(j);
            if verified {
                assert_eq!(seg.find_block(rec.key), Some(i), "verified segment: record {j} of block {i}");
                assert_eq!(block.seek(rec.key), j);
                assert_eq!(block.get(rec.key), Some(rec));
            }
        }
        let _ = block.record(block.len());
        let _ = block.size_in_memory();
        for j in [0, block.len() / 2, block.len() - 1] {
            push_key_variants(&mut keys, block.record(j).key);
        }
    }
    assert!(seg.read_block(seg.block_count(), &mut dec).is_err());

    for e in seg.key_groups() {
        let first = seg.first_block_from_key_group(e.key_group);
        assert_eq!(first, Some(e.first_block as usize));
        push_key_variants(&mut keys, &e.key_group.to_be_bytes());
        if let Some(kg) = e.key_group.checked_add(1) {
            let _ = seg.first_block_from_key_group(kg);
        }
    }
    let _ = seg.first_block_from_key_group(u16::MAX);
    input_keys(&mut keys, data);

    for key in keys.iter().take(MAX_LOOKUPS) {
        let _ = seg.may_contain_hash(key_hash64(key));
        if let Some(i) = seg.find_block(key) {
            assert!(i < seg.block_count());
            if let Ok(block) = seg.read_block(i, &mut dec) {
                check_lookup(&block, key);
            }
        }
    }
}

/// A data block payload (`Block::decode`) and a stored block with its trailer (`read_block`).
pub fn block(data: &[u8]) {
    for offset in [0u64, data.len() as u64] {
        if let Ok(b) = Block::decode(data.to_vec().into_boxed_slice(), offset) {
            check_block(&b, data);
        }
    }

    let mut dec = None;
    // The whole input as one stored block followed by its trailer.
    if let Some(len) = data.len().checked_sub(TRAILER_LEN) {
        if let Ok(payload) = read_block(data, 0, len as u32, &mut dec) {
            if let Ok(b) = Block::decode(payload.into_owned().into_boxed_slice(), 0) {
                check_block(&b, data);
            }
        }
    }
    // A handle from the first 12 bytes, as is and reduced to the input's size.
    if data.len() >= 12 {
        let offset = u64::from_le_bytes(data[..8].try_into().unwrap());
        let len = u32::from_le_bytes(data[8..12].try_into().unwrap());
        let _ = read_block(data, offset, len, &mut dec);
        let n = data.len() as u64 + 1;
        let (offset, len) = (offset % n, (u64::from(len) % n) as u32);
        if let Ok(payload) = read_block(data, offset, len, &mut dec) {
            if let std::borrow::Cow::Borrowed(stored) = &payload {
                assert_eq!(*stored, &data[offset as usize..offset as usize + len as usize]);
            }
            if let Ok(b) = Block::decode(payload.into_owned().into_boxed_slice(), offset) {
                check_block(&b, data);
            }
        }
    }
}

/// The store manifest: decode, and for accepted input, the round trip.
pub fn store_manifest(data: &[u8]) {
    let Ok(m) = StoreManifest::decode(data) else { return };
    let again = m.encode();
    assert_eq!(again, data, "decode accepted bytes that encode differently");
    assert_eq!(StoreManifest::decode(&again).as_ref(), Ok(&m));
    for (i, s) in m.segments.iter().enumerate() {
        assert!(s.id < m.next_segment_id);
        assert!(m.segments[..i].iter().all(|t| t.id != s.id));
        assert!(s.mask.iter().all(|(a, b)| a <= b));
    }
}

/// Flags of the first byte of a `store_open` input.
pub mod open_flags {
    /// Write a valid manifest naming the segments (masks from the manifest piece) instead of
    /// the manifest piece itself.
    pub const SYNTHESIZE_MANIFEST: u8 = 1 << 0;
    /// Write no `MANIFEST` at all (the segment files are then garbage to collect).
    pub const NO_MANIFEST: u8 = 1 << 1;
    /// Write only the first segment.
    pub const ONE_SEGMENT: u8 = 1 << 2;
    /// Add leftover files that open removes (a `.tmp` and an unnamed segment).
    pub const STRAY_FILES: u8 = 1 << 3;
    /// Write a key and compact (merging the segments) before the end.
    pub const WRITE_AND_COMPACT: u8 = 1 << 4;
    /// End with `close` (which writes a manifest) instead of a plain drop.
    pub const CLOSE: u8 = 1 << 5;
}

/// The pieces of a `store_open` input:
/// `flags u8 | manifest_len u16 | manifest | segment1_len u32 | segment1 | segment2`.
/// Lengths past the end are cut to what is there, so every input splits.
pub struct StoreInput<'a> {
    /// See [`open_flags`].
    pub flags: u8,
    /// The `MANIFEST` file (or its masks, with `SYNTHESIZE_MANIFEST`).
    pub manifest: &'a [u8],
    /// The newest segment file.
    pub segment1: &'a [u8],
    /// The next segment file.
    pub segment2: &'a [u8],
}

impl<'a> StoreInput<'a> {
    /// Splits an input.
    pub fn split(data: &'a [u8]) -> Option<Self> {
        let (&flags, mut rest) = data.split_first()?;
        let mut take = |width: usize| -> &'a [u8] {
            let mut len_bytes = [0u8; 8];
            let w = width.min(rest.len());
            len_bytes[..w].copy_from_slice(&rest[..w]);
            rest = &rest[w..];
            let len = (u64::from_le_bytes(len_bytes) as usize).min(rest.len());
            let (piece, tail) = rest.split_at(len);
            rest = tail;
            piece
        };
        let manifest = take(2);
        let segment1 = take(4);
        Some(StoreInput { flags, manifest, segment1, segment2: rest })
    }

    /// The inverse of [`split`](Self::split).
    pub fn join(&self) -> Vec<u8> {
        let mut out = vec![self.flags];
        out.extend_from_slice(&(self.manifest.len() as u16).to_le_bytes());
        out.extend_from_slice(self.manifest);
        out.extend_from_slice(&(self.segment1.len() as u32).to_le_bytes());
        out.extend_from_slice(self.segment1);
        out.extend_from_slice(self.segment2);
        out
    }
}

/// A store opened on a directory made of the input's pieces; reads everything, then ends.
pub fn store_open(data: &[u8]) {
    use open_flags::*;
    let Some(input) = StoreInput::split(data) else { return };
    let flags = input.flags;
    let fs = Arc::new(FaultFs::new());
    let dir = Path::new("/db");

    let (manifest, ids) = if flags & SYNTHESIZE_MANIFEST != 0 {
        let mut masks = input.manifest.chunks_exact(4).take(8).map(|c| {
            let (a, b) = (u16::from_be_bytes([c[0], c[1]]), u16::from_be_bytes([c[2], c[3]]));
            (a.min(b), a.max(b))
        });
        let m = StoreManifest {
            next_segment_id: 3,
            segments: vec![
                ManifestSegment { id: 2, mask: masks.by_ref().take(4).collect() },
                ManifestSegment { id: 1, mask: masks.collect() },
            ],
        };
        (m.encode(), [2, 1])
    } else {
        let ids = match StoreManifest::decode(input.manifest) {
            Ok(m) => [
                m.segments.first().map_or(1, |s| s.id),
                m.segments.get(1).map_or(2, |s| s.id),
            ],
            Err(_) => [1, 2],
        };
        (input.manifest.to_vec(), ids)
    };
    if flags & NO_MANIFEST == 0 {
        fs.write_file(&dir.join("MANIFEST"), &manifest).unwrap();
    }
    fs.write_file(&dir.join(segment_file_name(ids[0])), input.segment1).unwrap();
    if flags & ONE_SEGMENT == 0 && ids[1] != ids[0] {
        fs.write_file(&dir.join(segment_file_name(ids[1])), input.segment2).unwrap();
    }
    if flags & STRAY_FILES != 0 {
        fs.write_file(&dir.join("MANIFEST.tmp"), input.segment2).unwrap();
        fs.write_file(&dir.join(segment_file_name(ids[0].max(ids[1]).saturating_add(7))), input.segment1).unwrap();
    }

    let opts = StoreOptions::new().file_system(fs.clone()).memory_budget(1 << 20).block_size(256);
    let Ok(mut store) = opts.open(dir) else { return };

    let mut keys: Vec<Vec<u8>> = Vec::new();
    if let Ok(mut it) = store.scan_range(&[], None) {
        let mut n = 0;
        while let Ok(Some((k, _))) = it.next_entry() {
            if n % 16 == 0 {
                push_key_variants(&mut keys, k);
            }
            n += 1;
            if n >= MAX_SCAN {
                break;
            }
        }
    }
    input_keys(&mut keys, data);
    for key in keys.iter().take(MAX_LOOKUPS) {
        let _ = store.get(key);
    }
    if let Some(key) = keys.first() {
        if let Ok(it) = store.scan_prefix(&key[..key.len().min(3)]) {
            let _ = it.next_entry_count(MAX_SCAN);
        }
        if key.len() >= 2 {
            let kg = u16::from_be_bytes([key[0], key[1]]);
            if let Ok(range) = KeyGroupRange::new(kg, kg.saturating_add(1)) {
                if let Ok(it) = store.scan_key_groups(range) {
                    let _ = it.next_entry_count(MAX_SCAN);
                }
            }
        }
    }
    let _ = store.verify();
    let _ = store.stats();
    let _ = store.segment_paths();

    if flags & WRITE_AND_COMPACT != 0 {
        if store.put(b"\x00\x01fuzz", b"value").is_ok() {
            let _ = store.compact();
            let _ = store.get(b"\x00\x01fuzz");
        }
    }
    if flags & CLOSE != 0 {
        if store.close().is_ok() {
            // What a clean close wrote must open again.
            let reopened = StoreOptions::new().file_system(fs).memory_budget(1 << 20).open(dir);
            if let Ok(mut s) = reopened {
                if let Ok(it) = s.scan_range(&[], None) {
                    let _ = it.next_entry_count(MAX_SCAN);
                }
            }
        }
    } else {
        drop(store);
    }
}

/// The name the store gives segment `id`'s file.
pub fn segment_file_name(id: u64) -> String {
    format!("{id:010}.seg")
}

trait DrainCount {
    fn next_entry_count(self, max: usize) -> usize;
}

impl DrainCount for eddy::store::StoreIter<'_> {
    /// Reads up to `max` entries; the count read before the end or an error.
    fn next_entry_count(mut self, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.next_entry() {
                Ok(Some(_)) => n += 1,
                _ => break,
            }
        }
        n
    }
}

/// A key and its neighbours: a longer key, a shorter one, and the next at the last byte.
fn push_key_variants(keys: &mut Vec<Vec<u8>>, key: &[u8]) {
    keys.push(key.to_vec());
    let mut longer = key.to_vec();
    longer.push(0);
    keys.push(longer);
    if let Some((last, init)) = key.split_last() {
        keys.push(init.to_vec());
        let mut next = key.to_vec();
        *next.last_mut().unwrap() = last.wrapping_add(1);
        keys.push(next);
    }
}

/// A few keys cut from the input itself.
fn input_keys(keys: &mut Vec<Vec<u8>>, data: &[u8]) {
    keys.push(Vec::new());
    keys.push(vec![0xff; 3]);
    for start in [0, 8, data.len() / 2, data.len().saturating_sub(16)] {
        for len in [2, 6, 12] {
            if let Some(k) = data.get(start..start + len) {
                keys.push(k.to_vec());
            }
        }
    }
}

/// Every record of an accepted block, and lookups of its keys.
fn check_block(b: &Block, data: &[u8]) {
    let n = b.len().min(MAX_RECORDS);
    let mut prev: Option<&[u8]> = None;
    for i in 0..n {
        let rec = b.record(i);
        if let Some(p) = prev {
            assert!(p < rec.key, "record {i}: keys out of order in an accepted block");
        }
        prev = Some(rec.key);
        assert_eq!(b.seek(rec.key), i);
        assert_eq!(b.get(rec.key), Some(rec));
    }
    let _ = b.record(b.len());
    let _ = b.size_in_memory();
    let mut keys = Vec::new();
    if !b.is_empty() {
        for i in [0, b.len() / 2, b.len() - 1] {
            push_key_variants(&mut keys, b.record(i).key);
        }
    }
    input_keys(&mut keys, data);
    for key in keys.iter().take(MAX_LOOKUPS) {
        check_lookup(b, key);
    }
}

/// `seek` and `get` of one key agree with each other and with the records.
fn check_lookup(b: &Block, key: &[u8]) {
    let i = b.seek(key);
    assert!(i <= b.len());
    if i < b.len() {
        assert!(b.record(i).key >= key);
    }
    if i > 0 {
        assert!(b.record(i - 1).key < key);
    }
    match b.get(key) {
        Some(rec) => {
            assert_eq!(rec.key, key);
            assert_eq!(b.record(i), rec);
        }
        None => assert!(i == b.len() || b.record(i).key != key),
    }
}
