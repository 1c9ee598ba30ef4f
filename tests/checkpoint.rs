//! Checkpoints, savepoints and restore against a model: whatever the writes, flushes and
//! compactions between them, restoring a snapshot gives back exactly the state at its
//! barrier, for every state kind, timers, TTL timestamps and operator and broadcast state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use eddy::checkpoint::{
    latest_checkpoint, verify_checkpoint, verify_savepoint, CheckpointOptions, CheckpointStorage, Checkpointer,
    LocalDirStorage, RestoreSource, SnapshotKind,
};
use eddy::codec::{Str, U32, U64};
use eddy::io::{FaultFs, FileSystem};
use eddy::keygroup::KeyGroupRange;
use eddy::state::{
    BroadcastStateDescriptor, KeyedBackend, ListState, ListStateDescriptor, ManualClock, MapState, MapStateDescriptor,
    OperatorStateBackend, Timer, TimerService, TtlConfig, ValueState, ValueStateDescriptor,
};
use eddy::store::StoreOptions;
use eddy::{Error, Incomplete, Misuse, SerializerPart};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

#[path = "support/hooked_storage.rs"]
mod hooked_storage;
use hooked_storage::{Hooked, StorageHooks};

const MAX_P: u32 = 16;

/// Everything a backend holds, as plain data.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    values: BTreeMap<u64, u64>,
    lists: BTreeMap<u64, Vec<u32>>,
    maps: BTreeMap<u64, BTreeMap<u32, String>>,
    timers: BTreeSet<(i64, u64)>,
    offsets: Vec<u64>,
    rules: BTreeMap<String, String>,
}

struct Handles {
    value: ValueState<U64>,
    list: ListState<U32>,
    map: MapState<U32, Str>,
    timers: TimerService,
}

fn register(b: &mut KeyedBackend<U64>) -> Handles {
    Handles {
        value: b.state(ValueStateDescriptor::new("value", U64)).unwrap(),
        list: b.state(ListStateDescriptor::new("list", U32)).unwrap(),
        map: b.state(MapStateDescriptor::new("map", U32, Str)).unwrap(),
        timers: b.timer_service("timers").unwrap(),
    }
}

fn rules() -> BroadcastStateDescriptor<Str, Str> {
    BroadcastStateDescriptor::new("rules", Str, Str)
}

fn options(fs: &FaultFs, changelog: bool) -> StoreOptions {
    StoreOptions::new().file_system(Arc::new(fs.clone())).memory_budget(256 << 10).changelog(changelog)
}

fn builder(fs: &FaultFs, range: Option<KeyGroupRange>) -> eddy::state::KeyedBackendBuilder<U64> {
    builder_with(fs, range, false)
}

fn builder_with(fs: &FaultFs, range: Option<KeyGroupRange>, changelog: bool) -> eddy::state::KeyedBackendBuilder<U64> {
    let b = KeyedBackend::builder(U64).max_parallelism(MAX_P).store_options(options(fs, changelog));
    match range {
        Some(r) => b.key_groups(r),
        None => b,
    }
}

/// Reads everything back from a backend and its operator state.
fn dump(b: &mut KeyedBackend<U64>, h: &Handles, op: &mut OperatorStateBackend) -> Model {
    let mut m = Model::default();
    for k in b.keys(&h.value).unwrap() {
        b.set_current_key(&k).unwrap();
        m.values.insert(k, h.value.get(b).unwrap().unwrap());
    }
    for k in b.keys(&h.list).unwrap() {
        b.set_current_key(&k).unwrap();
        m.lists.insert(k, h.list.get_vec(b).unwrap());
    }
    for k in b.keys(&h.map).unwrap() {
        b.set_current_key(&k).unwrap();
        let entries: BTreeMap<u32, String> = h.map.iter(b).unwrap().collect::<eddy::Result<_>>().unwrap();
        m.maps.insert(k, entries);
    }
    let mut fired = Vec::new();
    h.timers
        .advance_watermark(b, i64::MAX, |_, t: Timer<u64, ()>| {
            fired.push((t.timestamp, t.key));
            Ok(())
        })
        .unwrap();
    m.timers = fired.into_iter().collect();
    m.offsets = op.list_state("offsets", U64).unwrap().get().to_vec();
    m.rules = op.broadcast_state(&rules()).unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    m
}

#[derive(Clone, Debug)]
enum Op {
    Put(u64, u64),
    Append(u64, u32),
    MapPut(u64, u32, u8),
    MapRemove(u64, u32),
    Clear(u64),
    Timer(u64, i64),
    Offset(u64),
    Rule(u8, u8),
    Flush,
    Compact,
    Checkpoint { full: bool },
    Savepoint,
    Restore,
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let k = u64::arbitrary(g) % 40;
        match u8::arbitrary(g) % 24 {
            0..=4 => Op::Put(k, u64::arbitrary(g)),
            5..=7 => Op::Append(k, u32::arbitrary(g)),
            8..=10 => Op::MapPut(k, u32::arbitrary(g) % 5, u8::arbitrary(g)),
            11 => Op::MapRemove(k, u32::arbitrary(g) % 5),
            12 => Op::Clear(k),
            13 => Op::Timer(k, i64::from(u8::arbitrary(g))),
            14 => Op::Offset(u64::arbitrary(g)),
            15 => Op::Rule(u8::arbitrary(g) % 4, u8::arbitrary(g)),
            16 => Op::Flush,
            17 => Op::Compact,
            18..=20 => Op::Checkpoint { full: bool::arbitrary(g) && bool::arbitrary(g) },
            21 => Op::Savepoint,
            _ => Op::Restore,
        }
    }
}

