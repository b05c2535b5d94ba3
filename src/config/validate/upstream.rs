//! A pool's `tls:` and `protocol:`: how fulcrum talks to its servers.

use super::Checker;
use crate::config::file::RawUpstreamTls;
use crate::config::tls::{self, Findings, UpstreamTls};
use crate::config::UpstreamProtocol;
use std::path::Path;
use std::time::SystemTime;

pub(super) fn protocol(
    c: &mut Checker,
    path: &str,
    raw: Option<&str>,
    tls: bool,
) -> UpstreamProtocol {
    let p = match raw {
        None | Some("http1") => UpstreamProtocol::Http1,
        Some("h2") => UpstreamProtocol::H2,
        Some("h2c") => UpstreamProtocol::H2c,
        Some(other) => {
            c.err(path, format!("{other:?} is not one of http1, h2, h2c"));
            return UpstreamProtocol::Http1;
        }
    };
    match (p, tls) {
        (UpstreamProtocol::H2, false) => c.err(path, "h2 needs tls (h2c is HTTP/2 without it)"),
        (UpstreamProtocol::H2c, true) => c.err(path, "h2c is HTTP/2 without tls (use h2 with tls)"),
        _ => {}
    }
    p
}

/// A key for the trusted CAs: their certificates' bytes (0: the system's).
fn trust_key(ca: Option<&[pingora::utils::tls::WrappedX509]>) -> u64 {
    use std::hash::{Hash, Hasher};
    let Some(ca) = ca else { return 0 };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for c in ca {
        c.borrow_raw_cert().hash(&mut h);
    }
    h.finish().max(1)
}

pub(super) fn upstream_tls(
    c: &mut Checker,
    path: &str,
    raw: RawUpstreamTls,
) -> Option<UpstreamTls> {
    let mut f = Findings::default();
    let ca = raw
        .ca
        .as_deref()
        .and_then(|p| tls::ca_file(&format!("{path}.ca"), Path::new(p), &mut f));
    let client_cert = match (raw.client_cert.as_deref(), raw.client_key.as_deref()) {
        (None, None) => None,
        (Some(cert), Some(key)) => tls::client_cert(
            path,
            Path::new(cert),
            Path::new(key),
            SystemTime::now(),
            &mut f,
        ),
        (Some(_), None) => {
            c.err(
                &format!("{path}.client_key"),
                "is required with client_cert",
            );
            None
        }
        (None, Some(_)) => {
            c.err(
                &format!("{path}.client_cert"),
                "is required with client_key",
            );
            None
        }
    };
    // The key checks name their fields as the listener's do (`.cert`, `.key`):
    // say which keys of the pool those are.
    for (field, _) in f.errors.iter_mut().chain(f.warnings.iter_mut()) {
        if let Some(rest) = field.strip_prefix(path) {
            *field = match rest {
                ".cert" => format!("{path}.client_cert"),
                ".key" => format!("{path}.client_key"),
                _ => field.clone(),
            };
        }
    }
    c.absorb(f);
    if let Some(sni) = &raw.sni {
        if sni.is_empty() || sni.parse::<http::uri::Authority>().is_err() || sni.contains(':') {
            c.err(
                &format!("{path}.sni"),
                format!("{sni:?} is not a host name"),
            );
        }
    }
    Some(UpstreamTls {
        verify: raw.verify.unwrap_or(true),
        sni: raw.sni,
        trust_key: trust_key(ca.as_deref()),
        ca,
        client_cert,
    })
}
