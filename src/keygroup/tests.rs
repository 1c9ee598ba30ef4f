//! Flink's own results, and the partition properties of subtask ranges.

use quickcheck::{Arbitrary, Gen, QuickCheck};

use super::*;

fn kg(hash: i32, max_parallelism: u32) -> KeyGroup {
    key_group_for_hash(hash, max_parallelism).expect("valid max parallelism")
}

/// (key, max parallelism, key group) as Flink 2.3's `KeyGroupRangeAssignment.assignToKeyGroup`
/// computes them for `Long`, `Integer` and `String` keys.
#[test]
fn flink_key_groups() {
    let longs: [(i64, u32, KeyGroup); 6] = [
        (0, 128, 94),
        (1, 128, 86),
        (42, 128, 29),
        (-1, 4096, 2526),
        (123_456_789, 32768, 22865),
        (i64::MAX, 128, 108),
    ];
    for (key, max, expected) in longs {
        assert_eq!(kg(java_hash_i64(key), max), expected, "long {key} / {max}");
    }
    let ints: [(i32, u32, KeyGroup); 2] = [(-7, 128, 33), (i32::MAX, 32768, 19646)];
    for (key, max, expected) in ints {
        assert_eq!(kg(java_hash_i32(key), max), expected, "int {key} / {max}");
    }
    let strings: [(&str, u32, KeyGroup); 5] =
        [("", 128, 94), ("hello", 128, 35), ("user-17", 32768, 22321), ("Flink", 128, 127), ("état", 32768, 12333)];
    for (key, max, expected) in strings {
        assert_eq!(kg(java_hash_str(key), max), expected, "string {key:?} / {max}");
    }
}

#[test]
fn flink_murmur() {
    assert_eq!(murmur_hash(0), 593_689_054);
    assert_eq!(murmur_hash(-1), 1_982_413_648);
}

#[test]
fn key_group_is_checked_and_unchecked_alike() -> Result<(), KeyGroupError> {
    let max = MaxParallelism::new(4096)?;
    for hash in [i32::MIN, -1, 0, 1, 42, i32::MAX] {
        assert_eq!(Ok(max.key_group(hash)), key_group_for_hash(hash, 4096));
    }
    Ok(())
}

/// The mask taken for a power-of-two max parallelism gives what the remainder gives.
#[test]
fn key_group_is_the_remainder_of_the_murmur_hash_at_every_max_parallelism() {
    fn prop(hash: i32, max: u16) -> bool {
        let max = u32::from(max) % MAX_PARALLELISM_UPPER_BOUND + 1;
        kg(hash, max) == (murmur_hash(hash) as u32 % max) as KeyGroup
    }
    QuickCheck::new().tests(20_000).quickcheck(prop as fn(i32, u16) -> bool);
    for max in [1, 2, 128, 4096, 32_768] {
        for hash in [i32::MIN, -1, 0, 1, 42, i32::MAX] {
            assert_eq!(u32::from(kg(hash, max)), murmur_hash(hash) as u32 % max);
        }
    }
}

#[test]
fn flink_default_max_parallelism() {
    for (p, expected) in [(1, 128), (85, 128), (86, 256), (1000, 2048), (30000, 32768), (32768, 32768)] {
        assert_eq!(default_max_parallelism(p), Ok(expected), "parallelism {p}");
        assert_eq!(MaxParallelism::default_for(p).map(MaxParallelism::get), Ok(expected));
    }
}

#[test]
fn flink_ranges_128_over_7() -> Result<(), KeyGroupError> {
    let expected = [(0, 18), (19, 36), (37, 54), (55, 73), (74, 91), (92, 109), (110, 127)];
    for (index, (start, end)) in (0..).zip(expected) {
        assert_eq!(range_for_subtask(128, 7, index)?, KeyGroupRange::new(start, end)?);
    }
    Ok(())
}

#[test]
fn max_parallelism_range_is_all_key_groups() -> Result<(), KeyGroupError> {
    assert_eq!(MaxParallelism::new(1)?.range(), KeyGroupRange::new(0, 0)?);
    assert_eq!(MaxParallelism::new(128)?.range(), KeyGroupRange::new(0, 127)?);
    assert_eq!(MaxParallelism::new(32768)?.range().len(), 32768);
    Ok(())
}

#[test]
fn invalid_max_parallelism() {
    for max in [0, 32769, u32::MAX] {
        let err = KeyGroupError::InvalidMaxParallelism(max);
        assert_eq!(MaxParallelism::new(max), Err(err.clone()));
        assert_eq!(key_group_for_hash(0, max), Err(err.clone()));
        assert_eq!(range_for_subtask(max, 1, 0), Err(err.clone()));
        assert_eq!(subtask_for_key_group(max, 1, 0), Err(err));
    }
}

