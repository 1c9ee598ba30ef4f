//! The keyed state backend: one store, one key-group range, a current key.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::timers::Head;
use super::ttl::{split_ts, TtlConfig, TtlFilter, TtlTable};
use super::OperatorStateBackend;
use super::{Clock, StateKind, SystemClock};
use crate::checkpoint::{origin_for, prepare_store, replay, Origin, Prepared, RestoreSource, RestoreTarget, Restored};
use crate::codec::{CodecError, Serializer, SerializerSnapshot};
use crate::error::{Error, Misuse, Result};
use crate::format::checkpoint::{SnapshotMeta, StateMetaInfo};
use crate::format::SchemaTag;
use crate::keygroup::{
    hash_bytes, java_hash_i32, java_hash_i64, java_hash_str, KeyGroup, KeyGroupRange, MaxParallelism, DEFAULT_KEY_HASH,
    JAVA_KEY_HASH,
};
use crate::store::{prefix_successor, LogSeal, Lookaside, Store, StoreOptions, StoreSnapshot};

/// The most states one backend holds (state ids are 16 bits; 0 is reserved).
pub const MAX_STATES: usize = u16::MAX as usize - 1;

/// The bytes in front of the key in every record key: key group and state id.
pub(crate) const PREFIX_LEN: usize = 4;

static NEXT_BACKEND_ID: AtomicU64 = AtomicU64::new(1);

/// Keys whose Java `hashCode` Flink uses to route them; [`KeyedBackendBuilder::java_key_hash`]
/// routes them the same way.
pub trait JavaHashCode {
    /// Java's `hashCode` of the equivalent Java value.
    fn java_hash_code(&self) -> i32;
}

impl JavaHashCode for i32 {
    fn java_hash_code(&self) -> i32 {
        java_hash_i32(*self)
    }
}

impl JavaHashCode for i64 {
    fn java_hash_code(&self) -> i32 {
        java_hash_i64(*self)
    }
}

impl JavaHashCode for String {
    fn java_hash_code(&self) -> i32 {
        java_hash_str(self)
    }
}

/// A key-routing hash other than the default, with the name snapshots record for it.
struct RoutingHash<V> {
    name: String,
    hash: fn(&V) -> i32,
    /// One of this crate's hashes, whose name is one of the built-in names.
    built_in: bool,
}

/// Options of a [`KeyedBackend`]; ends in [`open`](Self::open).
pub struct KeyedBackendBuilder<K: Serializer> {
    key_serializer: K,
    key_hash: Option<RoutingHash<K::Value>>,
    max_parallelism: u32,
    range: Option<KeyGroupRange>,
    store: StoreOptions,
    clock: Arc<dyn Clock>,
    job: Option<String>,
}

impl<K: Serializer> KeyedBackendBuilder<K> {
    /// The job this backend belongs to, recorded in its snapshots: a restore refuses to
    /// combine snapshots of different jobs. Every parallel instance of a job gives the same
    /// name. A restored backend without one takes its snapshots'.
    #[must_use]
    pub fn job(mut self, job: impl Into<String>) -> Self {
        self.job = Some(job.into());
        self
    }

    /// The max parallelism (the number of key groups); 128 by default.
    #[must_use]
    pub fn max_parallelism(mut self, max_parallelism: u32) -> Self {
        self.max_parallelism = max_parallelism;
        self
    }

    /// The key groups this backend owns; all of them by default.
    #[must_use]
    pub fn key_groups(mut self, range: KeyGroupRange) -> Self {
        self.range = Some(range);
        self
    }

    /// Options of the store underneath (memory budget, file system, ...). A compaction filter
    /// set there runs after the backend's TTL filter, on the records that one keeps, with keys
    /// and values as `format-spec/state-records.md` lays them out.
    #[must_use]
    pub fn store_options(mut self, options: StoreOptions) -> Self {
        self.store = options;
        self
    }

