//! Misuse of the state API gets a clear, typed error and changes nothing.

use std::path::Path;
use std::sync::Arc;

use eddy::codec::{Str, U32, U64};
use eddy::io::FaultFs;
use eddy::keygroup::KeyGroupRange;
use eddy::state::{KeyedBackend, ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use eddy::store::StoreOptions;
use eddy::{Error, Misuse};

fn backend(range: Option<KeyGroupRange>) -> KeyedBackend<U64> {
    let opts = StoreOptions::new().file_system(Arc::new(FaultFs::new()));
    let builder = KeyedBackend::builder(U64).max_parallelism(128).store_options(opts);
    match range {
        Some(r) => builder.key_groups(r),
        None => builder,
    }
    .open("/m")
    .unwrap()
}

#[test]
fn reading_before_a_key_is_set_is_refused() {
    let mut b = backend(None);
    let v = b.state(ValueStateDescriptor::of::<u64>("v")).unwrap();
    assert!(matches!(v.get(&mut b), Err(Error::Misuse(Misuse::NoCurrentKey))));
    assert!(matches!(v.update(&mut b, &1), Err(Error::Misuse(Misuse::NoCurrentKey))));
    assert!(matches!(b.current_key(), Err(Error::Misuse(Misuse::NoCurrentKey))));
}

#[test]
fn a_state_registered_again_with_other_types_is_refused() {
    let mut b = backend(None);
    let _v = b.state(ValueStateDescriptor::of::<u64>("s")).unwrap();
    // The same registration again is fine and gives a working handle.
    let again = b.state(ValueStateDescriptor::of::<u64>("s")).unwrap();
    b.set_current_key(&1).unwrap();
    again.update(&mut b, &5).unwrap();
    let other_value = b.state(ValueStateDescriptor::new("s", Str));
    assert!(matches!(other_value, Err(Error::Misuse(Misuse::StateMismatch { .. }))), "{other_value:?}");
    let other_kind = b.state(ListStateDescriptor::of::<u64>("s"));
    assert!(matches!(other_kind, Err(Error::Misuse(Misuse::StateMismatch { .. }))));
    let other_ns = b.state_in(ValueStateDescriptor::of::<u64>("s"), U32);
    assert!(matches!(other_ns, Err(Error::Misuse(Misuse::StateMismatch { .. }))));
    let msg = b.state(MapStateDescriptor::of::<u64, String>("s")).err().unwrap().to_string();
    assert!(msg.contains("\"s\"") && msg.contains("value state") && msg.contains("map state"), "{msg}");
}

#[test]
fn a_key_outside_the_key_groups_is_refused_and_leaves_no_current_key() {
    let mut b = backend(Some(KeyGroupRange::new(0, 63).unwrap()));
    let v = b.state(ValueStateDescriptor::of::<u64>("v")).unwrap();
    let mut inside = None;
    let mut outside = None;
    for k in 0..1000u64 {
        match b.set_current_key(&k) {
            Ok(()) => inside = inside.or(Some(k)),
            Err(Error::Misuse(Misuse::KeyGroupOutOfRange { key_group, start: 0, end: 63 })) => {
                assert!(key_group >= 64);
                outside = outside.or(Some(k));
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    b.set_current_key(&inside.unwrap()).unwrap();
    v.update(&mut b, &1).unwrap();
    assert!(b.set_current_key(&outside.unwrap()).is_err());
    assert!(matches!(v.get(&mut b), Err(Error::Misuse(Misuse::NoCurrentKey))));
}

#[test]
fn a_handle_of_another_backend_is_refused() {
    let mut a = backend(None);
    let mut b = backend(None);
    let va = a.state(ValueStateDescriptor::of::<u64>("v")).unwrap();
    b.set_current_key(&1).unwrap();
    assert!(matches!(va.get(&mut b), Err(Error::Misuse(Misuse::ForeignHandle))));
}

#[test]
fn a_namespaced_state_needs_its_namespace() {
    let mut b = backend(None);
    let mut v = b.state_in(ValueStateDescriptor::of::<u64>("v"), U32).unwrap();
    b.set_current_key(&1).unwrap();
    assert!(matches!(v.get(&mut b), Err(Error::Misuse(Misuse::NoNamespace { .. }))));
    v.set_namespace(&3);
    v.update(&mut b, &1).unwrap();
    assert_eq!(v.get(&mut b).unwrap(), Some(1));
}

#[test]
fn a_directory_with_a_store_is_refused() {
    let fs = FaultFs::new();
    let opts = StoreOptions::new().file_system(Arc::new(fs.clone()));
    let mut b = KeyedBackend::builder(U64).store_options(opts.clone()).open("/d").unwrap();
    let v = b.state(ValueStateDescriptor::of::<u64>("v")).unwrap();
    b.set_current_key(&1).unwrap();
    v.update(&mut b, &1).unwrap();
    b.close().unwrap();
    let again = KeyedBackend::builder(U64).store_options(opts).open("/d");
    assert!(matches!(again, Err(Error::Misuse(Misuse::NotEmpty))));
}

#[test]
fn a_key_group_range_beyond_the_max_parallelism_is_refused() {
    let opts = StoreOptions::new().file_system(Arc::new(FaultFs::new()));
    let r = KeyedBackend::builder(U64)
        .max_parallelism(64)
        .key_groups(KeyGroupRange::new(0, 64).unwrap())
        .store_options(opts)
        .open("/x");
    assert!(matches!(r, Err(Error::Misuse(Misuse::InvalidOption { .. }))));
    let opts = StoreOptions::new().file_system(Arc::new(FaultFs::new()));
    let r = KeyedBackend::builder(U64).max_parallelism(0).store_options(opts).open("/y");
    assert!(matches!(r, Err(Error::KeyGroup(_))));
}

/// Regression: opening a backend on a directory that is not its own deleted the temporary,
/// segment and changelog files there before it found out. Now it checks first and touches
/// nothing: a directory of someone else's files is refused as foreign, one that holds a store
/// with state as not empty, and every file is still there afterwards.
#[test]
fn a_directory_that_is_not_the_backends_own_loses_no_file() {
    let fs = FaultFs::new();
    let opts = StoreOptions::new().file_system(Arc::new(fs.clone()));
    let theirs = ["/theirs/notes.tmp", "/theirs/0000000001.seg", "/theirs/changelog-0000000001.log"];
    for name in theirs {
        fs.write_file(Path::new(name), name.as_bytes()).unwrap();
    }
    let r = KeyedBackend::builder(U64).store_options(opts.clone()).open("/theirs");
    assert!(matches!(r, Err(Error::Misuse(Misuse::ForeignFile { .. }))), "{r:?}");
    let r = StoreOptions::new().file_system(Arc::new(fs.clone())).open("/theirs");
    assert!(matches!(r, Err(Error::Misuse(Misuse::ForeignFile { .. }))), "{r:?}");
    for name in theirs {
        assert_eq!(fs.read(Path::new(name)).unwrap(), name.as_bytes(), "{name}");
    }
    assert!(!fs.file_names().iter().any(|p| p.starts_with("/theirs/LOCK") || p.ends_with("MANIFEST")));

    // A store with state, and what a crash of it left: refused before anything is collected.
    let mut b = KeyedBackend::builder(U64).store_options(opts.clone()).open("/d").unwrap();
    let v = b.state(ValueStateDescriptor::of::<u64>("v")).unwrap();
    b.set_current_key(&1).unwrap();
    v.update(&mut b, &1).unwrap();
    b.close().unwrap();
    let left = ["/d/0000000099.seg", "/d/MANIFEST.tmp", "/d/changelog-0000000003.log"];
    for name in left {
        fs.write_file(Path::new(name), b"left by a crash").unwrap();
    }
    let before = fs.file_names();
    let r = KeyedBackend::builder(U64).store_options(opts).open("/d");
    assert!(matches!(r, Err(Error::Misuse(Misuse::NotEmpty))), "{r:?}");
    assert_eq!(fs.file_names(), before);
}
