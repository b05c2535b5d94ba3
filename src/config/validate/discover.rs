//! `pools.*.resolve` and `pools.*.discover`: servers found through DNS.
//! Only the syntax is checked here: the names are looked up by the running
//! process (`pool/discover/`), never by `-t`.

use super::Checker;
use crate::config::file::{RawDiscover, RawResolve};
use crate::config::{Cidr, DiscoveryConfig, DiscoverySource, HostServer};
use std::net::SocketAddr;
use std::time::Duration;

/// Shortest `interval`: one lookup per second per pool is plenty for a
/// load balancer, and keeps a typo (`5ms`) from flooding the DNS server.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest `interval`: beyond an hour a removed server would be tried for
/// too long; such a pool is better written with fixed addresses.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// `resolve:` of a pool whose host-name servers are `hosts`.
pub(super) fn resolve(
    c: &mut Checker,
    path: &str,
    raw: RawResolve,
    hosts: Vec<HostServer>,
) -> DiscoveryConfig {
    if hosts.is_empty() {
        c.err(
            path,
            "no server addr of this pool is a host name; remove resolve or write host:port",
        );
    }
    let (resolvers, interval, allow) = common(c, path, raw.interval, raw.resolvers, raw.allow);
    DiscoveryConfig {
        source: DiscoverySource::Hosts(hosts),
        resolvers,
        interval,
        allow,
    }
}

/// `discover:`; its servers take the pool's `max_fails`, `fail_timeout`
/// and `slow_start`.
pub(super) fn discover(
    c: &mut Checker,
    path: &str,
    raw: RawDiscover,
    (max_fails, fail_timeout, slow_start): (u32, Duration, Duration),
) -> DiscoveryConfig {
    let name = match raw.srv {
        None => {
            c.err(
                &format!("{path}.srv"),
                "missing (expected an SRV name _service._proto.name)",
            );
            String::new()
        }
        Some(n) => {
            if let Err(e) = srv_name(&n) {
                c.err(&format!("{path}.srv"), e);
            }
            n
        }
    };
    let (resolvers, interval, allow) = common(c, path, raw.interval, raw.resolvers, raw.allow);
    DiscoveryConfig {
        source: DiscoverySource::Srv {
            name,
            max_fails,
            fail_timeout,
            slow_start,
        },
        resolvers,
        interval,
        allow,
    }
}

/// The keys `resolve` and `discover` share.
fn common(
    c: &mut Checker,
    path: &str,
    interval: Option<String>,
    resolvers: Option<Vec<String>>,
    allow: Option<Vec<String>>,
) -> (Vec<SocketAddr>, Option<Duration>, Vec<Cidr>) {
    let interval = interval.map(|raw| {
        let ipath = format!("{path}.interval");
        let d = c.duration(&ipath, Some(&raw), MIN_INTERVAL);
        if d < MIN_INTERVAL || d > MAX_INTERVAL {
            c.err(&ipath, format!("{raw:?} is out of range: 1s to 1h"));
        }
        d
    });
    let mut out = vec![];
    if let Some(list) = resolvers {
        if list.is_empty() {
            c.err(
                &format!("{path}.resolvers"),
                "must list at least one ip:port (omit it for the system's /etc/resolv.conf)",
            );
        }
        for (i, r) in list.iter().enumerate() {
            let rpath = format!("{path}.resolvers[{i}]");
            match r.parse::<SocketAddr>() {
                Ok(a) if a.port() == 0 => c.err(&rpath, format!("{r:?}: port 0")),
                Ok(a) if out.contains(&a) => c.err(&rpath, format!("duplicate resolver {r:?}")),
                Ok(a) => out.push(a),
                Err(_) => c.err(
                    &rpath,
                    format!("{r:?} is not an ip:port address (a DNS server, e.g. 127.0.0.1:53)"),
                ),
            }
        }
    }
    let mut blocks = vec![];
    for (i, a) in allow.unwrap_or_default().iter().enumerate() {
        match a.parse::<Cidr>() {
            Ok(cidr) => blocks.push(cidr),
            Err(e) => c.err(&format!("{path}.allow[{i}]"), e),
        }
    }
    (out, interval, blocks)
}

