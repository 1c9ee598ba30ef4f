//! The job-graph builder: sources, stateless operators chained to what is before them,
//! `key_by` into keyed process functions, and sinks. Every operator that starts a chain of
//! its own (a source, a keyed operator) is a stage, run by `parallelism` subtasks; its uid
//! names its state in checkpoints, so it must stay the same across versions of a job.

use std::any::Any;
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::checkpoint::{CheckpointOptions, Checkpointer, RestoreSource};
use crate::codec::{Serializer, Unit};
use crate::error::Misuse;
use crate::format::meta::OperatorStateSnapshot;
use crate::keygroup::{KeyGroupRange, MaxParallelism};
use crate::state::{AggregateFunction, KeyedBackend, OperatorStateBackend};
use crate::store::StoreOptions;
use crate::{Error, Result};

use super::broadcast::{BroadcastOperator, KeyedBroadcastProcessFunction};
use super::emit::{Batch, BroadcastRouter, Cancel, EdgeChannels, Emit, FilterEmit, FlatMapEmit, KeyRouter, MapEmit};
use super::function::KeyedProcessFunction;
use super::sink::{Sink, SinkContext, SinkEmit};
use super::source::Source;
use super::task::{run_keyed, run_source, KeyedOperator, NoBroadcast, Snapshots, TaskCtx, Timed, WatermarkStrategy};
use super::window::{WindowAssigner, WindowOperator, WindowResult};

/// What a subtask is given to start: its channels, where its state lives and where it comes
/// back from.
pub(crate) struct Setup {
    /// Per input edge: this subtask's receivers.
    pub(crate) inputs: Vec<Box<dyn Any + Send>>,
    /// The output edge's senders of this subtask, if the chain ends in a router.
    pub(crate) output: Option<Box<dyn Any + Send>>,
    pub(crate) max_parallelism: MaxParallelism,
    pub(crate) key_groups: KeyGroupRange,
    /// The directory of the subtask's keyed backend.
    pub(crate) store_dir: PathBuf,
    pub(crate) store_options: StoreOptions,
    /// The checkpoints its keyed state comes back from (none on a fresh start).
    pub(crate) restore: Vec<RestoreSource>,
    /// Its operator state, redistributed from the restored checkpoint.
    pub(crate) operator_state: OperatorStateSnapshot,
    /// Where it checkpoints to, and the checkpoint restored (confirmed in the new
    /// checkpointer, so that retention keeps it until a newer one completes).
    pub(crate) checkpoints: Option<(PathBuf, CheckpointOptions, Option<u64>)>,
    pub(crate) job: String,
    pub(crate) attempt: String,
    /// The file system of the checkpoints and the working state.
    pub(crate) fs: Arc<dyn crate::io::FileSystem>,
}

/// A stage, with its types erased: how to run one of its subtasks.
pub(crate) trait StageSpec: Send + Sync {
    fn run(&self, ctx: &TaskCtx, setup: Setup) -> Result<()>;
}

/// What building a subtask's chain needs.
pub(crate) struct ChainCtx<'a> {
    pub(crate) output: Option<Box<dyn Any + Send>>,
    pub(crate) ops: &'a mut OperatorStateBackend,
    pub(crate) max_parallelism: MaxParallelism,
    pub(crate) cancel: Cancel,
    pub(crate) subtask: usize,
    pub(crate) parallelism: usize,
    pub(crate) attempt: String,
    pub(crate) checkpointing: bool,
}

