//! The committed test vectors of `format-spec/vectors/` against the specification.
//!
//! Each vector decodes, through the public API, to exactly the logical content that
//! `format-spec/vectors/README.md` lists; a small decoder written from `format-spec/segment.md`
//! alone (not from the library) reads the same files and must agree with it byte for byte;
//! every single-byte change of a vector gives a typed error. The constants the specification
//! states (lengths, offsets, limits, `key_hash64` values) are checked against the code, and the
//! tables of the vectors README against the vectors, so that the documents and the code cannot
//! drift apart silently.
//!
//! The vectors are written by the real writers. Regenerate them only for a format change (a
//! new zstd release may compress differently, which changes the bytes but not the content):
//!
//! ```text
//! cargo test --test spec_vectors -- --ignored regenerate
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eddy::format::block::{COMPRESSION_NONE, COMPRESSION_ZSTD, MAX_BLOCK_LEN, TRAILER_LEN};
use eddy::format::segment::{Compression, KeyGroupEntry, FOOTER_LEN, HEADER_LEN, SEGMENT_MAGIC, SEGMENT_VERSION};
use eddy::format::store_manifest::{ManifestError, ManifestSegment, StoreManifest, MANIFEST_MAGIC, MANIFEST_VERSION};
use eddy::format::{key_hash64, RecordKind, SegmentReader, SegmentWriter, WriterOptions};
use eddy::io::{FaultFs, FileBytes, FileSystem};
use eddy::store::{StoreOptions, MANIFEST_FILE, MAX_KEY_LEN, MAX_VALUE_LEN};
use eddy::{Corruption, Error};

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

/// `manifest-v1.bin`: segment 2 (the zstd vector) is newer than segment 1 (the small one), and
/// key groups 0x0100..=0x01ff were dropped after segment 1 was written.
fn manifest() -> StoreManifest {
    StoreManifest {
        next_segment_id: 3,
        segments: vec![
            ManifestSegment { id: 2, mask: vec![] },
            ManifestSegment { id: 1, mask: vec![(0x0100, 0x01ff)] },
        ],
    }
}

/// What a segment vector holds beyond its records: its layout, as `format-spec/vectors/README.md`
/// lists it.
struct Expected {
    file: &'static str,
    records: &'static [Rec],
    opts: WriterOptions,
    file_len: usize,
    /// Per data block: offset, stored length, compression byte, uncompressed length, records.
    blocks: &'static [(u64, u32, u8, u32, u32)],
    /// The filter, index and key-group index blocks: offset and stored length.
    meta: [(u64, u32); 3],
    /// Key group, first block, last block, records.
    key_groups: &'static [(u16, u32, u32, u32)],
}

const SMALL_EXPECTED: Expected = Expected {
    file: "segment-v1-small.seg",
    records: SMALL,
    opts: SMALL_OPTS,
    file_len: 425,
    blocks: &[(8, 42, 0, 42, 2), (59, 35, 0, 35, 2), (103, 44, 0, 44, 3)],
    meta: [(156, 69), (234, 63), (306, 46)],
    key_groups: &[(0x0001, 0, 1, 3), (0x0007, 1, 2, 2), (0x012c, 2, 2, 2)],
};

const ZSTD_EXPECTED: Expected = Expected {
    file: "segment-v1-zstd.seg",
    records: ZSTD,
    opts: ZSTD_OPTS,
    file_len: 513,
    blocks: &[(8, 108, 1, 227, 5), (125, 80, 1, 253, 3), (214, 22, 0, 22, 1)],
    meta: [(245, 69), (323, 76), (408, 32)],
    key_groups: &[(0x0001, 0, 0, 3), (0x0a00, 0, 2, 6)],
};

const SEGMENTS: [&Expected; 2] = [&SMALL_EXPECTED, &ZSTD_EXPECTED];

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec").join("vectors")
}

fn spec_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn vector(name: &str) -> Vec<u8> {
    let path = vectors_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_segment(records: &[Rec], opts: WriterOptions) -> Vec<u8> {
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
    std::fs::write(dir.join(SMALL_EXPECTED.file), write_segment(SMALL, SMALL_OPTS)).unwrap();
    std::fs::write(dir.join(ZSTD_EXPECTED.file), write_segment(ZSTD, ZSTD_OPTS)).unwrap();
    std::fs::write(dir.join("manifest-v1.bin"), manifest().encode()).unwrap();
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
    assert_eq!(SEGMENT_VERSION, 1);
    assert_eq!(HEADER_LEN, 8);
    assert_eq!(TRAILER_LEN, 9);
    assert_eq!(FOOTER_LEN, 64);
    assert_eq!((COMPRESSION_NONE, COMPRESSION_ZSTD), (0, 1));
    assert_eq!([RecordKind::Put as u8, RecordKind::Delete as u8, RecordKind::Merge as u8], [0, 1, 2]);
    assert_eq!(MAX_BLOCK_LEN, 256 << 20);
    assert_eq!(MAX_KEY_LEN, 1 << 20);
    assert_eq!(MAX_VALUE_LEN, 128 << 20);
    assert_eq!(MANIFEST_MAGIC, *b"EDSM");
    assert_eq!(MANIFEST_VERSION, 1);
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

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

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
        c => panic!("compression byte {c} at {}", start + len),
    };
    assert_eq!(payload.len(), uncompressed_len as usize);
    RawBlock { offset, stored_len, compression, uncompressed_len, payload }
}

