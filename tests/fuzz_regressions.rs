//! The fuzz targets (`fuzz/src/lib.rs`) run in the normal test suite, without cargo-fuzz:
//!
//! - every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` through its
//!   target;
//! - a deterministic, bounded set of mutations of each corpus seed (truncations, byte flips,
//!   overwritten words, inserted and removed bytes), each run as is and with its checksums
//!   recomputed (the targets do that themselves);
//! - one named test per crash input in `fuzz/regressions/`, saying what the bug was.
//!
//! A panic anywhere, in the test thread or in a store's background thread, fails the test and
//! names the input and the mutation. `generate_seed_corpus` (ignored) rewrites the seeds
//! from the real writers: `cargo test --test fuzz_regressions -- --ignored generate_seed_corpus`.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_targets;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};

use eddy::checkpoint::{CheckpointOptions, CheckpointStorage, Checkpointer, LocalDirStorage, RestoreSource};
use eddy::codec::{
    Bool, Bytes, Char, OptionOf, RkyvSerializer, SerdeSerializer, Serializer, SerializerSnapshot, Str, Unit, VecOf,
    F64, I64, U32, U64,
};
use eddy::format::block::{append_trailer, BlockBuilder, COMPRESSION_LZ4, COMPRESSION_NONE, COMPRESSION_ZSTD};
use eddy::format::checkpoint::CheckpointManifest;
use eddy::format::segment::Compression;
use eddy::format::store_manifest::{ManifestSegment, StoreManifest};
use eddy::format::{RecordKind, SegmentReader, SegmentWriter, WriterOptions};
use eddy::io::{FaultFs, FileBytes, FileSystem};
use eddy::keygroup::KeyGroupRange;
use eddy::state::{
    KeyedBackend, ListStateDescriptor, ManualClock, MapStateDescriptor, OperatorStateBackend, ValueStateDescriptor,
};
use eddy::store::{CompactionOptions, StoreOptions, MANIFEST_FILE};
use fuzz_targets::{
    codec_cases, open_flags, reseal, restore_flags, RestoreInput, RkyvEvent, RkyvKind, SerdeEvent, SerdeKind,
    StoreInput, TARGETS,
};

