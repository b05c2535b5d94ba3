//! Client side: the listening sockets and accept loops (`listener`), the
//! accepted socket (`socket`), its TLS handshake or h2c preface
//! (`handshake`), and each client connection's HTTP/1 loop or hand-over
//! to Pingora's HTTP/2 server (`connection`): keepalive,
//! pipelining, `max_connections`; its stream with the header deadline
//! (`deadline`) and its write buffer (`out_buf`); whether the client of a
//! request not yet proxied went away (`gone`). `HeaderDeadline` is
//! public for the Pingora contract tests; the rest is the crate's.

pub mod connection;
pub mod deadline;
pub(crate) mod gone;
mod handshake;
pub(crate) mod listener;
mod out_buf;
mod socket;
