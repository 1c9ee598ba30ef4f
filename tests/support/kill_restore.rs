//! A process that writes and checkpoints until it is killed with SIGKILL, and the check its
//! parent makes afterwards: the newest checkpoint is at least the last one the child reported
//! completed (and at most the one after it, the only one in flight), and every retained
//! checkpoint restores exactly the state the child's deterministic writes had at its barrier.
//!
//! The child's writes are a function of a seed and the round: round `r` is written, checkpoint
//! `2 r` is triggered (and every third round savepoint `2 r + 1`, into `sp-r`), round `r + 1`
//! is written while they are in flight, then the child waits for them and prints
//! `completed r` (and `savepoint completed r`). The parent computes the state at any round
//! from the seed, and checks every savepoint directory too: a whole savepoint that restores
//! the model, or none, and a reported one is there.
//! A trial runs several generations of children in one directory: each restores the newest
//! checkpoint the one before left and goes on from its round, into the same storage.
//!
//! Shared by `tests/kill_restore.rs` and `examples/kill_restore.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eddy::checkpoint::{
    latest_checkpoint, verify_savepoint, CheckpointOptions, Checkpointer, RestoreSource, SAVEPOINT_FILE,
};
use eddy::codec::{U32, U64};
use eddy::format::checkpoint::CheckpointManifest;
use eddy::io::StdFs;
use eddy::state::{
    KeyedBackend, ListState, ListStateDescriptor, OperatorStateBackend, ValueState, ValueStateDescriptor,
};
use eddy::store::{CompactionOptions, StoreOptions};

/// Set in the child's environment to `<directory>;<seed>;<generation>`: the process is then
/// the child.
pub const CHILD_ENV: &str = "EDDY_KILL_RESTORE_CHILD";

/// The marker the child prints once a checkpoint completed.
const COMPLETED: &str = "completed ";

/// The marker the child prints once a savepoint completed.
const SAVEPOINT_COMPLETED: &str = "savepoint completed ";

/// Savepoint directories are named by this and the round.
const SAVEPOINT_PREFIX: &str = "sp-";

/// The rounds a child writes at most (it is killed long before).
const MAX_ROUNDS: u64 = 100_000;

/// Values and lists per key.
pub type State = (BTreeMap<u64, u64>, BTreeMap<u64, Vec<u32>>);

fn mix(seed: u64, round: u64, i: u64) -> u64 {
    let mut z = seed ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i.wrapping_mul(0xd1b5_4a32_d192_ed03);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How a trial's child checkpoints, chosen by its seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    Full,
    Incremental,
    Changelog,
}

impl Mode {
    pub fn of(seed: u64) -> Mode {
        match seed % 3 {
            0 => Mode::Full,
            1 => Mode::Incremental,
            _ => Mode::Changelog,
        }
    }

    fn options(self) -> CheckpointOptions {
        let o = CheckpointOptions::new().retain(2);
        match self {
            Mode::Full => o.incremental(false),
            Mode::Incremental => o,
            Mode::Changelog => o.materialize_after(32 << 10),
        }
    }

    fn store_options(self) -> StoreOptions {
        StoreOptions::new()
            .changelog(self == Mode::Changelog)
            .memory_budget(256 << 10)
            .compaction(CompactionOptions { trigger: 3, ..CompactionOptions::default() })
    }
}

/// One write of round `round`.
enum Op {
    Put(u64, u64),
    Delete(u64),
    Append(u64, u32),
}

fn round_writes(seed: u64, round: u64) -> impl Iterator<Item = Op> {
    let n = 20 + mix(seed, round, 0) % 150;
    (1..=n).map(move |i| {
        let x = mix(seed, round, i);
        let key = x % 600;
        match (x >> 20) % 10 {
            0 => Op::Delete(key),
            1 | 2 => Op::Append(key, (x >> 32) as u32),
            _ => Op::Put(key, x >> 8),
        }
    })
}

