//! Ordered iteration: a merge of the memtables and the segments, newest first, resolving
//! deletes and merge operands.

use std::cmp::Ordering;
use std::ops::Range;
use std::sync::Arc;

use super::cache::BlockCache;
use super::memtable::{Memtable, RecRef};
use super::segment::LiveSegment;
use super::table::key_cmp;
use crate::format::segment::key_group_of;
use crate::format::{Block, RecordKind};
use crate::{Corruption, Error, Result};

type Decompressor = Option<zstd::bulk::Decompressor<'static>>;

pub(crate) struct MemSource<'a> {
    mem: &'a Memtable,
    refs: std::borrow::Cow<'a, [RecRef]>,
    pos: usize,
    /// The record at `pos`, parsed once.
    cur: Option<(RecordKind, &'a [u8], &'a [u8])>,
}

/// How many records ahead a memtable scan fetches.
const PREFETCH_AHEAD: usize = 8;

impl MemSource<'_> {
    fn advance(&mut self) {
        if let Some(r) = self.refs.get(self.pos + PREFETCH_AHEAD) {
            self.mem.prefetch(*r);
        }
        self.pos += 1;
        self.cur = self.refs.get(self.pos).map(|r| self.mem.record(*r));
    }
}

/// A record's kind and the ranges of its key and value in its block's payload.
type Spans = (RecordKind, Range<usize>, Range<usize>);

pub(crate) struct SegSource {
    seg: LiveSegment,
    block: Option<Arc<Block>>,
    block_idx: usize,
    pos: usize,
    /// The record at `pos`, parsed once.
    cur: Option<Spans>,
}

pub(crate) enum Source<'a> {
    Mem(MemSource<'a>),
    Seg(SegSource),
}

impl<'a> Source<'a> {
    /// A memtable source positioned at the first key `>= lower`.
    pub(crate) fn memtable(mem: &'a Memtable, sorted: &'a [RecRef], lower: &[u8]) -> Self {
        let pos = mem.lower_bound(sorted, lower);
        for r in sorted.iter().skip(pos).take(PREFETCH_AHEAD) {
            mem.prefetch(*r);
        }
        let cur = sorted.get(pos).map(|r| mem.record(*r));
        Source::Mem(MemSource { mem, refs: std::borrow::Cow::Borrowed(sorted), pos, cur })
    }

    /// A memtable source over records of its own (a group), positioned at the first key
    /// `>= lower`.
    pub(crate) fn memtable_owned(mem: &'a Memtable, sorted: Vec<RecRef>, lower: &[u8]) -> Self {
        let pos = mem.lower_bound(&sorted, lower);
        let cur = sorted.get(pos).map(|r| mem.record(*r));
        Source::Mem(MemSource { mem, refs: std::borrow::Cow::Owned(sorted), pos, cur })
    }

    pub(crate) fn segment(seg: LiveSegment) -> Self {
        Source::Seg(SegSource { seg, block: None, block_idx: 0, pos: 0, cur: None })
    }

    #[inline]
    fn current(&self) -> Option<(RecordKind, &[u8], &[u8])> {
        match self {
            Source::Mem(m) => m.cur,
            Source::Seg(s) => {
                let (kind, k, v) = s.cur.as_ref()?;
                let data = s.block.as_deref()?.data();
                Some((*kind, data.get(k.clone())?, data.get(v.clone())?))
            }
        }
    }
}

/// Loads a block. Compressed blocks go through the cache when there is one; uncompressed
/// blocks are copied without it, so that a long scan does not push out what point reads need.
fn load(
    seg: &LiveSegment,
    idx: usize,
    cache: &mut Option<&mut BlockCache>,
    dec: &mut Decompressor,
) -> Result<Arc<Block>> {
    match cache {
        Some(c) if seg.seg.reader().is_compressed(idx) => c.get_or_load(&seg.seg, idx),
        _ => Ok(Arc::new(seg.seg.reader().read_block(idx, dec)?)),
    }
}
impl SegSource {
    fn seek(&mut self, lower: &[u8], cache: &mut Option<&mut BlockCache>, dec: &mut Decompressor) -> Result<()> {
        match self.seg.seg.reader().find_block(lower) {
            None => {
                self.block = None;
                self.cur = None;
            }
            Some(idx) => {
                let block = load(&self.seg, idx, cache, dec)?;
                self.pos = block.seek(lower);
                self.block_idx = idx;
                self.block = Some(block);
                self.settle(cache, dec)?;
            }
        }
        Ok(())
    }

    fn advance(&mut self, cache: &mut Option<&mut BlockCache>, dec: &mut Decompressor) -> Result<()> {
        if self.block.is_some() {
            self.pos += 1;
            self.settle(cache, dec)?;
        }
        Ok(())
    }

