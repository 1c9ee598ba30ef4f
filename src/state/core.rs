//! The part of a keyed backend that every kind of state reaches: the store, the current key
//! and the registered states. The handles ([`keyed`](super::keyed), [`timers`](super::timers))
//! build on it, and [`backend`](super::backend) on them.

/// The bytes in front of the key in every record key: key group and state id.
pub(crate) const PREFIX_LEN: usize = 4;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::clock::Clock;
use super::ttl::{split_ts, TtlFilter, TtlTable};
use crate::checkpoint::Origin;
use crate::codec::{CodecError, Serializer, SerializerSnapshot};
use crate::error::{Error, Misuse, Result};
use crate::format::checkpoint::OlderWriter;
use crate::format::meta::{StateKind, TtlConfig};
use crate::format::SchemaTag;
use crate::keygroup::{KeyGroup, KeyGroupRange, MaxParallelism};
use crate::store::migrate::{Convert, StateMigration};
use crate::store::{prefix_successor, Lookaside, Store};

/// The most states one backend holds (state ids are 16 bits; 0 is reserved).
pub const MAX_STATES: usize = u16::MAX as usize - 1;

/// What the backend knows of a registered state.
pub(crate) struct StateMeta {
    pub(crate) name: Arc<str>,
    pub(crate) kind: StateKind,
    pub(crate) serializers: Vec<SerializerSnapshot>,
    pub(crate) ttl: Option<TtlConfig>,
    /// Where incremental TTL cleanup goes on.
    pub(crate) cursor: Option<Vec<u8>>,
    /// It came from a snapshot.
    pub(crate) restored: bool,
    /// It was registered since the backend opened (restored states wait for that).
    pub(crate) registered: bool,
    /// The state's entry in the tags of the records its present serializers write.
    pub(crate) tag: Vec<u32>,
    /// Its writers before the present serializers, oldest first.
    pub(crate) older: Vec<OlderWriter>,
    /// What its handles do on access while older writers' records may be stored.
    pub(crate) lazy: Option<Arc<Lazy>>,
}

/// What a handle of a state whose older writers may still have records does on access: the
/// record's tag entry tells whether it must be converted first.
pub(crate) struct Lazy {
    /// The entry of the present writer.
    pub(crate) tag: Vec<u32>,
    pub(crate) convert: Convert,
    /// Cleared once no such record is left (after an eager migration).
    pub(crate) pending: std::sync::atomic::AtomicBool,
}

impl Lazy {
    fn new(tag: Vec<u32>, convert: Convert) -> Arc<Self> {
        Arc::new(Lazy { tag, convert, pending: std::sync::atomic::AtomicBool::new(true) })
    }

    /// Whether records of older writers may still be stored.
    #[inline]
    pub(crate) fn pending(&self) -> bool {
        self.pending.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lazy").field("tag", &self.tag).finish_non_exhaustive()
    }
}

/// See [`Core::ahead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ahead {
    Nothing,
    /// The record of a state with one record per key (all kinds but map state).
    Record,
    /// The group of a map state's entries.
    Group,
}

