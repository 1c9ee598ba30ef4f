//! Serializers: how typed values become the bytes the store keeps, and how those bytes are
//! read back.
//!
//! Every serializer is self-delimiting: [`Serializer::write`] appends one value to a buffer and
//! [`Serializer::read`] consumes exactly one value from the front of a byte cursor. So encodings
//! concatenate without framing (a state key is `key group | state | key | namespace`), and no
//! encoding is a prefix of another (a prefix scan of one key's map entries never meets another
//! key's).
//!
//! A serializer describes itself by a [`SerializerSnapshot`] (a stable identity, a version and
//! configuration bytes) that is written with the data it produced, so that data can always be
//! read with the serializer that wrote it and a changed serializer can be checked against it
//! ([`Serializer::compatibility`]).
//!
//! | serializer | types | order-preserving | fixed length |
//! |---|---|---|---|
//! | [`U8`] ... [`U128`], [`I8`] ... [`I128`] | integers | yes (big-endian, sign bit flipped) | yes |
//! | [`F32`], [`F64`] | floats | yes (IEEE total order) | yes |
//! | [`Bool`], [`Char`], [`Unit`] | `bool`, `char`, `()` | yes | yes (`()`: 0 bytes) |
//! | [`Str`], [`Bytes`] | `String`, `Vec<u8>` | no (length-prefixed) | no |
//! | [`OptionOf`] | `Option<T>` | when `T`'s is (`None` first) | no |
//! | [`VecOf`] | `Vec<T>` | no | no |
//! | tuples of serializers | `(A, B, ...)` | when every part's is | when every part's is |
//! | [`SerdeSerializer`] | any `serde` type | no | no |
//! | [`RkyvSerializer`] | any `rkyv` type, read in place | no | no |
//!
//! [`Codec`] names the default serializer of a type, so that `ValueStateDescriptor::<u64>::new`
//! needs no serializer argument.
//!
//! # Evolving the types in state
//!
//! A restored state is registered again with the serializers the new version of the job
//! gives, and each is checked against the snapshot that wrote the data
//! ([`Serializer::compatibility`]), with one of Flink's four outcomes:
//!
//! - [`Compatibility::AsIs`]: the new serializer reads the old bytes;
//! - [`Compatibility::AfterMigration`]: the old bytes are read through the new serializer's
//!   [`old_reader`](Serializer::old_reader) (the old serializer rebuilt from its snapshot, and a
//!   conversion) and written again by the new one. Keyed state does this lazily: a record is
//!   converted when it is read (and written back), when compaction merges it, or when a
//!   savepoint is written, so a restore costs what it costs without a change, whatever the
//!   state's size; [`KeyedBackend::migrate`](crate::state::KeyedBackend::migrate) does it now.
//!   Operator and broadcast state, held in memory, are converted on registration;
//! - [`Compatibility::WithReconfiguredSerializer`]: the serializer
//!   [reconfigured](Serializer::reconfigured) from the old snapshot is used from then on;
//! - [`Compatibility::Incompatible`]: the registration fails with
//!   [`Error::IncompatibleSerializer`](crate::Error::IncompatibleSerializer), naming the state,
//!   the part and both serializers; nothing is changed, and the job can try again.
//!
//! Serializers whose bytes are part of record keys (the key, a namespace, a map's user key)
//! must read the old bytes as is or reconfigured: a change of those bytes would move keys to
//! other key groups and break lookups, and is refused online.
//!
//! Ways to evolve a type, none of them needing the old code to stay around but the conversion:
//!
//! - [`VersionedSerde`]: a chain of `serde` types, one conversion per step (fields added,
//!   removed, renamed or changed in type, in user code);
//! - `AvroSerializer` (feature `avro`): the writer's schema is stored in the snapshot and
//!   resolved against the reader's by Avro's rules;
//! - the built-ins widen without user code: an integer into a wider one that holds its every
//!   value, `f32` into `f64`, integers into floats that hold them exactly, `T` into
//!   `Option<T>`, and options, vectors and tuples through their parts;
//! - any serializer, through [`Serializer::compatibility`], [`Serializer::old_reader`] and
//!   [`Serializer::reconfigured`]; composites call [`part_reader`] for their parts.

