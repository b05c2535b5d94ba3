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

/// `discover:`; its servers take the pool's `max_fails` and `fail_timeout`.
pub(super) fn discover(
    c: &mut Checker,
    path: &str,
    raw: RawDiscover,
    max_fails: u32,
    fail_timeout: Duration,
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
