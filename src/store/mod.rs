//! The storage engine: log-structured, partitioned by key group, bytes in and bytes out.
//!
//! # Overview
//!
//! - Writes go to the mutable region (the memtable); when it reaches its share of the memory
//!   budget it is frozen and a background thread writes it as an immutable, sorted segment
//!   file (`format::segment`). Writes never wait on the disk unless the previous region is
//!   still being flushed when the next one fills (a write stall, which bounds memory).
//! - Segments are read through memory maps: uncompressed blocks in place, compressed ones
//!   decompressed into a block cache bounded by the budget. A second background thread merges
//!   segments ([`CompactionOptions`] says when), dropping overwritten and deleted records.
//! - Every key starts with its key group (two bytes, big-endian), and every segment has an
//!   index from key group to its blocks, so a key-group range is scanned or dropped without
//!   reading the rest. Dropping a range masks it in the existing segments; compaction later
//!   removes the masked records.
//! - A region frozen before it fills (by a checkpoint, or an explicit flush) and holding little
//!   is written with uncompressed blocks, since a checkpoint waits for it and compression
//!   would be most of the wait; compaction compresses its records when it merges it.
//! - There is no write-ahead log: [`Store::close`] writes a manifest naming the segments, and
//!   the next [`StoreOptions::open`] starts from it. A store that is not closed (a crash) comes
//!   back as it was at its last clean close; durability beyond that is the checkpoints' job.
//!
//! The budget ([`StoreOptions::memory_budget`]) is split: a quarter for the mutable region, a
//! quarter for a region being flushed, and the rest for the block cache and the segments'
//! decoded indexes (Bloom filters are read through the memory maps).

mod cache;
pub(crate) mod changelog;
pub(crate) mod compaction;
mod groups;
mod iter;
mod memtable;
pub(crate) mod segment;
mod table;

use std::collections::HashSet;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;

pub use compaction::{CompactionFilter, CompactionOptions, FilterDecision};
pub use iter::StoreIter;

use self::cache::BlockCache;
pub(crate) use self::changelog::LogSeal;
use self::changelog::{is_log_file_name, Changelog};
use self::iter::{MergeIter, Source};
use self::memtable::{Memtable, RecRef};
use self::segment::{parse_segment_file_name, segment_file_name, LiveSegment, Segment};
use self::table::hash_key;
use crate::error::{Error, Misuse, Result};
use crate::format::segment::{key_group_of, Compression};
use crate::format::store_manifest::{ManifestSegment, StoreManifest};
use crate::format::{key_hash64, RecordKind, SchemaTag, SegmentWriter, WriterOptions};
use crate::io::{write_atomic, FileSystem, LockGuard, StdFs};
use crate::keygroup::{KeyGroup, KeyGroupRange};

/// The name of the store manifest in the store's directory.
pub const MANIFEST_FILE: &str = "MANIFEST";
/// The lock file that keeps a store directory from being opened twice.
pub const LOCK_FILE: &str = "LOCK";
/// The largest key the store accepts (64 KiB - 1).
pub const MAX_KEY_LEN: usize = u16::MAX as usize;
/// The largest value the store accepts (a block, at most 256 MiB, must hold one record).
pub const MAX_VALUE_LEN: usize = 128 << 20;
const MIN_WRITE_BUFFER: usize = 64 << 10;
/// How often the flush of a small region, and a compaction, ask for their bytes to be written
/// back (see [`WritableFile::start_writeback_every`](crate::io::WritableFile::start_writeback_every)).
const WRITEBACK_EVERY: u64 = 1 << 20;

/// Options of a [`Store`]; ends in [`open`](Self::open).
#[derive(Clone)]
pub struct StoreOptions {
    fs: Arc<dyn FileSystem>,
    memory_budget: usize,
    writer: WriterOptions,
    compaction: CompactionOptions,
    filter: Option<Arc<dyn CompactionFilter>>,
    changelog: bool,
    /// No compaction starts until [`Store::release_compaction`] (a restore that replays a
    /// changelog keeps both processors for the replay).
    hold_compaction: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            fs: Arc::new(StdFs::new()),
            memory_budget: 256 << 20,
            writer: WriterOptions::default(),
            compaction: CompactionOptions::default(),
            filter: None,
            changelog: false,
            hold_compaction: false,
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("fs", &self.fs)
            .field("memory_budget", &self.memory_budget)
            .field("writer", &self.writer)
            .field("compaction", &self.compaction)
            .field("filter", &self.filter.is_some())
            .field("changelog", &self.changelog)
            .field("hold_compaction", &self.hold_compaction)
            .finish()
    }
}

impl StoreOptions {
    /// The defaults: 256 MiB budget, 4 KiB blocks, LZ4 compression (several times faster
    /// than zstd both ways, so flushes, compactions and reads of blocks not in the cache
    /// cost less; blocks come out somewhat larger), 10 filter bits per key.
    pub fn new() -> Self {
        Self::default()
    }

    /// The memory the store may use for its mutable regions, block cache, indexes and filters.
    #[must_use]
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// The target uncompressed size of a data block.
    #[must_use]
    pub fn block_size(mut self, bytes: usize) -> Self {
        self.writer.block_size = bytes;
        self
    }

    /// Block compression.
    #[must_use]
    pub fn compression(mut self, compression: Compression) -> Self {
        self.writer.compression = compression;
        self
    }

    /// Bloom filter bits per key.
    #[must_use]
    pub fn bloom_bits_per_key(mut self, bits: u32) -> Self {
        self.writer.bloom_bits_per_key = bits;
        self
    }

    /// A filter that decides, during compaction, which records survive (see
    /// [`CompactionFilter`]).
    #[must_use]
    pub fn compaction_filter(mut self, filter: Arc<dyn CompactionFilter>) -> Self {
        self.filter = Some(filter);
        self
    }

    /// The compaction filter set with [`compaction_filter`](Self::compaction_filter), if any.
    pub(crate) fn compaction_filter_set(&self) -> Option<Arc<dyn CompactionFilter>> {
        self.filter.clone()
    }

    /// The compaction policy.
    #[must_use]
    pub fn compaction(mut self, compaction: CompactionOptions) -> Self {
        self.compaction = compaction;
        self
    }

    /// The file system the store works through (by default the real one).
    #[must_use]
    pub fn file_system(mut self, fs: Arc<dyn FileSystem>) -> Self {
        self.fs = fs;
        self
    }

    pub(crate) fn file_system_ref(&self) -> &Arc<dyn FileSystem> {
        &self.fs
    }

    /// Whether every write is also appended to a changelog that a thread of its own writes and
    /// syncs as processing goes on (off by default). Checkpoints then store the changelog
    /// written since the previous one instead of flushing the state, so that an incremental
    /// checkpoint has only the last piece of the log left to sync; the state itself is stored
    /// now and then (materialized) in the background. It costs every write a copy into the
    /// log, and the disk the log's bytes. See [`crate::checkpoint`].
    #[must_use]
    pub fn changelog(mut self, on: bool) -> Self {
        self.changelog = on;
        self
    }

    /// Opens the store with compaction held (see [`Store::release_compaction`]).
    #[must_use]
    pub(crate) fn hold_compaction(mut self, hold: bool) -> Self {
        self.hold_compaction = hold;
        self
    }

    pub(crate) fn writer_options(&self) -> WriterOptions {
        self.writer
    }

    fn validate(&self) -> Result<()> {
        let bad = |name, why| Err(Misuse::InvalidOption { name, why }.into());
        if self.memory_budget < 4 * MIN_WRITE_BUFFER {
            return bad("memory_budget", "must be at least 256 KiB");
        }
        if !(256..=(16 << 20)).contains(&self.writer.block_size) {
            return bad("block_size", "must be between 256 bytes and 16 MiB");
        }
        if !(1..=32).contains(&self.writer.bloom_bits_per_key) {
            return bad("bloom_bits_per_key", "must be between 1 and 32");
        }
        if let Compression::Zstd(level) = self.writer.compression {
            if !zstd::compression_level_range().contains(&level) {
                return bad("compression", "zstd level out of range");
            }
        }
        let c = &self.compaction;
        if c.trigger < 2 || c.max_segments < 2 || c.stall_segments < 2 {
            return bad("compaction", "trigger, max_segments and stall_segments must be at least 2");
        }
        Ok(())
    }

    /// Opens (or creates) the store in `dir`.
    pub fn open(self, dir: impl AsRef<Path>) -> Result<Store> {
        Store::open(dir.as_ref(), self)
    }
}

