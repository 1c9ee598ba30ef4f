//! Crashes and I/O errors at every file-system operation of a checkpoint (with flushes and
//! compactions running alongside): the last completed checkpoint always restores exactly,
//! what the interrupted one left behind is collected, and after an I/O error the next
//! checkpoint succeeds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use eddy::checkpoint::{
    latest_checkpoint, verify_checkpoint, CheckpointOptions, CheckpointStorage, Checkpointer, LocalDirStorage,
    RestoreSource,
};
use eddy::codec::{U32, U64};
use eddy::format::checkpoint::CheckpointManifest;
use eddy::io::{FaultFs, FaultKind, FileSystem};
use eddy::state::{
    KeyedBackend, ListState, ListStateDescriptor, OperatorStateBackend, ValueState, ValueStateDescriptor,
};
use eddy::store::{CompactionOptions, StoreOptions};
use eddy::Error;

type Model = (BTreeMap<u64, u64>, BTreeMap<u64, Vec<u32>>);

struct Job {
    fs: FaultFs,
    storage: Arc<dyn CheckpointStorage>,
    next_dir: u32,
    /// Whether the backends keep a changelog (and every checkpoint after the first then
    /// materializes the state once it completed).
    changelog: bool,
}

fn store_options(fs: &FaultFs) -> StoreOptions {
    store_options_with(fs, false)
}

fn store_options_with(fs: &FaultFs, changelog: bool) -> StoreOptions {
    StoreOptions::new()
        .changelog(changelog)
        .file_system(Arc::new(fs.clone()))
        .memory_budget(256 << 10)
        .compaction(CompactionOptions { trigger: 2, ..CompactionOptions::default() })
}

fn handles(b: &mut KeyedBackend<U64>) -> (ValueState<U64>, ListState<U32>) {
    (b.state(ValueStateDescriptor::new("v", U64)).unwrap(), b.state(ListStateDescriptor::new("l", U32)).unwrap())
}

fn write(b: &mut KeyedBackend<U64>, model: &mut Model, round: u64) -> eddy::Result<()> {
    let (v, l) = handles(b);
    for k in 0..400u64 {
        b.set_current_key(&k)?;
        v.update(b, &(k + round * 1000))?;
        model.0.insert(k, k + round * 1000);
        if k % 3 == round % 3 {
            l.add(b, &(round as u32))?;
            model.1.entry(k).or_default().push(round as u32);
        }
    }
    Ok(())
}

fn read(b: &mut KeyedBackend<U64>) -> Model {
    let (v, l) = handles(b);
    let mut m = Model::default();
    for k in b.keys(&v).unwrap() {
        b.set_current_key(&k).unwrap();
        m.0.insert(k, v.get(b).unwrap().unwrap());
    }
    for k in b.keys(&l).unwrap() {
        b.set_current_key(&k).unwrap();
        m.1.insert(k, l.get_vec(b).unwrap());
    }
    m
}

impl Job {
    fn new() -> Self {
        Self::with_changelog(false)
    }

