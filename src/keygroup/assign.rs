//! Key-group assignment: key hash to key group, key group to subtask, subtask to key groups.

use std::fmt;
use std::num::NonZeroU32;

use super::{murmur_hash, KeyGroup, KeyGroupError, KeyGroupRange, MAX_PARALLELISM_UPPER_BOUND};

/// The smallest max parallelism [`default_max_parallelism`] picks.
pub const DEFAULT_LOWER_BOUND_MAX_PARALLELISM: u32 = 128;

/// A validated max parallelism: the number of key groups, in
/// `1..=MAX_PARALLELISM_UPPER_BOUND`.
///
/// Validating once lets [`key_group`](Self::key_group), which runs for every record, skip all
/// checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MaxParallelism(NonZeroU32);

impl MaxParallelism {
    /// Validates a max parallelism.
    ///
    /// Fails with [`KeyGroupError::InvalidMaxParallelism`] unless
    /// `1 <= max_parallelism <= MAX_PARALLELISM_UPPER_BOUND`.
    pub const fn new(max_parallelism: u32) -> Result<Self, KeyGroupError> {
        match NonZeroU32::new(max_parallelism) {
            Some(n) if max_parallelism <= MAX_PARALLELISM_UPPER_BOUND => Ok(MaxParallelism(n)),
            _ => Err(KeyGroupError::InvalidMaxParallelism(max_parallelism)),
        }
    }

    /// The max parallelism Flink picks for `parallelism`; see [`default_max_parallelism`].
    pub fn default_for(parallelism: u32) -> Result<Self, KeyGroupError> {
        default_max_parallelism(parallelism).and_then(Self::new)
    }

    /// The max parallelism, the number of key groups.
    #[inline]
    pub const fn get(self) -> u32 {
        self.0.get()
    }

    /// The key group of a key with hash `hash`: `murmur_hash(hash) % max_parallelism`.
    #[inline]
    #[must_use]
    pub fn key_group(self, hash: i32) -> KeyGroup {
        // `murmur_hash` is never negative, so the cast to u32 keeps its value; the remainder
        // is below the max parallelism, at most 2^15, so it fits a key group.
        // A power of two (Flink's defaults are) takes a mask instead of a division, which
        // would be the longest step of routing a record.
        let (h, max) = (murmur_hash(hash) as u32, self.0.get());
        let kg = if max.is_power_of_two() { h & (max - 1) } else { h % max };
        kg as KeyGroup
    }

    /// All key groups, `0..=max_parallelism - 1`.
    #[inline]
    pub const fn range(self) -> KeyGroupRange {
        match KeyGroupRange::new(0, (self.get() - 1) as KeyGroup) {
            Ok(range) => range,
            // Unreachable: `1 <= max_parallelism <= 2^15` makes `0..=max_parallelism - 1` valid.
            Err(_) => KeyGroupRange::EMPTY,
        }
    }

    /// The key groups subtask `index` of `parallelism` owns; see [`range_for_subtask`].
    pub fn subtask_range(self, parallelism: u32, index: u32) -> Result<KeyGroupRange, KeyGroupError> {
        self.check_parallelism(parallelism)?;
        if index >= parallelism {
            return Err(KeyGroupError::SubtaskOutOfRange { index, parallelism });
        }
        let (max, p, i) = (u64::from(self.get()), u64::from(parallelism), u64::from(index));
        // `i < p <= max <= 2^15` bounds both ends by `max - 1`, so they fit a key group.
        let start = (i * max).div_ceil(p) as KeyGroup;
        let end = ((i + 1) * max - 1) / p;
        KeyGroupRange::new(start, end as KeyGroup)
    }

    /// The subtask of `parallelism` that owns `key_group`; see [`subtask_for_key_group`].
    pub fn subtask_for(self, parallelism: u32, key_group: KeyGroup) -> Result<u32, KeyGroupError> {
        self.check_parallelism(parallelism)?;
        if u32::from(key_group) >= self.get() {
            return Err(KeyGroupError::KeyGroupOutOfRange { key_group, max_parallelism: self.get() });
        }
        // `key_group < max` makes the quotient below `parallelism`, so it fits a u32.
        let subtask = u64::from(key_group) * u64::from(parallelism) / u64::from(self.get());
        Ok(subtask as u32)
    }

