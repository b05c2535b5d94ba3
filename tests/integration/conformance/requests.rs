//! The request corpus: raw bytes a client sends. Paths ending in `s204`,
//! `s404` or `sclose` get those answers from the upstream (see
//! `upstream::default_reply`); every other request gets a 200 naming it.

use super::case::{chunked, get, malformed, request, slowly, steps, with_body, Case, HOST};
use super::client::Step;
use std::time::Duration;

pub fn corpus() -> Vec<Case> {
    let mut c = vec![];
    c.extend(pipelining());
    c.extend(http10_and_host());
    c.extend(targets_and_methods());
    c.extend(bodies());
    c.extend(fields());
    c.extend(hop_by_hop());
    c.extend(malformed_requests());
    c
}

fn cat(parts: &[String]) -> String {
    parts.concat()
}

fn pipelining() -> Vec<Case> {
    let g = |p: &str| get("GET", p, "");
    vec![
        request("pipeline: 2 GETs in one write", cat(&[g("/p/a"), g("/p/b")])),
        request(
            "pipeline: 3 GETs in one write",
            cat(&[g("/p/a"), g("/p/b"), g("/p/c")]),
        ),
        request(
            "pipeline: 10 GETs in one write",
            (0..10).map(|i| g(&format!("/p/{i}"))).collect::<String>(),
        ),
        request(
            "pipeline: POST with a 3-byte body, then GET",
            cat(&[with_body("POST", "/p/post", "", "abc"), g("/p/after")]),
        ),
        request(
            "pipeline: two POSTs with bodies, then GET",
            cat(&[
                with_body("POST", "/p/1", "", "first"),
                with_body("POST", "/p/2", "", "second"),
                g("/p/3"),
            ]),
        ),
        request(
            "pipeline: chunked POST, then GET",
            cat(&[
                chunked("POST", "/p/chunked", "", "3\r\nabc\r\n0\r\n\r\n"),
                g("/p/after"),
            ]),
        ),
        request(
            "pipeline: HEAD, then GET",
            cat(&[get("HEAD", "/p/head", ""), g("/p/after")]),
        ),
        request(
            "pipeline: GET answered 204, then GET",
            cat(&[g("/p/s204"), g("/p/after")]),
        ),
        request(
            "pipeline: DELETE, then GET",
            cat(&[get("DELETE", "/p/del", ""), g("/p/after")]),
        ),
        request(
            "pipeline: PUT with body, then GET",
            cat(&[with_body("PUT", "/p/put", "", "put-body"), g("/p/after")]),
        ),
        request(
            "pipeline: PATCH with body, then GET",
            cat(&[with_body("PATCH", "/p/patch", "", "{}"), g("/p/after")]),
        ),
        request(
            "pipeline: OPTIONS, then GET",
            cat(&[get("OPTIONS", "/p/opt", ""), g("/p/after")]),
        ),
        request(
            "pipeline: DELETE, PUT, PATCH, OPTIONS",
            cat(&[
                get("DELETE", "/p/1", ""),
                with_body("PUT", "/p/2", "", "x"),
                with_body("PATCH", "/p/3", "", "y"),
                get("OPTIONS", "/p/4", ""),
            ]),
        ),
        request(
            "pipeline: GET, GET answered 404, GET",
            cat(&[g("/p/a"), g("/p/s404"), g("/p/c")]),
        ),
        request(
            "pipeline: GET, then a malformed request, then GET",
            cat(&[
                g("/p/a"),
                "GET /p/bad HTTP/1.1 extra\r\nHost: app.test\r\n\r\n".into(),
                g("/p/c"),
            ]),
        ),
        request(
            "pipeline: Connection: close in the middle, later ones discarded",
            cat(&[
                g("/p/a"),
                get("GET", "/p/b", "Connection: close\r\n"),
                g("/p/c"),
            ]),
        ),
        request(
            "pipeline: Connection: close on the first of two",
            cat(&[get("GET", "/p/a", "Connection: close\r\n"), g("/p/b")]),
        ),
        request(
            "pipeline: upstream closes after the middle answer",
            cat(&[g("/p/a"), g("/p/sclose"), g("/p/c")]),
        ),
        request(
            "pipeline: HTTP/1.0 keep-alive, second right after the first",
            cat(&[
                http10("/p/a", "Host: app.test\r\nConnection: keep-alive\r\n"),
                http10("/p/b", "Host: app.test\r\nConnection: keep-alive\r\n"),
            ]),
        ),
        request(
            "pipeline: HTTP/1.0 keep-alive, then HTTP/1.0 without, then GET",
            cat(&[
                http10("/p/a", "Host: app.test\r\nConnection: keep-alive\r\n"),
                http10("/p/b", "Host: app.test\r\n"),
                g("/p/c"),
            ]),
        ),
        request(
            "pipeline: GET with Content-Length: 0, then GET",
            cat(&[get("GET", "/p/a", "Content-Length: 0\r\n"), g("/p/b")]),
        ),
        request(
            "pipeline: absolute-form, then origin-form",
            cat(&[
                get("GET", "http://app.test/p/abs", ""),
                g("/p/origin"),
            ]),
        ),
        steps(
            "pipeline: second request split across writes",
            vec![
                Step::Send(format!("{}GET /p/b HT", g("/p/a")).into_bytes()),
                Step::Pause(Duration::from_millis(50)),
                Step::Send(format!("TP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes()),
            ],
        ),
        steps(
            "pipeline: Expect: 100-continue POST, then GET",
            vec![
                Step::Send(
                    format!(
                        "POST /p/expect HTTP/1.1\r\nHost: {HOST}\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
                    )
                    .into_bytes(),
                ),
                Step::Pause(Duration::from_millis(100)),
                Step::Send(format!("body{}", g("/p/after")).into_bytes()),
            ],
        ),
    ]
}

/// An HTTP/1.0 GET with `fields` (each line ending in CRLF).
fn http10(target: &str, fields: &str) -> String {
    format!("GET {target} HTTP/1.0\r\n{fields}\r\n")
}

fn http10_and_host() -> Vec<Case> {
    vec![
        request(
            "HTTP/1.0 GET with Host",
            http10("/v/a", "Host: app.test\r\n"),
        ),
        request("HTTP/1.0 GET without Host", http10("/v/nohost", "")),
        request(
            "HTTP/1.0 GET with Connection: keep-alive",
            http10("/v/ka", "Host: app.test\r\nConnection: keep-alive\r\n"),
        ),
        request(
            "HTTP/1.0 GET without Host, with Connection: keep-alive",
            http10("/v/ka-nohost", "Connection: keep-alive\r\n"),
        ),
        request(
            "HTTP/1.0 POST with a body",
            "POST /v/post HTTP/1.0\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello",
        ),
        request(
            "HTTP/1.0 HEAD",
            "HEAD /v/head HTTP/1.0\r\nHost: app.test\r\n\r\n",
        ),
        request(
            "Host with port and capitals",
            "GET /v/host HTTP/1.1\r\nHost: App.Test:8080\r\n\r\n",
        ),
        request(
            "Host as an IP address with port",
            "GET /v/ip HTTP/1.1\r\nHost: 192.0.2.7:8443\r\n\r\n",
        ),
    ]
}

fn targets_and_methods() -> Vec<Case> {
    vec![
        request(
            "absolute-form target",
            get("GET", "http://app.test/a/abs", ""),
        ),
        request(
            "absolute-form target with a query",
            get("GET", "http://app.test/a/abs?x=1&y=%20", ""),
        ),
        request(
            "absolute-form target with a port",
            "GET http://app.test:8080/a/port HTTP/1.1\r\nHost: app.test:8080\r\n\r\n",
        ),
        request(
            "absolute-form target with a different Host",
            "GET http://app.test/a/other HTTP/1.1\r\nHost: other.test\r\n\r\n",
        ),
        request(
            "absolute-form target, HTTP/1.0 without Host",
            "GET http://app.test/a/http10 HTTP/1.0\r\n\r\n",
        ),
        request(
            "absolute-form target with an empty path",
            get("GET", "http://app.test", ""),
        ),
        request(
            "absolute-form POST with a body",
            with_body("POST", "http://app.test/a/post", "", "abs"),
        ),
        request("GET", get("GET", "/m/get", "")),
        request("HEAD", get("HEAD", "/m/head", "")),
        request("POST", with_body("POST", "/m/post", "", "post-body")),
        request("PUT", with_body("PUT", "/m/put", "", "put-body")),
        request("DELETE", get("DELETE", "/m/delete", "")),
        request(
            "DELETE with a body",
            with_body("DELETE", "/m/delete", "", "why"),
        ),
        request("PATCH", with_body("PATCH", "/m/patch", "", "[1]")),
        request("OPTIONS /path", get("OPTIONS", "/m/options", "")),
        request("OPTIONS *", get("OPTIONS", "*", "")),
        request("TRACE", get("TRACE", "/m/trace", "")),
        request("unknown method token BREW", get("BREW", "/m/coffee", "")),
        request("unknown method token PURGE", get("PURGE", "/m/purge", "")),
        request("lowercase method token", get("get", "/m/lower", "")),
        request(
            "CONNECT host:443",
            "CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\n",
        ),
        request(
            "query with unusual characters",
            get("GET", "/q?a=1&b=%2F%3F&c=~!$'()*,;=:@&d", ""),
        ),
        request("percent-encoded path", get("GET", "/q/%E2%82%AC/a%20b", "")),
        request(
            "long target (2 KB query)",
            get("GET", &format!("/q/long?{}", "k=v&".repeat(512)), ""),
        ),
    ]
}

fn bodies() -> Vec<Case> {
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let mut binary =
        format!("POST /b/binary HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 256\r\n\r\n")
            .into_bytes();
    binary.extend_from_slice(&all_bytes);
    let head = format!("POST /b/slow HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 9\r\n\r\n");
    let chunked_head = chunked("POST", "/b/slow-chunked", "", "");
    vec![
        request("POST Content-Length: 0", with_body("POST", "/b/empty", "", "")),
        request("POST without a body or length", get("POST", "/b/none", "")),
        request(
            "POST chunked",
            chunked("POST", "/b/chunked", "", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        ),
        request(
            "POST chunked with chunk extensions",
            chunked(
                "POST",
                "/b/ext",
                "",
                "5;name=value\r\nhello\r\n6;a;b=\"q\"\r\n world\r\n0;last\r\n\r\n",
            ),
        ),
        request(
            "POST chunked with trailers",
            chunked(
                "POST",
                "/b/trailers",
                "",
                "5\r\nhello\r\n0\r\nX-Checksum: 42\r\nX-Other: y\r\n\r\n",
            ),
        ),
        request(
            "POST chunked, empty body",
            chunked("POST", "/b/chunked-empty", "", "0\r\n\r\n"),
        ),
        request(
            "POST chunked, many one-byte chunks",
            chunked(
                "POST",
                "/b/tiny",
                "",
                &format!("{}0\r\n\r\n", "1\r\nx\r\n".repeat(50)),
            ),
        ),
        request(
            "POST chunked, upper-case hex sizes",
            chunked(
                "POST",
                "/b/hex",
                "",
                &format!("A\r\n{}\r\n1B\r\n{}\r\n0\r\n\r\n", "a".repeat(10), "b".repeat(27)),
            ),
        ),
        request(
            "POST 64 KiB body",
            with_body("POST", "/b/big", "", &"0123456789abcdef".repeat(4096)),
        ),
        request("POST with every byte value", binary),
        request(
            "GET with a Content-Length body",
            with_body("GET", "/b/get-body", "", "query"),
        ),
        request(
            "Expect: 100-continue, body in the same write",
            with_body("POST", "/b/expect", "Expect: 100-continue\r\n", "expected"),
        ),
        steps(
            "Expect: 100-continue, body after a pause",
            vec![
                Step::Send(
                    format!(
                        "PUT /b/expect-wait HTTP/1.1\r\nHost: {HOST}\r\nExpect: 100-continue\r\nContent-Length: 6\r\n\r\n"
                    )
                    .into_bytes(),
                ),
                Step::Pause(Duration::from_millis(150)),
                Step::Send(b"waited".to_vec()),
            ],
        ),
        slowly(
            "body sent slowly in pieces",
            &[head.as_bytes(), b"abc", b"def", b"ghi"],
            Duration::from_millis(60),
        ),
        slowly(
            "chunked body sent slowly in pieces",
            &[
                chunked_head.as_bytes(),
                b"3\r\nabc\r\n",
                b"3\r\ndef",
                b"\r\n0\r\n",
                b"\r\n",
            ],
            Duration::from_millis(60),
        ),
    ]
}

fn fields() -> Vec<Case> {
    let many: String = (0..60)
        .map(|i| format!("X-Field-{i}: value {i}\r\n"))
        .collect();
    let mut obs_text = format!("GET /h/obs HTTP/1.1\r\nHost: {HOST}\r\nX-Obs: caf").into_bytes();
    obs_text.extend_from_slice(b"\xe9 \x80\xff end\r\n\r\n");
    vec![
        request(
            "field value of 4 KB",
            get(
                "GET",
                "/h/long",
                &format!("X-Long: {}\r\n", "v".repeat(4096)),
            ),
        ),
        request("60 fields", get("GET", "/h/many", &many)),
        request(
            "UTF-8 in a value",
            get(
                "GET",
                "/h/utf8",
                "X-Utf8: gr\u{fc}\u{df}e \u{20ac} \u{1f600}\r\n",
            ),
        ),
        request("obs-text bytes in a value", obs_text),
        request(
            "duplicated field",
            get("GET", "/h/dup", "X-Dup: a\r\nX-Dup: b\r\nX-Dup: c\r\n"),
        ),
        request(
            "two Cookie fields",
            get("GET", "/h/cookie", "Cookie: a=1\r\nCookie: b=2\r\n"),
        ),
        request(
            "mixed-case names",
            get(
                "GET",
                "/h/case",
                "x-lower: 1\r\nX-UPPER: 2\r\nX-mIxEd: 3\r\n",
            ),
        ),
        request(
            "empty values",
            get("GET", "/h/empty", "X-Empty:\r\nX-Empty-Space: \r\n"),
        ),
        request(
            "whitespace around a value",
            get("GET", "/h/ows", "X-Ows: \t padded \t\r\n"),
        ),
        request(
            "comma-separated list value",
            get(
                "GET",
                "/h/list",
                "Accept: text/html, application/json;q=0.9, */*;q=0.1\r\n",
            ),
        ),
        request(
            "underscore in a field name",
            get("GET", "/h/underscore", "X_Under: 1\r\n"),
        ),
        request(
            "client-sent X-Forwarded-For",
            get("GET", "/h/xff", "X-Forwarded-For: 203.0.113.9\r\n"),
        ),
        request(
            "Authorization and Cookie pass through",
            get(
                "GET",
                "/h/auth",
                "Authorization: Bearer abc.def\r\nCookie: s=1; t=2\r\n",
            ),
        ),
    ]
}

fn hop_by_hop() -> Vec<Case> {
    vec![
        request(
            "Connection: foo with Foo: bar",
            get("GET", "/c/foo", "Connection: foo\r\nFoo: bar\r\n"),
        ),
        request(
            "Connection: keep-alive, foo, bar with Foo and Bar",
            get(
                "GET",
                "/c/foobar",
                "Connection: keep-alive, foo, bar\r\nFoo: 1\r\nBar: 2\r\n",
            ),
        ),
        request(
            "Connection: close, foo with Foo",
            get("GET", "/c/close-foo", "Connection: close, foo\r\nFoo: bar\r\n"),
        ),
        request(
            "Keep-Alive field",
            get("GET", "/c/ka", "Connection: keep-alive\r\nKeep-Alive: timeout=5, max=100\r\n"),
        ),
        request(
            "Proxy-Connection field",
            get("GET", "/c/pc", "Proxy-Connection: keep-alive\r\n"),
        ),
        request("TE: trailers", get("GET", "/c/te-trailers", "TE: trailers\r\n")),
        request("TE: gzip", get("GET", "/c/te-gzip", "TE: gzip\r\n")),
        request(
            "Trailer field with a chunked body",
            chunked(
                "POST",
                "/c/trailer",
                "Trailer: X-Checksum\r\n",
                "2\r\nhi\r\n0\r\nX-Checksum: 1\r\n\r\n",
            ),
        ),
        request(
            "WebSocket upgrade request, answered 200",
            get(
                "GET",
                "/c/upgrade",
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            ),
        ),
        request(
            "Upgrade: h2c without Connection",
            get("GET", "/c/h2c", "Upgrade: h2c\r\n"),
        ),
    ]
}

fn malformed_requests() -> Vec<Case> {
    let h = "Host: app.test\r\n";
    vec![
        malformed("malformed: request line without version", "GET /x\r\n\r\n"),
        malformed(
            "malformed: request line with an extra token",
            format!("GET /x HTTP/1.1 extra\r\n{h}\r\n"),
        ),
        malformed(
            "malformed: space before colon",
            format!("GET /x HTTP/1.1\r\n{h}X-A : b\r\n\r\n"),
        ),
        malformed(
            "malformed: Content-Length with Transfer-Encoding",
            format!(
                "POST /x HTTP/1.1\r\n{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
        ),
        malformed(
            "malformed: two different Content-Lengths",
            format!("POST /x HTTP/1.1\r\n{h}Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"),
        ),
        malformed(
            "malformed: obs-fold",
            format!("GET /x HTTP/1.1\r\n{h}X-Folded: a\r\n  b\r\n\r\n"),
        ),
        malformed(
            "malformed: chunk size not hex",
            format!("POST /x HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        ),
        malformed(
            "malformed: HTTP/1.1 without Host",
            "GET /x HTTP/1.1\r\nAccept: */*\r\n\r\n",
        ),
        malformed(
            "malformed: two Host fields",
            "GET /x HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        ),
        malformed(
            "malformed: NUL in a value",
            b"GET /x HTTP/1.1\r\nHost: app.test\r\nX: a\x00b\r\n\r\n",
        ),
        malformed(
            "malformed: field line without a colon",
            format!("GET /x HTTP/1.1\r\n{h}NoColonHere\r\n\r\n"),
        ),
        malformed(
            "malformed: Content-Length not a number",
            format!("POST /x HTTP/1.1\r\n{h}Content-Length: five\r\n\r\nfive!"),
        ),
    ]
}