    fn with_changelog(changelog: bool) -> Self {
        let fs = FaultFs::new();
        let storage = Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), "/cp").unwrap());
        Job { fs, storage, next_dir: 0, changelog }
    }

    fn options(&self) -> CheckpointOptions {
        if self.changelog {
            CheckpointOptions::new().materialize_after(1)
        } else {
            CheckpointOptions::new()
        }
    }

    fn backend(&mut self, from: Option<u64>) -> KeyedBackend<U64> {
        self.next_dir += 1;
        let dir = format!("/store-{}", self.next_dir);
        let builder =
            KeyedBackend::builder(U64).max_parallelism(8).store_options(store_options_with(&self.fs, self.changelog));
        match from {
            None => builder.open(dir).unwrap(),
            Some(id) => {
                builder.restore(dir, &[RestoreSource::Checkpoint { storage: self.storage.clone(), id }]).unwrap().0
            }
        }
    }

    /// A checkpointer over the job's storage and a new backend holding the first round of
    /// writes (flushed to a segment if `flush`), with its model.
    fn started(&mut self, flush: bool) -> (Checkpointer, KeyedBackend<U64>, Model) {
        let cp = Checkpointer::new(self.storage.clone(), self.options()).unwrap();
        let mut b = self.backend(None);
        let mut model = Model::default();
        write(&mut b, &mut model, 1).unwrap();
        if flush {
            b.store().flush().unwrap();
        }
        (cp, b, model)
    }

    /// The shared files are exactly those the manifests name.
    fn check_no_leftovers(&self) {
        let mut named = BTreeSet::new();
        for id in self.storage.manifests().unwrap() {
            let m = CheckpointManifest::decode(&self.storage.read_manifest(id).unwrap()).unwrap();
            named.extend(m.segments.into_iter().map(|s| s.file));
            named.extend(m.logs.into_iter().map(|l| l.file));
        }
        let stored: BTreeSet<String> = self.storage.shared_files().unwrap().into_iter().collect();
        assert_eq!(stored, named);
    }
}

/// Checkpoint 1 completes; then a fault is armed `at` operations into checkpoint 2 (with
/// writes, flushes and compactions going on). Returns the number of operations checkpoint 2
/// and its surroundings took, and whether the fault fired.
fn scenario(at: Option<(u64, FaultKind)>, changelog: bool) -> (u64, bool) {
    let mut job = Job::with_changelog(changelog);
    let (mut cp, mut b, mut model) = job.started(false);
    let op = OperatorStateBackend::new();
    let mut models = BTreeMap::new();
    cp.checkpoint(1, &mut b, &op, false).unwrap();
    cp.wait(1).unwrap();
    models.insert(1u64, model.clone());

    let base = job.fs.ops();
    if let Some((n, kind)) = at {
        job.fs.fail_at(base + n, kind);
    }
    let result: eddy::Result<()> = (|| {
        write(&mut b, &mut model, 2)?;
        b.store().flush()?;
        cp.checkpoint(2, &mut b, &op, false)?;
        models.insert(2, model.clone());
        write(&mut b, &mut model, 3)?;
        cp.wait(2)?;
        Ok(())
    })();
    // Background work stops before the file system is looked at.
    drop(cp);
    drop(b);
    let used = job.fs.ops() - base;
    let crashed = job.fs.is_crashed();
    let fired = at.is_some_and(|(n, _)| n < used) || crashed;
    job.fs.disarm();
    if crashed {
        job.fs.recover();
    }
    let ok = result.is_ok();
    if at.is_none() {
        result.unwrap();
    }

    // Open the storage again: leftovers go; the newest checkpoint restores exactly.
    let mut cp = Checkpointer::new(job.storage.clone(), job.options()).unwrap();
    job.check_no_leftovers();
    let latest = latest_checkpoint(job.storage.as_ref()).unwrap().expect("checkpoint 1 completed");
    assert!(verify_checkpoint(job.storage.as_ref(), latest).is_empty());
    if ok && !crashed {
        assert_eq!(latest, 2);
    }
    let mut b = job.backend(Some(latest));
    assert_eq!(read(&mut b), models[&latest], "checkpoint {latest} after a fault at {at:?}");

    // And the next checkpoint succeeds and restores.
    let mut model = models[&latest].clone();
    write(&mut b, &mut model, 4).unwrap();
    cp.checkpoint(10, &mut b, &op, false).unwrap();
    cp.wait(10).unwrap();
    cp.settle().unwrap();
    drop(b);
    job.check_no_leftovers();
    let mut b = job.backend(Some(10));
    assert_eq!(read(&mut b), model);
    (used, fired)
}

fn every_operation(kind: FaultKind, changelog: bool) {
    let (clean, _) = scenario(None, changelog);
    assert!(clean > 5);
    let mut fired = 0;
    for n in 0..clean + 8 {
        if scenario(Some((n, kind)), changelog).1 {
            fired += 1;
        }
    }
    assert!(fired > 0);
    eprintln!("{kind:?}: {clean} operations, the fault fired in {fired} runs");
}

