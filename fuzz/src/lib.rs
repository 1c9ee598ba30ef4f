//! The bodies of the fuzz targets, one plain function per target.
//!
//! Each function takes arbitrary bytes, feeds them to a decoder of on-disk data, and exercises
//! everything the decoded value offers. Errors are the expected outcome for almost every input;
//! a panic (including an integer overflow in a debug build or a failed assertion below) is a
//! bug. The assertions check only what the library promises for input it accepted.
//!
//! Checksums stop almost every mutation at the first CRC, so each target runs its input twice:
//! as it is, and (when that differs) with every checksum it can find recomputed by
//! [`reseal`], so that mutations also reach the decoding behind the checksums.
//!
//! This file uses only `eddy`, `std`, and the `serde` (with `derive`) and `rkyv` that the
//! `codec` target's value types derive from: `tests/fuzz_regressions.rs` includes it by path
//! to run the committed corpus and the regression inputs in the normal test suite, where the
//! main crate's dependencies (`rkyv`) and dev-dependencies (`serde` with `derive`) provide them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eddy::checkpoint::{
    latest_checkpoint, verify_checkpoint, verify_savepoint, CheckpointOptions, CheckpointStorage, Checkpointer,
    LocalDirStorage, RestoreSource, Transfer, SAVEPOINT_FILE, SHARED_DIR,
};
use eddy::codec::{Bytes, Serializer, Str, U32, U64};
use eddy::format::block::{compression_of, read_block, TRAILER_LEN};
use eddy::format::changelog::{encode_header, frame_header, put_record, ChangelogReader};
use eddy::format::checkpoint::{valid_file_name, CheckpointManifest, SnapshotMeta, CHECKPOINT_VERSION, FLAG_FULL};
use eddy::format::key_hash64;
use eddy::format::savepoint::{SavepointReader, SavepointWriter};
use eddy::format::segment::{FOOTER_LEN, HEADER_LEN};
use eddy::format::store_manifest::{ManifestSegment, StoreManifest, MANIFEST_VERSION};
use eddy::format::{Block, BlockView, RecordKind, SegmentReader};
use eddy::io::{FaultFs, FileBytes, FileSystem};
use eddy::keygroup::KeyGroupRange;
use eddy::state::{
    BroadcastStateDescriptor, KeyedBackend, KeyedBackendBuilder, ListStateDescriptor, ManualClock, MapStateDescriptor,
    OperatorStateBackend, OperatorStateSnapshot, TtlConfig, ValueStateDescriptor,
};
use eddy::store::{StoreOptions, MANIFEST_FILE};

/// A target's body.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/` call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("segment", segment),
    ("block", block),
    ("store_manifest", store_manifest),
    ("store_open", store_open),
    ("codec", codec),
    ("checkpoint_manifest", checkpoint_manifest),
    ("savepoint", savepoint),
    ("restore", restore),
    ("changelog", changelog),
    ("job_checkpoint", job_checkpoint),
];

/// The targets whose inputs open stores (and so start background threads).
pub const STORE_TARGETS: &[&str] = &["store_open", "restore"];

/// The target function of a name in [`TARGETS`].
pub fn target(name: &str) -> Option<Target> {
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

/// Runs `run` on `data`, and again on `data` with its checksums made valid by `reseal` (when
/// that changed anything), so that mutations reach past the checksums.
fn as_is_and_resealed(data: &[u8], reseal: fn(&mut [u8]), run: fn(&[u8])) {
    run(data);
    let mut sealed = data.to_vec();
    reseal(&mut sealed);
    if sealed != data {
        run(&sealed);
    }
}

/// A segment file: open, verify, read every block and record, look up keys.
pub fn segment(data: &[u8]) {
    as_is_and_resealed(data, reseal::segment, segment_once);
}

fn segment_once(data: &[u8]) {
    let path = Path::new("/fuzz/0000000001.seg");
    let Ok(seg) = SegmentReader::open(FileBytes::from_vec(data.to_vec()), path) else { return };
    // `verify` validates every block; `read_block` and `mapped_block` check a block's
    // checksum and framing only, so their records are consistent only in a verified segment.
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
                let _ = seg.mapped_block(i);
                continue;
            }
        };
        let view = block.view();
        assert!(!view.is_empty(), "an empty block was accepted");
        let valid = verified || view.validate(0).is_ok();
        check_view(view, valid, data, &mut keys);
        if verified {
            for j in 0..view.len().min(MAX_RECORDS) {
                assert_eq!(seg.find_block(view.record(j).key), Some(i), "verified segment: record {j} of block {i}");
            }
        }
        // In place, twice: the first read verifies the checksum, the second trusts it.
        let compressed = seg.is_compressed(i);
        for _ in 0..2 {
            match seg.mapped_block(i) {
                Ok(Some(mapped)) => {
                    assert!(!compressed, "block {i} is compressed but was read in place");
                    assert_eq!(mapped.len(), view.len());
                    for j in 0..view.len().min(MAX_RECORDS) {
                        assert_eq!(mapped.record(j), view.record(j), "block {i} record {j} in place");
                    }
                }
                Ok(None) => assert!(compressed, "block {i} is stored as is but was not read in place"),
                Err(e) => panic!("block {i} reads into memory but not in place: {e}"),
            }
        }
    }
    assert!(seg.read_block(seg.block_count(), &mut dec).is_err());
    assert!(seg.mapped_block(seg.block_count()).is_err());
    let _ = seg.is_compressed(seg.block_count());

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
                check_lookup(block.view(), verified, key);
            }
            if let Ok(Some(view)) = seg.mapped_block(i) {
                check_lookup(view, verified, key);
            }
        }
    }
}

/// A data block payload (`Block::decode`) and a stored block with its trailer (`read_block`).
pub fn block(data: &[u8]) {
    as_is_and_resealed(data, reseal::tail, block_once);
}

fn block_once(data: &[u8]) {
    // Framing only: every accessor must still work on whatever the records are.
    if let Ok(view) = BlockView::new(data, 0) {
        let valid = view.validate(0).is_ok();
        check_view(view, valid, data, &mut Vec::new());
    }
    for offset in [0u64, data.len() as u64] {
        if let Ok(b) = Block::decode(data.to_vec().into_boxed_slice(), offset) {
            check_view(b.view(), true, data, &mut Vec::new());
        }
    }
    if let Ok(b) = Block::new(data.to_vec().into_boxed_slice(), 0) {
        let _ = (b.len(), b.is_empty(), b.size_in_memory(), b.record(0), b.seek(data), b.get(data));
    }

    let mut dec = None;
    // The whole input as one stored block followed by its trailer.
    if let Some(len) = data.len().checked_sub(TRAILER_LEN) {
        let _ = compression_of(data, 0, len as u32);
        if let Ok(payload) = read_block(data, 0, len as u32, &mut dec, true) {
            if let Ok(view) = BlockView::new(&payload, 0) {
                let valid = view.validate(0).is_ok();
                check_view(view, valid, data, &mut Vec::new());
            }
        }
    }
    // A handle from the first 12 bytes, as is and reduced to the input's size.
    if data.len() >= 12 {
        let offset = u64::from_le_bytes(data[..8].try_into().unwrap());
        let len = u32::from_le_bytes(data[8..12].try_into().unwrap());
        let _ = compression_of(data, offset, len);
        let _ = read_block(data, offset, len, &mut dec, true);
        let n = data.len() as u64 + 1;
        let (offset, len) = (offset % n, (u64::from(len) % n) as u32);
        let _ = compression_of(data, offset, len);
        if let Ok(payload) = read_block(data, offset, len, &mut dec, true) {
            if let std::borrow::Cow::Borrowed(stored) = &payload {
                assert_eq!(*stored, &data[offset as usize..offset as usize + len as usize]);
            }
            if let Ok(view) = BlockView::new(&payload, offset) {
                let valid = view.validate(offset).is_ok();
                check_view(view, valid, data, &mut Vec::new());
            }
        }
    }
}

