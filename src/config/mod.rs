//! Configuration: the model the rest of fulcrum uses, loaded from one YAML file
//! that also carries Pingora's own server keys.
//!
//! - `file.rs`: the file format (serde, rejects unknown keys)
//! - `pingora_keys.rs`: Pingora's own keys, taken from its `ServerConf`, and
//!   the ones fulcrum rejects, with the reason
//! - `env.rs`: `${VAR}` expansion
//! - `duration.rs`, `cidr.rs`, `size.rs`: value syntaxes
//! - `validate/`: file format -> model, collecting every error with its field path

pub(crate) mod accounts;
mod cidr;
mod duration;
mod env;
mod file;
mod pingora_keys;
mod size;
pub mod tls;
mod validate;

pub use cidr::Cidr;
pub use duration::parse_duration;
pub use pingora_keys::{pingora_keys, REJECTED as REJECTED_PINGORA_KEYS};
pub use size::parse_size;
pub use validate::{
    MAX_INTERVAL as MAX_DISCOVERY_INTERVAL, MIN_INTERVAL as MIN_DISCOVERY_INTERVAL,
};

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything fulcrum reads from its config file besides Pingora's keys.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on, each with its TLS and HTTP/2 settings.
    pub listen: Vec<ListenConfig>,
    /// Path answered by fulcrum itself with 200 `ok`.
    pub health_path: String,
    /// The status pages.
    pub status: StatusConfig,
    /// Where the error log goes, from which level, how.
    pub error_log: ErrorLogConfig,
    /// Where the access log goes.
    pub access_log: AccessLogTarget,
    /// How access log lines look.
    pub access_log_format: AccessLogFormat,
    /// Upstream pools, in file order.
    pub pools: Vec<PoolConfig>,
    /// Prefix routes, in file order.
    pub routes: Vec<RouteConfig>,
    /// What a client may send.
    pub limits: LimitsConfig,
}

/// One `listen` entry.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// The address.
    pub addr: SocketAddr,
    /// TLS on this address, if any.
    pub tls: Option<tls::ListenTls>,
    /// HTTP/2: offered by ALPN with TLS, h2c prior knowledge without.
    pub http2: bool,
    /// Routes of requests that arrive on this address, in place of the
    /// top-level ones (as an nginx `server` block's locations).
    pub routes: Option<Vec<RouteConfig>>,
}

/// The addresses of `listen`.
pub fn listen_addrs(listen: &[ListenConfig]) -> Vec<SocketAddr> {
    listen.iter().map(|l| l.addr).collect()
}

/// Pingora's own request header limit (pingora-core `MAX_HEADER_SIZE`):
/// a larger header is answered 400 before fulcrum sees it.
pub const PINGORA_MAX_HEADER_SIZE: usize = 1_048_575;
/// Pingora's own header count limit (pingora-core `MAX_HEADERS`): more
/// fields are answered 400 before fulcrum sees them.
pub const PINGORA_MAX_HEADER_COUNT: usize = 256;

/// `limits:`: request and connection limits for clients (nginx-like).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Request line plus header fields, in bytes, as received; above: 431.
    pub max_header_size: usize,
    /// Header fields (lines); above: 431.
    pub max_header_count: usize,
    /// Request body bytes; above: 413. 0 = unlimited.
    pub client_max_body_size: u64,
    /// Time allowed to send a whole request header.
    pub client_header_timeout: Duration,
    /// Time allowed between two reads of the request body; then 408.
    pub client_body_timeout: Duration,
    /// How long an idle keepalive connection is kept; zero disables keepalive.
    pub keepalive_timeout: Duration,
    /// Longest wait for the client to take more of a response (nginx
    /// `send_timeout`): a client that stops reading, or an HTTP/2 client
    /// that keeps its window shut, is cut after it.
    pub send_timeout: Duration,
    /// Concurrent client connections; excess ones are closed at once. 0 = unlimited.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_header_size: 32 * 1024,
            max_header_count: 100,
            client_max_body_size: 1 << 20,
            client_header_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            max_connections: 0,
        }
    }
}

