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
//! state registered, which checks the serializers, and one read), both over `--rounds` rounds
//! (21 unless told) of one unchanged and one evolved restore in alternating order, as medians and
//! as the median of the per-round ratios; and every key read once in key order with its value
//! checked (`read_all`; for `evolved`, while the state is still unmigrated: each read converts the
//! value and writes it back). Then the eager migration
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

/// The restore and first-access figures of one kind of restore: medians over the rounds.
struct Restore {
    restore: Duration,
    first_access: Duration,
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

/// One restore of `source` into `dir` followed by the first access (the state registered with
/// `v1()` or, `evolved`, with `v2()`, and the value of key 0 read): the time of each.
fn one_restore(dir: &Path, source: &RestoreSource, evolved: bool) -> (Duration, Duration) {
    let (mut b, took) = restore(dir, source);
    let start = Instant::now();
    if evolved {
        let s = b.state(ValueStateDescriptor::new("events", v2())).expect("state");
        b.set_current_key(&0).expect("key");
        s.get(&mut b).expect("get");
    } else {
        let s = b.state(ValueStateDescriptor::new("events", v1())).expect("state");
        b.set_current_key(&0).expect("key");
        s.get(&mut b).expect("get");
    }
    let access = start.elapsed();
    b.close().expect("close");
    std::fs::remove_dir_all(dir).expect("remove the restore's directory");
    (took, access)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `rounds` rounds of one unchanged and one evolved restore of `source`, in alternating order
/// (so that neither always runs on the caches the other warmed): the medians of each and the
/// medians of the per-round ratios evolved / same of the restore and of the first access. A
/// restore and a first access take micro- to milliseconds on a shared machine, so one pair alone
/// is mostly noise; a ratio taken within a round sees the same machine on both sides.
fn paired(dir: &Path, source: &RestoreSource, rounds: usize) -> (Restore, Restore, f64, f64) {
    let (mut same, mut evolved, mut restore_ratio, mut access_ratio) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let run = |evolved: bool| one_restore(&dir.join(format!("{round}-{evolved}")), source, evolved);
        let (s, e) = if round % 2 == 0 {
            let s = run(false);
            (s, run(true))
        } else {
            let e = run(true);
            (run(false), e)
        };
        restore_ratio.push(e.0.as_secs_f64() / s.0.as_secs_f64());
        access_ratio.push(e.1.as_secs_f64() / s.1.as_secs_f64());
        same.push(s);
        evolved.push(e);
    }
    let medians = |v: &[(Duration, Duration)]| Restore {
        restore: Duration::from_secs_f64(median(v.iter().map(|x| x.0.as_secs_f64()).collect())),
        first_access: Duration::from_secs_f64(median(v.iter().map(|x| x.1.as_secs_f64()).collect())),
    };
    (medians(&same), medians(&evolved), median(restore_ratio), median(access_ratio))
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

    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(21);

    // Restore and first access, the anchor's order: checkpoint, then savepoint.
    let (ckpt_same, ckpt_evolved, ckpt_restore_ratio, ckpt_access_ratio) =
        paired(&root.join("rc"), &checkpoint, rounds);
    let (sp_same, sp_evolved, sp_restore_ratio, sp_access_ratio) = paired(&root.join("rs"), &savepoint, rounds);

    // Every key read once: from an unchanged restore, and from an evolved one while unmigrated.
    let (mut plain, _) = restore(&root.join("r1"), &checkpoint);
    let s1 = plain.state(ValueStateDescriptor::new("events", v1())).unwrap();
    let start = Instant::now();
    read_all_v1(&mut plain, &s1, keys, &names);
    let read_same = start.elapsed();
    drop(s1);
    let (mut b, _) = restore(&root.join("r2"), &checkpoint);
    let s = b.state(ValueStateDescriptor::new("events", v2())).unwrap();
    let start = Instant::now();
    read_all_v2(&mut b, &s, keys, &names);
    let read_unmigrated = start.elapsed();
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

    println!();
    println!("restore and first access: medians of {rounds} rounds, each one unchanged and one evolved restore");
    println!();
    println!("| metric (ms) | same | evolved | median of per-round evolved / same |");
    println!("|---|---:|---:|---:|");
    for (name, a, b, restore_ratio, access_ratio) in [
        ("ckpt", &ckpt_same, &ckpt_evolved, ckpt_restore_ratio, ckpt_access_ratio),
        ("savepoint", &sp_same, &sp_evolved, sp_restore_ratio, sp_access_ratio),
    ] {
        println!("| {name}_restore | {:.3} | {:.3} | {restore_ratio:.2}x |", ms(a.restore), ms(b.restore));
        println!(
            "| {name}_first_access | {:.3} | {:.3} | {access_ratio:.2}x |",
            ms(a.first_access),
            ms(b.first_access)
        );
        println!(
            "| {name}_usable_and_first_access | {:.3} | {:.3} | {:.2}x |",
            ms(a.restore + a.first_access),
            ms(b.restore + b.first_access),
            ms(b.restore + b.first_access) / ms(a.restore + a.first_access)
        );
    }
    println!(
        "| ckpt_read_all | {:.3} | {:.3} | {:.2}x |",
        ms(read_same),
        ms(read_unmigrated),
        ms(read_unmigrated) / ms(read_same)
    );
    println!();
    println!(
        "reading every key of the checkpoint's restore while unmigrated: {:.0} ms, after the eager migration: {:.0} ms ({:.2}x as fast unmigrated)",
        ms(read_unmigrated),
        ms(read_migrated),
        ms(read_migrated) / ms(read_unmigrated)
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
