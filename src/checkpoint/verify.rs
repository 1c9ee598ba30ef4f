//! Verification of checkpoints and savepoints: every checksum, every file, each problem
//! reported with its file and offset.

use std::path::{Path, PathBuf};

use super::storage::CheckpointStorage;
use super::SAVEPOINT_FILE;
use crate::error::Error;
use crate::format::changelog::{ChangelogError, ChangelogReader};
use crate::format::checkpoint::{CheckpointManifest, CHECKPOINT_VERSION};
use crate::format::savepoint::{SavepointReader, Step, SAVEPOINT_VERSION};
use crate::format::{DecodeError, SegmentReader};
use crate::io::{FileBytes, FileSystem};

/// A problem found by verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The damaged or missing file.
    pub file: PathBuf,
    /// Where in it, when that is known.
    pub offset: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl Problem {
    fn from_error(file: &Path, e: Error) -> Self {
        match e {
            Error::Corrupted { file, offset, kind } => Problem { file, offset: Some(offset), what: kind.to_string() },
            other => Problem { file: file.to_path_buf(), offset: None, what: other.to_string() },
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(o) => write!(f, "{} at offset {o}: {}", self.file.display(), self.what),
            None => write!(f, "{}: {}", self.file.display(), self.what),
        }
    }
}

/// Checks checkpoint `id` in `storage`: its manifest, every block, index, filter and footer
/// checksum of every segment it names, and every frame of every changelog file. An empty list means it is sound.
pub fn verify_checkpoint(storage: &dyn CheckpointStorage, id: u64) -> Vec<Problem> {
    let manifest_path = storage.describe_manifest(id);
    let bytes = match storage.read_manifest(id) {
        Ok(b) => b,
        Err(e) => return vec![Problem::from_error(&manifest_path, e)],
    };
    let manifest = match CheckpointManifest::decode(&bytes) {
        Ok(m) => m,
        Err(e) => return vec![Problem::from_error(&manifest_path, e.into_error(&manifest_path, CHECKPOINT_VERSION))],
    };
    let mut problems = Vec::new();
    for s in &manifest.segments {
        let path = storage.describe(&s.file);
        let checked = stored_file(storage, &s.file, s.file_len, &path).and_then(|bytes| {
            SegmentReader::open(bytes, &path).and_then(|r| r.verify()).map_err(|e| Problem::from_error(&path, e))
        });
        problems.extend(checked.err());
    }
    for l in &manifest.logs {
        let path = storage.describe(&l.file);
        let checked = stored_file(storage, &l.file, l.file_len, &path).and_then(|bytes| {
            verify_log(&bytes, l.log_seq).map_err(|e| Problem::from_error(&path, e.into_error(&path)))
        });
        problems.extend(checked.err());
    }
    problems
}

/// The bytes of the stored file `name` (described as `path`), if it has the length its
/// manifest says.
fn stored_file(storage: &dyn CheckpointStorage, name: &str, len: u64, path: &Path) -> Result<FileBytes, Problem> {
    let bytes = storage.open(name).map_err(|e| Problem::from_error(path, e))?;
    if bytes.len() as u64 != len {
        return Err(Problem {
            file: path.to_path_buf(),
            offset: None,
            what: format!("{} bytes long, the manifest says {len}", bytes.len()),
        });
    }
    Ok(bytes)
}

/// Reads every frame and record of a changelog file.
fn verify_log(bytes: &[u8], seq: u64) -> Result<(), ChangelogError> {
    let mut reader = ChangelogReader::new(bytes)?;
    if reader.log_seq() != seq {
        return Err(DecodeError::malformed(8, "changelog sequence number").into());
    }
    while reader.next()?.is_some() {}
    Ok(())
}

/// Checks the savepoint in directory `dir`: its header and every chunk, record and the end
/// marker. An empty list means it is sound.
pub fn verify_savepoint(fs: &dyn FileSystem, dir: &Path) -> Vec<Problem> {
    let path = dir.join(SAVEPOINT_FILE);
    let bytes = match fs.open(&path) {
        Ok(b) => b,
        Err(e) => return vec![Problem::from_error(&path, Error::io(&path, e))],
    };
    let mut reader = match SavepointReader::new(&bytes) {
        Ok(r) => r,
        Err(e) => return vec![Problem::from_error(&path, e.into_error(&path, SAVEPOINT_VERSION))],
    };
    let (mut buf, mut key) = (Vec::new(), Vec::new());
    let mut last: Vec<u8> = Vec::new();
    loop {
        match reader.next() {
            Ok(None) => return Vec::new(),
            Ok(Some(chunk)) => {
                let mut first = true;
                let mut order = |k: &[u8], _: &[u8]| {
                    if first && !last.is_empty() && k <= &last[..] {
                        return Err(Error::corrupted(
                            &path,
                            chunk.offset,
                            crate::Corruption::Malformed("key order across chunks"),
                        ));
                    }
                    first = false;
                    last.clear();
                    last.extend_from_slice(k);
                    Ok(())
                };
                match chunk.try_for_each(&mut buf, &mut key, &mut order) {
                    Ok(()) => {}
                    Err(Step::Bad(d)) => return vec![Problem::from_error(&path, d.into_error(&path))],
                    Err(Step::Stop(e)) => return vec![Problem::from_error(&path, e)],
                }
            }
            Err(d) => return vec![Problem::from_error(&path, d.into_error(&path))],
        }
    }
}
