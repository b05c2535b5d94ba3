//! Turns the parsed file into the model. All checks live here, and every
//! error found is collected (not just the first), each prefixed with the
//! field path it concerns, e.g. `routes[2].pool: no pool named "orders"`.
//!
//! - `mod.rs`: the document, its top-level keys, `listen`, `status`, the
//!   access log
//! - `pingora_settings.rs`: Pingora's own keys (`ServerConf`)
//! - `limits.rs`, `pools.rs`, `health_check.rs`, `queue.rs`, `slow_start.rs`,
//!   `discover.rs`, `routes.rs`: their sections; `listen.rs` the listen
//!   entries; `upstream.rs` a pool's `tls` and `protocol`

mod discover;
mod health_check;
mod limits;
mod listen;
mod pingora_settings;
mod pools;
mod queue;
mod routes;
mod slow_start;
#[cfg(test)]
mod tests;
mod upstream;

use super::duration::parse_duration;
use super::env::expand_tree;
use super::file::*;
use super::pingora_keys::{is_pingora_key, rejection};
use super::*;
pub use discover::{MAX_INTERVAL, MIN_INTERVAL};
use limits::limits;
use listen::listen;
use pools::pools;
use routes::routes;
use serde_yaml::Value;

const DEFAULT_STATUS_ALLOW: &[&str] = &["127.0.0.1/32", "::1/128"];

