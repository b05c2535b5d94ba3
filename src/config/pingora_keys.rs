//! Pingora's own top-level keys: the fields of its `ServerConf`, which reads
//! the same file. The set comes from `ServerConf` itself (its serialized
//! default), so a Pingora upgrade that adds or renames a key changes it; the
//! tests below then fail until the new key is either listed as honoured or
//! given a reason for its rejection here.
//!
//! Keys that Pingora accepts but that have no effect in fulcrum, or that
//! break it (fulcrum runs its own worker runtimes, accept loops and upstream
//! connector: src/net/mod.rs), are rejected by `fulcrum -t` with the reason.

use pingora::server::configuration::ServerConf;
use serde_yaml::{Mapping, Value};
use std::sync::OnceLock;

/// The top-level keys of Pingora's `ServerConf`, in its field order.
pub fn pingora_keys() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        match serde_yaml::to_value(ServerConf::default()) {
            Ok(Value::Mapping(m)) => m
                .keys()
                .filter_map(|k| k.as_str())
                .map(String::from)
                .collect(),
            // ServerConf is a struct of plain fields: it always serializes to a mapping.
            _ => unreachable!("ServerConf serializes to a mapping"),
        }
    })
}

/// Whether `key` is one of Pingora's keys.
pub fn is_pingora_key(key: &str) -> bool {
    pingora_keys().iter().any(|k| k == key)
}

/// Pingora keys that fulcrum rejects, and why. `s2n_config_cache_size`
/// exists in `ServerConf` only when Pingora is built with s2n (fulcrum's is
/// not); it is listed so that it gets its reason rather than "unknown key".
pub const REJECTED: &[(&str, &str)] = &[
    (
        "daemon",
        "not supported: use the -d flag; fulcrum prepares a daemon start (account checks, \
         binding as root before the switch of user) only for -d (src/lifecycle/service.rs)",
    ),
    (
        "daemon_wait_for_ready",
        "breaks -d: Pingora signals readiness from its bootstrap, which fulcrum runs before \
         it daemonizes (src/lifecycle/service.rs), so the starting process would wait \
         daemon_ready_timeout_seconds (600 s) and exit 1 while the daemon serves",
    ),
    (
        "daemon_ready_timeout_seconds",
        "has no effect: used only with daemon_wait_for_ready, which fulcrum rejects",
    ),
    (
        "daemon_notify_timeout_seconds",
        "has no effect: used only with daemon_wait_for_ready, which fulcrum rejects",
    ),
    (
        "upstream_connect_offload_threadpools",
        "breaks upstream connection reuse: Pingora would run fulcrum's connector on its \
         offload threads, away from each worker thread's idle connections \
         (src/net/upstream/connector.rs)",
    ),
    (
        "upstream_connect_offload_thread_per_pool",
        "breaks upstream connection reuse: Pingora would run fulcrum's connector on its \
         offload threads, away from each worker thread's idle connections \
         (src/net/upstream/connector.rs)",
    ),
    (
        "client_bind_to_ipv4",
        "has no effect: fulcrum opens upstream connections with its own connector, which \
         Pingora gives no bind address (src/net/upstream/connector.rs)",
    ),
    (
        "client_bind_to_ipv6",
        "has no effect: fulcrum opens upstream connections with its own connector, which \
         Pingora gives no bind address (src/net/upstream/connector.rs)",
    ),
    (
        "ca_file",
        "is not how fulcrum trusts servers: a pool's tls.ca names its CA \
         (health checks use the same), the system's CAs otherwise",
    ),
    (
        "s2n_config_cache_size",
        "has no effect: TLS (s2n); fulcrum's Pingora is built without TLS",
    ),
    (
        "upstream_debug_ssl_keylog",
        "would write TLS session keys to SSLKEYLOGFILE for every pool: a \
         debugging aid fulcrum does not offer in a running instance",
    ),
    (
        "downstream_tls_offload_threadpools",
        "has no effect: fulcrum's own accept loops do client TLS handshakes on \
         the worker threads (src/net/downstream/handshake.rs)",
    ),
    (
        "downstream_tls_offload_thread_per_pool",
        "has no effect: fulcrum's own accept loops do client TLS handshakes on \
         the worker threads (src/net/downstream/handshake.rs)",
    ),
    (
        "runtime_enable_alt_timer",
        "has no effect: it needs a build with --cfg tokio_unstable, which fulcrum's is not, \
         and applies only to Pingora's work-stealing runtimes",
    ),
    (
        "runtime_metrics_poll_time_histogram",
        "has no effect: it needs a build with --cfg tokio_unstable, which fulcrum's is not, \
         and fulcrum's worker threads run runtimes of their own (src/net/workers.rs)",
    ),
    (
        "runtime_metrics_poll_time_histogram_scale",
        "has no effect: used only with runtime_metrics_poll_time_histogram, which fulcrum \
         rejects",
    ),
    (
        "runtime_metrics_poll_time_histogram_resolution_micros",
        "has no effect: used only with runtime_metrics_poll_time_histogram, which fulcrum \
         rejects",
    ),
    (
        "runtime_metrics_poll_time_histogram_buckets",
        "has no effect: used only with runtime_metrics_poll_time_histogram, which fulcrum \
         rejects",
    ),
];

