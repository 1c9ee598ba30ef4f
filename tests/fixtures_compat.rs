//! Backward compatibility: the snapshots committed under `tests/fixtures/v1/` (written by
//! `cargo run --example gen_fixtures -- tests/fixtures`) restore, with every state, timer and
//! operator state exactly as `tests/fixtures/contents.rs` says; with evolved serializers they
//! migrate; and they restore at another parallelism. Every later version of the crate must
//! keep passing this. Each test restores from a copy, so the committed files are never touched.
//!
//! `EDDY_FIXTURES_DIR` points the tests at another `v1` directory (a regenerated one, to check
//! that the generator still writes what the committed fixtures hold).

#[path = "fixtures/contents.rs"]
mod contents;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use contents::*;
use eddy::checkpoint::{CheckpointOptions, CheckpointStorage, Checkpointer, LocalDirStorage, RestoreSource, Restored};
use eddy::codec::{OptionOf, Str, I64, U32, U64};
use eddy::format::checkpoint::CheckpointManifest;
use eddy::io::StdFs;
use eddy::keygroup::KeyGroupRange;
use eddy::state::{
    KeyedBackend, ListStateDescriptor, ManualClock, MapStateDescriptor, OperatorStateBackend, StateKind,
    ValueStateDescriptor,
};
use tempfile::TempDir;

/// The committed `v1` directory (or `EDDY_FIXTURES_DIR`).
fn fixtures() -> PathBuf {
    match std::env::var_os("EDDY_FIXTURES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1"),
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Which committed snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fixture {
    FullCheckpoint,
    Savepoint,
    ChangelogCheckpoint,
}

const ALL: [Fixture; 3] = [Fixture::FullCheckpoint, Fixture::Savepoint, Fixture::ChangelogCheckpoint];

/// A copy of a fixture in a temporary directory, and the source to restore it from.
struct Copied {
    tmp: TempDir,
    source: RestoreSource,
}

fn copied(fixture: Fixture) -> Copied {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, id) = match fixture {
        Fixture::FullCheckpoint => ("checkpoint", FULL_CHECKPOINT_ID),
        Fixture::Savepoint => ("savepoint", SAVEPOINT_ID),
        Fixture::ChangelogCheckpoint => ("changelog", CHANGELOG_CHECKPOINT_ID),
    };
    let copy = tmp.path().join(dir);
    copy_tree(&fixtures().join(dir), &copy);
    let source = match fixture {
        Fixture::Savepoint => RestoreSource::Savepoint { fs: Arc::new(StdFs::new()), dir: copy },
        _ => {
            let storage: Arc<dyn CheckpointStorage> =
                Arc::new(LocalDirStorage::new(Arc::new(StdFs::new()), copy).unwrap());
            RestoreSource::Checkpoint { storage, id }
        }
    };
    Copied { tmp, source }
}

/// Restores `sources` into a new directory under `tmp`, owning `range` (all key groups if
/// `None`), with the clock at `now`.
fn restore(
    tmp: &Path,
    name: &str,
    sources: &[RestoreSource],
    range: Option<KeyGroupRange>,
    now: i64,
) -> (KeyedBackend<Str>, Restored) {
    let mut builder = KeyedBackend::builder(Str)
        .java_key_hash()
        .max_parallelism(MAX_PARALLELISM)
        .clock(Arc::new(ManualClock::new(now)));
    if let Some(r) = range {
        builder = builder.key_groups(r);
    }
    builder.restore(tmp.join(name), sources).unwrap_or_else(|e| panic!("restore into {name}: {e}"))
}

fn all_key_groups() -> KeyGroupRange {
    max_parallelism().range()
}

/// The keys (with their index in `keys()`) that `range` owns.
fn owned(range: KeyGroupRange) -> Vec<(usize, String)> {
    keys().into_iter().enumerate().filter(|(_, k)| owns(range, k)).collect()
}

fn key_set(keys: Vec<String>) -> BTreeSet<String> {
    let n = keys.len();
    let set: BTreeSet<String> = keys.into_iter().collect();
    assert_eq!(set.len(), n, "a key listed twice");
    set
}

