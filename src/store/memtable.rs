//! The mutable in-memory region.
//!
//! Records live in an arena of large chunks; a hash index of `(hash, record)` slots ([`HashIndex`])
//! indexes them, so a point access is one hash probe and one read of the arena. Each record keeps its
//! key and, inline behind it, room for its value, which is updated in place while it fits; a
//! value that outgrows its room moves to a larger out-of-line region (growing geometrically,
//! so repeated appends stay amortized O(1)).
//!
//! Sorted order is produced lazily and kept as a few sorted runs: keys inserted since the last
//! ordered view are sorted into a new run when the next view is asked for, and runs are merged
//! like the digits of a binary counter (a run is merged into the one before it once it is at
//! least half its size). So a scan after a few writes sorts only those writes, each key takes
//! part in O(log n) merges over the memtable's life, and a scan seeks in O(log n) runs.
//!
//! Keys written with a group (the map entries of one key and namespace share their key's first
//! `group_len` bytes) are also linked into a list per group, whose head a second hash index
//! finds ([`GroupIndex`]); so a group is listed without a sorted view and without touching
//! other keys. That index also counts each group's live records (those that are not deletes),
//! kept as records are written, so whether a group is empty is one probe of it.
//!
//! Record layout in the arena (native to this process, never written to disk), kept small so
//! that more of a memtable stays in the CPU caches:
//! `flags u8 | key_len u16 | value_len u32 | value_cap u32 | [group_len u16 | next_in_group u64]
//! | key | value room`. The flags hold the record kind, whether the record is in a group (then
//! the bracketed part is there) and whether its value lives out of line (then the first 8 bytes
//! of the value room hold its reference; the room is never smaller than that).

use super::groups::{Group, GroupIndex};
use super::table::{hash_key, key_eq, prefetch, word, HashIndex};

use crate::format::RecordKind;

const KIND_OFF: usize = 0;
const KLEN_OFF: usize = KIND_OFF + 1;
const VLEN_OFF: usize = KLEN_OFF + 2;
const VCAP_OFF: usize = VLEN_OFF + 4;
const BASE_LEN: usize = VCAP_OFF + 4;
/// In a grouped record, right after the base header.
const GLEN_OFF: usize = BASE_LEN;
const NEXT_OFF: usize = GLEN_OFF + 2;
const GROUPED_LEN: usize = NEXT_OFF + 8;
/// The room every value gets, so that an out-of-line reference fits in it.
const MIN_ROOM: usize = 8;
/// Flag: the value lives out of line at the reference in the value room.
const EXTERNAL: u8 = 0x80;
/// Flag: the record is linked into a group.
const GROUPED: u8 = 0x40;
const KIND_MASK: u8 = 0x03;
/// A `value_ref` that points nowhere.
const NO_REF: u64 = u64::MAX;

/// Where a record's key starts, from its flags.
#[inline]
fn key_offset(flags: u8) -> usize {
    if flags & GROUPED != 0 {
        GROUPED_LEN
    } else {
        BASE_LEN
    }
}

/// Whether record `h` is in the group `prefix` (then, as the group index asks it, its head).
#[inline]
fn heads_group(chunks: &[Chunk], h: RecRef, prefix: &[u8]) -> bool {
    let c = &chunks[(h >> 32) as usize];
    let off = (h & 0xffff_ffff) as usize;
    if c[off + KIND_OFF] & GROUPED == 0 {
        return false;
    }
    let hdr = &c[off..off + GROUPED_LEN];
    let glen = u16::from_le_bytes([hdr[GLEN_OFF], hdr[GLEN_OFF + 1]]) as usize;
    glen == prefix.len() && klen_at(hdr) >= glen && key_eq(&c[off + GROUPED_LEN..off + GROUPED_LEN + glen], prefix)
}

/// The first 8 bytes of `suffix` as a big-endian number, zero-padded: its order is the
/// bytes' order wherever the words differ.
#[inline]
fn suffix_word(suffix: &[u8]) -> u64 {
    match suffix.first_chunk::<8>() {
        Some(w) => u64::from_be_bytes(*w),
        None => (key_prefix16(suffix) >> 64) as u64,
    }
}

/// A record's place in the arena: chunk index in the high 32 bits, offset in the low 32.
pub(crate) type RecRef = u64;

pub(crate) struct Memtable {
    chunks: Vec<Chunk>,
    chunk_size: usize,
    current: usize,
    used: usize,
    arena_bytes: usize,
    table: HashIndex,
    /// Group prefix -> the group's newest record and its count of live records.
    groups: GroupIndex,
    /// Sorted runs, oldest (and largest) first; every record is in exactly one run or in
    /// `pending`.
    runs: Vec<Vec<RecRef>>,
    /// The references the runs have room for (kept, so that the check of a write against the
    /// budget does not walk the runs).
    run_refs: usize,
    /// Records inserted since the last ordered view, unsorted.
    pending: Vec<RecRef>,
}

