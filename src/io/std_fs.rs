//! [`StdFs`]: the real file system, on `std::fs`, with files read back through memory maps.

use super::{FileBytes, FileSystem, LockGuard, WritableFile};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Appends are gathered in a buffer of this many bytes before they reach the file.
const WRITE_BUFFER: usize = 256 * 1024;

/// The operating system's file system.
///
/// Files being written are buffered in user space and reach the disk durably only through
/// [`WritableFile::sync`]. Files are read by memory-mapping them whole.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

impl StdFs {
    /// The operating system's file system.
    pub fn new() -> Self {
        StdFs
    }
}

impl FileSystem for StdFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let file = File::create(path)?;
        Ok(Box::new(StdFile::new(file)))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let file = File::options().append(true).create_new(true).open(path)?;
        Ok(Box::new(StdFile::new(file)))
    }

    fn open(&self, path: &Path) -> io::Result<FileBytes> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            // A zero-length file cannot be mapped.
            return Ok(FileBytes::from_vec(Vec::new()));
        }
        // SAFETY: a memory map is sound only while no one changes the file underneath it. eddy
        // writes every file once, append-only, syncs it, and never modifies or truncates it
        // afterwards: files are immutable by the time they are opened for reading. They are only
        // ever removed, which leaves an existing map intact.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(FileBytes::from_map(map))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::hard_link(from, to)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            // eddy names its files in ASCII; anything else is not one of its files.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort_unstable();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            File::open(dir)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            // Directories cannot be opened as files here; the entries' durability follows
            // from the file system's own metadata journaling.
            fs::metadata(dir).map(|_| ())
        }
    }

    fn exists(&self, path: &Path) -> bool {
        path.try_exists().unwrap_or(false)
    }

    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(LockGuard::new(Box::new(file))),
            Err(fs::TryLockError::WouldBlock) => {
                Err(io::Error::new(io::ErrorKind::WouldBlock, "locked by another holder"))
            }
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// A file being written through [`StdFs`].
///
/// After a failed write or sync the file is poisoned: every later call fails, because what
/// reached the disk is unknown and retrying a failed sync may report success for lost data.
#[derive(Debug)]
struct StdFile {
    file: File,
    buf: Vec<u8>,
    len: u64,
    /// How many bytes are in the kernel's hands, and from where none was yet sent on to disk.
    written: u64,
    writeback_from: u64,
    /// See [`WritableFile::start_writeback_every`]; `u64::MAX` for never.
    writeback_every: u64,
    poisoned: bool,
}

impl StdFile {
    fn new(file: File) -> Self {
        StdFile {
            file,
            buf: Vec::with_capacity(WRITE_BUFFER),
            len: 0,
            written: 0,
            writeback_from: 0,
            writeback_every: u64::MAX,
            poisoned: false,
        }
    }

    fn check(&self) -> io::Result<()> {
        if self.poisoned {
            Err(io::Error::other("an earlier write or sync of this file failed"))
        } else {
            Ok(())
        }
    }

    /// Runs `op`, poisoning the file if it fails.
    fn latch<T>(&mut self, op: impl FnOnce(&mut Self) -> io::Result<T>) -> io::Result<T> {
        self.check()?;
        let result = op(self);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.wrote(self.buf.len());
            self.buf.clear();
        }
        Ok(())
    }

    fn wrote(&mut self, n: usize) {
        self.written += n as u64;
        if self.written - self.writeback_from >= self.writeback_every {
            crate::sys::start_writeback(&self.file, self.writeback_from, self.written - self.writeback_from);
            self.writeback_from = self.written;
        }
    }
}

