//! `threads: 2` serves client connections on both worker threads (each
//! connection on one of them, chosen at accept), as `top -H` would show.

use crate::common::*;

/// CPU clock ticks (user + system) of each thread of `pid` named `name`.
fn thread_ticks(pid: u32, name: &str) -> Vec<u64> {
    let mut ticks = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the ")" that closes the name: utime and stime are
        // the 12th and 13th of them.
        let rest: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        ticks.push(rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap());
    }
    ticks
}

#[test]
fn two_worker_threads_both_serve_connections() {
    // `threads: 2`.
    let (_b, f) = api_on_one_backend("");
    // 32 connections, given to the two threads in turn at accept.
    keepalive_load(f.addr, "/api", 32, 100);
    let ticks = thread_ticks(f.child.id(), "fulcrum proxy");
    assert_eq!(
        ticks.len(),
        2,
        "worker threads named 'fulcrum proxy': {ticks:?}"
    );
    // With every client connection on one thread the other had 6 ticks
    // against 101-104 (it only ran idle-watch tasks of pooled upstream
    // connections); shared, 40-75 each.
    let (min, max) = (ticks[0].min(ticks[1]), ticks[0].max(ticks[1]));
    assert!(
        min * 5 >= max,
        "CPU ticks per worker thread after 3,200 requests on 32 connections: {ticks:?}"
    );
}

/// `work_stealing: true` (Pingora's default) runs the connections on
/// Pingora's work-stealing runtime with one proxy for all threads, instead
/// of fulcrum's own workers: it still serves, keepalive included.
#[test]
fn work_stealing_runtime_serves_connections() {
    let (b, f) = api_on_one_backend("work_stealing: true\n");
    keepalive_load(f.addr, "/api", 8, 50);
    assert_eq!(b.requests("a"), 400);
    // Pingora's runtime threads carry the service's name too.
    assert_eq!(thread_ticks(f.child.id(), "fulcrum proxy").len(), 2);
}
