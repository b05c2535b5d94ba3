//! TLS material, loaded and checked with the rest of the config so that a
//! bad certificate is a `fulcrum -t` error (and a refused reload that keeps
//! the old one serving), never a failure at the first handshake.
//!
//! - [`ListenTls`]: a listener's certificates (picked by SNI, the first is
//!   the default), protocol versions, optional client CA, ALPN.
//! - [`UpstreamTls`]: a pool's TLS towards its servers (verification, CA,
//!   SNI, client certificate).
//!
//! rustls with aws-lc-rs (docs/tls-backends.md says why): only TLS 1.2 and
//! 1.3 exist; X25519MLKEM768 is preferred when the client offers it.

use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use rustls::crypto::aws_lc_rs as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Makes aws-lc-rs the process's rustls provider, which Pingora's connector
/// (upstream TLS, health checks) then uses too: called before Pingora
/// installs ring as the default, which it does only if none is set.
pub fn install_crypto_provider() {
    // Err only if one is installed already (a second call): nothing to do.
    let _ = provider::default_provider().install_default();
}

/// A certificate expiring sooner than this is a `-t` warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Default bound on a TLS handshake (`tls.handshake_timeout`): shorter than
/// nginx's 60 s, since a stalled handshake holds memory and gives nothing.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS on one listen address.
#[derive(Clone)]
pub struct ListenTls {
    /// The rustls configuration every handshake on the address uses.
    pub server: Arc<ServerConfig>,
    /// Longest time from accept to a finished handshake.
    pub handshake_timeout: Duration,
    /// What was loaded, for `-t` and the log.
    pub certificates: Vec<CertSummary>,
    /// Whether client certificates are required.
    pub client_auth: bool,
}

impl std::fmt::Debug for ListenTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenTls")
            .field("certificates", &self.certificates)
            .field("client_auth", &self.client_auth)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

/// One loaded certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The certificate file.
    pub cert: PathBuf,
    /// The names it is chosen for (SNI).
    pub names: Vec<String>,
    /// End of validity, seconds since the epoch.
    pub not_after: i64,
}

/// The raw settings of one listener's `tls:`, checked.
pub struct ListenTlsSpec<'a> {
    pub certificates: &'a [(PathBuf, PathBuf, Option<Vec<String>>)],
    pub tls12: bool,
    pub tls13: bool,
    pub client_ca: Option<&'a Path>,
    pub http2: bool,
    pub handshake_timeout: Duration,
}

/// Problems found while loading, each with the field it concerns.
#[derive(Default)]
pub struct Findings {
    pub errors: Vec<(String, String)>,
    pub warnings: Vec<(String, String)>,
}

impl Findings {
    fn err(&mut self, field: &str, msg: impl Into<String>) {
        self.errors.push((field.to_string(), msg.into()));
    }
}

/// Loads a listener's TLS; `path` is its field path (`listen[1].tls`).
pub fn listen_tls(
    path: &str,
    spec: &ListenTlsSpec,
    now: SystemTime,
    f: &mut Findings,
) -> Option<ListenTls> {
    if spec.certificates.is_empty() {
        f.err(
            &format!("{path}.certificates"),
            "at least one certificate is required",
        );
        return None;
    }
    let mut keys = Vec::new();
    let mut summaries = Vec::new();
    for (i, (cert, key, names)) in spec.certificates.iter().enumerate() {
        let at = format!("{path}.certificates[{i}]");
        if let Some((ck, summary)) = certified_key(&at, cert, key, names.as_deref(), now, f) {
            keys.push(Arc::new(ck));
            summaries.push(summary);
        }
    }
    let roots = spec
        .client_ca
        .and_then(|p| root_store(&format!("{path}.client_ca"), p, f));
    if !f.errors.is_empty() || keys.len() != spec.certificates.len() {
        return None;
    }
    let mut versions = Vec::new();
    if spec.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if spec.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    let provider = Arc::new(provider::default_provider());
    let builder = match ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
    {
        Ok(b) => b,
        Err(e) => {
            f.err(&format!("{path}.protocols"), e.to_string());
            return None;
        }
    };
    let builder = match roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            match WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build() {
                Ok(v) => builder.with_client_cert_verifier(v),
                Err(e) => {
                    f.err(&format!("{path}.client_ca"), e.to_string());
                    return None;
                }
            }
        }
    };
    let resolver = BySni::new(&keys, &summaries);
    let mut server = builder.with_cert_resolver(Arc::new(resolver));
    server.alpn_protocols = if spec.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    // TLS 1.3 resumption by tickets, as nginx's ssl_session_tickets (on by
    // default); the keys are this process's, so an upgrade starts afresh.
    match provider::Ticketer::new() {
        Ok(t) => server.ticketer = t,
        Err(e) => log::warn!("{path}: no session tickets: {e}"),
    }
    Some(ListenTls {
        server: Arc::new(server),
        handshake_timeout: spec.handshake_timeout,
        certificates: summaries,
        client_auth: spec.client_ca.is_some(),
    })
}

