//! Seeds and hashing: splitmix-style mixing, FNV-1a, the seed of a parameter, and
//! [`RandomStream`] (Penzai's deterministic stream of random keys).
//!
//! Everything random in pzt is a pure function of a base seed and a name or counter mixed in
//! here, never of the order in which things are built.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// splitmix64-style mixing of two words.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a over bytes.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The seed of the parameter whose init name is `name`, under `base_seed`.
pub fn param_seed(base_seed: u64, name: &str) -> u64 {
    mix(base_seed, fnv1a(name.as_bytes()))
}

/// A deterministic sequence of random keys from a base seed (Penzai's `RandomStream`). Each
/// [`next_key`](Self::next_key) returns a fresh 64-bit key; the sequence depends only on the
/// base seed. Clones share the position.
#[derive(Clone, Debug)]
pub struct RandomStream {
    base: u64,
    counter: Arc<AtomicU64>,
}

impl RandomStream {
    /// A stream starting at position 0.
    pub fn new(base_seed: u64) -> Self {
        Self::at(base_seed, 0)
    }
    /// A stream starting at `position` (to resume a stream).
    pub fn at(base_seed: u64, position: u64) -> Self {
        RandomStream {
            base: base_seed,
            counter: Arc::new(AtomicU64::new(position)),
        }
    }
    /// The base seed.
    pub fn base_seed(&self) -> u64 {
        self.base
    }
    /// How many keys were drawn.
    pub fn position(&self) -> u64 {
        self.counter.load(Ordering::SeqCst)
    }
    /// The next key.
    pub fn next_key(&self) -> u64 {
        let i = self.counter.fetch_add(1, Ordering::SeqCst);
        mix(self.base, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn streams_are_deterministic_and_resumable() {
        let a = RandomStream::new(7);
        let keys: Vec<u64> = (0..4).map(|_| a.next_key()).collect();
        let b = RandomStream::at(7, 2);
        assert_eq!(b.next_key(), keys[2]);
        assert_eq!(a.position(), 4);
        assert_ne!(keys[0], keys[1]);
    }
}