/// The store manifest: decode, and for accepted input, the round trip.
pub fn store_manifest(data: &[u8]) {
    as_is_and_resealed(data, reseal::tail, store_manifest_once);
}

fn store_manifest_once(data: &[u8]) {
    let Ok(m) = StoreManifest::decode(data) else { return };
    let again = m.encode();
    // Older versions are read, but written as the newest.
    if data.get(4..8) == Some(&MANIFEST_VERSION.to_le_bytes()[..]) {
        assert_eq!(again, data, "decode accepted bytes that encode differently");
    }
    assert_eq!(StoreManifest::decode(&again).as_ref(), Ok(&m));
    for (i, s) in m.segments.iter().enumerate() {
        assert!(s.id < m.next_segment_id);
        assert!(m.segments[..i].iter().all(|t| t.id != s.id));
        assert!(s.mask.iter().all(|(a, b)| a <= b));
    }
}

/// A job checkpoint's metadata (`format-spec/job-checkpoint.md`): decoded, and what decodes
/// encodes to text that decodes the same.
pub fn job_checkpoint(data: &[u8]) {
    as_is_and_resealed(data, reseal::job_checkpoint, job_checkpoint_once);
}

fn job_checkpoint_once(data: &[u8]) {
    let path = Path::new("fuzz");
    let Ok(m) = eddy::runtime::JobCheckpoint::decode(path, data) else { return };
    let again = m.encode();
    assert_eq!(eddy::runtime::JobCheckpoint::decode(path, again.as_bytes()).as_ref().ok(), Some(&m));
    assert!(m.operators.iter().all(|(u, p)| !u.is_empty() && !u.contains('/') && *p > 0));
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
    let Some(input) = StoreInput::split(data) else { return };
    store_open_once(&input, data);
    let (mut manifest, mut segment1, mut segment2) =
        (input.manifest.to_vec(), input.segment1.to_vec(), input.segment2.to_vec());
    reseal::tail(&mut manifest);
    reseal::segment(&mut segment1);
    reseal::segment(&mut segment2);
    let sealed = StoreInput { flags: input.flags, manifest: &manifest, segment1: &segment1, segment2: &segment2 };
    if (input.manifest, input.segment1, input.segment2) != (sealed.manifest, sealed.segment1, sealed.segment2) {
        store_open_once(&sealed, data);
    }
}

