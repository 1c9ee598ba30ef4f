//! Timers against a model: registration is deduplicated, deletion works, timers fire in
//! timestamp order up to the watermark (or processing time) with their key set as the current
//! key, and timers stay in the store across flushes and compactions.

use std::collections::BTreeSet;
use std::sync::Arc;

use eddy::codec::{U32, U64};
use eddy::io::FaultFs;
use eddy::state::{KeyedBackend, Timer, ValueStateDescriptor};
use eddy::store::StoreOptions;
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

#[derive(Clone, Debug)]
enum Op {
    SetKey(u64),
    Register { processing: bool, ns: u32, ts: i64 },
    Delete { processing: bool, ns: u32, ts: i64 },
    Advance { processing: bool, to: i64 },
    Flush,
    Compact,
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let processing = bool::arbitrary(g);
        let ns = u32::arbitrary(g) % 2;
        let ts = i64::from(u8::arbitrary(g) % 60) - 5;
        match u8::arbitrary(g) % 10 {
            0 | 1 => Op::SetKey(u64::arbitrary(g) % 20),
            2..=4 => Op::Register { processing, ns, ts },
            5 => Op::Delete { processing, ns, ts },
            6 | 7 => Op::Advance { processing, to: i64::from(u8::arbitrary(g) % 70) - 5 },
            8 => Op::Flush,
            _ => Op::Compact,
        }
    }
}

fn backend() -> KeyedBackend<U64> {
    let opts = StoreOptions::new().file_system(Arc::new(FaultFs::new())).memory_budget(256 << 10);
    KeyedBackend::builder(U64).max_parallelism(32).store_options(opts).open("/t").unwrap()
}

fn run(ops: Vec<Op>) -> TestResult {
    let mut b = backend();
    let timers = b.timer_service_in("timers", U32).unwrap();
    // (processing, ts, key, ns)
    let mut model: BTreeSet<(bool, i64, u64, u32)> = BTreeSet::new();
    let mut key = 0;
    b.set_current_key(&key).unwrap();
    for op in ops {
        match op {
            Op::SetKey(k) => {
                key = k;
                b.set_current_key(&k).unwrap();
            }
            Op::Register { processing, ns, ts } => {
                if processing {
                    timers.register_processing_time(&mut b, &ns, ts).unwrap();
                } else {
                    timers.register_event_time(&mut b, &ns, ts).unwrap();
                }
                model.insert((processing, ts, key, ns));
            }
            Op::Delete { processing, ns, ts } => {
                if processing {
                    timers.delete_processing_time(&mut b, &ns, ts).unwrap();
                } else {
                    timers.delete_event_time(&mut b, &ns, ts).unwrap();
                }
                model.remove(&(processing, ts, key, ns));
            }
            Op::Advance { processing, to } => {
                let mut fired: Vec<Timer<u64, u32>> = Vec::new();
                let on_timer = |b: &mut KeyedBackend<U64>, t: Timer<u64, u32>| {
                    assert_eq!(b.current_key().unwrap(), t.key);
                    fired.push(t);
                    Ok(())
                };
                let n = if processing {
                    timers.advance_processing_time(&mut b, to, on_timer).unwrap()
                } else {
                    timers.advance_watermark(&mut b, to, on_timer).unwrap()
                };
                assert_eq!(n, fired.len());
                assert!(fired.windows(2).all(|w| w[0].timestamp <= w[1].timestamp), "out of order: {fired:?}");
                let due: BTreeSet<(bool, i64, u64, u32)> =
                    model.iter().filter(|t| t.0 == processing && t.1 <= to).copied().collect();
                let got: BTreeSet<(bool, i64, u64, u32)> =
                    fired.iter().map(|t| (processing, t.timestamp, t.key, t.namespace)).collect();
                assert_eq!(got.len(), fired.len(), "a timer fired twice");
                assert_eq!(got, due);
                for t in due {
                    model.remove(&t);
                }
                // Firing leaves some key current; put ours back.
                b.set_current_key(&key).unwrap();
            }
            Op::Flush => b.store().flush().unwrap(),
            Op::Compact => b.store().compact().unwrap(),
        }
    }
    // What is left is what the service says comes next, and what it lists as pending.
    for processing in [false, true] {
        let mut pending = BTreeSet::new();
        let list = |b: &mut KeyedBackend<U64>, t: Timer<u64, u32>| {
            assert_eq!(b.current_key().unwrap(), t.key);
            assert!(pending.insert((processing, t.timestamp, t.key, t.namespace)), "listed twice: {t:?}");
            Ok(())
        };
        let n = if processing {
            timers.for_each_processing_time_timer(&mut b, list).unwrap()
        } else {
            timers.for_each_event_time_timer(&mut b, list).unwrap()
        };
        let want: BTreeSet<_> = model.iter().filter(|t| t.0 == processing).copied().collect();
        assert_eq!(n, want.len());
        assert_eq!(pending, want);
        let want = model.iter().filter(|t| t.0 == processing).map(|t| t.1).min();
        let got = if processing {
            timers.next_processing_time(&mut b).unwrap()
        } else {
            timers.next_event_time(&mut b).unwrap()
        };
        assert_eq!(got, want);
    }
    TestResult::passed()
}

#[test]
fn timers_match_the_model() {
    QuickCheck::new().rng(Gen::new(200)).tests(200).quickcheck(run as fn(Vec<Op>) -> TestResult);
}

