//! `${NAME}` expansion from the environment, applied to every string scalar of
//! the parsed YAML so that a value containing YAML syntax cannot change the
//! document's structure.

use serde_yaml::Value;

/// Replaces `${NAME}` in every string of `value`. Each unset variable adds an
/// error naming the field path and the variable; the value is left unexpanded.
pub fn expand_tree(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) {
    match value {
        Value::String(s) if s.contains("${") => match expand_str(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(e) => errors.push(format!("{}: {e}", display_path(path))),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, &format!("{path}[{i}]"), lookup, errors);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = k
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{k:?}"));
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                expand_tree(v, &child, lookup, errors);
            }
        }
        Value::Tagged(t) => expand_tree(&mut t.value, path, lookup, errors),
        _ => {}
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "(top level)"
    } else {
        path
    }
}

/// Expands one string. `${NAME:-default}` uses `default` when NAME is unset
/// or empty (as in the shell). `$` not followed by `{` is kept literally.
pub fn expand_str(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{ in {s:?}"))?;
        let (name, default) = match after[..end].split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (&after[..end], None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid variable name {name:?} in {s:?}"));
        }
        let value = match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => v,
            (None, Some(d)) => d.to_string(),
            (None, None) => return Err(format!("environment variable {name} is not set")),
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "IP").then(|| "10.0.0.2".to_string())
    }

    #[test]
    fn expands_known_and_names_unknown() {
        assert_eq!(expand_str("${IP}:3001", &env).unwrap(), "10.0.0.2:3001");
        assert_eq!(expand_str("a$b", &env).unwrap(), "a$b");
        let e = expand_str("${NOPE}:1", &env).unwrap_err();
        assert!(e.contains("NOPE"), "{e}");
        assert!(expand_str("${IP", &env).is_err());
        assert_eq!(expand_str("${NOPE:-/run/x}/p", &env).unwrap(), "/run/x/p");
        assert_eq!(expand_str("${IP:-1.1.1.1}", &env).unwrap(), "10.0.0.2");
    }

    #[test]
    fn tree_errors_carry_the_field_path() {
        let mut v: Value =
            serde_yaml::from_str("pools:\n  p:\n    servers:\n      - addr: \"${X}:1\"\n").unwrap();
        let mut errors = vec![];
        expand_tree(&mut v, "", &env, &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("pools.p.servers[0].addr: "),
            "{}",
            errors[0]
        );
        assert!(errors[0].contains("X is not set"), "{}", errors[0]);
    }
}
