//! How a job runs: where its checkpoints go and how often, how it restarts after a failure.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Misuse;
use crate::Result;

/// Checkpointing, with Flink's options.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckpointConfig {
    /// How often a checkpoint is triggered.
    pub interval: Duration,
    /// A checkpoint not complete after this long is aborted (and counts as failed).
    pub timeout: Duration,
    /// The least time between the end of one checkpoint and the trigger of the next.
    pub min_pause: Duration,
    /// How many checkpoints may be in flight at once.
    pub max_concurrent: usize,
    /// How many checkpoints in a row may fail before the job fails.
    pub tolerable_failures: usize,
    /// How many completed checkpoints are kept.
    pub retained: usize,
    /// Whether keyed state writes a changelog, so that a checkpoint uploads only what changed
    /// since the last one and stores the state now and then.
    pub changelog: bool,
    /// Whether checkpoints reuse the files of earlier ones.
    pub incremental: bool,
    /// Exactly once (barriers aligned: an input that delivered a checkpoint's barrier waits
    /// for the others), or at least once (no waiting: records after a barrier may be in the
    /// checkpoint's state, and are processed again after a restore).
    pub exactly_once: bool,
}

impl CheckpointConfig {
    /// Checkpoints every `interval`; otherwise Flink's defaults (a 10-minute timeout, no pause,
    /// one at a time, no failure tolerated, one retained), incremental, no changelog.
    pub fn every(interval: Duration) -> Self {
        CheckpointConfig {
            interval,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            max_concurrent: 1,
            tolerable_failures: 0,
            retained: 1,
            changelog: false,
            incremental: true,
            exactly_once: true,
        }
    }

    /// Sets the timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the minimum pause between checkpoints.
    #[must_use]
    pub fn min_pause(mut self, pause: Duration) -> Self {
        self.min_pause = pause;
        self
    }

    /// Sets how many checkpoints may be in flight.
    #[must_use]
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n;
        self
    }

    /// Sets how many failed checkpoints in a row are tolerated.
    #[must_use]
    pub fn tolerable_failures(mut self, n: usize) -> Self {
        self.tolerable_failures = n;
        self
    }

    /// Sets how many completed checkpoints are kept.
    #[must_use]
    pub fn retained(mut self, n: usize) -> Self {
        self.retained = n;
        self
    }

    /// Turns the changelog on or off.
    #[must_use]
    pub fn changelog(mut self, on: bool) -> Self {
        self.changelog = on;
        self
    }

    /// Exactly once (aligned barriers, the default) or at least once.
    #[must_use]
    pub fn exactly_once(mut self, on: bool) -> Self {
        self.exactly_once = on;
        self
    }

    /// Turns incremental checkpoints on or off.
    #[must_use]
    pub fn incremental(mut self, on: bool) -> Self {
        self.incremental = on;
        self
    }

    pub(crate) fn check(&self) -> Result<()> {
        let bad = |name, why| Err(Misuse::InvalidOption { name, why }.into());
        if self.interval.is_zero() {
            return bad("checkpoint interval", "must be above zero");
        }
        if self.max_concurrent == 0 {
            return bad("max_concurrent", "must be at least 1");
        }
        if self.retained == 0 {
            return bad("retained", "must be at least 1");
        }
        Ok(())
    }
}

/// How a failed job restarts: Flink's three strategies.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategy {
    /// No restart: the first failure ends the job.
    None,
    /// Up to `attempts` restarts, `delay` apart.
    FixedDelay {
        /// How many restarts.
        attempts: usize,
        /// The wait before each.
        delay: Duration,
    },
    /// Restarts with a delay that grows by `multiplier` from `initial` up to `max`, and falls
    /// back to `initial` after the job ran `reset_after` without failing; at most `attempts`
    /// restarts in all.
    ExponentialDelay {
        /// The first delay.
        initial: Duration,
        /// The largest delay.
        max: Duration,
        /// The growth per restart.
        multiplier: f64,
        /// A run this long without failure resets the delay.
        reset_after: Duration,
        /// How many restarts in all.
        attempts: usize,
    },
    /// Restarts `delay` apart, unless more than `max_failures` happened within `interval`.
    FailureRate {
        /// The most failures tolerated in any `interval`.
        max_failures: usize,
        /// The window failures are counted in.
        interval: Duration,
        /// The wait before each restart.
        delay: Duration,
    },
}

/// Decides, failure by failure, whether and when a job restarts.
#[derive(Debug)]
pub(crate) struct Restarts {
    strategy: RestartStrategy,
    restarts: usize,
    failures: Vec<std::time::Instant>,
    delay: Duration,
}

impl Restarts {
    pub(crate) fn new(strategy: RestartStrategy) -> Self {
        let delay = match &strategy {
            RestartStrategy::ExponentialDelay { initial, .. } => *initial,
            _ => Duration::ZERO,
        };
        Restarts { strategy, restarts: 0, failures: Vec::new(), delay }
    }