/// Builds the part of a subtask's chain from an operator on.
type Tail<T> = Arc<dyn Fn(&mut ChainCtx<'_>) -> Result<Box<dyn Emit<T>>> + Send + Sync>;

/// Given the tail of a chain, the stage it ends.
type Finish<T> = Box<dyn FnOnce(Tail<T>) -> Arc<dyn StageSpec>>;

/// A stage as the builder knows it.
pub(crate) struct StageDef {
    pub(crate) uid: String,
    pub(crate) parallelism: Option<usize>,
    pub(crate) spec: Option<Arc<dyn StageSpec>>,
    /// The edges into it.
    pub(crate) inputs: Vec<usize>,
    /// The edge out of it, if its chain ends in a router.
    pub(crate) output: Option<usize>,
}

/// An edge between two stages: how to make its channels.
pub(crate) struct EdgeDef {
    pub(crate) from: usize,
    pub(crate) to: Option<usize>,
    #[allow(clippy::type_complexity)]
    pub(crate) make:
        Box<dyn Fn(usize, usize, usize) -> (Vec<Box<dyn Any + Send>>, Vec<Box<dyn Any + Send>>) + Send + Sync>,
}

pub(crate) struct Graph {
    pub(crate) name: String,
    pub(crate) max_parallelism: u32,
    pub(crate) parallelism: usize,
    pub(crate) stages: Vec<StageDef>,
    pub(crate) edges: Vec<EdgeDef>,
    /// Streams that went nowhere, and other mistakes found while building.
    pub(crate) problems: Vec<String>,
}

/// A job, checked and ready to run (`run`, `spawn`): what [`JobBuilder::build`] gives.
pub struct Job {
    pub(crate) g: Graph,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("name", &self.g.name).field("operators", &self.g.stages.len()).finish()
    }
}

/// Builds a job: see the [module documentation](super).
pub struct JobBuilder {
    g: Rc<RefCell<Graph>>,
}

impl std::fmt::Debug for JobBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobBuilder").field("name", &self.g.borrow().name).finish_non_exhaustive()
    }
}

/// A stream of records of type `T`: what an operator gives.
#[must_use = "a stream goes nowhere until it ends in a sink"]
pub struct Stream<T> {
    g: Rc<RefCell<Graph>>,
    stage: usize,
    finish: Option<Finish<T>>,
}

impl<T> Drop for Stream<T> {
    fn drop(&mut self) {
        if self.finish.is_some() {
            if let Ok(mut g) = self.g.try_borrow_mut() {
                let uid = g.stages[self.stage].uid.clone();
                g.problems.push(format!("a stream of operator {uid:?} ends in no sink"));
            }
        }
    }
}

/// A stream partitioned by key: what [`Stream::key_by`] gives, for a keyed operator.
#[must_use = "a keyed stream goes nowhere until a keyed operator processes it"]
pub struct KeyedStream<T, K: Serializer, Sel> {
    stream: Stream<T>,
    selector: Sel,
    key_serializer: K,
    /// Java's `hashCode` of the key, when asked for ([`KeyedStream::java_key_hash`]).
    java_hash: Option<fn(&K::Value) -> i32>,
}

fn valid_uid(uid: &str) -> bool {
    // It names directories beside the job's own (`_job`, `_work`): it starts with a letter or
    // a digit.
    uid.len() <= 64
        && uid.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// Adds a stage to the graph: its index.
fn add_stage(g: &Rc<RefCell<Graph>>, uid: &str, inputs: Vec<usize>) -> usize {
    let mut g = g.borrow_mut();
    if !valid_uid(uid) {
        g.problems.push(format!(
            "operator uid {uid:?} must be 1 to 64 ASCII letters, digits, '_' or '.', starting with a letter or a digit"
        ));
    }
    if g.stages.iter().any(|s| s.uid == uid) {
        g.problems.push(format!("two operators have the uid {uid:?}"));
    }
    g.stages.push(StageDef { uid: uid.to_owned(), parallelism: None, spec: None, inputs, output: None });
    g.stages.len() - 1
}

/// Adds an edge from `from` whose channels carry `T`: its index.
fn add_edge<T: Send + 'static>(g: &Rc<RefCell<Graph>>, from: usize) -> usize {
    let mut gm = g.borrow_mut();
    gm.edges.push(EdgeDef {
        from,
        to: None,
        make: Box::new(|up, down, capacity| {
            let ch = EdgeChannels::<T>::new(up, down, capacity);
            let s = ch.senders.into_iter().map(|s| Box::new(s) as Box<dyn Any + Send>).collect();
            let r = ch.receivers.into_iter().map(|r| Box::new(r) as Box<dyn Any + Send>).collect();
            (s, r)
        }),
    });
    let edge = gm.edges.len() - 1;
    gm.stages[from].output = Some(edge);
    edge
}

