//! Property tests (proptest), run in CI with the default case count; raise
//! it for a long run: `PROPTEST_CASES=200000 cargo test --test integration properties::`.
//!
//! - the config loader never panics, on YAML-ish text or on mutations of a
//!   valid config, and each error names its field path;
//! - path normalization is idempotent, never leaves `.`/`..` segments or
//!   `//`, and routing agrees with the reference model
//!   (common/route_model.rs);
//! - least_conn: in-flight counts match the attempts outstanding (never
//!   negative, back to zero), every pick is a least loaded server by
//!   in_flight/weight, and sequential picks follow the weights exactly.

use crate::common::route_model;
use fulcrum::config::{from_str, Loaded};
use fulcrum::pool::{InFlight, Pool};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::collections::HashMap;
use std::net::SocketAddr;

/// proptest's defaults, with the failures it saves (and replays first) in
/// properties.proptest-regressions beside this file: by default proptest
/// would use tests/proptest-regressions/, beside this crate's main.rs.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

const VALID: &str = r#"
version: 1
threads: 2
listen: ["127.0.0.1:8080", "[::1]:8081"]
health_path: /health
status: { path: /nginx-status, allow: ["127.0.0.1/32", "::1/128"] }
access_log: "off"
limits:
  max_header_size: 16k
  max_header_count: 50
  client_max_body_size: 1m
  client_header_timeout: 10s
  keepalive_timeout: 0s
  max_connections: 10
pools:
  users:
    selection: least_conn
    max_fails: 3
    fail_timeout: 10s
    connect_timeout: 1s
    retry: { tries: 2, timeout: 5s, on: [error, timeout, http_503], non_idempotent: false }
    health_check: { type: http, path: /health, expect_status: [200-399, 404], interval: 1s, rise: 2, fall: 3 }
    servers:
      - { addr: "127.0.0.1:3001", weight: 3, max_conns: 10 }
      - { addr: "${B_ADDR:-127.0.0.1:3011}", backup: true }
  orders:
    selection: round_robin
    servers: [{ addr: "127.0.0.1:3003" }]
routes:
  - { prefix: /api/users, pool: users }
  - { prefix: /api/orders/, pool: orders, strip_prefix: true }
"#;

fn lookup(name: &str) -> Option<String> {
    (name == "SET").then(|| "127.0.0.9".to_string())
}

/// Loads `text`; an error must name a field path on every line.
fn load_checked(text: &str) -> Result<Loaded, Vec<String>> {
    match from_str(text, &lookup) {
        Ok(l) => Ok(l),
        Err(e) => {
            assert!(!e.0.is_empty());
            for line in &e.0 {
                assert!(line.contains(": "), "no field path in {line:?}");
            }
            Err(e.0)
        }
    }
}

/// Scalars that stress the value syntaxes (sizes, durations, addresses,
/// variables); no host names, so validation never asks a resolver.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("0s".to_string()),
        Just("-1".to_string()),
        Just("1.5".to_string()),
        Just("99999999999999999999".to_string()),
        Just("18446744073709551615g".to_string()),
        Just("~".to_string()),
        Just("\"\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("\"${SET}:80\"".to_string()),
        Just("\"${UNSET}\"".to_string()),
        Just("\"${UNSET:-127.0.0.1:1}\"".to_string()),
        Just("\"${\"".to_string()),
        Just("\"127.0.0.1:0\"".to_string()),
        Just("\"[::1]:65535\"".to_string()),
        Just("\"127.0.0.1:65536\"".to_string()),
        Just("/".to_string()),
        Just("/a/../b".to_string()),
        Just("\"200-100\"".to_string()),
        Just("true".to_string()),
        Just("&a x".to_string()),
        Just("*a".to_string()),
        Just("!!binary aGk=".to_string()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        (
            0u64..1000,
            prop::sample::select(vec!["ms", "s", "m", "h", "k", "m", "g", "x", ""])
        )
            .prop_map(|(n, u)| format!("{n}{u}")),
        "[a-z_/.:-]{0,12}",
    ]
}

