//! Store benchmarks: point put / get / update and prefix scans, in memory (500,000 u64 keys,
//! 8-byte values) and spilling (10,000,000 keys, 100-byte values, 256 MiB budget), against a
//! `HashMap` with foldhash as the in-memory baseline; flush and compaction throughput.
//!
//! `cargo bench --bench store` runs eddy and the baseline; `--features peers` adds RocksDB and
//! fjall. `EDDY_BENCH_SPILL_KEYS` overrides the size of the spilling workload.

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{encode_key, scan_prefix, shuffled, value_for, Eddy, Engine};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eddy::store::{CompactionOptions, StoreOptions};

const MEM_KEYS: u64 = 500_000;
const MEM_VALUE: usize = 8;
const SPILL_VALUE: usize = 100;
const BUDGET: usize = 256 << 20;
const SCAN_KEYS: u64 = 512;

fn spill_keys() -> u64 {
    std::env::var("EDDY_BENCH_SPILL_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000)
}

type Engines = Vec<(tempfile::TempDir, Box<dyn Engine>)>;

fn engines(budget: usize) -> Engines {
    let mut out: Engines = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let e: Box<dyn Engine> = Box::new(Eddy::open(dir.path(), budget));
    out.push((dir, e));
    #[cfg(feature = "peers")]
    {
        let dir = tempfile::tempdir().unwrap();
        let e: Box<dyn Engine> = Box::new(common::peers::Rocks::open(dir.path(), budget));
        out.push((dir, e));
        let dir = tempfile::tempdir().unwrap();
        let e: Box<dyn Engine> = Box::new(common::peers::Fjall::open(dir.path(), budget));
        out.push((dir, e));
    }
    out
}

fn load(e: &mut dyn Engine, keys: &[u64], value_len: usize) {
    let mut k = [0u8; 10];
    for &key in keys {
        encode_key(key, &mut k);
        e.put(&k, &value_for(key, value_len));
    }
    e.settle();
}

/// Point operations and scans on one engine holding `keys` (already loaded).
fn bench_engine(c: &mut Criterion, group: &str, e: &mut dyn Engine, keys: &[u64], value_len: usize, new_from: u64) {
    let mut g = c.benchmark_group(group);
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    let name = e.name();
    let value = value_for(7, value_len);
    let mut k = [0u8; 10];

    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function(format!("{name}/get"), |b| {
        b.iter(|| {
            encode_key(keys[i % keys.len()], &mut k);
            i += 1;
            assert!(e.get(&k));
        })
    });
    let mut i = 0usize;
    g.bench_function(format!("{name}/update"), |b| {
        b.iter(|| {
            encode_key(keys[i % keys.len()], &mut k);
            i += 1;
            e.put(&k, &value);
        })
    });
    let mut next = new_from;
    g.bench_function(format!("{name}/put_new"), |b| {
        b.iter(|| {
            encode_key(next, &mut k);
            next += 1;
            e.put(&k, &value);
        })
    });
    g.throughput(Throughput::Elements(SCAN_KEYS));
    let mut i = 0usize;
    g.bench_function(format!("{name}/scan_{SCAN_KEYS}"), |b| {
        b.iter(|| {
            let p = scan_prefix(keys[i % keys.len()]);
            i += 1;
            black_box(e.scan(&p));
        })
    });
    g.finish();
}

fn in_memory(c: &mut Criterion) {
    let keys = shuffled(MEM_KEYS, 42);
    // The baseline: a HashMap<u64, u64> with a fast hasher doing the same operations.
    {
        let mut g = c.benchmark_group("in_memory");
        g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
        g.throughput(Throughput::Elements(1));
        let mut map: HashMap<u64, u64, foldhash::fast::FixedState> = HashMap::default();
        for &k in &keys {
            map.insert(k, k);
        }
        let mut i = 0usize;
        g.bench_function("hashmap/get", |b| {
            b.iter(|| {
                let k = keys[i % keys.len()];
                i += 1;
                black_box(map.get(&k).copied())
            })
        });
        let mut i = 0usize;
        g.bench_function("hashmap/update", |b| {
            b.iter(|| {
                let k = keys[i % keys.len()];
                i += 1;
                map.insert(k, 7);
            })
        });
        let mut next = MEM_KEYS;
        g.bench_function("hashmap/put_new", |b| {
            b.iter(|| {
                map.insert(next, 7);
                next += 1;
            })
        });
        g.finish();
    }
    for (_dir, mut e) in engines(BUDGET) {
        load(e.as_mut(), &keys, MEM_VALUE);
        bench_engine(c, "in_memory", e.as_mut(), &keys, MEM_VALUE, MEM_KEYS);
    }
}

fn spilling(c: &mut Criterion) {
    let n = spill_keys();
    let keys = shuffled(n, 7);
    for (_dir, mut e) in engines(BUDGET) {
        let start = Instant::now();
        load(e.as_mut(), &keys, SPILL_VALUE);
        eprintln!("spilling: loaded {n} keys into {} in {:.1?}", e.name(), start.elapsed());
        bench_engine(c, "spilling", e.as_mut(), &keys, SPILL_VALUE, n);
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