/// Keys whose index satisfies `has`.
fn expected_keys(mine: &[(usize, String)], has: impl Fn(usize) -> bool) -> BTreeSet<String> {
    mine.iter().filter(|(i, _)| has(*i)).map(|(_, k)| k.clone()).collect()
}

/// The states a restored backend knows before anything is registered.
fn check_state_names(b: &KeyedBackend<Str>) {
    let got: BTreeMap<String, StateKind> = b.states().map(|(n, k)| (n.to_string(), k)).collect();
    let expected: BTreeMap<String, StateKind> = [
        ("count", StateKind::Value),
        ("profile", StateKind::Value),
        ("clicks", StateKind::Value),
        ("session", StateKind::Value),
        ("history", StateKind::Value),
        ("maybe", StateKind::Value),
        ("events", StateKind::List),
        ("pairs", StateKind::List),
        ("attrs", StateKind::Map),
        ("window_sum", StateKind::Reducing),
        ("avg", StateKind::Aggregating),
        ("timers/event-time", StateKind::Timers),
        ("timers/processing-time", StateKind::Timers),
    ]
    .into_iter()
    .map(|(n, k)| (n.to_string(), k))
    .collect();
    assert_eq!(got, expected);
}

/// Checks every keyed state and timer of the key groups `range`, exactly: every expected entry
/// is there with its value, and no other key has an entry.
fn check_keyed(b: &mut KeyedBackend<Str>, range: KeyGroupRange, context: &str) {
    assert_eq!(b.key_groups(), range);
    let mut h = register(b).unwrap();
    let mine = owned(range);

    // Which keys have an entry, state by state.
    assert_eq!(key_set(b.keys(&h.count).unwrap()), expected_keys(&mine, |_| true), "{context}: count");
    assert_eq!(key_set(b.keys(&h.profile).unwrap()), expected_keys(&mine, |i| profile(i).is_some()), "{context}");
    assert_eq!(key_set(b.keys(&h.clicks).unwrap()), expected_keys(&mine, |i| clicks(i).is_some()), "{context}");
    assert_eq!(key_set(b.keys(&h.session).unwrap()), expected_keys(&mine, |i| session(i).is_some()), "{context}");
    assert_eq!(key_set(b.keys(&h.history).unwrap()), expected_keys(&mine, |i| history(i).is_some()), "{context}");
    assert_eq!(key_set(b.keys(&h.maybe).unwrap()), expected_keys(&mine, |i| maybe(i).is_some()), "{context}");
    assert_eq!(key_set(b.keys(&h.events).unwrap()), expected_keys(&mine, |i| !events(i).is_empty()), "{context}");
    assert_eq!(key_set(b.keys(&h.pairs).unwrap()), expected_keys(&mine, |i| !pairs(i).is_empty()), "{context}");
    assert_eq!(key_set(b.keys(&h.attrs).unwrap()), expected_keys(&mine, |i| !attrs(i).is_empty()), "{context}");
    assert_eq!(key_set(b.keys(&h.avg).unwrap()), expected_keys(&mine, |i| avg(i).is_some()), "{context}");
    let windows: BTreeSet<(String, Window)> = b.keys_and_namespaces(&h.window_sum).unwrap().into_iter().collect();
    let expected_windows: BTreeSet<(String, Window)> =
        mine.iter().flat_map(|(i, k)| window_sums(*i).into_keys().map(move |w| (k.clone(), w))).collect();
    assert_eq!(windows, expected_windows, "{context}: window_sum");

    // Every value.
    for (i, key) in &mine {
        let (i, at) = (*i, format!("{context}: key {key:?}"));
        b.set_current_key(key).unwrap();
        assert_eq!(h.count.get(b).unwrap(), Some(count(i)), "{at}");
        assert_eq!(h.profile.get(b).unwrap(), profile(i), "{at}");
        assert_eq!(h.clicks.get(b).unwrap(), clicks(i), "{at}");
        assert_eq!(h.session.get(b).unwrap(), session(i), "{at}");
        assert_eq!(h.history.get(b).unwrap(), history(i), "{at}");
        assert_eq!(h.maybe.get(b).unwrap(), maybe(i), "{at}");
        assert_eq!(h.events.get_vec(b).unwrap(), events(i), "{at}");
        assert_eq!(h.pairs.get_vec(b).unwrap(), pairs(i), "{at}");
        let entries: BTreeMap<String, Option<i64>> = h.attrs.iter(b).unwrap().collect::<eddy::Result<_>>().unwrap();
        assert_eq!(entries, attrs(i), "{at}");
        for (w, s) in window_sums(i) {
            h.window_sum.set_namespace(&w);
            assert_eq!(h.window_sum.get(b).unwrap(), Some(s), "{at}: window {w:?}");
        }
        h.window_sum.set_namespace(&(120_000, 180_000));
        assert_eq!(h.window_sum.get(b).unwrap(), None, "{at}");
        assert_eq!(h.avg.get(b).unwrap(), avg(i), "{at}");
    }
    // Written and deleted again before the changelog fixture's checkpoint; in none of them.
    if owns(range, "ghost") {
        b.set_current_key(&"ghost".to_string()).unwrap();
        assert_eq!(h.count.get(b).unwrap(), None, "{context}: a cleared key");
        assert!(h.events.get_vec(b).unwrap().is_empty(), "{context}");
    }

    // Timers: (key, namespace, timestamp).
    let mut event = BTreeSet::new();
    let n = h
        .timers
        .for_each_event_time_timer(b, |_, t| {
            event.insert((t.key, t.namespace, t.timestamp));
            Ok(())
        })
        .unwrap();
    assert_eq!(n, event.len(), "{context}");
    let expected: BTreeSet<(String, i64, i64)> =
        mine.iter().flat_map(|(i, k)| event_timers(*i).into_iter().map(move |(ns, ts)| (k.clone(), ns, ts))).collect();
    assert_eq!(event, expected, "{context}: event-time timers");
    assert_eq!(h.timers.next_event_time(b).unwrap(), expected.iter().map(|t| t.2).min(), "{context}");
    let mut processing = BTreeSet::new();
    h.timers
        .for_each_processing_time_timer(b, |_, t| {
            processing.insert((t.key, t.namespace, t.timestamp));
            Ok(())
        })
        .unwrap();
    let expected: BTreeSet<(String, i64, i64)> = mine
        .iter()
        .flat_map(|(i, k)| processing_timers(*i).into_iter().map(move |(ns, ts)| (k.clone(), ns, ts)))
        .collect();
    assert_eq!(processing, expected, "{context}: processing-time timers");
    assert_eq!(h.timers.next_processing_time(b).unwrap(), expected.iter().map(|t| t.2).min(), "{context}");
}

