//! State many times larger than the memory budget: the store spills to segments, keeps its
//! memory near the budget, and reads every key back.

use eddy::store::StoreOptions;

const BUDGET: usize = 2 << 20;
const KEYS: u64 = 200_000;
const VALUE_LEN: usize = 100;

fn key(i: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(&((i % 128) as u16).to_be_bytes());
    k[2..].copy_from_slice(&i.to_be_bytes());
    k
}

fn value(i: u64) -> Vec<u8> {
    let mut v = vec![0u8; VALUE_LEN];
    for (j, b) in v.iter_mut().enumerate() {
        *b = (i as usize).wrapping_mul(31).wrapping_add(j) as u8;
    }
    v
}

#[test]
fn state_ten_times_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StoreOptions::new().memory_budget(BUDGET).open(dir.path()).unwrap();
    let mut peak = 0;
    // A scrambled insertion order, as keyed state sees it (7919 is prime to KEYS, so this is
    // a permutation).
    let order = |i: u64| (i * 7919) % KEYS;
    let mut written = 0u64;
    for i in 0..KEYS * 2 {
        let k = order(i % KEYS);
        s.put(&key(k), &value(k)).unwrap();
        written += (10 + VALUE_LEN) as u64;
        if i % 10_000 == 0 {
            peak = peak.max(s.stats().memory_bytes());
        }
    }
    s.wait_for_background().unwrap();
    let stats = s.stats();
    assert!(written > 20 * BUDGET as u64);
    assert!(stats.segments >= 1 && stats.flushes > 10, "{stats:?}");
    assert!(peak <= BUDGET + BUDGET / 4, "memory peaked at {peak} bytes for a budget of {BUDGET}: {stats:?}");
    for i in (0..KEYS).step_by(7) {
        assert_eq!(s.get(&key(i)).unwrap(), Some(&value(i)[..]), "key {i}");
    }
    let mut it = s.scan_range(&[], None).unwrap();
    let mut n = 0;
    let mut prev: Option<Vec<u8>> = None;
    while let Some((k, v)) = it.next_entry().unwrap() {
        assert!(prev.as_deref() < Some(k));
        assert_eq!(v.len(), VALUE_LEN);
        prev = Some(k.to_vec());
        n += 1;
    }
    drop(it);
    assert_eq!(n, KEYS);
    assert!(s.stats().memory_bytes() <= BUDGET + BUDGET / 4, "{:?}", s.stats());
    s.close().unwrap();
}
