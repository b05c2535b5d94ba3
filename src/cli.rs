//! Command line: nginx's flags (`-t`, `-T`, `-q`, `-s`, `-v`, `-V`, `-c`),
//! plus Pingora's `-u` and `-d`, and the upgrade scripts' `--upgrade-settings`.

use std::path::PathBuf;

/// Default config path when `-c` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/fulcrum/fulcrum.yaml";

/// What `-s` asks of the running instance, and the signal that says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: re-read the config (pools and routes).
    Reload,
    /// SIGUSR1: reopen the log files (after logrotate moved them).
    Reopen,
    /// SIGINT: fast stop (nginx's `stop`).
    Stop,
    /// SIGTERM: graceful stop (nginx's `quit`).
    Quit,
}

impl Signal {
    fn parse(name: &str) -> Result<Signal, String> {
        match name {
            "reload" => Ok(Signal::Reload),
            "reopen" => Ok(Signal::Reopen),
            "stop" => Ok(Signal::Stop),
            "quit" => Ok(Signal::Quit),
            other => Err(format!(
                "-s {other:?}: expected one of reload, reopen, stop, quit"
            )),
        }
    }

    /// The signal number sent.
    pub fn number(self) -> i32 {
        match self {
            Signal::Reload => libc::SIGHUP,
            Signal::Reopen => libc::SIGUSR1,
            Signal::Stop => libc::SIGINT,
            Signal::Quit => libc::SIGTERM,
        }
    }

    /// The name `-s` takes.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Reload => "reload",
            Signal::Reopen => "reopen",
            Signal::Stop => "stop",
            Signal::Quit => "quit",
        }
    }
}

/// Parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Config file.
    pub config: PathBuf,
    /// `-t`: validate the config and exit.
    pub test: bool,
    /// `-T`: validate the config, print it as read, exit.
    pub dump: bool,
    /// `-q`: with `-t`/`-T`, print errors only.
    pub quiet: bool,
    /// `--upgrade-settings`: print what an upgrade script needs, exit.
    pub upgrade_settings: bool,
    /// `-s`: signal the running instance, exit.
    pub signal: Option<Signal>,
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
    /// Print the version (`-v`).
    Version,
    /// Print the version and how this binary was built (`-V`).
    VersionDetails,
}

/// Usage text.
pub const USAGE: &str = "\
usage: fulcrum [-h] [-v|-V] [-t|-T] [-q] [-s SIGNAL] [-c FILE] [-d] [-u] [--upgrade-settings]
  -c, --conf FILE      config file (default /etc/fulcrum/fulcrum.yaml)
  -t, --test           check the config and exit (0: configuration OK)
  -T, --test-dump      check the config, then print it as fulcrum reads it
                       (after ${VAR} expansion, admin_token masked), as nginx -T
  -q, --quiet          with -t or -T: print errors only
  -s SIGNAL            signal the running instance (found through pid_file):
                       reload (SIGHUP), reopen (SIGUSR1: reopen log files),
                       stop (SIGINT: fast stop), quit (SIGTERM: graceful stop)
  -d, --daemon         run in the background
  -u, --upgrade        take the listening sockets over from the running instance
                       (send it SIGQUIT afterwards)
      --upgrade-settings  print as key=value lines what an upgrade script needs
                       (pid_file, upgrade_sock, timeouts, health_url), and exit
  -v, --version        print the version
  -V                   print version, git commit, Pingora version, build profile
  -h, --help           this text
signals: SIGTERM graceful stop, SIGINT fast stop, SIGQUIT hand the sockets to an
upgrading process then drain and exit, SIGHUP reload pools and routes, SIGUSR1
reopen log files, SIGUSR2 and SIGWINCH logged and ignored
";

/// Parses `args` (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut out = Args {
        config: PathBuf::from(DEFAULT_CONFIG),
        test: false,
        dump: false,
        quiet: false,
        upgrade_settings: false,
        signal: None,
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
            "-s" => {
                let name = it
                    .next()
                    .ok_or("-s needs a signal: reload, reopen, stop or quit")?;
                out.signal = Some(Signal::parse(&name)?);
            }
            "-t" | "--test" => out.test = true,
            "-T" | "--test-dump" => out.dump = true,
            "-q" | "--quiet" => out.quiet = true,
            "--upgrade-settings" => out.upgrade_settings = true,
            "-u" | "--upgrade" => out.upgrade = true,
            "-d" | "--daemon" => out.daemon = true,
            "-h" | "--help" | "-?" => return Ok(Command::Help),
            "-v" | "--version" => return Ok(Command::Version),
            "-V" => return Ok(Command::VersionDetails),
            _ if a.starts_with("--conf=") => out.config = a["--conf=".len()..].into(),
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    let exits = [
        out.test,
        out.dump,
        out.upgrade_settings,
        out.signal.is_some(),
    ];
    if exits.iter().filter(|&&x| x).count() > 1 {
        return Err("-t, -T, -s and --upgrade-settings exclude each other".into());
    }
    Ok(Command::Run(out))
}

/// `-v`: one line, as `nginx -v`.
pub fn version() -> String {
    format!("fulcrum version: fulcrum/{}\n", env!("CARGO_PKG_VERSION"))
}

/// `-V`: the version and how this binary was built (build.rs).
pub fn version_details() -> String {
    format!(
        "{}git commit: {}\npingora: {}\nbuild profile: {}\nprofile-guided: {}\n",
        version(),
        env!("FULCRUM_GIT_COMMIT"),
        env!("FULCRUM_PINGORA_VERSION"),
        env!("FULCRUM_BUILD_PROFILE"),
        env!("FULCRUM_PGO"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    fn run(args: &[&str]) -> Args {
        match p(args).unwrap() {
            Command::Run(a) => a,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn flags() {
        let a = run(&["-t", "-c", "x.yaml"]);
        assert!(a.test && !a.upgrade && !a.dump && !a.upgrade_settings);
        assert_eq!(a.config, PathBuf::from("x.yaml"));
        let a = run(&["-u", "-d", "--conf=y"]);
        assert!(a.upgrade && a.daemon);
        let a = run(&["-T", "-q"]);
        assert!(a.dump && a.quiet && !a.test);
        assert!(run(&["--upgrade-settings"]).upgrade_settings);
        assert!(p(&["-c"]).is_err());
        assert!(p(&["--bogus"]).is_err());
        assert_eq!(p(&["-h"]).unwrap(), Command::Help);
        assert_eq!(p(&["-v"]).unwrap(), Command::Version);
        assert_eq!(p(&["-V"]).unwrap(), Command::VersionDetails);
        assert!(p(&["-t", "-T"]).is_err());
    }

    #[test]
    fn signals_as_nginx_names_them() {
        for (name, sig, number) in [
            ("reload", Signal::Reload, libc::SIGHUP),
            ("reopen", Signal::Reopen, libc::SIGUSR1),
            ("stop", Signal::Stop, libc::SIGINT),
            ("quit", Signal::Quit, libc::SIGTERM),
        ] {
            assert_eq!(run(&["-s", name]).signal, Some(sig));
            assert_eq!((sig.number(), sig.name()), (number, name));
        }
        assert!(p(&["-s", "restart"])
            .unwrap_err()
            .contains("reload, reopen"));
        assert!(p(&["-s"]).is_err());
        assert!(p(&["-s", "reload", "-t"]).is_err());
    }
}
