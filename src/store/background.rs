//! The store's background threads: one writes frozen regions as segments, the other merges
//! segments.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;

use super::compaction::{self, CompactionFilter};
use super::memtable::{Memtable, RecRef};
use super::segment::{segment_file_name, LiveSegment, Segment};
use crate::error::{Error, Result};
use crate::format::segment::Compression;
use crate::format::{SchemaTag, SegmentWriter, WriterOptions};
use crate::io::FileSystem;

/// How often the flush of a small region, and a compaction, ask for their bytes to be written
/// back (see [`WritableFile::start_writeback_every`](crate::io::WritableFile::start_writeback_every)).
const WRITEBACK_EVERY: u64 = 1 << 20;

/// A region frozen before it filled (for a checkpoint, or by an explicit flush) holding less
/// than this, or less than half the write buffer, is written with uncompressed blocks: a
/// checkpoint waits for it, and block compression would be most of that wait. Compaction
/// compresses its records when it merges the segment.
pub(super) const RAW_FLUSH_BELOW: usize = 8 << 20;

/// Why a frozen region was not written, as those who wait for it learn it.
pub(super) enum FlushFailure {
    /// The flush failed with this error.
    Failed(Arc<Error>),
    /// The thread that flushed it died.
    Died(&'static str, String),
}

/// How a flush ended: the segment (none for an empty region) or why it failed.
pub(super) type FlushOutcome = std::result::Result<Option<Arc<Segment>>, FlushFailure>;

/// Runs `work` for the `worker` thread: a panic in it becomes [`Error::WorkerDied`].
fn guarded<T>(worker: &'static str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
        .unwrap_or_else(|p| Err(Error::worker_died(worker, &*p)))
}

/// A frozen mutable region: read-only, shared with the flush thread and with the checkpoints
/// that wait for its segment.
pub(crate) struct Frozen {
    pub(super) mem: Memtable,
    pub(super) sorted: OnceLock<Vec<RecRef>>,
    /// The id of the segment it is written as.
    pub(super) id: u64,
    /// Whether its blocks are compressed (see [`RAW_FLUSH_BELOW`]).
    pub(super) compress: bool,
    /// The serializer versions that wrote its records.
    pub(super) schema: Arc<SchemaTag>,
    /// How the flush ended: the segment (none for an empty region) or why it failed.
    pub(super) outcome: Mutex<Option<FlushOutcome>>,
    pub(super) flushed: Condvar,
}

impl Frozen {
    pub(super) fn sorted(&self) -> &[RecRef] {
        self.sorted.get_or_init(|| self.mem.sorted_copy())
    }

    /// The result for the store and the outcome for those who wait, from how a flush ended.
    fn outcome_of(result: Result<Option<Arc<Segment>>>) -> (Result<Option<Arc<Segment>>>, FlushOutcome) {
        match result {
            Ok(seg) => (Ok(seg.clone()), Ok(seg)),
            Err(Error::WorkerDied { worker, why }) => {
                (Err(Error::WorkerDied { worker, why: why.clone() }), Err(FlushFailure::Died(worker, why)))
            }
            Err(e) => {
                let e = Arc::new(e);
                (Err(Error::Background { worker: "flush", source: e.clone() }), Err(FlushFailure::Failed(e)))
            }
        }
    }

    pub(super) fn set_outcome(&self, outcome: FlushOutcome) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        self.flushed.notify_all();
    }

