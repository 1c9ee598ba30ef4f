//! Contiguous, inclusive ranges of key groups.

use std::fmt;
use std::ops::RangeInclusive;

use super::{KeyGroup, KeyGroupError, MAX_PARALLELISM_UPPER_BOUND};

/// A contiguous range of key groups, inclusive on both ends, like Flink's `KeyGroupRange`.
///
/// A non-empty range has `start <= end < MAX_PARALLELISM_UPPER_BOUND`. There is exactly one
/// empty range, [`KeyGroupRange::EMPTY`], so equality and hashing need no special case.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyGroupRange {
    // Invariant: `start <= end < MAX_PARALLELISM_UPPER_BOUND`, or `(start, end) == (1, 0)`.
    start: KeyGroup,
    end: KeyGroup,
}

impl KeyGroupRange {
    /// The empty range. Its [`start`](Self::start) is 1 and its [`end`](Self::end) 0, so
    /// `start > end` and it contains no key group.
    pub const EMPTY: KeyGroupRange = KeyGroupRange { start: 1, end: 0 };

    /// The key groups `start..=end`.
    ///
    /// Fails with [`KeyGroupError::InvalidRange`] if `start > end` or if `end` is not a key
    /// group (`end >= MAX_PARALLELISM_UPPER_BOUND`).
    pub const fn new(start: KeyGroup, end: KeyGroup) -> Result<Self, KeyGroupError> {
        if start <= end && (end as u32) < MAX_PARALLELISM_UPPER_BOUND {
            Ok(KeyGroupRange { start, end })
        } else {
            Err(KeyGroupError::InvalidRange { start, end })
        }
    }

    /// The first key group (1 for the empty range).
    #[inline]
    pub const fn start(&self) -> KeyGroup {
        self.start
    }

    /// The last key group (0 for the empty range).
    #[inline]
    pub const fn end(&self) -> KeyGroup {
        self.end
    }

    /// The number of key groups in the range.
    #[inline]
    pub const fn len(&self) -> u32 {
        // The invariant gives `start <= end + 1`; saturating keeps this total regardless.
        (self.end as u32 + 1).saturating_sub(self.start as u32)
    }

    /// Whether the range holds no key group.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.start > self.end
    }

    /// Whether `key_group` lies in the range.
    #[inline]
    pub const fn contains(&self, key_group: KeyGroup) -> bool {
        self.start <= key_group && key_group <= self.end
    }

    /// The key groups of the range, in ascending order.
    #[inline]
    pub fn iter(&self) -> RangeInclusive<KeyGroup> {
        self.start..=self.end
    }

    /// The key groups in both ranges; [`EMPTY`](Self::EMPTY) if they do not overlap.
    #[must_use]
    pub fn intersection(&self, other: &KeyGroupRange) -> KeyGroupRange {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        if start <= end {
            KeyGroupRange { start, end }
        } else {
            KeyGroupRange::EMPTY
        }
    }
}

impl IntoIterator for KeyGroupRange {
    type Item = KeyGroup;
    type IntoIter = RangeInclusive<KeyGroup>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl IntoIterator for &KeyGroupRange {
    type Item = KeyGroup;
    type IntoIter = RangeInclusive<KeyGroup>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// `start..=end`, or `empty`.
impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            f.write_str("empty")
        } else {
            write!(f, "{}..={}", self.start, self.end)
        }
    }
}

impl fmt::Debug for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyGroupRange({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_validates() {
        assert_eq!(KeyGroupRange::new(3, 3).map(|r| r.len()), Ok(1));
        assert_eq!(KeyGroupRange::new(0, 32767).map(|r| r.len()), Ok(32768));
        assert_eq!(KeyGroupRange::new(4, 3), Err(KeyGroupError::InvalidRange { start: 4, end: 3 }));
        assert_eq!(KeyGroupRange::new(0, 32768), Err(KeyGroupError::InvalidRange { start: 0, end: 32768 }));
        assert_eq!(KeyGroupRange::new(1, 0), Err(KeyGroupError::InvalidRange { start: 1, end: 0 }));
    }

    #[test]
    fn empty() {
        let e = KeyGroupRange::EMPTY;
        assert!(e.is_empty());
        assert_eq!(e.len(), 0);
        assert_eq!(e.iter().count(), 0);
        assert!(!e.contains(0));
        assert!(!e.contains(1));
        assert_eq!(e.to_string(), "empty");
        assert_eq!(format!("{e:?}"), "KeyGroupRange(empty)");
    }

    #[test]
    fn accessors_and_iteration() -> Result<(), KeyGroupError> {
        let r = KeyGroupRange::new(5, 9)?;
        assert_eq!((r.start(), r.end(), r.len()), (5, 9, 5));
        assert!(!r.is_empty());
        assert!(r.contains(5) && r.contains(9));
        assert!(!r.contains(4) && !r.contains(10));
        assert_eq!(r.iter().collect::<Vec<_>>(), [5, 6, 7, 8, 9]);
        assert_eq!(r.into_iter().len(), 5);
        assert_eq!(r.to_string(), "5..=9");
        assert_eq!(format!("{r:?}"), "KeyGroupRange(5..=9)");
        Ok(())
    }

    #[test]
    fn intersection() -> Result<(), KeyGroupError> {
        let a = KeyGroupRange::new(0, 18)?;
        let b = KeyGroupRange::new(10, 40)?;
        assert_eq!(a.intersection(&b), KeyGroupRange::new(10, 18)?);
        assert_eq!(b.intersection(&a), KeyGroupRange::new(10, 18)?);
        assert_eq!(a.intersection(&KeyGroupRange::new(18, 20)?), KeyGroupRange::new(18, 18)?);
        assert_eq!(a.intersection(&KeyGroupRange::new(19, 20)?), KeyGroupRange::EMPTY);
        assert_eq!(a.intersection(&KeyGroupRange::EMPTY), KeyGroupRange::EMPTY);
        assert_eq!(KeyGroupRange::EMPTY.intersection(&a), KeyGroupRange::EMPTY);
        Ok(())
    }

    #[test]
    fn intersection_matches_set_intersection() {
        fn prop(a: (u8, u8), b: (u8, u8)) -> bool {
            let range = |(x, y): (u8, u8)| {
                KeyGroupRange::new(u16::from(x.min(y)), u16::from(x.max(y))).unwrap_or(KeyGroupRange::EMPTY)
            };
            let (ra, rb) = (range(a), range(b));
            let i = ra.intersection(&rb);
            let expected: Vec<KeyGroup> = ra.iter().filter(|&kg| rb.contains(kg)).collect();
            i.iter().collect::<Vec<_>>() == expected && i.len() as usize == expected.len()
        }
        quickcheck::quickcheck(prop as fn((u8, u8), (u8, u8)) -> bool);
    }
}