    /// The clock of TTL and processing time; the system clock by default.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Routes keys by a hash of their own, known by `name`. By default a key's hash is
    /// MurmurHash3 of its serialized bytes, known by
    /// [`DEFAULT_KEY_HASH`](crate::keygroup::DEFAULT_KEY_HASH).
    ///
    /// Snapshots record the name, and a restore refuses snapshots whose keys were routed by
    /// a hash of another name ([`Misuse::KeyHashMismatch`]): with another hash every key
    /// would be looked for in the wrong key group. The name stands for the function: give a
    /// new one whenever the function changes. It must not be empty nor one of the built-in
    /// names ([`DEFAULT_KEY_HASH`](crate::keygroup::DEFAULT_KEY_HASH),
    /// [`JAVA_KEY_HASH`](crate::keygroup::JAVA_KEY_HASH)), else [`open`](Self::open) and
    /// [`restore`](Self::restore) refuse it ([`Misuse::InvalidOption`]) before anything is
    /// written. The last of `key_hash` and [`java_key_hash`](Self::java_key_hash) called wins.
    #[must_use]
    pub fn key_hash(mut self, name: impl Into<String>, hash: fn(&K::Value) -> i32) -> Self {
        self.key_hash = Some(RoutingHash { name: name.into(), hash, built_in: false });
        self
    }

    /// Routes keys by Java's `hashCode`, so that `i32`, `i64` and `String` keys land in the key
    /// groups Flink would put them in. Snapshots record it as
    /// [`JAVA_KEY_HASH`](crate::keygroup::JAVA_KEY_HASH).
    #[must_use]
    pub fn java_key_hash(mut self) -> Self
    where
        K::Value: JavaHashCode,
    {
        self.key_hash = Some(RoutingHash { name: JAVA_KEY_HASH.into(), hash: |k| k.java_hash_code(), built_in: true });
        self
    }

    /// The name of the key-routing hash, checked.
    fn key_hash_name(&self) -> Result<Arc<str>> {
        let Some(h) = &self.key_hash else { return Ok(DEFAULT_KEY_HASH.into()) };
        if h.name.is_empty() {
            return Err(Misuse::InvalidOption { name: "key_hash", why: "the hash needs a name" }.into());
        }
        if !h.built_in && [DEFAULT_KEY_HASH, JAVA_KEY_HASH].contains(&h.name.as_str()) {
            return Err(Misuse::InvalidOption { name: "key_hash", why: "the name is that of a built-in hash" }.into());
        }
        Ok(h.name.as_str().into())
    }

    /// Opens the backend on a new store in `dir`. A directory that already holds a store with
    /// state is refused ([`Misuse::NotEmpty`]): keyed state comes back from checkpoints. One
    /// that holds files of another's is refused too ([`Misuse::ForeignFile`]). Either check
    /// comes before anything in the directory is written or removed.
    pub fn open(self, dir: impl AsRef<Path>) -> Result<KeyedBackend<K>> {
        let dir = dir.as_ref();
        let key_hash = self.key_hash_name()?;
        // Checked before the store opens, which collects what a crash left behind.
        if !crate::store::holds_no_state(self.store.file_system_ref().as_ref(), dir)? {
            return Err(Misuse::NotEmpty.into());
        }
        self.build(dir, key_hash, None)
    }

    /// Opens the backend on a new store in `dir` (which must hold no store) with the state of
    /// `sources`: one checkpoint or savepoint, or several whose key groups together cover the
    /// backend's (rescaling). Checkpoint segments are linked or copied, never rewritten, and
    /// only the backend's key groups are visible; savepoints are read into new segments.
    /// States come back typed when they are registered again with the same kind and
    /// serializers. The snapshots' operator state comes back in [`Restored`]. A restore that
    /// fails removes what it put in `dir` (best effort), so that it can be tried again there;
    /// one a crash interrupted leaves files there, and is tried again in another directory.
    pub fn restore(self, dir: impl AsRef<Path>, sources: &[RestoreSource]) -> Result<(KeyedBackend<K>, Restored)> {
        let dir = dir.as_ref();
        let max_parallelism = MaxParallelism::new(self.max_parallelism)?;
        let range = self.checked_range(max_parallelism)?;
        let key_hash = self.key_hash_name()?;
        let fs = self.store.file_system_ref().clone();
        crate::io::create_dir_durable(fs.as_ref(), dir).map_err(|e| Error::io(dir, e))?;
        if !fs.list(dir).map_err(|e| Error::io(dir, e))?.is_empty() {
            return Err(Misuse::NotEmpty.into());
        }
        let target = RestoreTarget {
            range,
            max_parallelism,
            key_serializer: &self.key_serializer.snapshot(),
            key_hash: &key_hash,
        };
        let prepared = prepare_store(sources, &fs, dir, &target, self.store.writer_options());
        let built = prepared.and_then(|prepared| {
            let restored = prepared.restored.clone();
            Ok((self.build(dir, key_hash, Some(prepared))?, restored))
        });
        if built.is_err() {
            // The directory was empty: what the failed restore put there goes (best effort),
            // so that the restore can be tried again in it.
            if let Ok(names) = fs.list(dir) {
                for name in names {
                    let _ = fs.remove(&dir.join(name));
                }
                let _ = fs.sync_dir(dir);
            }
        }
        built
    }

