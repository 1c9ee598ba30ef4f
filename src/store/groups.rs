//! The group index of the mutable region: for each group (the map entries of one key and
//! namespace, which share their keys' first bytes), the group's newest record and how many of
//! its records are live (not deletes).
//!
//! Open addressing with linear probing over 32-byte slots:
//! `hash u32 | live u32 | head u64 | prefix_len u8 | prefix [u8; 15]`, little-endian. A
//! prefix of at most [`INLINE_PREFIX`] bytes (a map keyed by `u64` with no namespace has 12)
//! is held in the slot, so a lookup compares it there and reads no record: "is this map
//! empty?" is one probe of this index, whose slot the caller can fetch ahead. A longer prefix
//! is marked [`NOT_INLINE`] and compared against the head record by the caller's `eq`.
//!
//! The stored hash is the low 32 bits of the prefix's 64-bit index hash (0 becomes 1; 0 marks
//! an empty slot); it picks the first slot and filters the comparisons, so it needs to be
//! neither unique nor wide.

use super::table::{prefetch, Slots};

const SLOT_LEN: usize = 32;
const HASH_OFF: usize = 0;
const LIVE_OFF: usize = 4;
const HEAD_OFF: usize = 8;
const PLEN_OFF: usize = 16;
const PREFIX_OFF: usize = 17;
/// The longest prefix held in a slot.
pub(crate) const INLINE_PREFIX: usize = SLOT_LEN - PREFIX_OFF;
/// The prefix length byte of a slot whose prefix is longer than [`INLINE_PREFIX`].
const NOT_INLINE: u8 = 0xff;
const MIN_CAPACITY: usize = 16;

/// What the index knows of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Group {
    /// The newest record of the group (the head of its list).
    pub(crate) head: u64,
    /// How many of the group's records are not deletes.
    pub(crate) live: u32,
}

pub(crate) struct GroupIndex {
    slots: Slots,
    mask: usize,
    len: usize,
}

/// The stored form of a prefix's index hash: never 0.
#[inline]
fn tag(hash: u64) -> u32 {
    let h = hash as u32;
    h | u32::from(h == 0)
}

#[inline]
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline]
fn u64_at(b: &[u8], off: usize) -> u64 {
    super::table::word(&b[off..off + 8])
}

impl GroupIndex {
    pub(crate) fn new() -> Self {
        GroupIndex { slots: Slots::zeroed(MIN_CAPACITY * SLOT_LEN), mask: MIN_CAPACITY - 1, len: 0 }
    }

    /// The number of groups.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held.
    pub(crate) fn memory(&self) -> usize {
        self.slots.bytes().len()
    }

    fn capacity(&self) -> usize {
        self.mask + 1
    }

    #[inline]
    fn slot(&self, i: usize) -> &[u8] {
        &self.slots.bytes()[i * SLOT_LEN..(i + 1) * SLOT_LEN]
    }

