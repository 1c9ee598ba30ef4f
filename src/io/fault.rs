//! [`FaultFs`]: an in-memory file system that models durability exactly and injects faults.

use super::{parent_dir, FileBytes, FileSystem, LockGuard, WritableFile};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// What happens at the operation chosen by [`FaultFs::fail_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The operation fails without effect; later operations succeed.
    Error,
    /// The operation and every later mutating operation fail without effect, until
    /// [`FaultFs::disarm`] or [`FaultFs::recover`].
    ErrorForever,
    /// The file system crashes at the operation: it fails without effect, and every later
    /// operation of any kind fails until [`FaultFs::recover`], which drops whatever was not
    /// durable.
    Crash,
    /// The disk is full from the operation on: it, if it creates a file or appends to one,
    /// and every later create and append fail without effect
    /// ([`io::ErrorKind::StorageFull`]), while syncs, renames, links and removals go on
    /// working, until [`FaultFs::disarm`] or [`FaultFs::recover`].
    NoSpace,
}

/// An in-memory file system for tests: keeps written and durable bytes apart, simulates
/// crashes and injects I/O errors.
///
/// Cloning gives another handle to the same file system.
///
/// # The model
///
/// A file is an inode holding the bytes appended to it; a prefix of them is *durable*, namely
/// everything appended before the last [`WritableFile::sync`] of that file. Names map to inodes
/// in two namespaces: the *live* one, which every operation sees and changes, and the *durable*
/// one, which survives a crash. [`FileSystem::sync_dir`] copies the live entries directly inside
/// a directory to the durable namespace (additions, renames and removals alike).
///
/// Directories are named in their parent the same way: a directory made by
/// [`FileSystem::create_dir_all`] is durable once its parent directory is synced, and a crash
/// before that loses it with everything in it, as a file created or renamed into a directory
/// that was not synced is lost. [`FileSystem::create`] over an existing name truncates that
/// file in place, as `open(O_TRUNC)` does: its other names (hard links) lose the bytes too.
///
/// [`FaultFs::crash`] simulates power loss: the live namespace becomes the durable one again,
/// every file loses the bytes that were not synced (or, unless [`FaultFs::exact_crashes`],
/// keeps a prefix of them of a length that varies from crash to crash: unsynced data may be
/// partly written), and writers opened before the crash fail from then on.
///
/// With [`FaultFs::buffered_writes`], appended bytes reach the file (and its readers) only when
/// their writer syncs it or is dropped, as with a writer that buffers in user space.
///
/// Some simplifications: paths are compared as given, without canonicalization; a truncation
/// is durable at once.
///
/// # Faults
///
/// The *mutating* operations (create, append, sync, file sync, rename, remove, hard link, directory sync)
/// are numbered from 0 in the order they reach the file system; [`FaultFs::ops`] tells how many
/// have happened. [`FaultFs::fail_at`] arms a [`FaultKind`] for one of them. A faulted operation
/// has no effect. Reads and directory creation are not counted, but fail once the file system
/// has crashed, when [`FileSystem::exists`] reports nothing. The test helpers
/// ([`FaultFs::corrupt`], [`FaultFs::read`] and the like) are neither counted nor faulted.
#[derive(Clone, Default)]
pub struct FaultFs {
    state: Arc<Mutex<State>>,
}

type Ino = u64;

#[derive(Default)]
struct Inode {
    /// Everything appended.
    data: Vec<u8>,
    /// How many leading bytes of `data` are durable. Appends only add to the end and a sync
    /// makes all of `data` durable, so the durable contents are always a prefix.
    durable_len: usize,
}

#[derive(Default)]
struct State {
    inodes: HashMap<Ino, Inode>,
    next_ino: Ino,
    live: BTreeMap<PathBuf, Ino>,
    durable: BTreeMap<PathBuf, Ino>,
    dirs: BTreeSet<PathBuf>,
    /// The directories whose entry in their parent is durable.
    durable_dirs: BTreeSet<PathBuf>,
    /// Open writers per inode, in the current generation.
    writers: HashMap<Ino, usize>,
    /// Advanced by every crash; writers of an older generation are stale.
    generation: u64,
    /// Mutating operations so far.
    ops: u64,
    armed: Option<(u64, FaultKind)>,
    failing_forever: bool,
    /// Creates and appends fail ([`FaultKind::NoSpace`]).
    no_space: bool,
    crashed: bool,
    /// A crash drops exactly the bytes written since the last sync (else a part of them may
    /// survive).
    exact_crashes: bool,
    /// Appended bytes stay with their writer until it syncs or is dropped.
    buffered_writes: bool,
    /// Paths locked through [`FileSystem::lock`].
    locks: BTreeSet<PathBuf>,
}

/// Releases a [`FaultFs`] lock when dropped.
struct FaultLock {
    fs: FaultFs,
    path: PathBuf,
}

impl Drop for FaultLock {
    fn drop(&mut self) {
        self.fs.lock().locks.remove(&self.path);
    }
}

fn injected() -> io::Error {
    io::Error::other("injected fault")
}

fn no_space() -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, "injected fault: no space left on the device")
}

fn crashed() -> io::Error {
    io::Error::other("injected fault: the file system has crashed")
}

fn stale() -> io::Error {
    io::Error::other("stale file: the file system crashed since the file was created")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no such file: {}", path.display()))
}

