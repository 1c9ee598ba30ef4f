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

mod background;
mod cache;
pub(crate) mod changelog;
pub(crate) mod compaction;
mod groups;
mod iter;
mod memtable;
pub(crate) mod migrate;
mod options;
mod read;
pub(crate) mod segment;
mod table;
mod version;
mod write;

use std::collections::HashSet;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use compaction::{CompactionFilter, CompactionOptions, FilterDecision};
pub use iter::StoreIter;
pub use options::{StoreOptions, StoreStats};
pub use read::prefix_successor;

use self::background::{Background, CompactionTicket, Frozen};
use self::cache::BlockCache;
pub(crate) use self::changelog::LogSeal;
use self::changelog::{is_log_file_name, Changelog};
use self::memtable::{Memtable, RecRef};
pub(crate) use self::read::{scan_segments_migrated, Lookaside};
use self::segment::{parse_segment_file_name, LiveSegment, Segment};
use self::version::chunk_size;
pub(crate) use self::version::{install_version, StoreSnapshot};
pub(crate) use self::write::Replayed;
use crate::error::{Error, Misuse, Result};
use crate::format::store_manifest::StoreManifest;
use crate::format::SchemaTag;
use crate::io::{write_atomic, FileSystem, LockGuard};

/// The name of the store manifest in the store's directory.
pub const MANIFEST_FILE: &str = "MANIFEST";
/// The lock file that keeps a store directory from being opened twice.
pub const LOCK_FILE: &str = "LOCK";
/// The largest key the store accepts (64 KiB - 1).
pub const MAX_KEY_LEN: usize = u16::MAX as usize;
/// The largest value the store accepts (a block, at most 256 MiB, must hold one record).
pub const MAX_VALUE_LEN: usize = 128 << 20;
const MIN_WRITE_BUFFER: usize = 64 << 10;

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
    /// The region flushed last, kept after its flush so that point reads of what it holds
    /// stay one hash probe (rather than a segment search) until the next flush replaces it:
    /// after a checkpoint froze the mutable region, the first read of each key would
    /// otherwise go to the new segment. It holds exactly what the newest segment holds.
    recent: Option<Arc<Frozen>>,
    segments: Vec<LiveSegment>,
    /// The serializer versions of the records written now (see [`set_schema`](Self::set_schema)).
    schema: Arc<SchemaTag>,
    /// Those of the records logged since the changelog was last sealed.
    log_schema: Arc<SchemaTag>,
    /// How records of older serializers are converted in compactions.
    migrations: Arc<migrate::Migrations>,
    /// The error of the last compaction whose conversion failed.
    migration_error: Option<Error>,
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
            recent: None,
            segments,
            schema: Arc::default(),
            log_schema: Arc::default(),
            migrations: Arc::default(),
            migration_error: None,
            pinned_obsolete: Vec::new(),
            next_id,
            cache: BlockCache::new(0),
            value: Vec::with_capacity(1024),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::RecordKind;

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
}
