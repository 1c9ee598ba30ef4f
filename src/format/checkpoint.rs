//! The checkpoint manifest and the state meta info it shares with savepoints.
//!
//! A checkpoint manifest names the segment files of a checkpoint and carries everything else
//! a restore needs: the backend's max parallelism and key groups, the key serializer, every
//! state's name, kind, serializers and TTL, the serializer versions each segment's records
//! were written with, and the operator and broadcast state. `format-spec/manifest.md` is the
//! byte-level specification:
//!
//! ```text
//! magic "EDCP" | version u32 | checkpoint_id u64 | flags u32 | next_segment_id u64
//! meta     := see SnapshotMeta (format-spec/manifest.md); from version 3 on it names the
//!             key-routing hash after the key serializer, from version 4 on it ends with the
//!             writers section (the states' present and older writers)
//! segments := count u32, then per segment:
//!             file str | segment_id u64 | file_len u64 | masks (count u32, (first u16, last u16)*)
//!             | versions (count u32, (state u16, count u32, version u32*)*): per state, the
//!               tag entry of the writer of its records
//! logs     := (version 2 and later) count u32, then per changelog file, oldest first:
//!             file str | log_seq u64 | file_len u64 | versions (as above)
//! crc32 u32   (of everything before it)
//! ```
//!
//! This build writes version 4 only: version 3 with the writers section at the end of the meta
//! info. It reads versions 1 (no changelog count, no changelog files), 2 (at least one
//! changelog file, no key hash) and 3 (no writers section) as they were written.
//!
//! Integers are little-endian; `str` and `bytes` are a `u32` length and the bytes.

use super::meta::{
    BroadcastStateSnapshot, ListStateSnapshot, OperatorStateSnapshot, Redistribution, StateKind, TtlConfig, TtlUpdate,
    TtlVisibility,
};
use super::{check_crc, DecodeError, Reader};
use crate::codec::SerializerSnapshot;
use crate::error::Corruption;

/// The magic bytes of a checkpoint manifest.
pub const CHECKPOINT_MAGIC: [u8; 4] = *b"EDCP";
/// The checkpoint manifest version this build writes, and the newest it reads.
pub const CHECKPOINT_VERSION: u32 = 4;
/// The oldest checkpoint manifest version this build reads.
pub const FIRST_CHECKPOINT_VERSION: u32 = 1;
/// Manifest flag: the checkpoint shares no file with an earlier one (a full checkpoint).
pub const FLAG_FULL: u32 = 1;
const CRC_LEN: usize = 4;
/// Every counted item takes at least this many bytes, which bounds a count by the bytes left.
const MIN_ITEM_LEN: u64 = 4;

/// A state as a snapshot describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateMetaInfo {
    /// The state's id: the two bytes after the key group in its records' keys.
    pub id: u16,
    /// The state's unique name.
    pub name: String,
    /// Its kind.
    pub kind: StateKind,
    /// The snapshots of its serializers, in the order the kind defines: namespace and value
    /// (value, list, reducing, aggregating: the accumulator); namespace, user key and value
    /// (map); key and namespace (timers).
    pub serializers: Vec<SerializerSnapshot>,
    /// Its time to live, if it has one.
    pub ttl: Option<TtlConfig>,
    /// The entry of the [`SchemaTag`](crate::format::SchemaTag) of records that `serializers`
    /// wrote: their versions ([`StateMetaInfo::versions`]) until the state's serializers change
    /// across a restore, then those versions and a generation number that tells this writer
    /// from the older ones.
    pub tag: Vec<u32>,
    /// The writers of the state before its present serializers, oldest first, whose records
    /// may still be stored (segments not yet migrated).
    pub older: Vec<OlderWriter>,
}

impl StateMetaInfo {
    /// The versions of the state's serializers.
    pub fn versions(&self) -> Vec<u32> {
        self.serializers.iter().map(|s| s.version).collect()
    }

    /// Whether the state has a history to record (the writers section of the meta info).
    fn evolved(&self) -> bool {
        !self.older.is_empty() || self.tag != self.versions()
    }
}

