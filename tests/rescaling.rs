//! Rescaling by key groups against a model: random keys, random chains of parallelism changes
//! (p -> p' -> p'' ...) with writes, timers and operator state in between, each change restoring
//! every new instance from the checkpoints or savepoints of the old ones. Every key ends in
//! exactly one backend, the one that owns its key group, with its exact state; timers fire in
//! the owning backend only; operator state is redistributed by its mode.
//!
//! A key's key group depends on the hash that routes it, so a restore refuses snapshots whose
//! keys another hash routed, and still restores old snapshots that do not name their hash.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use eddy::checkpoint::{
    CheckpointOptions, CheckpointStorage, Checkpointer, LocalDirStorage, RestoreSource, SAVEPOINT_FILE,
};
use eddy::codec::{I64, U32, U64};
use eddy::format::checkpoint::{CheckpointManifest, CHECKPOINT_VERSION};
use eddy::format::savepoint::{decode_all, SAVEPOINT_VERSION};
use eddy::io::{FaultFs, FileSystem};
use eddy::keygroup::{KeyGroupRange, MaxParallelism, DEFAULT_KEY_HASH, JAVA_KEY_HASH};
use eddy::state::{
    KeyedBackend, KeyedBackendBuilder, ListState, ListStateDescriptor, OperatorStateBackend, OperatorStateSnapshot,
    Timer, TimerService, ValueState, ValueStateDescriptor,
};
use eddy::store::StoreOptions;
use eddy::{Error, Misuse};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

mod spec_common;

const MAX_P: u32 = 16;

#[derive(Clone, Debug)]
enum Op {
    Put(u64, u64),
    Append(u64, u32),
    Timer(u64, i64),
    Offset(u32, u64),
    Flush(u32),
    Rescale { to: u32, savepoint: bool },
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let k = u64::arbitrary(g) % 200;
        match u8::arbitrary(g) % 12 {
            0..=3 => Op::Put(k, u64::arbitrary(g)),
            4 | 5 => Op::Append(k, u32::arbitrary(g)),
            6 => Op::Timer(k, i64::from(u8::arbitrary(g))),
            7 => Op::Offset(u32::arbitrary(g), u64::arbitrary(g)),
            8 => Op::Flush(u32::arbitrary(g)),
            _ => Op::Rescale { to: 1 + u32::arbitrary(g) % 5, savepoint: bool::arbitrary(g) && bool::arbitrary(g) },
        }
    }
}

struct Instance {
    b: KeyedBackend<U64>,
    op: OperatorStateBackend,
    value: ValueState<U64>,
    list: ListState<U32>,
    timers: TimerService,
}

struct Cluster {
    fs: FaultFs,
    instances: Vec<Instance>,
    next_dir: u64,
    next_id: u64,
}

fn options(fs: &FaultFs) -> StoreOptions {
    StoreOptions::new().file_system(Arc::new(fs.clone())).memory_budget(256 << 10)
}

fn range(p: u32, i: u32) -> KeyGroupRange {
    MaxParallelism::new(MAX_P).unwrap().subtask_range(p, i).unwrap()
}

fn instance(mut b: KeyedBackend<U64>, op: OperatorStateBackend) -> Instance {
    Instance {
        value: b.state(ValueStateDescriptor::new("value", U64)).unwrap(),
        list: b.state(ListStateDescriptor::new("list", U32)).unwrap(),
        timers: b.timer_service("timers").unwrap(),
        b,
        op,
    }
}

impl Cluster {
    fn new(p: u32) -> Self {
        let fs = FaultFs::new();
        let mut c = Cluster { fs, instances: Vec::new(), next_dir: 0, next_id: 1 };
        for i in 0..p {
            let dir = c.dir();
            let b =
                KeyedBackend::builder(U64).max_parallelism(MAX_P).key_groups(range(p, i)).store_options(options(&c.fs));
            c.instances.push(instance(b.open(dir).unwrap(), OperatorStateBackend::new()));
        }
        c
    }

