//! The live status page (`status.path + /ui`) in a real browser: headless
//! Chromium (Debian's `chromium` package) driven over the DevTools protocol.
//!
//! - every pool and server is listed with the health the JSON status gives,
//!   in text and colour;
//! - a server that turns unhealthy while the page is open changes state on
//!   the page without a reload (a marker set in the page survives);
//! - requests per second and the history chart fill in from live traffic;
//! - on a phone-sized viewport nothing overflows sideways;
//! - with JavaScript disabled the server-rendered table is complete.
//!
//! Screenshots go to `target/test-output/` (with FULCRUM_UPDATE_SCREENSHOT=1
//! the desktop one is also copied to `deploy/ui-screenshot.png` for docs/operations.md).

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "ui-test-token";

fn output_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    target.join("test-output")
}

/// Colours of the state badges (the page's CSS variables).
fn badge_colour(state: &str) -> &'static str {
    match state {
        "up" => "rgb(26, 127, 55)",
        "failed" => "rgb(188, 76, 0)",
        "unhealthy" => "rgb(207, 34, 46)",
        "draining" => "rgb(9, 105, 218)",
        "down" => "rgb(110, 119, 129)",
        other => panic!("unknown state {other}"),
    }
}

/// Each server row of the page as the browser sees it.
const ROWS_JS: &str = r#"JSON.stringify(Array.from(document.querySelectorAll("tr.srv")).map(function (r) {
  var badge = r.querySelector(".c-state .badge");
  var svg = r.querySelector(".c-history svg");
  return {
    pool: r.dataset.pool, server: r.dataset.server, state: r.dataset.state,
    section: r.closest("section.pool").dataset.pool,
    badge: badge.textContent, colour: getComputedStyle(badge).backgroundColor,
    visible: badge.getBoundingClientRect().width > 0,
    rps: parseFloat(r.querySelector(".c-rps").textContent),
    requests: parseInt(r.querySelector(".c-requests").textContent, 10),
    failures: parseInt(r.querySelector(".c-failures").textContent, 10),
    error: r.querySelector(".c-error").textContent,
    samples: parseInt(svg.dataset.samples, 10),
    points: svg.querySelector("polyline").getAttribute("points").trim().split(/\s+/).filter(Boolean).length
  };
}))"#;

fn rows(b: &mut cdp::Browser) -> Vec<Value> {
    let text = b.eval(ROWS_JS);
    serde_json::from_str(text.as_str().expect("rows JSON")).unwrap()
}

/// (pool, server) -> state, from the JSON status.
fn expected_states(f: &Fulcrum) -> BTreeMap<(String, String), String> {
    let doc = f.status_json();
    let mut out = BTreeMap::new();
    for p in doc["pools"].as_array().unwrap() {
        for s in p["servers"].as_array().unwrap() {
            out.insert(
                (
                    p["name"].as_str().unwrap().to_string(),
                    s["addr"].as_str().unwrap().to_string(),
                ),
                s["state"].as_str().unwrap().to_string(),
            );
        }
    }
    out
}

