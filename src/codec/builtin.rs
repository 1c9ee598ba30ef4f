//! The built-in serializers: integers, floats, `bool`, `char`, `()`, strings, byte strings, and
//! the composites [`OptionOf`], [`VecOf`] and tuples of serializers.
//!
//! # Encodings
//!
//! | serializer | encoding |
//! |---|---|
//! | [`U8`] ... [`U128`] | big-endian |
//! | [`I8`] ... [`I128`] | big-endian with the sign bit flipped (`i32::MIN` is `00 00 00 00`) |
//! | [`F32`], [`F64`] | big-endian bits; negative: all bits flipped, else the sign bit flipped |
//! | [`Bool`] | one byte, `0` or `1` |
//! | [`Char`] | the scalar value, big-endian `u32` |
//! | [`Unit`] | nothing |
//! | [`Str`], [`Bytes`] | LEB128 varint length, then the bytes (UTF-8 for [`Str`]) |
//! | [`OptionOf`] | `0`, or `1` then the value |
//! | [`VecOf`] | LEB128 varint count, then the elements |
//! | `(A, B, ...)` | the parts one after another |
//!
//! # Order
//!
//! Every serializer here is self-delimiting, and a deterministic self-delimiting encoding is
//! prefix-free: no value's encoding is a proper prefix of another's (if `enc(x)` were a prefix
//! of `enc(y)`, reading `enc(y)` would stop after `enc(x)` and give `x`). Two distinct
//! encodings therefore differ at some byte within both, and that byte decides their order.
//! Hence:
//!
//! - a tuple of order-preserving serializers is order-preserving, in the lexicographic order
//!   of Rust's tuples (the first part that differs decides). In particular a tuple of
//!   fixed-length order-preserving parts (integers, floats, `bool`, `char`, `()`) is, which is
//!   what composite state keys need;
//! - [`OptionOf`] of an order-preserving serializer is order-preserving in `Option`'s order
//!   (`None` first, tag `0` < `1`);
//! - [`VecOf`], [`Str`] and [`Bytes`] are not: the count comes first, so `[9]` sorts before
//!   `[1, 2]`.

use std::mem::size_of;

use super::{
    part_reader, read_len, read_varint, take, write_varint, BorrowSerializer, Codec, CodecError, Compatibility,
    OldReader, Serializer, SerializerSnapshot,
};

/// Takes `N` bytes from the front of `input` as an array: one bounds check, no loop.
#[inline(always)]
fn take_chunk<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], CodecError> {
    match input.split_first_chunk::<N>() {
        Some((head, rest)) => {
            *input = rest;
            Ok(*head)
        }
        None => Err(CodecError::Truncated { needed: N - input.len() }),
    }
}

/// At most this many bytes are reserved up front for a decoded vector, whatever count its
/// (untrusted) encoding claims; the vector grows past it only as elements actually decode.
const MAX_PREALLOC_BYTES: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Widening conversions

/// Whether an integer is signed, and its width in bytes.
type IntShape = (bool, usize);

/// The shape of the built-in integer serializer that wrote `old` (version 1, no configuration).
fn int_shape(old: &SerializerSnapshot) -> Option<IntShape> {
    if old.version != 1 || !old.config.is_empty() {
        return None;
    }
    Some(match old.identity.as_str() {
        "eddy.u8" => (false, 1),
        "eddy.u16" => (false, 2),
        "eddy.u32" => (false, 4),
        "eddy.u64" => (false, 8),
        "eddy.u128" => (false, 16),
        "eddy.i8" => (true, 1),
        "eddy.i16" => (true, 2),
        "eddy.i32" => (true, 4),
        "eddy.i64" => (true, 8),
        "eddy.i128" => (true, 16),
        _ => return None,
    })
}

/// The shape of the integer that `old` wrote if every such integer has an exact value of an
/// integer of shape `to` (an integer of at most 64 bits into a wider one of a sign that holds
/// it), or as a float of `mantissa` bits when `to` is `None`.
fn int_widening(old: &SerializerSnapshot, to: Option<IntShape>, mantissa: u32) -> Option<IntShape> {
    let from = int_shape(old)?;
    let fits = match to {
        Some((signed, bytes)) => from.1 < bytes && (signed || !from.0),
        None => (from.1 * 8) as u32 <= mantissa,
    };
    fits.then_some(from)
}

/// Reads an integer of at most 64 bits, as the built-in of shape `from` wrote it.
fn read_int(from: IntShape, input: &mut &[u8]) -> Result<i128, CodecError> {
    let (signed, bytes) = from;
    let raw = take(input, bytes)?;
    let bits = bytes as u32 * 8;
    let v = raw.iter().fold(0u128, |acc, &b| (acc << 8) | u128::from(b));
    if !signed {
        return i128::try_from(v).map_err(|_| CodecError::Invalid("integer too wide to widen"));
    }
    // Undo the flipped sign bit, then sign-extend.
    let v = v ^ (1u128 << (bits - 1));
    let shift = 128 - bits;
    Ok(((v << shift).cast_signed()) >> shift)
}

/// The compatibility of a built-in number serializer with `old`: as is for its own snapshot,
/// after migration for a number it widens, else incompatible.
fn number_compatibility(own: &SerializerSnapshot, old: &SerializerSnapshot, widens: bool) -> Compatibility {
    if old == own {
        Compatibility::AsIs
    } else if widens {
        Compatibility::AfterMigration
    } else {
        Compatibility::Incompatible
    }
}

// ---------------------------------------------------------------------------------------------
// Integers

macro_rules! unsigned_serializer {
    ($name:ident, $t:ty, $id:literal) => {
        #[doc = concat!("`", stringify!($t), "` as ", stringify!($t), "::BITS / 8 big-endian bytes; order-preserving. Identity `\"", $id, "\"`, version 1.")]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;

        impl $name {
            const SHAPE: IntShape = (false, size_of::<$t>());
        }

        impl Serializer for $name {
            type Value = $t;

            #[inline]
            fn write(&self, value: &$t, out: &mut Vec<u8>) {
                out.extend_from_slice(&value.to_be_bytes());
            }

            #[inline]
            fn read(&self, input: &mut &[u8]) -> Result<$t, CodecError> {
                Ok(<$t>::from_be_bytes(take_chunk(input)?))
            }

            fn snapshot(&self) -> SerializerSnapshot {
                SerializerSnapshot::new($id, 1)
            }

            /// As is for its own snapshot; after migration for a narrower integer whose every
            /// value it holds (`u32` into `u64` or `i64`, `i16` into `i32`; not `i8` into `u16`).
            fn compatibility(&self, old: &SerializerSnapshot) -> Compatibility {
                number_compatibility(&self.snapshot(), old, int_widening(old, Some(Self::SHAPE), 0).is_some())
            }

            fn old_reader(&self, old: &SerializerSnapshot) -> Option<OldReader<Self>> {
                let from = int_widening(old, Some(Self::SHAPE), 0)?;
                Some(OldReader::new(move |_: &Self, input: &mut &[u8]| {
                    <$t>::try_from(read_int(from, input)?).map_err(|_| CodecError::Invalid("integer out of range"))
                }))
            }

            #[inline]
            fn fixed_len(&self) -> Option<usize> {
                Some(size_of::<$t>())
            }

            #[inline]
            fn order_preserving(&self) -> bool {
                true
            }
        }

        impl Codec for $t {
            type Serializer = $name;
        }
    };
}

