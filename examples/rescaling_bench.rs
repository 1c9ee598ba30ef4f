//! Rescaling figures in the shape of the Flink anchor's rescale workload (`anchors/flink`, its
//! workload 3): max parallelism 128, `i64` keys `0..N` routed by Java's `hashCode` as Flink
//! routes `Long` keys, inserted in shuffled order, each with a 100-byte value of incompressible
//! pseudo-random bytes (the anchor's: splitmix64 of seed, key and version), N = 2,000,000.
//!
//! - **scale-in 2 -> 1**: two backends owning key groups 0..63 and 64..127 hold the keys (each
//!   key goes to the owner of its key group); each takes a checkpoint and a savepoint; one
//!   backend owning 0..127 is restored from both checkpoints (`in_ckpt_*`), then from both
//!   savepoints (`in_savepoint_*`).
//! - **scale-out 1 -> 4**: one backend owning 0..127 holds all the keys; it takes a checkpoint
//!   and a savepoint; subtask 0 of 4 (key groups 0..31) is restored from each (`out_ckpt_*`,
//!   `out_savepoint_*`).
//!
//! Each restore gives `*_restore`, the time until the backend is usable (restored, the state
//! registered and one key read), and `*_read_all`, the time to then read every key the backend
//! owns once, in key order, with a point read each, as the anchor reads them. `*_scan_all` is
//! an extra the anchor does not have: every key visited through the state API in key-group order
//! (`apply_to_all_keys`, a read each, answered from the scan that lists the keys); it is a scan,
//! not point reads. Key counts and a sample of values are checked outside the timed parts.
//!
//! The figures are printed as the anchor's TSV (`backend workload metric value unit`, backend
//! `eddy`), so that they join with its results on (workload, metric).
//!
//! ```text
//! cargo run --release --example rescaling_bench                     # 2,000,000 keys
//! cargo run --release --example rescaling_bench -- --keys 500000    # a quick run
//! ```
//!
//! Set `TMPDIR` to choose the disk.

#[path = "../benches/common/shuffle.rs"]
mod shuffle;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy::checkpoint::{CheckpointOptions, CheckpointStorage, Checkpointer, LocalDirStorage, RestoreSource};
use eddy::codec::{Bytes, I64};
use eddy::io::{FileSystem, StdFs};
use eddy::keygroup::{java_hash_i64, KeyGroupRange, MaxParallelism};
use eddy::state::{KeyedBackend, OperatorStateBackend, ValueState, ValueStateDescriptor};
use eddy::store::StoreOptions;
use shuffle::shuffled;

const MAX_P: u32 = 128;
const VALUE_LEN: usize = 100;
const SEED: i64 = 42;

fn fs() -> Arc<dyn FileSystem> {
    Arc::new(StdFs::new())
}

fn options() -> StoreOptions {
    StoreOptions::new().file_system(fs()).memory_budget(256 << 20)
}

fn max_p() -> MaxParallelism {
    MaxParallelism::new(MAX_P).expect("max parallelism")
}

fn range(p: u32, i: u32) -> KeyGroupRange {
    max_p().subtask_range(p, i).expect("range")
}

