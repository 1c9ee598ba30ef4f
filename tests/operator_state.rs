//! Operator list state (even-split and union redistribution) and broadcast state.

use eddy::codec::{Str, I64, U64};
use eddy::state::{BroadcastStateDescriptor, OperatorStateBackend, Redistribution};
use eddy::{Error, Misuse};

#[test]
fn even_split_spreads_elements_evenly_and_union_gives_everyone_everything() {
    let mut old = Vec::new();
    for i in 0..3u64 {
        let mut b = OperatorStateBackend::new();
        b.list_state("offsets", U64).unwrap().add_all([i * 10, i * 10 + 1]);
        b.union_list_state("seen", U64).unwrap().add(i);
        old.push(b.snapshot());
    }
    let new = OperatorStateBackend::redistribute(&old, 4).unwrap();
    assert_eq!(new.len(), 4);
    let mut all = Vec::new();
    for (i, snap) in new.into_iter().enumerate() {
        let mut b = OperatorStateBackend::restore(snap);
        let offsets = b.list_state("offsets", U64).unwrap().get().to_vec();
        // 6 elements over 4 instances: 2, 2, 1, 1.
        assert_eq!(offsets.len(), if i < 2 { 2 } else { 1 });
        all.extend(offsets);
        let seen = b.union_list_state("seen", U64).unwrap();
        assert_eq!(seen.get(), &[0, 1, 2]);
        assert_eq!(seen.mode(), Redistribution::Union);
    }
    all.sort();
    assert_eq!(all, vec![0, 1, 10, 11, 20, 21]);
}

#[test]
fn scaling_in_keeps_every_element() {
    let mut old = Vec::new();
    for i in 0..5i64 {
        let mut b = OperatorStateBackend::new();
        b.list_state("l", I64).unwrap().add_all((0..i).map(|x| x + 100 * i));
        old.push(b.snapshot());
    }
    let new = OperatorStateBackend::redistribute(&old, 2).unwrap();
    let mut total = Vec::new();
    for snap in new {
        let mut b = OperatorStateBackend::restore(snap);
        total.extend_from_slice(b.list_state("l", I64).unwrap().get());
    }
    total.sort();
    let mut want: Vec<i64> = (0..5i64).flat_map(|i| (0..i).map(move |x| x + 100 * i)).collect();
    want.sort();
    assert_eq!(total, want);
    assert!(OperatorStateBackend::redistribute(&[], 0).is_err());
}

#[test]
fn restored_state_with_another_serializer_or_mode_is_refused() {
    let mut b = OperatorStateBackend::new();
    b.list_state("l", U64).unwrap().add(1);
    let snap = b.snapshot();
    let mut r = OperatorStateBackend::restore(snap.clone());
    // An incompatible serializer names the state and the part; the state stays restorable.
    match r.list_state("l", Str) {
        Err(Error::IncompatibleSerializer(i)) => {
            assert_eq!(i.state.as_deref(), Some("l"));
            assert_eq!(i.part, eddy::SerializerPart::Value);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.list_state("l", U64).unwrap().get(), &[1]);
    let mut r = OperatorStateBackend::restore(snap);
    assert!(matches!(r.union_list_state("l", U64), Err(Error::Misuse(Misuse::StateMismatch { .. }))));
    // In one backend, asking for a registered state with another type is refused too.
    let mut b = OperatorStateBackend::new();
    b.list_state("l", U64).unwrap();
    assert!(b.list_state("l", I64).is_err());
    assert!(b.union_list_state("l", U64).is_err());
}

#[test]
fn broadcast_state_is_written_on_one_side_read_on_the_other_and_goes_to_everyone() {
    let rules = BroadcastStateDescriptor::new("rules", Str, I64);
    let mut b = OperatorStateBackend::new();
    {
        let w = b.broadcast_state(&rules).unwrap();
        w.put("a".into(), 1);
        w.put("b".into(), 2);
        w.put("a".into(), 3);
        assert_eq!(w.remove(&"b".to_string()), Some(2));
    }
    {
        let r = b.read_only_broadcast_state(&rules).unwrap();
        assert_eq!(r.get(&"a".to_string()), Some(&3));
        assert!(!r.contains(&"b".to_string()));
        assert_eq!(r.len(), 1);
    }
    let other = BroadcastStateDescriptor::new("rules", Str, Str);
    assert!(b.broadcast_state(&other).is_err());
    let new = OperatorStateBackend::redistribute(&[b.snapshot(), b.snapshot()], 3).unwrap();
    for snap in new {
        let mut r = OperatorStateBackend::restore(snap);
        let s = r.read_only_broadcast_state(&rules).unwrap();
        assert_eq!(s.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>(), vec![("a".to_string(), 3)]);
    }
}

/// Flink's rule (`RoundRobinOperatorStateRepartitioner`): restored at an unchanged parallelism,
/// every subtask keeps exactly its own even-split elements, in their order; at another
/// parallelism the elements of all old subtasks are concatenated in subtask order and cut into
/// contiguous runs, subtask `i` of `P` taking `N / P` of the `N` elements, plus one more when
/// `i < N % P`. Union state still goes whole to every subtask, broadcast state once to each.
#[test]
fn even_split_keeps_each_subtasks_elements_at_the_same_parallelism_and_cuts_runs_otherwise() {
    let rules = BroadcastStateDescriptor::new("rules", Str, I64);
    let mut old = Vec::new();
    for i in 0..3u64 {
        let mut b = OperatorStateBackend::new();
        // Uneven on purpose: 1, 2 and 4 elements.
        b.list_state("offsets", U64).unwrap().add_all((0..1u64 << i).map(|x| i * 10 + x));
        b.union_list_state("seen", U64).unwrap().add(i);
        b.broadcast_state(&rules).unwrap().put("a".into(), 1);
        old.push(b.snapshot());
    }
    let lists = |snaps: Vec<eddy::state::OperatorStateSnapshot>| -> Vec<Vec<u64>> {
        snaps
            .into_iter()
            .map(|snap| {
                let mut b = OperatorStateBackend::restore(snap);
                assert_eq!(b.union_list_state("seen", U64).unwrap().get(), &[0, 1, 2]);
                let broadcast: Vec<_> =
                    b.read_only_broadcast_state(&rules).unwrap().iter().map(|(k, v)| (k.clone(), *v)).collect();
                assert_eq!(broadcast, vec![("a".to_string(), 1)]);
                b.list_state("offsets", U64).unwrap().get().to_vec()
            })
            .collect()
    };
    let same = lists(OperatorStateBackend::redistribute(&old, 3).unwrap());
    assert_eq!(same, vec![vec![0], vec![10, 11], vec![20, 21, 22, 23]]);
    // 7 elements over 2: 4 and 3; over 4: 2, 2, 2, 1; over 8: one each, the last none.
    let all = [0, 10, 11, 20, 21, 22, 23];
    let two = lists(OperatorStateBackend::redistribute(&old, 2).unwrap());
    assert_eq!(two, vec![all[..4].to_vec(), all[4..].to_vec()]);
    let four = lists(OperatorStateBackend::redistribute(&old, 4).unwrap());
    assert_eq!(four, vec![vec![0, 10], vec![11, 20], vec![21, 22], vec![23]]);
    let eight = lists(OperatorStateBackend::redistribute(&old, 8).unwrap());
    let mut want: Vec<Vec<u64>> = all.iter().map(|&x| vec![x]).collect();
    want.push(vec![]);
    assert_eq!(eight, want);
}
