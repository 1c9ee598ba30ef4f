//! Every keyed state kind against a model: random sequences of state calls under random keys and
//! namespaces (with flushes and compactions of the store between them) must give the model's
//! answers. Namespaces are merged as session windows merge them; the keys of a state are
//! listed and visited.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use eddy::codec::{Str, F64, I64, U32, U64};
use eddy::io::FaultFs;
use eddy::state::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, KeyedBackend, ListState, ListStateDescriptor,
    MapState, MapStateDescriptor, ReducingState, ReducingStateDescriptor, ValueState, ValueStateDescriptor,
};
use eddy::store::StoreOptions;
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

const KEYS: u64 = 12;
const NAMESPACES: u32 = 3;

#[derive(Clone, Debug)]
enum Op {
    SetKey(u64),
    SetNamespace(u32),
    ValueUpdate(i64),
    ValueGet,
    ValueClear,
    ListAdd(i64),
    ListAddAll(Vec<i64>),
    ListUpdate(Vec<i64>),
    ListGet,
    ListClear,
    ListMerge(u32, Vec<u32>),
    MapPut(u64, f64),
    MapPutAll(Vec<(u64, f64)>),
    MapGet(u64),
    MapContains(u64),
    MapRemove(u64),
    MapIter,
    MapIsEmpty,
    MapClear,
    ReduceAdd(i64),
    ReduceGet,
    ReduceClear,
    ReduceMerge(u32, Vec<u32>),
    AggAdd(i64),
    AggGet,
    AggMerge(u32, Vec<u32>),
    Keys,
    ApplyToAllKeys(i64),
    Flush,
    Compact,
}

fn small_vec<T>(g: &mut Gen, f: impl Fn(&mut Gen) -> T) -> Vec<T> {
    let n = usize::arbitrary(g) % 5;
    (0..n).map(|_| f(g)).collect()
}

fn ns(g: &mut Gen) -> u32 {
    u32::arbitrary(g) % NAMESPACES
}

fn uk(g: &mut Gen) -> u64 {
    u64::arbitrary(g) % 6
}

fn float(g: &mut Gen) -> f64 {
    (i32::arbitrary(g) as f64) / 8.0
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        match u8::arbitrary(g) % 31 {
            0 | 1 => Op::SetKey(u64::arbitrary(g) % KEYS),
            2 => Op::SetNamespace(ns(g)),
            3 => Op::ValueUpdate(i64::arbitrary(g)),
            4 => Op::ValueGet,
            5 => Op::ValueClear,
            6 => Op::ListAdd(i64::arbitrary(g)),
            7 => Op::ListAddAll(small_vec(g, i64::arbitrary)),
            8 => Op::ListUpdate(small_vec(g, i64::arbitrary)),
            9 => Op::ListGet,
            10 => Op::ListClear,
            11 => Op::ListMerge(ns(g), small_vec(g, ns)),
            12 => Op::MapPut(uk(g), float(g)),
            13 => Op::MapPutAll(small_vec(g, |g| (uk(g), float(g)))),
            14 => Op::MapGet(uk(g)),
            15 => Op::MapContains(uk(g)),
            16 => Op::MapRemove(uk(g)),
            17 => Op::MapIter,
            18 => Op::MapIsEmpty,
            19 => Op::MapClear,
            20 => Op::ReduceAdd(i64::arbitrary(g) % 1000),
            21 => Op::ReduceGet,
            22 => Op::ReduceClear,
            23 => Op::ReduceMerge(ns(g), small_vec(g, ns)),
            24 => Op::AggAdd(i64::arbitrary(g) % 1000),
            25 => Op::AggGet,
            26 => Op::AggMerge(ns(g), small_vec(g, ns)),
            27 => Op::Keys,
            28 => Op::ApplyToAllKeys(i64::arbitrary(g) % 100),
            29 => Op::Flush,
            _ => Op::Compact,
        }
    }
}

/// Average as (sum, count): the accumulator type differs from input and output.
struct Avg;