/// The constructors and common traits of a serializer of any `T` that carries only a tag: a
/// stable name of the encoded type that goes into its snapshot.
macro_rules! tagged_serializer {
    ($name:ident) => {
        impl<T> $name<T> {
            /// A serializer without a tag.
            pub const fn new() -> Self {
                $name { tag: Cow::Borrowed(""), _type: PhantomData }
            }

            /// A serializer whose snapshot carries `tag`, a stable name of the encoded type
            /// (`"my.app.Event"`): data written under one tag is incompatible with serializers
            /// of another.
            pub fn with_tag(tag: impl Into<Cow<'static, str>>) -> Self {
                $name { tag: tag.into(), _type: PhantomData }
            }

            /// The tag (empty if none was given).
            pub fn tag(&self) -> &str {
                &self.tag
            }
        }

        impl<T> Default for $name<T> {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<T> Clone for $name<T> {
            fn clone(&self) -> Self {
                $name { tag: self.tag.clone(), _type: PhantomData }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("type", &std::any::type_name::<T>())
                    .field("tag", &self.tag)
                    .finish()
            }
        }

        impl<T> PartialEq for $name<T> {
            fn eq(&self, other: &Self) -> bool {
                self.tag == other.tag
            }
        }

        impl<T> Eq for $name<T> {}
    };
}
pub(crate) use tagged_serializer;

#[cfg(feature = "avro")]
mod avro;
mod builtin;
mod rkyv_codec;
mod serde_codec;
mod versioned;

#[cfg(feature = "avro")]
pub use avro::AvroSerializer;
pub use builtin::*;
pub use rkyv_codec::{RkyvSerializer, RkyvView};
pub use serde_codec::SerdeSerializer;
pub use versioned::VersionedSerde;

use std::fmt;
use std::sync::Arc;

/// Why bytes could not be read as a value. The bytes were checksummed on disk, so this means
/// they were written by another serializer (or a bug): it never comes from random damage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes end before the value does.
    #[error("value truncated: needed {needed} more bytes")]
    Truncated {
        /// Bytes still needed.
        needed: usize,
    },
    /// The bytes hold something the serializer never writes.
    #[error("invalid encoding: {0}")]
    Invalid(&'static str),
    /// Bytes are left over after a value that should fill its slot.
    #[error("{0} bytes left after the value")]
    TrailingBytes(usize),
    /// A value written by an old serializer was read, but converting it to the new type
    /// failed (a conversion of a [`VersionedSerde`] chain or a user's [`OldReader`] said so).
    #[error("migration failed: {0}")]
    Migration(String),
}

/// A serializer's description of itself, stored with the data it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SerializerSnapshot {
    /// A stable name of the serializer's kind (`"eddy.u64"`, `"eddy.serde.postcard"`, ...).
    pub identity: String,
    /// The version of that serializer's encoding; a reader gets it back to choose how to read.
    pub version: u32,
    /// Whatever configuration the encoding depends on (for composites: the parts' snapshots,
    /// see [`SerializerSnapshot::compose`]).
    pub config: Vec<u8>,
}

impl SerializerSnapshot {
    /// A snapshot without configuration.
    pub fn new(identity: impl Into<String>, version: u32) -> Self {
        SerializerSnapshot { identity: identity.into(), version, config: Vec::new() }
    }

    /// A composite serializer's snapshot: its parts' snapshots become the configuration.
    pub fn compose(identity: impl Into<String>, version: u32, parts: &[SerializerSnapshot]) -> Self {
        let mut config = Vec::new();
        for p in parts {
            p.encode(&mut config);
        }
        SerializerSnapshot { identity: identity.into(), version, config }
    }

