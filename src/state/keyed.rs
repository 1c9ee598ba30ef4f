//! Descriptors and handles of keyed state: value, list, map, reducing and aggregating.

use std::sync::Arc;

use super::core::{codec_error, state_prefix, Ahead, Core, KeyedBackend, Lazy};
use super::evolve::{self, key_part, value_part, Shape, Writer};
use super::ttl::{put_element, put_ts, split_ts, Elements};
use crate::codec::{BorrowSerializer, Codec, CodecError, Serializer, Unit};
use crate::error::{Misuse, Result};
use crate::format::meta::{StateKind, TtlConfig, TtlUpdate};
use crate::store::migrate::Convert;
use crate::store::{prefix_successor, Store, StoreIter};
use crate::SerializerPart;

/// What every keyed state handle tells the backend about itself.
pub trait StateHandle {
    /// The backend that made the handle.
    fn backend_id(&self) -> u64;
    /// The state's id in that backend.
    fn state_id(&self) -> u16;
    /// The serialized current namespace of the handle.
    fn namespace_bytes(&self) -> &[u8];
}

/// A keyed state handle that knows how its namespaces are written, so that the namespaces it
/// holds can be read back (see [`KeyedBackend::keys_and_namespaces`]).
pub trait NamespacedState: StateHandle {
    /// The serializer of the state's namespaces.
    type Namespace: Serializer;
    /// The serializer of the state's namespaces.
    fn namespace_serializer(&self) -> &Self::Namespace;
}

/// A descriptor that a [`KeyedBackend`] registers, returning a typed handle.
pub trait StateDescriptor: Sized {
    /// The handle, for namespaces written by `N`.
    type State<N: Serializer>;

    /// Registers the state in `backend` with namespaces written by `namespace`.
    fn register<K: Serializer, N: Serializer>(
        self,
        backend: &mut KeyedBackend<K>,
        namespace: N,
    ) -> Result<Self::State<N>>;
}

impl<K: Serializer> KeyedBackend<K> {
    /// Registers a state (or finds it registered) in the default namespace `()`.
    pub fn state<D: StateDescriptor>(&mut self, descriptor: D) -> Result<D::State<Unit>> {
        descriptor.register(self, Unit)
    }

    /// Registers a state (or finds it registered) whose namespaces are written by `namespace`;
    /// set the namespace on the handle before use.
    pub fn state_in<D: StateDescriptor, N: Serializer>(&mut self, descriptor: D, namespace: N) -> Result<D::State<N>> {
        descriptor.register(self, namespace)
    }

    /// Every (key, namespace) pair that has an entry in `state` (Flink's
    /// `getKeysAndNamespaces`), each once, key group by key group and within one in the order
    /// of their serialized bytes. They are collected into memory.
    #[allow(clippy::type_complexity)]
    pub fn keys_and_namespaces<S: NamespacedState>(
        &mut self,
        state: &S,
    ) -> Result<Vec<(K::Value, <S::Namespace as Serializer>::Value)>> {
        let mut out = Vec::new();
        let (ks, ns) = (&self.key_serializer, state.namespace_serializer());
        walk_keys_and_namespaces(&mut self.core, ks, state, |name, key, namespace| {
            let key = ks.read_all(key).map_err(|e| codec_error(name, e))?;
            let namespace = ns.read_all(namespace).map_err(|e| codec_error(name, e))?;
            out.push((key, namespace));
            Ok(())
        })?;
        Ok(out)
    }