fn apply(b: &mut KeyedBackend<U64>, h: &Handles, op: &mut OperatorStateBackend, m: &mut Model, o: &Op) {
    match *o {
        Op::Put(k, v) => {
            b.set_current_key(&k).unwrap();
            h.value.update(b, &v).unwrap();
            m.values.insert(k, v);
        }
        Op::Append(k, v) => {
            b.set_current_key(&k).unwrap();
            h.list.add(b, &v).unwrap();
            m.lists.entry(k).or_default().push(v);
        }
        Op::MapPut(k, uk, v) => {
            b.set_current_key(&k).unwrap();
            h.map.put(b, &uk, &v.to_string()).unwrap();
            m.maps.entry(k).or_default().insert(uk, v.to_string());
        }
        Op::MapRemove(k, uk) => {
            b.set_current_key(&k).unwrap();
            h.map.remove(b, &uk).unwrap();
            if let Some(e) = m.maps.get_mut(&k) {
                e.remove(&uk);
                if e.is_empty() {
                    m.maps.remove(&k);
                }
            }
        }
        Op::Clear(k) => {
            b.set_current_key(&k).unwrap();
            h.value.clear(b).unwrap();
            h.list.clear(b).unwrap();
            h.map.clear(b).unwrap();
            m.values.remove(&k);
            m.lists.remove(&k);
            m.maps.remove(&k);
        }
        Op::Timer(k, ts) => {
            b.set_current_key(&k).unwrap();
            h.timers.register_event_time(b, &(), ts).unwrap();
            m.timers.insert((ts, k));
        }
        Op::Offset(v) => {
            op.list_state("offsets", U64).unwrap().add(v);
            m.offsets.push(v);
        }
        Op::Rule(k, v) => {
            op.broadcast_state(&rules()).unwrap().put(k.to_string(), v.to_string());
            m.rules.insert(k.to_string(), v.to_string());
        }
        Op::Flush => b.store().flush().unwrap(),
        Op::Compact => b.store().compact().unwrap(),
        _ => unreachable!(),
    }
}

struct Harness {
    fs: FaultFs,
    storage: Arc<dyn CheckpointStorage>,
    cp: Checkpointer,
    b: KeyedBackend<U64>,
    h: Handles,
    op: OperatorStateBackend,
    model: Model,
    /// The model at each completed checkpoint and savepoint.
    snapshots: Vec<(RestoreSource, Model)>,
    next_id: u64,
    next_dir: u64,
    /// Whether the backends keep a changelog.
    changelog: bool,
}

impl Harness {
    fn new(opts: CheckpointOptions) -> Self {
        Self::with_changelog(opts, false)
    }

    fn with_changelog(opts: CheckpointOptions, changelog: bool) -> Self {
        let fs = FaultFs::new();
        let storage: Arc<dyn CheckpointStorage> =
            Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), "/checkpoints").unwrap());
        Self::with_storage(fs, storage, opts, changelog)
    }

    fn with_storage(
        fs: FaultFs,
        storage: Arc<dyn CheckpointStorage>,
        opts: CheckpointOptions,
        changelog: bool,
    ) -> Self {
        let cp = Checkpointer::new(storage.clone(), opts).unwrap();
        let mut b = builder_with(&fs, None, changelog).open("/store-0").unwrap();
        let h = register(&mut b);
        Harness {
            fs,
            storage,
            cp,
            b,
            h,
            op: OperatorStateBackend::new(),
            model: Model::default(),
            snapshots: Vec::new(),
            next_id: 1,
            next_dir: 1,
            changelog,
        }
    }

    fn checkpoint(&mut self, full: bool) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.cp.checkpoint(id, &mut self.b, &self.op, full).unwrap();
        let info = self.cp.wait(id).unwrap();
        assert_eq!(info.kind, if full { SnapshotKind::Full } else { SnapshotKind::Incremental });
        self.snapshots.push((RestoreSource::Checkpoint { storage: self.storage.clone(), id }, self.model.clone()));
        id
    }

    fn savepoint(&mut self) -> PathBuf {
        let id = self.next_id;
        self.next_id += 1;
        let dir = PathBuf::from(format!("/savepoints/sp-{id}"));
        self.cp.savepoint(id, Arc::new(self.fs.clone()), &dir, &mut self.b, &self.op).unwrap();
        self.cp.wait(id).unwrap();
        self.snapshots
            .push((RestoreSource::Savepoint { fs: Arc::new(self.fs.clone()), dir: dir.clone() }, self.model.clone()));
        dir
    }

    /// Restores the newest snapshot that is still retained (savepoints always are) and checks
    /// it against the model of its barrier.
    fn restore(&mut self) {
        let retained = self.cp.retained();
        let Some((source, model)) = self
            .snapshots
            .iter()
            .rev()
            .find(|(s, _)| match s {
                RestoreSource::Checkpoint { id, .. } => retained.contains(id),
                RestoreSource::Savepoint { .. } => true,
            })
            .cloned()
        else {
            return;
        };
        let dir = format!("/store-{}", self.next_dir);
        self.next_dir += 1;
        let (mut b, restored) =
            builder_with(&self.fs, None, self.changelog).restore(&dir, std::slice::from_ref(&source)).unwrap();
        let h = register(&mut b);
        let mut op = OperatorStateBackend::restore(restored.operator_states[0].clone());
        let got = dump(&mut b, &h, &mut op);
        assert_eq!(got, model, "restored from {source:?}");
        // `dump` fired the timers; restore once more to carry on with the timers in place.
        drop(b);
        let dir = format!("/store-{}", self.next_dir);
        self.next_dir += 1;
        let (mut b, restored) = builder_with(&self.fs, None, self.changelog).restore(&dir, &[source]).unwrap();
        self.h = register(&mut b);
        self.b = b;
        self.op = OperatorStateBackend::restore(restored.operator_states[0].clone());
        self.model = model;
    }
}

fn run(ops: Vec<Op>) -> TestResult {
    run_with(ops, None)
}

/// `materialize_after`: with a changelog, stored after this many bytes of it.
fn run_with(ops: Vec<Op>, materialize_after: Option<u64>) -> TestResult {
    let mut opts = CheckpointOptions::new().retain(2);
    if let Some(bytes) = materialize_after {
        opts = opts.materialize_after(bytes);
    }
    let mut t = Harness::with_changelog(opts, materialize_after.is_some());
    for o in &ops {
        match o {
            Op::Checkpoint { full } => {
                t.checkpoint(*full);
            }
            Op::Savepoint => {
                t.savepoint();
            }
            Op::Restore => t.restore(),
            o => apply(&mut t.b, &t.h, &mut t.op, &mut t.model, o),
        }
    }
    t.checkpoint(false);
    t.restore();
    // Shared files are exactly those the retained checkpoints name (once the removals that
    // follow a checkpoint are done).
    t.cp.settle().unwrap();
    let mut named = BTreeSet::new();
    for id in t.cp.retained() {
        assert!(verify_checkpoint(t.storage.as_ref(), id).is_empty());
        let bytes = t.storage.read_manifest(id).unwrap();
        let m = eddy::format::checkpoint::CheckpointManifest::decode(&bytes).unwrap();
        named.extend(m.segments.into_iter().map(|s| s.file));
        named.extend(m.logs.into_iter().map(|l| l.file));
    }
    let stored: BTreeSet<String> = t.storage.shared_files().unwrap().into_iter().collect();
    if t.changelog {
        // A materialization that follows the last checkpoint stores segments that only the
        // next checkpoint names.
        assert!(named.is_subset(&stored));
        assert!(stored.difference(&named).all(|f| f.ends_with(".seg")), "{stored:?} {named:?}");
    } else {
        assert_eq!(stored, named);
    }
    TestResult::passed()
}

