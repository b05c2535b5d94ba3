//! `access_log_format: combined | json`: every line parses with a standard
//! parser — nginx's combined format by a regex that matches it exactly, JSON
//! lines with serde_json — and carries the request, the client headers, the
//! bytes sent and every upstream tried.

use crate::common::*;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

const REFERER: &str = "http://example.com/a \"quoted\" page";
const AGENT: &str = "fulcrum-test/1.0 (+ascii)";

/// nginx `log_format combined`:
/// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"`
const COMBINED: &str = r#"^(?P<remote_addr>\S+) - (?P<remote_user>\S+) \[(?P<time_local>\d{2}/(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "(?P<request>(?:[^"\\]|\\x[0-9A-F]{2})*)" (?P<status>\d{3}) (?P<body_bytes_sent>\d+) "(?P<http_referer>(?:[^"\\]|\\x[0-9A-F]{2})*)" "(?P<http_user_agent>(?:[^"\\]|\\x[0-9A-F]{2})*)""#;
/// fulcrum's upstream fields after it.
const UPSTREAM: &str = r#" pool=(?P<pool>\S+) upstream="(?P<upstream>[^"]*)" upstream_status="(?P<upstream_status>[^"]*)" upstream_response_time="(?P<upstream_response_time>[^"]*)" request_time=(?P<request_time>\d+\.\d{3}) request_id=(?P<request_id>\S+)$"#;

fn dead_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// Starts fulcrum logging to a file in `format`; pool `svc` has a server
/// that refuses connections, so some requests are retried.
fn start(format: &str, b: &Backends, dir: &TempDir) -> Fulcrum {
    let log = dir.path("access.log");
    let body = format!(
        "access_log: {}\naccess_log_format: {format}\n{}",
        log.display(),
        pool_with(
            "svc",
            "/api",
            &[(dead_addr(), ""), (b.addr("a"), "")],
            "max_fails: 0"
        )
    );
    Fulcrum::start(&body)
}

/// Sends the requests both tests log: returns the body lengths of the
/// routed ones, in order.
fn traffic(f: &Fulcrum) -> Vec<usize> {
    let mut sizes = vec![];
    for i in 0..6 {
        let r = request(
            f.addr,
            "GET",
            &format!("/api/items/{i}?q=1"),
            &[("Referer", REFERER), ("User-Agent", AGENT)],
            b"",
        );
        assert_eq!(r.status, 200);
        sizes.push(r.body.len());
    }
    assert_eq!(f.get("/nope").status, 404);
    sizes
}

/// Waits for `n` lines besides those of the /health polls made while
/// fulcrum started, and returns them.
fn wait_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let mut lines = vec![];
    let ok = wait_until(Duration::from_secs(10), || {
        lines = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("GET /health ") && !l.contains("\"uri\":\"/health\""))
            .map(str::to_string)
            .collect();
        lines.len() >= n
    });
    assert!(ok, "expected {n} access log lines, have {lines:#?}");
    // Two worker threads log as their requests end, so a line can land
    // before the previous request's: put them in the order `traffic` sent.
    let rank = |l: &String| (0..6).position(|i| l.contains(&format!("/api/items/{i}?")));
    lines.sort_by_key(|l| rank(l).unwrap_or(6));
    lines
}

#[test]
fn combined_lines_match_nginx_combined_plus_upstream_fields() {
    let b = Backends::start(&["a"], &[]);
    let dir = TempDir::new("combined");
    let f = start("combined", &b, &dir);
    let sizes = traffic(&f);
    let lines = wait_lines(&dir.path("access.log"), 7);
    let re = regex::Regex::new(&format!("{COMBINED}{UPSTREAM}")).unwrap();
    let nginx = regex::Regex::new(COMBINED).unwrap();
    let mut retried = 0;
    for (i, line) in lines.iter().enumerate() {
        assert!(nginx.is_match(line), "not nginx combined: {line}");
        let c = re
            .captures(line)
            .unwrap_or_else(|| panic!("upstream fields missing: {line}"));
        assert_eq!(&c["remote_addr"], "127.0.0.1");
        assert_eq!(&c["remote_user"], "-");
        if i < 6 {
            assert_eq!(
                &c["request"],
                format!("GET /api/items/{i}?q=1 HTTP/1.1").as_str()
            );
            assert_eq!(&c["status"], "200");
            assert_eq!(c["body_bytes_sent"].parse::<usize>().unwrap(), sizes[i]);
            // nginx escapes '"' as \x22.
            assert_eq!(
                &c["http_referer"],
                "http://example.com/a \\x22quoted\\x22 page"
            );
            assert_eq!(&c["http_user_agent"], AGENT);
            assert_eq!(&c["pool"], "svc");
            let ups: Vec<&str> = c["upstream"].split(", ").collect();
            let statuses: Vec<&str> = c["upstream_status"].split(", ").collect();
            let times: Vec<&str> = c["upstream_response_time"].split(", ").collect();
            assert_eq!(ups.len(), statuses.len());
            assert_eq!(ups.len(), times.len());
            assert_eq!(ups.last(), Some(&b.addr("a").to_string().as_str()));
            assert_eq!(statuses.last(), Some(&"200"));
            if ups.len() == 2 {
                retried += 1;
                assert_eq!(statuses[0], "502", "refused connection: {line}");
            }
            for t in times {
                t.parse::<f64>().unwrap();
            }
            assert_eq!(c["request_id"].len(), 24);
        } else {
            assert_eq!(&c["request"], "GET /nope HTTP/1.1");
            assert_eq!(&c["status"], "404");
            assert_eq!(&c["http_referer"], "-");
            assert_eq!(&c["pool"], "-");
            assert_eq!(&c["upstream"], "-");
        }
    }
    assert!(
        retried >= 1,
        "least_conn alternates, so one request was retried"
    );
}

