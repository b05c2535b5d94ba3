//! `status.path + /ui`: one self-contained HTML page (inline CSS, JS and
//! SVG; nothing loaded from elsewhere). The server renders the full table,
//! so the page is complete without JavaScript; with it, the page polls
//! `/json` every second and redraws the same markup in place.
//!
//! Markup contract (kept by the Rust and the JS renderer alike, and used by
//! the tests): one `section.pool[data-pool]` per pool, one
//! `tr.srv[data-pool][data-server][data-resolved][data-state]` per server
//! with cells `td.c-state` ... `td.c-history`; `body[data-polls]` counts the
//! polls applied.

use super::counters::Snapshot;
use super::{selection_name, server_state};
use crate::clock::now_ms;
use crate::pool::{Pool, Server, HISTORY_LEN};
use crate::runtime::Runtime;
use std::fmt::Write;

/// Width and height of a history chart, in CSS pixels.
const CHART_W: f64 = 120.0;
const CHART_H: f64 = 28.0;

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The requests-per-second chart of one server as inline SVG.
fn chart(history: &[f64], state: &str) -> String {
    let peak = history.iter().copied().fold(0.0_f64, f64::max);
    let scale = peak.max(1.0);
    let step = CHART_W / (HISTORY_LEN - 1) as f64;
    let n = history.len();
    let mut points = String::new();
    for (i, v) in history.iter().enumerate() {
        let x = CHART_W - (n - 1 - i) as f64 * step;
        let y = CHART_H - 1.0 - v / scale * (CHART_H - 3.0);
        let _ = write!(points, "{x:.1},{y:.1} ");
    }
    format!(
        "<svg class=\"spark\" width=\"{CHART_W}\" height=\"{CHART_H}\" viewBox=\"0 0 {CHART_W} {CHART_H}\" \
         data-samples=\"{n}\" role=\"img\" aria-label=\"requests per second, last {HISTORY_LEN} s, peak {peak:.1}\">\
         <title>requests per second, last {HISTORY_LEN} s (peak {peak:.1})</title>\
         <line x1=\"0\" y1=\"{base}\" x2=\"{CHART_W}\" y2=\"{base}\" class=\"axis\"/>\
         <polyline class=\"line st-{state}\" points=\"{}\"/></svg>",
        points.trim_end(),
        base = CHART_H - 0.5,
    )
}

fn server_row(p: &Pool, s: &Server) -> String {
    let state = server_state(s);
    let active = s.active_report();
    let history = s.stats.rate_history();
    let resolved = s.addr.to_string();
    let mut name = esc(&s.name);
    if resolved != s.name {
        let _ = write!(name, " <span class=\"muted\">{}</span>", esc(&resolved));
    }
    if s.is_backup() {
        name.push_str(" <span class=\"tag\">backup</span>");
    }
    if s.weight() != 1 {
        let _ = write!(name, " <span class=\"tag\">weight {}</span>", s.weight());
    }
    let in_flight = match s.max_conns() {
        0 => s.in_flight().to_string(),
        max => format!("{} / {max}", s.in_flight()),
    };
    let error = if p.config.health_check.is_none() {
        "<span class=\"muted\">no active checks</span>".to_string()
    } else {
        match &active.last_error {
            Some(e) if !active.healthy => format!("<span class=\"err\">{}</span>", esc(e)),
            Some(e) => format!("<span class=\"muted\">{} (recovered)</span>", esc(e)),
            None => "<span class=\"muted\">none</span>".to_string(),
        }
    };
    let kinds = s.stats.failures_by_kind();
    let warming = match s.warmth(now_ms()) / 10 {
        100.. => String::new(),
        percent => format!(
            " <span class=\"tag warming\" title=\"slow start: {percent}% of its weight\">warming {percent}%</span>"
        ),
    };
    format!(
        "<tr class=\"srv st-{state}\" data-pool=\"{pool}\" data-server=\"{server}\" data-resolved=\"{resolved}\" data-state=\"{state}\">\
         <td class=\"c-server\" data-label=\"Server\"><span class=\"name\">{name}</span></td>\
         <td class=\"c-state\" data-label=\"State\"><span class=\"badge st-{state}\">{state}</span>{warming}</td>\
         <td class=\"c-inflight num\" data-label=\"In flight\">{in_flight}</td>\
         <td class=\"c-rps num\" data-label=\"Req/s\">{rps:.1}</td>\
         <td class=\"c-requests num\" data-label=\"Requests\">{requests}</td>\
         <td class=\"c-failures num\" data-label=\"Failures\" title=\"connect {k0}, timeout {k1}, invalid {k2}, status {k3}\">{failures}</td>\
         <td class=\"c-error\" data-label=\"Last check error\">{error}</td>\
         <td class=\"c-history\" data-label=\"Req/s, last {HISTORY_LEN} s\">{chart}</td></tr>",
        pool = esc(p.name()),
        server = esc(&s.name),
        resolved = esc(&resolved),
        rps = s.stats.requests_per_second(),
        requests = s.requests(),
        failures = s.failures(),
        k0 = kinds[0],
        k1 = kinds[1],
        k2 = kinds[2],
        k3 = kinds[3],
        chart = chart(&history, state),
    )
}