/// A former writer of a state: the serializers that wrote the records tagged `tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OlderWriter {
    /// The state's entry in the tags of the records it wrote.
    pub tag: Vec<u32>,
    /// Its serializers, in the order of [`StateMetaInfo::serializers`].
    pub serializers: Vec<SerializerSnapshot>,
    /// Whether its values carry the last-access timestamp of a state with TTL.
    pub ttl: bool,
}

/// What a keyed backend's snapshot says about itself, in checkpoints and savepoints alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The job the backend belongs to, as its builder named it (empty when unnamed): a
    /// restore combines only snapshots of one job.
    pub job: String,
    /// The max parallelism (the number of key groups).
    pub max_parallelism: u32,
    /// The key groups the backend owned, inclusive; `None` for an empty range.
    pub key_groups: Option<(u16, u16)>,
    /// The key serializer.
    pub key_serializer: SerializerSnapshot,
    /// The name of the hash that routed keys to key groups
    /// ([`DEFAULT_KEY_HASH`](crate::keygroup::DEFAULT_KEY_HASH) unless the backend was given
    /// another); `None` when it is not known: in snapshots of versions that did not record it
    /// (checkpoint manifests before version 3, savepoints before version 2), and in meta info
    /// decoded from those and written again (the field is then empty). A restore checks a
    /// known name against the backend's and nothing else.
    pub key_hash: Option<String>,
    /// Every state, by id.
    pub states: Vec<StateMetaInfo>,
    /// The operator and broadcast state.
    pub operator: OperatorStateSnapshot,
}

/// A segment file as a manifest names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRef {
    /// The file's path relative to the checkpoint storage's root (`shared/...`).
    pub file: String,
    /// The segment's id in the store that wrote it.
    pub segment_id: u64,
    /// The file's length in bytes.
    pub file_len: u64,
    /// Key-group ranges (inclusive) whose records are not part of the snapshot.
    pub mask: Vec<(u16, u16)>,
    /// Per state id, the tag entry of the writer of the segment's records (see
    /// [`StateMetaInfo::tag`]).
    pub versions: Vec<(u16, Vec<u32>)>,
}

/// A changelog file as a manifest names it (`format-spec/changelog.md`): the store's writes
/// after the segments were taken, replayed over them on restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRef {
    /// The file's path relative to the checkpoint storage's root (`shared/...`).
    pub file: String,
    /// The file's sequence number in the store that wrote it (also in its header).
    pub log_seq: u64,
    /// The file's length in bytes.
    pub file_len: u64,
    /// Per state id, the tag entry of the writer of the file's records (see
    /// [`StateMetaInfo::tag`]).
    pub versions: Vec<(u16, Vec<u32>)>,
}

/// A decoded checkpoint manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointManifest {
    /// The checkpoint's id.
    pub checkpoint_id: u64,
    /// [`FLAG_FULL`] or 0.
    pub flags: u32,
    /// The id the restored store's next segment gets.
    pub next_segment_id: u64,
    /// The backend's state meta info and operator state.
    pub meta: SnapshotMeta,
    /// The segments, newest first.
    pub segments: Vec<SegmentRef>,
    /// The changelog files to replay over the segments, oldest first (version 2).
    pub logs: Vec<LogRef>,
}

/// Why a manifest or savepoint could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotDecodeError {
    /// The bytes are damaged.
    Corrupt(DecodeError),
    /// A newer format version than this build reads.
    Version(u32),
}

impl From<DecodeError> for SnapshotDecodeError {
    fn from(e: DecodeError) -> Self {
        SnapshotDecodeError::Corrupt(e)
    }
}

impl SnapshotDecodeError {
    /// The error as the crate reports it, naming `path`.
    pub fn into_error(self, path: &std::path::Path, supported: u32) -> crate::Error {
        match self {
            SnapshotDecodeError::Corrupt(d) => d.into_error(path),
            SnapshotDecodeError::Version(found) => {
                crate::Error::UnsupportedVersion { file: path.to_path_buf(), found, supported }
            }
        }
    }
}