/// `_service._proto.name` (RFC 2782): two labels that start with `_`, then
/// a host name.
fn srv_name(name: &str) -> Result<(), String> {
    let bad = || format!("{name:?} is not an SRV name _service._proto.name");
    let mut labels = name.strip_suffix('.').unwrap_or(name).splitn(3, '.');
    let (Some(service), Some(proto), Some(rest)) = (labels.next(), labels.next(), labels.next())
    else {
        return Err(bad());
    };
    let underscored = |l: &str| {
        l.len() > 1
            && l.len() <= 63
            && l.starts_with('_')
            && l[1..]
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
    };
    if !underscored(service) || !underscored(proto) || !host_name(rest) {
        return Err(bad());
    }
    Ok(())
}

/// A DNS host name: dot-separated labels of letters, digits, `-` and `_`,
/// 1 to 63 characters each, 253 in all; an optional final dot.
pub(super) fn host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        })
}

/// `host:port` where host is a name (not an address), for `resolve:`.
pub(super) fn host_port(addr: &str) -> Result<(String, u16), String> {
    let bad = || format!("{addr:?} is not host:port");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
    if host.parse::<std::net::IpAddr>().is_ok() || !host_name(host) {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_names() {
        for good in [
            "_users._tcp.service.consul",
            "_http._tcp.example.com.",
            "_a-b._udp.x",
        ] {
            assert_eq!(srv_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "users.service.consul",
            "_users.service.consul",
            "_users._tcp",
            "_users._tcp.",
            "__tcp._x.example",
            "_users._tcp..example",
            "_us ers._tcp.example",
            "users._tcp.example",
            "_users._tcp.-bad.example",
        ] {
            assert!(srv_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn host_ports() {
        assert_eq!(
            host_port("users.internal:3001"),
            Ok(("users.internal".into(), 3001))
        );
        for bad in [
            "users.internal",
            "users.internal:0",
            "users.internal:70000",
            "10.0.0.1:80",
            ":80",
            "bad host:80",
            "[::1]:80",
        ] {
            assert!(host_port(bad).is_err(), "{bad:?} accepted");
        }
    }
}

#[cfg(test)]
mod document_tests {
    use crate::config::{from_str, DiscoverySource};
    use std::time::Duration;

    fn errors(doc: &str) -> Vec<String> {
        match from_str(doc, &|_| None) {
            Ok(_) => vec![],
            Err(e) => e.0,
        }
    }

    fn rejects(pool: &str, path: &str, needle: &str) {
        let doc = format!("pools:\n  p:\n{pool}");
        let errs = errors(&doc);
        assert!(
            errs.iter()
                .any(|e| e.starts_with(path) && e.contains(needle)),
            "expected {path}: ...{needle}..., got {errs:#?}"
        );
    }

    #[test]
    fn discover_and_resolve_become_the_model() {
        let doc = "pools:\n  users:\n    max_fails: 3\n    fail_timeout: 7s\n    discover: { srv: _users._tcp.service.consul, resolvers: [\"127.0.0.1:8600\", \"[::1]:53\"], interval: 5s, allow: [10.0.0.0/8] }\n  web:\n    resolve: {}\n    servers:\n      - { addr: \"web.internal:8080\", weight: 3, backup: true }\n      - addr: \"127.0.0.1:9\"\n";
        let c = from_str(doc, &|_| None).unwrap().config;
        let users = &c.pools[0];
        assert!(users.servers.is_empty());
        let d = users.discovery.as_ref().unwrap();
        assert_eq!(
            d.source,
            DiscoverySource::Srv {
                name: "_users._tcp.service.consul".into(),
                max_fails: 3,
                fail_timeout: Duration::from_secs(7),
                slow_start: Duration::ZERO,
            }
        );
        assert_eq!(d.resolvers.len(), 2);
        assert_eq!(d.interval, Some(Duration::from_secs(5)));
        assert!(d.allow[0].contains("10.1.2.3".parse().unwrap()));
        let web = &c.pools[1];
        assert_eq!(web.servers.len(), 1, "the ip:port server stays static");
        let d = web.discovery.as_ref().unwrap();
        assert_eq!((d.interval, d.resolvers.len()), (None, 0));
        let DiscoverySource::Hosts(hosts) = &d.source else {
            panic!("{d:?}")
        };
        assert_eq!(
            (hosts[0].host.as_str(), hosts[0].port),
            ("web.internal", 8080)
        );
        assert_eq!(hosts[0].settings.weight, 3);
        assert!(hosts[0].settings.backup);
    }

    #[test]
    fn a_host_name_under_resolve_is_not_looked_up_at_load() {
        // .invalid never resolves (RFC 6761): without resolve it is an error.
        let with = "pools:\n  p:\n    resolve: { interval: 2s }\n    servers: [{ addr: \"x.invalid:80\" }]\n";
        assert_eq!(errors(with), Vec::<String>::new());
        let without = "pools:\n  p:\n    servers: [{ addr: \"x.invalid:80\" }]\n";
        assert!(errors(without)[0].contains("cannot resolve"));
    }

    #[test]
    fn bad_discovery_keys_name_their_field() {
        rejects(
            "    discover: { srv: users.service.consul }\n",
            "pools.p.discover.srv",
            "is not an SRV name _service._proto.name",
        );
        rejects("    discover: {}\n", "pools.p.discover.srv", "missing");
        rejects(
            "    discover: { srv: _a._tcp.x, resolvers: [\"127.0.0.1\"] }\n",
            "pools.p.discover.resolvers[0]",
            "is not an ip:port address",
        );
        rejects(
            "    discover: { srv: _a._tcp.x, resolvers: [\"dns.example:53\"] }\n",
            "pools.p.discover.resolvers[0]",
            "is not an ip:port address",
        );
        rejects(
            "    discover: { srv: _a._tcp.x, resolvers: [] }\n",
            "pools.p.discover.resolvers",
            "at least one",
        );
        for bad in ["0", "0s", "500ms", "2h", "100000h"] {
            rejects(
                &format!("    discover: {{ srv: _a._tcp.x, interval: \"{bad}\" }}\n"),
                "pools.p.discover.interval",
                "out of range: 1s to 1h",
            );
        }
        rejects(
            "    discover: { srv: _a._tcp.x, interval: 5 }\n",
            "pools.p.discover.interval",
            "expected a string",
        );
        rejects(
            "    discover: { srv: _a._tcp.x, allow: [10.0.0.0/33] }\n",
            "pools.p.discover.allow[0]",
            "invalid prefix length",
        );
        rejects(
            "    discover: { srv: _a._tcp.x }\n    servers: [{ addr: \"127.0.0.1:1\" }]\n",
            "pools.p.servers",
            "remove servers",
        );
        rejects(
            "    discover: { srv: _a._tcp.x, weight: 2 }\n",
            "pools.p.discover",
            "unknown field `weight`",
        );
        rejects(
            "    resolve: {}\n    discover: { srv: _a._tcp.x }\n",
            "pools.p.discover",
            "not both",
        );
        rejects(
            "    resolve: {}\n    servers: [{ addr: \"127.0.0.1:1\" }]\n",
            "pools.p.resolve",
            "no server addr of this pool is a host name",
        );
        rejects(
            "    resolve: { srv: _a._tcp.x }\n    servers: [{ addr: \"a.example:1\" }]\n",
            "pools.p.resolve",
            "unknown field `srv`",
        );
        rejects(
            "    resolve: {}\n    servers: [{ addr: \"a.example:1\" }, { addr: \"a.example:1\" }]\n",
            "pools.p.servers[1].addr",
            "already a server",
        );
        rejects(
            "    resolve: {}\n    servers: [{ addr: \"bad_host name:1\" }]\n",
            "pools.p.servers[0].addr",
            "is not host:port",
        );
    }
}
