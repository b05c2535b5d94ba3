//! `fulcrum -t` and Pingora's own keys: the ones fulcrum honours are
//! accepted; the ones with no effect in fulcrum, or that break it, are
//! rejected with the reason (src/config/pingora_keys.rs).

use crate::common::{TempDir, FULCRUM};
use std::process::Command;

const POOL: &str = "pools:\n  p:\n    servers: [{addr: \"127.0.0.1:3001\"}]\n";

/// `fulcrum -t` on `conf`: whether it passed, and what it said.
fn dash_t(conf: &str) -> (bool, String) {
    let dir = TempDir::new("pingora-keys");
    let file = dir.path("fulcrum.yaml");
    std::fs::write(&file, format!("{POOL}{conf}")).unwrap();
    let out = Command::new(FULCRUM)
        .arg("-t")
        .arg("-c")
        .arg(&file)
        .output()
        .unwrap();
    let said = [out.stdout, out.stderr].concat();
    (
        out.status.success(),
        String::from_utf8_lossy(&said).into_owned(),
    )
}

#[test]
fn pingora_keys_with_no_effect_or_that_break_fulcrum_are_rejected_with_the_reason() {
    let cases = [
        ("daemon: true", "daemon: not supported: use the -d flag"),
        (
            "daemon_wait_for_ready: true",
            "daemon_wait_for_ready: breaks -d: Pingora signals readiness from its bootstrap",
        ),
        (
            "daemon_ready_timeout_seconds: 30",
            "daemon_ready_timeout_seconds: has no effect: used only with daemon_wait_for_ready",
        ),
        (
            "listener_tasks_per_fd: 4",
            "listener_tasks_per_fd: has no effect unless work_stealing is true: fulcrum's \
             accept loops run on one thread",
        ),
        (
            "upstream_connect_offload_threadpools: 2",
            "upstream_connect_offload_threadpools: breaks upstream connection reuse",
        ),
        (
            "client_bind_to_ipv4: [\"127.0.0.2\"]",
            "client_bind_to_ipv4: has no effect: fulcrum opens upstream connections with its \
             own connector",
        ),
        ("ca_file: /etc/ssl/ca.pem", "ca_file: is not how fulcrum trusts servers: a pool's tls.ca"),
        (
            "s2n_config_cache_size: 10",
            "s2n_config_cache_size: has no effect: TLS (s2n)",
        ),
        (
            "downstream_tls_offload_threadpools: 2",
            "downstream_tls_offload_threadpools: has no effect: fulcrum's own accept loops do client TLS handshakes",
        ),
        (
            "upstream_debug_ssl_keylog: true",
            "upstream_debug_ssl_keylog: would write TLS session keys",
        ),
        (
            "runtime_enable_alt_timer: true",
            "runtime_enable_alt_timer: has no effect: it needs a build with --cfg tokio_unstable",
        ),
        (
            "runtime_metrics_poll_time_histogram: true",
            "runtime_metrics_poll_time_histogram: has no effect: it needs a build with --cfg \
             tokio_unstable",
        ),
    ];
    for (line, error) in cases {
        let (ok, said) = dash_t(&format!("{line}\n"));
        assert!(!ok, "{line}: accepted\n{said}");
        assert!(
            said.contains(error),
            "{line}: expected {error:?} in\n{said}"
        );
    }
    // All of them at once: each is reported, with the reason fulcrum gives.
    let all: String = fulcrum::config::REJECTED_PINGORA_KEYS
        .iter()
        .map(|(key, _)| format!("{key}: 1\n"))
        .collect();
    let (ok, said) = dash_t(&all);
    assert!(!ok);
    for (key, why) in fulcrum::config::REJECTED_PINGORA_KEYS {
        assert!(said.contains(&format!("{key}: {why}")), "{key}\n{said}");
    }
}

#[test]
fn pingora_keys_that_fulcrum_honours_are_accepted() {
    let dir = TempDir::new("pingora-keys-ok");
    let honoured = format!(
        "version: 1\nthreads: 2\nwork_stealing: true\nlistener_tasks_per_fd: 2\n\
         pid_file: {run}/f.pid\nupgrade_sock: {run}/u.sock\n\
         upgrade_sock_connect_accept_max_retries: 3\ngrace_period_seconds: 3\n\
         graceful_shutdown_timeout_seconds: 1\nuser: root\ngroup: root\n\
         error_log: {run}/error.log\nworking_directory: {run}\n\
         upstream_keepalive_pool_size: 64\nmax_retries: 4\nmax_blocking_threads: 8\n\
         blocking_threads_ttl_seconds: 5\nfast_timeout_to_tokio_threshold_seconds: 600\n",
        run = dir.0.display()
    );
    let (ok, said) = dash_t(&honoured);
    assert!(ok, "{said}");
    assert!(said.contains("configuration OK"), "{said}");
}