    fn dir(&mut self) -> PathBuf {
        self.next_dir += 1;
        PathBuf::from(format!("/d{}", self.next_dir))
    }

    /// The instance that owns `key`: the one whose backend accepts it as the current key.
    /// Every other one must refuse it.
    fn owner(&mut self, key: u64) -> usize {
        let mut owners = Vec::new();
        for (i, inst) in self.instances.iter_mut().enumerate() {
            match inst.b.set_current_key(&key) {
                Ok(()) => owners.push(i),
                Err(Error::Misuse(Misuse::KeyGroupOutOfRange { .. })) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(owners.len(), 1, "key {key} is owned by {owners:?}");
        let i = owners[0];
        self.instances[i].b.set_current_key(&key).unwrap();
        i
    }

    /// Snapshots every instance and restores `p` new ones from them.
    fn rescale(&mut self, p: u32, savepoint: bool) {
        let mut old = std::mem::take(&mut self.instances);
        // Each new instance gets the union of every old instance's list, as in Flink.
        let union_len: usize =
            old.iter_mut().map(|inst| inst.op.union_list_state("broadcastish", U64).unwrap().get().len()).sum();
        let mut sources = Vec::new();
        let mut operator_states: Vec<OperatorStateSnapshot> = Vec::new();
        for mut inst in old {
            let id = self.next_id;
            self.next_id += 1;
            let root = self.dir();
            let storage: Arc<dyn CheckpointStorage> =
                Arc::new(LocalDirStorage::new(Arc::new(self.fs.clone()), &root).unwrap());
            let mut cp = Checkpointer::new(storage.clone(), CheckpointOptions::new()).unwrap();
            let source = if savepoint {
                let dir = root.join("savepoint");
                cp.savepoint(id, Arc::new(self.fs.clone()), &dir, &mut inst.b, &inst.op).unwrap();
                cp.wait(id).unwrap();
                RestoreSource::Savepoint { fs: Arc::new(self.fs.clone()), dir }
            } else {
                cp.checkpoint(id, &mut inst.b, &inst.op, false).unwrap();
                cp.wait(id).unwrap();
                RestoreSource::Checkpoint { storage, id }
            };
            operator_states.push(inst.op.snapshot());
            sources.push((inst.b.key_groups(), source));
        }
        let redistributed = OperatorStateBackend::redistribute(&operator_states, p as usize).unwrap();
        for (i, op_state) in redistributed.into_iter().enumerate() {
            let r = range(p, i as u32);
            // Only the snapshots that hold some of the new key groups.
            let mine: Vec<RestoreSource> =
                sources.iter().filter(|(kg, _)| !kg.intersection(&r).is_empty()).map(|(_, s)| s.clone()).collect();
            let dir = self.dir();
            let (b, restored) = KeyedBackend::builder(U64)
                .max_parallelism(MAX_P)
                .key_groups(r)
                .store_options(options(&self.fs))
                .restore(dir, &mine)
                .unwrap();
            assert_eq!(restored.operator_states.len(), mine.len());
            let mut op = OperatorStateBackend::restore(op_state);
            // Then it keeps one copy of the broadcast value, as a user of union state does;
            // copies kept across a chain of rescalings would grow as the product of its
            // parallelisms.
            let union = op.union_list_state("broadcastish", U64).unwrap();
            assert_eq!(union.get().len(), union_len);
            let distinct: BTreeSet<u64> = union.get().iter().copied().collect();
            union.update(distinct.into_iter().collect());
            self.instances.push(instance(b, op));
        }
    }
}

#[derive(Default, Debug, Clone, PartialEq)]
struct Model {
    values: BTreeMap<u64, u64>,
    lists: BTreeMap<u64, Vec<u32>>,
    timers: BTreeSet<(i64, u64)>,
    offsets: BTreeSet<u64>,
    broadcast: u64,
}

fn check(c: &mut Cluster, m: &Model) {
    let mut seen_values = BTreeMap::new();
    let mut seen_lists = BTreeMap::new();
    for inst in c.instances.iter_mut() {
        let range = inst.b.key_groups();
        for k in inst.b.keys(&inst.value).unwrap() {
            inst.b.set_current_key(&k).unwrap();
            assert!(range.contains(inst.b.current_key_group().unwrap()));
            let v = inst.value.get(&mut inst.b).unwrap().unwrap();
            assert!(seen_values.insert(k, v).is_none(), "key {k} in two backends");
        }
        for k in inst.b.keys(&inst.list).unwrap() {
            inst.b.set_current_key(&k).unwrap();
            assert!(seen_lists.insert(k, inst.list.get_vec(&mut inst.b).unwrap()).is_none());
        }
    }
    assert_eq!(seen_values, m.values);
    assert_eq!(seen_lists, m.lists);
    // Even-split offsets: every element exactly once over all instances.
    let mut offsets = Vec::new();
    for inst in c.instances.iter_mut() {
        offsets.extend(inst.op.list_state("offsets", U64).unwrap().get().iter().copied());
        let union = inst.op.union_list_state("broadcastish", U64).unwrap().get().to_vec();
        assert_eq!(union.iter().copied().collect::<BTreeSet<u64>>().len(), usize::from(m.broadcast > 0));
    }
    offsets.sort_unstable();
    assert_eq!(offsets, m.offsets.iter().copied().collect::<Vec<_>>());
}

fn run(p: u8, ops: Vec<Op>) -> TestResult {
    let p = 1 + u32::from(p) % 4;
    let mut c = Cluster::new(p);
    let mut m = Model::default();
    for o in ops {
        match o {
            Op::Put(k, v) => {
                let i = c.owner(k);
                let inst = &mut c.instances[i];
                inst.value.update(&mut inst.b, &v).unwrap();
                m.values.insert(k, v);
            }
            Op::Append(k, v) => {
                let i = c.owner(k);
                let inst = &mut c.instances[i];
                inst.list.add(&mut inst.b, &v).unwrap();
                m.lists.entry(k).or_default().push(v);
            }
            Op::Timer(k, ts) => {
                let i = c.owner(k);
                let inst = &mut c.instances[i];
                inst.timers.register_event_time(&mut inst.b, &(), ts).unwrap();
                m.timers.insert((ts, k));
            }
            Op::Offset(i, v) => {
                let n = c.instances.len();
                let inst = &mut c.instances[i as usize % n];
                if m.offsets.insert(v) {
                    inst.op.list_state("offsets", U64).unwrap().add(v);
                }
                // A union list state with the same single value everywhere.
                m.broadcast = 1;
                for inst in c.instances.iter_mut() {
                    inst.op.union_list_state("broadcastish", U64).unwrap().update(vec![1]);
                }
            }
            Op::Flush(i) => {
                let n = c.instances.len();
                c.instances[i as usize % n].b.store().flush().unwrap();
            }
            Op::Rescale { to, savepoint } => c.rescale(to, savepoint),
        }
    }
    c.rescale(1 + (p % 3), false);
    check(&mut c, &m);
    // Timers fire where their key lives, each once.
    let mut fired = BTreeSet::new();
    for inst in c.instances.iter_mut() {
        let range = inst.b.key_groups();
        inst.timers
            .advance_watermark(&mut inst.b, i64::MAX, |b, t: Timer<u64, ()>| {
                assert!(range.contains(b.current_key_group()?));
                assert!(fired.insert((t.timestamp, t.key)), "timer fired twice");
                Ok(())
            })
            .unwrap();
    }
    assert_eq!(fired, m.timers);
    TestResult::passed()
}

#[test]
fn chains_of_rescalings_match_the_model() {
    QuickCheck::new().tests(40).quickcheck(run as fn(u8, Vec<Op>) -> TestResult);
}

#[test]
fn a_restore_refuses_snapshots_that_do_not_fit() {
    let mut c = Cluster::new(2);
    for k in 0..50 {
        let i = c.owner(k);
        let inst = &mut c.instances[i];
        inst.value.update(&mut inst.b, &k).unwrap();
    }
    let mut sources = Vec::new();
    for (n, inst) in c.instances.iter_mut().enumerate() {
        let storage: Arc<dyn CheckpointStorage> =
            Arc::new(LocalDirStorage::new(Arc::new(c.fs.clone()), format!("/refuse-{n}")).unwrap());
        let mut cp = Checkpointer::new(storage.clone(), CheckpointOptions::new()).unwrap();
        cp.checkpoint(1, &mut inst.b, &inst.op, false).unwrap();
        cp.wait(1).unwrap();
        sources.push(RestoreSource::Checkpoint { storage, id: 1 });
    }
    let fs = c.fs.clone();
    let restore = |maxp: u32, range: Option<KeyGroupRange>, sources: &[RestoreSource], dir: &str| {
        let b = KeyedBackend::builder(U64).max_parallelism(maxp).store_options(options(&fs));
        let b = match range {
            Some(r) => b.key_groups(r),
            None => b,
        };
        b.restore(dir, sources).map(|_| ())
    };
    let incompatible = |r: eddy::Result<()>| matches!(r, Err(Error::Misuse(Misuse::IncompatibleSnapshot { .. })));
    // Another max parallelism.
    assert!(incompatible(restore(32, None, &sources, "/x1")));
    // Key groups missing: only one of the two halves for the whole range.
    assert!(incompatible(restore(MAX_P, None, &sources[..1], "/x2")));
    // Overlapping key groups.
    let twice = [sources[0].clone(), sources[0].clone(), sources[1].clone()];
    assert!(incompatible(restore(MAX_P, None, &twice, "/x3")));
    // Snapshots of another job.
    let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), "/other").unwrap());
    let mut other = KeyedBackend::builder(U64)
        .job("other")
        .max_parallelism(MAX_P)
        .key_groups(range(2, 1))
        .store_options(options(&fs))
        .open("/other-store")
        .unwrap();
    let mut cp = Checkpointer::new(storage.clone(), CheckpointOptions::new()).unwrap();
    cp.checkpoint(1, &mut other, &OperatorStateBackend::new(), false).unwrap();
    cp.wait(1).unwrap();
    let mixed = [sources[0].clone(), RestoreSource::Checkpoint { storage, id: 1 }];
    let err = restore(MAX_P, None, &mixed, "/x4");
    assert!(matches!(&err, Err(Error::Misuse(Misuse::IncompatibleSnapshot { why })) if why.contains("different jobs")));
    // A parallelism above the max parallelism has no subtask ranges at all.
    assert!(MaxParallelism::new(MAX_P).unwrap().subtask_range(MAX_P + 1, 0).is_err());
    // Both halves into one backend work, and into each half again.
    restore(MAX_P, None, &sources, "/ok1").unwrap();
    restore(MAX_P, Some(range(4, 1)), &sources[..1], "/ok2").unwrap();
}