#[test]
fn restores_match_the_model() {
    QuickCheck::new().tests(60).quickcheck(run as fn(Vec<Op>) -> TestResult);
}

#[test]
fn restores_match_the_model_with_a_changelog() {
    fn often(ops: Vec<Op>) -> TestResult {
        run_with(ops, Some(300))
    }
    fn seldom(ops: Vec<Op>) -> TestResult {
        run_with(ops, Some(64 << 20))
    }
    QuickCheck::new().tests(40).quickcheck(often as fn(Vec<Op>) -> TestResult);
    QuickCheck::new().tests(40).quickcheck(seldom as fn(Vec<Op>) -> TestResult);
}

#[test]
fn restore_yields_the_state_at_the_barrier_not_later_writes() {
    let mut t = Harness::new(CheckpointOptions::new());
    for k in 0..200 {
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k));
    }
    t.b.set_current_key(&1).unwrap();
    t.cp.checkpoint(1, &mut t.b, &t.op, false).unwrap();
    // Written after the barrier, while the checkpoint's asynchronous part may still run.
    let before = t.model.clone();
    for k in 0..200 {
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k + 1000));
    }
    apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Flush);
    t.cp.wait(1).unwrap();
    t.snapshots.push((RestoreSource::Checkpoint { storage: t.storage.clone(), id: 1 }, before));
    t.restore();
}

#[test]
fn incremental_checkpoints_store_only_new_segments_and_drop_unreferenced_files() {
    let mut t = Harness::new(CheckpointOptions::new());
    for k in 0..2000 {
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k));
    }
    // Settled: no flush or compaction runs while the checkpoints below are taken.
    t.b.store().flush().unwrap();
    t.b.store().wait_for_background().unwrap();
    t.cp.checkpoint(1, &mut t.b, &t.op, false).unwrap();
    let first = t.cp.wait(1).unwrap();
    assert!(first.new_files >= 1);
    assert_eq!(first.new_files, first.files);
    apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(7, 7));
    t.cp.checkpoint(2, &mut t.b, &t.op, false).unwrap();
    let second = t.cp.wait(2).unwrap();
    assert_eq!(second.new_files, 1, "only the region written since: {second:?}");
    assert_eq!(second.files, first.files + 1);
    assert_eq!(t.cp.retained(), vec![2]);
    // The new segment may have started a compaction; once it is installed and stored, a
    // checkpoint with nothing new stores nothing.
    t.b.store().wait_for_background().unwrap();
    t.cp.checkpoint(3, &mut t.b, &t.op, false).unwrap();
    t.cp.wait(3).unwrap();
    t.cp.checkpoint(4, &mut t.b, &t.op, false).unwrap();
    assert_eq!(t.cp.wait(4).unwrap().new_files, 0);
    // A full one stores everything anew; the files only older checkpoints named are gone.
    t.cp.checkpoint(5, &mut t.b, &t.op, true).unwrap();
    let full = t.cp.wait(5).unwrap();
    assert_eq!(full.new_files, full.files);
    t.cp.settle().unwrap();
    let named: BTreeSet<String> = t.storage.shared_files().unwrap().into_iter().collect();
    assert_eq!(named.len(), full.files);
    assert!(named.iter().all(|n| n.contains("-full5")), "{named:?}");
    t.snapshots.push((RestoreSource::Checkpoint { storage: t.storage.clone(), id: 5 }, t.model.clone()));
    t.restore();
}

fn manifest(t: &Harness, id: u64) -> eddy::format::checkpoint::CheckpointManifest {
    eddy::format::checkpoint::CheckpointManifest::decode(&t.storage.read_manifest(id).unwrap()).unwrap()
}

/// Flips a bit of the last byte of the stored file `name` (durably); its path.
fn damage_last_byte(t: &Harness, name: &str) -> std::path::PathBuf {
    let path = t.storage.describe(name);
    let mut bytes = t.fs.open(&path).unwrap().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let mut f = t.fs.create(&path).unwrap();
    f.append(&bytes).unwrap();
    f.sync().unwrap();
    path
}

#[test]
fn with_a_changelog_checkpoints_store_the_log_and_the_state_now_and_then() {
    let mut t = Harness::with_changelog(CheckpointOptions::new().retain(3).materialize_after(20_000), true);
    for k in 0..2000 {
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k));
    }
    // The first checkpoint stores the state: there is nothing to start a chain from.
    let first = t.checkpoint(false);
    let base = manifest(&t, first);
    assert!(base.logs.is_empty() && !base.segments.is_empty());
    // The next ones store only what was logged since, and name the same segments.
    let mut logs = 0;
    for round in 0..3 {
        for k in 0..50 {
            apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, round));
        }
        let id = t.checkpoint(false);
        let m = manifest(&t, id);
        logs += 1;
        assert_eq!(m.segments, base.segments);
        assert_eq!(m.logs.len(), logs, "{m:?}");
        t.cp.wait_all();
    }
    // Enough log: the next checkpoint still completes from the chain, then stores the state,
    // and the one after starts from it.
    for k in 0..2000 {
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, 9));
    }
    let id = t.checkpoint(false);
    assert_eq!(manifest(&t, id).logs.len(), logs + 1);
    // The state is stored in the background; until that is done, checkpoints still name the
    // chain.
    t.cp.settle().unwrap();
    apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(1, 10));
    let id = t.checkpoint(false);
    let m = manifest(&t, id);
    assert_eq!(m.logs.len(), 1, "{m:?}");
    assert_ne!(m.segments, base.segments);
    assert!(verify_checkpoint(t.storage.as_ref(), id).is_empty());
    // Nothing written: nothing logged.
    let id = t.checkpoint(false);
    assert_eq!(manifest(&t, id).logs.len(), 1);
    // A restored backend starts its own chain by storing its state.
    t.restore();
    let id = t.checkpoint(false);
    assert!(manifest(&t, id).logs.is_empty());
    apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(3, 3));
    let id = t.checkpoint(false);
    assert_eq!(manifest(&t, id).logs.len(), 1);
    t.restore();
}

