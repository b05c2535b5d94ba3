//! Pooled upstream connections are reused, whichever worker thread a
//! request runs on.

mod common;
use common::*;

/// Four keepalive clients never have more than four requests in flight, so
/// a working pool needs at most four upstream connections per worker
/// thread. Pingora's shared pool, watched from a random thread, opened 10
/// to 30 here (the race in src/workers.rs).
#[test]
fn keepalive_clients_on_two_threads_reuse_upstream_connections() {
    // Two worker threads; no health check connections.
    let (b, f) = api_on_one_backend("");
    let (clients, requests) = (4, 1000);
    let before = b.connections("a");
    keepalive_load(f.addr, "/api", clients, requests);
    // The stats request itself is one more connection.
    let opened = b.connections("a") - before - 1;
    let bound = 2 * clients as u64;
    println!(
        "{opened} upstream connections for {} requests",
        clients * requests
    );
    assert!(
        opened <= bound,
        "{opened} upstream connections for {} requests from {clients} clients (at most {bound})",
        clients * requests
    );
}