impl AggregateFunction for Avg {
    type In = i64;
    type Acc = (i64, u64);
    type Out = i64;
    fn create_accumulator(&self) -> (i64, u64) {
        (0, 0)
    }
    fn add(&self, v: i64, (s, c): (i64, u64)) -> (i64, u64) {
        (s.wrapping_add(v), c + 1)
    }
    fn get_result(&self, &(s, c): &(i64, u64)) -> i64 {
        if c == 0 {
            0
        } else {
            s / c as i64
        }
    }
    fn merge(&self, a: (i64, u64), b: (i64, u64)) -> (i64, u64) {
        (a.0.wrapping_add(b.0), a.1 + b.1)
    }
}

type Reduce = fn(i64, i64) -> i64;

fn sum(a: i64, b: i64) -> i64 {
    a.wrapping_add(b)
}

struct States {
    value: ValueState<I64, U32>,
    list: ListState<I64, U32>,
    map: MapState<U64, F64, U32>,
    reduce: ReducingState<I64, Reduce, U32>,
    agg: AggregatingState<(I64, U64), Avg, U32>,
}

impl States {
    fn set_namespace(&mut self, ns: u32) {
        self.value.set_namespace(&ns);
        self.list.set_namespace(&ns);
        self.map.set_namespace(&ns);
        self.reduce.set_namespace(&ns);
        self.agg.set_namespace(&ns);
    }
}

#[derive(Default)]
struct Model {
    value: BTreeMap<(u64, u32), i64>,
    list: BTreeMap<(u64, u32), Vec<i64>>,
    map: BTreeMap<(u64, u32), BTreeMap<u64, f64>>,
    reduce: BTreeMap<(u64, u32), i64>,
    agg: BTreeMap<(u64, u32), (i64, u64)>,
}

fn open(fs: &FaultFs) -> KeyedBackend<U64> {
    // A small budget: regions are flushed to segments often, so reads merge memory and disk.
    let opts = StoreOptions::new().file_system(Arc::new(fs.clone())).memory_budget(256 << 10);
    KeyedBackend::builder(U64).max_parallelism(16).store_options(opts).open("/state").unwrap()
}

fn register(b: &mut KeyedBackend<U64>) -> States {
    States {
        value: b.state_in(ValueStateDescriptor::of::<i64>("value"), U32).unwrap(),
        list: b.state_in(ListStateDescriptor::of::<i64>("list"), U32).unwrap(),
        map: b.state_in(MapStateDescriptor::of::<u64, f64>("map"), U32).unwrap(),
        reduce: b.state_in(ReducingStateDescriptor::new("reduce", I64, sum as Reduce), U32).unwrap(),
        agg: b.state_in(AggregatingStateDescriptor::new("agg", (I64, U64), Avg), U32).unwrap(),
    }
}

