//! Whether the client of a request that waits before being proxied (in a
//! pool's queue) has gone away, so that the request stops waiting at once
//! instead of holding its place until the queue's timeout.
//!
//! Pingora watches the client only while it proxies. Before that, fulcrum
//! watches it itself, without taking bytes Pingora still has to forward:
//!
//! - a request whose body is complete (most: GET, HEAD, an empty body) is
//!   watched with Pingora's own idle read, `read_body_or_idle(true)`,
//!   which fails when the client closes or resets the connection, and with
//!   pipelining on (fulcrum turns it on for every session) keeps a
//!   pipelined next request's first byte for the next session and waits
//!   on (net/mod.rs, item 25);
//! - a request whose body is still to come is watched by asking the
//!   kernel, every [`BODY_POLL`], whether the peer closed its side
//!   (`POLLRDHUP`), on the socket found through the stream's unique id,
//!   which is its file descriptor. Reading would take body bytes, and the
//!   socket's readiness is already registered with the runtime.

use pingora::proxy::Session;
use std::time::Duration;

/// How often a request that still has a body to send is checked.
pub(crate) const BODY_POLL: Duration = Duration::from_millis(50);

/// Resolves once the client of `session` has closed or reset its
/// connection; pending while it stays.
pub(crate) async fn client_gone(session: &mut Session) {
    if session.as_mut().is_body_done() {
        // Returns only on a close, a reset, or (pipelining off, which
        // fulcrum never runs) bytes after the request: each ends it.
        let _ = session.as_mut().read_body_or_idle(true).await;
        return;
    }
    let Some(fd) = session.as_ref().stream().map(|s| s.id()) else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(BODY_POLL).await;
        if peer_closed(fd) {
            return;
        }
    }
}

/// Whether the peer of socket `fd` closed its side or reset it, without
/// reading from it.
fn peer_closed(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout; `fd` is the session's
    // socket, open while the session (borrowed by the caller) lives.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}
