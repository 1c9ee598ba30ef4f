//! Keyed state benchmarks in the shape of Apache Flink's flink-benchmarks state benchmarks
//! (`ValueStateBenchmark`, `ListStateBenchmark`, `MapStateBenchmark`): one thread, `u64` keys,
//! 500,000 setup keys inserted in shuffled order, and 500,000 distinct new keys. Every measured
//! operation is "set the current key, then one state call", cycling through the shuffled keys.
//! The store's budget (4 GiB) keeps everything in its mutable region, as Flink's heap backend
//! keeps everything on the heap; a check outside the timed part fails the run if a region was
//! ever frozen for flushing.
//!
//! `cargo bench --bench keyed_state` runs everything (a few minutes); a filter picks benchmarks,
//! e.g. `cargo bench --bench keyed_state -- map/` (setups are built only for the benchmarks that
//! run). Each figure `<group>/eddy/<op>` has a baseline `<group>/hashmap/<op>` from the same run:
//! std `HashMap`s with foldhash doing the same work.
//!
//! - `value/*`: `ValueState<u64>`; baseline `HashMap<u64, u64>`. `update` overwrites a setup
//!   key's value, `get` reads it, `add` sets the value of a new key. `add` inserts up to the
//!   500,000 new keys into a backend that holds the 500,000 setup keys, then starts over on a
//!   fresh setup (built outside the timed part), as `benches/store.rs` does for `put_new`.
//! - `list/*`: `ListState<u64>` whose setup lists hold one element each; baseline
//!   `HashMap<u64, Vec<u64>>` (`entry().or_default()` then `push` / `extend_from_slice`; `update`
//!   is `clear` + `extend_from_slice`). `add` appends one element (Flink's `listAppend`),
//!   `add_all` appends 100 and `update` replaces the list with 100 (Flink's `listAddAll` and
//!   `listUpdate`, with its `listValueCount` of 100), `get` reads a one-element list and iterates
//!   it (Flink's `listGetAndIterate`). So that lists stay small and memory bounded, a setup takes
//!   at most 10,000,000 appended elements (`add`: 20 passes, lists grow to 21 elements) or
//!   100,000 bulk calls (`add_all`, `update`: each touches a key with a one-element list once),
//!   then a fresh setup is built outside the timed part.
//! - `map/*`: `MapState<u64, f64>` with 10 user keys (0..10) per key, 5,000,000 entries; baseline
//!   a `HashMap<u64, HashMap<u64, f64>>` (a map per key, like Flink's heap backend, and what
//!   iterating one key's entries needs). `update` puts an existing user key, `get` reads one,
//!   `contains` asks for a missing one, `is_empty` asks of a setup key, `remove` removes an
//!   existing user key (timed in chunks of 1,000; the removed entries are put back after each
//!   chunk, outside the timed part), `put_all` puts the 10 existing user keys (Flink's
//!   `mapPutAll`), `iterate_entries` / `iterate_keys` / `iterate_values` read all 10 entries of
//!   a key. `add` puts a new user key into an existing key's map: pass `p` over the keys adds user
//!   key `10 + p`, up to 5 passes (maps grow from 10 to 15 entries), then a fresh setup is built
//!   outside the timed part. (Flink's `mapAdd` puts into a new key instead.) `put_all` and the
//!   iterations report throughput per entry (10 per call).
//!
//! The `add` figures include the growth of the hash tables: the store's mutable region rehashes
//! all of its records at once when its index grows (as std's `HashMap` does), which lands in
//! one sample or another, so those figures vary more from run to run than the others.
//!
//! Keys reach the backend through `set_current_key`, which serializes the key and hashes it to
//! its key group; the baseline only hashes the `u64` once in the map.

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

/// Setup keys (`0..KEYS`, shuffled) and new keys (`KEYS..2 * KEYS`, shuffled).
const KEYS: usize = 500_000;
/// Large enough that nothing is ever frozen for flushing (the mutable region gets a quarter).
const BUDGET: usize = 4 << 30;
/// The elements a list setup takes before it is rebuilt.
const LIST_ELEMENTS_PER_SETUP: usize = 10_000_000;
/// The elements of one `add_all` or `update`.
const LIST_BULK: usize = 100;
/// User keys per key in the map setup.
const MAP_USER_KEYS: u64 = 10;
/// Passes of `map/add` over the keys before the setup is rebuilt.
const MAP_ADD_PASSES: usize = 5;
/// `map/remove` puts the removed entries back after every chunk of this many.
const REMOVE_CHUNK: u64 = 1_000;