    /// Appends the snapshot's encoding: `identity_len u16 | identity | version u32 |
    /// config_len u32 | config`, little-endian.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let id = self.identity.as_bytes();
        out.extend_from_slice(&(id.len().min(u16::MAX as usize) as u16).to_le_bytes());
        out.extend_from_slice(&id[..id.len().min(u16::MAX as usize)]);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.config.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.config);
    }

    /// The parts' snapshots of a composite serializer's snapshot (the inverse of
    /// [`compose`](Self::compose)).
    pub fn parts(&self) -> Result<Vec<SerializerSnapshot>, CodecError> {
        let mut config = &self.config[..];
        let mut parts = Vec::new();
        while !config.is_empty() {
            parts.push(SerializerSnapshot::decode(&mut config)?);
        }
        Ok(parts)
    }

    /// Reads one snapshot from the front of `input` (untrusted bytes).
    pub fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        let id_len = u16::from_le_bytes(take_array(input)?) as usize;
        let id = take(input, id_len)?;
        let identity = std::str::from_utf8(id).map_err(|_| CodecError::Invalid("identity is not UTF-8"))?.to_owned();
        let version = u32::from_le_bytes(take_array(input)?);
        let config_len = u32::from_le_bytes(take_array(input)?) as usize;
        let config = take(input, config_len)?.to_vec();
        Ok(SerializerSnapshot { identity, version, config })
    }
}

/// How data written by an old serializer relates to the serializer now registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compatibility {
    /// The new serializer reads the old bytes as they are.
    AsIs,
    /// The old bytes must be read with the old serializer and rewritten with the new one.
    AfterMigration,
    /// The new serializer reads the old bytes once it is reconfigured from the old snapshot.
    WithReconfiguredSerializer,
    /// The old data cannot be read by the new serializer at all.
    Incompatible,
}

impl Compatibility {
    /// The compatibility of a composite from that of two of its parts: incompatible if either
    /// is, as is if both are, else after migration (a part that needs reconfiguring makes the
    /// composite migrate: it reads the old bytes through the reconfigured part and writes new
    /// ones).
    #[must_use]
    pub fn and(self, other: Compatibility) -> Compatibility {
        use Compatibility::*;
        match (self, other) {
            (Incompatible, _) | (_, Incompatible) => Incompatible,
            (AsIs, AsIs) => AsIs,
            _ => AfterMigration,
        }
    }
}

/// Reads a value that an old serializer wrote as a value of the serializer `S` registered now:
/// the read-old half of a migration (the new serializer writes the value back). Cheap to
/// clone.
///
/// It gets the serializer registered now as its first argument, so that a composite's reader
/// can hand each part its own part, and a part read as is needs nothing of its own.
pub struct OldReader<S: Serializer> {
    read: ReadOld<S>,
}

/// The function inside an [`OldReader`].
pub type ReadOld<S> =
    Arc<dyn Fn(&S, &mut &[u8]) -> Result<<S as Serializer>::Value, CodecError> + Send + Sync + 'static>;

impl<S: Serializer> Clone for OldReader<S> {
    fn clone(&self) -> Self {
        OldReader { read: self.read.clone() }
    }
}

impl<S: Serializer> fmt::Debug for OldReader<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OldReader").field("type", &std::any::type_name::<S::Value>()).finish()
    }
}

impl<S: Serializer> OldReader<S> {
    /// A reader that reads one old value from the front of its input and converts it. It must
    /// not panic on any input, as [`Serializer::read`] must not.
    pub fn new(read: impl Fn(&S, &mut &[u8]) -> Result<S::Value, CodecError> + Send + Sync + 'static) -> Self {
        OldReader { read: Arc::new(read) }
    }

    /// The reader of old bytes that the new serializer reads as they are.
    pub fn as_is() -> Self {
        OldReader::new(|s: &S, input: &mut &[u8]| s.read(input))
    }

    /// Reads one old value from the front of `input` with `new` the serializer registered now.
    #[inline]
    pub fn read(&self, new: &S, input: &mut &[u8]) -> Result<S::Value, CodecError> {
        (self.read)(new, input)
    }

