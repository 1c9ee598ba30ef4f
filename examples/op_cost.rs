//! The cost of one keyed-state operation, alone: a driver to run under a profiler or
//! `valgrind --tool=callgrind` (instructions per operation), beside `benches/keyed_state.rs`.
//!
//! ```text
//! cargo run --release --example op_cost -- KEYS OPS [WORKLOAD]
//! valgrind --tool=callgrind target/release/examples/op_cost 1000 200000 listGet
//! valgrind --tool=callgrind target/release/examples/op_cost 1000 0 none   # the setup alone
//! ```
//!
//! One backend holds a value state (a `u64` per key), a list state (4 `u64`s per key) and a
//! map state (10 `u64 -> f64` entries per key, written in a shuffled order) for keys `0..KEYS`; each workload then runs
//! OPS operations "set the current key, then one state call" over the keys in a shuffled
//! order and prints the time per operation. With few keys everything stays in the caches and
//! the time is that of the instructions; with 500,000 keys it is bound by memory. The
//! instructions of one operation are (the run's count - the setup's count) / OPS.
//! WORKLOAD picks one of `valueGet`, `listGet`, `mapGet`, `mapUpdate`, `listAdd`, `mapRemove`,
//! `mapIterator`, `valueAdd` and `mapAdd` (the last two add OPS new keys); without it all run,
//! in that order, on the same state.

use std::hint::black_box;
use std::time::Instant;

use eddy::codec::{F64, U64};
use eddy::state::{KeyedBackend, ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use eddy::store::StoreOptions;

/// User keys per map.
const USER_KEYS: u64 = 10;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args().nth(n).map_or(default, |s| s.parse().expect("a number"))
}

fn main() -> eddy::Result<()> {
    let keys = arg(1, 1000).max(1);
    let ops = arg(2, 1_000_000);
    let only = std::env::args().nth(3).unwrap_or_default();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut b = KeyedBackend::builder(U64)
        .max_parallelism(128)
        .store_options(StoreOptions::new().memory_budget(8 << 30))
        .open(dir.path())?;
    let value = b.state(ValueStateDescriptor::new("value", U64))?;
    let list = b.state(ListStateDescriptor::new("list", U64))?;
    let map = b.state(MapStateDescriptor::new("map", U64, F64))?;
    // xorshift64: a shuffled order of the keys.
    let mut order: Vec<u64> = (0..keys).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    for k in 0..keys {
        b.set_current_key(&k)?;
        value.update(&mut b, &k)?;
        list.update(&mut b, &[k, k + 1, k + 2, k + 3])?;
        // Shuffled, as in the bench: a map's entries are not written in key order.
        for uk in [3, 7, 1, 9, 0, 5, 2, 8, 4, 6] {
            map.put(&mut b, &uk, &(uk as f64))?;
        }
    }
    let key = |i: u64| order[(i % keys) as usize];
    // Each workload's loop is its own code (no call through a pointer per operation).
    macro_rules! run {
        ($name:literal, |$b:ident, $i:ident| $op:block) => {
            if only.is_empty() || only == $name {
                let start = Instant::now();
                for $i in 0..ops {
                    let $b = &mut b;
                    $op
                }
                let ns = start.elapsed().as_nanos() as f64 / ops.max(1) as f64;
                println!("{}: {ns:.1} ns/op", $name);
            }
        };
    }
    run!("valueGet", |b, i| {
        b.set_current_key(&key(i))?;
        black_box(value.get(b)?);
    });
    run!("listGet", |b, i| {
        b.set_current_key(&key(i))?;
        for v in list.get(b)? {
            black_box(v?);
        }
    });
    run!("mapGet", |b, i| {
        b.set_current_key(&key(i))?;
        black_box(map.get(b, &(i % USER_KEYS))?);
    });
    run!("mapUpdate", |b, i| {
        b.set_current_key(&key(i))?;
        map.put(b, &(i % USER_KEYS), &1.5)?;
    });
    // Every pass over the keys resets the lists to 4 values, so that they stay short.
    run!("listAdd", |b, i| {
        b.set_current_key(&key(i))?;
        list.add(b, &i)?;
        if i % keys == keys - 1 {
            for k in 0..keys {
                b.set_current_key(&k)?;
                list.update(b, &[1, 2, 3, 4])?;
            }
        }
    });
    // Each entry once in KEYS * 10 operations; later passes find only deletes.
    run!("mapRemove", |b, i| {
        let i = i % (keys * USER_KEYS);
        b.set_current_key(&key(i))?;
        map.remove(b, &(i / keys))?;
    });
    run!("mapIterator", |b, i| {
        b.set_current_key(&key(i))?;
        let mut it = map.iter(b)?;
        while let Some(e) = it.next_entry()? {
            black_box(e);
        }
    });
    // New keys, after all the above: the state grows by OPS keys (or map entries).
    run!("valueAdd", |b, i| {
        b.set_current_key(&(keys + i))?;
        value.update(b, &i)?;
    });
    run!("mapAdd", |b, i| {
        b.set_current_key(&(keys + ops + i))?;
        map.put(b, &(i % USER_KEYS), &1.5)?;
    });
    Ok(())
}
