//! The committed test vectors of `format-spec/vectors/` against the specification.
//!
//! Each vector decodes, through the public API, to exactly the logical content that
//! `format-spec/vectors/README.md` lists; a small decoder written from `format-spec/segment.md`
//! alone (not from the library) reads the same files and must agree with it byte for byte;
//! every single-byte change of a vector gives a typed error. The constants the specification
//! states (lengths, offsets, limits, `key_hash64` values) are checked against the code, and the
//! tables, byte-by-byte walks and hex dumps of the vectors README against the vectors, so that
//! the documents and the code cannot drift apart silently.
//!
//! The vectors are written by the real writers. Regenerate them only for a format change (a
//! new zstd release may compress differently, which changes the bytes but not the content):
//!
//! ```text
//! cargo test --test spec_vectors -- --ignored regenerate
//! ```

use std::cmp::Ordering;
use std::path::Path;
use std::sync::Arc;

use eddy::format::block::{COMPRESSION_LZ4, COMPRESSION_NONE, COMPRESSION_ZSTD, MAX_BLOCK_LEN, TRAILER_LEN};
use eddy::format::segment::{
    Compression, KeyGroupEntry, FIRST_SEGMENT_VERSION, FOOTER_LEN, HEADER_LEN, SEGMENT_MAGIC, SEGMENT_VERSION,
};
use eddy::format::store_manifest::{
    ManifestError, ManifestSegment, StoreManifest, FIRST_MANIFEST_VERSION, MANIFEST_MAGIC, MANIFEST_VERSION,
};
use eddy::format::SchemaTag;
use eddy::format::{key_hash64, RecordKind, SegmentReader, SegmentWriter, WriterOptions};
use eddy::io::{FaultFs, FileBytes, FileSystem};
use eddy::store::{StoreOptions, MANIFEST_FILE, MAX_KEY_LEN, MAX_VALUE_LEN};
use eddy::{Corruption, Error};

mod spec_common;
use spec_common::*;

type Rec = (RecordKind, &'static [u8], &'static [u8]);

/// `segment-v1-small.seg`: no compression, 48-byte blocks, 10 Bloom bits per key.
const SMALL: &[Rec] = &[
    (RecordKind::Put, b"\x00\x01apple", b"red"),
    (RecordKind::Put, b"\x00\x01banana", b"yellow"),
    (RecordKind::Delete, b"\x00\x01cherry", b""),
    (RecordKind::Merge, b"\x00\x07count", b"+1"),
    (RecordKind::Put, b"\x00\x07name", b"eddy"),
    (RecordKind::Put, b"\x01\x2ck", b""),
    (RecordKind::Merge, b"\x01\x2clog", b"a"),
];
const SMALL_OPTS: WriterOptions =
    WriterOptions { block_size: 48, compression: Compression::None, bloom_bits_per_key: 10 };

/// `segment-v1-zstd.seg`: zstd level 3, 256-byte blocks, 10 Bloom bits per key.
const ZSTD: &[Rec] = &[
    (RecordKind::Merge, b"\x00\x01apple", b";ripe"),
    (RecordKind::Delete, b"\x00\x01banana", b""),
    (RecordKind::Put, b"\x00\x01cherry", b"dark red"),
    (RecordKind::Put, b"\x0a\x00sensor-01", b"reading=0001;reading=0001;reading=0001;reading=0001;reading=0001;"),
    (RecordKind::Put, b"\x0a\x00sensor-02", b"reading=0002;reading=0002;reading=0002;reading=0002;reading=0002;"),
    (RecordKind::Put, b"\x0a\x00sensor-03", b"reading=0003;reading=0003;reading=0003;reading=0003;reading=0003;"),
    (RecordKind::Put, b"\x0a\x00sensor-04", b"reading=0004;reading=0004;reading=0004;reading=0004;reading=0004;"),
    (RecordKind::Put, b"\x0a\x00sensor-05", b"reading=0005;reading=0005;reading=0005;reading=0005;reading=0005;"),
    (RecordKind::Delete, b"\x0a\x00sensor-06", b""),
];
const ZSTD_OPTS: WriterOptions =
    WriterOptions { block_size: 256, compression: Compression::Zstd(3), bloom_bits_per_key: 10 };

/// `segment-v2-lz4.seg`: the records of the zstd vector, LZ4, 256-byte blocks, 10 Bloom bits
/// per key.
const LZ4_OPTS: WriterOptions =
    WriterOptions { block_size: 256, compression: Compression::Lz4, bloom_bits_per_key: 10 };

/// `manifest-v1.bin`: segment 2 (the zstd vector) is newer than segment 1 (the small one), and
/// key groups 0x0100..=0x01ff were dropped after segment 1 was written. Version 1 has no tags
/// and no longest values.
fn manifest() -> StoreManifest {
    StoreManifest {
        next_segment_id: 3,
        segments: vec![ManifestSegment::new(2, vec![]), ManifestSegment::new(1, vec![(0x0100, 0x01ff)])],
    }
}

/// The longest value of a vector's records.
fn longest(records: &[Rec]) -> u32 {
    records.iter().map(|(_, _, v)| v.len() as u32).max().unwrap_or(0)
}

/// `manifest-v2.bin`: the store of `manifest-v1.bin`, with segment 2 tagged with state 1's
/// serializer versions 1 and 1, and segment 1 with those and state 2's version 3; each with
/// its longest value.
fn manifest_v2() -> StoreManifest {
    let mut m = manifest();
    m.segments[0].tag = SchemaTag::new([(1, vec![1, 1])]);
    m.segments[0].max_value_len = Some(longest(ZSTD));
    m.segments[1].tag = SchemaTag::new([(1, vec![1, 1]), (2, vec![3])]);
    m.segments[1].max_value_len = Some(longest(SMALL));
    m
}

/// What a segment vector holds beyond its records: its layout, as `format-spec/vectors/README.md`
/// lists it.
struct Expected {
    file: &'static str,
    version: u32,
    records: &'static [Rec],
    opts: WriterOptions,
    file_len: usize,
    /// Per data block: offset, stored length, compression byte, uncompressed length, records.
    blocks: &'static [(u64, u32, u8, u32, u32)],
    /// Per data block: the shared prefix length, and each record's search bytes (big-endian).
    payloads: &'static [(u32, &'static [u64])],
    /// The filter, index and key-group index blocks: offset and stored length.
    meta: [(u64, u32); 3],
    /// Key group, first block, last block, records.
    key_groups: &'static [(u16, u32, u32, u32)],
}

const SMALL_EXPECTED: Expected = Expected {
    file: "segment-v1-small.seg",
    version: 1,
    records: SMALL,
    opts: SMALL_OPTS,
    file_len: 604,
    blocks: &[
        (8, 33, 0, 33, 1),
        (50, 37, 0, 37, 1),
        (96, 31, 0, 31, 1),
        (136, 32, 0, 32, 1),
        (177, 33, 0, 33, 1),
        (219, 47, 0, 47, 2),
    ],
    // A block of one record shares its whole key: its search bytes are all zero.
    payloads: &[
        (7, &[0]),
        (8, &[0]),
        (8, &[0]),
        (7, &[0]),
        (6, &[0]),
        (2, &[0x6b00_0000_0000_0000, 0x6c6f_6700_0000_0000]),
    ],
    meta: [(275, 69), (353, 123), (485, 46)],
    key_groups: &[(0x0001, 0, 2, 3), (0x0007, 3, 4, 2), (0x012c, 5, 5, 2)],
};

