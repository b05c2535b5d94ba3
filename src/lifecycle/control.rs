//! `fulcrum -s SIGNAL`: signals the running instance named by `pid_file`,
//! as `nginx -s` does, after checking that the pid is a running fulcrum:
//! a stale pid file, or one whose pid now belongs to another program, is
//! an error and nothing is signalled.

use crate::cli::Signal;
use std::path::Path;

/// Sends `signal` to the fulcrum whose pid is in `pid_file`; returns what
/// was done, or why nothing was.
pub fn send(signal: Signal, pid_file: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(pid_file)
        .map_err(|e| format!("no running fulcrum found: pid_file {pid_file}: cannot read: {e}"))?;
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("pid_file {pid_file}: {:?} is not a pid", text.trim()))?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).map_err(|_| {
        format!("no running fulcrum found: pid_file {pid_file} names pid {pid}, which does not run (a stale pid file)")
    })?;
    if !is_fulcrum(comm.trim(), Path::new(&format!("/proc/{pid}/exe"))) {
        return Err(format!(
            "pid_file {pid_file} names pid {pid}, which is {:?}, not fulcrum: nothing signalled",
            comm.trim()
        ));
    }
    // SAFETY: kill(2) with a pid and a signal number; no memory involved.
    if unsafe { libc::kill(pid, signal.number()) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("signalling pid {pid}: {e}"));
    }
    Ok(format!(
        "sent {} ({}) to fulcrum pid {pid}",
        signal.name(),
        signal_name(signal.number())
    ))
}

/// Whether the process is a fulcrum: by its name (`comm`, which the kernel
/// cuts at 15 bytes) or the file it runs (after an upgrade the old binary
/// may be gone: `.../fulcrum (deleted)`).
fn is_fulcrum(comm: &str, exe: &Path) -> bool {
    comm == "fulcrum"
        || std::fs::read_link(exe).is_ok_and(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == "fulcrum" || n.starts_with("fulcrum "))
        })
}

fn signal_name(n: i32) -> &'static str {
    match n {
        libc::SIGHUP => "SIGHUP",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}
