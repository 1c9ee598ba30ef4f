//! [`SerdeSerializer`]: any `serde` type, in postcard's wire format.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{read_len, take, CodecError, Serializer, SerializerSnapshot};

/// Any `serde` type, as a varint length and then postcard's encoding. Not order-preserving,
/// not fixed-length.
///
/// Snapshot: identity `"eddy.serde.postcard"`, version 1, configuration the UTF-8 bytes of the
/// serializer's tag: empty for [`SerdeSerializer::new`], any stable name of the type's shape
/// for [`SerdeSerializer::with_tag`]. The tag is not derived from the Rust type's name because
/// renaming or moving a type does not change its encoding; a tag names what the bytes mean and
/// lets [`Serializer::compatibility`] tell one kind of state from another.
///
/// `Send`, `Sync`, `Clone` and `Default` whatever `T` is.
///
/// # Why postcard
///
/// - Its wire format is specified and stable: postcard 1.0 froze it, and the specification
///   (<https://postcard.jamesmunro.uk/wire-format>) is part of the project, so bytes written
///   today stay readable by any postcard 1.x.
/// - It is compact: integers wider than a byte are varints (zigzag for signed ones), enum
///   variants and lengths are varints, structs and tuples carry no field names or framing.
/// - It is small and `no_std`-grade: no reflection, no schema, no allocations of its own.
/// - It is deterministic for what it encodes: structs, enums, tuples, sequences and maps come
///   out in their `Serialize` order, so equal values give equal bytes. Keys are compared as
///   bytes, so a type whose `Serialize` order is not a function of its value (`HashMap`,
///   `HashSet`: iteration order varies from process to process) must not be used in keys, and
///   is best avoided in values too (use `BTreeMap`, `BTreeSet`, or a sorted `Vec`).
///
/// postcard is not self-describing: types that need `deserialize_any`
/// (`#[serde(untagged)]`, `#[serde(flatten)]`, `serde_json::Value`, ...) cannot be read back,
/// and sequences or maps of unknown length cannot be written.
///
/// # Encoding
///
/// A LEB128 varint byte length, then the postcard bytes. postcard's own encoding is not
/// self-delimiting for every type (a value can end early and leave bytes a reader would not
/// notice), so the length makes it so, and a read that does not use up its slot exactly is
/// [`CodecError::Invalid`].
///
/// Writing needs no intermediate buffer: postcard writes straight into the output after a
/// one-byte placeholder for the length, which is filled in afterwards. Values of 128 bytes or
/// more need a longer varint, for which the payload is shifted up in place (one `memmove`).
///
/// Reading is bounded by the slot's length, with two exceptions that come from postcard and that
/// only bytes written by another serializer can reach (stored bytes are checksummed): postcard
/// has no recursion limit, so a recursive type (`enum Tree { Leaf, Node(Box<Tree>,
/// Box<Tree>) }`) could nest as deep as the slot is long; and it does not check a sequence's
/// element count against the bytes left, so a type holding a sequence or map of zero-sized
/// elements (`Vec<()>`, a `Vec` of a unit struct) could be asked to build up to 2^64 elements
/// from a dozen bytes. Avoid such types here (use [`VecOf`](super::VecOf) of [`Unit`](super::Unit),
/// which caps the count).
pub struct SerdeSerializer<T> {
    tag: Cow<'static, str>,
    _type: PhantomData<fn() -> T>,
}

super::tagged_serializer!(SerdeSerializer);

impl<T> Serializer for SerdeSerializer<T>
where
    T: Serialize + DeserializeOwned + 'static,
{
    type Value = T;

    /// Appends the varint length and the postcard bytes of `value`.
    ///
    /// # Panics
    ///
    /// If postcard cannot encode the value: its `Serialize` fails, or serializes a sequence or
    /// map of unknown length. Neither depends on data, only on the type, so this shows up the
    /// first time a value is written. `out` is left as it was before the panic.
    #[inline]
    fn write(&self, value: &T, out: &mut Vec<u8>) {
        let prefix_at = out.len();
        out.push(0);
        if let Err(e) = postcard::to_io(value, &mut *out) {
            out.truncate(prefix_at);
            panic!("SerdeSerializer<{}>: postcard cannot encode the value: {e}", std::any::type_name::<T>());
        }
        fill_len_prefix(out, prefix_at);
    }

    #[inline]
    fn read(&self, input: &mut &[u8]) -> Result<T, CodecError> {
        let n = read_len(input, 1)?;
        let bytes = take(input, n)?;
        match postcard::take_from_bytes::<T>(bytes) {
            Ok((value, [])) => Ok(value),
            Ok(_) => Err(CodecError::Invalid("postcard value leaves bytes in its slot")),
            Err(_) => Err(CodecError::Invalid("postcard")),
        }
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot {
            identity: "eddy.serde.postcard".to_owned(),
            version: 1,
            config: self.tag.as_bytes().to_vec(),
        }
    }
}

