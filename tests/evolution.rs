//! Schema evolution of keyed state across real checkpoints and savepoints: the outcomes of the
//! compatibility check on restore (as is, after migration, incompatible), lazy conversion on
//! access and in compaction, chains of changes across several restores, eager migration, and
//! hooks that fail.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eddy::checkpoint::{CheckpointOptions, Checkpointer, RestoreSource};
use eddy::codec::{OptionOf, SerdeSerializer, Serializer, VersionedSerde, U32, U64};
use eddy::io::StdFs;
use eddy::state::{
    KeyedBackend, ListStateDescriptor, MapStateDescriptor, OperatorStateBackend, ReducingStateDescriptor,
    StateDescriptor, ValueStateDescriptor,
};
use eddy::{Error, SerializerPart};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct V1 {
    clicks: u32,
    name: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct V2 {
    clicks: u64,
    name: String,
    country: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct V3 {
    clicks: u64,
    label: String,
}

fn v1() -> VersionedSerde<V1> {
    VersionedSerde::<V1>::new("test.Clicks")
}

fn v2() -> VersionedSerde<V2> {
    v1().then(|v: V1| V2 { clicks: u64::from(v.clicks), name: v.name, country: "?".into() })
}

fn v3() -> VersionedSerde<V3> {
    v2().try_then(|v: V2| {
        if v.name == "poison" {
            Err("a poisoned name".into())
        } else {
            Ok(V3 { clicks: v.clicks * 10, label: format!("{}@{}", v.name, v.country) })
        }
    })
}

fn to_v2(v: &V1) -> V2 {
    V2 { clicks: u64::from(v.clicks), name: v.name.clone(), country: "?".into() }
}

fn to_v3(v: &V2) -> V3 {
    V3 { clicks: v.clicks * 10, label: format!("{}@{}", v.name, v.country) }
}

const KEYS: u64 = 300;

fn open(dir: &Path) -> KeyedBackend<U64> {
    KeyedBackend::builder(U64).max_parallelism(16).open(dir).unwrap()
}

fn restore(dir: &Path, source: &RestoreSource) -> eddy::Result<KeyedBackend<U64>> {
    KeyedBackend::builder(U64).max_parallelism(16).restore(dir, std::slice::from_ref(source)).map(|(b, _)| b)
}

/// How a test snapshots a backend.
#[derive(Clone, Copy, Debug)]
enum Snap {
    Checkpoint,
    Savepoint,
}

/// Takes a snapshot of `b` of kind `snap` and gives the source to restore it from.
fn snapshot<K: Serializer>(root: &Path, b: &mut KeyedBackend<K>, snap: Snap, id: u64) -> RestoreSource {
    let mut cp = Checkpointer::local(root.join(format!("checkpoints-{id}")), CheckpointOptions::new()).unwrap();
    let op = OperatorStateBackend::new();
    match snap {
        Snap::Checkpoint => {
            cp.checkpoint(id, b, &op, false).unwrap();
            cp.wait(id).unwrap();
            RestoreSource::Checkpoint { storage: cp.storage().clone(), id }
        }
        Snap::Savepoint => {
            let dir: PathBuf = root.join(format!("savepoint-{id}"));
            cp.savepoint(id, Arc::new(StdFs), &dir, b, &op).unwrap();
            cp.wait(id).unwrap();
            RestoreSource::Savepoint { fs: Arc::new(StdFs), dir }
        }
    }
}

fn value_of(k: u64) -> V1 {
    V1 { clicks: k as u32 * 3, name: format!("user-{k}") }
}

/// A backend with a value state of `V1` for `KEYS` keys, in several segments.
fn written_with_v1(dir: &Path) -> KeyedBackend<U64> {
    let mut b = open(dir);
    let s = b.state(ValueStateDescriptor::new("clicks", v1())).unwrap();
    for k in 0..KEYS {
        b.set_current_key(&k).unwrap();
        s.update(&mut b, &value_of(k)).unwrap();
        if k % 100 == 99 {
            b.store().flush().unwrap();
        }
    }
    b
}

#[test]
fn a_value_state_migrates_lazily_after_a_restore_with_a_newer_version() {
    for snap in [Snap::Checkpoint, Snap::Savepoint] {
        let root = tempfile::tempdir().unwrap();
        let mut b = written_with_v1(&root.path().join("a"));
        let source = snapshot(root.path(), &mut b, snap, 1);
        b.close().unwrap();

        let mut r = restore(&root.path().join("b"), &source).unwrap();
        let s = r.state(ValueStateDescriptor::new("clicks", v2())).unwrap();
        for k in 0..KEYS {
            r.set_current_key(&k).unwrap();
            assert_eq!(s.get(&mut r).unwrap(), Some(to_v2(&value_of(k))), "{snap:?} key {k}");
        }
        // Reads again, now of converted records, and writes of the new type.
        r.set_current_key(&7).unwrap();
        s.update(&mut r, &V2 { clicks: 1, name: "n".into(), country: "de".into() }).unwrap();
        r.set_current_key(&8).unwrap();
        assert_eq!(s.get(&mut r).unwrap(), Some(to_v2(&value_of(8))));
        r.close().unwrap();
    }
}

#[test]
fn a_chain_of_changes_across_restores_reads_every_generation() {
    // v1 data; restore with v2 and write half the keys; checkpoint; restore with v3.
    for snap in [Snap::Checkpoint, Snap::Savepoint] {
        let root = tempfile::tempdir().unwrap();
        let mut b = written_with_v1(&root.path().join("a"));
        let first = snapshot(root.path(), &mut b, Snap::Checkpoint, 1);
        b.close().unwrap();

        let mut r = restore(&root.path().join("b"), &first).unwrap();
        let s = r.state(ValueStateDescriptor::new("clicks", v2())).unwrap();
        let mut model: Vec<V2> = (0..KEYS).map(|k| to_v2(&value_of(k))).collect();
        for k in (0..KEYS).step_by(2) {
            r.set_current_key(&k).unwrap();
            let v = V2 { clicks: k * 100, name: format!("new-{k}"), country: "fr".into() };
            s.update(&mut r, &v).unwrap();
            model[k as usize] = v;
        }
        let second = snapshot(root.path(), &mut r, snap, 2);
        r.close().unwrap();

        let mut r = restore(&root.path().join("c"), &second).unwrap();
        let s = r.state(ValueStateDescriptor::new("clicks", v3())).unwrap();
        for k in 0..KEYS {
            r.set_current_key(&k).unwrap();
            assert_eq!(s.get(&mut r).unwrap(), Some(to_v3(&model[k as usize])), "{snap:?} key {k}");
        }
        r.close().unwrap();
    }
}

#[test]
fn eager_migration_leaves_no_older_writer_behind() {
    let root = tempfile::tempdir().unwrap();
    let mut b = written_with_v1(&root.path().join("a"));
    let source = snapshot(root.path(), &mut b, Snap::Checkpoint, 1);
    b.close().unwrap();

    let mut r = restore(&root.path().join("b"), &source).unwrap();
    let s = r.state(ValueStateDescriptor::new("clicks", v2())).unwrap();
    r.migrate().unwrap();
    let tags = r.store().version().segments.iter().map(|s| s.tag.clone()).collect::<Vec<_>>();
    assert_eq!(tags.len(), 1, "one segment after the eager migration");
    for k in 0..KEYS {
        r.set_current_key(&k).unwrap();
        assert_eq!(s.get(&mut r).unwrap(), Some(to_v2(&value_of(k))));
    }
    // The next snapshot no longer lists the older writer, and restores with v2 as is.
    let again = snapshot(root.path(), &mut r, Snap::Checkpoint, 2);
    r.close().unwrap();
    let mut r = restore(&root.path().join("c"), &again).unwrap();
    let s = r.state(ValueStateDescriptor::new("clicks", v2())).unwrap();
    r.set_current_key(&5).unwrap();
    assert_eq!(s.get(&mut r).unwrap(), Some(to_v2(&value_of(5))));
    r.close().unwrap();
}

#[test]
fn compaction_converts_what_it_merges() {
    let root = tempfile::tempdir().unwrap();
    let mut b = written_with_v1(&root.path().join("a"));
    let source = snapshot(root.path(), &mut b, Snap::Checkpoint, 1);
    b.close().unwrap();

    let mut r = restore(&root.path().join("b"), &source).unwrap();
    let s = r.state(ValueStateDescriptor::new("clicks", v2())).unwrap();
    // New writes next to the old segments; a full compaction merges both generations.
    r.set_current_key(&1).unwrap();
    let new = V2 { clicks: 9, name: "x".into(), country: "y".into() };
    s.update(&mut r, &new).unwrap();
    r.store().compact().unwrap();
    assert_eq!(r.store().version().segments.len(), 1);
    for k in 0..KEYS {
        r.set_current_key(&k).unwrap();
        let want = if k == 1 { new.clone() } else { to_v2(&value_of(k)) };
        assert_eq!(s.get(&mut r).unwrap(), Some(want));
    }
    r.close().unwrap();
}

/// A checkpoint of `keys` v2 values of state `clicks`, the one of key `poison` named
/// "poison" (which the conversion to v3 refuses).
fn checkpoint_with_poison(root: &Path, keys: u64, poison: u64) -> RestoreSource {
    let mut b = open(&root.join("a"));
    let s = b.state(ValueStateDescriptor::new("clicks", v2())).unwrap();
    for k in 0..keys {
        b.set_current_key(&k).unwrap();
        let name = if k == poison { "poison".to_string() } else { format!("u{k}") };
        s.update(&mut b, &V2 { clicks: k, name, country: "c".into() }).unwrap();
    }
    let source = snapshot(root, &mut b, Snap::Checkpoint, 1);
    b.close().unwrap();
    source
}

#[test]
fn a_failing_hook_is_a_typed_error_and_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let source = checkpoint_with_poison(root.path(), 10, 3);

    let mut r = restore(&root.path().join("b"), &source).unwrap();
    let s = r.state(ValueStateDescriptor::new("clicks", v3())).unwrap();
    r.set_current_key(&3).unwrap();
    match s.get(&mut r) {
        Err(Error::Migration { state, why, .. }) => {
            assert_eq!(state, "clicks");
            assert!(why.contains("poisoned"), "{why}");
        }
        other => panic!("expected a migration error, got {other:?}"),
    }
    // The eager migration fails the same way, and the store goes on.
    assert!(matches!(r.migrate(), Err(Error::Migration { .. })));
    r.set_current_key(&4).unwrap();
    assert_eq!(s.get(&mut r).unwrap(), Some(V3 { clicks: 40, label: "u4@c".into() }));
    s.update(&mut r, &V3 { clicks: 1, label: "l".into() }).unwrap();
    // Nothing in the snapshot changed: it restores with v2 as it was.
    r.close().unwrap();
    let mut r = restore(&root.path().join("c"), &source).unwrap();
    let s = r.state(ValueStateDescriptor::new("clicks", v2())).unwrap();
    r.set_current_key(&3).unwrap();
    assert_eq!(s.get(&mut r).unwrap().map(|v| v.name), Some("poison".to_string()));
    r.close().unwrap();
}

/// A conversion that fails far into a large compaction, with batches of records still on
/// their way between the merging and the converting thread, stops it cleanly: a typed error,
/// no output, every record still readable.
#[test]
fn a_failing_hook_deep_in_a_large_eager_migration_stops_it_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let keys = 20_000u64;
    let source = checkpoint_with_poison(root.path(), keys, 15_000);

    let mut r = restore(&root.path().join("b"), &source).unwrap();
    let s = r.state(ValueStateDescriptor::new("clicks", v3())).unwrap();
    for _ in 0..2 {
        let m = r.migrate();
        assert!(matches!(m, Err(Error::Migration { .. })), "{m:?}");
    }
    for k in (0..keys).step_by(97).filter(|k| *k != 15_000) {
        r.set_current_key(&k).unwrap();
        assert_eq!(s.get(&mut r).unwrap(), Some(V3 { clicks: k * 10, label: format!("u{k}@c") }), "key {k}");
    }
    r.set_current_key(&15_000).unwrap();
    assert!(matches!(s.get(&mut r), Err(Error::Migration { .. })));
    // Fixed by overwriting the poisoned record: the migration then completes.
    s.update(&mut r, &V3 { clicks: 1, label: "fixed".into() }).unwrap();
    r.migrate().unwrap();
    assert_eq!(s.get(&mut r).unwrap(), Some(V3 { clicks: 1, label: "fixed".into() }));
    r.close().unwrap();
}

