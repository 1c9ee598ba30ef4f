//! Compaction: which segments to merge (a size-tiered policy in the manner of RocksDB's
//! universal compaction) and the merge itself.
//!
//! Segments form one list, newest first; a compaction always merges a contiguous run of it, so
//! that the newest record of every key stays the one that wins. Two rules pick the run:
//!
//! 1. Space amplification: when the segments newer than the oldest add up to more than
//!    `max_space_amplification_percent` of the oldest, everything is merged. This bounds the
//!    space that overwritten and deleted records can take.
//! 2. Size ratio: once there are at least `trigger` segments, the longest run from the newest
//!    in which every next segment is at most `(100 + size_ratio_percent)%` of the run so far
//!    is merged (at least two segments). Read amplification stays logarithmic.
//!
//! With more than `max_segments` segments the newest two are merged regardless.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::iter::{MergeIter, Source};
use super::segment::LiveSegment;
use crate::format::segment::SegmentStats;
use crate::format::{RecordKind, SegmentWriter};
use crate::{Error, Result};

/// How the store decides what to compact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionOptions {
    /// Segments needed before the size-ratio rule applies.
    pub trigger: usize,
    /// How much larger than the run so far the next segment may be to join it, in percent.
    pub size_ratio_percent: u64,
    /// Bound on (total size / size of the oldest segment - 1), in percent.
    pub max_space_amplification_percent: u64,
    /// Above this many segments, all but the oldest are merged, before any other rule.
    pub max_segments: usize,
    /// At this many segments, while a compaction runs, a write that would freeze a full
    /// mutable region waits for it first (a write stall, as RocksDB stops writes at its
    /// level-0 file limit): every read merges every segment, so their number must stay
    /// bounded when writes outrun compaction.
    pub stall_segments: usize,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        CompactionOptions {
            trigger: 4,
            size_ratio_percent: 1,
            max_space_amplification_percent: 100,
            max_segments: 12,
            stall_segments: 16,
        }
    }
}

/// The run of segments (indexes into `sizes`, newest first) to merge, if any. The oldest
/// `bottom` segments (at least one) hold disjoint key groups, as the halves a savepoint is
/// restored into or the segments of several snapshots a rescaled store starts from do: together
/// they are the base that newer data amplifies.
pub(crate) fn pick(sizes: &[u64], bottom: usize, opts: &CompactionOptions) -> Option<Range<usize>> {
    let n = sizes.len();
    if n < 2 {
        return None;
    }
    // Too many segments: every read merges them all. Merging all but the oldest brings the
    // count down in one pass over the newer data; the rule on space comes after (a full merge
    // takes longest, and while it runs the count would keep growing).
    if n > opts.max_segments && n > 2 {
        return Some(0..n - 1);
    }
    let bottom = bottom.clamp(1, n);
    let newer: u64 = sizes[..n - bottom].iter().sum();
    let base: u64 = sizes[n - bottom..].iter().sum();
    if newer > 0 && newer.saturating_mul(100) > base.saturating_mul(opts.max_space_amplification_percent) {
        return Some(0..n);
    }
    if n >= opts.trigger {
        let mut run = sizes[0];
        let mut end = 1;
        while end < n && sizes[end].saturating_mul(100) <= run.saturating_mul(100 + opts.size_ratio_percent) {
            run += sizes[end];
            end += 1;
        }
        if end >= 2 {
            return Some(0..end);
        }
    }
    if n > opts.max_segments {
        return Some(0..2);
    }
    None
}

/// What a [`CompactionFilter`] decides for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterDecision {
    /// The record stays as it is.
    Keep,
    /// The record goes: a value is deleted (its older versions with it), an operand is dropped.
    Remove,
    /// The record stays with the value the filter wrote into its output buffer.
    Replace,
}

/// Decides, while segments are merged, which records survive. This is how state with a time to
/// live loses its expired entries without being read (in the manner of RocksDB's compaction
/// filters). It runs on the compaction thread, so it must be cheap and must not block.
pub trait CompactionFilter: Send + Sync + 'static {
    /// Decides for one record. `operand` says that `value` is a merge operand (to be appended to
    /// an older value outside the merge) rather than a whole value. For
    /// [`FilterDecision::Replace`] the new value goes into `out`, which arrives empty.
    fn filter(&self, key: &[u8], value: &[u8], operand: bool, out: &mut Vec<u8>) -> FilterDecision;
}

