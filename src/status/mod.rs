//! What fulcrum answers itself below `status.path`: the nginx stub_status
//! text, `/json` with every pool and server, `/metrics` for Prometheus, `/ui`
//! (a live page), and the write endpoints `/servers/{pool}/{addr}/drain` and
//! `/undrain`. Only peers in `status.allow` may use any of it (the socket
//! peer, never a forwarded header); the write endpoints additionally need
//! `status.admin_token`.

mod admin;
pub mod counters;
mod json;
mod metrics;
mod reloads;
pub mod respond;
pub mod sampler;
mod stub;
mod ui;

pub use counters::{CountConnections, Counters, RequestGuard};
pub(crate) use reloads::{ReloadStats, Reloads};
pub use sampler::RateSampler;

use crate::pool::{Pool, Server};
use crate::runtime::Runtime;
use crate::status::respond::{respond, respond_text};
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
pub(crate) async fn handle(
    session: &mut Session,
    rt: &Runtime,
    counters: &Counters,
    reloads: &Reloads,
    peer: Option<IpAddr>,
) -> Result<u16> {
    let allowed = peer.is_some_and(|ip| rt.config.status.allow.iter().any(|c| c.contains(ip)));
    if !allowed {
        respond_text(session, 403, "403 Forbidden").await?;
        return Ok(403);
    }
    let path = session.req_header().uri.path().to_string();
    let sub = &path[rt.config.status.path.len()..];
    if let Some(rest) = sub.strip_prefix("/servers/") {
        return admin::handle(session, rt, rest, peer).await;
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
    match sub {
        "" => {
            let body = stub::render(&counters.snapshot());
            respond(session, 200, "text/plain", body, &[]).await?;
        }
        "/json" => {
            let body = json::render(rt, &counters.snapshot(), &reloads.snapshot());
            respond(session, 200, "application/json", body, &[]).await?;
        }
        "/metrics" => {
            let body = metrics::render(rt, &counters.snapshot(), &reloads.snapshot());
            respond(session, 200, metrics::CONTENT_TYPE, body, &[]).await?;
        }
        "/ui" => {
            let body = ui::render(rt, &counters.snapshot());
            respond(session, 200, "text/html; charset=utf-8", body, &[]).await?;
        }
        _ => {
            respond_text(session, 404, "404 Not Found: unknown status page").await?;
            return Ok(404);
        }
    }
    Ok(200)
}

/// The state shown for a server: `down` (config), `draining` (operator or
/// reload), `unhealthy` (active checks), `failed` (passive), or `up`.
pub fn server_state(s: &Server) -> &'static str {
    if s.is_down() {
        "down"
    } else if s.is_drained() || s.is_removed() {
        "draining"
    } else if !s.active_healthy() {
        "unhealthy"
    } else if s.passive_failed() {
        "failed"
    } else {
        "up"
    }
}

/// Every value [`server_state`] can return.
pub const SERVER_STATES: [&str; 5] = ["up", "failed", "unhealthy", "draining", "down"];

/// The selection algorithm's config name (`least_conn`, `ewma`, ...).
pub fn selection_name(p: &Pool) -> &'static str {
    p.config.selection.as_str()
}
