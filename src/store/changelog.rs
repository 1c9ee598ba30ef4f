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
use crate::format::{RecordKind, SchemaTag};
use crate::io::{FileSystem, WritableFile};

/// The frame size at which the writing thread takes over the buffered records.
pub(crate) const LOG_CHUNK: usize = 64 << 10;
/// Frames the writing thread may be behind before writes wait for it.
const LOG_QUEUE: usize = 64;
/// The most log kept unsealed: beyond it (no checkpoint seals the log), the file starts over
/// and the next seal says the log is not continuous, so that the disk does not fill up.
const LOG_MAX_UNSEALED: u64 = 1 << 30;
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
    Seal(PendingSeal),
    /// Drop what was written since the last seal and start the file again.
    Restart,
}

/// A seal on its way to the writing thread: if the thread goes away before answering it
/// (it never does but by a bug), the seal fails instead of leaving its waiter waiting.
struct PendingSeal(Arc<SealedLog>);

impl Drop for PendingSeal {
    fn drop(&mut self) {
        let unanswered = self.0.outcome.lock().unwrap_or_else(|e| e.into_inner()).is_none();
        if unanswered {
            self.0.set(Err("the changelog thread stopped".into()));
        }
    }
}

/// The writing side of the changelog, owned by the store.
pub(crate) struct Changelog {
    buf: Vec<u8>,
    tx: Option<SyncSender<Cmd>>,
    spare: Receiver<Vec<u8>>,
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    next_seq: u64,
    /// Bytes handed to the writing thread since the last seal (what is still in `buf` is not
    /// counted yet).
    bytes: u64,
    /// False when the store changed in a way the log does not describe (key groups dropped)
    /// or the log started over since the last seal, and before the first seal. Writes are not
    /// logged then: no checkpoint can use them (the next one stores the state).
    continuous: bool,
    /// See [`LOG_MAX_UNSEALED`].
    max_unsealed: u64,
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
    /// The serializer versions of its records (set by the store).
    pub(crate) schema: Arc<SchemaTag>,
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
            bytes: 0,
            continuous: false,
            max_unsealed: LOG_MAX_UNSEALED,
            thread: Some(thread),
        })
    }

    /// Logs one write of `key` (in the group of its first `group_len` bytes, 0 for none).
    #[inline]
    pub(crate) fn record(&mut self, kind: RecordKind, key: &[u8], group_len: usize, value: &[u8]) {
        if !self.continuous {
            return;
        }
        put_record(&mut self.buf, kind, key, group_len, value);
        if self.buf.len() >= LOG_CHUNK {
            self.send();
        }
    }

    /// Notes a change the log cannot describe: the next seal is not continuous, and nothing
    /// is logged until then.
    pub(crate) fn interrupt(&mut self) {
        self.continuous = false;
        self.buf.clear();
        self.bytes = 0;
        if let Some(tx) = &self.tx {
            let _ = tx.send(Cmd::Restart);
        }
    }

    fn send(&mut self) {
        let next = self.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(LOG_CHUNK + 4096));
        let full = std::mem::replace(&mut self.buf, next);
        self.bytes += full.len() as u64;
        // A writer that is gone fails the seal that waits for it.
        if let Some(tx) = &self.tx {
            let _ = tx.send(Cmd::Frame(full));
        }
        if self.bytes > self.max_unsealed {
            self.interrupt();
        }
    }

    /// Seals the file written since the previous seal.
    pub(crate) fn seal(&mut self) -> LogSeal {
        // The last frame goes first: it may take the log over its limit and interrupt it.
        if !self.buf.is_empty() {
            self.send();
        }
        let continuous = std::mem::replace(&mut self.continuous, true);
        if self.bytes == 0 {
            return LogSeal { log: None, bytes: 0, continuous, schema: Arc::default() };
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let bytes = std::mem::take(&mut self.bytes);
        let sealed = Arc::new(SealedLog {
            seq,
            path: self.dir.join(log_file_name(seq)),
            fs: self.fs.clone(),
            outcome: Mutex::new(None),
            done: Condvar::new(),
        });
        // A seal that cannot be sent fails as it is dropped.
        let pending = PendingSeal(sealed.clone());
        if let Some(tx) = &self.tx {
            let _ = tx.send(Cmd::Seal(pending));
        }
        LogSeal { log: Some(sealed), bytes, continuous, schema: Arc::default() }
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
                Cmd::Restart => {
                    if let Some(o) = open.take() {
                        drop(o.file);
                        let _ = fs.remove(&o.path);
                    }
                    wrote = false;
                    failed = None;
                    open = start_file(&fs, &dir, seq).map_err(|e| failed = Some(e.to_string())).ok();
                    next = rx.try_recv().ok();
                }
            }
        }
        if wrote && failed.is_none() {
            if let Some(o) = open.as_mut() {
                if let Err(e) = o.file.sync() {
                    failed = Some(e.to_string());
                }
            }
        }
        if let Some(PendingSeal(sealed)) = &seal {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::changelog::ChangelogReader;
    use crate::io::FaultFs;

    fn log(fs: &FaultFs) -> Changelog {
        fs.create_dir_all(Path::new("/s")).unwrap();
        Changelog::start(Arc::new(fs.clone()), Path::new("/s")).unwrap()
    }

    #[test]
    fn a_seal_gives_the_records_since_the_previous_one_durably() {
        let fs = FaultFs::new();
        let mut c = log(&fs);
        // Before the first seal nothing is logged: no checkpoint could use it.
        c.record(RecordKind::Put, b"\x00\x01z", 0, b"0");
        let first = c.seal();
        assert!(first.log.is_none() && !first.continuous);
        c.record(RecordKind::Put, b"\x00\x01a", 2, b"1");
        c.record(RecordKind::Delete, b"\x00\x01b", 0, b"");
        let seal = c.seal();
        assert!(seal.continuous);
        let sealed = seal.log.unwrap();
        let len = sealed.wait().unwrap();
        let bytes = fs.read(sealed.path()).unwrap();
        assert_eq!(bytes.len() as u64, len);
        let mut r = ChangelogReader::new(&bytes).unwrap();
        assert_eq!(r.log_seq(), 1);
        let put = r.next().unwrap().unwrap();
        assert_eq!((put.key, put.group_len), (&b"\x00\x01a"[..], 2));
        assert_eq!(r.next().unwrap().unwrap().kind, RecordKind::Delete);
        assert!(r.next().unwrap().is_none());
        // The next file holds only what came after.
        c.record(RecordKind::Merge, b"\x00\x02c", 0, b"x");
        let next = c.seal().log.unwrap();
        next.wait().unwrap();
        assert_eq!(next.seq(), 2);
        let path = sealed.path().to_path_buf();
        drop(sealed);
        assert!(!fs.exists(&path), "a sealed file no one holds is removed");
    }

    #[test]
    fn a_log_no_checkpoint_seals_starts_over_and_says_so() {
        let fs = FaultFs::new();
        let mut c = log(&fs);
        c.seal();
        c.max_unsealed = 3 * LOG_CHUNK as u64;
        let value = vec![7u8; 4096];
        for i in 0..(5 * LOG_CHUNK / value.len()) as u32 {
            c.record(RecordKind::Put, &i.to_be_bytes(), 0, &value);
        }
        c.record(RecordKind::Put, b"\x00\x01z", 0, b"last");
        let seal = c.seal();
        assert!(!seal.continuous, "the log lost writes: the next checkpoint must store the state");
        assert!(seal.log.is_none(), "nothing is logged until that seal");
        c.record(RecordKind::Put, b"\x00\x01z", 0, b"again");
        let seal = c.seal();
        assert!(seal.continuous);
        assert!(seal.log.unwrap().wait().unwrap() < LOG_CHUNK as u64);
    }

    /// Regression: the seal's own last frame took the log over its limit; the seal then said
    /// the log was continuous and sealed a file without those writes.
    #[test]
    fn a_seal_whose_last_frame_takes_the_log_over_its_limit_is_not_continuous() {
        let fs = FaultFs::new();
        let mut c = log(&fs);
        c.seal();
        let value = vec![7u8; 4096];
        let mut one = Vec::new();
        put_record(&mut one, RecordKind::Put, &[0, 1, 0, 0], 0, &value);
        // Frames of whole records, the first to reach LOG_CHUNK; three of them exactly fill
        // the limit, and the seal's last record goes over it.
        let per_frame = LOG_CHUNK.div_ceil(one.len());
        c.max_unsealed = 3 * (per_frame * one.len()) as u64;
        for i in 0..(3 * per_frame + 1) as u32 {
            c.record(RecordKind::Put, &i.to_be_bytes(), 0, &value);
        }
        let seal = c.seal();
        assert!(!seal.continuous);
        assert!(seal.log.is_none());
    }

    #[test]
    fn a_seal_the_thread_cannot_answer_fails_instead_of_waiting() {
        let fs = FaultFs::new();
        let mut c = log(&fs);
        c.seal();
        c.record(RecordKind::Put, b"\x00\x01a", 0, b"1");
        // The thread goes away (only a bug would make it).
        c.tx = None;
        if let Some(t) = c.thread.take() {
            t.join().unwrap();
        }
        c.record(RecordKind::Put, b"\x00\x01b", 0, b"2");
        assert!(c.seal().log.unwrap().wait().is_err());
    }

    #[test]
    fn a_write_error_fails_the_seal_and_the_next_file_starts_afresh() {
        let fs = FaultFs::new();
        let mut c = log(&fs);
        c.seal();
        c.record(RecordKind::Put, b"\x00\x01a", 0, b"1");
        fs.fail_at(fs.ops(), crate::io::FaultKind::Error);
        let failed = c.seal().log.unwrap();
        assert!(failed.wait().is_err());
        fs.disarm();
        c.record(RecordKind::Put, b"\x00\x01b", 0, b"2");
        let next = c.seal().log.unwrap();
        let len = next.wait().unwrap();
        let bytes = fs.read(next.path()).unwrap();
        assert_eq!(bytes.len() as u64, len);
        let mut r = ChangelogReader::new(&bytes).unwrap();
        assert_eq!(r.next().unwrap().unwrap().key, b"\x00\x01b");
    }
}