impl Memtable {
    /// An empty memtable whose arena grows in chunks of `chunk_size` bytes.
    pub(crate) fn new(chunk_size: usize) -> Self {
        Memtable {
            chunks: Vec::new(),
            chunk_size,
            current: 0,
            used: chunk_size,
            arena_bytes: 0,
            table: HashIndex::new(),
            groups: GroupIndex::new(),
            runs: Vec::new(),
            run_refs: 0,
            pending: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        hash_key(key)
    }

    /// The number of distinct keys (including deletes).
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Heap memory held: arena chunks, hash table and the ordered views.
    pub(crate) fn memory(&self) -> usize {
        let refs = self.run_refs + self.pending.capacity();
        self.arena_bytes + self.table.memory() + self.groups.memory() + refs * std::mem::size_of::<RecRef>()
    }

    // ---- arena ----

    fn alloc(&mut self, len: usize) -> RecRef {
        if len > self.chunk_size / 4 {
            // Large records get a chunk of their own; the open chunk stays open.
            self.chunks.push(Chunk::new(len));
            self.arena_bytes += len;
            return ((self.chunks.len() - 1) as u64) << 32;
        }
        if self.used + len > self.chunk_size {
            self.chunks.push(Chunk::new(self.chunk_size));
            self.arena_bytes += self.chunk_size;
            self.current = self.chunks.len() - 1;
            self.used = 0;
        }
        let r = ((self.current as u64) << 32) | self.used as u64;
        self.used += len;
        r
    }

    #[inline]
    fn bytes(&self, r: RecRef, len: usize) -> &[u8] {
        let chunk = &self.chunks[(r >> 32) as usize];
        let off = (r & 0xffff_ffff) as usize;
        &chunk[off..off + len]
    }

    #[inline]
    fn bytes_mut(&mut self, r: RecRef, len: usize) -> &mut [u8] {
        let chunk = &mut self.chunks[(r >> 32) as usize];
        let off = (r & 0xffff_ffff) as usize;
        &mut chunk[off..off + len]
    }

    #[inline]
    fn header(&self, r: RecRef) -> Header {
        let h = self.bytes(r, BASE_LEN);
        let kind = h[KIND_OFF];
        let klen = klen_at(h);
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]) as usize;
        let (vlen, vcap) = (u32_at(VLEN_OFF), u32_at(VCAP_OFF));
        let key_off = key_offset(kind);
        let vref = if kind & EXTERNAL != 0 {
            let mut b = [0u8; 8];
            b.copy_from_slice(self.bytes(r + (key_off + klen) as u64, 8));
            u64::from_le_bytes(b)
        } else {
            NO_REF
        };
        Header { kind, klen, vlen, vcap, vref, key_off }
    }

    /// Writes the base header (and the out-of-line reference); the group link stays as it is.
    fn write_header(&mut self, r: RecRef, h: &Header) {
        let b = self.bytes_mut(r, BASE_LEN);
        b[KIND_OFF] = h.kind;
        b[KLEN_OFF..KLEN_OFF + 2].copy_from_slice(&(h.klen as u16).to_le_bytes());
        b[VLEN_OFF..VLEN_OFF + 4].copy_from_slice(&(h.vlen as u32).to_le_bytes());
        b[VCAP_OFF..VCAP_OFF + 4].copy_from_slice(&(h.vcap as u32).to_le_bytes());
        if h.kind & EXTERNAL != 0 {
            let at = r + (h.key_off + h.klen) as u64;
            self.bytes_mut(at, 8).copy_from_slice(&h.vref.to_le_bytes());
        }
    }

    #[inline]
    fn key_of(&self, r: RecRef) -> &[u8] {
        let chunk = &self.chunks[(r >> 32) as usize];
        let off = (r & 0xffff_ffff) as usize;
        let h = &chunk[off..off + BASE_LEN];
        let klen = klen_at(h);
        let start = off + key_offset(h[KIND_OFF]);
        &chunk[start..start + klen]
    }

    /// Where the value is.
    #[inline]
    fn value_loc(r: RecRef, h: &Header) -> RecRef {
        if h.kind & EXTERNAL != 0 {
            h.vref
        } else {
            r + (h.key_off + h.klen) as u64
        }
    }

    /// Starts fetching the record behind `r` into the cache.
    #[inline]
    pub(crate) fn prefetch(&self, r: RecRef) {
        if let Some(chunk) = self.chunks.get((r >> 32) as usize) {
            if let Some(bytes) = chunk.get((r & 0xffff_ffff) as usize..) {
                prefetch(bytes);
            }
        }
    }

    /// Starts fetching up to `lines` cache lines (at most 16) in front of the record behind
    /// `r`. A group's records, linked newest first, usually lie one after another in the arena
    /// (a map's entries written together), older ones before newer ones: fetching them all
    /// at once overlaps misses that a walk of the links would take one after another.
    #[inline]
    fn prefetch_below(&self, r: RecRef, lines: usize) {
        if let Some(chunk) = self.chunks.get((r >> 32) as usize) {
            let at = (r & 0xffff_ffff) as usize;
            for k in 1..=lines.min(16) {
                match at.checked_sub(k * 64).and_then(|line| chunk.get(line..)) {
                    Some(bytes) => prefetch(bytes),
                    None => break,
                }
            }
        }
    }

    /// Like [`prefetch`](Self::prefetch), for a record about to be read whole: also the next
    /// two cache lines, where the rest of a record of up to about 190 bytes lies.
    pub(crate) fn prefetch_whole(&self, r: RecRef) {
        if let Some(chunk) = self.chunks.get((r >> 32) as usize) {
            let at = (r & 0xffff_ffff) as usize;
            for line in [at, at + 64, at + 128] {
                if let Some(bytes) = chunk.get(line..) {
                    prefetch(bytes);
                }
            }
        }
    }

    /// The record behind `r`: kind, key and value.
    #[inline]
    pub(crate) fn record(&self, r: RecRef) -> (RecordKind, &[u8], &[u8]) {
        // From one view of the record's chunk; only an out-of-line value needs another.
        let rec = &self.chunks[(r >> 32) as usize][(r & 0xffff_ffff) as usize..];
        let flags = rec[KIND_OFF];
        let klen = klen_at(rec);
        let vlen = vlen_at(rec);
        let at = key_offset(flags);
        let key = &rec[at..at + klen];
        let value = if flags & EXTERNAL == 0 {
            &rec[at + klen..at + klen + vlen]
        } else {
            let b = &rec[at + klen..at + klen + 8];
            self.bytes(word(b), vlen)
        };
        (kind_of(flags), key, value)
    }

    /// A grouped record's key and the next (older) record of its group, from one view of it.
    #[inline]
    fn key_and_next(&self, r: RecRef) -> (&[u8], RecRef) {
        let rec = &self.chunks[(r >> 32) as usize][(r & 0xffff_ffff) as usize..];
        let flags = rec[KIND_OFF];
        let klen = klen_at(rec);
        let at = key_offset(flags);
        let next = if flags & GROUPED == 0 {
            NO_REF
        } else {
            let b = &rec[NEXT_OFF..NEXT_OFF + 8];
            word(b)
        };
        (&rec[at..at + klen], next)
    }

    // ---- point operations ----

    /// Fetches what a write of the key hashed to `hash` will probe first: its index slot and,
    /// for a grouped key (`group_hash` not 0), its group's.
    #[inline]
    pub(crate) fn prefetch_write(&self, hash: u64, group_hash: u64) {
        self.table.prefetch(hash);
        if group_hash != 0 {
            self.groups.prefetch(group_hash);
        }
    }

    /// Fetches the record the slot of `hash` names (which an earlier
    /// [`prefetch_write`](Self::prefetch_write) brought into the cache).
    /// Whether the slot named a record.
    #[inline]
    pub(crate) fn prefetch_record(&self, hash: u64) -> bool {
        match self.table.first_with(hash) {
            Some(r) => {
                self.prefetch(r);
                true
            }
            None => false,
        }
    }

    /// Fetches the slot of the group hashed to `hash`.
    #[inline]
    pub(crate) fn prefetch_group(&self, hash: u64) {
        self.groups.prefetch(hash);
    }

    /// Makes room in the index for `additional` more keys.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.table.reserve(additional);
    }

    /// The record holding `key`, if the memtable has one.
    #[inline(always)]
    pub(crate) fn find(&self, hash: u64, key: &[u8]) -> Option<RecRef> {
        self.table.find(
            hash,
            #[inline(always)]
            |rec| key_eq(self.key_of(rec), key),
        )
    }

    /// The kind of the record for `key` and where its value is (see [`slice`](Self::slice)).
    #[inline(always)]
    pub(crate) fn lookup(&self, hash: u64, key: &[u8]) -> Option<(RecordKind, RecRef, usize)> {
        self.table.find_map(
            hash,
            #[inline(always)]
            |r| self.probe(r, key),
        )
    }

    /// What [`lookup`](Self::lookup) returns, if record `r` holds `key`: the record's header
    /// is read once, from one view of its chunk.
    #[inline(always)]
    fn probe(&self, r: RecRef, key: &[u8]) -> Option<(RecordKind, RecRef, usize)> {
        let chunk: &[u8] = self.chunks.get((r >> 32) as usize)?;
        let rec = chunk.get((r & 0xffff_ffff) as usize..)?;
        let h = rec.get(..BASE_LEN)?;
        let flags = h[KIND_OFF];
        let klen = klen_at(h);
        let vlen = vlen_at(h);
        let key_off = key_offset(flags);
        if klen != key.len() || !key_eq(rec.get(key_off..key_off + klen)?, key) {
            return None;
        }
        let at = key_off + klen;
        let loc = if flags & EXTERNAL != 0 {
            let b = rec.get(at..at + 8)?;
            word(b)
        } else {
            r + at as u64
        };
        Some((kind_of(flags), loc, vlen))
    }

    /// The bytes at a location returned by [`lookup`](Self::lookup).
    #[inline]
    pub(crate) fn slice(&self, loc: RecRef, len: usize) -> &[u8] {
        self.bytes(loc, len)
    }

    /// The newest record for `key`, if the memtable has one.
    #[inline]
    pub(crate) fn get(&self, hash: u64, key: &[u8]) -> Option<(RecordKind, &[u8])> {
        self.find(hash, key).map(|r| {
            let (kind, _, value) = self.record(r);
            (kind, value)
        })
    }

    fn insert_new(&mut self, hash: u64, key: &[u8], kind: RecordKind, value: &[u8], room: usize, group: usize) {
        let room = room.max(MIN_ROOM);
        let flags = kind as u8 | if group > 0 { GROUPED } else { 0 };
        let key_off = key_offset(flags);
        let r = self.alloc(key_off + key.len() + room);
        let h = Header { kind: flags, klen: key.len(), vlen: value.len(), vcap: room, vref: NO_REF, key_off };
        self.write_header(r, &h);
        if group > 0 {
            let next = self.link(key, group, r, kind != RecordKind::Delete);
            let b = self.bytes_mut(r, GROUPED_LEN);
            b[GLEN_OFF..GLEN_OFF + 2].copy_from_slice(&(group as u16).to_le_bytes());
            b[NEXT_OFF..NEXT_OFF + 8].copy_from_slice(&next.to_le_bytes());
        }
        let b = self.bytes_mut(r + key_off as u64, key.len() + value.len());
        b[..key.len()].copy_from_slice(key);
        b[key.len()..].copy_from_slice(value);
        self.table.insert(hash, r);
        self.pending.push(r);
    }

    /// The group length and the next record of a record's group (0 and nothing if it has none).
    #[inline]
    fn group_link(&self, r: RecRef) -> (usize, RecRef) {
        let h = self.bytes(r, BASE_LEN);
        if h[KIND_OFF] & GROUPED == 0 {
            return (0, NO_REF);
        }
        let h = self.bytes(r, GROUPED_LEN);
        let glen = u16::from_le_bytes([h[GLEN_OFF], h[GLEN_OFF + 1]]) as usize;
        let mut next = [0u8; 8];
        next.copy_from_slice(&h[NEXT_OFF..NEXT_OFF + 8]);
        (glen, u64::from_le_bytes(next))
    }

    /// Makes `r` the head of its group, counted live if `live`; returns the previous head.
    fn link(&mut self, key: &[u8], group: usize, r: RecRef, live: bool) -> RecRef {
        let prefix = &key[..group];
        let chunks = &self.chunks;
        self.groups.link(hash_key(prefix), prefix, r, live, |h| heads_group(chunks, h, prefix)).unwrap_or(NO_REF)
    }

    /// What the group index holds of group `prefix`.
    #[inline]
    fn group_entry(&self, prefix: &[u8]) -> Option<Group> {
        self.groups.find(hash_key(prefix), prefix, |h| heads_group(&self.chunks, h, prefix))
    }

    /// The newest record of group `prefix`.
    #[inline]
    fn group_head(&self, prefix: &[u8]) -> Option<RecRef> {
        self.group_entry(prefix).map(|g| g.head)
    }

    /// The records of group `prefix` (keys written with that group), in key order.
    pub(crate) fn group(&self, prefix: &[u8]) -> Vec<RecRef> {
        let mut out = Vec::new();
        self.group_into(prefix, &mut out);
        out
    }

    /// [`group`](Self::group) into a buffer of the caller's (cleared first).
    pub(crate) fn group_into(&self, prefix: &[u8], out: &mut Vec<RecRef>) {
        out.clear();
        let n = prefix.len();
        let Some(group) = self.group_entry(prefix) else { return };
        let mut next = group.head;
        self.prefetch_below(next, group.live as usize);
        // The records are sorted on the first 8 bytes of each key's suffix (what follows the
        // shared prefix), held in `out` beside each reference, so that most comparisons are
        // of integers; equal words compare the whole suffixes. Linked newest first, they go
        // in oldest first: keys written in order are then sorted already.
        while next != NO_REF {
            let (key, older) = self.key_and_next(next);
            out.push(suffix_word(key.get(n..).unwrap_or_default()));
            out.push(next);
            next = older;
        }
        let (pairs, _) = out.as_chunks_mut::<2>();
        pairs.reverse();
        if !pairs.is_sorted_by(|a, b| a[0] < b[0]) {
            // Integers only; equal words (suffixes that share their first 8 bytes) are put in
            // order of their whole suffixes after.
            pairs.sort_unstable();
            if pairs.windows(2).any(|w| w[0][0] == w[1][0]) {
                let suffix = |r: RecRef| self.key_of(r).get(n..).unwrap_or_default();
                pairs.sort_by(|a, b| a[0].cmp(&b[0]).then_with(|| suffix(a[1]).cmp(suffix(b[1]))));
            }
        }
        let len = pairs.len();
        for i in 0..len {
            out[i] = out[2 * i + 1];
        }
        out.truncate(len);
    }

    /// The records of group `prefix` in `out` (cleared first), unordered, if it has at most
    /// `limit`; `false` (and `out` unspecified) if it has more.
    pub(crate) fn small_group(&self, prefix: &[u8], limit: usize, out: &mut Vec<RecRef>) -> bool {
        out.clear();
        let mut next = self.group_head(prefix).unwrap_or(NO_REF);
        while next != NO_REF {
            if out.len() == limit {
                return false;
            }
            out.push(next);
            next = self.group_link(next).1;
        }
        true
    }

    /// Sets `key` (of the group of its first `group` bytes, whose records are all in `known`)
    /// to `value`, without a lookup in the index of all keys for a key of `known`; a new
    /// record joins `known`. As [`put`](Self::put), writes nothing and returns the group length
    /// the key is held with if that is not `group`.
    pub(crate) fn put_in_known_group(
        &mut self,
        known: &mut Vec<RecRef>,
        key: &[u8],
        value: &[u8],
        group: usize,
    ) -> Result<(), usize> {
        if let Some(r) = known.iter().copied().find(|&r| key_eq(self.key_of(r), key)) {
            self.overwrite(r, RecordKind::Put, value);
            return Ok(());
        }
        let hash = self.hash(key);
        // Not in the group: held otherwise (a misuse), or new.
        if let Some(r) = self.find(hash, key) {
            return Err(self.group_link(r).0);
        }
        self.insert_new(hash, key, RecordKind::Put, value, value.len(), group);
        if let Some(&r) = self.pending.last() {
            known.push(r);
        }
        Ok(())
    }

    /// Whether group `prefix` has a record other than a delete: one probe of the group
    /// index, which counts them.
    #[inline]
    pub(crate) fn group_has_live(&self, prefix: &[u8]) -> bool {
        self.group_entry(prefix).is_some_and(|g| g.live > 0)
    }

    /// Sets the value of `key`, replacing what the memtable had. A new key joins the group of
    /// its first `group` bytes (0: none). A write with a group (`group` > 0) of a key held
    /// with another group length (0: none) writes nothing and returns that length: the key
    /// would be missing from its group's list and count.
    #[inline]
    pub(crate) fn put(&mut self, hash: u64, key: &[u8], value: &[u8], group: usize) -> Result<(), usize> {
        match self.find(hash, key) {
            Some(r) => {
                self.check_grouping(r, group)?;
                self.overwrite(r, RecordKind::Put, value);
            }
            None => self.insert_new(hash, key, RecordKind::Put, value, value.len(), group),
        }
        Ok(())
    }

    /// Records a delete of `key` (a new record joins the group of its first `group` bytes);
    /// refused as [`put`](Self::put) refuses.
    pub(crate) fn delete(&mut self, hash: u64, key: &[u8], group: usize) -> Result<(), usize> {
        let group_hash = if group > 0 { hash_key(&key[..group]) } else { 0 };
        self.delete_hashed(hash, key, group, group_hash)
    }

    /// [`delete`](Self::delete), given the index hash of the group prefix (unused without a
    /// group). A live record becomes a delete in place, from one view of its header, and is
    /// counted out of its group; a delete stays as it is.
    pub(crate) fn delete_hashed(&mut self, hash: u64, key: &[u8], group: usize, group_hash: u64) -> Result<(), usize> {
        let Some(r) = self.find(hash, key) else {
            self.insert_new(hash, key, RecordKind::Delete, &[], 0, group);
            return Ok(());
        };
        let (chunk, off) = ((r >> 32) as usize, (r & 0xffff_ffff) as usize);
        let rec = &mut self.chunks[chunk][off..];
        let flags = rec[KIND_OFF];
        let held =
            if flags & GROUPED == 0 { 0 } else { usize::from(u16::from_le_bytes([rec[GLEN_OFF], rec[GLEN_OFF + 1]])) };
        if group > 0 && held != group {
            return Err(held);
        }
        if kind_of(flags) == RecordKind::Delete {
            return Ok(());
        }
        rec[KIND_OFF] = (flags & !KIND_MASK) | RecordKind::Delete as u8;
        rec[VLEN_OFF..VLEN_OFF + 4].copy_from_slice(&0u32.to_le_bytes());
        if held > 0 {
            let (chunks, groups) = (&self.chunks, &mut self.groups);
            let prefix = &key[..held];
            let gh = if group > 0 { group_hash } else { hash_key(prefix) };
            groups.count(gh, prefix, false, |h| heads_group(chunks, h, prefix));
        }
        Ok(())
    }

    /// Whether a write with group length `group` may change record `r`: any write without a
    /// group may, one with a group only if `r` was written with the same.
    #[inline]
    fn check_grouping(&self, r: RecRef, group: usize) -> Result<(), usize> {
        if group == 0 {
            return Ok(());
        }
        match self.group_link(r).0 {
            held if held == group => Ok(()),
            held => Err(held),
        }
    }

    /// Appends `operand` to the value of `key`. With no record here, the memtable keeps a
    /// merge record that the store resolves against older data.
    pub(crate) fn merge(&mut self, hash: u64, key: &[u8], operand: &[u8]) {
        self.merge_at(self.find(hash, key), hash, key, operand);
    }

    /// The kind of record `r` (from [`find`](Self::find)) and the length of its value.
    #[inline]
    pub(crate) fn kind_and_len(&self, r: RecRef) -> (RecordKind, usize) {
        let h = self.bytes(r, BASE_LEN);
        (kind_of(h[KIND_OFF]), vlen_at(h))
    }

    /// [`merge`](Self::merge), given what [`find`](Self::find) returned for `key`.
    pub(crate) fn merge_at(&mut self, found: Option<RecRef>, hash: u64, key: &[u8], operand: &[u8]) {
        let Some(r) = found else {
            self.insert_new(hash, key, RecordKind::Merge, operand, operand.len(), 0);
            return;
        };
        let mut h = self.header(r);
        match kind_of(h.kind) {
            RecordKind::Delete => self.overwrite(r, RecordKind::Put, operand),
            kind => {
                let new_len = h.vlen + operand.len();
                let cap_before = h.vcap;
                if new_len > h.vcap {
                    // Grow geometrically so repeated appends stay amortized O(1).
                    let cap = new_len.max(h.vcap * 2).max(16);
                    let loc = self.alloc(cap);
                    let old = Self::value_loc(r, &h);
                    let (vlen, src_chunk, src_off) = (h.vlen, (old >> 32) as usize, (old & 0xffff_ffff) as usize);
                    let dst_chunk = (loc >> 32) as usize;
                    let dst_off = (loc & 0xffff_ffff) as usize;
                    if src_chunk == dst_chunk {
                        self.chunks[src_chunk].copy_within(src_off..src_off + vlen, dst_off);
                    } else {
                        let (src, dst) = two_mut(&mut self.chunks, src_chunk, dst_chunk);
                        dst[dst_off..dst_off + vlen].copy_from_slice(&src[src_off..src_off + vlen]);
                    }
                    h.vref = loc;
                    h.vcap = cap;
                    h.kind = (h.kind & !KIND_MASK) | kind as u8 | EXTERNAL;
                }
                let at = Self::value_loc(r, &h) + h.vlen as u64;
                copy_short(self.bytes_mut(at, operand.len()), operand);
                if h.vcap == cap_before {
                    // Appended in the room it had: only the length changes.
                    // Within MAX_VALUE_LEN, which the store checks before a merge, as `write_header`.
                    self.bytes_mut(r, BASE_LEN)[VLEN_OFF..VLEN_OFF + 4]
                        .copy_from_slice(&(new_len as u32).to_le_bytes());
                } else {
                    h.vlen = new_len;
                    self.write_header(r, &h);
                }
            }
        }
    }

    #[inline]
    fn overwrite(&mut self, r: RecRef, kind: RecordKind, value: &[u8]) {
        // The common update: an inline value of the same kind and size, rewritten in place
        // (the header stays as it is), from one view of the record.
        if let Some(rec) = self.chunks.get_mut((r >> 32) as usize).and_then(|c| c.get_mut((r & 0xffff_ffff) as usize..))
        {
            if let Some(h) = rec.get(..BASE_LEN) {
                let flags = h[KIND_OFF];
                let klen = klen_at(h);
                let vlen = vlen_at(h);
                if flags & (EXTERNAL | KIND_MASK) == kind as u8 && vlen == value.len() {
                    let at = key_offset(flags) + klen;
                    if let Some(dst) = rec.get_mut(at..at + value.len()) {
                        copy_short(dst, value);
                        return;
                    }
                }
            }
        }
        self.overwrite_slow(r, kind, value);
    }

    fn overwrite_slow(&mut self, r: RecRef, kind: RecordKind, value: &[u8]) {
        let mut h = self.header(r);
        let was_live = kind_of(h.kind) != RecordKind::Delete;
        if h.kind & GROUPED != 0 && was_live != (kind != RecordKind::Delete) {
            self.count_in_group(r, !was_live);
        }
        let new_kind = (h.kind & !KIND_MASK) | kind as u8;
        if value.len() <= h.vcap && h.vlen == value.len() && h.kind == new_kind {
            // The common update: same kind, same size, in place; the header stays as it is.
            let at = Self::value_loc(r, &h);
            self.bytes_mut(at, value.len()).copy_from_slice(value);
            return;
        }
        if value.len() > h.vcap {
            let loc = self.alloc(value.len());
            h.vref = loc;
            h.vcap = value.len();
            h.kind |= EXTERNAL;
        }
        h.kind = (h.kind & !KIND_MASK) | kind as u8;
        h.vlen = value.len();
        let at = Self::value_loc(r, &h);
        self.bytes_mut(at, value.len()).copy_from_slice(value);
        self.write_header(r, &h);
    }

    /// Counts grouped record `r` as having become live or no longer live.
    fn count_in_group(&mut self, r: RecRef, became_live: bool) {
        let (glen, _) = self.group_link(r);
        let (chunks, groups) = (&self.chunks, &mut self.groups);
        let c = &chunks[(r >> 32) as usize];
        let off = (r & 0xffff_ffff) as usize + GROUPED_LEN;
        let prefix = &c[off..off + glen];
        groups.count(hash_key(prefix), prefix, became_live, |h| heads_group(chunks, h, prefix));
    }

    /// Removes every record whose key lies in the key-group range (inclusive).
    pub(crate) fn drop_key_groups(&mut self, first: u16, last: u16) {
        let chunks = &self.chunks;
        let in_range = |r: RecRef| -> bool {
            let c = &chunks[(r >> 32) as usize];
            let off = (r & 0xffff_ffff) as usize + key_offset(c[(r & 0xffff_ffff) as usize]);
            let kg = u16::from_be_bytes([c[off], c[off + 1]]);
            (first..=last).contains(&kg)
        };
        self.table.retain(|rec| !in_range(rec));
        // A group's records share its key group: its head decides for all of them.
        self.groups.retain(|rec| !in_range(rec));
        for run in &mut self.runs {
            run.retain(|r| !in_range(*r));
        }
        self.runs.retain(|run| !run.is_empty());
        self.run_refs = self.runs.iter().map(Vec::capacity).sum();
        self.pending.retain(|r| !in_range(*r));
    }

    // ---- ordered access ----

    /// Sorts `refs` by key.
    fn sort(&self, refs: &[RecRef]) -> Vec<RecRef> {
        // Sort on the keys' first 16 bytes held beside the references, so that most
        // comparisons touch neither the arena nor memcmp; then order the keys that share
        // those bytes (longer keys) by their whole key.
        let mut keyed: Vec<(u128, RecRef)> = refs.iter().map(|&r| (key_prefix16(self.key_of(r)), r)).collect();
        sort_by_prefix(&mut keyed);
        let mut i = 0;
        while i < keyed.len() {
            let prefix = keyed[i].0;
            let n = keyed[i..].iter().take_while(|e| e.0 == prefix).count();
            if n > 1 {
                keyed[i..i + n].sort_unstable_by(|a, b| self.key_of(a.1).cmp(self.key_of(b.1)));
            }
            i += n;
        }
        keyed.into_iter().map(|(_, r)| r).collect()
    }

    /// Merges two sorted runs with distinct keys.
    fn merge_runs(&self, a: &[RecRef], b: &[RecRef]) -> Vec<RecRef> {
        let mut merged = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            if self.key_of(a[i]) <= self.key_of(b[j]) {
                merged.push(a[i]);
                i += 1;
            } else {
                merged.push(b[j]);
                j += 1;
            }
        }
        merged.extend_from_slice(&a[i..]);
        merged.extend_from_slice(&b[j..]);
        merged
    }

    /// All records as sorted runs with distinct keys (see the module documentation).
    pub(crate) fn sorted_runs(&mut self) -> &[Vec<RecRef>] {
        if !self.pending.is_empty() {
            let run = self.sort(&self.pending);
            self.pending.clear();
            self.runs.push(run);
            while let [.., a, b] = &self.runs[..] {
                if a.len() > 2 * b.len() {
                    break;
                }
                let merged = self.merge_runs(a, b);
                self.runs.pop();
                self.runs.pop();
                self.runs.push(merged);
            }
            self.run_refs = self.runs.iter().map(Vec::capacity).sum();
        }
        &self.runs
    }

    /// The sorted runs, if no record waits to be sorted.
    pub(crate) fn runs_view(&self) -> Option<&[Vec<RecRef>]> {
        self.pending.is_empty().then_some(&self.runs[..])
    }

    /// All records in one sorted run, leaving the memtable as it is.
    pub(crate) fn sorted_copy(&self) -> Vec<RecRef> {
        let mut all = self.sort(&self.pending);
        for run in self.runs.iter().rev() {
            all = self.merge_runs(run, &all);
        }
        all
    }

    /// The index in `sorted` of the first key `>= key`.
    pub(crate) fn lower_bound(&self, sorted: &[RecRef], key: &[u8]) -> usize {
        sorted.partition_point(|r| self.key_of(*r) < key)
    }
}

