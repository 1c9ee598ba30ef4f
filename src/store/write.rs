//! Writes: puts, deletes and merges into the mutable region (and the changelog), the checks
//! that refuse a write before it changes anything, and the replay of a changelog.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::changelog::{Changelog, LogSeal};
use super::table::hash_key;
use super::{Store, MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::error::{Error, Misuse, Result};
use crate::format::{RecordKind, SchemaTag};

/// Whether a value of `len` bytes may take `add` more.
#[inline]
fn merged_within(len: usize, add: usize) -> Result<()> {
    match len.checked_add(add) {
        Some(n) if n <= MAX_VALUE_LEN => Ok(()),
        n => Err(Misuse::TooLarge { what: "merged value", len: n.unwrap_or(usize::MAX), limit: MAX_VALUE_LEN }.into()),
    }
}

/// The error of a write with group length `group_len` of a key held with `held`.
#[cold]
fn group_mismatch(group_len: usize, held: usize) -> Error {
    Misuse::GroupMismatch { group_len, held }.into()
}

fn check_group(key: &[u8], group_len: usize) -> Result<()> {
    if group_len < 2 || group_len > key.len() {
        return Err(Misuse::InvalidOption {
            name: "group_len",
            why: "must be at least 2 and at most the key's length",
        }
        .into());
    }
    Ok(())
}

impl Store {
    /// Sets `key` to `value`.
    #[inline]
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_hashed(self.active.hash(key), key, value)
    }

    /// [`put`](Self::put) of a key whose index hash ([`key_hash`](Self::key_hash)) is known.
    #[inline]
    pub(crate) fn put_hashed(&mut self, h: u64, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_write(key, value.len())?;
        self.before_write()?;
        // Without a group, nothing is refused.
        let _ = self.active.put(h, key, value, 0);
        if let Some(log) = &mut self.log {
            log.record(RecordKind::Put, key, 0, value);
        }
        Ok(())
    }

    /// Sets `key` to `value`, where `key` belongs to the group of its first `group_len` bytes
    /// (the entries of one map, say): [`scan_group`](Self::scan_group) then lists the group
    /// without touching other keys. A key of a group must always be written with its group:
    /// a grouped write of a key that the mutable region holds without a group, or with one of
    /// another length, is refused ([`Misuse::GroupMismatch`]) and writes nothing.
    #[inline]
    pub fn put_grouped(&mut self, key: &[u8], group_len: usize, value: &[u8]) -> Result<()> {
        self.check_write(key, value.len())?;
        check_group(key, group_len)?;
        self.before_write()?;
        let h = self.active.hash(key);
        self.active.put(h, key, value, group_len).map_err(|held| group_mismatch(group_len, held))?;
        if let Some(log) = &mut self.log {
            log.record(RecordKind::Put, key, group_len, value);
        }
        Ok(())
    }

    /// Sets several keys of the group `group` (each key starts with it), as
    /// [`put_grouped`](Self::put_grouped) does one by one, but finding them by one walk of the
    /// group's records when the group is small: writing all entries of a small map costs one
    /// lookup rather than one per entry. `next` yields each key and value in turn, into the
    /// buffers it is given, and `false` when it is done.
    pub(crate) fn put_grouped_batch(
        &mut self,
        group: &[u8],
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
        mut next: impl FnMut(&mut Vec<u8>, &mut Vec<u8>) -> Result<bool>,
    ) -> Result<()> {
        /// Groups up to this size are walked; larger ones go through the index entry by entry.
        const WALK: usize = 32;
        let mut known = std::mem::take(&mut self.group_refs);
        let result = (|| {
            let mut walkable = None;
            while next(key, value)? {
                self.check_write(key, value.len())?;
                check_group(key, group.len())?;
                if !key.starts_with(group) {
                    return Err(Misuse::InvalidOption {
                        name: "group",
                        why: "a key of the batch is outside the group",
                    }
                    .into());
                }
                if self.before_write_froze()? {
                    walkable = None;
                }
                let walk = *walkable.get_or_insert_with(|| self.active.small_group(group, WALK, &mut known));
                let written = if walk {
                    self.active.put_in_known_group(&mut known, key, value, group.len())
                } else {
                    let h = self.active.hash(key);
                    self.active.put(h, key, value, group.len())
                };
                written.map_err(|held| group_mismatch(group.len(), held))?;
                if let Some(log) = &mut self.log {
                    log.record(RecordKind::Put, key, group.len(), value);
                }
            }
            Ok(())
        })();
        self.group_refs = known;
        result
    }

    /// [`before_write`](Self::before_write), telling whether it froze the mutable region.
    fn before_write_froze(&mut self) -> Result<bool> {
        let before = self.freezes;
        self.before_write()?;
        Ok(self.freezes != before)
    }

    /// Deletes `key` of the group of its first `group_len` bytes (refused as
    /// [`put_grouped`](Self::put_grouped) refuses).
    #[inline]
    pub fn delete_grouped(&mut self, key: &[u8], group_len: usize) -> Result<()> {
        self.check_write(key, 0)?;
        check_group(key, group_len)?;
        self.before_write()?;
        // A delete of a live entry counts it out of its group: fetch the group's slot while
        // the entry is looked up.
        let gh = hash_key(&key[..group_len]);
        self.active.prefetch_group(gh);
        let h = self.active.hash(key);
        self.active.delete_hashed(h, key, group_len, gh).map_err(|held| group_mismatch(group_len, held))?;
        if let Some(log) = &mut self.log {
            log.record(RecordKind::Delete, key, group_len, &[]);
        }
        Ok(())
    }

    /// Deletes `key`.
    #[inline]
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.check_write(key, 0)?;
        self.before_write()?;
        let h = self.active.hash(key);
        // Without a group, nothing is refused.
        let _ = self.active.delete(h, key, 0);
        if let Some(log) = &mut self.log {
            log.record(RecordKind::Delete, key, 0, &[]);
        }
        Ok(())
    }

    /// Appends `operand` to the value of `key` (to an empty value if it has none). This is
    /// how list state adds elements without reading the list.
    ///
    /// The value it makes must stay within [`MAX_VALUE_LEN`], else the merge is refused
    /// ([`Misuse::TooLarge`]) and changes nothing. The check reads the key's value only when
    /// the lengths the store knows cannot rule that out.
    #[inline]
    pub fn merge(&mut self, key: &[u8], operand: &[u8]) -> Result<()> {
        self.merge_hashed(self.active.hash(key), key, operand)
    }

    /// [`merge`](Self::merge) of a key whose index hash ([`key_hash`](Self::key_hash)) is known.
    #[inline]
    pub(crate) fn merge_hashed(&mut self, h: u64, key: &[u8], operand: &[u8]) -> Result<()> {
        self.check_write(key, operand.len())?;
        self.before_write()?;
        // One lookup serves the length check and the append.
        let found = self.active.find(h, key);
        let here = found.map(|r| self.active.kind_and_len(r));
        self.check_merged_len(h, key, here, operand.len())?;
        self.active.merge_at(found, h, key, operand);
        if let Some(log) = &mut self.log {
            log.record(RecordKind::Merge, key, 0, operand);
        }
        Ok(())
    }

    /// Refuses a merge of `add` bytes whose value would pass [`MAX_VALUE_LEN`], given the kind
    /// and value length of the mutable region's record for `key`, if it has one.
    #[inline]
    fn check_merged_len(&mut self, h: u64, key: &[u8], here: Option<(RecordKind, usize)>, add: usize) -> Result<()> {
        let here = match here {
            // A base here: nothing older counts.
            Some((RecordKind::Put, len)) => return merged_within(len, add),
            Some((RecordKind::Delete, _)) => return Ok(()),
            Some((RecordKind::Merge, len)) => len,
            None => 0,
        };
        if self.frozen.is_empty() && self.segments.is_empty() && self.lookaside.is_none() {
            return merged_within(here, add);
        }
        // A bound from what is known: every older layer adds at most its longest value.
        let mut bound = Some(here + add);
        for f in self.frozen.iter().rev() {
            bound = bound.zip(f.mem.lookup(h, key).map_or(Some(0), |(_, _, len)| Some(len))).map(|(a, b)| a + b);
        }
        for s in &self.segments {
            bound = bound.zip(s.seg.max_value_len()).map(|(a, b)| a + b);
        }
        if bound.is_some_and(|b| b <= MAX_VALUE_LEN) && self.lookaside.is_none() {
            return Ok(());
        }
        let len = self.get_slow(h, key)?.map_or(0, <[u8]>::len);
        merged_within(len, add)
    }

    #[inline]
    fn check_write(&mut self, key: &[u8], value_len: usize) -> Result<()> {
        if self.poisoned.is_some() {
            return Err(self.take_poison());
        }
        if self.lookaside.is_some() {
            self.drop_lookaside();
        }
        if key.len() < 2 {
            return Err(Misuse::KeyTooShort { len: key.len() }.into());
        }
        if key.len() > MAX_KEY_LEN {
            return Err(Misuse::TooLarge { what: "key", len: key.len(), limit: MAX_KEY_LEN }.into());
        }
        if value_len > MAX_VALUE_LEN {
            return Err(Misuse::TooLarge { what: "value", len: value_len, limit: MAX_VALUE_LEN }.into());
        }
        Ok(())
    }

    /// A write makes the lookaside stale. Out of line: the write path stays small.
    #[cold]
    #[inline(never)]
    fn drop_lookaside(&mut self) {
        self.lookaside = None;
    }

    /// The error that poisoned the store the first time it is asked for, then `Poisoned`.
    pub(super) fn take_poison(&mut self) -> Error {
        if self.poison_reported {
            return Error::Poisoned;
        }
        self.poison_reported = true;
        self.poisoned.replace(Error::Poisoned).unwrap_or(Error::Poisoned)
    }

    pub(super) fn poison(&mut self, e: Error) {
        if self.poisoned.is_none() {
            self.poisoned = Some(e);
        }
    }

    /// Makes room before a write: installs finished background work and freezes a full
    /// region. A write that gets an error here was not applied.
    #[inline]
    fn before_write(&mut self) -> Result<()> {
        if self.active.memory() >= self.write_buffer || self.bg.ready.load(Ordering::Acquire) {
            self.maintain()?;
        }
        Ok(())
    }

    /// Installs finished background work; freezes the mutable region when it is full.
    fn maintain(&mut self) -> Result<()> {
        self.poll_done(false);
        if self.poisoned.is_some() {
            return Err(self.take_poison());
        }
        if self.active.memory() >= self.write_buffer {
            // A write stall: the previous region must be written before another is frozen.
            self.wait_for_flush()?;
            // And another when compaction is too far behind: every read merges every
            // segment, so their number must stay bounded (as an LSM tree stops writes when
            // its newest level holds too many files).
            while self.segments.len() >= self.opts.compaction.stall_segments
                && self.compacting.is_some()
                && self.poisoned.is_none()
            {
                self.poll_done(true);
            }
            self.freeze();
        }
        Ok(())
    }

    /// Applies a write read back from a changelog (a restore), as the store first applied it,
    /// without logging it again.
    pub(crate) fn replay(&mut self, r: &Replayed<'_>) -> Result<()> {
        self.check_write(r.key, r.value.len())?;
        if r.group_len > 0 {
            check_group(r.key, r.group_len)?;
        }
        self.before_write()?;
        let written = match r.kind {
            RecordKind::Put => self.active.put(r.hash, r.key, r.value, r.group_len),
            RecordKind::Delete => self.active.delete(r.hash, r.key, r.group_len),
            RecordKind::Merge => {
                self.active.merge(r.hash, r.key, r.value);
                Ok(())
            }
        };
        written.map_err(|held| group_mismatch(r.group_len, held))
    }

    /// Starts fetching the index slot a point access of the key whose index hash
    /// ([`key_hash`](Self::key_hash)) is `h` will probe first, without waiting for it.
    #[inline]
    pub(crate) fn prefetch_hashed(&self, h: u64) {
        self.active.prefetch_write(h, 0);
    }

    /// Fetches the slot of `h` in the mutable region and in the region flushed last: for a
    /// read a little later.
    #[inline]
    pub(crate) fn prefetch_read_hashed(&self, h: u64) {
        self.active.prefetch_write(h, 0);
        if let Some(r) = &self.recent {
            r.mem.prefetch_write(h, 0);
        }
    }

    /// Fetches the record whose slot [`prefetch_read_hashed`](Self::prefetch_read_hashed)
    /// fetched a little earlier: the mutable region's, else the one of the region flushed
    /// last.
    #[inline]
    pub(crate) fn prefetch_record_hashed(&self, h: u64) {
        if !self.active.prefetch_record(h) {
            if let Some(r) = &self.recent {
                r.mem.prefetch_record(h);
            }
        }
    }

    /// The hash that indexes `key` in every layer of the store. The key group (its first two
    /// bytes) is left out, so the hash may be taken before it is set.
    #[inline]
    pub(crate) fn key_hash(key: &[u8]) -> u64 {
        hash_key(key)
    }

    /// Like [`prefetch_hashed`](Self::prefetch_hashed), for the group `prefix` (see
    /// [`scan_group`](Self::scan_group)).
    #[inline]
    pub(crate) fn prefetch_group(&self, prefix: &[u8]) {
        self.active.prefetch_group(hash_key(prefix));
    }

    /// Tells the store that a [`replay`](Self::replay) of `r` comes soon, so that the memory
    /// it will touch can be fetched while earlier writes are applied.
    #[inline]
    pub(crate) fn prefetch_replay(&self, r: &Replayed<'_>) {
        self.active.prefetch_write(r.hash, r.group_hash);
    }

    /// Makes room in the mutable region's index for `keys` more keys (fewer in a small
    /// region, see [`RESERVE_BYTES_PER_KEY`]).
    pub(crate) fn reserve_keys(&mut self, keys: usize) {
        self.active.reserve(keys.min(self.write_buffer / RESERVE_BYTES_PER_KEY));
    }

    /// Seals the changelog (see
    /// [`StoreOptions::changelog`](super::StoreOptions::changelog)); `None` without one.
    pub(crate) fn seal_changelog(&mut self) -> Option<LogSeal> {
        let mut seal = self.log.as_mut().map(Changelog::seal)?;
        // The records since the previous seal were written under the tags set since then.
        seal.schema = std::mem::replace(&mut self.log_schema, self.schema.clone());
        Some(seal)
    }

    /// Stamps the records written from now on with `tag`: the serializer versions that write
    /// them. Records keep their tag through flush and compaction. A tag that lists a state
    /// with other versions than the current one starts a new region, so that no region,
    /// segment or compaction mixes two versions of one state.
    pub fn set_schema(&mut self, tag: SchemaTag) -> Result<()> {
        if tag == *self.schema {
            return Ok(());
        }
        if self.poisoned.is_some() {
            return Err(self.take_poison());
        }
        if !self.schema.is_covered_by(&tag) {
            self.freeze();
        }
        // A log spanning a change of a state's versions records the newer ones: its records
        // are replayed as written by those (such a change comes with a restore, before the
        // first write).
        let spanned = self.log_schema.union(&tag).unwrap_or_else(|| tag.clone());
        self.log_schema = Arc::new(spanned);
        self.schema = Arc::new(tag);
        Ok(())
    }

    /// The tag the records written now get.
    pub fn schema(&self) -> &SchemaTag {
        &self.schema
    }
}

/// A write read back from a changelog, to apply with [`Store::replay`]; built on any thread
/// (its hashes are computed here, off the thread that applies it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Replayed<'a> {
    kind: RecordKind,
    key: &'a [u8],
    /// The length of the key's group (a prefix of it), 0 for none; merges have none.
    group_len: usize,
    value: &'a [u8],
    hash: u64,
    /// The group's hash, 0 for none.
    group_hash: u64,
}

impl<'a> Replayed<'a> {
    pub(crate) fn new(kind: RecordKind, key: &'a [u8], group_len: usize, value: &'a [u8]) -> Self {
        let group_len = if kind == RecordKind::Merge { 0 } else { group_len };
        let group_hash = match key.get(..group_len) {
            Some(prefix) if group_len > 0 => hash_key(prefix),
            _ => 0,
        };
        Replayed { kind, key, group_len, value, hash: hash_key(key), group_hash }
    }
}

/// [`Store::reserve_keys`] reserves at most one key per this many bytes of the mutable region,
/// so that an index sized ahead (16 bytes a slot, at most 3/4 full, a power of two) takes at
/// most a third of the region.
const RESERVE_BYTES_PER_KEY: usize = 128;