/// Counters that describe a store's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Bytes held by the mutable region.
    pub memtable_bytes: usize,
    /// Bytes held by a region being flushed.
    pub flushing_bytes: usize,
    /// Bytes held by the block cache.
    pub cache_bytes: usize,
    /// Bytes held by the open segments' indexes and filters.
    pub segment_meta_bytes: usize,
    /// The number of live segments.
    pub segments: usize,
    /// Their total size on disk.
    pub segment_file_bytes: u64,
    /// Block cache hits and misses so far.
    pub cache_hits: u64,
    /// See `cache_hits`.
    pub cache_misses: u64,
    /// Flushes and compactions completed so far.
    pub flushes: u64,
    /// See `flushes`.
    pub compactions: u64,
}

impl StoreStats {
    /// Memory held, to compare with the budget.
    pub fn memory_bytes(&self) -> usize {
        self.memtable_bytes + self.flushing_bytes + self.cache_bytes + self.segment_meta_bytes
    }
}

/// Why a frozen region was not written, as those who wait for it learn it.
enum FlushFailure {
    /// The flush failed with this error.
    Failed(Arc<Error>),
    /// The thread that flushed it died.
    Died(&'static str, String),
}

/// How a flush ended: the segment (none for an empty region) or why it failed.
type FlushOutcome = std::result::Result<Option<Arc<Segment>>, FlushFailure>;

/// Runs `work` for the `worker` thread: a panic in it becomes [`Error::WorkerDied`].
fn guarded<T>(worker: &'static str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
        .unwrap_or_else(|p| Err(Error::worker_died(worker, &*p)))
}

/// A frozen mutable region: read-only, shared with the flush thread and with the checkpoints
/// that wait for its segment.
pub(crate) struct Frozen {
    mem: Memtable,
    sorted: OnceLock<Vec<RecRef>>,
    /// The id of the segment it is written as.
    id: u64,
    /// Whether its blocks are compressed (see [`RAW_FLUSH_BELOW`]).
    compress: bool,
    /// The serializer versions that wrote its records.
    schema: Arc<SchemaTag>,
    /// How the flush ended: the segment (none for an empty region) or why it failed.
    outcome: Mutex<Option<FlushOutcome>>,
    flushed: Condvar,
}

impl Frozen {
    fn sorted(&self) -> &[RecRef] {
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

    fn set_outcome(&self, outcome: FlushOutcome) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        self.flushed.notify_all();
    }

