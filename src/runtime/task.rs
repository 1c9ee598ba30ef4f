//! The subtasks: each runs on a thread of its own and handles, one at a time, its input
//! (records, watermarks, barriers), the coordinator's messages and its timers, so its state
//! needs no locks.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender};

use crate::checkpoint::Checkpointer;
use crate::codec::{Serializer, Unit};
use crate::state::{KeyedBackend, OperatorStateBackend, TimerService};
use crate::Result;

use super::emit::{cancelled, Barrier, Batch, Cancel, Emit, Msg};
use super::function::{Context, KeyedProcessFunction, OpenContext, TimeDomain};
use super::source::{Poll, Source, SourceReader};

/// What the coordinator tells a subtask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    /// Sources only: inject this barrier now.
    Trigger(Barrier),
    /// Checkpoint `id` completed everywhere.
    Complete(u64),
    /// Checkpoint `id` is given up.
    Abort(u64),
    /// The job's input is done and its final checkpoint complete (if it takes checkpoints):
    /// end the input and stop.
    Finish,
    /// The job stops after a savepoint: stop without ending the input.
    Stop,
}

/// One subtask's part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubtaskCheckpoint {
    /// The operator (the uid of its chain's head).
    pub operator: String,
    /// The subtask.
    pub subtask: usize,
    /// The synchronous part: the backend's snapshot taken and the barrier passed on.
    pub sync: Duration,
    /// The asynchronous part: files written and synced.
    pub asynchronous: Duration,
    /// From the first barrier to the last one of its inputs (0 for a source).
    pub alignment: Duration,
    /// Bytes the checkpoint stored anew for this subtask.
    pub bytes: u64,
    /// Files it names that earlier checkpoints stored (shared with them).
    pub shared_files: usize,
    /// Files it names in all.
    pub files: usize,
    /// The size of the whole state it names (see [`CheckpointInfo::state_bytes`](crate::checkpoint::CheckpointInfo::state_bytes)).
    pub state_size: u64,
}

/// What a subtask tells the coordinator.
#[derive(Debug)]
pub(crate) enum Report {
    /// Its part of checkpoint `id` is durable.
    Ack(u64, SubtaskCheckpoint),
    /// Its part of checkpoint `id` failed.
    Decline(u64, crate::Error),
    /// A source subtask read all its partitions.
    SourceDone,
}

/// A report with the subtask it came from: (stage, subtask).
pub(crate) type Reported = ((usize, usize), Report);

/// What every subtask has besides its input and output.
pub(crate) struct TaskCtx {
    pub(crate) uid: String,
    pub(crate) stage: usize,
    pub(crate) subtask: usize,
    pub(crate) parallelism: usize,
    pub(crate) control: Receiver<Control>,
    pub(crate) reports: Sender<Reported>,
    pub(crate) cancel: Cancel,
    pub(crate) checkpointing: bool,
    /// Whether barriers are aligned (exactly once) or not (at least once).
    pub(crate) aligned: bool,
}

impl TaskCtx {
    pub(crate) fn report(&self, r: Report) {
        let _ = self.reports.send(((self.stage, self.subtask), r));
    }
}

/// A subtask's state and what checkpoints it: its keyed backend (empty for an operator
/// without keyed state), its operator state and its checkpointer.
pub(crate) struct Snapshots<K: Serializer> {
    pub(crate) backend: KeyedBackend<K>,
    pub(crate) ops: OperatorStateBackend,
    pub(crate) checkpointer: Option<Checkpointer>,
    /// Per checkpoint in flight: its sync part and alignment.
    pub(crate) in_flight: HashMap<u64, (Duration, Duration)>,
    /// The file system savepoints are written to.
    pub(crate) fs: std::sync::Arc<dyn crate::io::FileSystem>,
}