    /// The keys that have an entry in `state` under `namespace` (Flink's
    /// `getKeys(state, namespace)`), in the order of
    /// [`keys_and_namespaces`](Self::keys_and_namespaces). Unlike [`keys`](Self::keys), the
    /// namespace is given here rather than taken from the handle.
    pub fn keys_in<S: NamespacedState>(
        &mut self,
        state: &S,
        namespace: &<S::Namespace as Serializer>::Value,
    ) -> Result<Vec<K::Value>> {
        let mut wanted = Vec::new();
        state.namespace_serializer().write(namespace, &mut wanted);
        let mut out = Vec::new();
        let ks = &self.key_serializer;
        walk_keys_and_namespaces(&mut self.core, ks, state, |name, key, namespace| {
            if namespace == wanted.as_slice() {
                out.push(ks.read_all(key).map_err(|e| codec_error(name, e))?);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// Calls `f` with the state's name and the serialized key and namespace of every (key,
/// namespace) pair that has an entry in `state`, each once, key group by key group and within
/// one in byte order. (Serializers are self-delimiting, so the records of one pair lie
/// together.)
fn walk_keys_and_namespaces<K: Serializer, S: NamespacedState>(
    core: &mut Core,
    key_serializer: &K,
    state: &S,
    mut f: impl FnMut(&str, &[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    core.check(state.backend_id())?;
    let id = state.state_id();
    let name = core.states.get(&id).map(|m| m.name.clone()).ok_or(Misuse::ForeignHandle)?;
    let ns_serializer = state.namespace_serializer();
    let mut last: Option<Vec<u8>> = None;
    for kg in core.range.iter() {
        let prefix = state_prefix(kg, id);
        let mut it = core.store.scan_prefix(&prefix)?;
        while let Some((k, _)) = it.next_entry()? {
            // The store returns keys of the prefix only; damaged data that breaks its key
            // order must not break this.
            let Some(full) = k.strip_prefix(&prefix[..]) else {
                return Err(codec_error(&name, CodecError::Invalid("a record outside its state's key range")));
            };
            let mut rest = full;
            key_serializer.read(&mut rest).map_err(|e| codec_error(&name, e))?;
            let key_len = full.len() - rest.len();
            ns_serializer.read(&mut rest).map_err(|e| codec_error(&name, e))?;
            let pair = &full[..full.len() - rest.len()];
            if last.as_deref() == Some(pair) {
                continue;
            }
            f(&name, &pair[..key_len], &pair[key_len..])?;
            match &mut last {
                Some(l) => {
                    l.clear();
                    l.extend_from_slice(pair);
                }
                None => last = Some(pair.to_vec()),
            }
        }
    }
    Ok(())
}

/// The part every handle shares: which state, which namespace.
#[derive(Debug, Clone)]
pub(crate) struct Slot<N: Serializer> {
    backend: u64,
    pub(crate) id: u16,
    pub(crate) name: Arc<str>,
    pub(crate) ttl: Option<TtlConfig>,
    ns_serializer: N,
    ns: Vec<u8>,
    ns_set: bool,
    /// What an access goes through first: a record, or a map's group.
    ahead: Ahead,
    /// Set while records of older writers of the state may be stored: each access converts
    /// the record it reads first.
    lazy: Option<Arc<Lazy>>,
}

impl<N: Serializer> Slot<N> {
    fn new(
        core: &mut Core,
        name: &str,
        kind: StateKind,
        mut serializers: Vec<crate::codec::SerializerSnapshot>,
        ttl: Option<TtlConfig>,
        ns_serializer: N,
        convert: Option<Convert>,
    ) -> Result<Self> {
        serializers.insert(0, ns_serializer.snapshot());
        let (id, name, lazy) = core.register_evolving(name, kind, serializers, ttl, convert)?;
        let ns_set = ns_serializer.fixed_len() == Some(0);
        // A map's point accesses need a user key, unknown ahead; its walks of the group set
        // their own (see `group_ahead`).
        let ahead = if kind == StateKind::Map { Ahead::Nothing } else { Ahead::Record };
        Ok(Slot { backend: core.id, id, name, ttl, ns_serializer, ns: Vec::new(), ns_set, ahead, lazy })
    }

    /// Converts the record at `core.key` first if an older writer wrote it (see [`Lazy`]).
    #[inline]
    fn migrate(&self, core: &mut Core, group: usize) -> Result<()> {
        match &self.lazy {
            Some(lazy) if lazy.pending() => core.migrate_record(self.id, &self.name, lazy, group),
            _ => Ok(()),
        }
    }

    fn set_namespace(&mut self, namespace: &N::Value) {
        self.ns.clear();
        self.ns_serializer.write(namespace, &mut self.ns);
        self.ns_set = true;
    }

    /// Builds the record key of the current key and namespace in `core.key`.
    #[inline(always)]
    fn key(&self, core: &mut Core) -> Result<()> {
        core.check(self.backend)?;
        if !self.ns_set {
            return Err(Misuse::NoNamespace { name: self.name.to_string() }.into());
        }
        core.ahead = if self.ns.is_empty() { self.ahead } else { Ahead::Nothing };
        core.build_key(self.id, &self.ns)
    }

    /// Notes that this access walks the map's group, so that the next key's group slot is
    /// fetched ahead (see [`Core::ahead`]).
    #[inline]
    fn group_ahead(&self, core: &mut Core) {
        core.ahead = if self.ns.is_empty() { Ahead::Group } else { Ahead::Nothing };
    }

    /// Builds the record key of the current key and namespace `ns` in `core.key`.
    fn key_in(&self, core: &mut Core, ns: &N::Value) -> Result<()> {
        core.check(self.backend)?;
        core.scratch.clear();
        self.ns_serializer.write(ns, &mut core.scratch);
        let ns = std::mem::take(&mut core.scratch);
        let r = core.build_key(self.id, &ns);
        core.scratch = ns;
        r
    }

    /// Removes the single record of the current key and namespace.
    fn clear(&self, core: &mut Core) -> Result<()> {
        self.key(core)?;
        core.store.delete(&core.key)
    }

    /// Runs incremental TTL cleanup after an access, when configured.
    #[inline]
    fn after_access(&self, core: &mut Core) -> Result<()> {
        match self.ttl {
            Some(t) if t.incremental > 0 => core.incremental_cleanup(self.id, t.incremental, None),
            _ => Ok(()),
        }
    }

    fn decode<T>(&self, r: Result<T, CodecError>) -> Result<T> {
        r.map_err(|e| codec_error(&self.name, e))
    }
}

macro_rules! handle_common {
    ([$($gen:tt)*] $ty:ty) => {
        impl<$($gen)*> StateHandle for $ty {
            fn backend_id(&self) -> u64 {
                self.slot.backend
            }
            fn state_id(&self) -> u16 {
                self.slot.id
            }
            fn namespace_bytes(&self) -> &[u8] {
                &self.slot.ns
            }
        }

        impl<$($gen)*> std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty)).field("name", &self.slot.name).field("id", &self.slot.id).finish()
            }
        }

        impl<$($gen)*> $ty {
            /// Sets the namespace that later calls act on.
            pub fn set_namespace(&mut self, namespace: &N::Value) {
                self.slot.set_namespace(namespace);
            }

            /// The state's name.
            pub fn name(&self) -> &str {
                &self.slot.name
            }
        }

        impl<$($gen)*> NamespacedState for $ty {
            type Namespace = N;
            fn namespace_serializer(&self) -> &N {
                &self.slot.ns_serializer
            }
        }
    };
}

/// Reads the single value stored at `core.key`, honoring TTL: a read that finds an expired
/// value removes it, and returns it only when the visibility allows (Flink's
/// `getWithTtlCheckAndUpdate`); a read refreshes the timestamp when the update type says so.
#[inline]
fn read_single<T, N: Serializer>(
    core: &mut Core,
    slot: &Slot<N>,
    group: usize,
    decode: impl FnOnce(&[u8]) -> Result<T, CodecError>,
) -> Result<Option<T>> {
    if let Some(lazy) = slot.lazy.as_ref().filter(|l| l.pending()) {
        return read_converted(core, slot, lazy, group, decode);
    }
    single_value(core, slot, group, None, decode)
}

/// [`read_single`] of a state whose older writers' records may be stored: such a record is
/// converted on the fly (the store keeps it until a write or a compaction replaces it).
#[cold]
fn read_converted<T, N: Serializer>(
    core: &mut Core,
    slot: &Slot<N>,
    lazy: &Lazy,
    group: usize,
    decode: impl FnOnce(&[u8]) -> Result<T, CodecError>,
) -> Result<Option<T>> {
    let mut converted = std::mem::take(&mut core.converted);
    let r = match core.convert_record(slot.id, &slot.name, lazy, &mut converted) {
        Ok(true) => single_value(core, slot, group, Some(&converted), decode),
        Ok(false) => single_value(core, slot, group, None, decode),
        Err(e) => Err(e),
    };
    core.converted = converted;
    r
}

/// The value of [`read_single`]: from `converted` when given, else as stored at `core.key`.
#[inline(always)]
fn single_value<T, N: Serializer>(
    core: &mut Core,
    slot: &Slot<N>,
    group: usize,
    converted: Option<&[u8]>,
    decode: impl FnOnce(&[u8]) -> Result<T, CodecError>,
) -> Result<Option<T>> {
    let Some(ttl) = slot.ttl else {
        let bytes = match converted {
            Some(b) => Some(b),
            None => core.store.get_hashed(core.key_hash(), &core.key)?,
        };
        return match bytes {
            Some(bytes) => Ok(Some(slot.decode(decode(bytes))?)),
            None => Ok(None),
        };
    };
    let now = core.clock.now_millis();
    enum After {
        Nothing,
        Delete,
        Refresh,
    }
    let bytes = match converted {
        Some(b) => Some(b),
        None => core.store.get_hashed(core.key_hash(), &core.key)?,
    };
    let (value, after) = match bytes {
        None => return Ok(None),
        Some(bytes) => {
            let truncated = || codec_error(&slot.name, CodecError::Truncated { needed: super::ttl::TS_LEN });
            let (ts, rest) = split_ts(bytes).ok_or_else(truncated)?;
            if ttl.expired(ts, now) {
                let value = if ttl.hides_expired() { None } else { Some(slot.decode(decode(rest))?) };
                (value, After::Delete)
            } else if ttl.update == TtlUpdate::OnReadAndWrite {
                let v = slot.decode(decode(rest))?;
                core.val.clear();
                put_ts(now, &mut core.val);
                core.val.extend_from_slice(rest);
                (Some(v), After::Refresh)
            } else {
                (Some(slot.decode(decode(rest))?), After::Nothing)
            }
        }
    };
    match (after, group) {
        (After::Nothing, _) => {}
        (After::Delete, 0) => core.store.delete(&core.key)?,
        (After::Delete, g) => core.store.delete_grouped(&core.key, g)?,
        (After::Refresh, 0) => core.store.put(&core.key, &core.val)?,
        (After::Refresh, g) => core.store.put_grouped(&core.key, g, &core.val)?,
    }
    Ok(value)
}

/// Hands the single value stored at `core.key` to `f` as a borrowed view, without building an
/// owned value. TTL is honored as [`read_single`] honors it: an expired value is removed, and
/// `f` sees it first only when the visibility allows; a live value is refreshed before `f`
/// sees it when the update type says so.
fn view_single<S: BorrowSerializer, N: Serializer, R>(
    core: &mut Core,
    slot: &Slot<N>,
    group: usize,
    serializer: &S,
    f: impl FnOnce(Option<S::View<'_>>) -> R,
) -> Result<R> {
    slot.migrate(core, group)?;
    let mut expired = false;
    if let Some(ttl) = slot.ttl {
        let now = core.clock.now_millis();
        let refresh = {
            let Some(bytes) = core.store.get(&core.key)? else { return Ok(f(None)) };
            let truncated = || codec_error(&slot.name, CodecError::Truncated { needed: super::ttl::TS_LEN });
            let (ts, rest) = split_ts(bytes).ok_or_else(truncated)?;
            expired = ttl.expired(ts, now);
            let refresh = !expired && ttl.update == TtlUpdate::OnReadAndWrite;
            if refresh {
                core.val.clear();
                put_ts(now, &mut core.val);
                core.val.extend_from_slice(rest);
            }
            refresh
        };
        if expired && ttl.hides_expired() {
            delete_at(core, group)?;
            return Ok(f(None));
        }
        if refresh {
            put_at(core, group)?;
        }
    }
    let skip = if slot.ttl.is_some() { super::ttl::TS_LEN } else { 0 };
    let r = {
        let Some(bytes) = core.store.get(&core.key)? else { return Ok(f(None)) };
        let bytes = bytes.get(skip..).ok_or_else(|| codec_error(&slot.name, CodecError::Truncated { needed: skip }))?;
        let view = serializer.view(bytes).map_err(|e| codec_error(&slot.name, e))?;
        f(Some(view))
    };
    if expired {
        // Returned once, as the visibility allows; the read is its cleanup.
        delete_at(core, group)?;
    }
    Ok(r)
}

/// Removes the record at `core.key` (of the group of its first `group` bytes, if not 0).
fn delete_at(core: &mut Core, group: usize) -> Result<()> {
    if group == 0 {
        core.store.delete(&core.key)
    } else {
        core.store.delete_grouped(&core.key, group)
    }
}

/// Writes `core.val` at `core.key` (of the group of its first `group` bytes, if not 0).
fn put_at(core: &mut Core, group: usize) -> Result<()> {
    if group == 0 {
        core.store.put_hashed(core.key_hash(), &core.key, &core.val)
    } else {
        core.store.put_grouped(&core.key, group, &core.val)
    }
}

/// Writes a single value at `core.key` (of the group of its first `group` bytes, if not 0), with
/// the current time in front when the state has TTL.
#[inline]
fn write_single<N: Serializer>(
    core: &mut Core,
    slot: &Slot<N>,
    group: usize,
    write: impl FnOnce(&mut Vec<u8>),
) -> Result<()> {
    core.val.clear();
    if slot.ttl.is_some() {
        put_ts(core.clock.now_millis(), &mut core.val);
    }
    write(&mut core.val);
    if group == 0 {
        core.store.put_hashed(core.key_hash(), &core.key, &core.val)
    } else {
        core.store.put_grouped(&core.key, group, &core.val)
    }
}

/// Folds the single values of the `sources` namespaces and of `target` into `target` with
/// `combine`, removing the sources (merging session windows).
fn fold_namespaces<S: Serializer, N: Serializer>(
    core: &mut Core,
    slot: &Slot<N>,
    serializer: &S,
    target: &N::Value,
    sources: &[N::Value],
    combine: impl Fn(S::Value, S::Value) -> S::Value,
) -> Result<()> {
    let mut acc: Option<S::Value> = None;
    for ns in sources.iter().chain(std::iter::once(target)) {
        slot.key_in(core, ns)?;
        if let Some(v) = read_single(core, slot, 0, |bytes| serializer.read_all(bytes))? {
            acc = Some(match acc {
                Some(a) => combine(a, v),
                None => v,
            });
            core.store.delete(&core.key)?;
        }
    }
    if let Some(acc) = acc {
        slot.key_in(core, target)?;
        write_single(core, slot, 0, |out| serializer.write(&acc, out))?;
    }
    Ok(())
}

/// For a restored state of `kind` registered again: the namespace and value serializers
/// checked against every stored writer (and reconfigured where they ask for it), with the
/// conversion of the older writers' records. For any other state: the serializers as given.
fn evolve_single<S: Serializer, N: Serializer>(
    core: &Core,
    name: &str,
    kind: StateKind,
    ns: N,
    value: S,
    shape: Shape,
    ttl: bool,
) -> Result<(N, Arc<S>, Option<Convert>)> {
    let Some((stored, writers)) = core.restored_writers(name).filter(|(k, _)| *k == kind) else {
        return Ok((ns, Arc::new(value), None));
    };
    debug_assert_eq!(stored, kind);
    let writers: Vec<&Writer> = writers.iter().collect();
    let ns = key_part(ns, &writers, 0, name, SerializerPart::Namespace)?;
    let (value, readers) = value_part(value, &writers, 1, name)?;
    let value = Arc::new(value);
    let convert = evolve::convert(value.clone(), readers, shape, ttl, core.clock.clone());
    Ok((ns, value, Some(convert)))
}

fn default_serializer<T: Codec>() -> T::Serializer {
    T::Serializer::default()
}

type DefaultFn<T> = Arc<dyn Fn() -> T + Send + Sync>;

// ---------------------------------------------------------------------------------------------
// Value state

/// Describes a value state: one value per key and namespace.
pub struct ValueStateDescriptor<S: Serializer> {
    name: String,
    serializer: S,
    default: Option<DefaultFn<S::Value>>,
    ttl: Option<TtlConfig>,
}

impl<S: Serializer> ValueStateDescriptor<S> {
    /// A value state named `name` whose values `serializer` writes.
    pub fn new(name: impl Into<String>, serializer: S) -> Self {
        ValueStateDescriptor { name: name.into(), serializer, default: None, ttl: None }
    }

    /// A value state of `T` with `T`'s default serializer.
    pub fn of<T: Codec<Serializer = S>>(name: impl Into<String>) -> Self {
        Self::new(name, default_serializer::<T>())
    }

    /// The value `get` returns for a key without one.
    #[must_use]
    pub fn default_value(mut self, value: S::Value) -> Self
    where
        S::Value: Clone + Send + Sync + 'static,
    {
        self.default = Some(Arc::new(move || value.clone()));
        self
    }

    /// The state's time to live.
    #[must_use]
    pub fn ttl(mut self, ttl: TtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

impl<S: Serializer> StateDescriptor for ValueStateDescriptor<S> {
    type State<N: Serializer> = ValueState<S, N>;

    fn register<K: Serializer, N: Serializer>(self, b: &mut KeyedBackend<K>, ns: N) -> Result<ValueState<S, N>> {
        let (ns, serializer, convert) = evolve_single(
            &b.core,
            &self.name,
            StateKind::Value,
            ns,
            self.serializer,
            Shape::Single,
            self.ttl.is_some(),
        )?;
        let sers = vec![serializer.snapshot()];
        let slot = Slot::new(&mut b.core, &self.name, StateKind::Value, sers, self.ttl, ns, convert)?;
        Ok(ValueState { slot, serializer, default: self.default })
    }
}

/// A value per key and namespace.
pub struct ValueState<S: Serializer, N: Serializer = Unit> {
    slot: Slot<N>,
    serializer: Arc<S>,
    default: Option<DefaultFn<S::Value>>,
}

handle_common!([S: Serializer, N: Serializer] ValueState<S, N>);

impl<S: Serializer, N: Serializer> ValueState<S, N> {
    /// The value of the current key (the default value, if any, when it has none).
    #[inline]
    pub fn get<K: Serializer>(&self, b: &mut KeyedBackend<K>) -> Result<Option<S::Value>> {
        let core = &mut b.core;
        self.slot.key(core)?;
        let v = read_single(core, &self.slot, 0, |bytes| self.serializer.read_all(bytes))?;
        self.slot.after_access(core)?;
        Ok(match (v, &self.default) {
            (None, Some(d)) => Some(d()),
            (v, _) => v,
        })
    }

    /// Reads the current key's value in place: `f` gets a borrowed view of it (`None` when the
    /// key has none; default values do not apply), with no owned value built. With
    /// [`RkyvSerializer`](crate::codec::RkyvSerializer) this reads the archived value where the
    /// store holds it.
    pub fn get_with<K: Serializer, R>(
        &self,
        b: &mut KeyedBackend<K>,
        f: impl FnOnce(Option<S::View<'_>>) -> R,
    ) -> Result<R>
    where
        S: BorrowSerializer,
    {
        let core = &mut b.core;
        self.slot.key(core)?;
        let r = view_single(core, &self.slot, 0, &*self.serializer, f)?;
        self.slot.after_access(core)?;
        Ok(r)
    }

    /// Sets the value of the current key.
    #[inline]
    pub fn update<K: Serializer>(&self, b: &mut KeyedBackend<K>, value: &S::Value) -> Result<()> {
        let core = &mut b.core;
        self.slot.key(core)?;
        write_single(core, &self.slot, 0, |out| self.serializer.write(value, out))?;
        self.slot.after_access(core)
    }

    /// Removes the value of the current key.
    pub fn clear<K: Serializer>(&self, b: &mut KeyedBackend<K>) -> Result<()> {
        self.slot.clear(&mut b.core)
    }
}

// ---------------------------------------------------------------------------------------------
// List state

/// Describes a list state: a list of values per key and namespace.
pub struct ListStateDescriptor<S: Serializer> {
    name: String,
    serializer: S,
    ttl: Option<TtlConfig>,
}

impl<S: Serializer> ListStateDescriptor<S> {
    /// A list state named `name` whose elements `serializer` writes.
    pub fn new(name: impl Into<String>, serializer: S) -> Self {
        ListStateDescriptor { name: name.into(), serializer, ttl: None }
    }

    /// A list state of `T` with `T`'s default serializer.
    pub fn of<T: Codec<Serializer = S>>(name: impl Into<String>) -> Self {
        Self::new(name, default_serializer::<T>())
    }

    /// The state's time to live; elements expire one by one.
    #[must_use]
    pub fn ttl(mut self, ttl: TtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

impl<S: Serializer> StateDescriptor for ListStateDescriptor<S> {
    type State<N: Serializer> = ListState<S, N>;

    fn register<K: Serializer, N: Serializer>(self, b: &mut KeyedBackend<K>, ns: N) -> Result<ListState<S, N>> {
        let (ns, serializer, convert) =
            evolve_single(&b.core, &self.name, StateKind::List, ns, self.serializer, Shape::List, self.ttl.is_some())?;
        let sers = vec![serializer.snapshot()];
        let slot = Slot::new(&mut b.core, &self.name, StateKind::List, sers, self.ttl, ns, convert)?;
        Ok(ListState { slot, serializer })
    }
}

/// A list of values per key and namespace. Adding appends without reading the list.
pub struct ListState<S: Serializer, N: Serializer = Unit> {
    slot: Slot<N>,
    serializer: Arc<S>,
}

handle_common!([S: Serializer, N: Serializer] ListState<S, N>);

/// The elements of a list, read one by one.
pub struct ListIter<'a, S: Serializer> {
    elements: Elements<'a>,
    serializer: &'a S,
    name: &'a str,
}

impl<S: Serializer> Iterator for ListIter<'_, S> {
    type Item = Result<S::Value>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let e = self.elements.next()?;
        Some(
            e.and_then(|e| self.serializer.read_all(e.bytes))
                .map_err(|source| crate::Error::Codec { state: self.name.to_owned(), source }),
        )
    }
}

impl<S: Serializer, N: Serializer> ListState<S, N> {
    #[inline]
    fn frame(&self, core: &mut Core, value: &S::Value) {
        let ts = self.slot.ttl.map(|_| core.clock.now_millis());
        put_element(ts, &mut core.val, |out| self.serializer.write(value, out));
    }

    /// Frames `values` into `core.val` (cleared first).
    fn frame_all<'v>(&self, core: &mut Core, values: impl IntoIterator<Item = &'v S::Value>)
    where
        S::Value: 'v,
    {
        core.val.clear();
        for v in values {
            self.frame(core, v);
        }
    }

    /// The elements of the current key's list, oldest first (empty when it has none).
    pub fn get<'b, K: Serializer>(&'b self, b: &'b mut KeyedBackend<K>) -> Result<ListIter<'b, S>> {
        let core = &mut b.core;
        self.slot.key(core)?;
        self.slot.migrate(core, 0)?;
        self.slot.after_access(core)?;
        let Some(ttl) = self.slot.ttl else {
            let bytes = core.store.get_hashed(core.key_hash(), &core.key)?.unwrap_or_default();
            return Ok(ListIter {
                elements: Elements::new(bytes, false),
                serializer: &self.serializer,
                name: &self.slot.name,
            });
        };
        // With TTL: the read removes what expired (returning it only when the visibility
        // allows) and refreshes what is live when the update type says so. What is returned
        // goes to `core.val`, what stays stored to `core.scratch`.
        let now = core.clock.now_millis();
        let mut changed = false;
        core.val.clear();
        let mut kept = std::mem::take(&mut core.scratch);
        kept.clear();
        if let Some(bytes) = core.store.get(&core.key)? {
            for e in Elements::new(bytes, true) {
                let e = match e {
                    Ok(e) => e,
                    Err(e) => {
                        core.scratch = kept;
                        return Err(codec_error(&self.slot.name, e));
                    }
                };
                if e.ts.is_some_and(|ts| ttl.expired(ts, now)) {
                    changed = true;
                    if !ttl.hides_expired() {
                        core.val.extend_from_slice(e.frame);
                    }
                } else if ttl.update == TtlUpdate::OnReadAndWrite {
                    changed = true;
                    let start = kept.len();
                    put_element(Some(now), &mut kept, |out| out.extend_from_slice(e.bytes));
                    core.val.extend_from_slice(&kept[start..]);
                } else {
                    kept.extend_from_slice(e.frame);
                    core.val.extend_from_slice(e.frame);
                }
            }
        }
        let written = match (changed, kept.is_empty()) {
            (false, _) => Ok(()),
            (true, true) => core.store.delete(&core.key),
            (true, false) => core.store.put(&core.key, &kept),
        };
        core.scratch = kept;
        written?;
        Ok(ListIter { elements: Elements::new(&core.val, true), serializer: &self.serializer, name: &self.slot.name })
    }

    /// The elements of the current key's list, collected.
    pub fn get_vec<K: Serializer>(&self, b: &mut KeyedBackend<K>) -> Result<Vec<S::Value>> {
        self.get(b)?.collect()
    }

    /// Appends one element to the current key's list.
    #[inline]
    pub fn add<K: Serializer>(&self, b: &mut KeyedBackend<K>, value: &S::Value) -> Result<()> {
        let core = &mut b.core;
        self.slot.key(core)?;
        // An appended element must not follow elements of an older writer.
        self.slot.migrate(core, 0)?;
        core.val.clear();
        self.frame(core, value);
        core.store.merge_hashed(core.key_hash(), &core.key, &core.val)?;
        self.slot.after_access(core)
    }

    /// Appends elements to the current key's list.
    pub fn add_all<'v, K: Serializer>(
        &self,
        b: &mut KeyedBackend<K>,
        values: impl IntoIterator<Item = &'v S::Value>,
    ) -> Result<()>
    where
        S::Value: 'v,
    {
        let core = &mut b.core;
        self.slot.key(core)?;
        self.slot.migrate(core, 0)?;
        self.frame_all(core, values);
        if !core.val.is_empty() {
            core.store.merge(&core.key, &core.val)?;
        }
        self.slot.after_access(core)
    }

    /// Replaces the current key's list (an empty one clears it).
    pub fn update<'v, K: Serializer>(
        &self,
        b: &mut KeyedBackend<K>,
        values: impl IntoIterator<Item = &'v S::Value>,
    ) -> Result<()>
    where
        S::Value: 'v,
    {
        let core = &mut b.core;
        self.slot.key(core)?;
        self.frame_all(core, values);
        if core.val.is_empty() {
            core.store.delete(&core.key)?;
        } else {
            core.store.put_hashed(core.key_hash(), &core.key, &core.val)?;
        }
        self.slot.after_access(core)
    }

    /// Removes the current key's list.
    pub fn clear<K: Serializer>(&self, b: &mut KeyedBackend<K>) -> Result<()> {
        self.slot.clear(&mut b.core)
    }

    /// Moves the lists of the `sources` namespaces to the end of the `target` namespace's list
    /// (for merging session windows).
    pub fn merge_namespaces<K: Serializer>(
        &self,
        b: &mut KeyedBackend<K>,
        target: &N::Value,
        sources: &[N::Value],
    ) -> Result<()> {
        let core = &mut b.core;
        let mut moved = Vec::new();
        for src in sources {
            self.slot.key_in(core, src)?;
            self.slot.migrate(core, 0)?;
            if let Some(bytes) = core.store.get(&core.key)? {
                moved.extend_from_slice(bytes);
                core.store.delete(&core.key)?;
            }
        }
        self.slot.key_in(core, target)?;
        self.slot.migrate(core, 0)?;
        if !moved.is_empty() {
            core.store.merge(&core.key, &moved)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Map state

/// Describes a map state: a map from user keys to values per key and namespace.
pub struct MapStateDescriptor<UK: Serializer, UV: Serializer> {
    name: String,
    keys: UK,
    values: UV,
    ttl: Option<TtlConfig>,
}

impl<UK: Serializer, UV: Serializer> MapStateDescriptor<UK, UV> {
    /// A map state named `name` with these user-key and value serializers. Entries iterate in
    /// the byte order of the serialized user keys (numeric order for integers).
    pub fn new(name: impl Into<String>, keys: UK, values: UV) -> Self {
        MapStateDescriptor { name: name.into(), keys, values, ttl: None }
    }

    /// A map state of `UKT -> UVT` with their default serializers.
    pub fn of<UKT: Codec<Serializer = UK>, UVT: Codec<Serializer = UV>>(name: impl Into<String>) -> Self {
        Self::new(name, default_serializer::<UKT>(), default_serializer::<UVT>())
    }

    /// The state's time to live; entries expire one by one.
    #[must_use]
    pub fn ttl(mut self, ttl: TtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

impl<UK: Serializer, UV: Serializer> StateDescriptor for MapStateDescriptor<UK, UV> {
    type State<N: Serializer> = MapState<UK, UV, N>;

    fn register<K: Serializer, N: Serializer>(self, b: &mut KeyedBackend<K>, ns: N) -> Result<MapState<UK, UV, N>> {
        let (ns, keys, values, convert) = match b.core.restored_writers(&self.name) {
            Some((StateKind::Map, writers)) => {
                let writers: Vec<&Writer> = writers.iter().collect();
                let ns = key_part(ns, &writers, 0, &self.name, SerializerPart::Namespace)?;
                let keys = key_part(self.keys, &writers, 1, &self.name, SerializerPart::UserKey)?;
                let (values, readers) = value_part(self.values, &writers, 2, &self.name)?;
                let values = Arc::new(values);
                let ttl = self.ttl.is_some();
                let c = evolve::convert(values.clone(), readers, Shape::Single, ttl, b.core.clock.clone());
                (ns, keys, values, Some(c))
            }
            _ => (ns, self.keys, Arc::new(self.values), None),
        };
        let sers = vec![keys.snapshot(), values.snapshot()];
        let slot = Slot::new(&mut b.core, &self.name, StateKind::Map, sers, self.ttl, ns, convert)?;
        Ok(MapState { slot, keys, values })
    }
}

/// A map from user keys to values per key and namespace; each entry is its own record.
pub struct MapState<UK: Serializer, UV: Serializer, N: Serializer = Unit> {
    slot: Slot<N>,
    keys: UK,
    values: Arc<UV>,
}

handle_common!([UK: Serializer, UV: Serializer, N: Serializer] MapState<UK, UV, N>);

/// The entries of a map, in user-key byte order, read one by one.
///
/// With TTL, the iteration treats every entry it passes as `get` does (Flink's `TtlMapState`
/// iterator): an expired entry is removed from the store (and returned only when the
/// visibility allows), and an entry returned under [`TtlUpdate::OnReadAndWrite`] gets its
/// timestamp refreshed. Entries the iteration does not reach are left as they are.
pub struct MapIter<'a, UK: Serializer, UV: Serializer> {
    walk: Walk<'a>,
    prefix_len: usize,
    keys: &'a UK,
    values: &'a UV,
    name: &'a str,
}

/// How a map's entries are read.
enum Walk<'a> {
    /// Straight from the store's scan: nothing is written while it goes.
    Stream(StoreIter<'a>),
    /// A chunk of entries at a time, copied out of the scan, so that the store may be written
    /// between them (TTL cleanup and refresh, removal through a cursor).
    Chunked(Chunks<'a>),
}

/// What happens to an entry of a chunk when the iteration reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Returned as it is.
    Live,
    /// Returned with its timestamp refreshed.
    Refresh,
    /// Removed; returned first only when expired entries are visible.
    Expired,
}

/// The entries a chunked walk copies out of one scan.
const CHUNK: usize = 128;

/// A walk over one map (a group of the store) that reads [`CHUNK`] entries per scan and may
/// write the store between them. Each later scan starts just after the last key of the one
/// before, so writes to the entries already passed never disturb it.
struct Chunks<'a> {
    store: &'a mut Store,
    /// The map's prefix, which groups its entries.
    group: Vec<u8>,
    ttl: Option<TtlConfig>,
    now: i64,
    name: &'a str,
    /// The record keys and values of the chunk, back to back.
    bytes: Vec<u8>,
    /// Per entry of the chunk: where its key ends and its value ends in `bytes`, and its fate.
    entries: Vec<(usize, usize, Fate)>,
    /// The next entry of the chunk to hand out.
    pos: usize,
    /// Where the next scan starts (`None`: at the group's start); the scan is over when `done`.
    resume: Option<Vec<u8>>,
    done: bool,
    /// The entry handed out last, while it can still be removed.
    current: Option<usize>,
    /// The refreshed value being written.
    val: Vec<u8>,
}

impl<'a> Chunks<'a> {
    fn new(store: &'a mut Store, group: &[u8], ttl: Option<TtlConfig>, now: i64, name: &'a str) -> Self {
        Chunks {
            store,
            group: group.to_vec(),
            ttl,
            now,
            name,
            bytes: Vec::new(),
            entries: Vec::new(),
            pos: 0,
            resume: None,
            done: false,
            current: None,
            val: Vec::new(),
        }
    }

    fn span(&self, i: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let start = if i == 0 { 0 } else { self.entries[i - 1].1 };
        let (key_end, value_end, _) = self.entries[i];
        (start..key_end, key_end..value_end)
    }

    /// Reads the next chunk of entries.
    fn fill(&mut self) -> Result<()> {
        let Chunks { store, group, ttl, now, name, bytes, entries, pos, resume, done, current, .. } = self;
        bytes.clear();
        entries.clear();
        *pos = 0;
        *current = None;
        let mut it = match resume.as_deref() {
            None => store.scan_group(group)?,
            Some(lower) => store.scan_range(lower, prefix_successor(group).as_deref())?,
        };
        while entries.len() < CHUNK {
            let Some((k, v)) = it.next_entry()? else {
                *done = true;
                break;
            };
            let fate = match ttl {
                None => Fate::Live,
                Some(ttl) => {
                    let truncated = || codec_error(name, CodecError::Truncated { needed: super::ttl::TS_LEN });
                    let (ts, _) = split_ts(v).ok_or_else(truncated)?;
                    if ttl.expired(ts, *now) {
                        Fate::Expired
                    } else if ttl.update == TtlUpdate::OnReadAndWrite {
                        Fate::Refresh
                    } else {
                        Fate::Live
                    }
                }
            };
            bytes.extend_from_slice(k);
            let key_end = bytes.len();
            bytes.extend_from_slice(v);
            entries.push((key_end, bytes.len(), fate));
        }
        if let Some(i) = entries.len().checked_sub(1) {
            // The least key after the last one read.
            let start = if i == 0 { 0 } else { entries[i - 1].1 };
            let mut next = bytes[start..entries[i].0].to_vec();
            next.push(0);
            *resume = Some(next);
        }
        Ok(())
    }

    /// The next entry handed out: record key and stored value. Expired entries it passes are
    /// removed, returned ones refreshed, as their fate says.
    fn next_record(&mut self) -> Result<Option<(&[u8], &[u8])>> {
        loop {
            if self.pos == self.entries.len() {
                if self.done {
                    self.current = None;
                    return Ok(None);
                }
                self.fill()?;
                continue;
            }
            let i = self.pos;
            self.pos += 1;
            let (key, value) = self.span(i);
            let group_len = self.group.len();
            match self.entries[i].2 {
                Fate::Live => {}
                Fate::Refresh => {
                    self.val.clear();
                    put_ts(self.now, &mut self.val);
                    self.val.extend_from_slice(
                        self.bytes.get(value.start + super::ttl::TS_LEN..value.end).unwrap_or_default(),
                    );
                    self.store.put_grouped(&self.bytes[key.clone()], group_len, &self.val)?;
                }
                Fate::Expired => {
                    self.store.delete_grouped(&self.bytes[key.clone()], group_len)?;
                    if self.ttl.is_some_and(|t| t.hides_expired()) {
                        self.current = None;
                        continue;
                    }
                }
            }
            self.current = Some(i);
            return Ok(Some((&self.bytes[key], &self.bytes[value])));
        }
    }

    /// Removes the entry handed out last; `false` if there is none (nothing handed out yet,
    /// or it was removed already).
    fn remove_current(&mut self) -> Result<bool> {
        let Some(i) = self.current.take() else { return Ok(false) };
        let (key, _) = self.span(i);
        self.store.delete_grouped(&self.bytes[key], self.group.len())?;
        Ok(true)
    }
}

impl<UK: Serializer, UV: Serializer> MapIter<'_, UK, UV> {
    /// The next entry: user-key bytes and value bytes.
    #[inline]
    fn next_raw(&mut self) -> Result<Option<(&[u8], &[u8])>> {
        let prefix_len = self.prefix_len;
        let (k, v, skip) = match &mut self.walk {
            Walk::Stream(it) => {
                if it.next_entry()?.is_none() {
                    return Ok(None);
                }
                let (k, v) = it.current();
                (k, v, 0)
            }
            Walk::Chunked(c) => {
                let skip = c.ttl.map_or(0, |_| super::ttl::TS_LEN);
                match c.next_record()? {
                    None => return Ok(None),
                    Some((k, v)) => (k, v, skip),
                }
            }
        };
        let v = v.get(skip..).unwrap_or_default();
        Ok(Some((&k[prefix_len.min(k.len())..], v)))
    }

    fn err(&self, source: CodecError) -> crate::Error {
        crate::Error::Codec { state: self.name.to_owned(), source }
    }

    /// The next entry, decoded.
    #[inline]
    pub fn next_entry(&mut self) -> Result<Option<(UK::Value, UV::Value)>> {
        let (keys, values) = (self.keys, self.values);
        let Some((k, v)) = self.next_raw()? else { return Ok(None) };
        let kv = keys.read_all(k).and_then(|k| values.read_all(v).map(|v| (k, v)));
        kv.map(Some).map_err(|e| self.err(e))
    }

    /// The next user key, decoded (the value is not).
    pub fn next_key(&mut self) -> Result<Option<UK::Value>> {
        let keys = self.keys;
        let Some((k, _)) = self.next_raw()? else { return Ok(None) };
        keys.read_all(k).map(Some).map_err(|e| self.err(e))
    }

    /// The next value, decoded (the user key is not).
    pub fn next_value(&mut self) -> Result<Option<UV::Value>> {
        let values = self.values;
        let Some((_, v)) = self.next_raw()? else { return Ok(None) };
        values.read_all(v).map(Some).map_err(|e| self.err(e))
    }
}

impl<UK: Serializer, UV: Serializer> Iterator for MapIter<'_, UK, UV> {
    type Item = Result<(UK::Value, UV::Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().transpose()
    }
}

/// A walk over the entries of a map, in user-key byte order, that can remove the entry it
/// returned last (Flink's `iterator().remove()` on a map state's iterator). Made by
/// [`MapState::cursor`]; read with `while let Some(..) = cursor.next_entry()?`.
///
/// It reads the entries a chunk at a time, wherever they are stored (the mutable region or
/// segments), and honors TTL as [`MapIter`] does. Removing an entry takes effect at once: a
/// later read of the map, in this walk or after it, does not find it.
pub struct MapCursor<'a, UK: Serializer, UV: Serializer> {
    iter: MapIter<'a, UK, UV>,
}

impl<UK: Serializer, UV: Serializer> std::fmt::Debug for MapCursor<'_, UK, UV> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapCursor").field("state", &self.iter.name).finish()
    }
}

impl<UK: Serializer, UV: Serializer> MapCursor<'_, UK, UV> {
    /// The next entry, decoded; it becomes the current entry.
    pub fn next_entry(&mut self) -> Result<Option<(UK::Value, UV::Value)>> {
        self.iter.next_entry()
    }

