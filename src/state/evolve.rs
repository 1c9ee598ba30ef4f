//! Schema evolution of keyed state: what a restored state's stored writers are checked
//! against when the job registers it, and the conversion of their records to the serializers
//! registered now, applied lazily (a read of an old record converts it and writes it back),
//! by compaction, and by savepoints.
//!
//! Every record is tagged with the writer that wrote it (the state's entry in its segment's
//! [`SchemaTag`](crate::format::SchemaTag)); the meta info of a snapshot lists, per state, its
//! present writer and the older ones whose records may still be stored
//! ([`StateMetaInfo::older`](crate::format::checkpoint::StateMetaInfo::older)).

use std::sync::Arc;

use super::clock::Clock;
use super::ttl::{put_element, put_ts, split_ts, Elements};
use crate::codec::{part_reader, Compatibility, OldReader, Serializer, SerializerSnapshot};
use crate::error::{Incompatibility, Result};
use crate::format::checkpoint::OlderWriter;
use crate::store::migrate::Convert;
use crate::SerializerPart;

/// A writer of a restored state: its tag entry, serializers and whether it wrote timestamps.
pub(crate) type Writer = OlderWriter;

/// How one writer's values are read now: `None` as they are.
pub(crate) struct Reader<S: Serializer> {
    tag: Vec<u32>,
    ttl: bool,
    read: Option<OldReader<S>>,
}

/// Why a serializer cannot be used for what a stored writer wrote.
const NO_RECONFIGURED: &str = "the serializer asks to be reconfigured but gives no reconfigured serializer";
const NO_READER: &str = "the serializer needs a migration but gives no reader of the old data";
const CANNOT_READ: &str = "the serializer cannot read what the snapshot holds";

/// The error of a serializer that cannot read what a stored writer wrote.
fn incompatible(
    state: &str,
    part: SerializerPart,
    stored: &SerializerSnapshot,
    requested: SerializerSnapshot,
    why: &str,
) -> crate::Error {
    Incompatibility { state: Some(state.to_owned()), part, stored: stored.clone(), requested, why: why.to_owned() }
        .into()
}

/// Checks a serializer whose bytes are part of record keys (a namespace, a map's user key)
/// against the part `i` of every writer, newest first: it must read them as they are, or
/// once reconfigured from the newest; a change of the bytes is refused online.
pub(crate) fn key_part<S: Serializer>(
    s: S,
    writers: &[&Writer],
    i: usize,
    state: &str,
    part: SerializerPart,
) -> Result<S> {
    let mut s = s;
    for (n, w) in writers.iter().enumerate() {
        let Some(old) = w.serializers.get(i) else { continue };
        match s.compatibility(old) {
            Compatibility::AsIs => {}
            Compatibility::WithReconfiguredSerializer if n == 0 => {
                s = s.reconfigured(old).ok_or_else(|| incompatible(state, part, old, s.snapshot(), NO_RECONFIGURED))?
            }
            Compatibility::AfterMigration | Compatibility::WithReconfiguredSerializer => {
                return Err(incompatible(
                    state,
                    part,
                    old,
                    s.snapshot(),
                    "the change alters the bytes of keys (and so their order and lookups); it cannot be applied online: rewrite the snapshot offline with an eager migration of keys",
                ))
            }
            Compatibility::Incompatible => return Err(incompatible(state, part, old, s.snapshot(), CANNOT_READ)),
        }
    }
    Ok(s)
}

/// Checks the value serializer `s` against the part `i` of every writer, newest first, and
/// gives the serializer to use (reconfigured from the newest writer when it asks for that)
/// with a reader of each writer's values.
pub(crate) fn value_part<S: Serializer>(
    s: S,
    writers: &[&Writer],
    i: usize,
    state: &str,
) -> Result<(S, Vec<Reader<S>>)> {
    let mut s = s;
    if let Some(old) = writers.first().and_then(|w| w.serializers.get(i)) {
        if s.compatibility(old) == Compatibility::WithReconfiguredSerializer {
            s = s
                .reconfigured(old)
                .ok_or_else(|| incompatible(state, SerializerPart::Value, old, s.snapshot(), NO_RECONFIGURED))?;
        }
    }
    let mut readers = Vec::with_capacity(writers.len());
    for w in writers {
        let Some(old) = w.serializers.get(i) else { continue };
        let read = match s.compatibility(old) {
            Compatibility::AsIs => None,
            Compatibility::Incompatible => {
                return Err(incompatible(state, SerializerPart::Value, old, s.snapshot(), CANNOT_READ))
            }
            _ => Some(
                part_reader(&s, old)
                    .ok_or_else(|| incompatible(state, SerializerPart::Value, old, s.snapshot(), NO_READER))?,
            ),
        };
        readers.push(Reader { tag: w.tag.clone(), ttl: w.ttl, read });
    }
    Ok((s, readers))
}

