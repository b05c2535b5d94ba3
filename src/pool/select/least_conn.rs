//! `selection: least_conn` (the default): the usable server with the lowest
//! in-flight/weight wins (the weight slow start gives it now), ties by
//! smooth weighted round-robin.

use super::{weight_at, Cost, Metric};
use crate::pool::Server;

/// In-flight / weight, compared over every usable server.
pub(crate) struct LeastConn;

impl Metric for LeastConn {
    fn cost(s: &Server, now_us: u64) -> Cost {
        Cost {
            est: 1.0,
            load: s.in_flight() as u64,
            weight: weight_at(s, now_us),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{backends, port_of, ports};
    use super::super::Balanced;
    use super::*;
    use crate::pool::now_ms;
    use pingora_load_balancing::selection::{BackendIter, BackendSelection};
    use std::sync::Arc;

    fn first(sel: &Arc<Balanced<LeastConn>>) -> u16 {
        port_of(sel.iter(b"").next().unwrap())
    }

    fn split(spec: &[(u16, u32, bool)], n: usize) -> Vec<usize> {
        let (set, _servers) = backends(spec);
        let sel = Arc::new(Balanced::<LeastConn>::build(&set));
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
        let sel = Arc::new(Balanced::<LeastConn>::build(&set));
        for _ in 0..10 {
            assert_eq!(first(&sel), 2);
        }
        drop(held);
        let sel = Arc::new(Balanced::<LeastConn>::build(&set));
        let picks: Vec<u16> = (0..4).map(|_| first(&sel)).collect();
        assert!(picks.contains(&1) && picks.contains(&2), "{picks:?}");
    }

    #[test]
    fn in_flight_is_compared_per_weight() {
        let (set, servers) = backends(&[(1, 2, false), (2, 1, false)]);
        let sel = Arc::new(Balanced::<LeastConn>::build(&set));
        let _a = servers[0].begin(now_ms()).unwrap(); // 1/2
        assert_eq!(first(&sel), 2); // 0/1 is lower
        let _b = servers[1].begin(now_ms()).unwrap(); // 1/1
        assert_eq!(first(&sel), 1); // 1/2 < 1/1
    }

    #[test]
    fn backups_only_when_no_primary_is_usable_and_iteration_covers_all() {
        let (set, servers) = backends(&[(1, 1, false), (2, 1, false), (3, 1, true)]);
        let sel = Arc::new(Balanced::<LeastConn>::build(&set));
        let order = ports(sel.iter(b""));
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], 3, "backup comes last: {order:?}");
        servers[0].set_drained(true);
        servers[1].set_drained(true);
        assert_eq!(first(&sel), 3);
    }
}
