//! A live segment: an open [`SegmentReader`] shared by reference counting between the store,
//! its iterators and background work. Its file is removed when the last reference to an
//! obsolete segment goes away (invariant 2), unless a durable manifest still names it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::format::SchemaTag;
use std::sync::Arc;

use crate::format::SegmentReader;
use crate::io::FileSystem;
use crate::keygroup::KeyGroup;
use crate::{Error, Result};

/// The file name of segment `id`.
pub(crate) fn segment_file_name(id: u64) -> String {
    format!("{id:010}.seg")
}

/// The segment id of a file name made by [`segment_file_name`].
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() < 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) struct Segment {
    id: u64,
    reader: SegmentReader,
    fs: Arc<dyn FileSystem>,
    obsolete: AtomicBool,
    /// Named by the durable store manifest: its file outlives obsolescence until the next
    /// manifest is written.
    pinned: AtomicBool,
    /// The file's contents are durable. Flushes and compactions leave files unsynced (the
    /// write path never waits on the disk); they are synced before a manifest names them.
    synced: AtomicBool,
    /// The length of its longest value, when known (`u32::MAX` when not): known for the
    /// segments this store wrote since it opened.
    max_value_len: AtomicU32,
}

impl Segment {
    /// Opens segment `id` in `dir`; `synced` says whether its file is known to be durable.
    pub(crate) fn open(fs: Arc<dyn FileSystem>, dir: &Path, id: u64, synced: bool) -> Result<Arc<Segment>> {
        let path = dir.join(segment_file_name(id));
        let bytes = fs.open(&path).map_err(|e| Error::io(&path, e))?;
        let reader = SegmentReader::open(bytes, &path)?;
        Ok(Arc::new(Segment {
            id,
            reader,
            fs,
            obsolete: AtomicBool::new(false),
            pinned: AtomicBool::new(false),
            synced: AtomicBool::new(synced),
            max_value_len: AtomicU32::new(u32::MAX),
        }))
    }

    /// Records the length of the segment's longest value, which its writer reported.
    pub(crate) fn set_max_value_len(&self, len: u32) {
        self.max_value_len.store(len, Ordering::Relaxed);
    }

    /// The length of the segment's longest value, if known.
    pub(crate) fn max_value_len(&self) -> Option<usize> {
        match self.max_value_len.load(Ordering::Relaxed) {
            u32::MAX => None,
            n => Some(n as usize),
        }
    }

    /// Makes the file durable if it is not yet.
    pub(crate) fn sync(&self) -> Result<()> {
        if !self.synced.load(Ordering::Acquire) {
            let path = self.reader.path();
            self.fs.sync_file(path).map_err(|e| Error::io(path, e))?;
            self.synced.store(true, Ordering::Release);
        }
        Ok(())
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn reader(&self) -> &SegmentReader {
        &self.reader
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.reader.path().to_path_buf()
    }

    pub(crate) fn set_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }

    pub(crate) fn set_pinned(&self, pinned: bool) {
        self.pinned.store(pinned, Ordering::Release);
    }

    pub(crate) fn is_pinned(&self) -> bool {
        self.pinned.load(Ordering::Acquire)
    }

    /// Memory held for this segment while it is open: decoded indexes and the filter.
    pub(crate) fn pinned_memory(&self) -> usize {
        self.reader.index_memory() + self.reader.filter_len()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) && !self.pinned.load(Ordering::Acquire) {
            // Best effort: a file left behind is collected on the next open.
            let _ = self.fs.remove(self.reader.path());
        }
    }
}

/// A segment as a store version holds it: the segment, the key-group ranges dropped since
/// it was written, and the serializer versions that wrote its records.
#[derive(Clone)]
pub(crate) struct LiveSegment {
    pub(crate) seg: Arc<Segment>,
    pub(crate) mask: Vec<(KeyGroup, KeyGroup)>,
    pub(crate) schema: Arc<SchemaTag>,
}

impl LiveSegment {
    #[inline]
    pub(crate) fn masked(&self, kg: KeyGroup) -> bool {
        self.mask.iter().any(|&(a, b)| a <= kg && kg <= b)
    }

    /// Whether every key group the segment holds is masked.
    pub(crate) fn fully_masked(&self) -> bool {
        self.seg.reader().key_groups().iter().all(|e| self.masked(e.key_group))
    }
}
