//! Faults through the fault-injecting file system: I/O errors latch the store, crashes at any
//! operation leave the last clean close intact, and nothing already durable is lost.

use std::path::Path;
use std::sync::Arc;

use eddy::io::{FaultFs, FaultKind};
use eddy::store::{Store, StoreOptions};
use eddy::Error;

fn options(fs: &FaultFs) -> StoreOptions {
    StoreOptions::new().file_system(Arc::new(fs.clone())).memory_budget(256 << 10).block_size(512)
}

fn open(fs: &FaultFs) -> eddy::Result<Store> {
    options(fs).open(Path::new("/db"))
}

fn key(i: u32) -> Vec<u8> {
    let mut k = ((i % 16) as u16).to_be_bytes().to_vec();
    k.extend_from_slice(&i.to_be_bytes());
    k
}

fn value(i: u32, round: u32) -> Vec<u8> {
    format!("value-{i}-{round}").into_bytes().repeat(4)
}

/// Writes `n` keys in `round`, flushes and compacts along the way, closes cleanly.
fn write_round(fs: &FaultFs, n: u32, round: u32) -> eddy::Result<()> {
    let mut s = open(fs)?;
    for i in 0..n {
        s.put(&key(i), &value(i, round))?;
        if i % 3 == 0 {
            s.merge(&key(i), b"+")?;
        }
        if i == n / 2 {
            s.flush()?;
        }
    }
    s.compact()?;
    s.close()
}

fn expected(i: u32, round: u32) -> Vec<u8> {
    let mut v = value(i, round);
    if i.is_multiple_of(3) {
        v.push(b'+');
    }
    v
}

/// Which round the store holds: every key must agree on one.
fn round_of(fs: &FaultFs, n: u32, rounds: &[u32]) -> Option<u32> {
    let mut s = open(fs).expect("reopen after a fault");
    let mut found = None;
    for i in 0..n {
        let got = s.get(&key(i)).expect("read").map(<[u8]>::to_vec);
        let r = rounds.iter().copied().find(|r| got.as_deref() == Some(&expected(i, *r)[..]));
        match (found, r) {
            (_, None) => panic!("key {i} holds {got:?}, which is no round's value"),
            (None, Some(r)) => found = Some(r),
            (Some(f), Some(r)) => assert_eq!(f, r, "key {i} is from round {r}, others from {f}"),
        }
    }
    s.verify().expect("verify");
    found
}

/// A new file system holding the same files as `fs`.
fn copy_of(fs: &FaultFs) -> FaultFs {
    let copy = FaultFs::new();
    for p in fs.file_names() {
        copy.write_file(&p, &fs.read(&p).unwrap()).unwrap();
    }
    copy
}

/// The number of mutating file-system operations that one more round takes.
fn ops_of_a_round(fs: &FaultFs, n: u32) -> u64 {
    let copy = copy_of(fs);
    let before = copy.ops();
    write_round(&copy, n, 2).unwrap();
    copy.ops() - before
}

#[test]
fn crash_at_every_operation_keeps_the_last_clean_close() {
    let n = 600;
    let fs = FaultFs::new();
    write_round(&fs, n, 1).unwrap();
    let total = ops_of_a_round(&fs, n);
    assert!(total > 10, "a round should take many operations, took {total}");
    let mut seen = [false; 2];
    for at in 0..total {
        let fs = copy_of(&fs);
        fs.fail_at(fs.ops() + at, FaultKind::Crash);
        // A crash after the commit point (while removing files the new manifest no longer
        // names) may go unreported: the round is complete by then.
        let committed = write_round(&fs, n, 2).is_ok();
        fs.recover();
        // The manifest's rename is the commit point: before it round 1, after it round 2.
        let round = round_of(&fs, n, &[1, 2]).expect("the store came back empty");
        if committed {
            assert_eq!(round, 2, "crash at op {at}: a completed round was lost");
        }
        seen[round as usize - 1] = true;
    }
    assert!(seen[0] && seen[1], "the crash points should cover both outcomes: {seen:?}");
}

#[test]
fn a_failed_write_latches_the_store_and_loses_nothing_durable() {
    let n = 2000;
    let fs = FaultFs::new();
    write_round(&fs, n, 1).unwrap();
    let mut s = open(&fs).unwrap();
    // Every mutating operation from now on fails.
    fs.fail_at(fs.ops(), FaultKind::ErrorForever);
    let mut first_error = None;
    for i in 0..200_000u32 {
        if let Err(e) = s.put(&key(i % n), &value(i % n, 3)) {
            first_error = Some(e);
            break;
        }
    }
    let e = first_error.expect("the store kept accepting writes while it could not flush");
    // The flush thread met it; the error keeps it as its source.
    assert!(
        matches!(&e, Error::Background { worker: "flush", source } if matches!(**source, Error::Io { .. })),
        "first error should be the flush's I/O error: {e}"
    );
    // Latched: later writes are refused even though the disk might work again.
    fs.disarm();
    assert!(matches!(s.put(&key(0), b"x"), Err(Error::Poisoned)));
    assert!(matches!(s.delete(&key(0)), Err(Error::Poisoned)));
    assert!(matches!(s.flush(), Err(Error::Poisoned)));
    // Reads still answer from memory.
    assert!(s.get(&key(1)).unwrap().is_some());
    assert!(s.close().is_err());
    // What was durable (round 1) is intact.
    assert_eq!(round_of(&fs, n, &[1]), Some(1));
}

#[test]
fn an_error_at_every_operation_fails_cleanly_and_the_next_attempt_succeeds() {
    let n = 600;
    let fs = FaultFs::new();
    write_round(&fs, n, 1).unwrap();
    let total = ops_of_a_round(&fs, n);
    for at in 0..total {
        let fs2 = copy_of(&fs);
        fs2.fail_at(fs2.ops() + at, FaultKind::Error);
        let first = write_round(&fs2, n, 2);
        let round = round_of(&fs2, n, &[1, 2]).unwrap();
        if first.is_ok() {
            assert_eq!(round, 2);
        }
        // The store is usable again after a reopen.
        write_round(&fs2, n, 3).unwrap();
        assert_eq!(round_of(&fs2, n, &[3]), Some(3));
    }
}

#[test]
fn a_store_directory_cannot_be_opened_twice() {
    let fs = FaultFs::new();
    let _a = open(&fs).unwrap();
    let b = open(&fs);
    assert!(matches!(b, Err(Error::Misuse(eddy::Misuse::AlreadyOpen))), "{b:?}");
}

#[test]
fn a_crash_without_close_collects_the_leftovers() {
    let fs = FaultFs::new();
    write_round(&fs, 500, 1).unwrap();
    {
        let mut s = open(&fs).unwrap();
        for i in 0..500 {
            s.put(&key(i), &value(i, 2)).unwrap();
        }
        s.flush().unwrap();
        fs.crash();
        drop(s);
    }
    fs.recover();
    let before: Vec<_> = fs.file_names();
    assert_eq!(round_of(&fs, 500, &[1]), Some(1));
    let after: Vec<_> = fs.file_names();
    assert!(after.len() <= before.len());
    // Only the manifest, the lock and the segments it names remain.
    let s = open(&fs).unwrap();
    let live: Vec<_> = s.segment_paths();
    for p in fs.file_names() {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(name == "MANIFEST" || name == "LOCK" || live.contains(&p), "leftover file {p:?}");
    }
}
