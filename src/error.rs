//! The errors eddy returns. Each variant says what happened and what a caller can do about it.

use std::io;
use std::path::PathBuf;

use std::sync::Arc;

use crate::codec::{CodecError, SerializerSnapshot};
use crate::keygroup::{KeyGroup, KeyGroupError};

/// The result type of every fallible eddy operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in eddy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file system failed. If this happened while writing, the store is now poisoned and
    /// refuses further writes until it is reopened; nothing already durable was lost.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Bytes read from disk failed verification. The file is damaged; restore from a checkpoint.
    #[error("corrupted data in {} at offset {offset}: {kind}", file.display())]
    Corrupted {
        /// The damaged file.
        file: PathBuf,
        /// The byte offset in the file where the damage was detected.
        offset: u64,
        /// What is wrong.
        kind: Corruption,
    },
    /// A file was written by a newer (or unknown) format version than this build reads.
    #[error("{} has format version {found}; this build reads versions up to {supported}", file.display())]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// An earlier write failed, so the store refuses writes until it is reopened: it never
    /// continues on a possibly torn file.
    #[error("the store refuses writes after an earlier I/O error; reopen it")]
    Poisoned,
    /// A background thread (`worker`: flush, compaction or checkpoint) panicked while it
    /// worked. The store refuses writes until it is reopened (a checkpointer refuses new
    /// checkpoints until it is made again); nothing already durable is lost, and the last
    /// completed checkpoint restores as before.
    #[error("the {worker} thread died: {why}; reopen to go on (nothing durable was lost)")]
    WorkerDied {
        /// Which thread.
        worker: &'static str,
        /// What its panic said.
        why: String,
    },
    /// A background thread (`worker`: flush or compaction) failed with `source`. The store
    /// refuses writes until it is reopened; nothing already durable is lost.
    #[error("the {worker} failed: {source}")]
    Background {
        /// Which thread.
        worker: &'static str,
        /// The error it met.
        #[source]
        source: Arc<Error>,
    },
    /// A checkpoint could not name a complete state, and failed without writing a manifest;
    /// the next checkpoint stores the state anew.
    #[error("checkpoint incomplete: {0}; the next checkpoint stores the state")]
    Incomplete(Incomplete),
    /// A serializer given for a state (or the backend's keys) cannot read what a snapshot's
    /// serializer wrote. Nothing was changed: retry with a compatible serializer.
    #[error(transparent)]
    IncompatibleSerializer(Box<Incompatibility>),
    /// The checkpoint or savepoint was aborted; what it wrote is removed.
    #[error("checkpoint {id} was aborted")]
    Aborted {
        /// Its id.
        id: u64,
    },
    /// A key-group computation got an invalid parallelism or key group.
    #[error(transparent)]
    KeyGroup(#[from] KeyGroupError),
    /// The API was used in a way it does not allow.
    #[error("invalid use: {0}")]
    Misuse(#[from] Misuse),
    /// Stored bytes could not be read by the serializer given for them: the state was written
    /// with another serializer. (Bytes are checksummed on disk; this is not random damage.)
    #[error("state {state:?} cannot be read: {source}")]
    Codec {
        /// The state whose bytes failed to decode.
        state: String,
        /// What the serializer found.
        #[source]
        source: CodecError,
    },
    /// A subtask of a job failed: its user code returned an error or panicked, or a fault was
    /// injected. The job restarts by its restart strategy; beyond it, the job ends with this.
    #[error("subtask {subtask} of {operator:?} failed: {why}")]
    TaskFailed {
        /// The operator (the uid of its chain's first operator).
        operator: String,
        /// The subtask's index.
        subtask: usize,
        /// What happened.
        why: String,
    },
    /// A job's checkpoint could not be completed or read back.
    #[error("job checkpoint {id}: {why}")]
    JobCheckpoint {
        /// The checkpoint's id.
        id: u64,
        /// What went wrong.
        why: String,
    },
    /// A record written by an older serializer of a state could not be converted to the
    /// present one (its migration hook returned an error or panicked). Nothing was changed:
    /// the record stays as it was, readable by the old serializer, and the store goes on.
    #[error("state {state:?} could not migrate a record of key group {key_group}: {why}")]
    Migration {
        /// The state.
        state: String,
        /// Its id.
        state_id: u16,
        /// The key group of the record.
        key_group: u16,
        /// What the hook said.
        why: String,
    },
}

/// Why a checkpoint could not name a complete state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Incomplete {
    /// The changelog since the state was last stored has a gap (an aborted or failed
    /// checkpoint, or a log that could not describe a change).
    #[error("the changelog since the state was last stored in {} is incomplete", storage.display())]
    ChangelogGap {
        /// The checkpoint storage.
        storage: PathBuf,
    },
    /// A file the checkpoint would name is no longer in the storage (or is being removed).
    #[error("{} is gone", file.display())]
    FileGone {
        /// The file.
        file: PathBuf,
    },
}

