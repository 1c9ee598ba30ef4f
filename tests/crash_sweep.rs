//! A crash at every file-system operation of a backend's life around its checkpoints, with
//! flushes, compactions, materializations and removals running alongside: a storage made in new
//! directories and five checkpoints in a row (full, incremental, with a changelog, copied
//! instead of linked), a restore and the checkpoints after it, aborted and confirmed
//! checkpoints with the retention they drive, savepoints and restores from them, and restores
//! at another parallelism (two backends into one, one into two, a checkpoint and a savepoint
//! into one). Other runs inject an I/O error, a failing disk or a full one instead: the job then goes on
//! in place (storage opened again, newest checkpoint restored, next checkpoint, savepoints
//! taken again), and then the power fails. Others crash again while the job restarts.
//!
//! A crash keeps a varying prefix of the bytes not yet synced; in every other run, appends reach
//! a file only when their writer syncs or closes it. After each crash the file system restarts
//! and the storage is opened again. Then:
//! - what the interrupted work left behind is collected: the shared files are exactly those
//!   the manifests name;
//! - the newest checkpoint is one that completed, or one in flight at the fault (never one that
//!   failed for sure, nor one older than the last reported completed);
//! - every retained checkpoint verifies and restores exactly the state at its barrier, for the
//!   key groups of its backend, operator state included;
//! - a savepoint directory holds a whole savepoint that restores exactly, or none, and a
//!   completed one is there;
//! - and a checkpoint taken after restoring the newest one completes and restores, and
//!   retention then keeps two checkpoints and only their files.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use eddy::checkpoint::{
    latest_checkpoint, verify_checkpoint, verify_savepoint, CheckpointOptions, CheckpointStorage, Checkpointer,
    LocalDirStorage, RestoreSource, Transfer, SAVEPOINT_CLAIM, SAVEPOINT_FILE,
};
use eddy::codec::{U32, U64};
use eddy::format::checkpoint::CheckpointManifest;
use eddy::io::{FaultFs, FaultKind, FileSystem};
use eddy::keygroup::KeyGroupRange;
use eddy::state::{
    KeyedBackend, ListState, ListStateDescriptor, MapState, MapStateDescriptor, OperatorStateBackend, ValueState,
    ValueStateDescriptor,
};
use eddy::store::{CompactionOptions, StoreOptions};
use eddy::{Error, Misuse};

const MAX_PARALLELISM: u32 = 8;
const KEYS: u64 = 64;

/// All key groups, and the two halves a parallelism of 2 gives.
fn all() -> KeyGroupRange {
    KeyGroupRange::new(0, 7).unwrap()
}
fn low() -> KeyGroupRange {
    KeyGroupRange::new(0, 3).unwrap()
}
fn high() -> KeyGroupRange {
    KeyGroupRange::new(4, 7).unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every checkpoint stores every segment anew.
    Full,
    /// Checkpoints store only the segments the previous ones did not.
    Incremental,
    /// The stores keep a changelog: checkpoints name the state last stored and the log since,
    /// and the state is stored again every few checkpoints.
    Changelog,
    /// Incremental checkpoints whose files are copied into the storage and back (no hard
    /// links), and compressed savepoints.
    Copied,
}

/// A backend's keyed state (a value, a list and a map per key) and operator state (a list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    values: BTreeMap<u64, u64>,
    lists: BTreeMap<u64, Vec<u32>>,
    maps: BTreeMap<u64, BTreeMap<u32, u64>>,
    rounds: Vec<u64>,
}

impl State {
    fn union(&self, other: &State) -> State {
        let mut s = self.clone();
        s.values.extend(other.values.iter().map(|(k, v)| (*k, *v)));
        s.lists.extend(other.lists.iter().map(|(k, v)| (*k, v.clone())));
        s.maps.extend(other.maps.iter().map(|(k, v)| (*k, v.clone())));
        s
    }
}

/// A backend, its operator state, and the model of both.
struct Task {
    b: KeyedBackend<U64>,
    op: OperatorStateBackend,
    value: ValueState<U64>,
    list: ListState<U32>,
    map: MapState<U32, U64>,
    state: State,
}

impl Task {
    fn new(mut b: KeyedBackend<U64>, op: OperatorStateBackend, state: State) -> eddy::Result<Task> {
        let value = b.state(ValueStateDescriptor::new("v", U64))?;
        let list = b.state(ListStateDescriptor::new("l", U32))?;
        let map = b.state(MapStateDescriptor::new("m", U32, U64))?;
        Ok(Task { b, op, value, list, map, state })
    }

    /// Round `round` of writes to the keys this backend owns: every value changes, a seventh
    /// of them is cleared, a third of the lists grows, a fifth of the maps gains an entry and
    /// loses another, and a seventeenth of them is cleared.
    fn write(&mut self, round: u64) -> eddy::Result<()> {
        for k in 0..KEYS {
            match self.b.set_current_key(&k) {
                Err(Error::Misuse(Misuse::KeyGroupOutOfRange { .. })) => continue,
                r => r?,
            }
            if k % 7 == round % 7 {
                self.value.clear(&mut self.b)?;
                self.state.values.remove(&k);
            } else {
                self.value.update(&mut self.b, &(k + round * 1000))?;
                self.state.values.insert(k, k + round * 1000);
            }
            if k % 3 == round % 3 {
                self.list.add(&mut self.b, &(round as u32))?;
                self.state.lists.entry(k).or_default().push(round as u32);
            }
            if k % 5 == round % 5 {
                self.map.put(&mut self.b, &(round as u32), &(k * round))?;
                self.map.remove(&mut self.b, &(round as u32 - 1))?;
                let m = self.state.maps.entry(k).or_default();
                m.insert(round as u32, k * round);
                m.remove(&(round as u32 - 1));
            }
            if k % 17 == round % 17 {
                self.map.clear(&mut self.b)?;
                self.state.maps.remove(&k);
            }
        }
        self.op.list_state("rounds", U64)?.add(round);
        self.state.rounds.push(round);
        Ok(())
    }

