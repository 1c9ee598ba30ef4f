//! Checkpoints, savepoints and restore.
//!
//! # Checkpoints
//!
//! [`Checkpointer::checkpoint`] runs the synchronous part on the caller's thread: it freezes
//! the store's mutable region (without writing it), takes the current segment set by
//! reference, and serializes the state meta info and the operator and broadcast state. That is
//! all; it does not grow with the state's size. The asynchronous part runs on the
//! checkpointer's thread while processing goes on: it waits for the frozen region to be written
//! as a segment by the store's flush thread, puts every segment that no earlier checkpoint
//! stored into the [`CheckpointStorage`] (a hard link for a local directory on the same file
//! system, a copy otherwise), makes them durable, and writes the manifest atomically. The
//! checkpoint exists once its manifest is durable.
//!
//! Segments are immutable and named uniquely (`<owner>-<backend>-<segment id>.seg`, the owner
//! being random per checkpointer and the backend numbered within the process), so an
//! incremental checkpoint stores only the segments that are new since the previous one. Shared
//! files are counted by the retained manifests that name them and removed when none does
//! ([`CheckpointOptions::retain`]); what a failed, aborted or crashed checkpoint left behind is
//! removed at once or when the storage is opened again. One checkpointer writes to a storage
//! at a time (it holds the storage's lock).
//!
//! ```
//! # fn main() -> eddy::Result<()> {
//! use eddy::checkpoint::{CheckpointOptions, Checkpointer, RestoreSource};
//! use eddy::codec::U64;
//! use eddy::state::{KeyedBackend, OperatorStateBackend, ValueStateDescriptor};
//!
//! let dir = tempfile::tempdir().expect("temporary directory");
//! let mut backend = KeyedBackend::builder(U64).open(dir.path().join("store"))?;
//! let count = backend.state(ValueStateDescriptor::new("count", U64))?;
//! backend.set_current_key(&7)?;
//! count.update(&mut backend, &1)?;
//!
//! let mut checkpoints = Checkpointer::local(dir.path().join("checkpoints"), CheckpointOptions::new())?;
//! let operator = OperatorStateBackend::new();
//! checkpoints.checkpoint(1, &mut backend, &operator, false)?; // returns at once
//! count.update(&mut backend, &2)?; // after the barrier: not in checkpoint 1
//! checkpoints.wait(1)?;
//!
//! let source = RestoreSource::Checkpoint { storage: checkpoints.storage().clone(), id: 1 };
//! let (mut restored, _) = KeyedBackend::builder(U64).restore(dir.path().join("restored"), &[source])?;
//! let count = restored.state(ValueStateDescriptor::new("count", U64))?;
//! restored.set_current_key(&7)?;
//! assert_eq!(count.get(&mut restored)?, Some(1));
//! # Ok(())
//! # }
//! ```
//!
//! # Checkpoints with a changelog
//!
//! A backend whose store keeps a changelog ([`StoreOptions::changelog`]) is checkpointed the
//! way Flink's changelog state backend is. Every write is also appended to the log, which a
//! thread of the store writes and syncs while processing goes on. The synchronous part seals
//! the log; the asynchronous part waits for its last frames to be durable, stores the sealed
//! file, and writes a manifest naming the segments of the last time the state was stored (the
//! materialization) and every changelog file since (`format-spec/changelog.md`). It does not
//! flush the state, so its duration follows the writes of its last moments, not those since
//! the previous checkpoint. The first checkpoint of a backend, one after a change the log does
//! not describe, and a full one store the state as above. Once
//! [`CheckpointOptions::materialize_after`] bytes of log were sealed, a checkpoint also takes
//! the store's frozen view; after it completes, a thread of the checkpointer stores that state,
//! and the checkpoints after it is done start from it (the older log files are then only named
//! by older checkpoints, and removed with them). [`Checkpointer::settle`] waits for it. A
//! restore applies the writes of the named changelog files again, in order, to the store
//! restored from the segments (its mutable region holds them, as the checkpointed one did).
//! Writes before the first checkpoint are not logged: it stores the state. The cost:
//! every write is copied into the log, the log's bytes go to the disk besides the state's, and
//! a restore replays up to `materialize_after` bytes of log. A checkpoint that is aborted or
//! fails still stores its log file, which the next one names; one aborted while it stored the
//! state leaves that state to the next checkpoint, which stores it with its own log.
//!
//! # Savepoints
//!
//! [`Checkpointer::savepoint`] takes the same synchronous snapshot and writes, in the
//! background, one self-contained file in the canonical format of `format::savepoint`: the
//! records by key group, with the meta info. Restoring from it rebuilds segments and never
//! touches the savepoint's files.
//!
//! # Restore
//!
//! [`KeyedBackendBuilder::restore`](crate::state::KeyedBackendBuilder::restore) opens a backend
//! from one or more [`RestoreSource`]s, keeping the key groups the new backend owns.
//!
//! [`StoreOptions::changelog`]: crate::store::StoreOptions::changelog

