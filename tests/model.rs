//! The store against a `BTreeMap` model: random sequences of puts, deletes, appends, point
//! reads, prefix and key-group scans, key-group drops, flushes, compactions and clean
//! close-and-reopen cycles must give exactly the model's answers. Keys whose third byte is
//! [`GROUPED`] belong to the group of their first three bytes: they are written with the group
//! API and listed with group scans.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use eddy::format::segment::Compression;
use eddy::io::FaultFs;
use eddy::keygroup::KeyGroupRange;
use eddy::store::{CompactionOptions, Store, StoreOptions};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

#[derive(Clone, Debug)]
enum Op {
    Put(Key, Vec<u8>),
    Delete(Key),
    Merge(Key, Vec<u8>),
    Get(Key),
    ScanPrefix(Key, u8),
    ScanGroup(u16),
    ScanKeyGroups(u16, u16),
    DropKeyGroups(u16, u16),
    Flush,
    Compact,
    Reopen,
}

/// A key: a key group out of a few, then one to three bytes from a small alphabet, so that
/// keys collide, share prefixes and land in several key groups.
#[derive(Clone, Debug)]
struct Key(Vec<u8>);

const KEY_GROUPS: u16 = 6;

/// The third byte of the keys that belong to a group.
const GROUPED: u8 = 3;
const GROUP_LEN: usize = 3;

fn grouped(k: &[u8]) -> bool {
    k.get(2) == Some(&GROUPED)
}

impl Arbitrary for Key {
    fn arbitrary(g: &mut Gen) -> Self {
        let kg = u16::arbitrary(g) % KEY_GROUPS;
        let mut k = kg.to_be_bytes().to_vec();
        let len = 1 + usize::arbitrary(g) % 3;
        for _ in 0..len {
            k.push(u8::arbitrary(g) % 4);
        }
        Key(k)
    }
}

fn value(g: &mut Gen) -> Vec<u8> {
    let len = usize::arbitrary(g) % 24;
    (0..len).map(|_| u8::arbitrary(g)).collect()
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let kg = |g: &mut Gen| u16::arbitrary(g) % (KEY_GROUPS + 1);
        match u8::arbitrary(g) % 100 {
            0..=29 => Op::Put(Key::arbitrary(g), value(g)),
            30..=39 => Op::Delete(Key::arbitrary(g)),
            40..=54 => Op::Merge(Key::arbitrary(g), value(g)),
            55..=74 => Op::Get(Key::arbitrary(g)),
            75..=78 => Op::ScanPrefix(Key::arbitrary(g), u8::arbitrary(g) % 4),
            79..=81 => Op::ScanGroup(u16::arbitrary(g) % KEY_GROUPS),
            82..=85 => {
                let (a, b) = (kg(g), kg(g));
                Op::ScanKeyGroups(a.min(b), a.max(b))
            }
            86..=88 => {
                let (a, b) = (kg(g), kg(g));
                Op::DropKeyGroups(a.min(b), a.max(b))
            }
            89..=93 => Op::Flush,
            94..=96 => Op::Compact,
            _ => Op::Reopen,
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        match self {
            Op::Put(k, v) => Box::new(v.shrink().map({
                let k = k.clone();
                move |v| Op::Put(k.clone(), v)
            })),
            _ => Box::new(std::iter::empty()),
        }
    }
}

fn options(fs: &FaultFs, compaction: CompactionOptions) -> StoreOptions {
    // The runs with eager compaction write zstd blocks, the others LZ4 blocks (the default).
    let compression = if compaction.max_segments == usize::MAX { Compression::Lz4 } else { Compression::Zstd(1) };
    StoreOptions::new()
        .file_system(Arc::new(fs.clone()))
        .memory_budget(256 << 10)
        .block_size(256)
        .compression(compression)
        .compaction(compaction)
}

/// Compaction soon after a few flushes: few segments at any time.
fn eager() -> CompactionOptions {
    CompactionOptions { trigger: 3, max_segments: 5, ..Default::default() }
}

/// Compaction only when asked: every flush stays a segment, so scans merge many sources.
fn never() -> CompactionOptions {
    CompactionOptions {
        trigger: usize::MAX,
        max_segments: usize::MAX,
        stall_segments: usize::MAX,
        max_space_amplification_percent: u64::MAX,
        ..Default::default()
    }
}

fn open(fs: &FaultFs, compaction: CompactionOptions) -> Store {
    options(fs, compaction).open(Path::new("/db")).expect("open")
}