    fn read(&mut self) -> State {
        let mut s = State::default();
        for k in self.b.keys(&self.value).unwrap() {
            self.b.set_current_key(&k).unwrap();
            s.values.insert(k, self.value.get(&mut self.b).unwrap().unwrap());
        }
        for k in self.b.keys(&self.list).unwrap() {
            self.b.set_current_key(&k).unwrap();
            s.lists.insert(k, self.list.get_vec(&mut self.b).unwrap());
        }
        for k in self.b.keys(&self.map).unwrap() {
            self.b.set_current_key(&k).unwrap();
            let mut it = self.map.iter(&mut self.b).unwrap();
            let mut m = BTreeMap::new();
            while let Some((uk, v)) = it.next_entry().unwrap() {
                m.insert(uk, v);
            }
            if !m.is_empty() {
                s.maps.insert(k, m);
            }
        }
        s.rounds = self.op.list_state("rounds", U64).unwrap().get().to_vec();
        s
    }
}

/// One run of a scenario: the file system, the checkpoint storage, and what the scenario did.
struct World {
    fs: FaultFs,
    storage: Arc<dyn CheckpointStorage>,
    /// The storage's directory.
    root: PathBuf,
    mode: Mode,
    /// The operation the fault is armed at, counted from [`World::arm`], and the fault.
    fault: Option<(u64, FaultKind)>,
    base: Option<u64>,
    next_dir: u32,
    /// The checkpoints triggered: the key groups of their backend and its state at the barrier.
    taken: BTreeMap<u64, (KeyGroupRange, State)>,
    /// What their outcome was, where one came: completed, or failed for sure (an I/O error
    /// leaves it open whether the manifest is there).
    outcomes: BTreeMap<u64, bool>,
    /// The savepoints triggered: directory, key groups and state of the backend, whether one
    /// completed (if known).
    savepoints: Vec<(PathBuf, KeyGroupRange, State, Option<bool>)>,
    /// What else happened, for messages.
    note: String,
    /// Whether a failed checkpoint or savepoint is passed over, the scenario going on with the
    /// next step, as a job does (see [`sweep_past_failures`]).
    past_failures: bool,
}

thread_local! {
    /// Whether the runs on this thread go on past failed checkpoints and savepoints.
    static PAST_FAILURES: Cell<bool> = const { Cell::new(false) };
}

impl World {
    fn new(mode: Mode, fault: Option<(u64, FaultKind)>) -> World {
        let fs = FaultFs::new();
        // Every other run, appends reach the files only when synced or closed, as with a
        // writer that buffers them.
        fs.buffered_writes(fault.is_some_and(|(n, _)| n % 2 == 1));
        let root = PathBuf::from("/cp");
        let storage = Arc::new(LocalDirStorage::new(Arc::new(fs.clone()), &root).unwrap());
        World {
            fs,
            storage,
            root,
            mode,
            fault,
            base: None,
            next_dir: 0,
            taken: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            savepoints: Vec::new(),
            note: String::new(),
            past_failures: PAST_FAILURES.get(),
        }
    }

    /// Opens the storage in `root` again, as a process does when it starts (making its
    /// directories if they are missing).
    fn open_storage(&mut self) -> eddy::Result<()> {
        let transfer = if self.mode == Mode::Copied { Transfer::Copy } else { Transfer::Link };
        let storage = LocalDirStorage::new(Arc::new(self.fs.clone()), &self.root)?.transfer(transfer);
        self.storage = Arc::new(storage);
        Ok(())
    }

    /// From here on the operations are counted, and the crash comes at the chosen one.
    fn arm(&mut self) {
        let base = self.fs.ops();
        self.base = Some(base);
        if let Some((n, kind)) = self.fault {
            self.fs.fail_at(base + n, kind);
        }
    }

    fn options(&self) -> CheckpointOptions {
        let o = CheckpointOptions::new().retain(2).max_in_flight(3);
        match self.mode {
            Mode::Full => o.incremental(false),
            Mode::Incremental => o,
            Mode::Changelog => o.materialize_after(8 << 10),
            Mode::Copied => o.savepoint_compression(Some(1)),
        }
    }

    fn store_options(&self) -> StoreOptions {
        StoreOptions::new()
            .changelog(self.mode == Mode::Changelog)
            .file_system(Arc::new(self.fs.clone()))
            .memory_budget(256 << 10)
            .compaction(CompactionOptions { trigger: 2, ..CompactionOptions::default() })
    }

    fn dir(&mut self, what: &str) -> PathBuf {
        self.next_dir += 1;
        PathBuf::from(format!("/{what}-{}", self.next_dir))
    }

    fn checkpointer(&self) -> eddy::Result<Checkpointer> {
        Checkpointer::new(self.storage.clone(), self.options())
    }

