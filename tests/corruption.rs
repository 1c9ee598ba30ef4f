//! Damaged segment files: a flipped bit or a truncation anywhere gives a typed error that names
//! the file and an offset, never a panic or a wrong answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eddy::io::FaultFs;
use eddy::store::{Store, StoreOptions};
use eddy::Error;

const N: u32 = 400;

fn key(i: u32) -> Vec<u8> {
    let mut k = ((i % 5) as u16).to_be_bytes().to_vec();
    k.extend_from_slice(&i.to_be_bytes());
    k
}

fn value(i: u32) -> Vec<u8> {
    format!("v{i}").repeat(1 + i as usize % 9).into_bytes()
}

fn open(fs: &FaultFs) -> eddy::Result<Store> {
    StoreOptions::new().file_system(Arc::new(fs.clone())).block_size(256).open(Path::new("/db"))
}

/// A closed store with two segments: one with every key, one with every third key deleted.
fn build() -> (FaultFs, Vec<PathBuf>) {
    let fs = FaultFs::new();
    let mut s = open(&fs).unwrap();
    for i in 0..N {
        s.put(&key(i), &value(i)).unwrap();
    }
    s.flush().unwrap();
    for i in (0..N).step_by(3) {
        s.delete(&key(i)).unwrap();
    }
    s.flush().unwrap();
    let segments = s.segment_paths();
    assert_eq!(segments.len(), 2);
    s.close().unwrap();
    (fs, segments)
}

fn expected(i: u32) -> Option<Vec<u8>> {
    (!i.is_multiple_of(3)).then(|| value(i))
}

/// Reads everything; returns the first error, and panics on a wrong answer.
fn read_all(fs: &FaultFs) -> eddy::Result<()> {
    let mut s = open(fs)?;
    for i in 0..N {
        let got = s.get(&key(i))?.map(<[u8]>::to_vec);
        assert_eq!(got, expected(i), "wrong answer for key {i}");
    }
    let all = s.scan_range(&[], None)?.collect_vec()?;
    assert_eq!(all.len(), (0..N).filter(|i| i % 3 != 0).count(), "wrong scan");
    s.verify()
}

fn assert_names_file(e: &Error, file: &Path) {
    match e {
        Error::Corrupted { file: f, .. } | Error::UnsupportedVersion { file: f, .. } => {
            assert_eq!(f, file, "error names the wrong file: {e}")
        }
        other => panic!("expected a corruption error for {file:?}, got {other}"),
    }
}

#[test]
fn a_flipped_bit_anywhere_is_detected() {
    let (fs, segments) = build();
    read_all(&fs).unwrap();
    for seg in &segments {
        let len = fs.read(seg).unwrap().len() as u64;
        let step = (len / 150).max(1);
        for offset in (0..len).step_by(step as usize) {
            let damaged = copy(&fs);
            damaged.corrupt(seg, offset, 0x10).unwrap();
            match read_all(&damaged) {
                Ok(()) => panic!("flip at {offset} of {seg:?} went unnoticed"),
                Err(e) => assert_names_file(&e, seg),
            }
        }
    }
}

#[test]
fn a_truncation_anywhere_is_detected() {
    let (fs, segments) = build();
    for seg in &segments {
        let len = fs.read(seg).unwrap().len() as u64;
        for cut in (0..len).step_by((len / 60).max(1) as usize) {
            let damaged = copy(&fs);
            damaged.truncate(seg, cut).unwrap();
            let e = read_all(&damaged).expect_err("truncation went unnoticed");
            assert_names_file(&e, seg);
        }
    }
}

#[test]
fn a_missing_segment_or_damaged_manifest_is_an_error() {
    let (fs, segments) = build();
    let damaged = copy(&fs);
    damaged.write_file(&segments[0], b"").unwrap();
    assert!(read_all(&damaged).is_err());

    let manifest = Path::new("/db/MANIFEST");
    let len = fs.read(manifest).unwrap().len() as u64;
    for offset in 0..len {
        let damaged = copy(&fs);
        damaged.corrupt(manifest, offset, 0x01).unwrap();
        let e = open(&damaged).expect_err("manifest damage went unnoticed");
        assert!(
            matches!(&e, Error::Corrupted { file, .. } | Error::UnsupportedVersion { file, .. } if file == manifest),
            "{e}"
        );
    }
}

#[test]
fn a_future_format_version_is_refused() {
    let (fs, segments) = build();
    let newer = copy(&fs);
    // A newer writer's segment: version 3 (2 ^ 1) in the header (after the 4 magic bytes)
    // and in the footer (12 bytes before the end).
    let len = fs.read(&segments[1]).unwrap().len() as u64;
    newer.corrupt(&segments[1], 4, 0x01).unwrap();
    newer.corrupt(&segments[1], len - 12, 0x01).unwrap();
    let e = open(&newer).unwrap_err();
    assert!(matches!(&e, Error::UnsupportedVersion { found: 3, file, .. } if file == &segments[1]), "{e}");
}

fn copy(fs: &FaultFs) -> FaultFs {
    let copy = FaultFs::new();
    for p in fs.file_names() {
        copy.write_file(&p, &fs.read(&p).unwrap()).unwrap();
    }
    copy
}
