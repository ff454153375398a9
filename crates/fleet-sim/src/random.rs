//! Seeded random draws every part of the simulation shares.
//!
//! The catalog, the fleet, the worlds and STS all draw from ChaCha RNGs seeded from the
//! scenario's seed; keeping the draw and the seed mixing here, below all of them, lets each
//! use them without depending on another.

use rand::Rng;

/// A draw that is true with probability `p`; a probability outside 0..=1 (or NaN, from a
/// scenario built in code) is clamped instead of panicking.
pub(crate) fn chance(rng: &mut impl Rng, p: f64) -> bool {
    if p.is_nan() || p <= 0.0 {
        return false;
    }
    rng.random::<f64>() < p
}

/// Mixes a seed with a stream number, so each instance or command gets its own RNG.
pub fn derive_seed(seed: u64, stream: u64, index: u64) -> u64 {
    let mut x = seed ^ stream.rotate_left(32) ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
