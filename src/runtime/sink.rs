//! Sinks: where a job's records leave it. A sink that takes part in checkpoints prepares what
//! it wrote at each barrier (the first phase of a two-phase commit, stored with the
//! checkpoint) and commits it when the checkpoint completes everywhere.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::codec::SerdeSerializer;
use crate::error::Misuse;
use crate::state::OperatorStateBackend;
use crate::{Error, Result};

use super::emit::{Barrier, Emit};

/// What a sink's writer is told about where it runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SinkContext {
    /// The sink's uid.
    pub uid: String,
    /// The subtask's index.
    pub subtask: usize,
    /// How many subtasks the sink has.
    pub parallelism: usize,
    /// A name unique to this run of the job (each restart gets a new one).
    pub attempt: String,
    /// Whether the job takes checkpoints: without them, a writer commits at the end.
    pub checkpointing: bool,
}

/// A sink of records of type `T`: it makes one writer per subtask.
pub trait Sink<T>: Send + Sync + 'static {
    /// The writer of one subtask, given the sink's operator state as the restored checkpoint
    /// left it (empty on a fresh start).
    fn open(&self, ctx: &SinkContext, state: &mut OperatorStateBackend) -> Result<Box<dyn SinkWriter<T>>>;
}

/// The writer of one subtask of a [`Sink`].
pub trait SinkWriter<T>: Send {
    /// Writes a record.
    fn write(&mut self, value: T, timestamp: i64) -> Result<()>;
    /// Checkpoint `id`'s barrier: makes what was written durable and records in `state` what
    /// [`commit`](Self::commit) will publish (the first phase of a two-phase commit).
    fn prepare(&mut self, _id: u64, _state: &mut OperatorStateBackend) -> Result<()> {
        Ok(())
    }
    /// Checkpoint `id` completed everywhere: publishes what was prepared up to it.
    fn commit(&mut self, _id: u64) -> Result<()> {
        Ok(())
    }
    /// The input ended.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The end of a chain: a sink's writer.
pub(crate) struct SinkEmit<T> {
    pub(crate) writer: Box<dyn SinkWriter<T>>,
}

impl<T: Send> Emit<T> for SinkEmit<T> {
    #[inline]
    fn record(&mut self, value: T, timestamp: i64) -> Result<()> {
        self.writer.write(value, timestamp)
    }
    fn watermark(&mut self, _watermark: i64) -> Result<()> {
        Ok(())
    }
    fn idle(&mut self) -> Result<()> {
        Ok(())
    }
    fn barrier(&mut self, barrier: &Barrier, ops: &mut OperatorStateBackend) -> Result<()> {
        self.writer.prepare(barrier.id, ops)
    }
    fn notify_complete(&mut self, id: u64) -> Result<()> {
        self.writer.commit(id)
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    fn end(&mut self) -> Result<()> {
        self.writer.finish()
    }
}

/// Drops every record (Flink's `DiscardingSink`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardingSink;

impl<T: Send + 'static> Sink<T> for DiscardingSink {
    fn open(&self, _ctx: &SinkContext, _state: &mut OperatorStateBackend) -> Result<Box<dyn SinkWriter<T>>> {
        Ok(Box::new(DiscardingSink))
    }
}

impl<T: Send> SinkWriter<T> for DiscardingSink {
    #[inline]
    fn write(&mut self, _value: T, _timestamp: i64) -> Result<()> {
        Ok(())
    }
}

/// Calls a function for every record. Without a commit protocol: after a restart it sees the
/// records since the restored checkpoint again (at least once).
pub struct FnSink<T> {
    f: Arc<dyn Fn(T) -> Result<()> + Send + Sync>,
}

impl<T> FnSink<T> {
    /// A sink that calls `f` for every record.
    pub fn new(f: impl Fn(T) -> Result<()> + Send + Sync + 'static) -> Self {
        FnSink { f: Arc::new(f) }
    }
}

impl<T: Send + 'static> Sink<T> for FnSink<T> {
    fn open(&self, _ctx: &SinkContext, _state: &mut OperatorStateBackend) -> Result<Box<dyn SinkWriter<T>>> {
        Ok(Box::new(FnSink { f: self.f.clone() }))
    }
}