fn run(ops: Vec<Op>) -> TestResult {
    let fs = FaultFs::new();
    let mut b = open(&fs);
    let mut s = register(&mut b);
    let mut m = Model::default();
    let (mut key, mut ns) = (0u64, 0u32);
    b.set_current_key(&key).unwrap();
    s.set_namespace(ns);
    for op in ops {
        let at = (key, ns);
        match op {
            Op::SetKey(k) => {
                key = k;
                b.set_current_key(&k).unwrap();
            }
            Op::SetNamespace(n) => {
                ns = n;
                s.set_namespace(n);
            }
            Op::ValueUpdate(v) => {
                s.value.update(&mut b, &v).unwrap();
                m.value.insert(at, v);
            }
            Op::ValueGet => assert_eq!(s.value.get(&mut b).unwrap(), m.value.get(&at).copied()),
            Op::ValueClear => {
                s.value.clear(&mut b).unwrap();
                m.value.remove(&at);
            }
            Op::ListAdd(v) => {
                s.list.add(&mut b, &v).unwrap();
                m.list.entry(at).or_default().push(v);
            }
            Op::ListAddAll(vs) => {
                s.list.add_all(&mut b, &vs).unwrap();
                if !vs.is_empty() {
                    m.list.entry(at).or_default().extend(vs);
                }
            }
            Op::ListUpdate(vs) => {
                s.list.update(&mut b, &vs).unwrap();
                if vs.is_empty() {
                    m.list.remove(&at);
                } else {
                    m.list.insert(at, vs);
                }
            }
            Op::ListGet => {
                let got = s.list.get_vec(&mut b).unwrap();
                assert_eq!(got, m.list.get(&at).cloned().unwrap_or_default());
            }
            Op::ListClear => {
                s.list.clear(&mut b).unwrap();
                m.list.remove(&at);
            }
            Op::ListMerge(target, sources) => {
                s.list.merge_namespaces(&mut b, &target, &sources).unwrap();
                let mut moved = Vec::new();
                for src in &sources {
                    if let Some(v) = m.list.remove(&(key, *src)) {
                        moved.extend(v);
                    }
                }
                if !moved.is_empty() {
                    m.list.entry((key, target)).or_default().extend(moved);
                }
            }
            Op::MapPut(k, v) => {
                s.map.put(&mut b, &k, &v).unwrap();
                m.map.entry(at).or_default().insert(k, v);
            }
            Op::MapPutAll(entries) => {
                s.map.put_all(&mut b, entries.iter().map(|(k, v)| (k, v))).unwrap();
                for (k, v) in entries {
                    m.map.entry(at).or_default().insert(k, v);
                }
            }
            Op::MapGet(k) => {
                let want = m.map.get(&at).and_then(|mm| mm.get(&k)).copied();
                assert_eq!(s.map.get(&mut b, &k).unwrap(), want);
            }
            Op::MapContains(k) => {
                let want = m.map.get(&at).is_some_and(|mm| mm.contains_key(&k));
                assert_eq!(s.map.contains(&mut b, &k).unwrap(), want);
            }
            Op::MapRemove(k) => {
                s.map.remove(&mut b, &k).unwrap();
                if let Some(mm) = m.map.get_mut(&at) {
                    mm.remove(&k);
                    if mm.is_empty() {
                        m.map.remove(&at);
                    }
                }
            }
            Op::MapIter => {
                let got: Vec<(u64, f64)> = s.map.iter(&mut b).unwrap().map(Result::unwrap).collect();
                let want: Vec<(u64, f64)> =
                    m.map.get(&at).map(|mm| mm.clone().into_iter().collect()).unwrap_or_default();
                assert_eq!(got, want);
                let keys = s.map.keys(&mut b).unwrap();
                assert_eq!(keys, want.iter().map(|e| e.0).collect::<Vec<_>>());
                let values = s.map.values(&mut b).unwrap();
                assert_eq!(values, want.iter().map(|e| e.1).collect::<Vec<_>>());
            }
            Op::MapIsEmpty => {
                assert_eq!(s.map.is_empty(&mut b).unwrap(), !m.map.contains_key(&at));
            }
            Op::MapClear => {
                s.map.clear(&mut b).unwrap();
                m.map.remove(&at);
            }
            Op::ReduceAdd(v) => {
                s.reduce.add(&mut b, v).unwrap();
                let e = m.reduce.entry(at).or_insert(0);
                *e = e.wrapping_add(v);
            }
            Op::ReduceGet => assert_eq!(s.reduce.get(&mut b).unwrap(), m.reduce.get(&at).copied()),
            Op::ReduceClear => {
                s.reduce.clear(&mut b).unwrap();
                m.reduce.remove(&at);
            }
            Op::ReduceMerge(target, sources) => {
                s.reduce.merge_namespaces(&mut b, &target, &sources).unwrap();
                let mut acc: Option<i64> = None;
                for n in sources.iter().chain(Some(&target)) {
                    if let Some(v) = m.reduce.remove(&(key, *n)) {
                        acc = Some(acc.map_or(v, |a| a.wrapping_add(v)));
                    }
                }
                if let Some(a) = acc {
                    m.reduce.insert((key, target), a);
                }
            }
            Op::AggAdd(v) => {
                s.agg.add(&mut b, v).unwrap();
                let acc = m.agg.get(&at).copied().unwrap_or((0, 0));
                m.agg.insert(at, Avg.add(v, acc));
            }
            Op::AggGet => {
                assert_eq!(s.agg.get(&mut b).unwrap(), m.agg.get(&at).map(|a| Avg.get_result(a)));
            }
            Op::AggMerge(target, sources) => {
                s.agg.merge_namespaces(&mut b, &target, &sources).unwrap();
                let mut acc: Option<(i64, u64)> = None;
                for n in sources.iter().chain(Some(&target)) {
                    if let Some(v) = m.agg.remove(&(key, *n)) {
                        acc = Some(acc.map_or(v, |a| Avg.merge(a, v)));
                    }
                }
                if let Some(a) = acc {
                    m.agg.insert((key, target), a);
                }
            }
            Op::Keys => {
                let got: BTreeSet<u64> = b.keys(&s.value).unwrap().into_iter().collect();
                let want: BTreeSet<u64> = m.value.keys().filter(|(_, n)| *n == ns).map(|(k, _)| *k).collect();
                assert_eq!(got, want);
                let got: BTreeSet<u64> = b.keys(&s.map).unwrap().into_iter().collect();
                let want: BTreeSet<u64> = m.map.keys().filter(|(_, n)| *n == ns).map(|(k, _)| *k).collect();
                assert_eq!(got, want);
            }
            Op::ApplyToAllKeys(delta) => {
                // Add `delta` to every value of this namespace, through the visit.
                let value = &s.value;
                let mut visited = 0;
                b.apply_to_all_keys(value, |b, k| {
                    visited += 1;
                    assert_eq!(b.current_key().unwrap(), *k);
                    let v = value.get(b)?.unwrap();
                    value.update(b, &v.wrapping_add(delta))
                })
                .unwrap();
                let mut want = 0;
                for ((_, n), v) in m.value.iter_mut() {
                    if *n == ns {
                        *v = v.wrapping_add(delta);
                        want += 1;
                    }
                }
                assert_eq!(visited, want);
                // The visit leaves some key current; put ours back.
                b.set_current_key(&key).unwrap();
            }
            Op::Flush => b.store().flush().unwrap(),
            Op::Compact => b.store().compact().unwrap(),
        }
    }
    TestResult::passed()
}

