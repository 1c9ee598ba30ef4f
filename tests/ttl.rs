//! Time to live against a model with a controlled clock: every update type and visibility,
//! value, list and map state (list and map entries expire one by one), and the three ways
//! expired entries go: on read, incrementally, and in compaction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eddy::codec::{Str, I64, U64};
use eddy::io::FaultFs;
use eddy::state::{
    AggregateFunction, AggregatingStateDescriptor, KeyedBackend, ListStateDescriptor, ManualClock, MapStateDescriptor,
    ReducingStateDescriptor, TtlConfig, TtlUpdate, TtlVisibility, ValueStateDescriptor,
};
use eddy::store::StoreOptions;
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

const TTL: i64 = 10;

#[derive(Clone, Debug)]
enum Op {
    SetKey(u64),
    Advance(i64),
    ValueUpdate(i64),
    ValueGet,
    ListAdd(i64),
    ListGet,
    MapPut(u64, i64),
    MapGet(u64),
    MapIter,
    Flush,
    Compact,
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        match u8::arbitrary(g) % 12 {
            0 => Op::SetKey(u64::arbitrary(g) % 6),
            1 | 2 => Op::Advance(i64::from(u8::arbitrary(g) % 8)),
            3 => Op::ValueUpdate(i64::arbitrary(g)),
            4 => Op::ValueGet,
            5 => Op::ListAdd(i64::arbitrary(g)),
            6 => Op::ListGet,
            7 => Op::MapPut(u64::arbitrary(g) % 4, i64::arbitrary(g)),
            8 => Op::MapGet(u64::arbitrary(g) % 4),
            9 => Op::MapIter,
            10 => Op::Flush,
            _ => Op::Compact,
        }
    }
}

fn backend(clock: &ManualClock) -> KeyedBackend<U64> {
    let opts = StoreOptions::new().file_system(Arc::new(FaultFs::new())).memory_budget(256 << 10);
    KeyedBackend::builder(U64).max_parallelism(8).clock(Arc::new(clock.clone())).store_options(opts).open("/t").unwrap()
}