/// `listener_tasks_per_fd` does something only on a work-stealing runtime.
const LISTENER_TASKS: &str = "has no effect unless work_stealing is true: fulcrum's accept \
     loops run on one thread, which hands each connection to a worker thread \
     (src/net/downstream/listener.rs)";

/// Why `key`, present in the document `map`, is rejected; `None` when
/// fulcrum honours it (or when it is not a Pingora key at all).
pub fn rejection(key: &str, map: &Mapping) -> Option<&'static str> {
    if let Some((_, why)) = REJECTED.iter().find(|(k, _)| *k == key) {
        return Some(why);
    }
    let work_stealing = map.get("work_stealing") == Some(&Value::Bool(true));
    (key == "listener_tasks_per_fd" && !work_stealing).then_some(LISTENER_TASKS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pingora keys that fulcrum honours, with where it does.
    const HONOURED: &[(&str, &str)] = &[
        (
            "version",
            "the file's version: Pingora checks nothing, the shipped configs say 1",
        ),
        (
            "threads",
            "worker threads (src/net/workers.rs, src/lifecycle/service.rs)",
        ),
        (
            "work_stealing",
            "Pingora's runtime instead of the workers (src/net/workers.rs)",
        ),
        (
            "listener_tasks_per_fd",
            "accept loops per socket, with work_stealing: true",
        ),
        (
            "pid_file",
            "written by fulcrum and by Pingora's daemon (src/lifecycle/service.rs)",
        ),
        ("upgrade_sock", "Pingora's socket hand-over at an upgrade"),
        (
            "upgrade_sock_connect_accept_max_retries",
            "the same hand-over",
        ),
        (
            "grace_period_seconds",
            "Pingora's graceful stop; fulcrum -T prints it",
        ),
        (
            "graceful_shutdown_timeout_seconds",
            "Pingora's graceful stop; fulcrum -T prints it",
        ),
        (
            "user",
            "Pingora's switch of user under -d (src/lifecycle/privileges.rs)",
        ),
        ("group", "Pingora's switch of group under -d"),
        (
            "error_log",
            "fulcrum's own key (error_log: path, level, format); not passed to Pingora",
        ),
        ("working_directory", "Pingora's daemon runs there under -d"),
        (
            "upstream_keepalive_pool_size",
            "idle connections per worker (src/net/upstream/connector.rs)",
        ),
        (
            "max_retries",
            "Pingora's attempts per request, raised by fulcrum at start",
        ),
        (
            "max_blocking_threads",
            "blocking pools of Pingora's runtimes (reload reads the file there)",
        ),
        (
            "blocking_threads_ttl_seconds",
            "blocking pools of Pingora's runtimes",
        ),
        (
            "fast_timeout_to_tokio_threshold_seconds",
            "Pingora's read and write timeouts",
        ),
    ];

    /// The keys fulcrum's documentation names (docs/configuration.md).
    const DOCUMENTED: &[&str] = &[
        "version",
        "threads",
        "work_stealing",
        "pid_file",
        "upgrade_sock",
        "grace_period_seconds",
        "graceful_shutdown_timeout_seconds",
        "user",
        "group",
        "error_log",
        "upstream_keepalive_pool_size",
        "max_retries",
    ];

    /// Keys `ServerConf` has only with a Pingora feature fulcrum does not build.
    const FEATURE_GATED: &[&str] = &["s2n_config_cache_size"];

    #[test]
    fn the_keys_come_from_pingoras_server_conf_and_include_the_documented_ones() {
        let keys = pingora_keys();
        for k in DOCUMENTED {
            assert!(
                is_pingora_key(k),
                "{k} is not a key of Pingora's ServerConf: {keys:?}"
            );
        }
        assert!(!is_pingora_key("listen"), "a fulcrum key");
        assert!(!is_pingora_key("statsu"));
    }

    #[test]
    fn every_pingora_key_is_either_honoured_or_rejected_with_a_reason() {
        let mut undecided = vec![];
        for k in pingora_keys() {
            let honoured = HONOURED.iter().any(|(h, _)| h == k);
            let rejected = REJECTED.iter().any(|(r, _)| r == k);
            assert!(!(honoured && rejected), "{k}: both honoured and rejected");
            if !honoured && !rejected {
                undecided.push(k.as_str());
            }
        }
        assert!(
            undecided.is_empty(),
            "Pingora keys with no decision (honour them, or reject them with a reason): \
             {undecided:?}"
        );
        for (k, _) in HONOURED {
            assert!(is_pingora_key(k), "{k}: not a Pingora key any more");
        }
        for (k, why) in REJECTED {
            assert!(
                is_pingora_key(k) || FEATURE_GATED.contains(k),
                "{k}: not a Pingora key any more"
            );
            assert!(!why.is_empty());
        }
    }

    #[test]
    fn listener_tasks_per_fd_is_rejected_unless_work_stealing() {
        let doc = |text: &str| match serde_yaml::from_str::<Value>(text).unwrap() {
            Value::Mapping(m) => m,
            _ => unreachable!(),
        };
        let key = "listener_tasks_per_fd";
        assert!(rejection(key, &doc("listener_tasks_per_fd: 2")).is_some());
        let stealing = doc("listener_tasks_per_fd: 2\nwork_stealing: true");
        assert_eq!(rejection(key, &stealing), None);
        assert_eq!(rejection("threads", &stealing), None);
        assert!(rejection("daemon_wait_for_ready", &stealing).is_some());
    }
}
