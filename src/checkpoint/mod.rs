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

mod restore;
mod source;
mod storage;
mod verify;

pub use restore::{latest_checkpoint, RestoreSource, Restored};
pub use source::{OperatorSource, SnapshotSource};
pub use storage::{CheckpointStorage, LocalDirStorage, Transfer, SHARED_DIR};
pub use verify::{verify_checkpoint, verify_savepoint, Problem};

pub(crate) use restore::{origin_for, prepare_store, replay, Origin, Prepared, RestoreTarget, Versions};
pub(crate) use source::{sealed, RecordFilter, SavepointParts, SnapshotParts};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Misuse, Result};
use crate::format::checkpoint::{CheckpointManifest, LogRef, SegmentRef, SnapshotMeta, FLAG_FULL};
use crate::format::savepoint::SavepointWriter;
use crate::format::SchemaTag;
use crate::io::{FileSystem, StdFs, WritableFile};
use crate::keygroup::KeyGroupRange;
use crate::store::changelog::SealedLog;
use crate::store::compaction::FilterDecision;
use crate::store::{scan_segments, LogSeal, StoreSnapshot};

/// The name of the savepoint file in a savepoint directory.
pub const SAVEPOINT_FILE: &str = "SAVEPOINT";

/// The file that claims a savepoint directory while its savepoint is written.
pub const SAVEPOINT_CLAIM: &str = "SAVEPOINT.claim";

/// Claims `dir` for a savepoint: creates it if needed and the claim file in it, refusing a
/// directory that holds a savepoint or is claimed already.
fn claim_savepoint_dir(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    crate::io::create_dir_durable(fs, dir).map_err(|e| Error::io(dir, e))?;
    let claim = dir.join(SAVEPOINT_CLAIM);
    match fs.create_new(&claim) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(Misuse::NotEmpty.into()),
        Err(e) => return Err(Error::io(&claim, e)),
    }
    // Checked once claimed: a savepoint completes before its claim goes.
    if fs.exists(&dir.join(SAVEPOINT_FILE)) {
        let _ = fs.remove(&claim);
        return Err(Misuse::NotEmpty.into());
    }
    Ok(())
}

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
    /// How long the asynchronous part took.
    pub async_duration: Duration,
}

type Outcome = (u64, Result<CheckpointInfo>);

struct CheckpointJob {
    id: u64,
    full: bool,
    /// The store's frozen view, when this checkpoint stores (materializes) the state.
    snapshot: Option<StoreSnapshot>,
    /// The changelog sealed at the barrier, when the store keeps one.
    log: Option<LogSeal>,
    meta: SnapshotMeta,
    next_segment_id: u64,
    /// The backend the snapshot is of (segment ids are unique within one backend only).
    backend: u64,
    /// Shared files a restore took the backend's segments from, if in this storage.
    seeds: Vec<Origin>,
    abort: Arc<AtomicBool>,
}

struct SavepointJob {
    id: u64,
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    snapshot: StoreSnapshot,
    meta: SnapshotMeta,
    range: KeyGroupRange,
    /// What the savepoint keeps of each record: what expired by the synchronous part is left
    /// out.
    filter: Box<dyn RecordFilter>,
    level: Option<i32>,
    abort: Arc<AtomicBool>,
}

enum Job {
    Checkpoint(Box<CheckpointJob>),
    Savepoint(Box<SavepointJob>),
    Confirm(u64),
    /// Wait for the materialization in the background, then answer.
    Settle(mpsc::Sender<()>),
}

/// A backend's state as the last materialization stored it, and the changelog files written
/// since: together, the state at the latest barrier.
struct Chain {
    backend: u64,
    base: Vec<SegmentRef>,
    logs: Vec<LogRef>,
    /// Counts the chains the worker started, so that a materialization of an older one is
    /// not installed on a newer one.
    generation: u64,
}

/// A materialization running on a thread of its own: the state of a checkpoint that completed
/// from the chain, stored while later checkpoints go on from the chain.
struct Materializing {
    generation: u64,
    /// How many of the chain's changelog files the stored state covers.
    covered: usize,
    backend: u64,
    thread: JoinHandle<Result<Materialized>>,
}

/// A segment file a checkpoint put: the segment's id, the file's name, and the serializer
/// versions of its records.
type NewFile = (u64, String, Versions);

