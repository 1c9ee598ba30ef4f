//! Sources: partitioned and replayable. A source has a fixed number of partitions; each
//! parallel instance of it reads the partitions `p` with `p % parallelism == index`, and a
//! checkpoint stores each partition's offset, so a restore (at any parallelism) resumes every
//! partition exactly where the checkpoint's barrier left it.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Misuse;
use crate::{Error, Result};

use super::emit::NO_TIMESTAMP;

/// What a reader gives when asked for its next record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll<T> {
    /// A record and its timestamp ([`NO_TIMESTAMP`] for none).
    Record(T, i64),
    /// Nothing right now; ask again later.
    Idle,
    /// The partition has ended.
    End,
}

/// A partitioned, replayable source of records of type `Out`.
pub trait Source: Send + Sync + 'static {
    /// The records it gives.
    type Out: Send + 'static;
    /// How many partitions it has; at least 1, and the same in every run of the job.
    fn partitions(&self) -> usize;
    /// Opens `partition` at `offset`: where an earlier reader of it stood (its
    /// [`SourceReader::offset`] at a checkpoint), or its beginning when `None`.
    fn open(&self, partition: usize, offset: Option<&[u8]>) -> Result<Box<dyn SourceReader<Self::Out>>>;
}

/// The reader of one partition of a [`Source`].
pub trait SourceReader<T>: Send {
    /// The next record, or that there is none now or ever.
    fn poll(&mut self) -> Result<Poll<T>>;
    /// Where the reader stands, after the last record it gave: what
    /// [`Source::open`] resumes from.
    fn offset(&self) -> Vec<u8>;
}

fn bad_offset(what: &'static str) -> Error {
    Misuse::IncompatibleSnapshot { why: format!("a source offset does not fit: {what}") }.into()
}

/// A generated sequence: the numbers `0..count` cut into `partitions` contiguous ranges (as
/// Flink's `NumberSequenceSource` splits them), each number turned into a record by a function.
pub struct GeneratorSource<T> {
    count: u64,
    partitions: usize,
    make: Arc<dyn Fn(u64) -> T + Send + Sync>,
    timestamp: Option<Arc<dyn Fn(u64) -> i64 + Send + Sync>>,
}

impl<T> std::fmt::Debug for GeneratorSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratorSource").field("count", &self.count).field("partitions", &self.partitions).finish()
    }
}

impl<T: Send + 'static> GeneratorSource<T> {
    /// The records `make(0) .. make(count - 1)` in `partitions` partitions.
    pub fn new(count: u64, partitions: usize, make: impl Fn(u64) -> T + Send + Sync + 'static) -> Self {
        GeneratorSource { count, partitions: partitions.max(1), make: Arc::new(make), timestamp: None }
    }

    /// Gives record `i` the timestamp `timestamp(i)`.
    #[must_use]
    pub fn timestamps(mut self, timestamp: impl Fn(u64) -> i64 + Send + Sync + 'static) -> Self {
        self.timestamp = Some(Arc::new(timestamp));
        self
    }

    /// The numbers of partition `p`.
    fn range(&self, p: usize) -> (u64, u64) {
        let n = self.partitions as u128;
        let at = |i: u128| (i * u128::from(self.count) / n) as u64;
        (at(p as u128), at(p as u128 + 1))
    }
}

struct GeneratorReader<T> {
    next: u64,
    end: u64,
    make: Arc<dyn Fn(u64) -> T + Send + Sync>,
    timestamp: Option<Arc<dyn Fn(u64) -> i64 + Send + Sync>>,
}

impl<T: Send + 'static> Source for GeneratorSource<T> {
    type Out = T;

    fn partitions(&self) -> usize {
        self.partitions
    }

    fn open(&self, partition: usize, offset: Option<&[u8]>) -> Result<Box<dyn SourceReader<T>>> {
        let (start, end) = self.range(partition);
        let next = match offset {
            None => start,
            Some(b) => {
                let b: [u8; 8] = b.try_into().map_err(|_| bad_offset("a generator's offset is 8 bytes"))?;
                let next = u64::from_le_bytes(b);
                if !(start..=end).contains(&next) {
                    return Err(bad_offset("the generator's offset is outside its partition"));
                }
                next
            }
        };
        Ok(Box::new(GeneratorReader { next, end, make: self.make.clone(), timestamp: self.timestamp.clone() }))
    }
}

impl<T: Send> SourceReader<T> for GeneratorReader<T> {
    #[inline]
    fn poll(&mut self) -> Result<Poll<T>> {
        if self.next >= self.end {
            return Ok(Poll::End);
        }
        let i = self.next;
        self.next += 1;
        let ts = self.timestamp.as_ref().map_or(NO_TIMESTAMP, |t| t(i));
        Ok(Poll::Record((self.make)(i), ts))
    }

    fn offset(&self) -> Vec<u8> {
        self.next.to_le_bytes().to_vec()
    }
}

/// The lines of text files, one record per line (without its line ending): a partition per
/// file, in the order given.
#[derive(Debug, Clone)]
pub struct FileSource {
    files: Vec<PathBuf>,
}

impl FileSource {
    /// The lines of `file`, as one partition.
    pub fn new(file: impl Into<PathBuf>) -> Self {
        FileSource { files: vec![file.into()] }
    }

    /// The lines of each of `files`, a partition each.
    pub fn files(files: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        FileSource { files: files.into_iter().map(Into::into).collect() }
    }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.to_owned(), source }
}

/// Reads the lines of one file from a byte position on.
struct LineReader {
    path: PathBuf,
    reader: BufReader<std::fs::File>,
    pos: u64,
    line: Vec<u8>,
}