    /// Moves forward past the end of blocks and past masked records.
    fn settle(&mut self, cache: &mut Option<&mut BlockCache>, dec: &mut Decompressor) -> Result<()> {
        loop {
            self.cur = None;
            let Some(block) = &self.block else { return Ok(()) };
            if self.pos >= block.len() {
                self.block_idx += 1;
                if self.block_idx >= self.seg.seg.reader().block_count() {
                    self.block = None;
                    return Ok(());
                }
                self.block = Some(load(&self.seg, self.block_idx, cache, dec)?);
                self.pos = 0;
                continue;
            }
            self.cur = block.view().record_spans(self.pos);
            if self.seg.mask.is_empty() {
                return Ok(());
            }
            match key_group_of(block.record(self.pos).key) {
                Some(kg) if self.seg.masked(kg) => self.pos += 1,
                _ => return Ok(()),
            }
        }
    }
}

/// A resolved record: its kind, key and value.
pub(crate) type Resolved<'a> = (RecordKind, &'a [u8], &'a [u8]);

/// Up to this many sources, the smallest key is found by a pass over all of them; above, by a
/// binary heap.
const LINEAR_MERGE_MAX: usize = 8;

#[inline]
fn key_eq(a: &[u8], b: &[u8]) -> bool {
    key_cmp(a, b) == Ordering::Equal
}