// ---- the key hash ----

/// The keys the key hash tests write, each with the value `key * 10`.
const HASHED_KEYS: std::ops::Range<i64> = -40..40;

/// A key hash of the tests' own: the key's low bits.
fn low_bits(k: &i64) -> i32 {
    *k as i32
}

/// Another one, under another name.
fn high_bits(k: &i64) -> i32 {
    (*k >> 32) as i32 ^ 0x5bd1_e995
}

fn i64_builder(fs: &FaultFs) -> KeyedBackendBuilder<I64> {
    KeyedBackend::builder(I64).max_parallelism(MAX_P).store_options(options(fs))
}

/// A checkpoint and a savepoint, under `root`, of a backend opened by `builder` holding
/// [`HASHED_KEYS`].
fn snapshots_of(fs: &FaultFs, builder: KeyedBackendBuilder<I64>, root: &str) -> [RestoreSource; 2] {
    let mut b = builder.open(format!("{root}/store")).unwrap();
    let v = b.state(ValueStateDescriptor::new("v", I64)).unwrap();
    for k in HASHED_KEYS {
        b.set_current_key(&k).unwrap();
        v.update(&mut b, &(k * 10)).unwrap();
    }
    let storage: Arc<dyn CheckpointStorage> =
        Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), format!("{root}/chk")).unwrap());
    let mut cp = Checkpointer::new(storage.clone(), CheckpointOptions::new()).unwrap();
    let op = OperatorStateBackend::new();
    cp.checkpoint(1, &mut b, &op, false).unwrap();
    cp.wait(1).unwrap();
    let dir = PathBuf::from(format!("{root}/sp"));
    cp.savepoint(2, Arc::new(fs.clone()), &dir, &mut b, &op).unwrap();
    cp.wait(2).unwrap();
    assert!(cp.close().is_empty());
    b.close().unwrap();
    [RestoreSource::Checkpoint { storage, id: 1 }, RestoreSource::Savepoint { fs: Arc::new(fs.clone()), dir }]
}

