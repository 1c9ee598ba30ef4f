//! Restore: a new store directory from checkpoints (their segments linked or copied, never
//! rewritten) or savepoints (their records written into new segments).

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use super::storage::CheckpointStorage;
use super::SAVEPOINT_FILE;
use crate::codec::Compatibility;
use crate::error::{Error, Misuse, Result};
use crate::format::changelog::ChangelogReader;
use crate::format::checkpoint::{
    CheckpointManifest, LogRef, SnapshotDecodeError, SnapshotMeta, StateMetaInfo, CHECKPOINT_VERSION,
};
use crate::format::meta::OperatorStateSnapshot;
use crate::format::savepoint::{SavepointReader, Step, SAVEPOINT_VERSION};
use crate::format::store_manifest::{ManifestSegment, StoreManifest};
use crate::format::SchemaTag;
use crate::format::{RecordKind, SegmentWriter, WriterOptions};
use crate::io::{FileBytes, FileSystem};
use crate::keygroup::{KeyGroupRange, MaxParallelism};
use crate::store::segment::segment_file_name;
use crate::store::Replayed;

/// A snapshot to restore from.
#[derive(Debug, Clone)]
pub enum RestoreSource {
    /// Checkpoint `id` in `storage`.
    Checkpoint {
        /// Where it is.
        storage: Arc<dyn CheckpointStorage>,
        /// Its id.
        id: u64,
    },
    /// The savepoint in directory `dir` of `fs`.
    Savepoint {
        /// The file system it is on.
        fs: Arc<dyn FileSystem>,
        /// Its directory.
        dir: PathBuf,
    },
}

/// What a restore gives back besides the keyed backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Restored {
    /// The operator and broadcast state of each source, in the order of the sources (see
    /// [`OperatorStateBackend::redistribute`](crate::state::OperatorStateBackend::redistribute)
    /// when the parallelism changed, and
    /// [`OperatorStateBackend::restore`](crate::state::OperatorStateBackend::restore)).
    pub operator_states: Vec<OperatorStateSnapshot>,
}

/// The newest checkpoint in `storage` whose manifest decodes, if any. A damaged manifest is
/// passed over for an older one; a manifest of a newer format version is an error
/// ([`Error::UnsupportedVersion`]): this build cannot tell whether that checkpoint is the one
/// to restore, and does not guess.
pub fn latest_checkpoint(storage: &dyn CheckpointStorage) -> Result<Option<u64>> {
    for id in storage.manifests()?.into_iter().rev() {
        let bytes = storage.read_manifest(id)?;
        match CheckpointManifest::decode(&bytes) {
            Ok(_) => return Ok(Some(id)),
            Err(e @ SnapshotDecodeError::Version(_)) => {
                return Err(e.into_error(&storage.describe_manifest(id), CHECKPOINT_VERSION))
            }
            Err(SnapshotDecodeError::Corrupt(_)) => {}
        }
    }
    Ok(None)
}

/// Per state id, the versions of its serializers.
pub(crate) type Versions = Vec<(u16, Vec<u32>)>;

/// Where a restored segment came from.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// The checkpoint storage, by its description.
    pub(crate) storage: PathBuf,
    /// The segment's id in the restored store.
    pub(crate) segment: u64,
    /// The shared file it was taken from.
    pub(crate) file: String,
    /// The serializer versions its records were written with.
    pub(crate) versions: Versions,
}

/// A store directory made ready from snapshots.
pub(crate) struct Prepared {
    /// The job the snapshots belong to.
    pub(crate) job: String,
    /// The snapshots' key serializer.
    pub(crate) key_serializer: crate::codec::SerializerSnapshot,
    /// The states of the snapshots (the same in all of them).
    pub(crate) states: Vec<StateMetaInfo>,
    pub(crate) restored: Restored,
    /// Where each new segment came from, for segments of checkpoints.
    pub(crate) origin: Vec<Origin>,
    /// The changelogs to replay over the segments once the store is open.
    pub(crate) replay: Vec<Replay>,
}

