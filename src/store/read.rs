//! Reads: point reads through every layer of the store, newest first, and ordered scans.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::iter::{MergeIter, Source, StoreIter};
use super::segment::LiveSegment;
use super::{table, Store};
use crate::error::Result;
use crate::format::segment::key_group_of;
use crate::format::{key_hash64, RecordKind, SchemaTag};
use crate::keygroup::KeyGroupRange;

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

impl Store {
    /// Installs finished background work before a read. Without it a store that is only
    /// read would keep serving from the segments a finished compaction replaced, and start
    /// no further compaction, however many segments a burst of writes left behind.
    #[inline]
    fn before_read(&mut self) {
        if self.bg.ready.load(Ordering::Acquire) {
            self.poll_done(false);
        }
    }

    /// The value of `key`, if it has one.
    #[inline(always)]
    pub fn get(&mut self, key: &[u8]) -> Result<Option<&[u8]>> {
        self.get_hashed(self.active.hash(key), key)
    }

    /// [`get`](Self::get) of a key whose index hash ([`key_hash`](Self::key_hash)) is known.
    #[inline(always)]
    pub(crate) fn get_hashed(&mut self, h: u64, key: &[u8]) -> Result<Option<&[u8]>> {
        self.before_read();
        self.get_now(h, key)
    }

    /// [`get_hashed`](Self::get_hashed) in the store's layers as they are, without installing
    /// finished background work first.
    #[inline(always)]
    fn get_now(&mut self, h: u64, key: &[u8]) -> Result<Option<&[u8]>> {
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

    pub(super) fn get_slow(&mut self, h: u64, key: &[u8]) -> Result<Option<&[u8]>> {
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
            // The region flushed last holds what the newest segment holds: a value or a
            // deletion found there is the answer; merge operands are left to the segment
            // (which holds them too), so that none is counted twice.
            if let Some(r) = &self.recent {
                if let Some((kind, v)) = r.mem.get(h, key) {
                    if kind != RecordKind::Merge {
                        base = note(kind, v, &mut self.value, &mut self.operands, &mut self.operand_spans);
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

    /// The value of `key`, if it has one, and the tag of the serializer versions that wrote
    /// it (those of its newest record).
    pub fn get_with_schema(&mut self, key: &[u8]) -> Result<Option<(&[u8], Arc<SchemaTag>)>> {
        // Background work is installed once, before the lookups: a compaction installed
        // between them would give the value of its output with the tag of its input.
        self.before_read();
        match self.schema_of(key)? {
            None | Some((_, Newest::Deleted)) => Ok(None),
            Some((tag, Newest::Value)) => Ok(Some((&self.value[..], tag))),
            Some((tag, Newest::Resolve)) => {
                let h = self.active.hash(key);
                Ok(self.get_now(h, key)?.map(|v| (v, tag)))
            }
        }
    }

    /// The tag of the newest layer that holds a record of `key`, in the layers as they are.
    /// When that record is a segment's value, it is copied into `self.value` on the way
    /// ([`Newest::Value`]), so the common read of an old record walks the segments once.
    fn schema_of(&mut self, key: &[u8]) -> Result<Option<(Arc<SchemaTag>, Newest)>> {
        let h = self.active.hash(key);
        if self.active.lookup(h, key).is_some() {
            return Ok(Some((self.schema.clone(), Newest::Resolve)));
        }
        if let Some(f) = self.frozen.iter().rev().find(|f| f.mem.lookup(h, key).is_some()) {
            return Ok(Some((f.schema.clone(), Newest::Resolve)));
        }
        let kg = key_group_of(key);
        let fh = key_hash64(key);
        for s in &self.segments {
            if kg.is_some_and(|kg| s.masked(kg)) || !s.seg.reader().may_contain_hash(fh) {
                continue;
            }
            let reader = s.seg.reader();
            let Some(idx) = reader.find_block(key) else { continue };
            let value = &mut self.value;
            let mut keep = |kind: RecordKind, v: &[u8]| match kind {
                RecordKind::Put => {
                    value.clear();
                    value.extend_from_slice(v);
                    Some(Newest::Value)
                }
                RecordKind::Delete => Some(Newest::Deleted),
                RecordKind::Merge => Some(Newest::Resolve),
            };
            let found = match reader.mapped_block(idx)? {
                Some(view) => view.get(key).and_then(|rec| keep(rec.kind, rec.value)),
                None => self.cache.get_or_load(&s.seg, idx)?.get(key).and_then(|rec| keep(rec.kind, rec.value)),
            };
            match found {
                None => continue,
                Some(newest) => return Ok(Some((s.schema.clone(), newest))),
            }
        }
        Ok(None)
    }
}

/// What [`Store::schema_of`] found of the newest record of a key.
enum Newest {
    /// A value, copied into the store's value buffer.
    Value,
    /// A deletion: the key has no value.
    Deleted,
    /// A record whose value needs the full lookup (in a memtable, or merge operands).
    Resolve,
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

/// [`scan_segments`], with the records of older writers converted by `migrations` to the
/// present ones.
pub(crate) fn scan_segments_migrated(
    segments: &[LiveSegment],
    range: KeyGroupRange,
    migrations: &super::migrate::Migrations,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    if migrations.states.is_empty() {
        return scan_segments(segments, range, f);
    }
    if range.is_empty() {
        return Ok(());
    }
    let sources = segments.iter().cloned().map(Source::segment).collect();
    let lower = range.start().to_be_bytes().to_vec();
    let upper = range.end().checked_add(1).map(|e| e.to_be_bytes().to_vec());
    let mut it = MergeIter::new(sources, lower, upper, None);
    let mut converted = Vec::new();
    while let Some(kind) = it.step()? {
        if kind == RecordKind::Delete {
            continue;
        }
        let (_, k, v) = it.last();
        match it.newest_schema() {
            Some(tag) if migrations.convert(tag, k, v, &mut converted)? => f(k, &converted)?,
            _ => f(k, v)?,
        }
    }
    Ok(())
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

    #[test]
    fn prefix_successor_cases() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