fn pool_section(p: &Pool) -> String {
    let rows: String = p.servers.iter().map(|s| server_row(p, s)).collect();
    format!(
        "<section class=\"pool\" data-pool=\"{name}\"><h2>{name} <span class=\"muted\">{sel} · {n} servers · {usable} usable{queue}</span></h2>\
         <table><thead><tr><th>Server</th><th>State</th><th class=\"num\">In flight</th><th class=\"num\">Req/s</th>\
         <th class=\"num\">Requests</th><th class=\"num\">Failures</th><th>Last check error</th><th>Req/s, last {HISTORY_LEN} s</th></tr></thead>\
         <tbody>{rows}</tbody></table></section>",
        name = esc(p.name()),
        sel = selection_name(p),
        n = p.servers.len(),
        usable = p.usable_count(),
        queue = p.queue().map_or(String::new(), |q| {
            let r = q.report();
            format!(" · <span class=\"queue\">queue {} / {}</span>", r.length, r.size)
        }),
    )
}

/// The page for the current runtime.
pub fn render(rt: &Runtime, conns: &Snapshot) -> String {
    let pools: String = rt.pools.iter().map(|p| pool_section(p)).collect();
    // A JSON string literal is a JS string literal; `</` must not end the script.
    let json_url = serde_json::to_string(&format!("{}/json", rt.config.status.path))
        .unwrap_or_else(|_| "\"json\"".into())
        .replace("</", "<\\/");
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>fulcrum status</title><noscript><meta http-equiv=\"refresh\" content=\"10\"></noscript>\
         <style>{STYLE}</style></head>\
         <body data-polls=\"0\"><header><h1>fulcrum</h1>\
         <span id=\"summary\">generation {generation} · {active} active connections · {requests} requests</span>\
         <span id=\"live\" class=\"live static\">static view, refreshed every 10 s</span></header>\
         <main id=\"pools\">{pools}</main>\
         <footer>States: <span class=\"badge st-up\">up</span> <span class=\"badge st-failed\">failed</span> (passive: max_fails) \
         <span class=\"badge st-unhealthy\">unhealthy</span> (active checks) <span class=\"badge st-draining\">draining</span> \
         <span class=\"badge st-down\">down</span> (config). Data: <a href=\"json\">json</a> · <a href=\"metrics\">metrics</a></footer>\
         <script>const JSON_URL = {json_url}, HISTORY_LEN = {HISTORY_LEN};\n{SCRIPT}</script></body></html>\n",
        generation = rt.generation,
        active = conns.active,
        requests = conns.requests,
    )
}

