//! The random draws of power of two choices: cheap, lock-free, and
//! reproducible from a seed so that tests can replay a draw. Not for
//! anything that needs unpredictability.

use std::cell::Cell;

/// A stream of draws (splitmix64).
pub(super) struct Rng(u64);

impl Rng {
    /// A stream starting at `seed`.
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A fresh seed from a per-thread stream over a random start, so that
    /// threads and successive picks draw differently.
    pub(super) fn seed() -> u64 {
        thread_local! {
            static STATE: Cell<u64> = Cell::new({
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_usize(&h as *const _ as usize);
                h.finish()
            });
        }
        STATE.with(|s| {
            let x = s.get().wrapping_add(GAMMA);
            s.set(x);
            mix(x)
        })
    }

    /// Uniform in `0..bound` (`bound` > 0).
    pub(super) fn below(&mut self, bound: usize) -> usize {
        self.0 = self.0.wrapping_add(GAMMA);
        ((mix(self.0) as u128 * bound as u128) >> 64) as usize
    }
}

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output function: spreads consecutive inputs over all bits.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
