//! Server side: connections opened and kept idle per worker and lent to
//! Pingora for one request (`connector`), their TCP options (`tcp`), a
//! server's answer time from kernel receive stamps (`server_time`), and
//! the peer Pingora gets for an attempt, with TLS and HTTP/2 (`peer`).

pub mod connector;
pub(crate) mod peer;
pub mod server_time;
pub mod tcp;