// ---- writing ----

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}
fn put_count(out: &mut Vec<u8>, n: usize) {
    put_u32(out, n as u32);
}
fn put_serializer(out: &mut Vec<u8>, s: &SerializerSnapshot) {
    let mut b = Vec::new();
    s.encode(&mut b);
    put_bytes(out, &b);
}

fn kind_code(kind: StateKind) -> u8 {
    match kind {
        StateKind::Value => 0,
        StateKind::List => 1,
        StateKind::Map => 2,
        StateKind::Reducing => 3,
        StateKind::Aggregating => 4,
        StateKind::Timers => 5,
    }
}

fn kind_of(code: u8) -> Option<StateKind> {
    Some(match code {
        0 => StateKind::Value,
        1 => StateKind::List,
        2 => StateKind::Map,
        3 => StateKind::Reducing,
        4 => StateKind::Aggregating,
        5 => StateKind::Timers,
        _ => return None,
    })
}

fn put_ttl(out: &mut Vec<u8>, ttl: &Option<TtlConfig>) {
    let Some(t) = ttl else {
        out.push(0);
        return;
    };
    out.push(1);
    put_u64(out, t.ttl_ms as u64);
    out.push(match t.update {
        TtlUpdate::OnCreateAndWrite => 0,
        TtlUpdate::OnReadAndWrite => 1,
    });
    out.push(match t.visibility {
        TtlVisibility::NeverReturnExpired => 0,
        TtlVisibility::ReturnExpiredIfNotCleanedUp => 1,
    });
    put_u32(out, u32::try_from(t.incremental).unwrap_or(u32::MAX));
    out.push(u8::from(t.in_compaction) | u8::from(t.full_snapshot) << 1);
}

impl CheckpointManifest {
    /// Drops from the meta info the older writers whose records none of the manifest's
    /// segments and changelog files hold.
    pub(crate) fn keep_needed_writers(&mut self) {
        let refs: Vec<&[(u16, Vec<u32>)]> =
            self.segments.iter().map(|s| &s.versions[..]).chain(self.logs.iter().map(|l| &l.versions[..])).collect();
        for state in &mut self.meta.states {
            state.older.retain(|w| refs.iter().any(|r| r.iter().any(|(id, v)| *id == state.id && *v == w.tag)));
        }
    }
}

