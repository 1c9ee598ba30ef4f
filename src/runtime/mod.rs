//! The operator runtime: stateful streaming jobs on eddy's state, run in parallel on one
//! machine, with checkpoint barriers and exactly-once recovery.
//!
//! A job is a graph of operators built with a [`JobBuilder`]: sources ([`Source`]: partitioned
//! and replayable; [`GeneratorSource`], [`FileSource`], [`DirectorySource`]), stateless
//! operators (`map`, `filter`, `flat_map`) chained to the operator before them, `key_by` into a
//! [`KeyedProcessFunction`] (keyed state of every kind, timers, the current key, timestamp and
//! watermark), a keyed stream connected to a broadcast stream
//! ([`KeyedBroadcastProcessFunction`]), event-time tumbling and session windows
//! ([`KeyedStream::window`], [`WindowOperator`]), and sinks ([`Sink`]; [`ExactlyOnceFileSink`]
//! commits its files in two phases with the checkpoints). Each parallel subtask of a source or a keyed operator runs on a thread of
//! its own and handles its records, barriers, timers and the coordinator's messages one at a
//! time; channels between subtasks are bounded, so a slow operator backpressures its inputs.
//!
//! [`Job::run`] runs a job: a coordinator triggers checkpoints at an interval; sources inject
//! barriers; keyed operators align them across their inputs; each subtask takes its backend's
//! synchronous part and goes on while the asynchronous part runs; a checkpoint completes when
//! every subtask has acknowledged it and its metadata is durable, and then every subtask is
//! notified. A failure anywhere stops the job, which restarts from the latest completed
//! checkpoint by its [`RestartStrategy`], at the parallelism the job has now. [`Job::spawn`]
//! runs it on a thread of its own, and its [`JobHandle`] can stop it with a savepoint, from
//! which [`RunOptions::from_savepoint`] starts it again, at any parallelism.
//!
//! Not built yet: unaligned checkpoints (the channels carry typed records, with no serializer
//! to store those in flight with a checkpoint).
//!
//! ```
//! use eddy::codec::U64;
//! use eddy::runtime::{CollectSink, Context, GeneratorSource, JobBuilder, KeyedProcessFunction, OpenContext, RunOptions};
//! use eddy::state::{ValueState, ValueStateDescriptor};
//!
//! /// A running count per key.
//! struct Count(Option<ValueState<U64>>);
//!
//! impl KeyedProcessFunction<U64, u64, (u64, u64)> for Count {
//!     fn open(&mut self, ctx: &mut OpenContext<'_, U64>) -> eddy::Result<()> {
//!         self.0 = Some(ctx.backend().state(ValueStateDescriptor::new("count", U64))?);
//!         Ok(())
//!     }
//!     fn process(&mut self, key: u64, ctx: &mut Context<'_, U64, (u64, u64)>) -> eddy::Result<()> {
//!         let s = self.0.as_ref().expect("opened");
//!         let n = s.get(ctx.backend())?.unwrap_or(0) + 1;
//!         s.update(ctx.backend(), &n)?;
//!         ctx.collect((key, n))
//!     }
//! }
//!
//! # fn main() -> eddy::Result<()> {
//! let out = CollectSink::new();
//! let job = JobBuilder::new("counts").parallelism(2);
//! job.source("numbers", GeneratorSource::new(1000, 2, |i| i % 10))
//!     .key_by(|k: &u64| *k, U64)
//!     .process("count", || Count(None))
//!     .sink("out", out.clone());
//! let dir = std::env::temp_dir().join(format!("eddy-doc-runtime-{}", std::process::id()));
//! job.build()?.run(&RunOptions::new(&dir))?;
//! let mut finals: Vec<(u64, u64)> = out.values().into_iter().filter(|(_, n)| *n == 100).collect();
//! finals.sort();
//! assert_eq!(finals, (0..10).map(|k| (k, 100)).collect::<Vec<_>>());
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok(())
//! # }
//! ```

mod broadcast;
mod emit;
mod function;
mod graph;
mod job;
mod options;
mod sink;
mod source;
mod task;
mod window;

pub use broadcast::{BroadcastContext, KeyedBroadcastProcessFunction};
pub use emit::NO_TIMESTAMP;
pub use function::{Context, KeyedProcessFunction, OpenContext, TimeDomain};
pub use graph::{BroadcastConnectedStream, BroadcastStream, Job, JobBuilder, KeyedStream, Stream};
pub use job::{latest_job_checkpoint, CheckpointStats, JobCheckpoint, JobHandle, JobResult};
pub use options::{CheckpointConfig, RestartStrategy, RunOptions};
pub use sink::{CollectSink, DiscardingSink, ExactlyOnceFileSink, FnSink, Sink, SinkContext, SinkWriter};
pub use source::{DirectorySource, FileSource, GeneratorSource, Poll, Source, SourceReader};
pub use task::{SubtaskCheckpoint, WatermarkStrategy};
pub use window::{Window, WindowAssigner, WindowOperator, WindowResult};
