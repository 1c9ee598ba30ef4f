//! The store's segment set over time: freezing the mutable region, installing what the
//! background threads wrote, starting compactions, dropping key groups, snapshots for
//! checkpoints, and the manifest written on close.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use super::background::{CompactionTicket, Done, FlushFailure, Frozen, RAW_FLUSH_BELOW};
use super::compaction;
use super::memtable::Memtable;
use super::segment::{segment_file_name, LiveSegment, Segment};
use super::{Store, MANIFEST_FILE};
use crate::error::{Error, Result};
use crate::format::store_manifest::{ManifestSegment, StoreManifest};
use crate::format::SchemaTag;
use crate::io::{write_atomic, FileSystem};
use crate::keygroup::{KeyGroup, KeyGroupRange};

/// What a store held at one instant, kept alive for a checkpoint: the live segments and the
/// frozen regions still being written, newest first.
pub(crate) struct StoreSnapshot {
    segments: Vec<LiveSegment>,
    pending: Vec<Arc<Frozen>>,
    /// The migrations registered when it was taken.
    migrations: Arc<super::migrate::Migrations>,
}

impl StoreSnapshot {
    /// The migrations that bring records of older writers to the present ones, for a
    /// snapshot that writes records out (a savepoint).
    pub(crate) fn migrations(&self) -> &super::migrate::Migrations {
        &self.migrations
    }

    /// Waits for the frozen regions to be written; then every segment of the snapshot, newest
    /// first, with the key-group ranges masked in it.
    pub(crate) fn segments(&self) -> Result<Vec<LiveSegment>> {
        let mut out = Vec::with_capacity(self.pending.len() + self.segments.len());
        for f in &self.pending {
            if let Some(seg) = f.wait()? {
                out.push(LiveSegment { seg, mask: Vec::new(), schema: f.schema.clone() });
            }
        }
        out.extend(self.segments.iter().cloned());
        Ok(out)
    }
}

/// Makes the empty store directory `dir`, which holds the segment files `version` names
/// (linked or copied there), a store with that version: writes its manifest durably. The next
/// [`StoreOptions::open`](super::StoreOptions::open) of `dir` opens it.
pub(crate) fn install_version(fs: &dyn FileSystem, dir: &Path, version: &StoreManifest) -> Result<()> {
    for s in &version.segments {
        let path = dir.join(segment_file_name(s.id));
        if !fs.exists(&path) {
            return Err(Error::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "a segment of the version"),
            ));
        }
    }
    let path = dir.join(MANIFEST_FILE);
    write_atomic(fs, &path, &version.encode()).map_err(|e| Error::io(&path, e))
}

/// The memtable arena's chunk size for a write buffer: small buffers get small chunks so that
/// one chunk never fills the buffer by itself.
pub(super) fn chunk_size(write_buffer: usize) -> usize {
    (write_buffer / 16).clamp(4 << 10, 4 << 20)
}

impl Store {
    /// The synchronous part of a checkpoint: freezes the mutable region (without waiting for
    /// an earlier one to be written) and takes the segment set. What the snapshot names stays
    /// on disk until it is dropped.
    pub(crate) fn snapshot(&mut self) -> Result<StoreSnapshot> {
        if self.poisoned.is_some() {
            return Err(self.take_poison());
        }
        self.poll_done(false);
        self.freeze();
        Ok(StoreSnapshot {
            segments: self.segments.clone(),
            pending: self.frozen.iter().rev().cloned().collect(),
            migrations: self.migrations.clone(),
        })
    }

    /// The store's version: its segments (newest first) with their masks and tags, as its
    /// manifest records them.
    pub fn version(&self) -> StoreManifest {
        StoreManifest {
            next_segment_id: self.next_id,
            segments: self
                .segments
                .iter()
                .map(|s| ManifestSegment {
                    id: s.seg.id(),
                    mask: s.mask.clone(),
                    tag: (*s.schema).clone(),
                    max_value_len: s.seg.max_value_len().map(|n| n as u32),
                })
                .collect(),
        }
    }

    /// The id the next segment file will get.
    pub(crate) fn next_segment_id(&self) -> u64 {
        self.next_id
    }

    fn chunk_size(&self) -> usize {
        chunk_size(self.write_buffer)
    }