#[test]
fn every_state_kind_matches_the_model() {
    QuickCheck::new().rng(Gen::new(200)).tests(150).quickcheck(run as fn(Vec<Op>) -> TestResult);
}

#[test]
fn long_runs_through_background_flushes_match_the_model() {
    let mut g = Gen::new(400);
    for _ in 0..3 {
        let ops: Vec<Op> = (0..6000).map(|_| Op::arbitrary(&mut g)).collect();
        assert!(!run(ops).is_failure());
    }
}

#[test]
fn string_keys_and_values_round_trip() {
    let fs = FaultFs::new();
    let opts = StoreOptions::new().file_system(Arc::new(fs));
    let mut b = KeyedBackend::builder(Str).java_key_hash().store_options(opts).open("/s").unwrap();
    let v = b.state(ValueStateDescriptor::new("v", Str)).unwrap();
    for k in ["", "hello", "user-17", "état"] {
        b.set_current_key(&k.to_string()).unwrap();
        v.update(&mut b, &format!("value of {k}")).unwrap();
    }
    // Flink routes "hello" to key group 35 at max parallelism 128.
    b.set_current_key(&"hello".to_string()).unwrap();
    assert_eq!(b.current_key_group().unwrap(), 35);
    assert_eq!(v.get(&mut b).unwrap().as_deref(), Some("value of hello"));
    let mut keys = b.keys(&v).unwrap();
    keys.sort();
    assert_eq!(keys, vec!["", "hello", "user-17", "état"]);
}

