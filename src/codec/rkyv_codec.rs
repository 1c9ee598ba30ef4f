//! [`RkyvSerializer`]: any `rkyv` type, readable in place without deserializing.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::mem::align_of;
use std::ops::Deref;

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use super::{read_len, take, write_varint, BorrowSerializer, CodecError, Serializer, SerializerSnapshot};

/// The alignment at which any archive can be read in place: that of rkyv's [`AlignedVec`].
const ARCHIVE_ALIGN: usize = AlignedVec::<16>::ALIGNMENT;

/// Any `rkyv` type, as a varint length and then its archive. Not order-preserving, not
/// fixed-length. As a [`BorrowSerializer`] it reads the archived value in place, without
/// deserializing it.
///
/// Snapshot: identity `"eddy.rkyv"`, version 1, configuration the UTF-8 bytes of the
/// serializer's tag (empty for [`RkyvSerializer::new`]; see [`SerdeSerializer`] for why tags
/// rather than type names).
///
/// `T` needs the bounds rkyv's high-level API asks for: for a type deriving
/// `rkyv::Archive, rkyv::Serialize, rkyv::Deserialize` they all hold.
///
/// `Send`, `Sync`, `Clone` and `Default` whatever `T` is.
///
/// # Encoding
///
/// A LEB128 varint byte length, then the archive `rkyv::to_bytes` makes of the value: rkyv
/// 0.8's default format (little-endian, 32-bit relative pointers, aligned primitives), its
/// root at the end.
///
/// # Alignment
///
/// rkyv reads an archive in place, so the archive's bytes must sit at addresses aligned as its
/// types require; rkyv aligns every object relative to the start of the archive, and needs at
/// most 16-byte alignment of that start. The store hands out values at arbitrary addresses
/// (and our length prefix shifts them further), so reads check the address:
///
/// - at a 16-byte-aligned address, or one aligned for the root type on which validation
///   succeeds, the archive is read where it lies;
/// - otherwise it is copied into an [`AlignedVec`] first.
///
/// Validation (`bytecheck`, through [`rkyv::access`]) checks alignment itself, so a misaligned
/// archive is never read in place. Types that need more than 16-byte alignment
/// (`#[repr(align(32))]` fields) cannot be read at all; rkyv's own `to_bytes` has the same
/// limit.
///
/// # Untrusted lengths
///
/// Validation bounds every length by the archive's size, except for zero-sized elements: an
/// archived `Vec` of a unit struct may claim up to `u32::MAX` elements in a few bytes, and
/// deserializing it builds them all. Avoid such types here.
///
/// # Costs
///
/// Serializers are shared (`&self`, `Sync`), so there is no buffer to reuse: every
/// [`write`](Serializer::write) serializes into a fresh [`AlignedVec`] and copies it into the
/// output. Every read validates the whole archive before touching it; that is what makes it
/// safe to read bytes in place without `unsafe`.
///
/// Like postcard's, rkyv's archive of a value is deterministic when the value's own order is:
/// `HashMap` and `HashSet` iterate in an order that varies from process to process, so they
/// must not be used in keys.
///
/// [`SerdeSerializer`]: super::SerdeSerializer
pub struct RkyvSerializer<T> {
    tag: Cow<'static, str>,
    _type: PhantomData<fn() -> T>,
}

super::tagged_serializer!(RkyvSerializer);

const INVALID_ARCHIVE: CodecError = CodecError::Invalid("rkyv archive fails validation");

/// Validates the archive `bytes` hold in place if their address allows it: `None` if it does
/// not, and the archive must be copied to an aligned buffer.
fn access_in_place<T>(bytes: &[u8]) -> Option<Result<&T::Archived, CodecError>>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    let addr = bytes.as_ptr().addr();
    if addr.is_multiple_of(ARCHIVE_ALIGN) {
        // As aligned as any copy would be: a failure here is a failure anywhere.
        Some(rkyv::access::<T::Archived, rancor::Error>(bytes).map_err(|_| INVALID_ARCHIVE))
    } else if addr.is_multiple_of(align_of::<T::Archived>()) {
        // The root is aligned, but objects it points to may need more: try, and copy if not.
        rkyv::access::<T::Archived, rancor::Error>(bytes).ok().map(Ok)
    } else {
        None
    }
}

/// A copy of `bytes` at an address aligned for any archive.
fn aligned_copy(bytes: &[u8]) -> AlignedVec {
    let mut copy = AlignedVec::with_capacity(bytes.len());
    copy.extend_from_slice(bytes);
    copy
}

