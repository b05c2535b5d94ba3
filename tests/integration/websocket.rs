//! WebSocket through fulcrum, between a client and a server we did not
//! write: Python's `websockets` library on both sides (websocket/ws.py).
//! The client's upgrade goes through a plain listener to an echo server:
//! text, a 1 MB message, binary, a message after 2 s idle, and a clean
//! close (code 1000). nginx needs `proxy_set_header Upgrade/Connection`
//! for this; fulcrum passes the handshake on by itself (docs/behaviour.md).

use crate::common::{one_pool, repo_path, run_bounded, Fulcrum, PyServer};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

#[test]
fn a_websocket_echoes_through_fulcrum_and_closes_cleanly() {
    let script = repo_path("tests/integration/websocket/ws.py");
    let server = PyServer::start(&script, &[], "the websockets echo server", "websockets");
    let f = Fulcrum::start(&format!(
        "access_log: off\n{}",
        one_pool("ws", "/chat", &[server.addr], "")
    ));
    let out = run_bounded(
        Command::new("python3")
            .arg(&script)
            .arg("client")
            .arg(format!("ws://{}/chat/room", f.addr)),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "ws.py client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["echoes"],
        serde_json::json!([true, true, true, true]),
        "text, 1 MB, binary, after a pause: {report}"
    );
    assert_eq!(report["close_code"], 1000, "{report}");
}
