//! Compaction keeps space amplification bounded and drops overwritten, deleted and masked
//! records.

use eddy::keygroup::KeyGroupRange;
use eddy::store::{Store, StoreOptions};

fn key(i: u32) -> Vec<u8> {
    let mut k = ((i % 64) as u16).to_be_bytes().to_vec();
    k.extend_from_slice(&i.to_be_bytes());
    k
}

fn open(dir: &std::path::Path) -> Store {
    StoreOptions::new().memory_budget(1 << 20).open(dir).unwrap()
}

#[test]
fn overwrites_keep_space_amplification_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let n = 20_000;
    let mut peak = 0;
    for round in 0..12u32 {
        for i in 0..n {
            let v: Vec<u8> = (0..100).map(|j| (i ^ round ^ j) as u8).collect();
            s.put(&key(i), &v).unwrap();
        }
        s.wait_for_background().unwrap();
        peak = peak.max(s.stats().segment_file_bytes);
    }
    s.compact().unwrap();
    let live = s.stats().segment_file_bytes;
    assert_eq!(s.stats().segments, 1);
    // The space-amplification rule merges everything once newer segments outgrow the oldest,
    // so the files never hold much more than twice the live data (plus one region in flight).
    assert!(peak <= live * 3, "peak {peak} bytes on disk for {live} bytes of live data");
    for i in (0..n).step_by(97) {
        let v = s.get(&key(i)).unwrap().unwrap().to_vec();
        assert_eq!(v[0], (i ^ 11) as u8);
    }
}

#[test]
fn deleted_and_dropped_records_leave_nothing_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    for i in 0..10_000 {
        s.put(&key(i), &[1u8; 50]).unwrap();
    }
    s.flush().unwrap();
    for i in (0..10_000).filter(|i| i % 64 < 32) {
        s.delete(&key(i)).unwrap();
    }
    s.flush().unwrap();
    // Key groups 32..=47 are dropped by masking, 48..=63 stay.
    s.drop_key_groups(KeyGroupRange::new(32, 47).unwrap()).unwrap();
    let expected = (0..10_000).filter(|i| i % 64 >= 48).count();
    assert_eq!(s.scan_range(&[], None).unwrap().collect_vec().unwrap().len(), expected);
    s.compact().unwrap();
    let stats = s.stats();
    assert_eq!(stats.segments, 1);
    let all = s.scan_range(&[], None).unwrap().collect_vec().unwrap();
    assert_eq!(all.len(), expected);
    assert!(all.iter().all(|(k, _)| u16::from_be_bytes([k[0], k[1]]) >= 48));
    // Everything deleted: nothing is left on disk.
    for (k, _) in all {
        s.delete(&k).unwrap();
    }
    s.compact().unwrap();
    assert_eq!(s.stats().segments, 0);
    assert_eq!(s.stats().segment_file_bytes, 0);
}
