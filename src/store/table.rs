//! The hash index of the mutable region: open addressing with linear probing over 16-byte
//! slots that hold the full hash and the record's place in the arena.
//!
//! A lookup touches one slot (one cache line, usually) and then the record; the full 64-bit
//! hash in the slot makes a false match that needs a key comparison practically impossible.
//! Growing rehashes from the stored hashes without touching the records.
//!
//! The key functions below the store are here too: the hash and the equality of the index and
//! the memtable, and the key order of the memtable's sorted runs and of the merge.

use std::cmp::Ordering;

/// Hashes a key for the index: a folded multiply over the key's words, in the manner of
/// foldhash and wyhash, specialised for the short keys of keyed state (nothing is persisted,
/// so the function may change freely). Never returns 0.
///
/// The key group (the first two bytes) is left out: keyed state derives it from the rest of
/// the key, and it is the last part of a key to be known (routing a record hashes its key
/// twice to find it), so a hash without it lets the processor fetch the index slot while the
/// key group is still being computed. Keys that differ only in their key group share a hash
/// and are told apart by comparing them.
///
/// The next two bytes (a keyed state's id) are read on their own and the rest in words from
/// offset 4: a caller usually writes a key in parts (the state id, the serialized key, the
/// namespace), and a load that spans two such fresh stores cannot be forwarded from them,
/// which would make each lookup wait for the previous one's cache miss.
///
/// Always inlined, as [`HashIndex::find`] is: left to itself the compiler calls both out of
/// line on the point-access path, which costs a value get a tenth of its instructions.
#[inline(always)]
pub(crate) fn hash_key(key: &[u8]) -> u64 {
    const SEED: u64 = 0x243f_6a88_85a3_08d3;
    const K1: u64 = 0x9e37_79b9_7f4a_7c15;
    const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;
    let len = key.len();
    if len < 4 {
        let mut head = len as u64;
        for &b in key {
            head = head << 8 | u64::from(b);
        }
        return HashIndex::fix(fold(head ^ K1, SEED));
    }
    let (state, rest) = key[2..].split_at(2);
    let n = rest.len();
    let mut a = SEED ^ len as u64 ^ (u64::from(u16::from_le_bytes([state[0], state[1]])) << 48);
    let mut b = K2;
    if n > 16 {
        let mut i = 0;
        while i + 16 < n {
            a = fold(a ^ word(&rest[i..i + 8]), K1 ^ word(&rest[i + 8..i + 16]));
            i += 16;
        }
        a ^= word(&rest[n - 16..n - 8]);
        b ^= word(&rest[n - 8..]);
    } else if n >= 8 {
        a ^= word(&rest[..8]);
        b ^= word(&rest[n - 8..]);
    } else if n >= 4 {
        a ^= u64::from(half(&rest[..4]));
        b ^= u64::from(half(&rest[n - 4..]));
    } else if n > 0 {
        a ^= u64::from(rest[0]) << 16 | u64::from(rest[n / 2]) << 8 | u64::from(rest[n - 1]);
    }
    HashIndex::fix(fold(a ^ K1, b ^ SEED))
}

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// The first 8 bytes of `b` as a little-endian word.
#[inline]
pub(crate) fn word(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[inline]
fn half(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Key equality with a fast path for keys of 12 to 20 bytes: the key group and the state id
/// as one load each, the rest as two overlapping words (no call to `memcmp`; loads placed as
/// in [`hash_key`]).
#[inline]
pub(crate) fn key_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    if (12..=20).contains(&len) {
        a[..2] == b[..2]
            && a[2..4] == b[2..4]
            && word(&a[4..12]) == word(&b[4..12])
            && word(&a[len - 8..]) == word(&b[len - 8..])
    } else {
        a == b
    }
}

/// Orders keys as byte strings. Keys of one length from 8 to 16 bytes (those of value and
/// list state with integer keys) are compared as two big-endian words, the first 8 bytes and
/// the last 8, in registers: a call to `memcmp` for each of the merge's comparisons cost
/// more than the rest of the comparison.
#[inline]
pub(crate) fn key_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len();
    if n == b.len() && (8..=16).contains(&n) {
        // When the first 8 bytes agree, the first difference lies in the last 8.
        return (be_word(&a[..8]), be_word(&a[n - 8..])).cmp(&(be_word(&b[..8]), be_word(&b[n - 8..])));
    }
    a.cmp(b)
}

#[inline]
fn be_word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_be_bytes(w)
}