/// Takes the senders of a subtask's output edge out of its chain context.
fn take_outputs<T: Send + 'static>(cx: &mut ChainCtx<'_>) -> Result<Vec<Sender<Batch<T>>>> {
    cx.output
        .take()
        .and_then(|o| o.downcast::<Vec<Sender<Batch<T>>>>().ok())
        .map(|o| *o)
        .ok_or_else(|| Error::from(Misuse::InvalidJob { why: "a router without its channels".into() }))
}

/// Takes the receivers of a subtask's input edge `i` out of its setup.
fn take_inputs<T: Send + 'static>(setup: &mut Setup, i: usize) -> Result<Vec<Receiver<Batch<T>>>> {
    let missing = || Error::from(Misuse::InvalidJob { why: "a keyed operator without its input".into() });
    let slot = setup.inputs.get_mut(i).ok_or_else(missing)?;
    let taken = std::mem::replace(slot, Box::new(()));
    taken.downcast::<Vec<Receiver<Batch<T>>>>().map(|r| *r).map_err(|_| missing())
}

/// Ends `stream`'s chain in a router by key group: the edge it feeds.
fn route_by_key<T, K, Sel>(
    mut stream: Stream<T>,
    selector: Sel,
    key_serializer: K,
    java_hash: Option<fn(&K::Value) -> i32>,
) -> usize
where
    T: Send + 'static,
    K: Serializer + Clone + Send + Sync,
    Sel: Fn(&T) -> K::Value + Clone + Send + Sync + 'static,
{
    let g = stream.g.clone();
    let from = stream.stage;
    // The edge, its channels typed here, where the record type is known.
    let edge = add_edge::<T>(&g, from);
    let finish = stream.finish.take().expect("a stream is consumed once");
    let router: Tail<T> = Arc::new(move |cx: &mut ChainCtx<'_>| {
        let outputs = take_outputs::<T>(cx)?;
        Ok(Box::new(KeyRouter::new(
            selector.clone(),
            key_serializer.clone(),
            java_hash,
            cx.max_parallelism,
            outputs,
            cx.cancel.clone(),
        )?) as Box<dyn Emit<T>>)
    });
    let upstream = finish(router);
    g.borrow_mut().stages[from].spec = Some(upstream);
    edge
}

/// Ends `stream`'s chain in a router to every subtask: the edge it feeds.
fn route_to_all<B: Clone + Send + 'static>(mut stream: Stream<B>) -> usize {
    let g = stream.g.clone();
    let from = stream.stage;
    let edge = add_edge::<B>(&g, from);
    let finish = stream.finish.take().expect("a stream is consumed once");
    let router: Tail<B> = Arc::new(move |cx: &mut ChainCtx<'_>| {
        let outputs = take_outputs::<B>(cx)?;
        Ok(Box::new(BroadcastRouter::new(outputs, cx.cancel.clone())) as Box<dyn Emit<B>>)
    });
    let upstream = finish(router);
    g.borrow_mut().stages[from].spec = Some(upstream);
    edge
}

impl JobBuilder {
    /// A job named `name`, with a max parallelism of 128 and a default parallelism of 1.
    pub fn new(name: impl Into<String>) -> Self {
        JobBuilder {
            g: Rc::new(RefCell::new(Graph {
                name: name.into(),
                max_parallelism: 128,
                parallelism: 1,
                stages: Vec::new(),
                edges: Vec::new(),
                problems: Vec::new(),
            })),
        }
    }