    fn open(&mut self, range: KeyGroupRange) -> eddy::Result<Task> {
        let dir = self.dir("store");
        let b = KeyedBackend::builder(U64)
            .max_parallelism(MAX_PARALLELISM)
            .key_groups(range)
            .store_options(self.store_options())
            .open(dir)?;
        Task::new(b, OperatorStateBackend::new(), State::default())
    }

    /// A backend for `range` restored from `sources`, whose states are `state`; its operator
    /// state is that of the first source.
    fn restore(&mut self, range: KeyGroupRange, sources: &[RestoreSource], state: State) -> eddy::Result<Task> {
        let dir = self.dir("restored");
        let (b, restored) = KeyedBackend::builder(U64)
            .max_parallelism(MAX_PARALLELISM)
            .key_groups(range)
            .store_options(self.store_options())
            .restore(dir, sources)?;
        let op = OperatorStateBackend::restore(restored.operator_states[0].clone());
        Task::new(b, op, state)
    }

    fn source(&self, id: u64) -> RestoreSource {
        RestoreSource::Checkpoint { storage: self.storage.clone(), id }
    }

    /// A backend restored from checkpoint `id` (of a backend whose key groups cover `range`).
    fn restore_checkpoint(&mut self, id: u64, range: KeyGroupRange) -> eddy::Result<Task> {
        let state = self.state_of(id, range);
        let source = self.source(id);
        self.restore(range, &[source], state)
    }

    /// The state of checkpoint `id` for the keys of `range`.
    fn state_of(&self, id: u64, range: KeyGroupRange) -> State {
        let (taken, state) = &self.taken[&id];
        assert!(range == *taken || taken.intersection(&range) == range, "{range:?} of checkpoint {id}");
        let mut s = state.clone();
        if range != *taken {
            let keep = keys_of(range);
            s.values.retain(|k, _| keep.contains(k));
            s.lists.retain(|k, _| keep.contains(k));
            s.maps.retain(|k, _| keep.contains(k));
        }
        s
    }

    fn checkpoint(&mut self, cp: &mut Checkpointer, t: &mut Task, id: u64, full: bool) -> eddy::Result<()> {
        self.taken.insert(id, (t.b.key_groups(), t.state.clone()));
        let r = cp.checkpoint(id, &mut t.b, &t.op, full);
        if r.is_err() {
            self.outcomes.insert(id, false);
        }
        r
    }

    /// Waits for checkpoint `id`; its failure is passed over when the scenario goes on past
    /// failures (and the file system has not crashed).
    fn wait(&mut self, cp: &mut Checkpointer, id: u64) -> eddy::Result<()> {
        let r = cp.wait(id).map(|_| ());
        match &r {
            Ok(_) => {
                self.outcomes.insert(id, true);
            }
            // The manifest may have been renamed into place before the sync that failed, and
            // its removal may have failed too: it may be there after all.
            Err(Error::Io { .. }) => {}
            Err(_) => {
                self.outcomes.insert(id, false);
            }
        }
        self.past(r)
    }

    /// `r`, or `Ok` for a failure that the scenario goes on past.
    fn past<T: Default>(&self, r: eddy::Result<T>) -> eddy::Result<T> {
        match r {
            Err(_) if self.past_failures && !self.fs.is_crashed() => Ok(T::default()),
            r => r,
        }
    }

