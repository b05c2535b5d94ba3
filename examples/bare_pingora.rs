//! The floor under fulcrum: a Pingora proxy with nothing of fulcrum's, for
//! the benchmark (deploy/bench, contender `pingora`). It routes `/big` and
//! everything else to one server each, adds the same forwarded headers, and
//! runs with the same runtime choices as fulcrum (one thread unless told,
//! no work stealing, mimalloc with fulcrum's purge delay), so fulcrum's CPU
//! against it is what fulcrum's own features cost and its CPU against
//! nginx's is Pingora's.
//!
//!   bare_pingora LISTEN SMALL_ADDR BIG_ADDR [THREADS [CERT KEY]]
//!
//! With CERT and KEY it listens with TLS and ALPN h2/http/1.1 instead, with
//! fulcrum's HTTP/2 stream limit and rustls provider, so that HTTP/2 over
//! TLS (scenario k) has the same floor.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::net::SocketAddr;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Two fixed upstreams, chosen by path prefix.
struct Bare {
    small: SocketAddr,
    big: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, session: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        let addr = if session.req_header().uri.path().starts_with("/big") {
            self.big
        } else {
            self.small
        };
        Ok(Box::new(HttpPeer::new(addr, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        _: &mut (),
    ) -> Result<()> {
        if let Some(ip) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            let ip = ip.to_string();
            req.insert_header("X-Forwarded-For", ip.as_str())?;
            req.insert_header("X-Real-IP", ip)?;
        }
        let proto = match session.digest().and_then(|d| d.ssl_digest.as_ref()) {
            Some(_) => "https",
            None => "http",
        };
        req.insert_header("X-Forwarded-Proto", proto)?;
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: bare_pingora LISTEN SMALL_ADDR BIG_ADDR [THREADS [CERT KEY]]");
        std::process::exit(2);
    }
    fulcrum::lifecycle::allocator::tune();
    let parse = |s: &str| s.parse::<SocketAddr>().expect("an address as IP:port");
    // fulcrum's provider, before Pingora's connector would install ring.
    fulcrum::config::tls::install_crypto_provider();
    let conf = ServerConf {
        threads: args
            .get(4)
            .map_or(1, |t| t.parse().expect("a thread count")),
        work_stealing: false,
        // As fulcrum's and nginx's in the benchmark's HTTP/2 scenario.
        upstream_keepalive_pool_size: 1024,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Bare {
            small: parse(&args[2]),
            big: parse(&args[3]),
        },
    );
    match (args.get(5), args.get(6)) {
        (Some(cert), Some(key)) => {
            let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
            h2.max_concurrent_streams(fulcrum::lifecycle::service::H2_MAX_CONCURRENT_STREAMS);
            proxy.app_logic_mut().expect("an HTTP proxy").h2_options = Some(h2);
            let mut tls = pingora::listeners::tls::TlsSettings::intermediate(cert, key)
                .expect("a certificate and its key");
            tls.enable_h2();
            proxy.add_tls_with_settings(&args[1], None, tls);
        }
        _ => proxy.add_tcp(&args[1]),
    }
    server.add_service(proxy);
    server.run_forever();
}
