//! Operator state: list state redistributed on rescaling (even-split or union) and broadcast
//! state (the same map on every parallel instance). Both are small by nature and live in memory,
//! as in Flink; they are written in full into every snapshot.

use std::any::Any;
use std::collections::BTreeMap;

use crate::checkpoint::OperatorSource;
use crate::codec::{Serializer, SerializerSnapshot};
use crate::error::{Misuse, Result};
use crate::format::meta::{BroadcastStateSnapshot, ListStateSnapshot, OperatorStateSnapshot, Redistribution};

use super::core::codec_error;
use super::evolve::{read_eager, resolve_eager};
use crate::SerializerPart;

/// An operator list state: a plain list of elements per instance.
#[derive(Debug)]
pub struct OperatorListState<S: Serializer> {
    serializer: S,
    mode: Redistribution,
    items: Vec<S::Value>,
}

impl<S: Serializer> OperatorListState<S> {
    /// The elements.
    pub fn get(&self) -> &[S::Value] {
        &self.items
    }

    /// Appends an element.
    pub fn add(&mut self, value: S::Value) {
        self.items.push(value);
    }

    /// Appends elements.
    pub fn add_all(&mut self, values: impl IntoIterator<Item = S::Value>) {
        self.items.extend(values);
    }

    /// Replaces the elements.
    pub fn update(&mut self, values: Vec<S::Value>) {
        self.items = values;
    }

    /// Removes every element.
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// How the state is redistributed.
    pub fn mode(&self) -> Redistribution {
        self.mode
    }
}

/// Describes a broadcast state: a map with keys written by `KS` and values by `VS`.
#[derive(Debug, Clone)]
pub struct BroadcastStateDescriptor<KS, VS> {
    name: String,
    keys: KS,
    values: VS,
}

impl<KS: Serializer + Clone, VS: Serializer + Clone> BroadcastStateDescriptor<KS, VS> {
    /// A broadcast state named `name`.
    pub fn new(name: impl Into<String>, keys: KS, values: VS) -> Self {
        BroadcastStateDescriptor { name: name.into(), keys, values }
    }
}

/// Broadcast state, read-write: the side that receives the broadcast stream holds this.
pub struct BroadcastState<KS: Serializer, VS: Serializer> {
    keys: KS,
    values: VS,
    map: BTreeMap<Vec<u8>, (KS::Value, VS::Value)>,
    scratch: Vec<u8>,
}

impl<KS: Serializer, VS: Serializer> BroadcastState<KS, VS> {
    fn key_bytes(&mut self, key: &KS::Value) -> &[u8] {
        self.scratch.clear();
        self.keys.write(key, &mut self.scratch);
        &self.scratch
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: KS::Value, value: VS::Value) {
        let k = self.key_bytes(&key).to_vec();
        self.map.insert(k, (key, value));
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &KS::Value) -> Option<VS::Value> {
        let k = self.key_bytes(key).to_vec();
        self.map.remove(&k).map(|(_, v)| v)
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// The value of `key`.
    pub fn get(&self, key: &KS::Value) -> Option<&VS::Value> {
        let mut k = Vec::new();
        self.keys.write(key, &mut k);
        self.map.get(&k).map(|(_, v)| v)
    }

    /// Whether `key` has a value.
    pub fn contains(&self, key: &KS::Value) -> bool {
        self.get(key).is_some()
    }

    /// The entries, in key-byte order.
    pub fn iter(&self) -> impl Iterator<Item = (&KS::Value, &VS::Value)> {
        self.map.values().map(|(k, v)| (k, v))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A read-only view.
    pub fn read_only(&self) -> ReadOnlyBroadcastState<'_, KS, VS> {
        ReadOnlyBroadcastState(self)
    }
}

/// Broadcast state, read-only: the keyed side of a broadcast connection gets this view, which
/// has no way to write, so every instance keeps the same state.
///
/// ```compile_fail
/// use eddy::codec::{Str, I64};
/// use eddy::state::{BroadcastStateDescriptor, OperatorStateBackend};
///
/// let mut backend = OperatorStateBackend::new();
/// let rules = BroadcastStateDescriptor::new("rules", Str, I64);
/// let view = backend.read_only_broadcast_state(&rules).unwrap();
/// view.put("a".to_string(), 1); // does not compile: the view has no way to write
/// ```
pub struct ReadOnlyBroadcastState<'a, KS: Serializer, VS: Serializer>(&'a BroadcastState<KS, VS>);