/// Whether source `a`'s record goes before source `b`'s: smaller key, or the same key in a
/// newer source. Both have a record.
#[inline]
fn before(sources: &[Source<'_>], a: usize, b: usize) -> bool {
    match (sources[a].current(), sources[b].current()) {
        (Some((_, ka, _)), Some((_, kb, _))) => key_cmp(ka, kb).then(a.cmp(&b)) == Ordering::Less,
        (ka, _) => ka.is_some(),
    }
}

fn heap_push(sources: &[Source<'_>], heap: &mut Vec<usize>, i: usize) {
    heap.push(i);
    let mut at = heap.len() - 1;
    while at > 0 {
        let parent = (at - 1) / 2;
        if !before(sources, heap[at], heap[parent]) {
            break;
        }
        heap.swap(at, parent);
        at = parent;
    }
}

fn heap_pop(sources: &[Source<'_>], heap: &mut Vec<usize>) {
    let Some(last) = heap.pop() else { return };
    if heap.is_empty() {
        return;
    }
    heap[0] = last;
    let mut at = 0;
    loop {
        let (l, r) = (2 * at + 1, 2 * at + 2);
        let mut least = at;
        if l < heap.len() && before(sources, heap[l], heap[least]) {
            least = l;
        }
        if r < heap.len() && before(sources, heap[r], heap[least]) {
            least = r;
        }
        if least == at {
            return;
        }
        heap.swap(at, least);
        at = least;
    }
}

/// Merges sources (newest first) into one ordered stream of resolved records.
pub(crate) struct MergeIter<'a> {
    sources: Vec<Source<'a>>,
    upper: Option<Vec<u8>>,
    cache: Option<&'a mut BlockCache>,
    dec: Decompressor,
    /// The sources that held the last key returned, in source order (newest first).
    pending: Vec<usize>,
    /// With many sources: a binary min-heap of the sources not in `pending` that have a
    /// record, ordered by (key, source index). With few, empty (a linear pass is faster).
    heap: Vec<usize>,
    key: Vec<u8>,
    /// The value of the last record returned, when it is not read in place (`value_at`).
    value: Vec<u8>,
    /// The source whose current record holds the value of the last record returned.
    value_at: Option<usize>,
    operands: Vec<(usize, usize)>,
    operand_bytes: Vec<u8>,
    started: bool,
    lower: Vec<u8>,
    /// Whether `key` holds the last key returned.
    returned: bool,
    /// The kind of the last record returned.
    last_kind: RecordKind,
}

impl<'a> MergeIter<'a> {
    /// A merge over `sources` (newest first) of the keys in `[lower, upper)`.
    pub(crate) fn new(
        sources: Vec<Source<'a>>,
        lower: Vec<u8>,
        upper: Option<Vec<u8>>,
        cache: Option<&'a mut BlockCache>,
    ) -> Self {
        MergeIter {
            sources,
            upper,
            cache,
            dec: None,
            pending: Vec::new(),
            heap: Vec::new(),
            key: Vec::new(),
            value: Vec::new(),
            value_at: None,
            operands: Vec::new(),
            operand_bytes: Vec::new(),
            started: false,
            lower,
            returned: false,
            last_kind: RecordKind::Delete,
        }
    }

    fn start(&mut self) -> Result<()> {
        self.started = true;
        for s in &mut self.sources {
            if let Source::Seg(seg) = s {
                seg.seek(&self.lower, &mut self.cache, &mut self.dec)?;
            }
        }
        // Sources with nothing in range take no part in the merge: a short scan over many
        // segments then compares keys of only the few that hold some. The order of the rest
        // (newest first) is kept.
        let upper = self.upper.as_deref();
        self.sources.retain(|s| s.current().is_some_and(|(_, k, _)| upper.is_none_or(|u| k < u)));
        if self.sources.len() > LINEAR_MERGE_MAX {
            for i in 0..self.sources.len() {
                heap_push(&self.sources, &mut self.heap, i);
            }
        }
        Ok(())
    }

    /// Puts the sources holding the smallest key into `pending`, in source order.
    fn select(&mut self) {
        self.pending.clear();
        if self.sources.len() > LINEAR_MERGE_MAX {
            let Some(&top) = self.heap.first() else { return };
            let Some((_, key, _)) = self.sources[top].current() else { return };
            while let Some(&i) = self.heap.first() {
                if self.sources[i].current().is_none_or(|(_, k, _)| !key_eq(k, key)) {
                    break;
                }
                heap_pop(&self.sources, &mut self.heap);
                self.pending.push(i);
            }
            // Equal keys leave the heap in source order, since the order breaks ties by it.
            return;
        }
        let mut min: Option<(usize, &[u8])> = None;
        for (i, s) in self.sources.iter().enumerate() {
            if let Some((_, k, _)) = s.current() {
                if min.is_none_or(|(_, m)| key_cmp(k, m) == Ordering::Less) {
                    min = Some((i, k));
                }
            }
        }
        let Some((first, key)) = min else { return };
        for i in first..self.sources.len() {
            if self.sources[i].current().is_some_and(|(_, k, _)| key_eq(k, key)) {
                self.pending.push(i);
            }
        }
    }

    /// The next key with its resolved record: `Put` with the full value, `Delete`, or `Merge`
    /// with the concatenated operands when no source holds a base value.
    pub(crate) fn next_record(&mut self) -> Result<Option<Resolved<'_>>> {
        let Some(kind) = self.step()? else { return Ok(None) };
        Ok(Some((kind, &self.key, self.value())))
    }

    /// The record [`step`](Self::step) moved to.
    pub(crate) fn last(&self) -> Resolved<'_> {
        (self.last_kind, &self.key, self.value())
    }

    /// Moves to the next key and resolves its record ([`last`](Self::last)), returning its
    /// kind.
    pub(crate) fn step(&mut self) -> Result<Option<RecordKind>> {
        if !self.started {
            self.start()?;
        }
        for &i in &self.pending {
            match &mut self.sources[i] {
                Source::Mem(m) => m.advance(),
                Source::Seg(s) => s.advance(&mut self.cache, &mut self.dec)?,
            }
            if self.sources.len() > LINEAR_MERGE_MAX && self.sources[i].current().is_some() {
                heap_push(&self.sources, &mut self.heap, i);
            }
        }
        self.select();
        let Some(&first) = self.pending.first() else { return Ok(None) };
        let Some((_, key, _)) = self.sources[first].current() else { return Ok(None) };
        if let Some(upper) = &self.upper {
            if key_cmp(key, upper) != Ordering::Less {
                self.pending.clear();
                return Ok(None);
            }
        }
        // Keys ascend within every source, so the merge only moves forward. A segment that
        // breaks the order holds damaged data that its checksums did not catch: reported,
        // never returned (a caller relies on the range and order of what it gets). Memtables
        // are ordered by construction. (Past the first key, above the last one is above the
        // lower bound.)
        let out_of_order = if self.returned {
            key_cmp(key, &self.key) != Ordering::Greater
        } else {
            key_cmp(key, &self.lower) == Ordering::Less
        };
        if out_of_order {
            for &i in &self.pending {
                if let Source::Seg(s) = &self.sources[i] {
                    let reader = s.seg.seg.reader();
                    let offset = reader.block_offset(s.block_idx);
                    return Err(Error::corrupted(reader.path(), offset, Corruption::Malformed("key order")));
                }
            }
        }
        self.returned = true;
        self.key.clear();
        self.key.extend_from_slice(key);
        self.operands.clear();
        self.operand_bytes.clear();
        self.value_at = None;
        let mut resolved: Option<RecordKind> = None;
        for &i in &self.pending {
            if resolved.is_some() {
                break;
            }
            let Some((kind, _, v)) = self.sources[i].current() else { continue };
            match kind {
                RecordKind::Put => {
                    if self.operands.is_empty() {
                        // The whole value: read where it lies until the source moves on.
                        self.value_at = Some(i);
                    } else {
                        self.value.clear();
                        self.value.extend_from_slice(v);
                    }
                    resolved = Some(RecordKind::Put);
                }
                RecordKind::Delete => {
                    self.value.clear();
                    resolved = Some(if self.operands.is_empty() { RecordKind::Delete } else { RecordKind::Put });
                }
                RecordKind::Merge => {
                    let start = self.operand_bytes.len();
                    self.operand_bytes.extend_from_slice(v);
                    self.operands.push((start, v.len()));
                }
            }
        }
        let kind = match resolved {
            Some(kind) => kind,
            None => {
                self.value.clear();
                RecordKind::Merge
            }
        };
        // Operands were gathered newest first; the value is base ++ oldest ++ ... ++ newest.
        for &(start, len) in self.operands.iter().rev() {
            self.value.extend_from_slice(&self.operand_bytes[start..start + len]);
        }
        self.last_kind = kind;
        Ok(Some(kind))
    }

    /// The tag of the newest segment that held the last record returned (`None` for a
    /// memtable): the tag of its writers.
    pub(crate) fn newest_schema(&self) -> Option<&Arc<crate::format::SchemaTag>> {
        match self.sources.get(*self.pending.first()?)? {
            Source::Seg(s) => Some(&s.seg.schema),
            Source::Mem(_) => None,
        }
    }

    /// The value of the last record returned.
    fn value(&self) -> &[u8] {
        match self.value_at {
            Some(i) => self.sources[i].current().map_or(&[], |(_, _, v)| v),
            None => &self.value,
        }
    }
}

