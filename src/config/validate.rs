//! Turns the parsed file into the model. All checks live here, and every
//! error found is collected (not just the first), each prefixed with the
//! field path it concerns, e.g. `routes[2].pool: no pool named "orders"`.

use super::duration::parse_duration;
use super::env::expand_tree;
use super::file::*;
use super::*;
use serde_yaml::Value;
use std::collections::HashSet;
use std::net::ToSocketAddrs;

const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
const DEFAULT_STATUS_ALLOW: &[&str] = &["127.0.0.1/32", "::1/128"];
const SELECTIONS: &str = "least_conn, round_robin, random, ewma, p2c";
const RETRY_ON: &str = "error, timeout, http_500, http_502, http_503, http_504, http_429";

/// Collects errors while walking the document.
#[derive(Default)]
struct Checker {
    errors: Vec<String>,
}

impl Checker {
    fn err(&mut self, path: &str, msg: impl fmt::Display) {
        self.errors.push(format!("{path}: {msg}"));
    }

    fn duration(&mut self, path: &str, raw: Option<&String>, default: Duration) -> Duration {
        match raw {
            None => default,
            Some(s) => parse_duration(s).unwrap_or_else(|e| {
                self.err(path, e);
                default
            }),
        }
    }

    fn abs_path(&mut self, path: &str, raw: Option<String>, default: &str) -> String {
        let p = raw.unwrap_or_else(|| default.to_string());
        if !p.starts_with('/') {
            self.err(path, format!("{p:?} must start with '/'"));
        }
        p
    }
}

pub(super) fn validate_document(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    let mut doc: Value =
        serde_yaml::from_str(text).map_err(|e| ConfigErrors(vec![format!("invalid YAML: {e}")]))?;
    if doc.is_null() {
        doc = Value::Mapping(Default::default());
    }
    let Value::Mapping(_) = doc else {
        return Err(ConfigErrors(vec![
            "(top level): the config must be a YAML mapping".into(),
        ]));
    };
    let mut c = Checker::default();
    expand_tree(&mut doc, "", lookup, &mut c.errors);
    let map = doc.as_mapping().expect("checked above");

    for key in map.keys() {
        match key.as_str() {
            Some(k) if OWN_KEYS.contains(&k) || PINGORA_KEYS.contains(&k) => {}
            Some(k) => c.err(k, "unknown key"),
            None => c.err(&format!("{key:?}"), "keys must be strings"),
        }
    }

    let server = parse_section::<pingora::server::configuration::ServerConf>(
        &pingora_part(map),
        "(pingora settings)",
        &mut c.errors,
    );
    // One runtime per thread unless the file asks for work stealing: measured
    // 13-20% less CPU per proxied request (deploy/bench), and connections stay
    // on the thread that accepted them, like nginx's workers.
    let server = server.map(|mut s| {
        if !map.contains_key("work_stealing") {
            s.work_stealing = false;
        }
        s
    });
    let server = server.and_then(|s| match s.validate() {
        Ok(s) => Some(s),
        Err(e) => {
            c.err("(pingora settings)", e);
            None
        }
    });
    // Pingora switches to these when it daemonizes; a missing account
    // would only show then, as a panic.
    if let Some(s) = &server {
        let user = s
            .user
            .as_deref()
            .map(crate::lifecycle::privileges::lookup_user);
        let group = s
            .group
            .as_deref()
            .map(crate::lifecycle::privileges::lookup_group);
        for e in [user.and_then(Result::err), group.and_then(Result::err)]
            .into_iter()
            .flatten()
        {
            let (field, why) = e.split_once(": ").unwrap_or(("(pingora settings)", &e));
            c.err(field, why);
        }
    }

    let get = |k: &str| map.get(k).filter(|v| !v.is_null());
    let listen = listen(&mut c, get("listen"));
    let health_path = match get("health_path") {
        None => "/health".to_string(),
        Some(v) => {
            let s = parse_section::<String>(v, "health_path", &mut c.errors);
            c.abs_path("health_path", s, "/health")
        }
    };
    let status = status(&mut c, get("status"));
    if status.path == health_path {
        c.err("status.path", "must differ from health_path");
    }
    let access_log =
        match get("access_log").map(|v| parse_section::<String>(v, "access_log", &mut c.errors)) {
            None => AccessLogTarget::Stdout,
            Some(None) => AccessLogTarget::Off,
            Some(Some(s)) => match s.as_str() {
                "stdout" => AccessLogTarget::Stdout,
                "off" => AccessLogTarget::Off,
                "" => {
                    c.err("access_log", "must be stdout, off or a file path");
                    AccessLogTarget::Off
                }
                p => AccessLogTarget::File(PathBuf::from(p)),
            },
        };

    let access_log_format = match get("access_log_format")
        .and_then(|v| parse_section::<String>(v, "access_log_format", &mut c.errors))
        .as_deref()
    {
        None | Some("default") => AccessLogFormat::Default,
        Some("combined") => AccessLogFormat::Combined,
        Some("json") => AccessLogFormat::Json,
        Some(other) => {
            c.err(
                "access_log_format",
                format!("{other:?} is not one of default, combined, json"),
            );
            AccessLogFormat::Default
        }
    };

    let pools = pools(&mut c, get("pools"));
    let routes = routes(&mut c, get("routes"), &pools);
    let limits = limits(&mut c, get("limits"));

    if c.errors.is_empty() {
        Ok(Loaded {
            config: Config {
                listen,
                health_path,
                status,
                access_log,
                access_log_format,
                pools,
                routes,
                limits,
            },
            server: server.expect("no errors means Pingora settings parsed"),
        })
    } else {
        Err(ConfigErrors(c.errors))
    }
}