macro_rules! signed_serializer {
    ($name:ident, $t:ty, $u:ty, $id:literal) => {
        #[doc = concat!("`", stringify!($t), "` as big-endian bytes with the sign bit flipped, so that byte order is numeric order. Identity `\"", $id, "\"`, version 1.")]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;

        impl $name {
            const SIGN: $u = 1 << (<$u>::BITS - 1);
            const SHAPE: IntShape = (true, size_of::<$t>());
        }

        impl Serializer for $name {
            type Value = $t;

            #[inline]
            fn write(&self, value: &$t, out: &mut Vec<u8>) {
                out.extend_from_slice(&(value.cast_unsigned() ^ Self::SIGN).to_be_bytes());
            }

            #[inline]
            fn read(&self, input: &mut &[u8]) -> Result<$t, CodecError> {
                Ok((<$u>::from_be_bytes(take_chunk(input)?) ^ Self::SIGN).cast_signed())
            }

            fn snapshot(&self) -> SerializerSnapshot {
                SerializerSnapshot::new($id, 1)
            }

            /// As is for its own snapshot; after migration for a narrower integer whose every
            /// value it holds (`u32` into `u64` or `i64`, `i16` into `i32`; not `i8` into `u16`).
            fn compatibility(&self, old: &SerializerSnapshot) -> Compatibility {
                number_compatibility(&self.snapshot(), old, int_widening(old, Some(Self::SHAPE), 0).is_some())
            }

            fn old_reader(&self, old: &SerializerSnapshot) -> Option<OldReader<Self>> {
                let from = int_widening(old, Some(Self::SHAPE), 0)?;
                Some(OldReader::new(move |_: &Self, input: &mut &[u8]| {
                    <$t>::try_from(read_int(from, input)?).map_err(|_| CodecError::Invalid("integer out of range"))
                }))
            }

            #[inline]
            fn fixed_len(&self) -> Option<usize> {
                Some(size_of::<$t>())
            }

            #[inline]
            fn order_preserving(&self) -> bool {
                true
            }
        }

        impl Codec for $t {
            type Serializer = $name;
        }
    };
}

unsigned_serializer!(U8, u8, "eddy.u8");
unsigned_serializer!(U16, u16, "eddy.u16");
unsigned_serializer!(U32, u32, "eddy.u32");
unsigned_serializer!(U64, u64, "eddy.u64");
unsigned_serializer!(U128, u128, "eddy.u128");
signed_serializer!(I8, i8, u8, "eddy.i8");
signed_serializer!(I16, i16, u16, "eddy.i16");
signed_serializer!(I32, i32, u32, "eddy.i32");
signed_serializer!(I64, i64, u64, "eddy.i64");
signed_serializer!(I128, i128, u128, "eddy.i128");

// ---------------------------------------------------------------------------------------------
// Floats

macro_rules! float_serializer {
    ($name:ident, $t:ty, $u:ty, $id:literal, $mantissa:literal, $widens_f32:literal) => {
        #[doc = concat!("`", stringify!($t), "` in IEEE 754 total order (`", stringify!($t), "::total_cmp`): the bits, all flipped if the sign bit is set, else with the sign bit flipped, big-endian. Bit-exact: `-0.0` and every NaN payload come back as written. Identity `\"", $id, "\"`, version 1.")]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;

        impl $name {
            const SIGN: $u = 1 << (<$u>::BITS - 1);
            /// The bits of the mantissa, with the implicit one.
            const MANTISSA: u32 = $mantissa;

            /// Whether `old` is an `f32` that this serializer widens.
            fn from_float(old: &SerializerSnapshot) -> bool {
                $widens_f32 && *old == SerializerSnapshot::new("eddy.f32", 1)
            }

            /// Negative (sign bit set): flip every bit; else flip the sign bit. Branch-free.
            #[inline(always)]
            fn to_key(bits: $u) -> $u {
                bits ^ ((bits.cast_signed() >> (<$u>::BITS - 1)).cast_unsigned() | Self::SIGN)
            }

            /// The inverse of `to_key`: a key with the top bit clear came from a negative.
            #[inline(always)]
            fn from_key(key: $u) -> $u {
                key ^ (((!key).cast_signed() >> (<$u>::BITS - 1)).cast_unsigned() | Self::SIGN)
            }
        }

        impl Serializer for $name {
            type Value = $t;

            #[inline]
            fn write(&self, value: &$t, out: &mut Vec<u8>) {
                out.extend_from_slice(&Self::to_key(value.to_bits()).to_be_bytes());
            }

            #[inline]
            fn read(&self, input: &mut &[u8]) -> Result<$t, CodecError> {
                Ok(<$t>::from_bits(Self::from_key(<$u>::from_be_bytes(take_chunk(input)?))))
            }

            fn snapshot(&self) -> SerializerSnapshot {
                SerializerSnapshot::new($id, 1)
            }

            /// As is for its own snapshot; after migration for a narrower float and for
            /// integers whose every value it holds exactly (`f32` and 32-bit integers into
            /// `f64`; 16-bit integers into `f32`).
            fn compatibility(&self, old: &SerializerSnapshot) -> Compatibility {
                let widens = Self::from_float(old) || int_widening(old, None, Self::MANTISSA).is_some();
                number_compatibility(&self.snapshot(), old, widens)
            }

            fn old_reader(&self, old: &SerializerSnapshot) -> Option<OldReader<Self>> {
                if Self::from_float(old) {
                    return Some(OldReader::new(|_: &Self, input: &mut &[u8]| F32.read(input).map(<$t>::from)));
                }
                let from = int_widening(old, None, Self::MANTISSA)?;
                // Exact: the integer has no more bits than the mantissa.
                Some(OldReader::new(move |_: &Self, input: &mut &[u8]| read_int(from, input).map(|v| v as $t)))
            }

            #[inline]
            fn fixed_len(&self) -> Option<usize> {
                Some(size_of::<$t>())
            }

            #[inline]
            fn order_preserving(&self) -> bool {
                true
            }
        }

        impl Codec for $t {
            type Serializer = $name;
        }
    };
}

float_serializer!(F32, f32, u32, "eddy.f32", 24, false);
float_serializer!(F64, f64, u64, "eddy.f64", 53, true);

// ---------------------------------------------------------------------------------------------
// bool, char, ()

/// `bool` as one byte, `0` or `1`; any other byte is [`CodecError::Invalid`]. Order-preserving.
/// Identity `"eddy.bool"`, version 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bool;

impl Serializer for Bool {
    type Value = bool;

    #[inline]
    fn write(&self, value: &bool, out: &mut Vec<u8>) {
        out.push(u8::from(*value));
    }

    #[inline]
    fn read(&self, input: &mut &[u8]) -> Result<bool, CodecError> {
        match take_chunk::<1>(input)? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(CodecError::Invalid("bool byte is neither 0 nor 1")),
        }
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot::new("eddy.bool", 1)
    }

    #[inline]
    fn fixed_len(&self) -> Option<usize> {
        Some(1)
    }

    #[inline]
    fn order_preserving(&self) -> bool {
        true
    }
}

impl Codec for bool {
    type Serializer = Bool;
}

/// `char` as its scalar value, a big-endian `u32`; a surrogate or a value above `0x10FFFF` is
/// [`CodecError::Invalid`]. Order-preserving. Identity `"eddy.char"`, version 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Char;

impl Serializer for Char {
    type Value = char;