/// What a materialization stored: the references to its segments, and the files it put.
type Materialized = (Vec<SegmentRef>, Vec<NewFile>);

/// Where segments are stored, and which are already.
struct Shelf<'a> {
    storage: &'a Arc<dyn CheckpointStorage>,
    owner: &'a str,
    uploaded: &'a HashMap<(u64, u64), (String, Versions)>,
    /// Files about to be removed.
    removing: &'a Pending,
}

impl Shelf<'_> {
    /// Puts every segment of `snapshot` that is not stored yet; the references to all.
    fn store_segments(
        &self,
        job: &CheckpointJob,
        snapshot: &StoreSnapshot,
        new: &mut Vec<NewFile>,
        stored: &mut Stored,
    ) -> Result<Vec<SegmentRef>> {
        check_abort(job.id, &job.abort)?;
        let segments = snapshot.segments()?;
        let mut refs = Vec::with_capacity(segments.len());
        for live in &segments {
            let seg = &live.seg;
            check_abort(job.id, &job.abort)?;
            let reused = if job.full { None } else { self.uploaded.get(&(job.backend, seg.id())).cloned() };
            let (file, versions) = match reused {
                Some(stored) => stored,
                None => {
                    let name = if job.full {
                        format!("{SHARED_DIR}/{}-{}-{:010}-full{}.seg", self.owner, job.backend, seg.id(), job.id)
                    } else {
                        format!("{SHARED_DIR}/{}-{}-{:010}.seg", self.owner, job.backend, seg.id())
                    };
                    let versions = live.schema.versions().to_vec();
                    new.push((seg.id(), name.clone(), versions.clone()));
                    self.removing.wait_for(&name);
                    stored.copied += self.storage.put(&name, &seg.path())?;
                    stored.new += seg.reader().file_len();
                    (name, live.schema.versions().to_vec())
                }
            };
            refs.push(SegmentRef {
                file,
                segment_id: seg.id(),
                file_len: seg.reader().file_len(),
                mask: live.mask.clone(),
                versions,
            });
        }
        Ok(refs)
    }
}

/// What a checkpoint stored.
#[derive(Default)]
struct Stored {
    copied: u64,
    new: u64,
    /// The changelog files.
    logs: Vec<String>,
}

/// The checkpointer's thread: every change to the storage happens here, in order.
struct Worker {
    storage: Arc<dyn CheckpointStorage>,
    owner: String,
    retain: usize,
    /// (backend, segment id of its store) -> the shared file holding the segment, and the
    /// serializer versions its records were written with.
    uploaded: HashMap<(u64, u64), (String, Versions)>,
    /// Completed checkpoints -> the shared files they name.
    completed: BTreeMap<u64, Vec<String>>,
    confirmed: Option<u64>,
    /// An undecodable manifest was found: shared files are not collected, since what it
    /// names is unknown.
    keep_shared: bool,
    retained: Arc<Mutex<Vec<u64>>>,
    /// The changelog chain of the backend checkpointed last, if it has one.
    chain: Option<Chain>,
    /// Files that no retained checkpoint names but the chain does: removed once it does not.
    held_by_chain: Vec<String>,
    /// The state of an aborted checkpoint that was to start a chain, and its backend.
    unstored_base: Option<(u64, StoreSnapshot)>,
    /// A checkpoint that completed from the chain and whose state is still to be stored.
    deferred: Option<Box<CheckpointJob>>,
    materializing: Option<Materializing>,
    /// The generation of the next chain.
    generations: u64,
    /// Set when the chain broke: the next checkpoint must store the state.
    rematerialize: Arc<AtomicBool>,
    janitor: Janitor,
}

/// Removes the shared files that no retained checkpoint names, on a thread of its own:
/// unlinking files on a busy disk can take tens of milliseconds, which the next checkpoint
/// must not wait for. A failed removal leaves the file to the next open of the storage.
struct Janitor {
    pending: Arc<Pending>,
    tx: Option<Sender<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

/// The files a [`Janitor`] is yet to remove: a file of the same name is put again only once
/// the old one is gone.
#[derive(Default)]
struct Pending {
    names: Mutex<HashSet<String>>,
    removed: Condvar,
}

impl Pending {
    /// Waits until `name` is not about to be removed.
    fn wait_for(&self, name: &str) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        while names.contains(name) {
            names = self.removed.wait(names).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether `name` is about to be removed.
    fn contains(&self, name: &str) -> bool {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).contains(name)
    }

