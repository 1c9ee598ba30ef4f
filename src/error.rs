//! The errors eddy returns. Each variant says what happened and what a caller can do about it.

use std::io;
use std::path::PathBuf;

use crate::keygroup::KeyGroupError;

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
    /// A key-group computation got an invalid parallelism or key group.
    #[error(transparent)]
    KeyGroup(#[from] KeyGroupError),
    /// The API was used in a way it does not allow.
    #[error("invalid use: {0}")]
    Misuse(#[from] Misuse),
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
    /// The directory is already open in another store of this process.
    #[error("the store directory is already open")]
    AlreadyOpen,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn corrupted(file: impl Into<PathBuf>, offset: u64, kind: Corruption) -> Self {
        Error::Corrupted { file: file.into(), offset, kind }
    }
}
