//! The block cache: verified, decompressed data blocks, bounded in bytes, evicted by CLOCK.
//!
//! Owned by the task thread that drives the store; no locks.

use std::sync::Arc;

use std::collections::HashMap;

use super::segment::Segment;
use crate::format::Block;
use crate::Result;

struct Entry {
    key: (u64, u32),
    block: Arc<Block>,
    charge: usize,
    referenced: bool,
}

pub(crate) struct BlockCache {
    capacity: usize,
    used: usize,
    map: HashMap<(u64, u32), usize, foldhash::fast::FixedState>,
    entries: Vec<Entry>,
    hand: usize,
    hits: u64,
    misses: u64,
    /// Reused by every load: creating a zstd context per read costs more than the read.
    dec: Option<zstd::bulk::Decompressor<'static>>,
}

impl BlockCache {
    pub(crate) fn new(capacity: usize) -> Self {
        BlockCache {
            capacity,
            used: 0,
            map: HashMap::with_hasher(foldhash::fast::FixedState::default()),
            entries: Vec::new(),
            hand: 0,
            hits: 0,
            misses: 0,
            dec: None,
        }
    }

    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.evict_to(capacity);
    }

    pub(crate) fn used(&self) -> usize {
        self.used + self.entries.capacity() * std::mem::size_of::<Entry>() + self.map.capacity() * 24
    }

    pub(crate) fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// The block `idx` of `seg`, from the cache or read, verified and decoded.
    pub(crate) fn get_or_load(&mut self, seg: &Segment, idx: usize) -> Result<Arc<Block>> {
        let key = (seg.id(), idx as u32);
        if let Some(&i) = self.map.get(&key) {
            self.hits += 1;
            let e = &mut self.entries[i];
            e.referenced = true;
            return Ok(e.block.clone());
        }
        self.misses += 1;
        let block = Arc::new(seg.reader().read_block(idx, &mut self.dec)?);
        let charge = block.size_in_memory();
        if charge <= self.capacity / 2 {
            self.evict_to(self.capacity.saturating_sub(charge));
            self.map.insert(key, self.entries.len());
            self.entries.push(Entry { key, block: block.clone(), charge, referenced: false });
            self.used += charge;
        }
        Ok(block)
    }

    /// Forgets every block of a segment (it was removed).
    pub(crate) fn forget_segment(&mut self, id: u64) {
        let mut i = 0;
        while i < self.entries.len() {
            if self.entries[i].key.0 == id {
                self.remove_at(i);
            } else {
                i += 1;
            }
        }
    }

    fn evict_to(&mut self, target: usize) {
        while self.used > target && !self.entries.is_empty() {
            if self.hand >= self.entries.len() {
                self.hand = 0;
            }
            if self.entries[self.hand].referenced {
                self.entries[self.hand].referenced = false;
                self.hand += 1;
            } else {
                self.remove_at(self.hand);
            }
        }
    }

    fn remove_at(&mut self, i: usize) {
        let e = self.entries.swap_remove(i);
        self.used -= e.charge;
        self.map.remove(&e.key);
        if let Some(moved) = self.entries.get(i) {
            self.map.insert(moved.key, i);
        }
    }
}