    /// Waits until the region is written; its segment, if it held anything.
    fn wait(&self) -> Result<Option<Arc<Segment>>> {
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

/// Every live key under one prefix with its value, as a scan read them: it answers point
/// reads of that prefix (a key it does not hold has no value) until the next write to the
/// store. A visit of all keys of a state fills it from the scan that lists them, so that the
/// visit's reads need no lookup in the segments.
#[derive(Default)]
pub(crate) struct Lookaside {
    /// Every record under the prefix was added (none was refused for want of room).
    complete: bool,
    prefix: Vec<u8>,
    bytes: Vec<u8>,
    /// Per record: where its key starts, where its value starts (the key's end), and where
    /// the value ends, in `bytes`; sorted by key.
    entries: Vec<(usize, usize, usize)>,
    /// Where the next lookup looks first: just after the entry the last one found. A visit
    /// reads the keys in the order they were listed, so each of its reads is found there
    /// without a search.
    next: usize,
}

impl Lookaside {
    /// The most bytes one holds: a larger range is not worth keeping in memory.
    pub(crate) const LIMIT: usize = 32 << 20;

    /// Empties it for the keys under `prefix`.
    pub(crate) fn reset(&mut self, prefix: &[u8]) {
        self.complete = true;
        self.prefix.clear();
        self.prefix.extend_from_slice(prefix);
        self.bytes.clear();
        self.entries.clear();
        self.next = 0;
    }

    /// Whether it holds every record under its prefix.
    pub(crate) fn is_complete(&self) -> bool {
        self.complete
    }

    /// Adds the next record (keys come in ascending order); once it is full, it takes no more
    /// and is incomplete.
    pub(crate) fn push(&mut self, key: &[u8], value: &[u8]) {
        if !self.complete || self.bytes.len() + key.len() + value.len() > Self::LIMIT {
            self.complete = false;
            return;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        self.entries.push((start, start + key.len(), self.bytes.len()));
    }

    /// `None` when `key` is not under the prefix; otherwise its value, if it has one.
    fn find(&mut self, key: &[u8]) -> Option<Option<&[u8]>> {
        if !key.starts_with(&self.prefix) {
            return None;
        }
        let at = |i: usize| self.entries.get(i).map(|&(k, v, _)| &self.bytes[k..v]);
        let found = if at(self.next) == Some(key) {
            Ok(self.next)
        } else {
            self.entries.binary_search_by(|&(k, v, _)| self.bytes[k..v].cmp(key))
        };
        Some(found.ok().map(|i| {
            self.next = i + 1;
            let (_, v, e) = self.entries[i];
            &self.bytes[v..e]
        }))
    }
}

/// What a store held at one instant, kept alive for a checkpoint: the live segments and the
/// frozen regions still being written, newest first.
pub(crate) struct StoreSnapshot {
    segments: Vec<LiveSegment>,
    pending: Vec<Arc<Frozen>>,
}

impl StoreSnapshot {
    /// Waits for the frozen regions to be written; then every segment of the snapshot, newest
    /// first, with the key-group ranges masked in it.
    pub(crate) fn segments(&self) -> Result<Vec<LiveSegment>> {
        let mut out = Vec::with_capacity(self.pending.len() + self.segments.len());
        for f in &self.pending {
            if let Some(seg) = f.wait()? {
                out.push(LiveSegment { seg, mask: Vec::new(), schema: f.schema.clone() });
            }
        }
        out.extend(self.segments.iter().cloned());
        Ok(out)
    }
}

enum Done {
    Flushed(Result<Option<Arc<Segment>>>),
    Compacted(Result<Option<Arc<Segment>>>),
}

struct CompactionTicket {
    inputs: Vec<u64>,
    mask_lens: Vec<usize>,
    /// The tag of the output: the union of the inputs'.
    schema: Arc<SchemaTag>,
}

struct Background {
    flush_tx: Option<Sender<Arc<Frozen>>>,
    compact_tx: Option<Sender<(u64, Vec<LiveSegment>, bool)>>,
    done_rx: Receiver<Done>,
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Background {
    fn start(
        fs: Arc<dyn FileSystem>,
        dir: PathBuf,
        writer: WriterOptions,
        filter: Option<Arc<dyn CompactionFilter>>,
    ) -> std::io::Result<Self> {
        let (flush_tx, flush_rx) = mpsc::channel::<Arc<Frozen>>();
        let (compact_tx, compact_rx) = mpsc::channel::<(u64, Vec<LiveSegment>, bool)>();
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
                while let Ok((id, inputs, bottom)) = compact_rx.recv() {
                    let ctl = compaction::MergeControl { filter: filter.as_deref(), stop: &stop };
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

    fn shutdown(&mut self) {
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

/// Whether a value of `len` bytes may take `add` more.
#[inline]
fn merged_within(len: usize, add: usize) -> Result<()> {
    match len.checked_add(add) {
        Some(n) if n <= MAX_VALUE_LEN => Ok(()),
        n => Err(Misuse::TooLarge { what: "merged value", len: n.unwrap_or(usize::MAX), limit: MAX_VALUE_LEN }.into()),
    }
}

/// Makes the empty store directory `dir`, which holds the segment files `version` names
/// (linked or copied there), a store with that version: writes its manifest durably. The next
/// [`StoreOptions::open`] of `dir` opens it.
pub(crate) fn install_version(fs: &dyn FileSystem, dir: &Path, version: &StoreManifest) -> Result<()> {
    for s in &version.segments {
        let path = dir.join(segment_file_name(s.id));
        if !fs.exists(&path) {
            return Err(Error::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "a segment of the version"),
            ));
        }
    }
    let path = dir.join(MANIFEST_FILE);
    write_atomic(fs, &path, &version.encode()).map_err(|e| Error::io(&path, e))
}

/// The error of a write with group length `group_len` of a key held with `held`.
#[cold]
fn group_mismatch(group_len: usize, held: usize) -> Error {
    Misuse::GroupMismatch { group_len, held }.into()
}

fn check_group(key: &[u8], group_len: usize) -> Result<()> {
    if group_len < 2 || group_len > key.len() {
        return Err(Misuse::InvalidOption {
            name: "group_len",
            why: "must be at least 2 and at most the key's length",
        }
        .into());
    }
    Ok(())
}

/// A log-structured, key-group-partitioned key-value store, driven by one thread.
///
/// Keys are byte strings that start with their key group (two bytes, big-endian); values are
/// byte strings. See the [module documentation](self) for how it works.
pub struct Store {
    dir: PathBuf,
    opts: StoreOptions,
    active: Memtable,
    /// Frozen regions being written, oldest first. Usually at most one: a full region waits
    /// for the previous one (a write stall), but a checkpoint freezes without waiting.
    frozen: VecDeque<Arc<Frozen>>,
    segments: Vec<LiveSegment>,
    /// The serializer versions of the records written now (see [`set_schema`](Self::set_schema)).
    schema: Arc<SchemaTag>,
    /// Those of the records logged since the changelog was last sealed.
    log_schema: Arc<SchemaTag>,
    /// Obsolete segments that the durable manifest still names; removed after the next one.
    pinned_obsolete: Vec<Arc<Segment>>,
    next_id: u64,
    cache: BlockCache,
    value: Vec<u8>,
    operands: Vec<u8>,
    operand_spans: Vec<(usize, usize)>,
    /// The records of the group a scan lists, reused from scan to scan.
    group_refs: Vec<RecRef>,
    /// Values read by a scan, answering point reads until the next write.
    lookaside: Option<Box<Lookaside>>,
    /// How many times the mutable region was frozen.
    freezes: u64,
    write_buffer: usize,
    poisoned: Option<Error>,
    poison_reported: bool,
    compacting: Option<CompactionTicket>,
    flushes: u64,
    compactions: u64,
    bg: Background,
    /// The changelog, when the options ask for one.
    log: Option<Changelog>,
    _lock: LockGuard,
}

/// The names a directory may hold before a store's first manifest is in place: its lock and
/// the temporary file of that manifest.
fn is_first_manifest_leftover(name: &str) -> bool {
    name == LOCK_FILE || name.strip_prefix(MANIFEST_FILE) == Some(".tmp")
}

/// Refuses a directory without a store manifest that holds anything but what the store's
/// first open leaves before its manifest is in place.
fn refuse_foreign(names: &[String]) -> Result<()> {
    if names.iter().any(|n| n == MANIFEST_FILE) {
        return Ok(());
    }
    match names.iter().find(|n| !is_first_manifest_leftover(n)) {
        Some(name) => Err(Misuse::ForeignFile { name: name.clone() }.into()),
        None => Ok(()),
    }
}

/// Whether `dir` holds no state: it is missing or empty, or holds a store whose manifest
/// names no segment and nothing else of a store's ([`Misuse::ForeignFile`] for a directory
/// of another's files). Reads only; removes nothing.
pub(crate) fn holds_no_state(fs: &dyn FileSystem, dir: &Path) -> Result<bool> {
    if !fs.exists(dir) {
        return Ok(true);
    }
    let names = fs.list(dir).map_err(|e| Error::io(dir, e))?;
    refuse_foreign(&names)?;
    for name in &names {
        if name == MANIFEST_FILE {
            let path = dir.join(MANIFEST_FILE);
            let bytes = fs.open(&path).map_err(|e| Error::io(&path, e))?;
            if !StoreManifest::decode_file(&bytes, &path)?.segments.is_empty() {
                return Ok(false);
            }
        } else if !is_first_manifest_leftover(name) {
            return Ok(false);
        }
    }
    Ok(true)
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).field("stats", &self.stats()).finish()
    }
}

impl Store {
    fn open(dir: &Path, opts: StoreOptions) -> Result<Store> {
        opts.validate()?;
        let fs = opts.fs.clone();
        // A store writes its manifest before any other file of its own, so a directory
        // without one holds no store: anything in it but an unfinished first manifest is
        // someone else's, and is refused before the store writes or removes a thing.
        if fs.exists(dir) {
            refuse_foreign(&fs.list(dir).map_err(|e| Error::io(dir, e))?)?;
        }
        crate::io::create_dir_durable(fs.as_ref(), dir).map_err(|e| Error::io(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs.lock(&lock_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::from(Misuse::AlreadyOpen),
            _ => Error::io(&lock_path, e),
        })?;
        let names = fs.list(dir).map_err(|e| Error::io(dir, e))?;
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest = if names.iter().any(|n| n == MANIFEST_FILE) {
            let bytes = fs.open(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
            Some(StoreManifest::decode_file(&bytes, &manifest_path)?)
        } else {
            refuse_foreign(&names)?;
            // A new store: its manifest marks the directory as its own before anything else.
            let empty = StoreManifest { next_segment_id: 1, segments: Vec::new() };
            write_atomic(fs.as_ref(), &manifest_path, &empty.encode()).map_err(|e| Error::io(&manifest_path, e))?;
            None
        };
        let mut segments = Vec::new();
        let mut live = HashSet::new();
        if let Some(m) = &manifest {
            for s in &m.segments {
                let seg = Segment::open(fs.clone(), dir, s.id, true)?;
                seg.set_pinned(true);
                live.insert(s.id);
                if let Some(len) = s.max_value_len {
                    seg.set_max_value_len(len);
                }
                segments.push(LiveSegment { seg, mask: s.mask.clone(), schema: Arc::new(s.tag.clone()) });
            }
        }
        // Collect what a crash or an unfinished write left behind.
        let mut max_id = 0;
        for name in &names {
            let garbage = match parse_segment_file_name(name) {
                Some(id) => {
                    max_id = max_id.max(id + 1);
                    !live.contains(&id)
                }
                None => name.ends_with(".tmp") || is_log_file_name(name),
            };
            if garbage {
                let path = dir.join(name);
                fs.remove(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        let next_id = manifest.as_ref().map_or(0, |m| m.next_segment_id).max(max_id).max(1);
        let write_buffer = (opts.memory_budget / 4).max(MIN_WRITE_BUFFER);
        let bg = Background::start(fs.clone(), dir.to_path_buf(), opts.writer, opts.filter.clone())
            .map_err(|e| Error::io(dir, e))?;
        let log =
            if opts.changelog { Some(Changelog::start(fs.clone(), dir).map_err(|e| Error::io(dir, e))?) } else { None };
        let mut store = Store {
            dir: dir.to_path_buf(),
            active: Memtable::new(chunk_size(write_buffer)),
            frozen: VecDeque::new(),
            segments,
            schema: Arc::default(),
            log_schema: Arc::default(),
            pinned_obsolete: Vec::new(),
            next_id,
            cache: BlockCache::new(0),
            value: Vec::new(),
            operands: Vec::new(),
            operand_spans: Vec::new(),
            group_refs: Vec::new(),
            lookaside: None,
            freezes: 0,
            write_buffer,
            poisoned: None,
            poison_reported: false,
            compacting: None,
            flushes: 0,
            compactions: 0,
            bg,
            log,
            opts,
            _lock: lock,
        };
        store.resize_cache();
        store.maybe_compact();
        Ok(store)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    // ---- writes ----

    /// Sets `key` to `value`.
    #[inline]
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_write(key, value.len())?;
        self.before_write()?;
        let h = self.active.hash(key);
        // Without a group, nothing is refused.
        let _ = self.active.put(h, key, value, 0);
        if let Some(log) = &mut self.log {
            log.record(RecordKind::Put, key, 0, value);
        }
        Ok(())
    }

    /// Sets `key` to `value`, where `key` belongs to the group of its first `group_len` bytes
    /// (the entries of one map, say): [`scan_group`](Self::scan_group) then lists the group
    /// without touching other keys. A key of a group must always be written with its group:
    /// a grouped write of a key that the mutable region holds without a group, or with one of
    /// another length, is refused ([`Misuse::GroupMismatch`]) and writes nothing.
    #[inline]
    pub fn put_grouped(&mut self, key: &[u8], group_len: usize, value: &[u8]) -> Result<()> {
        self.check_write(key, value.len())?;
        check_group(key, group_len)?;
        self.before_write()?;
        let h = self.active.hash(key);
        self.active.put(h, key, value, group_len).map_err(|held| group_mismatch(group_len, held))?;
        if let Some(log) = &mut self.log {
            log.record(RecordKind::Put, key, group_len, value);
        }
        Ok(())
    }

    /// Sets several keys of the group `group` (each key starts with it), as
    /// [`put_grouped`](Self::put_grouped) does one by one, but finding them by one walk of the
    /// group's records when the group is small: writing all entries of a small map costs one
    /// lookup rather than one per entry. `next` yields each key and value in turn, into the
    /// buffers it is given, and `false` when it is done.
    pub(crate) fn put_grouped_batch(
        &mut self,
        group: &[u8],
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
        mut next: impl FnMut(&mut Vec<u8>, &mut Vec<u8>) -> Result<bool>,
    ) -> Result<()> {
        /// Groups up to this size are walked; larger ones go through the index entry by entry.
        const WALK: usize = 32;
        let mut known = std::mem::take(&mut self.group_refs);
        let result = (|| {
            let mut walkable = None;
            while next(key, value)? {
                self.check_write(key, value.len())?;
                check_group(key, group.len())?;
                if !key.starts_with(group) {
                    return Err(Misuse::InvalidOption {
                        name: "group",
                        why: "a key of the batch is outside the group",
                    }
                    .into());
                }
                if self.before_write_froze()? {
                    walkable = None;
                }
                let walk = *walkable.get_or_insert_with(|| self.active.small_group(group, WALK, &mut known));
                let written = if walk {
                    self.active.put_in_known_group(&mut known, key, value, group.len())
                } else {
                    let h = self.active.hash(key);
                    self.active.put(h, key, value, group.len())
                };
                written.map_err(|held| group_mismatch(group.len(), held))?;
                if let Some(log) = &mut self.log {
                    log.record(RecordKind::Put, key, group.len(), value);
                }
            }
            Ok(())
        })();
        self.group_refs = known;
        result
    }

    /// [`before_write`](Self::before_write), telling whether it froze the mutable region.
    fn before_write_froze(&mut self) -> Result<bool> {
        let before = self.freezes;
        self.before_write()?;
        Ok(self.freezes != before)
    }

    /// Deletes `key` of the group of its first `group_len` bytes (refused as
    /// [`put_grouped`](Self::put_grouped) refuses).
    #[inline]
    pub fn delete_grouped(&mut self, key: &[u8], group_len: usize) -> Result<()> {
        self.check_write(key, 0)?;
        check_group(key, group_len)?;
        self.before_write()?;
        let h = self.active.hash(key);
        self.active.delete(h, key, group_len).map_err(|held| group_mismatch(group_len, held))?;
        if let Some(log) = &mut self.log {
            log.record(RecordKind::Delete, key, group_len, &[]);
        }
        Ok(())
    }

    /// Deletes `key`.
    #[inline]
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.check_write(key, 0)?;
        self.before_write()?;
        let h = self.active.hash(key);
        // Without a group, nothing is refused.
        let _ = self.active.delete(h, key, 0);
        if let Some(log) = &mut self.log {
            log.record(RecordKind::Delete, key, 0, &[]);
        }
        Ok(())
    }

    /// Appends `operand` to the value of `key` (to an empty value if it has none). This is
    /// how list state adds elements without reading the list.
    #[inline]
    ///
    /// The value it makes must stay within [`MAX_VALUE_LEN`], else the merge is refused
    /// ([`Misuse::TooLarge`]) and changes nothing. The check reads the key's value only when
    /// the lengths the store knows cannot rule that out.
    pub fn merge(&mut self, key: &[u8], operand: &[u8]) -> Result<()> {
        self.check_write(key, operand.len())?;
        self.before_write()?;
        let h = self.active.hash(key);
        self.check_merged_len(h, key, operand.len())?;
        self.active.merge(h, key, operand);
        if let Some(log) = &mut self.log {
            log.record(RecordKind::Merge, key, 0, operand);
        }
        Ok(())
    }

    /// Refuses a merge of `add` bytes whose value would pass [`MAX_VALUE_LEN`].
    #[inline]
    fn check_merged_len(&mut self, h: u64, key: &[u8], add: usize) -> Result<()> {
        let here = match self.active.lookup(h, key) {
            // A base here: nothing older counts.
            Some((RecordKind::Put, _, len)) => return merged_within(len, add),
            Some((RecordKind::Delete, _, _)) => return Ok(()),
            Some((RecordKind::Merge, _, len)) => len,
            None => 0,
        };
        if self.frozen.is_empty() && self.segments.is_empty() && self.lookaside.is_none() {
            return merged_within(here, add);
        }
        // A bound from what is known: every older layer adds at most its longest value.
        let mut bound = Some(here + add);
        for f in self.frozen.iter().rev() {
            bound = bound.zip(f.mem.lookup(h, key).map_or(Some(0), |(_, _, len)| Some(len))).map(|(a, b)| a + b);
        }
        for s in &self.segments {
            bound = bound.zip(s.seg.max_value_len()).map(|(a, b)| a + b);
        }
        if bound.is_some_and(|b| b <= MAX_VALUE_LEN) && self.lookaside.is_none() {
            return Ok(());
        }
        let len = self.get_slow(h, key)?.map_or(0, <[u8]>::len);
        merged_within(len, add)
    }

    #[inline]
    fn check_write(&mut self, key: &[u8], value_len: usize) -> Result<()> {
        if self.poisoned.is_some() {
            return Err(self.take_poison());
        }
        if self.lookaside.is_some() {
            self.drop_lookaside();
        }
        if key.len() < 2 {
            return Err(Misuse::KeyTooShort { len: key.len() }.into());
        }
        if key.len() > MAX_KEY_LEN {
            return Err(Misuse::TooLarge { what: "key", len: key.len(), limit: MAX_KEY_LEN }.into());
        }
        if value_len > MAX_VALUE_LEN {
            return Err(Misuse::TooLarge { what: "value", len: value_len, limit: MAX_VALUE_LEN }.into());
        }
        Ok(())
    }

    /// A write makes the lookaside stale. Out of line: the write path stays small.
    #[cold]
    #[inline(never)]
    fn drop_lookaside(&mut self) {
        self.lookaside = None;
    }

    /// The error that poisoned the store the first time it is asked for, then `Poisoned`.
    fn take_poison(&mut self) -> Error {
        if self.poison_reported {
            return Error::Poisoned;
        }
        self.poison_reported = true;
        self.poisoned.replace(Error::Poisoned).unwrap_or(Error::Poisoned)
    }

    fn poison(&mut self, e: Error) {
        if self.poisoned.is_none() {
            self.poisoned = Some(e);
        }
    }

    /// Installs finished background work before a read. Without it a store that is only
    /// read would keep serving from the segments a finished compaction replaced, and start
    /// no further compaction, however many segments a burst of writes left behind.
    #[inline]
    fn before_read(&mut self) {
        if self.bg.ready.load(Ordering::Acquire) {
            self.poll_done(false);
        }
    }

    /// Makes room before a write: installs finished background work and freezes a full
    /// region. A write that gets an error here was not applied.
    #[inline]
    fn before_write(&mut self) -> Result<()> {
        if self.active.memory() >= self.write_buffer || self.bg.ready.load(Ordering::Acquire) {
            self.maintain()?;
        }
        Ok(())
    }

    /// Installs finished background work; freezes the mutable region when it is full.
    fn maintain(&mut self) -> Result<()> {
        self.poll_done(false);
        if self.poisoned.is_some() {
            return Err(self.take_poison());
        }
        if self.active.memory() >= self.write_buffer {
            // A write stall: the previous region must be written before another is frozen.
            self.wait_for_flush()?;
            // And another when compaction is too far behind: every read merges every
            // segment, so their number must stay bounded (as an LSM tree stops writes when
            // its newest level holds too many files).
            while self.segments.len() >= self.opts.compaction.stall_segments
                && self.compacting.is_some()
                && self.poisoned.is_none()
            {
                self.poll_done(true);
            }
            self.freeze();
        }
        Ok(())
    }

    /// The synchronous part of a checkpoint: freezes the mutable region (without waiting for
    /// an earlier one to be written) and takes the segment set. What the snapshot names stays
    /// on disk until it is dropped.
    pub(crate) fn snapshot(&mut self) -> Result<StoreSnapshot> {
        if self.poisoned.is_some() {
            return Err(self.take_poison());
        }
        self.poll_done(false);
        self.freeze();
        Ok(StoreSnapshot { segments: self.segments.clone(), pending: self.frozen.iter().rev().cloned().collect() })
    }

    /// Applies a write read back from a changelog (a restore), as the store first applied it,
    /// without logging it again.
    pub(crate) fn replay(&mut self, r: &Replayed<'_>) -> Result<()> {
        self.check_write(r.key, r.value.len())?;
        if r.group_len > 0 {
            check_group(r.key, r.group_len)?;
        }
        self.before_write()?;
        let written = match r.kind {
            RecordKind::Put => self.active.put(r.hash, r.key, r.value, r.group_len),
            RecordKind::Delete => self.active.delete(r.hash, r.key, r.group_len),
            RecordKind::Merge => {
                self.active.merge(r.hash, r.key, r.value);
                Ok(())
            }
        };
        written.map_err(|held| group_mismatch(r.group_len, held))
    }

    /// Starts fetching the index slot a point access of `key` will probe first, without
    /// waiting for it. The key group (the first two bytes) may still be unset: the index hash
    /// leaves it out.
    #[inline]
    pub(crate) fn prefetch_point(&self, key: &[u8]) {
        self.active.prefetch_write(hash_key(key), 0);
    }

    /// Like [`prefetch_point`](Self::prefetch_point), for the group `prefix` (see
    /// [`scan_group`](Self::scan_group)).
    #[inline]
    pub(crate) fn prefetch_group(&self, prefix: &[u8]) {
        self.active.prefetch_group(hash_key(prefix));
    }

    /// Tells the store that a [`replay`](Self::replay) of `r` comes soon, so that the memory
    /// it will touch can be fetched while earlier writes are applied.
    #[inline]
    pub(crate) fn prefetch_replay(&self, r: &Replayed<'_>) {
        self.active.prefetch_write(r.hash, r.group_hash);
    }

    /// Makes room in the mutable region's index for `keys` more keys (fewer in a small
    /// region, see [`RESERVE_BYTES_PER_KEY`]).
    pub(crate) fn reserve_keys(&mut self, keys: usize) {
        self.active.reserve(keys.min(self.write_buffer / RESERVE_BYTES_PER_KEY));
    }

    /// Seals the changelog (see [`StoreOptions::changelog`]); `None` without one.
    pub(crate) fn seal_changelog(&mut self) -> Option<LogSeal> {
        let mut seal = self.log.as_mut().map(Changelog::seal)?;
        // The records since the previous seal were written under the tags set since then.
        seal.schema = std::mem::replace(&mut self.log_schema, self.schema.clone());
        Some(seal)
    }

    /// The id the next segment file will get.
    pub(crate) fn next_segment_id(&self) -> u64 {
        self.next_id
    }

    fn chunk_size(&self) -> usize {
        chunk_size(self.write_buffer)
    }

    fn freeze(&mut self) {
        if self.active.is_empty() {
            return;
        }
        self.freezes += 1;
        let fresh = Memtable::new(self.chunk_size());
        let compress = self.active.memory() >= RAW_FLUSH_BELOW.min(self.write_buffer / 2);
        let frozen = Arc::new(Frozen {
            mem: std::mem::replace(&mut self.active, fresh),
            sorted: OnceLock::new(),
            id: self.next_id,
            compress,
            schema: self.schema.clone(),
            outcome: Mutex::new(None),
            flushed: Condvar::new(),
        });
        self.next_id += 1;
        self.frozen.push_back(frozen.clone());
        let sent = self.bg.flush_tx.as_ref().map(|tx| tx.send(frozen.clone()).is_ok()).unwrap_or(false);
        if !sent {
            // Whoever waits for this region (a checkpoint) learns that it will not be written.
            frozen.set_outcome(Err(FlushFailure::Died("flush", "the thread is gone".into())));
            self.poison(Error::WorkerDied { worker: "flush", why: "the thread is gone".into() });
        }
    }

    /// Receives finished background work (waiting for one result if `wait`) and installs it.
    fn poll_done(&mut self, wait: bool) {
        self.bg.ready.store(false, Ordering::Release);
        let mut first = wait;
        loop {
            let done = if first {
                first = false;
                match self.bg.done_rx.recv() {
                    Ok(d) => d,
                    Err(_) => {
                        self.poison(Error::WorkerDied {
                            worker: "flush",
                            why: "the background threads are gone".into(),
                        });
                        return;
                    }
                }
            } else {
                match self.bg.done_rx.try_recv() {
                    Ok(d) => d,
                    Err(_) => return,
                }
            };
            match done {
                Done::Flushed(result) => self.install_flush(result),
                Done::Compacted(result) => self.install_compaction(result),
            }
        }
    }

    fn install_flush(&mut self, result: Result<Option<Arc<Segment>>>) {
        match result {
            Ok(seg) => {
                let frozen = self.frozen.pop_front();
                self.flushes += 1;
                if let Some(seg) = seg {
                    let schema = frozen.map_or_else(|| self.schema.clone(), |f| f.schema.clone());
                    self.segments.insert(0, LiveSegment { seg, mask: Vec::new(), schema });
                }
                self.resize_cache();
                self.maybe_compact();
            }
            // The frozen region stays readable; the store refuses writes from now on.
            Err(e) => self.poison(e),
        }
    }

    fn install_compaction(&mut self, result: Result<Option<Arc<Segment>>>) {
        let Some(ticket) = self.compacting.take() else { return };
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                if !self.bg.stop.load(Ordering::Acquire) {
                    self.poison(e);
                }
                return;
            }
        };
        let Some(pos) = self.segments.iter().position(|s| s.seg.id() == ticket.inputs[0]) else {
            // Unreachable by construction: inputs leave the list only through compaction.
            return;
        };
        let end = pos + ticket.inputs.len();
        // Key groups dropped while the compaction ran are dropped from its output too.
        let mut mask: Vec<(KeyGroup, KeyGroup)> = Vec::new();
        for (s, &len) in self.segments[pos..end].iter().zip(&ticket.mask_lens) {
            for r in s.mask.get(len..).unwrap_or(&[]) {
                if !mask.contains(r) {
                    mask.push(*r);
                }
            }
        }
        let removed: Vec<LiveSegment> = match out {
            Some(seg) => self.segments.splice(pos..end, [LiveSegment { seg, mask, schema: ticket.schema }]).collect(),
            None => self.segments.drain(pos..end).collect(),
        };
        for s in removed {
            self.retire(s.seg);
        }
        self.compactions += 1;
        self.resize_cache();
        self.maybe_compact();
    }

    /// Marks a segment obsolete; its file goes when nothing refers to it any more.
    fn retire(&mut self, seg: Arc<Segment>) {
        self.cache.forget_segment(seg.id());
        seg.set_obsolete();
        if seg.is_pinned() {
            self.pinned_obsolete.push(seg);
        }
    }

    /// Lets compaction start (from now on, and now if it is due) in a store opened with it
    /// held ([`StoreOptions::hold_compaction`]).
    pub(crate) fn release_compaction(&mut self) {
        self.opts.hold_compaction = false;
        self.maybe_compact();
    }

    fn maybe_compact(&mut self) {
        if self.compacting.is_some() || self.poisoned.is_some() || self.opts.hold_compaction {
            return;
        }
        let sizes: Vec<u64> = self.segments.iter().map(|s| s.seg.reader().file_len()).collect();
        let spans: Vec<Option<(u16, u16)>> = self
            .segments
            .iter()
            .map(|s| {
                let groups = s.seg.reader().key_groups();
                Some((groups.first()?.key_group, groups.last()?.key_group))
            })
            .collect();
        let bottom = compaction::disjoint_bottom(&spans);
        if let Some(run) = compaction::pick(&sizes, bottom, &self.opts.compaction) {
            self.start_compaction(run);
        }
    }

    fn start_compaction(&mut self, run: std::ops::Range<usize>) {
        let inputs: Vec<LiveSegment> = self.segments[run.clone()].to_vec();
        // Records written by different versions of one state's serializers cannot share a
        // segment: such segments are not merged.
        let Some(schema) = inputs.iter().try_fold(SchemaTag::default(), |acc, s| acc.union(&s.schema)).map(Arc::new)
        else {
            return;
        };
        let bottom = run.end == self.segments.len();
        let id = self.next_id;
        self.next_id += 1;
        self.compacting = Some(CompactionTicket {
            inputs: inputs.iter().map(|s| s.seg.id()).collect(),
            mask_lens: inputs.iter().map(|s| s.mask.len()).collect(),
            schema,
        });
        let sent = self.bg.compact_tx.as_ref().map(|tx| tx.send((id, inputs, bottom)).is_ok()).unwrap_or(false);
        if !sent {
            self.compacting = None;
            self.poison(Error::WorkerDied { worker: "compaction", why: "the thread is gone".into() });
        }
    }

    fn resize_cache(&mut self) {
        let meta: usize = self.segments.iter().map(|s| s.seg.pinned_memory()).sum();
        let budget = self.opts.memory_budget;
        let cap = budget.saturating_sub(2 * self.write_buffer + meta).max(budget / 16);
        self.cache.set_capacity(cap);
    }

    // ---- reads ----

    /// The value of `key`, if it has one.
    #[inline(always)]
    pub fn get(&mut self, key: &[u8]) -> Result<Option<&[u8]>> {
        self.before_read();
        let h = self.active.hash(key);
        match self.active.lookup(h, key) {
            Some((RecordKind::Put, loc, len)) => Ok(Some(self.active.slice(loc, len))),
            Some((RecordKind::Delete, _, _)) => Ok(None),
            // Operands with nothing older anywhere: they are the whole value.
            Some((RecordKind::Merge, loc, len)) if self.frozen.is_empty() && self.segments.is_empty() => {
                Ok(Some(self.active.slice(loc, len)))
            }
            // Not in the mutable region, and there is nothing older to look in.
            None if self.frozen.is_empty() && self.segments.is_empty() && self.lookaside.is_none() => Ok(None),
            _ => self.get_slow(h, key),
        }
    }

    /// Whether `key` has a value.
    pub fn contains(&mut self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Installs values read by a scan to answer point reads of their prefix until the next
    /// write.
    pub(crate) fn set_lookaside(&mut self, lookaside: Box<Lookaside>) {
        self.lookaside = Some(lookaside);
    }

    /// Removes the installed lookaside, to reuse its memory.
    pub(crate) fn take_lookaside(&mut self) -> Option<Box<Lookaside>> {
        self.lookaside.take()
    }

    fn get_slow(&mut self, h: u64, key: &[u8]) -> Result<Option<&[u8]>> {
        if let Some(found) = self.lookaside.as_deref_mut().and_then(|l| l.find(key)) {
            return Ok(found.map(|v| {
                self.value.clear();
                self.value.extend_from_slice(v);
                &self.value[..]
            }));
        }
        self.operands.clear();
        self.operand_spans.clear();
        self.value.clear();
        // None: keep looking; Some(true): a base value is in `self.value`; Some(false): no base.
        let mut base: Option<bool> = None;
        if let Some((kind, v)) = self.active.get(h, key) {
            base = note(kind, v, &mut self.value, &mut self.operands, &mut self.operand_spans);
        }
        if base.is_none() {
            for f in self.frozen.iter().rev() {
                if let Some((kind, v)) = f.mem.get(h, key) {
                    base = note(kind, v, &mut self.value, &mut self.operands, &mut self.operand_spans);
                    if base.is_some() {
                        break;
                    }
                }
            }
        }
        if base.is_none() {
            let kg = key_group_of(key);
            let fh = key_hash64(key);
            if self.segments.len() > 1 {
                // The filters of all segments are fetched together: their misses overlap
                // rather than follow one another.
                for s in &self.segments {
                    if let Some(block) = s.seg.reader().filter_block(fh) {
                        table::prefetch(block);
                    }
                }
            }
            for s in &self.segments {
                if kg.is_some_and(|kg| s.masked(kg)) || !s.seg.reader().may_contain_hash(fh) {
                    continue;
                }
                let reader = s.seg.reader();
                let Some(idx) = reader.find_block(key) else { continue };
                // Uncompressed blocks are read in place; compressed ones through the cache.
                let (value, ops, spans) = (&mut self.value, &mut self.operands, &mut self.operand_spans);
                base = match reader.mapped_block(idx)? {
                    Some(view) => match view.get(key) {
                        Some(rec) => note(rec.kind, rec.value, value, ops, spans),
                        None => continue,
                    },
                    None => match self.cache.get_or_load(&s.seg, idx)?.get(key) {
                        Some(rec) => note(rec.kind, rec.value, value, ops, spans),
                        None => continue,
                    },
                };
                if base.is_some() {
                    break;
                }
            }
        }
        if base != Some(true) && self.operand_spans.is_empty() {
            return Ok(None);
        }
        for &(start, len) in self.operand_spans.iter().rev() {
            self.value.extend_from_slice(&self.operands[start..start + len]);
        }
        Ok(Some(&self.value))
    }

    /// Scans the keys that start with `prefix`, in key order.
    pub fn scan_prefix(&mut self, prefix: &[u8]) -> Result<StoreIter<'_>> {
        let upper = prefix_successor(prefix);
        self.scan_range(prefix, upper.as_deref())
    }

    /// Scans the keys of the group `group` (written with [`put_grouped`](Self::put_grouped)),
    /// in key order. In the mutable region this visits the group's keys only.
    pub fn scan_group(&mut self, group: &[u8]) -> Result<StoreIter<'_>> {
        self.before_read();
        let Store { active, frozen, segments, cache, group_refs, .. } = self;
        if frozen.is_empty() && segments.is_empty() {
            active.group_into(group, group_refs);
            return Ok(StoreIter::direct(active, group_refs));
        }
        let mut sources = vec![Source::memtable_owned(active, active.group(group), group)];
        for f in frozen.iter().rev() {
            sources.push(Source::memtable_owned(&f.mem, f.mem.group(group), group));
        }
        sources.extend(segments.iter().cloned().map(Source::segment));
        let upper = prefix_successor(group);
        Ok(StoreIter::new(MergeIter::new(sources, group.to_vec(), upper, Some(cache))))
    }

    /// Whether the group `group` (see [`scan_group`](Self::scan_group)) has no live key.
    pub fn group_is_empty(&mut self, group: &[u8]) -> Result<bool> {
        self.before_read();
        if self.frozen.is_empty() && self.segments.is_empty() {
            return Ok(!self.active.group_has_live(group));
        }
        Ok(self.scan_group(group)?.next_entry()?.is_none())
    }

    /// Scans the keys of a key-group range, in key order.
    pub fn scan_key_groups(&mut self, range: KeyGroupRange) -> Result<StoreIter<'_>> {
        if range.is_empty() {
            return self.scan_range(&[0xff, 0xff], Some(&[0xff, 0xff]));
        }
        let lower = range.start().to_be_bytes();
        let upper = range.end().checked_add(1).map(|e| e.to_be_bytes());
        self.scan_range(&lower, upper.as_ref().map(|u| &u[..]))
    }

    /// Scans the keys in `[lower, upper)` (to the end with no `upper`), in key order.
    pub fn scan_range(&mut self, lower: &[u8], upper: Option<&[u8]>) -> Result<StoreIter<'_>> {
        self.before_read();
        self.active.sorted_runs();
        let Store { active, frozen, segments, cache, .. } = self;
        // Sorted just above; the view is complete.
        let runs = active.runs_view().unwrap_or_default();
        let mut sources: Vec<Source<'_>> = runs.iter().map(|run| Source::memtable(active, run, lower)).collect();
        for f in frozen.iter().rev() {
            sources.push(Source::memtable(&f.mem, f.sorted(), lower));
        }
        sources.extend(segments.iter().cloned().map(Source::segment));
        Ok(StoreIter::new(MergeIter::new(sources, lower.to_vec(), upper.map(<[u8]>::to_vec), Some(cache))))
    }

    // ---- key groups ----

    /// Drops every key of a key-group range. Segments are not rewritten: the range is masked
    /// in them (a segment left with nothing visible is removed) and compaction drops the
    /// masked records later.
    pub fn drop_key_groups(&mut self, range: KeyGroupRange) -> Result<()> {
        if self.poisoned.is_some() {
            return Err(self.take_poison());
        }
        if range.is_empty() {
            return Ok(());
        }
        let (a, b) = (range.start(), range.end());
        self.lookaside = None;
        if let Some(log) = &mut self.log {
            log.interrupt();
        }
        self.wait_for_flush()?;
        self.active.drop_key_groups(a, b);
        for s in &mut self.segments {
            if s.seg.reader().key_groups().iter().any(|e| a <= e.key_group && e.key_group <= b) {
                s.mask.push((a, b));
            }
        }
        let compacting: Vec<u64> = self.compacting.as_ref().map(|t| t.inputs.clone()).unwrap_or_default();
        let mut i = 0;
        while i < self.segments.len() {
            let s = &self.segments[i];
            if s.fully_masked() && !compacting.contains(&s.seg.id()) {
                let s = self.segments.remove(i);
                self.retire(s.seg);
            } else {
                i += 1;
            }
        }
        self.resize_cache();
        Ok(())
    }

    // ---- maintenance ----

    /// Receives background results until `busy` is false or the store is poisoned.
    fn wait_while(&mut self, busy: fn(&Store) -> bool) -> Result<()> {
        while busy(self) && self.poisoned.is_none() {
            self.poll_done(true);
        }
        if self.poisoned.is_some() {
            return Err(self.take_poison());
        }
        Ok(())
    }

    fn wait_for_flush(&mut self) -> Result<()> {
        self.wait_while(|s| !s.frozen.is_empty())
    }

    fn wait_for_compaction(&mut self) -> Result<()> {
        self.wait_while(|s| s.compacting.is_some())
    }

    /// Writes the mutable region to a segment now and waits until it is done.
    pub fn flush(&mut self) -> Result<()> {
        if self.poisoned.is_some() {
            return Err(self.take_poison());
        }
        self.wait_for_flush()?;
        self.freeze();
        self.wait_for_flush()
    }

    /// Flushes, then merges all segments into one and waits until it is done.
    pub fn compact(&mut self) -> Result<()> {
        self.flush()?;
        self.wait_for_compaction()?;
        let filtered = self.opts.filter.is_some() && !self.segments.is_empty();
        if self.segments.len() > 1 || filtered || self.segments.iter().any(|s| !s.mask.is_empty()) {
            self.start_compaction(0..self.segments.len());
            self.wait_for_compaction()?;
        }
        Ok(())
    }

    /// Waits for background flushes and compactions that are running or due.
    pub fn wait_for_background(&mut self) -> Result<()> {
        loop {
            self.wait_for_flush()?;
            self.wait_for_compaction()?;
            self.poll_done(false);
            if self.frozen.is_empty() && self.compacting.is_none() {
                return Ok(());
            }
        }
    }

    /// Flushes everything, writes the store manifest durably and closes the store. The next
    /// open starts from exactly this state.
    pub fn close(mut self) -> Result<()> {
        self.flush()?;
        self.bg.stop.store(true, Ordering::Release);
        while self.compacting.is_some() {
            self.poll_done(true);
        }
        if self.poisoned.is_some() {
            return Err(self.take_poison());
        }
        // Segments are written without a sync; make them durable before the manifest names
        // them.
        for s in &self.segments {
            s.seg.sync()?;
        }
        let manifest = self.version();
        let path = self.dir.join(MANIFEST_FILE);
        let fs = self.opts.fs.clone();
        write_atomic(fs.as_ref(), &path, &manifest.encode()).map_err(|e| Error::io(&path, e))?;
        // The new manifest is durable: what only the old one named can go.
        for s in &self.segments {
            s.seg.set_pinned(true);
        }
        for s in self.pinned_obsolete.drain(..) {
            s.set_pinned(false);
        }
        Ok(())
    }

    /// Stamps the records written from now on with `tag`: the serializer versions that write
    /// them. Records keep their tag through flush and compaction. A tag that lists a state
    /// with other versions than the current one starts a new region, so that no region,
    /// segment or compaction mixes two versions of one state.
    pub fn set_schema(&mut self, tag: SchemaTag) -> Result<()> {
        if tag == *self.schema {
            return Ok(());
        }
        if self.poisoned.is_some() {
            return Err(self.take_poison());
        }
        if !self.schema.is_covered_by(&tag) {
            self.freeze();
        }
        // A log spanning a change of a state's versions records the newer ones: its records
        // are replayed as written by those (such a change comes with a restore, before the
        // first write).
        let spanned = self.log_schema.union(&tag).unwrap_or_else(|| tag.clone());
        self.log_schema = Arc::new(spanned);
        self.schema = Arc::new(tag);
        Ok(())
    }

    /// The tag the records written now get.
    pub fn schema(&self) -> &SchemaTag {
        &self.schema
    }

    /// The value of `key`, if it has one, and the tag of the serializer versions that wrote
    /// it (those of its newest record).
    pub fn get_with_schema(&mut self, key: &[u8]) -> Result<Option<(&[u8], Arc<SchemaTag>)>> {
        let Some(tag) = self.schema_of(key)? else { return Ok(None) };
        Ok(self.get(key)?.map(|v| (v, tag)))
    }

    /// The tag of the newest layer that holds a record of `key`.
    fn schema_of(&mut self, key: &[u8]) -> Result<Option<Arc<SchemaTag>>> {
        self.before_read();
        let h = self.active.hash(key);
        if self.active.lookup(h, key).is_some() {
            return Ok(Some(self.schema.clone()));
        }
        if let Some(f) = self.frozen.iter().rev().find(|f| f.mem.lookup(h, key).is_some()) {
            return Ok(Some(f.schema.clone()));
        }
        let kg = key_group_of(key);
        let fh = key_hash64(key);
        for s in &self.segments {
            if kg.is_some_and(|kg| s.masked(kg)) || !s.seg.reader().may_contain_hash(fh) {
                continue;
            }
            let reader = s.seg.reader();
            let Some(idx) = reader.find_block(key) else { continue };
            let found = match reader.mapped_block(idx)? {
                Some(view) => view.get(key).is_some(),
                None => self.cache.get_or_load(&s.seg, idx)?.get(key).is_some(),
            };
            if found {
                return Ok(Some(s.schema.clone()));
            }
        }
        Ok(None)
    }

    /// The store's version: its segments (newest first) with their masks and tags, as its
    /// manifest records them.
    pub fn version(&self) -> StoreManifest {
        StoreManifest {
            next_segment_id: self.next_id,
            segments: self
                .segments
                .iter()
                .map(|s| ManifestSegment {
                    id: s.seg.id(),
                    mask: s.mask.clone(),
                    tag: (*s.schema).clone(),
                    max_value_len: s.seg.max_value_len().map(|n| n as u32),
                })
                .collect(),
        }
    }

    /// Counters that describe the store.
    pub fn stats(&self) -> StoreStats {
        let (cache_hits, cache_misses) = self.cache.stats();
        StoreStats {
            memtable_bytes: self.active.memory(),
            flushing_bytes: self.frozen.iter().map(|f| f.mem.memory()).sum(),
            cache_bytes: self.cache.used(),
            segment_meta_bytes: self.segments.iter().map(|s| s.seg.pinned_memory()).sum(),
            segments: self.segments.len(),
            segment_file_bytes: self.segments.iter().map(|s| s.seg.reader().file_len()).sum(),
            cache_hits,
            cache_misses,
            flushes: self.flushes,
            compactions: self.compactions,
        }
    }

    /// Checks every checksum and record of every live segment.
    pub fn verify(&self) -> Result<()> {
        self.segments.iter().try_for_each(|s| s.seg.reader().verify())
    }

    /// The paths of the live segment files, newest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.seg.path()).collect()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.bg.shutdown();
    }
}

/// Calls `f` with every live key of `range` in `segments` (newest first, each with its masked
/// key-group ranges) and its resolved value, in key order, reading blocks without the cache.
pub(crate) fn scan_segments(
    segments: &[LiveSegment],
    range: KeyGroupRange,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    if range.is_empty() {
        return Ok(());
    }
    let sources = segments.iter().cloned().map(Source::segment).collect();
    let lower = range.start().to_be_bytes().to_vec();
    let upper = range.end().checked_add(1).map(|e| e.to_be_bytes().to_vec());
    let mut it = StoreIter::new(MergeIter::new(sources, lower, upper, None));
    while let Some((k, v)) = it.next_entry()? {
        f(k, v)?;
    }
    Ok(())
}

/// A region frozen before it filled (for a checkpoint, or by an explicit flush) holding less
/// than this, or less than half the write buffer, is written with uncompressed blocks: a
/// checkpoint waits for it, and block compression would be most of that wait. Compaction
/// compresses its records when it merges the segment.
const RAW_FLUSH_BELOW: usize = 8 << 20;

/// The memtable arena's chunk size for a write buffer: small buffers get small chunks so that
/// one chunk never fills the buffer by itself.
/// A write read back from a changelog, to apply with [`Store::replay`]; built on any thread
/// (its hashes are computed here, off the thread that applies it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Replayed<'a> {
    kind: RecordKind,
    key: &'a [u8],
    /// The length of the key's group (a prefix of it), 0 for none; merges have none.
    group_len: usize,
    value: &'a [u8],
    hash: u64,
    /// The group's hash, 0 for none.
    group_hash: u64,
}

impl<'a> Replayed<'a> {
    pub(crate) fn new(kind: RecordKind, key: &'a [u8], group_len: usize, value: &'a [u8]) -> Self {
        let group_len = if kind == RecordKind::Merge { 0 } else { group_len };
        let group_hash = match key.get(..group_len) {
            Some(prefix) if group_len > 0 => hash_key(prefix),
            _ => 0,
        };
        Replayed { kind, key, group_len, value, hash: hash_key(key), group_hash }
    }
}

/// [`Store::reserve_keys`] reserves at most one key per this many bytes of the mutable region,
/// so that an index sized ahead (16 bytes a slot, at most 3/4 full, a power of two) takes at
/// most a third of the region.
const RESERVE_BYTES_PER_KEY: usize = 128;

fn chunk_size(write_buffer: usize) -> usize {
    (write_buffer / 16).clamp(4 << 10, 4 << 20)
}

/// Notes a record met while resolving a point read: a base value (`Some(true)`), a delete
/// (`Some(false)`), or a merge operand to collect (`None`: keep looking).
fn note(
    kind: RecordKind,
    v: &[u8],
    value: &mut Vec<u8>,
    ops: &mut Vec<u8>,
    spans: &mut Vec<(usize, usize)>,
) -> Option<bool> {
    match kind {
        RecordKind::Put => {
            value.extend_from_slice(v);
            Some(true)
        }
        RecordKind::Delete => Some(false),
        RecordKind::Merge => {
            spans.push((ops.len(), v.len()));
            ops.extend_from_slice(v);
            None
        }
    }
}

/// The smallest byte string greater than every string that starts with `prefix`, if any.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last != 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compressed_blocks(store: &Store) -> Vec<(usize, usize)> {
        store
            .segments
            .iter()
            .map(|l| {
                let r = l.seg.reader();
                ((0..r.block_count()).filter(|&i| r.is_compressed(i)).count(), r.block_count())
            })
            .collect()
    }

