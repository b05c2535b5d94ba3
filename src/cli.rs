//! Command line: nginx-like flags (`-t`, `-c`), plus Pingora's `-u` and `-d`.

use std::path::PathBuf;

/// Default config path when `-c` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/fulcrum/fulcrum.yaml";

/// Parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Config file.
    pub config: PathBuf,
    /// `-t`: validate the config and exit.
    pub test: bool,
    /// `-T`: validate the config, print the settings an upgrade needs, exit.
    pub settings: bool,
    /// `-u`: take the listening sockets over from a running instance.
    pub upgrade: bool,
    /// `-d`: run in the background.
    pub daemon: bool,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run (or test) with these arguments.
    Run(Args),
    /// Print usage.
    Help,
    /// Print the version.
    Version,
}

/// Usage text.
pub const USAGE: &str = "\
usage: fulcrum [-t|-T] [-u] [-d] [-c FILE]
  -c, --conf FILE   config file (default /etc/fulcrum/fulcrum.yaml)
  -t, --test        check the config and exit (0: configuration OK)
  -T, --settings    check the config, print the settings an upgrade script
                    needs (pid_file, upgrade_sock, timeouts, health_url) as
                    key=value lines, and exit
  -u, --upgrade     take the listening sockets over from the running instance
                    (send it SIGQUIT afterwards)
  -d, --daemon      run in the background
  -h, --help        this text
  -V, --version     print the version
signals: SIGTERM graceful stop, SIGINT fast stop, SIGQUIT hand sockets to an
upgrading process, then drain and exit, SIGHUP reload pools and routes
";

/// Parses `args` (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut out = Args {
        config: PathBuf::from(DEFAULT_CONFIG),
        test: false,
        settings: false,
        upgrade: false,
        daemon: false,
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" | "--conf" => {
                out.config = it
                    .next()
                    .ok_or_else(|| format!("{a} needs a file argument"))?
                    .into()
            }
            "-t" | "--test" => out.test = true,
            "-T" | "--settings" => out.settings = true,
            "-u" | "--upgrade" => out.upgrade = true,
            "-d" | "--daemon" => out.daemon = true,
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ if a.starts_with("--conf=") => out.config = a["--conf=".len()..].into(),
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    Ok(Command::Run(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags() {
        let Command::Run(a) = p(&["-t", "-c", "x.yaml"]).unwrap() else {
            panic!()
        };
        assert!(a.test && !a.upgrade && !a.settings);
        assert_eq!(a.config, PathBuf::from("x.yaml"));
        let Command::Run(a) = p(&["-u", "-d", "--conf=y"]).unwrap() else {
            panic!()
        };
        assert!(a.upgrade && a.daemon);
        let Command::Run(a) = p(&["-T"]).unwrap() else {
            panic!()
        };
        assert!(a.settings && !a.test);
        assert!(p(&["-c"]).is_err());
        assert!(p(&["--bogus"]).is_err());
        assert_eq!(p(&["-h"]).unwrap(), Command::Help);
    }
}
