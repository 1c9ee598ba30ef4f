//! Running a job: its subtasks on threads, the checkpoint coordinator, the job's checkpoint
//! metadata, and restarts from the latest completed checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::checkpoint::{CheckpointOptions, CheckpointStorage, LocalDirStorage, RestoreSource};
use crate::error::Misuse;
use crate::format::checkpoint::{CheckpointManifest, CHECKPOINT_VERSION};
use crate::format::meta::OperatorStateSnapshot;
use crate::format::savepoint::{SavepointReader, SAVEPOINT_VERSION};
use crate::io::{FileSystem, StdFs};
use crate::keygroup::{KeyGroupRange, MaxParallelism};
use crate::state::OperatorStateBackend;
use crate::store::StoreOptions;
use crate::{Error, Result};

use super::emit::{is_cancelled, Barrier, Cancel};
use super::graph::{Job, Setup};
use super::options::{Restarts, RunOptions};
use super::task::{Control, Report, Reported, SubtaskCheckpoint, TaskCtx};

/// A completed checkpoint of a job, with the figures Flink's web UI shows.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckpointStats {
    /// Its id.
    pub id: u64,
    /// When it was triggered.
    pub triggered: SystemTime,
    /// From its trigger to its completion.
    pub duration: Duration,
    /// Every subtask's part.
    pub subtasks: Vec<SubtaskCheckpoint>,
}

impl CheckpointStats {
    /// Bytes stored anew, over all subtasks.
    pub fn bytes(&self) -> u64 {
        self.subtasks.iter().map(|s| s.bytes).sum()
    }

    /// The longest synchronous part of any subtask.
    pub fn max_sync(&self) -> Duration {
        self.subtasks.iter().map(|s| s.sync).max().unwrap_or_default()
    }

    /// The longest asynchronous part of any subtask.
    pub fn max_async(&self) -> Duration {
        self.subtasks.iter().map(|s| s.asynchronous).max().unwrap_or_default()
    }

    /// The longest alignment of any subtask.
    pub fn max_alignment(&self) -> Duration {
        self.subtasks.iter().map(|s| s.alignment).max().unwrap_or_default()
    }

    /// Files the checkpoint names that earlier ones stored, over all subtasks.
    pub fn shared_files(&self) -> usize {
        self.subtasks.iter().map(|s| s.shared_files).sum()
    }

    /// The size of the whole state the checkpoint names, over all subtasks (Flink's
    /// "full checkpoint data size").
    pub fn state_size(&self) -> u64 {
        self.subtasks.iter().map(|s| s.state_size).sum()
    }
}

impl std::fmt::Display for CheckpointStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "checkpoint {}: {:.1} ms, sync max {:.2} ms, async max {:.1} ms, alignment max {:.2} ms, {} bytes new, {} files shared, state {} bytes, {} subtasks",
            self.id,
            self.duration.as_secs_f64() * 1e3,
            self.max_sync().as_secs_f64() * 1e3,
            self.max_async().as_secs_f64() * 1e3,
            self.max_alignment().as_secs_f64() * 1e3,
            self.bytes(),
            self.shared_files(),
            self.state_size(),
            self.subtasks.len()
        )
    }
}

/// How a job's run went.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JobResult {
    /// How many times it restarted after a failure.
    pub restarts: usize,
    /// The failures it restarted after.
    pub failures: Vec<String>,
    /// The checkpoints it restored from, one per start that restored.
    pub restored: Vec<u64>,
    /// Its completed checkpoints, in order.
    pub checkpoints: Vec<CheckpointStats>,
    /// The savepoint it stopped with, if it was stopped with one.
    pub savepoint: Option<PathBuf>,
    /// From the start to the end.
    pub duration: Duration,
}

/// A job checkpoint's (or job savepoint's) metadata: which checkpoint, the job's max
/// parallelism, and every operator's parallelism, whose subtasks' checkpoints in
/// `<uid>/p<parallelism>-s<subtask>` (savepoints in `<uid>-<subtask>`) make it up
/// (`format-spec/job-checkpoint.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCheckpoint {
    /// The checkpoint's id.
    pub id: u64,
    /// The job's max parallelism.
    pub max_parallelism: u32,
    /// (uid, parallelism) per operator.
    pub operators: Vec<(String, usize)>,
}

const JOB_MAGIC: &str = "eddy job checkpoint";
const JOB_VERSION: u32 = 1;

