//! Headless Chromium driven over the DevTools protocol, for page tests.
//!
//! Chromium is started with `--remote-debugging-pipe`: it reads protocol
//! messages from fd 3 and writes to fd 4, each a JSON text ended by a NUL
//! byte, so no WebSocket client is needed. One page target is attached in
//! flattened mode and commands go to its session.

use serde_json::{json, Value};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// Where the browser is looked for (Debian's `chromium` package), unless
/// `FULCRUM_CHROMIUM` names another binary.
pub fn chromium_path() -> PathBuf {
    if let Some(p) = std::env::var_os("FULCRUM_CHROMIUM") {
        return PathBuf::from(p);
    }
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "headless Chromium not found at /usr/bin/chromium: install Debian's package \
         (apt-get install chromium) or set FULCRUM_CHROMIUM to a Chromium binary"
    );
}

/// Flags for a quiet, self-contained headless run.
pub fn base_args(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--mute-audio",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // Move both above the low numbers so that the dup2 calls in the child
    // cannot overwrite one another.
    let high = |fd: RawFd| {
        // SAFETY: fd is a descriptor we own; F_DUPFD_CLOEXEC returns a new one.
        let h = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100) };
        assert!(h >= 100, "fcntl: {}", std::io::Error::last_os_error());
        // SAFETY: fd is ours and no longer used.
        unsafe { libc::close(fd) };
        h
    };
    (high(fds[0]), high(fds[1]))
}

/// A running headless Chromium with one attached page.
pub struct Browser {
    child: Child,
    to_browser: File,
    from_browser: Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: crate::common::TempDir,
    _shared: crate::common::Shared,
}

impl Browser {
    /// Starts Chromium and attaches to a new blank page.
    pub fn start() -> Browser {
        let shared = crate::common::shared();
        let profile = crate::common::TempDir::new("chromium");
        let (cmd_read, cmd_write) = pipe();
        let (resp_read, resp_write) = pipe();
        let mut cmd = Command::new(chromium_path());
        cmd.args(base_args(&profile.0))
            .arg("--remote-debugging-pipe")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(cmd_read, 3) < 0 || libc::dup2(resp_write, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start chromium");
        // SAFETY: the child has its copies; the parent keeps only its ends.
        unsafe {
            libc::close(cmd_read);
            libc::close(resp_write);
        }
        // SAFETY: these descriptors are owned by the Files from here on.
        let to_browser = unsafe { File::from_raw_fd(cmd_write) };
        let mut reader = unsafe { File::from_raw_fd(resp_read) };
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 64 * 1024];
            loop {
                let n = match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg[..msg.len() - 1]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to_browser,
            from_browser: rx,
            next_id: 0,
            session: String::new(),
            _profile: profile,
            _shared: shared,
        };
        let target = b.call_browser("Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = b.call_browser(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        b.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        b.call("Page.enable", json!({}));
        b
    }

    fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        self.try_send(method, params, session)
            .unwrap_or_else(|err| panic!("{method}: {err}"))
    }

    /// Sends a command; `Err` carries the protocol error.
    fn try_send(
        &mut self,
        method: &str,
        params: Value,
        session: Option<String>,
    ) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("{method}: write to chromium: {e}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from_browser
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("{method}: no answer from chromium: {e}"));
            if v["id"] == json!(id) {
                if let Some(err) = v.get("error") {
                    return Err(err.clone());
                }
                return Ok(v["result"].clone());
            }
            // An event: not needed, polling covers what the tests wait for.
        }
    }

    /// A command to the browser itself.
    pub fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// A command to the attached page.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let s = self.session.clone();
        self.send(method, params, Some(s))
    }

    /// Evaluates a JS expression in the page and returns its value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Navigates and waits until the document has loaded.
    pub fn goto(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({ "url": url }));
        assert!(r.get("errorText").is_none(), "navigate {url}: {r}");
        let ok = crate::common::wait_until(Duration::from_secs(30), || {
            self.eval("document.readyState") == json!("complete")
                && self.eval("location.href") == json!(url)
        });
        assert!(ok, "{url} did not load");
    }

    /// Navigates without waiting (for pages where scripts are off and so
    /// `eval` is unavailable).
    pub fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({ "url": url }));
        assert!(r.get("errorText").is_none(), "navigate {url}: {r}");
    }

    /// The serialized DOM, read through the DOM domain (works with scripts
    /// off). Empty while a navigation replaces the document.
    pub fn outer_html(&mut self) -> String {
        let s = Some(self.session.clone());
        let Ok(doc) = self.try_send("DOM.getDocument", json!({ "depth": 0 }), s.clone()) else {
            return String::new();
        };
        let root = doc["root"]["nodeId"].clone();
        match self.try_send("DOM.getOuterHTML", json!({ "nodeId": root }), s) {
            Ok(html) => html["outerHTML"].as_str().unwrap_or_default().to_string(),
            Err(_) => String::new(),
        }
    }

    /// Sets the viewport (CSS pixels), as a phone (`mobile`) or a desktop.
    pub fn viewport(&mut self, width: u32, height: u32, scale: f64, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile }),
        );
    }

    /// Saves a PNG of the page (the whole page when `full`).
    pub fn screenshot(&mut self, path: &Path, full: bool) {
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": full }),
        );
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call_browser_quietly();
        crate::common::stop_child(&mut self.child, Duration::from_secs(5));
    }
}

impl Browser {
    fn call_browser_quietly(&mut self) -> std::io::Result<()> {
        self.next_id += 1;
        let msg = json!({ "id": self.next_id, "method": "Browser.close", "params": {} });
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to_browser.write_all(&bytes)
    }
}

/// Standard base64 (with padding), as the protocol sends binary data.
pub fn base64_decode(s: &str) -> Vec<u8> {
    fn val(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c}"),
        }
    }
    let bytes: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for quad in bytes.chunks(4) {
        let pad = quad.iter().filter(|&&b| b == b'=').count();
        let mut n = 0u32;
        for (i, &c) in quad.iter().enumerate() {
            n |= if c == b'=' { 0 } else { val(c) } << (18 - 6 * i);
        }
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    out
}