/// Two filters in turn: `first` decides, and what it keeps (or the value it replaces a record
/// with) goes to `then`. A record either removes is removed.
pub(crate) struct Chained {
    pub(crate) first: Arc<dyn CompactionFilter>,
    pub(crate) then: Arc<dyn CompactionFilter>,
}

impl CompactionFilter for Chained {
    fn filter(&self, key: &[u8], value: &[u8], operand: bool, out: &mut Vec<u8>) -> FilterDecision {
        match self.first.filter(key, value, operand, out) {
            FilterDecision::Remove => FilterDecision::Remove,
            FilterDecision::Keep => self.then.filter(key, value, operand, out),
            FilterDecision::Replace => {
                let replaced = std::mem::take(out);
                match self.then.filter(key, &replaced, operand, out) {
                    FilterDecision::Keep => {
                        *out = replaced;
                        FilterDecision::Replace
                    }
                    decision => decision,
                }
            }
        }
    }
}

/// What steers a running merge: the filter, if any, and the flag that stops it.
#[derive(Clone, Copy)]
pub(crate) struct MergeControl<'a> {
    pub(crate) filter: Option<&'a dyn CompactionFilter>,
    /// The migrations that convert records of older serializers as they are merged.
    pub(crate) migrate: Option<&'a super::migrate::Migrations>,
    pub(crate) stop: &'a AtomicBool,
}

/// Error raised inside a compaction that was asked to stop.
pub(crate) fn cancelled() -> Error {
    Error::io("compaction", std::io::Error::new(std::io::ErrorKind::Interrupted, "compaction cancelled"))
}

/// Merges `inputs` (newest first) into `writer`. With `bottom`, the inputs include the oldest
/// segment: deletes are dropped and merge operands without a base become plain values.
/// Records hidden by an input's mask are dropped.
pub(crate) fn merge(
    inputs: &[LiveSegment],
    bottom: bool,
    mut writer: SegmentWriter,
    ctl: MergeControl<'_>,
) -> Result<Option<SegmentStats>> {
    let MergeControl { filter, stop, migrate } = ctl;
    if let Some(m) = migrate.filter(|m| inputs.iter().any(|s| m.converts(&s.schema, true))) {
        return merge_converting(inputs, bottom, writer, filter, stop, m);
    }
    let mut out = Output { bottom, filter, replaced: Vec::new(), written: 0 };
    let sources = inputs.iter().cloned().map(Source::segment).collect();
    let mut it = MergeIter::new(sources, Vec::new(), None, None);
    let mut n = 0u64;
    while it.step()?.is_some() {
        let (kind, key, value) = it.last();
        n += 1;
        if n.is_multiple_of(4096) && stop.load(Ordering::Relaxed) {
            return Err(cancelled());
        }
        out.add(&mut writer, kind, key, value)?;
    }
    out.finish(writer)
}

/// The writing end of a merge: drops what the bottom level no longer needs, applies the
/// filter and counts what it writes.
struct Output<'a> {
    bottom: bool,
    filter: Option<&'a dyn CompactionFilter>,
    replaced: Vec<u8>,
    written: u64,
}

impl Output<'_> {
    fn add(&mut self, writer: &mut SegmentWriter, kind: RecordKind, key: &[u8], value: &[u8]) -> Result<()> {
        let kind = match (kind, self.bottom) {
            (RecordKind::Delete, true) => return Ok(()),
            (RecordKind::Merge, true) => RecordKind::Put,
            (kind, _) => kind,
        };
        let mut value = value;
        if let (Some(f), RecordKind::Put | RecordKind::Merge) = (self.filter, kind) {
            let operand = kind == RecordKind::Merge;
            self.replaced.clear();
            match f.filter(key, value, operand, &mut self.replaced) {
                FilterDecision::Keep => {}
                FilterDecision::Replace => value = &self.replaced,
                // A dropped operand leaves the older value as it was; a dropped value must
                // hide its older versions unless there are none below.
                FilterDecision::Remove if operand || self.bottom => return Ok(()),
                FilterDecision::Remove => {
                    writer.add(RecordKind::Delete, key, &[])?;
                    self.written += 1;
                    return Ok(());
                }
            }
        }
        writer.add(kind, key, value)?;
        self.written += 1;
        Ok(())
    }

    fn finish(self, writer: SegmentWriter) -> Result<Option<SegmentStats>> {
        if self.written == 0 {
            return Ok(None);
        }
        writer.finish_without_sync().map(Some)
    }
}

