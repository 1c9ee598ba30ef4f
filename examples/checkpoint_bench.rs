//! Checkpoint, savepoint and restore figures in the shape of the Flink anchor's snapshot
//! workload (`anchors/flink`, its workload 2): value state of `u64` keys with 100-byte values of
//! incompressible pseudo-random bytes (the anchor's), 2,000,000 keys (0.2 GB) by default,
//! inserted in shuffled order, max parallelism 128.
//!
//! ```text
//! cargo run --release --example checkpoint_bench                  # 2,000,000 keys
//! cargo run --release --example checkpoint_bench -- --large       # also the synchronous part at 20,000,000 keys (2 GB)
//! cargo run --release --example checkpoint_bench -- --keys 500000 # a quick run
//! ```
//!
//! It prints, all measured in the same run and on the same disk (a temporary directory; set
//! `TMPDIR` to choose it):
//! - the synchronous part of a checkpoint (median of several) at each state size;
//! - a full checkpoint that copies every file: its asynchronous part's throughput as a ratio
//!   to a plain sequential write (append 4 MiB pieces, then fsync) of as many bytes;
//! - incremental checkpoints, each after updating another 1% of the keys: bytes written, as a
//!   ratio to the changed records compressed on their own (zstd, the store's level), and
//!   their duration from the call until the checkpoint is durable, as a ratio to the least
//!   the disk takes to make as many bytes durable with plain file calls (written, synced,
//!   then a manifest written atomically);
//! - restore from the local checkpoint until the first read, then every key read: by a point
//!   read each in key order (`0..N`, as the anchor's `restore_read_all`), by a point read each in
//!   shuffled order, through the state API (`apply_to_all_keys`, answered from the scan that
//!   lists the keys) and by a scan of the store;
//! - a savepoint: time and throughput to write it, time to restore from it, then every key by a
//!   point read in key order (the anchor's `restore_savepoint_read_all`);
//! - the incremental rounds again on a backend whose store keeps a changelog
//!   (`StoreOptions::changelog`), which materializes its state every 8 MiB of log: the
//!   checkpoints' duration and bytes, the time of the rounds' updates against the rounds
//!   without a changelog, and the restore from its last checkpoint (which replays the log).

#[path = "../benches/common/shuffle.rs"]
mod shuffle;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy::checkpoint::{
    CheckpointInfo, CheckpointOptions, CheckpointStorage, Checkpointer, LocalDirStorage, RestoreSource, Transfer,
};
use eddy::codec::{Bytes, U64};
use eddy::io::{FileSystem, StdFs, WritableFile};
use eddy::state::{KeyedBackend, OperatorStateBackend, ValueState, ValueStateDescriptor};
use eddy::store::StoreOptions;
use shuffle::shuffled;

const VALUE_LEN: usize = 100;

