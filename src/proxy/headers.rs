//! The header fields fulcrum changes on the way through: the request's
//! target in origin-form and its `Host`, the forwarded fields
//! (`X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto`), the request id
//! sent both ways, an HTTP/2 client's cookies joined into one field, and
//! the hop-by-hop fields of a server's response, its `Content-Length`
//! where a 204 has one or the server sent several, and the chunked
//! framing an HTTP/1.0 client cannot read.
//! Several of these run for every request, so they avoid the formatting
//! machinery where a few bytes written by hand will do.

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora_http::authority::{raw_target_authority, RawTargetAuthority};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use http::{HeaderName, HeaderValue};

/// The client's address: the socket peer, never a forwarded field.
pub(super) fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The request's id: the client's `X-Request-Id` if acceptable, else a new
/// one. `true` when the request already carries it as its only one (saves
/// an insert upstream: each costs ~1,500 instructions in Pingora).
pub(super) fn request_id(req: &RequestHeader) -> (HeaderValue, bool) {
    let mut ids = req.headers.get_all("x-request-id").iter();
    match (ids.next(), ids.next()) {
        (Some(v), None) if acceptable_request_id(v.as_bytes()) => (v.clone(), true),
        (Some(v), _) if acceptable_request_id(v.as_bytes()) => (v.clone(), false),
        _ => (new_request_id(), false),
    }
}

/// The request's target and `Host` as the server gets them: origin-form,
/// the rewritten path if routing changed it (`upstream_uri`), and a `Host`:
/// the pool's `host_header`, else the client's, else (HTTP/1.0 clients and
/// absolute-form targets only) the target's authority or the server's
/// address as written in the config (`server_name`).
pub(super) fn set_target_and_host(
    req: &mut RequestHeader,
    client_version: http::Version,
    upstream_uri: Option<&http::Uri>,
    host_header: Option<HeaderValue>,
    server_name: Option<&str>,
) -> Result<()> {
    let authority = to_origin_form(req)?;
    if let Some(uri) = upstream_uri {
        req.set_uri(uri.clone());
    }
    if let Some(host) = host_header {
        req.insert_header(http::header::HOST, host)?;
    } else if (client_version != http::Version::HTTP_11 || authority.is_some())
        && !req.headers.contains_key(http::header::HOST)
    {
        // Only HTTP/1.0 clients (and absolute-form targets) may leave
        // Host out (limits.rs); the lookup is skipped for the rest. But the
        // request goes upstream as HTTP/1.1, which needs one (RFC 9112
        // §3.2): the target's authority, else the server's address as
        // written in the config, as nginx's $proxy_host.
        let host = match (authority, server_name) {
            (Some(a), _) => Some(a),
            (None, Some(name)) => HeaderValue::from_str(name).ok(),
            (None, None) => None,
        };
        if let Some(host) = host {
            req.insert_header(http::header::HOST, host)?;
        }
    }
    Ok(())
}

/// Joins an HTTP/2 client's `Cookie` fields into one. HTTP/2 lets a client
/// send each cookie as a field of its own (browsers do, for header
/// compression), and RFC 9113 §8.2.3 requires joining them with "; "
/// before the request goes on in HTTP/1.1, whose servers expect one field
/// (RFC 6265 §5.4) and often read only the first.
pub(super) fn join_cookies(req: &mut RequestHeader) -> Result<()> {
    use http::header::COOKIE;
    let mut cookies = req.headers.get_all(COOKIE).iter();
    if cookies.next().is_none() || cookies.next().is_none() {
        return Ok(());
    }
    let mut joined = Vec::new();
    for value in req.headers.get_all(COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    let joined = HeaderValue::from_bytes(&joined).expect("valid values joined by \"; \"");
    req.insert_header(COOKIE, joined)
}

/// Adds the forwarded fields (`https`: the client came over TLS) and the
/// request id (unless `id_forwarded`: the request carries it already).
pub(super) fn add_forwarded(
    req: &mut RequestHeader,
    client: Option<IpAddr>,
    https: bool,
    id: &HeaderValue,
    id_forwarded: bool,
) -> Result<()> {
    if let Some(ip) = client {
        // One value shared by both fields (a HeaderValue clone is a
        // reference count).
        let ip = ip_header_value(ip);
        let xff = match req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.is_empty() => {
                HeaderValue::try_from(format!("{prev}, {}", ip.to_str().unwrap_or_default()))
                    .expect("valid values joined by a comma")
            }
            _ => ip.clone(),
        };
        req.insert_header("X-Forwarded-For", xff)?;
        req.insert_header("X-Real-IP", ip)?;
    }
    let proto = if https { "https" } else { "http" };
    req.insert_header("X-Forwarded-Proto", HeaderValue::from_static(proto))?;
    if !id_forwarded {
        req.insert_header("X-Request-Id", id.clone())?;
    }
    Ok(())
}

/// A response's `Content-Length` as the client gets it, as nginx sends
/// it: none on a 204, which must not have one (RFC 9110 §8.6), and one
/// field where the server sent several (equal ones: Pingora refuses a
/// response whose lengths differ), which some clients refuse.
pub(super) fn normalize_length(resp: &mut ResponseHeader) -> Result<()> {
    use http::header::CONTENT_LENGTH;
    if resp.status == http::StatusCode::NO_CONTENT {
        resp.remove_header(&CONTENT_LENGTH);
        return Ok(());
    }
    let mut lengths = resp.headers.get_all(CONTENT_LENGTH).iter();
    if let (Some(first), Some(_)) = (lengths.next(), lengths.next()) {
        let first = first.clone();
        resp.insert_header(CONTENT_LENGTH, first)?;
    }
    Ok(())
}