/// Mutates one scalar of the valid document, deletes a line, duplicates a
/// line, or breaks indentation.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, String),
    Delete(usize),
    Duplicate(usize),
    Indent(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), scalar()).prop_map(|(i, s)| Mutation::Replace(i, s)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Duplicate),
        (any::<usize>(), 0usize..7).prop_map(|(i, n)| Mutation::Indent(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(doc: &str, muts: &[Mutation]) -> String {
    let mut lines: Vec<String> = doc.lines().map(str::to_string).collect();
    for m in muts {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match m {
            Mutation::Replace(i, s) => {
                let l = &mut lines[i % n];
                // Replace the value after the last ": " (or the whole line).
                match l.rfind(": ") {
                    Some(at) => {
                        l.truncate(at + 2);
                        l.push_str(s);
                    }
                    None => *l = s.clone(),
                }
            }
            Mutation::Delete(i) => {
                lines.remove(i % n);
            }
            Mutation::Duplicate(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Mutation::Indent(i, k) => {
                let l = lines[i % n].trim_start().to_string();
                lines[i % n] = format!("{}{l}", " ".repeat(*k));
            }
            Mutation::Truncate(i) => {
                let text = lines.join("\n");
                let cut = i % (text.len() + 1);
                let cut = (0..=cut)
                    .rev()
                    .find(|c| text.is_char_boundary(*c))
                    .unwrap_or(0);
                lines = text[..cut].lines().map(str::to_string).collect();
            }
        }
    }
    lines.join("\n")
}

#[test]
fn the_valid_document_loads() {
    let l = load_checked(VALID).unwrap();
    assert_eq!(l.config.pools.len(), 2);
    assert_eq!(l.config.limits.max_connections, 10);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_loader_never_panics_on_yamlish_text(text in "(([a-z_]{1,12}|-|\\[|\\]|\\{|\\}|:|,| |\"|\\$\\{[A-Z]{0,4}\\}?|[0-9]{1,4}|/|\n  |\n)){0,60}") {
        let _ = load_checked(&text);
    }

    #[test]
    fn config_loader_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = load_checked(&text);
    }

    #[test]
    fn config_loader_never_panics_on_mutations_of_a_valid_config(muts in prop::collection::vec(mutation(), 1..6)) {
        let doc = mutate(VALID, &muts);
        if let Ok(l) = load_checked(&doc) {
            // Whatever got through is internally consistent.
            for r in &l.config.routes {
                prop_assert!(r.pool < l.config.pools.len());
                prop_assert!(r.prefix.starts_with('/'));
            }
            for p in &l.config.pools {
                prop_assert!(!p.servers.is_empty());
                prop_assert!(p.servers.iter().all(|s| s.weight >= 1));
            }
            let lim = &l.config.limits;
            prop_assert!(lim.max_header_size >= 1024 && lim.max_header_count >= 1);
        }
    }
}

/// Path pieces that exercise normalization: dots (plain and encoded),
/// slashes, encoded slashes and backslashes, bad escapes, NUL, non-ASCII.
fn path_piece() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "/", "//", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2f", "%2F", "%5c", "%5C", "\\",
        "%00", "%", "%2", "%zz", "%+1", "%-1", "%41", "%75", "%7E", "%25", "%20", "a", "b", "api",
        "users", "orders", "static", "~", "é", "x?y", ";", "\0",
    ])
    .prop_map(str::to_string)
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(path_piece(), 0..12).prop_map(|v| format!("/{}", v.concat()))
}