/// `data` is the whole input, for keys to look up.
fn store_open_once(input: &StoreInput<'_>, data: &[u8]) {
    use open_flags::*;
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
                ManifestSegment::new(2, masks.by_ref().take(4).collect()),
                ManifestSegment::new(1, masks.collect()),
            ],
        };
        (m.encode(), [2, 1])
    } else {
        let ids = match StoreManifest::decode(input.manifest) {
            Ok(m) => [m.segments.first().map_or(1, |s| s.id), m.segments.get(1).map_or(2, |s| s.id)],
            Err(_) => [1, 2],
        };
        (input.manifest.to_vec(), ids)
    };
    if flags & NO_MANIFEST == 0 {
        fs.write_file(&dir.join(MANIFEST_FILE), &manifest).unwrap();
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

    if flags & WRITE_AND_COMPACT != 0 && store.put(b"\x00\x01fuzz", b"value").is_ok() {
        let _ = store.compact();
        let _ = store.get(b"\x00\x01fuzz");
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

// ---- checkpoints and savepoints ----

/// The max parallelism of the `restore` target's backends (and of its seeds).
pub const RESTORE_MAX_PARALLELISM: u32 = 16;
/// Where the `restore` target puts the checkpoint storage.
pub const RESTORE_CHECKPOINT_DIR: &str = "/cp";
/// Where the `restore` target puts the savepoint directory (its file is `SAVEPOINT` in it).
pub const RESTORE_SAVEPOINT_DIR: &str = "/sp";
/// The time the `restore` target's clock shows (TTL timestamps are compared with it).
pub const RESTORE_NOW_MS: i64 = 1_000_000;

/// A checkpoint manifest: decode, and for accepted input, the round trip and what the decoder
/// promises about what it accepts.
pub fn checkpoint_manifest(data: &[u8]) {
    as_is_and_resealed(data, reseal::tail, checkpoint_manifest_once);
}

fn checkpoint_manifest_once(data: &[u8]) {
    let Ok(m) = CheckpointManifest::decode(data) else { return };
    let again = m.encode();
    // An older version is written again as the newest, with the same content.
    if data[4..8] == CHECKPOINT_VERSION.to_le_bytes() {
        assert_eq!(again, data, "decode accepted bytes that encode differently");
    }
    assert_eq!(CheckpointManifest::decode(&again).as_ref(), Ok(&m));
    assert_eq!(m.flags & !FLAG_FULL, 0, "unknown flags accepted");
    check_snapshot_meta(&m.meta);
    for (i, s) in m.segments.iter().enumerate() {
        assert!(valid_file_name(&s.file), "file name {:?} accepted", s.file);
        assert!(m.segments[..i].iter().all(|t| t.file != s.file), "file {:?} named twice", s.file);
        assert!(s.segment_id < m.next_segment_id, "segment id {} not below the next one", s.segment_id);
        assert!(m.segments[..i].iter().all(|t| t.segment_id != s.segment_id), "segment id {} repeated", s.segment_id);
        assert!(s.mask.iter().all(|(a, b)| a <= b));
    }
    for (i, l) in m.logs.iter().enumerate() {
        assert!(valid_file_name(&l.file), "file name {:?} accepted", l.file);
        assert!(m.segments.iter().all(|s| s.file != l.file), "file {:?} named twice", l.file);
        assert!(
            m.logs[..i].iter().all(|t| t.file != l.file && t.log_seq < l.log_seq),
            "changelog {:?} out of order",
            l.file
        );
    }
    read_operator_state(std::slice::from_ref(&m.meta.operator));
}

/// A changelog file: every record with `ChangelogReader`; for accepted input, the records
/// written again (one frame) read back the same, and each record's kind, key and value are what
/// the reader promises.
pub fn changelog(data: &[u8]) {
    as_is_and_resealed(data, reseal::changelog, changelog_once);
}

fn changelog_once(data: &[u8]) {
    let Ok(mut reader) = ChangelogReader::new(data) else { return };
    let seq = reader.log_seq();
    let mut records = Vec::new();
    // Every record takes at least three bytes of the input: this ends.
    loop {
        match reader.next() {
            Ok(Some(r)) => {
                assert!(r.key.len() >= 2, "a key without its key group");
                assert!(r.kind != RecordKind::Delete || r.value.is_empty(), "a delete with a value");
                assert!(r.group_len == 0 || (2..=r.key.len()).contains(&r.group_len), "a group longer than its key");
                records.push((r.kind, r.key.to_vec(), r.group_len, r.value.to_vec()));
            }
            Ok(None) => break,
            Err(_) => return,
        }
    }
    let mut again = encode_header(seq).to_vec();
    let mut payload = Vec::new();
    for (kind, key, group_len, value) in &records {
        put_record(&mut payload, *kind, key, *group_len, value);
    }
    if !payload.is_empty() {
        again.extend_from_slice(&frame_header(&payload));
        again.extend_from_slice(&payload);
    }
    let mut reader = ChangelogReader::new(&again).expect("a written changelog header reads");
    for r in &records {
        let got = reader.next().expect("a written changelog reads").expect("a record is missing");
        assert_eq!((got.kind, got.key, got.group_len, got.value), (r.0, &r.1[..], r.2, &r.3[..]));
    }
    assert!(matches!(reader.next(), Ok(None)), "a written changelog reads more records");
}

/// What `SnapshotMeta::decode` promises of the meta info it accepts; the key serializer
/// compared with a few.
fn check_snapshot_meta(meta: &SnapshotMeta) {
    assert!((1..=32768).contains(&meta.max_parallelism), "max parallelism {}", meta.max_parallelism);
    assert_ne!(meta.key_hash.as_deref(), Some(""), "an empty key hash name read as a name");
    if let Some((a, b)) = meta.key_groups {
        assert!(a <= b && u32::from(b) < meta.max_parallelism, "key groups {a}..={b}");
    }
    for (i, s) in meta.states.iter().enumerate() {
        assert_ne!(s.id, 0, "state id 0 accepted");
        assert!(meta.states[..i].iter().all(|t| t.id != s.id && t.name != s.name), "state {:?} repeated", s.name);
        if let Some(ttl) = &s.ttl {
            assert!(ttl.ttl() >= std::time::Duration::from_millis(1));
        }
    }
    let _ = (U64.compatibility(&meta.key_serializer), Str.compatibility(&meta.key_serializer));
}

/// Operator state from a snapshot: redistributed, restored, the `restore` seeds' states
/// registered again (which reads their elements), and snapshotted.
fn read_operator_state(snapshots: &[OperatorStateSnapshot]) {
    let parts = OperatorStateBackend::redistribute(snapshots, 2).unwrap_or_default();
    for snap in snapshots.iter().chain(&parts) {
        let mut op = OperatorStateBackend::restore(snap.clone());
        if let Ok(list) = op.list_state("offsets", U64) {
            let _ = list.get().len();
        }
        let _ = op.union_list_state("offsets", U64).map(|l| l.get().len());
        if let Ok(rules) = op.broadcast_state(&restore_rules()) {
            let _ = rules.iter().count();
        }
        for l in snap.lists.iter().take(8) {
            let _ = op.list_state(&l.name, Bytes).map(|l| l.get().len());
        }
        // Registering creates the states the snapshot lacks; none of its own is lost.
        let again = op.snapshot();
        let lists = |s: &OperatorStateSnapshot| s.lists.iter().map(|l| l.name.clone()).collect::<Vec<_>>();
        let broadcast = |s: &OperatorStateSnapshot| s.broadcast.iter().map(|b| b.name.clone()).collect::<Vec<_>>();
        assert!(contains_all(&lists(&again), &lists(snap)), "a list state was lost");
        assert!(contains_all(&broadcast(&again), &broadcast(snap)), "a broadcast state was lost");
    }
}

/// Whether `all` holds every name of `some`, as many times as `some` does.
fn contains_all(all: &[String], some: &[String]) -> bool {
    let mut all = all.to_vec();
    some.iter().all(|name| match all.iter().position(|n| n == name) {
        Some(i) => {
            all.swap_remove(i);
            true
        }
        None => false,
    })
}

/// The broadcast state of the `restore` seeds.
pub fn restore_rules() -> BroadcastStateDescriptor<Str, Str> {
    BroadcastStateDescriptor::new("rules", Str, Str)
}

/// A savepoint file: `decode_all`, and chunk by chunk with `SavepointReader` (as restore and
/// `verify_savepoint` read it); for accepted input, the records and meta info written again
/// by `SavepointWriter` read back the same.
pub fn savepoint(data: &[u8]) {
    as_is_and_resealed(data, reseal::savepoint, savepoint_once);
}

fn savepoint_once(data: &[u8]) {
    let whole = eddy::format::savepoint::decode_all(data);
    let mut header: Option<(u64, SnapshotMeta)> = None;
    // Chunk by chunk: the records, if every chunk and the end marker read.
    let mut walked: Option<Vec<(Vec<u8>, Vec<u8>)>> = None;
    if let Ok(mut reader) = SavepointReader::new(data) {
        check_snapshot_meta(&reader.meta);
        header = Some((reader.savepoint_id, reader.meta.clone()));
        let (mut buf, mut key) = (Vec::new(), Vec::new());
        let mut records = Vec::new();
        let mut sound = true;
        let mut last_key_group = None;
        // Every chunk takes at least a header's worth of bytes: this ends.
        loop {
            match reader.next() {
                Ok(None) => break,
                Ok(Some(chunk)) => {
                    let kg = chunk.key_group;
                    assert!(last_key_group <= Some(kg), "key groups out of order");
                    last_key_group = Some(kg);
                    assert!((chunk.offset as usize) < data.len());
                    let mut n = 0u32;
                    let read = chunk.for_each(Path::new(SAVEPOINT_FILE), &mut buf, &mut key, |k, v| {
                        assert_eq!(k[..2], kg.to_be_bytes(), "a record outside its chunk's key group");
                        n += 1;
                        records.push((k.to_vec(), v.to_vec()));
                        Ok(())
                    });
                    match read {
                        Ok(()) => assert_eq!(n, chunk.records, "a chunk read fewer or more records than it holds"),
                        Err(_) => sound = false,
                    }
                }
                Err(_) => {
                    sound = false;
                    break;
                }
            }
        }
        if sound {
            assert!(matches!(reader.next(), Ok(None)), "the reader went on after the end marker");
            walked = Some(records);
        }
    }

    let fs = FaultFs::new();
    let dir = Path::new(RESTORE_SAVEPOINT_DIR);
    fs.write_file(&dir.join(SAVEPOINT_FILE), data).unwrap();
    let problems = verify_savepoint(&fs, dir);

    let Ok((meta, records)) = whole else { return };
    assert!(problems.is_empty(), "decode_all accepts a savepoint that verify refuses: {problems:?}");
    let (id, header_meta) = header.expect("decode_all accepts a savepoint whose header does not read");
    assert_eq!(header_meta, meta);
    assert!(walked.as_ref() == Some(&records), "decode_all and the reader read different records");
    assert!(records.windows(2).all(|w| w[0].0 < w[1].0), "decode_all returned keys out of order");
    // Written again, the records read back the same.
    let path = Path::new("/again/SAVEPOINT");
    fs.create_dir_all(Path::new("/again")).unwrap();
    let file = fs.create(path).unwrap();
    let mut w = SavepointWriter::new(file, path, id, &meta, None).unwrap();
    for (k, v) in &records {
        w.add(k, v).unwrap();
    }
    w.finish().unwrap();
    let again = fs.read(path).unwrap();
    assert!(
        eddy::format::savepoint::decode_all(&again) == Ok((meta, records)),
        "a savepoint written from decoded records reads differently"
    );
}

/// Flags of the first byte of a `restore` input.
pub mod restore_flags {
    /// The bits that choose the sources of the restore (one of the four values below).
    pub const SOURCES: u8 = 3;
    /// Restore from the checkpoint.
    pub const CHECKPOINT: u8 = 0;
    /// Restore from the savepoint.
    pub const SAVEPOINT: u8 = 1;
    /// Restore from both, the checkpoint first (their key groups must not overlap).
    pub const CHECKPOINT_AND_SAVEPOINT: u8 = 2;
    /// Restore from both, the savepoint first.
    pub const SAVEPOINT_AND_CHECKPOINT: u8 = 3;
    /// The backend owns key groups 0 to 7 of 16 only (the rest is masked or left out).
    pub const HALF_RANGE: u8 = 1 << 2;
    /// The manifest is stored (and restored) under the next checkpoint id after the one it
    /// holds.
    pub const WRONG_ID: u8 = 1 << 3;
    /// The checkpoint storage copies files instead of linking them.
    pub const COPY: u8 = 1 << 4;
    /// After reading everything: write, take a checkpoint into the same storage (reusing the
    /// restored files), verify it, restore it and read it all again.
    pub const CHECKPOINT_AFTER: u8 = 1 << 5;
    /// End with `close` instead of a plain drop.
    pub const CLOSE: u8 = 1 << 6;
}

/// Cuts a piece with a little-endian length of `width` bytes off the front of `rest`; a
/// length past the end is cut to what is there.
fn take_piece<'a>(rest: &mut &'a [u8], width: usize) -> &'a [u8] {
    let mut len_bytes = [0u8; 8];
    let w = width.min(rest.len());
    len_bytes[..w].copy_from_slice(&rest[..w]);
    *rest = &rest[w..];
    let len = (u64::from_le_bytes(len_bytes) as usize).min(rest.len());
    let (piece, tail) = rest.split_at(len);
    *rest = tail;
    piece
}

