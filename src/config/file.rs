//! The YAML file format: serde structs that mirror the file one to one, with
//! `deny_unknown_fields` so that a typo is an error, not a silently ignored key.
//! Values stay close to their written form (durations as strings); turning
//! them into the model, and every semantic check, happens in `validate.rs`.

use serde::Deserialize;
use serde_yaml::Value;

/// Top-level keys that belong to Pingora's `ServerConf`, which reads the same file.
pub const PINGORA_KEYS: &[&str] = &[
    "version",
    "daemon",
    "error_log",
    "pid_file",
    "upgrade_sock",
    "user",
    "group",
    "working_directory",
    "threads",
    "listener_tasks_per_fd",
    "work_stealing",
    "runtime_enable_alt_timer",
    "ca_file",
    "s2n_config_cache_size",
    "grace_period_seconds",
    "graceful_shutdown_timeout_seconds",
    "client_bind_to_ipv4",
    "client_bind_to_ipv6",
    "upstream_keepalive_pool_size",
    "upstream_connect_offload_threadpools",
    "upstream_connect_offload_thread_per_pool",
    "downstream_tls_offload_threadpools",
    "downstream_tls_offload_thread_per_pool",
    "upstream_debug_ssl_keylog",
    "max_retries",
    "upgrade_sock_connect_accept_max_retries",
    "max_blocking_threads",
    "blocking_threads_ttl_seconds",
    "fast_timeout_to_tokio_threshold_seconds",
    "runtime_metrics_poll_time_histogram",
    "runtime_metrics_poll_time_histogram_scale",
    "runtime_metrics_poll_time_histogram_resolution_micros",
    "runtime_metrics_poll_time_histogram_buckets",
    "daemon_wait_for_ready",
    "daemon_ready_timeout_seconds",
    "daemon_notify_timeout_seconds",
];

/// fulcrum's own top-level keys.
pub const OWN_KEYS: &[&str] = &[
    "listen",
    "health_path",
    "status",
    "access_log",
    "access_log_format",
    "pools",
    "routes",
    "limits",
];

/// `status:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatus {
    pub path: Option<String>,
    pub allow: Option<Vec<String>>,
    pub admin_token: Option<String>,
}

/// `limits:` section: what a client may send (nginx-like names and defaults).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_header_size: Option<Value>,
    pub max_header_count: Option<u32>,
    pub client_max_body_size: Option<Value>,
    pub client_header_timeout: Option<String>,
    pub client_body_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub max_connections: Option<u32>,
}

/// One pool under `pools:`. Servers stay raw so each is checked on its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub selection: Option<String>,
    pub decay: Option<String>,
    pub default_rtt: Option<String>,
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub write_timeout: Option<String>,
    pub host_header: Option<String>,
    pub retry: Option<RawRetry>,
    pub health_check: Option<RawHealthCheck>,
    pub servers: Option<Vec<Value>>,
}

/// `retry:` inside a pool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub tries: Option<u32>,
    pub timeout: Option<String>,
    pub on: Option<Vec<String>>,
    pub non_idempotent: Option<bool>,
}

/// `health_check:` inside a pool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub path: Option<String>,
    pub expect_status: Option<Vec<Value>>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

/// One entry of a pool's `servers:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub addr: Option<String>,
    pub weight: Option<u32>,
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<String>,
    pub max_conns: Option<u32>,
    pub backup: Option<bool>,
    pub down: Option<bool>,
}

/// One entry of `routes:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: Option<String>,
    pub pool: Option<String>,
    pub strip_prefix: Option<bool>,
}

/// Deserializes `value` as `T`, turning a failure into `path.inner.field: reason`.
pub fn parse_section<T: serde::de::DeserializeOwned>(
    value: &Value,
    path: &str,
    errors: &mut Vec<String>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let full = if inner == "." || inner.is_empty() {
                path.to_string()
            } else if inner.starts_with('[') {
                format!("{path}{inner}")
            } else {
                format!("{path}.{inner}")
            };
            errors.push(format!("{full}: {}", e.into_inner()));
            None
        }
    }
}