/// Asks the processor to bring the cache line holding `bytes[0]` closer, without waiting for
/// it: ordered scans of the mutable region touch records in key order, which is not the
/// order they lie in memory, and fetching a few records ahead hides most of that latency.
#[inline]
pub(crate) fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is only a hint; it never faults and reads or writes nothing the
        // program can observe, and SSE (which provides it) is part of the x86_64 baseline. The
        // pointer comes from a live slice.
        #[allow(unsafe_code)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().cast::<i8>());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// A slot: `hash == 0` marks an empty slot (hashes are never 0, see [`HashIndex::fix`]).
#[derive(Clone, Copy, Default)]
struct Slot {
    hash: u64,
    rec: u64,
}

const SLOT_LEN: usize = 16;

/// The slot array: `hash u64 | rec u64` pairs, little-endian. Large arrays are anonymous memory
/// maps that ask for transparent huge pages: every probe lands on a random slot, and with 4 KiB
/// pages most probes of a large table would miss the TLB as well as the cache.
pub(super) struct Slots {
    bytes: SlotBytes,
}

enum SlotBytes {
    Heap(Box<[u8]>),
    Map(memmap2::MmapMut),
}

/// Slot arrays at least this large are mapped (a huge page is 2 MiB).
const MAP_SLOTS_AT_LEAST: usize = 2 << 20;

impl Slots {
    fn new(count: usize) -> Slots {
        Slots::zeroed(count * SLOT_LEN)
    }

    /// `len` zero bytes; the group index ([`super::groups`]) lays its wider slots out in them.
    pub(super) fn zeroed(len: usize) -> Slots {
        if len >= MAP_SLOTS_AT_LEAST {
            if let Ok(map) = memmap2::MmapOptions::new().len(len).map_anon() {
                #[cfg(target_os = "linux")]
                let _ = map.advise(memmap2::Advice::HugePage);
                return Slots { bytes: SlotBytes::Map(map) };
            }
        }
        Slots { bytes: SlotBytes::Heap(vec![0u8; len].into_boxed_slice()) }
    }

    #[inline]
    pub(super) fn bytes(&self) -> &[u8] {
        match &self.bytes {
            SlotBytes::Heap(b) => b,
            SlotBytes::Map(m) => m,
        }
    }

    #[inline]
    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.bytes {
            SlotBytes::Heap(b) => b,
            SlotBytes::Map(m) => m,
        }
    }

    #[inline]
    fn len(&self) -> usize {
        self.bytes().len() / SLOT_LEN
    }

    #[inline]
    fn get(&self, i: usize) -> Slot {
        let b = &self.bytes()[i * SLOT_LEN..(i + 1) * SLOT_LEN];
        Slot { hash: word(&b[..8]), rec: word(&b[8..]) }
    }

    #[inline]
    fn set(&mut self, i: usize, s: Slot) {
        let b = &mut self.bytes_mut()[i * SLOT_LEN..(i + 1) * SLOT_LEN];
        b[..8].copy_from_slice(&s.hash.to_le_bytes());
        b[8..].copy_from_slice(&s.rec.to_le_bytes());
    }
}

pub(crate) struct HashIndex {
    slots: Slots,
    mask: usize,
    len: usize,
}

const MIN_CAPACITY: usize = 16;

impl HashIndex {
    pub(crate) fn new() -> Self {
        HashIndex { slots: Slots::new(MIN_CAPACITY), mask: MIN_CAPACITY - 1, len: 0 }
    }

    /// Hashes are stored as they are, except that 0 (the empty mark) becomes 1.
    #[inline]
    pub(crate) fn fix(hash: u64) -> u64 {
        hash | u64::from(hash == 0)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held.
    pub(crate) fn memory(&self) -> usize {
        self.slots.len() * SLOT_LEN
    }

    /// Asks the processor to fetch the slot where a probe for `hash` starts, without waiting:
    /// a caller that knows its next keys (a replay) overlaps their cache misses.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        let i = hash as usize & self.mask;
        prefetch(&self.slots.bytes()[i * SLOT_LEN..]);
    }