    #[test]
    fn a_store_with_a_changelog_leaves_no_log_behind_and_replays_without_logging() {
        let fs = crate::io::FaultFs::new();
        let opts = || StoreOptions::new().file_system(Arc::new(fs.clone())).memory_budget(1 << 20).changelog(true);
        let logs = |fs: &crate::io::FaultFs| {
            fs.list(Path::new("/s")).unwrap().into_iter().filter(|n| changelog::is_log_file_name(n)).count()
        };
        let mut s = opts().open("/s").unwrap();
        assert!(s.seal_changelog().is_some_and(|seal| seal.log.is_none() && !seal.continuous));
        s.put(b"\x00\x01a", b"1").unwrap();
        s.put_grouped(b"\x00\x01gk", 3, b"2").unwrap();
        let sealed = s.seal_changelog().unwrap().log.unwrap();
        assert!(sealed.wait().unwrap() > 20);
        // Replayed writes are applied, and not logged again.
        s.replay(&Replayed::new(RecordKind::Put, b"\x00\x02b", 0, b"3")).unwrap();
        s.replay(&Replayed::new(RecordKind::Put, b"\x00\x02gx", 3, b"4")).unwrap();
        assert_eq!(s.get(b"\x00\x02b").unwrap(), Some(&b"3"[..]));
        assert!(!s.group_is_empty(b"\x00\x02g").unwrap());
        assert!(s.seal_changelog().unwrap().log.is_none());
        drop(sealed);
        s.close().unwrap();
        assert_eq!(logs(&fs), 0, "no changelog file outlives the store");
        // A file a crash left behind is removed on open.
        fs.write_file(Path::new("/s/changelog-0000000009.log"), b"EDLG").unwrap();
        let s = opts().open("/s").unwrap();
        assert_eq!(s.segment_paths().len(), 1);
        drop(s);
        assert_eq!(logs(&fs), 0);
    }