const ZSTD_EXPECTED: Expected = Expected {
    file: "segment-v1-zstd.seg",
    version: 1,
    records: ZSTD,
    opts: ZSTD_OPTS,
    file_len: 573,
    blocks: &[(8, 108, 1, 180, 4), (125, 74, 1, 190, 2), (208, 88, 1, 216, 3)],
    // Block 0 spans two key groups, so its keys share nothing; those of blocks 1 and 2 share
    // `0a00 sensor-0`.
    payloads: &[
        (0, &[0x0001_6170_706c_6500, 0x0001_6261_6e61_6e61, 0x0001_6368_6572_7279, 0x0a00_7365_6e73_6f72]),
        (10, &[0x3200_0000_0000_0000, 0x3300_0000_0000_0000]),
        (10, &[0x3400_0000_0000_0000, 0x3500_0000_0000_0000, 0x3600_0000_0000_0000]),
    ],
    meta: [(305, 69), (383, 76), (468, 32)],
    key_groups: &[(0x0001, 0, 0, 3), (0x0a00, 0, 2, 6)],
};

const LZ4_EXPECTED: Expected = Expected {
    file: "segment-v2-lz4.seg",
    version: 2,
    records: ZSTD,
    opts: LZ4_OPTS,
    file_len: 592,
    blocks: &[(8, 128, 2, 180, 4), (145, 72, 2, 190, 2), (226, 89, 2, 216, 3)],
    // The same records in blocks of the same size: the payloads of the zstd vector.
    payloads: ZSTD_EXPECTED.payloads,
    meta: [(324, 69), (402, 76), (487, 32)],
    key_groups: ZSTD_EXPECTED.key_groups,
};

const SEGMENTS: [&Expected; 3] = [&SMALL_EXPECTED, &ZSTD_EXPECTED, &LZ4_EXPECTED];

fn write_segment(records: &[(RecordKind, &[u8], &[u8])], opts: WriterOptions) -> Vec<u8> {
    let fs = FaultFs::new();
    let path = Path::new("/vector.seg");
    let mut w = SegmentWriter::new(fs.create(path).unwrap(), path, opts).unwrap();
    for (kind, key, value) in records {
        w.add(*kind, key, value).unwrap();
    }
    w.finish().unwrap();
    fs.read(path).unwrap()
}

/// Rewrites the vectors with the real writers. Run explicitly:
/// `cargo test --test spec_vectors -- --ignored regenerate`.
#[test]
#[ignore = "rewrites the committed vectors; run only for a format change"]
fn regenerate() {
    let dir = vectors_dir();
    std::fs::create_dir_all(&dir).unwrap();
    // Vectors of older segment versions are fixtures: the writer writes the newest only.
    std::fs::write(dir.join(LZ4_EXPECTED.file), write_segment(ZSTD, LZ4_OPTS)).unwrap();
    // The version 1 manifest is a fixture too.
    std::fs::write(dir.join("manifest-v2.bin"), manifest_v2().encode()).unwrap();
}

// ---- the constants the specification states ----

/// `key_hash64` values listed in `format-spec/segment.md`.
const KEY_HASHES: &[(&[u8], u64)] = &[
    (b"", 0x0000_0000_0000_0000),
    (b"a", 0xb5d1_741f_d28a_78db),
    (b"eddy", 0x1c19_190c_7ed1_0f6c),
    (b"01234567", 0x770e_b004_1f06_0e10),
    (b"0123456789abcdef", 0x93a6_7147_016e_e0a8),
    (b"\x00\x01apple", 0x8032_c1f4_d10b_4f97),
];

#[test]
fn constants_are_those_of_the_spec() {
    assert_eq!(SEGMENT_MAGIC, *b"EDSG");
    assert_eq!((FIRST_SEGMENT_VERSION, SEGMENT_VERSION), (1, 2));
    assert_eq!(HEADER_LEN, 8);
    assert_eq!(TRAILER_LEN, 9);
    assert_eq!(FOOTER_LEN, 64);
    assert_eq!((COMPRESSION_NONE, COMPRESSION_ZSTD, COMPRESSION_LZ4), (0, 1, 2));
    assert_eq!([RecordKind::Put as u8, RecordKind::Delete as u8, RecordKind::Merge as u8], [0, 1, 2]);
    assert_eq!(MAX_BLOCK_LEN, 256 << 20);
    assert_eq!(MAX_KEY_LEN, 65535);
    assert_eq!(MAX_VALUE_LEN, 128 << 20);
    assert_eq!(MANIFEST_MAGIC, *b"EDSM");
    assert_eq!((FIRST_MANIFEST_VERSION, MANIFEST_VERSION), (1, 2));
    // CRC-32/ISO-HDLC: its standard check value.
    assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
}

#[test]
fn key_hash64_is_the_spec_function() {
    let spec = spec_file("segment.md");
    for (key, hash) in KEY_HASHES {
        assert_eq!(key_hash64(key), *hash, "key_hash64({})", hex(key));
        assert_eq!(spec_key_hash64(key), *hash, "the spec's key_hash64({})", hex(key));
        assert!(spec.contains(&format!("`{hash:#018x}`")), "segment.md does not list key_hash64 {hash:#018x}");
    }
    for len in 0..40u8 {
        let key: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37) ^ len).collect();
        assert_eq!(key_hash64(&key), spec_key_hash64(&key), "length {len}");
    }
}

// ---- a decoder written from the specification alone ----

/// An unsigned LEB128 varint at `b[*at..]`.
fn varint(b: &[u8], at: &mut usize) -> u32 {
    let mut v = 0u32;
    for i in 0..5 {
        let byte = b[*at];
        *at += 1;
        v |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return v;
        }
    }
    panic!("varint longer than 5 bytes");
}