fn no_dir(dir: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no such directory: {}", dir.display()))
}

fn is_dir(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::IsADirectory, format!("is a directory: {}", path.display()))
}

/// `.` for an empty path, as `parent_dir` names the directory of a bare file name.
fn normalize_dir(dir: &Path) -> &Path {
    if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }
}

impl State {
    /// Fails if the file system has crashed.
    fn check_alive(&self) -> io::Result<()> {
        if self.crashed {
            Err(crashed())
        } else {
            Ok(())
        }
    }

    /// Starts a mutating operation, one that needs space on the disk if `grows` (a create or
    /// an append): counts it and fires an armed fault.
    fn begin_mut(&mut self, grows: bool) -> io::Result<()> {
        self.check_alive()?;
        let index = self.ops;
        self.ops += 1;
        if self.failing_forever {
            return Err(injected());
        }
        if self.no_space && grows {
            return Err(no_space());
        }
        match self.armed {
            Some((at, kind)) if at <= index => {
                self.armed = None;
                match kind {
                    FaultKind::NoSpace => {
                        self.no_space = true;
                        if grows {
                            Err(no_space())
                        } else {
                            Ok(())
                        }
                    }
                    FaultKind::Error => Err(injected()),
                    FaultKind::ErrorForever => {
                        self.failing_forever = true;
                        Err(injected())
                    }
                    FaultKind::Crash => {
                        self.crashed = true;
                        Err(crashed())
                    }
                }
            }
            _ => Ok(()),
        }
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        let dir = normalize_dir(dir);
        dir == Path::new(".") || dir.parent().is_none() || self.dirs.contains(dir)
    }

    /// Checks that a file may be created at `path`.
    fn check_new_name(&self, path: &Path) -> io::Result<()> {
        let dir = parent_dir(path);
        if !self.dir_exists(&dir) {
            return Err(no_dir(&dir));
        }
        if self.dirs.contains(path) {
            return Err(is_dir(path));
        }
        Ok(())
    }

    fn live_ino(&self, path: &Path) -> io::Result<Ino> {
        self.live.get(path).copied().ok_or_else(|| not_found(path))
    }

    fn live_inode_mut(&mut self, path: &Path) -> io::Result<&mut Inode> {
        let ino = self.live_ino(path)?;
        self.inodes.get_mut(&ino).ok_or_else(|| not_found(path))
    }

    fn new_inode(&mut self, inode: Inode) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, inode);
        ino
    }

    /// Frees `ino` if no name and no writer refers to it any more.
    fn collect(&mut self, ino: Ino) {
        let referenced = self.writers.contains_key(&ino)
            || self.live.values().any(|&i| i == ino)
            || self.durable.values().any(|&i| i == ino);
        if !referenced {
            self.inodes.remove(&ino);
        }
    }

    fn crash(&mut self) {
        self.generation += 1;
        self.writers.clear();
        // A directory whose entry never reached its parent is gone, with everything in it.
        let dirs = &self.durable_dirs;
        let reachable = |path: &Path| {
            path.ancestors().skip(1).all(|d| d.as_os_str().is_empty() || d.parent().is_none() || dirs.contains(d))
        };
        self.dirs = dirs.iter().filter(|d| reachable(d)).cloned().collect();
        self.durable.retain(|path, _| reachable(path));
        self.durable_dirs = self.dirs.clone();
        self.live = self.durable.clone();
        let named: HashSet<Ino> = self.durable.values().copied().collect();
        self.inodes.retain(|ino, _| named.contains(ino));
        // Bytes appended since the last sync may have reached the disk in part: each file
        // keeps a prefix of them, of a length that varies from crash to crash and file to file.
        let generation = self.generation;
        for (&ino, inode) in self.inodes.iter_mut() {
            let unsynced = inode.data.len() - inode.durable_len;
            let kept = if !self.exact_crashes && unsynced > 0 {
                let mix = (ino ^ generation.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11;
                (mix % (unsynced as u64 + 1)) as usize
            } else {
                0
            };
            inode.data.truncate(inode.durable_len + kept);
            inode.durable_len = inode.data.len();
        }
    }

    fn mkdirs(&mut self, dir: &Path) -> io::Result<()> {
        for ancestor in normalize_dir(dir).ancestors() {
            if ancestor.as_os_str().is_empty() || ancestor.parent().is_none() {
                continue;
            }
            if self.live.contains_key(ancestor) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("a file is in the way: {}", ancestor.display()),
                ));
            }
        }
        for ancestor in normalize_dir(dir).ancestors() {
            if ancestor.as_os_str().is_empty() || ancestor.parent().is_none() {
                continue;
            }
            self.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    /// Like [`mkdirs`](Self::mkdirs), with every directory durable at once.
    fn mkdirs_durable(&mut self, dir: &Path) -> io::Result<()> {
        self.mkdirs(dir)?;
        for ancestor in normalize_dir(dir).ancestors() {
            if !ancestor.as_os_str().is_empty() && ancestor.parent().is_some() {
                self.durable_dirs.insert(ancestor.to_path_buf());
            }
        }
        Ok(())
    }
}

impl FaultFs {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many mutating operations have happened (the index the next one will get).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Arms `kind` for the mutating operation with index `n` (see [`FaultFs::ops`]); if that
    /// index has passed, for the next one. Replaces a fault armed earlier.
    pub fn fail_at(&self, n: u64, kind: FaultKind) {
        self.lock().armed = Some((n, kind));
    }