/// The changelog files of one checkpoint, to replay for the key groups of `range`.
pub(crate) struct Replay {
    storage: Arc<dyn CheckpointStorage>,
    logs: Vec<LogRef>,
    range: KeyGroupRange,
}

fn incompatible(why: String) -> Error {
    Misuse::IncompatibleSnapshot { why }.into()
}

enum Loaded {
    Checkpoint { storage: Arc<dyn CheckpointStorage>, manifest: Box<CheckpointManifest> },
    Savepoint { path: PathBuf, bytes: crate::io::FileBytes },
}

impl Loaded {
    fn meta(&self) -> Result<SnapshotMeta> {
        match self {
            Loaded::Checkpoint { manifest, .. } => Ok(manifest.meta.clone()),
            Loaded::Savepoint { path, bytes } => {
                Ok(SavepointReader::new(bytes).map_err(|e| e.into_error(path, SAVEPOINT_VERSION))?.meta)
            }
        }
    }
}

fn load(source: &RestoreSource) -> Result<Loaded> {
    match source {
        RestoreSource::Checkpoint { storage, id } => {
            let bytes = storage.read_manifest(*id)?;
            let manifest = CheckpointManifest::decode(&bytes)
                .map_err(|e| e.into_error(&storage.describe_manifest(*id), CHECKPOINT_VERSION))?;
            if manifest.checkpoint_id != *id {
                return Err(Error::corrupted(
                    storage.describe_manifest(*id),
                    8,
                    crate::Corruption::Malformed("checkpoint id"),
                ));
            }
            Ok(Loaded::Checkpoint { storage: storage.clone(), manifest: Box::new(manifest) })
        }
        RestoreSource::Savepoint { fs, dir } => {
            let path = dir.join(SAVEPOINT_FILE);
            let bytes = fs.open(&path).map_err(|e| Error::io(&path, e))?;
            Ok(Loaded::Savepoint { path, bytes })
        }
    }
}

fn range_of(meta: &SnapshotMeta) -> KeyGroupRange {
    match meta.key_groups {
        Some((a, b)) => KeyGroupRange::new(a, b).unwrap_or(KeyGroupRange::EMPTY),
        None => KeyGroupRange::EMPTY,
    }
}

/// The key-group ranges outside `keep`, within `0..max_parallelism`.
fn outside(keep: KeyGroupRange, max_parallelism: u32) -> Vec<(u16, u16)> {
    let last = (max_parallelism - 1) as u16;
    if keep.is_empty() {
        return vec![(0, last)];
    }
    let mut out = Vec::new();
    if keep.start() > 0 {
        out.push((0, keep.start() - 1));
    }
    if keep.end() < last {
        out.push((keep.end() + 1, last));
    }
    out
}

/// The backend a restore fills, as far as the snapshots must fit it.
pub(crate) struct RestoreTarget<'a> {
    /// The key groups it owns.
    pub(crate) range: KeyGroupRange,
    pub(crate) max_parallelism: MaxParallelism,
    /// The snapshot of its key serializer.
    pub(crate) key_serializer: &'a crate::codec::SerializerSnapshot,
    /// How its key serializer reads keys written by the serializer a snapshot describes.
    pub(crate) key_compatibility: &'a dyn Fn(&crate::codec::SerializerSnapshot) -> crate::codec::Compatibility,
    /// The name of its key-routing hash.
    pub(crate) key_hash: &'a str,
}