/// The pieces of a `restore` input:
/// `flags u8 | manifest_len u16 | manifest | segment1_len u32 | segment1 | segment2_len u32
/// | segment2 | savepoint`. Lengths past the end are cut to what is there, so every input
/// splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreInput<'a> {
    /// See [`restore_flags`].
    pub flags: u8,
    /// The checkpoint manifest, at `/cp/chk-<id, 20 digits>.manifest` (the id it holds, else 1).
    pub manifest: &'a [u8],
    /// The file of the manifest's first segment, at `/cp/<its name>` (else `shared/1.seg`).
    pub segment1: &'a [u8],
    /// The file of its second segment (else `shared/2.seg`).
    pub segment2: &'a [u8],
    /// The savepoint file, at `/sp/SAVEPOINT` (none if empty).
    pub savepoint: &'a [u8],
}

impl<'a> RestoreInput<'a> {
    /// Splits an input.
    pub fn split(data: &'a [u8]) -> Option<Self> {
        let (&flags, mut rest) = data.split_first()?;
        let manifest = take_piece(&mut rest, 2);
        let segment1 = take_piece(&mut rest, 4);
        let segment2 = take_piece(&mut rest, 4);
        Some(RestoreInput { flags, manifest, segment1, segment2, savepoint: rest })
    }

    /// The inverse of [`split`](Self::split).
    pub fn join(&self) -> Vec<u8> {
        let mut out = vec![self.flags];
        out.extend_from_slice(&(self.manifest.len() as u16).to_le_bytes());
        out.extend_from_slice(self.manifest);
        out.extend_from_slice(&(self.segment1.len() as u32).to_le_bytes());
        out.extend_from_slice(self.segment1);
        out.extend_from_slice(&(self.segment2.len() as u32).to_le_bytes());
        out.extend_from_slice(self.segment2);
        out.extend_from_slice(self.savepoint);
        out
    }

    /// The pieces with every checksum recomputed (the segments', then the manifest's over
    /// them, and the savepoint's): manifest, segment 1, segment 2, savepoint.
    pub fn resealed(&self) -> [Vec<u8>; 4] {
        let (mut manifest, mut segment1, mut segment2, mut savepoint) =
            (self.manifest.to_vec(), self.segment1.to_vec(), self.segment2.to_vec(), self.savepoint.to_vec());
        reseal::segment(&mut segment1);
        reseal::segment(&mut segment2);
        // The last piece is a savepoint, or the first changelog file of a manifest naming one.
        let names_log = CheckpointManifest::decode(&manifest).is_ok_and(|m| !m.logs.is_empty());
        if names_log {
            reseal::changelog(&mut savepoint);
        } else {
            reseal::savepoint(&mut savepoint);
        }
        reseal::checkpoint(&mut manifest, &[&segment1, &segment2], &savepoint);
        [manifest, segment1, segment2, savepoint]
    }
}

/// A keyed backend restored from a checkpoint and a savepoint made of the input's pieces, then
/// everything it holds read; `verify_checkpoint` and `verify_savepoint` on the same files.
pub fn restore(data: &[u8]) {
    let Some(input) = RestoreInput::split(data) else { return };
    restore_once(&input);
    let [manifest, segment1, segment2, savepoint] = input.resealed();
    let sealed = RestoreInput {
        flags: input.flags,
        manifest: &manifest,
        segment1: &segment1,
        segment2: &segment2,
        savepoint: &savepoint,
    };
    if sealed != input {
        restore_once(&sealed);
    }
}

/// The backend builder of the `restore` target (and of its seeds): `U64` keys, 16 key groups.
pub fn restore_builder(
    fs: Arc<dyn FileSystem>,
    clock: &ManualClock,
    range: Option<KeyGroupRange>,
) -> KeyedBackendBuilder<U64> {
    let b = KeyedBackend::builder(U64)
        .max_parallelism(RESTORE_MAX_PARALLELISM)
        .clock(Arc::new(clock.clone()))
        .store_options(StoreOptions::new().file_system(fs).memory_budget(256 << 10));
    match range {
        Some(r) => b.key_groups(r),
        None => b,
    }
}

/// The TTL of the `restore` seeds' `ttl` state.
pub fn restore_ttl() -> TtlConfig {
    TtlConfig::new(std::time::Duration::from_secs(3600))
}

fn restore_once(input: &RestoreInput<'_>) {
    use restore_flags::*;
    let flags = input.flags;
    let fs = FaultFs::new();
    let shared: Arc<dyn FileSystem> = Arc::new(fs.clone());
    let cp_dir = Path::new(RESTORE_CHECKPOINT_DIR);
    let sp_dir = PathBuf::from(RESTORE_SAVEPOINT_DIR);

    let decoded = CheckpointManifest::decode(input.manifest).ok();
    let mut id = decoded.as_ref().map_or(1, |m| m.checkpoint_id);
    if flags & WRONG_ID != 0 {
        id = id.wrapping_add(1);
    }
    let name = |i: usize| match decoded.as_ref().and_then(|m| m.segments.get(i)) {
        Some(s) => s.file.clone(),
        None => format!("{SHARED_DIR}/{}.seg", i + 1),
    };
    let names = [name(0), name(1)];
    fs.write_file(&cp_dir.join(format!("chk-{id:020}.manifest")), input.manifest).unwrap();
    fs.write_file(&cp_dir.join(&names[0]), input.segment1).unwrap();
    if names[1] != names[0] {
        fs.write_file(&cp_dir.join(&names[1]), input.segment2).unwrap();
    }
    if !input.savepoint.is_empty() {
        fs.write_file(&sp_dir.join(SAVEPOINT_FILE), input.savepoint).unwrap();
    }
    // A manifest that names changelog files gets the savepoint piece as its first one.
    if let Some(log) = decoded.as_ref().and_then(|m| m.logs.first()) {
        if !names.contains(&log.file) {
            fs.write_file(&cp_dir.join(&log.file), input.savepoint).unwrap();
        }
    }
    let Ok(storage) = LocalDirStorage::new(shared.clone(), cp_dir) else { return };
    let transfer = if flags & COPY != 0 { Transfer::Copy } else { Transfer::Link };
    let storage: Arc<dyn CheckpointStorage> = Arc::new(storage.transfer(transfer));

    // What restore reads, checked on its own.
    let _ = latest_checkpoint(storage.as_ref());
    let _ = verify_checkpoint(storage.as_ref(), id);
    let _ = verify_savepoint(&fs, &sp_dir);

    let checkpoint = RestoreSource::Checkpoint { storage: storage.clone(), id };
    let savepoint = RestoreSource::Savepoint { fs: shared.clone(), dir: sp_dir };
    let sources = match flags & SOURCES {
        CHECKPOINT => vec![checkpoint],
        SAVEPOINT => vec![savepoint],
        CHECKPOINT_AND_SAVEPOINT => vec![checkpoint, savepoint],
        _ => vec![savepoint, checkpoint],
    };
    let clock = ManualClock::new(RESTORE_NOW_MS);
    let range = (flags & HALF_RANGE != 0).then(|| KeyGroupRange::new(0, 7).unwrap());
    let Ok((mut b, restored)) = restore_builder(shared.clone(), &clock, range).restore("/store", &sources) else {
        return;
    };
    assert_eq!(b.key_groups(), range.unwrap_or(KeyGroupRange::new(0, 15).unwrap()));
    assert_eq!(restored.operator_states.len(), sources.len());
    read_operator_state(&restored.operator_states);
    let operator = OperatorStateBackend::redistribute(&restored.operator_states, 1)
        .ok()
        .and_then(|mut v| v.pop())
        .unwrap_or_default();
    let mut op = OperatorStateBackend::restore(operator);
    read_backend(&mut b);

    if flags & CHECKPOINT_AFTER != 0 {
        checkpoint_after(&storage, id, &mut b, &mut op, &shared, &clock);
    }
    if flags & CLOSE != 0 {
        let _ = b.close();
    } else {
        drop(b);
    }
}