/// Every file under `root`, with its bytes.
fn files_under(fs: &FaultFs, root: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut names: Vec<PathBuf> = fs.file_names().into_iter().filter(|p| p.starts_with(root)).collect();
    names.sort();
    names.into_iter().map(|p| (p.clone(), fs.read(&p).unwrap())).collect()
}

/// Restores `source` with `builder` into `dir` and reads every key of [`HASHED_KEYS`] back.
fn restores_every_key(builder: KeyedBackendBuilder<I64>, dir: &str, source: &RestoreSource) {
    let (mut b, _) = builder.restore(dir, std::slice::from_ref(source)).unwrap();
    let v = b.state(ValueStateDescriptor::new("v", I64)).unwrap();
    for k in HASHED_KEYS {
        b.set_current_key(&k).unwrap();
        assert_eq!(v.get(&mut b).unwrap(), Some(k * 10), "key {k} from {source:?}");
    }
    b.close().unwrap();
}

/// Restoring `source` with `builder` is refused as a key hash mismatch naming both hashes.
fn refused_as_mismatch(
    builder: KeyedBackendBuilder<I64>,
    dir: &str,
    source: &RestoreSource,
    snapshot: &str,
    backend: &str,
) {
    match builder.restore(dir, std::slice::from_ref(source)) {
        Err(Error::Misuse(Misuse::KeyHashMismatch { snapshot: s, backend: b })) => {
            assert_eq!((s.as_str(), b.as_str()), (snapshot, backend), "{source:?}");
        }
        Err(e) => panic!("{source:?} into a backend hashing by {backend}: {e}"),
        Ok(_) => panic!("{source:?} of {snapshot} restored into a backend hashing by {backend}"),
    }
}

