//! Time to live: configuration, the timestamp stored with each value, and the compaction
//! filter that drops expired entries while segments are merged.

use std::sync::{Arc, RwLock};

use super::clock::Clock;
use crate::checkpoint::RecordFilter;
use crate::codec::{read_varint, write_varint};
use crate::format::meta::TtlConfig;
use crate::store::{CompactionFilter, FilterDecision};

/// The bytes of the last-access timestamp in front of a value with TTL.
pub(crate) const TS_LEN: usize = 8;

/// Splits a stored value with TTL into its timestamp and value bytes.
#[inline]
pub(crate) fn split_ts(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let (ts, rest) = bytes.split_first_chunk::<TS_LEN>()?;
    Some((i64::from_le_bytes(*ts), rest))
}

/// Appends a timestamp.
#[inline]
pub(crate) fn put_ts(ts: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(&ts.to_le_bytes());
}

/// One list element: `[timestamp] | varint length | bytes`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Element<'a> {
    pub ts: Option<i64>,
    pub bytes: &'a [u8],
    /// The whole frame, timestamp included.
    pub frame: &'a [u8],
}

/// Reads the elements of a list value. `None` from `next` ends the list; a malformed frame ends
/// it with an error.
pub(crate) struct Elements<'a> {
    rest: &'a [u8],
    ttl: bool,
}

impl<'a> Elements<'a> {
    pub(crate) fn new(bytes: &'a [u8], ttl: bool) -> Self {
        Elements { rest: bytes, ttl }
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<Element<'a>, crate::codec::CodecError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (&first, tail) = self.rest.split_first()?;
        // The common frame: no timestamp and a length below 128, one byte.
        if !self.ttl && first < 0x80 && usize::from(first) <= tail.len() {
            let (bytes, rest) = tail.split_at(usize::from(first));
            let frame = &self.rest[..=bytes.len()];
            self.rest = rest;
            return Some(Ok(Element { ts: None, bytes, frame }));
        }
        self.next_slow()
    }
}