impl SnapshotMeta {
    /// Appends the meta info's encoding, that of the newest manifest and savepoint versions.
    /// An unknown key hash (`None`) is written as the empty name, never as a guess.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.job.as_bytes());
        put_u32(out, self.max_parallelism);
        match self.key_groups {
            Some((a, b)) => {
                out.push(1);
                put_u16(out, a);
                put_u16(out, b);
            }
            None => out.push(0),
        }
        put_serializer(out, &self.key_serializer);
        put_bytes(out, self.key_hash.as_deref().unwrap_or_default().as_bytes());
        put_count(out, self.states.len());
        for s in &self.states {
            put_u16(out, s.id);
            put_bytes(out, s.name.as_bytes());
            out.push(kind_code(s.kind));
            put_count(out, s.serializers.len());
            for ser in &s.serializers {
                put_serializer(out, ser);
            }
            put_ttl(out, &s.ttl);
        }
        let op = &self.operator;
        put_count(out, op.lists.len());
        for l in &op.lists {
            put_bytes(out, l.name.as_bytes());
            out.push(match l.mode {
                Redistribution::EvenSplit => 0,
                Redistribution::Union => 1,
            });
            put_serializer(out, &l.serializer);
            put_count(out, l.elements.len());
            for e in &l.elements {
                put_bytes(out, e);
            }
        }
        put_count(out, op.broadcast.len());
        for b in &op.broadcast {
            put_bytes(out, b.name.as_bytes());
            put_serializer(out, &b.keys);
            put_serializer(out, &b.values);
            put_count(out, b.entries.len());
            for (k, v) in &b.entries {
                put_bytes(out, k);
                put_bytes(out, v);
            }
        }
        let evolved: Vec<&StateMetaInfo> = self.states.iter().filter(|s| s.evolved()).collect();
        put_count(out, evolved.len());
        for s in evolved {
            put_u16(out, s.id);
            put_tag(out, &s.tag);
            put_count(out, s.older.len());
            for w in &s.older {
                put_tag(out, &w.tag);
                put_count(out, w.serializers.len());
                for ser in &w.serializers {
                    put_serializer(out, ser);
                }
                out.push(u8::from(w.ttl));
            }
        }
    }

    /// Reads meta info from `r` (untrusted bytes); `with_key_hash` for the versions that
    /// have the key hash field (an empty one reads as `None`).
    /// `with_writers` for those that end with the writers section.
    pub(crate) fn decode(r: &mut Reader<'_>, with_key_hash: bool, with_writers: bool) -> Result<Self, DecodeError> {
        let job = string(r)?;
        let max_parallelism = r.u32()?;
        if max_parallelism == 0 || max_parallelism > 32768 {
            return Err(DecodeError::malformed(r.offset() - 4, "max parallelism"));
        }
        let key_groups = match r.u8()? {
            0 => None,
            1 => {
                let at = r.offset();
                let (a, b) = (r.u16()?, r.u16()?);
                if a > b || u32::from(b) >= max_parallelism {
                    return Err(DecodeError::malformed(at, "key-group range"));
                }
                Some((a, b))
            }
            _ => return Err(DecodeError::malformed(r.offset() - 1, "key-group range tag")),
        };
        let key_serializer = serializer(r)?;
        let key_hash = if with_key_hash { Some(string(r)?).filter(|name| !name.is_empty()) } else { None };
        let n = count(r)?;
        let mut states: Vec<StateMetaInfo> = Vec::with_capacity(n);
        for _ in 0..n {
            let at = r.offset();
            let id = r.u16()?;
            let name = string(r)?;
            let kind = kind_of(r.u8()?).ok_or(DecodeError::malformed(at, "state kind"))?;
            let m = count(r)?;
            let mut serializers = Vec::with_capacity(m);
            for _ in 0..m {
                serializers.push(serializer(r)?);
            }
            let ttl = ttl(r)?;
            if id == 0 || states.iter().any(|s| s.id == id || s.name == name) {
                return Err(DecodeError::malformed(at, "state id or name repeated"));
            }
            let tag = serializers.iter().map(|s| s.version).collect();
            states.push(StateMetaInfo { id, name, kind, serializers, ttl, tag, older: Vec::new() });
        }
        let mut operator = OperatorStateSnapshot::default();
        for _ in 0..count(r)? {
            let name = string(r)?;
            let at = r.offset();
            let mode = match r.u8()? {
                0 => Redistribution::EvenSplit,
                1 => Redistribution::Union,
                _ => return Err(DecodeError::malformed(at, "redistribution mode")),
            };
            let serializer = serializer(r)?;
            let m = count(r)?;
            let mut elements = Vec::with_capacity(m);
            for _ in 0..m {
                elements.push(bytes(r)?.to_vec());
            }
            operator.lists.push(ListStateSnapshot { name, mode, serializer, elements });
        }
        for _ in 0..count(r)? {
            let name = string(r)?;
            let keys = serializer(r)?;
            let values = serializer(r)?;
            let m = count(r)?;
            let mut entries = Vec::with_capacity(m);
            for _ in 0..m {
                entries.push((bytes(r)?.to_vec(), bytes(r)?.to_vec()));
            }
            operator.broadcast.push(BroadcastStateSnapshot { name, keys, values, entries });
        }
        if with_writers {
            writers(r, &mut states)?;
        }
        Ok(SnapshotMeta { job, max_parallelism, key_groups, key_serializer, key_hash, states, operator })
    }
}

fn put_tag(out: &mut Vec<u8>, tag: &[u32]) {
    put_count(out, tag.len());
    for v in tag {
        put_u32(out, *v);
    }
}

// ---- reading ----

