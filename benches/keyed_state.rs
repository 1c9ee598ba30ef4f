//! Keyed state benchmarks in the shape of the point operations of the Flink anchor
//! (`anchors/flink`, its workload 1), which follows flink-benchmarks' `ValueStateBenchmark`,
//! `ListStateBenchmark` and `MapStateBenchmark`. Each criterion group is named after the
//! anchor's workload (`valueGet`, `mapIterator`, ...), so that a table can pair the figures;
//! `<workload>/eddy` is the backend and `<workload>/hashmap` a baseline from the same run: std
//! `HashMap`s with foldhash doing the same work (`HashMap<u64, u64>`, `HashMap<u64, Vec<u64>>`,
//! and a map per key, `HashMap<u64, HashMap<u64, f64>>`, as Flink's heap backend keeps one).
//!
//! One thread, `u64` keys, max parallelism 128, and every measured operation is "set the current
//! key, then one state call". Each workload gets a fresh setup, built outside the timed part:
//!
//! - **setup keys** `0..500_000`, inserted in one shuffled order; value state holds one random
//!   `u64` per key, list state a list of 4 random `u64`s, map state 10 user keys (`0..10`) with
//!   random `f64`s (5,000,000 entries);
//! - **existing-key operations** walk the setup keys cyclically in a second, independent
//!   shuffled order, so that neither the store's layout nor the caches are helped by the order of
//!   insertion;
//! - **new-key operations** (`valueAdd`, `mapAdd`) use keys never seen before: op `j` uses key
//!   `S + (j / S) * S + perm[j % S]` with `S` the setup keys and `perm` a third shuffle, up to
//!   10,000,000 new keys per setup;
//! - **map user keys** are the shuffled `0..10`; op `i` uses entry `(i % S + i / S) % 10` of that
//!   list, so that every pass over the keys touches another user key; `mapContains` asks for
//!   that user key shifted left by one, so that about half are misses;
//! - **values** come from pools of random `u64`s (2^20) and `f64`s (2^16), and random lists of 4.
//!
//! | workload | one operation |
//! |---|---|
//! | `valueUpdate` | `update` of an existing key |
//! | `valueAdd` | `update` of a new key |
//! | `valueGet` | `get` of an existing key (a shuffled point read) |
//! | `listAdd` | `add`: appends one value to an existing key's list |
//! | `listGet` | `get` and iterate every value (4 per list: values/s are 4x ops/s) |
//! | `listUpdate` | `update` with a list of 4: replaces the list |
//! | `mapUpdate` | `put` of an existing key and user key |
//! | `mapGet` | `get` of a user key |
//! | `mapContains` | `contains` of a user key, half of them missing |
//! | `mapIterator` | iterate all 10 entries of the key's map: a scan of one map, reported per entry |
//! | `mapRemove` | `remove` of an existing user key; 5,000,000 distinct ones per setup |
//! | `mapAdd` | `put` into the map of a new key |
//! | `mapIsEmpty`, `mapKeys`, `mapValues` | flink-benchmarks operations the anchor does not measure: `is_empty`, and iterating the 10 keys or values (per entry) |
//!
//! The operations with a finite sequence (`valueAdd` and `mapAdd`: the new keys; `mapRemove`:
//! the entries) take a fresh setup, outside the timed part, when it runs out. So do `listAdd`
//! (after 10,000,000 appends, when the lists have grown from 4 to 24 values) and `listUpdate`
//! (after 10,000,000 replacements), which the anchor runs without end, so that memory stays
//! bounded. The store's budget (8 GiB) keeps everything in its mutable region, as Flink's heap
//! backend keeps everything on the heap; a check outside the timed part fails the run if a region
//! was ever frozen for flushing. The `*Add` figures include the growth of the hash tables (the
//! store's mutable region rehashes all of its records at once when its index grows, as std's
//! `HashMap` does), so they vary more from run to run than the others.
//!
//! `cargo bench --bench keyed_state` runs everything; a filter picks workloads (setups are built
//! only for the benchmarks that run), e.g. `cargo bench --bench keyed_state -- map`, and
//! criterion's `--warm-up-time` and `--measurement-time` override the times below.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

