//! The changelog chain of a backend: the state as last stored and the changelog files since,
//! extended at every checkpoint, broken when the log is not continuous, and shortened by a
//! materialization, which stores the state on a thread of its own. [`Chain`] and
//! [`Materializing`], the worker's record of them, live in `worker.rs` with the rest of its
//! state.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::restore::Versions;
use super::upload::Shelf;
use super::worker::{Chain, CheckpointJob, Materializing, NewFile, Stored, Worker};
use crate::error::Error;
use crate::store::{LogSeal, StoreSnapshot};

impl Worker {
    /// Starts the chain of `job`'s backend from `snapshot`, the state of the aborted
    /// checkpoint just before `job`, storing its segments now.
    pub(super) fn restart_chain(
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
    pub(super) fn extend_chain(&mut self, job: &CheckpointJob, seal: LogSeal, stored: &mut Stored) {
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

    pub(super) fn break_chain(&mut self) {
        self.chain = None;
        self.rematerialize.store(true, Ordering::Release);
    }

    /// Starts storing the state of the checkpoint that completed from the chain, on a thread
    /// of its own; later checkpoints go on from the chain until it is done. One at a time: a
    /// materialization asked for while one runs is left out.
    pub(super) fn materialize(&mut self) {
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
    pub(super) fn install_materialization(&mut self, wait: bool) {
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
    pub(super) fn discard_materialization(&mut self) {
        if let Some(m) = self.materializing.take() {
            if let Ok(Ok((_, new))) = m.thread.join() {
                for (_, name, _) in new {
                    let _ = self.storage.remove(&name);
                }
            }
        }
    }
}