/// The first 16 bytes of a key as a big-endian integer, zero-padded: ordered like the keys
/// wherever it differs.
#[inline]
fn key_prefix16(key: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(b)
}

/// Below this many entries a comparison sort is faster than a radix sort.
const RADIX_SORT_FROM: usize = 512;

/// Sorts entries by their prefix (entries with equal prefixes in no particular order).
///
/// Many entries are sorted by a least-significant-digit radix sort on the prefix's bytes,
/// skipping the bytes that are the same in every entry: keys of one state share their state
/// id, the padding and the high bytes of small integer keys, so a region's keys usually
/// differ in only a few of their 16 bytes, and a pass over each is cheaper than the
/// comparisons of a comparison sort.
fn sort_by_prefix(v: &mut Vec<(u128, RecRef)>) {
    if v.len() < RADIX_SORT_FROM {
        v.sort_unstable_by_key(|e| e.0);
        return;
    }
    let (or, and) = v.iter().fold((0u128, !0u128), |(or, and), e| (or | e.0, and & e.0));
    let differing = or ^ and;
    let mut other: Vec<(u128, RecRef)> = Vec::with_capacity(v.len());
    for byte in 0..16 {
        let shift = 8 * byte;
        if (differing >> shift) as u8 == 0 {
            continue;
        }
        let mut counts = [0usize; 256];
        for e in v.iter() {
            counts[usize::from((e.0 >> shift) as u8)] += 1;
        }
        let mut at = 0;
        for c in counts.iter_mut() {
            let n = *c;
            *c = at;
            at += n;
        }
        other.clear();
        other.resize(v.len(), (0, 0));
        for e in v.iter() {
            let slot = &mut counts[usize::from((e.0 >> shift) as u8)];
            other[*slot] = *e;
            *slot += 1;
        }
        std::mem::swap(v, &mut other);
    }
}