#[test]
fn json_lines_parse_with_serde_json() {
    let b = Backends::start(&["a"], &[]);
    let dir = TempDir::new("jsonlog");
    let f = start("json", &b, &dir);
    let sizes = traffic(&f);
    let lines = wait_lines(&dir.path("access.log"), 7);
    let time = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$").unwrap();
    let mut retried = 0;
    for (i, line) in lines.iter().enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.is_object());
        assert!(time.is_match(v["time"].as_str().unwrap()), "{line}");
        assert_eq!(v["remote_addr"], "127.0.0.1");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert!(v["request_time"].as_f64().unwrap() >= 0.0);
        if i < 6 {
            assert_eq!(v["method"], "GET");
            assert_eq!(v["uri"], format!("/api/items/{i}?q=1"));
            assert_eq!(v["status"], 200);
            assert_eq!(v["body_bytes_sent"], sizes[i] as u64);
            assert_eq!(v["http_referer"], REFERER);
            assert_eq!(v["http_user_agent"], AGENT);
            assert_eq!(v["pool"], "svc");
            let ups = v["upstreams"].as_array().unwrap();
            let last = ups.last().unwrap();
            assert_eq!(last["addr"], b.addr("a").to_string());
            assert_eq!(last["status"], 200);
            assert!(last["response_time"].as_f64().unwrap() >= 0.0);
            if ups.len() == 2 {
                retried += 1;
                assert_eq!(ups[0]["status"], 502);
            }
            assert_eq!(v["request_id"].as_str().unwrap().len(), 24);
        } else {
            assert_eq!(v["uri"], "/nope");
            assert_eq!(v["status"], 404);
            assert_eq!(v["pool"], serde_json::Value::Null);
            assert_eq!(v["http_referer"], serde_json::Value::Null);
            assert_eq!(v["upstreams"], serde_json::json!([]));
        }
    }
    assert!(
        retried >= 1,
        "least_conn alternates, so one request was retried"
    );
}

#[test]
fn an_unknown_format_is_a_config_error_naming_the_field() {
    let dir = TempDir::new("badformat");
    let conf = dir.path("f.yaml");
    std::fs::write(
        &conf,
        "listen: [\"127.0.0.1:1\"]\naccess_log_format: apache\n",
    )
    .unwrap();
    let out = Command::new(FULCRUM)
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("access_log_format: \"apache\" is not one of default, combined, json"),
        "{text}"
    );
    std::fs::write(
        &conf,
        "listen: [\"127.0.0.1:1\"]\naccess_log_format: json\n",
    )
    .unwrap();
    let ok = Command::new(FULCRUM)
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// Lines are written in batches (20 ms apart), and a stop
/// writes the batch still queued: requests answered just before a fast stop
/// (SIGINT) are all in the file once the process has exited.
#[test]
fn lines_queued_at_a_fast_stop_are_written() {
    let b = Backends::start(&["a"], &[]);
    let dir = TempDir::new("access-stop");
    let mut f = start("default", &b, &dir);
    for i in 0..50 {
        assert_eq!(f.get(&format!("/api/stop/{i}")).status, 200);
    }
    signal(f.child.id(), "INT");
    let exited = wait_until(Duration::from_secs(10), || {
        matches!(f.child.try_wait(), Ok(Some(_)))
    });
    assert!(
        exited,
        "fulcrum did not exit after SIGINT:\n{}",
        f.log_text()
    );
    let text = std::fs::read_to_string(dir.path("access.log")).unwrap();
    let logged = (0..50)
        .filter(|i| text.contains(&format!("\"GET /api/stop/{i}\" 200")))
        .count();
    assert_eq!(logged, 50, "lines lost at the stop:\n{text}");
}
