//! Smoke test of the benchmark harness (deploy/bench/run.sh): a --quick run
//! must produce BENCHMARKS.md with a row of numbers for every contender of
//! every scenario, no errors and a rate above zero in every load row, and
//! the chart. It checks that the harness works, not how fast anything is
//! (no timed assertions). It loads every core, so it runs alone.
//!
//! nginx, haproxy, wrk, h2load (nghttp2-client), openssl and cc must be
//! installed (CI installs them in deploy/test.sh); a machine without them
//! fails this test rather than silently skipping it.

use crate::common::alone;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the harness's tools may live (nginx is in /usr/sbin on Debian).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The cells of the table row for `label` in the section whose heading
/// starts with `section`.
fn row<'a>(md: &'a str, section: &str, label: &str) -> Vec<&'a str> {
    let start = md
        .find(&format!("## {section}"))
        .unwrap_or_else(|| panic!("no section {section:?} in BENCHMARKS.md:\n{md}"));
    let body = &md[start + 3..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let line = body
        .lines()
        .find(|l| l.starts_with(&format!("| {label} |")))
        .unwrap_or_else(|| panic!("no row {label:?} in section {section:?}:\n{body}"));
    line.trim_matches('|').split('|').map(str::trim).collect()
}

/// A table cell as a number: "12,345", "0.53", "4.20%", "1.23×", "10.6 (backend)".
fn number(cell: &str) -> Option<f64> {
    let first = cell.split_whitespace().next()?;
    first
        .trim_end_matches(['%', '×'])
        .replace(',', "")
        .parse()
        .ok()
}

/// The cells of the header row of the table in the section whose heading
/// starts with `section`.
fn header<'a>(md: &'a str, section: &str) -> Vec<&'a str> {
    row(md, section, "contender")
}

/// The index of the column named `name` in the table of `section`.
fn column(md: &str, section: &str, name: &str) -> usize {
    let head = header(md, section);
    head.iter()
        .position(|c| *c == name)
        .unwrap_or_else(|| panic!("no column {name:?} in section {section:?}: {head:?}"))
}

fn assert_numeric(md: &str, section: &str, label: &str, columns: usize) {
    let cells = row(md, section, label);
    for (i, cell) in cells.iter().enumerate().skip(1).take(columns) {
        assert!(
            number(cell).is_some(),
            "{section:?}, row {label:?}: column {i} is {cell:?}, not a number: {cells:?}"
        );
    }
}

/// Scenarios a) to d) and h) to k): wrk (h2load in k) against each
/// contender; with the heading of the rate column.
const LOAD: [(&str, &str, &[&str]); 8] = [
    (
        "a)",
        "requests/s",
        &[
            "direct to backend",
            "fulcrum",
            "fulcrum, access log on",
            "bare Pingora",
            "nginx",
            "HAProxy",
        ],
    ),
    (
        "b)",
        "requests/s",
        &[
            "direct to backend",
            "fulcrum",
            "bare Pingora",
            "nginx",
            "HAProxy",
        ],
    ),
    (
        "c)",
        "requests/s",
        &[
            "direct to backend",
            "fulcrum",
            "bare Pingora",
            "nginx",
            "HAProxy",
        ],
    ),
    (
        "d)",
        "requests/s",
        &[
            "direct to backend",
            "fulcrum",
            "bare Pingora",
            "nginx",
            "HAProxy",
        ],
    ),
    // TLS 1.3 (issue 26): no direct row (the backend has no TLS).
    ("h)", "requests/s", &TLS_CONTENDERS),
    ("i)", "handshakes/s", &TLS_CONTENDERS),
    ("j)", "handshakes/s", &TLS_CONTENDERS),
    ("k)", "requests/s", &TLS_CONTENDERS),
];
const TLS_CONTENDERS: [&str; 4] = ["fulcrum", "bare Pingora", "nginx", "HAProxy"];
/// Scenario e): idle connections.
const IDLE: [&str; 3] = ["fulcrum", "nginx", "HAProxy"];
/// Scenarios f) and g): one slow backend of two.
const SKEW: [(&str, &[&str]); 2] = [
    (
        "f)",
        &[
            "fulcrum least_conn",
            "fulcrum round_robin",
            "fulcrum ewma",
            "fulcrum ewma, decay 1s",
            "fulcrum p2c",
            "nginx least_conn, 2 workers",
            "HAProxy leastconn, 2 threads",
        ],
    ),
    (
        "g)",
        &[
            "fulcrum least_conn",
            "fulcrum ewma",
            "fulcrum ewma, decay 1s",
            "nginx least_conn, 2 workers",
            "HAProxy leastconn, 2 threads",
        ],
    ),
];