/// Reads the varint length that starts `bytes` and returns the archive after it, which must
/// fill the rest exactly.
fn archive_slot(mut bytes: &[u8]) -> Result<&[u8], CodecError> {
    let n = read_len(&mut bytes, 1)?;
    let archive = take(&mut bytes, n)?;
    if bytes.is_empty() {
        Ok(archive)
    } else {
        Err(CodecError::TrailingBytes(bytes.len()))
    }
}

impl<T> Serializer for RkyvSerializer<T>
where
    T: Archive + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>> + 'static,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>> + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    type Value = T;

    /// Appends the varint length and the archive of `value`, serialized into a fresh
    /// [`AlignedVec`] and copied.
    ///
    /// # Panics
    ///
    /// If rkyv fails to serialize the value (its `Serialize` reports an error: none of rkyv's
    /// own types do).
    fn write(&self, value: &T, out: &mut Vec<u8>) {
        let archive = match rkyv::to_bytes::<rancor::Error>(value) {
            Ok(archive) => archive,
            Err(e) => panic!("RkyvSerializer<{}>: rkyv cannot serialize the value: {e}", std::any::type_name::<T>()),
        };
        write_varint(archive.len() as u64, out);
        out.extend_from_slice(&archive);
    }

    fn read(&self, input: &mut &[u8]) -> Result<T, CodecError> {
        let n = read_len(input, 1)?;
        let bytes = take(input, n)?;
        let deserialize =
            |archived: &T::Archived| rkyv::deserialize::<T, rancor::Error>(archived).map_err(|_| INVALID_ARCHIVE);
        match access_in_place::<T>(bytes) {
            Some(archived) => deserialize(archived?),
            None => {
                let copy = aligned_copy(bytes);
                deserialize(rkyv::access::<T::Archived, rancor::Error>(&copy).map_err(|_| INVALID_ARCHIVE)?)
            }
        }
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot { identity: "eddy.rkyv".to_owned(), version: 1, config: self.tag.as_bytes().to_vec() }
    }
}

impl<T> BorrowSerializer for RkyvSerializer<T>
where
    T: Archive + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>> + 'static,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>> + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    type View<'a> = RkyvView<'a, T>;

    /// Views the archived value in `bytes`, which hold exactly what
    /// [`write`](Serializer::write) wrote (the length prefix included), after validating it.
    /// In place if the address allows (see [`RkyvSerializer`]), else in an aligned copy.
    fn view<'a>(&self, bytes: &'a [u8]) -> Result<RkyvView<'a, T>, CodecError> {
        let archive = archive_slot(bytes)?;
        let repr = match access_in_place::<T>(archive) {
            Some(archived) => Repr::InPlace(archived?),
            None => {
                let copy = aligned_copy(archive);
                rkyv::access::<T::Archived, rancor::Error>(&copy).map_err(|_| INVALID_ARCHIVE)?;
                Repr::Copied(copy)
            }
        };
        Ok(RkyvView { repr })
    }
}

/// A validated archived value, read from the bytes it was viewed in or from an aligned copy of
/// them: dereferences to `T::Archived`.
///
/// A view of a copy re-validates the copy on every dereference, since safe code cannot keep a
/// reference into a buffer it owns; dereference once (`let archived = &*view;`) and use that.
/// [`RkyvView::is_in_place`] tells which kind a view is.
pub struct RkyvView<'a, T: Archive> {
    repr: Repr<'a, T::Archived>,
}

enum Repr<'a, A> {
    InPlace(&'a A),
    Copied(AlignedVec),
}

impl<T: Archive> RkyvView<'_, T> {
    /// Whether the view reads the archive where it lies (`true`) or from an aligned copy.
    pub fn is_in_place(&self) -> bool {
        matches!(self.repr, Repr::InPlace(_))
    }
}

impl<T> Deref for RkyvView<'_, T>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    type Target = T::Archived;

    fn deref(&self) -> &T::Archived {
        match &self.repr {
            Repr::InPlace(archived) => archived,
            Repr::Copied(copy) => match rkyv::access::<T::Archived, rancor::Error>(copy) {
                Ok(archived) => archived,
                // The view owns the copy and never changes it, and it passed this same
                // validation when the view was made.
                Err(e) => unreachable!("a validated archive failed validation: {e}"),
            },
        }
    }
}

impl<T> fmt::Debug for RkyvView<'_, T>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>> + fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RkyvView").field("in_place", &self.is_in_place()).field("archived", &**self).finish()
    }
}

