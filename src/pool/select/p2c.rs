//! `selection: p2c`: power of two choices on in-flight/weight, for large
//! pools. It never picks the busiest server and spreads over the rest
//! instead of always the single least loaded one, so several load
//! balancers sharing a pool (each seeing only its own counts) do not herd
//! onto the same server.

use super::least_conn::LeastConn;
use super::{Cost, Metric};
use crate::pool::Server;

/// In-flight / weight, like least_conn, over two random usable servers.
pub(crate) struct P2c;

impl Metric for P2c {
    const TWO_CHOICES: bool = true;

    fn cost(s: &Server, now_us: u64) -> Cost {
        LeastConn::cost(s, now_us)
    }
}

#[cfg(test)]
mod tests {
    use super::super::rng::mix;
    use super::super::testing::{backends, port_of, ports, simulate};
    use super::super::Balanced;
    use super::*;
    use crate::pool::now_ms;
    use pingora_load_balancing::selection::{BackendIter, BackendSelection};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn p2c(spec: &[(u16, u32, bool)]) -> (Arc<Balanced<P2c>>, Vec<Arc<Server>>) {
        let (set, servers) = backends(spec);
        (Arc::new(Balanced::<P2c>::build(&set)), servers)
    }

    fn first(sel: &Arc<Balanced<P2c>>) -> u16 {
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
        let order = ports(sel.iter(b""));
        assert_eq!(order.len(), 5, "{order:?}");
        assert!(!order.contains(&3));
        assert!(order[3..].iter().all(|&p| p > 4), "{order:?}");
        for s in &servers[..4] {
            s.set_drained(true);
        }
        assert!(first(&sel) > 4);
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