/// A new checkpoint of a restored backend into the storage it came from, then restored.
fn checkpoint_after(
    storage: &Arc<dyn CheckpointStorage>,
    id: u64,
    b: &mut KeyedBackend<U64>,
    op: &mut OperatorStateBackend,
    fs: &Arc<dyn FileSystem>,
    clock: &ManualClock,
) {
    let Some(next) = id.checked_add(1) else { return };
    if let Ok(offsets) = op.list_state("offsets", U64) {
        offsets.add(next);
    }
    if let Ok(value) = b.state(ValueStateDescriptor::new("value", U64)) {
        if b.set_current_key(&next).is_ok() {
            let _ = value.update(b, &next);
        }
    }
    let Ok(mut cp) = Checkpointer::new(storage.clone(), CheckpointOptions::new().retain(2)) else { return };
    let done = cp.checkpoint(next, b, op, false).and_then(|()| cp.wait(next));
    cp.close();
    if done.is_err() {
        return;
    }
    // Files it reused from the restored checkpoint may be damaged: no promise here.
    let _ = verify_checkpoint(storage.as_ref(), next);
    let source = RestoreSource::Checkpoint { storage: storage.clone(), id: next };
    if let Ok((mut again, restored)) = restore_builder(fs.clone(), clock, None).restore("/store-again", &[source]) {
        read_operator_state(&restored.operator_states);
        read_backend(&mut again);
    }
}

/// Everything a restored backend holds: the store scanned and verified, the seeds' states
/// registered again (a typed error when the snapshot's differ) and read key by key, timers
/// fired, and a write.
fn read_backend(b: &mut KeyedBackend<U64>) {
    let range = b.key_groups();
    if let Ok(it) = b.store().scan_key_groups(range) {
        let _ = it.next_entry_count(MAX_SCAN);
    }
    if let Ok(it) = b.store().scan_range(&[], None) {
        let _ = it.next_entry_count(MAX_SCAN);
    }
    let _ = b.store().verify();
    let _ = b.states().count();

    if let Ok(value) = b.state(ValueStateDescriptor::new("value", U64)) {
        for k in b.keys(&value).unwrap_or_default().iter().take(MAX_LOOKUPS) {
            if b.set_current_key(k).is_ok() {
                let _ = value.get(b);
            }
        }
        if b.set_current_key(&u64::MAX).is_ok() {
            let _ = value.update(b, &1);
            let _ = value.get(b);
        }
    }
    if let Ok(ttl) = b.state(ValueStateDescriptor::new("ttl", U64).ttl(restore_ttl())) {
        for k in b.keys(&ttl).unwrap_or_default().iter().take(MAX_LOOKUPS) {
            if b.set_current_key(k).is_ok() {
                let _ = ttl.get(b);
            }
        }
    }
    if let Ok(list) = b.state(ListStateDescriptor::new("list", U32)) {
        for k in b.keys(&list).unwrap_or_default().iter().take(MAX_LOOKUPS) {
            if b.set_current_key(k).is_ok() {
                let _ = list.get_vec(b);
                let _ = list.add(b, &7);
            }
        }
    }
    if let Ok(map) = b.state(MapStateDescriptor::new("map", U32, Str)) {
        for k in b.keys(&map).unwrap_or_default().iter().take(MAX_LOOKUPS) {
            if b.set_current_key(k).is_ok() {
                if let Ok(mut it) = map.iter(b) {
                    let mut n = 0;
                    while let Ok(Some(_)) = it.next_entry() {
                        n += 1;
                        if n >= MAX_RECORDS {
                            break;
                        }
                    }
                }
                let _ = map.get(b, &1);
            }
        }
    }
    if let Ok(timers) = b.timer_service("timers") {
        let _ = (timers.next_event_time(b), timers.next_processing_time(b));
        // Each timer fires once (it is deleted as it fires, and nothing registers one again),
        // so firing ends after at most as many timers as the store has records, twice over
        // for records that damage repeats. More means it does not end.
        let records = b.store().scan_range(&[], None).map_or(0, |it| it.next_entry_count(MAX_SCAN));
        let limit = 2 * records + 16;
        for event_time in [true, false] {
            let mut fired = 0;
            let mut count = |_: &mut KeyedBackend<U64>, t: eddy::state::Timer<u64, ()>| {
                fired += 1;
                assert!(
                    fired <= limit,
                    "{fired} timers fired from {records} records: firing does not end (now key {} at {})",
                    t.key,
                    t.timestamp
                );
                Ok(())
            };
            let _ = if event_time {
                timers.advance_watermark(b, i64::MAX, &mut count)
            } else {
                timers.advance_processing_time(b, i64::MAX, &mut count)
            };
        }
    }
    let _ = b.store().flush();
    if let Ok(it) = b.store().scan_key_groups(range) {
        let _ = it.next_entry_count(MAX_SCAN);
    }
}

// ---- codec ----

/// The first byte of a `codec` input: which serializer reads the rest. Any byte from
/// [`COUNT`](codec_cases::COUNT) on (such as [`ALL`](codec_cases::ALL)) runs every one of them
/// over the same bytes.
pub mod codec_cases {
    /// `U64`.
    pub const U64: u8 = 0;
    /// `I64`.
    pub const I64: u8 = 1;
    /// `F64`.
    pub const F64: u8 = 2;
    /// `Bool`.
    pub const BOOL: u8 = 3;
    /// `Char`.
    pub const CHAR: u8 = 4;
    /// `Str`, read and viewed.
    pub const STR: u8 = 5;
    /// `Bytes`, read and viewed.
    pub const BYTES: u8 = 6;
    /// `OptionOf(Str)`.
    pub const OPTION_STR: u8 = 7;
    /// `VecOf(U32)`.
    pub const VEC_U32: u8 = 8;
    /// `VecOf(Str)`.
    pub const VEC_STR: u8 = 9;
    /// `VecOf(Unit)`.
    pub const VEC_UNIT: u8 = 10;
    /// `(U64, Str, OptionOf(F64))`.
    pub const TUPLE: u8 = 11;
    /// `SerdeSerializer<SerdeEvent>` (postcard).
    pub const SERDE: u8 = 12;
    /// `RkyvSerializer<RkyvEvent>`, read and viewed at several alignments.
    pub const RKYV: u8 = 13;
    /// `SerializerSnapshot::decode`, and the snapshots in a decoded one's configuration.
    pub const SNAPSHOT: u8 = 14;
    /// The number of single cases: bytes from here on run all of them.
    pub const COUNT: u8 = 15;
    /// Every case over the same bytes.
    pub const ALL: u8 = 0xff;
}

/// At most this many values are read one after another from a `codec` input.
const MAX_VALUES: usize = 64;
/// How deep `codec` decodes snapshots nested in a snapshot's configuration.
const MAX_SNAPSHOT_DEPTH: usize = 8;

/// An enum for [`SerdeEvent`]: unit, newtype, struct and tuple variants.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SerdeKind {
    /// A unit variant.
    Click,
    /// A newtype variant.
    View(u32),
    /// A struct variant.
    Purchase {
        /// A string field.
        item: String,
        /// A signed (zigzag) field.
        cents: i64,
    },
    /// A tuple variant.
    Tagged(Option<String>, Vec<u16>),
}

