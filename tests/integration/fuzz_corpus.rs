//! Replays the committed fuzz corpus (tests/fuzz/corpus, minimized with
//! `cargo fuzz cmin`, including every crash found so far) through the same
//! checks as the cargo-fuzz targets in tests/fuzz, on stable Rust: this is
//! how CI runs the fuzzers' findings.

use crate::common::route_model;
use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "empty corpus in {}", dir.display());
    out
}

#[test]
fn config_corpus_loads_or_fails_with_field_paths() {
    let lookup = |name: &str| {
        name.len()
            .is_multiple_of(2)
            .then(|| format!("127.0.0.{}", name.len()))
    };
    let mut ok = 0;
    let corpus = inputs("config");
    for (name, data) in &corpus {
        let Ok(text) = std::str::from_utf8(data) else {
            continue;
        };
        match fulcrum::config::from_str(text, &lookup) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(!e.0.is_empty(), "{name}: an error without a message");
                for line in &e.0 {
                    assert!(line.contains(": "), "{name}: no field path in {line:?}");
                }
            }
        }
    }
    println!("{} config inputs, {ok} valid", corpus.len());
}

#[test]
fn router_corpus_agrees_with_the_model() {
    let corpus = inputs("router");
    let mut failures = vec![];
    for (name, data) in &corpus {
        let Ok(text) = std::str::from_utf8(data) else {
            continue;
        };
        let (routes, path) = route_model::from_text(text);
        if let Err(e) = route_model::check(&routes, &path) {
            failures.push(format!("{name}: {e}"));
        }
    }
    println!("{} router inputs", corpus.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