/// `key_hash64` as `format-spec/segment.md` defines it.
fn spec_key_hash64(key: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (key.len() as u64).wrapping_mul(K);
    for chunk in key.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(K).rotate_left(29);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The 64-byte block and the bit positions (within it) of a key hash, per the spec.
fn spec_bloom_bits(h: u64, blocks: u32, probes: u32) -> (usize, Vec<u32>) {
    let block = ((h >> 32) * u64::from(blocks)) >> 32;
    let lo = h as u32;
    let delta = lo.rotate_right(21) | 1;
    let bits = (0..probes).map(|i| lo.wrapping_add(i.wrapping_mul(delta)) % 512).collect();
    (block as usize, bits)
}

/// The filter payload the spec prescribes for these keys.
fn spec_bloom(keys: &[&[u8]], bits_per_key: u32) -> Vec<u8> {
    let probes = ((bits_per_key * 69 + 50) / 100).clamp(1, 16);
    let total_bits = (keys.len() as u64 * u64::from(bits_per_key)).max(1);
    let blocks = total_bits.div_ceil(512) as u32;
    let mut out = vec![probes as u8];
    out.extend_from_slice(&blocks.to_le_bytes());
    out.resize(5 + 64 * blocks as usize, 0);
    for key in keys {
        let (block, bits) = spec_bloom_bits(spec_key_hash64(key), blocks, probes);
        for bit in bits {
            out[5 + 64 * block + (bit / 8) as usize] |= 1 << (bit % 8);
        }
    }
    out
}

/// A block as stored: its handle, its trailer, and its payload after decompression.
#[derive(Debug)]
struct RawBlock {
    offset: u64,
    stored_len: u32,
    compression: u8,
    uncompressed_len: u32,
    payload: Vec<u8>,
}

/// Reads the block at `offset` with `stored_len` bytes, checking its trailer.
fn raw_block(file: &[u8], offset: u64, stored_len: u32) -> RawBlock {
    let (start, len) = (offset as usize, stored_len as usize);
    let stored = &file[start..start + len];
    let compression = file[start + len];
    let uncompressed_len = le_u32(file, start + len + 1);
    let crc = le_u32(file, start + len + 5);
    assert_eq!(crc32fast::hash(&file[start..start + len + 5]), crc, "CRC of the block at {offset}");
    let payload = match compression {
        0 => stored.to_vec(),
        1 => zstd::bulk::decompress(stored, uncompressed_len as usize).unwrap(),
        2 => lz4_flex::block::decompress(stored, uncompressed_len as usize).unwrap(),
        c => panic!("compression byte {c} at {}", start + len),
    };
    assert_eq!(payload.len(), uncompressed_len as usize);
    RawBlock { offset, stored_len, compression, uncompressed_len, payload }
}

/// A data block payload decoded, and checked in full, by the spec alone.
#[derive(Debug)]
struct SpecBlock {
    /// The length of the prefix every key of the block shares.
    shared: usize,
    /// Each record's search bytes.
    search: Vec<[u8; 8]>,
    /// Each record: kind byte, key, value.
    records: Vec<(u8, Vec<u8>, Vec<u8>)>,
}

/// Where the search array and the offsets array of a payload start, from its last 8 bytes
/// (the framing every read checks).
fn spec_framing(payload: &[u8]) -> (usize, usize, usize, usize) {
    let len = payload.len();
    assert!(len >= 8, "a data block payload has at least 8 bytes");
    let count = le_u32(payload, len - 4) as usize;
    let shared = le_u32(payload, len - 8) as usize;
    assert!(12 * count <= len - 8, "the search and offsets arrays fit the payload");
    let search_start = len - 8 - 12 * count;
    (count, shared, search_start, search_start + 8 * count)
}

/// Key bytes `shared .. shared + 8`, zero-padded to 8.
fn spec_search_bytes(key: &[u8], shared: usize) -> [u8; 8] {
    let mut out = [0u8; 8];
    let rest = &key[shared.min(key.len())..];
    let n = rest.len().min(8);
    out[..n].copy_from_slice(&rest[..n]);
    out
}

/// The record at `at` of a records area: kind byte, key, value, and where it ends. Panics if
/// it does not lie inside the area.
fn spec_record(area: &[u8], mut at: usize) -> (u8, &[u8], &[u8], usize) {
    let kind = area[at];
    at += 1;
    let klen = varint(area, &mut at) as usize;
    let vlen = varint(area, &mut at) as usize;
    let key = &area[at..at + klen];
    let value = &area[at + klen..at + klen + vlen];
    (kind, key, value, at + klen + vlen)
}

/// Everything `format-spec/segment.md` requires of a data block payload ("What a reader
/// verifies": the framing, then the full validation of a verification).
fn spec_block(payload: &[u8]) -> SpecBlock {
    let (count, shared, search_start, offsets_start) = spec_framing(payload);
    let area = &payload[..search_start];
    let mut at = 0;
    let mut records: Vec<(u8, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut search = Vec::new();
    for i in 0..count {
        assert_eq!(le_u32(payload, offsets_start + 4 * i) as usize, at, "offset of record {i}");
        let (kind, key, value, next) = spec_record(area, at);
        assert!(kind <= 2, "kind of record {i}");
        assert!(kind != 1 || value.is_empty(), "a Delete has no value");
        if let Some(prev) = records.last() {
            assert!(prev.1.as_slice() < key, "keys strictly increase");
        }
        let first = records.first().map_or(key, |r| r.1.as_slice());
        assert!(key.len() >= shared && key[..shared] == first[..shared], "record {i} has the shared prefix");
        let bytes: [u8; 8] = payload[search_start + 8 * i..search_start + 8 * i + 8].try_into().unwrap();
        assert_eq!(bytes, spec_search_bytes(key, shared), "search bytes of record {i}");
        search.push(bytes);
        records.push((kind, key.to_vec(), value.to_vec()));
        at = next;
    }
    assert_eq!(at, search_start, "the records end where the search array starts");
    if count == 0 {
        assert_eq!(shared, 0, "an empty block shares nothing");
    }
    SpecBlock { shared, search, records }
}

/// The key of record `i`, found through its offset.
fn spec_key_at(payload: &[u8], search_start: usize, offsets_start: usize, i: usize) -> &[u8] {
    let at = le_u32(payload, offsets_start + 4 * i) as usize;
    spec_record(&payload[..search_start], at).1
}

/// A point lookup as `format-spec/segment.md` describes it ("Looking up a key"): the index of
/// the first record whose key is `>= k` (`count` if none), and whether its key is `k`. It reads
/// the shared prefix from record 0, then the search array, parsing a record only where its
/// search bytes equal those of `k` (and the record found, to tell whether it is `k`).
fn spec_lookup(payload: &[u8], k: &[u8]) -> (usize, bool) {
    let (count, s, search_start, offsets_start) = spec_framing(payload);
    if count == 0 {
        return (0, false);
    }
    let key_at = |i| spec_key_at(payload, search_start, offsets_start, i);
    let prefix = &key_at(0)[..s];
    let h = &k[..k.len().min(s)];
    match h.cmp(&prefix[..h.len()]) {
        Ordering::Less => return (0, false),
        Ordering::Greater => return (count, false),
        Ordering::Equal if k.len() < s => return (0, false),
        Ordering::Equal => {}
    }
    let t = u64::from_be_bytes(spec_search_bytes(k, s));
    let (mut lo, mut hi) = (0, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let at = search_start + 8 * mid;
        let search = u64::from_be_bytes(payload[at..at + 8].try_into().unwrap());
        if search < t || (search == t && key_at(mid) < k) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    (lo, lo < count && key_at(lo) == k)
}

/// The records of a data block payload: kind byte, key, value.
fn spec_records(payload: &[u8]) -> Vec<(u8, Vec<u8>, Vec<u8>)> {
    spec_block(payload).records
}

/// A segment file read by the spec alone.
struct SpecSegment {
    version: u32,
    data_blocks: Vec<(Vec<u8>, RawBlock)>,
    meta: [RawBlock; 3],
    records: u64,
    key_groups: Vec<(u16, u32, u32, u32)>,
}

fn spec_segment(file: &[u8]) -> SpecSegment {
    assert_eq!(&file[0..4], b"EDSG", "magic at 0");
    let version = le_u32(file, 4);
    assert!(version == 1 || version == 2, "version at 4");
    assert_eq!(&file[file.len() - 4..], b"EDSG", "magic at the end");
    let f = file.len() - 64;
    let footer = &file[f..];
    assert_eq!(crc32fast::hash(&footer[..56]), le_u32(footer, 56), "footer CRC");
    assert_eq!(le_u32(footer, 52), version, "footer version");
    assert_eq!(le_u32(footer, 48), 0, "footer flags");
    let handle = |at: usize| (le_u64(footer, at), le_u32(footer, at + 8));
    let meta = [0, 12, 24].map(|at| {
        let (off, len) = handle(at);
        raw_block(file, off, len)
    });
    let records = le_u64(footer, 36);
    let block_count = le_u32(footer, 44);
    // The meta blocks sit back to back, right before the footer.
    assert_eq!(meta[0].offset + u64::from(meta[0].stored_len) + 9, meta[1].offset);
    assert_eq!(meta[1].offset + u64::from(meta[1].stored_len) + 9, meta[2].offset);
    assert_eq!(meta[2].offset + u64::from(meta[2].stored_len) + 9, f as u64);
    assert!(meta.iter().all(|b| b.compression == 0), "meta blocks are never compressed");

    let index = &meta[1].payload;
    assert_eq!(le_u32(index, 0), block_count);
    let mut at = 4;
    let mut data_blocks = Vec::new();
    let mut next = 8u64;
    for _ in 0..block_count {
        let klen = varint(index, &mut at) as usize;
        let last_key = index[at..at + klen].to_vec();
        at += klen;
        let (off, len) = (le_u64(index, at), le_u32(index, at + 8));
        at += 12;
        assert_eq!(off, next, "data blocks are contiguous from the header on");
        next = off + u64::from(len) + 9;
        data_blocks.push((last_key, raw_block(file, off, len)));
    }
    assert_eq!(at, index.len());
    assert_eq!(next, meta[0].offset, "the index covers the data region exactly");

    let kgi = &meta[2].payload;
    let n = le_u32(kgi, 0) as usize;
    assert_eq!(kgi.len(), 4 + 14 * n);
    let key_groups = (0..n)
        .map(|i| {
            let e = 4 + 14 * i;
            (le_u16(kgi, e), le_u32(kgi, e + 2), le_u32(kgi, e + 6), le_u32(kgi, e + 10))
        })
        .collect();
    // LZ4 blocks exist from version 2 on.
    assert!(version >= 2 || data_blocks.iter().all(|(_, b)| b.compression != 2), "LZ4 in version 1");
    SpecSegment { version, data_blocks, meta, records, key_groups }
}

// ---- the segment vectors ----

#[test]
fn segment_vectors_decode_to_the_listed_content() {
    for exp in SEGMENTS {
        let bytes = vector(exp.file);
        assert_eq!(bytes.len(), exp.file_len, "{}", exp.file);
        let path = Path::new(exp.file);
        let seg = SegmentReader::open(FileBytes::from_vec(bytes), path).unwrap();
        seg.verify().unwrap();
        assert_eq!(seg.file_len(), exp.file_len as u64);
        assert_eq!(seg.records(), exp.records.len() as u64);
        assert_eq!(seg.block_count(), exp.blocks.len());
        let kgs: Vec<KeyGroupEntry> = exp
            .key_groups
            .iter()
            .map(|&(key_group, first_block, last_block, records)| KeyGroupEntry {
                key_group,
                first_block,
                last_block,
                records,
            })
            .collect();
        assert_eq!(seg.key_groups(), &kgs[..], "{}", exp.file);

        let mut dec = None;
        let mut got = Vec::new();
        for (i, &(_, _, compression, _, n)) in exp.blocks.iter().enumerate() {
            let block = seg.read_block(i, &mut dec).unwrap();
            assert_eq!(block.len(), n as usize, "{} block {i}", exp.file);
            for j in 0..block.len() {
                let r = block.record(j);
                got.push((r.kind, r.key.to_vec(), r.value.to_vec()));
            }
            // An uncompressed block also reads in place, to the same records; a compressed
            // one only through `read_block`.
            match seg.mapped_block(i).unwrap() {
                Some(view) => {
                    assert_eq!(compression, COMPRESSION_NONE, "{} block {i}", exp.file);
                    assert_eq!(view.len(), block.len());
                    for j in 0..view.len() {
                        assert_eq!(view.record(j), block.record(j), "{} block {i}", exp.file);
                    }
                }
                None => assert_ne!(compression, COMPRESSION_NONE, "{} block {i}", exp.file),
            }
        }
        let want: Vec<_> = exp.records.iter().map(|(k, key, value)| (*k, key.to_vec(), value.to_vec())).collect();
        assert_eq!(got, want, "{}", exp.file);
        for (_, key, _) in exp.records {
            assert!(seg.may_contain_hash(key_hash64(key)));
        }
    }
}

#[test]
fn segment_vectors_follow_the_byte_layout() {
    for exp in SEGMENTS {
        let bytes = vector(exp.file);
        let spec = spec_segment(&bytes);
        assert_eq!(spec.records, exp.records.len() as u64);
        let layout: Vec<_> = spec
            .data_blocks
            .iter()
            .map(|(_, b)| {
                (b.offset, b.stored_len, b.compression, b.uncompressed_len, spec_records(&b.payload).len() as u32)
            })
            .collect();
        assert_eq!(layout, exp.blocks, "{} data blocks", exp.file);
        let meta: Vec<_> = spec.meta.iter().map(|b| (b.offset, b.stored_len)).collect();
        assert_eq!(meta, exp.meta, "{} meta blocks", exp.file);
        assert_eq!(spec.key_groups, exp.key_groups, "{} key-group index", exp.file);

        let mut records = Vec::new();
        for (i, (last_key, b)) in spec.data_blocks.iter().enumerate() {
            let block = spec_block(&b.payload);
            let recs = block.records;
            assert!(!recs.is_empty(), "a data block holds at least one record");
            assert_eq!(&recs.last().unwrap().1, last_key, "the index holds each block's last key");
            // The writer shares the longest prefix of the first and the last key.
            let (first, last) = (&recs[0].1, &recs[recs.len() - 1].1);
            let longest = first.iter().zip(last.iter()).take_while(|(a, b)| a == b).count();
            assert_eq!(block.shared, longest, "{} block {i}: shared", exp.file);
            let search: Vec<u64> = block.search.iter().map(|b| u64::from_be_bytes(*b)).collect();
            assert_eq!((block.shared as u32, &search[..]), exp.payloads[i], "{} block {i}: payload", exp.file);
            records.extend(recs);
        }
        let want: Vec<_> = exp.records.iter().map(|(k, key, value)| (*k as u8, key.to_vec(), value.to_vec())).collect();
        assert_eq!(records, want, "{}", exp.file);

        let keys: Vec<&[u8]> = exp.records.iter().map(|r| r.1).collect();
        assert_eq!(spec.meta[0].payload, spec_bloom(&keys, exp.opts.bloom_bits_per_key), "{} filter", exp.file);

        assert_eq!(spec.version, exp.version, "{}", exp.file);
        // The real writer, run again, writes exactly the committed bytes. (Not checked with
        // zstd or LZ4, whose output may change between releases without a format change.)
        // Version 2 changed nothing but the version for a file without LZ4 blocks: the writer
        // writes the version 1 vector with the version fields (and the footer CRC) changed.
        if exp.opts.compression == Compression::None {
            let mut want = bytes.clone();
            let footer = want.len() - FOOTER_LEN;
            for at in [4, footer + 52] {
                want[at..at + 4].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
            }
            let crc = crc32fast::hash(&want[footer..footer + 56]);
            want[footer + 56..footer + 60].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(write_segment(exp.records, exp.opts), want, "{} no longer matches its writer", exp.file);
        }
    }
}

/// Keys sharing a 17-byte prefix, several of which agree on their 8 search bytes (they differ
/// later, or only by trailing zero bytes), and keys that are prefixes of others.
fn tied_keys() -> Vec<Vec<u8>> {
    let tails: [&[u8]; 10] =
        [b"", b"\0", b"\0\0", b"a", b"a\0", b"abcdefgh", b"abcdefgh\0", b"abcdefghi", b"abcdefghij", b"b"];
    let mut keys: Vec<Vec<u8>> = tails.iter().map(|t| [&b"\x00\x05shared-prefix/"[..], t].concat()).collect();
    keys.sort();
    keys
}

/// Keys to look up in a block: its keys, every prefix of them, and keys just around them.
fn probes(keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = vec![vec![], vec![0xff; 12]];
    for k in keys {
        for cut in 0..=k.len() {
            out.push(k[..cut].to_vec());
        }
        for extra in [0x00, 0x01, 0xff] {
            out.push([&k[..], &[extra]].concat());
        }
        let (last, head) = k.split_last().unwrap();
        out.push([head, &[last.wrapping_sub(1)]].concat());
        out.push([head, &[last.wrapping_add(1)]].concat());
    }
    out
}

/// Point lookups in every data block of the vectors, and in a block whose search bytes tie:
/// the lookup of `format-spec/segment.md` and the library's (in memory and in place) agree
/// with a linear scan of the records.
#[test]
fn data_block_lookups_follow_the_spec() {
    let keys = tied_keys();
    let tied: Vec<(RecordKind, &[u8], &[u8])> = keys.iter().map(|k| (RecordKind::Put, &k[..], &b"v"[..])).collect();
    let opts = WriterOptions { block_size: 4096, compression: Compression::None, bloom_bits_per_key: 10 };
    let files = [
        (SMALL_EXPECTED.file, vector(SMALL_EXPECTED.file)),
        (ZSTD_EXPECTED.file, vector(ZSTD_EXPECTED.file)),
        ("search bytes that tie", write_segment(&tied, opts)),
    ];
    for (name, bytes) in files {
        let spec = spec_segment(&bytes);
        let all: Vec<Vec<u8>> =
            spec.data_blocks.iter().flat_map(|(_, b)| spec_records(&b.payload)).map(|r| r.1).collect();
        let probes = probes(&all);
        let seg = SegmentReader::open(FileBytes::from_vec(bytes.clone()), Path::new(name)).unwrap();
        for (i, (_, b)) in spec.data_blocks.iter().enumerate() {
            let block_keys: Vec<Vec<u8>> = spec_records(&b.payload).into_iter().map(|r| r.1).collect();
            let read = seg.read_block(i, &mut None).unwrap();
            let mapped = seg.mapped_block(i).unwrap();
            for p in &probes {
                let at = block_keys.partition_point(|k| k < p);
                let want = (at, block_keys.get(at) == Some(p));
                assert_eq!(spec_lookup(&b.payload, p), want, "{name} block {i}: the spec's lookup of {}", hex(p));
                assert_eq!((read.seek(p), read.get(p).is_some()), want, "{name} block {i}: lookup of {}", hex(p));
                if let Some(view) = mapped {
                    assert_eq!((view.seek(p), view.get(p).is_some()), want, "{name} block {i}: {}", hex(p));
                }
            }
        }
    }
    // The tied block does tie: one block, the whole first key shared, equal neighbours.
    let spec = spec_segment(&write_segment(&tied, opts));
    assert_eq!(spec.data_blocks.len(), 1);
    let block = spec_block(&spec.data_blocks[0].1.payload);
    assert_eq!(block.shared, keys[0].len());
    assert!(block.search.windows(2).filter(|w| w[0] == w[1]).count() >= 4, "{:?}", block.search);
}

/// Rewrites the CRC of the block at `offset` after a change to its stored payload.
fn fix_block_crc(file: &mut [u8], offset: u64, stored_len: u32) {
    let end = offset as usize + stored_len as usize + 5;
    let crc = crc32fast::hash(&file[offset as usize..end]);
    file[end..end + 4].copy_from_slice(&crc.to_le_bytes());
}

fn is_malformed(err: &Error, at: u64, what: &str) -> bool {
    matches!(err, Error::Corrupted { offset, kind: Corruption::Malformed(w), .. } if *offset == at && *w == what)
}

/// A payload with a valid CRC is checked for its framing when it is read, and in full only by a
/// verification (`format-spec/segment.md`, "What a reader verifies"), with exact offsets.
#[test]
fn data_block_payloads_are_framed_on_read_and_validated_by_verify() {
    let good = vector(SMALL_EXPECTED.file);
    let path = Path::new(SMALL_EXPECTED.file);
    // Data block 5: records at 0 and 6 (15 bytes), search bytes at 15, offsets at 31, shared at
    // 39, count at 43 (the walk in format-spec/vectors/README.md).
    let (offset, len, ..) = SMALL_EXPECTED.blocks[5];
    assert_eq!(len, 47);
    let b = offset as usize;
    let log = b"\x01\x2clog";
    // The damaged segment opens (its meta blocks are intact); the spec's decoder, which checks
    // everything, refuses the payload as a verification does.
    let damage = |edit: &dyn Fn(&mut [u8])| {
        let mut bad = good.clone();
        edit(&mut bad[b..b + len as usize]);
        fix_block_crc(&mut bad, offset, len);
        let payload = bad[b..b + len as usize].to_vec();
        assert!(std::panic::catch_unwind(|| spec_block(&payload)).is_err(), "the spec's decoder accepts {payload:?}");
        SegmentReader::open(FileBytes::from_vec(bad), path).unwrap()
    };

    // The search bytes of record 1 changed: a read takes them on trust (and the lookup of
    // record 1 misses); a verification refuses them at record 1.
    let seg = damage(&|p| p[23] = 0x6d);
    assert_eq!(seg.read_block(5, &mut None).unwrap().len(), 2);
    assert!(seg.mapped_block(5).unwrap().unwrap().get(log).is_none());
    let err = seg.verify().unwrap_err();
    assert!(is_malformed(&err, offset + 6, "block search bytes"), "{err}");

    // shared = 3 with search bytes to match: record 1 does not begin with record 0's 3 bytes.
    let seg = damage(&|p| {
        p[39] = 3;
        p[15..31].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0x6f, 0x67, 0, 0, 0, 0, 0, 0]);
    });
    assert_eq!(seg.read_block(5, &mut None).unwrap().len(), 2);
    let err = seg.verify().unwrap_err();
    assert!(is_malformed(&err, offset + 6, "block shared prefix"), "{err}");

    // count = 1: the framing still fits, and offset[0] (read 4 bytes later) is 6, where the
    // last record, the one the index names, starts; a verification wants record 0 at 0.
    let seg = damage(&|p| p[43] = 1);
    assert_eq!(seg.read_block(5, &mut None).unwrap().record(0).key, log);
    let err = seg.verify().unwrap_err();
    assert!(is_malformed(&err, offset + 6, "record offset"), "{err}");

    // count = 4: 12 × 4 > 47 - 8, refused by every read, at the block's offset.
    let seg = damage(&|p| p[43] = 4);
    seg.read_block(4, &mut None).unwrap();
    let err = seg.read_block(5, &mut None).unwrap_err();
    assert!(is_malformed(&err, offset, "block record count"), "{err}");
    let err = seg.mapped_block(5).unwrap_err();
    assert!(is_malformed(&err, offset, "block record count"), "{err}");
    assert!(is_malformed(&seg.verify().unwrap_err(), offset, "block record count"));

    // A last record other than the index's last key, at the block's offset.
    let seg = damage(&|p| p[13] = b'h');
    let err = seg.mapped_block(5).unwrap_err();
    assert!(is_malformed(&err, offset, "block last key"), "{err}");
}

#[test]
fn bloom_filter_is_the_spec_filter() {
    let keys: Vec<Vec<u8>> = (0u32..1000).map(|i| [&[0u8, (i % 7) as u8][..], &i.to_be_bytes()].concat()).collect();
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let hashes: Vec<u64> = keys.iter().map(|k| key_hash64(k)).collect();
    for bits_per_key in [0, 1, 3, 10, 16, 30] {
        let got = eddy::format::bloom::build(&hashes, bits_per_key);
        assert_eq!(got, spec_bloom(&refs, bits_per_key), "{bits_per_key} bits per key");
    }
    assert_eq!(spec_bloom(&refs, 10)[0], 7);
    assert_eq!(spec_bloom(&refs, 30)[0], 16);
    assert_eq!(spec_bloom(&refs, 0)[0], 1);
    assert_eq!(le_u32(&spec_bloom(&refs, 10), 1), 20);
    // The worked example of format-spec/segment.md.
    let h = key_hash64(b"\x00\x01apple");
    assert_eq!(spec_bloom_bits(h, 20, 7), (10, vec![407, 32, 169, 306, 443, 68, 205]));
    assert_eq!(spec_bloom_bits(h, 1, 7).0, 0);
}

#[test]
fn every_changed_byte_of_a_segment_vector_is_a_typed_error() {
    for exp in SEGMENTS {
        let good = vector(exp.file);
        let path = Path::new(exp.file);
        let check =
            |bytes: Vec<u8>| -> eddy::Result<()> { SegmentReader::open(FileBytes::from_vec(bytes), path)?.verify() };
        for i in 0..good.len() {
            for x in [0x01u8, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= x;
                let err = check(bad).expect_err(&format!("{}: change at {i} went unnoticed", exp.file));
                // A single damaged byte is corruption, even in a version field: a newer writer
                // changes the header's and the footer's version together.
                assert!(matches!(err, Error::Corrupted { .. }), "{} at {i}: {err}", exp.file);
            }
        }
        for cut in 0..good.len() {
            let err = check(good[..cut].to_vec()).expect_err("truncation went unnoticed");
            assert!(matches!(err, Error::Corrupted { .. }), "{} cut to {cut}: {err}", exp.file);
        }

        // A few exact errors: the trailing magic, the footer CRC, a data block's CRC.
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 0x01;
        let err = check(bad).unwrap_err();
        let at = (good.len() - 4) as u64;
        assert!(matches!(err, Error::Corrupted { offset, kind: Corruption::BadMagic, .. } if offset == at), "{err}");

        let footer = good.len() - FOOTER_LEN;
        let mut bad = good.clone();
        bad[footer + 36] ^= 0x01; // the record count
        let err = check(bad).unwrap_err();
        assert!(
            matches!(err, Error::Corrupted { offset, kind: Corruption::ChecksumMismatch { .. }, .. } if offset == footer as u64),
            "{err}"
        );

        let (offset, len, compression, ..) = exp.blocks[1];
        let mut bad = good.clone();
        bad[offset as usize + len as usize / 2] ^= 0x01;
        let seg = SegmentReader::open(FileBytes::from_vec(bad), path).unwrap();
        seg.read_block(0, &mut None).unwrap();
        let err = seg.read_block(1, &mut None).unwrap_err();
        assert!(
            matches!(err, Error::Corrupted { offset: o, kind: Corruption::ChecksumMismatch { .. }, .. } if o == offset),
            "{err}"
        );
        // Read in place, an uncompressed block has its CRC verified on its first read.
        if compression == COMPRESSION_NONE {
            assert!(seg.mapped_block(0).unwrap().is_some());
            let err = seg.mapped_block(1).unwrap_err();
            assert!(
                matches!(err, Error::Corrupted { offset: o, kind: Corruption::ChecksumMismatch { .. }, .. } if o == offset),
                "{err}"
            );
        } else {
            assert!(seg.mapped_block(1).unwrap().is_none());
        }
        assert!(matches!(seg.verify(), Err(Error::Corrupted { .. })));
    }
}

// ---- the store manifest vector ----

#[test]
fn manifest_vector_decodes_and_follows_the_byte_layout() {
    let bytes = vector("manifest-v1.bin");
    assert_eq!(StoreManifest::decode(&bytes).unwrap(), manifest());

    assert_eq!(bytes.len(), 52);
    assert_eq!(&bytes[0..4], b"EDSM");
    assert_eq!(le_u32(&bytes, 4), 1);
    assert_eq!(le_u64(&bytes, 8), 3);
    assert_eq!(le_u32(&bytes, 16), 2);
    assert_eq!((le_u64(&bytes, 20), le_u32(&bytes, 28)), (2, 0));
    assert_eq!((le_u64(&bytes, 32), le_u32(&bytes, 40)), (1, 1));
    assert_eq!((le_u16(&bytes, 44), le_u16(&bytes, 46)), (0x0100, 0x01ff));
    assert_eq!(crc32fast::hash(&bytes[..48]), le_u32(&bytes, 48));
}

#[test]
fn manifest_v2_vector_decodes_and_follows_the_byte_layout() {
    let bytes = vector("manifest-v2.bin");
    assert_eq!(StoreManifest::decode(&bytes).unwrap(), manifest_v2());
    assert_eq!(manifest_v2().encode(), bytes, "manifest-v2.bin no longer matches its writer");
    assert_eq!(le_u32(&bytes, 4), 2);
    assert_eq!(le_u64(&bytes, 8), 3);
    // Two tags: [(1, [1, 1])], then [(1, [1, 1]), (2, [3])].
    assert_eq!(le_u32(&bytes, 16), 2);
    assert_eq!((le_u32(&bytes, 20), le_u16(&bytes, 24), le_u32(&bytes, 26)), (1, 1, 2));
    assert_eq!((le_u32(&bytes, 30), le_u32(&bytes, 34)), (1, 1));
    assert_eq!((le_u32(&bytes, 38), le_u16(&bytes, 42), le_u32(&bytes, 44)), (2, 1, 2));
    assert_eq!((le_u16(&bytes, 56), le_u32(&bytes, 58), le_u32(&bytes, 62)), (2, 1, 3));
    let at = 66;
    assert_eq!(le_u32(&bytes, at), 2, "segment_count");
    assert_eq!((le_u64(&bytes, at + 4), le_u32(&bytes, at + 12)), (2, 0));
    assert_eq!((le_u32(&bytes, at + 16), le_u32(&bytes, at + 20)), (longest(ZSTD), 0));
    assert_eq!((le_u64(&bytes, at + 24), le_u32(&bytes, at + 32)), (1, 1));
    assert_eq!((le_u32(&bytes, at + 36), le_u32(&bytes, at + 40)), (longest(SMALL), 1));
    assert_eq!((le_u16(&bytes, at + 44), le_u16(&bytes, at + 46)), (0x0100, 0x01ff));
    let n = bytes.len();
    assert_eq!(n, at + 48 + 4);
    assert_eq!(crc32fast::hash(&bytes[..n - 4]), le_u32(&bytes, n - 4));
}

/// The rules of `store-manifest.md` that keep one encoding per version 2 manifest.
#[test]
fn a_version_2_manifest_has_one_encoding() {
    let good = vector("manifest-v2.bin");
    let resign = |mut b: Vec<u8>| {
        let n = b.len() - 4;
        let crc = crc32fast::hash(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        b
    };
    let malformed = |b: Vec<u8>, why: &str| match StoreManifest::decode(&resign(b)) {
        Err(ManifestError::Corrupt(e)) => assert!(format!("{e:?}").contains(why), "{why}: {e:?}"),
        other => panic!("{why}: {other:?}"),
    };
    // Both segments on tag 1: tag 0 is used by none, and the first use skips it.
    let mut b = good.clone();
    b[66 + 12..66 + 16].copy_from_slice(&1u32.to_le_bytes());
    malformed(b, "tag index");
    let mut b = good.clone();
    b[66 + 32..66 + 36].copy_from_slice(&0u32.to_le_bytes());
    malformed(b, "a tag no segment uses");
    // The second tag's states swapped.
    let mut b = good.clone();
    b[42..44].copy_from_slice(&2u16.to_le_bytes());
    b[56..58].copy_from_slice(&1u16.to_le_bytes());
    malformed(b, "tag states out of order");
}

#[test]
fn every_changed_byte_of_the_manifest_vector_is_a_typed_error() {
    for name in ["manifest-v1.bin", "manifest-v2.bin"] {
        let good = vector(name);
        for i in 0..good.len() {
            for x in [0x01u8, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= x;
                match StoreManifest::decode(&bad) {
                    Err(ManifestError::Version(v)) => panic!("{name}: change at {i} reported as version {v}"),
                    Err(ManifestError::Corrupt(_)) => {}
                    Ok(m) => panic!("{name}: change at {i} went unnoticed: {m:?}"),
                }
            }
        }
        for cut in 0..good.len() {
            assert!(
                matches!(StoreManifest::decode(&good[..cut]), Err(ManifestError::Corrupt(_))),
                "{name}: cut to {cut}"
            );
        }
    }
    let good = vector("manifest-v1.bin");
    for i in 0..good.len() {
        for x in [0x01u8, 0x80] {
            let mut bad = good.clone();
            bad[i] ^= x;
            // The CRC is checked first: a damaged version reads as damage too.
            match StoreManifest::decode(&bad) {
                Err(ManifestError::Version(v)) => panic!("change at {i} reported as version {v}"),
                Err(ManifestError::Corrupt(_)) => {}
                Ok(m) => panic!("change at {i} went unnoticed: {m:?}"),
            }
        }
    }
    for cut in 0..good.len() {
        assert!(matches!(StoreManifest::decode(&good[..cut]), Err(ManifestError::Corrupt(_))), "cut to {cut}");
    }
    // Opening a store with a damaged manifest names the file.
    let fs = FaultFs::new();
    let mut bad = good.clone();
    bad[30] ^= 0x01;
    let dir = Path::new("/db");
    fs.write_file(&dir.join(MANIFEST_FILE), &bad).unwrap();
    let err = StoreOptions::new().file_system(Arc::new(fs.clone())).open(dir).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupted { file, kind: Corruption::ChecksumMismatch { .. }, .. } if file == &dir.join(MANIFEST_FILE)),
        "{err}"
    );
}

