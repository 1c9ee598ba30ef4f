//! eddy: the state backend of a stateful stream processor.
//!
//! Layers, bottom to top (each uses only those below it):
//!
//! - [`io`]: the file system behind a small trait, with a fault-injecting implementation;
//! - [`format`]: the on-disk structures, byte by byte, verified on every read;
//! - [`keygroup`]: Flink's key-group partitioning of keys over parallel subtasks;
//! - [`store`]: the log-structured, key-group-partitioned engine, bytes in and bytes out.
#![deny(clippy::host_endian_bytes)]
// Two sites use `unsafe`, each allowed where it stands with its justification: the memory
// map of a segment file (io/std_fs.rs) and a cache prefetch hint (store/table.rs).
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod format;
pub mod io;
pub mod keygroup;
pub mod store;

pub use error::{Corruption, Error, Misuse, Result};
