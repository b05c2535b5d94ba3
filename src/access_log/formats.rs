//! The `combined` and `json` access log formats (`access_log_format`).
//! Both run in the writer thread, never on the request path.

use super::Record;
use serde_json::json;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The status to log: a request that got no response at all (the client
/// went away first) is 499, as nginx logs it.
fn logged_status(r: &Record) -> u16 {
    if r.status == 0 {
        499
    } else {
        r.status
    }
}

/// A value inside a quoted field, escaped the way nginx escapes variables
/// in `escape=default` log formats: `"`, `\`, control characters and bytes
/// above 0x7e become `\xHH`.
fn push_escaped(line: &mut String, s: &str) {
    for &b in s.as_bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(line, "\\x{b:02X}");
        } else {
            line.push(b as char);
        }
    }
}

/// Broken-down civil time: (year, month 1-12, day, hour, minute, second).
type Civil = (i64, u32, u32, u32, u32, u32);

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn civil(unix_secs: i64) -> Civil {
    let (y, mo, d) = civil_from_days(unix_secs.div_euclid(86_400));
    let rem = unix_secs.rem_euclid(86_400);
    (
        y,
        mo,
        d,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    )
}

/// The local time zone's offset from UTC at `unix_secs`, in seconds.
fn local_offset(unix_secs: i64) -> i64 {
    let t = unix_secs as libc::time_t;
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers are
    // valid for the call, and localtime_r is the thread-safe variant.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            0
        } else {
            tm.tm_gmtoff
        }
    }
}

/// nginx `$time_local`: `10/Oct/2000:13:55:36 -0700`.
fn time_local(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let off = local_offset(secs);
    let (y, mo, d, h, mi, s) = civil(secs + off);
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.abs();
    format!(
        "{d:02}/{}/{y:04}:{h:02}:{mi:02}:{s:02} {sign}{:02}{:02}",
        MONTHS[mo as usize - 1],
        off / 3600,
        off / 60 % 60
    )
}

/// RFC 3339 UTC time with milliseconds: `2000-10-10T20:55:36.123Z`.
fn time_utc(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (y, mo, d, h, mi, s) = civil(since.as_secs() as i64);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        since.subsec_millis()
    )
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// nginx `combined` with the upstream fields appended:
///
/// `$remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"`
/// ` pool=P upstream="a:1, b:2" upstream_status="502, 200" upstream_response_time="0.001, 0.002" request_time=0.004 request_id=ID`,
/// with ` queue_time=0.120` before `request_time` for a request that queued.
pub(crate) fn format_combined(r: &Record, line: &mut String) {
    let client = r.client.map_or("-".to_string(), |c| c.to_string());
    let _ = write!(line, "{client} - - [{}] \"", time_local(r.at));
    push_escaped(
        line,
        &format!("{} {} {}", r.method, r.uri, version(r.version)),
    );
    let _ = write!(line, "\" {} {} \"", logged_status(r), r.body_bytes_sent);
    push_escaped(line, r.referer.as_deref().unwrap_or("-"));
    line.push_str("\" \"");
    push_escaped(line, r.user_agent.as_deref().unwrap_or("-"));
    let _ = write!(line, "\" pool={}", r.pool.as_deref().unwrap_or("-"));
    let list = |f: &dyn Fn(&super::AttemptLog) -> String| {
        if r.attempts.is_empty() {
            "-".to_string()
        } else {
            r.attempts.iter().map(f).collect::<Vec<_>>().join(", ")
        }
    };
    let _ = write!(
        line,
        " upstream=\"{}\" upstream_status=\"{}\" upstream_response_time=\"{}\"",
        list(&|a| a.addr.to_string()),
        list(&|a| a.status.to_string()),
        list(&|a| format!("{:.3}", a.time.as_secs_f64())),
    );
    if let Some(q) = r.queue_time {
        let _ = write!(line, " queue_time={:.3}", q.as_secs_f64());
    }
    let _ = writeln!(
        line,
        " request_time={:.3} request_id={}",
        r.total.as_secs_f64(),
        r.request_id().unwrap_or("-"),
    );
}