    /// The record in the first slot with hash `hash` along its probe sequence, if the
    /// sequence reaches one before an empty slot: for a prefetch, not a lookup (it may be
    /// another key's with the same hash).
    #[inline]
    pub(crate) fn first_with(&self, hash: u64) -> Option<u64> {
        let mut i = hash as usize & self.mask;
        for _ in 0..4 {
            let s = self.slots.get(i);
            if s.hash == hash {
                return Some(s.rec);
            }
            if s.hash == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// The record whose hash is `hash` (already [`fix`](Self::fix)ed) and for which `eq` holds.
    #[inline(always)]
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(u64) -> bool) -> Option<u64> {
        self.find_map(
            hash,
            #[inline(always)]
            |rec| eq(rec).then_some(rec),
        )
    }

    /// What `probe` returns for the first record whose hash is `hash` (already
    /// [`fix`](Self::fix)ed) and for which it returns something.
    #[inline(always)]
    pub(crate) fn find_map<T>(&self, hash: u64, mut probe: impl FnMut(u64) -> Option<T>) -> Option<T> {
        let mut i = hash as usize & self.mask;
        loop {
            let s = self.slots.get(i);
            if s.hash == hash {
                if let Some(t) = probe(s.rec) {
                    return Some(t);
                }
            }
            if s.hash == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Adds a record known not to be present.
    pub(crate) fn insert(&mut self, hash: u64, rec: u64) {
        // Keep the load at most 3/4 so probe sequences stay short.
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        self.place(hash, rec);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, rec: u64) {
        let mut i = hash as usize & self.mask;
        while self.slots.get(i).hash != 0 {
            i = (i + 1) & self.mask;
        }
        self.slots.set(i, Slot { hash, rec });
    }

    /// Makes room for `additional` more records without growing on the way.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let want = (self.len + additional).saturating_mul(4) / 3 + 1;
        if want > self.slots.len() {
            self.rebuild(want.next_power_of_two(), |_| true);
        }
    }

    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        self.rebuild(cap, |_| true);
    }

    /// Keeps only the records for which `keep` holds.
    pub(crate) fn retain(&mut self, keep: impl FnMut(u64) -> bool) {
        let cap = self.slots.len();
        self.rebuild(cap, keep);
    }

    fn rebuild(&mut self, cap: usize, mut keep: impl FnMut(u64) -> bool) {
        let old = std::mem::replace(&mut self.slots, Slots::new(cap));
        self.mask = cap - 1;
        self.len = 0;
        for s in (0..old.len()).map(|i| old.get(i)).filter(|s| s.hash != 0) {
            if keep(s.rec) {
                self.place(s.hash, s.rec);
                self.len += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_and_equality() {
        let keys: Vec<Vec<u8>> = (0..40usize).map(|n| (0..n as u8).collect()).collect();
        for a in &keys {
            assert_ne!(hash_key(a), 0);
            for b in &keys {
                assert_eq!(key_eq(a, b), a == b);
            }
            let mut c = a.clone();
            if let Some(last) = c.last_mut() {
                *last ^= 1;
                assert!(!key_eq(a, &c));
                assert_ne!(hash_key(a), hash_key(&c), "{a:?}");
            }
        }
    }

    #[test]
    fn finds_what_was_inserted_through_growth_and_retain() {
        let mut t = HashIndex::new();
        // Colliding hashes (same low bits) and the fixed-up zero hash.
        for rec in 0..5000u64 {
            let hash = HashIndex::fix((rec % 7) << 40 | (rec % 3));
            t.insert(hash, rec);
        }
        assert_eq!(t.len(), 5000);
        for rec in 0..5000u64 {
            let hash = HashIndex::fix((rec % 7) << 40 | (rec % 3));
            assert_eq!(t.find(hash, |r| r == rec), Some(rec));
        }
        assert_eq!(t.find(HashIndex::fix(12345), |_| true), None);
        t.retain(|r| r % 2 == 0);
        assert_eq!(t.len(), 2500);
        assert_eq!(t.find(HashIndex::fix(2 << 40 | 2), |r| r == 2), Some(2));
        assert_eq!(t.find(HashIndex::fix(3 << 40), |r| r == 3), None);
    }

    #[test]
    fn a_reserved_index_takes_its_records_without_growing_and_keeps_what_it_held() {
        let mut t = HashIndex::new();
        for rec in 0..10u64 {
            t.insert(HashIndex::fix(rec * 0x9e37_79b9), rec);
        }
        t.reserve(1000);
        let slots = t.memory();
        assert!(slots >= 1010 * 4 / 3 * SLOT_LEN, "{slots}");
        for rec in 10..1010u64 {
            t.prefetch(HashIndex::fix(rec * 0x9e37_79b9));
            t.insert(HashIndex::fix(rec * 0x9e37_79b9), rec);
        }
        assert_eq!(t.memory(), slots);
        for rec in 0..1010u64 {
            assert_eq!(t.find(HashIndex::fix(rec * 0x9e37_79b9), |r| r == rec), Some(rec));
        }
        // Reserving less than is there changes nothing.
        t.reserve(1);
        assert_eq!(t.memory(), slots);
    }
}