/// The shared files of a subsumed checkpoint are removed in the background. A checkpoint that
/// stores one of them again under the same name (here: backend A's segments, subsumed by a
/// checkpoint of backend B, then needed by A's next checkpoint) must not lose it to the
/// removal still under way.
#[test]
fn a_file_stored_again_while_its_removal_is_pending_survives_it() {
    let mut t = Harness::new(CheckpointOptions::new().retain(1));
    for round in 0..20 {
        for k in 0..500 {
            apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k + round));
        }
        t.b.store().flush().unwrap();
        t.b.store().wait_for_background().unwrap();
        let a = t.checkpoint(false);
        let mut other = builder(&t.fs, None).open(format!("/store-other-{round}")).unwrap();
        let h = register(&mut other);
        other.set_current_key(&1).unwrap();
        h.value.update(&mut other, &1).unwrap();
        other.store().flush().unwrap();
        let b = t.next_id;
        t.next_id += 1;
        t.cp.checkpoint(b, &mut other, &t.op, false).unwrap();
        t.cp.wait(b).unwrap();
        // Backend A's files are about to be removed; its next checkpoint needs them again.
        let again = t.checkpoint(false);
        t.cp.settle().unwrap();
        assert!(verify_checkpoint(t.storage.as_ref(), again).is_empty(), "round {round} after {a}");
    }
    t.restore();
}

/// Regression: a checkpoint that stores the state while a materialization of the same store
/// still runs (here after key groups were dropped, which the log cannot describe) must not put
/// files under the names the materialization is putting, nor lose them to its cleanup.
#[test]
fn storing_the_state_while_a_materialization_runs_keeps_every_named_file() {
    for round in 0..20u64 {
        let mut t = Harness::with_changelog(CheckpointOptions::new().retain(2).materialize_after(1), true);
        for k in 0..300 {
            apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k + round));
        }
        t.checkpoint(false);
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(1, 1));
        // Completes from the chain, then a materialization starts in the background.
        t.checkpoint(false);
        t.b.store().drop_key_groups(KeyGroupRange::new(15, 15).unwrap()).unwrap();
        let id = t.next_id;
        t.next_id += 1;
        t.cp.checkpoint(id, &mut t.b, &t.op, false).unwrap();
        t.cp.wait(id).unwrap();
        assert!(verify_checkpoint(t.storage.as_ref(), id).is_empty(), "round {round}");
        t.cp.settle().unwrap();
        assert!(verify_checkpoint(t.storage.as_ref(), id).is_empty(), "round {round}");
    }
}

#[test]
fn a_damaged_changelog_file_is_a_typed_error_and_verify_names_it() {
    let mut t = Harness::with_changelog(CheckpointOptions::new(), true);
    apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(1, 1));
    t.checkpoint(false);
    apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(2, 2));
    let id = t.checkpoint(false);
    let path = damage_last_byte(&t, &manifest(&t, id).logs[0].file);
    let problems = verify_checkpoint(t.storage.as_ref(), id);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].file, path);
    let source = RestoreSource::Checkpoint { storage: t.storage.clone(), id };
    let err = builder_with(&t.fs, None, true).restore("/store-x", &[source]).unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err:?}");
}

/// A restore replays a changelog in batches on two threads (one verifies and decodes, the
/// other applies). Writes of one key spread over many batches and several files come back in
/// the order they were made, and damage far into the log, after thousands of records were
/// applied, is still a typed error.
#[test]
fn a_long_changelog_replays_in_order_across_batches_and_files_and_late_damage_is_caught() {
    let mut t = Harness::with_changelog(CheckpointOptions::new().retain(5).materialize_after(u64::MAX), true);
    apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(0, 0));
    t.checkpoint(false);
    let mut id = 0;
    for round in 0..3u64 {
        for i in 0..4000u64 {
            let k = i % 37;
            let op = match i % 5 {
                0 | 1 => Op::Put(k, round * 10_000 + i),
                2 => Op::Append(k, i as u32),
                3 => Op::MapPut(k, (i % 4) as u32, i as u8),
                _ => Op::MapRemove(k, ((i + 1) % 4) as u32),
            };
            apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &op);
        }
        id = t.checkpoint(false);
    }
    let logs = manifest(&t, id).logs;
    assert_eq!(logs.len(), 3, "{logs:?}");
    t.restore();
    // Damage the last record of the last file: every batch before it was applied by then.
    let path = damage_last_byte(&t, &logs[2].file);
    let source = RestoreSource::Checkpoint { storage: t.storage.clone(), id };
    let err = builder_with(&t.fs, None, true).restore("/store-damaged", &[source]).unwrap_err();
    assert!(matches!(err, Error::Corrupted { ref file, .. } if *file == path), "{err:?}");
}

#[test]
fn the_first_checkpoint_after_a_restore_from_the_same_storage_is_incremental() {
    let mut t = Harness::new(CheckpointOptions::new());
    for k in 0..500 {
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k));
    }
    let id = t.checkpoint(false);
    let files = t.cp.wait_all();
    assert!(files.is_empty());
    t.restore();
    // A compaction of the restored segments, if one ran, makes a new file; nothing else does.
    t.b.store().wait_for_background().unwrap();
    let compactions = t.b.store().stats().compactions as usize;
    t.cp.settle().unwrap();
    let before = t.storage.shared_files().unwrap().len();
    t.cp.checkpoint(id + 1, &mut t.b, &t.op, false).unwrap();
    let info = t.cp.wait(id + 1).unwrap();
    assert!(info.new_files <= compactions, "{info:?}");
    t.cp.settle().unwrap();
    if compactions == 0 {
        assert_eq!(t.storage.shared_files().unwrap().len(), before);
    }
}

#[test]
fn savepoints_are_relocatable_and_restores_leave_them_untouched() {
    let mut t = Harness::new(CheckpointOptions::new());
    for k in 0..300 {
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k * 3));
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Append(k, k as u32));
    }
    apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Rule(1, 2));
    let dir = t.savepoint();
    assert!(verify_savepoint(&t.fs, &dir).is_empty());
    let moved = PathBuf::from("/elsewhere/sp");
    t.fs.create_dir_all(&moved).unwrap();
    t.fs.rename(&dir.join("SAVEPOINT"), &moved.join("SAVEPOINT")).unwrap();
    let before = t.fs.read(&moved.join("SAVEPOINT")).unwrap();
    let source = RestoreSource::Savepoint { fs: Arc::new(t.fs.clone()), dir: moved.clone() };
    t.snapshots.push((source, t.model.clone()));
    t.restore();
    // The first checkpoint after it does not name the savepoint's file either.
    let id = t.checkpoint(false);
    assert_eq!(t.fs.read(&moved.join("SAVEPOINT")).unwrap(), before);
    assert_eq!(t.fs.list(&moved).unwrap(), vec!["SAVEPOINT".to_string()]);
    assert!(verify_checkpoint(t.storage.as_ref(), id).is_empty());
}