/// Checks the operator state: the even-split lists hold `offsets` and `epochs` (this
/// instance's share), the union list and the broadcast states everything.
fn check_operator(op: &mut OperatorStateBackend, offsets: &[u64], epochs: &[u32], context: &str) {
    assert_eq!(op.list_state("offsets", U64).unwrap().get(), offsets, "{context}");
    assert_eq!(op.list_state("epochs", U32).unwrap().get(), epochs, "{context}");
    assert_eq!(op.union_list_state("partitions", (Str, U32)).unwrap().get(), partitions().as_slice(), "{context}");
    let got: BTreeMap<String, Rule> =
        op.broadcast_state(&rules_descriptor()).unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(got, rules(), "{context}");
    let got: BTreeMap<i32, Option<f64>> =
        op.broadcast_state(&limits_descriptor()).unwrap().iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(got, limits(), "{context}");
}

fn check_operator_names(snapshot: &eddy::state::OperatorStateSnapshot) {
    let lists: Vec<&str> = snapshot.lists.iter().map(|l| l.name.as_str()).collect();
    let broadcast: Vec<&str> = snapshot.broadcast.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(lists, ["epochs", "offsets", "partitions"]);
    assert_eq!(broadcast, ["limits", "rules"]);
}

#[test]
fn every_fixture_restores_exactly() {
    for fixture in ALL {
        let c = copied(fixture);
        let context = format!("{fixture:?}");
        let (mut b, restored) = restore(c.tmp.path(), "restored", std::slice::from_ref(&c.source), None, CLOCK_MILLIS);
        check_state_names(&b);
        check_keyed(&mut b, all_key_groups(), &context);
        assert_eq!(restored.operator_states.len(), 1);
        check_operator_names(&restored.operator_states[0]);
        let mut op = OperatorStateBackend::restore(restored.operator_states[0].clone());
        check_operator(&mut op, &offsets(), &epochs(), &context);
        b.close().unwrap();
    }
}

