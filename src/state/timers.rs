//! Timers: event-time and processing-time timers for (key, namespace, timestamp), stored in the
//! store by key group beside the keyed state, so they are snapshotted, restored and rescaled
//! with it.
//!
//! A timer is the record `key group | state | timestamp (u64 BE, sign bit flipped) | key |
//! namespace` with an empty value: the store keeps each key group's timers in timestamp order,
//! and registering the same timer twice writes the same record (deduplication for free). The
//! service remembers each key group's earliest timer, so advancing time visits only the key
//! groups that have something to fire.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use super::core::{codec_error, state_prefix, Core, Head, KeyedBackend, PREFIX_LEN};
use super::evolve::{key_part, Writer};
use crate::codec::{Serializer, Unit};
use crate::error::Result;
use crate::format::meta::StateKind;
use crate::store::migrate::Convert;
use crate::SerializerPart;

const TS_LEN: usize = 8;

/// A timer that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer<K, N> {
    /// The key it was registered for (also the current key while it fires).
    pub key: K,
    /// The namespace it was registered for.
    pub namespace: N,
    /// Its timestamp.
    pub timestamp: i64,
}

/// Registers, deletes and fires the timers of one backend, in one of two time domains each:
/// event time (fired by [`advance_watermark`](Self::advance_watermark)) and processing time
/// (fired by [`advance_processing_time`](Self::advance_processing_time)).
#[derive(Debug, Clone)]
pub struct TimerService<N: Serializer = Unit> {
    backend: u64,
    event: u16,
    processing: u16,
    name: Arc<str>,
    namespace: N,
}

impl<K: Serializer> KeyedBackend<K> {
    /// The timer service `name`, with the namespace `()`.
    pub fn timer_service(&mut self, name: &str) -> Result<TimerService<Unit>> {
        self.timer_service_in(name, Unit)
    }

    /// The timer service `name`, with namespaces written by `namespace`.
    ///
    /// Restored timers may have been written by another namespace serializer, if it reads
    /// their bytes as they are or once reconfigured from the stored one; one that would change
    /// the bytes (and so the timers' order and identity) is refused with
    /// [`Error::IncompatibleSerializer`](crate::Error::IncompatibleSerializer), as for the
    /// namespaces of keyed state.
    pub fn timer_service_in<N: Serializer>(&mut self, name: &str, namespace: N) -> Result<TimerService<N>> {
        let core = &mut self.core;
        let names = [format!("{name}/event-time"), format!("{name}/processing-time")];
        let mut namespace = namespace;
        let mut evolving = false;
        for full in &names {
            if let Some((StateKind::Timers, writers)) = core.restored_writers(full) {
                let writers: Vec<&Writer> = writers.iter().collect();
                namespace = key_part(namespace, &writers, 1, full, SerializerPart::Namespace)?;
                evolving = true;
            }
        }
        // A timer is all key and no value: what the checked namespace serializer reads as it
        // is needs no conversion, and compaction copies the older writers' records.
        let copy: Option<Convert> = evolving.then(|| {
            Arc::new(|_: &[u32], raw: &[u8], out: &mut Vec<u8>| {
                out.extend_from_slice(raw);
                Ok(())
            }) as Convert
        });
        let sers = vec![self.key_serializer.snapshot(), namespace.snapshot()];
        let [event_name, processing_name] = &names;
        let (event, name_arc, _) =
            core.register_evolving(event_name, StateKind::Timers, sers.clone(), None, copy.clone())?;
        let (processing, _, _) = core.register_evolving(processing_name, StateKind::Timers, sers, None, copy)?;
        let groups = core.range.len() as usize;
        for id in [event, processing] {
            // Restored timers are found by a scan the first time they are needed.
            let restored = core.states.get(&id).is_some_and(|m| m.restored);
            let head = if restored { Head::Unknown } else { Head::Empty };
            core.timer_heads.entry(id).or_insert_with(|| vec![head; groups]);
        }
        Ok(TimerService { backend: core.id, event, processing, name: name_arc, namespace })
    }
}

fn encode_ts(ts: i64) -> [u8; TS_LEN] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

