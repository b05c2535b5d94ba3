//! Power of two choices as a Pingora `BackendSelection`, generic over what
//! a server costs: `selection: p2c` compares in-flight/weight, `selection:
//! ewma` (see `ewma.rs`) latency × (in-flight + 1)/weight.
//!
//! Each pick draws two distinct usable servers at random (one pass,
//! reservoir sampling) and takes the cheaper. In a tier of at most
//! [`FULL_SCAN_MAX`] usable servers it compares all of them instead: that
//! costs no more than the draw, gives the exact best, and with two or three
//! servers the draw would mostly compare the same pairs anyway. The random
//! draw matters in larger pools: it spreads load when costs are stale or
//! similar (several load balancers, or a server whose estimate just
//! changed) instead of sending everything to the single cheapest, and it
//! never picks the most expensive server.
//!
//! Exact ties are broken by smooth weighted round-robin over the tied
//! servers, so equal idle servers alternate. Primaries come first; backups
//! only once no primary is left. Like least_conn, the state lives in the
//! shared [`Server`] objects carried in each `Backend`'s `ext`.

use super::server::{now_ms, now_us, Server, Usability};
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;
use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Tiers with at most this many usable servers are compared in full.
pub const FULL_SCAN_MAX: usize = 3;

/// What one server costs now: `est × load / weight`.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// Latency estimate (1 for p2c).
    pub est: f64,
    /// In-flight count (+1 for ewma).
    pub load: u64,
    /// Weight, at least 1.
    pub weight: u64,
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

/// How a selection prices a server.
pub trait LoadMetric: Send + Sync + 'static {
    /// The cost of `s` at `now_us`.
    fn cost(s: &Server, now_us: u64) -> Cost;
}

/// Cost of `selection: p2c`: in-flight / weight.
pub struct InFlightCost;

impl LoadMetric for InFlightCost {
    fn cost(s: &Server, _now_us: u64) -> Cost {
        Cost {
            est: 1.0,
            load: s.in_flight() as u64,
            weight: s.weight() as u64,
        }
    }
}

/// `selection: p2c`.
pub type P2c = TwoChoices<InFlightCost>;

/// The selector: every backend with its shared state.
pub struct TwoChoices<M> {
    backends: Vec<(Backend, Arc<Server>)>,
    _metric: PhantomData<fn() -> M>,
}

impl<M: LoadMetric> BackendSelection for TwoChoices<M> {
    type Iter = TwoChoicesIter<M>;
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
        TwoChoices {
            backends,
            _metric: PhantomData,
        }
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> TwoChoicesIter<M> {
        self.iter_at(now_us(), random_seed())
    }
}

impl<M: LoadMetric> TwoChoices<M> {
    /// An iterator pricing servers at `now_us`, drawing from `seed`.
    pub fn iter_at(self: &Arc<Self>, now_us: u64, seed: u64) -> TwoChoicesIter<M> {
        TwoChoicesIter {
            sel: Arc::clone(self),
            seen: Seen::default(),
            backups: false,
            now_ms: now_ms(),
            now_us,
            rng: seed,
        }
    }
}

/// A per-thread stream of seeds (splitmix64 over a random start).
fn random_seed() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(&h as *const _ as usize);
            h.finish()
        });
    }
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        mix(x)
    })
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Which backends were already yielded (bits for the first 64).
#[derive(Default)]
pub(super) struct Seen {
    bits: u64,
    overflow: Vec<usize>,
}

impl Seen {
    pub(super) fn has(&self, i: usize) -> bool {
        if i < 64 {
            self.bits & (1 << i) != 0
        } else {
            self.overflow.contains(&i)
        }
    }

    pub(super) fn add(&mut self, i: usize) {
        if i < 64 {
            self.bits |= 1 << i;
        } else {
            self.overflow.push(i);
        }
    }
}

/// Yields usable primaries, the chosen one first, then usable backups.
pub struct TwoChoicesIter<M> {
    sel: Arc<TwoChoices<M>>,
    seen: Seen,
    backups: bool,
    now_ms: u64,
    now_us: u64,
    rng: u64,
}

