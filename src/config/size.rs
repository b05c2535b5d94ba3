//! Byte sizes written nginx style: `512`, `8k`, `1m`, `1g` (suffix in either
//! case, powers of 1024), as a YAML integer or string.

use serde_yaml::Value;

/// Parses a size; the error says what was expected.
pub fn parse_size(v: &Value) -> Result<u64, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("invalid size {n}: expected a whole number of bytes")),
        Value::String(s) => parse_size_str(s),
        other => Err(format!(
            "invalid size {other:?}: expected bytes with an optional k, m or g suffix"
        )),
    }
}

fn parse_size_str(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, mult) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&t[..t.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid size {text:?}: expected bytes with an optional k, m or g suffix (e.g. 8k, 1m)"
        ));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size {text:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Result<u64, String> {
        parse_size(&Value::String(text.into()))
    }

    #[test]
    fn parses_suffixes_and_numbers() {
        assert_eq!(s("512").unwrap(), 512);
        assert_eq!(s("8k").unwrap(), 8192);
        assert_eq!(s("8K").unwrap(), 8192);
        assert_eq!(s("1m").unwrap(), 1 << 20);
        assert_eq!(s("2g").unwrap(), 2 << 30);
        assert_eq!(s("0").unwrap(), 0);
        assert_eq!(parse_size(&Value::Number(4096.into())).unwrap(), 4096);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "k", "1.5m", "-1", "1mb", "1 m", "99999999999999999999g"] {
            assert!(s(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_size(&Value::Number((-1).into())).is_err());
        assert!(parse_size(&Value::Bool(true)).is_err());
    }
}
