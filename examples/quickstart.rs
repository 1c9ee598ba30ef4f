//! A first look at the store: keys routed to key groups the way Flink routes them, point
//! reads and writes, appends, ordered scans of one key group, dropping a key-group range (as
//! a rescaled subtask does with the groups it no longer owns), and a clean close and reopen.
//!
//! Run with `cargo run --release --example quickstart`.

use eddy::keygroup::{hash_bytes, java_hash_str, range_for_subtask, KeyGroupRange, MaxParallelism};
use eddy::store::StoreOptions;

/// A store key: the key group (2 bytes, big-endian) and then the key's bytes.
fn store_key(max_parallelism: MaxParallelism, user_key: &str) -> Vec<u8> {
    // `java_hash_str` routes exactly like Flink does for a String key; `hash_bytes` is the
    // default for keys of any other type.
    let kg = max_parallelism.key_group(java_hash_str(user_key));
    let mut k = kg.to_be_bytes().to_vec();
    k.extend_from_slice(user_key.as_bytes());
    k
}

fn main() -> eddy::Result<()> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let max_p = MaxParallelism::new(128)?;
    let mut store = StoreOptions::new().memory_budget(64 << 20).open(dir.path())?;

    // Point writes and reads.
    for (user, visits) in [("alice", 3u64), ("bob", 5), ("carol", 8), ("dave", 13)] {
        store.put(&store_key(max_p, user), &visits.to_le_bytes())?;
    }
    let alice = store_key(max_p, "alice");
    let visits = u64::from_le_bytes(store.get(&alice)?.expect("alice").try_into().expect("8 bytes"));
    println!("alice: {visits} visits (key group {})", u16::from_be_bytes([alice[0], alice[1]]));

    // Appends without reading: how list state adds elements.
    let log = store_key(max_p, "bob/log");
    for event in ["login", "click", "logout"] {
        store.merge(&log, format!("{event};").as_bytes())?;
    }
    println!("bob/log: {}", String::from_utf8_lossy(store.get(&log)?.expect("log")));

    // State larger than one region: flush to a segment file, then read through it.
    store.flush()?;
    println!(
        "after flush: {} segment(s), alice still has {} bytes",
        store.stats().segments,
        store.get(&alice)?.map_or(0, <[u8]>::len)
    );

    // Subtask 0 of 2 owns key groups 0..=63; scan what it owns, in key order.
    let owned = range_for_subtask(max_p.get(), 2, 0)?;
    let mut it = store.scan_key_groups(owned)?;
    while let Some((k, _)) = it.next_entry()? {
        println!("subtask 0 of 2 owns {:?}", String::from_utf8_lossy(&k[2..]));
    }
    drop(it);

    // Rescaled to 2 subtasks, this backend keeps only subtask 0's key groups.
    store.drop_key_groups(KeyGroupRange::new(owned.end() + 1, 127)?)?;
    let left = store.scan_range(&[], None)?.collect_vec()?.len();
    println!("after dropping key groups {}..=127: {left} keys left", owned.end() + 1);

    // A clean close writes the manifest; reopening starts from exactly this state.
    store.close()?;
    let mut store = StoreOptions::new().open(dir.path())?;
    println!(
        "reopened: {} keys, hash_bytes(\"alice\") = {}",
        store.scan_range(&[], None)?.collect_vec()?.len(),
        hash_bytes(b"alice")
    );
    store.close()
}
