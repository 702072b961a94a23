//! Hashing of keys an update chooses (client ids, clocks, map keys, root
//! names): foldhash's fast folded multiply, keyed with secrets drawn from the
//! operating system's randomness (through std's `RandomState`), instead of
//! std's SipHash-1-3.
//!
//! Why it stays safe against hash flooding: every multiply in foldhash mixes
//! its input with a secret (`(input ^ secret1) * (input2 ^ secret2)`, folded),
//! so a writer who does not know the secrets cannot pick keys that collide
//! (the fixed multiplicative Fx hash of `fxhash.rs` has input-only collision
//! classes and is kept for keys the index makes itself). The secrets here
//! come from the OS, not from foldhash's own default (address-space layout
//! and the clock), and differ per document index. foldhash does not claim
//! resistance against an attacker who recovers the secrets by observing hash
//! outputs or timings over many interactions; the index never shows a hash or
//! an iteration order to a peer. Measured: the checker's pass over a tree
//! load (110,000 map entries) spent about a tenth of its time in SipHash.

use std::collections::hash_map::RandomState as StdRandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use foldhash::fast::SeedableRandomState;
use foldhash::SharedSeed;

/// A 64-bit secret from the operating system's randomness: std's
/// `RandomState` keys SipHash with OS-random keys (one draw per thread, then
/// varied per instance), so its hash of nothing is a fresh random word.
fn os_random() -> u64 {
    StdRandomState::new().build_hasher().finish()
}

/// The process's shared secret (foldhash expands it into its six seeds).
fn shared_seed() -> &'static SharedSeed {
    static SEED: OnceLock<SharedSeed> = OnceLock::new();
    SEED.get_or_init(|| SharedSeed::from_u64(os_random()))
}

/// A randomly keyed foldhash builder: one per document index (its
/// per-hasher secret), shared by the index's tables by cloning.
#[derive(Clone, Debug)]
pub struct KeyedState(SeedableRandomState);

impl KeyedState {
    /// A builder with a fresh per-hasher secret.
    pub fn new() -> Self {
        KeyedState(SeedableRandomState::with_seed(os_random(), shared_seed()))
    }
}

impl Default for KeyedState {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHasher for KeyedState {
    type Hasher = foldhash::fast::FoldHasher<'static>;
    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

pub type KeyedMap<K, V> = HashMap<K, V, KeyedState>;
pub type KeyedSet<K> = HashSet<K, KeyedState>;

/// For tables keyed by a `u64` that is already a keyed hash: passes it
/// through, so growing the table never hashes the original keys again.
#[derive(Default, Clone, Copy)]
pub struct Prehashed(u64);

impl Hasher for Prehashed {
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed through here; fold anything else in.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type PrehashedMap<V> = HashMap<u64, V, BuildHasherDefault<Prehashed>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_differ_and_agree_with_themselves() {
        let (a, b) = (KeyedState::new(), KeyedState::new());
        let key: &[u8] = b"a map key";
        assert_eq!(a.hash_one(key), a.clone().hash_one(key));
        assert_ne!(a.hash_one(key), b.hash_one(key));
    }

    #[test]
    fn prehashed_passes_u64_through() {
        let h = BuildHasherDefault::<Prehashed>::default();
        assert_eq!(h.hash_one(0xdead_beef_u64), 0xdead_beef);
    }
}
