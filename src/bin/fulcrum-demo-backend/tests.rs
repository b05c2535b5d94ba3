//! Round trips over real TCP connections: what clients and proxies see on
//! the wire, including connections closed without an answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cli::{parse_args, Command};
use crate::serve::accept_loop;
use crate::state::Backend;

/// A listener named `t` on a free port, with extra flags.
async fn start(flags: &[&str]) -> SocketAddr {
    let args = ["--name", "t", "--listen", "127.0.0.1:0"]
        .iter()
        .chain(flags)
        .map(|s| s.to_string());
    let Ok(Command::Run(cfg)) = parse_args(args) else {
        panic!("bad flags {flags:?}");
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fixed = cfg.body_size.map(|n| vec![b'x'; n].into());
    let backend = Arc::new(Backend::new("t", &cfg, fixed));
    tokio::spawn(accept_loop(listener, backend));
    addr
}

/// Sends `data` on a new connection and reads until the server closes it.
async fn exchange(addr: SocketAddr, data: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(data).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn body(response: &str) -> Value {
    serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap()
}

async fn stats(addr: SocketAddr) -> Value {
    body(
        &exchange(
            addr,
            b"GET /__control/stats HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await,
    )
}

#[tokio::test]
async fn pipelined_requests_modes_and_stats() {
    let addr = start(&[]).await;
    let out = exchange(
        addr,
        b"GET /x?status=201 HTTP/1.1\r\nHost: h\r\n\r\n\
          GET /health HTTP/1.1\r\n\r\n\
          POST /__control/mode?drop_every=2 HTTP/1.1\r\nContent-Length: 0\r\n\r\n\
          GET /y HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        out.starts_with(
            "HTTP/1.1 201 Created\r\nServer: fulcrum-demo-backend\r\nX-Backend: t\r\n\
             Content-Type: application/json\r\nContent-Length: "
        ),
        "{out}"
    );
    assert!(out.contains("\"path\":\"/x\""));
    assert!(out.contains("\r\n\r\nok"));
    // /y is the 2nd normal request, so it is dropped without an answer.
    assert_eq!(out.matches("HTTP/1.1 ").count(), 3, "{out}");

    let stats = stats(addr).await;
    assert_eq!(stats["requests"], 2);
    assert_eq!(stats["health_requests"], 1);
    assert_eq!(stats["in_flight"], 0);
    assert_eq!(
        stats["connections"], 2,
        "the pipelined exchange and this one"
    );
    assert_eq!(stats["recent"][1]["uri"], "/y");
}

#[tokio::test]
async fn echo_of_headers_bodies_and_targets() {
    let addr = start(&[]).await;
    let out = exchange(
        addr,
        b"POST /c?a=1 HTTP/1.1\r\nX-A: one\r\nx-a:  two \r\nX-U: caf\xe9\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    .await;
    assert!(out.contains("\r\nConnection: close\r\n\r\n"), "{out}");
    let echo = body(&out);
    assert_eq!(echo["body_bytes"], 11);
    assert_eq!(echo["headers"]["x-a"], "one, two");
    assert_eq!(echo["headers"]["x-u"], "caf\u{fffd}");
    assert_eq!(
        (&echo["method"], &echo["path"], &echo["query"], &echo["uri"]),
        (
            &"POST".into(),
            &"/c".into(),
            &"a=1".into(),
            &"/c?a=1".into()
        )
    );
    let echo = body(
        &exchange(
            addr,
            b"GET http://h:8/p?q HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert_eq!(
        (&echo["path"], &echo["uri"]),
        (&"/p".into(), &"http://h:8/p?q".into())
    );
}

#[tokio::test]
async fn head_no_content_not_modified_and_http10() {
    let addr = start(&["--body-size", "3"]).await;
    let out = exchange(addr, b"HEAD /h HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(
        out.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"),
        "{out}"
    );
    let out = exchange(
        addr,
        b"GET /?status=204 HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        out,
        "HTTP/1.1 204 No Content\r\nServer: fulcrum-demo-backend\r\nX-Backend: t\r\n\
         Connection: close\r\n\r\n"
    );
    let out = exchange(
        addr,
        b"GET /?status=304 HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        out.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"),
        "{out}"
    );
    let out = exchange(addr, b"GET /?status=299 HTTP/1.0\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.0 299 \r\n"), "{out}");
    assert!(out.ends_with("Connection: close\r\n\r\nxxx"), "{out}");
    let out = exchange(
        addr,
        b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
    )
    .await;
    assert_eq!(
        out.matches("Connection: keep-alive\r\n").count(),
        1,
        "{out}"
    );
    assert!(out.ends_with("Connection: close\r\n\r\nxxx"), "{out}");
}

#[tokio::test]
async fn expect_continue_is_answered_before_the_body_is_sent() {
    let addr = start(&[]).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PUT /e HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"abc").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert_eq!(body(&out)["body_bytes"], 3);
}

#[tokio::test]
async fn misbehaviour_closes_without_a_byte_of_answer() {
    let addr = start(&["--close-after-read"]).await;
    let out = exchange(addr, b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nab").await;
    assert_eq!(out, "");
    // Control endpoints and health are never dropped.
    let out = exchange(addr, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert_eq!(stats(addr).await["requests"], 1);

    // A client that leaves during a delay abandons its request.
    let addr = start(&["--delay-ms", "3000"]).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stats(addr).await["in_flight"], 1);
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stats(addr).await["in_flight"], 0);
}

#[tokio::test]
async fn malformed_requests_are_refused_and_closed() {
    let addr = start(&[]).await;
    let out = exchange(addr, b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let out = exchange(addr, big.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    let out = exchange(
        addr,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert!(
        out.ends_with("Connection: close\r\n\r\ninvalid chunk size\n"),
        "{out}"
    );
}
