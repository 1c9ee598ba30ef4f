//! eddy: the state backend of a stateful stream processor.
//!
//! Layers, bottom to top (each uses only those below it):
//!
//! - [`io`]: the file system behind a small trait, with a fault-injecting implementation;
//! - [`keygroup`]: Flink's key-group partitioning of keys over parallel subtasks (a leaf);
//! - [`codec`]: serializers, versioned and described by snapshots stored with the data (a leaf);
//! - [`format`](mod@format): the on-disk structures, byte by byte, verified on every read, and
//!   the snapshot types that checkpoints record of each state;
//! - [`store`]: the log-structured, key-group-partitioned engine, bytes in and bytes out;
//! - [`checkpoint`]: checkpoints, savepoints and restore, reaching the state layer only through
//!   the traits it implements ([`SnapshotSource`](checkpoint::SnapshotSource),
//!   [`OperatorSource`](checkpoint::OperatorSource));
//! - [`state`]: what user code touches: keyed state of every kind under a current key and
//!   namespace, TTL, timers, operator list state and broadcast state;
//! - [`runtime`]: the operator runtime: stateful jobs on threads, checkpoint barriers, a
//!   coordinator, exactly-once sinks and restarts from the latest checkpoint.
//!
//! `tests/layering.rs` checks that each layer imports only those below it.
//!
//! ```
//! use std::sync::Arc;
//! use eddy::io::FaultFs;
//! use eddy::keygroup::{java_hash_i64, MaxParallelism};
//! use eddy::store::StoreOptions;
//!
//! # fn main() -> eddy::Result<()> {
//! // An in-memory file system keeps the example self-contained; `StoreOptions::new()` alone
//! // uses the real one.
//! let fs = FaultFs::new();
//! let mut store = StoreOptions::new().file_system(Arc::new(fs.clone())).open("/db")?;
//!
//! // Keys start with their key group: here Flink's for the Long key 42 at max parallelism 128.
//! let kg = MaxParallelism::new(128)?.key_group(java_hash_i64(42));
//! assert_eq!(kg, 29);
//! let mut key = kg.to_be_bytes().to_vec();
//! key.extend_from_slice(&42i64.to_be_bytes());
//!
//! store.put(&key, b"a")?;
//! store.merge(&key, b"b")?;
//! assert_eq!(store.get(&key)?, Some(&b"ab"[..]));
//! store.close()?;
//!
//! // A clean close is durable: reopening starts from it.
//! let mut store = StoreOptions::new().file_system(Arc::new(fs)).open("/db")?;
//! assert_eq!(store.get(&key)?, Some(&b"ab"[..]));
//! # Ok(())
//! # }
//! ```
#![deny(clippy::host_endian_bytes)]
// These sites use `unsafe`, each allowed where it stands with its justification: the memory
// map of a segment file (io/std_fs.rs), a cache prefetch hint (store/table.rs) and the
// scheduling policy and nice value of background threads (sys.rs).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod codec;
mod error;
pub mod format;
pub mod io;
pub mod keygroup;
pub mod runtime;
pub mod state;
pub mod store;
mod sys;

pub use error::{Corruption, Error, Incompatibility, Incomplete, Misuse, Result, SerializerPart};