    /// Waits for `id`, which may have been aborted.
    fn wait_or_aborted(&mut self, cp: &mut Checkpointer, id: u64) -> eddy::Result<()> {
        match self.wait(cp, id) {
            Ok(_) | Err(Error::Aborted { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn savepoint(&mut self, cp: &mut Checkpointer, t: &mut Task, id: u64, dir: &str) -> eddy::Result<()> {
        self.savepoints.push((dir.into(), t.b.key_groups(), t.state.clone(), None));
        let fs: Arc<dyn FileSystem> = Arc::new(self.fs.clone());
        let r = cp.savepoint(id, fs, dir, &mut t.b, &t.op);
        if r.is_err() {
            self.savepoints.last_mut().unwrap().3 = Some(false);
        }
        r
    }

    fn wait_savepoint(&mut self, cp: &mut Checkpointer, id: u64, dir: &str) -> eddy::Result<()> {
        let r = cp.wait(id).map(|_| ());
        if let Some(s) = self.savepoints.iter_mut().find(|s| s.0 == Path::new(dir)) {
            s.3 = Some(r.is_ok());
        }
        self.past(r)
    }

    fn savepoint_source(&self, dir: &str) -> RestoreSource {
        RestoreSource::Savepoint { fs: Arc::new(self.fs.clone()), dir: dir.into() }
    }

    /// Everything that must hold once the file system restarted after the crash (or, without
    /// one, after the scenario ended).
    fn check(&mut self) {
        let ctx = format!("{:?}, fault {:?}{}", self.mode, self.fault, self.note);
        self.check_consistent(&ctx);
        // And work goes on from the newest checkpoint.
        let next = self.go_on().unwrap_or_else(|e| panic!("{ctx}: going on from the newest checkpoint: {e}"));
        if let Some(id) = next {
            // Retention went on: two checkpoints are kept, and only their files.
            let ids = self.storage.manifests().unwrap();
            assert!(ids.len() <= 2 && ids.contains(&id), "{ctx}: retained {ids:?} after checkpoint {id}");
            self.check_no_leftovers(&ctx);
            let range = self.taken[&id].0;
            let mut r = self.restore_checkpoint(id, range).unwrap();
            assert!(r.read() == r.state, "{ctx}: the checkpoint after the restore restores other state");
        }
    }

    /// The shared files are exactly those the manifests name.
    fn check_no_leftovers(&self, ctx: &str) {
        let mut named = std::collections::BTreeSet::new();
        for id in self.storage.manifests().unwrap() {
            let m = CheckpointManifest::decode(&self.storage.read_manifest(id).unwrap())
                .unwrap_or_else(|e| panic!("{ctx}: manifest {id} does not decode: {e:?}"));
            named.extend(m.segments.into_iter().map(|s| s.file));
            named.extend(m.logs.into_iter().map(|l| l.file));
        }
        let stored: std::collections::BTreeSet<String> = self.storage.shared_files().unwrap().into_iter().collect();
        assert_eq!(stored, named, "{ctx}: shared files that no manifest names, or named files missing");
    }

    /// What the restarted storage holds: no leftovers, and every retained checkpoint and
    /// savepoint restores exactly.
    fn check_consistent(&mut self, ctx: &str) {
        self.open_storage().unwrap_or_else(|e| panic!("{ctx}: storage does not open: {e}"));
        let cp = self.checkpointer().unwrap_or_else(|e| panic!("{ctx}: storage does not open: {e}"));
        drop(cp);
        self.check_no_leftovers(ctx);
        let ids = self.storage.manifests().unwrap();

        // The newest checkpoint: at least the last reported completed.
        let latest = latest_checkpoint(self.storage.as_ref()).unwrap();
        let done = self.outcomes.iter().filter(|(_, ok)| **ok).map(|(id, _)| *id).max();
        assert!(latest >= done, "{ctx}: newest checkpoint {latest:?}, but {done:?} completed");
        for &id in &ids {
            assert!(self.taken.contains_key(&id), "{ctx}: checkpoint {id} was never taken");
            assert_ne!(self.outcomes.get(&id), Some(&false), "{ctx}: checkpoint {id} failed, yet is there");
            let problems = verify_checkpoint(self.storage.as_ref(), id);
            assert!(problems.is_empty(), "{ctx}: checkpoint {id} of {ids:?}: {problems:?}");
            let range = self.taken[&id].0;
            let mut t = self
                .restore_checkpoint(id, range)
                .unwrap_or_else(|e| panic!("{ctx}: checkpoint {id} of {ids:?} does not restore: {e}"));
            assert!(t.read() == t.state, "{ctx}: checkpoint {id} of {ids:?} restores other state");
        }

        // A savepoint is whole or absent, and a completed one is there.
        for (dir, range, state, outcome) in self.savepoints.clone() {
            let file = dir.join(SAVEPOINT_FILE);
            if !self.fs.exists(&file) {
                assert_ne!(outcome, Some(true), "{ctx}: savepoint {dir:?} completed, yet is gone");
                continue;
            }
            assert!(verify_savepoint(&self.fs, &dir).is_empty(), "{ctx}: savepoint {dir:?}");
            let source = self.savepoint_source(dir.to_str().unwrap());
            let mut t = self
                .restore(range, &[source], state)
                .unwrap_or_else(|e| panic!("{ctx}: savepoint {dir:?} does not restore: {e}"));
            assert!(t.read() == t.state, "{ctx}: savepoint {dir:?} restores other state");
        }
    }

    /// What a job does after the restart: opens the storage (which collects what the crash
    /// left), restores the newest checkpoint (or starts anew without one), writes and takes
    /// the next checkpoint, and takes again the savepoints that did not complete. Returns the
    /// checkpoint's id.
    fn go_on(&mut self) -> eddy::Result<Option<u64>> {
        // The job after the restart fails on any error.
        self.past_failures = false;
        self.open_storage()?;
        let mut cp = self.checkpointer()?;
        let mut t = match latest_checkpoint(self.storage.as_ref())? {
            Some(latest) => {
                let range = self.taken[&latest].0;
                self.restore_checkpoint(latest, range)?
            }
            // Nothing to go on from: the job starts anew.
            None => self.open(all())?,
        };
        t.write(90)?;
        let id = self.taken.keys().max().map_or(1, |m| m + 1);
        self.checkpoint(&mut cp, &mut t, id, false)?;
        self.wait(&mut cp, id)?;
        // A savepoint that did not complete is taken again into its directory, unless its
        // claim is left (by a crash, or a failed removal): that one is removed by hand.
        let mut next = id;
        for (dir, _, _, outcome) in self.savepoints.clone() {
            let (file, claim) = (dir.join(SAVEPOINT_FILE), dir.join(SAVEPOINT_CLAIM));
            if outcome == Some(true) || self.fs.exists(&file) || self.fs.exists(&claim) {
                continue;
            }
            self.savepoints.retain(|s| s.0 != dir);
            next += 1;
            let dir = dir.to_str().unwrap();
            self.savepoint(&mut cp, &mut t, next, dir)?;
            self.wait_savepoint(&mut cp, next, dir)?;
        }
        cp.settle()?;
        Ok(Some(id))
    }
}

/// The keys (of `0..KEYS`) in `range`.
fn keys_of(range: KeyGroupRange) -> std::collections::BTreeSet<u64> {
    let mp = eddy::keygroup::MaxParallelism::new(MAX_PARALLELISM).unwrap();
    let fs = FaultFs::new();
    let mut b = KeyedBackend::builder(U64)
        .max_parallelism(mp.get())
        .key_groups(range)
        .store_options(StoreOptions::new().file_system(Arc::new(fs)))
        .open("/keys")
        .unwrap();
    (0..KEYS).filter(|k| b.set_current_key(k).is_ok()).collect()
}

type Scenario = fn(&mut World) -> eddy::Result<()>;

/// Runs `scenario` without a fault, then with a crash at each of its operations (and a few
/// past its end, which background work may reach). Returns the operations of the clean run.
fn sweep(name: &str, mode: Mode, scenario: Scenario) -> u64 {
    sweep_with(name, mode, scenario, FaultKind::Crash, 1)
}

/// [`sweep`] with another fault, at every `stride`-th operation: after an I/O error the
/// scenario goes on as far as it can, then the job goes on in place from its newest checkpoint
/// (opening the storage again, restoring, checkpointing), and then the power fails.
fn sweep_with(name: &str, mode: Mode, scenario: Scenario, kind: FaultKind, stride: usize) -> u64 {
    let (clean, _) = run(mode, scenario, None);
    assert!(clean > 5, "{name}: {clean} operations");
    let (mut runs, mut fired) = (0, 0);
    for n in (0..clean + 4).step_by(stride) {
        runs += 1;
        if run(mode, scenario, Some((n, kind))).1 {
            fired += 1;
        }
    }
    assert!(fired > runs / 2, "{name}: the fault fired in {fired} of {runs} runs");
    let at = if stride == 1 { "each".to_string() } else { format!("one in {stride}") };
    eprintln!("{name} ({mode:?}): {clean} operations, {kind:?} at {at}, it fired in {fired} of {runs} runs");
    clean
}

/// [`sweep_with`], the scenario going on past a failed checkpoint or savepoint with the next
/// step, as a job does.
fn sweep_past_failures(name: &str, mode: Mode, scenario: Scenario, kind: FaultKind, stride: usize) -> u64 {
    PAST_FAILURES.set(true);
    let ops = sweep_with(&format!("{name}, past failures"), mode, scenario, kind, stride);
    PAST_FAILURES.set(false);
    ops
}

/// One run; returns its operations and whether the fault fired.
fn run(mode: Mode, scenario: Scenario, fault: Option<(u64, FaultKind)>) -> (u64, bool) {
    let mut w = World::new(mode, fault);
    // Every handle the scenario made is dropped when it returns: background work has stopped.
    let result = scenario(&mut w);
    let base = w.base.expect("the scenario arms the fault");
    let used = w.fs.ops() - base;
    let crashed = w.fs.is_crashed();
    let fired = crashed || fault.is_some_and(|(n, _)| n < used);
    w.fs.disarm();
    match fault {
        Some((_, FaultKind::Crash)) if crashed => w.fs.recover(),
        // An error, then power loss once the scenario is over.
        // An error; the job goes on in place from its newest checkpoint, with the storage
        // opened again; then the power fails.
        Some((_, FaultKind::Error | FaultKind::ErrorForever | FaultKind::NoSpace)) if fired => {
            w.fs.disarm();
            w.go_on().unwrap_or_else(|e| panic!("{mode:?}, fault {fault:?}: going on after the error: {e}"));
            w.fs.crash();
        }
        _ => {
            if let Err(e) = &result {
                panic!("{mode:?}, fault {fault:?}: failed without the fault firing: {e}");
            }
        }
    }
    w.check();
    (used, fired)
}

/// A crash at `first` operations into `scenario`, then another at each operation of the
/// restart after it (opening the storage, restoring the newest checkpoint, the next
/// checkpoint), every `stride`-th first crash point. Returns the runs.
fn sweep_restarts(name: &str, mode: Mode, scenario: Scenario, stride: usize) -> u64 {
    let (clean, _) = run(mode, scenario, None);
    let mut runs = 0;
    for first in (0..clean).step_by(stride) {
        let mut second = 0;
        loop {
            let mut w = World::new(mode, Some((first, FaultKind::Crash)));
            let _ = scenario(&mut w);
            w.fs.disarm();
            w.fs.recover();
            let base = w.fs.ops();
            w.fs.fail_at(base + second, FaultKind::Crash);
            let went_on = w.go_on();
            // The first run that the crash does not reach ends the sweep of this point.
            let crashed = w.fs.is_crashed();
            w.fs.disarm();
            if crashed {
                w.fs.recover();
            } else if let Err(e) = went_on {
                panic!("{mode:?}, crash at {first}, then none at {second}: failed: {e}");
            }
            w.note = format!(", then a crash at {second} of the restart");
            w.check();
            runs += 1;
            if !crashed {
                break;
            }
            second += 1;
        }
    }
    eprintln!(
        "{name} ({mode:?}): a crash at one in {stride} of {clean} operations, then at each of the restart: {runs} runs"
    );
    runs
}

/// A storage made in new directories, then checkpoints 1 to 5 (the fourth a full one), with
/// writes after each barrier and a flush now and then.
fn five_checkpoints(w: &mut World) -> eddy::Result<()> {
    w.arm();
    w.root = "/jobs/job/checkpoints".into();
    w.open_storage()?;
    let mut t = w.open(all())?;
    let mut cp = w.checkpointer()?;
    t.write(1)?;
    for id in 1..=5 {
        w.checkpoint(&mut cp, &mut t, id, id == 4)?;
        t.write(id + 1)?;
        if id % 2 == 0 {
            t.b.store().flush()?;
        }
        w.wait(&mut cp, id)?;
    }
    cp.settle()?;
    Ok(())
}

/// As [`five_checkpoints`], but a checkpoint that fails is passed over and the next one is
/// taken, by the same checkpointer and backend, as a job does after a failed checkpoint.
fn five_checkpoints_past_failures(w: &mut World) -> eddy::Result<()> {
    w.arm();
    w.root = "/jobs/job/checkpoints".into();
    w.open_storage()?;
    let mut t = w.open(all())?;
    let mut cp = w.checkpointer()?;
    t.write(1)?;
    let mut failed = Vec::new();
    for id in 1..=5 {
        w.checkpoint(&mut cp, &mut t, id, id == 4)?;
        t.write(id + 1)?;
        if id % 2 == 0 {
            t.b.store().flush()?;
        }
        match w.wait(&mut cp, id) {
            Err(e) if w.fs.is_crashed() => return Err(e),
            Err(e) => failed.push((id, e)),
            Ok(_) => {}
        }
    }
    cp.settle()?;
    // One I/O error fails one checkpoint at most: the next ones complete, and once one that
    // started after the error did, retention has caught up (two kept, those the
    // checkpointer says).
    if let (Some((n, FaultKind::Error)), Some(base)) = (w.fault, w.base) {
        assert!(failed.len() <= 1, "{:?}: {failed:?}", w.fault);
        for id in 6..=8 {
            let after_the_error = w.fs.ops() > base + n;
            w.checkpoint(&mut cp, &mut t, id, false)?;
            w.wait(&mut cp, id)?;
            cp.settle()?;
            if after_the_error {
                let (retained, manifests) = (cp.retained(), w.storage.manifests()?);
                assert!(retained == manifests && retained.len() <= 2, "{:?}: {retained:?}, {manifests:?}", w.fault);
                break;
            }
        }
    }
    Ok(())
}

/// Checkpoints 1 and 2, then (swept) a restore of 2 by a new checkpointer and the
/// checkpoints 3 and 4 after it, which name the restored files and subsume 1 and 2.
fn restore_and_go_on(w: &mut World) -> eddy::Result<()> {
    {
        let mut t = w.open(all())?;
        let mut cp = w.checkpointer()?;
        for id in 1..=2 {
            t.write(id)?;
            t.b.store().flush()?;
            w.checkpoint(&mut cp, &mut t, id, false)?;
            w.wait(&mut cp, id)?;
        }
        cp.settle()?;
    }
    w.arm();
    let mut t = w.restore_checkpoint(2, all())?;
    let mut cp = w.checkpointer()?;
    for id in 3..=4 {
        t.write(id)?;
        if id == 3 {
            t.b.store().flush()?;
        }
        w.checkpoint(&mut cp, &mut t, id, false)?;
        w.wait(&mut cp, id)?;
    }
    cp.settle()?;
    Ok(())
}

/// Checkpoint 1, then (swept) checkpoint 2 aborted at once, 3 and 4 in flight together
/// with 4 confirmed (which aborts 3 if it is still in flight), and 5 confirmed after it
/// completed, which lets retention remove 4.
fn abort_and_confirm(w: &mut World) -> eddy::Result<()> {
    let mut t = w.open(all())?;
    let mut cp = w.checkpointer()?;
    t.write(1)?;
    w.checkpoint(&mut cp, &mut t, 1, false)?;
    w.wait(&mut cp, 1)?;
    w.arm();
    t.write(2)?;
    t.b.store().flush()?;
    w.checkpoint(&mut cp, &mut t, 2, false)?;
    cp.abort(2);
    t.write(3)?;
    w.checkpoint(&mut cp, &mut t, 3, false)?;
    t.write(4)?;
    w.checkpoint(&mut cp, &mut t, 4, false)?;
    cp.notify_checkpoint_complete(4);
    for id in 2..=4 {
        w.wait_or_aborted(&mut cp, id)?;
    }
    t.write(5)?;
    w.checkpoint(&mut cp, &mut t, 5, false)?;
    w.wait(&mut cp, 5)?;
    cp.notify_checkpoint_complete(5);
    cp.settle()?;
    Ok(())
}

/// Checkpoint 1, then (swept) savepoint 2 with checkpoint 3 in flight beside it, and a
/// restore from the savepoint whose next checkpoint 4 goes to the storage.
fn savepoint_and_restore_from_it(w: &mut World) -> eddy::Result<()> {
    let mut t = w.open(all())?;
    let mut cp = w.checkpointer()?;
    t.write(1)?;
    t.b.store().flush()?;
    w.checkpoint(&mut cp, &mut t, 1, false)?;
    w.wait(&mut cp, 1)?;
    w.arm();
    t.write(2)?;
    w.savepoint(&mut cp, &mut t, 2, "/sp")?;
    t.write(3)?;
    w.checkpoint(&mut cp, &mut t, 3, false)?;
    w.wait_savepoint(&mut cp, 2, "/sp")?;
    w.wait(&mut cp, 3)?;
    drop(cp);
    let state = w.savepoints[0].2.clone();
    drop(t);
    let source = w.savepoint_source("/sp");
    let mut t = w.restore(all(), &[source], state)?;
    let mut cp = w.checkpointer()?;
    t.write(4)?;
    w.checkpoint(&mut cp, &mut t, 4, false)?;
    w.wait(&mut cp, 4)?;
    cp.settle()?;
    Ok(())
}

/// Two backends (key groups 0-3 and 4-7) checkpoint 1 and 2 into one storage; then (swept)
/// one backend restores both and takes checkpoints 3 and 4, which subsume them.
fn two_into_one(w: &mut World) -> eddy::Result<()> {
    let both;
    {
        let mut a = w.open(low())?;
        let mut b = w.open(high())?;
        let mut cp = w.checkpointer()?;
        a.write(1)?;
        b.write(1)?;
        a.b.store().flush()?;
        w.checkpoint(&mut cp, &mut a, 1, false)?;
        w.checkpoint(&mut cp, &mut b, 2, false)?;
        w.wait(&mut cp, 1)?;
        w.wait(&mut cp, 2)?;
        cp.settle()?;
        both = a.state.union(&b.state);
    }
    w.arm();
    let sources = [w.source(1), w.source(2)];
    let mut t = w.restore(all(), &sources, both)?;
    let mut cp = w.checkpointer()?;
    for id in 3..=4 {
        t.write(id)?;
        w.checkpoint(&mut cp, &mut t, id, false)?;
        w.wait(&mut cp, id)?;
    }
    cp.settle()?;
    Ok(())
}

/// Two backends (key groups 0-3 and 4-7), one taking checkpoint 1, the other savepoint 2;
/// then (swept) one backend restores from both and takes checkpoints 3 and 4.
fn a_checkpoint_and_a_savepoint_into_one(w: &mut World) -> eddy::Result<()> {
    let both;
    {
        let mut a = w.open(low())?;
        let mut b = w.open(high())?;
        let mut cp = w.checkpointer()?;
        a.write(1)?;
        b.write(1)?;
        b.b.store().flush()?;
        b.write(2)?;
        w.checkpoint(&mut cp, &mut a, 1, false)?;
        w.savepoint(&mut cp, &mut b, 2, "/sp")?;
        w.wait(&mut cp, 1)?;
        w.wait_savepoint(&mut cp, 2, "/sp")?;
        both = a.state.union(&b.state);
    }
    w.arm();
    let sources = [w.source(1), w.savepoint_source("/sp")];
    let mut t = w.restore(all(), &sources, both)?;
    let mut cp = w.checkpointer()?;
    for id in 3..=4 {
        t.write(id)?;
        w.checkpoint(&mut cp, &mut t, id, false)?;
        w.wait(&mut cp, id)?;
    }
    cp.settle()?;
    Ok(())
}

/// One backend takes checkpoints 1 and 2; then (swept) two backends restore its halves and
/// checkpoint into the same storage (3 and 5 of the low half, 4 of the high one).
fn one_into_two(w: &mut World) -> eddy::Result<()> {
    {
        let mut t = w.open(all())?;
        let mut cp = w.checkpointer()?;
        for id in 1..=2 {
            t.write(id)?;
            t.b.store().flush()?;
            w.checkpoint(&mut cp, &mut t, id, false)?;
            w.wait(&mut cp, id)?;
        }
        cp.settle()?;
    }
    w.arm();
    let mut a = w.restore_checkpoint(2, low())?;
    let mut b = w.restore_checkpoint(2, high())?;
    let mut cp = w.checkpointer()?;
    a.write(3)?;
    b.write(3)?;
    w.checkpoint(&mut cp, &mut a, 3, false)?;
    w.checkpoint(&mut cp, &mut b, 4, false)?;
    w.wait(&mut cp, 3)?;
    w.wait(&mut cp, 4)?;
    a.write(5)?;
    w.checkpoint(&mut cp, &mut a, 5, false)?;
    w.wait(&mut cp, 5)?;
    cp.settle()?;
    Ok(())
}

#[test]
fn a_crash_at_every_operation_of_five_full_checkpoints_keeps_a_completed_one() {
    sweep("five checkpoints", Mode::Full, five_checkpoints);
}

#[test]
fn a_crash_at_every_operation_of_five_incremental_checkpoints_keeps_a_completed_one() {
    sweep("five checkpoints", Mode::Incremental, five_checkpoints);
}

#[test]
fn a_crash_at_every_operation_of_five_changelog_checkpoints_keeps_a_completed_one() {
    sweep("five checkpoints", Mode::Changelog, five_checkpoints);
}

#[test]
fn a_crash_at_every_operation_of_five_checkpoints_copied_into_the_storage_keeps_a_completed_one() {
    sweep("five checkpoints", Mode::Copied, five_checkpoints);
}

#[test]
fn a_crash_at_every_operation_of_a_restore_and_the_checkpoints_after_it() {
    sweep("restore and go on", Mode::Incremental, restore_and_go_on);
}

#[test]
fn with_a_changelog_a_crash_at_every_operation_of_a_restore_and_the_checkpoints_after_it() {
    sweep("restore and go on", Mode::Changelog, restore_and_go_on);
}

#[test]
fn a_crash_at_every_operation_of_aborted_and_confirmed_checkpoints() {
    sweep("abort and confirm", Mode::Incremental, abort_and_confirm);
}

#[test]
fn with_a_changelog_a_crash_at_every_operation_of_aborted_and_confirmed_checkpoints() {
    sweep("abort and confirm", Mode::Changelog, abort_and_confirm);
}

#[test]
fn a_crash_at_every_operation_of_a_savepoint_and_a_restore_from_it() {
    sweep("savepoint and restore from it", Mode::Incremental, savepoint_and_restore_from_it);
}

#[test]
fn a_crash_at_every_operation_of_a_compressed_savepoint_and_a_copying_restore() {
    sweep("savepoint and restore from it", Mode::Copied, savepoint_and_restore_from_it);
}

#[test]
fn with_a_changelog_a_crash_at_every_operation_of_a_savepoint_and_a_restore_from_it() {
    sweep("savepoint and restore from it", Mode::Changelog, savepoint_and_restore_from_it);
}

#[test]
fn a_crash_at_every_operation_of_restoring_two_backends_into_one() {
    sweep("two into one", Mode::Incremental, two_into_one);
}

#[test]
fn a_crash_at_every_operation_of_restoring_a_checkpoint_and_a_savepoint_into_one_backend() {
    sweep("a checkpoint and a savepoint into one", Mode::Incremental, a_checkpoint_and_a_savepoint_into_one);
}

#[test]
fn a_crash_at_every_operation_of_restoring_one_backend_into_two() {
    sweep("one into two", Mode::Incremental, one_into_two);
}

#[test]
fn with_a_changelog_a_crash_at_every_operation_of_restoring_one_backend_into_two() {
    sweep("one into two", Mode::Changelog, one_into_two);
}

#[test]
fn an_io_error_at_operations_of_five_incremental_checkpoints_then_power_loss() {
    sweep_with("five checkpoints", Mode::Incremental, five_checkpoints, FaultKind::Error, 4);
}

#[test]
fn with_a_changelog_an_io_error_at_operations_of_five_checkpoints_then_power_loss() {
    sweep_with("five checkpoints", Mode::Changelog, five_checkpoints, FaultKind::Error, 4);
}

#[test]
fn an_io_error_at_operations_of_incremental_checkpoints_that_go_on_past_failures_then_power_loss() {
    sweep_with(
        "five checkpoints past failures",
        Mode::Incremental,
        five_checkpoints_past_failures,
        FaultKind::Error,
        3,
    );
}

#[test]
fn with_a_changelog_an_io_error_at_operations_of_checkpoints_that_go_on_past_failures_then_power_loss() {
    sweep_with("five checkpoints past failures", Mode::Changelog, five_checkpoints_past_failures, FaultKind::Error, 3);
}

#[test]
fn a_full_disk_from_operations_of_checkpoints_that_go_on_past_failures_then_power_loss() {
    sweep_with(
        "five checkpoints past failures",
        Mode::Incremental,
        five_checkpoints_past_failures,
        FaultKind::NoSpace,
        3,
    );
}

#[test]
fn with_a_changelog_a_full_disk_from_operations_of_aborted_and_confirmed_checkpoints_then_power_loss() {
    sweep_with("abort and confirm", Mode::Changelog, abort_and_confirm, FaultKind::NoSpace, 3);
}

#[test]
fn an_io_error_at_operations_of_aborted_and_confirmed_checkpoints_going_on_past_failures() {
    sweep_past_failures("abort and confirm", Mode::Incremental, abort_and_confirm, FaultKind::Error, 3);
}

#[test]
fn with_a_changelog_an_io_error_at_operations_of_a_savepoint_and_a_restore_going_on_past_failures() {
    sweep_past_failures(
        "savepoint and restore from it",
        Mode::Changelog,
        savepoint_and_restore_from_it,
        FaultKind::Error,
        3,
    );
}

#[test]
fn an_io_error_at_operations_of_aborted_and_confirmed_checkpoints_then_power_loss() {
    sweep_with("abort and confirm", Mode::Changelog, abort_and_confirm, FaultKind::Error, 4);
}

#[test]
fn a_failing_disk_from_operations_of_restoring_one_backend_into_two_then_power_loss() {
    sweep_with("one into two", Mode::Incremental, one_into_two, FaultKind::ErrorForever, 4);
}

#[test]
fn a_crash_while_restarting_after_a_crash_in_incremental_checkpoints_keeps_a_completed_one() {
    sweep_restarts("five checkpoints", Mode::Incremental, five_checkpoints, 70);
}

#[test]
fn with_a_changelog_a_crash_while_restarting_after_a_crash_keeps_a_completed_checkpoint() {
    sweep_restarts("five checkpoints", Mode::Changelog, five_checkpoints, 70);
}

/// Every scenario in every mode: a crash, an I/O error, a failing disk and a full one at each
/// operation, and a crash at each operation of the restart after a crash at every fifth.
/// Minutes:
/// `cargo test --release --test crash_sweep -- --ignored --nocapture`.
#[test]
#[ignore = "minutes: every fault at every operation of every scenario"]
fn every_fault_at_every_operation_of_every_scenario() {
    let scenarios: [(&str, Scenario); 8] = [
        ("five checkpoints", five_checkpoints),
        ("five checkpoints past failures", five_checkpoints_past_failures),
        ("restore and go on", restore_and_go_on),
        ("abort and confirm", abort_and_confirm),
        ("savepoint and restore from it", savepoint_and_restore_from_it),
        ("two into one", two_into_one),
        ("a checkpoint and a savepoint into one", a_checkpoint_and_a_savepoint_into_one),
        ("one into two", one_into_two),
    ];
    let mut runs = 0;
    for (name, scenario) in scenarios {
        for mode in [Mode::Full, Mode::Incremental, Mode::Changelog, Mode::Copied] {
            for kind in [FaultKind::Crash, FaultKind::Error, FaultKind::ErrorForever, FaultKind::NoSpace] {
                runs += sweep_with(name, mode, scenario, kind, 1) + 4;
                if kind != FaultKind::Crash {
                    runs += sweep_past_failures(name, mode, scenario, kind, 1) + 4;
                }
            }
            runs += sweep_restarts(name, mode, scenario, 5);
        }
    }
    eprintln!("{runs} runs");
}