impl<KS: Serializer, VS: Serializer> ReadOnlyBroadcastState<'_, KS, VS> {
    /// The value of `key`.
    pub fn get(&self, key: &KS::Value) -> Option<&VS::Value> {
        self.0.get(key)
    }

    /// Whether `key` has a value.
    pub fn contains(&self, key: &KS::Value) -> bool {
        self.0.contains(key)
    }

    /// The entries, in key-byte order.
    pub fn iter(&self) -> impl Iterator<Item = (&KS::Value, &VS::Value)> {
        self.0.iter()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Type-erased operator states, so one backend holds states of different types.
trait Erased: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn describe(&self) -> String;
    fn snapshot_into(&self, name: &str, out: &mut OperatorStateSnapshot);
}

impl<S: Serializer> Erased for OperatorListState<S>
where
    S::Value: Send,
{
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn describe(&self) -> String {
        format!("{:?} list state of {}", self.mode, self.serializer.snapshot().identity)
    }
    fn snapshot_into(&self, name: &str, out: &mut OperatorStateSnapshot) {
        let elements = self
            .items
            .iter()
            .map(|v| {
                let mut b = Vec::new();
                self.serializer.write(v, &mut b);
                b
            })
            .collect();
        out.lists.push(ListStateSnapshot {
            name: name.to_owned(),
            mode: self.mode,
            serializer: self.serializer.snapshot(),
            elements,
        });
    }
}

impl<KS: Serializer, VS: Serializer> Erased for BroadcastState<KS, VS>
where
    KS::Value: Send,
    VS::Value: Send,
{
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn describe(&self) -> String {
        format!("broadcast state of {} -> {}", self.keys.snapshot().identity, self.values.snapshot().identity)
    }
    fn snapshot_into(&self, name: &str, out: &mut OperatorStateSnapshot) {
        let entries = self
            .map
            .iter()
            .map(|(k, (_, v))| {
                let mut b = Vec::new();
                self.values.write(v, &mut b);
                (k.clone(), b)
            })
            .collect();
        out.broadcast.push(BroadcastStateSnapshot {
            name: name.to_owned(),
            keys: self.keys.snapshot(),
            values: self.values.snapshot(),
            entries,
        });
    }
}

/// The operator state of one parallel instance: list states and broadcast states by name.
#[derive(Default)]
pub struct OperatorStateBackend {
    lists: BTreeMap<String, Box<dyn Erased>>,
    broadcast: BTreeMap<String, Box<dyn Erased>>,
    /// Restored states not registered again yet; kept in snapshots until they are.
    pending: OperatorStateSnapshot,
}