    /// Reads an old value that must fill `bytes` exactly.
    pub fn read_all(&self, new: &S, mut bytes: &[u8]) -> Result<S::Value, CodecError> {
        let v = self.read(new, &mut bytes)?;
        if bytes.is_empty() {
            Ok(v)
        } else {
            Err(CodecError::TrailingBytes(bytes.len()))
        }
    }
}

/// How `new` reads what the serializer described by `old` wrote, when it can: as is, through
/// its [`old_reader`](Serializer::old_reader), or through the serializer it
/// [reconfigures](Serializer::reconfigured) from `old`. `None` when they are incompatible (or a
/// serializer claims a migration it gives no reader for). Composites call this for their parts.
pub fn part_reader<S: Serializer>(new: &S, old: &SerializerSnapshot) -> Option<OldReader<S>> {
    match new.compatibility(old) {
        Compatibility::AsIs => Some(OldReader::as_is()),
        Compatibility::AfterMigration => new.old_reader(old),
        Compatibility::WithReconfiguredSerializer => {
            let r = new.reconfigured(old)?;
            Some(OldReader::new(move |_: &S, input: &mut &[u8]| r.read(input)))
        }
        Compatibility::Incompatible => None,
    }
}

/// Turns values of one type into self-delimiting bytes and back.
///
/// Implementations must be deterministic (equal values give equal bytes: keys are compared as
/// bytes) and must never panic on any input to [`read`](Serializer::read).
pub trait Serializer: Send + Sync + 'static {
    /// The type this serializer reads and writes.
    type Value;

    /// Appends the encoding of `value` to `out`.
    fn write(&self, value: &Self::Value, out: &mut Vec<u8>);

    /// Reads one value from the front of `input` and advances `input` past it.
    fn read(&self, input: &mut &[u8]) -> Result<Self::Value, CodecError>;

    /// The serializer's description of itself.
    fn snapshot(&self) -> SerializerSnapshot;

    /// `Some(n)` if every value encodes to exactly `n` bytes.
    fn fixed_len(&self) -> Option<usize> {
        None
    }

    /// Whether comparing encodings as bytes orders them as the values are ordered.
    fn order_preserving(&self) -> bool {
        false
    }

    /// How data written by a serializer described by `old` can be read by this one. The
    /// default: as is when identity, version and configuration all match, else incompatible.
    fn compatibility(&self, old: &SerializerSnapshot) -> Compatibility {
        if *old == self.snapshot() {
            Compatibility::AsIs
        } else {
            Compatibility::Incompatible
        }
    }

    /// For a serializer that answers [`Compatibility::AfterMigration`] to `old`: how to read
    /// what the serializer described by `old` wrote (the old serializer rebuilt from its
    /// snapshot, Flink's `restoreSerializer`, with a conversion behind it). The default: none.
    ///
    /// ```
    /// use eddy::codec::{CodecError, Compatibility, OldReader, Serializer, SerializerSnapshot, F64, U32};
    ///
    /// /// Temperatures in tenths of a degree, stored as `f64` since version 2; version 1 stored
    /// /// them as `u32`.
    /// struct Tenths;
    ///
    /// impl Serializer for Tenths {
    ///     type Value = f64;
    ///     fn write(&self, v: &f64, out: &mut Vec<u8>) {
    ///         F64.write(v, out)
    ///     }
    ///     fn read(&self, input: &mut &[u8]) -> Result<f64, CodecError> {
    ///         F64.read(input)
    ///     }
    ///     fn snapshot(&self) -> SerializerSnapshot {
    ///         SerializerSnapshot::new("my.tenths", 2)
    ///     }
    ///     fn compatibility(&self, old: &SerializerSnapshot) -> Compatibility {
    ///         match (old.identity.as_str(), old.version) {
    ///             ("my.tenths", 2) => Compatibility::AsIs,
    ///             ("my.tenths", 1) => Compatibility::AfterMigration,
    ///             _ => Compatibility::Incompatible,
    ///         }
    ///     }
    ///     fn old_reader(&self, old: &SerializerSnapshot) -> Option<OldReader<Self>> {
    ///         (old.version == 1).then(|| OldReader::new(|_: &Tenths, input: &mut &[u8]| Ok(f64::from(U32.read(input)?) / 10.0)))
    ///     }
    /// }
    ///
    /// let mut old = Vec::new();
    /// U32.write(&215, &mut old);
    /// let reader = Tenths.old_reader(&SerializerSnapshot::new("my.tenths", 1)).unwrap();
    /// assert_eq!(reader.read_all(&Tenths, &old), Ok(21.5));
    /// ```
    fn old_reader(&self, old: &SerializerSnapshot) -> Option<OldReader<Self>>
    where
        Self: Sized,
    {
        let _ = old;
        None
    }

    /// For a serializer that answers [`Compatibility::WithReconfiguredSerializer`] to `old`:
    /// the serializer, configured from `old`, that reads the old bytes as they are and is used
    /// from then on in place of this one. The default: none.
    fn reconfigured(&self, old: &SerializerSnapshot) -> Option<Self>
    where
        Self: Sized,
    {
        let _ = old;
        None
    }

    /// Reads a value that must fill `bytes` exactly.
    fn read_all(&self, mut bytes: &[u8]) -> Result<Self::Value, CodecError> {
        let v = self.read(&mut bytes)?;
        if bytes.is_empty() {
            Ok(v)
        } else {
            Err(CodecError::TrailingBytes(bytes.len()))
        }
    }
}

