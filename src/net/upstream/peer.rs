//! Pingora's peer for one attempt on one server: how fulcrum connects
//! (its own idle lists for plain HTTP/1, Pingora's connector for TLS and
//! HTTP/2), the timeouts, and the pool's TLS and protocol.
//!
//! Plain HTTP/1 connections are fulcrum's (connector.rs): cheaper than
//! Pingora's pool, and they tell passive health what Pingora keeps to
//! itself. A TLS session or an HTTP/2 connection cannot be handed back and
//! forth as a bare socket, so those pools use Pingora's connector and its
//! pool whole: the TLS handshake, ALPN, HTTP/2 multiplexing and idle
//! connections are Pingora's (src/net/mod.rs, assumption 26).

use super::connector::Lease;
use crate::config::tls::UpstreamTls;
use crate::config::{PoolConfig, UpstreamProtocol};
use crate::pool::Server;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;
use std::time::Duration;

/// Streams fulcrum opens at once on one HTTP/2 connection to a server
/// (Pingora's default is 1, which is no multiplexing at all).
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// How long Pingora keeps an idle TLS or HTTP/2 connection (as fulcrum's
/// own idle lists, nginx's upstream `keepalive_timeout`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The pool's TLS, if `server` is reached with it.
fn tls_of<'a>(pool: &'a PoolConfig, server: &Server) -> Option<&'a UpstreamTls> {
    pool.tls.as_ref().filter(|_| server.uses_tls())
}

/// Whether connections to `server` of `pool` are Pingora's (TLS or
/// HTTP/2) rather than fulcrum's own.
pub(crate) fn pingora_connects(pool: &PoolConfig, server: &Server) -> bool {
    tls_of(pool, server).is_some() || pool.protocol != UpstreamProtocol::Http1
}

/// The peer for an attempt on `server` of `pool`; `lease` connects it when
/// the connection is fulcrum's.
pub(crate) fn peer(server: &Server, lease: Option<&Arc<Lease>>, pool: &PoolConfig) -> HttpPeer {
    let tls = tls_of(pool, server);
    let sni = match tls {
        Some(t) => t
            .sni
            .clone()
            .unwrap_or_else(|| host_of(&server.name).to_string()),
        None => String::new(),
    };
    let mut peer = HttpPeer::new(server.addr, tls.is_some(), sni);
    let o = &mut peer.options;
    o.connection_timeout = Some(pool.connect_timeout);
    o.read_timeout = Some(pool.read_timeout);
    o.write_timeout = Some(pool.write_timeout);
    match lease {
        Some(lease) if !pingora_connects(pool, server) => {
            // fulcrum connects and keeps idle connections itself.
            o.custom_l4 = Some(lease.connector(pool.connect_timeout));
            // Pingora's own pool never gets these; should one reach it all
            // the same, it is closed at once rather than kept unseen.
            o.idle_timeout = Some(Duration::ZERO);
        }
        _ => o.idle_timeout = Some(IDLE_TIMEOUT),
    }
    if let Some(tls) = tls {
        o.verify_cert = tls.verify;
        o.verify_hostname = tls.verify;
        o.ca = tls.ca.clone();
        // Pingora's connection pool would otherwise let a pool ride on a
        // connection another pool verified with other CAs (assumption 26).
        peer.group_key = tls.trust_key;
    }
    o.alpn = match pool.protocol {
        UpstreamProtocol::Http1 => ALPN::H1,
        UpstreamProtocol::H2 | UpstreamProtocol::H2c => ALPN::H2,
    };
    o.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    peer.client_cert_key = tls.and_then(|t| t.client_cert.clone());
    peer
}

/// The host of `host:port` (`[v6]:port` gives `v6`).
fn host_of(name: &str) -> &str {
    let host = name.rsplit_once(':').map_or(name, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::upstreams::peer::Peer;

    fn pool(doc: &str) -> PoolConfig {
        crate::config::from_str(doc, &|_| None)
            .unwrap()
            .config
            .pools
            .remove(0)
    }

    #[test]
    fn a_verified_tls_peer_always_has_an_sni() {
        let p = pool("pools:\n  p:\n    tls: {}\n    servers: [{addr: \"127.0.0.1:8443\"}, {addr: \"127.0.0.1:8080\", tls: false}]\n");
        let (tls, clear) = (Server::new(&p.servers[0]), Server::new(&p.servers[1]));
        let peer = peer(&tls, None, &p);
        assert!(peer.tls());
        // Pingora skips every check of the certificate without an SNI.
        assert_eq!(peer.sni(), "127.0.0.1");
        assert!(peer.verify_cert() && peer.verify_hostname());
        assert!(pingora_connects(&p, &tls));
        assert!(!pingora_connects(&p, &clear));
        assert!(!super::peer(&clear, None, &p).tls());
    }

    #[test]
    fn h2c_asks_pingora_for_http2_only_with_many_streams() {
        let p =
            pool("pools:\n  p:\n    protocol: h2c\n    servers: [{addr: \"127.0.0.1:8080\"}]\n");
        let s = Server::new(&p.servers[0]);
        let peer = peer(&s, None, &p);
        let o = peer.get_peer_options().unwrap();
        assert_eq!(o.alpn.get_min_http_version(), 2);
        assert_eq!(o.max_h2_streams, H2_STREAMS_PER_CONNECTION);
        assert!(!peer.tls() && pingora_connects(&p, &s));
    }

    #[test]
    fn the_host_of_an_address_as_written() {
        assert_eq!(host_of("api.internal:443"), "api.internal");
        assert_eq!(host_of("10.0.0.2:8443"), "10.0.0.2");
        assert_eq!(host_of("[::1]:8443"), "::1");
    }
}