    /// The job's max parallelism: its number of key groups, fixed for its state's life.
    #[must_use]
    pub fn max_parallelism(self, n: u32) -> Self {
        self.g.borrow_mut().max_parallelism = n;
        self
    }

    /// The parallelism of operators that are not given one.
    #[must_use]
    pub fn parallelism(self, n: usize) -> Self {
        self.g.borrow_mut().parallelism = n;
        self
    }

    fn add_stage(&self, uid: &str, inputs: Vec<usize>) -> usize {
        add_stage(&self.g, uid, inputs)
    }

    /// A source: the records of `source`'s partitions, without event time.
    pub fn source<S: Source>(&self, uid: &str, source: S) -> Stream<S::Out> {
        self.source_inner(uid, source, None)
    }

    /// A source with event time: watermarks by `strategy` per partition, the minimum of
    /// the partitions a subtask reads that are not idle.
    pub fn source_with_watermarks<S: Source>(
        &self,
        uid: &str,
        source: S,
        strategy: WatermarkStrategy,
    ) -> Stream<S::Out> {
        self.source_inner(uid, source, Some(strategy))
    }

    fn source_inner<S: Source>(&self, uid: &str, source: S, wm: Option<WatermarkStrategy>) -> Stream<S::Out> {
        let stage = self.add_stage(uid, Vec::new());
        let source = Arc::new(source);
        let finish: Finish<S::Out> =
            Box::new(move |tail| Arc::new(SourceStage { source, watermarks: wm, tail }) as Arc<dyn StageSpec>);
        Stream { g: self.g.clone(), stage, finish: Some(finish) }
    }

    /// The job, checked: a graph that cannot run is refused with [`Misuse::InvalidJob`].
    pub fn build(self) -> Result<Job> {
        let g = Rc::try_unwrap(self.g)
            .map_err(|_| Misuse::InvalidJob { why: "a stream of the job is still being built".into() })?
            .into_inner();
        let invalid = |why: String| -> Error { Misuse::InvalidJob { why }.into() };
        if let Some(p) = g.problems.first() {
            return Err(invalid(p.clone()));
        }
        if g.stages.is_empty() {
            return Err(invalid("the job has no source".into()));
        }
        let max = MaxParallelism::new(g.max_parallelism).map_err(Error::from)?;
        for s in &g.stages {
            let p = s.parallelism.unwrap_or(g.parallelism);
            if p == 0 || p as u64 > u64::from(max.get()) {
                return Err(invalid(format!(
                    "operator {:?} has parallelism {p}; it must be 1 to the max parallelism {}",
                    s.uid,
                    max.get()
                )));
            }
            if s.spec.is_none() {
                return Err(invalid(format!("operator {:?} ends in no sink", s.uid)));
            }
        }
        for e in &g.edges {
            if e.to.is_none() {
                return Err(invalid(format!(
                    "the key_by after operator {:?} has no keyed operator after it",
                    g.stages[e.from].uid
                )));
            }
        }
        Ok(Job { g })
    }
}

