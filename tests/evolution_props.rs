//! A property of schema evolution: values written by v1 of a type, then random interleavings of
//! writes, flushes, compactions, eager migrations, checkpoints, savepoints and restores that
//! move the job to v2 or v3 of the type (random chains), read back as the model's migration
//! of what was written; after an eager migration no record of an older writer is left.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use eddy::checkpoint::{CheckpointOptions, Checkpointer, RestoreSource};
use eddy::codec::{VersionedSerde, U64};
use eddy::io::StdFs;
use eddy::state::{KeyedBackend, OperatorStateBackend, ValueState, ValueStateDescriptor};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct V1 {
    n: u32,
    name: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct V2 {
    n: u64,
    name: String,
    extra: Option<u16>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct V3 {
    total: u64,
    label: String,
}

fn up2(v: V1) -> V2 {
    V2 { n: u64::from(v.n) + 1, name: v.name, extra: None }
}

fn up3(v: V2) -> V3 {
    V3 { total: v.n * 3 + u64::from(v.extra.unwrap_or(7)), label: format!("<{}>", v.name) }
}

/// A value in the type of some generation.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    One(V1),
    Two(V2),
    Three(V3),
}

impl Val {
    fn of(generation: u8, seed: u16) -> Val {
        match generation {
            1 => Val::One(V1 { n: u32::from(seed), name: format!("a{seed}") }),
            2 => Val::Two(V2 { n: u64::from(seed) << 20, name: format!("b{seed}"), extra: Some(seed) }),
            _ => Val::Three(V3 { total: u64::from(seed) * 11, label: format!("c{seed}") }),
        }
    }

    /// The value migrated to `generation`.
    fn to(self, generation: u8) -> Val {
        match (self, generation) {
            (Val::One(v), 2) => Val::Two(up2(v)),
            (Val::One(v), 3) => Val::Three(up3(up2(v))),
            (Val::Two(v), 3) => Val::Three(up3(v)),
            (v, _) => v,
        }
    }
}

/// The job's value state at one generation of the type.
enum Handle {
    One(ValueState<VersionedSerde<V1>>),
    Two(ValueState<VersionedSerde<V2>>),
    Three(ValueState<VersionedSerde<V3>>),
}

fn chain1() -> VersionedSerde<V1> {
    VersionedSerde::<V1>::new("prop.Value")
}

fn chain2() -> VersionedSerde<V2> {
    chain1().then(up2)
}

fn chain3() -> VersionedSerde<V3> {
    chain2().then(up3)
}

fn register(b: &mut KeyedBackend<U64>, generation: u8) -> Handle {
    match generation {
        1 => Handle::One(b.state(ValueStateDescriptor::new("v", chain1())).unwrap()),
        2 => Handle::Two(b.state(ValueStateDescriptor::new("v", chain2())).unwrap()),
        _ => Handle::Three(b.state(ValueStateDescriptor::new("v", chain3())).unwrap()),
    }
}

fn put(b: &mut KeyedBackend<U64>, h: &Handle, v: &Val) {
    match (h, v) {
        (Handle::One(s), Val::One(v)) => s.update(b, v).unwrap(),
        (Handle::Two(s), Val::Two(v)) => s.update(b, v).unwrap(),
        (Handle::Three(s), Val::Three(v)) => s.update(b, v).unwrap(),
        _ => unreachable!("the model writes the handle's generation"),
    }
}

fn get(b: &mut KeyedBackend<U64>, h: &Handle) -> Option<Val> {
    match h {
        Handle::One(s) => s.get(b).unwrap().map(Val::One),
        Handle::Two(s) => s.get(b).unwrap().map(Val::Two),
        Handle::Three(s) => s.get(b).unwrap().map(Val::Three),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u16),
    Read(u8),
    Flush,
    Compact,
    Migrate,
    /// Snapshot (a savepoint if true), restore, and move to the next generation if true.
    Restore(bool, bool),
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        match u8::arbitrary(g) % 16 {
            0..=6 => Op::Put(u8::arbitrary(g) % 40, u16::arbitrary(g)),
            7..=9 => Op::Read(u8::arbitrary(g) % 40),
            10 => Op::Flush,
            11 => Op::Compact,
            12 => Op::Migrate,
            _ => Op::Restore(bool::arbitrary(g), bool::arbitrary(g)),
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(std::iter::empty())
    }
}

fn open(root: &Path, n: usize, source: Option<&RestoreSource>) -> KeyedBackend<U64> {
    let dir = root.join(format!("store-{n}"));
    let builder = KeyedBackend::builder(U64).max_parallelism(8);
    match source {
        None => builder.open(&dir).unwrap(),
        Some(s) => builder.restore(&dir, std::slice::from_ref(s)).unwrap().0,
    }
}

fn run(ops: Vec<Op>) -> TestResult {
    let root = tempfile::tempdir().unwrap();
    let mut generation = 1u8;
    let mut model: BTreeMap<u64, Val> = BTreeMap::new();
    let mut stores = 0;
    let mut b = open(root.path(), stores, None);
    let mut h = register(&mut b, generation);
    // v1 data first, in two segments.
    for k in 0..30u64 {
        b.set_current_key(&k).unwrap();
        let v = Val::of(1, k as u16);
        put(&mut b, &h, &v);
        model.insert(k, v);
        if k == 14 {
            b.store().flush().unwrap();
        }
    }
    let mut snapshots = 0u64;
    for op in ops {
        match op {
            Op::Put(k, seed) => {
                b.set_current_key(&u64::from(k)).unwrap();
                let v = Val::of(generation, seed);
                put(&mut b, &h, &v);
                model.insert(u64::from(k), v);
            }
            Op::Read(k) => {
                b.set_current_key(&u64::from(k)).unwrap();
                let want = model.get(&u64::from(k)).cloned().map(|v| v.to(generation));
                if get(&mut b, &h) != want {
                    return TestResult::error(format!("key {k} at generation {generation}"));
                }
            }
            Op::Flush => b.store().flush().unwrap(),
            Op::Compact => b.store().compact().unwrap(),
            Op::Migrate => {
                b.migrate().unwrap();
                // No segment keeps a record of an older writer of the state.
                let tags: Vec<_> = b.store().version().segments.iter().map(|s| s.tag.clone()).collect();
                let entries: Vec<_> = tags.iter().filter_map(|t| t.versions().first().map(|e| e.1.clone())).collect();
                if entries.windows(2).any(|w| w[0] != w[1]) || tags.len() > 1 {
                    return TestResult::error(format!("after an eager migration: {tags:?}"));
                }
            }
            Op::Restore(savepoint, bump) => {
                snapshots += 1;
                let mut cp =
                    Checkpointer::local(root.path().join(format!("cp-{snapshots}")), CheckpointOptions::new()).unwrap();
                let op = OperatorStateBackend::new();
                let source = if savepoint {
                    let dir = root.path().join(format!("sp-{snapshots}"));
                    cp.savepoint(snapshots, Arc::new(StdFs), &dir, &mut b, &op).unwrap();
                    cp.wait(snapshots).unwrap();
                    RestoreSource::Savepoint { fs: Arc::new(StdFs), dir }
                } else {
                    cp.checkpoint(snapshots, &mut b, &op, false).unwrap();
                    cp.wait(snapshots).unwrap();
                    RestoreSource::Checkpoint { storage: cp.storage().clone(), id: snapshots }
                };
                drop(h);
                b.close().unwrap();
                stores += 1;
                b = open(root.path(), stores, Some(&source));
                if bump && generation < 3 {
                    generation += 1;
                }
                h = register(&mut b, generation);
            }
        }
    }
    for (k, v) in &model {
        b.set_current_key(k).unwrap();
        if get(&mut b, &h) != Some(v.clone().to(generation)) {
            return TestResult::error(format!("key {k} at the end, generation {generation}"));
        }
    }
    b.close().unwrap();
    TestResult::passed()
}

#[test]
fn reads_after_random_chains_of_evolution_are_the_migration_of_what_was_written() {
    QuickCheck::new().rng(Gen::new(30)).tests(40).quickcheck(run as fn(Vec<Op>) -> TestResult);
}