/// Records passed from the merging thread to the converting one, copied into one buffer.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    /// Kind, key length, value length and the index in `tags` of the record's writers
    /// (`u32::MAX` for none).
    records: Vec<(RecordKind, u32, u32, u32)>,
    tags: Vec<Arc<crate::format::SchemaTag>>,
}

/// Records per [`Batch`].
const BATCH_RECORDS: usize = 1024;

impl Batch {
    fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
        self.tags.clear();
    }

    fn push(&mut self, kind: RecordKind, key: &[u8], value: &[u8], tag: Option<&Arc<crate::format::SchemaTag>>) {
        let tag = match tag {
            None => u32::MAX,
            Some(t) => match self.tags.last() {
                Some(last) if Arc::ptr_eq(last, t) => self.tags.len() as u32 - 1,
                _ => {
                    self.tags.push(t.clone());
                    self.tags.len() as u32 - 1
                }
            },
        };
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        self.records.push((kind, key.len() as u32, value.len() as u32, tag));
    }

    /// Calls `f` with every record: kind, key, value and writers.
    fn each(
        &self,
        mut f: impl FnMut(RecordKind, &[u8], &[u8], Option<&Arc<crate::format::SchemaTag>>) -> Result<()>,
    ) -> Result<()> {
        let mut at = 0;
        for &(kind, klen, vlen, tag) in &self.records {
            let (klen, vlen) = (klen as usize, vlen as usize);
            f(kind, &self.bytes[at..at + klen], &self.bytes[at + klen..at + klen + vlen], self.tags.get(tag as usize))?;
            at += klen + vlen;
        }
        Ok(())
    }

    /// Appends to `out` the records of this batch, those of older writers converted by `m`.
    fn convert_into(&self, m: &super::migrate::Migrations, out: &mut Batch, value: &mut Vec<u8>) -> Result<()> {
        self.each(|kind, key, v, tag| {
            let converted = match (tag, kind) {
                (Some(tag), RecordKind::Put | RecordKind::Merge) => m.convert(tag, key, v, value)?,
                _ => false,
            };
            out.push(kind, key, if converted { value } else { v }, None);
            Ok(())
        })
    }
}

/// Batches on their way to the converting thread or back.
const BATCHES_IN_FLIGHT: usize = 4;

