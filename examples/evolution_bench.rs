//! Restore after a schema change, in the shape of the Flink anchor's `evolution` workload
//! (`anchors/flink`, its workload 4): value state of 2,000,000 `u64` keys holding an `Event`
//! (`id: i64, ts: i64, name: String, amount: f64`; `name` one of 4,096 seeded strings of 32 to
//! 63 characters, about 78 bytes a value), max parallelism 128, inserted in shuffled order.
//! Version 2 of the type adds a field (`version: i32`, 2 for migrated values), declared as a
//! [`VersionedSerde`] chain.
//!
//! ```text
//! cargo run --release --example evolution_bench                  # 2,000,000 keys
//! cargo run --release --example evolution_bench -- --keys 200000 # a quick run
//! ```
//!
//! It prints, measured in the same run: for a checkpoint and for a savepoint, the restore
//! with the type unchanged (`same`) and with version 2 registered (`evolved`), each as the
//! anchor measures it: the time until the backend is usable (`restore`), the first access (the
//! state registered, which checks the serializers, and one read; both the median of five restores), and every key read once in
//! key order with its value checked (`read_all`; for `evolved`, while the state is still
//! unmigrated: each read converts the value and writes it back). Then the eager migration
//! (`KeyedBackend::migrate`) of another evolved restore, before any read, against a plain full
//! compaction of the unchanged one, in MB/s of the segments they read, and every key read after
//! the eager migration.

