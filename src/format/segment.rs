//! Segment files: immutable, sorted runs of records, partitioned by key group.
//!
//! ```text
//! header          magic "EDSG" | version u32
//! data blocks     block+trailer, ...           (records sorted by key)
//! filter block    blocked Bloom filter of all keys, + trailer
//! index block     per data block: last key, offset, stored length; + trailer
//! key-group index per key group present: kg, first block, last block, records; + trailer
//! footer          FOOTER_LEN bytes, see `format-spec/segment.md`
//! ```
//!
//! [`SegmentReader::open`] verifies the header, footer, index, key-group index and filter;
//! a data block's checksum is verified when it is loaded into memory, and for a block read in
//! place ([`SegmentReader::mapped_block`]) on its first read after open.
//! [`SegmentReader::verify`] checks everything.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::block::{
    self, append_trailer, Block, BlockBuilder, BlockView, RecordKind, COMPRESSION_NONE, COMPRESSION_ZSTD, TRAILER_LEN,
};
use super::bloom::{self, Filter};
use super::{check_crc, key_hash64, put_varint32, DecodeError, Reader};
use crate::error::{Corruption, Error, Misuse, Result};
use crate::io::{FileBytes, WritableFile};
use crate::keygroup::KeyGroup;

/// The magic bytes at the start and the end of every segment file.
pub const SEGMENT_MAGIC: [u8; 4] = *b"EDSG";
/// The segment format version this build writes and the newest it reads. Version 2 added
/// LZ4 blocks; a reader reads every version from [`FIRST_SEGMENT_VERSION`] on.
pub const SEGMENT_VERSION: u32 = 2;
/// The oldest segment format version this build reads.
pub const FIRST_SEGMENT_VERSION: u32 = 1;
/// The header: magic and version.
pub const HEADER_LEN: usize = SEGMENT_MAGIC.len() + 4;

const HANDLE_LEN: usize = 8 + 4;
const FILTER_HANDLE_OFFSET: usize = 0;
const INDEX_HANDLE_OFFSET: usize = FILTER_HANDLE_OFFSET + HANDLE_LEN;
const KG_INDEX_HANDLE_OFFSET: usize = INDEX_HANDLE_OFFSET + HANDLE_LEN;
const RECORD_COUNT_OFFSET: usize = KG_INDEX_HANDLE_OFFSET + HANDLE_LEN;
const BLOCK_COUNT_OFFSET: usize = RECORD_COUNT_OFFSET + 8;
const FLAGS_OFFSET: usize = BLOCK_COUNT_OFFSET + 4;
const FOOTER_VERSION_OFFSET: usize = FLAGS_OFFSET + 4;
const FOOTER_CRC_OFFSET: usize = FOOTER_VERSION_OFFSET + 4;
const FOOTER_MAGIC_OFFSET: usize = FOOTER_CRC_OFFSET + 4;
/// The fixed-size footer at the end of every segment file.
pub const FOOTER_LEN: usize = FOOTER_MAGIC_OFFSET + SEGMENT_MAGIC.len();
/// Size of one key-group index entry: kg u16, first block u32, last block u32, records u32.
const KG_ENTRY_LEN: usize = 2 + 4 + 4 + 4;

/// How blocks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Blocks are stored as they are.
    None,
    /// Blocks are compressed with zstd at this level, and stored raw where that saves less
    /// than an eighth.
    Zstd(i32),
    /// Blocks are compressed with LZ4 (the block format), and stored raw where that saves
    /// less than a quarter. Several times faster than zstd to compress and to decompress,
    /// for somewhat larger blocks. A block that LZ4 shrinks by less is mostly matches of a
    /// few bytes, slow to decompress (about 4 µs for 4 KiB of records half random bytes
    /// here, where a raw block is read in place), on every read that misses the cache.
    Lz4,
}

/// Options for writing segments.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Target uncompressed size of a data block.
    pub block_size: usize,
    /// Block compression.
    pub compression: Compression,
    /// Bloom filter bits per key.
    pub bloom_bits_per_key: u32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions { block_size: 4096, compression: Compression::Lz4, bloom_bits_per_key: 10 }
    }
}

/// One key group's slice of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyGroupEntry {
    /// The key group.
    pub key_group: KeyGroup,
    /// The first data block holding records of this key group.
    pub first_block: u32,
    /// The last data block holding records of this key group.
    pub last_block: u32,
    /// The number of records of this key group.
    pub records: u32,
}