#[test]
fn a_crash_at_every_operation_of_a_checkpoint_keeps_the_last_completed_one() {
    every_operation(FaultKind::Crash, false);
}

#[test]
fn an_io_error_at_every_operation_fails_the_checkpoint_cleanly_and_the_next_succeeds() {
    every_operation(FaultKind::Error, false);
}

/// The same with a changelog: the log written alongside the writes, the checkpoint that stores
/// it, and the materialization after it.
#[test]
fn with_a_changelog_a_crash_at_every_operation_keeps_the_last_completed_checkpoint() {
    every_operation(FaultKind::Crash, true);
}

#[test]
fn with_a_changelog_an_io_error_at_every_operation_fails_cleanly_and_the_next_checkpoint_succeeds() {
    every_operation(FaultKind::Error, true);
}

#[test]
fn corrupted_and_missing_checkpoint_files_give_typed_errors_and_verify_names_them() {
    let mut job = Job::new();
    let (mut cp, mut b, _) = job.started(true);
    cp.checkpoint(1, &mut b, &OperatorStateBackend::new(), false).unwrap();
    cp.wait(1).unwrap();
    drop(cp);
    let manifest = job.storage.describe_manifest(1);
    let shared = job.storage.shared_files().unwrap();
    let segment = job.storage.describe(&shared[0]);
    let restore = |job: &mut Job| {
        job.next_dir += 1;
        KeyedBackend::builder(U64)
            .max_parallelism(8)
            .store_options(store_options(&job.fs))
            .restore(
                format!("/r{}", job.next_dir),
                &[RestoreSource::Checkpoint { storage: job.storage.clone(), id: 1 }],
            )
            .map(|_| ())
    };

    // A flipped byte in the manifest.
    let good = job.fs.read(&manifest).unwrap();
    job.fs.corrupt(&manifest, 30, 0x40).unwrap();
    assert!(matches!(restore(&mut job), Err(Error::Corrupted { ref file, .. }) if *file == manifest));
    let problems = verify_checkpoint(job.storage.as_ref(), 1);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].file, manifest);

    // A future version, as a newer writer signs it.
    let mut future = good.clone();
    future[4] = 9;
    let crc = crc32fast::hash(&future[..future.len() - 4]);
    let at = future.len() - 4;
    future[at..].copy_from_slice(&crc.to_le_bytes());
    write_file(&job.fs, &manifest, &future);
    assert!(matches!(restore(&mut job), Err(Error::UnsupportedVersion { found: 9, .. })));
    // The newest checkpoint is unreadable by this build: no silent fallback to an older one.
    assert!(matches!(latest_checkpoint(job.storage.as_ref()), Err(Error::UnsupportedVersion { found: 9, .. })));
    write_file(&job.fs, &manifest, &good);
    restore(&mut job).unwrap();

    // A flipped byte in a segment: verify finds it; reading the state reports it.
    let seg_bytes = job.fs.read(&segment).unwrap();
    job.fs.corrupt(&segment, 20, 0x01).unwrap();
    let problems = verify_checkpoint(job.storage.as_ref(), 1);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].file, segment);
    assert!(problems[0].offset.is_some());
    write_file(&job.fs, &segment, &seg_bytes);

    // A truncated segment.
    job.fs.truncate(&segment, seg_bytes.len() as u64 - 3).unwrap();
    assert!(restore(&mut job).is_err());
    assert!(!verify_checkpoint(job.storage.as_ref(), 1).is_empty());

    // A missing one.
    job.fs.remove(&segment).unwrap();
    assert!(matches!(restore(&mut job), Err(Error::Io { .. })));
    let problems = verify_checkpoint(job.storage.as_ref(), 1);
    assert_eq!(problems[0].file, segment);
}

fn write_file(fs: &FaultFs, path: &std::path::Path, bytes: &[u8]) {
    let mut f = fs.create(path).unwrap();
    f.append(bytes).unwrap();
    f.sync().unwrap();
}

