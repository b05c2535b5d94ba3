//! fulcrum: a per-machine HTTP load balancer on Pingora.
//!
//! - `config`: the YAML model and its validation
//! - `router`: longest-prefix routing on the normalized path
//! - `pool`: servers, least_conn selection, passive health
//! - `health_check`: active checks in the background
//! - `proxy`: the Pingora `ProxyHttp` phases
//! - `status`: /health, stub_status, JSON
//! - `access_log`: one line per request, written off the request path
//! - `runtime`: the swappable running configuration
//! - `reload`: SIGHUP re-reads the config and swaps the runtime
//! - `drain`: letting clients go when the process is upgraded or stopped
//! - `listener`: the listening sockets, accept loops and client sockets
//! - `workers`: worker threads, each with its own runtime and proxy
//! - `client_conn`: per-connection limits and the keepalive loop
//! - `upstream_conn`: connections to servers, kept idle per worker
//! - `upstream_tcp`: TCP settings of upstream connections
//! - `service`: assembling and running the Pingora server

pub mod access_log;
pub mod cli;
pub mod client_conn;
pub mod config;
pub mod drain;
pub mod health_check;
pub mod limits;
pub mod listener;
pub mod local_response;
pub mod pool;
pub mod privileges;
pub mod proxy;
pub mod reload;
pub mod router;
pub mod runtime;
pub mod server_time;
pub mod service;
pub mod status;
pub mod upstream_conn;
pub mod upstream_tcp;
pub mod workers;
