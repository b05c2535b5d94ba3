//! The error log under normal traffic holds no error lines.

mod common;
use common::*;

#[test]
fn keepalive_clients_on_two_threads_log_no_errors() {
    let b = Backends::start(&["a"], &[]);
    // Fulcrum::start runs two worker threads. With one upstream pool for
    // both, Pingora logged "failed to acquire reusable stream" 9-19 times
    // here (the race in src/workers.rs).
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
