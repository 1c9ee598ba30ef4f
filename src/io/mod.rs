//! The file system as eddy sees it.
//!
//! Every other layer reads and writes files only through [`FileSystem`], so that tests can swap
//! in [`FaultFs`], which keeps written and durable bytes apart, injects I/O errors and
//! simulates a crash (bytes written but not synced are lost, renames whose directory was not
//! synced are undone).
//!
//! Files are written append-only and read back whole through [`FileBytes`], a read-only view
//! that is a memory map for [`StdFs`] and an owned buffer for [`FaultFs`].

mod fault;
mod std_fs;

pub use fault::{FaultFs, FaultKind};
pub use std_fs::StdFs;

use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file system: the only way eddy touches files.
///
/// Implementations must be usable from several threads (the task thread and background
/// flush, compaction and checkpoint threads share one instance).
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Creates a new file for appending, truncating an existing one of the same name.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Creates a new, empty file at `path` for appending; fails with
    /// [`io::ErrorKind::AlreadyExists`] if a file of that name exists, atomically (the name is
    /// claimed by exactly one caller).
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Opens an existing file for reading, whole.
    fn open(&self, path: &Path) -> io::Result<FileBytes>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists. Durable once the parent
    /// directory of `to` has been synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the contents of an existing file durable (its name needs [`sync_dir`]).
    ///
    /// [`sync_dir`]: FileSystem::sync_dir
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// Creates a hard link `to` that names the same file as `from`.
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// The names (not full paths) of the files in `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates `dir` and its parents if they do not exist.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes the creations, renames and removals of entries in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Takes an exclusive lock named by `path` (creating the file if needed), held until the
    /// returned guard is dropped. Fails with [`io::ErrorKind::WouldBlock`] while another
    /// holder, in this process or another, has it.
    fn lock(&self, path: &Path) -> io::Result<LockGuard>;
}

/// Holds a lock taken with [`FileSystem::lock`] until it is dropped.
pub struct LockGuard {
    _inner: Box<dyn Send + Sync>,
}

impl LockGuard {
    /// Wraps whatever releases the lock when dropped.
    pub fn new(inner: Box<dyn Send + Sync>) -> Self {
        LockGuard { _inner: inner }
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}

/// A file being written: append-only until it is synced and dropped.
pub trait WritableFile: Send {
    /// Appends `data` at the end of the file.
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable.
    fn sync(&mut self) -> io::Result<()>;
    /// The number of bytes appended so far.
    fn len(&self) -> u64;
    /// Asks the file system to start writing the appended bytes to the disk every `bytes`
    /// bytes, without waiting (RocksDB's `bytes_per_sync`), so that a sync soon after has only
    /// the last piece left to wait for. For files a sync is about to follow; it can slow the
    /// writer when the disk is busy. By default nothing happens.
    fn start_writeback_every(&mut self, bytes: u64) {
        let _ = bytes;
    }
    /// Whether nothing was appended yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The read-only bytes of a whole file; cheap to clone.
#[derive(Clone)]
pub struct FileBytes {
    backing: Arc<Backing>,
}

enum Backing {
    Map(memmap2::Mmap),
    Owned(Box<[u8]>),
}

impl FileBytes {
    /// Wraps bytes that live on the heap.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        FileBytes { backing: Arc::new(Backing::Owned(bytes.into_boxed_slice())) }
    }

    pub(crate) fn from_map(map: memmap2::Mmap) -> Self {
        FileBytes { backing: Arc::new(Backing::Map(map)) }
    }

    /// The file's bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        match &*self.backing {
            Backing::Map(map) => map,
            Backing::Owned(bytes) => bytes,
        }
    }
}

impl Deref for FileBytes {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileBytes").field("len", &self.as_slice().len()).finish()
    }
}

/// Writes `bytes` to `path` atomically: a temporary file, sync, rename, sync of the directory.
/// After a crash `path` holds either its old contents or `bytes`, never a mix.
pub fn write_atomic(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = fs.create(&tmp)?;
    file.append(bytes)?;
    file.sync()?;
    drop(file);
    fs.rename(&tmp, path)?;
    fs.sync_dir(&dir)
}

/// Creates `dir` and its missing parents, syncing each directory's parent so that the
/// entries survive a crash (a directory entry is durable only once its parent is synced).
///
/// Directories that exist are synced in their parent too, since one made by an earlier call
/// whose sync failed exists yet may not survive a crash. For those a failed sync is passed
/// over (the parent may be one this process cannot open); for a new one it is an error.
pub fn create_dir_durable(fs: &dyn FileSystem, dir: &Path) -> io::Result<()> {
    let path: Vec<&Path> = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && d.parent().is_some()).collect();
    let missing = path.iter().take_while(|d| !fs.exists(d)).count();
    if missing > 0 {
        fs.create_dir_all(dir)?;
    }
    for (i, d) in path.iter().enumerate().rev() {
        let synced = fs.sync_dir(&parent_dir(d));
        if i < missing {
            synced?;
        }
    }
    Ok(())
}

/// The directory that holds `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
