//! Accepting connections and running hyper's HTTP/1.1 server on each one,
//! with the settings that keep the backend's wire behaviour: title-case
//! header names, no `Date`, a 64 KiB request head, no header timeout, an
//! answer also for clients that half-close, a delayed request abandoned when
//! its client leaves, and a lingering close after a refused request.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::Interest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::echo::{self, ConnCtx};
use crate::state::Backend;

/// Largest accepted request head (request line + headers + blank line), and
/// largest trailer section of a chunked body; more is answered with 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a request head. hyper needs a bound (beyond it:
/// 431); this is well above what a proxy in front forwards (Pingora: 256).
const MAX_HEADERS: usize = 1024;
/// How long, and for how many bytes, a refused request's remaining input is
/// read and discarded before the connection is closed.
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 1024 * 1024;

/// The HTTP/1 settings shared by every connection.
pub fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .title_case_headers(true)
        .auto_date_header(false)
        .header_read_timeout(None)
        // A client that half-closes after its request still gets the answer
        // (hyper would otherwise drop the request on that EOF, racing the
        // service). Clients leaving during a delay are watched for below.
        .half_close(true)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        // One write per answer, head and body copied together: cheaper than
        // a vectored write for small answers (as the benchmark's are), and
        // what this backend has always done for bodies up to 64 KiB.
        .writev(false);
    builder
}

pub async fn accept_loop(listener: TcpListener, backend: Arc<Backend>) {
    let http = Arc::new(http1_builder());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backend.connections.fetch_add(1, Ordering::Relaxed);
                // Small responses should not wait for Nagle.
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(
                    Arc::clone(&backend),
                    Arc::clone(&http),
                    stream,
                ));
            }
            Err(e) => {
                // Typically EMFILE; back off instead of spinning.
                log::warn!("{}: accept failed: {e}", backend.name);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one connection until either side ends it. A service error (a
/// deliberate drop, or a client gone mid-request) makes hyper drop the
/// connection without writing anything more.
async fn serve_connection(backend: Arc<Backend>, http: Arc<http1::Builder>, stream: TcpStream) {
    let ctx = Arc::new(ConnCtx {
        backend,
        fd: stream.as_raw_fd(),
        rejected: AtomicBool::new(false),
    });
    let service = {
        let ctx = Arc::clone(&ctx);
        service_fn(move |req| echo::handle(Arc::clone(&ctx), req))
    };
    let mut conn = http.serve_connection(TokioIo::new(stream), service);
    let linger = match (&mut conn).await {
        Ok(()) => ctx.rejected.load(Ordering::Relaxed),
        Err(e) => {
            log::debug!("{}: connection ended: {e}", ctx.backend.name);
            // hyper answered a malformed request head (400, 431, ...).
            e.is_parse()
        }
    };
    if linger {
        linger_close(conn.into_parts().io.into_inner()).await;
    }
}

/// After a refusal has been written: end the output, then read and discard
/// input for a while, so that unread input does not make the kernel reset
/// the connection before the client has read the refusal.
async fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut scratch = vec![0u8; 16 * 1024];
        let mut total = 0;
        while total < LINGER_BYTES {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// Sleeps for `delay` while watching the connection `fd`, so that a client
/// that gives up (e.g. a proxy timing out) is noticed; returns false if it
/// did: its end of stream or reset was seen. The socket is only watched for
/// readiness through a duplicate descriptor, never read: hyper keeps its
/// input (a pipelined request, say) for later.
///
/// `fd` must be the socket of the connection whose service calls this: the
/// connection, and so the descriptor, outlives the service's futures.
pub async fn client_stays(fd: RawFd, delay: Duration) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    // SAFETY: see above; the duplicate is closed before this returns.
    let watch = unsafe { BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .and_then(|fd| TcpStream::from_std(std::net::TcpStream::from(fd)));
    let Ok(watch) = watch else {
        sleep.await;
        return true;
    };
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            ready = watch.ready(Interest::READABLE) => match ready {
                Ok(ready) if !ready.is_read_closed() => {
                    // Only input: forget this readiness (the input stays
                    // queued) and wait for the next event.
                    let _ = watch.try_io(Interest::READABLE, || {
                        Err::<(), _>(io::ErrorKind::WouldBlock.into())
                    });
                }
                _ => return false,
            },
        }
    }
}
