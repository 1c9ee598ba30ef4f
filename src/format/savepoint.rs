//! The savepoint file: a canonical, self-contained stream of a backend's records by key group,
//! independent of the store's segment layout. `format-spec/savepoint.md` is the byte-level
//! specification:
//!
//! ```text
//! header := magic "EDSV" | version u32 | savepoint_id u64 | meta_len u32 | meta | crc32 u32
//! chunk  := tag 1 u8 | key_group u16 | records u32 | raw_len u32 | stored_len u32
//!           | compression u8 | crc32 u32 | payload (stored_len bytes)
//! end    := tag 0 u8 | chunks u64 | records u64 | crc32 u32
//! record := key_len varint | key (without its key group) | value_len varint | value
//! ```
//!
//! A chunk holds records of one key group in key order; key groups ascend from chunk to chunk
//! and a key group may span several chunks. The chunk's CRC covers its header fields before the
//! CRC and the stored payload; the payload is zstd-compressed when `compression` is 1.
//!
//! This build writes version 3 only: version 2 with the writers section at the end of the meta
//! info (a savepoint's records are all of the present writers, so it lists no older writer).
//! It reads versions 1 (no key hash), 2 (no writers section) and 3.

use super::checkpoint::{checked_body, put_u32, put_u64, SnapshotDecodeError, SnapshotMeta};
use super::{put_varint32, DecodeError, Reader};
use crate::error::Corruption;
use crate::io::WritableFile;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The magic bytes of a savepoint file.
pub const SAVEPOINT_MAGIC: [u8; 4] = *b"EDSV";
/// The savepoint version this build writes, and the newest it reads.
pub const SAVEPOINT_VERSION: u32 = 3;
/// The oldest savepoint version this build reads.
pub const FIRST_SAVEPOINT_VERSION: u32 = 1;
const CHUNK_TAG: u8 = 1;
const END_TAG: u8 = 0;
const CHUNK_HEADER_LEN: usize = 1 + 2 + 4 + 4 + 4 + 1 + 4;
const END_LEN: usize = 1 + 8 + 8 + 4;
/// The uncompressed size at which a chunk is cut.
const CHUNK_TARGET: usize = 256 << 10;
/// The largest uncompressed chunk a reader accepts.
pub const MAX_CHUNK: u32 = 256 << 20;

/// Writes a savepoint file.
pub struct SavepointWriter {
    file: Box<dyn WritableFile>,
    path: PathBuf,
    raw: Vec<u8>,
    packed: Vec<u8>,
    key_group: Option<u16>,
    in_chunk: u32,
    chunks: u64,
    records: u64,
    level: Option<i32>,
}

impl SavepointWriter {
    /// Starts a savepoint in `file` (named `path` in errors) with its header. `level` is the
    /// zstd level of the chunks, or `None` to store them uncompressed.
    pub fn new(
        mut file: Box<dyn WritableFile>,
        path: &Path,
        savepoint_id: u64,
        meta: &SnapshotMeta,
        level: Option<i32>,
    ) -> Result<Self> {
        let mut header = Vec::new();
        header.extend_from_slice(&SAVEPOINT_MAGIC);
        put_u32(&mut header, SAVEPOINT_VERSION);
        put_u64(&mut header, savepoint_id);
        let mut m = Vec::new();
        meta.encode(&mut m);
        put_u32(&mut header, m.len() as u32);
        header.extend_from_slice(&m);
        let crc = crc32fast::hash(&header);
        put_u32(&mut header, crc);
        file.append(&header).map_err(|e| Error::io(path, e))?;
        Ok(SavepointWriter {
            file,
            path: path.to_path_buf(),
            raw: Vec::with_capacity(CHUNK_TARGET + 4096),
            packed: Vec::new(),
            key_group: None,
            in_chunk: 0,
            chunks: 0,
            records: 0,
            level,
        })
    }

