//! Rescaling by key groups against a model: random keys, random chains of parallelism changes
//! (p -> p' -> p'' ...) with writes, timers and operator state in between, each change restoring
//! every new instance from the checkpoints or savepoints of the old ones. Every key ends in
//! exactly one backend, the one that owns its key group, with its exact state; timers fire in
//! the owning backend only; operator state is redistributed by its mode.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use eddy::checkpoint::{CheckpointOptions, CheckpointStorage, Checkpointer, LocalDirStorage, RestoreSource};
use eddy::codec::{U32, U64};
use eddy::io::FaultFs;
use eddy::keygroup::{KeyGroupRange, MaxParallelism};
use eddy::state::{
    KeyedBackend, ListState, ListStateDescriptor, OperatorStateBackend, OperatorStateSnapshot, Timer, TimerService,
    ValueState, ValueStateDescriptor,
};
use eddy::store::StoreOptions;
use eddy::{Error, Misuse};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

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
        let old = std::mem::take(&mut self.instances);
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
            self.instances.push(instance(b, OperatorStateBackend::restore(op_state)));
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