#[test]
fn timers_registered_while_firing_fire_in_the_same_advance_in_order() {
    let mut b = backend();
    let timers = b.timer_service("t").unwrap();
    let count = b.state(ValueStateDescriptor::of::<u64>("count")).unwrap();
    for k in 0..50u64 {
        b.set_current_key(&k).unwrap();
        timers.register_event_time(&mut b, &(), 10).unwrap();
        // Deleted again below by the timer of key 0.
        timers.register_event_time(&mut b, &(), 30).unwrap();
    }
    let mut fired = Vec::new();
    let n = timers
        .advance_watermark(&mut b, 100, |b, t| {
            fired.push((t.timestamp, t.key));
            let c = count.get(b)?.unwrap_or(0);
            count.update(b, &(c + 1))?;
            if t.timestamp == 10 {
                // Each key re-arms once, earlier than its pending 30.
                timers.register_event_time(b, &(), 20)?;
            }
            if t.timestamp == 10 && t.key == 0 {
                for k in 1..50u64 {
                    b.set_current_key(&k)?;
                    timers.delete_event_time(b, &(), 30)?;
                }
                b.set_current_key(&0)?;
            }
            Ok(())
        })
        .unwrap();
    // 50 at 10, 50 at 20, and only key 0's 30.
    assert_eq!(n, 101);
    assert!(fired.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(fired.iter().filter(|f| f.0 == 30).count(), 1);
    for k in 0..50u64 {
        b.set_current_key(&k).unwrap();
        assert_eq!(count.get(&mut b).unwrap(), Some(if k == 0 { 3 } else { 2 }));
    }
    assert_eq!(timers.next_event_time(&mut b).unwrap(), None);
}

#[test]
fn registering_twice_fires_once() {
    let mut b = backend();
    let timers = b.timer_service("t").unwrap();
    b.set_current_key(&7).unwrap();
    for _ in 0..3 {
        timers.register_processing_time(&mut b, &(), 5).unwrap();
    }
    let n = timers.advance_processing_time(&mut b, 5, |_, _| Ok(())).unwrap();
    assert_eq!(n, 1);
    assert_eq!(timers.advance_processing_time(&mut b, 50, |_, _| Ok(())).unwrap(), 0);
}

/// Flink's `InternalTimerService::forEachEventTimeTimer` / `forEachProcessingTimeTimer`: every
/// pending timer of the domain is visited once with its key current, nothing fires, and the
/// timers are still there afterwards (also after a restore).
#[test]
fn pending_timers_can_be_listed_with_their_key_current_without_firing() {
    let mut b = backend();
    let timers = b.timer_service_in("t", U32).unwrap();
    let seen = b.state(ValueStateDescriptor::of::<u64>("seen")).unwrap();
    for k in 0..40u64 {
        b.set_current_key(&k).unwrap();
        timers.register_event_time(&mut b, &(k as u32 % 3), 100 + k as i64).unwrap();
        timers.register_processing_time(&mut b, &0, 5_000 + k as i64).unwrap();
    }
    b.store().flush().unwrap();
    let mut listed = BTreeSet::new();
    let n = timers
        .for_each_event_time_timer(&mut b, |b, t| {
            // The callback may use the timer's key's state, as in Flink.
            seen.update(b, &t.key)?;
            listed.insert((t.key, t.namespace, t.timestamp));
            Ok(())
        })
        .unwrap();
    assert_eq!(n, 40);
    assert_eq!(listed, (0..40u64).map(|k| (k, k as u32 % 3, 100 + k as i64)).collect());
    let mut processing = 0;
    timers
        .for_each_processing_time_timer(&mut b, |_, t| {
            assert_eq!(t.timestamp - 5_000, t.key as i64);
            processing += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(processing, 40);
    for k in 0..40u64 {
        b.set_current_key(&k).unwrap();
        assert_eq!(seen.get(&mut b).unwrap(), Some(k));
    }
    // Listing fired nothing.
    assert_eq!(timers.next_event_time(&mut b).unwrap(), Some(100));
    assert_eq!(timers.advance_watermark(&mut b, i64::MAX, |_, _| Ok(())).unwrap(), 40);
}

/// Flink's `currentWatermark()` is `Long.MIN_VALUE` until the first watermark, then the last
/// watermark advanced to (already while that advance fires its timers); `currentProcessingTime()`
/// is the processing-time clock, here the backend's clock.
#[test]
fn the_timer_service_reports_its_watermark_and_the_clock() {
    struct Fixed;
    impl eddy::state::Clock for Fixed {
        fn now_millis(&self) -> i64 {
            1_234
        }
    }
    let opts = StoreOptions::new().file_system(Arc::new(FaultFs::new()));
    let mut b = KeyedBackend::builder(U64).clock(Arc::new(Fixed)).store_options(opts).open("/t").unwrap();
    let timers = b.timer_service("t").unwrap();
    assert_eq!(timers.current_watermark(&b).unwrap(), i64::MIN);
    assert_eq!(timers.current_processing_time(&b).unwrap(), 1_234);
    b.set_current_key(&1).unwrap();
    timers.register_event_time(&mut b, &(), 10).unwrap();
    let mut during = None;
    timers
        .advance_watermark(&mut b, 20, |b, _| {
            during = Some(timers.current_watermark(b)?);
            Ok(())
        })
        .unwrap();
    assert_eq!(during, Some(20));
    assert_eq!(timers.current_watermark(&b).unwrap(), 20);
    // Another service of the same backend has its own watermark.
    let other = b.timer_service("other").unwrap();
    assert_eq!(other.current_watermark(&b).unwrap(), i64::MIN);
}
