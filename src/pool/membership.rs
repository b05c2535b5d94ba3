//! How a pool's list of servers changes: a server joins ([`join`], the one
//! place where a new server's state is created, at start, on a reload or
//! when DNS finds it), stays (the same `Arc<Server>`: health, passive
//! failures, in-flight count and latency carry on), or leaves (marked
//! removed by whoever swaps the pool in; it finishes its in-flight requests
//! and is dropped with the last of them). [`diff`] says which is which;
//! [`members`] turns a DNS answer into the server list of a pool.

use super::discover::{Discovery, Found, MAX_SERVERS};
use super::{Pool, Server};
use crate::config::{DiscoverySource, PoolConfig, ServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;

/// Why a server joins a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Joining {
    /// In the config the process started with.
    Start,
    /// Added by a SIGHUP reload.
    Reload,
    /// Found by `resolve:` or `discover:` after the pool was built.
    Discovered,
}

/// A server joins a pool: its shared state starts here, healthy until
/// proven otherwise. One added by a reload or found by DNS becomes usable
/// now, so it warms up (`slow_start`); the servers of the config the
/// process started with were serving before (an upgrade, a restart).
pub(crate) fn join(cfg: &ServerConfig, why: Joining) -> Arc<Server> {
    let s = Server::new(cfg);
    if why != Joining::Start {
        s.warm_up(crate::clock::now_ms());
    }
    s
}

/// The change between two lists of servers, by address.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Diff {
    /// In `new` only.
    pub joined: Vec<SocketAddr>,
    /// In both, with the same settings.
    pub kept: Vec<SocketAddr>,
    /// In both, with other settings (weight, tier, ...).
    pub changed: Vec<SocketAddr>,
    /// In `old` only.
    pub left: Vec<SocketAddr>,
}

impl Diff {
    /// Nothing joins, leaves or changes.
    pub(crate) fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.changed.is_empty() && self.left.is_empty()
    }
}

/// Which servers of `new` join, stay or change, and which of `old` leave.
pub(crate) fn diff(old: &[ServerConfig], new: &[ServerConfig]) -> Diff {
    let mut d = Diff::default();
    for n in new {
        match old.iter().find(|o| o.addr == n.addr) {
            None => d.joined.push(n.addr),
            Some(o) if o == n => d.kept.push(n.addr),
            Some(_) => d.changed.push(n.addr),
        }
    }
    d.left = old
        .iter()
        .filter(|o| !new.iter().any(|n| n.addr == o.addr))
        .map(|o| o.addr)
        .collect();
    d
}

/// The servers of a pool configured as `file` (its entry in the config
/// file) given what DNS found: its `ip:port` servers, then one server per
/// address found, allowed by `allow`, at most [`MAX_SERVERS`] of them (the
/// answer comes sorted primaries first). Discovered servers are named by
/// their address, which keeps names unique within the pool (the metrics'
/// `server` label, the drain endpoints) when a host has several.
pub(crate) fn members(file: &PoolConfig, found: &[Found]) -> Vec<ServerConfig> {
    let mut out = file.servers.clone();
    let Some(d) = &file.discovery else {
        return out;
    };
    let mut taken = 0;
    for f in found {
        if taken == MAX_SERVERS {
            break;
        }
        if !d.allow.is_empty() && !d.allow.iter().any(|c| c.contains(f.addr.ip())) {
            continue;
        }
        if out.iter().any(|s| s.addr == f.addr) {
            continue;
        }
        let s = match &d.source {
            DiscoverySource::Hosts(hosts) => {
                let Some(h) = hosts.get(f.from) else { continue };
                ServerConfig {
                    name: f.addr.to_string(),
                    addr: f.addr,
                    ..h.settings.clone()
                }
            }
            DiscoverySource::Srv {
                max_fails,
                fail_timeout,
                slow_start,
                ..
            } => ServerConfig {
                name: f.addr.to_string(),
                addr: f.addr,
                weight: f.weight.max(1),
                max_fails: *max_fails,
                fail_timeout: *fail_timeout,
                max_conns: 0,
                backup: f.backup,
                down: false,
                tls: true,
                slow_start: *slow_start,
            },
        };
        out.push(s);
        taken += 1;
    }
    out
}

/// Whether two sources look up the same names (the same SRV name, or the
/// same host names and ports in the same order).
fn same_source(a: &DiscoverySource, b: &DiscoverySource) -> bool {
    match (a, b) {
        (DiscoverySource::Srv { name: x, .. }, DiscoverySource::Srv { name: y, .. }) => x == y,
        (DiscoverySource::Hosts(x), DiscoverySource::Hosts(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(x, y)| (&x.host, x.port) == (&y.host, y.port))
        }
        _ => false,
    }
}

/// Whether a pool with discovery, configured as `file`, gets an answer to
/// carry on from `prev` when a runtime is built (see [`carry`]).
pub(crate) fn has_answer(file: &PoolConfig, prev: Option<&Pool>) -> bool {
    let (Some(d), Some(prev)) = (&file.discovery, prev) else {
        return false;
    };
    match (&prev.config.discovery, &prev.discovery) {
        (Some(pd), Some(state)) => same_source(&pd.source, &d.source) && state.found().is_some(),
        _ => false,
    }
}

