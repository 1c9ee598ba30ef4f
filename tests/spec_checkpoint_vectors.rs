//! The checkpoint manifest and savepoint vectors of `format-spec/vectors/` against the
//! specification (`format-spec/manifest.md`, `format-spec/savepoint.md`,
//! `format-spec/versioning.md`).
//!
//! Each vector decodes, through the public API, to exactly the logical content that
//! `format-spec/vectors/README.md` lists (rebuilt here as structs and records); every
//! single-byte change and every truncation gives an error of the kind the specification names;
//! the byte-by-byte walks of the specification pages are those of the vectors; the constants
//! the specification states are those of the code; and the vectors work as what they are: the
//! manifest, with the segment vectors, is a checkpoint that verifies and restores, and the
//! savepoint restores into typed state.
//!
//! The vectors of the newest versions (`checkpoint-manifest-v4.bin`, `savepoint-v3.sp`) are
//! written by the real writers (`CheckpointManifest::encode`, `SavepointWriter`). Regenerate
//! them only for a format change:
//!
//! ```text
//! cargo test --test spec_checkpoint_vectors -- --ignored regenerate
//! ```
//!
//! The vectors of older versions (`checkpoint-manifest-v1.bin`, `checkpoint-manifest-v2.bin`,
//! `checkpoint-manifest-v3.bin`, `savepoint-v1.sp`, `savepoint-v2.sp`) are fixtures: no build
//! writes them any more and none may regenerate them, and every build decodes them to the
//! content listed and restores them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use eddy::checkpoint::{
    latest_checkpoint, verify_checkpoint, verify_savepoint, CheckpointOptions, CheckpointStorage, Checkpointer,
    LocalDirStorage, RestoreSource, SAVEPOINT_FILE, SHARED_DIR,
};
use eddy::codec::{OptionOf, Serializer, SerializerSnapshot, Str, Unit, U32, U64};
use eddy::format::checkpoint::{
    valid_file_name, CheckpointManifest, LogRef, OlderWriter, SegmentRef, SnapshotDecodeError, SnapshotMeta,
    StateMetaInfo, CHECKPOINT_MAGIC, CHECKPOINT_VERSION, FIRST_CHECKPOINT_VERSION, FLAG_FULL,
};
use eddy::format::savepoint::{
    decode_all, SavepointReader, SavepointWriter, FIRST_SAVEPOINT_VERSION, MAX_CHUNK, SAVEPOINT_MAGIC,
    SAVEPOINT_VERSION,
};
use eddy::io::{FaultFs, FileSystem};
use eddy::keygroup::{hash_bytes, key_group_for_hash, DEFAULT_KEY_HASH, JAVA_KEY_HASH};
use eddy::state::{
    BroadcastStateDescriptor, BroadcastStateSnapshot, KeyedBackend, ListStateSnapshot, ManualClock, MapStateDescriptor,
    OperatorStateBackend, OperatorStateSnapshot, Redistribution, StateKind, Timer, TtlConfig, TtlUpdate,
    ValueStateDescriptor,
};
use eddy::store::StoreOptions;
use eddy::{Corruption, Error, Misuse};

mod spec_common;
use spec_common::*;

/// The vectors of the newest versions, which the writers write.
const MANIFEST_VECTOR: &str = "checkpoint-manifest-v4.bin";
const SAVEPOINT_VECTOR: &str = "savepoint-v3.sp";
/// The fixtures of older versions.
const MANIFEST_V1_VECTOR: &str = "checkpoint-manifest-v1.bin";
const MANIFEST_V2_VECTOR: &str = "checkpoint-manifest-v2.bin";
const MANIFEST_V3_VECTOR: &str = "checkpoint-manifest-v3.bin";
const SAVEPOINT_V1_VECTOR: &str = "savepoint-v1.sp";
const SAVEPOINT_V2_VECTOR: &str = "savepoint-v2.sp";
/// The changelog file the version 2 manifest names (`changelog-v1.log`, 65 bytes, log 3).
const LOG_FILE: &str = "shared/0123456789abcdef-1-log0000000003.log";
const MAX_P: u32 = 4096;
/// The job the vectors' backend belongs to: the meta info's first field.
const JOB: &str = "sessions";
/// Where the manifest's meta info starts, and its `max_parallelism` after the job name.
const META_AT: usize = 28;
const MAX_P_AT: usize = META_AT + 4 + JOB.len();
/// The key serializer's field after the key-group tag and range, then (from manifest version
/// 3 and savepoint version 2 on) the key hash's name after the 18 bytes of `eddy.u64` v1.
const KEY_SERIALIZER_AT: usize = MAX_P_AT + 4 + 1 + 2 + 2;
const KEY_HASH_AT: usize = KEY_SERIALIZER_AT + 4 + 18;
/// The length of the key hash field in the newest versions: the name of the default hash.
const KEY_HASH_LEN: usize = 4 + DEFAULT_KEY_HASH.len();
const CHECKPOINT_ID: u64 = 42;
const SAVEPOINT_ID: u64 = 43;

