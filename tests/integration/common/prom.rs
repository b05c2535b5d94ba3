//! A strict parser of the Prometheus text exposition format (version 0.0.4),
//! written for the tests so that `/metrics` is checked as a whole, not by
//! substrings. It rejects anything a Prometheus server would reject, plus
//! what the format's rules forbid without Prometheus noticing:
//!
//! - metric and label names, label value escapes, float and timestamp syntax;
//! - `# TYPE` at most once per family and before its samples; `# HELP` at
//!   most once; the samples of a family contiguous;
//! - sample names that fit the family type (`_bucket`/`_sum`/`_count` for
//!   histograms, `_sum`/`_count`/quantiles for summaries);
//! - no duplicate series; counters not negative;
//! - every histogram series has increasing `le` bounds, cumulative counts that
//!   never decrease, a `+Inf` bucket equal to `_count`, and a `_sum`;
//! - the text ends with a newline.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub timestamp: Option<i64>,
}

/// One metric family.
#[derive(Debug, Clone, Default)]
pub struct Family {
    pub name: String,
    pub kind: String,
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub families: HashMap<String, Family>,
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    match chars.next() {
        Some(c) if first_ok(c) => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => {
            // Rust accepts "inf", "infinity" and "nan" in any case: not the format's.
            if s.chars()
                .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
            {
                return Err(format!("bad value {s:?}"));
            }
            s.parse::<f64>().map_err(|_| format!("bad value {s:?}"))
        }
    }
}

/// Parses `{a="b",c="d"}` at the start of `s`; returns the labels and the rest.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let b = s.as_bytes();
    assert_eq!(b[0], b'{');
    let mut i = 1;
    loop {
        if b.get(i) == Some(&b'}') {
            return Ok((labels, &s[i + 1..]));
        }
        let start = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        let name = &s[start..i];
        if !is_name(name, false) || name.starts_with("__") {
            return Err(format!("bad label name {name:?}"));
        }
        if b.get(i + 1) != Some(&b'"') {
            return Err(format!("label {name}: value must be quoted"));
        }
        i += 2;
        let mut value = String::new();
        loop {
            match b.get(i) {
                None => return Err(format!("label {name}: unterminated value")),
                Some(b'"') => break,
                Some(b'\\') => {
                    match b.get(i + 1) {
                        Some(b'\\') => value.push('\\'),
                        Some(b'"') => value.push('"'),
                        Some(b'n') => value.push('\n'),
                        _ => return Err(format!("label {name}: bad escape")),
                    }
                    i += 2;
                }
                Some(_) => {
                    let ch = s[i..].chars().next().unwrap();
                    value.push(ch);
                    i += ch.len_utf8();
                }
            }
        }
        i += 1;
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} given twice"));
        }
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            _ => return Err("expected ',' or '}' after a label".into()),
        }
    }
}

/// The family a sample name belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return base;
            }
        }
    }
    name
}

