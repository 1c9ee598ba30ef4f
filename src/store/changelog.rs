//! The store's changelog: with [`StoreOptions::changelog`](super::StoreOptions::changelog) on,
//! every write is also appended to a log that a thread of its own writes and syncs while
//! processing goes on, in frames of about [`LOG_CHUNK`] bytes (`format-spec/changelog.md`).
//! A checkpoint seals the log: the file written since the previous seal is made durable and
//! handed to the checkpoint, which then stores that file, not the flushed state, and needs
//! only the last frame synced. The log's files live in the store's directory until no
//! checkpoint in flight needs them.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::format::changelog::{encode_header, frame_header, put_record};
use crate::format::RecordKind;
use crate::io::{FileSystem, WritableFile};

/// The frame size at which the writing thread takes over the buffered records.
pub(crate) const LOG_CHUNK: usize = 256 << 10;
/// Frames the writing thread may be behind before writes wait for it.
const LOG_QUEUE: usize = 16;
const LOG_PREFIX: &str = "changelog-";
const LOG_SUFFIX: &str = ".log";

/// The name of changelog file `seq` in the store's directory.
pub(crate) fn log_file_name(seq: u64) -> String {
    format!("{LOG_PREFIX}{seq:010}{LOG_SUFFIX}")
}

/// Whether `name` is a changelog file (left behind when found on open).
pub(crate) fn is_log_file_name(name: &str) -> bool {
    name.starts_with(LOG_PREFIX) && name.ends_with(LOG_SUFFIX)
}

/// A sealed changelog file: the writes between two seals. Its file is removed when the last
/// holder lets go (the checkpoint storage keeps its own link or copy).
pub(crate) struct SealedLog {
    seq: u64,
    path: PathBuf,
    fs: Arc<dyn FileSystem>,
    /// The durable length, or why the file could not be written.
    outcome: Mutex<Option<std::result::Result<u64, String>>>,
    done: Condvar,
}

impl std::fmt::Debug for SealedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedLog").field("seq", &self.seq).field("path", &self.path).finish()
    }
}

impl SealedLog {
    /// Its sequence number within the store.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Its path in the store's directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until the file is durable; its length.
    pub(crate) fn wait(&self) -> Result<u64> {
        let mut outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match &*outcome {
                Some(Ok(len)) => return Ok(*len),
                Some(Err(why)) => return Err(Error::io(&self.path, std::io::Error::other(why.clone()))),
                None => outcome = self.done.wait(outcome).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    fn set(&self, outcome: std::result::Result<u64, String>) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        self.done.notify_all();
    }
}

impl Drop for SealedLog {
    fn drop(&mut self) {
        // Best effort: a file left behind is removed when the store next opens.
        let _ = self.fs.remove(&self.path);
    }
}

enum Cmd {
    Frame(Vec<u8>),
    Seal(Arc<SealedLog>),
}

/// The writing side of the changelog, owned by the store.
pub(crate) struct Changelog {
    buf: Vec<u8>,
    tx: Option<SyncSender<Cmd>>,
    spare: Receiver<Vec<u8>>,
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    next_seq: u64,
    /// Whether anything was logged since the last seal.
    dirty: bool,
    /// Bytes logged since the last seal.
    bytes: u64,
    /// False when the store changed in a way the log does not describe (key groups dropped)
    /// since the last seal.
    continuous: bool,
    thread: Option<JoinHandle<()>>,
}

/// What sealing the changelog gave.
#[derive(Debug, Clone)]
pub(crate) struct LogSeal {
    /// The file written since the previous seal; `None` when nothing was.
    pub(crate) log: Option<Arc<SealedLog>>,
    /// Its size before framing (for deciding when to materialize).
    pub(crate) bytes: u64,
    /// Whether the log describes every change since the previous seal.
    pub(crate) continuous: bool,
}

impl Changelog {
    pub(crate) fn start(fs: Arc<dyn FileSystem>, dir: &Path) -> std::io::Result<Changelog> {
        let (tx, rx) = mpsc::sync_channel::<Cmd>(LOG_QUEUE);
        let (spare_tx, spare) = mpsc::channel::<Vec<u8>>();
        let (wfs, wdir) = (fs.clone(), dir.to_path_buf());
        let thread = std::thread::Builder::new().name("eddy-changelog".into()).spawn(move || {
            // Not marked as background work: the thread mostly waits for the disk, and it must
            // get to each frame as it comes, not when the task thread's time slice ends.
            writer(wfs, wdir, rx, spare_tx);
        })?;
        Ok(Changelog {
            buf: Vec::with_capacity(LOG_CHUNK + 4096),
            tx: Some(tx),
            spare,
            fs,
            dir: dir.to_path_buf(),
            next_seq: 1,
            dirty: false,
            bytes: 0,
            continuous: true,
            thread: Some(thread),
        })
    }

