//! Where checkpoints go: the [`CheckpointStorage`] trait and its local-directory implementation.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::{write_atomic, FileBytes, FileSystem, LockGuard};

/// The directory of the shared files, relative to the storage's root.
pub const SHARED_DIR: &str = "shared";

/// Storage for checkpoints: immutable files shared between checkpoints (`shared/<name>`) and
/// one manifest per checkpoint. A checkpoint exists once [`write_manifest`] returned.
///
/// Names are relative to the storage (`shared/...`); implementations map them to wherever
/// they keep files.
///
/// [`write_manifest`]: CheckpointStorage::write_manifest
pub trait CheckpointStorage: Send + Sync + fmt::Debug {
    /// Stores the local file `source` (of the file system the store uses) as `name`, durably
    /// (its name becomes durable with [`sync_shared`](Self::sync_shared)). Returns the bytes
    /// copied: 0 when the file could be linked instead.
    fn put(&self, name: &str, source: &Path) -> Result<u64>;
    /// [`put`](Self::put) of a file whose bytes are durable already (a sealed changelog file):
    /// a storage that links it need not sync it again. By default the same as `put`.
    fn put_durable(&self, name: &str, source: &Path) -> Result<u64> {
        self.put(name, source)
    }
    /// Makes the names of the files put so far durable.
    fn sync_shared(&self) -> Result<()>;
    /// Places the stored file `name` at the local path `target` (a link where possible, a copy
    /// otherwise). Returns its length.
    fn fetch(&self, name: &str, target: &Path) -> Result<u64>;
    /// The bytes of the stored file `name`.
    fn open(&self, name: &str) -> Result<FileBytes>;
    /// Writes the manifest of checkpoint `id` atomically and durably.
    fn write_manifest(&self, id: u64, bytes: &[u8]) -> Result<()>;
    /// The bytes of the manifest of checkpoint `id`.
    fn read_manifest(&self, id: u64) -> Result<FileBytes>;
    /// The ids of the checkpoints that have a manifest, ascending.
    fn manifests(&self) -> Result<Vec<u64>>;
    /// Removes the manifest of checkpoint `id`, durably. A manifest that is gone already is
    /// no error: its removal is made durable all the same (an earlier removal may have failed
    /// only to make itself durable).
    fn remove_manifest(&self, id: u64) -> Result<()>;
    /// The names of the shared files.
    fn shared_files(&self) -> Result<Vec<String>>;
    /// Whether the stored file `name` exists. By default looked up in
    /// [`shared_files`](Self::shared_files).
    fn contains(&self, name: &str) -> Result<bool> {
        Ok(self.shared_files()?.iter().any(|n| n == name))
    }
    /// Removes the stored file `name`.
    fn remove(&self, name: &str) -> Result<()>;
    /// Removes what an interrupted write left behind (temporary files).
    fn remove_temporaries(&self) -> Result<()>;
    /// Where `name` lives, for messages.
    fn describe(&self, name: &str) -> PathBuf;
    /// Where the manifest of checkpoint `id` lives, for messages.
    fn describe_manifest(&self, id: u64) -> PathBuf;
    /// Takes the storage for one writer: a [`Checkpointer`](super::Checkpointer) holds it for
    /// its life, so two never collect each other's files. Fails with
    /// [`Misuse::AlreadyOpen`](crate::Misuse::AlreadyOpen) while another holds it.
    fn lock(&self) -> Result<LockGuard>;
}

/// How [`LocalDirStorage`] stores a file of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// A hard link where the file system allows it (segments are immutable, so a link shares
    /// nothing that can change), a copy otherwise.
    Link,
    /// Always a copy.
    Copy,
}

/// Checkpoints in a local directory:
///
/// ```text
/// <root>/shared/<owner>-<backend>-<segment id>.seg   segment files, shared between checkpoints
/// <root>/chk-<id, 20 digits>.manifest         one manifest per completed checkpoint
/// <root>/LOCK                                 held by the checkpointer writing here
/// ```
#[derive(Debug, Clone)]
pub struct LocalDirStorage {
    fs: Arc<dyn FileSystem>,
    root: PathBuf,
    transfer: Transfer,
}

const MANIFEST_PREFIX: &str = "chk-";
/// The lock file a checkpointer holds.
pub const LOCK_FILE: &str = "LOCK";
const MANIFEST_SUFFIX: &str = ".manifest";
const COPY_BUFFER: usize = 4 << 20;

impl LocalDirStorage {
    /// Storage in `root`, created if needed, through `fs` (which must be the file system of
    /// the stores whose files it takes).
    pub fn new(fs: Arc<dyn FileSystem>, root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let shared = root.join(SHARED_DIR);
        crate::io::create_dir_durable(fs.as_ref(), &shared).map_err(|e| Error::io(&shared, e))?;
        Ok(LocalDirStorage { fs, root, transfer: Transfer::Link })
    }

