//! The store's persisted version: its segments, their masks and the serializer versions (the
//! schema tag) that wrote each, stamped at the write and carried through flush, compaction,
//! close and reopen, checkpoints and restores; reads return the tag with the bytes.

use std::path::Path;
use std::sync::Arc;

use eddy::checkpoint::{CheckpointOptions, CheckpointStorage, Checkpointer, LocalDirStorage, RestoreSource};
use eddy::codec::{U32, U64};
use eddy::format::checkpoint::CheckpointManifest;
use eddy::format::SchemaTag;
use eddy::io::FaultFs;
use eddy::state::{KeyedBackend, OperatorStateBackend, ValueStateDescriptor};
use eddy::store::StoreOptions;

fn key(i: u32) -> Vec<u8> {
    let mut k = vec![0, (i % 4) as u8];
    k.extend_from_slice(&i.to_be_bytes());
    k
}

fn tags(version: &eddy::format::store_manifest::StoreManifest) -> Vec<SchemaTag> {
    version.segments.iter().map(|s| s.tag.clone()).collect()
}

#[test]
fn segments_keep_the_tag_of_the_writes_through_flush_compaction_and_reopen() {
    let fs = FaultFs::new();
    let opts = || StoreOptions::new().file_system(Arc::new(fs.clone()));
    let a = SchemaTag::new([(1, vec![1, 1])]);
    let ab = SchemaTag::new([(1, vec![1, 1]), (2, vec![3])]);
    let mut s = opts().open("/s").unwrap();
    s.set_schema(a.clone()).unwrap();
    s.put(&key(1), b"one").unwrap();
    s.flush().unwrap();
    // Adding a state keeps the region: its tag covers the older writes.
    s.set_schema(ab.clone()).unwrap();
    s.put(&key(2), &[7; 300]).unwrap();
    s.flush().unwrap();
    assert_eq!(tags(&s.version()), [ab.clone(), a.clone()]);
    assert_eq!(
        s.get_with_schema(&key(1)).unwrap().map(|(v, t)| (v.to_vec(), (*t).clone())),
        Some((b"one".to_vec(), a.clone()))
    );
    assert_eq!(s.get_with_schema(&key(2)).unwrap().map(|(_, t)| (*t).clone()), Some(ab.clone()));
    assert!(s.get_with_schema(&key(3)).unwrap().is_none());
    s.compact().unwrap();
    let v = s.version();
    assert_eq!(tags(&v), std::slice::from_ref(&ab), "compaction takes the union");
    assert_eq!(v.segments[0].max_value_len, Some(300));
    s.close().unwrap();
    let mut s = opts().open("/s").unwrap();
    assert_eq!(s.version().segments, v.segments, "the manifest keeps tags and longest values");
    assert_eq!(s.get_with_schema(&key(1)).unwrap().map(|(_, t)| (*t).clone()), Some(ab));
}

#[test]
fn records_of_two_versions_of_one_state_never_share_a_segment() {
    let fs = FaultFs::new();
    let mut s = StoreOptions::new().file_system(Arc::new(fs.clone())).open("/s").unwrap();
    let v1 = SchemaTag::new([(1, vec![1])]);
    let v2 = SchemaTag::new([(1, vec![2])]);
    s.set_schema(v1.clone()).unwrap();
    s.put(&key(1), b"old").unwrap();
    // Another version of state 1: the region written so far keeps the old tag.
    s.set_schema(v2.clone()).unwrap();
    s.put(&key(2), b"new").unwrap();
    s.flush().unwrap();
    s.compact().unwrap();
    assert_eq!(tags(&s.version()), [v2.clone(), v1.clone()]);
    assert_eq!(s.get_with_schema(&key(1)).unwrap().map(|(_, t)| (*t).clone()), Some(v1));
    assert_eq!(s.get_with_schema(&key(2)).unwrap().map(|(_, t)| (*t).clone()), Some(v2));
}

/// Regression: a checkpoint labelled every segment with the serializer versions of every
/// state at the checkpoint, also segments written before some of those states existed.
#[test]
fn a_checkpoint_names_each_segment_with_the_versions_that_wrote_it_and_a_restore_keeps_them() {
    let fs = FaultFs::new();
    let opts = || StoreOptions::new().file_system(Arc::new(fs.clone()));
    let mut b = KeyedBackend::builder(U64).max_parallelism(8).store_options(opts()).open("/b").unwrap();
    let first = b.state(ValueStateDescriptor::new("first", U64)).unwrap();
    b.set_current_key(&1).unwrap();
    first.update(&mut b, &10).unwrap();
    b.store().flush().unwrap();
    let second = b.state(ValueStateDescriptor::new("second", U32)).unwrap();
    b.set_current_key(&2).unwrap();
    second.update(&mut b, &20).unwrap();
    b.store().flush().unwrap();

    let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), "/c").unwrap());
    let mut cp = Checkpointer::new(storage.clone(), CheckpointOptions::new()).unwrap();
    cp.checkpoint(1, &mut b, &OperatorStateBackend::new(), false).unwrap();
    cp.wait(1).unwrap();
    let manifest = CheckpointManifest::decode(&storage.read_manifest(1).unwrap()).unwrap();
    let id = |name: &str| manifest.meta.states.iter().find(|s| s.name == name).unwrap().id;
    let listed: Vec<Vec<u16>> =
        manifest.segments.iter().map(|s| s.versions.iter().map(|(state, _)| *state).collect()).collect();
    let mut both = vec![id("first"), id("second")];
    both.sort();
    assert_eq!(listed, [both, vec![id("first")]], "newest segment first");

    let source = RestoreSource::Checkpoint { storage, id: 1 };
    let (mut r, _) = KeyedBackend::builder(U64)
        .max_parallelism(8)
        .store_options(opts())
        .restore(Path::new("/r"), &[source])
        .unwrap();
    let restored: Vec<Vec<(u16, Vec<u32>)>> =
        r.store().version().segments.iter().map(|s| s.tag.versions().to_vec()).collect();
    let named: Vec<Vec<(u16, Vec<u32>)>> = manifest.segments.iter().map(|s| s.versions.clone()).collect();
    assert_eq!(restored, named);
    let first = r.state(ValueStateDescriptor::new("first", U64)).unwrap();
    r.set_current_key(&1).unwrap();
    assert_eq!(first.get(&mut r).unwrap(), Some(10));
}