impl WritableFile for StdFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.latch(|f| {
            if f.buf.len() + data.len() > WRITE_BUFFER {
                f.flush_buf()?;
            }
            if data.len() >= WRITE_BUFFER {
                f.file.write_all(data)?;
                f.wrote(data.len());
            } else {
                f.buf.extend_from_slice(data);
            }
            f.len += data.len() as u64;
            Ok(())
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        self.latch(|f| {
            f.flush_buf()?;
            f.file.sync_data()
        })
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn start_writeback_every(&mut self, bytes: u64) {
        self.writeback_every = bytes.max(1);
    }
}

impl Drop for StdFile {
    fn drop(&mut self) {
        if !self.poisoned {
            // Best effort: whoever needs the bytes durable has synced them.
            let _ = self.flush_buf();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::write_atomic;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[test]
    fn write_sync_open_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdFs::new();
        let path = dir.path().join("000001.seg");

        let small = pattern(1000, 1);
        let large = pattern(WRITE_BUFFER + 12345, 2);
        let tail = pattern(WRITE_BUFFER - 1, 3);
        let mut file = fs.create(&path).unwrap();
        assert!(file.is_empty());
        file.append(&small).unwrap();
        file.append(&large).unwrap();
        file.append(&tail).unwrap();
        file.append(&[]).unwrap();
        assert_eq!(file.len(), (small.len() + large.len() + tail.len()) as u64);
        file.sync().unwrap();
        drop(file);

        let expected = [small, large, tail].concat();
        let bytes = fs.open(&path).unwrap();
        assert_eq!(bytes.len(), expected.len());
        assert!(bytes.as_slice() == expected.as_slice());
        // The view outlives the removal of the file.
        let clone = bytes.clone();
        fs.remove(&path).unwrap();
        assert!(!fs.exists(&path));
        assert!(clone.as_slice() == expected.as_slice());
    }

    #[test]
    fn create_truncates_and_drop_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdFs::new();
        let path = dir.path().join("f");

        let mut file = fs.create(&path).unwrap();
        file.append(b"a longer first version").unwrap();
        file.sync().unwrap();
        drop(file);

        let mut file = fs.create(&path).unwrap();
        file.append(b"short").unwrap();
        drop(file); // not synced, but flushed to the OS
        assert_eq!(&*fs.open(&path).unwrap(), b"short");
    }

    #[test]
    fn empty_file_opens_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdFs::new();
        let path = dir.path().join("empty");
        let mut file = fs.create(&path).unwrap();
        file.sync().unwrap();
        drop(file);
        let bytes = fs.open(&path).unwrap();
        assert!(bytes.is_empty());
    }

    #[test]
    fn missing_files_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdFs::new();
        let missing = dir.path().join("missing");
        assert_eq!(fs.open(&missing).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(fs.remove(&missing).unwrap_err().kind(), io::ErrorKind::NotFound);
        let other = dir.path().join("other");
        assert_eq!(fs.rename(&missing, &other).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(fs.hard_link(&missing, &other).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(fs.list(&missing).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert!(!fs.exists(&missing));
    }

    #[test]
    fn namespace_operations() {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdFs::new();
        let db = dir.path().join("db");
        fs.create_dir_all(&db.join("sub")).unwrap();
        assert!(fs.exists(&db));
        assert!(fs.exists(&db.join("sub")));

        for name in ["c", "a", "b"] {
            let mut file = fs.create(&db.join(name)).unwrap();
            file.append(name.as_bytes()).unwrap();
            file.sync().unwrap();
        }
        fs.sync_dir(&db).unwrap();
        // Only regular files are listed, sorted.
        assert_eq!(fs.list(&db).unwrap(), ["a", "b", "c"]);

        fs.rename(&db.join("a"), &db.join("d")).unwrap();
        fs.rename(&db.join("b"), &db.join("c")).unwrap();
        assert_eq!(fs.list(&db).unwrap(), ["c", "d"]);
        assert_eq!(&*fs.open(&db.join("c")).unwrap(), b"b");
        assert_eq!(&*fs.open(&db.join("d")).unwrap(), b"a");

        // A hard link names the same file; removing one name leaves the other.
        let checkpoint = db.join("sub");
        fs.hard_link(&db.join("c"), &checkpoint.join("c")).unwrap();
        fs.remove(&db.join("c")).unwrap();
        assert_eq!(&*fs.open(&checkpoint.join("c")).unwrap(), b"b");
        assert_eq!(fs.list(&checkpoint).unwrap(), ["c"]);
        assert_eq!(fs.list(&db).unwrap(), ["d"]);
        assert_eq!(
            fs.hard_link(&db.join("d"), &checkpoint.join("c")).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        fs.sync_dir(&db).unwrap();
        fs.sync_dir(&checkpoint).unwrap();
    }

    #[test]
    fn write_atomic_replaces_contents() {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdFs::new();
        let path = dir.path().join("CURRENT");
        write_atomic(&fs, &path, b"first").unwrap();
        assert_eq!(&*fs.open(&path).unwrap(), b"first");
        write_atomic(&fs, &path, b"second, longer").unwrap();
        assert_eq!(&*fs.open(&path).unwrap(), b"second, longer");
        write_atomic(&fs, &path, b"").unwrap();
        assert!(fs.open(&path).unwrap().is_empty());
        // No temporary file is left behind.
        assert_eq!(fs.list(dir.path()).unwrap(), ["CURRENT"]);
    }
}