/// Collects errors while walking the document.
#[derive(Default)]
struct Checker {
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl Checker {
    /// Takes what loading TLS material found.
    fn absorb(&mut self, f: crate::config::tls::Findings) {
        for (field, msg) in f.errors {
            self.err(&field, msg);
        }
        for (field, msg) in f.warnings {
            self.warnings.push(format!("{field}: {msg}"));
        }
    }

    fn err(&mut self, path: &str, msg: impl fmt::Display) {
        self.errors.push(format!("{path}: {msg}"));
    }

    fn duration(&mut self, path: &str, raw: Option<&String>, default: Duration) -> Duration {
        match raw {
            None => default,
            Some(s) => parse_duration(s).unwrap_or_else(|e| {
                self.err(path, e);
                default
            }),
        }
    }

    fn abs_path(&mut self, path: &str, raw: Option<String>, default: &str) -> String {
        let p = raw.unwrap_or_else(|| default.to_string());
        if !p.starts_with('/') {
            self.err(path, format!("{p:?} must start with '/'"));
        }
        p
    }
}

pub(super) fn validate_document(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    let mut doc: Value =
        serde_yaml::from_str(text).map_err(|e| ConfigErrors(vec![format!("invalid YAML: {e}")]))?;
    if doc.is_null() {
        doc = Value::Mapping(Default::default());
    }
    let Value::Mapping(_) = doc else {
        return Err(ConfigErrors(vec![
            "(top level): the config must be a YAML mapping".into(),
        ]));
    };
    let mut c = Checker::default();
    expand_tree(&mut doc, "", lookup, &mut c.errors);
    let map = doc.as_mapping().expect("checked above");

    for key in map.keys() {
        match key.as_str() {
            Some(k) => match rejection(k, map) {
                Some(why) => c.err(k, why),
                None if OWN_KEYS.contains(&k) || is_pingora_key(k) => {}
                None => c.err(k, "unknown key"),
            },
            None => c.err(&format!("{key:?}"), "keys must be strings"),
        }
    }

    let server = pingora_settings::server_conf(&mut c, map);

    let get = |k: &str| map.get(k).filter(|v| !v.is_null());
    let listen = listen(&mut c, get("listen"));
    let health_path = match get("health_path") {
        None => "/health".to_string(),
        Some(v) => {
            let s = parse_section::<String>(v, "health_path", &mut c.errors);
            c.abs_path("health_path", s, "/health")
        }
    };
    let status = status(&mut c, get("status"));
    if status.path == health_path {
        c.err("status.path", "must differ from health_path");
    }
    let access_log =
        match get("access_log").map(|v| parse_section::<String>(v, "access_log", &mut c.errors)) {
            None => AccessLogTarget::Stdout,
            Some(None) => AccessLogTarget::Off,
            Some(Some(s)) => match s.as_str() {
                "stdout" => AccessLogTarget::Stdout,
                "off" => AccessLogTarget::Off,
                "" => {
                    c.err("access_log", "must be stdout, off or a file path");
                    AccessLogTarget::Off
                }
                p => AccessLogTarget::File(PathBuf::from(p)),
            },
        };

    let error_log = error_log(&mut c, get("error_log"));
    let access_log_format = match get("access_log_format")
        .and_then(|v| parse_section::<String>(v, "access_log_format", &mut c.errors))
        .as_deref()
    {
        None | Some("default") => AccessLogFormat::Default,
        Some("combined") => AccessLogFormat::Combined,
        Some("json") => AccessLogFormat::Json,
        Some(other) => {
            c.err(
                "access_log_format",
                format!("{other:?} is not one of default, combined, json"),
            );
            AccessLogFormat::Default
        }
    };

    let pools = pools(&mut c, get("pools"));
    let routes = routes(&mut c, "routes", get("routes"), &pools);
    let listen = listen::listen_routes(&mut c, listen, &pools);
    let limits = limits(&mut c, get("limits"));

    if c.errors.is_empty() {
        Ok(Loaded {
            config: Config {
                listen,
                health_path,
                status,
                error_log,
                access_log,
                access_log_format,
                pools,
                routes,
                limits,
            },
            server: server.expect("no errors means Pingora settings parsed"),
            warnings: c.warnings,
        })
    } else {
        Err(ConfigErrors(c.errors))
    }
}

/// `error_log: FILE` or `error_log: {path: stderr|FILE, level, format: text|json}`.
fn error_log(c: &mut Checker, v: Option<&Value>) -> ErrorLogConfig {
    let mut out = ErrorLogConfig::default();
    let raw = match v {
        None => return out,
        Some(Value::String(s)) => RawErrorLog {
            path: Some(s.clone()),
            ..RawErrorLog::default()
        },
        Some(v) => match parse_section::<RawErrorLog>(v, "error_log", &mut c.errors) {
            Some(r) => r,
            None => return out,
        },
    };
    match raw.path.as_deref() {
        None | Some("stderr") => {}
        Some("") => c.err("error_log.path", "must be stderr or a file path"),
        Some(p) => out.path = Some(PathBuf::from(p)),
    }
    if let Some(level) = raw.level {
        match level.parse::<log::LevelFilter>() {
            Ok(l) if l != log::LevelFilter::Off => out.level = l,
            _ => c.err(
                "error_log.level",
                format!("{level:?} is not one of error, warn, info, debug, trace"),
            ),
        }
    }
    match raw.format.as_deref() {
        None | Some("text") => {}
        Some("json") => out.json = true,
        Some(other) => c.err(
            "error_log.format",
            format!("{other:?} is not one of text, json"),
        ),
    }
    out
}

fn status(c: &mut Checker, v: Option<&Value>) -> StatusConfig {
    let raw = v
        .and_then(|v| parse_section::<RawStatus>(v, "status", &mut c.errors))
        .unwrap_or_default();
    let path = c.abs_path("status.path", raw.path, "/nginx-status");
    if path.len() > 1 && path.ends_with('/') {
        c.err("status.path", "must not end with '/'");
    }
    let allow_raw = raw
        .allow
        .unwrap_or_else(|| DEFAULT_STATUS_ALLOW.iter().map(|s| s.to_string()).collect());
    let mut allow = vec![];
    for (i, a) in allow_raw.iter().enumerate() {
        match a.parse::<Cidr>() {
            Ok(cidr) => allow.push(cidr),
            Err(e) => c.err(&format!("status.allow[{i}]"), e),
        }
    }
    let admin_token = raw.admin_token.filter(|t| !t.is_empty());
    StatusConfig {
        path,
        allow,
        admin_token,
    }
}