impl LineReader {
    fn open(path: &Path, pos: u64) -> Result<Self> {
        let mut file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
        let len = file.metadata().map_err(|e| io_error(path, e))?.len();
        if pos > len {
            return Err(bad_offset("a file's offset is past its end"));
        }
        file.seek(SeekFrom::Start(pos)).map_err(|e| io_error(path, e))?;
        Ok(LineReader { path: path.to_owned(), reader: BufReader::with_capacity(1 << 16, file), pos, line: Vec::new() })
    }

    /// The next whole line, if one is there.
    fn next_line(&mut self) -> Result<Option<String>> {
        self.line.clear();
        let n = self.reader.by_ref().read_until(b'\n', &mut self.line).map_err(|e| io_error(&self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        self.pos += n as u64;
        let mut line = &self.line[..];
        if line.last() == Some(&b'\n') {
            line = &line[..line.len() - 1];
        }
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        Ok(Some(String::from_utf8_lossy(line).into_owned()))
    }
}

struct FileReader(LineReader);

impl Source for FileSource {
    type Out = String;

    fn partitions(&self) -> usize {
        self.files.len().max(1)
    }

    fn open(&self, partition: usize, offset: Option<&[u8]>) -> Result<Box<dyn SourceReader<String>>> {
        let Some(path) = self.files.get(partition) else {
            return Err(Misuse::InvalidJob { why: "a file source needs at least one file".into() }.into());
        };
        let pos = match offset {
            None => 0,
            Some(b) => u64::from_le_bytes(b.try_into().map_err(|_| bad_offset("a file's offset is 8 bytes"))?),
        };
        Ok(Box::new(FileReader(LineReader::open(path, pos)?)))
    }
}

impl SourceReader<String> for FileReader {
    fn poll(&mut self) -> Result<Poll<String>> {
        Ok(match self.0.next_line()? {
            Some(line) => Poll::Record(line, NO_TIMESTAMP),
            None => Poll::End,
        })
    }

    fn offset(&self) -> Vec<u8> {
        self.0.pos.to_le_bytes().to_vec()
    }
}

/// The lines of the files of a directory, the files in the order of their names, as one
/// partition. The offset names the file and the position in it, so files added after a
/// checkpoint with names after the file being read are read on restore too.
#[derive(Debug, Clone)]
pub struct DirectorySource {
    dir: PathBuf,
}

impl DirectorySource {
    /// The files of `dir` (not its subdirectories, nor names starting with `.`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirectorySource { dir: dir.into() }
    }
}

struct DirectoryReader {
    files: Vec<String>,
    /// The file being read: its index in `files` and its reader.
    at: usize,
    reader: Option<LineReader>,
    dir: PathBuf,
}

impl Source for DirectorySource {
    type Out = String;

    fn partitions(&self) -> usize {
        1
    }

    fn open(&self, _partition: usize, offset: Option<&[u8]>) -> Result<Box<dyn SourceReader<String>>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, e))? {
            let entry = entry.map_err(|e| io_error(&self.dir, e))?;
            let is_file = entry.file_type().map_err(|e| io_error(&entry.path(), e))?.is_file();
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_file && !name.starts_with('.') {
                files.push(name);
            }
        }
        files.sort();
        let (mut at, mut reader) = (0, None);
        if let Some(b) = offset {
            if b.len() < 8 {
                return Err(bad_offset("a directory's offset starts with 8 bytes of position"));
            }
            let pos = u64::from_le_bytes(b[..8].try_into().map_err(|_| bad_offset("position"))?);
            let name = std::str::from_utf8(&b[8..]).map_err(|_| bad_offset("a file name is UTF-8"))?;
            if !name.is_empty() {
                // The files before the one being read are done; the one being read resumes.
                at = files.partition_point(|f| f.as_str() < name);
                if files.get(at).map(String::as_str) == Some(name) {
                    if pos == u64::MAX {
                        // Read to its end, and the last file then: past it.
                        at += 1;
                    } else {
                        reader = Some(LineReader::open(&self.dir.join(name), pos)?);
                    }
                } else {
                    return Err(bad_offset("the file a directory source was reading is gone"));
                }
            }
        }
        Ok(Box::new(DirectoryReader { files, at, reader, dir: self.dir.clone() }))
    }
}

impl SourceReader<String> for DirectoryReader {
    fn poll(&mut self) -> Result<Poll<String>> {
        loop {
            if self.reader.is_none() {
                let Some(name) = self.files.get(self.at) else { return Ok(Poll::End) };
                self.reader = Some(LineReader::open(&self.dir.join(name), 0)?);
            }
            if let Some(r) = self.reader.as_mut() {
                if let Some(line) = r.next_line()? {
                    return Ok(Poll::Record(line, NO_TIMESTAMP));
                }
            }
            // This file is done; the next.
            self.reader = None;
            self.at += 1;
        }
    }

    fn offset(&self) -> Vec<u8> {
        match (&self.reader, self.files.get(self.at)) {
            (Some(r), Some(name)) => {
                let mut out = r.pos.to_le_bytes().to_vec();
                out.extend_from_slice(name.as_bytes());
                out
            }
            // Between files: the next one from its start.
            (None, Some(name)) => {
                let mut out = 0u64.to_le_bytes().to_vec();
                out.extend_from_slice(name.as_bytes());
                out
            }
            // Past the last file: every file read so far is done, and a restore skips them.
            (_, None) => match self.files.last() {
                Some(last) => {
                    let mut out = u64::MAX.to_le_bytes().to_vec();
                    out.extend_from_slice(last.as_bytes());
                    out
                }
                None => 0u64.to_le_bytes().to_vec(),
            },
        }
    }
}