/// The part of the backend that does not depend on the key type.
pub(crate) struct Core {
    pub(crate) store: Store,
    pub(crate) id: u64,
    pub(crate) max_parallelism: MaxParallelism,
    pub(crate) range: KeyGroupRange,
    /// `key group | state | serialized current key`, then whatever the last call put behind
    /// it (namespace, user key): the record key is built here, in place.
    pub(crate) key: Vec<u8>,
    /// Where the serialized current key ends in `key`.
    pub(crate) key_len: usize,
    pub(crate) key_set: bool,
    /// What the last access went through, when it was under an empty namespace: then `key`
    /// still holds its state's id, and `set_current_key` fetches the index slot that the same
    /// access for the new key will probe first, ahead of time.
    pub(crate) ahead: Ahead,
    /// The state id and the store's index hash of `key` as `set_current_key` left it, for the
    /// access that follows under the same state and no namespace (see [`key_hash`](Self::key_hash)).
    pub(crate) hint: Option<(u16, u64)>,
    /// The value being built.
    pub(crate) val: Vec<u8>,
    /// Spare room for multi-step operations.
    pub(crate) scratch: Vec<u8>,
    /// A record converted from an older writer's, as a read sees it.
    pub(crate) converted: Vec<u8>,
    pub(crate) states: BTreeMap<u16, StateMeta>,
    pub(crate) by_name: HashMap<Arc<str>, u16>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) ttl: Arc<TtlTable>,
    pub(crate) ttl_filter: Arc<TtlFilter>,
    /// Per timer state: the earliest timer of each key group of the range.
    pub(crate) timer_heads: HashMap<u16, Vec<Head>>,
    /// Whether timers are firing, and the heads that registrations moved meanwhile.
    pub(crate) timer_firing: bool,
    pub(crate) timer_changes: Vec<(u16, usize)>,
    /// Per event-time timer state: the watermark its service was last advanced to.
    pub(crate) watermarks: HashMap<u16, i64>,
    /// The job the backend belongs to (empty when unnamed).
    pub(crate) job: String,
    /// Where a restore took the store's segments from: (checkpoint storage, segment id,
    /// shared file), until the first checkpoint into that storage reuses them.
    pub(crate) origin: Vec<Origin>,
}

impl Core {
    /// The writers of the restored state `name` not registered yet, newest first (its
    /// present writer, then the older ones), with its kind.
    pub(crate) fn restored_writers(&self, name: &str) -> Option<(StateKind, Vec<OlderWriter>)> {
        let meta = self.states.get(self.by_name.get(name)?)?;
        if !meta.restored || meta.registered {
            return None;
        }
        let present =
            OlderWriter { tag: meta.tag.clone(), serializers: meta.serializers.clone(), ttl: meta.ttl.is_some() };
        Some((meta.kind, std::iter::once(present).chain(meta.older.iter().rev().cloned()).collect()))
    }

    /// Registers a state, or finds it registered with the same kind and serializers; a
    /// restored state may come with other serializers or another TTL setting than its snapshot's when `convert` (checked by
    /// the caller against every stored writer, see [`evolve`](super::evolve)) converts the
    /// records of the older ones. Gives what the handle does on access while such records may
    /// be stored.
    pub(crate) fn register_evolving(
        &mut self,
        name: &str,
        kind: StateKind,
        serializers: Vec<SerializerSnapshot>,
        ttl: Option<TtlConfig>,
        convert: Option<Convert>,
    ) -> Result<(u16, Arc<str>, Option<Arc<Lazy>>)> {
        if let Some(&id) = self.by_name.get(name) {
            let Some(meta) = self.states.get_mut(&id) else {
                return Err(Misuse::ForeignHandle.into());
            };
            if meta.restored && !meta.registered && meta.kind == kind {
                let same = meta.serializers == serializers && meta.ttl.is_some() == ttl.is_some();
                if !same {
                    let Some(i) =
                        convert.is_none().then(|| meta.serializers.iter().zip(&serializers).position(|(a, b)| a != b))
                    else {
                        // The present writer becomes an older one.
                        let present = OlderWriter {
                            tag: std::mem::take(&mut meta.tag),
                            serializers: std::mem::replace(&mut meta.serializers, serializers),
                            ttl: meta.ttl.is_some(),
                        };
                        meta.older.push(present);
                        meta.tag = fresh_tag(&meta.serializers, &meta.older);
                        return self.finish_restored(id, kind, ttl, convert);
                    };
                    let i = i.unwrap_or(0);
                    return Err(crate::error::Incompatibility {
                        state: Some(name.to_owned()),
                        part: serializer_part(kind, i),
                        stored: meta.serializers[i].clone(),
                        requested: serializers.get(i).cloned().unwrap_or_else(|| SerializerSnapshot::new("", 0)),
                        why: "the restored state was written by another serializer".into(),
                    }
                    .into());
                }
                return self.finish_restored(id, kind, ttl, convert);
            }
            if meta.kind != kind || meta.serializers != serializers || meta.ttl != ttl {
                return Err(Misuse::StateMismatch {
                    name: name.to_owned(),
                    existing: describe(meta.kind, &meta.serializers, meta.ttl.is_some()),
                    requested: describe(kind, &serializers, ttl.is_some()),
                }
                .into());
            }
            let lazy = match (&convert, meta.older.is_empty()) {
                (Some(_), false) => meta.lazy.clone(),
                _ => None,
            };
            return Ok((id, meta.name.clone(), lazy));
        }
        if self.states.len() >= MAX_STATES {
            return Err(Misuse::TooManyStates { limit: MAX_STATES }.into());
        }
        // The id follows from the name, so that every parallel instance of a job gives a
        // state the same id whatever order they register states in (rescaling combines their
        // snapshots without rewriting keys); a taken id moves on to the next free one.
        let mut id = preferred_state_id(name);
        while self.states.contains_key(&id) {
            id = id % MAX_STATES as u16 + 1;
        }
        let name: Arc<str> = name.into();
        // The store stamps the state's records with its serializers' versions.
        let tag: Vec<u32> = serializers.iter().map(|s| s.version).collect();
        self.store.set_schema(SchemaTag::new(self.versions().chain([(id, tag.clone())])))?;
        if let Some(t) = ttl {
            self.ttl.set(id, t, kind == StateKind::List);
        }
        self.states.insert(
            id,
            StateMeta {
                name: name.clone(),
                kind,
                serializers,
                ttl,
                cursor: None,
                restored: false,
                registered: true,
                tag,
                older: Vec::new(),
                lazy: None,
            },
        );
        self.by_name.insert(name.clone(), id);
        Ok((id, name, None))
    }