/// The value type of the `codec` target's `SerdeSerializer`: nested vectors, options,
/// strings, enums, a map and a tuple.
///
/// Nothing in it is a sequence or map of zero-sized values (`Vec<()>`, a `Vec` of a unit
/// struct): postcard does not check such a count against the bytes left, and each element
/// takes no bytes, so a slot of a dozen bytes claiming 2^64 of them is read for ever. Add one
/// when `SerdeSerializer` bounds that.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SerdeEvent {
    /// A varint.
    pub id: u64,
    /// A string.
    pub user: String,
    /// An enum.
    pub kind: SerdeKind,
    /// A vector of enums.
    pub history: Vec<SerdeKind>,
    /// A vector of strings.
    pub tags: Vec<String>,
    /// A vector of options of tuples.
    pub nested: Vec<Option<(i16, String)>>,
    /// An option of a map.
    pub extra: Option<std::collections::BTreeMap<u16, Vec<u8>>>,
    /// A tuple.
    pub flags: (bool, char, i8),
}

/// An enum for [`RkyvEvent`].
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(compare(PartialEq), derive(Debug))]
pub enum RkyvKind {
    /// A unit variant.
    Click,
    /// A newtype variant.
    View(u32),
    /// A struct variant.
    Purchase {
        /// A string field.
        item: String,
        /// A signed field.
        cents: i64,
    },
    /// A tuple variant.
    Tagged(Option<String>, Vec<u16>),
}

/// The value type of the `codec` target's `RkyvSerializer`: nested vectors, options, strings
/// (inline and out of line), an enum, and fields aligned to 1 to 16 bytes.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(compare(PartialEq), derive(Debug))]
pub struct RkyvEvent {
    /// 8-aligned.
    pub id: u64,
    /// A string.
    pub user: String,
    /// An enum.
    pub kind: RkyvKind,
    /// A vector of enums.
    pub history: Vec<RkyvKind>,
    /// A vector of strings.
    pub tags: Vec<String>,
    /// A vector of 8-aligned elements.
    pub longs: Vec<u64>,
    /// An option of bytes.
    pub extra: Option<Vec<u8>>,
    /// 16-aligned.
    pub wide: u128,
    /// A byte that must be 0 or 1.
    pub flag: bool,
    /// A `u32` that must be a scalar value.
    pub letter: char,
}

/// How the `codec` target compares two values (bit equality for floats).
type ValueEq<T> = fn(&T, &T) -> bool;

/// Serializers over bytes read from disk: the first byte chooses one (see [`codec_cases`]),
/// which reads values one after another from the rest until an error, the end or
/// [`MAX_VALUES`]. Every value read must write back to bytes that read back as an equal value,
/// and the bytes it was read from must hold exactly it (`read_all`, and `view` where there is
/// one).
pub fn codec(data: &[u8]) {
    use codec_cases::*;
    use eddy::codec::{
        Bool, BorrowSerializer, Bytes, Char, OptionOf, Str, Unit, VecOf, F64 as F64s, I64 as I64s, U32, U64 as U64s,
    };
    let Some((&case, input)) = data.split_first() else { return };
    let run = |c: u8| case == c || case >= COUNT;
    if run(U64) {
        codec_values(&U64s, input, |a, b| a == b, |_, _| {});
    }
    if run(I64) {
        codec_values(&I64s, input, |a, b| a == b, |_, _| {});
    }
    if run(F64) {
        codec_values(&F64s, input, |a, b| a.to_bits() == b.to_bits(), |_, _| {});
    }
    if run(BOOL) {
        codec_values(&Bool, input, |a, b| a == b, |_, _| {});
    }
    if run(CHAR) {
        codec_values(&Char, input, |a, b| a == b, |_, _| {});
    }
    if run(STR) {
        codec_values(
            &Str,
            input,
            |a, b| a == b,
            |slot, v| {
                assert_eq!(Str.view(slot).ok(), v.map(String::as_str), "Str: view and read_all disagree on {slot:?}");
            },
        );
    }
    if run(BYTES) {
        codec_values(
            &Bytes,
            input,
            |a, b| a == b,
            |slot, v| {
                assert_eq!(
                    Bytes.view(slot).ok(),
                    v.map(Vec::as_slice),
                    "Bytes: view and read_all disagree on {slot:?}"
                );
            },
        );
    }
    if run(OPTION_STR) {
        codec_values(&OptionOf(Str), input, |a, b| a == b, |_, _| {});
    }
    if run(VEC_U32) {
        codec_values(&VecOf(U32), input, |a, b| a == b, |_, _| {});
    }
    if run(VEC_STR) {
        codec_values(&VecOf(Str), input, |a, b| a == b, |_, _| {});
    }
    if run(VEC_UNIT) {
        codec_values(
            &VecOf(Unit),
            input,
            |a, b| a == b,
            |_, v| {
                assert!(v.is_none_or(|v| v.len() <= VecOf::<Unit>::MAX_ZERO_LEN_COUNT));
            },
        );
    }
    if run(TUPLE) {
        let eq = |a: &(u64, String, Option<f64>), b: &(u64, String, Option<f64>)| {
            a.0 == b.0 && a.1 == b.1 && a.2.map(f64::to_bits) == b.2.map(f64::to_bits)
        };
        codec_values(&(U64s, Str, OptionOf(F64s)), input, eq, |_, _| {});
    }
    if run(SERDE) {
        codec_values(&eddy::codec::SerdeSerializer::<SerdeEvent>::new(), input, |a, b| a == b, |_, _| {});
    }
    if run(RKYV) {
        let s = eddy::codec::RkyvSerializer::<RkyvEvent>::new();
        codec_values(&s, input, |a, b| a == b, |slot, v| rkyv_slot(&s, slot, v));
    }
    if run(SNAPSHOT) {
        snapshots(input, 0);
    }
}

/// Reads `input` as a whole (`read_all`) and as values one after another (`read`): every value
/// read round-trips, and its bytes read as it alone. `slot` checks what else can be said of
/// bytes that hold exactly one value (`Some`, the value `read_all` gave) or not (`None`).
fn codec_values<S>(s: &S, input: &[u8], eq: ValueEq<S::Value>, mut slot: impl FnMut(&[u8], Option<&S::Value>))
where
    S: eddy::codec::Serializer,
    S::Value: std::fmt::Debug,
{
    let name = std::any::type_name::<S>();
    let whole = s.read_all(input);
    slot(input, whole.as_ref().ok());
    let mut cursor = input;
    for i in 0..MAX_VALUES {
        let before = cursor;
        let Ok(value) = s.read(&mut cursor) else {
            assert!(i > 0 || whole.is_err(), "{name}: read_all accepts what read does not");
            break;
        };
        assert!(cursor.len() <= before.len(), "{name}: read moved the cursor back");
        let bytes = &before[..before.len() - cursor.len()];
        if i == 0 {
            match &whole {
                Ok(w) => {
                    assert!(cursor.is_empty(), "{name}: read_all accepted bytes that read leaves {}", cursor.len());
                    assert!(eq(w, &value), "{name}: read_all gave {w:?}, read gave {value:?}");
                }
                Err(_) => assert!(!cursor.is_empty(), "{name}: read used up bytes that read_all refused"),
            }
        }
        match s.read_all(bytes) {
            Ok(again) => assert!(eq(&again, &value), "{name}: {bytes:?} read as {value:?}, then as {again:?}"),
            Err(e) => panic!("{name}: {bytes:?} read as {value:?} from a longer input, alone: {e}"),
        }
        slot(bytes, Some(&value));
        round_trip(s, &value, eq);
        if bytes.is_empty() || cursor.is_empty() {
            break;
        }
    }
}