struct Header {
    /// Kind and flags.
    kind: u8,
    klen: usize,
    vlen: usize,
    vcap: usize,
    vref: u64,
    /// Where the key starts.
    key_off: usize,
}

/// The key length in a record header `h` (at least [`KLEN_OFF`] + 2 bytes).
#[inline]
fn klen_at(h: &[u8]) -> usize {
    u16::from_le_bytes([h[KLEN_OFF], h[KLEN_OFF + 1]]) as usize
}

/// The value length in a record header `h` (at least [`VLEN_OFF`] + 4 bytes).
#[inline]
fn vlen_at(h: &[u8]) -> usize {
    u32::from_le_bytes([h[VLEN_OFF], h[VLEN_OFF + 1], h[VLEN_OFF + 2], h[VLEN_OFF + 3]]) as usize
}

/// `dst.copy_from_slice(src)` (same lengths) without a call for the 8 to 16 bytes of most
/// values of keyed state: two overlapping word copies.
#[inline]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if (8..=16).contains(&n) && dst.len() == n {
        dst[..8].copy_from_slice(&src[..8]);
        dst[n - 8..].copy_from_slice(&src[n - 8..]);
    } else {
        dst.copy_from_slice(src);
    }
}

#[inline]
fn kind_of(b: u8) -> RecordKind {
    match b & KIND_MASK {
        0 => RecordKind::Put,
        1 => RecordKind::Delete,
        _ => RecordKind::Merge,
    }
}

