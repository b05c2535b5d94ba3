//! What fulcrum answers itself below `status.path`: the nginx stub_status
//! text, `/json` with every pool and server. Only peers in `status.allow` may
//! read it (the socket peer, never a forwarded header).

pub mod counters;
mod json;
mod stub;

pub use counters::{CountConnections, Counters, RequestGuard, Snapshot};

use crate::local_response::{respond, respond_text};
use crate::runtime::Runtime;
use pingora::prelude::*;
use pingora::proxy::Session;
use std::net::IpAddr;

/// Whether `path` is the status page or below it.
pub fn is_status_path(rt: &Runtime, path: &str) -> bool {
    let base = &rt.config.status.path;
    path == base
        || (path.starts_with(base.as_str()) && path.as_bytes().get(base.len()) == Some(&b'/'))
}

/// Answers a request for the status pages; returns the status code sent.
pub async fn handle(
    session: &mut Session,
    rt: &Runtime,
    counters: &Counters,
    peer: Option<IpAddr>,
) -> Result<u16> {
    let allowed = peer.is_some_and(|ip| rt.config.status.allow.iter().any(|c| c.contains(ip)));
    if !allowed {
        respond_text(session, 403, "403 Forbidden").await?;
        return Ok(403);
    }
    let method = &session.req_header().method;
    if method != http::Method::GET && method != http::Method::HEAD {
        respond(
            session,
            405,
            "text/plain; charset=utf-8",
            "405 Method Not Allowed\n",
            &[("Allow", "GET, HEAD")],
        )
        .await?;
        return Ok(405);
    }
    let path = session.req_header().uri.path();
    let sub = &path[rt.config.status.path.len()..];
    match sub {
        "" => {
            let body = stub::render(&counters.snapshot());
            respond(session, 200, "text/plain", body, &[]).await?;
        }
        "/json" => {
            let body = json::render(rt, &counters.snapshot());
            respond(session, 200, "application/json", body, &[]).await?;
        }
        _ => {
            respond_text(session, 404, "404 Not Found: unknown status page").await?;
            return Ok(404);
        }
    }
    Ok(200)
}