/// The servers and discovery state of a pool with discovery, configured as
/// `file`, when a runtime is built; `prev` is the pool of that name in the
/// runtime it replaces. With the same source as before, the last good
/// answer under the new settings (a reload looks nothing up again); with a
/// new source, the servers the pool had, until its first answer; a new pool
/// has only its `ip:port` servers until then.
pub(crate) fn carry(file: &PoolConfig, prev: Option<&Pool>) -> (Vec<ServerConfig>, Arc<Discovery>) {
    let Some(d) = &file.discovery else {
        return (file.servers.clone(), Arc::default());
    };
    let Some(prev) = prev else {
        return (members(file, &[]), Arc::default());
    };
    if let (Some(pd), Some(state)) = (&prev.config.discovery, &prev.discovery) {
        if same_source(&pd.source, &d.source) {
            return match state.found() {
                Some(found) => (members(file, &found), Arc::clone(state)),
                None => (prev.config.servers.clone(), Arc::clone(state)),
            };
        }
    }
    (prev.config.servers.clone(), Arc::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DiscoveryConfig, HostServer};
    use std::time::Duration;

    fn sc(addr: &str, weight: u32) -> ServerConfig {
        ServerConfig {
            name: addr.into(),
            addr: addr.parse().unwrap(),
            weight,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            max_conns: 0,
            backup: false,
            down: false,
            tls: true,
            slow_start: Duration::ZERO,
        }
    }

    fn addrs(v: &[&str]) -> Vec<SocketAddr> {
        v.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn servers_that_join_after_start_warm_up_and_those_at_start_do_not() {
        let cfg = ServerConfig {
            slow_start: Duration::from_secs(30),
            ..sc("10.0.0.1:80", 1)
        };
        let now = crate::clock::now_ms();
        assert_eq!(join(&cfg, Joining::Start).warmth(now), 1000);
        for why in [Joining::Reload, Joining::Discovered] {
            let s = join(&cfg, why);
            assert!(s.warmth(now + 1) < 200, "{why:?}: {}", s.warmth(now + 1));
        }
    }

    #[test]
    fn diff_says_who_joins_stays_changes_and_leaves() {
        let old = [
            sc("10.0.0.1:80", 1),
            sc("10.0.0.2:80", 1),
            sc("10.0.0.3:80", 1),
        ];
        let new = [
            sc("10.0.0.2:80", 1),
            sc("10.0.0.3:80", 5),
            sc("10.0.0.4:80", 1),
        ];
        let d = diff(&old, &new);
        assert_eq!(d.joined, addrs(&["10.0.0.4:80"]));
        assert_eq!(d.kept, addrs(&["10.0.0.2:80"]));
        assert_eq!(d.changed, addrs(&["10.0.0.3:80"]));
        assert_eq!(d.left, addrs(&["10.0.0.1:80"]));
        assert!(!d.is_empty());
        let same = diff(&old, &old);
        assert!(same.is_empty());
        assert_eq!(same.kept.len(), 3);
        let all_new = diff(&[], &old);
        assert_eq!(all_new.joined.len(), 3);
        let all_gone = diff(&old, &[]);
        assert_eq!(all_gone.left.len(), 3);
    }

    fn found(addr: &str, from: usize, weight: u32, backup: bool) -> Found {
        Found {
            addr: addr.parse().unwrap(),
            from,
            weight,
            backup,
        }
    }

    fn pool(source: DiscoverySource, allow: &[&str], servers: Vec<ServerConfig>) -> PoolConfig {
        let text = "pools:\n  p:\n    servers: [{addr: \"127.0.0.1:1\"}]\n";
        let mut p = crate::config::from_str(text, &|_| None)
            .unwrap()
            .config
            .pools
            .remove(0);
        p.servers = servers;
        p.discovery = Some(DiscoveryConfig {
            source,
            resolvers: vec![],
            interval: None,
            allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
        });
        p
    }

    #[test]
    fn hosts_take_their_entry_settings_and_static_servers_come_first() {
        let mut settings = sc("0.0.0.0:3001", 4);
        settings.backup = true;
        settings.max_conns = 9;
        let p = pool(
            DiscoverySource::Hosts(vec![HostServer {
                host: "svc.example".into(),
                port: 3001,
                settings,
            }]),
            &[],
            vec![sc("10.0.0.9:3001", 1)],
        );
        let m = members(
            &p,
            &[
                found("10.0.0.1:3001", 0, 1, true),
                found("10.0.0.9:3001", 0, 1, true),
                found("10.0.0.2:3001", 0, 1, true),
            ],
        );
        let names: Vec<&str> = m.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["10.0.0.9:3001", "10.0.0.1:3001", "10.0.0.2:3001"]);
        assert!(m[1].backup && m[1].weight == 4 && m[1].max_conns == 9);
        assert!(!m[0].backup, "the static server keeps its own settings");
    }

    #[test]
    fn allow_filters_and_the_cap_bounds_the_members() {
        let srv = DiscoverySource::Srv {
            name: "_a._tcp.example".into(),
            max_fails: 3,
            fail_timeout: Duration::from_secs(7),
            slow_start: Duration::ZERO,
        };
        let p = pool(srv.clone(), &["10.0.0.0/8"], vec![]);
        let m = members(
            &p,
            &[
                found("10.0.0.1:1", 0, 0, false),
                found("192.168.1.1:1", 0, 5, false),
                found("10.0.0.2:1", 0, 7, true),
            ],
        );
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].weight, m[0].backup, m[0].max_fails), (1, false, 3));
        assert_eq!((m[1].weight, m[1].backup), (7, true));
        assert_eq!(m[1].fail_timeout, Duration::from_secs(7));

        let p = pool(srv, &[], vec![]);
        let many: Vec<Found> = (0..10_000u32)
            .map(|i| Found {
                addr: SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 80)),
                from: 0,
                weight: 1,
                backup: false,
            })
            .collect();
        assert_eq!(members(&p, &many).len(), MAX_SERVERS);
    }
}
