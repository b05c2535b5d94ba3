//! A reference model of path normalization and prefix routing, written
//! independently of `src/proxy/router.rs` (whole-path decode first, then plain
//! list operations), and the invariants the real router must keep. Shared by
//! the property tests (properties.rs), the corpus replay
//! (fuzz_corpus.rs) and the cargo-fuzz target (tests/fuzz, which reaches
//! this file through the link tests/common/route_model.rs).

use fulcrum::router::{normalize, BadPath, Route, Router};

/// What the model says about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 400: malformed.
    Malformed,
    /// 400: dot segments change the route (or climb above the root).
    ClimbsOut,
    /// 404.
    NoRoute,
    /// Routed: (route index in the table as given, upstream path).
    Routed(usize, String),
}

/// Decodes one raw segment: `%XX` of unreserved characters becomes the
/// character, other escapes stay (upper-case hex); NUL and backslashes,
/// raw or encoded, and broken escapes are malformed.
fn decode_segment(raw: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(c) = rest.chars().next() {
        if c == '%' {
            let hex = rest.get(1..3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let v = u8::from_str_radix(hex, 16).ok()?;
            match v {
                0 | b'\\' => return None,
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(v as char)
                }
                _ => {
                    out.push('%');
                    out.push_str(&hex.to_ascii_uppercase());
                }
            }
            rest = &rest[3..];
        } else {
            if c == '\0' || c == '\\' {
                return None;
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    Some(out)
}

fn join(segments: &[String]) -> String {
    if segments.is_empty() {
        "/".to_string()
    } else {
        segments.iter().map(|s| format!("/{s}")).collect()
    }
}

fn matches(prefix: &str, path: &str) -> bool {
    prefix == "/" || path == prefix || path.starts_with(&format!("{prefix}/"))
}

/// Index of the longest matching prefix.
fn longest(routes: &[Route], path: &str) -> Option<usize> {
    routes
        .iter()
        .enumerate()
        .filter(|(_, r)| matches(&r.prefix, path))
        .max_by_key(|(_, r)| r.prefix.len())
        .map(|(i, _)| i)
}

/// The model: what routing `path` over `routes` must give.
pub fn model(routes: &[Route], path: &str) -> Outcome {
    let Some(body) = path.strip_prefix('/') else {
        return Outcome::Malformed;
    };
    let raw: Vec<&str> = body.split('/').collect();
    let Some(decoded) = raw
        .iter()
        .map(|s| decode_segment(s))
        .collect::<Option<Vec<String>>>()
    else {
        return Outcome::Malformed;
    };
    let written: Vec<String> = decoded.iter().filter(|s| !s.is_empty()).cloned().collect();
    let mut resolved: Vec<String> = Vec::new();
    for s in &written {
        match s.as_str() {
            "." => {}
            ".." => {
                if resolved.pop().is_none() {
                    return Outcome::ClimbsOut;
                }
            }
            _ => resolved.push(s.clone()),
        }
    }
    let mut normalized = join(&resolved);
    let last = raw.last().copied().unwrap_or("");
    if matches!(last, "" | "." | "..") && !resolved.is_empty() {
        normalized.push('/');
    }
    let route = longest(routes, &normalized);
    let had_dots = written.iter().any(|s| s == "." || s == "..");
    if had_dots {
        let route_written = longest(routes, &join(&written));
        let prefix = |i: Option<usize>| i.map(|i| routes[i].prefix.as_str());
        if prefix(route_written) != prefix(route) {
            return Outcome::ClimbsOut;
        }
    }
    match route {
        None => Outcome::NoRoute,
        Some(i) => {
            let r = &routes[i];
            let upstream = if r.strip_prefix && r.prefix != "/" {
                let rest = &normalized[r.prefix.len()..];
                if rest.is_empty() {
                    "/".to_string()
                } else {
                    rest.to_string()
                }
            } else {
                normalized
            };
            Outcome::Routed(i, upstream)
        }
    }
}

/// What the real router gives, in the model's terms.
pub fn actual(router: &Router, routes: &[Route], path: &str) -> Outcome {
    match router.route(path) {
        Err(BadPath::Malformed) => Outcome::Malformed,
        Err(BadPath::ClimbsOut) => Outcome::ClimbsOut,
        Ok(None) => Outcome::NoRoute,
        Ok(Some(m)) => {
            let i = routes
                .iter()
                .position(|r| r.prefix == m.route.prefix)
                .expect("the router returns one of its routes");
            Outcome::Routed(i, m.upstream_path.into_owned())
        }
    }
}

/// A route prefix as config validation would accept it (see
/// `routes[].prefix` in src/config/validate.rs), normalized the same way.
pub fn valid_prefix(p: &str) -> Option<String> {
    if !p.starts_with('/')
        || p.contains(['?', '#', '%', '\\', ' ', '\0'])
        || p.split('/').any(|s| s == "." || s == "..")
    {
        return None;
    }
    Some(if p.len() > 1 {
        p.trim_end_matches('/').to_string()
    } else {
        p.to_string()
    })
    .filter(|p| !p.is_empty())
}

/// Builds a table from candidate prefixes (invalid and duplicate ones dropped).
pub fn table(prefixes: &[(String, bool)]) -> Vec<Route> {
    let mut out: Vec<Route> = Vec::new();
    for (p, strip) in prefixes {
        if let Some(p) = valid_prefix(p) {
            if !out.iter().any(|r| r.prefix == p) {
                out.push(Route {
                    prefix: p,
                    pool: out.len(),
                    strip_prefix: *strip,
                });
            }
        }
    }
    out
}

/// Checks the router against the model and the normalization invariants
/// for one path; returns what went wrong, if anything.
pub fn check(routes: &[Route], path: &str) -> Result<(), String> {
    let router = Router::new(routes.to_vec());
    let want = model(routes, path);
    let got = actual(&router, routes, path);
    // Both refusals are a 400; which reason is found first may differ
    // (the router stops at the first bad segment, the model decodes all).
    let refused = |o: &Outcome| matches!(o, Outcome::Malformed | Outcome::ClimbsOut);
    if want != got && !(refused(&want) && refused(&got)) {
        return Err(format!(
            "path {path:?} over {routes:?}: model {want:?}, router {got:?}"
        ));
    }
    if let Ok(n) = normalize(path) {
        let n = n.into_owned();
        if !n.starts_with('/')
            || n.contains("//")
            || n.contains('\\')
            || n.contains('\0')
            || n.split('/').any(|s| s == "." || s == "..")
        {
            return Err(format!("normalize({path:?}) = {n:?} is not normal"));
        }
        match normalize(&n) {
            Ok(again) if again == n => {}
            other => {
                return Err(format!(
                    "normalize is not idempotent: {path:?} -> {n:?} -> {other:?}"
                ))
            }
        }
    }
    if let Outcome::Routed(_, up) = &got {
        if !up.starts_with('/') || up.contains("//") || up.split('/').any(|s| s == "." || s == "..")
        {
            return Err(format!("upstream path {up:?} for {path:?} is not normal"));
        }
    }
    Ok(())
}

/// Splits fuzzer input into a route table and a path: every line but the
/// last is a prefix (a leading `!` asks for strip_prefix), the last is the path.
pub fn from_text(text: &str) -> (Vec<Route>, String) {
    let mut lines: Vec<&str> = text.split('\n').collect();
    let path = lines.pop().unwrap_or("").to_string();
    let prefixes: Vec<(String, bool)> = lines
        .iter()
        .map(|l| match l.strip_prefix('!') {
            Some(p) => (p.to_string(), true),
            None => (l.to_string(), false),
        })
        .collect();
    (table(&prefixes), path)
}