/// Writes the length of the payload after the one-byte placeholder at `prefix_at` into it as
/// a LEB128 varint, shifting the payload up when the varint needs more than that byte. The
/// result is exactly `write_varint(len)` followed by the payload.
#[inline]
fn fill_len_prefix(out: &mut Vec<u8>, prefix_at: usize) {
    let payload_at = prefix_at + 1;
    let len = out.len() - payload_at;
    if len < 0x80 {
        out[prefix_at] = len as u8;
        return;
    }
    let mut varint = [0u8; 10];
    let mut n = 0;
    let mut v = len as u64;
    while v >= 0x80 {
        varint[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    varint[n] = v as u8;
    n += 1;
    let end = out.len();
    out.resize(end + n - 1, 0);
    out.copy_within(payload_at..end, prefix_at + n);
    out[prefix_at..prefix_at + n].copy_from_slice(&varint[..n]);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use quickcheck::{quickcheck, Arbitrary, Gen};
    use serde::Deserialize;

    use super::super::builtin::tests::{check_eq, enc, fuzz, snapshot_round_trip, Res};
    use super::super::{write_varint, Compatibility};
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Kind {
        Click,
        View(u32),
        Purchase { item: String, cents: i64 },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Event {
        id: u64,
        user: String,
        kind: Kind,
        tags: Vec<String>,
        extra: Option<BTreeMap<u16, Vec<u8>>>,
        flags: (bool, char, i8),
    }

    impl Arbitrary for Kind {
        fn arbitrary(g: &mut Gen) -> Self {
            match u8::arbitrary(g) % 3 {
                0 => Kind::Click,
                1 => Kind::View(u32::arbitrary(g)),
                _ => Kind::Purchase { item: String::arbitrary(g), cents: i64::arbitrary(g) },
            }
        }
    }

    impl Arbitrary for Event {
        fn arbitrary(g: &mut Gen) -> Self {
            Event {
                id: u64::arbitrary(g),
                user: String::arbitrary(g),
                kind: Kind::arbitrary(g),
                tags: Vec::arbitrary(g),
                extra: Option::arbitrary(g),
                flags: Arbitrary::arbitrary(g),
            }
        }
    }

    fn event(n: usize) -> Event {
        Event {
            id: 7,
            user: "ada".to_owned(),
            kind: Kind::Purchase { item: "x".repeat(n), cents: -3 },
            tags: vec!["a".to_owned(), String::new()],
            extra: Some(BTreeMap::from([(1, vec![1, 2, 3])])),
            flags: (true, 'é', -1),
        }
    }

    #[test]
    fn round_trips() {
        fn events(a: Event, b: Event) -> Res {
            check_eq(&SerdeSerializer::new(), a, b)
        }
        fn kinds(a: Kind, b: Kind) -> Res {
            check_eq(&SerdeSerializer::with_tag("test.Kind"), a, b)
        }
        fn plain(a: (u64, String, Vec<i32>), b: (u64, String, Vec<i32>)) -> Res {
            check_eq(&SerdeSerializer::new(), a, b)
        }
        fn units(a: (), b: ()) -> Res {
            check_eq(&SerdeSerializer::new(), a, b)
        }
        quickcheck(events as fn(Event, Event) -> Res);
        quickcheck(kinds as fn(Kind, Kind) -> Res);
        quickcheck(plain as fn((u64, String, Vec<i32>), (u64, String, Vec<i32>)) -> Res);
        quickcheck(units as fn((), ()) -> Res);
        // Around every varint length boundary of the prefix.
        for n in [0, 100, 110, 120, 130, 16_000, 16_400, 2_100_000] {
            check_eq(&SerdeSerializer::new(), event(n), event(n / 2)).unwrap();
        }
    }

    #[test]
    fn the_encoding_is_a_length_and_postcard() {
        let s = SerdeSerializer::<Event>::new();
        for n in [0, 1, 127, 128, 16_383, 16_384, 70_000] {
            let value = event(n);
            let body = postcard::to_allocvec(&value).unwrap();
            let mut expected = vec![0xEE];
            write_varint(body.len() as u64, &mut expected);
            expected.extend_from_slice(&body);
            let mut out = vec![0xEE];
            s.write(&value, &mut out);
            assert_eq!(out, expected, "n = {n}");
        }
        assert_eq!(enc(&SerdeSerializer::new(), &(1u8, 300u16)), [3, 1, 0xAC, 0x02]);
    }

    #[test]
    fn bad_slots_are_invalid() {
        let s = SerdeSerializer::<(u8, u8)>::new();
        // A value that ends before its slot does.
        assert_eq!(s.read_all(&[3, 1, 2, 3]), Err(CodecError::Invalid("postcard value leaves bytes in its slot")));
        // A slot that ends before its value does.
        assert_eq!(s.read_all(&[1, 1]), Err(CodecError::Invalid("postcard")));
        // Bad UTF-8, a bad enum discriminant, a bad bool.
        assert_eq!(
            SerdeSerializer::<String>::new().read_all(&[3, 2, 0xff, 0xfe]),
            Err(CodecError::Invalid("postcard"))
        );
        assert_eq!(SerdeSerializer::<Kind>::new().read_all(&[1, 9]), Err(CodecError::Invalid("postcard")));
        assert_eq!(SerdeSerializer::<bool>::new().read_all(&[1, 2]), Err(CodecError::Invalid("postcard")));
        // A huge claimed length, inside the slot or of the slot, allocates nothing.
        assert_eq!(
            SerdeSerializer::<Vec<u64>>::new().read_all(&[5, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(CodecError::Invalid("postcard"))
        );
        assert!(matches!(s.read_all(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0]), Err(CodecError::Truncated { .. })));
    }

    #[test]
    #[should_panic(expected = "postcard cannot encode the value")]
    fn unencodable_values_panic_in_write() {
        struct UnknownLength;
        impl Serialize for UnknownLength {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(std::iter::from_fn(|| None::<u8>).filter(|_| true))
            }
        }
        impl<'de> Deserialize<'de> for UnknownLength {
            fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
                Ok(UnknownLength)
            }
        }
        let mut out = vec![1, 2];
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            SerdeSerializer::new().write(&UnknownLength, &mut out);
        }));
        assert_eq!(out, [1, 2], "a failed write leaves the buffer as it was");
        std::panic::resume_unwind(result.unwrap_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        fn prop(bytes: Vec<u8>) -> bool {
            fuzz(&SerdeSerializer::<Event>::new(), &bytes)
                && fuzz(&SerdeSerializer::<Kind>::new(), &bytes)
                && fuzz(&SerdeSerializer::<Vec<String>>::new(), &bytes)
                && fuzz(&SerdeSerializer::<BTreeMap<String, Option<u64>>>::new(), &bytes)
        }
        quickcheck(prop as fn(Vec<u8>) -> bool);
        // Every single-byte change of a valid encoding.
        let bytes = enc(&SerdeSerializer::new(), &event(3));
        for i in 0..bytes.len() {
            for x in [0x01, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[i] ^= x;
                assert!(prop(damaged));
            }
        }
    }

    #[test]
    fn snapshots() {
        snapshot_round_trip(&SerdeSerializer::<Event>::new());
        snapshot_round_trip(&SerdeSerializer::<Event>::with_tag("test.Event"));
        let untagged = SerdeSerializer::<Event>::new().snapshot();
        assert_eq!(untagged, SerializerSnapshot::new("eddy.serde.postcard", 1));
        let tagged = SerdeSerializer::<Event>::with_tag(String::from("test.Event"));
        assert_eq!(tagged.tag(), "test.Event");
        assert_eq!(tagged.snapshot().config, b"test.Event");
        assert_eq!(tagged.compatibility(&untagged), Compatibility::Incompatible);
        assert_eq!(tagged.compatibility(&tagged.clone().snapshot()), Compatibility::AsIs);
        assert_eq!(SerdeSerializer::<Event>::default(), SerdeSerializer::new());
        assert!(format!("{tagged:?}").contains("test.Event"));
    }

    #[test]
    fn send_sync_whatever_the_type() {
        fn assert_send_sync<S: Send + Sync + Clone + Default>() {}
        assert_send_sync::<SerdeSerializer<std::rc::Rc<u8>>>();
        assert_send_sync::<SerdeSerializer<std::cell::Cell<u8>>>();
    }
}