/// The writers section: per evolved state, the tag entry of its present serializers and its
/// older writers, each tag entry distinct.
fn writers(r: &mut Reader<'_>, states: &mut [StateMetaInfo]) -> Result<(), DecodeError> {
    let mut seen = Vec::new();
    for _ in 0..count(r)? {
        let at = r.offset();
        let id = r.u16()?;
        let Some(state) = states.iter_mut().find(|s| s.id == id).filter(|_| !seen.contains(&id)) else {
            return Err(DecodeError::malformed(at, "writers of an unknown or repeated state"));
        };
        seen.push(id);
        state.tag = tag(r)?;
        let n = count(r)?;
        let mut older: Vec<OlderWriter> = Vec::with_capacity(n);
        for _ in 0..n {
            let at = r.offset();
            let tag = tag(r)?;
            let m = count(r)?;
            let mut serializers = Vec::with_capacity(m);
            for _ in 0..m {
                serializers.push(serializer(r)?);
            }
            let ttl = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::malformed(r.offset() - 1, "writer TTL flag")),
            };
            if tag == state.tag || older.iter().any(|w| w.tag == tag) || serializers.len() != state.serializers.len() {
                return Err(DecodeError::malformed(at, "older writer"));
            }
            older.push(OlderWriter { tag, serializers, ttl });
        }
        state.older = older;
    }
    Ok(())
}

fn tag(r: &mut Reader<'_>) -> Result<Vec<u32>, DecodeError> {
    let n = count(r)?;
    (0..n).map(|_| r.u32()).collect()
}

/// A count of items that each take at least `MIN_ITEM_LEN` bytes: bounded by what is left,
/// so no input makes a decoder allocate more than the bytes it was given.
fn count(r: &mut Reader<'_>) -> Result<usize, DecodeError> {
    let at = r.offset();
    let n = r.u32()?;
    if u64::from(n) * MIN_ITEM_LEN > r.remaining() as u64 {
        return Err(DecodeError::malformed(at, "count"));
    }
    Ok(n as usize)
}

pub(crate) fn bytes<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], DecodeError> {
    let n = r.u32()?;
    r.take(n as usize)
}

fn string(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let at = r.offset();
    let b = bytes(r)?;
    std::str::from_utf8(b).map(str::to_owned).map_err(|_| DecodeError::malformed(at, "string"))
}

fn serializer(r: &mut Reader<'_>) -> Result<SerializerSnapshot, DecodeError> {
    let at = r.offset();
    let mut b = bytes(r)?;
    let s = SerializerSnapshot::decode(&mut b).map_err(|_| DecodeError::malformed(at, "serializer snapshot"))?;
    if !b.is_empty() {
        return Err(DecodeError::malformed(at, "serializer snapshot"));
    }
    Ok(s)
}

fn ttl(r: &mut Reader<'_>) -> Result<Option<TtlConfig>, DecodeError> {
    let at = r.offset();
    match r.u8()? {
        0 => Ok(None),
        1 => {
            let ttl_ms = r.u64()? as i64;
            let update = match r.u8()? {
                0 => TtlUpdate::OnCreateAndWrite,
                1 => TtlUpdate::OnReadAndWrite,
                _ => return Err(DecodeError::malformed(at, "TTL update type")),
            };
            let visibility = match r.u8()? {
                0 => TtlVisibility::NeverReturnExpired,
                1 => TtlVisibility::ReturnExpiredIfNotCleanedUp,
                _ => return Err(DecodeError::malformed(at, "TTL visibility")),
            };
            let incremental = r.u32()? as usize;
            let flags = r.u8()?;
            if ttl_ms < 1 || flags > 3 {
                return Err(DecodeError::malformed(at, "TTL"));
            }
            Ok(Some(TtlConfig {
                ttl_ms,
                update,
                visibility,
                incremental,
                in_compaction: flags & 1 != 0,
                full_snapshot: flags & 2 != 0,
            }))
        }
        _ => Err(DecodeError::malformed(at, "TTL tag")),
    }
}

/// Checks the trailing CRC32 of `bytes` and returns what it covers.
pub(crate) fn checked_body(bytes: &[u8], min_len: usize) -> Result<&[u8], DecodeError> {
    if bytes.len() < min_len + CRC_LEN {
        return Err(DecodeError::new(
            0,
            Corruption::Truncated { needed: (min_len + CRC_LEN) as u64, available: bytes.len() as u64 },
        ));
    }
    let body_len = bytes.len() - CRC_LEN;
    let stored = u32::from_le_bytes([bytes[body_len], bytes[body_len + 1], bytes[body_len + 2], bytes[body_len + 3]]);
    check_crc(&bytes[..body_len], stored, body_len as u64)?;
    Ok(&bytes[..body_len])
}