    /// Clears an armed fault and ends [`FaultKind::ErrorForever`] and [`FaultKind::NoSpace`]; a crash needs
    /// [`FaultFs::recover`].
    pub fn disarm(&self) {
        let mut state = self.lock();
        state.armed = None;
        state.failing_forever = false;
        state.no_space = false;
    }

    /// Whether a crash drops exactly the bytes written since each file's last sync (`true`),
    /// or may keep a prefix of them, as a disk that wrote some of the pages does (`false`, the
    /// default).
    pub fn exact_crashes(&self, exact: bool) {
        self.lock().exact_crashes = exact;
    }

    /// Whether appended bytes stay with their writer, unseen by readers, until it syncs the
    /// file or is dropped (`true`), as with a writer that buffers in user space ([`StdFs`]
    /// does, up to a buffer's worth), or reach the file at once (`false`, the default). A
    /// crash loses the buffered bytes.
    ///
    /// [`StdFs`]: super::StdFs
    pub fn buffered_writes(&self, buffered: bool) {
        self.lock().buffered_writes = buffered;
    }

    /// Simulates power loss: only durable names and durable bytes remain, and writers opened
    /// before fail from now on.
    pub fn crash(&self) {
        self.lock().crash();
    }

    /// Restarts after a crash: applies [`FaultFs::crash`] and clears every fault, so the file
    /// system is usable again.
    pub fn recover(&self) {
        let mut state = self.lock();
        state.crash();
        state.armed = None;
        state.failing_forever = false;
        state.no_space = false;
        state.crashed = false;
    }

    /// Whether an injected [`FaultKind::Crash`] has happened and [`FaultFs::recover`] not yet.
    pub fn is_crashed(&self) -> bool {
        self.lock().crashed
    }

    /// XORs the byte at `offset` of the file at `path` with `xor`, in its written and durable
    /// contents alike. A test helper: neither counted nor faulted.
    pub fn corrupt(&self, path: &Path, offset: u64, xor: u8) -> io::Result<()> {
        let mut state = self.lock();
        let inode = state.live_inode_mut(path)?;
        let len = inode.data.len();
        let byte = usize::try_from(offset).ok().and_then(|o| inode.data.get_mut(o)).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("offset {offset} is past the end ({len}) of {}", path.display()),
            )
        })?;
        *byte ^= xor;
        Ok(())
    }

    /// Shortens the file at `path` to `len` bytes, in its written and durable contents alike.
    /// A test helper: neither counted nor faulted.
    pub fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        let inode = state.live_inode_mut(path)?;
        let current = inode.data.len();
        let len = usize::try_from(len).ok().filter(|&l| l <= current).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot grow {} from {current} to {len} bytes", path.display()),
            )
        })?;
        inode.data.truncate(len);
        inode.durable_len = inode.durable_len.min(len);
        Ok(())
    }

    /// The written contents of the file at `path`. A test helper: neither counted nor faulted.
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut state = self.lock();
        Ok(state.live_inode_mut(path)?.data.clone())
    }

    /// Creates the file at `path` with `bytes`, durable name and contents both, creating its
    /// directory if needed. A test helper (to restore fixture files): neither counted nor
    /// faulted.
    pub fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        if state.dirs.contains(path) {
            return Err(is_dir(path));
        }
        state.mkdirs_durable(&parent_dir(path))?;
        let ino = state.new_inode(Inode { data: bytes.to_vec(), durable_len: bytes.len() });
        let old_live = state.live.insert(path.to_path_buf(), ino);
        let old_durable = state.durable.insert(path.to_path_buf(), ino);
        for old in old_live.into_iter().chain(old_durable) {
            state.collect(old);
        }
        Ok(())
    }

    /// The paths of all files, sorted.
    pub fn file_names(&self) -> Vec<PathBuf> {
        self.lock().live.keys().cloned().collect()
    }
}

impl fmt::Debug for FaultFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("FaultFs")
            .field("files", &state.live.len())
            .field("durable_files", &state.durable.len())
            .field("ops", &state.ops)
            .field("generation", &state.generation)
            .field("armed", &state.armed)
            .field("failing_forever", &state.failing_forever)
            .field("crashed", &state.crashed)
            .finish()
    }
}