#[test]
fn default_values_fill_in_for_missing_keys() {
    let fs = FaultFs::new();
    let opts = StoreOptions::new().file_system(Arc::new(fs));
    let mut b = KeyedBackend::builder(U64).store_options(opts).open("/s").unwrap();
    let v = b.state(ValueStateDescriptor::of::<u64>("count").default_value(7)).unwrap();
    b.set_current_key(&1).unwrap();
    assert_eq!(v.get(&mut b).unwrap(), Some(7));
    v.update(&mut b, &8).unwrap();
    assert_eq!(v.get(&mut b).unwrap(), Some(8));
    v.clear(&mut b).unwrap();
    assert_eq!(v.get(&mut b).unwrap(), Some(7));
}

/// The bytes keyed state writes are those `format-spec/state-records.md` describes.
#[test]
fn records_are_laid_out_as_the_spec_says() {
    use eddy::state::{ManualClock, TtlConfig};
    use std::time::Duration;

    let clock = ManualClock::new(0x0102);
    let opts = StoreOptions::new().file_system(Arc::new(FaultFs::new()));
    let mut b =
        KeyedBackend::builder(I64).java_key_hash().clock(Arc::new(clock)).store_options(opts).open("/spec").unwrap();
    let ttl = TtlConfig::new(Duration::from_secs(1));
    let value = b.state(ValueStateDescriptor::of::<i64>("v")).unwrap();
    let list = b.state(ListStateDescriptor::of::<String>("l").ttl(ttl)).unwrap();
    let map = b.state_in(MapStateDescriptor::of::<u64, bool>("m"), U32).unwrap();
    // The timer service is the states "t/event-time" and "t/processing-time".
    let timers = b.timer_service("t").unwrap();
    // A state's id follows from its name (none of these collide).
    let id = |name: &str| (eddy::format::key_hash64(name.as_bytes()) % 65534) as u16 + 1;
    b.set_current_key(&42).unwrap();
    // Flink's key group of the Long 42 at max parallelism 128.
    assert_eq!(b.current_key_group().unwrap(), 29);
    value.update(&mut b, &-2).unwrap();
    list.add(&mut b, &"ab".to_string()).unwrap();
    let mut map = map;
    map.set_namespace(&7);
    map.put(&mut b, &9, &true).unwrap();
    timers.register_event_time(&mut b, &(), -1).unwrap();

    let key = |state: u16| {
        let mut k = vec![0, 29];
        k.extend_from_slice(&state.to_be_bytes());
        k.extend_from_slice(&(42i64 as u64 ^ (1 << 63)).to_be_bytes());
        k
    };
    let mut want: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (key(id("v")), ((-2i64) as u64 ^ (1 << 63)).to_be_bytes().to_vec()),
        // The element frame: timestamp, its length (3), then the String encoding (length 2, "ab").
        (key(id("l")), [&0x0102i64.to_le_bytes()[..], &[3, 2], b"ab"].concat()),
        ([key(id("m")), 7u32.to_be_bytes().to_vec(), 9u64.to_be_bytes().to_vec()].concat(), vec![1]),
    ];
    let mut timer = vec![0, 29];
    timer.extend_from_slice(&id("t/event-time").to_be_bytes());
    timer.extend_from_slice(&((-1i64) as u64 ^ (1 << 63)).to_be_bytes());
    timer.extend_from_slice(&(42i64 as u64 ^ (1 << 63)).to_be_bytes());
    want.push((timer, vec![]));
    want.sort();
    let range = b.key_groups();
    let got = b.store().scan_key_groups(range).unwrap().collect_vec().unwrap();
    assert_eq!(got, want);
}