impl CheckpointManifest {
    /// Encodes the manifest.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + (self.segments.len() + self.logs.len()) * 64);
        out.extend_from_slice(&CHECKPOINT_MAGIC);
        put_u32(&mut out, CHECKPOINT_VERSION);
        put_u64(&mut out, self.checkpoint_id);
        put_u32(&mut out, self.flags);
        put_u64(&mut out, self.next_segment_id);
        self.meta.encode(&mut out);
        put_count(&mut out, self.segments.len());
        for s in &self.segments {
            put_bytes(&mut out, s.file.as_bytes());
            put_u64(&mut out, s.segment_id);
            put_u64(&mut out, s.file_len);
            put_count(&mut out, s.mask.len());
            for &(a, b) in &s.mask {
                put_u16(&mut out, a);
                put_u16(&mut out, b);
            }
            put_versions(&mut out, &s.versions);
        }
        put_count(&mut out, self.logs.len());
        for l in &self.logs {
            put_bytes(&mut out, l.file.as_bytes());
            put_u64(&mut out, l.log_seq);
            put_u64(&mut out, l.file_len);
            put_versions(&mut out, &l.versions);
        }
        let crc = crc32fast::hash(&out);
        put_u32(&mut out, crc);
        out
    }

    /// Decodes and verifies a manifest (untrusted bytes).
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotDecodeError> {
        let mut r = Reader::new(bytes, 0);
        if r.array::<4>()? != CHECKPOINT_MAGIC {
            return Err(DecodeError::new(0, Corruption::BadMagic).into());
        }
        let version = r.u32()?;
        // The checksum comes first, so that a damaged version byte reads as damage (and a
        // restore falls back to an older checkpoint); every version ends with the CRC32 of
        // the bytes before it.
        let body = checked_body(bytes, 8)?;
        if !(FIRST_CHECKPOINT_VERSION..=CHECKPOINT_VERSION).contains(&version) {
            return Err(SnapshotDecodeError::Version(version));
        }
        let mut r = Reader::new(body, 0);
        r.take(8)?;
        let checkpoint_id = r.u64()?;
        let at = r.offset();
        let flags = r.u32()?;
        if flags & !FLAG_FULL != 0 {
            return Err(DecodeError::malformed(at, "flags").into());
        }
        let next_segment_id = r.u64()?;
        let meta = SnapshotMeta::decode(&mut r, version >= 3, version >= 4)?;
        let n = count(&mut r)?;
        let mut segments: Vec<SegmentRef> = Vec::with_capacity(n);
        for _ in 0..n {
            let at = r.offset();
            let file = file_name(&mut r)?;
            let segment_id = r.u64()?;
            let file_len = r.u64()?;
            let m = count(&mut r)?;
            let mut mask = Vec::with_capacity(m);
            for _ in 0..m {
                let (a, b) = (r.u16()?, r.u16()?);
                if a > b {
                    return Err(DecodeError::malformed(at, "mask range").into());
                }
                mask.push((a, b));
            }
            let versions = versions(&mut r)?;
            if segments.iter().any(|s| s.file == file) {
                return Err(DecodeError::malformed(at, "file named twice").into());
            }
            if segment_id >= next_segment_id || segments.iter().any(|s| s.segment_id == segment_id) {
                return Err(DecodeError::malformed(at, "segment id").into());
            }
            segments.push(SegmentRef { file, segment_id, file_len, mask, versions });
        }
        let mut logs: Vec<LogRef> = Vec::new();
        if version >= 2 {
            let n = count(&mut r)?;
            if n == 0 && version == 2 {
                return Err(
                    DecodeError::malformed(r.offset() - 4, "a version 2 manifest without changelog files").into()
                );
            }
            logs.reserve(n);
            for _ in 0..n {
                let at = r.offset();
                let file = file_name(&mut r)?;
                let log_seq = r.u64()?;
                let file_len = r.u64()?;
                let versions = versions(&mut r)?;
                if segments.iter().any(|s| s.file == file) || logs.iter().any(|l| l.file == file) {
                    return Err(DecodeError::malformed(at, "file named twice").into());
                }
                if logs.last().is_some_and(|l| l.log_seq >= log_seq) {
                    return Err(DecodeError::malformed(at, "changelog order").into());
                }
                logs.push(LogRef { file, log_seq, file_len, versions });
            }
        }
        if r.remaining() != 0 {
            return Err(DecodeError::malformed(r.offset(), "trailing bytes").into());
        }
        Ok(CheckpointManifest { checkpoint_id, flags, next_segment_id, meta, segments, logs })
    }
}