/// The state after rounds `1..=rounds`.
pub fn model(seed: u64, rounds: u64) -> State {
    let mut s = State::default();
    for r in 1..=rounds {
        for w in round_writes(seed, r) {
            match w {
                Op::Put(k, v) => {
                    s.0.insert(k, v);
                }
                Op::Delete(k) => {
                    s.0.remove(&k);
                }
                Op::Append(k, v) => s.1.entry(k).or_default().push(v),
            }
        }
    }
    s
}

fn handles(b: &mut KeyedBackend<U64>) -> eddy::Result<(ValueState<U64>, ListState<U32>)> {
    Ok((b.state(ValueStateDescriptor::new("v", U64))?, b.state(ListStateDescriptor::new("l", U32))?))
}

/// The child of generation `generation`: goes on from the newest checkpoint in `dir` (the
/// first generation starts empty), writing and checkpointing until killed. Returns only on an
/// error.
pub fn child(dir: &Path, seed: u64, generation: u64) -> eddy::Result<()> {
    let mode = Mode::of(seed);
    let mut cp = Checkpointer::local(dir.join("cp"), mode.options())?;
    let builder = KeyedBackend::builder(U64).store_options(mode.store_options());
    let store = dir.join(format!("store-{generation}"));
    let (mut b, first) = match latest_checkpoint(cp.storage().as_ref())? {
        Some(id) => {
            let source = RestoreSource::Checkpoint { storage: cp.storage().clone(), id };
            (builder.restore(store, &[source])?.0, id / 2 + 1)
        }
        None => (builder.open(store)?, 1),
    };
    let (v, l) = handles(&mut b)?;
    let op = OperatorStateBackend::new();
    let mut out = std::io::stdout();
    let write = |b: &mut KeyedBackend<U64>, round: u64| -> eddy::Result<()> {
        for w in round_writes(seed, round) {
            match w {
                Op::Put(k, x) => {
                    b.set_current_key(&k)?;
                    v.update(b, &x)?;
                }
                Op::Delete(k) => {
                    b.set_current_key(&k)?;
                    v.clear(b)?;
                }
                Op::Append(k, x) => {
                    b.set_current_key(&k)?;
                    l.add(b, &x)?;
                }
            }
        }
        if round.is_multiple_of(4) {
            b.store().flush()?;
        }
        Ok(())
    };
    write(&mut b, first)?;
    for round in first..first + MAX_ROUNDS {
        cp.checkpoint(2 * round, &mut b, &op, false)?;
        // A round done again after a restart keeps the savepoint directory the killed run
        // left (whole, or claimed and unfinished): a savepoint into it is refused.
        let sp_dir = dir.join(format!("{SAVEPOINT_PREFIX}{round}"));
        let savepoint = round.is_multiple_of(3) && !sp_dir.exists();
        if savepoint {
            let fs = Arc::new(StdFs::new());
            cp.savepoint(2 * round + 1, fs, sp_dir, &mut b, &op)?;
        }
        write(&mut b, round + 1)?;
        cp.wait(2 * round)?;
        // A pipe's write reaches the parent even if this process dies right after it.
        let _ = writeln!(out, "{COMPLETED}{round}");
        let _ = out.flush();
        if savepoint {
            cp.wait(2 * round + 1)?;
            let _ = writeln!(out, "{SAVEPOINT_COMPLETED}{round}");
            let _ = out.flush();
        }
    }
    Ok(())
}

/// Acts as the child if the environment says so: never returns then.
pub fn child_if_asked() {
    let Ok(arg) = std::env::var(CHILD_ENV) else { return };
    let mut parts = arg.rsplitn(3, ';');
    let (generation, seed, dir) = (parts.next(), parts.next(), parts.next());
    let number = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok()).expect("<dir>;<seed>;<generation>");
    match child(Path::new(dir.expect("a directory")), number(seed), number(generation)) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("child failed: {e}");
            std::process::exit(3)
        }
    }
}

/// What one trial saw.
#[derive(Debug, Clone, Copy)]
pub struct Trial {
    pub mode: Mode,
    /// The round of the last checkpoint the child reported completed.
    pub reported: Option<u64>,
    /// The round of the newest checkpoint after the kill.
    pub latest: Option<u64>,
    /// The retained checkpoints restored and compared with the model.
    pub restores: u64,
    /// The savepoints restored and compared with the model.
    pub savepoints: u64,
}