/// A savepoint's key groups are restored as two segments, one half each, which together are
/// the base of the store: whichever half holds more, no compaction merges them for want of
/// anything newer.
#[test]
fn the_halves_a_savepoint_is_restored_into_are_not_compacted_together() {
    let max_p = eddy::keygroup::MaxParallelism::new(MAX_P).unwrap();
    let low = |k: u64| max_p.key_group(eddy::keygroup::hash_bytes(&k.to_be_bytes())) < MAX_P as u16 / 2;
    for heavy_low in [true, false] {
        let mut t = Harness::new(CheckpointOptions::new());
        for k in 0..600 {
            let times = if low(k) == heavy_low { 4 } else { 1 };
            for i in 0..times {
                apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Append(k, i));
            }
        }
        t.savepoint();
        t.restore();
        t.b.store().wait_for_background().unwrap();
        let stats = t.b.store().stats();
        assert_eq!((stats.segments, stats.compactions), (2, 0), "heavy low half: {heavy_low}, {stats:?}");
    }
}

#[test]
fn savepoints_leave_out_expired_entries_of_states_that_ask_for_it() {
    let fs = FaultFs::new();
    let clock = ManualClock::new(0);
    let open = |dir: &str| {
        KeyedBackend::builder(U64)
            .max_parallelism(MAX_P)
            .store_options(options(&fs, false))
            .clock(Arc::new(clock.clone()))
            .open(dir)
            .unwrap()
    };
    let ttl = TtlConfig::new(Duration::from_millis(100)).cleanup_full_snapshot();
    let mut b = open("/s");
    let v = b.state(ValueStateDescriptor::new("v", U64).ttl(ttl)).unwrap();
    // The same TTL without cleanup in full snapshots: nothing is left out.
    let kept = ValueStateDescriptor::new("kept", U64).ttl(TtlConfig::new(Duration::from_millis(100)));
    let kept = b.state(kept).unwrap();
    for k in 0..50u64 {
        clock.set(k as i64 * 10);
        b.set_current_key(&k).unwrap();
        v.update(&mut b, &k).unwrap();
        kept.update(&mut b, &k).unwrap();
    }
    clock.set(545); // written at 440 or before: expired
    let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), "/c").unwrap());
    let mut cp = Checkpointer::new(storage, CheckpointOptions::new()).unwrap();
    cp.savepoint(1, Arc::new(fs.clone()), "/sp", &mut b, &OperatorStateBackend::new()).unwrap();
    cp.wait(1).unwrap();
    let bytes = fs.read(Path::new("/sp/SAVEPOINT")).unwrap();
    let (_, records) = eddy::format::savepoint::decode_all(&bytes).unwrap();
    assert_eq!(records.len(), 50 + 5, "all of `kept`, and keys 45..=49 of `v`");
}

#[test]
fn restore_checks_the_snapshot_against_the_backend() {
    let mut t = Harness::new(CheckpointOptions::new());
    apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(1, 1));
    let id = t.checkpoint(false);
    let source = RestoreSource::Checkpoint { storage: t.storage.clone(), id };
    let opts = options(&t.fs, false);
    let err = KeyedBackend::builder(U64)
        .max_parallelism(32)
        .store_options(opts.clone())
        .restore("/x1", std::slice::from_ref(&source));
    assert!(matches!(err, Err(Error::Misuse(Misuse::IncompatibleSnapshot { .. }))), "{err:?}");
    let err = KeyedBackend::builder(U32)
        .max_parallelism(MAX_P)
        .store_options(opts.clone())
        .restore("/x2", std::slice::from_ref(&source));
    assert!(
        matches!(&err, Err(Error::IncompatibleSerializer(i)) if i.state.is_none() && i.part == SerializerPart::Key),
        "{err:?}"
    );
    // A state registered again with another type is refused.
    let (mut b, _) = builder(&t.fs, None).restore("/x3", std::slice::from_ref(&source)).unwrap();
    let err = b.state(ValueStateDescriptor::new("value", U32));
    assert!(
        matches!(&err, Err(Error::IncompatibleSerializer(i)) if i.state.as_deref() == Some("value") && i.part == SerializerPart::Value),
        "{err:?}"
    );
    // The same snapshot twice holds every key group twice.
    let err = builder(&t.fs, None).restore("/x4", &[source.clone(), source.clone()]);
    assert!(matches!(err, Err(Error::Misuse(Misuse::IncompatibleSnapshot { .. }))), "{err:?}");
    // A store directory that is not empty is refused.
    let err = builder(&t.fs, None).restore("/x3", &[source]);
    assert!(matches!(err, Err(Error::Misuse(Misuse::NotEmpty))), "{err:?}");
}

#[test]
fn misuse_of_the_checkpointer_is_refused() {
    let mut t = Harness::new(CheckpointOptions::new().max_in_flight(1));
    apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(1, 1));
    t.cp.checkpoint(5, &mut t.b, &t.op, false).unwrap();
    let err = t.cp.checkpoint(6, &mut t.b, &t.op, false);
    // Either refused as one too many, or the first had finished already.
    if let Err(e) = err {
        assert!(matches!(e, Error::Misuse(Misuse::TooManyInFlight { limit: 1 })), "{e:?}");
    }
    t.cp.wait_all();
    let err = t.cp.checkpoint(3, &mut t.b, &t.op, false).unwrap_err();
    assert!(matches!(err, Error::Misuse(Misuse::InvalidOption { .. })), "{err:?}");
    assert!(matches!(t.cp.wait(99), Err(Error::Misuse(Misuse::UnknownCheckpoint { id: 99 }))));
    assert!(Checkpointer::new(t.storage.clone(), CheckpointOptions::new().retain(0)).is_err());
}

