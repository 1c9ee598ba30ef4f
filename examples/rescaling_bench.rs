//! Rescaling figures in the shape of Flink's RescalingBenchmark: max parallelism 128; keys of
//! 96 random bytes behind a 4-byte big-endian counter; a 128-byte value each; the time to
//! restore one subtask for scale-out 1 -> 2 and scale-in 2 -> 1 until its backend is usable,
//! and the time of the first full read of its state, from checkpoints and from savepoints.
//!
//! ```text
//! cargo run --release --example rescaling_bench                     # 2,000,000 keys (quick)
//! cargo run --release --example rescaling_bench -- --keys 10000000  # the full run (2.2 GB)
//! ```
//!
//! Set `TMPDIR` to choose the disk.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy::checkpoint::{CheckpointOptions, CheckpointStorage, Checkpointer, LocalDirStorage, RestoreSource};
use eddy::codec::Bytes;
use eddy::io::{FileSystem, StdFs};
use eddy::keygroup::{KeyGroupRange, MaxParallelism};
use eddy::state::{KeyedBackend, OperatorStateBackend, ValueStateDescriptor};
use eddy::store::StoreOptions;

const MAX_P: u32 = 128;

fn fs() -> Arc<dyn FileSystem> {
    Arc::new(StdFs::new())
}

fn options() -> StoreOptions {
    StoreOptions::new().file_system(fs()).memory_budget(256 << 20)
}

fn range(p: u32, i: u32) -> KeyGroupRange {
    MaxParallelism::new(MAX_P).expect("max parallelism").subtask_range(p, i).expect("range")
}

fn key(i: u64, rng: &mut u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(100);
    k.extend_from_slice(&(i as u32).to_be_bytes());
    while k.len() < 100 {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        k.extend_from_slice(&rng.to_le_bytes()[..4]);
    }
    k
}

/// Snapshots of `p` backends (subtasks of parallelism `p`) holding `keys` keys together: one
/// checkpoint and one savepoint each.
fn prepare(root: &Path, p: u32, keys: u64) -> (Vec<RestoreSource>, Vec<RestoreSource>, Duration) {
    let start = Instant::now();
    let mut backends: Vec<_> = (0..p)
        .map(|i| {
            KeyedBackend::builder(Bytes)
                .max_parallelism(MAX_P)
                .key_groups(range(p, i))
                .store_options(options())
                .open(root.join(format!("p{p}-store-{i}")))
                .expect("open")
        })
        .collect();
    let states: Vec<_> =
        backends.iter_mut().map(|b| b.state(ValueStateDescriptor::new("value", Bytes)).expect("state")).collect();
    let value = vec![0x42u8; 128];
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..keys {
        let k = key(i, &mut rng);
        // The owner is the backend that accepts the key.
        for (b, s) in backends.iter_mut().zip(&states) {
            if b.set_current_key(&k).is_ok() {
                s.update(b, &value).expect("update");
                break;
            }
        }
    }
    let mut checkpoints = Vec::new();
    let mut savepoints = Vec::new();
    for (i, b) in backends.iter_mut().enumerate() {
        b.store().wait_for_background().expect("background");
        let storage: Arc<dyn CheckpointStorage> =
            Arc::new(LocalDirStorage::new(fs(), root.join(format!("p{p}-checkpoints-{i}"))).expect("storage"));
        let mut cp = Checkpointer::new(storage.clone(), CheckpointOptions::new()).expect("checkpointer");
        let op = OperatorStateBackend::new();
        cp.checkpoint(1, b, &op, false).expect("checkpoint");
        cp.wait(1).expect("checkpoint completes");
        let dir = root.join(format!("p{p}-savepoint-{i}"));
        cp.savepoint(2, fs(), &dir, b, &op).expect("savepoint");
        cp.wait(2).expect("savepoint completes");
        checkpoints.push(RestoreSource::Checkpoint { storage, id: 1 });
        savepoints.push(RestoreSource::Savepoint { fs: fs(), dir });
    }
    (checkpoints, savepoints, start.elapsed())
}

/// Restores subtask 0 of `p` from `sources`: the time until a state read works, then the
/// time to read every key of its state through the state API (key by key, as Flink's
/// applyToAllKeys), and the keys read.
fn restore(root: &Path, name: &str, p: u32, sources: &[RestoreSource]) -> (Duration, Duration, u64) {
    let start = Instant::now();
    let (mut b, _) = KeyedBackend::builder(Bytes)
        .max_parallelism(MAX_P)
        .key_groups(range(p, 0))
        .store_options(options())
        .restore(root.join(name), sources)
        .expect("restore");
    let state = b.state(ValueStateDescriptor::new("value", Bytes)).expect("state");
    b.set_current_key(&vec![0u8; 100]).ok();
    let _ = state.get_with(&mut b, |v| v.map(<[u8]>::len));
    let usable = start.elapsed();
    let start = Instant::now();
    let mut n = 0u64;
    b.apply_to_all_keys(&state, |b, _| {
        n += u64::from(state.get_with(b, |v| v.is_some_and(|v| v.len() == 128))?);
        Ok(())
    })
    .expect("read");
    (usable, start.elapsed(), n)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let keys: u64 = args
        .iter()
        .position(|a| a == "--keys")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let root = tempfile::tempdir().expect("temporary directory");
    println!("{keys} keys of 100 bytes with 128-byte values, max parallelism 128, in {}", root.path().display());
    let (one_cp, one_sp, t1) = prepare(root.path(), 1, keys);
    let (two_cp, two_sp, t2) = prepare(root.path(), 2, keys);
    println!(
        "set-up: one backend {:.1} s, two backends {:.1} s (load, checkpoint, savepoint)",
        t1.as_secs_f64(),
        t2.as_secs_f64()
    );

    let runs = [
        ("scale-out 1 -> 2, checkpoint", "out-cp", 2, &one_cp),
        ("scale-in 2 -> 1, checkpoints", "in-cp", 1, &two_cp),
        ("scale-out 1 -> 2, savepoint", "out-sp", 2, &one_sp),
        ("scale-in 2 -> 1, savepoints", "in-sp", 1, &two_sp),
    ];
    println!();
    println!("| restore of subtask 0 | until usable | first full read | keys read |");
    println!("|---|---|---|---|");
    for (what, dir, p, sources) in runs {
        let (usable, read, n) = restore(root.path(), dir, p, sources);
        println!("| {what} | {:.1} ms | {:.2} s | {n} |", usable.as_secs_f64() * 1e3, read.as_secs_f64());
    }
}
