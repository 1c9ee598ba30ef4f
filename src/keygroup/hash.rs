//! Key hashes and Flink's murmur mix of them. All arithmetic is wrapping 32-bit, as in Java.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;
const N: u32 = 0xe654_6b64;

/// MurmurHash3's mix of one 4-byte block into the key half of a round.
#[inline]
const fn mix_k(k: u32) -> u32 {
    k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

/// MurmurHash3's absorption of a mixed block into the state.
#[inline]
const fn mix_h(h: u32, k: u32) -> u32 {
    (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(N)
}

/// MurmurHash3's finalizer (`fmix32`; Flink's `MathUtils.bitMix`).
#[inline]
const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Flink's `MathUtils.murmurHash(int)`: the mix that turns a key hash into a key group.
///
/// It is MurmurHash3 x86_32 with seed 0 of the four little-endian bytes of `code`, made
/// non-negative: `h` if `h >= 0`, `-h` otherwise, and 0 for `i32::MIN`. The result is
/// therefore always in `0..=i32::MAX`.
#[inline]
#[must_use]
pub const fn murmur_hash(code: i32) -> i32 {
    // 4 is the input length in bytes.
    let h = fmix32(mix_h(0, mix_k(code as u32)) ^ 4) as i32;
    if h >= 0 {
        h
    } else if h != i32::MIN {
        -h
    } else {
        0
    }
}

/// The hash Java's `Integer.hashCode()` gives an `int` key: the value itself.
#[inline]
#[must_use]
pub const fn java_hash_i32(v: i32) -> i32 {
    v
}

/// The hash Java's `Long.hashCode()` gives a `long` key: `(int) (v ^ (v >>> 32))`.
#[inline]
#[must_use]
pub const fn java_hash_i64(v: i64) -> i32 {
    let v = v as u64;
    (v ^ (v >> 32)) as u32 as i32
}

/// The hash Java's `String.hashCode()` gives a string key: `s[0]*31^(n-1) + ... + s[n-1]`
/// over the string's UTF-16 code units, wrapping. The empty string hashes to 0.
#[must_use]
pub fn java_hash_str(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(i32::from(unit)))
}

/// The name snapshots record for the default key-routing hash: [`hash_bytes`] of the key's
/// serialized bytes. Part of the format (`format-spec/keygroup.md`).
pub const DEFAULT_KEY_HASH: &str = "eddy.murmur3";
/// The name snapshots record for Java's `hashCode` of the key ([`java_hash_i32`],
/// [`java_hash_i64`], [`java_hash_str`]). Part of the format (`format-spec/keygroup.md`).
pub const JAVA_KEY_HASH: &str = "java.hashCode";

/// The default hash of a key's serialized bytes: MurmurHash3 x86_32 (Austin Appleby's
/// reference `MurmurHash3_x86_32`) with seed 0, its 32 bits read as an `i32`.
///
/// The bytes are taken in 4-byte little-endian blocks, each mixed into the state; the 1 to 3
/// trailing bytes form one last little-endian block that is mixed in without the state
/// rotation; then the length in bytes (modulo 2^32) is xored in and `fmix32` applied. The
/// result decides which key group, and so which subtask and file, holds a key: it is fixed
/// forever, identical on every platform and in every version.
#[must_use]
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> i32 {
    // The common key sizes (an `i32`/`u32`, an `i64`/`u64`) without the general loop.
    match *bytes {
        [a, b, c, d] => fmix32(mix_h(0, mix_k(u32::from_le_bytes([a, b, c, d]))) ^ 4) as i32,
        [a, b, c, d, e, f, g, h] => {
            let h1 = mix_h(0, mix_k(u32::from_le_bytes([a, b, c, d])));
            fmix32(mix_h(h1, mix_k(u32::from_le_bytes([e, f, g, h]))) ^ 8) as i32
        }
        _ => hash_bytes_any(bytes),
    }
}

fn hash_bytes_any(bytes: &[u8]) -> i32 {
    let mut chunks = bytes.chunks_exact(4);
    let mut h = 0u32;
    for block in &mut chunks {
        h = mix_h(h, mix_k(u32::from_le_bytes([block[0], block[1], block[2], block[3]])));
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let k = tail.iter().rev().fold(0u32, |k, &byte| (k << 8) | u32::from(byte));
        h ^= mix_k(k);
    }
    // The reference takes the length as a 32-bit int: only its low 32 bits matter.
    fmix32(h ^ bytes.len() as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MurmurHash3 x86_32, seed 0, checked against the reference C implementation.
    #[test]
    fn hash_bytes_matches_murmur3_x86_32_vectors() {
        let vectors: [(&[u8], u32); 8] = [
            (b"", 0),
            (b"a", 0x3c25_69b2),
            (b"ab", 0x9bbf_d75f),
            (b"abc", 0xb3dd_93fa),
            (b"abcd", 0x43ed_676a),
            (b"hello", 0x248b_fa47),
            (b"Hello, world!", 0xc036_3e43),
            (b"The quick brown fox jumps over the lazy dog", 0x2e4f_f723),
        ];
        for (bytes, expected) in vectors {
            assert_eq!(hash_bytes(bytes) as u32, expected, "{:?}", String::from_utf8_lossy(bytes));
        }
        assert_eq!(hash_bytes("état".as_bytes()) as u32, 0x56d7_ad11);
    }

    /// The fast paths for 4 and 8 bytes agree with the general loop.
    #[test]
    fn hash_bytes_fast_paths_agree() {
        fn prop(x: u64) -> bool {
            let b = x.to_be_bytes();
            hash_bytes(&b) == hash_bytes_any(&b) && hash_bytes(&b[..4]) == hash_bytes_any(&b[..4])
        }
        quickcheck::quickcheck(prop as fn(u64) -> bool);
    }

    /// Flink's murmur is the byte hash of the int's little-endian bytes, made non-negative.
    #[test]
    fn murmur_hash_is_hash_bytes_of_le_int_made_non_negative() {
        fn prop(code: i32) -> bool {
            let h = hash_bytes(&code.to_le_bytes());
            let expected = if h == i32::MIN { 0 } else { h.abs() };
            murmur_hash(code) == expected
        }
        quickcheck::quickcheck(prop as fn(i32) -> bool);
    }

    #[test]
    fn java_hashes() {
        assert_eq!(java_hash_i32(-7), -7);
        assert_eq!(java_hash_i64(0), 0);
        assert_eq!(java_hash_i64(-1), 0);
        assert_eq!(java_hash_i64(i64::MAX), i32::MIN);
        assert_eq!(java_hash_i64(1 << 32), 1);
        assert_eq!(java_hash_str(""), 0);
        assert_eq!(java_hash_str("hello"), 99_162_322);
        // U+1F600 is two UTF-16 code units, 0xD83D 0xDE00.
        assert_eq!(java_hash_str("\u{1F600}"), 0xD83D * 31 + 0xDE00);
    }
}