/// The subset of the document that Pingora reads.
fn pingora_part(map: &serde_yaml::Mapping) -> Value {
    let mut out = serde_yaml::Mapping::new();
    for (k, v) in map {
        if k.as_str().is_some_and(|k| PINGORA_KEYS.contains(&k)) {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Mapping(out)
}

fn listen(c: &mut Checker, v: Option<&Value>) -> Vec<SocketAddr> {
    let list = match v {
        None => vec![DEFAULT_LISTEN.to_string()],
        Some(v) => parse_section::<Vec<String>>(v, "listen", &mut c.errors).unwrap_or_default(),
    };
    if v.is_some() && list.is_empty() && c.errors.iter().all(|e| !e.starts_with("listen")) {
        c.err("listen", "at least one address is required");
    }
    let mut out = vec![];
    for (i, a) in list.iter().enumerate() {
        match a.parse::<SocketAddr>() {
            Ok(addr) if out.contains(&addr) => {
                c.err(&format!("listen[{i}]"), format!("duplicate address {a:?}"))
            }
            Ok(addr) => out.push(addr),
            Err(_) => c.err(
                &format!("listen[{i}]"),
                format!("{a:?} is not an ip:port address"),
            ),
        }
    }
    out
}

fn status(c: &mut Checker, v: Option<&Value>) -> StatusConfig {
    let raw = v
        .and_then(|v| parse_section::<RawStatus>(v, "status", &mut c.errors))
        .unwrap_or_default();
    let path = c.abs_path("status.path", raw.path, "/nginx-status");
    if path.len() > 1 && path.ends_with('/') {
        c.err("status.path", "must not end with '/'");
    }
    let allow_raw = raw
        .allow
        .unwrap_or_else(|| DEFAULT_STATUS_ALLOW.iter().map(|s| s.to_string()).collect());
    let mut allow = vec![];
    for (i, a) in allow_raw.iter().enumerate() {
        match a.parse::<Cidr>() {
            Ok(cidr) => allow.push(cidr),
            Err(e) => c.err(&format!("status.allow[{i}]"), e),
        }
    }
    let admin_token = raw.admin_token.filter(|t| !t.is_empty());
    StatusConfig {
        path,
        allow,
        admin_token,
    }
}

fn limits(c: &mut Checker, v: Option<&Value>) -> LimitsConfig {
    let raw = v
        .and_then(|v| parse_section::<RawLimits>(v, "limits", &mut c.errors))
        .unwrap_or_default();
    let d = LimitsConfig::default();
    let mut size = |field: &str, raw: Option<&Value>, default: u64| match raw {
        None => default,
        Some(v) => super::size::parse_size(v).unwrap_or_else(|e| {
            c.err(&format!("limits.{field}"), e);
            default
        }),
    };
    let header_size = size(
        "max_header_size",
        raw.max_header_size.as_ref(),
        d.max_header_size as u64,
    );
    let body_size = size(
        "client_max_body_size",
        raw.client_max_body_size.as_ref(),
        d.client_max_body_size,
    );
    if !(1024..=PINGORA_MAX_HEADER_SIZE as u64).contains(&header_size) {
        c.err(
            "limits.max_header_size",
            format!(
                "{header_size} is out of range: 1k to {PINGORA_MAX_HEADER_SIZE} bytes \
                 (Pingora answers larger headers with 400 itself)"
            ),
        );
    }
    let header_count = raw.max_header_count.unwrap_or(d.max_header_count as u32) as usize;
    if !(1..=PINGORA_MAX_HEADER_COUNT).contains(&header_count) {
        c.err(
            "limits.max_header_count",
            format!(
                "{header_count} is out of range: 1 to {PINGORA_MAX_HEADER_COUNT} \
                 (Pingora answers more fields with 400 itself)"
            ),
        );
    }
    let mut timeout = |field: &str, raw: Option<&String>, default: Duration, zero_ok: bool| {
        let t = c.duration(&format!("limits.{field}"), raw, default);
        if t.is_zero() && !zero_ok {
            c.err(&format!("limits.{field}"), "must be greater than 0");
        }
        t
    };
    let client_header_timeout = timeout(
        "client_header_timeout",
        raw.client_header_timeout.as_ref(),
        d.client_header_timeout,
        false,
    );
    let client_body_timeout = timeout(
        "client_body_timeout",
        raw.client_body_timeout.as_ref(),
        d.client_body_timeout,
        false,
    );
    let keepalive_timeout = timeout(
        "keepalive_timeout",
        raw.keepalive_timeout.as_ref(),
        d.keepalive_timeout,
        true,
    );
    LimitsConfig {
        max_header_size: header_size.min(PINGORA_MAX_HEADER_SIZE as u64) as usize,
        max_header_count: header_count,
        client_max_body_size: body_size,
        client_header_timeout,
        client_body_timeout,
        keepalive_timeout,
        max_connections: raw.max_connections.unwrap_or(0) as usize,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
}

fn pools(c: &mut Checker, v: Option<&Value>) -> Vec<PoolConfig> {
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
        crate::pool::DEFAULT_DECAY,
    );
    let default_rtt = c.duration(
        &format!("{path}.default_rtt"),
        raw.default_rtt.as_ref(),
        crate::pool::DEFAULT_RTT,
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

    let mut servers: Vec<ServerConfig> = vec![];
    match raw.servers {
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
                if let Some(s) = server(c, &spath, rs, max_fails, fail_timeout) {
                    if servers.iter().any(|o| o.addr == s.addr) {
                        c.err(
                            &format!("{spath}.addr"),
                            format!("{} is already a server of pool {name:?}", s.name),
                        );
                    } else {
                        servers.push(s);
                    }
                }
            }
        }
    }
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
        servers,
    }
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

fn server(
    c: &mut Checker,
    path: &str,
    raw: RawServer,
    pool_max_fails: u32,
    pool_fail_timeout: Duration,
) -> Option<ServerConfig> {
    let weight = raw.weight.unwrap_or(1);
    if weight == 0 {
        c.err(&format!("{path}.weight"), "must be at least 1");
    }
    let fail_timeout = c.duration(
        &format!("{path}.fail_timeout"),
        raw.fail_timeout.as_ref(),
        pool_fail_timeout,
    );
    let Some(name) = raw.addr else {
        c.err(&format!("{path}.addr"), "missing (expected host:port)");
        return None;
    };
    if name.contains("${") {
        return None; // the unset variable is already reported
    }
    let addr = match resolve(&name) {
        Ok(a) => a,
        Err(e) => {
            c.err(&format!("{path}.addr"), e);
            return None;
        }
    };
    Some(ServerConfig {
        name,
        addr,
        weight: weight.max(1),
        max_fails: raw.max_fails.unwrap_or(pool_max_fails),
        fail_timeout,
        max_conns: raw.max_conns.unwrap_or(0),
        backup: raw.backup.unwrap_or(false),
        down: raw.down.unwrap_or(false),
    })
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

fn health_check(c: &mut Checker, path: &str, raw: RawHealthCheck) -> HealthCheckConfig {
    let interval = c.duration(
        &format!("{path}.interval"),
        raw.interval.as_ref(),
        Duration::from_secs(10),
    );
    let timeout = c.duration(
        &format!("{path}.timeout"),
        raw.timeout.as_ref(),
        Duration::from_secs(2),
    );
    for (field, d) in [("interval", interval), ("timeout", timeout)] {
        if d.is_zero() {
            c.err(&format!("{path}.{field}"), "must be greater than 0");
        }
    }
    let mut count = |field: &str, v: Option<u32>, default: u32| {
        let n = v.unwrap_or(default);
        if n == 0 {
            c.err(&format!("{path}.{field}"), "must be at least 1");
        }
        n.max(1)
    };
    let rise = count("rise", raw.rise, 2);
    let fall = count("fall", raw.fall, 3);
    let kind = match raw.kind.as_deref() {
        None | Some("http") => {
            let hpath = c.abs_path(&format!("{path}.path"), raw.path, "/health");
            let expect_status = match raw.expect_status {
                None => vec![(200, 399)],
                Some(list) if list.is_empty() => {
                    c.err(
                        &format!("{path}.expect_status"),
                        "must list at least one status or range",
                    );
                    vec![]
                }
                Some(list) => list
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| match status_range(v) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            c.err(&format!("{path}.expect_status[{i}]"), e);
                            None
                        }
                    })
                    .collect(),
            };
            CheckKind::Http {
                path: hpath,
                expect_status,
            }
        }
        Some("tcp") => {
            if raw.path.is_some() || raw.expect_status.is_some() {
                c.err(path, "path and expect_status apply to type http only");
            }
            CheckKind::Tcp
        }
        Some(other) => {
            c.err(
                &format!("{path}.type"),
                format!("unknown type {other:?} (expected http or tcp)"),
            );
            CheckKind::Tcp
        }
    };
    HealthCheckConfig {
        kind,
        interval,
        timeout,
        rise,
        fall,
    }
}