/// The shape of a state's values, for their conversion.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One value per record (value, reducing, aggregating state; a map entry).
    Single,
    /// A list of framed elements (list state).
    List,
}

/// The conversion of records of the writers `readers` into records of `s`, with timestamps
/// when `ttl` (a value written without one counts as written at the time of this call).
pub(crate) fn convert<S: Serializer>(
    s: Arc<S>,
    readers: Vec<Reader<S>>,
    shape: Shape,
    ttl: bool,
    clock: Arc<dyn Clock>,
) -> Convert {
    // A value written without a timestamp by a writer without TTL counts as written when the
    // state was registered with TTL: every conversion of it (on the fly, by compaction, by a
    // savepoint) gives it that time.
    let since = clock.now_millis();
    Arc::new(move |entry: &[u32], raw: &[u8], out: &mut Vec<u8>| {
        let Some(r) = readers.iter().find(|r| r.tag == entry) else {
            return Err(format!("no writer of the state is known for tag entry {entry:?}"));
        };
        let read_one = |bytes: &[u8]| match &r.read {
            Some(read) => read.read_all(&s, bytes),
            None => s.read_all(bytes),
        };
        match shape {
            Shape::Single => {
                let (ts, body) = if r.ttl {
                    let (ts, body) = split_ts(raw).ok_or("a value shorter than its timestamp")?;
                    (Some(ts), body)
                } else {
                    (None, raw)
                };
                if ttl {
                    put_ts(ts.unwrap_or(since), out);
                }
                if r.read.is_none() {
                    out.extend_from_slice(body);
                } else {
                    let v = read_one(body).map_err(|e| e.to_string())?;
                    s.write(&v, out);
                }
            }
            Shape::List => {
                for e in Elements::new(raw, r.ttl) {
                    let e = e.map_err(|e| e.to_string())?;
                    let v = read_one(e.bytes).map_err(|e| e.to_string())?;
                    let ts = ttl.then(|| e.ts.unwrap_or(since));
                    put_element(ts, out, |o| s.write(&v, o));
                }
            }
        }
        Ok(())
    })
}

/// For state held in memory and read whole on registration (operator list and broadcast
/// state): the serializer to use for what the serializer described by `old` wrote (this one,
/// or the one reconfigured from `old`) and, when the values must be converted, the reader
/// of the old ones.
pub(crate) fn resolve_eager<S: Serializer>(
    state: &str,
    part: SerializerPart,
    s: S,
    old: &SerializerSnapshot,
) -> Result<(S, Option<OldReader<S>>)> {
    match s.compatibility(old) {
        Compatibility::AsIs => Ok((s, None)),
        Compatibility::WithReconfiguredSerializer => match s.reconfigured(old) {
            Some(r) => Ok((r, None)),
            None => Err(incompatible(state, part, old, s.snapshot(), NO_RECONFIGURED)),
        },
        Compatibility::AfterMigration => match s.old_reader(old) {
            Some(r) => Ok((s, Some(r))),
            None => Err(incompatible(state, part, old, s.snapshot(), NO_READER)),
        },
        Compatibility::Incompatible => Err(incompatible(state, part, old, s.snapshot(), CANNOT_READ)),
    }
}

/// Reads one value that fills `bytes` with `s`, or with `old` when it was written by an older
/// serializer.
pub(crate) fn read_eager<S: Serializer>(
    s: &S,
    old: Option<&OldReader<S>>,
    bytes: &[u8],
) -> std::result::Result<S::Value, crate::codec::CodecError> {
    match old {
        Some(r) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.read_all(s, bytes)))
            .unwrap_or_else(|_| Err(crate::codec::CodecError::Migration("the conversion panicked".into()))),
        None => s.read_all(bytes),
    }
}