#[test]
fn the_changelog_fixture_names_a_changelog() {
    let c = copied(Fixture::ChangelogCheckpoint);
    let RestoreSource::Checkpoint { storage, id } = &c.source else { unreachable!() };
    let m = CheckpointManifest::decode(&storage.read_manifest(*id).unwrap()).unwrap();
    assert!(!m.logs.is_empty(), "{m:?}");
    assert!(!m.segments.is_empty(), "{m:?}");
}

#[test]
fn restoring_leaves_the_committed_fixtures_untouched() {
    fn listing(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                listing(&entry.path(), out);
            } else {
                out.insert(entry.path(), std::fs::read(entry.path()).unwrap());
            }
        }
    }
    let mut before = BTreeMap::new();
    listing(&fixtures(), &mut before);
    for fixture in ALL {
        let c = copied(fixture);
        let (b, _) = restore(c.tmp.path(), "restored", std::slice::from_ref(&c.source), None, CLOCK_MILLIS);
        b.close().unwrap();
    }
    let mut after = BTreeMap::new();
    listing(&fixtures(), &mut after);
    assert!(before == after, "the committed fixture files changed");
}

#[test]
fn ttl_survives_the_restore() {
    for fixture in ALL {
        let c = copied(fixture);
        let ttl = i64::try_from(SESSION_TTL.as_millis()).unwrap();
        // Just before the session state expires, it is all there.
        let (mut b, _) = restore(c.tmp.path(), "before", std::slice::from_ref(&c.source), None, CLOCK_MILLIS + ttl - 1);
        let h = register(&mut b).unwrap();
        for (i, key) in keys().iter().enumerate() {
            b.set_current_key(key).unwrap();
            assert_eq!(h.session.get(&mut b).unwrap(), session(i), "{fixture:?}");
        }
        b.close().unwrap();
        // Once the TTL has passed, it is gone; state without TTL stays.
        let (mut b, _) = restore(c.tmp.path(), "after", std::slice::from_ref(&c.source), None, CLOCK_MILLIS + ttl);
        let h = register(&mut b).unwrap();
        for (i, key) in keys().iter().enumerate() {
            b.set_current_key(key).unwrap();
            assert_eq!(h.session.get(&mut b).unwrap(), None, "{fixture:?}: key {key:?}");
            assert_eq!(h.count.get(&mut b).unwrap(), Some(count(i)), "{fixture:?}");
        }
        b.close().unwrap();
    }
}

#[test]
fn every_fixture_restores_at_parallelism_two() {
    for fixture in ALL {
        let c = copied(fixture);
        let mut operator_states = Vec::new();
        let mut backends = Vec::new();
        for i in 0..2 {
            let range = max_parallelism().subtask_range(2, i).unwrap();
            let (b, restored) =
                restore(c.tmp.path(), &format!("half-{i}"), std::slice::from_ref(&c.source), Some(range), CLOCK_MILLIS);
            operator_states = restored.operator_states;
            backends.push((range, b));
        }
        // Both halves own some keys, and every key exactly one of them.
        let halves: Vec<BTreeSet<String>> =
            backends.iter().map(|(r, _)| owned(*r).into_iter().map(|(_, k)| k).collect()).collect();
        assert!(halves.iter().all(|h| !h.is_empty()));
        assert!(halves[0].is_disjoint(&halves[1]));
        assert_eq!(halves[0].len() + halves[1].len(), keys().len());

        let ops = OperatorStateBackend::redistribute(&operator_states, 2).unwrap();
        let (all_offsets, all_epochs) = (offsets(), epochs());
        let shares = [
            (&all_offsets[..5], &all_epochs[..2]), // 10 / 2 and 3 / 2 + 1 (the remainder)
            (&all_offsets[5..], &all_epochs[2..]),
        ];
        for (i, ((range, mut b), op)) in backends.into_iter().zip(ops).enumerate() {
            let context = format!("{fixture:?}, instance {i} of 2");
            check_keyed(&mut b, range, &context);
            // A key of the other half is refused.
            let foreign = &halves[1 - i].iter().next().unwrap().clone();
            assert!(b.set_current_key(foreign).is_err(), "{context}");
            let mut op = OperatorStateBackend::restore(op);
            check_operator(&mut op, shares[i].0, shares[i].1, &context);
            b.close().unwrap();
        }
    }
}

