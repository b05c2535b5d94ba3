//! Raw-socket helpers: send exact bytes, read what comes back, find out
//! whether the server closed the connection; and tiny upstream servers that
//! answer as a test says (misbehaving backends).

use super::{read_response, Response};
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A server on a free loopback port whose every accepted connection is
/// handled by `handle` on its own thread. Returns its address and how many
/// connections it accepted.
pub fn serve(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { return };
            count.fetch_add(1, SeqCst);
            let handle = Arc::clone(&handle);
            std::thread::spawn(move || handle(s));
        }
    });
    (addr, accepted)
}

/// Reads one request header (no body); false if the connection ended first.
pub fn read_head(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// What happened to one raw exchange.
#[derive(Debug)]
pub struct Exchange {
    /// The first response, if one could be read.
    pub response: Option<Response>,
    /// The server closed the connection (EOF or reset) after it.
    pub closed: bool,
    /// Bytes that arrived after the first response.
    pub extra: Vec<u8>,
}

impl Exchange {
    /// The status of the first response, 0 if none.
    pub fn status(&self) -> u16 {
        self.response.as_ref().map_or(0, |r| r.status)
    }

    /// One line for a table of results.
    pub fn summary(&self) -> String {
        let body = self
            .response
            .as_ref()
            .map(|r| r.body.lines().next().unwrap_or("").to_string())
            .unwrap_or_default();
        format!(
            "{} {:?}, {}",
            self.status(),
            body,
            if self.closed { "closed" } else { "left open" }
        )
    }
}

/// Connects with a read timeout of `timeout`.
pub fn connect(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(timeout)).unwrap();
    s
}

/// Sends `bytes` on a new connection, reads one response, then waits up to
/// `wait` for the server to close the connection. Write errors are ignored:
/// a server that refuses early may reset the connection while bytes are
/// still going out, and the response may still be readable.
pub fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Exchange {
    let mut s = connect(addr, Duration::from_secs(20));
    let _ = s.write_all(bytes);
    finish(s, false, wait)
}

/// Reads one response from `s`, then checks whether it gets closed within `wait`.
pub fn finish(s: TcpStream, head: bool, wait: Duration) -> Exchange {
    let mut reader = BufReader::new(s);
    let response = read_response(&mut reader, head).ok();
    let mut extra = reader.buffer().to_vec();
    let mut s = reader.into_inner();
    let closed = wait_closed(&mut s, wait, &mut extra);
    Exchange {
        response,
        closed,
        extra,
    }
}

/// Whether the peer closes `s` (EOF or reset) within `wait`; bytes that
/// arrive meanwhile go to `extra`.
pub fn wait_closed(s: &mut TcpStream, wait: Duration, extra: &mut Vec<u8>) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => extra.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true, // reset
        }
    }
}