/// `value`, written after a byte that must stay, reads back as itself from exactly its
/// encoding, whose last byte cut off leaves no value.
fn round_trip<S>(s: &S, value: &S::Value, eq: ValueEq<S::Value>)
where
    S: eddy::codec::Serializer,
    S::Value: std::fmt::Debug,
{
    let name = std::any::type_name::<S>();
    let mut out = vec![0xA5];
    s.write(value, &mut out);
    assert_eq!(out[0], 0xA5, "{name}: write changed the bytes before its own");
    let enc = &out[1..];
    if let Some(n) = s.fixed_len() {
        assert_eq!(enc.len(), n, "{name}: fixed length {n}, but {value:?} wrote {enc:?}");
    }
    let mut cursor = enc;
    match s.read(&mut cursor) {
        Ok(again) => {
            assert!(eq(&again, value), "{name}: {value:?} wrote {enc:?}, which reads as {again:?}");
            assert!(cursor.is_empty(), "{name}: {value:?} wrote {enc:?}, of which read leaves {}", cursor.len());
        }
        Err(e) => panic!("{name}: {value:?} wrote {enc:?}, which does not read: {e}"),
    }
    match s.read_all(enc) {
        Ok(again) => assert!(eq(&again, value), "{name}: {value:?} wrote {enc:?}, which read_all reads as {again:?}"),
        Err(e) => panic!("{name}: {value:?} wrote {enc:?}, which read_all refuses: {e}"),
    }
    if let Some((_, cut)) = enc.split_last() {
        let mut cursor = cut;
        if let Ok(other) = s.read(&mut cursor) {
            panic!("{name}: {value:?} wrote {enc:?}, a proper prefix of which reads as {other:?}");
        }
    }
}

/// An rkyv slot (length prefix and archive) viewed where it lies and at addresses that put the
/// archive at 0, 1, 4 and 8 modulo 16: `view` accepts exactly what `read_all` does, and the
/// view equals the value.
fn rkyv_slot(s: &eddy::codec::RkyvSerializer<RkyvEvent>, slot: &[u8], value: Option<&RkyvEvent>) {
    use eddy::codec::{BorrowSerializer, Serializer};
    let check = |bytes: &[u8], archive_align: Option<usize>| {
        let read = s.read_all(bytes);
        match (s.view(bytes), value) {
            (Ok(view), Some(v)) => {
                assert!(*view == *v, "rkyv: the view differs from the value read: {view:?} vs {v:?}");
                assert_eq!(read.as_ref(), Ok(v), "rkyv: the same bytes read differently at another address");
                if archive_align == Some(0) {
                    assert!(view.is_in_place(), "rkyv: a 16-aligned archive was copied");
                }
            }
            (Ok(view), None) => panic!("rkyv: view accepts what read_all refuses ({read:?}): {view:?}"),
            (Err(e), Some(v)) => panic!("rkyv: read_all gives {v:?}, view refuses: {e}"),
            (Err(_), None) => assert!(read.is_err(), "rkyv: read_all accepts at another address"),
        }
    };
    check(slot, None);
    // The varint prefix's length (a damaged one too), so as to place the archive after it.
    let prefix = slot.iter().take(10).position(|b| b & 0x80 == 0).map_or(1, |i| i + 1);
    for align in [0usize, 1, 4, 8] {
        let start = (32 + align - prefix % 16) % 16;
        let mut buf = rkyv::util::AlignedVec::<16>::with_capacity(start + slot.len());
        buf.extend_from_slice(&[0xEE; 16][..start]);
        buf.extend_from_slice(slot);
        check(&buf[start..], Some(align));
    }
}

/// Snapshots one after another; each encodes back to the bytes it was decoded from, and its
/// configuration is decoded as nested snapshots (what composites keep there), `depth` deep.
fn snapshots(input: &[u8], depth: usize) {
    use eddy::codec::{OptionOf, RkyvSerializer, SerdeSerializer, Serializer, SerializerSnapshot, Str, VecOf, U64};
    let mut cursor = input;
    for _ in 0..MAX_VALUES {
        let before = cursor;
        let Ok(snap) = SerializerSnapshot::decode(&mut cursor) else { break };
        let bytes = &before[..before.len() - cursor.len()];
        let mut out = Vec::new();
        snap.encode(&mut out);
        assert_eq!(out, bytes, "snapshot {snap:?} encodes to other bytes than it was decoded from");
        let mut again = &out[..];
        assert_eq!(SerializerSnapshot::decode(&mut again).as_ref(), Ok(&snap));
        assert!(again.is_empty());
        let _ = (
            U64.compatibility(&snap),
            OptionOf(VecOf(Str)).compatibility(&snap),
            SerdeSerializer::<SerdeEvent>::new().compatibility(&snap),
            RkyvSerializer::<RkyvEvent>::new().compatibility(&snap),
        );
        if depth < MAX_SNAPSHOT_DEPTH {
            snapshots(&snap.config, depth + 1);
        }
        if bytes.is_empty() || cursor.is_empty() {
            break;
        }
    }
}

/// The name the store gives segment `id`'s file (`src/store/segment.rs`).
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

/// Every record of a block, and lookups of its keys and of keys from `data`; the keys it
/// sampled go to `keys`. `valid`: the block passed `validate`, so its records are well formed
/// and its keys strictly increase; without it, only the absence of panics is checked.
fn check_view(view: BlockView<'_>, valid: bool, data: &[u8], keys: &mut Vec<Vec<u8>>) {
    let n = view.len().min(MAX_RECORDS);
    let mut prev: Option<&[u8]> = None;
    for i in 0..n {
        let rec = view.record(i);
        if valid {
            if let Some(p) = prev {
                assert!(p < rec.key, "record {i}: keys out of order in a valid block");
            }
            assert_eq!(view.seek(rec.key), i);
            assert_eq!(view.get(rec.key), Some(rec));
        }
        prev = Some(rec.key);
    }
    assert_eq!(view.record(view.len()), view.record(usize::MAX));
    let first = keys.len();
    if !view.is_empty() {
        for i in [0, view.len() / 2, view.len() - 1] {
            push_key_variants(keys, view.record(i).key);
        }
    }
    let sampled = keys.len();
    input_keys(keys, data);
    for key in keys[first..].iter().take(MAX_LOOKUPS) {
        check_lookup(view, valid, key);
    }
    keys.truncate(sampled);
}

/// `seek` and `get` of one key: in bounds, and (in a valid block) in agreement with each
/// other and with the records. In a block that was not validated, `get` may return a record
/// of another key: only the absence of panics is checked there.
fn check_lookup(view: BlockView<'_>, valid: bool, key: &[u8]) {
    let i = view.seek(key);
    assert!(i <= view.len());
    let got = view.get(key);
    if !valid {
        return;
    }
    if let Some(rec) = got {
        assert_eq!(rec.key, key);
    }
    if i < view.len() {
        assert!(view.record(i).key >= key);
    }
    if i > 0 {
        assert!(view.record(i - 1).key < key);
    }
    match got {
        Some(rec) => assert_eq!(view.record(i), rec),
        None => assert!(i == view.len() || view.record(i).key != key),
    }
}

/// Recomputes the checksums of (possibly mutated) files, best effort: whatever does not parse
/// far enough to find a checksum is left as it is. Never panics.
pub mod reseal {
    use super::{CheckpointManifest, FOOTER_LEN, HEADER_LEN, MAX_BLOCKS};

    /// A job checkpoint's metadata: its last line made the CRC-32 of the text before it (when
    /// the bytes have such a line; the length stays the same).
    pub fn job_checkpoint(data: &mut [u8]) {
        let Some(at) = data.windows(6).rposition(|w| w == b"crc32 ") else { return };
        let hex = format!("{:08x}", crc32(&data[..at]));
        let end = (at + 6 + 8).min(data.len());
        let n = end - (at + 6);
        data[at + 6..end].copy_from_slice(&hex.as_bytes()[..n]);
    }

    /// The CRC-32 (IEEE) that every eddy checksum uses.
    pub fn crc32(bytes: &[u8]) -> u32 {
        crc32_of(&[bytes])
    }