/// Parses and checks a whole exposition.
pub fn parse(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut out = Exposition::default();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<(String, BTreeMap<String, String>)> = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        let mut switch_to = |family: &str, current: &mut Option<String>| -> Result<(), String> {
            if current.as_deref() != Some(family) {
                if let Some(prev) = current.take() {
                    finished.insert(prev);
                }
                if finished.contains(family) {
                    return Err(format!("family {family} is not contiguous"));
                }
                *current = Some(family.to_string());
            }
            Ok(())
        };
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            let mut parts = rest.splitn(3, ' ');
            match parts.next() {
                Some("HELP") => {
                    let name = parts.next().ok_or_else(|| at("HELP without name".into()))?;
                    if !is_name(name, true) {
                        return Err(at(format!("bad metric name {name:?}")));
                    }
                    let raw = parts.next().unwrap_or("");
                    let mut help = String::new();
                    let mut chars = raw.chars();
                    while let Some(c) = chars.next() {
                        if c == '\\' {
                            match chars.next() {
                                Some('\\') => help.push('\\'),
                                Some('n') => help.push('\n'),
                                _ => return Err(at("bad escape in HELP".into())),
                            }
                        } else {
                            help.push(c);
                        }
                    }
                    switch_to(name, &mut current).map_err(at)?;
                    let f = out.families.entry(name.to_string()).or_default();
                    if f.help.is_some() {
                        return Err(at(format!("second HELP for {name}")));
                    }
                    f.name = name.to_string();
                    f.help = Some(help);
                }
                Some("TYPE") => {
                    let name = parts.next().ok_or_else(|| at("TYPE without name".into()))?;
                    let kind = parts.next().ok_or_else(|| at("TYPE without type".into()))?;
                    if !is_name(name, true) {
                        return Err(at(format!("bad metric name {name:?}")));
                    }
                    if !matches!(
                        kind,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ) {
                        return Err(at(format!("unknown type {kind:?}")));
                    }
                    switch_to(name, &mut current).map_err(at)?;
                    let f = out.families.entry(name.to_string()).or_default();
                    if !f.kind.is_empty() {
                        return Err(at(format!("second TYPE for {name}")));
                    }
                    if !f.samples.is_empty() {
                        return Err(at(format!("TYPE for {name} after its samples")));
                    }
                    f.name = name.to_string();
                    f.kind = kind.to_string();
                    types.insert(name.to_string(), kind.to_string());
                }
                _ => {} // a plain comment
            }
            continue;
        }
        // A sample.
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_name(name, true) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("expected a space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(at)?;
        let timestamp = match fields.next() {
            None => None,
            Some(t) => Some(
                t.parse::<i64>()
                    .map_err(|_| at(format!("bad timestamp {t:?}")))?,
            ),
        };
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &types).to_string();
        switch_to(&family, &mut current).map_err(at)?;
        let f = out.families.entry(family.clone()).or_default();
        f.name = family.clone();
        if f.kind.is_empty() {
            f.kind = "untyped".into();
            types.insert(family.clone(), "untyped".into());
        }
        match f.kind.as_str() {
            "histogram" => {
                if name == family {
                    return Err(at(
                        "a histogram has only _bucket, _sum and _count samples".into()
                    ));
                }
                if name.ends_with("_bucket") != labels.contains_key("le") {
                    return Err(at("le belongs on _bucket samples only".into()));
                }
            }
            "summary" => {
                if name == family && !labels.contains_key("quantile") {
                    return Err(at("summary quantile sample without quantile label".into()));
                }
            }
            "counter" => {
                if name != family {
                    return Err(at("sample name differs from its counter family".into()));
                }
                if value.is_nan() || value < 0.0 {
                    return Err(at("a counter must not be negative or NaN".into()));
                }
            }
            _ => {
                if name != family {
                    return Err(at("sample name differs from its family".into()));
                }
            }
        }
        if !series.insert((name.to_string(), labels.clone())) {
            return Err(at("duplicate series".into()));
        }
        f.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
            timestamp,
        });
    }
    for f in out.families.values() {
        if f.kind == "histogram" {
            check_histogram(f)?;
        }
    }
    Ok(out)
}

fn check_histogram(f: &Family) -> Result<(), String> {
    type Key = BTreeMap<String, String>;
    let mut buckets: HashMap<Key, Vec<(f64, f64)>> = HashMap::new();
    let mut sums: HashMap<Key, f64> = HashMap::new();
    let mut counts: HashMap<Key, f64> = HashMap::new();
    for s in &f.samples {
        let mut key = s.labels.clone();
        if s.name.ends_with("_bucket") {
            let le = key.remove("le").unwrap();
            let le = parse_value(&le).map_err(|e| format!("{}: le {e}", f.name))?;
            buckets.entry(key).or_default().push((le, s.value));
        } else if s.name.ends_with("_sum") {
            sums.insert(key, s.value);
        } else {
            counts.insert(key, s.value);
        }
    }
    for (key, list) in &buckets {
        for w in list.windows(2) {
            if w[1].0 <= w[0].0 {
                return Err(format!("{} {key:?}: le bounds not increasing", f.name));
            }
            if w[1].1 < w[0].1 {
                return Err(format!("{} {key:?}: bucket counts decrease", f.name));
            }
        }
        let last = list.last().unwrap();
        if last.0 != f64::INFINITY {
            return Err(format!("{} {key:?}: no +Inf bucket", f.name));
        }
        if counts.get(key) != Some(&last.1) {
            return Err(format!(
                "{} {key:?}: _count differs from the +Inf bucket",
                f.name
            ));
        }
        if !sums.contains_key(key) {
            return Err(format!("{} {key:?}: no _sum", f.name));
        }
    }
    if counts.len() != buckets.len() || sums.len() != buckets.len() {
        return Err(format!("{}: _sum/_count without buckets", f.name));
    }
    Ok(())
}

impl Exposition {
    /// The family `name`, which must exist with type `kind`.
    pub fn family(&self, name: &str, kind: &str) -> &Family {
        let f = self
            .families
            .get(name)
            .unwrap_or_else(|| panic!("no metric family {name}"));
        assert_eq!(f.kind, kind, "type of {name}");
        assert!(
            f.help.as_deref().is_some_and(|h| !h.is_empty()),
            "{name} has no HELP"
        );
        f
    }

    /// The value of the sample `name` whose labels are exactly `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.families
            .values()
            .flat_map(|f| &f.samples)
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Like [`Exposition::get`], panicking if the sample is missing.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }
}