    /// Waits until every removal asked for so far is done.
    fn settle(&self) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        while !names.is_empty() {
            names = self.removed.wait(names).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Janitor {
    fn start(storage: Arc<dyn CheckpointStorage>) -> std::io::Result<Janitor> {
        let (tx, rx) = mpsc::channel::<Vec<String>>();
        let pending = Arc::new(Pending::default());
        let p = pending.clone();
        let thread = std::thread::Builder::new().name("eddy-checkpoint-gc".into()).spawn(move || {
            crate::sys::background_thread();
            for names in rx {
                for name in names {
                    let _ = storage.remove(&name);
                    p.names.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
                    p.removed.notify_all();
                }
            }
        })?;
        Ok(Janitor { pending, tx: Some(tx), thread: Some(thread) })
    }

    fn remove(&self, names: Vec<String>) {
        let Some(tx) = &self.tx else { return };
        self.pending.names.lock().unwrap_or_else(|e| e.into_inner()).extend(names.iter().cloned());
        if tx.send(names).is_err() {
            // Not reached (the thread outlives the sender); the next open collects the files.
            self.pending.names.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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

fn check_abort(id: u64, abort: &AtomicBool) -> Result<()> {
    if abort.load(Ordering::Acquire) {
        return Err(Error::Aborted { id });
    }
    Ok(())
}

impl Worker {
    fn checkpoint(&mut self, job: Box<CheckpointJob>) -> Result<CheckpointInfo> {
        let start = Instant::now();
        for o in &job.seeds {
            self.uploaded.entry((job.backend, o.segment)).or_insert_with(|| (o.file.clone(), o.versions.clone()));
        }
        let mut new: Vec<NewFile> = Vec::new();
        let backend = job.backend;
        let id = job.id;
        let result = self.write_checkpoint(job, &mut new, start);
        match &result {
            Ok(_) => {
                for (seg, name, versions) in new {
                    self.uploaded.insert((backend, seg), (name, versions));
                }
                // The files it subsumes are removed once its outcome is out.
                self.publish_retained();
            }
            Err(_) => {
                // A chain that starts from files this checkpoint put cannot go on without them.
                let put = |f: &String| new.iter().any(|(_, n, _)| n == f);
                if self.chain.as_ref().is_some_and(|c| c.base.iter().any(|s| put(&s.file))) {
                    self.break_chain();
                }
                // Nothing names what this checkpoint stored: remove it (best effort; a crash
                // leaves it to the next open).
                let _ = self.storage.remove_manifest(id);
                for (_, name, _) in new {
                    let _ = self.storage.remove(&name);
                }
            }
        }
        result
    }

    fn write_checkpoint(
        &mut self,
        mut job: Box<CheckpointJob>,
        new: &mut Vec<NewFile>,
        start: Instant,
    ) -> Result<CheckpointInfo> {
        let mut stored = Stored::default();
        let changelog = job.log.is_some();
        self.install_materialization(false);
        if let Some((backend, snapshot)) = self.unstored_base.take() {
            let continues = job.log.as_ref().is_some_and(|l| l.continuous);
            if backend == job.backend && continues && self.chain.is_none() && !job.full && job.snapshot.is_none() {
                self.restart_chain(&job, &snapshot, new, &mut stored);
            }
        }
        // The changelog sealed at this barrier joins the chain whatever becomes of this
        // checkpoint: the next one needs it. A full checkpoint starts a new chain instead.
        if let Some(seal) = job.log.take() {
            if job.full {
                self.chain = None;
            } else {
                self.extend_chain(&job, seal, &mut stored);
            }
        }
        let from_chain = !job.full && self.chain.as_ref().is_some_and(|c| c.backend == job.backend);
        let result = self.write_manifest(&mut job, from_chain, changelog, new, &mut stored, start);
        if result.is_err() && changelog && !from_chain {
            self.break_chain();
            // An aborted checkpoint's state is what the log sealed at the next barrier starts
            // from: kept, so that the next checkpoint, if it has no state of its own, stores
            // it instead of failing.
            if matches!(result, Err(Error::Aborted { .. })) {
                self.unstored_base = job.snapshot.take().map(|s| (job.backend, s));
            }
        }
        // Completed from the chain, with a snapshot to store: that happens once the outcome
        // is out.
        if result.is_ok() && job.snapshot.is_some() {
            self.deferred = Some(job);
        }
        result
    }

    /// Writes the manifest of `job`: from the chain, or from the snapshot's segments (which
    /// then start a new chain, if the backend keeps a changelog).
    fn write_manifest(
        &mut self,
        job: &mut CheckpointJob,
        from_chain: bool,
        changelog: bool,
        new: &mut Vec<NewFile>,
        stored: &mut Stored,
        start: Instant,
    ) -> Result<CheckpointInfo> {
        check_abort(job.id, &job.abort)?;
        if !from_chain {
            // A materialization still running would put files of the same names.
            self.install_materialization(true);
        }
        let snapshot = if from_chain && self.chain.is_some() {
            None
        } else {
            let Some(snapshot) = job.snapshot.take() else {
                self.break_chain();
                return Err(self.incomplete_chain());
            };
            Some(snapshot)
        };
        let result = self.write_manifest_of(job, snapshot.as_ref(), changelog, new, stored, start);
        // A checkpoint that failed (or was aborted) keeps its state, whenever that happened.
        if result.is_err() {
            job.snapshot = snapshot;
        }
        result
    }

    fn incomplete_chain(&self) -> Error {
        Error::Incomplete(crate::Incomplete::ChangelogGap { storage: self.storage.describe("") })
    }

    /// [`write_manifest`](Self::write_manifest) from the chain (`snapshot` is `None`) or from
    /// the segments of `snapshot`.
    fn write_manifest_of(
        &mut self,
        job: &mut CheckpointJob,
        snapshot: Option<&StoreSnapshot>,
        changelog: bool,
        new: &mut Vec<NewFile>,
        stored: &mut Stored,
        start: Instant,
    ) -> Result<CheckpointInfo> {
        let mut started = None;
        let (segments, logs) = match (&self.chain, snapshot) {
            (Some(c), None) => (c.base.clone(), c.logs.clone()),
            (None, None) => return Err(self.incomplete_chain()),
            (_, Some(snapshot)) => {
                let refs = self.store_segments(job, snapshot, new, stored)?;
                if changelog {
                    self.generations += 1;
                    started = Some(Chain {
                        backend: job.backend,
                        base: refs.clone(),
                        logs: Vec::new(),
                        generation: self.generations,
                    });
                }
                (refs, Vec::new())
            }
        };
        self.storage.sync_shared()?;
        check_abort(job.id, &job.abort)?;
        // A completed checkpoint never names a file that is gone: what this one did not put
        // itself must still be there, and not about to be removed.
        let put: HashSet<&str> =
            new.iter().map(|(_, n, _)| n.as_str()).chain(stored.logs.iter().map(String::as_str)).collect();
        for file in segments.iter().map(|s| &s.file).chain(logs.iter().map(|l| &l.file)) {
            if put.contains(file.as_str()) {
                continue;
            }
            if self.janitor.pending.contains(file) || !self.storage.contains(file)? {
                // The next checkpoint stores the state, putting the file again.
                self.uploaded.retain(|_, (name, _)| name != file);
                self.break_chain();
                return Err(Error::Incomplete(crate::Incomplete::FileGone { file: self.storage.describe(file) }));
            }
        }
        let manifest = CheckpointManifest {
            checkpoint_id: job.id,
            flags: if job.full { FLAG_FULL } else { 0 },
            next_segment_id: job.next_segment_id,
            meta: job.meta.clone(),
            segments,
            logs,
        };
        let bytes = manifest.encode();
        self.storage.write_manifest(job.id, &bytes)?;
        let files: Vec<String> = manifest
            .segments
            .iter()
            .map(|s| s.file.clone())
            .chain(manifest.logs.iter().map(|l| l.file.clone()))
            .collect();
        let info = CheckpointInfo {
            id: job.id,
            kind: if job.full { SnapshotKind::Full } else { SnapshotKind::Incremental },
            files: files.len(),
            logs: manifest.logs.len(),
            new_files: new.len() + manifest.logs.iter().filter(|l| stored.logs.contains(&l.file)).count(),
            bytes_copied: stored.copied,
            bytes_new: stored.new,
            manifest_bytes: bytes.len() as u64,
            async_duration: start.elapsed(),
        };
        self.completed.insert(job.id, files);
        if started.is_some() {
            self.chain = started;
        }
        Ok(info)
    }

    /// Puts every segment of `snapshot` that is not stored yet; the references to all.
    fn store_segments(
        &mut self,
        job: &CheckpointJob,
        snapshot: &StoreSnapshot,
        new: &mut Vec<NewFile>,
        stored: &mut Stored,
    ) -> Result<Vec<SegmentRef>> {
        let shelf = Shelf {
            storage: &self.storage,
            owner: &self.owner,
            uploaded: &self.uploaded,
            removing: &self.janitor.pending,
        };
        shelf.store_segments(job, snapshot, new, stored)
    }

    /// Starts the chain of `job`'s backend from `snapshot`, the state of the aborted
    /// checkpoint just before `job`, storing its segments now.
    fn restart_chain(
        &mut self,
        job: &CheckpointJob,
        snapshot: &StoreSnapshot,
        new: &mut Vec<NewFile>,
        stored: &mut Stored,
    ) {
        if let Ok(base) = self.store_segments(job, snapshot, new, stored) {
            self.generations += 1;
            self.chain = Some(Chain { backend: job.backend, base, logs: Vec::new(), generation: self.generations });
        }
    }

    /// Adds the changelog sealed at `job`'s barrier to the chain of `job`'s backend, storing
    /// its file; breaks the chain when the log is not continuous or cannot be stored.
    fn extend_chain(&mut self, job: &CheckpointJob, seal: LogSeal, stored: &mut Stored) {
        let continues = seal.continuous && self.chain.as_ref().is_some_and(|c| c.backend == job.backend);
        if !continues {
            // Only a checkpoint that stores the state starts a chain again.
            self.chain = None;
            return;
        }
        let Some(log) = seal.log else { return };
        match self.store_log(job, &log, &seal.schema, stored) {
            Ok(r) => {
                if let Some(c) = &mut self.chain {
                    c.logs.push(r);
                }
            }
            Err(_) => self.break_chain(),
        }
    }

    fn store_log(
        &mut self,
        job: &CheckpointJob,
        log: &SealedLog,
        schema: &SchemaTag,
        stored: &mut Stored,
    ) -> Result<LogRef> {
        let len = log.wait()?;
        let name = format!("{SHARED_DIR}/{}-{}-log{:010}.log", self.owner, job.backend, log.seq());
        stored.copied += self.storage.put_durable(&name, log.path())?;
        stored.new += len;
        stored.logs.push(name.clone());
        Ok(LogRef { file: name, log_seq: log.seq(), file_len: len, versions: schema.versions().to_vec() })
    }

    fn break_chain(&mut self) {
        self.chain = None;
        self.rematerialize.store(true, Ordering::Release);
    }

    /// Starts storing the state of the checkpoint that completed from the chain, on a thread
    /// of its own; later checkpoints go on from the chain until it is done. One at a time: a
    /// materialization asked for while one runs is left out.
    fn materialize(&mut self) {
        let Some(job) = self.deferred.take() else { return };
        self.install_materialization(false);
        let Some(chain) = self.chain.as_ref().filter(|c| c.backend == job.backend) else { return };
        if self.materializing.is_some() || job.snapshot.is_none() {
            return;
        }
        let (generation, covered) = (chain.generation, chain.logs.len());
        let (storage, owner, removing) = (self.storage.clone(), self.owner.clone(), self.janitor.pending.clone());
        let uploaded: HashMap<(u64, u64), (String, Versions)> =
            self.uploaded.iter().filter(|((b, _), _)| *b == job.backend).map(|(k, v)| (*k, v.clone())).collect();
        let backend = job.backend;
        let spawned = std::thread::Builder::new().name("eddy-materialize".into()).spawn(move || {
            crate::sys::background_thread();
            let shelf = Shelf { storage: &storage, owner: &owner, uploaded: &uploaded, removing: &removing };
            let mut new = Vec::new();
            let snapshot = job
                .snapshot
                .as_ref()
                .ok_or_else(|| Error::io(storage.describe(""), std::io::Error::other("no snapshot")))?;
            let result = shelf
                .store_segments(&job, snapshot, &mut new, &mut Stored::default())
                .and_then(|refs| storage.sync_shared().map(|()| refs));
            match result {
                Ok(refs) => Ok((refs, new)),
                Err(e) => {
                    for (_, name, _) in new {
                        let _ = storage.remove(&name);
                    }
                    Err(e)
                }
            }
        });
        if let Ok(thread) = spawned {
            self.materializing = Some(Materializing { generation, covered, backend, thread });
        }
    }

    /// Installs a finished materialization (waiting for it if `wait`): the chain then starts
    /// from the stored state. A failed one leaves the chain as it was.
    fn install_materialization(&mut self, wait: bool) {
        if !wait && self.materializing.as_ref().is_none_or(|m| !m.thread.is_finished()) {
            return;
        }
        let Some(m) = self.materializing.take() else { return };
        let Ok(Ok((refs, new))) = m.thread.join() else { return };
        let current = self.chain.as_mut().filter(|c| c.generation == m.generation && c.backend == m.backend);
        match current {
            Some(chain) => {
                for (seg, name, versions) in new {
                    self.uploaded.insert((m.backend, seg), (name, versions));
                }
                chain.base = refs;
                chain.logs.drain(..m.covered.min(chain.logs.len()));
            }
            // The chain it belongs to is gone: what it put is named by nothing.
            None => {
                for (_, name, _) in new {
                    let _ = self.storage.remove(&name);
                }
            }
        }
    }

    /// Waits for a running materialization and removes what it put.
    fn discard_materialization(&mut self) {
        if let Some(m) = self.materializing.take() {
            if let Ok(Ok((_, new))) = m.thread.join() {
                for (_, name, _) in new {
                    let _ = self.storage.remove(&name);
                }
            }
        }
    }

    /// Removes the checkpoints that retention no longer keeps, then (on the janitor's thread)
    /// the shared files that no retained checkpoint names. Manifests go first and durably, so
    /// a crash in between leaves unnamed files (collected on the next open), never a manifest
    /// naming a missing file.
    fn collect(&mut self) {
        let mut dropped = Vec::new();
        for id in self.subsumed() {
            if self.storage.remove_manifest(id).is_err() {
                break;
            }
            if let Some(files) = self.completed.remove(&id) {
                dropped.extend(files);
            }
        }
        *self.retained.lock().unwrap_or_else(|e| e.into_inner()) = self.completed.keys().copied().collect();
        if self.keep_shared {
            return;
        }
        // Files of the changelog chain stay while it lives: the next checkpoint of its
        // backend names them again, whichever checkpoints (of other backends, say) came
        // between.
        let chain =
            self.chain.iter().flat_map(|c| c.base.iter().map(|s| &s.file).chain(c.logs.iter().map(|l| &l.file)));
        let chain: HashSet<&String> = chain.collect();
        let named: HashSet<&String> = self.completed.values().flatten().collect();
        let mut held = Vec::new();
        let mut gone = HashSet::new();
        for name in dropped.into_iter().chain(std::mem::take(&mut self.held_by_chain)) {
            if named.contains(&name) {
                continue;
            }
            if chain.contains(&name) {
                held.push(name);
            } else {
                gone.insert(name);
            }
        }
        self.held_by_chain = held;
        if gone.is_empty() {
            return;
        }
        self.uploaded.retain(|_, (name, _)| !gone.contains(name));
        self.janitor.remove(gone.into_iter().collect());
    }

    /// The completed checkpoints that retention no longer keeps: all but the newest `retain`
    /// and the latest confirmed one (later ones may yet fail elsewhere, and a restore would
    /// then need it).
    fn subsumed(&self) -> Vec<u64> {
        let ids: Vec<u64> = self.completed.keys().copied().collect();
        let cut = ids.len().saturating_sub(self.retain);
        ids[..cut].iter().copied().filter(|&id| Some(id) != self.confirmed).collect()
    }

    /// Tells the task side which checkpoints are retained, before [`collect`](Self::collect)
    /// removes the others.
    fn publish_retained(&self) {
        let subsumed = self.subsumed();
        *self.retained.lock().unwrap_or_else(|e| e.into_inner()) =
            self.completed.keys().copied().filter(|id| !subsumed.contains(id)).collect();
    }
}

/// The asynchronous part of a savepoint: every live record of the snapshot, by key group,
/// into one file written under a temporary name and renamed when complete.
fn savepoint(mut job: SavepointJob) -> Result<CheckpointInfo> {
    let start = Instant::now();
    let filter = &mut job.filter;
    let fs = job.fs.clone();
    let tmp = job.dir.join(format!("{SAVEPOINT_FILE}.tmp"));
    let result = (|| {
        let segments = job.snapshot.segments()?;
        let file = PipedFile::new(fs.create(&tmp).map_err(|e| Error::io(&tmp, e))?).map_err(|e| Error::io(&tmp, e))?;
        let mut writer = SavepointWriter::new(Box::new(file), &tmp, job.id, &job.meta, job.level)?;
        let mut kept = Vec::new();
        let mut n = 0u64;
        scan_segments(&segments, job.range, |k, v| {
            n += 1;
            if n.is_multiple_of(4096) {
                check_abort(job.id, &job.abort)?;
            }
            kept.clear();
            match filter.filter(k, v, &mut kept) {
                FilterDecision::Keep => writer.add(k, v),
                FilterDecision::Replace => writer.add(k, &kept),
                FilterDecision::Remove => Ok(()),
            }
        })?;
        check_abort(job.id, &job.abort)?;
        let len = writer.finish()?;
        let path = job.dir.join(SAVEPOINT_FILE);
        fs.rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        fs.sync_dir(&job.dir).map_err(|e| Error::io(&job.dir, e))?;
        Ok(CheckpointInfo {
            id: job.id,
            kind: SnapshotKind::Savepoint,
            files: 1,
            logs: 0,
            new_files: 1,
            bytes_copied: len,
            bytes_new: len,
            manifest_bytes: len,
            async_duration: start.elapsed(),
        })
    })();
    if result.is_err() {
        let _ = fs.remove(&tmp);
    }
    let _ = fs.remove(&job.dir.join(SAVEPOINT_CLAIM));
    result
}

/// A file written by a thread of its own, which syncs every [`PipedFile::SYNC_EVERY`] bytes:
/// the disk writes one part while the records of the next are read, so a savepoint is
/// written at the speed of the slower of the two rather than of their sum.
struct PipedFile {
    tx: Option<mpsc::SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    buf: Vec<u8>,
    len: u64,
}

impl PipedFile {
    const PIECE: usize = 1 << 20;
    const SYNC_EVERY: u64 = 8 << 20;

    fn new(mut file: Box<dyn WritableFile>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(8);
        let thread = std::thread::Builder::new().name("eddy-savepoint-writer".into()).spawn(move || {
            crate::sys::background_thread();
            let mut unsynced = 0u64;
            while let Ok(piece) = rx.recv() {
                file.append(&piece)?;
                unsynced += piece.len() as u64;
                if unsynced >= Self::SYNC_EVERY {
                    file.sync()?;
                    unsynced = 0;
                }
            }
            file.sync()
        })?;
        Ok(PipedFile { tx: Some(tx), thread: Some(thread), buf: Vec::with_capacity(Self::PIECE), len: 0 })
    }

    /// Hands the buffered bytes to the writing thread.
    fn send(&mut self) -> std::io::Result<()> {
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(Self::PIECE));
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(piece).is_ok());
        if sent {
            Ok(())
        } else {
            // The thread stopped: it failed, and says why when joined.
            self.finish()?;
            Err(std::io::Error::other("the savepoint writer stopped"))
        }
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(std::io::Error::other("the savepoint writer panicked"))),
            None => Ok(()),
        }
    }
}

impl WritableFile for PipedFile {
    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(data);
        self.len += data.len() as u64;
        if self.buf.len() >= Self::PIECE {
            self.send()?;
        }
        Ok(())
    }

    /// Writes what is buffered and waits until everything is durable; the file takes no
    /// more appends after it.
    fn sync(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.finish()
    }

    fn len(&self) -> u64 {
        self.len
    }
}

impl Drop for PipedFile {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The path of the savepoint file in `dir`.
pub fn savepoint_file(dir: &Path) -> PathBuf {
    dir.join(SAVEPOINT_FILE)
}