/// The largest seed the corpus may hold.
const MAX_SEED_LEN: usize = 8 << 10;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted by name (dot files and READMEs skipped).
fn inputs(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = fs::read_dir(&dir) else { return Vec::new() };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.expect("read corpus directory").path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.starts_with('.') && !name.ends_with(".md")
        })
        .map(|p| (format!("{kind}/{target}/{}", p.file_name().unwrap().to_string_lossy()), fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

/// Panics in the stores' background threads (the test thread's own are caught per run).
static BACKGROUND_PANICS: AtomicUsize = AtomicUsize::new(0);
/// Store runs one at a time, so that a background panic is charged to the right input.
static STORE_RUNS: Mutex<()> = Mutex::new(());

fn count_background_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name().is_some_and(|n| n.starts_with("eddy-")) {
                BACKGROUND_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// Runs one input through a target; a description of the failure if it panicked.
fn run(target: &str, input: &[u8]) -> Result<(), String> {
    count_background_panics();
    let f = fuzz_targets::target(target).unwrap_or_else(|| panic!("no fuzz target {target:?}"));
    let _serial =
        fuzz_targets::STORE_TARGETS.contains(&target).then(|| STORE_RUNS.lock().unwrap_or_else(|e| e.into_inner()));
    let before = BACKGROUND_PANICS.load(Ordering::SeqCst);
    let result = catch_unwind(AssertUnwindSafe(|| f(input)));
    let background = BACKGROUND_PANICS.load(Ordering::SeqCst) - before;
    match result {
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(format!("panicked: {msg}"))
        }
        Ok(()) if background > 0 => Err(format!("{background} background thread(s) panicked")),
        Ok(()) => Ok(()),
    }
}

/// Fails with every failing input (at most a few listed) after running them all.
fn run_all(target: &str, cases: impl IntoIterator<Item = (String, Vec<u8>)>) -> usize {
    let mut failures = Vec::new();
    let mut n = 0;
    for (name, input) in cases {
        n += 1;
        if let Err(e) = run(target, &input) {
            failures.push(format!("{name} ({} bytes): {e}", input.len()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} inputs of target {target} failed; save the input under fuzz/regressions/{target}/ \
         to reproduce:\n{}",
        failures.len(),
        failures.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    n
}

/// A deterministic set of about `budget` mutations of `seed`, each with a name.
fn mutations(seed: &[u8], budget: usize) -> Vec<(String, Vec<u8>)> {
    let n = seed.len();
    let mut out = Vec::new();
    // A fifth of the budget to each kind of mutation.
    let share = (budget / 5).max(1);
    let positions = |count: usize| -> Vec<usize> {
        if n == 0 {
            return Vec::new();
        }
        let stride = n.div_ceil(count.max(1)).max(1);
        // Offset the grid so that different kinds hit different bytes.
        (0..n).step_by(stride).collect()
    };

    // Truncations: every length of a small seed; else a grid plus both ends.
    let mut lens: Vec<usize> = if n <= share { (0..n).collect() } else { positions(share) };
    lens.extend(n.saturating_sub(16)..n);
    lens.extend(0..n.min(16));
    lens.sort_unstable();
    lens.dedup();
    for len in lens {
        out.push((format!("truncated to {len}"), seed[..len].to_vec()));
    }

    // Byte flips: all three masks at every byte of a small seed; else one mask per byte.
    const MASKS: [u8; 3] = [0x01, 0x80, 0xff];
    let per_byte = if n * 3 <= share { 3 } else { 1 };
    for (k, pos) in positions(share / per_byte).into_iter().enumerate() {
        for m in 0..per_byte {
            let mask = MASKS[(k + m) % 3];
            let mut v = seed.to_vec();
            v[pos] ^= mask;
            out.push((format!("byte {pos} ^= {mask:#04x}"), v));
        }
    }

    // Overwritten words: the little-endian u32s most likely to break a length or a count.
    const WORDS: [u32; 4] = [0, 1, 0x100, u32::MAX];
    for (k, pos) in positions(share).into_iter().enumerate() {
        let word = WORDS[k % WORDS.len()].to_le_bytes();
        let mut v = seed.to_vec();
        let end = (pos + 4).min(n);
        v[pos..end].copy_from_slice(&word[..end - pos]);
        out.push((format!("u32 {:#x} at {pos}", WORDS[k % WORDS.len()]), v));
    }

    // A byte removed, a byte inserted.
    for (k, pos) in positions(share).into_iter().enumerate() {
        let mut v = seed.to_vec();
        if k % 2 == 0 {
            v.remove(pos);
            out.push((format!("byte {pos} removed"), v));
        } else {
            v.insert(pos, 0x80);
            out.push((format!("0x80 inserted at {pos}"), v));
        }
    }

    // Whole-input changes.
    out.push(("doubled".into(), seed.repeat(2)));
    let mut v = seed.to_vec();
    v.extend_from_slice(&[0xff; 64]);
    out.push(("64 bytes of 0xff appended".into(), v));
    out.push(("reversed".into(), seed.iter().rev().copied().collect()));
    out
}

/// Mutations per seed: the store targets are by far the slowest (they start threads).
fn mutation_budget(target: &str) -> usize {
    match target {
        "store_open" => 500,
        "restore" => 300,
        "segment" => 5000,
        _ => 5000,
    }
}

/// The corpus of a target, each seed as is and mutated.
fn corpus_with_mutations(target: &str) {
    let seeds = inputs("corpus", target);
    assert!(!seeds.is_empty(), "fuzz/corpus/{target}/ is empty; run generate_seed_corpus");
    let budget = mutation_budget(target);
    let cases = seeds.iter().flat_map(|(name, seed)| {
        std::iter::once((name.clone(), seed.clone()))
            .chain(mutations(seed, budget).into_iter().map(move |(m, v)| (format!("{name}, {m}"), v)))
    });
    run_all(target, cases);
}

#[test]
fn corpus_segment() {
    corpus_with_mutations("segment");
}

#[test]
fn corpus_block() {
    corpus_with_mutations("block");
}

#[test]
fn corpus_job_checkpoint() {
    corpus_with_mutations("job_checkpoint");
}

#[test]
fn corpus_store_manifest() {
    corpus_with_mutations("store_manifest");
}

#[test]
fn corpus_store_open() {
    corpus_with_mutations("store_open");
}

#[test]
fn corpus_codec() {
    corpus_with_mutations("codec");
}

#[test]
fn corpus_checkpoint_manifest() {
    corpus_with_mutations("checkpoint_manifest");
}

#[test]
fn corpus_savepoint() {
    corpus_with_mutations("savepoint");
}

#[test]
fn corpus_restore() {
    corpus_with_mutations("restore");
}

#[test]
fn corpus_changelog() {
    corpus_with_mutations("changelog");
}

/// Every crash input saved so far, as is (the named tests below say what each one was).
#[test]
fn regressions_run_clean() {
    for (target, _) in TARGETS {
        run_all(target, inputs("regressions", target));
    }
}

fn regression(target: &str, name: &str) {
    let path = fuzz_dir().join("regressions").join(target).join(name);
    let input = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if let Err(e) = run(target, &input) {
        panic!("{}: {e}", path.display());
    }
}

// ---- one test per crash input in fuzz/regressions/ ----

/// A segment whose data block, checksum re-sealed, holds keys out of order. `read_block` and
/// `mapped_block` check a block's checksum and framing only (full validation is `verify`'s),
/// so they return it, and its `seek` and `get` disagree. The bug was in the target, which
/// asserted their agreement for every block read; it now does so only for validated blocks.
#[test]
fn segment_sealed_block_with_unsorted_keys() {
    regression("segment", "sealed-block-with-unsorted-keys");
}

/// A checkpoint whose segment, re-sealed, holds an empty key among the keys of a state (a
/// zeroed key length in a data block; blocks are checked for key order only by `verify`, not
/// when a restored store reads them). A prefix scan of the state's keys returns it, and
/// `KeyedBackend::keys` (`Core::keys_in_group`) sliced `&k[PREFIX_LEN..]` of every key it
/// returned: "range start index 4 out of range for slice of length 0". It is now a typed error.
#[test]
fn restore_empty_key_in_sealed_block_listed_by_keys() {
    regression("restore", "empty-key-in-sealed-block-listed-by-keys");
}

/// `restore`: a timer record whose key group was changed in a resealed segment block (so the
/// block passes its checksum but is out of key order). Prefix scans of later key groups
/// returned it; firing deleted it with a tombstone before the next scan's start, the segment
/// returned it again, and the same timer fired forever. The store's merge now refuses a key
/// that goes backwards or lies below the scan's start (`Corrupted`, "key order").
#[test]
fn restore_timer_fires_forever_on_an_out_of_order_block() {
    regression("restore", "timer-fires-forever-on-an-out-of-order-block");
}

/// A directory under `fuzz/corpus/` or `fuzz/regressions/` that names no target would be
/// silently skipped.
#[test]
fn every_input_directory_names_a_target() {
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz_dir().join(kind)) else { continue };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                assert!(fuzz_targets::target(&name).is_some(), "fuzz/{kind}/{name}/ names no fuzz target");
            }
        }
    }
}

/// The targets' own CRC-32 is the one eddy writes, and re-sealing a file the real writers made
/// changes nothing (so it finds every checksum where the writers put it).
#[test]
fn reseal_matches_the_writers() {
    for input in [&b""[..], b"a", b"123456789", &[0xa5; 1000]] {
        assert_eq!(reseal::crc32(input), crc32fast::hash(input));
    }
    for (name, seed) in inputs("corpus", "segment") {
        let mut sealed = seed.clone();
        reseal::segment(&mut sealed);
        assert!(sealed == seed, "{name}: re-sealing changed a valid segment");
    }
    for (name, seed) in inputs("corpus", "store_manifest").into_iter().chain(inputs("corpus", "checkpoint_manifest")) {
        let mut sealed = seed.clone();
        reseal::tail(&mut sealed);
        assert!(sealed == seed, "{name}: re-sealing changed a valid manifest");
    }
    for (name, seed) in inputs("corpus", "savepoint") {
        let mut sealed = seed.clone();
        reseal::savepoint(&mut sealed);
        assert!(sealed == seed, "{name}: re-sealing changed a valid savepoint");
    }
    for (name, seed) in inputs("corpus", "restore") {
        let input = RestoreInput::split(&seed).unwrap();
        assert_eq!(input.join(), seed, "{name}: splits and joins back differently");
        let [manifest, segment1, segment2, savepoint] = input.resealed();
        let sealed = RestoreInput {
            manifest: &manifest,
            segment1: &segment1,
            segment2: &segment2,
            savepoint: &savepoint,
            ..input
        };
        assert!(sealed == input, "{name}: re-sealing changed the files of a valid checkpoint or savepoint");
    }
}

/// A damaged data block with its checksum re-sealed gets past the checksum to the decoding.
#[test]
fn reseal_reaches_past_the_checksums() {
    let seg = segment_bytes(
        WriterOptions { block_size: 256, compression: Compression::None, bloom_bits_per_key: 10 },
        &records(&[1], 10, 4),
    );
    let path = Path::new("/s.seg");
    // Byte 8 is the kind byte of the first record of the first data block.
    let mut bad = seg.clone();
    bad[8] = 0x7f;
    let err = SegmentReader::open(FileBytes::from_vec(bad.clone()), path).unwrap().verify().unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    reseal::segment(&mut bad);
    let err = SegmentReader::open(FileBytes::from_vec(bad), path).unwrap().verify().unwrap_err();
    assert!(err.to_string().contains("record kind"), "{err}");
}

/// A damaged savepoint chunk with its checksum re-sealed gets past the checksum to the
/// records.
#[test]
fn reseal_reaches_past_the_savepoint_checksums() {
    use eddy::format::checkpoint::SnapshotDecodeError;
    use eddy::format::savepoint::decode_all;
    let (name, seed) = inputs("corpus", "savepoint").into_iter().find(|(n, _)| n.ends_with("/uncompressed")).unwrap();
    // The last payload byte of the first chunk (header: 20 bytes, meta, crc32; chunk header:
    // 20 bytes, stored length at 11).
    let meta_len = u32::from_le_bytes(seed[16..20].try_into().unwrap()) as usize;
    let chunk = 20 + meta_len + 4;
    assert_eq!(seed[chunk], 1, "{name}: no chunk after the header");
    let stored_len = u32::from_le_bytes(seed[chunk + 11..chunk + 15].try_into().unwrap()) as usize;
    let mut bad = seed.clone();
    bad[chunk + 20 + stored_len - 1] ^= 0x01;
    let checksum = |r: &Result<_, SnapshotDecodeError>| matches!(r, Err(SnapshotDecodeError::Corrupt(d)) if matches!(d.kind, eddy::Corruption::ChecksumMismatch { .. }));
    assert!(checksum(&decode_all(&bad)), "{name}: the damage was not caught by the checksum");
    reseal::savepoint(&mut bad);
    assert!(!checksum(&decode_all(&bad)), "{name}: re-sealing did not get past the chunk checksum");
}

// ---- the seed corpus ----

fn key(kg: u16, i: u32) -> Vec<u8> {
    let mut k = kg.to_be_bytes().to_vec();
    k.extend_from_slice(&i.to_be_bytes());
    k
}

/// `per_kg` records in each key group: mostly puts, some deletes and merges.
fn records(kgs: &[u16], per_kg: u32, value_len: usize) -> Vec<(RecordKind, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for &kg in kgs {
        for i in 0..per_kg {
            let kind = match i % 7 {
                3 => RecordKind::Delete,
                5 => RecordKind::Merge,
                _ => RecordKind::Put,
            };
            let value = match kind {
                RecordKind::Delete => Vec::new(),
                _ => vec![b'a' + (i % 26) as u8; value_len],
            };
            out.push((kind, key(kg, i), value));
        }
    }
    out
}

fn segment_bytes(opts: WriterOptions, recs: &[(RecordKind, Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let fs = FaultFs::new();
    let path = Path::new("/s.seg");
    let mut w = SegmentWriter::new(fs.create(path).unwrap(), path, opts).unwrap();
    for (kind, k, v) in recs {
        w.add(*kind, k, v).unwrap();
    }
    w.finish().unwrap();
    fs.read(path).unwrap()
}

fn block_payload(recs: &[(RecordKind, Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut b = BlockBuilder::default();
    for (kind, k, v) in recs {
        b.add(*kind, k, v);
    }
    let mut out = Vec::new();
    b.finish(&mut out);
    out
}

fn stored_block(payload: &[u8], compression: u8) -> Vec<u8> {
    let mut out = match compression {
        COMPRESSION_ZSTD => zstd::bulk::compress(payload, 1).unwrap(),
        COMPRESSION_LZ4 => lz4_flex::block::compress(payload),
        _ => payload.to_vec(),
    };
    append_trailer(&mut out, 0, compression, payload.len() as u32);
    out
}

/// A closed store's directory, as a `store_open` input with `flags`.
fn store_input(flags: u8, compression: Compression, drop_range: Option<(u16, u16)>) -> Vec<u8> {
    let fs = FaultFs::new();
    let dir = Path::new("/db");
    // No compaction: the seed keeps its two segments.
    let compaction = CompactionOptions {
        trigger: 100,
        size_ratio_percent: 1,
        max_space_amplification_percent: 1_000_000,
        max_segments: 100,
        stall_segments: 100,
    };
    let mut store = StoreOptions::new()
        .file_system(Arc::new(fs.clone()))
        .memory_budget(1 << 20)
        .block_size(256)
        .compression(compression)
        .compaction(compaction)
        .open(dir)
        .unwrap();
    for (kind, k, v) in records(&[0, 2, 7], 12, 12) {
        match kind {
            RecordKind::Put => store.put(&k, &v).unwrap(),
            RecordKind::Delete => store.delete(&k).unwrap(),
            RecordKind::Merge => store.merge(&k, &v).unwrap(),
        }
    }
    store.flush().unwrap();
    for (kind, k, v) in records(&[2, 9], 6, 5) {
        match kind {
            RecordKind::Put => store.merge(&k, &v).unwrap(),
            _ => store.delete(&k).unwrap(),
        }
    }
    store.flush().unwrap();
    if let Some((a, b)) = drop_range {
        store.drop_key_groups(KeyGroupRange::new(a, b).unwrap()).unwrap();
    }
    store.close().unwrap();
    let manifest = fs.read(&dir.join(MANIFEST_FILE)).unwrap();
    let m = StoreManifest::decode(&manifest).unwrap();
    assert_eq!(m.segments.len(), 2, "the seed store should have two segments");
    let seg = |i: usize| fs.read(&dir.join(fuzz_targets::segment_file_name(m.segments[i].id))).unwrap();
    let (segment1, segment2) = (seg(0), seg(1));
    let manifest_piece = if flags & open_flags::SYNTHESIZE_MANIFEST != 0 {
        // Mask ranges, as key-group pairs.
        [0u16, 0, 7, 9, 1, 1].iter().flat_map(|kg| kg.to_be_bytes()).collect()
    } else {
        manifest
    };
    StoreInput { flags, manifest: &manifest_piece, segment1: &segment1, segment2: &segment2 }.join()
}

/// A `codec` seed: the case byte, then `values` written one after another by `s`.
fn codec_seed<S: Serializer>(case: u8, s: &S, values: &[S::Value]) -> Vec<u8> {
    let mut out = vec![case];
    for v in values {
        s.write(v, &mut out);
    }
    out
}

fn serde_event(n: usize) -> SerdeEvent {
    SerdeEvent {
        id: 300 + n as u64,
        user: "ada".to_owned(),
        kind: SerdeKind::Purchase { item: "book".repeat(n), cents: -3 },
        history: vec![SerdeKind::Click, SerdeKind::View(7), SerdeKind::Tagged(Some("t".to_owned()), vec![1, 500])],
        tags: vec!["a".to_owned(), String::new()],
        nested: vec![None, Some((-2, "é".to_owned()))],
        extra: Some([(1, vec![1, 2, 3]), (9, vec![])].into_iter().collect()),
        flags: (true, 'é', -1),
    }
}

fn rkyv_event(n: usize) -> RkyvEvent {
    RkyvEvent {
        id: 7 + n as u64,
        user: "ada".to_owned(),
        kind: RkyvKind::Purchase { item: "book".to_owned(), cents: -3 },
        history: vec![RkyvKind::Click, RkyvKind::View(7), RkyvKind::Tagged(None, vec![1, 500])],
        tags: vec!["a".to_owned(), "a longer tag than fits inline".repeat(n.max(1))],
        longs: (0..n as u64).collect(),
        extra: Some(vec![1, 2, 3]),
        wide: u128::MAX - 1,
        flag: true,
        letter: 'é',
    }
}

/// The `codec` seeds: a few values of each case's serializer, and one input for all cases.
fn codec_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use codec_cases as c;
    let s = |x: &str| x.to_owned();
    let snapshot_bytes = {
        let mut out = vec![c::SNAPSHOT];
        for snap in [
            U64.snapshot(),
            (U64, Str, OptionOf(F64)).snapshot(),
            SerdeSerializer::<SerdeEvent>::with_tag("fuzz.SerdeEvent").snapshot(),
            SerializerSnapshot { identity: s("custom"), version: 7, config: vec![1, 2, 3] },
        ] {
            snap.encode(&mut out);
        }
        out
    };
    let mut all = codec_seed(c::ALL, &(U64, Str, OptionOf(F64)), &[(1, s("x"), Some(0.5))]);
    all.extend_from_slice(&[0; 8]);
    vec![
        ("codec", "u64", codec_seed(c::U64, &U64, &[0, 1, u64::MAX])),
        ("codec", "i64", codec_seed(c::I64, &I64, &[i64::MIN, -1, 0, 42])),
        ("codec", "f64", codec_seed(c::F64, &F64, &[-0.0, 1.5, f64::NAN, f64::NEG_INFINITY])),
        ("codec", "bool", codec_seed(c::BOOL, &Bool, &[false, true])),
        ("codec", "char", codec_seed(c::CHAR, &Char, &['a', 'é', '\u{10FFFF}'])),
        ("codec", "str", codec_seed(c::STR, &Str, &[s(""), s("hello"), "ü".repeat(70)])),
        ("codec", "bytes", codec_seed(c::BYTES, &Bytes, &[vec![], vec![0, 0xff], vec![7; 200]])),
        ("codec", "option-str", codec_seed(c::OPTION_STR, &OptionOf(Str), &[None, Some(s("x"))])),
        ("codec", "vec-u32", codec_seed(c::VEC_U32, &VecOf(U32), &[vec![], vec![1, 2, u32::MAX]])),
        ("codec", "vec-str", codec_seed(c::VEC_STR, &VecOf(Str), &[vec![s("a"), s("")], vec![]])),
        ("codec", "vec-unit", codec_seed(c::VEC_UNIT, &VecOf(Unit), &[vec![(); 3], vec![(); 200], vec![]])),
        (
            "codec",
            "tuple",
            codec_seed(c::TUPLE, &(U64, Str, OptionOf(F64)), &[(1, s("k"), None), (u64::MAX, s("é"), Some(-2.5))]),
        ),
        ("codec", "serde", codec_seed(c::SERDE, &SerdeSerializer::new(), &[serde_event(0), serde_event(40)])),
        ("codec", "rkyv", codec_seed(c::RKYV, &RkyvSerializer::new(), &[rkyv_event(0), rkyv_event(3)])),
        ("codec", "snapshots", snapshot_bytes),
        ("codec", "all", all),
    ]
}

// ---- checkpoint, savepoint and restore seeds ----

/// A backend of the `restore` target's shape (`U64` keys, 16 key groups) owning `range`, with
/// the states and operator state the target reads: `keys` keys, written in two segments.
fn snapshot_backend(
    fs: &FaultFs,
    dir: &str,
    range: Option<KeyGroupRange>,
    keys: u64,
) -> (KeyedBackend<U64>, OperatorStateBackend) {
    let clock = ManualClock::new(fuzz_targets::RESTORE_NOW_MS - 1000);
    let mut b = fuzz_targets::restore_builder(Arc::new(fs.clone()), &clock, range).open(dir).unwrap();
    let value = b.state(ValueStateDescriptor::new("value", U64)).unwrap();
    let ttl = b.state(ValueStateDescriptor::new("ttl", U64).ttl(fuzz_targets::restore_ttl())).unwrap();
    let list = b.state(ListStateDescriptor::new("list", U32)).unwrap();
    let map = b.state(MapStateDescriptor::new("map", U32, Str)).unwrap();
    let timers = b.timer_service("timers").unwrap();
    // The first `keys` keys that fall in the backend's key groups.
    let owned: Vec<u64> = (0..1000u64).filter(|k| b.set_current_key(k).is_ok()).take(keys as usize).collect();
    for (i, k) in owned.iter().enumerate() {
        b.set_current_key(k).unwrap();
        value.update(&mut b, &(k * 10)).unwrap();
        ttl.update(&mut b, k).unwrap();
        list.add(&mut b, &(i as u32)).unwrap();
        // Every third value long and repetitive, so that zstd shrinks a savepoint chunk.
        let text = if i % 3 == 0 { format!("value {i} ").repeat(12) } else { format!("v{i}") };
        map.put(&mut b, &(i as u32), &text).unwrap();
        timers.register_event_time(&mut b, &(), 100 + i as i64).unwrap();
    }
    b.store().flush().unwrap();
    // A second segment: overwrites, appends, removals.
    for (i, k) in owned.iter().enumerate().step_by(2) {
        b.set_current_key(k).unwrap();
        value.update(&mut b, &(k * 10 + 1)).unwrap();
        list.add(&mut b, &7).unwrap();
        map.remove(&mut b, &(i as u32)).unwrap();
        map.put(&mut b, &(i as u32 + 100), &String::new()).unwrap();
    }
    let mut op = OperatorStateBackend::new();
    op.list_state("offsets", U64).unwrap().add_all([5, 6]);
    op.broadcast_state(&fuzz_targets::restore_rules()).unwrap().put("rule".to_owned(), "x > 1".to_owned());
    (b, op)
}

/// A checkpoint storage on `fs` at the `restore` target's place, and a checkpointer over it.
fn checkpointer(fs: &FaultFs, root: &str, opts: CheckpointOptions) -> (Arc<dyn CheckpointStorage>, Checkpointer) {
    let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), root).unwrap());
    let cp = Checkpointer::new(storage.clone(), opts).unwrap();
    (storage, cp)
}

/// Checkpoint `id` of a storage: its manifest, with the shared files renamed after their
/// segment ids (the real names hold a random owner; these keep the seeds deterministic), and
/// their bytes in the manifest's order.
fn checkpoint_files(fs: &FaultFs, root: &str, id: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (manifest, segments, _) = checkpoint_and_log_files(fs, root, id);
    (manifest, segments)
}

/// The manifest, segment files and changelog files of a checkpoint, its files renamed to names
/// that do not depend on the checkpointer.
fn checkpoint_and_log_files(fs: &FaultFs, root: &str, id: u64) -> (Vec<u8>, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let bytes = fs.read(&Path::new(root).join(format!("chk-{id:020}.manifest"))).unwrap();
    let mut m = CheckpointManifest::decode(&bytes).unwrap();
    let mut files = Vec::new();
    for s in &mut m.segments {
        files.push(fs.read(&Path::new(root).join(&s.file)).unwrap());
        s.file = format!("shared/seed-{:010}.seg", s.segment_id);
    }
    let mut logs = Vec::new();
    for l in &mut m.logs {
        logs.push(fs.read(&Path::new(root).join(&l.file)).unwrap());
        l.file = format!("shared/seed-log{:010}.log", l.log_seq);
    }
    (m.encode(), files, logs)
}

fn restore_input(flags: u8, manifest: &[u8], segments: &[Vec<u8>], savepoint: &[u8]) -> Vec<u8> {
    assert!(segments.len() <= 2, "a restore input holds two segment files");
    let segment = |i: usize| segments.get(i).map_or(&[][..], Vec::as_slice);
    RestoreInput { flags, manifest, segment1: segment(0), segment2: segment(1), savepoint }.join()
}

/// The seeds of `checkpoint_manifest`, `savepoint` and `restore`, from real checkpoints and
/// savepoints of small backends.
fn snapshot_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use restore_flags as f;
    let fs = FaultFs::new();
    let cp_root = fuzz_targets::RESTORE_CHECKPOINT_DIR;

    // All key groups: checkpoint 1, a zstd savepoint and a full checkpoint 3.
    let (mut b, op) = snapshot_backend(&fs, "/full", None, 6);
    let (storage, mut cp) =
        checkpointer(&fs, cp_root, CheckpointOptions::new().retain(4).savepoint_compression(Some(3)));
    cp.checkpoint(1, &mut b, &op, false).unwrap();
    cp.wait(1).unwrap();
    cp.savepoint(2, Arc::new(fs.clone()), "/sp-zstd", &mut b, &op).unwrap();
    cp.wait(2).unwrap();
    cp.checkpoint(3, &mut b, &op, true).unwrap();
    cp.wait(3).unwrap();
    let (manifest, segments) = checkpoint_files(&fs, cp_root, 1);
    assert_eq!(segments.len(), 2, "the seed checkpoint should have two segments");
    let (full_manifest, _) = checkpoint_files(&fs, cp_root, 3);
    let sp_zstd = fs.read(Path::new("/sp-zstd/SAVEPOINT")).unwrap();

    // Restored with half the key groups, then checkpointed: masks, files reused.
    let source = RestoreSource::Checkpoint { storage: storage.clone(), id: 1 };
    let clock = ManualClock::new(fuzz_targets::RESTORE_NOW_MS);
    let (mut half, _) =
        fuzz_targets::restore_builder(Arc::new(fs.clone()), &clock, Some(KeyGroupRange::new(0, 7).unwrap()))
            .restore("/half", &[source])
            .unwrap();
    cp.checkpoint(4, &mut half, &op, false).unwrap();
    cp.wait(4).unwrap();
    let (masked_manifest, _) = checkpoint_files(&fs, cp_root, 4);
    cp.close();

    // Uncompressed savepoints: of all key groups, of key groups 8 to 15, and of nothing.
    let (_, mut raw_cp) = checkpointer(&fs, "/cp-raw", CheckpointOptions::new().savepoint_compression(None));
    raw_cp.savepoint(5, Arc::new(fs.clone()), "/sp-raw", &mut b, &op).unwrap();
    raw_cp.wait(5).unwrap();
    let sp_raw = fs.read(Path::new("/sp-raw/SAVEPOINT")).unwrap();
    let (mut upper, upper_op) = snapshot_backend(&fs, "/upper", Some(KeyGroupRange::new(8, 15).unwrap()), 4);
    raw_cp.savepoint(6, Arc::new(fs.clone()), "/sp-upper", &mut upper, &upper_op).unwrap();
    raw_cp.wait(6).unwrap();
    let sp_upper = fs.read(Path::new("/sp-upper/SAVEPOINT")).unwrap();
    let (mut empty, empty_op) = snapshot_backend(&fs, "/empty", None, 0);
    raw_cp.savepoint(7, Arc::new(fs.clone()), "/sp-empty", &mut empty, &empty_op).unwrap();
    raw_cp.wait(7).unwrap();
    let sp_empty = fs.read(Path::new("/sp-empty/SAVEPOINT")).unwrap();
    raw_cp.close();

    // Key groups 0 to 7 checkpointed, for a restore from it and the savepoint of 8 to 15.
    let (mut lower, lower_op) = snapshot_backend(&fs, "/lower", Some(KeyGroupRange::new(0, 7).unwrap()), 4);
    let (_, mut lower_cp) = checkpointer(&fs, "/cp-lower", CheckpointOptions::new());
    lower_cp.checkpoint(1, &mut lower, &lower_op, false).unwrap();
    lower_cp.wait(1).unwrap();
    lower_cp.close();
    let (lower_manifest, lower_segments) = checkpoint_files(&fs, "/cp-lower", 1);

    // A backend with a changelog: checkpoint 1 stores its state, checkpoint 2 the log since.
    let clock = ManualClock::new(fuzz_targets::RESTORE_NOW_MS - 1000);
    let mut logged = KeyedBackend::builder(U64)
        .max_parallelism(fuzz_targets::RESTORE_MAX_PARALLELISM)
        .clock(Arc::new(clock))
        .store_options(StoreOptions::new().file_system(Arc::new(fs.clone())).memory_budget(256 << 10).changelog(true))
        .open("/logged")
        .unwrap();
    let value = logged.state(ValueStateDescriptor::new("value", U64)).unwrap();
    let list = logged.state(ListStateDescriptor::new("list", U32)).unwrap();
    let (_, mut log_cp) = checkpointer(&fs, "/cp-logged", CheckpointOptions::new().retain(2));
    for round in 0..2u64 {
        for k in 0..6u64 {
            logged.set_current_key(&k).unwrap();
            value.update(&mut logged, &(k + round)).unwrap();
            list.add(&mut logged, &(k as u32)).unwrap();
        }
        logged.set_current_key(&round).unwrap();
        value.clear(&mut logged).unwrap();
        log_cp.checkpoint(round + 1, &mut logged, &OperatorStateBackend::new(), false).unwrap();
        log_cp.wait(round + 1).unwrap();
    }
    log_cp.close();
    let (logged_manifest, logged_segments, logs) = checkpoint_and_log_files(&fs, "/cp-logged", 2);
    assert_eq!(logs.len(), 1, "the seed checkpoint should name one changelog file");

    vec![
        ("checkpoint_manifest", "incremental-two-segments", manifest.clone()),
        ("checkpoint_manifest", "full", full_manifest),
        ("checkpoint_manifest", "masked-half-range", masked_manifest),
        ("checkpoint_manifest", "lower-half", lower_manifest.clone()),
        ("checkpoint_manifest", "with-changelog", logged_manifest.clone()),
        ("changelog", "from-a-checkpoint", logs[0].clone()),
        (
            "changelog",
            "spec-vector",
            fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec/vectors/changelog-v1.log")).unwrap(),
        ),
        (
            "restore",
            "checkpoint-with-changelog",
            restore_input(f::CHECKPOINT, &logged_manifest, &logged_segments, &logs[0]),
        ),
        (
            "restore",
            "checkpoint-with-changelog-half-range-then-checkpoint",
            restore_input(
                f::CHECKPOINT | f::HALF_RANGE | f::CHECKPOINT_AFTER,
                &logged_manifest,
                &logged_segments,
                &logs[0],
            ),
        ),
        ("savepoint", "zstd", sp_zstd.clone()),
        ("savepoint", "uncompressed", sp_raw.clone()),
        ("savepoint", "upper-half", sp_upper.clone()),
        ("savepoint", "empty", sp_empty),
        ("restore", "checkpoint", restore_input(f::CHECKPOINT, &manifest, &segments, &[])),
        (
            "restore",
            "checkpoint-half-range-copy-close",
            restore_input(f::CHECKPOINT | f::HALF_RANGE | f::COPY | f::CLOSE, &manifest, &segments, &[]),
        ),
        (
            "restore",
            "checkpoint-then-checkpoint",
            restore_input(f::CHECKPOINT | f::CHECKPOINT_AFTER, &manifest, &segments, &[]),
        ),
        ("restore", "savepoint-zstd", restore_input(f::SAVEPOINT, &[], &[], &sp_zstd)),
        (
            "restore",
            "savepoint-half-range-then-checkpoint",
            restore_input(f::SAVEPOINT | f::HALF_RANGE | f::CHECKPOINT_AFTER, &[], &[], &sp_raw),
        ),
        (
            "restore",
            "checkpoint-and-savepoint",
            restore_input(f::CHECKPOINT_AND_SAVEPOINT | f::CLOSE, &lower_manifest, &lower_segments, &sp_upper),
        ),
        (
            "restore",
            "savepoint-and-checkpoint-half-range",
            restore_input(f::SAVEPOINT_AND_CHECKPOINT | f::HALF_RANGE, &lower_manifest, &lower_segments, &sp_upper),
        ),
    ]
}