fn decode_ts(bytes: &[u8]) -> Option<i64> {
    let b: [u8; TS_LEN] = bytes.get(PREFIX_LEN..PREFIX_LEN + TS_LEN)?.try_into().ok()?;
    Some((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
}

impl<N: Serializer> TimerService<N> {
    /// Builds the timer record of the current key in `core.scratch`.
    fn timer_key(&self, core: &mut Core, state: u16, namespace: &N::Value, ts: i64) -> Result<usize> {
        core.check(self.backend)?;
        if !core.key_set {
            return Err(crate::error::Misuse::NoCurrentKey.into());
        }
        let kg = core.key_group();
        let idx = usize::from(kg - core.range.start());
        let mut rec = std::mem::take(&mut core.scratch);
        rec.clear();
        rec.extend_from_slice(&state_prefix(kg, state));
        rec.extend_from_slice(&encode_ts(ts));
        rec.extend_from_slice(core.key_bytes());
        self.namespace.write(namespace, &mut rec);
        core.scratch = rec;
        Ok(idx)
    }

    fn register<K: Serializer>(&self, b: &mut KeyedBackend<K>, state: u16, ns: &N::Value, ts: i64) -> Result<()> {
        let core = &mut b.core;
        let idx = self.timer_key(core, state, ns, ts)?;
        core.store.put(&core.scratch, &[])?;
        let Some(head) = core.timer_heads.get_mut(&state).and_then(|h| h.get_mut(idx)) else { return Ok(()) };
        match *head {
            Head::Empty => *head = Head::At(ts),
            Head::At(t) if ts < t => *head = Head::At(ts),
            _ => return Ok(()),
        }
        if core.timer_firing {
            core.timer_changes.push((state, idx));
        }
        Ok(())
    }

    fn delete<K: Serializer>(&self, b: &mut KeyedBackend<K>, state: u16, ns: &N::Value, ts: i64) -> Result<()> {
        let core = &mut b.core;
        let idx = self.timer_key(core, state, ns, ts)?;
        core.store.delete(&core.scratch)?;
        if let Some(head) = core.timer_heads.get_mut(&state).and_then(|h| h.get_mut(idx)) {
            if *head == Head::At(ts) {
                *head = Head::Unknown;
            }
        }
        Ok(())
    }

    /// Registers an event-time timer for the current key.
    pub fn register_event_time<K: Serializer>(&self, b: &mut KeyedBackend<K>, ns: &N::Value, ts: i64) -> Result<()> {
        self.register(b, self.event, ns, ts)
    }

    /// Registers a processing-time timer for the current key.
    pub fn register_processing_time<K: Serializer>(
        &self,
        b: &mut KeyedBackend<K>,
        ns: &N::Value,
        ts: i64,
    ) -> Result<()> {
        self.register(b, self.processing, ns, ts)
    }

    /// Deletes an event-time timer of the current key (nothing happens if there is none).
    pub fn delete_event_time<K: Serializer>(&self, b: &mut KeyedBackend<K>, ns: &N::Value, ts: i64) -> Result<()> {
        self.delete(b, self.event, ns, ts)
    }

    /// Deletes a processing-time timer of the current key.
    pub fn delete_processing_time<K: Serializer>(&self, b: &mut KeyedBackend<K>, ns: &N::Value, ts: i64) -> Result<()> {
        self.delete(b, self.processing, ns, ts)
    }

    /// Fires every event-time timer with a timestamp `<= watermark`, in timestamp order, with
    /// its key set as the current key. `on_timer` may read and write state and register or
    /// delete timers; timers it registers at or below the watermark fire in this call too.
    /// Returns how many fired.
    pub fn advance_watermark<K: Serializer>(
        &self,
        b: &mut KeyedBackend<K>,
        watermark: i64,
        on_timer: impl FnMut(&mut KeyedBackend<K>, Timer<K::Value, N::Value>) -> Result<()>,
    ) -> Result<usize> {
        b.core.check(self.backend)?;
        b.core.watermarks.insert(self.event, watermark);
        self.fire(b, self.event, watermark, on_timer)
    }

    /// Fires every processing-time timer with a timestamp `<= now`, as
    /// [`advance_watermark`](Self::advance_watermark) does for event time.
    pub fn advance_processing_time<K: Serializer>(
        &self,
        b: &mut KeyedBackend<K>,
        now: i64,
        on_timer: impl FnMut(&mut KeyedBackend<K>, Timer<K::Value, N::Value>) -> Result<()>,
    ) -> Result<usize> {
        self.fire(b, self.processing, now, on_timer)
    }

    /// The earliest event-time timer's timestamp, if any.
    pub fn next_event_time<K: Serializer>(&self, b: &mut KeyedBackend<K>) -> Result<Option<i64>> {
        self.earliest(b, self.event)
    }

    /// The earliest processing-time timer's timestamp, if any.
    pub fn next_processing_time<K: Serializer>(&self, b: &mut KeyedBackend<K>) -> Result<Option<i64>> {
        self.earliest(b, self.processing)
    }

    /// The watermark this service was last advanced to, as the timers' callbacks see it;
    /// `i64::MIN` before the first advance. As in Flink, the watermark is not part of a
    /// snapshot: a restored backend starts at `i64::MIN` until the next watermark arrives.
    pub fn current_watermark<K: Serializer>(&self, b: &KeyedBackend<K>) -> Result<i64> {
        b.core.check(self.backend)?;
        Ok(b.core.watermarks.get(&self.event).copied().unwrap_or(i64::MIN))
    }

    /// The processing time: the backend's clock (the one TTL uses), in milliseconds.
    pub fn current_processing_time<K: Serializer>(&self, b: &KeyedBackend<K>) -> Result<i64> {
        b.core.check(self.backend)?;
        Ok(b.core.now())
    }

    /// Calls `f` with every pending event-time timer, key group by key group and in timestamp
    /// order within one, with the timer's key set as the current key (as Flink's
    /// `forEachEventTimeTimer` does). Nothing fires and nothing is removed; `f` may read and
    /// write state, but timers it registers or deletes meanwhile may or may not be visited.
    /// Returns how many timers it visited.
    pub fn for_each_event_time_timer<K: Serializer>(
        &self,
        b: &mut KeyedBackend<K>,
        f: impl FnMut(&mut KeyedBackend<K>, Timer<K::Value, N::Value>) -> Result<()>,
    ) -> Result<usize> {
        self.for_each(b, self.event, f)
    }

    /// Calls `f` with every pending processing-time timer, as
    /// [`for_each_event_time_timer`](Self::for_each_event_time_timer) does for event time.
    pub fn for_each_processing_time_timer<K: Serializer>(
        &self,
        b: &mut KeyedBackend<K>,
        f: impl FnMut(&mut KeyedBackend<K>, Timer<K::Value, N::Value>) -> Result<()>,
    ) -> Result<usize> {
        self.for_each(b, self.processing, f)
    }

    fn for_each<K: Serializer>(
        &self,
        b: &mut KeyedBackend<K>,
        state: u16,
        mut f: impl FnMut(&mut KeyedBackend<K>, Timer<K::Value, N::Value>) -> Result<()>,
    ) -> Result<usize> {
        b.core.check(self.backend)?;
        let n = b.core.timer_heads.get(&state).map_or(0, Vec::len);
        let mut visited = 0;
        let mut records = Vec::new();
        for idx in 0..n {
            if resolve(&mut b.core, state, idx)? == Head::Empty {
                continue;
            }
            // One key group's timers at a time, so `f` may use the store meanwhile.
            let kg = b.core.range.start() + idx as u16;
            records.clear();
            {
                let mut it = b.core.store.scan_prefix(&state_prefix(kg, state))?;
                while let Some((k, _)) = it.next_entry()? {
                    records.push(k.to_vec());
                }
            }
            for record in &records {
                let (timer, ns_len) = self.parse(&b.key_serializer, record)?;
                b.core.set_raw_key(kg, &record[PREFIX_LEN + TS_LEN..record.len() - ns_len]);
                f(b, timer)?;
                visited += 1;
            }
        }
        Ok(visited)
    }

    fn earliest<K: Serializer>(&self, b: &mut KeyedBackend<K>, state: u16) -> Result<Option<i64>> {
        let core = &mut b.core;
        core.check(self.backend)?;
        let n = core.timer_heads.get(&state).map_or(0, Vec::len);
        let mut best = None;
        for idx in 0..n {
            if let Head::At(t) = resolve(core, state, idx)? {
                best = Some(best.map_or(t, |b: i64| b.min(t)));
            }
        }
        Ok(best)
    }

    fn fire<K: Serializer>(
        &self,
        b: &mut KeyedBackend<K>,
        state: u16,
        up_to: i64,
        mut on_timer: impl FnMut(&mut KeyedBackend<K>, Timer<K::Value, N::Value>) -> Result<()>,
    ) -> Result<usize> {
        b.core.check(self.backend)?;
        let n = b.core.timer_heads.get(&state).map_or(0, Vec::len);
        // Candidates: key groups whose earliest timer is due. Entries may go stale (a timer
        // deleted or registered since); each is checked against the head when popped.
        let mut due: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
        for idx in 0..n {
            if let Head::At(t) = resolve(&mut b.core, state, idx)? {
                if t <= up_to {
                    due.push(Reverse((t, idx)));
                }
            }
        }
        let mut fired = 0;
        b.core.timer_firing = true;
        b.core.timer_changes.clear();
        while let Some(Reverse((t, idx))) = due.pop() {
            match resolve(&mut b.core, state, idx)? {
                Head::At(now) if now == t => {}
                Head::At(now) => {
                    if now <= up_to {
                        due.push(Reverse((now, idx)));
                    }
                    continue;
                }
                _ => continue,
            }
            let core = &mut b.core;
            let kg = core.range.start() + idx as u16;
            let prefix = state_prefix(kg, state);
            let (first, next) = {
                let mut it = core.store.scan_prefix(&prefix)?;
                let first = it.next_entry()?.map(|(k, _)| k.to_vec());
                let next = it.next_entry()?.and_then(|(k, _)| decode_ts(k));
                (first, next)
            };
            let head = next.map_or(Head::Empty, Head::At);
            if let Some(h) = core.timer_heads.get_mut(&state).and_then(|h| h.get_mut(idx)) {
                *h = head;
            }
            if let Some(t) = next.filter(|t| *t <= up_to) {
                due.push(Reverse((t, idx)));
            }
            let Some(record) = first else { continue };
            core.store.delete(&record)?;
            let timer = self.parse(&b.key_serializer, &record)?;
            let key_len = record.len() - PREFIX_LEN - TS_LEN - timer.1;
            b.core.set_raw_key(kg, &record[PREFIX_LEN + TS_LEN..PREFIX_LEN + TS_LEN + key_len]);
            if let Err(e) = on_timer(b, timer.0) {
                b.core.timer_firing = false;
                return Err(e);
            }
            fired += 1;
            // Timers the callback registered may be due: look at the key groups whose heads
            // they moved.
            for (st, i) in std::mem::take(&mut b.core.timer_changes) {
                if st != state {
                    continue;
                }
                if let Head::At(t) = resolve(&mut b.core, state, i)? {
                    if t <= up_to {
                        due.push(Reverse((t, i)));
                    }
                }
            }
        }
        b.core.timer_firing = false;
        Ok(fired)
    }

    /// Decodes a timer record; also returns the namespace's length in bytes.
    #[allow(clippy::type_complexity)]
    fn parse<K: Serializer>(&self, key_serializer: &K, record: &[u8]) -> Result<(Timer<K::Value, N::Value>, usize)> {
        let err = |e| codec_error(&self.name, e);
        let timestamp = decode_ts(record).ok_or_else(|| err(crate::codec::CodecError::Truncated { needed: TS_LEN }))?;
        let mut rest = &record[PREFIX_LEN + TS_LEN..];
        let key = key_serializer.read(&mut rest).map_err(err)?;
        let ns_len = rest.len();
        let namespace = self.namespace.read_all(rest).map_err(err)?;
        Ok((Timer { key, namespace, timestamp }, ns_len))
    }
}

/// The head of one key group, read from the store when unknown.
fn resolve(core: &mut Core, state: u16, idx: usize) -> Result<Head> {
    let head = core.timer_heads.get(&state).and_then(|h| h.get(idx)).copied().unwrap_or(Head::Empty);
    if head != Head::Unknown {
        return Ok(head);
    }
    let kg = core.range.start() + idx as u16;
    let prefix = state_prefix(kg, state);
    let head = {
        let mut it = core.store.scan_prefix(&prefix)?;
        it.next_entry()?.and_then(|(k, _)| decode_ts(k)).map_or(Head::Empty, Head::At)
    };
    if let Some(h) = core.timer_heads.get_mut(&state).and_then(|h| h.get_mut(idx)) {
        *h = head;
    }
    Ok(head)
}