/// The anchor's value of `key` (its `Data.value`): splitmix64 seeded by (seed, key, version).
fn value_of(key: i64, version: i64) -> Vec<u8> {
    const GOLDEN: i64 = 0x9e37_79b9_7f4a_7c15_u64 as i64;
    let mut b = vec![0u8; VALUE_LEN];
    let mut x = SEED ^ key.wrapping_mul(GOLDEN) ^ (version << 56);
    for chunk in b.chunks_mut(8) {
        x = x.wrapping_add(GOLDEN);
        let mut z = x as u64;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
    b
}

/// One result line in the anchor's TSV.
fn report(metric: &str, value: f64, unit: &str) {
    let digits = if unit == "s" { 3 } else { 1 };
    println!("eddy\trescale\t{metric}\t{value:.digits$}\t{unit}");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn open(dir: &Path, range: KeyGroupRange) -> (KeyedBackend<I64>, ValueState<Bytes>) {
    let mut b = KeyedBackend::builder(I64)
        .java_key_hash()
        .max_parallelism(MAX_P)
        .key_groups(range)
        .store_options(options())
        .open(dir)
        .expect("open");
    let state = b.state(ValueStateDescriptor::new("bytesState", Bytes)).expect("state");
    (b, state)
}

/// Takes a checkpoint and a savepoint of `b`: the sources a restore can use.
fn snapshot(root: &Path, name: &str, b: &mut KeyedBackend<I64>) -> (RestoreSource, RestoreSource) {
    b.store().wait_for_background().expect("background");
    let storage: Arc<dyn CheckpointStorage> =
        Arc::new(LocalDirStorage::new(fs(), root.join(format!("{name}-checkpoints"))).expect("storage"));
    let mut cp = Checkpointer::new(storage.clone(), CheckpointOptions::new()).expect("checkpointer");
    let op = OperatorStateBackend::new();
    cp.checkpoint(1, b, &op, false).expect("checkpoint");
    cp.wait(1).expect("checkpoint completes");
    let dir = root.join(format!("{name}-savepoint"));
    cp.savepoint(2, fs(), &dir, b, &op).expect("savepoint");
    cp.wait(2).expect("savepoint completes");
    cp.settle().expect("background work of the checkpoints");
    (RestoreSource::Checkpoint { storage, id: 1 }, RestoreSource::Savepoint { fs: fs(), dir })
}

/// Restores a backend owning `target` from `sources`, then reads `keys` (its keys, in key
/// order) with a point read each, then visits them all through the state API; reports the three
/// times under `prefix`.
fn restore_and_read(root: &Path, prefix: &str, target: KeyGroupRange, sources: &[RestoreSource], keys: &[i64]) {
    let start = Instant::now();
    let (mut b, _) = KeyedBackend::builder(I64)
        .java_key_hash()
        .max_parallelism(MAX_P)
        .key_groups(target)
        .store_options(options())
        .restore(root.join(prefix), sources)
        .expect("restore");
    let state = b.state(ValueStateDescriptor::new("bytesState", Bytes)).expect("state");
    b.set_current_key(&keys[0]).expect("key");
    assert!(state.get_with(&mut b, |v| v.is_some()).expect("first read"));
    let usable = start.elapsed();

    let start = Instant::now();
    let mut found = 0u64;
    for k in keys {
        b.set_current_key(k).expect("key");
        found += u64::from(state.get_with(&mut b, |v| v.is_some_and(|v| v.len() == VALUE_LEN)).expect("read"));
    }
    let read_all = start.elapsed();

    let start = Instant::now();
    let mut visited = 0u64;
    b.apply_to_all_keys(&state, |b, _| {
        visited += u64::from(state.get_with(b, |v| v.is_some_and(|v| v.len() == VALUE_LEN))?);
        Ok(())
    })
    .expect("visit");
    let scan_all = start.elapsed();

    assert_eq!((found, visited), (keys.len() as u64, keys.len() as u64), "{prefix}: keys read, keys visited");
    for &k in keys.iter().step_by((keys.len() / 2000).max(1)) {
        b.set_current_key(&k).expect("key");
        assert_eq!(state.get(&mut b).expect("read").as_deref(), Some(&value_of(k, 0)[..]), "{prefix}: key {k}");
    }
    report(&format!("{prefix}_restore"), ms(usable), "ms");
    report(&format!("{prefix}_read_all"), ms(read_all), "ms");
    report(&format!("{prefix}_scan_all"), ms(scan_all), "ms");
    eprintln!(
        "{prefix}: usable after {:.1} ms from {} source(s); {} keys read in {:.0} ms, visited in {:.0} ms",
        ms(usable),
        sources.len(),
        keys.len(),
        ms(read_all),
        ms(scan_all)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args
        .iter()
        .position(|a| a == "--keys")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let root = tempfile::tempdir().expect("temporary directory");
    let root = root.path();
    eprintln!("{n} keys with {VALUE_LEN}-byte random values, max parallelism {MAX_P}, in {}", root.display());
    let order = shuffled(n, 0x2545_f491);
    let key_group = |k: i64| max_p().key_group(java_hash_i64(k));

    // ---- scale-in: 2 -> 1 ----
    let (lower, upper) = (range(2, 0), range(2, 1));
    let (mut a, sa) = open(&root.join("in-source-0"), lower);
    let (mut b, sb) = open(&root.join("in-source-1"), upper);
    let start = Instant::now();
    for &k in &order {
        let k = k as i64;
        let (be, s) = if lower.contains(key_group(k)) { (&mut a, &sa) } else { (&mut b, &sb) };
        be.set_current_key(&k).expect("key");
        s.update(be, &value_of(k, 0)).expect("update");
    }
    report("in_sources_load", start.elapsed().as_secs_f64(), "s");
    let (a_cp, a_sp) = snapshot(root, "in-source-0", &mut a);
    let (b_cp, b_sp) = snapshot(root, "in-source-1", &mut b);
    a.close().expect("close");
    b.close().expect("close");
    let all: Vec<i64> = (0..n as i64).collect();
    let everything = range(1, 0);
    restore_and_read(root, "in_ckpt", everything, &[a_cp, b_cp], &all);
    restore_and_read(root, "in_savepoint", everything, &[a_sp, b_sp], &all);

    // ---- scale-out: 1 -> 4 ----
    let (mut src, s) = open(&root.join("out-source"), everything);
    let start = Instant::now();
    for &k in &order {
        let k = k as i64;
        src.set_current_key(&k).expect("key");
        s.update(&mut src, &value_of(k, 0)).expect("update");
    }
    report("out_source_load", start.elapsed().as_secs_f64(), "s");
    let (cp, sp) = snapshot(root, "out-source", &mut src);
    src.close().expect("close");
    let quarter = range(4, 0);
    let owned: Vec<i64> = all.iter().copied().filter(|&k| quarter.contains(key_group(k))).collect();
    eprintln!("subtask 0 of 4 owns key groups {quarter:?}: {} keys", owned.len());
    restore_and_read(root, "out_ckpt", quarter, &[cp], &owned);
    restore_and_read(root, "out_savepoint", quarter, &[sp], &owned);
}