impl FileSystem for FaultFs {
    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let mut st = self.lock();
        st.check_alive()?;
        if !st.locks.insert(path.to_path_buf()) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "locked by another holder"));
        }
        Ok(LockGuard::new(Box::new(FaultLock { fs: self.clone(), path: path.to_path_buf() })))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let mut state = self.lock();
        state.begin_mut(true)?;
        state.check_new_name(path)?;
        // As `open(O_TRUNC)`: an existing file is truncated in place, so every other name of
        // it (a hard link) loses its bytes too, durably.
        let ino = match state.live.get(path).copied() {
            Some(ino) => {
                if let Some(inode) = state.inodes.get_mut(&ino) {
                    inode.data.clear();
                    inode.durable_len = 0;
                }
                ino
            }
            None => state.new_inode(Inode::default()),
        };
        state.live.insert(path.to_path_buf(), ino);
        *state.writers.entry(ino).or_insert(0) += 1;
        Ok(Box::new(FaultFile::new(&self.state, ino, &state)))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let mut state = self.lock();
        state.begin_mut(true)?;
        state.check_new_name(path)?;
        if state.live.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("file exists: {}", path.display())));
        }
        let ino = state.new_inode(Inode::default());
        state.live.insert(path.to_path_buf(), ino);
        *state.writers.entry(ino).or_insert(0) += 1;
        Ok(Box::new(FaultFile::new(&self.state, ino, &state)))
    }

    fn open(&self, path: &Path) -> io::Result<FileBytes> {
        let mut state = self.lock();
        state.check_alive()?;
        Ok(FileBytes::from_vec(state.live_inode_mut(path)?.data.clone()))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin_mut(false)?;
        let ino = state.live_ino(from)?;
        state.check_new_name(to)?;
        if state.live.get(to) == Some(&ino) {
            // Both names already refer to the same file: nothing to do.
            return Ok(());
        }
        state.live.remove(from);
        if let Some(old) = state.live.insert(to.to_path_buf(), ino) {
            state.collect(old);
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin_mut(false)?;
        let ino = state.live.remove(path).ok_or_else(|| not_found(path))?;
        state.collect(ino);
        Ok(())
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin_mut(false)?;
        let ino = state.live_ino(from)?;
        state.check_new_name(to)?;
        if state.live.contains_key(to) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("file exists: {}", to.display())));
        }
        state.live.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.check_alive()?;
        let dir = normalize_dir(dir);
        if !state.dir_exists(dir) {
            return Err(no_dir(dir));
        }
        let mut names: Vec<String> = state
            .live
            .keys()
            .filter(|path| parent_dir(path) == dir)
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect();
        names.sort_unstable();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_alive()?;
        state.mkdirs(dir)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin_mut(false)?;
        let inode = state.live_inode_mut(path)?;
        inode.durable_len = inode.data.len();
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin_mut(false)?;
        let dir = normalize_dir(dir);
        if !state.dir_exists(dir) {
            return Err(no_dir(dir));
        }
        let in_dir = |path: &Path| parent_dir(path) == dir;
        let mut displaced = Vec::new();
        let State { live, durable, .. } = &mut *state;
        durable.retain(|path, &mut ino| {
            let keep = !in_dir(path) || live.get(path) == Some(&ino);
            if !keep {
                displaced.push(ino);
            }
            keep
        });
        for (path, &ino) in live.iter().filter(|(path, _)| in_dir(path)) {
            durable.insert(path.clone(), ino);
        }
        let children: Vec<PathBuf> = state.dirs.iter().filter(|d| in_dir(d)).cloned().collect();
        state.durable_dirs.extend(children);
        for ino in displaced {
            state.collect(ino);
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.lock();
        // A crashed file system shows nothing.
        !state.crashed && (state.live.contains_key(path) || state.dir_exists(path))
    }
}

/// A file being written through [`FaultFs`].
struct FaultFile {
    state: Arc<Mutex<State>>,
    ino: Ino,
    generation: u64,
    len: u64,
    /// With [`FaultFs::buffered_writes`]: the bytes appended since the last sync.
    buffered: Option<Vec<u8>>,
}

impl FaultFile {
    fn new(shared: &Arc<Mutex<State>>, ino: Ino, state: &State) -> FaultFile {
        let buffered = state.buffered_writes.then(Vec::new);
        FaultFile { state: Arc::clone(shared), ino, generation: state.generation, len: 0, buffered }
    }

    /// Hands the buffered bytes to the file.
    fn release(buffered: &mut Option<Vec<u8>>, inode: &mut Inode) {
        if let Some(b) = buffered {
            inode.data.append(b);
        }
    }

    /// Locks the file system and starts a mutating operation on this file (an append if
    /// `grows`).
    fn begin(&self, grows: bool) -> io::Result<MutexGuard<'_, State>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.check_alive()?;
        if state.generation != self.generation {
            return Err(stale());
        }
        state.begin_mut(grows)?;
        Ok(state)
    }
}

impl WritableFile for FaultFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let buffered = self.buffered.is_some();
        let mut state = self.begin(true)?;
        let inode = state.inodes.get_mut(&self.ino).ok_or_else(stale)?;
        if !buffered {
            inode.data.extend_from_slice(data);
        }
        drop(state);
        if let Some(b) = &mut self.buffered {
            b.extend_from_slice(data);
        }
        self.len += data.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut buffered = self.buffered.take();
        let result = (|| {
            let mut state = self.begin(false)?;
            let inode = state.inodes.get_mut(&self.ino).ok_or_else(stale)?;
            Self::release(&mut buffered, inode);
            inode.durable_len = inode.data.len();
            Ok(())
        })();
        self.buffered = buffered;
        result
    }

    fn len(&self) -> u64 {
        self.len
    }
}