#[test]
fn an_aborted_checkpoint_leaves_nothing_behind() {
    let mut t = Harness::new(CheckpointOptions::new());
    for k in 0..3000 {
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k));
    }
    let id = t.checkpoint(false);
    t.cp.settle().unwrap();
    let shared = t.storage.shared_files().unwrap();
    for k in 0..3000 {
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k + 1));
    }
    t.cp.checkpoint(id + 1, &mut t.b, &t.op, false).unwrap();
    t.cp.abort(id + 1);
    match t.cp.wait(id + 1) {
        Err(Error::Aborted { id: a }) => {
            assert_eq!(a, id + 1);
            assert_eq!(t.storage.shared_files().unwrap(), shared);
            assert_eq!(t.storage.manifests().unwrap(), vec![id]);
        }
        // It may have completed before the abort was seen.
        Ok(_) => assert_eq!(t.storage.manifests().unwrap(), vec![id + 1]),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn rescaling_from_two_checkpoints_to_one_backend() {
    rescale(false);
}

/// With a changelog, the second checkpoint of each half names the log of its updates, which a
/// restore replays for the key groups it keeps.
#[test]
fn rescaling_from_two_checkpoints_with_changelogs_to_one_backend_and_back() {
    rescale(true);
}

fn rescale(changelog: bool) {
    let fs = FaultFs::new();
    let halves = [KeyGroupRange::new(0, 7).unwrap(), KeyGroupRange::new(8, 15).unwrap()];
    let mut sources = Vec::new();
    let mut model = BTreeMap::new();
    let mut second = BTreeMap::new();
    for (i, range) in halves.iter().enumerate() {
        let storage: Arc<dyn CheckpointStorage> =
            Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), format!("/c{i}")).unwrap());
        let mut cp = Checkpointer::new(storage.clone(), CheckpointOptions::new()).unwrap();
        let mut b = builder_with(&fs, Some(*range), changelog).open(format!("/s{i}")).unwrap();
        let h = register(&mut b);
        for round in 1..=2u64 {
            for k in (0..400u64).filter(|k| round == 1 || k % 3 == 0) {
                if b.set_current_key(&k).is_ok() {
                    h.value.update(&mut b, &(k * 2 + round)).unwrap();
                    model.insert(k, k * 2 + round);
                    if i == 1 {
                        second.insert(k, k * 2 + round);
                    }
                }
            }
            cp.checkpoint(round, &mut b, &OperatorStateBackend::new(), false).unwrap();
            cp.wait(round).unwrap();
        }
        let m = eddy::format::checkpoint::CheckpointManifest::decode(&storage.read_manifest(2).unwrap()).unwrap();
        assert_eq!(m.logs.len(), usize::from(changelog));
        sources.push(RestoreSource::Checkpoint { storage, id: 2 });
    }
    let (mut b, restored) = builder(&fs, None).restore("/merged", &sources).unwrap();
    assert_eq!(restored.operator_states.len(), 2);
    let h = register(&mut b);
    let mut op = OperatorStateBackend::new();
    assert_eq!(dump(&mut b, &h, &mut op).values, model);
    // And back out to one half: only its key groups are visible.
    let (mut b, _) = builder(&fs, Some(halves[1])).restore("/half", &sources[1..]).unwrap();
    let h = register(&mut b);
    assert_eq!(dump(&mut b, &h, &mut op).values, second);
    assert!(!second.is_empty());
    // Scaled out from the merged backend's own checkpoint: each half sees its keys.
    if changelog {
        let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), "/cm").unwrap());
        let (mut merged, _) = builder_with(&fs, None, true).restore("/merged-2", &sources).unwrap();
        let h = register(&mut merged);
        let mut cp = Checkpointer::new(storage.clone(), CheckpointOptions::new()).unwrap();
        cp.checkpoint(1, &mut merged, &OperatorStateBackend::new(), false).unwrap();
        cp.wait(1).unwrap();
        merged.set_current_key(&9).unwrap();
        h.value.update(&mut merged, &9999).unwrap();
        model.insert(9, 9999);
        merged.set_current_key(&12).unwrap();
        h.value.clear(&mut merged).unwrap();
        model.remove(&12);
        cp.checkpoint(2, &mut merged, &OperatorStateBackend::new(), false).unwrap();
        cp.wait(2).unwrap();
        let source = RestoreSource::Checkpoint { storage, id: 2 };
        let mut seen = BTreeMap::new();
        for (i, half) in halves.iter().enumerate() {
            let (mut b, _) =
                builder(&fs, Some(*half)).restore(format!("/out{i}"), std::slice::from_ref(&source)).unwrap();
            let h = register(&mut b);
            seen.extend(dump(&mut b, &h, &mut op).values);
        }
        assert_eq!(seen, model);
    }
}

#[test]
fn ttl_timestamps_survive_a_restore() {
    let fs = FaultFs::new();
    let clock = ManualClock::new(1_000);
    let builder = || {
        KeyedBackend::builder(U64)
            .max_parallelism(MAX_P)
            .store_options(options(&fs, false))
            .clock(Arc::new(clock.clone()))
    };
    let ttl = TtlConfig::new(Duration::from_millis(100));
    let mut b = builder().open("/ttl").unwrap();
    let v = b.state(ValueStateDescriptor::new("v", U64).ttl(ttl)).unwrap();
    let l = b.state(ListStateDescriptor::new("l", U64).ttl(ttl)).unwrap();
    b.set_current_key(&1).unwrap();
    v.update(&mut b, &1).unwrap();
    l.add(&mut b, &10).unwrap();
    clock.set(1_050);
    l.add(&mut b, &11).unwrap();
    let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), "/c").unwrap());
    let mut cp = Checkpointer::new(storage.clone(), CheckpointOptions::new()).unwrap();
    cp.checkpoint(1, &mut b, &OperatorStateBackend::new(), false).unwrap();
    cp.wait(1).unwrap();
    drop(b);
    clock.set(1_099);
    let source = [RestoreSource::Checkpoint { storage, id: 1 }];
    let (mut b, _) = builder().restore("/ttl-1", &source).unwrap();
    let v = b.state(ValueStateDescriptor::new("v", U64).ttl(ttl)).unwrap();
    let l = b.state(ListStateDescriptor::new("l", U64).ttl(ttl)).unwrap();
    b.set_current_key(&1).unwrap();
    assert_eq!(v.get(&mut b).unwrap(), Some(1));
    assert_eq!(l.get_vec(&mut b).unwrap(), vec![10, 11]);
    // The timestamps are those written before the checkpoint, not the restore's time.
    clock.set(1_100);
    assert_eq!(v.get(&mut b).unwrap(), None);
    assert_eq!(l.get_vec(&mut b).unwrap(), vec![11]);
    clock.set(1_150);
    assert_eq!(l.get_vec(&mut b).unwrap(), Vec::<u64>::new());
}

