//! `selection: ewma`: latency-aware least-load (peak-EWMA, as in Linkerd
//! and Finagle) with power of two choices. The estimate itself is measured
//! in `latency.rs`; this is only how it prices a server.
//!
//! The cost is `estimate × (waiting + 1) / weight`, `waiting` being the
//! attempts still without a response header ([`Server::awaiting`]; Linkerd
//! counts a request pending until its response's first data): what follows
//! the header is fulcrum's own work, and counting it let fulcrum's backlog
//! weigh on the busiest server. While a server has nothing waiting, the
//! estimate it is priced at decays toward zero with the same time constant,
//! counted from its last update (Linkerd and Finagle decay it the same way
//! when they read it): a server that was slow, or failed, and is not being
//! used is tried again after about `ln(its estimate / the others' cost) ×
//! decay`, and its new answers are measured. Without this a server that
//! became fast again would never be measured again.

use super::{weight_at, Cost, Metric};
use crate::pool::Server;

/// Latency estimate × (waiting + 1) / weight, over two random usable servers.
pub(crate) struct Ewma;

impl Metric for Ewma {
    const TWO_CHOICES: bool = true;

    fn cost(s: &Server, now_us: u64) -> Cost {
        let n = s.awaiting() as u64;
        Cost {
            est: s.load.latency.effective_us(now_us, n == 0),
            load: n + 1,
            weight: weight_at(s, now_us),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{backends, port_of, ports, simulate};
    use super::super::Balanced;
    use super::*;
    use crate::clock::now_us;
    use pingora_load_balancing::selection::{BackendIter, BackendSelection};
    use std::sync::Arc;
    use std::time::Duration;

    const S: u64 = 1_000_000; // one second in µs

    fn ewma_sel(spec: &[(u16, u32, bool)]) -> (Arc<Balanced<Ewma>>, Vec<Arc<Server>>) {
        let (set, servers) = backends(spec);
        for s in &servers {
            s.set_latency_params(Duration::from_secs(10), Duration::from_millis(1));
        }
        (Arc::new(Balanced::<Ewma>::build(&set)), servers)
    }

    fn first_at(sel: &Arc<Balanced<Ewma>>, now: u64) -> u16 {
        port_of(sel.iter_at(now, 7).next().unwrap())
    }

    #[test]
    fn the_cheapest_server_wins_by_latency_and_load() {
        let (sel, servers) = ewma_sel(&[(1, 1, false), (2, 1, false)]);
        servers[0].load.latency.observe(1000.0, S);
        servers[1].load.latency.observe(20_000.0, S);
        for _ in 0..10 {
            assert_eq!(first_at(&sel, S), 1);
        }
        // 1ms × (19 + 1) = 20ms ties with 20ms × 1; with 20 in flight
        // (1ms × 21 > 20ms) the slow one is cheaper.
        let mut held: Vec<_> = (0..19).map(|_| servers[0].begin(1).unwrap()).collect();
        let picks: Vec<u16> = (0..4).map(|_| first_at(&sel, S)).collect();
        assert!(picks.contains(&1) && picks.contains(&2), "a tie: {picks:?}");
        held.push(servers[0].begin(1).unwrap());
        assert_eq!(first_at(&sel, S), 2);
        // Their headers arrived (1ms), the bodies are still being relayed:
        // the server's part is done, only the waiting count weighs.
        for a in &mut held {
            a.record_response(Duration::from_millis(1));
        }
        assert_eq!(servers[0].in_flight(), 20);
        assert_eq!(first_at(&sel, S), 1);
        drop(held);
        assert_eq!(first_at(&sel, S), 1);
    }

    #[test]
    fn equal_servers_alternate_and_weights_divide_the_cost() {
        let (sel, servers) = ewma_sel(&[(1, 1, false), (2, 1, false)]);
        for s in &servers {
            s.load.latency.observe(1000.0, S);
        }
        let picks: Vec<u16> = (0..6).map(|_| first_at(&sel, S)).collect();
        assert_eq!(picks, vec![1, 2, 1, 2, 1, 2]);

        let (sel, servers) = ewma_sel(&[(1, 2, false), (2, 1, false)]);
        for s in &servers {
            s.load.latency.observe(1000.0, S);
        }
        assert_eq!(first_at(&sel, S), 1, "1ms/2 < 1ms/1");
        let _a = servers[0].begin(1).unwrap(); // 1ms × 2 / 2 = 1ms/1: a tie
        let picks: Vec<u16> = (0..4).map(|_| first_at(&sel, S)).collect();
        assert!(picks.contains(&1) && picks.contains(&2), "{picks:?}");
        let _b = servers[0].begin(1).unwrap(); // 1ms × 3 / 2 > 1ms
        assert_eq!(first_at(&sel, S), 2);
    }

    #[test]
    fn a_slow_idle_server_is_tried_again_after_a_few_decays() {
        let (sel, servers) = ewma_sel(&[(1, 1, false), (2, 1, false)]);
        servers[0].load.latency.observe(1000.0, S);
        servers[1].load.latency.observe(20_000.0, S);
        // The fast one stays busy (one in flight: cost 2ms); the slow one
        // idles. 20ms × exp(-t/10s) < 2ms after t = 10s × ln 10 ≈ 23s.
        servers[0].load.latency.observe(1000.0, 40 * S);
        let _busy = servers[0].begin(1).unwrap();
        assert_eq!(first_at(&sel, 20 * S), 1);
        assert_eq!(first_at(&sel, 25 * S), 2);
    }

    #[test]
    fn backups_only_when_no_primary_is_usable() {
        let (sel, servers) = ewma_sel(&[(1, 1, false), (2, 1, false), (3, 1, true)]);
        servers[0].load.latency.observe(50_000.0, S);
        servers[1].load.latency.observe(50_000.0, S);
        servers[2].load.latency.observe(100.0, S); // fastest, but a backup
        let order = ports(sel.iter_at(S, 1));
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], 3, "{order:?}");
        servers[0].set_drained(true);
        servers[1].set_drained(true);
        assert_eq!(first_at(&sel, S), 3);
    }