    /// The next user key, decoded (the value is not); its entry becomes the current entry.
    pub fn next_key(&mut self) -> Result<Option<UK::Value>> {
        self.iter.next_key()
    }

    /// The next value, decoded (the user key is not); its entry becomes the current entry.
    pub fn next_value(&mut self) -> Result<Option<UV::Value>> {
        self.iter.next_value()
    }

    /// Removes the current entry (the one the last `next_*` returned) from the map. Fails with
    /// [`Misuse::NoCurrentEntry`] when there is none: before the first entry, after the end,
    /// or when it was removed already.
    pub fn remove_current(&mut self) -> Result<()> {
        let removed = match &mut self.iter.walk {
            Walk::Chunked(c) => c.remove_current()?,
            Walk::Stream(_) => false,
        };
        if removed {
            Ok(())
        } else {
            Err(Misuse::NoCurrentEntry.into())
        }
    }
}

impl<UK: Serializer, UV: Serializer, N: Serializer> MapState<UK, UV, N> {
    /// Builds the entry's record key in `core.key`; returns the length of the map's prefix
    /// (key group, state, key, namespace), which groups the map's entries in the store.
    #[inline]
    fn entry_key(&self, core: &mut Core, user_key: &UK::Value) -> Result<usize> {
        self.slot.key(core)?;
        let group = core.key.len();
        self.keys.write(user_key, &mut core.key);
        Ok(group)
    }

