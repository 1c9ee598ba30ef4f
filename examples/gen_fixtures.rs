//! Writes the backward-compatibility fixtures that `tests/fixtures_compat.rs` restores:
//!
//! ```text
//! cargo run --example gen_fixtures -- tests/fixtures
//! ```
//!
//! writes `<dir>/v1/` with
//!
//! - `checkpoint/`: checkpoint storage holding a full checkpoint (id 1) of a keyed backend
//!   with states of every kind, timers and operator state;
//! - `savepoint/`: a savepoint (id 2) of the same state;
//! - `changelog/`: checkpoint storage of a backend whose store keeps a changelog, holding
//!   checkpoint 2, which names the state stored by checkpoint 1 and the changelog since.
//!
//! The contents are in `tests/fixtures/contents.rs`. The generator refuses to write into an
//! existing `v1/`: committed fixtures are never regenerated in place (a new format gets a new
//! directory, `v2/`, with a generator of its own).

#[path = "../tests/fixtures/contents.rs"]
mod contents;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use contents::*;
use eddy::checkpoint::{CheckpointOptions, CheckpointStorage, Checkpointer, LocalDirStorage, Transfer};
use eddy::codec::{Str, U32, U64};
use eddy::io::StdFs;
use eddy::state::{KeyedBackend, KeyedBackendBuilder, ManualClock, OperatorStateBackend};
use eddy::store::StoreOptions;

/// What the steps return: the crate's errors and I/O errors alike.
type Outcome = Result<(), Box<dyn std::error::Error>>;

fn builder(clock: &ManualClock, store: StoreOptions) -> KeyedBackendBuilder<Str> {
    KeyedBackend::builder(Str)
        .java_key_hash()
        .job(JOB)
        .max_parallelism(MAX_PARALLELISM)
        .clock(Arc::new(clock.clone()))
        .store_options(store)
}

/// Checkpoint storage in `root` that copies files (the stores live in a temporary directory,
/// perhaps on another file system).
fn storage(root: &Path) -> eddy::Result<Arc<dyn CheckpointStorage>> {
    Ok(Arc::new(LocalDirStorage::new(Arc::new(StdFs::new()), root)?.transfer(Transfer::Copy)))
}

/// Writes every state of key `i`.
fn write_key(b: &mut KeyedBackend<Str>, h: &mut Handles, i: usize, key: &String) -> eddy::Result<()> {
    b.set_current_key(key)?;
    h.count.update(b, &count(i))?;
    if let Some(v) = profile(i) {
        h.profile.update(b, &v)?;
    }
    if let Some(v) = clicks(i) {
        h.clicks.update(b, &v)?;
    }
    if let Some(v) = session(i) {
        h.session.update(b, &v)?;
    }
    if let Some(v) = history(i) {
        h.history.update(b, &v)?;
    }
    if let Some(v) = maybe(i) {
        h.maybe.update(b, &v)?;
    }
    for e in events(i) {
        h.events.add(b, &e)?;
    }
    h.pairs.add_all(b, pairs(i).iter())?;
    for (k, v) in attrs(i) {
        h.attrs.put(b, &k, &v)?;
    }
    for (w, values) in window_inputs(i) {
        h.window_sum.set_namespace(&w);
        for v in values {
            h.window_sum.add(b, v)?;
        }
    }
    for v in avg_inputs(i) {
        h.avg.add(b, v)?;
    }
    for (ns, ts) in event_timers(i) {
        h.timers.register_event_time(b, &ns, ts)?;
    }
    for (ns, ts) in processing_timers(i) {
        h.timers.register_processing_time(b, &ns, ts)?;
    }
    Ok(())
}

fn operator_state() -> eddy::Result<OperatorStateBackend> {
    let mut op = OperatorStateBackend::new();
    op.list_state("offsets", U64)?.add_all(offsets());
    op.list_state("epochs", U32)?.add_all(epochs());
    op.union_list_state("partitions", (Str, U32))?.add_all(partitions());
    let rules_state = op.broadcast_state(&rules_descriptor())?;
    for (k, v) in rules() {
        rules_state.put(k, v);
    }
    let limits_state = op.broadcast_state(&limits_descriptor())?;
    for (k, v) in limits() {
        limits_state.put(k, v);
    }
    Ok(op)
}