/// The three vectors as a store directory: the manifest decides which segments are live, in
/// which order, and what is masked; files it does not name are removed.
#[test]
fn vectors_open_as_a_store() {
    let fs = FaultFs::new();
    let dir = Path::new("/db");
    fs.write_file(&dir.join(MANIFEST_FILE), &vector("manifest-v1.bin")).unwrap();
    fs.write_file(&dir.join("0000000001.seg"), &vector(SMALL_EXPECTED.file)).unwrap();
    fs.write_file(&dir.join("0000000002.seg"), &vector(ZSTD_EXPECTED.file)).unwrap();
    // Left behind by a crash after the manifest was written: a segment and a temporary file.
    fs.write_file(&dir.join("0000000003.seg"), &vector(SMALL_EXPECTED.file)).unwrap();
    fs.write_file(&dir.join("MANIFEST.tmp"), b"partial").unwrap();
    let mut s = StoreOptions::new().file_system(Arc::new(fs.clone())).open(dir).unwrap();

    let names = fs.file_names();
    assert!(!names.contains(&dir.join("0000000003.seg")), "{names:?}");
    assert!(!names.contains(&dir.join("MANIFEST.tmp")), "{names:?}");
    assert!(names.contains(&dir.join("0000000001.seg")) && names.contains(&dir.join("0000000002.seg")));

    let get = |s: &mut eddy::store::Store, key: &[u8]| s.get(key).unwrap().map(<[u8]>::to_vec);
    // Segment 2 is newer: its merge operand goes onto segment 1's value, its delete and put win.
    assert_eq!(get(&mut s, b"\x00\x01apple").as_deref(), Some(&b"red;ripe"[..]));
    assert_eq!(get(&mut s, b"\x00\x01banana"), None);
    assert_eq!(get(&mut s, b"\x00\x01cherry").as_deref(), Some(&b"dark red"[..]));
    // A merge operand with no base is the value.
    assert_eq!(get(&mut s, b"\x00\x07count").as_deref(), Some(&b"+1"[..]));
    assert_eq!(get(&mut s, b"\x00\x07name").as_deref(), Some(&b"eddy"[..]));
    // Key group 0x012c is masked in segment 1.
    assert_eq!(get(&mut s, b"\x01\x2ck"), None);
    assert_eq!(get(&mut s, b"\x01\x2clog"), None);
    assert_eq!(get(&mut s, b"\x0a\x00sensor-03").as_deref(), Some(ZSTD[5].2));
    assert_eq!(get(&mut s, b"\x0a\x00sensor-06"), None);

    // Ids already on disk are not reused, even those of removed files.
    s.put(b"\x00\x02new", b"v").unwrap();
    s.flush().unwrap();
    let newest = s.segment_paths()[0].clone();
    assert!(newest.file_name().unwrap().to_str().unwrap() > "0000000003.seg", "{}", newest.display());
}

