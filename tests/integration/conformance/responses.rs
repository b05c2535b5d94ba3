//! The response corpus: raw bytes the upstream writes for `GET
//! /resp/NAME` (or another request where a case says so). Each case then
//! sends `GET /resp/NAME/next` on the same client connection.

use super::case::{response, response_to, Case, HOST};

/// Closes the upstream connection after the answer.
const CLOSE: bool = true;
const KEEP: bool = false;

pub fn corpus() -> Vec<Case> {
    let mut c = vec![];
    c.extend(framing());
    c.extend(no_body());
    c.extend(interim());
    c.extend(end_to_end_fields());
    c.extend(hop_by_hop());
    c.extend(statuses());
    c.extend(broken());
    c
}

fn framing() -> Vec<Case> {
    let big = "x".repeat(100 * 1024);
    vec![
        response(
            "200 with Content-Length",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            KEEP,
        ),
        response(
            "200 with Content-Length: 0",
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            KEEP,
        ),
        response(
            "200 chunked",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            KEEP,
        ),
        response(
            "200 chunked with chunk extensions",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0;end\r\n\r\n",
            KEEP,
        ),
        response(
            "200 chunked with trailers",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: 42\r\n\r\n",
            KEEP,
        ),
        response(
            "200 chunked, upper-case hex sizes",
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n{}\r\n0\r\n\r\n", "z".repeat(10)),
            KEEP,
        ),
        response(
            "200 with a 100 KiB body",
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{big}", big.len()),
            KEEP,
        ),
        response(
            "HTTP/1.0 response delimited by close",
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close",
            CLOSE,
        ),
        response(
            "HTTP/1.1 response delimited by close",
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the close",
            CLOSE,
        ),
        response(
            "HTTP/1.0 response with keep-alive and Content-Length",
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
        response(
            "Connection: close with Content-Length",
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbye!",
            CLOSE,
        ),
        response(
            "body longer than its Content-Length",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloSURPLUS",
            KEEP,
        ),
    ]
}

fn no_body() -> Vec<Case> {
    let head = format!("HEAD /resp/head HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    vec![
        response("204", "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", KEEP),
        response(
            "two equal Content-Length fields",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
        response(
            "204 with a stray body",
            "HTTP/1.1 204 No Content\r\n\r\nstray bytes",
            KEEP,
        ),
        response(
            "304 with a stray body",
            "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\nstray bytes",
            KEEP,
        ),
        response(
            "304 with Content-Length",
            "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 10\r\n\r\n",
            KEEP,
        ),
        response_to(
            "HEAD answered with Content-Length",
            head.as_bytes(),
            "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/html\r\n\r\n",
            KEEP,
        ),
        response_to(
            "HTTP/1.0 request answered chunked",
            format!("GET /resp/http10-chunked HTTP/1.0\r\nHost: {HOST}\r\n\r\n").as_bytes(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            KEEP,
        ),
        response_to(
            "HTTP/1.0 keep-alive request answered chunked",
            format!("GET /resp/http10-ka-chunked HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            KEEP,
        ),
        response_to(
            "HEAD answered chunked",
            head.as_bytes(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            KEEP,
        ),
    ]
}

fn interim() -> Vec<Case> {
    vec![
        response(
            "100 Continue before the answer",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
        response(
            "103 Early Hints before the answer",
            "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
        response(
            "102 Processing before the answer",
            "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
    ]
}

fn end_to_end_fields() -> Vec<Case> {
    vec![
        response(
            "three Set-Cookie fields",
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; HttpOnly\r\nSet-Cookie: c=3; Secure\r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
        response(
            "Set-Cookie with a comma in Expires",
            "HTTP/1.1 200 OK\r\nSet-Cookie: id=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT\r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
        response(
            "duplicated end-to-end field",
            "HTTP/1.1 200 OK\r\nX-Dup: a\r\nX-Dup: b\r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
        response(
            "caching and content fields",
            "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nCache-Control: max-age=60\r\nETag: \"abc\"\r\nVary: Accept-Encoding\r\nLast-Modified: Tue, 01 Jan 2030 00:00:00 GMT\r\nContent-Length: 2\r\n\r\n{}",
            KEEP,
        ),
        response(
            "obs-text and UTF-8 in a field value",
            b"HTTP/1.1 200 OK\r\nX-Text: caf\xc3\xa9 \xff\r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
        response(
            "upstream's own Server and Date",
            "HTTP/1.1 200 OK\r\nServer: recorder\r\nDate: Thu, 01 Jan 2037 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
    ]
}

fn hop_by_hop() -> Vec<Case> {
    vec![
        response(
            "upstream sends Connection: x-hop with X-Hop",
            "HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-Hop: 1\r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
        response(
            "upstream sends Keep-Alive",
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=99, max=7\r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
        response(
            "upstream sends Proxy-Connection",
            "HTTP/1.1 200 OK\r\nProxy-Connection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
        response(
            "upstream sends Trailer with a Content-Length body",
            "HTTP/1.1 200 OK\r\nTrailer: X-Checksum\r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
        response(
            "upstream sends Upgrade on a 200",
            "HTTP/1.1 200 OK\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
    ]
}

fn statuses() -> Vec<Case> {
    vec![
        response(
            "301 with Location",
            "HTTP/1.1 301 Moved Permanently\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
            KEEP,
        ),
        response(
            "401 with WWW-Authenticate",
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"x\"\r\nContent-Length: 4\r\n\r\nnope",
            KEEP,
        ),
        response(
            "404 with a body",
            "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
            KEEP,
        ),
        response(
            "500 with a body",
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops",
            KEEP,
        ),
        response(
            "503 with Retry-After",
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nbusy",
            KEEP,
        ),
        response(
            "status line without a reason phrase",
            "HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
        response(
            "unregistered status 299",
            "HTTP/1.1 299 Whatever\r\nContent-Length: 2\r\n\r\nok",
            KEEP,
        ),
        response(
            "unregistered status 599",
            "HTTP/1.1 599 Odd\r\nContent-Length: 3\r\n\r\nodd",
            KEEP,
        ),
    ]
}

fn broken() -> Vec<Case> {
    vec![
        response(
            "closed mid-body (Content-Length)",
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
            CLOSE,
        ),
        response(
            "closed mid-body (chunked)",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\nonly ten b",
            CLOSE,
        ),
        response(
            "chunked without its last chunk, then closed",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            CLOSE,
        ),
        response("not HTTP at all", "SSH-2.0-OpenSSH_9.2\r\n\r\n", CLOSE),
        // A POST: a GET would be retried on a fresh connection when the
        // closed one came from the keepalive pool (both proxies do), which
        // depends on the pool's state.
        response_to(
            "closed without answering",
            format!("POST /resp/closed HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1\r\n\r\nx").as_bytes(),
            "",
            CLOSE,
        ),
        response(
            "Content-Length with Transfer-Encoding",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            KEEP,
        ),
    ]
}
