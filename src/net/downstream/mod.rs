//! Client side: the listening sockets and accept loops (`listener`), and
//! each client connection's HTTP/1 loop (`connection`): keepalive,
//! pipelining, the header deadline, `max_connections`.

pub mod connection;
pub mod listener;