    fn checked_range(&self, max_parallelism: MaxParallelism) -> Result<KeyGroupRange> {
        Ok(match self.range {
            Some(r) => {
                if !r.is_empty() && u32::from(r.end()) >= max_parallelism.get() {
                    return Err(Misuse::InvalidOption {
                        name: "key_groups",
                        why: "the range reaches beyond the max parallelism",
                    }
                    .into());
                }
                r
            }
            None => max_parallelism.range(),
        })
    }

    /// Opens the store; `key_hash` is the checked name of the routing hash.
    fn build(self, dir: &Path, key_hash: Arc<str>, prepared: Option<Prepared>) -> Result<KeyedBackend<K>> {
        let max_parallelism = MaxParallelism::new(self.max_parallelism)?;
        let range = self.checked_range(max_parallelism)?;
        let ttl = Arc::new(TtlTable::default());
        let filter = Arc::new(TtlFilter { table: ttl.clone(), clock: self.clock.clone() });
        // A changelog to replay gets both processors: compaction waits for it.
        let replays = prepared.as_ref().is_some_and(|p| !p.replay.is_empty());
        // A filter the caller set runs after the TTL filter, on what that one keeps.
        let compaction: Arc<dyn crate::store::CompactionFilter> = match self.store.compaction_filter_set() {
            Some(then) => Arc::new(crate::store::compaction::Chained { first: filter.clone(), then }),
            None => filter.clone(),
        };
        let store = self.store.compaction_filter(compaction).hold_compaction(replays).open(dir)?;
        let mut core = Core {
            store,
            id: NEXT_BACKEND_ID.fetch_add(1, Ordering::Relaxed),
            max_parallelism,
            range,
            key: vec![0; PREFIX_LEN],
            key_len: PREFIX_LEN,
            key_set: false,
            ahead: Ahead::Nothing,
            val: Vec::with_capacity(64),
            scratch: Vec::new(),
            states: BTreeMap::new(),
            by_name: HashMap::new(),
            clock: self.clock,
            ttl,
            ttl_filter: filter,
            timer_heads: HashMap::new(),
            timer_firing: false,
            timer_changes: Vec::new(),
            watermarks: HashMap::new(),
            origin: Vec::new(),
            job: String::new(),
        };
        let restored_job = prepared.as_ref().map(|p| p.job.clone());
        core.job = self.job.clone().or(restored_job).unwrap_or_default();
        if let Some(p) = prepared {
            for r in &p.replay {
                replay(&mut core.store, r)?;
            }
            core.store.release_compaction();
            for s in p.states {
                let name: Arc<str> = s.name.as_str().into();
                if let Some(t) = s.ttl {
                    core.ttl.set(s.id, t, s.kind == StateKind::List);
                }
                core.by_name.insert(name.clone(), s.id);
                core.states.insert(
                    s.id,
                    StateMeta {
                        name,
                        kind: s.kind,
                        serializers: s.serializers,
                        ttl: s.ttl,
                        cursor: None,
                        restored: true,
                        registered: false,
                    },
                );
            }
            core.origin = p.origin;
            let tag = SchemaTag::new(core.versions());
            core.store.set_schema(tag)?;
        }
        Ok(KeyedBackend {
            core,
            key_serializer: self.key_serializer,
            key_hash: self.key_hash.map(|h| h.hash),
            key_hash_name: key_hash,
        })
    }
}