/// Snapshots record the hash that routed their keys, and a restore into a backend with
/// another hash is refused with both names instead of looking for every key in the wrong key
/// group; the snapshot is left as it was and restores with its own hash afterwards. Before,
/// snapshots did not record the hash, and such a restore succeeded with every key misrouted.
#[test]
fn a_restore_with_another_key_hash_is_refused_and_names_both() {
    let fs = FaultFs::new();
    let murmur = snapshots_of(&fs, i64_builder(&fs), "/murmur");
    let java = snapshots_of(&fs, i64_builder(&fs).java_key_hash(), "/java");
    let own = snapshots_of(&fs, i64_builder(&fs).key_hash("test.low-bits", low_bits), "/own");
    for (root, snapshots) in [("/murmur", &murmur), ("/java", &java), ("/own", &own)] {
        let before = files_under(&fs, root);
        for (i, source) in snapshots.iter().enumerate() {
            let dir = |what: &str| format!("{root}-{i}-{what}");
            let others: Vec<(KeyedBackendBuilder<I64>, &str)> = vec![
                (i64_builder(&fs), DEFAULT_KEY_HASH),
                (i64_builder(&fs).java_key_hash(), JAVA_KEY_HASH),
                (i64_builder(&fs).key_hash("test.low-bits", low_bits), "test.low-bits"),
                (i64_builder(&fs).key_hash("test.high-bits", high_bits), "test.high-bits"),
            ];
            let recorded = match root {
                "/murmur" => DEFAULT_KEY_HASH,
                "/java" => JAVA_KEY_HASH,
                _ => "test.low-bits",
            };
            for (n, (builder, name)) in others.into_iter().enumerate() {
                if name == recorded {
                    restores_every_key(builder, &dir("right"), source);
                } else {
                    refused_as_mismatch(builder, &dir(&format!("wrong{n}")), source, recorded, name);
                }
            }
        }
        // Refused restores read the snapshots and changed nothing in them; the right one
        // still restores every key.
        assert_eq!(files_under(&fs, root), before, "{root}");
        restores_every_key(
            match root {
                "/murmur" => i64_builder(&fs),
                "/java" => i64_builder(&fs).java_key_hash(),
                _ => i64_builder(&fs).key_hash("test.low-bits", low_bits),
            },
            &format!("{root}-again"),
            &snapshots[0],
        );
    }
    // The same function under another name is another hash: the name is what is compared.
    refused_as_mismatch(
        i64_builder(&fs).key_hash("test.low-bits-2", low_bits),
        "/renamed",
        &own[1],
        "test.low-bits",
        "test.low-bits-2",
    );
}

