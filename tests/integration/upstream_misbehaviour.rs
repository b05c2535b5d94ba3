//! An upstream that misbehaves: an invalid response, a body longer than its
//! Content-Length, a connection closed mid-body, a broken chunked body, a
//! response header over Pingora's limits. The client gets a clean 502 (or a
//! closed connection once response bytes went out), the server's failure
//! count rises, nothing from one response leaks into the next, and fulcrum
//! keeps serving.

use crate::common::raw::connect;
use crate::common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Good,
    Invalid,
    TooLong,
    TooLongBig,
    TooLongLate,
    ClosedMidBody,
    BadChunk,
    HugeHeader,
    ManyHeaders,
}

/// A tiny HTTP/1.1 server on a thread that answers as `mode` says.
struct BadUpstream {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl BadUpstream {
    fn start() -> BadUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let mode = Arc::new(Mutex::new(Mode::Good));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, c, st) = (
            Arc::clone(&mode),
            Arc::clone(&connections),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            while !st.load(SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        c.fetch_add(1, SeqCst);
                        let m = Arc::clone(&m);
                        std::thread::spawn(move || serve(s, m));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => return,
                }
            }
        });
        BadUpstream {
            addr,
            mode,
            connections,
            stop,
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

impl Drop for BadUpstream {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

/// Reads request headers (no bodies in these tests) and answers each.
fn serve(mut s: TcpStream, mode: Arc<Mutex<Mode>>) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        buf.drain(..end);
        let m = *mode.lock().unwrap();
        let keep = match m {
            Mode::Good => write(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            Mode::Invalid => {
                write(&mut s, b"THIS IS NOT HTTP\r\n\r\n");
                false
            }
            // The surplus is a whole response: if the connection were used
            // again, the next client would get it.
            Mode::TooLong => write(
                &mut s,
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED",
            ),
            // More surplus than Pingora's first read (4 KiB) takes in: the
            // rest is still on the socket when the response ends.
            Mode::TooLongBig => {
                let mut r =
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 16384\r\n\r\n".to_vec();
                r.extend(b"SMUGGLED".repeat(2048));
                write(&mut s, &r)
            }
            Mode::TooLongLate => {
                let ok = write(&mut s, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
                std::thread::sleep(Duration::from_millis(300));
                ok && write(
                    &mut s,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED",
                )
            }
            Mode::ClosedMidBody => {
                write(
                    &mut s,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
                );
                std::thread::sleep(Duration::from_millis(100));
                false
            }
            Mode::BadChunk => {
                write(
                    &mut s,
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
                );
                std::thread::sleep(Duration::from_millis(100));
                false
            }
            Mode::HugeHeader => {
                let mut r = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
                r.extend(std::iter::repeat_n(b'a', 1100 * 1024));
                r.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
                write(&mut s, &r);
                false
            }
            Mode::ManyHeaders => {
                let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
                for i in 0..300 {
                    r.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
                }
                r.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
                write(&mut s, &r);
                false
            }
        };
        if !keep {
            return;
        }
    }
}

fn write(s: &mut TcpStream, bytes: &[u8]) -> bool {
    s.write_all(bytes).and_then(|()| s.flush()).is_ok()
}

/// Everything the client receives on a new connection (`Connection:
/// close`) and whether it ended with a close (not a read timeout).
fn raw_get(addr: SocketAddr, path: &str) -> (String, bool) {
    let mut s = connect(addr, Duration::from_secs(20));
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false
            }
            Err(_) => break true,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// The response if `out` holds a complete Content-Length response.
fn complete(out: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(out);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })?
        .parse()
        .ok()?;
    (body.len() >= len).then(|| text.into_owned())
}

fn failures(f: &Fulcrum, addr: SocketAddr) -> u64 {
    f.server_status("bad", addr)["failures"].as_u64().unwrap()
}