/// `status:`: stub_status page and its siblings.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// Base path (`/nginx-status`); `/json` etc. live below it.
    pub path: String,
    /// Peers allowed to read it; everyone else gets 403.
    pub allow: Vec<Cidr>,
    /// Bearer token for write endpoints; `None` disables them.
    pub admin_token: Option<String>,
}

/// `error_log:` (`{path, level, format}`; a plain string is the path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorLogConfig {
    /// `None`: stderr (with syslog priority prefixes under systemd).
    pub path: Option<PathBuf>,
    /// The least severe level written (`RUST_LOG`, when set, overrides).
    pub level: log::LevelFilter,
    /// Text lines or one JSON object per line.
    pub json: bool,
}

impl Default for ErrorLogConfig {
    fn default() -> Self {
        ErrorLogConfig {
            path: None,
            level: log::LevelFilter::Info,
            json: false,
        }
    }
}

/// `access_log:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// No access log.
    Off,
    /// Appended to a file.
    File(PathBuf),
}

/// `access_log_format:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    /// fulcrum's own line with every upstream tried.
    #[default]
    Default,
    /// nginx `combined`, with the upstream fields appended.
    Combined,
    /// One JSON object per line.
    Json,
}

/// How a pool chooses among its usable servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Lowest in-flight/weight, ties by smooth weighted round-robin.
    LeastConn,
    /// Pingora's weighted round-robin.
    RoundRobin,
    /// Pingora's weighted random.
    Random,
    /// Latency-aware least-load: peak-EWMA × (in-flight + 1) / weight,
    /// power of two choices.
    Ewma,
    /// Power of two choices on in-flight/weight.
    P2c,
}

impl Selection {
    /// The name used in the config file and the status pages.
    pub fn as_str(self) -> &'static str {
        match self {
            Selection::LeastConn => "least_conn",
            Selection::RoundRobin => "round_robin",
            Selection::Random => "random",
            Selection::Ewma => "ewma",
            Selection::P2c => "p2c",
        }
    }
}

/// Default `decay`: the time constant of the latency estimate (as Linkerd).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);
/// Default `default_rtt`: the start value for a server without samples.
/// Deliberately optimistic (about a fast LAN answer): an estimate that is
/// too low is corrected by the first answer (peak rule), while one that is
/// too high only comes down over several `decay` periods of idle decay.
pub const DEFAULT_RTT: Duration = Duration::from_millis(1);

/// One upstream pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Pool name, as used in `routes[].pool`.
    pub name: String,
    /// Selection algorithm.
    pub selection: Selection,
    /// Time constant of the latency estimate's decay (`ewma`).
    pub decay: Duration,
    /// Latency estimate of a server without samples yet (`ewma`).
    pub default_rtt: Duration,
    /// Timeout to establish a connection to a server.
    pub connect_timeout: Duration,
    /// Timeout between two reads from a server.
    pub read_timeout: Duration,
    /// Timeout between two writes to a server.
    pub write_timeout: Duration,
    /// The Host sent to the servers in place of the client's (nginx
    /// `proxy_set_header Host`); `None`: the client's.
    pub host_header: Option<http::HeaderValue>,
    /// Retry policy.
    pub retry: RetryConfig,
    /// Active health check, if any.
    pub health_check: Option<HealthCheckConfig>,
    /// TLS towards the servers, if any.
    pub tls: Option<tls::UpstreamTls>,
    /// HTTP version spoken to the servers.
    pub protocol: UpstreamProtocol,
    /// Where requests wait when every usable server is at `max_conns`;
    /// `None`: they are answered 503 at once.
    pub queue: Option<QueueConfig>,
    /// Servers, in file order. With `resolve:` only those written as
    /// `ip:port`; with `discover:` none. (A running pool's own copy holds
    /// its current members, discovered ones included.)
    pub servers: Vec<ServerConfig>,
    /// `resolve:` or `discover:`: servers found through DNS.
    pub discovery: Option<DiscoveryConfig>,
}