    /// Adds a record; `key` starts with its key group. Keys must come in ascending order.
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let Some(&[a, b]) = key.get(..2) else {
            return Err(crate::Misuse::KeyTooShort { len: key.len() }.into());
        };
        let kg = u16::from_be_bytes([a, b]);
        // A chunk must stay readable: one record never exceeds what readers accept.
        let len = key.len() + value.len() + 10;
        if len > MAX_CHUNK as usize {
            return Err(crate::Misuse::TooLarge { what: "savepoint record", len, limit: MAX_CHUNK as usize }.into());
        }
        if self.key_group != Some(kg) || self.raw.len() + len > MAX_CHUNK as usize || self.raw.len() >= CHUNK_TARGET {
            self.cut()?;
            self.key_group = Some(kg);
        }
        put_varint32(&mut self.raw, (key.len() - 2) as u32);
        self.raw.extend_from_slice(&key[2..]);
        put_varint32(&mut self.raw, value.len() as u32);
        self.raw.extend_from_slice(value);
        self.in_chunk += 1;
        self.records += 1;
        Ok(())
    }

    fn cut(&mut self) -> Result<()> {
        let Some(kg) = self.key_group else { return Ok(()) };
        if self.in_chunk == 0 {
            return Ok(());
        }
        let (compression, payload): (u8, &[u8]) = match self.level {
            Some(level) => {
                self.packed.clear();
                zstd::stream::copy_encode(&self.raw[..], &mut self.packed, level)
                    .map_err(|e| Error::io(&self.path, e))?;
                if self.packed.len() < self.raw.len() {
                    (1, &self.packed)
                } else {
                    (0, &self.raw)
                }
            }
            None => (0, &self.raw),
        };
        let mut h = Vec::with_capacity(CHUNK_HEADER_LEN);
        h.push(CHUNK_TAG);
        h.extend_from_slice(&kg.to_le_bytes());
        put_u32(&mut h, self.in_chunk);
        put_u32(&mut h, self.raw.len() as u32);
        put_u32(&mut h, payload.len() as u32);
        h.push(compression);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&h);
        crc.update(payload);
        put_u32(&mut h, crc.finalize());
        self.file.append(&h).map_err(|e| Error::io(&self.path, e))?;
        self.file.append(payload).map_err(|e| Error::io(&self.path, e))?;
        self.chunks += 1;
        self.raw.clear();
        self.in_chunk = 0;
        Ok(())
    }

    /// Writes the last chunk and the end marker, and syncs the file. Returns its length.
    pub fn finish(mut self) -> Result<u64> {
        self.cut()?;
        let mut end = Vec::with_capacity(END_LEN);
        end.push(END_TAG);
        put_u64(&mut end, self.chunks);
        put_u64(&mut end, self.records);
        let crc = crc32fast::hash(&end);
        put_u32(&mut end, crc);
        self.file.append(&end).map_err(|e| Error::io(&self.path, e))?;
        self.file.sync().map_err(|e| Error::io(&self.path, e))?;
        Ok(self.file.len())
    }
}

/// One chunk of a savepoint: the records of (part of) one key group.
#[derive(Debug)]
pub struct Chunk<'a> {
    /// The key group of every record of the chunk.
    pub key_group: u16,
    /// How many records it holds.
    pub records: u32,
    /// Where the chunk starts in the file.
    pub offset: u64,
    raw_len: u32,
    compressed: bool,
    payload: &'a [u8],
}

impl Chunk<'_> {
    /// The chunk's records, decompressed into `buf` when needed; calls `f` with each key
    /// (its key group first) and value. Damage is reported as in the file `path`.
    pub fn for_each(
        &self,
        path: &Path,
        buf: &mut Vec<u8>,
        key: &mut Vec<u8>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.try_for_each(buf, key, &mut f).map_err(|e| match e {
            Step::Stop(e) => e,
            Step::Bad(d) => d.into_error(path),
        })
    }

    /// As [`for_each`](Self::for_each), telling damage apart from errors of `f`.
    pub(crate) fn try_for_each(&self, buf: &mut Vec<u8>, key: &mut Vec<u8>, f: &mut RecordFn<'_>) -> Result<(), Step> {
        let data: &[u8] = if self.compressed {
            buf.clear();
            buf.reserve(self.raw_len as usize);
            let mut dec =
                zstd::bulk::Decompressor::new().map_err(|_| Step::Bad(self.bad(Corruption::Decompression)))?;
            let n = dec
                .decompress_to_buffer(self.payload, buf)
                .map_err(|_| Step::Bad(self.bad(Corruption::Decompression)))?;
            if n != self.raw_len as usize {
                return Err(Step::Bad(self.bad(Corruption::Decompression)));
            }
            buf
        } else {
            self.payload
        };
        if data.len() != self.raw_len as usize {
            return Err(Step::Bad(self.bad(Corruption::Malformed("chunk length"))));
        }
        let mut r = Reader::new(data, 0);
        let mut prev: Option<std::ops::Range<usize>> = None;
        for _ in 0..self.records {
            let kl = r.varint32().map_err(|_| Step::Bad(self.bad(Corruption::Malformed("record"))))? as usize;
            let start = data.len() - r.remaining();
            let k = r.take(kl).map_err(|_| Step::Bad(self.bad(Corruption::Malformed("record"))))?;
            if let Some(p) = &prev {
                if &data[p.clone()] >= k {
                    return Err(Step::Bad(self.bad(Corruption::Malformed("key order"))));
                }
            }
            prev = Some(start..start + kl);
            let vl = r.varint32().map_err(|_| Step::Bad(self.bad(Corruption::Malformed("record"))))? as usize;
            let v = r.take(vl).map_err(|_| Step::Bad(self.bad(Corruption::Malformed("record"))))?;
            key.clear();
            key.extend_from_slice(&self.key_group.to_be_bytes());
            key.extend_from_slice(k);
            f(key, v).map_err(Step::Stop)?;
        }
        if r.remaining() != 0 {
            return Err(Step::Bad(self.bad(Corruption::Malformed("trailing bytes in chunk"))));
        }
        Ok(())
    }

    fn bad(&self, kind: Corruption) -> DecodeError {
        DecodeError::new(self.offset, kind)
    }
}

