//! The key order of the benches, shared by `store`, `keyed_state` and the checkpoint driver.

/// A deterministic permutation of `0..n` (a xorshift-driven Fisher-Yates shuffle).
pub fn shuffled(n: u64, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut s = seed | 1;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}