    /// The CRC-32 of pieces one after another.
    pub fn crc32_of(bytes: &[&[u8]]) -> u32 {
        const TABLE: [u32; 256] = {
            let mut table = [0u32; 256];
            let mut i = 0;
            while i < 256 {
                let mut c = i as u32;
                let mut k = 0;
                while k < 8 {
                    c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
                    k += 1;
                }
                table[i] = c;
                i += 1;
            }
            table
        };
        let mut c = !0u32;
        for &b in bytes.iter().flat_map(|piece| piece.iter()) {
            c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
        !c
    }

    /// A checksum in the last four bytes, of everything before them (the store manifest; a
    /// lone block with its trailer).
    pub fn tail(bytes: &mut [u8]) {
        if let Some(body) = bytes.len().checked_sub(4) {
            let crc = crc32(&bytes[..body]);
            bytes[body..].copy_from_slice(&crc.to_le_bytes());
        }
    }

    /// The trailer checksum of the block stored at `offset` with `len` bytes, if it fits.
    pub fn block(bytes: &mut [u8], offset: u64, len: u32) {
        let Ok(start) = usize::try_from(offset) else { return };
        let Some(crc_at) = start.checked_add(len as usize).and_then(|e| e.checked_add(5)) else { return };
        if crc_at.checked_add(4).is_none_or(|end| end > bytes.len()) {
            return;
        }
        let crc = crc32(&bytes[start..crc_at]);
        bytes[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    }

    // Footer layout: filter, index and key-group index handles (offset u64, length u32),
    // records u64, blocks u32, flags u32, version u32, crc32 u32 (of what precedes it), magic.
    const FOOTER_CRC_OFFSET: usize = 3 * 12 + 8 + 4 + 4 + 4;

    /// Every checksum of a segment file: the data blocks the index names, the filter, the
    /// index, the key-group index and the footer.
    pub fn segment(bytes: &mut [u8]) {
        let Some(footer_start) = bytes.len().checked_sub(FOOTER_LEN) else { return };
        if footer_start < HEADER_LEN || FOOTER_CRC_OFFSET + 4 > FOOTER_LEN {
            return;
        }
        let handle = |bytes: &[u8], i: usize| {
            let at = footer_start + 12 * i;
            let offset = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
            let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            (offset, len)
        };
        let (filter, index, kg_index) = (handle(bytes, 0), handle(bytes, 1), handle(bytes, 2));
        for (offset, len) in data_blocks(bytes, index) {
            block(bytes, offset, len);
        }
        for (offset, len) in [filter, index, kg_index] {
            block(bytes, offset, len);
        }
        let crc = crc32(&bytes[footer_start..footer_start + FOOTER_CRC_OFFSET]);
        let at = footer_start + FOOTER_CRC_OFFSET;
        bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// The data block handles of an uncompressed index block:
    /// `count u32 | (key_len varint | key | offset u64 | len u32) * count`.
    fn data_blocks(bytes: &[u8], (offset, len): (u64, u32)) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        let Ok(start) = usize::try_from(offset) else { return out };
        let Some(end) = start.checked_add(len as usize) else { return out };
        // The compression byte right after the payload must say "stored as is".
        if bytes.get(end) != Some(&0) {
            return out;
        }
        let mut r = &bytes[start..end];
        let Some(count) = take::<4>(&mut r).map(u32::from_le_bytes) else { return out };
        for _ in 0..count.min(MAX_BLOCKS as u32) {
            let Some(klen) = varint(&mut r) else { break };
            if klen as usize > r.len() {
                break;
            }
            r = &r[klen as usize..];
            let (Some(offset), Some(len)) = (take::<8>(&mut r), take::<4>(&mut r)) else { break };
            out.push((u64::from_le_bytes(offset), u32::from_le_bytes(len)));
        }
        out
    }

    /// A checkpoint manifest: the checksum in its last four bytes, and when it then decodes,
    /// the lengths of its first segments set to those of `segments` (its files in order). A
    /// manifest whose lengths all fit is left as it is; one with a length changed is written
    /// again, as the newest version.
    pub fn checkpoint(manifest: &mut Vec<u8>, segments: &[&[u8]], log: &[u8]) {
        tail(manifest);
        let Ok(mut m) = CheckpointManifest::decode(manifest) else { return };
        let mut changed = false;
        let mut set = |file_len: &mut u64, len: usize| {
            changed |= *file_len != len as u64;
            *file_len = len as u64;
        };
        for (s, file) in m.segments.iter_mut().zip(segments) {
            set(&mut s.file_len, file.len());
        }
        if let Some(l) = m.logs.first_mut() {
            set(&mut l.file_len, log.len());
        }
        if changed {
            *manifest = m.encode();
        }
    }

    /// A changelog file (`src/format/changelog.rs`): the header's checksum, and each frame's
    /// as far as the frame lengths hold.
    pub fn changelog(bytes: &mut [u8]) {
        const HEADER: usize = 20;
        if bytes.len() < HEADER {
            return;
        }
        let crc = crc32(&bytes[..16]);
        bytes[16..20].copy_from_slice(&crc.to_le_bytes());
        let mut at = HEADER;
        while at + 8 <= bytes.len() {
            let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
            let Some(end) = (at + 8).checked_add(len).filter(|&e| e <= bytes.len()) else { return };
            let crc = crc32(&bytes[at + 8..end]);
            bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
            at = end;
        }
    }

    // Savepoint layout (`src/format/savepoint.rs`): header `magic | version u32 | id u64 |
    // meta_len u32 | meta | crc32`, chunks `tag 1 | key_group u16 | records u32 | raw_len u32 |
    // stored_len u32 | compression u8 | crc32 | payload`, end `tag 0 | chunks u64 | records u64
    // | crc32`.
    const SAVEPOINT_META_AT: usize = 4 + 4 + 8 + 4;
    const CHUNK_CRC_AT: usize = 1 + 2 + 4 + 4 + 4 + 1;
    const END_CRC_AT: usize = 1 + 8 + 8;
    /// At most this many chunks of a savepoint are re-sealed.
    const MAX_CHUNKS: usize = 4096;

    /// Every checksum of a savepoint file: the header's, each chunk's (its header fields and
    /// payload) and the end marker's, as far as the framing holds. The counts in the end
    /// marker are left as they are.
    pub fn savepoint(bytes: &mut [u8]) {
        let Some(meta_len) = bytes.get(SAVEPOINT_META_AT - 4..SAVEPOINT_META_AT) else { return };
        let meta_len = u32::from_le_bytes(meta_len.try_into().unwrap()) as usize;
        let Some(header_len) = SAVEPOINT_META_AT.checked_add(meta_len) else { return };
        if !put_crc(bytes, 0, header_len) {
            return;
        }
        let mut pos = header_len + 4;
        for _ in 0..MAX_CHUNKS {
            match bytes.get(pos) {
                Some(1) => {
                    let Some(len) = bytes.get(pos + 11..pos + 15) else { return };
                    let stored_len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
                    let header_end = pos + CHUNK_CRC_AT;
                    let Some(end) = (header_end + 4).checked_add(stored_len) else { return };
                    if end > bytes.len() {
                        return;
                    }
                    let crc = crc32_of(&[&bytes[pos..header_end], &bytes[header_end + 4..end]]);
                    bytes[header_end..header_end + 4].copy_from_slice(&crc.to_le_bytes());
                    pos = end;
                }
                Some(0) => {
                    put_crc(bytes, pos, pos + END_CRC_AT);
                    return;
                }
                _ => return,
            }
        }
    }

    /// Writes the CRC-32 of `bytes[start..end]` at `end`, if it fits; whether it did.
    fn put_crc(bytes: &mut [u8], start: usize, end: usize) -> bool {
        if end.checked_add(4).is_none_or(|e| e > bytes.len()) || start > end {
            return false;
        }
        let crc = crc32(&bytes[start..end]);
        bytes[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        true
    }

    fn take<const N: usize>(r: &mut &[u8]) -> Option<[u8; N]> {
        let (head, rest) = r.split_first_chunk::<N>()?;
        *r = rest;
        Some(*head)
    }

    fn varint(r: &mut &[u8]) -> Option<u32> {
        let mut value = 0u32;
        for i in 0..5 {
            let [b] = take::<1>(r)?;
            value |= u32::from(b & 0x7f).checked_shl(7 * i)?;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
}