impl Drop for FaultFile {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.generation != self.generation {
            return;
        }
        if let Some(inode) = state.inodes.get_mut(&self.ino) {
            Self::release(&mut self.buffered, inode);
        }
        if let Some(count) = state.writers.get_mut(&self.ino) {
            *count -= 1;
            if *count == 0 {
                state.writers.remove(&self.ino);
                state.collect(self.ino);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::write_atomic;

    fn p(path: &str) -> &Path {
        Path::new(path)
    }

    /// A file system with the durable directory `/db`, whose crashes drop exactly the
    /// unsynced bytes.
    fn db() -> FaultFs {
        let fs = FaultFs::new();
        fs.exact_crashes(true);
        fs.create_dir_all(p("/db")).unwrap();
        fs.sync_dir(p("/")).unwrap();
        fs
    }

    fn write(fs: &FaultFs, path: &str, bytes: &[u8], sync: bool) {
        let mut file = fs.create(p(path)).unwrap();
        file.append(bytes).unwrap();
        if sync {
            file.sync().unwrap();
        }
    }

    fn is_injected(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::Other && e.to_string().starts_with("injected fault")
    }

    #[test]
    fn round_trip_and_namespace() {
        let fs = db();
        let mut file = fs.create(p("/db/b")).unwrap();
        assert!(file.is_empty());
        file.append(b"hello ").unwrap();
        file.append(b"world").unwrap();
        assert_eq!(file.len(), 11);
        // Appended bytes are visible before any sync.
        assert_eq!(&*fs.open(p("/db/b")).unwrap(), b"hello world");
        drop(file);
        write(&fs, "/db/a", b"a", false);
        write(&fs, "/other", b"x", false);
        assert_eq!(fs.list(p("/db")).unwrap(), ["a", "b"]);
        assert_eq!(fs.list(p("/")).unwrap(), ["other"]);
        assert!(fs.exists(p("/db")) && fs.exists(p("/db/a")) && !fs.exists(p("/db/c")));

        fs.rename(p("/db/a"), p("/db/b")).unwrap();
        assert_eq!(fs.list(p("/db")).unwrap(), ["b"]);
        assert_eq!(&*fs.open(p("/db/b")).unwrap(), b"a");

        fs.hard_link(p("/db/b"), p("/db/c")).unwrap();
        fs.remove(p("/db/b")).unwrap();
        assert_eq!(&*fs.open(p("/db/c")).unwrap(), b"a");
        assert_eq!(fs.file_names(), [PathBuf::from("/db/c"), PathBuf::from("/other")]);

        // create replaces an existing file.
        write(&fs, "/db/c", b"new", false);
        assert_eq!(fs.read(p("/db/c")).unwrap(), b"new");
    }

    #[test]
    fn missing_files_and_directories() {
        let fs = db();
        let kind = |r: io::Result<()>| r.unwrap_err().kind();
        assert_eq!(fs.open(p("/db/x")).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(kind(fs.remove(p("/db/x"))), io::ErrorKind::NotFound);
        assert_eq!(kind(fs.rename(p("/db/x"), p("/db/y"))), io::ErrorKind::NotFound);
        assert_eq!(kind(fs.hard_link(p("/db/x"), p("/db/y"))), io::ErrorKind::NotFound);
        assert_eq!(fs.list(p("/nodir")).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(kind(fs.sync_dir(p("/nodir"))), io::ErrorKind::NotFound);
        assert!(matches!(fs.create(p("/nodir/f")), Err(e) if e.kind() == io::ErrorKind::NotFound));
        write(&fs, "/db/x", b"", false);
        write(&fs, "/db/y", b"", false);
        assert_eq!(kind(fs.hard_link(p("/db/x"), p("/db/y"))), io::ErrorKind::AlreadyExists);
        assert_eq!(kind(fs.rename(p("/db/x"), p("/nodir/y"))), io::ErrorKind::NotFound);
        assert!(fs.exists(p("/db/x")), "a failed rename leaves the source");
    }

    #[test]
    fn crash_drops_unsynced_bytes_and_keeps_synced_ones() {
        let fs = db();
        let mut file = fs.create(p("/db/log")).unwrap();
        file.append(b"synced").unwrap();
        file.sync().unwrap();
        file.append(b" lost").unwrap();
        fs.sync_dir(p("/db")).unwrap();
        write(&fs, "/db/unsynced", b"gone", false);
        fs.sync_dir(p("/db")).unwrap();
        assert_eq!(fs.read(p("/db/log")).unwrap(), b"synced lost");

        fs.crash();
        assert_eq!(fs.read(p("/db/log")).unwrap(), b"synced");
        // Its name is durable, its bytes never were.
        assert_eq!(fs.read(p("/db/unsynced")).unwrap(), b"");
        // The writer from before the crash is dead.
        assert!(file.append(b"more").is_err());
        assert!(file.sync().is_err());
        drop(file);
        assert_eq!(fs.read(p("/db/log")).unwrap(), b"synced");
    }

    #[test]
    fn new_names_need_a_directory_sync() {
        let fs = db();
        write(&fs, "/db/f", b"data", true);
        fs.crash();
        assert!(!fs.exists(p("/db/f")));
        assert_eq!(fs.list(p("/db")).unwrap(), Vec::<String>::new());
        // Directories survive.
        assert!(fs.exists(p("/db")));
    }

    #[test]
    fn rename_is_not_durable_without_directory_sync() {
        let fs = db();
        write(&fs, "/db/old", b"data", true);
        fs.sync_dir(p("/db")).unwrap();
        fs.rename(p("/db/old"), p("/db/new")).unwrap();
        assert_eq!(fs.list(p("/db")).unwrap(), ["new"]);
        fs.crash();
        assert_eq!(fs.list(p("/db")).unwrap(), ["old"]);
        assert_eq!(fs.read(p("/db/old")).unwrap(), b"data");

        fs.rename(p("/db/old"), p("/db/new")).unwrap();
        fs.sync_dir(p("/db")).unwrap();
        fs.crash();
        assert_eq!(fs.list(p("/db")).unwrap(), ["new"]);
        assert_eq!(fs.read(p("/db/new")).unwrap(), b"data");
    }

    #[test]
    fn directory_sync_covers_only_that_directory() {
        let fs = db();
        fs.create_dir_all(p("/db/chk-1")).unwrap();
        write(&fs, "/db/a", b"a", true);
        write(&fs, "/db/chk-1/b", b"b", true);
        fs.sync_dir(p("/db")).unwrap();
        fs.crash();
        assert_eq!(fs.file_names(), [PathBuf::from("/db/a")]);
    }

    #[test]
    fn removal_is_not_durable_without_directory_sync() {
        let fs = db();
        write(&fs, "/db/f", b"data", true);
        fs.sync_dir(p("/db")).unwrap();
        fs.remove(p("/db/f")).unwrap();
        assert!(!fs.exists(p("/db/f")));
        fs.crash();
        assert_eq!(fs.read(p("/db/f")).unwrap(), b"data");
        fs.remove(p("/db/f")).unwrap();
        fs.sync_dir(p("/db")).unwrap();
        fs.crash();
        assert!(!fs.exists(p("/db/f")));
    }

    #[test]
    fn hard_links_share_the_file() {
        let fs = db();
        fs.create_dir_all(p("/db/chk")).unwrap();
        fs.sync_dir(p("/db")).unwrap();
        let mut file = fs.create(p("/db/seg")).unwrap();
        file.append(b"one").unwrap();
        fs.hard_link(p("/db/seg"), p("/db/chk/seg")).unwrap();
        file.append(b" two").unwrap();
        file.sync().unwrap();
        assert_eq!(fs.read(p("/db/chk/seg")).unwrap(), b"one two");
        fs.sync_dir(p("/db/chk")).unwrap();
        fs.crash();
        assert_eq!(fs.file_names(), [PathBuf::from("/db/chk/seg")]);
        assert_eq!(fs.read(p("/db/chk/seg")).unwrap(), b"one two");
    }

    #[test]
    fn a_directory_not_synced_in_its_parent_is_lost_with_its_files() {
        let fs = db();
        fs.create_dir_all(p("/db/a/b")).unwrap();
        write(&fs, "/db/a/b/f", b"data", true);
        fs.sync_dir(p("/db/a/b")).unwrap();
        fs.sync_dir(p("/db/a")).unwrap();
        fs.crash();
        assert!(!fs.exists(p("/db/a")));
        assert!(fs.file_names().is_empty());
        fs.create_dir_all(p("/db/a/b")).unwrap();
        write(&fs, "/db/a/b/f", b"data", true);
        for d in ["/db/a/b", "/db/a", "/db"] {
            fs.sync_dir(p(d)).unwrap();
        }
        fs.crash();
        assert_eq!(fs.read(p("/db/a/b/f")).unwrap(), b"data");
    }

    #[test]
    fn create_over_an_existing_file_truncates_it_for_every_name() {
        let fs = db();
        write(&fs, "/db/seg", b"segment", true);
        fs.hard_link(p("/db/seg"), p("/db/link")).unwrap();
        fs.sync_dir(p("/db")).unwrap();
        let file = fs.create(p("/db/seg")).unwrap();
        drop(file);
        assert_eq!(fs.read(p("/db/link")).unwrap(), b"");
        fs.crash();
        assert_eq!(fs.read(p("/db/link")).unwrap(), b"");
    }

    #[test]
    fn a_crash_may_keep_part_of_the_unsynced_bytes() {
        let fs = db();
        fs.exact_crashes(false);
        let mut lengths = std::collections::BTreeSet::new();
        for round in 0..32 {
            let name = format!("/db/f{round}");
            let mut file = fs.create(p(&name)).unwrap();
            file.append(b"synced").unwrap();
            file.sync().unwrap();
            file.append(b"0123456789").unwrap();
            fs.sync_dir(p("/db")).unwrap();
            fs.crash();
            let got = fs.read(p(&name)).unwrap();
            assert!(got.len() >= 6 && b"synced0123456789".starts_with(&got), "{got:?}");
            lengths.insert(got.len());
        }
        assert!(lengths.len() > 3, "{lengths:?}");
    }

    #[test]
    fn buffered_writes_reach_readers_at_sync_or_drop_and_a_crash_loses_them() {
        let fs = db();
        fs.buffered_writes(true);
        let mut file = fs.create(p("/db/f")).unwrap();
        file.append(b"one").unwrap();
        assert_eq!(file.len(), 3);
        assert_eq!(fs.read(p("/db/f")).unwrap(), b"");
        file.sync().unwrap();
        assert_eq!(fs.read(p("/db/f")).unwrap(), b"one");
        file.append(b" two").unwrap();
        drop(file);
        assert_eq!(fs.read(p("/db/f")).unwrap(), b"one two");
        fs.sync_dir(p("/db")).unwrap();

        let mut file = fs.create(p("/db/g")).unwrap();
        file.append(b"lost").unwrap();
        fs.sync_dir(p("/db")).unwrap();
        fs.crash();
        drop(file);
        assert_eq!(fs.read(p("/db/g")).unwrap(), b"");
        assert_eq!(fs.read(p("/db/f")).unwrap(), b"one");
    }

    #[test]
    fn writing_a_removed_file_still_works() {
        let fs = db();
        let mut file = fs.create(p("/db/f")).unwrap();
        file.append(b"x").unwrap();
        fs.remove(p("/db/f")).unwrap();
        file.append(b"y").unwrap();
        file.sync().unwrap();
        assert_eq!(file.len(), 2);
        drop(file);
        assert!(fs.file_names().is_empty());
        assert!(fs.lock().inodes.is_empty(), "the unnamed file is freed");
    }

    #[test]
    fn write_atomic_survives_a_crash_at_every_operation() {
        let old = b"old contents".as_slice();
        let new = b"new contents, longer than the old ones".as_slice();
        let setup = || {
            let fs = db();
            fs.write_file(p("/db/CURRENT"), old).unwrap();
            fs
        };

        let fs = setup();
        let start = fs.ops();
        write_atomic(&fs, p("/db/CURRENT"), new).unwrap();
        let total = fs.ops() - start;
        assert!(total >= 5, "create, append, sync, rename, sync_dir: {total}");
        fs.crash();
        assert_eq!(fs.read(p("/db/CURRENT")).unwrap(), new);

        for n in 0..total {
            let fs = setup();
            fs.fail_at(fs.ops() + n, FaultKind::Crash);
            let err = write_atomic(&fs, p("/db/CURRENT"), new).unwrap_err();
            assert!(is_injected(&err), "crash at {n}: {err}");
            assert!(fs.is_crashed());
            assert!(fs.open(p("/db/CURRENT")).is_err(), "a crashed fs fails reads too");
            assert!(fs.list(p("/db")).is_err());
            fs.recover();
            let contents = fs.read(p("/db/CURRENT")).unwrap();
            assert!(contents == old || contents == new, "crash at {n}: {contents:?}");
            // Until the directory sync completes the replacement is not durable.
            assert_eq!(contents, old, "crash at {n}");
            assert_eq!(fs.list(p("/db")).unwrap(), ["CURRENT"], "crash at {n}");
            // Usable again.
            write_atomic(&fs, p("/db/CURRENT"), new).unwrap();
            fs.crash();
            assert_eq!(fs.read(p("/db/CURRENT")).unwrap(), new);
        }
    }

    #[test]
    fn write_atomic_under_an_error_at_every_operation() {
        let old = b"old".as_slice();
        let new = b"new".as_slice();
        for n in 0..5 {
            let fs = db();
            fs.write_file(p("/db/CURRENT"), old).unwrap();
            fs.fail_at(fs.ops() + n, FaultKind::Error);
            assert!(write_atomic(&fs, p("/db/CURRENT"), new).is_err(), "error at {n}");
            let contents = fs.read(p("/db/CURRENT")).unwrap();
            assert!(contents == old || contents == new, "error at {n}: {contents:?}");
            fs.crash();
            assert_eq!(fs.read(p("/db/CURRENT")).unwrap(), old, "error at {n}");
        }
    }

    #[test]
    fn error_fails_exactly_one_operation() {
        let fs = db();
        let start = fs.ops();
        let mut file = fs.create(p("/db/f")).unwrap();
        assert_eq!(fs.ops(), start + 1);
        fs.fail_at(start + 2, FaultKind::Error);
        file.append(b"a").unwrap(); // op 1
        let err = file.append(b"b").unwrap_err(); // op 2
        assert!(is_injected(&err));
        assert_eq!(file.len(), 1);
        assert_eq!(fs.read(p("/db/f")).unwrap(), b"a", "the failed append has no effect");
        file.append(b"c").unwrap();
        file.sync().unwrap();
        fs.rename(p("/db/f"), p("/db/g")).unwrap();
        assert_eq!(fs.read(p("/db/g")).unwrap(), b"ac");
        assert_eq!(fs.ops(), start + 6);
    }

    #[test]
    fn failed_operations_have_no_effect() {
        let fs = db();
        write(&fs, "/db/a", b"a", true);
        let next = fs.ops();
        fs.fail_at(next, FaultKind::Error);
        assert!(fs.rename(p("/db/a"), p("/db/b")).is_err());
        fs.fail_at(next + 1, FaultKind::Error);
        assert!(fs.hard_link(p("/db/a"), p("/db/b")).is_err());
        fs.fail_at(next + 2, FaultKind::Error);
        assert!(fs.remove(p("/db/a")).is_err());
        fs.fail_at(next + 3, FaultKind::Error);
        assert!(fs.create(p("/db/a")).is_err());
        fs.fail_at(next + 4, FaultKind::Error);
        assert!(fs.sync_dir(p("/db")).is_err());
        assert_eq!(fs.file_names(), [PathBuf::from("/db/a")]);
        assert_eq!(fs.read(p("/db/a")).unwrap(), b"a");
        fs.crash();
        assert!(fs.file_names().is_empty(), "the failed sync_dir made nothing durable");
    }

    #[test]
    fn error_forever_fails_every_later_mutation() {
        let fs = db();
        write(&fs, "/db/a", b"a", true);
        let mut file = fs.create(p("/db/b")).unwrap();
        fs.fail_at(fs.ops() + 1, FaultKind::ErrorForever);
        file.append(b"1").unwrap();
        assert!(file.append(b"2").is_err());
        assert!(file.sync().is_err());
        assert!(fs.create(p("/db/c")).is_err());
        assert!(fs.remove(p("/db/a")).is_err());
        assert!(fs.sync_dir(p("/db")).is_err());
        // Reads still work.
        assert_eq!(&*fs.open(p("/db/b")).unwrap(), b"1");
        assert_eq!(fs.list(p("/db")).unwrap(), ["a", "b"]);
        fs.disarm();
        file.append(b"3").unwrap();
        assert_eq!(fs.read(p("/db/b")).unwrap(), b"13");
    }

    #[test]
    fn no_space_fails_creates_and_appends_until_disarmed() {
        let fs = db();
        write(&fs, "/db/a", b"a", true);
        let mut file = fs.create(p("/db/b")).unwrap();
        file.append(b"1").unwrap();
        // Armed at a sync: it succeeds, the disk is full from there on.
        fs.fail_at(fs.ops(), FaultKind::NoSpace);
        file.sync().unwrap();
        let full = |r: io::Result<()>| r.unwrap_err().kind() == io::ErrorKind::StorageFull;
        assert!(full(file.append(b"2")));
        assert!(fs.create(p("/db/c")).is_err());
        assert!(full(fs.create_new(p("/db/c")).map(|_| ())));
        // What frees or moves space still works.
        fs.rename(p("/db/a"), p("/db/a2")).unwrap();
        fs.hard_link(p("/db/b"), p("/db/b2")).unwrap();
        fs.remove(p("/db/b2")).unwrap();
        fs.sync_dir(p("/db")).unwrap();
        assert_eq!(fs.read(p("/db/b")).unwrap(), b"1");
        fs.disarm();
        file.append(b"3").unwrap();
        assert_eq!(fs.read(p("/db/b")).unwrap(), b"13");
    }

    #[test]
    fn crash_fault_stops_everything_until_recovery() {
        let fs = db();
        let mut file = fs.create(p("/db/f")).unwrap();
        file.append(b"durable").unwrap();
        file.sync().unwrap();
        fs.sync_dir(p("/db")).unwrap();
        file.append(b" volatile").unwrap();
        fs.fail_at(fs.ops(), FaultKind::Crash);
        assert!(file.sync().is_err());
        assert!(file.append(b"x").is_err());
        assert!(fs.open(p("/db/f")).is_err());
        assert!(fs.list(p("/db")).is_err());
        assert!(fs.create_dir_all(p("/x")).is_err());
        assert!(!fs.exists(p("/db/f")));
        let ops = fs.ops();
        assert!(fs.create(p("/db/g")).is_err());
        assert_eq!(fs.ops(), ops, "a crashed fs counts nothing");

        fs.recover();
        assert!(!fs.is_crashed());
        assert_eq!(&*fs.open(p("/db/f")).unwrap(), b"durable");
        assert!(file.append(b"x").is_err(), "the old writer stays dead");
        write(&fs, "/db/g", b"g", true);
        assert_eq!(fs.read(p("/db/g")).unwrap(), b"g");
    }

    #[test]
    fn disarm_clears_an_armed_fault() {
        let fs = db();
        fs.fail_at(fs.ops(), FaultKind::Crash);
        fs.disarm();
        write(&fs, "/db/f", b"f", true);
        assert!(!fs.is_crashed());
    }

    #[test]
    fn corrupt_and_truncate_change_durable_bytes() {
        let fs = db();
        fs.write_file(p("/db/seg"), b"abcdef").unwrap();
        fs.corrupt(p("/db/seg"), 2, 0x20).unwrap();
        assert_eq!(fs.read(p("/db/seg")).unwrap(), b"abCdef");
        fs.truncate(p("/db/seg"), 4).unwrap();
        assert_eq!(&*fs.open(p("/db/seg")).unwrap(), b"abCd");
        fs.crash();
        assert_eq!(fs.read(p("/db/seg")).unwrap(), b"abCd");

        assert_eq!(fs.corrupt(p("/db/seg"), 4, 1).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(fs.truncate(p("/db/seg"), 5).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(fs.corrupt(p("/db/x"), 0, 1).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(fs.truncate(p("/db/x"), 0).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(fs.read(p("/db/x")).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn write_file_replaces_and_creates_directories() {
        let fs = FaultFs::new();
        fs.write_file(p("/fixtures/v1/MANIFEST"), b"one").unwrap();
        fs.write_file(p("/fixtures/v1/MANIFEST"), b"two").unwrap();
        assert!(fs.exists(p("/fixtures")));
        fs.crash();
        assert_eq!(fs.list(p("/fixtures/v1")).unwrap(), ["MANIFEST"]);
        assert_eq!(fs.read(p("/fixtures/v1/MANIFEST")).unwrap(), b"two");
        assert_eq!(fs.lock().inodes.len(), 1);
    }

    #[test]
    fn bare_names_live_in_the_current_directory() {
        let fs = FaultFs::new();
        write_atomic(&fs, p("CURRENT"), b"x").unwrap();
        assert_eq!(fs.list(p(".")).unwrap(), ["CURRENT"]);
        assert_eq!(fs.list(p("")).unwrap(), ["CURRENT"]);
        fs.crash();
        assert_eq!(fs.read(p("CURRENT")).unwrap(), b"x");
    }

    #[test]
    fn clones_share_the_file_system() {
        let fs = db();
        let other = fs.clone();
        write(&other, "/db/f", b"f", false);
        assert_eq!(fs.read(p("/db/f")).unwrap(), b"f");
        assert!(format!("{fs:?}").contains("files: 1"));
    }
}