#[path = "common/shuffle.rs"]
mod shuffle;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use eddy::codec::{F64, U64};
use eddy::state::{
    KeyedBackend, ListState, ListStateDescriptor, MapState, MapStateDescriptor, ValueState, ValueStateDescriptor,
};
use eddy::store::StoreOptions;
use shuffle::shuffled;

/// Setup keys (`S`).
const SETUP_KEYS: u64 = 500_000;
/// New keys a setup takes (`valueAdd`, `mapAdd`) before it is rebuilt.
const MAX_NEW_KEYS: u64 = 10_000_000;
/// Values in each setup list.
const LIST_VALUES: usize = 4;
/// Random lists to draw from.
const LISTS: usize = 1024;
/// Appends (`listAdd`) or replacements (`listUpdate`) a list setup takes before it is rebuilt.
const LIST_OPS_PER_SETUP: u64 = 10_000_000;
/// User keys per key in the map setup.
const MAP_USER_KEYS: usize = 10;
/// Random `u64` values to draw from (a power of two).
const VALUES: usize = 1 << 20;
/// Random `f64` values to draw from (a power of two).
const DOUBLES: usize = 1 << 16;
/// Key groups, as in the anchor.
const MAX_PARALLELISM: u32 = 128;
/// Large enough that nothing is ever frozen for flushing (the mutable region gets a quarter).
const BUDGET: usize = 8 << 30;

type Fast = foldhash::fast::FixedState;
type Map<K, V> = HashMap<K, V, Fast>;
type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// splitmix64: the random values of the setups and operations.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The key, user key and value streams, the same for eddy and the baseline.
struct Streams {
    /// The setup keys in the order they are inserted.
    insert: Vec<u64>,
    /// The setup keys in the order existing-key operations visit them.
    access: Vec<u64>,
    /// The order of the new keys within each block of `S`.
    new_perm: Vec<u64>,
    values: Vec<u64>,
    doubles: Vec<f64>,
    lists: Vec<[u64; LIST_VALUES]>,
    /// `0..MAP_USER_KEYS`, shuffled.
    user_keys: Vec<u64>,
}

impl Streams {
    fn new() -> Self {
        let mut rnd = SplitMix(42);
        Streams {
            insert: shuffled(SETUP_KEYS, 0x51),
            access: shuffled(SETUP_KEYS, 0xa7),
            new_perm: shuffled(SETUP_KEYS, 0x3d5),
            values: (0..VALUES).map(|_| rnd.next()).collect(),
            doubles: (0..DOUBLES).map(|_| rnd.next_f64()).collect(),
            lists: (0..LISTS).map(|_| std::array::from_fn(|_| rnd.next())).collect(),
            user_keys: shuffled(MAP_USER_KEYS as u64, 0x1f),
        }
    }

    /// The existing key of op `i`.
    #[inline]
    fn existing(&self, i: u64) -> u64 {
        self.access[(i % SETUP_KEYS) as usize]
    }

    /// The new key of op `j`: distinct for every `j`, and from the setup keys.
    #[inline]
    fn fresh(&self, j: u64) -> u64 {
        SETUP_KEYS + (j / SETUP_KEYS) * SETUP_KEYS + self.new_perm[(j % SETUP_KEYS) as usize]
    }

    /// The user key of op `i`.
    #[inline]
    fn user_key(&self, i: u64) -> u64 {
        self.user_keys[((i % SETUP_KEYS + i / SETUP_KEYS) % MAP_USER_KEYS as u64) as usize]
    }

    #[inline]
    fn value(&self, i: u64) -> u64 {
        self.values[i as usize & (VALUES - 1)]
    }

    #[inline]
    fn double(&self, i: u64) -> f64 {
        self.doubles[i as usize & (DOUBLES - 1)]
    }

    #[inline]
    fn list(&self, i: u64) -> &[u64; LIST_VALUES] {
        &self.lists[i as usize & (LISTS - 1)]
    }
}