/// What [`Error::IncompatibleSerializer`] found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} of {}: the snapshot's {} (version {}) cannot be read by {} (version {}): {why}",
    part, state.as_deref().map_or("the keys".to_owned(), |s| format!("state {s:?}")),
    stored.identity, stored.version, requested.identity, requested.version
)]
pub struct Incompatibility {
    /// The state, or `None` for the backend's key serializer.
    pub state: Option<String>,
    /// Which of its serializers.
    pub part: SerializerPart,
    /// The snapshot of the serializer that wrote the data.
    pub stored: SerializerSnapshot,
    /// The snapshot of the serializer given now.
    pub requested: SerializerSnapshot,
    /// Why they do not fit.
    pub why: String,
}

impl From<Incompatibility> for Error {
    fn from(i: Incompatibility) -> Self {
        Error::IncompatibleSerializer(Box::new(i))
    }
}

/// One of a state's serializers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SerializerPart {
    /// The key serializer.
    #[error("the key serializer")]
    Key,
    /// The namespace serializer.
    #[error("the namespace serializer")]
    Namespace,
    /// The value serializer (the accumulator's, for aggregating state).
    #[error("the value serializer")]
    Value,
    /// The user-key serializer of map state.
    #[error("the user-key serializer")]
    UserKey,
}

/// How bytes read from disk failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The file does not start or end with the expected magic bytes.
    #[error("bad magic bytes")]
    BadMagic,
    /// A checksum did not match the bytes it covers.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The CRC32 stored in the file.
        stored: u32,
        /// The CRC32 of the bytes as read.
        computed: u32,
    },
    /// The data ends before a structure it promises.
    #[error("truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the structure needs.
        needed: u64,
        /// Bytes that are there.
        available: u64,
    },
    /// A field holds a value the format does not allow.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A compressed block failed to decompress.
    #[error("block does not decompress")]
    Decompression,
}