mod chain;
mod janitor;
mod restore;
mod retention;
mod savepoint;
mod source;
mod storage;
mod upload;
mod verify;
mod worker;

pub use restore::{latest_checkpoint, RestoreSource, Restored};
pub use source::{OperatorSource, SnapshotSource};
pub use storage::{CheckpointStorage, LocalDirStorage, Transfer, SHARED_DIR};
pub use verify::{verify_checkpoint, verify_savepoint, Problem};

pub(crate) use restore::{origin_for, prepare_store, replay, Origin, Prepared, RestoreTarget};
pub(crate) use source::{sealed, RecordFilter, SavepointParts, SnapshotParts};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use janitor::Janitor;
use savepoint::{claim_savepoint_dir, savepoint};
use worker::{CheckpointJob, Job, Outcome, SavepointJob, Worker};

use crate::error::{Error, Misuse, Result};
use crate::format::checkpoint::CheckpointManifest;
use crate::io::{FileSystem, StdFs};

/// The name of the savepoint file in a savepoint directory.
pub const SAVEPOINT_FILE: &str = "SAVEPOINT";

/// The file that claims a savepoint directory while its savepoint is written.
pub const SAVEPOINT_CLAIM: &str = "SAVEPOINT.claim";

/// How a [`Checkpointer`] works.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    max_in_flight: usize,
    retain: usize,
    incremental: bool,
    savepoint_compression: Option<i32>,
    materialize_after: u64,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        CheckpointOptions {
            max_in_flight: 2,
            retain: 1,
            incremental: true,
            savepoint_compression: None,
            materialize_after: 16 << 20,
        }
    }
}

impl CheckpointOptions {
    /// Incremental checkpoints, at most 2 in flight, the last one retained, uncompressed
    /// savepoints.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many checkpoints and savepoints may be in flight at once (at least 1).
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// How many completed checkpoints are kept (at least 1); older ones are removed with the
    /// shared files only they name.
    #[must_use]
    pub fn retain(mut self, n: usize) -> Self {
        self.retain = n;
        self
    }

    /// Whether checkpoints reuse the files of earlier ones (the default) or store everything.
    #[must_use]
    pub fn incremental(mut self, incremental: bool) -> Self {
        self.incremental = incremental;
        self
    }

    /// The zstd level of savepoint chunks, or `None` (the default, as in Flink) for
    /// uncompressed savepoints, which are written at the disk's speed.
    #[must_use]
    pub fn savepoint_compression(mut self, level: Option<i32>) -> Self {
        self.savepoint_compression = level;
        self
    }

    /// For a backend whose store keeps a changelog
    /// ([`StoreOptions::changelog`](crate::store::StoreOptions::changelog)): once the changelog
    /// sealed since the state was last stored reaches this many bytes (16 MiB by
    /// default), the next checkpoint also takes the state, which is stored (materialized) in the
    /// background after that checkpoint completes, so that later checkpoints name a shorter log
    /// and a restore replays less. See [Checkpoints with a changelog](self#checkpoints-with-a-changelog).
    #[must_use]
    pub fn materialize_after(mut self, bytes: u64) -> Self {
        self.materialize_after = bytes;
        self
    }
}

/// What kind of snapshot an outcome is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// A checkpoint that reuses the files of earlier ones.
    Incremental,
    /// A checkpoint that stores every file anew.
    Full,
    /// A savepoint.
    Savepoint,
}