impl<M: LoadMetric> TwoChoicesIter<M> {
    /// Uniform in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: usize) -> usize {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        ((mix(self.rng) as u128 * bound as u128) >> 64) as usize
    }

    /// The next pick of the current tier, if any server is left in it.
    fn pick(&mut self) -> Option<usize> {
        let mut first = [0usize; FULL_SCAN_MAX];
        let mut pair = [0usize; 2];
        let mut count = 0;
        for i in 0..self.sel.backends.len() {
            let s = &self.sel.backends[i].1;
            if s.is_backup() != self.backups
                || self.seen.has(i)
                || s.usability(self.now_ms) == Usability::Unusable
            {
                continue;
            }
            if count < FULL_SCAN_MAX {
                first[count] = i;
            }
            // Reservoir sampling of two distinct candidates.
            if count < 2 {
                pair[count] = i;
            } else {
                let j = self.below(count + 1);
                if j < 2 {
                    pair[j] = i;
                }
            }
            count += 1;
        }
        match count {
            0 => None,
            n if n <= FULL_SCAN_MAX => Some(self.cheapest(&first[..n])),
            _ => Some(self.cheapest(&pair)),
        }
    }

    /// The cheapest of `candidates`; exact ties by smooth weighted round-robin.
    fn cheapest(&self, candidates: &[usize]) -> usize {
        let n = candidates.len();
        let mut c = [Cost {
            est: 0.0,
            load: 0,
            weight: 1,
        }; FULL_SCAN_MAX];
        for (k, &i) in candidates.iter().enumerate() {
            c[k] = M::cost(&self.sel.backends[i].1, self.now_us);
        }
        let mut best = 0;
        for k in 1..n {
            if c[k].compare(&c[best]) == Ordering::Less {
                best = k;
            }
        }
        let tied = || (0..n).filter(move |&k| c[k].compare(&c[best]) == Ordering::Equal);
        if tied().count() <= 1 {
            return candidates[best];
        }
        let mut pick = candidates[best];
        let mut pick_cur = i64::MIN;
        let mut weight_sum = 0i64;
        for k in tied() {
            let s = &self.sel.backends[candidates[k]].1;
            let w = s.weight() as i64;
            weight_sum += w;
            let cur = s.swrr_current.fetch_add(w, Relaxed) + w;
            if cur > pick_cur {
                pick = candidates[k];
                pick_cur = cur;
            }
        }
        self.sel.backends[pick]
            .1
            .swrr_current
            .fetch_sub(weight_sum, Relaxed);
        pick
    }
}

