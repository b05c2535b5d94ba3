//! Test fixtures shared by the selections' tests: servers on loopback with
//! the backend set a pool builds over them, and a closed-loop simulation.

use super::rng::mix;
use super::{Balanced, Metric};
use crate::config::ServerConfig;
use crate::pool::{now_ms, InFlight, Server};
use pingora_load_balancing::selection::BackendIter;
use pingora_load_balancing::Backend;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Servers on 127.0.0.1:`port` with `weight` and `backup`, and the
/// backend set a pool would build over them.
pub(super) fn backends(spec: &[(u16, u32, bool)]) -> (BTreeSet<Backend>, Vec<Arc<Server>>) {
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
            tls: true,
            slow_start: Duration::ZERO,
        });
        let mut b = Backend::new_with_weight(&addr, weight as usize).unwrap();
        b.ext.insert(Arc::clone(&s));
        set.insert(b);
        servers.push(s);
    }
    (set, servers)
}

pub(super) fn port_of(b: &Backend) -> u16 {
    b.addr.as_inet().unwrap().port()
}

/// The ports of everything `it` yields, in order.
pub(super) fn ports(mut it: impl BackendIter) -> Vec<u16> {
    let mut order = vec![];
    while let Some(b) = it.next() {
        order.push(port_of(b));
    }
    order
}

/// A closed-loop simulation: `clients` requests always outstanding, each
/// taking its server's latency (µs); returns requests per server.
pub(super) fn simulate<M: Metric>(
    sel: &Arc<Balanced<M>>,
    servers: &[Arc<Server>],
    latency_us: &[u64],
    clients: usize,
    requests: usize,
    seed: u64,
) -> Vec<usize> {
    let mut now = 1_000_000u64;
    let mut pending: Vec<(u64, usize, InFlight)> = vec![];
    let mut counts = vec![0; servers.len()];
    let mut rng = seed;
    for _ in 0..requests {
        while pending.len() >= clients {
            let k = (0..pending.len()).min_by_key(|&k| pending[k].0).unwrap();
            let (done, i, mut attempt) = pending.swap_remove(k);
            now = now.max(done);
            servers[i].load.latency.observe(latency_us[i] as f64, now);
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