/// Values read in place: a String through `Str`'s `&str` view, and an rkyv archive.
#[test]
fn values_are_read_in_place_through_views() {
    use eddy::codec::RkyvSerializer;
    use eddy::state::{ManualClock, TtlConfig, TtlVisibility};
    use std::time::Duration;

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
    struct Session {
        user: String,
        clicks: Vec<u32>,
    }

    let clock = ManualClock::new(0);
    let opts = StoreOptions::new().file_system(Arc::new(FaultFs::new()));
    let mut b = KeyedBackend::builder(U64).clock(Arc::new(clock.clone())).store_options(opts).open("/views").unwrap();
    let ttl = TtlConfig::new(Duration::from_millis(10));
    let name = b.state(ValueStateDescriptor::new("name", Str).ttl(ttl)).unwrap();
    let sessions = b.state(MapStateDescriptor::new("sessions", U64, RkyvSerializer::<Session>::new())).unwrap();
    let stale = b
        .state(ValueStateDescriptor::new("stale", Str).ttl(ttl.visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp)))
        .unwrap();
    b.set_current_key(&1).unwrap();
    assert_eq!(name.get_with(&mut b, |v| v.map(str::len)).unwrap(), None);
    name.update(&mut b, &"alice".to_string()).unwrap();
    stale.update(&mut b, &"old".to_string()).unwrap();
    sessions.put(&mut b, &7, &Session { user: "alice".into(), clicks: vec![1, 2, 3] }).unwrap();
    assert_eq!(name.get_with(&mut b, |v| v.map(str::to_owned)).unwrap().as_deref(), Some("alice"));
    let clicks = sessions.get_with(&mut b, &7, |s| s.map(|s| s.clicks.iter().map(|c| c.to_native()).sum::<u32>()));
    assert_eq!(clicks.unwrap(), Some(6));
    assert!(!sessions.get_with(&mut b, &8, |s| s.is_some()).unwrap());
    // Expired: hidden (and removed) where the visibility says so, still read where it does not.
    clock.advance(10);
    assert_eq!(name.get_with(&mut b, |v| v.map(str::to_owned)).unwrap(), None);
    assert_eq!(name.get(&mut b).unwrap(), None);
    assert_eq!(stale.get_with(&mut b, |v| v.map(str::to_owned)).unwrap().as_deref(), Some("old"));
}

/// `put_all` finds the entries of a small map by walking it and those of a large one through
/// the index; both, with repeated user keys in one call, leave exactly the last value of each.
#[test]
fn put_all_on_small_and_large_maps() {
    let opts = StoreOptions::new().file_system(Arc::new(FaultFs::new()));
    let mut b = KeyedBackend::builder(U64).store_options(opts).open("/put_all").unwrap();
    let m = b.state(MapStateDescriptor::of::<u64, u64>("m")).unwrap();
    for (key, size) in [(1u64, 5u64), (2, 40), (3, 200)] {
        b.set_current_key(&key).unwrap();
        let first: Vec<(u64, u64)> = (0..size).map(|i| (i, i)).collect();
        m.put_all(&mut b, first.iter().map(|(k, v)| (k, v))).unwrap();
        // Again, overwriting every other entry, adding some, repeating one within the call.
        let second: Vec<(u64, u64)> = (0..size + 3).step_by(2).map(|i| (i, i * 10)).chain([(0, 7)]).collect();
        m.put_all(&mut b, second.iter().map(|(k, v)| (k, v))).unwrap();
        let mut want: std::collections::BTreeMap<u64, u64> = first.into_iter().collect();
        want.extend(second);
        let got: Vec<(u64, u64)> = m.iter(&mut b).unwrap().map(Result::unwrap).collect();
        assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "map of {size}");
    }
}