/// The segments the manifest names, newest first: the segment vector that is the file, its
/// name in the checkpoint storage, its segment id and its mask. The same two segments, in the
/// same order and with the same mask, as the store manifest vector `manifest-v1.bin`.
type SegmentVector = (&'static str, &'static str, u64, &'static [(u16, u16)]);
const SEGMENTS: [SegmentVector; 2] = [
    ("segment-v1-zstd.seg", "shared/3f2a9c0d11e4b5a7-1-0000000002.seg", 2, &[]),
    ("segment-v1-small.seg", "shared/3f2a9c0d11e4b5a7-1-0000000001.seg", 1, &[(0x0100, 0x01ff)]),
];

/// The TTL of state `count`, and how the vectors README describes it.
fn count_ttl() -> TtlConfig {
    TtlConfig::new(Duration::from_secs(60)).update(TtlUpdate::OnReadAndWrite).cleanup_full_snapshot()
}
const COUNT_TTL_TEXT: &str =
    "60000 ms, OnReadAndWrite, NeverReturnExpired, incremental 0, flags 3 (in compaction, full snapshot)";

fn enc<S: Serializer>(s: &S, v: &S::Value) -> Vec<u8> {
    let mut out = Vec::new();
    s.write(v, &mut out);
    out
}

/// The meta info of the version 3 manifest and version 2 savepoint fixtures: what a backend
/// of job `sessions` with key serializer `U64`, the default key hash and max parallelism 4096,
/// owning every key group, writes after registering these states, with this operator state.
/// No state has evolved: each state's tag entry is its serializers' versions.
fn meta_v3() -> SnapshotMeta {
    let timers = vec![U64.snapshot(), Unit.snapshot()];
    let state = |id: u16, name: &str, kind: StateKind, serializers: Vec<SerializerSnapshot>, ttl| {
        let tag = serializers.iter().map(|s| s.version).collect();
        StateMetaInfo { id, name: name.into(), kind, serializers, ttl, tag, older: Vec::new() }
    };
    SnapshotMeta {
        job: JOB.into(),
        max_parallelism: MAX_P,
        key_groups: Some((0, (MAX_P - 1) as u16)),
        key_serializer: U64.snapshot(),
        key_hash: Some(DEFAULT_KEY_HASH.into()),
        states: vec![
            state(1, "count", StateKind::Value, vec![Unit.snapshot(), U64.snapshot()], Some(count_ttl())),
            state(2, "by-name", StateKind::Map, vec![Unit.snapshot(), Str.snapshot(), OptionOf(U32).snapshot()], None),
            state(3, "window/event-time", StateKind::Timers, timers.clone(), None),
            state(4, "window/processing-time", StateKind::Timers, timers, None),
        ],
        operator: OperatorStateSnapshot {
            lists: vec![ListStateSnapshot {
                name: "offsets".into(),
                mode: Redistribution::Union,
                serializer: U64.snapshot(),
                elements: vec![enc(&U64, &17), enc(&U64, &99)],
            }],
            broadcast: vec![BroadcastStateSnapshot {
                name: "rules".into(),
                keys: Str.snapshot(),
                values: Str.snapshot(),
                entries: vec![(enc(&Str, &"alert".to_string()), enc(&Str, &"x > 3".to_string()))],
            }],
        },
    }
}

/// The tag entry of `count`'s present writer in the newest vectors: its serializers'
/// versions and generation 1 (the first writer after the one the state was restored with).
const COUNT_TAG: [u32; 3] = [1, 1, 1];
/// The tag entry of `count`'s older writer, which wrote `u32` values with timestamps.
const COUNT_OLDER_TAG: [u32; 2] = [1, 1];

/// `count`'s older writer: `eddy.unit`, `eddy.u32`, with a TTL.
fn count_older_writer() -> OlderWriter {
    OlderWriter { tag: COUNT_OLDER_TAG.to_vec(), serializers: vec![Unit.snapshot(), U32.snapshot()], ttl: true }
}

/// The meta info of `checkpoint-manifest-v4.bin`: that of [`meta_v3`] after `count` evolved.
/// The backend was restored from a snapshot in which `count` held `u32` values
/// (`ValueStateDescriptor::new("count", U32)` with the same TTL) and registered it again as
/// `ValueStateDescriptor::new("count", U64)`: its present writer has the tag entry
/// [`COUNT_TAG`], and the `u32` writer, whose records one segment still holds, is its older
/// writer.
fn meta() -> SnapshotMeta {
    let mut meta = meta_v3();
    meta.states[0].tag = COUNT_TAG.to_vec();
    meta.states[0].older = vec![count_older_writer()];
    meta
}

/// The meta info of `savepoint-v3.sp`: that of [`meta`] once no record of the older writer is
/// left (after `KeyedBackend::migrate`): `count` keeps its tag entry, and lists no older
/// writer.
fn savepoint_meta() -> SnapshotMeta {
    let mut meta = meta();
    meta.states[0].older.clear();
    meta
}

/// The meta info of the fixtures of versions 1 and 2: that of [`meta_v3`], without the key
/// hash they did not record.
fn meta_v1() -> SnapshotMeta {
    SnapshotMeta { key_hash: None, ..meta_v3() }
}

/// Per state, the versions of its serializers (as a checkpointer writes them for every
/// segment when no state has evolved: each state's tag entry).
fn versions(meta: &SnapshotMeta) -> Vec<(u16, Vec<u32>)> {
    meta.states.iter().map(|s| (s.id, s.serializers.iter().map(|x| x.version).collect())).collect()
}

/// The segment entries naming the two segment vectors, with the per-state versions (tag
/// entries) `versions(i)` of the `i`-th.
fn segment_refs(versions: impl Fn(usize) -> Vec<(u16, Vec<u32>)>) -> Vec<SegmentRef> {
    SEGMENTS
        .iter()
        .enumerate()
        .map(|(i, (v, file, id, mask))| SegmentRef {
            file: file.to_string(),
            segment_id: *id,
            file_len: vector(v).len() as u64,
            mask: mask.to_vec(),
            versions: versions(i),
        })
        .collect()
}

/// `checkpoint-manifest-v4.bin`: incremental checkpoint 42 naming the two segment vectors.
/// The newer segment was written after `count` evolved, so its records of `count` carry
/// [`COUNT_TAG`]; the older one before, by the older writer ([`COUNT_OLDER_TAG`]).
fn manifest() -> CheckpointManifest {
    let meta = meta();
    let tags: Vec<(u16, Vec<u32>)> = meta.states.iter().map(|s| (s.id, s.tag.clone())).collect();
    let segments = segment_refs(|i| {
        let mut t = tags.clone();
        if i == 1 {
            t[0].1 = COUNT_OLDER_TAG.to_vec();
        }
        t
    });
    CheckpointManifest { checkpoint_id: CHECKPOINT_ID, flags: 0, next_segment_id: 3, segments, meta, logs: Vec::new() }
}

/// `checkpoint-manifest-v3.bin`: the fixture of version 3, the same checkpoint 42 before any
/// state evolved: every segment lists each state's serializer versions.
fn manifest_v3() -> CheckpointManifest {
    let meta = meta_v3();
    let segments = segment_refs(|_| versions(&meta));
    CheckpointManifest { checkpoint_id: CHECKPOINT_ID, flags: 0, next_segment_id: 3, segments, meta, logs: Vec::new() }
}

/// The length of `meta`'s encoding in the newest versions.
fn encoded_len(meta: &SnapshotMeta) -> usize {
    let mut out = Vec::new();
    meta.encode(&mut out);
    out.len()
}

/// The writers section of the meta info of `checkpoint-manifest-v4.bin` (`with_older`) or of
/// `savepoint-v3.sp`, encoded here from `manifest.md` ("Writers"), not by the library.
fn writers_section(with_older: bool) -> Vec<u8> {
    fn u32s(out: &mut Vec<u8>, vs: &[u32]) {
        out.extend_from_slice(&(vs.len() as u32).to_le_bytes());
        for v in vs {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    // A `serializer` field: length, identity_len, identity, version 1, config_len 0.
    fn serializer(out: &mut Vec<u8>, identity: &str) {
        out.extend_from_slice(&(2 + identity.len() as u32 + 8).to_le_bytes());
        out.extend_from_slice(&(identity.len() as u16).to_le_bytes());
        out.extend_from_slice(identity.as_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    out.extend_from_slice(&1u16.to_le_bytes());
    u32s(&mut out, &COUNT_TAG);
    if with_older {
        out.extend_from_slice(&1u32.to_le_bytes());
        u32s(&mut out, &COUNT_OLDER_TAG);
        out.extend_from_slice(&2u32.to_le_bytes());
        serializer(&mut out, "eddy.unit");
        serializer(&mut out, "eddy.u32");
        out.push(1);
    } else {
        out.extend_from_slice(&0u32.to_le_bytes());
    }
    out
}

fn key_group(key: u64) -> u16 {
    key_group_for_hash(hash_bytes(&enc(&U64, &key)), MAX_P).unwrap()
}

fn state_key(key: u64, state: u16) -> Vec<u8> {
    let mut out = key_group(key).to_be_bytes().to_vec();
    out.extend_from_slice(&state.to_be_bytes());
    U64.write(&key, &mut out);
    out
}

/// The records of the savepoint vectors in file (key) order: key, value and what they mean, as
/// keyed state writes them (`format-spec/state-records.md`).
fn records() -> Vec<(Vec<u8>, Vec<u8>, String)> {
    let count = |key: u64, n: u64, ts: i64| {
        let mut v = ts.to_le_bytes().to_vec();
        U64.write(&n, &mut v);
        (state_key(key, 1), v, format!("key {key}, `count` = {n}, last access at {ts} ms"))
    };
    let entry = |key: u64, user: &str, value: Option<u32>| {
        let mut k = state_key(key, 2);
        Str.write(&user.to_string(), &mut k);
        (k, enc(&OptionOf(U32), &value), format!("key {key}, `by-name` {user:?} = {value:?}"))
    };
    let timer = |key: u64, state: u16, ts: i64| {
        let mut k = key_group(key).to_be_bytes().to_vec();
        k.extend_from_slice(&state.to_be_bytes());
        k.extend_from_slice(&((ts as u64) ^ (1 << 63)).to_be_bytes());
        U64.write(&key, &mut k);
        let domain = if state == 3 { "event-time" } else { "processing-time" };
        (k, Vec::new(), format!("key {key}, {domain} timer at {ts} ms"))
    };
    let mut out = vec![
        count(7, 3, 1_000),
        count(42, 5, 1_200),
        entry(7, "a", Some(1)),
        entry(7, "b", None),
        entry(42, "x", Some(4_000_000_000)),
        timer(7, 3, 1_500),
        timer(42, 4, 2_000),
    ];
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn write_savepoint() -> Vec<u8> {
    let fs = FaultFs::new();
    fs.create_dir_all(Path::new("/sp")).unwrap();
    let path = Path::new("/sp/SAVEPOINT.tmp");
    let mut w = SavepointWriter::new(fs.create(path).unwrap(), path, SAVEPOINT_ID, &savepoint_meta(), None).unwrap();
    for (k, v, _) in records() {
        w.add(&k, &v).unwrap();
    }
    let len = w.finish().unwrap();
    let bytes = fs.read(path).unwrap();
    assert_eq!(len, bytes.len() as u64);
    bytes
}

/// Rewrites the vectors of the newest versions with the real writers. Run explicitly:
/// `cargo test --test spec_checkpoint_vectors -- --ignored regenerate`. The fixtures of older
/// versions are never written: no writer writes those versions any more.
#[test]
#[ignore = "rewrites the committed vectors; run only for a format change"]
fn regenerate() {
    let dir = spec_dir().join("vectors");
    std::fs::write(dir.join(MANIFEST_VECTOR), manifest().encode()).unwrap();
    std::fs::write(dir.join(SAVEPOINT_VECTOR), write_savepoint()).unwrap();
}

/// `checkpoint-manifest-v1.bin`: the checkpoint of `checkpoint-manifest-v3.bin` as version 1
/// wrote it, without the key hash.
fn manifest_v1() -> CheckpointManifest {
    CheckpointManifest { meta: meta_v1(), ..manifest_v3() }
}

/// `checkpoint-manifest-v2.bin`: the checkpoint of `checkpoint-manifest-v1.bin` with one
/// changelog file after its segments.
fn manifest_v2() -> CheckpointManifest {
    let mut m = manifest_v1();
    m.checkpoint_id = CHECKPOINT_ID + 2;
    m.logs = vec![LogRef { file: LOG_FILE.into(), log_seq: 3, file_len: 65, versions: versions(&m.meta) }];
    m
}

/// `v1` with the fields version 3 added: the version, the key hash after the key serializer,
/// and the changelog count (`logs`, then the count's entries) before a new CRC.
fn as_version_3(v1: &[u8], logs: &[u8]) -> Vec<u8> {
    let mut out = v1[..4].to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&v1[8..KEY_HASH_AT]);
    out.extend_from_slice(&(DEFAULT_KEY_HASH.len() as u32).to_le_bytes());
    out.extend_from_slice(DEFAULT_KEY_HASH.as_bytes());
    out.extend_from_slice(&v1[KEY_HASH_AT..v1.len() - 4]);
    out.extend_from_slice(logs);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The meta info of `checkpoint-manifest-v3.bin` (and `savepoint-v2.sp`) ends here in the
/// manifest: it is as long as the version 2 savepoint's `meta_len` says.
fn v3_meta_end() -> usize {
    META_AT + le_u32(&vector(SAVEPOINT_V2_VECTOR), 16) as usize
}

/// `v3` (a version 3 manifest whose meta info ends at `meta_end`) with what version 4 added:
/// the version, and `writers` (the writers section) at the end of the meta info, before a new
/// CRC.
fn as_version_4(v3: &[u8], meta_end: usize, writers: &[u8]) -> Vec<u8> {
    let mut out = v3[..4].to_vec();
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&v3[8..meta_end]);
    out.extend_from_slice(writers);
    out.extend_from_slice(&v3[meta_end..v3.len() - 4]);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn manifest_v2_fixture_is_the_v1_content_and_a_changelog_entry() {
    let bytes = vector(MANIFEST_V2_VECTOR);
    assert_eq!(CheckpointManifest::decode(&bytes).unwrap(), manifest_v2());
    // Written again, it is version 4 with the same content: the unknown key hash stays
    // unknown, and no state is in the writers section.
    let again = manifest_v2().encode();
    assert_eq!(le_u32(&again, 4), CHECKPOINT_VERSION);
    assert_eq!(CheckpointManifest::decode(&again).unwrap(), manifest_v2());
    let v1 = vector(MANIFEST_V1_VECTOR);
    assert_eq!(le_u32(&bytes, 4), 2);
    assert_eq!(le_u64(&bytes, 8), CHECKPOINT_ID + 2);
    // Between the id and the CRC, version 1's bytes, then the changelog entries.
    let body = &v1[16..v1.len() - 4];
    assert_eq!(&bytes[16..16 + body.len()], body);
    let mut at = 16 + body.len();
    assert_eq!(le_u32(&bytes, at), 1, "log_count");
    at += 4;
    assert_eq!(le_u32(&bytes, at) as usize, LOG_FILE.len());
    assert_eq!(&bytes[at + 4..at + 4 + LOG_FILE.len()], LOG_FILE.as_bytes());
    at += 4 + LOG_FILE.len();
    assert_eq!(le_u64(&bytes, at), 3, "log_seq");
    assert_eq!(le_u64(&bytes, at + 8), vector("changelog-v1.log").len() as u64, "file_len");
    at += 16;
    // versions: as in a segment entry; then the CRC.
    let n = bytes.len();
    assert_eq!(crc32fast::hash(&bytes[..n - 4]), le_u32(&bytes, n - 4));
    assert!(at < n - 4);
    for i in 0..n {
        for x in [0x01u8, 0x80] {
            let mut bad = bytes.clone();
            bad[i] ^= x;
            expect_flip_error(MANIFEST_V2_VECTOR, 2, i, x, CheckpointManifest::decode(&bad).map(drop));
        }
    }
    for cut in 0..n {
        assert!(CheckpointManifest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    // Its content as version 3 wrote it: version 1's bytes with the key hash, then the same
    // changelog entries; and as version 4 writes it: that, with an empty writers section.
    let mut named = manifest_v2();
    named.meta.key_hash = Some(DEFAULT_KEY_HASH.into());
    let mut v1_as_44 = v1.clone();
    v1_as_44[8..16].copy_from_slice(&(CHECKPOINT_ID + 2).to_le_bytes());
    let v3 = as_version_3(&v1_as_44, &bytes[16 + body.len()..n - 4]);
    assert_eq!(named.encode(), as_version_4(&v3, v3_meta_end(), &0u32.to_le_bytes()));
}

// ---- the constants the specification states ----

#[test]
fn constants_are_those_of_the_spec() {
    assert_eq!(CHECKPOINT_MAGIC, *b"EDCP");
    assert_eq!(CHECKPOINT_VERSION, 4);
    assert_eq!(FIRST_CHECKPOINT_VERSION, 1);
    assert_eq!(FLAG_FULL, 1);
    assert_eq!(SAVEPOINT_MAGIC, *b"EDSV");
    assert_eq!(SAVEPOINT_VERSION, 3);
    assert_eq!(FIRST_SAVEPOINT_VERSION, 1);
    // The names of the built-in key hashes (keygroup.md, manifest.md "Snapshot meta info").
    assert_eq!(DEFAULT_KEY_HASH, "eddy.murmur3");
    assert_eq!(JAVA_KEY_HASH, "java.hashCode");
    assert_eq!(MAX_CHUNK, 256 << 20);
    assert_eq!(SHARED_DIR, "shared");
    assert_eq!(SAVEPOINT_FILE, "SAVEPOINT");
    // The serializer snapshots the vectors hold.
    assert_eq!(U64.snapshot(), SerializerSnapshot::new("eddy.u64", 1));
    assert_eq!(Unit.snapshot(), SerializerSnapshot::new("eddy.unit", 1));
    assert_eq!(Str.snapshot(), SerializerSnapshot::new("eddy.string", 1));
    assert_eq!(U32.snapshot(), SerializerSnapshot::new("eddy.u32", 1));
    assert_eq!(
        OptionOf(U32).snapshot(),
        SerializerSnapshot::compose("eddy.option", 1, &[SerializerSnapshot::new("eddy.u32", 1)])
    );
    // The local directory layout.
    let storage = LocalDirStorage::new(Arc::new(FaultFs::new()), "/chk").unwrap();
    assert_eq!(storage.describe_manifest(42), Path::new("/chk/chk-00000000000000000042.manifest"));
    assert_eq!(storage.describe("shared/x.seg"), Path::new("/chk/shared/x.seg"));
    // File names a manifest may hold (manifest.md, "Segment entries").
    for good in
        ["shared/3f2a9c0d11e4b5a7-1-0000000002.seg", "shared/a-1-0000000002-full7.seg", "shared/x", "shared/A_b.c-d"]
    {
        assert!(valid_file_name(good), "{good}");
    }
    let long = format!("shared/{}", "a".repeat(129));
    for bad in [
        "shared/",
        "shared/.x",
        "shared/a/b",
        "shared/a b",
        "shared/ä",
        "shared/a\\b",
        "/shared/a",
        "x/shared/a",
        "a.seg",
        "shared/../a",
        long.as_str(),
    ] {
        assert!(!valid_file_name(bad), "{bad}");
    }
    assert!(valid_file_name(&long[..long.len() - 1]));
}

/// The writer cuts a chunk at the first record that finds 256 KiB (`CHUNK_TARGET`) or more
/// uncompressed in the chunk, and at every change of key group.
#[test]
fn chunks_are_cut_as_the_spec_says() {
    let fs = FaultFs::new();
    let path = Path::new("/sp");
    let mut w = SavepointWriter::new(fs.create(path).unwrap(), path, 1, &meta(), None).unwrap();
    // Records of 1 + 4 + 2 + 1000 = 1007 bytes: 261 of them make 262827 >= 262144 bytes.
    for i in 0..300u32 {
        let mut key = vec![0, 5];
        key.extend_from_slice(&i.to_be_bytes());
        w.add(&key, &[7; 1000]).unwrap();
    }
    w.add(b"\x00\x06k", b"v").unwrap();
    w.finish().unwrap();
    let bytes = fs.read(path).unwrap();
    let mut r = SavepointReader::new(&bytes).unwrap();
    let mut chunks = Vec::new();
    while let Some(c) = r.next().unwrap() {
        chunks.push((c.key_group, c.records, le_u32(&bytes, c.offset as usize + 7)));
    }
    assert_eq!(chunks, [(5, 261, 261 * 1007), (5, 39, 39 * 1007), (6, 1, 4)]);
    assert_eq!(decode_all(&bytes).unwrap().1.len(), 301);
}

// ---- the checkpoint manifest vector ----

#[test]
fn manifest_vector_decodes_to_the_listed_content() {
    let bytes = vector(MANIFEST_VECTOR);
    assert_eq!(CheckpointManifest::decode(&bytes).unwrap(), manifest());
    assert_eq!(manifest().encode(), bytes, "{MANIFEST_VECTOR} no longer matches its writer");

    // The fixed fields, at the offsets of manifest.md.
    assert_eq!(&bytes[0..4], b"EDCP");
    assert_eq!(le_u32(&bytes, 4), 4);
    assert_eq!(le_u64(&bytes, 8), CHECKPOINT_ID);
    assert_eq!(le_u32(&bytes, 16), 0);
    assert_eq!(le_u64(&bytes, 20), 3);
    assert_eq!(le_u32(&bytes, META_AT) as usize, JOB.len());
    assert_eq!(&bytes[META_AT + 4..MAX_P_AT], JOB.as_bytes());
    assert_eq!(le_u32(&bytes, MAX_P_AT), MAX_P);
    // The key hash's name right after the key serializer.
    assert_eq!(le_u32(&bytes, KEY_SERIALIZER_AT), 18);
    assert_eq!(le_u32(&bytes, KEY_HASH_AT) as usize, DEFAULT_KEY_HASH.len());
    assert_eq!(&bytes[KEY_HASH_AT + 4..KEY_HASH_AT + KEY_HASH_LEN], DEFAULT_KEY_HASH.as_bytes());
    let n = bytes.len();
    assert_eq!(crc32fast::hash(&bytes[..n - 4]), le_u32(&bytes, n - 4));
    // The meta info starts at 28: up to the writers section, the bytes of the version 3
    // fixture and of the savepoint (whose meta info starts at 20); then the writers section,
    // as manifest.md ("Writers") encodes it, then the segment count.
    let v3 = vector(MANIFEST_V3_VECTOR);
    let common = v3_meta_end();
    assert_eq!(bytes[8..common], v3[8..common]);
    let sp = vector(SAVEPOINT_VECTOR);
    assert_eq!(bytes[META_AT..common], sp[20..20 + common - META_AT]);
    let writers = writers_section(true);
    let meta_end = common + writers.len();
    assert_eq!(bytes[common..meta_end], writers[..]);
    assert_eq!(meta_end - META_AT, encoded_len(&meta()));
    assert_eq!(le_u32(&bytes, meta_end), 2, "the segment count follows the meta info");
    // The writers section lists `count` only: the one state whose tag entry is not its
    // serializers' versions, with its one older writer.
    let m = manifest();
    for s in &m.meta.states {
        assert_eq!(s.id == 1, s.tag != s.versions() || !s.older.is_empty(), "{}", s.name);
    }
    assert_eq!(m.meta.states[0].versions(), COUNT_OLDER_TAG);
    // Each segment lists, per state, the tag entry of the writer of its records: one known
    // to the meta info (the present writer's, or an older one's).
    for seg in &m.segments {
        for (id, entry) in &seg.versions {
            let s = m.meta.states.iter().find(|s| s.id == *id).unwrap();
            assert!(s.tag == *entry || s.older.iter().any(|w| w.tag == *entry), "{}: {entry:?}", seg.file);
        }
    }
    // No changelog file: the changelog count is there, 0, just before the CRC.
    assert_eq!(le_u32(&bytes, n - 8), 0, "log_count");
}

#[test]
fn manifest_v3_fixture_decodes_to_the_listed_content() {
    let bytes = vector(MANIFEST_V3_VECTOR);
    let m = CheckpointManifest::decode(&bytes).unwrap();
    assert_eq!(m, manifest_v3());
    // Version 3 has no writers section: every state's tag entry is its serializers'
    // versions, with no older writer, and so is every segment's entry of it.
    for s in &m.meta.states {
        assert_eq!((s.tag.clone(), s.older.len()), (s.versions(), 0), "{}", s.name);
    }
    for seg in &m.segments {
        assert_eq!(seg.versions, versions(&m.meta));
    }
    assert_eq!(&bytes[0..4], b"EDCP");
    assert_eq!(le_u32(&bytes, 4), 3);
    assert_eq!(le_u64(&bytes, 8), CHECKPOINT_ID);
    assert_eq!(le_u32(&bytes, MAX_P_AT), MAX_P);
    assert_eq!(le_u32(&bytes, KEY_HASH_AT) as usize, DEFAULT_KEY_HASH.len());
    let n = bytes.len();
    assert_eq!(crc32fast::hash(&bytes[..n - 4]), le_u32(&bytes, n - 4));
    // Its meta info is byte for byte that of the version 2 savepoint, and the segment count
    // follows it.
    let sp = vector(SAVEPOINT_V2_VECTOR);
    let meta_len = le_u32(&sp, 16) as usize;
    assert_eq!(bytes[META_AT..META_AT + meta_len], sp[20..20 + meta_len]);
    assert_eq!(le_u32(&bytes, META_AT + meta_len), 2, "the segment count follows the meta info");
    // No changelog file: the changelog count is there, 0, just before the CRC.
    assert_eq!(le_u32(&bytes, n - 8), 0, "log_count");
    // Version 3 is version 1 with the key hash and the changelog count.
    assert_eq!(as_version_3(&vector(MANIFEST_V1_VECTOR), &0u32.to_le_bytes()), bytes);
    // Written again, it is version 4: the same bytes with an empty writers section (no state
    // has evolved).
    assert_eq!(m.encode(), as_version_4(&bytes, v3_meta_end(), &0u32.to_le_bytes()));
    assert_eq!(CheckpointManifest::decode(&m.encode()).unwrap(), m);
}

#[test]
fn manifest_v1_fixture_decodes_to_the_listed_content() {
    let bytes = vector(MANIFEST_V1_VECTOR);
    assert_eq!(CheckpointManifest::decode(&bytes).unwrap(), manifest_v1());
    assert_eq!(&bytes[0..4], b"EDCP");
    assert_eq!(le_u32(&bytes, 4), 1);
    assert_eq!(le_u64(&bytes, 8), CHECKPOINT_ID);
    assert_eq!(le_u32(&bytes, MAX_P_AT), MAX_P);
    // No key hash: the state count follows the key serializer.
    assert_eq!(le_u32(&bytes, KEY_HASH_AT), 4, "state count");
    let n = bytes.len();
    assert_eq!(crc32fast::hash(&bytes[..n - 4]), le_u32(&bytes, n - 4));
    // Its meta info is byte for byte that of the version 1 savepoint, and no changelog count
    // follows the last segment entry.
    let sp = vector(SAVEPOINT_V1_VECTOR);
    let meta_len = le_u32(&sp, 16) as usize;
    assert_eq!(bytes[META_AT..META_AT + meta_len], sp[20..20 + meta_len]);
    assert_eq!(le_u32(&bytes, META_AT + meta_len), 2, "the segment count follows the meta info");
    assert_eq!(meta_len + KEY_HASH_LEN, le_u32(&vector(SAVEPOINT_V2_VECTOR), 16) as usize);
}

/// What a decoder must report for a manifest or savepoint of version `version` with one
/// changed byte: `Corrupt`, the version field included (the CRC is checked before the
/// version, so a damaged version reads as damage, never as another version).
fn expect_flip_error(name: &str, version: u32, i: usize, x: u8, got: Result<(), SnapshotDecodeError>) {
    match got {
        Err(SnapshotDecodeError::Version(v)) => {
            panic!("{name} (version {version}): change {x:#04x} at {i} reported as version {v}")
        }
        Err(SnapshotDecodeError::Corrupt(_)) => {}
        Ok(()) => panic!("{name}: change at {i} went unnoticed"),
    }
}

#[test]
fn every_changed_byte_and_every_truncation_of_the_manifest_is_an_error() {
    for (name, version) in [(MANIFEST_VECTOR, 4), (MANIFEST_V3_VECTOR, 3), (MANIFEST_V1_VECTOR, 1)] {
        let good = vector(name);
        for i in 0..good.len() {
            for x in [0x01u8, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= x;
                expect_flip_error(name, version, i, x, CheckpointManifest::decode(&bad).map(drop));
            }
        }
        for cut in 0..good.len() {
            assert!(
                matches!(CheckpointManifest::decode(&good[..cut]), Err(SnapshotDecodeError::Corrupt(_))),
                "{name}: cut to {cut}"
            );
        }
    }
    let good = vector(MANIFEST_VECTOR);
    // A damaged byte under the CRC is a checksum mismatch reported at the CRC's offset.
    let mut bad = good.clone();
    bad[100] ^= 0x01;
    let n = good.len() as u64;
    assert!(matches!(CheckpointManifest::decode(&bad), Err(SnapshotDecodeError::Corrupt(d))
            if d.offset == n - 4 && matches!(d.kind, Corruption::ChecksumMismatch { .. })),);
}

/// Re-signs `bytes` (a manifest) after a change: recomputes the trailing CRC.
fn resign(mut bytes: Vec<u8>) -> Vec<u8> {
    let n = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// A validly signed manifest that breaks a rule of manifest.md gives the named error.
#[test]
fn manifest_validity_rules() {
    let good = vector(MANIFEST_VECTOR);
    let malformed = |bytes: Vec<u8>, at: u64, what: &'static str| match CheckpointManifest::decode(&resign(bytes)) {
        Err(SnapshotDecodeError::Corrupt(d)) => {
            assert_eq!((d.offset, d.kind), (at, Corruption::Malformed(what)), "{what}")
        }
        other => panic!("{what}: {other:?}"),
    };
    // Flags: FLAG_FULL is known, any other bit is refused.
    let mut full = good.clone();
    full[16] = 1;
    assert_eq!(CheckpointManifest::decode(&resign(full)).unwrap().flags, FLAG_FULL);
    for bit in 1..32 {
        let mut bad = good.clone();
        bad[16..20].copy_from_slice(&(1u32 << bit).to_le_bytes());
        malformed(bad, 16, "flags");
    }
    // A job name that is not UTF-8, reported at its length field.
    let mut bad = good.clone();
    bad[META_AT + 4] = 0xff;
    malformed(bad, META_AT as u64, "string");
    // Max parallelism 0 and 32769.
    for mp in [0u32, 32769] {
        let mut bad = good.clone();
        bad[MAX_P_AT..MAX_P_AT + 4].copy_from_slice(&mp.to_le_bytes());
        malformed(bad, MAX_P_AT as u64, "max parallelism");
    }
    // The key-group range tag, and a range past the max parallelism.
    let tag = MAX_P_AT + 4;
    let mut bad = good.clone();
    bad[tag] = 2;
    malformed(bad, tag as u64, "key-group range tag");
    let mut bad = good.clone();
    bad[tag + 3..tag + 5].copy_from_slice(&4096u16.to_le_bytes());
    malformed(bad, tag as u64 + 1, "key-group range");
    // A segment file name outside `shared/`: the first entry's name starts after the count.
    let meta_len = encoded_len(&meta());
    let first = META_AT + meta_len + 4;
    assert_eq!(&good[first + 4..first + 11], b"shared/");
    let mut bad = good.clone();
    bad[first + 4..first + 11].copy_from_slice(b"shared_");
    malformed(bad, first as u64, "file name");
    // A key hash name that is not UTF-8, reported at its length field; an empty one reads as
    // a hash that is not known.
    let mut bad = good.clone();
    bad[KEY_HASH_AT + 4] = 0xff;
    malformed(bad, KEY_HASH_AT as u64, "string");
    let mut unknown = good[..KEY_HASH_AT].to_vec();
    unknown.extend_from_slice(&0u32.to_le_bytes());
    unknown.extend_from_slice(&good[KEY_HASH_AT + KEY_HASH_LEN..]);
    let unknown_hash = CheckpointManifest { meta: SnapshotMeta { key_hash: None, ..meta() }, ..manifest() };
    assert_eq!(CheckpointManifest::decode(&resign(unknown)).unwrap(), unknown_hash);
    // Trailing bytes between the last entry and the CRC.
    let mut bad = good.clone();
    bad.insert(good.len() - 4, 0);
    malformed(bad, (good.len() - 4) as u64, "trailing bytes");
    // The changelog count: version 3 allows 0 (the vector), version 2 does not, and version 1
    // has none (a count there is a trailing byte).
    let v1 = vector(MANIFEST_V1_VECTOR);
    let mut bad = v1.clone();
    bad.splice(v1.len() - 4..v1.len() - 4, [0; 4]);
    malformed(bad.clone(), (v1.len() - 4) as u64, "trailing bytes");
    bad[4] = 2;
    malformed(bad, (v1.len() - 4) as u64, "a version 2 manifest without changelog files");
}

/// A validly signed manifest whose writers section (manifest.md, "Writers") breaks a rule
/// gives the named error, at the offset manifest.md says; and the section is read in version 4
/// only.
#[test]
fn writers_section_validity_rules() {
    let good = vector(MANIFEST_VECTOR);
    let at = v3_meta_end();
    let section = writers_section(true);
    assert_eq!(good[at..at + section.len()], section[..]);
    // Offsets in the section: the listed state's id after the count; its tag; the older
    // writer after the older count; its serializer count after its tag (2 entries); its TTL
    // byte last.
    let entry = at + 4;
    let older_count = entry + 2 + 4 + 4 * COUNT_TAG.len();
    let writer = older_count + 4;
    let ser_count = writer + 4 + 4 * COUNT_OLDER_TAG.len();
    let ttl = at + section.len() - 1;
    assert_eq!(le_u32(&good, older_count), 1);
    assert_eq!(le_u32(&good, ser_count), 2);
    assert_eq!(good[ttl], 1);
    let with_section = |section: &[u8]| {
        let mut b = good[..at].to_vec();
        b.extend_from_slice(section);
        b.extend_from_slice(&good[at + writers_section(true).len()..]);
        resign(b)
    };
    let malformed = |bytes: Vec<u8>, at: usize, what: &'static str| match CheckpointManifest::decode(&bytes) {
        Err(SnapshotDecodeError::Corrupt(d)) => {
            assert_eq!((d.offset, d.kind), (at as u64, Corruption::Malformed(what)), "{what}")
        }
        other => panic!("{what}: {other:?}"),
    };
    let rel = |abs: usize| abs - at;
    // A listed id that is no state's (5), or 0.
    for id in [5u16, 0] {
        let mut s = section.clone();
        s[rel(entry)..rel(entry) + 2].copy_from_slice(&id.to_le_bytes());
        malformed(with_section(&s), entry, "writers of an unknown or repeated state");
    }
    // A state listed twice: the second entry is refused.
    let mut s = 2u32.to_le_bytes().to_vec();
    s.extend_from_slice(&section[4..]);
    s.extend_from_slice(&section[4..]);
    malformed(with_section(&s), entry + section.len() - 4, "writers of an unknown or repeated state");
    // An older writer with the present writer's tag entry.
    let mut s = section[..rel(writer)].to_vec();
    s.extend_from_slice(&(COUNT_TAG.len() as u32).to_le_bytes());
    for v in COUNT_TAG {
        s.extend_from_slice(&v.to_le_bytes());
    }
    s.extend_from_slice(&section[rel(ser_count)..]);
    malformed(with_section(&s), writer, "older writer");
    // Two older writers with one tag entry: the second is refused.
    let mut s = section[..rel(older_count)].to_vec();
    s.extend_from_slice(&2u32.to_le_bytes());
    s.extend_from_slice(&section[rel(writer)..]);
    s.extend_from_slice(&section[rel(writer)..]);
    malformed(with_section(&s), ttl + 1, "older writer");
    // An older writer with another number of serializers than the state (one, not two).
    let unit_len = 4 + le_u32(&good, ser_count + 4) as usize;
    let mut s = section[..rel(ser_count)].to_vec();
    s.extend_from_slice(&1u32.to_le_bytes());
    s.extend_from_slice(&section[rel(ser_count) + 4 + unit_len..]);
    malformed(with_section(&s), writer, "older writer");
    // A TTL byte other than 0 or 1; 0 is a valid older writer without TTL.
    let mut s = section.clone();
    s[rel(ttl)] = 2;
    malformed(with_section(&s), ttl, "writer TTL flag");
    s[rel(ttl)] = 0;
    let decoded = CheckpointManifest::decode(&with_section(&s)).unwrap();
    assert!(!decoded.meta.states[0].older[0].ttl);
    // A state listed with its serializers' versions as its tag entry and no older writer (which
    // the writer never lists) reads as one not listed.
    let mut s = section[..rel(entry) + 2].to_vec();
    s.extend_from_slice(&(COUNT_OLDER_TAG.len() as u32).to_le_bytes());
    for v in COUNT_OLDER_TAG {
        s.extend_from_slice(&v.to_le_bytes());
    }
    s.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(CheckpointManifest::decode(&with_section(&s)).unwrap().meta, meta_v3());
    assert_eq!(CheckpointManifest::decode(&with_section(&0u32.to_le_bytes())).unwrap().meta, meta_v3());
    // A count of listed states beyond what the bytes left can hold.
    let mut s = section.clone();
    s[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    malformed(with_section(&s), at, "count");
    // The section is part of version 4 only: the same bytes as version 3 do not decode (the
    // section's count is read as the segment count), nor does a version 3 manifest as
    // version 4 (its segment count is read as the section's).
    let mut as_3 = good.clone();
    as_3[4] = 3;
    assert!(matches!(CheckpointManifest::decode(&resign(as_3)), Err(SnapshotDecodeError::Corrupt(_))));
    let mut as_4 = vector(MANIFEST_V3_VECTOR);
    as_4[4] = 4;
    assert!(matches!(CheckpointManifest::decode(&resign(as_4)), Err(SnapshotDecodeError::Corrupt(_))));
}

/// A newer version is refused with the version it has, before anything else is looked at,
/// and the library reports it as `Error::UnsupportedVersion` naming the file.
#[test]
fn a_future_version_is_refused_with_its_number() {
    let mut future = vector(MANIFEST_VECTOR);
    future[4..8].copy_from_slice(&5u32.to_le_bytes());
    let future = resign(future);
    assert_eq!(CheckpointManifest::decode(&future), Err(SnapshotDecodeError::Version(5)));
    let path = Path::new("/chk/chk-00000000000000000042.manifest");
    let err = CheckpointManifest::decode(&future).unwrap_err().into_error(path, CHECKPOINT_VERSION);
    assert!(matches!(&err, Error::UnsupportedVersion { file, found: 5, supported: 4 } if file == path), "{err}");
    // Version 0 was never written: also refused, never read as version 1.
    let mut zero = vector(MANIFEST_VECTOR);
    zero[4..8].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(CheckpointManifest::decode(&resign(zero)), Err(SnapshotDecodeError::Version(0)));

    let mut future = vector(SAVEPOINT_VECTOR);
    future[4..8].copy_from_slice(&4u32.to_le_bytes());
    let header_end = 20 + le_u32(&future, 16) as usize;
    let crc = crc32fast::hash(&future[..header_end]);
    future[header_end..header_end + 4].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(SavepointReader::new(&future), Err(SnapshotDecodeError::Version(4))));
    assert!(matches!(decode_all(&future), Err(SnapshotDecodeError::Version(4))));

    // Through the public entry points: verification and restore name the file.
    let fs = FaultFs::new();
    fs.write_file(Path::new("/sp/SAVEPOINT"), &future).unwrap();
    let problems = verify_savepoint(&fs, Path::new("/sp"));
    assert_eq!(problems.len(), 1);
    assert!(problems[0].what.contains("format version 4"), "{}", problems[0]);
    let err = KeyedBackend::builder(U64)
        .max_parallelism(MAX_P)
        .store_options(StoreOptions::new().file_system(Arc::new(fs.clone())))
        .restore("/restored", &[RestoreSource::Savepoint { fs: Arc::new(fs.clone()), dir: "/sp".into() }])
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::UnsupportedVersion { file, found: 4, supported: 3 } if file == Path::new("/sp/SAVEPOINT")),
        "{err}"
    );
}

// ---- the savepoint vector ----

#[test]
fn savepoint_vector_decodes_to_the_listed_content() {
    let bytes = vector(SAVEPOINT_VECTOR);
    assert_eq!(write_savepoint(), bytes, "{SAVEPOINT_VECTOR} no longer matches its writer");
    let (meta, got) = decode_all(&bytes).unwrap();
    assert_eq!(meta, savepoint_meta());
    let want: Vec<(Vec<u8>, Vec<u8>)> = records().into_iter().map(|(k, v, _)| (k, v)).collect();
    assert_eq!(got, want);

    let reader = SavepointReader::new(&bytes).unwrap();
    assert_eq!(reader.savepoint_id, SAVEPOINT_ID);
    assert_eq!(&bytes[0..4], b"EDSV");
    assert_eq!(le_u32(&bytes, 4), 3);
    assert_eq!(le_u64(&bytes, 8), SAVEPOINT_ID);
    let header_end = 20 + le_u32(&bytes, 16) as usize;
    assert_eq!(crc32fast::hash(&bytes[..header_end]), le_u32(&bytes, header_end));
    // The key hash's name right after the key serializer, as in the manifest (whose meta
    // info starts 8 bytes later).
    let at = KEY_HASH_AT - 8;
    assert_eq!(le_u32(&bytes, at) as usize, DEFAULT_KEY_HASH.len());
    assert_eq!(&bytes[at + 4..at + KEY_HASH_LEN], DEFAULT_KEY_HASH.as_bytes());
    // The meta info: that of `savepoint-v2.sp`, then the writers section, which lists
    // `count` with its tag entry and no older writer: every record of a savepoint is one its
    // states' present writers wrote.
    let v2 = vector(SAVEPOINT_V2_VECTOR);
    let v2_meta_end = 20 + le_u32(&v2, 16) as usize;
    assert_eq!(bytes[8..16], v2[8..16]);
    assert_eq!(bytes[20..v2_meta_end], v2[20..v2_meta_end]);
    assert_eq!(bytes[v2_meta_end..header_end], writers_section(false)[..]);
    assert_eq!(header_end - 20, encoded_len(&savepoint_meta()));
    assert!(meta.states.iter().all(|s| s.older.is_empty()));
    assert_eq!(meta.states[0].tag, COUNT_TAG);
    // Version 3 changed the meta info only: the chunks and the end marker are those of
    // version 2.
    assert_eq!(bytes[header_end + 4..], v2[v2_meta_end + 4..]);

    // The chunks, as the vectors README lists them, then the end marker.
    let mut r = SavepointReader::new(&bytes).unwrap();
    let mut at = header_end + 4;
    let mut chunks = 0u64;
    while let Some(c) = r.next().unwrap() {
        assert_eq!(c.offset, at as u64);
        assert_eq!(bytes[at], 1, "chunk tag");
        assert_eq!(u16::from_le_bytes([bytes[at + 1], bytes[at + 2]]), c.key_group);
        assert_eq!(le_u32(&bytes, at + 3), c.records);
        let (raw, stored) = (le_u32(&bytes, at + 7), le_u32(&bytes, at + 11));
        assert_eq!((raw, bytes[at + 15]), (stored, 0), "uncompressed");
        let end = at + 20 + stored as usize;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes[at..at + 16]);
        crc.update(&bytes[at + 20..end]);
        assert_eq!(crc.finalize(), le_u32(&bytes, at + 16));
        at = end;
        chunks += 1;
    }
    assert_eq!(at + 21, bytes.len());
    assert_eq!(bytes[at], 0, "end tag");
    assert_eq!((le_u64(&bytes, at + 1), le_u64(&bytes, at + 9)), (chunks, records().len() as u64));
    assert_eq!(crc32fast::hash(&bytes[at..at + 17]), le_u32(&bytes, at + 17));
}

#[test]
fn savepoint_v2_fixture_decodes_to_the_listed_content() {
    let bytes = vector(SAVEPOINT_V2_VECTOR);
    let (meta, got) = decode_all(&bytes).unwrap();
    assert_eq!(meta, meta_v3());
    let want: Vec<(Vec<u8>, Vec<u8>)> = records().into_iter().map(|(k, v, _)| (k, v)).collect();
    assert_eq!(got, want);
    assert_eq!(SavepointReader::new(&bytes).unwrap().savepoint_id, SAVEPOINT_ID);
    assert_eq!(&bytes[0..4], b"EDSV");
    assert_eq!(le_u32(&bytes, 4), 2);
    let header_end = 20 + le_u32(&bytes, 16) as usize;
    assert_eq!(crc32fast::hash(&bytes[..header_end]), le_u32(&bytes, header_end));
    let at = KEY_HASH_AT - 8;
    assert_eq!(le_u32(&bytes, at) as usize, DEFAULT_KEY_HASH.len());
    // No writers section: the meta info is that of `checkpoint-manifest-v3.bin`, byte for
    // byte, and ends where the chunks' header CRC starts.
    let v3 = vector(MANIFEST_V3_VECTOR);
    assert_eq!(bytes[20..header_end], v3[META_AT..v3_meta_end()]);
    // A version 2 header does not end with a writers section, and a version 3 one must:
    // relabelled, each is refused (re-signed, so that only the version differs).
    let relabel = |bytes: &[u8], version: u32| {
        let mut b = bytes.to_vec();
        b[4..8].copy_from_slice(&version.to_le_bytes());
        let header_end = 20 + le_u32(&b, 16) as usize;
        let crc = crc32fast::hash(&b[..header_end]);
        b[header_end..header_end + 4].copy_from_slice(&crc.to_le_bytes());
        b
    };
    assert!(matches!(SavepointReader::new(&relabel(&bytes, 3)), Err(SnapshotDecodeError::Corrupt(_))));
    match SavepointReader::new(&relabel(&vector(SAVEPOINT_VECTOR), 2)) {
        Err(SnapshotDecodeError::Corrupt(d)) => {
            assert_eq!((d.offset, d.kind), (header_end as u64, Corruption::Malformed("trailing bytes in meta")))
        }
        other => panic!("{:?}", other.map(|r| r.savepoint_id)),
    }
}

#[test]
fn savepoint_v1_fixture_decodes_to_the_listed_content() {
    let bytes = vector(SAVEPOINT_V1_VECTOR);
    let (meta, got) = decode_all(&bytes).unwrap();
    assert_eq!(meta, meta_v1());
    let want: Vec<(Vec<u8>, Vec<u8>)> = records().into_iter().map(|(k, v, _)| (k, v)).collect();
    assert_eq!(got, want);
    assert_eq!(SavepointReader::new(&bytes).unwrap().savepoint_id, SAVEPOINT_ID);
    assert_eq!(&bytes[0..4], b"EDSV");
    assert_eq!(le_u32(&bytes, 4), 1);
    let header_end = 20 + le_u32(&bytes, 16) as usize;
    assert_eq!(crc32fast::hash(&bytes[..header_end]), le_u32(&bytes, header_end));
    // Version 2 changed the meta info only: the chunks and the end marker are the same bytes.
    let v2 = vector(SAVEPOINT_V2_VECTOR);
    let v2_header_end = 20 + le_u32(&v2, 16) as usize;
    assert_eq!(v2_header_end, header_end + KEY_HASH_LEN);
    assert_eq!(bytes[header_end + 4..], v2[v2_header_end + 4..]);
}

#[test]
fn every_changed_byte_and_every_truncation_of_the_savepoint_is_an_error() {
    for (name, version) in [(SAVEPOINT_VECTOR, 3), (SAVEPOINT_V2_VECTOR, 2), (SAVEPOINT_V1_VECTOR, 1)] {
        let good = vector(name);
        for i in 0..good.len() {
            for x in [0x01u8, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= x;
                expect_flip_error(name, version, i, x, decode_all(&bad).map(drop));
            }
        }
        for cut in 0..good.len() {
            assert!(matches!(decode_all(&good[..cut]), Err(SnapshotDecodeError::Corrupt(_))), "{name}: cut to {cut}");
        }
    }
    let good = vector(SAVEPOINT_VECTOR);
    // Damage to a chunk is reported at the chunk's offset, with the file, by verification.
    let fs = FaultFs::new();
    let mut r = SavepointReader::new(&good).unwrap();
    let second = {
        r.next().unwrap().unwrap();
        r.next().unwrap().unwrap().offset
    };
    let mut bad = good.clone();
    bad[second as usize + 25] ^= 0x01;
    fs.write_file(Path::new("/sp/SAVEPOINT"), &bad).unwrap();
    let problems = verify_savepoint(&fs, Path::new("/sp"));
    assert_eq!(problems.len(), 1);
    assert_eq!((problems[0].file.as_path(), problems[0].offset), (Path::new("/sp/SAVEPOINT"), Some(second)));
}

/// Chunks are signed, so these rules are checked on validly signed chunks.
#[test]
fn savepoint_validity_rules() {
    let good = vector(SAVEPOINT_VECTOR);
    let header_end = 20 + le_u32(&good, 16) as usize + 4;
    let (first, second) = {
        let mut r = SavepointReader::new(&good).unwrap();
        let a = r.next().unwrap().unwrap().offset as usize;
        let b = r.next().unwrap().unwrap().offset as usize;
        (a, b)
    };
    assert_eq!(first, header_end);
    let resign_chunk = |bytes: &mut Vec<u8>, at: usize| {
        let stored = le_u32(bytes, at + 11) as usize;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes[at..at + 16]);
        crc.update(&bytes[at + 20..at + 20 + stored]);
        let crc = crc.finalize();
        bytes[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
    };
    let malformed = |bytes: &[u8], at: usize, what: &'static str| match decode_all(bytes) {
        Err(SnapshotDecodeError::Corrupt(d)) => {
            assert_eq!((d.offset, d.kind), (at as u64, Corruption::Malformed(what)), "{what}")
        }
        other => panic!("{what}: {:?}", other.map(|(_, r)| r.len())),
    };
    // An unknown tag.
    let mut bad = good.clone();
    bad[first] = 2;
    malformed(&bad, first, "chunk tag");
    // Compression 2, no records, more records than the raw bytes can hold.
    for (field, value) in [(15usize, 2u32), (3, 0), (3, 1000)] {
        let mut bad = good.clone();
        if field == 15 {
            bad[first + 15] = value as u8;
        } else {
            bad[first + field..first + field + 4].copy_from_slice(&value.to_le_bytes());
        }
        resign_chunk(&mut bad, first);
        malformed(&bad, first, "chunk header");
    }
    // Key groups descending from chunk to chunk.
    let mut bad = good.clone();
    let kg = u16::from_le_bytes([good[second + 1], good[second + 2]]);
    bad[first + 1..first + 3].copy_from_slice(&(kg + 1).to_le_bytes());
    resign_chunk(&mut bad, first);
    malformed(&bad, second, "key-group order");
    // The same key group in two chunks is allowed, with keys ascending across them: the second
    // chunk's first key is smaller than the first's last one here.
    let mut bad = good.clone();
    bad[second + 1..second + 3].copy_from_slice(&good[first + 1..first + 3]);
    resign_chunk(&mut bad, second);
    let err = decode_all(&bad).unwrap_err();
    assert_eq!(
        err,
        SnapshotDecodeError::Corrupt(eddy::format::DecodeError {
            offset: second as u64,
            kind: Corruption::Malformed("key order across chunks")
        })
    );
    // Keys out of order within a chunk: swap the first chunk's first two records' state ids.
    // Its records are `count` (state 1) then `by-name` (state 2) of one key.
    let rec0 = first + 20;
    assert_eq!(good[rec0], 10, "the first key's `count` record: a key suffix of 10 bytes");
    assert_eq!(good[rec0 + 1..rec0 + 3], [0, 1]);
    let mut bad = good.clone();
    bad[rec0 + 2] = 3;
    resign_chunk(&mut bad, first);
    malformed(&bad, first, "key order");
    // The end marker's counts.
    let end = good.len() - 21;
    let mut bad = good.clone();
    bad[end + 1] += 1;
    let crc = crc32fast::hash(&bad[end..end + 17]);
    bad[end + 17..].copy_from_slice(&crc.to_le_bytes());
    malformed(&bad, end, "end marker counts");
    // Bytes after the end marker.
    let mut bad = good.clone();
    bad.push(0);
    malformed(&bad, good.len(), "bytes after the end marker");
}

// ---- the vectors as a checkpoint and as a savepoint ----

fn store_options(fs: &FaultFs) -> StoreOptions {
    StoreOptions::new().file_system(Arc::new(fs.clone()))
}

/// A checkpoint storage on `fs` at `/chk` holding checkpoint 42: the manifest vector
/// `manifest` (of version 4, 3 or 1) and the segment vectors as the shared files it names.
fn checkpoint_storage(fs: &FaultFs, manifest: &str) -> LocalDirStorage {
    let storage = LocalDirStorage::new(Arc::new(fs.clone()), "/chk").unwrap();
    for (v, name, ..) in SEGMENTS {
        fs.write_file(&Path::new("/chk").join(name), &vector(v)).unwrap();
    }
    storage.write_manifest(CHECKPOINT_ID, &vector(manifest)).unwrap();
    storage
}

/// Restores `source` (checkpoint 42) with `builder` into `dir` and checks that it is the store
/// the vectors README lists, with the states and operator state of the meta info.
fn restores_to_the_listed_store(builder: eddy::state::KeyedBackendBuilder<U64>, dir: &str, source: &[RestoreSource]) {
    let (mut b, restored) = builder.restore(dir, source).unwrap();
    assert_eq!(restored.operator_states, [meta().operator]);
    let names: Vec<(String, StateKind)> = b.states().map(|(n, k)| (n.to_string(), k)).collect();
    let want: Vec<(String, StateKind)> = meta().states.iter().map(|s| (s.name.clone(), s.kind)).collect();
    assert_eq!(names, want);
    // The store is the one the store manifest vector describes (vectors README).
    let s = b.store();
    let mut get = |key: &[u8]| s.get(key).unwrap().map(<[u8]>::to_vec);
    assert_eq!(get(b"\x00\x01apple").as_deref(), Some(&b"red;ripe"[..]));
    assert_eq!(get(b"\x00\x01banana"), None);
    assert_eq!(get(b"\x00\x01cherry").as_deref(), Some(&b"dark red"[..]));
    assert_eq!(get(b"\x00\x07count").as_deref(), Some(&b"+1"[..]));
    assert_eq!(get(b"\x00\x07name").as_deref(), Some(&b"eddy"[..]));
    assert_eq!(get(b"\x01\x2ck"), None, "masked by the manifest");
    assert_eq!(get(b"\x0a\x00sensor-06"), None);
    b.close().unwrap();
}

/// The key hash of the restores below that are not of the default one.
fn other_hash(k: &u64) -> i32 {
    *k as i32
}

/// `fs` holds exactly the files of [`checkpoint_storage`]: the manifest and the two segments.
fn assert_holds_the_vector_checkpoint_only(fs: &FaultFs) {
    let mut names = fs.file_names();
    names.sort();
    assert_eq!(
        names,
        [
            PathBuf::from("/chk/chk-00000000000000000042.manifest"),
            PathBuf::from("/chk/shared/3f2a9c0d11e4b5a7-1-0000000001.seg"),
            PathBuf::from("/chk/shared/3f2a9c0d11e4b5a7-1-0000000002.seg"),
        ]
    );
}

#[test]
fn the_manifest_vector_is_a_checkpoint_that_verifies_and_restores() {
    let fs = FaultFs::new();
    let storage = checkpoint_storage(&fs, MANIFEST_VECTOR);
    assert_holds_the_vector_checkpoint_only(&fs);
    assert_eq!(storage.manifests().unwrap(), [CHECKPOINT_ID]);
    assert!(verify_checkpoint(&storage, CHECKPOINT_ID).is_empty());
    assert_eq!(latest_checkpoint(&storage).unwrap(), Some(CHECKPOINT_ID));

    let storage: Arc<dyn CheckpointStorage> = Arc::new(storage);
    let source = [RestoreSource::Checkpoint { storage: storage.clone(), id: CHECKPOINT_ID }];
    let builder = || KeyedBackend::builder(U64).max_parallelism(MAX_P).store_options(store_options(&fs));
    restores_to_the_listed_store(builder(), "/restored", &source);

    // The restored backend keeps the states' writers: its own checkpoint lists `count` with
    // the same tag entry and the older writer, since the segment the older writer wrote is
    // still in its store, with that writer's entry (manifest.md, "Writers").
    let (mut b, _) = builder().restore("/restored-writers", &source).unwrap();
    let again = checkpoint_of(&fs, &mut b, "/chk-again");
    b.close().unwrap();
    assert_eq!(again.meta.states, meta().states);
    let mut entries: Vec<Vec<(u16, Vec<u32>)>> = again.segments.iter().map(|s| s.versions.clone()).collect();
    entries.sort();
    let mut want: Vec<Vec<(u16, Vec<u32>)>> = manifest().segments.iter().map(|s| s.versions.clone()).collect();
    want.sort();
    assert_eq!(entries, want);

    // What a restore checks (manifest.md, "What a restore checks").
    let refuse = |b: eddy::state::KeyedBackendBuilder<U64>, dir: &str| b.restore(dir, &source).err().unwrap();
    let err = refuse(KeyedBackend::builder(U64).max_parallelism(128).store_options(store_options(&fs)), "/r1");
    assert!(matches!(err, Error::Misuse(Misuse::IncompatibleSnapshot { .. })), "{err}");
    // Another key hash than the one the manifest names.
    let err = refuse(builder().key_hash("test.low-bits", other_hash), "/r-hash");
    assert!(
        matches!(&err, Error::Misuse(Misuse::KeyHashMismatch { snapshot, backend })
            if snapshot == DEFAULT_KEY_HASH && backend == "test.low-bits"),
        "{err}"
    );
    let err = KeyedBackend::builder(Str)
        .max_parallelism(MAX_P)
        .store_options(store_options(&fs))
        .restore("/r2", &source)
        .err()
        .unwrap();
    assert!(matches!(&err, Error::IncompatibleSerializer(i) if i.state.is_none()), "{err}");
    // Sources of different jobs: with a savepoint that holds no key group (so that nothing but
    // its job name can be in the way), restoring works when it is of job `sessions` and is
    // refused when it is of another job.
    for (job, dir) in [(JOB, "/sp-same"), ("other", "/sp-other")] {
        let meta = SnapshotMeta { job: job.into(), key_groups: None, ..meta() };
        let path = Path::new(dir).join(SAVEPOINT_FILE);
        fs.create_dir_all(Path::new(dir)).unwrap();
        let w = SavepointWriter::new(fs.create(&path).unwrap(), &path, SAVEPOINT_ID, &meta, None).unwrap();
        w.finish().unwrap();
    }
    let with = |dir: &str| [source[0].clone(), RestoreSource::Savepoint { fs: Arc::new(fs.clone()), dir: dir.into() }];
    let (b, restored) = KeyedBackend::builder(U64)
        .max_parallelism(MAX_P)
        .store_options(store_options(&fs))
        .restore("/r-same", &with("/sp-same"))
        .unwrap();
    assert_eq!(restored.operator_states, [meta().operator, meta().operator]);
    b.close().unwrap();
    let err = KeyedBackend::builder(U64)
        .max_parallelism(MAX_P)
        .store_options(store_options(&fs))
        .restore("/r-other", &with("/sp-other"))
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Misuse(Misuse::IncompatibleSnapshot { why }) if why.contains("different jobs")),
        "{err}"
    );
    // A state whose present writer differs between the sources: `count` as the checkpoint
    // has it (tag entry 1 1 1) and as the version 3 fixture's meta info has it (1 1).
    let meta = SnapshotMeta { key_groups: None, ..meta_v3() };
    let path = Path::new("/sp-v3-writer").join(SAVEPOINT_FILE);
    fs.create_dir_all(Path::new("/sp-v3-writer")).unwrap();
    SavepointWriter::new(fs.create(&path).unwrap(), &path, SAVEPOINT_ID, &meta, None).unwrap().finish().unwrap();
    let err = KeyedBackend::builder(U64)
        .max_parallelism(MAX_P)
        .store_options(store_options(&fs))
        .restore("/r-writer", &with("/sp-v3-writer"))
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Misuse(Misuse::IncompatibleSnapshot { why }) if why.contains("different present writers")),
        "{err}"
    );
    // A checkpoint id that is not the one in the manifest.
    fs.write_file(Path::new("/chk/chk-00000000000000000041.manifest"), &vector(MANIFEST_VECTOR)).unwrap();
    let err = KeyedBackend::builder(U64)
        .max_parallelism(MAX_P)
        .store_options(store_options(&fs))
        .restore("/r3", &[RestoreSource::Checkpoint { storage: storage.clone(), id: 41 }])
        .err()
        .unwrap();
    assert!(matches!(&err, Error::Corrupted { offset: 8, kind: Corruption::Malformed("checkpoint id"), .. }), "{err}");
    fs.remove(Path::new("/chk/chk-00000000000000000041.manifest")).unwrap();
    // A shared file whose length is not the manifest's.
    let small = Path::new("/chk").join(SEGMENTS[1].1);
    fs.truncate(&small, 600).unwrap();
    let err = refuse(KeyedBackend::builder(U64).max_parallelism(MAX_P).store_options(store_options(&fs)), "/r4");
    assert!(
        matches!(&err, Error::Corrupted { file, kind: Corruption::Truncated { needed: 604, available: 600 }, .. }
            if file == &small),
        "{err}"
    );
    assert_eq!(verify_checkpoint(storage.as_ref(), CHECKPOINT_ID).len(), 1);
}