/// A name that is empty, or a built-in one given to a hash of the caller's, is refused before
/// anything is written: snapshots would name that hash wrongly.
#[test]
fn key_hash_names_that_are_empty_or_built_in_are_refused() {
    let fs = FaultFs::new();
    let sources = snapshots_of(&fs, i64_builder(&fs), "/good");
    let bad: Vec<(&str, KeyedBackendBuilder<I64>)> = vec![
        ("empty", i64_builder(&fs).key_hash("", low_bits)),
        ("the default's", i64_builder(&fs).key_hash(DEFAULT_KEY_HASH, low_bits)),
        ("Java's", i64_builder(&fs).key_hash(JAVA_KEY_HASH, low_bits)),
        // The last of java_key_hash and key_hash called wins, with its own name.
        ("Java's, after java_key_hash", i64_builder(&fs).java_key_hash().key_hash(JAVA_KEY_HASH, low_bits)),
    ];
    for (what, builder) in bad {
        let err = builder.open("/opened").err();
        assert!(matches!(err, Some(Error::Misuse(Misuse::InvalidOption { name: "key_hash", .. }))), "{what}: {err:?}");
        assert!(fs.file_names().iter().all(|p| !p.starts_with("/opened")), "{what}");
    }
    for (what, builder) in [
        ("empty", i64_builder(&fs).key_hash("", low_bits)),
        ("the default's", i64_builder(&fs).key_hash(DEFAULT_KEY_HASH, low_bits)),
        ("Java's", i64_builder(&fs).key_hash(JAVA_KEY_HASH, low_bits)),
    ] {
        let err = builder.restore("/restored", &sources).err();
        assert!(matches!(err, Some(Error::Misuse(Misuse::InvalidOption { name: "key_hash", .. }))), "{what}: {err:?}");
        assert!(fs.list(Path::new("/restored")).is_err(), "{what}: the directory was created");
    }
    // A hash of the caller's replaced by Java's takes Java's name.
    let java = snapshots_of(&fs, i64_builder(&fs).key_hash("test.low-bits", low_bits).java_key_hash(), "/java");
    refused_as_mismatch(i64_builder(&fs), "/java-restored", &java[0], JAVA_KEY_HASH, DEFAULT_KEY_HASH);
}