/// A backend with one registered state, and the directory it lives in.
struct Eddy<H> {
    b: KeyedBackend<U64>,
    h: H,
    _dir: tempfile::TempDir,
}

impl<H> Eddy<H> {
    fn open(register: impl FnOnce(&mut KeyedBackend<U64>) -> eddy::Result<H>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = KeyedBackend::builder(U64)
            .max_parallelism(MAX_PARALLELISM)
            .store_options(StoreOptions::new().memory_budget(BUDGET))
            .open(dir.path())
            .expect("open backend");
        let h = register(&mut b).expect("register state");
        Eddy { b, h, _dir: dir }
    }

    /// Fails the run if the store ever left memory, which would make the figures mean
    /// something else.
    fn check_in_memory(&mut self) {
        let s = self.b.store().stats();
        assert!(s.flushes == 0 && s.flushing_bytes == 0 && s.segments == 0, "the store flushed: raise BUDGET");
    }
}

/// What each run does once its benchmark is done: eddy checks it stayed in memory.
trait Done {
    fn done(&mut self) {}
}

impl<H> Done for Eddy<H> {
    fn done(&mut self) {
        self.check_in_memory();
    }
}

impl<K, V> Done for Map<K, V> {}

/// Builds a setup and says how long it took.
fn timed<S>(what: &str, build: impl FnOnce() -> S) -> S {
    let start = Instant::now();
    let s = build();
    eprintln!("{what}: set up in {:.2?}", start.elapsed());
    s
}

/// Times `op(setup, i)` for `i` = 0, 1, 2, ..., continuing across criterion's calls, on one
/// setup (built when the benchmark runs, not when it is filtered out).
fn endless<S: Done>(g: &mut Group<'_>, id: &str, mut make: impl FnMut() -> S, mut op: impl FnMut(&mut S, u64)) {
    let mut setup: Option<S> = None;
    let mut i = 0u64;
    g.bench_function(id, |bench| {
        let s = setup.get_or_insert_with(&mut make);
        bench.iter(|| {
            op(s, i);
            i += 1;
        })
    });
    if let Some(s) = setup.as_mut() {
        s.done();
    }
}

/// Times `op(setup, j)` for `j` = 0, 1, 2, ... since the setup was built; after `per_setup`
/// operations a fresh setup is built, outside the timed part.
fn bounded<S: Done>(
    g: &mut Group<'_>,
    id: &str,
    per_setup: u64,
    mut make: impl FnMut() -> S,
    mut op: impl FnMut(&mut S, u64),
) {
    let mut setup: Option<(S, u64)> = None;
    // Makes sure a setup with operations left is ready, checking the one it replaces.
    let mut prepare = |setup: &mut Option<(S, u64)>| {
        if setup.as_ref().is_none_or(|(_, done)| *done >= per_setup) {
            if let Some((mut s, _)) = setup.take() {
                s.done();
            }
            *setup = Some((make(), 0));
        }
    };
    g.bench_function(id, |bench| {
        // Before `iter_custom`, so that criterion's warm-up, which times whole calls, does not
        // take a setup for operations.
        prepare(&mut setup);
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                prepare(&mut setup);
                let (s, done) = setup.as_mut().expect("a setup");
                let n = left.min(per_setup - *done);
                let t = Instant::now();
                for j in *done..*done + n {
                    op(s, j);
                }
                total += t.elapsed();
                *done += n;
                left -= n;
            }
            total
        })
    });
    if let Some((s, _)) = setup.as_mut() {
        s.done();
    }
}

fn group<'a>(c: &'a mut Criterion, workload: &str, elements: u64) -> Group<'a> {
    let mut g = c.benchmark_group(workload);
    g.throughput(Throughput::Elements(elements));
    g
}

// ---------------------------------------------------------------------------------------------
// Value state

type ValueEddy = Eddy<ValueState<U64>>;