/// The checkpoint manifest of a checkpoint of `b` taken into a new storage at `root`.
fn checkpoint_of(fs: &FaultFs, b: &mut KeyedBackend<U64>, root: &str) -> CheckpointManifest {
    let storage = LocalDirStorage::new(Arc::new(fs.clone()), root).unwrap();
    let path = storage.describe_manifest(1);
    let mut cp = Checkpointer::new(Arc::new(storage), CheckpointOptions::new()).unwrap();
    cp.checkpoint(1, b, &OperatorStateBackend::new(), false).unwrap();
    cp.wait(1).unwrap();
    assert!(cp.close().is_empty());
    let bytes = fs.read(&path).unwrap();
    assert_eq!(le_u32(&bytes, 4), CHECKPOINT_VERSION);
    CheckpointManifest::decode(&bytes).unwrap()
}

/// The version 3 fixture is a checkpoint that verifies and restores too; no state of it has
/// evolved, and the restored backend's own checkpoints (of version 4) list no writers.
#[test]
fn the_manifest_v3_fixture_is_a_checkpoint_that_verifies_and_restores() {
    let fs = FaultFs::new();
    let storage = checkpoint_storage(&fs, MANIFEST_V3_VECTOR);
    assert!(verify_checkpoint(&storage, CHECKPOINT_ID).is_empty());
    assert_eq!(latest_checkpoint(&storage).unwrap(), Some(CHECKPOINT_ID));
    let storage: Arc<dyn CheckpointStorage> = Arc::new(storage);
    let source = [RestoreSource::Checkpoint { storage, id: CHECKPOINT_ID }];
    let builder = || KeyedBackend::builder(U64).max_parallelism(MAX_P).store_options(store_options(&fs));
    restores_to_the_listed_store(builder(), "/restored", &source);
    // Another key hash than the one it names is refused.
    let err = builder().key_hash("test.low-bits", other_hash).restore("/restored-other-hash", &source).err().unwrap();
    assert!(matches!(&err, Error::Misuse(Misuse::KeyHashMismatch { .. })), "{err}");
    let (mut b, _) = builder().restore("/restored-writers", &source).unwrap();
    let again = checkpoint_of(&fs, &mut b, "/chk-again");
    b.close().unwrap();
    assert_eq!(again.meta.states, meta_v3().states);
    assert!(again.segments.iter().all(|s| s.versions == versions(&meta_v3())));
}

