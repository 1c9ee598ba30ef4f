//! What user code touches: keyed state under a current key and namespace, with TTL and timers;
//! operator list state and broadcast state.
//!
//! # Overview of types
//!
//! - [`KeyedBackend`] holds the keyed state of one parallel instance: one [`Store`](crate::store::Store)
//!   and the key groups the instance owns. [`KeyedBackend::set_current_key`] chooses the key that
//!   state calls act on.
//! - Descriptors ([`ValueStateDescriptor`], [`ListStateDescriptor`], [`MapStateDescriptor`],
//!   [`ReducingStateDescriptor`], [`AggregatingStateDescriptor`]) name a state and give its
//!   serializers, default value and [`TtlConfig`]; registering one returns a typed handle
//!   ([`ValueState`], [`ListState`], [`MapState`], [`ReducingState`], [`AggregatingState`]).
//! - Handles are small and hold no borrow: each call takes the backend (`state.get(&mut backend)`),
//!   so a handle lives in the operator beside the backend, and the hot path takes no lock.
//! - A handle's namespace (`()` unless it was registered with a namespace serializer) is set on
//!   the handle; windows use their window as namespace.
//! - [`TimerService`] registers event-time and processing-time timers for (key, namespace,
//!   timestamp); they are stored by key group beside the state.
//! - [`OperatorStateBackend`] holds operator list state (even-split or union redistribution) and
//!   broadcast state, whose read-only view ([`ReadOnlyBroadcastState`]) has no way to write.
//!
//! ```
//! use std::sync::Arc;
//! use eddy::codec::{Str, U64};
//! use eddy::io::FaultFs;
//! use eddy::state::{KeyedBackend, ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
//! use eddy::store::StoreOptions;
//!
//! # fn main() -> eddy::Result<()> {
//! // An in-memory file system keeps the example self-contained.
//! let store = StoreOptions::new().file_system(Arc::new(FaultFs::new()));
//! let mut backend = KeyedBackend::builder(Str).java_key_hash().store_options(store).open("/state")?;
//! let count = backend.state(ValueStateDescriptor::of::<u64>("count"))?;
//! let seen = backend.state(ListStateDescriptor::of::<String>("seen"))?;
//! let pages = backend.state(MapStateDescriptor::new("pages", Str, U64))?;
//! let timers = backend.timer_service("report")?;
//!
//! backend.set_current_key(&"alice".to_string())?;
//! let n = count.get(&mut backend)?.unwrap_or(0);
//! count.update(&mut backend, &(n + 1))?;
//! seen.add(&mut backend, &"/home".to_string())?;
//! pages.put(&mut backend, &"/home".to_string(), &1)?;
//! timers.register_event_time(&mut backend, &(), 60_000)?;
//!
//! let fired = timers.advance_watermark(&mut backend, 60_000, |b, timer| {
//!     assert_eq!(timer.key, "alice");
//!     assert_eq!(count.get(b)?, Some(1)); // the timer's key is the current key
//!     count.clear(b)
//! })?;
//! assert_eq!(fired, 1);
//! assert_eq!(seen.get_vec(&mut backend)?, vec!["/home".to_string()]);
//! assert_eq!(pages.iter(&mut backend)?.collect::<eddy::Result<Vec<_>>>()?, vec![("/home".to_string(), 1)]);
//! # Ok(())
//! # }
//! ```
//!
//! # How state is laid out in the store
//!
//! Every record key is `key group (u16 BE) | state id (u16 BE) | key | namespace`, followed by the
//! user key for map state; serializers are self-delimiting, so the parts need no framing. Values
//! are the serialized value, preceded by the last-access timestamp (i64 LE, milliseconds) when
//! the state has a TTL. List values are a sequence of elements, each `[timestamp] | varint length
//! | bytes`, so an element is appended with the store's merge without reading the list.

mod backend;
mod keyed;
mod operator;
mod timers;
mod ttl;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

pub use backend::{JavaHashCode, KeyedBackend, KeyedBackendBuilder, MAX_STATES};
pub use keyed::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, ListIter, ListState, ListStateDescriptor,
    MapCursor, MapIter, MapState, MapStateDescriptor, NamespacedState, ReducingState, ReducingStateDescriptor,
    StateDescriptor, StateHandle, ValueState, ValueStateDescriptor,
};
pub use operator::{
    BroadcastState, BroadcastStateDescriptor, BroadcastStateSnapshot, ListStateSnapshot, OperatorListState,
    OperatorStateBackend, OperatorStateSnapshot, ReadOnlyBroadcastState, Redistribution,
};
pub use timers::{Timer, TimerService};
pub(crate) use ttl::SnapshotTtl;
pub use ttl::{TtlConfig, TtlUpdate, TtlVisibility};

/// The time source of TTL and processing-time timers, in milliseconds.
pub trait Clock: Send + Sync + 'static {
    /// The current time in milliseconds.
    fn now_millis(&self) -> i64;
}

/// The system clock: milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to; clones share the time. For tests and simulations.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock showing `millis`.
    pub fn new(millis: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(millis)))
    }

    /// The time it shows.
    pub fn now(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the time.
    pub fn set(&self, millis: i64) {
        self.0.store(millis, Ordering::Relaxed);
    }

    /// Moves the time forward by `millis`.
    pub fn advance(&self, millis: i64) {
        self.0.fetch_add(millis, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The kinds of keyed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateKind {
    /// One value per key and namespace.
    Value,
    /// A list of values per key and namespace.
    List,
    /// A map of user keys to values per key and namespace.
    Map,
    /// One value per key and namespace, folded with a reduce function.
    Reducing,
    /// An accumulator per key and namespace, folded with an aggregate function.
    Aggregating,
    /// The timers of a timer service (one state per time domain).
    Timers,
}

impl std::fmt::Display for StateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            StateKind::Value => "value state",
            StateKind::List => "list state",
            StateKind::Map => "map state",
            StateKind::Reducing => "reducing state",
            StateKind::Aggregating => "aggregating state",
            StateKind::Timers => "timers",
        };
        f.write_str(s)
    }
}