impl<T: Send> SinkWriter<T> for FnSink<T> {
    fn write(&mut self, value: T, _timestamp: i64) -> Result<()> {
        (self.f)(value)
    }
}

/// Collects every record into a shared vector (for tests and small jobs; at least once across
/// restarts, like [`FnSink`]).
#[derive(Clone, Default)]
pub struct CollectSink<T> {
    out: Arc<Mutex<Vec<T>>>,
}

impl<T> std::fmt::Debug for CollectSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectSink").finish_non_exhaustive()
    }
}

impl<T: Clone> CollectSink<T> {
    /// An empty collection.
    pub fn new() -> Self {
        CollectSink { out: Arc::new(Mutex::new(Vec::new())) }
    }

    /// What was collected so far.
    pub fn values(&self) -> Vec<T> {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl<T: Send + 'static> Sink<T> for CollectSink<T> {
    fn open(&self, _ctx: &SinkContext, _state: &mut OperatorStateBackend) -> Result<Box<dyn SinkWriter<T>>> {
        Ok(Box::new(CollectSink { out: self.out.clone() }))
    }
}

impl<T: Send> SinkWriter<T> for CollectSink<T> {
    fn write(&mut self, value: T, _timestamp: i64) -> Result<()> {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).push(value);
        Ok(())
    }
}

/// A file prepared at a checkpoint's barrier and not yet published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    checkpoint: u64,
    /// Its hidden name while pending.
    hidden: String,
    /// Its name once published.
    visible: String,
}

/// The operator state a file sink keeps its pending files in.
const PENDING_STATE: &str = "eddy.file-sink.pending";

/// Writes records as lines of text files in a directory, exactly once: records go to a hidden
/// in-progress file; at a checkpoint's barrier the file is synced and recorded with the
/// checkpoint as pending; when the checkpoint completes everywhere it is published by renaming
/// it to `part-<uid>-<subtask>-<attempt>-<n>`. A restore publishes the pending files of the
/// checkpoint it restores and removes every hidden file a run left behind, so the published
/// files hold each record of the job's output exactly once, whatever failed when.
///
/// Without checkpoints, a subtask publishes its file when its input ends.
#[derive(Debug, Clone)]
pub struct ExactlyOnceFileSink {
    dir: PathBuf,
}

impl ExactlyOnceFileSink {
    /// A sink into `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ExactlyOnceFileSink { dir: dir.into() }
    }

    /// The lines of every published file of `dir`, in the order of the files' names.
    pub fn read_published(dir: impl AsRef<Path>) -> Result<Vec<String>> {
        let dir = dir.as_ref();
        let mut names: Vec<String> = Vec::new();
        for e in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let name = e.map_err(|e| io_err(dir, e))?.file_name().to_string_lossy().into_owned();
            if name.starts_with("part-") {
                names.push(name);
            }
        }
        names.sort();
        let mut out = Vec::new();
        for n in names {
            let path = dir.join(&n);
            let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
            out.extend(text.lines().map(str::to_owned));
        }
        Ok(out)
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.to_owned(), source }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))
}

struct FileSinkWriter {
    dir: PathBuf,
    prefix: String,
    checkpointing: bool,
    /// The file being written: its hidden name and its writer.
    current: Option<(String, std::io::BufWriter<std::fs::File>)>,
    next_file: u64,
    pending: Vec<Pending>,
    line: String,
}

impl FileSinkWriter {
    fn publish(&self, p: &Pending) -> Result<()> {
        let (hidden, visible) = (self.dir.join(&p.hidden), self.dir.join(&p.visible));
        match std::fs::rename(&hidden, &visible) {
            Ok(()) => Ok(()),
            // Published before a failure: nothing to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && visible.exists() => Ok(()),
            Err(e) => Err(io_err(&hidden, e)),
        }
    }

    /// Closes the file being written, synced: its hidden and visible names.
    fn close_current(&mut self) -> Result<Option<(String, String)>> {
        let Some((hidden, mut w)) = self.current.take() else { return Ok(None) };
        let path = self.dir.join(&hidden);
        w.flush().map_err(|e| io_err(&path, e))?;
        w.get_ref().sync_all().map_err(|e| io_err(&path, e))?;
        let visible = hidden.trim_start_matches('.').trim_end_matches(".inprogress").to_owned();
        Ok(Some((hidden, visible)))
    }
}

