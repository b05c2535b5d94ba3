//! What is compared between the two proxies: each *aspect* of a case is
//! rendered as a string per proxy, and two strings that differ are a
//! difference. Lists (responses, upstream requests) are compared over the
//! part both proxies produced, so that one missing request shows up once,
//! as a count, rather than in every aspect.

use super::case::{Case, Kind};
use super::client::{Resp, Seen};
use super::upstream::UpRequest;
use super::wire::{parse_response, show, split_requests, Fields, Head};

/// What one proxy did with one case.
#[derive(Debug, Clone)]
pub struct Run {
    /// The client's source address (the proxies put it in X-Forwarded-For
    /// and X-Real-IP; it differs between the two runs).
    pub lane: String,
    pub seen: Seen,
    pub upstream: Vec<UpRequest>,
}

/// One aspect of a case as each proxy produced it.
#[derive(Debug, Clone)]
pub struct Aspect {
    pub name: &'static str,
    pub nginx: String,
    pub fulcrum: String,
}

impl Aspect {
    pub fn differs(&self) -> bool {
        self.nginx != self.fulcrum
    }
}

/// Fields that carry the framing or management of one connection, not the
/// message: each proxy sets its own on each side (RFC 9110 7.6.1).
const CONNECTION_FIELDS: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
];

/// Hop-by-hop fields that must not be forwarded (RFC 9110 7.6.1; Trailer
/// too: a proxy that drops the trailers must not announce them).
const HOP_BY_HOP: &[&str] = &["keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

/// Response fields the proxies legitimately set themselves.
const OWN_RESPONSE_FIELDS: &[&str] = &["server", "date", "x-request-id"];

/// Request fields the proxies legitimately set or drop themselves:
/// fulcrum's request id; Expect, which a proxy may answer itself or
/// forward (RFC 9110 10.1.1); Host has an aspect of its own.
const OWN_REQUEST_FIELDS: &[&str] = &["x-request-id", "expect", "host"];

/// Stands for the body and fields of an answer the proxy made up.
const OWN_ANSWER: &str = "(the proxy's own answer)";
/// Stands for the body and fields of a response whose status differs.
const STATUS_DIFFERS: &str = "(status differs)";

/// Every aspect of `case`, nginx's run against fulcrum's.
pub fn compare(case: &Case, nginx: &Run, fulcrum: &Run) -> Vec<Aspect> {
    let responses = nginx.seen.responses.len().min(fulcrum.seen.responses.len());
    let requests = nginx.upstream.len().min(fulcrum.upstream.len());
    // Where the statuses differ, so do bodies and fields: that is one
    // difference, the status.
    let same_status = (0..responses)
        .map(|i| nginx.seen.responses[i].status == fulcrum.seen.responses[i].status)
        .collect();
    let ctx = Ctx::new(case, same_status, requests);
    let a = ctx.render(nginx);
    let b = ctx.render(fulcrum);
    a.into_iter()
        .zip(b)
        .map(|((name, nginx), (_, fulcrum))| Aspect {
            name,
            nginx,
            fulcrum,
        })
        .collect()
}

/// What rendering needs to know besides the run.
struct Ctx<'a> {
    case: &'a Case,
    /// The requests the client sent, split from its raw bytes.
    sent: Vec<Head>,
    /// Per response both proxies gave: whether the statuses agree.
    same_status: Vec<bool>,
    /// Compare this many upstream requests.
    requests: usize,
}

