//! What flows between operators: records with their timestamps, watermarks, checkpoint
//! barriers and the end of input; the [`Emit`] chain that carries them through the operators
//! of one subtask, and the channels and routers that carry them between subtasks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};

use crate::codec::Serializer;
use crate::keygroup::{hash_bytes, MaxParallelism};
use crate::state::OperatorStateBackend;
use crate::{Error, Result};

/// The timestamp of a record that has none.
pub const NO_TIMESTAMP: i64 = i64::MIN;

/// One element of a channel between subtasks.
#[derive(Debug)]
pub(crate) enum Msg<T> {
    /// A record and its timestamp ([`NO_TIMESTAMP`] when it has none).
    Record(T, i64),
    /// The sender's watermark: no record with a smaller timestamp follows from it.
    Watermark(i64),
    /// The sender is idle: it holds no watermark back until its next record or watermark.
    Idle,
    /// A checkpoint's (or savepoint's) barrier: everything before it belongs to it.
    Barrier(Barrier),
    /// The sender ends: nothing follows.
    End,
}

/// A checkpoint barrier: the checkpoint's id and, for a savepoint, where it goes and whether
/// the job stops after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Barrier {
    pub(crate) id: u64,
    pub(crate) savepoint: Option<Arc<std::path::PathBuf>>,
}

/// Records and events are sent in batches: one channel operation per batch, not per record.
pub(crate) type Batch<T> = Vec<Msg<T>>;

/// How many messages a batch holds before it is sent.
pub(crate) const BATCH: usize = 512;

/// The channels of one edge between an upstream and a downstream operator: every upstream
/// subtask has a bounded channel to every downstream one, so a slow receiver backpressures
/// exactly the senders that feed it.
pub(crate) struct EdgeChannels<T> {
    /// Per upstream subtask, its senders, one per downstream subtask.
    pub(crate) senders: Vec<Vec<Sender<Batch<T>>>>,
    /// Per downstream subtask, its receivers, one per upstream subtask.
    pub(crate) receivers: Vec<Vec<Receiver<Batch<T>>>>,
}

impl<T> EdgeChannels<T> {
    /// The channels between `up` and `down` subtasks, each holding at most `capacity` batches.
    pub(crate) fn new(up: usize, down: usize, capacity: usize) -> Self {
        let mut senders: Vec<Vec<Sender<Batch<T>>>> = (0..up).map(|_| Vec::with_capacity(down)).collect();
        let mut receivers: Vec<Vec<Receiver<Batch<T>>>> = (0..down).map(|_| Vec::with_capacity(up)).collect();
        for s in senders.iter_mut() {
            for r in receivers.iter_mut() {
                let (tx, rx) = crossbeam_channel::bounded(capacity);
                s.push(tx);
                r.push(rx);
            }
        }
        EdgeChannels { senders, receivers }
    }
}

/// Set when the job is being cancelled: a subtask blocked on a full channel gives up.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancel(pub(crate) Arc<AtomicBool>);