/// A piece of the arena. Large pieces are anonymous memory maps that ask for transparent huge
/// pages: a memtable is read at random, and with 4 KiB pages most of its reads would miss the
/// TLB as well as the cache.
enum Chunk {
    Heap(Box<[u8]>),
    Map(memmap2::MmapMut),
}

/// Pieces at least this large are mapped (a huge page is 2 MiB).
const MAP_AT_LEAST: usize = 2 << 20;

impl Chunk {
    fn new(len: usize) -> Chunk {
        if len >= MAP_AT_LEAST {
            if let Ok(map) = memmap2::MmapOptions::new().len(len).map_anon() {
                // Only a hint: without huge pages the map works the same.
                #[cfg(target_os = "linux")]
                let _ = map.advise(memmap2::Advice::HugePage);
                return Chunk::Map(map);
            }
        }
        Chunk::Heap(vec![0u8; len].into_boxed_slice())
    }
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Heap(b) => b,
            Chunk::Map(m) => m,
        }
    }
}

impl std::ops::DerefMut for Chunk {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Chunk::Heap(b) => b,
            Chunk::Map(m) => m,
        }
    }
}

fn two_mut(v: &mut [Chunk], a: usize, b: usize) -> (&mut [u8], &mut [u8]) {
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&mut x[a], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&mut y[0], &mut x[b])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A xorshift generator from `seed` (not 0).
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    #[test]
    fn prefix_sort_orders_like_a_comparison_sort() {
        let mut next = xorshift(0x9e37_79b9u64);
        for (n, mask) in [(10, !0u128), (600, !0u128), (5000, 0xff_00ff_0000), (5000, 0x3), (3000, 0), (70_000, 0xffff)]
        {
            let mut v: Vec<(u128, RecRef)> =
                (0..n).map(|i| (((u128::from(next()) << 64) | u128::from(next())) & mask, i as RecRef)).collect();
            let mut expected = v.clone();
            expected.sort_unstable_by_key(|e| e.0);
            sort_by_prefix(&mut v);
            let prefixes: Vec<u128> = v.iter().map(|e| e.0).collect();
            assert_eq!(prefixes, expected.iter().map(|e| e.0).collect::<Vec<_>>(), "{n} entries, mask {mask:x}");
            let mut refs: Vec<RecRef> = v.iter().map(|e| e.1).collect();
            refs.sort_unstable();
            assert_eq!(refs, (0..n as RecRef).collect::<Vec<_>>(), "every entry once");
        }
    }

    /// The index hash leaves the key group out, so keys that differ only in it collide; they
    /// must still be told apart by every point access.
    #[test]
    fn keys_that_differ_only_in_their_key_group_are_kept_apart() {
        let mut m = Memtable::new(1 << 20);
        let key = |g: u16| [&g.to_be_bytes()[..], &[0, 1], &7u64.to_be_bytes()[..]].concat();
        assert_eq!(m.hash(&key(0)), m.hash(&key(300)));
        for g in 0..64u16 {
            m.put(m.hash(&key(g)), &key(g), &u64::from(g).to_le_bytes(), 0).unwrap();
        }
        m.delete(m.hash(&key(5)), &key(5), 0).unwrap();
        for g in 0..64u16 {
            let k = key(g);
            let want = if g == 5 {
                (RecordKind::Delete, vec![])
            } else {
                (RecordKind::Put, u64::from(g).to_le_bytes().to_vec())
            };
            assert_eq!(m.get(m.hash(&k), &k).map(|(kind, v)| (kind, v.to_vec())), Some(want.clone()), "{g}");
            let (kind, loc, len) = m.lookup(m.hash(&k), &k).expect("found");
            assert_eq!((kind, m.slice(loc, len).to_vec()), want, "{g}");
        }
        assert!(m.lookup(m.hash(&key(64)), &key(64)).is_none());
    }

    #[test]
    fn memtable_matches_a_model() {
        let mut m = Memtable::new(1 << 20);
        let mut model: BTreeMap<Vec<u8>, (RecordKind, Vec<u8>)> = BTreeMap::new();
        let mut next = xorshift(0x1234_5678u64);
        for step in 0..20_000 {
            let k = (next() % 500) as u16;
            let key = [&(k % 7).to_be_bytes()[..], &k.to_be_bytes()[..]].concat();
            let h = m.hash(&key);
            let v = vec![(step % 251) as u8; (next() % 40) as usize];
            match next() % 4 {
                0 => {
                    m.put(h, &key, &v, 0).unwrap();
                    model.insert(key, (RecordKind::Put, v));
                }
                1 => {
                    m.delete(h, &key, 0).unwrap();
                    model.insert(key, (RecordKind::Delete, vec![]));
                }
                2 => {
                    m.merge(h, &key, &v);
                    let e = model.entry(key).or_insert((RecordKind::Merge, vec![]));
                    if e.0 == RecordKind::Delete {
                        *e = (RecordKind::Put, v);
                    } else {
                        e.1.extend_from_slice(&v);
                    }
                }
                _ => {
                    let got = m.get(h, &key).map(|(k, v)| (k, v.to_vec()));
                    assert_eq!(got, model.get(&key).cloned());
                }
            }
            if step % 5000 == 4999 {
                let sorted: Vec<(Vec<u8>, RecordKind, Vec<u8>)> = {
                    m.sorted_runs();
                    let s = m.sorted_copy();
                    s.iter()
                        .map(|r| {
                            let (k, key, v) = m.record(*r);
                            (key.to_vec(), k, v.to_vec())
                        })
                        .collect()
                };
                let expected: Vec<_> = model.iter().map(|(k, (kind, v))| (k.clone(), *kind, v.clone())).collect();
                assert_eq!(sorted, expected);
            }
        }
        m.drop_key_groups(2, 4);
        model.retain(|k, _| !(2..=4).contains(&u16::from_be_bytes([k[0], k[1]])));
        assert_eq!(m.len(), model.len());
        let s = m.sorted_copy();
        let keys: Vec<Vec<u8>> = s.iter().map(|r| m.record(*r).1.to_vec()).collect();
        assert_eq!(keys, model.keys().cloned().collect::<Vec<_>>());
    }

    /// A group is listed in key order when its keys' suffixes share their first 8 bytes, are
    /// shorter than 8 bytes or differ only in zero bytes at the end (the sort compares a word
    /// of each suffix first), whatever the order they were written in.
    #[test]
    fn a_group_lists_keys_whose_first_suffix_words_tie_in_byte_order() {
        let prefix = [0u8, 3, 0, 1, 9, 9];
        let suffixes: [&[u8]; 9] =
            [b"abcdefghZ", b"", b"abc\0", b"abcdefgh", b"abc", b"abcdefgh\0", b"\0", b"abcdefgi", b"abcdefghA"];
        for rotation in 0..suffixes.len() {
            let mut m = Memtable::new(1 << 16);
            for s in suffixes.iter().cycle().skip(rotation).take(suffixes.len()) {
                let key = [&prefix[..], s].concat();
                m.put(m.hash(&key), &key, b"v", prefix.len()).unwrap();
            }
            let listed: Vec<Vec<u8>> = m.group(&prefix).iter().map(|r| m.key_of(*r)[prefix.len()..].to_vec()).collect();
            let mut want: Vec<Vec<u8>> = suffixes.iter().map(|s| s.to_vec()).collect();
            want.sort();
            assert_eq!(listed, want, "rotation {rotation}");
        }
    }

    /// Groups of many records written out of order come out in key order, with ties in the
    /// first 8 bytes of their suffixes among them.
    #[test]
    fn a_large_group_written_out_of_order_is_listed_in_key_order() {
        let prefix = [0u8, 7, 0, 2, 1];
        for size in [15, 16, 17, 53, 400] {
            let mut m = Memtable::new(1 << 16);
            let mut next = xorshift(size as u64 + 1);
            let mut want = Vec::new();
            for i in 0..size as u64 {
                // Every third suffix shares its first 8 bytes with another one.
                let mut suffix = (next() % 1000 / 3 * 3).to_be_bytes().to_vec();
                if i % 3 == 1 {
                    suffix.push(i as u8);
                }
                let key = [&prefix[..], &suffix].concat();
                if !want.contains(&suffix) {
                    want.push(suffix);
                }
                m.put(m.hash(&key), &key, b"v", prefix.len()).unwrap();
            }
            want.sort();
            let listed: Vec<Vec<u8>> = m.group(&prefix).iter().map(|r| m.key_of(*r)[prefix.len()..].to_vec()).collect();
            assert_eq!(listed, want, "{size} records");
        }
    }

    /// Groups against a model: which records each group lists, and whether it has a live
    /// one, which the group index counts as records are put, deleted, merged into and
    /// dropped; with group prefixes held in the index's slots (12 bytes) and not (20 bytes).
    #[test]
    fn groups_list_their_records_and_count_the_live_ones_as_a_model_does() {
        let mut m = Memtable::new(1 << 16);
        let mut model: BTreeMap<Vec<u8>, RecordKind> = BTreeMap::new();
        let mut next = xorshift(0x5eed_1234u64);
        // Group g: key group g % 5, state 1, then 8 bytes of g, then (for odd g) 8 more.
        let prefix = |g: u64| {
            let mut p = [&((g % 5) as u16).to_be_bytes()[..], &[0, 1], &g.to_be_bytes()[..]].concat();
            if g % 2 == 1 {
                p.extend_from_slice(&(g * 3).to_be_bytes());
            }
            p
        };
        let groups = 40u64;
        let check = |m: &Memtable, model: &BTreeMap<Vec<u8>, RecordKind>| {
            for g in 0..groups {
                let p = prefix(g);
                let ours: Vec<(&Vec<u8>, &RecordKind)> = model.iter().filter(|(k, _)| k.starts_with(&p)).collect();
                let live = ours.iter().any(|(_, kind)| **kind != RecordKind::Delete);
                assert_eq!(m.group_has_live(&p), live, "group {g}");
                let listed: Vec<Vec<u8>> = m.group(&p).iter().map(|r| m.key_of(*r).to_vec()).collect();
                assert_eq!(listed, ours.iter().map(|(k, _)| (*k).clone()).collect::<Vec<_>>(), "group {g}");
            }
        };
        let mut known = Vec::new();
        for step in 0..30_000u64 {
            let g = next() % groups;
            let p = prefix(g);
            let key = [&p[..], &(next() % 6).to_be_bytes()[..]].concat();
            let h = m.hash(&key);
            let v = vec![step as u8; (next() % 24) as usize];
            // Phases of mostly puts and of mostly deletes, so that groups fill and empty.
            let op = if step / 3000 % 2 == 0 { next() % 5 } else { [2, 2, 2, 0, 3][(next() % 5) as usize] };
            match op {
                0 | 1 => {
                    m.put(h, &key, &v, p.len()).unwrap();
                    model.insert(key, RecordKind::Put);
                }
                2 => {
                    m.delete(h, &key, p.len()).unwrap();
                    model.insert(key, RecordKind::Delete);
                }
                3 if model.contains_key(&key) => {
                    // A merge into a record that is there: a delete becomes a put.
                    m.merge(h, &key, &v);
                    model.insert(key, RecordKind::Put);
                }
                _ => {
                    m.small_group(&p, usize::MAX, &mut known);
                    m.put_in_known_group(&mut known, &key, &v, p.len()).unwrap();
                    model.insert(key, RecordKind::Put);
                }
            }
            if step % 3000 == 2999 {
                check(&m, &model);
            }
        }
        check(&m, &model);
        m.drop_key_groups(1, 2);
        model.retain(|k, _| !(1..=2).contains(&u16::from_be_bytes([k[0], k[1]])));
        check(&m, &model);
    }

    #[test]
    fn large_values_get_their_own_chunk() {
        let mut m = Memtable::new(1 << 20);
        let big = vec![7u8; 1 << 20];
        for i in 0..3u8 {
            let key = [0, 0, i];
            let h = m.hash(&key);
            m.put(h, &key, &big, 0).unwrap();
            let small = [0, 1, i];
            m.put(m.hash(&small), &small, b"small", 0).unwrap();
        }
        for i in 0..3u8 {
            assert_eq!(m.get(m.hash(&[0, 0, i]), &[0, 0, i]).unwrap().1, &big[..]);
            assert_eq!(m.get(m.hash(&[0, 1, i]), &[0, 1, i]).unwrap().1, b"small");
        }
    }
}
