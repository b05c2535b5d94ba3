//! Server side: connections opened and kept idle per worker and lent to
//! Pingora for one request (`connector`), their TCP options (`tcp`), and a
//! server's answer time from kernel receive stamps (`server_time`).

pub mod connector;
pub mod server_time;
pub mod tcp;