#[path = "../benches/common/shuffle.rs"]
mod shuffle;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy::checkpoint::{CheckpointOptions, Checkpointer, RestoreSource};
use eddy::codec::{VersionedSerde, U64};
use eddy::io::StdFs;
use eddy::state::{KeyedBackend, OperatorStateBackend, ValueState, ValueStateDescriptor};
use eddy::store::StoreOptions;
use serde::{Deserialize, Serialize};
use shuffle::shuffled;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct EventV1 {
    id: i64,
    ts: i64,
    name: String,
    amount: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct EventV2 {
    id: i64,
    ts: i64,
    name: String,
    amount: f64,
    version: i32,
}

fn v1() -> VersionedSerde<EventV1> {
    VersionedSerde::<EventV1>::new("bench.Event")
}

fn v2() -> VersionedSerde<EventV2> {
    v1().then(|e: EventV1| EventV2 { id: e.id, ts: e.ts, name: e.name, amount: e.amount, version: 2 })
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 4,096 names: 32 to 63 seeded lowercase letters.
fn names() -> Vec<String> {
    (0..4096u64)
        .map(|i| {
            let len = 32 + (mix(i ^ 0x5eed) % 32) as usize;
            (0..len).map(|j| (b'a' + (mix(i * 131 + j as u64) % 26) as u8) as char).collect()
        })
        .collect()
}

fn event(k: u64, names: &[String]) -> EventV1 {
    let h = mix(k ^ 42);
    EventV1 {
        id: k as i64,
        ts: 1_700_000_000_000 + (h % 86_400_000) as i64,
        name: names[(h >> 20) as usize % names.len()].clone(),
        amount: (h % 1_000_000) as f64 / 100.0,
    }
}

fn options() -> StoreOptions {
    StoreOptions::new().file_system(Arc::new(StdFs::new())).memory_budget(256 << 20)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The three figures of one restore.
struct Restore {
    restore: Duration,
    first_access: Duration,
    read_all: Duration,
}

/// Restores `source` into `dir`: the backend and the time it took.
fn restore(dir: &Path, source: &RestoreSource) -> (KeyedBackend<U64>, Duration) {
    let start = Instant::now();
    let (b, _) = KeyedBackend::builder(U64)
        .max_parallelism(128)
        .store_options(options())
        .restore(dir, std::slice::from_ref(source))
        .expect("restore");
    (b, start.elapsed())
}

/// Five restores of `source` (each into a directory of its own under `dir`), each followed by
/// `first_access`: the median time of each, and the last backend with what its first access
/// gave. A restore and a first access take micro- to milliseconds, so one alone is mostly
/// noise.
fn restores<T>(
    dir: &Path,
    source: &RestoreSource,
    mut first_access: impl FnMut(&mut KeyedBackend<U64>) -> T,
) -> (KeyedBackend<U64>, T, Duration, Duration) {
    let (mut restore_times, mut access_times) = (Vec::new(), Vec::new());
    let mut last = None;
    for i in 0..5 {
        if let Some((b, _)) = last.take() {
            KeyedBackend::close(b).expect("close");
        }
        let (mut b, took) = restore(&dir.join(i.to_string()), source);
        restore_times.push(took);
        let start = Instant::now();
        let t = first_access(&mut b);
        access_times.push(start.elapsed());
        last = Some((b, t));
    }
    restore_times.sort();
    access_times.sort();
    let (b, t) = last.expect("five restores");
    (b, t, restore_times[2], access_times[2])
}

fn read_all_v1(b: &mut KeyedBackend<U64>, s: &ValueState<VersionedSerde<EventV1>>, keys: u64, names: &[String]) {
    for k in 0..keys {
        b.set_current_key(&k).expect("key");
        let v = s.get(b).expect("get").expect("a value for every key");
        assert_eq!(v, event(k, names), "key {k}");
    }
}

fn read_all_v2(b: &mut KeyedBackend<U64>, s: &ValueState<VersionedSerde<EventV2>>, keys: u64, names: &[String]) {
    for k in 0..keys {
        b.set_current_key(&k).expect("key");
        let v = s.get(b).expect("get").expect("a value for every key");
        let e = event(k, names);
        assert!(v.id == e.id && v.ts == e.ts && v.name == e.name && v.amount == e.amount && v.version == 2, "key {k}");
    }
}

fn same(dir: &Path, source: &RestoreSource, keys: u64, names: &[String]) -> (Restore, KeyedBackend<U64>) {
    let (mut b, s, restore, first_access) = restores(dir, source, |b| {
        let s = b.state(ValueStateDescriptor::new("events", v1())).expect("state");
        b.set_current_key(&0).expect("key");
        s.get(b).expect("get");
        s
    });
    let start = Instant::now();
    read_all_v1(&mut b, &s, keys, names);
    (Restore { restore, first_access, read_all: start.elapsed() }, b)
}

fn evolved(
    dir: &Path,
    source: &RestoreSource,
    keys: u64,
    names: &[String],
) -> (Restore, KeyedBackend<U64>, ValueState<VersionedSerde<EventV2>>) {
    let (mut b, s, restore, first_access) = restores(dir, source, |b| {
        let s = b.state(ValueStateDescriptor::new("events", v2())).expect("state");
        b.set_current_key(&0).expect("key");
        s.get(b).expect("get");
        s
    });
    let start = Instant::now();
    read_all_v2(&mut b, &s, keys, names);
    (Restore { restore, first_access, read_all: start.elapsed() }, b, s)
}

fn segment_bytes(b: &mut KeyedBackend<U64>) -> u64 {
    b.store().segment_paths().iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let keys: u64 = args
        .iter()
        .position(|a| a == "--keys")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let names = names();
    let root = tempfile::tempdir().expect("temporary directory");
    let root = root.path();

    // Load with v1, then one checkpoint and one savepoint.
    let mut b =
        KeyedBackend::builder(U64).max_parallelism(128).store_options(options()).open(root.join("load")).unwrap();
    let s = b.state(ValueStateDescriptor::new("events", v1())).unwrap();
    let start = Instant::now();
    for k in shuffled(keys, 7) {
        b.set_current_key(&k).unwrap();
        s.update(&mut b, &event(k, &names)).unwrap();
    }
    b.store().wait_for_background().unwrap();
    let load = start.elapsed();
    let mut cp = Checkpointer::local(root.join("checkpoints"), CheckpointOptions::new()).unwrap();
    let op = OperatorStateBackend::new();
    cp.checkpoint(1, &mut b, &op, false).unwrap();
    cp.wait(1).unwrap();
    let checkpoint = RestoreSource::Checkpoint { storage: cp.storage().clone(), id: 1 };
    let sp_dir = root.join("savepoint");
    cp.savepoint(2, Arc::new(StdFs::new()), &sp_dir, &mut b, &op).unwrap();
    cp.wait(2).unwrap();
    let savepoint = RestoreSource::Savepoint { fs: Arc::new(StdFs::new()), dir: sp_dir };
    drop(s);
    b.close().unwrap();
    println!("{keys} keys of Event (v1), loaded in {:.2} s", load.as_secs_f64());

    // The anchor's order: checkpoint same, checkpoint evolved, savepoint same, savepoint evolved.
    let (ckpt_same, mut plain) = same(&root.join("r1"), &checkpoint, keys, &names);
    let (ckpt_evolved, b, s) = evolved(&root.join("r2"), &checkpoint, keys, &names);
    drop(s);
    b.close().unwrap();

    // Eager migration of a fresh evolved restore (nothing read yet) against a plain full
    // compaction of the unchanged one.
    let (mut migrating, _) = restore(&root.join("r2b"), &checkpoint);
    let s2 = migrating.state(ValueStateDescriptor::new("events", v2())).unwrap();
    let bytes_plain = segment_bytes(&mut plain);
    let start = Instant::now();
    plain.store().compact().unwrap();
    let compaction = start.elapsed();
    let bytes_migrated = segment_bytes(&mut migrating);
    let start = Instant::now();
    migrating.migrate().unwrap();
    let migration = start.elapsed();
    let start = Instant::now();
    read_all_v2(&mut migrating, &s2, keys, &names);
    let read_migrated = start.elapsed();
    drop(s2);
    plain.close().unwrap();
    migrating.close().unwrap();

    let (sp_same, b) = same(&root.join("r3"), &savepoint, keys, &names);
    b.close().unwrap();
    let (sp_evolved, b, s) = evolved(&root.join("r4"), &savepoint, keys, &names);
    drop(s);
    b.close().unwrap();

    println!();
    println!("| metric (ms) | same | evolved | evolved / same |");
    println!("|---|---:|---:|---:|");
    for (name, a, b) in [("ckpt", &ckpt_same, &ckpt_evolved), ("savepoint", &sp_same, &sp_evolved)] {
        for (what, x, y) in [
            ("restore", a.restore, b.restore),
            ("first_access", a.first_access, b.first_access),
            ("read_all", a.read_all, b.read_all),
        ] {
            println!("| {name}_{what} | {:.3} | {:.3} | {:.2}x |", ms(x), ms(y), ms(y) / ms(x));
        }
    }
    println!();
    println!(
        "reading every key of the checkpoint's restore while unmigrated: {:.0} ms, after the eager migration: {:.0} ms ({:.2}x as fast unmigrated)",
        ms(ckpt_evolved.read_all),
        ms(read_migrated),
        ms(read_migrated) / ms(ckpt_evolved.read_all)
    );
    let mbs = |bytes: u64, d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    println!(
        "eager migration: {:.0} MB in {:.0} ms, {:.0} MB/s; plain full compaction: {:.0} MB in {:.0} ms, {:.0} MB/s; ratio {:.2}",
        bytes_migrated as f64 / 1e6,
        ms(migration),
        mbs(bytes_migrated, migration),
        bytes_plain as f64 / 1e6,
        ms(compaction),
        mbs(bytes_plain, compaction),
        mbs(bytes_migrated, migration) / mbs(bytes_plain, compaction)
    );
}