fn page_states(rows: &[Value]) -> BTreeMap<(String, String), String> {
    rows.iter()
        .map(|r| {
            (
                (
                    r["pool"].as_str().unwrap().to_string(),
                    r["server"].as_str().unwrap().to_string(),
                ),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Requests to both pools every 40ms until stopped (at most 60 s).
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(f: &Fulcrum) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = f.addr;
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                let _ = try_request(addr, "GET", &format!("/api/users/{i}"), &[], b"");
                if i.is_multiple_of(2) {
                    let _ = try_request(addr, "GET", &format!("/api/orders/{i}"), &[], b"");
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_two_pools() -> (Backends, Fulcrum) {
    let b = Backends::start(&["u1", "u2", "o1", "o2"], &[]);
    let conf = format!(
        r#"status:
  path: /nginx-status
  allow: ["127.0.0.1/32"]
  admin_token: "{TOKEN}"
pools:
  users:
    health_check: {{ type: http, path: /health, interval: 200ms, timeout: 1s, rise: 1, fall: 1 }}
    servers:
      - addr: "{u1}"
      - addr: "{u2}"
  orders:
    health_check: {{ type: http, path: /health, interval: 200ms, timeout: 1s, rise: 1, fall: 1 }}
    servers:
      - addr: "{o1}"
        weight: 2
      - addr: "{o2}"
routes:
  - {{ prefix: /api/users, pool: users }}
  - {{ prefix: /api/orders, pool: orders }}
"#,
        u1 = b.addr("u1"),
        u2 = b.addr("u2"),
        o1 = b.addr("o1"),
        o2 = b.addr("o2"),
    );
    let f = Fulcrum::start(&conf);
    (b, f)
}

#[test]
fn page_lists_every_server_and_follows_health_live() {
    let (b, f) = start_two_pools();
    let url = format!("http://{}/nginx-status/ui", f.addr);
    // Some traffic before the page opens, and all along.
    for i in 0..20 {
        assert_eq!(f.get(&format!("/api/users/{i}")).status, 200);
        assert_eq!(f.get(&format!("/api/orders/{i}")).status, 200);
    }
    let _traffic = Traffic::start(&f);
    // An operator drains o2: the page must show it.
    let o2 = b.addr("o2").to_string();
    let r = request(
        f.addr,
        "POST",
        &format!("/nginx-status/servers/orders/{o2}/drain"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);

    let mut br = cdp::Browser::start();
    br.viewport(1280, 720, 1.0, false);
    br.goto(&url);
    // The page has polled /json at least twice.
    assert!(
        wait_until(Duration::from_secs(30), || {
            br.eval("parseInt(document.body.dataset.polls, 10)")
                .as_i64()
                .unwrap_or(0)
                >= 2
        }),
        "the page never applied a poll of /json"
    );

    // Every pool and server, with the health the JSON status gives.
    let sections = br.eval(
        "JSON.stringify(Array.from(document.querySelectorAll('section.pool')).map(function (s) { return s.dataset.pool; }))",
    );
    assert_eq!(sections.as_str(), Some(r#"["users","orders"]"#));
    let expect = expected_states(&f);
    assert_eq!(expect.len(), 4);
    assert_eq!(expect[&("orders".into(), o2.clone())], "draining");
    let rows0 = rows(&mut br);
    assert_eq!(page_states(&rows0), expect, "page rows: {rows0:#?}");
    for r in &rows0 {
        let state = r["state"].as_str().unwrap();
        assert_eq!(r["badge"], state, "badge text");
        assert_eq!(r["colour"], badge_colour(state), "badge colour of {r}");
        assert_eq!(r["section"], r["pool"]);
        assert!(r["visible"].as_bool().unwrap());
    }

    // Mark this document: a reload or navigation would lose the marker.
    br.eval("window.__fulcrumMarker = 'same-document'; 1");
    let polls_before = br.eval("parseInt(document.body.dataset.polls, 10)");

    // u2 turns unhealthy while the page is open.
    let u2 = b.addr("u2").to_string();
    b.control("u2", "/__control/health?fail=1");
    let mut last = vec![];
    let changed = wait_until(Duration::from_secs(30), || {
        last = rows(&mut br);
        last.iter().any(|r| {
            r["server"] == u2.as_str()
                && r["state"] == "unhealthy"
                && r["badge"] == "unhealthy"
                && r["colour"] == badge_colour("unhealthy")
                && r["error"]
                    .as_str()
                    .is_some_and(|e| !e.is_empty() && e != "none")
        })
    });
    assert!(changed, "u2 never showed unhealthy on the page: {last:#?}");
    assert_eq!(
        br.eval("window.__fulcrumMarker"),
        "same-document",
        "the page was reloaded instead of updated in place"
    );
    assert!(
        br.eval("parseInt(document.body.dataset.polls, 10)")
            .as_i64()
            .unwrap()
            > polls_before.as_i64().unwrap()
    );
    assert_eq!(f.server_state("users", b.addr("u2")), "unhealthy");

    // Live traffic shows as requests per second and in the history chart
    // (the sampler takes one point per second).
    let mut last = vec![];
    let charted = wait_until(Duration::from_secs(30), || {
        last = rows(&mut br);
        last.iter().any(|r| {
            r["server"] == b.addr("u1").to_string().as_str()
                && r["rps"].as_f64().unwrap_or(0.0) > 0.0
                && r["samples"].as_i64().unwrap_or(0) >= 3
                && r["points"] == r["samples"]
        })
    });
    assert!(charted, "no live rate/chart for u1: {last:#?}");
    for r in &last {
        assert!(r["requests"].as_i64().is_some() && r["failures"].as_i64().is_some());
    }

    let dir = output_dir();
    let desktop = dir.join("ui.png");
    br.screenshot(&desktop, true);
    if std::env::var_os("FULCRUM_UPDATE_SCREENSHOT").is_some() {
        std::fs::copy(&desktop, repo_path("deploy/ui-screenshot.png")).unwrap();
    }

    // A phone: the table turns into cards, nothing overflows sideways.
    br.viewport(390, 844, 2.0, true);
    br.goto(&url);
    assert!(wait_until(Duration::from_secs(30), || {
        br.eval("parseInt(document.body.dataset.polls, 10)")
            .as_i64()
            .unwrap_or(0)
            >= 1
    }));
    assert_eq!(
        br.eval("document.querySelector('meta[name=viewport]').content"),
        "width=device-width, initial-scale=1"
    );
    assert_eq!(br.eval("window.innerWidth"), 390);
    let overflow = br.eval("document.documentElement.scrollWidth - window.innerWidth");
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "page is wider than the phone by {overflow}px"
    );
    assert_eq!(
        br.eval("getComputedStyle(document.querySelector('thead')).display"),
        "none"
    );
    assert_eq!(rows(&mut br).len(), 4);
    br.screenshot(&dir.join("ui-phone.png"), true);
}

/// Rows of the server-rendered table: (pool, server, state, badge text).
fn static_rows(html: &str) -> Vec<(String, String, String, String)> {
    let re = regex::Regex::new(
        r#"<tr class="srv st-(\w+)" data-pool="([^"]*)" data-server="([^"]*)" data-resolved="[^"]*" data-state="(\w+)">.*?<span class="badge st-\w+">(\w+)</span>"#,
    )
    .unwrap();
    re.captures_iter(html)
        .map(|c| {
            assert_eq!(&c[1], &c[4], "class and data-state agree");
            (
                c[2].to_string(),
                c[3].to_string(),
                c[4].to_string(),
                c[5].to_string(),
            )
        })
        .collect()
}

#[test]
fn page_without_javascript_is_a_complete_table() {
    let (b, f) = start_two_pools();
    for i in 0..10 {
        assert_eq!(f.get(&format!("/api/users/{i}")).status, 200);
    }
    b.control("o1", "/__control/health?fail=1");
    assert!(wait_until(Duration::from_secs(10), || {
        f.server_state("orders", b.addr("o1")) == "unhealthy"
    }));
    let expect = expected_states(&f);

    // The HTML as served.
    let r = f.get("/nginx-status/ui");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(
        !r.body.contains("src=") && !r.body.contains("<link") && !r.body.contains("@import"),
        "the page must not load anything from elsewhere"
    );
    let served = static_rows(&r.body);

    // The DOM Chromium builds with JavaScript off.
    let mut br = cdp::Browser::start();
    br.call(
        "Emulation.setScriptExecutionDisabled",
        serde_json::json!({ "value": true }),
    );
    br.viewport(1280, 720, 1.0, false);
    br.navigate(&format!("http://{}/nginx-status/ui", f.addr));
    let mut dom = String::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            dom = br.outer_html();
            dom.contains("</footer>")
        }),
        "the page did not load: {dom}"
    );
    // Give a script, were it to run, time to apply a poll (1 s period).
    std::thread::sleep(Duration::from_millis(2500));
    dom = br.outer_html();
    assert!(
        dom.contains("data-polls=\"0\""),
        "scripts ran although disabled"
    );
    assert!(dom.contains("static view"));
    br.screenshot(&output_dir().join("ui-nojs.png"), true);
    let shown = static_rows(&dom);
    assert_eq!(shown, served, "the browser shows what the server rendered");
    let got: BTreeMap<(String, String), String> = shown
        .iter()
        .map(|(p, s, st, badge)| {
            assert_eq!(st, badge);
            ((p.clone(), s.clone()), st.clone())
        })
        .collect();
    assert_eq!(got, expect);
    assert_eq!(
        got[&("orders".into(), b.addr("o1").to_string())],
        "unhealthy"
    );
    // Every column is there for every server (the script's templates left out).
    let dom = &dom[..dom.find("<script").expect("the page has its script")];
    for col in [
        "c-server",
        "c-state",
        "c-inflight",
        "c-rps",
        "c-requests",
        "c-failures",
        "c-error",
        "c-history",
    ] {
        assert_eq!(
            dom.matches(&format!("class=\"{col}")).count(),
            4,
            "column {col}"
        );
    }
    assert_eq!(dom.matches("<svg class=\"spark\"").count(), 4);
}
