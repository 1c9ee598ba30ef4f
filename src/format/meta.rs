//! What checkpoints and savepoints record of each state besides its records: its kind, its
//! time to live, and the operator and broadcast state, which are written in full. The state
//! layer ([`crate::state`]) re-exports these types; the encodings are in
//! [`checkpoint`](super::checkpoint) and [`savepoint`](super::savepoint).

use std::time::Duration;

use crate::codec::SerializerSnapshot;

/// The kinds of keyed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateKind {
    /// One value per key and namespace.
    Value,
    /// A list of values per key and namespace.
    List,
    /// A map of user keys to values per key and namespace.
    Map,
    /// One value per key and namespace, folded with a reduce function.
    Reducing,
    /// An accumulator per key and namespace, folded with an aggregate function.
    Aggregating,
    /// The timers of a timer service (one state per time domain).
    Timers,
}

impl std::fmt::Display for StateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            StateKind::Value => "value state",
            StateKind::List => "list state",
            StateKind::Map => "map state",
            StateKind::Reducing => "reducing state",
            StateKind::Aggregating => "aggregating state",
            StateKind::Timers => "timers",
        };
        f.write_str(s)
    }
}

/// When the last-access timestamp of an entry is refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TtlUpdate {
    /// When the entry is created or written.
    OnCreateAndWrite,
    /// When the entry is created, written or read.
    OnReadAndWrite,
}

/// Whether an expired entry that is still stored may be returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TtlVisibility {
    /// Expired entries are never returned (and are removed when met).
    NeverReturnExpired,
    /// Expired entries are returned until cleanup has removed them.
    ReturnExpiredIfNotCleanedUp,
}

/// A state's time to live, in the manner of Flink's `StateTtlConfig`.
///
/// Entries expire `ttl` after their last access (as [`TtlUpdate`] defines access). List and map
/// entries expire one by one. Expired entries go in three ways besides being met on read:
/// incrementally ([`cleanup_incrementally`](Self::cleanup_incrementally): every state access
/// checks a few more entries), in compaction (on by default: merged segments leave them out),
/// and in full snapshots ([`cleanup_full_snapshot`](Self::cleanup_full_snapshot)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TtlConfig {
    pub(crate) ttl_ms: i64,
    pub(crate) update: TtlUpdate,
    pub(crate) visibility: TtlVisibility,
    pub(crate) incremental: usize,
    pub(crate) in_compaction: bool,
    pub(crate) full_snapshot: bool,
}

impl TtlConfig {
    /// Entries live `ttl` after creation or their last write, are never returned once expired,
    /// and are dropped by compaction.
    pub fn new(ttl: Duration) -> Self {
        TtlConfig {
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1),
            update: TtlUpdate::OnCreateAndWrite,
            visibility: TtlVisibility::NeverReturnExpired,
            incremental: 0,
            in_compaction: true,
            full_snapshot: false,
        }
    }

    /// When the timestamp is refreshed.
    #[must_use]
    pub fn update(mut self, update: TtlUpdate) -> Self {
        self.update = update;
        self
    }

    /// Whether expired entries may be returned before cleanup removes them.
    #[must_use]
    pub fn visibility(mut self, visibility: TtlVisibility) -> Self {
        self.visibility = visibility;
        self
    }

    /// Every access to the state checks `entries` more entries of it for expiry (0: off).
    #[must_use]
    pub fn cleanup_incrementally(mut self, entries: usize) -> Self {
        self.incremental = entries;
        self
    }

    /// Whether compaction drops expired entries (on by default).
    #[must_use]
    pub fn cleanup_in_compaction(mut self, on: bool) -> Self {
        self.in_compaction = on;
        self
    }

    /// Whether full snapshots leave expired entries out.
    #[must_use]
    pub fn cleanup_full_snapshot(mut self) -> Self {
        self.full_snapshot = true;
        self
    }

    /// The time to live.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.unsigned_abs())
    }

    /// Whether an entry last accessed at `ts` has expired at `now`.
    #[inline]
    pub(crate) fn expired(&self, ts: i64, now: i64) -> bool {
        ts.saturating_add(self.ttl_ms) <= now
    }

    /// Whether expired entries must be hidden.
    #[inline]
    pub(crate) fn hides_expired(&self) -> bool {
        self.visibility == TtlVisibility::NeverReturnExpired
    }
}

/// How an operator list state is spread over the instances of a new parallelism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Redistribution {
    /// Each instance keeps its elements when the parallelism is unchanged; otherwise the
    /// elements of all instances, in instance order, are cut into even contiguous runs, one per
    /// new instance (see [`OperatorStateBackend::redistribute`](crate::state::OperatorStateBackend::redistribute)).
    EvenSplit,
    /// Every new instance gets all elements of all instances.
    Union,
}

/// The snapshot of one operator list state: its elements, serialized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListStateSnapshot {
    /// The state's name.
    pub name: String,
    /// How it is redistributed.
    pub mode: Redistribution,
    /// The element serializer that wrote `elements`.
    pub serializer: SerializerSnapshot,
    /// The elements, each as its serializer wrote it.
    pub elements: Vec<Vec<u8>>,
}

/// The snapshot of one broadcast state: its entries, serialized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastStateSnapshot {
    /// The state's name.
    pub name: String,
    /// The key serializer.
    pub keys: SerializerSnapshot,
    /// The value serializer.
    pub values: SerializerSnapshot,
    /// The entries in key-byte order.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// All operator state of one instance, serialized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorStateSnapshot {
    /// The list states, by name.
    pub lists: Vec<ListStateSnapshot>,
    /// The broadcast states, by name.
    pub broadcast: Vec<BroadcastStateSnapshot>,
}