    #[inline]
    fn write(&self, value: &char, out: &mut Vec<u8>) {
        out.extend_from_slice(&u32::from(*value).to_be_bytes());
    }

    #[inline]
    fn read(&self, input: &mut &[u8]) -> Result<char, CodecError> {
        char::from_u32(u32::from_be_bytes(take_chunk(input)?)).ok_or(CodecError::Invalid("not a Unicode scalar value"))
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot::new("eddy.char", 1)
    }

    #[inline]
    fn fixed_len(&self) -> Option<usize> {
        Some(4)
    }

    #[inline]
    fn order_preserving(&self) -> bool {
        true
    }
}

impl Codec for char {
    type Serializer = Char;
}

/// `()` as no bytes at all (fixed length 0). Order-preserving. Identity `"eddy.unit"`,
/// version 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unit;

impl Serializer for Unit {
    type Value = ();

    #[inline]
    fn write(&self, _value: &(), _out: &mut Vec<u8>) {}

    #[inline]
    fn read(&self, _input: &mut &[u8]) -> Result<(), CodecError> {
        Ok(())
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot::new("eddy.unit", 1)
    }

    #[inline]
    fn fixed_len(&self) -> Option<usize> {
        Some(0)
    }

    #[inline]
    fn order_preserving(&self) -> bool {
        true
    }
}

impl Codec for () {
    type Serializer = Unit;
}

// ---------------------------------------------------------------------------------------------
// Strings and byte strings

/// Reads a varint length and that many bytes; the length is checked against what is left
/// before anything is allocated.
#[inline]
fn read_len_prefixed<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], CodecError> {
    let n = read_len(input, 1)?;
    take(input, n)
}

/// Like [`read_len_prefixed`], for bytes the encoding must fill exactly.
#[inline]
fn view_len_prefixed(mut bytes: &[u8]) -> Result<&[u8], CodecError> {
    let payload = read_len_prefixed(&mut bytes)?;
    if bytes.is_empty() {
        Ok(payload)
    } else {
        Err(CodecError::TrailingBytes(bytes.len()))
    }
}

/// `String` as a LEB128 varint byte length, then the UTF-8 bytes; invalid UTF-8 is
/// [`CodecError::Invalid`]. Not order-preserving (the length comes first). Views borrow the
/// `&str` in place. Identity `"eddy.string"`, version 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Str;

impl Serializer for Str {
    type Value = String;

    #[inline]
    fn write(&self, value: &String, out: &mut Vec<u8>) {
        write_varint(value.len() as u64, out);
        out.extend_from_slice(value.as_bytes());
    }

    #[inline]
    fn read(&self, input: &mut &[u8]) -> Result<String, CodecError> {
        let bytes = read_len_prefixed(input)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| CodecError::Invalid("string is not UTF-8"))
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot::new("eddy.string", 1)
    }
}

impl BorrowSerializer for Str {
    type View<'a> = &'a str;

    fn view<'a>(&self, bytes: &'a [u8]) -> Result<&'a str, CodecError> {
        std::str::from_utf8(view_len_prefixed(bytes)?).map_err(|_| CodecError::Invalid("string is not UTF-8"))
    }
}

impl Codec for String {
    type Serializer = Str;
}

/// `Vec<u8>` as a LEB128 varint length, then the bytes. Not order-preserving (the length comes
/// first). Views borrow the `&[u8]` in place. Identity `"eddy.bytes"`, version 1.
///
/// This is the same wire format as `VecOf<U8>` (the [`Codec`] serializer of `Vec<u8>`), but
/// a distinct snapshot, and it reads with one copy instead of byte by byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bytes;

impl Serializer for Bytes {
    type Value = Vec<u8>;

    #[inline]
    fn write(&self, value: &Vec<u8>, out: &mut Vec<u8>) {
        write_varint(value.len() as u64, out);
        out.extend_from_slice(value);
    }

    #[inline]
    fn read(&self, input: &mut &[u8]) -> Result<Vec<u8>, CodecError> {
        read_len_prefixed(input).map(<[u8]>::to_vec)
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot::new("eddy.bytes", 1)
    }
}

impl BorrowSerializer for Bytes {
    type View<'a> = &'a [u8];

    fn view<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], CodecError> {
        view_len_prefixed(bytes)
    }
}

// ---------------------------------------------------------------------------------------------
// Composites

/// The one part of a composite snapshot of `identity`, version 1.
fn single_part(old: &SerializerSnapshot, identity: &str) -> Option<SerializerSnapshot> {
    if old.identity != identity || old.version != 1 {
        return None;
    }
    let mut parts = old.parts().ok()?;
    (parts.len() == 1).then(|| parts.remove(0))
}

/// The inner snapshot of an option's snapshot.
fn option_part(old: &SerializerSnapshot) -> Option<SerializerSnapshot> {
    single_part(old, "eddy.option")
}

/// The `n` parts of a tuple's snapshot.
fn tuple_parts(old: &SerializerSnapshot, n: usize) -> Option<Vec<SerializerSnapshot>> {
    if old.identity != "eddy.tuple" || old.version != 1 {
        return None;
    }
    old.parts().ok().filter(|p| p.len() == n)
}

/// `Option<T>` through the serializer of `T`: a tag byte `0` for `None`, or `1` followed by
/// the value; any other tag is [`CodecError::Invalid`].
///
/// Order-preserving when the inner serializer is (`None` sorts first, as in `Option`'s `Ord`).
/// Fixed-length (1 byte) only when the inner serializer is fixed at 0 bytes. Snapshot: identity
/// `"eddy.option"`, version 1, composed of the inner serializer's snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OptionOf<S>(pub S);

impl<S: Serializer> Serializer for OptionOf<S> {
    type Value = Option<S::Value>;

    #[inline]
    fn write(&self, value: &Option<S::Value>, out: &mut Vec<u8>) {
        match value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                self.0.write(v, out);
            }
        }
    }

    #[inline]
    fn read(&self, input: &mut &[u8]) -> Result<Option<S::Value>, CodecError> {
        match take_chunk::<1>(input)? {
            [0] => Ok(None),
            [1] => self.0.read(input).map(Some),
            _ => Err(CodecError::Invalid("option tag is neither 0 nor 1")),
        }
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot::compose("eddy.option", 1, &[self.0.snapshot()])
    }

    /// An option of a compatible inner serializer is compatible as the inner one is (after
    /// migration when that one needs reconfiguring); the inner serializer's own data (`T`
    /// becoming `Option<T>`) is compatible after migration, every value read as `Some`.
    fn compatibility(&self, old: &SerializerSnapshot) -> Compatibility {
        match option_part(old) {
            Some(inner) => self.0.compatibility(&inner).and(Compatibility::AsIs),
            None => Compatibility::AfterMigration.and(self.0.compatibility(old)),
        }
    }

    fn old_reader(&self, old: &SerializerSnapshot) -> Option<OldReader<Self>> {
        match option_part(old) {
            Some(inner) => {
                let inner = part_reader(&self.0, &inner)?;
                Some(OldReader::new(move |s: &Self, input: &mut &[u8]| match take_chunk::<1>(input)? {
                    [0] => Ok(None),
                    [1] => inner.read(&s.0, input).map(Some),
                    _ => Err(CodecError::Invalid("option tag is neither 0 nor 1")),
                }))
            }
            None => {
                let inner = part_reader(&self.0, old)?;
                Some(OldReader::new(move |s: &Self, input: &mut &[u8]| inner.read(&s.0, input).map(Some)))
            }
        }
    }

    fn fixed_len(&self) -> Option<usize> {
        match self.0.fixed_len() {
            Some(0) => Some(1),
            _ => None,
        }
    }

    fn order_preserving(&self) -> bool {
        self.0.order_preserving()
    }
}