impl<'a> Ctx<'a> {
    fn new(case: &'a Case, same_status: Vec<bool>, requests: usize) -> Ctx<'a> {
        let mut bytes = vec![];
        for s in &case.steps {
            if let super::client::Step::Send(b) = s {
                bytes.extend_from_slice(b);
            }
        }
        Ctx {
            case,
            sent: split_requests(&bytes).0,
            same_status,
            requests,
        }
    }

    fn render(&self, run: &Run) -> Vec<(&'static str, String)> {
        if self.case.kind == Kind::Malformed {
            return vec![("4xx+close, nothing upstream", malformed_outcome(run))];
        }
        let resp = &run.seen.responses[..self.same_status.len()];
        let up = &run.upstream[..self.requests];
        let lane = |s: String| s.replace(&run.lane, "<client>");
        // An answer the proxy made up itself (an error page) is compared
        // by its status only: each proxy has its own error pages.
        let own = |r: &Resp| !run.upstream.iter().any(|u| u.answered == Some(r.status));
        let each = |f: &dyn Fn(&Resp) -> String| {
            let rendered = resp.iter().zip(&self.same_status).map(|(r, &same)| {
                if !same {
                    STATUS_DIFFERS.to_string()
                } else if own(r) {
                    OWN_ANSWER.to_string()
                } else {
                    f(r)
                }
            });
            join(rendered)
        };
        vec![
            ("responses", statuses(&run.seen)),
            (
                "interim 1xx",
                join(run.seen.interim.iter().map(u16::to_string)),
            ),
            ("bodies", each(&body)),
            ("response fields", each(&|r| self.response_fields(r))),
            (
                "trailers to client",
                each(&|r| fields_where(&r.trailers, |_| true)),
            ),
            ("hop-by-hop to client", each(&|r| self.hop_to_client(r))),
            // Framing fields are each proxy's own, but never duplicated.
            ("Content-Length fields to client", each(&length_fields)),
            ("connection after", connection_after(&run.seen)),
            ("upstream requests", run.upstream.len().to_string()),
            ("upstream request line", join(up.iter().map(request_line))),
            (
                "upstream Host",
                join(up.iter().enumerate().map(|(i, r)| self.host(i, r))),
            ),
            ("upstream body", join(up.iter().map(|r| show(&r.body)))),
            (
                "upstream fields",
                lane(join(up.iter().map(|r| self.request_fields(r)))),
            ),
            (
                "upstream trailers",
                join(up.iter().map(|r| fields_where(&r.trailers, |_| true))),
            ),
            (
                "hop-by-hop to upstream",
                join(up.iter().map(|r| self.hop_to_upstream(r))),
            ),
        ]
    }

    /// Host as the rule says: the value when the client sent one, else
    /// only whether the proxy supplied a non-empty one.
    fn host(&self, i: usize, r: &UpRequest) -> String {
        let got = super::wire::field(&r.fields, "host");
        let client_sent = self.sent.get(i).is_none_or(|s| s.field("host").is_some());
        match got {
            Some(v) if client_sent => show(v),
            Some(v) if !v.is_empty() => "(supplied by the proxy)".into(),
            Some(_) => "(empty)".into(),
            None => "(none)".into(),
        }
    }

    /// End-to-end response fields the upstream sent, sorted by name (the
    /// order of fields with the same name kept): everything except what
    /// the proxies set themselves, the connection's framing (Content-Length
    /// is kept for a HEAD answer, where it describes the resource) and
    /// hop-by-hop fields, which have their own aspect.
    fn response_fields(&self, r: &Resp) -> String {
        let hop = self.upstream_hop_names();
        let keep = |name: &str| {
            !(OWN_RESPONSE_FIELDS.contains(&name)
                || (CONNECTION_FIELDS.contains(&name) && !(r.to_head && name == "content-length"))
                || HOP_BY_HOP.contains(&name)
                || hop.iter().any(|h| h == name))
        };
        fields_where(&r.fields, keep)
    }

    /// End-to-end request fields, likewise (the client's address is the
    /// lane's and is replaced by the caller).
    fn request_fields(&self, r: &UpRequest) -> String {
        let hop = self.client_hop_names();
        let keep = |name: &str| {
            !(OWN_REQUEST_FIELDS.contains(&name)
                || CONNECTION_FIELDS.contains(&name)
                || HOP_BY_HOP.contains(&name)
                || hop.iter().any(|h| h == name))
        };
        fields_where(&r.fields, keep)
    }

    /// The hop-by-hop fields of the scripted upstream response (if any)
    /// that reached the client, and the upstream's connection options that
    /// appear in the client's Connection field.
    fn hop_to_client(&self, r: &Resp) -> String {
        let Some(raw) = &self.case.scripted else {
            return String::new();
        };
        let Ok(upstream) = parse_response(raw) else {
            return String::new();
        };
        forwarded_hops(&upstream, &r.fields)
    }

    /// The client's hop-by-hop fields that reached the upstream, and its
    /// connection options that appear in the upstream's Connection field.
    fn hop_to_upstream(&self, r: &UpRequest) -> String {
        let mut out = vec![];
        for s in &self.sent {
            let found = forwarded_hops(s, &r.fields);
            if !found.is_empty() && !out.contains(&found) {
                out.push(found);
            }
        }
        out.join(", ")
    }

    /// Names the client's requests declared hop-by-hop in Connection.
    fn client_hop_names(&self) -> Vec<String> {
        self.sent.iter().flat_map(connection_options).collect()
    }

    /// Names the scripted upstream response declared hop-by-hop.
    fn upstream_hop_names(&self) -> Vec<String> {
        self.case
            .scripted
            .as_ref()
            .and_then(|raw| parse_response(raw).ok())
            .map(|h| connection_options(&h))
            .unwrap_or_default()
    }
}

/// The connection options of `head` (Connection tokens other than the
/// `close` and `keep-alive` that manage the connection itself).
fn connection_options(head: &Head) -> Vec<String> {
    head.tokens("connection")
        .into_iter()
        .filter(|t| t != "close" && t != "keep-alive")
        .collect()
}

/// Which hop-by-hop fields of `from` (the standard ones and those its
/// Connection names) appear with the same value in `to`, and which of its
/// connection options appear in `to`'s Connection.
fn forwarded_hops(from: &Head, to: &Fields) -> String {
    let options = connection_options(from);
    let mut out = vec![];
    for (name, value) in &from.fields {
        let lower = name.to_ascii_lowercase();
        let hop = HOP_BY_HOP.contains(&lower.as_str()) || options.contains(&lower);
        if hop
            && to
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value)
        {
            out.push(format!("{lower}: {}", show(value)));
        }
    }
    let to_head = Head {
        fields: to.clone(),
        ..Head::default()
    };
    for t in to_head.tokens("connection") {
        if options.contains(&t) {
            out.push(format!("connection: {t}"));
        }
    }
    out.join("; ")
}