type Fast = foldhash::fast::FixedState;
type Map<K, V> = HashMap<K, V, Fast>;

/// Cycles through the shuffled keys; also picks a user key that moves on every pass.
#[derive(Clone, Copy)]
struct Cycle<'a> {
    keys: &'a [u64],
    i: usize,
    pass: u64,
}

impl<'a> Cycle<'a> {
    fn new(keys: &'a [u64]) -> Self {
        Cycle { keys, i: 0, pass: 0 }
    }

    /// The next key and a user key in `0..MAP_USER_KEYS`.
    #[inline]
    fn next(&mut self) -> (u64, u64) {
        let k = self.keys[self.i];
        let uk = (self.i as u64 + self.pass) % MAP_USER_KEYS;
        self.i += 1;
        if self.i == self.keys.len() {
            self.i = 0;
            self.pass += 1;
        }
        (k, uk)
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
            .max_parallelism(128)
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

/// States of which each takes `per_setup` operations before it is replaced by `fresh()`
/// (outside the timed part). The state and its count live across criterion's calls.
struct Rounds<S, F> {
    state: Option<(S, usize)>,
    per_setup: usize,
    fresh: F,
}

impl<S, F: FnMut() -> S> Rounds<S, F> {
    fn new(per_setup: usize, fresh: F) -> Self {
        Rounds { state: None, per_setup, fresh }
    }

    /// Makes sure a state with operations left is ready. Called before `iter_custom`, so that
    /// criterion's warm-up, which times whole calls, does not take a setup for operations.
    fn prepare(&mut self) {
        if self.state.as_ref().is_none_or(|(_, done)| *done >= self.per_setup) {
            self.state = None;
            self.state = Some(((self.fresh)(), 0));
        }
    }

    /// Times `iters` operations; `op(state, j)` does the `j`th operation since the state's setup.
    fn run(&mut self, iters: u64, mut op: impl FnMut(&mut S, usize)) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            self.prepare();
            let (s, done) = self.state.as_mut().expect("a state");
            let n = (left as usize).min(self.per_setup - *done);
            let t = Instant::now();
            for j in *done..*done + n {
                op(s, j);
            }
            total += t.elapsed();
            *done += n;
            left -= n as u64;
        }
        total
    }

    /// The current state, if any.
    fn state(&mut self) -> Option<&mut S> {
        self.state.as_mut().map(|(s, _)| s)
    }
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    g
}

// ---------------------------------------------------------------------------------------------
// Value state

type ValueEddy = Eddy<ValueState<U64>>;

fn value_eddy(keys: &[u64]) -> ValueEddy {
    let mut e = Eddy::open(|b| b.state(ValueStateDescriptor::new("v", U64)));
    for &k in keys {
        e.b.set_current_key(&k).unwrap();
        e.h.update(&mut e.b, &k).unwrap();
    }
    e
}

fn value_hashmap(keys: &[u64]) -> Map<u64, u64> {
    let mut m = Map::default();
    for &k in keys {
        m.insert(k, k);
    }
    m
}

