//! Throwaway TLS material for the TLS and HTTP/2 tests, made with the
//! `openssl` command in a scratch directory (nothing private is committed):
//! a CA and leaf certificates it signs, ECDSA P-256. Also a fulcrum started
//! with extra `listen` entries (TLS, h2c), and a process's resident memory.

use super::{free_port, shared, Fulcrum, TempDir, FULCRUM};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A CA in a scratch directory, and the certificates it has signed.
pub struct Pki {
    pub dir: TempDir,
}

/// A certificate and its key, as files.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A new CA named `name` (its subject CN).
    pub fn new(name: &str) -> Pki {
        let pki = Pki {
            dir: TempDir::new("pki"),
        };
        let key = pki.dir.path("ca.key");
        new_key(&key, "EC");
        let ext = pki.dir.path("ca.ext");
        std::fs::write(
            &ext,
            "[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier=hash\n",
        )
        .unwrap();
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            s(&key),
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "30",
            "-config",
            s(&ext),
            "-extensions",
            "v3",
            "-out",
            s(&pki.ca()),
        ]);
        pki
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path("ca.pem")
    }

    /// A server certificate for `cn`, naming `sans` (`DNS:x`, `IP:y`).
    pub fn server(&self, cn: &str, sans: &[&str]) -> Pair {
        let san = format!("subjectAltName={}\n", sans.join(","));
        self.leaf(cn, &format!("{san}extendedKeyUsage=serverAuth\n"), "EC")
    }

    /// As [`Pki::server`], with an RSA 2048 key.
    pub fn server_rsa(&self, cn: &str, sans: &[&str]) -> Pair {
        let san = format!("subjectAltName={}\n", sans.join(","));
        self.leaf(cn, &format!("{san}extendedKeyUsage=serverAuth\n"), "RSA")
    }

    /// A client certificate for `cn`.
    pub fn client(&self, cn: &str) -> Pair {
        self.leaf(cn, "extendedKeyUsage=clientAuth\n", "EC")
    }

    /// `algorithm`: EC (P-256) or RSA (2048 bits).
    fn leaf(&self, cn: &str, ext: &str, algorithm: &str) -> Pair {
        let tag: String = cn
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let key = self.dir.path(&format!("{tag}.key"));
        let csr = self.dir.path(&format!("{tag}.csr"));
        let cert = self.dir.path(&format!("{tag}.pem"));
        let extfile = self.dir.path(&format!("{tag}.ext"));
        new_key(&key, algorithm);
        std::fs::write(
            &extfile,
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 authorityKeyIdentifier=keyid\n{ext}"
            ),
        )
        .unwrap();
        openssl(&[
            "req",
            "-new",
            "-key",
            s(&key),
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            s(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&self.ca()),
            "-CAkey",
            s(&self.dir.path("ca.key")),
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            s(&extfile),
            "-out",
            s(&cert),
        ]);
        Pair { cert, key }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn new_key(path: &Path, algorithm: &str) {
    let option = match algorithm {
        "RSA" => "rsa_keygen_bits:2048",
        _ => "ec_paramgen_curve:P-256",
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        algorithm,
        "-pkeyopt",
        option,
        "-out",
        s(path),
    ]);
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (deploy/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Fulcrum {
    /// Starts fulcrum as [`Fulcrum::start`] does (its plain address is
    /// `addr`, where readiness is probed), with `more` listen entries
    /// after it: each a YAML flow mapping with `{port}` standing for a
    /// fresh port. Returns the process and those ports, in order.
    pub fn start_listening(more: &[&str], body: &str) -> (Fulcrum, Vec<u16>) {
        let shared = shared();
        let dir = TempDir::new("fulcrum");
        let port = free_port();
        let mut ports = vec![];
        let mut listen = format!("listen:\n  - \"127.0.0.1:{port}\"\n");
        for entry in more {
            let p = free_port();
            ports.push(p);
            listen.push_str(&format!(
                "  - {}\n",
                entry.replace("{port}", &p.to_string())
            ));
        }
        let conf = format!(
            "version: 1\nthreads: 2\npid_file: {}\nupgrade_sock: {}\ngrace_period_seconds: 2\ngraceful_shutdown_timeout_seconds: 1\n{listen}{body}",
            dir.path("fulcrum.pid").display(),
            dir.path("upgrade.sock").display(),
        );
        std::fs::write(dir.path("fulcrum.yaml"), conf).unwrap();
        let log = dir.path("fulcrum.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(FULCRUM)
            .arg("-c")
            .arg(dir.path("fulcrum.yaml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start fulcrum");
        let f = Fulcrum {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            dir,
            log,
            _shared: shared,
        };
        f.wait_ready();
        (f, ports)
    }

    /// The process's resident memory (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}