    /// Marks the restored state `id` registered with `ttl`, stamps the records written from
    /// now on with its present writer, and registers the conversion of the older writers'
    /// records with the store.
    fn finish_restored(
        &mut self,
        id: u16,
        kind: StateKind,
        ttl: Option<TtlConfig>,
        convert: Option<Convert>,
    ) -> Result<(u16, Arc<str>, Option<Arc<Lazy>>)> {
        let Some(meta) = self.states.get_mut(&id) else { return Err(Misuse::ForeignHandle.into()) };
        meta.registered = true;
        meta.ttl = ttl;
        let name = meta.name.clone();
        let tag = meta.tag.clone();
        let lazy = match convert {
            Some(convert) if !meta.older.is_empty() => {
                self.store.set_migration(
                    id,
                    Some(StateMigration { name: name.clone(), tag: tag.clone(), convert: convert.clone() }),
                );
                let lazy = Lazy::new(tag, convert);
                meta.lazy = Some(lazy.clone());
                Some(lazy)
            }
            _ => None,
        };
        match ttl {
            Some(t) => self.ttl.set(id, t, kind == StateKind::List),
            None => self.ttl.remove(id),
        }
        self.store.set_schema(SchemaTag::new(self.versions()))?;
        Ok((id, name, lazy))
    }

    /// Converts the record at `key` if an older writer of the state wrote it, writing the
    /// converted record back (of the group of its first `group` bytes, if not 0).
    pub(crate) fn migrate_record(&mut self, state: u16, name: &str, lazy: &Lazy, group: usize) -> Result<()> {
        migrate_key(&mut self.store, &mut self.scratch, &self.key, state, name, lazy, group)
    }

    /// Converts the record at `key` into `out` if an older writer of the state wrote it,
    /// leaving the store as it is (see [`convert_key`]).
    pub(crate) fn convert_record(&mut self, state: u16, name: &str, lazy: &Lazy, out: &mut Vec<u8>) -> Result<bool> {
        convert_key(&mut self.store, &self.key, state, name, lazy, out)
    }