/// The key group a record key belongs to: its first two bytes, big-endian.
#[inline]
pub fn key_group_of(key: &[u8]) -> Option<KeyGroup> {
    match key {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// Writes one segment file. Records must be added in strictly increasing key order.
pub struct SegmentWriter {
    file: Box<dyn WritableFile>,
    path: PathBuf,
    opts: WriterOptions,
    block: BlockBuilder,
    payload: Vec<u8>,
    out: Vec<u8>,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    index: Vec<u8>,
    key_groups: Vec<KeyGroupEntry>,
    hashes: Vec<u64>,
    last_key: Vec<u8>,
    offset: u64,
    records: u64,
    max_value_len: u32,
    blocks: u32,
    /// Data blocks in a row that compression did not pay for.
    unpaid: u32,
    /// Data blocks still to be stored raw without trying to compress them.
    raw_ahead: u32,
}

/// After this many data blocks in a row that compression did not shrink enough, a writer
/// stores the next [`RAW_AHEAD`] raw without trying, then tries one again: compressing a
/// block costs several times decompressing it (14 us for 4 KiB of records half random
/// bytes, with LZ4), which flushes and compactions of such data would spend for nothing.
const UNPAID_BEFORE_SKIPPING: u32 = 4;
/// See [`UNPAID_BEFORE_SKIPPING`].
const RAW_AHEAD: u32 = 15;

/// What a finished segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentStats {
    /// The file size in bytes.
    pub file_len: u64,
    /// The number of records.
    pub records: u64,
    /// The length of the longest value (or merge operand) among them.
    pub max_value_len: u32,
}

impl SegmentWriter {
    /// Starts a segment in `file` (already created, empty).
    pub fn new(mut file: Box<dyn WritableFile>, path: &Path, opts: WriterOptions) -> Result<Self> {
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(&SEGMENT_MAGIC);
        header.extend_from_slice(&SEGMENT_VERSION.to_le_bytes());
        file.append(&header).map_err(|e| Error::io(path, e))?;
        let compressor = match opts.compression {
            Compression::None | Compression::Lz4 => None,
            Compression::Zstd(level) => Some(zstd::bulk::Compressor::new(level).map_err(|e| Error::io(path, e))?),
        };
        Ok(SegmentWriter {
            file,
            path: path.to_path_buf(),
            opts,
            block: BlockBuilder::default(),
            payload: Vec::new(),
            out: Vec::new(),
            compressor,
            index: Vec::new(),
            key_groups: Vec::new(),
            hashes: Vec::new(),
            last_key: Vec::new(),
            offset: HEADER_LEN as u64,
            records: 0,
            max_value_len: 0,
            blocks: 0,
            unpaid: 0,
            raw_ahead: 0,
        })
    }

    /// Adds a record. Keys must start with their key group and strictly increase.
    pub fn add(&mut self, kind: RecordKind, key: &[u8], value: &[u8]) -> Result<()> {
        let kg = key_group_of(key).ok_or(Misuse::KeyTooShort { len: key.len() })?;
        // The previous key is the block's last, or the last block's once it was written.
        let previous = self.block.last_key().unwrap_or(&self.last_key);
        if self.records > 0 && key <= previous {
            return Err(Misuse::InvalidOption { name: "key", why: "segment keys must strictly increase" }.into());
        }
        if !self.block.is_empty()
            && self.block.estimated_len() + BlockBuilder::record_len(key, value) > self.opts.block_size
        {
            self.flush_block()?;
        }
        self.block.add(kind, key, value);
        match self.key_groups.last_mut() {
            Some(e) if e.key_group == kg => {
                e.last_block = self.blocks;
                e.records += 1;
            }
            _ => self.key_groups.push(KeyGroupEntry {
                key_group: kg,
                first_block: self.blocks,
                last_block: self.blocks,
                records: 1,
            }),
        }
        self.hashes.push(key_hash64(key));
        self.records += 1;
        self.max_value_len = self.max_value_len.max(u32::try_from(value.len()).unwrap_or(u32::MAX));
        Ok(())
    }

    /// Bytes written so far (a lower bound of the final size).
    pub fn written(&self) -> u64 {
        self.offset + self.block.estimated_len() as u64
    }

    fn flush_block(&mut self) -> Result<()> {
        self.last_key.clear();
        self.last_key.extend_from_slice(self.block.last_key().unwrap_or_default());
        self.block.finish(&mut self.payload);
        let (offset, len) = self.write_block(true)?;
        put_varint32(&mut self.index, self.last_key.len() as u32);
        self.index.extend_from_slice(&self.last_key);
        self.index.extend_from_slice(&offset.to_le_bytes());
        self.index.extend_from_slice(&len.to_le_bytes());
        self.blocks += 1;
        Ok(())
    }

    /// Writes `self.payload` as a block (compressing it if allowed) and returns its handle.
    fn write_block(&mut self, mut compress: bool) -> Result<(u64, u32)> {
        self.out.clear();
        let raw_len = self.payload.len() as u32;
        let mut compression = COMPRESSION_NONE;
        if compress && self.opts.compression != Compression::None {
            if self.raw_ahead > 0 {
                self.raw_ahead -= 1;
                compress = false;
            }
        } else {
            compress = false;
        }
        if let (true, Some(c)) = (compress, self.compressor.as_mut()) {
            let bound = zstd::zstd_safe::compress_bound(self.payload.len());
            self.out.reserve(bound);
            let n = c.compress_to_buffer(&self.payload, &mut self.out).map_err(|e| Error::io(&self.path, e))?;
            if n < self.payload.len() - self.payload.len() / 8 {
                compression = COMPRESSION_ZSTD;
            } else {
                self.out.clear();
            }
        }
        if compress && self.opts.compression == Compression::Lz4 {
            self.out.resize(lz4_flex::block::get_maximum_output_size(self.payload.len()), 0);
            let n = lz4_flex::block::compress_into(&self.payload, &mut self.out)
                .map_err(|e| Error::io(&self.path, std::io::Error::other(e)))?;
            if n < self.payload.len() - self.payload.len() / 4 {
                self.out.truncate(n);
                compression = block::COMPRESSION_LZ4;
            } else {
                self.out.clear();
            }
        }
        if compress {
            if compression == COMPRESSION_NONE {
                self.unpaid = self.unpaid.saturating_add(1);
                if self.unpaid >= UNPAID_BEFORE_SKIPPING {
                    self.raw_ahead = RAW_AHEAD;
                }
            } else {
                self.unpaid = 0;
            }
        }
        // A block stored as is goes out from the payload itself, with its trailer appended.
        let stored = if compression == COMPRESSION_NONE { &mut self.payload } else { &mut self.out };
        let stored_len = stored.len() as u32;
        append_trailer(stored, 0, compression, raw_len);
        self.file.append(stored).map_err(|e| Error::io(&self.path, e))?;
        let offset = self.offset;
        self.offset += stored.len() as u64;
        Ok((offset, stored_len))
    }

    /// Writes the filter, the indexes and the footer, syncs the file and returns its stats.
    pub fn finish(self) -> Result<SegmentStats> {
        self.finish_inner(true)
    }

    /// Like [`finish`](Self::finish) but leaves the file unsynced: the caller makes it durable
    /// later (with `FileSystem::sync_file`), before anything durable names it.
    pub fn finish_without_sync(self) -> Result<SegmentStats> {
        self.finish_inner(false)
    }

    fn finish_inner(mut self, sync: bool) -> Result<SegmentStats> {
        if !self.block.is_empty() {
            self.flush_block()?;
        }
        self.payload = bloom::build(&self.hashes, self.opts.bloom_bits_per_key);
        let filter = self.write_block(false)?;

        let mut index = Vec::with_capacity(self.index.len() + 4);
        index.extend_from_slice(&self.blocks.to_le_bytes());
        index.extend_from_slice(&self.index);
        self.payload = index;
        let index = self.write_block(false)?;

        let mut kgs = Vec::with_capacity(4 + self.key_groups.len() * KG_ENTRY_LEN);
        kgs.extend_from_slice(&(self.key_groups.len() as u32).to_le_bytes());
        for e in &self.key_groups {
            kgs.extend_from_slice(&e.key_group.to_le_bytes());
            kgs.extend_from_slice(&e.first_block.to_le_bytes());
            kgs.extend_from_slice(&e.last_block.to_le_bytes());
            kgs.extend_from_slice(&e.records.to_le_bytes());
        }
        self.payload = kgs;
        let kg_index = self.write_block(false)?;

        let mut footer = Vec::with_capacity(FOOTER_LEN);
        for (off, len) in [filter, index, kg_index] {
            footer.extend_from_slice(&off.to_le_bytes());
            footer.extend_from_slice(&len.to_le_bytes());
        }
        footer.extend_from_slice(&self.records.to_le_bytes());
        footer.extend_from_slice(&self.blocks.to_le_bytes());
        footer.extend_from_slice(&0u32.to_le_bytes());
        footer.extend_from_slice(&SEGMENT_VERSION.to_le_bytes());
        let crc = crc32fast::hash(&footer);
        footer.extend_from_slice(&crc.to_le_bytes());
        footer.extend_from_slice(&SEGMENT_MAGIC);
        debug_assert_eq!(footer.len(), FOOTER_LEN);
        self.file.append(&footer).map_err(|e| Error::io(&self.path, e))?;
        if sync {
            self.file.sync().map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(SegmentStats {
            file_len: self.offset + FOOTER_LEN as u64,
            records: self.records,
            max_value_len: self.max_value_len,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    key_start: u32,
    key_len: u32,
    offset: u64,
    len: u32,
}

/// The first 16 bytes of `key` as a big-endian integer, zero-padded: ordered like the keys,
/// and for keys of up to 16 bytes (a key group, a state id, an 8-byte key and a short
/// namespace) equal only for equal keys.
#[inline]
fn key_prefix(key: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(b)
}

/// An open, verified segment file.
#[derive(Debug)]
pub struct SegmentReader {
    bytes: FileBytes,
    path: PathBuf,
    /// The file's format version.
    version: u32,
    index_keys: Vec<u8>,
    index: Vec<IndexEntry>,
    /// The [`key_prefix`] of each block's last key, beside the index so that a binary search
    /// reads 16 bytes a step and, for short keys, never the key bytes.
    prefixes: Vec<u128>,
    key_groups: Vec<KeyGroupEntry>,
    filter: (usize, usize),
    records: u64,
    /// One bit per data block: stored uncompressed, checksum verified (see `mapped_block`).
    verified: Box<[AtomicU64]>,
}

impl SegmentReader {
    /// Opens a segment from its bytes, verifying the header, footer, filter and indexes.
    pub fn open(bytes: FileBytes, path: &Path) -> Result<Self> {
        Self::decode(bytes, path).map_err(|e| match e {
            Decoded::Err(e) => e.into_error(path),
            Decoded::Version(found) => {
                Error::UnsupportedVersion { file: path.to_path_buf(), found, supported: SEGMENT_VERSION }
            }
        })
    }

    fn decode(bytes: FileBytes, path: &Path) -> Result<Self, Decoded> {
        let data: &[u8] = &bytes;
        let len = data.len();
        if len < HEADER_LEN + FOOTER_LEN {
            return Err(DecodeError::new(
                0,
                Corruption::Truncated { needed: (HEADER_LEN + FOOTER_LEN) as u64, available: len as u64 },
            )
            .into());
        }
        let mut header = Reader::new(&data[..HEADER_LEN], 0);
        if header.array::<4>()? != SEGMENT_MAGIC {
            return Err(DecodeError::new(0, Corruption::BadMagic).into());
        }
        let version = header.u32()?;
        let footer_start = len - FOOTER_LEN;
        let footer = &data[footer_start..];
        if footer[FOOTER_MAGIC_OFFSET..] != SEGMENT_MAGIC {
            return Err(DecodeError::new((footer_start + FOOTER_MAGIC_OFFSET) as u64, Corruption::BadMagic).into());
        }
        // The version stands in the header and in the footer, in every version of the format.
        // A file whose two agree on a version this build does not know is from a newer
        // writer; two that disagree mean one of them is damaged.
        let mut fv = Reader::new(&footer[FOOTER_VERSION_OFFSET..], (footer_start + FOOTER_VERSION_OFFSET) as u64);
        if fv.u32()? != version {
            return Err(
                DecodeError::malformed(SEGMENT_MAGIC.len() as u64, "version (header and footer disagree)").into()
            );
        }
        if !(FIRST_SEGMENT_VERSION..=SEGMENT_VERSION).contains(&version) {
            return Err(Decoded::Version(version));
        }
        let mut r = Reader::new(&footer[FOOTER_CRC_OFFSET..], (footer_start + FOOTER_CRC_OFFSET) as u64);
        check_crc(&footer[..FOOTER_CRC_OFFSET], r.u32()?, footer_start as u64)?;
        let mut r = Reader::new(footer, footer_start as u64);
        let filter_h = (r.u64()?, r.u32()?);
        let index_h = (r.u64()?, r.u32()?);
        let kg_h = (r.u64()?, r.u32()?);
        let records = r.u64()?;
        let blocks = r.u32()?;
        if r.u32()? != 0 {
            return Err(DecodeError::malformed((footer_start + FLAGS_OFFSET) as u64, "footer flags").into());
        }
        // The meta blocks are laid out back to back, right before the footer.
        let expect_contiguous = |(off, l): (u64, u32), next: u64, what| {
            if off.checked_add(u64::from(l) + TRAILER_LEN as u64) == Some(next) {
                Ok(())
            } else {
                Err(DecodeError::malformed(footer_start as u64, what))
            }
        };
        expect_contiguous(kg_h, footer_start as u64, "key-group index handle")?;
        expect_contiguous(index_h, kg_h.0, "index handle")?;
        expect_contiguous(filter_h, index_h.0, "filter handle")?;
        let data_end = filter_h.0;
        if data_end < HEADER_LEN as u64 {
            return Err(DecodeError::malformed(footer_start as u64, "filter handle").into());
        }

        // Meta blocks are always stored uncompressed.
        let meta = |(off, l): (u64, u32)| -> Result<&[u8], DecodeError> {
            match block::read_block(data, off, l, &mut None, false)? {
                Cow::Borrowed(b) => Ok(b),
                Cow::Owned(_) => Err(DecodeError::malformed(off, "compressed meta block")),
            }
        };
        let filter_payload = meta(filter_h)?;
        Filter::decode(filter_payload, filter_h.0)?;
        let filter_start = filter_h.0 as usize;
        let filter = (filter_start, filter_start + filter_h.1 as usize);

        let DecodedIndex { keys: index_keys, entries: index, prefixes } =
            decode_index(meta(index_h)?, index_h.0, blocks, data_end)?;
        let key_groups = decode_kg_index(meta(kg_h)?, kg_h.0, blocks, records)?;
        if blocks == 0 && records != 0 {
            return Err(DecodeError::malformed(footer_start as u64, "record count").into());
        }
        let verified = (0..index.len().div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Ok(SegmentReader {
            bytes,
            path: path.to_path_buf(),
            version,
            index_keys,
            index,
            prefixes,
            key_groups,
            filter,
            records,
            verified,
        })
    }

    /// The file's format version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Whether the file's version allows LZ4 blocks.
    fn lz4(&self) -> bool {
        self.version >= 2
    }

    /// The file this segment was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size.
    pub fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The number of records.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The number of data blocks.
    pub fn block_count(&self) -> usize {
        self.index.len()
    }

    /// The key groups present, in order, with their slices.
    pub fn key_groups(&self) -> &[KeyGroupEntry] {
        &self.key_groups
    }

    /// Heap memory held by the decoded indexes.
    pub fn index_memory(&self) -> usize {
        self.index_keys.capacity()
            + self.index.capacity() * std::mem::size_of::<IndexEntry>()
            + self.prefixes.capacity() * std::mem::size_of::<u128>()
            + self.key_groups.capacity() * std::mem::size_of::<KeyGroupEntry>()
    }

    /// The size of the Bloom filter in bytes.
    pub fn filter_len(&self) -> usize {
        self.filter.1 - self.filter.0
    }

    /// False if no record has a key with this [`key_hash64`].
    #[inline]
    pub fn may_contain_hash(&self, hash: u64) -> bool {
        let payload = self.bytes.get(self.filter.0..self.filter.1).unwrap_or(&[]);
        match Filter::decode(payload, 0) {
            Ok(f) => f.may_contain_hash(hash),
            Err(_) => true,
        }
    }

    /// The filter block that [`may_contain_hash`](Self::may_contain_hash) reads for `hash`,
    /// so that lookups in several segments can fetch theirs at once.
    pub fn filter_block(&self, hash: u64) -> Option<&[u8]> {
        let payload = self.bytes.get(self.filter.0..self.filter.1)?;
        Filter::decode(payload, 0).ok()?.block_of(hash)
    }

    fn block_last_key(&self, i: usize) -> &[u8] {
        let e = &self.index[i];
        let start = e.key_start as usize;
        self.index_keys.get(start..start + e.key_len as usize).unwrap_or(&[])
    }

    /// The first block whose last key is `>= key`, if any.
    pub fn find_block(&self, key: &[u8]) -> Option<usize> {
        let p = key_prefix(key);
        let (mut lo, mut hi) = (0, self.prefixes.len());
        // The answer lies among the blocks that hold the key's key group and the one after
        // them: a block before them ends below the key group, the one after begins above it.
        // Without records of the key group, it is the first block of the next one.
        if let Some(kg) = key_group_of(key) {
            let i = self.key_groups.partition_point(|e| e.key_group < kg);
            match self.key_groups.get(i) {
                Some(e) if e.key_group == kg => {
                    lo = e.first_block as usize;
                    hi = hi.min(e.last_block as usize + 1);
                }
                Some(e) => (lo, hi) = (e.first_block as usize, e.first_block as usize),
                None => lo = hi,
            }
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let less = match self.prefixes[mid].cmp(&p) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => self.block_last_key(mid) < key,
            };
            if less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo < self.index.len()).then_some(lo)
    }

    /// The first block that may hold a record of a key group `>= kg`.
    pub fn first_block_from_key_group(&self, kg: KeyGroup) -> Option<usize> {
        let i = self.key_groups.partition_point(|e| e.key_group < kg);
        self.key_groups.get(i).map(|e| e.first_block as usize)
    }

    /// Where data block `i` starts in the file (0 for a block that does not exist).
    pub fn block_offset(&self, i: usize) -> u64 {
        self.index.get(i).map_or(0, |e| e.offset)
    }

    fn entry(&self, i: usize) -> Result<&IndexEntry> {
        self.index.get(i).ok_or_else(|| Error::corrupted(&self.path, 0, Corruption::Malformed("block number")))
    }

    /// The index promises each block's last key; a block that disagrees is corrupt.
    fn check_last_key(&self, i: usize, view: BlockView<'_>, offset: u64) -> Result<()> {
        if view.is_empty() || view.record(view.len() - 1).key != self.block_last_key(i) {
            return Err(Error::corrupted(&self.path, offset, Corruption::Malformed("block last key")));
        }
        Ok(())
    }

    /// Whether data block `i` is stored compressed (and so is worth caching decompressed).
    pub fn is_compressed(&self, i: usize) -> bool {
        self.index.get(i).and_then(|e| block::compression_of(&self.bytes, e.offset, e.len)) != Some(COMPRESSION_NONE)
    }

    /// Data block `i` read in place, if it is stored uncompressed; `None` for a compressed
    /// block (read those with [`read_block`](Self::read_block)). The block's checksum is
    /// verified the first time it is read after the segment was opened; later reads trust the
    /// verified bytes, as a block cache trusts its copy.
    pub fn mapped_block(&self, i: usize) -> Result<Option<BlockView<'_>>> {
        let e = self.entry(i)?;
        let (start, end) = (e.offset as usize, e.offset as usize + e.len as usize);
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let payload = match self.verified.get(word) {
            Some(w) if w.load(Ordering::Relaxed) & bit != 0 => match self.bytes.get(start..end) {
                Some(p) => p,
                None => return Ok(None),
            },
            _ => {
                if block::compression_of(&self.bytes, e.offset, e.len) != Some(COMPRESSION_NONE) {
                    return Ok(None);
                }
                match block::read_block(&self.bytes, e.offset, e.len, &mut None, self.lz4()) {
                    Ok(Cow::Borrowed(b)) => b,
                    Ok(Cow::Owned(_)) => return Ok(None),
                    Err(d) => return Err(d.into_error(&self.path)),
                }
            }
        };
        let view = BlockView::new(payload, e.offset).map_err(|d| d.into_error(&self.path))?;
        self.check_last_key(i, view, e.offset)?;
        if let Some(w) = self.verified.get(word) {
            w.fetch_or(bit, Ordering::Relaxed);
        }
        Ok(Some(view))
    }

    /// Reads data block `i` into memory: checksum verified, decompressed, framing checked.
    pub fn read_block(&self, i: usize, decompressor: &mut Option<zstd::bulk::Decompressor<'static>>) -> Result<Block> {
        let e = self.entry(i)?;
        let payload = block::read_block(&self.bytes, e.offset, e.len, decompressor, self.lz4())
            .map_err(|d| d.into_error(&self.path))?;
        let owned = match payload {
            Cow::Borrowed(b) => b.to_vec().into_boxed_slice(),
            Cow::Owned(v) => v.into_boxed_slice(),
        };
        let block = Block::new(owned, e.offset).map_err(|d| d.into_error(&self.path))?;
        self.check_last_key(i, block.view(), e.offset)?;
        Ok(block)
    }
    /// Checks every byte of the segment: every block's checksum and records, the key order
    /// across blocks, and the agreement of the key-group index and record count with the data.
    /// Returns the first problem found.
    pub fn verify(&self) -> Result<()> {
        let mut dec = None;
        let mut prev_last: Option<Vec<u8>> = None;
        let mut records = 0u64;
        let mut kg_iter = self.key_groups.iter().peekable();
        let mut kg_counts: Vec<(KeyGroup, u32, u32, u32)> = Vec::new();
        for i in 0..self.index.len() {
            let block = self.read_block(i, &mut dec)?;
            let offset = self.index[i].offset;
            block.view().validate(offset).map_err(|d| {
                // Inside a compressed block a position means nothing in the file: name the block.
                let d = if self.is_compressed(i) { DecodeError { offset, ..d } } else { d };
                d.into_error(&self.path)
            })?;
            let first = block.record(0).key;
            if let Some(p) = &prev_last {
                if p.as_slice() >= first {
                    return Err(Error::corrupted(
                        &self.path,
                        self.index[i].offset,
                        Corruption::Malformed("key order across blocks"),
                    ));
                }
            }
            for j in 0..block.len() {
                let kg = key_group_of(block.record(j).key).ok_or_else(|| {
                    Error::corrupted(&self.path, self.index[i].offset, Corruption::Malformed("short key"))
                })?;
                match kg_counts.last_mut() {
                    Some(c) if c.0 == kg => {
                        c.2 = i as u32;
                        c.3 += 1;
                    }
                    _ => kg_counts.push((kg, i as u32, i as u32, 1)),
                }
            }
            records += block.len() as u64;
            prev_last = Some(block.record(block.len() - 1).key.to_vec());
        }
        let kg_off = self.bytes.len().saturating_sub(FOOTER_LEN) as u64;
        for (kg, first, last, n) in kg_counts {
            let expected = KeyGroupEntry { key_group: kg, first_block: first, last_block: last, records: n };
            if kg_iter.next() != Some(&expected) {
                return Err(Error::corrupted(&self.path, kg_off, Corruption::Malformed("key-group index")));
            }
        }
        if kg_iter.next().is_some() || records != self.records {
            return Err(Error::corrupted(&self.path, kg_off, Corruption::Malformed("key-group index or record count")));
        }
        Ok(())
    }
}

enum Decoded {
    Err(DecodeError),
    Version(u32),
}

impl From<DecodeError> for Decoded {
    fn from(e: DecodeError) -> Self {
        Decoded::Err(e)
    }
}

fn decode_index(payload: &[u8], offset: u64, blocks: u32, data_end: u64) -> Result<DecodedIndex, DecodeError> {
    let mut r = Reader::new(payload, offset);
    let count = r.u32()?;
    if count != blocks {
        return Err(DecodeError::malformed(offset, "index block count"));
    }
    // Each entry takes at least 13 bytes, which bounds the allocation by the payload size.
    if u64::from(count) * 13 > r.remaining() as u64 {
        return Err(DecodeError::malformed(offset, "index block count"));
    }
    let mut keys = Vec::new();
    let mut index = Vec::with_capacity(count as usize);
    let mut prefixes = Vec::with_capacity(count as usize);
    let mut expected_offset = HEADER_LEN as u64;
    let mut prev: Option<(usize, usize)> = None;
    for _ in 0..count {
        let at = r.offset();
        let klen = r.varint32()?;
        let key = r.take(klen as usize)?;
        let block_offset = r.u64()?;
        let len = r.u32()?;
        if block_offset != expected_offset || key.len() < 2 {
            return Err(DecodeError::malformed(at, "index entry"));
        }
        expected_offset = block_offset + u64::from(len) + TRAILER_LEN as u64;
        if expected_offset > data_end {
            return Err(DecodeError::malformed(at, "index entry"));
        }
        if let Some((s, l)) = prev {
            if keys[s..s + l] >= *key {
                return Err(DecodeError::malformed(at, "index key order"));
            }
        }
        let key_start = keys.len();
        keys.extend_from_slice(key);
        prefixes.push(key_prefix(key));
        prev = Some((key_start, key.len()));
        index.push(IndexEntry { key_start: key_start as u32, key_len: klen, offset: block_offset, len });
    }
    if expected_offset != data_end || r.remaining() != 0 {
        return Err(DecodeError::malformed(offset, "index does not cover the data"));
    }
    Ok(DecodedIndex { keys, entries: index, prefixes })
}

/// A decoded block index: the blocks' last keys back to back, an entry per block, and the
/// [`key_prefix`] of each last key.
struct DecodedIndex {
    keys: Vec<u8>,
    entries: Vec<IndexEntry>,
    prefixes: Vec<u128>,
}

fn decode_kg_index(payload: &[u8], offset: u64, blocks: u32, records: u64) -> Result<Vec<KeyGroupEntry>, DecodeError> {
    let mut r = Reader::new(payload, offset);
    let count = r.u32()?;
    if u64::from(count) * KG_ENTRY_LEN as u64 != r.remaining() as u64 {
        return Err(DecodeError::malformed(offset, "key-group index length"));
    }
    let mut out: Vec<KeyGroupEntry> = Vec::with_capacity(count as usize);
    let mut total = 0u64;
    for _ in 0..count {
        let at = r.offset();
        let e = KeyGroupEntry { key_group: r.u16()?, first_block: r.u32()?, last_block: r.u32()?, records: r.u32()? };
        let ordered = match out.last() {
            Some(p) => p.key_group < e.key_group && p.last_block <= e.first_block,
            None => true,
        };
        if !ordered || e.first_block > e.last_block || e.last_block >= blocks || e.records == 0 {
            return Err(DecodeError::malformed(at, "key-group index entry"));
        }
        total += u64::from(e.records);
        out.push(e);
    }
    if total != records {
        return Err(DecodeError::malformed(offset, "key-group index record count"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{FaultFs, FileSystem};

    fn key(kg: u16, i: u32) -> Vec<u8> {
        let mut k = kg.to_be_bytes().to_vec();
        k.extend_from_slice(&i.to_be_bytes());
        k
    }

    fn write(fs: &FaultFs, path: &Path, opts: WriterOptions, n: u32) -> SegmentStats {
        let mut w = SegmentWriter::new(fs.create(path).unwrap(), path, opts).unwrap();
        for kg in 0..4u16 {
            for i in 0..n {
                let kind = if i % 7 == 3 { RecordKind::Delete } else { RecordKind::Put };
                let value = if kind == RecordKind::Put { vec![i as u8; (i % 50) as usize] } else { vec![] };
                w.add(kind, &key(kg * 3, i), &value).unwrap();
            }
        }
        w.finish().unwrap()
    }

    #[test]
    fn segment_serde_roundtrip() {
        for compression in [Compression::None, Compression::Zstd(1)] {
            let fs = FaultFs::new();
            let path = Path::new("/s.seg");
            let opts = WriterOptions { block_size: 512, compression, ..Default::default() };
            let stats = write(&fs, path, opts, 500);
            let seg = SegmentReader::open(fs.open(path).unwrap(), path).unwrap();
            assert_eq!(seg.records(), 2000);
            assert_eq!(stats.file_len, seg.file_len());
            seg.verify().unwrap();
            assert_eq!(seg.key_groups().iter().map(|e| e.key_group).collect::<Vec<_>>(), vec![0, 3, 6, 9]);
            let mut dec = None;
            for kg in [0u16, 3, 6, 9] {
                for i in [0u32, 1, 3, 250, 499] {
                    let k = key(kg, i);
                    assert!(seg.may_contain_hash(key_hash64(&k)));
                    let b = seg.find_block(&k).unwrap();
                    let block = seg.read_block(b, &mut dec).unwrap();
                    let rec = block.get(&k).unwrap();
                    assert_eq!(rec.kind == RecordKind::Delete, i % 7 == 3);
                }
            }
            assert_eq!(seg.find_block(&key(10, 0)), None);
            let b = seg.first_block_from_key_group(4).unwrap();
            let block = seg.read_block(b, &mut dec).unwrap();
            assert!(block.record(block.seek(&6u16.to_be_bytes())).key.starts_with(&6u16.to_be_bytes()));
        }
    }

    #[test]
    fn find_block_is_the_first_block_whose_last_key_is_not_below_the_key() {
        let fs = FaultFs::new();
        let path = Path::new("/s.seg");
        // Keys of 6 bytes, and of 22 whose first 16 bytes are the same within a key group.
        let long_key = |kg: u16, i: u32| [&key(kg, 0)[..2], &[7u8; 16][..], &i.to_be_bytes()[..]].concat();
        for (block_size, n, long) in [(256, 40, false), (512, 500, false), (4096, 3, false), (256, 60, true)] {
            let opts = WriterOptions { block_size, ..Default::default() };
            if long {
                let mut w = SegmentWriter::new(fs.create(path).unwrap(), path, opts).unwrap();
                for kg in [1u16, 2, 5] {
                    for i in 0..n {
                        w.add(RecordKind::Put, &long_key(kg, i * 2), &[i as u8; 9]).unwrap();
                    }
                }
                w.finish().unwrap();
            } else {
                write(&fs, path, opts, n);
            }
            let seg = SegmentReader::open(fs.open(path).unwrap(), path).unwrap();
            let expected = |k: &[u8]| (0..seg.block_count()).find(|&b| seg.block_last_key(b) >= k);
            let mut probes: Vec<Vec<u8>> = vec![vec![], vec![0], vec![3], vec![0xff], vec![0xff; 20]];
            for kg in 0..12u16 {
                probes.push(kg.to_be_bytes().to_vec());
                for i in [0, 1, 2, n / 2, n - 1, n, n + 1, u32::MAX] {
                    let k = key(kg, i);
                    probes.push(k[..3].to_vec());
                    // Longer than the 16 bytes the binary search compares first.
                    let mut long = k.clone();
                    long.extend_from_slice(&[0xab; 14]);
                    probes.push(long);
                    probes.push(k);
                    probes.push(long_key(kg, i));
                    probes.push(long_key(kg, i.saturating_mul(2)));
                }
            }
            for k in &probes {
                assert_eq!(seg.find_block(k), expected(k), "key {k:?}, {block_size}-byte blocks");
            }
        }
    }

    #[test]
    fn lz4_blocks_are_kept_compressed_only_where_they_save_a_quarter() {
        // Values of 4 random bytes then 4 repeated ones, every 8: LZ4 saves about a fifth of a
        // block of them, zstd about half; values of one repeated byte shrink much more.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut half_random = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|i| {
                    if i % 8 == 0 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                    }
                    if i % 8 < 4 {
                        (x >> (8 * (i % 8))) as u8
                    } else {
                        b'a'
                    }
                })
                .collect()
        };
        let values: Vec<Vec<u8>> = (0..200).map(|_| half_random(100)).collect();
        let fs = FaultFs::new();
        let path = Path::new("/s.seg");
        for (compression, repeated, compressed) in
            [(Compression::Lz4, false, false), (Compression::Lz4, true, true), (Compression::Zstd(3), false, true)]
        {
            let opts = WriterOptions { block_size: 4096, compression, ..Default::default() };
            let mut w = SegmentWriter::new(fs.create(path).unwrap(), path, opts).unwrap();
            for (i, v) in values.iter().enumerate() {
                let v = if repeated { vec![b'r'; 100] } else { v.clone() };
                w.add(RecordKind::Put, &key(1, i as u32), &v).unwrap();
            }
            w.finish().unwrap();
            let seg = SegmentReader::open(fs.open(path).unwrap(), path).unwrap();
            assert!(seg.block_count() > 3);
            for b in 0..seg.block_count() - 1 {
                assert_eq!(seg.is_compressed(b), compressed, "{compression:?}, repeated {repeated}, block {b}");
            }
            seg.verify().unwrap();
        }
        // Incompressible records, then compressible ones: the writer stops trying for a while,
        // and compresses again within a few blocks of the change.
        let opts = WriterOptions { block_size: 1024, compression: Compression::Lz4, ..Default::default() };
        let mut w = SegmentWriter::new(fs.create(path).unwrap(), path, opts).unwrap();
        for (i, v) in values.iter().enumerate() {
            w.add(RecordKind::Put, &key(1, i as u32), v).unwrap();
        }
        for i in 0..400u32 {
            w.add(RecordKind::Put, &key(2, i), &[b'r'; 100]).unwrap();
        }
        w.finish().unwrap();
        let seg = SegmentReader::open(fs.open(path).unwrap(), path).unwrap();
        let first = seg.first_block_from_key_group(2).unwrap();
        let raw_after: Vec<usize> = (first + 1..seg.block_count()).filter(|&b| !seg.is_compressed(b)).collect();
        assert!(seg.block_count() - first > 40);
        assert!(
            raw_after.iter().all(|&b| b <= first + RAW_AHEAD as usize + 1),
            "raw blocks {raw_after:?} after {first}"
        );
        assert!((0..first).all(|b| !seg.is_compressed(b)));
        seg.verify().unwrap();
    }

    #[test]
    fn keys_not_above_the_previous_one_are_refused_within_and_across_blocks() {
        let fs = FaultFs::new();
        let path = Path::new("/s.seg");
        let opts = WriterOptions { block_size: 256, ..Default::default() };
        let mut w = SegmentWriter::new(fs.create(path).unwrap(), path, opts).unwrap();
        // 40-byte values: a 256-byte block holds a few, so some keys follow a written block.
        for i in 0..20u32 {
            w.add(RecordKind::Put, &key(1, i * 2), &[7u8; 40]).unwrap();
            for bad in [key(1, i * 2), key(1, i * 2 - i.min(1)), key(0, 99)] {
                assert!(w.add(RecordKind::Put, &bad, b"x").is_err(), "key {bad:?} after {i} was taken");
            }
        }
        w.finish().unwrap();
        let seg = SegmentReader::open(fs.open(path).unwrap(), path).unwrap();
        assert_eq!(seg.records(), 20);
        assert!(seg.block_count() > 2);
        seg.verify().unwrap();
    }

    #[test]
    fn segment_detect_corruption() {
        let fs = FaultFs::new();
        let path = Path::new("/s.seg");
        let opts = WriterOptions { block_size: 256, ..Default::default() };
        write(&fs, path, opts, 40);
        let good = fs.read(path).unwrap();
        let check = |bytes: Vec<u8>| -> Result<()> {
            let seg = SegmentReader::open(FileBytes::from_vec(bytes), path)?;
            seg.verify()
        };
        check(good.clone()).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x04;
            let err = check(bad).expect_err(&format!("flip at {i} went unnoticed"));
            assert!(matches!(err, Error::Corrupted { .. } | Error::UnsupportedVersion { .. }), "{err}");
        }
        for cut in 0..good.len() {
            assert!(check(good[..cut].to_vec()).is_err(), "truncation to {cut} went unnoticed");
        }
    }

    #[test]
    fn lz4_blocks_are_read_in_version_2_and_refused_in_version_1() {
        let fs = FaultFs::new();
        let path = Path::new("/s.seg");
        let opts = WriterOptions { compression: Compression::Lz4, ..WriterOptions::default() };
        let mut w = SegmentWriter::new(fs.create(path).unwrap(), path, opts).unwrap();
        for i in 0..200u32 {
            w.add(RecordKind::Put, &[&[0, 1][..], &i.to_be_bytes()].concat(), &[b'x'; 64]).unwrap();
        }
        w.finish().unwrap();
        let mut bytes = fs.read(path).unwrap();
        let seg = SegmentReader::open(FileBytes::from_vec(bytes.clone()), path).unwrap();
        assert_eq!(seg.version(), 2);
        assert!((0..seg.block_count()).all(|i| seg.is_compressed(i)));
        seg.verify().unwrap();
        assert_eq!(seg.read_block(3, &mut None).unwrap().record(0).value, &[b'x'; 64][..]);
        // The same file claiming version 1 (both version fields, footer CRC fixed): its LZ4
        // blocks are of an unknown compression there.
        let footer = bytes.len() - FOOTER_LEN;
        bytes[4] = 1;
        bytes[footer + FOOTER_VERSION_OFFSET] = 1;
        let crc = crc32fast::hash(&bytes[footer..footer + FOOTER_CRC_OFFSET]);
        bytes[footer + FOOTER_CRC_OFFSET..footer + FOOTER_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        let old = SegmentReader::open(FileBytes::from_vec(bytes), path).unwrap();
        assert_eq!(old.version(), 1);
        let err = old.read_block(0, &mut None).unwrap_err();
        assert!(matches!(err, Error::Corrupted { offset: 8, .. }), "{err}");
        assert!(old.verify().is_err());
    }

    #[test]
    fn future_version_is_a_typed_error() {
        let fs = FaultFs::new();
        let path = Path::new("/s.seg");
        write(&fs, path, WriterOptions::default(), 3);
        let mut bytes = fs.read(path).unwrap();
        // A newer writer puts its version in the header and in the footer.
        bytes[4] = 3;
        let footer_version = bytes.len() - FOOTER_LEN + FOOTER_VERSION_OFFSET;
        bytes[footer_version] = 3;
        let err = SegmentReader::open(FileBytes::from_vec(bytes.clone()), path).unwrap_err();
        assert!(matches!(err, Error::UnsupportedVersion { found: 3, supported: SEGMENT_VERSION, .. }), "{err}");
        // Only one of the two changed: damage, not a newer version.
        bytes[footer_version] = 2;
        let err = SegmentReader::open(FileBytes::from_vec(bytes), path).unwrap_err();
        assert!(matches!(err, Error::Corrupted { offset: 4, .. }), "{err}");
    }
}
