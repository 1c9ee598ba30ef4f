//! `format-spec/job-checkpoint.md` against the code: the committed vector decodes to what the
//! spec says, encodes back to the same bytes, and every kind of damage is a typed error.

use std::path::Path;

use eddy::runtime::JobCheckpoint;
use eddy::{Corruption, Error};

const VECTOR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/format-spec/vectors/job-checkpoint-v1.txt");

fn example() -> JobCheckpoint {
    JobCheckpoint { id: 7, max_parallelism: 128, operators: vec![("numbers".into(), 2), ("count".into(), 3)] }
}

#[test]
fn the_vector_is_what_the_spec_says() {
    let bytes = std::fs::read(VECTOR).expect("the vector");
    let text = std::str::from_utf8(&bytes).unwrap();
    let body = "eddy job checkpoint 1\nid 7\nmax_parallelism 128\noperator numbers 2\noperator count 3\n";
    assert_eq!(text, format!("{body}crc32 {:08x}\n", crc32fast::hash(body.as_bytes())));
    assert_eq!(JobCheckpoint::decode(Path::new(VECTOR), &bytes).unwrap(), example());
    assert_eq!(example().encode(), text);
}

/// Rewrites the vector (run when the format changes, with a new version).
#[test]
#[ignore]
fn regenerate() {
    std::fs::write(VECTOR, example().encode()).unwrap();
}

fn decode(text: &str) -> eddy::Result<JobCheckpoint> {
    JobCheckpoint::decode(Path::new("chk"), text.as_bytes())
}

fn sealed(body: &str) -> String {
    format!("{body}crc32 {:08x}\n", crc32fast::hash(body.as_bytes()))
}

#[test]
fn damage_is_a_typed_error() {
    let good = example().encode();
    // A flipped byte: the checksum.
    let bad = good.replacen("count 3", "count 4", 1);
    assert!(matches!(decode(&bad), Err(Error::Corrupted { kind: Corruption::ChecksumMismatch { .. }, .. })));
    // Truncated anywhere.
    for n in 0..good.len() {
        assert!(decode(&good[..n]).is_err(), "truncated to {n}");
    }
    // Another version.
    let v2 = sealed("eddy job checkpoint 2\nid 7\nmax_parallelism 128\n");
    assert!(matches!(decode(&v2), Err(Error::UnsupportedVersion { found: 2, supported: 1, .. })));
    // Well sealed but malformed.
    for body in [
        "eddy job checkpoint 1\nid x\nmax_parallelism 128\n",
        "eddy job checkpoint 1\nid 7\nmax_parallelism 99999999999\n",
        "eddy job checkpoint 1\nid 7\nmax_parallelism 128\noperator a 0\n",
        "eddy job checkpoint 1\nid 7\nmax_parallelism 128\noperator ../x 1\n",
        "eddy job checkpoint 1\nid 7\nmax_parallelism 128\noperator _job 1\n",
        "eddy job checkpoint 1\nid 7\nmax_parallelism 128\noperator a 1\noperator a 2\n",
        "eddy job checkpoint 1\nid 7\nmax_parallelism 128\noperator a 1 extra\n",
        "something else\n",
    ] {
        assert!(matches!(decode(&sealed(body)), Err(Error::Corrupted { .. })), "{body:?}");
    }
    assert!(decode("\u{ff}\u{fe}").is_err());
}