/// Ways of misusing the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Misuse {
    /// A key must start with its two-byte key group.
    #[error("a key must start with its 2-byte key group; got {len} bytes")]
    KeyTooShort {
        /// The key's length.
        len: usize,
    },
    /// A key or value is larger than the store accepts.
    #[error("{what} of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Which part was too large.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An option was out of range.
    #[error("invalid option {name}: {why}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// Why it is invalid.
        why: &'static str,
    },
    /// A key was written with a group (see `Store::put_grouped`) while the store's mutable
    /// region holds it written without one, or with a group of another length: a key of a
    /// group must always be written with that group. Nothing was written.
    #[error("a key written with a group of {group_len} bytes is held with {held} (0: none)")]
    GroupMismatch {
        /// The group length of the refused write.
        group_len: usize,
        /// The group length the key is held with.
        held: usize,
    },
    /// [`MapCursor::remove_current`](crate::state::MapCursor::remove_current) was called with
    /// no entry to remove: before the first entry was read, after the walk ended, or twice for
    /// one entry. Nothing was removed; read an entry first.
    #[error("the cursor has no current entry to remove")]
    NoCurrentEntry,
    /// The directory is already open in another store, or the checkpoint storage in another
    /// checkpointer, of this process or another.
    #[error("the directory is already open")]
    AlreadyOpen,
    /// Keyed state was accessed before a current key was set.
    #[error("no current key is set; call set_current_key first")]
    NoCurrentKey,
    /// A key belongs to a key group that this backend does not own: it was routed to the
    /// wrong parallel instance.
    #[error("key group {key_group} is outside this backend's key groups {start}..={end}")]
    KeyGroupOutOfRange {
        /// The key's key group.
        key_group: KeyGroup,
        /// First key group the backend owns.
        start: KeyGroup,
        /// Last key group the backend owns.
        end: KeyGroup,
    },
    /// A state name was registered again with another kind or other serializers.
    #[error("state {name:?} is already registered as {existing}; now asked for as {requested}")]
    StateMismatch {
        /// The state's name.
        name: String,
        /// What it was registered as.
        existing: String,
        /// What it was asked for as.
        requested: String,
    },
    /// A state registered with a namespace serializer was used before its namespace was set.
    #[error("state {name:?} has no namespace set; call set_namespace first")]
    NoNamespace {
        /// The state's name.
        name: String,
    },
    /// A state handle was used with a backend other than the one that created it.
    #[error("the state handle belongs to another backend")]
    ForeignHandle,
    /// More states were registered than a backend holds.
    #[error("too many states: a backend holds at most {limit}")]
    TooManyStates {
        /// The limit.
        limit: usize,
    },
    /// A store was opened on a directory that holds no store but files of another's: it
    /// opens only an empty directory or its own, and wrote and removed nothing there.
    #[error("the directory holds {name:?}, which no store wrote; open a store on an empty directory")]
    ForeignFile {
        /// The first such file.
        name: String,
    },
    /// A keyed backend was opened on a directory that already holds a store (keyed state is
    /// restored from checkpoints, not from a store directory), or a savepoint was asked for
    /// into a directory that holds one or is claimed by one being written.
    #[error("the directory already holds a store or a savepoint")]
    NotEmpty,
    /// A checkpoint or savepoint was asked for while the configured number are in flight.
    #[error("{limit} checkpoints are already in flight")]
    TooManyInFlight {
        /// The configured maximum.
        limit: usize,
    },
    /// No checkpoint or savepoint of this id is in flight or finished unreported.
    #[error("no checkpoint {id} is in flight")]
    UnknownCheckpoint {
        /// The id asked for.
        id: u64,
    },
    /// A snapshot's keys were routed to key groups by another hash than the backend's: every
    /// key would be looked for in the wrong key group. Nothing was restored and the snapshot
    /// is unchanged; restore it into a backend built with the hash it names
    /// ([`KeyedBackendBuilder::key_hash`](crate::state::KeyedBackendBuilder::key_hash),
    /// [`java_key_hash`](crate::state::KeyedBackendBuilder::java_key_hash), or neither for
    /// the default).
    #[error("the snapshot's keys were routed by the key hash {snapshot:?}, this backend's by {backend:?}")]
    KeyHashMismatch {
        /// The name the snapshot records.
        snapshot: String,
        /// The name of the backend's hash.
        backend: String,
    },
    /// A savepoint was asked of a backend holding a restored state whose records were partly
    /// written by older serializers, before the state was registered again: the savepoint
    /// converts those records with the state's present serializers, so register it first (or
    /// take a checkpoint, which keeps them as they are).
    #[error("state {name:?} holds records of older serializers and is not registered again; register it before taking a savepoint")]
    UnmigratedState {
        /// The state.
        name: String,
    },
    /// A snapshot cannot be restored into this backend (different max parallelism, key
    /// serializer, states, or key groups that overlap or are missing).
    #[error("the snapshot cannot be restored here: {why}")]
    IncompatibleSnapshot {
        /// What does not fit.
        why: String,
    },
    /// A job graph that cannot run, refused before it starts.
    #[error("the job cannot run: {why}")]
    InvalidJob {
        /// What is wrong with it.
        why: String,
    },
}

impl Error {
    /// The error of a `worker` thread whose work panicked with `payload`.
    pub(crate) fn worker_died(worker: &'static str, payload: &(dyn std::any::Any + Send)) -> Self {
        let why = match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
            (Some(s), _) => (*s).to_owned(),
            (_, Some(s)) => s.clone(),
            _ => "a panic without a message".to_owned(),
        };
        Error::WorkerDied { worker, why }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn corrupted(file: impl Into<PathBuf>, offset: u64, kind: Corruption) -> Self {
        Error::Corrupted { file: file.into(), offset, kind }
    }
}