#[test]
fn the_live_backend_reads_right_through_many_checkpoints_in_flight() {
    let mut t = Harness::new(CheckpointOptions::new().max_in_flight(8).retain(3));
    let mut id = 1;
    for round in 0..40u64 {
        for k in 0..50 {
            apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k * 100 + round));
            apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Append(k % 7, round as u32));
        }
        // Only a full pipeline may refuse a checkpoint; any other failure fails the test.
        match t.cp.checkpoint(id, &mut t.b, &t.op, false) {
            Ok(()) => id += 1,
            Err(Error::Misuse(Misuse::TooManyInFlight { .. })) => {}
            Err(e) => panic!("checkpoint {id}: {e}"),
        }
        // Reads while regions frozen by checkpoints are still being written.
        for k in 0..50 {
            t.b.set_current_key(&k).unwrap();
            assert_eq!(t.h.value.get(&mut t.b).unwrap(), Some(k * 100 + round));
        }
    }
    for (_, r) in t.cp.wait_all() {
        r.unwrap();
    }
    let h = register(&mut t.b);
    let got = dump(&mut t.b, &h, &mut t.op);
    assert_eq!(got, t.model);
}

#[test]
fn a_confirmed_checkpoint_subsumes_older_checkpoints_but_not_savepoints() {
    let mut t = Harness::new(CheckpointOptions::new().max_in_flight(4));
    for k in 0..3000 {
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k));
    }
    let fs: Arc<dyn FileSystem> = Arc::new(t.fs.clone());
    t.cp.savepoint(1, fs, "/sp-kept", &mut t.b, &t.op).unwrap();
    t.cp.checkpoint(2, &mut t.b, &t.op, false).unwrap();
    t.cp.checkpoint(3, &mut t.b, &t.op, false).unwrap();
    t.cp.notify_checkpoint_complete(3);
    assert!(t.cp.wait(1).is_ok(), "the savepoint is not subsumed");
    match t.cp.wait(2) {
        Ok(_) | Err(Error::Aborted { id: 2 }) => {}
        Err(e) => panic!("{e}"),
    }
    t.cp.wait(3).unwrap();
    assert_eq!(t.cp.retained(), vec![3]);
}

/// Regression: a notification of an id that was never triggered aborted the checkpoints in
/// flight below it and recorded the id as confirmed. As in Flink, unknown and subsumed ids
/// are ignored: the checkpoints in flight complete, and retention goes on as before.
#[test]
fn a_notification_of_an_unknown_or_subsumed_id_is_ignored() {
    let mut t = Harness::new(CheckpointOptions::new().max_in_flight(4).retain(2));
    for k in 0..3000 {
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k));
    }
    t.cp.checkpoint(1, &mut t.b, &t.op, false).unwrap();
    t.cp.checkpoint(2, &mut t.b, &t.op, false).unwrap();
    t.cp.notify_checkpoint_complete(99);
    t.cp.wait(1).unwrap();
    t.cp.wait(2).unwrap();
    assert_eq!(t.cp.retained(), vec![1, 2]);
    // Confirmed 2, then a late notification of 1: 1 is subsumed and stays unconfirmed.
    t.cp.notify_checkpoint_complete(2);
    t.cp.notify_checkpoint_complete(1);
    t.cp.checkpoint(3, &mut t.b, &t.op, false).unwrap();
    t.cp.wait(3).unwrap();
    t.cp.checkpoint(4, &mut t.b, &t.op, false).unwrap();
    t.cp.wait(4).unwrap();
    // The latest confirmed checkpoint is kept beside the newest two.
    assert_eq!(t.cp.retained(), vec![2, 3, 4]);
    // A savepoint's id confirms nothing.
    let fs: Arc<dyn FileSystem> = Arc::new(t.fs.clone());
    t.cp.savepoint(5, fs, "/sp-5", &mut t.b, &t.op).unwrap();
    t.cp.wait(5).unwrap();
    t.cp.notify_checkpoint_complete(5);
    t.cp.checkpoint(6, &mut t.b, &t.op, false).unwrap();
    t.cp.notify_checkpoint_complete(7);
    t.cp.wait(6).unwrap();
    assert_eq!(t.cp.retained(), vec![2, 4, 6]);
}

/// Regression: two savepoints into one directory overwrote each other, since only the
/// synchronous part checked that the directory held none. The directory is now claimed when
/// the savepoint is triggered: a second one, while the first is written (from this
/// checkpointer or another) or after it completed, is refused and changes nothing.
#[test]
fn two_savepoints_into_one_directory_do_not_overwrite_each_other() {
    let mut t = Harness::new(CheckpointOptions::new().max_in_flight(4));
    for k in 0..3000 {
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k));
    }
    let first = t.model.clone();
    let fs: Arc<dyn FileSystem> = Arc::new(t.fs.clone());
    t.cp.savepoint(1, fs.clone(), "/sp", &mut t.b, &t.op).unwrap();
    apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(1, 7));
    let again = t.cp.savepoint(2, fs.clone(), "/sp", &mut t.b, &t.op);
    assert!(matches!(again, Err(Error::Misuse(Misuse::NotEmpty))), "{again:?}");
    let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalDirStorage::new(fs.clone(), "/other").unwrap());
    let mut other = Checkpointer::new(storage, CheckpointOptions::new()).unwrap();
    let theirs = other.savepoint(1, fs.clone(), "/sp", &mut t.b, &t.op);
    assert!(matches!(theirs, Err(Error::Misuse(Misuse::NotEmpty))), "{theirs:?}");
    t.cp.wait(1).unwrap();
    let after = t.cp.savepoint(3, fs.clone(), "/sp", &mut t.b, &t.op);
    assert!(matches!(after, Err(Error::Misuse(Misuse::NotEmpty))), "{after:?}");
    assert!(verify_savepoint(fs.as_ref(), Path::new("/sp")).is_empty());
    let source = RestoreSource::Savepoint { fs, dir: "/sp".into() };
    let (mut b, restored) = builder(&t.fs, None).restore("/store-sp", &[source]).unwrap();
    let h = register(&mut b);
    let mut op = OperatorStateBackend::restore(restored.operator_states[0].clone());
    assert_eq!(dump(&mut b, &h, &mut op), first);
}

/// Regression: the manifest's version was checked before its checksum, so a flipped version
/// byte read as "unsupported version" and the restore did not fall back to the previous
/// checkpoint. Damage anywhere in the newest manifest, its version included, now makes
/// `latest_checkpoint` pick the one before.
#[test]
fn a_flipped_version_byte_reads_as_damage_and_the_restore_falls_back() {
    let mut t = Harness::new(CheckpointOptions::new().retain(2));
    apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(1, 1));
    let older = t.checkpoint(false);
    apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(1, 2));
    let newer = t.checkpoint(false);
    let path = t.storage.describe_manifest(newer);
    t.fs.corrupt(&path, 4, 0x01).unwrap();
    assert_eq!(latest_checkpoint(t.storage.as_ref()).unwrap(), Some(older));
    let source = RestoreSource::Checkpoint { storage: t.storage.clone(), id: newer };
    let err = builder(&t.fs, None).restore("/store-v", &[source]).err().unwrap();
    assert!(matches!(&err, Error::Corrupted { file, .. } if *file == path), "{err:?}");
}

