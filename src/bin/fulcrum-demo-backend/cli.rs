//! Command line of the demo backend: the flags, their checks and the help text.
//! Kept apart so that `main.rs` only wires things together.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

pub const USAGE: &str = "\
fulcrum-demo-backend: a demo/test HTTP/1.1 backend for fulcrum

USAGE:
    fulcrum-demo-backend --listen NAME@ADDR [--listen NAME@ADDR ...] [OPTIONS]
    fulcrum-demo-backend --name NAME --listen ADDR [OPTIONS]

OPTIONS:
    --listen NAME@ADDR   serve a server named NAME on ADDR (repeatable)
    --name NAME          name of the single server given by --listen ADDR
    --delay-ms N         default delay added to every normal request [0]
    --fail-health        start with /health answering 503
    --drop-every N       close without answering every Nth normal request [0 = off]
    --close-after-read   read each normal request, then close without answering
    --body-size N        answer normal requests with N bytes of 'x' instead of JSON
    --port-file PATH     write 'NAME ADDR' per listener to PATH once bound
    --threads N          tokio worker threads [1]
    -h, --help           print this help

ENDPOINTS (per listener):
    GET  /health                      200 ok, or 503 unhealthy
    GET  /__control/stats             counters and recent requests (JSON)
    POST /__control/health?fail=1|0   make /health fail or pass
    POST /__control/mode?delay_ms=N&drop_every=N&close_after_read=0|1&status=N
    POST /__control/reset             zero counters and the recent log
    *    anything else                JSON echo; ?delay_ms=N and ?status=N honoured
";

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listeners: Vec<(String, SocketAddr)>,
    pub delay_ms: u64,
    pub fail_health: bool,
    pub drop_every: u64,
    pub close_after_read: bool,
    pub body_size: Option<usize>,
    pub port_file: Option<PathBuf>,
    pub threads: usize,
}

#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Config),
    Help,
}

/// Returns the value of an option given either as `--flag=value` or `--flag value`.
fn option_value(
    flag: &str,
    inline: Option<String>,
    rest: &mut impl Iterator<Item = String>,
) -> Result<String, String> {
    match inline {
        Some(v) => Ok(v),
        None => rest.next().ok_or_else(|| format!("{flag} needs a value")),
    }
}

fn parse_number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: '{value}' is not a valid non-negative integer"))
}

pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut raw_listens: Vec<String> = Vec::new();
    let mut name: Option<String> = None;
    let mut cfg = Config {
        listeners: Vec::new(),
        delay_ms: 0,
        fail_health: false,
        drop_every: 0,
        close_after_read: false,
        body_size: None,
        port_file: None,
        threads: 1,
    };

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg, None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--listen" => raw_listens.push(option_value(&flag, inline, &mut args)?),
            "--name" => {
                if name.is_some() {
                    return Err("--name given more than once".into());
                }
                name = Some(option_value(&flag, inline, &mut args)?);
            }
            "--delay-ms" => {
                cfg.delay_ms = parse_number(&flag, &option_value(&flag, inline, &mut args)?)?
            }
            "--drop-every" => {
                cfg.drop_every = parse_number(&flag, &option_value(&flag, inline, &mut args)?)?
            }
            "--body-size" => {
                cfg.body_size = Some(parse_number(
                    &flag,
                    &option_value(&flag, inline, &mut args)?,
                )?)
            }
            "--port-file" => cfg.port_file = Some(option_value(&flag, inline, &mut args)?.into()),
            "--threads" => {
                cfg.threads = parse_number(&flag, &option_value(&flag, inline, &mut args)?)?;
                if cfg.threads == 0 {
                    return Err("--threads must be at least 1".into());
                }
            }
            "--fail-health" | "--close-after-read" => {
                if inline.is_some() {
                    return Err(format!("{flag} takes no value"));
                }
                if flag == "--fail-health" {
                    cfg.fail_health = true;
                } else {
                    cfg.close_after_read = true;
                }
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }

    if raw_listens.is_empty() {
        return Err("at least one --listen is required".into());
    }
    let pairs: Vec<(String, String)> = match name {
        Some(name) => {
            if raw_listens.len() != 1 {
                return Err("--name can only be used with a single --listen ADDR".into());
            }
            if raw_listens[0].contains('@') {
                return Err("--name conflicts with --listen NAME@ADDR; use one form".into());
            }
            vec![(name, raw_listens.remove(0))]
        }
        None => raw_listens
            .iter()
            .map(|l| match l.split_once('@') {
                Some((n, a)) => Ok((n.to_string(), a.to_string())),
                None => Err(format!(
                    "--listen '{l}': expected NAME@ADDR (or use --name NAME --listen ADDR)"
                )),
            })
            .collect::<Result<_, _>>()?,
    };

    for (name, addr) in pairs {
        // The name goes into a response header and into the port file's
        // space-separated lines, so keep it to visible ASCII.
        if name.is_empty() || !name.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(format!(
                "invalid server name '{name}': use visible ASCII characters only"
            ));
        }
        if cfg.listeners.iter().any(|(n, _)| *n == name) {
            return Err(format!("server name '{name}' used more than once"));
        }
        let addr = resolve_addr(&addr).map_err(|e| format!("--listen {name}@{addr}: {e}"))?;
        cfg.listeners.push((name, addr));
    }
    Ok(Command::Run(cfg))
}

fn resolve_addr(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    // Allow host names such as localhost:3001; resolution happens once at start.
    addr.to_socket_addrs()
        .map_err(|e| format!("invalid address: {e}"))?
        .next()
        .ok_or_else(|| "address resolved to nothing".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_parsing() {
        let args = |s: &str| parse_args(s.split_whitespace().map(String::from));
        let Ok(Command::Run(cfg)) = args(
            "--listen a@127.0.0.1:1 --listen=b@127.0.0.1:2 --delay-ms 5 --drop-every=3 --fail-health",
        ) else {
            panic!("valid arguments refused");
        };
        assert_eq!(cfg.listeners.len(), 2);
        assert_eq!(cfg.listeners[1].0, "b");
        assert_eq!(
            (cfg.delay_ms, cfg.drop_every, cfg.fail_health),
            (5, 3, true)
        );

        let Ok(Command::Run(cfg)) = args("--name solo --listen 127.0.0.1:0") else {
            panic!("--name form refused");
        };
        assert_eq!(cfg.listeners[0].0, "solo");
        assert_eq!(
            (cfg.threads, cfg.body_size, cfg.close_after_read),
            (1, None, false)
        );

        let Ok(Command::Run(cfg)) =
            args("--listen a@127.0.0.1:1 --body-size=11 --threads 2 --close-after-read")
        else {
            panic!("valid arguments refused");
        };
        assert_eq!(
            (cfg.body_size, cfg.threads, cfg.close_after_read),
            (Some(11), 2, true)
        );
        assert_eq!(args("--listen a@127.0.0.1:1 -h"), Ok(Command::Help));

        for bad in [
            "",
            "--listen 127.0.0.1:1",
            "--listen a@127.0.0.1:1 --listen a@127.0.0.1:2",
            "--name x --listen a@127.0.0.1:1",
            "--listen a@nonsense",
            "--listen a@127.0.0.1:1 --delay-ms abc",
            "--listen a@127.0.0.1:1 --bogus",
            "--listen a@127.0.0.1:1 --threads 0",
            "--listen a@127.0.0.1:1 --fail-health=1",
            "--listen a\u{7f}b@127.0.0.1:1",
        ] {
            assert!(args(bad).is_err(), "accepted: {bad}");
        }
    }
}
