//! Event-time windows over a keyed stream, built on timers and namespaces: each window's
//! contents are an aggregating state in the window's namespace, each window's end an
//! event-time timer; session windows merge through namespace merging.

use std::time::Duration;

use crate::codec::{Serializer, I64};
use crate::error::Misuse;
use crate::state::{AggregateFunction, AggregatingState, AggregatingStateDescriptor, MapState, MapStateDescriptor};
use crate::Result;

use super::function::{Context, KeyedProcessFunction, OpenContext, TimeDomain};

/// A window of event time: `[start, end)`, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// Its first millisecond.
    pub start: i64,
    /// One past its last millisecond.
    pub end: i64,
}

impl Window {
    /// Its last millisecond, where its timer fires.
    pub fn max_timestamp(&self) -> i64 {
        self.end - 1
    }
}

/// Which windows a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowAssigner {
    /// Back-to-back windows of `size` ms, aligned to the epoch plus `offset`.
    Tumbling {
        /// Each window's length.
        size: i64,
        /// The alignment.
        offset: i64,
    },
    /// A window per burst of activity: a record opens `[ts, ts + gap)`, and windows that
    /// overlap merge.
    Session {
        /// The gap of inactivity that ends a session.
        gap: i64,
    },
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl WindowAssigner {
    /// Tumbling windows of `size`.
    pub fn tumbling(size: Duration) -> Self {
        WindowAssigner::Tumbling { size: millis(size).max(1), offset: 0 }
    }

    /// Session windows closed by `gap` of inactivity.
    pub fn session(gap: Duration) -> Self {
        WindowAssigner::Session { gap: millis(gap).max(1) }
    }

    fn assign(&self, ts: i64) -> Window {
        match *self {
            WindowAssigner::Tumbling { size, offset } => {
                let start = ts - (ts - offset).rem_euclid(size);
                Window { start, end: start.saturating_add(size) }
            }
            WindowAssigner::Session { gap } => Window { start: ts, end: ts.saturating_add(gap) },
        }
    }
}

/// What a window gives when it fires: the key, the window and the aggregate's result.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowResult<K, O> {
    /// The key.
    pub key: K,
    /// The window.
    pub window: Window,
    /// The aggregate of its records.
    pub value: O,
}

/// The window operator: a keyed process function that aggregates records into the windows
/// `assigner` gives, with accumulators written by `accumulators`, and emits each window's
/// result when the watermark passes its end. Records behind the watermark (whose window has
/// fired) are dropped, as Flink does without allowed lateness.
pub struct WindowOperator<A: AggregateFunction, AS: Serializer<Value = A::Acc>> {
    assigner: WindowAssigner,
    function: Option<A>,
    accumulators: Option<AS>,
    contents: Option<AggregatingState<AS, A, (I64, I64)>>,
    /// Session windows: each key's open windows, by start, with their ends.
    sessions: Option<MapState<I64, I64>>,
    /// Records dropped for being late.
    pub late: u64,
}

impl<A: AggregateFunction, AS: Serializer<Value = A::Acc>> WindowOperator<A, AS> {
    /// Windows by `assigner`, aggregated by `function` into accumulators `accumulators` writes.
    pub fn new(assigner: WindowAssigner, function: A, accumulators: AS) -> Self {
        WindowOperator {
            assigner,
            function: Some(function),
            accumulators: Some(accumulators),
            contents: None,
            sessions: None,
            late: 0,
        }
    }

    fn contents(&mut self) -> &mut AggregatingState<AS, A, (I64, I64)> {
        self.contents.as_mut().expect("opened")
    }
}

impl<K, A, AS> KeyedProcessFunction<K, A::In, WindowResult<K::Value, A::Out>> for WindowOperator<A, AS>
where
    K: Serializer,
    K::Value: Send,
    A: AggregateFunction + Clone + Send + 'static,
    A::Out: Send,
    AS: Serializer<Value = A::Acc> + Send + 'static,
{
    fn open(&mut self, ctx: &mut OpenContext<'_, K>) -> Result<()> {
        let (Some(function), Some(acc)) = (self.function.take(), self.accumulators.take()) else {
            return Err(Misuse::InvalidJob { why: "a window operator opened twice".into() }.into());
        };
        let b = ctx.backend();
        self.contents =
            Some(b.state_in(AggregatingStateDescriptor::new("window-contents", acc, function), (I64, I64))?);
        if matches!(self.assigner, WindowAssigner::Session { .. }) {
            self.sessions = Some(b.state(MapStateDescriptor::new("window-sessions", I64, I64))?);
        }
        Ok(())
    }

    fn process(&mut self, record: A::In, ctx: &mut Context<'_, K, WindowResult<K::Value, A::Out>>) -> Result<()> {
        let Some(ts) = ctx.timestamp() else {
            return Err(
                Misuse::InvalidJob { why: "an event-time window got a record without a timestamp".into() }.into()
            );
        };
        let mut window = self.assigner.assign(ts);
        if window.max_timestamp() <= ctx.watermark() {
            self.late += 1;
            return Ok(());
        }
        if let Some(sessions) = &self.sessions {
            // Merge with every open session the new one overlaps.
            let mut merged = Vec::new();
            {
                let mut it = sessions.iter(ctx.backend())?;
                while let Some((start, end)) = it.next_entry()? {
                    if start < window.end && window.start < end {
                        merged.push(Window { start, end });
                    }
                }
            }
            for w in &merged {
                window.start = window.start.min(w.start);
                window.end = window.end.max(w.end);
            }
            for w in &merged {
                sessions.remove(ctx.backend(), &w.start)?;
                ctx.delete_event_time_timer(w.max_timestamp())?;
            }
            sessions.put(ctx.backend(), &window.start, &window.end)?;
            let sources: Vec<(i64, i64)> = merged.iter().filter(|w| **w != window).map(|w| (w.start, w.end)).collect();
            if !sources.is_empty() {
                let contents = self.contents.as_ref().expect("opened");
                contents.merge_namespaces(ctx.backend(), &(window.start, window.end), &sources)?;
            }
        }
        let contents = self.contents();
        contents.set_namespace(&(window.start, window.end));
        let contents = self.contents.as_ref().expect("opened");
        contents.add(ctx.backend(), record)?;
        ctx.register_event_time_timer(window.max_timestamp())
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        domain: TimeDomain,
        ctx: &mut Context<'_, K, WindowResult<K::Value, A::Out>>,
    ) -> Result<()> {
        if domain != TimeDomain::EventTime {
            return Ok(());
        }
        let window = match (&self.sessions, self.assigner) {
            (Some(sessions), _) => {
                let mut found = None;
                {
                    let mut it = sessions.iter(ctx.backend())?;
                    while let Some((start, end)) = it.next_entry()? {
                        if end - 1 == timestamp {
                            found = Some(Window { start, end });
                        }
                    }
                }
                let Some(w) = found else { return Ok(()) };
                sessions.remove(ctx.backend(), &w.start)?;
                w
            }
            (None, WindowAssigner::Tumbling { size, .. }) => Window { start: timestamp + 1 - size, end: timestamp + 1 },
            (None, WindowAssigner::Session { .. }) => return Ok(()),
        };
        self.contents().set_namespace(&(window.start, window.end));
        let contents = self.contents.as_ref().expect("opened");
        let value = contents.get(ctx.backend())?;
        contents.clear(ctx.backend())?;
        if let Some(value) = value {
            let key = ctx.current_key()?;
            ctx.collect_at(WindowResult { key, window, value }, window.max_timestamp())?;
        }
        Ok(())
    }
}