/// A completed checkpoint or savepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointInfo {
    /// Its id.
    pub id: u64,
    /// What it is.
    pub kind: SnapshotKind,
    /// The files it names: segments and changelog files.
    pub files: usize,
    /// Of those, the changelog files (written since the state was last stored).
    pub logs: usize,
    /// The files it stored that no earlier checkpoint had.
    pub new_files: usize,
    /// Bytes copied into the storage (linked files cost none).
    pub bytes_copied: u64,
    /// Bytes of the files it stored anew, linked or copied.
    pub bytes_new: u64,
    /// The size of its manifest (or of the savepoint file).
    pub manifest_bytes: u64,
    /// The size of the whole state it names: its files (shared with earlier checkpoints or
    /// not) and its manifest; a savepoint's file.
    pub state_bytes: u64,
    /// How long the asynchronous part took.
    pub async_duration: Duration,
}

/// Takes checkpoints and savepoints of a keyed backend (and its operator state) into a
/// [`CheckpointStorage`]. See the [module documentation](self).
pub struct Checkpointer {
    storage: Arc<dyn CheckpointStorage>,
    opts: CheckpointOptions,
    tx: Option<Sender<Job>>,
    rx: Receiver<Outcome>,
    thread: Option<JoinHandle<()>>,
    /// Per checkpoint or savepoint in flight: its abort flag, and whether it is a savepoint.
    in_flight: BTreeMap<u64, (Arc<AtomicBool>, bool)>,
    finished: BTreeMap<u64, Result<CheckpointInfo>>,
    last_id: Option<u64>,
    retained: Arc<Mutex<Vec<u64>>>,
    /// The latest checkpoint confirmed by [`notify_checkpoint_complete`](Self::notify_checkpoint_complete).
    confirmed: Option<u64>,
    /// The backend whose changelog the checkpoints follow, and the log bytes sealed since its
    /// state was last stored.
    chain: Option<(u64, u64)>,
    rematerialize: Arc<AtomicBool>,
    _lock: crate::io::LockGuard,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("storage", &self.storage)
            .field("in_flight", &self.in_flight.keys().collect::<Vec<_>>())
            .field("retained", &self.retained())
            .finish()
    }
}

/// A random name for the files of one checkpointer, so that two never clash.
fn random_owner() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