    /// Converts every record of the group `core.key[..group]` (a map's entries) that an
    /// older writer wrote.
    pub(crate) fn migrate_group(&mut self, state: u16, name: &str, lazy: &Lazy, group: usize) -> Result<()> {
        let mut keys = KeyList::default();
        {
            let mut it = self.store.scan_group(&self.key[..group])?;
            while let Some((k, _)) = it.next_entry()? {
                keys.push(k);
            }
        }
        for i in 0..keys.len() {
            migrate_key(&mut self.store, &mut self.scratch, keys.get(i), state, name, lazy, group)?;
        }
        Ok(())
    }

    /// Per state, the versions of its serializers.
    pub(crate) fn versions(&self) -> impl Iterator<Item = (u16, Vec<u32>)> + '_ {
        self.states.iter().map(|(&id, m)| (id, m.tag.clone()))
    }

    /// Checks that a handle was made by this backend.
    #[inline]
    pub(crate) fn check(&self, backend: u64) -> Result<()> {
        if backend == self.id {
            Ok(())
        } else {
            Err(Misuse::ForeignHandle.into())
        }
    }

    /// Builds `key group | state | current key | namespace` in `key`.
    #[inline]
    pub(crate) fn build_key(&mut self, state: u16, namespace: &[u8]) -> Result<()> {
        if !self.key_set {
            return Err(Misuse::NoCurrentKey.into());
        }
        self.key.truncate(self.key_len);
        self.key[2..PREFIX_LEN].copy_from_slice(&state.to_be_bytes());
        if !namespace.is_empty() {
            self.key.extend_from_slice(namespace);
        }
        Ok(())
    }

    /// The store's index hash of `key`: the one `set_current_key` took when `key` is still the
    /// current key of the same state with nothing behind it, else computed.
    #[inline(always)]
    pub(crate) fn key_hash(&self) -> u64 {
        match self.hint {
            Some((state, h)) if self.key.len() == self.key_len && self.key[2..PREFIX_LEN] == state.to_be_bytes() => h,
            _ => Store::key_hash(&self.key),
        }
    }

    /// The serialized current key.
    #[inline]
    pub(crate) fn key_bytes(&self) -> &[u8] {
        &self.key[PREFIX_LEN..self.key_len]
    }

    /// The current key group.
    #[inline]
    pub(crate) fn key_group(&self) -> KeyGroup {
        KeyGroup::from_be_bytes([self.key[0], self.key[1]])
    }

    /// Sets the current key from its serialized bytes (known to be in range).
    pub(crate) fn set_raw_key(&mut self, key_group: KeyGroup, key: &[u8]) {
        self.hint = None;
        self.key.clear();
        self.key.extend_from_slice(&key_group.to_be_bytes());
        self.key.extend_from_slice(&[0, 0]);
        self.key.extend_from_slice(key);
        self.key_len = self.key.len();
        self.key_set = true;
    }

    #[inline]
    pub(crate) fn now(&self) -> i64 {
        self.clock.now_millis()
    }

    /// Checks `entries` more entries of a state with TTL and removes the expired ones.
    /// `group_of` gives the group length of a record of a grouped (map) state.
    pub(crate) fn incremental_cleanup(
        &mut self,
        state: u16,
        entries: usize,
        group_of: Option<GroupOf<'_>>,
    ) -> Result<()> {
        let Some(meta) = self.states.get(&state) else { return Ok(()) };
        let Some(ttl) = meta.ttl else { return Ok(()) };
        let list = meta.kind == StateKind::List;
        let now = self.now();
        let range = self.range;
        if range.is_empty() {
            return Ok(());
        }
        let mut cursor = meta.cursor.clone().unwrap_or_else(|| state_prefix(range.start(), state).to_vec());
        let mut expired: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut seen = 0;
        // At most one pass over the key groups per call.
        for _ in 0..=range.len() {
            if seen >= entries {
                break;
            }
            let kg = KeyGroup::from_be_bytes([cursor[0], cursor[1]]);
            let upper = state_prefix(kg, state.wrapping_add(1));
            let upper = if state == u16::MAX { prefix_successor(&cursor[..2]) } else { Some(upper.to_vec()) };
            let mut it = self.store.scan_range(&cursor, upper.as_deref())?;
            let mut exhausted = true;
            while let Some((k, v)) = it.next_entry()? {
                seen += 1;
                if list {
                    let mut kept = Vec::new();
                    if let super::ttl::Decision::Rewrite =
                        super::ttl::list_expiry(v, &ttl, now, &mut kept).map_err(|e| codec_error(&meta.name, e))?
                    {
                        expired.push((k.to_vec(), (!kept.is_empty()).then_some(kept)));
                    }
                } else if split_ts(v).is_some_and(|(ts, _)| ttl.expired(ts, now)) {
                    expired.push((k.to_vec(), None));
                }
                if seen >= entries {
                    cursor = k.to_vec();
                    cursor.push(0);
                    exhausted = false;
                    break;
                }
            }
            drop(it);
            if exhausted {
                let next = if kg >= range.end() { range.start() } else { kg + 1 };
                cursor = state_prefix(next, state).to_vec();
            }
        }
        if let Some(meta) = self.states.get_mut(&state) {
            meta.cursor = Some(cursor);
        }
        for (k, v) in expired {
            match (v, group_of.and_then(|g| g(&k))) {
                (Some(v), _) => self.store.put(&k, &v)?,
                (None, Some(group)) => self.store.delete_grouped(&k, group)?,
                (None, None) => self.store.delete(&k)?,
            }
        }
        Ok(())
    }

    /// The serialized keys of one key group that have entries in `state` under `namespace`,
    /// each once, in key order.
    pub(crate) fn keys_in_group<K: Serializer>(
        &mut self,
        key_serializer: &K,
        kg: KeyGroup,
        state: u16,
        namespace: &[u8],
        out: &mut KeyList,
        mut lookaside: Option<&mut Lookaside>,
    ) -> Result<()> {
        out.clear();
        let prefix = state_prefix(kg, state);
        if let Some(l) = lookaside.as_deref_mut() {
            l.reset(&prefix);
        }
        let mut it = self.store.scan_prefix(&prefix)?;
        while let Some((k, v)) = it.next_entry()? {
            if let Some(l) = lookaside.as_deref_mut() {
                l.push(k, v);
            }
            // The store returns keys of the prefix only; damaged data that breaks its key
            // order must not break this.
            let Some(full) = k.strip_prefix(&prefix[..]) else {
                return Err(codec_error("<key>", CodecError::Invalid("a record outside its state's key range")));
            };
            let mut rest = full;
            key_serializer.read(&mut rest).map_err(|e| codec_error("<key>", e))?;
            let key = &full[..full.len() - rest.len()];
            if !rest.starts_with(namespace) {
                continue;
            }
            if out.last() != Some(key) {
                out.push(key);
            }
        }
        Ok(())
    }
}