impl<T: Send + 'static> Stream<T> {
    fn then<U: Send + 'static>(
        mut self,
        wrap: impl Fn(Box<dyn Emit<U>>) -> Box<dyn Emit<T>> + Send + Sync + 'static,
    ) -> Stream<U> {
        let finish = self.finish.take().expect("a stream is consumed once");
        let wrap = Arc::new(wrap);
        let next: Finish<U> = Box::new(move |tail: Tail<U>| {
            let wrap = wrap.clone();
            finish(Arc::new(move |cx: &mut ChainCtx<'_>| Ok(wrap(tail(cx)?))))
        });
        Stream { g: self.g.clone(), stage: self.stage, finish: Some(next) }
    }

    /// Sets the parallelism of the operator this stream comes from (and of every operator
    /// chained to it).
    pub fn parallelism(self, n: usize) -> Self {
        self.g.borrow_mut().stages[self.stage].parallelism = Some(n);
        self
    }

    /// One record out for every record in.
    pub fn map<U: Send + 'static, F: Fn(T) -> U + Clone + Send + Sync + 'static>(self, f: F) -> Stream<U> {
        self.then(move |next| Box::new(MapEmit { f: f.clone(), next }))
    }

    /// The records for which `f` is true.
    pub fn filter<F: Fn(&T) -> bool + Clone + Send + Sync + 'static>(self, f: F) -> Stream<T> {
        self.then(move |next| Box::new(FilterEmit { f: f.clone(), next }))
    }

    /// Any number of records out for every record in.
    pub fn flat_map<U, I, F>(self, f: F) -> Stream<U>
    where
        U: Send + 'static,
        I: IntoIterator<Item = U> + 'static,
        F: Fn(T) -> I + Clone + Send + Sync + 'static,
    {
        self.then(move |next| Box::new(FlatMapEmit { f: f.clone(), next }))
    }

    /// Partitions the stream by the key `selector` gives, written by `key_serializer`: each
    /// record goes to the subtask of the next operator that owns its key group.
    pub fn key_by<K, Sel>(self, selector: Sel, key_serializer: K) -> KeyedStream<T, K, Sel>
    where
        K: Serializer + Clone + Send + Sync,
        Sel: Fn(&T) -> K::Value + Clone + Send + Sync + 'static,
    {
        KeyedStream { stream: self, selector, key_serializer, java_hash: None }
    }

    /// Ends the stream in `sink` (chained to the operator before it), under the uid `uid`.
    pub fn sink<S: Sink<T>>(mut self, uid: &str, sink: S) {
        let finish = self.finish.take().expect("a stream is consumed once");
        let sink = Arc::new(sink);
        let uid = uid.to_owned();
        {
            let mut g = self.g.borrow_mut();
            if !valid_uid(&uid) {
                g.problems.push(format!("sink uid {uid:?} must be 1 to 64 ASCII letters, digits, '_' or '.', starting with a letter or a digit"));
            }
        }
        let tail: Tail<T> = Arc::new(move |cx: &mut ChainCtx<'_>| {
            let sctx = SinkContext {
                uid: uid.clone(),
                subtask: cx.subtask,
                parallelism: cx.parallelism,
                attempt: cx.attempt.clone(),
                checkpointing: cx.checkpointing,
            };
            Ok(Box::new(SinkEmit { writer: sink.open(&sctx, cx.ops)? }) as Box<dyn Emit<T>>)
        });
        let spec = finish(tail);
        self.g.borrow_mut().stages[self.stage].spec = Some(spec);
    }
}

impl<T, K, Sel> KeyedStream<T, K, Sel>
where
    T: Send + 'static,
    K: Serializer + Clone + Send + Sync,
    Sel: Fn(&T) -> K::Value + Clone + Send + Sync + 'static,
{
    /// Runs a keyed process function over the stream, one instance per subtask made by
    /// `factory`, under the uid `uid` (which names its state in checkpoints).
    pub fn process<O, F, Fac>(self, uid: &str, factory: Fac) -> Stream<O>
    where
        O: Send + 'static,
        F: KeyedProcessFunction<K, T, O>,
        Fac: Fn() -> F + Send + Sync + 'static,
    {
        let KeyedStream { stream, selector, key_serializer, java_hash } = self;
        let g = stream.g.clone();
        let edge = route_by_key(stream, selector.clone(), key_serializer.clone(), java_hash);
        let stage = add_stage(&g, uid, vec![edge]);
        g.borrow_mut().edges[edge].to = Some(stage);
        let factory = Arc::new(factory);
        let uid = uid.to_owned();
        let finish: Finish<O> = Box::new(move |tail: Tail<O>| {
            Arc::new(KeyedStage::<T, K, Sel, O, F, Fac> {
                uid,
                factory,
                selector,
                key_serializer,
                java_hash,
                tail,
                _types: std::marker::PhantomData,
            }) as Arc<dyn StageSpec>
        });
        Stream { g, stage, finish: Some(finish) }
    }
}

