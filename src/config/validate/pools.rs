//! `pools:`: each pool, its servers and its retry policy.

use super::discover;
use super::health_check::health_check;
use super::queue::queue;
use super::slow_start::slow_start;
use super::upstream::{protocol, upstream_tls};
use super::Checker;
use crate::config::file::{parse_section, RawPool, RawRetry, RawServer};
use crate::config::{HostServer, PoolConfig, RetryConfig, RetryOn, Selection, ServerConfig};
use serde_yaml::Value;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

const SELECTIONS: &str = "least_conn, round_robin, random, ewma, p2c";
const RETRY_ON: &str = "error, timeout, http_500, http_502, http_503, http_504, http_429";

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
}

pub(super) fn pools(c: &mut Checker, v: Option<&Value>) -> Vec<PoolConfig> {
    let Some(v) = v else {
        return vec![];
    };
    let Some(map) = v.as_mapping() else {
        c.err("pools", "must be a mapping of pool name to pool");
        return vec![];
    };
    let mut out = vec![];
    for (k, v) in map {
        let Some(name) = k.as_str() else {
            c.err("pools", format!("pool name {k:?} must be a string"));
            continue;
        };
        let path = format!("pools.{name}");
        if !valid_name(name) {
            c.err(
                &path,
                "pool names may use letters, digits, '_', '-' and '.'",
            );
        }
        let raw = if v.is_null() {
            Some(RawPool::default())
        } else {
            parse_section::<RawPool>(v, &path, &mut c.errors)
        };
        if let Some(raw) = raw {
            out.push(pool(c, &path, name, raw));
        }
    }
    out
}

fn pool(c: &mut Checker, path: &str, name: &str, raw: RawPool) -> PoolConfig {
    let selection = match raw.selection.as_deref() {
        None | Some("least_conn") => Selection::LeastConn,
        Some("round_robin") => Selection::RoundRobin,
        Some("random") => Selection::Random,
        Some("ewma") => Selection::Ewma,
        Some("p2c") => Selection::P2c,
        Some(other) => {
            c.err(
                &format!("{path}.selection"),
                format!("unknown selection {other:?} (expected one of: {SELECTIONS})"),
            );
            Selection::LeastConn
        }
    };
    let max_fails = raw.max_fails.unwrap_or(1);
    let fail_timeout = c.duration(
        &format!("{path}.fail_timeout"),
        raw.fail_timeout.as_ref(),
        Duration::from_secs(10),
    );
    let mut timeout = |field: &str, raw: Option<&String>, default: u64| {
        let d = c.duration(
            &format!("{path}.{field}"),
            raw,
            Duration::from_secs(default),
        );
        if d.is_zero() {
            c.err(&format!("{path}.{field}"), "must be greater than 0");
        }
        d
    };
    let connect_timeout = timeout("connect_timeout", raw.connect_timeout.as_ref(), 1);
    let read_timeout = timeout("read_timeout", raw.read_timeout.as_ref(), 60);
    let write_timeout = timeout("write_timeout", raw.write_timeout.as_ref(), 60);
    let decay = c.duration(
        &format!("{path}.decay"),
        raw.decay.as_ref(),
        crate::config::DEFAULT_DECAY,
    );
    let default_rtt = c.duration(
        &format!("{path}.default_rtt"),
        raw.default_rtt.as_ref(),
        crate::config::DEFAULT_RTT,
    );
    for (field, d) in [("decay", decay), ("default_rtt", default_rtt)] {
        if d.is_zero() {
            c.err(&format!("{path}.{field}"), "must be greater than 0");
        }
    }
    let host_header = raw
        .host_header
        .and_then(|h| host_header(c, &format!("{path}.host_header"), &h));
    let retry = retry(c, &format!("{path}.retry"), raw.retry.unwrap_or_default());
    let health_check = raw
        .health_check
        .map(|hc| health_check(c, &format!("{path}.health_check"), hc));
    let tls = raw
        .tls
        .and_then(|t| upstream_tls(c, &format!("{path}.tls"), t));
    let protocol = protocol(
        c,
        &format!("{path}.protocol"),
        raw.protocol.as_deref(),
        tls.is_some(),
    );
    let queue = raw.queue.map(|q| queue(c, &format!("{path}.queue"), q));
    let pool_slow_start = slow_start(
        c,
        &format!("{path}.slow_start"),
        raw.slow_start.as_ref(),
        Duration::ZERO,
    );
    let defaults = ServerDefaults {
        max_fails,
        fail_timeout,
        slow_start: pool_slow_start,
    };

    // Under resolve:, a host-name addr is kept for the running process to
    // look up (`hosts`); every other addr is resolved here as before.
    let defer = raw.resolve.is_some();
    let mut servers: Vec<ServerConfig> = vec![];
    let mut hosts: Vec<HostServer> = vec![];
    match raw.servers {
        None if raw.discover.is_some() => {}
        Some(_) if raw.discover.is_some() => c.err(
            &format!("{path}.servers"),
            "a pool with discover takes its servers from DNS; remove servers",
        ),
        None => c.err(
            &format!("{path}.servers"),
            "a pool needs at least one server",
        ),
        Some(list) if list.is_empty() => c.err(
            &format!("{path}.servers"),
            "a pool needs at least one server",
        ),
        Some(list) => {
            for (i, v) in list.iter().enumerate() {
                let spath = format!("{path}.servers[{i}]");
                let Some(rs) = parse_section::<RawServer>(v, &spath, &mut c.errors) else {
                    continue;
                };
                match server(c, &spath, rs, &defaults, defer) {
                    Some((s, Some((host, port)))) => {
                        if hosts.iter().any(|h| h.settings.name == s.name) {
                            c.err(
                                &format!("{spath}.addr"),
                                format!("{} is already a server of pool {name:?}", s.name),
                            );
                        } else {
                            hosts.push(HostServer {
                                host,
                                port,
                                settings: s,
                            });
                        }
                    }
                    Some((s, None)) => {
                        if servers.iter().any(|o| o.addr == s.addr) {
                            c.err(
                                &format!("{spath}.addr"),
                                format!("{} is already a server of pool {name:?}", s.name),
                            );
                        } else {
                            servers.push(s);
                        }
                    }
                    None => {}
                }
            }
        }
    }
    let discovery = match (raw.resolve, raw.discover) {
        (Some(_), Some(_)) => {
            c.err(
                &format!("{path}.discover"),
                "use resolve (host names in servers) or discover (an SRV name), not both",
            );
            None
        }
        (Some(r), None) => Some(discover::resolve(c, &format!("{path}.resolve"), r, hosts)),
        (None, Some(d)) => Some(discover::discover(
            c,
            &format!("{path}.discover"),
            d,
            (max_fails, fail_timeout, pool_slow_start),
        )),
        (None, None) => None,
    };
    PoolConfig {
        name: name.to_string(),
        selection,
        decay,
        default_rtt,
        connect_timeout,
        read_timeout,
        write_timeout,
        host_header,
        retry,
        health_check,
        tls,
        protocol,
        queue,
        servers,
        discovery,
    }
}

