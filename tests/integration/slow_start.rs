//! `slow_start`: a server that becomes usable again takes a share of the
//! traffic that ramps up over the window instead of its full share at once.
//! Measured under steady load with a server killed and restarted (active
//! health brings it back), against the model the docs state: effective
//! weight linear from 1/10 to 1, so with two servers of weight 1 and
//! least_conn its share is f / (1 + f). Without slow_start the same run
//! shows the jump to a half. Plus what the status pages show, and that a
//! process start warms nothing.

use crate::common::lifecycle::{rewrite_config, wait_log, Load, LoadSpec};
use crate::common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The slow_start window of the ramp test.
const WINDOW: Duration = Duration::from_secs(8);
/// Half the width of the measuring window around each point, as a
/// fraction of [`WINDOW`].
const HALF: f64 = 0.1;
/// How far a measured share may be from the model's. least_conn with
/// [`CLIENTS`] requests outstanding keeps a whole number of them on b, the
/// next above its share, so it runs ahead of the model by up to
/// 1/[`CLIENTS`]; the rest is noise.
const TOLERANCE: f64 = 0.07;
/// Clients in the steady load, each with one request outstanding.
const CLIENTS: usize = 16;
/// Backend answer time: it, not CPU, sets the latency, equal on both.
const DELAY_MS: &str = "50";

fn pool(a: SocketAddr, b: SocketAddr, slow_start: &str) -> String {
    format!(
        "access_log: off\n{}",
        pool_with(
            "svc",
            "/",
            &[(a, ""), (b, "")],
            &format!(
                "max_fails: 0\nslow_start: {slow_start}\n\
                 health_check: {{interval: 100ms, timeout: 500ms, rise: 1, fall: 1}}\n"
            ),
        )
    )
}

/// One reading of the JSON status.
struct Sample {
    at: Instant,
    /// Attempts sent to a and to b so far.
    a: u64,
    b: u64,
    b_state: String,
    b_warming: bool,
    b_percent: f64,
}

fn sample(f: &Fulcrum, a: SocketAddr, b: SocketAddr) -> Sample {
    let at = Instant::now();
    let doc = f.status_json();
    let servers = doc["pools"][0]["servers"].as_array().unwrap().clone();
    let find = |addr: SocketAddr| {
        servers
            .iter()
            .find(|s| s["resolved"] == addr.to_string())
            .unwrap()
            .clone()
    };
    let (sa, sb) = (find(a), find(b));
    Sample {
        at,
        a: sa["requests"].as_u64().unwrap(),
        b: sb["requests"].as_u64().unwrap(),
        b_state: sb["state"].as_str().unwrap().to_string(),
        b_warming: sb["slow_start"]["warming"].as_bool().unwrap(),
        b_percent: sb["slow_start"]["percent"].as_f64().unwrap(),
    }
}

/// The model: b's share of the requests at ramp progress `p` (0 to 1)
/// with slow start, or at once without.
fn model(p: f64, slow_start: bool) -> f64 {
    let f = if slow_start {
        0.1 + 0.9 * p.clamp(0.0, 1.0)
    } else {
        1.0
    };
    f / (1.0 + f)
}