/// Regression: two backends checkpointed through one checkpointer, A with a changelog and B
/// without. B's checkpoint subsumed A's (retention counts them together) and removed A's
/// stored state, and A's next checkpoint, from its changelog chain, wrote a completed
/// manifest naming the removed files. The chain now holds its files, and a manifest is
/// written only once every file it names is there.
#[test]
fn a_completed_checkpoint_never_names_a_removed_file_when_backends_share_a_checkpointer() {
    let mut t = Harness::with_changelog(CheckpointOptions::new().retain(1), true);
    for round in 0..4u64 {
        for k in 0..300 {
            apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k + round));
        }
        let a = t.checkpoint(false);
        let mut other = builder(&t.fs, None).open(format!("/store-b-{round}")).unwrap();
        let h = register(&mut other);
        other.set_current_key(&1).unwrap();
        h.value.update(&mut other, &round).unwrap();
        let b = t.next_id;
        t.next_id += 1;
        t.cp.checkpoint(b, &mut other, &t.op, false).unwrap();
        t.cp.wait(b).unwrap();
        t.cp.settle().unwrap();
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(1, 100 + round));
        let next = t.checkpoint(false);
        t.cp.settle().unwrap();
        assert!(verify_checkpoint(t.storage.as_ref(), next).is_empty(), "round {round} after {a}");
        t.restore();
    }
}

/// A file the next checkpoint would name again, removed behind the checkpointer's back:
/// that checkpoint fails with a typed error naming the file instead of completing without
/// it, and the one after stores the state anew.
#[test]
fn a_checkpoint_whose_named_file_is_gone_fails_and_the_next_stores_the_state() {
    let mut t = Harness::with_changelog(CheckpointOptions::new().retain(2), true);
    for k in 0..300 {
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k));
    }
    let first = t.checkpoint(false);
    let gone = manifest(&t, first).segments[0].file.clone();
    t.storage.remove(&gone).unwrap();
    apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(1, 2));
    let id = t.next_id;
    t.next_id += 1;
    t.cp.checkpoint(id, &mut t.b, &t.op, false).unwrap();
    let err = t.cp.wait(id).unwrap_err();
    assert!(
        matches!(&err, Error::Incomplete(Incomplete::FileGone { file }) if *file == t.storage.describe(&gone)),
        "{err:?}"
    );
    assert!(!t.storage.manifests().unwrap().contains(&id));
    let next = t.checkpoint(false);
    assert!(manifest(&t, next).logs.is_empty(), "the state is stored anew");
    assert!(verify_checkpoint(t.storage.as_ref(), next).is_empty());
    t.restore();
}

/// Regression: with a changelog, aborting a checkpoint that stores the state (the first one,
/// or a full one) while the next was in flight made that next one fail ("the changelog since
/// the state was last stored is incomplete"). An abort costs only the aborted checkpoint: the
/// next one stores the aborted one's state with its own log, and restores exactly.
/// Storage hooks that, once armed, stop in `sync_shared` (after a checkpoint stored its files)
/// until the test has done what it wants there.
#[derive(Debug)]
struct Gate {
    armed: std::sync::atomic::AtomicBool,
    meet: std::sync::Barrier,
}

impl Gate {
    /// Waits for the worker to reach the gate, runs `f`, and lets the worker go on.
    fn at_sync(&self, f: impl FnOnce()) {
        self.meet.wait();
        f();
        self.meet.wait();
    }
}

impl StorageHooks for Gate {
    fn before_sync_shared(&self) {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.meet.wait();
            self.meet.wait();
        }
    }
}

/// Regression: an abort that came after the first checkpoint of a changelog had stored its
/// files (seen at its last abort check) dropped the state it stored, and the next checkpoint
/// failed with "the changelog since the state was last stored is incomplete".
#[test]
fn an_abort_after_the_state_was_stored_still_leaves_it_to_the_next_checkpoint() {
    let fs = FaultFs::new();
    let gate = Arc::new(Hooked {
        inner: LocalDirStorage::new(Arc::new(fs.clone()), "/checkpoints").unwrap(),
        hooks: Gate { armed: false.into(), meet: std::sync::Barrier::new(2) },
    });
    let mut t = Harness::with_storage(fs, gate.clone(), CheckpointOptions::new().max_in_flight(4), true);
    for k in 0..300 {
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k));
    }
    gate.hooks.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let first = t.next_id;
    t.next_id += 1;
    t.cp.checkpoint(first, &mut t.b, &t.op, false).unwrap();
    // The next barrier comes while the first checkpoint is still being written: it takes
    // only the changelog since the first.
    let next = first + 1;
    t.next_id += 1;
    gate.hooks.at_sync(|| {
        assert!(t.cp.abort(first));
        apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(1, 1000));
        t.cp.checkpoint(next, &mut t.b, &t.op, false).unwrap();
    });
    assert!(matches!(t.cp.wait(first), Err(Error::Aborted { .. })));
    t.cp.wait(next).unwrap();
    t.snapshots.push((RestoreSource::Checkpoint { storage: t.storage.clone(), id: next }, t.model.clone()));
    assert!(verify_checkpoint(t.storage.as_ref(), next).is_empty());
    t.restore();
}

#[test]
fn aborting_a_checkpoint_that_stores_the_state_costs_only_that_checkpoint() {
    let mut aborted = 0;
    for round in 0..10u64 {
        let mut t = Harness::with_changelog(CheckpointOptions::new().max_in_flight(4).retain(2), true);
        for full in [false, true] {
            for k in 0..300 {
                apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(k, k + round));
            }
            let first = t.next_id;
            t.next_id += 1;
            t.cp.checkpoint(first, &mut t.b, &t.op, full).unwrap();
            t.cp.abort(first);
            apply(&mut t.b, &t.h, &mut t.op, &mut t.model, &Op::Put(1, 1000 + round));
            let next = t.checkpoint(false);
            match t.cp.wait(first) {
                Err(Error::Aborted { .. }) => aborted += 1,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
            assert!(verify_checkpoint(t.storage.as_ref(), next).is_empty());
            t.restore();
        }
    }
    assert!(aborted > 0, "no abort came in time");
}
