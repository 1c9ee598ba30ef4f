//! A list grown by appends stops at the store's value limit with a typed error at the append,
//! and the list up to there stays whole through flushes, compaction, a checkpoint and a
//! restore: no record the store cannot read back is ever written.

use std::path::Path;
use std::sync::Arc;

use eddy::checkpoint::{CheckpointOptions, CheckpointStorage, Checkpointer, LocalDirStorage, RestoreSource};
use eddy::codec::{Bytes, U64};
use eddy::io::FaultFs;
use eddy::state::{KeyedBackend, ListStateDescriptor, OperatorStateBackend};
use eddy::store::{StoreOptions, MAX_VALUE_LEN};
use eddy::{Error, Misuse};

const ELEMENT: usize = 1 << 20;

fn element(i: usize) -> Vec<u8> {
    let mut e = vec![0u8; ELEMENT];
    e[..8].copy_from_slice(&(i as u64).to_le_bytes());
    e[ELEMENT - 1] = i as u8;
    e
}

fn options(fs: &FaultFs) -> StoreOptions {
    // Far below the list's size: it spreads over several segments before it is compacted.
    StoreOptions::new().file_system(Arc::new(fs.clone())).memory_budget(16 << 20)
}

fn check_list(b: &mut KeyedBackend<U64>, n: usize) {
    let list = b.state(ListStateDescriptor::new("big", Bytes)).unwrap();
    b.set_current_key(&1).unwrap();
    let got = list.get_vec(b).unwrap();
    assert_eq!(got.len(), n);
    for (i, e) in got.iter().enumerate() {
        assert!(e == &element(i), "element {i} differs");
    }
}

#[test]
fn a_list_grown_past_the_value_limit_is_refused_at_the_append_and_survives_compaction_and_restore() {
    let fs = FaultFs::new();
    let mut b = KeyedBackend::builder(U64).max_parallelism(16).store_options(options(&fs)).open("/s").unwrap();
    let list = b.state(ListStateDescriptor::new("big", Bytes)).unwrap();
    let small = b.state(ListStateDescriptor::new("small", Bytes)).unwrap();
    b.set_current_key(&1).unwrap();
    let mut accepted = 0;
    let refused = loop {
        assert!(accepted <= MAX_VALUE_LEN / ELEMENT + 1, "the list passed the limit of {MAX_VALUE_LEN} bytes");
        match list.add(&mut b, &element(accepted)) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(refused, Error::Misuse(Misuse::TooLarge { what: "merged value", limit: MAX_VALUE_LEN, .. })),
        "{refused:?}"
    );
    assert!(accepted >= MAX_VALUE_LEN / ELEMENT - 1, "refused early, after {accepted} elements");
    // The refused append changed nothing; other keys and states take appends.
    assert!(b.store().stats().segments > 1, "the list spans segments: {:?}", b.store().stats());
    b.set_current_key(&2).unwrap();
    small.add(&mut b, &vec![7; 10]).unwrap();
    check_list(&mut b, accepted);

    b.store().compact().unwrap();
    check_list(&mut b, accepted);
    b.set_current_key(&1).unwrap();
    assert!(list.add(&mut b, &element(accepted)).is_err(), "compaction lost the length");

    let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), "/c").unwrap());
    let mut cp = Checkpointer::new(storage.clone(), CheckpointOptions::new()).unwrap();
    cp.checkpoint(1, &mut b, &OperatorStateBackend::new(), false).unwrap();
    cp.wait(1).unwrap();
    drop(b);

    let source = RestoreSource::Checkpoint { storage, id: 1 };
    let (mut r, _) = KeyedBackend::builder(U64)
        .max_parallelism(16)
        .store_options(options(&fs))
        .restore(Path::new("/r"), &[source])
        .unwrap();
    check_list(&mut r, accepted);
    // Restored segments say nothing of their longest value: the limit still holds.
    let list = r.state(ListStateDescriptor::new("big", Bytes)).unwrap();
    r.set_current_key(&1).unwrap();
    let err = list.add(&mut r, &element(accepted)).unwrap_err();
    assert!(matches!(err, Error::Misuse(Misuse::TooLarge { .. })), "{err:?}");
    let small = r.state(ListStateDescriptor::new("small", Bytes)).unwrap();
    r.set_current_key(&2).unwrap();
    small.add(&mut r, &vec![8; 10]).unwrap();
    assert_eq!(small.get_vec(&mut r).unwrap(), vec![vec![7; 10], vec![8; 10]]);
    r.store().compact().unwrap();
    check_list(&mut r, accepted);
}
