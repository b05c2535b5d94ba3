//! nginx (Debian's 1.22, /usr/sbin/nginx) as a real process in front of the
//! recording upstream, configured as an nginx user migrating to fulcrum
//! would have it. Stopped by its pid on drop, also when the test panics.

use crate::common::{free_port, shared, stop_child, Shared, TempDir};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NGINX: &str = "/usr/sbin/nginx";

pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
    _shared: Shared,
}

/// The configuration. Why each line is there:
/// - `master_process off`: one process, the one this test started, so its
///   pid is all there is to stop; it keeps the test's user (root in CI), so
///   the temp dirs it creates under the prefix are writable without `user`.
/// - Host: fulcrum forwards the client's Host field as received (port and
///   letter case included), which is `$http_host`, not `$host` (lowercased,
///   port dropped). A client that sent no Host (HTTP/1.0) gets the server's
///   address instead, as fulcrum is meant to send; plain `$http_host` would
///   send no Host at all then.
/// - `proxy_http_version 1.1` + `Connection ""` + `keepalive 16`: keepalive
///   connections to the upstream, as fulcrum keeps.
/// - The forwarding headers fulcrum always adds.
/// - `proxy_next_upstream error timeout`: fulcrum's default `retry.on`.
/// - `http2` (the HTTP/2 suite): the listener speaks HTTP/2 with prior
///   knowledge (h2c), and a request without a Host field (HTTP/2 carries
///   the host in `:authority`) sends nginx's `$host`, which is that.
fn config(dir: &TempDir, port: u16, upstream: SocketAddr, http2: bool) -> String {
    let (listen, no_host) = if http2 {
        (" http2", "$host")
    } else {
        ("", "$server_addr:$server_port")
    };
    let d = dir.0.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    map $http_host $upstream_host {{
        ""      {no_host};
        default $http_host;
    }}

    upstream recorder {{
        server {upstream};
        keepalive 16;
    }}

    server {{
        listen 127.0.0.1:{port}{listen};
        location / {{
            proxy_pass http://recorder;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $upstream_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"#
    )
}

impl Nginx {
    pub fn start(upstream: SocketAddr) -> Nginx {
        Nginx::start_with(upstream, false)
    }

    /// nginx with an h2c listener (HTTP/2 with prior knowledge).
    pub fn start_h2c(upstream: SocketAddr) -> Nginx {
        Nginx::start_with(upstream, true)
    }

    // The child moves into `Nginx`, whose Drop waits for it.
    #[allow(clippy::zombie_processes)]
    fn start_with(upstream: SocketAddr, http2: bool) -> Nginx {
        assert!(
            std::path::Path::new(NGINX).is_file(),
            "the conformance suite needs nginx: apt-get install nginx (deploy/test.sh does)"
        );
        let shared = shared();
        let dir = TempDir::new("nginx");
        let port = free_port();
        let conf = dir.path("nginx.conf");
        std::fs::write(&conf, config(&dir, port, upstream, http2)).unwrap();
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf)
            // The error log before the config is read (Debian's default is
            // /var/log/nginx/error.log).
            .arg("-e")
            .arg(dir.path("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let mut n = Nginx {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            _shared: shared,
        };
        n.wait_ready();
        n
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited with {status}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nginx did not start listening; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: nginx's fast shutdown.
        stop_child(&mut self.child, Duration::from_secs(3));
    }
}