impl JobCheckpoint {
    /// The metadata's text.
    pub fn encode(&self) -> String {
        let mut s = format!("{JOB_MAGIC} {JOB_VERSION}\nid {}\nmax_parallelism {}\n", self.id, self.max_parallelism);
        for (uid, p) in &self.operators {
            s.push_str(&format!("operator {uid} {p}\n"));
        }
        let crc = crc32fast::hash(s.as_bytes());
        s.push_str(&format!("crc32 {crc:08x}\n"));
        s
    }

    /// Decodes untrusted bytes read from `path` (named in errors): a typed error for anything
    /// damaged, truncated or of another version.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |what: &'static str| Error::corrupted(path.to_owned(), 0, crate::Corruption::Malformed(what));
        let text = std::str::from_utf8(bytes).map_err(|_| bad("job checkpoint text"))?;
        let body_end = text.rfind("crc32 ").ok_or_else(|| bad("job checkpoint checksum line"))?;
        let (body, crc_line) = text.split_at(body_end);
        let stored = crc_line
            .strip_prefix("crc32 ")
            .and_then(|c| c.strip_suffix('\n'))
            .and_then(|c| u32::from_str_radix(c, 16).ok())
            .ok_or_else(|| bad("job checkpoint checksum"))?;
        let computed = crc32fast::hash(body.as_bytes());
        if stored != computed {
            return Err(Error::corrupted(
                path.to_owned(),
                body_end as u64,
                crate::Corruption::ChecksumMismatch { stored, computed },
            ));
        }
        let mut lines = body.lines();
        let version = lines
            .next()
            .and_then(|l| l.strip_prefix(JOB_MAGIC))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or_else(|| bad("job checkpoint header"))?;
        if version != JOB_VERSION {
            return Err(Error::UnsupportedVersion { file: path.to_owned(), found: version, supported: JOB_VERSION });
        }
        let field = |line: Option<&str>, name: &str| -> Option<u64> { line?.strip_prefix(name)?.trim().parse().ok() };
        let id = field(lines.next(), "id ").ok_or_else(|| bad("job checkpoint id"))?;
        let max_parallelism = field(lines.next(), "max_parallelism ")
            .and_then(|m| u32::try_from(m).ok())
            .ok_or_else(|| bad("job checkpoint max parallelism"))?;
        let mut operators = Vec::new();
        for l in lines {
            let mut parts = l.strip_prefix("operator ").ok_or_else(|| bad("job checkpoint operator"))?.split(' ');
            let (Some(uid), Some(p), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("job checkpoint operator"));
            };
            let p: usize = p.parse().map_err(|_| bad("job checkpoint parallelism"))?;
            if p == 0 || p > crate::keygroup::MAX_PARALLELISM_UPPER_BOUND as usize {
                return Err(bad("job checkpoint parallelism"));
            }
            let valid = uid.len() <= 64
                && uid.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
            if !valid || operators.iter().any(|(u, _)| u == uid) {
                return Err(bad("job checkpoint operator uid"));
            }
            operators.push((uid.to_owned(), p));
        }
        Ok(JobCheckpoint { id, max_parallelism, operators })
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.to_owned(), source: e }
}

fn metadata_dir(root: &Path) -> PathBuf {
    root.join("_job")
}

fn metadata_path(root: &Path, id: u64) -> PathBuf {
    metadata_dir(root).join(format!("chk-{id:020}"))
}

fn storage_dir(root: &Path, uid: &str, parallelism: usize, subtask: usize) -> PathBuf {
    root.join(uid).join(format!("p{parallelism}-s{subtask}"))
}

