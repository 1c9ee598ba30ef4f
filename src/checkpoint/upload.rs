//! Putting files into the storage: the segments of a snapshot, each once per backend, and the
//! sealed changelog files.

use std::collections::HashMap;
use std::sync::Arc;

use super::janitor::Pending;
use super::restore::Versions;
use super::storage::{CheckpointStorage, SHARED_DIR};
use super::worker::{check_abort, CheckpointJob, NewFile, Stored, Worker};
use crate::error::Result;
use crate::format::checkpoint::{LogRef, SegmentRef};
use crate::format::SchemaTag;
use crate::store::changelog::SealedLog;
use crate::store::StoreSnapshot;

/// Where segments are stored, and which are already.
pub(super) struct Shelf<'a> {
    pub(super) storage: &'a Arc<dyn CheckpointStorage>,
    pub(super) owner: &'a str,
    pub(super) uploaded: &'a HashMap<(u64, u64), (String, Versions)>,
    /// Files about to be removed.
    pub(super) removing: &'a Pending,
}

impl Shelf<'_> {
    /// Puts every segment of `snapshot` that is not stored yet; the references to all.
    pub(super) fn store_segments(
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

impl Worker {
    /// Puts every segment of `snapshot` that is not stored yet; the references to all.
    pub(super) fn store_segments(
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

    pub(super) fn store_log(
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
}
