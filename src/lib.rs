//! fulcrum: a per-machine HTTP load balancer on Pingora.
//!
//! A request's path through the folders:
//!
//! - `config`: the YAML file → a validated model (no network I/O)
//! - `net`: bytes in and out. `net::downstream`: listening sockets, the
//!   client connection loop (keepalive, pipelining, header deadline);
//!   `net::upstream`: connections to servers, kept idle per worker; every
//!   reliance on Pingora's internals is listed in `net`'s module doc
//! - `proxy`: Pingora's `ProxyHttp` phases: limits, the request context,
//!   failures and retries, forwarded headers
//! - `router`: longest-prefix routing on the normalized path, and each
//!   route's counters
//! - `pool`: servers, their health (passive and active), selection
//! - `status`: what fulcrum answers itself (health, stub_status, JSON,
//!   metrics, live page, drain endpoints)
//! - `access_log`: one line per request, written off the request path
//! - `runtime`: the running routes and pools, swapped atomically on reload
//! - `lifecycle`: assembling the server, reload, upgrade and drain,
//!   privileges

pub(crate) mod access_log;
pub mod cli;
pub(crate) mod clock;
pub mod config;
pub mod lifecycle;
pub mod net;
pub mod pool;
pub mod proxy;
pub mod router;
pub(crate) mod runtime;
pub(crate) mod status;