    #[inline]
    fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.slots.bytes_mut()[i * SLOT_LEN..(i + 1) * SLOT_LEN]
    }

    /// Asks the processor to fetch the slot where a probe for the group hashed to `hash`
    /// starts, without waiting for it.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        let i = tag(hash) as usize & self.mask;
        prefetch(self.slot(i));
    }

    /// Whether slot `s` (tag already known to match) is the group `prefix`; `eq` decides for
    /// a prefix that is not held in the slot, given the group's head record.
    #[inline]
    fn is(s: &[u8], prefix: &[u8], eq: &mut impl FnMut(u64) -> bool) -> bool {
        let plen = s[PLEN_OFF];
        if plen == NOT_INLINE {
            prefix.len() > INLINE_PREFIX && eq(u64_at(s, HEAD_OFF))
        } else {
            usize::from(plen) == prefix.len() && &s[PREFIX_OFF..PREFIX_OFF + prefix.len()] == prefix
        }
    }

    /// The slot of group `prefix` (hashed to `hash`), if it is here.
    #[inline]
    fn position(&self, hash: u64, prefix: &[u8], mut eq: impl FnMut(u64) -> bool) -> Option<usize> {
        let t = tag(hash);
        let mut i = t as usize & self.mask;
        loop {
            let s = self.slot(i);
            let st = u32_at(s, HASH_OFF);
            if st == t && Self::is(s, prefix, &mut eq) {
                return Some(i);
            }
            if st == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// What the index knows of group `prefix` (hashed to `hash`).
    #[inline]
    pub(crate) fn find(&self, hash: u64, prefix: &[u8], eq: impl FnMut(u64) -> bool) -> Option<Group> {
        let s = self.slot(self.position(hash, prefix, eq)?);
        Some(Group { head: u64_at(s, HEAD_OFF), live: u32_at(s, LIVE_OFF) })
    }

    /// Makes `head` the newest record of group `prefix` (hashed to `hash`), adding the group
    /// if it is new, and counts one more live record if `live`. Returns the previous head.
    pub(crate) fn link(
        &mut self,
        hash: u64,
        prefix: &[u8],
        head: u64,
        live: bool,
        eq: impl FnMut(u64) -> bool,
    ) -> Option<u64> {
        if let Some(i) = self.position(hash, prefix, eq) {
            let s = self.slot_mut(i);
            let old = u64_at(s, HEAD_OFF);
            s[HEAD_OFF..HEAD_OFF + 8].copy_from_slice(&head.to_le_bytes());
            if live {
                // 2^32 live records of one group would take over 100 GiB of one mutable
                // region; saturate rather than wrap all the same.
                let n = u32_at(s, LIVE_OFF).saturating_add(1);
                s[LIVE_OFF..LIVE_OFF + 4].copy_from_slice(&n.to_le_bytes());
            }
            return Some(old);
        }
        // Keep the load at most 3/4 so probe sequences stay short.
        if (self.len + 1) * 4 > self.capacity() * 3 {
            self.rebuild(self.capacity() * 2, |_| true);
        }
        let mut s = [0u8; SLOT_LEN];
        s[HASH_OFF..HASH_OFF + 4].copy_from_slice(&tag(hash).to_le_bytes());
        s[LIVE_OFF..LIVE_OFF + 4].copy_from_slice(&u32::from(live).to_le_bytes());
        s[HEAD_OFF..HEAD_OFF + 8].copy_from_slice(&head.to_le_bytes());
        if prefix.len() <= INLINE_PREFIX {
            s[PLEN_OFF] = prefix.len() as u8;
            s[PREFIX_OFF..PREFIX_OFF + prefix.len()].copy_from_slice(prefix);
        } else {
            s[PLEN_OFF] = NOT_INLINE;
        }
        self.place(&s);
        self.len += 1;
        None
    }

    /// Counts one record of group `prefix` (hashed to `hash`) more live (`became_live`) or
    /// one less. A group that is not here is left alone.
    pub(crate) fn count(&mut self, hash: u64, prefix: &[u8], became_live: bool, eq: impl FnMut(u64) -> bool) {
        if let Some(i) = self.position(hash, prefix, eq) {
            let s = self.slot_mut(i);
            let n = u32_at(s, LIVE_OFF);
            debug_assert!(became_live || n > 0, "a group counted fewer live records than it lost");
            let n = if became_live { n.saturating_add(1) } else { n.saturating_sub(1) };
            s[LIVE_OFF..LIVE_OFF + 4].copy_from_slice(&n.to_le_bytes());
        }
    }

    /// Keeps only the groups whose head record `keep` holds for.
    pub(crate) fn retain(&mut self, keep: impl FnMut(u64) -> bool) {
        self.rebuild(self.capacity(), keep);
    }

    fn place(&mut self, s: &[u8; SLOT_LEN]) {
        let mut i = u32_at(s, HASH_OFF) as usize & self.mask;
        while u32_at(self.slot(i), HASH_OFF) != 0 {
            i = (i + 1) & self.mask;
        }
        self.slot_mut(i).copy_from_slice(s);
    }

    /// Rehashes into `cap` slots from the stored tags, without touching any record.
    fn rebuild(&mut self, cap: usize, mut keep: impl FnMut(u64) -> bool) {
        let old = std::mem::replace(&mut self.slots, Slots::zeroed(cap * SLOT_LEN));
        self.mask = cap - 1;
        self.len = 0;
        for s in old.bytes().chunks_exact(SLOT_LEN) {
            if u32_at(s, HASH_OFF) != 0 && keep(u64_at(s, HEAD_OFF)) {
                let mut slot = [0u8; SLOT_LEN];
                slot.copy_from_slice(s);
                self.place(&slot);
                self.len += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Group `n`'s prefix: short ones held in the slot, long ones not, and pairs that differ
    /// only in length or in their last byte.
    fn prefix(n: u64) -> Vec<u8> {
        let len = 1 + (n % 24) as usize;
        let mut p: Vec<u8> = (0..len).map(|i| (n >> (i % 8 * 8)) as u8 ^ i as u8).collect();
        p[len - 1] = (n / 24) as u8;
        p
    }

    #[test]
    fn groups_are_found_counted_and_kept_through_growth_and_retain() {
        // Records are numbered by group: the head of group n is record n * 1000 + k.
        let mut ix = GroupIndex::new();
        let mut model: HashMap<Vec<u8>, Group> = HashMap::new();
        // Colliding hashes on purpose: only 37 distinct tags, so comparisons decide.
        let hash = |n: u64| n % 37 * 0x1_0001;
        let heads = |p: &[u8], model: &HashMap<Vec<u8>, Group>, h: u64| model.get(p).is_some_and(|g| g.head == h);
        for round in 0..3u64 {
            for n in 0..3000u64 {
                let p = prefix(n);
                let head = n * 1000 + round;
                let live = (n + round) % 3 != 0;
                let m = model.clone();
                let prev = ix.link(hash(n), &p, head, live, |h| heads(&p, &m, h));
                let g = model.entry(p.clone()).or_insert(Group { head, live: 0 });
                assert_eq!(prev, (round > 0).then_some(g.head), "group {n}");
                g.head = head;
                g.live += u32::from(live);
            }
            for n in (0..3000u64).step_by(7) {
                let p = prefix(n);
                let m = model.clone();
                let g = model.get_mut(&p).expect("present");
                if g.live > 0 {
                    ix.count(hash(n), &p, false, |h| heads(&p, &m, h));
                    g.live -= 1;
                }
            }
        }
        assert_eq!(ix.len(), model.len());
        for (p, g) in &model {
            let n = (0..3000u64).find(|&n| prefix(n) == *p).expect("known");
            assert_eq!(ix.find(hash(n), p, |h| heads(p, &model, h)), Some(*g), "group {n}");
        }
        assert_eq!(ix.find(hash(5), &[0xaa; 3], |_| true), None);
        ix.retain(|head| head / 1000 % 2 == 0);
        model.retain(|_, g| g.head / 1000 % 2 == 0);
        assert_eq!(ix.len(), model.len());
        for n in 0..3000u64 {
            let p = prefix(n);
            assert_eq!(ix.find(hash(n), &p, |h| heads(&p, &model, h)), model.get(&p).copied(), "group {n}");
        }
    }

    #[test]
    fn a_short_prefix_is_told_apart_in_the_slot_without_asking_for_the_record() {
        let mut ix = GroupIndex::new();
        let p = [1u8; INLINE_PREFIX];
        assert_eq!(ix.link(9, &p, 5, true, |_| panic!("a held prefix needs no record")), None);
        // Same tag, one byte longer or shorter or different: other groups.
        assert_eq!(ix.find(9, &p[..INLINE_PREFIX - 1], |_| panic!("held")), None);
        let mut q = p;
        q[3] = 2;
        assert_eq!(ix.find(9, &q, |_| panic!("held")), None);
        assert_eq!(ix.find(9, &[1u8; INLINE_PREFIX + 1], |_| false), None);
        assert_eq!(ix.find(9, &p, |_| panic!("held")), Some(Group { head: 5, live: 1 }));
        ix.count(9, &p, true, |_| panic!("held"));
        ix.count(9, &p, false, |_| panic!("held"));
        ix.count(9, &p, false, |_| panic!("held"));
        assert_eq!(ix.find(9, &p, |_| panic!("held")), Some(Group { head: 5, live: 0 }));
    }
}