/// Rewrites the seed corpus from the real writers. Deterministic: the same build writes the
/// same bytes.
#[test]
#[ignore = "writes fuzz/corpus/; run by hand after a format change"]
fn generate_seed_corpus() {
    let none = |block_size| WriterOptions { block_size, compression: Compression::None, bloom_bits_per_key: 10 };
    let zstd_opts =
        |block_size| WriterOptions { block_size, compression: Compression::Zstd(1), bloom_bits_per_key: 10 };
    let lz4_opts = |block_size| WriterOptions { block_size, compression: Compression::Lz4, bloom_bits_per_key: 10 };
    let long_keys: Vec<_> = (0..12u32)
        .map(|i| {
            let mut k = key(3, 0);
            k.extend_from_slice(&[b'k'; 40]);
            k.extend_from_slice(&i.to_be_bytes());
            (RecordKind::Put, k, vec![b'v'; 3])
        })
        .collect();
    let single = vec![(RecordKind::Put, key(1, 1), b"x".to_vec())];
    let mixed_small = records(&[4], 3, 2);
    let mixed = records(&[0, 1, 5], 8, 6);

    let seeds: Vec<(&str, &str, Vec<u8>)> = vec![
        ("segment", "uncompressed-3kg-30rec", segment_bytes(none(256), &records(&[0, 5, 9], 10, 8))),
        ("segment", "zstd-2kg-40rec", segment_bytes(zstd_opts(512), &records(&[1, 300], 20, 40))),
        ("segment", "lz4-2kg-40rec", segment_bytes(lz4_opts(512), &records(&[1, 300], 20, 40))),
        ("segment", "one-record", segment_bytes(none(4096), &single)),
        ("segment", "empty", segment_bytes(none(4096), &[])),
        (
            "segment",
            "long-keys-1-bloom-bit",
            segment_bytes(WriterOptions { bloom_bits_per_key: 1, ..none(256) }, &long_keys),
        ),
        ("block", "payload-3rec", block_payload(&mixed_small)),
        ("block", "payload-empty", block_payload(&[])),
        ("block", "payload-24rec", block_payload(&mixed)),
        ("block", "stored-3rec", stored_block(&block_payload(&mixed_small), COMPRESSION_NONE)),
        ("block", "stored-zstd-24rec", stored_block(&block_payload(&records(&[0, 1, 5], 8, 30)), COMPRESSION_ZSTD)),
        ("block", "stored-lz4-24rec", stored_block(&block_payload(&records(&[0, 1, 5], 8, 30)), COMPRESSION_LZ4)),
        ("block", "handle-then-stored-3rec", {
            let stored = stored_block(&block_payload(&mixed_small), COMPRESSION_NONE);
            let mut v = 12u64.to_le_bytes().to_vec();
            v.extend_from_slice(&(stored.len() as u32 - 9).to_le_bytes());
            v.extend_from_slice(&stored);
            v
        }),
        ("store_manifest", "no-segments", StoreManifest { next_segment_id: 1, segments: vec![] }.encode()),
        (
            "job_checkpoint",
            "two-operators",
            eddy::runtime::JobCheckpoint {
                id: 7,
                max_parallelism: 128,
                operators: vec![("numbers".into(), 2), ("count".into(), 3)],
            }
            .encode()
            .into_bytes(),
        ),
        (
            "job_checkpoint",
            "no-operators",
            eddy::runtime::JobCheckpoint { id: 1, max_parallelism: 4, operators: vec![] }.encode().into_bytes(),
        ),
        (
            "store_manifest",
            "two-segments-masks",
            StoreManifest {
                next_segment_id: 9,
                segments: vec![ManifestSegment::new(8, vec![]), ManifestSegment::new(3, vec![(0, 5), (9, 9)])],
            }
            .encode(),
        ),
        (
            "store_manifest",
            "six-segments",
            StoreManifest {
                next_segment_id: 100,
                segments: (0..6).map(|i| ManifestSegment::new(90 - i * 7, vec![(i as u16, i as u16 * 3)])).collect(),
            }
            .encode(),
        ),
        ("store_open", "two-segments", store_input(0, Compression::None, None)),
        ("store_open", "two-segments-close", store_input(open_flags::CLOSE, Compression::None, None)),
        (
            "store_open",
            "masked-write-compact",
            store_input(open_flags::WRITE_AND_COMPACT, Compression::None, Some((2, 2))),
        ),
        ("store_open", "zstd-two-segments", store_input(0, Compression::Zstd(1), None)),
        ("store_open", "lz4-two-segments", store_input(0, Compression::Lz4, None)),
        (
            "store_open",
            "synthesized-masks-stray-files",
            store_input(open_flags::SYNTHESIZE_MANIFEST | open_flags::STRAY_FILES, Compression::None, None),
        ),
        (
            "store_open",
            "no-manifest-one-segment",
            store_input(open_flags::NO_MANIFEST | open_flags::ONE_SEGMENT, Compression::None, None),
        ),
    ];
    for (target, name, bytes) in seeds.into_iter().chain(codec_seeds()).chain(snapshot_seeds()) {
        assert!(bytes.len() <= MAX_SEED_LEN, "{target}/{name} is {} bytes", bytes.len());
        fuzz_targets::target(target).unwrap()(&bytes);
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), &bytes).unwrap();
    }
}
