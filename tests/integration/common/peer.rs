//! Requests from another loopback source address (127.0.0.2), to test the
//! status allow list with a real socket peer.

use crate::common::{read_response, Response};
use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// One request on a fresh connection whose source address is `src`.
pub fn request_from(
    src: &str,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{src}:0").parse().unwrap())
            .unwrap_or_else(|e| panic!("bind {src}: {e}"));
        let s = sock.connect(addr).await.unwrap();
        s.into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    let mut s = stream;
    s.write_all(req.as_bytes()).unwrap();
    read_response(&mut BufReader::new(s), method == "HEAD").unwrap()
}