#[test]
fn extra_files_are_collected_and_a_wrong_magic_is_refused() {
    let mut job = Job::new();
    let (mut cp, mut b, model) = job.started(false);
    cp.checkpoint(1, &mut b, &OperatorStateBackend::new(), false).unwrap();
    cp.wait(1).unwrap();
    drop(cp);
    // Strays: a shared file no manifest names, and a temporary manifest.
    write_file(&job.fs, &job.storage.describe("shared/stray.seg"), b"not a segment");
    write_file(&job.fs, std::path::Path::new("/cp/chk-00000000000000000002.manifest.tmp"), b"half");
    let cp = Checkpointer::new(job.storage.clone(), CheckpointOptions::new()).unwrap();
    // One checkpointer per storage.
    let again = Checkpointer::new(job.storage.clone(), CheckpointOptions::new());
    assert!(matches!(again, Err(Error::Misuse(eddy::Misuse::AlreadyOpen))), "{again:?}");
    drop(cp);
    job.check_no_leftovers();
    assert!(!job.fs.exists(std::path::Path::new("/cp/chk-00000000000000000002.manifest.tmp")));
    let mut r = job.backend(Some(1));
    assert_eq!(read(&mut r), model);

    // A manifest with the wrong magic bytes.
    let manifest = job.storage.describe_manifest(1);
    job.fs.corrupt(&manifest, 0, 0xff).unwrap();
    job.next_dir += 1;
    let err = KeyedBackend::builder(U64)
        .max_parallelism(8)
        .store_options(store_options(&job.fs))
        .restore("/wrong-magic", &[RestoreSource::Checkpoint { storage: job.storage.clone(), id: 1 }])
        .map(|_| ());
    assert!(matches!(err, Err(Error::Corrupted { kind: eddy::Corruption::BadMagic, offset: 0, .. })), "{err:?}");
    // A storage with a manifest it cannot read keeps every shared file.
    let shared = job.storage.shared_files().unwrap();
    let _cp = Checkpointer::new(job.storage.clone(), CheckpointOptions::new()).unwrap();
    assert_eq!(job.storage.shared_files().unwrap(), shared);
}

/// A crash at every file-system operation of a savepoint: afterwards the savepoint directory
/// either holds a complete savepoint that restores exactly, or none (a temporary file at most,
/// which the next savepoint into it replaces).
#[test]
fn a_crash_at_every_operation_of_a_savepoint_leaves_it_whole_or_absent() {
    let run = |at: Option<u64>| -> (u64, bool) {
        let mut job = Job::new();
        let (mut cp, mut b, model) = job.started(true);
        b.store().wait_for_background().unwrap();
        let base = job.fs.ops();
        if let Some(n) = at {
            job.fs.fail_at(base + n, FaultKind::Crash);
        }
        let fs: Arc<dyn FileSystem> = Arc::new(job.fs.clone());
        let done =
            cp.savepoint(1, fs, "/sp", &mut b, &OperatorStateBackend::new()).and_then(|()| cp.wait(1).map(|_| ()));
        drop(cp);
        drop(b);
        let used = job.fs.ops() - base;
        let crashed = job.fs.is_crashed();
        job.fs.disarm();
        if crashed {
            job.fs.recover();
        }
        if at.is_none() {
            done.unwrap();
        }
        let file = std::path::Path::new("/sp/SAVEPOINT");
        if job.fs.exists(file) {
            assert!(eddy::checkpoint::verify_savepoint(&job.fs, std::path::Path::new("/sp")).is_empty());
            job.next_dir += 1;
            let (mut r, _) = KeyedBackend::builder(U64)
                .max_parallelism(8)
                .store_options(store_options(&job.fs))
                .restore(
                    format!("/sp-restored-{}", job.next_dir),
                    &[RestoreSource::Savepoint { fs: Arc::new(job.fs.clone()), dir: "/sp".into() }],
                )
                .unwrap();
            assert_eq!(read(&mut r), model, "savepoint after a crash at {at:?}");
        } else {
            assert!(at.is_some(), "a savepoint without faults must exist");
        }
        (used, crashed)
    };
    let (clean, _) = run(None);
    let mut crashes = 0;
    for n in 0..clean + 4 {
        if run(Some(n)).1 {
            crashes += 1;
        }
    }
    assert!(crashes > 0);
}