/// The version 1 fixture is a checkpoint that verifies and restores too; it records no key
/// hash, so a restore cannot check the backend's (manifest.md, "What a restore checks").
#[test]
fn the_manifest_v1_fixture_is_a_checkpoint_that_verifies_and_restores() {
    let fs = FaultFs::new();
    let storage = checkpoint_storage(&fs, MANIFEST_V1_VECTOR);
    assert!(verify_checkpoint(&storage, CHECKPOINT_ID).is_empty());
    assert_eq!(latest_checkpoint(&storage).unwrap(), Some(CHECKPOINT_ID));
    let storage: Arc<dyn CheckpointStorage> = Arc::new(storage);
    let source = [RestoreSource::Checkpoint { storage, id: CHECKPOINT_ID }];
    let builder = || KeyedBackend::builder(U64).max_parallelism(MAX_P).store_options(store_options(&fs));
    restores_to_the_listed_store(builder(), "/restored", &source);
    restores_to_the_listed_store(builder().key_hash("test.low-bits", other_hash), "/restored-other-hash", &source);
}

/// Opening a checkpointer on the storage keeps what the manifest names and removes what no
/// manifest names and the temporary files (manifest.md, "Retention and reference counting").
#[test]
fn a_checkpointer_keeps_what_manifests_name() {
    let fs = FaultFs::new();
    let storage = checkpoint_storage(&fs, MANIFEST_VECTOR);
    fs.write_file(Path::new("/chk/shared/3f2a9c0d11e4b5a7-1-0000000003.seg"), b"left by a crash").unwrap();
    fs.write_file(Path::new("/chk/chk-00000000000000000043.manifest.tmp"), b"partial").unwrap();
    let cp = Checkpointer::new(Arc::new(storage), CheckpointOptions::new()).unwrap();
    assert_eq!(cp.retained(), [CHECKPOINT_ID]);
    assert_holds_the_vector_checkpoint_only(&fs);
    assert!(cp.close().is_empty());
}