/// [`merge`] with records of older writers converted by `m`. The conversion runs user code,
/// often as costly as the merge itself, so it runs on a second thread: this one merges
/// records into batches, hands them over and writes the converted batches as they come back,
/// in order.
fn merge_converting(
    inputs: &[LiveSegment],
    bottom: bool,
    mut writer: SegmentWriter,
    filter: Option<&dyn CompactionFilter>,
    stop: &AtomicBool,
    m: &super::migrate::Migrations,
) -> Result<Option<SegmentStats>> {
    std::thread::scope(|scope| {
        // (merged records, a batch to fill with their conversion), and back. Both ends are
        // local to the scope: an early return closes them, so the converter stops before the
        // scope waits for it.
        let (to_convert, convert_rx) = std::sync::mpsc::sync_channel::<(Batch, Batch)>(BATCHES_IN_FLIGHT);
        let (converted_tx, converted) = std::sync::mpsc::channel::<Result<(Batch, Batch)>>();
        std::thread::Builder::new()
            .name("eddy-convert".into())
            .spawn_scoped(scope, move || {
                let mut value = Vec::new();
                for (input, mut out) in convert_rx {
                    out.clear();
                    let done = input.convert_into(m, &mut out, &mut value).map(|()| (input, out));
                    let failed = done.is_err();
                    if converted_tx.send(done).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| Error::io("compaction", e))?;
        let mut out = Output { bottom, filter, replaced: Vec::new(), written: 0 };
        let mut pool: Vec<(Batch, Batch)> = Vec::new();
        let mut in_flight = 0usize;
        let write_back = |out: &mut Output<'_>, writer: &mut SegmentWriter, pool: &mut Vec<(Batch, Batch)>| {
            let (input, done) = converted.recv().map_err(|_| converter_gone())??;
            done.each(|kind, key, value, _| out.add(writer, kind, key, value))?;
            pool.push((input, done));
            Ok::<(), Error>(())
        };
        let sources = inputs.iter().cloned().map(Source::segment).collect();
        let mut it = MergeIter::new(sources, Vec::new(), None, None);
        let mut batch = Batch::default();
        loop {
            let more = it.step()?.is_some();
            if more {
                let (kind, key, value) = it.last();
                batch.push(kind, key, value, it.newest_schema());
                if batch.records.len() < BATCH_RECORDS {
                    continue;
                }
                if stop.load(Ordering::Relaxed) {
                    return Err(cancelled());
                }
            }
            let (mut next, spare) = pool.pop().unwrap_or_default();
            next.clear();
            if to_convert.send((std::mem::replace(&mut batch, next), spare)).is_err() {
                // The converter stopped on an error, sent before it stopped.
                return Err(converted.iter().find_map(Result::err).unwrap_or_else(converter_gone));
            }
            in_flight += 1;
            while in_flight >= BATCHES_IN_FLIGHT || (!more && in_flight > 0) {
                write_back(&mut out, &mut writer, &mut pool)?;
                in_flight -= 1;
            }
            if !more {
                break;
            }
        }
        drop(to_convert);
        out.finish(writer)
    })
}

/// The error of a converting thread that stopped without an answer (it panicked).
fn converter_gone() -> Error {
    Error::io("compaction", std::io::Error::other("the converting thread stopped"))
}

/// How many of the oldest segments hold pairwise disjoint key groups, given each segment's
/// span of key groups (first and last; `None` for a segment without records), newest first:
/// the `bottom` of [`pick`].
pub(crate) fn disjoint_bottom(spans: &[Option<(u16, u16)>]) -> usize {
    let mut taken: Vec<(u16, u16)> = Vec::new();
    for span in spans.iter().rev() {
        match span {
            Some((lo, hi)) if taken.iter().all(|&(a, b)| *hi < a || *lo > b) => taken.push((*lo, *hi)),
            _ => break,
        }
    }
    taken.len().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`pick`] over segments of which only the oldest is the base.
    fn pick_one(sizes: &[u64], opts: &CompactionOptions) -> Option<Range<usize>> {
        pick(sizes, 1, opts)
    }

    #[test]
    fn disjoint_oldest_segments_are_one_base() {
        let o = CompactionOptions::default();
        let halves = [Some((64, 127)), Some((0, 63))];
        assert_eq!(disjoint_bottom(&halves), 2);
        // Two halves of about the same size amplify nothing.
        assert_eq!(pick(&[110, 100], disjoint_bottom(&halves), &o), None);
        assert_eq!(pick_one(&[110, 100], &o), Some(0..2));
        // A flush over both is newer data over a base of both.
        let flushed = [Some((0, 127)), Some((64, 127)), Some((0, 63))];
        assert_eq!(disjoint_bottom(&flushed), 2);
        assert_eq!(pick(&[50, 110, 100], 2, &o), None);
        assert_eq!(pick(&[220, 110, 100], 2, &o), Some(0..3));
        // Overlapping or empty segments stop the base.
        assert_eq!(disjoint_bottom(&[Some((0, 10)), Some((5, 20))]), 1);
        assert_eq!(disjoint_bottom(&[Some((30, 40)), None, Some((0, 10))]), 1);
        assert_eq!(disjoint_bottom(&[]), 1);
    }

    #[test]
    fn space_amplification_merges_everything() {
        let o = CompactionOptions::default();
        assert_eq!(pick_one(&[60, 50, 100], &o), Some(0..3));
        assert_eq!(pick_one(&[10, 100], &o), None);
        assert_eq!(pick_one(&[100], &o), None);
    }

    #[test]
    fn size_ratio_merges_similar_newest_segments() {
        let o = CompactionOptions::default();
        // 10, 10 merge; 25 is too large for a run of 20 at 1%.
        assert_eq!(pick_one(&[10, 10, 25, 1000], &o), Some(0..2));
        assert_eq!(pick_one(&[10, 10, 20, 1000], &o), Some(0..3));
        // Below the trigger nothing happens.
        assert_eq!(pick_one(&[10, 10, 1000], &o), None);
        // A newest segment much smaller than the next: nothing by ratio.
        assert_eq!(pick_one(&[1, 10, 100, 1000], &o), None);
    }

    #[test]
    fn too_many_segments_merge_all_but_the_oldest_first() {
        let o = CompactionOptions { max_segments: 3, ..Default::default() };
        assert_eq!(pick_one(&[1, 2, 4, 8, 1000], &o), Some(0..4));
        // Before the rule on space, which would merge all five.
        assert_eq!(pick_one(&[600, 500, 400, 300, 100], &o), Some(0..4));
        assert_eq!(pick_one(&[600, 500, 400], &o), Some(0..3));
    }
}