/// When a trial's child is killed.
#[derive(Debug, Clone, Copy)]
pub enum Kill {
    /// This long after it was started.
    After(Duration),
    /// This long after it reported its first completed checkpoint.
    AfterFirstCheckpoint(Duration),
}

/// Spawns `command` as the child of generation `generation` of trial `seed`, going on from
/// what the earlier ones left in `dir`; kills it with SIGKILL as `kill` says, then checks what
/// it left. Panics, saying why, on anything wrong.
pub fn trial(mut command: Command, dir: &Path, seed: u64, generation: u64, kill: Kill) -> Trial {
    let ctx = format!("seed {seed} ({:?}), generation {generation}, killed {kill:?}", Mode::of(seed));
    // What the earlier generations completed stays.
    let before = {
        let cp = Checkpointer::local(dir.join("cp"), Mode::of(seed).options()).unwrap();
        latest_checkpoint(cp.storage().as_ref()).unwrap().map(round_of)
    };
    let mut child = command
        .env(CHILD_ENV, format!("{};{seed};{generation}", dir.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let reported = Arc::new(Mutex::new(None::<u64>));
    let savepoints = Arc::new(Mutex::new(BTreeSet::<u64>::new()));
    let stdout = child.stdout.take().unwrap();
    let (seen, seen_savepoints) = (reported.clone(), savepoints.clone());
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix(COMPLETED).and_then(|n| n.trim().parse::<u64>().ok()) {
                *seen.lock().unwrap() = Some(n);
            }
            if let Some(n) = line.strip_prefix(SAVEPOINT_COMPLETED).and_then(|n| n.trim().parse::<u64>().ok()) {
                seen_savepoints.lock().unwrap().insert(n);
            }
        }
    });
    let delay = match kill {
        Kill::After(delay) => delay,
        Kill::AfterFirstCheckpoint(delay) => {
            let start = std::time::Instant::now();
            while reported.lock().unwrap().is_none() && start.elapsed() < Duration::from_secs(120) {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            delay
        }
    };
    std::thread::sleep(delay);
    let _ = child.kill();
    let status = child.wait().expect("wait for the child");
    reader.join().unwrap();
    if status.signal() != Some(9) {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
        panic!("{ctx}: the child ended before the kill ({status}): {err}");
    }
    let reported = (*reported.lock().unwrap()).or(before);
    let reported_savepoints = std::mem::take(&mut *savepoints.lock().unwrap());

    // The storage opens (the dead child's lock is gone) and collects what it left.
    let cp = Checkpointer::local(dir.join("cp"), Mode::of(seed).options())
        .unwrap_or_else(|e| panic!("{ctx}: the storage does not open: {e}"));
    let storage = cp.storage().clone();
    let latest = latest_checkpoint(storage.as_ref()).unwrap_or_else(|e| panic!("{ctx}: {e}")).map(round_of);
    assert!(latest >= reported, "{ctx}: newest checkpoint of round {latest:?}, but {reported:?} was reported");
    assert!(
        latest <= Some(reported.map_or(1, |r| r + 1)),
        "{ctx}: newest checkpoint of round {latest:?}, with only the one after {reported:?} in flight"
    );
    let mut named = BTreeSet::new();
    let ids = storage.manifests().unwrap();
    let mut restores = 0;
    for &id in &ids {
        let m = CheckpointManifest::decode(&storage.read_manifest(id).unwrap())
            .unwrap_or_else(|e| panic!("{ctx}: manifest {id}: {e:?}"));
        named.extend(m.segments.into_iter().map(|s| s.file));
        named.extend(m.logs.into_iter().map(|l| l.file));
        let source = RestoreSource::Checkpoint { storage: storage.clone(), id };
        let got = restored(dir.join(format!("restored-{generation}-{id}")), source, seed)
            .unwrap_or_else(|e| panic!("{ctx}: checkpoint {id} of {ids:?} does not restore: {e}"));
        assert!(got == model(seed, round_of(id)), "{ctx}: checkpoint {id} of {ids:?} restores other state");
        restores += 1;
    }
    let stored: BTreeSet<String> = storage.shared_files().unwrap().into_iter().collect();
    assert_eq!(stored, named, "{ctx}: the shared files are not those the manifests name");
    drop(cp);

    // Each savepoint directory holds a whole savepoint or none, and a reported one is there.
    let mut savepoints_checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(round) = name.strip_prefix(SAVEPOINT_PREFIX).and_then(|r| r.parse::<u64>().ok()) else { continue };
        let sp = dir.join(&name);
        if !sp.join(SAVEPOINT_FILE).exists() {
            assert!(!reported_savepoints.contains(&round), "{ctx}: savepoint {round} was reported, yet is gone");
            continue;
        }
        let fs = StdFs::new();
        let problems = verify_savepoint(&fs, &sp);
        assert!(problems.is_empty(), "{ctx}: savepoint {round}: {problems:?}");
        let source = RestoreSource::Savepoint { fs: Arc::new(fs), dir: sp };
        let got = restored(dir.join(format!("restored-{generation}-sp-{round}")), source, seed)
            .unwrap_or_else(|e| panic!("{ctx}: savepoint {round} does not restore: {e}"));
        assert!(got == model(seed, round), "{ctx}: savepoint {round} restores other state");
        savepoints_checked += 1;
    }
    Trial { mode: Mode::of(seed), reported, latest, restores, savepoints: savepoints_checked }
}

