//! Choosing a server. The cost-based selections (`least_conn`, `p2c`,
//! `ewma`) differ only in what a server costs and in how many servers they
//! compare, so each is a [`Metric`] of a few lines, and one driver,
//! [`Balanced`], does the rest for all of them: the usability filter, the
//! tiers (primaries, then backups), the candidates (all, or two at random)
//! and the tie-break (`ties.rs`). `round_robin` and `random` are Pingora's
//! own; `pick.rs` adapts all five to what the pool asks.
//!
//! The state the costs read (in-flight counts, latency, tie-break credit)
//! lives in the shared [`Server`] objects carried in each `Backend`'s `ext`,
//! not in the selector, because Pingora's `LoadBalancer` rebuilds the
//! selector whenever the backend set changes.

mod ewma;
mod least_conn;
mod p2c;
mod pick;
mod rng;
#[cfg(test)]
mod testing;
mod ties;
#[cfg(test)]
mod warming;

pub(super) use pick::{selector, server_of, Pick};

use super::{Server, Usability};
use crate::clock::now_ms_us;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;
use rng::Rng;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::sync::Arc;

/// Tiers with at most this many usable servers are compared in full even
/// by the two-choice selections: that costs no more than the draw, gives
/// the exact best, and with two or three servers the draw would mostly
/// compare the same pairs anyway.
const FULL_SCAN_MAX: usize = 3;

/// How a selection prices a server.
pub(crate) trait Metric: Send + Sync + 'static {
    /// Whether tiers of more than [`FULL_SCAN_MAX`] usable servers compare
    /// two drawn at random instead of all of them.
    const TWO_CHOICES: bool = false;

    /// What `s` costs at `now_us`; the cheapest wins.
    fn cost(s: &Server, now_us: u64) -> Cost;
}

/// What one server costs now: `est × load / weight`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cost {
    /// Latency estimate (1 for in-flight costs).
    pub est: f64,
    /// In-flight count (or waiting + 1).
    pub load: u64,
    /// Effective weight, at least 1 ([`weight_at`]).
    pub weight: u64,
}

/// The weight `s` is priced with at `now_us`: its weight in thousandths,
/// scaled down while slow start ramps it up (`pool/slow_start.rs`). A
/// server not warming costs one load and a multiplication.
pub(crate) fn weight_at(s: &Server, now_us: u64) -> u64 {
    if s.maybe_warming() {
        s.effective_weight(now_us / 1000)
    } else {
        s.weight() as u64 * 1000
    }
}

impl Cost {
    /// Compares without division; the integer parts are multiplied exactly
    /// first, so equal estimates with proportional load/weight tie exactly.
    pub fn compare(&self, other: &Cost) -> Ordering {
        let a = self.est * self.load.saturating_mul(other.weight.max(1)) as f64;
        let b = other.est * other.load.saturating_mul(self.weight.max(1)) as f64;
        a.partial_cmp(&b).unwrap_or(Ordering::Equal)
    }
}

/// A cost-based selection as a Pingora `BackendSelection`: every backend
/// with its shared state.
pub(crate) struct Balanced<M> {
    backends: Vec<(Backend, Arc<Server>)>,
    _metric: PhantomData<fn() -> M>,
}

impl<M: Metric> BackendSelection for Balanced<M> {
    type Iter = BalancedIter<M>;
    type Config = ();

    fn build(backends: &BTreeSet<Backend>) -> Self {
        let backends = backends
            .iter()
            .filter_map(|b| {
                b.ext
                    .get::<Arc<Server>>()
                    .map(|s| (b.clone(), Arc::clone(s)))
            })
            .collect();
        Balanced {
            backends,
            _metric: PhantomData,
        }
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> BalancedIter<M> {
        let (now_ms, now_us) = now_ms_us();
        // Only the two-choice selections draw.
        let seed = if M::TWO_CHOICES { Rng::seed() } else { 0 };
        self.iter_with(now_ms, now_us, seed)
    }
}

impl<M: Metric> Balanced<M> {
    fn iter_with(self: &Arc<Self>, now_ms: u64, now_us: u64, seed: u64) -> BalancedIter<M> {
        BalancedIter {
            sel: Arc::clone(self),
            yielded: IndexSet::default(),
            backups: false,
            now_ms,
            now_us,
            rng: Rng::new(seed),
        }
    }

    /// An iterator pricing servers at `now_us`, drawing from `seed`.
    #[cfg(test)]
    pub(super) fn iter_at(self: &Arc<Self>, now_us: u64, seed: u64) -> BalancedIter<M> {
        self.iter_with(super::now_ms(), now_us, seed)
    }
}

/// Yields the usable primaries, best first, then the usable backups; each
/// `next` picks again among those not yet yielded, as they are now.
pub(crate) struct BalancedIter<M> {
    sel: Arc<Balanced<M>>,
    yielded: IndexSet,
    backups: bool,
    now_ms: u64,
    now_us: u64,
    rng: Rng,
}

impl<M: Metric> BalancedIter<M> {
    /// The usability filter: the backend may be offered in the current tier.
    fn offered(&self, i: usize) -> bool {
        let s = &self.sel.backends[i].1;
        s.is_backup() == self.backups
            && !self.yielded.has(i)
            && s.usability(self.now_ms) != Usability::Unusable
    }

    /// The next pick of the current tier, if any server is left in it.
    fn pick(&mut self) -> Option<usize> {
        let backends = &self.sel.backends;
        let all = 0..backends.len();
        if !M::TWO_CHOICES {
            let offered = all.clone().filter(|&i| self.offered(i));
            return ties::cheapest::<M>(backends, offered, all, self.now_us);
        }
        let mut few = [0usize; FULL_SCAN_MAX];
        let mut pair = [0usize; 2];
        let mut count = 0;
        for i in all {
            if !self.offered(i) {
                continue;
            }
            if count < FULL_SCAN_MAX {
                few[count] = i;
            }
            // Reservoir sampling of two distinct candidates.
            if count < 2 {
                pair[count] = i;
            } else {
                let j = self.rng.below(count + 1);
                if j < 2 {
                    pair[j] = i;
                }
            }
            count += 1;
        }
        let drawn = if count <= FULL_SCAN_MAX {
            &few[..count]
        } else {
            &pair[..]
        };
        let drawn = drawn.iter().copied();
        ties::cheapest::<M>(backends, drawn.clone(), drawn, self.now_us)
    }
}

impl<M: Metric> BackendIter for BalancedIter<M> {
    /// The one tier loop: primaries, then backups once no primary is left.
    fn next(&mut self) -> Option<&Backend> {
        loop {
            if let Some(i) = self.pick() {
                self.yielded.add(i);
                return Some(&self.sel.backends[i].0);
            }
            if self.backups {
                return None;
            }
            self.backups = true;
        }
    }
}

/// A set of backend indices: bits for the first 64, a list beyond.
#[derive(Default)]
struct IndexSet {
    bits: u64,
    overflow: Vec<usize>,
}

impl IndexSet {
    fn has(&self, i: usize) -> bool {
        if i < 64 {
            self.bits & (1 << i) != 0
        } else {
            self.overflow.contains(&i)
        }
    }

    fn add(&mut self, i: usize) {
        if i < 64 {
            self.bits |= 1 << i;
        } else {
            self.overflow.push(i);
        }
    }
}