/// The records of a data block payload: kind byte, key, value.
fn spec_records(payload: &[u8]) -> Vec<(u8, Vec<u8>, Vec<u8>)> {
    let count = le_u32(payload, payload.len() - 4) as usize;
    let offsets_start = payload.len() - 4 - 4 * count;
    let mut at = 0;
    let mut out = Vec::new();
    for i in 0..count {
        assert_eq!(le_u32(payload, offsets_start + 4 * i) as usize, at, "offset of record {i}");
        let kind = payload[at];
        at += 1;
        let klen = varint(payload, &mut at) as usize;
        let vlen = varint(payload, &mut at) as usize;
        let key = payload[at..at + klen].to_vec();
        let value = payload[at + klen..at + klen + vlen].to_vec();
        at += klen + vlen;
        out.push((kind, key, value));
    }
    assert_eq!(at, offsets_start, "the records end where the offsets array starts");
    out
}

/// A segment file read by the spec alone.
struct SpecSegment {
    data_blocks: Vec<(Vec<u8>, RawBlock)>,
    meta: [RawBlock; 3],
    records: u64,
    key_groups: Vec<(u16, u32, u32, u32)>,
}

fn spec_segment(file: &[u8]) -> SpecSegment {
    assert_eq!(&file[0..4], b"EDSG", "magic at 0");
    assert_eq!(le_u32(file, 4), 1, "version at 4");
    assert_eq!(&file[file.len() - 4..], b"EDSG", "magic at the end");
    let f = file.len() - 64;
    let footer = &file[f..];
    assert_eq!(crc32fast::hash(&footer[..56]), le_u32(footer, 56), "footer CRC");
    assert_eq!(le_u32(footer, 52), 1, "footer version");
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
    SpecSegment { data_blocks, meta, records, key_groups }
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
        for (i, &(_, _, _, _, n)) in exp.blocks.iter().enumerate() {
            let block = seg.read_block(i, &mut dec).unwrap();
            assert_eq!(block.len(), n as usize, "{} block {i}", exp.file);
            for j in 0..block.len() {
                let r = block.record(j);
                got.push((r.kind, r.key.to_vec(), r.value.to_vec()));
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
        for (last_key, b) in &spec.data_blocks {
            let recs = spec_records(&b.payload);
            assert_eq!(&recs.last().unwrap().1, last_key, "the index holds each block's last key");
            records.extend(recs);
        }
        let want: Vec<_> = exp.records.iter().map(|(k, key, value)| (*k as u8, key.to_vec(), value.to_vec())).collect();
        assert_eq!(records, want, "{}", exp.file);

        let keys: Vec<&[u8]> = exp.records.iter().map(|r| r.1).collect();
        assert_eq!(spec.meta[0].payload, spec_bloom(&keys, exp.opts.bloom_bits_per_key), "{} filter", exp.file);

        // The real writer, run again, writes exactly the committed bytes. (Not checked with
        // zstd, whose output may change between releases without a format change.)
        if exp.opts.compression == Compression::None {
            assert_eq!(write_segment(exp.records, exp.opts), bytes, "{} no longer matches its writer", exp.file);
        }
    }
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

        let (offset, len, ..) = exp.blocks[1];
        let mut bad = good.clone();
        bad[offset as usize + len as usize / 2] ^= 0x01;
        let seg = SegmentReader::open(FileBytes::from_vec(bad), path).unwrap();
        seg.read_block(0, &mut None).unwrap();
        let err = seg.read_block(1, &mut None).unwrap_err();
        assert!(
            matches!(err, Error::Corrupted { offset: o, kind: Corruption::ChecksumMismatch { .. }, .. } if o == offset),
            "{err}"
        );
        assert!(matches!(seg.verify(), Err(Error::Corrupted { .. })));
    }
}

// ---- the store manifest vector ----

#[test]
fn manifest_vector_decodes_and_follows_the_byte_layout() {
    let bytes = vector("manifest-v1.bin");
    assert_eq!(StoreManifest::decode(&bytes).unwrap(), manifest());
    assert_eq!(manifest().encode(), bytes, "manifest-v1.bin no longer matches its writer");

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
fn every_changed_byte_of_the_manifest_vector_is_a_typed_error() {
    let good = vector("manifest-v1.bin");
    for i in 0..good.len() {
        for x in [0x01u8, 0x80] {
            let mut bad = good.clone();
            bad[i] ^= x;
            match StoreManifest::decode(&bad) {
                Err(ManifestError::Version(v)) => {
                    assert!((4..8).contains(&i) && v == 1 ^ (u32::from(x) << (8 * (i - 4))))
                }
                Err(ManifestError::Corrupt(_)) => assert!(!(4..8).contains(&i)),
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

fn hex_cell(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "(empty)".to_string()
    } else {
        format!("`{}`", hex(bytes))
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
        for (kg, first, last, records) in exp.key_groups {
            lines.push(format!("| `{kg:04x}` ({kg}) | {first} | {last} | {records} |"));
        }
    }
    let m = manifest();
    lines.push(format!("`manifest-v1.bin` ({} bytes)", m.encode().len()));
    lines.push(format!("`next_segment_id` = {}", m.next_segment_id));
    for (i, s) in m.segments.iter().enumerate() {
        let mask: Vec<String> = s.mask.iter().map(|(a, b)| format!("`{a:04x}..={b:04x}`")).collect();
        let mask = if mask.is_empty() { "(none)".to_string() } else { mask.join(", ") };
        lines.push(format!("| {i} | {} | {mask} |", s.id));
    }
    for line in lines {
        assert!(readme.contains(&line), "format-spec/vectors/README.md does not contain {line:?}");
    }
}