/// Runs steady load on two servers, kills b, restarts it on the same port
/// and samples the status until 1.3 windows after b is back. Returns the
/// samples after b came back and the moment its ramp began.
fn restart_under_load(slow_start: &str) -> (Vec<Sample>, Instant) {
    let a_proc = Backends::start(&["a"], &["--delay-ms", DELAY_MS]);
    let mut b_proc = Backends::start(&["b"], &["--delay-ms", DELAY_MS]);
    let (a, b) = (a_proc.addr("a"), b_proc.addr("b"));
    let f = Fulcrum::start(&pool(a, b, slow_start));
    let load = Load::start(
        f.addr,
        LoadSpec {
            keepalive: CLIENTS,
            fresh: 0,
            slow: 0,
            path: "/steady".into(),
            slow_path: String::new(),
            pause: Duration::ZERO,
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    b_proc.kill();
    assert!(
        wait_until(Duration::from_secs(5), || sample(&f, a, b).b_state
            == "unhealthy"),
        "b not found down"
    );
    let b_back = Backends::start_with(&[], &[("b", &b.to_string())], &["--delay-ms", DELAY_MS]);
    let mut samples = vec![];
    let mut began: Option<Instant> = None;
    loop {
        let s = sample(&f, a, b);
        if began.is_none() && s.b_state == "up" {
            began = Some(if s.b_warming {
                // Where in its ramp b is says when the ramp began.
                let progress = (s.b_percent - 10.0) / 90.0;
                s.at - WINDOW.mul_f64(progress.max(0.0))
            } else {
                // No ramp: b was back between the previous reading and this.
                s.at - Duration::from_millis(50)
            });
        }
        let done = began.is_some_and(|t| s.at > t + WINDOW.mul_f64(1.3));
        if began.is_some() {
            samples.push(s);
        }
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = load.stop();
    assert_eq!(
        stats.failed.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "{}",
        stats.summary()
    );
    drop(b_back);
    (samples, began.unwrap())
}

/// b's share of the requests between progress `from` and `to` of the
/// window after `began`, measured and in the model.
fn share(samples: &[Sample], began: Instant, from: f64, to: f64, slow_start: bool) -> (f64, f64) {
    let nearest = |p: f64| {
        let t = began + WINDOW.mul_f64(p.max(0.0));
        samples
            .iter()
            .min_by_key(|s| if s.at > t { s.at - t } else { t - s.at })
            .unwrap()
    };
    let (s0, s1) = (nearest(from), nearest(to));
    let (da, db) = (s1.a - s0.a, s1.b - s0.b);
    let measured = db as f64 / (da + db).max(1) as f64;
    // The model averaged over the same span, as the counts are.
    let p0 = (s0.at.saturating_duration_since(began)).as_secs_f64() / WINDOW.as_secs_f64();
    let p1 = (s1.at.saturating_duration_since(began)).as_secs_f64() / WINDOW.as_secs_f64();
    let steps = 100;
    let expected = (0..steps)
        .map(|i| model(p0 + (p1 - p0) * (i as f64 + 0.5) / steps as f64, slow_start))
        .sum::<f64>()
        / steps as f64;
    assert!(
        da + db > 100,
        "too few requests between {from} and {to}: {da} + {db}"
    );
    (measured, expected)
}

#[test]
fn a_restarted_server_ramps_up_over_slow_start() {
    let (samples, began) = restart_under_load(&format!("{}s", WINDOW.as_secs()));
    let mut report = vec![];
    let mut last = 0.0;
    for q in [0.25, 0.5, 0.75, 1.0] {
        let (measured, expected) = share(&samples, began, q - HALF, q + HALF, true);
        report.push(format!(
            "{:.0}%: {measured:.3} (model {expected:.3})",
            q * 100.0
        ));
        assert!(
            (measured - expected).abs() <= TOLERANCE,
            "b's share around {q} of the window: {measured:.3}, model {expected:.3}; all: {report:?}"
        );
        assert!(measured > last, "not ramping up: {report:?}");
        last = measured;
    }
    eprintln!(
        "slow_start {WINDOW:?}, b's share of requests: {}",
        report.join(", ")
    );
}

#[test]
fn without_slow_start_the_restarted_server_takes_its_full_share_at_once() {
    let (samples, began) = restart_under_load("0s");
    assert!(samples.iter().all(|s| !s.b_warming));
    let (measured, ramp) = {
        let (m, _) = share(&samples, began, 0.25 - HALF, 0.25 + HALF, false);
        (m, model(0.25, true))
    };
    eprintln!(
        "no slow_start: b's share around 25% of the window: {measured:.3} (the ramp's model: {ramp:.3})"
    );
    // The spike that slow start removes: far above the ramp's share, so
    // the ramp test would fail if slow start did nothing.
    assert!(
        measured > ramp + 2.0 * TOLERANCE,
        "b's share {measured:.3} is not the jump to a half"
    );
}

#[test]
fn warming_shows_in_json_metrics_and_ui_and_not_after_a_start() {
    let bk = Backends::start(&["a", "b"], &[]);
    let (a, b) = (bk.addr("a"), bk.addr("b"));
    let body = |servers: &[(SocketAddr, &str)]| {
        format!(
            "access_log: off\n{}",
            pool_with(
                "svc",
                "/",
                servers,
                "slow_start: 60s\nqueue: {size: 10, timeout: 5s}\n",
            )
        )
    };
    let f = Fulcrum::start(&body(&[(a, "")]));
    let s = f.server_status("svc", a);
    assert_eq!(
        (
            &s["slow_start"]["window_ms"],
            &s["slow_start"]["warming"],
            &s["slow_start"]["percent"]
        ),
        (&60_000.into(), &false.into(), &100.into()),
        "a process start warms nothing"
    );
    // A reload adds b: it warms up, a does not.
    rewrite_config(&f, &body(&[(a, ""), (b, "")]));
    signal(f.child.id(), "HUP");
    assert!(wait_log(
        &f.log,
        "generation 2 running",
        Duration::from_secs(10)
    ));
    let sb = f.server_status("svc", b);
    let percent = sb["slow_start"]["percent"].as_u64().unwrap();
    assert_eq!(sb["slow_start"]["warming"], true);
    assert!((10..40).contains(&percent), "{percent}");
    assert_eq!(f.server_status("svc", a)["slow_start"]["warming"], false);
    assert_eq!(sb["state"], "up");
    let metrics = f.get("/nginx-status/metrics").body;
    let value = |name: &str, server: SocketAddr| -> f64 {
        let prefix = format!("{name}{{pool=\"svc\",server=\"{server}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("fulcrum_upstream_warming", b), 1.0);
    assert_eq!(value("fulcrum_upstream_warming", a), 0.0);
    let ratio = value("fulcrum_upstream_weight_ratio", b);
    assert!((0.1..0.4).contains(&ratio), "{ratio}");
    assert_eq!(value("fulcrum_upstream_weight_ratio", a), 1.0);
    let ui = f.get("/nginx-status/ui").body;
    let row = ui
        .split("<tr class=\"srv")
        .find(|r| r.contains(&format!("data-resolved=\"{b}\"")))
        .unwrap();
    assert!(row.contains("class=\"tag warming\""), "{row}");
    assert!(row.contains("% of its weight\">warming "), "{row}");
    // The page's own renderer, after it polled /json, shows the same.
    let mut br = crate::common::cdp::Browser::start();
    br.goto(&format!("http://{}/nginx-status/ui", f.addr));
    assert!(
        wait_until(Duration::from_secs(30), || {
            br.eval("parseInt(document.body.dataset.polls, 10)")
                .as_i64()
                .unwrap_or(0)
                >= 1
        }),
        "the page never applied a poll of /json"
    );
    let seen: serde_json::Value = serde_json::from_str(
        br.eval(&format!(
            "JSON.stringify({{tag: (document.querySelector('tr.srv[data-resolved=\"{b}\"] .tag.warming') || {{}}).textContent || null, \
             tags: document.querySelectorAll('.tag.warming').length, \
             queue: (document.querySelector('section.pool h2 .queue') || {{}}).textContent || null}})"
        ))
        .as_str()
        .unwrap(),
    )
    .unwrap();
    let tag = seen["tag"].as_str().unwrap_or_default();
    assert!(tag.starts_with("warming ") && tag.ends_with('%'), "{seen}");
    assert_eq!(seen["tags"], 1, "only b warms: {seen}");
    assert_eq!(seen["queue"], "queue 0 / 10", "{seen}");
}