/// An HTTP/1.0 client does not know chunked encoding, and a server must
/// not send it one (RFC 9112 §6.1): a response that would go chunked (the
/// server's, or an HTTP/2 server's without a length) goes to it as it is,
/// delimited by closing the connection, as nginx does. `true`: it must
/// close. (Through an HTTP/2 server Pingora adds chunked after this runs:
/// Pingora assumption 31, src/net/mod.rs.)
pub(super) fn unchunk_for_http10(client: http::Version, resp: &mut ResponseHeader) -> bool {
    use http::header::TRANSFER_ENCODING;
    if client != http::Version::HTTP_10 || !resp.headers.contains_key(TRANSFER_ENCODING) {
        return false;
    }
    resp.remove_header(&TRANSFER_ENCODING);
    true
}

/// Removes the hop-by-hop fields of a server's response (RFC 9110 §7.6.1):
/// they describe the connection between the server and fulcrum, not the one
/// to the client (Pingora writes that one's `Connection` itself, and strips
/// the request's). A 101 keeps them: they are the upgrade.
pub(super) fn strip_hop_by_hop(resp: &mut ResponseHeader) {
    use http::header::{CONNECTION, TE, TRAILER, UPGRADE};
    // Not standard names in `http`: compared as names, not as strings.
    const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    fn hop_by_hop(name: &HeaderName) -> bool {
        name == CONNECTION
            || name == TE
            || name == TRAILER
            || name == UPGRADE
            || name == KEEP_ALIVE
            || name == PROXY_CONNECTION
    }
    // Most responses have none: one pass over the names decides.
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS || !resp.headers.keys().any(hop_by_hop)
    {
        return;
    }
    let nominated: Vec<HeaderName> = resp
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in nominated {
        resp.remove_header(&name);
    }
    for name in [
        CONNECTION,
        TE,
        TRAILER,
        UPGRADE,
        KEEP_ALIVE,
        PROXY_CONNECTION,
    ] {
        resp.remove_header(&name);
    }
}

/// Rewrites an absolute-form target (`GET http://h/p?q`) to origin-form
/// (`GET /p?q`), as a proxy forwards it to an origin server (RFC 9112
/// §3.2.2), and returns its authority, the Host to send. Pingora has
/// already refused a request whose Host differs from that authority.
fn to_origin_form(req: &mut RequestHeader) -> Result<Option<HeaderValue>> {
    if req.raw_path().first() == Some(&b'/') {
        // An HTTP/2 request: the path, with :authority beside it in the
        // target; it becomes the Host (RFC 9113 §8.3.1), and the target
        // loses it, so that an HTTP/2 server gets the Host as :authority.
        let Some(authority) = req.uri.authority() else {
            return Ok(None); // origin-form, the usual case
        };
        let host = HeaderValue::from_str(authority.as_str()).ok();
        let path = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let origin: http::Uri = path
            .parse()
            .map_err(|_| Error::explain(ErrorType::HTTPStatus(400), "bad request target"))?;
        req.set_uri(origin);
        return Ok(host);
    }
    let (authority, path) = match raw_target_authority(req.raw_path()) {
        RawTargetAuthority::Absolute {
            authority,
            path_and_query,
            ..
        } => {
            let mut path = Vec::with_capacity(path_and_query.len() + 1);
            if path_and_query.first() != Some(&b'/') {
                path.push(b'/'); // `http://h` and `http://h?q` have no path
            }
            path.extend_from_slice(path_and_query);
            (HeaderValue::from_bytes(authority).ok(), path)
        }
        _ => return Ok(None),
    };
    req.set_raw_path(&path)?;
    Ok(authority)
}

/// The client address as a header value. IPv4, nearly every client here, is
/// written by hand: `to_string` goes through the formatting machinery
/// (~1,000 instructions, for every request).
fn ip_header_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::try_from(ip.to_string()).expect("an IP is a valid value");
    };
    let mut text = Vec::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push(b'.');
        }
        if octet >= 100 {
            text.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            text.push(b'0' + octet / 10 % 10);
        }
        text.push(b'0' + octet % 10);
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .expect("digits and dots are a valid value")
}

/// A client-sent request id is kept only if short and of safe characters.
fn acceptable_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A process-unique id: a per-process random prefix and a counter, as 24
/// hex digits (written by hand: this runs for every request).
fn new_request_id() -> HeaderValue {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    });
    let count = COUNTER.fetch_add(1, Relaxed) as u32;
    let mut id = [0u8; 24];
    let digits = (0..16)
        .map(|i| (seed >> (60 - 4 * i)) & 0xf)
        .chain((0..8).map(|i| u64::from(count >> (28 - 4 * i)) & 0xf));
    for (d, v) in id.iter_mut().zip(digits) {
        *d = b"0123456789abcdef"[v as usize];
    }
    HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    proptest! {
        #[test]
        fn an_ipv4_header_value_reads_as_the_address(bits in any::<u32>()) {
            let ip = IpAddr::V4(Ipv4Addr::from(bits));
            let value = ip_header_value(ip);
            prop_assert_eq!(value.to_str().unwrap(), ip.to_string());
        }
    }

    #[test]
    fn header_values_of_edge_and_ipv6_addresses() {
        for ip in [
            IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)),
            IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255)),
            IpAddr::V4(Ipv4Addr::new(10, 100, 9, 199)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6("2001:db8::7:1".parse().unwrap()),
        ] {
            assert_eq!(ip_header_value(ip).to_str().unwrap(), ip.to_string());
        }
    }
}
