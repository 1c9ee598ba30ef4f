//! Random bit flips and truncations of every file of a checkpoint (manifest, segments,
//! changelog files) and of a savepoint (uncompressed and compressed): each restore gives the
//! original state or a typed error that says the bytes are bad, never a panic, a hang or other
//! state; and `verify_checkpoint`/`verify_savepoint` report every damage that a restore trips on.
//!
//! The damage is drawn from a seeded generator, so a failure names the trial that reproduces
//! it. `cargo test` runs a few hundred trials; the ignored test runs many more
//! (`cargo test --release --test damaged_snapshots -- --ignored --nocapture`, the count from
//! `EDDY_DAMAGE_TRIALS`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use eddy::checkpoint::{
    verify_checkpoint, verify_savepoint, CheckpointOptions, CheckpointStorage, Checkpointer, LocalDirStorage,
    RestoreSource,
};
use eddy::codec::{U32, U64};
use eddy::format::checkpoint::CheckpointManifest;
use eddy::io::FaultFs;
use eddy::keygroup::KeyGroupRange;
use eddy::state::{
    KeyedBackend, ListState, ListStateDescriptor, MapState, MapStateDescriptor, OperatorStateBackend, ValueState,
    ValueStateDescriptor,
};
use eddy::store::{CompactionOptions, StoreOptions};
use eddy::Error;

/// A restore that takes longer than this is taken to hang.
const HANG: Duration = Duration::from_secs(20);

/// Values, lists and maps per key.
type State = (BTreeMap<u64, u64>, BTreeMap<u64, Vec<u32>>, BTreeMap<u64, BTreeMap<u32, u64>>);

const MAX_PARALLELISM: u32 = 8;

/// SplitMix64: a small, seeded, reproducible generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

type Handles = (ValueState<U64>, ListState<U32>, MapState<U32, U64>);

fn handles(b: &mut KeyedBackend<U64>) -> eddy::Result<Handles> {
    Ok((
        b.state(ValueStateDescriptor::new("v", U64))?,
        b.state(ListStateDescriptor::new("l", U32))?,
        b.state(MapStateDescriptor::new("m", U32, U64))?,
    ))
}

fn write(b: &mut KeyedBackend<U64>, state: &mut State, round: u64) {
    let (v, l, m) = handles(b).unwrap();
    for k in 0..300u64 {
        b.set_current_key(&k).unwrap();
        if k % 11 == round % 11 {
            v.clear(b).unwrap();
            state.0.remove(&k);
        } else {
            v.update(b, &(k * 7 + round)).unwrap();
            state.0.insert(k, k * 7 + round);
        }
        if k % 4 == round % 4 {
            l.add(b, &(round as u32 * 3)).unwrap();
            state.1.entry(k).or_default().push(round as u32 * 3);
        }
        if k % 3 == round % 3 {
            m.put(b, &(round as u32), &(k + round)).unwrap();
            state.2.entry(k).or_default().insert(round as u32, k + round);
        }
    }
}

/// Every key's state, or the first error reading it gave.
fn read(b: &mut KeyedBackend<U64>) -> eddy::Result<State> {
    let (v, l, m) = handles(b)?;
    let mut s = State::default();
    for k in b.keys(&v)? {
        b.set_current_key(&k)?;
        if let Some(x) = v.get(b)? {
            s.0.insert(k, x);
        }
    }
    for k in b.keys(&l)? {
        b.set_current_key(&k)?;
        s.1.insert(k, l.get_vec(b)?);
    }
    for k in b.keys(&m)? {
        b.set_current_key(&k)?;
        let mut it = m.iter(b)?;
        let mut entries = BTreeMap::new();
        while let Some((uk, x)) = it.next_entry()? {
            entries.insert(uk, x);
        }
        if !entries.is_empty() {
            s.2.insert(k, entries);
        }
    }
    Ok(s)
}

/// A snapshot to damage: its files, how to restore it, and the state it holds.
struct Fixture {
    name: &'static str,
    fs: FaultFs,
    files: Vec<PathBuf>,
    source: Source,
    state: State,
    changelog: bool,
}

#[derive(Clone, Copy)]
enum Source {
    Checkpoint(u64),
    Savepoint,
}

const ROOT: &str = "/cp";
const SAVEPOINT_DIR: &str = "/sp";

fn store_options(fs: &FaultFs, changelog: bool) -> StoreOptions {
    // No compaction: the segments of the fixture stay apart.
    let never = CompactionOptions {
        trigger: usize::MAX,
        max_segments: usize::MAX,
        stall_segments: usize::MAX,
        max_space_amplification_percent: u64::MAX,
        ..Default::default()
    };
    StoreOptions::new().changelog(changelog).file_system(Arc::new(fs.clone())).block_size(512).compaction(never)
}