#[test]
fn the_savepoint_vector_restores_into_typed_state() {
    let fs = FaultFs::new();
    fs.write_file(Path::new("/sp/SAVEPOINT"), &vector(SAVEPOINT_VECTOR)).unwrap();
    let builder = || KeyedBackend::builder(U64).max_parallelism(MAX_P).store_options(store_options(&fs));
    let mut b = restores_into_typed_state(&fs, builder(), "/sp", "/restored");

    // The restored backend, named by no job of its own, takes the savepoint's job name into its
    // snapshots; one given a name keeps it (manifest.md, "What a restore checks").
    // Its states keep their writers: `count` its tag entry 1 1 1 (manifest.md, "Writers").
    let again = meta_of_a_savepoint(&fs, &mut b, "/sp-again");
    assert_eq!(again.job, JOB);
    assert_eq!(again.states, savepoint_meta().states);
    b.close().unwrap();
    let (mut b, _) = builder()
        .job("renamed")
        .restore("/restored-renamed", &[RestoreSource::Savepoint { fs: Arc::new(fs.clone()), dir: "/sp".into() }])
        .unwrap();
    assert_eq!(meta_of_a_savepoint(&fs, &mut b, "/sp-renamed").job, "renamed");
    b.close().unwrap();

    // Another key hash than the one the savepoint names is refused.
    let err = builder()
        .key_hash("test.low-bits", other_hash)
        .restore("/restored-other-hash", &[RestoreSource::Savepoint { fs: Arc::new(fs.clone()), dir: "/sp".into() }])
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Misuse(Misuse::KeyHashMismatch { snapshot, backend })
            if snapshot == DEFAULT_KEY_HASH && backend == "test.low-bits"),
        "{err}"
    );
}

