//! `listen:`: each entry an address, or a mapping with `addr`, `tls` and
//! `http2`.

use super::routes::routes;
use super::Checker;
use crate::config::file::{parse_section, RawListen, RawListenTls};
use crate::config::tls::{self, Findings, ListenTlsSpec};
use crate::config::{ListenConfig, PoolConfig};
use serde_yaml::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::SystemTime;

const DEFAULT_LISTEN: &str = "0.0.0.0:8080";

/// The entries, each with its own `routes` still raw: they name pools,
/// which are read later ([`listen_routes`]).
pub(super) fn listen(c: &mut Checker, v: Option<&Value>) -> Vec<(ListenConfig, Option<Value>)> {
    let entries: Vec<Value> = match v {
        None => vec![Value::String(DEFAULT_LISTEN.into())],
        Some(Value::Sequence(s)) => s.clone(),
        Some(_) => {
            c.err("listen", "must be a list of addresses");
            return vec![];
        }
    };
    if entries.is_empty() {
        c.err("listen", "at least one address is required");
    }
    let mut out: Vec<(ListenConfig, Option<Value>)> = vec![];
    for (i, e) in entries.iter().enumerate() {
        let path = format!("listen[{i}]");
        let raw = match e {
            Value::String(s) => RawListen {
                addr: Some(s.clone()),
                ..RawListen::default()
            },
            v => match parse_section::<RawListen>(v, &path, &mut c.errors) {
                Some(r) => r,
                None => continue,
            },
        };
        let Some(a) = raw.addr else {
            c.err(&format!("{path}.addr"), "is required");
            continue;
        };
        let addr = match a.parse::<SocketAddr>() {
            Ok(addr) if out.iter().any(|(l, _)| l.addr == addr) => {
                c.err(&path, format!("duplicate address {a:?}"));
                continue;
            }
            Ok(addr) => addr,
            Err(_) => {
                c.err(&path, format!("{a:?} is not an ip:port address"));
                continue;
            }
        };
        let http2 = raw.http2.unwrap_or(false);
        let tls = raw
            .tls
            .and_then(|t| listen_tls(c, &format!("{path}.tls"), t, http2));
        let listen = ListenConfig {
            addr,
            tls,
            http2,
            routes: None,
        };
        out.push((listen, raw.routes));
    }
    out
}

/// Gives each entry its own routes, checked against `pools`.
pub(super) fn listen_routes(
    c: &mut Checker,
    entries: Vec<(ListenConfig, Option<Value>)>,
    pools: &[PoolConfig],
) -> Vec<ListenConfig> {
    let mut out = vec![];
    for (i, (mut l, raw)) in entries.into_iter().enumerate() {
        if let Some(v) = raw {
            let path = format!("listen[{i}].routes");
            let r = routes(c, &path, Some(&v), pools);
            if r.is_empty() && !c.errors.iter().any(|e| e.starts_with(&path)) {
                c.err(
                    &path,
                    "at least one route is required (or leave routes out)",
                );
            }
            l.routes = Some(r);
        }
        out.push(l);
    }
    out
}

fn listen_tls(
    c: &mut Checker,
    path: &str,
    raw: RawListenTls,
    http2: bool,
) -> Option<tls::ListenTls> {
    let mut certificates = vec![];
    for (i, cert) in raw.certificates.unwrap_or_default().into_iter().enumerate() {
        let at = format!("{path}.certificates[{i}]");
        match (cert.cert, cert.key) {
            (Some(crt), Some(key)) => {
                certificates.push((PathBuf::from(crt), PathBuf::from(key), cert.names))
            }
            (None, _) => c.err(&format!("{at}.cert"), "is required"),
            (_, None) => c.err(&format!("{at}.key"), "is required"),
        }
    }
    let (mut tls12, mut tls13) = (true, true);
    if let Some(protocols) = raw.protocols {
        (tls12, tls13) = (false, false);
        for (i, p) in protocols.iter().enumerate() {
            match p.to_ascii_lowercase().as_str() {
                "tlsv1.2" => tls12 = true,
                "tlsv1.3" => tls13 = true,
                "tlsv1" | "tlsv1.1" | "sslv3" | "sslv2" => c.err(
                    &format!("{path}.protocols[{i}]"),
                    format!(
                        "{p:?} is not supported (insecure; only tlsv1.2 and tlsv1.3 exist here)"
                    ),
                ),
                _ => c.err(
                    &format!("{path}.protocols[{i}]"),
                    format!("{p:?} is not one of tlsv1.2, tlsv1.3"),
                ),
            }
        }
        if protocols.is_empty() {
            c.err(
                &format!("{path}.protocols"),
                "at least one of tlsv1.2, tlsv1.3 is required",
            );
        }
    }
    let handshake_timeout = c.duration(
        &format!("{path}.handshake_timeout"),
        raw.handshake_timeout.as_ref(),
        tls::DEFAULT_HANDSHAKE_TIMEOUT,
    );
    if handshake_timeout.is_zero() {
        c.err(&format!("{path}.handshake_timeout"), "must be more than 0");
    }
    if !(tls12 || tls13) || certificates.is_empty() && c.errors.iter().any(|e| e.starts_with(path))
    {
        return None;
    }
    let client_ca = raw.client_ca.map(PathBuf::from);
    let spec = ListenTlsSpec {
        certificates: &certificates,
        tls12,
        tls13,
        client_ca: client_ca.as_deref(),
        http2,
        handshake_timeout,
    };
    let mut f = Findings::default();
    let loaded = tls::listen_tls(path, &spec, SystemTime::now(), &mut f);
    c.absorb(f);
    loaded
}