    /// Incremental TTL cleanup, which must keep removed entries in their groups.
    #[inline]
    fn after_access<K: Serializer>(&self, b: &mut KeyedBackend<K>) -> Result<()> {
        let Some(t) = self.slot.ttl.filter(|t| t.incremental > 0) else { return Ok(()) };
        let (ks, ns) = (&b.key_serializer, &self.slot.ns_serializer);
        let group_of = |record: &[u8]| -> Option<usize> {
            let mut rest = record.get(super::core::PREFIX_LEN..)?;
            ks.read(&mut rest).ok()?;
            ns.read(&mut rest).ok()?;
            Some(record.len() - rest.len())
        };
        b.core.incremental_cleanup(self.slot.id, t.incremental, Some(&group_of))
    }

    /// The value of `user_key` in the current key's map.
    #[inline]
    pub fn get<K: Serializer>(&self, b: &mut KeyedBackend<K>, user_key: &UK::Value) -> Result<Option<UV::Value>> {
        let core = &mut b.core;
        let group = self.entry_key(core, user_key)?;
        let v = read_single(core, &self.slot, group, |bytes| self.values.read_all(bytes))?;
        self.after_access(b)?;
        Ok(v)
    }

    /// Reads the value of `user_key` in place: `f` gets a borrowed view of it (`None` when the
    /// map has no such entry), with no owned value built (see [`ValueState::get_with`]).
    pub fn get_with<K: Serializer, R>(
        &self,
        b: &mut KeyedBackend<K>,
        user_key: &UK::Value,
        f: impl FnOnce(Option<UV::View<'_>>) -> R,
    ) -> Result<R>
    where
        UV: BorrowSerializer,
    {
        let core = &mut b.core;
        let group = self.entry_key(core, user_key)?;
        let r = view_single(core, &self.slot, group, &*self.values, f)?;
        self.after_access(b)?;
        Ok(r)
    }

    /// Whether the current key's map has `user_key`.
    #[inline]
    pub fn contains<K: Serializer>(&self, b: &mut KeyedBackend<K>, user_key: &UK::Value) -> Result<bool> {
        let core = &mut b.core;
        let group = self.entry_key(core, user_key)?;
        let found = match self.slot.ttl {
            None => core.store.contains(&core.key)?,
            Some(_) => read_single(core, &self.slot, group, |_| Ok(()))?.is_some(),
        };
        self.after_access(b)?;
        Ok(found)
    }

    /// Sets `user_key` to `value` in the current key's map.
    #[inline]
    pub fn put<K: Serializer>(&self, b: &mut KeyedBackend<K>, user_key: &UK::Value, value: &UV::Value) -> Result<()> {
        let core = &mut b.core;
        let group = self.entry_key(core, user_key)?;
        write_single(core, &self.slot, group, |out| self.values.write(value, out))?;
        self.after_access(b)
    }

    /// Sets several entries of the current key's map.
    pub fn put_all<'v, K: Serializer>(
        &self,
        b: &mut KeyedBackend<K>,
        entries: impl IntoIterator<Item = (&'v UK::Value, &'v UV::Value)>,
    ) -> Result<()>
    where
        UK::Value: 'v,
        UV::Value: 'v,
    {
        let core = &mut b.core;
        self.slot.key(core)?;
        self.slot.group_ahead(core);
        let group = core.key.len();
        let ts = self.slot.ttl.map(|_| core.clock.now_millis());
        let mut entries = entries.into_iter();
        let mut prefix = std::mem::take(&mut core.scratch);
        prefix.clear();
        prefix.extend_from_slice(&core.key[..group]);
        let Core { store, key, val, .. } = core;
        let written = store.put_grouped_batch(&prefix, key, val, |key, val| {
            let Some((k, v)) = entries.next() else { return Ok(false) };
            key.truncate(group);
            self.keys.write(k, key);
            val.clear();
            if let Some(ts) = ts {
                put_ts(ts, val);
            }
            self.values.write(v, val);
            Ok(true)
        });
        core.scratch = prefix;
        written?;
        self.after_access(b)
    }