/// `200`, `"200"` or `"200-399"`.
fn status_range(v: &Value) -> Result<(u16, u16), String> {
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| (100..=599).contains(n))
            .ok_or_else(|| format!("{s:?} is not a status code (100-599)"))
    };
    let (lo, hi) = match v {
        Value::Number(n) => {
            let s = n.to_string();
            (code(&s)?, code(&s)?)
        }
        Value::String(s) => match s.split_once('-') {
            Some((a, b)) => (code(a)?, code(b)?),
            None => (code(s)?, code(s)?),
        },
        other => {
            return Err(format!(
                "expected a status or a range like 200-399, got {other:?}"
            ))
        }
    };
    if lo > hi {
        return Err(format!("range {lo}-{hi} is empty"));
    }
    Ok((lo, hi))
}

fn routes(c: &mut Checker, v: Option<&Value>, pools: &[PoolConfig]) -> Vec<RouteConfig> {
    let Some(v) = v else {
        return vec![];
    };
    let Some(list) = v.as_sequence() else {
        c.err("routes", "must be a list of {prefix, pool}");
        return vec![];
    };
    let mut seen = HashSet::new();
    let mut out = vec![];
    for (i, v) in list.iter().enumerate() {
        let path = format!("routes[{i}]");
        let Some(raw) = parse_section::<RawRoute>(v, &path, &mut c.errors) else {
            continue;
        };
        let prefix = match raw.prefix {
            None => {
                c.err(&format!("{path}.prefix"), "missing");
                continue;
            }
            Some(p) => p,
        };
        if !prefix.starts_with('/') {
            c.err(
                &format!("{path}.prefix"),
                format!("{prefix:?} must start with '/'"),
            );
        } else if prefix.contains(['?', '#', '%', '\\', ' '])
            || prefix.split('/').any(|s| s == "." || s == "..")
        {
            c.err(
                &format!("{path}.prefix"),
                format!("{prefix:?} must be a plain normalized path (no ?, #, %, \\, spaces or dot segments)"),
            );
        }
        // `/api/` and `/api` route the same requests.
        let normalized = if prefix.len() > 1 {
            prefix.trim_end_matches('/').to_string()
        } else {
            prefix.clone()
        };
        if !seen.insert(normalized.clone()) {
            c.err(
                &format!("{path}.prefix"),
                format!("duplicate prefix {prefix:?}"),
            );
        }
        let pool = match raw.pool {
            None => {
                c.err(&format!("{path}.pool"), "missing");
                None
            }
            Some(name) => {
                let idx = pools.iter().position(|p| p.name == name);
                if idx.is_none() {
                    c.err(&format!("{path}.pool"), format!("no pool named {name:?}"));
                }
                idx
            }
        };
        if let Some(pool) = pool {
            out.push(RouteConfig {
                prefix: normalized,
                pool,
                strip_prefix: raw.strip_prefix.unwrap_or(false),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "MACHINE1_IP" => Some("10.0.0.1".into()),
            "MACHINE2_IP" => Some("10.0.0.2".into()),
            _ => None,
        }
    }

    const GOOD: &str = r#"
version: 1
threads: 2
listen: ["127.0.0.1:8080"]
pools:
  users:
    selection: least_conn
    max_fails: 3
    fail_timeout: 10s
    retry: { tries: 2, on: [error, timeout, http_503] }
    health_check: { type: http, path: /health, expect_status: [200-299, 301], interval: 500ms, rise: 2, fall: 3 }
    servers:
      - addr: "${MACHINE1_IP}:3001"
        weight: 3
      - { addr: "${MACHINE2_IP}:3011", backup: true, max_fails: 0 }
routes:
  - { prefix: /api/users/, pool: users, strip_prefix: true }
"#;

    fn errors_of(doc: &str) -> Vec<String> {
        match from_str(doc, &env) {
            Ok(_) => vec![],
            Err(e) => e.0,
        }
    }

    fn assert_rejects(doc: &str, path: &str, needle: &str) {
        let errs = errors_of(doc);
        assert!(
            errs.iter()
                .any(|e| e.starts_with(path) && e.contains(needle)),
            "expected an error at {path:?} containing {needle:?}, got {errs:#?}"
        );
    }

    #[test]
    fn a_good_document_becomes_the_model() {
        let l = from_str(GOOD, &env).unwrap();
        let c = l.config;
        assert_eq!(l.server.threads, 2);
        assert_eq!(c.pools.len(), 1);
        let p = &c.pools[0];
        assert_eq!(p.servers[0].addr, "10.0.0.1:3001".parse().unwrap());
        assert_eq!(p.servers[0].weight, 3);
        assert_eq!(p.servers[0].max_fails, 3);
        assert_eq!(p.servers[1].max_fails, 0);
        assert!(p.servers[1].backup);
        assert_eq!(p.retry.tries, 2);
        assert!(p.retry.on.http_503 && p.retry.on.error && !p.retry.on.http_500);
        let hc = p.health_check.as_ref().unwrap();
        assert_eq!(hc.interval, Duration::from_millis(500));
        assert_eq!(
            hc.kind,
            CheckKind::Http {
                path: "/health".into(),
                expect_status: vec![(200, 299), (301, 301)]
            }
        );
        assert_eq!(c.routes[0].prefix, "/api/users");
        assert!(c.routes[0].strip_prefix);
        assert_eq!(c.status.path, "/nginx-status");
        assert_eq!(c.access_log, AccessLogTarget::Stdout);
    }

    #[test]
    fn rejects_each_invalid_case_with_its_path() {
        let base = "pools:\n  users:\n    servers: [{addr: \"127.0.0.1:1\"}]\n";
        assert_rejects(
            &format!("{base}routes: [{{prefix: /a, pool: orders}}]"),
            "routes[0].pool",
            "no pool named \"orders\"",
        );
        assert_rejects(
            &format!("{base}routes: [{{prefix: /a, pool: users}}, {{prefix: /a/, pool: users}}]"),
            "routes[1].prefix",
            "duplicate prefix",
        );
        assert_rejects(
            &format!("{base}routes: [{{prefix: a, pool: users}}]"),
            "routes[0].prefix",
            "must start with '/'",
        );
        assert_rejects(
            "pools:\n  p:\n    servers: [{addr: \"nonsense\"}]\n",
            "pools.p.servers[0].addr",
            "host:port",
        );
        assert_rejects(
            "pools:\n  p:\n    servers: [{weight: 2}]\n",
            "pools.p.servers[0].addr",
            "missing",
        );
        assert_rejects(
            "pools:\n  p:\n    servers: [{addr: \"127.0.0.1:1\", weight: 0}]\n",
            "pools.p.servers[0].weight",
            "at least 1",
        );
        assert_rejects(
            "pools:\n  p:\n    servers: []\n",
            "pools.p.servers",
            "at least one server",
        );
        assert_rejects(
            "pools:\n  p: {}\n",
            "pools.p.servers",
            "at least one server",
        );
        assert_rejects(
            &format!("{base}    fail_timeout: 10 seconds\n"),
            "pools.users.fail_timeout",
            "invalid duration",
        );
        assert_rejects(
            "pools:\n  p:\n    servers: [{addr: \"${NOPE}:1\"}]\n",
            "pools.p.servers[0].addr",
            "NOPE is not set",
        );
        assert_rejects(
            &format!("{base}    selection: fastest\n"),
            "pools.users.selection",
            "unknown selection \"fastest\"",
        );
        assert_rejects(
            "pools:\n  p:\n    servers: [{addr: \"127.0.0.1:1\", weigth: 2}]\n",
            "pools.p.servers[0]",
            "unknown field `weigth`",
        );
        assert_rejects(
            &format!("{base}    retyr: {{}}\n"),
            "pools.users",
            "unknown field `retyr`",
        );
        assert_rejects(&format!("{base}statsu: {{}}\n"), "statsu", "unknown key");
        assert_rejects("status: {pth: /x}\n", "status", "unknown field `pth`");
        assert_rejects("listen: [\"8080\"]\n", "listen[0]", "not an ip:port");
        assert_rejects(
            &format!("{base}    retry: {{on: [error, http_418]}}\n"),
            "pools.users.retry.on[1]",
            "http_418",
        );
        assert_rejects(
            &format!("{base}    health_check: {{expect_status: [\"300-200\"]}}\n"),
            "pools.users.health_check.expect_status[0]",
            "empty",
        );
        assert_rejects(
            "threads: many\n",
            "(pingora settings).threads",
            "invalid type",
        );
    }

    #[test]
    fn ewma_and_p2c_with_decay_and_default_rtt() {
        let base = "pools:\n  p:\n    servers: [{addr: \"127.0.0.1:1\"}]\n";
        let l = from_str(base, &env).unwrap();
        let p = &l.config.pools[0];
        assert_eq!(p.selection, Selection::LeastConn);
        assert_eq!(p.decay, Duration::from_secs(10));
        assert_eq!(p.default_rtt, Duration::from_millis(1));
        let doc = format!("{base}    selection: ewma\n    decay: 500ms\n    default_rtt: 20ms\n");
        let p = &from_str(&doc, &env).unwrap().config.pools[0];
        assert_eq!(p.selection, Selection::Ewma);
        assert_eq!(p.decay, Duration::from_millis(500));
        assert_eq!(p.default_rtt, Duration::from_millis(20));
        let doc = format!("{base}    selection: p2c\n");
        assert_eq!(
            from_str(&doc, &env).unwrap().config.pools[0].selection,
            Selection::P2c
        );
        assert_rejects(
            &format!("{base}    decay: 0s\n"),
            "pools.p.decay",
            "greater than 0",
        );
        assert_rejects(
            &format!("{base}    decay: soon\n"),
            "pools.p.decay",
            "invalid duration",
        );
        assert_rejects(
            &format!("{base}    default_rtt: 0ms\n"),
            "pools.p.default_rtt",
            "greater than 0",
        );
        assert_rejects(
            &format!("{base}    selection: fastest\n"),
            "pools.p.selection",
            "least_conn, round_robin, random, ewma, p2c",
        );
        assert_rejects(
            &format!("{base}    decya: 1s\n"),
            "pools.p",
            "unknown field `decya`",
        );
    }

    #[test]
    fn every_error_is_reported_not_just_the_first() {
        let doc = "pools:\n  p:\n    selection: x\n    servers: [{addr: bad}, {addr: \"127.0.0.1:1\", weight: 0}]\nroutes: [{prefix: nope, pool: q}]\n";
        let errs = errors_of(doc);
        assert!(errs.len() >= 5, "{errs:#?}");
    }

    #[test]
    fn limits_have_nginx_defaults_and_checked_values() {
        let d = from_str("", &env).unwrap().config.limits;
        assert_eq!(d, LimitsConfig::default());
        assert_eq!(d.client_max_body_size, 1 << 20);
        assert_eq!(d.keepalive_timeout, Duration::from_secs(75));
        let l = from_str(
            "limits:\n  max_header_size: 8k\n  max_header_count: 50\n  client_max_body_size: 0\n  \
             client_header_timeout: 5s\n  client_body_timeout: 500ms\n  keepalive_timeout: 0s\n  \
             max_connections: 1000\n",
            &env,
        )
        .unwrap()
        .config
        .limits;
        assert_eq!(
            l,
            LimitsConfig {
                max_header_size: 8192,
                max_header_count: 50,
                client_max_body_size: 0,
                client_header_timeout: Duration::from_secs(5),
                client_body_timeout: Duration::from_millis(500),
                keepalive_timeout: Duration::ZERO,
                max_connections: 1000,
            }
        );
        assert_rejects(
            "limits: {max_header_size: 2m}\n",
            "limits.max_header_size",
            "out of range",
        );
        assert_rejects(
            "limits: {max_header_size: 100}\n",
            "limits.max_header_size",
            "out of range",
        );
        assert_rejects(
            "limits: {max_header_count: 300}\n",
            "limits.max_header_count",
            "out of range",
        );
        assert_rejects(
            "limits: {client_max_body_size: 1mb}\n",
            "limits.client_max_body_size",
            "invalid size",
        );
        assert_rejects(
            "limits: {client_header_timeout: 0s}\n",
            "limits.client_header_timeout",
            "greater than 0",
        );
        assert_rejects(
            "limits: {client_body_timeout: 1 minute}\n",
            "limits.client_body_timeout",
            "invalid duration",
        );
        assert_rejects("limits: {max_conections: 5}\n", "limits", "unknown field");
        assert_rejects(
            "limits: {max_connections: -1}\n",
            "limits.max_connections",
            "invalid value",
        );
    }
}
