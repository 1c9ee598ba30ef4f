//! Checkpoint storage over a local directory that calls hooks before uploads and before
//! making names durable, so that a test can stop or break the upload thread at a chosen
//! point. Shared by `tests/checkpoint.rs` and `tests/worker_panic.rs`.

use std::path::{Path, PathBuf};

use eddy::checkpoint::{CheckpointStorage, LocalDirStorage};
use eddy::io::{FileBytes, LockGuard};

/// What a [`Hooked`] storage does before it forwards a call.
pub trait StorageHooks: Send + Sync + std::fmt::Debug {
    /// Before the upload of `name`.
    fn before_put(&self, _name: &str) {}
    /// Before the names of the uploads are made durable.
    fn before_sync_shared(&self) {}
}

/// A [`LocalDirStorage`] with hooks; every call is forwarded to it.
#[derive(Debug)]
pub struct Hooked<H> {
    pub inner: LocalDirStorage,
    pub hooks: H,
}

impl<H: StorageHooks> CheckpointStorage for Hooked<H> {
    fn put(&self, name: &str, source: &Path) -> eddy::Result<u64> {
        self.hooks.before_put(name);
        self.inner.put(name, source)
    }
    fn sync_shared(&self) -> eddy::Result<()> {
        self.hooks.before_sync_shared();
        self.inner.sync_shared()
    }
    fn fetch(&self, name: &str, target: &Path) -> eddy::Result<u64> {
        self.inner.fetch(name, target)
    }
    fn open(&self, name: &str) -> eddy::Result<FileBytes> {
        self.inner.open(name)
    }
    fn write_manifest(&self, id: u64, bytes: &[u8]) -> eddy::Result<()> {
        self.inner.write_manifest(id, bytes)
    }
    fn read_manifest(&self, id: u64) -> eddy::Result<FileBytes> {
        self.inner.read_manifest(id)
    }
    fn manifests(&self) -> eddy::Result<Vec<u64>> {
        self.inner.manifests()
    }
    fn remove_manifest(&self, id: u64) -> eddy::Result<()> {
        self.inner.remove_manifest(id)
    }
    fn shared_files(&self) -> eddy::Result<Vec<String>> {
        self.inner.shared_files()
    }
    fn contains(&self, name: &str) -> eddy::Result<bool> {
        self.inner.contains(name)
    }
    fn remove(&self, name: &str) -> eddy::Result<()> {
        self.inner.remove(name)
    }
    fn remove_temporaries(&self) -> eddy::Result<()> {
        self.inner.remove_temporaries()
    }
    fn describe(&self, name: &str) -> PathBuf {
        self.inner.describe(name)
    }
    fn describe_manifest(&self, id: u64) -> PathBuf {
        self.inner.describe_manifest(id)
    }
    fn lock(&self) -> eddy::Result<LockGuard> {
        self.inner.lock()
    }
}