/// Converts the record at `key` if an older writer of state `state` wrote it, writing the
/// converted record back (of the group of its first `group` bytes, if not 0). A conversion
/// that fails (or panics) changes nothing.
fn migrate_key(
    store: &mut Store,
    scratch: &mut Vec<u8>,
    key: &[u8],
    state: u16,
    name: &str,
    lazy: &Lazy,
    group: usize,
) -> Result<()> {
    if !convert_key(store, key, state, name, lazy, scratch)? {
        return Ok(());
    }
    if group == 0 {
        store.put(key, scratch)
    } else {
        store.put_grouped(key, group, scratch)
    }
}

/// Converts the record at `key` into `out` if an older writer of state `state` wrote it:
/// `Ok(true)` then, `Ok(false)` when there is no record or the present writer wrote it.
fn convert_key(store: &mut Store, key: &[u8], state: u16, name: &str, lazy: &Lazy, out: &mut Vec<u8>) -> Result<bool> {
    let Some((raw, tag)) = store.get_with_schema(key)? else { return Ok(false) };
    let Some(entry) = tag.of(state).filter(|e| *e != lazy.tag) else { return Ok(false) };
    out.clear();
    let convert = std::panic::AssertUnwindSafe(|| (lazy.convert)(entry, raw, out));
    match std::panic::catch_unwind(convert).unwrap_or_else(|_| Err("the conversion panicked".into())) {
        Ok(()) => Ok(true),
        Err(why) => Err(crate::store::migrate::migration_error(name, state, key, why)),
    }
}

