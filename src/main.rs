//! fulcrum's command line: parse, load and validate the config, run (or
//! test it, print it, or signal the running instance).
//!
//! The config is validated before the Pingora server exists, so an upgrade
//! (`-u`) with an invalid file exits here, before it asks the running
//! process for its sockets.

use fulcrum::cli::{self, Args, Command};
use std::process::ExitCode;

// mimalloc: Pingora allocates and frees dozens of objects per request (boxed
// futures, header maps, buffers). With glibc malloc that was ~12% of the CPU,
// and each freed 64 KiB body buffer went back to the kernel (one madvise and
// its page faults per request): 64 KB responses cost 2.3x nginx's CPU, 1.0x
// with mimalloc (deploy/bench, scenario c).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    fulcrum::lifecycle::allocator::tune();
    fulcrum::config::tls::install_crypto_provider();
    let mut args = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            print!("{}", cli::version());
            return ExitCode::SUCCESS;
        }
        Ok(Command::VersionDetails) => {
            print!("{}", cli::version_details());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("fulcrum: {e}\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let loaded = match fulcrum::config::load(&args.config) {
        Ok(l) => l,
        Err(errors) => {
            eprintln!(
                "fulcrum: configuration file {} is invalid:\n{errors}",
                args.config.display()
            );
            return ExitCode::FAILURE;
        }
    };
    if let Some(done) = run_and_exit(&args, &loaded) {
        return done;
    }
    // SIGHUP re-reads the file, and a daemon runs in `/`.
    if let Ok(abs) = std::path::absolute(&args.config) {
        args.config = abs;
    }
    match fulcrum::lifecycle::service::run(&args, loaded) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fulcrum: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The flags that do one thing with the valid config and exit: `-t`, `-T`,
/// `-s`, `--upgrade-settings`. `None`: run.
fn run_and_exit(args: &Args, loaded: &fulcrum::config::Loaded) -> Option<ExitCode> {
    let file = args.config.display();
    if args.upgrade_settings {
        print!("{}", fulcrum::lifecycle::service::settings_text(loaded));
    } else if let Some(signal) = args.signal {
        match fulcrum::lifecycle::control::send(signal, &loaded.server.pid_file) {
            Ok(done) => eprintln!("fulcrum: {done}"),
            Err(e) => {
                eprintln!("fulcrum: {e}");
                return Some(ExitCode::FAILURE);
            }
        }
    } else if args.dump {
        match fulcrum::config::dump(&args.config) {
            Ok(text) => {
                if !args.quiet {
                    eprintln!("fulcrum: configuration file {file} OK");
                }
                print!("# configuration file {file} (as read: ${{VAR}} expanded, secrets masked):\n{text}");
            }
            Err(errors) => {
                eprintln!("fulcrum: configuration file {file}:\n{errors}");
                return Some(ExitCode::FAILURE);
            }
        }
    } else if args.test {
        if let Err(e) = fulcrum::lifecycle::service::check_log_files(loaded) {
            eprintln!("fulcrum: configuration file {file}:\n{e}");
            return Some(ExitCode::FAILURE);
        }
        for w in &loaded.warnings {
            eprintln!("fulcrum: warning: {w}");
        }
        if !args.quiet {
            for line in fulcrum::lifecycle::service::tls_summary(loaded) {
                println!("fulcrum: {line}");
            }
            println!("fulcrum: configuration file {file} OK\nconfiguration OK");
        }
    } else {
        return None;
    }
    Some(ExitCode::SUCCESS)
}