fn value(c: &mut Criterion) {
    let keys = shuffled(KEYS as u64, 42);
    let new_keys = shuffled(KEYS as u64, 7).into_iter().map(|k| k + KEYS as u64).collect::<Vec<_>>();
    let mut g = group(c, "value");

    let mut eddy: Option<ValueEddy> = None;
    let mut map: Option<Map<u64, u64>> = None;

    let mut cy = Cycle::new(&keys);
    g.bench_function("eddy/update", |bench| {
        let e = eddy.get_or_insert_with(|| value_eddy(&keys));
        bench.iter(|| {
            let (k, _) = cy.next();
            e.b.set_current_key(&k).unwrap();
            e.h.update(&mut e.b, &(k + 1)).unwrap();
        })
    });
    let mut cy = Cycle::new(&keys);
    g.bench_function("hashmap/update", |bench| {
        let m = map.get_or_insert_with(|| value_hashmap(&keys));
        bench.iter(|| {
            let (k, _) = cy.next();
            m.insert(k, k + 1);
        })
    });

    let mut cy = Cycle::new(&keys);
    g.bench_function("eddy/get", |bench| {
        let e = eddy.get_or_insert_with(|| value_eddy(&keys));
        bench.iter(|| {
            let (k, _) = cy.next();
            e.b.set_current_key(&k).unwrap();
            black_box(e.h.get(&mut e.b).unwrap().expect("a setup key"))
        })
    });
    let mut cy = Cycle::new(&keys);
    g.bench_function("hashmap/get", |bench| {
        let m = map.get_or_insert_with(|| value_hashmap(&keys));
        bench.iter(|| {
            let (k, _) = cy.next();
            black_box(*m.get(&k).expect("a setup key"))
        })
    });
    if let Some(e) = eddy.as_mut() {
        e.check_in_memory();
    }
    drop(eddy);

    let mut rounds = Rounds::new(KEYS, || value_eddy(&keys));
    g.bench_function("eddy/add", |bench| {
        rounds.prepare();
        bench.iter_custom(|iters| {
            rounds.run(iters, |e, j| {
                let k = new_keys[j];
                e.b.set_current_key(&k).unwrap();
                e.h.update(&mut e.b, &k).unwrap();
            })
        })
    });
    if let Some(e) = rounds.state() {
        e.check_in_memory();
    }
    drop(rounds);
    let mut rounds = Rounds::new(KEYS, || map.get_or_insert_with(|| value_hashmap(&keys)).clone());
    g.bench_function("hashmap/add", |bench| {
        rounds.prepare();
        bench.iter_custom(|iters| {
            rounds.run(iters, |m, j| {
                let k = new_keys[j];
                m.insert(k, k);
            })
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// List state

type ListEddy = Eddy<ListState<U64>>;

fn list_eddy(keys: &[u64]) -> ListEddy {
    let mut e = Eddy::open(|b| b.state(ListStateDescriptor::new("l", U64)));
    for &k in keys {
        e.b.set_current_key(&k).unwrap();
        e.h.add(&mut e.b, &k).unwrap();
    }
    e
}

fn list_hashmap(keys: &[u64]) -> Map<u64, Vec<u64>> {
    let mut m = Map::default();
    for &k in keys {
        m.insert(k, vec![k]);
    }
    m
}

fn list(c: &mut Criterion) {
    let keys = shuffled(KEYS as u64, 42);
    let bulk: Vec<u64> = (0..LIST_BULK as u64).map(|i| i * 3 + 1).collect();
    let mut g = group(c, "list");

    // Appends leave the lists longer: `get` runs first, on lists of one element.
    let mut eddy: Option<ListEddy> = None;
    let mut cy = Cycle::new(&keys);
    g.bench_function("eddy/get", |bench| {
        let e = eddy.get_or_insert_with(|| list_eddy(&keys));
        bench.iter(|| {
            let (k, _) = cy.next();
            e.b.set_current_key(&k).unwrap();
            for x in e.h.get(&mut e.b).unwrap() {
                black_box(x.unwrap());
            }
        })
    });
    drop(eddy);
    let mut hashmap_setup: Option<Map<u64, Vec<u64>>> = None;
    let mut cy = Cycle::new(&keys);
    g.bench_function("hashmap/get", |bench| {
        let m = hashmap_setup.get_or_insert_with(|| list_hashmap(&keys));
        bench.iter(|| {
            let (k, _) = cy.next();
            for &x in m.get(&k).expect("a setup key") {
                black_box(x);
            }
        })
    });

    let per_setup = LIST_ELEMENTS_PER_SETUP;
    let mut rounds = Rounds::new(per_setup, || list_eddy(&keys));
    g.bench_function("eddy/add", |bench| {
        rounds.prepare();
        bench.iter_custom(|iters| {
            rounds.run(iters, |e, j| {
                let k = keys[j % KEYS];
                e.b.set_current_key(&k).unwrap();
                e.h.add(&mut e.b, &(j as u64)).unwrap();
            })
        })
    });
    if let Some(e) = rounds.state() {
        e.check_in_memory();
    }
    drop(rounds);
    let mut rounds = Rounds::new(per_setup, || hashmap_setup.get_or_insert_with(|| list_hashmap(&keys)).clone());
    g.bench_function("hashmap/add", |bench| {
        rounds.prepare();
        bench.iter_custom(|iters| {
            rounds.run(iters, |m, j| {
                let k = keys[j % KEYS];
                m.entry(k).or_default().push(j as u64);
            })
        })
    });
    drop(rounds);

    g.throughput(Throughput::Elements(LIST_BULK as u64));
    let per_setup = LIST_ELEMENTS_PER_SETUP / LIST_BULK;
    let mut rounds = Rounds::new(per_setup, || list_eddy(&keys));
    g.bench_function("eddy/add_all", |bench| {
        rounds.prepare();
        bench.iter_custom(|iters| {
            rounds.run(iters, |e, j| {
                e.b.set_current_key(&keys[j]).unwrap();
                e.h.add_all(&mut e.b, bulk.iter()).unwrap();
            })
        })
    });
    if let Some(e) = rounds.state() {
        e.check_in_memory();
    }
    drop(rounds);
    let mut rounds = Rounds::new(per_setup, || hashmap_setup.get_or_insert_with(|| list_hashmap(&keys)).clone());
    g.bench_function("hashmap/add_all", |bench| {
        rounds.prepare();
        bench.iter_custom(|iters| {
            rounds.run(iters, |m, j| {
                m.entry(keys[j]).or_default().extend_from_slice(&bulk);
            })
        })
    });
    drop(rounds);

    let mut rounds = Rounds::new(per_setup, || list_eddy(&keys));
    g.bench_function("eddy/update", |bench| {
        rounds.prepare();
        bench.iter_custom(|iters| {
            rounds.run(iters, |e, j| {
                e.b.set_current_key(&keys[j]).unwrap();
                e.h.update(&mut e.b, bulk.iter()).unwrap();
            })
        })
    });
    if let Some(e) = rounds.state() {
        e.check_in_memory();
    }
    drop(rounds);
    let mut rounds = Rounds::new(per_setup, || hashmap_setup.get_or_insert_with(|| list_hashmap(&keys)).clone());
    g.bench_function("hashmap/update", |bench| {
        rounds.prepare();
        bench.iter_custom(|iters| {
            rounds.run(iters, |m, j| {
                let l = m.entry(keys[j]).or_default();
                l.clear();
                l.extend_from_slice(&bulk);
            })
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Map state

type MapEddy = Eddy<MapState<U64, F64>>;
type NestedMap = Map<u64, Map<u64, f64>>;

fn map_value(k: u64, uk: u64) -> f64 {
    (k ^ uk) as f64 * 0.5
}

fn map_eddy(keys: &[u64]) -> MapEddy {
    let start = Instant::now();
    let mut e = Eddy::open(|b| b.state(MapStateDescriptor::new("m", U64, F64)));
    for &k in keys {
        e.b.set_current_key(&k).unwrap();
        for uk in 0..MAP_USER_KEYS {
            e.h.put(&mut e.b, &uk, &map_value(k, uk)).unwrap();
        }
    }
    // A first scan may build an ordered view of the mutable region: not in a timed part.
    e.b.set_current_key(&keys[0]).unwrap();
    assert!(!e.h.is_empty(&mut e.b).unwrap());
    let mib = e.b.store().stats().memory_bytes() >> 20;
    eprintln!(
        "map: loaded {} entries into eddy in {:.1?} ({mib} MiB)",
        keys.len() as u64 * MAP_USER_KEYS,
        start.elapsed()
    );
    e
}

fn map_hashmap(keys: &[u64]) -> NestedMap {
    let mut m = NestedMap::default();
    for &k in keys {
        m.insert(k, (0..MAP_USER_KEYS).map(|uk| (uk, map_value(k, uk))).collect());
    }
    m
}

fn map(c: &mut Criterion) {
    let keys = shuffled(KEYS as u64, 42);
    let mut g = group(c, "map");
    let mut eddy: Option<MapEddy> = None;
    let mut hashmap: Option<NestedMap> = None;
    macro_rules! eddy {
        () => {
            eddy.get_or_insert_with(|| map_eddy(&keys))
        };
    }
    macro_rules! hashmap {
        () => {
            hashmap.get_or_insert_with(|| map_hashmap(&keys))
        };
    }

    let mut cy = Cycle::new(&keys);
    g.bench_function("eddy/update", |bench| {
        let e = eddy!();
        bench.iter(|| {
            let (k, uk) = cy.next();
            e.b.set_current_key(&k).unwrap();
            e.h.put(&mut e.b, &uk, &map_value(k, uk)).unwrap();
        })
    });
    let mut cy = Cycle::new(&keys);
    g.bench_function("hashmap/update", |bench| {
        let m = hashmap!();
        bench.iter(|| {
            let (k, uk) = cy.next();
            m.entry(k).or_default().insert(uk, map_value(k, uk));
        })
    });

    let mut cy = Cycle::new(&keys);
    g.bench_function("eddy/get", |bench| {
        let e = eddy!();
        bench.iter(|| {
            let (k, uk) = cy.next();
            e.b.set_current_key(&k).unwrap();
            black_box(e.h.get(&mut e.b, &uk).unwrap().expect("a setup entry"))
        })
    });
    let mut cy = Cycle::new(&keys);
    g.bench_function("hashmap/get", |bench| {
        let m = hashmap!();
        bench.iter(|| {
            let (k, uk) = cy.next();
            black_box(*m.get(&k).and_then(|um| um.get(&uk)).expect("a setup entry"))
        })
    });

    let mut cy = Cycle::new(&keys);
    g.bench_function("eddy/contains", |bench| {
        let e = eddy!();
        bench.iter(|| {
            let (k, uk) = cy.next();
            e.b.set_current_key(&k).unwrap();
            assert!(!e.h.contains(&mut e.b, &(u64::MAX - uk)).unwrap());
        })
    });
    let mut cy = Cycle::new(&keys);
    g.bench_function("hashmap/contains", |bench| {
        let m = hashmap!();
        bench.iter(|| {
            let (k, uk) = cy.next();
            assert!(!m.get(&k).is_some_and(|um| um.contains_key(&(u64::MAX - uk))));
        })
    });

    let mut cy = Cycle::new(&keys);
    g.bench_function("eddy/is_empty", |bench| {
        let e = eddy!();
        bench.iter(|| {
            let (k, _) = cy.next();
            e.b.set_current_key(&k).unwrap();
            assert!(!e.h.is_empty(&mut e.b).unwrap());
        })
    });
    let mut cy = Cycle::new(&keys);
    g.bench_function("hashmap/is_empty", |bench| {
        let m = hashmap!();
        bench.iter(|| {
            let (k, _) = cy.next();
            assert!(!m.get(&k).is_none_or(|um| um.is_empty()));
        })
    });

    let mut cy = Cycle::new(&keys);
    g.bench_function("eddy/remove", |bench| {
        let e = eddy!();
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(REMOVE_CHUNK);
                let mut undo = cy;
                let t = Instant::now();
                for _ in 0..n {
                    let (k, uk) = cy.next();
                    e.b.set_current_key(&k).unwrap();
                    e.h.remove(&mut e.b, &uk).unwrap();
                }
                total += t.elapsed();
                for _ in 0..n {
                    let (k, uk) = undo.next();
                    e.b.set_current_key(&k).unwrap();
                    e.h.put(&mut e.b, &uk, &map_value(k, uk)).unwrap();
                }
                left -= n;
            }
            total
        })
    });
    let mut cy = Cycle::new(&keys);
    g.bench_function("hashmap/remove", |bench| {
        let m = hashmap!();
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(REMOVE_CHUNK);
                let mut undo = cy;
                let t = Instant::now();
                for _ in 0..n {
                    let (k, uk) = cy.next();
                    if let Some(um) = m.get_mut(&k) {
                        black_box(um.remove(&uk));
                    }
                }
                total += t.elapsed();
                for _ in 0..n {
                    let (k, uk) = undo.next();
                    m.entry(k).or_default().insert(uk, map_value(k, uk));
                }
                left -= n;
            }
            total
        })
    });

    g.throughput(Throughput::Elements(MAP_USER_KEYS));
    let user_keys: Vec<u64> = (0..MAP_USER_KEYS).collect();
    let values: Vec<f64> = (0..MAP_USER_KEYS).map(|uk| uk as f64 + 0.25).collect();
    let mut cy = Cycle::new(&keys);
    g.bench_function("eddy/put_all", |bench| {
        let e = eddy!();
        bench.iter(|| {
            let (k, _) = cy.next();
            e.b.set_current_key(&k).unwrap();
            e.h.put_all(&mut e.b, user_keys.iter().zip(&values)).unwrap();
        })
    });
    let mut cy = Cycle::new(&keys);
    g.bench_function("hashmap/put_all", |bench| {
        let m = hashmap!();
        bench.iter(|| {
            let (k, _) = cy.next();
            m.entry(k).or_default().extend(user_keys.iter().copied().zip(values.iter().copied()));
        })
    });

    let mut cy = Cycle::new(&keys);
    g.bench_function("eddy/iterate_entries", |bench| {
        let e = eddy!();
        bench.iter(|| {
            let (k, _) = cy.next();
            e.b.set_current_key(&k).unwrap();
            let mut it = e.h.iter(&mut e.b).unwrap();
            while let Some(kv) = it.next_entry().unwrap() {
                black_box(kv);
            }
        })
    });
    let mut cy = Cycle::new(&keys);
    g.bench_function("hashmap/iterate_entries", |bench| {
        let m = hashmap!();
        bench.iter(|| {
            let (k, _) = cy.next();
            for kv in m.get(&k).expect("a setup key") {
                black_box(kv);
            }
        })
    });

    let mut cy = Cycle::new(&keys);
    g.bench_function("eddy/iterate_keys", |bench| {
        let e = eddy!();
        bench.iter(|| {
            let (k, _) = cy.next();
            e.b.set_current_key(&k).unwrap();
            let mut it = e.h.iter(&mut e.b).unwrap();
            while let Some(uk) = it.next_key().unwrap() {
                black_box(uk);
            }
        })
    });
    let mut cy = Cycle::new(&keys);
    g.bench_function("hashmap/iterate_keys", |bench| {
        let m = hashmap!();
        bench.iter(|| {
            let (k, _) = cy.next();
            for uk in m.get(&k).expect("a setup key").keys() {
                black_box(uk);
            }
        })
    });

    let mut cy = Cycle::new(&keys);
    g.bench_function("eddy/iterate_values", |bench| {
        let e = eddy!();
        bench.iter(|| {
            let (k, _) = cy.next();
            e.b.set_current_key(&k).unwrap();
            let mut it = e.h.iter(&mut e.b).unwrap();
            while let Some(v) = it.next_value().unwrap() {
                black_box(v);
            }
        })
    });
    let mut cy = Cycle::new(&keys);
    g.bench_function("hashmap/iterate_values", |bench| {
        let m = hashmap!();
        bench.iter(|| {
            let (k, _) = cy.next();
            for v in m.get(&k).expect("a setup key").values() {
                black_box(v);
            }
        })
    });

    if let Some(e) = eddy.as_mut() {
        e.check_in_memory();
    }
    drop(eddy);

    // `add` grows the maps: it runs on setups of its own.
    g.throughput(Throughput::Elements(1));
    let per_setup = MAP_ADD_PASSES * KEYS;
    let mut rounds = Rounds::new(per_setup, || map_eddy(&keys));
    g.bench_function("eddy/add", |bench| {
        rounds.prepare();
        bench.iter_custom(|iters| {
            rounds.run(iters, |e, j| {
                let (k, uk) = (keys[j % KEYS], MAP_USER_KEYS + (j / KEYS) as u64);
                e.b.set_current_key(&k).unwrap();
                e.h.put(&mut e.b, &uk, &map_value(k, uk)).unwrap();
            })
        })
    });
    if let Some(e) = rounds.state() {
        e.check_in_memory();
    }
    drop(rounds);
    let mut rounds = Rounds::new(per_setup, || hashmap!().clone());
    g.bench_function("hashmap/add", |bench| {
        rounds.prepare();
        bench.iter_custom(|iters| {
            rounds.run(iters, |m, j| {
                let (k, uk) = (keys[j % KEYS], MAP_USER_KEYS + (j / KEYS) as u64);
                m.entry(k).or_default().insert(uk, map_value(k, uk));
            })
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = value, list, map
}
criterion_main!(benches);