/// The version 2 fixture restores into typed state too; none of its states has evolved, so the
/// restored backend's savepoints list no writers.
#[test]
fn the_savepoint_v2_fixture_restores_into_typed_state() {
    let fs = FaultFs::new();
    fs.write_file(Path::new("/sp/SAVEPOINT"), &vector(SAVEPOINT_V2_VECTOR)).unwrap();
    let builder = || KeyedBackend::builder(U64).max_parallelism(MAX_P).store_options(store_options(&fs));
    let mut b = restores_into_typed_state(&fs, builder(), "/sp", "/restored");
    assert_eq!(meta_of_a_savepoint(&fs, &mut b, "/sp-again").states, meta_v3().states);
    b.close().unwrap();
    let err = builder()
        .key_hash("test.low-bits", other_hash)
        .restore("/restored-other-hash", &[RestoreSource::Savepoint { fs: Arc::new(fs.clone()), dir: "/sp".into() }])
        .err()
        .unwrap();
    assert!(matches!(&err, Error::Misuse(Misuse::KeyHashMismatch { .. })), "{err}");
}

/// The version 1 fixture restores into typed state too; it records no key hash, so a restore
/// cannot check the backend's.
#[test]
fn the_savepoint_v1_fixture_restores_into_typed_state() {
    let fs = FaultFs::new();
    fs.write_file(Path::new("/sp/SAVEPOINT"), &vector(SAVEPOINT_V1_VECTOR)).unwrap();
    let builder = || KeyedBackend::builder(U64).max_parallelism(MAX_P).store_options(store_options(&fs));
    restores_into_typed_state(&fs, builder(), "/sp", "/restored").close().unwrap();
    // Into a backend with another key hash it restores as well, although that backend looks
    // for every key in another key group than the one the savepoint put it in.
    let (b, _) = builder()
        .key_hash("test.low-bits", other_hash)
        .restore("/restored-other-hash", &[RestoreSource::Savepoint { fs: Arc::new(fs.clone()), dir: "/sp".into() }])
        .unwrap();
    b.close().unwrap();
}