/// Checks the sources against each other and the new backend, then fills the empty store
/// directory `dir` with the segments of the key groups the backend owns.
pub(crate) fn prepare_store(
    sources: &[RestoreSource],
    fs: &Arc<dyn FileSystem>,
    dir: &Path,
    target: &RestoreTarget<'_>,
    writer: WriterOptions,
) -> Result<Prepared> {
    let RestoreTarget { range, max_parallelism, key_serializer, key_compatibility, key_hash } = *target;
    if sources.is_empty() {
        return Err(Misuse::InvalidOption { name: "sources", why: "a restore needs at least one snapshot" }.into());
    }
    let loaded: Vec<Loaded> = sources.iter().map(load).collect::<Result<_>>()?;
    let metas: Vec<SnapshotMeta> = loaded.iter().map(Loaded::meta).collect::<Result<_>>()?;
    // Every source must come from the same job shape.
    let mut states: Vec<StateMetaInfo> = Vec::new();
    let mut covered = 0u32;
    let mut taken: Vec<KeyGroupRange> = Vec::new();
    for m in &metas {
        if m.job != metas[0].job {
            return Err(incompatible(format!(
                "the snapshots are of different jobs ({:?} and {:?})",
                metas[0].job, m.job
            )));
        }
        if m.max_parallelism != max_parallelism.get() {
            return Err(incompatible(format!(
                "the snapshot has max parallelism {}, the backend {}",
                m.max_parallelism,
                max_parallelism.get()
            )));
        }
        // Keys are read as they are, or by the key serializer reconfigured from the
        // snapshot's; a change of their bytes would move keys to other key groups and break
        // lookups, so it is refused here.
        let why = match key_compatibility(&m.key_serializer) {
            Compatibility::AsIs | Compatibility::WithReconfiguredSerializer => None,
            Compatibility::AfterMigration => Some(
                "the key serializer writes other bytes for the same keys (their key groups and \
                 lookups would change): keys cannot be migrated online; rewrite the snapshot \
                 offline with an eager migration of keys",
            ),
            _ => Some("the snapshot's keys were written by another serializer"),
        };
        if let Some(why) = why {
            return Err(crate::error::Incompatibility {
                state: None,
                part: crate::SerializerPart::Key,
                stored: m.key_serializer.clone(),
                requested: key_serializer.clone(),
                why: why.into(),
            }
            .into());
        }
        if m.key_serializer != metas[0].key_serializer {
            return Err(incompatible("the snapshots' keys were written by different serializers".into()));
        }
        // A snapshot that does not name its hash (checkpoint manifests before version 3,
        // savepoints before version 2) cannot be checked.
        if let Some(found) = m.key_hash.as_deref().filter(|found| *found != key_hash) {
            return Err(Misuse::KeyHashMismatch { snapshot: found.to_owned(), backend: key_hash.to_owned() }.into());
        }
        for s in &m.states {
            match states.iter().position(|t| t.name == s.name || t.id == s.id) {
                None => states.push(s.clone()),
                Some(i) => {
                    let t = &mut states[i];
                    if t.name != s.name || t.id != s.id || t.kind != s.kind || t.serializers != s.serializers {
                        return Err(incompatible(format!(
                            "state {:?} (id {}) differs between the snapshots from state {:?} (id {})",
                            s.name, s.id, t.name, t.id
                        )));
                    }
                    if t.tag != s.tag {
                        return Err(incompatible(format!(
                            "state {:?} has different present writers in the snapshots ({:?} and {:?})",
                            s.name, t.tag, s.tag
                        )));
                    }
                    // Each instance lists the older writers it still holds records of.
                    for w in &s.older {
                        if !t.older.iter().any(|o| o.tag == w.tag) {
                            t.older.push(w.clone());
                        }
                    }
                }
            }
        }
        let mine = range_of(m).intersection(&range);
        if taken.iter().any(|t| !t.intersection(&mine).is_empty()) {
            return Err(incompatible("two snapshots hold the same key groups".into()));
        }
        covered += mine.len();
        taken.push(mine);
    }
    if covered != range.len() {
        return Err(incompatible(format!("the snapshots hold {covered} of the backend's {} key groups", range.len())));
    }
    states.sort_by_key(|s| s.id);
    // Every file's records must come from a writer the snapshot lists.
    for (l, m) in loaded.iter().zip(&metas) {
        let Loaded::Checkpoint { manifest, .. } = l else { continue };
        let files = manifest
            .segments
            .iter()
            .map(|s| (&s.file, &s.versions))
            .chain(manifest.logs.iter().map(|l| (&l.file, &l.versions)));
        for (file, versions) in files {
            for (id, entry) in versions.iter() {
                let Some(s) = m.states.iter().find(|s| s.id == *id) else { continue };
                if s.tag != *entry && !s.older.iter().any(|w| w.tag == *entry) {
                    return Err(incompatible(format!(
                        "{file} holds records of state {:?} by a writer (tag entry {entry:?}) the snapshot does not list",
                        s.name
                    )));
                }
            }
        }
    }

    let mut segments: Vec<ManifestSegment> = Vec::new();
    let mut origin = Vec::new();
    let mut next_id = 1u64;
    let mut operator_states = Vec::new();
    let mut replay = Vec::new();
    for (l, m) in loaded.iter().zip(&metas) {
        operator_states.push(m.operator.clone());
        let mine = range_of(m).intersection(&range);
        if mine.is_empty() {
            continue;
        }
        let hide = outside(mine, max_parallelism.get());
        match l {
            Loaded::Checkpoint { storage, manifest } => {
                let key = storage.describe("");
                for s in &manifest.segments {
                    let id = next_id;
                    next_id += 1;
                    let target = dir.join(segment_file_name(id));
                    let len = storage.fetch(&s.file, &target)?;
                    check_len(storage.as_ref(), &s.file, len, s.file_len)?;
                    let mut mask = s.mask.clone();
                    mask.extend(hide.iter().copied());
                    segments.push(ManifestSegment {
                        id,
                        mask,
                        tag: SchemaTag::new(s.versions.iter().cloned()),
                        max_value_len: None,
                    });
                    origin.push(Origin {
                        storage: key.clone(),
                        segment: id,
                        file: s.file.clone(),
                        versions: s.versions.clone(),
                    });
                }
                // The changelog goes over the segments: its writes are newer.
                if !manifest.logs.is_empty() {
                    replay.push(Replay { storage: storage.clone(), logs: manifest.logs.clone(), range: mine });
                }
            }
            Loaded::Savepoint { path, bytes } => {
                // A savepoint's records were written by the serializers its meta info lists.
                // (Records of older writers were converted as the savepoint was written.)
                let tag = SchemaTag::new(m.states.iter().map(|s| (s.id, s.tag.clone())));
                // Two halves of the key groups, written as two segments by two threads: most
                // of a rebuild is building and compressing blocks.
                let halves = split_in_two(mine);
                let ids: Vec<u64> = (next_id..).take(halves.len()).collect();
                next_id += halves.len() as u64;
                let rebuild_half = |i: usize| rebuild(fs, dir, ids[i], path, bytes, halves[i], writer);
                let built = std::thread::scope(|scope| {
                    // The second half on a thread of its own, the first on this one.
                    let second = halves.get(1).map(|_| {
                        std::thread::Builder::new().name("eddy-rebuild".into()).spawn_scoped(scope, || rebuild_half(1))
                    });
                    let mut built: Vec<Result<bool>> = halves.first().map(|_| rebuild_half(0)).into_iter().collect();
                    match second {
                        Some(Ok(handle)) => built.push(handle.join().unwrap_or_else(|_| {
                            Err(Error::io(path, std::io::Error::other("the thread rebuilding a savepoint panicked")))
                        })),
                        // No thread to be had: this one writes that half too.
                        Some(Err(_)) => built.push(rebuild_half(1)),
                        None => {}
                    }
                    built
                });
                for (id, built) in ids.into_iter().zip(built) {
                    if built? {
                        segments.push(ManifestSegment { id, mask: Vec::new(), tag: tag.clone(), max_value_len: None });
                    }
                }
            }
        }
    }
    // The segment order only matters within one source's key groups; keep each source's.
    crate::store::install_version(fs.as_ref(), dir, &StoreManifest { next_segment_id: next_id, segments })?;
    Ok(Prepared {
        job: metas[0].job.clone(),
        key_serializer: metas[0].key_serializer.clone(),
        states,
        restored: Restored { operator_states },
        origin,
        replay,
    })
}

