//! What happens between accept and the first HTTP byte: the TLS handshake
//! on a TLS listener, and on a plain one with `http2`, a look for the h2c
//! preface (RFC 9113 §3.3, prior knowledge).
//!
//! The listener only marks the socket with what its address asks for
//! ([`Pending`]); the connection's app does the work
//! (`ClientLimits::process_new`), after `limits.max_connections` and
//! counted in stub_status like any connection, so that a refused
//! connection costs no handshake.

use super::socket::ClientSocket;
use crate::config::tls::ListenTls;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{Stream, ALPN};
use std::time::Duration;
use tokio::net::TcpStream;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a new connection needs before HTTP starts.
#[derive(Debug)]
pub(crate) enum Pending {
    /// Nothing: plain HTTP/1.
    Plain,
    /// HTTP/1, or HTTP/2 if the client starts with the h2c preface.
    H2c,
    /// A TLS handshake.
    Tls(ListenTls),
}

/// Whether the listener asked for something before HTTP starts.
pub(crate) fn is_pending(stream: &Stream) -> bool {
    stream
        .as_any()
        .downcast_ref::<ClientSocket<TcpStream>>()
        .is_some_and(ClientSocket::has_pending)
}

/// The connection's stream once what its listener asked for is done
/// (`None`: a handshake failed or timed out, and was logged; the
/// connection is closed). `wait`: how long a client may take to show
/// whether it speaks h2c, or to send the HTTP/2 preface after ALPN h2.
pub(crate) async fn finish(stream: Stream, wait: Duration) -> Option<Stream> {
    let socket = match stream.into_any().downcast::<ClientSocket<TcpStream>>() {
        Ok(s) => s,
        // Only fulcrum's listener makes this app's streams.
        Err(_) => return None,
    };
    let (tcp, fd, peer, pending) = socket.into_pending();
    match pending.unwrap_or(Pending::Plain) {
        Pending::Plain => Some(Box::new(ClientSocket::new(tcp, fd, peer))),
        Pending::H2c => {
            let h2 = starts_with_preface(&tcp, wait).await?;
            let alpn = h2.then_some(ALPN::H2);
            Some(Box::new(ClientSocket::new(tcp, fd, peer).with_alpn(alpn)))
        }
        Pending::Tls(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server);
            let tls_stream =
                match tokio::time::timeout(tls.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        // A client error, as nginx logs a failed handshake (info).
                        log::info!("client error: {peer}: TLS handshake failed: {e}");
                        return None;
                    }
                    Err(_) => {
                        log::info!(
                            "client error: {peer}: TLS handshake not done within {:?}",
                            tls.handshake_timeout
                        );
                        return None;
                    }
                };
            let conn = tls_stream.get_ref().1;
            let alpn = match conn.alpn_protocol() {
                Some(b"h2") => Some(ALPN::H2),
                Some(b"http/1.1") => Some(ALPN::H1),
                _ => None,
            };
            let version = match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "TLS",
            };
            let cipher = conn
                .negotiated_cipher_suite()
                .and_then(|c| c.suite().as_str())
                .unwrap_or("");
            let digest = SslDigest::new(cipher, version, None, None, Vec::new());
            let mut tls_stream = tls_stream;
            // Pingora's HTTP/2 server waits for the preface without a
            // limit: read it here, within the header timeout, as an
            // HTTP/1 request's header is.
            let preface = match alpn {
                Some(ALPN::H2) => Some(read_preface(&mut tls_stream, peer, wait).await?),
                _ => None,
            };
            let mut socket = ClientSocket::new(tls_stream, fd, peer)
                .with_tls(digest)
                .with_alpn(alpn);
            if let Some(p) = preface {
                socket = socket.with_replay(p);
            }
            Some(Box::new(socket))
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4), read within `wait`;
/// `None` (logged at info, as any client error): anything else.
async fn read_preface<S: tokio::io::AsyncRead + Unpin>(
    io: &mut S,
    peer: std::net::SocketAddr,
    wait: Duration,
) -> Option<bytes::Bytes> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; H2_PREFACE.len()];
    match tokio::time::timeout(wait, io.read_exact(&mut buf)).await {
        Ok(Ok(_)) if buf == H2_PREFACE => Some(bytes::Bytes::copy_from_slice(&buf)),
        Ok(Ok(_)) => {
            log::info!("client error: {peer}: ALPN h2 without the HTTP/2 preface");
            None
        }
        Ok(Err(e)) => {
            log::info!("client error: {peer}: closed before the HTTP/2 preface: {e}");
            None
        }
        Err(_) => {
            log::info!("client error: {peer}: no HTTP/2 preface within {wait:?}");
            None
        }
    }
}

/// Whether the client's first bytes are the h2c preface; waits (at most
/// `wait`) only while what came so far could still be one. `None`: the
/// client closed or stayed silent.
async fn starts_with_preface(tcp: &TcpStream, wait: Duration) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => n,
        };
        if buf[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        // Part of a preface: peek returns at once while those bytes wait,
        // so look again a little later rather than spin.
        tokio::time::sleep(Duration::from_millis(5)).await;
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
    }
}