/// Restores the savepoint vector in `dir` with `builder` into `restore_dir`, and checks that it
/// holds the state the vectors README lists.
fn restores_into_typed_state(
    fs: &FaultFs,
    builder: eddy::state::KeyedBackendBuilder<U64>,
    dir: &str,
    restore_dir: &str,
) -> KeyedBackend<U64> {
    assert!(verify_savepoint(fs, Path::new(dir)).is_empty());
    let clock = ManualClock::new(10_000);
    let (mut b, restored) = builder
        .clock(Arc::new(clock))
        .restore(restore_dir, &[RestoreSource::Savepoint { fs: Arc::new(fs.clone()), dir: dir.into() }])
        .unwrap();
    assert_eq!(restored.operator_states, [meta().operator]);

    let count = b.state(ValueStateDescriptor::new("count", U64).ttl(count_ttl())).unwrap();
    let by_name = b.state(MapStateDescriptor::new("by-name", Str, OptionOf(U32))).unwrap();
    let window = b.timer_service("window").unwrap();
    let mut keys = b.keys(&count).unwrap();
    keys.sort_unstable();
    assert_eq!(keys, [7, 42]);
    for (key, n, entries) in [
        (7u64, 3u64, vec![("a".to_string(), Some(1u32)), ("b".to_string(), None)]),
        (42, 5, vec![("x".into(), Some(4_000_000_000))]),
    ] {
        b.set_current_key(&key).unwrap();
        assert_eq!(count.get(&mut b).unwrap(), Some(n), "key {key}");
        let got: Vec<(String, Option<u32>)> = by_name.iter(&mut b).unwrap().collect::<eddy::Result<_>>().unwrap();
        assert_eq!(got, entries, "key {key}");
    }
    let mut fired = Vec::new();
    window
        .advance_watermark(&mut b, i64::MAX, |_, t: Timer<u64, ()>| {
            fired.push(("event", t.timestamp, t.key));
            Ok(())
        })
        .unwrap();
    window
        .advance_processing_time(&mut b, i64::MAX, |_, t: Timer<u64, ()>| {
            fired.push(("processing", t.timestamp, t.key));
            Ok(())
        })
        .unwrap();
    assert_eq!(fired, [("event", 1_500, 7), ("processing", 2_000, 42)]);

    let mut op = OperatorStateBackend::restore(restored.operator_states[0].clone());
    assert_eq!(op.union_list_state("offsets", U64).unwrap().get(), [17, 99]);
    let rules = op.broadcast_state(&BroadcastStateDescriptor::new("rules", Str, Str)).unwrap();
    assert_eq!(rules.get(&"alert".to_string()), Some(&"x > 3".to_string()));
    b
}