#[cfg(test)]
mod tests {
    use quickcheck::{quickcheck, Arbitrary, Gen};

    use super::super::builtin::tests::{check_eq, enc, fuzz, snapshot_round_trip, Res};
    use super::super::Compatibility;
    use super::*;

    #[derive(Debug, Clone, PartialEq, Archive, Serialize, Deserialize)]
    #[rkyv(compare(PartialEq), derive(Debug))]
    enum Kind {
        Click,
        View(u32),
        Purchase { item: String, cents: i64 },
    }

    #[derive(Debug, Clone, PartialEq, Archive, Serialize, Deserialize)]
    #[rkyv(compare(PartialEq), derive(Debug))]
    struct Event {
        id: u64,
        user: String,
        kind: Kind,
        tags: Vec<String>,
        extra: Option<Vec<u8>>,
        wide: u128,
    }

    /// Archived root aligned to 4 (a relative pointer and a length), pointing at 8-aligned data.
    #[derive(Debug, Clone, PartialEq, Archive, Serialize, Deserialize)]
    #[rkyv(compare(PartialEq), derive(Debug))]
    struct Longs(Vec<u64>);

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
                wide: u128::arbitrary(g),
            }
        }
    }

    fn event() -> Event {
        Event {
            id: 7,
            user: "ada".to_owned(),
            kind: Kind::Purchase { item: "book".to_owned(), cents: -3 },
            tags: vec!["a".to_owned(), "a longer tag than fits inline".to_owned()],
            extra: Some(vec![1, 2, 3]),
            wide: u128::MAX - 1,
        }
    }

    /// `encoded` placed in an aligned buffer so that the archive (after the length prefix)
    /// starts at `offset` modulo 16; returns the buffer and where `encoded` starts in it.
    fn placed(encoded: &[u8], offset: usize) -> (AlignedVec, usize) {
        // The varint's length (also when damaged bytes make it claim a wrong one).
        let prefix = encoded.iter().take(10).position(|b| b & 0x80 == 0).map_or(1, |i| i + 1);
        let start = (32 + offset - prefix) % 16 + 16;
        let mut buf = AlignedVec::new();
        buf.resize(start, 0xEE);
        buf.extend_from_slice(encoded);
        buf.extend_from_slice(&[0xEE; 3]);
        (buf, start)
    }

    #[test]
    fn round_trips() {
        fn events(a: Event, b: Event) -> Res {
            check_eq(&RkyvSerializer::new(), a, b)
        }
        fn longs(a: Vec<u64>, b: Vec<u64>) -> Res {
            check_eq(&RkyvSerializer::with_tag("test.Longs"), Longs(a), Longs(b))
        }
        fn plain(a: (u8, String, Option<i32>), b: (u8, String, Option<i32>)) -> Res {
            check_eq(&RkyvSerializer::new(), a, b)
        }
        quickcheck(events as fn(Event, Event) -> Res);
        quickcheck(longs as fn(Vec<u64>, Vec<u64>) -> Res);
        quickcheck(plain as fn((u8, String, Option<i32>), (u8, String, Option<i32>)) -> Res);
        check_eq(&RkyvSerializer::new(), event(), event()).unwrap();
        // Archives longer than one varint byte.
        let big = Longs((0..1000).collect());
        check_eq(&RkyvSerializer::new(), big.clone(), Longs(vec![])).unwrap();
    }

    #[test]
    fn reads_at_every_alignment() {
        let s = RkyvSerializer::<Event>::new();
        let value = event();
        let encoded = enc(&s, &value);
        for offset in 0..16 {
            let (buf, start) = placed(&encoded, offset);
            let slot = &buf[start..start + encoded.len()];
            assert_eq!(s.read_all(slot), Ok(value.clone()), "offset {offset}");
            let view = s.view(slot).unwrap();
            assert_eq!(*view, value, "offset {offset}");
            let archived: &ArchivedEvent = &view;
            assert_eq!(archived.id, 7);
            assert_eq!(archived.tags[1], "a longer tag than fits inline");
            assert_eq!(view.is_in_place(), offset == 0, "offset {offset}");
        }
    }

    #[test]
    fn views_in_place_when_aligned_and_copy_when_not() {
        let s = RkyvSerializer::<Longs>::new();
        let value = Longs(vec![1, u64::MAX, 3]);
        let encoded = enc(&s, &value);
        // 16-aligned: in place.
        let (buf, start) = placed(&encoded, 0);
        let view = s.view(&buf[start..start + encoded.len()]).unwrap();
        assert!(view.is_in_place());
        assert_eq!(*view, value);
        assert!(format!("{view:?}").contains("in_place: true"));
        // 8-aligned: still in place (nothing in it needs more).
        let (buf, start) = placed(&encoded, 8);
        assert!(s.view(&buf[start..start + encoded.len()]).unwrap().is_in_place());
        // Off by one: not aligned even for the root, so copied.
        let (buf, start) = placed(&encoded, 1);
        let view = s.view(&buf[start..start + encoded.len()]).unwrap();
        assert!(!view.is_in_place());
        assert_eq!(*view, value);
        assert_eq!(view.0.as_slice(), [1, u64::MAX, 3]);
        // 4-aligned: the root (align 4) is, the u64s (align 8) are not: tried, then copied.
        let (buf, start) = placed(&encoded, 4);
        let view = s.view(&buf[start..start + encoded.len()]).unwrap();
        assert!(!view.is_in_place());
        assert_eq!(*view, value);
        assert_eq!(s.read_all(&buf[start..start + encoded.len()]), Ok(value));
    }

    #[test]
    fn bad_slots_are_errors() {
        let s = RkyvSerializer::<Event>::new();
        let encoded = enc(&s, &event());
        assert_eq!(s.view(&encoded[..encoded.len() - 1]).err(), Some(CodecError::Truncated { needed: 1 }));
        let mut longer = encoded.clone();
        longer.push(0);
        assert_eq!(s.view(&longer).err(), Some(CodecError::TrailingBytes(1)));
        assert_eq!(s.view(&[0]).err(), Some(INVALID_ARCHIVE));
        assert_eq!(s.read_all(&[0]), Err(INVALID_ARCHIVE));
        let mut huge = Vec::new();
        write_varint(u64::MAX, &mut huge);
        assert!(matches!(s.read_all(&huge), Err(CodecError::Truncated { .. })));
        // A bad enum discriminant (the root, an `ArchivedEvent`, ends the archive).
        let zeros = vec![0xff; 200];
        let mut slot = Vec::new();
        write_varint(zeros.len() as u64, &mut slot);
        slot.extend_from_slice(&zeros);
        assert_eq!(s.read_all(&slot), Err(INVALID_ARCHIVE));
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let s = RkyvSerializer::<Event>::new();
        let encoded = enc(&s, &event());
        let mut errors = 0;
        for i in 0..encoded.len() {
            for x in [0x01, 0x10, 0x80, 0xff] {
                let mut damaged = encoded.clone();
                damaged[i] ^= x;
                for offset in [0, 1] {
                    let (buf, start) = placed(&damaged, offset);
                    let slot = &buf[start..start + damaged.len()];
                    let read = s.read_all(slot);
                    let view = s.view(slot);
                    assert_eq!(read.is_ok(), view.is_ok());
                    if let (Ok(value), Ok(view)) = (read, view) {
                        assert_eq!(*view, value);
                    } else {
                        errors += 1;
                    }
                }
            }
        }
        assert!(errors > 0);
        fn prop(bytes: Vec<u8>) -> bool {
            fuzz(&RkyvSerializer::<Event>::new(), &bytes)
                && fuzz(&RkyvSerializer::<Longs>::new(), &bytes)
                && RkyvSerializer::<Event>::new().view(&bytes).map_or(true, |v| v.id == v.id)
        }
        quickcheck(prop as fn(Vec<u8>) -> bool);
    }

    #[test]
    fn snapshots() {
        snapshot_round_trip(&RkyvSerializer::<Event>::new());
        snapshot_round_trip(&RkyvSerializer::<Event>::with_tag("test.Event"));
        let untagged = RkyvSerializer::<Event>::new().snapshot();
        assert_eq!(untagged, SerializerSnapshot::new("eddy.rkyv", 1));
        let tagged = RkyvSerializer::<Event>::with_tag("test.Event");
        assert_eq!(tagged.tag(), "test.Event");
        assert_eq!(tagged.snapshot().config, b"test.Event");
        assert_eq!(tagged.compatibility(&untagged), Compatibility::Incompatible);
        assert_eq!(RkyvSerializer::<Event>::default(), RkyvSerializer::new());
        assert!(format!("{tagged:?}").contains("test.Event"));
        fn assert_send_sync<S: Send + Sync + Clone + Default>() {}
        assert_send_sync::<RkyvSerializer<std::rc::Rc<u8>>>();
    }
}