fn prefixes() -> impl Strategy<Value = Vec<(String, bool)>> {
    let seg = prop::sample::select(vec!["api", "users", "orders", "a", "b", "static", "~", "é"]);
    let prefix = prop::collection::vec(seg, 0..4).prop_map(|v| format!("/{}", v.join("/")));
    prop::collection::vec((prefix, any::<bool>()), 0..6)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn routing_matches_the_reference_model(routes in prefixes(), path in path()) {
        let table = route_model::table(&routes);
        if let Err(e) = route_model::check(&table, &path) {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn routing_matches_the_model_on_arbitrary_text(routes in prefixes(), path in "/\\PC{0,40}") {
        let table = route_model::table(&routes);
        if let Err(e) = route_model::check(&table, &path) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// A least_conn pool over `weights` (servers 127.0.0.1:1, :2, ...).
fn pool(weights: &[u32]) -> Pool {
    let mut doc = "pools:\n  p:\n    max_fails: 0\n    servers:\n".to_string();
    for (i, w) in weights.iter().enumerate() {
        doc.push_str(&format!(
            "      - {{ addr: \"127.0.0.1:{}\", weight: {w} }}\n",
            i + 1
        ));
    }
    let cfg = from_str(&doc, &|_| None).unwrap().config.pools.remove(0);
    Pool::new(cfg, &HashMap::new())
}

#[derive(Debug, Clone)]
enum Step {
    /// Start an attempt (the pool picks the server).
    Acquire,
    /// Finish the outstanding attempt at this index (modulo), as a success
    /// or a failure, or by dropping it unsettled.
    Release(usize, u8),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            3 => Just(Step::Acquire),
            2 => (any::<usize>(), 0u8..3).prop_map(|(i, how)| Step::Release(i, how)),
        ],
        1..300,
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn least_conn_counts_and_choices_hold_over_random_interleavings(
        weights in prop::collection::vec(1u32..6, 1..6),
        steps in steps(),
    ) {
        let p = pool(&weights);
        let index: HashMap<SocketAddr, usize> =
            p.servers.iter().enumerate().map(|(i, s)| (s.addr, i)).collect();
        let mut outstanding: Vec<InFlight> = Vec::new();
        for step in steps {
            match step {
                Step::Acquire => {
                    let before: Vec<u64> = p.servers.iter().map(|s| s.in_flight() as u64).collect();
                    let a = p.select(&[]).expect("no max_conns, nothing failed: always a server");
                    let i = index[&a.server().addr];
                    // The pick is a least loaded one: load_i/w_i <= load_j/w_j.
                    for (j, s) in p.servers.iter().enumerate() {
                        prop_assert!(
                            before[i] * s.weight() as u64 <= before[j] * p.servers[i].weight() as u64,
                            "picked {} (in_flight {}, weight {}) over {} (in_flight {}, weight {})",
                            i, before[i], p.servers[i].weight(), j, before[j], s.weight()
                        );
                    }
                    outstanding.push(a);
                }
                Step::Release(k, how) => {
                    if outstanding.is_empty() {
                        continue;
                    }
                    let mut a = outstanding.swap_remove(k % outstanding.len());
                    match how {
                        0 => a.succeed(),
                        1 => a.fail(false),
                        _ => {}
                    }
                    drop(a);
                }
            }
            // Counts equal the attempts outstanding (so never negative).
            for (i, s) in p.servers.iter().enumerate() {
                let held = outstanding.iter().filter(|a| index[&a.server().addr] == i).count();
                prop_assert_eq!(s.in_flight(), held, "server {}", i);
            }
        }
        drop(outstanding);
        prop_assert!(p.servers.iter().all(|s| s.in_flight() == 0));
    }

    #[test]
    fn sequential_least_conn_follows_the_weights_exactly(
        weights in prop::collection::vec(1u32..8, 1..6),
        rounds in 1usize..20,
    ) {
        let p = pool(&weights);
        let total: u32 = weights.iter().sum();
        let mut counts = vec![0usize; weights.len()];
        for _ in 0..rounds * total as usize {
            let mut a = p.select(&[]).unwrap();
            let i = p.servers.iter().position(|s| s.addr == a.server().addr).unwrap();
            counts[i] += 1;
            a.succeed();
        }
        let want: Vec<usize> = weights.iter().map(|w| *w as usize * rounds).collect();
        prop_assert_eq!(counts, want);
    }
}

#[test]
fn least_conn_counts_return_to_zero_under_threads() {
    let p = std::sync::Arc::new(pool(&[1, 2, 3]));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let p = std::sync::Arc::clone(&p);
            std::thread::spawn(move || {
                let mut held: Vec<InFlight> = Vec::new();
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ t;
                for _ in 0..20_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if x % 5 < 3 || held.is_empty() {
                        held.push(p.select(&[]).unwrap());
                    } else {
                        let a = held.swap_remove((x as usize / 5) % held.len());
                        drop(a);
                    }
                    // Never "negative" (an underflow would wrap to a huge number).
                    assert!(p.servers.iter().all(|s| s.in_flight() <= 4 * 20_000));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(p.servers.iter().all(|s| s.in_flight() == 0));
    assert!(p.servers.iter().all(|s| s.requests() > 0));
}