impl Cancel {
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The error a subtask stops with when the job is cancelled under it.
pub(crate) fn cancelled() -> Error {
    Error::TaskFailed { operator: String::new(), subtask: 0, why: "cancelled".into() }
}

/// Whether `e` is the error of a cancelled subtask rather than a failure of its own.
pub(crate) fn is_cancelled(e: &Error) -> bool {
    matches!(e, Error::TaskFailed { operator, why, .. } if operator.is_empty() && why == "cancelled")
}

/// Sends `batch` on `tx`, waiting while the channel is full (backpressure) but giving up when
/// the job is cancelled or the receiver is gone.
pub(crate) fn send<T>(tx: &Sender<Batch<T>>, mut batch: Batch<T>, cancel: &Cancel) -> Result<()> {
    loop {
        match tx.send_timeout(batch, Duration::from_millis(50)) {
            Ok(()) => return Ok(()),
            Err(SendTimeoutError::Timeout(b)) => {
                if cancel.is_set() {
                    return Err(cancelled());
                }
                batch = b;
            }
            Err(SendTimeoutError::Disconnected(_)) => return Err(cancelled()),
        }
    }
}

/// The operators of a subtask after its head, as one chain: each takes what the one before
/// gives and hands its output to the next; the last is a sink or a router to the next
/// operator's subtasks.
pub(crate) trait Emit<T>: Send {
    /// A record with its timestamp.
    fn record(&mut self, value: T, timestamp: i64) -> Result<()>;
    /// The watermark advanced to `watermark`.
    fn watermark(&mut self, watermark: i64) -> Result<()>;
    /// The input went idle.
    fn idle(&mut self) -> Result<()>;
    /// A checkpoint's barrier: whatever the chain holds for it goes into `ops`.
    fn barrier(&mut self, barrier: &Barrier, ops: &mut OperatorStateBackend) -> Result<()>;
    /// Checkpoint `id` completed everywhere.
    fn notify_complete(&mut self, id: u64) -> Result<()>;
    /// Send what is buffered.
    fn flush(&mut self) -> Result<()>;
    /// The input ended.
    fn end(&mut self) -> Result<()>;
}

/// `map`: one record out for every record in.
pub(crate) struct MapEmit<F, U> {
    pub(crate) f: F,
    pub(crate) next: Box<dyn Emit<U>>,
}

/// `filter`: the records the predicate keeps.
pub(crate) struct FilterEmit<F, T> {
    pub(crate) f: F,
    pub(crate) next: Box<dyn Emit<T>>,
}

/// `flat_map`: any number of records out for every record in.
pub(crate) struct FlatMapEmit<F, U> {
    pub(crate) f: F,
    pub(crate) next: Box<dyn Emit<U>>,
}

macro_rules! forward_events {
    () => {
        fn watermark(&mut self, watermark: i64) -> Result<()> {
            self.next.watermark(watermark)
        }
        fn idle(&mut self) -> Result<()> {
            self.next.idle()
        }
        fn barrier(&mut self, barrier: &Barrier, ops: &mut OperatorStateBackend) -> Result<()> {
            self.next.barrier(barrier, ops)
        }
        fn notify_complete(&mut self, id: u64) -> Result<()> {
            self.next.notify_complete(id)
        }
        fn flush(&mut self) -> Result<()> {
            self.next.flush()
        }
        fn end(&mut self) -> Result<()> {
            self.next.end()
        }
    };
}

impl<T, U: 'static, F: FnMut(T) -> U + Send> Emit<T> for MapEmit<F, U> {
    #[inline]
    fn record(&mut self, value: T, timestamp: i64) -> Result<()> {
        self.next.record((self.f)(value), timestamp)
    }
    forward_events!();
}

impl<T: 'static, F: FnMut(&T) -> bool + Send> Emit<T> for FilterEmit<F, T> {
    #[inline]
    fn record(&mut self, value: T, timestamp: i64) -> Result<()> {
        if (self.f)(&value) {
            self.next.record(value, timestamp)
        } else {
            Ok(())
        }
    }
    forward_events!();
}

impl<T, U: 'static, I: IntoIterator<Item = U>, F: FnMut(T) -> I + Send> Emit<T> for FlatMapEmit<F, U> {
    #[inline]
    fn record(&mut self, value: T, timestamp: i64) -> Result<()> {
        for u in (self.f)(value) {
            self.next.record(u, timestamp)?;
        }
        Ok(())
    }
    forward_events!();
}

/// The end of a chain before a `key_by`: sends every record to the subtask that owns its key
/// group (Flink's assignment), and every event to all of them.
pub(crate) struct KeyRouter<T, K: Serializer, F> {
    pub(crate) selector: F,
    pub(crate) key_serializer: K,
    pub(crate) max_parallelism: MaxParallelism,
    pub(crate) outputs: Vec<Sender<Batch<T>>>,
    pub(crate) buffers: Vec<Batch<T>>,
    /// Per key group, the downstream subtask that owns it.
    pub(crate) owner: Vec<u32>,
    /// The key's hash, if not eddy's default (murmur of the serialized key).
    pub(crate) hash: Option<fn(&K::Value) -> i32>,
    pub(crate) scratch: Vec<u8>,
    pub(crate) cancel: Cancel,
}

impl<T: Send, K: Serializer, F: FnMut(&T) -> K::Value + Send> KeyRouter<T, K, F> {
    pub(crate) fn new(
        selector: F,
        key_serializer: K,
        hash: Option<fn(&K::Value) -> i32>,
        max_parallelism: MaxParallelism,
        outputs: Vec<Sender<Batch<T>>>,
        cancel: Cancel,
    ) -> Result<Self> {
        let parallelism = u32::try_from(outputs.len()).unwrap_or(u32::MAX);
        let owner = (0..max_parallelism.get())
            .map(|kg| max_parallelism.subtask_for(parallelism, kg as u16).map_err(Error::from))
            .collect::<Result<Vec<u32>>>()?;
        let buffers = outputs.iter().map(|_| Vec::with_capacity(BATCH)).collect();
        Ok(KeyRouter {
            selector,
            key_serializer,
            max_parallelism,
            outputs,
            buffers,
            owner,
            hash,
            scratch: Vec::new(),
            cancel,
        })
    }