impl<T: Codec> Codec for Option<T> {
    type Serializer = OptionOf<T::Serializer>;
}

/// `Vec<T>` through the serializer of `T`: a LEB128 varint count, then the elements. Not
/// order-preserving (the count comes first). Snapshot: identity `"eddy.vec"`, version 1,
/// composed of the element serializer's snapshot.
///
/// # Limits on untrusted counts
///
/// A count is checked before anything is allocated:
///
/// - for elements of a fixed length `n > 0`, `count * n` must fit in the bytes left;
/// - for elements of variable length, `count` must fit in the bytes left: every element is
///   taken to encode to at least one byte, as all of this module's serializers do. A custom
///   serializer used here must do so too: [`write`](Serializer::write) panics if the elements
///   take fewer bytes than their count;
/// - for elements of fixed length 0 (such as [`Unit`]) the bytes left bound nothing, so the
///   count is capped at [`VecOf::MAX_ZERO_LEN_COUNT`]: [`read`](Serializer::read) rejects
///   larger counts as [`CodecError::Invalid`] and [`write`](Serializer::write) panics on a
///   longer vector rather than write what could not be read back.
///
/// Space is reserved for at most 1 MiB of elements up front; the vector grows beyond that only
/// as elements actually decode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VecOf<S>(pub S);

impl<S> VecOf<S> {
    /// The most elements a vector of zero-length elements may have (2^20).
    pub const MAX_ZERO_LEN_COUNT: usize = 1 << 20;
}

impl<S: Serializer> Serializer for VecOf<S> {
    type Value = Vec<S::Value>;

    #[inline]
    fn write(&self, value: &Vec<S::Value>, out: &mut Vec<u8>) {
        let fixed_len = self.0.fixed_len();
        if fixed_len == Some(0) {
            assert!(
                value.len() <= Self::MAX_ZERO_LEN_COUNT,
                "VecOf: {} zero-length elements exceed the {} that can be read back",
                value.len(),
                Self::MAX_ZERO_LEN_COUNT
            );
        }
        write_varint(value.len() as u64, out);
        let start = out.len();
        for v in value {
            self.0.write(v, out);
        }
        if fixed_len.is_none() {
            assert!(
                out.len() - start >= value.len(),
                "VecOf: {} elements of variable length encoded to {} bytes, too few to be read back",
                value.len(),
                out.len() - start
            );
        }
    }

    #[inline]
    fn read(&self, input: &mut &[u8]) -> Result<Vec<S::Value>, CodecError> {
        let count = match self.0.fixed_len() {
            Some(0) => {
                let n = read_varint(input)?;
                match usize::try_from(n) {
                    Ok(n) if n <= Self::MAX_ZERO_LEN_COUNT => n,
                    _ => return Err(CodecError::Invalid("too many zero-length elements")),
                }
            }
            Some(n) => read_len(input, n)?,
            None => read_len(input, 1)?,
        };
        let mut values = Vec::with_capacity(count.min(MAX_PREALLOC_BYTES / size_of::<S::Value>().max(1)));
        for _ in 0..count {
            values.push(self.0.read(input)?);
        }
        Ok(values)
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot::compose("eddy.vec", 1, &[self.0.snapshot()])
    }

    /// A vector of a compatible element serializer is compatible as the element one is
    /// (after migration when that one needs reconfiguring).
    fn compatibility(&self, old: &SerializerSnapshot) -> Compatibility {
        match single_part(old, "eddy.vec") {
            Some(elem) => self.0.compatibility(&elem).and(Compatibility::AsIs),
            None => Compatibility::Incompatible,
        }
    }

    fn old_reader(&self, old: &SerializerSnapshot) -> Option<OldReader<Self>> {
        let elem = part_reader(&self.0, &single_part(old, "eddy.vec")?)?;
        Some(OldReader::new(move |s: &Self, input: &mut &[u8]| {
            // The old elements' lengths are unknown here: bound the count by the bytes left,
            // or by the cap of zero-length elements.
            let n = read_varint(input)?;
            let count = match usize::try_from(n) {
                Ok(n) if n <= input.len().max(Self::MAX_ZERO_LEN_COUNT) => n,
                _ => return Err(CodecError::Invalid("element count exceeds the bytes left")),
            };
            let mut values = Vec::with_capacity(count.min(MAX_PREALLOC_BYTES / size_of::<S::Value>().max(1)));
            for _ in 0..count {
                values.push(elem.read(&s.0, input)?);
            }
            Ok(values)
        }))
    }

    fn fixed_len(&self) -> Option<usize> {
        None
    }

    fn order_preserving(&self) -> bool {
        false
    }
}

impl<T: Codec> Codec for Vec<T> {
    type Serializer = VecOf<T::Serializer>;
}

/// Implements [`Serializer`] and [`Codec`] for tuples of one arity.
macro_rules! tuple_serializer {
    ($($s:ident $i:tt),+) => {
        /// A tuple of serializers serializes tuples of their values, part after part.
        /// Snapshot: identity `"eddy.tuple"`, version 1, composed of the parts' snapshots.
        ///
        /// Fixed-length when every part is (the sum).
        ///
        /// Order-preserving, in the lexicographic order of Rust's tuples, when every part is:
        /// self-delimiting deterministic encodings are prefix-free (if `enc(x)` were a prefix
        /// of `enc(y)`, reading `enc(y)` would stop after `enc(x)` and give `x`), so where two
        /// tuples first differ, their parts' encodings differ at a byte within both, and that
        /// byte orders the tuples as those parts are ordered. In particular a tuple of
        /// fixed-length order-preserving parts (integers, floats, `bool`, `char`, `()`) is
        /// order-preserving: composite keys sort as their tuples do.
        impl<$($s: Serializer),+> Serializer for ($($s,)+) {
            type Value = ($($s::Value,)+);

            #[inline]
            fn write(&self, value: &Self::Value, out: &mut Vec<u8>) {
                $(self.$i.write(&value.$i, out);)+
            }

            #[inline]
            fn read(&self, input: &mut &[u8]) -> Result<Self::Value, CodecError> {
                Ok(($(self.$i.read(input)?,)+))
            }

            fn snapshot(&self) -> SerializerSnapshot {
                SerializerSnapshot::compose("eddy.tuple", 1, &[$(self.$i.snapshot()),+])
            }

            /// A tuple of as many parts is as compatible as its least compatible part (after
            /// migration when a part needs reconfiguring).
            fn compatibility(&self, old: &SerializerSnapshot) -> Compatibility {
                let Some(parts) = tuple_parts(old, [$($i),+].len()) else {
                    return Compatibility::Incompatible;
                };
                Compatibility::AsIs$(.and(self.$i.compatibility(&parts[$i])))+
            }

            fn old_reader(&self, old: &SerializerSnapshot) -> Option<OldReader<Self>> {
                let parts = tuple_parts(old, [$($i),+].len())?;
                let readers = ($(part_reader(&self.$i, &parts[$i])?,)+);
                Some(OldReader::new(move |s: &Self, input: &mut &[u8]| Ok(($(readers.$i.read(&s.$i, input)?,)+))))
            }

            #[inline]
            fn fixed_len(&self) -> Option<usize> {
                let n = 0usize;
                $(let n = n.checked_add(self.$i.fixed_len()?)?;)+
                Some(n)
            }

            #[inline]
            fn order_preserving(&self) -> bool {
                $(self.$i.order_preserving())&&+
            }
        }

        /// Tuples of types with default serializers default to the tuple of those.
        impl<$($s: Codec),+> Codec for ($($s,)+) {
            type Serializer = ($($s::Serializer,)+);
        }
    };
}