impl<T: ToString + Send + 'static> Sink<T> for ExactlyOnceFileSink {
    fn open(&self, ctx: &SinkContext, state: &mut OperatorStateBackend) -> Result<Box<dyn SinkWriter<T>>> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        let pending_state = state.union_list_state(PENDING_STATE, SerdeSerializer::<Pending>::new())?;
        // Every subtask sees every restored pending file (union state) and publishes those at
        // positions of its own index.
        let restored: Vec<Pending> = pending_state.get().to_vec();
        pending_state.clear();
        let w = FileSinkWriter {
            dir: self.dir.clone(),
            prefix: format!("part-{}-{}-{}", ctx.uid, ctx.subtask, ctx.attempt),
            checkpointing: ctx.checkpointing,
            current: None,
            next_file: 0,
            pending: Vec::new(),
            line: String::new(),
        };
        for p in restored.iter().skip(ctx.subtask).step_by(ctx.parallelism.max(1)) {
            w.publish(p)?;
        }
        if ctx.subtask == 0 {
            // What earlier runs left hidden and no restored checkpoint names is discarded:
            // records after the restored checkpoint, which the sources replay.
            let keep: HashSet<&str> = restored.iter().map(|p| p.hidden.as_str()).collect();
            let ours = format!(".part-{}-", ctx.uid);
            let this_run = format!("-{}-", ctx.attempt);
            for e in std::fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))? {
                let name = e.map_err(|e| io_err(&self.dir, e))?.file_name().to_string_lossy().into_owned();
                if name.starts_with(&ours) && !name.contains(&this_run) && !keep.contains(name.as_str()) {
                    let path = self.dir.join(&name);
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err(&path, e)),
                    }
                }
            }
        }
        sync_dir(&self.dir)?;
        Ok(Box::new(w))
    }
}

impl<T: ToString + Send> SinkWriter<T> for FileSinkWriter {
    fn write(&mut self, value: T, _timestamp: i64) -> Result<()> {
        if self.current.is_none() {
            let hidden = format!(".{}-{}.inprogress", self.prefix, self.next_file);
            self.next_file += 1;
            let path = self.dir.join(&hidden);
            let f =
                std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| io_err(&path, e))?;
            self.current = Some((hidden, std::io::BufWriter::with_capacity(1 << 16, f)));
        }
        self.line.clear();
        use std::fmt::Write as _;
        let _ = write!(self.line, "{}", value.to_string());
        self.line.push('\n');
        if let Some((hidden, w)) = self.current.as_mut() {
            w.write_all(self.line.as_bytes()).map_err(|e| io_err(&self.dir.join(&*hidden), e))?;
        }
        Ok(())
    }

    fn prepare(&mut self, id: u64, state: &mut OperatorStateBackend) -> Result<()> {
        if let Some((hidden, visible)) = self.close_current()? {
            self.pending.push(Pending { checkpoint: id, hidden, visible });
        }
        let s = state.union_list_state(PENDING_STATE, SerdeSerializer::<Pending>::new())?;
        s.update(self.pending.clone());
        Ok(())
    }

    fn commit(&mut self, id: u64) -> Result<()> {
        let (due, later): (Vec<Pending>, Vec<Pending>) =
            std::mem::take(&mut self.pending).into_iter().partition(|p| p.checkpoint <= id);
        self.pending = later;
        for p in &due {
            self.publish(p)?;
        }
        if !due.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if self.checkpointing {
            // The job's final checkpoint covers what is left; a file written after it would
            // hold records no checkpoint covers, and is discarded like any other.
            if self.current.is_some() {
                return Err(Misuse::InvalidJob {
                    why: "a file sink's input ended after the job's final checkpoint".into(),
                }
                .into());
            }
            return Ok(());
        }
        if let Some((hidden, visible)) = self.close_current()? {
            self.publish(&Pending { checkpoint: 0, hidden, visible })?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}