/// Reads a certificate chain and its key, and checks that they belong
/// together, are valid now and cover `names` (if given; else their own).
fn certified_key(
    at: &str,
    cert: &Path,
    key: &Path,
    names: Option<&[String]>,
    now: SystemTime,
    f: &mut Findings,
) -> Option<(CertifiedKey, CertSummary)> {
    let chain = read_chain(&format!("{at}.cert"), cert, f)?;
    let key_der = match PrivateKeyDer::from_pem_file(key) {
        Ok(k) => k,
        Err(e) => {
            f.err(
                &format!("{at}.key"),
                format!("{}: {}", key.display(), pem_error(e)),
            );
            return None;
        }
    };
    let signer = match provider::sign::any_supported_type(&key_der) {
        Ok(s) => s,
        Err(e) => {
            f.err(&format!("{at}.key"), format!("{}: {e}", key.display()));
            return None;
        }
    };
    let ck = CertifiedKey::new(chain, signer);
    if ck.keys_match().is_err() {
        f.err(
            &format!("{at}.key"),
            format!("{} is not the key of {}", key.display(), cert.display()),
        );
        return None;
    }
    let leaf = Leaf::parse(&ck.cert[0]).or_else(|| {
        f.err(
            &format!("{at}.cert"),
            format!("{}: not an X.509 certificate", cert.display()),
        );
        None
    })?;
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if leaf.not_after < now_s {
        f.err(&format!("{at}.cert"), format!("{} expired", cert.display()));
    } else if leaf.not_before > now_s {
        f.err(
            &format!("{at}.cert"),
            format!("{} is not valid yet", cert.display()),
        );
    } else if leaf.not_after - now_s < EXPIRY_WARNING.as_secs() as i64 {
        let days = (leaf.not_after - now_s) / 86400;
        f.warnings.push((
            format!("{at}.cert"),
            format!("{} expires in {days} day(s)", cert.display()),
        ));
    }
    let names = match names {
        None => {
            if leaf.names.is_empty() {
                f.err(
                    &format!("{at}.cert"),
                    format!("{} names no host (no subjectAltName or CN)", cert.display()),
                );
            }
            leaf.names.clone()
        }
        Some(wanted) => {
            for (i, n) in wanted.iter().enumerate() {
                if !leaf.covers(n) {
                    f.err(
                        &format!("{at}.names[{i}]"),
                        format!(
                            "{n:?} is not covered by {} (it names {})",
                            cert.display(),
                            leaf.names.join(", ")
                        ),
                    );
                }
            }
            wanted.iter().map(|n| n.to_ascii_lowercase()).collect()
        }
    };
    let summary = CertSummary {
        cert: cert.to_path_buf(),
        names,
        not_after: leaf.not_after,
    };
    Some((ck, summary))
}

/// A PEM file's certificates, at least one.
fn read_chain(at: &str, path: &Path, f: &mut Findings) -> Option<Vec<CertificateDer<'static>>> {
    let chain: Result<Vec<_>, _> = match CertificateDer::pem_file_iter(path) {
        Ok(it) => it.collect(),
        Err(e) => {
            f.err(at, format!("{}: {}", path.display(), pem_error(e)));
            return None;
        }
    };
    match chain {
        Ok(c) if !c.is_empty() => Some(c),
        Ok(_) => {
            f.err(
                at,
                format!("{}: no certificate in the file", path.display()),
            );
            None
        }
        Err(e) => {
            f.err(at, format!("{}: {}", path.display(), pem_error(e)));
            None
        }
    }
}

