//! Compaction keeps space amplification bounded and drops overwritten, deleted and masked
//! records.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use eddy::keygroup::KeyGroupRange;
use eddy::store::{CompactionFilter, CompactionOptions, FilterDecision, Store, StoreOptions};

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

/// Holds every compaction until opened.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl CompactionFilter for Gate {
    fn filter(&self, _key: &[u8], _value: &[u8], _operand: bool, _out: &mut Vec<u8>) -> FilterDecision {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        FilterDecision::Keep
    }
}

/// A store that is only read after a burst of writes still installs the compaction that
/// finishes then (and starts the next): its reads come to merge fewer segments.
#[test]
fn reads_alone_let_compaction_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let filter: Arc<dyn CompactionFilter> = gate.clone();
    let mut s = StoreOptions::new().memory_budget(1 << 20).compaction_filter(filter).open(dir.path()).unwrap();
    // Six segments (each round fits in one region), below the write stall (16).
    for round in 0..6u32 {
        for i in 0..1_500 {
            s.put(&key(i), &[round as u8; 100]).unwrap();
        }
        s.flush().unwrap();
    }
    assert_eq!(s.stats().segments, 6);
    // A compaction started during the burst and waits at the gate.
    let before = s.stats();
    assert_eq!(before.compactions, 0, "{before:?}");
    gate.release();
    let start = Instant::now();
    while s.stats().compactions == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "no compaction installed under reads: {:?}", s.stats());
        assert_eq!(s.get(&key(7)).unwrap(), Some(&[5u8; 100][..]));
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(s.stats().segments < before.segments, "{:?} after {before:?}", s.stats());
}

/// When compaction falls behind, writes stall once the segments reach `stall_segments`, and
/// go on once compaction catches up.
#[test]
fn writes_stall_while_compaction_is_far_behind() {
    const STALL_SEGMENTS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let filter: Arc<dyn CompactionFilter> = gate.clone();
    let mut s = StoreOptions::new()
        .memory_budget(1 << 20)
        .compaction(CompactionOptions { max_segments: 3, stall_segments: STALL_SEGMENTS, ..Default::default() })
        .compaction_filter(filter)
        .open(dir.path())
        .unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let most_segments = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (written, most_segments) = (written.clone(), most_segments.clone());
        std::thread::spawn(move || {
            for i in 0..200_000u32 {
                s.put(&key(i), &[7u8; 100]).unwrap();
                written.store(i as usize + 1, Ordering::Release);
                most_segments.fetch_max(s.stats().segments, Ordering::AcqRel);
            }
            s
        })
    };
    // The writer fills regions until the segments reach the limit, then waits.
    let mut last = usize::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = written.load(Ordering::Acquire);
        assert!(now < 200_000, "the writer never stalled: {} segments at most", most_segments.load(Ordering::Acquire));
        if now == last {
            break;
        }
        last = now;
    }
    let most = most_segments.load(Ordering::Acquire);
    assert!((STALL_SEGMENTS - 1..=STALL_SEGMENTS).contains(&most), "{most} segments at most");
    gate.release();
    let mut s = writer.join().unwrap();
    s.wait_for_background().unwrap();
    assert!(s.stats().segments <= STALL_SEGMENTS, "{:?}", s.stats());
    assert_eq!(s.get(&key(123_456)).unwrap(), Some(&[7u8; 100][..]));
}

#[test]
fn a_compaction_output_is_durable_once_the_store_has_installed_it() {
    let fs = eddy::io::FaultFs::new();
    let dir = std::path::Path::new("/store");
    let mut s = StoreOptions::new().file_system(Arc::new(fs.clone())).memory_budget(1 << 20).open(dir).unwrap();
    for round in 0..3u32 {
        for i in 0..2_000 {
            s.put(&key(i), &[round as u8; 40]).unwrap();
        }
        s.flush().unwrap();
    }
    s.compact().unwrap();
    assert_eq!(s.stats().segments, 1);
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = fs
        .file_names()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| {
            let bytes = fs.read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    assert_eq!(before.len(), 1, "{:?}", before.iter().map(|(p, _)| p).collect::<Vec<_>>());
    // Power loss: only what was synced remains. The store makes no name durable (checkpoints
    // link the files they need and sync their own directory), so the test syncs the
    // directory itself; the bytes of the compaction's output must have been synced by the
    // compaction.
    use eddy::io::FileSystem;
    fs.sync_dir(dir).unwrap();
    fs.recover();
    let (path, bytes) = &before[0];
    let after = fs.read(path).ok();
    assert!(
        after.as_ref() == Some(bytes),
        "{path:?} lost bytes in the crash: {:?} of {} left",
        after.map(|a| a.len()),
        bytes.len()
    );
}

/// Regression: a keyed backend replaced the compaction filter set in its store options with
/// its TTL filter, silently. The two now run in turn: the TTL filter first, the caller's on
/// what it keeps, and a record either removes is gone.
#[test]
fn a_keyed_backend_runs_the_callers_compaction_filter_beside_its_ttl_filter() {
    use eddy::codec::U64;
    use eddy::state::{KeyedBackend, ManualClock, TtlConfig, TtlVisibility, ValueStateDescriptor};

    /// Removes every record whose value is a `u64` of a million or more.
    struct DropLarge(AtomicUsize);
    impl CompactionFilter for DropLarge {
        fn filter(&self, _: &[u8], value: &[u8], _: bool, _: &mut Vec<u8>) -> FilterDecision {
            self.0.fetch_add(1, Ordering::Relaxed);
            if <[u8; 8]>::try_from(value).is_ok_and(|v| u64::from_be_bytes(v) >= 1_000_000) {
                FilterDecision::Remove
            } else {
                FilterDecision::Keep
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let user = Arc::new(DropLarge(AtomicUsize::new(0)));
    let opts = StoreOptions::new().memory_budget(1 << 20).compaction_filter(user.clone());
    let mut b = KeyedBackend::builder(U64)
        .clock(Arc::new(clock.clone()))
        .store_options(opts)
        .open(dir.path().join("b"))
        .unwrap();
    let ttl = TtlConfig::new(Duration::from_millis(10))
        .visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp)
        .cleanup_in_compaction(true);
    let expiring = b.state(ValueStateDescriptor::new("expiring", U64).ttl(ttl)).unwrap();
    let doomed = b.state(ValueStateDescriptor::new("doomed", U64)).unwrap();
    let kept = b.state(ValueStateDescriptor::new("kept", U64)).unwrap();
    for k in 0..100u64 {
        b.set_current_key(&k).unwrap();
        expiring.update(&mut b, &k).unwrap();
        doomed.update(&mut b, &(k + 1_000_000)).unwrap();
        kept.update(&mut b, &k).unwrap();
    }
    clock.advance(20);
    b.store().flush().unwrap();
    b.store().compact().unwrap();
    assert!(user.0.load(Ordering::Relaxed) > 0, "the caller's filter ran");
    for k in 0..100u64 {
        b.set_current_key(&k).unwrap();
        assert_eq!(expiring.get(&mut b).unwrap(), None, "the TTL filter removed it in compaction");
        assert_eq!(doomed.get(&mut b).unwrap(), None, "the caller's filter removed it");
        assert_eq!(kept.get(&mut b).unwrap(), Some(k));
    }
}
