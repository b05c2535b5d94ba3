//! The floor under fulcrum: a Pingora proxy with nothing of fulcrum's, for
//! the benchmark (deploy/bench, contender `pingora`). It routes `/big` and
//! everything else to one server each, adds the same forwarded headers, and
//! runs with the same runtime choices as fulcrum (one thread unless told,
//! no work stealing, mimalloc), so fulcrum's CPU against it is what
//! fulcrum's own features cost and its CPU against nginx's is Pingora's.
//!
//!   bare_pingora LISTEN SMALL_ADDR BIG_ADDR [THREADS]

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
        req.insert_header("X-Forwarded-Proto", "http")?;
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: bare_pingora LISTEN SMALL_ADDR BIG_ADDR [THREADS]");
        std::process::exit(2);
    }
    let parse = |s: &str| s.parse::<SocketAddr>().expect("an address as IP:port");
    let conf = ServerConf {
        threads: args
            .get(4)
            .map_or(1, |t| t.parse().expect("a thread count")),
        work_stealing: false,
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
    proxy.add_tcp(&args[1]);
    server.add_service(proxy);
    server.run_forever();
}