    pub(super) fn freeze(&mut self) {
        if self.active.is_empty() {
            return;
        }
        self.freezes += 1;
        let mut fresh = Memtable::new(self.chunk_size());
        // The same keys are likely written again (a checkpoint froze the region, not a full
        // one): the index starts at the size it grew to, sparing its rebuilds.
        if self.active.memory() < self.write_buffer {
            fresh.reserve(self.active.len());
        }
        let compress = self.active.memory() >= RAW_FLUSH_BELOW.min(self.write_buffer / 2);
        let frozen = Arc::new(Frozen {
            mem: std::mem::replace(&mut self.active, fresh),
            sorted: OnceLock::new(),
            id: self.next_id,
            compress,
            schema: self.schema.clone(),
            outcome: Mutex::new(None),
            flushed: Condvar::new(),
        });
        self.next_id += 1;
        self.frozen.push_back(frozen.clone());
        let sent = self.bg.flush_tx.as_ref().map(|tx| tx.send(frozen.clone()).is_ok()).unwrap_or(false);
        if !sent {
            // Whoever waits for this region (a checkpoint) learns that it will not be written.
            frozen.set_outcome(Err(FlushFailure::Died("flush", "the thread is gone".into())));
            self.poison(Error::WorkerDied { worker: "flush", why: "the thread is gone".into() });
        }
    }

    /// Receives finished background work (waiting for one result if `wait`) and installs it.
    pub(super) fn poll_done(&mut self, wait: bool) {
        self.bg.ready.store(false, Ordering::Release);
        let mut first = wait;
        loop {
            let done = if first {
                first = false;
                match self.bg.done_rx.recv() {
                    Ok(d) => d,
                    Err(_) => {
                        self.poison(Error::WorkerDied {
                            worker: "flush",
                            why: "the background threads are gone".into(),
                        });
                        return;
                    }
                }
            } else {
                match self.bg.done_rx.try_recv() {
                    Ok(d) => d,
                    Err(_) => return,
                }
            };
            match done {
                Done::Flushed(result) => self.install_flush(result),
                Done::Compacted(result) => self.install_compaction(result),
            }
        }
    }

    fn install_flush(&mut self, result: Result<Option<Arc<Segment>>>) {
        match result {
            Ok(seg) => {
                let frozen = self.frozen.pop_front();
                self.flushes += 1;
                self.recent = None;
                if let Some(seg) = seg {
                    let schema = frozen.as_ref().map_or_else(|| self.schema.clone(), |f| f.schema.clone());
                    self.segments.insert(0, LiveSegment { seg, mask: Vec::new(), schema });
                    // Reads of a state being migrated must see the writers' tags, which only
                    // the segments give them.
                    if self.migrations.states.is_empty() {
                        self.recent = frozen;
                    }
                }
                self.resize_cache();
                self.maybe_compact();
            }
            // The frozen region stays readable; the store refuses writes from now on.
            Err(e) => self.poison(e),
        }
    }

    fn install_compaction(&mut self, result: Result<Option<Arc<Segment>>>) {
        let Some(ticket) = self.compacting.take() else { return };
        let out = match result {
            Ok(out) => out,
            // A conversion failed: the inputs stay as they are (readable by the old
            // serializers), background compactions leave that state's records alone, and the
            // store goes on.
            Err(e @ Error::Migration { state_id, .. }) => {
                Arc::make_mut(&mut self.migrations).failed.insert(state_id);
                self.migration_error = Some(e);
                self.maybe_compact();
                return;
            }
            Err(e) => {
                if !self.bg.stop.load(Ordering::Acquire) {
                    self.poison(e);
                }
                return;
            }
        };
        let Some(pos) = self.segments.iter().position(|s| s.seg.id() == ticket.inputs[0]) else {
            // Unreachable by construction: inputs leave the list only through compaction.
            return;
        };
        let end = pos + ticket.inputs.len();
        if pos == 0 {
            // The newest segment, which the region flushed last mirrors, is rewritten (its
            // records perhaps filtered or converted): that region no longer answers for it.
            self.recent = None;
        }
        // Key groups dropped while the compaction ran are dropped from its output too.
        let mut mask: Vec<(KeyGroup, KeyGroup)> = Vec::new();
        for (s, &len) in self.segments[pos..end].iter().zip(&ticket.mask_lens) {
            for r in s.mask.get(len..).unwrap_or(&[]) {
                if !mask.contains(r) {
                    mask.push(*r);
                }
            }
        }
        let removed: Vec<LiveSegment> = match out {
            Some(seg) => self.segments.splice(pos..end, [LiveSegment { seg, mask, schema: ticket.schema }]).collect(),
            None => self.segments.drain(pos..end).collect(),
        };
        for s in removed {
            self.retire(s.seg);
        }
        self.compactions += 1;
        self.resize_cache();
        self.maybe_compact();
    }