    /// A key of a group must always be written with that group: a grouped write of a key the
    /// mutable region holds without a group, or with a group of another length, is refused
    /// with a typed error and writes nothing (the key would be missing from its group's list
    /// and count); writes without a group are never refused.
    #[test]
    fn a_grouped_write_of_a_key_held_with_another_grouping_is_refused_and_writes_nothing() {
        let fs = crate::io::FaultFs::new();
        let mut s = StoreOptions::new().file_system(Arc::new(fs)).open("/s").unwrap();
        let mismatch = |r: Result<()>, group_len, held| match r {
            Err(Error::Misuse(Misuse::GroupMismatch { group_len: g, held: h })) => {
                assert_eq!((g, h), (group_len, held));
            }
            other => panic!("expected a group mismatch, got {other:?}"),
        };
        s.put(b"\x00\x01gk", b"plain").unwrap();
        mismatch(s.put_grouped(b"\x00\x01gk", 3, b"grouped"), 3, 0);
        mismatch(s.delete_grouped(b"\x00\x01gk", 3), 3, 0);
        let mut batch = vec![(b"\x00\x01gj".to_vec(), b"1".to_vec()), (b"\x00\x01gk".to_vec(), b"2".to_vec())];
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let r = s.put_grouped_batch(b"\x00\x01g", &mut key, &mut value, |k, v| {
            let Some((nk, nv)) = batch.pop() else { return Ok(false) };
            (*k, *v) = (nk, nv);
            Ok(true)
        });
        mismatch(r, 3, 0);
        assert_eq!(s.get(b"\x00\x01gk").unwrap(), Some(&b"plain"[..]));
        assert!(s.group_is_empty(b"\x00\x01g").unwrap(), "nothing of the batch was written");
        // Held with a group of another length.
        s.put_grouped(b"\x00\x01hk", 4, b"a").unwrap();
        mismatch(s.put_grouped(b"\x00\x01hk", 3, b"b"), 3, 4);
        mismatch(s.replay(&Replayed::new(RecordKind::Put, b"\x00\x01hk", 3, b"c")), 3, 4);
        assert_eq!(s.get(b"\x00\x01hk").unwrap(), Some(&b"a"[..]));
        // Without a group, any key may be written; with the same group, as always.
        s.put(b"\x00\x01hk", b"d").unwrap();
        s.put_grouped(b"\x00\x01hk", 4, b"e").unwrap();
        s.delete(b"\x00\x01gk").unwrap();
        assert_eq!(s.get(b"\x00\x01hk").unwrap(), Some(&b"e"[..]));
        assert!(!s.group_is_empty(b"\x00\x01hk"[..4].as_ref()).unwrap());
    }

