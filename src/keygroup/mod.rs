//! Key groups: Flink's partitioning of keys over parallel subtasks, bit for bit.
//!
//! Every key belongs to one of `max_parallelism` key groups, fixed for the lifetime of a job;
//! each of `parallelism` subtasks owns a contiguous [`KeyGroupRange`] of them. Rescaling moves
//! whole key groups between subtasks and never rehashes a key. The assignment is part of the
//! on-disk format (every stored key starts with its key group as two big-endian bytes), so the
//! functions here must never change; `format-spec/keygroup.md` writes them down.
//!
//! # Overview of types and functions
//!
//! - Key hash: a 32-bit hash of the key. [`hash_bytes`] (MurmurHash3 x86_32, seed 0) hashes
//!   serialized key bytes; [`java_hash_i32`], [`java_hash_i64`] and [`java_hash_str`] reproduce
//!   Java's `hashCode()` for keys that must land where Flink puts them. Snapshots record the
//!   hash by name ([`DEFAULT_KEY_HASH`], [`JAVA_KEY_HASH`], or a backend's own), so that a
//!   restore with another hash is refused instead of looking for every key in the wrong key
//!   group.
//! - Key group: [`murmur_hash`] of the key hash, modulo the max parallelism
//!   ([`key_group_for_hash`], or [`MaxParallelism::key_group`] once the max parallelism has been
//!   validated).
//! - Subtask: [`range_for_subtask`] gives the key groups a subtask owns,
//!   [`subtask_for_key_group`] the subtask that owns a key group.
//! - [`default_max_parallelism`] picks a max parallelism for a parallelism, as Flink does.

mod assign;
mod hash;
mod range;
#[cfg(test)]
mod tests;

pub use assign::{
    default_max_parallelism, key_group_for_hash, range_for_subtask, subtask_for_key_group, MaxParallelism,
    DEFAULT_LOWER_BOUND_MAX_PARALLELISM,
};
pub use hash::{hash_bytes, java_hash_i32, java_hash_i64, java_hash_str, murmur_hash, DEFAULT_KEY_HASH, JAVA_KEY_HASH};
pub use range::KeyGroupRange;

/// A key group: `0..max_parallelism`, so always below [`MAX_PARALLELISM_UPPER_BOUND`].
pub type KeyGroup = u16;

/// The largest max parallelism: key groups are `0..32768`, so a key group fits in two bytes.
pub const MAX_PARALLELISM_UPPER_BOUND: u32 = 32_768;

/// Errors of key-group computations: an argument outside its allowed range. None of them
/// depends on data read from disk; each is fixed by passing a value within the stated bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyGroupError {
    /// The max parallelism (the number of key groups) is not in
    /// `1..=MAX_PARALLELISM_UPPER_BOUND`. Choose one in that range, for example with
    /// [`default_max_parallelism`]; it can never change once state has been written.
    #[error("max parallelism {0} is not in 1..={MAX_PARALLELISM_UPPER_BOUND}")]
    InvalidMaxParallelism(u32),
    /// The parallelism (the number of subtasks) is not in `1..=max_parallelism`: every subtask
    /// must own at least one key group. Lower the parallelism or raise the max parallelism.
    #[error("parallelism {parallelism} is not in 1..={max_parallelism}")]
    InvalidParallelism {
        /// The parallelism given.
        parallelism: u32,
        /// The largest parallelism allowed here: the max parallelism, or
        /// [`MAX_PARALLELISM_UPPER_BOUND`] when none is given.
        max_parallelism: u32,
    },
    /// A subtask index is not below the parallelism. Subtasks are numbered from 0.
    #[error("subtask index {index} is out of range for parallelism {parallelism}")]
    SubtaskOutOfRange {
        /// The subtask index given.
        index: u32,
        /// The parallelism.
        parallelism: u32,
    },
    /// A key group is not below the max parallelism, so no subtask owns it. The key group was
    /// computed with another max parallelism, or is not a key group at all.
    #[error("key group {key_group} is out of range for max parallelism {max_parallelism}")]
    KeyGroupOutOfRange {
        /// The key group given.
        key_group: KeyGroup,
        /// The max parallelism.
        max_parallelism: u32,
    },
    /// A key-group range was asked for with `start > end`, or with an end that is not a key
    /// group (`end >= MAX_PARALLELISM_UPPER_BOUND`). Use [`KeyGroupRange::EMPTY`] for an empty
    /// range.
    #[error("invalid key-group range {start}..={end}")]
    InvalidRange {
        /// The first key group asked for.
        start: KeyGroup,
        /// The last key group asked for.
        end: KeyGroup,
    },
}