impl Checkpointer {
    /// A checkpointer over `storage`. Checkpoints already there are taken as completed (and
    /// subject to retention); what an interrupted checkpoint left behind is removed.
    pub fn new(storage: Arc<dyn CheckpointStorage>, opts: CheckpointOptions) -> Result<Self> {
        if opts.max_in_flight == 0 {
            return Err(Misuse::InvalidOption { name: "max_in_flight", why: "must be at least 1" }.into());
        }
        if opts.retain == 0 {
            return Err(Misuse::InvalidOption { name: "retain", why: "must be at least 1" }.into());
        }
        let lock = storage.lock()?;
        storage.remove_temporaries()?;
        let mut completed = BTreeMap::new();
        let mut keep_shared = false;
        for id in storage.manifests()? {
            let bytes = storage.read_manifest(id)?;
            match CheckpointManifest::decode(&bytes) {
                Ok(m) => {
                    let files = m.segments.into_iter().map(|s| s.file).chain(m.logs.into_iter().map(|l| l.file));
                    completed.insert(id, files.collect());
                }
                Err(_) => keep_shared = true,
            }
        }
        if !keep_shared {
            let live: HashSet<&String> = completed.values().flatten().collect();
            for name in storage.shared_files()? {
                if !live.contains(&name) {
                    storage.remove(&name)?;
                }
            }
        }
        let retained = Arc::new(Mutex::new(completed.keys().copied().collect()));
        let rematerialize = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            storage: storage.clone(),
            owner: random_owner(),
            retain: opts.retain,
            uploaded: HashMap::new(),
            completed,
            confirmed: None,
            keep_shared,
            retained: retained.clone(),
            chain: None,
            held_by_chain: Vec::new(),
            unstored_base: None,
            deferred: None,
            materializing: None,
            generations: 0,
            rematerialize: rematerialize.clone(),
            janitor: Janitor::start(storage.clone()).map_err(|e| Error::io(storage.describe(""), e))?,
        };
        let (tx, jobs) = mpsc::channel::<Job>();
        let (done, rx) = mpsc::channel::<Outcome>();
        let thread = std::thread::Builder::new()
            .name("eddy-checkpoint".into())
            .spawn(move || {
                crate::sys::background_thread();
                // Set once a job panicked: the worker's bookkeeping may be half done, so it
                // takes no more work, and every later job fails with the same error.
                let mut died: Option<String> = None;
                let guard = |work: &mut dyn FnMut() -> Result<CheckpointInfo>, died: &mut Option<String>| {
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
                        Ok(result) => result,
                        Err(p) => {
                            let e = Error::worker_died("checkpoint", &*p);
                            if let Error::WorkerDied { why, .. } = &e {
                                *died = Some(why.clone());
                            }
                            Err(e)
                        }
                    }
                };
                while let Ok(job) = jobs.recv() {
                    if let Some(why) = &died {
                        let id = match job {
                            Job::Checkpoint(job) => job.id,
                            Job::Savepoint(job) => {
                                let _ = job.fs.remove(&job.dir.join(SAVEPOINT_CLAIM));
                                job.id
                            }
                            Job::Confirm(_) | Job::Settle(_) => continue,
                        };
                        let e = Error::WorkerDied { worker: "checkpoint", why: why.clone() };
                        if done.send((id, Err(e))).is_err() {
                            return;
                        }
                        continue;
                    }
                    let outcome = match job {
                        Job::Checkpoint(job) => {
                            let id = job.id;
                            let mut job = Some(job);
                            let mut work = || match job.take() {
                                Some(job) => worker.checkpoint(job),
                                None => Err(Error::Aborted { id }),
                            };
                            (id, guard(&mut work, &mut died))
                        }
                        Job::Savepoint(job) => {
                            let (id, fs, claim) = (job.id, job.fs.clone(), job.dir.join(SAVEPOINT_CLAIM));
                            let mut job = Some(job);
                            let mut work = || match job.take() {
                                Some(job) => savepoint(*job),
                                None => Err(Error::Aborted { id }),
                            };
                            let result = guard(&mut work, &mut died);
                            if died.is_some() {
                                let _ = fs.remove(&claim);
                            }
                            (id, result)
                        }
                        Job::Confirm(id) => {
                            // One that failed after all names nothing to keep.
                            if !worker.completed.contains_key(&id) {
                                continue;
                            }
                            worker.confirmed = worker.confirmed.max(Some(id));
                            worker.collect();
                            continue;
                        }
                        Job::Settle(reply) => {
                            worker.install_materialization(true);
                            worker.janitor.pending.settle();
                            let _ = reply.send(());
                            continue;
                        }
                    };
                    let completed = matches!(outcome, (_, Ok(_)));
                    if done.send(outcome).is_err() {
                        return;
                    }
                    if completed {
                        worker.collect();
                    }
                    worker.materialize();
                }
                // What a materialization put is named by no manifest yet: remove it.
                worker.discard_materialization();
            })
            .map_err(|e| Error::io(storage.describe(""), e))?;
        let last_id = retained.lock().unwrap_or_else(|e| e.into_inner()).last().copied();
        Ok(Checkpointer {
            storage,
            opts,
            tx: Some(tx),
            rx,
            thread: Some(thread),
            in_flight: BTreeMap::new(),
            finished: BTreeMap::new(),
            last_id,
            retained,
            confirmed: None,
            chain: None,
            rematerialize,
            _lock: lock,
        })
    }

    /// A checkpointer over a local directory on the real file system.
    pub fn local(root: impl Into<PathBuf>, opts: CheckpointOptions) -> Result<Self> {
        Self::new(Arc::new(LocalDirStorage::new(Arc::new(StdFs::new()), root)?), opts)
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn CheckpointStorage> {
        &self.storage
    }

    /// The completed checkpoints that are retained, ascending.
    pub fn retained(&self) -> Vec<u64> {
        self.retained.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn admit(&mut self, id: u64) -> Result<Arc<AtomicBool>> {
        self.collect_outcomes(false);
        if self.last_id.is_some_and(|last| id <= last) {
            return Err(
                Misuse::InvalidOption { name: "checkpoint id", why: "must be larger than every earlier id" }.into()
            );
        }
        if self.in_flight.len() >= self.opts.max_in_flight {
            return Err(Misuse::TooManyInFlight { limit: self.opts.max_in_flight }.into());
        }
        Ok(Arc::new(AtomicBool::new(false)))
    }

    fn submit(&mut self, id: u64, abort: Arc<AtomicBool>, job: Job) -> Result<()> {
        let savepoint = matches!(job, Job::Savepoint(_));
        let sent = self.tx.as_ref().map(|tx| tx.send(job).is_ok()).unwrap_or(false);
        if !sent {
            return Err(Error::WorkerDied { worker: "checkpoint", why: "the thread is gone".into() });
        }
        self.last_id = Some(id);
        self.in_flight.insert(id, (abort, savepoint));
        Ok(())
    }

    /// The synchronous part of checkpoint `id` (ids ascend): freezes what must be frozen and
    /// returns; the rest runs in the background. Its outcome comes from [`poll`](Self::poll)
    /// or [`wait`](Self::wait). A full checkpoint is taken when the options say so or `full`
    /// is set.
    pub fn checkpoint(
        &mut self,
        id: u64,
        backend: &mut impl SnapshotSource,
        operator: &impl OperatorSource,
        full: bool,
    ) -> Result<()> {
        let abort = self.admit(id)?;
        let full = full || !self.opts.incremental;
        let backend_id = backend.backend_id();
        let (limit, chain) = (self.opts.materialize_after, &mut self.chain);
        let rematerialize = self.rematerialize.swap(false, Ordering::AcqRel);
        // With a changelog, the state is stored only now and then: when it never was for this
        // backend, when the log is not continuous or broke, or when enough log was written.
        let parts = backend.checkpoint_parts(operator.operator_snapshot(), &mut |seal| {
            let since = chain.filter(|c| c.0 == backend_id).map_or(u64::MAX, |c| c.1).saturating_add(seal.bytes);
            let materialize = full || rematerialize || !seal.continuous || since >= limit;
            *chain = Some((backend_id, if materialize { 0 } else { since }));
            materialize
        });
        let parts = match parts {
            Ok(parts) => parts,
            Err(e) => {
                // A sealed log may be lost with this snapshot.
                self.chain = None;
                return Err(e);
            }
        };
        let seeds = backend.take_origin(&self.storage.describe(""));
        let job = CheckpointJob {
            id,
            backend: backend_id,
            full,
            snapshot: parts.store,
            log: parts.log,
            meta: parts.meta,
            next_segment_id: parts.next_segment_id,
            seeds,
            abort: abort.clone(),
        };
        self.submit(id, abort, Job::Checkpoint(Box::new(job)))
    }

    /// The synchronous part of savepoint `id`, written to the directory `dir` of `fs`; the file
    /// is written in the background. Its outcome comes like a checkpoint's.
    ///
    /// The directory is claimed here, atomically, by creating its [`SAVEPOINT_CLAIM`] file:
    /// a directory that holds a savepoint, or one being written by this or another
    /// checkpointer, is refused with [`Misuse::NotEmpty`]. The claim is removed when the
    /// savepoint is complete or has failed; one left by a crash must be removed by hand.
    pub fn savepoint(
        &mut self,
        id: u64,
        fs: Arc<dyn FileSystem>,
        dir: impl Into<PathBuf>,
        backend: &mut impl SnapshotSource,
        operator: &impl OperatorSource,
    ) -> Result<()> {
        let dir = dir.into();
        let abort = self.admit(id)?;
        claim_savepoint_dir(fs.as_ref(), &dir)?;
        let parts = backend.savepoint_parts(operator.operator_snapshot());
        let parts = match parts {
            Ok(p) => p,
            Err(e) => {
                let _ = fs.remove(&dir.join(SAVEPOINT_CLAIM));
                return Err(e);
            }
        };
        let job = SavepointJob {
            id,
            fs,
            dir,
            snapshot: parts.store,
            meta: parts.meta,
            range: parts.range,
            filter: parts.filter,
            level: self.opts.savepoint_compression,
            abort: abort.clone(),
        };
        let (fs, claim) = (job.fs.clone(), job.dir.join(SAVEPOINT_CLAIM));
        let submitted = self.submit(id, abort, Job::Savepoint(Box::new(job)));
        if submitted.is_err() {
            let _ = fs.remove(&claim);
        }
        submitted
    }

    fn collect_outcomes(&mut self, wait: bool) {
        let mut first = wait;
        loop {
            let next = if first {
                first = false;
                self.rx.recv().map_err(|_| mpsc::TryRecvError::Disconnected)
            } else {
                self.rx.try_recv()
            };
            match next {
                Ok((id, result)) => {
                    self.in_flight.remove(&id);
                    self.finished.insert(id, result);
                }
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => {
                    // The checkpoint thread is gone: nothing in flight will finish.
                    for id in std::mem::take(&mut self.in_flight).into_keys() {
                        let gone = Error::WorkerDied { worker: "checkpoint", why: "the thread stopped".into() };
                        self.finished.insert(id, Err(gone));
                    }
                    return;
                }
            }
        }
    }

    /// The outcomes of the checkpoints and savepoints that finished since the last call.
    pub fn poll(&mut self) -> Vec<(u64, Result<CheckpointInfo>)> {
        self.collect_outcomes(false);
        std::mem::take(&mut self.finished).into_iter().collect()
    }

    /// Waits for checkpoint or savepoint `id` to finish.
    pub fn wait(&mut self, id: u64) -> Result<CheckpointInfo> {
        loop {
            if let Some(result) = self.finished.remove(&id) {
                return result;
            }
            if !self.in_flight.contains_key(&id) {
                self.collect_outcomes(false);
                if let Some(result) = self.finished.remove(&id) {
                    return result;
                }
                return Err(Misuse::UnknownCheckpoint { id }.into());
            }
            self.collect_outcomes(true);
        }
    }

    /// Waits for every checkpoint and savepoint in flight.
    pub fn wait_all(&mut self) -> Vec<(u64, Result<CheckpointInfo>)> {
        while !self.in_flight.is_empty() {
            self.collect_outcomes(true);
        }
        self.poll()
    }

    /// Aborts checkpoint or savepoint `id` if it is in flight: it ends with
    /// [`Error::Aborted`] and what it wrote is removed. Returns whether it was in flight.
    pub fn abort(&mut self, id: u64) -> bool {
        self.collect_outcomes(false);
        match self.in_flight.get(&id) {
            Some((flag, _)) => {
                flag.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Says that checkpoint `id` completed everywhere (Flink's `notifyCheckpointComplete`):
    /// checkpoints (not savepoints) still in flight with smaller ids are aborted, and `id` is
    /// never removed by retention in favour of an unconfirmed one.
    ///
    /// As in Flink, an id that was never triggered here, a savepoint's, one that failed, and
    /// one subsumed by a later confirmation are ignored.
    pub fn notify_checkpoint_complete(&mut self, id: u64) {
        self.collect_outcomes(false);
        if self.confirmed.is_some_and(|c| id <= c) {
            return;
        }
        let known = match self.in_flight.get(&id) {
            Some((_, savepoint)) => !savepoint,
            None => {
                matches!(self.finished.get(&id), Some(Ok(info)) if info.kind != SnapshotKind::Savepoint)
                    || self.retained().contains(&id)
            }
        };
        if !known {
            return;
        }
        self.confirmed = Some(id);
        for (flag, _) in self.in_flight.range(..id).map(|(_, f)| f).filter(|(_, savepoint)| !savepoint) {
            flag.store(true, Ordering::Release);
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job::Confirm(id));
        }
    }

    /// Waits for what is in flight and stops the checkpointer's thread.
    pub fn close(mut self) -> Vec<(u64, Result<CheckpointInfo>)> {
        let out = self.wait_all();
        self.shutdown();
        out
    }

    /// Waits until the work that follows completed checkpoints in the background is done:
    /// storing the state of a backend with a changelog (see
    /// [`CheckpointOptions::materialize_after`]), after which the next checkpoint names the
    /// stored state, and removing the shared files of subsumed checkpoints.
    pub fn settle(&mut self) -> Result<()> {
        let (reply, done) = mpsc::channel();
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(Job::Settle(reply)).is_ok());
        if !sent || done.recv().is_err() {
            return Err(Error::WorkerDied { worker: "checkpoint", why: "the thread is gone".into() });
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        for (flag, _) in self.in_flight.values() {
            flag.store(true, Ordering::Release);
        }
        self.shutdown();
    }
}

/// The path of the savepoint file in `dir`.
pub fn savepoint_file(dir: &Path) -> PathBuf {
    dir.join(SAVEPOINT_FILE)
}