#[test]
fn every_fixture_restores_with_evolved_serializers() {
    for fixture in ALL {
        let c = copied(fixture);
        let context = format!("{fixture:?}");
        let (mut b, restored) = restore(c.tmp.path(), "evolved", std::slice::from_ref(&c.source), None, CLOCK_MILLIS);
        // u32 -> u64, a chain with one more step, a tuple widened through its part, a map's
        // values widened inside their option.
        let count = b.state(ValueStateDescriptor::new("count", U64)).unwrap();
        let clicks = b.state(ValueStateDescriptor::new("clicks", clicks_v3())).unwrap();
        let pairs_wide = b.state(ListStateDescriptor::new("pairs", (I64, Str))).unwrap();
        let maybe_wide = b.state(ValueStateDescriptor::new("maybe", OptionOf(I64))).unwrap();
        let attrs = b.state(MapStateDescriptor::new("attrs", Str, OptionOf(I64))).unwrap();
        let check = |b: &mut KeyedBackend<Str>, when: &str| {
            for (i, key) in keys().iter().enumerate() {
                let at = format!("{context}, {when}: key {key:?}");
                b.set_current_key(key).unwrap();
                assert_eq!(count.get(b).unwrap(), Some(u64::from(contents::count(i))), "{at}");
                assert_eq!(clicks.get(b).unwrap(), contents::clicks(i).map(clicks_v2_to_v3), "{at}");
                let widened: Vec<(i64, String)> = pairs(i).into_iter().map(|(a, s)| (i64::from(a), s)).collect();
                assert_eq!(pairs_wide.get_vec(b).unwrap(), widened, "{at}");
                assert_eq!(maybe_wide.get(b).unwrap(), maybe(i).map(|m| m.map(i64::from)), "{at}");
                let entries: BTreeMap<String, Option<i64>> =
                    attrs.iter(b).unwrap().collect::<eddy::Result<_>>().unwrap();
                assert_eq!(entries, contents::attrs(i), "{at}");
            }
        };
        check(&mut b, "read lazily");
        b.migrate().unwrap();
        check(&mut b, "after migrate");

        // Operator state migrates on registration: u32 -> u64, i32 keys -> i64 keys.
        let mut op = OperatorStateBackend::restore(restored.operator_states[0].clone());
        let wide: Vec<u64> = epochs().into_iter().map(u64::from).collect();
        assert_eq!(op.list_state("epochs", U64).unwrap().get(), wide.as_slice(), "{context}");
        let limits_wide = eddy::state::BroadcastStateDescriptor::new("limits", I64, OptionOf(eddy::codec::F64));
        let got: BTreeMap<i64, Option<f64>> =
            op.broadcast_state(&limits_wide).unwrap().iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(got, limits().into_iter().map(|(k, v)| (i64::from(k), v)).collect(), "{context}");

        // The migrated state snapshots and restores with the new serializers as is.
        let mut cp = Checkpointer::local(c.tmp.path().join("again"), CheckpointOptions::new()).unwrap();
        cp.checkpoint(100, &mut b, &op, false).unwrap();
        cp.wait(100).unwrap();
        let source = RestoreSource::Checkpoint { storage: cp.storage().clone(), id: 100 };
        b.close().unwrap();
        let (mut r, _) = restore(c.tmp.path(), "evolved-again", &[source], None, CLOCK_MILLIS);
        let count = r.state(ValueStateDescriptor::new("count", U64)).unwrap();
        let clicks = r.state(ValueStateDescriptor::new("clicks", clicks_v3())).unwrap();
        for (i, key) in keys().iter().enumerate() {
            r.set_current_key(key).unwrap();
            assert_eq!(count.get(&mut r).unwrap(), Some(u64::from(contents::count(i))), "{context}");
            assert_eq!(clicks.get(&mut r).unwrap(), contents::clicks(i).map(clicks_v2_to_v3), "{context}");
        }
        r.close().unwrap();
        drop(cp);
    }
}
