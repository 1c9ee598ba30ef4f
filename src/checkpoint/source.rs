//! What a checkpoint or savepoint takes from the state layer. The state layer implements these
//! traits ([`KeyedBackend`](crate::state::KeyedBackend) and
//! [`OperatorStateBackend`](crate::state::OperatorStateBackend)), so that this layer needs
//! nothing of it but what it snapshots.

use std::path::Path;

use super::restore::Origin;
use crate::error::Result;
use crate::format::checkpoint::SnapshotMeta;
use crate::format::meta::OperatorStateSnapshot;
use crate::keygroup::KeyGroupRange;
use crate::store::{FilterDecision, LogSeal, StoreSnapshot};

/// A keyed backend, as [`Checkpointer::checkpoint`](super::Checkpointer::checkpoint) and
/// [`Checkpointer::savepoint`](super::Checkpointer::savepoint) see it. Implemented by
/// [`KeyedBackend`](crate::state::KeyedBackend); it cannot be implemented outside the crate.
pub trait SnapshotSource: sealed::Parts {}

/// The operator state of an operator instance, written in full into every snapshot.
/// Implemented by [`OperatorStateBackend`](crate::state::OperatorStateBackend).
pub trait OperatorSource {
    /// All its state, serialized.
    fn operator_snapshot(&self) -> OperatorStateSnapshot;
}

/// The synchronous part of a checkpoint of a keyed backend.
pub(crate) struct SnapshotParts {
    /// The store's frozen view, unless a checkpoint stores only the changelog.
    pub(crate) store: Option<StoreSnapshot>,
    /// The changelog sealed at the barrier, for a checkpoint of a store that keeps one.
    pub(crate) log: Option<LogSeal>,
    /// The meta info, with the operator state.
    pub(crate) meta: SnapshotMeta,
    /// The store's next segment id.
    pub(crate) next_segment_id: u64,
}

/// The synchronous part of a savepoint of a keyed backend.
pub(crate) struct SavepointParts {
    /// The store's frozen view.
    pub(crate) store: StoreSnapshot,
    /// The meta info, with the operator state.
    pub(crate) meta: SnapshotMeta,
    /// The key groups the backend owns: the savepoint holds those.
    pub(crate) range: KeyGroupRange,
    /// What the savepoint keeps of each record (expired entries go).
    pub(crate) filter: Box<dyn RecordFilter>,
}

/// Decides, record by record, what a full snapshot keeps.
pub(crate) trait RecordFilter: Send {
    /// What is kept of the record `key`, `value`: it, nothing, or what is left in `out`.
    fn filter(&mut self, key: &[u8], value: &[u8], out: &mut Vec<u8>) -> FilterDecision;
}

pub(crate) mod sealed {
    use super::*;

    /// The methods of [`SnapshotSource`](super::SnapshotSource), which name crate-private types.
    /// Outside the crate the trait cannot be named, so its methods cannot be called there.
    #[allow(private_interfaces)]
    pub trait Parts {
        /// Unique within the process: segment ids are unique within one backend only.
        fn backend_id(&self) -> u64;

        /// The synchronous part of a checkpoint: seals the store's changelog, if it keeps one,
        /// and takes the store's frozen view when it does not or when `materialize` says so.
        fn checkpoint_parts(
            &mut self,
            operator: OperatorStateSnapshot,
            materialize: &mut dyn FnMut(&LogSeal) -> bool,
        ) -> Result<SnapshotParts>;

        /// The synchronous part of a savepoint.
        fn savepoint_parts(&mut self, operator: OperatorStateSnapshot) -> Result<SavepointParts>;

        /// The shared files of `storage` that the store's segments were restored from; given
        /// once.
        fn take_origin(&mut self, storage: &Path) -> Vec<Origin>;
    }
}