#[test]
fn misbehaving_upstream_gets_clean_errors_and_counted_failures() {
    let up = BadUpstream::start();
    let good = Backends::start(&["good"], &[]);
    let conf = format!(
        "pools:\n  bad:\n    read_timeout: 5s\n    servers: [{{addr: \"{}\"}}]\n  good:\n    servers: [{{addr: \"{}\"}}]\nroutes:\n  - {{prefix: /bad, pool: bad}}\n  - {{prefix: /good, pool: good}}\n",
        up.addr,
        good.addr("good")
    );
    let f = Fulcrum::start(&conf);
    // The misbehaving server's failure count rose by exactly one.
    let failure_counted = |what: &str, before: u64| {
        assert!(
            wait_until(Duration::from_secs(5), || failures(&f, up.addr)
                == before + 1),
            "{what}: failures {before} -> {}",
            failures(&f, up.addr)
        );
    };
    let still_healthy = |what: &str| {
        assert_eq!(f.get("/health").status, 200, "after {what}");
        let r = f.get("/good/x");
        assert_eq!(r.status, 200, "after {what}: {}", r.body);
        up.set(Mode::Good);
        let (r, _) = raw_get(f.addr, "/bad/ok");
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("\r\n\r\nok"),
            "after {what}, a good answer from the same upstream: {r:?}"
        );
        f.assert_in_flight_returns_to_zero();
    };

    // Before any byte went to the client: a clean 502.
    for (mode, what) in [
        (Mode::Invalid, "an invalid response"),
        (Mode::HugeHeader, "a response header over 1 MiB"),
        (Mode::ManyHeaders, "300 response header fields"),
    ] {
        up.set(mode);
        let before = failures(&f, up.addr);
        let (r, closed) = raw_get(f.addr, "/bad/x");
        println!("{what:<40} -> {:?}", r.lines().next().unwrap_or(""));
        assert!(
            r.starts_with("HTTP/1.1 502"),
            "{what}: {:?}",
            &r[..r.len().min(300)]
        );
        assert!(
            r.contains("502 Bad Gateway: upstream error in pool bad"),
            "{r}"
        );
        assert!(closed, "{what}: connection left open");
        failure_counted(what, before);
        still_healthy(what);
    }

    // After the response header went out: the client's connection is closed
    // short of the declared length, so it cannot take the body as complete.
    for (mode, what) in [
        (Mode::ClosedMidBody, "a connection closed mid-body"),
        (Mode::BadChunk, "an invalid chunk mid-body"),
    ] {
        up.set(mode);
        let before = failures(&f, up.addr);
        let (r, closed) = raw_get(f.addr, "/bad/x");
        println!(
            "{what:<40} -> {:?} then closed: {closed}",
            r.lines().next().unwrap_or("")
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{what}: {r:?}");
        assert!(closed, "{what}: connection left open");
        assert!(
            complete(r.as_bytes()).is_none(),
            "{what}: looks complete: {r:?}"
        );
        if mode == Mode::BadChunk {
            assert!(
                !r.contains("\r\n0\r\n\r\n"),
                "{what}: the body was terminated as if complete: {r:?}"
            );
        }
        failure_counted(what, before);
        still_healthy(what);
    }

    // A body longer than its Content-Length: the client gets exactly the
    // declared length, and the connection carrying the surplus is never used
    // again, so the surplus cannot become the next client's response. Surplus
    // read along with the response or still on the socket when it ends is a
    // failure of the server; surplus arriving after the connection went back
    // to the idle list closes it when next looked at, uncounted (as nginx
    // closes an idle cached connection that becomes readable).
    for (mode, what, counted) in [
        (Mode::TooLongBig, "surplus past Pingora's first read", true),
        (Mode::TooLong, "surplus bytes in the same packet", true),
        (Mode::TooLongLate, "surplus bytes arriving later", false),
    ] {
        up.set(mode);
        let conns = up.connections.load(SeqCst);
        let before = failures(&f, up.addr);
        let (r, _) = raw_get(f.addr, "/bad/x");
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("\r\n\r\nhello"),
            "{what}: {r:?}"
        );
        if counted {
            failure_counted(what, before);
            let log = f.log_text();
            assert!(
                log.lines().any(|l| l.contains("pool bad: server")
                    && l.contains("sent more than its Content-Length")),
                "{what}: no warning in the log:\n{log}"
            );
        }
        println!(
            "{what:<40} -> {:?}, failures +{}",
            r.lines().next().unwrap_or(""),
            failures(&f, up.addr) - before
        );
        std::thread::sleep(Duration::from_millis(600)); // the late surplus arrives
        up.set(Mode::Good);
        for i in 0..3 {
            let (r, _) = raw_get(f.addr, "/bad/next");
            assert!(
                r.ends_with("\r\n\r\nok") && !r.contains("SMUGGLED"),
                "{what}, request {i} after it: {r:?}"
            );
        }
        assert!(
            up.connections.load(SeqCst) > conns,
            "{what}: the poisoned connection was reused"
        );
        still_healthy(what);
    }
}
