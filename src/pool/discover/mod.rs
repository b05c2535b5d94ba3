//! Servers from DNS: a pool's `resolve:` (its `host:port` servers looked up
//! again and again) or `discover:` (an SRV name). This folder asks DNS and
//! turns answers into [`Found`] addresses; `pool/membership.rs` turns those
//! into the pool's servers, and `lifecycle/discovery.rs` runs the lookups in
//! the background and swaps the pool in. Nothing here is on the request path.
//!
//! - `resolve.rs`: the resolver (hickory) and one lookup of a pool's source
//! - `srv.rs`: SRV records to addresses, weights and tiers
//! - `state.rs`: what a pool's discovery has found and how it went, for the
//!   status pages; it outlives the pool generations it serves

mod resolve;
mod srv;
mod state;

pub(crate) use resolve::{lookup, Answer, Resolver};
pub(crate) use state::Discovery;

use std::cmp::Reverse;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

/// At most this many servers come from DNS per pool. An answer can carry
/// thousands of records (over TCP); each server costs a health check, a
/// row on the status page and attempts in a retry loop, and Pingora's retry
/// ceiling is fixed at start from the largest pool. Primaries are kept
/// before backups, then lower addresses first, so the choice is the same
/// from one answer to the next whatever order the records come in.
pub const MAX_SERVERS: usize = 128;

/// Shortest wait when the TTL decides (`interval` omitted): Consul and
/// others answer with TTL 0, which would mean a query per request.
pub const MIN_TTL_WAIT: Duration = Duration::from_secs(5);
/// Longest wait when the TTL decides: a record with a day's TTL is still
/// checked every 5 minutes, so a removed server does not linger for hours.
pub const MAX_TTL_WAIT: Duration = Duration::from_secs(300);

/// The wait before the next lookup: `interval` if set, else the answer's
/// TTL (seconds) clamped to [`MIN_TTL_WAIT`]..=[`MAX_TTL_WAIT`]; after a
/// failure (no TTL) the shortest of those.
pub(crate) fn next_wait(interval: Option<Duration>, ttl: Option<u32>) -> Duration {
    match (interval, ttl) {
        (Some(i), _) => i,
        (None, Some(t)) => Duration::from_secs(t.into()).clamp(MIN_TTL_WAIT, MAX_TTL_WAIT),
        (None, None) => MIN_TTL_WAIT,
    }
}

/// One address an answer gave for a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Where to connect.
    pub addr: SocketAddr,
    /// `resolve:`: the index of the host-name server it came from.
    pub from: usize,
    /// `discover:`: the SRV weight (0 is taken as 1 later).
    pub weight: u32,
    /// Not of the lowest SRV priority, or of a `backup` host-name server.
    pub backup: bool,
}

/// Orders an answer as the pool should take it (primaries first, then by
/// address), drops repeated addresses (the first, i.e. the primary, wins)
/// and keeps at most [`MAX_SERVERS`]. Returns the number cut by the cap.
pub(crate) fn settle(found: &mut Vec<Found>) -> usize {
    found.sort_by_key(|f| (f.backup, f.addr, f.from, Reverse(f.weight)));
    let mut seen = HashSet::new();
    found.retain(|f| seen.insert(f.addr));
    let over = found.len().saturating_sub(MAX_SERVERS);
    found.truncate(MAX_SERVERS);
    over
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_follows_interval_or_clamped_ttl() {
        let five = Duration::from_secs(5);
        assert_eq!(next_wait(Some(five), Some(3600)), five);
        assert_eq!(next_wait(None, Some(0)), MIN_TTL_WAIT);
        assert_eq!(next_wait(None, Some(30)), Duration::from_secs(30));
        assert_eq!(next_wait(None, Some(86_400)), MAX_TTL_WAIT);
        assert_eq!(next_wait(None, None), MIN_TTL_WAIT);
    }

    #[test]
    fn an_answer_settles_in_a_stable_order_and_is_capped() {
        let f = |a: &str, backup: bool, weight: u32| Found {
            addr: a.parse().unwrap(),
            from: 0,
            weight,
            backup,
        };
        let mut one = vec![
            f("10.0.0.3:80", false, 1),
            f("10.0.0.1:80", true, 1),
            f("10.0.0.2:80", false, 1),
            f("10.0.0.1:80", false, 2),
        ];
        let mut two: Vec<Found> = one.iter().rev().cloned().collect();
        assert_eq!(settle(&mut one), 0);
        settle(&mut two);
        assert_eq!(one, two, "the order of the records does not matter");
        let order: Vec<(String, bool)> =
            one.iter().map(|x| (x.addr.to_string(), x.backup)).collect();
        assert_eq!(
            order,
            [
                ("10.0.0.1:80".to_string(), false),
                ("10.0.0.2:80".to_string(), false),
                ("10.0.0.3:80".to_string(), false),
            ]
        );

        let mut many: Vec<Found> = (0..10_000u32)
            .map(|i| Found {
                addr: SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80 + (i >> 16) as u16)),
                from: 0,
                weight: 1,
                backup: i % 2 == 0,
            })
            .collect();
        assert_eq!(settle(&mut many), 10_000 - MAX_SERVERS);
        assert_eq!(many.len(), MAX_SERVERS);
        assert!(many.iter().all(|x| !x.backup), "primaries are kept first");
    }
}