impl<M: LoadMetric> BackendIter for TwoChoicesIter<M> {
    fn next(&mut self) -> Option<&Backend> {
        loop {
            if let Some(i) = self.pick() {
                self.seen.add(i);
                return Some(&self.sel.backends[i].0);
            }
            if self.backups {
                return None;
            }
            self.backups = true;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::ServerConfig;
    use proptest::prelude::*;
    use std::time::Duration;

    /// Servers on 127.0.0.1:`port` with `weight` and `backup`, and the
    /// backend set a pool would build over them.
    pub(crate) fn backends(spec: &[(u16, u32, bool)]) -> (BTreeSet<Backend>, Vec<Arc<Server>>) {
        let mut set = BTreeSet::new();
        let mut servers = vec![];
        for &(port, weight, backup) in spec {
            let addr = format!("127.0.0.1:{port}");
            let s = Server::new(&ServerConfig {
                name: addr.clone(),
                addr: addr.parse().unwrap(),
                weight,
                max_fails: 1,
                fail_timeout: Duration::from_secs(10),
                max_conns: 0,
                backup,
                down: false,
            });
            let mut b = Backend::new_with_weight(&addr, weight as usize).unwrap();
            b.ext.insert(Arc::clone(&s));
            set.insert(b);
            servers.push(s);
        }
        (set, servers)
    }

    pub(crate) fn port_of(b: &Backend) -> u16 {
        b.addr.as_inet().unwrap().port()
    }

    fn p2c(spec: &[(u16, u32, bool)]) -> (Arc<P2c>, Vec<Arc<Server>>) {
        let (set, servers) = backends(spec);
        (Arc::new(P2c::build(&set)), servers)
    }

    fn first(sel: &Arc<P2c>) -> u16 {
        port_of(sel.iter(b"").next().unwrap())
    }

    #[test]
    fn equal_idle_servers_alternate_and_weights_split_idle_traffic() {
        let (sel, _s) = p2c(&[(1, 1, false), (2, 1, false)]);
        let picks: Vec<u16> = (0..10).map(|_| first(&sel)).collect();
        assert_eq!(picks.iter().filter(|&&p| p == 1).count(), 5, "{picks:?}");
        let (sel, _s) = p2c(&[(1, 3, false), (2, 1, false)]);
        let ones = (0..20).filter(|_| first(&sel) == 1).count();
        assert_eq!(ones, 15);
    }

    #[test]
    fn the_busy_server_loses_and_in_flight_is_per_weight() {
        let (sel, servers) = p2c(&[(1, 2, false), (2, 1, false)]);
        let _a = servers[0].begin(now_ms()).unwrap(); // 1/2
        assert_eq!(first(&sel), 2); // 0/1
        let _b = servers[1].begin(now_ms()).unwrap(); // 1/1
        assert_eq!(first(&sel), 1); // 1/2 < 1/1
    }

    #[test]
    fn a_large_pool_never_picks_the_busiest_and_spreads_over_the_rest() {
        let spec: Vec<(u16, u32, bool)> = (1..=8).map(|p| (p, 1, false)).collect();
        let (sel, servers) = p2c(&spec);
        // Server 1 has 5 in flight, the others 0..=1.
        let _held: Vec<_> = (0..5)
            .map(|_| servers[0].begin(now_ms()).unwrap())
            .chain((1..4).map(|i| servers[i].begin(now_ms()).unwrap()))
            .collect();
        let mut counts = [0usize; 9];
        for seed in 0..4000u64 {
            counts[port_of(sel.iter_at(1, mix(seed)).next().unwrap()) as usize] += 1;
        }
        assert_eq!(counts[1], 0, "{counts:?}");
        for (p, &n) in counts.iter().enumerate().skip(2) {
            assert!(n > 100, "server {p} got {n}: {counts:?}");
        }
        // The idle ones win more often than those with one in flight.
        let busy: usize = counts[2..5].iter().sum();
        let idle: usize = counts[5..9].iter().sum();
        assert!(idle > busy, "{counts:?}");
    }

    #[test]
    fn iteration_yields_each_usable_server_once_backups_last() {
        let spec: Vec<(u16, u32, bool)> = (1..=6).map(|p| (p, 1, p > 4)).collect();
        let (sel, servers) = p2c(&spec);
        servers[2].set_drained(true);
        let mut it = sel.iter(b"");
        let mut order = vec![];
        while let Some(b) = it.next() {
            order.push(port_of(b));
        }
        assert_eq!(order.len(), 5, "{order:?}");
        assert!(!order.contains(&3));
        assert!(order[3..].iter().all(|&p| p > 4), "{order:?}");
        for s in &servers[..4] {
            s.set_drained(true);
        }
        assert!(first(&sel) > 4);
    }

    /// A closed-loop simulation: `clients` requests always outstanding, each
    /// taking its server's latency (µs); returns requests per server.
    pub(crate) fn simulate<M: LoadMetric>(
        sel: &Arc<TwoChoices<M>>,
        servers: &[Arc<Server>],
        latency_us: &[u64],
        clients: usize,
        requests: usize,
        seed: u64,
    ) -> Vec<usize> {
        let mut now = 1_000_000u64;
        let mut pending: Vec<(u64, usize, super::super::InFlight)> = vec![];
        let mut counts = vec![0; servers.len()];
        let mut rng = seed;
        for _ in 0..requests {
            while pending.len() >= clients {
                let k = (0..pending.len()).min_by_key(|&k| pending[k].0).unwrap();
                let (done, i, mut attempt) = pending.swap_remove(k);
                now = now.max(done);
                servers[i].latency.observe(latency_us[i] as f64, now);
                attempt.succeed();
            }
            rng = rng.wrapping_add(1);
            let b = sel.iter_at(now, mix(rng)).next().unwrap().clone();
            let i = servers
                .iter()
                .position(|s| s.addr == b.addr.as_inet().copied().unwrap())
                .unwrap();
            counts[i] += 1;
            let attempt = servers[i].begin(now_ms()).unwrap();
            // A little jitter so that requests do not finish in lockstep.
            let jitter = mix(rng) % (latency_us[i] / 10 + 1);
            pending.push((now + latency_us[i] + jitter, i, attempt));
        }
        for s in servers {
            assert!(s.in_flight() <= clients);
        }
        drop(pending);
        for s in servers {
            assert_eq!(s.in_flight(), 0);
        }
        counts
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn weights_are_respected_under_load(
            w in proptest::collection::vec(1u32..5, 2..7),
            seed in any::<u64>(),
        ) {
            let spec: Vec<(u16, u32, bool)> =
                w.iter().enumerate().map(|(i, &w)| (i as u16 + 1, w, false)).collect();
            let (sel, servers) = p2c(&spec);
            let latency = vec![1000; w.len()];
            let n = 4000;
            let counts = simulate(&sel, &servers, &latency, 4 * w.len(), n, seed);
            let total_w: u32 = w.iter().sum();
            for (i, &c) in counts.iter().enumerate() {
                let expect = n as f64 * w[i] as f64 / total_w as f64;
                prop_assert!(
                    (c as f64 - expect).abs() < expect * 0.5 + 20.0,
                    "server {} (weight {}) got {} of {}, expected about {:.0}: {:?}",
                    i, w[i], c, n, expect, counts
                );
            }
        }

        #[test]
        fn counts_never_go_negative_or_leak(
            ops in proptest::collection::vec((0usize..4, any::<bool>()), 1..200),
        ) {
            let (sel, servers) = p2c(&[(1, 1, false), (2, 2, false), (3, 1, false), (4, 1, true)]);
            let mut held = vec![];
            for (k, release) in ops {
                if release && !held.is_empty() {
                    held.swap_remove(k % held.len());
                } else if let Some(b) = sel.iter(b"").next() {
                    let s = servers.iter().find(|s| s.addr.port() == port_of(b)).unwrap();
                    held.push(s.begin(now_ms()).unwrap());
                }
                let total: usize = servers.iter().map(|s| s.in_flight()).sum();
                prop_assert_eq!(total, held.len());
            }
            drop(held);
            prop_assert!(servers.iter().all(|s| s.in_flight() == 0));
        }
    }
}
