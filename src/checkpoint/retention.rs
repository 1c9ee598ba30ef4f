//! Retention: which completed checkpoints are kept, and which shared files the others leave
//! unnamed, for the [`Janitor`](super::janitor::Janitor) to remove.

use std::collections::HashSet;

use super::worker::Worker;

impl Worker {
    /// Removes the checkpoints that retention no longer keeps, then (on the janitor's thread)
    /// the shared files that no retained checkpoint names. Manifests go first and durably, so
    /// a crash in between leaves unnamed files (collected on the next open), never a manifest
    /// naming a missing file.
    pub(super) fn collect(&mut self) {
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
    pub(super) fn publish_retained(&self) {
        let subsumed = self.subsumed();
        *self.retained.lock().unwrap_or_else(|e| e.into_inner()) =
            self.completed.keys().copied().filter(|id| !subsumed.contains(id)).collect();
    }
}