/// Seconds with millisecond resolution, as a JSON number.
fn secs(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// One JSON object per line (field names follow nginx variable names).
pub(crate) fn format_json(r: &Record, line: &mut String) {
    let upstreams: Vec<serde_json::Value> = r
        .attempts
        .iter()
        .map(|a| {
            json!({
                "addr": a.addr.to_string(),
                "status": a.status,
                "response_time": secs(a.time),
            })
        })
        .collect();
    let doc = json!({
        "time": time_utc(r.at),
        "remote_addr": r.client.map(|c| c.to_string()),
        "method": r.method.as_str(),
        "uri": r.uri.to_string(),
        "protocol": version(r.version),
        "status": logged_status(r),
        "body_bytes_sent": r.body_bytes_sent,
        "http_referer": r.referer,
        "http_user_agent": r.user_agent,
        "pool": r.pool.as_deref(),
        "upstreams": upstreams,
        "queue_time": r.queue_time.map(secs),
        "request_time": secs(r.total),
        "request_id": r.request_id(),
    });
    line.push_str(&doc.to_string());
    line.push('\n');
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::AttemptLog;
    use super::*;
    use std::time::Duration;

    /// A request that was retried once: the fixture of every format's test.
    pub(in crate::access_log) fn record() -> Record {
        Record {
            at: UNIX_EPOCH + Duration::from_millis(971_211_336_123),
            client: Some("10.0.0.9".parse().unwrap()),
            method: http::Method::GET,
            uri: "/api/users/7?x=1".parse().unwrap(),
            version: http::Version::HTTP_11,
            referer: Some("http://ex.com/\"quoted\"".into()),
            user_agent: Some("curl/8.0 ü".into()),
            body_bytes_sent: 123,
            status: 200,
            pool: Some("user_service".into()),
            attempts: vec![
                AttemptLog {
                    addr: "10.0.0.2:3001".parse().unwrap(),
                    status: 502,
                    time: Duration::from_millis(1),
                },
                AttemptLog {
                    addr: "10.0.0.1:3011".parse().unwrap(),
                    status: 200,
                    time: Duration::from_millis(2),
                },
            ],
            total: Duration::from_millis(4),
            queue_time: None,
            request_id: http::HeaderValue::from_static("abc"),
        }
    }

    #[test]
    fn calendar() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(971_211_336), (2000, 10, 10, 20, 55, 36));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(civil(-1), (1969, 12, 31, 23, 59, 59));
        assert_eq!(
            time_utc(UNIX_EPOCH + Duration::from_millis(971_211_336_123)),
            "2000-10-10T20:55:36.123Z"
        );
    }

    #[test]
    fn combined_is_nginx_combined_plus_upstreams() {
        let mut line = String::new();
        format_combined(&record(), &mut line);
        let (head, tail) = line.split_once(" [").unwrap();
        assert_eq!(head, "10.0.0.9 - -");
        let (_, rest) = tail.split_once("] ").unwrap();
        assert_eq!(
            rest,
            "\"GET /api/users/7?x=1 HTTP/1.1\" 200 123 \"http://ex.com/\\x22quoted\\x22\" \"curl/8.0 \\xC3\\xBC\" \
             pool=user_service upstream=\"10.0.0.2:3001, 10.0.0.1:3011\" upstream_status=\"502, 200\" \
             upstream_response_time=\"0.001, 0.002\" request_time=0.004 request_id=abc\n"
        );
    }

    #[test]
    fn json_is_one_object_per_line() {
        let mut r = record();
        r.status = 0;
        let mut line = String::new();
        format_json(&r, &mut line);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["status"], 499);
        assert_eq!(v["time"], "2000-10-10T20:55:36.123Z");
        assert_eq!(v["http_user_agent"], "curl/8.0 ü");
        assert_eq!(v["upstreams"][0]["status"], 502);
        assert_eq!(v["upstreams"][1]["response_time"], 0.002);
        assert_eq!(v["request_time"], 0.004);
        assert!(v["queue_time"].is_null());
    }

    #[test]
    fn a_request_that_queued_says_how_long_in_every_format() {
        let mut r = record();
        r.queue_time = Some(Duration::from_millis(120));
        let mut line = String::new();
        super::super::format_line(&r, &mut line);
        assert!(
            line.contains(" upstream_time=0.001, 0.002 queue_time=0.120 total=0.004 "),
            "{line}"
        );
        line.clear();
        format_combined(&r, &mut line);
        assert!(
            line.contains("\" queue_time=0.120 request_time=0.004 "),
            "{line}"
        );
        line.clear();
        format_json(&r, &mut line);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["queue_time"], 0.12);
    }
}