/// What a server takes from its pool unless it says otherwise.
struct ServerDefaults {
    max_fails: u32,
    fail_timeout: Duration,
    slow_start: Duration,
}

/// The `:port` of an authority, if it has one, is a port number (the
/// `http` crate accepts any digits).
fn port_fits(authority: &str) -> bool {
    match authority.rsplit_once(':') {
        Some((host, port))
            if !port.contains(']') && (!host.contains(':') || host.ends_with(']')) =>
        {
            port.parse::<u16>().is_ok()
        }
        _ => true,
    }
}

/// A Host value: an authority (`name`, `name:port`, `[v6]:port`), no userinfo.
fn host_header(c: &mut Checker, path: &str, raw: &str) -> Option<http::HeaderValue> {
    let valid = !raw.is_empty()
        && !raw.contains('@')
        && raw
            .parse::<http::uri::Authority>()
            .is_ok_and(|a| a.as_str() == raw)
        && port_fits(raw);
    if !valid {
        c.err(
            path,
            format!("{raw:?} is not a host name with an optional :port"),
        );
        return None;
    }
    http::HeaderValue::from_str(raw).ok()
}

/// One server; with `defer` (the pool has `resolve:`), a host name is not
/// resolved but returned beside the settings.
fn server(
    c: &mut Checker,
    path: &str,
    raw: RawServer,
    pool: &ServerDefaults,
    defer: bool,
) -> Option<(ServerConfig, Option<(String, u16)>)> {
    let weight = raw.weight.unwrap_or(1);
    if weight == 0 {
        c.err(&format!("{path}.weight"), "must be at least 1");
    }
    let fail_timeout = c.duration(
        &format!("{path}.fail_timeout"),
        raw.fail_timeout.as_ref(),
        pool.fail_timeout,
    );
    let slow_start = slow_start(
        c,
        &format!("{path}.slow_start"),
        raw.slow_start.as_ref(),
        pool.slow_start,
    );
    let Some(name) = raw.addr else {
        c.err(&format!("{path}.addr"), "missing (expected host:port)");
        return None;
    };
    if name.contains("${") {
        return None; // the unset variable is already reported
    }
    let mut host = None;
    let resolved = match name.parse::<SocketAddr>() {
        Err(_) if defer => discover::host_port(&name).map(|(h, port)| {
            host = Some((h, port));
            // A placeholder: each address found later takes its place.
            SocketAddr::from(([0, 0, 0, 0], port))
        }),
        _ => resolve(&name),
    };
    let addr = match resolved {
        Ok(a) => a,
        Err(e) => {
            c.err(&format!("{path}.addr"), e);
            return None;
        }
    };
    let settings = ServerConfig {
        name,
        addr,
        weight: weight.max(1),
        max_fails: raw.max_fails.unwrap_or(pool.max_fails),
        fail_timeout,
        max_conns: raw.max_conns.unwrap_or(0),
        backup: raw.backup.unwrap_or(false),
        down: raw.down.unwrap_or(false),
        tls: raw.tls.unwrap_or(true),
        slow_start,
    };
    Some((settings, host))
}

/// `ip:port` directly, `host:port` through the system resolver (first address).
fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("{addr:?} is not host:port"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{addr:?} is not host:port"));
    }
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr:?} resolves to no address"))
}

fn retry(c: &mut Checker, path: &str, raw: RawRetry) -> RetryConfig {
    let timeout = c.duration(
        &format!("{path}.timeout"),
        raw.timeout.as_ref(),
        Duration::ZERO,
    );
    let on_list = raw
        .on
        .unwrap_or_else(|| vec!["error".into(), "timeout".into()]);
    let mut on = RetryOn::default();
    for (i, item) in on_list.iter().enumerate() {
        match item.as_str() {
            "error" => on.error = true,
            "timeout" => on.timeout = true,
            "http_500" => on.http_500 = true,
            "http_502" => on.http_502 = true,
            "http_503" => on.http_503 = true,
            "http_504" => on.http_504 = true,
            "http_429" => on.http_429 = true,
            other => c.err(
                &format!("{path}.on[{i}]"),
                format!("unknown condition {other:?} (expected one of: {RETRY_ON})"),
            ),
        }
    }
    RetryConfig {
        tries: raw.tries.unwrap_or(0),
        timeout: (!timeout.is_zero()).then_some(timeout),
        on,
        non_idempotent: raw.non_idempotent.unwrap_or(false),
    }
}
