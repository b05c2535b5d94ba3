//! Longest-prefix routing on path segment boundaries, on the normalized path.
//!
//! `/api/users` matches `/api/users`, `/api/users/7` and `/api/users?q`, never
//! `/api/usersX`. Before matching, the path is normalized (RFC 3986 §6.2.2:
//! `%XX` of unreserved characters decoded, `.`/`..` segments resolved, empty
//! segments merged). A request whose dot segments would move it out of the
//! prefix it was written under (`/api/users/../orders`) is rejected, so an
//! access rule written for one prefix cannot be side-stepped.
//!
//! A backslash, raw or encoded (`%5C`), is refused (400): a raw one is not
//! allowed in a URI (RFC 3986), and servers disagree on it (WHATWG URL
//! parsers and Windows servers read it as `/`, some frameworks decode `%5C`
//! first), so `/api/users\..\orders` could be routed as one path and served
//! as another. No ordinary API path needs one. An encoded slash (`%2F`) is
//! kept: it is data, never a separator, and forwarded as `%2F`.
//!
//! Public (the rest of `proxy` is not): the property tests and the fuzz
//! targets check it against a model.

mod stats;

pub(crate) use stats::RouteStats;
use std::borrow::Cow;

/// One entry of the route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Normalized prefix (`/` or without a trailing `/`).
    pub prefix: String,
    /// Index of the pool this route sends to.
    pub pool: usize,
    /// Remove the prefix before forwarding.
    pub strip_prefix: bool,
}

/// Why a path cannot be routed (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadPath {
    /// Not an absolute path, or a NUL, backslash or invalid escape in it.
    Malformed,
    /// `..` climbs above the root or out of the prefix it was written under.
    ClimbsOut,
}

/// The outcome for a routable path.
#[derive(Debug, PartialEq, Eq)]
pub struct Matched<'a> {
    /// The route that matched.
    pub route: &'a Route,
    /// The path to send upstream (normalized, prefix stripped if asked),
    /// without the query; borrowed when no rewrite was needed.
    pub upstream_path: Cow<'a, str>,
}

/// Prefix routes, longest first.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Builds a table; the order of `routes` does not matter.
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Router { routes }
    }

    /// All routes, longest prefix first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the route for `path` (the request target's path, still
    /// percent-encoded, without query). `Ok(None)` means no route: 404.
    pub fn route<'a>(&'a self, path: &'a str) -> Result<Option<Matched<'a>>, BadPath> {
        if !path.starts_with('/') {
            return Err(BadPath::Malformed);
        }
        let (normalized, had_dots) = normalize_inner(path, true)?;
        let route = self.longest_match(&normalized);
        if had_dots {
            // Dot segments must not carry the request out of the prefix it
            // was written under (nor into another one, nor out of every
            // route): compare with a reading that keeps them.
            let (written, _) = normalize_inner(path, false)?;
            if self.longest_match(&written).map(|w| &w.prefix) != route.map(|r| &r.prefix) {
                return Err(BadPath::ClimbsOut);
            }
        }
        let Some(route) = route else {
            return Ok(None);
        };
        let upstream_path = if route.strip_prefix && route.prefix != "/" {
            let rest = &normalized[route.prefix.len()..];
            Cow::Owned(if rest.is_empty() {
                "/".to_string()
            } else {
                rest.to_string()
            })
        } else {
            normalized
        };
        Ok(Some(Matched {
            route,
            upstream_path,
        }))
    }

    fn longest_match(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| prefix_matches(&r.prefix, path))
    }
}

/// Segment-boundary prefix test.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'))
}

/// Normalizes an absolute, percent-encoded path. Borrows when nothing changes,
/// which is the common case and costs no allocation.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, BadPath> {
    normalize_inner(path, true).map(|(p, _)| p)
}