    /// Logs one write.
    #[inline]
    pub(crate) fn record(&mut self, kind: RecordKind, key: &[u8], value: &[u8]) {
        put_record(&mut self.buf, kind, key, value);
        self.dirty = true;
        if self.buf.len() >= LOG_CHUNK {
            self.send();
        }
    }

    /// Notes a change the log cannot describe: the next seal is not continuous.
    pub(crate) fn interrupt(&mut self) {
        self.continuous = false;
    }

    fn send(&mut self) {
        let next = self.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(LOG_CHUNK + 4096));
        let full = std::mem::replace(&mut self.buf, next);
        self.bytes += full.len() as u64;
        // A writer that is gone fails the seal that waits for it.
        if let Some(tx) = &self.tx {
            let _ = tx.send(Cmd::Frame(full));
        }
    }

    /// Seals the file written since the previous seal.
    pub(crate) fn seal(&mut self) -> LogSeal {
        let continuous = std::mem::replace(&mut self.continuous, true);
        if !self.dirty {
            return LogSeal { log: None, bytes: 0, continuous };
        }
        if !self.buf.is_empty() {
            self.send();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.dirty = false;
        let bytes = std::mem::take(&mut self.bytes);
        let sealed = Arc::new(SealedLog {
            seq,
            path: self.dir.join(log_file_name(seq)),
            fs: self.fs.clone(),
            outcome: Mutex::new(None),
            done: Condvar::new(),
        });
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(Cmd::Seal(sealed.clone())).is_ok());
        if !sent {
            sealed.set(Err("the changelog thread is gone".into()));
        }
        LogSeal { log: Some(sealed), bytes, continuous }
    }
}

impl Drop for Changelog {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The file being written, and its sequence number.
struct Open {
    file: Box<dyn WritableFile>,
    path: PathBuf,
}

/// The changelog thread: writes the frames it is given and syncs them, all that queued up
/// behind one sync (so that it keeps up with writes however slow a sync is), and so that a
/// seal has only the last frames left to make durable. The next file is created as soon as
/// the previous one is sealed, off the path of the next checkpoint. After a failure the frames
/// up to the next seal are dropped and that seal fails; the file after it starts afresh.
fn writer(fs: Arc<dyn FileSystem>, dir: PathBuf, rx: Receiver<Cmd>, spare: mpsc::Sender<Vec<u8>>) {
    let mut seq = 1u64;
    let mut failed: Option<String> = None;
    let mut open = start_file(&fs, &dir, seq).map_err(|e| failed = Some(e.to_string())).ok();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut wrote = false;
        let mut seal = None;
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Frame(mut payload) => {
                    if failed.is_none() {
                        if let Err(e) = append(&fs, &dir, seq, &mut open, &payload) {
                            failed = Some(e.to_string());
                        }
                        wrote = true;
                    }
                    payload.clear();
                    let _ = spare.send(payload);
                    next = rx.try_recv().ok();
                }
                Cmd::Seal(s) => seal = Some(s),
            }
        }
        if wrote && failed.is_none() {
            if let Some(o) = open.as_mut() {
                if let Err(e) = o.file.sync() {
                    failed = Some(e.to_string());
                }
            }
        }
        if let Some(sealed) = seal {
            let outcome = match (failed.take(), open.take()) {
                (Some(why), _) => Err(why),
                (None, Some(o)) => Ok(o.file.len()),
                (None, None) => Err("nothing was written to the changelog".into()),
            };
            sealed.set(outcome);
            seq += 1;
            open = start_file(&fs, &dir, seq).map_err(|e| failed = Some(e.to_string())).ok();
        }
    }
    // Unsealed writes belong to no checkpoint.
    if let Some(o) = open {
        drop(o.file);
        let _ = fs.remove(&o.path);
    }
}

/// Creates changelog file `seq` with its header, durably.
fn start_file(fs: &Arc<dyn FileSystem>, dir: &Path, seq: u64) -> std::io::Result<Open> {
    let path = dir.join(log_file_name(seq));
    let mut file = fs.create(&path)?;
    file.append(&encode_header(seq))?;
    file.sync()?;
    Ok(Open { file, path })
}

/// Appends one frame (without a sync).
fn append(
    fs: &Arc<dyn FileSystem>,
    dir: &Path,
    seq: u64,
    open: &mut Option<Open>,
    payload: &[u8],
) -> std::io::Result<()> {
    if open.is_none() {
        *open = Some(start_file(fs, dir, seq)?);
    }
    let Some(o) = open.as_mut() else { return Ok(()) };
    o.file.append(&frame_header(payload))?;
    o.file.append(payload)
}