    /// Chooses how files are stored (by default [`Transfer::Link`]).
    #[must_use]
    pub fn transfer(mut self, transfer: Transfer) -> Self {
        self.transfer = transfer;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn manifest_path(&self, id: u64) -> PathBuf {
        self.root.join(format!("{MANIFEST_PREFIX}{id:020}{MANIFEST_SUFFIX}"))
    }

    /// Links `source` as `name` (syncing the link if `sync_link`), or copies it.
    fn store(&self, name: &str, source: &Path, sync_link: bool) -> Result<u64> {
        let target = self.path(name);
        // Names are unique: a file already there belongs to some checkpoint.
        if self.fs.exists(&target) {
            return Err(Error::io(&target, std::io::ErrorKind::AlreadyExists.into()));
        }
        if self.transfer == Transfer::Link && self.fs.hard_link(source, &target).is_ok() {
            if sync_link {
                self.fs.sync_file(&target).map_err(|e| Error::io(&target, e))?;
            }
            return Ok(0);
        }
        self.copy(source, &target)
    }

    /// Copies `from` to a new file `to` and syncs it; returns the bytes copied.
    fn copy(&self, from: &Path, to: &Path) -> Result<u64> {
        copy_file(self.fs.as_ref(), from, to)
    }
}

/// Copies `from` to a new file `to` on `fs` and syncs it; returns the bytes copied.
pub(crate) fn copy_file(fs: &dyn FileSystem, from: &Path, to: &Path) -> Result<u64> {
    let bytes = fs.open(from).map_err(|e| Error::io(from, e))?;
    let mut out = fs.create(to).map_err(|e| Error::io(to, e))?;
    for piece in bytes.chunks(COPY_BUFFER) {
        out.append(piece).map_err(|e| Error::io(to, e))?;
    }
    out.sync().map_err(|e| Error::io(to, e))?;
    Ok(bytes.len() as u64)
}

impl CheckpointStorage for LocalDirStorage {
    fn put(&self, name: &str, source: &Path) -> Result<u64> {
        // The link names the store's file, which may not be durable yet.
        self.store(name, source, true)
    }

    fn put_durable(&self, name: &str, source: &Path) -> Result<u64> {
        // The link's name becomes durable with the directory's sync, and the file's bytes are.
        self.store(name, source, false)
    }

    fn sync_shared(&self) -> Result<()> {
        let dir = self.root.join(SHARED_DIR);
        self.fs.sync_dir(&dir).map_err(|e| Error::io(&dir, e))
    }

    fn fetch(&self, name: &str, target: &Path) -> Result<u64> {
        let source = self.path(name);
        if self.transfer == Transfer::Link && self.fs.hard_link(&source, target).is_ok() {
            let bytes = self.fs.open(target).map_err(|e| Error::io(target, e))?;
            return Ok(bytes.len() as u64);
        }
        if !self.fs.exists(&source) {
            return Err(Error::io(&source, std::io::ErrorKind::NotFound.into()));
        }
        self.copy(&source, target)
    }

    fn open(&self, name: &str) -> Result<FileBytes> {
        let path = self.path(name);
        self.fs.open(&path).map_err(|e| Error::io(&path, e))
    }

    fn write_manifest(&self, id: u64, bytes: &[u8]) -> Result<()> {
        let path = self.manifest_path(id);
        write_atomic(self.fs.as_ref(), &path, bytes).map_err(|e| Error::io(&path, e))
    }

    fn read_manifest(&self, id: u64) -> Result<FileBytes> {
        let path = self.manifest_path(id);
        self.fs.open(&path).map_err(|e| Error::io(&path, e))
    }

    fn manifests(&self) -> Result<Vec<u64>> {
        let names = self.fs.list(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let mut ids: Vec<u64> = names
            .iter()
            .filter_map(|n| n.strip_prefix(MANIFEST_PREFIX)?.strip_suffix(MANIFEST_SUFFIX))
            .filter(|d| d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|d| d.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn remove_manifest(&self, id: u64) -> Result<()> {
        let path = self.manifest_path(id);
        match self.fs.remove(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
        self.fs.sync_dir(&self.root).map_err(|e| Error::io(&self.root, e))
    }

    fn shared_files(&self) -> Result<Vec<String>> {
        let dir = self.root.join(SHARED_DIR);
        let names = self.fs.list(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(names.into_iter().map(|n| format!("{SHARED_DIR}/{n}")).collect())
    }

    fn contains(&self, name: &str) -> Result<bool> {
        Ok(self.fs.exists(&self.path(name)))
    }

    fn remove(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        self.fs.remove(&path).map_err(|e| Error::io(&path, e))
    }

    fn remove_temporaries(&self) -> Result<()> {
        let names = self.fs.list(&self.root).map_err(|e| Error::io(&self.root, e))?;
        for n in names.iter().filter(|n| n.ends_with(".tmp")) {
            let path = self.root.join(n);
            self.fs.remove(&path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }

    fn describe(&self, name: &str) -> PathBuf {
        self.path(name)
    }

    fn describe_manifest(&self, id: u64) -> PathBuf {
        self.manifest_path(id)
    }

    fn lock(&self) -> Result<LockGuard> {
        let path = self.root.join(LOCK_FILE);
        self.fs.lock(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => crate::Misuse::AlreadyOpen.into(),
            _ => Error::io(&path, e),
        })
    }
}