/// `range` in two halves (one if it holds a single key group, none if it is empty).
fn split_in_two(range: KeyGroupRange) -> Vec<KeyGroupRange> {
    if range.len() < 2 {
        return if range.is_empty() { Vec::new() } else { vec![range] };
    }
    let mid = range.start() + (range.len() / 2) as u16;
    match (KeyGroupRange::new(range.start(), mid - 1), KeyGroupRange::new(mid, range.end())) {
        (Ok(low), Ok(high)) => vec![low, high],
        _ => vec![range],
    }
}

/// Writes the records of `range` in the savepoint `bytes` as segment `id`; whether it holds
/// any.
fn rebuild(
    fs: &Arc<dyn FileSystem>,
    dir: &Path,
    id: u64,
    path: &Path,
    bytes: &[u8],
    range: KeyGroupRange,
    writer: WriterOptions,
) -> Result<bool> {
    let mut reader = SavepointReader::new(bytes).map_err(|e| e.into_error(path, SAVEPOINT_VERSION))?;
    let target = dir.join(segment_file_name(id));
    let file = fs.create(&target).map_err(|e| Error::io(&target, e))?;
    let mut out = SegmentWriter::new(file, &target, writer)?;
    let (mut buf, mut key) = (Vec::new(), Vec::new());
    let mut any = false;
    let mut last: Vec<u8> = Vec::new();
    while let Some(chunk) = reader.next().map_err(|e| e.into_error(path))? {
        if !range.contains(chunk.key_group) {
            continue;
        }
        let offset = chunk.offset;
        let mut add = |k: &[u8], v: &[u8]| {
            if any && k <= &last[..] {
                return Err(Error::corrupted(path, offset, crate::Corruption::Malformed("key order across chunks")));
            }
            last.clear();
            last.extend_from_slice(k);
            any = true;
            out.add(RecordKind::Put, k, v)
        };
        chunk.try_for_each(&mut buf, &mut key, &mut add).map_err(|e| match e {
            Step::Stop(e) => e,
            Step::Bad(d) => d.into_error(path),
        })?;
    }
    if !any {
        drop(out);
        fs.remove(&target).map_err(|e| Error::io(&target, e))?;
        return Ok(false);
    }
    out.finish()?;
    Ok(true)
}

