//! The client side of a case: writes raw bytes (with pauses where a case
//! asks for them) from a given source address, reads every response that
//! comes back, and finds out whether the connection stays open afterwards.

use super::wire::{parse_response, split_requests, Fields, Framing, Wire};
use socket2::{Domain, Socket, Type};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long to wait for the next response before deciding that none comes
/// (a proxy that drops a request costs this much, once per case).
pub const NEXT_RESPONSE: Duration = Duration::from_millis(1500);
/// How long a connection must stay open after the expected answers to
/// count as kept open.
pub const STAYS_OPEN: Duration = Duration::from_millis(300);

/// What the client does, in order.
#[derive(Debug, Clone)]
pub enum Step {
    Send(Vec<u8>),
    Pause(Duration),
    /// Read until this many final responses in all have arrived.
    Await(usize),
}

/// One response as the client read it.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub fields: Fields,
    pub body: Vec<u8>,
    pub trailers: Fields,
    /// The body ended where its framing said.
    pub complete: bool,
    /// Whether it answers a HEAD request.
    pub to_head: bool,
}

/// Everything the client saw.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Final responses, in order.
    pub responses: Vec<Resp>,
    /// 1xx statuses, in order.
    pub interim: Vec<u16>,
    /// The connection was closed after the responses (or during them).
    pub closed: bool,
    /// Bytes that did not parse as a response.
    pub garbage: Vec<u8>,
}

/// Connects to `to` from `from` (any port).
fn connect(from: IpAddr, to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::new(from, 0).into())
        .expect("bind lane address");
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    let s: TcpStream = s.into();
    s.set_nodelay(true).unwrap();
    s
}

/// Runs `steps` against `to` from `from` and reads what comes back.
pub fn run(from: IpAddr, to: SocketAddr, steps: &[Step]) -> Seen {
    let mut sent = vec![];
    for s in steps {
        if let Step::Send(b) = s {
            sent.extend_from_slice(b);
        }
    }
    // What each response answers; how many final answers to expect.
    let (requests, leftover) = split_requests(&sent);
    let heads: Vec<Asked> = requests
        .iter()
        .map(|r| Asked {
            head: r.method == "HEAD",
            http10: r.minor == 0,
        })
        .collect();
    let expected = heads.len() + usize::from(leftover);
    let mut wire = Wire::new(connect(from, to));
    let mut seen = Seen::default();
    for step in steps {
        match step {
            // A proxy may have closed already; what it answered still counts.
            Step::Send(b) => {
                let _ = wire.get_mut().write_all(b);
            }
            Step::Pause(d) => std::thread::sleep(*d),
            Step::Await(n) => read_responses(&mut wire, &heads, *n, &mut seen),
        }
    }
    read_responses(&mut wire, &heads, expected, &mut seen);
    seen.closed = wire.eof || closes_soon(&mut wire, &mut seen);
    seen
}

/// Reads responses until `n` final ones arrived in all, the connection
/// closed, or none came for [`NEXT_RESPONSE`].
/// What a request asked that decides how its answer is read.
#[derive(Clone, Copy, Default)]
struct Asked {
    head: bool,
    /// An HTTP/1.0 client does not decode chunked encoding: it reads a
    /// chunked answer to the close, framing and all (RFC 9112 §6.1 says a
    /// server must not send it one).
    http10: bool,
}

fn read_responses(wire: &mut Wire<TcpStream>, heads: &[Asked], n: usize, seen: &mut Seen) {
    while seen.responses.len() < n && seen.garbage.is_empty() {
        wire.deadline = Some(Instant::now() + NEXT_RESPONSE);
        let Some(raw) = wire.raw_head() else {
            seen.garbage.extend_from_slice(wire.buffered());
            return;
        };
        let head = match parse_response(&raw) {
            Ok(h) => h,
            Err(_) => {
                seen.garbage = raw;
                return;
            }
        };
        if head.status < 200 {
            seen.interim.push(head.status);
            continue;
        }
        let asked = heads.get(seen.responses.len()).copied().unwrap_or_default();
        let to_head = asked.head;
        let framing = match head.framing(to_head) {
            Framing::Chunked if asked.http10 => Framing::UntilClose,
            f => f,
        };
        let body = wire.body(framing);
        let complete = body.complete;
        seen.responses.push(Resp {
            status: head.status,
            fields: head.fields,
            body: body.bytes,
            trailers: body.trailers,
            complete,
            to_head,
        });
        if !complete {
            return;
        }
    }
}

/// Whether the server closes the connection within [`STAYS_OPEN`]; bytes
/// arriving meanwhile are garbage (no request asked for them).
fn closes_soon(wire: &mut Wire<TcpStream>, seen: &mut Seen) -> bool {
    wire.deadline = Some(Instant::now() + STAYS_OPEN);
    while wire.fill() {}
    if !wire.buffered().is_empty() {
        seen.garbage.extend_from_slice(wire.buffered());
    }
    wire.eof
}