/// Runs `ops` with one TTL configuration. With `ReturnExpiredIfNotCleanedUp`, compaction
/// cleanup is off, so that what "not cleaned up" means is exact.
fn run(ops: Vec<Op>, update: TtlUpdate, visibility: TtlVisibility) -> TestResult {
    let clock = ManualClock::new(1_000);
    let mut b = backend(&clock);
    let hide = visibility == TtlVisibility::NeverReturnExpired;
    let ttl = TtlConfig::new(Duration::from_millis(TTL as u64))
        .update(update)
        .visibility(visibility)
        .cleanup_in_compaction(hide);
    let value = b.state(ValueStateDescriptor::of::<i64>("v").ttl(ttl)).unwrap();
    let list = b.state(ListStateDescriptor::of::<i64>("l").ttl(ttl)).unwrap();
    let map = b.state(MapStateDescriptor::of::<u64, i64>("m").ttl(ttl)).unwrap();
    let mut mv: BTreeMap<u64, (i64, i64)> = BTreeMap::new();
    let mut ml: BTreeMap<u64, Vec<(i64, i64)>> = BTreeMap::new();
    let mut mm: BTreeMap<u64, BTreeMap<u64, (i64, i64)>> = BTreeMap::new();
    let mut key = 0;
    b.set_current_key(&key).unwrap();
    let expired = |ts: i64, now: i64| ts + TTL <= now;
    let refresh = update == TtlUpdate::OnReadAndWrite;
    for op in ops {
        let now = clock.now();
        match op {
            Op::SetKey(k) => {
                key = k;
                b.set_current_key(&k).unwrap();
            }
            Op::Advance(ms) => clock.advance(ms),
            Op::ValueUpdate(v) => {
                value.update(&mut b, &v).unwrap();
                mv.insert(key, (v, now));
            }
            Op::ValueGet => {
                // An expired value is removed by the read that finds it, and returned by it
                // when expired values are visible.
                let (want, stays) = match mv.get(&key).copied() {
                    None => (None, None),
                    Some((_, ts)) if expired(ts, now) && hide => (None, None),
                    Some((v, ts)) if expired(ts, now) => (Some(v), None),
                    Some((v, _)) if refresh => (Some(v), Some((v, now))),
                    Some(e) => (Some(e.0), Some(e)),
                };
                match stays {
                    Some(e) => mv.insert(key, e),
                    None => mv.remove(&key),
                };
                assert_eq!(value.get(&mut b).unwrap(), want);
            }
            Op::ListAdd(v) => {
                list.add(&mut b, &v).unwrap();
                ml.entry(key).or_default().push((v, now));
            }
            Op::ListGet => {
                // The read removes expired elements, returning them when they are visible.
                let elems = ml.remove(&key).unwrap_or_default();
                let want: Vec<i64> = elems.iter().filter(|(_, ts)| !(hide && expired(*ts, now))).map(|e| e.0).collect();
                let kept: Vec<(i64, i64)> = elems
                    .into_iter()
                    .filter(|(_, ts)| !expired(*ts, now))
                    .map(|(v, ts)| if refresh { (v, now) } else { (v, ts) })
                    .collect();
                assert_eq!(list.get_vec(&mut b).unwrap(), want);
                if !kept.is_empty() {
                    ml.insert(key, kept);
                }
            }
            Op::MapPut(uk, v) => {
                map.put(&mut b, &uk, &v).unwrap();
                mm.entry(key).or_default().insert(uk, (v, now));
            }
            Op::MapGet(uk) => {
                let entries = mm.entry(key).or_default();
                let (want, stays) = match entries.get(&uk).copied() {
                    None => (None, None),
                    Some((_, ts)) if expired(ts, now) && hide => (None, None),
                    Some((v, ts)) if expired(ts, now) => (Some(v), None),
                    Some((v, _)) if refresh => (Some(v), Some((v, now))),
                    Some(e) => (Some(e.0), Some(e)),
                };
                match stays {
                    Some(e) => entries.insert(uk, e),
                    None => entries.remove(&uk),
                };
                assert_eq!(map.get(&mut b, &uk).unwrap(), want);
            }
            Op::MapIter => {
                // Iteration treats each entry as a read does: expired entries are removed (and
                // returned when visible), returned ones refreshed when reads refresh.
                let entries = mm.entry(key).or_default();
                let want: Vec<(u64, i64)> = entries
                    .iter()
                    .filter(|(_, (_, ts))| !(hide && expired(*ts, now)))
                    .map(|(k, (v, _))| (*k, *v))
                    .collect();
                entries.retain(|_, (_, ts)| !expired(*ts, now));
                if refresh {
                    entries.values_mut().for_each(|e| e.1 = now);
                }
                let got: Vec<(u64, i64)> = map.iter(&mut b).unwrap().map(Result::unwrap).collect();
                assert_eq!(got, want);
            }
            Op::Flush => b.store().flush().unwrap(),
            Op::Compact => {
                // Compaction may drop expired entries (only when they are hidden anyway).
                b.store().compact().unwrap();
            }
        }
    }
    TestResult::passed()
}

fn prop<const READ_REFRESHES: bool, const HIDE: bool>(ops: Vec<Op>) -> TestResult {
    let update = if READ_REFRESHES { TtlUpdate::OnReadAndWrite } else { TtlUpdate::OnCreateAndWrite };
    let visibility = if HIDE { TtlVisibility::NeverReturnExpired } else { TtlVisibility::ReturnExpiredIfNotCleanedUp };
    run(ops, update, visibility)
}

fn check(p: fn(Vec<Op>) -> TestResult) {
    QuickCheck::new().rng(Gen::new(150)).tests(100).quickcheck(p);
}

#[test]
fn ttl_on_create_and_write_never_returning_expired_matches_the_model() {
    check(prop::<false, true>);
}

#[test]
fn ttl_on_read_and_write_never_returning_expired_matches_the_model() {
    check(prop::<true, true>);
}

#[test]
fn ttl_on_create_and_write_returning_expired_matches_the_model() {
    check(prop::<false, false>);
}

#[test]
fn ttl_on_read_and_write_returning_expired_matches_the_model() {
    check(prop::<true, false>);
}

