//! least_conn as a Pingora `BackendSelection`: the usable server with the
//! lowest in-flight/weight wins; ties are broken by smooth weighted
//! round-robin, so equal idle servers alternate.
//!
//! The counts live in the shared [`Server`] objects carried in each
//! `Backend`'s `ext`, not in the selector, because Pingora's `LoadBalancer`
//! rebuilds the selector whenever the backend set changes.

use super::p2c::Seen;
use super::server::{now_ms, Server, Usability};
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The selector: every backend with its shared state, primaries first.
pub struct LeastConn {
    backends: Vec<(Backend, Arc<Server>)>,
}

impl BackendSelection for LeastConn {
    type Iter = LeastConnIter;
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
        LeastConn { backends }
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> LeastConnIter {
        LeastConnIter {
            sel: Arc::clone(self),
            yielded: Seen::default(),
            backups: false,
            now: now_ms(),
        }
    }
}

/// Yields usable primaries from least to most loaded, then usable backups.
pub struct LeastConnIter {
    sel: Arc<LeastConn>,
    /// Backends already yielded.
    yielded: Seen,
    backups: bool,
    now: u64,
}

impl LeastConnIter {
    /// The best not-yet-yielded usable backend of the current tier.
    fn best(&self) -> Option<usize> {
        let mut best: Option<(usize, u64, u64)> = None; // (index, in_flight, weight)
        let mut tie_weight_sum: i64 = 0;
        let mut tied: u64 = 0; // bitmask of tied candidates (first 64)
        for (i, (_, s)) in self.sel.backends.iter().enumerate() {
            if s.is_backup() != self.backups
                || self.yielded.has(i)
                || s.usability(self.now) == Usability::Unusable
            {
                continue;
            }
            let (load, w) = (s.in_flight() as u64, s.weight() as u64);
            match best {
                // load/w < bload/bw, compared without division
                Some((_, bl, bw)) if load * bw > bl * w => {}
                Some((_, bl, bw)) if load * bw == bl * w => {
                    tie_weight_sum += w as i64;
                    if i < 64 {
                        tied |= 1 << i;
                    }
                }
                _ => {
                    best = Some((i, load, w));
                    tie_weight_sum = w as i64;
                    tied = if i < 64 { 1 << i } else { 0 };
                }
            }
        }
        let (first, _, _) = best?;
        if tied.count_ones() <= 1 {
            return Some(first);
        }
        // Smooth weighted round-robin among the tied servers.
        let mut pick = first;
        let mut pick_cur = i64::MIN;
        for i in 0..self.sel.backends.len().min(64) {
            if tied & (1 << i) == 0 {
                continue;
            }
            let s = &self.sel.backends[i].1;
            let cur = s.swrr_current.fetch_add(s.weight() as i64, Relaxed) + s.weight() as i64;
            if cur > pick_cur {
                pick = i;
                pick_cur = cur;
            }
        }
        self.sel.backends[pick]
            .1
            .swrr_current
            .fetch_sub(tie_weight_sum, Relaxed);
        Some(pick)
    }
}

impl BackendIter for LeastConnIter {
    fn next(&mut self) -> Option<&Backend> {
        loop {
            if let Some(i) = self.best() {
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

#[cfg(test)]
mod tests {
    use super::*;

    // Shared with the p2c tests: servers on loopback and their backend set.
    use crate::pool::p2c::tests::backends;

    fn first(sel: &Arc<LeastConn>) -> u16 {
        sel.iter(b"").next().unwrap().addr.as_inet().unwrap().port()
    }

    fn split(spec: &[(u16, u32, bool)], n: usize) -> Vec<usize> {
        let (set, _servers) = backends(spec);
        let sel = Arc::new(LeastConn::build(&set));
        let mut counts = vec![0; spec.len()];
        for _ in 0..n {
            let port = first(&sel);
            counts[spec.iter().position(|s| s.0 == port).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn equal_idle_servers_alternate_five_five() {
        assert_eq!(split(&[(1, 1, false), (2, 1, false)], 10), vec![5, 5]);
    }

    #[test]
    fn weights_three_to_one_split_fifteen_five() {
        assert_eq!(split(&[(1, 3, false), (2, 1, false)], 20), vec![15, 5]);
    }

    #[test]
    fn the_least_loaded_wins_and_counts_survive_a_rebuild() {
        let (set, servers) = backends(&[(1, 1, false), (2, 1, false)]);
        let held = servers[0].begin(now_ms()).unwrap();
        // A rebuild (as Pingora does on backend changes) keeps the counts.
        let sel = Arc::new(LeastConn::build(&set));
        for _ in 0..10 {
            assert_eq!(first(&sel), 2);
        }
        drop(held);
        let sel = Arc::new(LeastConn::build(&set));
        let picks: Vec<u16> = (0..4).map(|_| first(&sel)).collect();
        assert!(picks.contains(&1) && picks.contains(&2), "{picks:?}");
    }

    #[test]
    fn in_flight_is_compared_per_weight() {
        let (set, servers) = backends(&[(1, 2, false), (2, 1, false)]);
        let sel = Arc::new(LeastConn::build(&set));
        let _a = servers[0].begin(now_ms()).unwrap(); // 1/2
        assert_eq!(first(&sel), 2); // 0/1 is lower
        let _b = servers[1].begin(now_ms()).unwrap(); // 1/1
        assert_eq!(first(&sel), 1); // 1/2 < 1/1
    }

    #[test]
    fn backups_only_when_no_primary_is_usable_and_iteration_covers_all() {
        let (set, servers) = backends(&[(1, 1, false), (2, 1, false), (3, 1, true)]);
        let sel = Arc::new(LeastConn::build(&set));
        let mut it = sel.iter(b"");
        let mut order = vec![];
        while let Some(b) = it.next() {
            order.push(b.addr.as_inet().unwrap().port());
        }
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], 3, "backup comes last: {order:?}");
        servers[0].set_drained(true);
        servers[1].set_drained(true);
        assert_eq!(first(&sel), 3);
    }
}