impl<T, K, Sel> KeyedStream<T, K, Sel>
where
    T: Send + 'static,
    K: Serializer + Clone + Send + Sync,
    K::Value: Send,
    Sel: Fn(&T) -> K::Value + Clone + Send + Sync + 'static,
{
    /// Event-time windows by `assigner` over the stream, each window's records aggregated by
    /// `function` into accumulators `accumulators` writes; a result per key and window when
    /// the watermark passes the window's end (see [`WindowOperator`]).
    pub fn window<A, AS>(
        self,
        uid: &str,
        assigner: WindowAssigner,
        function: A,
        accumulators: AS,
    ) -> Stream<WindowResult<K::Value, A::Out>>
    where
        A: AggregateFunction<In = T> + Clone + Send + Sync + 'static,
        A::Out: Send,
        AS: Serializer<Value = A::Acc> + Clone + Send + Sync + 'static,
    {
        self.process(uid, move || WindowOperator::new(assigner, function.clone(), accumulators.clone()))
    }
}

/// A stream whose every record goes to every subtask of the operator it is connected to:
/// what [`Stream::broadcast`] gives, for [`KeyedStream::connect`].
#[must_use = "a broadcast stream goes nowhere until it is connected to a keyed stream"]
pub struct BroadcastStream<B> {
    stream: Stream<B>,
}

/// A keyed stream connected to a broadcast stream: what [`KeyedStream::connect`] gives.
#[must_use = "a connected stream goes nowhere until a function processes it"]
pub struct BroadcastConnectedStream<T, K: Serializer, Sel, B> {
    keyed: KeyedStream<T, K, Sel>,
    broadcast: BroadcastStream<B>,
}

impl<B: Clone + Send + 'static> Stream<B> {
    /// Sends every record of this stream to every subtask of the keyed operator it is
    /// connected to.
    pub fn broadcast(self) -> BroadcastStream<B> {
        BroadcastStream { stream: self }
    }
}

impl<T, K, Sel> KeyedStream<T, K, Sel>
where
    T: Send + 'static,
    K: Serializer + Clone + Send + Sync,
    Sel: Fn(&T) -> K::Value + Clone + Send + Sync + 'static,
{
    /// Routes keys by Java's `hashCode` (of `i32`, `i64` and `String` keys), so that each key
    /// lands in the key group, and the subtask, Flink would give it; snapshots record it.
    pub fn java_key_hash(mut self) -> Self
    where
        K::Value: crate::state::JavaHashCode,
    {
        self.java_hash = Some(crate::state::JavaHashCode::java_hash_code);
        self
    }

    /// Connects a broadcast stream: a [`KeyedBroadcastProcessFunction`] then sees both.
    pub fn connect<B: Clone + Send + 'static>(
        self,
        broadcast: BroadcastStream<B>,
    ) -> BroadcastConnectedStream<T, K, Sel, B> {
        BroadcastConnectedStream { keyed: self, broadcast }
    }
}

