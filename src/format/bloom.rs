//! A blocked Bloom filter over a segment's keys: every key sets `probes` bits inside one
//! 64-byte block chosen by its hash, so a lookup touches one cache line.
//!
//! Payload: `probes u8 | block_count u32 | bits (block_count * 64 bytes)`.

use super::{key_hash64, DecodeError, Reader};

const BLOCK_BYTES: usize = 64;
const BLOCK_BITS: u32 = (BLOCK_BYTES * 8) as u32;
const HEADER_LEN: usize = 1 + 4;

/// Builds a filter from key hashes ([`key_hash64`]).
pub fn build(hashes: &[u64], bits_per_key: u32) -> Vec<u8> {
    let probes = probes_for(bits_per_key);
    let total_bits = (hashes.len() as u64 * u64::from(bits_per_key)).max(1);
    let blocks = total_bits.div_ceil(u64::from(BLOCK_BITS)).min(u64::from(u32::MAX)) as u32;
    let mut out = vec![0u8; HEADER_LEN + blocks as usize * BLOCK_BYTES];
    out[0] = probes;
    out[1..HEADER_LEN].copy_from_slice(&blocks.to_le_bytes());
    let bits = &mut out[HEADER_LEN..];
    for &h in hashes {
        let (block, mut pos, delta) = locate(h, blocks);
        let base = block as usize * BLOCK_BYTES;
        for _ in 0..probes {
            let bit = pos % BLOCK_BITS;
            bits[base + (bit / 8) as usize] |= 1 << (bit % 8);
            pos = pos.wrapping_add(delta);
        }
    }
    out
}

fn probes_for(bits_per_key: u32) -> u8 {
    // ln 2 * bits per key, rounded, within [1, 16].
    ((bits_per_key * 69 + 50) / 100).clamp(1, 16) as u8
}

#[inline]
fn locate(h: u64, blocks: u32) -> (u32, u32, u32) {
    let hi = (h >> 32) as u32;
    let lo = h as u32;
    let block = ((u64::from(hi) * u64::from(blocks)) >> 32) as u32;
    (block, lo, lo.rotate_right(21) | 1)
}

/// A validated filter, borrowed from the segment's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Filter<'a> {
    probes: u8,
    blocks: u32,
    bits: &'a [u8],
}

impl<'a> Filter<'a> {
    /// Validates a filter payload.
    pub fn decode(payload: &'a [u8], offset: u64) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload, offset);
        let probes = r.u8()?;
        let blocks = r.u32()?;
        if probes == 0 || probes > 16 || blocks == 0 {
            return Err(DecodeError::malformed(offset, "filter header"));
        }
        if r.remaining() as u64 != u64::from(blocks) * BLOCK_BYTES as u64 {
            return Err(DecodeError::malformed(offset, "filter length"));
        }
        Ok(Filter { probes, blocks, bits: &payload[HEADER_LEN..] })
    }

    /// The 64-byte block that a lookup of hash `h` reads (to prefetch it).
    #[inline]
    pub fn block_of(&self, h: u64) -> Option<&'a [u8]> {
        let (block, _, _) = locate(h, self.blocks);
        let base = block as usize * BLOCK_BYTES;
        self.bits.get(base..base + BLOCK_BYTES)
    }

    /// False if the key is certainly absent.
    #[inline]
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.may_contain_hash(key_hash64(key))
    }

    /// [`may_contain`](Self::may_contain) for a precomputed [`key_hash64`].
    #[inline]
    pub fn may_contain_hash(&self, h: u64) -> bool {
        let (block, mut pos, delta) = locate(h, self.blocks);
        let base = block as usize * BLOCK_BYTES;
        let Some(block) = self.bits.get(base..base + BLOCK_BYTES) else {
            return true;
        };
        for _ in 0..self.probes {
            let bit = pos % BLOCK_BITS;
            if block[(bit / 8) as usize] & (1 << (bit % 8)) == 0 {
                return false;
            }
            pos = pos.wrapping_add(delta);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let keys: Vec<Vec<u8>> = (0u64..20_000).map(|i| i.to_be_bytes().to_vec()).collect();
        let hashes: Vec<u64> = keys.iter().map(|k| key_hash64(k)).collect();
        let bytes = build(&hashes, 10);
        let filter = Filter::decode(&bytes, 0).unwrap();
        assert!(keys.iter().all(|k| filter.may_contain(k)));
        let fp = (20_000u64..120_000).filter(|i| filter.may_contain(&i.to_be_bytes())).count();
        // About 1% for 10 bits per key in 512-bit blocks; 3% leaves room for variance.
        assert!(fp < 3_000, "false positives: {fp} of 100000");
    }

    #[test]
    fn bloom_detect_corruption() {
        let bytes = build(&[1, 2, 3], 10);
        assert!(Filter::decode(&bytes[..bytes.len() - 1], 0).is_err());
        let mut bad = bytes.clone();
        bad[0] = 0;
        assert!(Filter::decode(&bad, 0).is_err());
        let mut bad = bytes;
        bad[1] = 0xff;
        assert!(Filter::decode(&bad, 0).is_err());
    }
}