    fn send_one(&mut self, i: usize) -> Result<()> {
        if self.buffers[i].is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.buffers[i], Vec::with_capacity(BATCH));
        send(&self.outputs[i], batch, &self.cancel)
    }

    fn broadcast(&mut self, make: impl Fn() -> Msg<T>) -> Result<()> {
        for i in 0..self.outputs.len() {
            self.buffers[i].push(make());
            self.send_one(i)?;
        }
        Ok(())
    }
}

impl<T: Send, K: Serializer, F: FnMut(&T) -> K::Value + Send> Emit<T> for KeyRouter<T, K, F> {
    #[inline]
    fn record(&mut self, value: T, timestamp: i64) -> Result<()> {
        let key = (self.selector)(&value);
        let hash = match self.hash {
            Some(f) => f(&key),
            None => {
                self.scratch.clear();
                self.key_serializer.write(&key, &mut self.scratch);
                hash_bytes(&self.scratch)
            }
        };
        let kg = self.max_parallelism.key_group(hash);
        let i = self.owner[usize::from(kg)] as usize;
        self.buffers[i].push(Msg::Record(value, timestamp));
        if self.buffers[i].len() >= BATCH {
            self.send_one(i)?;
        }
        Ok(())
    }

    fn watermark(&mut self, watermark: i64) -> Result<()> {
        self.broadcast(|| Msg::Watermark(watermark))
    }

    fn idle(&mut self) -> Result<()> {
        self.broadcast(|| Msg::Idle)
    }

    fn barrier(&mut self, barrier: &Barrier, _ops: &mut OperatorStateBackend) -> Result<()> {
        self.broadcast(|| Msg::Barrier(barrier.clone()))
    }

    fn notify_complete(&mut self, _id: u64) -> Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        for i in 0..self.outputs.len() {
            self.send_one(i)?;
        }
        Ok(())
    }

    fn end(&mut self) -> Result<()> {
        self.broadcast(|| Msg::End)
    }
}

/// The end of a chain into a broadcast connection: every record to every subtask of the next
/// operator.
pub(crate) struct BroadcastRouter<T> {
    pub(crate) outputs: Vec<Sender<Batch<T>>>,
    pub(crate) buffers: Vec<Batch<T>>,
    pub(crate) cancel: Cancel,
}

impl<T: Clone + Send> BroadcastRouter<T> {
    pub(crate) fn new(outputs: Vec<Sender<Batch<T>>>, cancel: Cancel) -> Self {
        let buffers = outputs.iter().map(|_| Vec::with_capacity(BATCH)).collect();
        BroadcastRouter { outputs, buffers, cancel }
    }

    fn send_all(&mut self) -> Result<()> {
        for (buffer, tx) in self.buffers.iter_mut().zip(&self.outputs) {
            if !buffer.is_empty() {
                send(tx, std::mem::replace(buffer, Vec::with_capacity(BATCH)), &self.cancel)?;
            }
        }
        Ok(())
    }

    fn event(&mut self, make: impl Fn() -> Msg<T>) -> Result<()> {
        self.buffers.iter_mut().for_each(|b| b.push(make()));
        self.send_all()
    }
}

impl<T: Clone + Send> Emit<T> for BroadcastRouter<T> {
    fn record(&mut self, value: T, timestamp: i64) -> Result<()> {
        if let Some((last, rest)) = self.buffers.split_last_mut() {
            for b in rest {
                b.push(Msg::Record(value.clone(), timestamp));
            }
            last.push(Msg::Record(value, timestamp));
            if last.len() >= BATCH {
                self.send_all()?;
            }
        }
        Ok(())
    }

    fn watermark(&mut self, watermark: i64) -> Result<()> {
        self.event(|| Msg::Watermark(watermark))
    }

    fn idle(&mut self) -> Result<()> {
        self.event(|| Msg::Idle)
    }

    fn barrier(&mut self, barrier: &Barrier, _ops: &mut OperatorStateBackend) -> Result<()> {
        self.event(|| Msg::Barrier(barrier.clone()))
    }

    fn notify_complete(&mut self, _id: u64) -> Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.send_all()
    }

    fn end(&mut self) -> Result<()> {
        self.event(|| Msg::End)
    }
}