fn raw_records(b: &mut KeyedBackend<U64>) -> usize {
    let range = b.key_groups();
    b.store().scan_key_groups(range).unwrap().collect_vec().unwrap().len()
}

#[test]
fn compaction_drops_expired_entries_without_reading_them() {
    let clock = ManualClock::new(0);
    let mut b = backend(&clock);
    let ttl = TtlConfig::new(Duration::from_millis(100));
    let value = b.state(ValueStateDescriptor::of::<i64>("v").ttl(ttl)).unwrap();
    let list = b.state(ListStateDescriptor::of::<i64>("l").ttl(ttl)).unwrap();
    let map = b.state(MapStateDescriptor::of::<u64, i64>("m").ttl(ttl)).unwrap();
    let keep = b.state(ValueStateDescriptor::of::<i64>("keep")).unwrap();
    for k in 0..500u64 {
        b.set_current_key(&k).unwrap();
        value.update(&mut b, &1).unwrap();
        list.add(&mut b, &1).unwrap();
        map.put(&mut b, &k, &1).unwrap();
        keep.update(&mut b, &1).unwrap();
    }
    clock.advance(50);
    // Half the list elements are younger: they survive while their older siblings go.
    for k in 0..250u64 {
        b.set_current_key(&k).unwrap();
        list.add(&mut b, &2).unwrap();
    }
    b.store().flush().unwrap();
    assert_eq!(raw_records(&mut b), 2000);
    clock.advance(60);
    b.store().compact().unwrap();
    // Only the untimed state and the 250 younger lists remain.
    assert_eq!(raw_records(&mut b), 750);
    for k in 0..500u64 {
        b.set_current_key(&k).unwrap();
        let want = if k < 250 { vec![2] } else { vec![] };
        assert_eq!(list.get_vec(&mut b).unwrap(), want);
        assert_eq!(keep.get(&mut b).unwrap(), Some(1));
    }
}

#[test]
fn incremental_cleanup_removes_expired_entries_as_the_state_is_used() {
    let clock = ManualClock::new(0);
    let mut b = backend(&clock);
    let ttl = TtlConfig::new(Duration::from_millis(100)).cleanup_incrementally(50).cleanup_in_compaction(false);
    let value = b.state(ValueStateDescriptor::of::<i64>("v").ttl(ttl)).unwrap();
    for k in 0..1000u64 {
        b.set_current_key(&k).unwrap();
        value.update(&mut b, &1).unwrap();
    }
    clock.advance(200);
    b.set_current_key(&0).unwrap();
    // The writes above already checked entries as they went (all live then); each read now
    // checks 50 more, wrapping around the key groups.
    for _ in 0..25 {
        assert_eq!(value.get(&mut b).unwrap(), None);
    }
    assert_eq!(raw_records(&mut b), 0);
}

#[test]
fn reducing_state_expires_as_a_whole() {
    let clock = ManualClock::new(0);
    let mut b = backend(&clock);
    let ttl = TtlConfig::new(Duration::from_millis(10));
    let r = b.state(ReducingStateDescriptor::new("sum", I64, |a: i64, b: i64| a + b).ttl(ttl)).unwrap();
    b.set_current_key(&1).unwrap();
    r.add(&mut b, 2).unwrap();
    clock.advance(5);
    r.add(&mut b, 3).unwrap();
    clock.advance(9);
    assert_eq!(r.get(&mut b).unwrap(), Some(5));
    clock.advance(1);
    assert_eq!(r.get(&mut b).unwrap(), None);
    r.add(&mut b, 4).unwrap();
    assert_eq!(r.get(&mut b).unwrap(), Some(4));
}

#[test]
fn incrementally_cleaned_map_entries_stay_gone_when_expired_ones_are_visible() {
    let clock = ManualClock::new(0);
    let mut b = backend(&clock);
    let ttl = TtlConfig::new(Duration::from_millis(100))
        .visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp)
        .cleanup_incrementally(1000)
        .cleanup_in_compaction(false);
    let map = b.state(MapStateDescriptor::of::<u64, i64>("m").ttl(ttl)).unwrap();
    b.set_current_key(&1).unwrap();
    for uk in 0..20u64 {
        map.put(&mut b, &uk, &1).unwrap();
    }
    // On disk, so that the cleanup's deletes are new records in the mutable region.
    b.store().flush().unwrap();
    clock.advance(200);
    assert_eq!(map.iter(&mut b).unwrap().count(), 0, "the access cleaned them up first");
    assert!(map.is_empty(&mut b).unwrap());
    assert_eq!(raw_records(&mut b), 0);
}

