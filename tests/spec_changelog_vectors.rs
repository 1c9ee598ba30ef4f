//! The changelog file format (`format-spec/changelog.md`) against its vector: the bytes the
//! page shows are the bytes the writer produces, and the reader gives back the records the page
//! lists. To rewrite the vector after a format change:
//! cargo test --test spec_changelog_vectors -- --ignored regenerate

mod spec_common;

use eddy::format::changelog::{
    encode_header, frame_header, put_record, ChangelogError, ChangelogReader, CHANGELOG_HEADER_LEN, CHANGELOG_MAGIC,
    CHANGELOG_VERSION, FRAME_HEADER_LEN,
};
use eddy::format::RecordKind;
use spec_common::{le_u32, le_u64, vector, vectors_dir};

const VECTOR: &str = "changelog-v1.log";

/// A record: kind, key, group length, value.
type Record = (RecordKind, Vec<u8>, usize, Vec<u8>);

/// The records of the vector, frame by frame.
fn frames() -> Vec<Vec<Record>> {
    vec![
        vec![
            (RecordKind::Put, vec![0x00, 0x05, 0x00, 0x01, 0x61], 4, vec![0x2a]),
            (RecordKind::Merge, vec![0x00, 0x05, 0x00, 0x02, 0x62], 0, vec![0x2b]),
        ],
        vec![(RecordKind::Delete, vec![0x00, 0x05, 0x00, 0x01, 0x61], 4, vec![])],
    ]
}

fn write() -> Vec<u8> {
    let mut out = encode_header(3).to_vec();
    for f in frames() {
        let mut payload = Vec::new();
        for (kind, key, group_len, value) in &f {
            put_record(&mut payload, *kind, key, *group_len, value);
        }
        out.extend_from_slice(&frame_header(&payload));
        out.extend_from_slice(&payload);
    }
    out
}

#[test]
#[ignore = "rewrites the committed vector; run only for a format change"]
fn regenerate() {
    std::fs::write(vectors_dir().join(VECTOR), write()).unwrap();
}

#[test]
fn constants_are_those_of_the_spec() {
    assert_eq!(CHANGELOG_MAGIC, *b"EDLG");
    assert_eq!(CHANGELOG_VERSION, 1);
    assert_eq!(CHANGELOG_HEADER_LEN, 20);
    assert_eq!(FRAME_HEADER_LEN, 8);
}

#[test]
fn the_vector_is_what_the_writer_writes_byte_for_byte() {
    let v = vector(VECTOR);
    assert_eq!(v, write());
    // The bytes as `changelog.md` lays them out.
    assert_eq!(v.len(), 65);
    assert_eq!(&v[0..4], b"EDLG");
    assert_eq!(le_u32(&v, 4), 1);
    assert_eq!(le_u64(&v, 8), 3);
    assert_eq!(le_u32(&v, 16), crc32fast::hash(&v[0..16]));
    assert_eq!(le_u32(&v, 20), 20);
    assert_eq!(le_u32(&v, 24), crc32fast::hash(&v[28..48]));
    assert_eq!(&v[28..38], &[0x00, 0x04, 0x05, 0x01, 0x00, 0x05, 0x00, 0x01, 0x61, 0x2a]);
    assert_eq!(&v[38..48], &[0x02, 0x00, 0x05, 0x01, 0x00, 0x05, 0x00, 0x02, 0x62, 0x2b]);
    assert_eq!(le_u32(&v, 48), 9);
    assert_eq!(le_u32(&v, 52), crc32fast::hash(&v[56..65]));
    assert_eq!(&v[56..65], &[0x01, 0x04, 0x05, 0x00, 0x00, 0x05, 0x00, 0x01, 0x61]);
}

#[test]
fn the_vector_reads_back_as_its_records() {
    let v = vector(VECTOR);
    let mut r = ChangelogReader::new(&v).unwrap();
    assert_eq!(r.log_seq(), 3);
    let mut got = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        got.push((rec.kind, rec.key.to_vec(), rec.group_len, rec.value.to_vec()));
    }
    assert_eq!(got, frames().concat());
}

#[test]
fn every_changed_byte_and_cut_of_the_vector_is_an_error_except_between_frames() {
    let v = vector(VECTOR);
    let read = |b: &[u8]| -> Result<usize, ChangelogError> {
        let mut r = ChangelogReader::new(b)?;
        let mut n = 0;
        while r.next()?.is_some() {
            n += 1;
        }
        Ok(n)
    };
    for i in 0..v.len() {
        for x in [0x01u8, 0x80] {
            let mut bad = v.clone();
            bad[i] ^= x;
            assert!(matches!(read(&bad), Err(ChangelogError::Corrupt(_))), "change at {i}");
        }
    }
    for cut in 0..v.len() {
        match cut {
            20 => assert_eq!(read(&v[..cut]).unwrap(), 0),
            48 => assert_eq!(read(&v[..cut]).unwrap(), 2),
            _ => assert!(read(&v[..cut]).is_err(), "cut at {cut}"),
        }
    }
}
