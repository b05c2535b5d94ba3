//! The write endpoints: `POST status.path + /servers/{pool}/{addr}/drain` and
//! `/undrain`. The caller is already known to be in `status.allow`; these
//! additionally need `Authorization: Bearer <status.admin_token>`, and are
//! off (405) when no token is configured.
//!
//! A drained server gets no new requests; the ones it has finish. The mark
//! lives in the server's shared state, so it survives a SIGHUP reload that
//! keeps the server, and ends with the process (an upgrade starts undrained).

use super::server_state;
use crate::pool::Server;
use crate::runtime::Runtime;
use crate::status::respond::{respond, respond_text};
use pingora::prelude::*;
use pingora::proxy::Session;
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;

/// Handles `rest` = `{pool}/{addr}/{action}` below `/servers/`.
pub async fn handle(
    session: &mut Session,
    rt: &Runtime,
    rest: &str,
    peer: Option<IpAddr>,
) -> Result<u16> {
    let parts: Vec<&str> = rest.split('/').collect();
    let (pool_name, addr, drain) = match parts.as_slice() {
        [p, a, "drain"] => (*p, *a, true),
        [p, a, "undrain"] => (*p, *a, false),
        _ => {
            respond_text(
                session,
                404,
                "404 Not Found: use /servers/{pool}/{addr}/drain or /undrain",
            )
            .await?;
            return Ok(404);
        }
    };
    if session.req_header().method != http::Method::POST {
        respond(
            session,
            405,
            "text/plain; charset=utf-8",
            "405 Method Not Allowed: use POST\n",
            &[("Allow", "POST")],
        )
        .await?;
        return Ok(405);
    }
    let Some(token) = rt.config.status.admin_token.as_deref() else {
        respond(
            session,
            405,
            "text/plain; charset=utf-8",
            "405 Method Not Allowed: write endpoints are off; set status.admin_token to enable them\n",
            &[("Allow", "")],
        )
        .await?;
        return Ok(405);
    };
    if !authorized(session, token) {
        respond(
            session,
            401,
            "text/plain; charset=utf-8",
            "401 Unauthorized: Authorization: Bearer <status.admin_token> required\n",
            &[("WWW-Authenticate", "Bearer realm=\"fulcrum\"")],
        )
        .await?;
        return Ok(401);
    }
    // A body is not expected; read whatever came so the connection stays usable.
    while session.read_request_body().await?.is_some() {}
    let (Some(pool_name), Some(addr)) = (percent_decode(pool_name), percent_decode(addr)) else {
        respond_text(session, 404, "404 Not Found: bad escape in path").await?;
        return Ok(404);
    };
    let Some(pool) = rt.pool(&pool_name) else {
        respond_text(
            session,
            404,
            &format!("404 Not Found: no pool {pool_name:?}"),
        )
        .await?;
        return Ok(404);
    };
    let Some(server) = find_server(&pool.servers, &addr) else {
        respond_text(
            session,
            404,
            &format!("404 Not Found: no server {addr:?} in pool {pool_name:?}"),
        )
        .await?;
        return Ok(404);
    };
    server.set_drained(drain);
    if !drain {
        // Requests queued while it was drained may take it now.
        pool.wake_queue();
    }
    let who = peer.map_or("-".to_string(), |ip| ip.to_string());
    let verb = if drain { "drained" } else { "undrained" };
    log::warn!("server {pool_name}/{} {verb} by {who}", server.name);
    let body = json!({
        "pool": pool_name,
        "addr": server.name,
        "resolved": server.addr.to_string(),
        "drained": server.is_drained(),
        "state": server_state(server),
        "in_flight": server.in_flight(),
    });
    respond(session, 200, "application/json", format!("{body}\n"), &[]).await?;
    Ok(200)
}

/// A server by the address as written in the config or as resolved.
fn find_server<'a>(servers: &'a [Arc<Server>], addr: &str) -> Option<&'a Arc<Server>> {
    servers
        .iter()
        .find(|s| s.name == addr)
        .or_else(|| servers.iter().find(|s| s.addr.to_string() == addr))
}

fn authorized(session: &Session, token: &str) -> bool {
    let Some(v) = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
    else {
        return false;
    };
    let v = v.as_bytes();
    let scheme = b"bearer ";
    if v.len() < scheme.len() || !v[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return false;
    }
    constant_time_eq(v[scheme.len()..].trim_ascii(), token.as_bytes())
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes `%XX` escapes (e.g. `%3A` for `:`); `None` if malformed or not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes() {
        assert_eq!(
            percent_decode("127.0.0.1%3A3001").as_deref(),
            Some("127.0.0.1:3001")
        );
        assert_eq!(
            percent_decode("%5B%3A%3A1%5D%3a80").as_deref(),
            Some("[::1]:80")
        );
        assert_eq!(percent_decode("a%3"), None);
        assert_eq!(percent_decode("a%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn compares_tokens() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cres", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
    }
}