fn fields_where(fields: &Fields, keep: impl Fn(&str) -> bool) -> String {
    let mut kept: Vec<(String, String)> = fields
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), show(v)))
        .filter(|(n, _)| keep(n))
        .collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    kept.iter()
        .map(|(n, v)| format!("{n}: {v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn statuses(seen: &Seen) -> String {
    let s = join(seen.responses.iter().map(|r| r.status.to_string()));
    let s = if s.is_empty() {
        "(none)".to_string()
    } else {
        s
    };
    if seen.garbage.is_empty() {
        s
    } else {
        format!(
            "{s}, then bytes that are no response: {}",
            show(&seen.garbage)
        )
    }
}

fn body(r: &Resp) -> String {
    let mut s = show(&r.body);
    if !r.complete {
        s.push_str(" (cut short)");
    }
    s
}

fn connection_after(seen: &Seen) -> String {
    if seen.closed { "closed" } else { "open" }.to_string()
}

fn request_line(r: &UpRequest) -> String {
    format!("{} {} HTTP/1.{}", r.method, r.target, r.minor)
}

fn malformed_outcome(run: &Run) -> String {
    let answer = match run.seen.responses.first().map(|r| r.status) {
        Some(s) if (400..500).contains(&s) => "4xx".to_string(),
        Some(s) => s.to_string(),
        None => "no answer".to_string(),
    };
    let closed = if run.seen.closed { "closed" } else { "open" };
    format!("{answer}, {closed}, upstream got {}", run.upstream.len())
}

/// Items separated by " | ".
fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(" | ")
}

/// Everything a run saw, readable (for `CONFORMANCE_ONLY`).
pub fn describe(run: &Run) -> String {
    let fields = |f: &Fields| {
        f.iter()
            .map(|(n, v)| format!("        {n}: {}\n", show(v)))
            .collect::<String>()
    };
    let mut s = format!("  client {} saw 1xx {:?}\n", run.lane, run.seen.interim);
    for r in &run.seen.responses {
        s.push_str(&format!("    {} (complete: {})\n", r.status, r.complete));
        s.push_str(&fields(&r.fields));
        s.push_str(&format!("      body {}\n", show(&r.body)));
    }
    s.push_str(&format!(
        "    then {}{}\n",
        connection_after(&run.seen),
        if run.seen.garbage.is_empty() {
            String::new()
        } else {
            format!(", garbage {}", show(&run.seen.garbage))
        }
    ));
    for u in &run.upstream {
        s.push_str(&format!(
            "  upstream conn {}: {} (answered {:?})\n",
            u.conn,
            request_line(u),
            u.answered
        ));
        s.push_str(&fields(&u.fields));
        s.push_str(&format!("      body {}\n", show(&u.body)));
        if !u.trailers.is_empty() {
            s.push_str(&format!("      trailers\n{}", fields(&u.trailers)));
        }
    }
    s
}

/// "one or none", or how many `Content-Length` fields came.
fn length_fields(r: &Resp) -> String {
    match r
        .fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .count()
    {
        0 | 1 => "one or none".into(),
        n => format!("{n}"),
    }
}
