//! Store benchmarks: point put / get / update and prefix scans, in memory (500,000 u64 keys,
//! 8-byte values) and spilling (10,000,000 keys, 100-byte values, 256 MiB budget), against a
//! `HashMap` with foldhash as the in-memory baseline; flush and compaction throughput.
//!
//! `cargo bench --bench store` runs eddy and the baseline; `--features peers` adds RocksDB and
//! fjall. `EDDY_BENCH_SPILL_KEYS` overrides the size of the spilling workload.
//!
//! Keys are loaded in one shuffled order and read, updated and scanned in a second, independent
//! shuffled order, so that the order of insertion does not help the reads.
//!
//! In memory, `put_new` inserts up to 500,000 new keys into an engine that holds the 500,000
//! setup keys, then starts over on a fresh engine (outside the timed part), so that it measures
//! inserts into a region of that size, as Flink's state benchmarks do.

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{encode_key, scan_prefix, shuffled, value_for, Eddy, Engine};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use eddy::store::{CompactionOptions, StoreOptions};

const MEM_KEYS: u64 = 500_000;
const MEM_VALUE: usize = 8;
const SPILL_VALUE: usize = 100;
const BUDGET: usize = 256 << 20;
const SCAN_KEYS: u64 = 512;

fn spill_keys() -> u64 {
    std::env::var("EDDY_BENCH_SPILL_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000)
}

/// An engine with the directory it lives in.
struct Owned {
    _dir: tempfile::TempDir,
    engine: Box<dyn Engine>,
}

type Factory = fn(&std::path::Path, usize) -> Box<dyn Engine>;

fn factories() -> Vec<Factory> {
    #[cfg_attr(not(feature = "peers"), allow(unused_mut))]
    let mut out: Vec<Factory> = vec![|dir, budget| Box::new(Eddy::open(dir, budget))];
    #[cfg(feature = "peers")]
    {
        out.push(|dir, budget| Box::new(common::peers::Rocks::open(dir, budget)));
        out.push(|dir, budget| Box::new(common::peers::Fjall::open(dir, budget)));
    }
    out
}

fn make(f: Factory, keys: &[u64], value_len: usize) -> Owned {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = f(dir.path(), BUDGET);
    let mut k = [0u8; 10];
    for &key in keys {
        encode_key(key, &mut k);
        engine.put(&k, &value_for(key, value_len));
    }
    engine.settle();
    Owned { _dir: dir, engine }
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    g
}

/// The seed of the order in which get, update and scan visit the loaded keys.
const ACCESS_SEED: u64 = 0x5bd1;

/// get, update and scan on one loaded engine, visiting its keys in the order of `keys`; put_new
/// either on it (`fresh` = None) or on fresh engines made by `fresh`.
fn bench_engine(
    c: &mut Criterion,
    name: &str,
    e: &mut dyn Engine,
    keys: &[u64],
    value_len: usize,
    fresh: Option<&dyn Fn() -> Owned>,
) {
    let mut g = group(c, name);
    let engine = e.name();
    let value = value_for(7, value_len);
    let mut k = [0u8; 10];

    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function(format!("{engine}/get"), |b| {
        b.iter(|| {
            encode_key(keys[i % keys.len()], &mut k);
            i += 1;
            assert!(e.get(&k));
        })
    });
    let mut i = 0usize;
    g.bench_function(format!("{engine}/update"), |b| {
        b.iter(|| {
            encode_key(keys[i % keys.len()], &mut k);
            i += 1;
            e.put(&k, &value);
        })
    });
    g.throughput(Throughput::Elements(SCAN_KEYS));
    let mut i = 0usize;
    g.bench_function(format!("{engine}/scan_{SCAN_KEYS}"), |b| {
        b.iter(|| {
            let p = scan_prefix(keys[i % keys.len()]);
            i += 1;
            black_box(e.scan(&p));
        })
    });
    g.throughput(Throughput::Elements(1));
    let first_new = keys.len() as u64;
    match fresh {
        None => {
            let mut next = first_new;
            g.bench_function(format!("{engine}/put_new"), |b| {
                b.iter(|| {
                    encode_key(next, &mut k);
                    next += 1;
                    e.put(&k, &value);
                })
            });
        }
        Some(fresh) => {
            // Every round reloads a fresh engine outside the timed part: few samples suffice.
            g.sample_size(10);
            g.bench_function(format!("{engine}/put_new"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut done = 0;
                    while done < iters {
                        let mut owned = fresh();
                        let n = (iters - done).min(MEM_KEYS);
                        let t = Instant::now();
                        for key in first_new..first_new + n {
                            encode_key(key, &mut k);
                            owned.engine.put(&k, &value);
                        }
                        total += t.elapsed();
                        done += n;
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

fn in_memory(c: &mut Criterion) {
    let keys = shuffled(MEM_KEYS, 42);
    let access = shuffled(MEM_KEYS, ACCESS_SEED);
    // The baseline: a HashMap<u64, u64> with a fast hasher doing the same operations.
    {
        let mut g = group(c, "in_memory");
        g.throughput(Throughput::Elements(1));
        let mut map: HashMap<u64, u64, foldhash::fast::FixedState> = HashMap::default();
        for &k in &keys {
            map.insert(k, k);
        }
        let mut i = 0usize;
        g.bench_function("hashmap/get", |b| {
            b.iter(|| {
                let k = access[i % access.len()];
                i += 1;
                black_box(map.get(&k).copied())
            })
        });
        let mut i = 0usize;
        g.bench_function("hashmap/update", |b| {
            b.iter(|| {
                let k = access[i % access.len()];
                i += 1;
                map.insert(k, 7);
            })
        });
        g.bench_function("hashmap/put_new", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let mut fresh = map.clone();
                    let n = (iters - done).min(MEM_KEYS);
                    let t = Instant::now();
                    for k in MEM_KEYS..MEM_KEYS + n {
                        fresh.insert(k, 7);
                    }
                    total += t.elapsed();
                    done += n;
                    drop(fresh);
                }
                total
            })
        });
        g.finish();
    }
    for f in factories() {
        let mut owned = make(f, &keys, MEM_VALUE);
        let fresh = || make(f, &keys, MEM_VALUE);
        bench_engine(c, "in_memory", owned.engine.as_mut(), &access, MEM_VALUE, Some(&fresh));
    }
}

fn spilling(c: &mut Criterion) {
    let n = spill_keys();
    let keys = shuffled(n, 7);
    let access = shuffled(n, ACCESS_SEED);
    for f in factories() {
        let start = Instant::now();
        let mut owned = make(f, &keys, SPILL_VALUE);
        eprintln!("spilling: loaded {n} keys into {} in {:.1?}", owned.engine.name(), start.elapsed());
        bench_engine(c, "spilling", owned.engine.as_mut(), &access, SPILL_VALUE, None);
    }
}

/// Flush and compaction throughput in MB/s of records (key + value bytes).
fn flush_and_compaction(c: &mut Criterion) {
    const ROUND: u64 = 250_000;
    let record = (10 + SPILL_VALUE) as u64;
    let mut g = c.benchmark_group("background");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    let manual = CompactionOptions {
        trigger: 1000,
        max_segments: 1000,
        max_space_amplification_percent: u64::MAX / 200,
        ..Default::default()
    };
    let open =
        |dir: &std::path::Path| StoreOptions::new().memory_budget(4 * BUDGET).compaction(manual).open(dir).unwrap();
    let fill = |s: &mut eddy::store::Store, from: u64, n: u64| {
        let mut k = [0u8; 10];
        for key in from..from + n {
            encode_key(key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 8, &mut k);
            s.put(&k, &value_for(key, SPILL_VALUE)).unwrap();
        }
    };
    g.throughput(Throughput::Bytes(ROUND * record));
    g.bench_function("eddy/flush", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let mut s = open(dir.path());
                fill(&mut s, 0, ROUND);
                let t = Instant::now();
                s.flush().unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    g.throughput(Throughput::Bytes(4 * ROUND * record));
    g.bench_function("eddy/compact_4_segments", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let mut s = open(dir.path());
                for r in 0..4 {
                    fill(&mut s, r * ROUND, ROUND);
                    s.flush().unwrap();
                }
                let t = Instant::now();
                s.compact().unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, in_memory, spilling, flush_and_compaction);
criterion_main!(benches);