fn builder(fs: &FaultFs, changelog: bool) -> eddy::state::KeyedBackendBuilder<U64> {
    KeyedBackend::builder(U64).max_parallelism(MAX_PARALLELISM).store_options(store_options(fs, changelog))
}

/// The low half of the key groups: restores of it read part of each snapshot.
fn low() -> KeyGroupRange {
    KeyGroupRange::new(0, 3).unwrap()
}

/// `state` for the keys of `range` only.
fn within(state: &State, range: KeyGroupRange) -> State {
    let mut b = builder(&FaultFs::new(), false).key_groups(range).open("/keys").unwrap();
    let mut keep = |k: &u64| b.set_current_key(k).is_ok();
    let mut s = state.clone();
    s.0.retain(|k, _| keep(k));
    s.1.retain(|k, _| keep(k));
    s.2.retain(|k, _| keep(k));
    s
}

/// An incremental checkpoint of three segments, a changelog checkpoint naming segments and
/// two changelog files, and savepoints without and with compression.
fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    for (name, changelog) in [("incremental checkpoint", false), ("changelog checkpoint", true)] {
        let fs = FaultFs::new();
        let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), ROOT).unwrap());
        let opts = CheckpointOptions::new().materialize_after(u64::MAX);
        let mut cp = Checkpointer::new(storage.clone(), opts).unwrap();
        let mut b = builder(&fs, changelog).open("/store").unwrap();
        let op = OperatorStateBackend::new();
        let mut state = State::default();
        for round in 1..=3 {
            write(&mut b, &mut state, round);
            if changelog {
                // The first checkpoint stores the state; the later ones name it and the log.
                cp.checkpoint(round, &mut b, &op, false).unwrap();
                cp.wait(round).unwrap();
            } else {
                b.store().flush().unwrap();
            }
        }
        let id = if changelog { 3 } else { 1 };
        if !changelog {
            cp.checkpoint(id, &mut b, &op, false).unwrap();
            cp.wait(id).unwrap();
        }
        cp.settle().unwrap();
        drop(cp);
        drop(b);
        let manifest = CheckpointManifest::decode(&storage.read_manifest(id).unwrap()).unwrap();
        let mut files = vec![storage.describe_manifest(id)];
        files.extend(manifest.segments.iter().map(|s| storage.describe(&s.file)));
        files.extend(manifest.logs.iter().map(|l| storage.describe(&l.file)));
        if changelog {
            assert!(manifest.logs.len() >= 2, "{} logs", manifest.logs.len());
        } else {
            assert!(manifest.segments.len() >= 2, "{} segments", manifest.segments.len());
        }
        out.push(Fixture { name, fs, files, source: Source::Checkpoint(id), state, changelog });
    }
    for (name, level) in [("savepoint", None), ("compressed savepoint", Some(3))] {
        let fs = FaultFs::new();
        let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), ROOT).unwrap());
        let mut cp = Checkpointer::new(storage, CheckpointOptions::new().savepoint_compression(level)).unwrap();
        let mut b = builder(&fs, false).open("/store").unwrap();
        let mut state = State::default();
        write(&mut b, &mut state, 1);
        b.store().flush().unwrap();
        write(&mut b, &mut state, 2);
        cp.savepoint(1, Arc::new(fs.clone()), SAVEPOINT_DIR, &mut b, &OperatorStateBackend::new()).unwrap();
        cp.wait(1).unwrap();
        drop(cp);
        drop(b);
        let files = vec![Path::new(SAVEPOINT_DIR).join(eddy::checkpoint::SAVEPOINT_FILE)];
        out.push(Fixture { name, fs, files, source: Source::Savepoint, state, changelog: false });
    }
    out
}

fn copy(fs: &FaultFs) -> FaultFs {
    let copy = FaultFs::new();
    for p in fs.file_names() {
        copy.write_file(&p, &fs.read(&p).unwrap()).unwrap();
    }
    copy
}

/// Restores the key groups `range` of `source` from `fs` and reads all of their state.
fn restore(fs: &FaultFs, source: Source, changelog: bool, range: Option<KeyGroupRange>) -> eddy::Result<State> {
    let source = match source {
        Source::Checkpoint(id) => {
            RestoreSource::Checkpoint { storage: Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), ROOT)?), id }
        }
        Source::Savepoint => RestoreSource::Savepoint { fs: Arc::new(fs.clone()), dir: SAVEPOINT_DIR.into() },
    };
    let builder = builder(fs, changelog);
    let builder = match range {
        Some(r) => builder.key_groups(r),
        None => builder,
    };
    let (mut b, _) = builder.restore("/restored", &[source])?;
    let state = read(&mut b)?;
    b.close()?;
    Ok(state)
}

