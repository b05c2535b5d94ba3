//! An accepted client connection as Pingora's HTTP session reads it: the
//! transport (plain TCP, or TLS over it), the peer address (for
//! `X-Forwarded-For`, the status allow list and the access log) and, with
//! TLS, what was negotiated (ALPN picks HTTP/2, the digest says `https`).
//!
//! Pingora's own stream type wraps a socket with a read buffer and timing
//! digests allocated per request; fulcrum keeps only what it reads (the
//! module doc of listener.rs).

use super::handshake::Pending;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::ALPN;
use pingora_core::protocols::{
    raw_connect::ProxyDigest, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown,
    SocketDigest, Ssl, TimingDigest, UniqueID, UniqueIDType,
};
use std::fmt::Debug;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// What a client connection runs over.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + Sync + Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + Debug> Transport for T {}

/// A client connection over `T`: `TcpStream`, or a TLS stream over one.
#[derive(Debug)]
pub(crate) struct ClientSocket<T = TcpStream> {
    io: T,
    fd: RawFd,
    digest: Arc<SocketDigest>,
    /// TLS: what was negotiated.
    tls: Option<Arc<SslDigest>>,
    /// The protocol chosen by ALPN, or HTTP/2 for an h2c preface.
    alpn: Option<ALPN>,
    /// What the listener asks for before HTTP starts (handshake.rs).
    pending: Option<Pending>,
    /// Bytes read ahead (an HTTP/2 preface, checked), to be read first.
    replay: Option<Bytes>,
}

impl<T: Transport> ClientSocket<T> {
    /// `io` accepted from `peer` on the socket `fd`.
    pub(crate) fn new(io: T, fd: RawFd, peer: SocketAddr) -> Self {
        let digest = SocketDigest::from_raw_fd(fd);
        // A new OnceCell: setting it cannot fail.
        let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(peer)));
        ClientSocket {
            io,
            fd,
            digest: Arc::new(digest),
            tls: None,
            alpn: None,
            pending: None,
            replay: None,
        }
    }

    /// `bytes` were read from the connection already: reads give them first.
    pub(crate) fn with_replay(mut self, bytes: Bytes) -> Self {
        self.replay = Some(bytes);
        self
    }

    /// The connection needs `pending` done before HTTP starts.
    pub(crate) fn with_pending(mut self, pending: Pending) -> Self {
        self.pending = Some(pending);
        self
    }

    /// Whether something is to be done before HTTP starts.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Takes what is still to be done, and the parts to do it with.
    pub(crate) fn into_pending(self) -> (T, RawFd, SocketAddr, Option<Pending>) {
        let peer = match self.digest.peer_addr() {
            Some(PingoraAddr::Inet(a)) => *a,
            _ => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        (self.io, self.fd, peer, self.pending)
    }

    /// The connection is TLS, as `digest` says.
    pub(crate) fn with_tls(mut self, digest: SslDigest) -> Self {
        self.tls = Some(Arc::new(digest));
        self
    }

    /// The connection speaks `alpn` (negotiated, or HTTP/2 by h2c preface).
    pub(crate) fn with_alpn(mut self, alpn: Option<ALPN>) -> Self {
        self.alpn = alpn;
        self
    }
}

impl<T: Transport> AsyncRead for ClientSocket<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(replay) = &mut this.replay {
            let n = replay.len().min(buf.remaining());
            buf.put_slice(&replay.split_to(n));
            if replay.is_empty() {
                this.replay = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: Transport> AsyncWrite for ClientSocket<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[async_trait]
impl<T: Transport> Shutdown for ClientSocket<T> {
    async fn shutdown(&mut self) {
        // With TLS this sends close_notify first.
        if let Err(e) = AsyncWriteExt::shutdown(&mut self.io).await {
            log::debug!("client connection: shutdown: {e}");
        }
    }
}

impl<T> UniqueID for ClientSocket<T> {
    fn id(&self) -> UniqueIDType {
        self.fd
    }
}

impl<T> Ssl for ClientSocket<T> {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.tls.clone()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.alpn.clone()
    }
}

impl<T> GetTimingDigest for ClientSocket<T> {
    /// None: nothing reads it, and Pingora's stream allocates one per request.
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl<T> GetProxyDigest for ClientSocket<T> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl<T> GetSocketDigest for ClientSocket<T> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(Arc::clone(&self.digest))
    }
}

/// Nothing is peeked at through the stream: the h2c preface is looked for
/// on the socket before it is wrapped (listener.rs).
#[async_trait]
impl<T: Send> Peek for ClientSocket<T> {}