/// The CA certificates in a PEM file, as a trust store.
pub fn root_store(at: &str, path: &Path, f: &mut Findings) -> Option<RootCertStore> {
    let chain = read_chain(at, path, f)?;
    let mut roots = RootCertStore::empty();
    for (i, c) in chain.into_iter().enumerate() {
        if let Err(e) = roots.add(c) {
            f.err(at, format!("{}: certificate {i}: {e}", path.display()));
            return None;
        }
    }
    Some(roots)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(e) => format!("cannot read: {e}"),
        E::NoItemsFound => "no PEM item of the expected kind in the file".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// What `-t` needs of a leaf certificate.
struct Leaf {
    names: Vec<String>,
    not_before: i64,
    not_after: i64,
}

impl Leaf {
    fn parse(der: &CertificateDer) -> Option<Leaf> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                    GeneralName::IPAddress(b) => {
                        let ip = match b.len() {
                            4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                            16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                            _ => None,
                        };
                        names.extend(ip.map(|ip| ip.to_string()));
                    }
                    _ => {}
                }
            }
        }
        if names.is_empty() {
            // No subjectAltName: the CN, as clients of old did.
            let cn = cert.subject().iter_common_name().next();
            names.extend(
                cn.and_then(|c| c.as_str().ok())
                    .map(|s| s.to_ascii_lowercase()),
            );
        }
        Some(Leaf {
            names,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    fn covers(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.names.iter().any(|n| name_matches(n, &name))
    }
}

/// Whether certificate name `pattern` (maybe `*.example.com`) matches `host`:
/// a wildcard covers exactly one leftmost label (RFC 6125 §6.4.3).
fn name_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

/// Picks the certificate by the client's SNI: an exact name first, then a
/// wildcard; no SNI or an unknown name gets the first (as nginx's default
/// server does).
#[derive(Debug)]
struct BySni {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl BySni {
    fn new(keys: &[Arc<CertifiedKey>], summaries: &[CertSummary]) -> BySni {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (k, s) in keys.iter().zip(summaries) {
            for n in &s.names {
                // The first certificate naming a host wins, as in the file.
                match n.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()),
                    None => exact.entry(n.clone()),
                }
                .or_insert_with(|| Arc::clone(k));
            }
        }
        BySni {
            exact,
            wildcard,
            default: Arc::clone(&keys[0]),
        }
    }

    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(host) = sni.map(|s| s.to_ascii_lowercase()) else {
            return Arc::clone(&self.default);
        };
        if let Some(k) = self.exact.get(&host) {
            return Arc::clone(k);
        }
        host.split_once('.')
            .and_then(|(_, rest)| self.wildcard.get(rest))
            .map_or_else(|| Arc::clone(&self.default), Arc::clone)
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// A pool's TLS towards its servers, loaded into the types Pingora's
/// connector takes (built once here, not per connection).
#[derive(Clone)]
pub struct UpstreamTls {
    /// Verify the server's certificate (chain and name).
    pub verify: bool,
    /// The name sent as SNI and verified; default: the server's host.
    pub sni: Option<String>,
    /// CA certificates trusted for this pool instead of the system's.
    pub ca: Option<Arc<[WrappedX509]>>,
    /// Client certificate chain and key, for mutual TLS.
    pub client_cert: Option<Arc<CertKey>>,
    /// Which CAs verified a connection: Pingora's pool shares connections
    /// between peers whose hash matches, and its hash leaves the CA out.
    pub trust_key: u64,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("verify", &self.verify)
            .field("sni", &self.sni)
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("client_cert", &self.client_cert.is_some())
            .finish()
    }
}

/// Loads a pool's CA file.
pub fn ca_file(at: &str, path: &Path, f: &mut Findings) -> Option<Arc<[WrappedX509]>> {
    // Through a trust store, so that a CA rustls would refuse is an error here.
    root_store(at, path, f)?;
    let chain = read_chain(at, path, f)?;
    let certs: Vec<WrappedX509> = chain
        .iter()
        .map(|c| WrappedX509::new(c.as_ref().to_vec(), parse_x509))
        .collect();
    Some(Arc::from(certs))
}

/// Loads a pool's client certificate and key, checking they match.
pub fn client_cert(
    at: &str,
    cert: &Path,
    key: &Path,
    now: SystemTime,
    f: &mut Findings,
) -> Option<Arc<CertKey>> {
    let (ck, _) = certified_key(at, cert, key, Some(&[]), now, f)?;
    let key_der = PrivateKeyDer::from_pem_file(key).ok()?;
    Some(Arc::new(CertKey::new(
        ck.cert.iter().map(|c| c.as_ref().to_vec()).collect(),
        key_der.secret_der().to_vec(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(name_matches("example.com", "example.com"));
        assert!(!name_matches("example.com", "www.example.com"));
    }
}