/// Regression: directories made for checkpoints (the storage's, a savepoint's) were not
/// synced in their parent, so a crash right after a checkpoint completed could take the
/// directory, and the checkpoint with it. A completed checkpoint and a completed savepoint
/// survive a crash, however many directories were made for them.
#[test]
fn directories_made_for_checkpoints_and_savepoints_survive_a_crash() {
    let fs = FaultFs::new();
    let storage: Arc<dyn CheckpointStorage> =
        Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), "/jobs/one/checkpoints").unwrap());
    let mut cp = Checkpointer::new(storage.clone(), CheckpointOptions::new()).unwrap();
    let mut b = KeyedBackend::builder(U64).max_parallelism(8).store_options(store_options(&fs)).open("/s").unwrap();
    let mut model = Model::default();
    write(&mut b, &mut model, 1).unwrap();
    let op = OperatorStateBackend::new();
    cp.checkpoint(1, &mut b, &op, false).unwrap();
    cp.wait(1).unwrap();
    cp.savepoint(2, Arc::new(fs.clone()), "/savepoints/job/sp-2", &mut b, &op).unwrap();
    cp.wait(2).unwrap();
    drop(cp);
    drop(b);
    fs.recover();
    assert_eq!(latest_checkpoint(storage.as_ref()).unwrap(), Some(1));
    let builder = || KeyedBackend::builder(U64).max_parallelism(8).store_options(store_options(&fs));
    let (mut b, _) = builder().restore("/r/1", &[RestoreSource::Checkpoint { storage, id: 1 }]).unwrap();
    assert_eq!(read(&mut b), model);
    let sp = RestoreSource::Savepoint { fs: Arc::new(fs.clone()), dir: "/savepoints/job/sp-2".into() };
    let (mut b, _) = builder().restore("/r/2", &[sp]).unwrap();
    assert_eq!(read(&mut b), model);
}

/// Regression: a directory whose sync in its parent failed stayed unsynced when it was made
/// again, since `create_dir_durable` synced only the directories it found missing. A storage
/// or savepoint directory made again after such an error (a retried checkpointer or
/// savepoint) then held completed checkpoints and savepoints that a crash took with it. Made
/// again, each directory on the path is synced in its parent.
#[test]
fn a_directory_whose_sync_failed_is_synced_when_it_is_made_again() {
    let root = "/jobs/one/checkpoints";
    for n in 0..4 {
        let fs = FaultFs::new();
        fs.fail_at(fs.ops() + n, FaultKind::Error);
        let first = LocalDirStorage::new(Arc::new(fs.clone()), root);
        fs.disarm();
        let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), root).unwrap());
        let mut cp = Checkpointer::new(storage.clone(), CheckpointOptions::new()).unwrap();
        let mut b = KeyedBackend::builder(U64).max_parallelism(8).store_options(store_options(&fs)).open("/s").unwrap();
        let mut model = Model::default();
        write(&mut b, &mut model, 1).unwrap();
        let op = OperatorStateBackend::new();
        cp.checkpoint(1, &mut b, &op, false).unwrap();
        cp.wait(1).unwrap();
        // The savepoint directory: the first attempt fails as its directory is synced.
        let sp = "/savepoints/job/sp-2";
        let ops = fs.ops();
        fs.fail_at(ops + n, FaultKind::Error);
        let tried = cp.savepoint(2, Arc::new(fs.clone()), sp, &mut b, &op).and_then(|()| cp.wait(2).map(|_| ()));
        fs.disarm();
        let id = if tried.is_ok() { 3 } else { 2 };
        if tried.is_err() {
            cp.savepoint(id, Arc::new(fs.clone()), sp, &mut b, &op).unwrap();
            cp.wait(id).unwrap();
        }
        drop(cp);
        drop(b);
        fs.crash();
        let ctx = format!("error at {n}: storage {first:?}, savepoint {tried:?}");
        assert_eq!(latest_checkpoint(storage.as_ref()).unwrap(), Some(1), "{ctx}");
        let builder = || KeyedBackend::builder(U64).max_parallelism(8).store_options(store_options(&fs));
        let (mut r, _) = builder().restore("/r/1", &[RestoreSource::Checkpoint { storage, id: 1 }]).unwrap();
        assert_eq!(read(&mut r), model, "{ctx}");
        let source = RestoreSource::Savepoint { fs: Arc::new(fs.clone()), dir: sp.into() };
        let (mut r, _) = builder().restore("/r/2", &[source]).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(read(&mut r), model, "{ctx}");
    }
}