impl<T, K, Sel, B> BroadcastConnectedStream<T, K, Sel, B>
where
    T: Send + 'static,
    K: Serializer + Clone + Send + Sync,
    Sel: Fn(&T) -> K::Value + Clone + Send + Sync + 'static,
    B: Clone + Send + 'static,
{
    /// Runs a keyed broadcast process function over both streams, one instance per subtask
    /// made by `factory`, under the uid `uid`.
    pub fn process<O, F, Fac>(self, uid: &str, factory: Fac) -> Stream<O>
    where
        O: Send + 'static,
        F: KeyedBroadcastProcessFunction<K, T, B, O>,
        Fac: Fn() -> F + Send + Sync + 'static,
    {
        let BroadcastConnectedStream { keyed: KeyedStream { stream, selector, key_serializer, java_hash }, broadcast } =
            self;
        let g = stream.g.clone();
        let main = route_by_key(stream, selector.clone(), key_serializer.clone(), java_hash);
        let side = route_to_all(broadcast.stream);
        let stage = add_stage(&g, uid, vec![main, side]);
        g.borrow_mut().edges[main].to = Some(stage);
        g.borrow_mut().edges[side].to = Some(stage);
        let factory = Arc::new(factory);
        let uid = uid.to_owned();
        let finish: Finish<O> = Box::new(move |tail: Tail<O>| {
            Arc::new(BroadcastStage::<T, K, Sel, B, O, F, Fac> {
                uid,
                factory,
                selector,
                key_serializer,
                java_hash,
                tail,
                _types: std::marker::PhantomData,
            }) as Arc<dyn StageSpec>
        });
        Stream { g, stage, finish: Some(finish) }
    }
}

struct BroadcastStage<T, K: Serializer, Sel, B, O, F, Fac> {
    uid: String,
    factory: Arc<Fac>,
    selector: Sel,
    key_serializer: K,
    java_hash: Option<fn(&K::Value) -> i32>,
    tail: Tail<O>,
    _types: std::marker::PhantomData<fn(T, B) -> F>,
}

impl<T, K, Sel, B, O, F, Fac> StageSpec for BroadcastStage<T, K, Sel, B, O, F, Fac>
where
    T: Send + 'static,
    K: Serializer + Clone + Send + Sync,
    Sel: Fn(&T) -> K::Value + Clone + Send + Sync + 'static,
    B: Clone + Send + 'static,
    O: Send + 'static,
    F: KeyedBroadcastProcessFunction<K, T, B, O>,
    Fac: Fn() -> F + Send + Sync + 'static,
{
    fn run(&self, ctx: &TaskCtx, mut setup: Setup) -> Result<()> {
        let main = take_inputs::<T>(&mut setup, 0)?;
        let side = take_inputs::<B>(&mut setup, 1)?;
        let (snaps, timed) =
            open_keyed(&self.uid, self.key_serializer.clone(), self.java_hash, &self.tail, ctx, &mut setup)?;
        let op = BroadcastOperator {
            function: (self.factory)(),
            selector: self.selector.clone(),
            timed,
            _types: std::marker::PhantomData,
        };
        run_keyed(ctx, main, side, op, snaps)
    }
}

/// A keyed subtask's state (its backend restored, its operator state, its checkpointer) and
/// its timers with the chain after it.
fn open_keyed<K: Serializer, O>(
    uid: &str,
    key_serializer: K,
    java_hash: Option<fn(&K::Value) -> i32>,
    tail: &Tail<O>,
    ctx: &TaskCtx,
    setup: &mut Setup,
) -> Result<(Snapshots<K>, Timed<K, O>)> {
    let mut backend = open_backend(key_serializer, java_hash, setup)?;
    let mut ops = OperatorStateBackend::restore(std::mem::take(&mut setup.operator_state));
    let timers = backend.timer_service(&format!("{uid}.timers"))?;
    let mut cx = ChainCtx {
        output: setup.output.take(),
        ops: &mut ops,
        max_parallelism: setup.max_parallelism,
        cancel: ctx.cancel.clone(),
        subtask: ctx.subtask,
        parallelism: ctx.parallelism,
        attempt: setup.attempt.clone(),
        checkpointing: ctx.checkpointing,
    };
    let chain = tail(&mut cx)?;
    let checkpointer = checkpointer(setup)?;
    let snaps = Snapshots { backend, ops, checkpointer, in_flight: Default::default(), fs: setup.fs.clone() };
    Ok((snaps, Timed::new(timers, chain)))
}