/// The Flink anchor's value of key `k` in update round `round` (its `Data.value`): 100 bytes
/// of incompressible splitmix64 output seeded by (seed, key, version).
fn value_of(k: u64, round: u64) -> Vec<u8> {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    const SEED: u64 = 42;
    let mut v = vec![0u8; VALUE_LEN];
    let mut x = SEED ^ k.wrapping_mul(GOLDEN) ^ (round << 56);
    for chunk in v.chunks_mut(8) {
        x = x.wrapping_add(GOLDEN);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
    v
}

fn fs() -> Arc<dyn FileSystem> {
    Arc::new(StdFs::new())
}

fn options() -> StoreOptions {
    StoreOptions::new().file_system(fs()).memory_budget(256 << 20)
}

fn load(dir: &Path, keys: u64) -> (KeyedBackend<U64>, ValueState<Bytes>, Duration) {
    load_with(dir, keys, options())
}

fn load_with(dir: &Path, keys: u64, options: StoreOptions) -> (KeyedBackend<U64>, ValueState<Bytes>, Duration) {
    let mut b = KeyedBackend::builder(U64).max_parallelism(128).store_options(options).open(dir).expect("open");
    let state = b.state(ValueStateDescriptor::new("value", Bytes)).expect("state");
    let start = Instant::now();
    for k in shuffled(keys, 7) {
        b.set_current_key(&k).expect("key");
        state.update(&mut b, &value_of(k, 0)).expect("update");
    }
    b.store().wait_for_background().expect("background");
    (b, state, start.elapsed())
}

/// How many times each restore is timed (the last one is kept and read from).
const RESTORES: usize = 5;

/// Restores a backend from checkpoint `id` of `storage` into `dir` and reads key 0: the time
/// until the backend is usable.
fn restore_until_first_read(
    storage: &Arc<dyn CheckpointStorage>,
    id: u64,
    dir: &Path,
) -> (KeyedBackend<U64>, ValueState<Bytes>, Duration) {
    let start = Instant::now();
    let (mut r, _) = KeyedBackend::builder(U64)
        .max_parallelism(128)
        .store_options(options())
        .restore(dir, &[RestoreSource::Checkpoint { storage: storage.clone(), id }])
        .expect("restore");
    let state = r.state(ValueStateDescriptor::new("value", Bytes)).expect("state");
    r.set_current_key(&0).expect("key");
    state.get(&mut r).expect("first read").expect("key 0 is there");
    (r, state, start.elapsed())
}

/// Restores `RESTORES` times (each into a directory of its own under `dir`, all but the last
/// removed again) and returns the last backend with the median and range of the times.
fn timed_restores(
    storage: &Arc<dyn CheckpointStorage>,
    id: u64,
    dir: &Path,
) -> (KeyedBackend<U64>, ValueState<Bytes>, (Duration, Duration, Duration)) {
    let mut times = Vec::new();
    for n in 1..RESTORES {
        let at = dir.join(format!("try-{n}"));
        let (r, _, took) = restore_until_first_read(storage, id, &at);
        times.push(took);
        drop(r);
        std::fs::remove_dir_all(&at).expect("remove a restored store");
    }
    let (r, state, took) = restore_until_first_read(storage, id, &dir.join("kept"));
    times.push(took);
    times.sort();
    (r, state, (times[times.len() / 2], times[0], times[times.len() - 1]))
}

/// Median, 90th percentile and maximum.
fn spread(mut d: Vec<Duration>) -> (Duration, Duration, Duration) {
    d.sort();
    (d[d.len() / 2], d[d.len() * 9 / 10], d[d.len() - 1])
}

/// How long this thread has waited, runnable, for a processor (Linux's
/// `/proc/thread-self/schedstat`, second field), if the system says.
fn run_queue_wait() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// The synchronous parts of checkpoints, wall-clock, and the same with the time the thread
/// waited for a processor taken out (where the system says).
struct SyncParts {
    wall: (Duration, Duration, Duration),
    running: Option<(Duration, Duration, Duration)>,
    preempted: usize,
}

/// The synchronous part of `n` checkpoints, each after a few writes (so the mutable region
/// has something to freeze).
fn sync_parts(
    b: &mut KeyedBackend<U64>,
    state: &ValueState<Bytes>,
    cp: &mut Checkpointer,
    first_id: u64,
    n: u64,
    keys: u64,
) -> SyncParts {
    let op = OperatorStateBackend::new();
    let mut times = Vec::new();
    let mut running = Vec::new();
    let mut preempted = 0;
    for i in 0..n {
        for k in 0..10_000u64 {
            b.set_current_key(&((k * 31 + i) % keys)).expect("key");
            state.update(b, &value_of(k, i + 1)).expect("update");
        }
        let waited_before = run_queue_wait();
        let start = Instant::now();
        cp.checkpoint(first_id + i, b, &op, false).expect("checkpoint");
        let took = start.elapsed();
        times.push(took);
        if let (Some(a), Some(z)) = (waited_before, run_queue_wait()) {
            let waited = z.saturating_sub(a);
            preempted += usize::from(!waited.is_zero());
            running.push(took.saturating_sub(waited));
        }
        cp.wait(first_id + i).expect("checkpoint completes");
    }
    let running = (running.len() == times.len()).then(|| spread(running));
    SyncParts { wall: spread(times), running, preempted }
}

/// How many incremental checkpoints are measured, each after updating another 1% of the keys.
const INCREMENTAL_ROUNDS: usize = 9;

/// With a changelog, the state is stored again after this much log.
const MATERIALIZE_AFTER: u64 = 8 << 20;

struct IncrementalRound {
    /// The round's updates (1% of the keys), before the checkpoint.
    updates: Duration,
    sync: Duration,
    total: Duration,
    /// Bytes the checkpoint wrote: new files and the manifest.
    bytes: u64,
    /// The round's changed records compressed on their own.
    reference: u64,
    info: CheckpointInfo,
}

/// Checkpoints `first_id`, `first_id + 1`, ..., each after updating another 1% of the keys.
fn incremental_rounds(
    b: &mut KeyedBackend<U64>,
    state: &ValueState<Bytes>,
    cp: &mut Checkpointer,
    keys: u64,
    first_id: u64,
) -> Vec<IncrementalRound> {
    let changed = (keys / 100) as usize;
    let order = shuffled(keys, 11);
    let op = OperatorStateBackend::new();
    let mut rounds = Vec::new();
    for (round, slice) in order.chunks(changed).take(INCREMENTAL_ROUNDS).enumerate() {
        b.store().wait_for_background().expect("background");
        let values: Vec<Vec<u8>> = slice.iter().map(|&k| value_of(k, 99 + round as u64)).collect();
        let start = Instant::now();
        for (k, v) in slice.iter().zip(&values) {
            b.set_current_key(k).expect("key");
            state.update(b, v).expect("update");
        }
        let updates = start.elapsed();
        let mut raw = Vec::with_capacity(changed * 120);
        for (k, v) in slice.iter().zip(&values) {
            raw.extend_from_slice(&k.to_be_bytes());
            raw.extend_from_slice(v);
        }
        let reference = zstd::bulk::compress(&raw, -1).expect("zstd").len() as u64;
        let id = first_id + round as u64;
        let start = Instant::now();
        cp.checkpoint(id, b, &op, false).expect("checkpoint");
        let sync = start.elapsed();
        let info: CheckpointInfo = cp.wait(id).expect("incremental");
        let total = start.elapsed();
        rounds.push(IncrementalRound {
            updates,
            sync,
            total,
            bytes: info.bytes_new + info.manifest_bytes,
            reference,
            info,
        });
    }
    rounds
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

/// The rounds with a changelog: each stores the log since the previous one; a round whose
/// checkpoint names fewer changelog files than the one before follows a materialization.
fn print_changelog(rounds: &[IncrementalRound], plain: &[IncrementalRound], restore: (Duration, Duration, Duration)) {
    let n = rounds.len();
    let mut totals: Vec<Duration> = rounds.iter().map(|r| r.total).collect();
    totals.sort();
    let (sync, _, _) = spread(rounds.iter().map(|r| r.sync).collect());
    let after: Vec<usize> = (1..n).filter(|&i| rounds[i].info.logs <= rounds[i - 1].info.logs).collect();
    println!(
        "| with a changelog: incremental after 1% updates, all {n} rounds: synchronous, total | {:.3} ms, {:.1} ms median (min {:.1}, max {:.1}) |",
        ms(sync),
        ms(totals[n / 2]),
        ms(totals[0]),
        ms(totals[n - 1])
    );
    let mut ratios: Vec<f64> = rounds.iter().map(|r| r.bytes as f64 / r.reference as f64).collect();
    ratios.sort_by(f64::total_cmp);
    let m = &rounds[n / 2];
    println!(
        "| with a changelog: bytes written / changed records compressed alone | {:.2} MB / {:.2} MB = {:.2} (median {:.2}) |",
        mb(m.bytes),
        mb(m.reference),
        m.bytes as f64 / m.reference as f64,
        ratios[n / 2]
    );
    println!(
        "| with a changelog: rounds after a materialization (state stored in the background, every {} MiB of log) | {} of {n}: {} |",
        MATERIALIZE_AFTER >> 20,
        after.len(),
        after.iter().map(|&i| format!("{:.1} ms", ms(rounds[i].total))).collect::<Vec<_>>().join(", ")
    );
    println!(
        "| with a changelog: each round, in order (changelog files named) | {} |",
        rounds.iter().map(|r| format!("{:.1} ms ({})", ms(r.total), r.info.logs)).collect::<Vec<_>>().join(", ")
    );
    let with = median(rounds.iter().map(|r| r.updates).collect());
    let without = median(plain.iter().map(|r| r.updates).collect());
    println!(
        "| with a changelog: the 1% updates before each checkpoint, median | {:.2} ms, without {:.2} ms ({:.2}x) |",
        ms(with),
        ms(without),
        with.as_secs_f64() / without.as_secs_f64()
    );
    println!(
        "| with a changelog: restore from the last checkpoint (log replayed) until the first read, median of {RESTORES} | {:.1} ms ({:.1} to {:.1}) |",
        ms(restore.0),
        ms(restore.1),
        ms(restore.2)
    );
}

fn print_incremental(rounds: &[IncrementalRound], floor: Option<Duration>) {
    let n = rounds.len();
    // A flush can set off a compaction; the next checkpoint then also stores the merged
    // segment. Rounds that stored only the changes are what "a checkpoint after 1% updates"
    // measures; the others are reported apart, and everything together as an average.
    let (own, with_merge): (Vec<&IncrementalRound>, Vec<&IncrementalRound>) =
        rounds.iter().partition(|r| r.info.new_files == 1);
    if !own.is_empty() {
        let (sync, _, _) = spread(own.iter().map(|r| r.sync).collect());
        let mut totals: Vec<Duration> = own.iter().map(|r| r.total).collect();
        totals.sort();
        let mut ratios: Vec<f64> = own.iter().map(|r| r.bytes as f64 / r.reference as f64).collect();
        ratios.sort_by(f64::total_cmp);
        let m = own.len() / 2;
        println!(
            "| incremental after 1% updates ({} of {n} rounds stored only the changes): synchronous, total | {:.3} ms, {:.1} ms median (min {:.1}, max {:.1}) |",
            own.len(),
            ms(sync),
            ms(totals[m]),
            ms(totals[0]),
            ms(totals[own.len() - 1])
        );
        println!(
            "| incremental: bytes written / changed records compressed alone | {:.2} MB / {:.2} MB = {:.2} (median) |",
            mb(own[m].bytes),
            mb(own[m].reference),
            ratios[m]
        );
        if let Some(floor) = floor {
            println!(
                "| the same bytes made durable by plain file calls (1 MiB appends, fsync, directory fsync, manifest written atomically), median of {FLOOR_RUNS} | {:.1} ms; checkpoint / that = {:.2} |",
                ms(floor),
                totals[m].as_secs_f64() / floor.as_secs_f64()
            );
        }
    }
    if !with_merge.is_empty() {
        let mut merged: Vec<Duration> = with_merge.iter().map(|r| r.total).collect();
        merged.sort();
        println!(
            "| incremental rounds that also stored a compaction's output | {} of {n}: {:.1}-{:.1} ms, {:.1}-{:.1} MB |",
            with_merge.len(),
            ms(merged[0]),
            ms(merged[merged.len() - 1]),
            with_merge.iter().map(|r| mb(r.bytes)).fold(f64::MAX, f64::min),
            with_merge.iter().map(|r| mb(r.bytes)).fold(0.0, f64::max)
        );
    }
    let total: Duration = rounds.iter().map(|r| r.total).sum();
    let bytes: u64 = rounds.iter().map(|r| r.bytes).sum();
    let reference: u64 = rounds.iter().map(|r| r.reference).sum();
    println!(
        "| incremental, all {n} rounds: mean duration, bytes written / changed records compressed | {:.1} ms, {:.2} |",
        ms(total) / n as f64,
        bytes as f64 / reference as f64
    );
}

fn print_sync(label: &str, p: &SyncParts, n: usize) {
    let (m, q, x) = p.wall;
    println!(
        "| synchronous part, {label} (median / p90 / max of {n}) | {:.3} ms / {:.3} ms / {:.3} ms |",
        ms(m),
        ms(q),
        ms(x)
    );
    if let Some((m, q, x)) = p.running {
        println!(
            "| the same without the time the thread waited for a processor ({} of {n} waited) | {:.3} ms / {:.3} ms / {:.3} ms |",
            p.preempted,
            ms(m),
            ms(q),
            ms(x)
        );
    }
}

/// Writes `bytes` bytes to a new file in 4 MiB appends, then syncs it: the disk's
/// sequential write speed as eddy's file system sees it.
fn sequential_write(dir: &Path, bytes: u64) -> Duration {
    let fs = StdFs::new();
    let path = dir.join("sequential");
    let piece = vec![0x5au8; 4 << 20];
    let start = Instant::now();
    let mut f = fs.create(&path).expect("create");
    append_pieces(f.as_mut(), &piece, bytes);
    f.sync().expect("sync");
    let took = start.elapsed();
    fs.remove(&path).expect("remove");
    took
}

/// Appends `bytes` bytes to `f`, `piece` (or the start of it) at a time.
fn append_pieces(f: &mut dyn WritableFile, piece: &[u8], bytes: u64) {
    let mut left = bytes;
    while left > 0 {
        let n = left.min(piece.len() as u64) as usize;
        f.append(&piece[..n]).expect("append");
        left -= n as u64;
    }
}

/// How often the durable write of an incremental checkpoint's bytes is timed.
const FLOOR_RUNS: usize = 9;

/// The least an incremental checkpoint of `bytes` bytes plus a manifest of `manifest` bytes
/// can take on this disk, with no work but the file calls: `bytes` appended to a new file in
/// 1 MiB pieces and synced, the directory synced, then the manifest written atomically
/// (temporary file, sync, rename, directory sync). The median of [`FLOOR_RUNS`].
fn durable_write_floor(dir: &Path, bytes: u64, manifest: u64) -> Duration {
    let fs = StdFs::new();
    let dir = dir.join("floor");
    fs.create_dir_all(&dir).expect("floor directory");
    let piece: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut times = Vec::with_capacity(FLOOR_RUNS);
    for run in 0..FLOOR_RUNS {
        let path = dir.join(format!("data-{run}"));
        let start = Instant::now();
        let mut f = fs.create(&path).expect("create");
        append_pieces(f.as_mut(), &piece, bytes);
        f.sync().expect("sync");
        drop(f);
        fs.sync_dir(&dir).expect("sync the directory");
        eddy::io::write_atomic(&fs, &dir.join(format!("manifest-{run}")), &piece[..manifest as usize])
            .expect("manifest");
        times.push(start.elapsed());
        fs.remove(&path).expect("remove");
        std::thread::sleep(Duration::from_millis(20));
    }
    median(times)
}

/// Reads every key of `keys` with a point read each, in that order, and checks each is there:
/// the time it took.
fn point_read_all(b: &mut KeyedBackend<U64>, state: &ValueState<Bytes>, keys: impl Iterator<Item = u64>) -> Duration {
    let start = Instant::now();
    let (mut n, mut found) = (0u64, 0u64);
    for k in keys {
        b.set_current_key(&k).expect("key");
        found += u64::from(state.get_with(b, |v| v.is_some_and(|v| v.len() == VALUE_LEN)).expect("read"));
        n += 1;
    }
    let took = start.elapsed();
    assert_eq!(found, n, "every key is there");
    took
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let keys: u64 = args
        .iter()
        .position(|a| a == "--keys")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let large = args.iter().any(|a| a == "--large");
    let root = tempfile::tempdir().expect("temporary directory");
    println!(
        "{keys} keys of {VALUE_LEN}-byte values ({:.0} MB of records), in {}",
        mb(keys * (VALUE_LEN as u64 + 12)),
        root.path().display()
    );

    // ---- load, synchronous part ----
    let (mut b, state, took) = load(&root.path().join("store"), keys);
    println!("load: {:.2} s ({:.2} M updates/s)", took.as_secs_f64(), keys as f64 / took.as_secs_f64() / 1e6);
    let local: Arc<dyn CheckpointStorage> =
        Arc::new(LocalDirStorage::new(fs(), root.path().join("checkpoints")).expect("storage"));
    let mut cp = Checkpointer::new(local.clone(), CheckpointOptions::new()).expect("checkpointer");
    let sync_small = sync_parts(&mut b, &state, &mut cp, 1, 25, keys);

    // ---- incremental checkpoint after 1% updates, from a settled checkpoint ----
    b.store().wait_for_background().expect("background");
    cp.checkpoint(60, &mut b, &OperatorStateBackend::new(), false).expect("checkpoint");
    cp.wait(60).expect("checkpoint completes");
    let op = OperatorStateBackend::new();
    let rounds = incremental_rounds(&mut b, &state, &mut cp, keys, 100);
    let last_incremental = 100 + rounds.len() as u64 - 1;
    let floor = rounds
        .iter()
        .find(|r| r.info.new_files == 1)
        .map(|r| durable_write_floor(root.path(), r.info.bytes_new, r.info.manifest_bytes));

    // ---- full checkpoint, copied, against a sequential write ----
    let copy_storage: Arc<dyn CheckpointStorage> =
        Arc::new(LocalDirStorage::new(fs(), root.path().join("full")).expect("storage").transfer(Transfer::Copy));
    let mut full_cp = Checkpointer::new(copy_storage, CheckpointOptions::new()).expect("checkpointer");
    b.store().wait_for_background().expect("background");
    let start = Instant::now();
    full_cp.checkpoint(1, &mut b, &op, true).expect("full checkpoint");
    let full_sync = start.elapsed();
    let full = full_cp.wait(1).expect("full checkpoint completes");
    let seq = sequential_write(root.path(), full.bytes_copied);
    let full_rate = mb(full.bytes_copied) / full.async_duration.as_secs_f64();
    let seq_rate = mb(full.bytes_copied) / seq.as_secs_f64();
    drop(full_cp);

    // ---- savepoint ----
    let sp_dir = root.path().join("savepoint");
    let start = Instant::now();
    cp.savepoint(200, fs(), &sp_dir, &mut b, &op).expect("savepoint");
    let sp = cp.wait(200).expect("savepoint completes");
    let sp_took = start.elapsed();
    drop(cp);
    b.close().expect("close");

    // ---- restore from the local checkpoint, then read every key ----
    let (mut r, rstate, usable) = timed_restores(&local, last_incremental, &root.path().join("restored"));
    // Every key through the state API, as Flink's applyToAllKeys visits them: key by key in
    // key-group order, each read with a point lookup.
    let start = Instant::now();
    let mut visited = 0u64;
    r.apply_to_all_keys(&rstate, |b, _| {
        visited += u64::from(rstate.get_with(b, |v| v.is_some_and(|v| v.len() == VALUE_LEN))?);
        Ok(())
    })
    .expect("visit");
    let visit_all = start.elapsed();
    assert_eq!(visited, keys);
    let in_key_order = point_read_all(&mut r, &rstate, 0..keys);
    let order = shuffled(keys, 13);
    let start = Instant::now();
    let mut found = 0u64;
    for k in &order {
        r.set_current_key(k).expect("key");
        found += u64::from(rstate.get_with(&mut r, |v| v.is_some_and(|v| v.len() == VALUE_LEN)).expect("read"));
    }
    let read_all = start.elapsed();
    assert_eq!(found, keys);
    let stats = r.store().stats();
    println!(
        "restored store: {} segments, {:.0} MB; cache {:.0} MB, {} hits, {} misses",
        stats.segments,
        mb(stats.segment_file_bytes),
        mb(stats.cache_bytes as u64),
        stats.cache_hits,
        stats.cache_misses
    );
    let start = Instant::now();
    let mut scanned = 0u64;
    let mut it = r.store().scan_key_groups(eddy::keygroup::KeyGroupRange::new(0, 127).expect("range")).expect("scan");
    while it.next_entry().expect("scan").is_some() {
        scanned += 1;
    }
    drop(it);
    let scan_all = start.elapsed();
    drop(r);

    // ---- restore from the savepoint ----
    let start = Instant::now();
    let (mut s, _) = KeyedBackend::builder(U64)
        .max_parallelism(128)
        .store_options(options())
        .restore(root.path().join("from-savepoint"), &[RestoreSource::Savepoint { fs: fs(), dir: sp_dir.clone() }])
        .expect("restore from savepoint");
    let sstate = s.state(ValueStateDescriptor::new("value", Bytes)).expect("state");
    s.set_current_key(&0).expect("key");
    sstate.get(&mut s).expect("first read").expect("key 0 is there");
    let sp_restore = start.elapsed();
    let sp_in_key_order = point_read_all(&mut s, &sstate, 0..keys);
    drop(s);

    // ---- incremental checkpoints with a changelog ----
    let (mut lb, lstate, _) = load_with(&root.path().join("store-changelog"), keys, options().changelog(true));
    let log_storage: Arc<dyn CheckpointStorage> =
        Arc::new(LocalDirStorage::new(fs(), root.path().join("checkpoints-changelog")).expect("storage"));
    let mut lcp = Checkpointer::new(log_storage.clone(), CheckpointOptions::new().materialize_after(MATERIALIZE_AFTER))
        .expect("checkpointer");
    lb.store().wait_for_background().expect("background");
    lcp.checkpoint(1, &mut lb, &op, false).expect("checkpoint");
    lcp.wait(1).expect("checkpoint completes");
    let log_rounds = incremental_rounds(&mut lb, &lstate, &mut lcp, keys, 2);
    let last = 2 + log_rounds.len() as u64 - 1;
    // A restore follows the end of the backend it restores: let the background work the last
    // rounds started (a materialization, the compaction after it) finish first, so that it
    // does not run beside the restore on this machine's two processors.
    lcp.settle().expect("background work of the checkpoints");
    drop(lcp);
    lb.store().wait_for_background().expect("background work of the store");
    lb.close().expect("close");
    let (r, _, log_restore) = timed_restores(&log_storage, last, &root.path().join("restored-changelog"));
    drop(r);

    // ---- the synchronous part at ten times the state ----
    let large_sync = large.then(|| {
        let (mut b, state, took) = load(&root.path().join("store-large"), keys * 10);
        println!("load of {} keys: {:.1} s", keys * 10, took.as_secs_f64());
        let storage: Arc<dyn CheckpointStorage> =
            Arc::new(LocalDirStorage::new(fs(), root.path().join("checkpoints-large")).expect("storage"));
        let mut cp = Checkpointer::new(storage, CheckpointOptions::new()).expect("checkpointer");
        sync_parts(&mut b, &state, &mut cp, 1, 25, keys * 10)
    });

    println!();
    println!("| measurement | eddy |");
    println!("|---|---|");
    print_sync(&format!("{:.1} GB", mb(keys * 112) / 1e3), &sync_small, 25);
    if let Some(p) = &large_sync {
        print_sync(&format!("{:.1} GB", mb(keys * 1120) / 1e3), p, 25);
    }
    println!(
        "| full checkpoint (copied): synchronous, asynchronous | {:.3} ms, {:.0} ms for {:.0} MB = {:.0} MB/s |",
        ms(full_sync),
        ms(full.async_duration),
        mb(full.bytes_copied),
        full_rate
    );
    println!(
        "| sequential write of as many bytes | {:.0} ms = {seq_rate:.0} MB/s; checkpoint / sequential = {:.2} |",
        ms(seq),
        full_rate / seq_rate
    );
    print_incremental(&rounds, floor);
    println!(
        "| restore from the local checkpoint until the first read, median of {RESTORES} | {:.1} ms ({:.1} to {:.1}) |",
        ms(usable.0),
        ms(usable.1),
        ms(usable.2)
    );
    println!(
        "| then a point read of every key in key order (restore_read_all) | {:.2} s |",
        in_key_order.as_secs_f64()
    );
    println!("| or a point read of every key in shuffled order | {:.2} s |", read_all.as_secs_f64());
    println!(
        "| or every key through the state API (apply_to_all_keys + get, a scan) | {:.2} s |",
        visit_all.as_secs_f64()
    );
    println!("| or a scan of every key in the store ({scanned}) | {:.2} s |", scan_all.as_secs_f64());
    println!(
        "| savepoint: write | {:.2} s ({:.0} MB file, {:.0} MB/s) |",
        sp_took.as_secs_f64(),
        mb(sp.bytes_new),
        mb(sp.bytes_new) / sp.async_duration.as_secs_f64()
    );
    println!("| savepoint: restore until the first read | {:.2} s |", sp_restore.as_secs_f64());
    println!(
        "| then a point read of every key in key order (restore_savepoint_read_all) | {:.2} s |",
        sp_in_key_order.as_secs_f64()
    );
    print_changelog(&log_rounds, &rounds, log_restore);
}