/// Also reports whether dot segments were present; with `resolve_dots`
/// false they are kept as ordinary segments.
fn normalize_inner(path: &str, resolve_dots: bool) -> Result<(Cow<'_, str>, bool), BadPath> {
    if !path.starts_with('/') {
        // Found by the router fuzz target: "" came back as a "normal" path
        // (and the first character of a relative one was skipped unseen).
        return Err(BadPath::Malformed);
    }
    let bytes = path.as_bytes();
    let needs_work = bytes.contains(&b'%')
        || bytes.contains(&0)
        || bytes.contains(&b'\\')
        || path.contains("//")
        || path.contains("/./")
        || path.contains("/../")
        || path.ends_with("/.")
        || path.ends_with("/..");
    if !needs_work {
        return Ok((Cow::Borrowed(path), false));
    }
    let mut segments: Vec<String> = Vec::new();
    let mut had_dots = false;
    let trailing_slash = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    for raw in path[1..].split('/') {
        let seg = decode_unreserved(raw)?;
        match seg.as_str() {
            "" => {}
            "." | ".." if !resolve_dots => {
                had_dots = true;
                segments.push(seg);
            }
            "." => had_dots = true,
            ".." => {
                had_dots = true;
                if segments.pop().is_none() {
                    return Err(BadPath::ClimbsOut);
                }
            }
            _ => segments.push(seg),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (trailing_slash && !segments.is_empty()) {
        out.push('/');
    }
    Ok((Cow::Owned(out), had_dots))
}

/// Decodes `%XX` of unreserved characters (letters, digits, `-._~`); other
/// escapes are kept (upper-cased) so `%2F` never becomes a separator.
fn decode_unreserved(seg: &str) -> Result<String, BadPath> {
    let b = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            0 | b'\\' => return Err(BadPath::Malformed),
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or(BadPath::Malformed)?;
                // Two hex digits exactly (from_str_radix alone takes "+1").
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(BadPath::Malformed);
                }
                let hex = std::str::from_utf8(hex).map_err(|_| BadPath::Malformed)?;
                let v = u8::from_str_radix(hex, 16).map_err(|_| BadPath::Malformed)?;
                if v == 0 || v == b'\\' {
                    return Err(BadPath::Malformed);
                }
                if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    out.push(v as char);
                } else {
                    out.push('%');
                    out.push_str(&hex.to_ascii_uppercase());
                }
                i += 3;
            }
            _ => {
                // Multi-byte UTF-8 is copied whole.
                let ch_len = seg[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&seg[i..i + ch_len]);
                i += ch_len;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Router {
        let r = |prefix: &str, pool, strip_prefix| Route {
            prefix: prefix.into(),
            pool,
            strip_prefix,
        };
        Router::new(vec![
            r("/api", 0, false),
            r("/api/users", 1, false),
            r("/api/orders", 2, false),
            r("/static", 3, true),
        ])
    }

    fn pool_of(path: &str) -> Option<usize> {
        table().route(path).unwrap().map(|m| m.route.pool)
    }

    #[test]
    fn longest_prefix_on_segment_boundary() {
        assert_eq!(pool_of("/api/users"), Some(1));
        assert_eq!(pool_of("/api/users/7"), Some(1));
        assert_eq!(pool_of("/api/usersX"), Some(0));
        assert_eq!(pool_of("/api"), Some(0));
        assert_eq!(pool_of("/apix"), None);
        assert_eq!(pool_of("/"), None);
        assert_eq!(pool_of("/api/orders/1/items"), Some(2));
    }

    #[test]
    fn strip_prefix_rewrites_the_upstream_path() {
        let t = table();
        assert_eq!(
            t.route("/static/css/a.css").unwrap().unwrap().upstream_path,
            "/css/a.css"
        );
        assert_eq!(t.route("/static").unwrap().unwrap().upstream_path, "/");
        assert_eq!(
            t.route("/api/users/7").unwrap().unwrap().upstream_path,
            "/api/users/7"
        );
    }

    #[test]
    fn normalization_and_climbing_out() {
        let t = table();
        assert_eq!(t.route("/api/users/../orders"), Err(BadPath::ClimbsOut));
        assert_eq!(t.route("/api/users/%2e%2e/orders"), Err(BadPath::ClimbsOut));
        assert_eq!(t.route("/../etc/passwd"), Err(BadPath::ClimbsOut));
        assert_eq!(
            t.route("/api/users/../../etc/passwd"),
            Err(BadPath::ClimbsOut)
        );
        assert_eq!(t.route("/static/../nothing"), Err(BadPath::ClimbsOut));
        assert_eq!(t.route("/nothing/../static"), Err(BadPath::ClimbsOut));
        assert_eq!(t.route("/nothing/./x/../y"), Ok(None));
        assert_eq!(t.route("/api/%00"), Err(BadPath::Malformed));
        assert_eq!(t.route("/api/%zz"), Err(BadPath::Malformed));
        // Found by tests/integration/properties.rs: a sign is not a hex digit.
        assert_eq!(t.route("/api/%+1"), Err(BadPath::Malformed));
        assert_eq!(t.route("/api/users\\..\\orders"), Err(BadPath::Malformed));
        assert_eq!(t.route("/api\\users"), Err(BadPath::Malformed));
        assert_eq!(t.route("/api/users/a%5c..%5cb"), Err(BadPath::Malformed));
        assert_eq!(t.route("/api/users/%5C"), Err(BadPath::Malformed));
        let m = t.route("/api/users/./7//x").unwrap().unwrap();
        assert_eq!((m.route.pool, &*m.upstream_path), (1, "/api/users/7/x"));
        let m = t.route("//api//users/7").unwrap().unwrap();
        assert_eq!((m.route.pool, &*m.upstream_path), (1, "/api/users/7"));
        let m = t.route("/api/%75sers/1").unwrap().unwrap();
        assert_eq!((m.route.pool, &*m.upstream_path), (1, "/api/users/1"));
        // An encoded slash is data, not a separator.
        let m = t.route("/api%2fusers").unwrap();
        assert!(m.is_none());
        let m = t.route("/api/a%2fb").unwrap().unwrap();
        assert_eq!(&*m.upstream_path, "/api/a%2Fb");
        // Climbing inside the prefix is fine.
        let m = t.route("/api/users/a/../7").unwrap().unwrap();
        assert_eq!((m.route.pool, &*m.upstream_path), (1, "/api/users/7"));
    }

    #[test]
    fn only_absolute_paths_are_normalized() {
        assert_eq!(normalize(""), Err(BadPath::Malformed));
        assert_eq!(normalize("a/b"), Err(BadPath::Malformed));
        assert_eq!(normalize("x%2e%2e/a"), Err(BadPath::Malformed));
        assert_eq!(normalize("/").unwrap(), "/");
    }

    #[test]
    fn clean_paths_are_not_copied() {
        assert!(matches!(
            normalize("/api/users/7").unwrap(),
            Cow::Borrowed(_)
        ));
    }
}