/// Everything the smoke test asks of BENCHMARKS.md.
fn check_report(md: &str) {
    // req/s, p50, p99, p99.9, CPU per 1k requests, peak RSS; requests
    // served and none failed.
    for (section, rate_column, labels) in LOAD {
        let rate = column(md, section, rate_column);
        let errors = column(md, section, "errors");
        for label in labels {
            assert_numeric(md, section, label, 6);
            let cells = row(md, section, label);
            assert!(
                number(cells[rate]).is_some_and(|r| r > 0.0),
                "{section:?}, row {label:?}: {rate_column} is {:?}: {cells:?}",
                cells[rate]
            );
            assert_eq!(
                cells[errors], "0",
                "{section:?}, row {label:?}: errors: {cells:?}"
            );
        }
    }
    // connections, still open, RSS, PSS, RSS before, per connection, peak RSS.
    for label in IDLE {
        assert_numeric(md, "e)", label, 7);
    }
    // share to the slow backend, then (after the fast/slow counts) req/s,
    // p50, p99, p99.9, CPU; requests served.
    for (section, labels) in SKEW {
        let rate = column(md, section, "requests/s");
        for label in labels {
            assert_numeric(md, section, label, 1);
            let cells = row(md, section, label);
            for cell in &cells[3..8] {
                assert!(
                    number(cell).is_some(),
                    "skew row {label:?} in {section}: {cells:?}"
                );
            }
            assert!(
                number(cells[rate]).is_some_and(|r| r > 0.0),
                "skew row {label:?} in {section}: requests/s is {:?}: {cells:?}",
                cells[rate]
            );
        }
    }
}

#[test]
fn quick_run_reports_every_contender() {
    let _alone = alone();
    let missing: Vec<&str> = ["nginx", "haproxy", "wrk", "h2load", "openssl", "cc"]
        .into_iter()
        .filter(|t| find_tool(t).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "the benchmark smoke test needs {missing:?}: apt-get install nginx haproxy wrk \
         nghttp2-client openssl gcc (deploy/test.sh installs them in CI)"
    );

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("fulcrum-bench-smoke-{}", std::process::id()));
    // The binaries cargo just built for the tests: no release build inside a test.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_fulcrum")).parent().unwrap();
    assert!(bin_dir.join("fulcrum-demo-backend").is_file());
    // cargo test builds examples only as test harnesses: build the runnable
    // one the harness's "bare Pingora" row needs (same profile, same dir).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--example",
            "bare_pingora",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .status()
        .expect("run cargo build --example bare_pingora");
    assert!(built.success(), "cargo build --example bare_pingora failed");
    assert!(
        bin_dir.join("examples/bare_pingora").is_file(),
        "no {}",
        bin_dir.join("examples/bare_pingora").display()
    );
    let status = Command::new(root.join("deploy/bench/run.sh"))
        .args(["--quick", "--no-install", "--out"])
        .arg(&out)
        .arg("--bin-dir")
        .arg(bin_dir)
        .status()
        .expect("run deploy/bench/run.sh");
    assert!(
        status.success(),
        "deploy/bench/run.sh --quick failed: {status}"
    );

    let md = std::fs::read_to_string(out.join("BENCHMARKS.md")).expect("BENCHMARKS.md written");
    let png = std::fs::read(out.join("ratios.png")).expect("ratios.png written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "ratios.png is not a PNG"
    );
    assert!(
        md.contains("](ratios.png)"),
        "the chart is not linked:\n{md}"
    );

    check_report(&md);
    let _ = std::fs::remove_dir_all(&out);
}

/// A report as the harness writes it, with every row [`check_report`]
/// looks at; `errors` and `rate` fill fulcrum's row of scenario b).
fn report(errors: &str, rate: &str) -> String {
    let mut md = String::from("# Benchmarks\n");
    for (section, rate_column, labels) in LOAD {
        md.push_str(&format!("\n## {section} Load\n\n| contender | {rate_column} | p50 ms | p99 ms | p99.9 ms | CPU ms per 1k req | of which kernel | peak RSS MB | CPU vs nginx | req/s vs nginx | p99 vs nginx | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"));
        for label in labels {
            let ours = section == "b)" && *label == "fulcrum";
            let (errors, rate) = if ours { (errors, rate) } else { ("0", "1,000") };
            md.push_str(&format!("| {label} | {rate} | 0.1 | 0.2 (0.2 / 0.3) | 0.3 | 20.5 (backend) | 10.1 | 16.6 | 1.00× | 1.00× | 1.00× | {errors} |\n"));
        }
    }
    md.push_str("\n## e) Idle\n\n| contender | connections | still open | RSS MB | PSS MB | RSS before MB | KB per connection | peak RSS MB | RSS vs nginx |\n|---|---|---|---|---|---|---|---|---|\n");
    for label in IDLE {
        md.push_str(&format!(
            "| {label} | 500 | 500 | 34.2 | 32.5 | 14.2 | 2.1 | 34.2 | 1.51× |\n"
        ));
    }
    for (section, labels) in SKEW {
        md.push_str(&format!("\n## {section} Skew\n\n| contender | share to slow backend | fast / slow requests | requests/s | p50 ms | p99 ms | p99.9 ms | CPU ms per 1k req | req/s vs nginx | p99 vs nginx |\n|---|---|---|---|---|---|---|---|---|---|\n"));
        for label in labels {
            md.push_str(&format!("| {label} | 2.27% | 4,272 / 99 | 4,371 | 0.671 | 22.478 | 26.314 | 23.3 | 0.82× | 1.05× |\n"));
        }
    }
    md
}

/// The checks above fail on a report with errors or without requests.
#[test]
fn report_check_rejects_errors_and_a_zero_rate() {
    check_report(&report("0", "1,000"));
    for (errors, rate) in [("3", "1,000"), ("0", "0"), ("0", "—")] {
        let md = report(errors, rate);
        let failed = std::panic::catch_unwind(|| check_report(&md)).is_err();
        assert!(
            failed,
            "errors {errors:?}, requests/s {rate:?} passed the check"
        );
    }
}