    /// Marks a segment obsolete; its file goes when nothing refers to it any more.
    fn retire(&mut self, seg: Arc<Segment>) {
        self.cache.forget_segment(seg.id());
        seg.set_obsolete();
        if seg.is_pinned() {
            self.pinned_obsolete.push(seg);
        }
    }

    /// Lets compaction start (from now on, and now if it is due) in a store opened with it
    /// held ([`StoreOptions::hold_compaction`](super::StoreOptions::hold_compaction)).
    pub(crate) fn release_compaction(&mut self) {
        self.opts.hold_compaction = false;
        self.maybe_compact();
    }

    pub(super) fn maybe_compact(&mut self) {
        if self.compacting.is_some() || self.poisoned.is_some() || self.opts.hold_compaction {
            return;
        }
        let sizes: Vec<u64> = self.segments.iter().map(|s| s.seg.reader().file_len()).collect();
        let spans: Vec<Option<(u16, u16)>> = self
            .segments
            .iter()
            .map(|s| {
                let groups = s.seg.reader().key_groups();
                Some((groups.first()?.key_group, groups.last()?.key_group))
            })
            .collect();
        let bottom = compaction::disjoint_bottom(&spans);
        if let Some(run) = compaction::pick(&sizes, bottom, &self.opts.compaction) {
            self.start_compaction(run, false);
        }
    }

    fn start_compaction(&mut self, run: std::ops::Range<usize>, retry: bool) {
        let inputs: Vec<LiveSegment> = self.segments[run.clone()].to_vec();
        // Records written by different versions of one state's serializers cannot share a
        // segment: such segments are not merged, unless the state layer registered the
        // migration of the older records to the present serializers (then they are converted
        // as they are merged; a state whose conversion failed before is tried again only by
        // an explicit compaction, `retry`).
        let migrations = self.migrations.clone();
        let converts = inputs.iter().any(|s| migrations.converts(&s.schema, retry));
        let tag_of = |s: &LiveSegment| if converts { migrations.migrated(&s.schema) } else { (*s.schema).clone() };
        let Some(schema) = inputs.iter().try_fold(SchemaTag::default(), |acc, s| acc.union(&tag_of(s))).map(Arc::new)
        else {
            return;
        };
        let bottom = run.end == self.segments.len();
        let id = self.next_id;
        self.next_id += 1;
        self.compacting = Some(CompactionTicket {
            inputs: inputs.iter().map(|s| s.seg.id()).collect(),
            mask_lens: inputs.iter().map(|s| s.mask.len()).collect(),
            schema,
        });
        let migrate = converts.then_some(migrations);
        let sent =
            self.bg.compact_tx.as_ref().map(|tx| tx.send((id, inputs, bottom, migrate)).is_ok()).unwrap_or(false);
        if !sent {
            self.compacting = None;
            self.poison(Error::WorkerDied { worker: "compaction", why: "the thread is gone".into() });
        }
    }

    pub(super) fn resize_cache(&mut self) {
        let meta: usize = self.segments.iter().map(|s| s.seg.pinned_memory()).sum();
        let budget = self.opts.memory_budget;
        // The mutable region, one frozen region being flushed and the one flushed last.
        let cap = budget.saturating_sub(3 * self.write_buffer + meta).max(budget / 16);
        self.cache.set_capacity(cap);
    }

    // ---- key groups ----

    /// Drops every key of a key-group range. Segments are not rewritten: the range is masked
    /// in them (a segment left with nothing visible is removed) and compaction drops the
    /// masked records later.
    pub fn drop_key_groups(&mut self, range: KeyGroupRange) -> Result<()> {
        if self.poisoned.is_some() {
            return Err(self.take_poison());
        }
        if range.is_empty() {
            return Ok(());
        }
        let (a, b) = (range.start(), range.end());
        self.lookaside = None;
        self.recent = None;
        if let Some(log) = &mut self.log {
            log.interrupt();
        }
        self.wait_for_flush()?;
        self.active.drop_key_groups(a, b);
        for s in &mut self.segments {
            if s.seg.reader().key_groups().iter().any(|e| a <= e.key_group && e.key_group <= b) {
                s.mask.push((a, b));
            }
        }
        let compacting: Vec<u64> = self.compacting.as_ref().map(|t| t.inputs.clone()).unwrap_or_default();
        let mut i = 0;
        while i < self.segments.len() {
            let s = &self.segments[i];
            if s.fully_masked() && !compacting.contains(&s.seg.id()) {
                let s = self.segments.remove(i);
                self.retire(s.seg);
            } else {
                i += 1;
            }
        }
        self.resize_cache();
        Ok(())
    }