impl<K: Serializer> Snapshots<K> {
    /// The synchronous part of the checkpoint or savepoint of `barrier`; a failure declines
    /// it. A savepoint goes to `<dir>/<uid>-<subtask>`.
    pub(crate) fn snapshot(&mut self, ctx: &TaskCtx, barrier: &Barrier, started: Instant, alignment: Duration) {
        let id = barrier.id;
        let Some(cp) = self.checkpointer.as_mut() else { return };
        let taken = match &barrier.savepoint {
            None => cp.checkpoint(id, &mut self.backend, &self.ops, false),
            Some(dir) => cp.savepoint(
                id,
                self.fs.clone(),
                dir.join(format!("{}-{}", ctx.uid, ctx.subtask)),
                &mut self.backend,
                &self.ops,
            ),
        };
        match taken {
            Ok(()) => {
                self.in_flight.insert(id, (started.elapsed(), alignment));
            }
            Err(e) => ctx.report(Report::Decline(id, e)),
        }
    }

    /// Reports the checkpoints whose asynchronous part finished.
    pub(crate) fn poll(&mut self, ctx: &TaskCtx) {
        let Some(cp) = self.checkpointer.as_mut() else { return };
        if self.in_flight.is_empty() {
            return;
        }
        for (id, outcome) in cp.poll() {
            let (sync, alignment) = self.in_flight.remove(&id).unwrap_or_default();
            match outcome {
                Ok(info) => ctx.report(Report::Ack(
                    id,
                    SubtaskCheckpoint {
                        operator: ctx.uid.clone(),
                        subtask: ctx.subtask,
                        sync,
                        asynchronous: info.async_duration,
                        alignment,
                        bytes: info.bytes_new,
                        shared_files: info.files - info.new_files,
                        files: info.files,
                        state_size: info.state_bytes,
                    },
                )),
                Err(e) => ctx.report(Report::Decline(id, e)),
            }
        }
    }

    pub(crate) fn complete(&mut self, id: u64) {
        if let Some(cp) = self.checkpointer.as_mut() {
            cp.notify_checkpoint_complete(id);
        }
    }

    pub(crate) fn abort(&mut self, id: u64) {
        if let Some(cp) = self.checkpointer.as_mut() {
            cp.abort(id);
        }
    }

    /// Waits for the checkpoints in flight and closes the backend.
    pub(crate) fn close(mut self, ctx: &TaskCtx) -> Result<()> {
        if let Some(cp) = self.checkpointer.take() {
            for (id, outcome) in cp.close() {
                if let Err(e) = outcome {
                    if self.in_flight.remove(&id).is_some() {
                        ctx.report(Report::Decline(id, e));
                    }
                }
            }
        }
        self.backend.close()
    }
}

/// The operator state a source keeps its partitions' offsets in: (partition, offset), as
/// union state, so that a restore at any parallelism finds every partition's offset.
pub(crate) fn offsets_state_name(uid: &str) -> String {
    format!("eddy.source.{uid}.offsets")
}

/// Event time at a source: how far behind the largest timestamp seen the watermark trails,
/// and after how long without records a partition stops holding the watermark back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatermarkStrategy {
    /// The watermark is the largest timestamp seen less this, less 1 ms.
    pub out_of_orderness: Duration,
    /// A partition with nothing to read for this long is idle.
    pub idle_timeout: Option<Duration>,
}

impl WatermarkStrategy {
    /// Watermarks trailing the largest timestamp by `out_of_orderness`.
    pub fn bounded_out_of_orderness(out_of_orderness: Duration) -> Self {
        WatermarkStrategy { out_of_orderness, idle_timeout: None }
    }

    /// Partitions idle after `timeout` without records.
    #[must_use]
    pub fn idle_after(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }
}

struct Partition<T> {
    index: usize,
    reader: Box<dyn SourceReader<T>>,
    ended: bool,
    /// The largest timestamp seen.
    max_ts: i64,
    /// When the partition last had a record.
    last_record: Instant,
}

/// How long a source reads before it sends what it has and looks at its mailbox again.
const FLUSH_AFTER: Duration = Duration::from_millis(5);

/// How many records a source reads before it looks at its mailbox again.
const SOURCE_BURST: usize = 2048;