/// Registers `descriptor` in a backend restored from a snapshot of one whose state `name` was
/// written by `old`, and returns the error.
fn incompatible<D: StateDescriptor>(old: impl FnOnce(&mut KeyedBackend<U64>), descriptor: D) -> Error {
    let root = tempfile::tempdir().unwrap();
    let mut b = open(&root.path().join("a"));
    old(&mut b);
    let source = snapshot(root.path(), &mut b, Snap::Checkpoint, 1);
    b.close().unwrap();
    let mut r = restore(&root.path().join("b"), &source).unwrap();
    match r.state(descriptor) {
        Err(e) => {
            // The job can retry with a fixed serializer.
            e
        }
        Ok(_) => panic!("registration succeeded"),
    }
}

#[test]
fn incompatible_serializers_name_the_state_the_part_and_why() {
    let e = incompatible(
        |b| {
            let s = b.state(ValueStateDescriptor::new("v", v2())).unwrap();
            b.set_current_key(&1).unwrap();
            s.update(b, &V2 { clicks: 1, name: "a".into(), country: "b".into() }).unwrap();
        },
        ValueStateDescriptor::new("v", v1()),
    );
    match e {
        Error::IncompatibleSerializer(i) => {
            assert_eq!(i.state.as_deref(), Some("v"));
            assert_eq!(i.part, SerializerPart::Value);
            assert_eq!(i.stored.version, 2);
            assert_eq!(i.requested.version, 1);
        }
        other => panic!("{other:?}"),
    }
    // A map's user keys whose bytes would change are refused online, with the way out.
    let e = incompatible(
        |b| {
            let s = b.state(MapStateDescriptor::new("m", U32, U64)).unwrap();
            b.set_current_key(&1).unwrap();
            s.put(b, &5, &6).unwrap();
        },
        MapStateDescriptor::new("m", U64, U64),
    );
    match e {
        Error::IncompatibleSerializer(i) => {
            assert_eq!(i.part, SerializerPart::UserKey);
            assert!(i.why.contains("offline"), "{}", i.why);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn retrying_with_a_fixed_serializer_after_an_incompatible_one_works() {
    let root = tempfile::tempdir().unwrap();
    let mut b = written_with_v1(&root.path().join("a"));
    let source = snapshot(root.path(), &mut b, Snap::Checkpoint, 1);
    b.close().unwrap();
    let mut r = restore(&root.path().join("b"), &source).unwrap();
    let wrong = VersionedSerde::<V1>::new("other.Tag");
    assert!(matches!(r.state(ValueStateDescriptor::new("clicks", wrong)), Err(Error::IncompatibleSerializer(_))));
    let s = r.state(ValueStateDescriptor::new("clicks", v2())).unwrap();
    r.set_current_key(&2).unwrap();
    assert_eq!(s.get(&mut r).unwrap(), Some(to_v2(&value_of(2))));
    r.close().unwrap();
}

#[test]
fn built_in_widenings_migrate_list_map_and_reducing_state() {
    for snap in [Snap::Checkpoint, Snap::Savepoint] {
        let root = tempfile::tempdir().unwrap();
        let mut b = open(&root.path().join("a"));
        let list = b.state(ListStateDescriptor::new("list", U32)).unwrap();
        let map = b.state(MapStateDescriptor::new("map", U32, U32)).unwrap();
        let sum = b.state(ReducingStateDescriptor::new("sum", U32, |a: u32, b: u32| a + b)).unwrap();
        for k in 0..50u64 {
            b.set_current_key(&k).unwrap();
            list.add(&mut b, &(k as u32)).unwrap();
            list.add(&mut b, &7).unwrap();
            map.put(&mut b, &1, &(k as u32)).unwrap();
            map.put(&mut b, &2, &u32::MAX).unwrap();
            sum.add(&mut b, 5).unwrap();
        }
        let source = snapshot(root.path(), &mut b, snap, 1);
        b.close().unwrap();

        let mut r = restore(&root.path().join("b"), &source).unwrap();
        let list = r.state(ListStateDescriptor::new("list", U64)).unwrap();
        let map = r.state(MapStateDescriptor::new("map", U32, OptionOf(U64))).unwrap();
        let sum = r.state(ReducingStateDescriptor::new("sum", U64, |a: u64, b: u64| a + b)).unwrap();
        for k in 0..50u64 {
            r.set_current_key(&k).unwrap();
            // Appending to an old list converts it first.
            list.add(&mut r, &(u64::MAX)).unwrap();
            assert_eq!(list.get_vec(&mut r).unwrap(), vec![k, 7, u64::MAX], "{snap:?}");
            let mut entries = Vec::new();
            let mut it = map.iter(&mut r).unwrap();
            while let Some(e) = it.next_entry().unwrap() {
                entries.push(e);
            }
            drop(it);
            assert_eq!(entries, vec![(1, Some(k)), (2, Some(u64::from(u32::MAX)))]);
            sum.add(&mut r, u64::from(u32::MAX)).unwrap();
            assert_eq!(sum.get(&mut r).unwrap(), Some(5 + u64::from(u32::MAX)));
        }
        r.close().unwrap();
    }
}

#[test]
fn plain_serde_data_moves_to_a_version_chain() {
    let root = tempfile::tempdir().unwrap();
    let mut b = open(&root.path().join("a"));
    let s = b.state(ValueStateDescriptor::new("v", SerdeSerializer::<V1>::with_tag("test.Clicks"))).unwrap();
    b.set_current_key(&1).unwrap();
    s.update(&mut b, &value_of(1)).unwrap();
    let source = snapshot(root.path(), &mut b, Snap::Checkpoint, 1);
    b.close().unwrap();
    let mut r = restore(&root.path().join("b"), &source).unwrap();
    let s = r.state(ValueStateDescriptor::new("v", v3())).unwrap();
    r.set_current_key(&1).unwrap();
    assert_eq!(s.get(&mut r).unwrap(), Some(to_v3(&to_v2(&value_of(1)))));
    assert_eq!(v3().snapshot().version, 3);
    r.close().unwrap();
}

#[test]
fn operator_list_and_broadcast_state_migrate_on_registration() {
    use eddy::codec::{Str, U16};
    use eddy::state::BroadcastStateDescriptor;
    let mut b = OperatorStateBackend::new();
    b.list_state("offsets", U32).unwrap().add_all([1, u32::MAX]);
    b.union_list_state("names", v1()).unwrap().add(value_of(4));
    let rules = BroadcastStateDescriptor::new("rules", U16, U32);
    let bs = b.broadcast_state(&rules).unwrap();
    bs.put(300, 7);
    bs.put(2, 9);
    let snap = b.snapshot();

    let mut r = OperatorStateBackend::restore(snap.clone());
    assert_eq!(r.list_state("offsets", U64).unwrap().get(), &[1, u64::from(u32::MAX)]);
    assert_eq!(r.union_list_state("names", v2()).unwrap().get(), &[to_v2(&value_of(4))]);
    // Broadcast keys change their bytes (u16 to u64): in memory, the map is rebuilt.
    let widened = BroadcastStateDescriptor::new("rules", U64, OptionOf(U64));
    let bs = r.broadcast_state(&widened).unwrap();
    assert_eq!(bs.get(&300), Some(&Some(7)));
    assert_eq!(bs.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![2, 300]);
    // The next snapshot holds the new serializers' bytes, restored as is.
    let again = r.snapshot();
    let mut r2 = OperatorStateBackend::restore(again);
    assert_eq!(r2.list_state("offsets", U64).unwrap().get(), &[1, u64::from(u32::MAX)]);
    assert_eq!(r2.broadcast_state(&widened).unwrap().get(&2), Some(&Some(9)));

    // Incompatible: a typed error naming the part; the state can still be registered.
    let mut r = OperatorStateBackend::restore(snap);
    match r.broadcast_state(&BroadcastStateDescriptor::new("rules", Str, U32)) {
        Err(Error::IncompatibleSerializer(i)) => assert_eq!(i.part, SerializerPart::Key),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(r.broadcast_state(&rules).unwrap().get(&300), Some(&7));
}

#[test]
fn turning_ttl_on_or_off_across_a_restore_is_a_lazy_migration() {
    use eddy::state::{Clock, ManualClock, TtlConfig};
    use std::time::Duration;
    let clock = ManualClock::new(1_000);
    let with_clock = |dir: &Path, source: Option<&RestoreSource>| {
        let b = KeyedBackend::builder(U64).max_parallelism(16).clock(Arc::new(clock.clone()));
        match source {
            None => b.open(dir).unwrap(),
            Some(s) => b.restore(dir, std::slice::from_ref(s)).unwrap().0,
        }
    };
    let ttl = TtlConfig::new(Duration::from_secs(10));
    for snap in [Snap::Checkpoint, Snap::Savepoint] {
        let root = tempfile::tempdir().unwrap();
        // Off, then on: values written without a timestamp count as written when the state
        // was registered with TTL, and expire from then.
        let mut b = with_clock(&root.path().join("a"), None);
        let v = b.state(ValueStateDescriptor::new("v", U64)).unwrap();
        let l = b.state(ListStateDescriptor::new("l", U64)).unwrap();
        for k in 0..20u64 {
            b.set_current_key(&k).unwrap();
            v.update(&mut b, &k).unwrap();
            l.add_all(&mut b, [&k, &(k + 1)]).unwrap();
        }
        let off = snapshot(root.path(), &mut b, snap, 1);
        b.close().unwrap();
        let mut r = with_clock(&root.path().join("b"), Some(&off));
        let v = r.state(ValueStateDescriptor::new("v", U64).ttl(ttl)).unwrap();
        let l = r.state(ListStateDescriptor::new("l", U64).ttl(ttl)).unwrap();
        for k in 0..10u64 {
            r.set_current_key(&k).unwrap();
            assert_eq!(v.get(&mut r).unwrap(), Some(k), "{snap:?}");
            assert_eq!(l.get_vec(&mut r).unwrap(), vec![k, k + 1]);
        }
        // Written now with the time of the registration (for the savepoint, it converts).
        r.migrate().unwrap();
        let on = snapshot(root.path(), &mut r, snap, 2);
        r.close().unwrap();

        // On, then off: timestamps are dropped, nothing expires any more.
        let mut r = with_clock(&root.path().join("c"), Some(&on));
        let v2 = r.state(ValueStateDescriptor::new("v", U64)).unwrap();
        let l2 = r.state(ListStateDescriptor::new("l", U64)).unwrap();
        clock.set(clock.now_millis() + 60_000);
        for k in 0..20u64 {
            r.set_current_key(&k).unwrap();
            assert_eq!(v2.get(&mut r).unwrap(), Some(k), "{snap:?} key {k}");
            assert_eq!(l2.get_vec(&mut r).unwrap(), vec![k, k + 1]);
        }
        r.close().unwrap();

        // And on again: the state written with TTL expires when its time comes.
        let mut r = with_clock(&root.path().join("d"), Some(&on));
        let v3 = r.state(ValueStateDescriptor::new("v", U64).ttl(ttl)).unwrap();
        r.set_current_key(&0).unwrap();
        assert_eq!(v3.get(&mut r).unwrap(), None, "{snap:?}: expired a minute later");
        r.close().unwrap();
        clock.set(1_000);
    }
}

/// A key serializer whose width is its configuration: a serializer of another width reads
/// the old keys once reconfigured to the old width (the bytes of keys do not change).
#[derive(Debug, Clone, Copy)]
struct Width(u8);

impl Serializer for Width {
    type Value = u64;
    fn write(&self, v: &u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&v.to_be_bytes()[8 - usize::from(self.0)..]);
    }
    fn read(&self, input: &mut &[u8]) -> Result<u64, eddy::codec::CodecError> {
        let n = usize::from(self.0);
        if input.len() < n {
            return Err(eddy::codec::CodecError::Truncated { needed: n - input.len() });
        }
        let mut b = [0u8; 8];
        b[8 - n..].copy_from_slice(&input[..n]);
        *input = &input[n..];
        Ok(u64::from_be_bytes(b))
    }
    fn snapshot(&self) -> eddy::codec::SerializerSnapshot {
        eddy::codec::SerializerSnapshot { identity: "test.width".into(), version: 1, config: vec![self.0] }
    }
    fn compatibility(&self, old: &eddy::codec::SerializerSnapshot) -> eddy::codec::Compatibility {
        use eddy::codec::Compatibility::*;
        match (old.identity.as_str(), &old.config[..]) {
            ("test.width", [w]) if *w == self.0 => AsIs,
            ("test.width", [1..=8]) => WithReconfiguredSerializer,
            _ => Incompatible,
        }
    }
    fn reconfigured(&self, old: &eddy::codec::SerializerSnapshot) -> Option<Self> {
        old.config.first().copied().filter(|w| (1..=8).contains(w)).map(Width)
    }
}

#[test]
fn key_serializers_are_reconfigured_online_and_changes_of_key_bytes_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let mut b = KeyedBackend::builder(Width(4)).max_parallelism(16).open(root.path().join("a")).unwrap();
    let s = b.state(ValueStateDescriptor::new("v", U64)).unwrap();
    for k in 0..50u64 {
        b.set_current_key(&k).unwrap();
        s.update(&mut b, &(k * 2)).unwrap();
    }
    let mut cp = Checkpointer::local(root.path().join("cp"), CheckpointOptions::new()).unwrap();
    cp.checkpoint(1, &mut b, &OperatorStateBackend::new(), false).unwrap();
    cp.wait(1).unwrap();
    b.close().unwrap();
    let source = RestoreSource::Checkpoint { storage: cp.storage().clone(), id: 1 };

    // Another width: reconfigured to the snapshot's, so every key is found where it was.
    let (mut r, _) = KeyedBackend::builder(Width(8))
        .max_parallelism(16)
        .restore(root.path().join("b"), std::slice::from_ref(&source))
        .unwrap();
    let s = r.state(ValueStateDescriptor::new("v", U64)).unwrap();
    for k in 0..50u64 {
        r.set_current_key(&k).unwrap();
        assert_eq!(s.get(&mut r).unwrap(), Some(k * 2));
    }
    r.close().unwrap();

    // A key type whose bytes differ (u32 keys read as u64 would need other bytes): refused,
    // saying how to go on.
    let root2 = tempfile::tempdir().unwrap();
    let mut b = KeyedBackend::builder(U32).max_parallelism(16).open(root2.path().join("a")).unwrap();
    let s = b.state(ValueStateDescriptor::new("v", U64)).unwrap();
    b.set_current_key(&1).unwrap();
    s.update(&mut b, &1).unwrap();
    let source = snapshot(root2.path(), &mut b, Snap::Checkpoint, 1);
    b.close().unwrap();
    match KeyedBackend::builder(U64).max_parallelism(16).restore(root2.path().join("b"), &[source]) {
        Err(Error::IncompatibleSerializer(i)) => {
            assert_eq!(i.part, SerializerPart::Key);
            assert!(i.why.contains("offline"), "{}", i.why);
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

/// Timers are keys only: a namespace serializer reconfigured from the stored one reads them
/// online, through a checkpoint and a savepoint; one that changes their bytes is refused.
#[test]
fn timers_take_a_reconfigured_namespace_serializer_and_refuse_a_change_of_bytes() {
    for snap in [Snap::Checkpoint, Snap::Savepoint] {
        let root = tempfile::tempdir().unwrap();
        let mut b = open(&root.path().join("a"));
        let t = b.timer_service_in("windows", Width(4)).unwrap();
        for k in 0..40u64 {
            b.set_current_key(&k).unwrap();
            t.register_event_time(&mut b, &(k * 1000), 100 + k as i64).unwrap();
        }
        let source = snapshot(root.path(), &mut b, snap, 1);
        b.close().unwrap();

        let mut r = restore(&root.path().join("b"), &source).unwrap();
        let t = r.timer_service_in("windows", Width(8)).unwrap();
        let mut fired = Vec::new();
        let n = t
            .advance_watermark(&mut r, i64::MAX, |_, timer| {
                fired.push((timer.key, timer.namespace, timer.timestamp));
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 40);
        fired.sort();
        let expected: Vec<_> = (0..40u64).map(|k| (k, k * 1000, 100 + k as i64)).collect();
        assert_eq!(fired, expected);
        r.close().unwrap();

        let mut r = restore(&root.path().join("c"), &source).unwrap();
        match r.timer_service_in("windows", OptionOf(U32)) {
            Err(Error::IncompatibleSerializer(i)) => assert_eq!(i.part, SerializerPart::Namespace),
            other => panic!("{:?}", other.map(|_| ())),
        }
        // Nothing changed: the right serializer still works in the same backend.
        let t = r.timer_service_in("windows", Width(4)).unwrap();
        assert_eq!(t.advance_watermark(&mut r, i64::MAX, |_, _| Ok(())).unwrap(), 40);
        r.close().unwrap();
    }
}

#[test]
fn records_converted_and_written_back_while_flushes_and_compactions_run_stay_readable() {
    use eddy::store::StoreOptions;
    let root = tempfile::tempdir().unwrap();
    let opts = || StoreOptions::new().memory_budget(4 << 20);
    let keys: u64 = std::env::var("EVO_KEYS").ok().and_then(|s| s.parse().ok()).unwrap_or(60_000);
    let mut b =
        KeyedBackend::builder(U64).max_parallelism(16).store_options(opts()).open(root.path().join("a")).unwrap();
    let l = b.state(ListStateDescriptor::new("l", v1())).unwrap();
    for k in 0..keys {
        b.set_current_key(&k).unwrap();
        l.add(&mut b, &value_of(k)).unwrap();
    }
    let source = snapshot(root.path(), &mut b, Snap::Checkpoint, 1);
    b.close().unwrap();
    let (mut r, _) = KeyedBackend::builder(U64)
        .max_parallelism(16)
        .store_options(opts())
        .restore(root.path().join("b"), &[source])
        .unwrap();
    let l = r.state(ListStateDescriptor::new("l", v2())).unwrap();
    for round in 0..2 {
        for k in 0..keys {
            r.set_current_key(&k).unwrap();
            assert_eq!(l.get_vec(&mut r).unwrap(), vec![to_v2(&value_of(k))], "round {round} key {k}");
        }
    }
    r.close().unwrap();
}

#[test]
fn a_savepoint_needs_evolved_states_registered_and_lists_no_older_writer() {
    let root = tempfile::tempdir().unwrap();
    let mut b = written_with_v1(&root.path().join("a"));
    let source = snapshot(root.path(), &mut b, Snap::Checkpoint, 1);
    b.close().unwrap();
    // Restored with v2, checkpointed (old segments kept), restored again without registering.
    let mut r = restore(&root.path().join("b"), &source).unwrap();
    let s = r.state(ValueStateDescriptor::new("clicks", v2())).unwrap();
    r.set_current_key(&1).unwrap();
    s.update(&mut r, &V2 { clicks: 1, name: "one".into(), country: "x".into() }).unwrap();
    let evolved = snapshot(root.path(), &mut r, Snap::Checkpoint, 2);
    r.close().unwrap();
    let mut r = restore(&root.path().join("c"), &evolved).unwrap();
    let mut cp = Checkpointer::local(root.path().join("cp-x"), CheckpointOptions::new()).unwrap();
    let op = OperatorStateBackend::new();
    let err = cp.savepoint(9, Arc::new(StdFs), root.path().join("sp-x"), &mut r, &op).unwrap_err();
    assert!(matches!(err, Error::Misuse(eddy::Misuse::UnmigratedState { ref name }) if name == "clicks"), "{err:?}");
    // Registered, the savepoint converts; its restore reads every key as v2.
    let s = r.state(ValueStateDescriptor::new("clicks", v2())).unwrap();
    let sp = snapshot(root.path(), &mut r, Snap::Savepoint, 3);
    drop(s);
    r.close().unwrap();
    let mut r = restore(&root.path().join("d"), &sp).unwrap();
    let s = r.state(ValueStateDescriptor::new("clicks", v2())).unwrap();
    for k in 0..KEYS {
        r.set_current_key(&k).unwrap();
        let want = if k == 1 { V2 { clicks: 1, name: "one".into(), country: "x".into() } } else { to_v2(&value_of(k)) };
        assert_eq!(s.get(&mut r).unwrap(), Some(want));
    }
    r.close().unwrap();
}