    #[test]
    fn state_survives_a_rebuild() {
        let spec = [(1, 1, false), (2, 1, false)];
        let (set, servers) = backends(&spec);
        servers[0].load.latency.observe(30_000.0, S);
        servers[1].load.latency.observe(1000.0, S);
        let again = Arc::new(Balanced::<Ewma>::build(&set));
        assert_eq!(port_of(again.iter_at(S, 3).next().unwrap()), 2);
    }

    #[test]
    fn in_a_simulation_the_slow_server_gets_almost_nothing() {
        let (sel, servers) = ewma_sel(&[(1, 1, false), (2, 1, false)]);
        // 1ms and 20ms, 8 requests always outstanding.
        let counts = simulate(&sel, &servers, &[1000, 20_000], 8, 5000, 11);
        assert!(counts[1] < 5000 / 100, "{counts:?}");
    }

    #[test]
    fn in_a_simulation_weights_split_equal_servers_under_load() {
        let (sel, servers) = ewma_sel(&[(1, 3, false), (2, 1, false)]);
        let counts = simulate(&sel, &servers, &[1000, 1000], 16, 8000, 5);
        let share = counts[0] as f64 / 8000.0;
        assert!((0.65..0.9).contains(&share), "weight 3 of 4: {counts:?}");
    }

    #[test]
    fn the_estimate_survives_a_reload_and_takes_new_settings() {
        let doc = "pools:\n  p:\n    selection: ewma\n    decay: 2s\n    servers: [{addr: \"127.0.0.1:1\"}, {addr: \"127.0.0.1:2\"}]\n";
        let cfg = crate::config::from_str(doc, &|_| None).unwrap().config;
        let pool = crate::pool::Pool::new(cfg.pools[0].clone(), &Default::default());
        pool.servers[0].load.latency.observe(30_000.0, now_us());
        pool.servers[1].load.latency.observe(500.0, now_us());
        for _ in 0..5 {
            assert_eq!(pool.select(&[]).unwrap().server().addr.port(), 2);
        }
        let registry: crate::pool::ServerRegistry = pool
            .servers
            .iter()
            .map(|s| (("p".to_string(), s.addr), Arc::clone(s)))
            .collect();
        let doc = doc.replace("decay: 2s", "decay: 5s");
        let cfg = crate::config::from_str(&doc, &|_| None).unwrap().config;
        let reloaded = crate::pool::Pool::new(cfg.pools[0].clone(), &registry);
        assert!(Arc::ptr_eq(&reloaded.servers[0], &pool.servers[0]));
        assert_eq!(reloaded.servers[0].ewma_ms(), Some(30.0));
        assert_eq!(reloaded.servers[0].load.latency.decay(), 5e6);
        assert_eq!(reloaded.select(&[]).unwrap().server().addr.port(), 2);
        // A retry skips the tried server even though it is the cheapest.
        let tried = [reloaded.servers[1].addr];
        assert_eq!(reloaded.select(&tried).unwrap().server().addr.port(), 1);
    }
}