/// Runs a source subtask: reads its partitions round-robin into `chain`, injects barriers when
/// the coordinator triggers a checkpoint, and emits watermarks.
pub(crate) fn run_source<S: Source>(
    ctx: &TaskCtx,
    source: &S,
    watermarks: Option<WatermarkStrategy>,
    mut chain: Box<dyn Emit<S::Out>>,
    mut snaps: Snapshots<Unit>,
) -> Result<()> {
    let state_name = offsets_state_name(&ctx.uid);
    let offset_serializer = crate::codec::SerdeSerializer::<(u32, Vec<u8>)>::new();
    let restored: HashMap<u32, Vec<u8>> =
        snaps.ops.union_list_state(&state_name, offset_serializer.clone())?.get().iter().cloned().collect();
    let mut parts = Vec::new();
    for p in (ctx.subtask..source.partitions()).step_by(ctx.parallelism.max(1)) {
        let offset = restored.get(&(p as u32)).map(Vec::as_slice);
        parts.push(Partition {
            index: p,
            reader: source.open(p, offset)?,
            ended: false,
            max_ts: i64::MIN,
            last_record: Instant::now(),
        });
    }
    let mut watermark = i64::MIN;
    let mut idle = false;
    let mut done = false;
    loop {
        // The mailbox first: barriers go in between records.
        loop {
            let msg = if done {
                match ctx.control.recv_timeout(Duration::from_millis(5)) {
                    Ok(m) => m,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => break,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Err(cancelled()),
                }
            } else {
                match ctx.control.try_recv() {
                    Ok(m) => m,
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => return Err(cancelled()),
                }
            };
            match msg {
                Control::Trigger(barrier) => {
                    let started = Instant::now();
                    let offsets: Vec<(u32, Vec<u8>)> =
                        parts.iter().map(|p| (p.index as u32, p.reader.offset())).collect();
                    snaps.ops.union_list_state(&state_name, offset_serializer.clone())?.update(offsets);
                    chain.barrier(&barrier, &mut snaps.ops)?;
                    chain.flush()?;
                    snaps.snapshot(ctx, &barrier, started, Duration::ZERO);
                    if barrier.savepoint.is_some() {
                        // The job stops after a savepoint: nothing more is read.
                        done = true;
                    }
                }
                Control::Complete(id) => {
                    snaps.complete(id);
                    chain.notify_complete(id)?;
                }
                Control::Abort(id) => snaps.abort(id),
                Control::Finish => {
                    chain.end()?;
                    return snaps.close(ctx);
                }
                Control::Stop => return snaps.close(ctx),
            }
        }
        if ctx.cancel.is_set() {
            return Err(cancelled());
        }
        snaps.poll(ctx);
        if done {
            continue;
        }
        let mut read = 0;
        let mut all_ended = true;
        let burst = Instant::now();
        for p in parts.iter_mut().filter(|p| !p.ended) {
            let mut n = 0;
            while n < SOURCE_BURST / 4 {
                match p.reader.poll()? {
                    Poll::Record(value, ts) => {
                        if ts > p.max_ts {
                            p.max_ts = ts;
                        }
                        chain.record(value, ts)?;
                        n += 1;
                        // A slow source's records go out within a few milliseconds (Flink's
                        // buffer timeout), not when a burst is full.
                        if n % 8 == 0 && burst.elapsed() > FLUSH_AFTER {
                            break;
                        }
                    }
                    Poll::Idle => break,
                    Poll::End => {
                        p.ended = true;
                        break;
                    }
                }
            }
            if n > 0 {
                p.last_record = Instant::now();
            }
            all_ended &= p.ended;
            read += n;
        }
        if let Some(w) = watermarks {
            let now = Instant::now();
            let active = |p: &&Partition<S::Out>| {
                !p.ended && w.idle_timeout.is_none_or(|t| now.duration_since(p.last_record) < t)
            };
            let bound = |p: &Partition<S::Out>| {
                p.max_ts
                    .saturating_sub(i64::try_from(w.out_of_orderness.as_millis()).unwrap_or(i64::MAX))
                    .saturating_sub(1)
            };
            match parts.iter().filter(active).map(bound).min() {
                Some(wm) if wm > watermark => {
                    watermark = wm;
                    idle = false;
                    chain.watermark(wm)?;
                }
                Some(_) => {}
                None if !all_ended && !idle && !parts.is_empty() => {
                    idle = true;
                    chain.idle()?;
                }
                None => {}
            }
        }
        chain.flush()?;
        if all_ended {
            // The end of input: every event-time timer downstream is due.
            chain.watermark(i64::MAX)?;
            chain.flush()?;
            done = true;
            if !ctx.checkpointing {
                chain.end()?;
                return snaps.close(ctx);
            }
            ctx.report(Report::SourceDone);
        } else if read == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// How far ahead of the record being processed a keyed subtask fetches the index slot of a
/// record's key, and the record the slot names.
const PREFETCH_SLOT: usize = 8;
const PREFETCH_RECORD: usize = 4;

/// A channel of a keyed subtask's input, as alignment and watermarks see it.
#[derive(Debug, Clone, Copy)]
struct ChannelState {
    blocked: bool,
    ended: bool,
    idle: bool,
    watermark: i64,
}

/// The receiving end of one input channel, with what it holds back during an alignment.
struct Input<T> {
    rx: Receiver<Batch<T>>,
    /// Messages received after a barrier, held back until the checkpoint is aligned.
    held: VecDeque<Msg<T>>,
}

/// The input of a keyed operator without a broadcast side.
#[derive(Debug)]
pub(crate) enum NoBroadcast {}

/// What a keyed subtask runs: its operator, seen from the loop that feeds it.
pub(crate) trait Head<K: Serializer, I, B>: Send {
    /// What the operator emits.
    type Out;
    /// Its timers and what follows it.
    fn timed(&mut self) -> &mut Timed<K, Self::Out>;
    fn open(&mut self, backend: &mut KeyedBackend<K>, ops: &mut OperatorStateBackend, ctx: &TaskCtx) -> Result<()>;
    fn record(
        &mut self,
        backend: &mut KeyedBackend<K>,
        ops: &mut OperatorStateBackend,
        record: I,
        ts: i64,
        pt: i64,
    ) -> Result<()>;
    fn broadcast(
        &mut self,
        backend: &mut KeyedBackend<K>,
        ops: &mut OperatorStateBackend,
        record: B,
        ts: i64,
        pt: i64,
    ) -> Result<()>;
    /// Fetches ahead what processing `record` will read (see [`KeyedBackend::prefetch_key`]).
    fn prefetch(&mut self, backend: &mut KeyedBackend<K>, record: &I, deep: bool);
    /// Fires the timers of `domain` up to `time` (the watermark, or the wall clock): for
    /// event time, once the watermark advanced past the operator's.
    fn fire(
        &mut self,
        backend: &mut KeyedBackend<K>,
        ops: &mut OperatorStateBackend,
        domain: TimeDomain,
        time: i64,
    ) -> Result<()>;

    fn advance_watermark(
        &mut self,
        backend: &mut KeyedBackend<K>,
        ops: &mut OperatorStateBackend,
        watermark: i64,
    ) -> Result<()> {
        if watermark <= self.timed().watermark {
            return Ok(());
        }
        self.timed().watermark = watermark;
        self.fire(backend, ops, TimeDomain::EventTime, watermark)?;
        self.timed().chain.watermark(watermark)
    }

    /// Fires the processing-time timers that are due: the next one's time.
    fn fire_processing_timers(
        &mut self,
        backend: &mut KeyedBackend<K>,
        ops: &mut OperatorStateBackend,
    ) -> Result<Option<i64>> {
        self.fire(backend, ops, TimeDomain::ProcessingTime, now_millis())?;
        self.next_processing_time(backend)
    }

    fn next_processing_time(&mut self, backend: &mut KeyedBackend<K>) -> Result<Option<i64>> {
        self.timed().timers.next_processing_time(backend)
    }

    fn barrier(&mut self, barrier: &Barrier, ops: &mut OperatorStateBackend) -> Result<()> {
        self.timed().chain.barrier(barrier, ops)
    }

    fn notify_complete(&mut self, id: u64) -> Result<()> {
        self.timed().chain.notify_complete(id)
    }

    fn flush(&mut self) -> Result<()> {
        self.timed().chain.flush()
    }

    fn end(&mut self) -> Result<()> {
        self.timed().chain.end()
    }
}

/// What every keyed operator has besides its function: its timers, the chain after it, and
/// its watermark.
pub(crate) struct Timed<K: Serializer, O> {
    pub(crate) timers: TimerService<Unit>,
    pub(crate) chain: Box<dyn Emit<O>>,
    pub(crate) watermark: i64,
    pub(crate) _key: std::marker::PhantomData<fn(K)>,
}

impl<K: Serializer, O> Timed<K, O> {
    pub(crate) fn new(timers: TimerService<Unit>, chain: Box<dyn Emit<O>>) -> Self {
        Timed { timers, chain, watermark: i64::MIN, _key: std::marker::PhantomData }
    }

    /// The context of a record or timer.
    #[inline]
    pub(crate) fn context<'a>(
        &'a mut self,
        backend: &'a mut KeyedBackend<K>,
        ops: Option<&'a mut OperatorStateBackend>,
        timestamp: i64,
        processing_time: i64,
    ) -> Context<'a, K, O> {
        Context {
            backend,
            timers: &self.timers,
            out: &mut *self.chain,
            ops,
            timestamp,
            watermark: self.watermark,
            processing_time,
        }
    }

    /// Fires the timers of `domain` up to `time` through `on_timer`, each with its key as the
    /// current key.
    pub(crate) fn fire(
        &mut self,
        backend: &mut KeyedBackend<K>,
        mut ops: Option<&mut OperatorStateBackend>,
        domain: TimeDomain,
        time: i64,
        mut on_timer: impl FnMut(i64, &mut Context<'_, K, O>) -> Result<()>,
    ) -> Result<()> {
        let (timers, chain, watermark) = (&self.timers, &mut self.chain, self.watermark);
        let processing_time = if domain == TimeDomain::ProcessingTime { time } else { now_millis() };
        let each = |b: &mut KeyedBackend<K>, t: crate::state::Timer<K::Value, ()>| {
            let mut c = Context {
                backend: b,
                timers,
                out: &mut **chain,
                ops: ops.as_deref_mut(),
                timestamp: t.timestamp,
                watermark,
                processing_time,
            };
            on_timer(t.timestamp, &mut c)
        };
        match domain {
            TimeDomain::EventTime => timers.advance_watermark(backend, time, each)?,
            TimeDomain::ProcessingTime => timers.advance_processing_time(backend, time, each)?,
        };
        Ok(())
    }
}

/// The keyed operator of a subtask: a process function with its timers.
pub(crate) struct KeyedOperator<K: Serializer, I, O, F, Sel> {
    pub(crate) function: F,
    pub(crate) selector: Sel,
    pub(crate) timed: Timed<K, O>,
    pub(crate) _types: std::marker::PhantomData<fn(I)>,
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl<K, I, O, F, Sel> Head<K, I, NoBroadcast> for KeyedOperator<K, I, O, F, Sel>
where
    K: Serializer,
    I: Send + 'static,
    O: Send + 'static,
    F: KeyedProcessFunction<K, I, O>,
    Sel: FnMut(&I) -> K::Value + Send,
{
    type Out = O;

    fn timed(&mut self) -> &mut Timed<K, O> {
        &mut self.timed
    }

    fn open(&mut self, backend: &mut KeyedBackend<K>, _ops: &mut OperatorStateBackend, ctx: &TaskCtx) -> Result<()> {
        self.function.open(&mut OpenContext { backend, ops: None, subtask: ctx.subtask, parallelism: ctx.parallelism })
    }

    #[inline]
    fn record(
        &mut self,
        backend: &mut KeyedBackend<K>,
        _ops: &mut OperatorStateBackend,
        record: I,
        ts: i64,
        processing_time: i64,
    ) -> Result<()> {
        let key = (self.selector)(&record);
        backend.set_current_key(&key)?;
        let mut c = self.timed.context(backend, None, ts, processing_time);
        self.function.process(record, &mut c)
    }

    fn broadcast(
        &mut self,
        _: &mut KeyedBackend<K>,
        _: &mut OperatorStateBackend,
        record: NoBroadcast,
        _: i64,
        _: i64,
    ) -> Result<()> {
        match record {}
    }

    #[inline]
    fn prefetch(&mut self, backend: &mut KeyedBackend<K>, record: &I, deep: bool) {
        let key = (self.selector)(record);
        backend.prefetch_key(&key, deep);
    }

    fn fire(
        &mut self,
        backend: &mut KeyedBackend<K>,
        _ops: &mut OperatorStateBackend,
        domain: TimeDomain,
        time: i64,
    ) -> Result<()> {
        let function = &mut self.function;
        self.timed.fire(backend, None, domain, time, |ts, c| function.on_timer(ts, domain, c))
    }
}

/// A keyed subtask: its operator, its state, and its inputs (the keyed input's channels,
/// then the broadcast input's).
struct KeyedTask<K: Serializer, I, B, H> {
    head: H,
    snaps: Snapshots<K>,
    main: Vec<Input<I>>,
    side: Vec<Input<B>>,
    /// Per channel, `main` first, then `side`.
    channels: Vec<ChannelState>,
    /// The checkpoint being aligned: its barrier, when its first barrier came.
    aligning: Option<(Barrier, Instant)>,
    /// Whether a channel that delivered the barrier waits for the others (exactly once); if
    /// not, `blocked` only marks that it delivered it (at least once).
    aligned: bool,
}

impl<K: Serializer, I: Send + 'static, B: Send + 'static, H: Head<K, I, B>> KeyedTask<K, I, B, H> {
    /// Handles the messages of channel `c`; what follows a barrier is held in `held`.
    fn messages<X>(
        &mut self,
        c: usize,
        msgs: Vec<Msg<X>>,
        held: fn(&mut Self) -> &mut Vec<Input<X>>,
        offset: usize,
        on_record: fn(&mut Self, X, i64, i64) -> Result<()>,
        on_prefetch: Option<fn(&mut Self, &X, bool)>,
    ) -> Result<()> {
        let processing_time = now_millis();
        let mut msgs = msgs.into_iter();
        if let Some(prefetch) = on_prefetch {
            for (i, m) in msgs.as_slice().iter().take(PREFETCH_SLOT).enumerate() {
                if let Msg::Record(v, _) = m {
                    prefetch(self, v, false);
                    if i < PREFETCH_RECORD {
                        prefetch(self, v, true);
                    }
                }
            }
        }
        while let Some(msg) = msgs.next() {
            if let Some(prefetch) = on_prefetch {
                // The slot of a record some way ahead, and the record of one nearer: both are
                // in the cache when their turn comes.
                let ahead = msgs.as_slice();
                if let Some(Msg::Record(v, _)) = ahead.get(PREFETCH_SLOT - 1) {
                    prefetch(self, v, false);
                }
                if let Some(Msg::Record(v, _)) = ahead.get(PREFETCH_RECORD - 1) {
                    prefetch(self, v, true);
                }
            }
            match msg {
                Msg::Record(value, ts) => on_record(self, value, ts, processing_time)?,
                Msg::Watermark(w) => {
                    let ch = &mut self.channels[c];
                    ch.watermark = ch.watermark.max(w);
                    ch.idle = false;
                    self.advance()?;
                }
                Msg::Idle => {
                    self.channels[c].idle = true;
                    self.advance()?;
                }
                Msg::End => {
                    self.channels[c].ended = true;
                    self.advance()?;
                }
                Msg::Barrier(barrier) => {
                    let id = barrier.id;
                    match self.aligning.as_ref().map(|(b, _)| b.id) {
                        Some(a) if id < a => continue,
                        Some(a) if id > a => {
                            // A newer checkpoint: the one aligned so far is given up.
                            self.channels.iter_mut().for_each(|ch| ch.blocked = false);
                            self.aligning = Some((barrier, Instant::now()));
                        }
                        Some(_) => {}
                        None => self.aligning = Some((barrier, Instant::now())),
                    }
                    self.channels[c].blocked = true;
                    if self.aligned {
                        // What follows the barrier waits for the alignment.
                        held(self)[c - offset].held.extend(msgs.by_ref());
                    }
                }
            }
        }
        Ok(())
    }

    fn main_prefetch(&mut self, value: &I, deep: bool) {
        self.head.prefetch(&mut self.snaps.backend, value, deep);
    }

    fn main_record(&mut self, value: I, ts: i64, pt: i64) -> Result<()> {
        self.head.record(&mut self.snaps.backend, &mut self.snaps.ops, value, ts, pt)
    }

    fn side_record(&mut self, value: B, ts: i64, pt: i64) -> Result<()> {
        self.head.broadcast(&mut self.snaps.backend, &mut self.snaps.ops, value, ts, pt)
    }

    /// Advances the operator's watermark to the minimum over the channels that still hold it
    /// back.
    fn advance(&mut self) -> Result<()> {
        let min = self.channels.iter().filter(|c| !c.idle && !c.ended).map(|c| c.watermark).min();
        let w = match min {
            Some(w) => w,
            // When every channel ended, the end of input advanced them all.
            None if self.channels.iter().all(|c| c.ended) => {
                self.channels.iter().map(|c| c.watermark).max().unwrap_or(i64::MIN)
            }
            None => return Ok(()),
        };
        self.head.advance_watermark(&mut self.snaps.backend, &mut self.snaps.ops, w)
    }

    /// Takes the checkpoint being aligned once every channel has its barrier (or ended).
    fn check_aligned(&mut self, ctx: &TaskCtx) -> Result<()> {
        let Some((barrier, started)) = &self.aligning else { return Ok(()) };
        if !self.channels.iter().all(|c| c.blocked || c.ended) {
            return Ok(());
        }
        let (barrier, alignment) = (barrier.clone(), started.elapsed());
        let sync_start = Instant::now();
        self.head.barrier(&barrier, &mut self.snaps.ops)?;
        self.head.flush()?;
        self.snaps.snapshot(ctx, &barrier, sync_start, alignment);
        self.channels.iter_mut().for_each(|c| c.blocked = false);
        self.aligning = None;
        Ok(())
    }

    fn abort(&mut self, id: u64) {
        self.snaps.abort(id);
        if self.aligning.as_ref().is_some_and(|(a, _)| a.id == id) {
            self.aligning = None;
            self.channels.iter_mut().for_each(|c| c.blocked = false);
        }
    }
}

/// Runs a keyed subtask: its inputs' batches through the operator, barriers aligned across
/// every input channel (exactly once), watermarks as the minimum over the channels that are
/// not idle.
pub(crate) fn run_keyed<K, I, B, H>(
    ctx: &TaskCtx,
    main: Vec<Receiver<Batch<I>>>,
    side: Vec<Receiver<Batch<B>>>,
    head: H,
    snaps: Snapshots<K>,
) -> Result<()>
where
    K: Serializer,
    I: Send + 'static,
    B: Send + 'static,
    H: Head<K, I, B>,
{
    let fresh = ChannelState { blocked: false, ended: false, idle: false, watermark: i64::MIN };
    let channels = vec![fresh; main.len() + side.len()];
    let mut t = KeyedTask {
        head,
        snaps,
        main: main.into_iter().map(|rx| Input { rx, held: VecDeque::new() }).collect(),
        side: side.into_iter().map(|rx| Input { rx, held: VecDeque::new() }).collect(),
        channels,
        aligning: None,
        aligned: ctx.aligned,
    };
    t.head.open(&mut t.snaps.backend, &mut t.snaps.ops, ctx)?;
    let n_main = t.main.len();
    let mut finished = false;
    let mut ended = false;
    let mut next_timer = t.head.next_processing_time(&mut t.snaps.backend)?;
    enum Got<I, B> {
        Nothing,
        Control(Option<Control>),
        Main(usize, Vec<Msg<I>>),
        Side(usize, Vec<Msg<B>>),
        Gone,
    }
    loop {
        if ended && (finished || !ctx.checkpointing) {
            return t.snaps.close(ctx);
        }
        if ctx.cancel.is_set() {
            return Err(cancelled());
        }
        // Held messages of channels no longer blocked go first.
        let held_main = (0..n_main).find(|&i| !t.channels[i].blocked && !t.main[i].held.is_empty());
        let held_side = (0..t.side.len()).find(|&i| !t.channels[n_main + i].blocked && !t.side[i].held.is_empty());
        let got = if let Some(i) = held_main {
            Got::Main(i, t.main[i].held.drain(..).collect())
        } else if let Some(i) = held_side {
            Got::Side(i, t.side[i].held.drain(..).collect())
        } else {
            let mut sel = Select::new();
            let mut which = Vec::with_capacity(t.channels.len());
            let waits = |c: &ChannelState| c.ended || (c.blocked && t.aligned);
            for (i, input) in t.main.iter().enumerate() {
                if !waits(&t.channels[i]) {
                    sel.recv(&input.rx);
                    which.push(i);
                }
            }
            for (i, input) in t.side.iter().enumerate() {
                if !waits(&t.channels[n_main + i]) {
                    sel.recv(&input.rx);
                    which.push(n_main + i);
                }
            }
            let control = sel.recv(&ctx.control);
            let timeout = match next_timer {
                Some(at) => Duration::from_millis(u64::try_from(at - now_millis()).unwrap_or(0).min(100)),
                None if !t.snaps.in_flight.is_empty() => Duration::from_millis(5),
                None => Duration::from_millis(100),
            };
            let got = match sel.select_timeout(timeout) {
                Err(_) => Got::Nothing,
                Ok(oper) if oper.index() == control => Got::Control(oper.recv(&ctx.control).ok()),
                Ok(oper) => match which[oper.index()] {
                    c if c < n_main => oper.recv(&t.main[c].rx).map_or(Got::Gone, |b| Got::Main(c, b)),
                    c => oper.recv(&t.side[c - n_main].rx).map_or(Got::Gone, |b| Got::Side(c - n_main, b)),
                },
            };
            drop(sel);
            got
        };
        match got {
            Got::Nothing => {}
            Got::Control(None) | Got::Gone => return Err(cancelled()),
            Got::Control(Some(msg)) => match msg {
                Control::Trigger(_) => {}
                Control::Complete(id) => {
                    t.snaps.complete(id);
                    t.head.notify_complete(id)?;
                }
                Control::Abort(id) => t.abort(id),
                Control::Finish => finished = true,
                Control::Stop => return t.snaps.close(ctx),
            },
            Got::Main(i, msgs) => {
                t.messages(i, msgs, |t| &mut t.main, 0, KeyedTask::main_record, Some(KeyedTask::main_prefetch))?
            }
            Got::Side(i, msgs) => {
                t.messages(n_main + i, msgs, |t| &mut t.side, n_main, KeyedTask::side_record, None)?
            }
        }
        t.check_aligned(ctx)?;
        if !ended
            && t.channels.iter().all(|c| c.ended)
            && t.main.iter().all(|i| i.held.is_empty())
            && t.side.iter().all(|i| i.held.is_empty())
        {
            t.head.flush()?;
            t.head.end()?;
            ended = true;
        }
        // A record may have registered an earlier timer.
        next_timer = t.head.next_processing_time(&mut t.snaps.backend)?;
        if next_timer.is_some_and(|at| at <= now_millis()) {
            next_timer = t.head.fire_processing_timers(&mut t.snaps.backend, &mut t.snaps.ops)?;
        }
        t.head.flush()?;
        t.snaps.poll(ctx);
    }
}