/// A visit of all keys answers its reads from the scan that listed the keys (a lookaside in
/// the store) until something is written: reads, writes, deletes of other keys and reads of
/// other states inside the visit all see the state as it is at that moment.
#[test]
fn reads_inside_apply_to_all_keys_see_every_write() {
    let fs = FaultFs::new();
    let opts = StoreOptions::new().file_system(Arc::new(fs)).memory_budget(256 << 10);
    let mut b = KeyedBackend::builder(U64).max_parallelism(8).store_options(opts).open("/visit").unwrap();
    let v = b.state(ValueStateDescriptor::new("v", U64)).unwrap();
    let m = b.state(MapStateDescriptor::new("m", U32, U64)).unwrap();
    let mut model: BTreeMap<u64, u64> = BTreeMap::new();
    for k in 0..3000u64 {
        b.set_current_key(&k).unwrap();
        v.update(&mut b, &(k * 10)).unwrap();
        m.put(&mut b, &1, &k).unwrap();
        model.insert(k, k * 10);
    }
    // Some in segments, some in memory.
    b.store().flush().unwrap();
    for k in (0..3000u64).step_by(7) {
        b.set_current_key(&k).unwrap();
        v.update(&mut b, &(k * 10 + 1)).unwrap();
        model.insert(k, k * 10 + 1);
    }
    let mut visited = 0;
    b.apply_to_all_keys(&v, |b, &k| {
        visited += 1;
        assert_eq!(v.get(b)?, model.get(&k).copied(), "key {k}");
        assert_eq!(m.get(b, &1)?, Some(k));
        assert_eq!(m.get(b, &2)?, None);
        if k % 5 == 0 {
            v.update(b, &(k + 1))?;
            model.insert(k, k + 1);
            assert_eq!(v.get(b)?, Some(k + 1));
        }
        if k % 11 == 0 {
            // Another key, maybe of the same key group and not visited yet.
            let other = (k * 7 + 3) % 3000;
            b.set_current_key(&other)?;
            v.clear(b)?;
            model.remove(&other);
            assert_eq!(v.get(b)?, None);
            b.set_current_key(&k)?;
        }
        Ok(())
    })
    .unwrap();
    assert!(visited > 2000);
    let mut after = BTreeMap::new();
    for k in b.keys(&v).unwrap() {
        b.set_current_key(&k).unwrap();
        after.insert(k, v.get(&mut b).unwrap().unwrap());
    }
    assert_eq!(after, model);
}

/// Flink's rule (`MapState.iterator().remove()`): an entry can be removed while the map is
/// iterated, and is gone at once for every later read. `MapState::cursor` does it over
/// entries in segments and in the mutable region, beyond one scan's worth of entries, and
/// `retain` on top of it; with TTL, expired entries are neither returned nor left behind.
#[test]
fn map_entries_are_removed_while_iterating() {
    use eddy::state::{ManualClock, TtlConfig};
    use eddy::{Error, Misuse};
    use std::time::Duration;

    let clock = ManualClock::new(0);
    let opts = StoreOptions::new().file_system(Arc::new(FaultFs::new())).memory_budget(256 << 10);
    let mut b = KeyedBackend::builder(U64).clock(Arc::new(clock.clone())).store_options(opts).open("/rm").unwrap();
    let plain = b.state(MapStateDescriptor::new("plain", U64, I64)).unwrap();
    let ttl = TtlConfig::new(Duration::from_millis(100)).cleanup_in_compaction(false);
    let timed = b.state(MapStateDescriptor::new("timed", U64, I64).ttl(ttl)).unwrap();
    b.set_current_key(&3).unwrap();
    // Even user keys in a segment, odd ones in memory; the timed map's even ones expire.
    for uk in (0..1000u64).step_by(2) {
        plain.put(&mut b, &uk, &(uk as i64)).unwrap();
        timed.put(&mut b, &uk, &(uk as i64)).unwrap();
    }
    b.store().flush().unwrap();
    clock.advance(60);
    for uk in (1..1000u64).step_by(2) {
        plain.put(&mut b, &uk, &(uk as i64)).unwrap();
        timed.put(&mut b, &uk, &(uk as i64)).unwrap();
    }
    clock.advance(60);

    // Remove every multiple of 3, checking the walk sees each entry once, in order.
    let mut cursor = plain.cursor(&mut b).unwrap();
    assert!(matches!(cursor.remove_current(), Err(Error::Misuse(Misuse::NoCurrentEntry))));
    let mut seen = Vec::new();
    while let Some((k, v)) = cursor.next_entry().unwrap() {
        assert_eq!(v, k as i64);
        seen.push(k);
        if k % 3 == 0 {
            cursor.remove_current().unwrap();
            assert!(matches!(cursor.remove_current(), Err(Error::Misuse(Misuse::NoCurrentEntry))));
        }
    }
    assert!(matches!(cursor.remove_current(), Err(Error::Misuse(Misuse::NoCurrentEntry))));
    assert_eq!(seen, (0..1000u64).collect::<Vec<_>>());
    let left: Vec<u64> = (0..1000u64).filter(|k| k % 3 != 0).collect();
    assert_eq!(plain.keys(&mut b).unwrap(), left);
    assert!(!plain.contains(&mut b, &999).unwrap());
    b.store().flush().unwrap();
    b.store().compact().unwrap();
    assert_eq!(plain.keys(&mut b).unwrap(), left);

    // retain, by key and by value; then by nothing.
    plain.retain(&mut b, |k, _| k % 2 == 1).unwrap();
    plain.retain(&mut b, |_, v| v % 5 != 0).unwrap();
    let left: Vec<u64> = left.into_iter().filter(|k| k % 2 == 1 && k % 5 != 0).collect();
    assert_eq!(plain.keys(&mut b).unwrap(), left);
    plain.retain(&mut b, |_, _| false).unwrap();
    assert!(plain.is_empty(&mut b).unwrap());

    // With TTL: the expired half is not offered; removing from the live half leaves the rest.
    let mut cursor = timed.cursor(&mut b).unwrap();
    let mut offered = 0;
    while let Some(k) = cursor.next_key().unwrap() {
        assert_eq!(k % 2, 1);
        offered += 1;
        if k < 500 {
            cursor.remove_current().unwrap();
        }
    }
    assert_eq!(offered, 500);
    assert_eq!(timed.keys(&mut b).unwrap(), (501..1000u64).step_by(2).collect::<Vec<_>>());
    let range = b.key_groups();
    assert_eq!(b.store().scan_key_groups(range).unwrap().collect_vec().unwrap().len(), 250);
}