/// That the stored file `name` has the length its manifest says.
fn check_len(storage: &dyn CheckpointStorage, name: &str, len: u64, expected: u64) -> Result<()> {
    if len == expected {
        return Ok(());
    }
    let kind = if len < expected {
        crate::Corruption::Truncated { needed: expected, available: len }
    } else {
        crate::Corruption::Malformed("file longer than the manifest says")
    };
    Err(Error::corrupted(storage.describe(name), len.min(expected), kind))
}

/// How many records a replay reads ahead of the one it applies.
const REPLAY_AHEAD: usize = 16;

/// The changelog bytes a replay expects per key it writes (a record of a short key and value
/// takes some tens of bytes), to size the index before it starts.
const REPLAY_BYTES_PER_KEY: u64 = 64;

/// Records a replay's reading thread hands over at once.
const REPLAY_BATCH: usize = 1024;

/// Batches the reading thread may be ahead of the applying one.
const REPLAY_QUEUE: usize = 16;

/// Applies the writes of the changelog files of `replay` (oldest first) to keys of its key
/// groups, in the order they were made, to the restored `store`: its mutable region then holds
/// them, as it held them when the checkpoint was taken.
///
/// Two threads share the work: one verifies and decodes the files (every frame's checksum is
/// checked before any of its records is handed over), the calling one applies the records,
/// each a few behind the one whose index slots it asks the processor to fetch, since most of
/// applying a record is waiting for those cache misses.
pub(crate) fn replay(store: &mut crate::store::Store, replay: &Replay) -> Result<()> {
    // Room for the keys up front (a guess from the logs' size): an index that grows as the
    // replay goes rehashes everything it holds each time.
    let bytes: u64 = replay.logs.iter().map(|l| l.file_len).sum();
    // The logs' writes get the tag of the serializers that wrote them.
    let tag = replay
        .logs
        .iter()
        .try_fold(SchemaTag::default(), |acc, l| acc.union(&SchemaTag::new(l.versions.iter().cloned())));
    // One chain of changelog files is written by one writer per state.
    let Some(tag) = tag else {
        return Err(incompatible("the changelog files of the checkpoint give a state different writers".into()));
    };
    store.set_schema(tag)?;
    store.reserve_keys(usize::try_from(bytes / REPLAY_BYTES_PER_KEY).unwrap_or(usize::MAX));
    let mut files = Vec::with_capacity(replay.logs.len());
    for l in &replay.logs {
        let bytes = replay.storage.open(&l.file)?;
        check_len(replay.storage.as_ref(), &l.file, bytes.len() as u64, l.file_len)?;
        files.push(bytes);
    }
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Result<Vec<Replayed<'_>>>>(REPLAY_QUEUE);
        let files = &files;
        let reading = std::thread::Builder::new().name("eddy-replay".into()).spawn_scoped(scope, move || {
            // A failed send means the applying side stopped (with an error of its own).
            let sent = decode_logs(replay, files, |batch| tx.send(Ok(batch)).is_ok());
            if let Err(e) = sent {
                let _ = tx.send(Err(e));
            }
        });
        if reading.is_err() {
            // No thread to be had: decode and apply here.
            let mut applied = Ok(());
            decode_logs(replay, files, |batch| {
                applied = apply(store, &batch);
                applied.is_ok()
            })?;
            return applied;
        }
        for batch in rx {
            apply(store, &batch?)?;
        }
        Ok(())
    })
}

