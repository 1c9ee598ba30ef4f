//! The savepoint writer: the claim on a savepoint's directory, and the asynchronous part that
//! writes the savepoint file.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::worker::{check_abort, SavepointJob};
use super::{CheckpointInfo, SnapshotKind, SAVEPOINT_CLAIM, SAVEPOINT_FILE};
use crate::error::{Error, Misuse, Result};
use crate::format::savepoint::SavepointWriter;
use crate::io::{FileSystem, WritableFile};
use crate::store::compaction::FilterDecision;
use crate::store::scan_segments_migrated;

/// Claims `dir` for a savepoint: creates it if needed and the claim file in it, refusing a
/// directory that holds a savepoint or is claimed already.
pub(super) fn claim_savepoint_dir(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    crate::io::create_dir_durable(fs, dir).map_err(|e| Error::io(dir, e))?;
    let claim = dir.join(SAVEPOINT_CLAIM);
    match fs.create_new(&claim) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(Misuse::NotEmpty.into()),
        Err(e) => return Err(Error::io(&claim, e)),
    }
    // Checked once claimed: a savepoint completes before its claim goes.
    if fs.exists(&dir.join(SAVEPOINT_FILE)) {
        let _ = fs.remove(&claim);
        return Err(Misuse::NotEmpty.into());
    }
    Ok(())
}

/// The asynchronous part of a savepoint: every live record of the snapshot, by key group,
/// into one file written under a temporary name and renamed when complete.
pub(super) fn savepoint(mut job: SavepointJob) -> Result<CheckpointInfo> {
    let start = Instant::now();
    let filter = &mut job.filter;
    let fs = job.fs.clone();
    let tmp = job.dir.join(format!("{SAVEPOINT_FILE}.tmp"));
    let result = (|| {
        let segments = job.snapshot.segments()?;
        let file = PipedFile::new(fs.create(&tmp).map_err(|e| Error::io(&tmp, e))?).map_err(|e| Error::io(&tmp, e))?;
        let mut writer = SavepointWriter::new(Box::new(file), &tmp, job.id, &job.meta, job.level)?;
        let mut kept = Vec::new();
        let mut n = 0u64;
        scan_segments_migrated(&segments, job.range, job.snapshot.migrations(), |k, v| {
            n += 1;
            if n.is_multiple_of(4096) {
                check_abort(job.id, &job.abort)?;
            }
            kept.clear();
            match filter.filter(k, v, &mut kept) {
                FilterDecision::Keep => writer.add(k, v),
                FilterDecision::Replace => writer.add(k, &kept),
                FilterDecision::Remove => Ok(()),
            }
        })?;
        check_abort(job.id, &job.abort)?;
        let len = writer.finish()?;
        let path = job.dir.join(SAVEPOINT_FILE);
        fs.rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        fs.sync_dir(&job.dir).map_err(|e| Error::io(&job.dir, e))?;
        Ok(CheckpointInfo {
            id: job.id,
            kind: SnapshotKind::Savepoint,
            files: 1,
            logs: 0,
            new_files: 1,
            bytes_copied: len,
            bytes_new: len,
            manifest_bytes: len,
            state_bytes: len,
            async_duration: start.elapsed(),
        })
    })();
    if result.is_err() {
        let _ = fs.remove(&tmp);
    }
    let _ = fs.remove(&job.dir.join(SAVEPOINT_CLAIM));
    result
}

/// A file written by a thread of its own, which syncs every [`PipedFile::SYNC_EVERY`] bytes:
/// the disk writes one part while the records of the next are read, so a savepoint is
/// written at the speed of the slower of the two rather than of their sum.
struct PipedFile {
    tx: Option<mpsc::SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    buf: Vec<u8>,
    len: u64,
}

impl PipedFile {
    const PIECE: usize = 1 << 20;
    const SYNC_EVERY: u64 = 8 << 20;

    fn new(mut file: Box<dyn WritableFile>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(8);
        let thread = std::thread::Builder::new().name("eddy-savepoint-writer".into()).spawn(move || {
            crate::sys::background_thread();
            let mut unsynced = 0u64;
            while let Ok(piece) = rx.recv() {
                file.append(&piece)?;
                unsynced += piece.len() as u64;
                if unsynced >= Self::SYNC_EVERY {
                    file.sync()?;
                    unsynced = 0;
                }
            }
            file.sync()
        })?;
        Ok(PipedFile { tx: Some(tx), thread: Some(thread), buf: Vec::with_capacity(Self::PIECE), len: 0 })
    }

    /// Hands the buffered bytes to the writing thread.
    fn send(&mut self) -> std::io::Result<()> {
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(Self::PIECE));
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(piece).is_ok());
        if sent {
            Ok(())
        } else {
            // The thread stopped: it failed, and says why when joined.
            self.finish()?;
            Err(std::io::Error::other("the savepoint writer stopped"))
        }
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(std::io::Error::other("the savepoint writer panicked"))),
            None => Ok(()),
        }
    }
}

impl WritableFile for PipedFile {
    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(data);
        self.len += data.len() as u64;
        if self.buf.len() >= Self::PIECE {
            self.send()?;
        }
        Ok(())
    }

    /// Writes what is buffered and waits until everything is durable; the file takes no
    /// more appends after it.
    fn sync(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.finish()
    }

    fn len(&self) -> u64 {
        self.len
    }
}

impl Drop for PipedFile {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
