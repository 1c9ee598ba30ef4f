//! The checkpointer's thread: the jobs it takes, the state it keeps between them, and the
//! asynchronous part of a checkpoint up to its manifest. Storing files, the changelog chain and
//! retention add to [`Worker`] in `upload.rs`, `chain.rs` and `retention.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::janitor::Janitor;
use super::restore::{Origin, Versions};
use super::source::RecordFilter;
use super::storage::CheckpointStorage;
use super::{CheckpointInfo, SnapshotKind};
use crate::error::{Error, Result};
use crate::format::checkpoint::{CheckpointManifest, LogRef, SegmentRef, SnapshotMeta, FLAG_FULL};
use crate::io::FileSystem;
use crate::keygroup::KeyGroupRange;
use crate::store::{LogSeal, StoreSnapshot};

pub(super) type Outcome = (u64, Result<CheckpointInfo>);

pub(super) struct CheckpointJob {
    pub(super) id: u64,
    pub(super) full: bool,
    /// The store's frozen view, when this checkpoint stores (materializes) the state.
    pub(super) snapshot: Option<StoreSnapshot>,
    /// The changelog sealed at the barrier, when the store keeps one.
    pub(super) log: Option<LogSeal>,
    pub(super) meta: SnapshotMeta,
    pub(super) next_segment_id: u64,
    /// The backend the snapshot is of (segment ids are unique within one backend only).
    pub(super) backend: u64,
    /// Shared files a restore took the backend's segments from, if in this storage.
    pub(super) seeds: Vec<Origin>,
    pub(super) abort: Arc<AtomicBool>,
}

pub(super) struct SavepointJob {
    pub(super) id: u64,
    pub(super) fs: Arc<dyn FileSystem>,
    pub(super) dir: PathBuf,
    pub(super) snapshot: StoreSnapshot,
    pub(super) meta: SnapshotMeta,
    pub(super) range: KeyGroupRange,
    /// What the savepoint keeps of each record: what expired by the synchronous part is left
    /// out.
    pub(super) filter: Box<dyn RecordFilter>,
    pub(super) level: Option<i32>,
    pub(super) abort: Arc<AtomicBool>,
}

pub(super) enum Job {
    Checkpoint(Box<CheckpointJob>),
    Savepoint(Box<SavepointJob>),
    Confirm(u64),
    /// Wait for the materialization in the background, then answer.
    Settle(mpsc::Sender<()>),
}

/// A backend's state as the last materialization stored it, and the changelog files written
/// since: together, the state at the latest barrier.
pub(super) struct Chain {
    pub(super) backend: u64,
    pub(super) base: Vec<SegmentRef>,
    pub(super) logs: Vec<LogRef>,
    /// Counts the chains the worker started, so that a materialization of an older one is
    /// not installed on a newer one.
    pub(super) generation: u64,
}

/// A materialization running on a thread of its own: the state of a checkpoint that completed
/// from the chain, stored while later checkpoints go on from the chain.
pub(super) struct Materializing {
    pub(super) generation: u64,
    /// How many of the chain's changelog files the stored state covers.
    pub(super) covered: usize,
    pub(super) backend: u64,
    pub(super) thread: JoinHandle<Result<Materialized>>,
}

/// A segment file a checkpoint put: the segment's id, the file's name, and the serializer
/// versions of its records.
pub(super) type NewFile = (u64, String, Versions);

/// What a materialization stored: the references to its segments, and the files it put.
pub(super) type Materialized = (Vec<SegmentRef>, Vec<NewFile>);

/// What a checkpoint stored.
#[derive(Default)]
pub(super) struct Stored {
    pub(super) copied: u64,
    pub(super) new: u64,
    /// The changelog files.
    pub(super) logs: Vec<String>,
}

/// The checkpointer's thread: every change to the storage happens here, in order.
pub(super) struct Worker {
    pub(super) storage: Arc<dyn CheckpointStorage>,
    pub(super) owner: String,
    pub(super) retain: usize,
    /// (backend, segment id of its store) -> the shared file holding the segment, and the
    /// serializer versions its records were written with.
    pub(super) uploaded: HashMap<(u64, u64), (String, Versions)>,
    /// Completed checkpoints -> the shared files they name.
    pub(super) completed: BTreeMap<u64, Vec<String>>,
    pub(super) confirmed: Option<u64>,
    /// An undecodable manifest was found: shared files are not collected, since what it
    /// names is unknown.
    pub(super) keep_shared: bool,
    pub(super) retained: Arc<Mutex<Vec<u64>>>,
    /// The changelog chain of the backend checkpointed last, if it has one.
    pub(super) chain: Option<Chain>,
    /// Files that no retained checkpoint names but the chain does: removed once it does not.
    pub(super) held_by_chain: Vec<String>,
    /// The state of an aborted checkpoint that was to start a chain, and its backend.
    pub(super) unstored_base: Option<(u64, StoreSnapshot)>,
    /// A checkpoint that completed from the chain and whose state is still to be stored.
    pub(super) deferred: Option<Box<CheckpointJob>>,
    pub(super) materializing: Option<Materializing>,
    /// The generation of the next chain.
    pub(super) generations: u64,
    /// Set when the chain broke: the next checkpoint must store the state.
    pub(super) rematerialize: Arc<AtomicBool>,
    pub(super) janitor: Janitor,
}

pub(super) fn check_abort(id: u64, abort: &AtomicBool) -> Result<()> {
    if abort.load(Ordering::Acquire) {
        return Err(Error::Aborted { id });
    }
    Ok(())
}

impl Worker {
    pub(super) fn checkpoint(&mut self, job: Box<CheckpointJob>) -> Result<CheckpointInfo> {
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
        let mut manifest = CheckpointManifest {
            checkpoint_id: job.id,
            flags: if job.full { FLAG_FULL } else { 0 },
            next_segment_id: job.next_segment_id,
            meta: job.meta.clone(),
            segments,
            logs,
        };
        manifest.keep_needed_writers();
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
            state_bytes: manifest.segments.iter().map(|s| s.file_len).sum::<u64>()
                + manifest.logs.iter().map(|l| l.file_len).sum::<u64>()
                + bytes.len() as u64,
            async_duration: start.elapsed(),
        };
        self.completed.insert(job.id, files);
        if started.is_some() {
            self.chain = started;
        }
        Ok(info)
    }
}
