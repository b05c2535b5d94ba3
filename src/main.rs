//! fulcrum's command line: parse, load and validate the config, run.

use fulcrum::cli::{self, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("fulcrum {}", env!("CARGO_PKG_VERSION"));
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
    if args.test {
        println!(
            "fulcrum: configuration file {} OK\nconfiguration OK",
            args.config.display()
        );
        return ExitCode::SUCCESS;
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match fulcrum::service::run(&args, loaded) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fulcrum: {e}");
            ExitCode::FAILURE
        }
    }
}