/// What verify says of the damaged snapshot: how many problems.
fn verify(fs: &FaultFs, source: Source) -> usize {
    match source {
        Source::Checkpoint(id) => {
            let storage = LocalDirStorage::new(Arc::new(fs.clone()), ROOT).unwrap();
            verify_checkpoint(&storage, id).len()
        }
        Source::Savepoint => verify_savepoint(fs, Path::new(SAVEPOINT_DIR)).len(),
    }
}

/// Runs `f` on a thread of its own: its value, or why it failed (a panic, or no answer within
/// [`HANG`]).
fn guarded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(HANG) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(p)) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        )),
        Err(_) => Err(format!("no answer within {HANG:?}")),
    }
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Flip these bits (offset, bit).
    Flips([(u64, u8); 3], usize),
    /// Keep this many bytes.
    Truncate(u64),
}

/// The tally of a run.
#[derive(Default, Debug)]
struct Tally {
    trials: u64,
    per_fixture: BTreeMap<&'static str, u64>,
    original: u64,
    errors: BTreeMap<String, u64>,
}

fn kind_of(e: &Error) -> Option<String> {
    match e {
        Error::Corrupted { kind, .. } => {
            let kind = format!("{kind:?}");
            Some(format!("Corrupted({})", kind.split([' ', '(', '{']).next().unwrap_or("")))
        }
        Error::UnsupportedVersion { .. } => Some("UnsupportedVersion".into()),
        _ => None,
    }
}

fn damage_trials(seed: u64, trials: u64) -> Tally {
    let fixtures = fixtures();
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    for trial in 0..trials {
        let f = &fixtures[rng.below(fixtures.len() as u64) as usize];
        let file = f.files[rng.below(f.files.len() as u64) as usize].clone();
        let len = f.fs.read(&file).unwrap().len() as u64;
        // Offsets anywhere, or within the first or last bytes, where headers and footers are.
        let offset = |rng: &mut Rng| match rng.below(3) {
            0 => rng.below(len.min(64)),
            1 => len - 1 - rng.below(len.min(64)),
            _ => rng.below(len),
        };
        let damage = if rng.below(3) == 0 {
            Damage::Truncate(offset(&mut rng))
        } else {
            let mut flips = [(0, 0); 3];
            for flip in &mut flips {
                *flip = (offset(&mut rng), rng.below(8) as u8);
            }
            Damage::Flips(flips, 1 + rng.below(3) as usize)
        };
        // A restore of all key groups, or of half of them (as at a higher parallelism).
        let range = (rng.below(3) == 0).then(low);
        let damaged = copy(&f.fs);
        match damage {
            Damage::Truncate(keep) => damaged.truncate(&file, keep).unwrap(),
            Damage::Flips(flips, n) => {
                for (offset, bit) in &flips[..n] {
                    damaged.corrupt(&file, *offset, 1 << bit).unwrap();
                }
            }
        }
        let ctx = format!(
            "trial {trial} (seed {seed}): {damage:?} of {file:?} ({len} bytes) of the {}, key groups {range:?}",
            f.name
        );
        let (source, changelog) = (f.source, f.changelog);
        let fs = damaged.clone();
        let restored =
            guarded(move || restore(&fs, source, changelog, range)).unwrap_or_else(|why| panic!("{ctx}: {why}"));
        let fs = damaged.clone();
        let problems = guarded(move || verify(&fs, source)).unwrap_or_else(|why| panic!("{ctx}: verify {why}"));
        match restored {
            Ok(state) => {
                let expected = range.map_or_else(|| f.state.clone(), |r| within(&f.state, r));
                assert!(state == expected, "{ctx}: restored other state");
                tally.original += 1;
            }
            Err(e) => {
                let kind = kind_of(&e).unwrap_or_else(|| panic!("{ctx}: not an error about bad bytes: {e:?}"));
                assert!(problems > 0, "{ctx}: the restore failed ({e}), verify found nothing");
                *tally.errors.entry(kind).or_default() += 1;
            }
        }
        tally.trials += 1;
        *tally.per_fixture.entry(f.name).or_default() += 1;
    }
    tally
}

fn report(tally: &Tally) {
    eprintln!(
        "{} trials ({:?}): {} restored the original state, the others failed with {:?}",
        tally.trials, tally.per_fixture, tally.original, tally.errors
    );
}

#[test]
fn bit_flips_and_truncations_of_snapshot_files_give_the_original_state_or_a_typed_error() {
    let tally = damage_trials(1, 400);
    report(&tally);
    assert!(tally.errors.values().sum::<u64>() > tally.trials / 2, "{tally:?}");
}

#[test]
#[ignore = "many trials: run with --release"]
fn many_bit_flips_and_truncations_of_snapshot_files() {
    let trials = std::env::var("EDDY_DAMAGE_TRIALS").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let seed = std::env::var("EDDY_DAMAGE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let tally = damage_trials(seed, trials);
    report(&tally);
}