    // ---- maintenance ----

    /// Receives background results until `busy` is false or the store is poisoned.
    fn wait_while(&mut self, busy: fn(&Store) -> bool) -> Result<()> {
        while busy(self) && self.poisoned.is_none() {
            self.poll_done(true);
        }
        if self.poisoned.is_some() {
            return Err(self.take_poison());
        }
        Ok(())
    }

    pub(super) fn wait_for_flush(&mut self) -> Result<()> {
        self.wait_while(|s| !s.frozen.is_empty())
    }

    fn wait_for_compaction(&mut self) -> Result<()> {
        self.wait_while(|s| s.compacting.is_some())
    }

    /// Writes the mutable region to a segment now and waits until it is done.
    pub fn flush(&mut self) -> Result<()> {
        if self.poisoned.is_some() {
            return Err(self.take_poison());
        }
        self.wait_for_flush()?;
        self.freeze();
        self.wait_for_flush()
    }

    /// Flushes, then merges all segments into one and waits until it is done.
    pub fn compact(&mut self) -> Result<()> {
        self.flush()?;
        self.wait_for_compaction()?;
        let filtered = self.opts.filter.is_some() && !self.segments.is_empty();
        let migrates = self.segments.iter().any(|s| self.migrations.converts(&s.schema, true));
        if self.segments.len() > 1 || filtered || migrates || self.segments.iter().any(|s| !s.mask.is_empty()) {
            self.migration_error = None;
            self.start_compaction(0..self.segments.len(), true);
            self.wait_for_compaction()?;
            if let Some(e) = self.migration_error.take() {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Registers (or with `None` removes) how the records of state `state` written by its
    /// older serializers are converted to its present ones: compactions apply it from now on.
    pub(crate) fn set_migration(&mut self, state: u16, migration: Option<super::migrate::StateMigration>) {
        self.recent = None;
        let m = Arc::make_mut(&mut self.migrations);
        m.failed.remove(&state);
        match migration {
            Some(mig) => m.states.insert(state, mig),
            None => m.states.remove(&state),
        };
    }

    /// The tag entries of state `state` that some record of the store may have been written
    /// under: those of the segments, the frozen regions and the mutable region.
    pub(crate) fn entries_in_use(&self, state: u16) -> Vec<Vec<u32>> {
        let mut out: Vec<Vec<u32>> = Vec::new();
        let tags = self.segments.iter().map(|s| &*s.schema).chain(self.frozen.iter().map(|f| &*f.schema));
        for tag in tags.chain([&*self.schema, &*self.log_schema]) {
            if let Some(e) = tag.of(state) {
                if !out.iter().any(|o| o == e) {
                    out.push(e.to_vec());
                }
            }
        }
        out
    }

    /// Waits for background flushes and compactions that are running or due.
    pub fn wait_for_background(&mut self) -> Result<()> {
        loop {
            self.wait_for_flush()?;
            self.wait_for_compaction()?;
            self.poll_done(false);
            if self.frozen.is_empty() && self.compacting.is_none() {
                return Ok(());
            }
        }
    }

    /// Flushes everything, writes the store manifest durably and closes the store. The next
    /// open starts from exactly this state.
    pub fn close(mut self) -> Result<()> {
        self.flush()?;
        self.bg.stop.store(true, Ordering::Release);
        while self.compacting.is_some() {
            self.poll_done(true);
        }
        if self.poisoned.is_some() {
            return Err(self.take_poison());
        }
        // Segments are written without a sync; make them durable before the manifest names
        // them.
        for s in &self.segments {
            s.seg.sync()?;
        }
        let manifest = self.version();
        let path = self.dir.join(MANIFEST_FILE);
        let fs = self.opts.fs.clone();
        write_atomic(fs.as_ref(), &path, &manifest.encode()).map_err(|e| Error::io(&path, e))?;
        // The new manifest is durable: what only the old one named can go.
        for s in &self.segments {
            s.seg.set_pinned(true);
        }
        for s in self.pinned_obsolete.drain(..) {
            s.set_pinned(false);
        }
        Ok(())
    }
}