/// Removes the lock file a checkpointer leaves in its storage: not part of a checkpoint.
fn drop_lock(root: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(root.join("LOCK")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// (a) and (b): a full checkpoint and a savepoint of the same backend.
fn full_checkpoint_and_savepoint(work: &Path, v1: &Path) -> Outcome {
    let clock = ManualClock::new(CLOCK_MILLIS);
    let mut b = builder(&clock, StoreOptions::new()).open(work.join("store"))?;
    let mut h = register(&mut b)?;
    for (i, key) in keys().iter().enumerate() {
        write_key(&mut b, &mut h, i, key)?;
        // Two segments rather than one.
        if i == CHANGELOG_SPLIT - 1 {
            b.store().flush()?;
        }
    }
    let op = operator_state()?;
    let root = v1.join("checkpoint");
    let mut cp = Checkpointer::new(storage(&root)?, CheckpointOptions::new())?;
    cp.checkpoint(FULL_CHECKPOINT_ID, &mut b, &op, true)?;
    let info = cp.wait(FULL_CHECKPOINT_ID)?;
    println!("full checkpoint {}: {} files, manifest {} bytes", info.id, info.files, info.manifest_bytes);
    cp.savepoint(SAVEPOINT_ID, Arc::new(StdFs::new()), v1.join("savepoint"), &mut b, &op)?;
    let info = cp.wait(SAVEPOINT_ID)?;
    println!("savepoint {}: {} bytes", info.id, info.manifest_bytes);
    for (id, r) in cp.close() {
        r.inspect_err(|_| eprintln!("snapshot {id} failed"))?;
    }
    b.close()?;
    drop_lock(&root)?;
    Ok(())
}

/// (c): a checkpoint of a backend with a changelog: checkpoint 1 stores the state of the first
/// keys, checkpoint 2 names it and the changelog of the rest of the keys and of a few deletes.
fn changelog_checkpoint(work: &Path, v1: &Path) -> Outcome {
    let clock = ManualClock::new(CLOCK_MILLIS);
    let mut b = builder(&clock, StoreOptions::new().changelog(true)).open(work.join("changelog-store"))?;
    let mut h = register(&mut b)?;
    let keys = keys();
    for (i, key) in keys.iter().enumerate().take(CHANGELOG_SPLIT) {
        write_key(&mut b, &mut h, i, key)?;
    }
    // What the changelog of checkpoint 2 deletes again.
    let ghost = "ghost".to_string();
    b.set_current_key(&ghost)?;
    h.count.update(&mut b, &1)?;
    h.events.add(&mut b, &"junk".to_string())?;
    h.timers.register_event_time(&mut b, &7, 5)?;
    b.set_current_key(&keys[1])?;
    h.attrs.put(&mut b, &"junk".to_string(), &Some(-1))?;
    h.timers.register_processing_time(&mut b, &9, 9)?;

    let op = operator_state()?;
    let root = v1.join("changelog");
    let mut cp = Checkpointer::new(storage(&root)?, CheckpointOptions::new())?;
    cp.checkpoint(CHANGELOG_CHECKPOINT_ID - 1, &mut b, &op, false)?;
    let info = cp.wait(CHANGELOG_CHECKPOINT_ID - 1)?;
    println!("changelog checkpoint {}: {} files, {} of them logs", info.id, info.files, info.logs);

    for (i, key) in keys.iter().enumerate().skip(CHANGELOG_SPLIT) {
        write_key(&mut b, &mut h, i, key)?;
    }
    b.set_current_key(&ghost)?;
    h.count.clear(&mut b)?;
    h.events.clear(&mut b)?;
    h.timers.delete_event_time(&mut b, &7, 5)?;
    b.set_current_key(&keys[1])?;
    h.attrs.remove(&mut b, &"junk".to_string())?;
    h.timers.delete_processing_time(&mut b, &9, 9)?;

    cp.checkpoint(CHANGELOG_CHECKPOINT_ID, &mut b, &op, false)?;
    let info = cp.wait(CHANGELOG_CHECKPOINT_ID)?;
    println!("changelog checkpoint {}: {} files, {} of them logs", info.id, info.files, info.logs);
    if info.logs == 0 {
        eprintln!("checkpoint {} names no changelog file", info.id);
        std::process::exit(1);
    }
    cp.settle()?;
    for (_, r) in cp.close() {
        r?;
    }
    b.close()?;
    drop_lock(&root)?;
    Ok(())
}

fn main() -> Outcome {
    let out: PathBuf = std::env::args().nth(1).unwrap_or_else(|| "tests/fixtures".into()).into();
    let v1 = out.join("v1");
    if v1.exists() {
        eprintln!(
            "{} exists: committed fixtures are never regenerated in place (write to another directory, \
             or add a v2/ for a new format)",
            v1.display()
        );
        std::process::exit(2);
    }
    std::fs::create_dir_all(&v1)?;
    let work = tempfile::tempdir()?;
    full_checkpoint_and_savepoint(work.path(), &v1)?;
    changelog_checkpoint(work.path(), &v1)?;
    println!("wrote {}", v1.display());
    Ok(())
}