/// Opens a subtask's keyed backend: restored from `setup.restore`, or new.
fn open_backend<K: Serializer>(
    key_serializer: K,
    java_hash: Option<fn(&K::Value) -> i32>,
    setup: &Setup,
) -> Result<KeyedBackend<K>> {
    let mut b = KeyedBackend::builder(key_serializer)
        .job(setup.job.clone())
        .max_parallelism(setup.max_parallelism.get())
        .key_groups(setup.key_groups)
        .store_options(setup.store_options.clone());
    if let Some(f) = java_hash {
        b = b.java_key_hash_fn(f);
    }
    if setup.restore.is_empty() {
        b.open(&setup.store_dir)
    } else {
        Ok(b.restore(&setup.store_dir, &setup.restore)?.0)
    }
}

/// The checkpointer of a subtask, created once its state is restored.
fn checkpointer(setup: &Setup) -> Result<Option<Checkpointer>> {
    let Some((dir, opts, restored)) = &setup.checkpoints else { return Ok(None) };
    let storage = crate::checkpoint::LocalDirStorage::new(setup.fs.clone(), dir.clone())?;
    let mut cp = Checkpointer::new(Arc::new(storage), opts.clone())?;
    if let Some(id) = restored {
        cp.notify_checkpoint_complete(*id);
    }
    Ok(Some(cp))
}

struct SourceStage<S: Source> {
    source: Arc<S>,
    watermarks: Option<WatermarkStrategy>,
    tail: Tail<S::Out>,
}

impl<S: Source> StageSpec for SourceStage<S> {
    fn run(&self, ctx: &TaskCtx, mut setup: Setup) -> Result<()> {
        let backend = open_backend(Unit, None, &setup)?;
        let mut ops = OperatorStateBackend::restore(std::mem::take(&mut setup.operator_state));
        let mut cx = ChainCtx {
            output: setup.output.take(),
            ops: &mut ops,
            max_parallelism: setup.max_parallelism,
            cancel: ctx.cancel.clone(),
            subtask: ctx.subtask,
            parallelism: ctx.parallelism,
            attempt: setup.attempt.clone(),
            checkpointing: ctx.checkpointing,
        };
        let chain = (self.tail)(&mut cx)?;
        let checkpointer = checkpointer(&setup)?;
        let snaps = Snapshots { backend, ops, checkpointer, in_flight: Default::default(), fs: setup.fs.clone() };
        run_source(ctx, &*self.source, self.watermarks, chain, snaps)
    }
}

struct KeyedStage<T, K: Serializer, Sel, O, F, Fac> {
    uid: String,
    factory: Arc<Fac>,
    selector: Sel,
    key_serializer: K,
    java_hash: Option<fn(&K::Value) -> i32>,
    tail: Tail<O>,
    _types: std::marker::PhantomData<fn(T) -> F>,
}

impl<T, K, Sel, O, F, Fac> StageSpec for KeyedStage<T, K, Sel, O, F, Fac>
where
    T: Send + 'static,
    K: Serializer + Clone + Send + Sync,
    Sel: Fn(&T) -> K::Value + Clone + Send + Sync + 'static,
    O: Send + 'static,
    F: KeyedProcessFunction<K, T, O>,
    Fac: Fn() -> F + Send + Sync + 'static,
{
    fn run(&self, ctx: &TaskCtx, mut setup: Setup) -> Result<()> {
        let inputs = take_inputs::<T>(&mut setup, 0)?;
        let (snaps, timed) =
            open_keyed(&self.uid, self.key_serializer.clone(), self.java_hash, &self.tail, ctx, &mut setup)?;
        let op = KeyedOperator {
            function: (self.factory)(),
            selector: self.selector.clone(),
            timed,
            _types: std::marker::PhantomData,
        };
        run_keyed::<K, T, NoBroadcast, _>(ctx, inputs, Vec::new(), op, snaps)
    }
}
