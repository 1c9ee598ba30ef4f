//! The keyed state backend: one store, one key-group range, a current key.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::clock::{Clock, SystemClock};
use super::core::{codec_error, Ahead, Core, KeyList, KeyedBackend, StateMeta, PREFIX_LEN};
use super::ttl::{TtlFilter, TtlTable};
use crate::checkpoint::{
    origin_for, prepare_store, replay, sealed, Origin, Prepared, RestoreSource, RestoreTarget, Restored,
    SavepointParts, SnapshotParts, SnapshotSource,
};
use crate::codec::{Compatibility, Serializer};
use crate::error::{Error, Misuse, Result};
use crate::format::checkpoint::{SnapshotMeta, StateMetaInfo};
use crate::format::meta::OperatorStateSnapshot;
use crate::format::meta::StateKind;
use crate::format::SchemaTag;
use crate::keygroup::{
    hash_bytes, java_hash_i32, java_hash_i64, java_hash_str, KeyGroup, KeyGroupRange, MaxParallelism, DEFAULT_KEY_HASH,
    JAVA_KEY_HASH,
};
use crate::store::{LogSeal, Lookaside, Store, StoreOptions};

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

    /// Routes keys by Java's `hashCode` through `hash` (for a caller that holds the function
    /// but not the [`JavaHashCode`] bound): [`java_key_hash`](Self::java_key_hash) by another way.
    #[must_use]
    pub(crate) fn java_key_hash_fn(mut self, hash: fn(&K::Value) -> i32) -> Self {
        self.key_hash = Some(RoutingHash { name: JAVA_KEY_HASH.into(), hash, built_in: true });
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
        let key_compatibility = |old: &crate::codec::SerializerSnapshot| self.key_serializer.compatibility(old);
        let target = RestoreTarget {
            range,
            max_parallelism,
            key_serializer: &self.key_serializer.snapshot(),
            key_compatibility: &key_compatibility,
            key_hash: &key_hash,
        };
        let prepared = prepare_store(sources, &fs, dir, &target, self.store.writer_options());
        let mut this = self;
        let built = prepared.and_then(|prepared| {
            // A key serializer that asks for it is reconfigured from the snapshot's.
            let stored = &prepared.key_serializer;
            if this.key_serializer.compatibility(stored) == Compatibility::WithReconfiguredSerializer {
                this.key_serializer =
                    this.key_serializer.reconfigured(stored).ok_or_else(|| crate::error::Incompatibility {
                        state: None,
                        part: crate::SerializerPart::Key,
                        stored: stored.clone(),
                        requested: this.key_serializer.snapshot(),
                        why: "the key serializer asks to be reconfigured but gives no reconfigured serializer".into(),
                    })?;
            }
            let restored = prepared.restored.clone();
            Ok((this.build(dir, key_hash, Some(prepared))?, restored))
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
            hint: None,
            val: Vec::with_capacity(64),
            scratch: Vec::new(),
            converted: Vec::with_capacity(1024),
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
                        tag: s.tag,
                        older: s.older,
                        lazy: None,
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

    /// Rewrites now every record that an older serializer of a state wrote (states restored
    /// with changed serializers, see [`crate::codec`]) into the state's present serializers:
    /// an eager migration, for when old bytes must be gone. It merges all of the store's
    /// segments into one, converting as it goes, and returns when it is done; from then on
    /// accesses no longer check records for their writer, and snapshots no longer list the
    /// older writers. Without it, records are converted lazily: on access, and by the
    /// compactions that come anyway.
    ///
    /// A savepoint converts what it writes, so it needs no migration first; but it needs every
    /// restored state whose serializers changed registered again
    /// ([`Misuse::UnmigratedState`]).
    ///
    /// A conversion that fails (the hook returns an error or panics) gives
    /// [`Error::Migration`](crate::Error::Migration) naming the state and the key group;
    /// nothing is lost: the store is left as it was before the call and goes on.
    pub fn migrate(&mut self) -> Result<()> {
        let core = &mut self.core;
        core.store.compact()?;
        let ids: Vec<u16> = core.states.iter().filter(|(_, m)| !m.older.is_empty()).map(|(&id, _)| id).collect();
        for id in ids {
            let in_use = core.store.entries_in_use(id);
            let Some(meta) = core.states.get_mut(&id) else { continue };
            // The older writers stay known: a checkpoint of a changelog chain may still name
            // segments of theirs (snapshots list them only while their files do).
            if meta.older.iter().all(|w| !in_use.contains(&w.tag)) {
                if let Some(lazy) = meta.lazy.take() {
                    lazy.pending.store(false, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        Ok(())
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
        core.hint = None;
        match core.ahead {
            Ahead::Nothing => {}
            Ahead::Record => {
                // The key group is still unset, which the hash leaves out: the access that
                // follows reuses it (see `Core::key_hash`).
                let h = Store::key_hash(&core.key);
                core.store.prefetch_hashed(h);
                core.hint = Some((u16::from_be_bytes([core.key[2], core.key[3]]), h));
            }
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

    /// Fetches into the cache, ahead of time, what an access to `key` will read next under the
    /// state accessed last (when that was a state with one record per key and no namespace):
    /// with `deep` unset, the index slot; with it set, the record the slot names (the slot
    /// having been fetched a little earlier). For a batch of records, fetching the slot of the
    /// record eight ahead and the record of the one four ahead hides most of the cache misses
    /// of a state larger than the caches. Changes nothing the backend does otherwise.
    #[inline]
    pub fn prefetch_key(&mut self, key: &K::Value, deep: bool) {
        let core = &mut self.core;
        if core.ahead != Ahead::Record {
            return;
        }
        core.scratch.clear();
        core.scratch.extend_from_slice(&core.key[..PREFIX_LEN]);
        self.key_serializer.write(key, &mut core.scratch);
        let h = Store::key_hash(&core.scratch);
        if deep {
            core.store.prefetch_record_hashed(h);
        } else {
            core.store.prefetch_read_hashed(h);
        }
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

    /// The meta info of a snapshot taken now, with the operator state.
    fn meta(&self, operator: OperatorStateSnapshot) -> SnapshotMeta {
        let core = &self.core;
        let states: Vec<StateMetaInfo> = core
            .states
            .iter()
            .map(|(&id, m)| StateMetaInfo {
                id,
                name: m.name.to_string(),
                kind: m.kind,
                serializers: m.serializers.clone(),
                ttl: m.ttl,
                tag: m.tag.clone(),
                // Every older writer: a checkpoint keeps those whose records its files hold
                // (see `CheckpointManifest::keep_needed_writers`), a savepoint none.
                older: m.older.clone(),
            })
            .collect();
        let range = core.range;
        SnapshotMeta {
            job: core.job.clone(),
            max_parallelism: core.max_parallelism.get(),
            key_groups: (!range.is_empty()).then(|| (range.start(), range.end())),
            key_serializer: self.key_serializer.snapshot(),
            key_hash: Some(self.key_hash_name.to_string()),
            states,
            operator,
        }
    }

    /// Closes the backend and its store.
    pub fn close(self) -> Result<()> {
        self.core.store.close()
    }
}

impl<K: Serializer> SnapshotSource for KeyedBackend<K> {}

#[allow(private_interfaces)] // see `sealed::Parts`
impl<K: Serializer> sealed::Parts for KeyedBackend<K> {
    fn backend_id(&self) -> u64 {
        self.core.id
    }

    fn checkpoint_parts(
        &mut self,
        operator: OperatorStateSnapshot,
        materialize: &mut dyn FnMut(&LogSeal) -> bool,
    ) -> Result<SnapshotParts> {
        let seal = self.core.store.seal_changelog();
        let snapshot = match &seal {
            Some(seal) if !materialize(seal) => None,
            _ => Some(self.core.store.snapshot()?),
        };
        Ok(SnapshotParts {
            store: snapshot,
            log: seal,
            meta: self.meta(operator),
            next_segment_id: self.core.store.next_segment_id(),
        })
    }

    fn savepoint_parts(&mut self, operator: OperatorStateSnapshot) -> Result<SavepointParts> {
        // A savepoint holds records of the present writers only: it converts what older ones
        // wrote, which needs the state registered (its serializers are the conversion).
        if let Some(m) = self.core.states.values().find(|m| !m.registered && !m.older.is_empty()) {
            return Err(Misuse::UnmigratedState { name: m.name.to_string() }.into());
        }
        let store = self.core.store.snapshot()?;
        let filter = Box::new(self.core.ttl_filter.for_snapshot(self.core.now()));
        let mut meta = self.meta(operator);
        for s in &mut meta.states {
            s.older.clear();
        }
        Ok(SavepointParts { store, meta, range: self.core.range, filter })
    }

    fn take_origin(&mut self, storage: &Path) -> Vec<Origin> {
        let found = origin_for(&self.core.origin, storage);
        if !found.is_empty() {
            self.core.origin.retain(|o| o.storage != storage);
        }
        found
    }
}