/// An ordered scan over a store's live keys: `while let Some((key, value)) = it.next_entry()?`.
pub struct StoreIter<'a> {
    inner: Inner<'a>,
}

enum Inner<'a> {
    Merge(Box<MergeIter<'a>>),
    /// The records of one memtable, nothing else to merge: read in place.
    Direct {
        mem: &'a Memtable,
        refs: &'a [RecRef],
        pos: usize,
        cur: (&'a [u8], &'a [u8]),
    },
}

impl<'a> StoreIter<'a> {
    pub(crate) fn new(inner: MergeIter<'a>) -> Self {
        StoreIter { inner: Inner::Merge(Box::new(inner)) }
    }

    /// A scan of sorted records of one memtable when no other source holds any key in range.
    pub(crate) fn direct(mem: &'a Memtable, refs: &'a [RecRef]) -> Self {
        StoreIter { inner: Inner::Direct { mem, refs, pos: 0, cur: (&[], &[]) } }
    }

    /// The next live key and its value, in key order.
    #[inline]
    pub fn next_entry(&mut self) -> Result<Option<(&[u8], &[u8])>> {
        match &mut self.inner {
            Inner::Merge(inner) => loop {
                // Re-borrow per round so a skipped delete does not hold the borrow.
                let kind = match inner.next_record()? {
                    None => return Ok(None),
                    Some((kind, _, _)) => kind,
                };
                if kind != RecordKind::Delete {
                    return Ok(Some((&inner.key, inner.value())));
                }
            },
            Inner::Direct { mem, refs, pos, cur } => {
                while let Some(&r) = refs.get(*pos) {
                    *pos += 1;
                    if let Some(&next) = refs.get(*pos + PREFETCH_AHEAD) {
                        mem.prefetch(next);
                    }
                    // With nothing older to meet, a merge record is the whole value.
                    let (kind, k, v) = mem.record(r);
                    if kind != RecordKind::Delete {
                        *cur = (k, v);
                        return Ok(Some(*cur));
                    }
                }
                Ok(None)
            }
        }
    }

    /// The entry the last [`next_entry`](Self::next_entry) returned.
    #[inline]
    pub(crate) fn current(&self) -> (&[u8], &[u8]) {
        match &self.inner {
            Inner::Merge(inner) => (&inner.key, inner.value()),
            Inner::Direct { cur, .. } => *cur,
        }
    }

    /// Collects the rest of the scan (convenient in tests and tools).
    pub fn collect_vec(mut self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        while let Some((k, v)) = self.next_entry()? {
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_cmp_orders_like_byte_strings() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..200_000 {
            let (la, lb) = ((next() % 20) as usize, (next() % 20) as usize);
            let lb = if next() % 2 == 0 { la } else { lb };
            // Few distinct bytes and a shared start, so that keys often agree far into them.
            let shared = (next() % 17) as usize;
            let a: Vec<u8> = (0..la).map(|i| if i < shared { 7 } else { (next() % 3) as u8 }).collect();
            let b: Vec<u8> = (0..lb).map(|i| if i < shared { 7 } else { (next() % 3) as u8 }).collect();
            assert_eq!(key_cmp(&a, &b), a.cmp(&b), "{a:?} {b:?}");
            assert_eq!(key_eq(&a, &b), a == b, "{a:?} {b:?}");
        }
    }
}