// ---- the vectors README lists what the vectors hold ----

fn kind_name(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Put => "Put",
        RecordKind::Delete => "Delete",
        RecordKind::Merge => "Merge",
    }
}

#[test]
fn vectors_readme_lists_the_content() {
    let readme = spec_file("vectors/README.md");
    let mut lines = Vec::new();
    for exp in SEGMENTS {
        lines.push(format!("`{}` ({} bytes)", exp.file, exp.file_len));
        for (i, (kind, key, value)) in exp.records.iter().enumerate() {
            lines.push(format!("| {i} | {} | {} | {} |", kind_name(*kind), hex_cell(key), hex_cell(value)));
        }
        for (i, (offset, stored, compression, raw, records)) in exp.blocks.iter().enumerate() {
            lines.push(format!("| data block {i} | {offset} | {stored} | {compression} | {raw} | {records} |"));
        }
        for (name, (offset, stored)) in ["filter block", "index block", "key-group index block"].iter().zip(exp.meta) {
            lines.push(format!("| {name} | {offset} | {stored} | 0 | {stored} |"));
        }
        lines.push(format!("| footer | {} | {FOOTER_LEN} |", exp.file_len - FOOTER_LEN));
        let mut first_record = 0;
        for (i, ((.., n), (shared, search))) in exp.blocks.iter().zip(exp.payloads).enumerate() {
            let prefix = hex_cell(&exp.records[first_record].1[..*shared as usize]);
            let search: Vec<String> = search.iter().map(|s| format!("`{s:016x}`")).collect();
            lines.push(format!("| data block {i} | {n} | {shared} | {prefix} | {} |", search.join(", ")));
            first_record += *n as usize;
        }
        for (kg, first, last, records) in exp.key_groups {
            lines.push(format!("| `{kg:04x}` ({kg}) | {first} | {last} | {records} |"));
        }
    }
    let m = manifest();
    lines.push(format!("`manifest-v1.bin` ({} bytes)", vector("manifest-v1.bin").len()));
    lines.push(format!("`manifest-v2.bin` ({} bytes)", manifest_v2().encode().len()));
    for (i, s) in manifest_v2().segments.iter().enumerate() {
        let tag: Vec<String> = s
            .tag
            .versions()
            .iter()
            .map(|(state, vs)| format!("{state}: {}", vs.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")))
            .collect();
        lines.push(format!("| {i} | {} | {} | {} |", s.id, tag.join("; "), s.max_value_len.unwrap()));
    }
    lines.push(format!("`next_segment_id` = {}", m.next_segment_id));
    for (i, s) in m.segments.iter().enumerate() {
        let mask: Vec<String> = s.mask.iter().map(|(a, b)| format!("`{a:04x}..={b:04x}`")).collect();
        let mask = if mask.is_empty() { "(none)".to_string() } else { mask.join(", ") };
        lines.push(format!("| {i} | {} | {mask} |", s.id));
    }
    for line in lines {
        assert!(readme.contains(&line), "format-spec/vectors/README.md does not contain {line:?}");
    }

    // The index entries and footer fields, which the README wraps over several lines.
    let readme = one_line(&readme);
    for exp in SEGMENTS {
        let bytes = vector(exp.file);
        let spec = spec_segment(&bytes);
        let entries: Vec<String> =
            spec.data_blocks.iter().map(|(k, b)| format!("`{}` {} {}", hex(k), b.offset, b.stored_len)).collect();
        let footer = &bytes[bytes.len() - FOOTER_LEN..];
        let [f, i, k] = spec.meta.each_ref().map(|b| format!("({}, {})", b.offset, b.stored_len));
        for line in [
            format!("Index entries (last key, offset, stored length): {}.", entries.join("; ")),
            format!(
                "Footer fields: filter `{f}`, index `{i}`, key-group index `{k}`, record count {}, block count {}, \
                 flags {}, version {}, CRC32 `{:#010x}`, magic `EDSG`.",
                spec.records,
                spec.data_blocks.len(),
                le_u32(footer, 48),
                le_u32(footer, 52),
                le_u32(footer, 56)
            ),
        ] {
            assert!(readme.contains(&line), "format-spec/vectors/README.md does not contain {line:?}");
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The lines of the next fenced code block of `lines`.
fn next_code_block<'a>(lines: &mut impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    lines.by_ref().find(|l| l.starts_with("```"));
    lines.take_while(|l| !l.starts_with("```")).collect()
}

/// The bytes of a byte-by-byte walk's `bytes` column (hex, `|` between fields).
fn walk_bytes(column: &str) -> Vec<u8> {
    column
        .split_whitespace()
        .filter(|t| *t != "|")
        .map(|t| u8::from_str_radix(t, 16).unwrap_or_else(|_| panic!("{t:?} in {column:?}")))
        .collect()
}

/// The byte-by-byte walks (`offset  bytes  meaning`) and the hex dumps of
/// `format-spec/vectors/README.md` show the bytes of the files they are listed under, and the
/// example payload of `format-spec/segment.md` is that of the small vector's data block 5.
#[test]
fn readme_bytes_are_those_of_the_vectors() {
    let readme = spec_file("vectors/README.md");
    let (mut walks, mut dumps) = (Vec::new(), Vec::new());
    let mut file: Option<(String, Vec<u8>)> = None;
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("## `") {
            let name = rest.split('`').next().unwrap().to_string();
            file = Some((name.clone(), vector(&name)));
            continue;
        }
        if !line.starts_with("```") {
            continue;
        }
        let block: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
        let Some((name, bytes)) = &file else { continue };
        if block.first().is_some_and(|l| l.starts_with("offset  bytes")) {
            // Each line: a decimal offset, the bytes, what they mean; no gaps between lines.
            let mut next = None;
            for l in &block[1..] {
                let cols: Vec<&str> = l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
                assert!(cols.len() >= 3, "{name}: {l:?}");
                let at: usize = cols[0].parse().unwrap();
                let want = walk_bytes(cols[1]);
                assert_eq!(next.unwrap_or(at), at, "{name}: the walk skips bytes before {at}");
                assert_eq!(bytes.get(at..at + want.len()), Some(&want[..]), "{name} at {at}: {l:?}");
                next = Some(at + want.len());
            }
            walks.push((name.clone(), block[1].split_whitespace().next().unwrap().to_string(), next.unwrap()));
        } else if block.first().is_some_and(|l| l.starts_with("00000000: ")) {
            // `xxd -g1`: offset, 16 bytes in hex, the same as text.
            let mut got = Vec::new();
            for l in &block {
                let (at, rest) = l.split_once(": ").unwrap();
                assert_eq!(usize::from_str_radix(at, 16).unwrap(), got.len(), "{name}: {l:?}");
                let row = walk_bytes(&rest[..47.min(rest.len())]);
                let text: String =
                    row.iter().map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '.' }).collect();
                assert_eq!(rest.get(49..), Some(&text[..]), "{name}: {l:?}");
                got.extend(row);
            }
            assert_eq!(&got, bytes, "{name}: the hex dump");
            dumps.push(name.clone());
        }
    }
    let small = SMALL_EXPECTED.file.to_string();
    // Data blocks 0 and 5 with their trailers, and the whole manifests.
    let walked: Vec<(&str, &str, usize)> = walks.iter().map(|(n, at, end)| (n.as_str(), at.as_str(), *end)).collect();
    assert_eq!(
        walked,
        [(&small[..], "8", 50), (&small[..], "219", 275), ("manifest-v1.bin", "0", 52), ("manifest-v2.bin", "0", 118)]
    );
    assert_eq!(dumps, [small.clone(), "manifest-v1.bin".to_string(), "manifest-v2.bin".to_string()]);

    let spec = spec_file("segment.md");
    let mut lines = spec.lines();
    lines.by_ref().find(|l| l.contains("data block 5 of `vectors/segment-v1-small.seg`")).expect("segment.md example");
    let example: Vec<u8> =
        next_code_block(&mut lines).iter().flat_map(|l| walk_bytes(l.split("  ").next().unwrap())).collect();
    let (offset, len, ..) = SMALL_EXPECTED.blocks[5];
    let bytes = vector(SMALL_EXPECTED.file);
    assert_eq!(example, bytes[offset as usize..(offset + u64::from(len)) as usize], "segment.md's example payload");
}