    /// The lookaside answers from the entry after the last one found (a visit's order) and
    /// by a search otherwise: in order, out of order, missing keys and keys of another prefix.
    #[test]
    fn the_lookaside_finds_keys_in_and_out_of_visit_order() {
        let mut l = Lookaside::default();
        l.reset(b"\x00\x01");
        let key = |i: u8| [0, 1, b'k', i * 2];
        for i in 0..50u8 {
            l.push(&key(i), &[i]);
        }
        assert!(l.is_complete());
        for i in 0..50u8 {
            assert_eq!(l.find(&key(i)), Some(Some(&[i][..])), "in order {i}");
        }
        for i in [7u8, 3, 49, 0, 1, 30, 30, 31] {
            assert_eq!(l.find(&key(i)), Some(Some(&[i][..])), "out of order {i}");
        }
        assert_eq!(l.find(&[0, 1, b'k', 3]), Some(None), "between two keys");
        assert_eq!(l.find(&key(31)), Some(Some(&[31][..])));
        assert_eq!(l.find(&[0, 1, b'z']), Some(None), "past the last key");
        assert_eq!(l.find(&[0, 2, b'k', 0]), None, "another prefix");
        l.reset(b"\x00\x02");
        assert_eq!(l.find(&[0, 2, b'k', 0]), Some(None), "nothing after a reset");
    }

