//! fulcrum's integration tests: one test binary, a module per feature, so
//! that a change to the library links one binary instead of one per file.
//! Most tests start the real `fulcrum` and demo backends as processes on
//! ports chosen at run time (helpers in [`common`]); docs/architecture.md
//! ("Tests") describes the suite.
//!
//! The tests of every module run in parallel threads of this one process:
//! whatever a test changes must be its own (ports, scratch directories,
//! processes stopped by pid). Nothing here sets environment variables,
//! changes the current directory or installs signal handlers. A test that
//! must not share the machine with other tests takes [`common::alone`]
//! first; the helpers that start processes hold a [`common::Shared`] token
//! while those run (common/alone.rs).

mod common;

// Selection and routing.
mod ewma;
mod least_conn;
mod queue;
mod routing;
mod slow_start;
// Servers from DNS.
mod dns;
mod upstream_pool;
mod workers;

// Failures and health.
mod active_health;
mod blackhole;
mod drain;
mod passive_health;
mod retry;
mod upstream_misbehaviour;

// HTTP/1.1 handling, hostile input and limits.
mod conformance;
mod conformance_h2;
mod h2_abuse;
mod headers;
mod hostile;
mod limits;
mod pipelining;
mod tls;
mod tls_bad_input;
mod websocket;

// TLS and HTTP/2 towards servers, gRPC end to end.
mod grpc;
mod upstream_tls;

// Logs, status pages and metrics.
mod access_log_formats;
mod error_log;
mod metrics;
mod status_pages;
mod status_ui;

// Configuration.
mod config_check;
mod fuzz_corpus;
mod pingora_keys;
mod properties;

// Process lifecycle and deployment.
mod install;
mod privileges;
mod reload;
mod signals;
mod systemd;
mod two_machines;
mod upgrade;

// Pingora's internals fulcrum relies on.
mod pingora_contract;

// The benchmark harness.
mod bench_smoke;