/// A serializer whose reads can borrow from the bytes instead of building an owned value.
pub trait BorrowSerializer: Serializer {
    /// The borrowed view of a value.
    type View<'a>;

    /// Views the value that fills `bytes` exactly, validating it first.
    fn view<'a>(&self, bytes: &'a [u8]) -> Result<Self::View<'a>, CodecError>;
}

/// Types with a default serializer.
pub trait Codec: Sized {
    /// The serializer used when none is named.
    type Serializer: Serializer<Value = Self> + Default + Clone;
}

/// Takes `n` bytes from the front of `input`.
#[inline]
pub(crate) fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], CodecError> {
    if input.len() < n {
        return Err(CodecError::Truncated { needed: n - input.len() });
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

/// Takes `N` bytes from the front of `input` as an array.
#[inline]
pub(crate) fn take_array<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], CodecError> {
    let mut a = [0u8; N];
    a.copy_from_slice(take(input, N)?);
    Ok(a)
}

/// Appends `v` as an unsigned LEB128 varint.
#[inline]
pub(crate) fn write_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 varint of at most 10 bytes.
#[inline]
pub(crate) fn read_varint(input: &mut &[u8]) -> Result<u64, CodecError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let [b] = take_array::<1>(input)?;
        if i == 9 && b > 1 {
            return Err(CodecError::Invalid("varint overflows 64 bits"));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CodecError::Invalid("varint longer than 10 bytes"))
}

/// Reads a varint length and checks it against what is left, so that no decoder allocates
/// more than its input could justify.
#[inline]
pub(crate) fn read_len(input: &mut &[u8], min_elem_len: usize) -> Result<usize, CodecError> {
    let n = read_varint(input)?;
    let n = usize::try_from(n).map_err(|_| CodecError::Invalid("length exceeds the address space"))?;
    if n.saturating_mul(min_elem_len) > input.len() {
        return Err(CodecError::Truncated { needed: n.saturating_mul(min_elem_len) - input.len() });
    }
    Ok(n)
}

#[cfg(test)]
mod evolution_tests {
    use super::*;

    /// Writes `v` with `old` and reads it back through `new`'s reader of `old`'s data.
    fn migrate<O: Serializer, N: Serializer>(old: &O, new: &N, v: &O::Value) -> Result<N::Value, CodecError> {
        let mut bytes = Vec::new();
        old.write(v, &mut bytes);
        let reader = part_reader(new, &old.snapshot()).ok_or(CodecError::Invalid("no reader"))?;
        reader.read_all(new, &bytes)
    }