    /// A store opened with compaction held (a restore replaying a changelog) starts none, not
    /// even on writes that flush, until it is released; then the due one starts.
    #[test]
    fn held_compaction_starts_only_once_released() {
        let fs = crate::io::FaultFs::new();
        let opts = || StoreOptions::new().file_system(Arc::new(fs.clone())).memory_budget(1 << 20);
        let never = CompactionOptions {
            trigger: 100,
            max_segments: 100,
            stall_segments: 100,
            max_space_amplification_percent: u64::MAX,
            ..Default::default()
        };
        let mut s = opts().compaction(never).open("/s").unwrap();
        for round in 0..4u8 {
            for i in 0..200u32 {
                s.put(&[&[0, 1][..], &i.to_be_bytes()].concat(), &[round; 32]).unwrap();
            }
            s.flush().unwrap();
        }
        s.close().unwrap();
        let mut s = opts().hold_compaction(true).open("/s").unwrap();
        assert_eq!(s.segments.len(), 4);
        for i in 0..200u32 {
            s.put(&[&[0, 2][..], &i.to_be_bytes()].concat(), &[9; 32]).unwrap();
        }
        s.flush().unwrap();
        s.wait_for_background().unwrap();
        assert!(s.compacting.is_none() && s.stats().compactions == 0, "{:?}", s.stats());
        s.release_compaction();
        assert!(s.compacting.is_some(), "the due compaction starts on release");
        s.wait_for_background().unwrap();
        assert!(s.stats().compactions > 0 && s.segments.len() < 5, "{:?}", s.stats());
    }

