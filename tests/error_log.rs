//! The error log under normal traffic holds no error lines (Pingora's
//! harmless "failed to acquire reusable stream" is demoted; src/logging.rs).

mod common;
use common::*;

#[test]
fn keepalive_clients_on_two_threads_log_no_errors() {
    let b = Backends::start(&["a"], &[]);
    // Fulcrum::start runs two worker threads: pooled upstream connections
    // are watched on either, which is what made Pingora log the race.
    let f = Fulcrum::start(&format!(
        "access_log: off\n{}",
        one_pool("svc", "/api", &[b.addr("a")], "")
    ));
    keepalive_load(f.addr, "/api", 4, 1000);
    let log = f.log_text();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(
        errors.is_empty(),
        "{} error lines, the first: {:?}",
        errors.len(),
        errors.first()
    );
}