/// `pools.*.resolve` or `pools.*.discover`: servers found through DNS, in the
/// background (`pool/discover/`, `lifecycle/discovery.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// What is looked up.
    pub source: DiscoverySource,
    /// DNS servers asked (UDP, then TCP for a truncated answer); empty: the
    /// system's `/etc/resolv.conf`.
    pub resolvers: Vec<SocketAddr>,
    /// Time between two lookups; `None`: the answer's TTL, clamped.
    pub interval: Option<Duration>,
    /// Only addresses in these blocks become servers; empty: any address.
    pub allow: Vec<Cidr>,
}

/// Where a pool's discovered servers come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoverySource {
    /// `discover.srv`: one SRV name; its servers take the pool's
    /// `max_fails` and `fail_timeout`, their weight and tier from the record.
    Srv {
        /// `_service._proto.name`.
        name: String,
        /// The pool's `max_fails`.
        max_fails: u32,
        /// The pool's `fail_timeout`.
        fail_timeout: Duration,
        /// The pool's `slow_start`.
        slow_start: Duration,
    },
    /// `resolve:`: the servers whose `addr` is `host:port`, re-resolved;
    /// every address of a host becomes a server with that entry's settings.
    Hosts(Vec<HostServer>),
}

/// A `servers[]` entry whose `addr` names a host, under `resolve:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostServer {
    /// The host name as written.
    pub host: String,
    /// The port as written.
    pub port: u16,
    /// The entry's settings; `addr` and `name` are filled in per address.
    pub settings: ServerConfig,
}

/// One server of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The address as written (after `${VAR}` expansion), for display.
    pub name: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// Relative weight, at least 1.
    pub weight: u32,
    /// Failures within `fail_timeout` that make the server unusable; 0 disables.
    pub max_fails: u32,
    /// Window for counting failures and time the server stays unusable.
    pub fail_timeout: Duration,
    /// Maximum concurrent requests; 0 = unlimited.
    pub max_conns: u32,
    /// Used only when no primary server is usable.
    pub backup: bool,
    /// Never used.
    pub down: bool,
    /// Reached with the pool's `tls` (if it has one); `false`: in clear.
    pub tls: bool,
    /// How long a server that becomes usable takes to ramp up to its full
    /// weight; zero: at once.
    pub slow_start: Duration,
}

/// `protocol:` of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (with `tls`: offered alone by ALPN).
    #[default]
    Http1,
    /// HTTP/2 over TLS (ALPN h2; needs `tls`).
    H2,
    /// HTTP/2 in clear text, prior knowledge (no `tls`).
    H2c,
}

impl UpstreamProtocol {
    /// The name used in the config file and the status pages.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::H2c => "h2c",
        }
    }
}

/// Longest `slow_start` accepted: a longer ramp is almost surely a typo
/// (`30m` for `30s`), and would keep a restored server underused for hours.
pub const MAX_SLOW_START: Duration = Duration::from_secs(3600);

/// `queue:` of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Requests that may wait at once; one more is answered 503.
    pub size: usize,
    /// Longest wait; then 503.
    pub timeout: Duration,
}

/// Largest `queue.size` accepted.
pub const MAX_QUEUE_SIZE: usize = 1_000_000;
/// Default `queue.timeout`, nginx's (`queue ... timeout=60s`).
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(60);

/// Which outcomes count as a failure that may be retried (nginx `proxy_next_upstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn {
    /// Connection errors and invalid responses.
    pub error: bool,
    /// Timeouts.
    pub timeout: bool,
    /// Statuses 500, 502, 503, 504, 429.
    pub http_500: bool,
    pub http_502: bool,
    pub http_503: bool,
    pub http_504: bool,
    pub http_429: bool,
}

impl RetryOn {
    /// Whether a response with `status` is a failure under this policy.
    pub fn status_is_failure(&self, status: u16) -> bool {
        match status {
            500 => self.http_500,
            502 => self.http_502,
            503 => self.http_503,
            504 => self.http_504,
            429 => self.http_429,
            _ => false,
        }
    }
}