/// A stored file's name (see [`valid_file_name`]).
fn file_name(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let at = r.offset();
    let file = string(r)?;
    if !valid_file_name(&file) {
        return Err(DecodeError::malformed(at, "file name"));
    }
    Ok(file)
}

fn put_versions(out: &mut Vec<u8>, versions: &[(u16, Vec<u32>)]) {
    put_count(out, versions.len());
    for (state, vs) in versions {
        put_u16(out, *state);
        put_count(out, vs.len());
        for v in vs {
            put_u32(out, *v);
        }
    }
}

fn versions(r: &mut Reader<'_>) -> Result<Vec<(u16, Vec<u32>)>, DecodeError> {
    let m = count(r)?;
    let mut versions = Vec::with_capacity(m);
    for _ in 0..m {
        let state = r.u16()?;
        let k = count(r)?;
        let mut vs = Vec::with_capacity(k);
        for _ in 0..k {
            vs.push(r.u32()?);
        }
        versions.push((state, vs));
    }
    Ok(versions)
}

/// A file name a manifest may hold: `shared/` and a plain name of safe characters, so that no
/// manifest reaches outside its checkpoint storage.
pub fn valid_file_name(file: &str) -> bool {
    let Some(name) = file.strip_prefix("shared/") else { return false };
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn sample() -> CheckpointManifest {
        CheckpointManifest {
            checkpoint_id: 7,
            flags: 0,
            next_segment_id: 12,
            meta: SnapshotMeta {
                job: "sessions".into(),
                max_parallelism: 128,
                key_groups: Some((0, 63)),
                key_serializer: SerializerSnapshot::new("eddy.u64", 1),
                key_hash: Some("eddy.murmur3".into()),
                states: vec![
                    StateMetaInfo {
                        id: 1,
                        name: "count".into(),
                        kind: StateKind::Value,
                        serializers: vec![
                            SerializerSnapshot::new("eddy.unit", 1),
                            SerializerSnapshot::new("eddy.u64", 1),
                        ],
                        ttl: Some(TtlConfig::new(Duration::from_secs(5)).update(TtlUpdate::OnReadAndWrite)),
                        tag: vec![1, 1, 1],
                        older: vec![OlderWriter {
                            tag: vec![1, 1],
                            serializers: vec![
                                SerializerSnapshot::new("eddy.unit", 1),
                                SerializerSnapshot::new("eddy.u32", 1),
                            ],
                            ttl: false,
                        }],
                    },
                    StateMetaInfo {
                        id: 2,
                        name: "t/event-time".into(),
                        kind: StateKind::Timers,
                        serializers: vec![],
                        ttl: None,
                        tag: vec![],
                        older: vec![],
                    },
                ],
                operator: OperatorStateSnapshot {
                    lists: vec![ListStateSnapshot {
                        name: "offsets".into(),
                        mode: Redistribution::Union,
                        serializer: SerializerSnapshot::new("eddy.u64", 1),
                        elements: vec![vec![1, 2], vec![]],
                    }],
                    broadcast: vec![BroadcastStateSnapshot {
                        name: "rules".into(),
                        keys: SerializerSnapshot::new("eddy.string", 1),
                        values: SerializerSnapshot::new("eddy.string", 1),
                        entries: vec![(b"a".to_vec(), b"b".to_vec())],
                    }],
                },
            },
            segments: vec![SegmentRef {
                file: "shared/00ab-0000000003.seg".into(),
                segment_id: 3,
                file_len: 4096,
                mask: vec![(64, 127)],
                versions: vec![(1, vec![1, 1])],
            }],
            logs: Vec::new(),
        }
    }

    fn with_logs() -> CheckpointManifest {
        let mut m = sample();
        m.logs = vec![
            LogRef { file: "shared/00ab-log0000000004.log".into(), log_seq: 4, file_len: 300, versions: vec![] },
            LogRef {
                file: "shared/00ab-log0000000005.log".into(),
                log_seq: 5,
                file_len: 20,
                versions: vec![(1, vec![1, 2])],
            },
        ];
        m
    }

    #[test]
    fn the_writers_section_round_trips_and_refuses_what_cannot_be() {
        let m = sample();
        assert_eq!(CheckpointManifest::decode(&m.encode()).unwrap(), m);
        // A state without history is not listed: the section is one count of 0.
        let mut plain = sample();
        plain.meta.states[0].tag = vec![1, 1];
        plain.meta.states[0].older.clear();
        let (a, b) = (m.encode(), plain.encode());
        assert!(b.len() < a.len());
        assert_eq!(CheckpointManifest::decode(&b).unwrap(), plain);
        // An older writer with the present writer's tag, or one of another serializer count.
        for bad in [
            {
                let mut b = sample();
                b.meta.states[0].older[0].tag = vec![1, 1, 1];
                b
            },
            {
                let mut b = sample();
                b.meta.states[0].older[0].serializers.pop();
                b
            },
            {
                let mut b = sample();
                let w = b.meta.states[0].older[0].clone();
                b.meta.states[0].older.push(w);
                b
            },
        ] {
            assert!(CheckpointManifest::decode(&bad.encode()).is_err());
        }
    }

    #[test]
    fn every_manifest_is_written_as_the_newest_version_with_or_without_changelog_files() {
        for m in [sample(), with_logs()] {
            let bytes = m.encode();
            assert_eq!(bytes[4..8], CHECKPOINT_VERSION.to_le_bytes());
            assert_eq!(CheckpointManifest::decode(&bytes).unwrap(), m);
        }
        // Without changelog files the count is there, and 0, just before the CRC.
        let bytes = sample().encode();
        assert_eq!(bytes[bytes.len() - 8..bytes.len() - 4], [0; 4]);
        // Out of order, or named twice: refused.
        for bad in [
            {
                let mut b = with_logs();
                b.logs.swap(0, 1);
                b
            },
            {
                let mut b = with_logs();
                b.logs[1].file = b.logs[0].file.clone();
                b
            },
        ] {
            assert!(CheckpointManifest::decode(&bad.encode()).is_err());
        }
    }

    #[test]
    fn manifest_round_trips_and_detects_every_flip_and_cut() {
        for m in [sample(), with_logs()] {
            flips_and_cuts(&m);
        }
    }

    /// Meta info whose key hash is not known (decoded from a version that did not record it)
    /// is written with an empty name, which reads back as not known: never as a guessed name.
    #[test]
    fn an_unknown_key_hash_is_written_as_unknown() {
        let mut m = sample();
        m.meta.key_hash = None;
        let bytes = m.encode();
        assert_eq!(CheckpointManifest::decode(&bytes).unwrap(), m);
        let mut named = sample();
        named.meta.key_hash = Some("x".into());
        assert_eq!(named.encode().len(), bytes.len() + 1);
    }

    fn flips_and_cuts(m: &CheckpointManifest) {
        let bytes = m.encode();
        assert_eq!(CheckpointManifest::decode(&bytes).unwrap(), *m);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(CheckpointManifest::decode(&bad).is_err(), "flip at {i}");
        }
        for cut in 0..bytes.len() {
            assert!(CheckpointManifest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn file_names_stay_inside_the_storage() {
        assert!(valid_file_name("shared/0a-0000000001.seg"));
        for bad in ["shared/", "shared/../x", "shared/a/b", "/etc/passwd", "x.seg", "shared/.hidden"] {
            assert!(!valid_file_name(bad), "{bad}");
        }
    }
}