/// Sums `i64`s; the accumulator is the sum.
struct Sum;

impl AggregateFunction for Sum {
    type In = i64;
    type Acc = i64;
    type Out = i64;
    fn create_accumulator(&self) -> i64 {
        0
    }
    fn add(&self, v: i64, acc: i64) -> i64 {
        acc + v
    }
    fn get_result(&self, acc: &i64) -> i64 {
        *acc
    }
    fn merge(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

/// Flink's rule (`AbstractTtlDecorator.getWithTtlCheckAndUpdate`): a read that finds an expired
/// value cleans it up, and returns it only when the visibility is
/// `ReturnExpiredIfNotCleanedUp`. The read itself is the cleanup, so the next read finds
/// nothing: for value, list (its expired elements), map entry, reducing and aggregating state,
/// under both update types, and also through `get_with`.
#[test]
fn an_expired_value_returned_by_a_read_is_removed_by_it() {
    for update in [TtlUpdate::OnCreateAndWrite, TtlUpdate::OnReadAndWrite] {
        let clock = ManualClock::new(0);
        let mut b = backend(&clock);
        let ttl = TtlConfig::new(Duration::from_millis(100))
            .update(update)
            .visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp)
            .cleanup_in_compaction(false);
        let value = b.state(ValueStateDescriptor::new("v", I64).ttl(ttl)).unwrap();
        let viewed = b.state(ValueStateDescriptor::new("viewed", Str).ttl(ttl)).unwrap();
        let list = b.state(ListStateDescriptor::of::<i64>("l").ttl(ttl)).unwrap();
        let map = b.state(MapStateDescriptor::of::<u64, i64>("m").ttl(ttl)).unwrap();
        let reducing = b.state(ReducingStateDescriptor::new("r", I64, |a: i64, b: i64| a + b).ttl(ttl)).unwrap();
        let aggregating = b.state(AggregatingStateDescriptor::new("a", I64, Sum).ttl(ttl)).unwrap();
        b.set_current_key(&7).unwrap();
        value.update(&mut b, &1).unwrap();
        viewed.update(&mut b, &"six".to_string()).unwrap();
        list.add(&mut b, &2).unwrap();
        map.put(&mut b, &1, &3).unwrap();
        map.put(&mut b, &2, &3).unwrap();
        reducing.add(&mut b, 4).unwrap();
        aggregating.add(&mut b, 5).unwrap();
        clock.advance(50);
        // A younger element stays when its older sibling goes.
        list.add(&mut b, &20).unwrap();
        clock.advance(60);

        assert_eq!(value.get(&mut b).unwrap(), Some(1));
        assert_eq!(value.get(&mut b).unwrap(), None);
        assert_eq!(viewed.get_with(&mut b, |v| v.map(str::to_owned)).unwrap(), Some("six".to_string()));
        assert_eq!(viewed.get_with(&mut b, |v| v.map(str::to_owned)).unwrap(), None);
        assert_eq!(list.get_vec(&mut b).unwrap(), vec![2, 20]);
        assert_eq!(list.get_vec(&mut b).unwrap(), vec![20]);
        assert_eq!(map.get(&mut b, &1).unwrap(), Some(3));
        assert_eq!(map.get(&mut b, &1).unwrap(), None);
        assert!(map.contains(&mut b, &2).unwrap());
        assert!(!map.contains(&mut b, &2).unwrap());
        assert_eq!(reducing.get(&mut b).unwrap(), Some(4));
        assert_eq!(reducing.get(&mut b).unwrap(), None);
        assert_eq!(aggregating.get(&mut b).unwrap(), Some(5));
        assert_eq!(aggregating.get(&mut b).unwrap(), None);
        // The younger list element is all that is stored.
        assert_eq!(raw_records(&mut b), 1, "{update:?}");
    }
}

/// Flink's rule (`TtlMapState`'s iterator runs every entry it passes through
/// `getWithTtlCheckAndUpdate`): iterating a map with TTL removes the expired entries it passes
/// from the store (returning them only when the visibility is `ReturnExpiredIfNotCleanedUp`),
/// and under `OnReadAndWrite` refreshes the timestamps of the entries it returns, as `get`
/// does. Checked for `iter`, `keys`, `values` and `is_empty`, over maps larger than one scan's
/// worth of entries, with entries in segments and in the mutable region.
#[test]
fn map_iteration_removes_the_expired_entries_it_passes_and_refreshes_what_it_returns() {
    let ttl = TtlConfig::new(Duration::from_millis(100)).cleanup_in_compaction(false);
    // Even user keys written at 0 and flushed to a segment, odd ones at 50 in memory.
    let fill = |b: &mut KeyedBackend<U64>, clock: &ManualClock, map: &eddy::state::MapState<U64, I64>| {
        b.set_current_key(&1).unwrap();
        for uk in (0..600u64).step_by(2) {
            map.put(b, &uk, &(uk as i64)).unwrap();
        }
        b.store().flush().unwrap();
        clock.advance(50);
        for uk in (1..600u64).step_by(2) {
            map.put(b, &uk, &(uk as i64)).unwrap();
        }
        clock.advance(60);
    };
    let odd: Vec<u64> = (1..600u64).step_by(2).collect();

    // Hidden: each walk removes the expired entries, leaving the live ones only.
    for walk in 0..3 {
        let clock = ManualClock::new(0);
        let mut b = backend(&clock);
        let map = b.state(MapStateDescriptor::new("m", U64, I64).ttl(ttl)).unwrap();
        fill(&mut b, &clock, &map);
        match walk {
            0 => assert_eq!(map.iter(&mut b).unwrap().map(|e| e.unwrap().0).collect::<Vec<_>>(), odd),
            1 => assert_eq!(map.keys(&mut b).unwrap(), odd),
            _ => assert_eq!(map.values(&mut b).unwrap(), odd.iter().map(|&k| k as i64).collect::<Vec<_>>()),
        }
        assert_eq!(raw_records(&mut b), 300, "walk {walk}");
    }

    // is_empty passes every expired entry on its way to none.
    let clock = ManualClock::new(0);
    let mut b = backend(&clock);
    let map = b.state(MapStateDescriptor::new("m", U64, I64).ttl(ttl)).unwrap();
    fill(&mut b, &clock, &map);
    clock.advance(50);
    assert!(map.is_empty(&mut b).unwrap());
    assert_eq!(raw_records(&mut b), 0);

    // Visible: the first walk returns the expired entries too and removes them.
    let clock = ManualClock::new(0);
    let mut b = backend(&clock);
    let visible = ttl.visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp);
    let map = b.state(MapStateDescriptor::new("m", U64, I64).ttl(visible)).unwrap();
    fill(&mut b, &clock, &map);
    assert_eq!(map.keys(&mut b).unwrap(), (0..600u64).collect::<Vec<_>>());
    assert_eq!(map.keys(&mut b).unwrap(), odd);
    assert_eq!(raw_records(&mut b), 300);

    // Refreshed on read: what a walk returns lives another TTL from then; what it did not
    // reach does not.
    let clock = ManualClock::new(0);
    let mut b = backend(&clock);
    let refreshed = ttl.update(TtlUpdate::OnReadAndWrite);
    let map = b.state(MapStateDescriptor::new("m", U64, I64).ttl(refreshed)).unwrap();
    b.set_current_key(&1).unwrap();
    for uk in 0..300u64 {
        map.put(&mut b, &uk, &1).unwrap();
    }
    b.store().flush().unwrap();
    clock.advance(60);
    let taken: Vec<u64> = map.iter(&mut b).unwrap().take(200).map(|e| e.unwrap().0).collect();
    assert_eq!(taken, (0..200u64).collect::<Vec<_>>());
    clock.advance(60);
    assert_eq!(map.keys(&mut b).unwrap(), (0..200u64).collect::<Vec<_>>());
}