/// The meta info of a savepoint of `b` taken into `dir`.
fn meta_of_a_savepoint(fs: &FaultFs, b: &mut KeyedBackend<U64>, dir: &str) -> SnapshotMeta {
    let storage = LocalDirStorage::new(Arc::new(fs.clone()), format!("/chk{dir}")).unwrap();
    let mut cp = Checkpointer::new(Arc::new(storage), CheckpointOptions::new()).unwrap();
    cp.savepoint(1, Arc::new(fs.clone()), dir, b, &OperatorStateBackend::new()).unwrap();
    cp.wait(1).unwrap();
    assert!(cp.close().is_empty());
    let bytes = fs.read(&Path::new(dir).join(SAVEPOINT_FILE)).unwrap();
    decode_all(&bytes).unwrap().0
}

// ---- the documents list what the vectors hold ----

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `` `eddy.u64` v1 ``, with a composite's parts in brackets.
fn ser_text(s: &SerializerSnapshot) -> String {
    let mut out = format!("`{}` v{}", s.identity, s.version);
    let mut config = &s.config[..];
    let mut parts = Vec::new();
    while !config.is_empty() {
        match SerializerSnapshot::decode(&mut config) {
            Ok(p) => parts.push(ser_text(&p)),
            Err(_) => return format!("{out} (config `{}`)", hex(&s.config)),
        }
    }
    if !parts.is_empty() {
        out.push_str(&format!(" ({})", parts.join(", ")));
    }
    out
}

#[test]
fn vectors_readme_lists_the_content() {
    let readme = spec_file("vectors/README.md");
    let m = manifest();
    let mut lines = Vec::new();
    for name in [
        MANIFEST_VECTOR,
        SAVEPOINT_VECTOR,
        MANIFEST_V1_VECTOR,
        MANIFEST_V2_VECTOR,
        MANIFEST_V3_VECTOR,
        SAVEPOINT_V1_VECTOR,
        SAVEPOINT_V2_VECTOR,
    ] {
        lines.push(format!("## `{name}` ({} bytes)", vector(name).len()));
    }
    // The fixtures' meta info, shared by each version's manifest and savepoint.
    for (manifest, savepoint) in [(MANIFEST_V3_VECTOR, SAVEPOINT_V2_VECTOR), (MANIFEST_V1_VECTOR, SAVEPOINT_V1_VECTOR)]
    {
        let meta_len = le_u32(&vector(savepoint), 16) as usize;
        lines.push(format!("The meta info is {meta_len} bytes long"));
        lines.push(format!(
            "Meta info (bytes {META_AT} to {}; the same bytes as in `{savepoint}`)",
            META_AT + meta_len - 1
        ));
        lines
            .push(format!("Its meta info (bytes 20 to {}) is that of `{manifest}`, byte for byte.", 20 + meta_len - 1));
    }
    // The newest vectors' meta info: the same bytes up to the writers section.
    let common = v3_meta_end() - META_AT;
    let (manifest_meta, savepoint_meta) = (encoded_len(&meta()), encoded_len(&self::savepoint_meta()));
    lines.extend([
        format!("The meta info is {manifest_meta} bytes long"),
        format!(
            "Meta info (bytes {META_AT} to {}; its first {common} bytes, up to the writers section, are \
             those of `{MANIFEST_V3_VECTOR}` and `{SAVEPOINT_VECTOR}`)",
            META_AT + manifest_meta - 1
        ),
        format!(
            "Its meta info (bytes 20 to {}) is that of `{MANIFEST_VECTOR}` up to the writers section (its \
             first {common} bytes), then a writers section of {} bytes",
            20 + savepoint_meta - 1,
            savepoint_meta - common
        ),
        format!("The writers section is {} bytes long", manifest_meta - common),
    ]);
    lines.extend([
        format!(
            "Checkpoint {}, flags {} (incremental), `next_segment_id` {}.",
            m.checkpoint_id, m.flags, m.next_segment_id
        ),
        format!(
            "Job `{}`, max parallelism {}, key groups `{}..={}`, key serializer {}, key hash `{}`.",
            m.meta.job,
            m.meta.max_parallelism,
            m.meta.key_groups.unwrap().0,
            m.meta.key_groups.unwrap().1,
            ser_text(&m.meta.key_serializer),
            m.meta.key_hash.as_deref().unwrap()
        ),
        format!("Savepoint {SAVEPOINT_ID}, chunks stored uncompressed"),
    ]);
    let nums = |vs: &[u32]| vs.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
    for s in &m.meta.states {
        let sers: Vec<String> = s.serializers.iter().map(ser_text).collect();
        let ttl = if s.id == 1 { COUNT_TTL_TEXT } else { "none" };
        lines.push(format!("| {} | `{}` | {:?} | {} | {ttl} |", s.id, s.name, s.kind, sers.join(", ")));
        // The writers section: a row per older writer of each state it lists.
        for w in &s.older {
            let sers: Vec<String> = w.serializers.iter().map(ser_text).collect();
            lines.push(format!(
                "| {} | `{}` | {} | {} | {} | {} |",
                s.id,
                s.name,
                nums(&s.tag),
                nums(&w.tag),
                sers.join(", "),
                if w.ttl { "yes" } else { "no" }
            ));
        }
    }
    for s in &self::savepoint_meta().states {
        if s.tag != s.versions() {
            assert!(s.older.is_empty());
            lines.push(format!(
                "Its writers section lists state {} (`{}`) with the tag entry {} and no older writer.",
                s.id,
                s.name,
                nums(&s.tag)
            ));
        }
    }
    for l in &m.meta.operator.lists {
        let elements: Vec<String> = l.elements.iter().map(|e| hex_cell(e)).collect();
        lines.push(format!(
            "| list | `{}` | {:?} | {} | {} |",
            l.name,
            l.mode,
            ser_text(&l.serializer),
            elements.join(", ")
        ));
    }
    for bc in &m.meta.operator.broadcast {
        let entries: Vec<String> =
            bc.entries.iter().map(|(k, v)| format!("{} → {}", hex_cell(k), hex_cell(v))).collect();
        lines.push(format!(
            "| broadcast | `{}` | | {} → {} | {} |",
            bc.name,
            ser_text(&bc.keys),
            ser_text(&bc.values),
            entries.join(", ")
        ));
    }
    // The segment tables of the newest manifest and of the version 3 fixture.
    for segments in [m.segments.clone(), manifest_v3().segments] {
        for (i, s) in segments.iter().enumerate() {
            let mask: Vec<String> = s.mask.iter().map(|(a, b)| format!("`{a:04x}..={b:04x}`")).collect();
            let mask = if mask.is_empty() { "(none)".to_string() } else { mask.join(", ") };
            let versions: Vec<String> = s.versions.iter().map(|(id, vs)| format!("{id}: {}", nums(vs))).collect();
            lines.push(format!(
                "| {i} | `{}` | {} | {} | {mask} | {} | `{}` |",
                s.file,
                s.segment_id,
                s.file_len,
                versions.join("; "),
                SEGMENTS[i].0
            ));
        }
    }
    for (i, (k, v, meaning)) in records().iter().enumerate() {
        let kg = u16::from_be_bytes([k[0], k[1]]);
        lines.push(format!("| {i} | {kg} | {} | {} | {meaning} |", hex_cell(k), hex_cell(v)));
    }
    for name in [SAVEPOINT_VECTOR, SAVEPOINT_V2_VECTOR, SAVEPOINT_V1_VECTOR] {
        let sp = vector(name);
        let mut r = SavepointReader::new(&sp).unwrap();
        let mut i = 0;
        while let Some(c) = r.next().unwrap() {
            let at = c.offset as usize;
            lines.push(format!(
                "| {i} | {} | {} | {} | {} | {} | 0 |",
                c.offset,
                c.key_group,
                c.records,
                le_u32(&sp, at + 7),
                le_u32(&sp, at + 11)
            ));
            i += 1;
        }
        lines.push(format!("End marker at {}: {i} chunks, {} records.", sp.len() - 21, records().len()));
    }
    let flat = one_line(&readme);
    for line in lines {
        assert!(
            readme.contains(&line) || flat.contains(&line),
            "format-spec/vectors/README.md does not contain {line:?}"
        );
    }
    // The section headings of the README name files that exist, and the checkpoint manifest
    // and savepoint vectors' sections hold no byte walk or hex dump: `tests/spec_vectors.rs`
    // takes those for its own vectors.
    let mut section = String::new();
    let mut in_code = false;
    for l in readme.lines() {
        if let Some(rest) = l.strip_prefix("## `") {
            section = rest.split('`').next().unwrap().to_string();
            vector(&section);
        } else if l.starts_with("```") {
            in_code = !in_code;
        } else if in_code && (section.starts_with("checkpoint-manifest-") || section.starts_with("savepoint-")) {
            assert!(!l.starts_with("offset  bytes") && !l.starts_with("00000000: "), "{section}: {l}");
        }
    }
}

/// The bytes of a walk's `bytes` column (hex, `|` between fields), or `(n bytes)` for a run
/// the walk does not spell out.
fn walk_bytes(column: &str) -> Result<Vec<u8>, usize> {
    if let Some(n) = column.strip_prefix('(').and_then(|c| c.strip_suffix(" bytes)")) {
        return Err(n.parse().unwrap());
    }
    Ok(column
        .split_whitespace()
        .filter(|t| *t != "|")
        .map(|t| u8::from_str_radix(t, 16).unwrap_or_else(|_| panic!("{t:?} in {column:?}")))
        .collect())
}

/// The byte-by-byte walks (`offset  bytes  meaning`) of a specification page: each is under a
/// heading naming the vector it walks (`` `vectors/<file>` ``), and covers the file from 0 to
/// its end without gaps. Returns the number of walks per vector.
fn check_walks(page: &str) -> Vec<(String, usize)> {
    let text = spec_file(page);
    let mut lines = text.lines();
    let mut current: Option<String> = None;
    let mut seen: Vec<(String, usize)> = Vec::new();
    while let Some(line) = lines.next() {
        if !line.starts_with("```") {
            if line.starts_with('#') {
                current = line.find("`vectors/").map(|i| line[i + 9..].split('`').next().unwrap().to_string());
            }
            continue;
        }
        let block: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
        if !block.first().is_some_and(|l| l.starts_with("offset  bytes")) {
            continue;
        }
        let name = current.clone().unwrap_or_else(|| panic!("{page}: a walk names no vector"));
        let bytes = vector(&name);
        let mut next = 0;
        for l in &block[1..] {
            let cols: Vec<&str> = l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
            assert!(cols.len() >= 3, "{page}: {l:?}");
            let at: usize = cols[0].parse().unwrap_or_else(|_| panic!("{page}: {l:?}"));
            assert_eq!(at, next, "{page}: the walk of {name} skips or repeats bytes at {at}: {l:?}");
            next = match walk_bytes(cols[1]) {
                Ok(want) => {
                    assert_eq!(bytes.get(at..at + want.len()), Some(&want[..]), "{page}, {name} at {at}: {l:?}");
                    at + want.len()
                }
                Err(n) => at + n,
            };
        }
        assert_eq!(next, bytes.len(), "{page}: the walk of {name} ends before the file does");
        match seen.iter_mut().find(|(n, _)| *n == name) {
            Some((_, k)) => *k += 1,
            None => seen.push((name, 1)),
        }
    }
    seen
}

#[test]
fn spec_walks_are_those_of_the_vectors() {
    assert_eq!(check_walks("manifest.md"), [(MANIFEST_VECTOR.to_string(), 1)]);
    assert_eq!(check_walks("savepoint.md"), [(SAVEPOINT_VECTOR.to_string(), 1)]);
}