tuple_serializer!(A 0);
tuple_serializer!(A 0, B 1);
tuple_serializer!(A 0, B 1, C 2);
tuple_serializer!(A 0, B 1, C 2, D 3);

#[cfg(test)]
pub(super) mod tests {
    //! The tests, and the checks every serializer's tests share (`check`, `fuzz`, ...).
    use std::cmp::Ordering;
    use std::fmt::Debug;

    use quickcheck::quickcheck;

    pub(in crate::codec) type Res = Result<(), String>;

    use super::*;

    pub(in crate::codec) fn enc<S: Serializer>(s: &S, v: &S::Value) -> Vec<u8> {
        let mut out = Vec::new();
        s.write(v, &mut out);
        out
    }

    /// Everything a serializer promises about two values `a` and `b`, with `eq` deciding
    /// equality of values (bit equality for floats).
    pub(in crate::codec) fn check<S: Serializer>(
        s: &S,
        a: &S::Value,
        b: &S::Value,
        eq: impl Fn(&S::Value, &S::Value) -> bool,
    ) -> Res
    where
        S::Value: Debug,
    {
        let ea = enc(s, a);
        let eb = enc(s, b);
        // Deterministic, and appends without touching what is there.
        let mut out = vec![0xAB];
        s.write(a, &mut out);
        if out[0] != 0xAB || out[1..] != ea[..] {
            return Err(format!("write is not deterministic/append-only for {a:?}"));
        }
        if let Some(n) = s.fixed_len() {
            if ea.len() != n || eb.len() != n {
                return Err(format!("fixed_len {n} but encoded {} and {} bytes", ea.len(), eb.len()));
            }
        }
        // Round trip, exactly filling the bytes.
        match s.read_all(&ea) {
            Ok(v) if eq(&v, a) => {}
            other => return Err(format!("read_all({ea:?}) = {other:?}, wrote {a:?}")),
        }
        // Self-delimiting: two encodings back to back read back as both.
        let mut both = ea.clone();
        both.extend_from_slice(&eb);
        let mut cursor = &both[..];
        match (s.read(&mut cursor), s.read(&mut cursor)) {
            (Ok(x), Ok(y)) if eq(&x, a) && eq(&y, b) && cursor.is_empty() => {}
            other => return Err(format!("concatenation read back as {other:?}")),
        }
        // Every proper prefix is an error, never a panic or a value (for long encodings, each
        // of the first and last 200 and 200 between, which keeps this linear).
        let step = (ea.len() / 200).max(1);
        let cuts =
            (0..ea.len().min(200)).chain((0..ea.len()).step_by(step)).chain(ea.len().saturating_sub(200)..ea.len());
        for cut in cuts {
            let mut cursor = &ea[..cut];
            if let Ok(v) = s.read(&mut cursor) {
                return Err(format!("prefix {:?} of {ea:?} read as {v:?}", &ea[..cut]));
            }
            if s.read_all(&ea[..cut]).is_ok() {
                return Err(format!("read_all of prefix {:?} succeeded", &ea[..cut]));
            }
        }
        // Trailing bytes are reported by read_all.
        let mut longer = ea.clone();
        longer.push(0);
        if !matches!(s.read_all(&longer), Err(CodecError::TrailingBytes(1))) {
            return Err("read_all accepted a trailing byte".into());
        }
        Ok(())
    }

    pub(in crate::codec) fn check_eq<S: Serializer>(s: &S, a: S::Value, b: S::Value) -> Res
    where
        S::Value: Debug + PartialEq,
    {
        check(s, &a, &b, |x, y| x == y)
    }

    /// Byte order of the encodings is `cmp` of the values.
    pub(in crate::codec) fn check_order<S: Serializer>(
        s: &S,
        a: &S::Value,
        b: &S::Value,
        cmp: impl Fn(&S::Value, &S::Value) -> Ordering,
    ) -> bool {
        assert!(s.order_preserving());
        enc(s, a).cmp(&enc(s, b)) == cmp(a, b)
    }

    fn ord<T: Ord>(a: &T, b: &T) -> Ordering {
        a.cmp(b)
    }

    pub(in crate::codec) fn snapshot_round_trip<S: Serializer>(s: &S) {
        let snap = s.snapshot();
        let mut bytes = Vec::new();
        snap.encode(&mut bytes);
        bytes.extend_from_slice(b"tail");
        let mut cursor = &bytes[..];
        assert_eq!(SerializerSnapshot::decode(&mut cursor), Ok(snap.clone()));
        assert_eq!(cursor, b"tail");
        assert_eq!(s.compatibility(&snap), super::super::Compatibility::AsIs);
        for cut in 0..bytes.len() - 4 {
            assert!(SerializerSnapshot::decode(&mut &bytes[..cut]).is_err());
        }
    }

    /// Reading arbitrary bytes returns, never panics; what it reads re-encodes and reads back.
    pub(in crate::codec) fn fuzz<S: Serializer>(s: &S, bytes: &[u8]) -> bool {
        let mut cursor = bytes;
        if let Ok(v) = s.read(&mut cursor) {
            if cursor.len() > bytes.len() {
                return false;
            }
            let again = enc(s, &v);
            if s.read_all(&again).is_err() {
                return false;
            }
        }
        let _ = s.read_all(bytes);
        true
    }

    #[test]
    fn unsigned_round_trips() {
        fn u8s(a: u8, b: u8) -> Res {
            check_eq(&U8, a, b)
        }
        fn u16s(a: u16, b: u16) -> Res {
            check_eq(&U16, a, b)
        }
        fn u32s(a: u32, b: u32) -> Res {
            check_eq(&U32, a, b)
        }
        fn u64s(a: u64, b: u64) -> Res {
            check_eq(&U64, a, b)
        }
        fn u128s(a: u128, b: u128) -> Res {
            check_eq(&U128, a, b)
        }
        quickcheck(u8s as fn(u8, u8) -> Res);
        quickcheck(u16s as fn(u16, u16) -> Res);
        quickcheck(u32s as fn(u32, u32) -> Res);
        quickcheck(u64s as fn(u64, u64) -> Res);
        quickcheck(u128s as fn(u128, u128) -> Res);
    }

    #[test]
    fn signed_round_trips() {
        fn i8s(a: i8, b: i8) -> Res {
            check_eq(&I8, a, b)
        }
        fn i16s(a: i16, b: i16) -> Res {
            check_eq(&I16, a, b)
        }
        fn i32s(a: i32, b: i32) -> Res {
            check_eq(&I32, a, b)
        }
        fn i64s(a: i64, b: i64) -> Res {
            check_eq(&I64, a, b)
        }
        fn i128s(a: i128, b: i128) -> Res {
            check_eq(&I128, a, b)
        }
        quickcheck(i8s as fn(i8, i8) -> Res);
        quickcheck(i16s as fn(i16, i16) -> Res);
        quickcheck(i32s as fn(i32, i32) -> Res);
        quickcheck(i64s as fn(i64, i64) -> Res);
        quickcheck(i128s as fn(i128, i128) -> Res);
    }