    /// Removes `user_key` from the current key's map.
    pub fn remove<K: Serializer>(&self, b: &mut KeyedBackend<K>, user_key: &UK::Value) -> Result<()> {
        let core = &mut b.core;
        let group = self.entry_key(core, user_key)?;
        // A removal counts the entry out of its map's group: the next key's group slot is
        // fetched ahead, as for a walk.
        self.slot.group_ahead(core);
        core.store.delete_grouped(&core.key, group)?;
        self.after_access(b)
    }

    /// The entries of the current key's map, in user-key byte order.
    pub fn iter<'b, K: Serializer>(&'b self, b: &'b mut KeyedBackend<K>) -> Result<MapIter<'b, UK, UV>> {
        self.walk(b, false)
    }

    /// A walk over the entries of the current key's map that can remove the entry it returned
    /// last (see [`MapCursor`]).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use eddy::codec::{I64, U64};
    /// # use eddy::state::{KeyedBackend, MapStateDescriptor};
    /// # use eddy::store::StoreOptions;
    /// # fn main() -> eddy::Result<()> {
    /// # let store = StoreOptions::new().file_system(Arc::new(eddy::io::FaultFs::new()));
    /// # let mut backend = KeyedBackend::builder(U64).store_options(store).open("/state")?;
    /// let counts = backend.state(MapStateDescriptor::new("counts", U64, I64))?;
    /// backend.set_current_key(&1)?;
    /// counts.put_all(&mut backend, [(&1, &5), (&2, &0), (&3, &7)])?;
    /// let mut cursor = counts.cursor(&mut backend)?;
    /// while let Some((_, count)) = cursor.next_entry()? {
    ///     if count == 0 {
    ///         cursor.remove_current()?;
    ///     }
    /// }
    /// assert_eq!(counts.keys(&mut backend)?, vec![1, 3]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn cursor<'b, K: Serializer>(&'b self, b: &'b mut KeyedBackend<K>) -> Result<MapCursor<'b, UK, UV>> {
        Ok(MapCursor { iter: self.walk(b, true)? })
    }

    /// Keeps only the entries of the current key's map for which `keep` returns `true`,
    /// removing the others as it walks the map once (see [`cursor`](Self::cursor)).
    pub fn retain<K: Serializer>(
        &self,
        b: &mut KeyedBackend<K>,
        mut keep: impl FnMut(&UK::Value, &UV::Value) -> bool,
    ) -> Result<()> {
        let mut cursor = self.cursor(b)?;
        while let Some((k, v)) = cursor.next_entry()? {
            if !keep(&k, &v) {
                cursor.remove_current()?;
            }
        }
        Ok(())
    }

    /// A walk over the current key's map: chunked when it has TTL or `removable` asks for it,
    /// straight from the store's scan otherwise.
    fn walk<'b, K: Serializer>(&'b self, b: &'b mut KeyedBackend<K>, removable: bool) -> Result<MapIter<'b, UK, UV>> {
        self.after_access(b)?;
        let core = &mut b.core;
        self.slot.key(core)?;
        self.slot.group_ahead(core);
        let prefix_len = core.key.len();
        if let Some(lazy) = self.slot.lazy.as_ref().filter(|l| l.pending()) {
            core.migrate_group(self.slot.id, &self.slot.name, lazy, prefix_len)?;
        }
        let walk = if self.slot.ttl.is_none() && !removable {
            Walk::Stream(core.store.scan_group(&core.key)?)
        } else {
            let now = core.clock.now_millis();
            Walk::Chunked(Chunks::new(&mut core.store, &core.key, self.slot.ttl, now, &self.slot.name))
        };
        Ok(MapIter { walk, prefix_len, keys: &self.keys, values: &self.values, name: &self.slot.name })
    }

    /// The user keys of the current key's map, collected.
    pub fn keys<K: Serializer>(&self, b: &mut KeyedBackend<K>) -> Result<Vec<UK::Value>> {
        let mut it = self.iter(b)?;
        let mut out = Vec::new();
        while let Some(k) = it.next_key()? {
            out.push(k);
        }
        Ok(out)
    }

    /// The values of the current key's map, collected, in user-key order.
    pub fn values<K: Serializer>(&self, b: &mut KeyedBackend<K>) -> Result<Vec<UV::Value>> {
        let mut it = self.iter(b)?;
        let mut out = Vec::new();
        while let Some(v) = it.next_value()? {
            out.push(v);
        }
        Ok(out)
    }

    /// Whether the current key's map has no entries.
    pub fn is_empty<K: Serializer>(&self, b: &mut KeyedBackend<K>) -> Result<bool> {
        if self.slot.ttl.is_none() {
            let core = &mut b.core;
            self.slot.key(core)?;
            self.slot.group_ahead(core);
            return core.store.group_is_empty(&core.key);
        }
        // Expired entries may be hidden: look at the entries themselves.
        let mut it = self.iter(b)?;
        Ok(it.next_raw()?.is_none())
    }

    /// Removes every entry of the current key's map.
    pub fn clear<K: Serializer>(&self, b: &mut KeyedBackend<K>) -> Result<()> {
        let core = &mut b.core;
        self.slot.key(core)?;
        self.slot.group_ahead(core);
        let group = core.key.len();
        let mut keys = Vec::new();
        {
            let mut it = core.store.scan_group(&core.key)?;
            while let Some((k, _)) = it.next_entry()? {
                keys.push(k.to_vec());
            }
        }
        for k in keys {
            core.store.delete_grouped(&k, group)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Reducing state

/// Describes a reducing state: one value per key and namespace, folded with `reduce`.
pub struct ReducingStateDescriptor<S: Serializer, F> {
    name: String,
    serializer: S,
    reduce: F,
    ttl: Option<TtlConfig>,
}

impl<S: Serializer, F: Fn(S::Value, S::Value) -> S::Value> ReducingStateDescriptor<S, F> {
    /// A reducing state named `name`: `add(v)` stores `reduce(current, v)`.
    pub fn new(name: impl Into<String>, serializer: S, reduce: F) -> Self {
        ReducingStateDescriptor { name: name.into(), serializer, reduce, ttl: None }
    }

    /// The state's time to live.
    #[must_use]
    pub fn ttl(mut self, ttl: TtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

impl<S: Serializer, F: Fn(S::Value, S::Value) -> S::Value> StateDescriptor for ReducingStateDescriptor<S, F> {
    type State<N: Serializer> = ReducingState<S, F, N>;

    fn register<K: Serializer, N: Serializer>(self, b: &mut KeyedBackend<K>, ns: N) -> Result<Self::State<N>> {
        let (ns, serializer, convert) = evolve_single(
            &b.core,
            &self.name,
            StateKind::Reducing,
            ns,
            self.serializer,
            Shape::Single,
            self.ttl.is_some(),
        )?;
        let sers = vec![serializer.snapshot()];
        let slot = Slot::new(&mut b.core, &self.name, StateKind::Reducing, sers, self.ttl, ns, convert)?;
        Ok(ReducingState { slot, serializer, reduce: self.reduce })
    }
}

/// One value per key and namespace, folded with a reduce function.
pub struct ReducingState<S: Serializer, F, N: Serializer = Unit> {
    slot: Slot<N>,
    serializer: Arc<S>,
    reduce: F,
}

handle_common!([S: Serializer, F, N: Serializer] ReducingState<S, F, N>);

impl<S: Serializer, F: Fn(S::Value, S::Value) -> S::Value, N: Serializer> ReducingState<S, F, N> {
    /// The folded value of the current key.
    #[inline]
    pub fn get<K: Serializer>(&self, b: &mut KeyedBackend<K>) -> Result<Option<S::Value>> {
        let core = &mut b.core;
        self.slot.key(core)?;
        let v = read_single(core, &self.slot, 0, |bytes| self.serializer.read_all(bytes))?;
        self.slot.after_access(core)?;
        Ok(v)
    }

    /// Folds `value` into the current key's value.
    #[inline]
    pub fn add<K: Serializer>(&self, b: &mut KeyedBackend<K>, value: S::Value) -> Result<()> {
        let core = &mut b.core;
        self.slot.key(core)?;
        let next = match read_single(core, &self.slot, 0, |bytes| self.serializer.read_all(bytes))? {
            Some(cur) => (self.reduce)(cur, value),
            None => value,
        };
        write_single(core, &self.slot, 0, |out| self.serializer.write(&next, out))?;
        self.slot.after_access(core)
    }

    /// Removes the current key's value.
    pub fn clear<K: Serializer>(&self, b: &mut KeyedBackend<K>) -> Result<()> {
        self.slot.clear(&mut b.core)
    }

    /// Folds the values of the `sources` namespaces into the `target` namespace and removes
    /// them (for merging session windows).
    pub fn merge_namespaces<K: Serializer>(
        &self,
        b: &mut KeyedBackend<K>,
        target: &N::Value,
        sources: &[N::Value],
    ) -> Result<()> {
        fold_namespaces(&mut b.core, &self.slot, &*self.serializer, target, sources, &self.reduce)
    }
}

// ---------------------------------------------------------------------------------------------
// Aggregating state

/// An aggregation with an accumulator distinct from its input and output (Flink's
/// `AggregateFunction`).
pub trait AggregateFunction {
    /// What is added.
    type In;
    /// What is stored.
    type Acc;
    /// What is read.
    type Out;
    /// A new, empty accumulator.
    fn create_accumulator(&self) -> Self::Acc;
    /// Adds a value to an accumulator.
    fn add(&self, value: Self::In, acc: Self::Acc) -> Self::Acc;
    /// The result of an accumulator.
    fn get_result(&self, acc: &Self::Acc) -> Self::Out;
    /// Merges two accumulators.
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
}

/// Describes an aggregating state: an accumulator per key and namespace.
pub struct AggregatingStateDescriptor<S: Serializer, F> {
    name: String,
    serializer: S,
    function: F,
    ttl: Option<TtlConfig>,
}

impl<S: Serializer, F: AggregateFunction<Acc = S::Value>> AggregatingStateDescriptor<S, F> {
    /// An aggregating state named `name` whose accumulators `serializer` writes.
    pub fn new(name: impl Into<String>, serializer: S, function: F) -> Self {
        AggregatingStateDescriptor { name: name.into(), serializer, function, ttl: None }
    }

    /// The state's time to live.
    #[must_use]
    pub fn ttl(mut self, ttl: TtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

impl<S: Serializer, F: AggregateFunction<Acc = S::Value>> StateDescriptor for AggregatingStateDescriptor<S, F> {
    type State<N: Serializer> = AggregatingState<S, F, N>;

    fn register<K: Serializer, N: Serializer>(self, b: &mut KeyedBackend<K>, ns: N) -> Result<Self::State<N>> {
        let (ns, serializer, convert) = evolve_single(
            &b.core,
            &self.name,
            StateKind::Aggregating,
            ns,
            self.serializer,
            Shape::Single,
            self.ttl.is_some(),
        )?;
        let sers = vec![serializer.snapshot()];
        let slot = Slot::new(&mut b.core, &self.name, StateKind::Aggregating, sers, self.ttl, ns, convert)?;
        Ok(AggregatingState { slot, serializer, function: self.function })
    }
}

/// An accumulator per key and namespace, folded with an [`AggregateFunction`].
pub struct AggregatingState<S: Serializer, F, N: Serializer = Unit> {
    slot: Slot<N>,
    serializer: Arc<S>,
    function: F,
}

handle_common!([S: Serializer, F, N: Serializer] AggregatingState<S, F, N>);

impl<S: Serializer, F: AggregateFunction<Acc = S::Value>, N: Serializer> AggregatingState<S, F, N> {
    /// The result of the current key's accumulator (`None` when nothing was added).
    #[inline]
    pub fn get<K: Serializer>(&self, b: &mut KeyedBackend<K>) -> Result<Option<F::Out>> {
        let core = &mut b.core;
        self.slot.key(core)?;
        let acc = read_single(core, &self.slot, 0, |bytes| self.serializer.read_all(bytes))?;
        self.slot.after_access(core)?;
        Ok(acc.map(|a| self.function.get_result(&a)))
    }

    /// Adds `value` to the current key's accumulator.
    #[inline]
    pub fn add<K: Serializer>(&self, b: &mut KeyedBackend<K>, value: F::In) -> Result<()> {
        let core = &mut b.core;
        self.slot.key(core)?;
        let acc = read_single(core, &self.slot, 0, |bytes| self.serializer.read_all(bytes))?
            .unwrap_or_else(|| self.function.create_accumulator());
        let acc = self.function.add(value, acc);
        write_single(core, &self.slot, 0, |out| self.serializer.write(&acc, out))?;
        self.slot.after_access(core)
    }

    /// Removes the current key's accumulator.
    pub fn clear<K: Serializer>(&self, b: &mut KeyedBackend<K>) -> Result<()> {
        self.slot.clear(&mut b.core)
    }

    /// Merges the accumulators of the `sources` namespaces into the `target` namespace's and
    /// removes them (for merging session windows).
    pub fn merge_namespaces<K: Serializer>(
        &self,
        b: &mut KeyedBackend<K>,
        target: &N::Value,
        sources: &[N::Value],
    ) -> Result<()> {
        fold_namespaces(&mut b.core, &self.slot, &*self.serializer, target, sources, |a, v| self.function.merge(a, v))
    }
}