impl<'a> Elements<'a> {
    #[cold]
    fn next_slow(&mut self) -> Option<Result<Element<'a>, crate::codec::CodecError>> {
        let start = self.rest;
        let mut cur = self.rest;
        let r = (|| {
            let ts = if self.ttl {
                let (ts, rest) = split_ts(cur).ok_or(crate::codec::CodecError::Truncated { needed: TS_LEN })?;
                cur = rest;
                Some(ts)
            } else {
                None
            };
            let len = usize::try_from(read_varint(&mut cur)?)
                .map_err(|_| crate::codec::CodecError::Invalid("list element length"))?;
            if len > cur.len() {
                return Err(crate::codec::CodecError::Truncated { needed: len - cur.len() });
            }
            let (bytes, rest) = cur.split_at(len);
            let used = start.len() - rest.len();
            Ok((Element { ts, bytes, frame: &start[..used] }, rest))
        })();
        match r {
            Ok((e, rest)) => {
                self.rest = rest;
                Some(Ok(e))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// Appends one list element frame around the bytes `write` appends.
#[inline]
pub(crate) fn put_element(ts: Option<i64>, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    if let Some(ts) = ts {
        put_ts(ts, out);
    }
    // Reserve one length byte, the common case; move the bytes if the length needs more.
    let len_at = out.len();
    out.push(0);
    write(out);
    let len = out.len() - len_at - 1;
    if len < 0x80 {
        out[len_at] = len as u8;
    } else {
        let mut varint = Vec::with_capacity(10);
        write_varint(len as u64, &mut varint);
        out.splice(len_at..len_at + 1, varint);
    }
}

/// The TTL of each state, shared with the compaction filter.
#[derive(Default)]
pub(crate) struct TtlTable {
    /// `(state id, config, is_list)`, sorted by state id.
    states: RwLock<Vec<(u16, TtlConfig, bool)>>,
}

impl TtlTable {
    pub(crate) fn set(&self, state: u16, config: TtlConfig, list: bool) {
        let mut states = self.states.write().unwrap_or_else(|e| e.into_inner());
        match states.binary_search_by_key(&state, |e| e.0) {
            Ok(i) => states[i] = (state, config, list),
            Err(i) => states.insert(i, (state, config, list)),
        }
    }

    pub(crate) fn remove(&self, state: u16) {
        let mut states = self.states.write().unwrap_or_else(|e| e.into_inner());
        states.retain(|e| e.0 != state);
    }

    fn get(&self, state: u16) -> Option<(TtlConfig, bool)> {
        let states = self.states.read().unwrap_or_else(|e| e.into_inner());
        let i = states.binary_search_by_key(&state, |e| e.0).ok()?;
        Some((states[i].1, states[i].2))
    }
}

/// Drops expired entries of states with TTL during compaction.
pub(crate) struct TtlFilter {
    pub(crate) table: Arc<TtlTable>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl CompactionFilter for TtlFilter {
    fn filter(&self, key: &[u8], value: &[u8], _operand: bool, out: &mut Vec<u8>) -> FilterDecision {
        // The clock is read only for records of states that expire in compaction: reading
        // it for every record of the others was a measurable part of a compaction's time.
        self.decide(key, value, out, |c| c.in_compaction, || self.clock.now_millis())
    }
}

impl TtlFilter {
    /// The filter of a full snapshot (a savepoint) taken at time `now`: expired entries of
    /// states whose TTL asks for cleanup in full snapshots are left out. The TTL settings are
    /// read once, here.
    pub(crate) fn for_snapshot(&self, now: i64) -> SnapshotTtl {
        let states = self.table.states.read().unwrap_or_else(|e| e.into_inner());
        let states = states.iter().filter(|(_, c, _)| c.full_snapshot).copied().collect();
        SnapshotTtl { states, now, last: None }
    }

    fn decide(
        &self,
        key: &[u8],
        value: &[u8],
        out: &mut Vec<u8>,
        on: fn(&TtlConfig) -> bool,
        now: impl FnOnce() -> i64,
    ) -> FilterDecision {
        let Some(&[a, b]) = key.get(2..4) else {
            return FilterDecision::Keep;
        };
        match self.table.get(u16::from_be_bytes([a, b])) {
            Some((config, list)) if on(&config) => expire(&config, list, value, out, now()),
            _ => FilterDecision::Keep,
        }
    }
}

/// The TTL filter of one full snapshot: the settings of the states that clean up in full
/// snapshots, and the snapshot's time.
pub(crate) struct SnapshotTtl {
    states: Vec<(u16, TtlConfig, bool)>,
    now: i64,
    /// The last state looked up: records come state by state.
    last: Option<(u16, Option<(TtlConfig, bool)>)>,
}

impl RecordFilter for SnapshotTtl {
    /// What the snapshot keeps of a record.
    fn filter(&mut self, key: &[u8], value: &[u8], out: &mut Vec<u8>) -> FilterDecision {
        if self.states.is_empty() {
            return FilterDecision::Keep;
        }
        let Some(&[a, b]) = key.get(2..4) else {
            return FilterDecision::Keep;
        };
        let id = u16::from_be_bytes([a, b]);
        let found = match self.last {
            Some((last, found)) if last == id => found,
            _ => {
                let found = self.states.iter().find(|(s, _, _)| *s == id).map(|&(_, c, l)| (c, l));
                self.last = Some((id, found));
                found
            }
        };
        match found {
            Some((config, list)) => expire(&config, list, value, out, self.now),
            None => FilterDecision::Keep,
        }
    }
}

/// What is left of a record of a state with TTL `config` at time `now`.
fn expire(config: &TtlConfig, list: bool, value: &[u8], out: &mut Vec<u8>, now: i64) -> FilterDecision {
    if !list {
        return match split_ts(value) {
            Some((ts, _)) if config.expired(ts, now) => FilterDecision::Remove,
            _ => FilterDecision::Keep,
        };
    }
    filter_list(value, config, now, out)
}

/// Leaves the unexpired elements of a list value in `out`.
pub(crate) fn filter_list(value: &[u8], config: &TtlConfig, now: i64, out: &mut Vec<u8>) -> FilterDecision {
    match list_expiry(value, config, now, out) {
        Ok(Decision::Rewrite) if out.is_empty() => FilterDecision::Remove,
        Ok(Decision::Rewrite) => FilterDecision::Replace,
        // A list the filter cannot read is left for the reader to report.
        Ok(Decision::Keep) | Err(_) => FilterDecision::Keep,
    }
}

/// Whether a list value has expired elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing expired.
    Keep,
    /// Some elements expired; the others are in the output.
    Rewrite,
}

/// Copies the unexpired elements of a list value (with TTL) to `out`.
pub(crate) fn list_expiry(
    value: &[u8],
    config: &TtlConfig,
    now: i64,
    out: &mut Vec<u8>,
) -> Result<Decision, crate::codec::CodecError> {
    let mut expired = false;
    for e in Elements::new(value, true) {
        let e = e?;
        if e.ts.is_some_and(|ts| config.expired(ts, now)) {
            expired = true;
        } else {
            out.extend_from_slice(e.frame);
        }
    }
    Ok(if expired { Decision::Rewrite } else { Decision::Keep })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn elements_round_trip_with_long_and_short_lengths() {
        let mut out = Vec::new();
        put_element(Some(7), &mut out, |o| o.extend_from_slice(b"ab"));
        put_element(Some(8), &mut out, |o| o.extend_from_slice(&[9u8; 300]));
        put_element(Some(9), &mut out, |_| {});
        let els: Vec<_> = Elements::new(&out, true).map(|e| e.unwrap()).collect();
        assert_eq!(els.len(), 3);
        assert_eq!((els[0].ts, els[0].bytes), (Some(7), &b"ab"[..]));
        assert_eq!((els[1].ts, els[1].bytes.len()), (Some(8), 300));
        assert_eq!((els[2].ts, els[2].bytes), (Some(9), &b""[..]));
    }

    #[test]
    fn truncated_elements_end_with_an_error() {
        let mut out = Vec::new();
        put_element(None, &mut out, |o| o.extend_from_slice(b"abc"));
        for cut in 1..out.len() {
            let r: Vec<_> = Elements::new(&out[..cut], false).collect();
            assert!(r.last().unwrap().is_err());
        }
    }

    #[test]
    fn list_filter_keeps_live_elements_only() {
        let config = TtlConfig::new(Duration::from_millis(10));
        let mut v = Vec::new();
        put_element(Some(0), &mut v, |o| o.push(1));
        put_element(Some(95), &mut v, |o| o.push(2));
        let mut out = Vec::new();
        assert_eq!(filter_list(&v, &config, 100, &mut out), FilterDecision::Replace);
        let els: Vec<_> = Elements::new(&out, true).map(|e| e.unwrap().bytes.to_vec()).collect();
        assert_eq!(els, vec![vec![2]]);
        out.clear();
        assert_eq!(filter_list(&v, &config, 5, &mut out), FilterDecision::Keep);
        out.clear();
        assert_eq!(filter_list(&v, &config, 200, &mut out), FilterDecision::Remove);
    }
}
