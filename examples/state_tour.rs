//! A first look at eddy: a keyed process function's state over a small stream of page views.
//! Per user it keeps a view count (value state), the recent pages (list state with a time to
//! live), the views per page (map state), the longest session (reducing state) and an average
//! dwell time (aggregating state), and it sets an event-time timer per user that reports when
//! the watermark passes. Keys are routed to key groups exactly as Flink routes `String` keys.
//! At the end it takes a checkpoint and restores a new backend from it.
//!
//! Run with `cargo run --release --example state_tour`.

use std::sync::Arc;
use std::time::Duration;

use eddy::checkpoint::{CheckpointOptions, Checkpointer, RestoreSource};
use eddy::codec::{Str, I64, U64};
use eddy::state::{
    AggregateFunction, AggregatingStateDescriptor, KeyedBackend, ListStateDescriptor, ManualClock, MapStateDescriptor,
    OperatorStateBackend, ReducingStateDescriptor, TtlConfig, ValueStateDescriptor,
};
use eddy::store::StoreOptions;

/// The mean of the added values; the accumulator (sum, count) differs from input and output.
struct Mean;

impl AggregateFunction for Mean {
    type In = i64;
    type Acc = (i64, u64);
    type Out = f64;
    fn create_accumulator(&self) -> (i64, u64) {
        (0, 0)
    }
    fn add(&self, v: i64, (sum, n): (i64, u64)) -> (i64, u64) {
        (sum + v, n + 1)
    }
    fn get_result(&self, &(sum, n): &(i64, u64)) -> f64 {
        sum as f64 / n.max(1) as f64
    }
    fn merge(&self, a: (i64, u64), b: (i64, u64)) -> (i64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

fn main() -> eddy::Result<()> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let clock = ManualClock::new(0);
    // The backend of subtask 0 of 1: it owns all 128 key groups.
    let mut backend = KeyedBackend::builder(Str)
        .java_key_hash()
        .max_parallelism(128)
        .clock(Arc::new(clock.clone()))
        .store_options(StoreOptions::new().memory_budget(64 << 20))
        .open(dir.path())?;

    let views = backend.state(ValueStateDescriptor::of::<u64>("views").default_value(0))?;
    let recent =
        backend.state(ListStateDescriptor::of::<String>("recent").ttl(TtlConfig::new(Duration::from_secs(60))))?;
    let per_page = backend.state(MapStateDescriptor::of::<String, u64>("per-page"))?;
    let longest = backend.state(ReducingStateDescriptor::new("longest", I64, |a: i64, b: i64| a.max(b)))?;
    let dwell = backend.state(AggregatingStateDescriptor::new("dwell", (I64, U64), Mean))?;
    let timers = backend.timer_service("report")?;

    // (event time in ms, user, page, dwell time in ms)
    let events = [
        (1_000, "alice", "/home", 300),
        (2_000, "bob", "/home", 120),
        (3_000, "alice", "/cart", 900),
        (4_000, "alice", "/home", 450),
        (65_000, "bob", "/checkout", 2_000),
    ];
    for (ts, user, page, ms) in events {
        clock.set(ts);
        backend.set_current_key(&user.to_string())?;
        let n = views.get(&mut backend)?.unwrap_or(0);
        views.update(&mut backend, &(n + 1))?;
        recent.add(&mut backend, &page.to_string())?;
        let page_views = per_page.get(&mut backend, &page.to_string())?.unwrap_or(0);
        per_page.put(&mut backend, &page.to_string(), &(page_views + 1))?;
        longest.add(&mut backend, ms)?;
        dwell.add(&mut backend, ms)?;
        // Report a minute after the user's first view (registering again changes nothing).
        if n == 0 {
            timers.register_event_time(&mut backend, &(), ts + 60_000)?;
        }
    }
    let kg = backend.current_key_group()?;
    println!("bob is in key group {kg}, as in Flink for the String key \"bob\"");

    // The watermark passes: every due timer fires with its key as the current key.
    clock.set(70_000);
    timers.advance_watermark(&mut backend, 70_000, |b, timer| {
        let user = timer.key;
        let count = views.get(b)?.unwrap_or(0);
        // Pages seen more than a minute ago have expired from `recent`.
        let recent_pages = recent.get_vec(b)?;
        let mut pages = Vec::new();
        let mut it = per_page.iter(b)?;
        while let Some((page, n)) = it.next_entry()? {
            pages.push(format!("{page} x{n}"));
        }
        drop(it);
        let (max, mean) = (longest.get(b)?.unwrap_or(0), dwell.get(b)?.unwrap_or(0.0));
        println!(
            "at {}: {user}: {count} views [{}], recent {recent_pages:?}, longest {max} ms, mean {mean:.0} ms",
            timer.timestamp,
            pages.join(", ")
        );
        Ok(())
    })?;

    let mut users = backend.keys(&views)?;
    users.sort();
    let stats = backend.store().stats();
    println!("users with state: {users:?}; {} bytes in the mutable region", stats.memtable_bytes);

    // A checkpoint: the call returns once the mutable region is frozen; the files are written
    // in the background while processing goes on.
    let mut checkpoints = Checkpointer::local(dir.path().join("checkpoints"), CheckpointOptions::new())?;
    let operator_state = OperatorStateBackend::new();
    checkpoints.checkpoint(1, &mut backend, &operator_state, false)?;
    backend.set_current_key(&"alice".to_string())?;
    views.update(&mut backend, &100)?; // after the checkpoint's barrier
    let info = checkpoints.wait(1)?;
    println!("checkpoint 1: {} segment files, {} new", info.files, info.new_files);
    backend.close()?;

    // After a failure: a new backend from the checkpoint, its segments linked, not copied.
    let source = RestoreSource::Checkpoint { storage: checkpoints.storage().clone(), id: 1 };
    let (mut restored, _) = KeyedBackend::builder(Str)
        .java_key_hash()
        .max_parallelism(128)
        .clock(Arc::new(clock.clone()))
        .restore(dir.path().join("restored"), &[source])?;
    let views = restored.state(ValueStateDescriptor::of::<u64>("views").default_value(0))?;
    restored.set_current_key(&"alice".to_string())?;
    println!("restored from checkpoint 1: alice has {} views", views.get(&mut restored)?.unwrap_or(0));
    restored.close()
}