/// What a chunk's records are given to: key (with its key group) and value.
pub(crate) type RecordFn<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// A savepoint's records: key (with its key group) and value, in order.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Why walking a chunk stopped.
#[derive(Debug)]
pub(crate) enum Step {
    /// The callback failed.
    Stop(Error),
    /// The chunk is damaged.
    Bad(DecodeError),
}

/// Reads a savepoint file (untrusted bytes) chunk by chunk.
pub struct SavepointReader<'a> {
    bytes: &'a [u8],
    /// The savepoint's id.
    pub savepoint_id: u64,
    /// The backend's meta info and operator state.
    pub meta: SnapshotMeta,
    pos: usize,
    chunks: u64,
    records: u64,
    last_key_group: Option<u16>,
    done: bool,
}

impl<'a> SavepointReader<'a> {
    /// Reads and verifies the header.
    pub fn new(bytes: &'a [u8]) -> Result<Self, SnapshotDecodeError> {
        let mut r = Reader::new(bytes, 0);
        if r.array::<4>()? != SAVEPOINT_MAGIC {
            return Err(DecodeError::new(0, Corruption::BadMagic).into());
        }
        let version = r.u32()?;
        let savepoint_id = r.u64()?;
        let meta_len = r.u32()? as usize;
        let header_len = 4 + 4 + 8 + 4 + meta_len;
        let header = bytes.get(..header_len + 4).ok_or(DecodeError::new(
            0,
            Corruption::Truncated { needed: (header_len + 4) as u64, available: bytes.len() as u64 },
        ))?;
        // The header's checksum comes first, so that a damaged version byte reads as damage;
        // every version keeps the header's first fields and its trailing CRC32.
        let body = checked_body(header, header_len)?;
        if !(FIRST_SAVEPOINT_VERSION..=SAVEPOINT_VERSION).contains(&version) {
            return Err(SnapshotDecodeError::Version(version));
        }
        let mut r = Reader::new(&body[20..], 20);
        let meta = SnapshotMeta::decode(&mut r, version >= 2, version >= 3)?;
        if r.remaining() != 0 {
            return Err(DecodeError::malformed(r.offset(), "trailing bytes in meta").into());
        }
        Ok(SavepointReader {
            bytes,
            savepoint_id,
            meta,
            pos: header_len + 4,
            chunks: 0,
            records: 0,
            last_key_group: None,
            done: false,
        })
    }

    /// The next chunk, `None` after the end marker (which is checked against what was read).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Chunk<'a>>, DecodeError> {
        if self.done {
            return Ok(None);
        }
        let at = self.pos as u64;
        let mut r = Reader::new(&self.bytes[self.pos..], at);
        match r.u8()? {
            END_TAG => {
                let chunks = r.u64()?;
                let records = r.u64()?;
                let stored = r.u32()?;
                let computed = crc32fast::hash(&self.bytes[self.pos..self.pos + END_LEN - 4]);
                if stored != computed {
                    return Err(DecodeError::new(at, Corruption::ChecksumMismatch { stored, computed }));
                }
                if chunks != self.chunks || records != self.records {
                    return Err(DecodeError::malformed(at, "end marker counts"));
                }
                if r.remaining() != 0 {
                    return Err(DecodeError::malformed(at + END_LEN as u64, "bytes after the end marker"));
                }
                self.done = true;
                Ok(None)
            }
            CHUNK_TAG => {
                let key_group = r.u16()?;
                let records = r.u32()?;
                let raw_len = r.u32()?;
                let stored_len = r.u32()?;
                let compression = r.u8()?;
                let stored = r.u32()?;
                let payload = r.take(stored_len as usize)?;
                let mut crc = crc32fast::Hasher::new();
                crc.update(&self.bytes[self.pos..self.pos + CHUNK_HEADER_LEN - 4]);
                crc.update(payload);
                let computed = crc.finalize();
                if stored != computed {
                    return Err(DecodeError::new(at, Corruption::ChecksumMismatch { stored, computed }));
                }
                if compression > 1 || raw_len > MAX_CHUNK || records == 0 || u64::from(records) * 2 > u64::from(raw_len)
                {
                    return Err(DecodeError::malformed(at, "chunk header"));
                }
                if self.last_key_group.is_some_and(|k| k > key_group) {
                    return Err(DecodeError::malformed(at, "key-group order"));
                }
                let owned = self.meta.key_groups.is_some_and(|(a, b)| a <= key_group && key_group <= b);
                if !owned {
                    return Err(DecodeError::malformed(at, "key group outside the savepoint's range"));
                }
                self.last_key_group = Some(key_group);
                self.pos += CHUNK_HEADER_LEN + stored_len as usize;
                self.chunks += 1;
                self.records += u64::from(records);
                Ok(Some(Chunk { key_group, records, offset: at, raw_len, compressed: compression == 1, payload }))
            }
            _ => Err(DecodeError::malformed(at, "chunk tag")),
        }
    }
}