#[test]
fn invalid_parallelism() {
    for (max, p) in [(128, 0), (128, 129), (1, 2), (32768, 32769), (32768, u32::MAX)] {
        let err = KeyGroupError::InvalidParallelism { parallelism: p, max_parallelism: max };
        assert_eq!(range_for_subtask(max, p, 0), Err(err.clone()));
        assert_eq!(subtask_for_key_group(max, p, 0), Err(err));
    }
    for p in [0, 32769, u32::MAX] {
        let err = KeyGroupError::InvalidParallelism { parallelism: p, max_parallelism: 32768 };
        assert_eq!(default_max_parallelism(p), Err(err.clone()));
        assert_eq!(MaxParallelism::default_for(p), Err(err));
    }
}

#[test]
fn out_of_range_subtask_and_key_group() {
    assert_eq!(range_for_subtask(128, 7, 7), Err(KeyGroupError::SubtaskOutOfRange { index: 7, parallelism: 7 }));
    assert_eq!(
        range_for_subtask(128, 7, u32::MAX),
        Err(KeyGroupError::SubtaskOutOfRange { index: u32::MAX, parallelism: 7 })
    );
    for key_group in [128, 32767, KeyGroup::MAX] {
        assert_eq!(
            subtask_for_key_group(128, 7, key_group),
            Err(KeyGroupError::KeyGroupOutOfRange { key_group, max_parallelism: 128 })
        );
    }
}

#[test]
fn extreme_parallelisms() -> Result<(), KeyGroupError> {
    assert_eq!(range_for_subtask(32768, 32768, 32767)?, KeyGroupRange::new(32767, 32767)?);
    assert_eq!(range_for_subtask(32768, 1, 0)?, KeyGroupRange::new(0, 32767)?);
    assert_eq!(range_for_subtask(1, 1, 0)?, KeyGroupRange::new(0, 0)?);
    assert_eq!(subtask_for_key_group(32768, 32768, 32767)?, 32767);
    assert_eq!(subtask_for_key_group(32768, 1, 32767)?, 0);
    Ok(())
}

/// A valid `(max_parallelism, parallelism)` pair, small or large.
#[derive(Debug, Clone, Copy)]
struct Layout {
    max_parallelism: u32,
    parallelism: u32,
}

impl Arbitrary for Layout {
    fn arbitrary(g: &mut Gen) -> Self {
        // Mostly small, to see many subtask boundaries, with the odd full-size layout.
        let bound = *g.choose(&[8, 300, MAX_PARALLELISM_UPPER_BOUND]).unwrap_or(&8);
        let max_parallelism = u32::arbitrary(g) % bound + 1;
        let parallelism = u32::arbitrary(g) % max_parallelism + 1;
        Layout { max_parallelism, parallelism }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let Layout { max_parallelism, parallelism } = *self;
        Box::new(
            (max_parallelism, parallelism)
                .shrink()
                .filter(|&(max, p)| 1 <= p && p <= max)
                .map(|(max_parallelism, parallelism)| Layout { max_parallelism, parallelism }),
        )
    }
}

fn quickcheck(prop: fn(Layout) -> bool) {
    QuickCheck::new().tests(300).quickcheck(prop);
}

/// The subtask ranges cover `0..max_parallelism` in order, with no gap and no overlap, and
/// none is empty.
#[test]
fn subtask_ranges_partition_key_groups() {
    fn prop(Layout { max_parallelism, parallelism }: Layout) -> bool {
        let mut next = 0u32;
        for index in 0..parallelism {
            let Ok(range) = range_for_subtask(max_parallelism, parallelism, index) else {
                return false;
            };
            if range.is_empty() || u32::from(range.start()) != next {
                return false;
            }
            next = u32::from(range.end()) + 1;
        }
        next == max_parallelism
    }
    quickcheck(prop);
}

/// Every key group's subtask is the one whose range holds it.
#[test]
fn subtask_for_key_group_agrees_with_ranges() {
    fn prop(Layout { max_parallelism, parallelism }: Layout) -> bool {
        (0..parallelism).all(|index| {
            range_for_subtask(max_parallelism, parallelism, index).is_ok_and(|range| {
                range
                    .iter()
                    .all(|key_group| subtask_for_key_group(max_parallelism, parallelism, key_group) == Ok(index))
            })
        })
    }
    quickcheck(prop);
}

/// Subtask ranges are balanced: their lengths differ by at most one.
#[test]
fn subtask_ranges_are_balanced() {
    fn prop(Layout { max_parallelism, parallelism }: Layout) -> bool {
        let lens: Vec<u32> = (0..parallelism)
            .filter_map(|i| range_for_subtask(max_parallelism, parallelism, i).ok())
            .map(|range| range.len())
            .collect();
        let floor = max_parallelism / parallelism;
        lens.len() == parallelism as usize && lens.iter().all(|&len| len == floor || len == floor + 1)
    }
    quickcheck(prop);
}

/// Key groups always fall in `0..max_parallelism`.
#[test]
fn key_groups_are_in_range() {
    fn prop(hash: i32, layout: Layout) -> bool {
        MaxParallelism::new(layout.max_parallelism).is_ok_and(|max| max.range().contains(max.key_group(hash)))
    }
    QuickCheck::new().tests(1000).quickcheck(prop as fn(i32, Layout) -> bool);
}