fn value_eddy(st: &Streams) -> ValueEddy {
    timed("value state (eddy)", || {
        let mut e = Eddy::open(|b| b.state(ValueStateDescriptor::new("valueState", U64)));
        for (r, &k) in st.insert.iter().enumerate() {
            e.b.set_current_key(&k).unwrap();
            e.h.update(&mut e.b, &st.value(r as u64)).unwrap();
        }
        e
    })
}

fn value_hashmap(st: &Streams) -> Map<u64, u64> {
    let mut m = Map::default();
    for (r, &k) in st.insert.iter().enumerate() {
        m.insert(k, st.value(r as u64));
    }
    m
}

fn value(c: &mut Criterion) {
    let st = Streams::new();
    let st = &st;

    let mut g = group(c, "valueUpdate", 1);
    endless(
        &mut g,
        "eddy",
        || value_eddy(st),
        |e, i| {
            e.b.set_current_key(&st.existing(i)).unwrap();
            e.h.update(&mut e.b, &st.value(i + 7)).unwrap();
        },
    );
    endless(&mut g, "hashmap", || value_hashmap(st), |m, i| *m.get_mut(&st.existing(i)).unwrap() = st.value(i + 7));
    g.finish();

    let mut g = group(c, "valueAdd", 1);
    bounded(
        &mut g,
        "eddy",
        MAX_NEW_KEYS,
        || value_eddy(st),
        |e, j| {
            e.b.set_current_key(&st.fresh(j)).unwrap();
            e.h.update(&mut e.b, &st.value(j + 7)).unwrap();
        },
    );
    bounded(
        &mut g,
        "hashmap",
        MAX_NEW_KEYS,
        || value_hashmap(st),
        |m, j| {
            m.insert(st.fresh(j), st.value(j + 7));
        },
    );
    g.finish();

    let mut g = group(c, "valueGet", 1);
    endless(
        &mut g,
        "eddy",
        || value_eddy(st),
        |e, i| {
            e.b.set_current_key(&st.existing(i)).unwrap();
            black_box(e.h.get(&mut e.b).unwrap().expect("a setup key"));
        },
    );
    endless(
        &mut g,
        "hashmap",
        || value_hashmap(st),
        |m, i| {
            black_box(*m.get(&st.existing(i)).expect("a setup key"));
        },
    );
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// List state

type ListEddy = Eddy<ListState<U64>>;

fn list_eddy(st: &Streams) -> ListEddy {
    timed("list state (eddy)", || {
        let mut e = Eddy::open(|b| b.state(ListStateDescriptor::new("listState", U64)));
        for (r, &k) in st.insert.iter().enumerate() {
            e.b.set_current_key(&k).unwrap();
            e.h.update(&mut e.b, st.list(r as u64)).unwrap();
        }
        e
    })
}

fn list_hashmap(st: &Streams) -> Map<u64, Vec<u64>> {
    let mut m = Map::default();
    for (r, &k) in st.insert.iter().enumerate() {
        m.insert(k, st.list(r as u64).to_vec());
    }
    m
}

fn list(c: &mut Criterion) {
    let st = Streams::new();
    let st = &st;

    let mut g = group(c, "listAdd", 1);
    bounded(
        &mut g,
        "eddy",
        LIST_OPS_PER_SETUP,
        || list_eddy(st),
        |e, i| {
            e.b.set_current_key(&st.existing(i)).unwrap();
            e.h.add(&mut e.b, &st.value(i + 7)).unwrap();
        },
    );
    bounded(
        &mut g,
        "hashmap",
        LIST_OPS_PER_SETUP,
        || list_hashmap(st),
        |m, i| {
            m.get_mut(&st.existing(i)).expect("a setup key").push(st.value(i + 7));
        },
    );
    g.finish();

    let mut g = group(c, "listGet", 1);
    endless(
        &mut g,
        "eddy",
        || list_eddy(st),
        |e, i| {
            e.b.set_current_key(&st.existing(i)).unwrap();
            for v in e.h.get(&mut e.b).unwrap() {
                black_box(v.unwrap());
            }
        },
    );
    endless(
        &mut g,
        "hashmap",
        || list_hashmap(st),
        |m, i| {
            for &v in m.get(&st.existing(i)).expect("a setup key") {
                black_box(v);
            }
        },
    );
    g.finish();

    let mut g = group(c, "listUpdate", 1);
    bounded(
        &mut g,
        "eddy",
        LIST_OPS_PER_SETUP,
        || list_eddy(st),
        |e, i| {
            e.b.set_current_key(&st.existing(i)).unwrap();
            e.h.update(&mut e.b, st.list(i + 7)).unwrap();
        },
    );
    bounded(
        &mut g,
        "hashmap",
        LIST_OPS_PER_SETUP,
        || list_hashmap(st),
        |m, i| {
            let l = m.get_mut(&st.existing(i)).expect("a setup key");
            l.clear();
            l.extend_from_slice(st.list(i + 7));
        },
    );
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Map state

type MapEddy = Eddy<MapState<U64, F64>>;
type NestedMap = Map<u64, Map<u64, f64>>;

fn map_eddy(st: &Streams) -> MapEddy {
    timed("map state (eddy)", || {
        let mut e = Eddy::open(|b| b.state(MapStateDescriptor::new("mapState", U64, F64)));
        for (r, &k) in st.insert.iter().enumerate() {
            e.b.set_current_key(&k).unwrap();
            for (j, uk) in st.user_keys.iter().enumerate() {
                e.h.put(&mut e.b, uk, &st.double((r * MAP_USER_KEYS + j) as u64)).unwrap();
            }
        }
        // A first scan may build an ordered view of the mutable region: not in a timed part.
        e.b.set_current_key(&st.insert[0]).unwrap();
        assert!(e.h.iter(&mut e.b).unwrap().next_entry().unwrap().is_some());
        e
    })
}

fn map_hashmap(st: &Streams) -> NestedMap {
    let mut m = NestedMap::default();
    for (r, &k) in st.insert.iter().enumerate() {
        let entries =
            st.user_keys.iter().enumerate().map(|(j, &uk)| (uk, st.double((r * MAP_USER_KEYS + j) as u64))).collect();
        m.insert(k, entries);
    }
    m
}

fn map(c: &mut Criterion) {
    let st = Streams::new();
    let st = &st;

    let mut g = group(c, "mapUpdate", 1);
    endless(
        &mut g,
        "eddy",
        || map_eddy(st),
        |e, i| {
            e.b.set_current_key(&st.existing(i)).unwrap();
            e.h.put(&mut e.b, &st.user_key(i), &st.double(i + 7)).unwrap();
        },
    );
    endless(
        &mut g,
        "hashmap",
        || map_hashmap(st),
        |m, i| {
            m.get_mut(&st.existing(i)).expect("a setup key").insert(st.user_key(i), st.double(i + 7));
        },
    );
    g.finish();

    let mut g = group(c, "mapGet", 1);
    endless(
        &mut g,
        "eddy",
        || map_eddy(st),
        |e, i| {
            e.b.set_current_key(&st.existing(i)).unwrap();
            black_box(e.h.get(&mut e.b, &st.user_key(i)).unwrap().expect("a setup entry"));
        },
    );
    endless(
        &mut g,
        "hashmap",
        || map_hashmap(st),
        |m, i| {
            black_box(*m.get(&st.existing(i)).and_then(|um| um.get(&st.user_key(i))).expect("a setup entry"));
        },
    );
    g.finish();

    let mut g = group(c, "mapContains", 1);
    endless(
        &mut g,
        "eddy",
        || map_eddy(st),
        |e, i| {
            e.b.set_current_key(&st.existing(i)).unwrap();
            black_box(e.h.contains(&mut e.b, &(st.user_key(i) << 1)).unwrap());
        },
    );
    endless(
        &mut g,
        "hashmap",
        || map_hashmap(st),
        |m, i| {
            black_box(m.get(&st.existing(i)).is_some_and(|um| um.contains_key(&(st.user_key(i) << 1))));
        },
    );
    g.finish();

    let mut g = group(c, "mapIterator", MAP_USER_KEYS as u64);
    endless(
        &mut g,
        "eddy",
        || map_eddy(st),
        |e, i| {
            e.b.set_current_key(&st.existing(i)).unwrap();
            let mut it = e.h.iter(&mut e.b).unwrap();
            while let Some(kv) = it.next_entry().unwrap() {
                black_box(kv);
            }
        },
    );
    endless(
        &mut g,
        "hashmap",
        || map_hashmap(st),
        |m, i| {
            for kv in m.get(&st.existing(i)).expect("a setup key") {
                black_box(kv);
            }
        },
    );
    g.finish();

    let mut g = group(c, "mapRemove", 1);
    let entries = SETUP_KEYS * MAP_USER_KEYS as u64;
    bounded(
        &mut g,
        "eddy",
        entries,
        || map_eddy(st),
        |e, j| {
            e.b.set_current_key(&st.existing(j)).unwrap();
            e.h.remove(&mut e.b, &st.user_key(j)).unwrap();
        },
    );
    bounded(
        &mut g,
        "hashmap",
        entries,
        || map_hashmap(st),
        |m, j| {
            black_box(m.get_mut(&st.existing(j)).expect("a setup key").remove(&st.user_key(j)));
        },
    );
    g.finish();

    let mut g = group(c, "mapAdd", 1);
    bounded(
        &mut g,
        "eddy",
        MAX_NEW_KEYS,
        || map_eddy(st),
        |e, j| {
            e.b.set_current_key(&st.fresh(j)).unwrap();
            e.h.put(&mut e.b, &st.user_key(j), &st.double(j + 7)).unwrap();
        },
    );
    bounded(
        &mut g,
        "hashmap",
        MAX_NEW_KEYS,
        || map_hashmap(st),
        |m, j| {
            m.entry(st.fresh(j)).or_default().insert(st.user_key(j), st.double(j + 7));
        },
    );
    g.finish();

    // flink-benchmarks operations the anchor does not measure: eddy and the baseline only.
    let mut g = group(c, "mapIsEmpty", 1);
    endless(
        &mut g,
        "eddy",
        || map_eddy(st),
        |e, i| {
            e.b.set_current_key(&st.existing(i)).unwrap();
            assert!(!e.h.is_empty(&mut e.b).unwrap());
        },
    );
    endless(
        &mut g,
        "hashmap",
        || map_hashmap(st),
        |m, i| {
            assert!(!m.get(&st.existing(i)).is_none_or(|um| um.is_empty()));
        },
    );
    g.finish();

    let mut g = group(c, "mapKeys", MAP_USER_KEYS as u64);
    endless(
        &mut g,
        "eddy",
        || map_eddy(st),
        |e, i| {
            e.b.set_current_key(&st.existing(i)).unwrap();
            let mut it = e.h.iter(&mut e.b).unwrap();
            while let Some(uk) = it.next_key().unwrap() {
                black_box(uk);
            }
        },
    );
    endless(
        &mut g,
        "hashmap",
        || map_hashmap(st),
        |m, i| {
            for uk in m.get(&st.existing(i)).expect("a setup key").keys() {
                black_box(uk);
            }
        },
    );
    g.finish();

    let mut g = group(c, "mapValues", MAP_USER_KEYS as u64);
    endless(
        &mut g,
        "eddy",
        || map_eddy(st),
        |e, i| {
            e.b.set_current_key(&st.existing(i)).unwrap();
            let mut it = e.h.iter(&mut e.b).unwrap();
            while let Some(v) = it.next_value().unwrap() {
                black_box(v);
            }
        },
    );
    endless(
        &mut g,
        "hashmap",
        || map_hashmap(st),
        |m, i| {
            for v in m.get(&st.existing(i)).expect("a setup key").values() {
                black_box(v);
            }
        },
    );
    g.finish();
}

fn config() -> Criterion {
    Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = value, list, map
}
criterion_main!(benches);
