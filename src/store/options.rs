//! The options a store is opened with, and the counters it reports.

use std::path::Path;
use std::sync::Arc;

use super::compaction::{CompactionFilter, CompactionOptions};
use super::{Store, MIN_WRITE_BUFFER};
use crate::error::{Misuse, Result};
use crate::format::segment::Compression;
use crate::format::WriterOptions;
use crate::io::{FileSystem, StdFs};

/// Options of a [`Store`]; ends in [`open`](Self::open).
#[derive(Clone)]
pub struct StoreOptions {
    pub(super) fs: Arc<dyn FileSystem>,
    pub(super) memory_budget: usize,
    pub(super) writer: WriterOptions,
    pub(super) compaction: CompactionOptions,
    pub(super) filter: Option<Arc<dyn CompactionFilter>>,
    pub(super) changelog: bool,
    /// No compaction starts until [`Store::release_compaction`] (a restore that replays a
    /// changelog keeps both processors for the replay).
    pub(super) hold_compaction: bool,
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

    pub(super) fn validate(&self) -> Result<()> {
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