impl std::fmt::Debug for OperatorStateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorStateBackend")
            .field("lists", &self.lists.keys().collect::<Vec<_>>())
            .field("broadcast", &self.broadcast.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl OperatorStateBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend holding a snapshot's states; each comes back typed when it is registered
    /// again with a compatible serializer.
    pub fn restore(snapshot: OperatorStateSnapshot) -> Self {
        OperatorStateBackend { pending: snapshot, ..Self::default() }
    }

    fn list<S: Serializer>(
        &mut self,
        name: &str,
        serializer: S,
        mode: Redistribution,
    ) -> Result<&mut OperatorListState<S>>
    where
        S::Value: Send,
    {
        if !self.lists.contains_key(name) {
            let mut items = Vec::new();
            if let Some(pos) = self.pending.lists.iter().position(|l| l.name == name) {
                let old = &self.pending.lists[pos];
                if old.mode != mode {
                    return Err(Misuse::StateMismatch {
                        name: name.to_owned(),
                        existing: format!("{:?} list state", old.mode),
                        requested: format!("{mode:?} list state"),
                    }
                    .into());
                }
                // Read whole now: values of an older serializer are converted here, and the
                // next snapshot writes them with the serializer registered now.
                let (s, reader) = resolve_eager(name, SerializerPart::Value, serializer, &old.serializer)?;
                for e in &old.elements {
                    items.push(read_eager(&s, reader.as_ref(), e).map_err(|e| codec_error(name, e))?);
                }
                self.pending.lists.remove(pos);
                self.lists.insert(name.to_owned(), Box::new(OperatorListState { serializer: s, mode, items }));
            } else {
                self.lists.insert(name.to_owned(), Box::new(OperatorListState { serializer, mode, items }));
            }
        }
        let entry = self.lists.get_mut(name).ok_or(Misuse::ForeignHandle)?;
        let describe = entry.describe();
        match entry.as_any_mut().downcast_mut::<OperatorListState<S>>() {
            Some(l) if l.mode == mode => Ok(l),
            _ => Err(Misuse::StateMismatch {
                name: name.to_owned(),
                existing: describe,
                requested: format!("{mode:?} list state"),
            }
            .into()),
        }
    }

    /// The even-split list state `name` (Flink's `getListState`).
    pub fn list_state<S: Serializer>(&mut self, name: &str, serializer: S) -> Result<&mut OperatorListState<S>>
    where
        S::Value: Send,
    {
        self.list(name, serializer, Redistribution::EvenSplit)
    }

    /// The union list state `name` (Flink's `getUnionListState`).
    pub fn union_list_state<S: Serializer>(&mut self, name: &str, serializer: S) -> Result<&mut OperatorListState<S>>
    where
        S::Value: Send,
    {
        self.list(name, serializer, Redistribution::Union)
    }

    /// The broadcast state of `descriptor`, read-write (for the broadcast side).
    pub fn broadcast_state<KS: Serializer + Clone, VS: Serializer + Clone>(
        &mut self,
        descriptor: &BroadcastStateDescriptor<KS, VS>,
    ) -> Result<&mut BroadcastState<KS, VS>>
    where
        KS::Value: Send,
        VS::Value: Send,
    {
        let name = descriptor.name.as_str();
        if !self.broadcast.contains_key(name) {
            let mut state = BroadcastState {
                keys: descriptor.keys.clone(),
                values: descriptor.values.clone(),
                map: BTreeMap::new(),
                scratch: Vec::new(),
            };
            if let Some(pos) = self.pending.broadcast.iter().position(|b| b.name == name) {
                let old = &self.pending.broadcast[pos];
                // Read whole now; keys of an older serializer get the bytes of the new one (the
                // map is in memory, so its order follows).
                let (keys, key_reader) = resolve_eager(name, SerializerPart::Key, state.keys, &old.keys)?;
                let (values, value_reader) = resolve_eager(name, SerializerPart::Value, state.values, &old.values)?;
                state.keys = keys;
                state.values = values;
                let mut map = BTreeMap::new();
                for (k, v) in &old.entries {
                    let key = read_eager(&state.keys, key_reader.as_ref(), k).map_err(|e| codec_error(name, e))?;
                    let value =
                        read_eager(&state.values, value_reader.as_ref(), v).map_err(|e| codec_error(name, e))?;
                    let bytes = match key_reader {
                        None => k.clone(),
                        Some(_) => {
                            let mut b = Vec::new();
                            state.keys.write(&key, &mut b);
                            b
                        }
                    };
                    map.insert(bytes, (key, value));
                }
                if map.len() != old.entries.len() {
                    return Err(crate::error::Incompatibility {
                        state: Some(name.to_owned()),
                        part: SerializerPart::Key,
                        stored: old.keys.clone(),
                        requested: state.keys.snapshot(),
                        why: "the migration gives two old keys the same new key".into(),
                    }
                    .into());
                }
                state.map = map;
                self.pending.broadcast.remove(pos);
            }
            self.broadcast.insert(name.to_owned(), Box::new(state));
        }
        let entry = self.broadcast.get_mut(name).ok_or(Misuse::ForeignHandle)?;
        let describe = entry.describe();
        entry.as_any_mut().downcast_mut::<BroadcastState<KS, VS>>().ok_or_else(|| {
            Misuse::StateMismatch {
                name: name.to_owned(),
                existing: describe,
                requested: format!(
                    "broadcast state of {} -> {}",
                    descriptor.keys.snapshot().identity,
                    descriptor.values.snapshot().identity
                ),
            }
            .into()
        })
    }

    /// The broadcast state of `descriptor`, read-only (for the keyed side).
    pub fn read_only_broadcast_state<KS: Serializer + Clone, VS: Serializer + Clone>(
        &mut self,
        descriptor: &BroadcastStateDescriptor<KS, VS>,
    ) -> Result<ReadOnlyBroadcastState<'_, KS, VS>>
    where
        KS::Value: Send,
        VS::Value: Send,
    {
        Ok(self.broadcast_state(descriptor)?.read_only())
    }

    /// Every state, serialized (restored states not registered again included).
    pub fn snapshot(&self) -> OperatorStateSnapshot {
        let mut out = OperatorStateSnapshot::default();
        for (name, s) in &self.lists {
            s.snapshot_into(name, &mut out);
        }
        for (name, s) in &self.broadcast {
            s.snapshot_into(name, &mut out);
        }
        out.lists.extend(self.pending.lists.iter().cloned());
        out.broadcast.extend(self.pending.broadcast.iter().cloned());
        out.lists.sort_by(|a, b| a.name.cmp(&b.name));
        out.broadcast.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Spreads the snapshots of the old instances (in instance order) over `parallelism` new
    /// instances, as Flink's `RoundRobinOperatorStateRepartitioner` does. Even-split lists:
    /// at the same parallelism every instance keeps its own elements; at another, the
    /// elements of all old instances, in instance order, are cut into contiguous runs, new
    /// instance `i` taking `n / parallelism` of the `n` elements plus one more while
    /// `i < n % parallelism`. Union lists go whole to everyone, broadcast state (the same
    /// everywhere) from the first instance to everyone.
    pub fn redistribute<'a>(
        old: &'a [OperatorStateSnapshot],
        parallelism: usize,
    ) -> Result<Vec<OperatorStateSnapshot>> {
        if parallelism == 0 {
            return Err(Misuse::InvalidOption { name: "parallelism", why: "must be at least 1" }.into());
        }
        let mut out = vec![OperatorStateSnapshot::default(); parallelism];
        let mut names: BTreeMap<&str, (Redistribution, &SerializerSnapshot)> = BTreeMap::new();
        for snap in old {
            for l in &snap.lists {
                match names.get(l.name.as_str()) {
                    Some((mode, ser)) if *mode != l.mode || **ser != l.serializer => {
                        return Err(Misuse::StateMismatch {
                            name: l.name.clone(),
                            existing: format!("{mode:?} list state of {}", ser.identity),
                            requested: format!("{:?} list state of {}", l.mode, l.serializer.identity),
                        }
                        .into())
                    }
                    _ => {
                        names.insert(&l.name, (l.mode, &l.serializer));
                    }
                }
            }
        }
        for (name, (mode, serializer)) in names {
            let of = |s: &'a OperatorStateSnapshot| s.lists.iter().filter(|l| l.name == name).flat_map(|l| &l.elements);
            let all = old.iter().flat_map(of);
            let mut parts: Vec<Vec<Vec<u8>>> = vec![Vec::new(); parallelism];
            match mode {
                Redistribution::EvenSplit if old.len() == parallelism => {
                    // Nothing to rescale: every instance keeps its own elements.
                    for (part, snap) in parts.iter_mut().zip(old) {
                        part.extend(of(snap).cloned());
                    }
                }
                Redistribution::EvenSplit => {
                    // Contiguous runs of the elements in instance order: instance `i` takes
                    // `n / parallelism`, and one more while `i < n % parallelism`.
                    let n = all.clone().count();
                    let mut all = all;
                    for (i, part) in parts.iter_mut().enumerate() {
                        let take = n / parallelism + usize::from(i < n % parallelism);
                        part.extend(all.by_ref().take(take).cloned());
                    }
                }
                Redistribution::Union => {
                    let all: Vec<Vec<u8>> = all.cloned().collect();
                    parts.iter_mut().for_each(|p| p.clone_from(&all));
                }
            }
            for (snap, elements) in out.iter_mut().zip(parts) {
                snap.lists.push(ListStateSnapshot {
                    name: name.to_owned(),
                    mode,
                    serializer: serializer.clone(),
                    elements,
                });
            }
        }
        if let Some(first) = old.first() {
            for snap in &mut out {
                snap.broadcast.clone_from(&first.broadcast);
            }
        }
        Ok(out)
    }
}

impl OperatorSource for OperatorStateBackend {
    fn operator_snapshot(&self) -> OperatorStateSnapshot {
        self.snapshot()
    }
}