/// Checkpoint manifests of versions 1 and 2 and savepoints of version 1 do not name the hash
/// that routed their keys: they restore into a backend with any hash, unchecked, and that
/// backend's own snapshots then name its hash. Before, no snapshot named it.
#[test]
fn an_old_snapshot_that_names_no_key_hash_restores_and_the_next_snapshot_names_the_backends() {
    use spec_common::vector;
    let fs = FaultFs::new();
    let max_p = 4096;
    // The fixtures of `format-spec/vectors/`: checkpoint 42 (version 1) and 44 (version 2, with
    // a changelog file) over the two segment vectors, and savepoint 43 (version 1).
    for (file, name) in [
        ("segment-v1-zstd.seg", "shared/3f2a9c0d11e4b5a7-1-0000000002.seg"),
        ("segment-v1-small.seg", "shared/3f2a9c0d11e4b5a7-1-0000000001.seg"),
        ("changelog-v1.log", "shared/0123456789abcdef-1-log0000000003.log"),
    ] {
        fs.write_file(&Path::new("/fixtures").join(name), &vector(file)).unwrap();
    }
    let storage = LocalDirStorage::new(Arc::new(fs.clone()), "/fixtures").unwrap();
    storage.write_manifest(42, &vector("checkpoint-manifest-v1.bin")).unwrap();
    storage.write_manifest(44, &vector("checkpoint-manifest-v2.bin")).unwrap();
    fs.write_file(&Path::new("/fixture-sp").join(SAVEPOINT_FILE), &vector("savepoint-v1.sp")).unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(storage);
    let fixtures = [
        RestoreSource::Checkpoint { storage: storage.clone(), id: 42 },
        RestoreSource::Checkpoint { storage: storage.clone(), id: 44 },
        RestoreSource::Savepoint { fs: Arc::new(fs.clone()), dir: "/fixture-sp".into() },
    ];
    let own = |k: &u64| *k as i32;
    let builder = || KeyedBackend::builder(U64).max_parallelism(max_p).store_options(options(&fs));
    for (i, fixture) in fixtures.iter().enumerate() {
        for (what, b) in [("default", builder()), ("own", builder().key_hash("test.low-bits", own))] {
            let (b, _) = b.restore(format!("/from-{i}-{what}"), std::slice::from_ref(fixture)).unwrap();
            b.close().unwrap();
        }
        // Restored with a hash of its own, the backend's checkpoints and savepoints name it.
        let (mut b, _) = builder()
            .key_hash("test.low-bits", own)
            .restore(format!("/from-{i}"), std::slice::from_ref(fixture))
            .unwrap();
        let root = format!("/next-{i}");
        let next: Arc<dyn CheckpointStorage> = Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), &root).unwrap());
        let mut cp = Checkpointer::new(next.clone(), CheckpointOptions::new()).unwrap();
        let op = OperatorStateBackend::new();
        cp.checkpoint(50, &mut b, &op, false).unwrap();
        cp.wait(50).unwrap();
        let sp = PathBuf::from(format!("{root}-sp"));
        cp.savepoint(51, Arc::new(fs.clone()), &sp, &mut b, &op).unwrap();
        cp.wait(51).unwrap();
        assert!(cp.close().is_empty());
        b.close().unwrap();
        let manifest = next.read_manifest(50).unwrap();
        assert_eq!(u32::from_le_bytes(manifest[4..8].try_into().unwrap()), CHECKPOINT_VERSION);
        assert_eq!(CheckpointManifest::decode(&manifest).unwrap().meta.key_hash.as_deref(), Some("test.low-bits"));
        let savepoint = fs.read(&sp.join(SAVEPOINT_FILE)).unwrap();
        assert_eq!(u32::from_le_bytes(savepoint[4..8].try_into().unwrap()), SAVEPOINT_VERSION);
        assert_eq!(decode_all(&savepoint).unwrap().0.key_hash.as_deref(), Some("test.low-bits"));
        // So they are checked.
        for (n, source) in [
            RestoreSource::Checkpoint { storage: next, id: 50 },
            RestoreSource::Savepoint { fs: Arc::new(fs.clone()), dir: sp },
        ]
        .iter()
        .enumerate()
        {
            let err = builder().restore(format!("/next-{i}-{n}-default"), std::slice::from_ref(source)).err();
            assert!(
                matches!(&err, Some(Error::Misuse(Misuse::KeyHashMismatch { snapshot, backend }))
                    if snapshot == "test.low-bits" && backend == DEFAULT_KEY_HASH),
                "{err:?}"
            );
        }
    }
}
