//! The JSON echo of a request, the body of every normal answer without
//! `--body-size`: written directly, byte for byte as serde_json would write
//! the same object, since it is on the path of every benchmarked request.

use std::borrow::Cow;

use hyper::header::HeaderMap;

/// What the JSON echo of a request tells.
pub struct Echo<'a> {
    pub server: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub uri: &'a str,
    pub query: &'a str,
    pub body_bytes: u64,
    pub headers: &'a HeaderMap,
}

impl Echo<'_> {
    /// One line of JSON, byte for byte what serde_json writes for an object
    /// with these fields (its maps keep their keys sorted), written directly
    /// rather than through a `Value` tree. `headers` has the names as hyper
    /// lowercased them, repeated fields joined with ", ", and bytes that are
    /// not UTF-8 replaced by U+FFFD.
    pub fn to_json(&self) -> Vec<u8> {
        // The map yields the values of a repeated field one after the other.
        let mut fields: Vec<(&str, Cow<'_, str>)> = Vec::with_capacity(self.headers.keys_len());
        for (name, value) in self.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            match fields.last_mut() {
                Some((last, joined)) if *last == name.as_str() => {
                    let joined = joined.to_mut();
                    joined.push_str(", ");
                    joined.push_str(&value);
                }
                _ => fields.push((name.as_str(), value)),
            }
        }
        fields.sort_unstable_by(|a, b| a.0.cmp(b.0));

        let mut out = Vec::with_capacity(256);
        let put = |out: &mut Vec<u8>, s: &str| {
            serde_json::to_writer(&mut *out, s).expect("writing to memory cannot fail");
        };
        out.extend_from_slice(b"{\"body_bytes\":");
        serde_json::to_writer(&mut out, &self.body_bytes).expect("writing to memory cannot fail");
        out.extend_from_slice(b",\"headers\":{");
        for (i, (name, value)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            put(&mut out, name);
            out.push(b':');
            put(&mut out, value);
        }
        out.push(b'}');
        for (key, value) in [
            ("method", self.method),
            ("path", self.path),
            ("query", self.query),
            ("server", self.server),
            ("uri", self.uri),
        ] {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            put(&mut out, value);
        }
        out.extend_from_slice(b"}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{HeaderName, HeaderValue};

    /// The echo is what serde_json makes of the same object.
    #[test]
    fn echo_json_is_serde_json_of_the_same_fields() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-b", &b"2"[..]),
            ("host", b"h"),
            ("x-a", b"one"),
            ("x-b", b"caf\xe9 \"q\" \\ </>"),
            ("x-a", b" two\ttab"),
            ("accept", b"\xc3\xa9\xff"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        let echo = Echo {
            server: "srv",
            method: "PATCH",
            path: "/p\u{e9}",
            uri: "/p\u{e9}?q=\"1\"",
            query: "q=\"1\"",
            body_bytes: 12345678901,
            headers: &headers,
        };
        let mut header_map = serde_json::Map::new();
        for (name, value) in &headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match header_map.get_mut(name.as_str()) {
                Some(serde_json::Value::String(s)) => {
                    s.push_str(", ");
                    s.push_str(&value);
                }
                _ => {
                    header_map.insert(name.to_string(), value.into());
                }
            }
        }
        let mut expected = serde_json::to_vec(&serde_json::json!({
            "server": echo.server,
            "method": echo.method,
            "path": echo.path,
            "uri": echo.uri,
            "query": echo.query,
            "body_bytes": echo.body_bytes,
            "headers": header_map,
        }))
        .unwrap();
        expected.push(b'\n');
        assert_eq!(
            String::from_utf8(echo.to_json()).unwrap(),
            String::from_utf8(expected).unwrap()
        );
        let empty = HeaderMap::new();
        let echo = Echo {
            headers: &empty,
            ..echo
        };
        assert!(String::from_utf8(echo.to_json())
            .unwrap()
            .contains(",\"headers\":{},"));
    }
}