/// Serialized keys, one after the other in one buffer: listing the keys of a key group
/// allocates nothing per key.
#[derive(Default)]
pub(crate) struct KeyList {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl KeyList {
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    pub(crate) fn push(&mut self, key: &[u8]) {
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len());
    }

    pub(crate) fn last(&self) -> Option<&[u8]> {
        let end = *self.ends.last()?;
        let start = self.ends.len().checked_sub(2).map_or(0, |i| self.ends[i]);
        Some(&self.bytes[start..end])
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// The group length of a record of a grouped (map) state, if it parses.
pub(crate) type GroupOf<'a> = &'a dyn Fn(&[u8]) -> Option<usize>;

/// Which serializer of a state of `kind` is the `i`-th (`StateMetaInfo::serializers`).
fn serializer_part(kind: StateKind, i: usize) -> crate::SerializerPart {
    use crate::SerializerPart::{Key, Namespace, UserKey, Value};
    match (kind, i) {
        (StateKind::Timers, 0) => Key,
        (StateKind::Timers, _) => Namespace,
        (StateKind::Map, 1) => UserKey,
        (_, 0) => Namespace,
        _ => Value,
    }
}

/// The tag entry of a new writer with `serializers` after `older`: their versions and a
/// generation number no older writer has.
fn fresh_tag(serializers: &[SerializerSnapshot], older: &[OlderWriter]) -> Vec<u32> {
    let mut generation = u32::try_from(older.len()).unwrap_or(u32::MAX);
    loop {
        let tag: Vec<u32> = serializers.iter().map(|s| s.version).chain([generation]).collect();
        if !older.iter().any(|w| w.tag == tag) {
            return tag;
        }
        generation = generation.wrapping_add(1);
    }
}

/// The id a state named `name` gets unless it is taken: a stable hash of the name
/// ([`key_hash64`](crate::format::key_hash64), part of the format) in `1 ..= MAX_STATES`.
pub(crate) fn preferred_state_id(name: &str) -> u16 {
    (crate::format::key_hash64(name.as_bytes()) % MAX_STATES as u64) as u16 + 1
}

/// `key group | state`.
#[inline]
pub(crate) fn state_prefix(kg: KeyGroup, state: u16) -> [u8; PREFIX_LEN] {
    let [a, b] = kg.to_be_bytes();
    let [c, d] = state.to_be_bytes();
    [a, b, c, d]
}

pub(crate) fn codec_error(state: &str, source: CodecError) -> Error {
    Error::Codec { state: state.to_owned(), source }
}

fn describe(kind: StateKind, serializers: &[SerializerSnapshot], ttl: bool) -> String {
    let names: Vec<&str> = serializers.iter().map(|s| s.identity.as_str()).collect();
    format!("{kind} ({}){}", names.join(", "), if ttl { " with TTL" } else { "" })
}

/// The keyed state of one parallel instance: a store, the key groups it owns, and the current
/// key that state calls act on. See the [module documentation](super).
pub struct KeyedBackend<K: Serializer> {
    pub(crate) core: Core,
    pub(crate) key_serializer: K,
    pub(crate) key_hash: Option<fn(&K::Value) -> i32>,
    /// Its name, recorded in snapshots.
    pub(crate) key_hash_name: Arc<str>,
}

impl<K: Serializer> std::fmt::Debug for KeyedBackend<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedBackend")
            .field("key_groups", &self.core.range)
            .field("max_parallelism", &self.core.max_parallelism.get())
            .field("key_hash", &self.key_hash_name)
            .field("states", &self.core.states.len())
            .finish()
    }
}

/// The earliest timer of one key group, as far as the service knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    /// Must be read from the store.
    Unknown,
    /// The key group has no timers.
    Empty,
    /// The earliest timer's timestamp.
    At(i64),
}