/// `retry:` of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Total attempts; 0 = every usable server once.
    pub tries: u32,
    /// Overall limit for all attempts; `None` = no limit.
    pub timeout: Option<Duration>,
    /// Which failures are retried and counted.
    pub on: RetryOn,
    /// Retry POST/PATCH/LOCK after they were sent.
    pub non_idempotent: bool,
}

/// Kind of active health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// `GET path`, status must be in `expect_status`.
    Http {
        /// Request path.
        path: String,
        /// Inclusive status ranges.
        expect_status: Vec<(u16, u16)>,
    },
    /// A TCP connect.
    Tcp,
}

/// `health_check:` of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// What a check does.
    pub kind: CheckKind,
    /// Time between checks.
    pub interval: Duration,
    /// Limit for one check.
    pub timeout: Duration,
    /// Consecutive successes that bring a server back.
    pub rise: u32,
    /// Consecutive failures that take a server out.
    pub fall: u32,
}

/// One entry of `routes:`.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Path prefix, starting with `/`.
    pub prefix: String,
    /// Index into `Config::pools`.
    pub pool: usize,
    /// Remove the prefix before forwarding.
    pub strip_prefix: bool,
}

/// Every problem found in a config file; each line names its field path.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A loaded file: our model plus Pingora's settings from the same document.
pub struct Loaded {
    /// fulcrum's settings.
    pub config: Config,
    /// Pingora's settings.
    pub server: pingora::server::configuration::ServerConf,
    /// What is valid but deserves a look (`field: message`), such as a
    /// certificate that expires soon: printed by `-t`, logged at start and
    /// reload.
    pub warnings: Vec<String>,
}

/// Reads, expands and validates `path` against the process environment.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
    from_str(&text, &|name| std::env::var(name).ok())
}

/// `fulcrum -T`: the document at `path` as fulcrum reads it, once it is
/// valid: `${VAR}` expanded, secrets (`status.admin_token`) masked.
pub fn dump(path: &Path) -> Result<String, ConfigErrors> {
    let lookup = |name: &str| std::env::var(name).ok();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
    from_str(&text, &lookup)?;
    dump_str(&text, &lookup)
}

/// [`dump`] of a document already known to be valid.
fn dump_str(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigErrors> {
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| ConfigErrors(vec![format!("invalid YAML: {e}")]))?;
    let mut errors = Vec::new();
    env::expand_tree(&mut doc, "", lookup, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let token = doc.get_mut("status").and_then(|s| s.get_mut("admin_token"));
    if let Some(t) = token {
        *t = serde_yaml::Value::String("********".into());
    }
    serde_yaml::to_string(&doc).map_err(|e| ConfigErrors(vec![format!("cannot print: {e}")]))
}

/// Parses a config document, looking variables up with `lookup`.
pub fn from_str(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    validate::validate_document(text, lookup)
}

#[cfg(test)]
mod dump_tests {
    use super::*;

    #[test]
    fn the_dump_is_the_expanded_document_with_the_token_masked() {
        let text = "listen: [\"${ADDR}:8080\"]\nstatus:\n  admin_token: \"${TOKEN}\"\npools:\n  p:\n    servers: [{addr: \"127.0.0.1:1\"}]\n";
        let lookup = |n: &str| match n {
            "ADDR" => Some("127.0.0.1".to_string()),
            "TOKEN" => Some("s3cret".to_string()),
            _ => None,
        };
        let out = dump_str(text, &lookup).unwrap();
        assert!(out.contains("127.0.0.1:8080"), "{out}");
        assert!(
            out.contains("admin_token: '********'")
                || out.contains("admin_token: \"********\"")
                || out.contains("admin_token: ********"),
            "{out}"
        );
        assert!(!out.contains("s3cret"), "{out}");
        assert!(!out.contains("${"), "{out}");
    }
}