/// Verifies and decodes the changelog files of `replay` (opened as `files`), handing the
/// records of its key groups to `emit` in batches, in order, until `emit` returns `false`.
fn decode_logs<'a>(
    replay: &Replay,
    files: &'a [FileBytes],
    mut emit: impl FnMut(Vec<Replayed<'a>>) -> bool,
) -> Result<()> {
    let mut batch = Vec::with_capacity(REPLAY_BATCH);
    for (l, bytes) in replay.logs.iter().zip(files) {
        let path = replay.storage.describe(&l.file);
        let mut reader = ChangelogReader::new(bytes).map_err(|e| e.into_error(&path))?;
        if reader.log_seq() != l.log_seq {
            return Err(Error::corrupted(path, 8, crate::Corruption::Malformed("changelog sequence number")));
        }
        while let Some(r) = reader.next().map_err(|e| e.into_error(&path))? {
            if !replay.range.contains(u16::from_be_bytes([r.key[0], r.key[1]])) {
                continue;
            }
            batch.push(Replayed::new(r.kind, r.key, r.group_len, r.value));
            if batch.len() == REPLAY_BATCH && !emit(std::mem::replace(&mut batch, Vec::with_capacity(REPLAY_BATCH))) {
                return Ok(());
            }
        }
    }
    if !batch.is_empty() {
        emit(batch);
    }
    Ok(())
}

/// Applies a batch of replayed records, in order.
fn apply(store: &mut crate::store::Store, batch: &[Replayed<'_>]) -> Result<()> {
    for r in batch.iter().take(REPLAY_AHEAD) {
        store.prefetch_replay(r);
    }
    for (i, r) in batch.iter().enumerate() {
        if let Some(a) = batch.get(i + REPLAY_AHEAD) {
            store.prefetch_replay(a);
        }
        store.replay(r)?;
    }
    Ok(())
}

/// The segments of a restored store that came from the storage described by `storage`.
pub(crate) fn origin_for(origin: &[Origin], storage: &Path) -> Vec<Origin> {
    origin.iter().filter(|o| o.storage == storage).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_splits_into_halves_that_cover_it_exactly() {
        assert!(split_in_two(KeyGroupRange::EMPTY).is_empty());
        for (start, end) in [(0, 0), (5, 5), (0, 1), (3, 5), (0, 127), (10, 32767)] {
            let range = KeyGroupRange::new(start, end).unwrap();
            let halves = split_in_two(range);
            assert_eq!(halves.len(), if start == end { 1 } else { 2 }, "{range:?}");
            assert_eq!(halves.iter().map(KeyGroupRange::len).sum::<u32>(), range.len());
            assert_eq!(halves[0].start(), start);
            assert_eq!(halves[halves.len() - 1].end(), end);
            if let [low, high] = halves[..] {
                assert_eq!(u32::from(low.end()) + 1, u32::from(high.start()));
                assert!(low.len().abs_diff(high.len()) <= 1);
            }
        }
    }
}