    fn check_parallelism(self, parallelism: u32) -> Result<(), KeyGroupError> {
        if parallelism == 0 || parallelism > self.get() {
            return Err(KeyGroupError::InvalidParallelism { parallelism, max_parallelism: self.get() });
        }
        Ok(())
    }
}

impl TryFrom<u32> for MaxParallelism {
    type Error = KeyGroupError;

    fn try_from(max_parallelism: u32) -> Result<Self, KeyGroupError> {
        Self::new(max_parallelism)
    }
}

impl From<MaxParallelism> for u32 {
    fn from(max_parallelism: MaxParallelism) -> u32 {
        max_parallelism.get()
    }
}

impl fmt::Display for MaxParallelism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The key group of a key with hash `hash` (Flink's
/// `KeyGroupRangeAssignment.computeKeyGroupForKeyHash`): `murmur_hash(hash) % max_parallelism`.
///
/// Fails with [`KeyGroupError::InvalidMaxParallelism`] unless
/// `1 <= max_parallelism <= MAX_PARALLELISM_UPPER_BOUND`. On a hot path, validate once with
/// [`MaxParallelism::new`] and call [`MaxParallelism::key_group`].
pub fn key_group_for_hash(hash: i32, max_parallelism: u32) -> Result<KeyGroup, KeyGroupError> {
    MaxParallelism::new(max_parallelism).map(|max| max.key_group(hash))
}

/// The key groups subtask `index` of `parallelism` owns (Flink's
/// `computeKeyGroupRangeForOperatorIndex`):
/// `ceil(index * max_parallelism / parallelism) ..= ((index + 1) * max_parallelism - 1) / parallelism`.
///
/// The ranges of subtasks `0..parallelism` partition `0..max_parallelism` in order, and their
/// lengths differ by at most one. Fails unless
/// `1 <= parallelism <= max_parallelism <= MAX_PARALLELISM_UPPER_BOUND` and `index < parallelism`.
pub fn range_for_subtask(max_parallelism: u32, parallelism: u32, index: u32) -> Result<KeyGroupRange, KeyGroupError> {
    MaxParallelism::new(max_parallelism)?.subtask_range(parallelism, index)
}

/// The subtask of `parallelism` that owns `key_group` (Flink's
/// `computeOperatorIndexForKeyGroup`): `key_group * parallelism / max_parallelism`.
///
/// It is the subtask whose [`range_for_subtask`] contains `key_group`. Fails unless
/// `1 <= parallelism <= max_parallelism <= MAX_PARALLELISM_UPPER_BOUND` and
/// `key_group < max_parallelism`.
pub fn subtask_for_key_group(
    max_parallelism: u32,
    parallelism: u32,
    key_group: KeyGroup,
) -> Result<u32, KeyGroupError> {
    MaxParallelism::new(max_parallelism)?.subtask_for(parallelism, key_group)
}

/// The max parallelism Flink picks for an operator of `parallelism` subtasks
/// (`computeDefaultMaxParallelism`): the next power of two at or above `1.5 * parallelism`
/// (`parallelism + parallelism / 2`), clamped to
/// `DEFAULT_LOWER_BOUND_MAX_PARALLELISM..=MAX_PARALLELISM_UPPER_BOUND`.
///
/// Fails with [`KeyGroupError::InvalidParallelism`] unless
/// `1 <= parallelism <= MAX_PARALLELISM_UPPER_BOUND`.
pub fn default_max_parallelism(parallelism: u32) -> Result<u32, KeyGroupError> {
    if parallelism == 0 || parallelism > MAX_PARALLELISM_UPPER_BOUND {
        return Err(KeyGroupError::InvalidParallelism { parallelism, max_parallelism: MAX_PARALLELISM_UPPER_BOUND });
    }
    // At most 1.5 * 2^15, so neither the sum nor the power of two overflows.
    let scaled = (parallelism + parallelism / 2).next_power_of_two();
    Ok(scaled.clamp(DEFAULT_LOWER_BOUND_MAX_PARALLELISM, MAX_PARALLELISM_UPPER_BOUND))
}