/// Flink's rules (`KeyedStateBackend.getKeysAndNamespaces(state)` and
/// `getKeys(state, namespace)`): the first lists every (key, namespace) pair that has state,
/// each once however many entries it has (a map's user keys, a list's elements); the second
/// lists the keys that have state under one namespace. Checked over every key group, with
/// entries in segments and in the mutable region, some removed.
#[test]
fn keys_and_namespaces_of_a_state_are_listed() {
    use eddy::{Error, Misuse};

    let fs = FaultFs::new();
    let mut b = open(&fs);
    let mut s = register(&mut b);
    let mut pairs: BTreeSet<(u64, u32)> = BTreeSet::new();
    for key in 0..200u64 {
        b.set_current_key(&key).unwrap();
        for ns in 0..(key % 4) as u32 {
            s.map.set_namespace(&ns);
            for uk in 0..3u64 {
                s.map.put(&mut b, &uk, &1.0).unwrap();
            }
            s.list.set_namespace(&ns);
            s.list.add_all(&mut b, &[1, 2]).unwrap();
            pairs.insert((key, ns));
        }
        if key == 100 {
            b.store().flush().unwrap();
        }
    }
    // Emptied pairs are gone.
    for key in (0..200u64).step_by(7) {
        b.set_current_key(&key).unwrap();
        s.map.set_namespace(&1);
        s.map.clear(&mut b).unwrap();
        s.list.set_namespace(&1);
        s.list.clear(&mut b).unwrap();
        pairs.remove(&(key, 1));
    }
    for listed in [b.keys_and_namespaces(&s.map).unwrap(), b.keys_and_namespaces(&s.list).unwrap()] {
        assert_eq!(listed.len(), pairs.len(), "each pair once");
        assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), pairs);
    }
    for ns in 0..NAMESPACES {
        let want: BTreeSet<u64> = pairs.iter().filter(|p| p.1 == ns).map(|p| p.0).collect();
        let got = b.keys_in(&s.map, &ns).unwrap();
        assert_eq!(got.len(), want.len());
        assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
    }
    assert!(b.keys_and_namespaces(&s.value).unwrap().is_empty());
    let other = FaultFs::new();
    let mut other = open(&other);
    assert!(matches!(other.keys_and_namespaces(&s.map), Err(Error::Misuse(Misuse::ForeignHandle))));
    assert!(matches!(other.keys_in(&s.map, &0), Err(Error::Misuse(Misuse::ForeignHandle))));
}
