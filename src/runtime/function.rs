//! Keyed process functions: user code that runs per record of a keyed stream with the
//! record's key as the current key of the subtask's keyed backend, and per timer.

use crate::codec::{Serializer, Unit};
use crate::error::Misuse;
use crate::state::{
    BroadcastStateDescriptor, KeyedBackend, OperatorStateBackend, ReadOnlyBroadcastState, TimerService,
};
use crate::Result;

use super::emit::{Emit, NO_TIMESTAMP};

/// The time domain of a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDomain {
    /// Fired as the watermark passes its timestamp.
    EventTime,
    /// Fired as the wall clock passes its timestamp.
    ProcessingTime,
}

/// The broadcast state of `descriptor` in `ops`, read-only; an error outside a broadcast
/// connection (no `ops`).
fn read_only_broadcast_state<'a, KS, VS>(
    ops: Option<&'a mut OperatorStateBackend>,
    descriptor: &BroadcastStateDescriptor<KS, VS>,
) -> Result<ReadOnlyBroadcastState<'a, KS, VS>>
where
    KS: Serializer + Clone,
    VS: Serializer + Clone,
    KS::Value: Send,
    VS::Value: Send,
{
    match ops {
        Some(ops) => ops.read_only_broadcast_state(descriptor),
        None => Err(Misuse::InvalidJob { why: "broadcast state outside a broadcast connection".into() }.into()),
    }
}

/// What a keyed process function is given when its subtask starts: the backend, to register
/// its states (restored ones come back with their data).
pub struct OpenContext<'a, K: Serializer> {
    pub(crate) backend: &'a mut KeyedBackend<K>,
    pub(crate) ops: Option<&'a mut OperatorStateBackend>,
    pub(crate) subtask: usize,
    pub(crate) parallelism: usize,
}

impl<K: Serializer> OpenContext<'_, K> {
    /// The subtask's keyed backend.
    pub fn backend(&mut self) -> &mut KeyedBackend<K> {
        self.backend
    }

    /// The subtask's index.
    pub fn subtask(&self) -> usize {
        self.subtask
    }

    /// How many subtasks the operator has.
    pub fn parallelism(&self) -> usize {
        self.parallelism
    }

    /// The broadcast state of `descriptor`, read-only, as restored: for a function whose
    /// stream is connected to a broadcast stream.
    pub fn broadcast_state<KS, VS>(
        &mut self,
        descriptor: &BroadcastStateDescriptor<KS, VS>,
    ) -> Result<ReadOnlyBroadcastState<'_, KS, VS>>
    where
        KS: Serializer + Clone,
        VS: Serializer + Clone,
        KS::Value: Send,
        VS::Value: Send,
    {
        read_only_broadcast_state(self.ops.as_deref_mut(), descriptor)
    }
}

/// What a keyed process function is given with a record or a timer.
pub struct Context<'a, K: Serializer, O> {
    pub(crate) backend: &'a mut KeyedBackend<K>,
    pub(crate) timers: &'a TimerService<Unit>,
    pub(crate) out: &'a mut dyn Emit<O>,
    /// The operator state, on the keyed side of a broadcast connection.
    pub(crate) ops: Option<&'a mut OperatorStateBackend>,
    pub(crate) timestamp: i64,
    pub(crate) watermark: i64,
    pub(crate) processing_time: i64,
}

impl<K: Serializer, O> Context<'_, K, O> {
    /// The subtask's keyed backend, with the record's (or the timer's) key as its current key.
    #[inline]
    pub fn backend(&mut self) -> &mut KeyedBackend<K> {
        self.backend
    }

    /// The current key.
    pub fn current_key(&self) -> Result<K::Value> {
        self.backend.current_key()
    }

    /// The broadcast state of `descriptor`, read-only: on the keyed side of a stream
    /// connected to a broadcast stream (see [`KeyedBroadcastProcessFunction`](super::KeyedBroadcastProcessFunction)).
    pub fn broadcast_state<KS, VS>(
        &mut self,
        descriptor: &BroadcastStateDescriptor<KS, VS>,
    ) -> Result<ReadOnlyBroadcastState<'_, KS, VS>>
    where
        KS: Serializer + Clone,
        VS: Serializer + Clone,
        KS::Value: Send,
        VS::Value: Send,
    {
        read_only_broadcast_state(self.ops.as_deref_mut(), descriptor)
    }

    /// The record's timestamp (or the timer's), if it has one.
    pub fn timestamp(&self) -> Option<i64> {
        (self.timestamp != NO_TIMESTAMP).then_some(self.timestamp)
    }

    /// The current event-time watermark (`i64::MIN` before the first).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The processing time, in milliseconds since the Unix epoch.
    pub fn processing_time(&self) -> i64 {
        self.processing_time
    }

    /// Emits a record with the timestamp of the input (or the timer).
    #[inline]
    pub fn collect(&mut self, value: O) -> Result<()> {
        self.out.record(value, self.timestamp)
    }

    /// Emits a record with a timestamp of its own.
    pub fn collect_at(&mut self, value: O, timestamp: i64) -> Result<()> {
        self.out.record(value, timestamp)
    }

    /// Registers an event-time timer for the current key at `timestamp`; registering the same
    /// one again does nothing.
    pub fn register_event_time_timer(&mut self, timestamp: i64) -> Result<()> {
        self.timers.register_event_time(self.backend, &(), timestamp)
    }

    /// Registers a processing-time timer for the current key at `timestamp`.
    pub fn register_processing_time_timer(&mut self, timestamp: i64) -> Result<()> {
        self.timers.register_processing_time(self.backend, &(), timestamp)
    }

    /// Deletes an event-time timer of the current key.
    pub fn delete_event_time_timer(&mut self, timestamp: i64) -> Result<()> {
        self.timers.delete_event_time(self.backend, &(), timestamp)
    }

    /// Deletes a processing-time timer of the current key.
    pub fn delete_processing_time_timer(&mut self, timestamp: i64) -> Result<()> {
        self.timers.delete_processing_time(self.backend, &(), timestamp)
    }
}

/// A function over a keyed stream of `I`, emitting `O`: Flink's `KeyedProcessFunction`. One
/// instance runs per subtask, made by the job's factory each time the subtask starts (and
/// again after a restart), so it holds state handles but never state itself: state lives in
/// the backend, is checkpointed with it and comes back on restore.
pub trait KeyedProcessFunction<K: Serializer, I, O>: Send + 'static {
    /// Registers the states the function uses.
    fn open(&mut self, ctx: &mut OpenContext<'_, K>) -> Result<()>;

    /// Processes one record; its key is the backend's current key.
    fn process(&mut self, record: I, ctx: &mut Context<'_, K, O>) -> Result<()>;

    /// A timer of the current key fired.
    fn on_timer(&mut self, _timestamp: i64, _domain: TimeDomain, _ctx: &mut Context<'_, K, O>) -> Result<()> {
        Ok(())
    }
}