    #[test]
    fn a_small_early_flush_is_written_raw_and_compaction_compresses_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StoreOptions::new().memory_budget(64 << 20).open(dir.path()).unwrap();
        let key = |i: u32| [&[0u8, (i % 128) as u8][..], &i.to_be_bytes()].concat();
        // Compressible values: a full region's blocks would be compressed.
        for i in 0..5_000u32 {
            s.put(&key(i), &[b'x'; 100]).unwrap();
        }
        s.flush().unwrap();
        for i in 5_000..10_000u32 {
            s.put(&key(i), &[b'y'; 100]).unwrap();
        }
        s.flush().unwrap();
        let flushed = compressed_blocks(&s);
        assert_eq!(flushed.len(), 2);
        assert!(flushed.iter().all(|&(compressed, blocks)| compressed == 0 && blocks > 10), "{flushed:?}");
        s.compact().unwrap();
        let compacted = compressed_blocks(&s);
        assert!(matches!(compacted[..], [(c, b)] if c == b && b > 0), "{compacted:?}");
        assert_eq!(s.get(&key(7)).unwrap(), Some(&[b'x'; 100][..]));
        assert_eq!(s.get(&key(7_007)).unwrap(), Some(&[b'y'; 100][..]));
    }

    #[test]
    fn prefix_successor_cases() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