    #[test]
    fn integer_order() {
        fn prop(a: (u8, u16, u32, u64, u128), b: (u8, u16, u32, u64, u128)) -> bool {
            check_order(&U8, &a.0, &b.0, ord)
                && check_order(&U16, &a.1, &b.1, ord)
                && check_order(&U32, &a.2, &b.2, ord)
                && check_order(&U64, &a.3, &b.3, ord)
                && check_order(&U128, &a.4, &b.4, ord)
        }
        fn signed(a: (i8, i16, i32, i64, i128), b: (i8, i16, i32, i64, i128)) -> bool {
            check_order(&I8, &a.0, &b.0, ord)
                && check_order(&I16, &a.1, &b.1, ord)
                && check_order(&I32, &a.2, &b.2, ord)
                && check_order(&I64, &a.3, &b.3, ord)
                && check_order(&I128, &a.4, &b.4, ord)
        }
        type U = (u8, u16, u32, u64, u128);
        type I = (i8, i16, i32, i64, i128);
        quickcheck(prop as fn(U, U) -> bool);
        quickcheck(signed as fn(I, I) -> bool);
        // The extremes and their neighbours, which random values rarely hit.
        let edges = [i64::MIN, i64::MIN + 1, -256, -1, 0, 1, 255, i64::MAX - 1, i64::MAX];
        for a in edges {
            for b in edges {
                assert!(check_order(&I64, &a, &b, ord), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn integer_encodings() {
        assert_eq!(enc(&U64, &1), [0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(enc(&U16, &0x0102), [1, 2]);
        assert_eq!(enc(&I8, &-1), [0x7f]);
        assert_eq!(enc(&I8, &0), [0x80]);
        assert_eq!(enc(&I32, &i32::MIN), [0, 0, 0, 0]);
        assert_eq!(enc(&I32, &i32::MAX), [0xff; 4]);
        assert_eq!(U32.read(&mut &[1u8, 2][..]), Err(CodecError::Truncated { needed: 2 }));
        assert_eq!(U64.snapshot(), SerializerSnapshot::new("eddy.u64", 1));
        assert_eq!(I128.fixed_len(), Some(16));
    }

    const F64_EDGES: [f64; 12] = [
        f64::NEG_INFINITY,
        f64::MIN,
        -1.0,
        -f64::MIN_POSITIVE,
        -5e-324,
        -0.0,
        0.0,
        5e-324,
        f64::MIN_POSITIVE,
        1.0,
        f64::MAX,
        f64::INFINITY,
    ];

    #[test]
    fn float_round_trips_are_bit_exact() {
        fn f64_bits(a: u64, b: u64) -> Res {
            check(&F64, &f64::from_bits(a), &f64::from_bits(b), |x, y| x.to_bits() == y.to_bits())
        }
        fn f32_bits(a: u32, b: u32) -> Res {
            check(&F32, &f32::from_bits(a), &f32::from_bits(b), |x, y| x.to_bits() == y.to_bits())
        }
        fn f64s(a: f64, b: f64) -> Res {
            check(&F64, &a, &b, |x, y| x.to_bits() == y.to_bits())
        }
        fn f32s(a: f32, b: f32) -> Res {
            check(&F32, &a, &b, |x, y| x.to_bits() == y.to_bits())
        }
        quickcheck(f64_bits as fn(u64, u64) -> Res);
        quickcheck(f32_bits as fn(u32, u32) -> Res);
        quickcheck(f64s as fn(f64, f64) -> Res);
        quickcheck(f32s as fn(f32, f32) -> Res);
        let nans = [f64::NAN, -f64::NAN, f64::from_bits(0x7ff0_0000_0000_0001), f64::from_bits(0xfff8_dead_beef_0001)];
        for x in F64_EDGES.into_iter().chain(nans) {
            assert_eq!(F64.read_all(&enc(&F64, &x)).map(f64::to_bits), Ok(x.to_bits()));
        }
    }

    #[test]
    fn float_order_is_total_order() {
        fn f64_bits(a: u64, b: u64) -> bool {
            check_order(&F64, &f64::from_bits(a), &f64::from_bits(b), f64::total_cmp)
        }
        fn f32_bits(a: u32, b: u32) -> bool {
            check_order(&F32, &f32::from_bits(a), &f32::from_bits(b), f32::total_cmp)
        }
        fn f64s(a: f64, b: f64) -> bool {
            check_order(&F64, &a, &b, f64::total_cmp)
        }
        quickcheck(f64_bits as fn(u64, u64) -> bool);
        quickcheck(f32_bits as fn(u32, u32) -> bool);
        quickcheck(f64s as fn(f64, f64) -> bool);
        let all: Vec<f64> = F64_EDGES.into_iter().chain([f64::NAN, -f64::NAN]).collect();
        for a in &all {
            for b in &all {
                assert!(check_order(&F64, a, b, f64::total_cmp), "{a} vs {b}");
            }
        }
        // -0.0 < 0.0, and NaNs sort outside the infinities.
        assert!(enc(&F64, &-0.0) < enc(&F64, &0.0));
        assert!(enc(&F64, &-f64::NAN) < enc(&F64, &f64::NEG_INFINITY));
        assert!(enc(&F64, &f64::NAN) > enc(&F64, &f64::INFINITY));
        assert_eq!(enc(&F64, &0.0), [0x80, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn bool_char_unit() {
        fn bools(a: bool, b: bool) -> Res {
            check_eq(&Bool, a, b)
        }
        fn chars(a: char, b: char) -> Res {
            check_eq(&Char, a, b)
        }
        fn order(a: (bool, char), b: (bool, char)) -> bool {
            check_order(&Bool, &a.0, &b.0, ord) && check_order(&Char, &a.1, &b.1, ord)
        }
        quickcheck(bools as fn(bool, bool) -> Res);
        quickcheck(chars as fn(char, char) -> Res);
        quickcheck(order as fn((bool, char), (bool, char)) -> bool);
        check_eq(&Unit, (), ()).unwrap();
        assert_eq!(enc(&Unit, &()), b"");
        assert_eq!(Unit.read_all(b""), Ok(()));
        assert_eq!(Bool.read_all(&[2]), Err(CodecError::Invalid("bool byte is neither 0 nor 1")));
        assert_eq!(Char.read_all(&0xD800u32.to_be_bytes()), Err(CodecError::Invalid("not a Unicode scalar value")));
        assert_eq!(Char.read_all(&0x11_0000u32.to_be_bytes()), Err(CodecError::Invalid("not a Unicode scalar value")));
        assert_eq!(Char.read_all(&0x10_FFFFu32.to_be_bytes()), Ok('\u{10FFFF}'));
    }

    #[test]
    fn strings_and_bytes() {
        fn strings(a: String, b: String) -> Res {
            check_eq(&Str, a, b)
        }
        fn bytes(a: Vec<u8>, b: Vec<u8>) -> Res {
            check_eq(&Bytes, a, b)
        }
        fn views(a: String, b: Vec<u8>) -> bool {
            Str.view(&enc(&Str, &a)) == Ok(a.as_str()) && Bytes.view(&enc(&Bytes, &b)) == Ok(&b[..])
        }
        fn same_wire_as_vec_of_u8(a: Vec<u8>) -> bool {
            enc(&Bytes, &a) == enc(&VecOf(U8), &a)
        }
        quickcheck(strings as fn(String, String) -> Res);
        quickcheck(bytes as fn(Vec<u8>, Vec<u8>) -> Res);
        quickcheck(views as fn(String, Vec<u8>) -> bool);
        quickcheck(same_wire_as_vec_of_u8 as fn(Vec<u8>) -> bool);
        assert_eq!(enc(&Str, &"ab".to_owned()), [2, b'a', b'b']);
        let long = "x".repeat(300);
        assert_eq!(enc(&Str, &long)[..2], [0xAC, 0x02]);
        assert_eq!(Str.read_all(&[2, 0xff, 0xfe]), Err(CodecError::Invalid("string is not UTF-8")));
        assert_eq!(Str.view(&[2, 0xff, 0xfe]), Err(CodecError::Invalid("string is not UTF-8")));
        assert_eq!(Str.view(&[1, b'a', b'b']), Err(CodecError::TrailingBytes(1)));
        // A huge claimed length is refused before any allocation.
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, b'a'];
        assert!(matches!(Bytes.read_all(&huge), Err(CodecError::Truncated { .. })));
        assert!(matches!(Str.read_all(&huge), Err(CodecError::Truncated { .. })));
        assert_ne!(Bytes.snapshot(), VecOf(U8).snapshot());
    }

    #[test]
    fn options() {
        fn opt_u32(a: Option<u32>, b: Option<u32>) -> Res {
            check_eq(&OptionOf(U32), a, b)
        }
        fn opt_string(a: Option<String>, b: Option<String>) -> Res {
            check_eq(&OptionOf(Str), a, b)
        }
        fn nested(a: Option<Option<i8>>, b: Option<Option<i8>>) -> Res {
            check_eq(&<Option<Option<i8>> as Codec>::Serializer::default(), a, b)
        }
        fn order(a: Option<(i16, Option<u8>)>, b: Option<(i16, Option<u8>)>) -> bool {
            let s = OptionOf((I16, OptionOf(U8)));
            check_order(&s, &a, &b, ord)
        }
        quickcheck(opt_u32 as fn(Option<u32>, Option<u32>) -> Res);
        quickcheck(opt_string as fn(Option<String>, Option<String>) -> Res);
        quickcheck(nested as fn(Option<Option<i8>>, Option<Option<i8>>) -> Res);
        quickcheck(order as fn(Option<(i16, Option<u8>)>, Option<(i16, Option<u8>)>) -> bool);
        assert_eq!(enc(&OptionOf(U8), &None), [0]);
        assert_eq!(enc(&OptionOf(U8), &Some(7)), [1, 7]);
        assert_eq!(OptionOf(U8).read_all(&[2, 7]), Err(CodecError::Invalid("option tag is neither 0 nor 1")));
        assert_eq!(OptionOf(Unit).fixed_len(), Some(1));
        assert_eq!(OptionOf(U8).fixed_len(), None);
        assert!(!OptionOf(Str).order_preserving());
        check_eq(&OptionOf(Unit), Some(()), None).unwrap();
    }

    #[test]
    fn vectors() {
        fn vec_u16(a: Vec<u16>, b: Vec<u16>) -> Res {
            check_eq(&VecOf(U16), a, b)
        }
        fn vec_strings(a: Vec<String>, b: Vec<String>) -> Res {
            check_eq(&VecOf(Str), a, b)
        }
        fn vec_units(a: Vec<()>, b: Vec<()>) -> Res {
            check_eq(&VecOf(Unit), a, b)
        }
        fn vec_vec(a: Vec<Vec<Option<i64>>>, b: Vec<Vec<Option<i64>>>) -> Res {
            check_eq(&<Vec<Vec<Option<i64>>> as Codec>::Serializer::default(), a, b)
        }
        quickcheck(vec_u16 as fn(Vec<u16>, Vec<u16>) -> Res);
        quickcheck(vec_strings as fn(Vec<String>, Vec<String>) -> Res);
        quickcheck(vec_units as fn(Vec<()>, Vec<()>) -> Res);
        quickcheck(vec_vec as fn(Vec<Vec<Option<i64>>>, Vec<Vec<Option<i64>>>) -> Res);
        assert_eq!(enc(&VecOf(U16), &vec![1, 2]), [2, 0, 1, 0, 2]);
        assert!(!VecOf(U8).order_preserving());
        assert_eq!(VecOf(U8).fixed_len(), None);
        // Counts that the bytes left cannot hold are refused before allocating.
        let mut huge = Vec::new();
        write_varint(u64::MAX, &mut huge);
        assert!(matches!(VecOf(U64).read_all(&huge), Err(CodecError::Truncated { .. })));
        assert!(matches!(VecOf(Str).read_all(&huge), Err(CodecError::Truncated { .. })));
        assert_eq!(VecOf(Unit).read_all(&huge), Err(CodecError::Invalid("too many zero-length elements")));
        assert_eq!(VecOf((Unit, Unit)).read_all(&huge), Err(CodecError::Invalid("too many zero-length elements")));
        // Zero-length elements: up to the cap, and not one more.
        let max = VecOf::<Unit>::MAX_ZERO_LEN_COUNT;
        let units = vec![(); max];
        assert_eq!(VecOf(Unit).read_all(&enc(&VecOf(Unit), &units)), Ok(units));
        let mut over = Vec::new();
        write_varint(max as u64 + 1, &mut over);
        assert!(VecOf(Unit).read_all(&over).is_err());
        // An element count the bytes could hold, whose elements are cut short.
        assert!(matches!(VecOf(U8).read_all(&[3, 1, 2]), Err(CodecError::Truncated { .. })));
    }

    #[test]
    #[should_panic(expected = "zero-length elements exceed")]
    fn writing_too_many_zero_length_elements_panics() {
        let _ = enc(&VecOf(Unit), &vec![(); VecOf::<Unit>::MAX_ZERO_LEN_COUNT + 1]);
    }

    #[test]
    #[should_panic(expected = "too few to be read back")]
    fn writing_variable_length_elements_of_no_bytes_panics() {
        /// Breaks `VecOf`'s rule: variable length, yet writes nothing.
        struct Empty;
        impl Serializer for Empty {
            type Value = ();
            fn write(&self, _: &(), _: &mut Vec<u8>) {}
            fn read(&self, _: &mut &[u8]) -> Result<(), CodecError> {
                Ok(())
            }
            fn snapshot(&self) -> SerializerSnapshot {
                SerializerSnapshot::new("test.empty", 1)
            }
        }
        let _ = enc(&VecOf(Empty), &vec![(); 3]);
    }

    #[test]
    fn tuples() {
        fn one(a: (u32,), b: (u32,)) -> Res {
            check_eq(&(U32,), a, b)
        }
        fn two(a: (String, i64), b: (String, i64)) -> Res {
            check_eq(&(Str, I64), a, b)
        }
        fn three(a: (bool, Vec<u8>, Option<char>), b: (bool, Vec<u8>, Option<char>)) -> Res {
            check_eq(&<(bool, Vec<u8>, Option<char>) as Codec>::Serializer::default(), a, b)
        }
        fn four(a: (u8, i16, String, Option<u32>), b: (u8, i16, String, Option<u32>)) -> Res {
            check_eq(&<(u8, i16, String, Option<u32>) as Codec>::Serializer::default(), a, b)
        }
        fn float_pair(a: (u64, u32), b: (u64, u32)) -> Res {
            let (a, b) = ((f64::from_bits(a.0), f32::from_bits(a.1)), (f64::from_bits(b.0), f32::from_bits(b.1)));
            check(&(F64, F32), &a, &b, |x, y| x.0.to_bits() == y.0.to_bits() && x.1.to_bits() == y.1.to_bits())
        }
        quickcheck(one as fn((u32,), (u32,)) -> Res);
        quickcheck(two as fn((String, i64), (String, i64)) -> Res);
        type T3 = (bool, Vec<u8>, Option<char>);
        quickcheck(three as fn(T3, T3) -> Res);
        type T4 = (u8, i16, String, Option<u32>);
        quickcheck(four as fn(T4, T4) -> Res);
        quickcheck(float_pair as fn((u64, u32), (u64, u32)) -> Res);
        assert_eq!((U8, I32, U64).fixed_len(), Some(13));
        assert_eq!((U8, Unit).fixed_len(), Some(1));
        assert_eq!((U8, Str).fixed_len(), None);
        assert!((U8, I32, F64, Char).order_preserving());
        assert!(!(U8, Str).order_preserving());
        assert_eq!(enc(&(U8, U16), &(1, 2)), [1, 0, 2]);
    }

    #[test]
    fn tuple_order() {
        fn ints(a: (i32, u8), b: (i32, u8)) -> bool {
            check_order(&(I32, U8), &a, &b, ord)
        }
        fn four(a: (u16, i64, bool, i8), b: (u16, i64, bool, i8)) -> bool {
            check_order(&(U16, I64, Bool, I8), &a, &b, ord)
        }
        // Small values collide in their first parts, so later parts get to decide.
        fn small(a: (u8, i8, u8), b: (u8, i8, u8)) -> bool {
            let (a, b) = ((a.0 % 3, a.1 % 3, a.2), (b.0 % 3, b.1 % 3, b.2));
            check_order(&(U8, I8, U8), &a, &b, ord)
        }
        fn with_float(a: (i8, u64), b: (i8, u64)) -> bool {
            let (a, b) = ((a.0 % 2, f64::from_bits(a.1)), (b.0 % 2, f64::from_bits(b.1)));
            check_order(&(I8, F64), &a, &b, |x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)))
        }
        quickcheck(ints as fn((i32, u8), (i32, u8)) -> bool);
        quickcheck(four as fn((u16, i64, bool, i8), (u16, i64, bool, i8)) -> bool);
        quickcheck(small as fn((u8, i8, u8), (u8, i8, u8)) -> bool);
        quickcheck(with_float as fn((i8, u64), (i8, u64)) -> bool);
    }

    #[test]
    fn random_bytes_never_panic() {
        fn prop(bytes: Vec<u8>) -> bool {
            fuzz(&U8, &bytes)
                && fuzz(&U64, &bytes)
                && fuzz(&I128, &bytes)
                && fuzz(&F32, &bytes)
                && fuzz(&F64, &bytes)
                && fuzz(&Bool, &bytes)
                && fuzz(&Char, &bytes)
                && fuzz(&Unit, &bytes)
                && fuzz(&Str, &bytes)
                && fuzz(&Bytes, &bytes)
                && Str.view(&bytes).map_or(true, |_| true)
                && Bytes.view(&bytes).map_or(true, |_| true)
                && fuzz(&OptionOf(Str), &bytes)
                && fuzz(&VecOf(U32), &bytes)
                && fuzz(&VecOf(Unit), &bytes)
                && fuzz(&VecOf(VecOf(OptionOf(Str))), &bytes)
                && fuzz(&(U8,), &bytes)
                && fuzz(&(Str, Bytes), &bytes)
                && fuzz(&(Bool, Char, F64), &bytes)
                && fuzz(&(OptionOf(U8), VecOf(I16), Str, Unit), &bytes)
        }
        quickcheck(prop as fn(Vec<u8>) -> bool);
        // Small and varint-shaped inputs, exhaustively for one and two bytes.
        for a in 0..=255u8 {
            assert!(prop(vec![a]));
            for b in 0..=255u8 {
                assert!(prop(vec![a, b]));
            }
        }
    }

    #[test]
    fn snapshots_round_trip() {
        snapshot_round_trip(&U8);
        snapshot_round_trip(&U16);
        snapshot_round_trip(&U32);
        snapshot_round_trip(&U64);
        snapshot_round_trip(&U128);
        snapshot_round_trip(&I8);
        snapshot_round_trip(&I16);
        snapshot_round_trip(&I32);
        snapshot_round_trip(&I64);
        snapshot_round_trip(&I128);
        snapshot_round_trip(&F32);
        snapshot_round_trip(&F64);
        snapshot_round_trip(&Bool);
        snapshot_round_trip(&Char);
        snapshot_round_trip(&Unit);
        snapshot_round_trip(&Str);
        snapshot_round_trip(&Bytes);
        snapshot_round_trip(&OptionOf(U8));
        snapshot_round_trip(&VecOf(Str));
        snapshot_round_trip(&(U8,));
        snapshot_round_trip(&(U8, Str));
        snapshot_round_trip(&(U8, Str, VecOf(OptionOf(F64))));
        snapshot_round_trip(&(U8, Str, Bool, (I8, Unit)));

        // Every serializer has its own identity; composites differ by their parts.
        let snaps = [
            U8.snapshot(),
            U16.snapshot(),
            U32.snapshot(),
            U64.snapshot(),
            U128.snapshot(),
            I8.snapshot(),
            I16.snapshot(),
            I32.snapshot(),
            I64.snapshot(),
            I128.snapshot(),
            F32.snapshot(),
            F64.snapshot(),
            Bool.snapshot(),
            Char.snapshot(),
            Unit.snapshot(),
            Str.snapshot(),
            Bytes.snapshot(),
            OptionOf(U8).snapshot(),
            OptionOf(I8).snapshot(),
            VecOf(U8).snapshot(),
            (U8,).snapshot(),
            (U8, U8).snapshot(),
            (U8, (U8,)).snapshot(),
        ];
        for (i, a) in snaps.iter().enumerate() {
            for b in &snaps[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(U64.compatibility(&I64.snapshot()), super::super::Compatibility::Incompatible);
        // A composite's configuration holds its parts' snapshots.
        let snap = (U8, Str).snapshot();
        let mut config = &snap.config[..];
        assert_eq!(SerializerSnapshot::decode(&mut config), Ok(U8.snapshot()));
        assert_eq!(SerializerSnapshot::decode(&mut config), Ok(Str.snapshot()));
        assert!(config.is_empty());
    }

    #[test]
    fn codec_defaults() {
        fn default_enc<T: Codec>(v: &T) -> Vec<u8> {
            enc(&T::Serializer::default(), v)
        }
        assert_eq!(default_enc(&5u64), enc(&U64, &5));
        assert_eq!(default_enc(&-5i32), enc(&I32, &-5));
        assert_eq!(default_enc(&"hi".to_owned()), enc(&Str, &"hi".to_owned()));
        assert_eq!(default_enc(&vec![1u8, 2]), [2, 1, 2]);
        assert_eq!(default_enc(&Some(1.5f32)), enc(&OptionOf(F32), &Some(1.5)));
        assert_eq!(default_enc(&(1u8, 'a', ())), [1, 0, 0, 0, b'a']);
        assert_eq!(default_enc(&(true,)), [1]);
        assert_eq!(default_enc(&(0u8, 0u8, 0u8, 0u8)), [0; 4]);
    }
}