/// Regression: a restore that failed (an I/O error while it linked the segments or wrote the
/// store's manifest) left its files in the directory, and every later restore into it was
/// refused with `Misuse::NotEmpty`. A failed restore removes what it put there: tried again,
/// it succeeds.
#[test]
fn a_failed_restore_can_be_tried_again_in_its_directory() {
    let mut job = Job::new();
    let (mut cp, mut b, model) = job.started(true);
    cp.checkpoint(1, &mut b, &OperatorStateBackend::new(), false).unwrap();
    cp.wait(1).unwrap();
    drop(cp);
    let restore = |job: &Job, dir: &str| {
        KeyedBackend::builder(U64)
            .max_parallelism(8)
            .store_options(store_options(&job.fs))
            .restore(dir, &[RestoreSource::Checkpoint { storage: job.storage.clone(), id: 1 }])
    };
    let mut failed = 0;
    for n in 0..16 {
        let dir = format!("/again-{n}");
        job.fs.fail_at(job.fs.ops() + n, FaultKind::Error);
        let first = restore(&job, &dir).map(|_| ());
        job.fs.disarm();
        if first.is_err() {
            failed += 1;
            let (mut r, _) = restore(&job, &dir).unwrap_or_else(|e| panic!("error at {n}, then: {e}"));
            assert_eq!(read(&mut r), model, "error at {n}");
        }
    }
    assert!(failed > 3, "{failed}");
}

/// Regression: when the directory sync after removing a subsumed manifest failed, the
/// checkpointer kept that checkpoint as retained, and each later removal of it failed (its
/// manifest was gone): retention stopped for the checkpointer's life, every later checkpoint
/// and its files were kept, and `retained()` named a checkpoint that no longer existed. The
/// removal of a manifest that is gone now makes it durable and succeeds, so retention goes
/// on. An I/O error at each operation from the second of five checkpoints on (retain 1).
#[test]
fn retention_goes_on_after_the_removal_of_a_manifest_failed() {
    let mut stuck = Vec::new();
    for n in 0..40 {
        let mut job = Job::new();
        let mut cp = Checkpointer::new(job.storage.clone(), CheckpointOptions::new().retain(1)).unwrap();
        let mut b = job.backend(None);
        let mut model = Model::default();
        let op = OperatorStateBackend::new();
        let mut poisoned = false;
        for id in 1..=5u64 {
            if id == 2 {
                job.fs.fail_at(job.fs.ops() + n, FaultKind::Error);
            }
            // An error in the store's own files poisons it: nothing more to see then.
            if write(&mut b, &mut model, id).is_err() || cp.checkpoint(id, &mut b, &op, false).is_err() {
                poisoned = true;
                break;
            }
            let _ = cp.wait(id);
            cp.settle().unwrap();
        }
        job.fs.disarm();
        if poisoned {
            continue;
        }
        let manifests = job.storage.manifests().unwrap();
        if manifests != [5] || cp.retained() != [5] {
            stuck.push((n, manifests, cp.retained()));
        }
        drop(cp);
        job.check_no_leftovers();
    }
    assert!(stuck.is_empty(), "retention stopped after an error at: {stuck:?}");
}
