//! A keyed stream connected to a broadcast stream: every subtask of the keyed operator sees
//! every broadcast record, keeps what it learns in broadcast state (read-write on the
//! broadcast side, read-only on the keyed side), and can apply a function to every key's
//! state from the broadcast side. Flink's `KeyedBroadcastProcessFunction`.

use crate::codec::Serializer;
use crate::state::{BroadcastState, BroadcastStateDescriptor, KeyedBackend, OperatorStateBackend};
use crate::Result;

use super::emit::{Emit, NO_TIMESTAMP};
use super::function::{Context, OpenContext, TimeDomain};
use super::task::{Head, TaskCtx, Timed};

/// What a broadcast record is processed with: the broadcast state read-write, and every
/// key's state through the backend (there is no current key).
pub struct BroadcastContext<'a, K: Serializer, O> {
    backend: &'a mut KeyedBackend<K>,
    ops: &'a mut OperatorStateBackend,
    out: &'a mut dyn Emit<O>,
    timestamp: i64,
    watermark: i64,
}

impl<K: Serializer, O> BroadcastContext<'_, K, O> {
    /// The broadcast state of `descriptor`, read-write. Every subtask sees the same broadcast
    /// records in the same order, so it must change it the same way in each.
    pub fn broadcast_state<KS, VS>(
        &mut self,
        descriptor: &BroadcastStateDescriptor<KS, VS>,
    ) -> Result<&mut BroadcastState<KS, VS>>
    where
        KS: Serializer + Clone,
        VS: Serializer + Clone,
        KS::Value: Send,
        VS::Value: Send,
    {
        self.ops.broadcast_state(descriptor)
    }

    /// The subtask's keyed backend: [`KeyedBackend::apply_to_all_keys`] reaches every key's
    /// state of the key groups the subtask owns.
    pub fn backend(&mut self) -> &mut KeyedBackend<K> {
        self.backend
    }

    /// The record's timestamp, if it has one.
    pub fn timestamp(&self) -> Option<i64> {
        (self.timestamp != NO_TIMESTAMP).then_some(self.timestamp)
    }

    /// The current watermark.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Emits a record with the timestamp of the input.
    pub fn collect(&mut self, value: O) -> Result<()> {
        self.out.record(value, self.timestamp)
    }
}

/// A function over a keyed stream of `I` connected to a broadcast stream of `B`, emitting
/// `O`. One instance per subtask, made by the job's factory each time the subtask starts.
pub trait KeyedBroadcastProcessFunction<K: Serializer, I, B, O>: Send + 'static {
    /// Registers the keyed states the function uses.
    fn open(&mut self, ctx: &mut OpenContext<'_, K>) -> Result<()>;

    /// Processes a keyed record; its key is the current key, and
    /// [`Context::broadcast_state`] reads the broadcast state.
    fn process(&mut self, record: I, ctx: &mut Context<'_, K, O>) -> Result<()>;

    /// Processes a broadcast record.
    fn process_broadcast(&mut self, record: B, ctx: &mut BroadcastContext<'_, K, O>) -> Result<()>;

    /// A timer of the current key fired.
    fn on_timer(&mut self, _timestamp: i64, _domain: TimeDomain, _ctx: &mut Context<'_, K, O>) -> Result<()> {
        Ok(())
    }
}

/// The operator of a keyed subtask with a broadcast input.
pub(crate) struct BroadcastOperator<K: Serializer, I, B, O, F, Sel> {
    pub(crate) function: F,
    pub(crate) selector: Sel,
    pub(crate) timed: Timed<K, O>,
    pub(crate) _types: std::marker::PhantomData<fn(I, B)>,
}

impl<K, I, B, O, F, Sel> Head<K, I, B> for BroadcastOperator<K, I, B, O, F, Sel>
where
    K: Serializer,
    I: Send + 'static,
    B: Send + 'static,
    O: Send + 'static,
    F: KeyedBroadcastProcessFunction<K, I, B, O>,
    Sel: FnMut(&I) -> K::Value + Send,
{
    type Out = O;

    fn timed(&mut self) -> &mut Timed<K, O> {
        &mut self.timed
    }

    fn open(&mut self, backend: &mut KeyedBackend<K>, ops: &mut OperatorStateBackend, ctx: &TaskCtx) -> Result<()> {
        self.function.open(&mut OpenContext {
            backend,
            ops: Some(ops),
            subtask: ctx.subtask,
            parallelism: ctx.parallelism,
        })
    }

    fn record(
        &mut self,
        backend: &mut KeyedBackend<K>,
        ops: &mut OperatorStateBackend,
        record: I,
        ts: i64,
        processing_time: i64,
    ) -> Result<()> {
        let key = (self.selector)(&record);
        backend.set_current_key(&key)?;
        let mut c = self.timed.context(backend, Some(ops), ts, processing_time);
        self.function.process(record, &mut c)
    }

    fn broadcast(
        &mut self,
        backend: &mut KeyedBackend<K>,
        ops: &mut OperatorStateBackend,
        record: B,
        ts: i64,
        _pt: i64,
    ) -> Result<()> {
        let t = &mut self.timed;
        let mut c = BroadcastContext { backend, ops, out: &mut *t.chain, timestamp: ts, watermark: t.watermark };
        self.function.process_broadcast(record, &mut c)
    }

    #[inline]
    fn prefetch(&mut self, backend: &mut KeyedBackend<K>, record: &I, deep: bool) {
        let key = (self.selector)(record);
        backend.prefetch_key(&key, deep);
    }

    fn fire(
        &mut self,
        backend: &mut KeyedBackend<K>,
        ops: &mut OperatorStateBackend,
        domain: TimeDomain,
        time: i64,
    ) -> Result<()> {
        let function = &mut self.function;
        self.timed.fire(backend, Some(ops), domain, time, |ts, c| function.on_timer(ts, domain, c))
    }
}