const STYLE: &str = r#"
:root{--up:#1a7f37;--failed:#bc4c00;--unhealthy:#cf222e;--draining:#0969da;--down:#6e7781;--fg:#1f2328;--muted:#656d76;--line:#d0d7de}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:#f6f8fa}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:4px 20px;padding:10px 16px;background:#24292f;color:#fff}
h1{margin:0;font-size:18px}
#summary{color:#d0d7de}
.live{margin-left:auto;font-size:12px;color:#d0d7de}
.live::before{content:"";display:inline-block;width:8px;height:8px;margin-right:6px;border-radius:50%;background:#8c959f}
.live.on::before{background:#2da44e}
.live.off::before{background:#cf222e}
main{max-width:1200px;margin:0 auto;padding:12px}
section.pool{margin:0 0 16px;background:#fff;border:1px solid var(--line);border-radius:6px;overflow:hidden}
h2{margin:0;padding:8px 12px;font-size:15px;background:#f6f8fa;border-bottom:1px solid var(--line)}
h2 .muted{font-weight:400;font-size:13px}
table{width:100%;border-collapse:collapse;table-layout:fixed}
th,td{padding:6px 10px;text-align:left;vertical-align:middle;border-bottom:1px solid var(--line);overflow-wrap:anywhere}
th:nth-child(2){width:112px}th:nth-child(3),th:nth-child(4),th:nth-child(6){width:84px}th:nth-child(5){width:96px}
th:nth-child(7){width:22%}th:nth-child(8){width:150px}
tbody tr:last-child td{border-bottom:0}
th{font-size:12px;color:var(--muted);font-weight:600}
.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:var(--muted)}
.err{color:var(--unhealthy);word-break:break-word}
.tag{display:inline-block;padding:0 6px;border:1px solid var(--line);border-radius:8px;font-size:11px;color:var(--muted)}
.tag.warming{margin-left:4px;border-color:var(--draining);color:var(--draining)}
.badge{display:inline-block;min-width:74px;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600;text-align:center}
.badge.st-up{background:var(--up)}.badge.st-failed{background:var(--failed)}.badge.st-unhealthy{background:var(--unhealthy)}
.badge.st-draining{background:var(--draining)}.badge.st-down{background:var(--down)}
tr.srv td:first-child{border-left:4px solid transparent}
tr.st-up td:first-child{border-left-color:var(--up)}tr.st-failed td:first-child{border-left-color:var(--failed)}
tr.st-unhealthy td:first-child{border-left-color:var(--unhealthy)}tr.st-draining td:first-child{border-left-color:var(--draining)}
tr.st-down td:first-child{border-left-color:var(--down)}
svg.spark{display:block}
svg.spark .axis{stroke:var(--line);stroke-width:1}
svg.spark polyline{fill:none;stroke-width:1.5;stroke:var(--up)}
svg.spark .st-failed{stroke:var(--failed)}svg.spark .st-unhealthy{stroke:var(--unhealthy)}
svg.spark .st-draining{stroke:var(--draining)}svg.spark .st-down{stroke:var(--down)}
footer{max-width:1200px;margin:0 auto;padding:0 16px 16px;font-size:12px;color:var(--muted)}
footer .badge{min-width:0}
@media (max-width:720px){
 thead{display:none}
 table,tbody,tr,td{display:block;width:100%}
 tr.srv{border-bottom:1px solid var(--line);border-left:4px solid transparent;padding:4px 0}
 tr.st-up{border-left-color:var(--up)}tr.st-failed{border-left-color:var(--failed)}tr.st-unhealthy{border-left-color:var(--unhealthy)}
 tr.st-draining{border-left-color:var(--draining)}tr.st-down{border-left-color:var(--down)}
 tr.srv td:first-child{border-left:0}
 td{display:flex;justify-content:space-between;align-items:center;gap:12px;padding:3px 12px;border:0;text-align:right}
 td::before{content:attr(data-label);color:var(--muted);font-size:12px;font-weight:600;text-align:left}
 td.c-server{font-weight:600}
 .live{margin-left:0}
}
"#;

const SCRIPT: &str = r#"
(function () {
  "use strict";
  var W = 120, H = 28;
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function chart(h, state) {
    var peak = 0, i;
    for (i = 0; i < h.length; i++) peak = Math.max(peak, h[i]);
    var scale = Math.max(peak, 1), step = W / (HISTORY_LEN - 1), pts = [];
    for (i = 0; i < h.length; i++) {
      var x = W - (h.length - 1 - i) * step, y = H - 1 - h[i] / scale * (H - 3);
      pts.push(x.toFixed(1) + "," + y.toFixed(1));
    }
    return '<svg class="spark" width="' + W + '" height="' + H + '" viewBox="0 0 ' + W + ' ' + H +
      '" data-samples="' + h.length + '" role="img" aria-label="requests per second, last ' + HISTORY_LEN +
      ' s, peak ' + peak.toFixed(1) + '"><title>requests per second, last ' + HISTORY_LEN + ' s (peak ' +
      peak.toFixed(1) + ')</title><line x1="0" y1="' + (H - 0.5) + '" x2="' + W + '" y2="' + (H - 0.5) +
      '" class="axis"/><polyline class="line st-' + state + '" points="' + pts.join(" ") + '"/></svg>';
  }
  function row(p, s) {
    var st = esc(s.state), name = esc(s.addr);
    if (s.resolved !== s.addr) name += ' <span class="muted">' + esc(s.resolved) + "</span>";
    if (s.backup) name += ' <span class="tag">backup</span>';
    if (s.weight !== 1) name += ' <span class="tag">weight ' + s.weight + "</span>";
    var inflight = s.max_conns ? s.in_flight + " / " + s.max_conns : String(s.in_flight);
    var err;
    if (!s.active.enabled) err = '<span class="muted">no active checks</span>';
    else if (s.active.last_error && !s.active.healthy) err = '<span class="err">' + esc(s.active.last_error) + "</span>";
    else if (s.active.last_error) err = '<span class="muted">' + esc(s.active.last_error) + " (recovered)</span>";
    else err = '<span class="muted">none</span>';
    var k = s.failures_by_kind;
    var warming = s.slow_start && s.slow_start.warming ? ' <span class="tag warming" title="slow start: ' +
      s.slow_start.percent + '% of its weight">warming ' + s.slow_start.percent + "%</span>" : "";
    return '<tr class="srv st-' + st + '" data-pool="' + esc(p.name) + '" data-server="' + esc(s.addr) +
      '" data-resolved="' + esc(s.resolved) + '" data-state="' + st + '">' +
      '<td class="c-server" data-label="Server"><span class="name">' + name + "</span></td>" +
      '<td class="c-state" data-label="State"><span class="badge st-' + st + '">' + st + "</span>" + warming + "</td>" +
      '<td class="c-inflight num" data-label="In flight">' + inflight + "</td>" +
      '<td class="c-rps num" data-label="Req/s">' + s.requests_per_second.toFixed(1) + "</td>" +
      '<td class="c-requests num" data-label="Requests">' + s.requests + "</td>" +
      '<td class="c-failures num" data-label="Failures" title="connect ' + k.connect + ", timeout " + k.timeout +
      ", invalid " + k.invalid + ", status " + k.status + '">' + s.failures + "</td>" +
      '<td class="c-error" data-label="Last check error">' + err + "</td>" +
      '<td class="c-history" data-label="Req/s, last ' + HISTORY_LEN + ' s">' + chart(s.history, st) + "</td></tr>";
  }
  function section(p) {
    var rows = p.servers.map(function (s) { return row(p, s); }).join("");
    return '<section class="pool" data-pool="' + esc(p.name) + '"><h2>' + esc(p.name) + ' <span class="muted">' +
      esc(p.selection) + " · " + p.servers.length + " servers · " + p.usable + " usable" +
      (p.queue ? ' · <span class="queue">queue ' + p.queue.length + " / " + p.queue.size + "</span>" : "") +
      "</span></h2>" +
      '<table><thead><tr><th>Server</th><th>State</th><th class="num">In flight</th><th class="num">Req/s</th>' +
      '<th class="num">Requests</th><th class="num">Failures</th><th>Last check error</th><th>Req/s, last ' +
      HISTORY_LEN + " s</th></tr></thead><tbody>" + rows + "</tbody></table></section>";
  }
  var polls = 0, live = document.getElementById("live");
  function show(d) {
    document.getElementById("pools").innerHTML = d.pools.map(section).join("");
    document.getElementById("summary").textContent = "generation " + d.generation + " · " +
      d.connections.active + " active connections · " + d.connections.requests + " requests";
    polls += 1;
    document.body.setAttribute("data-polls", String(polls));
    live.className = "live on";
    live.textContent = "live · updated " + new Date().toLocaleTimeString();
  }
  function poll() {
    fetch(JSON_URL, { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(show)
      .catch(function (e) {
        live.className = "live off";
        live.textContent = "disconnected (" + e.message + "), retrying";
      })
      .then(function () { setTimeout(poll, 1000); });
  }
  live.className = "live on";
  live.textContent = "live";
  poll();
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_charts() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let svg = chart(&[0.0, 2.0, 4.0], "up");
        assert!(svg.contains("data-samples=\"3\""), "{svg}");
        assert!(
            svg.contains("points=\"115.9,27.0 118.0,14.5 120.0,2.0\""),
            "{svg}"
        );
        assert!(chart(&[], "down").contains("points=\"\""));
    }
}