/// The round of checkpoint `id`: the child takes checkpoint `2 r` and savepoint `2 r + 1` in
/// round `r`.
fn round_of(id: u64) -> u64 {
    id / 2
}

/// The state a backend restored from `source` into `dir` holds.
fn restored(dir: PathBuf, source: RestoreSource, seed: u64) -> eddy::Result<State> {
    let (mut b, _) =
        KeyedBackend::builder(U64).store_options(Mode::of(seed).store_options()).restore(dir, &[source])?;
    let (v, l) = handles(&mut b)?;
    let mut got = State::default();
    for k in b.keys(&v)? {
        b.set_current_key(&k)?;
        if let Some(x) = v.get(&mut b)? {
            got.0.insert(k, x);
        }
    }
    for k in b.keys(&l)? {
        b.set_current_key(&k)?;
        got.1.insert(k, l.get_vec(&mut b)?);
    }
    Ok(got)
}

/// The totals of many trials.
#[derive(Debug, Default)]
pub struct Summary {
    pub trials: u64,
    /// Checkpoints restored and checked.
    pub restores: u64,
    /// Savepoints restored and checked.
    pub savepoints: u64,
    /// Trials by mode and by which checkpoint was the newest: none yet, the last reported one,
    /// or the one in flight.
    pub by: BTreeMap<(Mode, &'static str), u64>,
    pub max_reported: u64,
}

impl Summary {
    pub fn add(&mut self, t: &Trial) {
        self.trials += 1;
        self.restores += t.restores;
        self.savepoints += t.savepoints;
        let which = match (t.reported, t.latest) {
            (_, None) => "no checkpoint yet",
            (r, l) if r == l => "the last reported",
            _ => "the one in flight",
        };
        *self.by.entry((t.mode, which)).or_default() += 1;
        self.max_reported = self.max_reported.max(t.reported.unwrap_or(0));
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} trials, {} restores checked against the model ({} of checkpoints, {} of savepoints)",
            self.trials,
            self.restores + self.savepoints,
            self.restores,
            self.savepoints
        )?;
        writeln!(f, "newest checkpoint after the kill, by mode:")?;
        for ((mode, which), n) in &self.by {
            writeln!(f, "  {mode:?}: {which}: {n}")?;
        }
        write!(f, "the latest round a child reported its checkpoint completed: {}", self.max_reported)
    }
}

/// The delay before the kill of generation `generation` of trial `seed`: anywhere up to `max`.
pub fn delay(seed: u64, generation: u64, max: Duration) -> Duration {
    let max = max.as_micros().max(1) as u64;
    Duration::from_micros(mix(seed, u64::MAX - generation, 0) % max)
}
