//! The YAML file format: serde structs that mirror the file one to one, with
//! `deny_unknown_fields` so that a typo is an error, not a silently ignored key.
//! Values stay close to their written form (durations as strings); turning
//! them into the model, and every semantic check, happens in `validate/`.
//! Pingora's keys are its `ServerConf`'s (`pingora_keys.rs`).

use serde::Deserialize;
use serde_yaml::Value;

/// fulcrum's own top-level keys.
pub const OWN_KEYS: &[&str] = &[
    "listen",
    "health_path",
    "status",
    "access_log",
    "access_log_format",
    "error_log",
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
    pub send_timeout: Option<String>,
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
    pub slow_start: Option<String>,
    pub queue: Option<RawQueue>,
    pub retry: Option<RawRetry>,
    pub health_check: Option<RawHealthCheck>,
    pub tls: Option<RawUpstreamTls>,
    pub protocol: Option<String>,
    pub servers: Option<Vec<Value>>,
    pub resolve: Option<RawResolve>,
    pub discover: Option<RawDiscover>,
}

/// `resolve:` inside a pool: re-resolve the servers' host names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResolve {
    pub interval: Option<String>,
    pub resolvers: Option<Vec<String>>,
    pub allow: Option<Vec<String>>,
}

/// `discover:` inside a pool: servers from an SRV name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscover {
    pub srv: Option<String>,
    pub interval: Option<String>,
    pub resolvers: Option<Vec<String>>,
    pub allow: Option<Vec<String>>,
}

/// `tls:` inside a pool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub verify: Option<bool>,
    pub ca: Option<String>,
    pub sni: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
}

/// One `listen:` entry written as a mapping.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub addr: Option<String>,
    pub tls: Option<RawListenTls>,
    pub http2: Option<bool>,
    pub routes: Option<Value>,
}

/// `tls:` of a listen entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenTls {
    pub certificates: Option<Vec<RawCertificate>>,
    pub protocols: Option<Vec<String>>,
    pub client_ca: Option<String>,
    pub handshake_timeout: Option<String>,
}

/// One certificate of a listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub names: Option<Vec<String>>,
}

/// `queue:` inside a pool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    pub size: Option<u32>,
    pub timeout: Option<String>,
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
    pub tls: Option<bool>,
    pub slow_start: Option<String>,
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

/// `error_log:` as a mapping.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawErrorLog {
    pub path: Option<String>,
    pub level: Option<String>,
    pub format: Option<String>,
}