    /// A failure after the job ran `ran` since its last start: the delay before the restart,
    /// or `None` when the strategy allows no more.
    pub(crate) fn on_failure(&mut self, ran: Duration) -> Option<Duration> {
        let now = std::time::Instant::now();
        let out = match &self.strategy {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => (self.restarts < *attempts).then_some(*delay),
            RestartStrategy::ExponentialDelay { initial, max, multiplier, reset_after, attempts } => {
                if ran >= *reset_after {
                    self.delay = *initial;
                }
                if self.restarts < *attempts {
                    let d = self.delay;
                    self.delay =
                        Duration::from_secs_f64((d.as_secs_f64() * multiplier.max(1.0)).min(max.as_secs_f64()));
                    Some(d.min(*max))
                } else {
                    None
                }
            }
            RestartStrategy::FailureRate { max_failures, interval, delay } => {
                self.failures.push(now);
                self.failures.retain(|t| now.duration_since(*t) <= *interval);
                (self.failures.len() <= *max_failures).then_some(*delay)
            }
        };
        if out.is_some() {
            self.restarts += 1;
        }
        out
    }

    pub(crate) fn restarts(&self) -> usize {
        self.restarts
    }
}

/// Where and how a job runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOptions {
    /// Where checkpoints go (a directory per operator subtask, and the job's checkpoint
    /// metadata). A job started here again resumes from the latest completed checkpoint.
    pub checkpoint_dir: PathBuf,
    /// Where the subtasks keep their working state; a temporary directory when `None`.
    pub work_dir: Option<PathBuf>,
    /// Checkpointing; none when `None`.
    pub checkpoints: Option<CheckpointConfig>,
    /// The restart strategy.
    pub restart: RestartStrategy,
    /// How many batches a channel between two subtasks holds before its sender waits.
    pub channel_capacity: usize,
    /// Print a line per completed checkpoint.
    pub log_checkpoints: bool,
    /// The keyed backends' memory budget, per subtask.
    pub memory_budget: usize,
    /// The savepoint a job starts from when its checkpoint directory has no checkpoint yet.
    pub from_savepoint: Option<PathBuf>,
    /// The file system of the checkpoints, the job's metadata and the subtasks' working
    /// state; the real one when `None`. (Sources and sinks use their own paths.)
    pub file_system: Option<std::sync::Arc<dyn crate::io::FileSystem>>,
}

impl RunOptions {
    /// A run with its checkpoints in `checkpoint_dir`, no checkpointing and no restarts.
    pub fn new(checkpoint_dir: impl Into<PathBuf>) -> Self {
        RunOptions {
            checkpoint_dir: checkpoint_dir.into(),
            work_dir: None,
            checkpoints: None,
            restart: RestartStrategy::None,
            channel_capacity: 16,
            log_checkpoints: false,
            memory_budget: 256 << 20,
            from_savepoint: None,
            file_system: None,
        }
    }

    /// Takes checkpoints as `config` says.
    #[must_use]
    pub fn checkpoints(mut self, config: CheckpointConfig) -> Self {
        self.checkpoints = Some(config);
        self
    }

    /// Restarts by `strategy`.
    #[must_use]
    pub fn restart(mut self, strategy: RestartStrategy) -> Self {
        self.restart = strategy;
        self
    }

    /// Keeps the subtasks' working state under `dir`.
    #[must_use]
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }

    /// Sets how many batches a channel holds.
    #[must_use]
    pub fn channel_capacity(mut self, batches: usize) -> Self {
        self.channel_capacity = batches.max(1);
        self
    }

    /// Prints a line per completed checkpoint.
    #[must_use]
    pub fn log_checkpoints(mut self, on: bool) -> Self {
        self.log_checkpoints = on;
        self
    }

    /// Starts from the savepoint in `dir` (one [`JobHandle::stop_with_savepoint`](super::JobHandle::stop_with_savepoint)
    /// took), at whatever parallelism the job has now, unless the checkpoint directory has a
    /// checkpoint of its own (a restart after a failure resumes from that).
    #[must_use]
    pub fn from_savepoint(mut self, dir: impl Into<PathBuf>) -> Self {
        self.from_savepoint = Some(dir.into());
        self
    }

    /// Keeps checkpoints, the job's metadata and the subtasks' working state on `fs` (a
    /// [`FaultFs`](crate::io::FaultFs) injects I/O errors there).
    #[must_use]
    pub fn file_system(mut self, fs: std::sync::Arc<dyn crate::io::FileSystem>) -> Self {
        self.file_system = Some(fs);
        self
    }

    /// Sets each keyed backend's memory budget.
    #[must_use]
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }
}