    #[test]
    fn integers_and_floats_widen_exactly() {
        assert_eq!(U64.compatibility(&U32.snapshot()), Compatibility::AfterMigration);
        assert_eq!(migrate(&U32, &U64, &u32::MAX), Ok(u64::from(u32::MAX)));
        assert_eq!(migrate(&I8, &I64, &-128), Ok(-128));
        assert_eq!(migrate(&I32, &I128, &i32::MIN), Ok(i128::from(i32::MIN)));
        assert_eq!(migrate(&U64, &I128, &u64::MAX), Ok(i128::from(u64::MAX)));
        assert_eq!(migrate(&U16, &I32, &65535), Ok(65535));
        assert_eq!(migrate(&F32, &F64, &-1.5), Ok(-1.5));
        assert_eq!(migrate(&I32, &F64, &i32::MIN), Ok(f64::from(i32::MIN)));
        assert_eq!(migrate(&U16, &F32, &65535), Ok(65535.0));
        // Narrowing, sign loss and inexact floats are refused.
        for (new, old) in [
            (U32.compatibility(&U64.snapshot()), "u64 into u32"),
            (U64.compatibility(&I8.snapshot()), "i8 into u64"),
            (I64.compatibility(&U64.snapshot()), "u64 into i64"),
            (F32.compatibility(&U32.snapshot()), "u32 into f32"),
            (F32.compatibility(&F64.snapshot()), "f64 into f32"),
            (F64.compatibility(&I64.snapshot()), "i64 into f64"),
            (U64.compatibility(&Str.snapshot()), "string into u64"),
        ] {
            assert_eq!(new, Compatibility::Incompatible, "{old}");
        }
        assert_eq!(U64.compatibility(&U64.snapshot()), Compatibility::AsIs);
    }

    #[test]
    fn composites_migrate_through_their_parts() {
        assert_eq!(OptionOf(U64).compatibility(&U32.snapshot()), Compatibility::AfterMigration);
        assert_eq!(migrate(&U64, &OptionOf(U64), &9), Ok(Some(9)));
        assert_eq!(migrate(&OptionOf(U8), &OptionOf(U64), &None), Ok(None));
        assert_eq!(migrate(&OptionOf(U8), &OptionOf(U64), &Some(200)), Ok(Some(200)));
        assert_eq!(OptionOf(U64).compatibility(&OptionOf(U64).snapshot()), Compatibility::AsIs);
        assert_eq!(OptionOf(U8).compatibility(&OptionOf(U64).snapshot()), Compatibility::Incompatible);
        assert_eq!(migrate(&VecOf(I16), &VecOf(I64), &vec![-1, 2, 3]), Ok(vec![-1, 2, 3]));
        assert_eq!(
            migrate(&(U32, Str, F32), &(U64, Str, OptionOf(F64)), &(1, "a".into(), 2.5)),
            Ok((1, "a".into(), Some(2.5)))
        );
        assert_eq!((U64, Str).compatibility(&(U64, Str).snapshot()), Compatibility::AsIs);
        assert_eq!((U64, Str).compatibility(&(U64, Str, Str).snapshot()), Compatibility::Incompatible);
        assert_eq!((U64, U8).compatibility(&(U64, U16).snapshot()), Compatibility::Incompatible);
        // Damaged old bytes give errors, never panics.
        let reader = part_reader(&VecOf(U64), &VecOf(U32).snapshot()).unwrap();
        assert!(reader.read_all(&VecOf(U64), &[0xff, 0xff, 0xff, 0xff, 0x0f, 1]).is_err());
        assert!(reader.read_all(&VecOf(U64), &[2, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn snapshot_parts_invert_compose() {
        let s = (U8, Str).snapshot();
        assert_eq!(s.parts(), Ok(vec![U8.snapshot(), Str.snapshot()]));
        let mut damaged = s.clone();
        damaged.config.pop();
        assert!(damaged.parts().is_err());
    }
}
