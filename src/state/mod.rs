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
mod clock;
mod core;
mod evolve;
mod keyed;
mod operator;
mod timers;
mod ttl;

pub use self::core::{KeyedBackend, MAX_STATES};
pub use crate::format::meta::{
    BroadcastStateSnapshot, ListStateSnapshot, OperatorStateSnapshot, Redistribution, StateKind, TtlConfig, TtlUpdate,
    TtlVisibility,
};
pub use backend::{JavaHashCode, KeyedBackendBuilder};
pub use clock::{Clock, ManualClock, SystemClock};
pub use keyed::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, ListIter, ListState, ListStateDescriptor,
    MapCursor, MapIter, MapState, MapStateDescriptor, NamespacedState, ReducingState, ReducingStateDescriptor,
    StateDescriptor, StateHandle, ValueState, ValueStateDescriptor,
};
pub use operator::{
    BroadcastState, BroadcastStateDescriptor, OperatorListState, OperatorStateBackend, ReadOnlyBroadcastState,
};
pub use timers::{Timer, TimerService};