/// Decodes a whole savepoint (for tests and fuzzing): its records, or where it is damaged.
pub fn decode_all(bytes: &[u8]) -> Result<(SnapshotMeta, Records), SnapshotDecodeError> {
    let mut reader = SavepointReader::new(bytes)?;
    let mut out = Vec::new();
    let (mut buf, mut key) = (Vec::new(), Vec::new());
    let mut last: Option<Vec<u8>> = None;
    while let Some(chunk) = reader.next()? {
        let mut f = |k: &[u8], v: &[u8]| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        };
        chunk.try_for_each(&mut buf, &mut key, &mut f).map_err(|e| match e {
            Step::Bad(d) => SnapshotDecodeError::Corrupt(d),
            Step::Stop(_) => SnapshotDecodeError::Corrupt(DecodeError::malformed(chunk.offset, "record")),
        })?;
        if let (Some(l), Some((first, _))) = (&last, out.get(out.len() - chunk.records as usize)) {
            if l >= first {
                return Err(DecodeError::malformed(chunk.offset, "key order across chunks").into());
            }
        }
        last = out.last().map(|(k, _)| k.clone());
    }
    Ok((reader.meta, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::SerializerSnapshot;
    use crate::format::meta::OperatorStateSnapshot;
    use crate::io::{FaultFs, FileSystem};

    fn write(records: &[(Vec<u8>, Vec<u8>)], level: Option<i32>) -> Vec<u8> {
        write_in((0, 127), records, level)
    }

    fn write_in(range: (u16, u16), records: &[(Vec<u8>, Vec<u8>)], level: Option<i32>) -> Vec<u8> {
        let fs = FaultFs::new();
        let path = Path::new("/sp");
        let meta = SnapshotMeta {
            job: String::new(),
            max_parallelism: 128,
            key_groups: Some(range),
            key_serializer: SerializerSnapshot::new("eddy.u64", 1),
            key_hash: Some("eddy.murmur3".into()),
            states: vec![],
            operator: OperatorStateSnapshot::default(),
        };
        let mut w = SavepointWriter::new(fs.create(path).unwrap(), path, 3, &meta, level).unwrap();
        for (k, v) in records {
            w.add(k, v).unwrap();
        }
        w.finish().unwrap();
        fs.read(path).unwrap()
    }

    fn sample() -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for kg in [0u16, 5, 127] {
            for i in 0..300u32 {
                let mut k = kg.to_be_bytes().to_vec();
                k.extend_from_slice(&i.to_be_bytes());
                out.push((k, vec![i as u8; (i % 7) as usize]));
            }
        }
        out
    }

    #[test]
    fn savepoint_round_trips() {
        for level in [None, Some(-1), Some(3)] {
            let records = sample();
            let bytes = write(&records, level);
            let (meta, back) = decode_all(&bytes).unwrap();
            assert_eq!(meta.max_parallelism, 128);
            assert_eq!(back, records);
        }
    }

    #[test]
    fn chunks_outside_the_savepoints_key_groups_are_refused() {
        let bytes = write_in((0, 4), &sample(), None);
        assert!(matches!(decode_all(&bytes), Err(SnapshotDecodeError::Corrupt(_))));
    }

    #[test]
    fn savepoint_detects_every_flip_and_cut() {
        let records: Vec<_> = sample().into_iter().step_by(40).collect();
        let bytes = write(&records, Some(-1));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            assert!(decode_all(&bad).is_err(), "flip at {i}");
        }
        for cut in 0..bytes.len() {
            assert!(decode_all(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