fn expected_scan(model: &BTreeMap<Vec<u8>, Vec<u8>>, lower: &[u8], upper: Option<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
    model
        .range(lower.to_vec()..)
        .take_while(|(k, _)| upper.is_none_or(|u| k.as_slice() < u))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn run(ops: Vec<Op>) -> TestResult {
    run_with_stats(ops, eager()).0
}

fn run_with_stats(ops: Vec<Op>, compaction: CompactionOptions) -> (TestResult, eddy::store::StoreStats) {
    let fs = FaultFs::new();
    let mut store = open(&fs, compaction);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (step, op) in ops.iter().enumerate() {
        let ctx = || format!("step {step}: {op:?}");
        match op {
            Op::Put(Key(k), v) => {
                if grouped(k) {
                    store.put_grouped(k, GROUP_LEN, v).unwrap();
                } else {
                    store.put(k, v).unwrap();
                }
                model.insert(k.clone(), v.clone());
            }
            Op::Delete(Key(k)) => {
                if grouped(k) {
                    store.delete_grouped(k, GROUP_LEN).unwrap();
                } else {
                    store.delete(k).unwrap();
                }
                model.remove(k);
            }
            // Merges are not part of the group API: grouped keys take a put instead.
            Op::Merge(Key(k), v) if grouped(k) => {
                store.put_grouped(k, GROUP_LEN, v).unwrap();
                model.insert(k.clone(), v.clone());
            }
            Op::Merge(Key(k), v) => {
                store.merge(k, v).unwrap();
                model.entry(k.clone()).or_default().extend_from_slice(v);
            }
            Op::Get(Key(k)) => {
                let got = store.get(k).unwrap().map(<[u8]>::to_vec);
                if got.as_ref() != model.get(k) {
                    return fail(&store, format!("{}: got {got:?}, expected {:?}", ctx(), model.get(k)));
                }
            }
            Op::ScanPrefix(Key(k), len) => {
                let prefix = &k[..(2 + *len as usize).min(k.len())];
                let got = store.scan_prefix(prefix).unwrap().collect_vec().unwrap();
                let upper = eddy::store::prefix_successor(prefix);
                let expected = expected_scan(&model, prefix, upper.as_deref());
                if got != expected {
                    return fail(&store, format!("{}: got {got:?}, expected {expected:?}", ctx()));
                }
            }
            Op::ScanGroup(kg) => {
                let mut group = kg.to_be_bytes().to_vec();
                group.push(GROUPED);
                let got = store.scan_group(&group).unwrap().collect_vec().unwrap();
                let upper = eddy::store::prefix_successor(&group);
                let expected = expected_scan(&model, &group, upper.as_deref());
                if store.group_is_empty(&group).unwrap() != expected.is_empty() {
                    return fail(&store, format!("{}: group_is_empty wrong, expected {expected:?}", ctx()));
                }
                if got != expected {
                    return fail(&store, format!("{}: got {got:?}, expected {expected:?}", ctx()));
                }
            }
            Op::ScanKeyGroups(a, b) => {
                let range = KeyGroupRange::new(*a, *b).unwrap();
                let got = store.scan_key_groups(range).unwrap().collect_vec().unwrap();
                let upper = (b + 1).to_be_bytes();
                let expected = expected_scan(&model, &a.to_be_bytes(), Some(&upper));
                if got != expected {
                    return fail(&store, format!("{}: got {got:?}, expected {expected:?}", ctx()));
                }
            }
            Op::DropKeyGroups(a, b) => {
                store.drop_key_groups(KeyGroupRange::new(*a, *b).unwrap()).unwrap();
                model.retain(|k, _| !(*a..=*b).contains(&u16::from_be_bytes([k[0], k[1]])));
            }
            Op::Flush => store.flush().unwrap(),
            Op::Compact => store.compact().unwrap(),
            Op::Reopen => {
                store.close().unwrap();
                store = open(&fs, compaction);
            }
        }
    }
    // Everything, at the end, after letting background work finish.
    store.wait_for_background().unwrap();
    let got = store.scan_range(&[], None).unwrap().collect_vec().unwrap();
    let expected = expected_scan(&model, &[], None);
    if got != expected {
        return fail(&store, format!("final scan: got {got:?}, expected {expected:?}"));
    }
    store.verify().unwrap();
    (TestResult::passed(), store.stats())
}

fn fail(store: &Store, msg: String) -> (TestResult, eddy::store::StoreStats) {
    (TestResult::error(msg), store.stats())
}

#[test]
fn store_matches_btreemap_model() {
    QuickCheck::new().rng(Gen::new(400)).tests(150).quickcheck(run as fn(Vec<Op>) -> TestResult);
}

/// Short runs with many flushes and no automatic compaction: scans merge more sources than
/// the merge's linear pass serves, so the heap that orders them is exercised.
#[test]
fn store_matches_model_with_many_segments() {
    fn run_many(ops: Vec<Op>) -> TestResult {
        let mut with_flushes = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.into_iter().enumerate() {
            let scan = matches!(op, Op::ScanPrefix(..) | Op::ScanKeyGroups(..));
            with_flushes.push(op);
            if i % 3 == 2 && !scan {
                with_flushes.push(Op::Flush);
            }
        }
        let (r, stats) = run_with_stats(with_flushes, never());
        if !r.is_failure() && stats.segments < 9 {
            return TestResult::discard();
        }
        r
    }
    QuickCheck::new()
        .rng(Gen::new(400))
        .tests(60)
        .min_tests_passed(20)
        .quickcheck(run_many as fn(Vec<Op>) -> TestResult);
}

/// Long runs with enough data to flush and compact many times on their own.
#[test]
fn store_matches_model_through_background_flushes_and_compactions() {
    let mut g = Gen::new(64);
    for _ in 0..3 {
        let mut ops = Vec::new();
        for i in 0..20_000u32 {
            // A wider key space than the short runs, so that the mutable region fills up.
            let mut key = Key::arbitrary(&mut g);
            key.0.extend_from_slice(&(u16::arbitrary(&mut g) % 2048).to_be_bytes());
            let v = (i.to_le_bytes().repeat(1 + (i as usize % 8))).to_vec();
            ops.push(match i % 10 {
                0..=4 => Op::Put(key, v),
                5 => Op::Delete(key),
                6..=7 => Op::Merge(key, v),
                _ => Op::Get(key),
            });
            if i % 5000 == 4999 {
                ops.push(Op::ScanPrefix(Key::arbitrary(&mut g), 0));
            }
            if i % 1000 == 999 {
                ops.push(Op::ScanGroup(u16::arbitrary(&mut g) % KEY_GROUPS));
            }
            if i == 5000 {
                ops.push(Op::Reopen);
            }
        }
        let (r, stats) = run_with_stats(ops, eager());
        assert!(!r.is_failure(), "{r:?}");
        assert!(stats.flushes >= 3 && stats.compactions >= 1, "background work did not happen: {stats:?}");
    }
}
