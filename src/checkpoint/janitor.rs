//! The removal of shared files on a thread of their own, and the names about to be removed.

use std::collections::HashSet;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::storage::CheckpointStorage;

/// Removes the shared files that no retained checkpoint names, on a thread of its own:
/// unlinking files on a busy disk can take tens of milliseconds, which the next checkpoint
/// must not wait for. A failed removal leaves the file to the next open of the storage.
pub(super) struct Janitor {
    pub(super) pending: Arc<Pending>,
    tx: Option<Sender<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

/// The files a [`Janitor`] is yet to remove: a file of the same name is put again only once
/// the old one is gone.
#[derive(Default)]
pub(super) struct Pending {
    names: Mutex<HashSet<String>>,
    removed: Condvar,
}

impl Pending {
    /// Waits until `name` is not about to be removed.
    pub(super) fn wait_for(&self, name: &str) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        while names.contains(name) {
            names = self.removed.wait(names).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether `name` is about to be removed.
    pub(super) fn contains(&self, name: &str) -> bool {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).contains(name)
    }

    /// Waits until every removal asked for so far is done.
    pub(super) fn settle(&self) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        while !names.is_empty() {
            names = self.removed.wait(names).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Janitor {
    pub(super) fn start(storage: Arc<dyn CheckpointStorage>) -> std::io::Result<Janitor> {
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

    pub(super) fn remove(&self, names: Vec<String>) {
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
