//! What a cache miss costs on this machine, and how much of it a short loop hides: the
//! context for the keyed-state figures in the README.
//!
//! `cargo run --release --example memory_latency` prints
//! - the time per load of a chain of dependent loads (each address comes from the previous
//!   load) through working sets of 0.25 to 64 MiB, one load per cache line in a random cycle;
//! - the time per `HashMap<u64, u64>` get (foldhash, 500,000 keys, shuffled order) alone and
//!   with a chain of dependent multiplications added to each lookup, which shortens how far
//!   ahead the processor can start the next lookups' misses;
//! - (on x86_64) the time per get with a number of independent instructions added to each
//!   lookup (four chains of register additions, no memory access, a cycle per instruction or
//!   less): what a longer loop body alone costs, because fewer lookups then fit in the
//!   processor's window of instructions in flight and fewer of their misses overlap;
//! - the rate at which fresh memory can be written the first time (a byte per 4 KiB page of a
//!   new 512 MiB anonymous map), with 4 KiB pages and with transparent huge pages asked for,
//!   as the store's arena and index ask for them: the cost of growing state.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut s = seed;
    for i in (1..n).rev() {
        v.swap(i, (xorshift(&mut s) % (i as u64 + 1)) as usize);
    }
    v
}

fn main() {
    println!("dependent loads:");
    for mib in [0.25f64, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0] {
        let lines = (mib * 1_048_576.0 / 64.0) as usize;
        let order = shuffled(lines, 0x9e37_79b9_7f4a_7c15);
        // One word per 64-byte line; each line holds the index of the next in the cycle.
        let mut next = vec![0usize; lines * 8];
        for i in 0..lines {
            next[order[i] * 8] = order[(i + 1) % lines] * 8;
        }
        let steps = 5_000_000;
        let mut p = 0usize;
        let t = Instant::now();
        for _ in 0..steps {
            p = next[p];
        }
        black_box(p);
        println!("  {mib:>5} MiB: {:6.1} ns per load", t.elapsed().as_nanos() as f64 / steps as f64);
    }

    let keys: Vec<u64> = shuffled(500_000, 42).into_iter().map(|k| k as u64).collect();
    let mut map: HashMap<u64, u64, foldhash::fast::FixedState> = HashMap::default();
    for &k in &keys {
        map.insert(k, k);
    }
    println!("HashMap<u64, u64> get, 500,000 keys:");
    for work in [0u64, 5, 10, 20, 40] {
        let rounds = 10;
        let t = Instant::now();
        for _ in 0..rounds {
            for &k in &keys {
                let mut x = k;
                for i in 0..work {
                    x = x.wrapping_mul(0x9e37) ^ (x >> 7) ^ i;
                }
                black_box(x);
                black_box(map.get(&k));
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / (rounds * keys.len()) as f64;
        println!("  with {work:>2} dependent multiplications per lookup: {ns:6.1} ns per get");
    }
    #[cfg(target_arch = "x86_64")]
    independent_work(&map, &keys);
    first_touch();
}

/// The first write to each page of a fresh anonymous map, with and without huge pages.
fn first_touch() {
    const LEN: usize = 512 << 20;
    println!("first touch of a fresh {} MiB map:", LEN >> 20);
    for huge in [false, true] {
        for _ in 0..2 {
            let mut map = memmap2::MmapOptions::new().len(LEN).map_anon().expect("an anonymous map");
            #[cfg(target_os = "linux")]
            if huge {
                let _ = map.advise(memmap2::Advice::HugePage);
            }
            let t = Instant::now();
            for page in map.chunks_mut(4096) {
                page[0] = 1;
            }
            let s = t.elapsed().as_secs_f64();
            black_box(&map);
            let pages = if huge { "huge pages asked for" } else { "4 KiB pages" };
            println!("  {pages}: {:5.2} GB/s", LEN as f64 / s / 1e9);
        }
    }
}

/// Adds `4 * $reps` register additions in four independent chains.
#[cfg(target_arch = "x86_64")]
macro_rules! adds {
    ($reps:literal, $a:ident, $b:ident, $c:ident, $d:ident) => {
        // SAFETY: the assembly only adds to four registers the compiler hands it; it reads and
        // writes no memory and leaves the stack alone, as its options say.
        #[allow(unsafe_code)]
        unsafe {
            std::arch::asm!(
                concat!(".rept ", $reps, "\n add {a}, 1\n add {b}, 1\n add {c}, 1\n add {d}, 1\n .endr"),
                a = inout(reg) $a, b = inout(reg) $b, c = inout(reg) $c, d = inout(reg) $d,
                options(nomem, nostack),
            )
        }
    };
}

#[cfg(target_arch = "x86_64")]
fn independent_work(map: &HashMap<u64, u64, foldhash::fast::FixedState>, keys: &[u64]) {
    macro_rules! run {
        ($reps:literal) => {{
            let (mut a, mut b, mut c, mut d) = (0u64, 0u64, 0u64, 0u64);
            let rounds = 4;
            let t = Instant::now();
            for _ in 0..rounds {
                for &k in keys {
                    black_box(map.get(&k));
                    adds!($reps, a, b, c, d);
                }
            }
            let ns = t.elapsed().as_nanos() as f64 / (rounds * keys.len()) as f64;
            black_box((a, b, c, d));
            println!("  with {:>3} independent instructions per lookup: {ns:6.1} ns per get", 4 * $reps);
        }};
    }
    run!(0);
    run!(10);
    run!(25);
    run!(50);
    run!(100);
    run!(150);
}