    /// Waits until the region is written; its segment, if it held anything.
    pub(super) fn wait(&self) -> Result<Option<Arc<Segment>>> {
        let mut outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match &*outcome {
                Some(Ok(seg)) => return Ok(seg.clone()),
                Some(Err(FlushFailure::Failed(e))) => {
                    return Err(Error::Background { worker: "flush", source: e.clone() })
                }
                Some(Err(FlushFailure::Died(worker, why))) => {
                    return Err(Error::WorkerDied { worker, why: why.clone() })
                }
                None => outcome = self.flushed.wait(outcome).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

pub(super) enum Done {
    Flushed(Result<Option<Arc<Segment>>>),
    Compacted(Result<Option<Arc<Segment>>>),
}

/// A compaction for the background thread: output id, inputs, whether they reach the bottom,
/// and the migrations to apply while merging.
pub(super) type CompactionJob = (u64, Vec<LiveSegment>, bool, Option<Arc<super::migrate::Migrations>>);

pub(super) struct CompactionTicket {
    pub(super) inputs: Vec<u64>,
    pub(super) mask_lens: Vec<usize>,
    /// The tag of the output: the union of the inputs'.
    pub(super) schema: Arc<SchemaTag>,
}

pub(super) struct Background {
    pub(super) flush_tx: Option<Sender<Arc<Frozen>>>,
    pub(super) compact_tx: Option<Sender<CompactionJob>>,
    pub(super) done_rx: Receiver<Done>,
    pub(super) ready: Arc<AtomicBool>,
    pub(super) stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Background {
    pub(super) fn start(
        fs: Arc<dyn FileSystem>,
        dir: PathBuf,
        writer: WriterOptions,
        filter: Option<Arc<dyn CompactionFilter>>,
    ) -> std::io::Result<Self> {
        let (flush_tx, flush_rx) = mpsc::channel::<Arc<Frozen>>();
        let (compact_tx, compact_rx) = mpsc::channel::<CompactionJob>();
        let (done_tx, done_rx) = mpsc::channel();
        let ready = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let (fs, dir, done_tx, ready) = (fs.clone(), dir.clone(), done_tx.clone(), ready.clone());
            threads.push(std::thread::Builder::new().name("eddy-flush".into()).spawn(move || {
                crate::sys::background_thread();
                while let Ok(frozen) = flush_rx.recv() {
                    let result = guarded("flush", || flush(&fs, &dir, frozen.id, &frozen, writer));
                    let (result, outcome) = Frozen::outcome_of(result);
                    // The store hears of the outcome before those who wait for the segment
                    // do: once a checkpoint has failed on a failed flush, the store's next
                    // write is refused.
                    let sent = done_tx.send(Done::Flushed(result)).is_ok();
                    ready.store(true, Ordering::Release);
                    frozen.set_outcome(outcome);
                    if !sent {
                        return;
                    }
                }
            })?);
        }
        {
            let (ready, stop) = (ready.clone(), stop.clone());
            threads.push(std::thread::Builder::new().name("eddy-compact".into()).spawn(move || {
                crate::sys::background_thread();
                while let Ok((id, inputs, bottom, migrate)) = compact_rx.recv() {
                    let ctl = compaction::MergeControl {
                        filter: filter.as_deref(),
                        stop: &stop,
                        migrate: migrate.as_deref(),
                    };
                    let result = guarded("compaction", || compact(&fs, &dir, id, &inputs, bottom, writer, ctl));
                    drop(inputs);
                    if done_tx.send(Done::Compacted(result)).is_err() {
                        return;
                    }
                    ready.store(true, Ordering::Release);
                }
            })?);
        }
        Ok(Background { flush_tx: Some(flush_tx), compact_tx: Some(compact_tx), done_rx, ready, stop, threads })
    }

    pub(super) fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.flush_tx = None;
        self.compact_tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn flush(
    fs: &Arc<dyn FileSystem>,
    dir: &Path,
    id: u64,
    frozen: &Frozen,
    opts: WriterOptions,
) -> Result<Option<Arc<Segment>>> {
    let sorted = frozen.sorted();
    if sorted.is_empty() {
        return Ok(None);
    }
    let path = dir.join(segment_file_name(id));
    let mut file = fs.create(&path).map_err(|e| Error::io(&path, e))?;
    let opts = if frozen.compress { opts } else { WriterOptions { compression: Compression::None, ..opts } };
    if !frozen.compress {
        // A small region, frozen early: usually by a checkpoint, which syncs it next.
        file.start_writeback_every(WRITEBACK_EVERY);
    }
    let mut writer = SegmentWriter::new(file, &path, opts)?;
    // Records are visited in key order, not in the order they lie in the arena: fetching a
    // few ahead hides most of the misses.
    const AHEAD: usize = 16;
    for (i, r) in sorted.iter().enumerate() {
        if let Some(next) = sorted.get(i + AHEAD) {
            frozen.mem.prefetch_whole(*next);
        }
        let (kind, key, value) = frozen.mem.record(*r);
        writer.add(kind, key, value)?;
    }
    let stats = writer.finish_without_sync()?;
    let seg = Segment::open(fs.clone(), dir, id, false)?;
    seg.set_max_value_len(stats.max_value_len);
    Ok(Some(seg))
}

fn compact(
    fs: &Arc<dyn FileSystem>,
    dir: &Path,
    id: u64,
    inputs: &[LiveSegment],
    bottom: bool,
    opts: WriterOptions,
    ctl: compaction::MergeControl<'_>,
) -> Result<Option<Arc<Segment>>> {
    let path = dir.join(segment_file_name(id));
    let mut file = fs.create(&path).map_err(|e| Error::io(&path, e))?;
    // Written back as the merge goes, and synced when it is done, on this thread: the next
    // checkpoint that names the output finds it durable instead of waiting for all of it.
    file.start_writeback_every(WRITEBACK_EVERY);
    let writer = SegmentWriter::new(file, &path, opts)?;
    let merged = compaction::merge(inputs, bottom, writer, ctl).and_then(|out| match out {
        Some(_) => fs.sync_file(&path).map(|()| out).map_err(|e| Error::io(&path, e)),
        None => Ok(None),
    });
    match merged {
        Ok(Some(stats)) => {
            let seg = Segment::open(fs.clone(), dir, id, false)?;
            seg.set_max_value_len(stats.max_value_len);
            Ok(Some(seg))
        }
        // Nothing came out, or the output is not whole: it goes.
        Ok(None) | Err(_) => {
            let _ = fs.remove(&path);
            merged.map(|_| None)
        }
    }
}