/// The synchronous part of a snapshot of a keyed backend.
pub(crate) struct SnapshotParts {
    /// The store's frozen view, unless a checkpoint stores only the changelog.
    pub(crate) store: Option<StoreSnapshot>,
    /// The changelog sealed at the barrier, for a checkpoint of a store that keeps one.
    pub(crate) log: Option<LogSeal>,
    /// The meta info, with the operator state.
    pub(crate) meta: SnapshotMeta,
    /// The store's next segment id.
    pub(crate) next_segment_id: u64,
}

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
    /// The value being built.
    pub(crate) val: Vec<u8>,
    /// Spare room for multi-step operations.
    pub(crate) scratch: Vec<u8>,
    pub(crate) states: BTreeMap<u16, StateMeta>,
    by_name: HashMap<Arc<str>, u16>,
    pub(crate) clock: Arc<dyn Clock>,
    ttl: Arc<TtlTable>,
    ttl_filter: Arc<TtlFilter>,
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
    origin: Vec<Origin>,
}

impl Core {
    /// Registers a state, or finds it registered with the same kind and serializers.
    pub(crate) fn register(
        &mut self,
        name: &str,
        kind: StateKind,
        serializers: Vec<SerializerSnapshot>,
        ttl: Option<TtlConfig>,
    ) -> Result<(u16, Arc<str>)> {
        if let Some(&id) = self.by_name.get(name) {
            let Some(meta) = self.states.get_mut(&id) else {
                return Err(Misuse::ForeignHandle.into());
            };
            if !meta.registered
                && meta.kind == kind
                && meta.serializers == serializers
                && meta.ttl.is_some() == ttl.is_some()
            {
                // A restored state, registered again: its TTL may have changed.
                meta.registered = true;
                meta.ttl = ttl;
                if let Some(t) = ttl {
                    self.ttl.set(id, t, kind == StateKind::List);
                }
                return Ok((id, meta.name.clone()));
            }
            // A restored state whose data another serializer wrote.
            let differs = meta.serializers.iter().zip(&serializers).position(|(a, b)| a != b);
            if let Some(i) = differs.filter(|_| meta.restored && meta.kind == kind) {
                return Err(crate::error::Incompatibility {
                    state: Some(name.to_owned()),
                    part: serializer_part(kind, i),
                    stored: meta.serializers[i].clone(),
                    requested: serializers[i].clone(),
                    why: "the restored state was written by another serializer".into(),
                }
                .into());
            }
            if meta.kind != kind || meta.serializers != serializers || meta.ttl != ttl {
                return Err(Misuse::StateMismatch {
                    name: name.to_owned(),
                    existing: describe(meta.kind, &meta.serializers, meta.ttl.is_some()),
                    requested: describe(kind, &serializers, ttl.is_some()),
                }
                .into());
            }
            return Ok((id, meta.name.clone()));
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
        let versions = serializers.iter().map(|s| s.version).collect();
        self.store.set_schema(SchemaTag::new(self.versions().chain([(id, versions)])))?;
        if let Some(t) = ttl {
            self.ttl.set(id, t, kind == StateKind::List);
        }
        self.states.insert(
            id,
            StateMeta { name: name.clone(), kind, serializers, ttl, cursor: None, restored: false, registered: true },
        );
        self.by_name.insert(name.clone(), id);
        Ok((id, name))
    }

    /// Per state, the versions of its serializers.
    fn versions(&self) -> impl Iterator<Item = (u16, Vec<u32>)> + '_ {
        self.states.iter().map(|(&id, m)| (id, m.serializers.iter().map(|s| s.version).collect()))
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

/// Serialized keys, one after the other in one buffer: listing the keys of a key group
/// allocates nothing per key.
#[derive(Default)]
pub(crate) struct KeyList {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl KeyList {
    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    fn push(&mut self, key: &[u8]) {
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len());
    }

    fn last(&self) -> Option<&[u8]> {
        let end = *self.ends.last()?;
        let start = self.ends.len().checked_sub(2).map_or(0, |i| self.ends[i]);
        Some(&self.bytes[start..end])
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> &[u8] {
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
    key_hash: Option<fn(&K::Value) -> i32>,
    /// Its name, recorded in snapshots.
    key_hash_name: Arc<str>,
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

impl<K: Serializer> KeyedBackend<K> {
    /// A builder for a backend whose keys are written by `key_serializer`.
    pub fn builder(key_serializer: K) -> KeyedBackendBuilder<K> {
        KeyedBackendBuilder {
            key_serializer,
            key_hash: None,
            max_parallelism: 128,
            range: None,
            store: StoreOptions::new(),
            clock: Arc::new(SystemClock),
            job: None,
        }
    }

    /// Sets the key that state calls act on. A key whose key group this backend does not own
    /// is refused ([`Misuse::KeyGroupOutOfRange`]) and leaves no current key.
    #[inline]
    pub fn set_current_key(&mut self, key: &K::Value) -> Result<()> {
        let core = &mut self.core;
        core.key.truncate(PREFIX_LEN);
        self.key_serializer.write(key, &mut core.key);
        core.key_len = core.key.len();
        // The next access is likely to the state accessed last: fetch its slot now, while
        // the key group is computed below. Issued this early, the fetch also overlaps the end
        // of the previous access.
        match core.ahead {
            Ahead::Nothing => {}
            Ahead::Record => core.store.prefetch_point(&core.key),
            Ahead::Group => core.store.prefetch_group(&core.key),
        }
        let hash = match self.key_hash {
            None => hash_bytes(&core.key[PREFIX_LEN..]),
            Some(f) => f(key),
        };
        let kg = core.max_parallelism.key_group(hash);
        if !core.range.contains(kg) {
            core.key_set = false;
            return Err(
                Misuse::KeyGroupOutOfRange { key_group: kg, start: core.range.start(), end: core.range.end() }.into()
            );
        }
        core.key[..2].copy_from_slice(&kg.to_be_bytes());
        core.key_set = true;
        Ok(())
    }

    /// The current key, read back from its serialized form.
    pub fn current_key(&self) -> Result<K::Value> {
        if !self.core.key_set {
            return Err(Misuse::NoCurrentKey.into());
        }
        self.key_serializer.read_all(self.core.key_bytes()).map_err(|e| codec_error("<key>", e))
    }

    /// The key group of the current key.
    pub fn current_key_group(&self) -> Result<KeyGroup> {
        if !self.core.key_set {
            return Err(Misuse::NoCurrentKey.into());
        }
        Ok(self.core.key_group())
    }

    /// The key groups this backend owns.
    pub fn key_groups(&self) -> KeyGroupRange {
        self.core.range
    }

    /// The max parallelism.
    pub fn max_parallelism(&self) -> MaxParallelism {
        self.core.max_parallelism
    }

    /// The store underneath (for statistics, flushes and tools).
    pub fn store(&mut self) -> &mut Store {
        &mut self.core.store
    }

    /// The time of the backend's clock, in milliseconds.
    pub fn now_millis(&self) -> i64 {
        self.core.now()
    }

    /// Calls `f` with every key that has an entry in `state` (under the handle's current
    /// namespace), with that key set as the current key, so `f` may read and write its state
    /// (Flink's `applyToAllKeys`). Keys are visited key group by key group; the keys of one key
    /// group are collected before `f` runs, so changes made by `f` do not disturb the visit.
    pub fn apply_to_all_keys<S: super::keyed::StateHandle>(
        &mut self,
        state: &S,
        mut f: impl FnMut(&mut Self, &K::Value) -> Result<()>,
    ) -> Result<()> {
        self.core.check(state.backend_id())?;
        let range = self.core.range;
        let mut keys = KeyList::default();
        let mut spare = None;
        for kg in range.iter() {
            let (id, ns) = (state.state_id(), state.namespace_bytes());
            let mut lookaside: Box<Lookaside> =
                self.core.store.take_lookaside().or_else(|| spare.take()).unwrap_or_default();
            self.core.keys_in_group(&self.key_serializer, kg, id, ns, &mut keys, Some(&mut lookaside))?;
            if lookaside.is_complete() {
                // The scan that listed the keys read their values too: the visit's reads of
                // this state are answered from them until something is written.
                self.core.store.set_lookaside(lookaside);
            } else {
                spare = Some(lookaside);
            }
            for i in 0..keys.len() {
                let key = keys.get(i);
                let value = self.key_serializer.read_all(key).map_err(|e| codec_error("<key>", e))?;
                self.core.set_raw_key(kg, key);
                f(self, &value)?;
            }
        }
        // What the visit read stays valid only as long as nothing is written; drop it now.
        self.core.store.take_lookaside();
        Ok(())
    }

    /// The keys that have an entry in `state` under the handle's current namespace (Flink's
    /// `getKeys`), in key-group order. They are collected into memory.
    pub fn keys<S: super::keyed::StateHandle>(&mut self, state: &S) -> Result<Vec<K::Value>> {
        self.core.check(state.backend_id())?;
        let mut out = Vec::new();
        let mut keys = KeyList::default();
        for kg in self.core.range.iter() {
            self.core.keys_in_group(
                &self.key_serializer,
                kg,
                state.state_id(),
                state.namespace_bytes(),
                &mut keys,
                None,
            )?;
            for i in 0..keys.len() {
                out.push(self.key_serializer.read_all(keys.get(i)).map_err(|e| codec_error("<key>", e))?);
            }
        }
        Ok(out)
    }

    /// The registered states: name and kind.
    pub fn states(&self) -> impl Iterator<Item = (&str, StateKind)> {
        self.core.states.values().map(|m| (&*m.name, m.kind))
    }

    /// The synchronous part of a savepoint: the store's frozen view, and the meta info (with
    /// the operator state) and the store's next segment id.
    pub(crate) fn snapshot_parts(&mut self, operator: &OperatorStateBackend) -> Result<(StoreSnapshot, SnapshotParts)> {
        let snapshot = self.core.store.snapshot()?;
        Ok((snapshot, self.parts(operator, None, None)))
    }

    /// The synchronous part of a checkpoint: seals the store's changelog, if it keeps one, and
    /// takes the store's frozen view when it does not or when `materialize` says so.
    pub(crate) fn checkpoint_parts(
        &mut self,
        operator: &OperatorStateBackend,
        materialize: impl FnOnce(&LogSeal) -> bool,
    ) -> Result<SnapshotParts> {
        let seal = self.core.store.seal_changelog();
        let snapshot = match &seal {
            Some(seal) if !materialize(seal) => None,
            _ => Some(self.core.store.snapshot()?),
        };
        Ok(self.parts(operator, snapshot, seal))
    }

    fn parts(
        &mut self,
        operator: &OperatorStateBackend,
        snapshot: Option<StoreSnapshot>,
        log: Option<LogSeal>,
    ) -> SnapshotParts {
        let core = &mut self.core;
        let states: Vec<StateMetaInfo> = core
            .states
            .iter()
            .map(|(&id, m)| StateMetaInfo {
                id,
                name: m.name.to_string(),
                kind: m.kind,
                serializers: m.serializers.clone(),
                ttl: m.ttl,
            })
            .collect();
        let range = core.range;
        let meta = SnapshotMeta {
            job: core.job.clone(),
            max_parallelism: core.max_parallelism.get(),
            key_groups: (!range.is_empty()).then(|| (range.start(), range.end())),
            key_serializer: self.key_serializer.snapshot(),
            key_hash: Some(self.key_hash_name.to_string()),
            states,
            operator: operator.snapshot(),
        };
        SnapshotParts { store: snapshot, log, meta, next_segment_id: core.store.next_segment_id() }
    }

    /// The shared files of `storage` that the store's segments were restored from; given once.
    pub(crate) fn take_origin(&mut self, storage: &Path) -> Vec<Origin> {
        let found = origin_for(&self.core.origin, storage);
        if !found.is_empty() {
            self.core.origin.retain(|o| o.storage != storage);
        }
        found
    }

    /// Unique within the process: segment ids are unique within one backend only.
    pub(crate) fn backend_id(&self) -> u64 {
        self.core.id
    }

    pub(crate) fn ttl_filter(&self) -> Arc<TtlFilter> {
        self.core.ttl_filter.clone()
    }

    /// Closes the backend and its store.
    pub fn close(self) -> Result<()> {
        self.core.store.close()
    }
}