/// The ids of the job checkpoints under `root`, ascending.
fn job_checkpoints(fs: &dyn FileSystem, root: &Path) -> Result<Vec<u64>> {
    let dir = metadata_dir(root);
    if !fs.exists(&dir) {
        return Ok(Vec::new());
    }
    let mut ids = Vec::new();
    for name in fs.list(&dir).map_err(|e| io(&dir, e))? {
        if let Some(id) = name.strip_prefix("chk-").and_then(|n| n.parse::<u64>().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// The latest completed checkpoint of the job under `root` whose metadata reads back. A
/// damaged metadata file is passed over for an older one, as for keyed checkpoints.
pub fn latest_job_checkpoint(root: impl AsRef<Path>) -> Result<Option<u64>> {
    Ok(latest(&StdFs::new(), root.as_ref())?.map(|c| c.id))
}

fn latest(fs: &dyn FileSystem, root: &Path) -> Result<Option<JobCheckpoint>> {
    for id in job_checkpoints(fs, root)?.into_iter().rev() {
        let path = metadata_path(root, id);
        let bytes = fs.open(&path).map_err(|e| io(&path, e))?;
        match JobCheckpoint::decode(&path, &bytes) {
            Ok(c) if c.id == id => return Ok(Some(c)),
            Ok(_) | Err(Error::Corrupted { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Writes `bytes` to `path` atomically and durably.
fn write_atomic(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs.create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tmp = path.with_extension("tmp");
    let mut f = fs.create(&tmp).map_err(|e| io(&tmp, e))?;
    f.append(bytes).and_then(|()| f.sync()).map_err(|e| io(&tmp, e))?;
    drop(f);
    fs.rename(&tmp, path).map_err(|e| io(path, e))?;
    fs.sync_dir(dir).map_err(|e| io(dir, e))
}

/// The file system a run keeps its checkpoints and working state on.
fn file_system(opts: &RunOptions) -> Arc<dyn FileSystem> {
    opts.file_system.clone().unwrap_or_else(|| Arc::new(StdFs::new()))
}

/// Where an operator's state comes back from: the checkpoint (or savepoint) and the
/// operator's parallelism in it.
struct RestorePoint<'a> {
    id: Option<u64>,
    parallelism: Option<usize>,
    savepoint: Option<&'a Path>,
}

/// A subtask's thread and where its messages go.
struct Running {
    uid: String,
    subtask: usize,
    control: Sender<Control>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A checkpoint in flight.
struct InFlight {
    triggered: SystemTime,
    started: Instant,
    acks: Vec<SubtaskCheckpoint>,
    /// A savepoint's directory, and who waits for it.
    savepoint: Option<(PathBuf, Sender<Result<PathBuf>>)>,
}

/// How one start of the job ended.
enum Outcome {
    Finished,
    /// Stopped with the savepoint in this directory.
    Stopped(PathBuf),
    Failed(Error),
}

/// What a [`JobHandle`] asks of a running job.
enum Command {
    /// Take a savepoint into the directory and stop; the reply says how it went.
    StopWithSavepoint(PathBuf, Sender<Result<PathBuf>>),
}

/// A job running on a thread of its own: see [`Job::spawn`].
pub struct JobHandle {
    commands: Sender<Command>,
    thread: Option<std::thread::JoinHandle<Result<JobResult>>>,
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle").finish_non_exhaustive()
    }
}

impl JobHandle {
    /// Takes a savepoint of the whole job into `dir` (which must not hold one) and stops the
    /// job once it is complete: sinks commit what the savepoint covers; nothing after it is
    /// published. Returns the savepoint's directory, to start the job from with
    /// [`RunOptions::from_savepoint`] (at any parallelism). A savepoint that fails leaves the
    /// job running.
    pub fn stop_with_savepoint(&self, dir: impl Into<PathBuf>) -> Result<PathBuf> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let gone = || Error::JobCheckpoint { id: 0, why: "the job is not running".into() };
        self.commands.send(Command::StopWithSavepoint(dir.into(), tx)).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }

    /// Waits for the job to end: how it went.
    pub fn join(mut self) -> Result<JobResult> {
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => {
                Err(Error::TaskFailed { operator: String::new(), subtask: 0, why: "the job's thread panicked".into() })
            }
        }
    }
}

/// The file of a job savepoint's metadata, in the savepoint's directory.
const SAVEPOINT_METADATA: &str = "_job";

impl Job {
    /// Runs the job until its sources end, restarting after failures by `opts.restart` from
    /// the latest completed checkpoint. A job started again on the same checkpoint directory
    /// resumes from its latest checkpoint, at the parallelism the job now has.
    pub fn run(&self, opts: &RunOptions) -> Result<JobResult> {
        self.run_with(opts, None)
    }

    /// Runs the job on a thread of its own: the handle stops it with a savepoint or waits
    /// for its end.
    pub fn spawn(self, opts: RunOptions) -> Result<JobHandle> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name(format!("eddy-job-{}", self.g.name))
            .spawn(move || self.run_with(&opts, Some(&rx)))
            .map_err(|e| io(&PathBuf::from("."), e))?;
        Ok(JobHandle { commands: tx, thread: Some(thread) })
    }

    fn run_with(&self, opts: &RunOptions, commands: Option<&Receiver<Command>>) -> Result<JobResult> {
        if let Some(c) = &opts.checkpoints {
            c.check()?;
        }
        let root = &opts.checkpoint_dir;
        file_system(opts).create_dir_all(root).map_err(|e| io(root, e))?;
        let mut restarts = Restarts::new(opts.restart.clone());
        let mut result = JobResult {
            restarts: 0,
            failures: Vec::new(),
            restored: Vec::new(),
            checkpoints: Vec::new(),
            savepoint: None,
            duration: Duration::ZERO,
        };
        let start = Instant::now();
        loop {
            let began = Instant::now();
            match self.attempt(opts, &mut result, commands)? {
                Outcome::Finished => {
                    result.restarts = restarts.restarts();
                    result.duration = start.elapsed();
                    return Ok(result);
                }
                Outcome::Stopped(dir) => {
                    result.restarts = restarts.restarts();
                    result.duration = start.elapsed();
                    result.savepoint = Some(dir);
                    return Ok(result);
                }
                Outcome::Failed(e) => match restarts.on_failure(began.elapsed()) {
                    Some(delay) => {
                        result.failures.push(e.to_string());
                        std::thread::sleep(delay);
                    }
                    None => return Err(e),
                },
            }
        }
    }

    /// One start of the job: restore, run, coordinate checkpoints, until it finishes or fails.
    fn attempt(
        &self,
        opts: &RunOptions,
        result: &mut JobResult,
        commands: Option<&Receiver<Command>>,
    ) -> Result<Outcome> {
        let g = &self.g;
        let root = &opts.checkpoint_dir;
        let max = MaxParallelism::new(g.max_parallelism).map_err(Error::from)?;
        // The latest checkpoint of this run, else the savepoint it starts from.
        let fs = file_system(opts);
        let (restored, from_savepoint) = match (latest(&*fs, root)?, &opts.from_savepoint) {
            (Some(c), _) => (Some(c), None),
            (None, Some(dir)) => {
                let path = dir.join(SAVEPOINT_METADATA);
                let bytes = fs.open(&path).map_err(|e| io(&path, e))?;
                (Some(JobCheckpoint::decode(&path, &bytes)?), Some(dir.clone()))
            }
            (None, None) => (None, None),
        };
        if let Some(r) = &restored {
            if r.max_parallelism != g.max_parallelism {
                return Err(Misuse::IncompatibleSnapshot {
                    why: format!(
                        "the job's checkpoint {} has max parallelism {}, the job {}; change it offline",
                        r.id, r.max_parallelism, g.max_parallelism
                    ),
                }
                .into());
            }
            result.restored.push(r.id);
        }
        let attempt = {
            let nanos = SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            format!("{:x}", (nanos as u64) ^ (u64::from(std::process::id()) << 40))
        };
        let work = opts.work_dir.clone().unwrap_or_else(|| root.join("_work")).join(&attempt);
        let checkpointing = opts.checkpoints.is_some();
        let parallelism: Vec<usize> = g.stages.iter().map(|s| s.parallelism.unwrap_or(g.parallelism)).collect();

        // Each edge's channels, handed out per subtask.
        let mut outputs: Vec<Vec<Option<Box<dyn std::any::Any + Send>>>> =
            parallelism.iter().map(|&p| (0..p).map(|_| None).collect()).collect();
        let mut inputs: Vec<Vec<Vec<Box<dyn std::any::Any + Send>>>> =
            parallelism.iter().map(|&p| (0..p).map(|_| Vec::new()).collect()).collect();
        for e in &g.edges {
            let Some(to) = e.to else { continue };
            let (senders, receivers) = (e.make)(parallelism[e.from], parallelism[to], opts.channel_capacity);
            for (i, s) in senders.into_iter().enumerate() {
                outputs[e.from][i] = Some(s);
            }
            for (i, r) in receivers.into_iter().enumerate() {
                inputs[to][i].push(r);
            }
        }

        let cancel = Cancel::default();
        let (report_tx, reports) = crossbeam_channel::unbounded::<Reported>();
        let (exit_tx, exits) = crossbeam_channel::unbounded::<((usize, usize), Result<()>)>();
        let mut running: Vec<Vec<Running>> = Vec::new();
        let cp_opts = opts.checkpoints.as_ref().map(|c| {
            // A subtask keeps, besides the retained checkpoints, those that completed there
            // and may still complete for the job.
            CheckpointOptions::new()
                .max_in_flight(c.max_concurrent.max(1) + 1)
                .retain(c.retained + c.max_concurrent)
                .incremental(c.incremental)
        });
        let next_id = restored.as_ref().map_or(1, |r| r.id + 1);
        let mut sources = 0;
        let mut setup_error = None;
        for (si, stage) in g.stages.iter().enumerate() {
            let p = parallelism[si];
            if stage.inputs.is_empty() {
                sources += p;
            }
            let prior =
                restored.as_ref().and_then(|r| r.operators.iter().find(|(u, _)| *u == stage.uid).map(|(_, p)| *p));
            let point = RestorePoint {
                id: restored.as_ref().map(|r| r.id),
                parallelism: prior,
                savepoint: from_savepoint.as_deref(),
            };
            let plan = match Self::plan_restore(&fs, root, &stage.uid, p, max, &point) {
                Ok(plan) => plan,
                Err(e) => {
                    setup_error = Some(e);
                    break;
                }
            };
            let mut subtasks = Vec::new();
            for (i, (restore, operator_state)) in plan.into_iter().enumerate() {
                let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded();
                let ctx = TaskCtx {
                    uid: stage.uid.clone(),
                    stage: si,
                    subtask: i,
                    parallelism: p,
                    control: ctl_rx,
                    reports: report_tx.clone(),
                    cancel: cancel.clone(),
                    checkpointing,
                    aligned: opts.checkpoints.as_ref().is_none_or(|c| c.exactly_once),
                };
                let key_groups = max.subtask_range(p as u32, i as u32).map_err(Error::from)?;
                let store_options = StoreOptions::new()
                    .file_system(fs.clone())
                    .memory_budget(opts.memory_budget)
                    .changelog(opts.checkpoints.as_ref().is_some_and(|c| c.changelog));
                let setup = Setup {
                    inputs: std::mem::take(&mut inputs[si][i]),
                    output: outputs[si][i].take(),
                    max_parallelism: max,
                    key_groups,
                    store_dir: work.join(format!("{}-{i}", stage.uid)),
                    store_options,
                    restore,
                    operator_state,
                    checkpoints: cp_opts.clone().map(|o| {
                        let confirmed = if from_savepoint.is_some() { None } else { restored.as_ref().map(|r| r.id) };
                        (storage_dir(root, &stage.uid, p, i), o, confirmed)
                    }),
                    job: g.name.clone(),
                    attempt: attempt.clone(),
                    fs: fs.clone(),
                };
                let spec = stage
                    .spec
                    .clone()
                    .ok_or_else(|| Misuse::InvalidJob { why: "an operator without a spec".into() })?;
                let exit = exit_tx.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("eddy-{}-{i}", stage.uid))
                    .spawn(move || {
                        let who = (ctx.stage, ctx.subtask);
                        let (uid, subtask) = (ctx.uid.clone(), ctx.subtask);
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| spec.run(&ctx, setup)));
                        let r = match r {
                            Ok(r) => r,
                            Err(p) => {
                                let why = match (p.downcast_ref::<&str>(), p.downcast_ref::<String>()) {
                                    (Some(s), _) => format!("panicked: {s}"),
                                    (_, Some(s)) => format!("panicked: {s}"),
                                    _ => "panicked".to_owned(),
                                };
                                Err(Error::TaskFailed { operator: uid, subtask, why })
                            }
                        };
                        if r.is_err() {
                            // Everyone else stops too, wherever they wait.
                            ctx.cancel.set();
                        }
                        let _ = exit.send((who, r));
                    })
                    .map_err(|e| io(root, e))?;
                subtasks.push(Running { uid: stage.uid.clone(), subtask: i, control: ctl_tx, thread: Some(thread) });
            }
            running.push(subtasks);
        }
        drop(report_tx);
        drop(exit_tx);
        let outcome = match setup_error {
            Some(e) => {
                cancel.set();
                Outcome::Failed(e)
            }
            None => self.coordinate(opts, &running, &reports, &exits, commands, next_id, sources, result),
        };
        if matches!(outcome, Outcome::Failed(_)) {
            cancel.set();
        }
        for r in running.iter_mut().flatten() {
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
        if opts.file_system.is_none() {
            let _ = std::fs::remove_dir_all(&work);
        }
        Ok(outcome)
    }

    /// Per subtask of operator `uid` at parallelism `p`: the keyed checkpoints it restores
    /// from and its operator state, from checkpoint `id` where the operator ran at `prior`.
    /// Its own storage loses what checkpoints later than `id` left (they never completed).
    fn plan_restore(
        fs: &Arc<dyn FileSystem>,
        root: &Path,
        uid: &str,
        p: usize,
        max: MaxParallelism,
        point: &RestorePoint<'_>,
    ) -> Result<Vec<(Vec<RestoreSource>, OperatorStateSnapshot)>> {
        let (id, prior, savepoint) = (point.id, point.parallelism, point.savepoint);
        let storage = |parallelism: usize, i: usize| -> Result<Arc<dyn CheckpointStorage>> {
            Ok(Arc::new(LocalDirStorage::new(fs.clone(), storage_dir(root, uid, parallelism, i))?))
        };
        for i in 0..p {
            let dir = storage_dir(root, uid, p, i);
            if fs.exists(&dir) {
                let s = storage(p, i)?;
                for m in s.manifests()? {
                    if savepoint.is_some() || id.is_none_or(|id| m > id) {
                        s.remove_manifest(m)?;
                    }
                }
            }
        }
        let (Some(id), Some(prior)) = (id, prior) else {
            return Ok((0..p).map(|_| (Vec::new(), OperatorStateSnapshot::default())).collect());
        };
        let mut old_ops = Vec::with_capacity(prior);
        let mut old = Vec::with_capacity(prior);
        for j in 0..prior {
            let range = max.subtask_range(prior as u32, j as u32).map_err(Error::from)?;
            match savepoint {
                None => {
                    let s = storage(prior, j)?;
                    let bytes = s.read_manifest(id)?;
                    let manifest = CheckpointManifest::decode(&bytes)
                        .map_err(|e| e.into_error(&s.describe_manifest(id), CHECKPOINT_VERSION))?;
                    old_ops.push(manifest.meta.operator);
                    old.push((range, RestoreSource::Checkpoint { storage: s, id }));
                }
                Some(sp) => {
                    let dir = sp.join(format!("{uid}-{j}"));
                    let path = crate::checkpoint::savepoint_file(&dir);
                    let bytes = fs.open(&path).map_err(|e| io(&path, e))?;
                    let reader = SavepointReader::new(&bytes).map_err(|e| e.into_error(&path, SAVEPOINT_VERSION))?;
                    old_ops.push(reader.meta.operator);
                    old.push((range, RestoreSource::Savepoint { fs: fs.clone(), dir }));
                }
            }
        }
        let ops = OperatorStateBackend::redistribute(&old_ops, p)?;
        let mut out = Vec::with_capacity(p);
        for (i, op) in ops.into_iter().enumerate() {
            let range: KeyGroupRange = max.subtask_range(p as u32, i as u32).map_err(Error::from)?;
            let sources =
                old.iter().filter(|(r, _)| !r.intersection(&range).is_empty()).map(|(_, s)| s.clone()).collect();
            out.push((sources, op));
        }
        Ok(out)
    }

    /// The checkpoint coordinator: triggers checkpoints, collects acknowledgements, completes
    /// and notifies; and watches the subtasks until they all finish or one fails.
    #[allow(clippy::too_many_arguments)]
    fn coordinate(
        &self,
        opts: &RunOptions,
        running: &[Vec<Running>],
        reports: &Receiver<Reported>,
        exits: &Receiver<((usize, usize), Result<()>)>,
        commands: Option<&Receiver<Command>>,
        mut next_id: u64,
        sources: usize,
        result: &mut JobResult,
    ) -> Outcome {
        let g = &self.g;
        let root = &opts.checkpoint_dir;
        let fs = file_system(opts);
        let total: usize = running.iter().map(Vec::len).sum();
        let all = || running.iter().flatten();
        let send_all = |c: Control| {
            for r in all() {
                let _ = r.control.send(c.clone());
            }
        };
        let send_sources = |c: Control| {
            for (si, stage) in g.stages.iter().enumerate() {
                if stage.inputs.is_empty() {
                    for r in &running[si] {
                        let _ = r.control.send(c.clone());
                    }
                }
            }
        };
        let mut in_flight: BTreeMap<u64, InFlight> = BTreeMap::new();
        let mut exited = 0;
        let mut sources_done = 0;
        let mut final_id: Option<u64> = None;
        let mut failures_in_row = 0;
        let mut last_completion = Instant::now();
        let mut next_trigger = opts.checkpoints.as_ref().map(|c| Instant::now() + c.interval);
        let mut cancelled_exits = 0;
        let mut stopping: Option<PathBuf> = None;
        let mut final_due = false;
        let never = crossbeam_channel::never();
        let commands = commands.unwrap_or(&never);
        loop {
            let timeout = next_trigger.map_or(Duration::from_millis(100), |t| {
                t.saturating_duration_since(Instant::now()).min(Duration::from_millis(100))
            });
            crossbeam_channel::select! {
                recv(exits) -> msg => {
                    let Ok(((si, i), r)) = msg else { return Outcome::Failed(Error::TaskFailed { operator: String::new(), subtask: 0, why: "the subtasks are gone".into() }) };
                    exited += 1;
                    match r {
                        Ok(()) => {}
                        Err(e) if is_cancelled(&e) => cancelled_exits += 1,
                        Err(e) => {
                            let e = match e {
                                e @ Error::TaskFailed { .. } => e,
                                e => Error::TaskFailed { operator: running[si][i].uid.clone(), subtask: running[si][i].subtask, why: e.to_string() },
                            };
                            return Outcome::Failed(e);
                        }
                    }
                    if exited == total {
                        if let Some(dir) = stopping.take() {
                            return Outcome::Stopped(dir);
                        }
                        if cancelled_exits > 0 {
                            return Outcome::Failed(Error::TaskFailed { operator: running[si][i].uid.clone(), subtask: i, why: "cancelled".into() });
                        }
                        return Outcome::Finished;
                    }
                }
                recv(reports) -> msg => {
                    let Ok(((_si, _i), report)) = msg else { continue };
                    match report {
                        Report::SourceDone => {
                            sources_done += 1;
                            // The final checkpoint (below) follows once nothing is in flight.
                            final_due = sources_done == sources && opts.checkpoints.is_some();
                        }
                        Report::Ack(id, part) => {
                            let Some(f) = in_flight.get_mut(&id) else { continue };
                            f.acks.push(part);
                            if f.acks.len() == total {
                                let Some(f) = in_flight.remove(&id) else { continue };
                                let meta = JobCheckpoint {
                                    id,
                                    max_parallelism: g.max_parallelism,
                                    operators: g.stages.iter().zip(running).map(|(s, r)| (s.uid.clone(), r.len())).collect(),
                                };
                                if let Some((dir, reply)) = f.savepoint {
                                    let written = write_atomic(&*fs, &dir.join(SAVEPOINT_METADATA), meta.encode().as_bytes());
                                    let ok = written.is_ok();
                                    let _ = reply.send(written.map(|()| dir.clone()));
                                    if ok {
                                        // Sinks commit what the savepoint covers, then all stop.
                                        send_all(Control::Complete(id));
                                        send_all(Control::Stop);
                                        stopping = Some(dir);
                                    } else {
                                        send_all(Control::Abort(id));
                                    }
                                    continue;
                                }
                                if let Err(e) = write_atomic(&*fs, &metadata_path(root, id), meta.encode().as_bytes()) {
                                    return Outcome::Failed(e);
                                }
                                // Older checkpoints still in flight are subsumed.
                                for old in in_flight.keys().copied().filter(|o| *o < id).collect::<Vec<_>>() {
                                    in_flight.remove(&old);
                                    send_all(Control::Abort(old));
                                }
                                send_all(Control::Complete(id));
                                failures_in_row = 0;
                                last_completion = Instant::now();
                                let mut subtasks = f.acks;
                                subtasks.sort_by(|a, b| (&a.operator, a.subtask).cmp(&(&b.operator, b.subtask)));
                                let stats = CheckpointStats { id, triggered: f.triggered, duration: f.started.elapsed(), subtasks };
                                if opts.log_checkpoints {
                                    println!("{stats}");
                                }
                                result.checkpoints.push(stats);
                                if let Err(e) = self.retain(opts, running) {
                                    return Outcome::Failed(e);
                                }
                                if final_id == Some(id) {
                                    send_all(Control::Finish);
                                }
                            }
                        }
                        Report::Decline(id, e) => {
                            if let Some(InFlight { savepoint: Some((_, reply)), .. }) = in_flight.get(&id) {
                                let _ = reply.send(Err(Error::JobCheckpoint { id, why: e.to_string() }));
                                in_flight.remove(&id);
                                send_all(Control::Abort(id));
                                continue;
                            }
                            if in_flight.remove(&id).is_some() {
                                send_all(Control::Abort(id));
                                failures_in_row += 1;
                                let tolerable = opts.checkpoints.as_ref().map_or(0, |c| c.tolerable_failures);
                                if final_id == Some(id) || failures_in_row > tolerable {
                                    return Outcome::Failed(Error::JobCheckpoint { id, why: e.to_string() });
                                }
                            }
                        }
                    }
                }
                recv(commands) -> msg => {
                    let Ok(Command::StopWithSavepoint(dir, reply)) = msg else { continue };
                    if stopping.is_some() || final_id.is_some() {
                        let _ = reply.send(Err(Error::JobCheckpoint { id: 0, why: "the job is already ending".into() }));
                        continue;
                    }
                    if fs.exists(&dir.join(SAVEPOINT_METADATA)) {
                        let _ = reply.send(Err(Misuse::NotEmpty.into()));
                        continue;
                    }
                    if let Err(e) = fs.create_dir_all(&dir) {
                        let _ = reply.send(Err(io(&dir, e)));
                        continue;
                    }
                    let id = next_id;
                    next_id += 1;
                    in_flight.insert(id, InFlight { triggered: SystemTime::now(), started: Instant::now(), acks: Vec::new(), savepoint: Some((dir.clone(), reply)) });
                    send_sources(Control::Trigger(Barrier { id, savepoint: Some(Arc::new(dir)) }));
                }
                default(timeout) => {}
            }
            let Some(c) = &opts.checkpoints else { continue };
            if final_due && final_id.is_none() && stopping.is_none() && in_flight.is_empty() {
                // The final checkpoint: it covers all input, and its completion commits
                // what the sinks hold. Triggered only when no other is in flight, so that no
                // subtask's retention gives up a checkpoint the job may still complete.
                let id = next_id;
                next_id += 1;
                final_id = Some(id);
                in_flight.insert(
                    id,
                    InFlight {
                        triggered: SystemTime::now(),
                        started: Instant::now(),
                        acks: Vec::new(),
                        savepoint: None,
                    },
                );
                send_sources(Control::Trigger(Barrier { id, savepoint: None }));
            }
            let now = Instant::now();
            // Timeouts.
            let late: Vec<u64> =
                in_flight.iter().filter(|(_, f)| f.started.elapsed() > c.timeout).map(|(id, _)| *id).collect();
            for id in late {
                in_flight.remove(&id);
                send_all(Control::Abort(id));
                failures_in_row += 1;
                if final_id == Some(id) || failures_in_row > c.tolerable_failures {
                    return Outcome::Failed(Error::JobCheckpoint { id, why: "timed out".into() });
                }
            }
            if final_id.is_none()
                && stopping.is_none()
                && !in_flight.values().any(|f| f.savepoint.is_some())
                && next_trigger.is_some_and(|t| now >= t)
                && in_flight.len() < c.max_concurrent
                && now.duration_since(last_completion) >= c.min_pause
            {
                let id = next_id;
                next_id += 1;
                in_flight.insert(
                    id,
                    InFlight { triggered: SystemTime::now(), started: now, acks: Vec::new(), savepoint: None },
                );
                send_sources(Control::Trigger(Barrier { id, savepoint: None }));
                next_trigger = Some(now + c.interval);
            }
        }
    }

    /// Keeps the newest `retained` job checkpoints and the storages they name.
    fn retain(&self, opts: &RunOptions, running: &[Vec<Running>]) -> Result<()> {
        let Some(c) = &opts.checkpoints else { return Ok(()) };
        let root = &opts.checkpoint_dir;
        let fs = file_system(opts);
        let ids = job_checkpoints(&*fs, root)?;
        let keep = ids.len().saturating_sub(c.retained);
        for id in &ids[..keep] {
            let path = metadata_path(root, *id);
            fs.remove(&path).map_err(|e| io(&path, e))?;
        }
        // The storages of parallelisms that no kept checkpoint names.
        let mut named: HashMap<&str, Vec<usize>> = HashMap::new();
        for (s, r) in self.g.stages.iter().zip(running) {
            named.entry(&s.uid).or_default().push(r.len());
        }
        let mut kept = Vec::new();
        for id in &ids[keep..] {
            let path = metadata_path(root, *id);
            if let Ok(bytes) = fs.open(&path) {
                if let Ok(m) = JobCheckpoint::decode(&path, &bytes) {
                    kept.push(m);
                }
            }
        }
        if opts.file_system.is_some() {
            // Another file system has no listing of directories: its storages of other
            // parallelisms stay.
            return Ok(());
        }
        for s in &self.g.stages {
            let dir = root.join(&s.uid);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(p) =
                    name.strip_prefix('p').and_then(|n| n.split('-').next()).and_then(|n| n.parse::<usize>().ok())
                else {
                    continue;
                };
                let in_use = named.get(s.uid.as_str()).is_some_and(|ps| ps.contains(&p))
                    || kept.iter().any(|m| m.operators.iter().any(|(u, q)| *u == s.uid && *q == p));
                if !in_use {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }
}
